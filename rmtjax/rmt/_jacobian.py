r"""Singular-value spectrum of the input-output Jacobian of a deep network at initialization.

For :math:`h^\ell = W^\ell x^{\ell-1} + b^\ell`, :math:`x^\ell = \phi(h^\ell)`, width :math:`N`, the
Jacobian is :math:`J = \prod_{\ell=L}^{1}D^\ell W^\ell` with :math:`D^\ell = \operatorname{diag}
\phi'(h^\ell)`. At large width the pre-activations are :math:`\mathcal N(0, q^*)` (mean field,
:func:`rmtjax.meanfield.q_star`) and the :math:`D^\ell, W^\ell` are asymptotically free, so
(Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning through
dynamical isometry", eqs. 8-13; 2018, "The emergence of spectral universality in deep
networks")

.. math::
    \mu_{JJ^\top} = \big(\mu_{WW^\top}\boxtimes\mu_{D^2}\big)^{\boxtimes L},\qquad
    S_{JJ^\top}(w) = S_{WW^\top}(w)^L\,S_{D^2}(w)^L,

with :math:`\mu_{WW^\top}` the Marchenko-Pastur law of ratio 1 and variance :math:`\sigma_w^2`
(Gaussian weights :math:`W_{ij}\sim\mathcal N(0,\sigma_w^2/N)`) or :math:`\delta_{\sigma_w^2}`
(:math:`W = \sigma_w O`, :math:`O` Haar-orthogonal), and :math:`\mu_{D^2}` the law of
:math:`\phi'(h)^2`, :math:`h\sim\mathcal N(0, q^*)` (:func:`derivative_squared_law`: exact atoms for
piecewise-linear activations, e.g. ReLU :math:`\tfrac12\delta_0 + \tfrac12\delta_1`, hard-tanh
:math:`p\delta_1 + (1-p)\delta_0`, :math:`p = \operatorname{erf}(1/\sqrt{2q^*})`; a midpoint
Gaussian quadrature otherwise: the activation's own fact). The product is computed by subordination with one unknown per
distinct factor (:mod:`rmtjax.rmt._free`), whatever the depth.

**Moments.** :math:`m_1(JJ^\top) = \chi^L`, :math:`\chi = \sigma_w^2\mathbb E[\phi'(h)^2]` (Poole
et al.'s :math:`\chi_1`); the normalized variances add under :math:`\boxtimes`
(:math:`S(w) = m_1^{-1}(1 - w\,\sigma^2/m_1^2 + O(w^2))`), so

.. math::
    \frac{\operatorname{Var}(\lambda)}{m_1^2} = L\Big(\frac{\sigma^2_{WW^\top}}{m_1(WW^\top)^2}
    + \frac{\mathbb E[\phi'^4]}{\mathbb E[\phi'^2]^2} - 1\Big),

1 for Gaussian and 0 for orthogonal weights in the first term (Pennington et al. 2017, eq. 17).
Dynamical isometry needs :math:`\chi = 1` and a variance that stays :math:`O(1)`: impossible for
ReLU (:math:`\mathbb E[\phi'^4]/\mathbb E[\phi'^2]^2 = 2`), possible for orthogonal hard-tanh/erf
networks as :math:`q^*\to 0`.

**Edge.** The largest eigenvalue of :math:`JJ^\top` is
:math:`\lambda_{\max} = \min_{w>0}\frac{1+w}{w\,S_{JJ^\top}(w)}` (the critical point of the
inverse of :math:`\psi` on the positive axis; for MP this gives 4, for Fuss-Catalan
:math:`(L+1)^{L+1}/L^L`), found on a grid and refined with :func:`rmtjax.solve.root` jointly
with :math:`\zeta = \psi_{D^2}^{-1}(w)`, so it is differentiable.

Example:
    >>> import jax.numpy as jnp
    >>> from rmtjax.activations import Erf
    >>> spec = jacobian_spectrum(Erf(), 1.5, 0.01, jnp.linspace(0.01, 3.0, 50), depth=8, orthogonal=True)
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._validate import ArgumentError, concrete, error_if, flag, real, reraise_as_value_error, static_int, tie
from ..activations import AbstractActivation, HardTanh
from ..meanfield import q_star
from ..solve import root
from ._checks import check_activation, finish, points, static_number
from ._free import FreeDensity, FreeMultiplicativeConvolution, free_multiplicative_power
from ._measures import Discrete, MarchenkoPastur, PointMass

__all__ = [
    "HardTanh",
    "JacobianSpectrum",
    "derivative_squared_law",
    "jacobian_law",
    "jacobian_q_star",
    "jacobian_spectrum",
    "multiplicative_edge",
]


def _sigmas(sigma_w2, sigma_b2):
    w2 = real(sigma_w2, "sigma_w2", ndim=0, lo=0.0)
    b2 = real(sigma_b2, "sigma_b2", ndim=0, lo=0.0)
    strong = [np.dtype(x.dtype) for x in (w2, b2) if not x.weak_type]
    dt = np.result_type(*strong) if strong else jnp.result_type(float)
    return jnp.asarray(w2, dtype=dt), jnp.asarray(b2, dtype=dt)


@reraise_as_value_error
def jacobian_q_star(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, throw: bool = True):
    r""":math:`q^*` of the length map, reached from :math:`q_0 = 1`: exactly
    :func:`rmtjax.meanfield.q_star` (one fact for every activation: the length map
    :math:`\sigma_w^2\,\phi\texttt{.length\_map}(q) + \sigma_b^2`, closed form where the activation
    has one, e.g. :class:`HardTanh`). (The Jacobian law of the ReLU family does not depend on
    :math:`q^*`, and :func:`jacobian_law` does not compute it for them.)
    ``sigma_w2``, ``sigma_b2``: finite scalars ``>= 0``. ``throw=True`` raises where there is no
    finite fixed point (``throw=False``: ``nan`` there).

    Example:
        >>> from rmtjax.activations import HardTanh
        >>> round(float(jacobian_q_star(HardTanh(), 1.05, 0.05)), 4)
        0.3768
    """
    activation = check_activation(activation)
    w2, b2 = _sigmas(sigma_w2, sigma_b2)
    throw = flag(throw, "throw")
    return q_star(activation, w2, b2, throw=throw).value


def _fmt(x):
    v = concrete(x)
    return "(traced)" if v is None else f"{float(v):.6g}"


@reraise_as_value_error
def derivative_squared_law(activation: AbstractActivation, q: ArrayLike, *, step: float = 0.05,
                           cutoff: float = 9.0) -> Discrete:
    r"""The law of :math:`\phi'(h)^2`, :math:`h\sim\mathcal N(0, q)`, as a :class:`Discrete` measure.

    The activation's own fact (:meth:`rmtjax.activations.AbstractActivation.derivative_squared_law`):
    exact atoms for ReLU (:math:`\frac12\delta_0 + \frac12\delta_1`), leaky/AB-ReLU
    (:math:`\frac12\delta_{a^2} + \frac12\delta_{b^2}`), abs and identity (:math:`\delta_1`), sign
    (:math:`\delta_0`) and :class:`HardTanh` (:math:`p\,\delta_1 + (1-p)\,\delta_0`,
    :math:`p = \operatorname{erf}(1/\sqrt{2q})`); otherwise atoms :math:`\phi'(\sqrt q z_i)^2` at the
    midpoints :math:`z_i = (i + \frac12)\,\mathrm{step}` of ``[-cutoff, cutoff]`` with Gaussian weights
    (exponentially convergent for smooth :math:`\phi`; :math:`O(\mathrm{step}^2)` where :math:`\phi'`
    jumps at 0, as ELU's). Differentiable in ``q`` and the activation's parameters.

    Example:
        >>> from rmtjax.activations import Relu
        >>> law = derivative_squared_law(Relu(), 1.0)  # atoms [0, 1], weights [1/2, 1/2]
    """
    activation = check_activation(activation)
    q = real(q, "q", ndim=0, lo=0.0)
    step = static_number(step, "step", lo=0.0)
    cutoff = static_number(cutoff, "cutoff", lo=0.0, hi=40.0)
    if cutoff / step > 100_000:
        raise ArgumentError(f"cutoff / step must be <= 100000 (the number of quadrature nodes), got {cutoff / step:.3g}")
    return _derivative_squared_law(activation, q, step, cutoff)


@eqx.filter_jit
def _derivative_squared_atoms(activation, q, step, cutoff):
    # jitted (step and cutoff static): eagerly, 7 one-operation programs for Erf on the first call (measured
    # 2026-12-07)
    return activation._derivative_squared_law(q, step, cutoff)


@eqx.filter_jit
def _mean(measure):
    return measure.mean()


_times = jax.jit(jnp.multiply)


def _derivative_squared_law(activation, q, step, cutoff):
    atoms, weights = _derivative_squared_atoms(activation, q, step, cutoff)
    msg = "activation's derivative must be finite at the Gaussian quadrature nodes sqrt(q) z (|z| <= cutoff)"
    ac = concrete(atoms)
    if ac is not None and not np.all(np.isfinite(ac)):
        raise ArgumentError(f"{msg}; got a non-finite value at q = {_fmt(q)}")
    if ac is None:
        atoms = error_if(atoms, ~jnp.all(jnp.isfinite(atoms)), msg)
    return Discrete(atoms, weights)


def _law(activation, w2, b2, depth, orthogonal, step, cutoff):
    """The Jacobian law from validated arguments: ``(rho, q*, law of phi'^2)``."""
    if activation.scale_free_derivative:  # the law of phi'^2 does not depend on q
        mf = q_star(activation, w2, b2, throw=False)
        q = jnp.where(mf.ok, mf.value, jnp.inf)  # inf: the variance grows without bound (q* not needed)
    else:
        q = jacobian_q_star(activation, w2, b2)
    d2 = _derivative_squared_law(activation, q, step, cutoff)
    m1 = _mean(d2)
    msg = ("activation must have E[phi'(h)^2] > 0 at the fixed point (its derivative vanishes almost everywhere: "
           "the Jacobian is 0)")
    mc = concrete(m1)
    if mc is not None and not mc > 0:
        raise ArgumentError(f"{msg}; got {float(mc)!r}")
    if mc is None:
        d2 = error_if(d2, ~(m1 > 0), msg)
    if orthogonal:
        return free_multiplicative_power(Discrete(_times(w2, d2.atoms), d2.weights), depth), q, d2
    return FreeMultiplicativeConvolution((MarchenkoPastur(jnp.ones_like(w2), w2), d2), (depth, depth)), q, d2


def _law_args(activation, sigma_w2, sigma_b2, depth, orthogonal, step, cutoff):
    activation = check_activation(activation)
    w2, b2 = _sigmas(sigma_w2, sigma_b2)
    w2 = real(w2, "sigma_w2", lo=0.0, lo_open=True)  # the law of a zero Jacobian has no positive mean
    w2 = tie(w2, b2)  # a scale-free activation's law does not use b2: its check must still run under jit
    depth = static_int(depth, "depth", lo=1, hi=10**6)
    orthogonal = flag(orthogonal, "orthogonal")
    step = static_number(step, "step", lo=0.0)
    cutoff = static_number(cutoff, "cutoff", lo=0.0, hi=40.0)
    if cutoff / step > 100_000:
        raise ArgumentError(f"cutoff / step must be <= 100000 (the number of quadrature nodes), got {cutoff / step:.3g}")
    return activation, w2, b2, depth, orthogonal, step, cutoff


@reraise_as_value_error
def jacobian_law(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, depth: int,
                 orthogonal: bool = False, step: float = 0.05, cutoff: float = 9.0) -> FreeMultiplicativeConvolution:
    r"""The limiting law of the eigenvalues of :math:`JJ^\top` (squared singular values of
    :math:`J`): :math:`(\mu_{WW^\top}\boxtimes\mu_{D^2})^{\boxtimes L}` (module docstring). For
    orthogonal weights the factor :math:`\delta_{\sigma_w^2}` is folded into the atoms of
    :math:`\mu_{D^2}`. ``sigma_w2 > 0``, ``sigma_b2 >= 0`` (finite scalars); ``depth`` a static
    integer ``>= 1``; ``step``, ``cutoff``: the quadrature of :func:`derivative_squared_law`."""
    args = _law_args(activation, sigma_w2, sigma_b2, depth, orthogonal, step, cutoff)
    return _law(*args)[0]


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _edge_core(ms, ns, n_grid, log_range):
    # compiled once per factor structure: the powers (depth) are traced
    disc = [i for i, m in enumerate(ms) if isinstance(m, Discrete)]

    def top(m):
        return jax.lax.stop_gradient(jnp.max(m.atoms))

    def zeta_of(m, t):  # zeta = sigmoid(t) / max atom: stays inside (0, 1 / max atom), where psi is finite
        return jax.nn.sigmoid(t) / top(m)

    def psi(m, t):
        # zeta a / (1 - zeta a) with r = a / max atom: 1 - zeta a = (1 - r) + r sigmoid(-t), which does
        # not round to 0 where sigmoid(t) rounds to 1 (t > 17 in float32, 37 in float64: psi was
        # inf there and Newton stopped on non-finite values, measured for ReLU, orthogonal, L = 2)
        r = m.atoms / top(m)
        return jnp.sum(m.weights * jax.nn.sigmoid(t) * r / ((1 - r) + r * jax.nn.sigmoid(-t)))

    def log_x(u, ts, args):
        w = jnp.exp(u)
        out = jnp.log1p(w) - u
        for i, m in enumerate(args):
            if isinstance(m, Discrete):
                logs = jnp.log1p(w) - u + jnp.log(zeta_of(m, ts[disc.index(i)]))
            else:
                cw = jax.lax.complex(w, jnp.zeros_like(w))
                logs = jnp.log(jnp.real(m._s_transform(cw)[0]))
            out = out - ns[i] * logs
        return out

    def t_of_u(m, u):  # psi is increasing in t: bisection on t in [-60, 60]
        def body(_, lohi):
            lo, hi = lohi
            mid = 0.5 * (lo + hi)
            big = psi(m, mid) > jnp.exp(u)
            return jnp.where(big, lo, mid), jnp.where(big, mid, hi)

        lo, hi = jax.lax.fori_loop(0, 80, body, (jnp.asarray(-60.0, u.dtype), jnp.asarray(60.0, u.dtype)))
        return 0.5 * (lo + hi)

    dt = ns.dtype
    us = jnp.linspace(-log_range, log_range, n_grid, dtype=dt)
    frozen = jax.lax.stop_gradient(ms)
    tgrid = [jax.vmap(lambda u, i=i: t_of_u(frozen[i], u))(us) for i in disc]
    vals = jax.vmap(lambda u, *t: log_x(u, t, frozen))(us, *tgrid)
    vals = jnp.where(jnp.isfinite(vals), vals, jnp.inf)
    k = jnp.argmin(vals)
    interior = (k > 0) & (k < n_grid - 1)

    def g(y, args):
        u, ts = y[0], y[1:]
        # d/du of log_x along t(u), with psi(t(u)) = e^u: dt/du = e^u / (dpsi/dt)
        total = jax.grad(lambda uu: log_x(uu, ts, args))(u)
        for j, i in enumerate(disc):
            dpsi = jax.grad(lambda tt: psi(args[i], tt))(ts[j])
            dlog = jax.grad(lambda tt: log_x(u, ts.at[j].set(tt), args))(ts[j])
            total = total + dlog * jnp.exp(u) / dpsi
        eqs = [total] + [psi(args[i], ts[j]) - jnp.exp(u) for j, i in enumerate(disc)]
        return jnp.stack(eqs)

    y0 = jnp.stack([us[k]] + [t[k] for t in tgrid])
    sol = root(g, y0, ms, throw=False, name="Jacobian spectrum edge")
    lam = jnp.exp(log_x(sol.value[0], sol.value[1:], ms))
    newton = interior & sol.ok & jnp.isfinite(lam)
    # where Newton fails at an interior grid minimum that is flat to rounding (the infimum is an
    # asymptote of a discrete factor's branch, t -> inf: ReLU, orthogonal, L = 2 has edge 2^L = 4,
    # reached only in the limit; float32 Newton overflows there) the grid value is the edge
    eps = jnp.finfo(dt).eps
    near = jnp.stack([vals[jnp.maximum(k - 1, 0)], vals[jnp.minimum(k + 1, n_grid - 1)]])
    flat = jnp.all(jnp.abs(near - vals[k]) <= 64 * eps * jnp.maximum(1.0, jnp.abs(vals[k])))
    edge = jnp.where(newton, lam, jnp.exp(vals[k]))
    ok = (newton | ~interior | flat) & jnp.isfinite(edge) & (edge > 0)
    return edge, ok, sol


@reraise_as_value_error
def multiplicative_edge(rho: FreeMultiplicativeConvolution, *, n_grid: int = 400, log_range: float = 14.0,
                        throw: bool = True):
    r"""Right edge of the support of a product of :class:`MarchenkoPastur`, :class:`PointMass` and
    :class:`Discrete` factors: :math:`\lambda_{\max} = \min_{w>0}\frac{1+w}{w\prod_iS_i(w)^{n_i}}`
    (module docstring), a :class:`rmtjax.solve.Solution` whose ``value`` is :math:`\lambda_{\max}`.
    A grid of ``n_grid`` points in :math:`\log w\in[-\mathrm{log\_range}, \mathrm{log\_range}]`
    brackets the minimum; Newton (:func:`rmtjax.solve.root`) refines
    :math:`(\log w, \zeta_i = \psi_i^{-1}(w))` for the discrete factors. Where the minimum is at
    infinity (a single factor, or a product of point masses) the grid's end value is returned.

    Example:
        >>> from rmtjax.rmt._measures import MarchenkoPastur
        >>> edge = multiplicative_edge(free_multiplicative_power(MarchenkoPastur(1.0, 1.0), 2))  # 27 / 4
    """
    if not isinstance(rho, FreeMultiplicativeConvolution):
        raise ArgumentError(f"rho must be a FreeMultiplicativeConvolution (free_multiplicative_convolution(...)), "
                            f"got {rho!r:.80}")
    ms = rho.measures
    for m in ms:
        if not isinstance(m, MarchenkoPastur | PointMass | Discrete):
            raise ArgumentError(f"rho must have MarchenkoPastur, PointMass or Discrete factors, got {type(m).__name__}")
    n_grid = static_int(n_grid, "n_grid", lo=3, hi=100_000)
    log_range = static_number(log_range, "log_range", lo=0.0, hi=300.0)
    throw = flag(throw, "throw")
    dt = np.result_type(*(np.dtype(x.dtype) for x in jax.tree_util.tree_leaves(ms)))
    ns = jnp.asarray(rho.powers, dtype=dt)
    edge, ok, sol = _edge_core(ms, ns, n_grid, log_range)
    edge = finish(edge, ok, throw=throw, eager="multiplicative_edge: the Newton refinement of the edge did not "
                  "converge to a finite positive edge; raise n_grid or log_range (or pass throw=False to read ok)")
    return type(sol)(edge, sol.result, sol.steps, sol.residual), ok


class JacobianSpectrum(NamedTuple):
    r"""Spectrum of :math:`JJ^\top` (eigenvalues :math:`\lambda = s^2`, :math:`s` the singular values).

    Attributes:
        x: the grid of :math:`\lambda`.
        density: density of the continuous part of :math:`\lambda` on ``x``.
        zero_mass: mass of :math:`\lambda = 0` (ReLU: 1/2).
        chi: :math:`\chi = \sigma_w^2\mathbb E[\phi'(h)^2]` (mean squared singular value per layer).
        mean: :math:`m_1 = \chi^L` (mean squared singular value of :math:`J`).
        variance: :math:`\operatorname{Var}(\lambda) = m_2 - m_1^2`.
        max_eigenvalue: right edge :math:`\lambda_{\max}`; ``max_singular_value`` its square root.
        q_star: the fixed point :math:`q^*` (for the ReLU family, whose law does not use it, the
            mean-field value, ``inf`` where the variance grows without bound).
        converged: per grid point, the subordination converged on the physical branch.
        ok: every solve converged (all of ``converged`` and the edge).
    """

    x: Array
    density: Array
    zero_mass: Array
    chi: Array
    mean: Array
    variance: Array
    max_eigenvalue: Array
    max_singular_value: Array
    q_star: Array
    converged: Array
    ok: Array


@reraise_as_value_error
def jacobian_spectrum(activation: AbstractActivation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, x: ArrayLike, *,
                      depth: int, orthogonal: bool = False, eta: float | None = None, edge: bool = True,
                      throw: bool = True) -> JacobianSpectrum:
    r"""Density of the squared singular values of the input-output Jacobian on ``x`` and its
    summaries (module docstring), differentiable in ``sigma_w2``, ``sigma_b2`` and the activation's
    parameters.

    Args:
        activation: the activation (:class:`HardTanh` or any :mod:`rmtjax.activations` module).
        sigma_w2, sigma_b2: weight and bias variances (finite scalars, ``sigma_w2 > 0``,
            ``sigma_b2 >= 0``).
        x: grid of eigenvalues :math:`\lambda` of :math:`JJ^\top` (finite, any shape).
        depth: :math:`L` (static). orthogonal: Haar-orthogonal instead of Gaussian weights (static).
        eta: height of the Stieltjes inversion (``> 0``; default :math:`10^{-9}|x| + 10^{-13}s` in float64,
            :math:`10^{-6}|x| + 10^{-9}s` in float32, :math:`s` the scale of the law).
        edge: compute :math:`\lambda_{\max}` (a root solve; ``nan`` when ``False``).
        throw: raise when a solve fails (eagerly, or a compiled check under ``jit``); with
            ``throw=False`` read ``converged`` / ``ok``.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Relu
        >>> s = jacobian_spectrum(Relu(), 2.0, 0.0, jnp.linspace(0.05, 5.0, 40), depth=4)
        >>> float(s.mean)  # chi = 1 at criticality
        1.0
    """
    activation, w2, b2, depth, orthogonal, step, cutoff = _law_args(activation, sigma_w2, sigma_b2, depth, orthogonal,
                                                                    0.05, 9.0)
    x = points(x, "x", complex_ok=False)
    edge, throw = flag(edge, "edge"), flag(throw, "throw")
    rho, q, d2 = _law(activation, w2, b2, depth, orthogonal, step, cutoff)
    dens: FreeDensity = rho.density_on_grid(x, eta=eta, throw=throw)
    m = rho.moments(2)
    if edge:
        e, ok_e = multiplicative_edge(rho, throw=throw)
        lam = e.value
    else:
        lam, ok_e = None, None
    return _spectrum(x, dens, w2, d2, m, lam, q, ok_e)


@eqx.filter_jit
def _spectrum(x, dens, w2, d2, m, lam, q, ok_e):
    # jitted: eagerly, these summaries were one-operation programs (measured 2026-12-07)
    chi = w2 * d2.mean()
    if lam is None:
        lam, ok_e = jnp.full_like(chi, jnp.nan), jnp.asarray(True)
    return JacobianSpectrum(x, dens.density, dens.zero_mass, chi, m[0], m[1] - m[0] ** 2, lam,
                            jnp.sqrt(lam), q, dens.ok, jnp.all(dens.ok) & ok_e)
