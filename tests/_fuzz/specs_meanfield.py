"""Fuzz entries for rmtjax.solve, rmtjax.meanfield and rmtjax.hermite.

Activations are drawn from closed-form ones (cheap to compile) plus tanh (numerical expectations)
where the entry is about the solver; bad activations (a string, None) are mixed in. Every check is
an invariant or an independent evaluation (a residual, a bound, a closed form)."""

from __future__ import annotations

import cmath
import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from rmtjax import hermite, meanfield, solve
from rmtjax.activations import Erf, Gelu, Relu, Sin, Tanh
from rmtjax.gaussian import gaussian_expectations

from .harness import Entry, bad_type, finite, sample
from .harness import array as _array
from .harness import number as _number

# Valid values weigh more than in the harness' defaults: an entry has up to five arguments, and with
# the default mix most examples would stop at the first bad one before reaching the solver. Every
# kind of bad value (NaN, inf, negative, huge, tiny, complex, bool, str, None, wrong rank, empty)
# still appears.


def _mostly(valid, invalid, tenths_valid=8):
    """``valid`` in ``tenths_valid`` of ten draws, else ``invalid`` (a flatmap: hypothesis' one_of
    does not weight by repeating a strategy)."""
    return st.integers(0, 9).flatmap(lambda i: valid if i < tenths_valid else invalid)


def number(lo, hi):
    return _mostly(finite(lo, hi), _number(lo, hi, valid_weight=0))


def array(shape, lo=-3.0, hi=3.0):
    return _mostly(_array(shape, lo, hi, bad=False), _array(shape, lo, hi))


def static_int(lo, hi):
    # no True / False among the bad values: as static jit arguments they hash and compare equal to 1 / 0,
    # so the harness' cached compiled call would answer for them (eager calls reject booleans; the
    # tests of the modules check that)
    bad = st.sampled_from([-1, lo - 1, 10**9, 2.5, float(hi), None, "3"])
    return _mostly(st.integers(lo, hi), bad)


CLOSED = [Erf(), Relu(), Gelu(), Sin()]
ACTIVATIONS = _mostly(st.sampled_from(CLOSED), st.sampled_from(["tanh", None, 1.0]))
WITH_TANH = _mostly(st.sampled_from([Tanh(), Erf(), Relu()]), st.sampled_from(["tanh", None]))
# no 1 / 0 among the bad flags: as static jit arguments they hash and compare equal to True / False,
# so the harness' compiled call would reuse the True / False program (the eager call does reject them)
FLAG = _mostly(st.booleans(), st.sampled_from([None, "yes", 2]))


def _f(x) -> float:
    return float(np.asarray(x))


# --------------------------------------------------------------------------------------------
# rmtjax.solve
# --------------------------------------------------------------------------------------------


def _cos_map(y, a):
    return jnp.cos(a * y)


def _square_minus(y, c):
    return y * y - c


def _fixed_point_residual(kwargs, out):
    if bool(out.ok):
        # a complex y0 or args gives a complex map (supported): the residual is checked in complex
        y, a = complex(np.asarray(out.value)), complex(np.asarray(kwargs["args"]))
        assert abs(cmath.cos(a * y) - y) <= 1e-6 * (1 + abs(y)), (y, a)


def _root_check(kwargs, out):
    if bool(out.ok):
        y, c = _f(out.value), _f(kwargs["args"])
        lo, hi = kwargs["lower"], kwargs["upper"]
        assert lo <= y <= hi, "the bracketed root left its bracket"
        assert abs(y * y - c) <= 1e-6 * (1 + abs(c)), (y, c)


def _solver(kind, damping):
    """The solver object named by ``kind`` (``"x"``: a string, which must be refused)."""
    if kind == "iteration":
        return solve.Iteration(damping)
    return solve.Newton() if kind == "newton" else kind


# a tolerance or damping: valid ones, None, and bad values (negative, NaN, inf, >= 1, wrong types)
TOLERANCE = _mostly(st.sampled_from([None, 0.0, 1e-8, 0.5]),
                    st.sampled_from([-1.0, float("nan"), float("inf"), 1.0, 2, True, "1e-3", 1j]), tenths_valid=6)


def _check_solver_object(kwargs, out):
    for k, v in kwargs.items():
        got = getattr(out, k)
        assert (got is None if v is None else got == float(v)), (k, v, got)


