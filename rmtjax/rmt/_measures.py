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

Example:
    >>> import jax.numpy as jnp
    >>> mp = MarchenkoPastur(0.5, 1.0)
    >>> g = mp.stieltjes(jnp.array(1.0 + 1e-9j))
    >>> rho = mp.density(jnp.array(1.0))  # equals -g.imag / pi
"""

from __future__ import annotations

import abc
import math
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._numerics import safe_div, safe_sqrt
from .._validate import concrete
from ..solve import root

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


def _leaf(x: ArrayLike, name: str) -> Array:
    a = jnp.asarray(x)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        a = a.astype(float)
    if a.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {a.shape}")
    return a


def _positive(x, name: str):
    v = concrete(x)
    if v is not None and not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {v}")


def _complex(z) -> Array:
    z = jnp.asarray(z)
    if jnp.issubdtype(z.dtype, jnp.complexfloating):
        return z
    if not jnp.issubdtype(z.dtype, jnp.floating):
        z = z.astype(float)
    return jax.lax.complex(z, jnp.zeros_like(z))


def _cdtype(x):
    return jnp.complex128 if jnp.result_type(x) in (jnp.float64, jnp.complex128) else jnp.complex64


def check_z_off_support(z, lo, hi, name: str = "z"):
    """``ValueError`` when a concrete real ``z`` lies in ``[lo, hi]`` (the support): ``G`` is not
    defined there; pass ``x + 1j * eta`` instead."""
    zc, loc, hic = concrete(z), concrete(lo), concrete(hi)
    if zc is None or loc is None or hic is None:
        return
    zc = np.asarray(zc)
    bad = (np.imag(zc) == 0) & (np.real(zc) >= loc) & (np.real(zc) <= hic)
    if np.any(bad):
        raise ValueError(f"{name} = {np.real(zc)[bad][:3]} is on the real support [{float(loc):.4g}, {float(hic):.4g}]"
                         " of the measure: the Stieltjes transform is undefined there; use x + 1j * eta, eta > 0")


def _sqrt_pair(z, a, b):
    r"""The branch of :math:`\sqrt{(z-a)(z-b)}` that is analytic off :math:`[a, b]` and
    :math:`\sim z` at infinity: the product of two principal square roots."""
    return jnp.sqrt(z - a) * jnp.sqrt(z - b)


class AbstractMeasure(eqx.Module):
    """A probability measure on the real line (see the module docstring for conventions)."""

    @abc.abstractmethod
    def stieltjes(self, z: ArrayLike) -> Array:
        r""":math:`G(z) = \int d\mu(t)/(z-t)`, elementwise (``z`` complex off the support, or real
        outside it)."""

    @abc.abstractmethod
    def moment(self, k: int) -> Array:
        r""":math:`m_k = \int t^k d\mu(t)` (``k`` static)."""

    @abc.abstractmethod
    def support_bounds(self) -> tuple[Array, Array]:
        """An interval containing the support (not differentiated; used for scales and checks)."""

    def density(self, x: ArrayLike) -> Array:
        r"""Density of the absolutely continuous part at real ``x`` (atoms excluded). The default is
        :func:`stieltjes_inversion` with a height of :math:`10^{-6}` times the support's scale."""
        lo, hi = self.support_bounds()
        eta = 1e-6 * (jnp.abs(hi) + jnp.abs(lo) + 1e-30)
        return stieltjes_inversion(self, x, eta=eta) - self.zero_mass() * _lorentz(jnp.asarray(x), eta)

    def zero_mass(self) -> Array:
        """Mass of the atom at 0 (0 for the absolutely continuous laws)."""
        return jnp.zeros(())

    def moments(self, order: int) -> Array:
        """``[m_1, ..., m_order]``."""
        return jnp.stack([self.moment(k) for k in range(1, order + 1)])

    def mean(self) -> Array:
        return self.moment(1)

    def variance(self) -> Array:
        return self.moment(2) - self.moment(1) ** 2

    # -- transforms -----------------------------------------------------------------------

    def psi(self, z: ArrayLike) -> Array:
        r""":math:`\psi(z) = \int zt/(1-zt)\,d\mu(t) = G(1/z)/z - 1` (moment generating function)."""
        z = _complex(z)
        return self.stieltjes(1 / z) / z - 1

    def inverse_stieltjes(self, g: ArrayLike, z0: ArrayLike | None = None) -> Array:
        r""":math:`G^{-1}(g)`: the root of :math:`G(z) = g` near ``z0`` (default :math:`1/g + m_1`,
        the start that follows the branch through :math:`z = \infty`), by Newton's method through
        :func:`rmtjax.solve.root`; for small :math:`|g|`. Points that do not converge are NaN."""
        g = _complex(g)
        z0 = 1 / g + self.mean().astype(g.dtype) if z0 is None else jnp.broadcast_to(_complex(z0), g.shape)
        return _vmap_method(self, "_inverse_one", g, z0.astype(g.dtype), static=("stieltjes",))

    def _inverse_one(self, g, z0, fn):
        sol = root(lambda z, a: getattr(a[0], fn)(z) - a[1], z0, (self, g), throw=False,
                   name=f"inverse of {fn}")
        return jnp.where(sol.ok, sol.value, jnp.nan)

    def r_transform(self, g: ArrayLike) -> Array:
        r""":math:`R(g) = G^{-1}(g) - 1/g` (numerical inverse unless a closed form exists)."""
        g = _complex(g)
        return self.inverse_stieltjes(g) - 1 / g

    def s_transform(self, w: ArrayLike) -> Array:
        r""":math:`S(w) = \frac{1+w}{w}\psi^{-1}(w)` (numerical inverse of :math:`\psi` from
        :math:`w/(m_1 + w\,t_{\max})`, for small :math:`|w|` or real :math:`w > 0` on measures
        with an atom at the top of their support). Points that do not converge are NaN."""
        w = _complex(w)
        m1 = self.mean().astype(w.dtype)
        top = self.support_bounds()[1].astype(w.dtype)
        # start w / (m1 + w top): ~ w / m1 for small w, inside (0, 1/top) for real w > 0
        chi = _vmap_method(self, "_inverse_one", w, w / (m1 + w * top), static=("psi",))
        return chi * (1 + w) / w


