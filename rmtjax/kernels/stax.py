r"""A neural-tangents-compatible ``stax`` facade over the layers of :mod:`rmtjax.kernels`.

Every layer is a triple ``(init_fn, apply_fn, kernel_fn)`` with neural-tangents' semantics
(Novak et al. 2020): ``init_fn(key, input_shape) -> (output_shape, params)``,
``apply_fn(params, x)`` is the finite network in the same parameterization, and
``kernel_fn(x1, x2=None, get=None)`` its infinite-width NNGP/NTK. Porting a neural-tangents script
(fully-connected, or convolutional on channels-last images: ``Conv``, pooling, ``Flatten``,
``LayerNorm``, attention, ...) needs only the import changed::

    from rmtjax import stax          # was: from neural_tangents import stax
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Erf(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, ("nngp", "ntk"))

The facade holds no recursion of its own: ``kernel_fn.net`` is the network as engine layers
(:class:`~rmtjax.kernels.Dense`, :class:`~rmtjax.kernels.Activation`,
:class:`~rmtjax.kernels.Serial`, :class:`~rmtjax.kernels.Parallel` for
``FanOut >> parallel >> FanInSum``), and ``kernel_fn`` calls :func:`rmtjax.kernels.kernel` on it
(tiled, jitted, repeated blocks as one ``lax.scan``). The other way, :func:`layer` turns engine
layers into a triple. Hyperparameters are array leaves of those layers, so ``jax.grad`` and
``jax.vmap`` work through ``kernel_fn`` with respect to ``W_std``, ``b_std`` and activation
parameters passed to the layer constructors. The ``get=`` switch is kept only for compatibility.

Example:
    >>> import jax.numpy as jnp
    >>> _, _, kernel_fn = serial(Dense(64, 1.5, 0.1), Relu(), Dense(1, 1.5, 0.1))
    >>> kernel_fn(jnp.ones((3, 4)), None, "ntk").shape
    (3, 3)
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import activations as _act
from .._validate import choice, flag, get_names, static_int
from ..gaussian import AbstractMethod, Auto, GaussHermite
from . import _conv as C
from . import _finite_conv as F
from . import _layers as L
from ._core import FullyConnected, kernel, kernel_diagonal

__all__ = [
    "ABRelu", "Abs", "Activation", "AvgPool", "Conv", "ConvTranspose", "Cos", "Dense", "Dropout",
    "ElementwiseNumerical", "Erf", "Exp", "FanInConcat", "FanInProd", "FanInSum", "FanOut", "Flatten", "Gaussian",
    "Gelu", "GlobalAvgPool", "GlobalSelfAttention", "GlobalSumPool", "Hermite", "Identity", "ImageResize", "Index", "KernelFn", "Layer",
    "LayerNorm", "LeakyRelu", "Monomial", "Polynomial", "Rbf", "RectifiedMonomial", "Relu", "Sign", "Sin", "SumPool",
    "layer", "parallel", "serial",
]


class Layer(NamedTuple):
    """neural-tangents' layer triple ``(init_fn, apply_fn, kernel_fn)``."""

    init_fn: Callable
    apply_fn: Callable
    kernel_fn: KernelFn


# ------------------------------------------------------------------------------------------
# The kernel side: a small program of engine layers and branch operations
# ------------------------------------------------------------------------------------------


class _Path:
    """What a ``serial`` sequence has built so far: the engine layers of the single path, or, after
    ``FanOut(n)``, one operation list per open branch."""

    def __init__(self):
        self.layers: list[L.AbstractLayer] = []
        self.branches: list[tuple] | None = None


class _Single:
    """An engine layer on a single input."""

    def __init__(self, layer: L.AbstractLayer, name: str):
        self.layer, self.name = layer, name

    def step(self, path: _Path) -> None:
        if path.branches is not None:
            raise ValueError(f"{self.name} got {len(path.branches)} branches (its input); close them with FanInSum() "
                             "first, or wrap it in parallel(...)")
        path.layers.append(self.layer)


class _FanOut:
    def __init__(self, num: int):
        self.num = num

    def step(self, path: _Path) -> None:
        if path.branches is not None:
            raise ValueError(f"FanOut got {len(path.branches)} branches (its input); close them with FanInSum() first, "
                             "or wrap it in parallel(...)")
        path.branches = [()] * self.num


class _Parallel:
    def __init__(self, branches: tuple[tuple, ...]):
        self.branches = branches

    def step(self, path: _Path) -> None:
        if path.branches is None:
            raise ValueError("parallel needs several branches (its input must be a list, one per branch, as FanOut(n) "
                             "produces); got a single input. Put FanOut(n) (or parallel(...)) before it")
        if len(path.branches) != len(self.branches):
            raise ValueError(f"parallel: got {len(path.branches)} branches for {len(self.branches)} layers (one layer "
                             "per branch)")
        path.branches = [a + b for a, b in zip(path.branches, self.branches)]


class _FanInSum:
    name = "FanInSum"

    def combine(self, nets):
        return L.Parallel(*nets)

    def step(self, path: _Path) -> None:
        if path.branches is None:
            raise ValueError(f"{self.name} needs several branches (its input must be a list, one per branch, as "
                             "FanOut(n) produces); got a single input. Put FanOut(n) (or parallel(...)) before it")
        nets = []
        for ops in path.branches:
            sub = _run(ops)
            if sub.branches is not None:
                raise ValueError(f"{self.name}: a branch is itself split (nested FanOut); close the inner branches "
                                 "first")
            nets.append(L.Serial(*sub.layers) if len(sub.layers) != 1 else sub.layers[0] if sub.layers
                        else L.Identity())
        path.layers.append(self.combine(nets))
        path.branches = None


