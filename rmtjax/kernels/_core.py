r"""Infinite-width NNGP and NTK: the tiled engine (:func:`kernel`) and :class:`FullyConnected`.

:func:`kernel` runs any layer of :mod:`rmtjax.kernels` (a :class:`FullyConnected` network, or a
graph of :class:`~rmtjax.kernels.Dense`, :class:`~rmtjax.kernels.Activation`,
:class:`~rmtjax.kernels.Serial`, :class:`~rmtjax.kernels.Stack`,
:class:`~rmtjax.kernels.Parallel`, :class:`~rmtjax.kernels.Residual` layers) on the pairs of
inputs. The recursion itself lives in the layers (``kernels/_layers.py``); a
:class:`FullyConnected` spec with ``depth`` hidden layers has the kernels (Neal 1996; Lee et al.
2018; Jacot et al. 2018; Arora et al. 2019, eq. 6), in the NTK parameterization,

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

The output matrix is computed in tiles: the whole network runs on one tile at a time (a uniform
stack as a ``lax.scan`` over depth inside ``lax.map`` over tiles), so no ``n1 x n2`` intermediate
per layer is ever materialised and memory stays ``O(n1 n2 + tile^2)``. With ``x2=None`` only the
upper triangle of tiles is computed. Identical (and, at the input, opposite) inputs get a
correlation of exactly ``+1`` (``-1``), so rounding cannot leave ``theta ~ sqrt(eps)`` on the
diagonal.
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
from ..gaussian import AbstractMethod, Auto
from ._conv import conv_parity, has_spatial_layers, needs_full, plan
from ._layers import AbstractLayer, Activation, Dense, Kernel, KernelState, Serial, Spatial, Stack, once, with_value

__all__ = ["FullyConnected", "bucket_size", "default_tile", "kernel", "kernel_diagonal"]


_PARAMETERIZATIONS = ("ntk", "standard")
_MAX_DEPTH = 100_000


class FullyConnected(AbstractLayer):
    r"""A fully-connected network: ``depth`` blocks ``Dense -> activation``, then ``Dense``.

    A convenience constructor of the layer graph :meth:`graph` (``Stack`` of ``depth`` blocks
    ``Serial(Dense, Activation)``, then the readout ``Dense``), which is what runs.

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

    def _dense(self, W, b, out_dim) -> Dense:
        """A :class:`Dense` holding ``W``, ``b`` (scalars or stacked), already validated by this
        spec (inserted with ``eqx.tree_at``: no second check in the compiled program)."""
        template = Dense(0.0, 0.0 if self.bias else None, out_dim=out_dim, parameterization=self.parameterization)
        return eqx.tree_at(lambda d: (d.W_std, d.b_std), template, (W, b))

    def graph(self) -> Serial:
        """The network as engine layers: ``Serial(Stack(Serial(Dense_l, Activation), depth), Dense_depth)``
        (``Serial(Dense_0)`` for ``depth = 0``; blocks of unequal ``widths`` are not stacked)."""
        n = self.depth + 1
        W = jnp.broadcast_to(self.W_std, (n,))
        b = jnp.broadcast_to(self.b_std, (n,))
        readout = self._dense(W[-1], b[-1], None)
        if self.depth == 0:
            return Serial(readout)
        if self.widths is not None and len(set(self.widths)) > 1:
            blocks = [Serial(self._dense(W[l], b[l], self.widths[l]), Activation(self.activation))
                      for l in range(self.depth)]
            return Serial(*blocks, readout)  # Serial stacks the runs of equal widths
        width = None if self.widths is None else self.widths[0]
        act = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (self.depth,) + jnp.shape(a)),
                                     self.activation)
        block = Serial(self._dense(W[:-1], b[:-1], width), Activation(act))
        return Serial(Stack(block, self.depth), readout)

    def __call__(self, state: KernelState) -> KernelState:
        return self.graph()(state)

    def with_history(self, state: KernelState) -> tuple[KernelState, Kernel | None]:
        return self.graph().with_history(state)

    def num_activations(self) -> int:
        return self.depth


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
                 jnp.sum(x * x, axis=tuple(range(1, x.ndim))))


def _match(h1, h2):
    return jnp.all(h1[:, None, :] == h2[None, :, :], axis=-1)


def exact_gram(x1, x2, s1: _Rows, s2: _Rows):
    """``x1 @ x2.T`` with entries of identical (opposite) rows set to exactly ``+|x|^2``
    (``-|x|^2``), gradients kept from the product; also returns the masks of identical and of
    opposite rows."""
    same = _match(s1.hash, s2.hash)
    opp = _match(s1.hash, s2.neg) & ~same
    dot = x1 @ x2.T
    sq = s1.sq[:, None]
    return with_value(same | opp, dot, jnp.where(same, sq, -sq)), same, opp


