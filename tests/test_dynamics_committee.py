"""Saad-Solla committee-machine ODEs: Gaussian integrals, eps_g, plateau, simulation agreement."""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import Programs
from scipy.special import erf

from rmtjax.activations import Erf, Identity, Relu, Tanh
from rmtjax.dynamics._committee import (
    CommitteeState,
    committee_fixed_point,
    committee_ode,
    committee_rhs,
    generalization_error,
    saad_solla_erf,
)
from rmtjax.dynamics._integrals import _relu_i4, _sub, _tuples, committee_integrals, pair_integrals
from rmtjax.dynamics._simulation import online_sgd, simulate_committee
from rmtjax.gaussian import ClosedForm, GaussHermite

K = M = 2
T2, V2 = jnp.eye(2), jnp.ones(2)


def _cov(seed, P=4):
    A = np.random.default_rng(seed).normal(size=(P, P + 2))
    return A @ A.T / (P + 2)


def _samples(C, n=200_000, seed=1):
    return np.random.default_rng(seed).normal(size=(n, C.shape[0])) @ np.linalg.cholesky(C).T


def _np_act(name):
    if name == "erf":
        return (lambda u: erf(u / math.sqrt(2))), (lambda u: math.sqrt(2 / math.pi) * np.exp(-u * u / 2))
    if name == "relu":
        return (lambda u: np.maximum(u, 0)), (lambda u: (u > 0) * 1.0)
    return (lambda u: u), (lambda u: np.ones_like(u))


ACTS = {"erf": saad_solla_erf(), "relu": Relu(), "linear": Identity()}


@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
def test_closed_form_integrals_vs_monte_carlo(name):
    """Every entry of I2, I3, I4, J2 (repeated indices included) within 5 SE of Monte Carlo."""
    C = _cov(0)
    z = _samples(C)
    f, df = _np_act(name)
    fz, dz = f(z), df(z)
    ints = committee_integrals(jnp.asarray(C), ACTS[name], ACTS[name], num_student=K, method=ClosedForm())

    def check(est, prod):  # prod: samples along axis 0
        mean, se = prod.mean(0), prod.std(0) / math.sqrt(prod.shape[0])
        assert np.all(np.abs(np.asarray(est) - mean) <= 5 * se + 1e-12), (np.asarray(est), mean, se)

    check(ints.i2, fz[:, :, None] * fz[:, None, :])
    check(ints.j2, dz[:, :K, None] * dz[:, None, :K])
    check(ints.i3, dz[:, :K, None, None] * z[:, None, :, None] * fz[:, None, None, :])
    for k in range(K):  # (n, K, P, P) at a time keeps memory small
        check(ints.i4[k], dz[:, k, None, None, None] * dz[:, :K, None, None] * fz[:, None, :, None] * fz[:, None, None, :])


def test_scaled_erf_and_mixed_teacher_closed_forms_vs_quadrature():
    """Erf(a, b, c) with different student/teacher parameters: the rescaled closed forms against
    Gauss-Hermite quadrature of the same expectations, whose error shrinks with the degree."""
    C = 0.4 * jnp.asarray(_cov(3))
    g, gt = Erf(1.3, 0.7, 0.2), Erf(0.8, 1.4, -0.1)
    cf = committee_integrals(C, g, gt, num_student=K, method=ClosedForm())
    err = [max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(cf, committee_integrals(C, g, gt, num_student=K, method=GaussHermite(deg)))) for deg in (8, 16)]
    assert err[1] < 0.1 * err[0] and err[1] < 2e-3, err


@pytest.mark.parametrize("name", ["erf", "linear"])
def test_quadrature_vs_closed_forms(name):
    """Gauss-Hermite integrals converge to the closed forms spectrally for erf and linear."""
    C = jnp.asarray(_cov(1))
    act = ACTS[name]
    cf = committee_integrals(C, act, act, num_student=K, method=ClosedForm())
    gh = committee_integrals(C, act, act, num_student=K, method=GaussHermite(16))
    for a, b in zip(cf, gh):
        np.testing.assert_allclose(a, b, atol=2e-4 if name == "erf" else 1e-12)


