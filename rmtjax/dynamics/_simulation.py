r"""Online SGD of a two-layer network in JAX, recording the order parameters of the ODEs.

One step (a fresh sample :math:`(x, y)` each time, :math:`t = \mu/N`):

.. math::
    w_k \leftarrow w_k - \frac{\eta}{\sqrt N}\, v_k g'(\lambda_k)\,\Delta\, x,\qquad
    v_k \leftarrow v_k - \frac{\eta_v}{N}\, g(\lambda_k)\,\Delta,\qquad
    \Delta = \sum_k v_k g(\lambda_k) - y,\quad \lambda = w x / \sqrt N

(Saad & Solla 1995; Goldt et al. 2019). The loop is a ``lax.scan`` over save intervals with an
inner ``lax.scan`` over steps; ``jax.vmap`` it over keys (seeds) and initial weights.
``progress=True`` shows a tqdm bar over the save intervals (a ``jax.debug.callback`` per save,
so it also works under ``jit`` and ``vmap``: the vmapped copies advance the same bar).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

import numpy as np

from .._validate import as_real, check_range, concrete, error_if, flag, prng_key, reraise_as_value_error, static_int
from ..activations import AbstractActivation
from ..gaussian import Auto
from . import _checks
from ._committee import CommitteeState, Trajectory, _activations, _check_state, _eps_of, _rates

__all__ = ["online_sgd", "simulate_committee"]


def gaussian_block(key: Array, shape: tuple[int, ...], dtype) -> Array:
    """Standard normals drawn in float32 (twice as fast as float64 on CPU, where drawing the
    inputs dominates a step) and cast to ``dtype``; the order parameters stay in ``dtype``."""
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)


_MAX_STEPS = 2**31 - 1


def _schedule(N: int, t_max, num_saves, chunk: int = 256) -> tuple[int, int]:
    """``(blocks per save, steps per block)``: about ``N t_max / num_saves`` steps per save, in
    blocks of at most ``chunk`` steps whose samples are drawn in one call."""
    t_max = _checks.static_number(t_max, "t_max")
    num_saves = static_int(num_saves, "num_saves", lo=1)
    if N * t_max > _MAX_STEPS:
        raise ValueError(f"t_max must be at most {_MAX_STEPS / N:.4g} here: N * t_max = {N * t_max:.4g} online SGD "
                         f"steps (N = {N}) is more than {_MAX_STEPS}")
    sps = max(1, int(round(N * t_max / num_saves)))
    size = min(chunk, sps)
    return max(1, int(round(sps / size))), size


def _progress(progress) -> bool | str:
    if isinstance(progress, str):
        return progress
    return flag(progress, "progress")


def _diverged(what: str) -> str:
    return (f"{what}: the weights became non-finite (online SGD diverged at this learning rate eta); lower eta "
            "(or eta_v)")


_BARS: dict[str, Any] = {}


def _tick(i, total, desc: str) -> None:
    """Host side of the progress bar: save ``i`` (0-based) of ``total`` finished. Idempotent, so
    the copies of a vmapped simulation (which all report the same ``i``) advance it once."""
    from tqdm import tqdm

    i, total = int(i) + 1, int(total)
    bar = _BARS.get(desc)
    if bar is None or (i == 1 and bar.n >= 1) or bar.n > i:
        if bar is not None:
            bar.close()
        bar = _BARS[desc] = tqdm(total=total, desc=desc, leave=False)
    if i > bar.n:
        bar.update(i - bar.n)
    if i >= total:
        bar.close()
        _BARS.pop(desc, None)


def _online_sgd(key, w0, v0, eta, eta_v, sample, observe, student, schedule, num_saves, progress):
    """The loop of :func:`online_sgd` (no checks); also returns whether the final weights are
    finite."""
    N = w0.shape[1]
    sq = math.sqrt(N)
    blocks, size = schedule

    def step(carry, xy):
        w, v = carry
        x, y = xy
        lam = w @ x / sq
        gl = student(lam)
        delta = v @ gl - y
        w = w - (eta / sq) * ((v * student.derivative(lam) * delta)[:, None] * x[None, :])
        v = v - (eta_v / N) * gl * delta
        return (w, v), None

    def block(carry, k):
        carry, _ = jax.lax.scan(step, carry, sample(k, size))
        return carry, None

    desc = progress if isinstance(progress, str) else "online SGD"

    def save(carry, ki):
        k, i = ki
        carry, _ = jax.lax.scan(block, carry, jax.random.split(k, blocks))
        if progress:
            jax.debug.callback(_tick, i, num_saves, desc)
        return carry, observe(*carry)

    first = observe(w0, v0)
    (w, v), rest = jax.lax.scan(save, (w0, v0), (jax.random.split(key, num_saves), jnp.arange(num_saves)))
    records = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    return records, jnp.all(jnp.isfinite(w)) & jnp.all(jnp.isfinite(v))


# jitted for online_sgd's eager calls: executed eagerly, the scans (whose bodies are new closures)
# were compiled anew on every call, besides 20 one-operation programs on the first (measured
# 2026-12-07); jitted, once per shape, configuration and pair of callables (static: the same
# sample and observe functions hit the cache)
_online_sgd_jit = eqx.filter_jit(_online_sgd)


def _check_finite_run(out, finite, what: str):
    fc = concrete(finite)
    if fc is None:
        return error_if(out, ~finite, _diverged(what))
    if not np.all(fc):
        raise ValueError(_diverged(what))
    return out


@reraise_as_value_error
def online_sgd(
    key: Array,
    w0: Array,
    v0: Array,
    eta: ArrayLike,
    eta_v: ArrayLike,
    sample: Callable[[Array, int], tuple[Array, Array]],
    observe: Callable[[Array, Array], Any],
    *,
    student: AbstractActivation,
    schedule: tuple[int, int],
    num_saves: int,
    progress: bool | str = False,
) -> Any:
    r"""The generic online-SGD loop. ``sample(key, n) -> (X, y)`` draws ``n`` fresh examples
    (``X`` of shape ``(n, N)``, labels ``(n,)``), used one per step; ``observe(w, v)`` returns
    what to record; ``schedule = (blocks per save, steps per block)`` (static positive integers).
    Returns the records stacked over ``num_saves + 1`` save points (the first before any step).
    ``progress``: a tqdm bar over the saves (``True``, or its description as a string).

    Raises:
        ValueError: bad arguments (``w0`` ``(K, N)`` and ``v0`` ``(K,)`` finite, ``eta > 0``,
            ``eta_v >= 0``, callables, static integers), or weights that become non-finite (the run
            diverged; under ``jit``: ``equinox.error_if``).
    """
    key = prng_key(key, "key")
    w0 = as_real(w0, "w0", ndim=2)
    v0 = as_real(v0, "v0", ndim=1)
    if v0.shape != (w0.shape[0],):
        raise ValueError(f"v0 must have shape (K,) = ({w0.shape[0]},), got {v0.shape}")
    dt = _checks.common_dtype(w0, v0)
    w0, v0 = check_range(w0.astype(dt), "w0"), check_range(v0.astype(dt), "v0")
    eta = _checks.positive(eta, "eta", dt)
    eta_v = _checks.nonnegative(eta_v, "eta_v", dt)
    for name, f in (("sample", sample), ("observe", observe)):
        if not callable(f):
            raise ValueError(f"{name} must be a function, got {type(f).__name__}")
    student = _checks.activation(student, "student")
    if not (isinstance(schedule, (tuple, list)) and len(schedule) == 2):
        raise ValueError(f"schedule must be (blocks per save, steps per block), got {schedule!r}")
    schedule = (static_int(schedule[0], "schedule[0]", lo=1), static_int(schedule[1], "schedule[1]", lo=1))
    num_saves = static_int(num_saves, "num_saves", lo=1)
    if schedule[0] * schedule[1] * num_saves > _MAX_STEPS:
        raise ValueError(f"schedule and num_saves: more than {_MAX_STEPS} steps in all")
    records, finite = _online_sgd_jit(key, w0, v0, eta, eta_v, sample, observe, student, schedule, num_saves,
                                      _progress(progress))
    return _check_finite_run(records, finite, "online_sgd")


@reraise_as_value_error
def simulate_committee(
    key: Array,
    w0: ArrayLike,
    v0: ArrayLike,
    w_teacher: ArrayLike,
    v_teacher: ArrayLike,
    eta: ArrayLike,
    eta_v: ArrayLike = 0.0,
    noise_std: ArrayLike = 0.0,
    *,
    t_max: float,
    num_saves: int,
    student: AbstractActivation | None = None,
    teacher: AbstractActivation | None = None,
    progress: bool | str = False,
) -> Trajectory:
    r"""Online SGD of the soft committee machine on Gaussian inputs :math:`x\sim\mathcal N(0,I_N)`
    (see :mod:`rmtjax.dynamics._committee`), recording :math:`Q = ww^\top/N`,
    :math:`R = w\tilde w^\top/N`, ``v`` and :math:`\epsilon_g(Q, R, T, v, \tilde v)` (exact for
    Gaussian inputs) at ``num_saves + 1`` equally spaced times up to ``t_max``.

    Args:
        key: PRNG key (``jax.vmap`` over keys for seeds).
        w0: ``(K, N)`` initial student weights; v0: ``(K,)``.
        w_teacher: ``(M, N)``; v_teacher: ``(M,)``.
        eta, eta_v, noise_std: as in :func:`committee_ode`.
        t_max: final time (a concrete number, static; about ``N t_max / num_saves`` steps per save).
        num_saves: number of save intervals (static).
        student, teacher: activations (teacher defaults to the student's).
        progress: show a tqdm bar over the saves (``True`` or a description string).

    Returns:
        :class:`Trajectory`; ``t`` holds the exact simulated times (steps / N).

    Raises:
        ValueError: bad arguments (shapes, non-finite weights, ``eta <= 0``, ``eta_v < 0``,
            ``noise_std < 0``, ``t_max`` not a finite number ``> 0`` or more than ``2**31 - 1``
            steps, ``num_saves`` not a static integer ``>= 1``), or a run whose weights become
            non-finite (online SGD diverged; under ``jit``: ``equinox.error_if``).

    Example:
        >>> import jax
        >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        >>> w0 = 0.1 * jax.random.normal(k1, (2, 500)); wt = jax.random.normal(k2, (2, 500))
        >>> traj = simulate_committee(k3, w0, jnp.ones(2), wt, jnp.ones(2), 1.0, t_max=2.0, num_saves=4)
    """
    key = prng_key(key, "key")
    w0 = as_real(w0, "w0", ndim=2)
    wt = as_real(w_teacher, "w_teacher", ndim=2)
    if wt.shape[1] != w0.shape[1]:
        raise ValueError(f"w_teacher must be (M, N) with M >= 1 and N = {w0.shape[1]}, got shape {wt.shape}")
    K, N = w0.shape
    v0 = as_real(v0, "v0", ndim=1)
    if v0.shape != (K,):
        raise ValueError(f"v0 must have shape (K,) = ({K},), got {v0.shape}")
    v0 = check_range(v0, "v0")
    dt = _checks.common_dtype(w0, wt)
    w0 = check_range(w0.astype(dt), "w0")
    wt = check_range(wt.astype(dt), "w_teacher")
    T, Q0, R0 = _grams(w0, wt)
    # Q, R, T are Gram matrices of the weights: positive semi-definite by construction
    state0, T, vt = _check_state(CommitteeState(Q0, R0, v0), T, v_teacher, "", psd=False)
    eta, eta_v, noise_std = _rates(eta, eta_v, noise_std, T.dtype)
    student, teacher = _activations(student, teacher)
    schedule = _schedule(N, t_max, num_saves)
    num_saves = static_int(num_saves, "num_saves", lo=1)
    (Q, R, v), finite = _simulate(key, w0, state0.v, wt, vt, eta, eta_v, noise_std, student, teacher, schedule,
                                  num_saves, _progress(progress))
    Q, R, v = _check_finite_run((Q, R, v), finite, "simulate_committee")
    eps = _eps_trajectory(Q, R, v, T, vt, student, teacher)
    t = jnp.arange(num_saves + 1, dtype=T.dtype) * (schedule[0] * schedule[1] / N)
    return Trajectory(t, Q, R, v, eps)


@jax.jit
def _grams(w0, wt):
    # jitted: eagerly, 3 one-operation programs on the first call (measured 2026-12-07)
    N = w0.shape[1]
    return wt @ wt.T / N, w0 @ w0.T / N, w0 @ wt.T / N


@eqx.filter_jit
def _simulate(key, w0, v0, wt, vt, eta, eta_v, noise_std, student, teacher, schedule, num_saves, progress):
    K, N = w0.shape
    dtype = w0.dtype

    def sample(k, n):
        kx, kn = jax.random.split(k)
        X = gaussian_block(kx, (n, N), dtype)
        y = teacher(X @ wt.T / math.sqrt(N)) @ vt + noise_std * jax.random.normal(kn, (n,), dtype)
        return X, y

    def observe(w, v):
        return w @ w.T / N, w @ wt.T / N, v

    return _online_sgd(key, w0, v0, eta, eta_v, sample, observe, student, schedule, num_saves, progress)


@eqx.filter_jit
def _eps_trajectory(Q, R, v, T, vt, student, teacher):
    """eps_g along a recorded trajectory (its own compilation: independent of N)."""
    return jax.vmap(lambda Q, R, v: _eps_of(Q, R, v, T, vt, student, teacher, Auto()))(Q, R, v)
