r"""Designing an activation by gradient descent on an objective: families and the optax loop.

A :class:`Family` maps unconstrained parameters to an activation; constraints are
reparameterizations (a positive parameter is :math:`e^u`, unit-variance Hermite coefficients are
:math:`u/\|u\|`), so any optax optimizer runs on :math:`\mathbb R^p`. :func:`design` compiles the whole
loop (a ``lax.scan`` of ``steps`` optimizer steps) once per family, objective structure and optimizer.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike

from .._validate import concrete, error_if, real, static_int
from ..activations import AbstractActivation, HermiteSeries, Transformed
from ._objectives import AbstractObjective

__all__ = ["Design", "DesignWarning", "Family", "design", "hermite_family", "parameters_of", "transformed_family"]


class DesignWarning(UserWarning):
    """A design whose loop did not converge within its steps (see :attr:`Design.converged`)."""


class Family(eqx.Module):
    r"""A differentiable family of activations: ``build(params)`` is an :mod:`rmtjax.activations`
    module for any real ``params`` (a pytree of arrays); ``init`` is where the design starts.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Swish
        >>> fam = Family(lambda u: Swish(beta=jnp.exp(u)), jnp.array(0.0))  # beta > 0
        >>> float(fam(fam.init).beta)
        1.0
    """

    build: Callable = eqx.field(static=True)
    init: Any

    def __init__(self, build: Callable, init: Any):
        if not callable(build):
            raise ValueError(f"Family.build must be callable build(params) -> activation, got {build!r:.60}")
        self.build = build
        self.init = jax.tree_util.tree_map(lambda x: real(x, "Family.init", allow_empty=True), init)
        if not isinstance(self.build(self.init), AbstractActivation):
            raise ValueError("Family.build(init) must return an rmtjax.activations module")

    def __call__(self, params) -> AbstractActivation:
        return self.build(params)


def _unit_series(u):
    return HermiteSeries(u * jax.lax.rsqrt(jnp.sum(u * u)))


def _centered_unit_series(u):
    v = jnp.concatenate([jnp.zeros((1,), u.dtype), u])
    return HermiteSeries(v * jax.lax.rsqrt(jnp.sum(v * v)))


def hermite_family(coeffs: ArrayLike, *, centered: bool = False) -> Family:
    r"""Activations :math:`\sum_k a_k h_k` with :math:`\sum_k a_k^2 = 1` (unit second moment at unit
    variance, :math:`\mathcal Q(1) = 1`): :math:`a = u/\|u\|`, starting from ``coeffs``.
    ``centered=True`` also fixes :math:`a_0 = 0` (zero mean, :math:`\mathcal C(0) = 0`); then
    ``coeffs`` are :math:`a_1, \dots, a_N`.

    For finite networks, add a term that keeps :math:`\mathcal Q'(1) < 1`
    (``KernelShaping(net, q_slope=0.85)``): a polynomial's length map is convex, so the fixed point
    :math:`q = 1` attracts a finite network's fluctuations only if its slope there is below one
    (measured in ``rmtjax reproduce activation-design``: a series designed on a task loss alone had
    :math:`\mathcal Q'(1) = 1.01`, and its depth-10 networks' outputs reached 1e106 at width 64).

    Example:
        >>> import jax.numpy as jnp
        >>> fam = hermite_family(jnp.array([0.0, 3.0, 4.0]))
        >>> [round(float(a), 3) for a in fam(fam.init).coeffs]
        [0.0, 0.6, 0.8]
    """
    u = real(coeffs, "coeffs", ndim=1)
    msg = "coeffs must not be all zero (the family normalizes them to unit norm)"
    v = concrete(u)
    if v is not None and not np.any(v != 0):
        raise ValueError(msg)
    if v is None:
        u = error_if(u, ~jnp.any(u != 0), msg)
    return Family(_centered_unit_series if centered else _unit_series, u)


def _transformed_build(base, p):
    return Transformed(base, jnp.exp(p[0]), p[1], jnp.exp(p[2]), p[3])


class _TransformedBuild:
    """``build(p)`` of :func:`transformed_family`, equal (and hashing equal) for equal base activations:
    compared by the base's structure and its arrays' values, dtypes and weak types. ``Family.build`` is
    a static part of the compiled design loop, so a new closure per call of transformed_family made
    every ``design(transformed_family(...), ...)`` compile the loop again. Equal builds compute the
    same function, so the loop compiled with one serves the other."""

    def __init__(self, base, leaves, static, treedef):
        self._base = base
        self._key = (static, treedef, tuple((a.dtype.str, a.shape, bool(getattr(a, "weak_type", False)),
                                             np.asarray(a).tobytes()) for a in leaves))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _TransformedBuild) and self._key == other._key

    def __call__(self, p):
        return _transformed_build(self._base, p)


def _transformed(base):
    arrays, static = eqx.partition(base, eqx.is_array)
    leaves, treedef = jax.tree_util.tree_flatten(arrays)
    if all(concrete(a) is not None for a in leaves):
        try:
            build = _TransformedBuild(base, leaves, static, treedef)
            hash(build)
            return build
        except TypeError:  # a base with an unhashable static part (e.g. a Custom of an unhashable callable)
            pass
    return functools.partial(_transformed_build, base)  # traced base parameters: one per call


def transformed_family(base: AbstractActivation, *, alpha=1.0, beta=0.0, gamma=1.0, delta=0.0) -> Family:
    r""":math:`\gamma(\phi(\alpha x + \beta) + \delta)` with :math:`\alpha, \gamma > 0` (as
    :math:`e^u`), starting at the given values (DKS/TAT's family, free for any objective)."""
    if not isinstance(base, AbstractActivation):
        raise ValueError(f"base must be an rmtjax.activations module, got {base!r:.60}")
    a = real(alpha, "alpha", ndim=0, lo=0.0, lo_open=True)
    g = real(gamma, "gamma", ndim=0, lo=0.0, lo_open=True)
    b, d = real(beta, "beta", ndim=0), real(delta, "delta", ndim=0)
    dt = jnp.result_type(float, a, b, g, d)
    return Family(_transformed(base), _transformed_init(a, b, g, d, dt=dt))


@functools.partial(jax.jit, static_argnames="dt")
def _transformed_init(a, b, g, d, *, dt):
    # jitted: eagerly, 7 one-operation programs on the first call of transformed_family (measured 2026-12-07)
    return jnp.stack([jnp.log(a), b, jnp.log(g), d]).astype(dt)


def parameters_of(activation: AbstractActivation) -> Family:
    """The family of all floating-point parameters of ``activation``, unconstrained (e.g. Swish's
    ``beta``, Erf's slope, a :class:`~rmtjax.activations.Custom`'s ``params``)."""
    if not isinstance(activation, AbstractActivation):
        raise ValueError(f"activation must be an rmtjax.activations module, got {activation!r:.60}")
    params, static = eqx.partition(activation, eqx.is_inexact_array)
    if not jax.tree_util.tree_leaves(params):
        raise ValueError(f"{type(activation).__name__} has no floating-point parameters to design")
    return Family(_Combine(static), params)


class _Combine(eqx.Module):
    static: Any

    def __call__(self, params):
        return eqx.combine(params, self.static)


class Design(eqx.Module):
    """The outcome of :func:`design`.

    Attributes:
        activation: the designed activation (an ordinary :mod:`rmtjax.activations` module).
        params: the family's parameters at the end.
        history: the objective before each step and at the end, shape ``(steps + 1,)``.
        converged: the gradient fell to rounding level (:math:`\\|g\\| \\le \\epsilon^{3/4}\\max(1, |f|)`,
            after which the parameters are kept), or the objective changed by at most
            ``rtol * |f| + atol`` over the last tenth of the steps.

    ``params`` and ``activation`` are those of the smallest objective seen.
    """

    activation: AbstractActivation
    params: Any
    history: Array
    converged: Array


def _select(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


@eqx.filter_jit
def _run(family: Family, objective: AbstractObjective, optimizer, steps: int):
    def loss(p):
        return objective(family(p))

    grad = jax.value_and_grad(loss)

    def step(carry, _):
        p, state, best_p, best_v, frozen = carry
        value, g = grad(p)
        better = value < best_v
        best_p, best_v = _select(better, p, best_p), jnp.where(better, value, best_v)
        # a gradient at rounding level: stop (L-BFGS's curvature pairs turn to noise past this point)
        gnorm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(g)))
        frozen = frozen | (gnorm <= _gtol(value.dtype) * jnp.maximum(1.0, jnp.abs(value)))
        # optax mixes int32 step counts with float parameters (Adam's bias correction): standard promotion
        with jax.numpy_dtype_promotion("standard"):
            updates, new_state = optimizer.update(g, state, p, value=value, grad=g, value_fn=loss)
            new_p = optax.apply_updates(p, updates)
        keep = frozen | ~jnp.isfinite(value)
        return (_select(keep, p, new_p), _select(keep, state, new_state), best_p, best_v, frozen), value

    p0 = family.init
    with jax.numpy_dtype_promotion("standard"):
        state0 = optimizer.init(p0)
    v0 = loss(p0)
    carry = (p0, state0, p0, jnp.full_like(v0, jnp.inf), jnp.zeros((), bool))
    (p, _, best_p, best_v, frozen), history = jax.lax.scan(step, carry, None, length=steps)
    last = loss(p)
    better = last < best_v
    best_p = _select(better, p, best_p)
    # the activation built here too: eagerly, building it compiled one program per operation
    return best_p, family(best_p), jnp.concatenate([history, last[None]]), frozen


@functools.partial(jax.jit, static_argnames="tail")
def _verdict(history, stationary, rtol, atol, *, tail: int):
    # jitted: eagerly, these checks compiled one program per operation on the first call of design
    t = history[-tail:]
    f = jnp.min(history)
    spread = jnp.max(t) - jnp.min(t)
    converged = stationary | (spread <= rtol * jnp.abs(f) + atol)
    return jnp.isfinite(history[0]), jnp.all(jnp.isfinite(history)), converged, f, spread


# the default optimizer, built once: _run is compiled per optimizer object (its functions are static),
# and a fresh optax.lbfgs() on every call made every eager call of design compile the whole loop again
_LBFGS = optax.lbfgs()


@functools.lru_cache(maxsize=64)
def _with_extra_args_cached(optimizer):
    return optax.with_extra_args_support(optimizer)


def _with_extra_args(optimizer):
    # L-BFGS's line search needs the value and the objective: every optimizer gets them (ignored by
    # those that do not use them). Wrapped once per optimizer: the wrapper's functions are static
    # arguments of the compiled loop, so a new wrapper on every call recompiled it for an optimizer
    # without extra-argument support (optax.adam) given again. An unhashable optimizer (a user's own
    # GradientTransformation holding arrays) is wrapped anew, as before.
    try:
        return _with_extra_args_cached(optimizer)
    except TypeError:
        return optax.with_extra_args_support(optimizer)


def _gtol(dtype) -> float:
    return float(jnp.finfo(dtype).eps) ** 0.75


def design(family: Family | AbstractActivation, objective: AbstractObjective, *, steps: int = 300,
           optimizer: optax.GradientTransformation | None = None, rtol: float = 1e-6, atol: float = 1e-10,
           warn: bool = True) -> Design:
    r"""Minimizes ``objective(family(params))`` over ``params`` with ``optimizer`` (default
    ``optax.lbfgs()``, with its zoom line search) for ``steps`` steps, compiled as one ``lax.scan``.

    Args:
        family: a :class:`Family` (:func:`hermite_family`, :func:`transformed_family`,
            :func:`parameters_of`) or an activation (all its float parameters are designed).
        objective: an :class:`AbstractObjective` (sums and weighted sums of them included).
        steps: optimizer steps (static integer ``>= 10``).
        optimizer: an optax ``GradientTransformation`` (first-order ones such as ``optax.adam(1e-2)``
            are more robust far from a solution; L-BFGS converges to full precision near one).
        rtol, atol: the convergence test of :attr:`Design.converged`.
        warn: warn (:class:`DesignWarning`) when not converged.

    Returns:
        :class:`Design`.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Erf
        >>> from rmtjax.design import Branching
        >>> fam = Family(lambda u: Erf(b=jnp.exp(u)), jnp.array(0.0))  # erf(b x), b > 0
        >>> out = design(fam, Branching(mu=1.2), steps=300, optimizer=optax.adam(5e-2))
        >>> from rmtjax.hermite import activation_mu
        >>> round(float(activation_mu(out.activation)), 6)
        1.2
    """
    if isinstance(family, AbstractActivation):
        family = parameters_of(family)
    if not isinstance(family, Family):
        raise ValueError(f"family must be an rmtjax.design.Family or an activation, got {family!r:.60}")
    if not isinstance(objective, AbstractObjective):
        raise ValueError(f"objective must be an rmtjax.design objective (e.g. Criticality()), got {objective!r:.60}")
    steps = static_int(steps, "steps", lo=10, hi=10**7)
    if optimizer is None:
        optimizer = _LBFGS
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-2)), got "
                         f"{optimizer!r:.60}")
    optimizer = _with_extra_args(optimizer)
    params, activation, history, stationary = _run(family, objective, optimizer, steps)
    tail = min(max(steps // 10, 2), history.shape[0])
    finite_start, finite, converged, f, spread = _verdict(history, stationary, rtol, atol, tail=tail)
    if not bool(finite_start):
        raise ValueError("design: the objective is not finite at family.init (start from parameters where it is)")
    if not bool(finite):
        raise ValueError("design: the objective became non-finite during the descent (lower the learning rate, or "
                         "start nearer a solution)")
    if warn and not bool(converged):
        warnings.warn(f"design: not converged after {steps} steps (objective {float(f):.3g}, changed by "
                      f"{float(spread):.3g} over the last {tail} steps); raise steps "
                      "or the learning rate", DesignWarning, stacklevel=2)
    return Design(activation, params, history, converged)
