r"""Spectral measures as pytrees: Stieltjes, R- and S-transforms, moments, densities.

Every measure is an :class:`eqx.Module` whose continuous parameters (ratio, variance, atoms,
weights, grid values) are array leaves, so ``jax.grad`` and ``jax.vmap`` act on them; integers
that change the structure (a Fuss-Catalan power, a moment order) are static.

**Conventions.** For a probability measure :math:`\mu` on :math:`\mathbb R`,

.. math::
    G_\mu(z) = \int\frac{d\mu(t)}{z - t}\ (\operatorname{Im}G < 0 \text{ for } \operatorname{Im}z > 0),
    \qquad \rho(x) = -\frac1\pi\lim_{\eta\downarrow0}\operatorname{Im}G_\mu(x + i\eta),

the R-transform :math:`R_\mu(g) = G_\mu^{-1}(g) - 1/g` (Voiculescu; :math:`R_{\mu\boxplus\nu} =
R_\mu + R_\nu`), and for :math:`\mu` on :math:`[0, \infty)` with mean :math:`m_1 > 0` the moment
generating function :math:`\psi_\mu(z) = \int\frac{zt}{1 - zt}d\mu(t) = G_\mu(1/z)/z - 1`, its
inverse :math:`\chi_\mu = \psi_\mu^{-1}` and the S-transform
:math:`S_\mu(w) = \frac{1+w}{w}\chi_\mu(w)` (:math:`S_{\mu\boxtimes\nu} = S_\mu S_\nu`). See
Mingo & Speicher, *Free Probability and Random Matrices* (2017), ch. 2-3, and Pennington,
Schoenholz & Ganguli (2018, "The emergence of spectral universality in deep networks", sec. 2).

**Stieltjes inversion.** :meth:`AbstractMeasure.density` is exact for the closed-form laws.
:func:`stieltjes_inversion` evaluates :math:`-\operatorname{Im}G(x+i\eta)/\pi` for any measure;
its bias is :math:`O(\eta)` in the bulk but :math:`O(\sqrt\eta)` at a square-root edge, so with
``richardson=True`` it combines :math:`\eta` and :math:`2\eta` (:math:`2\rho_\eta - \rho_{2\eta}`,
bias :math:`O(\eta^2)` in the bulk) and clips at 0, which keeps the edges non-negative.

**Validation.** Every public method validates its argument (the rule of :mod:`rmtjax._validate`):
points must be finite, real where a real point is expected, and off the real support where the
transform is singular there (``x + 1j * eta``, ``eta > 0``, reads the boundary value); moment
orders are static integers in ``[0, 100]``; constructors check their parameters (eagerly, or
compiled in under ``jit``). A result that would not be finite (a pole of an R- or S-transform, an
overflowing moment, a numerical inverse that finds no root on the physical branch) is a
``ValueError``, never a NaN. Measures hash by identity, so ``jax.jit(measure.stieltjes)`` works
(the bound method is a pytree whose arrays become constants of the compiled function).

Example:
    >>> import jax.numpy as jnp
    >>> mp = MarchenkoPastur(0.5, 1.0)
    >>> g = mp.stieltjes(jnp.array(1.0 + 1e-9j))
    >>> rho = mp.density(jnp.array(1.0))  # equals -g.imag / pi
"""

from __future__ import annotations

import abc
import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._numerics import safe_div, safe_sqrt
from .._validate import ArgumentError, _summary, concrete, error_if, flag, real, reraise_as_value_error, static_int
from ..solve import Newton, root
from ._checks import as_complex, describe_points, eps, finish, points, tolerances

__all__ = [
    "AbstractMeasure",
    "Discrete",
    "Empirical",
    "FussCatalan",
    "GridDensity",
    "MarchenkoPastur",
    "PointMass",
    "Semicircle",
    "stieltjes_inversion",
]

MAX_MOMENT_ORDER = 100  # moments of higher order overflow float64 for most laws and are not supported


# ----------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------


def _float_dtype(*arrays):
    """The widest float dtype among the strongly typed ``arrays`` (weakly typed ones, from Python
    numbers, follow the others), or the default float dtype."""
    strong = [np.dtype(a.dtype) for a in arrays if not a.weak_type]
    return np.result_type(*strong) if strong else jnp.result_type(float)


def _params(**specs):
    """Validated scalar parameters ``name=(value, lo, lo_open)`` (real, finite, ``> lo`` or
    ``>= lo``; ``lo=None`` for any finite value), cast to one strong float dtype."""
    arrs = {}
    for name, (value, lo, lo_open) in specs.items():
        arrs[name] = real(value, name, ndim=0, lo=lo, lo_open=lo_open)
    dt = _float_dtype(*arrs.values())
    return tuple(jnp.asarray(a, dtype=dt) for a in arrs.values())


def _positive(x, name):
    return (x, 0.0, True)


def _any(x, name):
    return (x, None, False)


def _no_nan(x, msg: str):
    """``x`` if no entry is NaN, else ``ValueError(msg)`` (eagerly or compiled in)."""
    v = concrete(x)
    if v is not None:
        if np.any(np.isnan(v)):
            raise ArgumentError(msg)
        return x
    return error_if(x, jnp.any(jnp.isnan(x)), msg)


def _all_finite(x, msg: str):
    """``x`` if every entry is finite, else ``ValueError(msg)`` (eagerly or compiled in)."""
    v = concrete(x)
    if v is not None:
        if not np.all(np.isfinite(v)):
            raise ArgumentError(msg)
        return x
    return error_if(x, ~jnp.all(jnp.isfinite(x)), msg)


def _sqrt_pair(z, a, b):
    r"""The branch of :math:`\sqrt{(z-a)(z-b)}` that is analytic off :math:`[a, b]` and
    :math:`\sim z` at infinity: the product of two principal square roots."""
    return jnp.sqrt(z - a) * jnp.sqrt(z - b)


