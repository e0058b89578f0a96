"""The finite networks of the convolutional stax layers (rmtjax/kernels/_finite_conv.py).

1. Each ``apply_fn`` against an explicit NumPy loop over pixels and window offsets on tiny
   inputs (float64, to 1e-12), every padding, strides, 1-d and 2-d; ``init_fn`` shapes; the
   ``ValueError`` checks.
2. neural-tangents 0.6.5 itself: its finite outputs with its own parameters
   (``tests/data/nt_conv_golden.{npz,json}``, written by
   ``benchmarks/reference/make_conv_golden.py``); skipped where those files are absent.
3. Monte-Carlo: the NNGP (and NTK) of many random finite networks built by ``rmtjax.stax`` against
   its ``kernel_fn``, with tolerances from the measured standard error.
"""

import importlib.util
import itertools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from rmtjax.kernels._finite_conv import (
    conv_finite,
    dropout_finite,
    fan_in_concat_finite,
    fan_in_prod_finite,
    flatten_finite,
    global_pool_finite,
    global_self_attention_finite,
    image_resize_finite,
    index_finite,
    layer_norm_finite,
    pool_finite,
)

# ------------------------------------------------------------------------------------------
# 1. Loop references
# ------------------------------------------------------------------------------------------


def _pads(sizes, window, strides, padding):
    """Low padding and output size per spatial axis (XLA's SAME: output ceil(n/s), the total
    padding split with the smaller half first)."""
    lo, out = [], []
    for n, k, s in zip(sizes, window, strides):
        if padding == "VALID":
            lo.append(0)
            out.append((n - k) // s + 1)
        else:
            o = -(-n // s)
            lo.append(max((o - 1) * s + k - n, 0) // 2)
            out.append(o)
    return lo, out


def _taps(x, p, window, strides, padding):
    """The input pixels the window at output position ``p`` reads: a list of (offset, value over
    (batch, channels) or None for zero padding)."""
    sizes = x.shape[1:-1]
    lo, _ = _pads(sizes, window, strides, padding)
    taps = []
    for a in itertools.product(*(range(k) for k in window)):
        q = [s * pi + ai - li for pi, ai, s, li in zip(p, a, strides, lo)]
        if padding == "CIRCULAR":
            q = [qi % n for qi, n in zip(q, sizes)]
        elif any(qi < 0 or qi >= n for qi, n in zip(q, sizes)):
            taps.append((a, None))
            continue
        taps.append((a, x[(slice(None),) + tuple(q) + (slice(None),)]))
    return taps


def _conv_ref(x, W, b, strides, padding, W_std, b_std, parameterization="ntk"):
    window = W.shape[:-2]
    c_in, c_out = W.shape[-2:]
    _, out = _pads(x.shape[1:-1], window, strides, padding)
    y = np.zeros((x.shape[0],) + tuple(out) + (c_out,))
    scale = W_std / math.sqrt(c_in * math.prod(window)) if parameterization == "ntk" else 1.0
    for p in itertools.product(*(range(o) for o in out)):
        acc = np.zeros((x.shape[0], c_out))
        for a, v in _taps(x, p, window, strides, padding):
            if v is not None:
                acc += v @ W[a]
        y[(slice(None),) + p] = scale * acc
    if b is not None:
        y += (b_std if parameterization == "ntk" else 1.0) * b.reshape(-1)
    return y


def _conv_transpose_pads(k, s, padding):
    """lax.conv_transpose's padding of the stride-dilated input (transpose_kernel=False)."""
    if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else -(-total // 2)
    else:
        total = k + s - 2 + max(k - s, 0)
        lo = k - 1
    return lo, total - lo


def _conv_transpose_ref(x, W, b, strides, padding, W_std, b_std):
    """Scatter form: input pixel i with filter offset a lands on o = s i + lo - a."""
    window = W.shape[:-2]
    c_in, c_out = W.shape[-2:]
    sizes = x.shape[1:-1]
    pad = "VALID" if padding == "CIRCULAR" else padding
    lo, out = [], []
    for n, k, s in zip(sizes, window, strides):
        l, h = _conv_transpose_pads(k, s, pad)
        lo.append(l)
        out.append((n - 1) * s + 1 + l + h - k + 1)
    y = np.zeros((x.shape[0],) + tuple(out) + (c_out,))
    for i in itertools.product(*(range(n) for n in sizes)):
        for a in itertools.product(*(range(k) for k in window)):
            o = tuple(s * ii + l - ai for ii, ai, s, l in zip(i, a, strides, lo))
            if all(0 <= oi < n for oi, n in zip(o, out)):
                y[(slice(None),) + o] += x[(slice(None),) + i] @ W[a]
    if padding == "CIRCULAR":  # fold periodically onto the SAME output size, centred
        target = [n * s for n, s in zip(sizes, strides)]
        folded = np.zeros((x.shape[0],) + tuple(target) + (c_out,))
        off = [(L - T) // 2 for L, T in zip(out, target)]
        for j in itertools.product(*(range(L) for L in out)):
            t = tuple((ji - oi) % T for ji, oi, T in zip(j, off, target))
            folded[(slice(None),) + t] += y[(slice(None),) + j]
        y = folded
    y *= W_std / math.sqrt(c_in * math.prod(window))
    if b is not None:
        y += b_std * b.reshape(-1)
    return y


def _pool_ref(x, window, strides, padding, kind, normalize_edges):
    _, out = _pads(x.shape[1:-1], window, strides, padding)
    y = np.zeros((x.shape[0],) + tuple(out) + (x.shape[-1],))
    for p in itertools.product(*(range(o) for o in out)):
        taps = [v for _, v in _taps(x, p, window, strides, padding) if v is not None]
        total = sum(taps)
        if kind == "avg":
            total = total / (len(taps) if normalize_edges and padding == "SAME" else math.prod(window))
        y[(slice(None),) + p] = total
    return y


_CONV_CASES = [
    # (spatial shape, filter, strides, padding)
    ((7,), (3,), (1,), "VALID"), ((7,), (3,), (2,), "SAME"), ((6,), (4,), (3,), "CIRCULAR"),
    ((5,), (5,), (1,), "SAME"), ((4,), (6,), (1,), "CIRCULAR"),
    ((5, 6), (3, 3), (1, 1), "SAME"), ((5, 6), (3, 2), (2, 1), "VALID"), ((5, 6), (3, 3), (2, 2), "CIRCULAR"),
    ((4, 5), (2, 3), (1, 2), "SAME"), ((3, 3), (5, 5), (1, 1), "CIRCULAR"),
]


@pytest.mark.parametrize("sizes,window,strides,padding", _CONV_CASES)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_conv_against_loops(sizes, window, strides, padding, parameterization):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2,) + sizes + (3,))
    init_fn, apply_fn = conv_finite(4, window, strides, padding, 1.3, 0.4, parameterization)
    shape, (W, b) = init_fn(jax.random.key(1), x.shape)
    y = apply_fn((W, b), jnp.asarray(x))
    ref = _conv_ref(x, np.asarray(W), np.asarray(b), strides, padding, 1.3, 0.4, parameterization)
    assert y.shape == ref.shape == shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)
    if parameterization == "standard":  # the same network: init scaled by W_std / sqrt(fan in)
        ntk_init, ntk_apply = conv_finite(4, window, strides, padding, 1.3, 0.4, "ntk")
        _, p_ntk = ntk_init(jax.random.key(1), x.shape)
        np.testing.assert_allclose(ntk_apply(p_ntk, jnp.asarray(x)), y, rtol=0, atol=1e-12)


def test_conv_without_bias_and_default_strides():
    x = np.random.default_rng(1).standard_normal((3, 6, 2))
    init_fn, apply_fn = conv_finite(5, (2,), padding="SAME", W_std=0.7)
    shape, (W, b) = init_fn(jax.random.key(2), x.shape)
    assert b is None and W.shape == (2, 2, 5) and shape == (3, 6, 5)
    np.testing.assert_allclose(apply_fn((W, b), x), _conv_ref(x, np.asarray(W), None, (1,), "SAME", 0.7, None),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("sizes,window,strides,padding", [
    ((4,), (3,), (2,), "VALID"), ((4,), (3,), (2,), "SAME"), ((3,), (3,), (2,), "CIRCULAR"),
    ((5,), (2,), (3,), "SAME"), ((5,), (2,), (3,), "VALID"), ((3,), (4,), (1,), "CIRCULAR"),
    ((3, 4), (3, 2), (2, 1), "SAME"), ((3, 2), (2, 3), (1, 2), "VALID"), ((3, 3), (3, 3), (2, 2), "CIRCULAR"),
])
def test_conv_transpose_against_loops(sizes, window, strides, padding):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2,) + sizes + (3,))
    init_fn, apply_fn = conv_finite(2, window, strides, padding, 1.1, 0.3, transpose=True)
    shape, (W, b) = init_fn(jax.random.key(3), x.shape)
    y = apply_fn((W, b), jnp.asarray(x))
    ref = _conv_transpose_ref(x, np.asarray(W), np.asarray(b), strides, padding, 1.1, 0.3)
    assert y.shape == ref.shape == shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)


