r"""Online SGD of a soft committee machine: the Saad-Solla order-parameter ODEs.

Student :math:`\phi(x) = \sum_{k=1}^K v_k\, g(\lambda_k)`, :math:`\lambda_k = w_k\cdot x/\sqrt N`;
teacher :math:`y = \sum_{m=1}^M \tilde v_m \tilde g(\nu_m) + \sigma\zeta`,
:math:`\nu_m = \tilde w_m\cdot x/\sqrt N`, :math:`x\sim\mathcal N(0, I_N)`,
:math:`\zeta\sim\mathcal N(0,1)`. One SGD step on :math:`\tfrac12(\phi - y)^2` with a fresh sample,

.. math::
    w_k \leftarrow w_k - \frac{\eta}{\sqrt N}\, d_k\, x,\qquad
    v_k \leftarrow v_k - \frac{\eta_v}{N}\, g(\lambda_k)\,\Delta,\qquad
    d_k = v_k g'(\lambda_k)\Delta,\quad \Delta = \phi - y,

is, for :math:`N\to\infty` and time :math:`t = \mu/N` (``mu`` steps), the deterministic flow of
:math:`Q_{kl} = w_k\cdot w_l/N`, :math:`R_{km} = w_k\cdot\tilde w_m/N` and :math:`v`
(Saad & Solla 1995, Phys. Rev. E 52, 4225, eqs. 9-10; Biehl & Schwarze 1995; with the second
layer, Goldt et al. 2019, NeurIPS, eqs. 7-9):

.. math::
    \dot R_{km} = -\eta\,\mathbb E[d_k \nu_m],\qquad
    \dot Q_{kl} = -\eta\,\mathbb E[d_k\lambda_l + d_l\lambda_k]
                 + \eta^2\,\mathbb E[d_k d_l],\qquad
    \dot v_k = -\eta_v\,\mathbb E[g(\lambda_k)\Delta],

where the expectations over the Gaussian fields are the integrals of
:mod:`rmtjax.dynamics._integrals`: with signs :math:`s = (v, -\tilde v)`,
:math:`\mathbb E[d_k u_b] = v_k\sum_c s_c I_3(k,b,c)`,
:math:`\mathbb E[d_k d_l] = v_k v_l(\sum_{cd} s_c s_d I_4(k,l,c,d) + \sigma^2 J_2(k,l))` and
:math:`\mathbb E[g(\lambda_k)\Delta] = \sum_c s_c I_2(k,c)`. The generalization error is
:math:`\epsilon_g = \tfrac12\,s^\top I_2\,s` (noise excluded).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._validate import as_real, check_range, concrete, error_if, flag, reraise_as_value_error, symmetric_psd
from ..activations import AbstractActivation, Erf
from ..gaussian import AbstractMethod, Auto
from ..solve import root
from . import _checks
from ._integrals import Integrals, _integrals, _pair

__all__ = [
    "CommitteeState",
    "saad_solla_erf",
    "FixedPoint",
    "Trajectory",
    "committee_fixed_point",
    "committee_ode",
    "committee_rhs",
    "generalization_error",
]


def saad_solla_erf() -> Erf:
    r""":math:`g(x) = \operatorname{erf}(x/\sqrt2)`, the activation of Saad & Solla (1995) (the default
    ``student``; built per call, not at import, so that importing the package does not start the XLA
    backend, and not cached, so that a copy built while tracing never leaks into another computation)."""
    return Erf(b=1 / math.sqrt(2))


class CommitteeState(NamedTuple):
    """Order parameters: ``Q`` ``(K, K)``, ``R`` ``(K, M)``, second layer ``v`` ``(K,)``."""

    Q: Array
    R: Array
    v: Array


class Trajectory(NamedTuple):
    """Order parameters on a time grid (leading axis ``t``), with :math:`\\epsilon_g(t)`."""

    t: Array
    Q: Array
    R: Array
    v: Array
    eps_g: Array


def _check_state(state, T: ArrayLike, v_teacher: ArrayLike, prefix: str = "", *, psd: bool | str = True):
    """Validated ``(CommitteeState(Q, R, v), T, v_teacher)`` in one floating dtype.

    Structure at once; values (finite; ``Q``, ``T`` symmetric positive semi-definite and the
    field covariance :math:`C = [[Q, R], [R^T, T]]` positive semi-definite, up to rounding) eagerly
    or by ``error_if``. ``prefix`` names the state argument (``"state0."`` -> ``state0.Q``).
    ``psd="guess"``: ``Q`` only symmetric (a solver's starting point); ``psd=False``: no matrix
    checks (Gram matrices of weights). Tolerances: :func:`_tolerance`."""
    if not (isinstance(state, tuple) and len(state) == 3):
        raise ValueError(f"{prefix.rstrip('.') or 'state'} must be a CommitteeState(Q, R, v), got "
                         f"{type(state).__name__}")
    nQ, nR, nv = (f"{prefix}{n}" for n in ("Q", "R", "v"))
    Q = as_real(state[0], nQ, ndim=2)
    if Q.shape[0] != Q.shape[1]:
        raise ValueError(f"{nQ} must be (K, K) with K >= 1 student units, got shape {Q.shape}")
    K = Q.shape[0]
    T = as_real(T, "T", ndim=2)
    if T.shape[0] != T.shape[1]:
        raise ValueError(f"T must be (M, M) with M >= 1 teacher units, got shape {T.shape}")
    M = T.shape[0]
    R = as_real(state[1], nR, ndim=2, allow_empty=True)
    if R.shape != (K, M):
        raise ValueError(f"{nR} must have shape (K, M) = {(K, M)}, got {R.shape}")
    v = as_real(state[2], nv, ndim=1)
    if v.shape != (K,):
        raise ValueError(f"{nv} must have shape (K,) = {(K,)}, got {v.shape}")
    vt = as_real(v_teacher, "v_teacher", ndim=1)
    if vt.shape != (M,):
        raise ValueError(f"v_teacher must have shape (M,) = {(M,)}, got {vt.shape}")
    dt = _checks.common_dtype(Q, R, v, T, vt)
    Q, R, v, T, vt = (check_range(a.astype(dt), n) for a, n in ((Q, nQ), (R, nR), (v, nv), (T, "T"), (vt, "v_teacher")))
    tol = _tolerance(K + M, dt)
    if psd == "guess":  # a starting point: symmetric (then symmetrized), not necessarily PSD
        Q = _symmetric(Q, nQ, tol)
        T = symmetric_psd(T, "T", rtol=tol)
    elif psd:
        Q = symmetric_psd(Q, nQ, rtol=tol)
        T = symmetric_psd(T, "T", rtol=tol)
        C = symmetric_psd(_covariance_jit(Q, R, T),
                          f"the covariance [[{nQ}, {nR}], [{nR}^T, T]] of the local fields", rtol=tol)
        if concrete(C) is None:  # traced: the blocks carry the compiled check (concrete: C is unchanged)
            Q, R, T = C[:K, :K], C[:K, K:], C[K:, K:]
    return CommitteeState(Q, R, v), T, vt


def _tolerance(n: int, dtype) -> float:
    """Relative tolerance of the symmetry and PSD checks of order parameters: rounding of the
    dtype (``100 n eps``), but at least 1e-6, so that order parameters measured in float32 and
    passed on in float64 are accepted (their rounding cannot change a result beyond 1e-6)."""
    return max(min(100.0 * n * float(jnp.finfo(dtype).eps), 1e-3), 1e-6)


def _symmetric(x, name: str, tol: float):
    """``x`` symmetrized, after checking that it is symmetric up to ``tol`` of its largest entry."""
    msg = f"{name} must be symmetric (max |{name} - {name}^T| <= {tol:.1e} max |{name}|)"
    x = error_if(x, _asymmetric(x, tol), msg)
    return _symmetrized(x)


# jitted: eagerly, 8 one-operation programs on the first call of _symmetric (measured 2026-12-07)
@functools.partial(jax.jit, static_argnums=1)
def _asymmetric(x, tol: float):
    return jnp.max(jnp.abs(x - x.T)) > tol * jnp.max(jnp.abs(x))


@jax.jit
def _symmetrized(x):
    return 0.5 * (x + x.T)


def _covariance(Q, R, T):
    return jnp.concatenate([jnp.concatenate([Q, R], 1), jnp.concatenate([R.T, T], 1)], 0)


# jitted for the eager validation of a state (concrete order parameters): eagerly, 4 one-operation
# programs on the first call (measured 2026-12-07)
_covariance_jit = jax.jit(_covariance)


def _moments(ints: Integrals, v, vt, noise_var):
    """``B[k, b] = E[d_k u_b]``, ``D[k, l] = E[d_k d_l]``, ``h[k] = E[g(lambda_k) Delta]``."""
    s = jnp.concatenate([v, -vt])
    B = v[:, None] * jnp.einsum("kbc,c->kb", ints.i3, s)
    D = v[:, None] * v[None, :] * (jnp.einsum("klcd,c,d->kl", ints.i4, s, s) + noise_var * ints.j2)
    h = ints.i2[: v.shape[0]] @ s
    return B, D, h


def _eps(ints: Integrals, v, vt):
    return _eps_i2(ints.i2, v, vt)


def _eps_i2(i2, v, vt):
    s = jnp.concatenate([v, -vt])
    return 0.5 * s @ i2 @ s


def _eps_of(Q, R, v, T, vt, student, teacher, method):
    i2 = _pair(_covariance(Q, R, T), student, teacher, Q.shape[0], method)
    return _eps_i2(i2, v, vt)


def _activations(student, teacher):
    student = saad_solla_erf() if student is None else _checks.activation(student, "student")
    teacher = student if teacher is None else _checks.activation(teacher, "teacher")
    return student, teacher


@reraise_as_value_error
def generalization_error(
    Q: ArrayLike,
    R: ArrayLike,
    T: ArrayLike,
    v: ArrayLike,
    v_teacher: ArrayLike,
    *,
    student: AbstractActivation | None = None,
    teacher: AbstractActivation | None = None,
    method: AbstractMethod = Auto(),
) -> Array:
    r""":math:`\epsilon_g = \tfrac12\mathbb E[(\phi(x) - y(x))^2]` (noise-free) from the order
    parameters: :math:`\tfrac12\sum_{ab} s_a s_b I_2(a, b)`, :math:`s = (v, -\tilde v)`
    (Saad & Solla 1995, eq. 8).

    Raises:
        ValueError: shapes that do not match (``Q`` ``(K, K)``, ``R`` ``(K, M)``, ``T`` ``(M, M)``,
            ``v`` ``(K,)``, ``v_teacher`` ``(M,)``), non-finite entries, or order parameters that are
            not overlaps of real vectors: ``Q`` and ``T`` symmetric positive semi-definite and the
            covariance :math:`[[Q, R], [R^\top, T]]` of the local fields positive semi-definite (up to
            rounding, :func:`rmtjax._validate.symmetric_psd`) — eagerly, or under ``jit`` by
            ``equinox.error_if``.

    Example:
        >>> import jax.numpy as jnp
        >>> eg = generalization_error(jnp.eye(2), jnp.eye(2), jnp.eye(2), jnp.ones(2), jnp.ones(2))
        >>> float(eg)
        0.0
    """
    state, T, vt = _check_state(CommitteeState(Q, R, v), T, v_teacher)
    student, teacher = _activations(student, teacher)
    return _eps_of_jit(*state, T, vt, student, teacher, _checks.method(method, four_dimensional=False))


# jitted: eagerly, 7 one-operation programs on the first call (measured 2026-12-07)
_eps_of_jit = eqx.filter_jit(_eps_of)


def _rhs(state: CommitteeState, args):
    T, vt, eta, eta_v, noise_var, student, teacher, method = args
    Q = 0.5 * (state.Q + state.Q.T)
    K = Q.shape[0]
    ints = _integrals(_covariance(Q, state.R, T), student, teacher, K, method)
    B, D, h = _moments(ints, state.v, vt, noise_var)
    dQ = -eta * (B[:, :K] + B[:, :K].T) + eta * eta * D
    dR = -eta * B[:, K:]
    dv = -eta_v * h
    return CommitteeState(dQ, dR, dv)


def _rates(eta, eta_v, noise_std, dtype):
    return (_checks.positive(eta, "eta", dtype), _checks.nonnegative(eta_v, "eta_v", dtype),
            _checks.nonnegative(noise_std, "noise_std", dtype))


@reraise_as_value_error
def committee_rhs(
    state: CommitteeState,
    T: ArrayLike,
    v_teacher: ArrayLike,
    eta: ArrayLike,
    eta_v: ArrayLike = 0.0,
    noise_std: ArrayLike = 0.0,
    *,
    student: AbstractActivation | None = None,
    teacher: AbstractActivation | None = None,
    method: AbstractMethod = Auto(),
) -> CommitteeState:
    r"""The time derivative :math:`(\dot Q, \dot R, \dot v)` of the Saad-Solla equations (module
    docstring; Saad & Solla 1995, eqs. 9-10). Arguments and checks as in :func:`committee_ode`.

    Example:
        >>> import jax.numpy as jnp
        >>> s = CommitteeState(0.5 * jnp.eye(2), jnp.zeros((2, 2)), jnp.ones(2))
        >>> d = committee_rhs(s, jnp.eye(2), jnp.ones(2), 0.5)
    """
    state, T, vt = _check_state(state, T, v_teacher, "state.")
    eta, eta_v, noise_std = _rates(eta, eta_v, noise_std, T.dtype)
    student, teacher = _activations(student, teacher)
    return _rhs_jit(state, (T, vt, eta, eta_v, noise_std, student, teacher, _checks.method(method)))


@eqx.filter_jit
def _rhs_jit(state, args):
    # jitted: eagerly, 21 one-operation programs on the first call (measured 2026-12-07)
    T, vt, eta, eta_v, noise_std, student, teacher, method = args
    return _rhs(state, (T, vt, eta, eta_v, noise_std**2, student, teacher, method))


def _integration_failed(fn: str, reason: str, max_steps: int) -> str:
    return (f"{fn} could not integrate up to ts[-1]{reason}: the order parameters diverge at this learning rate "
            f"eta (lower eta), or the step-size control needs more than max_steps = {max_steps} steps "
            "(raise max_steps, or loosen rtol/atol)")


@eqx.filter_jit
def _integration_ok(traj, result):
    # jitted: eagerly, 6 one-operation programs on the first call (measured 2026-12-07)
    ok = result == diffrax.RESULTS.successful
    return ok & jnp.all(jnp.isfinite(traj.eps_g)) & jnp.all(jnp.isfinite(traj.Q)) & jnp.all(jnp.isfinite(traj.R))


def _finish_integration(traj, result, fn: str, max_steps: int):
    """Raises (eagerly) or compiles in (``error_if``) the failure of an integration: a diffrax
    result code other than success, or non-finite order parameters."""
    ok = _integration_ok(traj, result)
    okc = concrete(ok)
    if okc is None:
        return error_if(traj, ~ok, _integration_failed(fn, "", max_steps))
    if not np.all(okc):
        reason = ""
        try:
            if np.ndim(okc) == 0 and not bool(concrete(result == diffrax.RESULTS.successful)):
                reason = f" ({diffrax.RESULTS[result]})"
        except Exception:  # noqa: BLE001 - the message is a courtesy
            reason = ""
        raise ValueError(_integration_failed(fn, reason, max_steps))
    return traj


@reraise_as_value_error
def committee_ode(
    state0: CommitteeState,
    T: ArrayLike,
    v_teacher: ArrayLike,
    ts: ArrayLike,
    eta: ArrayLike,
    eta_v: ArrayLike = 0.0,
    noise_std: ArrayLike = 0.0,
    *,
    student: AbstractActivation | None = None,
    teacher: AbstractActivation | None = None,
    method: AbstractMethod = Auto(),
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 100_000,
) -> Trajectory:
    r"""Integrates the Saad-Solla ODEs (module docstring) with diffrax (Tsit5, adaptive PID
    steps) and returns the order parameters and :math:`\epsilon_g` at the times ``ts``.

    Args:
        state0: initial :class:`CommitteeState` (e.g. measured on a simulation's initial weights).
        T: ``(M, M)`` teacher overlaps :math:`\tilde w_n\cdot\tilde w_m/N`.
        v_teacher: ``(M,)`` teacher second layer :math:`\tilde v`.
        ts: strictly increasing, finite save times (``ts[0]`` is the initial time), in units of
            :math:`\mu/N`.
        eta: first-layer learning rate (``> 0``); ``jax.vmap`` over it for a sweep.
        eta_v: second-layer learning rate (``>= 0``; 0 keeps ``v`` fixed).
        noise_std: output-noise standard deviation :math:`\sigma` (``>= 0``).
        student, teacher: activations (teacher defaults to the student's); Saad & Solla's
            :math:`\operatorname{erf}(x/\sqrt2)` by default.
        method: how the Gaussian integrals are evaluated (see :func:`committee_integrals`).
        rtol, atol: step-size control; ``None`` means 1e-8 / 1e-10 in float64, raised to
            :math:`128\varepsilon` / :math:`16\varepsilon` of the state's dtype
            (:func:`rmtjax._numerics.solver_tolerances`: 1.5e-5 / 1.9e-6 in float32).
        max_steps: step limit of the solver (static).

    Returns:
        :class:`Trajectory` with leading axis ``len(ts)``.

    Raises:
        ValueError: mismatched shapes, non-finite entries, order parameters that are not a
            covariance (see :func:`generalization_error`), ``ts`` not strictly increasing,
            ``eta <= 0``, ``eta_v < 0``, ``noise_std < 0`` (under ``jit``: the same message by
            ``equinox.error_if``); an integration that fails to reach ``ts[-1]`` (diverging order
            parameters, or more than ``max_steps`` steps).

    Example:
        >>> import jax.numpy as jnp
        >>> s0 = CommitteeState(0.1 * jnp.eye(2), 0.01 * jnp.eye(2), jnp.ones(2))
        >>> traj = committee_ode(s0, jnp.eye(2), jnp.ones(2), jnp.linspace(0, 50, 6), 1.0)
        >>> bool(traj.eps_g[-1] < traj.eps_g[0])
        True
    """
    state0, T, vt = _check_state(state0, T, v_teacher, "state0.")
    dt = T.dtype
    eta, eta_v, noise_std = _rates(eta, eta_v, noise_std, dt)
    ts = _checks.times(ts, "ts", dt)
    student, teacher = _activations(student, teacher)
    method = _checks.method(method)
    rtol, atol = _checks.tolerances(dt, rtol, atol, 1e-8, 1e-10)
    max_steps = _checks.max_steps(max_steps)
    # arrays, not Python floats: under ``eqx.filter_jit`` a float would be static (a recompile
    # for every value)
    args = (T, vt, eta, eta_v, noise_std, student, teacher, method)
    traj, result = _solve(state0, args, ts, rtol, atol, max_steps)
    return _finish_integration(traj, result, "committee_ode", max_steps)


@eqx.filter_jit
def _solve(state0, args, ts, rtol, atol, max_steps):
    """Compiled once per shape and configuration (module-level functions only, so repeated
    eager calls hit the cache); ``args`` holds ``noise_std``, squared here (eagerly, its square
    was one more one-operation program)."""
    T, vt, eta, eta_v, noise_std, student, teacher, method = args
    args = (T, vt, eta, eta_v, noise_std**2, student, teacher, method)
    ys, result = _integrate(_rhs, state0, args, ts, rtol, atol, max_steps)
    eps = jax.vmap(lambda Q, R, v: _eps_of(Q, R, v, T, vt, student, teacher, method))(ys.Q, ys.R, ys.v)
    return Trajectory(ts, ys.Q, ys.R, ys.v, eps), result


def _integrate(rhs, y0, args, ts, rtol, atol, max_steps):
    """diffrax Tsit5 + PID controller from ``ts[0]`` to ``ts[-1]``, saved at ``ts`` (call it under
    a jit: the vector field is a fresh closure). Returns the states and diffrax's result code
    (no exception: the caller reports a failure with its own message)."""
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: rhs(y, a)),
        diffrax.Tsit5(),
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=y0,
        args=args,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    return sol.ys, sol.result


# ------------------------------------------------------------------------------------------
# fixed points (plateaus)
# ------------------------------------------------------------------------------------------


class FixedPoint(NamedTuple):
    """A fixed point of the :math:`(Q, R)` flow at fixed ``v``.

    Attributes:
        state: the fixed point.
        eps_g: :math:`\\epsilon_g` there (the plateau height).
        growth_rate: largest real part of the Jacobian's eigenvalues (over the independent
            entries of ``Q`` and ``R``): positive for a saddle (the plateau), whose escape takes
            :math:`t_{esc}\\approx \\log(1/\\delta)/\\text{growth\\_rate}` from a
            symmetry-breaking perturbation :math:`\\delta`.
        ok: the root solve converged to a physical point (finite, with a positive semi-definite
            covariance of the local fields).
        residual: max-norm of the flow at ``state``.
    """

    state: CommitteeState
    eps_g: Array
    growth_rate: Array
    ok: Array
    residual: Array


def _unpack(y, v, K: int, M: int):
    iu = np.triu_indices(K)
    Q = jnp.zeros((K, K), y.dtype).at[iu].set(y[: len(iu[0])])
    Q = Q + Q.T - jnp.diag(jnp.diag(Q))
    return CommitteeState(Q, y[len(iu[0]):].reshape(K, M), v)


def _flow(y, a, K, M, student, teacher, method):
    v, T, vt, eta, noise_var = a
    d = _rhs(_unpack(y, v, K, M), (T, vt, eta, jnp.zeros((), y.dtype), noise_var, student, teacher, method))
    return jnp.concatenate([d.Q[np.triu_indices(K)], d.R.reshape(-1)])


@eqx.filter_jit
def _fixed_point(Q, R, a, K: int, M: int, student, teacher, method):
    """Newton from the independent entries of ``Q`` and ``R`` (``throw=False``), the Jacobian's
    leading growth rate and the physicality of the root; compiled once per shape and configuration
    (with the packing of the guess and the square of ``noise_std`` = ``a[4]``: eagerly, 11
    one-operation programs on the first call, measured 2026-12-07)."""
    y0 = jnp.concatenate([Q[np.triu_indices(K)], R.reshape(-1)])
    a = a[:4] + (a[4] ** 2,)
    flow = lambda y, a: _flow(y, a, K, M, student, teacher, method)  # noqa: E731
    sol = root(flow, y0, a, throw=False, name="committee fixed point")
    J = jax.jacfwd(flow)(sol.value, a)
    rate = jnp.max(jnp.real(jnp.linalg.eigvals(J)))
    fp = _unpack(sol.value, a[0], K, M)
    T = a[1]
    C = _covariance(fp.Q, fp.R, T)
    ev = jnp.linalg.eigvalsh(C)
    tol = min(100.0 * C.shape[0] * float(jnp.finfo(C.dtype).eps), 1e-3)
    physical = ev[0] >= -tol * jnp.max(jnp.abs(ev))
    eps = _eps_of(*fp, T, a[2], student, teacher, method)
    finite = jnp.all(jnp.isfinite(sol.value)) & jnp.isfinite(rate) & jnp.isfinite(eps)
    return FixedPoint(fp, eps, rate, sol.ok & physical & finite, sol.residual), sol.ok, ev[0]


@reraise_as_value_error
def committee_fixed_point(
    guess: CommitteeState,
    T: ArrayLike,
    v_teacher: ArrayLike,
    eta: ArrayLike,
    noise_std: ArrayLike = 0.0,
    *,
    student: AbstractActivation | None = None,
    teacher: AbstractActivation | None = None,
    method: AbstractMethod = Auto(),
    throw: bool = True,
) -> FixedPoint:
    r"""Fixed point :math:`\dot Q = \dot R = 0` near ``guess`` (``v`` held fixed), by
    :func:`rmtjax.solve.root` over the upper triangle of ``Q`` and ``R``, and the growth rate of
    its most unstable direction. From a symmetric guess (all :math:`R_{km}` equal, equal
    diagonal of ``Q``) Newton stays in the symmetric subspace and finds the unspecialised
    plateau of Saad & Solla (1995, Sec. IV).

    The Newton tolerances follow the dtype (:func:`rmtjax._numerics.solver_tolerances`), so the
    solve works in float32 as in float64. A root is accepted only if it is physical: finite, with a
    positive semi-definite covariance :math:`[[Q, R], [R^\top, T]]` (up to rounding); otherwise
    ``ok`` is false (``throw=False``) or a ``ValueError`` is raised (``throw=True``).

    Raises:
        ValueError: bad arguments (as in :func:`committee_ode`); with ``throw=True``, no
            convergence or an unphysical root (under ``jit``: ``equinox.error_if``).

    Example:
        >>> import jax.numpy as jnp
        >>> g = CommitteeState(jnp.array([[0.4, 0.3], [0.3, 0.4]]), jnp.full((2, 2), 0.42), jnp.ones(2))
        >>> fp = committee_fixed_point(g, jnp.eye(2), jnp.ones(2), 0.1)  # the plateau of Saad & Solla
        >>> bool(fp.ok), round(float(fp.eps_g), 4), bool(fp.growth_rate > 0)
        (True, 0.0121, True)
    """
    state, T, vt = _check_state(guess, T, v_teacher, "guess.", psd="guess")
    eta = _checks.positive(eta, "eta", T.dtype)
    noise_std = _checks.nonnegative(noise_std, "noise_std", T.dtype)
    student, teacher = _activations(student, teacher)
    method = _checks.method(method)
    throw = flag(throw, "throw")
    K, M = state.R.shape
    fp, converged, lowest = _fixed_point(state.Q, state.R, (state.v, T, vt, eta, noise_std), K, M, student, teacher,
                                         method)
    if not throw:
        return fp
    ok = concrete(fp.ok)
    if ok is None:
        return error_if(fp, ~fp.ok, "committee_fixed_point: Newton from guess did not converge to a physical fixed "
                        "point (finite, with a positive semi-definite covariance [[Q, R], [R^T, T]]); start nearer "
                        "the plateau (e.g. from a committee_ode trajectory) or pass throw=False to inspect")
    if not np.all(ok):
        if not bool(concrete(converged)):
            why = f"did not converge (residual {float(fp.residual):.3e})"
        elif float(concrete(lowest)) < 0:
            why = (f"converged to an unphysical point (the covariance [[Q, R], [R^T, T]] has the eigenvalue "
                   f"{float(concrete(lowest)):.3g} < 0)")
        else:
            why = "converged to a non-finite point"
        raise ValueError(f"committee_fixed_point: Newton from guess {why}; start nearer the plateau (e.g. from a "
                         "committee_ode trajectory) or pass throw=False to inspect")
    return fp
