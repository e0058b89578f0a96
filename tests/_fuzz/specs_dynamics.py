"""Fuzz entries for rmtjax.dynamics (online-SGD ODEs, committee integrals, hidden manifold).

The strategies here (PSD matrices, PRNG keys, activations) are shared with ``specs_data`` and
``specs_finite``. The ODE, fixed-point and simulation entries compile a solver or a scan
(several seconds each on this machine), so they draw few examples and are marked slow.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from rmtjax import dynamics
from rmtjax.activations import Erf, Relu, Sign, Tanh

from .harness import BAD_TYPES, NAN, Entry, array, number, sample, static_int

# ---------------------------------------------------------------------------------------------
# shared strategies
# ---------------------------------------------------------------------------------------------


def psd(n: int, *, scale: float = 1.0, bad: bool = True) -> st.SearchStrategy:
    """Symmetric positive semi-definite ``(n, n)`` matrices ``A A^T / n`` (sometimes singular), or
    (if ``bad``) asymmetric, indefinite, non-finite, complex, wrong-rank and empty variants."""

    def valid(args):
        seed, rank = args
        a = np.random.default_rng(seed).normal(size=(n, rank))
        return scale * a @ a.T / rank

    base = st.tuples(st.integers(0, 2**16), st.sampled_from([n, n, n + 2, max(1, n - 1)])).map(valid)
    if not bad:
        return base

    def poison(a, v):
        a = a.copy()
        a[0, 0] = v
        return a

    bads = st.one_of(
        base.map(lambda a: a + np.triu(np.ones_like(a), 1)),  # asymmetric
        base.map(lambda a: -a - np.eye(n)),  # negative definite
        st.tuples(base, st.sampled_from([NAN, np.inf, 1e30])).map(lambda t: poison(*t)),
        base.map(lambda a: a.astype(complex)),
        base.map(lambda a: a[0]),
        st.just(np.zeros((0, 0))),
    )
    return st.one_of(base, base, base, bads)


def keys() -> st.SearchStrategy:
    """PRNG keys, and things that are not one key (floats, None, a batch of keys)."""
    good = st.integers(0, 2**16).map(jax.random.key)
    return st.one_of(good, good, good, st.sampled_from([1.5, None, "key"]),
                     st.just(jax.random.split(jax.random.key(0), 2)))


ACTIVATION_LIST = [Erf(b=1 / math.sqrt(2)), Erf(), Relu(), Tanh()]
ACTIVATIONS = st.sampled_from(ACTIVATION_LIST)
ACTIVATIONS_OR_BAD = st.one_of(ACTIVATIONS, ACTIVATIONS, st.sampled_from([jnp.tanh, "relu", None]))


def positive_rate(hi: float = 2.0) -> st.SearchStrategy:
    """Learning rates: mostly in (0, hi], plus zero, negative, NaN, inf, huge and wrong types."""
    return number(1e-3, hi)


def finite_array(shape, lo=-1.0, hi=1.0):
    return array(shape, lo, hi)


def _committee(**more) -> dict:
    """A valid committee state (the shapes and ranges the entries draw), for ``valid=``: the fields'
    covariance ``[[Q, R], [R^T, I]]`` (teacher overlap ``T = I``) is positive definite, its Schur
    complement being ``Q - R R^T = I / 2``."""
    R = sample((2, 2), -0.3, 0.3)
    return {"Q": 0.5 * np.eye(2) + R @ R.T, "R": R, "v": sample((2,), -1.0, 1.0, seed=1), **more}


def _is_sym_psd(a, tol=1e-8):
    a = np.asarray(a)
    return np.allclose(a, a.T, atol=tol) and np.linalg.eigvalsh(0.5 * (a + a.T)).min() >= -tol * max(1.0, np.abs(a).max())


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def _eps_nonnegative(kwargs, out):
    assert float(out) >= -1e-12, f"eps_g = {float(out)} < 0 (it is half a mean square)"


def _integrals_symmetric(kwargs, out):
    i2 = np.asarray(out.i2 if hasattr(out, "i2") else out)
    np.testing.assert_allclose(i2, i2.T, rtol=1e-9, atol=1e-12, err_msg="I2 must be symmetric")


def _ode_starts_at_state(kwargs, out):
    eg = dynamics.generalization_error(kwargs["Q"], kwargs["R"], np.eye(2), kwargs["v"], np.ones(2))
    np.testing.assert_allclose(out.eps_g[0], eg, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(np.asarray(out.t)) > 0)


def _fixed_point(Q, R, eta):
    """The fixed point with its vanishing quantities (eps_g and the residual, ~1e-17 at an exact
    root) offset by 1, so that eager and jit are compared at the scale of the order parameters
    instead of that of rounding noise."""
    fp = dynamics.committee_fixed_point(dynamics.CommitteeState(Q, R, np.ones(2)), np.eye(2), np.ones(2), eta,
                                        throw=False)
    return {"Q": fp.state.Q, "R": fp.state.R, "growth_rate": fp.growth_rate, "ok": fp.ok,
            "eps_g_plus_1": 1.0 + fp.eps_g, "residual_plus_1": 1.0 + fp.residual}


def _fixed_point_residual(kwargs, out):
    if bool(out["ok"]):
        assert float(out["residual_plus_1"]) - 1.0 < 1e-6, float(out["residual_plus_1"]) - 1.0
        assert float(out["eps_g_plus_1"]) >= 1.0 - 1e-12
        C = np.block([[np.asarray(out["Q"]), np.asarray(out["R"])], [np.asarray(out["R"]).T, np.eye(2)]])
        assert np.linalg.eigvalsh(C).min() > -1e-8, "an ok fixed point must be physical (PSD covariance)"


def _moments_psd(kwargs, out):
    assert _is_sym_psd(out.omega, 1e-8), "Omega must be a covariance"


def _densities_sum(kwargs, out):
    np.testing.assert_allclose(np.sum(np.asarray(out.mu)), 1.0, rtol=1e-12)


def _distance_range(kwargs, out):
    assert 0.0 <= float(out.distance) <= 1.0 and 0.0 <= float(out.null) <= 1.0


# ---------------------------------------------------------------------------------------------
# fixed inputs (built lazily: importing the specs must not start the backend)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _setup():
    rng = np.random.default_rng(0)
    N, D = 12, 4
    gen = dynamics.Generator(jnp.asarray(rng.normal(size=(N, D))), Sign())
    mom = dynamics.analytic_moments(gen)
    w, wt = jnp.asarray(rng.normal(size=(2, N))), jnp.asarray(rng.normal(size=(2, D)))
    dens = dynamics.hidden_manifold_densities(mom, w, wt, num_bins=3)
    return gen, mom, w, wt, dens


def _sample(k, n):
    x = jax.random.normal(k, (n, 8))
    return x, x[:, 0]


def _observe(w, v):
    return w @ w.T / w.shape[1], v


TS = st.one_of(*[st.just(np.linspace(0.0, 2.0, 3))] * 4,
               st.sampled_from([np.array([2.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0]), np.array([0.0, np.inf, 1.0]),
                                np.array([0.0]), np.array([0.0, 1.0 + 1j, 2.0]), np.zeros((3, 1))]))


ENTRIES = [
    Entry("dynamics.saad_solla_erf", lambda: dynamics.saad_solla_erf(), {}, max_examples=1),
    Entry("dynamics.generalization_error",
          lambda Q, R, T, v, v_teacher, student: dynamics.generalization_error(Q, R, T, v, v_teacher, student=student),
          {"Q": psd(2), "R": finite_array((2, 2), -0.3, 0.3), "T": psd(2), "v": finite_array((2,)),
           "v_teacher": finite_array((2,)), "student": ACTIVATIONS_OR_BAD},
          # ``student`` is not static: an activation (a module of array parameters) does not hash, so as a
          # static argument the harness skipped the jit check of every example that drew one; filter_jit
          # traces its parameters and keeps a function or string static
          check=_eps_nonnegative, max_examples=15,
          valid=lambda: _committee(T=np.eye(2), v_teacher=sample((2,), -1.0, 1.0, seed=3),
                                   student=ACTIVATION_LIST[1])),
    Entry("dynamics.committee_rhs",
          lambda Q, R, v, eta, eta_v, noise_std: dynamics.committee_rhs(dynamics.CommitteeState(Q, R, v), np.eye(2),
                                                                        np.ones(2), eta, eta_v, noise_std),
          {"Q": psd(2), "R": finite_array((2, 2), -0.3, 0.3), "v": finite_array((2,)), "eta": positive_rate(),
           "eta_v": number(0.0, 1.0), "noise_std": number(0.0, 1.0)}, max_examples=12,
          valid=lambda: _committee(eta=0.5, eta_v=0.1, noise_std=0.1)),
    Entry("dynamics.committee_ode",
          lambda Q, R, v, ts, eta: dynamics.committee_ode(dynamics.CommitteeState(Q, R, v), np.eye(2), np.ones(2), ts,
                                                          eta),
          {"Q": psd(2), "R": finite_array((2, 2), -0.3, 0.3), "v": finite_array((2,)), "ts": TS,
           "eta": positive_rate()},
          check=_ode_starts_at_state, max_examples=8, rtol=1e-5, slow=True,
          valid=lambda: _committee(ts=np.linspace(0.0, 2.0, 3), eta=0.5)),
    Entry("dynamics.committee_fixed_point",
          lambda Q, R, eta: _fixed_point(Q, R, eta),
          {"Q": psd(2, scale=0.4), "R": finite_array((2, 2), 0.3, 0.5), "eta": positive_rate(0.5)},
          ok=lambda out: out["ok"], check=_fixed_point_residual, max_examples=6, rtol=1e-4, slow=True),
    Entry("dynamics.committee_integrals",
          lambda C, num_student, student: dynamics.committee_integrals(C, student, student, num_student=num_student),
          {"C": psd(3), "num_student": static_int(1, 2), "student": ACTIVATIONS_OR_BAD},
          static=("num_student", "student"), check=_integrals_symmetric, max_examples=12),
    Entry("dynamics.pair_integrals",
          lambda C, num_student, student: dynamics.pair_integrals(C, student, student, num_student=num_student),
          {"C": psd(3), "num_student": static_int(1, 2), "student": ACTIVATIONS_OR_BAD},
          static=("num_student", "student"), check=_integrals_symmetric, max_examples=12),
    Entry("dynamics.online_sgd",
          lambda key, w0, v0, eta, num_saves: dynamics.online_sgd(
              key, w0, v0, eta, 0.0, _sample, _observe, student=Erf(), schedule=(1, 4), num_saves=num_saves),
          {"key": keys(), "w0": finite_array((2, 8)), "v0": finite_array((2,)), "eta": positive_rate(),
           "num_saves": static_int(1, 3)},
          static=("num_saves",), max_examples=8),
    Entry("dynamics.simulate_committee",
          lambda key, w0, eta, t_max: dynamics.simulate_committee(key, w0, np.ones(2), np.eye(2, 8) * math.sqrt(8),
                                                                  np.ones(2), eta, t_max=t_max, num_saves=2),
          {"key": keys(), "w0": finite_array((2, 8)), "eta": positive_rate(),
           "t_max": st.one_of(st.sampled_from([0.5, 1.0, 1.0]), st.sampled_from([0.0, -1.0, NAN, 1e30, True]))},
          static=("t_max",), max_examples=8, rtol=1e-5, slow=True),
    Entry("dynamics.Generator",
          lambda weights, activation: dynamics.Generator(weights, activation),
          {"weights": finite_array((5, 3)), "activation": ACTIVATIONS_OR_BAD}, static=("activation",)),
    Entry("dynamics.analytic_moments",
          lambda F, order: dynamics.analytic_moments(dynamics.Generator(F, Tanh()), order=order),
          {"F": finite_array((6, 3), -2.0, 2.0), "order": static_int(1, 12)},
          static=("order",), names=("generator",), check=_moments_psd, max_examples=10),
    Entry("dynamics.monte_carlo_moments",
          lambda key, F, num_samples: dynamics.monte_carlo_moments(key, dynamics.Generator(F, Tanh()),
                                                                   num_samples=num_samples, batch_size=50),
          {"key": keys(), "F": finite_array((6, 3)), "num_samples": static_int(2, 200)},
          static=("num_samples",), names=("generator", "batch_size"), max_examples=8),
    Entry("dynamics.hidden_manifold_densities",
          lambda w, w_teacher, num_bins: dynamics.hidden_manifold_densities(_setup()[1], w, w_teacher,
                                                                            num_bins=num_bins),
          {"w": finite_array((2, 12)), "w_teacher": finite_array((2, 4)), "num_bins": static_int(1, 15)},
          static=("num_bins",), check=_densities_sum, max_examples=10),
    Entry("dynamics.hidden_manifold_ode",
          lambda v0, ts, eta: dynamics.hidden_manifold_ode(_setup()[4], v0, np.ones(2), ts, eta),
          {"v0": finite_array((2,)), "ts": TS, "eta": positive_rate(0.5)},
          max_examples=6, rtol=1e-5, slow=True),
    Entry("dynamics.simulate_hidden_manifold",
          lambda key, w0, eta: dynamics.simulate_hidden_manifold(key, _setup()[0], _setup()[1], w0, np.ones(2),
                                                                 _setup()[3], np.ones(2), eta, t_max=0.5, num_saves=1,
                                                                 test_size=20),
          {"key": keys(), "w0": finite_array((2, 12)), "eta": positive_rate(0.5)},
          max_examples=6, rtol=1e-5, slow=True),
    Entry("dynamics.local_field_distance",
          lambda key, w, num_samples: dynamics.local_field_distance(key, _setup()[0], _setup()[1], w, _setup()[3],
                                                                    num_samples=num_samples, num_directions=4),
          {"key": keys(), "w": finite_array((2, 12)), "num_samples": static_int(4, 300)},
          static=("num_samples",), check=_distance_range, names=("w_teacher",), max_examples=8,
          valid=lambda: {"key": jax.random.key(0), "w": sample((2, 12), -1.0, 1.0), "num_samples": 100}),
]

EXEMPT = {
    "dynamics.CommitteeState": "result container (NamedTuple of order parameters)",
    "dynamics.Densities": "result container (NamedTuple, from hidden_manifold_densities)",
    "dynamics.FixedPoint": "result container (NamedTuple)",
    "dynamics.GeneratorMoments": "result container (NamedTuple)",
    "dynamics.HiddenManifoldRun": "result container (NamedTuple)",
    "dynamics.Integrals": "result container (NamedTuple)",
    "dynamics.LocalFieldDistance": "result container (NamedTuple)",
    "dynamics.Trajectory": "result container (NamedTuple)",
}

_ = BAD_TYPES  # (re-exported strategies use them)