class _FanInProd(_FanInSum):
    name = "FanInProd"

    def combine(self, nets):
        return L.Product(*nets)


class _FanInConcat(_FanInSum):
    name = "FanInConcat"

    def __init__(self, axis: int):
        self.axis = axis

    def combine(self, nets):
        return C.Concat(*nets, axis=self.axis)


def _run(ops: tuple) -> _Path:
    path = _Path()
    for op in ops:
        op.step(path)
    return path


class KernelFn:
    """``kernel_fn(x1, x2=None, get=None)`` with neural-tangents' semantics.

    ``get`` is ``None`` (``Kernel(nngp, ntk)``), one of ``"nngp"``, ``"ntk"``, ``"cov1"``, ``"cov2"``
    (that array), or a tuple of them (a named tuple in that order). Inputs are vectors ``(n, d)`` or,
    for convolutional networks, images ``(n, H, W, C)`` / ``(n, W, C)`` (channels last).

    neural-tangents' keywords: ``diagonal_spatial=True`` keeps only same-pixel covariances (exact
    for networks read out by ``Flatten``; the independent-pixel approximation where pooling mixes
    pixels; outputs with spatial axes then come as ``(n1, n2, H, W)`` instead of
    ``(n1, n2, H, H', W, W')``); ``diagonal_batch=False`` returns ``cov1``/``cov2`` as the full
    ``(n, n)`` kernels of ``x1``/``x2`` with themselves instead of their diagonals. rmtjax extension:
    ``buckets=True`` pads the rows to size buckets and slices the result, as
    :func:`rmtjax.kernels.kernel` (one compiled program per bucket instead of one per input size).
    :attr:`net` is the network as engine layers.
    """

    def __init__(self, ops: tuple):
        self._ops = tuple(ops)

    @property
    def net(self) -> L.AbstractLayer:
        """The network as one layer of :mod:`rmtjax.kernels` (``ValueError`` if it ends with open
        branches)."""
        path = _run(self._ops)
        if path.branches is not None:
            raise ValueError("kernel_fn: the network ends with several branches; close them with FanInSum()")
        return path.layers[0] if len(path.layers) == 1 else L.Serial(*path.layers)

    def __call__(self, x1, x2=None, get=None, **kwargs):
        buckets = flag(kwargs.pop("buckets", False), "buckets")
        diagonal_spatial = flag(kwargs.pop("diagonal_spatial", False), "diagonal_spatial")
        diagonal_batch = flag(kwargs.pop("diagonal_batch", True), "diagonal_batch")
        if kwargs:
            unknown = ", ".join(sorted(kwargs))
            raise ValueError(f"kernel_fn: keyword arguments {unknown} are not supported by rmtjax.stax (it takes "
                             "x1, x2, get, diagonal_spatial, diagonal_batch and buckets)")
        names = _parse_get(get)
        net = self.net
        vals = {}
        opts = dict(buckets=buckets, diagonal_spatial=diagonal_spatial)
        if {"nngp", "ntk"} & set(names):
            vals.update(kernel(x1, x2, net, **opts)._asdict())
        for name, x in (("cov1", x1), ("cov2", x1 if x2 is None else x2)):
            if name in names:
                vals[name] = (kernel_diagonal(x, net, **opts) if diagonal_batch else kernel(x, None, net, **opts)).nngp
        if isinstance(get, str):
            return vals[get]
        if tuple(names) == ("nngp", "ntk"):
            return L.Kernel(vals["nngp"], vals["ntk"])
        return collections.namedtuple("Kernel", names)(*(vals[n] for n in names))


def _parse_get(get):
    return get_names(get, ("nngp", "ntk", "cov1", "cov2"))


# ------------------------------------------------------------------------------------------
# The finite side (neural-tangents' init_fn / apply_fn), branches as Python lists
# ------------------------------------------------------------------------------------------


def _branches(x, who: str, what: str):
    """``x`` if it is a list of branches (from FanOut / parallel), else a clear ``ValueError``."""
    if not isinstance(x, list):
        raise ValueError(f"{who} needs several branches ({what} a list, one per branch, as FanOut(n) produces); "
                         "got a single input. Put FanOut(n) (or parallel(...)) before it")
    return x


def _single(x, who: str, what: str):
    if isinstance(x, list):
        raise ValueError(f"{who} got {len(x)} branches ({what}); close them with FanInSum() first, or wrap it in "
                         f"parallel(...)")
    return x


def _check_layer(layer, who: str, i: int) -> Layer:
    if not (isinstance(layer, tuple) and len(layer) == 3 and isinstance(layer[2], KernelFn)):
        raise ValueError(f"{who}: layers[{i}] is not an rmtjax.stax layer (init_fn, apply_fn, kernel_fn), got "
                         f"{type(layer).__name__}")
    return Layer(*layer)


def _elementwise(activation: _act.AbstractActivation, method: AbstractMethod | None) -> Layer:
    name = type(activation).__name__

    def init_fn(key, input_shape):
        return _single(input_shape, name, "input_shape"), ()

    def apply_fn(params, x, **kwargs):
        return activation(_single(x, name, "x"))

    return Layer(init_fn, apply_fn, KernelFn((_Single(L.Activation(activation, method), name),)))