def _lorentz(x, eta):
    return eta / (math.pi * (x * x + eta * eta))


def _trailing(v, z):
    """A 1-d array ``v`` shaped ``(1,) * z.ndim + v.shape``, to broadcast against ``z[..., None]``."""
    return v.reshape((1,) * jnp.ndim(z) + v.shape)


# ----------------------------------------------------------------------------------------
# The abstract measure
# ----------------------------------------------------------------------------------------


class AbstractMeasure(eqx.Module):
    """A probability measure on the real line (see the module docstring for conventions).

    Subclasses implement ``_stieltjes`` (complex points, unvalidated), ``_moment`` (a static
    order) and :meth:`support_bounds`; the public methods validate their arguments and call them.
    """

    def __hash__(self) -> int:  # by identity: jax.jit(measure.method) hashes the bound method
        return id(self)

    # -- to implement -----------------------------------------------------------------------

    @abc.abstractmethod
    def _stieltjes(self, z: Array) -> Array:
        """G at complex points ``z`` (no validation)."""

    @abc.abstractmethod
    def _moment(self, k: int) -> Array:
        """The ``k``-th moment (``k`` a validated static int)."""

    @abc.abstractmethod
    def support_bounds(self) -> tuple[Array, Array]:
        """An interval containing the support (not differentiated; used for scales and checks)."""

    def _bad_real(self, x: Array) -> Array:
        """Real points where G is undefined (the support, poles): default the support bounds."""
        lo, hi = self.support_bounds()
        return (x >= lo.astype(x.dtype)) & (x <= hi.astype(x.dtype))

    def _density(self, x: Array) -> Array:
        lo, hi = self.support_bounds()
        scale = (jnp.abs(hi) + jnp.abs(lo)).astype(x.dtype)
        eta = max(1e-6, 100 * eps(x.dtype)) * jnp.maximum(scale, jnp.finfo(x.dtype).tiny / jnp.finfo(x.dtype).eps)
        return _inversion(self, x, eta, False) - self.zero_mass().astype(x.dtype) * _lorentz(x, eta)

    def _psi(self, z: Array) -> Array:
        zs = jnp.where(z == 0, jnp.ones_like(z), z)
        return jnp.where(z == 0, jnp.zeros_like(z), self._stieltjes(1 / zs) / zs - 1)

    def _r_transform(self, g: Array) -> Array:
        z, ok = self._inverse(g, None)
        return jnp.where(ok, z - 1 / g, jnp.nan), ok

    def _s_transform(self, w: Array) -> Array:
        m1 = self.mean().astype(w.dtype)
        top = self.support_bounds()[1].astype(w.dtype)
        ws = jnp.where(w == 0, jnp.ones_like(w), w)
        # start w / (m1 + w top): ~ w / m1 for small w, inside (0, 1/top) for real w > 0
        chi, ok = _vmap_method(self, "_inverse_one", ws, ws / (m1 + ws * top), static=("_psi",))
        s = jnp.where(w == 0, 1 / m1, chi * (1 + ws) / ws)
        return s, ok | (w == 0)

    def _inverse(self, g, z0):
        z0 = 1 / g + self.mean().astype(g.dtype) if z0 is None else z0
        return _vmap_method(self, "_inverse_one", g, z0.astype(g.dtype), static=("_stieltjes",))

    def _inverse_one(self, g, z0, fn):
        rtol, atol = tolerances(g.dtype)
        sol = root(_inverse_residual, z0, (self, g, fn), solver=Newton(rtol, atol), throw=False,
                   name=f"inverse of {fn.strip('_')}")
        z = sol.value
        if fn == "_psi":
            # chi = psi^{-1}, the branch through z = 0: chi(w) ~ w / m1, so Im z has the sign of
            # m1 Im w (the G^{-1} test below rejected every complex w: issue 12's fuzz suite)
            m1 = self.mean().astype(jnp.real(z).dtype)
            physical = jnp.sign(m1) * jnp.imag(z) * jnp.imag(g) >= -10 * rtol * jnp.abs(z) * jnp.abs(g)
        else:
            # the branch through z = infinity: Im z and Im g of opposite signs (Im G < 0 above the axis)
            physical = jnp.imag(z) * jnp.imag(g) <= 10 * rtol * jnp.abs(z) * jnp.abs(g)
        ok = sol.ok & jnp.all(jnp.isfinite(z)) & physical
        return jnp.where(ok, z, jnp.nan), ok

    def zero_mass(self) -> Array:
        """Mass of the atom at 0 (0 for the absolutely continuous laws)."""
        return jnp.zeros(())

    def _rescaled(self, c):
        """The law of ``c t`` (``c > 0``, unvalidated), or ``None`` if this measure cannot say."""
        return None

    # -- public, validated -------------------------------------------------------------------

    def _off_support(self, z, name: str):
        """``z`` after checking that no real entry is on the real support (or a pole)."""
        return self._check_off_support(z, (jnp.imag(z) == 0) & self._bad_real(jnp.real(z)), name, z)

    def _check_off_support(self, z, bad, name: str, out):
        """``out`` after checking ``bad`` (the real entries of ``z`` on the real support, or a pole)."""
        msg = (f"{name} must be off the real support of the measure (or a complex x + 1j * eta, eta > 0): "
               "the Stieltjes transform is not defined on it")
        b = concrete(bad)
        if b is not None:
            if np.any(b):
                lo, hi = (concrete(v) for v in self.support_bounds())
                rng = "" if lo is None or hi is None else f" [{float(lo):.4g}, {float(hi):.4g}]"
                raise ArgumentError(msg.replace("support of the measure", f"support{rng} of the measure")
                                    + f", got {_summary(np.asarray(concrete(z)), b)}")
            return out
        return error_if(out, jnp.any(bad), msg)

    @reraise_as_value_error
    def stieltjes(self, z: ArrayLike) -> Array:
        r""":math:`G(z) = \int d\mu(t)/(z-t)`, elementwise (``z`` finite, complex off the real
        support, or real outside it; any shape)."""
        z, bad, g = _stieltjes_core(self, points(z, "z"))
        g = self._check_off_support(z, bad, "z", g)
        return _all_finite(g, "stieltjes: G(z) is not finite at this z (a pole of G: z must be off the support and "
                              "its atoms)")

    @reraise_as_value_error
    def density(self, x: ArrayLike) -> Array:
        r"""Density of the absolutely continuous part at real ``x`` (finite; atoms excluded). The
        default is :func:`stieltjes_inversion` with a height of :math:`10^{-6}` times the support's
        scale."""
        x = points(x, "x", complex_ok=False)
        return _all_finite(_method_core(self, "_density", x),
                           "density is not finite at this x (x must be a finite real point)")

    def moment(self, k: int) -> Array:
        r""":math:`m_k = \int t^k d\mu(t)` (``k`` a static integer in ``[0, 100]``; ``inf`` where the
        moment overflows the floating-point range with a definite sign)."""
        k = static_int(k, "k", lo=0, hi=MAX_MOMENT_ORDER)
        return _no_nan(_method_core(self, "_moment", k), f"the moment of order k = {k} overflows the floating-point "
                       "range for this measure (its terms are +-inf); use a smaller k")

    def moments(self, order: int) -> Array:
        """``[m_1, ..., m_order]`` (``order`` a static integer in ``[1, 100]``)."""
        order = static_int(order, "order", lo=1, hi=MAX_MOMENT_ORDER)
        return _no_nan(_method_core(self, "_moments", order), f"a moment of order <= order = {order} overflows the "
                       "floating-point range for this measure; use a smaller order")

    def _moments(self, order: int) -> Array:
        return jnp.stack([self._moment(k) for k in range(1, order + 1)])

    def mean(self) -> Array:
        return self._moment(1)

    def variance(self) -> Array:
        return self._moment(2) - self._moment(1) ** 2

    @reraise_as_value_error
    def psi(self, z: ArrayLike) -> Array:
        r""":math:`\psi(z) = \int zt/(1-zt)\,d\mu(t) = G(1/z)/z - 1` (moment generating function;
        ``z`` finite, with :math:`1/z` off the real support)."""
        z, bad, psi = _psi_core(self, points(z, "z"))
        msg = "z must have 1/z off the real support of the measure (or be complex): psi is not defined there"
        b = concrete(bad)
        if b is not None and np.any(b):
            raise ArgumentError(msg + f", got {_summary(np.asarray(concrete(z)), b)}")
        if b is None:
            psi = error_if(psi, jnp.any(bad), msg)
        return _all_finite(psi, "psi is not finite at this z (1/z is a pole: z must have 1/z off the "
                                         "support and its atoms)")

    @reraise_as_value_error
    def inverse_stieltjes(self, g: ArrayLike, z0: ArrayLike | None = None) -> Array:
        r""":math:`G^{-1}(g)`: the root of :math:`G(z) = g` near ``z0`` (default :math:`1/g + m_1`,
        the start that follows the branch through :math:`z = \infty`, on which :math:`\operatorname{Im}z`
        and :math:`\operatorname{Im}g` have opposite signs), by Newton's method through
        :func:`rmtjax.solve.root`; for small nonzero :math:`|g|` (``ValueError`` where no root on
        that branch is found)."""
        g = as_complex(points(g, "g"))
        g = _nonzero(g, "g")
        if z0 is not None:
            z0 = points(z0, "z0")
            if z0.shape != g.shape:
                z0 = jnp.broadcast_to(z0, g.shape)  # (raises here for a shape that does not broadcast)
        g, z, ok = _inverse_core(self, g, z0)
        return finish(z, ok, throw=True, eager="inverse_stieltjes: G(z) = g has no root on the physical branch "
                      "reachable from z0 (g must be small, nonzero and in the image of G)", at=describe_points(g))

    @reraise_as_value_error
    def r_transform(self, g: ArrayLike) -> Array:
        r""":math:`R(g) = G^{-1}(g) - 1/g` (numerical inverse unless a closed form exists; ``g``
        small, in the domain of :math:`R`)."""
        g, r, ok = _transform_core(self, "_r_transform", points(g, "g"))
        r = finish(r, ok, throw=True, eager="r_transform: G(z) = g has no root on the physical branch (g must be "
                   "small, nonzero and in the image of G)", at=describe_points(g))
        return _all_finite(r, "r_transform is not finite at this g (a pole of R: g must be in the domain of the "
                              "R-transform, small |g|)")

    @reraise_as_value_error
    def s_transform(self, w: ArrayLike) -> Array:
        r""":math:`S(w) = \frac{1+w}{w}\psi^{-1}(w)` for a measure on :math:`[0, \infty)` with
        positive mean (numerical inverse of :math:`\psi` from :math:`w/(m_1 + w\,t_{\max})` unless a
        closed form exists; for small :math:`|w|` or real :math:`w > 0` on measures with an atom at
        the top of their support)."""
        w, bad = _s_domain_core(self, points(w, "w"))
        msg = ("s_transform needs a measure on [0, inf) with a positive mean (the S-transform is not defined "
               "otherwise); this measure's parameters do not give one")
        b = concrete(bad)
        if b is not None and bool(b):
            raise ArgumentError(msg)
        w, s, ok = _transform_core(self, "_s_transform", w)
        if b is None:
            s = error_if(s, bad, msg)
        s = finish(s, ok, throw=True, eager="s_transform: psi(z) = w has no root reachable from the start (w must "
                   "be small, or real and > 0)", at=describe_points(w))
        return _all_finite(s, "s_transform is not finite at this w (a pole of S: w must be in the domain of the "
                              "S-transform)")


