r"""Kernel-matrix products without the kernel matrix.

:func:`kernel_matvec` computes :math:`K(X_1, X_2)\,V` tile by tile: each ``tile x tile`` block of
the NNGP or NTK is produced by the same engine as :func:`rmtjax.kernels.kernel` (the whole
network recursion on a block that stays in cache), multiplied into the running sum and dropped.
Memory is :math:`O((n_1 + n_2)(d + k) + \text{tile}^2)` whatever :math:`n`; the cost of one
product equals that of computing the kernel once. This is what matrix-free solvers (conjugate
gradients for kernel ridge regression at :math:`n \gg 10^4`,
:func:`rmtjax.regression.kernel_ridge_cg`) are built on.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._validate import as_real, check_range, choice, static_int
from ..gaussian import AbstractMethod, Auto
from ._conv import Dropout
from ._core import _check_net, _matrix, _signature, _tile, _widest, default_tile
from ._layers import AbstractLayer

__all__ = ["kernel_matvec"]

_KINDS = ("nngp", "ntk")


def matvec_tile() -> int:
    """The default block edge of :func:`kernel_matvec` (and of the conjugate-gradient solver built on
    it): 256 on CPUs, where each block's product with ``v`` amortises the recursion over twice the
    kernel engine's tile, and :func:`rmtjax.kernels.default_tile` (1024) on accelerators."""
    return 256 if default_tile() == 128 else default_tile()


def _pad_edge(x, rows: int):
    """``x`` with its last row repeated up to ``rows`` rows (a real input: no special cases)."""
    extra = rows - x.shape[0]
    return jnp.concatenate([x, jnp.broadcast_to(x[-1:], (extra,) + x.shape[1:])]) if extra else x


def matvec_core(x1, x2, v, net, *, kind: str, tile: int, method: AbstractMethod):
    """The product for validated arrays (``x1 (n1, d)``, ``x2 (n2, d)``, ``v (n2, k)``), traceable:
    callers that validate once and apply the product many times (a conjugate-gradient solve) use
    this. The tiles are computed in the inputs' dtype and summed in ``v``'s (float32 inputs with a
    float64 ``v``: float32 kernel evaluation, float64 accumulation)."""
    n1, n2, k = x1.shape[0], x2.shape[0], v.shape[1]
    t1, t2 = -(-n1 // tile), -(-n2 // tile)
    x1p, x2p = _pad_edge(x1, t1 * tile), _pad_edge(x2, t2 * tile)
    vp = jnp.concatenate([v, jnp.zeros((t2 * tile - n2, k), v.dtype)]) if t2 * tile > n2 else v
    s1, s2 = _signature(x1p), _signature(x2p)

    def blocks(a, t):
        return jax.tree_util.tree_map(lambda b: b.reshape((t, tile) + b.shape[1:]), a)

    cols = (blocks(x2p, t2), blocks(s2, t2), blocks(vp, t2))

    def row(args):
        xi, si = args

        def body(acc, col):
            xj, sj, vj = col
            nngp, ntk = _tile(xi, xj, si, sj, net, method, False)
            # a tile of the inputs' dtype into an accumulator of v's (float32 inputs, float64 sums)
            return acc + (nngp if kind == "nngp" else ntk).astype(acc.dtype) @ vj, None

        acc, _ = jax.lax.scan(body, jnp.zeros((tile, k), v.dtype), cols)
        return acc

    out = jax.lax.map(row, (blocks(x1p, t1), blocks(s1, t1)))
    return out.reshape(t1 * tile, k)[:n1]


@functools.partial(jax.jit, static_argnames=("static", "kind", "tile", "method"))
def _compiled(x1, x2, v, dyn, *, static, kind, tile, method):
    return matvec_core(x1, x2, v, eqx.combine(dyn, static), kind=kind, tile=tile, method=method)


def kernel_matvec(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None,
    v: Float[ArrayLike, "n2 *k"],
    net: AbstractLayer,
    *,
    kind: str = "nngp",
    tile: int | None = None,
    method: AbstractMethod = Auto(),
) -> Float[Array, "n1 *k"]:
    r""":math:`K(X_1, X_2)\,V` for the NNGP or NTK of ``net``, without storing :math:`K`.

    Args:
        x1: rows ``(n1, d)``, real and finite.
        x2: columns ``(n2, d)``, or ``None`` for ``x1``.
        v: ``(n2,)`` or ``(n2, k)``, real and finite.
        net: a layer of :mod:`rmtjax.kernels` (e.g. :class:`~rmtjax.kernels.FullyConnected`).
        kind: ``"nngp"`` or ``"ntk"``.
        tile: the block edge (static, in ``[8, 4096]``); ``None`` (default): :func:`matvec_tile`
            (256 on CPUs, 1024 on accelerators).
        method: the Gaussian-expectation method of the engine.

    Returns:
        ``(n1,)`` or ``(n1, k)``, equal to ``kernel(x1, x2, net).<kind> @ v`` (to rounding).
        Differentiable in ``v``, the inputs and ``net``'s arrays.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.kernels import FullyConnected, kernel
        >>> x = jnp.linspace(-1, 1, 30).reshape(10, 3)
        >>> net = FullyConnected(2, 1.4, 0.1)
        >>> kv = kernel_matvec(x, None, jnp.ones(10), net, tile=8)
        >>> bool(jnp.allclose(kv, kernel(x, None, net).nngp @ jnp.ones(10), rtol=1e-5))
        True
    """
    _check_net(net)
    kind = choice(kind, "kind", _KINDS)
    tile = matvec_tile() if tile is None else static_int(tile, "tile", lo=8, hi=4096)
    if not isinstance(method, AbstractMethod):
        raise ValueError(f"method must be an rmtjax.gaussian method object, got {method!r}")
    leaves = jax.tree_util.tree_leaves(net, is_leaf=lambda a: isinstance(a, Dropout))
    if any(isinstance(leaf, Dropout) for leaf in leaves):
        raise ValueError("net: kernel_matvec does not support Dropout in training mode (its kernel depends on which "
                         "rows are the same sample); compute the kernel with rmtjax.kernels.kernel")
    x1 = _matrix(x1, "x1")
    x2 = x1 if x2 is None else _matrix(x2, "x2")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of features, got {x1.shape[1]} and {x2.shape[1]}")
    v = check_range(as_real(v, "v", ndim=(1, 2)), "v")
    if v.shape[0] != x2.shape[0]:
        raise ValueError(f"v must have one row per row of x2 ({x2.shape[0]}), got shape {v.shape}")
    dt = _widest(_widest(x1.dtype, x2.dtype), v.dtype)
    x1, x2 = x1.astype(dt), x2.astype(dt)
    vec = v.ndim == 1
    v2 = v.astype(dt).reshape(v.shape[0], -1)
    dyn, static = eqx.partition(net, eqx.is_array)
    out = _compiled(x1, x2, v2, dyn, static=static, kind=kind, tile=tile, method=method)
    return out[:, 0] if vec else out
