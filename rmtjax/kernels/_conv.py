r"""The convolutional layers of the kernel engine: convolution, pooling, flattening and layer norm
on the spatial covariances of images (CNN-GP: Novak et al. 2019, Garriga-Alonso et al. 2019; CNTK:
Arora et al. 2019; neural-tangents' conventions, Novak et al. 2020).

An image state (:class:`~rmtjax.kernels.KernelState` with a :class:`~rmtjax.kernels.Spatial`)
holds, for every pair of images of a tile, the covariance of pixel :math:`p` of :math:`x` with
pixel :math:`p'` of :math:`x'` (*full* layout, ``(t1, t2, *S, *S)``) or only with the same pixel
(*diagonal* layout, ``(t1, t2, *S)``). With :math:`\mathcal A` the linear map of a layer on
covariances, every layer below maps :math:`\Sigma \mapsto \mathcal A\Sigma` (then the affine part
of a weight layer), and the NTK alike:

* :class:`Conv` (filter :math:`F`, weights shared over pixels, NTK parameterization):
  :math:`\Sigma'(p, p') = \frac{\sigma_w^2}{|F|}\sum_{a \in F}\Sigma(sp + a, sp' + a) + \sigma_b^2`,
  :math:`\Theta' = \Sigma' + \frac{\sigma_w^2}{|F|}\sum_a\Theta(sp + a, sp' + a)` (the same filter
  offset :math:`a` on both sides: the weight is shared, the channels independent). Zero padding
  (``SAME``) contributes zero covariance, ``CIRCULAR`` wraps. Same-pixel entries need only
  same-pixel entries, so a network read out by :class:`Flatten` runs in the diagonal layout.
* :class:`Pool` (window :math:`w`, average or sum):
  :math:`\Sigma'(q, q') = \frac{1}{|w|^2}\sum_{a, b \in w}\Sigma(sq + a, sq' + b)`: pixel pairs
  *across* the window, so its input is kept full.
* :class:`GlobalPool`: :math:`\frac{1}{|S|^2}\sum_{p, p'}\Sigma(p, p')` (average) or the sum.
* :class:`Flatten` (then a ``Dense`` over ``|S| C`` features): :math:`\frac{1}{|S|}\sum_p\Sigma(p, p)`.
* :class:`LayerNorm` over the channels (and optionally pixels):
  :math:`\Sigma(p, p') / \sqrt{(\epsilon + \bar q(p))(\epsilon + \bar q'(p'))}`, :math:`\bar q` the
  pixel variance (averaged over the normalised pixel axes).

Which layout each layer runs in is decided once per network, backwards from the output
(:func:`plan`): the full covariance only up to the last layer that needs it (a pooling layer),
the diagonal after it (:class:`ToDiagonal` inserted there). neural-tangents keeps the full
covariance through every layer of a network with pooling.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._validate import as_real, check_range, choice, static_int
from ._layers import (AbstractLayer, KernelState, Parallel, Product, Residual, Serial, Spatial, Stack, pixel_diagonal,
                      pixel_eye)

__all__ = ["Attention", "Concat", "Conv", "ConvTranspose", "Dropout", "Flatten", "GlobalPool", "ImageResize", "Index", "LayerNorm",
           "Pool", "ToDiagonal", "plan"]

_PADDINGS = ("SAME", "VALID", "CIRCULAR")


# ------------------------------------------------------------------------------------------
# Window geometry and the linear maps on one axis (or one pair of axes)
# ------------------------------------------------------------------------------------------


def window_geometry(n: int, k: int, s: int, padding: str, who: str) -> tuple[int, int, int]:
    """``(lo, hi, out)``: the padding before and after an axis of ``n`` pixels and the output size
    of a window ``k`` with stride ``s`` (``jax.lax`` conventions; ``CIRCULAR`` pads like ``SAME``,
    with wrapped pixels)."""
    if padding == "VALID":
        if n < k:
            raise ValueError(f"{who}: the window ({k}) is larger than the input ({n} pixels) with padding='VALID'")
        return 0, 0, (n - k) // s + 1
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2, out


def _pad(x, axes, lo: int, hi: int, wrap: bool):
    if lo == 0 and hi == 0:
        return x
    pads = [(0, 0)] * x.ndim
    for ax in axes:
        pads[ax] = (lo, hi)
    return jnp.pad(x, pads, mode="wrap" if wrap else "constant")


def _shifted(x, axes, delta: int, out: int):
    """``y[i] = x[i + delta]`` for ``i < out`` along each of ``axes`` (the same shift on all), zero
    where ``i + delta`` is outside ``x``: a slice, then padding of the (small) rim. XLA fuses this into
    the sum; padding the whole input first and slicing it (the general path) measured 6x slower on a
    tile of full 8x8 covariances (benchmarks/results/conv_engine_profile.md)."""
    n = x.shape[axes[0]]
    first, last = max(0, -delta), min(out, n - delta)
    if last <= first:
        shape = list(x.shape)
        for ax in axes:
            shape[ax] = out
        return jnp.zeros(shape, x.dtype)
    pads = [(0, 0)] * x.ndim
    for ax in axes:
        x = jax.lax.slice_in_dim(x, first + delta, last + delta, axis=ax)
        pads[ax] = (first, out - last)
    return jnp.pad(x, pads) if any(p != (0, 0) for p in pads) else x


def window_sum(x, axis: int, k: int, s: int, lo: int, hi: int, out: int, wrap: bool):
    r""":math:`y_i = \sum_{a < k} x_{s i + a}` along ``axis`` (zero- or wrap-padded by ``lo``, ``hi``)."""
    if s == 1 and not wrap:
        parts = [_shifted(x, (axis,), a - lo, out) for a in range(k)]
        return sum(parts[1:], parts[0])
    x = _pad(x, (axis,), lo, hi, wrap)
    parts = [jax.lax.slice_in_dim(x, a, a + s * (out - 1) + 1, s, axis=axis) for a in range(k)]
    return sum(parts[1:], parts[0])


def diagonal_window_sum(x, axis1: int, axis2: int, k: int, s: int, lo: int, hi: int, out: int, wrap: bool):
    r""":math:`y_{i i'} = \sum_{a < k} x_{s i + a,\, s i' + a}` over the pair of axes (the same
    offset on both: a shared filter)."""
    if s == 1 and not wrap:
        parts = [_shifted(x, (axis1, axis2), a - lo, out) for a in range(k)]
        return sum(parts[1:], parts[0])
    x = _pad(x, (axis1, axis2), lo, hi, wrap)
    parts = []
    for a in range(k):
        y = jax.lax.slice_in_dim(x, a, a + s * (out - 1) + 1, s, axis=axis1)
        parts.append(jax.lax.slice_in_dim(y, a, a + s * (out - 1) + 1, s, axis=axis2))
    return sum(parts[1:], parts[0])


def _tuple(x, n: int | None, name: str, lo: int = 1) -> tuple[int, ...]:
    if isinstance(x, int) and not isinstance(x, bool):
        x = (x,) * (n or 1)
    if not isinstance(x, (tuple, list)) or not x or (n is not None and len(x) != n):
        want = f"{n} positive integers" if n is not None else "a tuple of positive integers"
        raise ValueError(f"{name} must be {want}, got {x!r}")
    return tuple(static_int(v, name, lo=lo) for v in x)


def _spatial(state: KernelState, who: str) -> Spatial:
    if state.spatial is None:
        raise ValueError(f"{who} needs image inputs (n, H, W, C) or (n, W, C) — a spatial axis to act on; it got "
                         "vectors (after Flatten, GlobalAvgPool or on 2-d inputs)")
    return state.spatial


def _leading(state: KernelState) -> int:
    return state.nngp.ndim - state.spatial.ndim


def _masks(state: KernelState, spatial: Spatial | None) -> tuple[Array, Array]:
    """``same``, ``mirror`` reshaped to the trailing axes of a new layout."""
    nd = 0 if spatial is None else spatial.ndim
    lead = state.same.shape[:_leading(state)]
    return (state.same.reshape(lead + (1,) * nd), state.mirror.reshape(lead + (1,) * nd))


def _map_all(state: KernelState, fn, spatial: Spatial | None, **changes) -> KernelState:
    same, mirror = _masks(state, spatial)
    if state.sample is not None and "sample" not in changes:
        changes["sample"] = _reshape_mask(state.sample, state, spatial)
    return state.replace(nngp=fn(state.nngp), ntk=fn(state.ntk), var1=fn(state.var1), var2=fn(state.var2),
                         same=same, mirror=mirror, spatial=spatial, **changes)


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------


class _WeightLayer(AbstractLayer):
    """The fields and validation shared by :class:`Conv` and :class:`ConvTranspose` (their kernel
    maps: :func:`_weight_layer`)."""

    W_std: Array
    b_std: Array
    filter_shape: tuple[int, ...] = eqx.field(static=True)
    strides: tuple[int, ...] | None = eqx.field(static=True)
    padding: str = eqx.field(static=True)
    out_dim: int | None = eqx.field(static=True)
    bias: bool = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)

    def __init__(self, W_std: ArrayLike = 1.0, b_std: ArrayLike | None = 0.0, filter_shape=(3, 3), strides=None,
                 padding: str = "VALID", *, out_dim: int | None = None, parameterization: str = "ntk"):
        self.filter_shape = _tuple(filter_shape, None, "filter_shape")
        self.strides = None if strides is None else _tuple(strides, len(self.filter_shape), "strides")
        self.padding = choice(padding, "padding", _PADDINGS)
        self.parameterization = choice(parameterization, "parameterization", ("ntk", "standard"))
        self.W_std = check_range(as_real(W_std, "W_std", ndim=0), "W_std", lo=0.0)
        self.bias = b_std is not None
        self.b_std = check_range(as_real(0.0 if b_std is None else b_std, "b_std", ndim=0), "b_std", lo=0.0)
        self.out_dim = None if out_dim is None else static_int(out_dim, "out_dim", lo=1)


class Conv(_WeightLayer):
    r"""A convolution with weights shared over pixels (neural-tangents' ``Conv``; see the module
    docstring for the kernel map).

    Args:
        W_std, b_std: :math:`\sigma_w`, :math:`\sigma_b` (real scalars, finite, ``>= 0``;
            ``b_std=None``: no bias). Differentiable.
        filter_shape: the filter's spatial shape, one positive integer per spatial axis.
        strides: one positive integer per spatial axis (default all 1).
        padding: ``"SAME"``, ``"VALID"`` or ``"CIRCULAR"`` (wrapped).
        out_dim: output channels (only a following standard-parameterization layer needs it).
        parameterization: ``"ntk"`` (default) or ``"standard"`` (then
            :math:`\Theta' = C k \mathcal A\Sigma + \sigma_w^2\mathcal A\Theta\,[+1]`, ``C k`` the
            fan-in: input channels times filter size).

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Relu
        >>> from rmtjax.kernels import Activation, Dense, Serial, kernel
        >>> net = Serial(Conv(1.4, 0.1, (3, 3), padding="SAME"), Activation(Relu()), Flatten(), Dense(1.0))
        >>> kernel(jnp.ones((2, 5, 5, 3)), None, net).nngp.shape
        (2, 2)
    """

    def _linear(self, state: KernelState):
        sp = _spatial(state, "Conv")
        if len(sp.shape) != len(self.filter_shape):
            raise ValueError(f"Conv: filter_shape {self.filter_shape} has {len(self.filter_shape)} spatial axes, the "
                             f"input {len(sp.shape)} (spatial shape {sp.shape})")
        strides = self.strides or (1,) * len(sp.shape)
        geo = [window_geometry(n, k, s, self.padding, "Conv")
               for n, k, s in zip(sp.shape, self.filter_shape, strides)]
        wrap = self.padding == "CIRCULAR"
        size = math.prod(self.filter_shape)
        S = len(sp.shape)

        def fn(x):
            lead = x.ndim - sp.ndim
            for i, ((lo, hi, out), k, s) in enumerate(zip(geo, self.filter_shape, strides)):
                if sp.full:
                    x = diagonal_window_sum(x, lead + i, lead + S + i, k, s, lo, hi, out, wrap)
                else:
                    x = window_sum(x, lead + i, k, s, lo, hi, out, wrap)
            return x / size

        return fn, Spatial(tuple(g[2] for g in geo), sp.full)

    def keeps_layout(self) -> bool:
        return self.padding != "VALID" and all(s == 1 for s in (self.strides or ()))

    def __call__(self, state: KernelState) -> KernelState:
        fn, spatial = self._linear(state)
        return _weight_layer(self, state, fn, spatial)


class Pool(AbstractLayer):
    r"""Average or sum pooling over windows (neural-tangents' ``AvgPool`` / ``SumPool``):
    :math:`\Sigma'(q, q') = c\sum_{a, b \in w}\Sigma(sq + a, sq' + b)` with :math:`c = 1/|w|^2`
    (average; at ``SAME`` edges with ``normalize_edges=True``, one over the product of the real
    window sizes) or 1 (sum).

    In the diagonal layout (only with ``diagonal_spatial=True``, neural-tangents'
    independent-pixel approximation) the off-diagonal pixel pairs count as zero:
    :math:`\Sigma'(q) = c\sum_a\Sigma(sq + a)`.

    Args:
        window_shape: one positive integer per spatial axis.
        strides: one per spatial axis (default: all 1, as neural-tangents).
        padding: ``"VALID"`` (default), ``"SAME"`` or ``"CIRCULAR"``.
        kind: ``"avg"`` or ``"sum"``.
        normalize_edges: average over the real (unpadded) window at ``SAME`` edges.
    """

    window_shape: tuple[int, ...] = eqx.field(static=True)
    strides: tuple[int, ...] | None = eqx.field(static=True)
    padding: str = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    normalize_edges: bool = eqx.field(static=True)

    def __init__(self, window_shape, strides=None, padding: str = "VALID", kind: str = "avg",
                 normalize_edges: bool = False):
        self.window_shape = _tuple(window_shape, None, "window_shape")
        self.strides = None if strides is None else _tuple(strides, len(self.window_shape), "strides")
        self.padding = choice(padding, "padding", _PADDINGS)
        self.kind = choice(kind, "kind", ("avg", "sum"))
        if not isinstance(normalize_edges, bool):
            raise ValueError(f"normalize_edges must be a bool, got {normalize_edges!r}")
        self.normalize_edges = normalize_edges

    def keeps_layout(self) -> bool:
        return False

    def __call__(self, state: KernelState) -> KernelState:
        who = "AvgPool" if self.kind == "avg" else "SumPool"
        sp = _spatial(state, who)
        if len(sp.shape) != len(self.window_shape):
            raise ValueError(f"{who}: window_shape {self.window_shape} has {len(self.window_shape)} spatial axes, the "
                             f"input {len(sp.shape)} (spatial shape {sp.shape})")
        strides = self.strides or (1,) * len(sp.shape)
        geo = [window_geometry(n, k, s, self.padding, who) for n, k, s in zip(sp.shape, self.window_shape, strides)]
        wrap = self.padding == "CIRCULAR"
        S = len(sp.shape)
        edges = self.kind == "avg" and self.normalize_edges and self.padding == "SAME"

        def fn(x):
            lead = x.ndim - sp.ndim
            for i, ((lo, hi, out), k, s) in enumerate(zip(geo, self.window_shape, strides)):
                axes = (lead + i, lead + S + i) if sp.full else (lead + i,)
                for ax in axes:
                    x = window_sum(x, ax, k, s, lo, hi, out, wrap)
                if self.kind == "sum":
                    continue
                if not edges:
                    x = x / k**2
                    continue
                # the real window sizes at SAME edges, once per side (twice on the one axis of the
                # diagonal layout, as neural-tangents)
                c = window_sum(jnp.ones((sp.shape[i],), x.dtype), 0, k, s, lo, hi, out, False)
                for ax in axes if sp.full else axes * 2:
                    x = x / c.reshape((1,) * ax + (out,) + (1,) * (x.ndim - ax - 1))
            return x

        return _map_all(state, fn, Spatial(tuple(g[2] for g in geo), sp.full))


class GlobalPool(AbstractLayer):
    r"""Pooling over all pixels (neural-tangents' ``GlobalAvgPool`` / ``GlobalSumPool``):
    :math:`\frac{1}{|S|^2}\sum_{p, p'}\Sigma(p, p')` (average) or the sum; vectors after it. In the
    diagonal layout (``diagonal_spatial=True``) only same-pixel pairs count (as neural-tangents).

    Args:
        kind: ``"avg"`` or ``"sum"``.
    """

    kind: str = eqx.field(static=True)

    def __init__(self, kind: str = "avg"):
        self.kind = choice(kind, "kind", ("avg", "sum"))

    def keeps_layout(self) -> bool:
        return False

    def __call__(self, state: KernelState) -> KernelState:
        sp = _spatial(state, "GlobalAvgPool" if self.kind == "avg" else "GlobalSumPool")
        size = math.prod(sp.shape)

        def fn(x):
            axes = tuple(range(x.ndim - sp.ndim, x.ndim))
            total = jnp.sum(x, axis=axes)
            return total / size**2 if self.kind == "avg" else total

        return _map_all(state, fn, None)


class Flatten(AbstractLayer):
    r"""Flattening pixels and channels into one feature axis (neural-tangents' ``Flatten``): the
    kernel of a following ``Dense`` sees :math:`\frac{1}{|S|}\sum_p\Sigma(p, p)`; the width becomes
    ``|S| C``."""

    def keeps_layout(self) -> bool:
        return False

    def __call__(self, state: KernelState) -> KernelState:
        sp = _spatial(state, "Flatten")
        size = math.prod(sp.shape)

        def fn(x):
            if sp.full:
                x = pixel_diagonal(x, sp.shape)
            return jnp.mean(x, axis=tuple(range(x.ndim - len(sp.shape), x.ndim)))

        width = None if state.width is None else state.width * size
        return _map_all(state, fn, None, width=width)


class LayerNorm(AbstractLayer):
    r"""Layer normalisation over the channels (and the pixel axes in ``axis``), neural-tangents'
    ``LayerNorm``: :math:`\Sigma(p, p')/\sqrt{(\epsilon + \bar q(p))(\epsilon + \bar q'(p'))}` and
    the NTK alike, :math:`\bar q(p)` the variance of pixel :math:`p` averaged over the normalised
    pixel axes (the channel mean is zero in the limit). On vectors:
    :math:`\Sigma/\sqrt{(\epsilon + q)(\epsilon + q')}`. Exact only where the channels entering it
    have zero mean at infinite width: right after a ``Dense``, ``Conv`` or attention layer (as
    neural-tangents requires); elsewhere (after a ``Relu``: measured, a Monte-Carlo diagonal of 5.6
    against 4.5) the finite layer's centring changes the kernel, and a ``ValueError`` says so.

    Args:
        axis: the axes of the finite layer's input ``(n, *S, C)`` normalised over (integers,
            negative from the end); they must include the channel axis and not the batch axis.
        eps: :math:`\epsilon`, finite and ``>= 0`` (neural-tangents: ``1e-12``). Differentiable.
    """

    eps: Array
    axis: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, axis=-1, eps: ArrayLike = 1e-12):
        axis = (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else axis
        if not isinstance(axis, (tuple, list)) or not axis:
            raise ValueError(f"axis must be an integer or a tuple of integers, got {axis!r}")
        self.axis = tuple(static_int(a, "axis") for a in axis)
        self.eps = check_range(as_real(eps, "eps", ndim=0), "eps", lo=0.0)

    def _pixel_axes(self, S: int) -> tuple[int, ...]:
        ndim = S + 2
        axes = set()
        for a in self.axis:
            if not -ndim <= a < ndim:
                raise ValueError(f"LayerNorm: axis {a} is out of range for inputs of {ndim} dimensions")
            axes.add(a % ndim)
        if ndim - 1 not in axes:
            raise ValueError(f"LayerNorm: axis {self.axis} must include the channel axis ({ndim - 1} = -1): only a "
                             "normalisation over channels has an infinite-width limit")
        if 0 in axes:
            raise ValueError(f"LayerNorm: axis {self.axis} includes the batch axis 0, whose kernel is not supported")
        return tuple(sorted(a - 1 for a in axes if a != ndim - 1))

    def __call__(self, state: KernelState) -> KernelState:
        if not state.centered:
            raise ValueError("LayerNorm: its input channels have a nonzero mean at infinite width (it follows an "
                             "activation such as Relu, or the inputs themselves): the finite layer subtracts that "
                             "mean and this kernel would not, so it would be wrong (neural-tangents raises here too). "
                             "Put LayerNorm right after a Dense, Conv or attention layer")
        sp = state.spatial
        if sp is None:
            self._pixel_axes(0)
            n1, n2 = self.eps + state.var1, self.eps + state.var2
            return state.replace(nngp=state.nngp / jnp.sqrt(n1 * n2), ntk=state.ntk / jnp.sqrt(n1 * n2),
                                 var1=state.var1 / n1, var2=state.var2 / n2)
        S = len(sp.shape)
        pixel_axes = self._pixel_axes(S)

        def pixel_var(v):
            d = pixel_diagonal(v, sp.shape) if sp.full else v
            if pixel_axes:
                lead = d.ndim - S
                d = jnp.mean(d, axis=tuple(lead + a for a in pixel_axes), keepdims=True)
            return self.eps + d

        n1, n2 = pixel_var(state.var1), pixel_var(state.var2)
        if sp.full:
            rows = lambda d: d.reshape(d.shape + (1,) * S)
            cols = lambda d: d.reshape(d.shape[:d.ndim - S] + (1,) * S + d.shape[d.ndim - S:])
            s12, s11, s22 = (jnp.sqrt(rows(n1) * cols(n2)), jnp.sqrt(rows(n1) * cols(n1)),
                             jnp.sqrt(rows(n2) * cols(n2)))
        else:
            s12, s11, s22 = jnp.sqrt(n1 * n2), n1, n2
        return state.replace(nngp=state.nngp / s12, ntk=state.ntk / s12, var1=state.var1 / s11,
                             var2=state.var2 / s22)


class ConvTranspose(_WeightLayer):
    r"""A transposed convolution (neural-tangents' ``ConvTranspose``; the finite layer is
    ``jax.lax.conv_transpose``, kernel not flipped, ``CIRCULAR`` folded periodically onto the
    ``SAME`` output). With :math:`M_a` the 0/1 map of filter offset :math:`a` from input to output
    pixels (one per spatial axis, taken from the finite layer itself on basis images),
    :math:`\Sigma' = \frac{\sigma_w^2}{|F|}\sum_a M_a\Sigma M_a^\top + \sigma_b^2` and the NTK as for
    :class:`Conv`. Every output pixel has at most one input pixel per offset, so same-pixel
    covariances again need only same-pixel covariances.

    Args: as :class:`Conv`.
    """

    def keeps_layout(self) -> bool:
        return False

    def _maps(self, shape):
        """Per spatial axis, ``(k, out, in)`` 0/1 matrices of the offsets (from the finite layer)."""
        from ._finite_conv import conv_finite  # the finite layer defines the geometry

        strides = self.strides or (1,) * len(shape)
        maps = []
        for n, k, s in zip(shape, self.filter_shape, strides):
            _, apply_fn = conv_finite(1, (k,), (s,), self.padding, float(k) ** 0.5, None, "ntk", transpose=True)
            basis = np.eye(n)[:, :, None]
            cols = [np.asarray(apply_fn((np.eye(k)[a].reshape(k, 1, 1), None), basis))[:, :, 0].T for a in range(k)]
            m = np.round(np.stack(cols))
            if np.any(np.count_nonzero(m, axis=2) > 1):
                raise NotImplementedError(f"ConvTranspose: filter {k} with stride {s} on {n} pixels "
                                          f"({self.padding}) maps two input pixels of one offset to one output pixel")
            maps.append(m)
        return maps

    def __call__(self, state: KernelState) -> KernelState:
        sp = _spatial(state, "ConvTranspose")
        if len(sp.shape) != len(self.filter_shape):
            raise ValueError(f"ConvTranspose: filter_shape {self.filter_shape} has {len(self.filter_shape)} spatial "
                             f"axes, the input {len(sp.shape)} (spatial shape {sp.shape})")
        with jax.ensure_compile_time_eval():
            maps = self._maps(sp.shape)
        S, size = len(sp.shape), math.prod(self.filter_shape)

        def fn(x):
            lead = x.ndim - sp.ndim
            for i, m in enumerate(maps):
                m = jnp.asarray(m, x.dtype)
                if sp.full:
                    x = jnp.moveaxis(x, (lead + i, lead + S + i), (-2, -1))
                    x = jnp.einsum("aop,...pq,arq->...or", m, x, m)
                    x = jnp.moveaxis(x, (-2, -1), (lead + i, lead + S + i))
                else:
                    x = jnp.moveaxis(jnp.tensordot(x, jnp.sum(m * m, axis=0), axes=((lead + i,), (1,))), -1,
                                     lead + i)
            return x / size

        spatial = Spatial(tuple(m.shape[1] for m in maps), sp.full)
        return _weight_layer(self, state, fn, spatial)


def _weight_layer(layer, state: KernelState, fn, spatial: Spatial) -> KernelState:
    r"""The kernels after a weight layer whose linear map on covariances (normalised by the filter
    size) is ``fn``: :math:`w^2 fn(\Sigma) + b^2` and the NTK in ``layer.parameterization``."""
    w2, b2 = layer.W_std**2, layer.b_std**2
    nngp0 = fn(state.nngp)
    nngp = w2 * nngp0 + b2
    if layer.parameterization == "ntk":
        ntk = nngp + w2 * fn(state.ntk)
    else:
        who = type(layer).__name__
        if state.width is None:
            raise ValueError(f"{who}: parameterization='standard' needs the number of channels feeding it (its NTK "
                             "grows with its fan-in); give the layer before it an out_dim")
        fan_in = state.width * math.prod(layer.filter_shape)
        ntk = fan_in * nngp0 + w2 * fn(state.ntk) + (1.0 if layer.bias else 0.0)
    same, mirror = _masks(state, spatial)
    sample = None if state.sample is None else _reshape_mask(state.sample, state, spatial)
    width = None if layer.out_dim is None else jnp.asarray(layer.out_dim, nngp.dtype)
    return state.replace(nngp=nngp, ntk=ntk, var1=w2 * fn(state.var1) + b2, var2=w2 * fn(state.var2) + b2,
                         same=same, mirror=mirror, spatial=spatial, width=width, sample=sample, centered=True)


class Dropout(AbstractLayer):
    r"""Dropout in training mode (neural-tangents' ``Dropout(rate, mode="train")``; ``rate`` is the
    keep probability): independent masks per sample scale the variance of every unit by
    :math:`1/\text{rate}`, so the entries of a sample with itself at the same pixel are multiplied
    by :math:`1/\text{rate}` and all others kept (neural-tangents applies the factor only when
    ``x2`` is ``None``: another input's rows are other samples, even when equal).

    Args:
        rate: the keep probability, in :math:`(0, 1]`.
    """

    rate: float = eqx.field(static=True)

    def __init__(self, rate: float):
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 < rate <= 1:
            raise ValueError(f"rate (the keep probability) must be a real number in (0, 1], got {rate!r}")
        self.rate = float(rate)

    def __call__(self, state: KernelState) -> KernelState:
        f = 1.0 / self.rate
        sp = state.spatial
        eye = pixel_eye(sp.shape)[None, None] if sp is not None and sp.full else True
        on = (state.sample & eye) if state.sample is not None else jnp.zeros(state.nngp.shape, bool)
        scale = jnp.where(on, f, 1.0).astype(state.nngp.dtype)
        self_scale = jnp.where(eye, f, 1.0).astype(state.nngp.dtype) if sp is not None and sp.full else f
        # identical inputs in two samples are no longer identical after dropout
        same = state.same & state.sample if state.sample is not None else jnp.zeros_like(state.same)
        return state.replace(nngp=state.nngp * scale, ntk=state.ntk * scale, var1=state.var1 * self_scale,
                             var2=state.var2 * self_scale, same=same)


class Index(AbstractLayer):
    """Spatial indexing (neural-tangents' ``Index``): ``idx`` per axis of the finite input
    ``(n, *S, C)`` (slices, integers that drop a spatial axis, one ``Ellipsis``); the batch and
    channel axes must be left whole. The covariances are indexed on both pixel axes of each
    spatial axis.

    Args:
        idx: a tuple of slices, integers and at most one ``Ellipsis``.
    """

    idx: tuple = eqx.field(static=True)

    def __init__(self, idx):
        if not isinstance(idx, tuple):
            idx = (idx,)
        for i in idx:
            if not (i is Ellipsis or isinstance(i, slice) or (isinstance(i, int) and not isinstance(i, bool))):
                raise ValueError(f"idx must hold slices, integers and at most one Ellipsis, got {i!r}")
        if sum(i is Ellipsis for i in idx) > 1:
            raise ValueError(f"idx must hold at most one Ellipsis, got {idx!r}")
        # hashable (a static field): slices as ("slice", start, stop, step), Ellipsis as "..."
        self.idx = tuple(("slice", i.start, i.stop, i.step) if isinstance(i, slice) else "..." if i is Ellipsis
                         else i for i in idx)

    @property
    def index(self) -> tuple:
        """``idx`` as slices, integers and ``Ellipsis``."""
        return tuple(slice(*i[1:]) if isinstance(i, tuple) else Ellipsis if i == "..." else i for i in self.idx)

    def keeps_layout(self) -> bool:
        return False

    def _per_axis(self, S: int) -> list:
        ndim = S + 2
        idx = list(self.index)
        if Ellipsis in idx:
            k = idx.index(Ellipsis)
            idx = idx[:k] + [slice(None)] * (ndim - len(idx) + 1) + idx[k + 1:]
        idx += [slice(None)] * (ndim - len(idx))
        if len(idx) != ndim:
            raise ValueError(f"Index: idx {self.idx!r} has more entries than the input's {ndim} axes")
        whole = slice(None)
        if idx[0] != whole or idx[-1] != whole:
            raise ValueError(f"Index: idx {self.idx!r} indexes the batch or channel axis; only spatial axes are "
                             "supported (their kernel is exact)")
        return idx[1:-1]

    def __call__(self, state: KernelState) -> KernelState:
        sp = _spatial(state, "Index")
        S = len(sp.shape)
        per_axis = self._per_axis(S)
        for i, (n, ix) in enumerate(zip(sp.shape, per_axis)):
            if isinstance(ix, int) and not -n <= ix < n:
                raise ValueError(f"Index: index {ix} out of range for spatial axis {i} of size {n}")
        kept = tuple(len(range(n)[ix]) for n, ix in zip(sp.shape, per_axis) if isinstance(ix, slice))
        if not kept:
            raise ValueError(f"Index: idx {self.idx!r} drops every spatial axis; use Flatten or a pooling layer")
        spatial = Spatial(kept, sp.full)

        def fn(x):
            lead = (slice(None),) * (x.ndim - sp.ndim)
            return x[lead + tuple(per_axis) * (2 if sp.full else 1)]

        same, mirror = _masks(state, spatial)
        sample = None if state.sample is None else _reshape_mask(state.sample, state, spatial)
        return _map_all(state, fn, spatial).replace(same=same, mirror=mirror, sample=sample)


class ImageResize(AbstractLayer):
    r"""Resizing images (neural-tangents' ``ImageResize``, ``jax.image.resize`` with ``"linear"`` or
    ``"nearest"``): a linear map :math:`R` per spatial axis, :math:`\Sigma' = R\Sigma R^\top` on its
    pair of pixel axes (so its input is kept full).

    Args:
        shape: the finite output shape ``(n, *S, C)``; ``-1`` keeps an axis (batch and channels
            must be ``-1``).
        method: ``"linear"`` or ``"nearest"``.
        antialias: as ``jax.image.resize`` (when downsampling).
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    method: str = eqx.field(static=True)
    antialias: bool = eqx.field(static=True)

    def __init__(self, shape, method: str = "linear", antialias: bool = True):
        self.shape = tuple(static_int(s, "shape", lo=-1) for s in shape)
        if any(s == 0 for s in self.shape):
            raise ValueError(f"shape entries must be positive or -1, got {shape!r}")
        self.method = choice(method, "method", ("linear", "nearest"))
        if not isinstance(antialias, bool):
            raise ValueError(f"antialias must be a bool, got {antialias!r}")
        self.antialias = antialias

    def keeps_layout(self) -> bool:
        return False

    def __call__(self, state: KernelState) -> KernelState:
        sp = _spatial(state, "ImageResize")
        S = len(sp.shape)
        if len(self.shape) != S + 2:
            raise ValueError(f"ImageResize: shape {self.shape} must have {S + 2} entries for images of spatial shape "
                             f"{sp.shape} (batch, spatial axes, channels)")
        if self.shape[0] != -1 or self.shape[-1] != -1:
            raise ValueError(f"ImageResize: shape {self.shape} must keep the batch and channel axes (-1)")
        if not sp.full:
            raise ValueError("ImageResize mixes pixels: its kernel needs pixel-pair covariances; "
                             "diagonal_spatial=True cannot be used with it")
        out = tuple(n if m == -1 else m for n, m in zip(sp.shape, self.shape[1:-1]))

        def fn(x):
            lead = x.ndim - sp.ndim
            for i, (n, m) in enumerate(zip(sp.shape, out)):
                if n == m:
                    continue
                r = jax.image.resize(jnp.eye(n, dtype=x.dtype), (n, m), self.method, antialias=self.antialias,
                                     precision=jax.lax.Precision.HIGHEST).T  # (m, n)
                x = jnp.moveaxis(x, (lead + i, lead + S + i), (-2, -1))
                x = jnp.einsum("op,...pq,rq->...or", r, x, r, precision=jax.lax.Precision.HIGHEST)
                x = jnp.moveaxis(x, (-2, -1), (lead + i, lead + S + i))
            return x

        spatial = Spatial(out, True)
        sample = None if state.sample is None else _reshape_mask(state.sample, state, spatial)
        return _map_all(state, fn, spatial).replace(sample=sample)


class Concat(AbstractLayer):
    r"""Branches fed the same input, concatenated (neural-tangents' ``FanInConcat(axis)``).

    Along the channels (``axis=-1``): the mean of the branch kernels weighted by their channel
    counts :math:`C_i` (the widths of their last ``Conv``/``Dense``: ``out_dim`` is needed),
    :math:`\sum_i C_i K_i / \sum_i C_i`. Along a spatial axis: the branch kernels side by side,
    the covariance of pixels of two different branches zero (independent branches).

    Args:
        *branches: one or more layers.
        axis: the axis of the finite output ``(n, *S, C)`` (``-1``: channels).
    """

    branches: tuple[AbstractLayer, ...]
    axis: int = eqx.field(static=True)

    def __init__(self, *branches: AbstractLayer, axis: int = -1):
        self.branches = tuple(branches)
        for i, b in enumerate(self.branches):
            if not isinstance(b, AbstractLayer):
                raise ValueError(f"branches[{i}] must be an rmtjax.kernels layer, got {type(b).__name__}")
        if not self.branches:
            raise ValueError("branches must hold at least one layer, got none")
        self.axis = static_int(axis, "axis")

    def keeps_layout(self) -> bool:
        return False

    def num_activations(self) -> int:
        return max(b.num_activations() for b in self.branches)

    def __call__(self, state: KernelState) -> KernelState:
        states = [b(state) for b in self.branches]
        sp = states[0].spatial
        S = 0 if sp is None else len(sp.shape)
        ax = self.axis % (S + 2)
        if ax == 0:
            raise ValueError("FanInConcat: concatenating along the batch axis is not supported")
        if ax == S + 1:  # channels
            if any(s.spatial != sp for s in states):
                raise ValueError(f"FanInConcat: the branches end with different spatial shapes "
                                 f"{[s.spatial.shape if s.spatial else None for s in states]}")
            if any(s.width is None for s in states):
                raise ValueError("FanInConcat along channels weights the branches by their channel counts: end every "
                                 "branch with a Conv or Dense that has out_dim")
            total = sum(s.width for s in states)

            def mix(get):
                return sum((s.width / total) * get(s) for s in states)

            return states[0].replace(nngp=mix(lambda s: s.nngp), ntk=mix(lambda s: s.ntk),
                                     var1=mix(lambda s: s.var1), var2=mix(lambda s: s.var2), width=total,
                                     centered=all(s.centered for s in states))
        i = ax - 1
        shapes = [s.spatial.shape for s in states]
        if any(s.spatial.full != sp.full for s in states) or len({sh[:i] + sh[i + 1:] for sh in shapes}) != 1:
            raise ValueError(f"FanInConcat: branch spatial shapes {shapes} must agree except along axis {self.axis}")
        sizes = [sh[i] for sh in shapes]
        out = sp.shape[:i] + (sum(sizes),) + sp.shape[i + 1:]
        spatial = Spatial(out, sp.full)

        def cat(arrays):
            if not sp.full:
                lead = arrays[0].ndim - sp.ndim
                return jnp.concatenate(arrays, axis=lead + i)
            lead = arrays[0].ndim - sp.ndim
            total, start, parts = sum(sizes), 0, []
            for a, n in zip(arrays, sizes):
                pads = [(0, 0)] * a.ndim
                pads[lead + i] = pads[lead + S + i] = (start, total - start - n)
                parts.append(jnp.pad(a, pads))
                start += n
            return sum(parts[1:], parts[0])

        first = states[0]
        same, mirror = _masks(first, spatial)
        sample = None if first.sample is None else _reshape_mask(first.sample, first, spatial)
        return first.replace(nngp=cat([s.nngp for s in states]), ntk=cat([s.ntk for s in states]),
                             var1=cat([s.var1 for s in states]), var2=cat([s.var2 for s in states]), same=same,
                             mirror=mirror, spatial=spatial, sample=sample, centered=all(s.centered for s in states))


_MECHANISMS = ("SOFTMAX", "IDENTITY", "ABS", "RELU")


class Attention(AbstractLayer):
    r"""Global self-attention over pixels (neural-tangents' ``GlobalSelfAttention``; Hron et al.
    2020, "Infinite attention: NNGP and NTK for deep attention networks").

    With ``linear_scaling`` (queries and keys scaled by :math:`1/n`) the attention weights have a
    deterministic limit, :math:`G_x(p, q) = \phi(\sigma_{QK}\,\tilde\Sigma(x, x)(p, q))` (softmax
    over :math:`q`, or the identity, absolute value, ReLU), and
    :math:`\Sigma'(x, x') = \sigma_{OV}^2\,G_x\,\Sigma\,G_{x'}^\top + \sigma_b^2`,
    :math:`\Theta' = \sigma_{OV}^2\,G_x\,\Theta\,G_{x'}^\top + \sigma_b^2 + 2(\Sigma' - \sigma_b^2)`.
    Without it (:math:`1/\sqrt n`) only the identity mechanism has a closed form:
    :math:`\Sigma' = \sigma_{QK}^2\sigma_{OV}^2\langle\tilde\Sigma, \Sigma\rangle_F\,\tilde\Sigma + \sigma_b^2`
    and :math:`\Theta' = \sigma_{QK}^2\sigma_{OV}^2(2\langle\tilde\Sigma, \tilde\Theta\rangle_F\tilde\Sigma
    + \langle\tilde\Sigma, \Sigma\rangle_F(\tilde\Theta + 4\tilde\Sigma)) + \sigma_b^2`.
    :math:`\tilde\Sigma = w_x\Sigma + w_e R` adds positional embeddings (``SUM`` or ``CONCAT``,
    :math:`R` the identity over pixels or ``decay(sum_a |p_a - q_a|^p)``), in the values too with
    ``val_pos_emb``. :math:`\sigma_{QK} = \sigma_Q\sigma_K`, :math:`\sigma_{OV} = \sigma_O\sigma_V`.
    Its input needs pixel-pair covariances.
    """

    W_query_std: Array
    W_key_std: Array
    W_value_std: Array
    W_out_std: Array
    b_std: Array
    W_pos_emb_std: Array
    out_dim: int = eqx.field(static=True)
    linear_scaling: bool = eqx.field(static=True)
    mechanism: str = eqx.field(static=True)
    pos_emb_type: str = eqx.field(static=True)
    pos_emb_p_norm: float = eqx.field(static=True)
    pos_emb_decay_fn: object = eqx.field(static=True)
    n_chan_pos_emb: int | None = eqx.field(static=True)
    val_pos_emb: bool = eqx.field(static=True)
    bias: bool = eqx.field(static=True)

    def __init__(self, out_dim: int, *, linear_scaling: bool = True, W_query_std=1.0, W_key_std=1.0,
                 W_value_std=1.0, W_out_std=1.0, b_std=None, mechanism: str = "SOFTMAX", pos_emb_type: str = "NONE",
                 pos_emb_p_norm: float = 2, pos_emb_decay_fn=None, n_chan_pos_emb: int | None = None,
                 W_pos_emb_std=1.0, val_pos_emb: bool = False):
        def std(x, name):
            return check_range(as_real(x, name, ndim=0), name, lo=0.0)

        self.out_dim = static_int(out_dim, "out_dim", lo=1)
        for name, v in (("linear_scaling", linear_scaling), ("val_pos_emb", val_pos_emb)):
            if not isinstance(v, bool):
                raise ValueError(f"{name} must be a bool, got {v!r}")
        self.linear_scaling, self.val_pos_emb = linear_scaling, val_pos_emb
        self.mechanism = choice(str(getattr(mechanism, "name", mechanism)).upper(), "attention_mechanism", _MECHANISMS)
        self.pos_emb_type = choice(str(getattr(pos_emb_type, "name", pos_emb_type)).upper(), "pos_emb_type",
                                   ("NONE", "SUM", "CONCAT"))
        if not linear_scaling and self.mechanism != "IDENTITY":
            raise ValueError(f"attention_mechanism={self.mechanism!r} with linear_scaling=False has no closed-form "
                             "kernel (only IDENTITY has)")
        if pos_emb_decay_fn is not None and not callable(pos_emb_decay_fn):
            raise ValueError(f"pos_emb_decay_fn must be None or callable, got {pos_emb_decay_fn!r}")
        self.pos_emb_p_norm = float(pos_emb_p_norm)
        self.pos_emb_decay_fn = pos_emb_decay_fn
        self.n_chan_pos_emb = None if n_chan_pos_emb is None else static_int(n_chan_pos_emb, "n_chan_pos_emb", lo=1)
        self.W_query_std, self.W_key_std = std(W_query_std, "W_query_std"), std(W_key_std, "W_key_std")
        self.W_value_std, self.W_out_std = std(W_value_std, "W_value_std"), std(W_out_std, "W_out_std")
        self.bias = b_std is not None
        self.b_std = std(0.0 if b_std is None else b_std, "b_std")
        self.W_pos_emb_std = std(W_pos_emb_std, "W_pos_emb_std")

    def keeps_layout(self) -> bool:
        return False

    def _positions(self, shape, dtype):
        """:math:`R(p, q)` in the full layout ``(*S, *S)``."""
        if self.pos_emb_decay_fn is None:
            return pixel_eye(shape).astype(dtype)
        S = len(shape)
        R = jnp.zeros((1,) * (2 * S), dtype)
        for i, n in enumerate(shape):
            d = jnp.arange(n, dtype=dtype)
            diff = jnp.abs(d[:, None] - d[None, :]) ** self.pos_emb_p_norm
            R = R + diff.reshape((1,) * i + (n,) + (1,) * (S - 1) + (n,) + (1,) * (S - i - 1))
        return self.pos_emb_decay_fn(R)

    def __call__(self, state: KernelState) -> KernelState:
        sp = _spatial(state, "GlobalSelfAttention")
        if not sp.full:
            raise ValueError("GlobalSelfAttention mixes all pixels: its kernel needs pixel-pair covariances; "
                             "diagonal_spatial=True cannot be used with it")
        S, P = len(sp.shape), math.prod(sp.shape)
        dtype = state.nngp.dtype
        qk, ov2, b2 = self.W_query_std * self.W_key_std, (self.W_out_std * self.W_value_std) ** 2, self.b_std**2
        pos = self.pos_emb_type != "NONE"
        kw, pw = 1.0, self.W_pos_emb_std**2
        if self.pos_emb_type == "CONCAT":
            if state.width is None:
                raise ValueError("GlobalSelfAttention with pos_emb_type='CONCAT' weighs inputs and embeddings by their "
                                 "channel counts: give the layer before it an out_dim")
            c_pe = state.width if self.n_chan_pos_emb is None else self.n_chan_pos_emb
            kw, pw = state.width / (state.width + c_pe), pw * c_pe / (state.width + c_pe)
        R = self._positions(sp.shape, dtype)[None, None] if pos else None

        def interp(k):
            return kw * k + pw * R if pos else k

        flat = lambda a: a.reshape(a.shape[:2] + (P, P))
        back = lambda a: a.reshape(a.shape[:2] + sp.shape * 2)
        v1i, v2i, ki, ti = interp(state.var1), interp(state.var2), interp(state.nngp), interp(state.ntk)

        if self.linear_scaling:
            def weights(c):
                c = flat(qk * c)[:, :, :, :]
                if self.mechanism == "SOFTMAX":
                    return jax.nn.softmax(c, axis=-1)
                return {"IDENTITY": c, "ABS": jnp.abs(c), "RELU": jnp.maximum(c, 0)}[self.mechanism]

            g1, g2 = weights(v1i)[:, 0], weights(v2i)[0]  # (t1, P, P), (t2, P, P)

            def weigh(m, spec, ga, gb):
                return back(jnp.einsum(spec, ga, flat(m), gb))

            vals = (ki, ti, v1i, v2i) if self.val_pos_emb else (state.nngp, state.ntk, state.var1, state.var2)
            cross = "apq,abqr,bsr->abps"
            nngp = ov2 * weigh(vals[0], cross, g1, g2) + b2
            ntk = ov2 * weigh(vals[1], cross, g1, g2) + b2 + 2 * (nngp - b2)
            var1 = ov2 * weigh(vals[2], "apq,abqr,asr->abps", g1, g1) + b2  # (t1, 1, ...): x_i with itself
            var2 = ov2 * weigh(vals[3], "bpq,abqr,bsr->abps", g2, g2) + b2  # (1, t2, ...)
        else:
            std2 = (qk**2) * ov2

            def dot(a, b):
                return jnp.sum(flat(a) * flat(b), axis=(-2, -1))[:, :, None, None].reshape(
                    a.shape[:2] + (1,) * (2 * S))

            d12 = dot(ki, ki if self.val_pos_emb else state.nngp)
            d11 = dot(v1i, v1i if self.val_pos_emb else state.var1)
            d22 = dot(v2i, v2i if self.val_pos_emb else state.var2)
            nngp = std2 * d12 * ki + b2
            var1, var2 = std2 * d11 * v1i + b2, std2 * d22 * v2i + b2
            if self.val_pos_emb or not pos:
                t = 2 * dot(ki, ti)
            else:
                t = dot(ki, state.ntk) + dot(state.nngp, ti)
            ntk = std2 * (t * ki + d12 * (ti + 4 * ki)) + b2
        return state.replace(nngp=nngp, ntk=ntk, var1=var1, var2=var2,
                             width=jnp.asarray(self.out_dim, dtype), centered=True)


def _reshape_mask(mask, state: KernelState, spatial: Spatial | None):
    nd = 0 if spatial is None else spatial.ndim
    return mask.reshape(mask.shape[:_leading(state)] + (1,) * nd)



class ToDiagonal(AbstractLayer):
    """Keeps only the same-pixel covariances (full layout -> diagonal layout); inserted by
    :func:`plan` after the last layer that needs pixel pairs."""

    def keeps_layout(self) -> bool:
        return False

    def __call__(self, state: KernelState) -> KernelState:
        sp = state.spatial
        if sp is None or not sp.full:
            return state
        spatial = Spatial(sp.shape, False)
        return _map_all(state, lambda x: pixel_diagonal(x, sp.shape), spatial)


# ------------------------------------------------------------------------------------------
# Planning: the layout of every layer, backwards from the output
# ------------------------------------------------------------------------------------------


def needs_full(layer: AbstractLayer, out_full: bool, forced_diagonal: bool = False) -> bool:
    """Whether ``layer`` needs pixel-pixel covariances at its input to give its output in the
    layout ``out_full``."""
    if isinstance(layer, (Pool, GlobalPool, ImageResize, Attention)):
        return not forced_diagonal
    if isinstance(layer, Flatten):
        return False
    if isinstance(layer, Serial):
        for sub in reversed(layer.layers):
            out_full = needs_full(sub, out_full, forced_diagonal)
        return out_full
    if isinstance(layer, Stack):
        return needs_full(layer.block, out_full, forced_diagonal) or (
            out_full and needs_full(layer.block, True, forced_diagonal))
    if isinstance(layer, (Parallel, Product, Concat)):
        return any(needs_full(b, out_full, forced_diagonal) for b in layer.branches)
    if isinstance(layer, Residual):
        return out_full or needs_full(layer.block, out_full, forced_diagonal)
    return out_full  # Dense, Activation, Conv, LayerNorm, Identity, FullyConnected, ...


def _produces(layer: AbstractLayer, in_full: bool | None) -> bool | None:
    """The layout ``layer`` (as planned) outputs from the layout ``in_full`` (``None``: vectors)."""
    if in_full is None or isinstance(layer, (GlobalPool, Flatten)):
        return None
    if isinstance(layer, ToDiagonal):
        return False
    if isinstance(layer, Serial):
        for sub in layer.layers:
            in_full = _produces(sub, in_full)
        return in_full
    if isinstance(layer, (Parallel, Product, Concat)):
        return _produces(layer.branches[0], in_full)
    if isinstance(layer, Residual):
        return in_full
    if isinstance(layer, Stack):
        return _produces(layer.block, in_full)
    return in_full


def plan(layer: AbstractLayer, in_full: bool | None, out_full: bool, forced_diagonal: bool = False) -> AbstractLayer:
    """``layer`` with :class:`ToDiagonal` inserted wherever a full covariance is no longer needed
    (``in_full``: the input layout, ``None`` for vectors; ``out_full``: the layout asked of the
    output)."""
    if in_full is None:
        return layer
    if isinstance(layer, Serial):
        reqs = [out_full]
        for sub in reversed(layer.layers[1:]):
            reqs.append(needs_full(sub, reqs[-1], forced_diagonal))
        reqs = reqs[::-1]  # reqs[i]: the layout asked of the output of layers[i]
        out, cur = [], in_full
        for sub, req in zip(layer.layers, reqs):
            if cur and not needs_full(sub, req, forced_diagonal):
                out.append(ToDiagonal())  # as early as possible: the rest runs on same-pixel entries
                cur = False
            sub = plan(sub, cur, req, forced_diagonal)
            out.append(sub)
            cur = _produces(sub, cur)
        if cur and not out_full:
            out.append(ToDiagonal())
        return Serial(*out)
    if isinstance(layer, Stack):
        block = plan(layer.block, in_full, in_full, forced_diagonal)
        return _to(Stack(block, layer.depth), in_full, out_full)
    if isinstance(layer, (Parallel, Product, Concat)):
        branches = [_to(plan(b, in_full, out_full, forced_diagonal), in_full, out_full) for b in layer.branches]
        return eqx.tree_at(lambda p: p.branches, layer, tuple(branches))
    if isinstance(layer, Residual):
        inner = _to(plan(layer.block, in_full, out_full, forced_diagonal), in_full, out_full)
        block = eqx.tree_at(lambda r: r.block, layer, inner)
        return block if (not in_full or out_full) else Parallel(ToDiagonal(), inner, weights=layer.weights)
    return layer


def _to(layer: AbstractLayer, in_full: bool | None, out_full: bool) -> AbstractLayer:
    """``layer``, followed by :class:`ToDiagonal` if it would output a full layout where a diagonal
    one is asked."""
    if _produces(layer, in_full) and not out_full:
        return Serial(layer, ToDiagonal())
    return layer


def conv_parity(layer: AbstractLayer) -> int:
    """The number of (transposed) convolutions on the main path of ``layer``, modulo 2:
    neural-tangents returns a full spatial kernel with its spatial axes reversed after an odd
    number of them (its ``is_reversed``); :func:`rmtjax.kernels.kernel` returns the same layout."""
    if isinstance(layer, (Conv, ConvTranspose)):
        return 1
    if isinstance(layer, Serial):
        return sum(conv_parity(sub) for sub in layer.layers) % 2
    if isinstance(layer, Stack):
        return layer.depth * conv_parity(layer.block) % 2
    if isinstance(layer, (Parallel, Product, Concat)):
        return conv_parity(layer.branches[0])
    return 0


_SPATIAL_LAYERS = (Conv, ConvTranspose, Pool, GlobalPool, Flatten, Index, ImageResize, Attention)


def has_spatial_layers(layer) -> bool:
    """Whether ``layer`` contains a layer that acts on pixels (a network for image inputs)."""
    return any(isinstance(leaf, _SPATIAL_LAYERS) for leaf in jax.tree_util.tree_leaves(
        layer, is_leaf=lambda x: isinstance(x, _SPATIAL_LAYERS)))