def input_state(x1, x2, s1: _Rows, s2: _Rows, method: AbstractMethod) -> KernelState:
    """The state of the inputs of one tile: :math:`\\Sigma = x \\cdot x' / d` (neural-tangents'
    input kernel; identical and opposite rows exact), :math:`\\Theta = 0`."""
    d = x1.shape[1]
    dot, same, opp = exact_gram(x1, x2, s1, s2)
    return KernelState(dot / d, jnp.zeros_like(dot), s1.sq[:, None] / d, s2.sq[None, :] / d, same, same | opp,
                       jnp.asarray(d, dot.dtype), method)


def image_state(x1, x2, s1: _Rows, s2: _Rows, method: AbstractMethod, full: bool) -> KernelState:
    r"""The state of a tile of images ``(t, *S, C)``: :math:`\Sigma(p, p') = x(p)\cdot x'(p')/C`
    (neural-tangents' input kernel over the channels), every pixel pair (``full``) or the same
    pixel only; :math:`\Theta = 0`. ``same``/``mirror``: identical / identical-or-opposite images."""
    S = x1.ndim - 2
    C = x1.shape[-1]
    sp = "".join("hwdtuv"[:S])
    sq = "".join("HWDTUV"[:S])
    if full:
        cross = jnp.einsum(f"a{sp}c,b{sq}c->ab{sp}{sq}", x1, x2) / C
        var1 = jnp.einsum(f"a{sp}c,a{sq}c->a{sp}{sq}", x1, x1)[:, None] / C
        var2 = jnp.einsum(f"b{sp}c,b{sq}c->b{sp}{sq}", x2, x2)[None] / C
    else:
        cross = jnp.einsum(f"a{sp}c,b{sp}c->ab{sp}", x1, x2) / C
        var1 = jnp.sum(x1 * x1, axis=-1)[:, None] / C
        var2 = jnp.sum(x2 * x2, axis=-1)[None] / C
    same = _match(s1.hash, s2.hash)
    mirror = same | _match(s1.hash, s2.neg)
    nd = S * (2 if full else 1)
    same, mirror = (m.reshape(m.shape + (1,) * nd) for m in (same, mirror))
    return KernelState(cross, jnp.zeros_like(cross), var1, var2, same, mirror, jnp.asarray(C, cross.dtype), method,
                       Spatial(tuple(x1.shape[1:-1]), full))


def _image_self_state(x, method: AbstractMethod, full: bool) -> KernelState:
    """The state of the pairs ``(x_i, x_i)`` of images, as tiles ``(n, 1, *layout)``."""
    S, C = x.ndim - 2, x.shape[-1]
    sp, sq = "".join("hwdtuv"[:S]), "".join("HWDTUV"[:S])
    if full:
        q = jnp.einsum(f"a{sp}c,a{sq}c->a{sp}{sq}", x, x)[:, None] / C
    else:
        q = jnp.sum(x * x, axis=-1)[:, None] / C
    ones = jnp.ones((x.shape[0], 1) + (1,) * (q.ndim - 2), bool)
    return KernelState(q, jnp.zeros_like(q), q, q, ones, ones, jnp.asarray(C, q.dtype), method,
                       Spatial(tuple(x.shape[1:-1]), full), sample=ones)


def _sample_mask(t1: int, t2: int, a0, b0):
    """``(t1, t2)``: row ``a0 + i`` and column ``b0 + j`` are one sample (a kernel of ``x1`` with
    itself)."""
    return (a0 + jnp.arange(t1, dtype=jnp.int32))[:, None] == (b0 + jnp.arange(t2, dtype=jnp.int32))[None, :]


def _tile(x1, x2, s1, s2, net: AbstractLayer, method, all_depths: bool, full: bool | None = None, sample=None):
    """Kernels of one tile (rows x1, cols x2; s1, s2 their fingerprints): the whole network runs on
    it (``full``: the layout of image inputs, ``None`` for vectors; ``sample``: the ``(t1, t2)``
    same-sample mask, ``None`` when ``x2`` is another input)."""
    if full is not None:
        state = image_state(x1, x2, s1, s2, method, full)
        if sample is not None:
            state = state.replace(sample=sample.reshape(state.same.shape))
        out = net(state)
        return out.nngp, out.ntk
    state = input_state(x1, x2, s1, s2, method)
    if sample is not None:
        state = state.replace(sample=sample)
    if all_depths:
        _, hist = net.with_history(state)
        if hist is None:
            raise ValueError("all_depths=True needs a Dense layer on the main path of net (outside branches): it "
                             "returns the kernels after each of them")
        return hist.nngp, hist.ntk
    out = net(state)
    return out.nngp, out.ntk


