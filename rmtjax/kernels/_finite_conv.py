r"""The finite networks (``init_fn``, ``apply_fn``) of the convolutional ``rmtjax.stax`` layers.

Each function returns the pair ``(init_fn, apply_fn)`` of one neural-tangents 0.6.5 layer with
its semantics exactly (Novak et al. 2020, "Neural Tangents: Fast and Easy Infinite Neural
Networks in Python", ICLR; ``neural_tangents/_src/stax/linear.py`` and ``branching.py``):
``init_fn(key, input_shape) -> (output_shape, params)`` and ``apply_fn(params, x, **kwargs)``.
Layout is NT's default, ``batch_axis=0`` and ``channel_axis=-1``: images are ``(n, H, W, C)``,
sequences ``(n, W, C)``. Parameter trees have neural-tangents' shapes, so parameters made by
neural-tangents can be fed in: a convolution's ``(W, b)`` has ``W`` of shape
``filter_shape + (C_in, C_out)`` (``HWIO``) and ``b`` of shape ``(1, ..., 1, C_out)`` (or
``None`` without bias); the other layers have ``()``.

Every ``apply_fn`` checks its input and raises ``ValueError`` naming the layer and the shapes
(e.g. ``NCHW`` data given to an ``NHWC`` convolution: the channel count does not match the
parameters'); every ``init_fn`` returns neural-tangents' output shape.

The infinite-width ``kernel_fn`` of these layers lives in :mod:`rmtjax.kernels` (the facade
:mod:`rmtjax.stax` pairs the two). Only public JAX is used (``jax.lax.conv_general_dilated``,
``jax.lax.conv_transpose``, ``jax.lax.reduce_window``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> init_fn, apply_fn = conv_finite(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1)
    >>> shape, params = init_fn(jax.random.key(0), (2, 5, 5, 3))
    >>> shape, apply_fn(params, jnp.ones((2, 5, 5, 3))).shape
    ((2, 5, 5, 8), (2, 5, 5, 8))
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import choice, flag, static_int

__all__ = [
    "conv_finite",
    "dropout_finite",
    "fan_in_concat_finite",
    "fan_in_prod_finite",
    "flatten_finite",
    "global_pool_finite",
    "global_self_attention_finite",
    "image_resize_finite",
    "index_finite",
    "layer_norm_finite",
    "pool_finite",
]

_PADDINGS = ("SAME", "VALID", "CIRCULAR")


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def _single(x, who: str, what: str):
    if isinstance(x, list):
        raise ValueError(f"{who} got {len(x)} branches ({what}); close them with FanInSum() first, or wrap it in "
                         "parallel(...)")
    return x


def _branches(x, who: str, what: str):
    if not isinstance(x, list):
        raise ValueError(f"{who} needs several branches ({what} a list, one per branch, as FanOut(n) produces); "
                         "got a single input. Put FanOut(n) (or parallel(...)) before it")
    return x


def _ints(v, name: str, n: int | None = None, lo: int = 1) -> tuple[int, ...]:
    """``v`` as a tuple of static integers ``>= lo`` (of length ``n`` if given)."""
    if not isinstance(v, (tuple, list)):
        raise ValueError(f"{name} must be a tuple of integers, got {v!r}")
    out = tuple(static_int(a, name, lo=lo) for a in v)
    if not out:
        raise ValueError(f"{name} must hold at least one integer, got {v!r}")
    if n is not None and len(out) != n:
        raise ValueError(f"{name} must have {n} entries (one per spatial axis, as filter_shape), got {v!r}")
    return out


def _scalar(v, name: str, allow_none: bool = False):
    """A continuous hyperparameter: ``None`` (if allowed), a real number (finite, ``>= 0``), or a
    0-d array (may be traced: checked only when concrete)."""
    if v is None and allow_none:
        return v
    if isinstance(v, (bool, np.bool_)) or not (isinstance(v, numbers.Real) or jnp.ndim(v) == 0 and hasattr(v, "dtype")):
        raise ValueError(f"{name} must be a real scalar{' or None' if allow_none else ''}, got {v!r}")
    try:
        c = float(v)
    except Exception:  # noqa: BLE001 - a tracer: checked by the caller's program, not here
        return v
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {c!r}")
    return v


def _shape(x, who: str, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(isinstance(s, numbers.Integral) for s in x):
        raise ValueError(f"{who}: {what} must be a tuple of integers, got {x!r}")
    return tuple(int(s) for s in x)


def _same_pads(sizes: Sequence[int], window: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """``"SAME"`` padding (XLA's, as ``lax.padtype_to_pads``): output size ``ceil(n / s)``, the
    total padding ``max((ceil(n/s) - 1) s + k - n, 0)`` split with the smaller half first."""
    pads = []
    for n, k, s in zip(sizes, window, strides):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _wrap_pad(x, window: Sequence[int], strides: Sequence[int]):
    """Periodic padding of the spatial axes of ``x`` (``(n, *spatial, C)``) so that a ``"VALID"``
    window of ``window`` with ``strides`` gives the ``"SAME"`` output size (neural-tangents'
    ``_same_pad_for_filter_shape``, mode ``"wrap"``): ``"CIRCULAR"`` padding."""
    pads = [(0, 0)] + _same_pads(x.shape[1:-1], window, strides) + [(0, 0)]
    return jnp.pad(x, pads, mode="wrap")


def _dims(n_spatial: int) -> tuple[str, str, str]:
    sp = "DHW"[-n_spatial:] if n_spatial <= 3 else None
    if sp is None:
        raise ValueError(f"convolutions have 1, 2 or 3 spatial axes, got {n_spatial}")
    return "N" + sp + "C", sp + "IO", "N" + sp + "C"


def _check_rank(shape: tuple[int, ...], n_spatial: int, who: str, what: str) -> None:
    if len(shape) != n_spatial + 2:
        lay = {1: "(batch, width, channels)", 2: "(batch, height, width, channels) (NHWC)",
               3: "(batch, depth, height, width, channels)"}[n_spatial]
        raise ValueError(f"{who}: {what} must be {n_spatial + 2}-d {lay} for a {n_spatial}-d window, got shape "
                         f"{shape}")


def _check_valid(shape: tuple[int, ...], window: tuple[int, ...], who: str, what: str) -> None:
    spatial = shape[1:-1]
    if any(s < k for s, k in zip(spatial, window)):
        raise ValueError(f"{who}: with padding 'VALID' the window {window} must fit in the spatial shape "
                         f"{spatial} of {what} (shape {shape}); use padding 'SAME' or 'CIRCULAR', or a smaller window")


# ------------------------------------------------------------------------------------------
# Convolution
# ------------------------------------------------------------------------------------------


def conv_finite(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    W_std=1.0,
    b_std=None,
    parameterization: str = "ntk",
    transpose: bool = False,
) -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``Conv`` (``transpose=False``) or
    ``ConvTranspose`` (``transpose=True``), channels last.

    ``"ntk"`` parameterization, with :math:`W_{a c' c}, b_c \sim \mathcal N(0, 1)`, :math:`a` the
    filter offset, :math:`k = \prod` ``filter_shape`` and :math:`C_{in}` input channels:

    .. math::
        z_c(p) = \frac{\sigma_w}{\sqrt{C_{in} k}} \sum_{a, c'} W_{a c' c}\, x_{c'}(s p + a - \ell)
                 + \sigma_b b_c ,

    where :math:`s` is the stride and :math:`\ell` the low padding (``"VALID"``: 0; ``"SAME"``:
    zero padding of total :math:`\max((\lceil n/s\rceil - 1)s + k - n, 0)`, the smaller half before;
    ``"CIRCULAR"``: the same amount of periodic padding, then ``"VALID"``, as neural-tangents).
    ``"standard"``: :math:`z = W * x + b` with :math:`W \sim \mathcal N(0, \sigma_w^2/(C_{in} k))`,
    :math:`b \sim \mathcal N(0, \sigma_b^2)` drawn at ``init_fn``. The transpose is
    ``jax.lax.conv_transpose`` (kernel not flipped), with the same scale
    :math:`\sigma_w/\sqrt{C_{in} k}`; its ``"CIRCULAR"`` output is the ``"VALID"`` one folded
    periodically onto the ``"SAME"`` output (NT's ``_same_pad_for_filter_shape_transpose``).

    Args:
        out_chan: output channels, ``>= 1``.
        filter_shape: the window, 1 to 3 positive integers (1-d: inputs ``(n, W, C)``; 2-d:
            ``(n, H, W, C)``).
        strides: positive integers, one per spatial axis (``None``: all 1).
        padding: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"``.
        W_std, b_std: real scalars ``>= 0`` (may be traced); ``b_std=None``: no bias (``b`` is
            ``None`` in the parameters).
        parameterization: ``"ntk"`` or ``"standard"``.
        transpose: ``ConvTranspose`` instead of ``Conv``.

    Returns:
        ``(init_fn, apply_fn)``; parameters ``(W, b)`` with ``W`` of shape
        ``filter_shape + (C_in, out_chan)`` and ``b`` of shape ``(1,) * (ndim - 1) + (out_chan,)``,
        keys split as neural-tangents does (``k1, k2 = split(key)``; ``W = normal(k1)``,
        ``b = normal(k2)``), so the same key gives neural-tangents' parameters.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> init_fn, apply_fn = conv_finite(4, (3,), strides=(2,), padding="CIRCULAR")
        >>> shape, params = init_fn(jax.random.key(1), (2, 7, 3))
        >>> shape, params[0].shape, apply_fn(params, jnp.ones((2, 7, 3))).shape
        ((2, 4, 4), (3, 3, 4), (2, 4, 4))
    """
    name = "ConvTranspose" if flag(transpose, "transpose") else "Conv"
    out_chan = static_int(out_chan, f"{name}: out_chan", lo=1)
    filter_shape = _ints(filter_shape, f"{name}: filter_shape")
    nsp = len(filter_shape)
    if nsp > 3:
        raise ValueError(f"{name}: filter_shape must have 1 to 3 entries (spatial axes), got {filter_shape}")
    strides = (1,) * nsp if strides is None else _ints(strides, f"{name}: strides", nsp)
    padding = choice(padding, f"{name}: padding", _PADDINGS)
    parameterization = choice(parameterization, f"{name}: parameterization", ("ntk", "standard"))
    W_std = _scalar(W_std, f"{name}: W_std")
    b_std = _scalar(b_std, f"{name}: b_std", allow_none=True)
    dn = _dims(nsp)
    standard = parameterization == "standard"
    k = math.prod(filter_shape)

    def raw(x, W, pad):
        if transpose:
            return jax.lax.conv_transpose(x, W, strides, pad, dimension_numbers=dn)
        return jax.lax.conv_general_dilated(x, W, strides, pad, dimension_numbers=dn)

    def out_shape(in_shape, c_in):
        pad = "SAME" if padding == "CIRCULAR" else padding
        x = jax.ShapeDtypeStruct(in_shape, jnp.float32)
        W = jax.ShapeDtypeStruct(filter_shape + (c_in, out_chan), jnp.float32)
        return tuple(jax.eval_shape(lambda a, w: raw(a, w, pad), x, W).shape)

    def init_fn(key, input_shape):
        input_shape = _shape(_single(input_shape, name, "input_shape"), name, "input_shape")
        _check_rank(input_shape, nsp, name, "input_shape")
        if padding == "VALID" and not transpose:
            _check_valid(input_shape, filter_shape, name, "input_shape")
        c_in = input_shape[-1]
        k1, k2 = jax.random.split(key)
        W = jax.random.normal(k1, filter_shape + (c_in, out_chan))
        b = jax.random.normal(k2, (1,) * (nsp + 1) + (out_chan,))
        if b_std is None:
            b = None
        if standard:
            W = W * (W_std / math.sqrt(c_in * k))
            b = None if b is None else b * b_std
        return out_shape(input_shape, c_in), (W, b)

    def apply_fn(params, x, **kwargs):
        x = _single(x, name, "x")
        if not (isinstance(params, (tuple, list)) and len(params) == 2):
            raise ValueError(f"{name}: params must be the pair (W, b) from init_fn, got {type(params).__name__}")
        W, b = params
        shape = tuple(jnp.shape(x))
        _check_rank(shape, nsp, name, "x")
        want = filter_shape + (shape[-1], out_chan)
        if tuple(jnp.shape(W)) != want:
            if tuple(jnp.shape(W))[:nsp] == filter_shape and jnp.ndim(W) == nsp + 2:
                raise ValueError(f"{name}: x of shape {shape} has {shape[-1]} channels (last axis, channels-last "
                                 f"layout) but the parameters expect {jnp.shape(W)[-2]} (W of shape {jnp.shape(W)}, "
                                 "made by init_fn for an input of that many channels); is x channels-first?")
            raise ValueError(f"{name}: W must have shape {want} (filter_shape + (in channels, out_chan)) for x of "
                             f"shape {shape}, got {jnp.shape(W)}")
        if b is not None and tuple(jnp.shape(b)) != (1,) * (nsp + 1) + (out_chan,):
            raise ValueError(f"{name}: b must have shape {(1,) * (nsp + 1) + (out_chan,)} or be None, got "
                             f"{jnp.shape(b)}")
        if padding == "VALID" and not transpose:
            _check_valid(shape, filter_shape, name, "x")
        if padding == "CIRCULAR" and not transpose:
            x = _wrap_pad(x, filter_shape, strides)
        pad = "VALID" if padding == "CIRCULAR" else padding
        out = raw(x, W, pad)
        if padding == "CIRCULAR" and transpose:
            out = _fold_periodic(out, out_shape(shape, shape[-1]))
        if not standard:
            out = (W_std / math.sqrt(shape[-1] * k)) * out
        if b is not None:
            out = out + (b if standard else b_std * b)
        return out

    return init_fn, apply_fn


def _fold_periodic(x, shape: tuple[int, ...]):
    """The transpose of periodic padding: crops the spatial axes of ``x`` to ``shape`` (centred,
    the smaller margin first) and adds to each kept entry every entry congruent to it modulo the
    target size (neural-tangents' ``_same_pad_for_filter_shape_transpose``)."""
    window, dilation = [1], [1]
    for i in range(1, x.ndim - 1):
        window.append(int(np.ceil(x.shape[i] / shape[i])) // 2 * 2 + 1)
        dilation.append(shape[i])
    window.append(1)
    dilation.append(1)
    x = jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, tuple(window), (1,) * x.ndim, "SAME",
                              window_dilation=tuple(dilation))
    idx = [slice(None)]
    for i in range(1, x.ndim - 1):
        lo = (x.shape[i] - shape[i]) // 2
        idx.append(slice(lo, lo + shape[i]))
    return x[tuple(idx) + (slice(None),)]


# ------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------


def pool_finite(
    kind: str,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    normalize_edges: bool = False,
) -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``AvgPool`` (``kind="avg"``) or ``SumPool``
    (``kind="sum"``), channels last.

    .. math::
        y_c(p) = \frac{1}{N(p)} \sum_{a \in \text{window}} x_c(s p + a - \ell)

    with the padding of :func:`conv_finite` (zeros outside for ``"SAME"``, periodic for
    ``"CIRCULAR"``), ``strides`` :math:`s` (``None``: all 1, neural-tangents' default, not the
    window), and :math:`N(p) = 1` for ``"sum"``; for ``"avg"``, :math:`N(p)` is the window size
    :math:`\prod` ``window_shape``, or, with ``normalize_edges=True``, the number of in-image
    pixels of the window (differs only at the edges with ``"SAME"``; ``"CIRCULAR"`` always
    divides by the window size, as neural-tangents).

    Example:
        >>> import jax.numpy as jnp
        >>> init_fn, apply_fn = pool_finite("avg", (2, 2), (2, 2))
        >>> init_fn(None, (1, 4, 4, 3))[0], apply_fn((), jnp.ones((1, 4, 4, 3))).shape
        ((1, 2, 2, 3), (1, 2, 2, 3))
    """
    kind = choice(kind, "pool: kind", ("avg", "sum"))
    name = "AvgPool" if kind == "avg" else "SumPool"
    window_shape = _ints(window_shape, f"{name}: window_shape")
    nsp = len(window_shape)
    strides = (1,) * nsp if strides is None else _ints(strides, f"{name}: strides", nsp)
    padding = choice(padding, f"{name}: padding", _PADDINGS)
    normalize_edges = flag(normalize_edges, f"{name}: normalize_edges")
    win = (1,) + window_shape + (1,)
    st = (1,) + strides + (1,)

    def out_shape(shape):
        pad = "SAME" if padding == "CIRCULAR" else padding
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        return tuple(jax.eval_shape(lambda a: jax.lax.reduce_window(a, 0.0, jax.lax.add, win, st, pad), x).shape)

    def init_fn(key, input_shape):
        input_shape = _shape(_single(input_shape, name, "input_shape"), name, "input_shape")
        _check_rank(input_shape, nsp, name, "input_shape")
        if padding == "VALID":
            _check_valid(input_shape, window_shape, name, "input_shape")
        return out_shape(input_shape), ()

    def apply_fn(params, x, **kwargs):
        x = _single(x, name, "x")
        shape = tuple(jnp.shape(x))
        _check_rank(shape, nsp, name, "x")
        if padding == "VALID":
            _check_valid(shape, window_shape, name, "x")
        pad = padding
        if padding == "CIRCULAR":
            x, pad = _wrap_pad(x, window_shape, strides), "VALID"
        zero = np.zeros((), x.dtype)
        out = jax.lax.reduce_window(x, zero, jax.lax.add, win, st, pad)
        if kind == "sum":
            return out
        if normalize_edges and padding == "SAME":
            ones = jnp.ones((1,) + shape[1:-1] + (1,), x.dtype)
            return out / jax.lax.reduce_window(ones, zero, jax.lax.add, win, st, pad)
        return out / math.prod(window_shape)

    return init_fn, apply_fn


def global_pool_finite(kind: str) -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``GlobalAvgPool`` (``kind="avg"``:
    :math:`y_c = \frac{1}{|P|}\sum_{p} x_c(p)`) or ``GlobalSumPool`` (``kind="sum"``:
    :math:`y_c = \sum_p x_c(p)`): the spatial axes (all but the first and the last) are reduced
    and removed, ``(n, ..., C) -> (n, C)``.

    Example:
        >>> import jax.numpy as jnp
        >>> init_fn, apply_fn = global_pool_finite("avg")
        >>> init_fn(None, (2, 4, 4, 3))[0], apply_fn((), jnp.ones((2, 4, 4, 3))).shape
        ((2, 3), (2, 3))
    """
    kind = choice(kind, "global pool: kind", ("avg", "sum"))
    name = "GlobalAvgPool" if kind == "avg" else "GlobalSumPool"

    def init_fn(key, input_shape):
        input_shape = _shape(_single(input_shape, name, "input_shape"), name, "input_shape")
        if len(input_shape) < 2:
            raise ValueError(f"{name}: input_shape must be at least 2-d (batch, ..., channels), got {input_shape}")
        return (input_shape[0], input_shape[-1]), ()

    def apply_fn(params, x, **kwargs):
        x = _single(x, name, "x")
        if jnp.ndim(x) < 2:
            raise ValueError(f"{name}: x must be at least 2-d (batch, ..., channels), got shape {jnp.shape(x)}")
        axes = tuple(range(1, jnp.ndim(x) - 1))
        return jnp.mean(x, axes) if kind == "avg" else jnp.sum(x, axes)

    return init_fn, apply_fn


# ------------------------------------------------------------------------------------------
# Reshaping and normalisation
# ------------------------------------------------------------------------------------------


def flatten_finite() -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``Flatten()``: ``(n, d_1, ..., d_k) ->
    (n, d_1 \cdots d_k)`` in row-major order (channels fastest).

    Example:
        >>> import jax.numpy as jnp
        >>> init_fn, apply_fn = flatten_finite()
        >>> init_fn(None, (2, 4, 4, 3))[0], apply_fn((), jnp.ones((2, 4, 4, 3))).shape
        ((2, 48), (2, 48))
    """

    def init_fn(key, input_shape):
        input_shape = _shape(_single(input_shape, "Flatten", "input_shape"), "Flatten", "input_shape")
        if len(input_shape) < 1:
            raise ValueError(f"Flatten: input_shape must have a batch axis, got {input_shape}")
        return (input_shape[0], math.prod(input_shape[1:])), ()

    def apply_fn(params, x, **kwargs):
        x = _single(x, "Flatten", "x")
        if jnp.ndim(x) < 1:
            raise ValueError(f"Flatten: x must have a batch axis, got shape {jnp.shape(x)}")
        return jnp.reshape(x, (jnp.shape(x)[0], -1))

    return init_fn, apply_fn


def _axes(axis, ndim: int, who: str) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for a in axes:
        a = static_int(a, f"{who}: axis")
        if not -ndim <= a < ndim:
            raise ValueError(f"{who}: axis {a} is out of range for an input of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{who}: axis has repeated entries: {axis!r}")
    return tuple(sorted(out))


def layer_norm_finite(axis=-1, eps: float = 1e-12) -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``LayerNorm(axis, eps)``:

    .. math::
        y = \frac{x - \bar x}{\sqrt{\epsilon + \overline{(x - \bar x)^2}}},

    means over ``axis`` (an integer or a tuple of them; the kernel side needs the channel axis
    among them).

    Example:
        >>> import jax.numpy as jnp
        >>> init_fn, apply_fn = layer_norm_finite(axis=(1, 2, 3))
        >>> apply_fn((), jnp.arange(24.0).reshape(1, 2, 3, 4)).std() > 0.99
        Array(True, dtype=bool)
    """
    eps = _scalar(eps, "LayerNorm: eps")
    if not isinstance(axis, numbers.Integral) and (not isinstance(axis, (tuple, list)) or not axis):
        raise ValueError(f"LayerNorm: axis must be an integer or a non-empty tuple of integers, got {axis!r}")

    def init_fn(key, input_shape):
        input_shape = _shape(_single(input_shape, "LayerNorm", "input_shape"), "LayerNorm", "input_shape")
        _axes(axis, len(input_shape), "LayerNorm")
        return input_shape, ()

    def apply_fn(params, x, **kwargs):
        x = _single(x, "LayerNorm", "x")
        axes = _axes(axis, jnp.ndim(x), "LayerNorm")
        mean = jnp.mean(x, axes, keepdims=True)
        var = jnp.var(x, axes, keepdims=True)
        return (x - mean) / jnp.sqrt(eps + var)

    return init_fn, apply_fn


def dropout_finite(rate, mode: str = "train") -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``Dropout(rate, mode)``; ``rate`` is the
    *keep* probability, in :math:`(0, 1]`. ``"train"``: :math:`y = m \odot x / \text{rate}` with
    :math:`m \sim \text{Bernoulli(rate)}` drawn by ``jax.random.bernoulli(rng, rate, x.shape)``;
    ``"test"``: :math:`y = x`. As neural-tangents (and JAX's example stax library),
    ``apply_fn(params, x, rng=key)`` needs the key in both modes (``ValueError`` without it).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> init_fn, apply_fn = dropout_finite(0.5)
        >>> y = apply_fn((), jnp.ones((4, 100)), rng=jax.random.key(0))
        >>> bool(jnp.all((y == 0) | (y == 2)))
        True
    """
    mode = choice(mode, "Dropout: mode", ("train", "test"))
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real) or not 0 < rate <= 1:
        raise ValueError(f"Dropout: rate (the keep probability) must be a real number in (0, 1], got {rate!r}")

    def init_fn(key, input_shape):
        return _single(input_shape, "Dropout", "input_shape"), ()

    def apply_fn(params, x, **kwargs):
        x = _single(x, "Dropout", "x")
        rng = kwargs.get("rng", None)
        if rng is None:
            raise ValueError("Dropout: apply_fn needs a PRNG key: call apply_fn(params, x, rng=key) "
                             "(neural-tangents' convention, in 'train' and 'test' mode)")
        if mode == "test":
            return x
        keep = jax.random.bernoulli(rng, rate, jnp.shape(x))
        return jnp.where(keep, x / rate, 0)

    return init_fn, apply_fn


# ------------------------------------------------------------------------------------------
# Fan-in
# ------------------------------------------------------------------------------------------


def fan_in_concat_finite(axis: int = -1) -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``FanInConcat(axis)``: the branches
    (a list, as ``FanOut`` makes) concatenated along ``axis``; all other axes must agree.

    Example:
        >>> import jax.numpy as jnp
        >>> init_fn, apply_fn = fan_in_concat_finite()
        >>> init_fn(None, [(2, 3), (2, 5)])[0], apply_fn((), [jnp.ones((2, 3)), jnp.ones((2, 5))]).shape
        ((2, 8), (2, 8))
    """
    axis = static_int(axis, "FanInConcat: axis")

    def check(shapes, what):
        shapes = [tuple(s) for s in _branches(shapes, "FanInConcat", what)]
        nd = len(shapes[0])
        if any(len(s) != nd for s in shapes) or not -nd <= axis < nd:
            raise ValueError(f"FanInConcat: branch shapes {shapes} must have one rank with axis {axis} in range")
        ax = axis % nd
        rest = {s[:ax] + s[ax + 1:] for s in shapes}
        if len(rest) != 1:
            raise ValueError(f"FanInConcat: branch shapes {shapes} must agree except along axis {axis}")
        return shapes, ax

    def init_fn(key, input_shape):
        shapes, ax = check(input_shape, "input_shape must be")
        s0 = shapes[0]
        return s0[:ax] + (sum(s[ax] for s in shapes),) + s0[ax + 1:], ()

    def apply_fn(params, xs, **kwargs):
        xs = _branches(xs, "FanInConcat", "x must be")
        check([jnp.shape(x) for x in xs], "x must be")
        return jnp.concatenate(xs, axis)

    return init_fn, apply_fn


def fan_in_prod_finite() -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``FanInProd()``: the elementwise product
    :math:`y = \prod_i x^{(i)}` of the branches (a list of arrays of one shape).

    Example:
        >>> import jax.numpy as jnp
        >>> init_fn, apply_fn = fan_in_prod_finite()
        >>> apply_fn((), [jnp.full((2,), 2.0), jnp.full((2,), 3.0)]).tolist()
        [6.0, 6.0]
    """

    def init_fn(key, input_shape):
        shapes = [tuple(s) for s in _branches(input_shape, "FanInProd", "input_shape must be")]
        if len(set(shapes)) != 1:
            raise ValueError(f"FanInProd: branch shapes differ: {shapes}")
        return shapes[0], ()

    def apply_fn(params, xs, **kwargs):
        xs = _branches(xs, "FanInProd", "x must be")
        if len({tuple(jnp.shape(x)) for x in xs}) != 1:
            raise ValueError(f"FanInProd: branch shapes differ: {[tuple(jnp.shape(x)) for x in xs]}")
        return functools.reduce(jnp.multiply, xs)

    return init_fn, apply_fn


# ------------------------------------------------------------------------------------------
# Resizing and indexing
# ------------------------------------------------------------------------------------------


def image_resize_finite(shape: Sequence[int], method, antialias: bool = True,
                        precision=jax.lax.Precision.HIGHEST) -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``ImageResize``: ``jax.image.resize`` to
    ``shape`` (all axes, batch and channels included), where an entry ``-1`` keeps that axis.

    Example:
        >>> import jax.numpy as jnp
        >>> init_fn, apply_fn = image_resize_finite((-1, 8, 8, -1), "linear")
        >>> init_fn(None, (2, 4, 4, 3))[0], apply_fn((), jnp.ones((2, 4, 4, 3))).shape
        ((2, 8, 8, 3), (2, 8, 8, 3))
    """
    shape = _ints(shape, "ImageResize: shape", lo=-1)
    if 0 in shape:
        raise ValueError(f"ImageResize: shape entries must be positive or -1, got {shape}")
    antialias = flag(antialias, "ImageResize: antialias")

    def new_shape(s, who):
        if len(s) != len(shape):
            raise ValueError(f"ImageResize: {who} of shape {tuple(s)} must have {len(shape)} axes, as shape {shape}")
        return tuple(int(a) if b == -1 else b for a, b in zip(s, shape))

    def init_fn(key, input_shape):
        input_shape = _shape(_single(input_shape, "ImageResize", "input_shape"), "ImageResize", "input_shape")
        return new_shape(input_shape, "input_shape"), ()

    def apply_fn(params, x, **kwargs):
        x = _single(x, "ImageResize", "x")
        return jax.image.resize(x, new_shape(jnp.shape(x), "x"), method=method, antialias=antialias,
                                precision=precision)

    return init_fn, apply_fn


def index_finite(idx) -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``Index(idx)``: ``y = x[idx]`` (``idx`` as
    ``stax.Slice[...]`` makes it: slices, integers, ``...``).

    Example:
        >>> import jax.numpy as jnp
        >>> init_fn, apply_fn = index_finite((slice(None), slice(0, 2), 0))
        >>> init_fn(None, (2, 4, 4, 3))[0], apply_fn((), jnp.ones((2, 4, 4, 3))).shape
        ((2, 2, 3), (2, 2, 3))
    """

    def out_shape(s, who):
        try:
            return tuple(jax.eval_shape(lambda a: a[idx], jax.ShapeDtypeStruct(tuple(s), jnp.float32)).shape)
        except (IndexError, TypeError) as err:
            raise ValueError(f"Index: idx {idx!r} does not index {who} of shape {tuple(s)}: {err}") from None

    def init_fn(key, input_shape):
        input_shape = _shape(_single(input_shape, "Index", "input_shape"), "Index", "input_shape")
        return out_shape(input_shape, "input_shape"), ()

    def apply_fn(params, x, **kwargs):
        x = _single(x, "Index", "x")
        out_shape(jnp.shape(x), "x")
        return x[idx]

    return init_fn, apply_fn


# ------------------------------------------------------------------------------------------
# Self-attention
# ------------------------------------------------------------------------------------------

_ATTENTION = {"SOFTMAX": jax.nn.softmax, "IDENTITY": lambda g: g, "ABS": jnp.abs,
              "RELU": lambda g: jnp.maximum(g, 0.0)}


def global_self_attention_finite(
    n_chan_out: int,
    n_chan_key: int,
    n_chan_val: int,
    n_heads: int,
    linear_scaling: bool = True,
    W_key_std=1.0,
    W_value_std=1.0,
    W_query_std=1.0,
    W_out_std=1.0,
    b_std=None,
    attention_mechanism: str = "SOFTMAX",
    pos_emb_type: str = "NONE",
    pos_emb_p_norm: float = 2,
    pos_emb_decay_fn: Callable | None = None,
    n_chan_pos_emb: int | None = None,
    W_pos_emb_std=1.0,
    val_pos_emb: bool = False,
) -> tuple[Callable, Callable]:
    r"""``init_fn``, ``apply_fn`` of neural-tangents' ``GlobalSelfAttention`` (Hron et al. 2020,
    "Infinite attention: NNGP and NTK for deep attention networks", ICML), channels last, over
    all spatial positions :math:`P` of ``(n, ..., C)`` inputs.

    Per head :math:`h`, with keys :math:`K_h = x W^K_h`, values :math:`V_h = x W^V_h`, queries
    :math:`Q_h = x W^Q_h` (``linear_scaling=True``: :math:`Q_h = K_h`, tied) and all weights
    :math:`\mathcal N(0, 1)`:

    .. math::
        G_h = \zeta\Big(\frac{\sigma_Q \sigma_K}{C\, d_k^{\,s}} Q_h K_h^\top\Big), \qquad
        f = \frac{\sigma_O \sigma_V}{\sqrt{d_v H C_v}} [G_1 V_1, \dots, G_H V_H]\, W^O + \sigma_b b,

    :math:`s = 1` (``linear_scaling``) or :math:`1/2`, :math:`\zeta` the ``attention_mechanism``
    (``"SOFTMAX"`` over keys, ``"IDENTITY"``, ``"ABS"``, ``"RELU"``), :math:`C` the key inputs'
    channels and :math:`C_v` the value inputs'; the heads are concatenated value-channel-major
    (column :math:`v H + h`), as neural-tangents. Positional embeddings :math:`E \sim \mathcal N(0, 1)`
    of shape ``(1, ..., n_chan_pos_emb)``, times ``W_pos_emb_std`` (and, with a
    ``pos_emb_decay_fn``, correlated across positions by the Cholesky factor of
    :math:`R_{pp'} = \text{decay}(\sum_a |p_a - p'_a|^{p})`), are added (``"SUM"``) or
    concatenated (``"CONCAT"``) to the keys' inputs, and to the values' only with ``val_pos_emb``.

    Parameters (neural-tangents' tree): ``(W^Q or None, W^K, W^V, W^O, b or None, E or None)``
    with ``W^{Q,K}`` of shape ``(n_heads, C, n_chan_key)``, ``W^V`` ``(n_heads, C_v,
    n_chan_val)``, ``W^O`` ``(n_chan_val * n_heads, n_chan_out)``, ``b`` ``(1, ..., n_chan_out)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> init_fn, apply_fn = global_self_attention_finite(6, 4, 5, 2)
        >>> shape, params = init_fn(jax.random.key(0), (2, 3, 3, 7))
        >>> shape, apply_fn(params, jnp.ones((2, 3, 3, 7))).shape
        ((2, 3, 3, 6), (2, 3, 3, 6))
    """
    name = "GlobalSelfAttention"
    n_chan_out = static_int(n_chan_out, f"{name}: n_chan_out", lo=1)
    n_chan_key = static_int(n_chan_key, f"{name}: n_chan_key", lo=1)
    n_chan_val = static_int(n_chan_val, f"{name}: n_chan_val", lo=1)
    n_heads = static_int(n_heads, f"{name}: n_heads", lo=1)
    linear_scaling = flag(linear_scaling, f"{name}: linear_scaling")
    val_pos_emb = flag(val_pos_emb, f"{name}: val_pos_emb")
    W_key_std, W_value_std, W_query_std, W_out_std, W_pos_emb_std = (
        _scalar(v, f"{name}: {n}") for v, n in ((W_key_std, "W_key_std"), (W_value_std, "W_value_std"),
                                                (W_query_std, "W_query_std"), (W_out_std, "W_out_std"),
                                                (W_pos_emb_std, "W_pos_emb_std")))
    b_std = _scalar(b_std, f"{name}: b_std", allow_none=True)
    fn = _ATTENTION[choice(attention_mechanism, f"{name}: attention_mechanism", tuple(_ATTENTION))]
    pos_emb_type = choice(pos_emb_type, f"{name}: pos_emb_type", ("NONE", "SUM", "CONCAT"))
    if n_chan_pos_emb is not None:
        n_chan_pos_emb = static_int(n_chan_pos_emb, f"{name}: n_chan_pos_emb", lo=1)
    if pos_emb_decay_fn is not None and not callable(pos_emb_decay_fn):
        raise ValueError(f"{name}: pos_emb_decay_fn must be None or callable, got {pos_emb_decay_fn!r}")

    def chans(c_in):
        """(key input channels, value input channels, positional-embedding channels)."""
        c_pe = c_in if n_chan_pos_emb is None else n_chan_pos_emb
        if pos_emb_type == "CONCAT":
            return c_in + c_pe, c_in + c_pe if val_pos_emb else c_in, c_pe
        return c_in, c_in, c_pe

    def init_fn(key, input_shape):
        input_shape = _shape(_single(input_shape, name, "input_shape"), name, "input_shape")
        if len(input_shape) < 2:
            raise ValueError(f"{name}: input_shape must be at least 2-d (batch, ..., channels), got {input_shape}")
        c_keys, c_vals, c_pe = chans(input_shape[-1])
        if pos_emb_type == "SUM" and c_pe != input_shape[-1]:
            raise ValueError(f"{name}: with pos_emb_type 'SUM', n_chan_pos_emb ({c_pe}) must equal the input "
                             f"channels ({input_shape[-1]})")
        k_q, k_k, k_v, k_o, k_b, k_pe = jax.random.split(key, 6)
        pos_emb = None
        if pos_emb_type != "NONE":
            pos_emb = jax.random.normal(k_pe, (1,) + input_shape[1:-1] + (c_pe,))
        W_k = jax.random.normal(k_k, (n_heads, c_keys, n_chan_key))
        W_v = jax.random.normal(k_v, (n_heads, c_vals, n_chan_val))
        W_o = jax.random.normal(k_o, (n_chan_val * n_heads, n_chan_out))
        b = None if b_std is None else jax.random.normal(k_b, (1,) * (len(input_shape) - 1) + (n_chan_out,))
        W_q = None if linear_scaling else jax.random.normal(k_q, (n_heads, c_keys, n_chan_key))
        return input_shape[:-1] + (n_chan_out,), (W_q, W_k, W_v, W_o, b, pos_emb)

    def apply_fn(params, x, **kwargs):
        x = _single(x, name, "x")
        if not (isinstance(params, (tuple, list)) and len(params) == 6):
            raise ValueError(f"{name}: params must be the 6-tuple (W_query, W_key, W_value, W_out, b, pos_emb) "
                             "from init_fn")
        W_q, W_k, W_v, W_o, b, pos_emb = params
        shape = tuple(jnp.shape(x))
        if len(shape) < 2:
            raise ValueError(f"{name}: x must be at least 2-d (batch, ..., channels), got shape {shape}")
        c_keys, _, c_pe = chans(shape[-1])
        if tuple(jnp.shape(W_k)) != (n_heads, c_keys, n_chan_key):
            raise ValueError(f"{name}: x of shape {shape} (channels last) does not match the key weights of shape "
                             f"{tuple(jnp.shape(W_k))} (expected {(n_heads, c_keys, n_chan_key)}); is x channels-first?")
        n, spatial = shape[0], shape[1:-1]
        x_val = None
        if pos_emb is not None:
            if tuple(jnp.shape(pos_emb)) != (1,) + spatial + (c_pe,):
                raise ValueError(f"{name}: the positional embeddings of shape {tuple(jnp.shape(pos_emb))} do not match "
                                 f"x of shape {shape}")
            if pos_emb_decay_fn is not None:
                pos_emb = jnp.tensordot(_pos_emb_cholesky(spatial, pos_emb_p_norm, pos_emb_decay_fn, pos_emb.dtype),
                                        pos_emb[0], (tuple(range(len(spatial), 2 * len(spatial))),
                                                     tuple(range(len(spatial)))))[None]
            pos_emb = W_pos_emb_std * pos_emb
            if pos_emb_type == "SUM":
                x_val = None if val_pos_emb else x
                x = x + pos_emb
            else:
                x_val = None if val_pos_emb else x
                x = jnp.concatenate([x, jnp.broadcast_to(pos_emb, (n,) + spatial + (c_pe,))], axis=-1)
        x = x.reshape(n, -1, x.shape[-1])
        x_val = x if x_val is None else x_val.reshape(n, -1, x_val.shape[-1])

        def dot(W, inputs):  # (n, P, C) x (h, C, k) -> (h, n, P, k)
            return jnp.moveaxis(jnp.dot(inputs, W), 2, 0)

        values = dot(W_v, x_val)
        keys = dot(W_k, x)
        queries = keys if linear_scaling else dot(W_q, x)
        norm = x.shape[-1] * (n_chan_key if linear_scaling else math.sqrt(n_chan_key))
        G = fn(W_query_std * W_key_std / norm * jnp.matmul(queries, jnp.swapaxes(keys, -1, -2)))
        heads = jnp.moveaxis(jnp.matmul(G, values), 0, -1)  # (n, P, d_v, h)
        heads = heads.reshape(heads.shape[:-2] + (-1,))
        out = W_out_std * W_value_std / math.sqrt(n_chan_val * n_heads * x_val.shape[-1]) * (heads @ W_o)
        out = out.reshape((n,) + spatial + (n_chan_out,))
        return out if b is None else out + b_std * b

    return init_fn, apply_fn


def _pos_emb_cholesky(spatial, p_norm, decay_fn, dtype):
    """The Cholesky factor ``L`` (shape ``spatial * 2``) of the positional covariance
    :math:`R_{pp'} = \\text{decay}(\\sum_a |p_a - p'_a|^{p})` over the flattened positions."""
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in spatial), indexing="ij"), -1).reshape(-1, len(spatial))
    dist = np.sum(np.abs(grid[:, None, :] - grid[None, :, :]) ** p_norm, axis=-1)
    R = jnp.asarray(decay_fn(jnp.asarray(dist, dtype)), dtype)
    return jnp.linalg.cholesky(R).reshape(tuple(spatial) * 2)
