"""Mean-field signal propagation against closed forms, scipy quadrature and wide random networks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _gradcheck import check_gradients
from scipy import integrate, optimize

import rmtjax.activations as A
from rmtjax.gaussian import ClosedForm
from rmtjax.meanfield import c_map, c_star, chi_1, edge_of_chaos, mean_field, phase_diagram, q_map, q_star


def test_relu_closed_forms():
    # V(q) = sigma_w^2 q / 2 + sigma_b^2: q* = sigma_b^2 / (1 - sigma_w^2 / 2), chi_1 = sigma_w^2 / 2
    for w2, b2 in [(1.0, 0.1), (1.5, 0.3), (1.9, 0.05)]:
        mf = mean_field(A.Relu(), w2, b2)
        assert float(mf.q_star) == pytest.approx(b2 / (1 - w2 / 2), rel=1e-12)
        assert float(mf.chi_1) == pytest.approx(w2 / 2, rel=1e-12)
        assert float(mf.chi_q) == pytest.approx(w2 / 2, rel=1e-12)
        assert float(mf.c_star) == pytest.approx(1.0, abs=1e-9)  # ReLU nets are never chaotic
    assert float(edge_of_chaos(A.Relu(), 0.0).value) == pytest.approx(2.0, rel=1e-12)


def test_erf_against_independent_root_finding():
    w2, b2 = 2.0, 0.1
    V = lambda q: w2 * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + b2  # noqa: E731  Williams (1997)
    q_ref = optimize.brentq(lambda q: V(q) - q, 1e-6, 50.0, xtol=1e-15)
    mf = mean_field(A.Erf(), w2, b2)
    assert float(mf.q_star) == pytest.approx(q_ref, rel=1e-10)
    assert float(mf.chi_1) == pytest.approx(w2 * 4 / math.pi / math.sqrt(1 + 4 * q_ref), rel=1e-10)
    # critical line from the same closed forms
    for b2 in (0.0, 0.05, 0.3):
        w2c = float(edge_of_chaos(A.Erf(), b2).value)
        q = float(q_star(A.Erf(), w2c, b2).value)
        assert w2c * 4 / math.pi / math.sqrt(1 + 4 * q) == pytest.approx(1.0, rel=1e-9)


def test_tanh_against_scipy_quadrature():
    w2, b2 = 2.5, 0.05
    npdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    E = lambda f: integrate.quad(lambda z: f(z) * npdf(z), -12, 12, epsabs=1e-14, epsrel=1e-14, limit=200)[0]  # noqa: E731
    q_ref = optimize.brentq(lambda q: w2 * E(lambda z: math.tanh(math.sqrt(q) * z) ** 2) + b2 - q, 1e-3, 10, xtol=1e-14)
    chi_ref = w2 * E(lambda z: (1 - math.tanh(math.sqrt(q_ref) * z) ** 2) ** 2)
    mf = mean_field(A.Tanh(), w2, b2)
    assert float(mf.q_star) == pytest.approx(q_ref, rel=1e-9)
    assert float(mf.chi_1) == pytest.approx(chi_ref, rel=1e-8)
    assert float(mf.chi_1) > 1 and float(mf.c_star) < 1  # chaotic: a stable fixed point below 1
    assert float(c_map(mf.c_star, mf.q_star, A.Tanh(), w2, b2)) == pytest.approx(float(mf.c_star), abs=1e-11)


def test_depth_scale_diverges_at_the_edge_of_chaos():
    b2 = 0.05
    w2c = float(edge_of_chaos(A.Tanh(), b2).value)
    xi = [float(mean_field(A.Tanh(), w2c * (1 - eps), b2).xi_c) for eps in (0.1, 0.03, 0.01)]
    assert xi[0] < xi[1] < xi[2]
    # xi_c ~ 1 / (1 - chi_1) ~ 1 / eps near criticality: the slope of log xi vs log eps is -1
    slope = np.polyfit(np.log([0.1, 0.03, 0.01]), np.log(xi), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.15)


def test_gradients_match_finite_differences():
    # implicit derivatives through the bracketed q*, c* and edge-of-chaos solves (reverse mode)
    def f(w2, b2, a):
        mf = mean_field(A.Erf(a, 1.0, 0.0), w2, b2)
        return mf.q_star + mf.chi_1 + 0.01 * mf.xi_c

    check_gradients(f, (jnp.array(1.5), jnp.array(0.1), jnp.array(1.2)), modes=("rev",), atol=1e-5, rtol=1e-5)
    # in the chaotic phase (sigma_w2 = 2.5 > 1.38): c* < 1 and chi_c depend on the parameters too
    def g(w2, b2, a):
        mf = mean_field(A.Erf(a, 1.0, 0.0), w2, b2)
        return mf.c_star + mf.chi_c

    check_gradients(g, (jnp.array(2.5), jnp.array(0.05), jnp.array(1.2)), modes=("rev",), atol=1e-6, rtol=1e-6)
    check_gradients(lambda b: edge_of_chaos(A.Erf(), b).value, (0.1,), modes=("rev",), atol=1e-6, rtol=1e-6)
    # numerical expectations (tanh, Mehler series): d q* / d sigma_w2 by the implicit function theorem
    eps = 1e-6
    fd = (q_star(A.Tanh(), 1.5 + eps, 0.05).value - q_star(A.Tanh(), 1.5 - eps, 0.05).value) / (2 * eps)
    assert float(jax.grad(lambda w: q_star(A.Tanh(), w, 0.05).value)(1.5)) == pytest.approx(float(fd), rel=1e-7)


GRID = jnp.linspace(0.5, 3.0, 6), jnp.array([0.01, 0.1, 0.3])  # one shape: one compilation for the file


def test_phase_diagram_vmapped_with_codes():
    w2, b2 = GRID
    pd = phase_diagram(A.Tanh(), w2, b2)
    assert pd.chi_1.shape == (6, 3)
    assert bool(jnp.all(pd.ok))
    crit = jnp.array([edge_of_chaos(A.Tanh(), b).value for b in b2])
    chaotic = np.asarray(pd.chi_1 > 1)
    np.testing.assert_array_equal(chaotic, np.asarray(w2[:, None] > crit[None, :]))


def test_correlations_of_a_wide_random_network_follow_the_c_map(xla_optimized):
    # XLA's default optimizations: the run time is 16 x 8 draws and products of 1000 x 1000 float32
    # matrices, which -O0 leaves unvectorized (measured 29 s of wall, 2.7 s of compile, under -O0)
    act, w2, b2, width, depth, seeds = A.Tanh(), 2.5, 0.05, 1000, 8, 16
    q = float(q_star(act, w2, b2).value)
    c = 0.6
    theory = [c]
    for _ in range(depth):
        c = float(c_map(c, q, act, w2, b2))
        theory.append(c)

    def corr(h):
        return jnp.sum(h[0] * h[1]) / jnp.sqrt(jnp.sum(h[0] ** 2) * jnp.sum(h[1] ** 2))

    def layer(h, key):  # one layer, compiled once (lax.scan over depth, not an unrolled loop)
        kw, kb = jax.random.split(key)
        W = jax.random.normal(kw, (width, width), jnp.float32) * math.sqrt(w2 / width)
        b = jax.random.normal(kb, (width,), jnp.float32) * math.sqrt(b2)
        h = jnp.tanh(h) @ W.T + b[None, :]
        return h, corr(h)

    def run(key):  # float32 networks: rounding (1e-7) is far below the standard errors (~1e-3)
        k0, key = jax.random.split(key)
        z = jax.random.normal(k0, (2, width), jnp.float32)
        h = math.sqrt(q) * jnp.stack([z[0], 0.6 * z[0] + 0.8 * z[1]])
        _, cs = jax.lax.scan(layer, h, jax.random.split(key, depth))
        return jnp.concatenate([corr(h)[None], cs])

    emp = np.asarray(jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), seeds)))
    mean, se = emp.mean(0), emp.std(0, ddof=1) / np.sqrt(seeds)
    z = np.abs(mean - np.array(theory)) / np.maximum(se, 1e-12)
    assert np.all(z[1:] < 5), (mean, theory, se)
    cs = float(c_star(act, w2, b2).value)
    gaps = np.abs(np.array(theory) - cs)
    assert np.all(np.diff(gaps) < 0)  # the iterates approach c* monotonically


# --------------------------------------------------------------------------------------------
# Issue 12: the physical branch, chi_1 at the edge, messages, validation, compilation, float32
# --------------------------------------------------------------------------------------------

_PDF = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
_NCDF = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731
_PHI = {"erf": math.erf, "sin": math.sin, "gelu": lambda x: x * _NCDF(x), "tanh": math.tanh}


def _gauss(f):
    return integrate.quad(lambda z: f(z) * _PDF(z), -14, 14, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


def _length_map(name, w2, b2):
    """V(q) by adaptive quadrature of the scalar activation (independent of rmtjax)."""
    phi = _PHI[name]
    return lambda q: w2 * _gauss(lambda z: phi(math.sqrt(q) * z) ** 2) + b2


def test_q_star_is_on_the_physical_branch():
    # issue 12: q_star(Erf(), 10.0, 0.05) returned -9.95 with ok=True (GELU and Sin likewise)
    acts = {"erf": A.Erf(), "sin": A.Sin(), "gelu": A.Gelu()}
    for name, w2 in [("erf", 10.0), ("erf", 8.0), ("sin", 8.0), ("sin", 10.0), ("gelu", 2.0)]:
        V = _length_map(name, w2, 0.05)
        g1 = V(1.0) - 1.0
        # the root the iteration from q0 = 1 approaches: above 1 if V(1) > 1, below it otherwise
        lo, hi = (1.0, 2 * w2 + 1) if g1 > 0 else (1e-9, 1.0)
        ref = optimize.brentq(lambda q: V(q) - q, lo, hi, xtol=1e-14, rtol=1e-13)  # noqa: B023
        mf = mean_field(acts[name], w2, 0.05)
        assert bool(mf.ok) and float(mf.q_star) > 0
        assert float(mf.q_star) == pytest.approx(ref, rel=1e-9), (name, w2)
        assert float(q_star(acts[name], w2, 0.05).value) == float(mf.q_star)
        if name == "sin":  # E[sin^2] = (1 - e^-2q) / 2, E[cos^2] = (1 + e^-2q) / 2
            assert float(mf.chi_1) == pytest.approx(w2 * (1 + math.exp(-2 * ref)) / 2, rel=1e-10)
        if name == "erf":  # 4 w2 / (pi sqrt(1 + 4 q)) (Williams 1997)
            assert float(mf.chi_1) == pytest.approx(w2 * 4 / math.pi / math.sqrt(1 + 4 * ref), rel=1e-10)
    # the closed form of erf (Williams 1997): q* = 7.8335..., not -9.95
    V = lambda q: 10.0 * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + 0.05  # noqa: E731
    ref = optimize.brentq(lambda q: V(q) - q, 1.0, 20.0, xtol=1e-15)
    assert float(q_star(A.Erf(), 10.0, 0.05).value) == pytest.approx(ref, rel=1e-12)


def test_no_finite_fixed_point_is_reported_not_invented():
    # GELU with sigma_w2 >= 8: V(q) > q everywhere (quadrature on a grid from 1e-6 to 1e6), so the
    # variance grows without bound and there is no q*: an error, or ok=False with a NaN value
    for w2 in (8.0, 10.0):
        V = _length_map("gelu", w2, 0.05)
        assert min(V(q) - q for q in np.geomspace(1e-6, 1e6, 25)) > 0
        with pytest.raises(ValueError, match=r"no finite fixed point .* at sigma_w2 = %g" % w2):
            q_star(A.Gelu(), w2, 0.05)
        sol = q_star(A.Gelu(), w2, 0.05, throw=False)
        assert not bool(sol.ok) and np.isnan(float(sol.value))
    # ReLU: q* = sigma_b2 / (1 - sigma_w2 / 2) exists only for sigma_w2 < 2 (at 2, V(q) - q = sigma_b2
    # vanishes into the rounding of q ~ 1e15: no spurious root there)
    sol = q_star(A.Relu(), jnp.array([1.0, 1.999, 2.0, 3.0]), 0.05, throw=False)
    np.testing.assert_array_equal(np.asarray(sol.ok), [True, True, False, False])
    np.testing.assert_allclose(np.asarray(sol.value[:2]), [0.1, 0.05 / (1 - 1.999 / 2)], rtol=1e-10)
    # the error advice names only options q_star takes
    with pytest.raises(ValueError) as e:
        q_star(A.Gelu(), 8.0, 0.05)
    assert "damping" not in str(e.value) and "solver" not in str(e.value)
    # under jit the same failure stops the program with a message naming the parameters
    with pytest.raises(Exception, match="sigma_w2"):
        jax.block_until_ready(jax.jit(lambda w: q_star(A.Gelu(), w, 0.05).value)(8.0))


def test_q0_selects_the_basin_of_attraction():
    # GELU at sigma_w2 = 2: a stable root near 0.12 and an unstable one between 10 and 100
    V = _length_map("gelu", 2.0, 0.05)
    small = optimize.brentq(lambda q: V(q) - q, 1e-6, 1.0, xtol=1e-14)
    for q0 in (0.0, 0.01, 1.0, 5.0):  # below the unstable root: the stable one
        assert float(q_star(A.Gelu(), 2.0, 0.05, q0=q0).value) == pytest.approx(small, rel=1e-9)
    sol = q_star(A.Gelu(), 2.0, 0.05, q0=1000.0, throw=False)  # above it: the variance diverges
    assert not bool(sol.ok)


def test_phase_diagram_never_marks_a_wrong_value_ok():
    # issue 12: chi_1 = inf at points marked ok. GELU at sigma_b2 = 0.05 has q* only below sigma_w2 ~ 2.3,
    # at sigma_b2 = 0.5 only below ~2 (V(q) > q on a quadrature grid at the other points)
    w2, b2 = jnp.array([1.0, 2.0, 8.0, 10.0]), jnp.array([0.05, 0.5])
    pd = phase_diagram(A.Gelu(), w2, b2)
    ok = np.asarray(pd.ok)
    np.testing.assert_array_equal(ok, [[True, True], [True, False], [False, False], [False, False]])
    V = _length_map("gelu", 2.0, 0.5)
    assert min(V(q) - q for q in np.geomspace(1e-6, 1e6, 25)) > 0
    for field in pd._fields[:-1]:
        v = np.asarray(getattr(pd, field))
        assert not np.any(np.isnan(v[ok])) and np.all(np.isnan(v[~ok])), field
    assert np.all(np.isfinite(np.asarray(pd.chi_1)[ok]))
    # the grid equals the eager solves, and chi_1 equals sigma_w2 E[gelu'(sqrt(q*) z)^2] by quadrature
    dgelu = lambda x: _NCDF(x) + x * _PDF(x)  # noqa: E731
    for i, j in zip(*np.nonzero(ok)):
        w, b = float(w2[i]), float(b2[j])
        q = float(pd.q_star[i, j])
        assert q == pytest.approx(float(q_star(A.Gelu(), w, b).value), rel=1e-13)
        ref = w * _gauss(lambda z: dgelu(math.sqrt(q) * z) ** 2)  # noqa: B023
        assert float(pd.chi_1[i, j]) == pytest.approx(ref, rel=1e-10)


def test_chi_1_at_the_edge_of_chaos():
    # issue 12: chi_1 at the critical point raised "c* (correlation map) did not converge"
    crit = edge_of_chaos(A.Tanh(), 0.05)
    c = chi_1(A.Tanh(), crit.value, 0.05)
    assert bool(c.ok) and float(c.value) == pytest.approx(1.0, abs=1e-9)
    mf = mean_field(A.Tanh(), crit.value, 0.05)  # c* = 1 (the correlation map is tangent at 1)
    assert bool(mf.ok) and float(mf.c_star) == 1.0 and float(mf.chi_1) == pytest.approx(1.0, abs=1e-9)
    # chi_1 and mean_field agree, and chi_1 takes throw=
    assert float(chi_1(A.Tanh(), 2.5, 0.05).value) == pytest.approx(float(mean_field(A.Tanh(), 2.5, 0.05).chi_1),
                                                                    rel=1e-14)
    bad = chi_1(A.Relu(), 3.0, 0.05, throw=False)  # ReLU with a bias: no q* beyond sigma_w2 = 2
    assert not bool(bad.ok) and np.isnan(float(bad.value))
    with pytest.raises(ValueError, match="no finite fixed point"):
        chi_1(A.Relu(), 3.0, 0.05)


def test_fixed_points_at_zero_variance_and_zero_correlation():
    # q* = 0 (no bias, phi(0) = 0, ordered): chi_1 = sigma_w2 phi'(0)^2 and chi_q = V'(0) in the limit q -> 0+
    mf = mean_field(A.Relu(), 1.0, 0.0)
    assert float(mf.q_star) == 0.0 and float(mf.chi_1) == pytest.approx(0.5, rel=1e-14)
    assert float(mf.c_star) == 1.0  # ReLU nets never decorrelate
    mf = mean_field(A.Tanh(), 0.5, 0.0)
    assert float(mf.q_star) == 0.0
    assert float(mf.chi_1) == pytest.approx(0.5, rel=1e-12) and float(mf.chi_q) == pytest.approx(0.5, rel=1e-9)
    # odd activation without bias in the chaotic phase: c* = 0 (Poole et al. 2016; the numerical a_0 ~ 1e-17
    # of tanh leaves c* ~ 1e-32)
    assert float(c_star(A.Tanh(), 2.0, 0.0).value) == pytest.approx(0.0, abs=1e-12)


def test_gradient_of_q_star_at_zero_is_the_one_sided_one():
    """A probe's reproducer: at sigma_b^2 = 0 in the ordered phase q* = 0, and the implicit derivative
    dq*/d sigma_b^2 = 1 / (1 - V'(0+)) came out 1.6 for ReLU at sigma_w^2 = 1.5 (exact: q* = b / (1 - w/2),
    so 4) and 1.0 for tanh at 0.5 (V'(0+) = sigma_w^2 phi'(0)^2, so 2): V' was taken at q = 0 itself."""
    grad_b = lambda act, w: float(jax.grad(lambda b: q_star(act, w, b).value)(0.0))
    assert grad_b(A.Relu(), 1.5) == pytest.approx(4.0, rel=1e-12)
    assert grad_b(A.Tanh(), 0.5) == pytest.approx(2.0, rel=1e-12)
    assert grad_b(A.Erf(), 0.5) == pytest.approx(1 / (1 - 0.5 * 4 / np.pi), rel=1e-12)  # erf'(0)^2 = 4/pi
    # the same as the derivative just inside the domain, where q* > 0
    inside = float(jax.grad(lambda b: q_star(A.Tanh(), 0.5, b).value)(1e-12))
    assert inside == pytest.approx(2.0, rel=1e-9)
    # depth scale: -1/log(chi) -> 0 as chi -> 0 (ReLU with sigma_w^2 = 0: chi_q = 0), not inf
    assert float(mean_field(A.Relu(), 0.0, 0.3).xi_q) == 0.0
    assert float(mean_field(A.Relu(), 1e-300, 0.3).xi_q) == pytest.approx(-1 / np.log(0.5e-300), rel=1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: q_star(A.Tanh(), -1.0, 0.1), "sigma_w2 must be finite and >= 0"),
    (lambda: q_star(A.Tanh(), float("nan"), 0.1), "sigma_w2 must be finite"),
    (lambda: q_star(A.Tanh(), 1.0 + 2j, 0.1), "sigma_w2 must be real"),
    (lambda: q_star(A.Tanh(), True, 0.1), "sigma_w2 must be a real number"),
    (lambda: q_star(A.Tanh(), 1.0, float("inf")), "sigma_b2 must be finite"),
    (lambda: q_star(A.Tanh(), 1.0, 0.1, q0=-1.0), "q0 must be finite and >= 0"),
    (lambda: q_star("tanh", 1.0, 0.1), "activation must be an rmtjax.activations module"),
    (lambda: q_star(A.Erf(float("nan")), 1.0, 0.1), r"(activation|Erf)\.a must be finite"),
    (lambda: q_star(A.Tanh(), 1.0, 0.1, method="closed"), "method must be an rmtjax.gaussian method"),
    (lambda: q_star(A.Tanh(), 1.0, 0.1, method=ClosedForm()), "method=ClosedForm"),
    (lambda: q_star(A.Tanh(), 1.0, 0.1, max_steps=0), "max_steps must be an integer"),
    (lambda: q_star(A.Tanh(), 1.0, 0.1, throw="yes"), "throw must be True or False"),
    (lambda: q_star(A.Tanh(), jnp.ones(2), jnp.ones(3)), "must have broadcastable shapes"),
    (lambda: c_star(A.Tanh(), 1.0, 0.1, c0=1.5), r"c0 must be finite and in \[-1, 1\]"),
    (lambda: chi_1(A.Tanh(), -1.0, 0.1), "sigma_w2"),
    (lambda: mean_field(A.Tanh(), 1.0, 0.1, c0=float("nan")), "c0 must be finite"),
    (lambda: edge_of_chaos(A.Tanh(), 0.1, sigma_w2_guess=0.0), "sigma_w2_guess must be finite and > 0"),
    (lambda: edge_of_chaos(A.Tanh(), -0.1), "sigma_b2"),
    (lambda: phase_diagram(A.Tanh(), jnp.ones((2, 2)), jnp.ones(2)), "sigma_w2 must be 1-d"),
    (lambda: phase_diagram(A.Tanh(), jnp.ones(2), jnp.zeros(0)), "sigma_b2 must not be empty"),
    (lambda: q_map(-1.0, A.Tanh(), 1.0, 0.1), "q must be finite and >= 0"),
    (lambda: c_map(0.5, 0.0, A.Tanh(), 1.0, 0.1), "q must be finite and > 0"),
])
def test_bad_arguments_are_named_before_solving(call, match):
    # issue 12: several bad arguments surfaced as "did not converge"
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_values_are_caught_under_jit():
    with pytest.raises(Exception, match="sigma_w2 must be finite and >= 0"):
        jax.block_until_ready(jax.jit(lambda w: q_star(A.Erf(), w, 0.1).value)(-1.0))
    with pytest.raises(Exception, match=r"(activation|Erf)\.b must be finite"):
        jax.block_until_ready(jax.jit(lambda b: q_star(A.Erf(1.0, b, 0.0), 1.0, 0.1).value)(jnp.nan))