_MIN_DEPTH_TO_SHARD = 8


def _host_devices():
    return jax.devices()


def _balanced(n: int, tile: int) -> int:
    """The tile edge for ``n`` rows: as many tiles as tiles of ``tile`` rows need, as equal as
    possible (at most ``tile`` rows each, and less padding)."""
    return -(-n // -(-n // tile))


def _pad_rows(x, m):
    pad = (-x.shape[0]) % m
    return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)) if pad else x


def default_tile(devices=None) -> int:
    """The tile edge :func:`kernel` uses when ``tile=None``: 128 on CPUs (a ``128 x 128`` block of
    the recursion stays in cache; measured fastest here) and 1024 on accelerators, where the
    tiles run one after another inside ``lax.map`` and a small tile leaves the device idle
    between them (n = 5e4: 76,000 tiles of 128 against 1,200 of 1024; not yet measured on a GPU,
    ``benchmarks/kernels_gpu.py --tile`` compares them).

    Example:
        >>> default_tile(jax.devices("cpu"))
        128
    """
    try:
        platform = devices[0].platform if devices is not None and len(devices) else None
    except (TypeError, AttributeError, IndexError):  # not a device list: kernel() reports it
        platform = None
    platform = platform or jax.default_backend()
    return 128 if platform == "cpu" else 1024


def bucket_size(n: int, tile: int | None = None) -> int:
    """The number of rows :func:`kernel` pads ``n`` rows to with ``buckets=True``.

    Up to one tile: the next power of two (at least 8, at most ``tile``) — the cost there is
    the compile, not the arithmetic. Beyond: a whole number of tiles from 1, 2, 3, 4, 6, 8, 12,
    16, 24, ... (powers of two and their multiples by 1.5), so at most a third of the rows is
    padding (the tiled engine pads to whole tiles anyway). Loops over ``n`` then compile about
    ``2 log2(n / tile) + log2(tile / 8)`` programs instead of one per size.
    """
    n = static_int(n, "n", lo=1)
    tile = default_tile() if tile is None else static_int(tile, "tile", lo=8)
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


