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
from ._validate import check_finite_array, check_matrix, check_nonnegative
from .gaussian import AbstractMethod, Auto, GaussHermite, gaussian_expectations
from .kernels._core import FullyConnected, Kernel, _signature, exact_gram, kernel as _core_kernel

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
    width: int  # channel dimension of the current (finite) activations


class Layer(NamedTuple):
    init_fn: Callable
    apply_fn: Callable
    kernel_fn: "KernelFn"


class KernelFn:
    """``kernel_fn(x1, x2=None, get=None)`` with neural-tangents' semantics."""

    def __init__(self, transform: Callable[[Any], Any], chain: tuple | None):
        self._transform = transform
        self._chain = chain  # description of a plain Dense/activation chain, or None

    def __call__(self, x1, x2=None, get=None, **kwargs):
        if kwargs:
            unknown = ", ".join(sorted(kwargs))
            raise NotImplementedError(f"kernel_fn keyword arguments not supported by rmtjax.stax: {unknown}")
        names = _parse_get(get)
        x1 = check_finite_array(check_matrix(x1, "x1"), "x1")
        if x2 is not None:
            x2 = check_finite_array(check_matrix(x2, "x2"), "x2")
            if x2.shape[1] != x1.shape[1]:
                raise ValueError(f"x1 and x2 must have the same number of features, got {x1.shape[1]} and {x2.shape[1]}")
        dtype = jnp.result_type(x1, float) if x2 is None else jnp.result_type(x1, x2, float)
        x1 = x1.astype(dtype)
        x2 = None if x2 is None else x2.astype(dtype)
        net = _chain_to_spec(self._chain, x1.shape[1]) if self._chain else None  # None or ()
        if net is not None and set(names) <= {"nngp", "ntk"}:
            out = _core_kernel(x1, x2, net)
            vals = {"nngp": out.nngp, "ntk": out.ntk}
        else:
            st = self._transform(_input_state(x1, x2))
            if not isinstance(st, _State):
                raise ValueError("the network ends with several branches; close them with FanInSum")
            vals = {"nngp": st.nngp, "ntk": st.ntk, "cov1": st.cov1, "cov2": st.cov2}
        if isinstance(get, str):
            return vals[get]
        if get is None:
            return Kernel(vals["nngp"], vals["ntk"])
        if tuple(names) == ("nngp", "ntk"):
            return Kernel(vals["nngp"], vals["ntk"])
        return collections.namedtuple("Kernel", names)(*(vals[n] for n in names))


def _parse_get(get):
    allowed = ("nngp", "ntk", "cov1", "cov2")
    names = (get,) if isinstance(get, str) else (("nngp", "ntk") if get is None else tuple(get))
    for n in names:
        if n not in allowed:
            raise ValueError(f"get must be one of {allowed} or a tuple of them, got {get!r}")
    return names


def _input_state(x1, x2):
    d = x1.shape[1]
    sym = x2 is None
    x2_ = x1 if sym else x2
    s1, s2 = _signature(x1), _signature(x2_)
    dot, same = exact_gram(x1, x2_, s1, s2)
    return _State(s1[1] / d, dot / d, s2[1] / d, jnp.zeros_like(dot), same, d)


def _map_states(st, fn):
    if isinstance(st, (list, tuple)) and not isinstance(st, _State):
        return type(st)(_map_states(s, fn) for s in st)
    return fn(st)


# ------------------------------------------------------------------------------------------
# Combinators
# ------------------------------------------------------------------------------------------


def serial(*layers: Layer) -> Layer:
    """Layers applied one after the other (``neural_tangents.stax.serial``)."""
    layers = tuple(layers)
    for i, l in enumerate(layers):
        if not isinstance(l, tuple) or len(l) != 3:
            raise ValueError(f"serial: argument {i} is not an (init_fn, apply_fn, kernel_fn) layer")

    def init_fn(key, input_shape):
        params = []
        for l in layers:
            key, sub = jax.random.split(key)
            input_shape, p = l[0](sub, input_shape)
            params.append(p)
        return input_shape, tuple(params)

    def apply_fn(params, x, **kwargs):
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
    """Applies ``layers[i]`` to the ``i``-th input branch (``neural_tangents.stax.parallel``)."""
    layers = tuple(layers)

    def init_fn(key, input_shape):
        keys = jax.random.split(key, len(layers))
        outs = [l[0](k, s) for l, k, s in zip(layers, keys, input_shape)]
        return [o[0] for o in outs], tuple(o[1] for o in outs)

    def apply_fn(params, xs, **kwargs):
        return [l[1](p, x, **kwargs) for l, p, x in zip(layers, params, xs)]

    def transform(sts):
        if len(sts) != len(layers):
            raise ValueError(f"parallel: got {len(sts)} branches for {len(layers)} layers")
        return [l[2]._transform(s) for l, s in zip(layers, sts)]

    return Layer(init_fn, apply_fn, KernelFn(transform, None))