def test_repeated_calls_do_not_recompile():
    import equinox as eqx

    from rmtjax import meanfield

    # issue 12: eager q_star took 0.6-3 s on every call, mean_field 14 s, phase_diagram recompiled
    q_star(A.Tanh(), 1.5, 0.05)
    mean_field(A.Tanh(), 1.5, 0.05)
    n = eqx.debug.get_num_traces(meanfield._run)
    for w2 in (1.2, 1.7, jnp.array(2.2)):
        q_star(A.Tanh(), w2, 0.05)
        mean_field(A.Tanh(), w2, 0.05)
    assert eqx.debug.get_num_traces(meanfield._run) == n
    phase_diagram(A.Tanh(), *GRID)
    n = eqx.debug.get_num_traces(meanfield._phase_core)
    phase_diagram(A.Tanh(), GRID[0] + 0.1, GRID[1])
    assert eqx.debug.get_num_traces(meanfield._phase_core) == n


def test_vmap_equals_a_loop_and_carries_failures():
    # ReLU with sigma_b2 > 0 has q* only for sigma_w2 < 2; a vmapped sweep carries on past the others
    w2 = jnp.array([1.0, 1.5, 2.5, 8.0])
    sols = jax.vmap(lambda w: q_star(A.Relu(), w, 0.05, throw=False))(w2)
    np.testing.assert_array_equal(np.asarray(sols.ok), [True, True, False, False])
    loop = [float(q_star(A.Relu(), w, 0.05, throw=False).value) for w in w2]
    np.testing.assert_allclose(np.asarray(sols.value), loop, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(sols.value[:2]), [0.1, 0.2], rtol=1e-12)
    mf = jax.vmap(lambda w: mean_field(A.Relu(), w, 0.05, throw=False))(w2)
    np.testing.assert_array_equal(np.asarray(mf.ok), [True, True, False, False])
    np.testing.assert_allclose(np.asarray(mf.chi_1[:2]), [0.5, 0.75], rtol=1e-12)
    assert np.all(np.isnan(np.asarray(mf.chi_1[2:])))


