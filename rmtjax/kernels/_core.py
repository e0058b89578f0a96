r"""Infinite-width NNGP and NTK of fully-connected networks: the functional core.

A :class:`FullyConnected` spec describes ``depth`` hidden layers
``Dense -> activation`` followed by a ``Dense`` readout. Its kernels obey (Neal 1996; Lee et al.
2018; Jacot et al. 2018; Arora et al. 2019, eq. 6) in the NTK parameterization

.. math::
    \Sigma^{(0)} = \sigma_{w,0}^2\,\tfrac{x\cdot x'}{d} + \sigma_{b,0}^2,\qquad
    \Theta^{(0)} = \Sigma^{(0)},

    \Sigma^{(\ell)} = \sigma_{w,\ell}^2\,\mathbb E[\phi(u)\phi(v)] + \sigma_{b,\ell}^2,\qquad
    \Theta^{(\ell)} = \Sigma^{(\ell)} + \sigma_{w,\ell}^2\,\mathbb E[\phi'(u)\phi'(v)]\,
    \Theta^{(\ell-1)},

with :math:`(u, v) \sim \mathcal N(0, \Sigma^{(\ell-1)})` restricted to the pair. In the
standard parameterization (Sohl-Dickstein et al. 2020) the NNGP is the same and
:math:`\Theta^{(\ell)} = n_{\ell}\,\mathbb E[\phi\phi] + \sigma_{w,\ell}^2\,\dot k\,
\Theta^{(\ell-1)} + [\text{bias}]`, with :math:`n_\ell` the width feeding layer :math:`\ell`
(:math:`n_0 = d`) — neural-tangents' convention.

The output matrix is computed in tiles: the whole depth recursion runs on one tile at a time
(``lax.scan`` over depth inside ``lax.map`` over tiles), so no ``n1 x n2`` intermediate per layer
is ever materialised and memory stays ``O(n1 n2 + tile^2)``. With ``x2=None`` only the upper
triangle of tiles is computed. Identical (and, at the input, opposite) inputs get a correlation
of exactly ``+1`` (``-1``), so rounding cannot leave ``theta ~ sqrt(eps)`` on the diagonal.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._validate import (as_real, check_range, choice, concrete, error_if, flag, reraise_as_value_error,
                         static_int)
from ..activations import AbstractActivation, Relu
from ..gaussian import AbstractMethod, Auto, _expectations, _resolve

__all__ = ["FullyConnected", "Kernel", "bucket_size", "kernel"]


class Kernel(NamedTuple):
    """NNGP and NTK matrices (a leading depth axis when ``all_depths=True``)."""

    nngp: Array
    ntk: Array


_PARAMETERIZATIONS = ("ntk", "standard")
_MAX_DEPTH = 100_000


class FullyConnected(eqx.Module):
    r"""A fully-connected network: ``depth`` blocks ``Dense -> activation``, then ``Dense``.

    Args:
        depth: number of hidden layers (a static integer in ``[0, 100000]``); ``depth = 0`` is a
            linear model.
        W_std: weight standard deviation :math:`\sigma_w`, finite and ``>= 0``: a scalar or one per
            Dense layer (shape ``(depth + 1,)``). Differentiable.
        b_std: bias standard deviation :math:`\sigma_b` (scalar or ``(depth + 1,)``, finite and
            ``>= 0``), or ``None`` for no biases. Differentiable.
        activation: an :mod:`rmtjax.activations` module (its parameters are differentiable).
        parameterization: ``"ntk"`` (default) or ``"standard"``.
        widths: hidden widths ``(n_1, ..., n_depth)``, positive integers; only the
            standard-parameterization NTK depends on them (an int is broadcast).

    Invalid arguments raise ``ValueError`` (values that are traced under ``jit``: a compiled
    check).

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Erf
        >>> net = FullyConnected(depth=3, W_std=1.5, b_std=0.1, activation=Erf())
        >>> k = kernel(jnp.ones((4, 10)), None, net)
        >>> k.ntk.shape
        (4, 4)
    """

    W_std: Array
    b_std: Array
    activation: AbstractActivation
    depth: int = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)
    widths: tuple[int, ...] | None = eqx.field(static=True)
    bias: bool = eqx.field(static=True)

    def __init__(
        self,
        depth: int,
        W_std: ArrayLike = 1.0,
        b_std: ArrayLike | None = 0.0,
        activation: AbstractActivation = Relu(),
        *,
        parameterization: str = "ntk",
        widths: int | tuple[int, ...] | None = None,
    ):
        self.depth = static_int(depth, "depth", lo=0, hi=_MAX_DEPTH)
        self.parameterization = choice(parameterization, "parameterization", _PARAMETERIZATIONS)
        if not isinstance(activation, AbstractActivation):
            raise ValueError(f"activation must be an rmtjax.activations module, got {type(activation).__name__}")
        self.activation = activation
        self.bias = b_std is not None
        self.W_std = self._per_layer(W_std, "W_std")
        self.b_std = self._per_layer(0.0 if b_std is None else b_std, "b_std")
        if widths is not None:
            if isinstance(widths, (int, np.integer)) and not isinstance(widths, (bool, np.bool_)):
                widths = (widths,) * self.depth
            if not isinstance(widths, (tuple, list)) or len(widths) != self.depth:
                raise ValueError(f"widths must be a positive integer or {self.depth} positive integers (one per hidden "
                                 f"layer), got {widths!r}")
            widths = tuple(static_int(w, "widths", lo=1) for w in widths)
        elif self.parameterization == "standard" and self.depth > 0:
            raise ValueError("widths are required for parameterization='standard' (the NTK depends on them)")
        self.widths = widths

    def _per_layer(self, x, name: str) -> Array:
        x = as_real(x, name, ndim=(0, 1))
        if x.shape not in ((), (self.depth + 1,)):
            raise ValueError(f"{name} must be a scalar or have shape ({self.depth + 1},) (one per Dense layer), "
                             f"got shape {x.shape}")
        return check_range(x, name, lo=0.0)

    def layer_params(self, dtype) -> tuple[Array, Array]:
        """``(W_std, b_std)`` broadcast to one entry per Dense layer, in ``dtype``."""
        n = self.depth + 1
        return (
            jnp.broadcast_to(self.W_std, (n,)).astype(dtype),
            jnp.broadcast_to(self.b_std, (n,)).astype(dtype),
        )


def _expect(act, method, q1, q2, q12):
    return _expectations(act, q1, q2, q12, method)


def _diagonal(sq: Array, d: int, net: FullyConnected, method: AbstractMethod) -> Array:
    """Variances q^{(l)}(x_i), l = 0..depth, shape (depth + 1, n), from the squared norms ``sq``
    of the rows (the same numbers :func:`exact_gram` puts on identical pairs)."""
    W, b = net.layer_params(sq.dtype)
    q0 = W[0] ** 2 * sq / d + b[0] ** 2

    def step(q, wb):
        w, bb = wb
        k = _expect(net.activation, method, q, q, q).k
        q = w**2 * k + bb**2
        return q, q

    _, qs = jax.lax.scan(step, q0, (W[1:], b[1:]))
    return jnp.concatenate([q0[None], qs], axis=0)


class _Rows(NamedTuple):
    """What :func:`exact_gram` needs of the rows of an input: two 32-bit hashes of each row's bits
    (``hash``, shape ``(n, 2)``), the same of the negated row (``neg``), squared norms ``sq``."""

    hash: Array
    neg: Array
    sq: Array


def _fmix32(h):
    """MurmurHash3's finaliser: every input bit flips each output bit with probability ~1/2."""
    h = h ^ (h >> jnp.uint32(16))
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> jnp.uint32(13))
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> jnp.uint32(16))