_POOL_CASES = [
    ((7,), (3,), (1,), "VALID"), ((7,), (3,), (2,), "SAME"), ((6,), (4,), (3,), "CIRCULAR"),
    ((5, 6), (3, 3), (1, 1), "SAME"), ((5, 6), (2, 2), (2, 2), "VALID"), ((5, 6), (3, 2), (2, 2), "CIRCULAR"),
    ((4, 5), (2, 3), (1, 2), "SAME"), ((4, 4), (4, 4), (4, 4), "VALID"),
]


@pytest.mark.parametrize("sizes,window,strides,padding", _POOL_CASES)
@pytest.mark.parametrize("kind,normalize_edges", [("avg", False), ("avg", True), ("sum", False)])
def test_pool_against_loops(sizes, window, strides, padding, kind, normalize_edges):
    x = np.random.default_rng(3).standard_normal((2,) + sizes + (3,))
    init_fn, apply_fn = pool_finite(kind, window, strides, padding, normalize_edges)
    shape, params = init_fn(None, x.shape)
    y = apply_fn(params, jnp.asarray(x))
    ref = _pool_ref(x, window, strides, padding, kind, normalize_edges)
    assert params == () and y.shape == ref.shape == shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)


def test_pool_default_strides_are_one():
    x = np.random.default_rng(4).standard_normal((1, 5, 5, 2))
    init_fn, apply_fn = pool_finite("sum", (2, 2))
    assert init_fn(None, x.shape)[0] == (1, 4, 4, 2)
    np.testing.assert_allclose(apply_fn((), x), _pool_ref(x, (2, 2), (1, 1), "VALID", "sum", False), atol=1e-12)


