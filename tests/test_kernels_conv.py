"""The convolutional kernel engine (rmtjax.kernels._conv) against a brute-force reference.

The reference below is independent of the engine: it keeps the covariance of every pixel of every
image with every pixel of every image, ``(N, N, P, P)``, and applies each layer by explicit loops
over output pixels and filter/window offsets with index arithmetic (no shared code, no window
sums, no layouts, no planning); activations by their closed forms. neural-tangents' own values are
checked in tests/test_stax_conv_golden.py.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax import stax
from rmtjax.activations import Erf, Relu
from rmtjax.kernels import Activation, Dense, Parallel, Serial, Stack, kernel, kernel_diagonal
from rmtjax.kernels import _conv as C

# ------------------------------------------------------------------------------------------
# Brute-force reference
# ------------------------------------------------------------------------------------------


class Ref:
    """Covariances of all pixel pairs of all image pairs: K, T of shape (N, N, P, P)."""

    def __init__(self, x):
        x = np.asarray(x, np.float64)
        self.shape = x.shape[1:-1]
        n, ch = x.shape[0], x.shape[-1]
        flat = x.reshape(n, -1, ch)
        self.K = np.einsum("ipc,jqc->ijpq", flat, flat) / ch
        self.T = np.zeros_like(self.K)

    def coords(self, shape):
        return list(itertools.product(*(range(s) for s in shape)))

    def _geometry(self, k, s, padding):
        out, lo = [], []
        for n, kk, ss in zip(self.shape, k, s):
            if padding == "VALID":
                out.append((n - kk) // ss + 1)
                lo.append(0)
            else:
                o = -(-n // ss)
                out.append(o)
                lo.append(max((o - 1) * ss + kk - n, 0) // 2)
        return tuple(out), lo

    def _index(self, pix, padding):
        """Flat index of pixel ``pix`` of the current shape, or None outside (zero padding)."""
        if padding == "CIRCULAR":
            pix = tuple(p % n for p, n in zip(pix, self.shape))
        elif any(p < 0 or p >= n for p, n in zip(pix, self.shape)):
            return None
        return int(np.ravel_multi_index(pix, self.shape))

    def conv(self, k, s, padding, w, b):
        out, lo = self._geometry(k, s, padding)
        opix = self.coords(out)
        offsets = self.coords(k)
        K = np.zeros(self.K.shape[:2] + (len(opix),) * 2)
        T = np.zeros_like(K)
        for P, p in enumerate(opix):
            for Q, q in enumerate(opix):
                for a in offsets:
                    ip = self._index(tuple(pp * ss + aa - ll for pp, ss, aa, ll in zip(p, s, a, lo)), padding)
                    iq = self._index(tuple(qq * ss + aa - ll for qq, ss, aa, ll in zip(q, s, a, lo)), padding)
                    if ip is None or iq is None:
                        continue
                    K[:, :, P, Q] += self.K[:, :, ip, iq]
                    T[:, :, P, Q] += self.T[:, :, ip, iq]
        size = np.prod(k)
        self.K = w**2 * K / size + b**2
        self.T = self.K + w**2 * T / size
        self.shape = out

    def pool(self, k, s, padding):
        out, lo = self._geometry(k, s, padding)
        opix = self.coords(out)
        offsets = self.coords(k)
        K = np.zeros(self.K.shape[:2] + (len(opix),) * 2)
        T = np.zeros_like(K)
        for P, p in enumerate(opix):
            for Q, q in enumerate(opix):
                for a in offsets:
                    for c in offsets:
                        ip = self._index(tuple(pp * ss + aa - ll for pp, ss, aa, ll in zip(p, s, a, lo)), padding)
                        iq = self._index(tuple(qq * ss + cc - ll for qq, ss, cc, ll in zip(q, s, c, lo)), padding)
                        if ip is None or iq is None:
                            continue
                        K[:, :, P, Q] += self.K[:, :, ip, iq]
                        T[:, :, P, Q] += self.T[:, :, ip, iq]
        size = np.prod(k) ** 2
        self.K, self.T, self.shape = K / size, T / size, out

    def act(self, name):
        v = np.einsum("iipp->ip", self.K)
        q1 = v[:, None, :, None]
        q2 = v[None, :, None, :]
        c = np.clip(self.K / np.sqrt(q1 * q2), -1, 1)
        if name == "relu":
            th = np.arccos(c)
            k = np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
            kd = (np.pi - th) / (2 * np.pi)
        else:  # erf
            k = 2 / np.pi * np.arcsin(2 * self.K / np.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
            kd = 4 / np.pi / np.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * self.K**2)
        self.K, self.T = k, kd * self.T

    def layer_norm(self, eps):
        v = np.einsum("iipp->ip", self.K) + eps
        norm = np.sqrt(v[:, None, :, None] * v[None, :, None, :])
        self.K, self.T = self.K / norm, self.T / norm

    def dense(self, w, b):
        self.K = w**2 * self.K + b**2
        self.T = self.K + w**2 * self.T

    def flatten(self):
        self.K = np.einsum("ijpp->ij", self.K) / self.K.shape[-1]
        self.T = np.einsum("ijpp->ij", self.T) / self.T.shape[-1]

    def global_avg(self):
        self.K = self.K.mean(axis=(2, 3))
        self.T = self.T.mean(axis=(2, 3))


def _images(n, shape, ch, seed):
    x = np.random.default_rng(seed).standard_normal((n,) + shape + (ch,))
    x[1] = 0.7 * x[0]  # a scaled copy (correlation 1 at every pixel of the input layer)
    return x


# (stax layers, reference steps); every network ends in a readout (Flatten or GlobalAvgPool, Dense)
NETS = {
    "cnngp_flatten": (
        lambda: [stax.Conv(4, (3, 3), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(),
                 stax.Conv(4, (3, 3), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(), stax.Flatten(),
                 stax.Dense(1, W_std=1.1, b_std=0.1)],
        lambda r: [r.conv((3, 3), (1, 1), "SAME", 1.3, 0.2), r.act("relu"), r.conv((3, 3), (1, 1), "SAME", 1.3, 0.2),
                   r.act("relu"), r.flatten(), r.dense(1.1, 0.1)]),
    "cntk_gap_valid_stride": (
        lambda: [stax.Conv(4, (3, 2), strides=(2, 1), padding="VALID", W_std=1.5, b_std=0.1), stax.Erf(),
                 stax.Conv(4, (2, 2), padding="CIRCULAR", W_std=1.2), stax.Relu(), stax.GlobalAvgPool(),
                 stax.Dense(1, W_std=1.0, b_std=0.3)],
        lambda r: [r.conv((3, 2), (2, 1), "VALID", 1.5, 0.1), r.act("erf"), r.conv((2, 2), (1, 1), "CIRCULAR", 1.2, 0.0),
                   r.act("relu"), r.global_avg(), r.dense(1.0, 0.3)]),
    "pool_then_flatten": (
        lambda: [stax.Conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.05), stax.Relu(),
                 stax.AvgPool((2, 2), strides=(2, 2)), stax.Conv(4, (3, 3), padding="SAME", W_std=1.4), stax.LayerNorm(),
                 stax.Relu(), stax.Conv(4, (1, 1), W_std=1.2), stax.Relu(), stax.Flatten(), stax.Dense(1)],
        lambda r: [r.conv((3, 3), (1, 1), "SAME", 1.4, 0.05), r.act("relu"), r.pool((2, 2), (2, 2), "VALID"),
                   r.conv((3, 3), (1, 1), "SAME", 1.4, 0.0), r.layer_norm(1e-12), r.act("relu"),
                   r.conv((1, 1), (1, 1), "VALID", 1.2, 0.0), r.act("relu"), r.flatten(), r.dense(1.0, 0.0)]),
    "pool_same_stride1": (
        lambda: [stax.Conv(4, (2, 2), padding="SAME", W_std=1.4, b_std=0.1), stax.Erf(),
                 stax.AvgPool((3, 3), padding="SAME"), stax.Flatten(), stax.Dense(1, W_std=1.0)],
        lambda r: [r.conv((2, 2), (1, 1), "SAME", 1.4, 0.1), r.act("erf"), r.pool((3, 3), (1, 1), "SAME"),
                   r.flatten(), r.dense(1.0, 0.0)]),
    "conv1d": (
        lambda: [stax.Conv(4, (3,), padding="CIRCULAR", W_std=1.4, b_std=0.1), stax.Relu(),
                 stax.Conv(4, (2,), strides=(2,), padding="SAME", W_std=1.4), stax.Relu(), stax.GlobalAvgPool(),
                 stax.Dense(1)],
        lambda r: [r.conv((3,), (1,), "CIRCULAR", 1.4, 0.1), r.act("relu"), r.conv((2,), (2,), "SAME", 1.4, 0.0),
                   r.act("relu"), r.global_avg(), r.dense(1.0, 0.0)]),
}


def _reference(name, x):
    r = Ref(x)
    NETS[name][1](r)
    return r.K, r.T


@pytest.mark.parametrize("name", sorted(NETS))
def test_against_brute_force(name):
    shape = (7,) if name == "conv1d" else (5, 6)
    x = _images(4, shape, 2, 0)
    K, T = _reference(name, x)
    _, _, kernel_fn = stax.serial(*NETS[name][0]())
    out = kernel_fn(x, None, ("nngp", "ntk"))
    # measured: at most 1.9e-15 of the largest entry (float64, pool_then_flatten); the tolerance is rounding only
    np.testing.assert_allclose(out.nngp, K, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.ntk, T, rtol=1e-12, atol=1e-14)
    # x2 given, tiles of 1 image (the tiled path, with a rectangular and a symmetric assembly)
    net = kernel_fn.net
    k2 = kernel(x[:3], x[1:], net, tile=8)
    np.testing.assert_allclose(k2.ntk, T[:3, 1:], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(kernel_diagonal(x, net).ntk, np.diagonal(T), rtol=1e-12, atol=1e-14)


def test_layer_norm_of_uncentred_channels_is_an_error():
    """A probe's reproducer: Relu -> LayerNorm gave a kernel diagonal of 4.51 where wide finite networks
    measure 5.6 (the finite layer subtracts the channel mean E[relu(h)] > 0, the kernel took it to be 0).
    Like neural-tangents (its is_gaussian rule), LayerNorm's kernel now needs centred channels: after a
    Dense, Conv or attention layer, and through linear layers, sums and products of such branches."""
    x = _images(2, (4, 4), 2, 0)
    for layers in ([stax.Conv(3, (3, 3)), stax.Relu(), stax.LayerNorm()], [stax.LayerNorm()],
                   [stax.Conv(3, (3, 3)), stax.Erf(), stax.AvgPool((2, 2)), stax.LayerNorm()]):
        with pytest.raises(ValueError, match="LayerNorm: its input channels have a nonzero mean at infinite width"):
            stax.serial(*layers)[2](x, None, "nngp")
    ok = [stax.Conv(3, (3, 3)), stax.AvgPool((2, 2)), stax.LayerNorm(), stax.Relu(), stax.Flatten(), stax.Dense(1)]
    assert np.all(np.isfinite(stax.serial(*ok)[2](x, None, "ntk")))
    both = stax.serial(stax.FanOut(2), stax.parallel(stax.Conv(3, (3, 3)), stax.Conv(3, (3, 3), W_std=2.0)),
                       stax.FanInSum(), stax.LayerNorm())
    assert np.all(np.isfinite(both[2](x, None, "nngp")))
    # a Stack whose block changes the flag (raw inputs in, a Dense out) runs its first repetition outside
    # the scan: the same kernels, and the same per-layer history, as the blocks written out
    v = x.reshape(2, -1)
    blocks = [Serial(Activation(Relu()), Dense(w, 0.1)) for w in (1.2, 1.4, 1.6)]
    stack = Stack(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *blocks), 3)
    for all_depths in (False, True):
        np.testing.assert_array_equal(kernel(v, None, stack, all_depths=all_depths).ntk,
                                      kernel(v, None, Serial(*blocks), all_depths=all_depths).ntk)


def test_tiled_equals_one_tile():
    """Many tiles (forced by the image budget) give the same numbers as one tile."""
    x = _images(11, (6, 6), 2, 1)
    _, _, kernel_fn = stax.serial(*NETS["pool_same_stride1"][0]())
    one = kernel(x, None, kernel_fn.net)
    old = C.__dict__.get("_budget")
    from rmtjax.kernels import _core
    budget = _core._IMAGE_TILE_BUDGET
    try:
        _core._IMAGE_TILE_BUDGET = 4 * 36**2  # tiles of 2 x 2 images
        many = kernel(x, None, kernel_fn.net)
        rect = kernel(x[:5], x, kernel_fn.net)
    finally:
        _core._IMAGE_TILE_BUDGET = budget
    del old
    # rounding differs between tile shapes (the compiler fuses each differently): entries agree to
    # 1e-13 of the largest (measured 1.7e-17 of it on an entry 1e-4 times the largest)
    np.testing.assert_allclose(many.ntk, one.ntk, rtol=1e-13, atol=1e-13 * float(jnp.max(jnp.abs(one.ntk))))
    np.testing.assert_array_equal(many.ntk, many.ntk.T)
    np.testing.assert_allclose(rect.nngp, one.nngp[:5], rtol=1e-13, atol=1e-13 * float(jnp.max(jnp.abs(one.nngp))))


def test_plan_keeps_full_only_where_pooling_needs_it():
    net = Serial(C.Conv(1.0, 0.0, (3, 3), padding="SAME"), Activation(Relu()), C.Pool((2, 2), (2, 2)),
                 C.Conv(1.0, 0.0, (3, 3), padding="SAME"), Activation(Relu()), C.Flatten(), Dense(1.0))
    assert C.needs_full(net, True)
    planned = C.plan(net, True, True)
    kinds = [type(layer).__name__ for layer in planned.layers]
    assert kinds == ["Conv", "Activation", "Pool", "ToDiagonal", "Conv", "Activation", "Flatten", "Dense"]
    flat = Serial(C.Conv(1.0, 0.0, (3, 3)), Activation(Relu()), C.Flatten(), Dense(1.0))
    assert not C.needs_full(flat, True)


def test_diagonal_spatial_exact_for_flatten_readout():
    x = _images(3, (5, 5), 3, 2)
    _, _, kernel_fn = stax.serial(*NETS["cnngp_flatten"][0]())
    a = kernel_fn(x, None, "ntk")
    b = kernel_fn(x, None, "ntk", diagonal_spatial=True)
    np.testing.assert_allclose(a, b, rtol=1e-14)


def test_spatial_output_layout_and_cov1():
    """A network without readout returns neural-tangents' (n1, n2, H, H', W, W') layout."""
    x = _images(3, (4, 5), 2, 3)
    _, _, kernel_fn = stax.serial(stax.Conv(3, (3, 3), padding="SAME", W_std=1.2, b_std=0.1), stax.Relu(),
                                  stax.Conv(3, (3, 3), padding="SAME"))
    r = Ref(x)
    r.conv((3, 3), (1, 1), "SAME", 1.2, 0.1)
    r.act("relu")
    r.conv((3, 3), (1, 1), "SAME", 1.0, 0.0)
    k = kernel_fn(x, None, ("nngp", "cov1"))
    want = r.K.reshape(3, 3, 4, 5, 4, 5).transpose(0, 1, 2, 4, 3, 5)
    assert k.nngp.shape == (3, 3, 4, 4, 5, 5)
    np.testing.assert_allclose(k.nngp, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k.cov1, np.stack([want[i, i] for i in range(3)]), rtol=1e-12, atol=1e-14)
    d = kernel_fn(x, None, "nngp", diagonal_spatial=True)
    np.testing.assert_allclose(d, np.einsum("ijhhww->ijhw", want), rtol=1e-12, atol=1e-14)