# Jitted cores of the public methods (everything after the structural checks; the value checks on
# their results stay eager where the results are concrete): eagerly, each jnp operation was a
# program of its own, compiled on the first call (Semicircle.s_transform: 41 one-operation programs,
# 4.7 s; Discrete.s_transform 33; measured 2026-12-07). eqx.filter_jit: the measure's arrays are
# traced, its static fields, method names and orders static, so each is compiled once per structure.


@eqx.filter_jit
def _method_core(measure, method: str, *args):
    return getattr(measure, method)(*args)


@eqx.filter_jit
def _stieltjes_core(measure, z):
    z = as_complex(z)
    return z, (jnp.imag(z) == 0) & measure._bad_real(jnp.real(z)), measure._stieltjes(z)


@eqx.filter_jit
def _psi_core(measure, z):
    z = as_complex(z)
    bad = (jnp.imag(z) == 0) & (jnp.real(z) != 0) & measure._bad_real(1 / jnp.where(jnp.real(z) != 0, jnp.real(z), 1))
    return z, bad, measure._psi(z)


@eqx.filter_jit
def _transform_core(measure, method: str, g):
    g = as_complex(g)
    return (g, *getattr(measure, method)(g))


@eqx.filter_jit
def _s_domain_core(measure, w):
    lo, _ = measure.support_bounds()
    return as_complex(w), (lo < 0) | ~(measure.mean() > 0)


