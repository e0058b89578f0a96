r"""Hermite coefficient maps, dual and compositional kernels, and their branching processes.

Liang & Tran-Bach (2020), "Mehler's formula, branching processes, and compositional kernels of
deep neural networks" (arXiv:2004.04767). Write an activation in the orthonormal probabilists'
Hermite basis :math:`h_k = He_k/\sqrt{k!}` (the package's normalization, as
:func:`rmtjax._numerics.hermite_table`):

.. math::
    \sigma(\sqrt q\,z) = \sum_{k\ge0} a_k(q)\,h_k(z),\qquad a_k(q) = \mathbb E[\sigma(\sqrt q z)h_k(z)].

For unit-norm inputs with correlation :math:`\rho`, Mehler's formula gives the dual kernel
:math:`G(\rho) = \mathbb E[\sigma(u)\sigma(v)] = \sum_k a_k^2\rho^k`. When
:math:`\sum_k a_k^2 = 1` (the activation rescaled to unit second moment, equivalently
:math:`\sigma_w^2 = 1/\mathbb E[\sigma(z)^2]`), :math:`p_k = a_k^2` is an offspring law, :math:`G`
its probability generating function, and the :math:`L`-layer compositional kernel
:math:`K^{(L)} = G\circ\cdots\circ G` is the PGF of the generation-:math:`L` population
:math:`Z^{(L)}` of a Galton-Watson process. With
:math:`\mu = \sum_k k a_k^2 = G'(1)` and :math:`\mu^* = \sum_k a_k^2 k\log k`:

* :math:`\mu \le 1`, :math:`a_1^2 < 1`: :math:`K^{(L)}(\rho) \to 1` for :math:`\rho \in [0, 1]`;
* :math:`a_1^2 = 1`: :math:`K^{(L)}(\rho) = \rho`;
* :math:`\mu > 1`: :math:`K^{(L)}(\rho) \to \xi` for :math:`\rho \in [0, 1)` (unscaled limit) and
  :math:`K^{(L)}(e^{-t/\mu^L}) \to \mathbb E[e^{-tW}] = \xi + (1-\xi)\,\mathbb E[e^{-tW}\mid
  W > 0]` (rescaled limit), with :math:`\xi` the extinction probability and :math:`W` the limit of
  :math:`Z^{(L)}/\mu^L` (Kesten-Stigum: non-degenerate iff :math:`\mu^* < \infty`).

A truncated coefficient vector ``a_0..a_N`` always has :math:`\mu^* < \infty`: the quantities
here are those of the truncated law :math:`p_k \propto a_k^2, k \le N`. For the ReLU family
:math:`a_k^2 \sim k^{-5/2}`, so :math:`\mu` of the order-:math:`N` truncation is off by
:math:`O(N^{-1/2})`; the exact :math:`\mu = \mathbb E[\sigma'(z)^2]/\mathbb E[\sigma(z)^2]`
(:func:`activation_mu`) uses :math:`\sum_k k a_k^2 = \mathbb E[\sigma'(z)^2]`.

Example:
    >>> import jax.numpy as jnp
    >>> from rmtjax.activations import Tanh
    >>> a = normalized(hermite_coefficients(Tanh(), order=40))
    >>> K = compositional_kernel(a, jnp.array(0.5), depth=5)   # K^(0..5)(0.5)
    >>> bp = branching_process(a)                              # mu ~ 1.18: supercritical, xi = 0
"""

from __future__ import annotations

import enum
import functools
import math
import numbers
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from . import activations as A
from ._numerics import gauss_hermite, hermite_table, safe_sqrt, solver_tolerances
from ._validate import (
    as_real,
    check_matrix,
    check_range,
    concrete,
    error_if,
    flag,
    prng_key,
    real,
    reraise_as_value_error,
    static_int,
)
from .gaussian import AbstractMethod, Auto, ClosedForm, GaussHermite, _mehler_sum, gaussian_expectations
from .gaussian import hermite_coefficients_at
from .solve import Solution, _finish, _scalar_root

__all__ = [
    "Auto",
    "BranchingProcess",
    "ClosedForm",
    "Features",
    "GaussHermite",
    "GaussLegendre",
    "Memorization",
    "MemorizationBounds",
    "Phase",
    "Trapezoid",
    "activation_mu",
    "branching_process",
    "compositional_features",
    "compositional_kernel",
    "compressed_features",
    "dual_kernel",
    "extinction_probability",
    "hermite_coefficients",
    "memorization_bounds",
    "memorization_depth",
    "normalized",
    "offspring_distribution",
    "rescaled_limit",
    "ridge_predict",
    "unscaled_limit",
]

_PHI0 = 1.0 / math.sqrt(2.0 * math.pi)

# --------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------


def _static_real(x, name: str, lo: float, hi: float) -> None:
    """A static configuration number (a Python real, not a bool) in ``[lo, hi]``."""
    if isinstance(x, bool | np.bool_) or not isinstance(x, numbers.Real) or not (lo <= float(x) <= hi):
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {x!r}")


class Trapezoid(AbstractMethod):
    """Trapezoidal rule of spacing ``step`` on ``[-cutoff, cutoff]`` in ``z``
    (:func:`rmtjax.gaussian.hermite_coefficients_at`): exponentially convergent for analytic
    activations (tanh, sigmoid, softplus, SiLU, GELU, erf), only :math:`O(h^2)` at a kink."""

    step: float = eqx.field(static=True, default=0.04)
    cutoff: float = eqx.field(static=True, default=13.0)

    def __check_init__(self):
        _static_real(self.step, "Trapezoid: step", 0.001, 0.25)
        _static_real(self.cutoff, "Trapezoid: cutoff", 8.0, 40.0)


class GaussLegendre(AbstractMethod):
    """Composite Gauss-Legendre rule, ``panels`` panels of ``deg`` nodes on each of
    ``[-cutoff, 0]`` and ``[0, cutoff]``: the integral is split at the kink ``x = 0`` of the ReLU
    family, ELU, ... (for any variance), so each piece is smooth and the rule converges
    geometrically."""

    deg: int = eqx.field(static=True, default=48)
    panels: int = eqx.field(static=True, default=3)
    cutoff: float = eqx.field(static=True, default=13.0)

    def __check_init__(self):
        static_int(self.deg, "GaussLegendre: deg", lo=2, hi=400)
        static_int(self.panels, "GaussLegendre: panels", lo=1, hi=64)
        _static_real(self.cutoff, "GaussLegendre: cutoff", 8.0, 40.0)


# --------------------------------------------------------------------------------------
# Closed forms: the activations' own (``AbstractActivation.hermite_coefficients``)
# --------------------------------------------------------------------------------------


def _has_closed_form(activation) -> bool:
    """Whether the activation's class has closed-form Hermite coefficients (it overrides the
    numerical default of :class:`rmtjax.activations.AbstractActivation`)."""
    return type(activation)._hermite is not A.AbstractActivation._hermite


def _closed_form(act, q: Array, order: int):
    """Closed-form coefficients, or ``None`` if ``act`` has none."""
    return act._hermite(q, order) if _has_closed_form(act) else None


def _row(v, nd: int):
    v = jnp.asarray(v)
    return v.reshape((1,) * nd + v.shape)