def test_relu_quadrature_vs_closed_forms():
    """ReLU (kinks, steps): Gauss-Hermite converges algebraically. I2 (2-d) at degrees 10, 40,
    100 with a fitted rate of at least deg^-1; I3, I4, J2 (step functions) within 3e-2 at deg 12."""
    C = jnp.asarray(_cov(1))
    cf = committee_integrals(C, Relu(), Relu(), num_student=K, method=ClosedForm())
    np.testing.assert_allclose(pair_integrals(C, Relu(), Relu(), num_student=K), cf.i2, rtol=1e-12)
    degs = (10, 40, 100)
    errs = [float(jnp.max(jnp.abs(pair_integrals(C, Relu(), Relu(), num_student=K, method=GaussHermite(d)) - cf.i2)))
            for d in degs]
    assert errs[0] > errs[1] > errs[2] and np.polyfit(np.log(degs), np.log(errs), 1)[0] < -1.0, errs
    gh = committee_integrals(C, Relu(), Relu(), num_student=K, method=GaussHermite(12))
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(gh, cf)) < 3e-2


def test_generic_activation_quadrature_vs_monte_carlo():
    """tanh has no closed form: Gauss-Hermite (deg 14) of every I2, I3, I4, J2 within 5 SE of
    Monte Carlo over the Gaussian fields. (tanh's poles at +-i pi/2 make Gauss-Hermite converge
    slowly for O(1) variances: at variance 0.55, deg 12 is 4% off on E[g'^2 g^2]; here the
    variances are <= 0.2, where deg 14 is accurate to ~1e-5.)"""
    C = 0.1 * _cov(2)
    z = _samples(C, seed=7)
    fz, dz = np.tanh(z), 1 - np.tanh(z) ** 2
    ints = committee_integrals(jnp.asarray(C), Tanh(), Tanh(), num_student=K, method=GaussHermite(14))

    def check(est, prod):
        mean, se = prod.mean(0), prod.std(0) / math.sqrt(prod.shape[0])
        assert np.all(np.abs(np.asarray(est) - mean) <= 5 * se + 1e-12), (np.asarray(est), mean, se)

    check(ints.i2, fz[:, :, None] * fz[:, None, :])
    check(ints.j2, dz[:, :K, None] * dz[:, None, :K])
    check(ints.i3, dz[:, :K, None, None] * z[:, None, :, None] * fz[:, None, None, :])
    for k in range(K):
        check(ints.i4[k], dz[:, k, None, None, None] * dz[:, :K, None, None] * fz[:, None, :, None] * fz[:, None, None, :])
    with pytest.raises(ValueError, match="method: no closed-form"):
        committee_integrals(jnp.asarray(C), Tanh(), Tanh(), num_student=K, method=ClosedForm())


@pytest.mark.parametrize("name", ["erf", "relu"])
def test_eps_g_vs_monte_carlo_over_gaussian_fields(name):
    rng = np.random.default_rng(4)
    C = _cov(5)
    Q, R, T = C[:K, :K], C[:K, K:], C[K:, K:]
    v, vt = rng.normal(size=K), rng.normal(size=M)
    z = _samples(C, seed=6)
    f, _ = _np_act(name)
    err = 0.5 * (f(z[:, :K]) @ v - f(z[:, K:]) @ vt) ** 2
    eg = generalization_error(Q, R, T, v, vt, student=ACTS[name])
    assert abs(float(eg) - err.mean()) <= 5 * err.std() / math.sqrt(len(err))


def _state0(scale=0.25, r=1e-3, delta=1e-3):
    return CommitteeState(scale * jnp.eye(K), r * jnp.ones((K, M)) + delta * jnp.eye(K), jnp.ones(K))


# One compilation per shape, shared by the tests below: eta and the initial states are traced
# (arrays), so every call with the same shapes reuses it.
_ode_batch = eqx.filter_jit(jax.vmap(committee_ode, in_axes=(0, None, None, None, None, None, None)))
ETA = 0.5
TS_PLATEAU = jnp.linspace(0.0, 1200.0, 601)
DELTAS = jnp.array([1e-3, 1e-4, 1e-5, 1e-6])


@pytest.fixture(scope="module")
def plateau():
    """K = M = 2 erf from four symmetry-breaking perturbations delta of R (vmapped)."""
    s0 = jax.vmap(lambda d: _state0(delta=d))(DELTAS)
    return s0, _ode_batch(s0, T2, V2, TS_PLATEAU, jnp.asarray(ETA), jnp.asarray(0.0), jnp.asarray(0.0))


