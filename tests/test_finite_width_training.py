"""`rmtjax.finite_width.ntk_change`: the expected O(1/n) change of the NTK during gradient descent
(one hidden layer), against autodiff of its definitions, the linear closed form, and trained
ensembles of finite networks."""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from _gradcheck import check_gradients

from rmtjax.activations import Erf, Identity, Relu, Tanh
from rmtjax.finite_width import ExpansionWarning, _change_sample, _flow_propagators, _propagators, ntk_change
from rmtjax.kernels import FullyConnected, kernel

X = np.array([[0.3, -1.1, 0.8, 0.5], [1.2, 0.4, -0.6, 0.9], [-0.7, 0.9, 1.1, -0.2]])
Y = np.array([0.5, -0.5, 0.5])
TANH = FullyConnected(1, W_std=1.4, b_std=0.3, activation=Tanh())


def _stable_rate(spec, x, units=1.0):
    """``units`` times m / lambda_max(Theta): 2 is the stability limit of the linearised dynamics."""
    theta = kernel(jnp.asarray(x), None, spec).ntk
    return units * x.shape[0] / float(jnp.linalg.eigvalsh(theta)[-1])


def test_per_neuron_terms_match_autodiff_of_the_definitions():
    """The hand-written contractions of `_change_sample` against the tensors P, Q, S formed by
    nested autodiff of their definitions (T = <grad g_i, grad g_j>, U = <grad T, grad g_alpha>,
    Y = <grad U, grad g_beta>, D^2 T) in the neuron's parameters (a, z) with the metric diag(1, G)."""
    rng = np.random.default_rng(1)
    m = 3
    act = Tanh()
    G = jnp.asarray(0.09 + 1.96 * X @ X.T / 4)
    theta = jnp.asarray(rng.normal(size=(m, m)))
    theta = theta @ theta.T / m
    h = 0.3
    B1, B2, B3 = _propagators(theta, 0.5 * theta + jnp.outer(Y, Y), h, 4)
    metric = jnp.eye(m + 1).at[1:, 1:].set(G)

    def tensors(a, z):
        p = jnp.concatenate([a[None], z])
        J = jax.jacobian(lambda p: p[0] * act(p[1:]))
        T = lambda p: J(p) @ metric @ J(p).T  # noqa: E731
        U = lambda p: jnp.einsum("ijc,cd,ad->ija", jax.jacobian(T)(p), metric, J(p))  # noqa: E731
        Y4 = jnp.einsum("ijac,cd,bd->ijab", jax.jacobian(U)(p), metric, J(p))
        P = U(p)[..., None] * (p[0] * act(p[1:]))[None, None, None, :]
        E = J(p) @ metric
        S = jnp.einsum("ijcd,ac,bd->ijab", jax.hessian(T)(p), E, E)
        return P, Y4, S

    for _ in range(3):
        a, z = jnp.asarray(rng.normal()), jnp.asarray(1.3 * rng.normal(size=m))
        P, Q, S = tensors(a, z)
        ref = jnp.stack([-h * jnp.einsum("ag,ijag->ij", B1, P), h * h * jnp.einsum("ab,ijab->ij", B2, Q),
                         0.5 * h * h * jnp.einsum("ab,ijab->ij", B3, S)])
        got = _change_sample(act, G, h * B1, h * h * B2, 0.5 * h * h * B3, a, z)
        # measured: 3e-15 of entries up to 4
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(ref))))


def _linear_closed_form(x, y, W0, b0, W1, lr, steps, time=None):
    """Identity activation: P = S = Q / 2 = W1^4 (2 G_ij G_ab + G_ia G_jb + G_ib G_ja); gradient
    descent, or gradient flow to ``time`` (its propagators from the eigenbasis closed form)."""
    m, d = x.shape
    spec = FullyConnected(1, W_std=(W0, W1), b_std=(b0, 0.0), activation=Identity())
    k = kernel(x, None, spec)
    G = b0**2 + W0**2 * x @ x.T / d
    if time is None:
        h = lr / m
        B1, B2, B3 = _propagators(k.ntk, k.nngp + jnp.outer(y, y), h, steps)
        M = -h * B1 + 2 * h * h * B2 + 0.5 * h * h * B3
    else:
        M1, M2 = _eigen_flow(np.asarray(k.ntk), np.asarray(k.nngp + jnp.outer(y, y)), 1.0 / m, time)
        M = jnp.asarray(-M1 + 2 * M2, x.dtype)
    return spec, W1**4 * (2 * G * jnp.sum(G * M) + G @ (M + M.T) @ G)