SOLVE = [
    Entry("solve.fixed_point",
          lambda y0, args, solver, damping, max_steps, throw: solve.fixed_point(
              _cos_map, y0, args, solver=_solver(solver, damping), max_steps=max_steps, throw=throw),
          {"y0": number(-3.0, 3.0), "args": number(-1.2, 1.2), "solver": st.sampled_from(["iteration", "newton", "x"]),
           "damping": st.one_of(st.sampled_from([0.0, 0.5]), number(-1.0, 1.0)), "max_steps": static_int(1, 300),
           "throw": FLAG},
          static=("solver", "damping", "max_steps", "throw"), ok=lambda out: out.ok, check=_fixed_point_residual,
          names=("Iteration.damping",), max_examples=12),
    # the solver objects: configuration checked when built (ValueError naming the field), nothing traced
    Entry("solve.Iteration", lambda damping, rtol, atol: solve.Iteration(damping, rtol, atol),
          {"damping": TOLERANCE, "rtol": TOLERANCE, "atol": TOLERANCE}, static=("damping", "rtol", "atol"),
          names=("Iteration.damping", "Iteration.rtol", "Iteration.atol"), max_examples=8,
          check=lambda kw, out: _check_solver_object(kw, out), valid=lambda: {"damping": 0.5, "rtol": None, "atol": 1e-8}),
    Entry("solve.Newton", lambda rtol, atol: solve.Newton(rtol, atol),
          {"rtol": TOLERANCE, "atol": TOLERANCE}, static=("rtol", "atol"), names=("Newton.rtol", "Newton.atol"),
          max_examples=8, check=lambda kw, out: _check_solver_object(kw, out),
          valid=lambda: {"rtol": 1e-8, "atol": None}),
    Entry("solve.root",
          lambda y0, args, lower, upper, max_steps, throw: solve.root(
              _square_minus, y0, args, bracket=(lower, upper), max_steps=max_steps, throw=throw),
          {"y0": number(-3.0, 3.0), "args": number(0.0, 4.0), "lower": number(-3.0, 1.0), "upper": number(0.0, 3.0),
           "max_steps": static_int(1, 100), "throw": FLAG},
          static=("max_steps", "throw"), names=("bracket", "fn"), ok=lambda out: out.ok, check=_root_check,
          max_examples=12),
]

# --------------------------------------------------------------------------------------------
# rmtjax.meanfield
# --------------------------------------------------------------------------------------------


def _v(act, q, w2, b2):
    return _f(w2) * _f(gaussian_expectations(act, q, q, q).k) + _f(b2)


def _q_star_check(kwargs, out):
    q = _f(out.value)
    assert q >= 0, f"q* = {q} < 0 is not a variance"
    act = kwargs["activation"]
    assert abs(_v(act, q, kwargs["sigma_w2"], kwargs["sigma_b2"]) - q) <= 1e-8 * (1 + q), "V(q*) != q*"


def _chi_1_check(kwargs, out):
    assert _f(out.value) >= 0


def _c_star_check(kwargs, out):
    assert -1 <= _f(out.value) <= 1


def _mean_field_check(kwargs, out):
    if not bool(out.ok):
        return
    assert _f(out.q_star) >= 0 and -1 <= _f(out.c_star) <= 1 and _f(out.chi_1) >= 0 and _f(out.chi_q) >= 0
    assert _f(out.xi_q) >= 0 and _f(out.xi_c) >= 0


def _edge_check(kwargs, out):
    w2 = _f(out.value)
    assert w2 > 0
    chi = meanfield.chi_1(kwargs["activation"], w2, kwargs["sigma_b2"]).value
    assert abs(_f(chi) - 1) <= 1e-7, f"chi_1 = {_f(chi)} at the critical sigma_w2"


def _phase_check(kwargs, out):
    ok = np.asarray(out.ok)
    assert np.all(np.isfinite(np.asarray(out.chi_1)[ok])) and np.all(np.asarray(out.q_star)[ok] >= 0)


def _q_map_check(kwargs, out):
    assert np.all(np.asarray(out) >= _f(kwargs["sigma_b2"]) - 1e-12 * (1 + np.abs(np.asarray(out))))


def _c_map_check(kwargs, out):
    # |E[phi(u) phi(v)]| <= E[phi(u)^2]: |C(c)| <= V(q) / q
    q = _f(kwargs["q"])
    bound = _v(kwargs["activation"], q, kwargs["sigma_w2"], kwargs["sigma_b2"]) / q
    assert abs(_f(out)) <= bound * (1 + 1e-10) + 1e-300