def _row_hash(x):
    """Two independent 32-bit hashes of the bits of each row, ``(n, 2)`` uint32.

    ``sum_k a_k fmix32(bits_k ^ s_k) mod 2^32`` with random odd multipliers ``a_k`` and salts
    ``s_k`` per position: integer addition is exact and associative, so the hash of a row is the
    same bits whatever the program, shape, tiling or device that computes it (a floating-point
    fingerprint is not: its rounding depends on the reduction order XLA picks, and an identical
    pair missed costs ``sqrt(eps)`` in the kernel: measured 3e-9 relative for ReLU)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    m = math.prod(bits.shape[1:])
    bits = bits.reshape(x.shape[0], m)
    rng = np.random.default_rng([12345, m])
    salt = rng.integers(0, 2**32, size=(2, m), dtype=np.uint32)
    mult = rng.integers(0, 2**31, size=(2, m), dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    return jnp.stack([jnp.sum(_fmix32(bits ^ jnp.asarray(salt[k])[None, :]) * jnp.asarray(mult[k])[None, :], axis=1,
                             dtype=jnp.uint32)
                      for k in range(2)], axis=1)


def _signature(x: Array) -> _Rows:
    """Hashes of each row and of its negation, and the squared norms.

    Identical rows have identical hashes (``-0.0`` counts as ``0.0``); distinct rows collide
    with probability about ``2^-64``."""
    xs = jax.lax.stop_gradient(x)
    zero = xs == 0
    return _Rows(_row_hash(jnp.where(zero, jnp.zeros_like(xs), xs)), _row_hash(jnp.where(zero, jnp.zeros_like(xs), -xs)),
                 jnp.sum(x * x, axis=1))


def _match(h1, h2):
    return jnp.all(h1[:, None, :] == h2[None, :, :], axis=-1)


def with_value(mask, x, value):
    """``x`` with the entries under ``mask`` replaced by ``value`` (broadcast), keeping the
    gradient of ``x`` there: the exact value where rounding would lose it, the derivative of the
    formula it stands for."""
    return jnp.where(mask, x - jax.lax.stop_gradient(x) + jax.lax.stop_gradient(value), x)


def exact_gram(x1, x2, s1: _Rows, s2: _Rows):
    """``x1 @ x2.T`` with entries of identical (opposite) rows set to exactly ``+|x|^2``
    (``-|x|^2``), gradients kept from the product; also returns the masks of identical and of
    opposite rows."""
    same = _match(s1.hash, s2.hash)
    opp = _match(s1.hash, s2.neg) & ~same
    dot = x1 @ x2.T
    sq = s1.sq[:, None]
    return with_value(same | opp, dot, jnp.where(same, sq, -sq)), same, opp


def mirror_variance(q1, q2, mirror):
    """``q2`` broadcast against ``q1`` (``(n1, n2)``), with the entries of identical or opposite rows
    (``mirror``) set to ``q1``: the variance of ``x`` and ``-x`` is the same at every layer, and
    computed apart it may differ in the last bit, which would put the correlation ``1 - eps`` and
    the kernel ``sqrt(eps)`` off. The gradient stays that of ``q2``."""
    return with_value(mirror, jnp.broadcast_to(q2[None, :], mirror.shape), q1[:, None])


def _tile(x1, x2, s1, s2, q1, q2, net: FullyConnected, method, all_depths: bool):
    """Kernels of one tile (rows x1, cols x2); q1, q2 are (depth + 1, T) variances and s1, s2
    the row fingerprints."""
    dtype = x1.dtype
    d = x1.shape[1]
    W, b = net.layer_params(dtype)
    dot, same, opp = exact_gram(x1, x2, s1, s2)
    mirror = same | opp
    sigma = W[0] ** 2 * dot / d + b[0] ** 2
    standard = net.parameterization == "standard"
    if standard:
        theta = dot + (1.0 if net.bias else 0.0)
        widths = jnp.asarray(np.asarray(net.widths if net.depth else (), dtype=float), dtype)
    else:
        theta = sigma
        widths = jnp.zeros((net.depth,), dtype)

    def step(carry, xs):
        sigma, theta = carry
        w, bb, n_in, qa, qb = xs
        # Identical inputs: the covariance is exactly the variance (gradient kept from sigma).
        sigma = with_value(same, sigma, qa[:, None])
        k, kdot = _expect(net.activation, method, qa[:, None], mirror_variance(qa, qb, mirror), sigma)
        new_sigma = w**2 * k + bb**2
        if standard:
            new_theta = n_in * k + w**2 * kdot * theta + (1.0 if net.bias else 0.0)
        else:
            new_theta = new_sigma + w**2 * kdot * theta
        out = (new_sigma, new_theta)
        return out, (out if all_depths else None)

    xs = (W[1:], b[1:], widths, q1[:-1], q2[:-1])
    (sigma_f, theta_f), hist = jax.lax.scan(step, (sigma, theta), xs)
    if all_depths:
        return (
            jnp.concatenate([sigma[None], hist[0]], axis=0),
            jnp.concatenate([theta[None], hist[1]], axis=0),
        )
    return sigma_f, theta_f


_MIN_DEPTH_TO_SHARD = 8


def _host_devices():
    return jax.devices()


def _pad_rows(x, m):
    pad = (-x.shape[0]) % m
    return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)) if pad else x


def bucket_size(n: int, tile: int = 128) -> int:
    """The number of rows :func:`kernel` pads ``n`` rows to with ``buckets=True``.

    Up to one tile: the next power of two (at least 8, at most ``tile``) — the cost there is
    the compile, not the arithmetic. Beyond: a whole number of tiles from 1, 2, 3, 4, 6, 8, 12,
    16, 24, ... (powers of two and their multiples by 1.5), so at most a third of the rows is
    padding (the tiled engine pads to whole tiles anyway). Loops over ``n`` then compile about
    ``2 log2(n / tile) + log2(tile / 8)`` programs instead of one per size.
    """
    n = static_int(n, "n", lo=1)
    tile = static_int(tile, "tile", lo=8)
    if n <= tile:
        b = 8
        while b < n:
            b *= 2
        return min(b, tile)
    need = -(-n // tile)
    k = 1
    while True:
        for c in (k, 3 * k // 2):
            if c >= need and c >= 1:
                return c * tile
        k *= 2


def _matrix(x, name: str):
    """``x`` as a real 2-d array with at least one row and one feature (structure), then finite
    (eagerly when concrete, a compiled check when traced). Host arrays are checked with NumPy
    and moved with ``jax.device_put`` (``jnp.asarray`` compiles a small program per shape)."""
    if not isinstance(x, jax.Array) and not isinstance(x, (bool, np.bool_, numbers.Number)):
        try:
            host = np.asarray(x)
        except Exception:
            host = None
        if host is not None and host.dtype.kind in "fiu":
            if host.ndim != 2:
                raise ValueError(f"{name} must be 2-d, got shape {host.shape}")
            x = jax.device_put(host if host.dtype.kind == "f" else host.astype(jnp.result_type(float)))
    x = as_real(x, name, ndim=2, allow_empty=True)
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature (column), got shape {x.shape}: a zero-feature "
                         "input has no kernel (its normalisation x.x'/d divides by d = 0)")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {x.shape}")
    return check_range(x, name)


def _widest(*dtypes):
    return max((jnp.dtype(d) for d in dtypes), key=lambda d: d.itemsize)


def _cast(x, dtype):
    """``x`` in ``dtype``; a concrete array is converted on the host (no per-shape compile)."""
    if x.dtype == dtype:
        return x
    c = concrete(x)
    return jax.device_put(c.astype(dtype)) if c is not None else x.astype(dtype)


def _pad(x, rows: int):
    extra = rows - x.shape[0]
    if extra <= 0:
        return x
    c = concrete(x)
    if c is not None:
        return jax.device_put(np.concatenate([c, np.zeros((extra, c.shape[1]), c.dtype)]))
    return jnp.pad(x, ((0, extra), (0, 0)))


def _check_devices(devices):
    if devices is None:
        return tuple(_host_devices())
    try:
        devs = tuple(devices)
    except TypeError:
        raise ValueError(f"devices must be None or a sequence of jax devices, got {type(devices).__name__}") from None
    for d in devs:
        if not isinstance(d, jax.Device):
            raise ValueError(f"devices must be None or a sequence of jax devices (jax.devices()), got an element "
                             f"{d!r} ({type(d).__name__})")
    return devs


def _check_compute_dtype(compute_dtype):
    if compute_dtype is None:
        return jnp.dtype(jnp.result_type(float))
    try:
        dt = np.dtype(compute_dtype)
    except TypeError:
        raise ValueError(f"compute_dtype must be None, jnp.float32 or jnp.float64, got {compute_dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"compute_dtype must be None, jnp.float32 or jnp.float64, got {compute_dtype!r}")
    if dt == np.float64 and jnp.dtype(jnp.result_type(float)) != np.float64:
        raise ValueError("compute_dtype=float64 needs 64-bit JAX (jax.config.update('jax_enable_x64', True)); "
                         "without it JAX computes in float32")
    return jnp.dtype(dt)


@reraise_as_value_error
def kernel(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None,
    net: FullyConnected,
    *,
    all_depths: bool = False,
    method: AbstractMethod = Auto(),
    tile: int = 128,
    compute_dtype=None,
    devices=None,
    buckets: bool = False,
) -> Kernel:
    r"""NNGP and NTK of ``net`` between the rows of ``x1`` and ``x2`` (``x2=None``: ``x1``).

    See the module docstring for the recursion. Differentiable with respect to the inputs,
    ``net.W_std``, ``net.b_std`` and the activation's parameters; ``jax.vmap`` over any of them.

    Args:
        x1: inputs, shape ``(n1, d)``, ``n1, d >= 1``, finite (all-zero rows are fine).
        x2: inputs, shape ``(n2, d)``, or ``None`` for ``x1`` (only half the tiles are computed).
        net: a :class:`FullyConnected` spec.
        all_depths: if true, return the kernels after every Dense layer, with a leading axis of
            length ``depth + 1`` (index ``l`` is the output of Dense layer ``l``).
        method: how Gaussian expectations are evaluated (an :mod:`rmtjax.gaussian` method object).
        tile: tile edge, an integer in ``[8, 4096]``; the recursion for a ``tile x tile`` block
            stays in cache.
        compute_dtype: dtype of the recursion, ``None``, ``jnp.float32`` or ``jnp.float64``.
            ``None`` (default) computes in float64 whenever JAX has x64 enabled, also for float32
            inputs, and casts the result back: the angle between two nearly-aligned inputs is
            ill-conditioned (``q1 q2 - q12^2`` cancels), and a float32 recursion drifts by ~1e-4
            relative at depth 20 where this one stays within 1e-7. Pass ``jnp.float32`` to trade
            that accuracy for speed. Without x64 everything is float32 (measured against float64:
            relative error below 1e-5 at depth 20, ``tests/test_kernels.py``).
        devices: devices to spread the tiles over (networks of depth >= 8); ``None`` uses every
            device of the default backend when there are several (start Python with
            ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` to get one CPU device per
            core; the ``rmtjax`` command does this), ``[]`` or one device disables it.
        buckets: pad the rows of ``x1`` and ``x2`` with zero rows up to :func:`bucket_size` and
            slice the result, so a loop over many input sizes compiles once per bucket instead of
            once per size (a kernel program takes seconds to compile; each one kept costs memory).
            The real entries and their gradients are those of the unpadded call (padding rows
            are separate inputs; measured equal to 1e-15 relative).

    Returns:
        ``Kernel(nngp, ntk)``, each ``(n1, n2)`` or ``(depth + 1, n1, n2)``. Entries overflow to
        ``inf`` where the true value does (e.g. ``Exp``); a NaN (no value in the dtype) raises
        ``ValueError`` instead.

    Compilation: one compiled program per input shape and structure (``net``'s static fields,
    ``method``, ``tile``, ``all_depths``, dtypes), reused by later calls; at most
    ``_MAX_PROGRAMS`` programs are kept (older ones are dropped, bounding memory).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (8, 5))
        >>> net = FullyConnected(depth=2, W_std=1.4, b_std=0.1)
        >>> dK = jax.grad(lambda w: kernel(x, None, FullyConnected(2, w, 0.1)).ntk.sum())(1.4)
    """
    if not isinstance(net, FullyConnected):
        raise ValueError(f"net must be a FullyConnected spec, got {type(net).__name__}")
    all_depths = flag(all_depths, "all_depths")
    buckets = flag(buckets, "buckets")
    tile = static_int(tile, "tile", lo=8, hi=4096)
    if not isinstance(method, AbstractMethod):
        raise ValueError(f"method must be an rmtjax.gaussian method object (Auto(), Mehler(order), GaussHermite(deg), "
                         f"MonteCarlo(n)), got {method!r}")
    _resolve(net.activation, method)
    devices = _check_devices(devices)
    dtype = _check_compute_dtype(compute_dtype)
    x1 = _matrix(x1, "x1")
    symmetric = x2 is None
    x2 = x1 if symmetric else _matrix(x2, "x2")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of features, got {x1.shape[1]} and {x2.shape[1]}")
    out_dtype = _widest(x1.dtype, x2.dtype)
    dtype = _widest(dtype, out_dtype)
    x1 = _cast(x1, dtype)
    x2 = x1 if symmetric else _cast(x2, dtype)
    net = eqx.tree_at(lambda n: (n.W_std, n.b_std), net,
                      (check_range(net.W_std, "net.W_std", lo=0.0), check_range(net.b_std, "net.b_std", lo=0.0)))
    n1, n2 = x1.shape[0], x2.shape[0]
    if buckets:
        x1 = _pad(x1, bucket_size(n1, tile))
        x2 = x1 if symmetric else _pad(x2, bucket_size(n2, tile))
    dyn, static = eqx.partition(net, eqx.is_array)
    out = _kernel_core(x1, None if symmetric else x2, dyn, static=static, all_depths=all_depths, method=method,
                       tile=tile, dtype=dtype, out_dtype=jnp.dtype(out_dtype), devices=devices)
    _bound_programs()
    if buckets and (x1.shape[0] != n1 or x2.shape[0] != n2):
        out = Kernel(_unpad(out.nngp, n1, n2), _unpad(out.ntk, n1, n2))
    return out


def _unpad(a, n1: int, n2: int | None = None):
    """``a[..., :n1, :n2]`` (or ``a[..., :n1]``); a concrete array is sliced on the host (an eager
    slice compiles a program per shape, which buckets are there to avoid)."""
    idx = (Ellipsis, slice(0, n1)) if n2 is None else (Ellipsis, slice(0, n1), slice(0, n2))
    c = concrete(a)
    if c is not None:
        return jax.device_put(np.ascontiguousarray(c[idx]))
    return a[idx]


# Compiled kernel programs kept (each costs a few MiB); beyond, the cache of _kernel_core is
# dropped and refilled. TRACES counts the traces of _kernel_core (tests use it).
_MAX_PROGRAMS = 16
TRACES = [0]
_since_clear = [0]


def _bound_programs():
    if _since_clear[0] > _MAX_PROGRAMS:
        _kernel_core.clear_cache()
        _since_clear[0] = 0


@functools.partial(jax.jit, static_argnames=("static", "all_depths", "method", "tile", "dtype", "out_dtype", "devices"))
def _kernel_core(x1, x2, dyn, *, static, all_depths, method, tile, dtype, out_dtype, devices):
    TRACES[0] += 1
    _since_clear[0] += 1
    net = eqx.combine(dyn, static)
    net = jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, net)
    out = _kernel_jit(x1, x2, net, all_depths=all_depths, method=method, tile=tile, out_dtype=out_dtype,
                      devices=devices)
    bad = jnp.any(jnp.isnan(out.nngp)) | jnp.any(jnp.isnan(out.ntk))
    msg = (f"x1, x2: the kernel of {type(net.activation).__name__} is NaN for these inputs: its Gaussian expectations "
           f"have no finite or infinite value in {jnp.dtype(dtype).name} (terms of both signs overflowing, or an "
           "activation that is NaN somewhere); use float64, smaller inputs or smaller W_std")
    return Kernel(*error_if(tuple(out), bad, msg))


def _kernel_jit(x1, x2, net, *, all_depths, method, tile, out_dtype, devices):
    """The compiled part of :func:`kernel` (inputs validated and cast already)."""
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]
    s1 = _signature(x1)
    s2 = s1 if symmetric else _signature(x2)
    q1 = _diagonal(s1.sq, x1.shape[1], net, method)
    q2 = q1 if symmetric else _diagonal(s2.sq, x2.shape[1], net, method)
    # Materialise the variances once: XLA may otherwise recompute them inside each fusion that
    # reads them, some with a fused multiply-add and some without, and the variance of a row then
    # differs in the last bit between the places that need it equal (identical rows: measured
    # 3e-9 relative in a depth-1 ReLU NTK, where the depth scan is unrolled away).
    q1, q2 = jax.lax.optimization_barrier((q1, q2))

    if n1 <= tile and n2 <= tile:
        out = _tile(x1, x2, s1, s2, q1, q2, net, method, all_depths)
        if symmetric:  # exact symmetry (x1 @ x1.T is not bitwise symmetric)
            upper = jnp.triu(jnp.ones((n1, n1), bool))
            out = tuple(jnp.where(upper, o, jnp.swapaxes(o, -1, -2)) for o in out)
        return Kernel(*(o.astype(out_dtype) for o in out))

    t1, t2 = min(tile, n1), min(tile, n2)
    nb1, nb2 = -(-n1 // t1), -(-n2 // t2)
    x1p, x2p = _pad_rows(x1, t1), _pad_rows(x2, t2)
    # Padding rows are zero inputs with their own (consistent) variances and fingerprints: a
    # zero-padded variance next to a covariance of b^2 would give inf/NaN in the discarded
    # padding, and NaN * 0 would still reach the gradients.
    pad1, pad2 = _signature(x1p[n1:]), _signature(x2p[n2:])
    s1p = _Rows(*(jnp.concatenate([a, b]) for a, b in zip(s1, pad1)))
    s2p = _Rows(*(jnp.concatenate([a, b]) for a, b in zip(s2, pad2)))
    q1p = jnp.concatenate([q1, _diagonal(pad1.sq, x1.shape[1], net, method)], axis=1)
    q2p = jnp.concatenate([q2, _diagonal(pad2.sq, x2.shape[1], net, method)], axis=1)
    q1p, q2p = jax.lax.optimization_barrier((q1p, q2p))
    if symmetric:
        pairs = [(i, j) for i in range(nb1) for j in range(i, nb2)]
    else:
        pairs = [(i, j) for i in range(nb1) for j in range(nb2)]
    idx = jnp.asarray(np.array(pairs, dtype=np.int32))

    def tiles_of(idx, x1p, x2p, s1p, s2p, q1p, q2p, net):
        def one(ij):
            i, j = ij[0], ij[1]
            a0, b0 = i * t1, j * t2
            xa = jax.lax.dynamic_slice_in_dim(x1p, a0, t1)
            xb = jax.lax.dynamic_slice_in_dim(x2p, b0, t2)
            sa = _Rows(*(jax.lax.dynamic_slice_in_dim(s, a0, t1) for s in s1p))
            sb = _Rows(*(jax.lax.dynamic_slice_in_dim(s, b0, t2) for s in s2p))
            qa = jax.lax.dynamic_slice_in_dim(q1p, a0, t1, axis=1)
            qb = jax.lax.dynamic_slice_in_dim(q2p, b0, t2, axis=1)
            return _tile(xa, xb, sa, sb, qa, qb, net, method, all_depths)

        return jax.lax.map(one, idx)  # each (P, [L+1,] t1, t2)

    args = (x1p, x2p, s1p, s2p, q1p, q2p, net)
    # Below ~8 layers the cross-device copies of the n1 x n2 outputs cost more than the split
    # saves (measured at n = 4000 on 2 cores: depth 5, 0.70 s on one device vs 0.78 s on two;
    # depth 20 with erf, 1.36 s vs 1.09 s).
    if len(devices) > 1 and len(pairs) >= len(devices) and net.depth >= _MIN_DEPTH_TO_SHARD:
        # Split the tiles over the devices (on CPU: several host devices, one per core, from
        # XLA_FLAGS=--xla_force_host_platform_device_count=N; XLA runs one elementwise loop on
        # one thread, so this is what uses the other cores).
        nd = len(devices)
        padded = -(-len(pairs) // nd) * nd
        idx_p = jnp.concatenate([idx, jnp.broadcast_to(idx[-1:], (padded - len(pairs), 2))])
        mesh = jax.sharding.Mesh(np.array(devices), ("tiles",))
        spec = jax.sharding.PartitionSpec
        sharded = jax.shard_map(
            tiles_of, mesh=mesh, in_specs=(spec("tiles"),) + (spec(),) * len(args), out_specs=spec("tiles"),
            check_vma=False,
        )
        tiles = tuple(t[: len(pairs)] for t in sharded(idx_p, *args))
    else:
        tiles = tiles_of(idx, *args)

    def assemble(r):
        lead = r.shape[1:-2]
        blocks = jnp.zeros((nb1, nb2) + lead + (t1, t2), r.dtype)
        ii, jj = idx[:, 0], idx[:, 1]
        if symmetric:  # a diagonal tile is computed whole: mirror its upper triangle (exact symmetry)
            upper = jnp.triu(jnp.ones((t1, t2), bool)).reshape((1,) * (r.ndim - 2) + (t1, t2))
            on_diag = (ii == jj).reshape((-1,) + (1,) * (r.ndim - 1))
            r = jnp.where(on_diag & ~upper, jnp.swapaxes(r, -1, -2), r)
        blocks = blocks.at[ii, jj].set(r)
        if symmetric:
            blocks = blocks.at[jj, ii].set(jnp.swapaxes(r, -1, -2))
        nd = len(lead)
        perm = tuple(range(2, 2 + nd)) + (0, 2 + nd, 1, 3 + nd)
        full = jnp.transpose(blocks, perm).reshape(lead + (nb1 * t1, nb2 * t2))
        return full[..., :n1, :n2]

    return Kernel(assemble(tiles[0]).astype(out_dtype), assemble(tiles[1]).astype(out_dtype))