def test_residual_conv_block():
    x = _images(3, (5, 5), 2, 4)
    block = stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.3), stax.Relu(),
                        stax.Conv(4, (3, 3), padding="SAME", W_std=1.3))
    _, _, kernel_fn = stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.3, b_std=0.1), stax.FanOut(2),
                                  stax.parallel(stax.Identity(), block), stax.FanInSum(), stax.Relu(),
                                  stax.AvgPool((2, 2), (2, 2)), stax.Flatten(), stax.Dense(1))
    r = Ref(x)
    r.conv((3, 3), (1, 1), "SAME", 1.3, 0.1)
    K0, T0 = r.K.copy(), r.T.copy()
    r.conv((3, 3), (1, 1), "SAME", 1.3, 0.0)  # the branch: Conv, Relu, Conv of the first Conv's output
    r.act("relu")
    r.conv((3, 3), (1, 1), "SAME", 1.3, 0.0)
    r.K, r.T = r.K + K0, r.T + T0
    r.act("relu")
    r.pool((2, 2), (2, 2), "VALID")
    r.flatten()
    r.dense(1.0, 0.0)
    np.testing.assert_allclose(kernel_fn(x, None, "ntk"), r.T, rtol=1e-12, atol=1e-14)


def test_gradient_in_W_std_against_finite_differences():
    x = jnp.asarray(_images(3, (5, 5), 2, 5))

    def f(w):
        net = Serial(C.Conv(w, 0.1, (3, 3), padding="SAME"), Activation(Erf()), C.Pool((2, 2), (2, 2)),
                     C.Flatten(), Dense(w, 0.1))
        return kernel(x, None, net).ntk.sum()

    g = jax.grad(f)(1.3)
    h = 1e-5
    fd = (f(1.3 + h) - f(1.3 - h)) / (2 * h)
    assert abs(g - fd) < 1e-7 * abs(fd)  # central difference error ~h^2 f''' ~ 1e-10 relative