def _eigen_flow(theta, C, r, t):
    """The gradient-flow propagators in the eigenbasis of X = r Theta (distinct positive eigenvalues):
    r int_0^t e^{-Xs} ds and r^2 (int int_{s <= u} e^{-Xs} C e^{-Xu})^T, integrated by hand and
    evaluated with 40 digits (the differences of exponentials cancel at small t)."""
    lam, V = np.linalg.eigh(r * theta)
    mp.mp.dps = 40
    e = lambda x: -mp.expm1(-x)  # noqa: E731  1 - e^{-x}
    lam_mp, t = [mp.mpf(float(a)) for a in lam], mp.mpf(float(t))
    F = np.array([float(e(a * t) / a) for a in lam_mp])
    J = np.array([[float((e(b * t) / b - e((a + b) * t) / (a + b)) / a) for b in lam_mp] for a in lam_mp])
    return r * (V * F) @ V.T, r * r * (V @ ((V.T @ C @ V) * J) @ V.T).T


@pytest.mark.parametrize("steps", [1, 7])
def test_linear_network_closed_form(steps):
    x, y = jnp.asarray(X), jnp.asarray(Y)
    lr = 0.8 * x.shape[0] / 4.0
    spec, closed = _linear_closed_form(x, y, 1.2, 0.4, 0.9, lr, steps)
    c = ntk_change(x, y, spec, learning_rate=lr, steps=steps, samples=2**14)
    z = np.abs(np.asarray(c.change - closed)) / np.asarray(c.stderr)
    assert np.max(z) < 4.5, (np.asarray(c.change), np.asarray(closed), np.asarray(c.stderr))
    assert float(jnp.max(c.stderr)) < 0.05 * float(jnp.max(jnp.abs(closed)))


def test_linear_network_closed_form_float32(float32_mode):
    x, y = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
    lr = 0.8 * 3 / 4.0
    spec, closed = _linear_closed_form(x, y, 1.2, 0.4, 0.9, lr, 5)
    c = ntk_change(x, y, spec, learning_rate=lr, steps=5, samples=2**14)
    assert c.change.dtype == jnp.float32
    z = np.abs(np.asarray(c.change - closed)) / np.asarray(c.stderr)
    assert np.max(z) < 4.5


def test_linear_network_closed_form_gradient_flow():
    x, y = jnp.asarray(X), jnp.asarray(Y)
    spec, closed = _linear_closed_form(x, y, 1.2, 0.4, 0.9, None, None, time=2.5)
    c = ntk_change(x, y, spec, time=2.5, samples=2**14)
    assert float(jnp.max(jnp.abs(c.terms[2]))) == 0.0  # no second-order step term under gradient flow
    z = np.abs(np.asarray(c.change - closed)) / np.asarray(c.stderr)
    assert np.max(z) < 4.5, (np.asarray(c.change), np.asarray(closed), np.asarray(c.stderr))
    assert float(jnp.max(c.stderr)) < 0.05 * float(jnp.max(jnp.abs(closed)))


def test_linear_network_closed_form_gradient_flow_float32(float32_mode):
    x, y = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
    spec, closed = _linear_closed_form(x, y, 1.2, 0.4, 0.9, None, None, time=2.5)
    c = ntk_change(x, y, spec, time=2.5, samples=2**14)
    assert c.change.dtype == jnp.float32
    z = np.abs(np.asarray(c.change - closed)) / np.asarray(c.stderr)
    assert np.max(z) < 4.5


