"""Closed-form Gaussian duals and numerical methods against adaptive scipy quadrature."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import rmtjax.activations as A
from rmtjax.gaussian import ClosedForm, GaussHermite, Mehler, MonteCarlo, gaussian_expectations

import _reference as R
from _compiles import Programs
from _reference import quad_expectation

relu = lambda x: max(x, 0.0)  # noqa: E731
heav = lambda x: 1.0 if x > 0 else 0.0  # noqa: E731
npdf = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
ncdf = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731


def _poly(c):
    return lambda x: sum(ci * x**i for i, ci in enumerate(c))


def _dpoly(c):
    return lambda x: sum(i * ci * x ** (i - 1) for i, ci in enumerate(c) if i)


HE3 = [0.0, -3.0 / math.sqrt(6), 0.0, 1.0 / math.sqrt(6)]

# (activation, f, f', kinks)
CLOSED = [
    (A.Relu(), relu, heav, (0.0,)),
    (A.LeakyRelu(0.2), lambda x: x if x > 0 else 0.2 * x, lambda x: 1.0 if x > 0 else 0.2, (0.0,)),
    (A.ABRelu(-0.3, 1.2), lambda x: 1.2 * x if x > 0 else -0.3 * x, lambda x: 1.2 if x > 0 else -0.3, (0.0,)),
    (A.Abs(), abs, lambda x: 1.0 if x > 0 else -1.0, (0.0,)),
    (A.Erf(1.3, 0.7, 0.2), lambda x: 1.3 * math.erf(0.7 * x) + 0.2,
     lambda x: 1.3 * 0.7 * 2 / math.sqrt(math.pi) * math.exp(-0.49 * x * x), ()),
    (A.Gelu(), lambda x: x * ncdf(x), lambda x: ncdf(x) + x * npdf(x), ()),
    (A.Sin(1.1, 0.8, 0.3), lambda x: 1.1 * math.sin(0.8 * x + 0.3), lambda x: 1.1 * 0.8 * math.cos(0.8 * x + 0.3), ()),
    (A.Cos(0.9, 1.2, 0.1), lambda x: 0.9 * math.cos(1.2 * x + 0.1), lambda x: -0.9 * 1.2 * math.sin(1.2 * x + 0.1), ()),
    (A.Identity(), lambda x: x, lambda x: 1.0, ()),
    (A.Exp(0.5, 0.6), lambda x: 0.5 * math.exp(0.6 * x), lambda x: 0.3 * math.exp(0.6 * x), ()),
    (A.Gaussian(1.2, -0.4), lambda x: 1.2 * math.exp(-0.4 * x * x), lambda x: -0.96 * x * math.exp(-0.4 * x * x), ()),
    (A.Rbf(0.7), lambda x: math.sqrt(2) * math.sin(math.sqrt(1.4) * x + math.pi / 4),
     lambda x: math.sqrt(2) * math.sqrt(1.4) * math.cos(math.sqrt(1.4) * x + math.pi / 4), ()),
    (A.Polynomial([0.3, -1.0, 0.5, 0.2]), _poly([0.3, -1.0, 0.5, 0.2]), _dpoly([0.3, -1.0, 0.5, 0.2]), ()),
    (A.Hermite(3), _poly(HE3), _dpoly(HE3), ()),
    (A.Monomial(4), lambda x: x**4, lambda x: 4 * x**3, ()),
    (A.RectifiedMonomial(0), heav, lambda x: 0.0, (0.0,)),
    (A.RectifiedMonomial(1), relu, heav, (0.0,)),
    (A.RectifiedMonomial(2), lambda x: relu(x) ** 2, lambda x: 2 * relu(x), (0.0,)),
    (A.RectifiedMonomial(3), lambda x: relu(x) ** 3, lambda x: 3 * relu(x) ** 2, (0.0,)),
    (A.Sign(), lambda x: float(np.sign(x)), lambda x: 0.0, (0.0,)),
    (A.HardTanh(), lambda x: max(-1.0, min(1.0, x)), lambda x: float(abs(x) < 1), (-1.0, 1.0)),
]

TRIPLES = [(1.3, 0.7, 0.45), (0.8, 2.1, -1.2), (1.5, 1.5, 1.5), (1.5, 1.5, -1.5), (0.9, 1.1, 0.0), (2.0, 0.5, 0.99)]


def _reference(act, f, q1, q2, q12, kinks, derivative=False):
    """Exact moments (Isserlis, mpmath) for polynomials, the 60-digit Stein recursion for
    rectified monomials, adaptive scipy quadrature for the rest."""
    if isinstance(act, A.AbstractPolynomial):
        coef = [float(c) for c in np.asarray(act.coef)]
        if derivative:
            coef = [i * c for i, c in enumerate(coef)][1:] or [0.0]
        return R.mp_poly_expectation(coef, q1, q2, q12)
    if isinstance(act, A.RectifiedMonomial):
        n = act.degree
        if derivative:
            return 0.0 if n == 0 else n * n * R.mp_rect_moment(n - 1, q1, q2, q12)
        return R.mp_rect_moment(n, q1, q2, q12)
    return quad_expectation(f, f, q1, q2, q12, kinks)


CLOSED_IDS = [f"{i}-{type(c[0]).__name__}" for i, c in enumerate(CLOSED)]
# identical, opposite, orthogonal and vanishing inputs: values and gradients must stay finite
SINGULAR = [(1.0, 1.0, 1.0), (1.0, 1.0, -1.0), (1.0, 1.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)]


@eqx.filter_jit
def _closed_forms(acts, q):
    """k, kdot and the gradient of k + kdot in (q1, q2, q12) for every activation at every row of
    ``q``: one compiled program for the closed-form and the singular-point tests (measured in CPU seconds
    on a loaded machine: 12 s, against 27 s for the former eager calls, point by point)."""

    def one(act):
        def g(x):
            k, kdot = gaussian_expectations(act, x[0], x[1], x[2], method=ClosedForm())
            return k + kdot, (k, kdot)

        (_, (k, kdot)), grad = jax.vmap(jax.value_and_grad(g, has_aux=True))(q)
        return k, kdot, grad

    return [one(act) for act in acts]


@pytest.fixture(scope="module")
def closed_forms():
    out = _closed_forms([c[0] for c in CLOSED], jnp.asarray(TRIPLES + SINGULAR))
    return [tuple(np.asarray(a) for a in o) for o in out]


@pytest.mark.parametrize("i", range(len(CLOSED)), ids=CLOSED_IDS)
def test_closed_form_matches_quadrature(i, closed_forms):
    act, f, df, kinks = CLOSED[i]
    k_all, kdot_all, _ = closed_forms[i]
    for j, (q1, q2, q12) in enumerate(TRIPLES):
        k, kdot = k_all[j], kdot_all[j]
        ref = _reference(act, f, q1, q2, q12, kinks)
        assert float(k) == pytest.approx(ref, rel=1e-10, abs=1e-11), (q1, q2, q12)
        if isinstance(act, A.Sign):
            assert float(kdot) == 0.0  # neural-tangents' convention: derivative 0 a.e.
            continue
        refd = _reference(act, df, q1, q2, q12, kinks, derivative=True)
        assert float(kdot) == pytest.approx(refd, rel=1e-10, abs=1e-11), (q1, q2, q12)


NUMERIC = [
    (A.Tanh(), math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    (A.Sigmoid(), special.expit, lambda x: special.expit(x) * (1 - special.expit(x))),
    (A.Swish(1.5), lambda x: x * special.expit(1.5 * x),
     lambda x: special.expit(1.5 * x) + 1.5 * x * special.expit(1.5 * x) * (1 - special.expit(1.5 * x))),
    (A.Softplus(), lambda x: math.log1p(math.exp(x)) if x < 30 else x, special.expit),
    (A.Mish(), lambda x: x * math.tanh(math.log1p(math.exp(x))), None),
    (A.Custom(lambda x, p: jnp.sin(p["w"] * x) + 0.1 * x, {"w": jnp.array(1.3)}),
     lambda x: math.sin(1.3 * x) + 0.1 * x, lambda x: 1.3 * math.cos(1.3 * x) + 0.1),
]
NUM_TRIPLES = [(1.0, 1.0, 0.5), (2.0, 1.2, -0.9), (1.4, 1.4, 1.4), (0.6, 0.9, 0.2)]


@pytest.mark.parametrize("act,f,df", NUMERIC, ids=lambda a: type(a).__name__ if isinstance(a, A.AbstractActivation) else "")
def test_numerical_methods_match_quadrature(act, f, df):
    for q1, q2, q12 in NUM_TRIPLES:
        ref = quad_expectation(f, f, q1, q2, q12, ())
        refd = None if df is None else quad_expectation(df, df, q1, q2, q12, ())
        for method, tol in [(Mehler(64), 1e-9), (Mehler(128), 1e-11), (GaussHermite(64), 1e-6)]:
            k, kdot = gaussian_expectations(act, q1, q2, q12, method=method)
            assert abs(float(k) - ref) <= tol * max(1, abs(ref)), (method, q1, q2, q12)
            if refd is not None:
                assert abs(float(kdot) - refd) <= 10 * tol * max(1, abs(refd)), (method, q1, q2, q12)


def _quad_1d(f, q):
    """E[f(sqrt(q) z)] by scipy's adaptive quadrature, split where f(sqrt(q) z) varies (|z| ~ 1/sqrt(q))."""
    from scipy import integrate

    g = lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    s = 1 / math.sqrt(q)
    cuts = sorted({-14.0, max(-8 * s, -13.5), -s, 0.0, s, min(8 * s, 13.5), 14.0})
    return sum(integrate.quad(g, a, b, limit=2000, epsabs=1e-300, epsrel=1e-13)[0] for a, b in zip(cuts, cuts[1:]))


