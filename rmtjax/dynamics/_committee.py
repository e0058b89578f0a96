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

import math
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._validate import check_finite_array, check_nonnegative, concrete
from ..activations import AbstractActivation, Erf
from ..gaussian import AbstractMethod, Auto
from ..solve import root
from ._integrals import Integrals, committee_integrals, pair_integrals

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


def _check_positive(x, name: str):
    v = concrete(x)
    if v is not None:
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"{name} must be finite and > 0, got {v}")
        return jnp.asarray(x)
    x = jnp.asarray(x)
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x) & (x > 0)), f"{name} must be finite and > 0")


def _as_float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)


def _check_state(state: CommitteeState, T: ArrayLike, v_teacher: ArrayLike):
    Q, R, v = (_as_float(a) for a in state)
    T, vt = _as_float(T), _as_float(v_teacher)
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1] or Q.shape[0] < 1:
        raise ValueError(f"Q must be (K, K) with K >= 1 student units, got shape {Q.shape}")
    K = Q.shape[0]
    if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] < 1:
        raise ValueError(f"T must be (M, M) with M >= 1 teacher units, got shape {T.shape}")
    M = T.shape[0]
    if R.shape != (K, M):
        raise ValueError(f"R must have shape (K, M) = {(K, M)}, got {R.shape}")
    if v.shape != (K,):
        raise ValueError(f"v must have shape (K,) = {(K,)}, got {v.shape}")
    if vt.shape != (M,):
        raise ValueError(f"v_teacher must have shape (M,) = {(M,)}, got {vt.shape}")
    Q = check_finite_array(Q, "initial condition Q")
    R = check_finite_array(R, "initial condition R")
    v = check_finite_array(v, "initial condition v")
    T = check_finite_array(T, "T")
    vt = check_finite_array(vt, "v_teacher")
    return CommitteeState(Q, R, v), T, vt


