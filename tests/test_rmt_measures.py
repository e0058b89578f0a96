"""Spectral measures: closed forms against scipy quadrature, transforms against their inverses,
Stieltjes inversion, bad input, edges, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import Programs
from _gradcheck import check_gradients
from scipy import integrate

from rmtjax.rmt._measures import (AbstractMeasure, Discrete, FussCatalan, GridDensity, MarchenkoPastur, PointMass,
                                  Semicircle, stieltjes_inversion)


def _raises(match, fn, *args):
    """``fn(*args)`` fails with a message matching ``match``: a ValueError eagerly, or the runtime error
    JAX makes of a failed compiled check under the caller's jit (its text ends with the message)."""
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match=match):
        jax.block_until_ready(fn(*args))


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
    jd = jax.jit(sc.density)  # one compilation for the thousands of quadrature nodes
    dens = lambda t: float(jd(t))  # noqa: E731
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
    # complex w: chi = psi^{-1} is the branch through 0, Im chi of the sign of Im w (the branch test of
    # G^{-1} rejected every complex w on laws without a closed form; found by the fuzz suite)
    wc = jnp.asarray(np.array([0.1 * np.exp(1j), 0.05 * np.exp(-2j)]))
    np.testing.assert_allclose(relu.s_transform(wc), 2 * (1 + wc) / (1 + 2 * wc), rtol=1e-10)
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
    with pytest.raises(ValueError, match="positive, finite mass"):
        GridDensity(jnp.linspace(0, 1, 5), jnp.zeros(5))


def test_edges_have_no_nan_and_gradients_match_finite_differences():
    def dens(v, x):
        return MarchenkoPastur(0.5, v).density(x) + Semicircle(v).density(x)

    a, b = (float(e) for e in MarchenkoPastur(0.5, 1.0).edges())
    for x in (a, b, 2.0, -2.0, 0.0):
        gval = jax.grad(dens)(1.0, jnp.asarray(x))
        assert np.isfinite(float(dens(1.0, x))) and np.isfinite(float(gval))
    check_gradients(lambda v: dens(v, 1.3), (1.0,), modes=("rev",))
    check_gradients(lambda c: MarchenkoPastur(c, 1.0).stieltjes(jnp.array(1.0 + 0.2j)).real, (0.4,))
    check_gradients(lambda s: FussCatalan(3, s).moment(4), (0.7,))


