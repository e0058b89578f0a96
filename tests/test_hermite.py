"""Hermite coefficients, dual/compositional kernels, branching-process limits, memorization depth
and compositional random features (Liang & Tran-Bach 2020) against independent references:
adaptive scipy quadrature, exact polynomial algebra, the kernel engine, closed-form
linear-fractional Galton-Watson processes, brentq, finite differences and Monte Carlo."""

import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from _gradcheck import check_gradients
from numpy.polynomial.hermite_e import poly2herme
from scipy import integrate, optimize

import rmtjax.activations as A
from rmtjax._numerics import hermite_table
from rmtjax.gaussian import ClosedForm, gaussian_expectations
from rmtjax.hermite import (
    Auto,
    GaussLegendre,
    Phase,
    Trapezoid,
    activation_mu,
    branching_process,
    compositional_features,
    compositional_kernel,
    compressed_features,
    dual_kernel,
    extinction_probability,
    hermite_coefficients,
    memorization_bounds,
    memorization_depth,
    normalized,
    offspring_distribution,
    rescaled_limit,
    ridge_predict,
    unscaled_limit,
)
from rmtjax.kernels import FullyConnected, kernel

ncdf = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731


def scipy_coefficients(f, order, q=1.0, kinks=(0.0,)):
    """E[f(sqrt(q) z) h_k(z)], k = 0..order, by adaptive quadrature (vector-valued, split at kinks)."""
    r = math.sqrt(q)

    def g(z):
        return f(r * z) * hermite_table(np.array([z]), order)[0] * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    pts = sorted({-14.0, 14.0, *[k / r for k in kinks]})
    return sum(integrate.quad_vec(g, a, b, epsabs=1e-15, epsrel=1e-14, limit=400)[0] for a, b in zip(pts[:-1], pts[1:]))


REQUIRED = [  # the activations named by the issue, with scalar reference implementations
    ("relu", A.Relu(), lambda x: max(x, 0.0)),
    ("gelu", A.Gelu(), lambda x: x * ncdf(x)),
    ("tanh", A.Tanh(), math.tanh),
    ("erf", A.Erf(1.3, 0.7, 0.2), lambda x: 1.3 * math.erf(0.7 * x) + 0.2),
    ("silu", A.SiLU(), lambda x: x / (1 + math.exp(-x))),
    ("sigmoid", A.Sigmoid(), lambda x: 1 / (1 + math.exp(-x))),
    ("softplus", A.Softplus(), lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x)))),
]