@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_ode_vmap_equals_loop_and_eps_g_is_closed_form(plateau):
    s0, tr = plateau
    # The batched and unbatched programs are compiled separately and may order floating-point
    # operations differently, so their adaptive step sequences can part at rounding level. Measured:
    # 1.4e-12 on entries of Q ~ 5e-9 (absolute; Q's scale is 0.25) under XLA -O0, equal otherwise.
    for i in (0, 3):  # unbatched calls: one compilation, the second call hits the cache
        one = committee_ode(jax.tree.map(lambda a: a[i], s0), T2, V2, TS_PLATEAU, ETA)
        np.testing.assert_allclose(tr.Q[i], one.Q, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(tr.eps_g[i], one.eps_g, rtol=1e-9, atol=1e-10)
    # the generalization error on the grid is the closed form of the saved order parameters
    j = 50
    np.testing.assert_allclose(tr.eps_g[0, j], generalization_error(tr.Q[0, j], tr.R[0, j], T2, tr.v[0, j], V2),
                               rtol=1e-12)
    assert np.all(np.diff(np.asarray(tr.eps_g[0])) < 1e-8)  # gradient flow in the small-eta regime


@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_plateau_fixed_point_and_escape_time(plateau):
    """K = M = 2 erf: the ODE sits on the symmetric fixed point (rmtjax.solve), and the escape time
    from a symmetry-breaking perturbation delta grows like log(1/delta)/growth_rate."""
    _, tr = plateau
    t = np.asarray(TS_PLATEAU)
    i = int(np.argmin(np.abs(t - 150.0)))
    guess = CommitteeState(tr.Q[-1, i], tr.R[-1, i], tr.v[-1, i])
    fp = committee_fixed_point(guess, T2, V2, ETA)
    assert bool(fp.ok) and float(fp.growth_rate) > 0
    # symmetric (unspecialised) plateau
    np.testing.assert_allclose(fp.state.R, jnp.full((K, M), fp.state.R[0, 0]), rtol=1e-8)
    eps = np.asarray(tr.eps_g)
    # the slowest-escaping run passes through the plateau height
    assert abs(eps[-1, i] - float(fp.eps_g)) < 0.02 * float(fp.eps_g)
    half = 0.5 * float(fp.eps_g)
    t_esc = []
    for e in eps:
        j = np.nonzero((e < half) & (t > 20))[0][0]
        t_esc.append(np.interp(half, [e[j], e[j - 1]], [t[j], t[j - 1]]))
    slope = np.polyfit(-np.log(np.asarray(DELTAS)), t_esc, 1)[0]
    assert abs(slope * float(fp.growth_rate) - 1) < 0.05, (slope, 1 / float(fp.growth_rate))
    # after the escape the student specialises and learns the teacher: eps_g -> 0
    assert np.all(eps[:, -1] < 1e-3 * float(fp.eps_g))


def test_gradients_of_rhs_and_eps_g_vs_finite_differences():
    """The ODE's vector field and eps_g are differentiable in eta and the order parameters
    (so is the diffrax solve built from them): jax.grad against central differences."""
    s0 = CommitteeState(jnp.array([[0.6, 0.2], [0.2, 0.4]]), jnp.array([[0.3, 0.1], [0.05, 0.2]]), jnp.array([1.0, 0.8]))
    w = jax.random.normal(jax.random.key(3), (4, 2, 2))

    def f(eta, q01):
        Q = s0.Q.at[0, 1].set(q01).at[1, 0].set(q01)
        d = committee_rhs(CommitteeState(Q, s0.R, s0.v), T2, V2, eta, 0.3, 0.2)
        return jnp.sum(w[0] * d.Q) + jnp.sum(w[1] * d.R) + jnp.sum(w[2, 0] * d.v)

    def e(q01, r10, v1):
        Q = s0.Q.at[0, 1].set(q01).at[1, 0].set(q01)
        return generalization_error(Q, s0.R.at[1, 0].set(r10), T2, s0.v.at[1].set(v1), V2)

    h = 1e-5
    for fn, x in ((f, (0.5, 0.2)), (e, (0.2, 0.05, 0.8))):
        fj = jax.jit(fn)
        g = jax.jit(jax.grad(fn, argnums=tuple(range(len(x)))))(*x)
        for i in range(len(x)):
            xp = list(x); xm = list(x)  # noqa: E702
            xp[i] += h
            xm[i] -= h
            fd = (float(fj(*xp)) - float(fj(*xm))) / (2 * h)
            assert abs(float(g[i]) - fd) < 1e-7 * max(1.0, abs(fd)), (fn.__name__, i, float(g[i]), fd)


def test_linear_network_ode_matches_closed_form_flow():
    """Linear student = teacher family, K = M = 1, v fixed: the flow is linear in (Q, R):
    dR/dt = eta (T - R), dQ/dt = 2 eta (R - Q) + eta^2 (Q - 2R + T) (+ noise^2)."""
    s0 = CommitteeState(jnp.array([[0.3]]), jnp.array([[0.1]]), jnp.ones(1))
    T, vt = jnp.array([[1.0]]), jnp.ones(1)
    d = committee_rhs(s0, T, vt, 0.4, noise_std=0.2, student=Identity())
    assert np.isclose(float(d.R[0, 0]), 0.4 * (1 - 0.1))
    assert np.isclose(float(d.Q[0, 0]), 2 * 0.4 * (0.1 - 0.3) + 0.16 * (0.3 - 0.2 + 1 + 0.04))


def test_quadrature_rhs_matches_closed_form_rhs():
    """The ODE's vector field with Gauss-Hermite integrals equals the closed-form one (erf)."""
    s0 = CommitteeState(jnp.array([[0.6, 0.2], [0.2, 0.4]]), jnp.array([[0.3, 0.1], [0.05, 0.2]]), jnp.array([1.0, 0.8]))
    a = committee_rhs(s0, T2, V2, 0.5, 0.3, 0.2)
    b = committee_rhs(s0, T2, V2, 0.5, 0.3, 0.2, method=GaussHermite(14))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=5e-5)


