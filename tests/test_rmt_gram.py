"""Gram-matrix deterministic equivalents against Marchenko-Pastur and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax.rmt import gram_delta, gram_spectral_density, gram_trace_resolvent


def _two_class_covariances(p, a):
    d1 = jnp.linspace(0.5, 1.5, p)
    d2 = a * jnp.ones(p)
    return jnp.stack([jnp.diag(d1), jnp.diag(d2)])


def test_single_class_is_marchenko_pastur():
    p, n = 200, 400
    x = jnp.linspace(0.3, 5.5, 9)
    dens = np.asarray(gram_spectral_density(jnp.eye(p)[None], [n], x, eta=1e-6))
    c = n / p
    lm, lp = (1 - np.sqrt(c)) ** 2, (1 + np.sqrt(c)) ** 2
    xs = np.asarray(x)
    mp = np.sqrt(np.maximum((lp - xs) * (xs - lm), 0)) / (2 * np.pi * c * xs)
    np.testing.assert_allclose(dens, mp, atol=1e-5)
    # real z: delta solves the MP quadratic, delta = (1/p) tr R~ with R~ = 1/(c/(1+delta) + z)
    z = 0.7
    d = float(gram_delta(jnp.eye(p)[None], [n], z).value[0])
    assert d == pytest.approx(1 / (c / (1 + d) + z), rel=1e-10)


def test_trace_of_resolvent_against_monte_carlo():
    p, nl, z, draws = 150, (100, 200), 0.5, 200
    C = _two_class_covariances(p, 0.8)
    theory = float(gram_trace_resolvent(C, nl, z))
    sd = [jnp.sqrt(jnp.diag(C[0])), jnp.sqrt(jnp.diag(C[1]))]

    @jax.jit
    def sample(key):
        k1, k2 = jax.random.split(key)
        X = jnp.concatenate([sd[0][:, None] * jax.random.normal(k1, (p, nl[0])),
                             sd[1][:, None] * jax.random.normal(k2, (p, nl[1]))], axis=1)
        G = X.T @ X / p
        ev = jnp.linalg.eigvalsh(G)
        return jnp.mean(1 / (ev + z))

    vals = np.asarray(jax.vmap(sample)(jax.random.split(jax.random.key(0), draws)))
    se = vals.std(ddof=1) / np.sqrt(draws)
    assert abs(vals.mean() - theory) < 5 * se + 1e-5, (vals.mean(), theory, se)
    assert se < 1e-3 * theory  # the check is sharp


def test_gradients_of_delta():
    p, nl = 60, (50, 70)

    def f(a, z):
        return jnp.sum(gram_delta(_two_class_covariances(p, a), nl, z).value)

    for argnum, x0 in ((0, (0.8, 0.5)), (1, (0.8, 0.5))):
        g = jax.grad(f, argnum)(*map(jnp.asarray, x0))
        eps = 1e-6
        hi = list(x0)
        lo = list(x0)
        hi[argnum] += eps
        lo[argnum] -= eps
        fd = (f(*map(jnp.asarray, hi)) - f(*map(jnp.asarray, lo))) / (2 * eps)
        assert float(g) == pytest.approx(float(fd), rel=1e-6)


def test_bad_input():
    C = jnp.eye(5)[None]
    with pytest.raises(ValueError, match="z must be > 0"):
        gram_delta(C, [10], -1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        gram_delta(-C, [10], 1.0)
    with pytest.raises(ValueError, match="n_per_class"):
        gram_delta(C, [0], 1.0)
    with pytest.raises(ValueError, match="shape"):
        gram_delta(jnp.eye(5), [10], 1.0)