def test_vmap_equals_loop_and_jit_equals_eager():
    z = jnp.array([0.3 + 0.2j, 1.0 + 0.01j, 5.0 + 0j])
    mp = MarchenkoPastur(0.5, 1.0)
    loop = jnp.stack([mp.stieltjes(zi) for zi in z])
    np.testing.assert_allclose(jax.vmap(mp.stieltjes)(z), loop, rtol=1e-14)
    np.testing.assert_allclose(jax.jit(lambda m, z: m.stieltjes(z))(mp, z), loop, rtol=1e-14)
    vs = jnp.array([0.5, 1.0, 2.0])
    batched = jax.vmap(lambda v: MarchenkoPastur(0.5, v).moment(3))(vs)
    np.testing.assert_allclose(batched, jnp.stack([MarchenkoPastur(0.5, v).moment(3) for v in vs]), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Issue 12: no silent wrong answers (the exact reproducers, then the rule under jit)
# ---------------------------------------------------------------------------------------------


def test_issue12_reproducers():
    # MarchenkoPastur.moment(2.5) was a TypeError
    with pytest.raises(ValueError, match="k must be an integer, got 2.5"):
        MarchenkoPastur(0.5).moment(2.5)
    with pytest.raises(ValueError, match="k must be an integer"):
        MarchenkoPastur(0.5).moment(True)
    # jit(MarchenkoPastur(0.5).stieltjes) raised "unhashable": the bound method now jits (measures hash by
    # identity), and gives the closed form
    mp = MarchenkoPastur(0.5)
    z = np.array([1.0 + 0.5j, -1.0 + 0j, 3.0 - 0.2j])
    c = 0.5
    ref = (z - (1 - c) - np.sqrt(z - (1 - np.sqrt(c)) ** 2) * np.sqrt(z - (1 + np.sqrt(c)) ** 2)) / (2 * c * z)
    np.testing.assert_allclose(jax.jit(mp.stieltjes)(jnp.asarray(z)), ref, rtol=1e-14)
    np.testing.assert_allclose(jax.jit(mp.density)(jnp.array([1.0])), mp.density(jnp.array([1.0])), rtol=1e-14)
    # NaN x in a density reported "eta must be > 0"
    with pytest.raises(ValueError, match="x must be finite"):
        stieltjes_inversion(mp, jnp.array([jnp.nan]), eta=1e-3)
    with pytest.raises(ValueError, match="x must be finite"):
        mp.density(jnp.array([1.0, jnp.nan]))
    with pytest.raises(ValueError, match="x must not be empty"):
        mp.density(jnp.zeros((0,)))


def test_validation_holds_under_jit():
    mp = MarchenkoPastur(0.5)
    _raises("z must be off the real support", jax.jit(mp.stieltjes), jnp.array([1.0]))
    _raises("z must be finite", jax.jit(mp.stieltjes), jnp.array([jnp.nan + 1j]))
    _raises("ratio must be finite and > 0", jax.jit(lambda c: MarchenkoPastur(c).stieltjes(1j)), -0.5)
    _raises("variance must be finite and > 0", jax.jit(lambda v: Semicircle(v).density(0.0)), jnp.nan)
    _raises("weights must have a positive total mass", jax.jit(lambda w: Discrete(jnp.ones(2), w).moment(1)),
            jnp.zeros(2))
    _raises("x must be strictly increasing", jax.jit(lambda x: GridDensity(x, jnp.ones(3)).moment(1)),
            jnp.array([0.0, 2.0, 1.0]))
    _raises("eta must be finite and > 0", jax.jit(lambda e: stieltjes_inversion(mp, jnp.ones(2), eta=e)), 0.0)
    # real z on the support raises; outside it (left of the MP bulk, and 0 for ratio < 1) G is real and exact
    np.testing.assert_allclose(mp.stieltjes(jnp.array([0.0, -1.0])), [-1 / (1 - 0.5), complex(ref_g(-1.0, 0.5))],
                               rtol=1e-12)  # the quadrature reference: 4e-14
    with pytest.raises(ValueError, match=r"z must be off the real support \[0, 5.828\]"):
        MarchenkoPastur(2.0).stieltjes(jnp.array(0.0))  # the atom at 0 for ratio > 1


def ref_g(z, c):
    """MP(c, 1) Stieltjes transform at real z < lambda_- by quadrature of the density."""
    a, b = (1 - math.sqrt(c)) ** 2, (1 + math.sqrt(c)) ** 2
    dens = lambda t: math.sqrt(max((b - t) * (t - a), 0)) / (2 * math.pi * c * t)  # noqa: E731
    atom = max(0.0, 1 - 1 / c)
    return integrate.quad(lambda t: dens(t) / (z - t), a, b, epsabs=1e-14, limit=200)[0] + atom / z


def test_transform_domains_give_errors_not_nan():
    mp = MarchenkoPastur(0.5, 2.0)
    with pytest.raises(ValueError, match="r_transform is not finite"):  # the pole g = 1 / (c v)
        mp.r_transform(jnp.array(1.0 + 0j))
    with pytest.raises(ValueError, match="s_transform is not finite"):  # the pole w = -1 / c
        mp.s_transform(jnp.array(-2.0 + 0j))
    with pytest.raises(ValueError, match="measure on \\[0, inf\\)"):
        Semicircle(1.0).s_transform(jnp.array(0.1 + 0j))
    with pytest.raises(ValueError, match="g must be nonzero"):
        mp.inverse_stieltjes(jnp.array(0j))
    with pytest.raises(ValueError, match="1/z off the real support"):
        mp.psi(jnp.array(1.0))  # 1/z = 1 is in the bulk [0.17, 5.83]
    # psi(0) = 0 (the limit), and S(0) = 1/m1 on the numerical path
    assert complex(mp.psi(jnp.array(0.0))) == 0
    relu = Discrete(jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]))
    assert complex(relu.s_transform(jnp.array(0j))) == pytest.approx(2.0)
    # overflow: inf where the moment overflows, never NaN; a NaN moment (inf - inf) is an error
    assert float(MarchenkoPastur(1e30, 1e10).moment(12)) == math.inf
    assert float(MarchenkoPastur(1e30, 1e-300).moment(12)) == 0.0  # the true value 1e-3240 underflows
    with pytest.raises(ValueError, match="order k = 3 overflows"):
        Discrete(jnp.array([-1e200, 1e200])).moment(3)
    with pytest.raises(ValueError, match=r"k must be an integer in \[0, 100\]"):
        mp.moment(101)


def test_fuss_catalan_continuation_reports_the_branch():
    fc = FussCatalan(2, 1.0)
    with pytest.raises(ValueError, match="n_heights must be an integer"):
        fc.stieltjes(jnp.array(1j), n_heights=1)
    g = fc.stieltjes(jnp.array([0.5 + 1e-3j, 0.5 - 1e-3j, -2.0]))
    assert float(g[0].imag) < 0 < float(g[1].imag) and float(g[2].imag) == 0