def test_large_variances_of_numerical_activations():
    """A probe's reproducer: the trapezoidal rule in z (step 0.04) does not resolve tanh(sqrt(q) z) at large
    q: tanh's kdot at q = 1e4 was 3.3 times too large, chi_1 at sigma_w^2 = 1000 18.50 (exact 17.04), and
    the length map at 1e4 0.98400 (exact 0.99202). Above LARGE_VARIANCE the rule is a sinh-mapped trapezoid
    in u = sqrt(q) z. Against scipy: measured at most 2.4e-16 relative for q up to 1e4 (diagonal)."""
    sech4 = lambda u: (2 * math.exp(-abs(u)) / (1 + math.exp(-2 * abs(u)))) ** 4  # noqa: E731
    sig = lambda u: 0.5 * (1 + math.tanh(u / 2))  # noqa: E731
    for q in (17.0, 1e3, 1e4):
        k, kdot = gaussian_expectations(A.Tanh(), q, q, q)
        assert float(k) == pytest.approx(_quad_1d(lambda u: math.tanh(u) ** 2, q), rel=1e-13)
        assert float(kdot) == pytest.approx(_quad_1d(sech4, q), rel=1e-12)
        assert float(A.Tanh().length_map(q)) == pytest.approx(_quad_1d(lambda u: math.tanh(u) ** 2, q), rel=1e-13)
        assert float(A.Sigmoid().length_map(q)) == pytest.approx(_quad_1d(lambda u: sig(u) ** 2, q), rel=1e-13)
        a = A.Tanh().hermite_coefficients(jnp.array(q), order=3)
        # a_1 = E[tanh(sqrt(q) z) z] = sqrt(q) E[sech^2(sqrt(q) z)] (Stein; scipy on z tanh(sqrt(q) z) itself
        # is off by 7e-12 at q = 1e4, mpmath to 30 digits agrees with rmtjax to 1e-16)
        sech2 = lambda u: (2 * math.exp(-abs(u)) / (1 + math.exp(-2 * abs(u)))) ** 2  # noqa: E731
        assert float(a[1]) == pytest.approx(math.sqrt(q) * _quad_1d(sech2, q), rel=1e-12)
    # off the diagonal: the sign function's arcsine law as q grows (tanh(sqrt(q) z) -> sign z)
    assert float(gaussian_expectations(A.Tanh(), 1e12, 1e12, 0.5e12).k) == pytest.approx(1 / 3, rel=1e-10)
    # mean field at large sigma_w^2: chi_1 = sigma_w^2 E[sech^4(sqrt(q*) z)] with the scipy q*
    from scipy import optimize

    from rmtjax.meanfield import mean_field
    qs = optimize.brentq(lambda q: 1000.0 * _quad_1d(lambda u: math.tanh(u) ** 2, q) - q, 100.0, 1000.0, xtol=1e-12)
    assert float(mean_field(A.Tanh(), 1000.0, 0.0).chi_1) == pytest.approx(1000.0 * _quad_1d(sech4, qs), rel=1e-9)
    # the two rules meet at LARGE_VARIANCE, and the gradient in q is continuous there
    from rmtjax._numerics import LARGE_VARIANCE
    lo, hi = LARGE_VARIANCE * (1 - 1e-9), LARGE_VARIANCE * (1 + 1e-9)
    jump = float(A.Tanh().length_map(hi)) - float(A.Tanh().length_map(lo))
    slope = float(jax.grad(A.Tanh().length_map)(LARGE_VARIANCE))
    assert abs(jump - slope * (hi - lo)) <= 1e-15
    g = jax.grad(lambda q: gaussian_expectations(A.Tanh(), q, q, q).kdot)
    assert float(g(lo)) == pytest.approx(float(g(hi)), rel=1e-8)