# ------------------------------------------------------------------------------------------
# simulation vs ODE
# ------------------------------------------------------------------------------------------

SEEDS, T_SIM, SAVES = 8, 4.0, 8
_sim = jax.jit(jax.vmap(functools.partial(simulate_committee, t_max=T_SIM, num_saves=SAVES),
                        in_axes=(0, 0, None, None, None, None, None, None)))


def _sim_vs_ode(N, eta=0.5, eta_v=0.0, noise=0.0, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    w0 = 0.5 * jax.random.normal(k1, (SEEDS, K, N))
    wt = jax.random.normal(k2, (M, N))
    sim = _sim(jax.random.split(k3, SEEDS), w0, jnp.ones(K), wt, jnp.ones(M), eta, eta_v, noise)
    s0 = CommitteeState(sim.Q[:, 0], sim.R[:, 0], sim.v[:, 0])
    T = wt @ wt.T / N
    ode = _ode_batch(s0, T, jnp.ones(M), sim.t[0], jnp.asarray(eta), jnp.asarray(eta_v), jnp.asarray(noise))
    return sim, ode


@pytest.fixture(scope="module")
def gaps():
    """Per-seed RMS gap in eps_g over the run, ODE started at each run's own initial order
    parameters, for N = 64, 256, 1024."""
    Ns = np.array([64, 256, 1024])
    out = []
    for N in Ns:
        sim, ode = _sim_vs_ode(int(N))
        out.append(np.sqrt(np.mean(np.asarray(sim.eps_g - ode.eps_g)[:, 1:] ** 2, axis=1)))
    return Ns, np.array(out)


@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_simulation_vs_ode_gap_shrinks_like_inverse_sqrt_n(gaps):
    """Weighted least-squares fit of log(mean gap) against log N: slope -1/2 within 4 standard
    errors of the fit (from the seed-to-seed spread), and within 0.2 of -1/2."""
    Ns, g = gaps
    m, se = g.mean(1), g.std(1, ddof=1) / math.sqrt(g.shape[1])
    x, y, w = np.log(Ns), np.log(m), (m / se) ** 2
    xb = np.sum(w * x) / np.sum(w)
    slope = np.sum(w * (x - xb) * y) / np.sum(w * (x - xb) ** 2)
    slope_se = 1 / math.sqrt(np.sum(w * (x - xb) ** 2))
    assert abs(slope + 0.5) < max(4 * slope_se, 0.05) and abs(slope + 0.5) < 0.2, (slope, slope_se, m)


@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_noise_and_trainable_second_layer_simulation_vs_ode():
    sim, ode = _sim_vs_ode(1024, eta=0.8, eta_v=0.8, noise=0.5, seed=1)
    for a, b in ((sim.eps_g, ode.eps_g), (sim.v[..., 0], ode.v[..., 0]), (sim.R[..., 0, 0], ode.R[..., 0, 0])):
        d = np.asarray(a - b)[:, 1:]  # per seed and time
        se = d.std(0, ddof=1) / math.sqrt(d.shape[0])
        # within the finite-N fluctuation (5 SE) plus the O(1/N) bias of the ODE
        assert np.all(np.abs(d.mean(0)) <= 5 * se + 2e-3), (d.mean(0), se)


def test_bad_input_raises_value_error_naming_the_parameter():
    ts = jnp.linspace(0.0, 1.0, 3)
    s0 = _state0()
    with pytest.raises(ValueError, match="state0.Q must not be empty"):
        committee_ode(CommitteeState(jnp.zeros((0, 0)), jnp.zeros((0, 2)), jnp.zeros(0)), T2, V2, ts, 0.5)
    with pytest.raises(ValueError, match="T must not be empty"):
        committee_ode(CommitteeState(jnp.eye(2), jnp.zeros((2, 0)), V2), jnp.zeros((0, 0)), jnp.zeros(0), ts, 0.5)
    for eta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eta must be finite and > 0"):
            committee_ode(s0, T2, V2, ts, eta)
        with pytest.raises(ValueError, match="eta must be finite and > 0"):
            simulate_committee(jax.random.key(0), jnp.ones((2, 10)), V2, jnp.ones((2, 10)), V2, eta, t_max=1.0,
                               num_saves=1)
    for name, bad in (("Q", CommitteeState(jnp.full((2, 2), jnp.nan), s0.R, s0.v)),
                      ("R", CommitteeState(s0.Q, s0.R.at[0, 0].set(jnp.inf), s0.v)),
                      ("v", CommitteeState(s0.Q, s0.R, s0.v.at[1].set(jnp.nan)))):
        with pytest.raises(ValueError, match=f"state0.{name} must be finite"):
            committee_ode(bad, T2, V2, ts, 0.5)
    with pytest.raises(ValueError, match="w0 must be finite"):
        simulate_committee(jax.random.key(0), jnp.full((2, 10), jnp.nan), V2, jnp.ones((2, 10)), V2, 0.5, t_max=1.0,
                           num_saves=1)
    with pytest.raises(ValueError, match="eta_v"):
        committee_ode(s0, T2, V2, ts, 0.5, eta_v=-0.1)
    with pytest.raises(ValueError, match="noise_std"):
        committee_ode(s0, T2, V2, ts, 0.5, noise_std=-0.1)
    with pytest.raises(ValueError, match="state0.R must have shape"):
        committee_ode(CommitteeState(s0.Q, jnp.zeros((2, 3)), s0.v), T2, V2, ts, 0.5)
    with pytest.raises(ValueError, match="ts must hold at least 2"):
        committee_ode(s0, T2, V2, jnp.zeros(1), 0.5)
    with pytest.raises(ValueError, match="w_teacher"):
        simulate_committee(jax.random.key(0), jnp.ones((2, 10)), V2, jnp.ones((2, 11)), V2, 0.5, t_max=1.0, num_saves=1)
    with pytest.raises(ValueError, match="t_max"):
        simulate_committee(jax.random.key(0), jnp.ones((2, 10)), V2, jnp.ones((2, 10)), V2, 0.5, t_max=0.0, num_saves=1)
    with pytest.raises(ValueError, match="key must be a JAX PRNG key"):
        simulate_committee(1.5, jnp.ones((2, 10)), V2, jnp.ones((2, 10)), V2, 0.5, t_max=1.0, num_saves=1)
    with pytest.raises(ValueError, match="student must be an activation"):
        committee_rhs(s0, T2, V2, 0.5, student=jnp.tanh)
    with pytest.raises(ValueError, match="method: GaussHermite"):
        committee_rhs(s0, T2, V2, 0.5, method=GaussHermite(100))
    with pytest.raises(ValueError, match="num_student must be in"):
        committee_integrals(jnp.eye(3), Relu(), Relu(), num_student=3)
    with pytest.raises(ValueError, match="C must be symmetric"):
        committee_integrals(jnp.eye(3).at[0, 1].set(0.5), Relu(), Relu(), num_student=1)
    # under jit a traced bad eta is caught at run time (the vector field shares the ODE's check)
    with pytest.raises(Exception, match="eta must be finite and > 0"):
        jax.jit(lambda e: committee_rhs(s0, T2, V2, e).Q)(-1.0)


def _raises_eagerly_and_under_jit(fn, args, match):
    """``fn(*args)`` raises ValueError(match) eagerly, and under ``jax.jit`` (traced arguments) the
    compiled program stops with the same message."""
    with pytest.raises(ValueError, match=match):
        fn(*args)
    with pytest.raises(Exception, match=match) as info:
        jax.block_until_ready(jax.jit(fn)(*args))
    assert isinstance(info.value, (ValueError, jax.errors.JaxRuntimeError, eqx.EquinoxRuntimeError))


def test_issue_12_order_parameters_must_be_a_covariance():
    """Issue 12: ``generalization_error`` with Q = -I returned -2.67. Q, T symmetric PSD and the
    covariance [[Q, R], [R^T, T]] PSD are required, eagerly and under jit."""
    _raises_eagerly_and_under_jit(generalization_error, (-jnp.eye(2), jnp.eye(2), jnp.eye(2), jnp.ones(2), jnp.ones(2)),
                                  "Q must be positive semi-definite")
    _raises_eagerly_and_under_jit(generalization_error, (jnp.eye(2), jnp.eye(2), -jnp.eye(2), jnp.ones(2), jnp.ones(2)),
                                  "T must be positive semi-definite")
    # asymmetric Q: reported as asymmetric, not as "not PSD"
    _raises_eagerly_and_under_jit(generalization_error, (jnp.array([[1.0, 0.5], [0.0, 1.0]]), jnp.zeros((2, 2)),
                                                         jnp.eye(2), jnp.ones(2), jnp.ones(2)),
                                  r"Q must be symmetric \(max \|Q - Q\^T\| <= 1.0e-06 max \|Q\|\)")
    # order parameters measured in float32 (rounding ~1e-7) are accepted in float64
    Q32 = jnp.array([[0.5, 0.1], [0.1 + 3e-8, 0.5]])
    assert float(generalization_error(Q32, 0.1 * jnp.eye(2), jnp.eye(2), jnp.ones(2), jnp.ones(2))) > 0
    # |R| too large for Q, T = I: no vectors have these overlaps
    _raises_eagerly_and_under_jit(generalization_error, (jnp.eye(2), 2 * jnp.eye(2), jnp.eye(2), jnp.ones(2),
                                                         jnp.ones(2)),
                                  r"the covariance \[\[Q, R\], \[R\^T, T\]\] of the local fields must be positive")
    # the boundary (student == teacher, a singular covariance) is fine: eps_g = 0
    assert float(generalization_error(jnp.eye(2), jnp.eye(2), jnp.eye(2), jnp.ones(2), jnp.ones(2))) == 0.0
    assert float(jax.jit(generalization_error)(jnp.eye(2), jnp.eye(2), jnp.eye(2), jnp.ones(2), jnp.ones(2))) == 0.0


TS3 = jnp.linspace(0.0, 2.0, 3)  # one shape for the short solves below: one compilation


def test_issue_12_committee_ode_needs_increasing_finite_times():
    """Issue 12: ``committee_ode`` integrated decreasing times silently."""
    s0 = _state0()
    ode = jax.jit(lambda ts: committee_ode(s0, T2, V2, ts, 0.5).eps_g)  # compiled once for the three
    for ts in (jnp.array([2.0, 1.0, 0.0]), jnp.array([0.0, 1.0, 1.0]), jnp.array([0.0, 1.0, jnp.inf])):
        with pytest.raises(ValueError, match="ts must be finite and strictly increasing"):
            committee_ode(s0, T2, V2, ts, 0.5)
        with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="ts must be finite and strictly increasing"):
            jax.block_until_ready(ode(ts))
    np.testing.assert_allclose(ode(TS3), committee_ode(s0, T2, V2, TS3, 0.5).eps_g, rtol=1e-12)