def _covariance(Q, R, T):
    return jnp.concatenate([jnp.concatenate([Q, R], 1), jnp.concatenate([R.T, T], 1)], 0)


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
    i2 = pair_integrals(_covariance(Q, R, T), student, teacher, num_student=Q.shape[0], method=method)
    return _eps_i2(i2, v, vt)


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

    Example:
        >>> import jax.numpy as jnp
        >>> eg = generalization_error(jnp.eye(2), jnp.eye(2), jnp.eye(2), jnp.ones(2), jnp.ones(2))
        >>> float(eg)
        0.0
    """
    state, T, vt = _check_state(CommitteeState(Q, R, v), T, v_teacher)
    student = saad_solla_erf() if student is None else student
    teacher = student if teacher is None else teacher
    return _eps_of(*state, T, vt, student, teacher, method)


def _rhs(state: CommitteeState, args):
    T, vt, eta, eta_v, noise_var, student, teacher, method = args
    Q = 0.5 * (state.Q + state.Q.T)
    K = Q.shape[0]
    ints = committee_integrals(_covariance(Q, state.R, T), student, teacher, num_student=K, method=method)
    B, D, h = _moments(ints, state.v, vt, noise_var)
    dQ = -eta * (B[:, :K] + B[:, :K].T) + eta * eta * D
    dR = -eta * B[:, K:]
    dv = -eta_v * h
    return CommitteeState(dQ, dR, dv)


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
    docstring; Saad & Solla 1995, eqs. 9-10).

    Example:
        >>> import jax.numpy as jnp
        >>> s = CommitteeState(0.5 * jnp.eye(2), jnp.zeros((2, 2)), jnp.ones(2))
        >>> d = committee_rhs(s, jnp.eye(2), jnp.ones(2), 0.5)
    """
    state, T, vt = _check_state(state, T, v_teacher)
    eta = _check_positive(eta, "eta")
    eta_v = check_nonnegative(eta_v, "eta_v")
    noise_std = check_nonnegative(noise_std, "noise_std")
    student = saad_solla_erf() if student is None else student
    teacher = student if teacher is None else teacher
    return _rhs(state, (T, vt, eta, eta_v, noise_std**2, student, teacher, method))


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
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
) -> Trajectory:
    r"""Integrates the Saad-Solla ODEs (module docstring) with diffrax (Tsit5, adaptive PID
    steps) and returns the order parameters and :math:`\epsilon_g` at the times ``ts``.

    Args:
        state0: initial :class:`CommitteeState` (e.g. measured on a simulation's initial weights).
        T: ``(M, M)`` teacher overlaps :math:`\tilde w_n\cdot\tilde w_m/N`.
        v_teacher: ``(M,)`` teacher second layer :math:`\tilde v`.
        ts: increasing save times (``ts[0]`` is the initial time), in units of :math:`\mu/N`.
        eta: first-layer learning rate (``> 0``); ``jax.vmap`` over it for a sweep.
        eta_v: second-layer learning rate (``>= 0``; 0 keeps ``v`` fixed).
        noise_std: output-noise standard deviation :math:`\sigma` (``>= 0``).
        student, teacher: activations (teacher defaults to the student's); Saad & Solla's
            :math:`\operatorname{erf}(x/\sqrt2)` by default.
        method: how the Gaussian integrals are evaluated (see :func:`committee_integrals`).
        rtol, atol, max_steps: step-size control of the solver.

    Returns:
        :class:`Trajectory` with leading axis ``len(ts)``.

    Raises:
        ValueError: ``K < 1``, ``M < 1``, mismatched shapes, non-finite initial conditions,
            ``eta <= 0``, ``eta_v < 0``, ``noise_std < 0``.

    Example:
        >>> import jax.numpy as jnp
        >>> s0 = CommitteeState(0.1 * jnp.eye(2), 0.01 * jnp.eye(2), jnp.ones(2))
        >>> traj = committee_ode(s0, jnp.eye(2), jnp.ones(2), jnp.linspace(0, 50, 6), 1.0)
        >>> bool(traj.eps_g[-1] < traj.eps_g[0])
        True
    """
    state0, T, vt = _check_state(state0, T, v_teacher)
    eta = _check_positive(eta, "eta")
    eta_v = check_nonnegative(eta_v, "eta_v")
    noise_std = check_nonnegative(noise_std, "noise_std")
    ts = _as_float(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-d array of at least 2 increasing times, got shape {ts.shape}")
    student = saad_solla_erf() if student is None else student
    teacher = student if teacher is None else teacher
    # arrays, not Python floats: under ``eqx.filter_jit`` a float would be static (a recompile
    # for every value)
    args = (T, vt, jnp.asarray(eta, ts.dtype), jnp.asarray(eta_v, ts.dtype), jnp.asarray(noise_std, ts.dtype) ** 2,
            student, teacher, method)
    return _solve(state0, args, ts, float(rtol), float(atol), int(max_steps))


@eqx.filter_jit
def _solve(state0, args, ts, rtol, atol, max_steps) -> Trajectory:
    """Compiled once per shape and configuration (module-level functions only, so repeated
    eager calls hit the cache)."""
    ys = _integrate(_rhs, state0, args, ts, rtol, atol, max_steps)
    T, vt, _, _, _, student, teacher, method = args
    eps = jax.vmap(lambda Q, R, v: _eps_of(Q, R, v, T, vt, student, teacher, method))(ys.Q, ys.R, ys.v)
    return Trajectory(ts, ys.Q, ys.R, ys.v, eps)


def _integrate(rhs, y0, args, ts, rtol, atol, max_steps):
    """diffrax Tsit5 + PID controller from ``ts[0]`` to ``ts[-1]``, saved at ``ts`` (call it under
    a jit: the vector field is a fresh closure)."""
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
    )
    return sol.ys


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
        ok: the root solve converged.
        residual: max-norm of the flow at ``state``.
    """

    state: CommitteeState
    eps_g: Array
    growth_rate: Array
    ok: Array
    residual: Array


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

    Example:
        >>> import jax.numpy as jnp
        >>> g = CommitteeState(jnp.array([[0.6, 0.4], [0.4, 0.6]]), jnp.full((2, 2), 0.5), jnp.ones(2))
        >>> fp = committee_fixed_point(g, jnp.eye(2), jnp.ones(2), 0.1)
        >>> bool(fp.growth_rate > 0)
        True
    """
    state, T, vt = _check_state(guess, T, v_teacher)
    eta = _check_positive(eta, "eta")
    noise_std = check_nonnegative(noise_std, "noise_std")
    student = saad_solla_erf() if student is None else student
    teacher = student if teacher is None else teacher
    K, M = state.R.shape
    iu = np.triu_indices(K)

    def unpack(y, v):
        Q = jnp.zeros((K, K), y.dtype).at[iu].set(y[: len(iu[0])])
        Q = Q + Q.T - jnp.diag(jnp.diag(Q))
        return CommitteeState(Q, y[len(iu[0]):].reshape(K, M), v)

    def flow(y, a):
        v, T, vt, eta, noise_var = a
        d = _rhs(unpack(y, v), (T, vt, eta, 0.0, noise_var, student, teacher, method))
        return jnp.concatenate([d.Q[iu], d.R.reshape(-1)])

    y0 = jnp.concatenate([state.Q[iu], state.R.reshape(-1)])
    a = (state.v, T, vt, eta, noise_std**2)
    sol = root(flow, y0, a, throw=throw, name="committee fixed point")
    J = jax.jacfwd(flow)(sol.value, a)
    rate = jnp.max(jnp.real(jnp.linalg.eigvals(J)))
    fp = unpack(sol.value, state.v)
    return FixedPoint(fp, _eps_of(*fp, T, vt, student, teacher, method), rate, sol.ok, sol.residual)