@pytest.mark.parametrize("t", [0.0, 1e-9, 0.7, 40.0, 1e7])
def test_flow_propagators_match_the_eigenbasis_closed_form(t):
    """Scaling and doubling against the integrals done by hand in the eigenbasis, from t = 0 (zero)
    through times where e^{-Xt} has long decayed."""
    rng = np.random.default_rng(5)
    m = 5
    A = rng.normal(size=(m, m))
    theta = A @ A.T / m + 0.2 * np.eye(m)
    Bm = rng.normal(size=(m, m))
    C = Bm @ Bm.T
    M1, M2, M3 = _flow_propagators(jnp.asarray(theta), jnp.asarray(C), 1 / m, t)
    if t == 0.0:
        assert float(jnp.max(jnp.abs(M1))) == float(jnp.max(jnp.abs(M2))) == 0.0
        return
    R1, R2 = _eigen_flow(theta, C, 1 / m, t)
    # measured: at most 2.1e-15 (M1) and 4.0e-15 (M2) of the largest entry over these times
    np.testing.assert_allclose(M1, R1, rtol=0, atol=1e-13 * np.max(np.abs(R1)))
    np.testing.assert_allclose(M2, R2, rtol=0, atol=1e-13 * np.max(np.abs(R2)))
    assert float(jnp.max(jnp.abs(M3))) == 0.0


def test_flow_propagators_float32_and_repeated_eigenvalues(float32_mode):
    """float32 within 1e-6 of the float64 closed form; at Theta = 2 I (every eigenvalue repeated)
    the derivative in the time and in Theta is finite and equals the scalar closed form's."""
    rng = np.random.default_rng(6)
    A = rng.normal(size=(4, 4))
    theta = A @ A.T / 4 + 0.2 * np.eye(4)
    C = np.eye(4) + 0.3
    M1, M2, _ = _flow_propagators(jnp.asarray(theta, jnp.float32), jnp.asarray(C, jnp.float32), 0.25,
                                  jnp.float32(3.0))
    R1, R2 = _eigen_flow(theta, C, 0.25, 3.0)
    np.testing.assert_allclose(M1, R1, rtol=0, atol=1e-6 * np.max(np.abs(R1)))
    np.testing.assert_allclose(M2, R2, rtol=0, atol=1e-6 * np.max(np.abs(R2)))
    # Theta = lam I, C = I: M1 = r (1 - e^{-r lam t}) / (r lam); d/dlam by hand
    f = lambda lam, t: jnp.sum(_flow_propagators(lam * jnp.eye(3), jnp.eye(3), 0.5, t)[0])  # noqa: E731
    g_lam, g_t = jax.grad(f, argnums=(0, 1))(jnp.float32(2.0), jnp.float32(1.5))
    x = 0.5 * 2.0 * 1.5
    np.testing.assert_allclose(g_t, 3 * 0.5 * np.exp(-x), rtol=1e-5)
    np.testing.assert_allclose(g_lam, 3 * (np.exp(-x) * 0.5 * 1.5 / 2.0 - (1 - np.exp(-x)) / 2.0**2), rtol=1e-5)


def test_gradient_flow_is_the_small_step_limit():
    """T steps at learning rate t / T approach the flow like 1 / T (the same Monte-Carlo draws, so
    the differences are not noise): a step four times smaller, a difference four times smaller."""
    x, y = jnp.asarray(X), jnp.asarray(Y)
    flow = ntk_change(x, y, TANH, time=2.0, samples=1024)
    diff = [float(jnp.max(jnp.abs(ntk_change(x, y, TANH, learning_rate=2.0 / T, steps=T, samples=1024).change
                                  - flow.change))) for T in (64, 256)]
    # measured: 0.0295 and 0.0073 of entries up to 0.81 (ratio 4.04)
    assert 3.6 < diff[0] / diff[1] < 4.4, diff
    assert diff[1] < 0.03 * float(jnp.max(jnp.abs(flow.change)))


