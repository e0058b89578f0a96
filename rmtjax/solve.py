r"""One entry point for every fixed point and root in rmtjax, over ``optimistix``.

:func:`fixed_point` solves :math:`y = f(y, \text{args})` and :func:`root` solves
:math:`g(y, \text{args}) = 0`. Both differentiate through the solution by the implicit function
theorem (``optimistix.ImplicitAdjoint``): the solver runs as a plain loop that is never
differentiated, and

.. math::
    \frac{\partial y^*}{\partial \theta} = -\Big(\frac{\partial g}{\partial y}\Big)^{-1}
    \frac{\partial g}{\partial \theta}

is solved with ``lineax``, so ``jax.grad``, ``jax.jvp`` and ``jax.vmap`` work through any
solve. Differentiable inputs must travel through ``args``, never through closures.

Complex unknowns (Stieltjes transforms, subordination functions) are carried as real/imaginary
pairs, as optimistix recommends, and returned complex. A real unknown stays real: ``fn`` must
then return real values (a complex output for a real ``y0`` is a ``ValueError``; pass a complex
``y0`` such as ``0j`` to solve for a complex unknown).

A scalar real root can be *bracketed*: ``root(..., bracket=(lower, upper))`` runs a safeguarded
Newton method (Newton steps while they stay inside the shrinking bracket and shrink it fast
enough, bisection otherwise) that never leaves ``[lower, upper]``: the tool for roots that must
stay on a physical branch (a variance :math:`q^* \ge 0`, a correlation in :math:`[-1, 1]`).

The solver is chosen by an object, as the ``method=`` of :mod:`rmtjax.gaussian` is:
``solver=Iteration(damping, rtol, atol)`` (damped Picard iteration, the default of
:func:`fixed_point`) or ``solver=Newton(rtol, atol)`` (Newton's method, with a dense Jacobian;
the only solver of :func:`root`), after optimistix's ``FixedPointIteration`` and ``Newton``.

Sweeps pass ``throw=False`` and read the per-point :attr:`Solution.ok` / ``result`` instead of an
exception; ``throw=True`` raises a ``ValueError`` naming the equation, its residual and a remedy
(eagerly) or compiles the check in with ``equinox.error_if`` (under ``jit``).

Default tolerances (``rtol=None``, ``atol=None`` on the solver) scale with the dtype of the unknown
(:func:`rmtjax._numerics.solver_tolerances`: ``rtol = 1e-10, atol = 1e-12`` in float64,
``1.5e-5 / 1.9e-6`` in float32). The solves are compiled once per function object and argument
structure: pass a module-level function (not a fresh ``lambda`` per call) to reuse the compiled
solve across calls.

Example:
    >>> import jax, jax.numpy as jnp
    >>> def f(y, a):
    ...     return jnp.cos(a * y)
    >>> sol = fixed_point(f, jnp.array(0.5), jnp.array(1.0))
    >>> print(f"{float(sol.value):.4f}")  # Picard iteration, to the default tolerances
    0.7391
    >>> sol = fixed_point(f, jnp.array(0.5), jnp.array(1.0), solver=Newton())
    >>> print(f"{float(sol.value):.6f}")
    0.739085
    >>> dy_da = jax.grad(lambda a: fixed_point(f, 0.5, a).value)(1.0)
    >>> print(f"{float(dy_da):.4f}")  # -y sin(y) / (1 + a sin(y)), implicitly
    -0.2975
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ._numerics import solver_tolerances
from ._validate import _kind, check_range, concrete, error_if, flag, real, reraise_as_value_error, static_int

__all__ = ["Iteration", "Newton", "Solution", "fixed_point", "root"]

_MAX_STEPS_LIMIT = 10**6  # step counters are int32


class Solution(eqx.Module):
    """The outcome of a solve.

    Attributes:
        value: the solution (same structure as ``y0``; complex where ``y0`` was).
        result: optimistix's result code (``optimistix.RESULTS``).
        steps: number of solver steps taken.
        residual: max-norm of ``f(y) - y`` (fixed point) or ``g(y)`` (root) at ``value``.
    """

    value: Any
    result: optx.RESULTS
    steps: jax.Array
    residual: jax.Array

    @property
    def ok(self) -> jax.Array:
        """Boolean (per point under ``vmap``): the solver converged to a finite value."""
        return self.result == optx.RESULTS.successful


# --------------------------------------------------------------------------------------------
# Solvers: configuration objects (static: a new value compiles a new solve)
# --------------------------------------------------------------------------------------------


def _static_real(x, name: str) -> float | None:
    """``None`` or a static real number (Python or NumPy, not a JAX array: a solver's configuration
    is part of the compiled program), finite and ``>= 0``, as a Python float."""
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        if isinstance(x, jax.Array):
            raise ValueError(f"{name} must be a Python number (it configures the compiled solver), got a JAX array; "
                             "pass float(x)")
        raise ValueError(f"{name} must be a real number or None, got {x!r:.60} ({type(x).__name__})")
    v = float(x)
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
    return v


def _tolerance(name: str):
    """A static tolerance field, checked (and made a Python float) when the solver is built."""
    return eqx.field(static=True, default=None, converter=functools.partial(_static_real, name=name))


def _damping(x) -> float:
    v = _static_real(x, "Iteration.damping") if x is not None else None
    if v is None or not v < 1:
        raise ValueError(f"Iteration.damping must be a number in [0, 1), got {x!r:.60}")
    return v


def _check_tolerances(cls: str, rtol, atol):
    if rtol == 0 and atol == 0:
        raise ValueError(f"{cls}.rtol and {cls}.atol must not both be 0 (the solve could never converge)")


class Iteration(eqx.Module):
    r"""Damped fixed-point (Picard) iteration,
    :math:`y \leftarrow \beta\,y + (1 - \beta)\,f(y)` (optimistix's ``FixedPointIteration``);
    the default solver of :func:`fixed_point`. It converges where :math:`f` is a contraction near
    the fixed point; damping (:math:`\beta` closer to 1) tames oscillation (a derivative of
    :math:`f` near :math:`-1`) at the price of more steps.

    Attributes:
        damping: :math:`\beta \in [0, 1)` (0: plain iteration).
        rtol, atol: stop when the step is below ``atol + rtol * |y|`` (max-norm); ``None`` scales the
            float64 defaults (1e-10, 1e-12) to the dtype of the unknown
            (:func:`rmtjax._numerics.solver_tolerances`).

    Example:
        >>> Iteration(damping=0.5)
        Iteration(damping=0.5)
    """

    damping: float = eqx.field(static=True, default=0.0, converter=_damping)
    rtol: float | None = _tolerance("Iteration.rtol")
    atol: float | None = _tolerance("Iteration.atol")

    def __check_init__(self):
        _check_tolerances("Iteration", self.rtol, self.atol)


class Newton(eqx.Module):
    r"""Newton's method with a dense Jacobian (optimistix's ``Newton``): on :math:`y - f(y)` in
    :func:`fixed_point`, on :math:`g(y)` in :func:`root` (its only solver). Quadratic convergence
    near a regular solution, also where :math:`f` is not a contraction; each step solves a linear
    system of the size of the unknown (complex unknowns count twice: real and imaginary parts).

    Attributes:
        rtol, atol: stop when the step is below ``atol + rtol * |y|`` (max-norm); ``None`` scales the
            float64 defaults (1e-10, 1e-12) to the dtype of the unknown
            (:func:`rmtjax._numerics.solver_tolerances`).

    Example:
        >>> Newton(rtol=1e-8)
        Newton(rtol=1e-08)
    """

    rtol: float | None = _tolerance("Newton.rtol")
    atol: float | None = _tolerance("Newton.atol")

    def __check_init__(self):
        _check_tolerances("Newton", self.rtol, self.atol)


def _check_solver(solver, allowed: tuple[type, ...]):
    if isinstance(solver, allowed):
        return solver
    names = " or ".join(f"rmtjax.solve.{c.__name__}(...)" for c in allowed)
    hint = ""
    if isinstance(solver, str):
        hint = (" (solver strings were replaced by objects: solver='newton' is solver=rmtjax.solve.Newton(), "
                "solver='iteration' is solver=rmtjax.solve.Iteration(damping))")
    raise ValueError(f"solver must be {names}, got {solver!r:.60}{hint}")


# --------------------------------------------------------------------------------------------
# Real/imaginary pairs
# --------------------------------------------------------------------------------------------


def _to_real(tree):
    return jax.tree_util.tree_map(lambda x: jnp.stack([x.real, x.imag]) if jnp.iscomplexobj(x) else x, tree)


def _from_real(tree, cplx):
    """Inverse of :func:`_to_real`; ``cplx`` is a pytree of Python bools (complex leaf or not)."""
    return jax.tree_util.tree_map(lambda c, x: jax.lax.complex(x[0], x[1]) if c else x, cplx, tree)


def _max_norm(tree) -> jax.Array:
    leaves = [jnp.max(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.size(x)]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.zeros(())


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


# --------------------------------------------------------------------------------------------
# Validation of a solve's configuration and inputs
# --------------------------------------------------------------------------------------------


def _check_fn(fn):
    if not callable(fn):
        raise ValueError(f"fn must be a callable fn(y, args), got {type(fn).__name__}")


def _prepare(y0):
    """``y0`` as a pytree of inexact JAX arrays and the matching pytree of complex flags.

    Structural checks at once (no leaves, booleans, strings, objects, empty arrays); finiteness
    eagerly when concrete, else compiled in with ``equinox.error_if``."""
    leaves, treedef = jax.tree_util.tree_flatten(y0)
    if not leaves:
        raise ValueError(f"y0 must contain at least one number or array, got {y0!r}")
    out = []
    for leaf in leaves:
        kind = _kind(leaf)
        if kind in ("bool", "object"):
            what = "a boolean" if kind == "bool" else type(leaf).__name__
            raise ValueError(f"y0 must be made of real or complex numbers/arrays, got {what} ({leaf!r:.60})")
        x = jnp.asarray(leaf)
        # a strong dtype (a Python float would give a weakly typed array: another compilation)
        x = jnp.asarray(x, dtype=x.dtype if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.result_type(float))
        if x.size == 0:
            raise ValueError(f"y0 must not contain empty arrays, got shape {x.shape}")
        out.append(x)
    bad = jnp.any(jnp.stack([jnp.any(~jnp.isfinite(x)) for x in out]))
    b = concrete(bad)
    if b is not None:
        if bool(b):
            raise ValueError("y0 must be finite, got a non-finite entry (nan or inf)")
    else:
        out = [error_if(x, bad, "y0 must be finite") for x in out]
    y0 = jax.tree_util.tree_unflatten(treedef, out)
    cplx = jax.tree_util.tree_unflatten(treedef, [bool(jnp.iscomplexobj(x)) for x in out])
    return y0, cplx


def _check_config(solver, allowed, max_steps, throw, name, dtype):
    """Validated ``(solver, max_steps, throw, name)``: the solver with its tolerances resolved
    (``None`` becomes the dtype-scaled default of :func:`rmtjax._numerics.solver_tolerances`)."""
    solver = _check_solver(solver, allowed)
    rtol, atol = solver_tolerances(dtype, solver.rtol, solver.atol)
    solver = dataclasses.replace(solver, rtol=rtol, atol=atol)
    max_steps = static_int(max_steps, "max_steps", lo=1, hi=_MAX_STEPS_LIMIT)
    throw = flag(throw, "throw")
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {type(name).__name__}")
    return solver, max_steps, throw, name


def _array_args(args):
    """Python floats/complex numbers in ``args`` as (weakly typed) JAX arrays: traced, not static,
    so a new value does not trigger a new compilation. Integers and other objects stay as given."""
    def conv(x):
        if isinstance(x, float | complex) and not isinstance(x, bool):
            return jnp.asarray(x)
        return x

    return jax.tree_util.tree_map(conv, args)


def _dtype_of(y0) -> Any:
    leaves = jax.tree_util.tree_leaves(y0)
    return jnp.result_type(*leaves)


def _check_output(fn, y0, cplx, args, what: str):
    """``fn(y0, args)`` must have ``y0``'s structure and shapes, and be real where ``y0`` is real
    (checked on shapes and dtypes only: no evaluation)."""
    try:
        out = eqx.filter_eval_shape(fn, y0, args)
    except Exception as err:  # the user's function fails on y0: say so, naming fn
        raise ValueError(f"fn(y0, args) failed: {type(err).__name__}: {err}") from err
    t_y, t_o = jax.tree_util.tree_structure(y0), jax.tree_util.tree_structure(out)
    if t_y != t_o:
        raise ValueError(f"fn must return {what} with the structure of y0 ({t_y}), got {t_o}")
    for y, o, c in zip(jax.tree_util.tree_leaves(y0), jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(cplx)):
        shape = getattr(o, "shape", None)
        if shape is None:
            raise ValueError(f"fn must return arrays, got {type(o).__name__}")
        if tuple(shape) != tuple(y.shape):
            raise ValueError(f"fn must return {what} of y0's shape {tuple(y.shape)}, got shape {tuple(shape)}")
        if not c and jnp.issubdtype(o.dtype, jnp.complexfloating):
            raise ValueError(
                f"fn returned a complex value ({o.dtype}) for the real unknown y0 ({y.dtype}): the imaginary part "
                "would be lost. Pass a complex y0 (e.g. y0 + 0j) to solve for a complex unknown, or return a real value")
        if not jnp.issubdtype(o.dtype, jnp.number) and o.dtype != jnp.bool_:
            raise ValueError(f"fn must return numbers, got dtype {o.dtype}")


# --------------------------------------------------------------------------------------------
# Results and errors
# --------------------------------------------------------------------------------------------


def _with_finite_check(result, value, residual):
    """``result``, with ``nonfinite`` where the value or the residual is not finite (a solver may
    call a NaN 'converged'). Scalar result (per point under vmap)."""
    fin = _all_finite(value) & jnp.isfinite(residual)
    return optx.RESULTS.where(fin, result, optx.RESULTS.nonfinite)


def _codes(result) -> np.ndarray:
    return np.asarray(concrete(result._value))


def _failure_text(sol: Solution, what: dict[str, str] | None = None, at: Callable | None = None) -> str | None:
    """A one-line description of the (first) failure of a concrete solution, or ``None``."""
    codes = _codes(sol.result)
    bad = codes != int(optx.RESULTS.successful._value)
    if not np.any(bad):
        return None
    idx = tuple(int(i) for i in np.argwhere(bad)[0]) if codes.ndim else ()
    code = int(codes[idx])
    name = next(k for k, v in optx.RESULTS._name_to_item.items() if int(v._value) == code)
    text = (what or {}).get(name) or {
        "nonlinear_max_steps_reached": "did not converge",
        "nonlinear_divergence": "diverged",
        "nonfinite": "produced a non-finite value (nan or inf)",
    }.get(name, optx.RESULTS._index_to_message[code])
    res = np.asarray(concrete(sol.residual))
    steps = np.asarray(concrete(sol.steps))
    where = ""
    if codes.ndim:
        where = f" ({int(bad.sum())} of {bad.size} points; first at index {idx if len(idx) > 1 else idx[0]})"
    if at is not None:
        where = f" {at(idx)}" + where
    return f"{text}{where}: residual {float(res[idx]):.3e} after {int(steps[idx])} steps"


def _finish(sol: Solution, *, throw: bool, name: str, remedy: str, what: dict[str, str] | None = None,
            traced_message: str | None = None, at: Callable | None = None) -> Solution:
    """Applies ``throw``: eagerly (concrete result) a ``ValueError`` naming the equation, the failure,
    the residual and ``remedy``; under tracing ``equinox.error_if`` on the value.

    ``what`` maps optimistix result names to a description of that failure for this equation
    (e.g. ``{"nonlinear_divergence": "has no finite fixed point"}``); ``remedy`` must name only
    options that the public function being called actually takes; ``at(index)`` describes the
    parameters of the failing point (e.g. ``"at sigma_w2 = 10"``)."""
    if not throw:
        return sol
    if concrete(sol.result._value) is not None:
        text = _failure_text(sol, what, at)
        if text is not None:
            raise ValueError(f"{name} {text}. {remedy}")
        return sol
    msg = traced_message or f"{name} did not converge to a finite solution. {remedy}"
    return eqx.tree_at(lambda s: s.value, sol, error_if(sol.value, ~sol.ok, msg))


# --------------------------------------------------------------------------------------------
# Scalar roots: bracket search + safeguarded Newton in one loop, implicit derivative
# --------------------------------------------------------------------------------------------

# result codes of the scalar engine (mapped to optimistix.RESULTS at the end)
_OK, _MAX_STEPS, _NO_BRACKET, _NONFINITE = 0, 1, 2, 3


class _ScalarState(eqx.Module):
    phase: jax.Array  # 0: evaluate x0; 1: search for a sign change; 2: safeguarded Newton; 3: done
    code: jax.Array  # _OK, _NO_BRACKET, _NONFINITE (meaningful once done)
    x: jax.Array  # the point evaluated next (the root once done)
    k: jax.Array  # index of the search point x
    at_end: jax.Array  # x is the end of the search (its sign is fixed by the caller's theory)
    up: jax.Array  # searching upwards
    g0: jax.Array  # g(x0)
    prev: jax.Array  # last search point (same sign as g0)
    lo: jax.Array
    hi: jax.Array
    neg_lo: jax.Array  # g(lo) < 0: the orientation of the bracket
    dx: jax.Array
    dx_old: jax.Array
    g: jax.Array  # g at the last evaluated point
    evals: jax.Array


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _implicit(g, y, args):
    """``y`` (a root of ``g(., args)`` computed without derivatives) with the derivative of the
    implicit function theorem, :math:`\\dot y = -\\partial_a g\\,\\dot a / \\partial_y g` (0 where
    :math:`\\partial_y g = 0`: a double root, whose derivative is unbounded)."""
    return y


@_implicit.defjvp
def _implicit_jvp(g, primals, tangents):
    y, args = primals
    _, t_args = tangents
    y = _implicit(g, y, args)  # the root as a (differentiable) function of args: higher derivatives
    gy = jax.jvp(lambda t: g(t, args), (y,), (jnp.ones_like(y),))[1]
    ga = jax.jvp(lambda a: g(y, a), (args,), (t_args,))[1]
    safe = jnp.where(gy != 0, gy, 1.0)
    return y, jnp.where(gy != 0, -ga / safe, 0.0)


def _scalar_root(g, args, x0, *, rtol: float, atol: float, max_steps: int, decreasing: bool = True,
                 up: Callable | None = None, n_up: int = 0, up_end=None,
                 down: Callable | None = None, n_down: int = 0, down_end=None,
                 margin: float = 0.0, bracket=None) -> Solution:
    r"""The scalar real root of ``g(x, args)`` nearest ``x0`` in the direction the sign of
    ``g(x0)`` points to, found by one loop (one evaluation of ``g`` and ``g'`` per step):

    1. search: with ``decreasing`` (``g`` positive below its root), ``g(x0) > 0`` searches
       upwards through the points ``up(x0, g0, k)``, ``k = 1..n_up`` (then ``up_end`` if given,
       where the sign of ``g`` is taken to close the bracket: a boundary whose sign is known from
       theory), else downwards through ``down(x0, g0, k)`` and ``down_end``; the first point
       where ``g`` changes sign by more than ``margin * |x|`` (rounding: with ``margin = 0`` an
       exact zero also counts) closes the bracket. A search that runs out of points (or reaches
       a non-finite one, or ``g`` is NaN there) reports ``nonlinear_divergence``; NaN at ``x0``
       reports ``nonfinite``;
    2. safeguarded Newton inside the bracket (``rtsafe``: a Newton step when it stays strictly
       inside the shrinking bracket (its ends included) and at least halves the step before last,
       else bisection),
       until the step is below ``atol + rtol |x|`` or ``g`` vanishes; ``max_steps`` steps.

    With ``bracket=(lo, hi, g_lo, g_hi)`` the search is skipped. Unvalidated and traceable (the
    engine of :func:`root` with ``bracket=`` and of :mod:`rmtjax.meanfield`); the value carries the
    implicit derivative in ``args`` (the search and the iterations are not differentiated).
    ``residual`` is ``|g|`` at the last point evaluated (within one step of ``value``). ``value``
    is NaN where the result is not successful.
    """
    sargs = jax.tree_util.tree_map(lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, args)
    x0 = jax.lax.stop_gradient(jnp.asarray(x0))
    dt = x0.dtype
    i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
    zero, one = jnp.zeros((), dt), jnp.ones((), dt)
    false = jnp.asarray(False)
    if bracket is None:
        st = _ScalarState(i32(0), i32(_OK), x0, i32(0), false, false, zero, x0, x0, x0, false, zero, zero, zero, i32(0))
    else:
        lo, hi, glo, ghi = (jnp.asarray(jax.lax.stop_gradient(b), dt) for b in bracket)
        contained = ((glo == 0) | (ghi == 0) | ((glo < 0) != (ghi < 0))) & jnp.isfinite(glo) & jnp.isfinite(ghi)
        root_at_end = (glo == 0) | (ghi == 0)
        x = jnp.where(glo == 0, lo, jnp.where(ghi == 0, hi, jnp.clip(x0, lo, hi)))
        phase = jnp.where(contained & ~root_at_end, 2, 3)
        code = jnp.where(contained, _OK, _NO_BRACKET)
        w = hi - lo
        st = _ScalarState(i32(phase), i32(code), x, i32(0), false, false, zero, x, lo, hi, glo < 0, w, 2 * w,
                          jnp.where(jnp.abs(glo) < jnp.abs(ghi), glo, ghi), i32(0))
    n_total = max_steps + n_up + n_down + 4

    def point(g0, k, upward):
        """Search point k in the given direction, or its end, and whether it is the end."""
        pu = up(x0, g0, k) if up is not None else jnp.asarray(jnp.nan, dt)
        pd = down(x0, g0, k) if down is not None else jnp.asarray(jnp.nan, dt)
        n = jnp.where(upward, n_up, n_down)
        p = jnp.where(upward, pu, pd)
        end = jnp.where(upward, jnp.nan if up_end is None else up_end, jnp.nan if down_end is None else down_end)
        use_end = k > n
        return jnp.where(use_end, end, p).astype(dt), use_end

    def body(s):
        gx, gpx = jax.jvp(lambda t: g(t, sargs), (s.x,), (jnp.ones_like(s.x),))
        evals = s.evals + 1
        nan_g = jnp.isnan(gx)

        # phase 0: g(x0)
        up0 = (gx > 0) == decreasing
        p1, end1 = point(gx, i32(1), up0)
        ph0 = _ScalarState(
            phase=jnp.where(gx == 0, 3, jnp.where(nan_g | ~jnp.isfinite(p1), 3, 1)),
            code=jnp.where(gx == 0, _OK, jnp.where(nan_g | ~jnp.isfinite(gx), _NONFINITE, _NO_BRACKET)),
            x=jnp.where((gx == 0) | nan_g | ~jnp.isfinite(p1), s.x, p1), k=i32(1), at_end=end1, up=up0, g0=gx,
            prev=s.x, lo=s.lo, hi=s.hi, neg_lo=s.neg_lo, dx=s.dx, dx_old=s.dx_old, g=gx, evals=evals)

        # phase 1: a search point (at the end: the sign that closes the bracket)
        g1 = jnp.where(s.at_end, jnp.where(s.g0 > 0, jnp.minimum(gx, 0.0), jnp.maximum(gx, 0.0)), gx)
        beyond = margin * jnp.abs(s.x)
        changed = s.at_end | jnp.where(s.g0 > 0, g1 < -beyond, g1 > beyond) | ((g1 == 0) & (margin == 0))
        lo1 = jnp.minimum(s.prev, s.x)
        hi1 = jnp.maximum(s.prev, s.x)
        g_at_lo = jnp.where(s.prev < s.x, s.g0, g1)  # g0's sign stands for every earlier search point
        pn, endn = point(s.g0, s.k + 1, s.up)
        exhausted = ~jnp.isfinite(pn) & ~changed
        newton1 = s.x - g1 / jnp.where(gpx != 0, gpx, 1.0)
        inside = (gpx != 0) & ~s.at_end & jnp.isfinite(newton1) & (newton1 > lo1) & (newton1 < hi1)
        x_in = jnp.where(g1 == 0, s.x, jnp.where(inside, newton1, lo1 + 0.5 * (hi1 - lo1)))
        ph1 = _ScalarState(
            phase=jnp.where(nan_g & ~s.at_end, 3, jnp.where(changed, jnp.where(g1 == 0, 3, 2), jnp.where(exhausted, 3, 1))),
            code=jnp.where(changed & ~(nan_g & ~s.at_end), _OK, _NO_BRACKET),  # nan on the way: no bracket
            x=jnp.where(changed, x_in, jnp.where(exhausted, s.x, pn)), k=s.k + 1, at_end=endn, up=s.up, g0=s.g0,
            prev=jnp.where(changed, s.prev, s.x), lo=lo1, hi=hi1, neg_lo=g_at_lo < 0, dx=hi1 - lo1,
            dx_old=2 * (hi1 - lo1), g=g1, evals=evals)

        # phase 2: safeguarded Newton
        neg = gx < 0
        same_as_lo = neg == s.neg_lo
        lo2 = jnp.where(same_as_lo, s.x, s.lo)
        hi2 = jnp.where(same_as_lo, s.hi, s.x)
        newton = s.x - gx / jnp.where(gpx != 0, gpx, 1.0)
        # a Newton step may land on the end it starts from (a converged iterate is itself a bracket end)
        use_newton = ((gpx != 0) & jnp.isfinite(newton) & (newton >= lo2) & (newton <= hi2)
                      & (jnp.abs(2 * gx) <= jnp.abs(s.dx_old * gpx)))
        x2 = jnp.where(use_newton, newton, lo2 + 0.5 * (hi2 - lo2))
        x2 = jnp.where((gx == 0) | nan_g, s.x, x2)
        dx = x2 - s.x
        tol = atol + rtol * jnp.abs(x2)
        done2 = (gx == 0) | nan_g | (jnp.abs(dx) <= tol) | (hi2 - lo2 <= tol)
        ph2 = _ScalarState(
            phase=jnp.where(done2, 3, 2), code=jnp.where(nan_g, _NONFINITE, _OK), x=x2, k=s.k, at_end=false, up=s.up,
            g0=s.g0, prev=s.prev, lo=lo2, hi=hi2, neg_lo=s.neg_lo, dx=dx, dx_old=s.dx, g=gx, evals=evals)

        return jax.tree_util.tree_map(
            lambda a, b, c, t: jnp.where(s.phase == 0, a, jnp.where(s.phase == 1, b, c)).astype(t.dtype),
            ph0, ph1, ph2, s)

    def cond(s):
        return (s.phase != 3) & (s.evals < n_total)

    s = jax.lax.while_loop(cond, body, st)
    code = jnp.where(s.phase == 3, s.code, _MAX_STEPS)
    result = optx.RESULTS.where(code == _OK, optx.RESULTS.successful,
                                optx.RESULTS.where(code == _MAX_STEPS, optx.RESULTS.nonlinear_max_steps_reached,
                                                   optx.RESULTS.where(code == _NO_BRACKET,
                                                                      optx.RESULTS.nonlinear_divergence,
                                                                      optx.RESULTS.nonfinite)))
    ok = (code == _OK) & jnp.isfinite(s.x)
    result = optx.RESULTS.where(ok | (code != _OK), result, optx.RESULTS.nonfinite)
    value = _implicit(g, jnp.where(ok, s.x, one), args)
    return Solution(jnp.where(ok, value, jnp.nan), result, s.evals, jnp.abs(s.g))


# --------------------------------------------------------------------------------------------
# Compiled cores (module level: compiled once per function object and argument structure)
# --------------------------------------------------------------------------------------------


def _real_fn(fn, cplx):
    def f_real(yr, a):
        y = _from_real(yr, cplx)
        out = fn(y, a)
        out = jax.tree_util.tree_map(lambda o, t: jnp.asarray(o).astype(t.dtype), out, y)
        return _to_real(out)

    return f_real


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _fixed_point_core(fn, y0, cplx, args, solver, max_steps) -> Solution:
    f_real = _real_fn(fn, cplx)
    y0r = _to_real(y0)
    if isinstance(solver, Iteration):
        s = optx.FixedPointIteration(rtol=solver.rtol, atol=solver.atol, damp=solver.damping)
    else:
        s = optx.Newton(rtol=solver.rtol, atol=solver.atol)
    sol = optx.fixed_point(f_real, s, y0r, args, max_steps=max_steps, throw=False)
    fy = f_real(sol.value, args)
    residual = jax.lax.stop_gradient(_max_norm(jax.tree_util.tree_map(lambda a, b: a - b, fy, sol.value)))
    result = _with_finite_check(sol.result, sol.value, residual)
    return Solution(_from_real(sol.value, cplx), result, sol.stats["num_steps"], residual)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _root_core(fn, y0, cplx, args, solver, max_steps) -> Solution:
    g_real = _real_fn(fn, cplx)
    sol = optx.root_find(g_real, optx.Newton(rtol=solver.rtol, atol=solver.atol), _to_real(y0), args,
                         max_steps=max_steps, throw=False)
    residual = jax.lax.stop_gradient(_max_norm(g_real(sol.value, args)))
    result = _with_finite_check(sol.result, sol.value, residual)
    return Solution(_from_real(sol.value, cplx), result, sol.stats["num_steps"], residual)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _bracketed_core(fn, y0, args, lower, upper, solver, max_steps) -> Solution:
    glo, ghi = fn(lower, args), fn(upper, args)
    return _scalar_root(fn, args, y0, rtol=solver.rtol, atol=solver.atol, max_steps=max_steps,
                        bracket=(lower, upper, glo, ghi))


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


@reraise_as_value_error
def fixed_point(
    fn: Callable[[Any, Any], Any],
    y0: Any,
    args: Any = None,
    *,
    solver: Iteration | Newton = Iteration(),
    max_steps: int = 1000,
    throw: bool = True,
    name: str = "fixed point",
) -> Solution:
    r"""Solves :math:`y = f(y, \text{args})`, differentiably in ``args``.

    Args:
        fn: ``fn(y, args) -> y`` (same pytree structure and shapes; real where ``y0`` is real,
            complex leaves allowed where ``y0`` is complex).
        y0: initial guess (finite; integers become floats).
        args: differentiable parameters (a pytree).
        solver: :class:`Iteration` (damped Picard iteration
            :math:`y \leftarrow \beta y + (1-\beta) f(y)`, the default) or :class:`Newton`
            (Newton on :math:`y - f(y)`); each carries its tolerances ``rtol``, ``atol``.
        max_steps: step limit (static, ``>= 1``).
        throw: raise when not converged (see the module docstring) or return the result code.
        name: what is being solved, for error messages (e.g. ``"q* (length map)"``).

    Returns:
        :class:`Solution` with ``value``, ``result``, ``steps``, ``residual``.

    Raises:
        ValueError: a bad argument (``fn`` returning a complex value for a real ``y0``, a
            non-finite ``y0``, a ``solver`` that is not an :class:`Iteration` or :class:`Newton`,
            ...), or, with ``throw=True``, a solve that did not converge.

    Example:
        >>> def f(y, a):  # y = a - 1.5 y: plain iteration diverges (|f'| = 1.5 > 1)
        ...     return a - 1.5 * y
        >>> bool(fixed_point(f, 0.0, 2.0, throw=False).ok)
        False
        >>> sol = fixed_point(f, 0.0, 2.0, solver=Iteration(damping=0.5))  # y <- (y + f(y)) / 2
        >>> print(f"{float(sol.value):.5f}")  # a / 2.5
        0.80000
    """
    _check_fn(fn)
    y0, cplx = _prepare(y0)
    solver, max_steps, throw, name = _check_config(solver, (Iteration, Newton), max_steps, throw, name,
                                                   _dtype_of(y0))
    args = _array_args(args)
    _check_output(fn, y0, cplx, args, "y")
    sol = _fixed_point_core(fn, y0, cplx, args, solver, max_steps)
    if isinstance(solver, Iteration):
        other = ("add damping (solver=Iteration(damping=0.5)), try solver=Newton()" if solver.damping == 0 else
                 "add more damping (Iteration(damping) closer to 1), try solver=Newton()")
    else:
        other = "try solver=Iteration(damping=0.5)"
    remedy = (f"Raise max_steps, {other}, start nearer the solution (y0), or pass throw=False to inspect the result "
              "per point.")
    return _finish(sol, throw=throw, name=name, remedy=remedy)


@reraise_as_value_error
def root(
    fn: Callable[[Any, Any], Any],
    y0: Any,
    args: Any = None,
    *,
    solver: Newton = Newton(),
    bracket: tuple[Any, Any] | None = None,
    max_steps: int = 256,
    throw: bool = True,
    name: str = "root",
) -> Solution:
    r"""Solves :math:`g(y, \text{args}) = 0` by Newton's method, differentiably in ``args``.

    Arguments as in :func:`fixed_point` (``fn(y, args)`` returns the residual, same structure
    as ``y``); ``solver`` is a :class:`Newton` (its ``rtol``, ``atol``). With
    ``bracket=(lower, upper)`` (scalar real ``y0``, finite ``lower <= upper``, ``fn`` of opposite
    signs at the two ends) a safeguarded Newton method keeps every iterate inside the bracket (see the module docstring); a bracket without a sign change is reported
    as ``nonlinear_divergence`` (``throw=False``) or raised.

    Example:
        >>> import jax.numpy as jnp
        >>> def g(y, c):
        ...     return y * y - c
        >>> print(f"{float(root(g, 1.0, 2.0, bracket=(0.0, 2.0)).value):.6f}")  # the positive root
        1.414214
    """
    _check_fn(fn)
    y0, cplx = _prepare(y0)
    solver, max_steps, throw, name = _check_config(solver, (Newton,), max_steps, throw, name, _dtype_of(y0))
    args = _array_args(args)
    _check_output(fn, y0, cplx, args, "a residual")
    if bracket is None:
        sol = _root_core(fn, y0, cplx, args, solver, max_steps)
        remedy = ("Raise max_steps, start nearer the root (y0), give a bracket=(lower, upper) for a scalar root, "
                  "or pass throw=False to inspect the result per point.")
        return _finish(sol, throw=throw, name=name, remedy=remedy)
    if not (isinstance(y0, jax.Array) and y0.ndim == 0 and not jnp.iscomplexobj(y0)):
        raise ValueError("bracket needs a scalar real unknown: y0 must be a real scalar")
    if not (isinstance(bracket, tuple | list) and len(bracket) == 2):
        raise ValueError(f"bracket must be a pair (lower, upper), got {bracket!r:.60}")
    lower = real(bracket[0], "bracket[0] (lower)", ndim=0, dtype=y0.dtype)
    upper = real(bracket[1], "bracket[1] (upper)", ndim=0, dtype=y0.dtype)
    ordered = concrete(lower <= upper)
    if ordered is not None and not bool(ordered):
        raise ValueError(f"bracket must have lower <= upper, got ({float(lower)}, {float(upper)})")
    if ordered is None:
        upper = check_range(upper - lower, "bracket width upper - lower", lo=0.0) + lower
    sol = _bracketed_core(fn, y0, args, lower, upper, solver, max_steps)
    remedy = ("Raise max_steps, or give a bracket (lower, upper) at whose ends fn has opposite signs; "
              "pass throw=False to inspect the result per point.")
    return _finish(sol, throw=throw, name=name, remedy=remedy,
                   what={"nonlinear_divergence": "has no sign change on the bracket (lower, upper)"})
