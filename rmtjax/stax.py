r"""A neural-tangents-compatible ``stax`` facade over the rmtjax kernel engine.

Every layer is a triple ``(init_fn, apply_fn, kernel_fn)`` with neural-tangents' semantics
(Novak et al. 2020): ``init_fn(key, input_shape) -> (output_shape, params)``,
``apply_fn(params, x)`` is the finite network in the same parameterization, and
``kernel_fn(x1, x2=None, get=None)`` its infinite-width NNGP/NTK. Porting a fully-connected
neural-tangents script needs only the import changed::

    from rmtjax import stax          # was: from neural_tangents import stax
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Erf(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, ("nngp", "ntk"))

Plain ``Dense -> activation -> ... -> Dense`` chains are routed to the tiled core
(:func:`rmtjax.kernels.kernel`); other graphs (``parallel``, ``FanOut``, ``FanInSum``, residual
blocks) go through a layer-by-layer evaluation. The ``get=`` switch is kept only for
compatibility: the functional core returns a fixed ``Kernel(nngp, ntk)``. Hyperparameters here are
captured per layer as in neural-tangents; to differentiate or ``vmap`` over them use
:class:`rmtjax.kernels.FullyConnected`.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import activations as _act
from ._validate import check_nonnegative, choice, flag, static_int
from .gaussian import AbstractMethod, Auto, GaussHermite, _expectations, _resolve
from .kernels._core import (FullyConnected, Kernel, _cast, _matrix, _pad, _signature, _unpad, _widest, bucket_size,
                            exact_gram, mirror_variance, with_value)
from .kernels._core import kernel as _core_kernel

__all__ = [
    "ABRelu", "Abs", "Activation", "Cos", "Dense", "ElementwiseNumerical", "Erf", "Exp", "FanInSum",
    "FanOut", "Gaussian", "Gelu", "Hermite", "Identity", "LeakyRelu", "Monomial", "Polynomial", "Rbf",
    "RectifiedMonomial", "Relu", "Sign", "Sin", "parallel", "serial",
]


class _State(NamedTuple):
    """Kernel state between layers (neural-tangents' ``Kernel`` restricted to what FC nets need)."""

    cov1: jax.Array  # (n1,) variances of x1
    nngp: jax.Array  # (n1, n2)
    cov2: jax.Array  # (n2,)
    ntk: jax.Array  # (n1, n2)
    same: jax.Array  # (n1, n2) bool: identical inputs
    mirror: jax.Array  # (n1, n2) bool: identical or opposite inputs (equal variances at every layer)
    width: int  # channel dimension of the current (finite) activations


class Layer(NamedTuple):
    init_fn: Callable
    apply_fn: Callable
    kernel_fn: "KernelFn"


class KernelFn:
    """``kernel_fn(x1, x2=None, get=None)`` with neural-tangents' semantics.

    rmtjax extension: ``kernel_fn(x1, x2, get, buckets=True)`` pads the rows to size buckets
    and slices the result, as :func:`rmtjax.kernels.kernel` (one compiled program per bucket
    instead of one per input size). Other neural-tangents keywords are not supported.
    """

    def __init__(self, transform: Callable[[Any], Any], chain: tuple | None):
        self._transform = transform
        self._chain = chain  # description of a plain Dense/activation chain, or None

    def _generic(self, x1, x2):
        st = self._transform(_input_state(x1, x2))
        if not isinstance(st, _State):
            raise ValueError("kernel_fn: the network ends with several branches; close them with FanInSum()")
        return {"nngp": st.nngp, "ntk": st.ntk, "cov1": st.cov1, "cov2": st.cov2}

    def __call__(self, x1, x2=None, get=None, **kwargs):
        buckets = flag(kwargs.pop("buckets", False), "buckets")
        if kwargs:
            unknown = ", ".join(sorted(kwargs))
            raise ValueError(f"kernel_fn: keyword arguments {unknown} are not supported by rmtjax.stax (it takes "
                             "x1, x2, get and buckets)")
        names = _parse_get(get)
        x1 = _matrix(x1, "x1")
        if x2 is not None:
            x2 = _matrix(x2, "x2")
            if x2.shape[1] != x1.shape[1]:
                raise ValueError(f"x1 and x2 must have the same number of features, got {x1.shape[1]} and {x2.shape[1]}")
        dtype = _widest(x1.dtype, x1.dtype if x2 is None else x2.dtype)
        x1 = _cast(x1, dtype)
        x2 = None if x2 is None else _cast(x2, dtype)
        net = _chain_to_spec(self._chain, x1.shape[1]) if self._chain else None  # None or ()
        if net is not None and set(names) <= {"nngp", "ntk"}:
            out = _core_kernel(x1, x2, net, buckets=buckets)
            vals = {"nngp": out.nngp, "ntk": out.ntk}
        else:
            n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
            if buckets:
                x1 = _pad(x1, bucket_size(n1))
                x2 = None if x2 is None else _pad(x2, bucket_size(n2))
            # layer by layer, op by op: graphs other than plain chains are small and usually
            # evaluated once, where compiling the whole graph would cost more than it saves
            vals = self._generic(x1, x2)
            if buckets:
                vals = {"nngp": _unpad(vals["nngp"], n1, n2), "ntk": _unpad(vals["ntk"], n1, n2),
                        "cov1": _unpad(vals["cov1"], n1), "cov2": _unpad(vals["cov2"], n2)}
        if isinstance(get, str):
            return vals[get]
        if get is None:
            return Kernel(vals["nngp"], vals["ntk"])
        if tuple(names) == ("nngp", "ntk"):
            return Kernel(vals["nngp"], vals["ntk"])
        return collections.namedtuple("Kernel", names)(*(vals[n] for n in names))


def _parse_get(get):
    allowed = ("nngp", "ntk", "cov1", "cov2")
    if isinstance(get, str):
        names = (get,)
    elif get is None:
        names = ("nngp", "ntk")
    elif isinstance(get, (tuple, list)) and get:
        names = tuple(get)
    else:
        raise ValueError(f"get must be None, one of {allowed} or a non-empty tuple of them, got {get!r}")
    for n in names:
        if not isinstance(n, str) or n not in allowed:
            raise ValueError(f"get must be None, one of {allowed} or a non-empty tuple of them, got {get!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"get must not repeat a name, got {get!r}")
    return names


def _input_state(x1, x2):
    d = x1.shape[1]
    sym = x2 is None
    x2_ = x1 if sym else x2
    s1, s2 = _signature(x1), _signature(x2_)
    dot, same, opp = exact_gram(x1, x2_, s1, s2)
    return _State(s1.sq / d, dot / d, s2.sq / d, jnp.zeros_like(dot), same, same | opp, d)


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


def _check_layer(l, who: str, i: int):
    if not (isinstance(l, tuple) and len(l) == 3 and isinstance(l[2], KernelFn)):
        raise ValueError(f"{who}: layers[{i}] is not an rmtjax.stax layer (init_fn, apply_fn, kernel_fn), got "
                         f"{type(l).__name__}")


# ------------------------------------------------------------------------------------------
# Combinators
# ------------------------------------------------------------------------------------------


def serial(*layers: Layer) -> Layer:
    """Layers applied one after the other (``neural_tangents.stax.serial``)."""
    layers = tuple(layers)
    for i, l in enumerate(layers):
        _check_layer(l, "serial", i)

    def init_fn(key, input_shape):
        params = []
        for l in layers:
            key, sub = jax.random.split(key)
            input_shape, p = l[0](sub, input_shape)
            params.append(p)
        return input_shape, tuple(params)

    def apply_fn(params, x, **kwargs):
        if not isinstance(params, (tuple, list)) or len(params) != len(layers):
            raise ValueError(f"serial: params must be the {len(layers)} per-layer parameters from init_fn")
        for l, p in zip(layers, params):
            x = l[1](p, x, **kwargs)
        return x

    def transform(st):
        for l in layers:
            st = l[2]._transform(st)
        return st

    chain = None
    if all(l[2]._chain is not None for l in layers):
        chain = sum((l[2]._chain for l in layers), ())
    return Layer(init_fn, apply_fn, KernelFn(transform, chain))


def parallel(*layers: Layer) -> Layer:
    """Applies ``layers[i]`` to the ``i``-th input branch (``neural_tangents.stax.parallel``);
    its input must be a list of branches (from :func:`FanOut`)."""
    layers = tuple(layers)
    if not layers:
        raise ValueError("parallel: layers must hold at least one layer (one per branch), got none")
    for i, l in enumerate(layers):
        _check_layer(l, "parallel", i)

    def _count(n):
        if n != len(layers):
            raise ValueError(f"parallel: got {n} branches for {len(layers)} layers (one layer per branch)")

    def init_fn(key, input_shape):
        shapes = _branches(input_shape, "parallel", "input_shape must be")
        _count(len(shapes))
        keys = jax.random.split(key, len(layers))
        outs = [l[0](k, s) for l, k, s in zip(layers, keys, shapes)]
        return [o[0] for o in outs], tuple(o[1] for o in outs)

    def apply_fn(params, xs, **kwargs):
        xs = _branches(xs, "parallel", "x must be")
        _count(len(xs))
        return [l[1](p, x, **kwargs) for l, p, x in zip(layers, params, xs)]

    def transform(sts):
        sts = _branches(sts, "parallel", "its input must be")
        _count(len(sts))
        return [l[2]._transform(s) for l, s in zip(layers, sts)]

    return Layer(init_fn, apply_fn, KernelFn(transform, None))


def FanOut(num: int) -> Layer:
    """Copies the input into ``num >= 1`` branches."""
    num = static_int(num, "FanOut: num", lo=1, hi=10_000)

    def init_fn(key, s):
        return [_single(s, "FanOut", "input_shape")] * num, ()

    def apply_fn(params, x, **kw):
        return [_single(x, "FanOut", "x")] * num

    def transform(st):
        return [_single(st, "FanOut", "its input")] * num

    return Layer(init_fn, apply_fn, KernelFn(transform, None))


def FanInSum() -> Layer:
    r"""Sums the branches. Kernels add (branches are independent given the input, as in
    neural-tangents: a branch ending in a zero-mean random ``Dense`` is uncorrelated with the
    others). Its input must be a list of branches (from :func:`FanOut` / :func:`parallel`)."""

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

    def transform(sts):
        sts = _branches(sts, "FanInSum", "its input must be")
        for s in sts:
            if not isinstance(s, _State):
                raise ValueError("FanInSum: a branch is itself split (nested FanOut); close the inner branches first")
        widths = {s.width for s in sts}
        if len(widths) != 1:
            raise ValueError(f"FanInSum: branch widths differ: {sorted(widths)}")
        return _State(
            sum(s.cov1 for s in sts), sum(s.nngp for s in sts), sum(s.cov2 for s in sts),
            sum(s.ntk for s in sts), sts[0].same, sts[0].mirror, sts[0].width,
        )

    return Layer(init_fn, apply_fn, KernelFn(transform, None))


def Identity() -> Layer:
    """The identity layer."""
    return Layer(lambda key, s: (s, ()), lambda params, x, **kw: x, KernelFn(lambda st: st, ()))


# ------------------------------------------------------------------------------------------
# Dense
# ------------------------------------------------------------------------------------------


def _bcast(b, out):
    return b.reshape((1,) * (out.ndim - 1) + (-1,))


def Dense(
    out_dim: int,
    W_std: float = 1.0,
    b_std: float | None = None,
    batch_axis: int = 0,
    channel_axis: int = -1,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    r"""Fully-connected layer (neural-tangents conventions).

    ``"ntk"``: :math:`z = \frac{\sigma_w}{\sqrt{n}} W x + \sigma_b b` with
    :math:`W_{ij}, b_i \sim \mathcal N(0, 1)`; kernels
    :math:`\Sigma \mapsto \sigma_w^2\Sigma + \sigma_b^2`, :math:`\Theta \mapsto \Sigma' + \sigma_w^2\Theta`.
    ``"standard"``: :math:`z = W x + b`, :math:`W_{ij} \sim \mathcal N(0, \sigma_w^2/n)`,
    :math:`b_i \sim \mathcal N(0, \sigma_b^2)`; :math:`\Theta \mapsto n\,\Sigma + \sigma_w^2\Theta + 1`.

    ``out_dim >= 1``; ``W_std``, ``b_std`` real scalars, finite and ``>= 0`` (``b_std=None``: no
    bias); 2-d inputs only (``batch_axis=0``, ``channel_axis=-1`` or ``1``); ``s = (1, 1)``
    in the standard parameterization.
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
    W_std = _scalar(W_std, "W_std")
    b_std = None if b_std is None else _scalar(b_std, "b_std")
    bias = b_std is not None
    bvar = 0.0 if b_std is None else b_std**2

    def init_fn(key, input_shape):
        input_shape = _single(input_shape, "Dense", "input_shape")
        n_in = input_shape[-1]
        k1, k2 = jax.random.split(key)
        W = jax.random.normal(k1, (n_in, out_dim))
        b = jax.random.normal(k2, (out_dim,)) if bias else None
        if parameterization == "standard":
            W = W * W_std / math.sqrt(n_in)
            b = None if b is None else b * b_std
        return tuple(input_shape[:-1]) + (out_dim,), (W, b)

    def apply_fn(params, x, **kwargs):
        x = _single(x, "Dense", "x")
        W, b = params
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != W.shape[0]:
            raise ValueError(f"Dense: x must have {W.shape[0]} channels (the init_fn input shape), got shape "
                             f"{jnp.shape(x)}")
        if parameterization == "ntk":
            out = (W_std / math.sqrt(x.shape[-1])) * (x @ W)
            return out if b is None else out + b_std * _bcast(b, out)
        out = x @ W
        return out if b is None else out + _bcast(b, out)

    def transform(st):
        def f(st):
            nngp = W_std**2 * st.nngp + bvar
            if parameterization == "ntk":
                ntk = nngp + W_std**2 * st.ntk
            else:
                ntk = st.width * st.nngp + W_std**2 * st.ntk + (1.0 if bias else 0.0)
            return _State(W_std**2 * st.cov1 + bvar, nngp, W_std**2 * st.cov2 + bvar, ntk, st.same, st.mirror,
                          out_dim)

        return f(_single(st, "Dense", "its input"))

    chain = (("dense", W_std, b_std, parameterization, out_dim),)
    return Layer(init_fn, apply_fn, KernelFn(transform, chain))


def _scalar(x, name: str):
    """A hyperparameter captured by a layer: a real scalar, finite and ``>= 0``."""
    x = check_nonnegative(x, name)
    if jnp.ndim(x) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(x)}")
    return x


# ------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------


def Activation(activation: _act.AbstractActivation, method: AbstractMethod = Auto()) -> Layer:
    """Any :mod:`rmtjax.activations` module as a stax layer, with a ``method=`` for its
    Gaussian expectations (closed form where available, Mehler series otherwise)."""
    if not isinstance(activation, _act.AbstractActivation):
        raise ValueError(f"Activation: activation must be an rmtjax.activations module, got {activation!r}")
    _resolve(activation, method)

    def transform(st):
        def f(st):
            # one copy of the variances for every use (see the optimization barrier in kernels._core)
            st = st._replace(**dict(zip(("cov1", "cov2"), jax.lax.optimization_barrier((st.cov1, st.cov2)))))
            k, kdot = _expectations(activation, st.cov1[:, None], mirror_variance(st.cov1, st.cov2, st.mirror),
                                    _fix_same(st), method)
            c1 = _expectations(activation, st.cov1, st.cov1, st.cov1, method).k
            c2 = _expectations(activation, st.cov2, st.cov2, st.cov2, method).k
            return _State(c1, k, c2, kdot * st.ntk, st.same, st.mirror, st.width)

        return f(_single(st, type(activation).__name__, "its input"))

    def apply_fn(params, x, **kw):
        return activation(_single(x, type(activation).__name__, "x"))

    return Layer(
        lambda key, s: (_single(s, type(activation).__name__, "input_shape"), ()),
        apply_fn,
        KernelFn(transform, (("act", activation, method),)),
    )


def _fix_same(st: _State):
    return with_value(st.same, st.nngp, st.cov1[:, None])


def Relu(do_stabilize: bool = False) -> Layer:
    flag(do_stabilize, "do_stabilize")
    return Activation(_act.Relu())


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> Layer:
    flag(do_stabilize, "do_stabilize")
    return Activation(_act.LeakyRelu(alpha))


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Layer:
    flag(do_stabilize, "do_stabilize")
    return Activation(_act.ABRelu(a, b))


def Abs(do_stabilize: bool = False) -> Layer:
    flag(do_stabilize, "do_stabilize")
    return Activation(_act.Abs())


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    return Activation(_act.Erf(a, b, c))


def Gelu(approximate: bool = False) -> Layer:
    return Activation(_act.Gelu(approximate=approximate))


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    return Activation(_act.Sin(a, b, c))


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    return Activation(_act.Cos(a, b, c))


def Sign() -> Layer:
    return Activation(_act.Sign())


def Exp(a: float = 1.0, b: float = 1.0) -> Layer:
    return Activation(_act.Exp(a, b))


def Gaussian(a: float = 1.0, b: float = -1.0) -> Layer:
    return Activation(_act.Gaussian(a, b))


def Rbf(gamma: float = 1.0) -> Layer:
    return Activation(_act.Rbf(gamma))


def Polynomial(coef: Sequence[float]) -> Layer:
    return Activation(_act.Polynomial(coef))


def Hermite(degree: int) -> Layer:
    return Activation(_act.Hermite(degree))


def Monomial(degree: int) -> Layer:
    return Activation(_act.Monomial(degree))


def RectifiedMonomial(degree: int) -> Layer:
    return Activation(_act.RectifiedMonomial(degree))


def ElementwiseNumerical(fn: Callable, deg: int, df: Callable | None = None) -> Layer:
    """``fn`` with Gaussian expectations by ``deg``-point Gauss-Hermite quadrature, as
    neural-tangents' layer of the same name (prefer ``Activation(act)``: the Mehler series is
    far cheaper at equal accuracy)."""
    if not callable(fn):
        raise ValueError(f"ElementwiseNumerical: fn must be callable, got {type(fn).__name__}")
    if df is not None and not callable(df):
        raise ValueError(f"ElementwiseNumerical: df must be None or callable, got {type(df).__name__}")
    method = GaussHermite(deg)
    act = _act.Custom(lambda x, p: fn(x)) if df is None else _DerivCustom(fn, df)
    return Activation(act, method=method)


class _DerivCustom(_act.AbstractActivation):
    fn: Callable
    df: Callable

    def __call__(self, x):
        return self.fn(x)

    def derivative(self, x):
        return self.df(x)


for _name, _cls in [
    ("Relu", _act.Relu), ("LeakyRelu", _act.LeakyRelu), ("ABRelu", _act.ABRelu), ("Abs", _act.Abs),
    ("Erf", _act.Erf), ("Gelu", _act.Gelu), ("Sin", _act.Sin), ("Cos", _act.Cos), ("Sign", _act.Sign),
    ("Exp", _act.Exp), ("Gaussian", _act.Gaussian), ("Rbf", _act.Rbf), ("Polynomial", _act.Polynomial),
    ("Hermite", _act.Hermite), ("Monomial", _act.Monomial), ("RectifiedMonomial", _act.RectifiedMonomial),
]:
    globals()[_name].__doc__ = f"neural-tangents' ``{_name}`` layer; kernel of :class:`rmtjax.activations.{_cls.__name__}`.\n\n" + (
        _cls.__doc__ or ""
    )


# ------------------------------------------------------------------------------------------
# Fast path: a plain Dense/activation chain is a FullyConnected spec
# ------------------------------------------------------------------------------------------


def _chain_to_spec(chain: tuple, d: int) -> FullyConnected | None:
    items = list(chain)
    if not items or items[0][0] != "dense" or items[-1][0] != "dense":
        return None
    dense = items[0::2]
    acts = items[1::2]
    if any(i[0] != "dense" for i in dense) or any(a[0] != "act" for a in acts):
        return None
    if len({i[3] for i in dense}) != 1 or len({i[2] is None for i in dense}) != 1:
        return None
    if acts:
        a0, m0 = acts[0][1], acts[0][2]
        leaves0 = jax.tree_util.tree_leaves(a0)
        for _, a, m in acts[1:]:
            if type(a) is not type(a0) or m != m0:
                return None
            leaves = jax.tree_util.tree_leaves(a)
            if len(leaves) != len(leaves0) or not all(
                np.shape(x) == np.shape(y) and np.all(np.asarray(x) == np.asarray(y)) for x, y in zip(leaves, leaves0)
            ):
                return None
            if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(a0):
                return None
        if not isinstance(m0, Auto):
            return None
    else:
        a0 = _act.Identity()
    try:
        W = jnp.stack([jnp.asarray(i[1], float) for i in dense])
        b = None if dense[0][2] is None else jnp.stack([jnp.asarray(i[2], float) for i in dense])
    except Exception:
        return None
    par = dense[0][3]
    widths = tuple(int(i[4]) for i in dense[:-1])
    return FullyConnected(len(acts), W, b, a0, parameterization=par, widths=widths if par == "standard" else None)


_UNSUPPORTED = (
    "AvgPool", "BatchNorm", "Aggregate", "Conv", "ConvLocal", "ConvTranspose", "DotGeneral", "Dropout",
    "Elementwise", "ExpNormalized", "FanInConcat", "FanInProd", "Flatten", "GlobalAvgPool", "GlobalSelfAttention",
    "GlobalSumPool", "ImageResize", "Index", "LayerNorm", "MaxPool", "Sigmoid_like", "SumPool", "Gabor",
    "repeat", "shape_and_axes", "supports_masking", "requires",
)


def _unsupported(name: str):
    def layer(*args, **kwargs):
        raise NotImplementedError(
            f"rmtjax.stax.{name} is not supported yet (rmtjax.stax covers fully-connected networks: "
            "Dense, activations, serial, parallel, FanOut, FanInSum, Identity)"
        )

    layer.__name__ = name
    layer.__doc__ = f"neural-tangents' ``{name}``: not supported yet; raises ``NotImplementedError``."
    return layer


for _name in _UNSUPPORTED:
    globals()[_name] = _unsupported(_name)
