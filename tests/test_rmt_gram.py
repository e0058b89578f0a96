"""Gram-matrix deterministic equivalents (Seddik et al. 2020, Thm. 1) against Marchenko-Pastur, closed
forms and Monte Carlo: traces, E[Q] in operator norm (with its rate in p), eigenvalue histograms, isolated
eigenvalues and eigenvector alignments; gradients, jit/vmap, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from rmtjax.rmt._gram import (GramMixture, gram_delta, gram_resolvent, gram_spectral_density, gram_spikes,
                              gram_trace_resolvent)

# the 2-class mixture with unequal sizes used by the Monte-Carlo tests: diagonal covariances, orthogonal means
P, NL = 240, (120, 360)


def _mixture(p=P, nl=NL, a=3.0, s=1.0, diagonal=True):
    cov = jnp.stack([jnp.linspace(0.5, 1.5, p), a * jnp.ones(p)])
    means = s * jnp.zeros((2, p)).at[0, 0].set(2.0).at[1, 1].set(-3.0)
    if not diagonal:
        cov = jax.vmap(jnp.diag)(cov)
    return GramMixture(cov, means, n_per_class=nl)


def _sample(model, rng):
    """One draw of X (p x n, columns ordered by class) from the Gaussian mixture with diagonal covariances."""
    labels = np.repeat(np.arange(model.k), model.n_per_class)
    sd = np.sqrt(np.asarray(model.cov))[labels].T
    mu = np.asarray(model.means)[labels].T
    return mu + sd * rng.standard_normal(sd.shape)


def test_single_class_is_marchenko_pastur():
    p, n = 200, 400
    c = n / p
    lm, lp = (1 - np.sqrt(c)) ** 2, (1 + np.sqrt(c)) ** 2
    x = jnp.linspace(0.3, 5.5, 9)
    xs = np.asarray(x)
    mp = np.sqrt(np.maximum((lp - xs) * (xs - lm), 0)) / (2 * np.pi * c * xs)
    for model in (GramMixture(jnp.ones((1, p)), n_per_class=(n,)), GramMixture(jnp.eye(p)[None], n_per_class=(n,))):
        d = gram_spectral_density(model, x, eta=1e-6)
        np.testing.assert_allclose(d.density, mp, atol=1e-5)
        assert float(d.zero_mass) == pytest.approx(1 - p / n)
        # real z: delta solves the MP quadratic delta = 1 / (c / (1 + delta) + z)
        z = 0.7
        delta = float(gram_delta(model, z).value[0])
        assert delta == pytest.approx(1 / (c / (1 + delta) + z), rel=1e-10)
        # (1/n) tr Q(z) = int rho(x) / (x + z) dx (MP density by quadrature) + (1 - p/n) / z (the atom at 0)
        rho = lambda t: np.sqrt(max((lp - t) * (t - lm), 0.0)) / (2 * np.pi * c * t)
        m_mp = quad(lambda t: rho(t) / (t + z), lm, lp, epsabs=1e-13, epsrel=1e-12)[0] + (1 - p / n) / z
        assert float(gram_trace_resolvent(model, z)) == pytest.approx(m_mp, rel=1e-10)


def test_trace_of_resolvent_against_monte_carlo():
    # Complex Gaussian data (C_l = E[x x^*]): the deterministic equivalent is the same, and the O(1/p)
    # correction of E[(1/n) tr Q] that real Gaussian data carry (beta = 1; measured: p (MC - theory) ~ 0.11
    # at z = 0.3 for p = 120 and 240) vanishes, so the check can be sharp at 5 standard errors.
    p, nl, draws = 120, (60, 180), 300
    model = _mixture(p, nl)
    n = sum(nl)
    rng = np.random.default_rng(0)
    lam = []
    for _ in range(draws):
        mu = _sample(model.__class__(model.cov * 0, model.means, n_per_class=nl), rng)  # the means, column-wise
        X = mu + ((_sample(model, rng) - mu) + 1j * (_sample(model, rng) - mu)) / np.sqrt(2)
        lam.append(np.linalg.eigvalsh(X @ X.conj().T / p))
    lam = np.array(lam)
    for z in (0.3, 2.0):
        # (1/n) tr (G + z)^{-1}: the n - p zero eigenvalues of G contribute (n - p) / z
        vals = (np.sum(1 / (lam + z), axis=1) + (n - p) / z) / n
        se = vals.std(ddof=1) / np.sqrt(draws)
        theory = float(gram_trace_resolvent(model, z))
        assert abs(vals.mean() - theory) < 5 * se, (z, vals.mean(), theory, se)
        assert se < 1e-4 * theory * 5  # the check is sharp


def test_gradients_against_finite_differences():
    p, nl = 60, (50, 70)

    def f(a, s, z):
        m = _mixture(p, nl, a, s)
        r = gram_resolvent(m, z)
        return jnp.sum(r.delta) + gram_trace_resolvent(m, z) + 10 * jnp.sum(r.block)

    x0 = (0.8, 1.1, 0.5)
    for argnum in range(3):
        g = jax.grad(f, argnum)(*map(jnp.asarray, x0))
        eps = 1e-6
        hi, lo = list(x0), list(x0)
        hi[argnum] += eps
        lo[argnum] -= eps
        fd = (f(*map(jnp.asarray, hi)) - f(*map(jnp.asarray, lo))) / (2 * eps)
        assert float(g) == pytest.approx(float(fd), rel=1e-6), argnum


def test_jit_and_vmap_over_z():
    model = _mixture(60, (50, 70))
    zs = jnp.array([0.2, 0.7, 3.0])
    loop = jnp.stack([gram_trace_resolvent(model, z) for z in zs])
    np.testing.assert_allclose(jax.vmap(lambda z: gram_trace_resolvent(model, z))(zs), loop, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.vmap(gram_trace_resolvent, (None, 0)))(model, zs), loop, rtol=1e-12)
    zc = jnp.array([1.0 + 0.5j, -2.0 + 0.1j])
    loopc = jnp.stack([gram_resolvent(model, z).block for z in zc])
    np.testing.assert_allclose(jax.jit(jax.vmap(lambda z: gram_resolvent(model, z).block))(zc), loopc, rtol=1e-10)


def test_bad_input():
    C = jnp.eye(5)[None]
    m = GramMixture(C, n_per_class=(10,))
    with pytest.raises(ValueError, match="z must be > 0"):
        gram_delta(m, -1.0)
    with pytest.raises(ValueError, match="z must be > 0"):
        gram_trace_resolvent(m, 0.0)
    with pytest.raises(ValueError, match="z must be > 0"):
        gram_resolvent(m, -1.0 + 0j)
    with pytest.raises(ValueError, match="positive semi-definite"):
        GramMixture(-C, n_per_class=(10,))
    with pytest.raises(ValueError, match="positive semi-definite"):
        GramMixture(-jnp.ones((1, 5)), n_per_class=(10,))
    with pytest.raises(ValueError, match="symmetric"):
        GramMixture(jnp.eye(5).at[0, 1].set(1.0)[None], n_per_class=(10,))
    with pytest.raises(ValueError, match="n_per_class"):
        GramMixture(C, n_per_class=(0,))
    with pytest.raises(ValueError, match="n_per_class"):
        GramMixture(C, n_per_class=(10, 10))
    with pytest.raises(ValueError, match="cov must have shape"):
        GramMixture(jnp.ones(5), n_per_class=(10,))
    with pytest.raises(ValueError, match="dimension p >= 1"):
        GramMixture(jnp.ones((1, 0)), n_per_class=(10,))
    with pytest.raises(ValueError, match="means must have shape"):
        GramMixture(C, jnp.ones((1, 4)), n_per_class=(10,))