def _dense_finite(dense: L.Dense, out_dim: int) -> tuple[Callable, Callable]:
    """``init_fn``, ``apply_fn`` of an engine :class:`~rmtjax.kernels.Dense` of ``out_dim`` outputs."""
    standard = dense.parameterization == "standard"

    def init_fn(key, input_shape):
        input_shape = _single(input_shape, "Dense", "input_shape")
        n_in = input_shape[-1]
        k1, k2 = jax.random.split(key)
        W = jax.random.normal(k1, (n_in, out_dim))
        b = jax.random.normal(k2, (out_dim,)) if dense.bias else None
        if standard:
            W = W * dense.W_std / math.sqrt(n_in)
            b = None if b is None else b * dense.b_std
        return tuple(input_shape[:-1]) + (out_dim,), (W, b)

    def apply_fn(params, x, **kwargs):
        x = _single(x, "Dense", "x")
        W, b = params
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != W.shape[0]:
            raise ValueError(f"Dense: x must have {W.shape[0]} channels (the init_fn input shape), got shape "
                             f"{jnp.shape(x)}")
        if standard:
            out = x @ W
            return out if b is None else out + b.reshape((1,) * (out.ndim - 1) + (-1,))
        out = (dense.W_std / math.sqrt(x.shape[-1])) * (x @ W)
        return out if b is None else out + dense.b_std * b.reshape((1,) * (out.ndim - 1) + (-1,))

    return init_fn, apply_fn


# ------------------------------------------------------------------------------------------
# Combinators
# ------------------------------------------------------------------------------------------


def _split_rng(kwargs: dict, n: int) -> list:
    """One key per layer from ``kwargs["rng"]`` (removed from ``kwargs``), as
    JAX's example stax library does (``None`` without a key): each Dropout its own mask."""
    rng = kwargs.pop("rng", None)
    return list(jax.random.split(rng, n)) if rng is not None else [None] * n


def serial(*layers: Layer) -> Layer:
    """Layers applied one after the other (``neural_tangents.stax.serial``)."""
    layers = tuple(_check_layer(item, "serial", i) for i, item in enumerate(layers))

    def init_fn(key, input_shape):
        params = []
        for item in layers:
            key, sub = jax.random.split(key)
            input_shape, p = item.init_fn(sub, input_shape)
            params.append(p)
        return input_shape, tuple(params)

    def apply_fn(params, x, **kwargs):
        if not isinstance(params, (tuple, list)) or len(params) != len(layers):
            raise ValueError(f"serial: params must be the {len(layers)} per-layer parameters from init_fn")
        rngs = _split_rng(kwargs, len(layers))
        for item, p, rng in zip(layers, params, rngs):
            x = item.apply_fn(p, x, rng=rng, **kwargs)
        return x

    return Layer(init_fn, apply_fn, KernelFn(sum((item.kernel_fn._ops for item in layers), ())))


def parallel(*layers: Layer) -> Layer:
    """Applies ``layers[i]`` to the ``i``-th input branch (``neural_tangents.stax.parallel``);
    its input must be a list of branches (from :func:`FanOut`)."""
    layers = tuple(_check_layer(item, "parallel", i) for i, item in enumerate(layers))
    if not layers:
        raise ValueError("parallel: layers must hold at least one layer (one per branch), got none")

    def _count(n):
        if n != len(layers):
            raise ValueError(f"parallel: got {n} branches for {len(layers)} layers (one layer per branch)")

    def init_fn(key, input_shape):
        shapes = _branches(input_shape, "parallel", "input_shape must be")
        _count(len(shapes))
        keys = jax.random.split(key, len(layers))
        outs = [item.init_fn(k, s) for item, k, s in zip(layers, keys, shapes)]
        return [o[0] for o in outs], tuple(o[1] for o in outs)

    def apply_fn(params, xs, **kwargs):
        xs = _branches(xs, "parallel", "x must be")
        _count(len(xs))
        rngs = _split_rng(kwargs, len(layers))
        return [item.apply_fn(p, x, rng=rng, **kwargs) for item, p, x, rng in zip(layers, params, xs, rngs)]

    return Layer(init_fn, apply_fn, KernelFn((_Parallel(tuple(item.kernel_fn._ops for item in layers)),)))


def FanOut(num: int) -> Layer:
    """Copies the input into ``num >= 1`` branches (``neural_tangents.stax.FanOut``)."""
    num = static_int(num, "FanOut: num", lo=1, hi=10_000)

    def init_fn(key, s):
        return [_single(s, "FanOut", "input_shape")] * num, ()

    def apply_fn(params, x, **kw):
        return [_single(x, "FanOut", "x")] * num

    return Layer(init_fn, apply_fn, KernelFn((_FanOut(num),)))


def FanInSum() -> Layer:
    r"""Sums the branches (``neural_tangents.stax.FanInSum``). Kernels add (branches are independent
    given the input, as in neural-tangents: a branch ending in a zero-mean random ``Dense`` is
    uncorrelated with the others); ``FanOut(n) >> parallel(...) >> FanInSum()`` is the engine's
    :class:`rmtjax.kernels.Parallel`. Its input must be a list of branches (from :func:`FanOut` /
    :func:`parallel`)."""

    def init_fn(key, shapes):
        shapes = _branches(shapes, "FanInSum", "input_shape must be")
        if len({tuple(s) for s in shapes}) != 1:
            raise ValueError(f"FanInSum: branch shapes differ: {shapes}")
        return shapes[0], ()

    def apply_fn(params, xs, **kw):
        xs = _branches(xs, "FanInSum", "x must be")
        if len({jnp.shape(x) for x in xs}) != 1:
            raise ValueError(f"FanInSum: branch shapes differ: {[jnp.shape(x) for x in xs]}")
        return sum(xs[1:], xs[0])

    return Layer(init_fn, apply_fn, KernelFn((_FanInSum(),)))