def test_integration_failure_is_a_clear_error():
    """A solve that cannot reach ts[-1] raises a ValueError naming eta and max_steps (it used to
    return inf-filled trajectories under throw=False, or diffrax's own message)."""
    # max_steps = 1000: the same failure as at the default 100000, 100x fewer steps to reach it (the
    # default ran 9 s before failing)
    with pytest.raises(ValueError, match="could not integrate up to ts.*eta.*max_steps = 1000 "):
        committee_ode(_state0(), T2, V2, TS3, 1e30, max_steps=1000)
    with pytest.raises(ValueError, match="rtol must be None or a finite number > 0"):
        committee_ode(_state0(), T2, V2, TS3, 0.5, rtol=-1.0)


def test_fixed_point_rejects_unphysical_roots():
    """A guess far from any physical fixed point: Newton fails or leaves the PSD cone; ok is False
    with throw=False and a ValueError naming the guess with throw=True."""
    g = CommitteeState(jnp.array([[0.6, 0.4], [0.4, 0.6]]), jnp.full((2, 2), 0.5), jnp.ones(2))
    fp = committee_fixed_point(g, T2, V2, 0.1, throw=False)
    assert not bool(fp.ok)
    with pytest.raises(ValueError, match="committee_fixed_point: Newton from guess"):
        committee_fixed_point(g, T2, V2, 0.1)
    with pytest.raises(ValueError, match="guess.Q must be symmetric"):
        committee_fixed_point(g._replace(Q=g.Q.at[0, 1].set(0.0)), T2, V2, 0.1)