@eqx.filter_jit
def _inverse_core(measure, g, z0):
    g = as_complex(g)
    if z0 is not None:
        z0 = jnp.broadcast_to(as_complex(z0), g.shape)
    return (g, *measure._inverse(g, z0))


def _inverse_residual(z, args):
    measure, g, fn = args
    return getattr(measure, fn)(z) - g


def _nonzero(x, name):
    v = concrete(x)
    msg = f"{name} must be nonzero"
    if v is not None:
        if np.any(v == 0):
            raise ArgumentError(f"{msg}, got {_summary(np.asarray(v), np.asarray(v) == 0)}")
        return x
    return error_if(x, jnp.any(x == 0), msg)


def _inversion(measure, x, eta, richardson):
    eta = eta.astype(x.dtype)
    z = jax.lax.complex(x, jnp.broadcast_to(eta, x.shape))
    rho = -jnp.imag(measure._stieltjes(z)) / math.pi
    if not richardson:
        return rho
    z2 = jax.lax.complex(x, jnp.broadcast_to(2 * eta, x.shape))
    rho2 = -jnp.imag(measure._stieltjes(z2)) / math.pi
    return jnp.maximum(2 * rho - rho2, 0.0)


@reraise_as_value_error
def stieltjes_inversion(measure: AbstractMeasure, x: ArrayLike, *, eta: ArrayLike, richardson: bool = False) -> Array:
    r"""Density by Stieltjes inversion, :math:`\rho_\eta(x) = -\operatorname{Im}G(x + i\eta)/\pi`
    (the density smoothed by a Cauchy kernel of width :math:`\eta`; atoms appear as Lorentzians).

    Args:
        measure: any :class:`AbstractMeasure` (or subordination-based convolution).
        x: real points (finite, any shape).
        eta: height :math:`> 0` (absolute; a scalar or an array broadcasting against ``x``).
        richardson: return :math:`\max(2\rho_\eta - \rho_{2\eta}, 0)`, which cancels the
            :math:`O(\eta)` bulk bias; the clip keeps square-root edges (bias :math:`O(\sqrt\eta)`)
            non-negative.

    Example:
        >>> import jax.numpy as jnp
        >>> rho = stieltjes_inversion(Semicircle(1.0), jnp.linspace(-2, 2, 5), eta=1e-4)
    """
    if not isinstance(measure, AbstractMeasure):
        raise ArgumentError(f"measure must be an rmtjax.rmt measure (e.g. MarchenkoPastur(0.5)), got {measure!r:.80}")
    x = points(x, "x", complex_ok=False)
    eta = real(eta, "eta", lo=0.0, lo_open=True)
    richardson = flag(richardson, "richardson")
    try:
        shape = jnp.broadcast_shapes(x.shape, eta.shape)
    except ValueError:
        raise ArgumentError(f"eta must be a scalar or broadcast against x {x.shape}, got shape {eta.shape}") from None
    if shape != x.shape:
        raise ArgumentError(f"eta must be a scalar or broadcast against x {x.shape}, got shape {eta.shape}")
    if isinstance(measure, _free_types()):
        eta = eta.astype(x.dtype)
        g = measure.stieltjes(jax.lax.complex(x, jnp.broadcast_to(eta, x.shape)))
        rho = -jnp.imag(g) / math.pi
        if richardson:
            g2 = measure.stieltjes(jax.lax.complex(x, jnp.broadcast_to(2 * eta, x.shape)))
            rho = jnp.maximum(2 * rho + jnp.imag(g2) / math.pi, 0.0)
        return rho
    # jitted (richardson static): eagerly, 29 one-operation programs for MarchenkoPastur on the first call
    # (measured 2026-12-07)
    return _all_finite(_inversion_jit(measure, x, eta, richardson), "stieltjes_inversion is not finite at these x, eta")


_inversion_jit = eqx.filter_jit(_inversion)


def _free_types():
    from ._free import _AbstractFree

    return (_AbstractFree,)


# ----------------------------------------------------------------------------------------
# Closed-form laws
# ----------------------------------------------------------------------------------------


def _log_narayana(k: int) -> np.ndarray:
    """``log N(k, j+1) = log(binom(k, j) binom(k, j+1) / k)``, ``j = 0..k-1``."""
    return np.array([math.log(math.comb(k, j) * math.comb(k, j + 1)) - math.log(k) for j in range(k)])


