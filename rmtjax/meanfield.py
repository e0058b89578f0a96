r"""Mean-field signal propagation through deep random networks.

For a fully-connected network with weights :math:`W_{ij} \sim \mathcal N(0, \sigma_w^2/n)`,
biases :math:`\mathcal N(0, \sigma_b^2)` and activation :math:`\phi` (Poole, Lahiri, Raghu,
Sohl-Dickstein & Ganguli 2016, arXiv:1606.05340; Schoenholz, Gilmer, Ganguli & Sohl-Dickstein
2017, arXiv:1611.01232):

* length map (Poole eq. 3): :math:`q^{\ell} = \mathcal V(q^{\ell-1}) = \sigma_w^2\,
  \mathbb E_z[\phi(\sqrt{q^{\ell-1}} z)^2] + \sigma_b^2`, fixed point :math:`q^*`;
* correlation map (Poole eq. 5): :math:`c^{\ell} = \mathcal C(c^{\ell-1}) = \frac{1}{q^*}\big(
  \sigma_w^2\,\mathbb E[\phi(u_1)\phi(u_2)] + \sigma_b^2\big)`, :math:`(u_1, u_2)` centred
  Gaussian with variances :math:`q^*` and correlation :math:`c^{\ell-1}`; fixed point :math:`c^*`;
* :math:`\chi_1 = \sigma_w^2\,\mathbb E[\phi'(\sqrt{q^*}z)^2]` (Poole eq. 7; the slope of
  :math:`\mathcal C` at :math:`c = 1`), :math:`\chi_c = \sigma_w^2\,\mathbb E[\phi'(u_1)\phi'(u_2)]`
  at :math:`c^*` (Schoenholz eq. 8) and :math:`\chi_q = \mathcal V'(q^*)`;
* depth scales (Schoenholz eqs. 6, 9): :math:`\xi_q = -1/\log\chi_q`,
  :math:`\xi_c = -1/\log\chi_c`; :math:`\xi_c` diverges on the edge of chaos :math:`\chi_1 = 1`.

**Which fixed point.** :math:`q^*` is the fixed point that the length map reaches from the input
variance ``q0`` (default 1): the nearest root of :math:`\mathcal V(q) = q` above ``q0`` when
:math:`\mathcal V(q_0) > q_0`, below it otherwise (exactly the limit of the iteration when
:math:`\mathcal V` is increasing, as it is for every activation here). It is always on the
physical branch :math:`q^* \ge 0`: the root is bracketed (by doubling/halving from ``q0``) and
found by a safeguarded Newton method that never leaves the bracket
(:func:`rmtjax.solve.root` with ``bracket=``). Where no finite fixed point exists — the variance
grows without bound with depth, e.g. ReLU with :math:`\sigma_w^2 \ge 2` and
:math:`\sigma_b^2 > 0`, GELU with :math:`\sigma_w^2 \gtrsim 2.3` — the solve reports it
(``ok=False``, or a ``ValueError`` with ``throw=True``) instead of returning an unphysical root.
:math:`c^*` is the stable fixed point reached from ``c0`` (default 0): on :math:`[0, 1]` the
correlation map is increasing and convex with :math:`\mathcal C(1) = 1` (Mehler's formula), so
there is at most one root below 1: :math:`c^* = 1` in the ordered phase, :math:`c^* < 1` in the
chaotic one. A root closer to 1 than :math:`\sqrt\varepsilon` (``1.5e-8`` in float64,
``3.5e-4`` in float32; i.e. :math:`\chi_1 - 1` below about that) cannot be told from 1 in
floating point and is reported as :math:`c^* = 1`.

Every fixed point goes through :mod:`rmtjax.solve`, so ``q_star``, ``chi_1``, ``xi_c`` and the
edge-of-chaos curve are differentiable in :math:`\sigma_w^2`, :math:`\sigma_b^2` and the
activation's parameters (implicit differentiation) and vmap over grids (``throw=False`` gives
per-point result codes; where ``ok`` is false the values are NaN: there is no value). Every
public function validates its arguments first (a ``ValueError`` naming the argument, eagerly and
under ``jit``), runs a module-level compiled core (compiled once per activation type, method and
argument shape: repeated calls do not recompile), and tolerances follow the dtype
(:func:`rmtjax._numerics.solver_tolerances`): float32 without x64 works. Gaussian expectations
come from :func:`rmtjax.gaussian.gaussian_expectations` (closed form or numerical, ``method=``).

Example:
    >>> from rmtjax.activations import Tanh
    >>> mf = mean_field(Tanh(), 2.5, 0.05)
    >>> float(mf.chi_1) > 1  # chaotic phase
    True
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike

from ._numerics import solver_tolerances
from ._validate import concrete, error_if, flag, real, reraise_as_value_error, static_int
from .activations import AbstractActivation, AbstractClosedFormActivation
from .gaussian import AbstractMethod, Auto, ClosedForm, GaussHermite, Mehler, MonteCarlo, _expectations
from .solve import Solution, _finish, _implicit, _scalar_root

__all__ = [
    "MeanField",
    "c_map",
    "c_star",
    "chi_1",
    "edge_of_chaos",
    "mean_field",
    "phase_diagram",
    "q_map",
    "q_star",
]

# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_activation(activation) -> AbstractActivation:
    """An :mod:`rmtjax.activations` module whose array parameters are real and finite."""
    if not isinstance(activation, AbstractActivation):
        raise ValueError(f"activation must be an rmtjax.activations module (e.g. Tanh()), got {activation!r:.80}")

    def check(path, leaf):
        if not (hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)):
            return leaf
        return real(leaf, "activation" + jax.tree_util.keystr(path), allow_empty=True)

    return jax.tree_util.tree_map_with_path(check, activation)


def _check_method(method, activation) -> AbstractMethod:
    if type(method) not in (Auto, ClosedForm, GaussHermite, Mehler, MonteCarlo):
        raise ValueError(f"method must be an rmtjax.gaussian method (Auto(), ClosedForm(), GaussHermite(deg), "
                         f"Mehler(order), MonteCarlo()), got {method!r:.80}")
    if isinstance(method, ClosedForm) and not isinstance(activation, AbstractClosedFormActivation):
        raise ValueError(f"method=ClosedForm() needs an activation with closed-form Gaussian expectations; "
                         f"{type(activation).__name__} has none: use method=Auto(), Mehler(order) or GaussHermite(deg)")
    return method


def _float_leaves(tree):
    return [x for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]


def _common(activation, **arrays):
    """Casts the named real arrays and the activation's float parameters to one dtype (the
    widest among them) and broadcasts the arrays to one shape. Returns
    ``(activation, shape, dict of arrays)``."""
    dtype = jnp.result_type(*arrays.values(), *_float_leaves(activation))
    try:
        shape = jnp.broadcast_shapes(*(a.shape for a in arrays.values()))
    except ValueError:
        shapes = ", ".join(f"{k} {tuple(a.shape)}" for k, a in arrays.items())
        raise ValueError(f"{' and '.join(arrays)} must have broadcastable shapes, got {shapes}") from None
    arrays = {k: jnp.broadcast_to(jnp.asarray(a, dtype=dtype), shape) for k, a in arrays.items()}
    activation = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype=dtype) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) else x,
        activation)
    return activation, shape, arrays


def _sigmas(sigma_w2, sigma_b2):
    return real(sigma_w2, "sigma_w2", lo=0.0), real(sigma_b2, "sigma_b2", lo=0.0)


def _at(shape, **arrays):
    """``at(index)`` for error messages: the parameter values of a failing point."""
    vals = {k: np.broadcast_to(np.asarray(concrete(v)), shape) for k, v in arrays.items()}

    def at(idx):
        return "at " + ", ".join(f"{k} = {float(v[idx]):.6g}" for k, v in vals.items())

    return at


# --------------------------------------------------------------------------------------------
# The maps (traceable, unvalidated) and the bracketed fixed-point solves
# --------------------------------------------------------------------------------------------


def _V(q, activation, w2, b2, method):
    return w2 * _expectations(activation, q, q, q, method).k + b2


def _g_q(q, args):
    activation, w2, b2, method = args
    return _V(q, activation, w2, b2, method) - q


# Largest variance searched (a fixed point beyond it counts as none: the variance diverges), and
# the number of halvings below q0 before the bracket's lower end is put at 0 (where V(0) >= 0).
_Q_MAX = 1e30
_HALVINGS = 100
_DOUBLINGS = 40  # then steps of 2^8, up to 1000 binary orders of magnitude in all
_UP_STEPS = _DOUBLINGS + 120


def _q_floor(dtype) -> float:
    """The smallest positive variance at which the Gaussian expectations keep their relative
    accuracy: the fourth root of the smallest normal number (1.2e-77 in float64, 1.1e-10 in
    float32). Below it products such as q1 q2 underflow (measured: tanh's Mehler series returns
    V(q)/q ~ 1e-34 at q = 1e-154 in float64 and 1e-19 in float32, ReLU's correlation turns to 0)."""
    return float(jnp.finfo(dtype).tiny) ** 0.25


def _margin(dtype) -> float:
    """A sign change must exceed this relative size to count as one (rounding: for ReLU at
    sigma_w2 = 2, V(q) - q = sigma_b2 vanishes into the rounding of q at q ~ 1e15)."""
    return 64 * float(jnp.finfo(dtype).eps)


def _q_up(q0, g0, k):
    start = jnp.maximum(jnp.maximum(2 * q0, q0 + g0), _q_floor(q0.dtype))
    e = (k - 1) + 7 * jnp.maximum(k - 1 - _DOUBLINGS, 0)
    p = start * jnp.exp2(e.astype(q0.dtype))
    return jnp.where(p <= _Q_MAX, p, jnp.nan)


def _q_down(q0, g0, k):
    p = q0 * jnp.exp2(-k.astype(q0.dtype))
    return jnp.where(p >= _q_floor(q0.dtype), p, 0.0)  # below the floor: the end q = 0, where V(0) >= 0


def _q_star_scalar(activation, w2, b2, q0, method, max_steps) -> Solution:
    """q* for scalar arguments (see the module docstring): from q0, the nearest root of
    V(q) = q in the direction V(q0) - q0 points to, bracketed by doubling/halving and solved by
    safeguarded Newton (rmtjax.solve). Value NaN where not ok."""
    rtol, atol = solver_tolerances(w2.dtype)
    args = (activation, w2, b2, method)
    sol = _scalar_root(_g_q, args, q0, rtol=rtol, atol=atol, max_steps=max_steps, up=_q_up, n_up=_UP_STEPS,
                       down=_q_down, n_down=_HALVINGS, down_end=jnp.zeros_like(q0), margin=_margin(w2.dtype))
    # the same value, with the implicit derivative of the one-sided V' at q* = 0 (sigma_b^2 = 0 in the
    # ordered phase: dq*/d sigma_b^2 = 1 / (1 - V'(0+)), 4 for ReLU at sigma_w^2 = 1.5, not 1.6)
    q = jax.lax.stop_gradient(jnp.where(sol.ok, sol.value, 1.0))
    return Solution(jnp.where(sol.ok, _implicit(_g_q_one_sided, q, args), jnp.nan), sol.result, sol.steps, sol.residual)


def _g_c(c, args):
    r""":math:`\mathcal C(c) - c`, the correlation map normalised by ``v`` :math:`= \mathcal V(q)`
    (:math:`= q` at :math:`q^*`), so that :math:`\mathcal C(1) = 1` exactly in floating point."""
    q, v, activation, w2, b2, method = args
    k = _expectations(activation, q, q, c * q, method).k
    return (w2 * k + b2) / v - c


def _q_eval(q):
    """q* where the correlation map is evaluated: q* itself, or the limit q -> 0+ at q* = 0 (with
    derivative 0 there: the derivatives of kdot, c* and the chi's at q -> 0+ lose all accuracy at
    this tiny q, so gradients of chi_1, c* and the depth scales at exactly q* = 0 leave out their
    dependence through q*; q* itself has the one-sided derivative, :func:`_g_q_one_sided`)."""
    floor = jnp.asarray(_q_floor(q.dtype), q.dtype)
    return jnp.where(q > floor, q, floor)


def _q_through(q):
    r""":func:`_q_eval` with derivative 1 in q everywhere (for :math:`\mathcal V` itself, whose
    derivative at the floor is accurate: ReLU 1/2, tanh 1)."""
    floor = jnp.asarray(_q_floor(q.dtype), q.dtype)
    return jax.lax.stop_gradient(jnp.where(q > floor, q, floor)) + (q - jax.lax.stop_gradient(q))


def _g_q_one_sided(q, args):
    r""":func:`_g_q` differentiated at :func:`_q_through` (the implicit derivative of q*): at q* = 0
    the derivative of :math:`\mathcal V` at 0 is its one-sided limit, which the Gaussian
    expectations' square roots of variances do not give at 0 itself."""
    return _g_q(_q_through(q), args)


def _c_star_scalar(activation, w2, b2, q, q_ok, c0, method, max_steps) -> Solution:
    """c* for scalar arguments (see the module docstring). ``q``: q* (NaN where ``q_ok`` is false).
    Upwards (C(c0) > c0): one test point at 1 - sqrt(eps), then the end c = 1 (always a root);
    downwards: the bracket [0, c0] (or [-1, c0] for c0 <= 0), where C(0) >= 0 and C(-1) >= -1."""
    dt = w2.dtype
    rtol, atol = solver_tolerances(dt)
    top = 1 - math.sqrt(float(jnp.finfo(dt).eps))
    qe = _q_eval(jnp.where(q_ok, q, 1.0))
    v = _V(qe, activation, w2, b2, method)
    sol = _scalar_root(_g_c, (qe, v, activation, w2, b2, method), c0, rtol=rtol, atol=atol, max_steps=max_steps,
                       up=lambda c0, g0, k: jnp.maximum(top, 0.5 * (c0 + 1)).astype(dt), n_up=1,
                       up_end=jnp.ones((), dt), down_end=jnp.where(c0 > 0, 0.0, -1.0).astype(dt),
                       margin=_margin(dt))
    result = optx.RESULTS.where(q_ok, sol.result, optx.RESULTS.nonfinite)
    return Solution(jnp.where(q_ok, sol.value, jnp.nan), result, sol.steps, sol.residual)


def _chi_1_from_q(activation, w2, q, method):
    qe = _q_eval(q)  # at q* = 0 the limit q -> 0+ (an angle between vanishing vectors is not 0)
    return w2 * _expectations(activation, qe, qe, qe, method).kdot


def _chi_q(activation, w2, b2, q, method):
    r""":math:`\mathcal V'(q^*)`; at :math:`q^* = 0` the one-sided limit, evaluated at the tiny
    :func:`_q_eval` (:math:`\sqrt q` has no derivative at 0, but :math:`a_1(q)\,a_1'(q)` has a limit)."""
    return jax.grad(lambda t: _V(t, activation, w2, b2, method))(_q_eval(q))


def _depth_scale(chi):
    # -1 / log(chi) for chi in (0, 1); its limit 0 at chi = 0 (a signal forgotten in one layer: tanh at
    # sigma_w = 0, or a constant activation), inf at and beyond chi = 1 (criticality and chaos)
    ok = (chi > 0) & (chi < 1)
    return jnp.where(ok, -1.0 / jnp.log(jnp.where(ok, chi, 0.5)), jnp.where(chi == 0, 0.0, jnp.inf))


class MeanField(NamedTuple):
    """Mean-field quantities at one :math:`(\\sigma_w^2, \\sigma_b^2)` (or a grid) and their
    solver codes; every field is NaN where ``ok`` is false.

    Attributes:
        q_star, c_star: the fixed points of the length and correlation maps.
        chi_1, chi_c, chi_q: slopes (see the module docstring).
        xi_q, xi_c: depth scales :math:`-1/\\log\\chi` (``inf`` at and beyond :math:`\\chi = 1`, its
            limit 0 at :math:`\\chi = 0`).
        ok: both fixed points converged on their physical branch.
    """

    q_star: Array
    c_star: Array
    chi_1: Array
    chi_c: Array
    chi_q: Array
    xi_q: Array
    xi_c: Array
    ok: Array


def _mean_field_scalar(activation, w2, b2, q0, c0, method, max_steps):
    qs = _q_star_scalar(activation, w2, b2, q0, method, max_steps)
    q_ok = qs.ok
    q = jnp.where(q_ok, qs.value, 1.0)
    cs = _c_star_scalar(activation, w2, b2, qs.value, q_ok, c0, method, max_steps)
    c = jnp.where(cs.ok, cs.value, 1.0)
    qe = _q_eval(q)
    chi1 = _chi_1_from_q(activation, w2, q, method)
    chic = w2 * _expectations(activation, qe, qe, c * qe, method).kdot
    chiq = _chi_q(activation, w2, b2, q, method)
    ok = q_ok & cs.ok
    nan = jnp.asarray(jnp.nan, w2.dtype)

    def mask(x, good):
        return jnp.where(good, x, nan)

    mf = MeanField(qs.value, cs.value, mask(chi1, q_ok), mask(chic, ok), mask(chiq, q_ok),
                   mask(_depth_scale(chiq), q_ok), mask(_depth_scale(chic), ok), ok)
    return mf, qs, cs


def _chi_1_scalar(activation, w2, b2, q0, method, max_steps):
    qs = _q_star_scalar(activation, w2, b2, q0, method, max_steps)
    chi = _chi_1_from_q(activation, w2, jnp.where(qs.ok, qs.value, 1.0), method)
    return Solution(jnp.where(qs.ok, chi, jnp.nan), qs.result, qs.steps, qs.residual)


def _c_star_only(activation, w2, b2, q0, c0, method, max_steps):
    qs = _q_star_scalar(activation, w2, b2, q0, method, max_steps)
    return qs, _c_star_scalar(activation, w2, b2, qs.value, qs.ok, c0, method, max_steps)


def _log_chi_1(x, args, *, method, max_steps):
    r""":math:`\log\chi_1(e^x)`, NaN where :math:`q^*` does not exist."""
    activation, b2, q0 = args
    w2 = jnp.exp(x)
    qs = _q_star_scalar(activation, w2, b2, q0, method, max_steps)
    chi = _chi_1_from_q(activation, w2, jnp.where(qs.ok, qs.value, 1.0), method)
    return jnp.where(qs.ok & (chi > 0), jnp.log(jnp.where(chi > 0, chi, 1.0)), jnp.nan)


def _edge_scalar(activation, b2, guess, q0, method, max_steps) -> Solution:
    r"""Critical :math:`\sigma_w^2`: :math:`\log\chi_1` bracketed in :math:`x = \log\sigma_w^2` by
    steps of :math:`\log 2` from the guess (at most 60 either way), then safeguarded Newton."""
    dt = b2.dtype
    rtol, atol = solver_tolerances(dt)
    h = functools.partial(_log_chi_1, method=method, max_steps=max_steps)
    step = math.log(2.0)
    sol = _scalar_root(h, (activation, b2, q0), jnp.log(guess), rtol=rtol, atol=atol, max_steps=max_steps,
                       decreasing=False, up=lambda x0, g0, k: x0 + step * k.astype(dt), n_up=60,
                       down=lambda x0, g0, k: x0 - step * k.astype(dt), n_down=60)
    return Solution(jnp.exp(sol.value), sol.result, sol.steps, sol.residual)


# --------------------------------------------------------------------------------------------
# Compiled cores: scalar, or vmapped over the flattened broadcast shape
# --------------------------------------------------------------------------------------------


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (eqx.debug.get_num_traces), no limit
def _run(scalar_fn, activation, arrays, statics):
    """``scalar_fn(activation, *arrays, *statics)``, vmapped over the leading axis of the (1-d)
    ``arrays`` when they are not scalars. Module level: compiled once per ``scalar_fn``,
    activation structure, array shapes/dtypes and static options."""
    if arrays[0].ndim == 0:
        return scalar_fn(activation, *arrays, *statics)
    return jax.vmap(lambda *a: scalar_fn(activation, *a, *statics))(*arrays)


def _call(scalar_fn, activation, shape, arrays, statics):
    flat = tuple(a.reshape(-1) if shape else a for a in arrays)
    out = _run(scalar_fn, activation, flat, statics)
    if not shape:
        return out
    return jax.tree_util.tree_map(lambda x: x.reshape(shape + x.shape[1:]), out)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

_Q_WHAT = {
    "nonlinear_divergence": "has no finite fixed point reachable from q0 (V(q) > q for every q up to 1e30: the "
                            "variance grows without bound with depth)",
    "nonfinite": "is not finite (the length map returned nan or inf)",
    "nonlinear_max_steps_reached": "did not converge (max_steps reached)",
}
_Q_REMEDY = ("A smaller sigma_w2 has a finite q*; raise max_steps if the solve was cut short; pass throw=False to "
             "get ok=False for such points.")
_Q_TRACED = ("q* (length map) has no finite, converged fixed point at these sigma_w2, sigma_b2 (reachable from q0); "
             "pass throw=False to get ok=False per point")


def _static_options(max_steps, throw):
    return static_int(max_steps, "max_steps", lo=1, hi=10**6), flag(throw, "throw")


def _finish_q(sol, throw, shape, w2, b2, q0):
    return _finish(sol, throw=throw, name="q* (length map)", remedy=_Q_REMEDY, what=_Q_WHAT,
                   traced_message=_Q_TRACED, at=_at(shape, sigma_w2=w2, sigma_b2=b2, q0=q0))


def _finish_c(sol, throw, shape, w2, b2, c0):
    return _finish(sol, throw=throw, name="c* (correlation map)",
                   remedy="Raise max_steps, or pass throw=False to get ok=False for such points.",
                   what={"nonfinite": "is undefined: q* has no finite value, or the correlation map returned nan"},
                   traced_message="c* (correlation map) did not converge at these sigma_w2, sigma_b2 (c0); pass "
                                  "throw=False to get ok=False per point",
                   at=_at(shape, sigma_w2=w2, sigma_b2=b2, c0=c0))


@reraise_as_value_error
def q_map(q: ArrayLike, activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *,
          method: AbstractMethod = Auto()) -> Array:
    r"""The length map :math:`\mathcal V(q) = \sigma_w^2\mathbb E[\phi(\sqrt q z)^2] + \sigma_b^2`
    (arrays broadcast together; ``q = 0`` or ``q >=`` the fourth root of the dtype's smallest
    normal number, 1.2e-77 in float64 and 1.1e-10 in float32, below which the expectations underflow).

    Example:
        >>> from rmtjax.activations import Relu
        >>> float(q_map(2.0, Relu(), 1.5, 0.1))   # 1.5 * 2 / 2 + 0.1
        1.6
    """
    activation = _check_activation(activation)
    method = _check_method(method, activation)
    q = real(q, "q", lo=0.0)
    w2, b2 = _sigmas(sigma_w2, sigma_b2)
    activation, _, a = _common(activation, q=q, sigma_w2=w2, sigma_b2=b2)
    floor = _q_floor(a["q"].dtype)
    a["q"] = error_if(a["q"], jnp.any((a["q"] > 0) & (a["q"] < floor)),
                      f"q must be 0 or >= {floor:.2g} ({a['q'].dtype.name}: smaller variances underflow in the "
                      "Gaussian expectations)")
    return _q_map_core(a["q"], activation, a["sigma_w2"], a["sigma_b2"], method)


_q_map_core = eqx.filter_jit(_V)


@reraise_as_value_error
def c_map(c: ArrayLike, q: ArrayLike, activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *,
          method: AbstractMethod = Auto()) -> Array:
    r"""The correlation map :math:`\mathcal C(c) = (\sigma_w^2\mathbb E[\phi(u_1)\phi(u_2)] +
    \sigma_b^2)/q` for inputs of variance ``q`` (normally :math:`q^*`; ``q >= 1.2e-77`` in float64,
    ``1.1e-10`` in float32, see :func:`q_map`) and correlation ``c`` in ``[-1, 1]`` (arrays
    broadcast together).

    Example:
        >>> from rmtjax.activations import Relu
        >>> float(c_map(1.0, 0.5, Relu(), 1.0, 0.0))   # C(1) = V(q) / q = sigma_w2 / 2
        0.5
    """
    activation = _check_activation(activation)
    method = _check_method(method, activation)
    c = real(c, "c", lo=-1.0, hi=1.0)
    q = real(q, "q", lo=0.0, lo_open=True)
    w2, b2 = _sigmas(sigma_w2, sigma_b2)
    activation, _, a = _common(activation, c=c, q=q, sigma_w2=w2, sigma_b2=b2)
    floor = _q_floor(a["q"].dtype)
    a["q"] = error_if(a["q"], jnp.any(a["q"] < floor),
                      f"q must be >= {floor:.2g} ({a['q'].dtype.name}: smaller variances underflow in the "
                      "Gaussian expectations)")
    return _c_map_core(a["c"], a["q"], activation, a["sigma_w2"], a["sigma_b2"], method)


@eqx.filter_jit
def _c_map_core(c, q, activation, w2, b2, method):
    k = _expectations(activation, q, q, c * q, method).k
    return (w2 * k + b2) / q


@reraise_as_value_error
def q_star(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0,
           method: AbstractMethod = Auto(), max_steps: int = 100, throw: bool = True) -> Solution:
    r"""Fixed point :math:`q^* = \mathcal V(q^*)` reached from the input variance ``q0`` (a
    :class:`rmtjax.solve.Solution`; arrays broadcast, ``value`` NaN where not ``ok``).

    Bracketed from ``q0`` by doubling (:math:`\mathcal V(q_0) > q_0`) or halving, then solved by a
    safeguarded Newton method inside the bracket, so :math:`q^* \ge 0` always (see the module
    docstring); ``result`` is ``nonlinear_divergence`` where no finite fixed point exists (the
    variance grows without bound, e.g. ReLU with :math:`\sigma_w^2 \ge 2` and
    :math:`\sigma_b^2 > 0`).

    Args:
        activation: an :mod:`rmtjax.activations` module (finite parameters).
        sigma_w2, sigma_b2: weight and bias variances (``>= 0``, finite).
        q0: input variance the iteration starts from (``>= 0``, finite).
        method: Gaussian expectations (:mod:`rmtjax.gaussian`).
        max_steps: steps of the safeguarded Newton solve (static).
        throw: raise a ``ValueError`` where there is no converged fixed point (else ``ok=False``).

    Example:
        >>> from rmtjax.activations import Erf
        >>> print(f"{float(q_star(Erf(), 10.0, 0.05).value):.5f}")
        7.83353
    """
    activation = _check_activation(activation)
    method = _check_method(method, activation)
    w2, b2 = _sigmas(sigma_w2, sigma_b2)
    q0 = real(q0, "q0", lo=0.0)
    max_steps, throw = _static_options(max_steps, throw)
    activation, shape, a = _common(activation, sigma_w2=w2, sigma_b2=b2, q0=q0)
    sol = _call(_q_star_scalar, activation, shape, (a["sigma_w2"], a["sigma_b2"], a["q0"]), (method, max_steps))
    return _finish_q(sol, throw, shape, a["sigma_w2"], a["sigma_b2"], a["q0"])


@reraise_as_value_error
def c_star(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, c0: ArrayLike = 0.0,
           q0: ArrayLike = 1.0, method: AbstractMethod = Auto(), max_steps: int = 100,
           throw: bool = True) -> Solution:
    r"""The stable fixed point :math:`c^*` of the correlation map at :math:`q = q^*`, reached from
    ``c0`` in ``[-1, 1]`` (a :class:`rmtjax.solve.Solution`): :math:`c^* = 1` in the ordered phase,
    :math:`c^* < 1` in the chaotic one. A root bracket plus a safeguarded Newton solve, so it
    converges at any distance from the edge of chaos (iteration would slow down like
    :math:`\chi_c^\ell`); see the module docstring for the resolution near :math:`c^* = 1`.

    Example:
        >>> from rmtjax.activations import Tanh
        >>> float(c_star(Tanh(), 1.0, 0.05).value)   # ordered
        1.0
    """
    activation = _check_activation(activation)
    method = _check_method(method, activation)
    w2, b2 = _sigmas(sigma_w2, sigma_b2)
    c0 = real(c0, "c0", lo=-1.0, hi=1.0)
    q0 = real(q0, "q0", lo=0.0)
    max_steps, throw = _static_options(max_steps, throw)
    activation, shape, a = _common(activation, sigma_w2=w2, sigma_b2=b2, q0=q0, c0=c0)
    qs, cs = _call(_c_star_only, activation, shape, (a["sigma_w2"], a["sigma_b2"], a["q0"], a["c0"]),
                   (method, max_steps))
    _finish_q(qs, throw, shape, a["sigma_w2"], a["sigma_b2"], a["q0"])
    return _finish_c(cs, throw, shape, a["sigma_w2"], a["sigma_b2"], a["c0"])


@reraise_as_value_error
def chi_1(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0,
          method: AbstractMethod = Auto(), max_steps: int = 100, throw: bool = True) -> Solution:
    r""":math:`\chi_1 = \sigma_w^2\,\mathbb E[\phi'(\sqrt{q^*}z)^2]`: ordered phase if < 1, chaotic if > 1.

    Needs only :math:`q^*` (not :math:`c^*`), so it is defined on the edge of chaos itself. Returns
    a :class:`rmtjax.solve.Solution` whose ``value`` is :math:`\chi_1` and whose ``result``,
    ``steps`` and ``residual`` are those of the :math:`q^*` solve (``value`` NaN where not ok).
    Arguments as in :func:`q_star`.

    Example:
        >>> from rmtjax.activations import Relu
        >>> float(chi_1(Relu(), 1.5, 0.1).value)   # sigma_w2 / 2
        0.75
    """
    activation = _check_activation(activation)
    method = _check_method(method, activation)
    w2, b2 = _sigmas(sigma_w2, sigma_b2)
    q0 = real(q0, "q0", lo=0.0)
    max_steps, throw = _static_options(max_steps, throw)
    activation, shape, a = _common(activation, sigma_w2=w2, sigma_b2=b2, q0=q0)
    sol = _call(_chi_1_scalar, activation, shape, (a["sigma_w2"], a["sigma_b2"], a["q0"]), (method, max_steps))
    return _finish_q(sol, throw, shape, a["sigma_w2"], a["sigma_b2"], a["q0"])


@reraise_as_value_error
def mean_field(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0,
               c0: ArrayLike = 0.0, method: AbstractMethod = Auto(), max_steps: int = 100,
               throw: bool = True) -> MeanField:
    r"""All mean-field quantities: :math:`q^*, c^*, \chi_1, \chi_c, \chi_q, \xi_q, \xi_c` (arrays
    broadcast; a :class:`MeanField`, NaN where ``ok`` is false).

    :math:`\xi_c` uses :math:`\chi_c` at the stable :math:`c^*` (Schoenholz et al. eq. 9; in the ordered
    phase :math:`c^* = 1` and :math:`\chi_c = \chi_1`). Differentiable in every argument. Arguments as
    in :func:`q_star` and :func:`c_star`.

    Example:
        >>> from rmtjax.activations import Relu
        >>> mf = mean_field(Relu(), 1.5, 0.1)
        >>> round(float(mf.q_star), 12), float(mf.chi_1)   # sigma_b2 / (1 - sigma_w2 / 2), sigma_w2 / 2
        (0.4, 0.75)
    """
    activation = _check_activation(activation)
    method = _check_method(method, activation)
    w2, b2 = _sigmas(sigma_w2, sigma_b2)
    q0 = real(q0, "q0", lo=0.0)
    c0 = real(c0, "c0", lo=-1.0, hi=1.0)
    max_steps, throw = _static_options(max_steps, throw)
    activation, shape, a = _common(activation, sigma_w2=w2, sigma_b2=b2, q0=q0, c0=c0)
    mf, qs, cs = _call(_mean_field_scalar, activation, shape, (a["sigma_w2"], a["sigma_b2"], a["q0"], a["c0"]),
                       (method, max_steps))
    if not throw:
        return mf
    if concrete(mf.ok) is not None:  # eagerly: the error of the first solve that failed
        _finish_q(qs, throw, shape, a["sigma_w2"], a["sigma_b2"], a["q0"])
        _finish_c(cs, throw, shape, a["sigma_w2"], a["sigma_b2"], a["c0"])
        return mf
    return error_if(mf, ~mf.ok, "mean_field: q* or c* has no finite, converged fixed point at these sigma_w2, "
                                "sigma_b2 (from q0, c0); pass throw=False to get ok=False per point")


@reraise_as_value_error
def edge_of_chaos(activation: AbstractActivation, sigma_b2: ArrayLike, *, sigma_w2_guess: ArrayLike = 2.0,
                  q0: ArrayLike = 1.0, method: AbstractMethod = Auto(), max_steps: int = 100,
                  throw: bool = True) -> Solution:
    r"""The critical :math:`\sigma_w^2` with :math:`\chi_1(\sigma_w^2, \sigma_b^2) = 1` (a
    :class:`rmtjax.solve.Solution`; arrays broadcast, or vmap over ``sigma_b2`` for the whole
    curve). :math:`\log\chi_1` is bracketed in :math:`\log\sigma_w^2` by doubling or halving
    ``sigma_w2_guess`` (> 0) and solved by a safeguarded Newton method, differentiating through the
    inner :math:`q^*` solve implicitly. ``nonlinear_divergence`` where no critical point with a
    finite :math:`q^*` exists (e.g. ReLU with :math:`\sigma_b^2 > 0`, whose :math:`q^*` diverges at
    :math:`\sigma_w^2 = 2`).

    Example:
        >>> from rmtjax.activations import Relu
        >>> float(edge_of_chaos(Relu(), 0.0).value)
        2.0
    """
    activation = _check_activation(activation)
    method = _check_method(method, activation)
    b2 = real(sigma_b2, "sigma_b2", lo=0.0)
    guess = real(sigma_w2_guess, "sigma_w2_guess", lo=0.0, lo_open=True)
    q0 = real(q0, "q0", lo=0.0)
    max_steps, throw = _static_options(max_steps, throw)
    activation, shape, a = _common(activation, sigma_b2=b2, sigma_w2_guess=guess, q0=q0)
    sol = _call(_edge_scalar, activation, shape, (a["sigma_b2"], a["sigma_w2_guess"], a["q0"]), (method, max_steps))
    return _finish(sol, throw=throw, name="edge of chaos (chi_1 = 1)",
                   remedy="Try another sigma_w2_guess, raise max_steps, or pass throw=False to get ok=False per point.",
                   what={"nonlinear_divergence": "has no critical sigma_w2 with a finite q* (chi_1 does not cross 1 "
                                                 "within a factor 2^60 of sigma_w2_guess before q* stops existing)",
                         "nonfinite": "is undefined: q* has no finite value at sigma_w2_guess"},
                   traced_message="edge of chaos (chi_1 = 1): no critical sigma_w2 with a finite q* found at these "
                                  "sigma_b2 (from sigma_w2_guess); pass throw=False to get ok=False per point",
                   at=_at(shape, sigma_b2=a["sigma_b2"], sigma_w2_guess=a["sigma_w2_guess"]))


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (eqx.debug.get_num_traces), no limit
def _phase_core(activation, w2, b2, q0, c0, method, max_steps):
    def one(w, b):
        return _mean_field_scalar(activation, w, b, q0, c0, method, max_steps)[0]

    shape = (w2.shape[0], b2.shape[0])
    ww, bb = (jnp.broadcast_to(x, shape).reshape(-1) for x in (w2[:, None], b2[None, :]))
    out = jax.vmap(one)(ww, bb)  # one flat batch: one while loop for the whole grid
    return jax.tree_util.tree_map(lambda x: x.reshape(shape), out)


@reraise_as_value_error
def phase_diagram(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0,
                  c0: ArrayLike = 0.0, method: AbstractMethod = Auto(), max_steps: int = 100) -> MeanField:
    r""":func:`mean_field` over the grid ``sigma_w2 x sigma_b2`` (non-empty 1-d arrays), vmapped, with
    ``throw=False``: fields have shape ``(len(sigma_w2), len(sigma_b2))`` and ``ok`` marks the
    points where both fixed points exist and converged (the others are NaN). Compiled once per
    grid shape: repeated calls do not recompile.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Relu
        >>> pd = phase_diagram(Relu(), jnp.array([1.0, 1.5, 2.5]), jnp.array([0.1]))
        >>> [bool(o) for o in pd.ok[:, 0]]   # sigma_w2 = 2.5: the variance diverges, no q*
        [True, True, False]
    """
    activation = _check_activation(activation)
    method = _check_method(method, activation)
    w2 = real(sigma_w2, "sigma_w2", ndim=1, lo=0.0)
    b2 = real(sigma_b2, "sigma_b2", ndim=1, lo=0.0)
    q0 = real(q0, "q0", ndim=0, lo=0.0)
    c0 = real(c0, "c0", ndim=0, lo=-1.0, hi=1.0)
    max_steps = static_int(max_steps, "max_steps", lo=1, hi=10**6)
    dtype = jnp.result_type(w2, b2, q0, c0, *_float_leaves(activation))
    activation, _, a = _common(activation, q0=q0.astype(dtype), c0=c0.astype(dtype))
    return _phase_core(activation, w2.astype(dtype), b2.astype(dtype), a["q0"], a["c0"], method, max_steps)
