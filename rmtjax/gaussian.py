r"""Bivariate Gaussian expectations of activations, the core of every kernel recursion.

For :math:`(u, v) \sim \mathcal N(0, \Sigma)`, :math:`\Sigma = \begin{pmatrix} q_1 & q_{12}\\
q_{12} & q_2\end{pmatrix}`, :func:`gaussian_expectations` returns

.. math::
    k = \mathbb E[\phi(u)\phi(v)], \qquad \dot k = \mathbb E[\phi'(u)\phi'(v)],

by one of four methods, chosen by a ``method=`` object:

* :class:`ClosedForm` — the activation's own formula (``AbstractClosedFormActivation.dual``);
* :class:`GaussHermite` — tensor-product Gauss-Hermite quadrature of degree ``deg`` on the
  Cholesky factor, :math:`u = \sqrt{q_1}z_1`, :math:`v = \sqrt{q_2}(\rho z_1 + \sqrt{1-\rho^2}z_2)`
  (``deg**2`` evaluations of :math:`\phi` per entry);
* :class:`Mehler` — Mehler's formula :math:`k = \sum_{j\le J} a_j(q_1)a_j(q_2)\rho^j` with the
  Hermite coefficients :math:`a_j(q) = \mathbb E[\phi(\sqrt q z)h_j(z)]` of each variance
  computed once by a 1-d Gauss-Hermite rule (Liang & Tran-Bach 2020, eq. 2.3). The cost per
  entry is ``order`` multiply-adds, independent of how expensive :math:`\phi` is;
* :class:`MonteCarlo` — a plain estimate with a fixed key (for tests and sanity checks).

:class:`Auto` (the default) uses the closed form when there is one and ``Mehler(64)``
otherwise. Why: absolute errors for tanh against adaptive scipy quadrature (``tests/``), at
unit-variance, moderate and large variances, off the diagonal at :math:`\rho = 0.995`
(``k`` / ``kdot``; on the diagonal, :math:`\rho = 1`, Mehler is exact to 1e-16 thanks to its tail
term, while 2-d Gauss-Hermite is at its worst):

=================  ===============  ===============  ===============
method             q = 2            q = 4            q = 8
=================  ===============  ===============  ===============
``Mehler(32)``     1e-7 / 2e-6      4e-6 / 4e-5      5e-5 / 3e-4
``Mehler(64)``     8e-10 / 3e-8     1e-7 / 2e-6      4e-6 / 5e-5
``Mehler(128)``    6e-13 / 4e-11    7e-10 / 3e-8     1e-7 / 2e-6
``GaussHermite(25)`` (neural-tangents' default)  2e-3 / 1e-2 at q = 3, rho = 0.997
=================  ===============  ===============  ===============

A Mehler entry costs ``order`` multiply-adds whatever the activation; a Gauss-Hermite entry costs
``deg**2`` activation evaluations. For activations with kinks (ELU, numerically evaluated ReLU)
the Hermite coefficients decay only algebraically: prefer a closed form where one exists.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ._numerics import correlation, gauss_hermite, hermite_moments, hermite_table, safe_sqrt, trapezoid_gaussian
from ._validate import error_if, real, static_int
from .activations import AbstractActivation, AbstractClosedFormActivation, _at_large_variance, _covariance

__all__ = [
    "AbstractMethod",
    "Auto",
    "ClosedForm",
    "Expectations",
    "GaussHermite",
    "Mehler",
    "MonteCarlo",
    "gaussian_expectations",
    "hermite_coefficients_at",
]


class Expectations(NamedTuple):
    """``k = E[phi(u) phi(v)]`` and ``kdot = E[phi'(u) phi'(v)]``."""

    k: Array
    kdot: Array


class AbstractMethod(eqx.Module):
    """How to evaluate a bivariate Gaussian expectation."""


def _static_float(x, name: str, lo: float, hi: float) -> float:
    """A structural (static) real number in ``[lo, hi]``: bools, strings, complex, NaN and
    traced values raise ``ValueError``."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a real number in [{lo:g}, {hi:g}], got {x!r} ({type(x).__name__})")
    v = float(x)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be a real number in [{lo:g}, {hi:g}], got {v!r}")
    return v