class MarchenkoPastur(AbstractMeasure):
    r"""Marchenko-Pastur law: the limiting eigenvalue distribution of :math:`\frac1n XX^\top`,
    :math:`X \in \mathbb R^{p\times n}` with i.i.d. entries of variance :math:`\sigma^2`,
    :math:`p/n \to c` (``ratio``). With :math:`\lambda_\pm = \sigma^2(1\pm\sqrt c)^2`,

    .. math::
        \rho(x) = \frac{\sqrt{(\lambda_+ - x)(x - \lambda_-)}}{2\pi\sigma^2 c\,x}\ \text{on}\
        [\lambda_-, \lambda_+],\quad + (1 - 1/c)\,\delta_0 \text{ if } c > 1,

    :math:`G(z) = \frac{z - \sigma^2(1 - c) - \sqrt{(z-\lambda_-)(z-\lambda_+)}}{2c\sigma^2 z}`,
    :math:`R(g) = \frac{\sigma^2}{1 - c\sigma^2 g}`, :math:`S(w) = \frac{1}{\sigma^2(1 + cw)}`,
    :math:`m_k = \sigma^{2k}\sum_{j=0}^{k-1} N(k, j+1)\,c^j` (Narayana numbers).

    Attributes:
        ratio: :math:`c > 0`. variance: :math:`\sigma^2 > 0` (finite; ``ValueError`` otherwise,
            eagerly or under ``jit``).

    Example:
        >>> float(MarchenkoPastur(1.0, 1.0).moment(3))  # Catalan number C_3
        5.0
    """

    ratio: Array
    variance: Array

    def __init__(self, ratio: ArrayLike = 1.0, variance: ArrayLike = 1.0):
        self.ratio, self.variance = _params(ratio=_positive(ratio, "ratio"), variance=_positive(variance, "variance"))

    def edges(self):
        s = jnp.sqrt(self.ratio)
        return self.variance * (1 - s) ** 2, self.variance * (1 + s) ** 2

    def support_bounds(self):
        a, b = self.edges()
        return jax.lax.stop_gradient(jnp.minimum(a, 0.0)), jax.lax.stop_gradient(b)

    def _bad_real(self, x):
        a, b = (jax.lax.stop_gradient(e).astype(x.dtype) for e in self.edges())
        return ((x >= a) & (x <= b)) | ((x == 0) & (self.ratio >= 1))

    def _stieltjes(self, z):
        a, b = self.edges()
        c, v = self.ratio.astype(z.dtype), self.variance.astype(z.dtype)
        zero = z == 0
        zs = jnp.where(zero, jnp.ones_like(z), z)
        # (u - S) / (2 c v z) with u = z - v (1 - c), S = sqrt((z - a)(z - b)), rationalized (u^2 - S^2 = 4 c v z):
        # no cancellation far from the support (the textbook form lost ~ |z|^2 / v digits: 3.5e-8 relative at
        # |z| = 4e4 for the semicircle's analogue)
        g = 2 / (zs - v * (1 - c) + _sqrt_pair(zs, a.astype(z.dtype), b.astype(z.dtype)))
        # z = 0 (outside the support only for c < 1): G(0) = -E[1/t] = -1 / (v (1 - c))
        g0 = -1 / (v * jnp.where(c == 1, jnp.ones_like(c), 1 - c))
        return jnp.where(zero, g0, g)

    def _density(self, x):
        a, b = self.edges()
        v, c = self.variance.astype(x.dtype), self.ratio.astype(x.dtype)
        return safe_div(safe_sqrt((b.astype(x.dtype) - x) * (x - a.astype(x.dtype))), 2 * math.pi * v * c * x)

    def zero_mass(self):
        return jnp.maximum(1 - 1 / self.ratio, 0.0)

    def _rescaled(self, c):
        return eqx.tree_at(lambda m: m.variance, self, self.variance * c.astype(self.variance.dtype))

    def _moment(self, k: int):
        if k == 0:
            return jnp.ones_like(self.ratio)
        c, v = self.ratio, self.variance
        logn = _log_narayana(k)
        direct = v**k * sum(float(np.exp(logn[j])) * c**j for j in range(k))
        # scaled form where the direct one over- or underflows to nan: with M = max(c, 1),
        # m_k = (v M)^k sum_j N_j (c / M)^j M^(j - k), every factor of the sum in (0, 1]
        big = jnp.maximum(c, 1.0)
        poly = sum(float(np.exp(logn[j])) * (c / big) ** j * big ** (j - k) for j in range(k))
        return jnp.where(jnp.isfinite(direct), direct, (v * big) ** k * poly)

    def _r_transform(self, g):
        v, c = self.variance.astype(g.dtype), self.ratio.astype(g.dtype)
        return v / (1 - c * v * g), jnp.ones(g.shape, bool)

    def _s_transform(self, w):
        return 1 / (self.variance.astype(w.dtype) * (1 + self.ratio.astype(w.dtype) * w)), jnp.ones(w.shape, bool)


