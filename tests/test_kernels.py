"""The tiled fully-connected kernel core: consistency, autodiff, vmap, numerics, validation."""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _gradcheck import check_gradients_batched
from hypothesis import given, settings
from hypothesis import strategies as st

import rmtjax.activations as A
from rmtjax import stax
from rmtjax.gaussian import Auto, ClosedForm, GaussHermite, Mehler, _expectations
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


# The tiling, the symmetric half, all_depths and identical-row detection are the same code for every
# activation (the activation only supplies its Gaussian expectations, checked for each activation
# against neural-tangents in test_stax_golden.py): a closed form with a kink and a smooth one. Each
# (shape, tile, depth, all_depths) is a compiled program; a numerical activation's compile twice as long
# (measured 2026-12-06 with the eight programs this test had: Tanh 30 s of XLA compile, Erf 15 s).
@pytest.mark.parametrize("act", [A.Relu(), A.Erf()], ids=lambda a: type(a).__name__)
def test_tiles_symmetry_and_all_depths_consistent(act):
    x1 = _x(40)
    net = FullyConnected(2, 1.4, 0.1, act)
    full = kernel(x1, None, net, tile=256)  # one tile
    tiled = kernel(x1, None, net, tile=16)  # 3 x 3 tiles, the upper half computed
    # x2 given: 4 x 3 tiles of 8, rows 20-29 of x1 identical to rows 0-9 of x2
    deep = kernel(x1[:30], x1[20:], net, all_depths=True, tile=8)
    np.testing.assert_allclose(tiled.nngp, full.nngp, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(tiled.ntk, full.ntk, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(full.nngp, full.nngp.T)
    for k in (tiled.nngp, tiled.ntk):  # exact symmetry inside the diagonal tiles too (was 9e-16 off)
        np.testing.assert_array_equal(k, k.T)
    assert deep.nngp.shape == (3, 30, 20)
    # the last depth of the asymmetric tiled call is the symmetric one-tile kernel's block
    np.testing.assert_allclose(deep.nngp[-1], full.nngp[:30, 20:], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(deep.ntk[-1], full.ntk[:30, 20:], rtol=1e-13, atol=1e-14)
    for l in range(2):  # the other depths: networks of that depth (asymmetric, one tile)
        sub = kernel(x1[:30], x1[20:], FullyConnected(l, 1.4, 0.1, act))
        np.testing.assert_allclose(deep.nngp[l], sub.nngp, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(deep.ntk[l], sub.ntk, rtol=1e-12, atol=1e-15)


def test_tiled_symmetric_kernel_is_exactly_symmetric():
    # a diagonal tile is computed whole; its two triangles differed by rounding (measured 4e-16 for
    # Gelu and Tanh at n = 40, tile 16, before the engine mirrored them; Relu and Erf happened to be exact)
    k = kernel(_x(40), None, FullyConnected(2, 1.4, 0.1, A.Gelu()), tile=16)
    for a in (k.nngp, k.ntk):
        np.testing.assert_array_equal(a, a.T)


def _np_relu(s):
    """ReLU's arc-cosine kernel (Cho & Saul 2009) on a NumPy state (nngp, ntk, var1 (n1, 1), var2 (1, n2))."""
    nngp, ntk, v1, v2 = s
    p = np.sqrt(v1 * v2)
    t = np.arccos(np.clip(nngp / p, -1, 1))
    k = p * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
    return k, (np.pi - t) / (2 * np.pi) * ntk, v1 / 2, v2 / 2


def _np_erf(s):
    nngp, ntk, v1, v2 = s
    k, kd = _erf_dual(v1, v2, nngp)
    return k, kd * ntk, _erf_dual(v1, v1, v1)[0], _erf_dual(v2, v2, v2)[0]


def _np_dense(w, b):
    return lambda s: (w**2 * s[0] + b**2, w**2 * s[0] + b**2 + w**2 * s[1], w**2 * s[2] + b**2, w**2 * s[3] + b**2)


def _np_sum(states, weights):
    return tuple(sum(w**2 * s[i] for w, s in zip(weights, states)) for i in range(4))


# A graph with every kind of layer: Dense, a residual block with weights, parallel branches with
# weights (ReLU and Erf with a parameter), a stacked run of two residual blocks, the readout.
GRAPH_ARGS = (1.3, 0.2, 0.8, 0.6, 1.1, 0.7, 1.2)  # W_std, b_std, alpha, beta, erf's a, w_relu, w_erf


def _graph(w, b, alpha, beta, a, w1, w2):
    from rmtjax.kernels import Activation, Dense, Parallel, Residual, Serial

    def res(scale):
        return Residual(Serial(Activation(A.Relu()), Dense(scale * w, b)), weights=jnp.stack([alpha, beta]))

    return Serial(Dense(w, b), res(1.0), Parallel(Activation(A.Relu()), Serial(Activation(A.Erf(a, 1.0, 0.0)), Dense(w, b)),
                                                  weights=jnp.stack([w1, w2])),
                  Dense(w, b), res(0.9), res(1.1), Activation(A.Relu()), Dense(w, b))


def _np_graph(x1, x2, w, b, alpha, beta, a, w1, w2):
    """The same graph in NumPy on full matrices: an independent implementation of the layer maps."""
    x1, x2 = np.asarray(x1), np.asarray(x2)
    d = x1.shape[1]
    s = (x1 @ x2.T / d, 0 * x1 @ x2.T, np.sum(x1**2, 1)[:, None] / d, np.sum(x2**2, 1)[None, :] / d)

    def erf_a(s):  # a erf(x): kernels scale by a^2
        k, kd, v1, v2 = _np_erf(s)
        return a**2 * k, a**2 * kd, a**2 * v1, a**2 * v2

    def res(s, scale):
        return _np_sum([s, _np_dense(scale * w, b)(_np_relu(s))], [alpha, beta])

    s = _np_dense(w, b)(s)
    s = res(s, 1.0)
    s = _np_sum([_np_relu(s), _np_dense(w, b)(erf_a(s))], [w1, w2])
    s = _np_dense(w, b)(s)
    s = res(res(s, 0.9), 1.1)
    return _np_dense(w, b)(_np_relu(s))[:2]


@pytest.fixture(scope="module")
def graph_results():
    """The graph's kernels, tiled (x2 given, 3 x 2 tiles of 8) and in one tile, its diagonal, and the
    same through the stax facade's engine net, in one compiled program each."""
    from rmtjax.kernels import kernel_diagonal

    x1, x2 = _x(20, 6), _x(13, 6, seed=4)
    x2 = x2.at[0].set(x1[3]).at[1].set(-x1[5])  # an identical and an opposite pair
    net = _graph(*map(jnp.asarray, GRAPH_ARGS))
    return dict(x1=x1, x2=x2, net=net, one=kernel(x1, x2, net), tiled=kernel(x1, x2, net, tile=8),
                sym=kernel(x1, None, net), diag=kernel_diagonal(x1, net))


def test_graph_against_independent_numpy_recursion(graph_results):
    r = graph_results
    nngp, ntk = _np_graph(r["x1"], r["x2"], *GRAPH_ARGS)
    # NumPy's correlation of the identical and the opposite pair is +-(1 - O(eps)): ReLU's derivative
    # kernel there is sqrt(eps) off, so those two entries are checked against the symmetric kernel
    generic = np.ones(nngp.shape, bool)
    generic[3, 0] = generic[5, 1] = False
    for out in (r["one"], r["tiled"]):
        np.testing.assert_allclose(np.asarray(out.nngp)[generic], nngp[generic], rtol=1e-12)
        np.testing.assert_allclose(np.asarray(out.ntk)[generic], ntk[generic], rtol=1e-12)
    # the identical pair is exact (correlation exactly 1 at every activation): the symmetric kernel's
    # diagonal entry to rounding (a missed pair: sqrt(eps) ~ 1e-8)
    np.testing.assert_allclose(r["one"].ntk[3, 0], r["sym"].ntk[3, 3], rtol=1e-14)
    # the diagonal: O(n) with the same layers, equal to the kernel's diagonal to rounding
    np.testing.assert_allclose(r["diag"].nngp, np.diag(r["sym"].nngp), rtol=1e-14)
    np.testing.assert_allclose(r["diag"].ntk, np.diag(r["sym"].ntk), rtol=1e-14)


def test_graph_gradients_match_finite_differences():
    """d/d(W_std, b_std, residual weights, branch weights, Erf's a) through residual and parallel
    layers: forward and reverse mode against finite differences (one compiled program)."""
    from rmtjax.kernels import Activation, Dense, Parallel, Residual, Serial

    x1, x2 = _x(4, 5), _x(3, 5, seed=5)

    def f(w, b, alpha, beta, a, w1, w2):  # the graph's kinds of layer once each (a smaller program)
        net = Serial(Dense(w, b), Residual(Serial(Activation(A.Relu()), Dense(w, b)), weights=jnp.stack([alpha, beta])),
                     Parallel(Activation(A.Relu()), Serial(Activation(A.Erf(a, 1.0, 0.0)), Dense(w, b)),
                              weights=jnp.stack([w1, w2])), Dense(w, b))
        k = kernel(x1, x2, net)
        return k.ntk + k.nngp**2

    check_gradients_batched(f, GRAPH_ARGS, [tuple(range(7))], atol=1e-6, rtol=1e-6)


def test_serial_runs_repeats_as_a_scan_and_equals_fully_connected():
    """A hand-built Serial of per-layer Dense/Activation layers (grouped into one Stack by Serial) is
    FullyConnected with per-layer W_std, b_std; all_depths gives the kernel after every Dense."""
    from rmtjax.kernels import Activation, Dense, Serial

    W, b = [1.2, 1.5, 1.3, 0.9], [0.1, 0.2, 0.0, 0.3]
    layers = [Dense(W[0], b[0])]
    for l in range(1, 4):
        layers += [Activation(A.Gelu()), Dense(W[l], b[l])]
    x = _x(9, 7)
    fc = FullyConnected(3, jnp.array(W), jnp.array(b), A.Gelu())
    ours, ref = kernel(x, None, Serial(*layers), all_depths=True), kernel(x, None, fc, all_depths=True)
    assert ours.nngp.shape == (4, 9, 9)
    np.testing.assert_allclose(ours.nngp, ref.nngp, rtol=1e-14)
    np.testing.assert_allclose(ours.ntk, ref.ntk, rtol=1e-14)


def _erf_dual(q1, q2, q12):
    """E[erf(u) erf(v)] and E[erf'(u) erf'(v)] in closed form (Williams 1997), in NumPy."""
    p = (1 + 2 * q1) * (1 + 2 * q2)
    return 2 / np.pi * np.arcsin(2 * q12 / np.sqrt(p)), 4 / np.pi / np.sqrt(p - 4 * q12**2)


def test_standard_parameterization():
    x1, x2 = _x(5), _x(4, seed=3)
    net = FullyConnected(2, 1.5, 0.1, A.Erf(), parameterization="standard", widths=(128, 64))
    out = kernel(x1, x2, net)
    # hand recursion in NumPy (one compiled program for the kernel, none for the reference); the NNGP is
    # that of the NTK parameterization
    x1, x2 = np.asarray(x1), np.asarray(x2)
    d = x1.shape[1]
    s = 1.5**2 * x1 @ x2.T / d + 0.01
    s11 = 1.5**2 * np.sum(x1**2, 1) / d + 0.01
    s22 = 1.5**2 * np.sum(x2**2, 1) / d + 0.01
    th = x1 @ x2.T + 1.0
    for n_in in (128, 64):
        k, kd = _erf_dual(s11[:, None], s22[None, :], s)
        th = n_in * k + 1.5**2 * kd * th + 1.0
        s = 1.5**2 * k + 0.01
        s11 = 1.5**2 * _erf_dual(s11, s11, s11)[0] + 0.01
        s22 = 1.5**2 * _erf_dual(s22, s22, s22)[0] + 0.01
    np.testing.assert_allclose(out.nngp, s, rtol=1e-13)
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


# The engine chains derivatives the same way for every activation: checked end to end (inputs,
# W_std, b_std, the activation's parameters, through depth 3) for a closed form with a kink and one
# with parameters; each activation's own derivatives are checked below on its Gaussian expectations.
@pytest.mark.parametrize("act", [A.Relu(), A.Erf(1.2, 0.8, 0.1)], ids=lambda a: type(a).__name__)
def test_gradients_match_finite_differences(act):
    x1, x2 = _x(5, 6), _x(4, 6, seed=5)
    leaves, treedef = jax.tree_util.tree_flatten(act)

    def f(w, b, x1, *leaves):
        k = kernel(x1, x2, FullyConnected(3, w, b, jax.tree_util.tree_unflatten(treedef, leaves)))
        return jnp.sum(k.ntk * jnp.arange(1.0, 5.0)[None, :]) + jnp.sum(k.nngp**2)

    # directions over (W_std, b_std, x1), and over the activation's parameters
    groups = [(0, 1, 2)] + ([tuple(range(3, 3 + len(leaves)))] if leaves else [])
    check_gradients_batched(f, (1.4, 0.3, x1, *leaves), groups, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", [A.Relu(), A.Erf(1.2, 0.8, 0.1), A.Gelu(), A.Tanh(), A.LeakyRelu(0.3)],
                         ids=lambda a: type(a).__name__)
def test_expectation_gradients_match_finite_differences(act):
    """The activation's part of the kernel's derivatives, in small programs (no tiles, no depth scan):
    E[phi phi] and E[phi' phi'] as the engine evaluates them (gaussian._expectations, the default
    method: closed form, Mehler series for Tanh), differentiated with respect to q1, q2, q12 at a
    generic pair, along the diagonal q1 = q2 = q12 = q (the variance recursion, kernels._core._diagonal),
    and with respect to the activation's parameters."""
    leaves, treedef = jax.tree_util.tree_flatten(act)

    def f(q1, q2, q12, q, *leaves):
        a = jax.tree_util.tree_unflatten(treedef, leaves)
        k, kdot = _expectations(a, q1, q2, q12, Auto())
        return k + 0.5 * kdot + 0.3 * _expectations(a, q, q, q, Auto()).k

    args = (1.3, 0.7, 0.45, 0.9, *leaves)
    check_gradients_batched(f, args, [tuple(range(len(args)))], atol=1e-6, rtol=1e-6)


def test_identical_inputs_give_exact_diagonal():
    # ReLU, b = 0: q^(l) = sigma_w^2 q^(l-1) / 2 and Theta = sum over layers (closed form on the diagonal)
    x = _x(40, 30)
    w = math.sqrt(2.0)
    out = kernel(x, None, FullyConnected(20, w, 0.0, A.Relu()))
    q = np.sum(np.asarray(x) ** 2, 1) / 30 * w**2
    np.testing.assert_allclose(np.diag(out.nngp), q, rtol=1e-14)
    np.testing.assert_allclose(np.diag(out.ntk), 21 * q, rtol=1e-14)  # kdot = 1/2 exactly, w^2 kdot = 1


def _check_identical_and_opposite_rows():
    """Rows shared by x1 and x2 at other positions (other shapes, tiles, fusions) and rows negated:
    correlation exactly +1 / -1 at the first layer, so the depth-1 ReLU kernels are the closed form
    to rounding."""
    x = _x(40)
    w = 1.4
    for bias in (0.1, 0.0):
        net = FullyConnected(1, w, bias, A.Relu())
        q0 = np.asarray(w**2 * jnp.sum(x**2, 1) / x.shape[1] + bias**2)[20:30]
        stax_fn = stax.serial(stax.Dense(8, w, bias), stax.Relu(), stax.Dense(1, w, bias))[2]
        outs = [kernel(x[:30], x[20:], net, tile=t) for t in (128, 8)] + [stax_fn(x[:30], x[20:], ("nngp", "ntk"))]
        for out in outs:
            same = np.asarray(out.ntk)[np.arange(20, 30), np.arange(10)]
            # theta = 0: E[phi phi] = q/2, E[phi' phi'] = 1/2
            exact = w**2 * q0 / 2 + bias**2 + w**2 * 0.5 * q0
            np.testing.assert_allclose(same, exact, rtol=2e-15)  # rounding (measured 4.4e-16); a missed pair: 3e-9
        if bias == 0.0:  # theta = pi at the first activation: both kernels 0 (rounding: measured 4e-17 q; a
            # correlation of -1 + eps instead would leave sqrt(eps) q ~ 1e-8 q)
            for out in (kernel(x[:30], -x[20:], net), stax_fn(x[:30], -x[20:], ("nngp", "ntk"))):
                for k in (out.nngp, out.ntk):
                    assert np.all(np.abs(np.asarray(k)[np.arange(20, 30), np.arange(10)]) <= 1e-15 * q0)


def test_identical_and_opposite_rows_exact_in_every_program():
    """Under this module's XLA -O0 (conftest: jax_disable_most_optimizations sets
    xla_backend_optimization_level=0, with the elemental fusion emitter), the compiler settings under
    which the check failed before the hashed row signatures and the materialised variances (XLA
    recomputed a row's variance in two fusions, one with a fused multiply-add, and the depth-1 NTK of
    identical rows came out 3e-9 relative off: a missed sqrt(eps)). Measured 2026-12-06 with the engine
    of commit c6ae07e: 3.3e-9 relative in-process under -O0, the same as in a fresh process with
    --xla_backend_optimization_level=0 (which this test used to start; at XLA's default level the old
    engine happened to pass)."""
    _check_identical_and_opposite_rows()


SINGULAR_ACTS = [A.Relu(), A.Erf(), A.Gelu(), A.Abs(), A.Sign(), A.RectifiedMonomial(2), A.Sin(), A.Tanh(), A.Hermite(2)]


def _singular_inputs():
    base = _x(3, 5)
    x1 = jnp.concatenate([base, jnp.zeros((1, 5))])
    x2 = jnp.concatenate([base[:2], -base[:1], jnp.zeros((1, 5))])  # identical, opposite, zero rows
    return x1, x2


def _depth(act):
    # depth 50 for the closed forms; the numerical (Mehler) path is the same code at any depth
    # (lax.scan over depth: the compile does not grow with it, so depth costs only runtime)
    return 4 if isinstance(act, (A.Hermite, A.RectifiedMonomial, A.Tanh)) else 50


@pytest.mark.parametrize("act", SINGULAR_ACTS, ids=lambda a: type(a).__name__)
def test_no_nan_in_values_or_gradients(act):
    """Identical, opposite and zero rows (correlation +-1, variance 0 without bias) between x1 and x2:
    the activation's expectations and their derivatives at the singular points. The same points
    through the symmetric path (x2 = None) are the same expectations, checked below for two
    activations (the gradients of each are as expensive to compile as these)."""
    x1, x2 = _singular_inputs()
    depth = _depth(act)

    def f(w, b, x1, x2):
        k = kernel(x1, x2, FullyConnected(depth, w, b, act))
        return jnp.sum(k.nngp) + jnp.sum(k.ntk)

    value_and_grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))  # one program, both biases
    for b in (0.0, 0.1):
        val, grads = value_and_grad(jnp.array(1.0), jnp.array(b), x1, x2)
        assert np.isfinite(float(val))
        for g in grads:
            assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("act", [A.Relu(), A.Tanh()], ids=lambda a: type(a).__name__)
def test_no_nan_in_gradients_of_the_symmetric_path(act):
    x1, _ = _singular_inputs()
    depth = _depth(act)
    grad = jax.jit(jax.grad(lambda x, b: jnp.sum(kernel(x, None, FullyConnected(depth, 1.0, b, act)).ntk)))
    for b in (0.0, 0.1):
        assert np.all(np.isfinite(np.asarray(grad(x1, jnp.array(b)))))


_FLOAT32_CASES = {"relu": (A.Relu(), math.sqrt(2)), "erf": (A.Erf(), 1.5), "gelu": (A.Gelu(), 1.6), "tanh": (A.Tanh(), 1.5)}


@pytest.fixture(scope="module")
def float64_depth_20():
    """Float32 inputs and the float64 kernels on them that both float32 tests compare with (one
    compiled program per activation, shared by the two tests): depth 20."""
    x = np.asarray(_x(30, 50), np.float32)  # drawn with x64 on (a float32-mode draw differs)
    return x, {name: kernel(x.astype(np.float64), None, FullyConnected(20, w, 0.05, act))
               for name, (act, w) in _FLOAT32_CASES.items()}


@pytest.mark.parametrize("name", ["relu", "erf", "gelu"])
def test_float32_close_to_float64_at_depth_20(name, float64_depth_20):
    act, w = _FLOAT32_CASES[name]
    net32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_array(a) else a,
                                   FullyConnected(20, w, 0.05, act))
    x, refs = float64_depth_20
    k32 = kernel(x, None, net32)
    k64 = refs[name]
    assert k32.ntk.dtype == jnp.float32
    for a, b in [(k32.nngp, k64.nngp), (k32.ntk, k64.ntk)]:
        rel = np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b)) / np.abs(np.asarray(b)))
        assert rel < 1e-5, rel