def FanInProd() -> Layer:
    r"""Multiplies the branches elementwise (``neural_tangents.stax.FanInProd``):
    :math:`\Sigma = \prod_i\Sigma_i`, :math:`\Theta = \sum_i\Theta_i\prod_{j\ne i}\Sigma_j`
    (independent zero-mean Gaussian branches; :class:`rmtjax.kernels.Product`)."""
    init_fn, apply_fn = F.fan_in_prod_finite()
    return Layer(init_fn, apply_fn, KernelFn((_FanInProd(),)))


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenates the branches along ``axis`` (``neural_tangents.stax.FanInConcat``): along the
    channels, the branch kernels averaged with weights their channel counts; along a spatial axis,
    side by side (:class:`rmtjax.kernels._conv.Concat`)."""
    axis = static_int(axis, "FanInConcat: axis")
    init_fn, apply_fn = F.fan_in_concat_finite(axis)
    return Layer(init_fn, apply_fn, KernelFn((_FanInConcat(axis),)))


def Identity() -> Layer:
    """The identity layer (``neural_tangents.stax.Identity``)."""
    return Layer(lambda key, s: (s, ()), lambda params, x, **kw: x, KernelFn((_Single(L.Identity(), "Identity"),)))


# ------------------------------------------------------------------------------------------
# Dense
# ------------------------------------------------------------------------------------------


def Dense(
    out_dim: int,
    W_std: float = 1.0,
    b_std: float | None = None,
    batch_axis: int = 0,
    channel_axis: int = -1,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    r"""Fully-connected layer (``neural_tangents.stax.Dense``); its kernel is
    :class:`rmtjax.kernels.Dense`.

    ``"ntk"``: :math:`z = \frac{\sigma_w}{\sqrt{n}} W x + \sigma_b b` with
    :math:`W_{ij}, b_i \sim \mathcal N(0, 1)`; kernels
    :math:`\Sigma \mapsto \sigma_w^2\Sigma + \sigma_b^2`, :math:`\Theta \mapsto \Sigma' + \sigma_w^2\Theta`.
    ``"standard"``: :math:`z = W x + b`, :math:`W_{ij} \sim \mathcal N(0, \sigma_w^2/n)`,
    :math:`b_i \sim \mathcal N(0, \sigma_b^2)`; :math:`\Theta \mapsto n\,\Sigma + \sigma_w^2\Theta + 1`.

    ``out_dim >= 1``; ``W_std``, ``b_std`` real scalars, finite and ``>= 0`` (``b_std=None``: no
    bias; both may be traced: differentiable through ``kernel_fn``); 2-d inputs only
    (``batch_axis=0``, ``channel_axis=-1`` or ``1``); ``s = (1, 1)`` in the standard parameterization.
    """
    out_dim = static_int(out_dim, "Dense: out_dim", lo=1)
    parameterization = choice(parameterization, "Dense: parameterization", ("ntk", "standard"))
    if static_int(batch_axis, "Dense: batch_axis") != 0:
        raise ValueError(f"Dense: batch_axis must be 0 (rmtjax.stax supports 2-d inputs (batch, channels)), got {batch_axis}")
    if static_int(channel_axis, "Dense: channel_axis") not in (-1, 1):
        raise ValueError(f"Dense: channel_axis must be -1 or 1 (2-d inputs (batch, channels)), got {channel_axis}")
    if not (isinstance(s, (tuple, list)) and len(s) == 2):
        raise ValueError(f"Dense: s must be a pair of positive integers, got {s!r}")
    s = tuple(static_int(v, "Dense: s", lo=1) for v in s)
    if s != (1, 1) and parameterization == "standard":
        raise ValueError(f"Dense: s must be (1, 1) (width scalings are not supported), got {s}")
    dense = L.Dense(W_std, b_std, out_dim=out_dim, parameterization=parameterization)
    init_fn, apply_fn = _dense_finite(dense, out_dim)
    return Layer(init_fn, apply_fn, KernelFn((_Single(dense, "Dense"),)))


# ------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------


def Activation(activation: _act.AbstractActivation, method: AbstractMethod = Auto()) -> Layer:
    """Any :mod:`rmtjax.activations` module as a stax layer, with a ``method=`` for its
    Gaussian expectations (closed form where available, Mehler series otherwise); its kernel is
    :class:`rmtjax.kernels.Activation`."""
    if not isinstance(activation, _act.AbstractActivation):
        raise ValueError(f"Activation: activation must be an rmtjax.activations module, got {activation!r}")
    if not isinstance(method, AbstractMethod):
        raise ValueError(f"Activation: method must be an rmtjax.gaussian method object (Auto(), ClosedForm(), "
                         f"Mehler(order), GaussHermite(deg)), got {method!r}")
    return _elementwise(activation, method)


def Relu(do_stabilize: bool = False) -> Layer:
    """neural-tangents' ``Relu``: the kernel of :class:`rmtjax.activations.Relu` (arc-cosine, order 1)."""
    flag(do_stabilize, "do_stabilize")
    return Activation(_act.Relu())


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> Layer:
    """neural-tangents' ``LeakyRelu``: the kernel of :class:`rmtjax.activations.LeakyRelu`."""
    flag(do_stabilize, "do_stabilize")
    return Activation(_act.LeakyRelu(alpha))


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Layer:
    """neural-tangents' ``ABRelu`` (``a x`` below 0, ``b x`` above): :class:`rmtjax.activations.ABRelu`."""
    flag(do_stabilize, "do_stabilize")
    return Activation(_act.ABRelu(a, b))