def test_hard_tanh_closed_form_dual_at_extreme_variances():
    """HardTanh's dual (an integral over the angle, in log(pi/2 - |theta|); moderate variances are in
    CLOSED, 1e-10 against scipy): on the diagonal against the textbook length map
    q (erf(t/sqrt2) - 2 t varphi(t)) + erfc(t/sqrt2) and P(|u| < 1) = erf(t/sqrt2), t = q^(-1/2), in 40
    digits, up to the boundary layer of large variances; near |rho| = 1 against nested scipy quadrature."""
    import mpmath as mp

    mp.mp.dps = 40
    act = A.HardTanh()
    qs = np.array([1e-3, 0.05, 1.0, 30.0, 1e4, 1e6, 1e10, 1e20])
    tols = [1e-13] * 6 + [5e-12, 1e-8]  # measured 4.5e-14 at 1e6, 5.4e-13 at 1e10, 1.7e-9 at 1e20
    q = jnp.asarray(np.concatenate([qs, qs]))
    out = gaussian_expectations(act, q, q, q * np.repeat([1.0, -1.0], qs.size))
    k, kdot = np.asarray(out.k), np.asarray(out.kdot)
    for i, (qi, tol) in enumerate(zip(qs, tols)):
        t = 1 / mp.sqrt(qi)
        want = float(qi * (mp.erf(t / mp.sqrt(2)) - 2 * t * mp.npdf(t)) + mp.erfc(t / mp.sqrt(2)))
        wantd = float(mp.erf(t / mp.sqrt(2)))
        for kk, kd, sign in ((k[i], kdot[i], 1), (k[i + qs.size], kdot[i + qs.size], -1)):
            assert kk == pytest.approx(sign * want, rel=tol), qi
            assert kd == pytest.approx(wantd, rel=tol), qi
    f = lambda x: max(-1.0, min(1.0, x))  # noqa: E731
    for q1, q2, q12 in ((0.05, 20.0, 0.9), (3.0, 3.0, -2.97), (200.0, 200.0, 199.9), (0.3, 0.3, 0.299)):
        got = gaussian_expectations(act, q1, q2, q12)
        assert float(got.k) == pytest.approx(quad_expectation(f, f, q1, q2, q12, (-1.0, 1.0)), rel=1e-12, abs=1e-14)
    # Price's theorem, the formula's own premise: d k / d q12 = kdot (autodiff through the angle integral)
    x = jnp.array([[1.3, 0.7, 0.45], [0.8, 2.1, -1.2], [40.0, 40.0, 39.0]])
    dk = jax.vmap(jax.grad(lambda c, a, b: gaussian_expectations(act, a, b, c).k))(x[:, 2], x[:, 0], x[:, 1])
    kdot = gaussian_expectations(act, x[:, 0], x[:, 1], x[:, 2]).kdot
    np.testing.assert_allclose(dk, kdot, rtol=1e-12)