# each (n, depth, activation) is a compile (~0.6 s): one size (7 rows), a linear and a deep network, many values
@settings(max_examples=12)
@given(st.sampled_from([7]), st.sampled_from([0, 6]), st.floats(0.3, 2.5), st.floats(0.0, 1.0),
       st.sampled_from(["relu", "erf", "tanh"]))
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

    @pytest.mark.parametrize("make,match", [
        (lambda: FullyConnected(3, 1 + 5j), "W_std must be real"),  # issue 12: stored 1.0
        (lambda: FullyConnected(3, 1.0, 0.5j), "b_std must be real"),
        (lambda: FullyConnected(3, True), "W_std must be a real number"),
        (lambda: FullyConnected(3, "1.0"), "W_std must be a real number"),
        (lambda: FullyConnected(True), "depth must be an integer, got a boolean"),
        (lambda: FullyConnected(2.0), "depth must be an integer"),
        (lambda: FullyConnected(2, activation=jnp.tanh), "activation must be"),
        (lambda: FullyConnected(2, widths=(4, True), parameterization="standard"), "widths"),
        (lambda: FullyConnected(2, widths=(4, 2.5), parameterization="standard"), "widths"),
        (lambda: FullyConnected(2, widths=(4,), parameterization="standard"), "widths"),
        (lambda: FullyConnected(2, widths=0), "widths"),
    ])
    def test_spec_arguments(self, make, match):
        with pytest.raises(ValueError, match=match):
            make()

    def test_shapes_and_nan_inputs(self):
        net = FullyConnected(2)
        with pytest.raises(ValueError, match="x1"):
            kernel(jnp.ones(5), None, net)
        with pytest.raises(ValueError, match="features"):
            kernel(jnp.ones((3, 5)), jnp.ones((3, 4)), net)
        with pytest.raises(ValueError, match="x2"):
            kernel(jnp.ones((3, 5)), jnp.ones((2, 3, 5)), net)
        with pytest.raises(ValueError, match="x1 must be finite"):
            kernel(jnp.full((3, 5), jnp.nan), None, net)
        with pytest.raises(ValueError, match="x2 must be real"):
            kernel(np.ones((3, 5)), np.ones((3, 5)) * 1j, net)
        with pytest.raises(ValueError, match="x1 must be a real number or array, got a boolean"):
            kernel(np.ones((3, 5), bool), None, net)
        with pytest.raises(ValueError, match="x1 must have at least one row"):
            kernel(np.ones((0, 5)), None, net)

    def test_zero_features_error_and_zero_rows_fine(self):
        # issue 12: an (n, 0) input gave a NaN kernel
        with pytest.raises(ValueError, match="x1 must have at least one feature"):
            kernel(np.zeros((3, 0)), None, FullyConnected(1))
        with pytest.raises(ValueError, match="x1 must have at least one feature"):
            stax.serial(stax.Dense(1))[2](np.zeros((3, 0)))
        # all-zero rows are legitimate inputs: finite kernels (with and without bias)
        x = np.zeros((4, 12))
        x[1] = np.asarray(_x(1))[0]
        for b in (0.0, 0.1):
            out = kernel(x, None, FullyConnected(3, 1.4, b, A.Erf()))
            assert np.all(np.isfinite(np.asarray(out.ntk))) and np.all(np.isfinite(np.asarray(out.nngp)))

    @pytest.mark.parametrize("kw,match", [
        (dict(tile=True), "tile must be an integer, got a boolean"), (dict(tile=4), "tile"),
        (dict(tile=16.0), "tile"), (dict(all_depths=1), "all_depths must be True or False"),
        (dict(buckets="yes"), "buckets"), (dict(method="mehler"), "method must be"),
        (dict(method=ClosedForm()), "no closed-form"), (dict(devices=[0]), "devices"),
        (dict(devices=3), "devices"), (dict(compute_dtype=jnp.int32), "compute_dtype"),
        (dict(compute_dtype=jnp.complex64), "compute_dtype"),
    ])
    def test_kernel_arguments(self, kw, match):
        net = FullyConnected(1, 1.0, 0.1, A.Tanh())
        with pytest.raises(ValueError, match=match):
            kernel(np.ones((3, 4)), None, net, **kw)
        with pytest.raises(ValueError, match="net must be an rmtjax.kernels layer.*kernel_fn"):
            kernel(np.ones((3, 4)), None, stax.Dense(1))

    def test_traced_values_checked(self):
        x = _x(3)
        f = jax.jit(lambda w: kernel(x, None, FullyConnected(2, w, 0.1)).ntk)
        f(jnp.array(1.0))
        with pytest.raises(Exception, match="W_std must be finite and >= 0"):
            jax.block_until_ready(f(jnp.array(-1.0)))
        g = jax.jit(lambda x: kernel(x, None, FullyConnected(2, 1.0, 0.1)).ntk)
        with pytest.raises(Exception, match="x1 must be finite"):
            jax.block_until_ready(g(jnp.full((3, 4), jnp.nan)))
        h = jax.jit(lambda a: kernel(x, None, FullyConnected(2, 1.0, 0.1, A.LeakyRelu(a))).ntk)
        with pytest.raises(Exception, match="LeakyRelu.alpha must be finite"):
            jax.block_until_ready(h(jnp.array(jnp.inf)))

    def test_nan_kernel_is_an_error(self):
        # an activation that is NaN for some inputs: reported, never returned
        act = A.Custom(lambda x, p: jnp.log(x))
        with pytest.raises(ValueError, match="x1, x2: the kernel of Custom is NaN"):
            kernel(np.ones((3, 4)), None, FullyConnected(1, 1.0, 0.1, act), method=GaussHermite(8))