class ClosedForm(AbstractMethod):
    """The activation's closed form (``ValueError`` if it has none)."""


class GaussHermite(AbstractMethod):
    """Tensor-product Gauss-Hermite quadrature with ``deg`` nodes per dimension (``2 <= deg <= 400``)."""

    deg: int = eqx.field(static=True, default=32)

    def __check_init__(self):
        static_int(self.deg, "GaussHermite.deg", lo=2, hi=400)


class Mehler(AbstractMethod):
    r"""Truncated Mehler series of ``order`` terms plus a tail estimate (exact at
    ``rho = +-1``); the Hermite coefficients of each variance come from a trapezoidal rule of
    spacing ``step`` on ``[-cutoff, cutoff]`` (exponentially convergent for analytic
    activations, see :func:`rmtjax._numerics.trapezoid_gaussian`). ``1 <= order <= 400``,
    ``0.001 <= step <= 0.25``, ``8 <= cutoff <= 40``. Variances above 16
    (:data:`rmtjax._numerics.LARGE_VARIANCE`), where a step of ``step`` in :math:`z` no longer
    resolves :math:`f(\sqrt q z)` (tanh's diagonal was 3e-4 off at :math:`q = 1000` and
    :math:`k_{dot}` 3.3 times too large at :math:`10^4`), take their coefficients from the same
    number of nodes spread by :math:`\sqrt q z = \sinh t`
    (:func:`rmtjax._numerics.sinh_gaussian_rule`): 1e-15 relative on the diagonal up to
    :math:`q = 10^4`."""

    order: int = eqx.field(static=True, default=64)
    step: float = eqx.field(static=True, default=0.04)
    cutoff: float = eqx.field(static=True, default=13.0)

    def __check_init__(self):
        static_int(self.order, "Mehler.order", lo=1, hi=400)
        _static_float(self.step, "Mehler.step", 0.001, 0.25)
        _static_float(self.cutoff, "Mehler.cutoff", 8.0, 40.0)


class MonteCarlo(AbstractMethod):
    """Monte-Carlo estimate with ``num_samples`` draws (``1 <= num_samples <= 10**8``) from a
    fixed ``seed`` (``0 <= seed < 2**32``)."""

    num_samples: int = eqx.field(static=True, default=100_000)
    seed: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        static_int(self.num_samples, "MonteCarlo.num_samples", lo=1, hi=10**8)
        static_int(self.seed, "MonteCarlo.seed", lo=0, hi=2**32 - 1)


class Auto(AbstractMethod):
    """The closed form where the activation has one, else the numerical method ``numerical``.

    One ``Auto`` for the whole package (``rmtjax.Auto``, ``rmtjax.gaussian.Auto`` and
    ``rmtjax.hermite.Auto`` are this class). ``numerical=None`` (the default) means the default
    numerical method of the function it is passed to: :class:`Mehler` for Gaussian expectations
    (:func:`gaussian_expectations`, :mod:`rmtjax.meanfield`, the kernels),
    :class:`rmtjax.hermite.Trapezoid` for Hermite coefficients
    (:func:`rmtjax.hermite.hermite_coefficients`). A method that the function cannot use (e.g.
    ``Auto(Trapezoid())`` for Gaussian expectations) is refused there with a ``ValueError``.

    Example:
        >>> from rmtjax.activations import Tanh
        >>> from rmtjax.hermite import hermite_coefficients
        >>> k, kdot = gaussian_expectations(Tanh(), 1.0, 1.0, 0.5, method=Auto())
        >>> hermite_coefficients(Tanh(), order=4, method=Auto()).shape
        (5,)
    """

    numerical: AbstractMethod | None = None

    def __check_init__(self):
        if self.numerical is not None and (not isinstance(self.numerical, AbstractMethod)
                                           or isinstance(self.numerical, Auto | ClosedForm)):
            raise ValueError(f"Auto: numerical must be None or a numerical method object (Mehler(order), "
                             f"GaussHermite(deg), MonteCarlo(), or for Hermite coefficients Trapezoid(), "
                             f"GaussLegendre()), got {self.numerical!r:.80}")


_EXPECTATION_METHODS = (Mehler, GaussHermite, MonteCarlo)