def test_elu_numerical_with_kink():
    act = A.Elu(0.7)
    f = lambda x: x if x > 0 else 0.7 * math.expm1(x)  # noqa: E731
    ref = quad_expectation(f, f, 1.2, 0.8, 0.5, (0.0,))
    k, _ = gaussian_expectations(act, 1.2, 0.8, 0.5, method=Mehler(128))
    assert abs(float(k) - ref) < 2e-4  # a kink in phi': coefficients decay only like j^{-5/4}


@pytest.mark.parametrize("act", [c[0] for c in CLOSED if not isinstance(c[0], (A.Sign, A.RectifiedMonomial, A.HardTanh))]
                         + [A.Tanh()])
def test_methods_agree_with_each_other(act):
    q1, q2, q12 = jnp.array([1.3, 0.6]), jnp.array([0.7, 0.6]), jnp.array([0.45, -0.2])
    # eager: the one-op programs (quadrature grids, Mehler sums) are shared by every activation;
    # a filter_jit per activation and method compiled 3 large programs per activation (measured
    # with 6 activations: 25 compiles, 73 s of compile, against 190 one-op compiles, 43 s eagerly,
    # on a loaded machine)
    expect = gaussian_expectations
    ref = expect(act, q1, q2, q12, method=GaussHermite(200))
    tol = 1e-9 if not isinstance(act, (A.Relu, A.LeakyRelu, A.ABRelu, A.Abs)) else 3e-3  # kinks converge slowly
    for method in [Mehler(160)] + ([ClosedForm()] if isinstance(act, A.AbstractClosedFormActivation) else []):
        out = expect(act, q1, q2, q12, method=method)
        np.testing.assert_allclose(out.k, ref.k, rtol=tol, atol=tol)
        np.testing.assert_allclose(out.kdot, ref.kdot, rtol=10 * tol, atol=10 * tol)


def test_monte_carlo_within_standard_error():
    act = A.Erf(1.0, 1.0, 0.0)
    q1, q2, q12 = 1.3, 0.7, 0.45
    n = 200_000
    k, _ = gaussian_expectations(act, q1, q2, q12, method=MonteCarlo(n, seed=3))
    exact, _ = gaussian_expectations(act, q1, q2, q12)
    # SE from the sample itself
    z = jax.random.normal(jax.random.key(3), (2, n))
    rho = q12 / math.sqrt(q1 * q2)
    u = math.sqrt(q1) * z[0]
    v = math.sqrt(q2) * (rho * z[0] + math.sqrt(1 - rho**2) * z[1])
    se = float(jnp.std(act(u) * act(v)) / math.sqrt(n))
    assert abs(float(k) - float(exact)) < 5 * se


PARAM_ACTS = [
    (lambda p: A.LeakyRelu(p[0]), [0.2]),
    (lambda p: A.ABRelu(p[0], p[1]), [-0.3, 1.2]),
    (lambda p: A.Erf(p[0], p[1], p[2]), [1.3, 0.7, 0.2]),
    (lambda p: A.Sin(p[0], p[1], p[2]), [1.1, 0.8, 0.3]),
    (lambda p: A.Exp(p[0], p[1]), [0.5, 0.6]),
    (lambda p: A.Gaussian(p[0], p[1]), [1.2, -0.4]),
    (lambda p: A.Rbf(p[0]), [0.7]),
    (lambda p: A.Polynomial(p), [0.3, -1.0, 0.5]),
    (lambda p: A.Swish(p[0]), [1.5]),
    (lambda p: A.Elu(p[0]), [0.7]),
]


PARAM_SPLIT = np.cumsum([len(p0) for _, p0 in PARAM_ACTS])[:-1]
PARAM_IDS = ["LeakyRelu", "ABRelu", "Erf", "Sin", "Exp", "Gaussian", "Rbf", "Polynomial", "Swish", "Elu"]


def _param_values(p, q12):
    """k + kdot / 2 at (1.3, 0.7, q12[i]) for every PARAM_ACTS entry i; ``p`` holds all their parameters
    concatenated and ``q12`` one covariance per activation, so output i depends on its own slice of ``p``
    and on ``q12[i]`` only: the gradient of the sum is every activation's own gradient."""
    outs = []
    for i, ((make, _), pi) in enumerate(zip(PARAM_ACTS, jnp.split(p, PARAM_SPLIT))):
        k, kdot = gaussian_expectations(make(pi), 1.3, 0.7, q12[i])
        outs.append(k + 0.5 * kdot)
    return jnp.stack(outs)