def _trailing(v, z):
    """A 1-d array ``v`` shaped ``(1,) * z.ndim + v.shape``, to broadcast against ``z[..., None]``."""
    return v.reshape((1,) * jnp.ndim(z) + v.shape)


def _lorentz(x, eta):
    return eta / (math.pi * (x * x + eta * eta))


def stieltjes_inversion(measure: AbstractMeasure, x: ArrayLike, *, eta: ArrayLike, richardson: bool = False) -> Array:
    r"""Density by Stieltjes inversion, :math:`\rho_\eta(x) = -\operatorname{Im}G(x + i\eta)/\pi`
    (the density smoothed by a Cauchy kernel of width :math:`\eta`; atoms appear as Lorentzians).

    Args:
        measure: any :class:`AbstractMeasure` (or subordination-based convolution).
        x: real points.
        eta: height :math:`> 0` (absolute).
        richardson: return :math:`\max(2\rho_\eta - \rho_{2\eta}, 0)`, which cancels the
            :math:`O(\eta)` bulk bias; the clip keeps square-root edges (bias :math:`O(\sqrt\eta)`)
            non-negative.

    Example:
        >>> import jax.numpy as jnp
        >>> rho = stieltjes_inversion(Semicircle(1.0), jnp.linspace(-2, 2, 5), eta=1e-4)
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    ec = concrete(eta)
    if ec is not None and not np.all(np.asarray(ec) > 0):
        raise ValueError(f"eta must be > 0, got {ec}")
    eta = jnp.asarray(eta).astype(x.dtype)
    rho = -jnp.imag(measure.stieltjes(jax.lax.complex(x, jnp.broadcast_to(eta, x.shape)))) / math.pi
    if not richardson:
        return rho
    rho2 = -jnp.imag(measure.stieltjes(jax.lax.complex(x, jnp.broadcast_to(2 * eta, x.shape)))) / math.pi
    return jnp.maximum(2 * rho - rho2, 0.0)


# ----------------------------------------------------------------------------------------
# Closed-form laws
# ----------------------------------------------------------------------------------------


def _narayana(k: int) -> np.ndarray:
    """``N(k, j+1) = binom(k, j) binom(k, j+1) / k``, ``j = 0..k-1``."""
    return np.array([math.comb(k, j) * math.comb(k, j + 1) / k for j in range(k)], dtype=np.float64)


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
        ratio: :math:`c > 0`. variance: :math:`\sigma^2 > 0`.

    Example:
        >>> float(MarchenkoPastur(1.0, 1.0).moment(3))  # Catalan number C_3
        5.0
    """

    ratio: Array
    variance: Array

    def __init__(self, ratio: ArrayLike = 1.0, variance: ArrayLike = 1.0):
        self.ratio = _leaf(ratio, "ratio")
        self.variance = _leaf(variance, "variance")

    def __check_init__(self):
        _positive(self.ratio, "MarchenkoPastur: ratio")
        _positive(self.variance, "MarchenkoPastur: variance")

    def edges(self):
        s = jnp.sqrt(self.ratio)
        return self.variance * (1 - s) ** 2, self.variance * (1 + s) ** 2

    def support_bounds(self):
        a, b = self.edges()
        return jax.lax.stop_gradient(jnp.minimum(a, 0.0)), jax.lax.stop_gradient(b)

    def stieltjes(self, z):
        z = _complex(z)
        a, b = self.edges()
        check_z_off_support(z, a, b)
        c, v = self.ratio.astype(z.dtype), self.variance.astype(z.dtype)
        return (z - v * (1 - c) - _sqrt_pair(z, a.astype(z.dtype), b.astype(z.dtype))) / (2 * c * v * z)

    def density(self, x):
        x = jnp.asarray(x)
        a, b = self.edges()
        return safe_div(safe_sqrt((b - x) * (x - a)), 2 * math.pi * self.variance * self.ratio * x)

    def zero_mass(self):
        return jnp.maximum(1 - 1 / self.ratio, 0.0)

    def moment(self, k: int):
        if k == 0:
            return jnp.ones_like(self.ratio)
        n = _narayana(k)
        return self.variance**k * sum(float(n[j]) * self.ratio**j for j in range(k))

    def r_transform(self, g):
        g = _complex(g)
        v, c = self.variance.astype(g.dtype), self.ratio.astype(g.dtype)
        return v / (1 - c * v * g)

    def s_transform(self, w):
        w = _complex(w)
        return 1 / (self.variance.astype(w.dtype) * (1 + self.ratio.astype(w.dtype) * w))


