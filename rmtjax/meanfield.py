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

Every fixed point goes through :mod:`rmtjax.solve`, so ``q_star``, ``chi_1``, ``xi_c`` and the
edge-of-chaos curve are differentiable in :math:`\sigma_w^2`, :math:`\sigma_b^2` and the
activation's parameters, and vmap over grids (``throw=False`` gives per-point result codes).
Gaussian expectations come from :func:`rmtjax.gaussian.gaussian_expectations` (closed form or
numerical, ``method=``).

Example:
    >>> from rmtjax.activations import Tanh
    >>> mf = mean_field(Tanh(), 2.5, 0.05)
    >>> float(mf.chi_1) > 1  # chaotic phase
    True
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from ._validate import check_nonnegative
from .activations import AbstractActivation
from .gaussian import AbstractMethod, Auto, gaussian_expectations
from .solve import fixed_point

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


def _params(sigma_w2, sigma_b2):
    return (jnp.asarray(check_nonnegative(sigma_w2, "sigma_w2"), float),
            jnp.asarray(check_nonnegative(sigma_b2, "sigma_b2"), float))


def q_map(q: ArrayLike, activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *,
          method: AbstractMethod = Auto()) -> Array:
    r"""The length map :math:`\mathcal V(q) = \sigma_w^2\mathbb E[\phi(\sqrt q z)^2] + \sigma_b^2`."""
    q = jnp.asarray(q, float)
    return sigma_w2 * gaussian_expectations(activation, q, q, q, method=method).k + sigma_b2


def q_star(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: float = 1.0,
           method: AbstractMethod = Auto(), max_steps: int = 2000, throw: bool = True):
    r"""Fixed point :math:`q^* = \mathcal V(q^*)` (a :class:`rmtjax.solve.Solution`).

    Solved by Newton's method on :math:`q - \mathcal V(q)` from ``q0`` (plain iteration converges
    only linearly, at rate :math:`\chi_q`, and not at all where :math:`q^*` is unbounded, e.g. ReLU
    with :math:`\sigma_w^2 \ge 2`)."""
    sigma_w2, sigma_b2 = _params(sigma_w2, sigma_b2)
    return fixed_point(lambda q, a: q_map(q, a[0], a[1], a[2], method=method), jnp.asarray(q0, float),
                       (activation, sigma_w2, sigma_b2), solver="newton", max_steps=max_steps,
                       throw=throw, name="q* (length map)")


def c_map(c: ArrayLike, q: ArrayLike, activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *,
          method: AbstractMethod = Auto()) -> Array:
    r"""The correlation map :math:`\mathcal C(c) = (\sigma_w^2\mathbb E[\phi(u_1)\phi(u_2)] +
    \sigma_b^2)/q` for inputs of variance ``q`` (normally :math:`q^*`) and correlation ``c``."""
    c = jnp.asarray(c, float)
    q = jnp.asarray(q, float)
    k = gaussian_expectations(activation, q, q, c * q, method=method).k
    return (sigma_w2 * k + sigma_b2) / q


def c_star(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, c0: float = 0.0,
           method: AbstractMethod = Auto(), max_steps: int = 100_000, throw: bool = True):
    r"""The stable fixed point :math:`c^*` of the correlation map at :math:`q = q^*`, by iteration from
    ``c0`` (so it finds the attracting point: :math:`c^* = 1` in the ordered phase, :math:`c^* < 1` in
    the chaotic one). Near the edge of chaos convergence is slow (rate :math:`\chi_c \to 1`)."""
    sigma_w2, sigma_b2 = _params(sigma_w2, sigma_b2)
    q = q_star(activation, sigma_w2, sigma_b2, method=method, throw=throw).value
    return fixed_point(lambda c, a: jnp.clip(c_map(c, a[0], a[1], a[2], a[3], method=method), -1.0, 1.0),
                       jnp.asarray(c0, float), (q, activation, sigma_w2, sigma_b2), rtol=1e-12, atol=1e-13,
                       max_steps=max_steps, throw=throw, name="c* (correlation map)")