@pytest.mark.parametrize("kind", ["avg", "sum"])
def test_global_pool_flatten_layer_norm(kind):
    x = np.random.default_rng(5).standard_normal((3, 4, 5, 2))
    init_fn, apply_fn = global_pool_finite(kind)
    ref = np.zeros((3, 2))
    for i, j in itertools.product(range(4), range(5)):
        ref += x[:, i, j, :]
    ref = ref / 20 if kind == "avg" else ref
    assert init_fn(None, x.shape)[0] == (3, 2)
    np.testing.assert_allclose(apply_fn((), x), ref, rtol=0, atol=1e-12)
    assert global_pool_finite(kind)[1]((), x[:, 0]).shape == (3, 2)  # 1-d input

    init_fn, apply_fn = flatten_finite()
    ref = np.array([[x[n, i, j, c] for i in range(4) for j in range(5) for c in range(2)] for n in range(3)])
    assert init_fn(None, x.shape)[0] == (3, 40)
    np.testing.assert_array_equal(apply_fn((), x), ref)

    for axis in (-1, (1, 2, 3), (1, 3)):
        init_fn, apply_fn = layer_norm_finite(axis, eps=1e-3)
        axes = (3,) if axis == -1 else axis
        m = x.mean(axis=axes, keepdims=True)
        v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
        assert init_fn(None, x.shape) == (x.shape, ())
        np.testing.assert_allclose(apply_fn((), x), (x - m) / np.sqrt(1e-3 + v), rtol=0, atol=1e-12)


def test_dropout():
    x = jnp.asarray(np.random.default_rng(6).standard_normal((50, 40)))
    init_fn, apply_fn = dropout_finite(0.8)
    assert init_fn(None, x.shape) == (x.shape, ())
    y = apply_fn((), x, rng=jax.random.key(0))
    keep = np.asarray(y != 0)
    np.testing.assert_allclose(np.asarray(y)[keep], np.asarray(x)[keep] / 0.8, rtol=1e-15)
    assert abs(keep.mean() - 0.8) < 5 * math.sqrt(0.8 * 0.2 / keep.size)  # Bernoulli(0.8), 2000 draws
    np.testing.assert_array_equal(y, apply_fn((), x, rng=jax.random.key(0)))
    np.testing.assert_array_equal(keep, np.asarray(jax.random.bernoulli(jax.random.key(0), 0.8, x.shape)))
    np.testing.assert_array_equal(dropout_finite(0.8, "test")[1]((), x, rng=jax.random.key(0)), x)
    for mode in ("train", "test"):
        with pytest.raises(ValueError, match="Dropout: apply_fn needs a PRNG key"):
            dropout_finite(0.5, mode)[1]((), x)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="Dropout: rate"):
            dropout_finite(bad)
    with pytest.raises(ValueError, match="Dropout: mode"):
        dropout_finite(0.5, "eval")


def test_fan_in_concat_prod_index_resize():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((2, 3, 4, 2)), rng.standard_normal((2, 3, 4, 5))
    init_fn, apply_fn = fan_in_concat_finite()
    assert init_fn(None, [a.shape, b.shape])[0] == (2, 3, 4, 7)
    np.testing.assert_array_equal(apply_fn((), [a, b]), np.concatenate([a, b], -1))
    init_fn, apply_fn = fan_in_concat_finite(axis=1)
    assert init_fn(None, [a.shape, a.shape])[0] == (2, 6, 4, 2)
    with pytest.raises(ValueError, match="FanInConcat: branch shapes .* must agree except along axis 1"):
        apply_fn((), [a, b])
    with pytest.raises(ValueError, match="FanInConcat needs several branches"):
        apply_fn((), a)

    c = rng.standard_normal(a.shape)
    init_fn, apply_fn = fan_in_prod_finite()
    assert init_fn(None, [a.shape, a.shape, a.shape])[0] == a.shape
    np.testing.assert_allclose(apply_fn((), [a, c, a]), a * c * a, rtol=1e-15)
    with pytest.raises(ValueError, match="FanInProd: branch shapes differ"):
        apply_fn((), [a, b])

    idx = (slice(None, None, 2), slice(0, 2), 1)
    init_fn, apply_fn = index_finite(idx)
    assert init_fn(None, b.shape)[0] == b[idx].shape == (1, 2, 5)
    np.testing.assert_array_equal(apply_fn((), b), b[idx])
    with pytest.raises(ValueError, match="Index: idx"):
        index_finite((0, 0, 0, 0, 0))[0](None, b.shape)

    init_fn, apply_fn = image_resize_finite((-1, 6, 8, -1), "linear")
    assert init_fn(None, a.shape)[0] == (2, 6, 8, 2)
    np.testing.assert_array_equal(apply_fn((), a), jax.image.resize(a, (2, 6, 8, 2), "linear",
                                                                    precision=jax.lax.Precision.HIGHEST))
    # nearest neighbour upsampling by 2 repeats each pixel twice along each axis
    np.testing.assert_array_equal(image_resize_finite((-1, 6, 8, -1), "nearest")[1]((), a),
                                  a.repeat(2, axis=1).repeat(2, axis=2))