def test_simulation_progress_bar(capsys):
    """progress=True: a tqdm bar over the saves, advanced once per save even under vmap (the
    vmapped copies report the same save index)."""
    def sample(k, n):
        X = jax.random.normal(k, (n, 20))
        return X, X[:, 0]

    run = jax.jit(jax.vmap(functools.partial(
        online_sgd, v0=jnp.ones(1), eta=0.1, eta_v=0.0, sample=sample, observe=lambda w, v: w[0, 0],
        student=Identity(), schedule=(1, 4), num_saves=3, progress="sgd-bar")))
    rec = jax.block_until_ready(run(jax.random.split(jax.random.key(5), 2), jnp.zeros((2, 1, 20))))
    assert rec.shape == (2, 4)
    assert "sgd-bar" in capsys.readouterr().err


def test_relu_repeated_fields_are_exact():
    """ReLU I4 entries on repeated fields are reduced exactly (theta theta = theta, theta relu =
    relu): E[relu(u_k)^2] = C_kk / 2, E[theta_k theta_k relu_k relu_c] = E[relu_k relu_c] = I2[k, c],
    E[theta_k theta_l relu_k relu_l] = I2[k, l]. The other reduced kinds agree with the former
    four-field reduction with a 1e-10 diagonal jitter to 1e-5 (measured 2.9e-6; that jitter was
    5e-5 off on E[relu(u_k)^2], hence the exact forms)."""
    C = jnp.asarray(_cov(0))
    ints = committee_integrals(C, Relu(), Relu(), num_student=K, method=ClosedForm())
    i4, i2 = np.asarray(ints.i4), np.asarray(ints.i2)
    for k in range(K):
        assert i4[k, k, k, k] == pytest.approx(0.5 * float(C[k, k]), rel=1e-14)
        for c in range(K + M):
            assert i4[k, k, k, c] == pytest.approx(i2[k, c], rel=1e-13)
    assert i4[0, 1, 0, 1] == pytest.approx(i2[0, 1], rel=1e-13)
    idx4 = _tuples(K, K + M)[2]
    jittered = np.asarray(jax.jit(_relu_i4)(_sub(C, idx4) + 1e-10 * jnp.mean(jnp.diagonal(C)) * jnp.eye(4)[None]))
    several = np.array([len(set(row)) > 1 for row in idx4.tolist()])  # all but E[relu(u_k)^2]
    np.testing.assert_allclose(i4.ravel()[several], jittered[several], atol=1e-5)


