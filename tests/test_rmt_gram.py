"""Gram-matrix deterministic equivalents (Seddik et al. 2020, Thm. 1) against Marchenko-Pastur, closed
forms (spiked Wishart outliers) and Monte Carlo: traces, eigenvalue histograms, isolated eigenvalues and
eigenvector alignments; the rate of ||E[Q] - Q~|| in p; gradients, jit/vmap, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.linalg import solve_triangular

from _gradcheck import check_gradients

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
    p, n = 40, 80  # the equivalent is exact at any p: MP with c = n/p
    c = n / p
    lm, lp = (1 - np.sqrt(c)) ** 2, (1 + np.sqrt(c)) ** 2
    x = jnp.linspace(0.3, 5.5, 9)
    xs = np.asarray(x)
    mp = np.sqrt(np.maximum((lp - xs) * (xs - lm), 0)) / (2 * np.pi * c * xs)
    rho = lambda t: np.sqrt(max((lp - t) * (t - lm), 0.0)) / (2 * np.pi * c * t)  # noqa: E731
    z = 0.7
    # (1/n) tr Q(z) = int rho(x) / (x + z) dx (MP density by quadrature) + (1 - p/n) / z (the atom at 0)
    m_mp = quad(lambda t: rho(t) / (t + z), lm, lp, epsabs=1e-13, epsrel=1e-12)[0] + (1 - p / n) / z
    # diagonal covariances with a scalar eta; full covariances with eta as an array (one height per point,
    # all 1e-6: the same compiled density program as the Lorentzian check below)
    for model, eta in ((GramMixture(jnp.ones((1, p)), n_per_class=(n,)), 1e-6),
                       (GramMixture(jnp.eye(p)[None], n_per_class=(n,)), jnp.full(9, 1e-6))):
        d = gram_spectral_density(model, x, eta=eta)
        np.testing.assert_allclose(d.density, mp, atol=1e-5)
        assert float(d.zero_mass) == pytest.approx(1 - p / n)
        # real z: delta solves the MP quadratic delta = 1 / (c / (1 + delta) + z)
        delta = float(gram_delta(model, z).value[0])
        assert delta == pytest.approx(1 / (c / (1 + delta) + z), rel=1e-10)
        assert float(gram_trace_resolvent(model, z)) == pytest.approx(m_mp, rel=1e-10)
    # one height per point: the density is the MP density convolved with a Lorentzian of that half-width
    eta = 0.05 * xs
    d = gram_spectral_density(model, x, eta=jnp.asarray(eta))
    smooth = [quad(lambda t: rho(t) * h / (np.pi * ((xi - t) ** 2 + h**2)), lm, lp, points=[xi], epsabs=1e-12,
                   limit=200)[0] for xi, h in zip(xs, eta)]
    np.testing.assert_allclose(d.density, smooth, atol=1e-8)


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
    # d/d(cov scale, mean scale, z) through the delta solve (implicit differentiation), forward and reverse
    # mode against central differences (tests/_gradcheck.py: three compiled programs)
    p, nl = 60, (50, 70)

    def f(a, s, z):
        m = _mixture(p, nl, a, s)
        r = gram_resolvent(m, z)
        return jnp.sum(r.delta) + gram_trace_resolvent(m, z) + 10 * jnp.sum(r.block)

    check_gradients(f, (0.8, 1.1, 0.5), atol=0.0, rtol=1e-6, directions=3)


def test_jit_and_vmap_over_z():
    model = _mixture(60, (50, 70))
    zs = jnp.array([0.2, 0.7, 3.0])
    loop = jnp.stack([gram_trace_resolvent(model, z) for z in zs])
    np.testing.assert_allclose(jax.vmap(lambda z: gram_trace_resolvent(model, z))(zs), loop, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.vmap(gram_trace_resolvent, (None, 0)))(model, zs), loop, rtol=1e-12)
    zc = jnp.array([1.0 + 0.5j, -2.0 + 0.1j])
    loopc = jnp.stack([gram_resolvent(model, z).block for z in zc])
    np.testing.assert_allclose(jax.jit(jax.vmap(lambda z: gram_resolvent(model, z).block))(zc), loopc, rtol=1e-10)


def test_spikes_closed_form_for_isotropic_classes():
    # identity covariances, means 3 e_1 and 3 e_2, n_1 = n_2 = n = 2p: E[x x^T] = I + 4.5 (e_1 e_1^T + e_2 e_2^T),
    # so X X^T / n is a spiked Wishart with spikes l = 5.5 and ratio gamma = p / n = 1/2 (Baik, Ben Arous &
    # Peche 2005): the outliers of X X^T / n sit at l (1 + gamma / (l - 1)); those of G = X^T X / p are n/p
    # times that, 11 / 9 * 10 = 12.2222...; the bulk edge is (n/p) (1 + sqrt(gamma))^2.
    p = 200
    m = GramMixture(jnp.ones((2, p)), 3 * jnp.eye(2, p), n_per_class=(p, p))
    s = gram_spikes(m)
    assert bool(s.ok) and bool(jnp.all(s.exists))
    np.testing.assert_allclose(s.eigenvalue, 2 * 5.5 * (1 + 0.5 / 4.5), rtol=1e-8)
    assert float(s.edge) == pytest.approx(2 * (1 + np.sqrt(0.5)) ** 2, rel=1e-6)


def test_spikes_alignments_and_bulk_histogram_against_monte_carlo():
    # unequal classes, different variances: isolated eigenvalues, the squared projections of their eigenvectors
    # on the class indicators (per sample), and the bulk histogram, from the same Monte-Carlo draws
    p, nl, draws = 100, (50, 150), 60
    cov = jnp.stack([jnp.ones(p), 0.5 * jnp.ones(p)])
    means = jnp.zeros((2, p)).at[0, 0].set(4.0).at[1, 1].set(3.0)
    model = GramMixture(cov, means, n_per_class=nl)
    s = gram_spikes(model)
    assert bool(s.ok) and bool(jnp.all(s.exists))
    rng = np.random.default_rng(1)
    J = np.zeros((sum(nl), 2))
    J[: nl[0], 0], J[nl[0]:, 1] = 1, 1
    tops, aligns, bulk = [], [], []
    for _ in range(draws):
        X = _sample(model, rng)
        w, v = np.linalg.eigh(X.T @ X / p)
        tops.append(w[::-1][:2])
        aligns.append(((J.T @ v[:, ::-1][:, :2]) ** 2 / np.array(nl)[:, None]).T)  # (spike, class)
        bulk.append(w[(w > 1e-8 * w[-1])][:-2])
    tops, aligns = np.array(tops), np.array(aligns)
    se_t = tops.std(0, ddof=1) / np.sqrt(draws)
    np.testing.assert_array_less(np.abs(tops.mean(0) - np.asarray(s.eigenvalue)), 5 * se_t + 1e-2 * tops.mean(0))
    se_a = aligns.std(0, ddof=1) / np.sqrt(draws)
    np.testing.assert_array_less(np.abs(aligns.mean(0) - np.asarray(s.alignment)), 5 * se_a + 1 / p)
    assert np.all(np.asarray(s.eigenvalue) > float(s.edge)) and np.all(np.concatenate(bulk) < 1.05 * float(s.edge))
    # bulk histogram: expected counts from the density (trapezoid inside each bin) vs pooled counts
    bulk = np.concatenate(bulk)
    edges = np.linspace(0.0, float(s.edge) * 1.02, 13)
    x = jnp.linspace(1e-3, float(edges[-1]), 12 * 40 + 1)
    d = gram_spectral_density(model, x, eta=1e-6)
    assert bool(jnp.all(d.density >= 0))
    dens, xs = np.asarray(d.density), np.asarray(x)
    n = sum(nl)
    expected = np.array([np.trapezoid(dens[(xs >= a) & (xs <= b)], xs[(xs >= a) & (xs <= b)])
                         for a, b in zip(edges[:-1], edges[1:])]) * n * draws
    counts = np.histogram(bulk, edges)[0]
    # multinomial error, plus 2% of the count for the O(1/p) finite-size offset of real data and the
    # piecewise-linear integration of the density
    np.testing.assert_array_less(np.abs(counts - expected), 5 * np.sqrt(expected + 1) + 0.02 * expected + 3)


def _expected_resolvent_error(model, z, draws, seed):
    """||E[Q] - Q~|| (operator norm) from Monte Carlo, exactly reduced to k x k averages.

    Columns of one class are exchangeable, so E[Q] = diag{alpha_l - beta_ll} + J beta J^T with alpha_l the
    mean diagonal entry and beta_ab the mean off-diagonal entry of the (a, b) class block. Q~ has the
    same structure, so E[Q] - Q~ = diag{d_l} + J E J^T; its eigenvalues are d_l (vectors summing to 0 in
    each class) and those of the k x k matrix diag(d) + N^(1/2) E N^(1/2) (the span of J).
    Returns (the norm, max_l |d_l|) and their bootstrap standard errors (200 resamplings of the draws).

    Q = (1 - X^T R X / p) / z with R = (X X^T / p + z)^-1 = L^-T L^-1 (Cholesky), so with Y = L^-1 X
    (one triangular solve per draw, no inverse): x_i^T R x_j = (Y^T Y)_ij."""
    p = model.p
    nl = np.asarray(model.n_per_class)
    J = np.asarray(model.indicators())
    rng = np.random.default_rng(seed)
    alpha, S = [], []
    for _ in range(draws):
        X = _sample(model, rng)
        Y = solve_triangular(np.linalg.cholesky(X @ X.T / p + z * np.eye(p)), X, lower=True)
        YJ = Y @ J
        alpha.append(J.T @ ((1 - np.sum(Y * Y, 0) / p) / z) / nl)  # diag Q = (1 - x_i^T R x_i / p) / z
        S.append((J.T @ J - YJ.T @ YJ / p) / z)  # J^T Q J
    alpha, S = np.array(alpha), np.array(S)
    t = gram_resolvent(model, z)
    sq = np.sqrt(nl.astype(float))

    def norms(a, s):
        beta = (s - np.diag(nl * a)) / (np.outer(nl, nl) - np.diag(nl))
        d = a - np.diag(beta) - np.asarray(t.diag)
        E = sq[:, None] * (beta - np.asarray(t.block)) * sq[None, :]
        return max(np.max(np.abs(d)), np.linalg.norm(np.diag(d) + E, 2)), np.max(np.abs(d))

    boot = []
    for _ in range(200):
        i = rng.integers(0, draws, draws)
        boot.append(norms(alpha[i].mean(0), S[i].mean(0)))
    return np.array(norms(alpha.mean(0), S.mean(0))), np.std(boot, axis=0, ddof=1)


def test_expected_resolvent_converges_at_the_theorem_rate():
    # ||E[Q] - Q~|| for a 2-class mixture (unequal sizes n = (p/2, 3p/2), different diagonal covariances,
    # orthogonal means). Seddik et al. (Thm. 1) bound it by O(sqrt(log p / p)); the finer expansion
    # (Q_ii and the class blocks of E[Q] are exact up to O(1/p) corrections) predicts 1/p.
    # The class-block part is a quadratic form u^T Q u with O(p^-1/2) fluctuations per draw against an
    # O(1/p) signal, so the whole norm needs draws ~ p: p = 16..128 with 400..800 draws. The diagonal
    # part d comes from the same draws (it was a separate series at p = 32..256 with 150 draws; one
    # series costs a third of the Monte Carlo). Measured (2026-12-06, these seeds): slopes -1.00 and
    # -1.00, p * error 0.46-0.47 for both parts at every p, bootstrap SE / error 0.03-0.05 (norm) and
    # 0.03-0.04 (diagonal); with 200-300 draws the norm's SE / error reached 0.25 at p = 128.
    z = 1.0
    ps, draws = (16, 32, 64, 128), (400, 500, 600, 800)
    errs, ses = [], []
    for p, d in zip(ps, draws):
        err, se = _expected_resolvent_error(_mixture(p=p, nl=(p // 2, 3 * p // 2)), z, d, seed=p)
        errs.append(err)
        ses.append(se)
    errs, ses = np.array(errs), np.array(ses)
    for part in (0, 1):  # the whole norm, the diagonal part
        e = errs[:, part]
        # the Monte-Carlo error is far below the signal, so the fitted slope measures the deterministic error
        assert np.all(ses[:, part] < 0.15 * e), (part, e, ses[:, part])
        slope = np.polyfit(np.log(ps), np.log(e), 1)[0]
        # the 1/p of the expansion (faster than the theorem's sqrt(log p / p), which this implies)
        assert -1.2 < slope < -0.8, (part, slope, e)
        # and its constant: p * error measured 0.46-0.47 at every p for both parts
        assert np.all(e * np.array(ps) < 0.75), e


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
    with pytest.raises(ValueError, match="cov must be finite and >= 0"):  # diagonal covariances: variances
        GramMixture(-jnp.ones((1, 5)), n_per_class=(10,))
    with pytest.raises(ValueError, match="symmetric"):
        GramMixture(jnp.eye(5).at[0, 1].set(1.0)[None], n_per_class=(10,))
    with pytest.raises(ValueError, match="n_per_class"):
        GramMixture(C, n_per_class=(0,))
    with pytest.raises(ValueError, match="n_per_class"):
        GramMixture(C, n_per_class=(10, 10))
    with pytest.raises(ValueError, match="cov must be 2-d or 3-d"):
        GramMixture(jnp.ones(5), n_per_class=(10,))
    with pytest.raises(ValueError, match="cov must not be empty"):
        GramMixture(jnp.ones((1, 0)), n_per_class=(10,))
    with pytest.raises(ValueError, match="means must have shape"):
        GramMixture(C, jnp.ones((1, 4)), n_per_class=(10,))
    with pytest.raises(ValueError, match="eta must be a scalar or have the shape of x"):
        gram_spectral_density(m, jnp.linspace(0.1, 2.0, 5), eta=jnp.ones(3))
    with pytest.raises(ValueError, match="eta must be finite and > 0"):
        gram_spectral_density(m, jnp.linspace(0.1, 2.0, 5), eta=-1.0)
    with pytest.raises(ValueError, match="x must be 1-d"):
        gram_spectral_density(m, jnp.ones((2, 2)))