def _attention_ref(x, params, *, linear_scaling, mechanism, stds, b_std, pos_emb_type="NONE", val_pos_emb=False,
                   W_pos_emb_std=1.0, L=None):
    """Hron et al. (2020) self-attention written with loops over heads, positions and channels."""
    W_q, W_k, W_v, W_o, b, E = (None if a is None else np.asarray(a) for a in params)
    sk, sv, sq, so = stds
    n, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    P = math.prod(spatial)
    xf = x.reshape(n, P, c)
    xk, xv = xf, xf
    if E is not None:
        e = E.reshape(P, -1)
        if L is not None:  # correlated positional embeddings: e <- L e over positions
            e = L.reshape(P, P) @ e
        e = W_pos_emb_std * e
        if pos_emb_type == "SUM":
            xk = xf + e[None]
        else:
            xk = np.concatenate([xf, np.broadcast_to(e[None], (n, P, e.shape[-1]))], -1)
        xv = xk if val_pos_emb else xf
    H, d_k, d_v = W_k.shape[0], W_k.shape[2], W_v.shape[2]
    act = {"SOFTMAX": None, "IDENTITY": lambda g: g, "ABS": np.abs, "RELU": lambda g: np.maximum(g, 0)}[mechanism]
    out = np.zeros((n, P, W_o.shape[1]))
    for i in range(n):
        heads = np.zeros((P, d_v * H))
        for h in range(H):
            keys = xk[i] @ W_k[h]
            queries = keys if linear_scaling else xk[i] @ W_q[h]
            G = np.array([[sq * sk * (queries[p] @ keys[r]) / (xk.shape[-1] * (d_k if linear_scaling else d_k ** 0.5))
                           for r in range(P)] for p in range(P)])
            if act is None:
                G = np.exp(G - G.max(axis=1, keepdims=True))
                G = G / G.sum(axis=1, keepdims=True)
            else:
                G = act(G)
            vals = xv[i] @ W_v[h]
            for p in range(P):
                for v in range(d_v):
                    heads[p, v * H + h] = sum(G[p, r] * vals[r, v] for r in range(P))
        out[i] = so * sv / math.sqrt(d_v * H * xv.shape[-1]) * heads @ W_o
    out = out.reshape((n,) + spatial + (-1,))
    return out if b is None else out + b_std * b


@pytest.mark.parametrize("kwargs,shape", [
    ({"linear_scaling": True, "attention_mechanism": "SOFTMAX", "b_std": 0.1}, (2, 5, 3)),
    ({"linear_scaling": False, "attention_mechanism": "IDENTITY"}, (2, 3, 2, 4)),
    ({"linear_scaling": False, "attention_mechanism": "RELU", "pos_emb_type": "SUM", "W_pos_emb_std": 0.7}, (2, 4, 3)),
    ({"linear_scaling": True, "attention_mechanism": "ABS", "pos_emb_type": "CONCAT", "n_chan_pos_emb": 2,
      "val_pos_emb": True, "b_std": 0.2}, (2, 2, 3, 3)),
    ({"linear_scaling": True, "attention_mechanism": "SOFTMAX", "pos_emb_type": "SUM", "val_pos_emb": True,
      "pos_emb_decay_fn": "exp"}, (2, 3, 2, 3)),
])
def test_global_self_attention_against_loops(kwargs, shape):
    kwargs = dict(kwargs)
    L = None
    if kwargs.get("pos_emb_decay_fn") == "exp":
        kwargs["pos_emb_decay_fn"] = lambda d: jnp.exp(-d / 2)
        grid = np.array(list(itertools.product(*(range(s) for s in shape[1:-1]))))
        L = np.linalg.cholesky(np.exp(-np.sum(np.abs(grid[:, None] - grid[None]) ** 2, -1) / 2))
    stds = (1.1, 0.9, 0.8, 1.2)  # W_key_std, W_value_std, W_query_std, W_out_std
    init_fn, apply_fn = global_self_attention_finite(6, 4, 5, 3, W_key_std=stds[0], W_value_std=stds[1],
                                                     W_query_std=stds[2], W_out_std=stds[3], **kwargs)
    x = np.random.default_rng(9).standard_normal(shape)
    out_shape, params = init_fn(jax.random.key(4), shape)
    y = apply_fn(params, jnp.asarray(x))
    ref = _attention_ref(x, params, linear_scaling=kwargs["linear_scaling"], mechanism=kwargs["attention_mechanism"],
                         stds=stds, b_std=kwargs.get("b_std"), pos_emb_type=kwargs.get("pos_emb_type", "NONE"),
                         val_pos_emb=kwargs.get("val_pos_emb", False),
                         W_pos_emb_std=kwargs.get("W_pos_emb_std", 1.0), L=L)
    assert out_shape == y.shape == ref.shape == shape[:-1] + (6,)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    with pytest.raises(ValueError, match="GlobalSelfAttention: x of shape .* does not match the key weights"):
        apply_fn(params, jnp.ones(shape[:-1] + (7,)))