def _resolve(activation: AbstractActivation, method: AbstractMethod) -> AbstractMethod:
    if not isinstance(activation, AbstractActivation):
        raise ValueError(f"activation must be an rmtjax.activations module, got {type(activation).__name__}")
    if not isinstance(method, AbstractMethod):
        raise ValueError(f"method must be an rmtjax.gaussian method object (Auto(), ClosedForm(), Mehler(order), "
                         f"GaussHermite(deg), MonteCarlo(num_samples)), got {method!r}")
    if isinstance(method, Auto):
        numerical = Mehler() if method.numerical is None else method.numerical
        if not isinstance(numerical, _EXPECTATION_METHODS):  # refused whatever the activation
            raise ValueError(f"method=Auto(numerical=...): Gaussian expectations need Mehler(order), GaussHermite(deg) "
                             f"or MonteCarlo() as the numerical method, got {numerical!r:.80}")
        return ClosedForm() if isinstance(activation, AbstractClosedFormActivation) else numerical
    if isinstance(method, ClosedForm) and not isinstance(activation, AbstractClosedFormActivation):
        raise ValueError(
            f"method=ClosedForm(): {type(activation).__name__} has no closed-form Gaussian expectation; use "
            "method=Mehler(order) or method=GaussHermite(deg)"
        )
    if not isinstance(method, (ClosedForm, *_EXPECTATION_METHODS)):
        raise ValueError(f"method must be an rmtjax.gaussian method object (Auto(), ClosedForm(), Mehler(order), "
                         f"GaussHermite(deg), MonteCarlo(num_samples)), got {method!r:.80}")
    return method


@functools.lru_cache(maxsize=None)
def _gh(deg: int):
    return gauss_hermite(deg)


@functools.lru_cache(maxsize=None)
def _mehler_table(order: int, step: float, cutoff: float):
    z, w = trapezoid_gaussian(step, cutoff)
    return z, w, w[:, None] * hermite_table(z, order)


def hermite_coefficients_at(fn, q: ArrayLike, *, order: int, step: float = 0.04, cutoff: float = 13.0) -> Array:
    r"""Coefficients :math:`a_j(q) = \mathbb E[f(\sqrt q z) h_j(z)]`, ``j = 0..order``, for
    every entry of ``q`` (shape ``q.shape + (order + 1,)``), by the trapezoidal rule.

    Args:
        fn: an elementwise function (an activation module or any callable).
        q: variances, finite and ``>= 0``.
        order: the highest coefficient index, ``0 <= order <= 400``.
        step, cutoff: the trapezoidal rule (as :class:`Mehler`).

    Example:
        >>> from rmtjax.activations import Tanh
        >>> hermite_coefficients_at(Tanh(), 1.0, order=3).shape
        (4,)
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    order = static_int(order, "order", lo=0, hi=400)
    step = _static_float(step, "step", 0.001, 0.25)
    cutoff = _static_float(cutoff, "cutoff", 8.0, 40.0)
    q = real(q, "q", lo=0.0)
    return _coefficients_and_tails(fn, q, order=order, step=step, cutoff=cutoff)[0]


def _coefficients_and_tails(fn, q, *, order: int, step: float, cutoff: float):
    """Hermite coefficients and the tail masses of the even and odd parts beyond ``order``:
    ``T_even = E[f_even^2] - sum_{j even <= order} a_j^2`` (and odd), clipped at 0. Variances above
    :data:`rmtjax._numerics.LARGE_VARIANCE` use :func:`rmtjax._numerics.sinh_gaussian_rule` (the
    trapezoid in ``z`` would not resolve ``f`` at the scale ``1/sqrt(q)``; as many nodes)."""
    z, w, wh = _mehler_table(order, step, cutoff)
    q = jnp.asarray(q)
    dtype = q.dtype
    vals = fn(safe_sqrt(q)[..., None] * jnp.asarray(z, dtype).reshape((1,) * q.ndim + z.shape))
    small = _tails(vals, vals @ jnp.asarray(wh, dtype), jnp.asarray(w, dtype))

    def large(zl, wl, vl):
        return _tails(vl, hermite_moments(vl * wl, zl, order), wl)

    return _at_large_variance(fn, q, small, large, (z.shape[0] - 1) // 2, cutoff)


def _tails(vals, coef, w):
    """``(coef, T_even, T_odd)`` from values at symmetric nodes with weights ``w`` (``(N,)``, or per
    variance ``(..., N)``)."""
    flipped = vals[..., ::-1]  # the nodes are symmetric: f(-z_g)
    even = ((0.5 * (vals + flipped)) ** 2) @ w if w.ndim == 1 else jnp.sum((0.5 * (vals + flipped)) ** 2 * w, -1)
    odd = ((0.5 * (vals - flipped)) ** 2) @ w if w.ndim == 1 else jnp.sum((0.5 * (vals - flipped)) ** 2 * w, -1)
    sq = coef * coef
    t_even = jnp.maximum(even - jnp.sum(sq[..., 0::2], axis=-1), 0.0)
    t_odd = jnp.maximum(odd - jnp.sum(sq[..., 1::2], axis=-1), 0.0)
    return coef, t_even, t_odd


def _mehler_sum(a1: Array, a2: Array, rho: Array) -> Array:
    """sum_j a1[..., j] a2[..., j] rho^j by Horner's rule (scan over j, highest first)."""
    xs = (jnp.moveaxis(a1, -1, 0)[::-1], jnp.moveaxis(a2, -1, 0)[::-1])
    shape = jnp.broadcast_shapes(a1.shape[:-1], a2.shape[:-1], rho.shape)
    init = jnp.zeros(shape, jnp.result_type(a1, a2, rho))

    def body(acc, ab):
        return acc * rho + ab[0] * ab[1], None

    return jax.lax.scan(body, init, xs)[0]


