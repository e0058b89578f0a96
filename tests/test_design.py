"""`rmtjax.design`: activation families, kernel shaping (DKS/TAT) and objectives, against
independent references: scipy quadrature, 2-d Gauss-Hermite (exact for polynomials), the kernel
engine's own C maps composed over depth, closed forms, finite differences of the implicit gradients."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compiles import Programs
from scipy import integrate

from rmtjax import hermite, meanfield, regression
from rmtjax._validate import reraise_as_value_error
from rmtjax.activations import (
    ABRelu, Elu, Erf, Gelu, HermiteSeries, Identity, Polynomial, Relu, Softplus, Swish, Tanh, Transformed)
from rmtjax.design import (
    Branching,
    Chain,
    Criticality,
    DesignWarning,
    Family,
    JacobianEdge,
    JacobianMoments,
    KernelDistance,
    KernelShaping,
    MarginalLikelihood,
    NTKCondition,
    Residual,
    ValidationLoss,
    design,
    dks,
    hermite_family,
    local_maps,
    parameters_of,
    tat,
    tat_leaky_relu,
    transformed_family,
)
from rmtjax.gaussian import GaussHermite, gaussian_expectations
from rmtjax.kernels import FullyConnected, kernel
from rmtjax.rmt import jacobian_law

SMOOTH = [Tanh(), Softplus(), Swish(), Gelu(), Elu()]


def _gauss(fn):
    """E[fn(z)], z ~ N(0, 1), by adaptive quadrature split at 0."""
    dens = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return sum(integrate.quad(lambda z: fn(z) * dens(z), a, b, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
               for a, b in ((-14.0, 0.0), (0.0, 14.0)))


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


def test_hermite_series_values_dual_and_coefficients():
    from numpy.polynomial.hermite_e import hermeval

    a = np.array([0.1, -0.4, 0.7, 0.3, -0.2, 0.25])
    act = HermiteSeries(jnp.asarray(a))
    x = np.linspace(-4, 4, 17)
    ref = hermeval(x, a / np.sqrt([math.factorial(k) for k in range(6)]))
    np.testing.assert_allclose(act(jnp.asarray(x)), ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(Polynomial(act.monomial_coefficients())(jnp.asarray(x)), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(act.derivative(jnp.asarray(x)), jax.vmap(jax.grad(act))(jnp.asarray(x)), rtol=1e-12,
                               atol=1e-12)
    # 2-d Gauss-Hermite of degree 10 is exact for a product of two degree-5 polynomials
    for q1, q2, q12 in ((1.0, 1.0, 0.3), (2.5, 0.4, -0.7), (0.2, 3.0, 0.7), (1.7, 1.7, 1.7)):
        exact = act.dual(jnp.array(q1), jnp.array(q2), jnp.array(q12))
        quad = gaussian_expectations(act, q1, q2, q12, method=GaussHermite(10))
        np.testing.assert_allclose(exact, (quad.k, quad.kdot), rtol=1e-12, atol=1e-13)
    # at unit variance the coefficients are the series' own; at q != 1 they follow the rescaling identity
    np.testing.assert_allclose(act.hermite_coefficients(jnp.array(1.0), order=7), np.r_[a, 0, 0], atol=1e-15)
    q = 2.3
    quad = [_gauss(lambda z, k=k: float(act(math.sqrt(q) * z)) * hermeval(z, np.eye(k + 1)[k]) /
                   math.sqrt(math.factorial(k))) for k in range(6)]
    np.testing.assert_allclose(act.hermite_coefficients(jnp.array(q), order=5), quad, rtol=1e-10, atol=1e-12)


def test_hermite_series_gradient_and_float32():
    a = jnp.array([0.0, 0.8, 0.5, -0.3])

    def k(c):
        return HermiteSeries(c).dual(jnp.array(1.4), jnp.array(0.6), jnp.array(0.5))[0]

    g = jax.grad(k)(a)
    eps = 1e-6
    fd = [(k(a.at[i].add(eps)) - k(a.at[i].add(-eps))) / (2 * eps) for i in range(4)]
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)
    k32 = HermiteSeries(a.astype(jnp.float32)).dual(*(jnp.float32(v) for v in (1.4, 0.6, 0.5)))[0]
    assert k32.dtype == jnp.float32
    np.testing.assert_allclose(k32, k(a), rtol=2e-6)  # measured 8e-9


def test_transformed_dual_against_quadrature_and_bad_input():
    act = Transformed(Tanh(), alpha=1.7, beta=0.4, gamma=1.3, delta=-0.2)
    x = jnp.linspace(-3, 3, 9)
    np.testing.assert_allclose(act(x), 1.3 * (np.tanh(1.7 * np.asarray(x) + 0.4) - 0.2), rtol=1e-14)
    np.testing.assert_allclose(act.derivative(x), jax.vmap(jax.grad(act))(x), rtol=1e-12)
    out = gaussian_expectations(act, 1.2, 0.8, 0.5)
    ref = gaussian_expectations(act, 1.2, 0.8, 0.5, method=GaussHermite(120))
    # the default numerical method (Mehler(64)) at an effective variance alpha^2 q ~ 3.5: measured 1.2e-7,
    # as rmtjax.gaussian's table states for q ~ 4
    np.testing.assert_allclose((out.k, out.kdot), (ref.k, ref.kdot), rtol=5e-7)
    with pytest.raises(ValueError, match="Transformed.alpha"):
        Transformed(Tanh(), alpha=float("nan"))
    with pytest.raises(ValueError, match="Transformed.base"):
        Transformed(np.tanh)
    with pytest.raises(ValueError, match="HermiteSeries.coeffs"):
        HermiteSeries(jnp.zeros(102))


# --------------------------------------------------------------------------------------------
# Local maps
# --------------------------------------------------------------------------------------------


def test_local_maps_relu_closed_form():
    m = local_maps(Relu())
    # Q(1) = 1/2, Q'(1) = E[relu relu' z] = 1/2, C(0) = (1/(2 pi)) / (1/2), C'(1) = (1/2)/(1/2), C''(1) = 0
    np.testing.assert_allclose([m.q, m.q_slope, m.c0, m.c_slope, m.c_curvature], [0.5, 0.5, 1 / math.pi, 1.0, 0.0],
                               rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("act", [Transformed(Tanh(), 0.8, 0.3, 1.4, -0.1), Transformed(Elu(0.7), 1.3, -0.4, 0.9, 0.2),
                                 Swish(1.5)], ids=["tanh", "elu", "swish"])
def test_local_maps_against_scipy(act):
    m = local_maps(act)
    # one compiled program per function (quad evaluates them thousands of times at the ELU's kink; an
    # eager call dispatches every operation)
    f_, df_ = jax.jit(lambda z: act(z)), jax.jit(lambda z: act.derivative(z))
    ddf_ = jax.jit(jax.grad(lambda z: act.derivative(z)))
    f = lambda z: float(f_(jnp.float64(z)))  # noqa: E731
    df = lambda z: float(df_(jnp.float64(z)))  # noqa: E731
    ddf = lambda z: float(ddf_(jnp.float64(z)))  # noqa: E731
    q = _gauss(lambda z: f(z) ** 2)
    ref = [q, _gauss(lambda z: f(z) * df(z) * z), _gauss(f) ** 2 / q, _gauss(lambda z: df(z) ** 2) / q,
           _gauss(lambda z: ddf(z) ** 2) / q]
    np.testing.assert_allclose([m.q, m.q_slope, m.c0, m.c_slope, m.c_curvature], ref, rtol=1e-11, atol=1e-13)


def test_local_c_slope_is_the_slope_of_the_engines_c_map():
    # C'(1) from the engine's normalized C map, by a centered difference at c = 1 - h (independent
    # of the local-map quadrature: Mehler expansion of the kernel engine)
    act = Transformed(Softplus(), 0.7, 0.2, 1.1, -0.5)
    m = local_maps(act)
    q = float(act.length_map(jnp.array(1.0)))

    def cmap(c):
        return gaussian_expectations(act, 1.0, 1.0, c).k / q

    h = 1e-3
    slope = (cmap(1 - h / 2) - cmap(1 - 3 * h / 2)) / h  # at 1 - h, error O(h) * C''
    np.testing.assert_allclose(slope, m.c_slope, rtol=2e-3)
    np.testing.assert_allclose(cmap(0.0), m.c0, rtol=1e-8, atol=1e-12)


# --------------------------------------------------------------------------------------------
# DKS and TAT
# --------------------------------------------------------------------------------------------


@eqx.filter_jit  # one program per network: eagerly, every layer of a deep network dispatches its own ops
def _network_c_map(act, network, c):
    q = act.length_map(jnp.array(1.0))
    return network.c_map(lambda x: meanfield.c_map(x, 1.0, act, 1.0, 0.0) / q, jnp.asarray(c))


@pytest.mark.parametrize("act", SMOOTH, ids=lambda a: type(a).__name__)
def test_dks_conditions_hold_through_the_kernel_engine(act):
    L, zeta = 10, 1.5
    s = dks(act, Chain(L), slope=zeta)
    phi = s.activation
    assert bool(s.ok) and float(s.residual) < 1e-12
    # Q(1) = 1 and C(0) = 0 in the engine's own length map and C map (its trapezoid rule is O(h^2) at
    # ELU's kink, which the shift moves off its nodes: measured 8e-8; smooth bases 1e-15)
    tol = 2e-7 if isinstance(act, Elu) else 1e-9
    np.testing.assert_allclose(phi.length_map(jnp.array(1.0)), 1.0, rtol=tol)
    np.testing.assert_allclose(_network_c_map(phi, Chain(1), 0.0), 0.0, atol=1e-9)
    # the whole network's C-map slope at 1 is zeta: a secant of C_f composed by the engine
    h = 1e-4
    secant = (1.0 - _network_c_map(phi, Chain(L), 1.0 - h)) / h
    np.testing.assert_allclose(secant, zeta, rtol=5e-3)  # the O(h C_f'') secant error
    np.testing.assert_allclose(s.local.c_slope ** L, zeta, rtol=1e-12)
    np.testing.assert_allclose(s.local.q_slope, 1.0, rtol=1e-12)


@pytest.mark.parametrize("act", SMOOTH, ids=lambda a: type(a).__name__)
def test_tat_conditions(act):
    L, tau = 20, 0.3
    s = tat(act, Chain(L), curvature=tau)
    m = s.local
    assert bool(s.ok)
    np.testing.assert_allclose([m.q, m.q_slope, m.c_slope, m.c_curvature * L], [1.0, 1.0, 1.0, tau], rtol=1e-11)
    assert float(s.activation.alpha * s.activation.gamma) < 2.0


def test_tat_leaky_relu_network_c0_through_the_engine():
    for net, eta in ((Chain(30), 0.9), (Residual(8, 2, 0.9), 0.4)):
        s = tat_leaky_relu(net, c0=eta)
        assert isinstance(s.activation, ABRelu)
        np.testing.assert_allclose(s.activation.length_map(jnp.array(1.0)), 1.0, rtol=1e-13)
        # the whole network's C_f(0), from the engine's closed-form ABRelu C map
        cf = _network_c_map(s.activation, net, 0.0)
        if isinstance(net, Chain):
            np.testing.assert_allclose(cf, eta, rtol=1e-10)
        else:  # the maximum over the network and a single branch
            branch = _network_c_map(s.activation, Chain(2), 0.0)
            np.testing.assert_allclose(max(float(cf), float(branch)), eta, rtol=1e-10)


def test_residual_local_targets_solve_the_subnetwork_maximum():
    net = Residual(16, 2, 0.8, final_layers=1)
    s = net.local_slope(jnp.array(1.5))
    w2 = 0.64
    full = (w2 + (1 - w2) * s**2) ** 16 * s
    np.testing.assert_allclose(max(float(full), float(s**2)), 1.5, rtol=1e-12)
    k = net.local_curvature(jnp.array(0.3))
    np.testing.assert_allclose(k * (16 * (1 - w2) * 2 + 1), 0.3, rtol=1e-13)
    shaped = dks(Tanh(), net, slope=1.5)
    np.testing.assert_allclose(shaped.local.c_slope, s, rtol=1e-12)


def test_shaping_gradients_are_implicit_and_match_finite_differences():
    def alpha(zeta):
        return dks(Tanh(), Chain(10), slope=zeta).activation.alpha

    g = jax.grad(alpha)(jnp.array(1.5))
    eps = 1e-5
    fd = (alpha(jnp.array(1.5 + eps)) - alpha(jnp.array(1.5 - eps))) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6)

    def slope(c0):
        return tat_leaky_relu(Chain(20), c0=c0).params["negative_slope"]

    g = jax.grad(slope)(jnp.array(0.8))
    fd = (slope(jnp.array(0.8 + eps)) - slope(jnp.array(0.8 - eps))) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_shaping_under_vmap_and_float32():
    zetas = jnp.array([1.2, 1.5, 2.0])
    slopes = jax.vmap(lambda z: dks(Softplus(), Chain(10), slope=z).local.c_slope)(zetas)
    np.testing.assert_allclose(slopes, zetas ** 0.1, rtol=1e-12)
    s32 = tat(Softplus(), Chain(20), curvature=jnp.float32(0.3))
    assert s32.activation.alpha.dtype == jnp.float32
    s64 = tat(Softplus(), Chain(20), curvature=0.3)
    np.testing.assert_allclose(s32.activation.alpha, s64.activation.alpha, rtol=2e-5)  # measured 2.7e-7
    np.testing.assert_allclose(s32.local.c_curvature * 20, 0.3, rtol=1e-4)


def test_shaping_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="slope"):
        dks(Tanh(), Chain(10), slope=1.0)
    with pytest.raises(ValueError, match="q_slope"):
        dks(Tanh(), Chain(10), q_slope=-1.0)
    with pytest.raises(ValueError, match="curvature"):
        tat(Tanh(), Chain(10), curvature=0.0)
    with pytest.raises(ValueError, match=r"c0 = 0.99 is out of reach.*at most 0.6048"):
        tat_leaky_relu(Chain(3), c0=0.99)  # a 3-layer ReLU network has C_f(0) = 0.6048...
    with pytest.raises(ValueError, match="network"):
        dks(Tanh(), 10)
    with pytest.raises(ValueError, match="Residual.shortcut_weight"):
        Residual(4, 2, 1.0)
    with pytest.raises(ValueError, match="Chain.depth"):
        Chain(0)
    jitted = reraise_as_value_error(jax.jit(lambda z: dks(Tanh(), Chain(10), slope=z).activation.alpha))
    with pytest.raises(ValueError, match="slope"):
        jitted(jnp.array(0.5))
    s = tat_leaky_relu(Chain(3), c0=0.99, throw=False)
    assert not bool(s.ok)


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------


def test_criticality_vanishes_on_the_edge_of_chaos():
    w2 = meanfield.edge_of_chaos(Erf(), 0.05).value
    np.testing.assert_allclose(Criticality(w2, 0.05)(Erf()), 0.0, atol=1e-16)
    assert float(Criticality(w2 * 1.2, 0.05)(Erf())) > 1e-3


def test_jacobian_moments_against_the_free_multiplicative_law():
    # the mean and variance of the law of JJ^T by free multiplicative convolution (rmtjax.rmt)
    act, w2, b2, L = Tanh(), 1.3, 0.02, 4
    for orthogonal in (True, False):
        obj = JacobianMoments(w2, b2, depth=L, orthogonal=orthogonal)
        mean, var = obj.moments(act)
        law = jacobian_law(act, w2, b2, depth=L, orthogonal=orthogonal)
        m1, m2 = law.moment(1), law.moment(2)
        np.testing.assert_allclose(mean, m1, rtol=1e-10)
        # normalized variances add under free multiplicative convolution: m2/m1^2 - 1 of the law
        np.testing.assert_allclose(var, m2 / m1**2 - 1, rtol=1e-9)


def test_objectives_at_the_edges_are_finite_or_errors():
    """A probe's reproducers: JacobianMoments at depth 2000 overflowed chi_1^L to inf (NaN gradient),
    NTKCondition of a singular NTK took the log of a rounding-negative eigenvalue (NaN), ValidationLoss
    of a zero kernel (zero inputs, b_std = 0) factored a zero matrix (NaN)."""
    obj = JacobianMoments(0.5, 0.1, depth=2000)
    mean, var = obj.moments(Tanh())
    chi = float(meanfield.chi_1(Tanh(), 0.5, 0.1).value)
    # log m1 = L log chi_1: the objective is (L log chi_1)^2 + variance, finite though m1 = 1e-818 underflows
    np.testing.assert_allclose(obj(Tanh()), (2000 * math.log(chi)) ** 2 + float(var), rtol=1e-12)
    assert float(mean) == 0.0  # the underflowed mean itself
    g = jax.grad(lambda a: JacobianMoments(0.5, 0.1, depth=2000)(Erf(a=a)))(1.0)
    assert np.isfinite(g)
    with pytest.raises(ValueError, match="x: rows 0 and 1 are equal, so the NTK on x is singular"):
        NTKCondition(jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), depth=2)
    # a linear network on linearly dependent inputs: an infinite condition number, as documented
    x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.5]])
    assert float(NTKCondition(x, depth=2)(Identity())) == math.inf
    assert np.isfinite(jax.grad(lambda w: NTKCondition(x[:3], depth=2, W_std=w)(Relu()))(1.0))
    # zero kernel: predictions 0, so the loss is the mean squared validation target
    loss = ValidationLoss(jnp.zeros((2, 2)), jnp.ones(2), jnp.array([[0.5, 0.5]]), jnp.array([0.1]), depth=2)
    assert float(loss(Relu())) == pytest.approx(0.01, rel=1e-14)


def test_jacobian_edge_objective():
    # the edge of the law of JJ^T lies above its mean; the objective's gradient (through the edge's
    # Newton refinement and q*) matches finite differences
    def loss(a):
        return JacobianEdge(1.2, 0.05, depth=8)(Transformed(Tanh(), alpha=a))

    obj = JacobianEdge(1.2, 0.05, depth=8)
    mean, _ = JacobianMoments(1.2, 0.05, depth=8).moments(Tanh())
    assert float(obj.edge(Tanh())) > float(mean)
    g = jax.grad(loss)(jnp.array(1.0))
    eps = 1e-5
    np.testing.assert_allclose(g, (loss(jnp.array(1 + eps)) - loss(jnp.array(1 - eps))) / (2 * eps), rtol=1e-6)


def test_branching_kernel_distance_and_data_objectives():
    a = jnp.array([0.0, 0.6, 0.0, 0.8])
    act = HermiteSeries(a)
    np.testing.assert_allclose(Branching(mu=(0.36 + 3 * 0.64))(act), 0.0, atol=1e-20)
    # the depth-3 compositional kernel of rmtjax.hermite (an independent path) is a zero of the distance
    target = lambda rho: hermite.compositional_kernel(a, rho, depth=3)[-1]  # noqa: E731
    np.testing.assert_allclose(KernelDistance(target, depth=3)(act), 0.0, atol=1e-24)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    y = np.sin(x[:, 0])
    xv, yv = rng.normal(size=(6, 5)), np.sin(rng.normal(size=6))
    net = FullyConnected(3, 1.0, 0.0, act)
    k = np.asarray(kernel(x, None, FullyConnected(3, 1.0, 0.0, Erf())).ntk)  # well conditioned (a cubic is not)
    e = np.linalg.eigvalsh(k)
    np.testing.assert_allclose(NTKCondition(x, depth=3)(Erf()), math.log(e[-1] / e[0]), rtol=1e-9)
    kk = np.asarray(kernel(np.concatenate([x, xv]), None, net).nngp)
    ktt = kk[:12, :12] + 1e-3 * np.mean(np.diag(kk[:12, :12])) * np.eye(12)
    pred = kk[12:, :12] @ np.linalg.solve(ktt, y)
    np.testing.assert_allclose(ValidationLoss(x, y, xv, yv, depth=3)(act), np.mean((pred - yv) ** 2), rtol=1e-9)
    lml = regression.log_marginal_likelihood(kk[:12, :12], y, 0.01)
    np.testing.assert_allclose(MarginalLikelihood(x, y, depth=3, noise=0.01)(act), -lml / 12, rtol=1e-12)
    # composition
    both = KernelShaping(Chain(3), q_slope=1.0) + 2.0 * Branching(mu=1.0)
    np.testing.assert_allclose(both(act), KernelShaping(Chain(3), q_slope=1.0)(act) + 2.0 * Branching(mu=1.0)(act),
                               rtol=1e-14)


# --------------------------------------------------------------------------------------------
# The design loop
# --------------------------------------------------------------------------------------------


def test_design_recovers_a_target_kernel_with_a_hermite_family():
    # the depth-2 kernel of a unit-norm Hermite series determines the squared coefficients; start
    # elsewhere and descend on the kernel distance
    a = np.array([0.0, 0.8, 0.36, 0.48])
    target = lambda rho: hermite.compositional_kernel(jnp.asarray(a), rho, depth=2)[-1]  # noqa: E731
    out = design(hermite_family(jnp.array([0.1, 0.5, 0.5, 0.5])), KernelDistance(target, depth=2), steps=100)
    assert bool(out.converged)
    assert float(jnp.min(out.history)) < 1e-20 < 1e-2 < float(out.history[0])
    np.testing.assert_allclose(np.asarray(out.activation.coeffs) ** 2, a**2, atol=1e-9)  # measured 3e-11


def test_design_by_descent_meets_dks_conditions():
    net = Chain(10)
    obj = KernelShaping(net, q_slope=1.0, c0=0.0, slope=1.5)
    out = design(transformed_family(Tanh(), alpha=0.5, beta=0.5), obj, steps=100)
    m = local_maps(out.activation)
    # the penalty is quadratic in the misses: at an objective ~1e-21 the misses are ~1e-11
    np.testing.assert_allclose([m.q, m.q_slope, m.c0, m.c_slope ** 10], [1.0, 1.0, 0.0, 1.5], atol=1e-9)
    # the same solution as the exact solve (one branch: started near it)
    exact = dks(Tanh(), net, slope=1.5).activation
    # measured: alpha, beta within 2e-6 relative (gamma 3e-6): the quadratic penalty's sqrt-level accuracy
    np.testing.assert_allclose([out.activation.alpha, out.activation.beta], [exact.alpha, exact.beta], rtol=1e-4)


def test_design_of_an_activations_own_parameters_and_warnings():
    out = design(Swish(1.0), Criticality(1.0, 0.0, q_star=None) + Branching(mu=1.1), steps=10, warn=False,
                 optimizer=optax.adam(1e-2))
    assert out.history.shape == (11,)
    assert isinstance(out.activation, Swish)
    with pytest.warns(DesignWarning, match="not converged after 10 steps"):
        design(parameters_of(Erf()), Branching(mu=1.5), steps=10, optimizer=optax.sgd(1e-3))
    with pytest.raises(ValueError, match="objective"):
        design(Erf(), lambda a: 0.0)
    with pytest.raises(ValueError, match="steps"):
        design(Erf(), Branching(mu=1.5), steps=2)
    with pytest.raises(ValueError, match="coeffs"):
        hermite_family(jnp.zeros(3))
    with pytest.raises(ValueError, match="Branching needs a target"):
        Branching()
    with pytest.raises(ValueError, match="Family.build"):
        Family(lambda p: 1.0, jnp.zeros(2))


def test_design_in_float32_and_a_designed_activation_in_a_finite_network():
    from flax import nnx

    from rmtjax.finite import MLP

    a = np.array([0.0, 0.8, 0.36, 0.48], np.float32)
    rho = jnp.linspace(-1, 1, 21, dtype=jnp.float32)
    target = hermite.compositional_kernel(jnp.asarray(a), rho, depth=2)[-1]
    out = design(hermite_family(jnp.array([0.1, 0.5, 0.5, 0.5], jnp.float32)),
                 KernelDistance(target, depth=2, rho=rho), steps=60)
    assert out.activation.coeffs.dtype == jnp.float32 and out.history.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out.activation.coeffs) ** 2, a**2, atol=5e-4)  # measured 1.5e-4
    # the designed module runs in a finite Flax network like any activation
    spec = FullyConnected(2, jnp.float32(1.0), jnp.float32(0.0), out.activation)
    net = MLP(spec, 3, width=8, dtype=jnp.float32, rngs=nnx.Rngs(0))
    y = net(jnp.ones((4, 3), jnp.float32))
    assert y.shape == (4, 1) and bool(jnp.all(jnp.isfinite(y)))


def test_repeated_eager_shaping_compiles_nothing():
    """A second eager call with the same structure compiles no program: TAT on a residual network
    and TAT for Leaky ReLU each compiled a loop over the network's layers on every call (its body a
    new closure each time) until those eager pieces were jitted."""
    calls = [lambda: tat(Softplus(), Residual(4, 2, 0.9)), lambda: tat_leaky_relu(Chain(5), c0=0.5),
             lambda: dks(Tanh(), Residual(3, 2, 0.8))]
    for call in calls:
        call()
    with Programs() as p:
        for call in calls:
            call()
    assert not p.names, f"{p.n} programs compiled by repeated calls: {p.names}"


_ADAM = optax.adam(1e-2)


def test_repeated_eager_objectives_and_design_compile_nothing():
    """A second eager call of local_maps, each objective, transformed_family and design with the same
    structure compiles no program. design failed before its default optimizer was built once: a fresh
    optax.lbfgs() on every call (its functions static arguments of the compiled loop) recompiled the
    whole loop on every call."""
    x = np.random.default_rng(0).normal(size=(5, 3))
    y = x[:, 0]
    calls = [
        lambda: local_maps(Transformed(Elu(), 1.2, 0.3, 0.8, -0.5)),
        lambda: KernelShaping(Chain(4), q_slope=1.0, slope=1.5, curvature=0.3)(Tanh()),
        lambda: Criticality(1.5, 0.1, q_star=1.0)(Erf()),
        lambda: JacobianMoments(1.2, 0.1, depth=3)(Tanh()),
        lambda: JacobianEdge(1.2, 0.1, depth=2)(Tanh()),
        lambda: (Branching(mu=1.2, extinction=0.1) + 2.0 * KernelDistance(np.zeros(5), depth=2,
                                                                          rho=np.linspace(-1, 1, 5)))(Erf()),
        lambda: NTKCondition(x, depth=2)(Erf()),
        lambda: ValidationLoss(x, y, x[:2] + 0.1, y[:2], depth=2, ridge=0.1)(Erf()),
        lambda: MarginalLikelihood(x, y, depth=2, noise=0.1)(Erf()),
        lambda: transformed_family(Tanh(), alpha=0.7, beta=0.2).init,
        lambda: design(hermite_family(jnp.array([0.1, 0.5, 0.5, 0.5])), Branching(mu=1.2), steps=10, warn=False),
        # a new transformed_family of an equal base, and an optimizer without extra-argument support
        # given again: both recompiled the loop on every call before (a new closure as Family.build; a
        # new optax.with_extra_args_support wrapper)
        lambda: design(transformed_family(Swish(beta=1.5), alpha=0.8), Branching(mu=1.1), steps=10, warn=False),
        lambda: design(transformed_family(Tanh()), Branching(mu=1.1), steps=10, warn=False, optimizer=_ADAM),
    ]
    first = [jax.tree_util.tree_leaves(call()) for call in calls]
    with Programs() as p:
        second = [jax.tree_util.tree_leaves(call()) for call in calls]
    assert not p.names, f"{p.n} programs compiled by repeated calls: {p.names}"
    for a, b in zip(first, second):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_transformed_family_of_traced_parameters():
    """transformed_family of a base whose parameters are traced (built inside jit) builds activations
    with those parameters; a concrete base's build is equal (and hashes equal) for equal bases, differs
    for a different parameter value, and builds the base itself (its parameters' values and weak type)."""
    fam = jax.jit(lambda b: transformed_family(Swish(beta=b), alpha=0.8).build(jnp.zeros(4)).base.beta)
    np.testing.assert_array_equal(fam(1.5), 1.5)
    a, b = transformed_family(Swish(beta=1.5)).build, transformed_family(Swish(beta=1.5)).build
    assert a == b and hash(a) == hash(b)
    assert transformed_family(Swish(beta=1.25)).build != a
    x = jnp.linspace(-2.0, 2.0, 5)
    np.testing.assert_array_equal(a(jnp.zeros(4))(x), Swish(beta=1.5)(x))
    # the base's parameters are the base's own (their dtype and weak type kept)
    beta = a(jnp.zeros(4)).base.beta
    assert (beta.dtype, beta.weak_type) == (Swish(beta=1.5).beta.dtype, Swish(beta=1.5).beta.weak_type)
