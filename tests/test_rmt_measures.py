"""Spectral measures: closed forms against scipy quadrature, transforms against their inverses,
Stieltjes inversion, bad input, edges, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate

from rmtjax.rmt._measures import (AbstractMeasure, Discrete, FussCatalan, GridDensity, MarchenkoPastur, PointMass,
                                  Semicircle, stieltjes_inversion)


def _quad_g(density, z, a, b, points=None):
    re = integrate.quad(lambda t: density(t) * (1 / (z - t)).real, a, b, points=points, limit=400, epsabs=1e-13)[0]
    im = integrate.quad(lambda t: density(t) * (1 / (z - t)).imag, a, b, points=points, limit=400, epsabs=1e-13)[0]
    return re + 1j * im


@pytest.mark.parametrize("c,v", [(0.3, 1.0), (2.5, 0.7)])
def test_marchenko_pastur_against_quadrature(c, v):
    mp = MarchenkoPastur(c, v)
    a, b = (float(e) for e in mp.edges())
    jd = jax.jit(lambda t: mp.density(t))
    dens = lambda t: float(jd(t))  # noqa: E731
    atom = max(0.0, 1 - 1 / c)
    assert float(mp.zero_mass()) == pytest.approx(atom, abs=1e-15)
    assert integrate.quad(dens, a, b, limit=400)[0] + atom == pytest.approx(1.0, abs=1e-7)
    for k in (1, 2, 3, 4):
        assert integrate.quad(lambda t: t**k * dens(t), a, b, limit=400)[0] == pytest.approx(float(mp.moment(k)), rel=1e-7)
    for z in (1.0 + 0.5j, 0.3 + 0.01j, -2.0 + 0j, b + 1.0 + 0j):
        ref = _quad_g(dens, z, a, b) + atom / z
        assert complex(mp.stieltjes(jnp.array(z))) == pytest.approx(ref, abs=5e-7)
    # Stieltjes inversion recovers the density in the bulk (with Richardson: O(eta^2))
    x = jnp.linspace(a + 0.1 * (b - a), b - 0.1 * (b - a), 7)
    np.testing.assert_allclose(stieltjes_inversion(mp, x, eta=1e-3, richardson=True), mp.density(x), atol=2e-5)
    np.testing.assert_allclose(stieltjes_inversion(mp, x, eta=1e-9), mp.density(x), atol=1e-8)


def test_semicircle_point_mass_discrete_closed_forms():
    sc = Semicircle(2.0, 0.5)
    dens = lambda t: float(sc.density(jnp.array(t)))  # noqa: E731
    a, b = (float(e) for e in sc.edges())
    for z in (0.5 + 1j, 4.0 + 0j):
        assert complex(sc.stieltjes(jnp.array(z))) == pytest.approx(_quad_g(dens, z, a, b), abs=1e-8)
    for k in range(1, 6):
        assert float(sc.moment(k)) == pytest.approx(integrate.quad(lambda t: t**k * dens(t), a, b)[0], rel=1e-8, abs=1e-9)
    assert complex(PointMass(2.0).stieltjes(jnp.array(3.0 + 1j))) == pytest.approx(1 / (1 + 1j))
    d = Discrete(jnp.array([0.0, 1.0, 3.0]), jnp.array([1.0, 2.0, 1.0]))  # weights normalized
    assert float(d.moment(2)) == pytest.approx((2 + 9) / 4)
    assert float(d.zero_mass()) == pytest.approx(0.25)
    z = 2.0 + 0.3j
    assert complex(d.stieltjes(jnp.array(z))) == pytest.approx(0.25 / z + 0.5 / (z - 1) + 0.25 / (z - 3))


def test_transforms_against_numerical_inverses():
    g = jnp.array([0.05 + 0.02j, 0.1 - 0.01j])
    w = jnp.array([0.2 + 0.0j, 0.5 + 0.1j])
    m = MarchenkoPastur(0.5, 1.5)
    np.testing.assert_allclose(m.r_transform(g), AbstractMeasure.r_transform(m, g), atol=1e-10)
    np.testing.assert_allclose(m.s_transform(w), AbstractMeasure.s_transform(m, w), atol=1e-10)
    np.testing.assert_allclose(Semicircle(1.3, 0.2).r_transform(g), 0.2 + 1.3 * g, atol=1e-15)
    # law of relu'(h)^2: psi = z / (2 (1 - z)), chi = 2w / (1 + 2w), S = 2 (1 + w) / (1 + 2w) (real w > 0 too)
    relu = Discrete(jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]))
    wr = jnp.array([0.1, 1.0, 30.0]).astype(complex)
    np.testing.assert_allclose(relu.s_transform(wr), 2 * (1 + wr) / (1 + 2 * wr), rtol=1e-10)
    np.testing.assert_allclose(m.stieltjes(m.inverse_stieltjes(g)), g, atol=1e-12)  # G(G^{-1}(g)) = g


def test_fuss_catalan_density_moments_and_stieltjes():
    fc = FussCatalan(2, 1.5)
    edge = float(fc.edge())
    assert edge == pytest.approx(1.5 * 27 / 4)
    x = np.linspace(0.0, edge, 3001)[1:]
    d = np.asarray(fc.density(jnp.asarray(x)))
    assert np.all(np.isfinite(d)) and np.all(d >= 0)
    # moments of the parametric density (quadrature in the angle: x = x(phi), smooth)
    s = 2

    def xphi(p):
        return 1.5 * math.sin(3 * p) ** 3 / (math.sin(p) * math.sin(2 * p) ** 2)

    def rho(p):
        return math.sin(p) ** 2 * math.sin(s * p) / (math.pi * math.sin(3 * p) ** 2) / 1.5

    for k in (1, 2, 3):
        val = integrate.quad(lambda p: xphi(p) ** k * rho(p) * abs((xphi(p + 1e-7) - xphi(p - 1e-7)) / 2e-7),
                             1e-9, math.pi / 3 - 1e-9, limit=400)[0]
        assert val == pytest.approx(float(fc.moment(k)), rel=1e-6)
    # the algebraic Stieltjes transform agrees with the parametric density
    xs = jnp.array([0.5, 3.0, 8.0])
    g = fc.stieltjes(jax.lax.complex(xs, jnp.full_like(xs, 1e-10)))
    np.testing.assert_allclose(-jnp.imag(g) / math.pi, fc.density(xs), rtol=1e-7)


def test_grid_density_is_exact_for_its_interpolant():
    x = jnp.linspace(-2.0, 2.0, 801)
    gd = GridDensity(x, jnp.sqrt(jnp.maximum(4 - x**2, 0.0)))
    sc = Semicircle(1.0)
    # piecewise-linear interpolation of a sqrt edge: error O(h^{3/2})
    for z in (3.0 + 0j, 0.5 + 0.5j):
        assert complex(gd.stieltjes(jnp.array(z))) == pytest.approx(complex(sc.stieltjes(jnp.array(z))), abs=2e-4)
    assert float(gd.moment(2)) == pytest.approx(1.0, abs=1e-3)
    # moments are exact for the interpolant: compare with a dense trapezoid of the same interpolant
    t = np.linspace(-2, 2, 400001)
    f = np.interp(t, np.asarray(x), np.asarray(gd.values))
    assert float(gd.moment(4)) == pytest.approx(np.trapezoid(f * t**4, t), rel=1e-8)


def test_bad_input():
    with pytest.raises(ValueError, match="variance"):
        MarchenkoPastur(1.0, -1.0)
    with pytest.raises(ValueError, match="ratio"):
        MarchenkoPastur(0.0, 1.0)
    with pytest.raises(ValueError, match="positive total mass"):
        Discrete(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))
    with pytest.raises(ValueError, match=">= 0"):
        Discrete(jnp.array([1.0, 2.0]), jnp.array([1.0, -0.5]))
    with pytest.raises(ValueError, match="real support"):
        MarchenkoPastur(0.5, 1.0).stieltjes(jnp.array(1.0))
    with pytest.raises(ValueError, match="real support"):
        Semicircle(1.0).stieltjes(jnp.array([0.0 + 0j]))
    with pytest.raises(ValueError, match="eta"):
        stieltjes_inversion(Semicircle(1.0), jnp.zeros(3), eta=0.0)
    with pytest.raises(ValueError, match="power"):
        FussCatalan(0)
    with pytest.raises(ValueError, match="zero mass"):
        GridDensity(jnp.linspace(0, 1, 5), jnp.zeros(5))


def test_edges_have_no_nan_and_gradients_match_finite_differences():
    def dens(v, x):
        return MarchenkoPastur(0.5, v).density(x) + Semicircle(v).density(x)

    a, b = (float(e) for e in MarchenkoPastur(0.5, 1.0).edges())
    for x in (a, b, 2.0, -2.0, 0.0):
        gval = jax.grad(dens)(1.0, jnp.asarray(x))
        assert np.isfinite(float(dens(1.0, x))) and np.isfinite(float(gval))
    check_grads(lambda v: dens(v, 1.3), (1.0,), order=1, modes=["rev"])
    check_grads(lambda c: MarchenkoPastur(c, 1.0).stieltjes(jnp.array(1.0 + 0.2j)).real, (0.4,), order=1)
    check_grads(lambda s: FussCatalan(3, s).moment(4), (0.7,), order=1)


def test_vmap_equals_loop_and_jit_equals_eager():
    z = jnp.array([0.3 + 0.2j, 1.0 + 0.01j, 5.0 + 0j])
    mp = MarchenkoPastur(0.5, 1.0)
    loop = jnp.stack([mp.stieltjes(zi) for zi in z])
    np.testing.assert_allclose(jax.vmap(mp.stieltjes)(z), loop, rtol=1e-14)
    np.testing.assert_allclose(jax.jit(lambda m, z: m.stieltjes(z))(mp, z), loop, rtol=1e-14)
    vs = jnp.array([0.5, 1.0, 2.0])
    batched = jax.vmap(lambda v: MarchenkoPastur(0.5, v).moment(3))(vs)
    np.testing.assert_allclose(batched, jnp.stack([MarchenkoPastur(0.5, v).moment(3) for v in vs]), rtol=1e-14)