def test_vmap_over_W_std():
    x = jnp.asarray(_images(3, (4, 4), 2, 6))

    def f(w):
        return kernel(x, None, Serial(C.Conv(w, 0.1, (3, 3), padding="SAME"), Activation(Relu()), C.Flatten(),
                                      Dense(1.0))).nngp

    ws = jnp.array([1.0, 1.5])
    np.testing.assert_allclose(jax.vmap(f)(ws), jnp.stack([f(w) for w in ws]), rtol=1e-13)


def test_float32():
    x = _images(3, (5, 5), 2, 7)
    _, _, kernel_fn = stax.serial(*NETS["pool_then_flatten"][0]())
    K, T = _reference("pool_then_flatten", x)
    out = kernel(jnp.asarray(x, jnp.float32), None, kernel_fn.net, compute_dtype=jnp.float32)
    assert out.ntk.dtype == jnp.float32
    # measured 1.9e-6 relative (float32 rounding through 8 layers and a pooling)
    np.testing.assert_allclose(out.ntk, T, rtol=1e-5)


def test_bad_input():
    _, _, kernel_fn = stax.serial(stax.Conv(3, (3, 3), W_std=1.0), stax.Relu(), stax.Flatten(), stax.Dense(1))
    with pytest.raises(ValueError, match="larger than the input"):
        kernel_fn(np.ones((2, 2, 2, 3)), None, "nngp")
    with pytest.raises(ValueError, match="image"):
        kernel_fn(np.ones((2, 5)), None, "nngp")
    with pytest.raises(ValueError, match="image shape"):
        kernel_fn(np.ones((2, 5, 5, 3)), np.ones((2, 5, 4, 3)), "nngp")
    with pytest.raises(ValueError, match="filter_shape"):
        kernel_fn(np.ones((2, 5, 3)), None, "nngp")  # 1-d input, 2-d filter
    with pytest.raises(ValueError, match="channel axis"):
        stax.serial(stax.Conv(3, (3, 3)), stax.LayerNorm(axis=(1, 2)))[2](np.ones((2, 5, 5, 3)), None, "nngp")
    with pytest.raises(ValueError, match="padding"):
        stax.Conv(3, (3, 3), padding="FULL")
    bad_sum = stax.serial(stax.FanOut(2), stax.parallel(stax.Conv(2, (3, 3), W_std=1.0),
                                                        stax.Conv(2, (3, 3), padding="SAME")), stax.FanInSum())
    with pytest.raises(ValueError, match="spatial"):
        bad_sum[2](np.ones((2, 5, 5, 3)), None, "nngp")
    with pytest.raises(NotImplementedError, match="MaxPool"):
        stax.MaxPool((2, 2))