SIGMAS = {"sigma_w2": number(0.0, 12.0), "sigma_b2": number(0.0, 2.0)}
VALID_SIGMAS = {"activation": Erf(), "sigma_w2": 1.5, "sigma_b2": 0.1}  # for ``valid=``: the ordered phase
MEANFIELD = [
    Entry("meanfield.q_star",
          lambda activation, sigma_w2, sigma_b2, q0, throw: meanfield.q_star(activation, sigma_w2, sigma_b2, q0=q0,
                                                                              throw=throw),
          {"activation": WITH_TANH, **SIGMAS, "q0": st.one_of(st.just(1.0), number(0.0, 50.0)), "throw": FLAG},
          static=("throw",), ok=lambda out: out.ok, check=_q_star_check, max_examples=15),
    Entry("meanfield.chi_1",
          lambda activation, sigma_w2, sigma_b2: meanfield.chi_1(activation, sigma_w2, sigma_b2),
          {"activation": ACTIVATIONS, **SIGMAS}, check=_chi_1_check, max_examples=10),
    Entry("meanfield.c_star",
          lambda activation, sigma_w2, sigma_b2, c0: meanfield.c_star(activation, sigma_w2, sigma_b2, c0=c0),
          {"activation": ACTIVATIONS, **SIGMAS, "c0": st.one_of(st.just(0.0), number(-1.0, 1.0))},
          check=_c_star_check, max_examples=10, valid=lambda: {**VALID_SIGMAS, "c0": 0.0}),
    Entry("meanfield.mean_field",
          lambda activation, sigma_w2, sigma_b2, throw: meanfield.mean_field(activation, sigma_w2, sigma_b2,
                                                                             throw=throw),
          {"activation": ACTIVATIONS, **SIGMAS, "throw": st.sampled_from([True, False, "no"])},
          static=("throw",), allow_inf=("xi_q", "xi_c", "[5]", "[6]"), ok=lambda out: out.ok,
          check=_mean_field_check, max_examples=10, valid=lambda: {**VALID_SIGMAS, "throw": True}),
    Entry("meanfield.edge_of_chaos",
          lambda activation, sigma_b2, sigma_w2_guess: meanfield.edge_of_chaos(activation, sigma_b2,
                                                                               sigma_w2_guess=sigma_w2_guess),
          {"activation": _mostly(st.sampled_from([Erf(), Sin()]), bad_type()),
           "sigma_b2": number(0.0, 1.0),
           "sigma_w2_guess": st.one_of(st.just(2.0), number(0.0, 10.0))},
          check=_edge_check, max_examples=8),
    Entry("meanfield.phase_diagram",
          lambda activation, sigma_w2, sigma_b2: meanfield.phase_diagram(activation, sigma_w2, sigma_b2),
          {"activation": _mostly(st.sampled_from([Erf(), Relu()]), bad_type()),
           "sigma_w2": array((3,), 0.0, 4.0), "sigma_b2": array((2,), 0.0, 1.0)},
          allow_inf=("xi_q", "xi_c", "[5]", "[6]"), ok=lambda out: out.ok, check=_phase_check, max_examples=8),
    Entry("meanfield.q_map",
          lambda q, activation, sigma_w2, sigma_b2: meanfield.q_map(q, activation, sigma_w2, sigma_b2),
          {"q": number(0.0, 100.0), "activation": ACTIVATIONS, **SIGMAS}, check=_q_map_check, max_examples=10),
    Entry("meanfield.c_map",
          lambda c, q, activation, sigma_w2, sigma_b2: meanfield.c_map(c, q, activation, sigma_w2, sigma_b2),
          {"c": number(-1.0, 1.0), "q": number(0.0, 100.0), "activation": ACTIVATIONS, **SIGMAS},
          check=_c_map_check, max_examples=10, valid=lambda: {"c": 0.5, "q": 1.0, **VALID_SIGMAS}),
]

# --------------------------------------------------------------------------------------------
# rmtjax.hermite
# --------------------------------------------------------------------------------------------

COEFFS = array((5,), -1.0, 1.0)
KEY = jax.random.key(0)
X = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8], [0.0, 0.0, 1.0]])
# for ``valid=``: normalized (sum a_k^2 = 1), centered (a_0 = 0), supercritical (mu = sum k a_k^2 = 2.05 > 1)
MEMORIZING = (0.0, 0.6, 0.48, 0.64, 0.0)


def _sum_sq(c) -> float:
    c = np.asarray(c, np.float64)
    return float(np.sum(c * c))


def _coefficients_check(kwargs, out):
    # Bessel's inequality: sum_k a_k(q)^2 <= E[sigma(sqrt(q) z)^2]
    q = _f(kwargs["q"])
    if 0 < q < 1e-150:  # gaussian_expectations' own q12^2 <= q1 q2 check underflows there
        return
    e2 = _f(gaussian_expectations(kwargs["activation"], q, q, q).k)
    assert _sum_sq(out) <= e2 * (1 + 1e-8) + 1e-12, (_sum_sq(out), e2)