def FanOut(num: int) -> Layer:
    """Copies the input into ``num`` branches."""
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"FanOut: num must be a positive integer, got {num!r}")
    return Layer(
        lambda key, s: ([s] * num, ()),
        lambda params, x, **kw: [x] * num,
        KernelFn(lambda st: [st] * num, None),
    )


def FanInSum() -> Layer:
    r"""Sums the branches. Kernels add (branches are independent given the input, as in
    neural-tangents: a branch ending in a zero-mean random ``Dense`` is uncorrelated with the
    others)."""

    def init_fn(key, shapes):
        if len({tuple(s) for s in shapes}) != 1:
            raise ValueError(f"FanInSum: branch shapes differ: {shapes}")
        return shapes[0], ()

    def transform(sts):
        widths = {s.width for s in sts}
        if len(widths) != 1:
            raise ValueError(f"FanInSum: branch widths differ: {sorted(widths)}")
        return _State(
            sum(s.cov1 for s in sts), sum(s.nngp for s in sts), sum(s.cov2 for s in sts),
            sum(s.ntk for s in sts), sts[0].same, sts[0].width,
        )

    return Layer(init_fn, lambda params, xs, **kw: sum(xs), KernelFn(transform, None))


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
    """
    if not isinstance(out_dim, (int, np.integer)) or out_dim < 1:
        raise ValueError(f"Dense: out_dim must be a positive integer, got {out_dim!r}")
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"Dense: parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    if batch_axis != 0 or channel_axis not in (-1, 1):
        raise NotImplementedError("Dense: only batch_axis=0, channel_axis=-1 (2-d inputs) are supported")
    if tuple(s) != (1, 1) and parameterization == "standard":
        raise NotImplementedError("Dense: width scalings s != (1, 1) are not supported")
    W_std = check_nonnegative(W_std, "W_std")
    b_std = None if b_std is None else check_nonnegative(b_std, "b_std")
    bias = b_std is not None
    bvar = 0.0 if b_std is None else b_std**2

    def init_fn(key, input_shape):
        n_in = input_shape[-1]
        k1, k2 = jax.random.split(key)
        W = jax.random.normal(k1, (n_in, out_dim))
        b = jax.random.normal(k2, (out_dim,)) if bias else None
        if parameterization == "standard":
            W = W * W_std / math.sqrt(n_in)
            b = None if b is None else b * b_std
        return tuple(input_shape[:-1]) + (out_dim,), (W, b)

    def apply_fn(params, x, **kwargs):
        W, b = params
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
            return _State(W_std**2 * st.cov1 + bvar, nngp, W_std**2 * st.cov2 + bvar, ntk, st.same, out_dim)

        return _map_states(st, f)

    chain = (("dense", W_std, b_std, parameterization, out_dim),)
    return Layer(init_fn, apply_fn, KernelFn(transform, chain))


# ------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------


def Activation(activation: _act.AbstractActivation, method: AbstractMethod = Auto()) -> Layer:
    """Any :mod:`rmtjax.activations` module as a stax layer, with a ``method=`` for its
    Gaussian expectations (closed form where available, Mehler series otherwise)."""
    if not isinstance(activation, _act.AbstractActivation):
        raise ValueError(f"Activation: expected an rmtjax.activations module, got {activation!r}")

    def transform(st):
        def f(st):
            k, kdot = gaussian_expectations(activation, st.cov1[:, None], st.cov2[None, :], _fix_same(st), method=method)
            c1 = gaussian_expectations(activation, st.cov1, st.cov1, st.cov1, method=method).k
            c2 = gaussian_expectations(activation, st.cov2, st.cov2, st.cov2, method=method).k
            return _State(c1, k, c2, kdot * st.ntk, st.same, st.width)

        return _map_states(st, f)

    return Layer(
        lambda key, s: (s, ()),
        lambda params, x, **kw: activation(x),
        KernelFn(transform, (("act", activation, method),)),
    )


def _fix_same(st: _State):
    v = st.cov1[:, None] + jnp.zeros_like(st.nngp)
    return jnp.where(st.same, st.nngp - jax.lax.stop_gradient(st.nngp) + jax.lax.stop_gradient(v), st.nngp)


def Relu(do_stabilize: bool = False) -> Layer:
    return Activation(_act.Relu())


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> Layer:
    return Activation(_act.LeakyRelu(alpha))


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Layer:
    return Activation(_act.ABRelu(a, b))


def Abs(do_stabilize: bool = False) -> Layer:
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
    act = _act.Custom(lambda x, p: fn(x)) if df is None else _DerivCustom(fn, df)
    return Activation(act, method=GaussHermite(deg))


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