@functools.lru_cache(maxsize=None)
def _legendre_table(deg: int, panels: int, cutoff: float, order: int):
    x, w = np.polynomial.legendre.leggauss(deg)
    edges = np.linspace(0.0, cutoff, panels + 1)
    zs, ws = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        zs.append(0.5 * (hi - lo) * x + 0.5 * (hi + lo))
        ws.append(0.5 * (hi - lo) * w)
    z = np.concatenate(zs)
    w = np.concatenate(ws)
    z = np.concatenate([-z[::-1], z])
    w = np.concatenate([w[::-1], w]) * _PHI0 * np.exp(-0.5 * z * z)
    return z, w[:, None] * hermite_table(z, order)


@functools.lru_cache(maxsize=None)
def _gh_table(deg: int, order: int):
    z, w = gauss_hermite(deg)
    return z, w[:, None] * hermite_table(z, order)


def _quadrature(act, q: Array, z: np.ndarray, wh: np.ndarray) -> Array:
    dt = q.dtype
    vals = act(safe_sqrt(q)[..., None] * _row(jnp.asarray(z, dt), q.ndim))
    return vals @ jnp.asarray(wh, dt)


_MAX_ORDER = 10_000  # a static table size (quadrature tables are nodes x (order + 1) floats)
_MAX_DEPTH = 10_000  # a static loop length (outputs have depth + 1 rows)


def _check_order(order, name: str = "order") -> int:
    return static_int(order, name, lo=0, hi=_MAX_ORDER)


def _resolve_method(activation, method):
    if isinstance(method, Auto):
        if method.numerical is not None and not isinstance(method.numerical, Trapezoid | GaussLegendre | GaussHermite):
            raise ValueError(f"method=Auto(numerical=...): Hermite coefficients need Trapezoid(), GaussLegendre() or "
                             f"GaussHermite(deg) as the numerical method, got {method.numerical!r:.80}")
        return
    if isinstance(method, ClosedForm):
        if not _has_closed_form(activation):
            raise ValueError(f"method=ClosedForm(): {type(activation).__name__} has no closed-form Hermite "
                             "coefficients; use method=Trapezoid(), GaussLegendre() or GaussHermite(deg)")
        return
    if not isinstance(method, Trapezoid | GaussLegendre | GaussHermite):
        raise ValueError(f"method must be Auto(), ClosedForm(), Trapezoid(), GaussLegendre() or GaussHermite(deg), "
                         f"got {method!r:.80}")


def _check_activation(activation):
    """An :mod:`rmtjax.activations` module whose array parameters are real and finite."""
    if not isinstance(activation, A.AbstractActivation):
        raise ValueError(f"activation must be an rmtjax.activations module (e.g. Tanh()), got {activation!r:.80}")

    def check(path, leaf):
        if not (hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)):
            return leaf
        return real(leaf, "activation" + jax.tree_util.keystr(path), allow_empty=True)

    return jax.tree_util.tree_map_with_path(check, activation)


def _finite_result(x, what: str):
    """``x`` after checking it is finite (an overflow is reported, never returned as inf/NaN)."""
    return error_if(x, ~jnp.all(jnp.isfinite(x)), what)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _coefficients(activation, q, order, method):
    if isinstance(method, Auto):
        out = _closed_form(activation, q, order)
        if out is not None:
            return out
        method = Trapezoid() if method.numerical is None else method.numerical
    if isinstance(method, ClosedForm):
        out = _closed_form(activation, q, order)
        return out
    if isinstance(method, Trapezoid):
        return hermite_coefficients_at(activation, q, order=order, step=method.step, cutoff=method.cutoff)
    if isinstance(method, GaussLegendre):
        return _quadrature(activation, q, *_legendre_table(method.deg, method.panels, float(method.cutoff), order))
    if isinstance(method, GaussHermite):
        return _quadrature(activation, q, *_gh_table(method.deg, order))
    raise TypeError(f"method must be Auto, ClosedForm, Trapezoid, GaussLegendre or GaussHermite, got {method!r}")


@reraise_as_value_error
def hermite_coefficients(
    activation: A.AbstractActivation,
    *,
    order: int,
    q: ArrayLike = 1.0,
    method: AbstractMethod = Auto(),
) -> Array:
    r"""Hermite coefficients :math:`a_k(q) = \mathbb E[\sigma(\sqrt q z)\,h_k(z)]`, ``k = 0..order``.

    Orthonormal basis :math:`h_k = He_k/\sqrt{k!}`, so :math:`\sum_k a_k^2 = \mathbb E[\sigma(\sqrt q
    z)^2]` and :math:`\mathbb E[\sigma(u)\sigma(v)] = \sum_k a_k^2\rho^k` for unit variances
    (Mehler's formula, the starting point of Liang & Tran-Bach 2020).

    Closed forms (``method=ClosedForm()`` or :class:`Auto`) are the activation's own
    (:meth:`rmtjax.activations.AbstractActivation.hermite_coefficients`): polynomials and Hermite polynomials
    (exact, via :class:`rmtjax.activations.Polynomial`'s expansion); the ReLU family
    (:math:`a\min(x,0) + b\max(x,0) = ax + (b-a)x_+` and, for :math:`k \ge 2`,
    :math:`\mathbb E[z_+h_k] = \varphi(0)He_{k-2}(0)/\sqrt{k!}`), sign and rectified monomials
    (integration by parts); erf (:math:`\frac{2\beta}{\sqrt\pi\sqrt{1+2\beta^2}}(-r)^j
    \frac{(2j-1)!!}{\sqrt{(2j+1)!}}` at :math:`k = 2j+1`, :math:`r = \frac{2\beta^2}{1+2\beta^2}`,
    :math:`\beta = b\sqrt q`); GELU (:math:`z\Phi(z)` from erf and
    :math:`zh_k = \sqrt{k+1}h_{k+1} + \sqrt k h_{k-1}`); sin/cos/RBF, exp and Gaussian bumps;
    hard-tanh (:math:`a_k = -2\sqrt q\,\varphi(t)h_{k-2}(t)/\sqrt{k(k-1)}` at odd :math:`k\ge3`,
    :math:`t = q^{-1/2}`).
    Numerical: :class:`Trapezoid` (default for smooth activations), :class:`GaussLegendre` (split
    at the kink ``x = 0``), :class:`GaussHermite`. Measured against scipy.integrate.quad for
    ``k <= 30`` (``tests/test_hermite.py``): below 1e-12 absolute for every closed form, and for
    the trapezoid rule on tanh, sigmoid, softplus, SiLU, GELU, erf; :class:`GaussLegendre` reaches
    1e-14 on ReLU, where the trapezoid rule is only :math:`O(h^2)` (5e-5), and on ELU (trapezoid:
    1e-8, the kink is in the second derivative).

    Args:
        activation: an :mod:`rmtjax.activations` module (its parameters are differentiable).
        order: highest index ``k`` (static, ``0 <= order <= 10000``).
        q: variance (``>= 0``, finite), any shape; the result has shape ``q.shape + (order + 1,)``.
        method: :class:`Auto` (default), :class:`ClosedForm`, :class:`Trapezoid`,
            :class:`GaussLegendre` or :class:`GaussHermite`.

    Example:
        >>> from rmtjax.activations import Relu
        >>> a = hermite_coefficients(Relu(), order=4)   # [1/sqrt(2 pi), 1/2, 1/(2 sqrt(pi)), 0, ...]
    """
    order = _check_order(order)
    activation = _check_activation(activation)
    q = real(q, "q", lo=0.0, allow_empty=True)
    _resolve_method(activation, method)
    out = _coefficients(activation, q, order, method)
    return _finite_result(out, "hermite_coefficients: a_k(q) overflows (not finite) at this q for this activation; "
                               "use a smaller q or order")