@pytest.fixture(scope="module")
def param_derivatives():
    """tests/_gradcheck.py's check for every PARAM_ACTS activation at once: directional derivatives
    (forward: jax.jvp; reverse: jax.grad) along two random unit directions in (its parameters, q12)
    against fourth-order central differences, and jit(vmap) against an eager loop. Two compiled
    programs for the ten activations (one check_gradients per activation, and its jit(vmap), compiled 40;
    measured 14 s of CPU instead of 23 s, on a loaded machine)."""
    p0 = jnp.asarray(np.concatenate([p for _, p in PARAM_ACTS]))
    q0 = jnp.full(len(PARAM_ACTS), 0.45)
    h = 1e-4
    rng = np.random.default_rng(0)
    starts = np.concatenate([[0], PARAM_SPLIT, [p0.size]])
    dirs = []
    for _ in range(2):  # one random unit direction per activation, in (its parameters, its q12)
        vp, vq = np.zeros(p0.size), np.zeros(len(PARAM_ACTS))
        for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            v = rng.standard_normal(b - a + 1)
            vp[a:b], vq[i] = v[:-1] / np.linalg.norm(v), v[-1] / np.linalg.norm(v)
        dirs.append((vp, vq))
    # one batched program for the values (three parameter sets for vmap vs loop, and the finite-difference
    # points) and the forward-mode derivatives (the first two rows, at p0 along each direction)
    ps, qs = [p0, p0, p0 * 1.1, p0 * 0.9], [q0] * 4
    for vp, vq in dirs:
        for t in (2 * h, h, -h, -2 * h):
            ps.append(p0 + t * vp)
            qs.append(q0 + t * vq)
    vps = jnp.stack([jnp.asarray(dirs[0][0]), jnp.asarray(dirs[1][0])] + [jnp.zeros_like(p0)] * (len(ps) - 2))
    vqs = jnp.stack([jnp.asarray(dirs[0][1]), jnp.asarray(dirs[1][1])] + [jnp.zeros_like(q0)] * (len(ps) - 2))
    values, tangents = jax.jit(jax.vmap(lambda p, q, vp, vq: jax.jvp(_param_values, (p, q), (vp, vq))))(
        jnp.stack(ps), jnp.stack(qs), vps, vqs)
    batched, fwd = np.asarray(values)[1:4], np.asarray(tangents)[:2]
    loop = np.stack([np.asarray(_param_values(p, q0)) for p in ps[1:4]])
    fd = [(-values[4 + 4 * d] + 8 * values[5 + 4 * d] - 8 * values[6 + 4 * d] + values[7 + 4 * d]) / (12 * h)
          for d in range(2)]
    fd = [np.asarray(x) for x in fd]
    grad = jax.jit(jax.grad(lambda p, q: jnp.sum(_param_values(p, q)), argnums=(0, 1)))
    gp, gq = (np.asarray(g) for g in grad(p0, q0))
    rev = [np.add.reduceat(gp * vp, starts[:-1]) + gq * vq for vp, vq in dirs]
    return {"batched": batched, "loop": loop, "fd": fd, "fwd": fwd, "rev": rev}


@pytest.mark.parametrize("i", range(len(PARAM_ACTS)), ids=PARAM_IDS)
def test_gradients_wrt_activation_parameters(i, param_derivatives):
    d = param_derivatives
    for fd, fwd, rev in zip(d["fd"], d["fwd"], d["rev"]):
        tol = 1e-6 + 1e-6 * abs(fd[i])
        assert abs(rev[i] - fd[i]) <= tol, f"reverse mode: {rev[i]!r}, finite differences {fd[i]!r}"
        assert abs(fwd[i] - fd[i]) <= tol, f"forward mode: {fwd[i]!r}, finite differences {fd[i]!r}"
    # jit(vmap) == an eager loop over parameters: jit == eager and vmap == loop in one compiled program
    np.testing.assert_allclose(d["batched"][:, i], d["loop"][:, i], rtol=1e-12)


@pytest.mark.parametrize("i", range(len(CLOSED)), ids=CLOSED_IDS)
def test_no_nan_at_singular_points(i, closed_forms):
    # identical, opposite, orthogonal and vanishing inputs (SINGULAR): values and gradients finite
    k, kdot, grad = (a[len(TRIPLES):] for a in closed_forms[i])
    assert np.all(np.isfinite(k)) and np.all(np.isfinite(kdot)), (k, kdot)
    assert np.all(np.isfinite(grad)), grad


def test_activation_values_and_derivatives():
    x = jnp.linspace(-3, 3, 13)
    for act in [A.Tanh(), A.Sigmoid(), A.Swish(1.3), A.Softplus(), A.Elu(0.5), A.Gelu(), A.Erf(1.2, 0.7, 0.1), A.Sin(1, 2, 0.3)]:
        auto = jax.vmap(jax.grad(lambda t: act(t)))(x + 1e-3)
        np.testing.assert_allclose(act.derivative(x + 1e-3), auto, rtol=1e-10, atol=1e-12)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="degree"):
        A.Monomial(-1)
    with pytest.raises(ValueError, match=r"Gaussian\.b must be finite and < 0"):
        A.Gaussian(1.0, 0.5)
    with pytest.raises(ValueError, match="coef"):
        A.Polynomial([])
    with pytest.raises(ValueError, match="alpha"):
        A.LeakyRelu(jnp.ones(3))


# ------------------------------------------------------------------------------------------
# Issue 12: no silent wrong answers
# ------------------------------------------------------------------------------------------


def test_issue12_rectified_monomial_negative_correlation():
    # was -2.0e6 (the theta recursion cancels); the true value is 3.4e-4
    k, kdot = A.RectifiedMonomial(20).dual(1.0, 1.0, -0.9)
    assert float(k) == pytest.approx(R.mp_rect_moment(20, 1.0, 1.0, -0.9), rel=1e-13)
    assert float(kdot) == pytest.approx(400 * R.mp_rect_moment(19, 1.0, 1.0, -0.9), rel=1e-13)
    # its kernels stay non-negative (phi >= 0) and finite, also for opposite inputs
    from rmtjax.kernels import FullyConnected, kernel

    x = jax.random.normal(jax.random.key(0), (6, 4))
    x = jnp.concatenate([x, -x[:2]])
    out = kernel(x, None, FullyConnected(1, 1.0, 0.0, A.RectifiedMonomial(20)))
    assert np.all(np.asarray(out.nngp) >= 0) and np.all(np.isfinite(np.asarray(out.ntk)))