def _mehler(fn, q1, q2, rho, method):
    r"""Truncated Mehler series plus a tail estimate that makes it exact at
    :math:`\rho = \pm 1` when :math:`q_1 = q_2`:
    :math:`\sum_{j \le J} a_j(q_1)a_j(q_2)\rho^j + \sqrt{T^e_1T^e_2}\,\rho^{j_e}
    + \sqrt{T^o_1T^o_2}\,\rho^{j_o}`, with :math:`j_e, j_o` the first even/odd index above
    :math:`J`; the tail is bounded by Cauchy-Schwarz, so the estimate never errs by more than
    twice the truncated mass."""
    order = method.order
    kw = dict(order=order, step=method.step, cutoff=method.cutoff)
    a1, e1, o1 = _coefficients_and_tails(fn, q1, **kw)
    a2, e2, o2 = _coefficients_and_tails(fn, q2, **kw)
    head = _mehler_sum(a1, a2, rho)
    je, jo = (order + 1, order + 2) if (order + 1) % 2 == 0 else (order + 2, order + 1)
    return head + safe_sqrt(e1 * e2) * rho**je + safe_sqrt(o1 * o2) * rho**jo


def _gauss_hermite(activation, q1, q2, q12, deg):
    z, w = _gh(deg)
    dtype = jnp.result_type(q1, q2, q12)
    z = jnp.asarray(z, dtype)
    w = jnp.asarray(w, dtype)
    rho, s = correlation(q1, q2, q12)
    r1, r2 = safe_sqrt(q1), safe_sqrt(q2)
    za = z.reshape((1,) * q1.ndim + (deg, 1))
    zb = z.reshape((1,) * q1.ndim + (1, deg))
    u = r1[..., None] * z.reshape((1,) * q1.ndim + (deg,))  # (..., a)
    v = r2[..., None, None] * (rho[..., None, None] * za + s[..., None, None] * zb)  # (..., a, b)

    def expect(f):
        inner = f(v) @ w  # (..., a)
        return (f(u) * inner) @ w

    return expect(activation), expect(activation.derivative)


def _monte_carlo(activation, q1, q2, q12, num_samples, seed):
    dtype = jnp.result_type(q1, q2, q12)
    z = jax.random.normal(jax.random.key(seed), (2, num_samples), dtype)
    rho, s = correlation(q1, q2, q12)
    z0 = z[0].reshape((1,) * q1.ndim + (num_samples,))
    z1 = z[1].reshape((1,) * q1.ndim + (num_samples,))
    u = safe_sqrt(q1)[..., None] * z0
    v = safe_sqrt(q2)[..., None] * (rho[..., None] * z0 + s[..., None] * z1)
    k = jnp.mean(activation(u) * activation(v), axis=-1)
    kdot = jnp.mean(activation.derivative(u) * activation.derivative(v), axis=-1)
    return k, kdot