@reraise_as_value_error
def activation_mu(activation: A.AbstractActivation, *, center: bool = False) -> Array:
    r"""The exact :math:`\mu = \sum_k k a_k^2 / \sum_k a_k^2 = \mathbb E[\sigma'(z)^2] /
    \mathbb E[\sigma(z)^2]` (:math:`h_k' = \sqrt k\,h_{k-1}`), through
    :func:`rmtjax.gaussian.gaussian_expectations` (closed form where the activation has one);
    ``center=True`` subtracts the mean :math:`a_0` first (a centered activation).

    Example:
        >>> from rmtjax.activations import Relu
        >>> float(activation_mu(Relu()))     # critical: 1
        1.0
    """
    activation = _check_activation(activation)
    center = flag(center, "center")
    mu, var = _mu(activation, center)
    return error_if(mu, ~(var > 0) | ~jnp.isfinite(mu),
                    "activation_mu: the activation has zero (or non-finite) variance E[sigma(z)^2] - (a_0^2 if "
                    "center): mu is undefined for this activation")


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _mu(activation, center):
    dt = jnp.result_type(float, *[x for x in jax.tree_util.tree_leaves(activation) if eqx.is_inexact_array(x)])
    one = jnp.ones((), dt)
    k, kdot = gaussian_expectations(activation, one, one, one)
    a0 = _coefficients(activation, one, 0, Auto())[0] if center else jnp.zeros((), dt)
    var = k - a0 * a0
    return kdot / jnp.where(var > 0, var, 1.0), var


# --------------------------------------------------------------------------------------
# Dual and compositional kernels
# --------------------------------------------------------------------------------------


def _coeffs(coeffs, *, nonzero: bool = False) -> Array:
    r"""``a_0..a_N``: a real, finite, non-empty 1-d array (``nonzero``: not all zero, as a law
    :math:`a_k^2/\sum_j a_j^2` or a normalization needs)."""
    c = real(coeffs, "coeffs", ndim=1)
    if nonzero:
        c = error_if(c, ~jnp.any(c != 0), "coeffs must have a nonzero entry (they are normalized to sum a_k^2 = 1)")
    return c


def _check_rho(rho, lo: float = -1.0, name: str = "rho"):
    return real(rho, name, lo=lo, hi=1.0, allow_empty=True)


@reraise_as_value_error
def normalized(coeffs: ArrayLike, *, center: bool = False) -> Array:
    r""":math:`a / \lVert a\rVert_2`, so that :math:`\sum_k a_k^2 = 1` and :math:`p_k = a_k^2` is an
    offspring law; ``center=True`` first sets :math:`a_0 = 0` (the activation minus its mean).

    This is the activation rescaled to unit second moment (up to the tail beyond the truncation
    order), i.e. :math:`\sigma_w^2 = 1/\mathbb E[\sigma(z)^2]` in the kernel recursion.

    Example:
        >>> import jax.numpy as jnp
        >>> normalized(jnp.array([0.0, 3.0, 4.0])).tolist()
        [0.0, 0.6, 0.8]
    """
    c = _coeffs(coeffs)
    center = flag(center, "center")
    if center:
        c = c.at[0].set(0.0)
    c = error_if(c, ~jnp.any(c != 0), "coeffs must have a nonzero entry" + (" besides a_0 (center=True)" if center else ""))
    return _normalize(c)


@jax.jit
def _normalize(c):
    # scaled first: sum(c * c) overflows for entries beyond ~1e154 (float64)
    m = jnp.max(jnp.abs(c))
    u = c / jnp.where(m > 0, m, 1.0)
    return u / jnp.sqrt(jnp.sum(u * u))


@reraise_as_value_error
def dual_kernel(coeffs: ArrayLike, rho: ArrayLike) -> Array:
    r"""The dual kernel :math:`G(\rho) = \sum_{k=0}^N a_k^2\rho^k` (Mehler's formula; Liang &
    Tran-Bach 2020): :math:`\mathbb E[\sigma(u)\sigma(v)]` for standard Gaussians of
    correlation :math:`\rho \in [-1, 1]`, up to the tail :math:`\sum_{k>N}a_k^2|\rho|^k`.

    Example:
        >>> import jax.numpy as jnp
        >>> float(dual_kernel(jnp.array([0.0, 0.6, 0.8]), 0.5))   # 0.36 * 0.5 + 0.64 * 0.25
        0.34
    """
    c = _coeffs(coeffs)
    rho = _check_rho(rho)
    dt = jnp.result_type(c, rho)
    out = _dual(c.astype(dt), rho.astype(dt))
    return _finite_result(out, "dual_kernel: G(rho) overflows (not finite) for these coeffs; normalize them "
                               "(normalized(coeffs))")


@jax.jit
def _dual(c, rho):
    return _mehler_sum(c, c, rho)


@reraise_as_value_error
def compositional_kernel(coeffs: ArrayLike, rho: ArrayLike, *, depth: int) -> Array:
    r"""All iterates :math:`K^{(0)} = \rho`, :math:`K^{(\ell)} = G(K^{(\ell-1)})`,
    :math:`\ell \le` ``depth``, in one call (shape ``(depth + 1,) + rho.shape``).

    With normalized coefficients (:func:`normalized`) this is the compositional kernel of
    Liang & Tran-Bach (2020), the PGF of the Galton-Watson population :math:`Z^{(\ell)}`.
    It is the NNGP of :func:`rmtjax.kernels.kernel` for ``b_std = 0`` when the variance is
    preserved: inputs with :math:`\lVert x\rVert^2 = d` (so :math:`\Sigma^{(0)} = x\cdot x'/d = \rho`)
    and ``W_std = (1, c, ..., c)`` with :math:`c = \mathbb E[\sigma(z)^2]^{-1/2}`, whose
    coefficients are :math:`a_k/\sqrt{\mathbb E[\sigma^2]}` (``tests/test_hermite.py`` checks every
    depth against the kernel engine).

    Args:
        coeffs: ``a_0..a_N`` (1-d; differentiable).
        rho: correlations in ``[-1, 1]``, any shape.
        depth: number of compositions (static, ``0 <= depth <= 10000``).

    Example:
        >>> import jax.numpy as jnp
        >>> K = compositional_kernel(jnp.array([0.0, 0.6, 0.8]), jnp.linspace(-1, 1, 5), depth=3)
        >>> K.shape
        (4, 5)
    """
    depth = static_int(depth, "depth", lo=0, hi=_MAX_DEPTH)
    c = _coeffs(coeffs)
    rho = _check_rho(rho)
    dt = jnp.result_type(c, rho)
    out = _iterate(c.astype(dt), rho.astype(dt), depth)
    return _finite_result(out, "compositional_kernel: K^(l) overflows (not finite) with depth for these coeffs "
                               "(sum a_k^2 > 1 grows doubly exponentially); normalize them (normalized(coeffs))")


@functools.partial(jax.jit, static_argnums=2)
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _iterate(c, rho, depth):
    def step(r, _):
        r = _mehler_sum(c, c, r)
        return r, r

    _, hist = jax.lax.scan(step, rho, None, length=depth)
    return jnp.concatenate([rho[None], hist], axis=0)


# --------------------------------------------------------------------------------------
# Branching process
# --------------------------------------------------------------------------------------