def test_issue12_hermite_80_and_monomial_200():
    out = gaussian_expectations(A.Hermite(80), 1, 1, 1)  # was 4984 (cancelling monomial sums)
    assert float(out.k) == pytest.approx(1.0, rel=1e-14)
    assert float(out.kdot) == pytest.approx(80.0, rel=1e-14)  # h_n' = sqrt(n) h_{n-1}
    with pytest.raises(ValueError, match=r"Monomial\.degree must be an integer in \[0, 100\]"):
        A.Monomial(200)  # was OverflowError
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        A.RectifiedMonomial(101)
    with pytest.raises(ValueError, match="Polynomial.coef must have at most 101"):
        A.Polynomial(np.ones(102))


# Points (q1, q2, q12): negative, positive and near-opposite correlations, unequal variances.
HIGH_DEGREE_POINTS = [(1.0, 1.0, -0.9), (0.7, 1.3, -0.95 * math.sqrt(0.91)), (2.0, 0.5, 0.2), (0.3, 0.3, 0.29)]


@pytest.mark.parametrize("n", [1, 7, 50, 100])
def test_rectified_monomial_against_60_digit_recursion(n):
    act = A.RectifiedMonomial(n)
    for q1, q2, q12 in HIGH_DEGREE_POINTS + [(1.0, 1.0, 1.0), (1.0, 1.0, -0.999)]:
        k, kdot = act.dual(q1, q2, q12)
        # measured <= 1.7e-14 relative (Gauss-Legendre, n + 28 nodes; relative at every rho)
        assert float(k) == pytest.approx(R.mp_rect_moment(n, q1, q2, q12), rel=1e-13, abs=1e-300)
        assert float(kdot) == pytest.approx(n * n * R.mp_rect_moment(n - 1, q1, q2, q12), rel=1e-13, abs=1e-300)
    assert float(act.dual(1.0, 1.0, -1.0)[0]) == 0.0  # u_+ v_+ = 0 surely


@pytest.mark.parametrize("n", [20, 100])
def test_monomial_against_exact_moments(n):
    act = A.Monomial(n)
    for q1, q2, q12 in HIGH_DEGREE_POINTS:
        k, kdot = act.dual(q1, q2, q12)
        # measured <= 3.7e-14 relative: one positive term per Mehler order, no cancellation
        assert float(k) == pytest.approx(R.mp_poly_expectation([0] * n + [1], q1, q2, q12), rel=1e-12)
        assert float(kdot) == pytest.approx(R.mp_poly_expectation([0] * (n - 1) + [n], q1, q2, q12), rel=1e-12)


def test_hermite_against_exact_moments():
    # degree 30 at unequal variances: relative to the Cauchy-Schwarz scale sqrt(k11 k22)
    # (the value itself can be 1e-30 of it: a high-degree Hermite at mismatched variances is
    # nearly uncorrelated); measured 1e-16 to 2e-14 of the scale at degrees 50 and 100.
    n = 30
    act = A.Hermite(n)
    for q1, q2, q12 in HIGH_DEGREE_POINTS:
        k, kdot = act.dual(q1, q2, q12)
        ref, refd = R.mp_hermite_dual(n, q1, q2, q12)
        r1, r2 = R.mp_hermite_dual(n, q1, q1, q1), R.mp_hermite_dual(n, q2, q2, q2)
        assert abs(float(k) - ref) <= 1e-13 * math.sqrt(r1[0] * r2[0])
        assert abs(float(kdot) - refd) <= 1e-13 * math.sqrt(r1[1] * r2[1])
    # at unit variances the dual is exactly q12^n (neural-tangents' formula), any degree
    k, _ = A.Hermite(100).dual(1.0, 1.0, jnp.array([-0.9, 0.5, 1.0]))
    np.testing.assert_allclose(k, np.array([-0.9, 0.5, 1.0]) ** 100, rtol=1e-13)


def test_polynomial_overflow_is_inf_or_an_error_never_nan():
    # E[u^100 v^100] at q = 100 is ~1e387: inf is the true float64 value (all terms positive)
    k, _ = A.Monomial(100).dual(100.0, 100.0, jnp.array([0.0, 50.0, 100.0]))
    assert np.all(np.isposinf(np.asarray(k)))
    # float32 cannot hold the Mehler coefficients of degree > 49: a clear error, not inf * 0
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="needs float64"):
            A.Monomial(60).dual(0.01, 0.01, 0.005)
        k, _ = A.Monomial(40).dual(0.01, 0.01, -0.005)  # 79!! 1e-40 ~ 5e-2: finite in float32
        assert float(k) == pytest.approx(R.mp_poly_expectation([0] * 40 + [1], 0.01, 0.01, -0.005), rel=2e-5)


# Large variances: identical, opposite, generic and nearly orthogonal pairs.
def _large_points(q):
    return [(q, q, q), (q, q, -q), (q, 2 * q, 0.9 * q * math.sqrt(2)), (q, 2 * q, -0.9 * q * math.sqrt(2)),
            (q, 0.5 * q, 0.0)]


LARGE_Q = [1e-3, 1.0, 1e3, 1e8, 1e16, 1e30]