class Semicircle(AbstractMeasure):
    r"""Wigner's semicircle law of variance :math:`\sigma^2` centred at :math:`m`:
    :math:`\rho(x) = \frac{\sqrt{4\sigma^2 - (x-m)^2}}{2\pi\sigma^2}`,
    :math:`G(z) = \frac{z - m - \sqrt{(z-m)^2 - 4\sigma^2}}{2\sigma^2}`, :math:`R(g) = m + \sigma^2 g`.

    Attributes:
        variance: :math:`\sigma^2 > 0`. center: :math:`m` (finite).

    Example:
        >>> float(Semicircle(2.0).moment(4))  # 2 sigma^4
        8.0
    """

    variance: Array
    center: Array

    def __init__(self, variance: ArrayLike = 1.0, center: ArrayLike = 0.0):
        self.variance, self.center = _params(variance=_positive(variance, "variance"), center=_any(center, "center"))

    def edges(self):
        r = 2 * jnp.sqrt(self.variance)
        return self.center - r, self.center + r

    def support_bounds(self):
        a, b = self.edges()
        return jax.lax.stop_gradient(a), jax.lax.stop_gradient(b)

    def _stieltjes(self, z):
        a, b = self.edges()
        m = self.center.astype(z.dtype)
        # (u - S) / (2 v), u = z - m, rationalized (u^2 - S^2 = 4 v): no cancellation for |u| >> sqrt(v)
        return 2 / (z - m + _sqrt_pair(z, a.astype(z.dtype), b.astype(z.dtype)))

    def _density(self, x):
        v, m = self.variance.astype(x.dtype), self.center.astype(x.dtype)
        return safe_sqrt(4 * v - (x - m) ** 2) / (2 * math.pi * v)

    def _moment(self, k: int):
        v, m = self.variance, self.center
        coef = [math.comb(k, 2 * j) * math.comb(2 * j, j) / (j + 1) for j in range(k // 2 + 1)]
        direct = sum((coef[j] * v**j * m ** (k - 2 * j) for j in range(1, len(coef))), coef[0] * m**k)
        # scaled form where the direct one overflows: s = max(sqrt(v), |m|), every factor in [-1, 1]
        s = jnp.maximum(jnp.sqrt(v), jnp.abs(m))
        poly = sum(coef[j] * (v / s**2) ** j * (m / s) ** (k - 2 * j) for j in range(len(coef)))
        scaled = jnp.where(poly == 0, jnp.zeros_like(poly), s**k * poly)
        return jnp.where(jnp.isfinite(direct), direct, scaled)

    def _r_transform(self, g):
        return self.center.astype(g.dtype) + self.variance.astype(g.dtype) * g, jnp.ones(g.shape, bool)

    def _rescaled(self, c):
        c = c.astype(self.variance.dtype)
        return eqx.tree_at(lambda m: (m.variance, m.center), self, (self.variance * c * c, self.center * c))


class PointMass(AbstractMeasure):
    r""":math:`\delta_a`: :math:`G(z) = 1/(z-a)`, :math:`R = a`, :math:`S = 1/a` (``location`` finite)."""

    location: Array

    def __init__(self, location: ArrayLike = 1.0):
        (self.location,) = _params(location=_any(location, "location"))

    def support_bounds(self):
        a = jax.lax.stop_gradient(self.location)
        return a, a

    def _bad_real(self, x):
        return x == self.location.astype(x.dtype)

    def _stieltjes(self, z):
        return 1 / (z - self.location.astype(z.dtype))

    def _psi(self, z):
        a = self.location.astype(z.dtype)
        return z * a / (1 - z * a)

    def _density(self, x):
        return 0 * x  # (not zeros_like: the result must depend on x, which carries its checks under jit)

    def zero_mass(self):
        return jnp.where(self.location == 0, 1.0, 0.0).astype(self.location.dtype)

    def _moment(self, k: int):
        return self.location**k

    def _rescaled(self, c):
        return eqx.tree_at(lambda m: m.location, self, self.location * c.astype(self.location.dtype))

    def _r_transform(self, g):  # (+ 0 g: the result depends on g, which carries its checks under jit)
        return self.location.astype(g.dtype) + 0 * g, jnp.ones(g.shape, bool)

    def _s_transform(self, w):
        return 1 / self.location.astype(w.dtype) + 0 * w, jnp.ones(w.shape, bool)


class Discrete(AbstractMeasure):
    r""":math:`\sum_i w_i\delta_{a_i}` with weights normalized to 1 (atoms and weights differentiable).
    An empirical spectral measure is ``Discrete(eigenvalues)`` (equal weights, alias
    :class:`Empirical`).

    Attributes:
        atoms: finite, a non-empty 1-d array. weights: finite, ``>= 0``, with a positive total,
            the shape of ``atoms`` (default equal).

    Example:
        >>> import jax.numpy as jnp
        >>> relu_d2 = Discrete(jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]))  # law of relu'(h)^2
    """

    atoms: Array
    weights: Array

    def __init__(self, atoms: ArrayLike, weights: ArrayLike | None = None):
        atoms = real(atoms, "atoms", ndim=1)
        if weights is None:
            w = jnp.ones_like(atoms)
        else:
            w = real(weights, "weights", ndim=1, lo=0.0)
            if w.shape != atoms.shape:
                raise ArgumentError(f"weights must have the shape of atoms {atoms.shape}, got {w.shape}")
        dt = _float_dtype(atoms, w)
        atoms, w, total = _discrete_normalize(atoms, w, dt)
        msg = "weights must have a positive total mass"
        tc = concrete(total)
        if tc is not None:
            if not (np.isfinite(tc) and tc > 0):
                raise ArgumentError(f"{msg} (finite), got total {float(tc)!r}")
        else:
            w = error_if(w, ~(jnp.isfinite(total) & (total > 0)), msg)
        self.atoms = atoms
        self.weights = w

    def support_bounds(self):
        a = jax.lax.stop_gradient(self.atoms)
        return jnp.min(a), jnp.max(a)

    def _bad_real(self, x):
        return jnp.any(x[..., None] == _trailing(self.atoms.astype(x.dtype), x), axis=-1)

    def _stieltjes(self, z):
        a, w = _trailing(self.atoms.astype(z.dtype), z), _trailing(self.weights.astype(z.dtype), z)
        return jnp.sum(w / (z[..., None] - a), axis=-1)

    def _psi(self, z):
        a, w = _trailing(self.atoms.astype(z.dtype), z), _trailing(self.weights.astype(z.dtype), z)
        return jnp.sum(w * z[..., None] * a / (1 - z[..., None] * a), axis=-1)

    def _density(self, x):
        return 0 * x  # (not zeros_like: the result must depend on x, which carries its checks under jit)

    def zero_mass(self):
        return jnp.sum(jnp.where(self.atoms == 0, self.weights, 0.0))

    def _moment(self, k: int):
        return jnp.sum(jnp.where(self.weights > 0, self.weights * self.atoms**k, 0.0))

    def _rescaled(self, c):
        return eqx.tree_at(lambda m: m.atoms, self, self.atoms * c.astype(self.atoms.dtype))


Empirical = Discrete


@functools.partial(jax.jit, static_argnums=2)
def _discrete_normalize(atoms, w, dt):
    # jitted: eagerly, 4 one-operation programs per construction on the first call (measured 2026-12-07)
    atoms, w = jnp.asarray(atoms, dtype=dt), jnp.asarray(w, dtype=dt)
    total = jnp.sum(w)
    return atoms, w / total, total


class FussCatalan(AbstractMeasure):
    r"""Fuss-Catalan law of order :math:`s` scaled by ``scale``: the limiting squared singular
    values of a product of :math:`s` independent square Gaussian matrices (:math:`MP^{\boxtimes s}`),
    with moments :math:`m_k = \mathrm{scale}^k\binom{(s+1)k}{k}\frac{1}{sk+1}` and support
    :math:`[0, \mathrm{scale}\,(s+1)^{s+1}/s^s]`. The moment series :math:`w(u) = \sum_k m_k u^k`
    solves :math:`w = 1 + \mathrm{scale}\,u\,w^{s+1}` (Penson & Zyczkowski 2011, eq. 3), and
    :math:`G(x) = w(1/x)/x` is its root (Newton, continued from :math:`x + 10 i\lambda_+`). The
    density has the parametric form (Haagerup & Möller 2012; Neuschel 2014), for
    :math:`\varphi\in(0, \pi/(s+1))`,

    .. math::
        x(\varphi) = \frac{(\sin(s+1)\varphi)^{s+1}}{\sin\varphi\,(\sin s\varphi)^s},\qquad
        \rho(x(\varphi)) = \frac{1}{\pi}\frac{\sin^2\varphi\,(\sin s\varphi)^{s-1}}{(\sin(s+1)\varphi)^s}.

    Attributes:
        power: :math:`s`, a static integer in ``[1, 1000]``. scale: ``> 0``.

    Example:
        >>> float(FussCatalan(2).moment(2))  # binom(6, 2) / 5
        3.0
    """

    scale: Array
    power: int = eqx.field(static=True)

    def __init__(self, power: int, scale: ArrayLike = 1.0):
        self.power = static_int(power, "power", lo=1, hi=1000)
        (self.scale,) = _params(scale=_positive(scale, "scale"))

    def edge(self):
        s = self.power
        return self.scale * math.exp((s + 1) * math.log(s + 1) - s * math.log(s))

    def support_bounds(self):
        return jnp.zeros_like(self.scale), jax.lax.stop_gradient(self.edge())

    def _moment(self, k: int):
        s = self.power
        try:
            coef = math.comb((s + 1) * k, k) / (s * k + 1)
        except OverflowError:  # the coefficient alone exceeds float64: the moment does
            log_coef = math.lgamma((s + 1) * k + 1) - math.lgamma(k + 1) - math.lgamma(s * k + 1) - math.log(s * k + 1)
            return jnp.exp(k * jnp.log(self.scale) + log_coef)
        return self.scale**k * coef

    def _rescaled(self, c):
        return eqx.tree_at(lambda m: m.scale, self, self.scale * c.astype(self.scale.dtype))

    def _x_of_phi(self, phi):
        s = self.power
        return jnp.sin((s + 1) * phi) ** (s + 1) / (jnp.sin(phi) * jnp.sin(s * phi) ** s)

    def _phi_one(self, yv):
        # bisection (x(phi) decreases on (0, pi/(s+1))) for a start, then Newton by rmtjax.solve.root
        top = math.pi / (self.power + 1)

        def body(_, lohi):
            lo, hi = lohi
            mid = 0.5 * (lo + hi)
            big = self._x_of_phi(mid) > jax.lax.stop_gradient(yv)
            return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 60, body, (jnp.asarray(0.0, yv.dtype), jnp.asarray(top, yv.dtype)))
        rtol, atol = tolerances(yv.dtype, 1e-13, 1e-15)
        sol = root(_fc_angle_residual, 0.5 * (lo + hi), (self, yv), solver=Newton(rtol, atol), throw=False,
                   max_steps=20, name="Fuss-Catalan angle")
        # Newton polishes the bisection; where it stops short the bisection midpoint is within 2^-60
        return jnp.where(sol.ok, sol.value, 0.5 * (lo + hi))

    def _density(self, x):
        s = self.power
        y = x / self.scale.astype(x.dtype)
        inside = (y > 0) & (y < jax.lax.stop_gradient(self.edge() / self.scale).astype(x.dtype))
        ys = jnp.where(inside, y, 1.0)
        phi = _vmap_method(self, "_phi_one", ys)
        rho = jnp.sin(phi) ** 2 * jnp.sin(s * phi) ** (s - 1) / (math.pi * jnp.sin((s + 1) * phi) ** s)
        return jnp.where(inside, rho / self.scale.astype(x.dtype), 0.0)

    @reraise_as_value_error
    def stieltjes(self, z: ArrayLike, *, n_heights: int = 30) -> Array:
        r""":math:`G(z)` by Newton's method on the moment-series equation, continued in
        :math:`\operatorname{Im} z` over ``n_heights`` (static, ``>= 2``) heights (``ValueError``
        where the continuation does not reach the physical branch, :math:`\operatorname{Im}G \le 0`
        for :math:`\operatorname{Im}z > 0`)."""
        n_heights = static_int(n_heights, "n_heights", lo=2, hi=10_000)
        z = as_complex(points(z, "z"))
        z = self._off_support(z, "z")
        g, ok = _vmap_method(self, "_g_one", z, static=(n_heights,))
        return finish(g, ok, throw=True, eager="FussCatalan.stieltjes: the continuation did not reach the physical "
                      "branch (Im G <= 0 for Im z > 0); raise n_heights", at=describe_points(z))

    def _stieltjes(self, z):
        return _vmap_method(self, "_g_one", z, static=(30,))[0]

    def _g_one(self, zz, n_heights):
        s = self.power
        top = 10 * jax.lax.stop_gradient(self.edge()).astype(zz.real.dtype)
        sign = jnp.where(jnp.imag(zz) < 0, -1.0, 1.0).astype(top.dtype)
        heights = _heights(top, jnp.abs(jnp.imag(zz)), n_heights)
        rtol, atol = tolerances(zz.dtype)

        def step(w, h):
            u = 1 / jax.lax.complex(jnp.real(zz), sign * h)
            sol = root(_fc_series_residual, w, (u, self.scale.astype(zz.dtype), s), solver=Newton(rtol, atol),
                       throw=False, name="Fuss-Catalan Stieltjes")
            return sol.value, sol.ok

        w, oks = jax.lax.scan(step, jnp.ones((), zz.dtype), heights)
        g = w / zz
        # physical branch: Im G of the opposite sign of Im z (G real for real z off the support)
        physical = jnp.imag(g) * jnp.imag(zz) <= 10 * rtol * jnp.abs(g) * jnp.abs(zz)
        return g, oks[-1] & jnp.isfinite(g) & physical


def _fc_angle_residual(p, args):
    measure, y = args
    return measure._x_of_phi(p) - y


def _fc_series_residual(w, args):
    u, sc, s = args
    return w - 1 - sc * u * w ** (s + 1)


def _vmap_method(obj, method: str, *arrays, static: tuple = ()):
    """``obj.method(*elements, *static)`` over the elements of ``arrays`` (one shape), vmapped and
    compiled once per structure and shape (``eqx.filter_jit``)."""
    shape = arrays[0].shape
    out = _vmap_method_flat(obj, method, tuple(a.reshape(-1) for a in arrays), static)
    return jax.tree_util.tree_map(lambda o: o.reshape(shape + o.shape[1:]), out)


@eqx.filter_jit
def _vmap_method_flat(obj, method, flat, static):
    return jax.vmap(lambda *v: getattr(obj, method)(*v, *static))(*flat)


def _heights(top, target, n):
    """Geometric path of heights from ``top`` down to ``target`` (``>= 0``); the last is ``target``."""
    floor = jnp.maximum(target, 1e-14 * top)
    r = (floor / top) ** (1.0 / (n - 1))
    h = top * r ** jnp.arange(n, dtype=top.dtype)
    return h.at[-1].set(target)


class GridDensity(AbstractMeasure):
    r"""A piecewise-linear density through ``(x_i, values_i)`` (normalized to mass 1 by the
    trapezoidal rule). On a segment with :math:`f(t) = f_0 + \beta(t - x_0)`,
    :math:`\int_{x_0}^{x_1}\frac{f(t)}{z-t}dt = f(z)\log\frac{z-x_0}{z-x_1} - \beta(x_1 - x_0)`, so
    :math:`G` is exact for the interpolant (the logarithms do not cross their cut for
    :math:`z\notin[x_0, x_1]`).

    Attributes:
        x: a finite, strictly increasing 1-d grid of at least 2 points. values: finite, ``>= 0``,
            the shape of ``x``, with positive mass.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.linspace(-2, 2, 401)
        >>> g = GridDensity(x, jnp.sqrt(4 - x**2)).stieltjes(jnp.array(3.0 + 0j))
    """

    x: Array
    values: Array

    def __init__(self, x: ArrayLike, values: ArrayLike):
        x = real(x, "x", ndim=1)
        v = real(values, "values", ndim=1, lo=0.0)
        if x.shape != v.shape or x.shape[0] < 2:
            raise ArgumentError(f"x and values must be 1-d of equal length >= 2, got shapes {x.shape} and {v.shape}")
        dt = _float_dtype(x, v)
        x, v = jnp.asarray(x, dtype=dt), jnp.asarray(v, dtype=dt)
        inc = jnp.all(jnp.diff(x) > 0)
        mass = jnp.sum(0.5 * (v[1:] + v[:-1]) * jnp.diff(x))
        ic, mc = concrete(inc), concrete(mass)
        if ic is not None and not ic:
            raise ArgumentError("x must be strictly increasing")
        if ic is None:
            x = error_if(x, ~inc, "x must be strictly increasing")
        if mc is not None and not (np.isfinite(mc) and mc > 0):
            raise ArgumentError(f"values must have a positive, finite mass (trapezoidal rule), got {float(mc)!r}")
        if mc is None:
            v = error_if(v, ~(jnp.isfinite(mass) & (mass > 0)), "values must have a positive, finite mass")
        self.x = x
        self.values = v / mass

    def support_bounds(self):
        return jax.lax.stop_gradient(self.x[0]), jax.lax.stop_gradient(self.x[-1])

    def _stieltjes(self, z):
        x0, x1 = self.x[:-1].astype(z.dtype), self.x[1:].astype(z.dtype)
        f0, f1 = self.values[:-1].astype(z.dtype), self.values[1:].astype(z.dtype)
        x0, x1, f0, f1 = (_trailing(v, z) for v in (x0, x1, f0, f1))
        beta = (f1 - f0) / (x1 - x0)
        zz = z[..., None]
        fz = f0 + beta * (zz - x0)
        return jnp.sum(fz * (jnp.log(zz - x0) - jnp.log(zz - x1)) - beta * (x1 - x0), axis=-1)

    def _density(self, x):
        return jnp.interp(x, self.x.astype(x.dtype), self.values.astype(x.dtype), left=0.0, right=0.0)

    def _moment(self, k: int):
        # Gauss-Legendre with k//2 + 2 nodes per segment integrates t^k (linear f) exactly
        t, w = np.polynomial.legendre.leggauss(k // 2 + 2)
        x0, x1 = self.x[:-1, None], self.x[1:, None]
        f0, f1 = self.values[:-1, None], self.values[1:, None]
        u = jnp.asarray(0.5 * (t + 1), self.x.dtype)[None, :]
        tt = x0 + (x1 - x0) * u
        ff = f0 + (f1 - f0) * u
        return jnp.sum(0.5 * (x1 - x0) * jnp.asarray(w, self.x.dtype)[None, :] * ff * tt**k)