class Phase(enum.IntEnum):
    """Phase of the Galton-Watson process :math:`p_k = a_k^2` (``BranchingProcess.phase``)."""

    SUBCRITICAL = 0  # mu < 1: K^(L) -> 1
    CRITICAL = 1  # mu = 1, a_1^2 < 1: K^(L) -> 1 (slowly, 1 - K ~ 2 / (sigma^2 L))
    SUPERCRITICAL = 2  # mu > 1: K^(L) -> xi on [0, 1), rescaled limit E exp(-t W)
    LINEAR = 3  # a_1^2 = 1: K^(L)(rho) = rho


class BranchingProcess(NamedTuple):
    """Offspring law and limits of :math:`K^{(L)}` (all arrays, so it is jit/vmap/grad-friendly).

    Attributes:
        offspring: :math:`p_k = a_k^2/\\sum_j a_j^2`, ``k = 0..N``.
        mu: mean offspring :math:`\\mu = G'(1)`.
        mu_star: :math:`\\mu^* = \\sum_k p_k k\\log k` (Kesten-Stigum; finite for a truncation).
        variance: offspring variance :math:`G''(1) + \\mu - \\mu^2`.
        xi: extinction probability (smallest root of :math:`G(s) = s` in ``[0, 1]``).
        phase: integer :class:`Phase` code.
    """

    offspring: Array
    mu: Array
    mu_star: Array
    variance: Array
    xi: Array
    phase: Array


def _horner(p: Array, s: Array) -> Array:
    """sum_k p_k s^k by Horner's rule (scan over k, highest first)."""

    def body(acc, pk):
        return acc * s + pk, None

    return jax.lax.scan(body, jnp.zeros_like(s), p[::-1])[0]


def _law(coeffs) -> Array:
    r"""The offspring law :math:`a_k^2/\sum_j a_j^2` of validated, not-all-zero ``coeffs``."""
    return _normalize(_coeffs(coeffs, nonzero=True)) ** 2


def _deflated(s, p):
    r""":math:`h(s) = (G(s) - s)/(1 - s) = p_0 - s\sum_{j\ge1}T_{j+1}s^{j-1}`, :math:`T_m =
    \sum_{k\ge m}p_k` (so :math:`h(1) = 1 - \mu`): the extinction equation with the trivial root
    :math:`s = 1` divided out, evaluated without cancellation near 1."""
    tails = jnp.cumsum(p[::-1])[::-1]
    return p[0] - s * _horner(tails[2:], s)


@reraise_as_value_error
def extinction_probability(coeffs: ArrayLike, *, throw: bool = True, max_steps: int = 256) -> Solution:
    r"""Extinction probability :math:`\xi`: the smallest fixed point of :math:`G(s) = s` in
    ``[0, 1]`` for the offspring law :math:`p_k = a_k^2/\sum_j a_j^2`.

    The trivial root is divided out: :math:`h(s) = (G(s) - s)/(1 - s) = p_0 - \sum_{j\ge1}
    T_{j+1}s^j` with the tail sums :math:`T_m = \sum_{k\ge m}p_k` is decreasing on ``[0, 1]``, with
    :math:`h(0) = p_0` and :math:`h(1) = 1 - \mu`: so :math:`\xi = 1` iff :math:`\mu \le 1`, and
    otherwise :math:`\xi` is the one root of :math:`h` in ``[0, 1)``, found by a safeguarded Newton
    method in that bracket (:mod:`rmtjax.solve`) to full precision even when :math:`\xi` is close
    to 1. Differentiable by implicit differentiation,
    :math:`\partial\xi = \partial_\theta G(\xi)/(1 - G'(\xi))`, in every phase but the critical
    one (:math:`G'(1) = 1`; derivative 0 for :math:`\mu \le 1`). :math:`\xi = 0` iff
    :math:`a_0 = 0`; ``LINEAR`` (:math:`a_1^2 = 1`) gives 0. Tolerances follow the dtype.

    Args:
        coeffs: ``a_0..a_N`` (real, finite, not all zero; normalized internally).
        throw: raise a ``ValueError`` if the solve did not converge (else ``ok=False``).
        max_steps: Newton/bisection steps (static).

    Example:
        >>> import jax.numpy as jnp
        >>> p0, b = 0.2, 0.5   # linear-fractional law: xi = p0 / b
        >>> a = jnp.sqrt(jnp.array([p0] + [(1 - p0) * (1 - b) * b**k for k in range(60)]))
        >>> round(float(extinction_probability(a).value), 10)
        0.4
    """
    max_steps = static_int(max_steps, "max_steps", lo=1, hi=10**6)
    throw = flag(throw, "throw")
    sol = _extinction(_law(coeffs), max_steps)
    return _finish(sol, throw=throw, name="extinction probability (G(s) = s)",
                   remedy="Raise max_steps, or pass throw=False to get ok=False per point.")


@functools.partial(jax.jit, static_argnums=1)
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _extinction(p: Array, max_steps: int) -> Solution:
    dt = p.dtype
    rtol, atol = solver_tolerances(dt)
    one = jnp.ones((), dt)
    # from s = 0 (h(0) = p0 >= 0) upwards to the end s = 1, whose sign is closed by theory: h(1) = 1 - mu
    # >= 0 means no root below 1, xi = 1
    sol = _scalar_root(_deflated, p, jnp.zeros((), dt), rtol=rtol, atol=atol, max_steps=max_steps, up_end=one)
    # xi = 1 at the end of the bracket (mu <= 1) is not a root of h: a constant, no implicit derivative
    at_one = (_deflated(one, p) >= 0) & (sol.value == 1)
    value = jnp.where(at_one, one, sol.value)
    return Solution(jnp.clip(value, 0.0, 1.0), sol.result, sol.steps, sol.residual)


@reraise_as_value_error
def branching_process(coeffs: ArrayLike, *, atol: float | None = None) -> BranchingProcess:
    r"""The Galton-Watson process of the coefficients (Liang & Tran-Bach 2020):
    offspring law :math:`p_k = a_k^2/\sum_j a_j^2`, :math:`\mu`, :math:`\mu^*`, variance,
    extinction probability :math:`\xi` (:func:`extinction_probability`) and the :class:`Phase`
    (``CRITICAL`` when :math:`|\mu - 1| \le` ``atol``, ``LINEAR`` when :math:`p_1 \ge 1 -`
    ``atol``; ``atol`` defaults to :math:`\max(10^{-9}, 64\varepsilon)` of the dtype, a static
    number in ``[0, 1)``).

    Example:
        >>> from rmtjax.activations import Relu
        >>> a = normalized(hermite_coefficients(Relu(), order=64), center=True)
        >>> bp = branching_process(a)        # centered ReLU: mu ~ pi/(pi-1), supercritical, xi = 0
        >>> Phase(int(bp.phase)).name
        'SUPERCRITICAL'
    """
    p = _law(coeffs)
    if atol is None:
        atol = max(1e-9, 64 * float(jnp.finfo(p.dtype).eps))
    elif isinstance(atol, bool | np.bool_) or not isinstance(atol, numbers.Real) or not 0 <= float(atol) < 1:
        raise ValueError(f"atol must be a number in [0, 1), got {atol!r}")
    return _branching(p, float(atol))


@functools.partial(jax.jit, static_argnums=1)
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _branching(p: Array, atol: float) -> BranchingProcess:
    k = jnp.arange(p.shape[0], dtype=p.dtype)
    mu = jnp.sum(k * p)
    klogk = jnp.where(k > 1, k * jnp.log(jnp.maximum(k, 1.0)), 0.0)
    mu_star = jnp.sum(p * klogk)
    variance = jnp.sum(k * (k - 1) * p) + mu - mu * mu
    xi = _extinction(p, 256).value
    linear = p[1] >= 1.0 - atol
    phase = jnp.where(linear, int(Phase.LINEAR),
                      jnp.where(jnp.abs(mu - 1) <= atol, int(Phase.CRITICAL),
                                jnp.where(mu < 1, int(Phase.SUBCRITICAL), int(Phase.SUPERCRITICAL)))).astype(jnp.int32)
    return BranchingProcess(p, mu, mu_star, variance, xi, phase)