def test_validation_messages():
    init_fn, apply_fn = conv_finite(4, (3, 3), padding="SAME")
    _, params = init_fn(jax.random.key(0), (2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"Conv: x of shape \(2, 3, 8, 8\) has 8 channels .* expect 3 \(W of shape "
                                         r"\(3, 3, 3, 4\)"):
        apply_fn(params, jnp.ones((2, 3, 8, 8)))  # NCHW data to an NHWC conv
    with pytest.raises(ValueError, match=r"Conv: x must be 4-d .* got shape \(8, 8, 3\)"):
        apply_fn(params, jnp.ones((8, 8, 3)))
    with pytest.raises(ValueError, match="Conv got 2 branches"):
        apply_fn(params, [jnp.ones((2, 8, 8, 3))] * 2)
    valid_init, valid_apply = conv_finite(4, (3, 3))
    with pytest.raises(ValueError, match=r"Conv: with padding 'VALID' the window \(3, 3\) must fit in the spatial "
                                         r"shape \(2, 8\)"):
        valid_init(jax.random.key(0), (2, 2, 8, 3))
    with pytest.raises(ValueError, match=r"Conv: with padding 'VALID' the window \(3, 3\) must fit .* \(2, 8\) of x"):
        valid_apply(params, jnp.ones((2, 2, 8, 3)))
    with pytest.raises(ValueError, match="AvgPool: with padding 'VALID'"):
        pool_finite("avg", (3,))[1]((), jnp.ones((1, 2, 1)))
    with pytest.raises(ValueError, match="AvgPool: x must be 3-d"):
        pool_finite("avg", (3,))[1]((), jnp.ones((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="Conv: padding must be one of"):
        conv_finite(4, (3,), padding="same")
    with pytest.raises(ValueError, match="Conv: strides must have 2 entries"):
        conv_finite(4, (3, 3), strides=(1,))
    with pytest.raises(ValueError, match="Conv: out_chan"):
        conv_finite(0, (3, 3))
    with pytest.raises(ValueError, match="Conv: W_std must be finite and >= 0"):
        conv_finite(4, (3, 3), W_std=-1.0)
    with pytest.raises(ValueError, match="ConvTranspose: parameterization"):
        conv_finite(4, (3, 3), parameterization="mup", transpose=True)
    with pytest.raises(ValueError, match="LayerNorm: axis 4 is out of range"):
        layer_norm_finite(4)[1]((), jnp.ones((2, 3, 3, 1)))


def test_conv_jit_vmap_and_grad_in_W_std():
    x = jnp.asarray(np.random.default_rng(8).standard_normal((2, 5, 5, 2)))
    init_fn, apply_fn = conv_finite(3, (3, 3), (1, 1), "CIRCULAR", 1.5, 0.1)
    keys = jax.random.split(jax.random.key(0), 4)
    params = jax.vmap(lambda k: init_fn(k, x.shape)[1])(keys)
    batched = jax.jit(jax.vmap(apply_fn, (0, None)))(params, x)
    for i in range(4):
        one = jax.tree_util.tree_map(lambda a, i=i: a[i], params)
        np.testing.assert_allclose(batched[i], apply_fn(one, x), rtol=0, atol=1e-13)

    def total(w_std):
        return jnp.sum(conv_finite(3, (3, 3), (1, 1), "SAME", w_std, 0.1)[1](jax.tree_util.tree_map(
            lambda a: a[0], params), x))

    # the output is affine in W_std, so the derivative is total(1) - total(0) exactly
    np.testing.assert_allclose(jax.grad(total)(1.5), total(1.0) - total(0.0), rtol=1e-12)


# ------------------------------------------------------------------------------------------
# 2. neural-tangents 0.6.5
# ------------------------------------------------------------------------------------------

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_LAYERS = _ROOT / "tests" / "data" / "nt_conv_finite_layers.npz"


def _load_generator(name):
    spec = importlib.util.spec_from_file_location(name, _ROOT / "benchmarks" / "reference" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finite_layer(case, gen):
    """Our (init_fn, apply_fn) for one case of make_conv_finite_golden.py."""
    kind = case["layer"]
    args = [gen.tuples(a) for a in case.get("args", [])]
    kw = {k: gen.tuples(v) for k, v in case.get("kwargs", {}).items()}
    if kind in ("Conv", "ConvTranspose"):
        return conv_finite(*args, **kw, transpose=kind == "ConvTranspose")
    if kind in ("AvgPool", "SumPool"):
        return pool_finite("avg" if kind == "AvgPool" else "sum", *args, **kw)
    if kind in ("GlobalAvgPool", "GlobalSumPool"):
        return global_pool_finite("avg" if kind == "GlobalAvgPool" else "sum")
    simple = {"Flatten": flatten_finite, "LayerNorm": layer_norm_finite, "Dropout": dropout_finite,
              "FanInConcat": fan_in_concat_finite, "FanInProd": fan_in_prod_finite,
              "ImageResize": image_resize_finite}
    if kind == "Index":
        return index_finite(gen.decode_index(case["idx"]))
    if kind == "GlobalSelfAttention":
        return global_self_attention_finite(*args, **kw)
    return simple[kind](*args, **kw)


@pytest.mark.skipif(not _LAYERS.exists(), reason="tests/data/nt_conv_finite_layers.npz not written")
def test_layers_against_neural_tangents():
    """Every case of benchmarks/reference/make_conv_finite_golden.py (153 single layers: Conv and
    ConvTranspose x 11 padding/stride/shape settings x both parameterizations x bias or not,
    AvgPool/SumPool, global pools, Flatten, LayerNorm, Dropout test mode, FanInConcat, FanInProd,
    Index, ImageResize, GlobalSelfAttention with each mechanism and positional embedding type): NT's output shape from init_fn and NT's apply_fn output with the same
    inputs and parameters. Measured: largest difference 6.5e-16 of the output's largest entry
    (ImageResize); Conv and ConvTranspose bitwise equal except CIRCULAR (2.5e-16); attention
    3.2e-16."""
    gen = _load_generator("make_conv_finite_golden")
    data = np.load(_LAYERS)
    cases = json.loads(str(data["cases"]))
    nt_leaf_shapes = json.loads(str(data["leaf_shapes"]))
    assert cases == json.loads(json.dumps(gen.cases()))
    worst = 0.0
    for i, case in enumerate(cases):
        init_fn, apply_fn = _finite_layer(case, gen)
        multi = case.get("multi", False)
        in_shape = [tuple(s) for s in case["shapes"]] if multi else tuple(case["shapes"])
        shape, params = init_fn(jax.random.key(i), in_shape)
        ours, tree = jax.tree_util.tree_flatten(params)
        assert [list(a.shape) for a in ours] == nt_leaf_shapes[i], case  # NT's parameter tree
        xs, leaves = gen.arrays(i, case, nt_leaf_shapes[i])
        params = jax.tree_util.tree_unflatten(tree, [jnp.asarray(a) for a in leaves])
        kwargs = {"rng": jax.random.key(i)} if case["layer"] == "Dropout" else {}
        y = apply_fn(params, [jnp.asarray(x) for x in xs] if multi else jnp.asarray(xs[0]), **kwargs)
        ref = data[f"{i}/y"]
        assert tuple(shape) == tuple(data[f"{i}/shape"]) == ref.shape == y.shape, case
        err = float(np.max(np.abs(np.asarray(y) - ref)) / max(1.0, np.max(np.abs(ref))))
        assert err < 1e-12, (case, err)
        worst = max(worst, err)
    assert worst < 1e-12


class _Mine:
    """An NT-like ``stax`` namespace whose layers are this module's finite functions (plus
    test-local Dense, Relu and combinators with neural-tangents' parameter trees), so that
    make_conv_golden.build() constructs the golden architectures without rmtjax.stax."""

    @staticmethod
    def _triple(pair):
        return pair[0], pair[1], None

    @staticmethod
    def Conv(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None, parameterization="ntk"):
        return _Mine._triple(conv_finite(out_chan, filter_shape, strides, padding, W_std, b_std, parameterization))

    @staticmethod
    def AvgPool(window_shape, strides=None, padding="VALID", normalize_edges=False):
        return _Mine._triple(pool_finite("avg", window_shape, strides, padding, normalize_edges))

    GlobalAvgPool = staticmethod(lambda: _Mine._triple(global_pool_finite("avg")))
    Flatten = staticmethod(lambda: _Mine._triple(flatten_finite()))
    LayerNorm = staticmethod(lambda axis=-1, eps=1e-12: _Mine._triple(layer_norm_finite(axis, eps)))
    Relu = staticmethod(lambda: (lambda k, s: (s, ()), lambda p, x, **kw: jnp.maximum(x, 0), None))
    Identity = staticmethod(lambda: (lambda k, s: (s, ()), lambda p, x, **kw: x, None))
    FanOut = staticmethod(lambda num: (lambda k, s: ([s] * num, ()), lambda p, x, **kw: [x] * num, None))
    FanInSum = staticmethod(lambda: (lambda k, s: (s[0], ()), lambda p, xs, **kw: sum(xs[1:], xs[0]), None))

    @staticmethod
    def Dense(out_dim, W_std=1.0, b_std=None, parameterization="ntk"):
        assert parameterization == "ntk"

        def init_fn(key, s):
            k1, k2 = jax.random.split(key)
            b = None if b_std is None else jax.random.normal(k2, (1, out_dim))
            return s[:-1] + (out_dim,), (jax.random.normal(k1, (s[-1], out_dim)), b)

        def apply_fn(params, x, **kw):
            out = W_std / math.sqrt(x.shape[-1]) * x @ params[0]
            return out if params[1] is None else out + b_std * params[1]

        return init_fn, apply_fn, None

    @staticmethod
    def serial(*layers):
        def init_fn(key, s):
            params = []
            for layer in layers:
                key, sub = jax.random.split(key)
                s, p = layer[0](sub, s)
                params.append(p)
            return s, params

        def apply_fn(params, x, **kw):
            for layer, p in zip(layers, params):
                x = layer[1](p, x)
            return x

        return init_fn, apply_fn, None

    @staticmethod
    def parallel(*layers):
        def init_fn(key, shapes):
            outs = [layer[0](k, s) for layer, k, s in zip(layers, jax.random.split(key, len(layers)), shapes)]
            return [o[0] for o in outs], [o[1] for o in outs]

        return init_fn, lambda params, xs, **kw: [f[1](p, x) for f, p, x in zip(layers, params, xs)], None


_CONV_GOLDEN = _ROOT / "tests" / "data" / "nt_conv_golden.npz"


@pytest.mark.skipif(not _CONV_GOLDEN.exists(), reason="tests/data/nt_conv_golden.npz not written")
def test_golden_finite_networks_from_these_functions():
    """The six networks whose finite outputs make_conv_golden.py recorded (Myrtle-5, CNN-GAP,
    stride-2 VALID, 1-d, LayerNorm, a residual block), composed from this module's functions
    directly (not through rmtjax.stax), with NT's parameters: NT's outputs. Measured: at most 6.7e-16
    of the output's largest entry (cnn_relu_gap_d1)."""
    gen = _load_generator("make_conv_golden")
    meta = json.loads((_ROOT / "tests" / "data" / "nt_conv_golden.json").read_text())
    gold = np.load(_CONV_GOLDEN)
    assert len(meta["finite"]) == 6
    for name, record in meta["finite"].items():
        spec = next(s for s in meta["specs"] if s["name"] == name)
        x = gold[f"inputs/{record['input']}"]
        init_fn, apply_fn, _ = gen.build_net(_Mine, spec)
        shape, params = init_fn(jax.random.key(record["seed"]), x.shape)
        ours, tree = jax.tree_util.tree_flatten(params)
        assert [list(a.shape) for a in ours] == [s for _, s in record["leaves"]], name
        leaves = [jnp.asarray(gold[f"finite/{name}/param/{i:02d}"]) for i in range(len(ours))]
        out = apply_fn(jax.tree_util.tree_unflatten(tree, leaves), jnp.asarray(x))
        ref = gold[f"finite/{name}/out"]
        assert tuple(shape) == ref.shape == out.shape
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


# ------------------------------------------------------------------------------------------
# 3. Monte-Carlo: finite networks of rmtjax.stax against its kernel_fn
# ------------------------------------------------------------------------------------------
#
# For a network whose readout is Dense(K), each random draw of the parameters gives the Gram
# matrix G = f f^T / K of its outputs f (n x K) on n inputs; E[G] is the NNGP at finite width. The
# tests compare the Monte-Carlo mean over independent networks with kernel_fn, entry by entry,
# and also the squared distances D_ij = G_ii + G_jj - 2 G_ij, which carry the kernel's structure
# (the entries of a pooled ReLU kernel share a large constant part), each within 5 standard errors
# estimated from the same samples. Averaging over K readout units removes most of the readout's
# chi-square noise at almost no cost.
#
# E[G] differs from the infinite-width kernel by O(1/width) once a nonlinearity acts on a layer
# that is itself random (the second ReLU onwards). Measured against NT's kernel of the same
# networks and inputs (8x8x3, K = 64): the relative bias of the distances D was 10.9%, 6.5%, 3.8%
# at widths 16, 32, 64 for the Myrtle-like net and 5.5%, 3.4%, 2.1% for the CNTK, against
# standard errors of 1-1.5% at 2,000 networks (entries: biases <= 2.7% at width 16, <= 0.7% at
# 32). So the deep tests use the Richardson combination 2 E[G_{2w}] - E[G_w] at w = 16, which
# cancels the 1/width term, with the standard error sqrt(4 se_{2w}^2 + se_w^2) (relative 2.5%
# for entries, 3% for D). Measured with the tests' seeds: largest |z| 1.21 (Myrtle-like), 1.31
# (CNTK); the residual bias after extrapolation is at most 3.8% of D (Myrtle-like), about one
# standard error. A network with a single ReLU followed only by linear layers (conv, pooling,
# readout) has no such bias at any width: E[G] is exactly the kernel, so that test uses narrow
# networks, many of them, and no extrapolation (measured largest |z| 2.56 over 16 statistics with
# relative standard errors 0.4-0.7%; a kernel with the second conv's padding changed from SAME to
# CIRCULAR is off by 4 to 27 standard errors there).
#
# These tests are marked slow (11-25 s each on the loaded 2-core machine) and run with XLA's
# optimizations (the ``xla_optimized`` fixture): a Monte-Carlo mean is not part of the -O0
# rounding check, and -O0 made them slower (measured on the loaded machine: 37 s -> 24 s for the
# Myrtle-like test, 23 -> 20 s CNTK, 14 -> 11 s the exact one).


def _images(n=4, seed=16):
    """Four 8x8x3 images; the last is correlated with the first (correlation 0.6)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8, 3))
    x[-1] = 0.6 * x[0] + 0.8 * rng.standard_normal((8, 8, 3))
    return jnp.asarray(x)


def _mc_grams(net, x, n_nets, seed, chunk=250):
    """(n_nets, n, n): G = f f^T / K for n_nets independent draws of init_fn."""
    init_fn, apply_fn, _ = net

    def gram(params):
        f = apply_fn(params, x)
        return f @ f.T / f.shape[1]

    draw = jax.jit(lambda keys: jax.lax.map(lambda k: init_fn(k, x.shape)[1], keys))
    grams = jax.jit(lambda params: jax.lax.map(gram, params))
    keys = jax.random.split(jax.random.key(seed), n_nets)
    return np.concatenate([np.asarray(grams(draw(keys[i:i + chunk]))) for i in range(0, n_nets, chunk)])


def _distances(g):
    d = np.diagonal(g, 0, -2, -1)
    return d[..., :, None] + d[..., None, :] - 2 * g


def _mean_se(samples):
    return samples.mean(0), samples.std(0, ddof=1) / math.sqrt(len(samples))


def _check_within(estimate, se, theory, what, max_rel_se):
    """|estimate - theory| <= 5 se on the upper triangle (entries: with the diagonal), and the
    test has power: se <= max_rel_se * |theory|."""
    iu = np.triu_indices(len(theory), 0 if what == "entries" else 1)
    est, s, th = estimate[iu], se[iu], theory[iu]
    z = np.abs(est - th) / s
    assert np.all(z <= 5), (what, est, th, s, z)
    assert np.all(s <= max_rel_se * np.abs(th)), (what, s / np.abs(th))
    return float(z.max())


def _check_mc(samples, theory, max_rel_se, extrapolate):
    """samples: {width: (S, n, n) Gram samples}; extrapolate: Richardson in 1/width over the two
    widths (w, 2w), else the one width's plain mean."""
    zs = {}
    for what, fn in (("entries", lambda g: g), ("distances", _distances)):
        stats = {w: _mean_se(fn(g)) for w, g in samples.items()}
        if extrapolate:
            (w1, (m1, s1)), (w2, (m2, s2)) = sorted(stats.items())
            assert w2 == 2 * w1
            est, se = 2 * m2 - m1, np.sqrt(4 * s2**2 + s1**2)
        else:
            ((_, (est, se)),) = stats.items()
        zs[what] = _check_within(est, se, fn(theory), what, max_rel_se[what])
    return zs


def _myrtle_like(width, readout):
    from rmtjax import stax

    s2 = math.sqrt(2.0)

    def block(*pool):
        return (stax.Conv(width, (3, 3), padding="SAME", W_std=s2, b_std=0.1), stax.Relu(), *pool)

    pool = stax.AvgPool((2, 2), (2, 2))
    return stax.serial(*block(), *block(pool), *block(pool), stax.AvgPool((2, 2), (2, 2)), stax.Flatten(),
                       stax.Dense(readout, s2, 0.1))


def _cntk_gap(width, readout, depth=2):
    from rmtjax import stax

    s2 = math.sqrt(2.0)
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(width, (3, 3), padding="SAME", W_std=s2, b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.GlobalAvgPool(), stax.Dense(readout, s2, 0.1))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["myrtle_like", "cntk_gap"])
def test_monte_carlo_nngp_deep(arch, xla_optimized):
    """Myrtle-5-like (three SAME conv+ReLU blocks, 2x2 average pools down to 1x1, Flatten, Dense)
    and a CNTK with GlobalAvgPool (two conv+ReLU): 2,000 networks at widths 16 and 32 each,
    Richardson-extrapolated (see above), against kernel_fn's NNGP. Power, measured on the CNTK:
    the kernel of the same net with CIRCULAR instead of SAME padding is off by 22-29 standard
    errors; the second layer's b_std 0.2 instead of 0.1 (entries up 3.6-4.4%, distances 0.4%) only
    by 2.6: 5 standard errors are about 9% of an entry, 12-15% of a distance."""
    build = _myrtle_like if arch == "myrtle_like" else _cntk_gap
    x = _images()
    theory = np.asarray(build(1, 1)[2](x, None, "nngp"))
    samples = {w: _mc_grams(build(w, 64), x, 2000, seed=w) for w in (16, 32)}
    _check_mc(samples, theory, {"entries": 0.03, "distances": 0.06}, extrapolate=True)


@pytest.mark.slow
def test_monte_carlo_nngp_exact_at_any_width(xla_optimized):
    """Conv(CIRCULAR) -> ReLU -> Conv(3x2, stride 2, SAME) -> AvgPool(SAME, normalize_edges) ->
    Flatten -> Dense: one nonlinearity, so E[f f^T] is exactly the NNGP at any width; 20,000
    networks of width 4 (conv on a full spatial kernel, strides, both paddings, edge-normalised
    pooling), no extrapolation."""
    from rmtjax import stax

    net = stax.serial(
        stax.Conv(4, (3, 3), padding="CIRCULAR", W_std=1.5, b_std=0.2), stax.Relu(),
        stax.Conv(4, (3, 2), strides=(2, 2), padding="SAME", W_std=1.2, b_std=0.3),
        stax.AvgPool((3, 3), (1, 1), "SAME", normalize_edges=True), stax.Flatten(), stax.Dense(16, 1.1, 0.05))
    x = _images()
    theory = np.asarray(net[2](x, None, "nngp"))
    samples = {4: _mc_grams(net, x, 20000, seed=3, chunk=2000)}
    _check_mc(samples, theory, {"entries": 0.02, "distances": 0.03}, extrapolate=False)


def _mc_ntks(net, x, n_nets, seed, chunk=100):
    """(n_nets, n, n): the empirical NTK sum_theta df_k(x_i)/dtheta df_k(x_j)/dtheta, averaged over
    the K readout units k, for n_nets independent draws of init_fn."""
    init_fn, apply_fn, _ = net

    def ntk(params):
        out, vjp = jax.vjp(lambda p: apply_fn(p, x), params)
        # one backward pass per output (a sequential map: batching the cotangents was slower on CPU)
        cotangents = jnp.eye(out.size, dtype=out.dtype).reshape((out.size,) + out.shape)
        grads = jax.lax.map(lambda c: ravel_pytree(vjp(c)[0])[0], cotangents).reshape(out.shape + (-1,))
        return jnp.einsum("ikp,jkp->ij", grads, grads) / out.shape[1]

    draw = jax.jit(lambda keys: jax.lax.map(lambda k: init_fn(k, x.shape)[1], keys))
    ntks = jax.jit(lambda params: jax.lax.map(ntk, params))
    keys = jax.random.split(jax.random.key(seed), n_nets)
    return np.concatenate([np.asarray(ntks(draw(keys[i:i + chunk]))) for i in range(0, n_nets, chunk)])


@pytest.mark.slow
def test_monte_carlo_ntk_cntk(xla_optimized):
    """The empirical NTK of the CNTK with GlobalAvgPool (two conv+ReLU, Dense(1) readout): 300
    networks at widths 16 and 32, Richardson-extrapolated, against kernel_fn's NTK.

    Measured with these seeds: relative biases of the plain means -2.1% (entries) and -2.8%
    (distances) at width 16, <= 1.1% and <= 3.6% at 32, with standard errors 2% and 1.3-1.5%
    (so the 1/width bias is not resolved at this sample size; the extrapolation keeps the test
    free of it at the price of a larger standard error: 3.3-3.5% entries, 3.4-3.9% distances);
    largest |z| 2.69. A Dense(4) readout averaged over its units gave the same standard errors
    at four times the cost, hence Dense(1)."""
    x = _images()
    theory = np.asarray(_cntk_gap(1, 1)[2](x, None, "ntk"))
    samples = {w: _mc_ntks(_cntk_gap(w, 1), x, 300, seed=100 + w) for w in (16, 32)}
    _check_mc(samples, theory, {"entries": 0.05, "distances": 0.06}, extrapolate=True)