def Abs(do_stabilize: bool = False) -> Layer:
    """neural-tangents' ``Abs``: the kernel of :class:`rmtjax.activations.Abs`."""
    flag(do_stabilize, "do_stabilize")
    return Activation(_act.Abs())


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """neural-tangents' ``Erf`` (``a erf(b x) + c``): the kernel of :class:`rmtjax.activations.Erf`."""
    return Activation(_act.Erf(a, b, c))


def Gelu(approximate: bool = False) -> Layer:
    """neural-tangents' ``Gelu``: the kernel of :class:`rmtjax.activations.Gelu`."""
    return Activation(_act.Gelu(approximate=approximate))


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """neural-tangents' ``Sin`` (``a sin(b x + c)``): the kernel of :class:`rmtjax.activations.Sin`."""
    return Activation(_act.Sin(a, b, c))


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """neural-tangents' ``Cos`` (``a cos(b x + c)``): the kernel of :class:`rmtjax.activations.Cos`."""
    return Activation(_act.Cos(a, b, c))


def Sign() -> Layer:
    """neural-tangents' ``Sign``: the kernel of :class:`rmtjax.activations.Sign` (arc-cosine, order 0)."""
    return Activation(_act.Sign())


def Exp(a: float = 1.0, b: float = 1.0) -> Layer:
    """neural-tangents' ``Exp`` (``a exp(b x)``): the kernel of :class:`rmtjax.activations.Exp`."""
    return Activation(_act.Exp(a, b))


def Gaussian(a: float = 1.0, b: float = -1.0) -> Layer:
    """neural-tangents' ``Gaussian`` (``a exp(b x^2)``): the kernel of :class:`rmtjax.activations.Gaussian`."""
    return Activation(_act.Gaussian(a, b))


def Rbf(gamma: float = 1.0) -> Layer:
    """neural-tangents' ``Rbf``: the kernel of :class:`rmtjax.activations.Rbf`."""
    return Activation(_act.Rbf(gamma))


def Polynomial(coef: Sequence[float]) -> Layer:
    """neural-tangents' ``Polynomial`` (``sum_k coef[k] x^k``): :class:`rmtjax.activations.Polynomial`."""
    return Activation(_act.Polynomial(coef))


def Hermite(degree: int) -> Layer:
    """neural-tangents' ``Hermite`` (the normalised Hermite polynomial): :class:`rmtjax.activations.Hermite`."""
    return Activation(_act.Hermite(degree))


def Monomial(degree: int) -> Layer:
    """neural-tangents' ``Monomial`` (``x^degree``): the kernel of :class:`rmtjax.activations.Monomial`."""
    return Activation(_act.Monomial(degree))


def RectifiedMonomial(degree: int) -> Layer:
    """neural-tangents' ``RectifiedMonomial`` (``max(x, 0)^degree``): :class:`rmtjax.activations.RectifiedMonomial`."""
    return Activation(_act.RectifiedMonomial(degree))


class _Elementwise(_act.AbstractActivation):
    """``fn`` with the derivative ``df`` (for :func:`ElementwiseNumerical`)."""

    fn: Callable = eqx.field(static=True)
    df: Callable = eqx.field(static=True)

    def __call__(self, x):
        return self.fn(x)

    def derivative(self, x):
        return self.df(x)


def ElementwiseNumerical(fn: Callable, deg: int, df: Callable | None = None) -> Layer:
    """``fn`` with Gaussian expectations by ``deg``-point Gauss-Hermite quadrature, as
    neural-tangents' layer of the same name (prefer ``Activation(act)``: the Mehler series is
    far cheaper at equal accuracy)."""
    if not callable(fn):
        raise ValueError(f"ElementwiseNumerical: fn must be callable, got {type(fn).__name__}")
    if df is not None and not callable(df):
        raise ValueError(f"ElementwiseNumerical: df must be None or callable, got {type(df).__name__}")
    method = GaussHermite(deg)
    act = _act.Custom(lambda x, p: fn(x)) if df is None else _Elementwise(fn, df)
    return Activation(act, method=method)


# ------------------------------------------------------------------------------------------
# Convolutional layers (images, channels last)
# ------------------------------------------------------------------------------------------


def _nhwc(batch_axis, channel_axis, who: str) -> None:
    if static_int(batch_axis, f"{who}: batch_axis") != 0:
        raise ValueError(f"{who}: batch_axis must be 0 (rmtjax.stax takes images (n, H, W, C), batch first), got "
                         f"{batch_axis}")
    if static_int(channel_axis, f"{who}: channel_axis") != -1:
        raise ValueError(f"{who}: channel_axis must be -1 (rmtjax.stax takes images (n, H, W, C), channels last), "
                         f"got {channel_axis}")