class Semicircle(AbstractMeasure):
    r"""Wigner's semicircle law of variance :math:`\sigma^2` centred at :math:`m`:
    :math:`\rho(x) = \frac{\sqrt{4\sigma^2 - (x-m)^2}}{2\pi\sigma^2}`,
    :math:`G(z) = \frac{z - m - \sqrt{(z-m)^2 - 4\sigma^2}}{2\sigma^2}`, :math:`R(g) = m + \sigma^2 g`.

    Example:
        >>> float(Semicircle(2.0).moment(4))  # 2 sigma^4
        8.0
    """

    variance: Array
    center: Array

    def __init__(self, variance: ArrayLike = 1.0, center: ArrayLike = 0.0):
        self.variance = _leaf(variance, "variance")
        self.center = _leaf(center, "center")

    def __check_init__(self):
        _positive(self.variance, "Semicircle: variance")

    def edges(self):
        r = 2 * jnp.sqrt(self.variance)
        return self.center - r, self.center + r

    def support_bounds(self):
        a, b = self.edges()
        return jax.lax.stop_gradient(a), jax.lax.stop_gradient(b)

    def stieltjes(self, z):
        z = _complex(z)
        a, b = self.edges()
        check_z_off_support(z, a, b)
        m, v = self.center.astype(z.dtype), self.variance.astype(z.dtype)
        return (z - m - _sqrt_pair(z, a.astype(z.dtype), b.astype(z.dtype))) / (2 * v)

    def density(self, x):
        x = jnp.asarray(x)
        return safe_sqrt(4 * self.variance - (x - self.center) ** 2) / (2 * math.pi * self.variance)

    def moment(self, k: int):
        terms = [math.comb(k, 2 * j) * math.comb(2 * j, j) / (j + 1) * self.variance**j * self.center ** (k - 2 * j)
                 for j in range(k // 2 + 1)]
        return sum(terms[1:], terms[0])

    def r_transform(self, g):
        g = _complex(g)
        return self.center.astype(g.dtype) + self.variance.astype(g.dtype) * g


class PointMass(AbstractMeasure):
    r""":math:`\delta_a`: :math:`G(z) = 1/(z-a)`, :math:`R = a`, :math:`S = 1/a`."""

    location: Array

    def __init__(self, location: ArrayLike = 1.0):
        self.location = _leaf(location, "location")

    def support_bounds(self):
        a = jax.lax.stop_gradient(self.location)
        return a, a

    def stieltjes(self, z):
        z = _complex(z)
        check_z_off_support(z, self.location, self.location)
        return 1 / (z - self.location.astype(z.dtype))

    def density(self, x):
        return jnp.zeros_like(jnp.asarray(x, dtype=self.location.dtype))

    def zero_mass(self):
        return jnp.where(self.location == 0, 1.0, 0.0).astype(self.location.dtype)

    def moment(self, k: int):
        return self.location**k

    def r_transform(self, g):
        g = _complex(g)
        return jnp.broadcast_to(self.location.astype(g.dtype), g.shape)

    def s_transform(self, w):
        w = _complex(w)
        return jnp.broadcast_to(1 / self.location.astype(w.dtype), w.shape)


class Discrete(AbstractMeasure):
    r""":math:`\sum_i w_i\delta_{a_i}` with weights normalized to 1 (atoms and weights differentiable).
    An empirical spectral measure is ``Discrete(eigenvalues)`` (equal weights, alias
    :class:`Empirical`).

    Example:
        >>> import jax.numpy as jnp
        >>> relu_d2 = Discrete(jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]))  # law of relu'(h)^2
    """

    atoms: Array
    weights: Array

    def __init__(self, atoms: ArrayLike, weights: ArrayLike | None = None):
        atoms = jnp.asarray(atoms)
        if not jnp.issubdtype(atoms.dtype, jnp.floating):
            atoms = atoms.astype(float)
        if atoms.ndim != 1 or atoms.shape[0] == 0:
            raise ValueError(f"Discrete: atoms must be a non-empty 1-d array, got shape {atoms.shape}")
        w = jnp.ones_like(atoms) if weights is None else jnp.asarray(weights).astype(atoms.dtype)
        if w.shape != atoms.shape:
            raise ValueError(f"Discrete: weights must have the shape of atoms {atoms.shape}, got {w.shape}")
        wc = concrete(w)
        if wc is not None and (np.any(~np.isfinite(wc)) or np.any(wc < 0) or not np.sum(wc) > 0):
            raise ValueError(f"Discrete: weights must be finite, >= 0 and have positive total mass, got {wc}")
        self.atoms = atoms
        self.weights = w / jnp.sum(w)

    def support_bounds(self):
        a = jax.lax.stop_gradient(self.atoms)
        return jnp.min(a), jnp.max(a)

    def stieltjes(self, z):
        z = _complex(z)
        a, w = self.atoms.astype(z.dtype), self.weights.astype(z.dtype)
        zc, ac = concrete(z), concrete(self.atoms)
        if zc is not None and ac is not None and np.any(np.isin(np.asarray(zc), np.asarray(ac).astype(zc.dtype))):
            raise ValueError("z is an atom of the measure: the Stieltjes transform has a pole there; use x + 1j * eta")
        a, w = _trailing(a, z), _trailing(w, z)
        return jnp.sum(w / (z[..., None] - a), axis=-1)

    def psi(self, z):
        z = _complex(z)
        a, w = _trailing(self.atoms.astype(z.dtype), z), _trailing(self.weights.astype(z.dtype), z)
        return jnp.sum(w * z[..., None] * a / (1 - z[..., None] * a), axis=-1)

    def density(self, x):
        return jnp.zeros_like(jnp.asarray(x, dtype=self.atoms.dtype))

    def zero_mass(self):
        return jnp.sum(jnp.where(self.atoms == 0, self.weights, 0.0))

    def moment(self, k: int):
        return jnp.sum(self.weights * self.atoms**k)


Empirical = Discrete


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

    Example:
        >>> float(FussCatalan(2).moment(2))  # binom(6, 2) / 5
        3.0
    """

    scale: Array
    power: int = eqx.field(static=True)

    def __init__(self, power: int, scale: ArrayLike = 1.0):
        if not (isinstance(power, int) and power >= 1):
            raise ValueError(f"FussCatalan: power must be an integer >= 1, got {power!r}")
        self.power = power
        self.scale = _leaf(scale, "scale")

    def __check_init__(self):
        _positive(self.scale, "FussCatalan: scale")

    def edge(self):
        s = self.power
        return self.scale * (s + 1) ** (s + 1) / s**s

    def support_bounds(self):
        return jnp.zeros_like(self.scale), jax.lax.stop_gradient(self.edge())

    def moment(self, k: int):
        s = self.power
        return self.scale**k * (math.comb((s + 1) * k, k) / (s * k + 1))

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
        sol = root(lambda p, a: self._x_of_phi(p) - a, 0.5 * (lo + hi), yv, throw=False, rtol=1e-13, atol=1e-15,
                   max_steps=20, name="Fuss-Catalan angle")
        return sol.value

    def density(self, x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(float)
        s = self.power
        y = x / self.scale
        inside = (y > 0) & (y < (s + 1) ** (s + 1) / s**s)
        ys = jnp.where(inside, y, 1.0)

        phi = _vmap_method(self, "_phi_one", ys)
        rho = jnp.sin(phi) ** 2 * jnp.sin(s * phi) ** (s - 1) / (math.pi * jnp.sin((s + 1) * phi) ** s)
        return jnp.where(inside, rho / self.scale, 0.0)

    def stieltjes(self, z, *, n_heights: int = 30):
        z = _complex(z)
        check_z_off_support(z, 0.0, self.edge())
        return _vmap_method(self, "_g_one", z, static=(n_heights,))

    def _g_one(self, zz, n_heights):
        s = self.power
        top = 10 * jax.lax.stop_gradient(self.edge()).astype(zz.real.dtype)

        def eq(w, a):
            u, sc = a
            return w - 1 - sc * u * w ** (s + 1)

        sign = jnp.where(jnp.imag(zz) < 0, -1.0, 1.0).astype(top.dtype)
        heights = _heights(top, jnp.abs(jnp.imag(zz)), n_heights)

        def step(w, h):
            u = 1 / jax.lax.complex(jnp.real(zz), sign * h)
            sol = root(eq, w, (u, self.scale.astype(zz.dtype)), throw=False, name="Fuss-Catalan Stieltjes")
            return sol.value, sol.ok

        w, _ = jax.lax.scan(step, jnp.ones((), zz.dtype), heights)
        return w / zz


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

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.linspace(-2, 2, 401)
        >>> g = GridDensity(x, jnp.sqrt(4 - x**2)).stieltjes(jnp.array(3.0 + 0j))
    """

    x: Array
    values: Array

    def __init__(self, x: ArrayLike, values: ArrayLike):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(float)
        v = jnp.asarray(values).astype(x.dtype)
        if x.ndim != 1 or x.shape != v.shape or x.shape[0] < 2:
            raise ValueError(f"GridDensity: x and values must be 1-d of equal length >= 2, got {x.shape}, {v.shape}")
        xc, vc = concrete(x), concrete(v)
        if xc is not None and not np.all(np.diff(xc) > 0):
            raise ValueError("GridDensity: x must be strictly increasing")
        if vc is not None and (np.any(vc < 0) or not np.all(np.isfinite(vc))):
            raise ValueError("GridDensity: values must be finite and >= 0")
        mass = jnp.sum(0.5 * (v[1:] + v[:-1]) * jnp.diff(x))
        mc = concrete(mass)
        if mc is not None and not mc > 0:
            raise ValueError("GridDensity: the density has zero mass")
        self.x = x
        self.values = v / mass

    def support_bounds(self):
        return jax.lax.stop_gradient(self.x[0]), jax.lax.stop_gradient(self.x[-1])

    def stieltjes(self, z):
        z = _complex(z)
        x0, x1 = self.x[:-1].astype(z.dtype), self.x[1:].astype(z.dtype)
        f0, f1 = self.values[:-1].astype(z.dtype), self.values[1:].astype(z.dtype)
        x0, x1, f0, f1 = (_trailing(v, z) for v in (x0, x1, f0, f1))
        beta = (f1 - f0) / (x1 - x0)
        zz = z[..., None]
        fz = f0 + beta * (zz - x0)
        return jnp.sum(fz * (jnp.log(zz - x0) - jnp.log(zz - x1)) - beta * (x1 - x0), axis=-1)

    def density(self, x):
        return jnp.interp(jnp.asarray(x), self.x, self.values, left=0.0, right=0.0)

    def moment(self, k: int):
        # Gauss-Legendre with k//2 + 2 nodes per segment integrates t^k (linear f) exactly
        t, w = np.polynomial.legendre.leggauss(k // 2 + 2)
        x0, x1 = self.x[:-1, None], self.x[1:, None]
        f0, f1 = self.values[:-1, None], self.values[1:, None]
        u = jnp.asarray(0.5 * (t + 1))[None, :]
        tt = x0 + (x1 - x0) * u
        ff = f0 + (f1 - f0) * u
        return jnp.sum(0.5 * (x1 - x0) * jnp.asarray(w)[None, :] * ff * tt**k)