@reraise_as_value_error
def unscaled_limit(coeffs: ArrayLike, rho: ArrayLike) -> Array:
    r"""The unscaled limit :math:`\lim_{L\to\infty}K^{(L)}(\rho)` for :math:`\rho \in [0, 1]`
    (Liang & Tran-Bach 2020, unscaled limit): :math:`\rho` if :math:`a_1^2 = 1`, else 1 at
    :math:`\rho = 1` and :math:`\xi` (= 1 when :math:`\mu \le 1`) on :math:`[0, 1)`.

    Example:
        >>> import jax.numpy as jnp
        >>> float(unscaled_limit(jnp.array([0.0, 0.6, 0.8]), 0.5))   # a_0 = 0, mu > 1: xi = 0
        0.0
    """
    rho = _check_rho(rho, lo=0.0)
    bp = branching_process(coeffs)
    rho = rho.astype(jnp.result_type(rho, bp.mu))
    lim = jnp.where(rho == 1.0, 1.0, bp.xi)
    return jnp.where(bp.phase == int(Phase.LINEAR), rho, lim).astype(rho.dtype)


@functools.lru_cache(maxsize=None)
def _binomial_signed(n: int) -> np.ndarray:
    """B[j, k] = (-1)^(j+1) C(k, j): 1 - G(1 - u) = sum_j (B @ p)_j u^j."""
    from scipy.special import comb

    j = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    b = comb(k, j, exact=False)
    return np.where(j % 2 == 1, 1.0, -1.0) * b * (j >= 1)


@reraise_as_value_error
def rescaled_limit(coeffs: ArrayLike, t: ArrayLike, *, max_steps: int = 4000, s_min: float = 1e-6) -> Array:
    r"""The rescaled limit :math:`\lim_L K^{(L)}(e^{-t/\mu^L}) = \phi_W(t) = \mathbb E[e^{-tW}]`
    (Liang & Tran-Bach 2020, rescaled limit), :math:`W = \lim Z^{(L)}/\mu^L`; it equals
    :math:`\xi + (1-\xi)\,\mathbb E[e^{-tW}\mid W>0]`.

    :math:`\phi_W` solves Poincare's functional equation :math:`\phi_W(\mu t) = G(\phi_W(t))`,
    :math:`\phi_W(0) = 1`, :math:`\phi_W'(0) = -1`. It is evaluated as
    :math:`\phi_W(t) = G^{\circ n}(\phi_W(t/\mu^n))` from :math:`s = t/\mu^n \le` ``s_min``, where
    :math:`\phi_W(s) = 1 - s + \mathbb E[W^2]s^2/2 + O(s^3)` with
    :math:`\mathbb E[W^2] = 1 + \mathrm{Var}(Y)/(\mu^2-\mu)`, carried as :math:`u = 1 - \phi` with the
    map :math:`u \mapsto 1 - G(1-u)` (its Taylor series at small :math:`u`, no cancellation), so
    the relative error stays :math:`O(s_{\min}^2)`. For :math:`\mu \le 1` (non-linear)
    :math:`W = 0` and the limit is 1; for :math:`a_1^2 = 1` it is :math:`e^{-t}`.

    Args:
        coeffs: ``a_0..a_N``.
        t: ``t >= 0``, any shape.
        max_steps: static bound on the number of compositions :math:`n`; needs
            :math:`\mu^{\text{max\_steps}} \ge t/s_{\min}` (an error otherwise).
        s_min: starting argument (static, in ``(0, 0.01]``).

    Example:
        >>> import jax.numpy as jnp
        >>> a = jnp.sqrt(jnp.array([0.0] + [0.5**k for k in range(1, 80)]))  # geometric: W ~ Exp(1)
        >>> round(float(rescaled_limit(a, 1.0)), 10)
        0.5
    """
    t = real(t, "t", lo=0.0, allow_empty=True)
    p = _law(coeffs)
    max_steps = static_int(max_steps, "max_steps", lo=1, hi=10**7)
    if isinstance(s_min, bool | np.bool_) or not isinstance(s_min, numbers.Real) or not 0 < float(s_min) <= 0.01:
        raise ValueError(f"s_min must be a number in (0, 0.01], got {s_min!r}")
    dt = jnp.result_type(p, t)
    phi, short = _rescaled(p.astype(dt), t.astype(dt), max_steps, float(s_min))
    phi = error_if(phi, short, "rescaled_limit: mu^max_steps < t / s_min (mu is too close to 1 for this t); "
                               "raise max_steps or s_min")
    return _finite_result(phi, "rescaled_limit: the Taylor coefficients of 1 - G(1 - u) overflow for this many "
                               "coeffs (more than ~1000 terms); truncate coeffs")


@functools.partial(jax.jit, static_argnums=(2, 3))
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _rescaled(p, t, max_steps, s_min):
    n_terms = p.shape[0]
    k = jnp.arange(n_terms, dtype=p.dtype)
    mu = jnp.sum(k * p)
    var = jnp.sum(k * (k - 1) * p) + mu - mu * mu
    eps = jnp.finfo(p.dtype).eps
    super_ = (mu > 1.0 + jnp.maximum(1e-12, 64 * eps)) & (p[1] < 1.0)
    log_mu = jnp.log(jnp.where(super_, mu, 2.0))
    m2 = 1.0 + var / jnp.where(super_, mu * mu - mu, 1.0)
    need = jnp.ceil(jnp.log(jnp.maximum(t, s_min) / s_min) / log_mu)
    n = jnp.clip(need, 0, max_steps)
    s0 = t * jnp.exp(-n * log_mu)
    u = s0 - 0.5 * m2 * s0 * s0
    c = jnp.asarray(_binomial_signed(n_terms), p.dtype) @ p  # Taylor coefficients of 1 - G(1 - u)
    u_switch = 0.25 / max(n_terms - 1, 1)

    def h(u):
        series = _horner(c, jnp.minimum(u, u_switch))
        return jnp.where(u < u_switch, series, 1.0 - _horner(p, 1.0 - u))

    def body(i, u):
        return jnp.where(i < n, h(u), u)

    u = jax.lax.fori_loop(0, max_steps, body, u)
    phi = jnp.where(super_, 1.0 - u, jnp.where(p[1] >= 1.0, jnp.exp(-t), 1.0))
    return phi, jnp.any(super_ & (need > max_steps))


# --------------------------------------------------------------------------------------
# Memorization
# --------------------------------------------------------------------------------------