def test_compiles_once_per_shape_and_buckets_bound_compiles():
    from rmtjax.kernels import _core, bucket_size

    net = FullyConnected(2, 1.3, 0.1, A.Erf())
    x = np.asarray(_x(200, 5, seed=7))
    # start from an empty program cache: it is dropped every 16 traces (_MAX_PROGRAMS), which earlier
    # tests in the same process would otherwise make happen in the middle of the loop below
    _core._kernel_core.clear_cache()
    _core._since_clear[0] = 0
    t0 = _core.TRACES[0]
    first = kernel(x[:9], None, net)
    kernel(x[:9], None, net)
    kernel(jnp.asarray(x[:9]), None, net)
    assert _core.TRACES[0] - t0 == 1  # one compile per shape (was two), reused afterwards
    # 23 distinct sizes in a loop over n compile a handful of programs with buckets (tiles of 16 here, so
    # that few small programs show both kinds of bucket: powers of two up to a tile, whole tiles beyond)
    t0 = _core.TRACES[0]
    sizes = list(range(3, 49, 2))
    outs = {n: kernel(x[:n], None, net, buckets=True, tile=16) for n in sizes}
    assert _core.TRACES[0] - t0 <= 4  # buckets 8, 16, 32, 48
    assert sorted({bucket_size(n, 16) for n in sizes}) == [8, 16, 32, 48]
    # padding rows change neither the real entries nor their gradients
    np.testing.assert_allclose(outs[9].ntk, first.ntk, rtol=1e-14)  # one tile, padded to 16 rows
    exact = kernel(x[:47], x[:47] + 0.0, net, tile=16)  # unpadded (a different program: x2 given)
    np.testing.assert_allclose(outs[47].nngp, exact.nngp, rtol=1e-13, atol=1e-15)  # 3 x 3 tiles, one padding row
    np.testing.assert_allclose(outs[47].ntk, exact.ntk, rtol=1e-13, atol=1e-15)
    g = jax.jit(lambda x: [jax.grad(lambda x: kernel(x, None, net, buckets=b).ntk.sum())(x) for b in (True, False)])(
        jnp.asarray(x[:20]))  # padded to 32 rows, and not padded
    np.testing.assert_allclose(g[0], g[1], rtol=1e-12, atol=1e-14)
    assert [bucket_size(n) for n in (1, 8, 9, 128, 129, 257, 385, 513, 769)] == [8, 8, 16, 128, 256, 384, 512, 768,
                                                                                  1024]


