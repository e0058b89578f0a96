"""Closed-form Gaussian duals and numerical methods against adaptive scipy quadrature."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import special
from scipy.integrate import quad

import rmtjax.activations as A
from rmtjax.gaussian import ClosedForm, GaussHermite, Mehler, MonteCarlo, gaussian_expectations

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
]

TRIPLES = [(1.3, 0.7, 0.45), (0.8, 2.1, -1.2), (1.5, 1.5, 1.5), (1.5, 1.5, -1.5), (0.9, 1.1, 0.0), (2.0, 0.5, 0.99)]


@pytest.mark.parametrize("act,f,df,kinks", CLOSED, ids=lambda a: type(a).__name__ if isinstance(a, A.AbstractActivation) else "")
def test_closed_form_matches_quadrature(act, f, df, kinks):
    for q1, q2, q12 in TRIPLES:
        k, kdot = gaussian_expectations(act, q1, q2, q12, method=ClosedForm())
        ref = quad_expectation(f, f, q1, q2, q12, kinks)
        assert float(k) == pytest.approx(ref, rel=1e-10, abs=1e-11), (q1, q2, q12)
        if isinstance(act, A.Sign):
            assert float(kdot) == 0.0  # neural-tangents' convention: derivative 0 a.e.
            continue
        refd = quad_expectation(df, df, q1, q2, q12, kinks)
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


def test_hard_tanh_numerical_and_its_closed_form_length_map():
    from rmtjax.rmt._jacobian import _hardtanh_length_map

    act = A.HardTanh()
    f = lambda x: max(-1.0, min(1.0, x))  # noqa: E731
    ref = quad_expectation(f, f, 1.2, 0.8, 0.5, (-1.0, 1.0))
    k, kdot = gaussian_expectations(act, 1.2, 0.8, 0.5, method=Mehler(128))
    assert abs(float(k) - ref) < 5e-5  # kinks at +-1: measured 1.9e-5 (Mehler(128))
    refd = quad_expectation(lambda x: float(abs(x) < 1), lambda x: float(abs(x) < 1), 1.2, 0.8, 0.5, (-1.0, 1.0))
    # phi' is a step, its Hermite coefficients decay like j^(-3/4): measured 9.7e-3 (GaussHermite(64): 5.9e-2)
    assert abs(float(kdot) - refd) < 1.5e-2
    for q in (0.3, 1.0, 4.0):  # E[phi(sqrt(q) z)^2] by 1-d quadrature vs the closed form
        one = quad(lambda z: f(math.sqrt(q) * z) ** 2 * npdf(z), -12, 12, points=[-1 / math.sqrt(q), 1 / math.sqrt(q)],
                   epsabs=1e-13, limit=200)[0]
        assert float(_hardtanh_length_map(jnp.asarray(q), 1.0, 0.0)) == pytest.approx(one, abs=1e-12)
    assert float(act(jnp.asarray(3.0))) == 1.0 and float(act.derivative(jnp.asarray(0.5))) == 1.0


def test_elu_numerical_with_kink():
    act = A.Elu(0.7)
    f = lambda x: x if x > 0 else 0.7 * math.expm1(x)  # noqa: E731
    ref = quad_expectation(f, f, 1.2, 0.8, 0.5, (0.0,))
    k, _ = gaussian_expectations(act, 1.2, 0.8, 0.5, method=Mehler(128))
    assert abs(float(k) - ref) < 2e-4  # a kink in phi': coefficients decay only like j^{-5/4}


@pytest.mark.parametrize("act", [c[0] for c in CLOSED if not isinstance(c[0], (A.Sign, A.RectifiedMonomial))] + [A.Tanh()])
def test_methods_agree_with_each_other(act):
    q1, q2, q12 = jnp.array([1.3, 0.6]), jnp.array([0.7, 0.6]), jnp.array([0.45, -0.2])
    ref = gaussian_expectations(act, q1, q2, q12, method=GaussHermite(200))
    tol = 1e-9 if not isinstance(act, (A.Relu, A.LeakyRelu, A.ABRelu, A.Abs)) else 3e-3  # kinks converge slowly
    for method in [Mehler(160)] + ([ClosedForm()] if isinstance(act, A.AbstractClosedFormActivation) else []):
        out = gaussian_expectations(act, q1, q2, q12, method=method)
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


@pytest.mark.parametrize("make,p0", PARAM_ACTS)
def test_gradients_wrt_activation_parameters(make, p0):
    p0 = jnp.asarray(p0)

    def f(p, q12):
        k, kdot = gaussian_expectations(make(p), 1.3, 0.7, q12)
        return k + 0.5 * kdot

    check_grads(f, (p0, jnp.array(0.45)), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
    # jit == eager and vmap == loop over parameters
    assert float(jax.jit(f)(p0, jnp.array(0.45))) == pytest.approx(float(f(p0, jnp.array(0.45))), rel=1e-13)
    ps = jnp.stack([p0, p0 * 1.1, p0 * 0.9])
    batched = jax.vmap(f, in_axes=(0, None))(ps, jnp.array(0.45))
    loop = jnp.stack([f(p, jnp.array(0.45)) for p in ps])
    np.testing.assert_allclose(batched, loop, rtol=1e-12)


@pytest.mark.parametrize("act,f,df,kinks", CLOSED, ids=lambda a: type(a).__name__ if isinstance(a, A.AbstractActivation) else "")
def test_no_nan_at_singular_points(act, f, df, kinks):
    # identical, opposite, orthogonal and vanishing inputs: values and gradients finite
    for q1, q2, q12 in [(1.0, 1.0, 1.0), (1.0, 1.0, -1.0), (1.0, 1.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)]:
        def g(x):
            k, kdot = gaussian_expectations(act, x[0], x[1], x[2])
            return k + kdot

        x = jnp.array([q1, q2, q12])
        assert np.isfinite(float(g(x)))
        assert np.all(np.isfinite(np.asarray(jax.grad(g)(x))))


def test_activation_values_and_derivatives():
    x = jnp.linspace(-3, 3, 13)
    for act in [A.Tanh(), A.Sigmoid(), A.Swish(1.3), A.Softplus(), A.Elu(0.5), A.Gelu(), A.Erf(1.2, 0.7, 0.1), A.Sin(1, 2, 0.3)]:
        auto = jax.vmap(jax.grad(lambda t: act(t)))(x + 1e-3)
        np.testing.assert_allclose(act.derivative(x + 1e-3), auto, rtol=1e-10, atol=1e-12)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="degree"):
        A.Monomial(-1)
    with pytest.raises(ValueError, match="'b'"):
        A.Gaussian(1.0, 0.5)
    with pytest.raises(ValueError, match="coef"):
        A.Polynomial([])
    with pytest.raises(ValueError, match="alpha"):
        A.LeakyRelu(jnp.ones(3))