class Memorization(NamedTuple):
    """Eigenvalue range of the compositional kernel matrix at every depth.

    Attributes:
        depth: smallest ``L <= max_depth`` with every eigenvalue of :math:`K^{(L)}(\\hat X\\hat X^\\top)`
            in :math:`[1-\\kappa, 1+\\kappa]`, or ``-1``.
        eig_min, eig_max: smallest/largest eigenvalue, shape ``(max_depth + 1,)``.
        necessary_depth: smallest ``L`` at which two necessary conditions hold, both exact
            consequences of the eigenvalues lying in the band: every off-diagonal
            :math:`|K_{ij}| \\le \\kappa` (Cauchy interlacing on the 2 x 2 minors) and
            :math:`\\sum_{i\\ne j}K_{ij}^2 \\le n\\kappa^2` (Frobenius norm): a lower bound on ``depth``.
        sufficient_depth: smallest ``L`` with :math:`\\max_i\\sum_{j\\ne i}|K_{ij}| \\le \\kappa`
            (Gershgorin): an upper bound on ``depth`` (``-1`` if none).
        max_offdiagonal: :math:`\\max_{i \\ne j}|K^{(L)}_{ij}|` per depth.
    """

    depth: Array
    eig_min: Array
    eig_max: Array
    necessary_depth: Array
    sufficient_depth: Array
    max_offdiagonal: Array


def _check_kappa(kappa):
    return real(kappa, "kappa", ndim=0, lo=0.0, hi=1.0, lo_open=True, hi_open=True)


def _first(mask: Array) -> Array:
    return jnp.where(jnp.any(mask), jnp.argmax(mask), -1)


@reraise_as_value_error
def memorization_depth(coeffs: ArrayLike, X: ArrayLike, kappa: ArrayLike, *, max_depth: int = 100) -> Memorization:
    r"""Depth at which the compositional kernel memorizes ``X`` (Liang & Tran-Bach 2020, memorization capacity):
    the smallest :math:`L` with every eigenvalue of :math:`K^{(L)}(\hat X\hat X^\top)` in
    :math:`[1-\kappa, 1+\kappa]`, computed exactly from the eigenvalues at every depth, beside
    data-dependent necessary (lower) and Gershgorin (upper) depths (see :class:`Memorization`).

    Rows of ``X`` are normalized to the unit sphere (:math:`\hat x_i = x_i/\lVert x_i\rVert`) and
    the diagonal is set to exactly 1. Memorization needs :math:`K^{(L)}(\rho) \to 0` for
    :math:`|\rho| < 1`, i.e. a centered activation (:math:`a_0 = 0`, :math:`\xi = 0`) with
    :math:`\mu > 1`: pass ``normalized(coeffs, center=True)``.

    Args:
        coeffs: normalized ``a_0..a_N``.
        X: data, shape ``(n, d)``, no zero rows.
        kappa: tolerance in ``(0, 1)``.
        max_depth: deepest ``L`` examined (static, ``0 <= max_depth <= 10000``).

    Example:
        >>> import jax
        >>> from rmtjax.activations import Tanh
        >>> a = normalized(hermite_coefficients(Tanh(), order=40), center=True)
        >>> X = jax.random.normal(jax.random.key(0), (50, 20))
        >>> m = memorization_depth(a, X, 0.1, max_depth=60)
    """
    c = _coeffs(coeffs)
    X = check_matrix(X, "X")
    X = check_range(X, "X")
    kappa = _check_kappa(kappa)
    max_depth = static_int(max_depth, "max_depth", lo=0, hi=_MAX_DEPTH)
    dt = jnp.result_type(c, X, kappa)
    X = error_if(X, jnp.any(jnp.all(X == 0, axis=1)), "X must not have zero rows (they have no direction)")
    m = _memorization(c.astype(dt), X.astype(dt), kappa.astype(dt), max_depth)
    return error_if(m, ~jnp.all(jnp.isfinite(m.eig_min) & jnp.isfinite(m.eig_max)),
                    "memorization_depth: K^(l) overflows (not finite) with depth for these coeffs; normalize them "
                    "(normalized(coeffs))")


@functools.partial(jax.jit, static_argnums=3)
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter, no limit
def _memorization(c, X, kappa, max_depth):
    n = X.shape[0]
    # scaled first: the norm of a row of huge entries would overflow
    Xs = X / jnp.max(jnp.abs(X), axis=1, keepdims=True)
    Xh = Xs / jnp.sqrt(jnp.sum(Xs * Xs, axis=1))[:, None]
    eye = jnp.eye(n, dtype=X.dtype)
    R = jnp.clip(Xh @ Xh.T, -1.0, 1.0)
    R = jnp.where(eye > 0, 1.0, R)
    off = 1.0 - eye

    def stats(K):
        ev = jnp.linalg.eigvalsh(K)
        offabs = jnp.abs(K) * off
        return ev[0], ev[-1], jnp.max(offabs), jnp.max(jnp.sum(offabs, axis=1)), jnp.sum(offabs * offabs)

    def step(K, _):
        out = stats(K)
        # G(1) = sum a_k^2 = 1 for normalized coefficients: the diagonal is kept at exactly 1 and
        # |G(rho)| <= G(|rho|) <= 1 off it. Carrying G(1) = 1 + rounding instead compounds like
        # (1 + eps)^(mu^l) for a supercritical law and overflowed by depth 60 in float32.
        return jnp.where(eye > 0, 1.0, jnp.clip(_mehler_sum(c, c, K), -1.0, 1.0)), out

    _, (lo, hi, mx, rowsum, frob) = jax.lax.scan(step, R, None, length=max_depth + 1)
    ok = (lo >= 1 - kappa) & (hi <= 1 + kappa)
    necessary = (mx <= kappa) & (frob <= n * kappa * kappa)
    sufficient = rowsum <= kappa
    return Memorization(_first(ok), lo, hi, _first(necessary), _first(sufficient), mx)


class MemorizationBounds(NamedTuple):
    """Closed-form sufficient depths (upper bounds on :attr:`Memorization.depth`), ``inf`` when
    they do not apply (:math:`a_0 \\ne 0` or :math:`\\mu \\le 1`).

    Attributes:
        small_correlation: :math:`\\lceil\\log((n-1)r/\\kappa)/\\log(1/c(r))\\rceil`,
            :math:`c(r) = a_1^2 + (1-a_1^2)r`; :math:`\\to \\log(n/\\kappa)/\\log(1/a_1^2)` as
            :math:`r \\to 0`.
        large_correlation: escape from :math:`r` to :math:`1/2`,
            :math:`\\lceil\\log(1/(2(1-r)))/\\log(1+2h)\\rceil`, :math:`h = 1/2 - G(1/2)`, plus
            the small-correlation depth at :math:`r = 1/2`.
    """

    small_correlation: Array
    large_correlation: Array


@reraise_as_value_error
def memorization_bounds(coeffs: ArrayLike, rho_max: ArrayLike, n: ArrayLike, kappa: ArrayLike) -> MemorizationBounds:
    r"""Closed-form depths that suffice for memorization (the two regimes of Liang & Tran-Bach 2020),
    for :math:`n` points with :math:`\max_{i\ne j}|\rho_{ij}| \le r` = ``rho_max``.

    Both come from Gershgorin's theorem, :math:`\max_i\sum_{j\ne i}|K^{(L)}(\rho_{ij})| \le
    (n-1)K^{(L)}(r) \le \kappa` (:math:`|G(\rho)| \le G(|\rho|)`), and the convexity of :math:`G`
    for a centered, normalized, supercritical law (:math:`a_0 = 0`, :math:`\sum a_k^2 = 1`,
    :math:`\mu > 1`):

    * small correlations: :math:`G(r)/r = a_1^2 + \sum_{k\ge2}a_k^2r^{k-1} \le c(r) =
      a_1^2 + (1-a_1^2)r`, so :math:`K^{(L)}(r) \le r\,c(r)^L`, and
      :math:`L \ge \log((n-1)r/\kappa)/\log(1/c(r))` suffices: the
      :math:`\log(n/\kappa)/\log(1/a_1^2)` rate of the small-correlation regime;
    * large correlations (:math:`r \to 1`, e.g. :math:`1 - r \asymp n^{-2/d}` for :math:`n`
      points filling :math:`S^{d-1}`): :math:`s - G(s)` is concave and vanishes at 0 and 1, so
      :math:`1 - G(1-\delta) \ge (1 + 2h)\delta` for :math:`\delta \le 1/2`,
      :math:`h = 1/2 - G(1/2)`; the gap :math:`1 - K^{(L)}(r)` reaches :math:`1/2` within
      :math:`\log(1/(2(1-r)))/\log(1+2h)` layers (:math:`\approx \tfrac{2\log n}{d\log(1+2h)}`),
      then the small-correlation bound at :math:`r = 1/2` applies.

    Example:
        >>> import jax.numpy as jnp
        >>> b = memorization_bounds(jnp.array([0.0, 0.6, 0.8]), 0.3, 100, 0.1)
    """
    c = normalized(coeffs)
    rho_max = real(rho_max, "rho_max", lo=0.0, hi=1.0)
    n = real(n, "n", lo=1.0)
    kappa = _check_kappa(kappa)
    dt = jnp.result_type(c, rho_max, n, kappa)
    return _bounds(c.astype(dt), rho_max.astype(dt), n.astype(dt), kappa.astype(dt))