@pytest.mark.parametrize("name,act,f", REQUIRED, ids=[r[0] for r in REQUIRED])
def test_coefficients_against_scipy_to_1e10(name, act, f):
    order = 30
    qs = jnp.array([1.0, 2.3])
    ref = np.stack([scipy_coefficients(f, order, float(q)) for q in qs])
    auto = np.asarray(hermite_coefficients(act, order=order, q=qs))
    split = np.asarray(hermite_coefficients(act, order=order, q=qs, method=GaussLegendre()))
    np.testing.assert_allclose(auto, ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(split, ref, rtol=0, atol=1e-10)
    if name != "relu":  # the trapezoid rule converges exponentially for analytic activations
        trap = np.asarray(hermite_coefficients(act, order=order, q=qs, method=Trapezoid()))
        np.testing.assert_allclose(trap, ref, rtol=0, atol=1e-10)
    # sum_k a_k^2 -> E[sigma^2] (Parseval) for a smooth one at high order
    if name in ("tanh", "erf"):
        a = hermite_coefficients(act, order=120)
        one = jnp.ones(())
        assert float(jnp.sum(a * a)) == pytest.approx(float(gaussian_expectations(act, one, one, one).k), abs=1e-12)


CLOSED = [
    A.LeakyRelu(0.2), A.ABRelu(-0.3, 1.2), A.Abs(), A.Sign(), A.RectifiedMonomial(0), A.RectifiedMonomial(2),
    A.RectifiedMonomial(3), A.Sin(1.1, 0.8, 0.3), A.Cos(0.9, 1.2, 0.1), A.Rbf(0.7), A.Exp(0.5, 0.6),
    A.Gaussian(1.2, -0.4), A.Identity(), A.Polynomial([0.3, -1.0, 0.5, 0.2]), A.Hermite(4), A.Monomial(5),
]


@pytest.mark.parametrize("act", CLOSED, ids=lambda a: type(a).__name__)
def test_closed_forms_against_split_quadrature(act):
    q = jnp.array([0.7, 2.3])
    exact = hermite_coefficients(act, order=30, q=q, method=ClosedForm())
    num = hermite_coefficients(act, order=30, q=q, method=GaussLegendre(deg=64, panels=4))
    np.testing.assert_allclose(np.asarray(exact), np.asarray(num), rtol=0, atol=2e-12 * 2.3**1.5)


def test_polynomials_are_exact():
    c = np.array([0.3, -1.0, 0.5, 0.2, 0.7])
    for q in (1.0, 3.0):
        scaled = c * np.sqrt(q) ** np.arange(5)  # p(sqrt(q) z) in powers of z
        he = poly2herme(scaled)  # He_k coefficients
        ref = he * np.sqrt([math.factorial(k) for k in range(5)])  # h_k = He_k / sqrt(k!)
        out = hermite_coefficients(A.Polynomial(c), order=7, q=q)
        np.testing.assert_allclose(np.asarray(out[:5]), ref, rtol=1e-14, atol=1e-14)
        assert np.all(np.asarray(out[5:]) == 0)
    np.testing.assert_allclose(np.asarray(hermite_coefficients(A.Hermite(3), order=5)), [0, 0, 0, 1, 0, 0], atol=1e-14)
    assert hermite_coefficients(A.Hermite(6), order=2).shape == (3,)  # truncation


def test_relu_closed_form_values():
    a = np.asarray(hermite_coefficients(A.Relu(), order=6))
    phi0 = 1 / math.sqrt(2 * math.pi)
    # E[z_+ h_k] = phi(0) He_{k-2}(0) / sqrt(k!): He_0 = 1, He_2(0) = -1, He_4(0) = 3
    ref = [phi0, 0.5, phi0 / math.sqrt(2), 0, -phi0 / math.sqrt(24), 0, 3 * phi0 / math.sqrt(720)]
    np.testing.assert_allclose(a, ref, rtol=1e-14, atol=1e-16)
    # mu of the normalized law: sum k a_k^2 / sum a_k^2 = E[sigma'^2] / E[sigma^2] = 1 for ReLU
    assert float(activation_mu(A.Relu())) == pytest.approx(1.0, abs=1e-14)
    assert float(activation_mu(A.Relu(), center=True)) == pytest.approx(math.pi / (math.pi - 1), rel=1e-12)
    b = hermite_coefficients(A.Tanh(), order=80)
    k = jnp.arange(81.0)
    assert float(jnp.sum(k * b * b) / jnp.sum(b * b)) == pytest.approx(float(activation_mu(A.Tanh())), rel=1e-8)


def test_jit_vmap_grad_of_coefficients():
    betas = jnp.array([0.5, 1.0, 2.0])
    qs = jnp.array([0.5, 1.0, 3.0])
    f = lambda b, q: hermite_coefficients(A.Swish(b), order=20, q=q)  # noqa: E731
    g = lambda b, q: hermite_coefficients(A.Erf(1.0, b, 0.0), order=20, q=q)  # noqa: E731
    for fn in (f, g):
        # jit(vmap) == an eager loop: jit == eager and vmap == loop in one compiled program
        vm = jax.jit(jax.vmap(fn))(betas, qs)
        loop = np.stack([np.asarray(fn(b, q)) for b, q in zip(betas, qs)])
        np.testing.assert_allclose(np.asarray(vm), loop, rtol=1e-13, atol=1e-15)
        check_gradients(lambda b, q: jnp.sum(fn(b, q) * jnp.linspace(1, 2, 21)), (1.3, 0.8), modes=("rev",),
                        atol=1e-6, rtol=1e-6)
    # grad of closed forms at the boundaries: q = 0 (Gelu, Erf) stays finite
    for act in (A.Gelu(), A.Erf(), A.Sin(), A.Exp()):
        d = jax.jacfwd(lambda q: hermite_coefficients(act, order=8, q=q))(0.0)
        assert np.all(np.isfinite(np.asarray(d)))
    d = jax.grad(lambda b: jnp.sum(hermite_coefficients(A.Erf(1.0, b, 0.0), order=10)))(0.0)
    assert np.isfinite(float(d))


C2 = jnp.array([0.0, 0.6, 0.8])  # a normalized, centered, supercritical law (mu = 1.64)
KEY = jax.random.key(0)
X3 = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])


