r"""Activation functions as ``equinox`` modules.

Every activation is an :class:`eqx.Module` whose continuous parameters are array leaves, so
``jax.grad`` and ``jax.vmap`` act on them. Activations with a closed-form Gaussian dual
subclass :class:`AbstractClosedFormActivation` and implement

.. math::
    \mathrm{dual}(q_1, q_2, q_{12}) = \big(\mathbb{E}[\phi(u)\phi(v)],\;
    \mathbb{E}[\phi'(u)\phi'(v)]\big), \qquad
    (u, v) \sim \mathcal{N}\!\left(0, \begin{pmatrix} q_1 & q_{12} \\ q_{12} & q_2
    \end{pmatrix}\right).

The formulas follow neural-tangents' conventions (Novak et al. 2020, "Neural Tangents: Fast
and Easy Infinite Neural Networks in Python", ICLR), which are the golden reference of the
test suite. Everything else (``Tanh``, ``Sigmoid``, ``Swish``, ``Softplus``, ``Elu``, ``Mish``,
``Custom``) goes through the numerical methods of :mod:`rmtjax.gaussian`.

Example:
    >>> import jax.numpy as jnp
    >>> from rmtjax.activations import Relu
    >>> k, kdot = Relu().dual(jnp.array(1.0), jnp.array(1.0), jnp.array(1.0))
    >>> float(k), float(kdot)
    (0.5, 0.5)
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
from scipy import special
from jaxtyping import Array, ArrayLike

from ._numerics import (
    LARGE_VARIANCE,
    angle,
    atan2,
    atan_deficit,
    det_ratio,
    gap,
    hermite_moments,
    hermite_table,
    safe_sqrt,
    sinh_gaussian_rule,
    sqrt_prod,
    trapezoid_gaussian,
)
from ._validate import as_real, check_range, concrete, error_if, flag, real, static_int

__all__ = [
    "AbstractActivation",
    "AbstractClosedFormActivation",
    "AbstractPolynomial",
    "ABRelu",
    "Abs",
    "Cos",
    "Custom",
    "Elu",
    "Erf",
    "Exp",
    "Gaussian",
    "Gelu",
    "HardTanh",
    "Hermite",
    "HermiteSeries",
    "Identity",
    "LeakyRelu",
    "Mish",
    "Monomial",
    "Polynomial",
    "Rbf",
    "RectifiedMonomial",
    "Relu",
    "Sigmoid",
    "Sign",
    "Sin",
    "Softplus",
    "Swish",
    "SiLU",
    "Tanh",
    "Transformed",
]


_SUPPORTED_DEGREE = 100  # polynomial / rectified-monomial degrees (see Polynomial)


def _param(x: ArrayLike, owner: str, name: str, **bounds) -> Array:
    """A scalar activation parameter as a real array leaf: complex, boolean, string and
    non-scalar values raise ``ValueError`` at once; NaN/inf (and values outside ``bounds``, the
    keywords of :func:`rmtjax._validate.check_range`) raise eagerly, or through
    ``equinox.error_if`` when the parameter is traced."""
    label = f"{owner}.{name}"
    return check_range(as_real(x, label, ndim=0), label, **bounds)


def _degree(x, owner: str) -> int:
    n = static_int(x, f"{owner}.degree", lo=0)
    if n > _SUPPORTED_DEGREE:
        raise ValueError(f"{owner}.degree must be an integer in [0, {_SUPPORTED_DEGREE}] (the supported range: the "
                         f"dual is exact and checked against 60-digit references up to degree {_SUPPORTED_DEGREE}), "
                         f"got {n}")
    return n


def _float_dtype(*xs):
    """The widest floating dtype among ``xs`` (integers count as the default float); no
    promotion rules are involved, so float32 and float64 mix without a strict-promotion error."""
    best = None
    for x in xs:
        dt = jnp.asarray(x).dtype
        if not jnp.issubdtype(dt, jnp.floating):
            dt = jnp.dtype(jnp.result_type(float))
        if best is None or jnp.dtype(dt).itemsize > jnp.dtype(best).itemsize:
            best = dt
    return jnp.dtype(best)


def covariance_tolerance(dtype) -> float:
    r"""The rounding allowed in :math:`|q_{12}| \le \sqrt{q_1q_2}`: :math:`\sqrt{\varepsilon}` of
    ``dtype`` (1.5e-8 in float64, 3.5e-4 in float32). Within it ``q12`` is clipped to the
    boundary; beyond it the covariance is rejected."""
    return float(np.sqrt(np.finfo(np.dtype(dtype)).eps))


def _covariance(q1, q2, q12, names=("q1", "q2", "q12")):
    """Validated ``(q1, q2, q12)`` of one floating dtype, broadcast together, ``q12`` clipped
    to :math:`\\pm\\sqrt{q_1q_2}` (see :func:`covariance_tolerance`)."""
    n1, n2, n12 = names
    q1 = as_real(q1, n1)
    q2 = as_real(q2, n2)
    q12 = as_real(q12, n12)
    dtype = _float_dtype(q1, q2, q12)
    q1, q2, q12 = q1.astype(dtype), q2.astype(dtype), q12.astype(dtype)
    try:
        shape = jnp.broadcast_shapes(q1.shape, q2.shape, q12.shape)
    except ValueError:
        raise ValueError(f"{n1}, {n2} and {n12} must broadcast together, got shapes {q1.shape}, {q2.shape}, "
                         f"{q12.shape}") from None
    q1 = check_range(q1, n1, lo=0.0)
    q2 = check_range(q2, n2, lo=0.0)
    q12 = check_range(q12, n12)
    rank = len(shape)  # one rank for all three (no implicit rank promotion downstream)
    q1, q2, q12 = (q.reshape((1,) * (rank - q.ndim) + q.shape) for q in (q1, q2, q12))
    tol = covariance_tolerance(dtype)
    p = sqrt_prod(q1, q2)
    bad = jnp.abs(q12) > (1 + tol) * p
    msg = (f"{n12} must satisfy {n12}^2 <= {n1} {n2} (a covariance; allowed rounding |{n12}| <= (1 + {tol:.1e}) "
           f"sqrt({n1} {n2}))")
    c = concrete(bad)
    if c is not None and np.any(c):
        i = tuple(int(j) for j in np.argwhere(np.broadcast_to(c, shape))[0]) if np.ndim(c) else ()
        v = [float(np.broadcast_to(np.asarray(a), shape)[i]) for a in (q1, q2, q12)]
        raise ValueError(f"{msg}, got {n1}={v[0]:.6g}, {n2}={v[1]:.6g}, {n12}={v[2]:.6g}"
                         + (f" at index {i}" if i else ""))
    q12 = error_if(q12, bad, msg)
    return q1, q2, jnp.clip(q12, -p, p)


# --------------------------------------------------------------------------------------
# Shared helpers of the numerical defaults (static NumPy tables, cached)
# --------------------------------------------------------------------------------------

_MAX_ORDER = 10_000  # Hermite coefficient orders (a static table size, as rmtjax.hermite)
_LIPSCHITZ_GRID = np.linspace(-40.0, 40.0, 80_001)  # spacing 1e-3 (the numerical Lipschitz default)
# sup |phi'| of GELU, Phi(sqrt 2) + sqrt 2 varphi(sqrt 2), and of SiLU, s(y)(1 + y(1 - s(y))) at its
# maximum y = 2.3994 (checked against a grid of spacing 1e-6 in tests/test_activation_catalogue.py)
_GELU_LIPSCHITZ = float(0.5 * special.erfc(-1.0) + math.sqrt(2) * math.exp(-1.0) / math.sqrt(2 * math.pi))
_SWISH_LIPSCHITZ = 1.099839320128867


def _variance(q, ndim=None) -> Array:
    """A variance argument: real, finite, ``>= 0`` (integers become the default float)."""
    return real(q, "q", ndim=ndim, lo=0.0)


def _static_real(x, name: str, lo: float, hi: float) -> float:
    """A static configuration number (a Python or NumPy real, not a bool) in ``[lo, hi]``."""
    if isinstance(x, bool | np.bool_) or not isinstance(x, int | float | np.integer | np.floating) \
            or not lo <= float(x) <= hi:
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {x!r}")
    return float(x)


@functools.lru_cache(maxsize=None)
def _trapezoid(step: float, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    return trapezoid_gaussian(step, cutoff)


@functools.lru_cache(maxsize=None)
def _midpoint(step: float, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints ``(i + 1/2) step`` in ``[-cutoff, cutoff]`` (none at 0) and their weights ``step varphi(z)``."""
    m = int(math.ceil(cutoff / step))
    z = step * (np.arange(-m, m, dtype=np.float64) + 0.5)
    return z, step * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _at_large_variance(fn, q, small, large, half: int, cutoff: float = 13.0):
    """``small`` (a pytree of results of the trapezoidal rule in z, each of shape ``q.shape`` or
    ``q.shape + (k,)``) where ``q <= LARGE_VARIANCE``, else ``large(z, w, fn(sqrt(q) z))`` on the
    ``2 half + 1`` nodes of :func:`rmtjax._numerics.sinh_gaussian_rule` (computed only when some
    ``q`` is large)."""
    qc = concrete(q)
    if qc is not None and not np.any(np.asarray(qc) > LARGE_VARIANCE):
        return small

    def with_large():
        big = q > LARGE_VARIANCE
        zl, wl = sinh_gaussian_rule(jnp.where(big, q, 2 * LARGE_VARIANCE), half, cutoff)
        out = large(zl, wl, fn(safe_sqrt(q)[..., None] * zl))
        return jax.tree.map(lambda a, b: jnp.where(big.reshape(big.shape + (1,) * (a.ndim - big.ndim)), a, b),
                            out, small)

    return jax.lax.cond(jnp.any(q > LARGE_VARIANCE), with_large, lambda: small)


@functools.lru_cache(maxsize=None)
def _weighted_hermite(step: float, cutoff: float, order: int) -> np.ndarray:
    """Trapezoidal weights times :math:`h_k(z)` at the nodes, ``(nodes, order + 1)``."""
    z, w = _trapezoid(step, cutoff)
    return w[:, None] * hermite_table(z, order)