def test_float32_without_x64(float32_mode):
    # issue 12: every solver failed in float32 (tolerances fixed at 1e-10 / 1e-12; now rtol 1.5e-5,
    # atol 1.9e-6 in float32). Measured relative errors against float64 (the same calls): q* of erf
    # at sigma_w2 = 10: 8.4e-8; critical sigma_w2 of erf: 9.6e-8; mean_field of tanh at (2.5, 0.05):
    # q* 5.9e-7, c* 4.8e-6 (the solver's rtol), chi_1 3.0e-7, chi_c 1.9e-6, chi_q 5.7e-7, xi_q 6.5e-7,
    # xi_c 2.2e-5 (= chi_c's error times 1 / (chi_c |log chi_c|) = 12.8). Tolerances: 5x those.
    with jax.enable_x64(True):
        ref_erf = float(q_star(A.Erf(), 10.0, 0.05).value)
        ref_edge = float(edge_of_chaos(A.Erf(), 0.05).value)
        ref_mf = [float(x) for x in mean_field(A.Tanh(), 2.5, 0.05)[:-1]]
    q = q_star(A.Erf(), 10.0, 0.05)
    assert q.value.dtype == jnp.float32 and bool(q.ok)
    assert float(q.value) == pytest.approx(ref_erf, rel=5e-7)
    assert float(edge_of_chaos(A.Erf(), 0.05).value) == pytest.approx(ref_edge, rel=5e-7)
    mf = mean_field(A.Tanh(), 2.5, 0.05)
    assert bool(mf.ok) and mf.q_star.dtype == jnp.float32
    err = np.abs(np.array([float(x) for x in mf[:-1]]) - ref_mf) / np.abs(ref_mf)
    assert np.all(err <= 5 * np.array([5.9e-7, 4.8e-6, 3.0e-7, 1.9e-6, 5.7e-7, 6.5e-7, 2.2e-5])), err
