"""Free convolutions by subordination: closed forms, exact combinatorics, Monte Carlo, limit theorems,
gradients, vmap/jit, bad input."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equinox as eqx
from _compiles import Programs

from rmtjax.rmt import _free
from rmtjax.rmt._free import (free_additive_convolution, free_additive_power, free_multiplicative_convolution,
                              free_multiplicative_power)
from rmtjax.rmt._jacobian import multiplicative_edge
from rmtjax.rmt._measures import Discrete, FussCatalan, MarchenkoPastur, PointMass, Semicircle


def test_semicircle_plus_semicircle_is_semicircle_including_edges():
    rho = free_additive_convolution(Semicircle(1.0), Semicircle(2.0, 0.5))
    ref = Semicircle(3.0, 0.5)
    a, b = (float(e) for e in ref.edges())
    x = jnp.concatenate([jnp.linspace(a - 0.5, b + 0.5, 21), jnp.array([a, b])])
    d = rho.density_on_grid(x)
    assert bool(jnp.all(d.ok)) and bool(jnp.all(jnp.isfinite(d.density)))
    np.testing.assert_allclose(d.density[:-2], ref.density(x[:-2]), atol=1e-7)
    # exactly at a square-root edge the density read at eta is O(sqrt(eta)) = O(1e-5)
    np.testing.assert_allclose(d.density[-2:], 0.0, atol=2e-5)
    np.testing.assert_allclose(rho.moments(6), ref.moments(6), rtol=1e-12, atol=1e-12)
    # vmap over the grid == one point at a time; jit == eager
    z = x[:3].astype(complex) + 0.1j
    g = rho.stieltjes(z)
    loop = jnp.stack([rho.stieltjes(zi[None])[0] for zi in z])
    np.testing.assert_allclose(g, loop, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(lambda m, z: m.stieltjes(z))(rho, z), g, rtol=1e-12)


def test_far_field_stieltjes_from_the_moment_series():
    # |z| > 8 reach: G from its moment series instead of the subordination solve (which missed its
    # float32 tolerance out there). A symmetric sum (odd moments 0) has a finite reach (the one-step
    # moment ratio divided by zero and gave inf); both sides of the threshold match the closed form.
    rho = free_additive_convolution(Semicircle(1.0), Semicircle(2.0, 0.5))
    ref = Semicircle(3.0, 0.5)
    reach = float(rho._reach())
    top = 2 * math.sqrt(3.0) + 0.5  # the true max |t| of the sum, Semicircle(3, 0.5): 3.96
    assert 0.9 * top < reach < 1.1 * top  # measured 4.01
    z = jnp.asarray(np.array([7.0, 9.0, 30.0, 1e4]) * reach * np.exp(0.3j))
    np.testing.assert_allclose(rho.stieltjes(z), ref.stieltjes(z), rtol=1e-13)
    # (a gradient through the series: test_rmt_jacobian.py::test_gradients_against_finite_differences)


def test_marchenko_pastur_plus_semicircle_against_monte_carlo():
    # W W^T / n (p x n, p / n = 0.5) + GOE(variance 0.5): histogram of 6 x 400 eigenvalues, 5 SE per bin
    p, n, reps = 400, 800, 4
    rng = np.random.default_rng(0)
    ev = []
    for _ in range(reps):
        X = rng.standard_normal((p, n))
        A = rng.standard_normal((p, p))
        goe = (A + A.T) / np.sqrt(2 * p) * np.sqrt(0.5)
        ev.append(np.linalg.eigvalsh(X @ X.T / n + goe))
    ev = np.concatenate(ev)
    rho = free_additive_convolution(MarchenkoPastur(0.5, 1.0), Semicircle(0.5))
    edges = np.linspace(-1.5, 4.5, 25)
    x = np.linspace(-1.5, 4.5, 24 * 8 + 1)
    d = np.asarray(rho.density_on_grid(jnp.asarray(x)).density)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (d[1:] + d[:-1]) * np.diff(x))])
    prob = np.diff(cdf[::8])
    assert cdf[-1] == pytest.approx(1.0, abs=2e-3)
    counts = np.histogram(ev, edges)[0] / ev.size
    se = np.sqrt(np.maximum(prob, 1e-4) / ev.size) * 3  # eigenvalues are repulsive: <= Poisson error
    assert np.all(np.abs(counts - prob) < 5 * se + 0.004), np.max(np.abs(counts - prob) / se)


def _exact_product_moments(ratios, K):
    """Moments of boxtimes_i MP(c_i, 1) with rational arithmetic: S = prod 1/(1 + c_i w)."""
    one = [Fraction(1)] + [Fraction(0)] * K

    def mul(a, b):
        return [sum(a[i] * b[k - i] for i in range(k + 1)) for k in range(K + 1)]

    s = one
    for c in ratios:
        s = mul(s, [Fraction(-c) ** k for k in range(K + 1)])
    chi = [Fraction(0)] + mul(s, [Fraction(-1) ** k for k in range(K + 1)])[:K]  # w S / (1 + w)
    g = [Fraction(0), 1 / chi[1]] + [Fraction(0)] * (K - 1)  # reversion
    for m in range(2, K + 1):
        acc = one[:]
        powk = one[:]
        total = [Fraction(0)] * (K + 1)
        for k in range(1, K + 1):
            powk = mul(powk, g)
            total = [t + chi[k] * q for t, q in zip(total, powk)]
        g[m] = g[m] - total[m] / chi[1]
        del acc
    return [float(v) for v in g[1:]]


def test_products_of_marchenko_pastur_against_exact_combinatorics_and_gaussian_products():
    # Fuss-Catalan: MP^{boxtimes L} has moments binom((L+1)k, k) / (Lk + 1), to 1e-8 (relative)
    for L in (2, 5, 64):
        m = np.asarray(free_multiplicative_power(MarchenkoPastur(1.0, 1.0), L).moments(6))
        ref = np.array([math.comb((L + 1) * k, k) / (L * k + 1) for k in range(1, 7)])
        np.testing.assert_allclose(m, ref, rtol=1e-8)
    # unequal ratios against exact rational arithmetic, and the subordination solution (contour) against both
    rho = free_multiplicative_convolution(MarchenkoPastur(0.5, 1.0), MarchenkoPastur(2.0, 1.0), MarchenkoPastur(1.0, 1.0))
    ref = _exact_product_moments([Fraction(1, 2), Fraction(2), Fraction(1)], 5)
    np.testing.assert_allclose(rho.moments(5), ref, rtol=1e-12)
    np.testing.assert_allclose(rho.moments_by_contour(5), ref, rtol=1e-8)
    # products of L independent square Gaussian matrices: (1/N^L) tr (G_L..G_1)(G_L..G_1)^T
    L, N, reps = 3, 300, 8
    rng = np.random.default_rng(1)
    m1, m2 = [], []
    for _ in range(reps):
        P = np.eye(N)
        for _ in range(L):
            P = rng.standard_normal((N, N)) / np.sqrt(N) @ P
        ev = np.linalg.eigvalsh(P @ P.T)
        m1.append(ev.mean())
        m2.append((ev**2).mean())
    exact = free_multiplicative_power(MarchenkoPastur(1.0, 1.0), L).moments(2)
    for emp, th in zip((m1, m2), np.asarray(exact)):
        se = np.std(emp, ddof=1) / np.sqrt(reps)
        assert abs(np.mean(emp) - th) < 5 * se + 2 * L * th / N  # + O(L/N) finite-size bias


def test_free_poisson_limit_theorem():
    # ((1 - lam/N) delta_0 + (lam/N) delta_a)^{boxplus N} -> free Poisson(lam, a) = MP(1/lam, lam a)
    lam, a = 0.5, 1.0
    x = jnp.linspace(0.1, 2.8, 15)
    ref = MarchenkoPastur(1 / lam, lam * a).density(x)
    errs = []
    for N in (50, 400):
        bern = Discrete(jnp.array([0.0, a]), jnp.array([1 - lam / N, lam / N]))
        errs.append(float(jnp.max(jnp.abs(free_additive_power(bern, N).density(x) - ref))))
    assert errs[1] < 0.2 * errs[0] and errs[1] < 0.01  # O(1/N) convergence


def test_moment_gradients_against_finite_differences_and_no_nan_at_edges():
    # (the gradient of a density through the subordination solve is checked in test_rmt_jacobian.py)
    def mom(v):
        return free_multiplicative_convolution(MarchenkoPastur(0.5, v), MarchenkoPastur(1.0, 1.0)).moments(3)[2]

    h = 1e-5
    assert float(jax.grad(mom)(1.0)) == pytest.approx((float(mom(1 + h)) - float(mom(1 - h))) / (2 * h), rel=1e-7)
    # at and beyond the edge of the product: finite values
    rho = free_multiplicative_power(MarchenkoPastur(1.0, 1.0), 2)
    xe = jnp.array([27 / 4, 7.0, 1e-3])
    d = rho.density_on_grid(xe)
    assert bool(jnp.all(jnp.isfinite(d.density))) and float(d.density[1]) < 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match=r"\[0, inf\)"):
        free_multiplicative_convolution(Semicircle(1.0), MarchenkoPastur())
    with pytest.raises(ValueError, match="mean > 0"):
        free_multiplicative_convolution(PointMass(0.0), MarchenkoPastur())
    with pytest.raises(ValueError, match="n must be"):
        free_additive_power(Semicircle(1.0), 0)
    # real z inside the support has no solution: the message says so (validated arguments are not the cause)
    with pytest.raises(ValueError, match="no converged solution on the physical branch .* a real z must lie "
                                         "outside the support"):
        free_additive_convolution(Semicircle(1.0), Semicircle(1.0)).stieltjes(jnp.array([0.3 + 0j]))
    with pytest.raises(ValueError, match="eta"):
        free_additive_convolution(Semicircle(1.0), Semicircle(1.0)).density_on_grid(jnp.zeros(2), eta=-1.0)


def test_default_height_reads_a_density_diverging_at_zero():
    # MP^{boxtimes L} is Fuss-Catalan of order L, rho(x) ~ x^(-L/(L+1)) at 0: the default eta is relative
    # to x, so the density is right down to x = 1e-7 (an absolute 1e-9 * scale missed it by percents).
    # Reference: the parametric form x(phi), rho(x(phi)) (Haagerup & Moller 2012), root-found in phi.
    from scipy.optimize import brentq

    L = 16
    xs = np.array([1e-7, 1e-6, 1e-4, 1e-2, 1.0, 10.0])

    def x_of(phi):
        return np.sin((L + 1) * phi) ** (L + 1) / (np.sin(phi) * np.sin(L * phi) ** L)

    def rho_of(phi):
        return np.sin(phi) ** 2 * np.sin(L * phi) ** (L - 1) / (np.pi * np.sin((L + 1) * phi) ** L)

    top = np.pi / (L + 1)
    ref = [rho_of(brentq(lambda t: np.log(x_of(t)) - np.log(x0), 1e-12, top * (1 - 1e-12), xtol=1e-300, rtol=1e-15))
           for x0 in xs]
    rho = free_multiplicative_power(MarchenkoPastur(1.0, 1.0), L)
    d = rho.density_on_grid(jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(d.density), ref, rtol=1e-4)  # measured: 2.6e-5 at x = 1e-7
    # the reference tells the heights apart: the old absolute default, 1e-9 x the scale (mean 1 + sd sqrt(L)),
    # is 26% off at 1e-7
    old = np.asarray(rho.density_on_grid(jnp.asarray(xs), eta=1e-9 * (1 + np.sqrt(L))).density)
    assert abs(old[0] / ref[0] - 1) > 0.1


# ---------------------------------------------------------------------------------------------
# Issue 12: validation first, physical branches, throw under jit, float32, one compilation
# ---------------------------------------------------------------------------------------------


def _raises(match, fn, *args):
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match=match):
        jax.block_until_ready(fn(*args))


def test_issue12_bad_points_are_named_not_reported_as_eta_or_convergence():
    rho = free_additive_convolution(Semicircle(1.0), Semicircle(1.0))
    with pytest.raises(ValueError, match="x must be finite"):  # was "eta must be > 0, got [nan]"
        rho.density_on_grid(jnp.array([0.5, jnp.nan]))
    with pytest.raises(ValueError, match="x must not be empty"):
        rho.density_on_grid(jnp.zeros((0,)))
    with pytest.raises(ValueError, match="eta must be finite and > 0"):
        rho.density_on_grid(jnp.ones(2), eta=jnp.nan)
    with pytest.raises(ValueError, match="eta must be a scalar or have the shape of x"):
        rho.density_on_grid(jnp.ones(2), eta=jnp.ones(3))
    with pytest.raises(ValueError, match="z must be finite"):
        rho.stieltjes(jnp.array([jnp.inf + 1j]))
    with pytest.raises(ValueError, match="n_heights must be an integer in \\[2, 10000\\]"):
        free_additive_convolution(Semicircle(1.0), Semicircle(1.0), n_heights=1)
    with pytest.raises(ValueError, match="n must be an integer"):
        free_multiplicative_power(MarchenkoPastur(), 2.0)
    with pytest.raises(ValueError, match="measures must be rmtjax.rmt measures"):
        free_additive_convolution(Semicircle(1.0), 3.0)
    with pytest.raises(ValueError, match="order must be an integer in \\[1, 32\\]"):
        rho.moments(40)


def test_throw_and_branch_checks_hold_under_jit():
    rho = free_additive_convolution(Semicircle(1.0), Semicircle(1.0))
    z = jnp.array([0.3 + 0j, 0.3 + 0.1j, 5.0 + 0j])  # inside the support on the axis; above it; outside
    _raises("no converged solution on the physical branch", jax.jit(lambda z: rho.stieltjes(z)), z)
    omega, ok = jax.jit(lambda z: rho.solve(z, throw=False))(z)
    np.testing.assert_array_equal(ok, [False, True, True])
    # the accepted points are the semicircle of variance 2: G(z) = (z - sqrt(z^2 - 8)) / 4
    g = rho.stieltjes(z[1:])
    zz = np.asarray(z[1:])
    np.testing.assert_allclose(g, (zz - np.sqrt(zz - np.sqrt(8)) * np.sqrt(zz + np.sqrt(8))) / 4, rtol=1e-10)
    _raises("measures must live on \\[0, inf\\) with a mean > 0",
            jax.jit(lambda c: free_multiplicative_convolution(Semicircle(1.0, c), MarchenkoPastur()).moments(2)), 0.0)
    _raises("x must be finite", jax.jit(lambda x: rho.density_on_grid(x).density), jnp.array([jnp.nan]))


def test_repeated_calls_do_not_recompile():
    # one compiled subordination core per kind, factor structure and grid shape: new parameter values,
    # new points and new depths (the powers are traced) reuse it; likewise the series moments
    x = jnp.linspace(0.1, 3.0, 6)
    free_multiplicative_power(MarchenkoPastur(1.0, 1.0), 2).density_on_grid(x)
    solves, series = eqx.debug.get_num_traces(_free._solve_points), eqx.debug.get_num_traces(_free._series_jit)
    for L, c in ((3, 0.5), (5, 1.5), (8, 0.9)):
        rho = free_multiplicative_power(MarchenkoPastur(c, 1.0), L)
        rho.density_on_grid(x + 0.01 * L)
        rho.moments(2)
    assert eqx.debug.get_num_traces(_free._solve_points) == solves
    # (moments(2) is a second K: one more series program, shared by the three calls)
    assert eqx.debug.get_num_traces(_free._series_jit) <= series + 1


def test_float32(float32_mode):
    # default heights and tolerances scaled to float32. Measured: semicircle of variance 3 within 2.1e-7
    # (absolute; float64: 2.1e-10), MP^{boxtimes 3} density within 1.2e-6 (relative, bulk) of float64 and
    # its moments exact; the edge 256/27 within 1e-7 relative
    x = np.linspace(-3.4, 3.4, 9)
    rho = free_additive_convolution(Semicircle(1.0), Semicircle(2.0, 0.5))
    d = rho.density_on_grid(jnp.asarray(x, jnp.float32))
    assert d.density.dtype == jnp.float32 and bool(jnp.all(d.ok))
    np.testing.assert_allclose(np.asarray(d.density), np.sqrt(np.maximum(12 - (x - 0.5) ** 2, 0)) / (6 * np.pi),
                               atol=2e-6)
    pr = free_multiplicative_power(MarchenkoPastur(1.0, 1.0), 3)
    np.testing.assert_allclose(np.asarray(pr.moments(3)), [1, 4, 22], rtol=1e-5)
    xs = np.array([0.05, 0.5, 2.0])
    with jax.enable_x64(True):  # the parametric Fuss-Catalan density, in float64
        ref = np.asarray(FussCatalan(3).density(jnp.asarray(xs)))
    dd = pr.density_on_grid(jnp.asarray(xs, jnp.float32))
    np.testing.assert_allclose(np.asarray(dd.density), ref, rtol=2e-5)
    assert float(multiplicative_edge(pr)[0].value) == pytest.approx(256 / 27, rel=1e-5)


def test_repeated_eager_calls_compile_nothing():
    """A second eager call with the same shapes, dtypes and factor structure (new parameter values, a new
    depth) compiles no program: the steps around the compiled subordination solve are jitted once at
    module level with the powers traced (eagerly, the multiplicative density_on_grid compiled 72
    one-operation programs on its first call; the second call already compiled nothing before)."""
    from rmtjax.activations import Erf
    from rmtjax.rmt._jacobian import jacobian_law

    x = jnp.array([0.1, 1.0, 3.0])
    z = jnp.array([-1.0 + 1.0j, 0.5 + 0.1j, 5.0 + 0.0j])

    def calls(v, depth):
        add = free_additive_convolution(Semicircle(v), Semicircle(0.5))
        mul = free_multiplicative_power(MarchenkoPastur(v, 1.0), depth)
        return [add.density_on_grid(x), add.stieltjes(z), add.solve(z, throw=False), mul.density_on_grid(x),
                mul.moments(2), mul.moments_by_contour(2), jacobian_law(Erf(), v, 0.1, depth=depth).moments(2)]

    jax.block_until_ready(calls(1.0, 2))
    with Programs() as p:
        jax.block_until_ready(calls(0.9, 3))
    assert not p.names, f"{p.n} programs compiled by repeated calls: {p.names}"