def _trained_ensemble_change(x, y, W, b, n, lr, steps, size, key, x_test):
    """n (E[Theta_T - Theta_0]) on the rows of [x, x_test] and its standard error over ``size``
    one-hidden-layer tanh networks of width n trained on (x, y) (an independent JAX implementation
    of the NTK-parameterised network)."""
    _, d = x.shape
    points = jnp.concatenate([x, x_test])

    def f(p, x):
        z = W[0] / math.sqrt(d) * x @ p["w"] + b[0] * p["b"][None, :]
        return W[1] / math.sqrt(n) * jnp.tanh(z) @ p["a"] + b[1] * p["c"]

    def ntk(p):
        J = jax.jacobian(f)(p, points)
        return sum(jnp.einsum("i...,j...->ij", g, g) for g in jax.tree.leaves(J))

    def one(k):
        k1, k2, k3, k4 = jax.random.split(k, 4)
        p = {"w": jax.random.normal(k1, (d, n)), "b": jax.random.normal(k2, (n,)), "a": jax.random.normal(k3, (n,)),
             "c": jax.random.normal(k4, ())}
        t0 = ntk(p)

        def step(p, _):
            g = jax.grad(lambda p: 0.5 * jnp.mean((f(p, x) - y) ** 2))(p)
            return jax.tree.map(lambda u, v: u - lr * v, p, g), None

        p, _ = jax.lax.scan(step, p, None, length=steps)
        return n * (ntk(p) - t0)

    d_ = jax.lax.map(one, jax.random.split(key, size), batch_size=100)
    return np.asarray(d_.mean(0)), np.asarray(d_.std(0, ddof=1) / math.sqrt(size))


@pytest.mark.slow
def test_trained_networks_match_the_predicted_change(xla_optimized):
    """1500 tanh networks of width 1024 trained on 3 points, 10 GD steps at 1 m / lambda_max, the
    NTK on those and one test point: every entry of n E[Theta_T - Theta_0] within 4 standard
    errors (network and Monte-Carlo combined) of the theory; the O(1/n^2) remainder is below that
    error at this width (measured: the entries at n = 256 and 1024 differ by less than their
    standard errors)."""
    x, y = jnp.asarray(X), jnp.asarray(Y)
    x_test = jnp.asarray([[0.9, 0.2, -1.0, 0.4]])
    lr = _stable_rate(TANH, X)
    c = ntk_change(x, y, TANH, learning_rate=lr, steps=10, samples=2**16, x_test=x_test)
    assert c.change.shape == (4, 4)
    mean, se = _trained_ensemble_change(x, y, (1.4, 1.4), (0.3, 0.3), 1024, lr, 10, 1500, jax.random.key(3), x_test)
    err = np.sqrt(se**2 + np.asarray(c.stderr) ** 2)
    z = np.abs(mean - np.asarray(c.change)) / err
    assert np.max(z) < 4.0, (mean, np.asarray(c.change), err)
    # the prediction is resolved: the largest entry is many standard errors from 0
    assert float(np.max(np.abs(np.asarray(c.change)) / err)) > 8