def _expectations(activation: AbstractActivation, q1: Array, q2: Array, q12: Array,
                  method: AbstractMethod) -> Expectations:
    """The expectations for valid arguments (arrays of one floating dtype, ``q12`` within
    :math:`\\pm\\sqrt{q_1q_2}`) and a method object; no checks (the kernel engine calls this)."""
    dtype = q12.dtype
    method = _resolve(activation, method)
    shape = jnp.broadcast_shapes(q1.shape, q2.shape, q12.shape)
    if isinstance(method, ClosedForm):
        k, kdot = activation._dual(q1, q2, q12)
    elif isinstance(method, GaussHermite):
        q1, q2, q12 = (jnp.broadcast_to(x, shape) for x in (q1, q2, q12))
        k, kdot = _gauss_hermite(activation, q1, q2, q12, method.deg)
    elif isinstance(method, Mehler):
        rho, _ = correlation(q1, q2, q12)
        k = _mehler(activation, q1, q2, rho, method)
        kdot = _mehler(activation.derivative, q1, q2, rho, method)
    elif isinstance(method, MonteCarlo):
        q1, q2, q12 = (jnp.broadcast_to(x, shape) for x in (q1, q2, q12))
        k, kdot = _monte_carlo(activation, q1, q2, q12, method.num_samples, method.seed)
    else:  # pragma: no cover - _resolve rejects the rest
        raise ValueError(f"unknown method {method!r}")
    return Expectations(jnp.broadcast_to(k, shape).astype(dtype), jnp.broadcast_to(kdot, shape).astype(dtype))


@eqx.filter_jit
def _expectations_compiled(activation, q1, q2, q12, method):
    """:func:`_expectations` as one compiled program per activation type, method and shape (called
    eagerly, the formula or the quadrature otherwise compiled each of its operations on its own)."""
    return _expectations(activation, q1, q2, q12, method)


def gaussian_expectations(
    activation: AbstractActivation,
    q1: ArrayLike,
    q2: ArrayLike,
    q12: ArrayLike,
    *,
    method: AbstractMethod = Auto(),
) -> Expectations:
    r"""Returns :math:`(\mathbb E[\phi(u)\phi(v)], \mathbb E[\phi'(u)\phi'(v)])`.

    Args:
        activation: an :mod:`rmtjax.activations` module.
        q1, q2: the variances of ``u`` and ``v``, finite and ``>= 0``, broadcastable with ``q12``.
        q12: the covariance, :math:`q_{12}^2 \le q_1 q_2`; rounding up to
            :math:`|q_{12}| \le (1 + \sqrt{\varepsilon})\sqrt{q_1q_2}` (1.5e-8 in float64, 3.5e-4
            in float32) is clipped to the boundary, more is rejected.
        method: :class:`Auto` (default), :class:`ClosedForm`, :class:`GaussHermite`,
            :class:`Mehler` or :class:`MonteCarlo`.

    Raises:
        ValueError: for invalid arguments (eagerly, or through a compiled check under ``jit``),
            and where the expectation overflows the dtype in a way that leaves no value (terms of
            both signs beyond its range); an overflow to ``+-inf`` that is the true value is
            returned.

    Example:
        >>> from rmtjax.activations import Tanh
        >>> k, kdot = gaussian_expectations(Tanh(), 1.0, 1.0, 0.5, method=GaussHermite(40))
    """
    _resolve(activation, method)
    q1, q2, q12 = _covariance(q1, q2, q12)
    out = _expectations_compiled(activation, q1, q2, q12, method)
    bad = jnp.isnan(out.k) | jnp.isnan(out.kdot)
    msg = (f"q1, q2: the Gaussian expectations of {type(activation).__name__} overflow {q12.dtype.name} at these "
           "variances (no finite or infinite value can be given); use smaller q1, q2 or float64")
    return Expectations(*error_if(tuple(out), bad, msg))
