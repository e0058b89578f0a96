"""`rmtjax.rmt.krr_learning_curve`: the eigenlearning deterministic equivalent of kernel ridge
regression against a closed form, simulated ridge regression, and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax._validate import reraise_as_value_error
from rmtjax.kernels import FullyConnected, kernel
from rmtjax.rmt import krr_learning_curve, population_eigensystem


def test_isotropic_ridgeless_closed_form():
    # d equal eigenvalues 1/d, ridge 0, n < d: kappa = (d - n)/(d n), L = n/d, E0 = d/(d - n), so
    # test error = (1 - n/d) |v|^2 + sigma^2 n/(d - n) (the classic ridgeless random-design result)
    d, noise = 50, 0.3
    v = jnp.linspace(-1.0, 1.0, d)
    ns = jnp.array([5.0, 20.0, 45.0])
    c = krr_learning_curve(jnp.full(d, 1.0 / d), v, ns, noise=noise)
    r = np.asarray(ns) / d
    np.testing.assert_allclose(c.kappa, (d - ns) / (d * ns), rtol=1e-9)
    np.testing.assert_allclose(c.test_error, (1 - r) * float(v @ v) + noise * r / (1 - r), rtol=1e-9)
    np.testing.assert_allclose(c.train_error, 0.0, atol=1e-20)  # interpolates


def _simulate(G, f, ns, ridge, noise, trials, seed):
    """Kernel ridge regression on n points drawn without replacement from the population: test MSE
    on the whole population (the clean target) and train MSE (noisy labels), mean and se."""
    rng = np.random.default_rng(seed)
    out = []
    for n in ns:
        test, train = [], []
        for _ in range(trials):
            idx = rng.choice(len(f), n, replace=False)
            y = f[idx] + np.sqrt(noise) * rng.standard_normal(n)
            alpha = np.linalg.solve(G[np.ix_(idx, idx)] + ridge * np.eye(n), y)
            test.append(np.mean((G[:, idx] @ alpha - f) ** 2))
            train.append(np.mean((G[np.ix_(idx, idx)] @ alpha - y) ** 2))
        out.append([(np.mean(a), np.std(a, ddof=1) / np.sqrt(trials)) for a in (test, train)])
    return out


def test_gaussian_features_ridge_regression():
    # a linear kernel on anisotropic Gaussian data (power-law spectrum; eigenfunctions Gaussian, where
    # the equivalent is exact as n, d grow): test and train error within 4 standard errors over
    # n = 40..240, d = 120, through the interpolation peak. Measured |z| <= 0.8 (test), 1.2 (train).
    rng = np.random.default_rng(1)
    M, d = 2000, 120
    X = rng.standard_normal((M, d)) / np.arange(1, d + 1) ** 0.7
    G = X @ X.T
    f = X @ (rng.standard_normal(d) / np.sqrt(d))
    ridge, noise, ns = 0.1, 0.05, (40, 120, 240)
    lam, v = population_eigensystem(G, f)
    c = krr_learning_curve(lam, v, jnp.asarray(ns, jnp.float64), ridge=ridge, noise=noise)
    for i, ((te, te_se), (tr, tr_se)) in enumerate(_simulate(G, f, ns, ridge, noise, 20, 2)):
        assert abs(te - c.test_error[i]) < 4 * te_se, (ns[i], te, te_se, c.test_error[i])
        assert abs(tr - c.train_error[i]) < 4 * tr_se, (ns[i], tr, tr_se, c.train_error[i])


def test_nngp_regression_on_a_synthetic_teacher():
    # the NNGP kernel of a ReLU network on d = 8 Gaussian inputs and a nonlinear teacher: the
    # equivalent's finite-size error is larger here (non-Gaussian eigenfunctions, n = 25..250).
    # Measured relative differences: 6%, 9%, 2% (the Monte-Carlo se: 6%, 4%, 2%); the bound is 20%.
    rng = np.random.default_rng(0)
    M = 2000
    X = rng.standard_normal((M, 8))
    G = np.asarray(kernel(X, None, FullyConnected(2, W_std=1.4, b_std=0.1)).nngp)
    f = np.tanh(X[:, 0] + 0.5 * X[:, 1] * X[:, 2])
    ridge, noise, ns = 1e-2, 0.05, (25, 100, 250)
    lam, v = population_eigensystem(G, f)
    c = krr_learning_curve(lam, v, jnp.asarray(ns, jnp.float64), ridge=ridge, noise=noise)
    sim = _simulate(G, f, ns, ridge, noise, 10, 3)
    measured = np.array([s[0][0] for s in sim])
    np.testing.assert_array_less(np.abs(measured - c.test_error) / measured, 0.2)
    assert np.all(np.diff(np.asarray(c.test_error)) < 0)  # the curve decreases with n, as measured
    assert np.all(np.diff(measured) < 0)


def test_gradients_against_finite_differences_and_jit_vmap():
    k = jnp.arange(1.0, 301.0)
    lam = 1.0 / k**1.5
    v = 1.0 / k**0.8

    def err(ridge, n, noise, p):
        return krr_learning_curve(lam**p, v, n, ridge=ridge, noise=noise).test_error

    args = (1e-2, 40.0, 0.1, 1.0)
    grads = jax.grad(err, argnums=(0, 1, 2, 3))(*args)
    for k, g in enumerate(grads):
        h = 1e-6 * max(abs(args[k]), 1.0)
        up = list(args)
        dn = list(args)
        up[k] += h
        dn[k] -= h
        fd = (err(*up) - err(*dn)) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-6)
    ns = jnp.array([10.0, 40.0, 160.0])
    batched = jax.jit(jax.vmap(lambda n: err(1e-2, n, 0.1, 1.0)))(ns)
    np.testing.assert_allclose(batched, krr_learning_curve(lam, v, ns, ridge=1e-2, noise=0.1).test_error, rtol=1e-12)


def test_float32():
    d = 50
    with jax.enable_x64(False):
        c = krr_learning_curve(jnp.full(d, 1.0 / d), jnp.ones(d), jnp.array([10.0, 25.0]), ridge=0.0)
        assert c.test_error.dtype == jnp.float32
    np.testing.assert_allclose(c.test_error, [(1 - 0.2) * d, (1 - 0.5) * d], rtol=1e-5)  # measured 4e-7


def test_bad_input_is_a_clear_error():
    lam, v = jnp.array([1.0, 0.5, 0.25]), jnp.ones(3)
    with pytest.raises(ValueError, match="n must be below the number of nonzero eigenvalues"):
        krr_learning_curve(lam, v, 3.0)
    with pytest.raises(ValueError, match="number of nonzero eigenvalues"):
        reraise_as_value_error(jax.jit(lambda n: krr_learning_curve(lam, v, n).test_error))(5.0)
    with pytest.raises(ValueError, match="target must have one row per eigenvalue"):
        krr_learning_curve(lam, jnp.ones(4), 2.0)
    with pytest.raises(ValueError, match="eigenvalues must be"):
        krr_learning_curve(-lam, v, 2.0)
    with pytest.raises(ValueError, match="n must be"):
        krr_learning_curve(lam, v, 0.5, ridge=1.0)
    with pytest.raises(ValueError, match="ridge must be"):
        krr_learning_curve(lam, v, 2.0, ridge=-1.0)
    with pytest.raises(ValueError, match="at least one entry > 0"):
        krr_learning_curve(jnp.zeros(3), v, 2.0, ridge=1.0)
    with pytest.raises(ValueError, match="gram must be square"):
        population_eigensystem(jnp.ones((3, 4)), jnp.ones(3))
    with pytest.raises(ValueError, match="gram must be symmetric"):
        population_eigensystem(jnp.array([[1.0, 0.5], [0.0, 1.0]]), jnp.ones(2))
    with pytest.raises(ValueError, match="gram must be positive semi-definite"):
        population_eigensystem(-jnp.eye(2), jnp.ones(2))
