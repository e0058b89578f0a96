r"""Free additive and multiplicative convolution by subordination.

**Additive** (Biane 1998; Belinschi & Bercovici 2007, "A new approach to subordination results in
free probability", Thm. 4.1). For :math:`\rho = \mu_1^{\boxplus n_1}\boxplus\dots\boxplus
\mu_k^{\boxplus n_k}` and :math:`z\in\mathbb C^+` there are analytic self-maps :math:`\omega_i` of
:math:`\mathbb C^+` with :math:`G_\rho(z) = G_{\mu_i}(\omega_i(z))` for every :math:`i` and
:math:`\sum_i n_i\omega_i = z + (\sum_i n_i - 1)F_\rho(z)`, :math:`F = 1/G`. With
:math:`h_i(w) = F_{\mu_i}(w) - w` this is the fixed point

.. math::
    \omega_i = z + \sum_j n_j h_j(\omega_j) - h_i(\omega_i),

which for :math:`k = 2`, :math:`n = (1, 1)` is Belinschi-Bercovici's
:math:`\omega_1 = z + h_{\mu_2}(z + h_{\mu_1}(\omega_1))` (both steps at once).

**Multiplicative** (Biane 1998; Belinschi & Bercovici 2007, Thm. 4.1), for measures on
:math:`[0,\infty)`: with :math:`\eta_\mu(z) = \psi_\mu/(1+\psi_\mu) = 1 - z/G_\mu(1/z)` and
:math:`h_i(w) = \eta_{\mu_i}(w)/w`, :math:`\eta_\rho(z) = \eta_{\mu_i}(\omega_i(z))` and
:math:`\prod_i\omega_i^{n_i} = z\,\eta_\rho(z)^{\sum n_i - 1}`, i.e.

.. math::
    \omega_i = z\,\frac{\prod_j h_j(\omega_j)^{n_j}}{h_i(\omega_i)},\qquad
    G_\rho(x) = \frac{1}{x\,(1 - \eta_\rho(1/x))}.

For :math:`k = 2`, :math:`n = (1, 1)` this is :math:`\omega_1 = z\,h_{\mu_2}(z\,h_{\mu_1}(\omega_1))`.
Repeated products compose: :func:`free_multiplicative_power` of a product multiplies its powers
(an :math:`L`-layer product has as many unknowns as distinct factors, not :math:`L`).

**Solving.** Each point is solved by Newton's method (:func:`rmtjax.solve.fixed_point`, complex
unknowns as real/imaginary pairs, implicit differentiation in the measures' parameters and in
``z``), continued from :math:`x + iH` (:math:`H` ten times the spectrum's scale, where
:math:`\omega` is close to its asymptote) down to the requested height over ``n_heights``
geometric steps, each warm-started from the previous one; the physical branch
(:math:`\operatorname{Im}\omega_i` of the sign of :math:`\operatorname{Im}z`) is checked. Because
:math:`\operatorname{Im}\omega_i(x + i0) > 0` inside the bulk, the density can be read at tiny
:math:`\eta` without the :math:`O(\eta)` smoothing bias of a plain Stieltjes inversion.

**Validation and the physical branch.** Points must be finite (``ValueError`` otherwise, eagerly
or under ``jit``); a point is ``ok`` only where Newton converged to finite subordination functions
on their physical branch (:math:`\operatorname{Im}\omega_i \ge \operatorname{Im}z` for
:math:`\boxplus`, :math:`\operatorname{Im}\omega_i \le 0` at :math:`1/z` for :math:`\boxtimes`)
with :math:`\operatorname{Im}G \le 0` above the axis, and a real point only outside the support.
``throw=True`` raises where a point is not ok (compiled in under ``jit``), ``throw=False`` reports
it in ``ok``. Tolerances scale with the dtype (float32 works; the default heights too).

**Moments** are exact and differentiable from power series: :math:`R`-transform coefficients
(free cumulants) add for :math:`\boxplus`, :math:`S`-transform series multiply for
:math:`\boxtimes` (series reversion, Mingo & Speicher 2017, ch. 2). :meth:`moments_by_contour`
computes them instead from the subordination solution on a circle (trapezoidal rule), an
independent route used in the tests.

Example:
    >>> import jax.numpy as jnp
    >>> from rmtjax.rmt import MarchenkoPastur, Semicircle
    >>> rho = free_additive_convolution(Semicircle(1.0), Semicircle(2.0))  # = Semicircle(3.0)
    >>> d = rho.density(jnp.linspace(-3.0, 3.0, 7))
    >>> fc = free_multiplicative_power(MarchenkoPastur(1.0, 1.0), 3)  # Fuss-Catalan of order 3
    >>> m = fc.moments(3)  # [1, 4, 22]
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._validate import ArgumentError, concrete, error_if, flag, real, reraise_as_value_error, static_int
from ..solve import Newton, fixed_point
from ._checks import as_complex, cdtype, describe_points, eps, finish, points, static_number, tolerances
from ._measures import AbstractMeasure, _all_finite, _heights, _lorentz

__all__ = [
    "FreeAdditiveConvolution",
    "FreeDensity",
    "FreeMultiplicativeConvolution",
    "free_additive_convolution",
    "free_additive_power",
    "free_multiplicative_convolution",
    "free_multiplicative_power",
]

_SERIES_ORDER = 16  # moments used for scale estimates


# ----------------------------------------------------------------------------------------
# Truncated power series (coefficient arrays c[0..K])
# ----------------------------------------------------------------------------------------


def _mul(a, b):
    return jnp.convolve(a, b)[: a.shape[0]]


def _reciprocal(a):
    r"""1 / a for a[0] != 0: :math:`b_n = -\sum_{j=1}^n a_jb_{n-j}/a_0` (a loop, not unrolled:
    compiles in constant time)."""
    b0 = jnp.zeros_like(a).at[0].set(1 / a[0])

    def body(n, b):  # b[n] is still 0, so the full convolution at n is the sum over j >= 1
        return b.at[n].set(-jnp.convolve(a, b)[n] / a[0])

    return jax.lax.fori_loop(1, a.shape[0], body, b0)


def _reverse(a):
    r"""Compositional inverse g of f = sum_{k>=1} a_k z^k (a[0] = 0, a[1] != 0): f(g(w)) = w, by
    Lagrange inversion, :math:`g_n = \frac1n[z^{n-1}]h(z)^n` with :math:`h = z/f(z)`."""
    K = a.shape[0]
    h = _reciprocal(jnp.concatenate([a[1:], jnp.zeros((1,), a.dtype)]))

    def body(n, carry):
        pw, g = carry
        pw = _mul(pw, h)
        return pw, g.at[n].set(pw[n - 1] / n)

    one = jnp.zeros_like(a).at[0].set(1.0)
    return jax.lax.fori_loop(1, K, body, (one, jnp.zeros_like(a)))[1]


def _moment_series(measure: AbstractMeasure, K: int):
    """``[1, m_1, ..., m_K]``."""
    if isinstance(measure, FreeAdditiveConvolution | FreeMultiplicativeConvolution):
        m = measure._series_moments(K)
    else:
        m = jnp.stack([measure._moment(k) for k in range(1, K + 1)])
    return jnp.concatenate([jnp.ones((1,), m.dtype), m])


def _s_series(m):
    """S-transform series from ``[1, m_1..m_K]`` (m_1 != 0): S = (1 + w) chi(w) / w."""
    psi = m.at[0].set(0.0)
    chi = _reverse(psi)
    chi_over_w = jnp.concatenate([chi[1:], jnp.zeros((1,), chi.dtype)])
    return chi_over_w + jnp.concatenate([jnp.zeros((1,), chi.dtype), chi_over_w[:-1]])


def _moments_from_s(s):
    """Inverse of :func:`_s_series`: chi = w S / (1 + w), psi = chi^{-1}."""
    K = s.shape[0]
    geo = jnp.asarray((-1.0) ** np.arange(K)).astype(s.dtype)  # 1 / (1 + w)
    chi = jnp.concatenate([jnp.zeros((1,), s.dtype), _mul(s, geo)[:-1]])
    return _reverse(chi).at[0].set(1.0)


def _cumulant_series(m):
    """Free cumulants [1, k_1..k_K] from [1, m_1..m_K]: M(z) = C(z M(z))."""
    f = jnp.concatenate([jnp.zeros((1,), m.dtype), m[:-1]])  # z M(z)
    g = _reverse(f)
    # C(w) = M(g(w)) = w / g(w)
    g_over_w = jnp.concatenate([g[1:], jnp.zeros((1,), g.dtype)])
    return _reciprocal(g_over_w)


def _moments_from_cumulants(c):
    """Inverse of :func:`_cumulant_series`: f^{-1}(w) = w / C(w), M = f / z."""
    c = c.at[0].set(1.0)
    inv = jnp.concatenate([jnp.zeros((1,), c.dtype), _reciprocal(c)[:-1]])
    f = _reverse(inv)
    return jnp.concatenate([f[1:], jnp.zeros((1,), f.dtype)]).at[-1].set(jnp.nan)


def _pow_traced(a, n):
    r"""``a ** n`` for a series with ``a[0] > 0`` and a real (traced) exponent ``n``:
    :math:`a_0^n\exp(n\log(a/a_0))`, with the series logarithm and exponential by their
    recurrences (:math:`m g_m = m r_m - \sum_{k<m} k g_k r_{m-k}`, :math:`m e_m = \sum_{k\le m}
    k\,(ng)_k e_{m-k}`)."""
    K = a.shape[0]
    r = a / a[0]
    ks = jnp.arange(K).astype(a.dtype)

    def log_body(m, g):  # g[m] is still 0: the convolution at m sums k < m
        return g.at[m].set(r[m] - jnp.convolve(ks * g, r)[m] / m)

    lg = n * jax.lax.fori_loop(1, K, log_body, jnp.zeros_like(a))

    def exp_body(m, e):
        return e.at[m].set(jnp.convolve(ks * lg, e)[m] / m)

    e = jax.lax.fori_loop(1, K, exp_body, jnp.zeros_like(a).at[0].set(1.0))
    return a[0] ** n * e


def _dtype(measures):
    leaves = [x for x in jax.tree_util.tree_leaves(measures) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def _additive_series(measures, n, K):
    c = sum(n[i] * _cumulant_series(_moment_series(m, K + 1)).at[0].set(0.0) for i, m in enumerate(measures))
    return _moments_from_cumulants(c)[1 : K + 1]


def _multiplicative_series(measures, n, K):
    # each factor is rescaled to mean 1 where it can be (the S-series divides by powers of the mean,
    # which over- or underflow for means far from 1); the product's moments scale back by
    # prod_i mean_i^(n_i k), taken in logarithms (inf or 0 where the true value over/underflows)
    s, log_scale = None, 0.0
    for i, m in enumerate(measures):
        m1 = jax.lax.stop_gradient(m._moment(1))
        scaled = m._rescaled(1 / m1)
        if scaled is None:
            scaled, m1 = m, jnp.ones_like(m1)
        f = _pow_traced(_s_series(_moment_series(scaled, K + 1)), n[i])
        # (m1 is held constant: the rescaled factor's leaves carry the whole derivative, by homogeneity)
        log_scale = log_scale + n[i] * jnp.log(m1)
        s = f if s is None else _mul(s, f)
    mom = _moments_from_s(s)[1 : K + 1]
    ks = jnp.arange(1, K + 1).astype(mom.dtype)
    return mom * jnp.exp(ks * log_scale)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _series_jit(fn, measures, n, K):
    """Moments ``m_1..m_K`` of a convolution from power series, compiled once per kind, factor
    structure and ``K`` (the powers ``n`` are traced: every depth shares one program)."""
    return fn(measures, n, K)


# ----------------------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------------------

MAX_ORDER = 32  # moments of a convolution come from series reversion: O(order^3) work


class FreeDensity(NamedTuple):
    r"""Density of a free convolution on a grid.

    Attributes:
        density: continuous part, :math:`-\operatorname{Im}G(x+i\eta)/\pi` minus the Lorentzian of
            the atom at 0.
        stieltjes: :math:`G(x + i\eta)`.
        zero_mass: mass of the atom at 0.
        ok: per point: converged on the physical branch.
    """

    density: Array
    stieltjes: Array
    zero_mass: Array
    ok: Array


def _check_powers(measures, powers):
    if not (isinstance(measures, tuple) and measures and all(isinstance(m, AbstractMeasure) for m in measures)):
        raise ArgumentError(f"measures must be a non-empty tuple of rmtjax.rmt measures, got {measures!r:.120}")
    if not (isinstance(powers, tuple) and len(powers) == len(measures)):
        raise ArgumentError(f"powers must be a tuple of integers >= 1, one per measure, got {powers!r:.80}")
    return tuple(static_int(n, "powers", lo=1, hi=10**6) for n in powers)


def _default_eta(x, scale):
    r"""Height :math:`r|x| + a s` of the default Stieltjes inversion: :math:`(r, a) = (10^{-9}, 10^{-13})`
    in float64 and :math:`(10^{-6}, 10^{-9})` in float32 (where the solve is accurate to
    :math:`\sim 10^{-5}` anyway and smaller heights only cost accuracy at the edges)."""
    r, a = (1e-9, 1e-13) if eps(x.dtype) < 1e-10 else (1e-6, 1e-9)
    return r * jnp.abs(x) + a * scale.astype(x.dtype)


def _continue(step, omega0, heights):
    """Warm-started solves along ``heights``: the last solution, its flag, and the solution one
    height above. A step whose solution is not finite (an overflow far from the support, seen in
    float32 at 1/x for x = 1e4) is not carried on: the next height starts from the last finite one."""

    def body(carry, h):
        omega, _ = carry
        new, ok = step(omega, h)
        new = jnp.where(jnp.all(jnp.isfinite(new)), new, omega)
        return (new, omega), ok

    (omega, prev), oks = jax.lax.scan(body, (omega0, omega0), heights)
    return omega, oks[-1], prev


def _on_axis_ok(z, prev):
    """A real ``z`` is accepted only outside the support: there the solution just above the axis is
    (numerically) real. On the support the limit from above has Im(omega) != 0 and the real fixed
    point that Newton may find at Im z = 0 is not the physical one."""
    tol = max(1e-7, 1000 * eps(prev.dtype))
    tiny = jnp.finfo(prev.real.dtype).tiny
    return (jnp.imag(z) != 0) | jnp.all(jnp.abs(jnp.imag(prev)) <= tol * (jnp.abs(prev) + tiny))


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _solve_points(solve_one, measures, n, scale, flat, n_heights, max_steps):
    return jax.vmap(lambda z: solve_one(measures, n, scale, z, n_heights, max_steps))(flat)


def _physical_g(z, g, ok):
    """``ok`` and G finite with Im G <= 0 for Im z >= 0 (z already in the upper half-plane)."""
    rtol, _ = tolerances(g.dtype)
    return ok & jnp.isfinite(g) & (jnp.imag(g) <= 10 * rtol * jnp.abs(g))


_NOT_OK = ("subordination found no converged solution on the physical branch (Im G <= 0 above the axis) at "
           "these z: a real z must lie outside the support (use x + 1j * eta, eta > 0); otherwise raise n_heights "
           "or max_steps, or pass throw=False to read ok per point")


class _AbstractFree(AbstractMeasure):
    measures: tuple
    powers: tuple = eqx.field(static=True)
    n_heights: int = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __init__(self, measures, powers, *, n_heights: int = 32, max_steps: int = 200):
        powers = _check_powers(measures, powers)
        self.measures = self._check_factors(measures)
        self.powers = powers
        self.n_heights = static_int(n_heights, "n_heights", lo=2, hi=10_000)
        self.max_steps = static_int(max_steps, "max_steps", lo=1, hi=10**6)

    def _check_factors(self, measures):
        return measures

    def moment(self, k: int):
        k = static_int(k, "k", lo=0, hi=MAX_ORDER)
        return self._moment(k)

    def _moment(self, k: int):
        return self._series_moments(max(k, 1))[k - 1] if k >= 1 else jnp.ones(())

    def moments(self, order: int):
        order = static_int(order, "order", lo=1, hi=MAX_ORDER)
        return self._series_moments(order)

    def _n(self):
        """The powers as a float array: traced by the compiled cores, so every depth shares them."""
        return np.asarray(self.powers, dtype=_dtype(self.measures))

    def _core_args(self):
        """The arguments of the module-level compiled cores: the kind of convolution, the factors, the
        powers as an array (not the static field: one compilation for every depth), the static options."""
        return type(self), self.measures, self._n(), self.n_heights, self.max_steps

    def _series_moments(self, K: int):
        return self._c_series(self.measures, self._n(), K)

    def _run(self, z):
        return self._c_run(self.measures, self._n(), self.n_heights, self.max_steps, z)

    def _run_g(self, z):
        return self._c_run_g(self.measures, self._n(), self.n_heights, self.max_steps, z)

    def zero_mass(self):
        return self._c_zero_mass(self.measures)

    def _scale(self):
        return self._c_scale(self.measures, self._n())

    def _reach(self):
        return self._c_reach(self.measures, self._n())

    @classmethod
    def _c_zero_mass(cls, measures):
        return jnp.zeros(())

    @classmethod
    def _c_run(cls, measures, n, n_heights, max_steps, z):
        """(omega, G, ok) at complex points ``z`` (any shape), unvalidated; compiled once per kind of
        convolution, factor structure and grid shape: the powers and the scale are traced arrays,
        so every depth L reuses one compilation."""
        flat, nz, scale = _run_prepare(cls, measures, n, z)
        omega, g, ok = _solve_points(cls._solve_one, measures, nz, scale, flat, n_heights, max_steps)
        return _unflatten(z.shape, omega, g, ok)

    @classmethod
    def _c_run_g(cls, measures, n, n_heights, max_steps, z):
        """``(G, ok)`` at complex points ``z``: the subordination solve, except far from the support
        (:math:`|z| > 8\\,\\mathrm{reach}`), where the moment series
        :math:`G(z) = \\sum_{k\\ge0} m_k z^{-k-1}` (all ``_SERIES_ORDER`` moments, truncation error
        :math:`\\sim 8^{-16} \\approx 3\\cdot10^{-15}` relative) gives G directly. There :math:`G\\approx 1/z`
        and the continuation in float32 left its tolerance (measured: ReLU Jacobian law, L = 2, reach
        11: NaN at x = 1e4 under XLA -O0, a finite value marked not-ok with XLA's defaults). The solver
        gets a harmless point (``i * reach``) in place of a far one, so no NaN of the discarded branch
        reaches a gradient."""
        far, safe, m, (flat, nz, scale) = _g_prepare(cls, measures, n, z)
        _, g, ok = _solve_points(cls._solve_one, measures, nz, scale, flat, n_heights, max_steps)
        return _g_finish(z, far, safe, m, g, ok)

    def _stieltjes(self, z):
        return self._run_g(z)[0]

    @reraise_as_value_error
    def solve(self, z: ArrayLike, *, throw: bool = True):
        r"""Subordination functions at ``z`` (finite, any shape): ``(omega, ok)``, ``omega`` of shape
        ``z.shape + (k,)`` (complex; for the multiplicative case at the point :math:`1/z`); ``ok``
        per point (converged on the physical branch). ``throw=True`` raises where a point is not
        ok."""
        throw = flag(throw, "throw")
        z = as_complex(points(z, "z"))
        omega, _, ok = self._run(z)
        omega = finish(omega, ok, throw=throw, eager=f"{type(self).__name__}: {_NOT_OK}", at=describe_points(z))
        return omega, ok

    @reraise_as_value_error
    def stieltjes(self, z: ArrayLike, *, throw: bool = True) -> Array:
        r""":math:`G(z)` at finite ``z`` (any shape) by subordination; ``throw=True`` raises where a
        point is not on the physical branch (``throw=False``: such points are unchecked; use
        :meth:`solve` or :meth:`density_on_grid` for the per-point ``ok``)."""
        throw = flag(throw, "throw")
        z = as_complex(points(z, "z"))
        g, ok = self._run_g(z)
        return finish(g, ok, throw=throw, eager=f"{type(self).__name__}: {_NOT_OK}", at=describe_points(z))

    @reraise_as_value_error
    def density_on_grid(self, x: ArrayLike, *, eta: ArrayLike | None = None, throw: bool = True) -> FreeDensity:
        r"""Density at real points ``x`` (finite, any shape) from :math:`G(x + i\eta)`; ``eta`` (a
        positive scalar or one height per point) defaults to :math:`10^{-9}|x| + 10^{-13}s` in
        float64 (:math:`10^{-6}|x| + 10^{-9}s` in float32) with :math:`s` the spectrum's scale:
        relative to :math:`x`, so that a density diverging at 0 (products of Marchenko-Pastur
        laws: :math:`\rho(x)\sim x^{-L/(L+1)}`) is read accurately at small :math:`x` (an absolute
        :math:`10^{-9}s` read :math:`\mathrm{MP}^{\boxtimes 16}` 26% too high at :math:`x = 10^{-7}`;
        this default is within 3e-5 of the exact Fuss-Catalan density there). The
        subordination functions stay off the axis in the bulk, so the bias is negligible; at an
        edge the density is read at :math:`\eta` and stays finite and non-negative. ``throw=True``
        raises where a point is not on the physical branch; ``throw=False`` reports it in ``ok``."""
        throw = flag(throw, "throw")
        x = points(x, "x", complex_ok=False)
        if eta is not None:
            eta = real(eta, "eta", lo=0.0, lo_open=True)
            if eta.ndim and eta.shape != x.shape:
                raise ArgumentError(f"eta must be a scalar or have the shape of x {x.shape}, got shape {eta.shape}")
        kind, measures, n, n_heights, max_steps = self._core_args()
        eta, z, far, safe, m, (flat, nz, scale) = _density_prepare(kind, measures, n, x, eta)
        _, g, ok = _solve_points(kind._solve_one, measures, nz, scale, flat, n_heights, max_steps)
        out = _density_finish(kind, measures, x, eta, z, far, safe, m, g, ok)
        ok = out.ok
        return finish(out, ok, throw=throw, eager=f"{type(self).__name__}: {_NOT_OK.replace('these z', 'x + 1j * eta')}",
                      at=describe_points(x))

    def _density(self, x):
        return self.density_on_grid(x).density

    @reraise_as_value_error
    def density(self, x: ArrayLike) -> Array:
        r"""Density of the absolutely continuous part at real ``x`` (finite; atoms excluded):
        :meth:`density_on_grid` at its default height (eagerly, not under the measures' jitted
        method core, so that a failing point is named)."""
        x = points(x, "x", complex_ok=False)
        return _all_finite(self.density_on_grid(x).density, "density is not finite at this x (x must be a finite "
                                                             "real point)")

    @reraise_as_value_error
    def moments_by_contour(self, order: int, *, n_points: int = 64, radius: float = 0.5) -> Array:
        r""":math:`m_1..m_\mathrm{order}` from the subordination solution: the Taylor coefficients of
        :math:`\psi(u) = \sum_k m_ku^k` (multiplicative) or :math:`u\,G(1/u) = \sum_k m_ku^k`
        (additive, centred at 0) by the trapezoidal rule on :math:`|u| = r`, with
        :math:`r = \mathrm{radius}/\lambda_\mathrm{est}` (aliasing error
        :math:`\sim\mathrm{radius}^{n_\mathrm{points}}`). ``order`` in ``[1, 32]``, ``n_points`` in
        ``[8, 4096]`` (static), ``radius`` in ``(0, 1)`` (static)."""
        order = static_int(order, "order", lo=1, hi=MAX_ORDER)
        n_points = static_int(n_points, "n_points", lo=8, hi=4096)
        radius = static_number(radius, "radius", lo=0.0, hi=0.999)
        kind, measures, n, n_heights, max_steps = self._core_args()
        x, r, (flat, nz, scale) = _contour_prepare(kind, measures, n, n_points, radius)
        _, g, ok = _solve_points(kind._solve_one, measures, nz, scale, flat, n_heights, max_steps)
        coef = _contour_finish(x, r, g, order, n_points)
        return finish(coef, ok, throw=True, eager=f"moments_by_contour: the subordination solve failed on the "
                      "contour; a smaller radius keeps it farther from the support")

    @classmethod
    def _c_scale(cls, measures, n, m=None):
        # the first two of the _SERIES_ORDER moments that _reach uses (lower coefficients of a power
        # series do not depend on the truncation): one compiled series per factor structure, not two
        # (``m``: those moments where the caller has them, so that a program computes the series once)
        m = cls._c_series(measures, n, _SERIES_ORDER) if m is None else m
        m = jax.lax.stop_gradient(m)[:2]
        return jnp.abs(m[0]) + jnp.sqrt(jnp.abs(m[1] - m[0] ** 2)) + jnp.finfo(m.dtype).tiny

    @classmethod
    def _c_reach(cls, measures, n, m=None):
        """Estimate of max |t| on the support, from the moment series (ratio test; ``m``: the series'
        ``_SERIES_ORDER`` moments where the caller has them)."""
        # two-step ratio m_K / m_{K-2} -> reach^2 (1 - 3/K): also for a symmetric measure, whose odd
        # moments vanish (the one-step ratio m_K / m_{K-1} divided by zero there: semicircle + semicircle
        # gave an infinite reach); the root test is the floor, and covers m_{K-2} = 0
        K = _SERIES_ORDER
        m = jax.lax.stop_gradient(cls._c_series(measures, n, K) if m is None else m)
        den = jnp.abs(m[K - 3])
        ratio = jnp.sqrt(jnp.abs(m[K - 1]) / jnp.where(den > 0, den, 1.0)) / (1 - 1.5 / (K - 1))
        return jnp.maximum(jnp.where(den > 0, ratio, 0.0), jnp.abs(m[K - 1]) ** (1.0 / K))


# The steps before and after the compiled solve (_solve_points), jitted: eagerly they ran as
# one-operation programs (the additive density_on_grid: 59 on the first call, the multiplicative one
# 72; measured 2026-12-07). Not one program around the solve: each public method would then compile
# its own copy of the solve, which they now share. The powers are a traced array
# (``_AbstractFree._core_args``), so every depth shares these programs too.


def _run_prepare_body(kind, measures, n, z, m=None):
    flat = z.reshape(-1)
    scale = _finite_scale(kind._c_solve_scale(measures, n, m), "spectrum's scale")
    return flat, n.astype(flat.real.dtype), scale


def _g_prepare_body(kind, measures, n, z, m=None):
    K = _SERIES_ORDER
    m = kind._c_series(measures, n, K) if m is None else m
    # (a reach that overflows the dtype, e.g. float32 moments of a large variance, leaves every point to the
    # solver, whose own scale is checked there)
    reach = kind._c_reach(measures, n, m).astype(z.real.dtype)
    known = jnp.isfinite(reach) & (reach > 0)
    reach = jnp.where(known, reach, jnp.ones_like(reach))
    far = known & (jnp.abs(z) > 8 * reach)
    safe = jax.lax.complex(jnp.zeros_like(reach), reach).astype(z.dtype)
    return far, safe, m, _run_prepare_body(kind, measures, n, jnp.where(far, safe, z), m)


def _g_finish_body(z, far, safe, m, g, ok):
    g, ok = g.reshape(z.shape), ok.reshape(z.shape)
    w = 1 / jnp.where(far, z, 1 / safe)  # 1/z at far points
    coef = jnp.concatenate([jnp.ones((1,), m.dtype), m]).astype(z.dtype)
    g_far = w * jnp.polyval(coef[::-1], w)  # sum_k m_k w^(k+1), Horner in w
    return jnp.where(far, g_far, g), far | ok


_run_prepare = eqx.filter_jit(_run_prepare_body)
_g_prepare = eqx.filter_jit(_g_prepare_body)
_g_finish = eqx.filter_jit(_g_finish_body)


@functools.partial(jax.jit, static_argnums=0)
def _unflatten(shape, omega, g, ok):
    return omega.reshape(shape + omega.shape[-1:]), g.reshape(shape), ok.reshape(shape)


@eqx.filter_jit
def _density_prepare(kind, measures, n, x, eta):
    m = kind._c_series(measures, n, _SERIES_ORDER)
    if eta is None:
        eta = _default_eta(x, kind._c_scale(measures, n, m))
    eta = jnp.broadcast_to(eta.astype(x.dtype), x.shape)
    z = jax.lax.complex(x, eta)
    return (eta, z, *_g_prepare_body(kind, measures, n, z, m))


@eqx.filter_jit
def _density_finish(kind, measures, x, eta, z, far, safe, m, g, ok):
    g, ok = _g_finish_body(z, far, safe, m, g, ok)
    zm = kind._c_zero_mass(measures).astype(x.dtype)
    dens = jnp.maximum(-jnp.imag(g) / math.pi - zm * _lorentz(x, eta), 0.0)
    return FreeDensity(dens, g, zm, ok)


@eqx.filter_jit
def _contour_prepare(kind, measures, n, n_points, radius):
    theta = 2 * math.pi * (np.arange(n_points) + 0.5) / n_points
    m = kind._c_series(measures, n, _SERIES_ORDER)
    r = radius / _finite_scale(kind._c_reach(measures, n, m), "support's reach (ratio test on the moments)")
    cdt = cdtype(r.dtype)
    u = r.astype(cdt) * jnp.asarray(np.exp(1j * theta), cdt)
    x = 1 / u
    return x, r, _run_prepare_body(kind, measures, n, x, m)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _contour_finish(x, r, g, order, n_points):
    theta = 2 * math.pi * (np.arange(n_points) + 0.5) / n_points
    cdt = x.dtype
    series = g * x - 1  # sum_{k>=1} m_k u^k for both cases
    ks = np.arange(1, order + 1)
    phase = jnp.asarray(np.exp(-1j * np.outer(ks, theta)), cdt)
    coef = jnp.mean(series[None, :] * phase, axis=1) / r.astype(cdt) ** jnp.asarray(ks, cdt)
    return jnp.real(coef)


def _finite_scale(x, what: str):
    """``x`` (a scale estimated from the moment series), or a ``ValueError`` where it overflowed."""
    return error_if(x, ~jnp.isfinite(x),
                    f"the convolution's {what} overflows {x.dtype.name}: the measures' parameters (ratio, variance, "
                    "mean, atoms) are too large for this dtype; rescale them")


class FreeAdditiveConvolution(_AbstractFree):
    r""":math:`\mu_1^{\boxplus n_1}\boxplus\dots\boxplus\mu_k^{\boxplus n_k}` (module docstring).

    Attributes:
        measures: tuple of measures (leaves differentiable). powers: tuple of ints ``>= 1`` (static).
        n_heights, max_steps: continuation steps (``>= 2``) and Newton step limit (``>= 1``), static.
    """

    def support_bounds(self):
        lo = sum(n * m.support_bounds()[0] for m, n in zip(self.measures, self.powers))
        hi = sum(n * m.support_bounds()[1] for m, n in zip(self.measures, self.powers))
        return lo, hi

    @classmethod
    def _c_series(cls, measures, n, K: int):
        return _series_jit(_additive_series, measures, n, K)

    @classmethod
    def _c_solve_scale(cls, measures, n, m=None):
        return cls._c_scale(measures, n, m)

    @staticmethod
    def _map(omega, args):
        measures, n, zr, zi = args
        z = jax.lax.complex(zr, zi)
        h = jnp.stack([1 / m._stieltjes(omega[i]) - omega[i] for i, m in enumerate(measures)])
        return z + jnp.sum(n.astype(h.dtype) * h) - h

    @staticmethod
    def _solve_one(measures, n, scale, z, n_heights, max_steps):
        flip = jnp.imag(z) < 0
        z = jnp.where(flip, jnp.conj(z), z)
        scale = scale.astype(z.real.dtype)
        rtol, _ = tolerances(z.dtype)
        m1 = jnp.stack([m.mean() for m in measures]).astype(z.dtype)
        nc = n.astype(z.dtype)
        heights = _heights(10 * scale + jnp.abs(jnp.real(z)), jnp.imag(z), n_heights)

        def step(omega, h):
            sol = fixed_point(FreeAdditiveConvolution._map, omega, (measures, n, jnp.real(z), h), solver=Newton(),
                              max_steps=max_steps, throw=False, name="additive subordination")
            w = sol.value
            # physical branch: Im omega_i >= Im z (the omega_i map C+ into itself, above z)
            ok = sol.ok & jnp.all(jnp.isfinite(w)) & jnp.all(jnp.imag(w) >= h - 10 * rtol * (jnp.abs(w) + scale))
            return w, ok

        top = jax.lax.complex(jnp.real(z), heights[0])
        omega0 = top - (jnp.sum(nc * m1) - m1)
        omega, ok, prev = _continue(step, omega0, heights)
        g = measures[0]._stieltjes(omega[0])
        ok = _physical_g(z, g, ok & _on_axis_ok(z, prev))
        return jnp.where(flip, jnp.conj(omega), omega), jnp.where(flip, jnp.conj(g), g), ok


class FreeMultiplicativeConvolution(_AbstractFree):
    r""":math:`\mu_1^{\boxtimes n_1}\boxtimes\dots\boxtimes\mu_k^{\boxtimes n_k}` for measures on
    :math:`[0, \infty)` with positive mean (module docstring; ``ValueError`` otherwise, eagerly or
    under ``jit``). The atom at 0 has mass :math:`\max_i\mu_i(\{0\})` (Belinschi 2003; Bercovici &
    Voiculescu 1993).

    Attributes:
        measures: tuple of measures (leaves differentiable). powers: tuple of ints ``>= 1`` (static).
        n_heights, max_steps: continuation steps (``>= 2``) and Newton step limit (``>= 1``), static.
    """

    def _check_factors(self, measures):
        out = []
        for i, m in enumerate(measures):
            lo, m1, bad = _factor_domain(m)
            msg = f"measures must live on [0, inf) with a mean > 0 (factor {i}, {type(m).__name__}, does not)"
            b = concrete(bad)
            if b is not None:
                if bool(b):
                    raise ArgumentError(f"{msg}: support down to {float(concrete(lo)):.4g}, mean {float(concrete(m1)):.4g}")
                out.append(m)
            else:
                out.append(error_if(m, bad, msg))
        return tuple(out)

    def support_bounds(self):
        hi = 1.0
        for m, n in zip(self.measures, self.powers):
            hi = hi * m.support_bounds()[1] ** n
        return jnp.zeros_like(hi), jnp.minimum(hi, 4 * self._reach())

    @classmethod
    def _c_zero_mass(cls, measures):
        return jnp.max(jnp.stack([m.zero_mass() for m in measures]))

    @classmethod
    def _c_series(cls, measures, n, K: int):
        return _series_jit(_multiplicative_series, measures, n, K)

    @classmethod
    def _c_solve_scale(cls, measures, n, m=None):
        return cls._c_reach(measures, n, m)

    @staticmethod
    def _h(m, w):
        psi = m._psi(w)
        return psi / (w * (1 + psi))

    @staticmethod
    def _map(omega, args):
        measures, n, ur, ui = args
        u = jax.lax.complex(ur, ui)
        h = jnp.stack([FreeMultiplicativeConvolution._h(m, omega[i]) for i, m in enumerate(measures)])
        return u * jnp.exp(jnp.sum(n.astype(h.dtype) * jnp.log(h))) / h

    @staticmethod
    def _solve_one(measures, n, scale, x, n_heights, max_steps):
        flip = jnp.imag(x) < 0
        x = jnp.where(flip, jnp.conj(x), x)
        scale = scale.astype(x.real.dtype)
        rtol, _ = tolerances(x.dtype)
        m1 = jnp.stack([m.mean() for m in measures]).astype(x.dtype)
        nc = n.astype(x.dtype)
        heights = _heights(10 * scale + jnp.abs(jnp.real(x)), jnp.imag(x), n_heights)

        def step(omega, h):
            u = 1 / jax.lax.complex(jnp.real(x), h)
            sol = fixed_point(FreeMultiplicativeConvolution._map, omega, (measures, n, jnp.real(u), jnp.imag(u)),
                              solver=Newton(), max_steps=max_steps, throw=False, name="multiplicative subordination")
            w = sol.value
            # physical branch: Im omega_i <= 0 at the point 1/x in the lower half-plane
            ok = sol.ok & jnp.all(jnp.isfinite(w)) & jnp.all(jnp.imag(w) <= 10 * rtol * jnp.abs(w))
            return w, ok

        u0 = 1 / jax.lax.complex(jnp.real(x), heights[0])
        omega0 = u0 * jnp.exp(jnp.sum(nc * jnp.log(m1))) / m1
        omega, ok, prev = _continue(step, omega0, heights)
        psi = measures[0]._psi(omega[0])
        g = 1 / (x * (1 - psi / (1 + psi)))
        ok = _physical_g(x, g, ok & _on_axis_ok(x, prev))
        return jnp.where(flip, jnp.conj(omega), omega), jnp.where(flip, jnp.conj(g), g), ok


@eqx.filter_jit
def _factor_domain(m):
    # jitted: eagerly, 18 one-operation programs per MarchenkoPastur factor on the first call (measured 2026-12-07)
    lo, m1 = m.support_bounds()[0], m.mean()
    return lo, m1, (lo < 0) | ~(m1 > 0)


def _flatten(measures, powers, cls):
    out_m, out_p = [], []
    for m, n in zip(measures, powers):
        if isinstance(m, cls):
            out_m += list(m.measures)
            out_p += [n * p for p in m.powers]
        else:
            out_m.append(m)
            out_p.append(n)
    return tuple(out_m), tuple(out_p)


def _check_measure_args(measures):
    if not measures:
        raise ArgumentError("measures: give at least one measure")
    for m in measures:
        if not isinstance(m, AbstractMeasure):
            raise ArgumentError(f"measures must be rmtjax.rmt measures (e.g. MarchenkoPastur(0.5)), got {m!r:.80}")


def free_additive_convolution(*measures: AbstractMeasure, n_heights: int = 32,
                              max_steps: int = 200) -> FreeAdditiveConvolution:
    r""":math:`\mu_1\boxplus\mu_2\boxplus\dots` by subordination (nested convolutions are flattened).

    Example:
        >>> from rmtjax.rmt import Semicircle
        >>> sc = free_additive_convolution(Semicircle(1.0), Semicircle(1.0))  # semicircle, variance 2
        >>> [round(float(m), 4) for m in sc.moments(4)]  # 0, 2, 0, 2 * 2^2
        [0.0, 2.0, 0.0, 8.0]
    """
    _check_measure_args(measures)
    ms, ps = _flatten(measures, (1,) * len(measures), FreeAdditiveConvolution)
    return FreeAdditiveConvolution(ms, ps, n_heights=n_heights, max_steps=max_steps)


def free_additive_power(measure: AbstractMeasure, n: int, *, n_heights: int = 32,
                        max_steps: int = 200) -> FreeAdditiveConvolution:
    r""":math:`\mu^{\boxplus n}` (one unknown: :math:`\omega = z + (n-1)h_\mu(\omega)`; ``n`` a static
    integer ``>= 1``).

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.rmt import Discrete
        >>> N = 200  # free Poisson limit: ((1 - 1/N) delta_0 + (1/N) delta_1)^{boxplus N} -> MP(ratio 1)
        >>> p = free_additive_power(Discrete(jnp.array([0.0, 1.0]), jnp.array([1 - 1 / N, 1 / N])), N)
    """
    if not isinstance(measure, AbstractMeasure):
        raise ArgumentError(f"measure must be an rmtjax.rmt measure (e.g. Semicircle(1.0)), got {measure!r:.80}")
    n = static_int(n, "n", lo=1, hi=10**6)
    ms, ps = _flatten((measure,), (n,), FreeAdditiveConvolution)
    return FreeAdditiveConvolution(ms, ps, n_heights=n_heights, max_steps=max_steps)


def free_multiplicative_convolution(*measures: AbstractMeasure, n_heights: int = 32,
                                    max_steps: int = 200) -> FreeMultiplicativeConvolution:
    r""":math:`\mu_1\boxtimes\mu_2\boxtimes\dots` by subordination, for measures on :math:`[0,\infty)`
    with positive mean.

    Example:
        >>> from rmtjax.rmt import MarchenkoPastur
        >>> rho = free_multiplicative_convolution(MarchenkoPastur(0.5, 1.0), MarchenkoPastur(1.0, 2.0))
    """
    _check_measure_args(measures)
    ms, ps = _flatten(measures, (1,) * len(measures), FreeMultiplicativeConvolution)
    return FreeMultiplicativeConvolution(ms, ps, n_heights=n_heights, max_steps=max_steps)


def free_multiplicative_power(measure: AbstractMeasure, n: int, *, n_heights: int = 32,
                              max_steps: int = 200) -> FreeMultiplicativeConvolution:
    r""":math:`\mu^{\boxtimes n}`; a power of a product multiplies the powers of its factors
    (composition: one unknown per distinct factor, whatever ``n``; ``n`` a static integer ``>= 1``).

    Example:
        >>> from rmtjax.rmt import MarchenkoPastur
        >>> fc = free_multiplicative_power(MarchenkoPastur(1.0, 1.0), 64)
    """
    if not isinstance(measure, AbstractMeasure):
        raise ArgumentError(f"measure must be an rmtjax.rmt measure (e.g. MarchenkoPastur(1.0)), got {measure!r:.80}")
    n = static_int(n, "n", lo=1, hi=10**6)
    ms, ps = _flatten((measure,), (n,), FreeMultiplicativeConvolution)
    return FreeMultiplicativeConvolution(ms, ps, n_heights=n_heights, max_steps=max_steps)