# ------------------------------------------------------------------------------------------
# float32 (x64 off): every solver with dtype-scaled tolerances, against the float64 values
# ------------------------------------------------------------------------------------------

F32_GUESS = (np.array([[0.4, 0.3], [0.3, 0.4]]), np.full((2, 2), 0.42), np.ones(2))
F32_STATE = (0.25 * np.eye(2), 1e-3 * np.ones((2, 2)) + 1e-3 * np.eye(2), np.ones(2))
F32_SINGULAR_C = np.array([[1.0, 0.5, 1.0], [0.5, 1.0, 0.5], [1.0, 0.5, 1.0]])  # student 0 == the teacher


def _float32_quantities():
    """The same computations in the current precision, from the same float64 NumPy inputs."""
    s0 = CommitteeState(*(jnp.asarray(a) for a in F32_STATE))
    # onto the plateau; ts of TS3's shape: in float64 the program of the tests above (one compilation)
    ode = committee_ode(s0, jnp.eye(2), jnp.ones(2), jnp.linspace(0.0, 20.0, 3), 0.5)
    fp = committee_fixed_point(CommitteeState(*(jnp.asarray(a) for a in F32_GUESS)), jnp.eye(2), jnp.ones(2), 0.1)
    relu = committee_integrals(jnp.asarray(F32_SINGULAR_C), Relu(), Relu(), num_student=2)
    return {"ode": ode.eps_g, "fp": jnp.stack([fp.eps_g, fp.growth_rate]),
            "relu": jnp.concatenate([a.ravel() for a in relu])}, fp.ok


@pytest.fixture(scope="module")
def float64_values():
    out, ok = _float32_quantities()
    assert bool(ok)
    return {k: np.asarray(v) for k, v in out.items()}