def _inputs(x, name: str):
    """Vectors ``(n, d)`` as :func:`_matrix`, or images ``(n, W, C)``, ``(n, H, W, C)``,
    ``(n, D, H, W, C)`` (NHWC: channels last), real and finite."""
    nd = np.ndim(x) if not isinstance(x, jax.Array) else x.ndim
    if nd == 2 or nd < 2 or nd > 5:
        if nd > 5 or nd < 2:
            raise ValueError(f"{name} must be 2-d (n, features) or images (n, W, C), (n, H, W, C), (n, D, H, W, C), "
                             f"got {nd} dimensions")
        return _matrix(x, name)
    if not isinstance(x, jax.Array):
        host = np.asarray(x)
        x = jax.device_put(host if host.dtype.kind == "f" else host.astype(jnp.result_type(float)))
    x = as_real(x, name, ndim=nd, allow_empty=True)
    if 0 in x.shape:
        raise ValueError(f"{name} must have at least one image, pixel and channel, got shape {x.shape}")
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
        return jax.device_put(np.concatenate([c, np.zeros((extra,) + c.shape[1:], c.dtype)]))
    return jnp.pad(x, ((0, extra),) + ((0, 0),) * (x.ndim - 1))


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
    net: AbstractLayer,
    *,
    all_depths: bool = False,
    method: AbstractMethod = Auto(),
    tile: int | None = None,
    compute_dtype=None,
    devices=None,
    buckets: bool = False,
    diagonal_spatial: bool = False,
) -> Kernel:
    r"""NNGP and NTK of ``net`` between the rows of ``x1`` and ``x2`` (``x2=None``: ``x1``).

    See the module docstring for the recursion. Differentiable with respect to the inputs and
    every array of ``net`` (``W_std``, ``b_std``, residual and branch weights, activation
    parameters); ``jax.vmap`` over any of them.

    Args:
        x1: inputs, shape ``(n1, d)``, ``n1, d >= 1``, finite (all-zero rows are fine); or images
            ``(n1, W, C)``, ``(n1, H, W, C)`` (channels last) for a network of convolutional
            layers (:mod:`rmtjax.kernels._conv`).
        x2: inputs of the same shape after the first axis, or ``None`` for ``x1`` (only half
            the tiles are computed).
        net: a layer of :mod:`rmtjax.kernels`: a :class:`FullyConnected` spec or a graph of
            ``Dense``, ``Activation``, ``Serial``, ``Stack``, ``Parallel``, ``Residual`` layers.
        all_depths: if true, return the kernels after every ``Dense`` layer outside branches,
            with a leading axis (for :class:`FullyConnected`: length ``depth + 1``, index ``l`` is
            the output of Dense layer ``l``).
        method: how Gaussian expectations are evaluated (an :mod:`rmtjax.gaussian` method object).
        tile: tile edge, an integer in ``[8, 4096]``; the recursion for a ``tile x tile`` block
            stays in cache. ``None`` (default): :func:`default_tile` of the devices used (128 on
            CPUs, 1024 on GPUs and TPUs).
        compute_dtype: dtype of the recursion, ``None``, ``jnp.float32`` or ``jnp.float64``.
            ``None`` (default) computes in float64 whenever JAX has x64 enabled, also for float32
            inputs, and casts the result back: the angle between two nearly-aligned inputs is
            ill-conditioned (``q1 q2 - q12^2`` cancels), and a float32 recursion drifts by ~1e-4
            relative at depth 20 where this one stays within 1e-7. Pass ``jnp.float32`` to trade
            that accuracy for speed. Without x64 everything is float32 (measured against float64:
            relative error below 1e-5 at depth 20, ``tests/test_kernels.py``).
        devices: devices to spread the tiles over (networks of 8 or more activation layers); ``None`` uses every
            device of the default backend when there are several (start Python with
            ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` to get one CPU device per
            core; the ``rmtjax`` command does this), ``[]`` or one device disables it.
        buckets: pad the rows of ``x1`` and ``x2`` with zero rows up to :func:`bucket_size` and
            slice the result, so a loop over many input sizes compiles once per bucket instead of
            once per size (a kernel program takes seconds to compile; each one kept costs memory).
            The real entries and their gradients are those of the unpadded call (padding rows
            are separate inputs; measured equal to 1e-15 relative).
        diagonal_spatial: for images, keep only same-pixel covariances throughout
            (neural-tangents' option of that name: exact for networks read out by ``Flatten``,
            the independent-pixel approximation where pooling mixes pixels). ``False``
            (default): pixel-pixel covariances wherever pooling needs them, same-pixel ones
            elsewhere (chosen per layer), which gives the exact kernel.

    Returns:
        ``Kernel(nngp, ntk)``, each ``(n1, n2)`` or ``(L, n1, n2)``; for a network that ends
        with spatial axes (no ``Flatten`` or global pooling), neural-tangents' layouts
        ``(n1, n2, H, H', W, W')`` (``(n1, n2, H, W)`` with ``diagonal_spatial=True``). Entries overflow to
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
    _check_net(net)
    all_depths = flag(all_depths, "all_depths")
    buckets = flag(buckets, "buckets")
    diagonal_spatial = flag(diagonal_spatial, "diagonal_spatial")
    tile = default_tile(devices) if tile is None else static_int(tile, "tile", lo=8, hi=4096)
    if not isinstance(method, AbstractMethod):
        raise ValueError(f"method must be an rmtjax.gaussian method object (Auto(), Mehler(order), GaussHermite(deg), "
                         f"MonteCarlo(n)), got {method!r}")
    devices = _check_devices(devices)
    dtype = _check_compute_dtype(compute_dtype)
    x1 = _inputs(x1, "x1")
    symmetric = x2 is None
    x2 = x1 if symmetric else _inputs(x2, "x2")
    if x1.shape[1:] != x2.shape[1:]:
        what = "number of features" if x1.ndim == 2 else "image shape (after the batch axis)"
        raise ValueError(f"x1 and x2 must have the same {what}, got shapes {x1.shape} and {x2.shape}")
    net, full, tile = _image_plan(net, x1, tile, diagonal_spatial, all_depths)
    out_dtype = _widest(x1.dtype, x2.dtype)
    dtype = _widest(dtype, out_dtype)
    x1 = _cast(x1, dtype)
    x2 = x1 if symmetric else _cast(x2, dtype)
    n1, n2 = x1.shape[0], x2.shape[0]
    if buckets:
        x1 = _pad(x1, bucket_size(n1, tile))
        x2 = x1 if symmetric else _pad(x2, bucket_size(n2, tile))
    dyn, static = eqx.partition(net, eqx.is_array)
    out = _kernel_core(x1, None if symmetric else x2, dyn, static=static, all_depths=all_depths, method=method,
                       tile=tile, dtype=dtype, out_dtype=jnp.dtype(out_dtype), devices=devices, full=full)
    _bound_programs()
    if buckets and (x1.shape[0] != n1 or x2.shape[0] != n2):
        out = Kernel(*(_unpad_lead(o, n1, n2, full is not None) for o in out))
    reverse = full is not None and bool(conv_parity(net))
    return Kernel(*(_nt_layout(o, x1.ndim - 2, 2, reverse) for o in out))


# Elements of one array of a tile of images (t1 t2 times the layout): 2^22, 32 MiB in float64. A tile
# also recomputes the variances of its t1 + t2 images (the same layout per image), so a larger tile
# amortises them: 28x28 images in the full layout get tiles of 2 x 2 pairs (1 x 1 at 2^21, where the
# variances tripled a ReLU layer's time: benchmarks/results/conv_engine_profile.md).
_IMAGE_TILE_BUDGET = 2**22


def _image_plan(net, x1, tile: int, diagonal_spatial: bool, all_depths: bool):
    """For image inputs: ``net`` with its layouts planned (:func:`rmtjax.kernels._conv.plan`), the
    input layout (full or not) and a tile edge that bounds a tile's memory. For vectors: ``net``,
    ``None``, ``tile`` (a network of pixel layers then raises)."""
    if x1.ndim == 2:
        if has_spatial_layers(net):
            raise ValueError(f"x1 has shape {x1.shape} (vectors), but net has convolutional, pooling or Flatten "
                             "layers: give images (n, H, W, C) or (n, W, C), channels last")
        return net, None, tile
    if all_depths:
        raise ValueError("all_depths=True is not supported for image inputs (the kernels of a convolutional network "
                         "change shape with depth)")
    wrapped = Serial(net)
    full = False if diagonal_spatial else needs_full(wrapped, True)
    net = plan(wrapped, full, not diagonal_spatial, diagonal_spatial)
    per_pair = math.prod(x1.shape[1:-1]) ** (2 if full else 1)
    return net, full, max(1, min(tile, math.isqrt(max(_IMAGE_TILE_BUDGET // per_pair, 1))))


def _nt_layout(a, S: int, lead: int, reverse: bool = False):
    """A full image layout ``(..., *S, *S')`` in neural-tangents' order ``(..., H, H', W, W')``,
    or ``(..., W, W', H, H')`` with ``reverse`` (neural-tangents' layout after an odd number of
    convolutions); other arrays unchanged."""
    if S < 2 or a.ndim != lead + 2 * S:
        return a
    axes = range(S - 1, -1, -1) if reverse else range(S)
    perm = tuple(range(lead)) + tuple(x for i in axes for x in (lead + i, lead + S + i))
    return jnp.transpose(a, perm)


def _unpad_lead(a, n1: int, n2: int | None, image: bool):
    """The first ``n1`` (and ``n2``) entries of the batch axes: the leading ones for images, the
    trailing ones for vectors (after an ``all_depths`` axis)."""
    if not image:
        return _unpad(a, n1, n2)
    idx = (slice(0, n1),) if n2 is None else (slice(0, n1), slice(0, n2))
    c = concrete(a)
    return jax.device_put(np.ascontiguousarray(c[idx])) if c is not None else a[idx]


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


def _check_net(net):
    if not isinstance(net, AbstractLayer):
        hint = (" (an rmtjax.stax layer is a triple (init_fn, apply_fn, kernel_fn): call its kernel_fn, or pass "
                "kernel_fn.net)" if isinstance(net, tuple) else "")
        raise ValueError(f"net must be an rmtjax.kernels layer (a FullyConnected spec, or Dense, Activation, Serial, "
                         f"Stack, Parallel, Residual), got {type(net).__name__}{hint}")


def _nan_message(net, dtype) -> str:
    acts = sorted({type(a).__name__ for a in jax.tree_util.tree_leaves(
        net, is_leaf=lambda a: isinstance(a, AbstractActivation)) if isinstance(a, AbstractActivation)})
    return (f"x1, x2: the kernel of {', '.join(acts) or 'the network'} is NaN for these inputs: its Gaussian "
            f"expectations have no finite or infinite value in {jnp.dtype(dtype).name} (terms of both signs "
            "overflowing, or an activation that is NaN somewhere); use float64, smaller inputs or smaller W_std")


def _in_dtype(dyn, dtype):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, dyn)


@functools.partial(jax.jit, static_argnames=("static", "all_depths", "method", "tile", "dtype", "out_dtype", "devices",
                                             "full"))
def _kernel_core(x1, x2, dyn, *, static, all_depths, method, tile, dtype, out_dtype, devices, full=None):
    TRACES[0] += 1
    _since_clear[0] += 1
    net = eqx.combine(_in_dtype(dyn, dtype), static)
    out = _kernel_jit(x1, x2, net, all_depths=all_depths, method=method, tile=tile, out_dtype=out_dtype,
                      devices=devices, full=full)
    bad = jnp.any(jnp.isnan(out.nngp)) | jnp.any(jnp.isnan(out.ntk))
    return Kernel(*error_if(tuple(out), bad, _nan_message(net, dtype)))


def _swap_pairs(a, lead: int, S: int):
    """The kernel of the swapped pairs: batch axes ``lead, lead + 1`` exchanged, and for a full
    image layout ``(*S, *S')`` the two pixel groups as well (for vectors or a same-pixel layout only
    the batch axes)."""
    perm = list(range(a.ndim))
    perm[lead], perm[lead + 1] = lead + 1, lead
    rest = a.ndim - lead - 2
    if S and rest == 2 * S:
        b = lead + 2
        perm[b:] = list(range(b + S, b + 2 * S)) + list(range(b, b + S))
    return jnp.transpose(a, perm)


def _kernel_jit(x1, x2, net, *, all_depths, method, tile, out_dtype, devices, full=None):
    """The compiled part of :func:`kernel` (inputs validated and cast already)."""
    if full is not None:
        return _image_kernel_jit(x1, x2, net, method=method, tile=tile, out_dtype=out_dtype, devices=devices,
                                 full=full)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]
    s1 = _signature(x1)
    s2 = s1 if symmetric else _signature(x2)

    if n1 <= tile and n2 <= tile:
        out = _tile(x1, x2, s1, s2, net, method, all_depths, sample=_sample_mask(n1, n2, 0, 0) if symmetric else None)
        if symmetric:  # exact symmetry (x1 @ x1.T is not bitwise symmetric); once: o and o.T the same bits
            out = tuple(once(o) for o in out)
            upper = jnp.triu(jnp.ones((n1, n1), bool))
            out = tuple(jnp.where(upper, o, jnp.swapaxes(o, -1, -2)) for o in out)
        return Kernel(*(o.astype(out_dtype) for o in out))

    t1, t2 = _balanced(n1, tile), _balanced(n2, tile)  # equal tiles: the least padding (see _balanced)
    nb1, nb2 = -(-n1 // t1), -(-n2 // t2)
    x1p, x2p = _pad_rows(x1, t1), _pad_rows(x2, t2)
    # Padding rows are zero inputs with their own (consistent) fingerprints and variances (computed
    # in the tile like every row's: a zero variance next to a covariance of b^2 would give inf/NaN in
    # the discarded padding, and NaN * 0 would still reach the gradients).
    pad1, pad2 = _signature(x1p[n1:]), _signature(x2p[n2:])
    s1p = _Rows(*(jnp.concatenate([a, b]) for a, b in zip(s1, pad1)))
    s2p = _Rows(*(jnp.concatenate([a, b]) for a, b in zip(s2, pad2)))
    if symmetric:
        pairs = [(i, j) for i in range(nb1) for j in range(i, nb2)]
    else:
        pairs = [(i, j) for i in range(nb1) for j in range(nb2)]
    idx = jnp.asarray(np.array(pairs, dtype=np.int32))

    def tiles_of(idx, x1p, x2p, s1p, s2p, net):
        def one(ij):
            i, j = ij[0], ij[1]
            a0, b0 = i * t1, j * t2
            xa = jax.lax.dynamic_slice_in_dim(x1p, a0, t1)
            xb = jax.lax.dynamic_slice_in_dim(x2p, b0, t2)
            sa = _Rows(*(jax.lax.dynamic_slice_in_dim(s, a0, t1) for s in s1p))
            sb = _Rows(*(jax.lax.dynamic_slice_in_dim(s, b0, t2) for s in s2p))
            return _tile(xa, xb, sa, sb, net, method, all_depths,
                         sample=_sample_mask(t1, t2, a0, b0) if symmetric else None)

        return jax.lax.map(one, idx)  # each (P, [L+1,] t1, t2)

    args = (x1p, x2p, s1p, s2p, net)
    # Below ~8 activation layers the cross-device copies of the n1 x n2 outputs cost more than the split
    # saves (measured at n = 4000 on 2 cores: depth 5, 0.70 s on one device vs 0.78 s on two;
    # depth 20 with erf, 1.36 s vs 1.09 s).
    if len(devices) > 1 and len(pairs) >= len(devices) and net.num_activations() >= _MIN_DEPTH_TO_SHARD:
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
        # each tile written into the output in place (dynamic_update_slice on a loop carry): a
        # scatter into (nb1, nb2, t1, t2) blocks and a transpose took 2.4x as long (measured at
        # n = 4000, float32: 79 vs 33 ms per output), with the same bits
        lead = r.shape[1:-2]
        zeros = (jnp.int32(0),) * len(lead)  # the tile indices are int32
        upper = jnp.triu(jnp.ones((t1, t2), bool))

        def put(p, out):
            i, j = idx[p, 0], idx[p, 1]
            tile = r[p]
            if symmetric:  # a diagonal tile is computed whole: mirror its upper triangle (exact symmetry)
                tile = jnp.where((i == j) & ~upper, jnp.swapaxes(tile, -1, -2), tile)
                out = jax.lax.dynamic_update_slice(out, jnp.swapaxes(tile, -1, -2), zeros + (j * t2, i * t1))
            return jax.lax.dynamic_update_slice(out, tile, zeros + (i * t1, j * t2))

        full = jax.lax.fori_loop(0, r.shape[0], put, jnp.zeros(lead + (nb1 * t1, nb2 * t2), r.dtype))
        return full[..., :n1, :n2]

    return Kernel(assemble(tiles[0]).astype(out_dtype), assemble(tiles[1]).astype(out_dtype))


def _image_kernel_jit(x1, x2, net, *, method, tile, out_dtype, devices, full):
    """:func:`_kernel_jit` for images: tiles ``(t1, t2, *layout)``, assembled into
    ``(n1, n2, *layout)``."""
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]
    S = x1.ndim - 2
    s1 = _signature(x1)
    s2 = s1 if symmetric else _signature(x2)

    def mirror_upper(o, lead: int):
        """Exact symmetry: the lower triangle of pairs from the upper one, transposed."""
        t = o.shape[lead]
        upper = jnp.triu(jnp.ones((t, t), bool)).reshape((1,) * lead + (t, t) + (1,) * (o.ndim - lead - 2))
        return jnp.where(upper, o, _swap_pairs(o, lead, S))

    if n1 <= tile and n2 <= tile:
        out = _tile(x1, x2, s1, s2, net, method, False, full, _sample_mask(n1, n2, 0, 0) if symmetric else None)
        if symmetric:
            out = tuple(mirror_upper(once(o), 0) for o in out)
        return Kernel(*(o.astype(out_dtype) for o in out))

    # The fewest tiles of at most ``tile`` rows, of equal size: ``tile`` itself would pad up to a
    # whole tile of rows (40 images in tiles of 32 computed 64 x 64 pairs: 2.6 times the work).
    t1, t2 = _balanced(n1, tile), _balanced(n2, tile)
    nb1, nb2 = -(-n1 // t1), -(-n2 // t2)
    x1p, x2p = _pad_rows(x1, t1), _pad_rows(x2, t2)
    pad1, pad2 = _signature(x1p[n1:]), _signature(x2p[n2:])
    s1p = _Rows(*(jnp.concatenate([a, b]) for a, b in zip(s1, pad1)))
    s2p = _Rows(*(jnp.concatenate([a, b]) for a, b in zip(s2, pad2)))
    pairs = [(i, j) for i in range(nb1) for j in range(i if symmetric else 0, nb2)]
    idx = jnp.asarray(np.array(pairs, dtype=np.int32))

    def tiles_of(idx, x1p, x2p, s1p, s2p, net):
        def one(ij):
            a0, b0 = ij[0] * t1, ij[1] * t2
            xa = jax.lax.dynamic_slice_in_dim(x1p, a0, t1)
            xb = jax.lax.dynamic_slice_in_dim(x2p, b0, t2)
            sa = _Rows(*(jax.lax.dynamic_slice_in_dim(s, a0, t1) for s in s1p))
            sb = _Rows(*(jax.lax.dynamic_slice_in_dim(s, b0, t2) for s in s2p))
            return _tile(xa, xb, sa, sb, net, method, False, full, _sample_mask(t1, t2, a0, b0) if symmetric else None)

        return jax.lax.map(one, idx)  # each (P, t1, t2, *layout)

    args = (x1p, x2p, s1p, s2p, net)
    if len(devices) > 1 and len(pairs) >= len(devices):
        nd = len(devices)
        padded = -(-len(pairs) // nd) * nd
        idx_p = jnp.concatenate([idx, jnp.broadcast_to(idx[-1:], (padded - len(pairs), 2))])
        mesh = jax.sharding.Mesh(np.array(devices), ("tiles",))
        spec = jax.sharding.PartitionSpec
        sharded = jax.shard_map(tiles_of, mesh=mesh, in_specs=(spec("tiles"),) + (spec(),) * len(args),
                                out_specs=spec("tiles"), check_vma=False)
        tiles = tuple(t[: len(pairs)] for t in sharded(idx_p, *args))
    else:
        tiles = tiles_of(idx, *args)

    def assemble(r):
        layout = r.shape[3:]
        ii, jj = idx[:, 0], idx[:, 1]
        if symmetric:
            on_diag = (ii == jj).reshape((-1,) + (1,) * (r.ndim - 1))
            r = jnp.where(on_diag, mirror_upper(r, 1), r)
        blocks = jnp.zeros((nb1, nb2, t1, t2) + layout, r.dtype).at[ii, jj].set(r)
        if symmetric:
            blocks = blocks.at[jj, ii].set(_swap_pairs(r, 1, S))
        perm = (0, 2, 1, 3) + tuple(range(4, 4 + len(layout)))
        return jnp.transpose(blocks, perm).reshape((nb1 * t1, nb2 * t2) + layout)[:n1, :n2]

    return Kernel(assemble(tiles[0]).astype(out_dtype), assemble(tiles[1]).astype(out_dtype))


@reraise_as_value_error
def kernel_diagonal(
    x: Float[ArrayLike, "n d"],
    net: AbstractLayer,
    *,
    method: AbstractMethod = Auto(),
    compute_dtype=None,
    buckets: bool = False,
    diagonal_spatial: bool = False,
) -> Kernel:
    r"""The kernels of every input with itself, :math:`\Sigma(x_i, x_i)` and :math:`\Theta(x_i, x_i)`:
    the diagonals of ``kernel(x, None, net)`` (to rounding) in ``O(n)`` work and memory.

    The same layers run on a :class:`~rmtjax.kernels.KernelState` of the ``n`` pairs
    ``(x_i, x_i)`` (neural-tangents' ``cov1``, and the variances the mean-field q-map iterates).

    Args:
        x: inputs, shape ``(n, d)``, or images ``(n, *S, C)``, finite.
        net: a layer of :mod:`rmtjax.kernels`, as for :func:`kernel`.
        method, compute_dtype, buckets, diagonal_spatial: as for :func:`kernel`.

    Returns:
        ``Kernel(nngp, ntk)``, each of shape ``(n,)`` (``(n, H, H', W, W')`` or ``(n, H, W)`` for a
        network that ends with spatial axes).

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Relu
        >>> net = FullyConnected(3, 2.0**0.5, 0.0, Relu())
        >>> # ReLU at sigma_w^2 = 2, no bias, preserves the length: q = 2 |x|^2 / d = 2 at every layer
        >>> [round(v, 5) for v in kernel_diagonal(jnp.ones((2, 4)), net).nngp.tolist()]
        [2.0, 2.0]
    """
    _check_net(net)
    buckets = flag(buckets, "buckets")
    if not isinstance(method, AbstractMethod):
        raise ValueError(f"method must be an rmtjax.gaussian method object (Auto(), Mehler(order), GaussHermite(deg), "
                         f"MonteCarlo(n)), got {method!r}")
    dtype = _check_compute_dtype(compute_dtype)
    diagonal_spatial = flag(diagonal_spatial, "diagonal_spatial")
    x = _inputs(x, "x")
    net, full, _ = _image_plan(net, x, 8, diagonal_spatial, False)
    out_dtype = x.dtype
    dtype = _widest(dtype, out_dtype)
    x = _cast(x, dtype)
    n = x.shape[0]
    if buckets:
        x = _pad(x, bucket_size(n))
    dyn, static = eqx.partition(net, eqx.is_array)
    out = _diagonal_core(x, dyn, static=static, method=method, dtype=dtype, out_dtype=jnp.dtype(out_dtype), full=full)
    if buckets and x.shape[0] != n:
        out = Kernel(*(_unpad_lead(o, n, None, full is not None) for o in out))
    reverse = full is not None and bool(conv_parity(net))
    return Kernel(*(_nt_layout(o, x.ndim - 2, 1, reverse) for o in out))


@functools.partial(jax.jit, static_argnames=("static", "method", "dtype", "out_dtype", "full"))
def _diagonal_core(x, dyn, *, static, method, dtype, out_dtype, full=None):
    net = eqx.combine(_in_dtype(dyn, dtype), static)
    if full is None:
        d = x.shape[1]
        q = jnp.sum(x * x, axis=1) / d
        ones = jnp.ones(q.shape, bool)
        out = net(KernelState(q, jnp.zeros_like(q), q, q, ones, ones, jnp.asarray(d, q.dtype), method, sample=ones))
    else:  # images: the pairs (x_i, x_i) as tiles of shape (n, 1) (the layers expect two batch axes)
        out = net(_image_self_state(x, method, full))
        out = KernelState(out.nngp[:, 0], out.ntk[:, 0], None, None, None, None, None, method)
    bad = jnp.any(jnp.isnan(out.nngp)) | jnp.any(jnp.isnan(out.ntk))
    return Kernel(*error_if((out.nngp.astype(out_dtype), out.ntk.astype(out_dtype)), bad,
                            _nan_message(net, dtype).replace("x1, x2:", "x:")))
