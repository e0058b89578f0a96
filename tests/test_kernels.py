"""The tiled fully-connected kernel core: consistency, autodiff, vmap, numerics, validation."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import rmtjax.activations as A
from rmtjax import stax
from rmtjax.gaussian import GaussHermite, Mehler
from rmtjax.kernels import FullyConnected, kernel


def _x(n, d=12, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d))


def _reference(x1, x2, net):
    """Plain per-layer recursion on full matrices (no tiles, no masks), with NumPy closed forms
    for ReLU: an independent implementation of Arora et al. (2019), eq. (6)."""
    W = np.broadcast_to(np.asarray(net.W_std), (net.depth + 1,))
    b = np.broadcast_to(np.asarray(net.b_std), (net.depth + 1,))
    x1, x2 = np.asarray(x1), np.asarray(x2)
    d = x1.shape[1]
    s12 = W[0] ** 2 * x1 @ x2.T / d + b[0] ** 2
    s11 = W[0] ** 2 * np.sum(x1**2, 1) / d + b[0] ** 2
    s22 = W[0] ** 2 * np.sum(x2**2, 1) / d + b[0] ** 2
    th = s12.copy()
    for l in range(1, net.depth + 1):
        p = np.sqrt(np.outer(s11, s22))
        rho = np.clip(s12 / p, -1, 1)
        t = np.arccos(rho)
        k = p * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        kd = (np.pi - t) / (2 * np.pi)
        s12 = W[l] ** 2 * k + b[l] ** 2
        s11 = W[l] ** 2 * s11 / 2 + b[l] ** 2
        s22 = W[l] ** 2 * s22 / 2 + b[l] ** 2
        th = s12 + W[l] ** 2 * kd * th
    return s12, th


def test_relu_against_independent_numpy_recursion():
    x1, x2 = _x(9), _x(7, seed=1)
    net = FullyConnected(4, jnp.array([1.2, 1.5, 1.3, 1.7, 0.9]), 0.2, A.Relu())
    out = kernel(x1, x2, net)
    ref = _reference(x1, x2, net)
    np.testing.assert_allclose(out.nngp, ref[0], rtol=1e-12)
    np.testing.assert_allclose(out.ntk, ref[1], rtol=1e-12)


@pytest.mark.parametrize("act", [A.Relu(), A.Erf(), A.Gelu(), A.Tanh()], ids=lambda a: type(a).__name__)
def test_tiles_symmetry_and_all_depths_consistent(act):
    x1 = _x(70)
    net = FullyConnected(3, 1.4, 0.1, act)
    full = kernel(x1, None, net, tile=256)
    tiled = kernel(x1, None, net, tile=16)
    asym = kernel(x1, x1 + 0.0, net, tile=24)
    deep = kernel(x1[:30], x1[20:], net, all_depths=True, tile=8)
    for a, b in [(full, tiled), (full, asym)]:
        np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(full.nngp, full.nngp.T)
    assert deep.nngp.shape == (4, 30, 50)
    np.testing.assert_allclose(deep.ntk[-1], full.ntk[:30, 20:], rtol=1e-13)
    for l in range(4):
        sub = kernel(x1[:30], x1[20:], FullyConnected(l, 1.4, 0.1, act))
        np.testing.assert_allclose(deep.nngp[l], sub.nngp, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(deep.ntk[l], sub.ntk, rtol=1e-12, atol=1e-15)


def test_stax_generic_path_matches_core():
    x1, x2 = _x(8), _x(6, seed=2)
    layers = [stax.Dense(64, 1.3, 0.1), stax.Gelu(), stax.Dense(64, 1.6, 0.2), stax.Gelu(), stax.Dense(1, 1.1, 0.3)]
    _, _, kf = stax.serial(*layers)
    generic = kf._transform(stax._input_state(x1, x2))
    core = kernel(x1, x2, FullyConnected(2, jnp.array([1.3, 1.6, 1.1]), jnp.array([0.1, 0.2, 0.3]), A.Gelu()))
    np.testing.assert_allclose(generic.nngp, core.nngp, rtol=1e-13)
    np.testing.assert_allclose(generic.ntk, core.ntk, rtol=1e-13)


def test_standard_parameterization():
    x1, x2 = _x(5), _x(4, seed=3)
    net = FullyConnected(2, 1.5, 0.1, A.Erf(), parameterization="standard", widths=(128, 64))
    out = kernel(x1, x2, net)
    ntk_net = FullyConnected(2, 1.5, 0.1, A.Erf())
    np.testing.assert_allclose(out.nngp, kernel(x1, x2, ntk_net).nngp, rtol=1e-13)  # NNGP is the same
    # hand recursion for the NTK
    d = x1.shape[1]
    s = 1.5**2 * x1 @ x2.T / d + 0.01
    s11 = 1.5**2 * jnp.sum(x1**2, 1) / d + 0.01
    s22 = 1.5**2 * jnp.sum(x2**2, 1) / d + 0.01
    th = x1 @ x2.T + 1.0
    for n_in in (128, 64):
        k, kd = A.Erf().dual(s11[:, None], s22[None, :], s)
        th = n_in * k + 1.5**2 * kd * th + 1.0
        s = 1.5**2 * k + 0.01
        s11 = 1.5**2 * A.Erf().dual(s11, s11, s11)[0] + 0.01
        s22 = 1.5**2 * A.Erf().dual(s22, s22, s22)[0] + 0.01
    np.testing.assert_allclose(out.ntk, th, rtol=1e-12)


def test_jit_equals_eager_and_vmap_over_hyperparameters():
    x = _x(10)

    def f(w, b, a):
        return kernel(x, None, FullyConnected(3, w, b, A.Erf(a, 1.0, 0.0)))

    ws, bs, as_ = jnp.array([1.0, 1.5, 2.0]), jnp.array([0.0, 0.1, 0.5]), jnp.array([0.8, 1.0, 1.3])
    batched = jax.vmap(f)(ws, bs, as_)
    jitted = jax.jit(jax.vmap(f))(ws, bs, as_)
    for i in range(3):
        eager = f(ws[i], bs[i], as_[i])
        np.testing.assert_allclose(batched.ntk[i], eager.ntk, rtol=1e-13)
        np.testing.assert_allclose(jitted.nngp[i], eager.nngp, rtol=1e-13)


def test_vmap_over_numerical_activation_parameter_and_no_retrace():
    x = _x(6)

    @eqx.debug.assert_max_traces(max_traces=1)
    def g(beta):
        return kernel(x, None, FullyConnected(2, 1.3, 0.1, A.Swish(beta))).ntk

    g = jax.jit(g)
    out = [g(jnp.array(b)) for b in (0.5, 1.0, 2.0)]
    assert not np.allclose(out[0], out[2])


@pytest.mark.parametrize("act", [A.Relu(), A.Erf(1.2, 0.8, 0.1), A.Gelu(), A.Tanh(), A.LeakyRelu(0.3)],
                         ids=lambda a: type(a).__name__)
def test_gradients_match_finite_differences(act):
    x1, x2 = _x(5, 6), _x(4, 6, seed=5)

    def f(w, b, x1, act):
        k = kernel(x1, x2, FullyConnected(3, w, b, act))
        return jnp.sum(k.ntk * jnp.arange(1.0, 5.0)[None, :]) + jnp.sum(k.nngp**2)

    check_grads(lambda w, b, x: f(w, b, x, act), (jnp.array(1.4), jnp.array(0.3), x1), order=1,
                modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)
    leaves, treedef = jax.tree_util.tree_flatten(act)
    if leaves:
        check_grads(lambda *l: f(1.4, 0.3, x1, jax.tree_util.tree_unflatten(treedef, l)), tuple(leaves), order=1,
                    modes=("rev",), atol=1e-5, rtol=1e-5)


def test_identical_inputs_give_exact_diagonal():
    # ReLU, b = 0: q^(l) = sigma_w^2 q^(l-1) / 2 and Theta = sum over layers (closed form on the diagonal)
    x = _x(40, 30)
    w = math.sqrt(2.0)
    out = kernel(x, None, FullyConnected(20, w, 0.0, A.Relu()))
    q = np.sum(np.asarray(x) ** 2, 1) / 30 * w**2
    np.testing.assert_allclose(np.diag(out.nngp), q, rtol=1e-14)
    np.testing.assert_allclose(np.diag(out.ntk), 21 * q, rtol=1e-14)  # kdot = 1/2 exactly, w^2 kdot = 1


SINGULAR_ACTS = [A.Relu(), A.Erf(), A.Gelu(), A.Abs(), A.Sign(), A.RectifiedMonomial(2), A.Sin(), A.Tanh(), A.Hermite(2)]


@pytest.mark.parametrize("act", SINGULAR_ACTS, ids=lambda a: type(a).__name__)
def test_no_nan_in_values_or_gradients(act):
    base = _x(3, 5)
    x1 = jnp.concatenate([base, jnp.zeros((1, 5))])
    x2 = jnp.concatenate([base[:2], -base[:1], jnp.zeros((1, 5))])  # identical, opposite, zero rows
    # depth 50 for the closed forms; the numerical (Mehler) path is the same code at any depth
    depth = 6 if isinstance(act, (A.Hermite, A.RectifiedMonomial)) else (10 if isinstance(act, A.Tanh) else 50)

    def f(w, b, x1, x2):
        k = kernel(x1, x2, FullyConnected(depth, w, b, act))
        return jnp.sum(k.nngp) + jnp.sum(k.ntk)

    for b in (0.0, 0.1):
        val = f(1.0, b, x1, x2)
        grads = jax.grad(f, argnums=(0, 1, 2, 3))(jnp.array(1.0), jnp.array(b), x1, x2)
        assert np.isfinite(float(val))
        for g in grads:
            assert np.all(np.isfinite(np.asarray(g)))
        g_sym = jax.grad(lambda x: jnp.sum(kernel(x, None, FullyConnected(depth, 1.0, b, act)).ntk))(x1)
        assert np.all(np.isfinite(np.asarray(g_sym)))


@pytest.mark.parametrize("act,w", [(A.Relu(), math.sqrt(2)), (A.Erf(), 1.5), (A.Gelu(), 1.6)], ids=["relu", "erf", "gelu"])
def test_float32_close_to_float64_at_depth_20(act, w):
    x = _x(30, 50).astype(jnp.float32).astype(jnp.float64)  # the same inputs in both precisions
    net = FullyConnected(20, w, 0.05, act)
    k64 = kernel(x, None, net)
    net32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_array(a) else a, net)
    k32 = kernel(x.astype(jnp.float32), None, net32)
    assert k32.ntk.dtype == jnp.float32
    for a, b in [(k32.nngp, k64.nngp), (k32.ntk, k64.ntk)]:
        rel = np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b)) / np.abs(np.asarray(b)))
        assert rel < 1e-5, rel


@given(st.integers(2, 7), st.integers(0, 6), st.floats(0.3, 2.5), st.floats(0.0, 1.0), st.sampled_from(["relu", "erf", "tanh"]))
def test_kernels_symmetric_psd_invariant(n, depth, w, b, name):
    act = {"relu": A.Relu(), "erf": A.Erf(), "tanh": A.Tanh()}[name]
    x = _x(n, 4, seed=n + depth)
    k = kernel(x, None, FullyConnected(depth, w, b, act))
    for m in (k.nngp, k.ntk):
        m = np.asarray(m)
        np.testing.assert_array_equal(m, m.T)
        assert np.min(np.linalg.eigvalsh(m)) > -1e-10 * np.max(np.abs(m))
    corr = np.asarray(k.nngp) / np.sqrt(np.outer(np.diag(k.nngp), np.diag(k.nngp)))
    assert np.all(np.abs(corr) <= 1 + 1e-12)


def test_numerical_method_choice_changes_little():
    x = _x(8)
    a = kernel(x, None, FullyConnected(4, 1.5, 0.1, A.Tanh()), method=Mehler(128))
    b = kernel(x, None, FullyConnected(4, 1.5, 0.1, A.Tanh()))
    c = kernel(x, None, FullyConnected(4, 1.5, 0.1, A.Tanh()), method=GaussHermite(80))
    # variances reach ~3 here: Mehler(64) is within ~1e-6 of Mehler(128) at rho ~ 1 (see gaussian.py)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=2e-6)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=2e-7)
    np.testing.assert_allclose(a.ntk, c.ntk, rtol=1e-3)  # 2-d Gauss-Hermite is poor at rho = 1 (diagonal)


class TestBadInput:
    def test_negative_or_nonfinite_hyperparameters(self):
        with pytest.raises(ValueError, match="W_std"):
            FullyConnected(2, -1.0, 0.1)
        with pytest.raises(ValueError, match="b_std"):
            FullyConnected(2, 1.0, float("nan"))
        with pytest.raises(ValueError, match="W_std"):
            FullyConnected(2, jnp.ones(5))
        with pytest.raises(ValueError, match="depth"):
            FullyConnected(-1)
        with pytest.raises(ValueError, match="parameterization"):
            FullyConnected(2, parameterization="mup")
        with pytest.raises(ValueError, match="widths"):
            FullyConnected(2, parameterization="standard")

    def test_shapes_and_nan_inputs(self):
        net = FullyConnected(2)
        with pytest.raises(ValueError, match="x1"):
            kernel(jnp.ones(5), None, net)
        with pytest.raises(ValueError, match="features"):
            kernel(jnp.ones((3, 5)), jnp.ones((3, 4)), net)
        with pytest.raises(ValueError, match="x2"):
            kernel(jnp.ones((3, 5)), jnp.ones((2, 3, 5)), net)
        with pytest.raises(ValueError, match="x1 contains NaN"):
            kernel(jnp.full((3, 5), jnp.nan), None, net)

    def test_traced_values_checked_with_error_if(self):
        x = _x(3)
        f = jax.jit(lambda w: kernel(x, None, FullyConnected(2, w, 0.1)).ntk)
        f(jnp.array(1.0))
        with pytest.raises(Exception, match="W_std must be finite and >= 0"):
            jax.block_until_ready(f(jnp.array(-1.0)))
        g = jax.jit(lambda x: kernel(x, None, FullyConnected(2, 1.0, 0.1)).ntk)
        with pytest.raises(Exception, match="x1 contains NaN"):
            jax.block_until_ready(g(jnp.full((3, 4), jnp.nan)))


def test_opposite_inputs_through_sign_layers_are_exact():
    # sign(u) sign(-u) = -1 surely: through stacked Sign layers without bias K(x, -x) = -K(x, x)
    # exactly. neural-tangents drifts to -0.99 at depth 3 (theta -> sqrt(theta) per layer).
    x = _x(3, 12)
    net = FullyConnected(3, 1.0, None, A.Sign())
    k = kernel(x, -x, net)
    np.testing.assert_array_equal(np.diag(k.nngp), -np.diag(kernel(x, None, net).nngp))


def test_tiles_spread_over_host_devices_match_one_device():
    assert len(jax.devices()) >= 2  # conftest asks XLA for two host devices
    x1 = _x(50)
    net = FullyConnected(10, 1.4, 0.1, A.Erf())  # deep enough to be sharded
    many = kernel(x1, None, net, tile=16)
    one = kernel(x1, None, net, tile=16, devices=[])
    np.testing.assert_allclose(many.ntk, one.ntk, rtol=1e-14)
    # gradients through padded, sharded tiles equal those of the single-tile path
    for x2 in (None, x1[:20]):
        grads = [jax.grad(lambda w: kernel(x1, x2, FullyConnected(10, w, 0.1, A.Erf()), tile=t).ntk.sum())(1.4)
                 for t in (16, 256)]
        assert float(grads[0]) == pytest.approx(float(grads[1]), rel=1e-12)