def test_parallel_of_conv_branches():
    x = _images(3, (5, 5), 2, 8)
    net = Serial(C.Conv(1.2, 0.1, (3, 3), padding="SAME"),
                 Parallel(Serial(Activation(Relu()), C.Conv(1.3, 0.0, (3, 3), padding="SAME")),
                          Serial(Activation(Erf()), C.Conv(0.9, 0.0, (1, 1))), weights=(0.8, 0.6)),
                 Activation(Relu()), C.GlobalPool("avg"), Dense(1.0))
    r = Ref(x)
    r.conv((3, 3), (1, 1), "SAME", 1.2, 0.1)
    K0, T0 = r.K.copy(), r.T.copy()
    r.act("relu")
    r.conv((3, 3), (1, 1), "SAME", 1.3, 0.0)
    Ka, Ta = r.K, r.T
    r.K, r.T = K0, T0
    r.act("erf")
    r.conv((1, 1), (1, 1), "VALID", 0.9, 0.0)
    r.K, r.T = 0.64 * Ka + 0.36 * r.K, 0.64 * Ta + 0.36 * r.T
    r.act("relu")
    r.global_avg()
    r.dense(1.0, 0.0)
    np.testing.assert_allclose(kernel(x, None, net).ntk, r.T, rtol=1e-12, atol=1e-14)