def _erf_gelu_errors(dtype):
    worst = 0.0
    for q in LARGE_Q:
        for pt in _large_points(q):
            pt = tuple(float(np.asarray(v, dtype)) for v in pt)  # the inputs as the dtype holds them
            for act, ref in [(A.Erf(1.3, 0.7, 0.2), R.mp_erf_dual(1.3, 0.7, 0.2, *pt)), (A.Gelu(), R.mp_gelu_dual(*pt))]:
                if isinstance(act, A.Erf) and dtype == np.float32:
                    ref = R.mp_erf_dual(float(np.float32(1.3)), float(np.float32(0.7)), float(np.float32(0.2)), *pt)
                k, kdot = act.dual(*pt)
                assert k.dtype == dtype
                for got, want in zip((k, kdot), ref):
                    worst = max(worst, abs(float(got) - want) / abs(want))
    return worst


def test_erf_gelu_large_variance_float64():
    # the textbook forms lose everything for q >~ 1e8 and give kdot = inf from q ~ 1e16
    # (neural-tangents issue 197); measured worst relative error 3e-15 up to q = 1e30
    assert _erf_gelu_errors(np.float64) < 2e-14


def test_erf_gelu_large_variance_float32(float32_mode):
    # measured worst relative error 6.4e-7 (float32, inputs rounded to float32) up to q = 1e30
    assert _erf_gelu_errors(np.float32) < 3e-6


def test_issue12_erf_kernel_float32_large_inputs(float32_mode):
    from rmtjax.kernels import FullyConnected, kernel

    x = 3000 * jax.random.normal(jax.random.key(0), (6, 5))
    out = kernel(x, None, FullyConnected(1, 1.5, 0.1, A.Erf()))  # had an inf NTK entry
    assert out.ntk.dtype == jnp.float32
    with jax.enable_x64(True):
        ref = kernel(np.asarray(x, np.float64), None, FullyConnected(1, 1.5, 0.1, A.Erf()))
    for a, b in ((out.nngp, ref.nngp), (out.ntk, ref.ntk)):
        a, b = np.asarray(a, np.float64), np.asarray(b)
        assert np.all(np.isfinite(a))
        assert np.max(np.abs(a - b) / np.abs(b)) < 1e-5  # measured 1.2e-6


CLOSED_32 = [A.Relu(), A.LeakyRelu(0.2), A.Abs(), A.Erf(1.3, 0.7, 0.2), A.Gelu(), A.Sin(1.1, 0.8, 0.3), A.Cos(),
             A.Exp(0.5, 0.6), A.Gaussian(1.2, -0.4), A.Rbf(0.7), A.Polynomial([0.3, -1.0, 0.5, 0.2]), A.Hermite(6),
             A.Monomial(5), A.RectifiedMonomial(3), A.Sign(), A.Identity(), A.HardTanh()]


def test_every_closed_form_dual_float32(float32_mode):
    # float32 duals against the float64 duals of the same (float32) arguments; measured worst
    # relative error 1.3e-6 (relative to max(|value|, 1e-3 of the diagonal scale))
    q1 = np.array([1.3, 0.8, 1.5, 1.5, 0.9, 2.0], np.float32)
    q2 = np.array([0.7, 2.1, 1.5, 1.5, 1.1, 0.5], np.float32)
    q12 = np.array([0.45, -1.2, 1.5, -1.5, 0.0, 0.99], np.float32)
    # every dual in one compiled program per precision; eagerly it was 438 one-op programs (measured on
    # a loaded machine: 57 s of backend compile and 24 s of lowering, against 48 s and 8 s)
    out32 = eqx.filter_jit(lambda acts, a, b, c: [act.dual(a, b, c) for act in acts])(CLOSED_32, q1, q2, q12)
    with jax.enable_x64(True):
        acts64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), CLOSED_32)
        out64 = eqx.filter_jit(lambda acts, a, b, c: [act.dual(a, b, c) for act in acts])(
            acts64, q1.astype(np.float64), q2.astype(np.float64), q12.astype(np.float64))
    for act, (k, kdot), ref in zip(CLOSED_32, out32, out64):
        assert k.dtype == jnp.float32 and kdot.dtype == jnp.float32, type(act).__name__
        assert ref[0].dtype == jnp.float64, type(act).__name__
        for got, want in zip((k, kdot), ref):
            got, want = np.asarray(got, np.float64), np.asarray(want)
            scale = np.maximum(np.abs(want), 1e-3 * np.max(np.abs(want)))
            assert np.max(np.abs(got - want) / np.maximum(scale, 1e-30)) < 1e-5, type(act).__name__


@pytest.mark.parametrize("bad,match", [(1 + 5j, "must be real"), (True, "boolean"), ("0.5", "real number"),
                                       (float("nan"), "finite"), (float("inf"), "finite"),
                                       (np.ones(2), "0-d")])
def test_activation_parameters_validated(bad, match):
    for make in (lambda v: A.Erf(v), lambda v: A.Erf(1.0, v), lambda v: A.LeakyRelu(v), lambda v: A.Sin(c=v),
                 lambda v: A.Swish(v), lambda v: A.Elu(v), lambda v: A.Exp(b=v), lambda v: A.Rbf(v)):
        with pytest.raises(ValueError, match=match):
            make(bad)
    with pytest.raises(ValueError, match="Rbf.gamma must be finite and >= 0"):
        A.Rbf(-1.0)
    with pytest.raises(ValueError, match="degree"):
        A.Hermite(True)
    with pytest.raises(ValueError, match="approximate"):
        A.Gelu(approximate=1)
    with pytest.raises(ValueError, match="Custom.fn must be callable"):
        A.Custom(3.0)
    with pytest.raises(ValueError, match="Custom.params"):
        A.Custom(lambda x, p: x, {"s": float("nan")})