class AbstractActivation(eqx.Module):
    """An elementwise activation :math:`\\phi`.

    Subclasses implement ``__call__``; ``derivative`` defaults to forward-mode autodiff.
    ``nt_name`` is the neural-tangents layer name used by :mod:`rmtjax.stax`. Evaluating
    :math:`\\phi` follows IEEE arithmetic (NaN in, NaN out); parameters and Gaussian
    expectations are validated.

    The facts the theory needs about :math:`\\phi` are methods, each with a numerical default here
    and a closed form on the concrete classes that have one (no type switch elsewhere):

    * :meth:`length_map` — :math:`\\mathbb E[\\phi(\\sqrt q z)^2]` (the length map of
      :mod:`rmtjax.meanfield` at :math:`\\sigma_w^2 = 1, \\sigma_b^2 = 0`);
    * :meth:`hermite_coefficients` — :math:`a_k(q) = \\mathbb E[\\phi(\\sqrt q z)h_k(z)]`
      (:mod:`rmtjax.hermite`);
    * :meth:`derivative_squared_law` — the law of :math:`\\phi'(\\sqrt q z)^2` (Jacobian spectra,
      :mod:`rmtjax.rmt`);
    * :meth:`lipschitz` — :math:`\\sup_x|\\phi'(x)|` (concentrated data, :mod:`rmtjax.data`);
    * ``dual`` (on :class:`AbstractClosedFormActivation`) — the bivariate Gaussian expectations
      (numerically: :mod:`rmtjax.gaussian`).

    Every class is abstract (``Abstract...``) or final: no concrete class subclasses another.
    """

    nt_name: ClassVar[str] = ""
    # phi'(sqrt(q) z)^2 has a law that does not depend on q (phi positively homogeneous of degree
    # 1 or 0: the ReLU family, identity, sign): Jacobian spectra need no q* for it
    scale_free_derivative: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, x: ArrayLike) -> Array:
        raise NotImplementedError

    def derivative(self, x: ArrayLike) -> Array:
        r""":math:`\phi'(x)`, elementwise."""
        x = jnp.asarray(x)
        return jax.jvp(self.__call__, (x,), (jnp.ones_like(x),))[1]

    # -- facts: validated public methods over the formulas ``_length_map``, ``_hermite``, ... ------

    def length_map(self, q: ArrayLike) -> Array:
        r""":math:`\mathbb E[\phi(\sqrt q z)^2]`, :math:`z\sim\mathcal N(0, 1)`, for each entry of
        ``q`` (finite, ``>= 0``): the length map :math:`\mathcal V(q) = \sigma_w^2\,(\cdot) +
        \sigma_b^2` of Poole et al. (2016), eq. 3, whose fixed point is :math:`q^*`.

        Closed form where the activation has one (its ``dual`` at :math:`q_1 = q_2 = q_{12} = q`);
        otherwise the trapezoidal rule of spacing 0.04 on :math:`|z| \le 13`
        (:func:`rmtjax._numerics.trapezoid_gaussian`) — the same sum as the diagonal of
        :class:`rmtjax.gaussian.Mehler`, so :func:`rmtjax.meanfield.q_star` and this method give
        one :math:`q^*`. Exponentially convergent for analytic :math:`\phi` (about 1e-15 relative
        for tanh, sigmoid, softplus, SiLU, mish); :math:`O(h^2)` at a kink of
        :math:`\phi^2`'s second derivative (ELU: about 1e-8). That rule resolves
        :math:`\phi(\sqrt q z)` only while :math:`0.04\sqrt q` is small against the distance of
        :math:`\phi`'s complex singularities from the real axis (its error grows like
        :math:`e^{-\pi^2/(0.04\sqrt q)}` for tanh: 3.3e-4 at :math:`q = 1000`), so above
        :math:`q = 16` (:data:`rmtjax._numerics.LARGE_VARIANCE`) the same number of nodes is spread by
        :math:`\sqrt q z = \sinh t` (:func:`rmtjax._numerics.sinh_gaussian_rule`): measured against
        scipy and mpmath, tanh and sigmoid to 1e-15 for :math:`q` up to :math:`10^4` and 2e-11 at
        :math:`10^8`. An activation with an internal scale (``Transformed`` with a large ``alpha``)
        is resolved only by the first rule: keep :math:`\alpha^2 q` below about 100.

        Example:
            >>> import jax.numpy as jnp
            >>> from rmtjax.activations import HardTanh
            >>> round(float(HardTanh().length_map(jnp.array(2.0))), 6)
            0.641717
        """
        return self._length_map(_variance(q))

    def _length_map(self, q: Array) -> Array:
        z, w = _trapezoid(0.04, 13.0)
        dt = q.dtype
        vals = self(safe_sqrt(q)[..., None] * jnp.asarray(z, dt).reshape((1,) * q.ndim + z.shape))
        small = ((vals * vals) @ jnp.asarray(w, vals.dtype)).astype(dt)

        def large(zl, wl, vl):
            return jnp.sum(vl * vl * wl, -1).astype(dt)

        return _at_large_variance(self, q, small, large, (z.shape[0] - 1) // 2)

    def hermite_coefficients(self, q: ArrayLike, *, order: int) -> Array:
        r"""Hermite coefficients :math:`a_k(q) = \mathbb E[\phi(\sqrt q z)\,h_k(z)]`,
        ``k = 0..order`` (orthonormal :math:`h_k = He_k/\sqrt{k!}`), shape ``q.shape + (order + 1,)``.

        Closed form on the classes that have one (:func:`rmtjax.hermite.hermite_coefficients`
        lists them and their accuracy); otherwise the trapezoidal rule of spacing 0.04 on
        :math:`|z|\le 13` (:class:`rmtjax.hermite.Trapezoid`): exponentially convergent for analytic
        :math:`\phi`, :math:`O(h^2)` at a kink (measured for ELU, ``k <= 30``: 2e-5 with
        :math:`\alpha = 0.7`, whose :math:`\phi'` jumps at 0, 2e-8 with :math:`\alpha = 1`; there
        ``rmtjax.hermite.hermite_coefficients(..., method=GaussLegendre())`` splits at the kink).
        ``q`` finite and ``>= 0``; ``order`` a static integer in ``[0, 10000]``.

        Example:
            >>> import jax.numpy as jnp
            >>> from rmtjax.activations import Relu
            >>> [round(float(a), 6) for a in Relu().hermite_coefficients(jnp.array(1.0), order=2)]
            [0.398942, 0.5, 0.282095]
        """
        order = static_int(order, "order", lo=0, hi=_MAX_ORDER)
        return self._hermite(_variance(q), order)

    def _hermite(self, q: Array, order: int) -> Array:
        z, w = _trapezoid(0.04, 13.0)
        dt = q.dtype
        vals = self(safe_sqrt(q)[..., None] * jnp.asarray(z, dt).reshape((1,) * q.ndim + z.shape))
        small = (vals @ jnp.asarray(_weighted_hermite(0.04, 13.0, order), vals.dtype)).astype(dt)

        def large(zl, wl, vl):
            return hermite_moments(vl * wl, zl, order).astype(dt)

        return _at_large_variance(self, q, small, large, (z.shape[0] - 1) // 2)

    def derivative_squared_law(self, q: ArrayLike, *, step: float = 0.05,
                               cutoff: float = 9.0) -> tuple[Array, Array]:
        r"""The law of :math:`\phi'(h)^2`, :math:`h\sim\mathcal N(0, q)`, as ``(atoms, weights)``
        (weights summing to 1): the factor :math:`\mu_{D^2}` of Jacobian spectra
        (:func:`rmtjax.rmt.derivative_squared_law`, Pennington, Schoenholz & Ganguli 2017).

        Exact atoms where :math:`\phi'` takes finitely many values (ReLU family, identity, sign,
        hard-tanh); otherwise atoms :math:`\phi'(\sqrt q z_i)^2` at the midpoints
        :math:`z_i = (i + \tfrac12)\,\mathrm{step}` of ``[-cutoff, cutoff]`` with Gaussian weights
        (exponentially convergent for smooth :math:`\phi`, like the trapezoidal rule, and
        :math:`O(\mathrm{step}^2)` where :math:`\phi'` jumps at 0, as ELU's with
        :math:`\alpha\ne1`: no node sits on the jump). ``step`` in [1e-3, 1], ``cutoff`` in [1, 40].
        ``q``: a finite scalar ``>= 0``.

        Example:
            >>> import jax.numpy as jnp
            >>> from rmtjax.activations import Relu
            >>> atoms, weights = Relu().derivative_squared_law(jnp.array(1.0))
            >>> [float(a) for a in atoms], [float(w) for w in weights]
            ([0.0, 1.0], [0.5, 0.5])
        """
        q = _variance(q, ndim=0)
        step = _static_real(step, "step", lo=1e-3, hi=1.0)
        cutoff = _static_real(cutoff, "cutoff", lo=1.0, hi=40.0)
        return self._derivative_squared_law(q, step, cutoff)

    def _derivative_squared_law(self, q: Array, step: float, cutoff: float) -> tuple[Array, Array]:
        z, w = _midpoint(step, cutoff)
        atoms = self.derivative(jnp.sqrt(q) * jnp.asarray(z, q.dtype)) ** 2
        return atoms, jnp.asarray(w / w.sum(), q.dtype)

    def lipschitz(self) -> Array:
        r"""The Lipschitz constant :math:`\sup_x|\phi'(x)|` (``inf`` where :math:`\phi` is not
        Lipschitz: unbounded slope or a jump), differentiable in the parameters.

        Closed form on the concrete classes. The default (:class:`Custom`, :class:`Mish`) is
        numerical: the largest :math:`|\phi'|` on a grid of spacing 1e-3 on :math:`[-40, 40]`, refined
        to spacing 1e-6 around its maximum — an estimate (it can miss a peak narrower than the grid or
        beyond 40; for Mish, 1.0884981511, it agrees with the largest chord slope to 1e-12).

        Example:
            >>> from rmtjax.activations import Sigmoid
            >>> float(Sigmoid().lipschitz())
            0.25
        """
        return self._lipschitz()

    def _lipschitz(self) -> Array:
        dt = jnp.result_type(float, *[x for x in jax.tree_util.tree_leaves(self) if eqx.is_inexact_array(x)])
        x = jnp.asarray(_LIPSCHITZ_GRID, dt)
        slope = jnp.abs(self.derivative(x))
        # refined around the grid's maximum, spacing 1e-6
        top = jax.lax.stop_gradient(x[jnp.argmax(slope)])
        fine = top + jnp.asarray(np.linspace(-1e-3, 1e-3, 2001), dt)
        return jnp.maximum(jnp.max(slope), jnp.max(jnp.abs(self.derivative(fine))))


class AbstractClosedFormActivation(AbstractActivation):
    """An activation with closed-form Gaussian expectations (see the module docstring).

    Subclasses implement ``_dual`` (the formula, for valid arguments of one dtype); ``dual``
    validates its arguments first.
    """

    def dual(self, q1: ArrayLike, q2: ArrayLike, q12: ArrayLike) -> tuple[Array, Array]:
        r"""Returns :math:`(\mathbb{E}[\phi(u)\phi(v)], \mathbb{E}[\phi'(u)\phi'(v)])` for
        :math:`(u, v) \sim \mathcal N(0, [[q_1, q_{12}], [q_{12}, q_2]])`.

        ``q1, q2 >= 0`` and :math:`q_{12}^2 \le q_1 q_2` (up to :func:`covariance_tolerance`),
        broadcastable; otherwise ``ValueError`` (``equinox.error_if`` under ``jit``).
        """
        q1, q2, q12 = _covariance(q1, q2, q12)
        return _dual_compiled(self, q1, q2, q12)

    @abc.abstractmethod
    def _dual(self, q1: Array, q2: Array, q12: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    @abc.abstractmethod
    def _hermite(self, q: Array, order: int) -> Array:
        """Closed-form Hermite coefficients (every closed-form dual comes with them)."""
        raise NotImplementedError

    def _length_map(self, q: Array) -> Array:
        k = self._dual(q, q, q)[0]
        return jnp.broadcast_to(k, q.shape).astype(q.dtype)


@eqx.filter_jit
def _dual_compiled(activation: AbstractClosedFormActivation, q1: Array, q2: Array, q12: Array) -> tuple[Array, Array]:
    """``activation._dual`` broadcast to the arguments' shape, as one compiled program per activation type and
    shape (called eagerly, each operation of the formula otherwise compiled on its own)."""
    k, kdot = activation._dual(q1, q2, q12)
    shape = jnp.broadcast_shapes(q1.shape, q2.shape, q12.shape)
    return jnp.broadcast_to(k, shape).astype(q12.dtype), jnp.broadcast_to(kdot, shape).astype(q12.dtype)


# --------------------------------------------------------------------------------------
# Closed-form Hermite coefficients: static NumPy tables times traced parameter-dependent factors
# (Liang & Tran-Bach 2020; the formulas are listed in rmtjax.hermite.hermite_coefficients)
# --------------------------------------------------------------------------------------

_PHI0 = 1.0 / math.sqrt(2.0 * math.pi)


def _lgamma(x):
    from scipy.special import gammaln

    return gammaln(np.asarray(x, dtype=np.float64))


def _he0_over_sqrt_fact(m: np.ndarray, k: np.ndarray) -> np.ndarray:
    r""":math:`He_m(0)/\sqrt{k!}` for integer arrays ``m, k`` (``m < 0`` gives 0), in log space:
    :math:`He_{2j}(0) = (-1)^j (2j)!/(2^j j!)`."""
    m = np.asarray(m)
    k = np.asarray(k)
    out = np.zeros(np.broadcast(m, k).shape)
    even = (m >= 0) & (m % 2 == 0)
    j = np.where(even, m // 2, 0)
    logv = _lgamma(2 * j + 1) - j * math.log(2) - _lgamma(j + 1) - 0.5 * _lgamma(k + 1)
    return np.where(even, np.where(j % 2 == 0, 1.0, -1.0) * np.exp(logv), out)


@functools.lru_cache(maxsize=None)
def _rectified_table(n: int, order: int) -> np.ndarray:
    r""":math:`\mathbb E[z_+^n h_k(z)]`, ``k = 0..order``: for ``k > n`` by integrating by parts
    ``n + 1`` times, :math:`n!\,\varphi(0)He_{k-n-1}(0)/\sqrt{k!}`; for ``k <= n`` from the
    half-line moments :math:`\mathbb E[z_+^m] = 2^{m/2}\Gamma(\tfrac{m+1}{2})/(2\sqrt\pi)`."""
    from numpy.polynomial.hermite_e import herme2poly

    k = np.arange(order + 1)
    out = math.factorial(n) * _PHI0 * _he0_over_sqrt_fact(k - n - 1, k)
    for kk in range(min(n, order) + 1):
        e = herme2poly([0] * kk + [1])
        mom = [2 ** ((n + j) / 2) * math.gamma((n + j + 1) / 2) / (2 * math.sqrt(math.pi)) for j in range(len(e))]
        out[kk] = float(np.dot(e, mom)) / math.sqrt(math.factorial(kk))
    return out


@functools.lru_cache(maxsize=None)
def _erf_table(order: int) -> np.ndarray:
    r""":math:`(2j-1)!!/\sqrt{(2j+1)!}` at odd ``k = 2j + 1`` (0 at even ``k``)."""
    k = np.arange(order + 1)
    j = np.maximum((k - 1) // 2, 0)
    logv = _lgamma(2 * j + 1) - j * math.log(2) - _lgamma(j + 1) - 0.5 * _lgamma(k + 1)
    return np.where(k % 2 == 1, np.exp(logv), 0.0)


@functools.lru_cache(maxsize=None)
def _even_table(order: int) -> np.ndarray:
    r""":math:`(2j-1)!!/\sqrt{(2j)!}` at even ``k = 2j`` (0 at odd ``k``)."""
    k = np.arange(order + 1)
    j = k // 2
    logv = _lgamma(2 * j + 1) - j * math.log(2) - _lgamma(j + 1) - 0.5 * _lgamma(k + 1)
    return np.where(k % 2 == 0, np.exp(logv), 0.0)


def _row(v, nd: int):
    v = jnp.asarray(v)
    return v.reshape((1,) * nd + v.shape)


def _scaled_powers(x: Array, order: int, scale: np.ndarray | None = None) -> Array:
    r""":math:`x^k\,s_k`, ``k = 0..order`` (shape ``x.shape + (order + 1,)``) as a cumulative
    product, so the derivative at ``x = 0`` is finite (``scale[k]`` multiplies step ``k``)."""
    nd = x.ndim
    steps = jnp.broadcast_to(x[..., None], x.shape + (order,))
    if scale is not None:
        steps = steps * _row(jnp.asarray(scale[1:], x.dtype), nd)
    first = jnp.ones(x.shape + (1,), x.dtype)
    return jnp.cumprod(jnp.concatenate([first, steps], axis=-1), axis=-1)


def _erf_coefficients(a, beta: Array, order: int) -> Array:
    r"""Coefficients of :math:`a\,\mathrm{erf}(\beta z)`: at :math:`k = 2j+1`,
    :math:`a\frac{2\beta}{\sqrt\pi\sqrt{1+2\beta^2}}(-r)^j\frac{(2j-1)!!}{\sqrt{(2j+1)!}}`,
    :math:`r = 2\beta^2/(1+2\beta^2)` (Stein's lemma and the Gaussian integral
    :math:`\mathbb E[e^{-cz^2}He_{2j}(z)] = (1+2c)^{-1/2}(-2c/(1+2c))^j(2j-1)!!`)."""
    nd = beta.ndim
    b2 = beta * beta
    r = -2 * b2 / (1 + 2 * b2)
    # r^j at k = 2j + 1 (and k = 2j): powers of sqrt-free r, indexed by j = k // 2
    rj = _scaled_powers(r, order // 2 + 1)[..., np.arange(order + 1) // 2]
    front = a * 2 * beta / (math.sqrt(math.pi) * jnp.sqrt(1 + 2 * b2))
    return front[..., None] * rj * _row(jnp.asarray(_erf_table(order), beta.dtype), nd)


def _gaussian_bump_coefficients(a, c: Array, order: int) -> Array:
    r"""Coefficients of :math:`a e^{-cz^2}` (:math:`c > -1/2`): at :math:`k = 2j`,
    :math:`a(1+2c)^{-1/2}(-2c/(1+2c))^j(2j-1)!!/\sqrt{(2j)!}`."""
    r = -2 * c / (1 + 2 * c)
    rj = _scaled_powers(r, order // 2 + 1)[..., np.arange(order + 1) // 2]
    front = a / jnp.sqrt(1 + 2 * c)
    return front[..., None] * rj * _row(jnp.asarray(_even_table(order), c.dtype), c.ndim)


def _sin_coefficients(a, beta: Array, c, order: int) -> Array:
    r""":math:`a\sin(\beta z + c)`: :math:`a\,\beta^k e^{-\beta^2/2}\sin(c + k\pi/2)/\sqrt{k!}`
    (imaginary part of :math:`\mathbb E[e^{i(\beta z + c)}He_k(z)] = e^{ic}(i\beta)^k e^{-\beta^2/2}`)."""
    k = np.arange(order + 1)
    scale = np.concatenate([[1.0], 1.0 / np.sqrt(np.maximum(k[1:], 1))])
    pw = _scaled_powers(beta, order, scale)
    phase = jnp.sin(_row(jnp.asarray(k * (math.pi / 2), beta.dtype), beta.ndim) + jnp.asarray(c, beta.dtype))
    return (a * jnp.exp(-0.5 * beta * beta))[..., None] * pw * phase


def _pad(c: Array, order: int) -> Array:
    n = c.shape[-1]
    if n > order + 1:
        return c[..., : order + 1]
    return jnp.concatenate([c, jnp.zeros(c.shape[:-1] + (order + 1 - n,), c.dtype)], axis=-1)


def _unit(q: Array, order: int, index: int) -> Array:
    """The unit row ``e_index`` of length ``order + 1``, shaped to broadcast against ``q[..., None]``."""
    return _row(jnp.asarray((np.arange(order + 1) == index).astype(float), q.dtype), q.ndim)


def _relu_hermite(q: Array, order: int, a, b) -> Array:
    r""":math:`a\min(x,0) + b\max(x,0) = ax + (b - a)x_+` at :math:`x = \sqrt q z`."""
    relu = _row(jnp.asarray(_rectified_table(1, order), q.dtype), q.ndim)
    return safe_sqrt(q)[..., None] * ((b - a) * relu + a * _unit(q, order, 1))


# --------------------------------------------------------------------------------------
# ReLU family:  phi(x) = a min(x, 0) + b max(x, 0)
# --------------------------------------------------------------------------------------


def _abrelu_dual(a, b, q1, q2, q12):
    # Cho & Saul (2009) arc-cosine kernel of order 1, generalised to two slopes:
    #   E = (a-b)^2/(2 pi) sqrt(q1 q2 - q12^2) + ((a^2+b^2)/2 - (a-b)^2 theta/(2 pi)) q12
    #   E' = (a^2+b^2)/2 - (a-b)^2 theta / (2 pi),  theta = arccos(q12 / sqrt(q1 q2)),
    # written with phi = pi/2 - theta = atan2(q12, gap) in [-pi/2, pi/2]:
    #   E' = (a+b)^2/4 + (a-b)^2 phi / (2 pi)   (exact at orthogonal inputs, where phi = 0).
    s = gap(q1, q2, q12)
    phi = atan2(q12, s)
    kdot = (a + b) ** 2 / 4 + (a - b) ** 2 * phi / (2 * math.pi)
    return (a - b) ** 2 / (2 * math.pi) * s + kdot * q12, kdot


class ABRelu(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a \min(x, 0) + b \max(x, 0)`.

    .. math::
        \mathbb{E}[\phi\phi] = \tfrac{(a-b)^2}{2\pi}\sqrt{q_1q_2 - q_{12}^2}
        + \Big(\tfrac{a^2+b^2}{2} - \tfrac{(a-b)^2}{2\pi}\theta\Big) q_{12},\quad
        \mathbb{E}[\phi'\phi'] = \tfrac{a^2+b^2}{2} - \tfrac{(a-b)^2}{2\pi}\theta,

    with :math:`\theta = \arccos(q_{12}/\sqrt{q_1 q_2})` (Cho & Saul 2009; Tsuchida et al. 2018).
    """

    a: Array
    b: Array
    nt_name: ClassVar[str] = "ABRelu"
    scale_free_derivative: ClassVar[bool] = True

    def __init__(self, a: ArrayLike = 0.0, b: ArrayLike = 1.0):
        self.a = _param(a, "ABRelu", "a")
        self.b = _param(b, "ABRelu", "b")

    def __call__(self, x):
        return self.a * jnp.minimum(x, 0) + self.b * jnp.maximum(x, 0)

    def derivative(self, x):
        return jnp.where(jnp.asarray(x) > 0, self.b, self.a)

    def _dual(self, q1, q2, q12):
        return _abrelu_dual(self.a, self.b, q1, q2, q12)

    def _hermite(self, q, order):
        return _relu_hermite(q, order, self.a, self.b)

    def _derivative_squared_law(self, q, step, cutoff):
        return jnp.stack([self.a**2, self.b**2]), jnp.full((2,), 0.5, q.dtype)

    def _lipschitz(self):
        return jnp.maximum(jnp.abs(self.a), jnp.abs(self.b))


class Relu(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \max(x, 0)`; the arc-cosine kernel of order 1 (Cho & Saul 2009):
    :math:`\mathbb{E}[\phi\phi] = \frac{\sqrt{q_1q_2}}{2\pi}(\sin\theta + (\pi-\theta)\cos\theta)`,
    :math:`\mathbb{E}[\phi'\phi'] = \frac{\pi-\theta}{2\pi}`."""

    nt_name: ClassVar[str] = "Relu"
    scale_free_derivative: ClassVar[bool] = True

    def __call__(self, x):
        return jnp.maximum(x, 0)

    def derivative(self, x):
        return (jnp.asarray(x) > 0).astype(jnp.result_type(x, float))

    def _dual(self, q1, q2, q12):
        return _abrelu_dual(0.0, 1.0, q1, q2, q12)

    def _hermite(self, q, order):
        return _relu_hermite(q, order, 0.0, 1.0)

    def _derivative_squared_law(self, q, step, cutoff):
        return jnp.array([0.0, 1.0], q.dtype), jnp.full((2,), 0.5, q.dtype)

    def _lipschitz(self):
        return jnp.asarray(1.0)


class LeakyRelu(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \max(x, \alpha x)`: ``ABRelu(alpha, 1)``."""

    alpha: Array
    nt_name: ClassVar[str] = "LeakyRelu"
    scale_free_derivative: ClassVar[bool] = True

    def __init__(self, alpha: ArrayLike = 0.01):
        self.alpha = _param(alpha, "LeakyRelu", "alpha")

    def __call__(self, x):
        return jnp.where(x > 0, x, self.alpha * x)

    def derivative(self, x):
        return jnp.where(jnp.asarray(x) > 0, 1.0, self.alpha)

    def _dual(self, q1, q2, q12):
        return _abrelu_dual(self.alpha, 1.0, q1, q2, q12)

    def _hermite(self, q, order):
        return _relu_hermite(q, order, self.alpha, 1.0)

    def _derivative_squared_law(self, q, step, cutoff):
        return jnp.stack([self.alpha**2, jnp.ones_like(self.alpha)]), jnp.full((2,), 0.5, q.dtype)

    def _lipschitz(self):
        return jnp.maximum(1.0, jnp.abs(self.alpha))


class Abs(AbstractClosedFormActivation):
    r""":math:`\phi(x) = |x|`: ``ABRelu(-1, 1)``."""

    nt_name: ClassVar[str] = "Abs"
    scale_free_derivative: ClassVar[bool] = True

    def __call__(self, x):
        return jnp.abs(x)

    def derivative(self, x):
        return jnp.sign(x)

    def _dual(self, q1, q2, q12):
        return _abrelu_dual(-1.0, 1.0, q1, q2, q12)

    def _hermite(self, q, order):
        return _relu_hermite(q, order, -1.0, 1.0)

    def _derivative_squared_law(self, q, step, cutoff):
        return jnp.ones((1,), q.dtype), jnp.ones((1,), q.dtype)

    def _lipschitz(self):
        return jnp.asarray(1.0)


class Identity(AbstractClosedFormActivation):
    r""":math:`\phi(x) = x`: :math:`(q_{12}, 1)`."""

    nt_name: ClassVar[str] = "Identity"
    scale_free_derivative: ClassVar[bool] = True

    def __call__(self, x):
        return jnp.asarray(x)

    def derivative(self, x):
        return jnp.ones_like(jnp.asarray(x, dtype=float))

    def _dual(self, q1, q2, q12):
        q12 = jnp.asarray(q12)
        return q12, jnp.ones_like(q12)

    def _hermite(self, q, order):
        return safe_sqrt(q)[..., None] * _unit(q, order, 1)

    def _derivative_squared_law(self, q, step, cutoff):
        return jnp.ones((1,), q.dtype), jnp.ones((1,), q.dtype)

    def _lipschitz(self):
        return jnp.asarray(1.0)


class Sign(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \operatorname{sign}(x)`:
    :math:`\mathbb{E}[\phi\phi] = 1 - 2\theta/\pi`. Its derivative vanishes almost everywhere,
    so :math:`\mathbb{E}[\phi'\phi'] = 0` (the convention of neural-tangents)."""

    nt_name: ClassVar[str] = "Sign"
    scale_free_derivative: ClassVar[bool] = True

    def __call__(self, x):
        return jnp.sign(x)

    def derivative(self, x):
        return jnp.zeros_like(jnp.asarray(x, dtype=float))

    def _dual(self, q1, q2, q12):
        k = 2 * atan2(q12, gap(q1, q2, q12)) / math.pi  # = 1 - 2 theta / pi, exact at 0 and +-1
        return k, jnp.zeros_like(k)

    def _hermite(self, q, order):
        return 2 * _row(jnp.asarray(_rectified_table(0, order), q.dtype), q.ndim) - _unit(q, order, 0) \
            + 0 * q[..., None]

    def _derivative_squared_law(self, q, step, cutoff):
        return jnp.zeros((1,), q.dtype), jnp.ones((1,), q.dtype)

    def _lipschitz(self):
        return jnp.asarray(jnp.inf)  # a jump at 0


# --------------------------------------------------------------------------------------
# Smooth closed forms
# --------------------------------------------------------------------------------------


def _root_of(s, c, q1, q2, q12):
    r""":math:`\sqrt{s + c^2(q_1q_2 - q_{12}^2)}` for ``s > 0`` growing with the variances, as
    :math:`\sqrt s\sqrt{1 + c^2\det/s}`: a sum of non-negative terms (no cancellation of the
    expanded products, exactly ``sqrt(s)`` for identical inputs) with no overflow of
    :math:`q_1q_2`."""
    return jnp.sqrt(s) * jnp.sqrt(1 + c * det_ratio(q1, q2, q12, s))


class Erf(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a\,\operatorname{erf}(b x) + c` (Williams 1997):

    .. math::
        \mathbb{E}[\phi\phi] = \tfrac{2a^2}{\pi}\arcsin\frac{2b^2q_{12}}
        {\sqrt{(1+2b^2q_1)(1+2b^2q_2)}} + c^2,\qquad
        \mathbb{E}[\phi'\phi'] = \frac{4a^2b^2}{\pi\sqrt{(1+2b^2q_1)(1+2b^2q_2) - 4b^4q_{12}^2}}.

    Evaluated without cancellation: the arcsine as
    :math:`\operatorname{atan2}(2b^2q_{12}, \sqrt D)` and the determinant as
    :math:`D = 1 + 2b^2(q_1 + q_2) + 4b^4(q_1q_2 - q_{12}^2)` (every term non-negative; the
    textbook :math:`(1+2b^2q)^2 - (2b^2q)^2` on the diagonal loses everything once
    :math:`q \gtrsim \varepsilon^{-1/2}`, giving ``kdot = inf`` — neural-tangents issue 197).
    Measured against 60-digit references: relative error below 1e-15 (float64) and 4e-7
    (float32) for variances up to 1e30 (``tests/test_activations.py``).
    """

    a: Array
    b: Array
    c: Array
    nt_name: ClassVar[str] = "Erf"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = 1.0, c: ArrayLike = 0.0):
        self.a, self.b, self.c = (_param(v, "Erf", n) for v, n in ((a, "a"), (b, "b"), (c, "c")))

    def __call__(self, x):
        return self.a * jss.erf(self.b * x) + self.c

    def derivative(self, x):
        return self.a * self.b * (2 / math.sqrt(math.pi)) * jnp.exp(-((self.b * x) ** 2))

    def _dual(self, q1, q2, q12):
        b2 = self.b * self.b
        root = _root_of(1 + 2 * b2 * (q1 + q2), 4 * b2 * b2, q1, q2, q12)
        k = self.a**2 * (2 / math.pi) * atan2(2 * b2 * q12, root) + self.c**2
        kdot = self.a**2 * b2 * (4 / math.pi) / root
        return k, kdot

    def _hermite(self, q, order):
        return _erf_coefficients(self.a, self.b * safe_sqrt(q), order) + self.c * _unit(q, order, 0)

    def _lipschitz(self):
        return 2 / math.sqrt(math.pi) * jnp.abs(self.a * self.b)


class Gelu(AbstractClosedFormActivation):
    r""":math:`\phi(x) = x\,\Phi(x)` (exact GELU; Tsuchida, Pearce, van der Heide, Roosta,
    Gallagher 2020, "Avoiding kernel fixed points: computing with ELU and GELU infinite
    networks"). With :math:`\delta^2 = (1+q_1)(1+q_2) - q_{12}^2`:

    .. math::
        \mathbb{E}[\phi\phi] = \frac{q_{12}}{4} + \frac{1}{2\pi}\Big(q_{12}\arcsin
        \frac{q_{12}}{\sqrt{(1+q_1)(1+q_2)}} + \frac{q_{12}^2 + q_1q_2\delta^2}
        {(1+q_1)(1+q_2)\,\delta}\Big).

    Evaluated in a form without cancellation, with :math:`\delta^2 = 1 + q_1 + q_2 + (q_1q_2 -
    q_{12}^2)`, :math:`r = q_{12}/\sqrt{(1+q_1)(1+q_2)}`, :math:`t_i = q_i/(1+q_i)` and
    :math:`\alpha = \operatorname{atan2}(\delta, -q_{12}) = \pi/2 + \arcsin r`:

    .. math::
        2\pi\,\mathbb{E}[\phi\phi] = r^2/\delta + t_1t_2\,\delta + q_{12}\,\alpha,\qquad
        2\pi\,\mathbb{E}[\phi'\phi'] = \Big(\frac{1}{\delta^2} + \frac{1}{1+q_1} +
        \frac{1}{1+q_2}\Big)\frac{q_{12}}{\delta} + \alpha,

    and, for :math:`-q_{12} > \delta` (nearly opposite inputs at large variance, where the value
    is :math:`O(q^{-1/2})` against terms of :math:`O(q^{1/2})`), with :math:`y = -q_{12}`,
    :math:`u = \delta/y`, :math:`m = (1+q_1+q_2)/\sqrt{(1+q_1)(1+q_2)}`:
    :math:`2\pi\,\mathbb{E}[\phi\phi] = \delta\,(1 - \arctan(u)/u) - (m^2\delta^2/(1+q_1+q_2) -
    r^2)/\delta`. (The textbook form cancels on the diagonal:
    :math:`(1 - q_1q_2)/((1+q_1)(1+q_2)) + 1 \to 0`.) Measured against 60-digit references:
    relative error below 1e-14 (float64) and 2e-6 (float32) for variances up to 1e30.

    ``approximate=True`` only changes the finite network (tanh approximation) and ``derivative``
    (that of the function evaluated, so numerical maps built from :math:`\phi` and :math:`\phi'`, as
    :func:`rmtjax.design.local_maps`, are the approximate GELU's), as in neural-tangents; the kernel is
    that of the exact GELU.
    """

    approximate: bool = eqx.field(static=True, default=False)
    nt_name: ClassVar[str] = "Gelu"

    def __check_init__(self):
        flag(self.approximate, "Gelu.approximate")

    def __call__(self, x):
        return jax.nn.gelu(x, approximate=self.approximate)

    def derivative(self, x):
        x = jnp.asarray(x)
        if self.approximate:  # the derivative of the function evaluated (quadrature-based maps use both)
            return jax.jvp(self.__call__, (x,), (jnp.ones_like(x),))[1]
        return jss.ndtr(x) + x * jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def _dual(self, q1, q2, q12):
        a1, a2 = 1 + q1, 1 + q2
        s = a1 + q2
        ratio = 1 + det_ratio(q1, q2, q12, s)  # delta^2 / s
        d = jnp.sqrt(s) * jnp.sqrt(ratio)
        big = jnp.sqrt(a1) * jnp.sqrt(a2)
        r = q12 / big
        alpha = angle(d, -q12)
        k_pos = r * r / d + (q1 / a1) * (q2 / a2) * d + q12 * alpha
        neg = -q12 > d
        m = s / big
        # y (u - atan u) = d (1 - atan(u) / u), u = d / y <= 1
        k_neg = d * atan_deficit(d / jnp.where(neg, -q12, d)) - (m * m * ratio - r * r) / d
        k = jnp.where(neg, k_neg, k_pos) / (2 * math.pi)
        kdot = ((1 / (s * ratio) + 1 / a1 + 1 / a2) * (q12 / d) + alpha) / (2 * math.pi)
        return k, kdot

    def _hermite(self, q, order):
        # x Phi(x) at x = sqrt(q) z: Phi(sqrt q z) = 1/2 + erf(sqrt(q/2) z)/2, times z by
        # z h_k = sqrt(k+1) h_{k+1} + sqrt(k) h_{k-1}
        dt, nd = q.dtype, q.ndim
        sq = safe_sqrt(q)
        k = np.arange(order + 1)
        f = 0.5 * _erf_coefficients(1.0, sq * math.sqrt(0.5), order + 1) + 0.5 * _unit(q, order + 1, 0)
        up = jnp.concatenate([jnp.zeros(q.shape + (1,), dt), f[..., :order]], axis=-1)  # f_{k-1}
        return sq[..., None] * (_row(jnp.asarray(np.sqrt(k), dt), nd) * up
                                + _row(jnp.asarray(np.sqrt(k + 1), dt), nd) * f[..., 1:])

    def _lipschitz(self):
        if self.approximate:  # the tanh approximation of the finite network: numerically
            return super()._lipschitz()
        # max of phi' = Phi(x) + x varphi(x) at x = sqrt 2 (phi'' = (2 - x^2) varphi(x)); min at -sqrt 2
        return jnp.asarray(_GELU_LIPSCHITZ)


def _sin_dual(a, b, c, q1, q2, q12):
    b2 = b * b
    half = -0.5 * b2 * (q1 + q2)
    s1 = jnp.exp(half + b2 * q12)
    s2 = jnp.exp(half - b2 * q12) * jnp.cos(2 * c)
    h = a**2 / 2
    return h * (s1 - s2), h * b2 * (s1 + s2)


class Sin(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a\sin(bx + c)`. With :math:`s_\pm = e^{-b^2(q_1+q_2 \mp 2q_{12})/2}`:
    :math:`\mathbb{E}[\phi\phi] = \tfrac{a^2}{2}(s_+ - s_-\cos 2c)`,
    :math:`\mathbb{E}[\phi'\phi'] = \tfrac{a^2b^2}{2}(s_+ + s_-\cos 2c)`."""

    a: Array
    b: Array
    c: Array
    nt_name: ClassVar[str] = "Sin"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = 1.0, c: ArrayLike = 0.0):
        self.a, self.b, self.c = (_param(v, "Sin", n) for v, n in ((a, "a"), (b, "b"), (c, "c")))

    def __call__(self, x):
        return self.a * jnp.sin(self.b * x + self.c)

    def derivative(self, x):
        return self.a * self.b * jnp.cos(self.b * x + self.c)

    def _dual(self, q1, q2, q12):
        return _sin_dual(self.a, self.b, self.c, q1, q2, q12)

    def _hermite(self, q, order):
        return _sin_coefficients(self.a, self.b * safe_sqrt(q), self.c, order)

    def _lipschitz(self):
        return jnp.abs(self.a * self.b)


class Cos(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a\cos(bx + c) = a\sin(bx + c + \pi/2)` (the dual of :class:`Sin` with
    the phase shifted)."""

    a: Array
    b: Array
    c: Array
    nt_name: ClassVar[str] = "Cos"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = 1.0, c: ArrayLike = 0.0):
        self.a, self.b, self.c = (_param(v, "Cos", n) for v, n in ((a, "a"), (b, "b"), (c, "c")))

    def __call__(self, x):
        return self.a * jnp.cos(self.b * x + self.c)

    def derivative(self, x):
        return -self.a * self.b * jnp.sin(self.b * x + self.c)

    def _dual(self, q1, q2, q12):
        return _sin_dual(self.a, self.b, self.c + math.pi / 2, q1, q2, q12)

    def _hermite(self, q, order):
        return _sin_coefficients(self.a, self.b * safe_sqrt(q), self.c + math.pi / 2, order)

    def _lipschitz(self):
        return jnp.abs(self.a * self.b)


class Rbf(AbstractClosedFormActivation):
    r"""Random Fourier feature map of the RBF kernel:
    :math:`\phi(x) = \sqrt2\sin(\sqrt{2\gamma}x + \pi/4)` (``gamma >= 0``), so that
    :math:`\mathbb{E}[\phi\phi] = e^{-\gamma(q_1 + q_2 - 2q_{12})}` and
    :math:`\mathbb{E}[\phi'\phi'] = 2\gamma\,\mathbb{E}[\phi\phi]`."""

    gamma: Array
    nt_name: ClassVar[str] = "Rbf"

    def __init__(self, gamma: ArrayLike = 1.0):
        self.gamma = _param(gamma, "Rbf", "gamma", lo=0.0)

    def __call__(self, x):
        return math.sqrt(2) * jnp.sin(jnp.sqrt(2 * self.gamma) * x + math.pi / 4)

    def _dual(self, q1, q2, q12):
        k = jnp.exp(self.gamma * (2 * q12 - q1 - q2))
        return k, 2 * self.gamma * k

    def _hermite(self, q, order):
        return _sin_coefficients(math.sqrt(2), jnp.sqrt(2 * self.gamma) * safe_sqrt(q), math.pi / 4, order)

    def _lipschitz(self):
        return 2 * jnp.sqrt(self.gamma)


class Exp(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a e^{bx}`:
    :math:`\mathbb{E}[\phi\phi] = a^2 e^{b^2(q_1 + q_2 + 2q_{12})/2}`,
    :math:`\mathbb{E}[\phi'\phi'] = b^2\,\mathbb{E}[\phi\phi]` (``inf`` where the true value
    exceeds the dtype's range)."""

    a: Array
    b: Array
    nt_name: ClassVar[str] = "Exp"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = 1.0):
        self.a, self.b = _param(a, "Exp", "a"), _param(b, "Exp", "b")

    def __call__(self, x):
        return self.a * jnp.exp(self.b * x)

    def _dual(self, q1, q2, q12):
        b2 = self.b * self.b
        a2 = self.a**2
        e = jnp.exp(b2 * (0.5 * (q1 + q2) + q12))
        k = jnp.where(a2 == 0, 0.0, a2 * e)  # a = 0: phi = 0 even where e overflows
        return k, jnp.where(b2 == 0, 0.0, b2 * k)

    def _hermite(self, q, order):
        beta = self.b * safe_sqrt(q)
        k = np.arange(order + 1)
        scale = np.concatenate([[1.0], 1.0 / np.sqrt(np.maximum(k[1:], 1))])
        return (self.a * jnp.exp(0.5 * beta * beta))[..., None] * _scaled_powers(beta, order, scale)

    def _lipschitz(self):
        return jnp.where(self.a * self.b == 0, 0.0, jnp.inf)  # unbounded slope unless constant


class Gaussian(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a e^{bx^2}` (``b < 0``). With
    :math:`D = (1-2bq_1)(1-2bq_2) - 4b^2q_{12}^2 = 1 - 2b(q_1 + q_2) + 4b^2(q_1q_2 - q_{12}^2)`
    (evaluated in the second form, without cancellation):
    :math:`\mathbb{E}[\phi\phi] = a^2 D^{-1/2}`,
    :math:`\mathbb{E}[\phi'\phi'] = 4a^2b^2q_{12}D^{-3/2}`."""

    a: Array
    b: Array
    nt_name: ClassVar[str] = "Gaussian"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = -1.0):
        self.a = _param(a, "Gaussian", "a")
        self.b = _param(b, "Gaussian", "b", hi=0.0, hi_open=True)

    def __call__(self, x):
        return self.a * jnp.exp(self.b * x * x)

    def _dual(self, q1, q2, q12):
        b = self.b
        root = _root_of(1 - 2 * b * (q1 + q2), 4 * b * b, q1, q2, q12)
        inv = 1 / root
        a2 = self.a**2
        return a2 * inv, a2 * 4 * b * b * q12 * inv**3

    def _hermite(self, q, order):
        return _gaussian_bump_coefficients(self.a, -self.b * q, order)

    def _lipschitz(self):
        # |phi'| = 2|a b x| e^{b x^2}, largest at x^2 = -1/(2b)
        return jnp.abs(self.a) * jnp.sqrt(-2 * self.b) * math.exp(-0.5)


# --------------------------------------------------------------------------------------
# Polynomials: exact Mehler expansion
# --------------------------------------------------------------------------------------


def _log_factorial(n):
    return float(special.gammaln(n + 1))


@functools.lru_cache(maxsize=None)
def _mehler_poly_table(degree: int) -> np.ndarray:
    """``T[l, n] = n! / (m! 2^m sqrt(l!))`` for ``n = l + 2m`` (else 0), float64: the coefficient
    of ``q^m h_l`` in ``(sqrt(q) z)^n`` (see :class:`Polynomial`). Evaluated through log-gamma,
    so no integer overflows; entries reach 1e93 at ``degree = 100``."""
    t = np.zeros((degree + 1, degree + 1))
    for n in range(degree + 1):
        for m in range(n // 2 + 1):
            l = n - 2 * m
            t[l, n] = math.exp(_log_factorial(n) - _log_factorial(m) - m * math.log(2) - 0.5 * _log_factorial(l))
    return t


# Largest polynomial degree whose table fits each dtype (float32: T <= 3.4e38).
_FLOAT32_POLY_DEGREE = 49


def _powers(x: Array, m: int) -> Array:
    """``x^0 .. x^m`` stacked on a new last axis, by repeated multiplication (exact
    derivatives everywhere, also at ``x = 0``)."""
    out = [jnp.ones_like(x)]
    for _ in range(m):
        out.append(out[-1] * x)
    return jnp.stack(out, axis=-1)


def _check_poly_dtype(degree: int, dtype, owner: str):
    if jnp.finfo(dtype).bits < 64 and degree > _FLOAT32_POLY_DEGREE:
        raise ValueError(f"{owner}: degree {degree} needs float64 (enable jax_enable_x64): its Mehler coefficients "
                         f"exceed float32 beyond degree {_FLOAT32_POLY_DEGREE}")


def _poly_s(coef: Array, q: Array) -> Array:
    r""":math:`s_l(q)`, ``l = 0..N`` on a new last axis, with
    :math:`p(\sqrt q z) = \sum_l s_l(q) q^{l/2}\,h_l(z)`:
    :math:`s_l(q) = \sum_m c_{l+2m}\,T[l, l+2m]\,q^m`."""
    degree = coef.shape[0] - 1
    half = degree // 2
    table = _mehler_poly_table(degree)
    l_idx, m_idx = np.meshgrid(np.arange(degree + 1), np.arange(half + 1), indexing="ij")
    n_idx = l_idx + 2 * m_idx
    valid = n_idx <= degree
    n_safe = np.where(valid, n_idx, 0)
    t = jnp.asarray(np.where(valid, table[l_idx, n_safe], 0.0), coef.dtype)
    c = coef[n_safe]
    a = jnp.where(jnp.asarray(valid) & (c != 0), c * t, 0.0)  # (N + 1, M + 1)
    return _powers(q, half) @ a.T


def _poly_dual_terms(coef: Array, q: Array) -> list[Array]:
    r"""Returns :math:`s_l(q)` (a list over ``l``) with
    :math:`p(\sqrt q z) = \sum_l s_l(q) q^{l/2}\,h_l(z)` (used by :mod:`rmtjax.hermite`)."""
    s = _poly_s(coef, jnp.asarray(q))
    return [s[..., l] for l in range(s.shape[-1])]


def _mehler_expectation(s1: Array, s2: Array, q12: Array) -> Array:
    r""":math:`\sum_l s_l(q_1)s_l(q_2)\,q_{12}^l` (Mehler's formula). Terms whose factors are
    exactly zero count as zero even where another factor overflowed, so a result is ``inf``
    only where a term's true value is; an overflow of terms of both signs gives NaN, which
    :func:`rmtjax.gaussian.gaussian_expectations` and :func:`rmtjax.kernels.kernel` report."""
    pw = _powers(q12, s1.shape[-1] - 1)
    ss = jnp.where((s1 == 0) | (s2 == 0), 0.0, s1 * s2)
    return jnp.sum(jnp.where((ss == 0) | (pw == 0), 0.0, ss * pw), axis=-1)


class AbstractPolynomial(AbstractClosedFormActivation):
    r"""A polynomial activation given by its coefficients ``coef`` (increasing order): the
    evaluation, derivative, Mehler dual, Hermite coefficients and Lipschitz constant shared by
    :class:`Polynomial`, :class:`Monomial` and :class:`Hermite` (see :class:`Polynomial`)."""

    coef: eqx.AbstractVar[Array]

    def __call__(self, x):
        x = jnp.asarray(x)
        acc = jnp.zeros_like(x, dtype=jnp.result_type(x, self.coef))
        for c in self.coef[::-1]:
            acc = acc * x + c
        return acc

    def _dcoef(self, dtype=None):
        coef = self.coef if dtype is None else self.coef.astype(dtype)
        n = jnp.asarray(np.arange(1, coef.shape[0]), coef.dtype)
        d = coef[1:] * n
        return d if d.shape[0] else jnp.zeros((1,), coef.dtype)

    def derivative(self, x):
        return Polynomial(self._dcoef())(x)

    def _s(self, q: Array, derivative: bool) -> Array:
        """``s_l(q)`` of the polynomial (or of its derivative) on a new last axis."""
        _check_poly_dtype(self.coef.shape[0] - 1, q.dtype, type(self).__name__)
        return _poly_s(self._dcoef(q.dtype) if derivative else self.coef.astype(q.dtype), q)

    def _dual(self, q1, q2, q12):
        k, kdot = (_mehler_expectation(self._s(q1, d), self._s(q2, d), q12) for d in (False, True))
        return k, kdot

    def _hermite(self, q, order):
        # p(sqrt q z) = sum_l s_l(q) q^{l/2} h_l(z)
        s = _poly_dual_terms(self.coef.astype(q.dtype), q)
        cols = [s[l] * q ** (0.5 * l) for l in range(len(s))]
        return _pad(jnp.stack(cols, axis=-1).astype(q.dtype), order)

    def _lipschitz(self):
        # Lipschitz iff of degree <= 1: |c_1|
        c = self.coef
        slope = jnp.abs(c[1]) if c.shape[0] > 1 else jnp.zeros((), c.dtype)
        return jnp.where(jnp.any(c[2:] != 0), jnp.inf, slope) if c.shape[0] > 2 else slope


class Polynomial(AbstractPolynomial):
    r""":math:`\phi(x) = \sum_{n=0}^{N} c_n x^n` (``coef`` in increasing order, as NumPy's
    ``Polynomial``; degree ``N <= 100``). Exact through Mehler's formula: writing
    :math:`p(\sqrt{q}z) = \sum_l r_l(q)\,h_l(z)` in orthonormal Hermite functions,

    .. math::
        \mathbb{E}[p(u)p(v)] = \sum_l r_l(q_1) r_l(q_2)\,\rho^l
        = \sum_l s_l(q_1)s_l(q_2)\,q_{12}^l,\qquad
        s_l(q) = \sum_m c_{l+2m}\frac{(l+2m)!}{m!\,2^m\sqrt{l!}}\,q^m,

    a polynomial in :math:`(q_1, q_2, q_{12})`, so no singularity anywhere and exact gradients.
    The table is computed through log-gamma in float64. Accuracy: a few ulp of the sum of the
    absolute values of the terms (exact cancellation-free for a single monomial, and for
    :class:`Hermite`, which has its own form of :math:`s_l`); a general polynomial with
    coefficients of mixed signs inherits its own conditioning. Degrees above 49 need float64
    (the coefficients exceed float32). Overflow gives ``inf`` where the true value does; a
    NaN (terms of both signs overflowing) is reported as an error by
    :func:`rmtjax.gaussian.gaussian_expectations` and :func:`rmtjax.kernels.kernel`.
    """

    coef: Array
    nt_name: ClassVar[str] = "Polynomial"

    def __init__(self, coef: ArrayLike):
        coef = as_real(coef, "Polynomial.coef", ndim=1)
        if coef.shape[0] > _SUPPORTED_DEGREE + 1:
            raise ValueError(f"Polynomial.coef must have at most {_SUPPORTED_DEGREE + 1} entries (degree <= "
                             f"{_SUPPORTED_DEGREE}, the supported range), got {coef.shape[0]}")
        self.coef = check_range(coef, "Polynomial.coef")


class Monomial(AbstractPolynomial):
    r""":math:`\phi(x) = x^{\mathrm{degree}}` (``0 <= degree <= 100``): exact Mehler expansion,
    a single positive term per order (no cancellation):
    :math:`s_l(q) = \frac{n!}{m!\,2^m\sqrt{l!}}q^m`, :math:`n = l + 2m`."""

    degree: int = eqx.field(static=True)
    coef: Array
    nt_name: ClassVar[str] = "Monomial"

    def __init__(self, degree: int):
        self.degree = _degree(degree, "Monomial")
        self.coef = jnp.asarray(np.eye(self.degree + 1)[self.degree])


@functools.lru_cache(maxsize=None)
def _hermite_rescaling(n: int) -> np.ndarray:
    """``C[l] = sqrt(n!) / (m! 2^m sqrt(l!))`` for ``l = n - 2m`` (else 0), float64."""
    c = np.zeros(n + 1)
    for m in range(n // 2 + 1):
        l = n - 2 * m
        c[l] = math.exp(0.5 * _log_factorial(n) - _log_factorial(m) - m * math.log(2) - 0.5 * _log_factorial(l))
    return c


def _hermite_s(n: int, q: Array) -> Array:
    r""":math:`s_l(q)` of :math:`h_n`: from :math:`He_n(az) = \sum_m \frac{n!}{m!(n-2m)!}
    \big(\frac{a^2-1}{2}\big)^m a^{n-2m} He_{n-2m}(z)`,
    :math:`s_{n-2m}(q) = \frac{\sqrt{n!}}{m!\,2^m\sqrt{(n-2m)!}}(q-1)^m` — no cancellation
    (the expanded monomial sums cancel to 0 at ``q = 1``, where this is exact)."""
    c = _hermite_rescaling(n)
    m_of_l = np.array([(n - l) // 2 if (n - l) % 2 == 0 else 0 for l in range(n + 1)])
    pw = _powers(q - 1, n // 2)[..., m_of_l]  # (q - 1)^{m(l)}
    lead = (1,) * q.ndim
    return jnp.where(jnp.asarray(c != 0).reshape(lead + c.shape), pw * jnp.asarray(c, q.dtype).reshape(lead + c.shape), 0.0)


class Hermite(AbstractPolynomial):
    r"""Normalized probabilists' Hermite polynomial :math:`h_n = He_n/\sqrt{n!}`
    (``0 <= degree <= 100``).

    The dual is exact for any variances: :math:`\sum_l s_l(q_1)s_l(q_2)q_{12}^l` with the
    rescaling identity :math:`s_{n-2m}(q) = \frac{\sqrt{n!}}{m!\,2^m\sqrt{(n-2m)!}}(q-1)^m`
    (no cancellation: at unit variances it is exactly :math:`q_{12}^n`, neural-tangents'
    formula, which assumes them); :math:`h_n' = \sqrt n\,h_{n-1}`.
    """

    degree: int = eqx.field(static=True)
    coef: Array
    nt_name: ClassVar[str] = "Hermite"

    def __init__(self, degree: int):
        from numpy.polynomial.hermite_e import herme2poly

        self.degree = _degree(degree, "Hermite")
        c = herme2poly([0] * self.degree + [1]) / math.exp(0.5 * _log_factorial(self.degree))
        self.coef = jnp.asarray(np.asarray(c, dtype=np.float64))

    def _s(self, q, derivative):
        n = self.degree
        if not derivative:
            return _hermite_s(n, q)
        if n == 0:
            return jnp.zeros(q.shape + (1,), q.dtype)
        return math.sqrt(n) * _hermite_s(n - 1, q)


# --------------------------------------------------------------------------------------
# Rectified monomials: arc-cosine kernels of any order
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _rect_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes in (0, 1/2] and weights (doubled: the integrand is symmetric about
    1/2) for :math:`J_n`. ``N = n + 28`` nodes on [0, 1] (rounded up to even): measured against
    60-digit quadrature at ``eps`` in [1e-6, pi], relative error <= 2e-14 for n <= 100 (it
    needs about ``n + 16``)."""
    npts = n + 28 + (n % 2)
    x, w = np.polynomial.legendre.leggauss(npts)
    x, w = 0.5 * (x + 1), 0.5 * w
    half = x < 0.5
    return x[half], 2 * w[half]


def _rect_moment(n: int, a: Array, eps: Array) -> Array:
    r""":math:`\mathbb E[u_+^n v_+^n] = \frac{n!}{2\pi}(p + q_{12})^n\,\varepsilon\,J_n(\varepsilon)`,
    :math:`J_n(\varepsilon) = \int_0^1 g(x)^n dx`, :math:`g = \frac{\sin(\varepsilon x)
    \sin(\varepsilon(1-x))}{\sin^2(\varepsilon/2)}\in[0, 1]`; ``a = p + q12``, ``eps`` the angle
    :math:`\pi - \theta`."""
    if n == 0:
        return eps / (2 * math.pi)
    x, w = _rect_nodes(n)
    dtype = eps.dtype
    lead = (1,) * eps.ndim
    x = jnp.asarray(x, dtype).reshape(lead + x.shape)
    w = jnp.asarray(w, dtype).reshape(lead + w.shape)
    e = eps[..., None]
    pi = math.pi
    g = 4 * x * (1 - x) * jnp.sinc(e * x / pi) * jnp.sinc(e * (1 - x) / pi) / jnp.sinc(e / (2 * pi)) ** 2
    j = jnp.sum(w * g**n, axis=-1)
    pos = (a > 0) & (eps > 0)
    a_s = jnp.where(pos, a, 1.0)
    e_s = jnp.where(pos, eps, 1.0)
    log_k = n * jnp.log(a_s) + (_log_factorial(n) - math.log(2 * pi)) + jnp.log(e_s) + jnp.log(j)
    return jnp.where(pos, jnp.exp(log_k), 0.0)


class RectifiedMonomial(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \max(x, 0)^n` (``0 <= n <= 100``): the arc-cosine kernel of order
    :math:`n` (Cho & Saul 2009). Writing :math:`(u, v) = (w\cdot a, w\cdot b)` with
    :math:`w \sim \mathcal N(0, I_2)` and integrating the radius (:math:`\mathbb E R^{2n} =
    2^n n!`) leaves a positive integral over the angle:

    .. math::
        \mathbb E[u_+^n v_+^n] = \frac{n!}{2\pi}\,(\sqrt{q_1q_2} + q_{12})^n\,\varepsilon
        \int_0^1 \Big(\frac{\sin(\varepsilon x)\sin(\varepsilon(1-x))}
        {\sin^2(\varepsilon/2)}\Big)^n dx,\qquad \varepsilon = \pi - \theta,

    evaluated by Gauss-Legendre quadrature with ``n + 28`` nodes in log space. Every term is
    positive, so the value has a small *relative* error at every correlation — the recursions in
    :math:`\theta` (Cho & Saul's :math:`J_n`) cancel catastrophically for negative
    correlations (degree 20 at :math:`\rho = -0.9` gave :math:`-2\times10^6` for
    :math:`3.4\times10^{-4}`). Measured against 60-digit references: relative error below
    1e-13 (float64) for degrees up to 100; overflow gives ``inf`` (the true value).
    :math:`\mathbb E[\phi'\phi'] = n^2\,\mathbb E[u_+^{n-1}v_+^{n-1}]`.
    """

    degree: int = eqx.field(static=True)
    nt_name: ClassVar[str] = "RectifiedMonomial"

    def __init__(self, degree: int):
        self.degree = _degree(degree, "RectifiedMonomial")

    def __call__(self, x):
        x = jnp.asarray(x)
        return jnp.where(x >= 0, jnp.maximum(x, 0) ** self.degree, 0.0)

    def derivative(self, x):
        x = jnp.asarray(x)
        n = self.degree
        if n == 0:
            return jnp.zeros_like(x, dtype=float)
        return jnp.where(x >= 0, n * jnp.maximum(x, 0) ** (n - 1), 0.0)

    def _dual(self, q1, q2, q12):
        n = self.degree
        a = jnp.maximum(sqrt_prod(q1, q2) + q12, 0.0)
        eps = angle(gap(q1, q2, q12), -q12)
        k = _rect_moment(n, a, eps)
        if n == 0:
            return k, jnp.zeros_like(k)
        return k, n * n * _rect_moment(n - 1, a, eps)

    def _hermite(self, q, order):
        n = self.degree
        return (q ** (0.5 * n))[..., None] * _row(jnp.asarray(_rectified_table(n, order), q.dtype), q.ndim)

    def _lipschitz(self):
        return jnp.asarray(1.0 if self.degree == 1 else jnp.inf)  # a jump (n = 0), unbounded slope (n >= 2)


# --------------------------------------------------------------------------------------
# Numerical-only activations
# --------------------------------------------------------------------------------------


class Tanh(AbstractActivation):
    r""":math:`\phi(x) = \tanh(x)` (Gaussian expectations by quadrature / Mehler series)."""

    nt_name: ClassVar[str] = "Tanh"

    def __call__(self, x):
        return jnp.tanh(x)

    def derivative(self, x):
        return 1 - jnp.tanh(x) ** 2

    def _lipschitz(self):
        return jnp.asarray(1.0)


_HARDTANH_PANELS, _HARDTANH_DEG = 12, 16  # Gauss-Legendre panels in log(pi/2 - |theta|) (see HardTanh)
_HARDTANH_W_FLOOR = 1e-6  # the log substitution stops at 1e-6 min(a1, a2, 1), below the boundary layer
_HARDTANH_INV_ROOT_MAX = 1e4  # 1/sqrt(q) beyond it: exp(-1/(2q)) is 0 in every dtype


@functools.lru_cache(maxsize=None)
def _hardtanh_nodes() -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [0, 1]: equal panels."""
    x, w = np.polynomial.legendre.leggauss(_HARDTANH_DEG)
    x, w = 0.5 * (x + 1), 0.5 * w
    p = _HARDTANH_PANELS
    return np.concatenate([(i + x) / p for i in range(p)]), np.concatenate([w / p] * p)


def _inv_root(q):
    """:math:`1/\\sqrt q`, capped at ``_HARDTANH_INV_ROOT_MAX`` (also at ``q = 0``), with finite derivatives."""
    big = _HARDTANH_INV_ROOT_MAX
    ok = q * big * big > 1
    return jnp.where(ok, 1 / jnp.sqrt(jnp.where(ok, q, 1.0)), big)


def _hermite_functions(t: Array, n: int) -> Array:
    r""":math:`\varphi(t)h_m(t)`, ``m = 0..n-1`` on a new last axis (``n >= 1``), by the stable
    forward recurrence :math:`h_{m+1} = (t h_m - \sqrt m h_{m-1})/\sqrt{m+1}` started from the
    Gaussian density (so no :math:`h_m` that overflows alone is ever formed)."""
    p0 = jnp.exp(-0.5 * t * t) * _PHI0
    if n == 1:
        return p0[..., None]
    p1 = t * p0

    def step(carry, m):
        a, b = carry
        c = (t * b - jnp.sqrt(m) * a) / jnp.sqrt(m + 1)
        return (b, c), c

    _, rest = jax.lax.scan(step, (p0, p1), jnp.arange(1, n - 1, dtype=t.dtype))
    return jnp.concatenate([p0[..., None], p1[..., None], jnp.moveaxis(rest, 0, -1)], axis=-1)


class HardTanh(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \max(-1, \min(1, x))` (Pennington, Schoenholz & Ganguli 2017).

    **Dual.** By Price's theorem (:math:`\partial_{q_{12}}\mathbb E[f(u)g(v)] = \mathbb E[f'(u)g'(v)]`)
    and :math:`\phi'' = \delta_{-1} - \delta_{1}`, with :math:`a_i = q_i^{-1/2}` and
    :math:`q_{12} = \sqrt{q_1q_2}\sin\vartheta`:

    .. math::
        \mathbb E[\phi'\phi'] = \operatorname{erf}\tfrac{a_1}{\sqrt2}\operatorname{erf}\tfrac{a_2}{\sqrt2}
        + \int_0^{\vartheta} g(\theta)\,d\theta,\qquad
        \mathbb E[\phi\phi] = q_{12}\operatorname{erf}\tfrac{a_1}{\sqrt2}\operatorname{erf}\tfrac{a_2}{\sqrt2}
        + \int_0^{\vartheta} (q_{12} - \sqrt{q_1q_2}\sin\theta)\,g(\theta)\,d\theta,

    :math:`g = (e^{-A_+} - e^{-A_-})/\pi`,
    :math:`A_\pm = \frac{(a_1 - a_2)^2}{2\cos^2\theta} + \frac{a_1a_2}{1 \pm \sin\theta}` (the
    bivariate normal density at :math:`(\pm1, 1)` times :math:`dq_{12}/d\theta`: the substitution removes
    its :math:`(1-\rho^2)^{-1/2}` singularity). The integrand is smooth, but at large variances
    (small :math:`a_i`) it has a boundary layer of width :math:`\sim a` at :math:`|\theta| = \pi/2`
    that carries most of :math:`\mathbb E[\phi'\phi']`; so the integral is taken in
    :math:`s = \log(\pi/2 - |\theta|)` (12 Gauss-Legendre panels of 16 nodes, down to
    :math:`10^{-6}\min(a_1, a_2, 1)`, the rest by its endpoint value), with
    :math:`\sin^2\theta` and :math:`1 \pm \sin\theta` written in :math:`\pi/2 - |\theta|` (no
    cancellation) and :math:`e^{-A_+} - e^{-A_-} = \mp e^{-\min A_\pm}\operatorname{expm1}(-|A_+ - A_-|)`.
    Measured (``tests/test_activations.py``): against nested scipy quadrature, below 1e-13 relative
    off the diagonal (variances 0.02 to 200, :math:`|\rho|` up to 0.9995); on the diagonal against the
    length map :math:`\mathbb E[\phi(\sqrt q z)^2] = q(\operatorname{erf}(t/\sqrt2) - 2t\varphi(t)) +
    \operatorname{erfc}(t/\sqrt2)`, :math:`t = q^{-1/2}`, in 40 digits: below 1e-13 for
    :math:`q \le 10^6`, 5e-13 at :math:`10^{10}`, 2e-9 at :math:`10^{20}`, 7e-8 at :math:`10^{30}`.

    **Hermite coefficients.** :math:`a_1 = \sqrt q\operatorname{erf}(t/\sqrt2)`, and for odd
    :math:`k \ge 3`, integrating by parts twice, :math:`a_k = -2\sqrt q\,\varphi(t)h_{k-2}(t)/\sqrt{k(k-1)}`
    (even :math:`k`: 0). :math:`\phi'(h)^2 = 1_{|h|<1}`: the law :math:`p\delta_1 + (1-p)\delta_0`,
    :math:`p = \operatorname{erf}(t/\sqrt2)`.
    """

    def __call__(self, x):
        return jnp.clip(x, -1.0, 1.0)

    def derivative(self, x):
        x = jnp.asarray(x)
        return (jnp.abs(x) < 1).astype(jnp.result_type(x, float))

    def _dual(self, q1, q2, q12):
        a1, a2 = _inv_root(q1), _inv_root(q2)
        e12 = jss.erf(a1 / math.sqrt(2)) * jss.erf(a2 / math.sqrt(2))
        s = sqrt_prod(q1, q2)
        dt = q12.dtype
        # w = pi/2 - |theta| on [W, pi/2], W = the angle between (|q12|, gap): no cancellation near |rho| = 1
        big_w = angle(gap(q1, q2, q12), jnp.abs(q12))
        w_lo = _HARDTANH_W_FLOOR * jnp.minimum(jnp.minimum(a1, a2), 1.0)
        lo = jnp.maximum(big_w, w_lo)
        span = math.log(math.pi / 2) - jnp.log(lo)  # w = e^s, s in [log lo, log(pi/2)]
        u, wu = _hardtanh_nodes()
        lead = (1,) * q12.ndim
        u, wu = (jnp.asarray(v, dt).reshape(lead + v.shape) for v in (u, wu))

        def integrands(w):
            sin2 = jnp.sin(w) ** 2  # cos^2 theta
            one_p = 2 * jnp.cos(0.5 * w) ** 2  # 1 + |sin theta|
            a12 = (a1 * a2)[..., None]
            a_min = ((a1 - a2) ** 2)[..., None] / (2 * sin2) + a12 / one_p
            g = -jnp.exp(-a_min) * jnp.expm1(-2 * a12 * jnp.cos(w) / sin2) / math.pi  # |g|
            return g, g * (q12[..., None] - jnp.sign(q12)[..., None] * s[..., None] * jnp.cos(w))

        w = jnp.exp(jnp.log(lo)[..., None] + span[..., None] * u)
        g, gk = integrands(w)
        weight = span[..., None] * wu * w
        # [W, w_lo] (only where W < w_lo, far below the boundary layer at w ~ a): its value there times its length
        g0, gk0 = integrands(lo[..., None])
        rest = jnp.maximum(w_lo - big_w, 0.0)
        kdot = e12 + jnp.sum(weight * g, axis=-1) + rest * g0[..., 0]
        k = q12 * e12 + jnp.sum(weight * gk, axis=-1) + rest * gk0[..., 0]
        return k, kdot

    def _hermite(self, q, order):
        sq = safe_sqrt(q)
        t = _inv_root(q)
        first = (sq * jss.erf(t / math.sqrt(2)))[..., None] * _unit(q, order, 1)
        if order < 3:
            return first
        k = np.arange(order + 1)
        scale = np.where((k % 2 == 1) & (k >= 3), -2 / np.sqrt(np.maximum(k * (k - 1), 1)), 0.0)
        p = _hermite_functions(t, order - 1)  # varphi(t) h_m(t), m = 0..order-2, at index k = m + 2
        p = jnp.concatenate([jnp.zeros(q.shape + (2,), q.dtype), p], axis=-1)
        return first + sq[..., None] * _row(jnp.asarray(scale, q.dtype), q.ndim) * p

    def _derivative_squared_law(self, q, step, cutoff):
        p = jss.erf(_inv_root(q) / math.sqrt(2))
        return jnp.array([0.0, 1.0], q.dtype), jnp.stack([1 - p, p])

    def _lipschitz(self):
        return jnp.asarray(1.0)


class Sigmoid(AbstractActivation):
    r""":math:`\phi(x) = 1/(1 + e^{-x})`."""

    nt_name: ClassVar[str] = "Sigmoid"

    def __call__(self, x):
        return jax.nn.sigmoid(x)

    def derivative(self, x):
        s = jax.nn.sigmoid(x)
        return s * (1 - s)

    def _lipschitz(self):
        return jnp.asarray(0.25)


class Swish(AbstractActivation):
    r""":math:`\phi(x) = x\,\sigma(\beta x)` (SiLU for :math:`\beta = 1`)."""

    beta: Array
    nt_name: ClassVar[str] = "Swish"

    def __init__(self, beta: ArrayLike = 1.0):
        self.beta = _param(beta, "Swish", "beta")

    def __call__(self, x):
        return x * jax.nn.sigmoid(self.beta * x)

    def derivative(self, x):
        s = jax.nn.sigmoid(self.beta * x)
        return s + self.beta * x * s * (1 - s)

    def _lipschitz(self):
        # phi'(x) = s(y)(1 + y(1 - s(y))) with y = beta x: its sup over y, whatever beta != 0
        return jnp.where(self.beta == 0, 0.5, _SWISH_LIPSCHITZ)


SiLU = Swish


class Softplus(AbstractActivation):
    r""":math:`\phi(x) = \log(1 + e^{x})`."""

    nt_name: ClassVar[str] = "Softplus"

    def __call__(self, x):
        return jax.nn.softplus(x)

    def derivative(self, x):
        return jax.nn.sigmoid(x)

    def _lipschitz(self):
        return jnp.asarray(1.0)


class Elu(AbstractActivation):
    r""":math:`\phi(x) = x` for :math:`x > 0`, :math:`\alpha(e^x - 1)` otherwise."""

    alpha: Array
    nt_name: ClassVar[str] = "Elu"

    def __init__(self, alpha: ArrayLike = 1.0):
        self.alpha = _param(alpha, "Elu", "alpha")

    def __call__(self, x):
        x = jnp.asarray(x)
        return jnp.where(x > 0, x, self.alpha * jnp.expm1(jnp.minimum(x, 0)))

    def derivative(self, x):
        x = jnp.asarray(x)
        return jnp.where(x > 0, 1.0, self.alpha * jnp.exp(jnp.minimum(x, 0)))

    def _lipschitz(self):
        return jnp.maximum(1.0, jnp.abs(self.alpha))


class Mish(AbstractActivation):
    r""":math:`\phi(x) = x\tanh(\operatorname{softplus}(x))` (Misra 2019)."""

    nt_name: ClassVar[str] = "Mish"

    def __call__(self, x):
        return x * jnp.tanh(jax.nn.softplus(x))


class Custom(AbstractActivation):
    r"""Any elementwise ``fn(x, params)``; ``params`` is a pytree of array leaves
    (differentiable and vmappable like every other activation parameter).

    Example:
        >>> import jax.numpy as jnp
        >>> act = Custom(lambda x, p: jnp.tanh(p["s"] * x), {"s": jnp.array(2.0)})
    """

    fn: Callable = eqx.field(static=True)
    params: Any = None

    def __init__(self, fn: Callable, params: Any = None):
        if not callable(fn):
            raise ValueError(f"Custom.fn must be callable fn(x, params), got {type(fn).__name__}")
        self.fn = fn
        leaves, treedef = jax.tree_util.tree_flatten(params)
        checked = []
        for i, leaf in enumerate(leaves):
            name = f"Custom.params (leaf {i})"
            checked.append(check_range(as_real(leaf, name, allow_empty=True), name))
        self.params = jax.tree_util.tree_unflatten(treedef, checked)

    def __call__(self, x):
        return self.fn(x, self.params)


# --------------------------------------------------------------------------------------
# Families for activation design: Hermite series and the DKS/TAT transformation
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _series_table(degree: int) -> np.ndarray:
    """``R[l, n] = sqrt(n!) / (m! 2^m sqrt(l!))`` for ``n = l + 2m`` (else 0), float64: the
    coefficient of :math:`(q-1)^m h_l` in :math:`h_n(\\sqrt q\\,z)` (see :func:`_hermite_s`)."""
    return np.stack([np.pad(_hermite_rescaling(n), (0, degree - n)) for n in range(degree + 1)], axis=1)


def _series_s(b: Array, q: Array) -> Array:
    r""":math:`s_l(q) = \sum_m b_{l+2m} R[l, l+2m]\,(q-1)^m`, ``l = 0..N`` on a new last axis, so
    that :math:`\sum_n b_n h_n(\sqrt q z) = \sum_l s_l(q)\,q^{l/2}h_l(z)` (as :func:`_poly_s` for
    :class:`Polynomial`; the dual is :math:`\sum_l s_l(q_1)s_l(q_2)\,q_{12}^l`)."""
    degree = b.shape[0] - 1
    half = degree // 2
    table = _series_table(degree)
    l_idx, m_idx = np.meshgrid(np.arange(degree + 1), np.arange(half + 1), indexing="ij")
    n_idx = l_idx + 2 * m_idx
    valid = n_idx <= degree
    n_safe = np.where(valid, n_idx, 0)
    t = jnp.asarray(np.where(valid, table[l_idx, n_safe], 0.0), b.dtype)
    a = jnp.where(jnp.asarray(valid), b[n_safe] * t, 0.0)  # (N + 1, M + 1)
    return _powers(q - 1, half) @ a.T


@functools.lru_cache(maxsize=None)
def _herme_to_monomial(degree: int) -> np.ndarray:
    """``P[j, n]``: the coefficient of ``x^j`` in :math:`h_n = He_n/\\sqrt{n!}`."""
    from numpy.polynomial.hermite_e import herme2poly

    out = np.zeros((degree + 1, degree + 1))
    for n in range(degree + 1):
        out[: n + 1, n] = herme2poly([0] * n + [1]) / math.exp(0.5 * _log_factorial(n))
    return out


class HermiteSeries(AbstractClosedFormActivation):
    r"""An activation given by its Hermite coefficients,
    :math:`\phi(x) = \sum_{k=0}^{N} a_k\,h_k(x)`, :math:`h_k = He_k/\sqrt{k!}` orthonormal under
    :math:`\mathcal N(0, 1)` (so :math:`a_k = \mathbb E[\phi(z)h_k(z)]` and
    :math:`\mathbb E[\phi(z)^2] = \sum_k a_k^2`; ``coeffs`` of length ``N + 1 <= 101``).

    The parameterization of Liang & Tran-Bach (2020) and of kernel design: at unit variances the
    dual kernel is :math:`\sum_k a_k^2\rho^k`. The dual is exact at any variances, through the
    rescaling identity of :class:`Hermite` (no cancellation; its derivative
    :math:`\phi' = \sum_k a_k\sqrt k\,h_{k-1}`),

    .. math::
        \mathbb E[\phi(u)\phi(v)] = \sum_l s_l(q_1)s_l(q_2)\,q_{12}^l,\qquad
        s_l(q) = \sum_m a_{l+2m}\frac{\sqrt{(l+2m)!}}{m!\,2^m\sqrt{l!}}(q-1)^m,

    and :math:`\phi` is evaluated by the three-term recurrence
    :math:`h_{k+1} = (x h_k - \sqrt k\,h_{k-1})/\sqrt{k+1}` (stable; no monomial expansion).
    Differentiable in ``coeffs``; :func:`rmtjax.design.hermite_family` constrains them (e.g.
    :math:`\sum a_k^2 = 1`) by reparameterization.

    Example:
        >>> import jax.numpy as jnp
        >>> act = HermiteSeries(jnp.array([0.0, 0.6, 0.8]))  # 0.6 x + 0.8 (x^2 - 1)/sqrt(2)
        >>> k, kdot = act.dual(jnp.array(1.0), jnp.array(1.0), jnp.array(0.5))
        >>> round(float(k), 6)  # 0.36 * 0.5 + 0.64 * 0.25
        0.34
    """

    coeffs: Array
    nt_name: ClassVar[str] = ""

    def __init__(self, coeffs: ArrayLike):
        coeffs = as_real(coeffs, "HermiteSeries.coeffs", ndim=1)
        if not 1 <= coeffs.shape[0] <= _SUPPORTED_DEGREE + 1:
            raise ValueError(f"HermiteSeries.coeffs must have 1 to {_SUPPORTED_DEGREE + 1} entries (degree <= "
                             f"{_SUPPORTED_DEGREE}), got {coeffs.shape[0]}")
        self.coeffs = check_range(coeffs, "HermiteSeries.coeffs")

    def monomial_coefficients(self) -> Array:
        """The same polynomial in the monomial basis (increasing order, as :class:`Polynomial`'s
        ``coef``): ``Polynomial(act.monomial_coefficients())`` is the same function."""
        n = self.coeffs.shape[0] - 1
        return jnp.asarray(_herme_to_monomial(n), self.coeffs.dtype) @ self.coeffs

    @staticmethod
    def _evaluate(a: Array, x: Array) -> Array:
        x = jnp.asarray(x)
        dt = jnp.result_type(x, a)
        x = x.astype(dt)
        h_prev, h = jnp.zeros_like(x), jnp.ones_like(x)
        acc = a[0].astype(dt) * h
        for k in range(1, a.shape[0]):
            h_prev, h = h, (x * h - math.sqrt(k - 1) * h_prev) / math.sqrt(k)
            acc = acc + a[k].astype(dt) * h
        return acc

    def _dcoeffs(self) -> Array:
        a = self.coeffs
        if a.shape[0] == 1:
            return jnp.zeros((1,), a.dtype)
        return a[1:] * jnp.asarray(np.sqrt(np.arange(1, a.shape[0])), a.dtype)

    def __call__(self, x):
        return self._evaluate(self.coeffs, x)

    def derivative(self, x):
        return self._evaluate(self._dcoeffs(), x)

    def _s(self, q, derivative):
        b = self._dcoeffs() if derivative else self.coeffs
        return _series_s(b.astype(q.dtype), q)

    def _dual(self, q1, q2, q12):
        k, kdot = (_mehler_expectation(self._s(q1, d), self._s(q2, d), q12) for d in (False, True))
        return k, kdot

    def _hermite(self, q, order):
        s = self._s(q, False)
        cols = [s[..., l] * q ** (0.5 * l) for l in range(s.shape[-1])]
        return _pad(jnp.stack(cols, axis=-1).astype(q.dtype), order)

    def _lipschitz(self):
        a = self.coeffs
        slope = jnp.abs(a[1]) if a.shape[0] > 1 else jnp.zeros((), a.dtype)
        return jnp.where(jnp.any(a[2:] != 0), jnp.inf, slope) if a.shape[0] > 2 else slope


class Transformed(AbstractActivation):
    r"""The transformed activation of Deep Kernel Shaping and TAT (Martens et al. 2021; Zhang et
    al. 2022): :math:`\hat\phi(x) = \gamma\,\big(\phi(\alpha x + \beta) + \delta\big)` for any
    ``base`` activation :math:`\phi`, differentiable in :math:`(\alpha, \beta, \gamma, \delta)` and in the
    base's own parameters. ``dks``' names: ``input_scale`` :math:`\alpha`, ``input_shift``
    :math:`\beta`, ``output_shift`` :math:`\delta`, ``output_scale`` :math:`\gamma`.

    Gaussian expectations go through the numerical methods of :mod:`rmtjax.gaussian` (a shift
    :math:`\beta \ne 0` has no closed form in general). :func:`rmtjax.design.dks` and
    :func:`rmtjax.design.tat` return these; TAT's Leaky-ReLU form is closed-form
    (an :class:`ABRelu`).

    Example:
        >>> import jax.numpy as jnp
        >>> act = Transformed(Tanh(), alpha=2.0, beta=0.5, gamma=1.5, delta=-0.1)
        >>> round(float(act(jnp.array(0.3))), 6)  # 1.5 * (tanh(1.1) - 0.1)
        1.050749
    """

    base: AbstractActivation
    alpha: Array
    beta: Array
    gamma: Array
    delta: Array

    def __init__(self, base: AbstractActivation, alpha: ArrayLike = 1.0, beta: ArrayLike = 0.0,
                 gamma: ArrayLike = 1.0, delta: ArrayLike = 0.0):
        if not isinstance(base, AbstractActivation):
            raise ValueError(f"Transformed.base must be an rmtjax.activations module (e.g. Tanh()), got "
                             f"{base!r:.60}")
        self.base = base
        self.alpha = _param(alpha, "Transformed", "alpha")
        self.beta = _param(beta, "Transformed", "beta")
        self.gamma = _param(gamma, "Transformed", "gamma")
        self.delta = _param(delta, "Transformed", "delta")

    def __call__(self, x):
        return self.gamma * (self.base(self.alpha * x + self.beta) + self.delta)

    def derivative(self, x):
        return self.gamma * self.alpha * self.base.derivative(self.alpha * x + self.beta)

    def _lipschitz(self):
        return jnp.abs(self.gamma * self.alpha) * self.base.lipschitz()