def chi_1(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *,
          method: AbstractMethod = Auto()) -> Array:
    r""":math:`\chi_1 = \sigma_w^2\,\mathbb E[\phi'(\sqrt{q^*}z)^2]`: ordered phase if < 1, chaotic if > 1."""
    return mean_field(activation, sigma_w2, sigma_b2, method=method).chi_1


class MeanField(NamedTuple):
    """Mean-field quantities at one :math:`(\\sigma_w^2, \\sigma_b^2)` and their solver codes."""

    q_star: Array
    c_star: Array
    chi_1: Array
    chi_c: Array
    chi_q: Array
    xi_q: Array
    xi_c: Array
    ok: Array  # both fixed points converged


def _depth_scale(chi):
    # -1 / log(chi): infinite at chi = 1 (criticality); defined for chi in (0, 1), else inf
    ok = (chi > 0) & (chi < 1)
    return jnp.where(ok, -1.0 / jnp.log(jnp.where(ok, chi, 0.5)), jnp.inf)


def mean_field(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *,
               method: AbstractMethod = Auto(), throw: bool = True) -> MeanField:
    r"""All mean-field quantities: :math:`q^*, c^*, \chi_1, \chi_c, \chi_q, \xi_q, \xi_c`.

    :math:`\xi_c` uses :math:`\chi_c` at the stable :math:`c^*` (Schoenholz et al. eq. 9; in the ordered
    phase :math:`c^* = 1` and :math:`\chi_c = \chi_1`). Differentiable in every argument.
    """
    sigma_w2, sigma_b2 = _params(sigma_w2, sigma_b2)
    qs = q_star(activation, sigma_w2, sigma_b2, method=method, throw=throw)
    q = qs.value
    cs = c_star(activation, sigma_w2, sigma_b2, method=method, throw=throw)
    c = cs.value
    chi1 = sigma_w2 * gaussian_expectations(activation, q, q, q, method=method).kdot
    chic = sigma_w2 * gaussian_expectations(activation, q, q, c * q, method=method).kdot
    chiq = jax.grad(lambda t: q_map(t, activation, sigma_w2, sigma_b2, method=method))(q)
    return MeanField(q, c, chi1, chic, chiq, _depth_scale(chiq), _depth_scale(chic), qs.ok & cs.ok)


def edge_of_chaos(activation: AbstractActivation, sigma_b2: ArrayLike, *, sigma_w2_guess: float = 2.0,
                  method: AbstractMethod = Auto(), throw: bool = True):
    r"""The critical :math:`\sigma_w^2` with :math:`\chi_1(\sigma_w^2, \sigma_b^2) = 1` (a
    :class:`rmtjax.solve.Solution`); vmap over ``sigma_b2`` for the whole curve. Newton's method on
    :math:`\log\chi_1`, differentiating through the inner :math:`q^*` solve implicitly."""
    from .solve import root

    sigma_b2 = jnp.asarray(check_nonnegative(sigma_b2, "sigma_b2"), float)

    def g(log_w2, a):
        w2 = jnp.exp(log_w2)
        q = q_star(a[0], w2, a[1], method=method, throw=False).value
        return jnp.log(w2 * gaussian_expectations(a[0], q, q, q, method=method).kdot)

    sol = root(g, jnp.log(jnp.asarray(sigma_w2_guess, float)), (activation, sigma_b2), throw=throw,
               name="edge of chaos (chi_1 = 1)")
    return type(sol)(jnp.exp(sol.value), sol.result, sol.steps, sol.residual)


def phase_diagram(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *,
                  method: AbstractMethod = Auto()) -> MeanField:
    r""":func:`mean_field` over the grid ``sigma_w2 x sigma_b2`` (1-d arrays), vmapped, with
    ``throw=False``: fields have shape ``(len(sigma_w2), len(sigma_b2))`` and ``ok`` marks the
    points where both fixed points converged."""
    sigma_w2 = jnp.asarray(sigma_w2, float)
    sigma_b2 = jnp.asarray(sigma_b2, float)
    if sigma_w2.ndim != 1 or sigma_b2.ndim != 1:
        raise ValueError("phase_diagram: sigma_w2 and sigma_b2 must be 1-d grids")
    one = lambda w, b: mean_field(activation, w, b, method=method, throw=False)  # noqa: E731
    return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))(sigma_w2, sigma_b2)
