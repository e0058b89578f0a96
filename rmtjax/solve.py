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
pairs, as optimistix recommends, and returned complex.

Sweeps pass ``throw=False`` and read the per-point :attr:`Solution.ok` / ``result`` instead of an
exception; ``throw=True`` raises a ``ValueError`` naming the equation and its residual (eagerly)
or an ``eqx.error_if`` runtime error (under ``jit``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> sol = fixed_point(lambda y, a: jnp.cos(a * y), jnp.array(0.5), jnp.array(1.0))
    >>> dy_da = jax.grad(lambda a: fixed_point(lambda y, a: jnp.cos(a * y), 0.5, a).value)(1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ._numerics import solver_tolerances
from ._validate import concrete

__all__ = ["Solution", "fixed_point", "root"]

_SOLVERS = ("iteration", "newton")


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
        """Boolean (per point under ``vmap``): the solver converged."""
        return self.result == optx.RESULTS.successful


def _is_complex(x) -> bool:
    return jnp.iscomplexobj(x)


def _to_real(tree):
    return jax.tree_util.tree_map(lambda x: jnp.stack([x.real, x.imag]) if _is_complex(x) else x, tree)


def _from_real(tree, template):
    return jax.tree_util.tree_map(
        lambda x, t: jax.lax.complex(x[0], x[1]) if _is_complex(t) else x, tree, template)


def _max_norm(tree) -> jax.Array:
    leaves = [jnp.max(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.size(x)]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.zeros(())


def _prepare(y0):
    y0 = jax.tree_util.tree_map(jnp.asarray, y0)
    y0 = jax.tree_util.tree_map(lambda x: x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(float), y0)
    return y0, _to_real(y0)


def _tolerances(y0r, rtol, atol):
    leaves = jax.tree_util.tree_leaves(y0r)
    dtype = jnp.result_type(*leaves) if leaves else jnp.result_type(float)
    return solver_tolerances(dtype, rtol, atol)


def _check_config(solver, rtol, atol, damping, max_steps):
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
        raise ValueError(f"rtol and atol must be >= 0 and not both 0, got rtol={rtol}, atol={atol}")
    if not 0 <= damping < 1:
        raise ValueError(f"damping must be in [0, 1), got {damping}")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")


def _finish(sol, residual, template, name, max_steps, rtol, atol, throw) -> Solution:
    out = Solution(_from_real(sol.value, template), sol.result, sol.stats["num_steps"], residual)
    if not throw:
        return out
    ok = concrete(out.ok)
    if ok is not None:
        if not np.all(ok):
            res = np.asarray(concrete(residual))
            raise ValueError(
                f"{name} did not converge: residual {np.max(res):.3e} after {max_steps} steps "
                f"(rtol={rtol}, atol={atol}); {optx.RESULTS[sol.result] if np.ndim(ok) == 0 else 'see result'}. "
                "Raise max_steps, add damping, try solver='newton', or pass throw=False to inspect per point."
            )
        return out
    value = eqx.error_if(
        out.value, ~out.ok,
        f"{name} did not converge within {max_steps} steps (rtol={rtol}, atol={atol}); "
        "pass throw=False to inspect the residual per point",
    )
    return eqx.tree_at(lambda s: s.value, out, value)


def fixed_point(
    fn: Callable[[Any, Any], Any],
    y0: Any,
    args: Any = None,
    *,
    solver: str = "iteration",
    rtol: float | None = None,
    atol: float | None = None,
    damping: float = 0.0,
    max_steps: int = 1000,
    throw: bool = True,
    name: str = "fixed point",
) -> Solution:
    r"""Solves :math:`y = f(y, \text{args})`, differentiably in ``args``.

    Args:
        fn: ``fn(y, args) -> y`` (same pytree structure; complex leaves allowed).
        y0: initial guess.
        args: differentiable parameters (a pytree).
        solver: ``"iteration"`` (damped Picard iteration
            :math:`y \leftarrow \beta y + (1-\beta) f(y)`, ``damping`` :math:`=\beta`) or
            ``"newton"`` (Newton on :math:`y - f(y)`).
        rtol, atol: convergence tolerances (max-norm); ``None`` scales the float64 defaults
            (1e-10, 1e-12) to the dtype of ``y0`` (:func:`rmtjax._numerics.solver_tolerances`).
        damping: :math:`\beta \in [0, 1)` for ``"iteration"``.
        max_steps: step limit (static).
        throw: raise when not converged (see the module docstring) or return the result code.
        name: what is being solved, for error messages (e.g. ``"q* (length map)"``).

    Returns:
        :class:`Solution` with ``value``, ``result``, ``steps``, ``residual``.
    """
    template, y0r = _prepare(y0)
    rtol, atol = _tolerances(y0r, rtol, atol)
    _check_config(solver, rtol, atol, damping, max_steps)

    def f_real(yr, a):
        out = fn(_from_real(yr, template), a)
        out = jax.tree_util.tree_map(lambda o, t: jnp.asarray(o, t.dtype), out, template)
        return _to_real(out)

    if solver == "iteration":
        s = optx.FixedPointIteration(rtol=rtol, atol=atol, damp=damping)
    else:
        s = optx.Newton(rtol=rtol, atol=atol)
    sol = optx.fixed_point(f_real, s, y0r, args, max_steps=max_steps, throw=False)
    fy = f_real(sol.value, args)
    residual = _max_norm(jax.tree_util.tree_map(lambda a, b: a - b, fy, sol.value))
    return _finish(sol, jax.lax.stop_gradient(residual), template, name, max_steps, rtol, atol, throw)


def root(
    fn: Callable[[Any, Any], Any],
    y0: Any,
    args: Any = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 256,
    throw: bool = True,
    name: str = "root",
) -> Solution:
    r"""Solves :math:`g(y, \text{args}) = 0` by Newton's method, differentiably in ``args``.

    Arguments as in :func:`fixed_point` (``fn(y, args)`` returns the residual, same structure
    as ``y``).
    """
    template, y0r = _prepare(y0)
    rtol, atol = _tolerances(y0r, rtol, atol)
    _check_config("newton", rtol, atol, 0.0, max_steps)

    def g_real(yr, a):
        out = fn(_from_real(yr, template), a)
        out = jax.tree_util.tree_map(lambda o, t: jnp.asarray(o, t.dtype), out, template)
        return _to_real(out)

    sol = optx.root_find(g_real, optx.Newton(rtol=rtol, atol=atol), y0r, args, max_steps=max_steps, throw=False)
    residual = _max_norm(g_real(sol.value, args))
    return _finish(sol, jax.lax.stop_gradient(residual), template, name, max_steps, rtol, atol, throw)