@pytest.mark.parametrize("call,match", [
    (lambda: hermite_coefficients(A.Tanh(), order=-1), r"order must be an integer in \[0, 10000\]"),
    (lambda: hermite_coefficients(A.Tanh(), order=2.5), "order must be an integer"),
    (lambda: hermite_coefficients(A.Tanh(), order=True), "order must be an integer, got a boolean"),
    (lambda: hermite_coefficients(A.Tanh(), order=10**9), "order must be an integer in"),
    (lambda: hermite_coefficients(A.Tanh(), order=3, q=float("nan")), "q must be finite"),
    (lambda: hermite_coefficients(A.Tanh(), order=3, q=-1.0), "q must be finite and >= 0"),
    (lambda: hermite_coefficients(A.Tanh(), order=3, q=1j), "q must be real"),
    (lambda: hermite_coefficients("tanh", order=3), "activation must be an rmtjax.activations module"),
    (lambda: hermite_coefficients(A.Tanh(), order=3, method=ClosedForm()), "method=ClosedForm"),
    (lambda: hermite_coefficients(A.Tanh(), order=3, method="trapezoid"), "method must be Auto"),
    (lambda: hermite_coefficients(A.Exp(), order=4, q=1e4), "overflows"),
    (lambda: Trapezoid(step=1.0), r"Trapezoid: step must be a number in \[0.001, 0.25\]"),
    (lambda: Trapezoid(step="0.1"), "Trapezoid: step must be a number"),
    (lambda: GaussLegendre(deg=True), "GaussLegendre: deg must be an integer"),
    (lambda: GaussLegendre(cutoff=float("nan")), "GaussLegendre: cutoff"),
    (lambda: Auto(numerical="x"), "Auto: numerical must be"),
    (lambda: activation_mu(A.Polynomial([1.0]), center=True), "zero .* variance"),
    (lambda: activation_mu(A.Tanh(), center=1), "center must be True or False"),
    (lambda: normalized(jnp.zeros(3)), "coeffs must have a nonzero entry"),
    (lambda: normalized(jnp.array([1.0, 0.0]), center=True), "nonzero entry besides a_0"),
    (lambda: normalized(jnp.array([jnp.nan, 1.0])), "coeffs must be finite"),
    (lambda: dual_kernel(jnp.ones((2, 2)), 0.3), "coeffs must be 1-d"),
    (lambda: dual_kernel(jnp.zeros(0), 0.3), "coeffs must not be empty"),
    (lambda: dual_kernel(C2, 1.5), r"rho must be finite and in \[-1, 1\]"),
    (lambda: dual_kernel(C2, jnp.array([0.2, jnp.nan])), "rho must be finite"),
    (lambda: dual_kernel(np.array([0.0, 0.6, 0.8]) + 0j, 0.3), "coeffs must be real"),
    (lambda: compositional_kernel(C2, jnp.array([0.2, -1.01]), depth=2), r"rho must be finite and in \[-1, 1\]"),
    (lambda: compositional_kernel(C2, 0.3, depth=-1), "depth must be an integer in"),
    (lambda: compositional_kernel(C2, 0.3, depth=10**9), "depth must be an integer in"),
    (lambda: compositional_kernel(jnp.array([0.0, 2.0]), 0.9, depth=2000), "overflows"),
    (lambda: unscaled_limit(C2, -0.5), r"rho must be finite and in \[0, 1\]"),
    (lambda: extinction_probability(jnp.zeros(3)), "coeffs must have a nonzero entry"),
    (lambda: extinction_probability(C2, max_steps=0), "max_steps must be an integer in"),
    (lambda: extinction_probability(C2, throw=None), "throw must be True or False"),
    (lambda: branching_process(C2, atol=-1.0), r"atol must be a number in \[0, 1\)"),
    (lambda: rescaled_limit(C2, -1.0), "t must be finite and >= 0"),
    (lambda: rescaled_limit(jnp.sqrt(jnp.array([0.0, 0.999, 0.001])), 1e30), "raise max_steps or s_min"),
    (lambda: rescaled_limit(C2, 1.0, s_min=0.5), r"s_min must be a number in \(0, 0.01\]"),
    (lambda: memorization_depth(C2, X3, 0.0), r"kappa must be finite and in \(0, 1\)"),
    (lambda: memorization_depth(C2, X3, 1.0), r"kappa must be finite and in \(0, 1\)"),
    (lambda: memorization_depth(C2, X3, float("nan")), "kappa must be finite"),
    (lambda: memorization_depth(C2, X3.at[1].set(0.0), 0.1), "X must not have zero rows"),
    (lambda: memorization_depth(C2, jnp.ones(3), 0.1), "X must be 2-d"),
    (lambda: memorization_depth(C2, X3, 0.1, max_depth=-1), "max_depth must be an integer in"),
    (lambda: memorization_bounds(C2, 1.5, 10, 0.1), r"rho_max must be finite and in \[0, 1\]"),
    (lambda: memorization_bounds(C2, 0.5, 0.5, 0.1), "n must be finite and >= 1"),
    (lambda: offspring_distribution(C2, depth=2, max_degree=-1), "max_degree must be an integer in"),
    (lambda: offspring_distribution(C2, depth=2.0), "depth must be an integer"),
    (lambda: compositional_features(X3, C2, KEY, depth=1, num_features=0), "num_features must be an integer in"),
    (lambda: compositional_features(X3, C2, 0, depth=1, num_features=4), "key must be a JAX PRNG key"),
    (lambda: compositional_features(X3.at[0, 0].set(jnp.inf), C2, KEY, depth=1, num_features=4), "X must be finite"),
    (lambda: compressed_features(X3, C2, KEY, depth=1, num_features=4, max_degree=10**6), "max_degree must be"),
    (lambda: ridge_predict(jnp.zeros((3, 2)), jnp.ones(3), jnp.zeros((2, 2)), 0.0), "singular"),
    (lambda: ridge_predict(jnp.ones((3, 2)), jnp.ones(4), jnp.ones((2, 2)), 0.1), "y_train must have one row"),
    (lambda: ridge_predict(jnp.ones((3, 2)), jnp.ones(3), jnp.ones((2, 3)), 0.1), "features_test must have as many"),
    (lambda: ridge_predict(jnp.ones((3, 2)), jnp.ones(3), jnp.ones((2, 2)), -0.1), "lam must be finite and >= 0"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_values_are_caught_under_jit():
    with pytest.raises(Exception, match="rho must be finite and in"):
        jax.jit(lambda r: dual_kernel(C2, r))(2.0).block_until_ready()
    with pytest.raises(Exception, match="coeffs must have a nonzero entry"):
        jax.jit(lambda c: extinction_probability(c).value)(jnp.zeros(3)).block_until_ready()
    with pytest.raises(Exception, match="kappa must be finite and in"):
        jax.jit(lambda k: memorization_depth(C2, X3, k, max_depth=3).depth)(1.5).block_until_ready()


def test_repeated_calls_do_not_recompile():
    import equinox as eqx

    from rmtjax import hermite

    for fn, call in [(hermite._coefficients, lambda b: hermite_coefficients(A.Swish(b), order=12, q=b)),
                     (hermite._extinction, lambda b: extinction_probability(normalized(jnp.array([b, 0.5, 0.5])))),
                     (hermite._iterate, lambda b: compositional_kernel(jnp.array([0.1, b, 0.5]), 0.3, depth=4))]:
        call(0.5)
        n = eqx.debug.get_num_traces(fn)
        for b in (0.7, 1.1):
            call(b)
        assert eqx.debug.get_num_traces(fn) == n


def test_float32_without_x64(float32_mode):
    # issue 12: the extinction solve used fixed float64 tolerances. Default tolerances now scale
    # with the dtype; measured against the float64 values (same calls): GELU's xi 7.9e-8 relative,
    # the linear-fractional law's xi = p0 / b = 0.4 to 6.0e-8, mu of the centered ReLU law 1.5e-7,
    # the compositional kernel within 1.2e-7 at depth 1 growing to 1.55e-6 at depth 6 (the rounding
    # of sum a_k^2 = 1 amplified by G'(1) = mu = 1.47 per layer). Tolerances: 5x those.
    with jax.enable_x64(True):
        a64 = normalized(hermite_coefficients(A.Gelu(), order=60))
        ref_xi = float(extinction_probability(a64).value)
        r64 = normalized(hermite_coefficients(A.Relu(), order=64), center=True)
        ref_mu = float(branching_process(r64).mu)
        ref_K = np.asarray(compositional_kernel(r64, jnp.linspace(-1, 1, 5), depth=6))
    a = normalized(hermite_coefficients(A.Gelu(), order=60))
    sol = extinction_probability(a)
    assert sol.value.dtype == jnp.float32 and bool(sol.ok)
    assert float(sol.value) == pytest.approx(ref_xi, rel=4e-7)
    assert float(extinction_probability(_linear_fractional(0.2, 0.5, n=60)).value) == pytest.approx(0.4, rel=3e-7)
    r = normalized(hermite_coefficients(A.Relu(), order=64), center=True)
    bp = branching_process(r)
    assert Phase(int(bp.phase)) is Phase.SUPERCRITICAL and float(bp.xi) == 0.0
    assert float(bp.mu) == pytest.approx(ref_mu, rel=7.5e-7)
    critical = branching_process(jnp.sqrt(jnp.array([0.25, 0.5, 0.25])))  # mu = 1 up to float32 rounding
    assert Phase(int(critical.phase)) is Phase.CRITICAL and float(critical.xi) == 1.0
    K = np.asarray(compositional_kernel(r, jnp.linspace(-1, 1, 5), depth=6))
    np.testing.assert_allclose(K, ref_K, rtol=0, atol=7.8e-6)


# --------------------------------------------------------------------------------------
# Dual and compositional kernels vs the kernel engine
# --------------------------------------------------------------------------------------


def _second_moment(act):
    one = jnp.ones(())
    return gaussian_expectations(act, one, one, one).k


@pytest.mark.parametrize("act,order,tol", [
    (A.Tanh(), 120, 1e-11), (A.Erf(), 120, 1e-13), (A.Gelu(), 80, 1e-13),
    (A.Polynomial([0.1, 0.8, -0.3, 0.2]), 3, 1e-13),
])
def test_compositional_kernel_is_the_nngp_of_the_engine(act, order, tol):
    depth, d = 6, 8
    m2 = _second_moment(act)
    a = hermite_coefficients(act, order=order) / jnp.sqrt(m2)  # = sigma / sqrt(E sigma^2)
    X = jax.random.normal(jax.random.key(0), (7, d))
    X = X / jnp.linalg.norm(X, axis=1)[:, None] * math.sqrt(d)  # ||x||^2 = d: Sigma^(0) = rho
    X = X.at[6].set(-X[0])  # an antipodal pair: rho = -1
    W = jnp.concatenate([jnp.ones(1), jnp.full((depth,), 1 / jnp.sqrt(m2))])  # variance-preserving
    nngp = kernel(X, None, FullyConnected(depth, W, 0.0, act), all_depths=True).nngp
    rho = jnp.clip(X @ X.T / d, -1, 1)
    K = compositional_kernel(a, rho, depth=depth)
    np.testing.assert_allclose(np.asarray(K), np.asarray(nngp), rtol=0, atol=tol)


def test_compositional_kernel_relu_within_the_truncation_bound():
    depth, d, order = 5, 6, 2000
    act = A.Relu()
    m2 = _second_moment(act)  # 1/2: W_std = sqrt(2)
    a = hermite_coefficients(act, order=order) / jnp.sqrt(m2)
    tail = 1.0 - float(jnp.sum(a * a))
    X = jax.random.normal(jax.random.key(1), (6, d))
    X = X / jnp.linalg.norm(X, axis=1)[:, None] * math.sqrt(d)
    W = jnp.concatenate([jnp.ones(1), jnp.full((depth,), math.sqrt(2.0))])
    nngp = kernel(X, None, FullyConnected(depth, W, 0.0, act), all_depths=True).nngp
    K = compositional_kernel(a, jnp.clip(X @ X.T / d, -1, 1), depth=depth)
    err = np.abs(np.asarray(K) - np.asarray(nngp))
    # |G - G_N| <= tail per layer and G is 1-Lipschitz (mu = 1): the error after l layers <= l * tail
    bound = np.arange(depth + 1)[:, None, None] * tail
    assert 0 < tail < 1e-6
    assert np.all(err <= bound + 1e-15)


def test_dual_kernel_and_grad():
    a = normalized(hermite_coefficients(A.Erf(), order=150))
    rho = jnp.linspace(-1, 1, 9)
    exact = A.Erf().dual(1.0, 1.0, rho)[0] / _second_moment(A.Erf())
    np.testing.assert_allclose(np.asarray(dual_kernel(a, rho)), np.asarray(exact), atol=1e-13)
    # G'(1) = mu, derivative w.r.t. activation parameters vs finite differences
    bp = branching_process(a)
    assert float(jax.grad(lambda r: dual_kernel(a, r))(1.0)) == pytest.approx(float(bp.mu), rel=1e-12)
    f = lambda b: compositional_kernel(normalized(hermite_coefficients(A.Swish(b), order=30)),  # noqa: E731
                                       jnp.array([-1.0, 0.3, 1.0]), depth=4)[-1].sum()
    check_gradients(f, (1.2,), modes=("rev",), atol=1e-6, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(jax.vmap(jax.grad(lambda r: dual_kernel(a, r)))(jnp.array([-1.0, 1.0])))))


# --------------------------------------------------------------------------------------
# Branching process
# --------------------------------------------------------------------------------------


def _linear_fractional(p0, b, n=140):
    """p_0 = p0, p_k = (1 - p0)(1 - b) b^(k-1): xi = p0 / b, W | W > 0 ~ Exp with mean 1 / (1 - xi)."""
    return jnp.sqrt(jnp.array([p0] + [(1 - p0) * (1 - b) * b**k for k in range(n)]))


def test_extinction_probability_closed_form_and_brentq():
    for p0, b in [(0.2, 0.5), (0.05, 0.3), (0.0, 0.6)]:
        sol = extinction_probability(_linear_fractional(p0, b))
        assert float(sol.value) == pytest.approx(p0 / b, abs=1e-12)
    # an activation: uncentered GELU (a_0 != 0, mu > 1) vs brentq on the same series
    a = normalized(hermite_coefficients(A.Gelu(), order=60))
    p = np.asarray(a * a)
    G = lambda s: np.polynomial.polynomial.polyval(s, p)  # noqa: E731
    ref = optimize.brentq(lambda s: G(s) - s, 0.0, 0.99, xtol=1e-15)
    assert float(extinction_probability(a).value) == pytest.approx(ref, abs=1e-12)
    assert float(branching_process(a).xi) == pytest.approx(ref, abs=1e-12)
    # subcritical: xi = 1; centered: xi = 0; linear: 0
    assert float(extinction_probability(normalized(hermite_coefficients(A.Sigmoid(), order=40))).value) == \
        pytest.approx(1.0, abs=1e-10)
    assert float(extinction_probability(normalized(hermite_coefficients(A.Gelu(), order=40), center=True)).value) == 0.0
    assert float(extinction_probability(jnp.array([0.0, 1.0, 0.0])).value) == 0.0


def test_extinction_near_criticality():
    # linear-fractional laws with mu = 1 + delta / (1 - b): xi = p0 / b = 1 - delta / b, resolved to the
    # conditioning of the problem (a relative rounding eps of the law moves xi by ~eps / (mu - 1))
    for delta in (1e-4, 1e-7):
        sol = extinction_probability(_linear_fractional(0.5 - delta, 0.5))
        assert float(sol.value) == pytest.approx(1 - 2 * delta, abs=1e-15 / delta)
    # mu < 1: xi = 1 exactly, derivative 0
    sub = jnp.sqrt(jnp.array([0.5, 0.3, 0.2]))
    assert float(extinction_probability(sub).value) == 1.0
    assert float(jax.grad(lambda c: extinction_probability(c).value)(sub)[0]) == 0.0


def test_extinction_gradient_and_vmap():
    def xi(beta):
        return extinction_probability(normalized(hermite_coefficients(A.Swish(beta), order=40))).value

    g = float(jax.grad(xi)(1.0))
    eps = 1e-5
    fd = (float(xi(1.0 + eps)) - float(xi(1.0 - eps))) / (2 * eps)
    assert g == pytest.approx(fd, rel=1e-6)
    betas = jnp.array([0.8, 1.0, 1.5])
    np.testing.assert_allclose(np.asarray(jax.vmap(xi)(betas)), [float(xi(b)) for b in betas], rtol=1e-12)
    # implicit derivative formula: d xi = dG(xi)/(1 - G'(xi)) for p0 of a linear fractional law
    d = jax.grad(lambda p0: extinction_probability(_linear_fractional(p0, 0.5)).value)(0.2)
    assert float(d) == pytest.approx(1 / 0.5, rel=1e-9)


def test_phases():
    cases = [
        (jnp.sqrt(jnp.array([0.5, 0.3, 0.2])), Phase.SUBCRITICAL),  # mu = 0.7
        (jnp.sqrt(jnp.array([0.25, 0.5, 0.25])), Phase.CRITICAL),  # mu = 1
        (jnp.sqrt(jnp.array([0.0, 0.5, 0.5])), Phase.SUPERCRITICAL),  # mu = 1.5
        (hermite_coefficients(A.Hermite(1), order=3), Phase.LINEAR),
    ]
    for a, phase in cases:
        bp = branching_process(a)
        assert Phase(int(bp.phase)) is phase
        assert bp.phase.dtype == jnp.int32
    bp = branching_process(jnp.sqrt(jnp.array([0.1, 0.2, 0.3, 0.4])))
    assert float(bp.mu) == pytest.approx(2.0)
    assert float(bp.mu_star) == pytest.approx(0.3 * 2 * math.log(2) + 0.4 * 3 * math.log(3))
    assert float(bp.variance) == pytest.approx(0.2 + 4 * 0.3 + 9 * 0.4 - 4.0)
    # vmapped over a parameter: the phase code is an array
    phases = jax.vmap(lambda b: branching_process(normalized(hermite_coefficients(A.Swish(b), order=30))).phase)(
        jnp.array([0.5, 1.0, 4.0]))
    assert phases.shape == (3,)


def test_unscaled_limits_at_depth_30_to_60():
    rho = jnp.array([0.0, 0.3, 0.7, 0.95])
    # supercritical with xi = 0 (tanh), xi > 0 (erf + offset), subcritical (sigmoid)
    for act, center in [(A.Tanh(), False), (A.Erf(1.0, 1.0, 0.4), False), (A.Sigmoid(), False), (A.Relu(), True)]:
        a = normalized(hermite_coefficients(act, order=80), center=center)
        bp = branching_process(a)
        lim = unscaled_limit(a, rho)
        K = compositional_kernel(a, rho, depth=60)
        rate = float(jax.grad(lambda s: dual_kernel(a, s))(bp.xi))  # G'(xi): geometric rate
        e30 = np.abs(np.asarray(K[30] - lim))
        e60 = np.abs(np.asarray(K[60] - lim))
        assert np.all(e60 <= e30 + 1e-15)
        assert np.all(e60 <= 0.05), (type(act).__name__, e60, rate)
        big = e30 > 1e-9
        # Koenigs: K^(L) - xi ~ c G'(xi)^L, so the error ratio over 30 layers is G'(xi)^30
        np.testing.assert_allclose(e60[big] / e30[big], rate**30, rtol=0.1)
    assert float(unscaled_limit(a, 1.0)) == 1.0
    # critical law G(s) = (1 + s)^2 / 4: 1 - K^(L)(0) ~ 2 / (sigma^2 L) (Kolmogorov), sigma^2 = 1/2
    a = jnp.sqrt(jnp.array([0.25, 0.5, 0.25]))
    K = compositional_kernel(a, jnp.array(0.0), depth=60)
    assert float(unscaled_limit(a, 0.3)) == pytest.approx(1.0, abs=1e-7)  # a double root: ~sqrt(eps)
    assert 60 * (1 - float(K[60])) == pytest.approx(4.0, rel=0.12)
    # linear
    np.testing.assert_allclose(np.asarray(unscaled_limit(jnp.array([0.0, 1.0]), rho)), np.asarray(rho))


def test_rescaled_limit_exact_laws():
    t = jnp.array([0.0, 0.01, 0.5, 1.0, 5.0, 50.0])
    for p0, b in [(0.0, 0.5), (0.2, 0.5), (0.1, 0.8)]:
        xi = p0 / b
        ref = xi + (1 - xi) / (1 + t / (1 - xi))
        np.testing.assert_allclose(np.asarray(rescaled_limit(_linear_fractional(p0, b), t)), np.asarray(ref),
                                   rtol=0, atol=1e-11)
    # derivative at 0 is -E[W] = -1, functional equation phi(mu t) = G(phi(t)) for an activation
    a = normalized(hermite_coefficients(A.Gelu(), order=60))
    bp = branching_process(a)
    assert float(jax.grad(lambda s: rescaled_limit(a, s))(1e-9)) == pytest.approx(-1.0, abs=1e-6)
    np.testing.assert_allclose(np.asarray(rescaled_limit(a, bp.mu * t)), np.asarray(dual_kernel(a, rescaled_limit(a, t))),
                               atol=1e-11)
    # t -> inf: phi_W(t) - xi ~ C t^-alpha, alpha = log(1 / G'(xi)) / log(mu) (the density of W at 0)
    big_t = jnp.array([1e3, 1e6])
    gap = np.asarray(rescaled_limit(a, big_t)) - float(bp.xi)
    alpha = -math.log(float(jax.grad(lambda s: dual_kernel(a, s))(bp.xi))) / math.log(float(bp.mu))
    assert np.all(gap > 0)
    assert -math.log(gap[1] / gap[0]) / math.log(1e3) == pytest.approx(alpha, rel=0.01)
    # subcritical: W = 0; linear: exp(-t)
    np.testing.assert_allclose(np.asarray(rescaled_limit(jnp.sqrt(jnp.array([0.5, 0.3, 0.2])), t)), 1.0)
    np.testing.assert_allclose(np.asarray(rescaled_limit(jnp.array([0.0, 1.0]), t)), np.exp(-np.asarray(t)), rtol=1e-14)


def test_rescaled_limit_is_the_depth_limit():
    t = jnp.array([0.1, 1.0, 4.0])
    for act, center in [(A.Relu(), True), (A.Gelu(), False)]:
        a = normalized(hermite_coefficients(act, order=64), center=center)
        mu = float(branching_process(a).mu)
        lim = np.asarray(rescaled_limit(a, t))
        errs = []
        for L in (25, 45):
            K = compositional_kernel(a, jnp.exp(-t / mu**L), depth=L)[-1]
            errs.append(np.abs(np.asarray(K) - lim))
        # the error decays like mu^-L, down to the rounding of exp(-t / mu^L) amplified by mu^L
        floor = 20 * np.finfo(float).eps * mu**45 * np.maximum(np.asarray(t), 1)
        assert np.all(errs[1] <= errs[0] * 3 * mu**-20 + floor), (errs, mu)
        assert np.all(errs[1] < 0.05)
    # differentiable in the activation's parameter
    f = lambda b: rescaled_limit(normalized(hermite_coefficients(A.Swish(b), order=30), center=True), 2.0)  # noqa: E731
    check_gradients(f, (1.5,), modes=("rev",), atol=1e-6, rtol=1e-6)


@given(hnp.arrays(np.float64, 6, elements=st.floats(-1, 1)), st.integers(1, 8))
def test_compositional_kernel_invariants(c, depth):
    if np.sum(c * c) < 1e-3:
        return
    a = normalized(jnp.asarray(c))
    X = np.random.default_rng(depth).standard_normal((6, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    K = np.asarray(compositional_kernel(a, jnp.clip(jnp.asarray(X @ X.T), -1, 1), depth=depth))
    assert np.all(np.abs(K) <= 1 + 1e-12)
    assert np.allclose(np.diagonal(K, axis1=1, axis2=2), 1.0)
    assert np.linalg.eigvalsh(K[-1]).min() >= -1e-10  # Schoenberg: positive definite on the sphere


# --------------------------------------------------------------------------------------
# Memorization
# --------------------------------------------------------------------------------------


def test_memorization_depth_exact_between_the_bounds():
    a = normalized(hermite_coefficients(A.Relu(), order=64), center=True)
    kappa = 0.1
    for n, d in [(40, 30), (40, 3)]:  # small and large correlations
        X = jax.random.normal(jax.random.key(n + d), (n, d))
        m = memorization_depth(a, X, kappa, max_depth=70)
        L = int(m.depth)
        assert L > 0
        # exact: the eigenvalues at L are in the band, at L - 1 they are not
        Xh = np.asarray(X) / np.linalg.norm(np.asarray(X), axis=1, keepdims=True)
        R = np.clip(Xh @ Xh.T, -1, 1)
        np.fill_diagonal(R, 1.0)
        Ks = np.asarray(compositional_kernel(a, jnp.asarray(R), depth=L))
        ev = np.linalg.eigvalsh(Ks[L])
        assert ev.min() >= 1 - kappa and ev.max() <= 1 + kappa
        ev_prev = np.linalg.eigvalsh(Ks[L - 1])
        assert ev_prev.min() < 1 - kappa or ev_prev.max() > 1 + kappa
        np.testing.assert_allclose(np.asarray(m.eig_min[L]), ev.min(), atol=1e-12)
        # necessary <= exact <= Gershgorin <= closed-form bounds
        assert int(m.necessary_depth) <= L <= int(m.sufficient_depth)
        r = np.max(np.abs(R - np.eye(n)))
        b = memorization_bounds(a, r, n, kappa)
        assert int(m.sufficient_depth) <= float(b.large_correlation)
        assert int(m.sufficient_depth) <= float(b.small_correlation)
        if d == 3:
            assert float(b.large_correlation) < float(b.small_correlation)
    j = jax.jit(lambda a, X: memorization_depth(a, X, kappa, max_depth=70))(a, X)
    assert int(j.depth) == int(m.depth)
    # uncentered ReLU (xi = 1): never memorizes
    u = normalized(hermite_coefficients(A.Relu(), order=64))
    assert int(memorization_depth(u, X, kappa, max_depth=20).depth) == -1
    assert np.isinf(float(memorization_bounds(u, 0.5, 40, kappa).small_correlation))


# --------------------------------------------------------------------------------------
# Random features
# --------------------------------------------------------------------------------------

LAW = jnp.sqrt(jnp.array([0.0, 0.5, 0.3, 0.2]))  # a centered cubic activation: light-tailed offspring


def test_offspring_distribution_is_the_power_series_of_K():
    P = offspring_distribution(LAW, depth=3, max_degree=27)  # exact: degree 3^3
    assert float(jnp.sum(P)) == pytest.approx(1.0, abs=1e-14)
    rho = jnp.linspace(-1, 1, 7)
    np.testing.assert_allclose(np.asarray(jnp.polyval(P[::-1], rho)),
                               np.asarray(compositional_kernel(LAW, rho, depth=3)[-1]), atol=1e-14)
    assert float(jnp.sum(jnp.arange(28.0) * P)) == pytest.approx(1.7**3, rel=1e-13)  # E Z_L = mu^L


def test_random_features_are_unbiased_with_standard_error_rate():
    X = jax.random.normal(jax.random.key(3), (5, 6))
    X = X / jnp.linalg.norm(X, axis=1)[:, None]
    K = np.asarray(compositional_kernel(LAW, jnp.clip(X @ X.T, -1, 1), depth=2)[-1])
    iu = np.triu_indices(5)
    M = 8000  # one size (one compilation): unbiased within 5 standard errors of the per-feature products
    f = compositional_features(X, LAW, jax.random.key(M), depth=2, num_features=M, max_degree=9)
    assert float(f.truncated_mass) == pytest.approx(0.0, abs=1e-14)
    F = np.asarray(f.features) * math.sqrt(M)  # per-feature values f_m(x)
    prods = F[:, None, :] * F[None, :, :]  # (n, n, M)
    est, se = prods.mean(-1), prods.std(-1, ddof=1) / math.sqrt(M)
    assert np.all(np.abs(est - K)[iu] < 5 * se[iu]), np.max(np.abs(est - K)[iu] / se[iu])
    np.testing.assert_allclose(np.asarray(f.features @ f.features.T), est, atol=1e-12)
    # the actual error over independent draws (jit + vmap: the masked-loop path) falls like
    # 1 / sqrt(features): quadrupling M halves it (depth 1, off-diagonal pairs: light tails)
    K1 = np.asarray(compositional_kernel(LAW, jnp.clip(X @ X.T, -1, 1), depth=1)[-1])
    off = np.triu_indices(5, 1)
    rms = []
    for M in (100, 400):  # the error variance is exactly Var(f f') / M: any pair of sizes shows the rate
        gram = jax.jit(jax.vmap(lambda key: (lambda F: F @ F.T)(  # noqa: B023
            compositional_features(X, LAW, key, depth=1, num_features=M, max_degree=3).features)))
        G = np.asarray(gram(jax.random.split(jax.random.key(M), 64)))
        rms.append(np.sqrt(np.mean((G - K1[None]) ** 2)))
        assert np.all(np.abs(G.mean(0) - K1)[off] < 5 * G.std(0, ddof=1)[off] / 8)  # unbiased (64 draws)
    assert rms[0] / rms[1] == pytest.approx(2.0, rel=0.25)
    # the sampled degrees follow the law of Z^(2) (the last single draw above, M = 8000)
    P = np.asarray(offspring_distribution(LAW, depth=2, max_degree=9))
    freq = np.bincount(np.asarray(f.degrees), minlength=10) / 8000
    assert np.all(np.abs(freq - P) < 5 * np.sqrt(P * (1 - P) / 8000) + 1e-12)


def test_compressed_features_are_unbiased():
    # a tanh kernel at depth 3: one polynomial activation sigma_L with Hermite coefficients sqrt(P(Z = k))
    a = normalized(hermite_coefficients(A.Tanh(), order=30))
    X = jax.random.normal(jax.random.key(4), (5, 6))
    X = X / jnp.linalg.norm(X, axis=1)[:, None]
    K = np.asarray(compositional_kernel(a, jnp.clip(X @ X.T, -1, 1), depth=3)[-1])
    M = 20000
    f = compressed_features(X, a, jax.random.key(2), depth=3, num_features=M, max_degree=40)
    assert float(f.truncated_mass) < 1e-3
    F = np.asarray(f.features) * math.sqrt(M)
    prods = F[:, None, :] * F[None, :, :]
    est, se = prods.mean(-1), prods.std(-1, ddof=1) / math.sqrt(M)
    iu = np.triu_indices(5)
    bias = float(f.truncated_mass)  # |K - K_truncated| <= P(Z > max_degree)
    assert np.all(np.abs(est - K)[iu] < 5 * se[iu] + bias), np.max(np.abs(est - K)[iu] / se[iu])
    # the diagonal is sigma_L's second moment: sum of the law
    np.testing.assert_allclose(np.mean(F * F, axis=1), 1 - bias, atol=5 * float(np.max(se)))


def test_ridge_with_random_features_approaches_kernel_ridge():
    rng = np.random.default_rng(7)
    Xa = rng.standard_normal((120, 5))
    Xa /= np.linalg.norm(Xa, axis=1, keepdims=True)
    y_all = np.sign(Xa @ np.array([1.0, -0.5, 0.3, 0.0, 0.8]))
    y, yt = y_all[:80], y_all[80:]
    lam = 1e-2
    Kall = np.asarray(compositional_kernel(LAW, jnp.asarray(np.clip(Xa @ Xa.T, -1, 1)), depth=2)[-1])
    exact = Kall[80:, :80] @ np.linalg.solve(Kall[:80, :80] + lam * np.eye(80), y)
    errs = []
    for M in (60, 4000):
        F = compositional_features(Xa, LAW, jax.random.key(M), depth=2, num_features=M, max_degree=9).features
        pred = np.asarray(ridge_predict(F[:80], y, F[80:], lam))  # 60 < 80: primal form; 4000: dual form
        errs.append(float(np.sqrt(np.mean((pred - exact) ** 2))))
        if M == 60:  # the primal form equals the dual form
            Fn = np.asarray(F)
            dual = (Fn[80:] @ Fn[:80].T) @ np.linalg.solve(Fn[:80] @ Fn[:80].T + lam * np.eye(80), y)
            np.testing.assert_allclose(pred, dual, atol=1e-8)
    assert errs[1] < errs[0] and errs[1] < 0.25 * float(np.sqrt(np.mean(exact**2)))
    acc_kernel = float(np.mean(np.sign(exact) == yt))
    acc_rf = float(np.mean(np.sign(pred) == yt))
    assert acc_kernel > 0.75 and acc_rf >= acc_kernel - 0.1
    # one-hot classification: argmax of a two-column fit
    Y = np.eye(2)[(y > 0).astype(int)]
    P = np.asarray(ridge_predict(F[:80], Y, F[80:], lam))
    assert float(np.mean(np.argmax(P, axis=1) == (yt > 0))) == acc_rf