def test_traced_nan_parameter_raises_under_jit():
    f = jax.jit(lambda a, q: gaussian_expectations(A.Erf(a), q, q, q).k)
    assert np.isfinite(float(f(1.0, 1.0)))
    with pytest.raises(Exception, match="Erf.a must be finite"):
        jax.block_until_ready(f(float("nan"), 1.0))


@pytest.mark.parametrize("q1,q2,q12,match", [(-1.0, 1.0, 0.0, "q1 must be finite and >= 0"),
                                             (1.0, float("nan"), 0.0, "q2 must be finite"),
                                             (1.0, 1.0, 1.5, r"q12 must satisfy q12\^2 <= q1 q2"),
                                             (1.0, 4.0, -2.001, "q12 must satisfy"),
                                             (1.0 + 1j, 1.0, 0.5, "q1 must be real"),
                                             (1.0, True, 0.5, "q2 must be a real number"),
                                             (np.ones(2), np.ones(3), 0.5, "must broadcast together")])
def test_gaussian_expectations_validates_covariance(q1, q2, q12, match):
    with pytest.raises(ValueError, match=match):
        gaussian_expectations(A.Tanh(), q1, q2, q12)
    with pytest.raises(ValueError, match=match):
        A.Relu().dual(q1, q2, q12)


def test_gaussian_expectations_checks_under_jit_and_allows_rounding():
    f = jax.jit(lambda q1, q2, q12: gaussian_expectations(A.Erf(), q1, q2, q12).k)
    with pytest.raises(Exception, match="q12 must satisfy"):
        jax.block_until_ready(f(1.0, 1.0, 1.01))
    with pytest.raises(Exception, match="q1 must be finite and >= 0"):
        jax.block_until_ready(f(-1.0, 1.0, 0.0))
    # rounding within (1 + sqrt(eps)) sqrt(q1 q2) is clipped to the boundary (= identical inputs)
    tol = A.covariance_tolerance(np.float64)
    assert tol == pytest.approx(1.49e-8, rel=1e-2)
    edge = gaussian_expectations(A.Erf(), 2.0, 2.0, 2.0 * (1 + 0.5 * tol))
    np.testing.assert_allclose(edge, gaussian_expectations(A.Erf(), 2.0, 2.0, 2.0), rtol=1e-15)
    np.testing.assert_allclose(f(2.0, 2.0, 2.0 * (1 + 0.5 * tol)), edge.k, rtol=1e-15)


def test_methods_validated():
    from rmtjax.gaussian import Auto, hermite_coefficients_at

    for bad in (lambda: GaussHermite(1), lambda: GaussHermite(True), lambda: GaussHermite(2.5),
                lambda: Mehler(0), lambda: Mehler(64, step=float("nan")), lambda: Mehler(64, step=True),
                lambda: Mehler(64, cutoff="13"), lambda: MonteCarlo(0), lambda: MonteCarlo(10, seed=-1),
                lambda: Auto(ClosedForm()), lambda: Auto(3), lambda: Auto(Auto())):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="method must be an rmtjax.gaussian method"):
        gaussian_expectations(A.Tanh(), 1.0, 1.0, 0.5, method="mehler")
    with pytest.raises(ValueError, match="no closed-form"):
        gaussian_expectations(A.Tanh(), 1.0, 1.0, 0.5, method=ClosedForm())
    from rmtjax.hermite import Trapezoid

    # the one Auto: a numerical method that Gaussian expectations cannot use is refused where it is used
    for act in (A.Tanh(), A.Erf()):  # whether or not the activation has a closed form
        with pytest.raises(ValueError, match="Gaussian expectations need Mehler"):
            gaussian_expectations(act, 1.0, 1.0, 0.5, method=Auto(Trapezoid()))
    with pytest.raises(ValueError, match="method must be an rmtjax.gaussian method"):
        gaussian_expectations(A.Tanh(), 1.0, 1.0, 0.5, method=Trapezoid())
    with pytest.raises(ValueError, match="activation must be"):
        gaussian_expectations(jnp.tanh, 1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="q must be finite and >= 0"):
        hermite_coefficients_at(A.Tanh(), -1.0, order=4)
    with pytest.raises(ValueError, match="order"):
        hermite_coefficients_at(A.Tanh(), 1.0, order=True)


def test_repeated_eager_duals_compile_nothing():
    """The second eager dual with the same shapes and dtypes compiles no program (every eager call
    compiled a lax.cond of the geometric mean sqrt(q1 q2) anew, its branches new closures, until
    sqrt_prod was jitted; 50 ms per call)."""
    for act in (A.Erf(), A.Relu(), A.Gelu()):
        act.dual(1.0, 2.0, 0.5)
        gaussian_expectations(act, 1.0, 2.0, 0.5)
    with Programs() as p:
        for act in (A.Erf(), A.Relu(), A.Gelu()):
            act.dual(1.5, 2.0, -0.5)
            gaussian_expectations(act, 1.5, 2.0, -0.5)
    assert not p.names, f"{p.n} programs compiled by repeated calls: {p.names}"
