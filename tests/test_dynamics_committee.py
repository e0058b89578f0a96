"""Saad-Solla committee-machine ODEs: Gaussian integrals, eps_g, plateau, simulation agreement."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from rmtjax.activations import Erf, Identity, Relu, Tanh
from rmtjax.dynamics._committee import (
    SAAD_SOLLA_ERF,
    CommitteeState,
    committee_fixed_point,
    committee_ode,
    committee_rhs,
    generalization_error,
)
from rmtjax.dynamics._integrals import committee_integrals
from rmtjax.dynamics._simulation import simulate_committee
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


ACTS = {"erf": SAAD_SOLLA_ERF, "relu": Relu(), "linear": Identity()}


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


@pytest.mark.parametrize("name", ["erf", "linear", "relu"])
def test_quadrature_vs_closed_forms(name):
    """Gauss-Hermite integrals converge to the closed forms: spectrally for erf and linear; for
    ReLU (kinks, steps) the error decreases with the degree and is small at deg 40 in 2-d/3-d."""
    C = jnp.asarray(_cov(1))
    act = ACTS[name]
    cf = committee_integrals(C, act, act, num_student=K, method=ClosedForm())
    if name != "relu":
        gh = committee_integrals(C, act, act, num_student=K, method=GaussHermite(16))
        for a, b in zip(cf, gh):
            np.testing.assert_allclose(a, b, atol=2e-4 if name == "erf" else 1e-12)
        return
    errs = []
    for deg in (10, 40):
        gh = committee_integrals(C, act, act, num_student=K, method=GaussHermite(deg))
        errs.append(float(jnp.max(jnp.abs(gh.i2 - cf.i2))))
    assert errs[1] < errs[0] and errs[1] < 2e-3


def test_generic_activation_uses_quadrature_and_converges():
    """tanh has no closed form: Gauss-Hermite of increasing degree converges (slowly: tanh's
    poles near the real axis limit Gauss-Hermite to sub-exponential convergence)."""
    C = 0.3 * jnp.asarray(_cov(2))
    r = {deg: committee_integrals(C, Tanh(), Tanh(), num_student=K, method=GaussHermite(deg)) for deg in (8, 16, 24)}
    err = [max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(r[deg], r[24])) for deg in (8, 16)]
    assert err[1] < 0.2 * err[0] and err[1] < 1e-3, err
    with pytest.raises(TypeError, match="closed-form"):
        committee_integrals(C, Tanh(), Tanh(), num_student=K, method=ClosedForm())


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


def _state0(scale=0.25, r=1e-3):
    return CommitteeState(scale * jnp.eye(K), r * jnp.ones((K, M)) + 1e-3 * jnp.eye(K), jnp.ones(K))


_ode = eqx.filter_jit(committee_ode)


def test_ode_eager_equals_jit_and_vmap_equals_loop():
    ts = jnp.linspace(0.0, 20.0, 5)
    s0 = _state0()
    etas = jnp.array([0.3, 0.8])
    eager = committee_ode(s0, T2, V2, ts, 0.3)
    jitted = jax.jit(lambda e: committee_ode(s0, T2, V2, ts, e))(0.3)
    np.testing.assert_allclose(eager.eps_g, jitted.eps_g, rtol=1e-12)
    vm = jax.jit(jax.vmap(lambda e: committee_ode(s0, T2, V2, ts, e)))(etas)
    for i, e in enumerate(etas):
        np.testing.assert_allclose(vm.Q[i], committee_ode(s0, T2, V2, ts, e).Q, rtol=1e-10, atol=1e-13)
    # the generalization error on the grid is the closed form of the saved order parameters
    np.testing.assert_allclose(eager.eps_g[-1], generalization_error(eager.Q[-1], eager.R[-1], T2, eager.v[-1], V2))


def test_ode_gradient_wrt_eta_vs_finite_differences():
    ts = jnp.linspace(0.0, 5.0, 3)
    s0 = _state0()
    f = jax.jit(lambda e: committee_ode(s0, T2, V2, ts, e, rtol=1e-11, atol=1e-13).eps_g[-1])
    g = float(jax.grad(f)(0.5))
    h = 1e-4
    fd = (float(f(0.5 + h)) - float(f(0.5 - h))) / (2 * h)
    assert np.isfinite(g) and abs(g - fd) < 1e-5 * max(1.0, abs(fd))


def test_linear_network_ode_matches_closed_form_flow():
    """Linear student = teacher family, K = M = 1, v fixed: the flow is linear in (Q, R):
    dR/dt = eta (T - R), dQ/dt = 2 eta (R - Q) + eta^2 (Q - 2R + T) (+ noise^2)."""
    s0 = CommitteeState(jnp.array([[0.3]]), jnp.array([[0.1]]), jnp.ones(1))
    T, vt = jnp.array([[1.0]]), jnp.ones(1)
    d = committee_rhs(s0, T, vt, 0.4, noise_std=0.2, student=Identity())
    assert np.isclose(float(d.R[0, 0]), 0.4 * (1 - 0.1))
    assert np.isclose(float(d.Q[0, 0]), 2 * 0.4 * (0.1 - 0.3) + 0.16 * (0.3 - 0.2 + 1 + 0.04))


def test_plateau_fixed_point_and_escape_time():
    """K = M = 2 erf: the ODE sits on the symmetric fixed point (rmtjax.solve), and the escape time
    from a symmetry-breaking perturbation delta grows like log(1/delta)/growth_rate."""
    eta = 0.5
    ts = jnp.linspace(0.0, 1200.0, 2401)
    deltas = jnp.array([1e-3, 1e-4, 1e-5, 1e-6])

    def run(delta):
        s0 = CommitteeState(0.25 * jnp.eye(K), 1e-3 * jnp.ones((K, M)) + delta * jnp.eye(K), jnp.ones(K))
        return committee_ode(s0, T2, V2, ts, eta)

    tr = jax.jit(jax.vmap(run))(deltas)
    i = int(np.argmin(np.abs(np.asarray(ts) - 150.0)))
    guess = CommitteeState(tr.Q[-1, i], tr.R[-1, i], tr.v[-1, i])
    fp = committee_fixed_point(guess, T2, V2, eta)
    assert bool(fp.ok) and float(fp.growth_rate) > 0
    # symmetric (unspecialised) plateau
    np.testing.assert_allclose(fp.state.R, jnp.full((K, M), fp.state.R[0, 0]), rtol=1e-8)
    eps = np.asarray(tr.eps_g)
    # the slowest-escaping run passes through the plateau height
    assert abs(eps[-1, i] - float(fp.eps_g)) < 0.02 * float(fp.eps_g)
    half, t = 0.5 * float(fp.eps_g), np.asarray(ts)
    t_esc = []
    for e in eps:
        j = np.nonzero((e < half) & (t > 20))[0][0]
        t_esc.append(np.interp(half, [e[j], e[j - 1]], [t[j], t[j - 1]]))
    slope = np.polyfit(-np.log(np.asarray(deltas)), t_esc, 1)[0]
    assert abs(slope * float(fp.growth_rate) - 1) < 0.05, (slope, 1 / float(fp.growth_rate))


_sim = jax.jit(jax.vmap(simulate_committee, in_axes=(0, 0, None, None, None, None, None, None)),
               static_argnames=("t_max", "num_saves", "student", "teacher"))


def _sim_vs_ode(N, seeds, t_max, eta=0.5, eta_v=0.0, noise=0.0, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    w0 = 0.5 * jax.random.normal(k1, (seeds, K, N))
    wt = jax.random.normal(k2, (M, N))
    sim = _sim(jax.random.split(k3, seeds), w0, jnp.ones(K), wt, jnp.ones(M), eta, eta_v, noise,
               t_max=t_max, num_saves=8)
    s0 = CommitteeState(sim.Q[:, 0], sim.R[:, 0], sim.v[:, 0])
    T = wt @ wt.T / N
    ode = jax.vmap(lambda s: _ode(s, T, jnp.ones(M), sim.t[0], eta, eta_v, noise))(s0)
    return sim, ode


def test_simulation_vs_ode_gap_shrinks_like_inverse_sqrt_n():
    """ODE started at each run's own initial order parameters; the RMS gap in eps_g over the run
    (mean over seeds) is fitted against N: slope -1/2 within the fit's uncertainty."""
    Ns, gaps = [100, 400, 1600], []
    for N in Ns:
        sim, ode = _sim_vs_ode(N, seeds=8, t_max=4.0)
        gaps.append(float(jnp.mean(jnp.sqrt(jnp.mean((sim.eps_g - ode.eps_g) ** 2, axis=1)))))
    slope = np.polyfit(np.log(Ns), np.log(gaps), 1)[0]
    assert -0.75 < slope < -0.3, (slope, gaps)