def Conv(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    dimension_numbers: tuple[str, str, str] | None = None,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    r"""Convolution with shared weights (``neural_tangents.stax.Conv``), channels last; its kernel is
    :class:`rmtjax.kernels._conv.Conv`:
    :math:`\Sigma'(p, p') = \frac{\sigma_w^2}{|F|}\sum_{a\in F}\Sigma(sp + a, sp' + a) + \sigma_b^2`.

    ``filter_shape`` and ``strides``: one positive integer per spatial axis (1-d: inputs
    ``(n, W, C)``; 2-d: ``(n, H, W, C)``); ``padding``: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"``;
    ``W_std``, ``b_std`` as for :func:`Dense` (differentiable); ``dimension_numbers``: ``None`` or
    the channels-last ``("NHWC", "HWIO", "NHWC")`` (``"NWC", "WIO", "NWC"`` in 1-d).
    """
    out_chan = static_int(out_chan, "Conv: out_chan", lo=1)
    filter_shape = tuple(filter_shape) if isinstance(filter_shape, (tuple, list)) else filter_shape
    if not isinstance(filter_shape, tuple) or not filter_shape:
        raise ValueError(f"Conv: filter_shape must be a tuple of positive integers, got {filter_shape!r}")
    nd = len(filter_shape)
    if dimension_numbers is not None:
        sp = "DHW"[3 - nd:] if nd <= 3 else None
        want = ("N" + sp + "C", sp + "IO", "N" + sp + "C") if sp else None
        if tuple(dimension_numbers) != want:
            raise ValueError(f"Conv: dimension_numbers must be None or {want} (channels last), got "
                             f"{dimension_numbers!r}")
    return _conv_layer("Conv", out_chan, filter_shape, strides, padding, W_std, b_std, parameterization, s)


def _conv_layer(who, out_chan, filter_shape, strides, padding, W_std, b_std, parameterization, s) -> Layer:
    """The layer of :func:`Conv` (``who = "Conv"``) or :func:`ConvTranspose`: the checks they share,
    the kernel layer of :mod:`rmtjax.kernels._conv` and the finite network of the same geometry."""
    if not (isinstance(s, (tuple, list)) and tuple(s) == (1, 1)):
        raise ValueError(f"{who}: s must be (1, 1) (width scalings are not supported), got {s!r}")
    transpose = who == "ConvTranspose"
    layer = (C.ConvTranspose if transpose else C.Conv)(W_std, b_std, filter_shape, strides, padding, out_dim=out_chan,
                                                       parameterization=parameterization)
    init_fn, apply_fn = F.conv_finite(out_chan, layer.filter_shape, layer.strides, layer.padding, W_std, b_std,
                                      layer.parameterization, transpose=transpose)
    return Layer(init_fn, apply_fn, KernelFn((_Single(layer, who),)))


def ConvTranspose(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    dimension_numbers: tuple[str, str, str] | None = None,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    """Transposed convolution (``neural_tangents.stax.ConvTranspose``; ``jax.lax.conv_transpose``,
    channels last); arguments as :func:`Conv`; kernel :class:`rmtjax.kernels._conv.ConvTranspose`."""
    out_chan = static_int(out_chan, "ConvTranspose: out_chan", lo=1)
    if dimension_numbers is not None:
        raise ValueError(f"ConvTranspose: dimension_numbers must be None (channels last), got {dimension_numbers!r}")
    return _conv_layer("ConvTranspose", out_chan, filter_shape, strides, padding, W_std, b_std, parameterization, s)


def Dropout(rate: float, mode: str = "train") -> Layer:
    r"""Dropout (``neural_tangents.stax.Dropout``; ``rate`` is the keep probability, in
    :math:`(0, 1]`). ``"train"``: the kernel of a sample with itself at one pixel is multiplied by
    :math:`1/\text{rate}` (only with ``x2=None``, as neural-tangents); ``"test"``: the identity.
    ``apply_fn(params, x, rng=key)`` needs a key."""
    mode = choice(mode, "Dropout: mode", ("train", "test"))
    init_fn, apply_fn = F.dropout_finite(rate, mode)
    layer = C.Dropout(rate) if mode == "train" else L.Identity()
    return Layer(init_fn, apply_fn, KernelFn((_Single(layer, "Dropout"),)))


def Index(idx, batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Indexing of the spatial axes (``neural_tangents.stax.Index``): ``idx`` a tuple of slices,
    integers and one ``Ellipsis`` over the axes ``(n, *S, C)``; the batch and channel axes whole
    (:class:`rmtjax.kernels._conv.Index`)."""
    _nhwc(batch_axis, channel_axis, "Index")
    layer = C.Index(idx)
    init_fn, apply_fn = F.index_finite(layer.index)
    return Layer(init_fn, apply_fn, KernelFn((_Single(layer, "Index"),)))


def ImageResize(shape, method, antialias: bool = True, precision=None, batch_axis: int = 0,
                channel_axis: int = -1) -> Layer:
    """Image resizing (``neural_tangents.stax.ImageResize``; ``jax.image.resize``, ``method``
    ``"linear"`` or ``"nearest"``, ``-1`` in ``shape`` keeps an axis; batch and channels kept):
    :class:`rmtjax.kernels._conv.ImageResize`."""
    _nhwc(batch_axis, channel_axis, "ImageResize")
    method = getattr(method, "name", method)
    method = method.lower() if isinstance(method, str) else method
    layer = C.ImageResize(shape, method, antialias)
    init_fn, apply_fn = F.image_resize_finite(layer.shape, layer.method, antialias)
    return Layer(init_fn, apply_fn, KernelFn((_Single(layer, "ImageResize"),)))


def GlobalSelfAttention(
    n_chan_out: int,
    n_chan_key: int,
    n_chan_val: int,
    n_heads: int,
    linear_scaling: bool = True,
    W_key_std: float = 1.0,
    W_value_std: float = 1.0,
    W_query_std: float = 1.0,
    W_out_std: float = 1.0,
    b_std: float | None = None,
    attention_mechanism: str = "SOFTMAX",
    pos_emb_type: str = "NONE",
    pos_emb_p_norm: float = 2,
    pos_emb_decay_fn: Callable | None = None,
    n_chan_pos_emb: int | None = None,
    W_pos_emb_std: float = 1.0,
    val_pos_emb: bool = False,
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    """Global self-attention over pixels (``neural_tangents.stax.GlobalSelfAttention``, Hron et al.
    2020); its kernel is :class:`rmtjax.kernels._conv.Attention` (see there for the formulas)."""
    _nhwc(batch_axis, channel_axis, "GlobalSelfAttention")
    mechanism = getattr(attention_mechanism, "name", attention_mechanism)
    pos_type = getattr(pos_emb_type, "name", pos_emb_type)
    layer = C.Attention(n_chan_out, linear_scaling=linear_scaling, W_query_std=W_query_std, W_key_std=W_key_std,
                        W_value_std=W_value_std, W_out_std=W_out_std, b_std=b_std, mechanism=mechanism,
                        pos_emb_type=pos_type, pos_emb_p_norm=pos_emb_p_norm, pos_emb_decay_fn=pos_emb_decay_fn,
                        n_chan_pos_emb=n_chan_pos_emb, W_pos_emb_std=W_pos_emb_std, val_pos_emb=val_pos_emb)
    init_fn, apply_fn = F.global_self_attention_finite(
        n_chan_out, n_chan_key, n_chan_val, n_heads, linear_scaling=linear_scaling, W_key_std=W_key_std,
        W_value_std=W_value_std, W_query_std=W_query_std, W_out_std=W_out_std, b_std=b_std,
        attention_mechanism=layer.mechanism, pos_emb_type=layer.pos_emb_type, pos_emb_p_norm=pos_emb_p_norm,
        pos_emb_decay_fn=pos_emb_decay_fn, n_chan_pos_emb=n_chan_pos_emb, W_pos_emb_std=W_pos_emb_std,
        val_pos_emb=val_pos_emb)
    return Layer(init_fn, apply_fn, KernelFn((_Single(layer, "GlobalSelfAttention"),)))


def _pool(kind: str, window_shape, strides, padding, normalize_edges, batch_axis, channel_axis) -> Layer:
    who = "AvgPool" if kind == "avg" else "SumPool"
    _nhwc(batch_axis, channel_axis, who)
    layer = C.Pool(window_shape, strides, padding, kind, normalize_edges)
    init_fn, apply_fn = F.pool_finite(kind, layer.window_shape, layer.strides, layer.padding, layer.normalize_edges)
    return Layer(init_fn, apply_fn, KernelFn((_Single(layer, who),)))


def AvgPool(
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    normalize_edges: bool = False,
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    r"""Average pooling (``neural_tangents.stax.AvgPool``; default strides 1, as neural-tangents):
    :math:`\Sigma'(q, q') = \frac{1}{|w|^2}\sum_{a, b\in w}\Sigma(sq + a, sq' + b)`
    (:class:`rmtjax.kernels._conv.Pool`)."""
    return _pool("avg", window_shape, strides, padding, normalize_edges, batch_axis, channel_axis)


def SumPool(
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    """Sum pooling (``neural_tangents.stax.SumPool``): :func:`AvgPool` without the ``1/|w|^2``."""
    return _pool("sum", window_shape, strides, padding, False, batch_axis, channel_axis)


def _global_pool(kind: str, batch_axis, channel_axis) -> Layer:
    who = "GlobalAvgPool" if kind == "avg" else "GlobalSumPool"
    _nhwc(batch_axis, channel_axis, who)
    init_fn, apply_fn = F.global_pool_finite(kind)
    return Layer(init_fn, apply_fn, KernelFn((_Single(C.GlobalPool(kind), who),)))


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    r"""Average over all pixels (``neural_tangents.stax.GlobalAvgPool``):
    :math:`\frac{1}{|S|^2}\sum_{p, p'}\Sigma(p, p')`."""
    return _global_pool("avg", batch_axis, channel_axis)


def GlobalSumPool(batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    r"""Sum over all pixels (``neural_tangents.stax.GlobalSumPool``): :math:`\sum_{p, p'}\Sigma(p, p')`."""
    return _global_pool("sum", batch_axis, channel_axis)


def Flatten(batch_axis: int = 0, batch_axis_out: int = 0) -> Layer:
    r"""Flattens pixels and channels into features (``neural_tangents.stax.Flatten``); the next
    ``Dense`` sees :math:`\frac{1}{|S|}\sum_p\Sigma(p, p)`."""
    if static_int(batch_axis, "Flatten: batch_axis") != 0 or static_int(batch_axis_out, "Flatten: batch_axis_out") != 0:
        raise ValueError(f"Flatten: batch_axis and batch_axis_out must be 0, got {batch_axis}, {batch_axis_out}")
    init_fn, apply_fn = F.flatten_finite()
    return Layer(init_fn, apply_fn, KernelFn((_Single(C.Flatten(), "Flatten"),)))


def LayerNorm(axis=-1, eps: float = 1e-12, batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    r"""Layer normalisation (``neural_tangents.stax.LayerNorm``) over ``axis`` (must include the
    channels): :math:`\Sigma(p, p')/\sqrt{(\epsilon + \bar q(p))(\epsilon + \bar q'(p'))}`
    (:class:`rmtjax.kernels._conv.LayerNorm`)."""
    _nhwc(batch_axis, channel_axis, "LayerNorm")
    layer = C.LayerNorm(axis, eps)
    init_fn, apply_fn = F.layer_norm_finite(axis, eps)
    return Layer(init_fn, apply_fn, KernelFn((_Single(layer, "LayerNorm"),)))


# ------------------------------------------------------------------------------------------
# Engine layers -> triples
# ------------------------------------------------------------------------------------------


def layer(net: L.AbstractLayer) -> Layer:
    """The ``(init_fn, apply_fn, kernel_fn)`` triple of engine layers (the inverse of
    ``kernel_fn.net``): ``kernel_fn`` runs :func:`rmtjax.kernels.kernel` on ``net``; ``init_fn`` and
    ``apply_fn`` are the finite network, built from :class:`~rmtjax.kernels.Dense` (which then needs
    its ``out_dim``), :class:`~rmtjax.kernels.Activation`, :class:`~rmtjax.kernels.Identity`,
    :class:`~rmtjax.kernels.Serial`, :class:`~rmtjax.kernels.Stack`,
    :class:`~rmtjax.kernels.Parallel`, :class:`~rmtjax.kernels.Residual` and
    :class:`~rmtjax.kernels.FullyConnected` (with ``widths``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax import kernels
        >>> from rmtjax.activations import Relu
        >>> net = kernels.Serial(kernels.Dense(1.4, 0.1, out_dim=16), kernels.Activation(Relu()),
        ...                      kernels.Dense(1.4, 0.1, out_dim=1))
        >>> init_fn, apply_fn, kernel_fn = layer(net)
        >>> shape, params = init_fn(jax.random.key(0), (3, 5))
        >>> shape, apply_fn(params, jnp.ones((3, 5))).shape
        ((3, 1), (3, 1))
    """
    if not isinstance(net, L.AbstractLayer):
        raise ValueError(f"net must be an rmtjax.kernels layer (Dense, Activation, Serial, ...), got "
                         f"{type(net).__name__}")
    init_fn, apply_fn = _finite(net)
    return Layer(init_fn, apply_fn, KernelFn((_Single(net, type(net).__name__),)))


def _scaled(w, fn):
    return fn if w is None else (lambda params, x, **kw: w * fn(params, x, **kw))


def _finite(net: L.AbstractLayer) -> tuple[Callable, Callable]:
    """The finite ``(init_fn, apply_fn)`` of an engine layer (see :func:`layer`)."""
    if isinstance(net, FullyConnected):
        return _finite(net.graph())
    if isinstance(net, L.Dense):
        if net.out_dim is None:
            raise ValueError("net: a Dense layer without out_dim has no finite network; give every Dense its out_dim")
        return _dense_finite(net, net.out_dim)
    if isinstance(net, L.Activation):
        return _elementwise(net.activation, net.method)[:2]
    if isinstance(net, L.Identity):
        return Identity()[:2]
    if isinstance(net, C.Conv):
        if net.out_dim is None:
            raise ValueError("net: a Conv layer without out_dim has no finite network; give every Conv its out_dim")
        return F.conv_finite(net.out_dim, net.filter_shape, net.strides, net.padding, net.W_std,
                             net.b_std if net.bias else None, net.parameterization)
    if isinstance(net, C.Pool):
        return F.pool_finite(net.kind, net.window_shape, net.strides, net.padding, net.normalize_edges)
    if isinstance(net, C.GlobalPool):
        return F.global_pool_finite(net.kind)
    if isinstance(net, C.Flatten):
        return F.flatten_finite()
    if isinstance(net, C.LayerNorm):
        return F.layer_norm_finite(net.axis, net.eps)
    if isinstance(net, L.Stack):
        dyn, static = eqx.partition(net.block, eqx.is_array)
        parts = [_finite(eqx.combine(jax.tree_util.tree_map(lambda a, i=i: a[i], dyn), static))
                 for i in range(net.depth)]
    elif isinstance(net, L.Serial):
        parts = [_finite(sub) for sub in net.layers]
    elif isinstance(net, (L.Parallel, L.Residual)):
        branches = net.branches if isinstance(net, L.Parallel) else (L.Identity(), net.block)
        weights = [None] * len(branches) if net.weights is None else list(net.weights)
        fins = [_finite(b) for b in branches]
        inner = parallel(*(Layer(i, _scaled(w, a), KernelFn(())) for (i, a), w in zip(fins, weights)))
        return serial(FanOut(len(branches)), inner, FanInSum())[:2]
    else:
        raise ValueError(f"net: {type(net).__name__} has no finite network in rmtjax.stax")
    return serial(*(Layer(i, a, KernelFn(())) for i, a in parts))[:2]


# neural-tangents layers that rmtjax.stax does not provide (yet): ``stax.Conv`` etc. exist and raise
# NotImplementedError when called, naming the layer (a module __getattr__, PEP 562).
_UNSUPPORTED = frozenset({
    "BatchNorm", "Aggregate", "ConvLocal", "DotGeneral",
    "Elementwise", "ExpNormalized",
    "MaxPool", "Sigmoid_like", "Gabor",
    "repeat", "shape_and_axes", "supports_masking", "requires",
})


def __getattr__(name: str) -> Any:
    if name not in _UNSUPPORTED:
        raise AttributeError(f"module 'rmtjax.stax' has no attribute {name!r}")

    def unsupported(*args, **kwargs):
        raise NotImplementedError(
            f"rmtjax.stax.{name} is not supported yet (rmtjax.stax covers Dense, Conv, ConvTranspose, AvgPool, "
            "SumPool, GlobalAvgPool, GlobalSumPool, GlobalSelfAttention, Flatten, LayerNorm, Dropout, Index, ImageResize, "
            "the activations, "
            "serial, parallel, FanOut, FanInSum, FanInProd, FanInConcat, Identity)" + (": max pooling has no closed-form infinite-width kernel" if name == "MaxPool" else ""))

    unsupported.__name__ = name
    unsupported.__doc__ = f"neural-tangents' ``{name}``: not supported yet; raises ``NotImplementedError``."
    return unsupported