def test_default_tile_per_backend():
    # tile=None (the default) is 128 on CPUs, 1024 on accelerators (chosen from the devices given)
    from rmtjax.kernels import bucket_size, default_tile

    class FakeGPU:
        platform = "gpu"

    assert default_tile([FakeGPU()]) == 1024 and default_tile(jax.devices("cpu")) == 128
    assert default_tile() == (128 if jax.default_backend() == "cpu" else 1024)
    assert default_tile("not devices") == default_tile()  # kernel() reports a bad devices argument itself
    assert bucket_size(300) == bucket_size(300, default_tile())
    from rmtjax.kernels._matvec import matvec_tile

    assert matvec_tile() == (256 if jax.default_backend() == "cpu" else 1024)  # kernel_matvec, kernel_ridge_cg


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "tanh"])
def test_kernel_float32_mode_close_to_float64(name, float64_depth_20, float32_mode):
    # (pytest sets up the module-scoped float64 references before float32_mode turns x64 off)
    # x64 off: everything is float32. Against float64 on the same (float32) inputs; measured
    # worst error relative to the largest entry at depth 20 (2026-12-06): relu 1.7e-6, erf 1.3e-6,
    # gelu 1.6e-6, tanh 3.1e-6
    act, w = _FLOAT32_CASES[name]
    x, refs = float64_depth_20
    out = kernel(x, None, FullyConnected(20, w, 0.05, act))
    assert out.ntk.dtype == jnp.float32
    ref = refs[name]
    for a, b in [(out.nngp, ref.nngp), (out.ntk, ref.ntk)]:
        a, b = np.asarray(a, np.float64), np.asarray(b)
        assert np.max(np.abs(a - b)) / np.max(np.abs(b)) < 2e-5