def test_noise_and_trainable_second_layer_simulation_vs_ode():
    sim, ode = _sim_vs_ode(1000, seeds=8, t_max=6.0, eta=0.8, eta_v=0.8, noise=0.5, seed=1)
    for a, b in ((sim.eps_g, ode.eps_g), (sim.v[..., 0], ode.v[..., 0]), (sim.R[..., 0, 0], ode.R[..., 0, 0])):
        d = np.asarray(a - b)[:, 1:]  # per seed and time
        se = d.std(0, ddof=1) / math.sqrt(d.shape[0])
        # within the finite-N fluctuation (5 SE) plus the O(1/N) bias of the ODE
        assert np.all(np.abs(d.mean(0)) <= 5 * se + 2e-3), (d.mean(0), se)


def test_quadrature_ode_matches_closed_form_ode():
    ts = jnp.linspace(0.0, 10.0, 3)
    s0 = _state0()
    a = committee_ode(s0, T2, V2, ts, 0.5)
    b = committee_ode(s0, T2, V2, ts, 0.5, method=GaussHermite(14))
    np.testing.assert_allclose(a.eps_g, b.eps_g, rtol=1e-4)


def test_bad_input_raises_value_error_naming_the_parameter():
    ts = jnp.linspace(0.0, 1.0, 3)
    s0 = _state0()
    with pytest.raises(ValueError, match="K >= 1"):
        committee_ode(CommitteeState(jnp.zeros((0, 0)), jnp.zeros((0, 2)), jnp.zeros(0)), T2, V2, ts, 0.5)
    with pytest.raises(ValueError, match="M >= 1"):
        committee_ode(CommitteeState(jnp.eye(2), jnp.zeros((2, 0)), V2), jnp.zeros((0, 0)), jnp.zeros(0), ts, 0.5)
    for eta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eta must be finite and > 0"):
            committee_ode(s0, T2, V2, ts, eta)
    with pytest.raises(ValueError, match="initial condition Q"):
        committee_ode(CommitteeState(jnp.full((2, 2), jnp.nan), s0.R, s0.v), T2, V2, ts, 0.5)
    with pytest.raises(ValueError, match="eta_v"):
        committee_ode(s0, T2, V2, ts, 0.5, eta_v=-0.1)
    with pytest.raises(ValueError, match="noise_std"):
        committee_ode(s0, T2, V2, ts, 0.5, noise_std=-0.1)
    with pytest.raises(ValueError, match="R must have shape"):
        committee_ode(CommitteeState(s0.Q, jnp.zeros((2, 3)), s0.v), T2, V2, ts, 0.5)
    with pytest.raises(ValueError, match="w_teacher"):
        simulate_committee(jax.random.key(0), jnp.ones((2, 10)), V2, jnp.ones((2, 11)), V2, 0.5, t_max=1.0, num_saves=1)
    with pytest.raises(ValueError, match="t_max"):
        simulate_committee(jax.random.key(0), jnp.ones((2, 10)), V2, jnp.ones((2, 10)), V2, 0.5, t_max=0.0, num_saves=1)
    # under jit a traced bad eta is caught at run time
    with pytest.raises(Exception, match="eta must be finite and > 0"):
        jax.jit(lambda e: committee_ode(s0, T2, V2, ts, e).eps_g)(-1.0)