def _normalized_check(kwargs, out):
    assert abs(_sum_sq(out) - 1) <= 1e-12


def _dual_check(kwargs, out):
    assert np.all(np.abs(np.asarray(out)) <= _sum_sq(kwargs["coeffs"]) * (1 + 1e-12))


def _compositional_check(kwargs, out):
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(kwargs["rho"], np.float64), rtol=1e-15)


def _branching_check(kwargs, out):
    assert abs(float(np.sum(np.asarray(out.offspring))) - 1) <= 1e-12
    assert 0 <= _f(out.xi) <= 1 and int(out.phase) in (0, 1, 2, 3)


def _extinction_check(kwargs, out):
    if bool(out.ok):
        xi, p = _f(out.value), np.asarray(hermite.normalized(kwargs["coeffs"])) ** 2
        assert 0 <= xi <= 1 and abs(np.polynomial.polynomial.polyval(xi, p) - xi) <= 1e-9


def _unit_interval(kwargs, out):
    v = np.asarray(out)
    assert np.all((v >= -1e-12) & (v <= 1 + 1e-12))


def _memorization_check(kwargs, out):
    assert np.all(np.asarray(out.eig_min) <= np.asarray(out.eig_max) + 1e-12)


def _bounds_check(kwargs, out):
    assert np.all(np.asarray(out.small_correlation) >= 0) and np.all(np.asarray(out.large_correlation) >= 0)


def _offspring_check(kwargs, out):
    P = np.asarray(out)
    assert np.all(P >= -1e-15) and float(P.sum()) <= 1 + 1e-12


def _features_check(kwargs, out):
    assert out.features.shape == (X.shape[0], kwargs["num_features"]) and 0 <= _f(out.truncated_mass) <= 1


def _ridge_check(kwargs, out):
    F, y, Ft, lam = (np.asarray(kwargs[k], np.float64) for k in ("features_train", "y_train", "features_test", "lam"))
    ref = Ft @ np.linalg.solve(F.T @ F + lam * np.eye(F.shape[1]), F.T @ y)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-8 * (1 + np.abs(ref).max()))