def test_opposite_inputs_through_sign_layers_are_exact():
    # sign(u) sign(-u) = -1 surely: through stacked Sign layers without bias K(x, -x) = -K(x, x)
    # exactly. neural-tangents drifts to -0.99 at depth 3 (theta -> sqrt(theta) per layer).
    x = _x(3, 12)
    net = FullyConnected(3, 1.0, None, A.Sign())
    k = kernel(x, -x, net)
    np.testing.assert_array_equal(np.diag(k.nngp), -np.diag(kernel(x, None, net).nngp))


def test_tiles_spread_over_host_devices_match_one_device():
    assert len(jax.devices()) >= 2  # conftest asks XLA for two host devices
    x1 = _x(36)

    @functools.partial(jax.jit, static_argnames=("tile", "devices"))
    def kernels_and_gradients(w, *, tile, devices):
        """NTK and d(sum NTK)/dW of x1 against itself (x2 = None) and against x1[:20], in one program."""
        out = []
        for x2 in (None, x1[:20]):
            def total(w):
                k = kernel(x1, x2, FullyConnected(8, w, 0.1, A.Erf()), tile=tile, devices=devices).ntk
                return k.sum(), k

            g, k = jax.grad(total, has_aux=True)(w)
            out.append((k, g))
        return out

    w = jnp.array(1.4)
    # depth 8 is deep enough to be sharded: 3 x 3 tiles of 16 (padded rows), 6 and 9 tile pairs
    many = kernels_and_gradients(w, tile=16, devices=None)
    one = kernel(x1, None, FullyConnected(8, 1.4, 0.1, A.Erf()), tile=16, devices=[])  # the same tiles
    # two programs (one with the gradient), so rounding differs: 6e-17 absolute seen on entries of 2e-3
    np.testing.assert_allclose(many[0][0], one.ntk, rtol=1e-14, atol=1e-14 * float(jnp.abs(one.ntk).max()))
    # values and gradients through padded, sharded tiles equal those of the single-tile path
    single = kernels_and_gradients(w, tile=256, devices=None)
    for (k_many, g_many), (k_one, g_one) in zip(many, single):
        np.testing.assert_allclose(k_many, k_one, rtol=1e-13)
        assert float(g_many) == pytest.approx(float(g_one), rel=1e-12)