@jax.jit
def _bounds(c, rho_max, n, kappa):
    if c.shape[0] < 2:
        c = jnp.concatenate([c, jnp.zeros((1,), c.dtype)])
    a12 = c[1] * c[1]
    mu = jnp.sum(jnp.arange(c.shape[0], dtype=c.dtype) * c * c)
    applies = (jnp.abs(c[0]) < jnp.maximum(1e-12, 64 * jnp.finfo(c.dtype).eps)) & (mu > 1.0) & (a12 < 1.0)

    def small(r):
        rate = a12 + (1 - a12) * r
        need = jnp.log(jnp.maximum((n - 1) * r / kappa, 1.0)) / -jnp.log(rate)
        return jnp.ceil(need)

    h = 0.5 - _mehler_sum(c, c, jnp.asarray(0.5, c.dtype))
    escape = jnp.ceil(jnp.log(jnp.maximum(1.0 / (2 * (1 - rho_max)), 1.0)) / jnp.log1p(2 * h))
    large = jnp.where(rho_max <= 0.5, small(rho_max), escape + small(jnp.asarray(0.5, c.dtype)))
    inf = jnp.asarray(jnp.inf, c.dtype)
    return MemorizationBounds(jnp.where(applies & (rho_max < 1), small(rho_max), inf),
                              jnp.where(applies & (rho_max < 1), large, inf))


# --------------------------------------------------------------------------------------
# Random features
# --------------------------------------------------------------------------------------


@reraise_as_value_error
def offspring_distribution(coeffs: ArrayLike, *, depth: int, max_degree: int = 64) -> Array:
    r"""Law of the generation-``depth`` population :math:`Z^{(L)}` (:math:`Z^{(0)} = 1`), i.e.
    the power-series coefficients of :math:`K^{(L)} = G^{\circ L}`, for
    :math:`k \le` ``max_degree`` (the mass beyond is :math:`1 - \sum_k`), by truncated polynomial
    composition :math:`G^{\circ(\ell+1)} = G\circ G^{\circ\ell}` (Horner with truncated products).
    ``depth`` and ``max_degree`` are static integers in ``[0, 10000]``.

    Example:
        >>> import jax.numpy as jnp
        >>> P = offspring_distribution(jnp.array([0.0, 0.6, 0.8]), depth=2, max_degree=4)
    """
    depth = static_int(depth, "depth", lo=0, hi=_MAX_DEPTH)
    max_degree = _check_order(max_degree, "max_degree")
    return _offspring(_law(coeffs), depth, max_degree)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _offspring(p, depth, D):
    one = jnp.zeros((D + 1,), p.dtype).at[0].set(1.0)
    P = jnp.zeros((D + 1,), p.dtype).at[min(1, D)].set(1.0 if D >= 1 else 0.0)

    def compose(P, _):
        def body(acc, pk):
            return jnp.convolve(acc, P)[: D + 1] + pk * one, None

        return jax.lax.scan(body, jnp.zeros((D + 1,), p.dtype), p[::-1])[0], None

    # at depth 0 the law (1 at k = 1) does not use p: the 0 * p[0] keeps p's compiled validation
    # (an unused checked value is dead code under jit, and its check with it)
    return jax.lax.scan(compose, P, None, length=depth)[0] + (0 * p[0] if depth == 0 else 0)


class Features(NamedTuple):
    """Random features for :math:`K^{(L)}`.

    Attributes:
        features: ``(n, num_features)``; :math:`\\Phi\\Phi^\\top` estimates
            :math:`K^{(L)}(XX^\\top)` without bias (for the law truncated at ``max_degree``).
        degrees: the sampled populations :math:`Z_m`, shape ``(num_features,)``.
        truncated_mass: :math:`P(Z^{(L)} > \\text{max\\_degree})`, the part of the kernel left out.
    """

    features: Array
    degrees: Array
    truncated_mass: Array


def _feature_inputs(X, coeffs, key, depth, num_features, max_degree):
    """Validated inputs and the law of Z^(depth) for the random-feature maps."""
    X = check_range(check_matrix(X, "X"), "X")
    num_features = static_int(num_features, "num_features", lo=1, hi=10**7)
    key = prng_key(key, "key")
    law = offspring_distribution(coeffs, depth=depth, max_degree=max_degree)
    dt = jnp.result_type(X, law)
    return X.astype(dt), law.astype(dt), key, num_features


def _finite_features(f: Features) -> Features:
    return error_if(f, ~jnp.all(jnp.isfinite(f.features)),
                    "features overflow (not finite): the rows of X are too large for products of this many "
                    "projections; scale X (the kernel expects unit-norm rows)")


@reraise_as_value_error
def compositional_features(
    X: ArrayLike,
    coeffs: ArrayLike,
    key: Array,
    *,
    depth: int,
    num_features: int,
    max_degree: int = 64,
) -> Features:
    r"""Random features of the compositional kernel through its branching process.

    :math:`K^{(L)}(\rho) = \mathbb E[\rho^{Z}]` with :math:`Z = Z^{(L)}`, and for independent
    :math:`w_i \sim \mathcal N(0, I_d)`, :math:`\mathbb E[\prod_{i\le Z}(w_i\cdot x)(w_i\cdot x')
    \mid Z] = (x\cdot x')^Z`. So each feature draws a degree :math:`Z_m` from the law of
    :math:`Z^{(L)}` (:func:`offspring_distribution`) and is a product of :math:`Z_m` random
    projections, :math:`f_m(x) = \prod_{i\le Z_m}(w_{m,i}\cdot x)/\sqrt M`, so that
    :math:`\mathbb E[\langle f(x), f(x')\rangle] = K^{(L)}(x\cdot x')` exactly (for unit-norm rows;
    in general the dot-product kernel :math:`\sum_k P(Z^{(L)}=k)(x\cdot x')^k`), up to the mass
    beyond ``max_degree``. Eagerly only the :math:`\sum_m Z_m` projections in use are drawn
    (cost :math:`n\,d\,M\,\mathbb E[Z]`); under ``jit``/``vmap`` a masked loop over the factor
    index draws from the same distribution (different draws). This is the construction of
    Kar & Karnick (2012) with the degree law of the branching process; :func:`compressed_features`
    is the one-activation alternative (Liang & Tran-Bach 2020 compress the layers into a new
    activation). The variance of one product is
    :math:`\mathbb E[(1+2\rho^2)^Z]`-like: fine for laws with light tails (small :math:`\mu^L`).

    Args:
        X: inputs ``(n, d)``.
        coeffs: ``a_0..a_N`` (normalized internally).
        key: a JAX PRNG key.
        depth, num_features, max_degree: static.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> X = jax.random.normal(jax.random.key(0), (5, 3)); X = X / jnp.linalg.norm(X, axis=1)[:, None]
        >>> f = compositional_features(X, jnp.array([0.0, 0.6, 0.8]), jax.random.key(1), depth=2, num_features=1000)
    """
    X, law, key, num_features = _feature_inputs(X, coeffs, key, depth, num_features, max_degree)
    Z, kw, total = _degrees(law, key, num_features)
    z = concrete(Z)
    if z is None:  # under a transformation: a masked loop over the factor index
        prod = _masked_products(X, Z, kw)
    else:  # eagerly: only the sum(Z) projections that are used, multiplied per segment
        # pad the number of projections to a power of two (fewer compilations); the padding goes to
        # an extra segment that is dropped
        n_proj = int(z.sum())
        n_pad = 1 << max(n_proj - 1, 1).bit_length()
        seg = np.full(n_pad, z.shape[0], np.int32)
        seg[:n_proj] = np.repeat(np.arange(z.shape[0]), z)
        prod = _segment_products(X, kw, jnp.asarray(seg), n_pad, z.shape[0])
    return _finite_features(Features(prod * jnp.sqrt(total / num_features), Z, jnp.maximum(1.0 - total, 0.0)))