def test_float32(float32_mode):
    # closed forms in float32 against the same formulas in float64 (NumPy): measured max relative error
    # 1.2e-7 (stieltjes, moments); tolerance 2e-6. The density next to the edge loses digits in b - x
    # (measured absolute error 1.1e-7 at x = b - 0.01): tolerance 5e-7 absolute
    mp = MarchenkoPastur(0.5, 1.5)
    assert mp.ratio.dtype == jnp.float32
    z = np.array([1.0 + 0.5j, -1.0 + 0.1j, 4.0 - 0.2j])
    a, b = 1.5 * (1 - np.sqrt(0.5)) ** 2, 1.5 * (1 + np.sqrt(0.5)) ** 2
    ref = (z - 1.5 * 0.5 - np.sqrt(z - a) * np.sqrt(z - b)) / (2 * 0.5 * 1.5 * z)
    g = mp.stieltjes(jnp.asarray(z, jnp.complex64))
    assert g.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(g), ref, rtol=2e-6)
    x = np.linspace(a + 0.01, b - 0.01, 7)
    np.testing.assert_allclose(np.asarray(mp.density(jnp.asarray(x, jnp.float32))),
                               np.sqrt((b - x) * (x - a)) / (2 * np.pi * 1.5 * 0.5 * x), rtol=2e-6, atol=5e-7)
    np.testing.assert_allclose(np.asarray(mp.moments(3)), [1.5, 1.5**2 * 1.5, 1.5**3 * (1 + 3 * 0.5 + 0.25)],
                               rtol=2e-6)
    # the numerical paths (Newton through rmtjax.solve with float32 tolerances): Fuss-Catalan density vs its
    # parametric form in float64, and the numerical S-transform of relu'^2 (measured 3e-7 and 1e-7)
    fc = FussCatalan(2, 1.0)
    phi = np.array([0.3, 0.6, 0.9])
    xs = np.sin(3 * phi) ** 3 / (np.sin(phi) * np.sin(2 * phi) ** 2)
    rho = np.sin(phi) ** 2 * np.sin(2 * phi) / (np.pi * np.sin(3 * phi) ** 2)
    np.testing.assert_allclose(np.asarray(fc.density(jnp.asarray(xs, jnp.float32))), rho, rtol=1e-4)
    relu = Discrete(jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]))
    w = np.array([0.1, 1.0, 5.0])
    np.testing.assert_allclose(np.asarray(relu.s_transform(jnp.asarray(w, jnp.complex64))),
                               2 * (1 + w) / (1 + 2 * w), rtol=1e-4)


def test_closed_form_stieltjes_keeps_its_digits_far_from_the_support():
    # (u - S) / (2 v) cancels for |z| >> the support (3.5e-8 relative at |z| = 4e4, found by the
    # free-convolution far-field test); the rationalized 2 / (u + S) does not. Reference: the moment
    # series G = sum_k m_k / z^(k+1), exact here to rounding (6 terms; the 7th is below 2e-21 relative at |z| >= 1e4);
    # measured: both laws within 4e-16.
    z = np.array([1e4 + 2j, 4e4 * np.exp(0.3j), -1e6 + 1j])
    semi = [1.0, 0.0, 3.0, 0.0, 18.0, 0.0]  # Semicircle(3, 0): m_2k = Catalan_k 3^k
    c, v = 0.5, 2.0  # MarchenkoPastur(0.5, 2): Narayana polynomials times v^k
    mp = [1.0, v, v**2 * (1 + c), v**3 * (1 + 3 * c + c**2), v**4 * (1 + 6 * c + 6 * c**2 + c**3),
          v**5 * (1 + 10 * c + 20 * c**2 + 10 * c**3 + c**4)]
    for law, m in ((Semicircle(3.0, 0.0), semi), (MarchenkoPastur(c, v), mp)):
        ref = sum(mk / z ** (k + 1) for k, mk in enumerate(m))
        np.testing.assert_allclose(law.stieltjes(jnp.asarray(z)), ref, rtol=1e-15)


def test_repeated_eager_calls_compile_nothing():
    """A second eager call with the same shapes, dtypes and structure (new parameter values) compiles
    no program: the public methods run their numerical work in functions jitted once at module level
    (eagerly, Semicircle.s_transform compiled 41 one-operation programs on its first call; the second
    call already compiled nothing before that change, since one-operation programs are cached by shape)."""
    w = jnp.array([0.05 + 0.01j, 0.1 - 0.02j])
    z = jnp.array([5.0 + 0.0j, 1.0 + 1.0j])
    x = jnp.array([0.5, 1.0, 7.0])

    def calls(v):
        sc, disc, mp = Semicircle(0.5 * v, 3.0), Discrete(jnp.array([0.5, 1.0, 2.0]) * v), MarchenkoPastur(v, 1.0)
        return [sc.s_transform(w), disc.s_transform(w), sc.stieltjes(z), disc.stieltjes(z), mp.density(x),
                mp.psi(0.02 * z), sc.r_transform(w), mp.moments(4), mp.inverse_stieltjes(w)]

    jax.block_until_ready(calls(1.0))
    with Programs() as p:
        jax.block_until_ready(calls(1.1))
    assert not p.names, f"{p.n} programs compiled by repeated calls: {p.names}"