def test_chunked_accumulation_equals_the_plain_mean_and_standard_error():
    """1500 samples: a full chunk of 1024 and a padded one; the terms and the standard error equal
    the mean and the standard deviation over the same draws computed in one piece."""
    x, y = jnp.asarray(X), jnp.asarray(Y)
    key = jax.random.key(11)
    lr, steps = 0.5, 3
    c = ntk_change(x, y, TANH, learning_rate=lr, steps=steps, samples=1500, key=key)
    k = kernel(x, None, TANH)
    G = 0.09 + 1.96 * x @ x.T / 4
    L = jnp.linalg.cholesky(G + 16 * jnp.finfo(G.dtype).eps * jnp.max(jnp.diagonal(G)) * jnp.eye(3))
    h = lr / 3
    B1, B2, B3 = _propagators(k.ntk, k.nngp + jnp.outer(y, y), h, steps)
    z = jax.random.normal(key, (1500, 3)) @ L.T

    def neuron(z):
        f = lambda a: _change_sample(Tanh(), G, h * B1, h * h * B2, 0.5 * h * h * B3, a, z)  # noqa: E731
        return (2 * f(jnp.asarray(0.0)) + f(jnp.sqrt(jnp.asarray(3.0)))) / 3

    vals = 1.4**4 * jax.vmap(neuron)(z)
    np.testing.assert_allclose(c.terms, vals.mean(0), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(c.stderr, vals.sum(1).std(0, ddof=1) / np.sqrt(1500), rtol=1e-8)


def test_test_inputs_extend_the_matrices():
    """Test inputs equal to training inputs repeat the training rows and columns (to the jitter
    that keeps the Cholesky factor of the singular covariance finite)."""
    x, y = jnp.asarray(X), jnp.asarray(Y)
    c = ntk_change(x, y, TANH, learning_rate=0.5, steps=4, samples=512, x_test=x[:2])
    assert c.change.shape == c.ntk.shape == c.stderr.shape == (5, 5) and c.terms.shape == (3, 5, 5)
    np.testing.assert_allclose(c.ntk[3:, :], c.ntk[:2, :], rtol=1e-12)
    np.testing.assert_allclose(c.change[3:, :], c.change[:2, :], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(c.change[:, 3:], c.change[:, :2], rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="x_test must have 4 features"):
        ntk_change(x, y, TANH, learning_rate=0.5, steps=4, x_test=x[:, :2])
    with pytest.raises(ValueError, match="x_test must be finite"):
        ntk_change(x, y, TANH, learning_rate=0.5, steps=4, x_test=x.at[0, 0].set(jnp.nan))


def test_gradients_jit_and_vmap():
    x, y = jnp.asarray(X[:2]), jnp.asarray(Y[:2])

    def change(W1, b0):
        spec = FullyConnected(1, W_std=jnp.stack([jnp.asarray(1.3), W1]), b_std=jnp.stack([b0, jnp.asarray(0.2)]),
                              activation=Erf())
        return ntk_change(x, y, spec, learning_rate=0.4, steps=3, samples=256).change

    check_gradients(change, (1.1, 0.3), atol=1e-8, rtol=1e-6)
    rates = jnp.array([0.2, 0.4])
    batched = jax.jit(jax.vmap(lambda r: ntk_change(x, y, TANH, learning_rate=r, steps=3, samples=256).change))(rates)
    eager = np.stack([ntk_change(x, y, TANH, learning_rate=float(r), steps=3, samples=256).change for r in rates])
    np.testing.assert_allclose(batched, eager, rtol=1e-10, atol=1e-14)
    zero = ntk_change(x, y, TANH, learning_rate=0.4, steps=0, samples=256)
    assert float(jnp.max(jnp.abs(zero.change))) == 0.0
    # no NaN in derivatives where the standard error is 0
    g = jax.grad(lambda r: jnp.sum(ntk_change(x, y, TANH, learning_rate=r, steps=0, samples=256).stderr))(0.4)
    assert np.isfinite(float(g))


def test_gradient_flow_gradients_vmap_and_repeated_eigenvalues():
    """Gradient flow: differentiable in the time and the variances, vmapped over times as one
    program, and finite derivatives where the NTK's eigenvalues are repeated (orthogonal inputs
    without bias: Theta is a multiple of I)."""
    x, y = jnp.asarray(X[:2]), jnp.asarray(Y[:2])

    def change(W1, t):
        spec = FullyConnected(1, W_std=jnp.stack([jnp.asarray(1.3), W1]), b_std=0.2, activation=Erf())
        return ntk_change(x, y, spec, time=t, samples=256).change

    check_gradients(change, (1.1, 0.8), atol=1e-8, rtol=1e-6)
    times = jnp.array([0.5, 3.0])
    batched = jax.jit(jax.vmap(lambda t: ntk_change(x, y, TANH, time=t, samples=256).change))(times)
    eager = np.stack([ntk_change(x, y, TANH, time=float(t), samples=256).change for t in times])
    np.testing.assert_allclose(batched, eager, rtol=1e-10, atol=1e-14)
    assert float(jnp.max(jnp.abs(ntk_change(x, y, TANH, time=0.0, samples=256).change))) == 0.0
    spec0 = FullyConnected(1, W_std=1.2, b_std=0.0, activation=Tanh())
    eye = jnp.eye(2)
    assert float(jnp.abs(kernel(eye, None, spec0).ntk[0, 1])) < 1e-15  # Theta = c I
    g = jax.grad(lambda t, W: jnp.sum(ntk_change(eye, y, FullyConnected(1, W_std=W, b_std=0.0, activation=Tanh()),
                                                  time=t, samples=256).change), argnums=(0, 1))(2.0, 1.2)
    assert np.all(np.isfinite(np.asarray(g))), g


def test_bad_input_is_a_clear_error():
    x, y = jnp.asarray(X), jnp.asarray(Y)
    lr = _stable_rate(TANH, X)
    with pytest.raises(ValueError, match="spec.depth must be 1"):
        ntk_change(x, y, FullyConnected(2, activation=Tanh()), learning_rate=lr, steps=2)
    with pytest.raises(ValueError, match="three continuous derivatives.*got Relu"):
        ntk_change(x, y, FullyConnected(1, activation=Relu()), learning_rate=lr, steps=2)
    with pytest.raises(ValueError, match="parameterization='ntk' only"):
        ntk_change(x, y, FullyConnected(1, activation=Tanh(), parameterization="standard", widths=8),
                   learning_rate=lr, steps=2)
    with pytest.raises(ValueError, match="stability limit 2 m / lambda_max"):
        ntk_change(x, y, TANH, learning_rate=2.01 * lr, steps=2)
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="stability limit"):
        jax.jit(lambda r: ntk_change(x, y, TANH, learning_rate=r, steps=2, samples=64).change)(2.01 * lr)
    with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
        ntk_change(x, y, TANH, learning_rate=0.0, steps=2)
    with pytest.raises(ValueError, match="either time .* not both"):
        ntk_change(x, y, TANH, learning_rate=lr, steps=2, time=1.0)
    with pytest.raises(ValueError, match="learning_rate and steps .* are both required unless time"):
        ntk_change(x, y, TANH, learning_rate=lr)
    with pytest.raises(ValueError, match="time must be finite and >= 0"):
        ntk_change(x, y, TANH, time=-1.0)
    with pytest.raises(ValueError, match="time must be finite and >= 0"):
        ntk_change(x, y, TANH, time=np.inf)
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="time must be finite"):
        jax.jit(lambda t: ntk_change(x, y, TANH, time=t, samples=64).change)(jnp.nan)
    # measured before the limit: at t = 1e24 (lambda_max t ~ 2^80) the ordered integral was 2.7e-5 off
    # the 40-digit closed form, at 1e26 inf
    with pytest.raises(ValueError, match=r"time must be at most 2\^60 / lambda_max"):
        ntk_change(x, y, TANH, time=1e24)
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match=r"time must be at most 2\^60"):
        jax.jit(lambda t: ntk_change(x, y, TANH, time=t, samples=64).change)(1e24)
    ntk_change(x, y, TANH, time=1e15, samples=64)  # well inside the limit (about 1e17 here)
    with pytest.raises(ValueError, match=r"y must have shape \(3,\) or \(3, 1\)"):
        ntk_change(x, y[:2], TANH, learning_rate=lr, steps=2)
    with pytest.raises(ValueError, match="y must be finite"):
        ntk_change(x, y.at[0].set(jnp.inf), TANH, learning_rate=lr, steps=2)
    with pytest.raises(ValueError, match="steps must be"):
        ntk_change(x, y, TANH, learning_rate=lr, steps=-1)
    with pytest.raises(ValueError, match="samples must be"):
        ntk_change(x, y, TANH, learning_rate=lr, steps=2, samples=4)
    with pytest.raises(ValueError, match="key must be a JAX PRNG key"):
        ntk_change(x, y, TANH, learning_rate=lr, steps=2, key=3)
    with pytest.warns(ExpansionWarning, match="expansion is not meaningful"):
        ntk_change(x, 10 * y, TANH, learning_rate=lr, steps=10, widths=2, samples=256)
    ntk_change(x, 10 * y, TANH, learning_rate=lr, steps=10, widths=1024, samples=256)  # no warning