def test_float32_solvers_match_float64(float64_values, float32_mode):
    """With x64 off the ODE (Tsit5 at rtol 1.5e-5 / atol 1.9e-6), the Newton fixed point and the
    ReLU integrals on a singular covariance run in float32 and agree with float64. Measured
    (this machine): eps_g(t) to 2.6e-6 absolute (the step control's atol is 1.9e-6 in float32),
    plateau height to 2.4e-6 relative, ReLU integrals to 7e-8 absolute; tolerances about 10x. The
    growth rate (0.00653) is the largest real part of the eigenvalues of a Jacobian of norm 0.20, so
    float32 rounding of the Jacobian's entries moves it by some eps * 0.2 absolute, not relative to
    its own small size: measured 1.6e-8 with the tests' earlier XLA flags and 4.6e-7 (19 eps * 0.2)
    once --xla_cpu_parallel_codegen_split_count=1 was added to them; tolerance 2e-6 (84 eps * 0.2)."""
    out, ok = _float32_quantities()
    assert bool(ok)
    assert all(v.dtype == jnp.float32 for v in out.values())
    np.testing.assert_allclose(np.asarray(out["ode"], np.float64), float64_values["ode"], rtol=0, atol=3e-5)
    np.testing.assert_allclose(float(out["fp"][0]), float64_values["fp"][0], rtol=3e-5)  # eps_g
    np.testing.assert_allclose(float(out["fp"][1]), float64_values["fp"][1], rtol=0, atol=2e-6)  # growth rate
    np.testing.assert_allclose(np.asarray(out["relu"], np.float64), float64_values["relu"], atol=1e-6)


def _sgd_sample(k, n):
    x = jax.random.normal(k, (n, 8))
    return x, x[:, 0]


def _sgd_observe(w, v):
    return w @ w.T / w.shape[1], v


def test_repeated_eager_calls_do_not_recompile():
    """Same shapes, new values (learning rates, states, guesses): no new compilation. And the first
    eager call with new shapes (K = 3 students, M = 1 teacher, 4 save times) compiles few
    one-operation programs: the numerical work runs in functions jitted once at module level
    (measured 2026-12-07 on the committee_rhs, committee_ode, generalization_error sequence after
    the calls above: 32 before, 1 after, a conversion of the validation). Of the repeated calls,
    online_sgd's failed before (its scans, executed eagerly, were compiled on every call)."""
    s0 = _state0()
    ts = TS3
    g = CommitteeState(jnp.array([[0.4, 0.3], [0.3, 0.4]]), jnp.full((2, 2), 0.42), jnp.ones(2))
    committee_ode(s0, T2, V2, ts, 0.5)
    committee_fixed_point(g, T2, V2, 0.1)
    generalization_error(s0.Q, s0.R, T2, s0.v, V2)
    committee_rhs(s0, T2, V2, 0.5, 0.1, 0.1)
    w0 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8)))
    sgd = functools.partial(online_sgd, student=Erf(), schedule=(1, 4), num_saves=2)
    sgd(jax.random.key(0), w0, jnp.ones(2), 0.3, 0.0, _sgd_sample, _sgd_observe)
    s1, ts1, g1, Q1 = _state0(scale=0.3), ts + 1.0, g._replace(R=jnp.full((2, 2), 0.41)), 0.5 * s0.Q
    w1 = 0.5 * w0
    with Programs() as c:  # new values, same structure: the compiled cores are reused
        committee_ode(s1, T2, V2, ts1, 0.7)
        committee_fixed_point(g1, T2, V2, 0.12)
        generalization_error(Q1, s0.R, T2, s0.v, V2)
        committee_rhs(s1, T2, V2, 0.7, 0.2, 0.3)
        # executed eagerly, online_sgd's scans (bodies: new closures) compiled on every call (found
        # 2026-12-07; fails before the loop was jitted at module level)
        sgd(jax.random.key(1), w1, jnp.ones(2), 0.4, 0.1, _sgd_sample, _sgd_observe)
    assert c.n == 0, f"{c.n} compilations: {c.names}"
    s3 = CommitteeState(0.25 * jnp.eye(3), jnp.full((3, 1), 1e-3), jnp.ones(3))
    T1, V1 = jnp.eye(1), jnp.ones(1)
    with Programs() as first:
        committee_rhs(s3, T1, V1, 0.5, 0.1, 0.1)
        committee_ode(s3, T1, V1, jnp.linspace(0.0, 1.5, 4), 0.5, 0.1, 0.1)
        generalization_error(s3.Q, s3.R, T1, s3.v, V1)
    assert len(first.one_op) <= 8, f"{len(first.one_op)} one-operation programs: {first.one_op}"