@functools.partial(jax.jit, static_argnums=2)
def _degrees(law, key, num_features):
    kz, kw = jax.random.split(key)
    logits = jnp.where(law > 0, jnp.log(jnp.where(law > 0, law, 1.0)), -jnp.inf)
    return jax.random.categorical(kz, logits, shape=(num_features,)), kw, jnp.sum(law)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _segment_products(X, key, seg, n_proj, num_features):
    W = jax.random.normal(key, (X.shape[1], n_proj), X.dtype)
    return jax.ops.segment_prod((X @ W).T, seg, num_segments=num_features + 1)[:num_features].T


@jax.jit
def _masked_products(X, Z, key):
    n, d = X.shape

    def body(i, acc):
        w = jax.random.normal(jax.random.fold_in(key, i), (d, Z.shape[0]), X.dtype)
        return acc * jnp.where((i < Z)[None, :], X @ w, 1.0)

    return jax.lax.fori_loop(0, jnp.max(Z), body, jnp.ones((n, Z.shape[0]), X.dtype))


@reraise_as_value_error
def compressed_features(
    X: ArrayLike,
    coeffs: ArrayLike,
    key: Array,
    *,
    depth: int,
    num_features: int,
    max_degree: int = 64,
) -> Features:
    r"""Random features of :math:`K^{(L)}` through one "compressed" activation
    :math:`\sigma_L = \sum_{k\le D} \sqrt{P(Z^{(L)} = k)}\,h_k` (the layers folded into a single
    activation, as Liang & Tran-Bach 2020 propose): by Mehler's formula
    :math:`\mathbb E_w[\sigma_L(w\cdot x)\sigma_L(w\cdot x')] = \sum_k P(Z^{(L)}=k)
ho^k =
    K^{(L)}(
ho)` for unit-norm rows and :math:`w \sim \mathcal N(0, I_d)`, so
    :math:`f_m(x) = \sigma_L(w_m\cdot x)/\sqrt M` is unbiased (up to the mass beyond
    ``max_degree`` = :math:`D`). :math:`\sigma_L` is a polynomial: its features have light tails,
    unlike the products of :func:`compositional_features`. ``degrees`` is empty here.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> X = jax.random.normal(jax.random.key(0), (5, 3)); X = X / jnp.linalg.norm(X, axis=1)[:, None]
        >>> f = compressed_features(X, jnp.array([0.0, 0.6, 0.8]), jax.random.key(1), depth=2, num_features=1000)
    """
    X, law, key, num_features = _feature_inputs(X, coeffs, key, depth, num_features, max_degree)
    return _finite_features(_compressed(X, law, key, num_features))


@functools.partial(jax.jit, static_argnums=3)
def _compressed(X, law, key, num_features):
    W = jax.random.normal(key, (X.shape[1], num_features), X.dtype)
    g = X @ W
    amp = jnp.sqrt(jnp.maximum(law, 0.0))

    def body(carry, k_amp):
        h_prev, h, acc = carry
        k, a = k_amp  # h = h_k, h_prev = h_{k-1}
        acc = acc + a * h
        h_next = (g * h - jnp.sqrt(k) * h_prev) / jnp.sqrt(k + 1)
        return (h, h_next, acc), None

    ks = jnp.arange(law.shape[0], dtype=X.dtype)
    init = (jnp.zeros_like(g), jnp.ones_like(g), jnp.zeros_like(g))
    (_, _, acc), _ = jax.lax.scan(body, init, (ks, amp))
    total = jnp.sum(law)
    return Features(acc / jnp.sqrt(num_features), jnp.zeros((0,), jnp.int32), jnp.maximum(1.0 - total, 0.0))


@reraise_as_value_error
def ridge_predict(features_train: ArrayLike, y_train: ArrayLike, features_test: ArrayLike, lam: ArrayLike) -> Array:
    r"""Ridge regression on features: :math:`\hat y = \Phi_\star(\Phi^\top\Phi + \lambda I)^{-1}\Phi^\top y`
    (the dual form :math:`\Phi_\star\Phi^\top(\Phi\Phi^\top + \lambda I)^{-1}y` when there are more
    features than samples); ``y_train`` is ``(n,)`` or ``(n, classes)`` (one-hot for
    classification: take the argmax of the prediction).

    Example:
        >>> import jax.numpy as jnp
        >>> yhat = ridge_predict(jnp.eye(3), jnp.arange(3.0), jnp.eye(3), 1e-3)
    """
    F = check_range(check_matrix(features_train, "features_train"), "features_train")
    Ft = check_range(as_real(features_test, "features_test", ndim=2, allow_empty=True), "features_test")
    y = check_range(as_real(y_train, "y_train", ndim=(1, 2)), "y_train")
    lam = real(lam, "lam", ndim=0, lo=0.0)
    if Ft.shape[1] != F.shape[1]:
        raise ValueError(f"features_test must have as many columns as features_train ({F.shape[1]}), "
                         f"got shape {Ft.shape}")
    if y.shape[0] != F.shape[0]:
        raise ValueError(f"y_train must have one row per row of features_train ({F.shape[0]}), got shape {y.shape}")
    dt = jnp.result_type(F, Ft, y, lam)
    out = _ridge(F.astype(dt), y.astype(dt), Ft.astype(dt), lam.astype(dt))
    return _finite_result(out, "ridge_predict: the system is singular or overflows (lam = 0 with rank-deficient "
                               "features_train, or huge features); use lam > 0 or rescale the features")


@jax.jit
def _ridge(F, y, Ft, lam):
    dt = F.dtype
    n, m = F.shape
    if m <= n:
        A_ = F.T @ F + lam * jnp.eye(m, dtype=dt)
        return Ft @ jnp.linalg.solve(A_, F.T @ y)
    A_ = F @ F.T + lam * jnp.eye(n, dtype=dt)
    return (Ft @ F.T) @ jnp.linalg.solve(A_, y)
