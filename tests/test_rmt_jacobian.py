"""Jacobian spectra of deep networks: closed forms (ReLU at depth 1 is a Marchenko-Pastur law), the
Pennington et al. moment formulas, hard-tanh/erf laws against quadrature, gradients, bad input."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, special

from rmtjax.activations import Erf, Relu
from rmtjax.rmt._jacobian import (HardTanh, derivative_squared_law, jacobian_law, jacobian_q_star, jacobian_spectrum,
                                  multiplicative_edge)
from rmtjax.rmt._measures import MarchenkoPastur


def test_relu_depth_one_is_marchenko_pastur_and_moment_formulas():
    # S = S_MP(1, w2) S_{relu'^2} = 1 / (w2 (1 + w)) * 2 (1 + w) / (1 + 2w) = S of MP(ratio 2, variance w2 / 2)
    x = jnp.geomspace(1e-8, 1e4, 160)  # the size the reproduction uses: one compilation
    s = jacobian_spectrum(Relu(), 2.0, 0.0, x, depth=1, throw=False)
    ref = MarchenkoPastur(2.0, 1.0)
    inner = (x > 0.05) & (x < 1e3)  # next to the atom at 0 the solve may fail (reported by `converged`)
    assert bool(jnp.all(s.converged[inner]))
    np.testing.assert_allclose(s.density[inner], ref.density(x)[inner], atol=1e-7)
    assert float(s.zero_mass) == 0.5
    assert float(s.max_eigenvalue) == pytest.approx((1 + math.sqrt(2)) ** 2, rel=1e-9)
    # Pennington et al. (2017): m1 = chi^L, Var / m1^2 = L (1 + E[phi'^4] / E[phi'^2]^2 - 1) (Gaussian), L (...) orthogonal
    for L in (3, 10):
        for orth, extra in ((False, 1.0), (True, 0.0)):
            law = jacobian_law(Relu(), 1.6, 0.1, depth=L, orthogonal=orth)
            m = np.asarray(law.moments(2))
            chi = 0.8
            assert m[0] == pytest.approx(chi**L, rel=1e-12)
            assert m[1] - m[0] ** 2 == pytest.approx(chi ** (2 * L) * L * (extra + 1.0), rel=1e-10)


def test_hard_tanh_and_erf_laws_against_quadrature():
    w2, b2 = 1.2, 0.05
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    V = lambda q: w2 * integrate.quad(lambda z: min(1.0, max(-1.0, math.sqrt(q) * z)) ** 2 * pdf(z), -12, 12,  # noqa: E731
                                      points=[-1 / math.sqrt(q), 1 / math.sqrt(q)], epsabs=1e-14)[0] + b2
    q_ref = optimize.brentq(lambda q: V(q) - q, 1e-4, 10, xtol=1e-14)
    q = float(jacobian_q_star(HardTanh(), w2, b2))
    assert q == pytest.approx(q_ref, rel=1e-9)
    law = derivative_squared_law(HardTanh(), q)
    assert float(law.mean()) == pytest.approx(special.erf(1 / math.sqrt(2 * q_ref)), rel=1e-9)
    # erf: E[phi'^2] = 4 / (pi sqrt(1 + 4q)) (Williams 1997) and E[phi'^4] by quadrature
    qe = float(jacobian_q_star(Erf(), 1.5, 0.02))
    le = derivative_squared_law(Erf(), qe)
    assert float(le.mean()) == pytest.approx(4 / (math.pi * math.sqrt(1 + 4 * qe)), rel=1e-12)
    d4 = integrate.quad(lambda z: (2 / math.sqrt(math.pi) * math.exp(-qe * z * z)) ** 4 * pdf(z), -12, 12, epsabs=1e-14)[0]
    assert float(le.moment(2)) == pytest.approx(d4, rel=1e-10)
    L = 6
    spec = jacobian_spectrum(Erf(), 1.5, 0.02, jnp.array([0.5]), depth=L, orthogonal=True, edge=False)
    chi = 1.5 * float(le.mean())
    assert float(spec.mean) == pytest.approx(chi**L, rel=1e-10)
    assert float(spec.variance) == pytest.approx(chi ** (2 * L) * L * (d4 / float(le.mean()) ** 2 - 1), rel=1e-8)


def test_edge_matches_where_the_density_vanishes_and_fuss_catalan():
    from rmtjax.rmt._free import free_multiplicative_power

    e, ok = multiplicative_edge(free_multiplicative_power(MarchenkoPastur(1.0, 1.0), 16))
    assert float(e.value) == pytest.approx(17**17 / 16**16, rel=1e-10) and bool(ok)
    law = jacobian_law(Relu(), 2.0, 0.0, depth=4, orthogonal=True)
    e, ok = multiplicative_edge(law)
    lam = float(e.value)
    x = jnp.linspace(0.5 * lam, 1.5 * lam, 160)
    d = law.density_on_grid(x, throw=False).density
    assert float(jnp.min(d[x < 0.97 * lam])) > 1e-4 and float(jnp.max(d[x > 1.03 * lam])) < 1e-6


def test_gradients_against_finite_differences():
    h = 1e-5

    def summary(w2):
        law = jacobian_law(Erf(), w2, 0.02, depth=4)
        m = law.moments(2)
        return m[1] - m[0] ** 2

    g = float(jax.grad(summary)(1.5))
    assert g == pytest.approx((float(summary(1.5 + h)) - float(summary(1.5 - h))) / (2 * h), rel=1e-6)

    # density of ReLU at depth 1 is MP(2, w2 / 2): its w2-derivative (implicit differentiation through the
    # subordination solve) against the closed form and a finite difference
    # subordination solve) against the closed form and a finite difference; x = 1e3 lies beyond 8 reach,
    # where G comes from the moment series: its derivative against a finite difference
    x = jnp.array([1.3, 1e3])
    dens = lambda w2: jacobian_law(Relu(), w2, 0.0, depth=1).density(x)  # noqa: E731
    gd = np.asarray(jax.jacrev(dens)(2.0))
    ref = float(jax.grad(lambda w2: MarchenkoPastur(2.0, w2 / 2).density(x[:1])[0])(2.0))
    assert gd[0] == pytest.approx(ref, rel=1e-6)
    fd = (np.asarray(dens(2.0 + h)) - np.asarray(dens(2.0 - h))) / (2 * h)
    np.testing.assert_allclose(gd[0], fd[0], rtol=1e-5)
    # at 1e3 the density is eta / (pi x^2) (1 - zero mass + 2 m1 / x + ...): only the m1 term, 2e-3 of it,
    # depends on w2, and Im G (1e-9 of |G| at eta = 1e-9 x) carries ~1e-7 relative rounding, so both
    # derivatives hold ~5e-5 (measured 6e-5 apart)
    np.testing.assert_allclose(gd[1], fd[1], rtol=3e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="depth"):
        jacobian_law(Relu(), 2.0, 0.0, depth=0)
    with pytest.raises(ValueError, match="sigma_w2"):
        jacobian_law(Erf(), -1.0, 0.0, depth=2)
    # a scale-free activation's law does not use sigma_b2; its check still runs under jit (the fuzz
    # suite found it removed as dead code: jit returned the moments for sigma_b2 = nan)
    f = eqx.filter_jit(lambda w, b: jacobian_law(Relu(), w, b, depth=3).moments(2))
    np.testing.assert_allclose(f(jnp.asarray(1.0), jnp.asarray(0.1)), [0.125, 0.109375], rtol=1e-12)
    with pytest.raises(ValueError, match="sigma_b2"):
        f(jnp.asarray(1.0), jnp.asarray(np.nan))


def test_float32_edge_at_an_asymptote_and_far_tail(float32_mode):
    # issue 12 (reproduce dynamical-isometry --quick --float32 crashed with "y0 must be finite"):
    # ReLU, orthogonal, L = 2 has lambda_max = 2^L = 4 reached only as a limit, where float32 Newton
    # overflows; the far tail x = 1e4 overflowed the continuation. Measured: 3.999998 (float64:
    # 4 + 7e-13). Far outside the support the float32 subordination solve missed its tolerance
    # (x >= 3e3 here: NaN under XLA -O0, a finite value marked not-ok with XLA's defaults); there G
    # now comes from the moment series (|z| > 8 reach), so the far tail is ok and its density is
    # -Im G / pi = eta / (pi x^2) to leading order.
    from rmtjax.rmt._jacobian import multiplicative_edge

    rho = jacobian_law(Relu(), 2.0, 0.0, depth=2, orthogonal=True)
    edge, ok = multiplicative_edge(rho, throw=False)
    assert bool(ok) and abs(float(edge.value) - 4.0) < 1e-5
    x = jnp.array([1.0, 3e3, 1e4, 1e5], jnp.float32)
    d = jacobian_law(Relu(), 2.0, 0.0, depth=2).density_on_grid(x, throw=False)
    assert bool(jnp.all(d.ok)) and bool(jnp.all(jnp.isfinite(d.density))) and bool(jnp.all(jnp.isfinite(d.stieltjes)))
    # -Im G / pi minus the atom's Lorentzian, G = 1/z + m1/z^2 + O(z^-3) with m1 = 1 and an atom of mass
    # 1/2 at 0 (ReLU' = 0 half the time): ((1 - zero mass)/x^2 + 2 m1/x^3) eta / pi at the float32
    # default height eta = 1e-6 x (its scale term is negligible here); measured within 4.3e-6
    xs, eta = x[1:], 1e-6 * x[1:]
    np.testing.assert_allclose(d.density[1:], ((1 - d.zero_mass) / xs**2 + 2 / xs**3) * eta / np.pi, rtol=1e-4)
    # Re G = 1/x + m1/x^2 + O(x^-3), m1 = 1: measured within 5.3e-7
    np.testing.assert_allclose(d.stieltjes[1:].real, 1 / xs + 1 / xs**2, rtol=1e-5)