HERMITE = [
    Entry("hermite.hermite_coefficients",
          lambda activation, q, order: hermite.hermite_coefficients(activation, order=order, q=q),
          {"activation": WITH_TANH, "q": number(0.0, 20.0), "order": static_int(0, 12)},
          static=("order",), check=_coefficients_check, max_examples=12),
    Entry("hermite.activation_mu", lambda activation, center: hermite.activation_mu(activation, center=center),
          {"activation": ACTIVATIONS, "center": FLAG}, static=("center",),
          check=lambda kwargs, out: _f(out) >= 0, max_examples=8),
    Entry("hermite.normalized", lambda coeffs, center: hermite.normalized(coeffs, center=center),
          {"coeffs": COEFFS, "center": FLAG}, static=("center",), check=_normalized_check, max_examples=12),
    Entry("hermite.dual_kernel", lambda coeffs, rho: hermite.dual_kernel(coeffs, rho),
          {"coeffs": COEFFS, "rho": number(-1.0, 1.0)}, check=_dual_check, max_examples=12),
    Entry("hermite.compositional_kernel", lambda coeffs, rho, depth: hermite.compositional_kernel(coeffs, rho,
                                                                                                  depth=depth),
          {"coeffs": COEFFS, "rho": array((3,), -1.0, 1.0), "depth": static_int(0, 6)},
          static=("depth",), check=_compositional_check, max_examples=12),
    Entry("hermite.branching_process", lambda coeffs: hermite.branching_process(coeffs), {"coeffs": COEFFS},
          check=_branching_check, max_examples=10),
    Entry("hermite.extinction_probability",
          lambda coeffs, throw: hermite.extinction_probability(coeffs, throw=throw),
          {"coeffs": COEFFS, "throw": FLAG}, static=("throw",), ok=lambda out: out.ok, check=_extinction_check,
          max_examples=10),
    Entry("hermite.unscaled_limit", lambda coeffs, rho: hermite.unscaled_limit(coeffs, rho),
          {"coeffs": COEFFS, "rho": number(0.0, 1.0)}, check=_unit_interval, max_examples=10),
    Entry("hermite.rescaled_limit", lambda coeffs, t: hermite.rescaled_limit(coeffs, t),
          {"coeffs": COEFFS, "t": number(0.0, 50.0)}, check=_unit_interval, max_examples=10),
    Entry("hermite.memorization_depth",
          lambda coeffs, X, kappa, max_depth: hermite.memorization_depth(coeffs, X, kappa, max_depth=max_depth),
          {"coeffs": COEFFS, "X": array((4, 3)), "kappa": number(0.0, 1.0),
           # the valid example's depth (each compiles its own program; see harness.fixed_int)
           "max_depth": _mostly(st.just(8), st.sampled_from([-1, 10**9, 2.5, 9.0, None, "3"]))},
          static=("max_depth",), check=_memorization_check, max_examples=10,
          valid=lambda: {"coeffs": np.array(MEMORIZING), "X": sample((4, 3)), "kappa": 0.5, "max_depth": 8}),
    Entry("hermite.memorization_bounds",
          lambda coeffs, rho_max, n, kappa: hermite.memorization_bounds(coeffs, rho_max, n, kappa),
          {"coeffs": COEFFS, "rho_max": number(0.0, 1.0), "n": number(1.0, 1000.0), "kappa": number(0.0, 1.0)},
          allow_inf=("small_correlation", "large_correlation", "[0]", "[1]"), check=_bounds_check, max_examples=10,
          valid=lambda: {"coeffs": np.array(MEMORIZING), "rho_max": 0.5, "n": 10.0, "kappa": 0.5}),
    Entry("hermite.offspring_distribution",
          lambda coeffs, depth, max_degree: hermite.offspring_distribution(coeffs, depth=depth, max_degree=max_degree),
          {"coeffs": COEFFS, "depth": static_int(0, 4), "max_degree": static_int(0, 20)},
          static=("depth", "max_degree"), check=_offspring_check, max_examples=10),
    # eager and jit draw different (equally distributed) features: compare outcomes, not values
    Entry("hermite.compositional_features",
          lambda X, coeffs, depth, num_features: hermite.compositional_features(
              X, coeffs, KEY, depth=depth, num_features=num_features, max_degree=8),
          {"X": st.one_of(st.just(X), array((4, 3))), "coeffs": COEFFS, "depth": static_int(0, 3),
           "num_features": static_int(1, 16)},
          static=("depth", "num_features"), check=_features_check, rtol=math.inf, max_examples=8),
    Entry("hermite.compressed_features",
          lambda X, coeffs, depth, num_features: hermite.compressed_features(
              X, coeffs, KEY, depth=depth, num_features=num_features, max_degree=8),
          {"X": st.one_of(st.just(X), array((4, 3))), "coeffs": COEFFS, "depth": static_int(0, 3),
           "num_features": static_int(1, 16)},
          static=("depth", "num_features"), check=_features_check, max_examples=8),
    Entry("hermite.ridge_predict",
          lambda features_train, y_train, features_test, lam: hermite.ridge_predict(features_train, y_train,
                                                                                    features_test, lam),
          {"features_train": array((5, 3)), "y_train": array((5,)), "features_test": array((2, 3)),
           "lam": number(0.0, 10.0)},
          check=_ridge_check, max_examples=10),
    Entry("hermite.Trapezoid", lambda step, cutoff: hermite.Trapezoid(step=step, cutoff=cutoff),
          {"step": st.one_of(st.just(0.04), number(0.0, 0.3)), "cutoff": st.one_of(st.just(13.0), number(0.0, 50.0))},
          static=("step", "cutoff"), max_examples=8),
    Entry("hermite.GaussLegendre", lambda deg, panels: hermite.GaussLegendre(deg=deg, panels=panels),
          {"deg": static_int(2, 64), "panels": static_int(1, 8)}, static=("deg", "panels"), max_examples=8),
    Entry("hermite.Auto", lambda numerical: hermite.Auto(numerical=numerical),
          {"numerical": st.sampled_from([hermite.Trapezoid(), hermite.GaussLegendre(), "trapezoid", None, 1.0])},
          static=("numerical",), max_examples=5),
]

ENTRIES = SOLVE + MEANFIELD + HERMITE

EXEMPT = {
    "meanfield.MeanField": "result container (NamedTuple)",
    "solve.Solution": "result container",
    "hermite.BranchingProcess": "result container (NamedTuple)",
    "hermite.Features": "result container (NamedTuple)",
    "hermite.Memorization": "result container (NamedTuple)",
    "hermite.MemorizationBounds": "result container (NamedTuple)",
    "hermite.Phase": "an enumeration of result codes (IntEnum)",
    "hermite.ClosedForm": "re-export of rmtjax.gaussian.ClosedForm (fuzzed with rmtjax.gaussian)",
    "hermite.GaussHermite": "re-export of rmtjax.gaussian.GaussHermite (fuzzed with rmtjax.gaussian)",
}