def test_image_resize_monte_carlo():
    """The ImageResize kernel is the finite network's: a ReLU after one Conv, then only linear layers,
    so the output covariance of width-4 networks equals the kernel exactly; 20,000 networks, each
    entry within 5 standard errors. The target (7, 5) is not square: neural-tangents' kernel resizes
    the axes the other way round (see NT_WRONG in tests/test_stax_conv_golden.py), which this test
    rejects (measured: max |z| 0.47 for the kernel, 9.9 for the swapped target)."""
    x = jnp.asarray(_images(3, (5, 4), 2, 9))

    def net(shape):
        return stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                           stax.ImageResize((-1,) + shape + (-1,), "nearest"), stax.Conv(4, (2, 2), padding="SAME"),
                           stax.Flatten(), stax.Dense(1, W_std=1.0))

    init_fn, apply_fn, kernel_fn = net((7, 5))
    n = 20_000

    def sample(key):
        _, params = init_fn(key, x.shape)
        return apply_fn(params, x)[:, 0]

    f = jax.vmap(sample)(jax.random.split(jax.random.key(0), n))  # (n, 3)
    prods = f[:, :, None] * f[:, None, :]
    mean, se = prods.mean(0), prods.std(0) / np.sqrt(n)
    k = kernel_fn(x, None, "nngp")
    assert np.max(np.abs(mean - k) / se) < 5
    swapped = net((5, 7))[2](x, None, "nngp")
    assert np.max(np.abs(mean - swapped) / se) > 7
