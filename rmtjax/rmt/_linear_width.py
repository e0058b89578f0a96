r"""Spectra of the conjugate kernel (CK) and neural tangent kernel (NTK) at linear width
(Z. Fan & Z. Wang, "Spectra of the conjugate kernel and neural tangent kernel for linear-width
neural networks", NeurIPS 2020, arXiv:2005.11879).

**Network** (the paper's Sec. 2.1, data as rows): inputs :math:`x_\alpha \in \mathbb R^{d_0}`,
:math:`\alpha = 1..n`, approximately orthonormal (e.g. Gaussian rows normalized to unit norm),
:math:`X_0 = [x_1, \dots, x_n] \in \mathbb R^{d_0\times n}`; weights :math:`W_\ell \in
\mathbb R^{d_\ell \times d_{\ell-1}}` and :math:`w \in \mathbb R^{d_L}` with i.i.d.
:math:`\mathcal N(0, 1)` entries;

.. math::
    X_\ell = \tfrac{1}{\sqrt{d_\ell}}\,\sigma(W_\ell X_{\ell-1}),\qquad f(x_\alpha) = w^\top X_L e_\alpha,
    \qquad K_\ell = X_\ell^\top X_\ell \in \mathbb R^{n\times n}\ \text{(the CK of layer } \ell).

The activation is normalized (the paper's Assumption 3.2): :math:`\sigma = (\phi - \mathbb E\phi(\xi))
/\operatorname{sd}\phi(\xi)`, :math:`\xi \sim \mathcal N(0,1)`, so :math:`\mathbb E\sigma(\xi) = 0`,
:math:`\mathbb E\sigma(\xi)^2 = 1`; :math:`b_\sigma = \mathbb E\sigma'(\xi)`, :math:`a_\sigma =
\mathbb E\sigma'(\xi)^2` (:func:`activation_constants`). Widths grow with :math:`n/d_\ell \to
\gamma_\ell`.

**CK** (Thm 3.4): the spectral law of :math:`K_\ell` converges to

.. math::
    \mu_\ell = \rho^{\mathrm{MP}}_{\gamma_\ell} \boxtimes \big((1 - b_\sigma^2) + b_\sigma^2\,\mu_{\ell-1}\big),

:math:`\mu_0` the law of the input Gram matrix, :math:`\rho^{\mathrm{MP}}_\gamma` the Marchenko-Pastur law
of :math:`Z^\top Z/d` (:math:`Z \in \mathbb R^{d\times n}`, :math:`n/d = \gamma`), and
:math:`(1-b^2) + b^2\mu` the law of :math:`(1-b^2) + b^2\lambda`, :math:`\lambda \sim \mu`. Its Stieltjes
transform :math:`m(z) = \int d\mu(\lambda)/(\lambda - z)` solves the Marchenko-Pastur (Silverstein)
equation :math:`m(z) = \int d\nu(t)/(t(1 - \gamma - \gamma z m(z)) - z)`, :math:`\nu` the law of the
covariance :math:`\Phi_\ell = (1-b^2)I + b^2K_{\ell-1}`.

**NTK** (Thm 3.7): with :math:`\theta = (W_1, \dots, W_L, w)`, :math:`K^{\mathrm{NTK}} = \sum_\theta
\nabla_\theta f^\top\nabla_\theta f = K_L + \sum_{\ell=1}^L (S_\ell^\top S_\ell)\odot K_{\ell-1}`
(:math:`S_\ell` the back-propagated signals), and in spectrum

.. math::
    K^{\mathrm{NTK}} \simeq r_+ I + \sum_{\ell=0}^{L} r_\ell K_\ell,\qquad
    r_\ell = b_\sigma^{2(L-\ell)},\quad r_+ = \sum_{k=1}^{L}\big(a_\sigma^{k} - b_\sigma^{2k}\big)

(:func:`ntk_coefficients`). The matrices :math:`K_\ell` do not commute, so the limit law is not a
function of the :math:`\mu_\ell` alone. Its Stieltjes transform follows from the deterministic equivalent
of :math:`A + \beta K_\ell` given the earlier layers (Bai-Silverstein with an additive term):
:math:`(A + \beta K_\ell - z)^{-1} \simeq (A + s\Phi_\ell - z)^{-1}`, :math:`s = \beta/(1 + \gamma_\ell\beta
\vartheta)`, :math:`\vartheta = \frac1n\operatorname{tr}\Phi_\ell(A + s\Phi_\ell - z)^{-1}`. Since
:math:`s\Phi_\ell` is again affine in :math:`K_{\ell-1}`, the reduction repeats layer by layer down to
the input law, and also gives :math:`\tau_\ell = \frac1n\operatorname{tr}K_\ell(\cdot)^{-1} =
\vartheta/(1 + \gamma_\ell\beta\vartheta)`. For a general combination
:math:`cI + \sum_\ell\beta_\ell K_\ell` this is one fixed point in :math:`L` complex unknowns
:math:`s_1..s_L` (:func:`combination_stieltjes`); with :math:`\beta = e_\ell` it is the paper's CK
recursion and with :math:`(c, \beta) = (r_+, r)` its NTK law (the paper's recursive fixed-point
equations, written as one system).

**Numerics.** Every solve goes through :func:`rmtjax.solve.fixed_point` (Newton, complex unknowns as
real/imaginary pairs, implicit differentiation), reached by continuation in :math:`\operatorname{Im}z`
from far above the support, so the physical branch (:math:`\operatorname{Im} m > 0`) is taken.
Densities are :math:`\operatorname{Im} m(x + i\eta)/\pi`; the largest eigenvalue
:math:`\lambda_{\max}` (right edge of the support) solves the fold system
:math:`s = F(s; z),\ \det(I - \partial_s F) = 0` at real :math:`s, z` (:func:`rmtjax.solve.root`, so it
is differentiable too), started from nested grid scans of the density. Moments are contour
integrals :math:`m_k = -\frac{1}{2\pi i}\oint z^k m(z)\,dz` (trapezoidal rule on a circle around the
support, exponentially accurate).

Finite-size caveat: the limit laws ignore finite-rank parts. For activations with a non-zero second
Hermite coefficient (e.g. ReLU) :math:`K_\ell` carries an outlier eigenvalue of order
:math:`n\,\mathbb E[(x_\alpha^\top x_\beta)^2]` above the bulk edge; for odd activations (tanh, erf) the
largest eigenvalue converges to the edge.

Example:
    >>> import jax.numpy as jnp
    >>> from rmtjax.activations import Tanh
    >>> inp = marchenko_pastur_input(0.8)  # n/d_0 = 0.8, Gaussian inputs
    >>> gammas = jnp.array([0.5, 1.0])     # n/d_1, n/d_2
    >>> dens = ntk_density(inp, gammas, Tanh(), jnp.linspace(0.5, 6.0, 5))
    >>> lr = max_stable_learning_rate(inp, gammas, Tanh())  # 2 / lambda_max(NTK)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._numerics import safe_sqrt
from .._validate import check_matrix, concrete
from ..activations import AbstractActivation
from ..gaussian import AbstractMethod, Auto, gaussian_expectations, hermite_coefficients_at
from ..solve import fixed_point, root

__all__ = [
    "ActivationConstants",
    "FiniteKernels",
    "InputSpectrum",
    "NTKCoefficients",
    "activation_constants",
    "ck_density",
    "ck_edge",
    "ck_moments",
    "ck_stieltjes",
    "combination_density",
    "combination_edge",
    "combination_moments",
    "combination_stieltjes",
    "empirical_input",
    "finite_network_kernels",
    "marchenko_pastur_input",
    "max_stable_learning_rate",
    "ntk_coefficients",
    "ntk_density",
    "ntk_edge",
    "ntk_moments",
    "ntk_stieltjes",
]


# --------------------------------------------------------------------------------------
# Activation constants and NTK coefficients
# --------------------------------------------------------------------------------------


class ActivationConstants(NamedTuple):
    r"""Normalization of :math:`\phi` into :math:`\sigma = (\phi - \text{mean})/\text{std}` and the
    constants :math:`b_\sigma^2 = (\mathbb E\sigma'(\xi))^2`, :math:`a_\sigma = \mathbb E\sigma'(\xi)^2`."""

    mean: Array
    std: Array
    b2: Array
    a: Array


def activation_constants(activation: AbstractActivation, *, method: AbstractMethod = Auto()) -> ActivationConstants:
    r"""Mean, standard deviation, :math:`b_\sigma^2` and :math:`a_\sigma` of an activation at
    :math:`\xi \sim \mathcal N(0, 1)` (Fan & Wang, Assumption 3.2 and eq. (5)).

    From :func:`rmtjax.gaussian.gaussian_expectations` at unit variances: correlation 1 gives
    :math:`\mathbb E\phi^2` and :math:`\mathbb E\phi'^2`, correlation 0 gives :math:`(\mathbb E\phi)^2` and
    :math:`(\mathbb E\phi')^2` (exact where the activation has a closed form), so

    .. math::
        \operatorname{Var}\phi = \mathbb E\phi^2 - (\mathbb E\phi)^2,\quad
        b_\sigma^2 = \frac{(\mathbb E\phi')^2}{\operatorname{Var}\phi},\quad
        a_\sigma = \frac{\mathbb E\phi'^2}{\operatorname{Var}\phi}.

    The sign of the mean comes from a trapezoidal estimate of :math:`\mathbb E\phi`
    (:func:`rmtjax.gaussian.hermite_coefficients_at`), which also carries its derivative.

    Raises:
        ValueError: if :math:`\operatorname{Var}\phi(\xi)` is 0 or not finite (the activation cannot be
            normalized).

    Example:
        >>> from rmtjax.activations import Relu
        >>> c = activation_constants(Relu())
        >>> round(float(c.b2), 6)  # (1/2)^2 / (1/2 - 1/(2 pi))
        0.733471
    """
    q12 = jnp.array([1.0, 0.0])
    e = gaussian_expectations(activation, 1.0, 1.0, q12, method=method)
    var = e.k[0] - e.k[1]
    v = concrete(var)
    msg = (f"{type(activation).__name__} cannot be normalized: Var[phi(xi)] must be finite and > 0 for "
           "xi ~ N(0, 1) (Fan & Wang's assumption E sigma = 0, E sigma^2 = 1)")
    if v is not None:
        scale = float(np.abs(concrete(e.k[0])))
        if not (np.isfinite(v) and np.isfinite(scale) and v > 1e-12 * max(1.0, scale)):
            raise ValueError(f"{msg}; got Var = {float(v)}")
    else:
        var = eqx.error_if(var, ~(jnp.isfinite(var) & (var > 0)), msg)
    t = hermite_coefficients_at(activation, jnp.asarray(1.0, var.dtype), order=0)[0]
    mean = t + jax.lax.stop_gradient(jnp.sign(t) * safe_sqrt(e.k[1]) - t)
    return ActivationConstants(mean, jnp.sqrt(var), e.kdot[1] / var, e.kdot[0] / var)


class NTKCoefficients(NamedTuple):
    r""":math:`K^{\mathrm{NTK}} \simeq r_+ I + \sum_{\ell=0}^L r_\ell K_\ell` (``r`` has length ``L + 1``)."""

    r_plus: Array
    r: Array


def _ntk_coefficients(c: ActivationConstants, depth: int) -> NTKCoefficients:
    k = jnp.arange(1, depth + 1, dtype=c.b2.dtype)
    r_plus = jnp.sum(c.a**k - c.b2**k)
    r = c.b2 ** jnp.arange(depth, -1, -1, dtype=c.b2.dtype)
    return NTKCoefficients(r_plus, r)


def ntk_coefficients(activation: AbstractActivation, depth: int, *, method: AbstractMethod = Auto()) -> NTKCoefficients:
    r"""The NTK's linear-combination coefficients (Fan & Wang, Thm 3.7):
    :math:`r_\ell = b_\sigma^{2(L-\ell)}`, :math:`\ell = 0..L`, and
    :math:`r_+ = \sum_{k=1}^{L}(a_\sigma^{k} - b_\sigma^{2k})`.

    Derivation: :math:`(S_\ell^\top S_\ell)_{\alpha\alpha} \to a_\sigma^{L-\ell+1}` and
    :math:`(S_\ell^\top S_\ell)_{\alpha\beta} \to b_\sigma^{2(L-\ell+1)}`, and
    :math:`(K_{\ell-1})_{\alpha\alpha} \to 1`, so :math:`(S_\ell^\top S_\ell)\odot K_{\ell-1} \simeq
    (a_\sigma^{L-\ell+1} - b_\sigma^{2(L-\ell+1)})I + b_\sigma^{2(L-\ell+1)}K_{\ell-1}`.

    Example:
        >>> from rmtjax.activations import Tanh
        >>> r_plus, r = ntk_coefficients(Tanh(), 2)
    """
    _check_depth(depth)
    return _ntk_coefficients(activation_constants(activation, method=method), depth)


def _check_depth(depth):
    if not (isinstance(depth, (int, np.integer)) and depth >= 1):
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")


# --------------------------------------------------------------------------------------
# Input spectrum
# --------------------------------------------------------------------------------------


class InputSpectrum(eqx.Module):
    r"""The limit law :math:`\mu_0` of the input Gram matrix :math:`K_0 = X_0^\top X_0`:
    :math:`\rho^{\mathrm{MP}}_{\text{ratio}} \boxtimes \sum_k w_k\delta_{\lambda_k}` if ``ratio`` is given,
    else the discrete measure :math:`\sum_k w_k\delta_{\lambda_k}` itself.

    Build it with :func:`empirical_input` (the eigenvalues of a given data set) or
    :func:`marchenko_pastur_input` (Gaussian inputs with :math:`n/d_0 \to` ``ratio``).

    Attributes:
        eigenvalues: atoms :math:`\lambda_k \ge 0`, shape ``(k,)``.
        weights: :math:`w_k \ge 0`, summing to 1, shape ``(k,)``.
        ratio: ``None`` or :math:`n/d_0 > 0` (differentiable).
    """

    eigenvalues: Array
    weights: Array
    ratio: Array | None

    def __init__(self, eigenvalues: ArrayLike, weights: ArrayLike | None = None, ratio: ArrayLike | None = None):
        ev = jnp.asarray(eigenvalues)
        ev = ev.astype(jnp.result_type(ev, float))
        if ev.ndim != 1 or ev.shape[0] < 1:
            raise ValueError(f"InputSpectrum: 'eigenvalues' must be a non-empty 1-d array, got shape {ev.shape}")
        if weights is None:
            w = jnp.full(ev.shape, 1.0 / ev.shape[0], ev.dtype)
        else:
            w = jnp.asarray(weights).astype(ev.dtype)
        if w.shape != ev.shape:
            raise ValueError(f"InputSpectrum: 'weights' must have the shape of 'eigenvalues' {ev.shape}, got {w.shape}")
        self.eigenvalues, self.weights = ev, w
        self.ratio = None if ratio is None else jnp.asarray(ratio).astype(ev.dtype)

    def __check_init__(self):
        ev, w = concrete(self.eigenvalues), concrete(self.weights)
        if ev is not None and (not np.all(np.isfinite(ev)) or np.any(ev < 0)):
            raise ValueError("InputSpectrum: 'eigenvalues' must be finite and >= 0 (a Gram matrix), "
                             f"got min {np.min(ev)}")
        if w is not None and (np.any(w < 0) or not np.isclose(np.sum(w), 1.0, rtol=1e-8, atol=1e-12)):
            raise ValueError(f"InputSpectrum: 'weights' must be >= 0 and sum to 1, got sum {np.sum(w)}")
        if self.ratio is not None:
            if jnp.ndim(self.ratio) != 0:
                raise ValueError(f"InputSpectrum: 'ratio' must be a scalar, got shape {jnp.shape(self.ratio)}")
            r = concrete(self.ratio)
            if r is not None and not (np.isfinite(r) and r > 0):
                raise ValueError(f"InputSpectrum: 'ratio' (n/d_0) must be finite and > 0, got {r}")


def marchenko_pastur_input(ratio: ArrayLike) -> InputSpectrum:
    r"""Inputs with i.i.d. Gaussian entries (rows normalized or not): :math:`\mu_0 =
    \rho^{\mathrm{MP}}_{\text{ratio}}`, ``ratio`` :math:`= n/d_0 > 0`."""
    return InputSpectrum(jnp.ones((1,)), jnp.ones((1,)), ratio)


def empirical_input(x: ArrayLike) -> InputSpectrum:
    r"""The empirical spectral law of :math:`K_0 = X_0^\top X_0` for data ``x`` of shape ``(n, d_0)``
    (rows are the inputs; normalize them to unit norm for the paper's setting)."""
    x = check_matrix(x, "x")
    ev = jnp.clip(jnp.linalg.eigvalsh(x @ x.T), 0.0, None)
    return InputSpectrum(ev)


# --------------------------------------------------------------------------------------
# The fixed point
# --------------------------------------------------------------------------------------


class _Problem(eqx.Module):
    """shift * I + sum_j coef[j] K_j over internal levels j = 0..Lp (j = 0: the atoms)."""

    gam: Array  # (Lp,) n/d of each level
    b2: Array  # (Lp,) b^2 of each level (1 for a linear input level)
    atoms: Array
    wts: Array
    shift: Array
    coef: Array  # (Lp + 1,)


def _check_gammas(gammas) -> Array:
    g = jnp.asarray(gammas)
    g = g.astype(jnp.result_type(g, float))
    if g.ndim != 1 or g.shape[0] < 1:
        raise ValueError("gammas must be a 1-d array of ratios n/d_l, one per hidden layer (L >= 1), "
                         f"got shape {g.shape}")
    v = concrete(g)
    if v is not None:
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"gammas (n/d_l) must be finite and > 0, got {v}")
        return g
    return eqx.error_if(g, ~jnp.all(jnp.isfinite(g) & (g > 0)), "gammas (n/d_l) must be finite and > 0")


def _check_b2(b2) -> Array:
    b2 = jnp.asarray(b2)
    b2 = b2.astype(jnp.result_type(b2, float))
    v = concrete(b2)
    if v is not None:
        if np.ndim(v) != 0 or not (0 <= v <= 1):
            raise ValueError(f"b2 (b_sigma^2 of a normalized activation) must be a scalar in [0, 1], got {v}")
        return b2
    return eqx.error_if(b2, ~((b2 >= 0) & (b2 <= 1)), "b2 must be in [0, 1]")


def _problem(inp: InputSpectrum, gammas, b2, shift, coef) -> _Problem:
    if not isinstance(inp, InputSpectrum):
        raise TypeError(f"inp must be an InputSpectrum (marchenko_pastur_input / empirical_input), got {type(inp)}")
    gammas = _check_gammas(gammas)
    b2 = _check_b2(b2)
    L = gammas.shape[0]
    dt = gammas.dtype
    coef = jnp.asarray(coef).astype(dt)
    if coef.shape != (L + 1,):
        raise ValueError(f"coef must have shape (L + 1,) = ({L + 1},) (one per K_0..K_L), got {coef.shape}")
    shift = jnp.asarray(shift).astype(dt)
    for name, v in (("coef", concrete(coef)), ("shift", concrete(shift))):
        if v is not None and (not np.all(np.isfinite(v)) or np.any(v < 0)):
            raise ValueError(f"{name} must be finite and >= 0 (a positive semi-definite combination), got {v}")
    b2s = jnp.broadcast_to(b2.astype(dt), (L,))
    if inp.ratio is None:
        gam, b2v, coefv = gammas, b2s, coef
    else:
        gam = jnp.concatenate([inp.ratio.astype(dt)[None], gammas])
        b2v = jnp.concatenate([jnp.ones((1,), dt), b2s])
        coefv = jnp.concatenate([jnp.zeros((1,), dt), coef])
    return _Problem(gam, b2v, inp.eigenvalues.astype(dt), inp.weights.astype(dt), shift, coefv)


def _scale(p: _Problem) -> Array:
    """An upper bound on the support: ||shift I + sum_j coef_j K_j|| <= |shift| + sum_j |coef_j| U_j, with
    U_j = (1 + sqrt(gamma_j))^2 ((1 - b2_j) + b2_j U_{j-1}) (edge of MP times the norm of the covariance)."""
    prev = jnp.max(p.atoms)
    total = jnp.abs(p.shift) + jnp.abs(p.coef[0]) * prev
    for j in range(p.gam.shape[0]):
        prev = (1 + jnp.sqrt(p.gam[j])) ** 2 * ((1 - p.b2[j]) + p.b2[j] * prev)
        total = total + jnp.abs(p.coef[j + 1]) * prev
    return jax.lax.stop_gradient(jnp.maximum(total, 1e-12))


def _cast(p: _Problem, dt) -> _Problem:
    return jax.tree_util.tree_map(lambda x: x.astype(dt), p)


def _map(s, z, p: _Problem):
    """One evaluation of the reduced system: returns (F(s), m) with m the Stieltjes transform.

    Level j (1-based) has unknown s_j = s[j-1]. Top-down, the coefficient of K_{j-1} after the
    reduction of level j is top_{j-1} = coef_{j-1} + b2_j s_j and the shift grows by (1 - b2_j) s_j;
    bottom-up, theta_j = (1 - b2_j) m + b2_j tau_{j-1}, F_j = top_j / (1 + gamma_j top_j theta_j),
    tau_j = theta_j / (1 + gamma_j top_j theta_j)."""
    p = _cast(p, s.dtype)
    z = jnp.asarray(z).astype(s.dtype)
    Lp = p.gam.shape[0]
    top = [None] * (Lp + 1)
    top[Lp] = p.coef[Lp]
    for j in range(Lp, 0, -1):
        top[j - 1] = p.coef[j - 1] + p.b2[j - 1] * s[j - 1]
    c0 = p.shift + jnp.sum((1 - p.b2) * s)
    den = c0 + top[0] * p.atoms - z
    m = jnp.sum(p.wts / den)
    tau = jnp.sum(p.wts * p.atoms / den)
    out = []
    for j in range(1, Lp + 1):
        theta = (1 - p.b2[j - 1]) * m + p.b2[j - 1] * tau
        d = 1 + p.gam[j - 1] * top[j] * theta
        out.append(top[j] / d)
        tau = theta / d
    return jnp.stack(out), m


def _s_infinity(p: _Problem, dt):
    """The z -> infinity limit of the unknowns: s_Lp = coef_Lp, s_j = coef_j + b2_{j+1} s_{j+1}."""
    p = _cast(p, dt)
    Lp = p.gam.shape[0]
    s = [None] * Lp
    s[Lp - 1] = p.coef[Lp]
    for j in range(Lp - 1, 0, -1):
        s[j - 1] = p.coef[j] + p.b2[j] * s[j]
    return jnp.stack(s)


def _fp(p, z, s0, *, max_steps, throw):
    return fixed_point(lambda s, a: _map(s, a[1], a[0])[0], s0, (p, z), solver="newton", max_steps=max_steps,
                       throw=throw, name="linear-width Marchenko-Pastur fixed point")


def _newton(p, z, s, iters: int):
    """``iters`` plain Newton steps on s - F(s; z) (holomorphic in s): the predictor of the continuation."""

    def g(s_):
        return _map(s_, z, p)[0] - s_

    def step(_, s_):
        jac = jax.jacfwd(g, holomorphic=jnp.iscomplexobj(s_))(s_)
        new = s_ - jnp.linalg.solve(jac, g(s_))
        return jnp.where(jnp.all(jnp.isfinite(new)), new, s_)

    return jax.lax.fori_loop(0, iters, step, s)


def _predict(p: _Problem, x, y_end, *, steps: int, iters: int):
    """The unknowns at x + i y_end, followed from x + 4iU (U: support bound) down a geometric ladder of
    ``steps`` heights with ``iters`` Newton steps each (no gradient: a starting point for the solve)."""
    p = jax.lax.stop_gradient(p)
    x, y_end = jax.lax.stop_gradient(x), jax.lax.stop_gradient(y_end)
    cdt = jnp.complex128 if p.gam.dtype == jnp.float64 else jnp.complex64
    start = jnp.maximum(4 * _scale(p), y_end)
    etas = start * (y_end / start) ** (jnp.arange(steps + 1, dtype=x.dtype) / steps)

    def body(s_, eta):
        return _newton(p, jax.lax.complex(x, eta), s_, iters), None

    return jax.lax.scan(body, _s_infinity(p, cdt), etas)[0]


def _solve_at(p: _Problem, z, *, steps: int, max_steps: int, throw: bool):
    """(m(z), ok) for one complex z with Im z >= 0: continuation in Im z (:func:`_predict`), then one
    differentiable Newton solve through :func:`rmtjax.solve.fixed_point`."""
    z = jnp.asarray(z).astype(jnp.complex128 if p.gam.dtype == jnp.float64 else jnp.complex64)
    if p.gam.shape[0] == 0:
        q = _cast(p, z.dtype)
        return jnp.sum(q.wts / (q.shift + q.coef[0] * q.atoms - z)), jnp.asarray(True)
    x, y = jnp.real(z), jnp.imag(z)
    y_end = jnp.maximum(y, 1e-12 * _scale(p))
    s_pred = _predict(p, x, y_end, steps=steps, iters=_ITERS)
    sol = _fp(p, z, s_pred, max_steps=max_steps, throw=throw)
    return _map(sol.value, z, p)[1], sol.ok


_ITERS = 5  # Newton steps per rung of the continuation ladder


def _check_z(z):
    zc = concrete(z)
    if zc is not None:
        zc = np.asarray(zc)
        bad = (np.imag(zc) == 0) & (np.real(zc) >= 0)
        if np.any(bad):
            raise ValueError("z must have Im z != 0 or be real and < 0 (the spectra lie in [0, inf)); got "
                             f"{zc[bad].ravel()[:3]}. For the density on the support use *_density(x, eta=...)")


def _stieltjes(p, z, *, steps, max_steps, throw):
    z = jnp.asarray(z)
    _check_z(z)
    return _stieltjes_jit(p, z.astype(jnp.complex128 if p.gam.dtype == jnp.float64 else jnp.complex64),
                          steps=steps, max_steps=max_steps, throw=throw)


@eqx.filter_jit
def _stieltjes_jit(p, z, *, steps, max_steps, throw):
    flip = jnp.imag(z) < 0
    zu = jnp.where(flip, jnp.conj(z), z)
    m, _ = jax.vmap(lambda w: _solve_at(p, w, steps=steps, max_steps=max_steps, throw=throw))(zu.reshape(-1))
    m = m.reshape(z.shape)
    return jnp.where(flip, jnp.conj(m), m)


def _density(p, x, *, eta, steps, max_steps, throw):
    x = jnp.asarray(x)
    x = x.astype(jnp.result_type(x, float))
    if not (isinstance(eta, (int, float)) and eta > 0):
        raise ValueError(f"eta must be a float > 0 (the distance to the real axis), got {eta!r}")
    return _density_jit(p, x, float(eta), steps=steps, max_steps=max_steps, throw=throw)


@eqx.filter_jit
def _density_jit(p, x, eta, *, steps, max_steps, throw):
    m, _ = jax.vmap(lambda xi: _solve_at(p, jax.lax.complex(xi, jnp.asarray(eta, xi.dtype)), steps=steps,
                                         max_steps=max_steps, throw=throw))(x.reshape(-1))
    return (jnp.imag(m) / math.pi).reshape(x.shape)


# --------------------------------------------------------------------------------------
# Edge (largest eigenvalue)
# --------------------------------------------------------------------------------------


def _fold(y, p):
    """The fold system at real (s, z): s - F(s; z) = 0 and det(I - dF/ds) = 0."""
    s, z = y[:-1], y[-1]
    f = lambda s_: _map(s_, z, p)[0]  # noqa: E731
    jac = jax.jacfwd(f)(s)
    det = jnp.linalg.det(jnp.eye(s.shape[0], dtype=s.dtype) - jac)
    return jnp.concatenate([s - f(s), det[None]])


@eqx.filter_jit
def _edge(p: _Problem, *, grid: int, stages: int, steps: int, max_steps: int, throw: bool):
    if p.gam.shape[0] == 0:
        return p.shift + p.coef[0] * jnp.max(p.atoms)
    ps = jax.lax.stop_gradient(p)
    U = _scale(p)
    eta = 1e-10 * U
    kappa = 1e-5 / U
    idx = jnp.arange(grid)

    def probe(x):
        s = _predict(ps, x, eta, steps=steps, iters=_ITERS)
        return jnp.imag(_map(s, jax.lax.complex(x, eta), ps)[1]) > kappa, s

    def stage(_, carry):
        # (lo, hi]: lo inside the support (or 0), hi outside; keep the last grid point inside
        lo, hi, s_hi = carry
        xs = lo + (hi - lo) * (idx + 1).astype(U.dtype) / grid
        inside, ss = jax.vmap(probe)(xs)
        last = jnp.max(jnp.where(inside, idx, -1))
        nxt = jnp.minimum(last + 1, grid - 1)
        return (jnp.where(last >= 0, xs[jnp.maximum(last, 0)], lo), xs[nxt], ss[nxt])

    s_dummy = _s_infinity(ps, jnp.complex128 if U.dtype == jnp.float64 else jnp.complex64)
    _, hi, s_hi = jax.lax.fori_loop(0, stages, stage, (jnp.zeros_like(U), U, s_dummy))
    y0 = jnp.concatenate([jnp.real(s_hi).astype(U.dtype), hi[None]])
    sol = root(_fold, jax.lax.stop_gradient(y0), p, max_steps=max_steps, throw=throw,
               name="spectral edge (fold of the linear-width fixed point)")
    return sol.value[-1]


# --------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------


def _moments(p: _Problem, *, order: int, points: int, steps: int, max_steps: int, throw: bool):
    if not (isinstance(order, (int, np.integer)) and order >= 1):
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    if not (isinstance(points, (int, np.integer)) and points >= 16 and points % 2 == 0):
        raise ValueError(f"points must be an even integer >= 16, got {points!r}")
    return _moments_jit(p, order=order, points=points, steps=steps, max_steps=max_steps, throw=throw)


@eqx.filter_jit
def _moments_jit(p: _Problem, *, order: int, points: int, steps: int, max_steps: int, throw: bool):
    U = _scale(p)
    c0, R = 0.5 * U, 0.75 * U
    half = points // 2
    phi = math.pi * jnp.arange(half + 1, dtype=U.dtype) / half  # [0, pi], upper half circle
    zs = jax.lax.complex(c0 + R * jnp.cos(phi), R * jnp.sin(phi))
    zs = jnp.where(jnp.arange(half + 1) == half, jax.lax.complex(c0 - R, 0.0 * R), zs)
    zs = jnp.where(jnp.arange(half + 1) == 0, jax.lax.complex(c0 + R, 0.0 * R), zs)
    m, _ = jax.vmap(lambda w: _solve_at(p, w, steps=steps, max_steps=max_steps, throw=throw))(zs)
    # full circle by conjugate symmetry: phi_j = 2 pi j / points, j = 0..points-1
    m_full = jnp.concatenate([m, jnp.conj(m[1:half][::-1])])
    z_full = jnp.concatenate([zs, jnp.conj(zs[1:half][::-1])])
    e = (z_full - c0.astype(z_full.dtype)) / R.astype(z_full.dtype)  # e^{i phi}
    ks = jnp.arange(1, order + 1)
    zk = z_full[None, :] ** ks[:, None].astype(z_full.dtype)
    mom = -jnp.mean(zk * m_full[None, :] * e[None, :], axis=1) * R.astype(z_full.dtype)
    return jnp.real(mom)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def combination_stieltjes(inp: InputSpectrum, gammas: ArrayLike, b2: ArrayLike, shift: ArrayLike, coef: ArrayLike,
                          z: ArrayLike, *, steps: int = 16, max_steps: int = 64, throw: bool = True) -> Array:
    r"""Limit Stieltjes transform :math:`m(z) = \lim\frac1n\operatorname{tr}(cI + \sum_{\ell=0}^L
    \beta_\ell K_\ell - z)^{-1}` of a linear combination of the CK matrices of all layers (see the
    module docstring for the reduction; :math:`\beta = e_\ell` is the CK of layer :math:`\ell`,
    :math:`(c, \beta) = (r_+, r)` the NTK).

    Args:
        inp: the input law :math:`\mu_0` (:class:`InputSpectrum`).
        gammas: :math:`\gamma_\ell = n/d_\ell > 0`, shape ``(L,)``. Differentiable.
        b2: :math:`b_\sigma^2 \in [0, 1]`. Differentiable.
        shift: :math:`c`. coef: :math:`\beta_0..\beta_L`, shape ``(L + 1,)``, :math:`\ge 0`.
        z: any shape; :math:`\operatorname{Im} z \ne 0`, or real :math:`z < 0`.
        steps, max_steps, throw: continuation steps in :math:`\operatorname{Im} z` (static), Newton steps
            per solve, raise if the final solve fails.

    Example:
        >>> import jax.numpy as jnp
        >>> m = combination_stieltjes(marchenko_pastur_input(0.5), jnp.array([1.0]), 0.4, 0.1,
        ...                           jnp.array([0.4, 1.0]), 1.0 + 0.5j)
    """
    p = _problem(inp, gammas, b2, shift, coef)
    return _stieltjes(p, z, steps=steps, max_steps=max_steps, throw=throw)


def combination_density(inp: InputSpectrum, gammas: ArrayLike, b2: ArrayLike, shift: ArrayLike, coef: ArrayLike,
                        x: ArrayLike, *, eta: float = 1e-8, steps: int = 16, max_steps: int = 64,
                        throw: bool = True) -> Array:
    r"""Density :math:`\operatorname{Im} m(x + i\eta)/\pi` of the law of :func:`combination_stieltjes`
    at the points ``x`` (any shape). Finite (no NaN) on the whole real line, edges included; atoms
    (e.g. at 0 when some :math:`\gamma > 1`) appear as peaks of width :math:`\eta`."""
    p = _problem(inp, gammas, b2, shift, coef)
    return _density(p, x, eta=eta, steps=steps, max_steps=max_steps, throw=throw)


def combination_edge(inp: InputSpectrum, gammas: ArrayLike, b2: ArrayLike, shift: ArrayLike, coef: ArrayLike, *,
                     grid: int = 96, stages: int = 3, steps: int = 16, max_steps: int = 64,
                     throw: bool = True) -> Array:
    r"""Right edge :math:`\lambda_{\max}` of the support of the law of :func:`combination_stieltjes`.

    Located by ``stages`` nested scans of the density on ``grid`` points (first on :math:`[0, U]`, :math:`U`
    a norm bound, then inside the last bracket; resolution :math:`U/\text{grid}^{\text{stages}}`; a part
    of the support narrower than :math:`U/\text{grid}` may be missed), then Newton's method on the fold
    system :math:`s = F(s; \lambda)`,
    :math:`\det(I - \partial_sF(s;\lambda)) = 0` (real :math:`s, \lambda`), so it is differentiable by
    the implicit function theorem."""
    p = _problem(inp, gammas, b2, shift, coef)
    return _edge(p, grid=grid, stages=stages, steps=steps, max_steps=max_steps, throw=throw)


def combination_moments(inp: InputSpectrum, gammas: ArrayLike, b2: ArrayLike, shift: ArrayLike, coef: ArrayLike, *,
                        order: int = 4, points: int = 128, steps: int = 16, max_steps: int = 64,
                        throw: bool = True) -> Array:
    r"""Moments :math:`\int\lambda^k d\mu`, :math:`k = 1..\text{order}`, of the law of
    :func:`combination_stieltjes`, as :math:`-\frac{1}{2\pi i}\oint z^k m(z)\,dz` on the circle of centre
    :math:`U/2` and radius :math:`3U/4` (trapezoidal rule with ``points`` nodes; the error decays like
    :math:`(2/3)^{\text{points}}`)."""
    p = _problem(inp, gammas, b2, shift, coef)
    return _moments(p, order=order, points=points, steps=steps, max_steps=max_steps, throw=throw)


def _ntk_problem(inp, gammas, activation, method):
    gammas = _check_gammas(gammas)
    c = activation_constants(activation, method=method)
    r_plus, r = _ntk_coefficients(c, gammas.shape[0])
    return _problem(inp, gammas, c.b2, r_plus, r)


def _ck(inp, gammas, activation, layer, method):
    """The CK of ``layer`` as the combination with coefficients e_layer over all L layers: the levels
    above ``layer`` get s = 0, and every layer shares one compiled program with the NTK."""
    gammas = _check_gammas(gammas)
    L = gammas.shape[0]
    layer = L if layer is None else layer
    if not (isinstance(layer, (int, np.integer)) and 0 <= layer <= L):
        raise ValueError(f"layer must be an integer in [0, L] = [0, {L}], got {layer!r}")
    b2 = activation_constants(activation, method=method).b2
    return _problem(inp, gammas, b2, 0.0, jnp.zeros((L + 1,), gammas.dtype).at[layer].set(1.0)), layer


def ck_stieltjes(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, z: ArrayLike, *,
                 layer: int | None = None, method: AbstractMethod = Auto(), steps: int = 16, max_steps: int = 64,
                 throw: bool = True) -> Array:
    r"""Stieltjes transform :math:`m_\ell(z) = \int d\mu_\ell(\lambda)/(\lambda - z)` of the CK law of layer
    ``layer`` (default :math:`L`; ``0`` is the input law), Fan & Wang Thm 3.4:
    :math:`\mu_\ell = \rho^{\mathrm{MP}}_{\gamma_\ell}\boxtimes((1-b_\sigma^2) + b_\sigma^2\mu_{\ell-1})`.

    Args:
        inp: the input law (:func:`marchenko_pastur_input`, :func:`empirical_input`).
        gammas: :math:`n/d_\ell`, shape ``(L,)``, all :math:`> 0`. Differentiable.
        activation: :math:`\phi` (normalized internally, :func:`activation_constants`). Differentiable.
        z: any shape, :math:`\operatorname{Im} z \ne 0` or real :math:`z < 0`.
        layer: which CK (static). method: Gaussian-expectation method for the constants.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Tanh
        >>> m = ck_stieltjes(marchenko_pastur_input(1.0), jnp.array([0.5, 2.0]), Tanh(), 1.0 + 1j, layer=1)
    """
    p, _ = _ck(inp, gammas, activation, layer, method)
    return _stieltjes(p, z, steps=steps, max_steps=max_steps, throw=throw)


def ck_density(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, x: ArrayLike, *,
               layer: int | None = None, eta: float = 1e-8, method: AbstractMethod = Auto(), steps: int = 16,
               max_steps: int = 64, throw: bool = True) -> Array:
    r"""Density of the CK law :math:`\mu_\ell` at ``x`` (any shape) by Stieltjes inversion,
    :math:`\operatorname{Im} m_\ell(x + i\eta)/\pi` (an atom at 0, mass :math:`1 - 1/\gamma_\ell` when
    :math:`\gamma_\ell > 1`, shows as a peak of width :math:`\eta`).

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Tanh
        >>> d = ck_density(marchenko_pastur_input(1.0), jnp.array([0.5]), Tanh(), jnp.linspace(0.1, 4, 8))
    """
    p, _ = _ck(inp, gammas, activation, layer, method)
    return _density(p, x, eta=eta, steps=steps, max_steps=max_steps, throw=throw)


def ck_edge(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, *, layer: int | None = None,
            method: AbstractMethod = Auto(), grid: int = 96, stages: int = 3, steps: int = 16,
            max_steps: int = 64, throw: bool = True) -> Array:
    r"""Right edge of the support of the CK law :math:`\mu_\ell` (its largest eigenvalue in the limit,
    for odd activations; see the module docstring for outliers). Differentiable.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Identity
        >>> e = ck_edge(InputSpectrum(jnp.ones(1)), jnp.array([0.25]), Identity())  # (1 + 1/2)^2
    """
    p, layer = _ck(inp, gammas, activation, layer, method)
    if layer == 0 and inp.ratio is None:  # a discrete law: its largest atom
        return jnp.max(jnp.where(inp.weights > 0, inp.eigenvalues, 0.0))
    return _edge(p, grid=grid, stages=stages, steps=steps, max_steps=max_steps, throw=throw)


def ck_moments(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, *, layer: int | None = None,
               order: int = 4, method: AbstractMethod = Auto(), points: int = 128, steps: int = 16,
               max_steps: int = 64, throw: bool = True) -> Array:
    r"""Moments :math:`\int\lambda^k d\mu_\ell`, :math:`k = 1..\text{order}` (see :func:`combination_moments`)."""
    p, _ = _ck(inp, gammas, activation, layer, method)
    return _moments(p, order=order, points=points, steps=steps, max_steps=max_steps, throw=throw)


def ntk_stieltjes(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, z: ArrayLike, *,
                  method: AbstractMethod = Auto(), steps: int = 16, max_steps: int = 64, throw: bool = True) -> Array:
    r"""Stieltjes transform of the NTK law (Fan & Wang Thm 3.7), the law of
    :math:`r_+ I + \sum_{\ell=0}^L r_\ell K_\ell` (:func:`ntk_coefficients`, :func:`combination_stieltjes`).

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Tanh
        >>> m = ntk_stieltjes(marchenko_pastur_input(1.0), jnp.array([0.5, 2.0]), Tanh(), 2.0 + 1j)
    """
    p = _ntk_problem(inp, gammas, activation, method)
    return _stieltjes(p, z, steps=steps, max_steps=max_steps, throw=throw)


def ntk_density(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, x: ArrayLike, *,
                eta: float = 1e-8, method: AbstractMethod = Auto(), steps: int = 16, max_steps: int = 64,
                throw: bool = True) -> Array:
    r"""Density of the NTK law at ``x`` by Stieltjes inversion (:func:`ntk_stieltjes`)."""
    p = _ntk_problem(inp, gammas, activation, method)
    return _density(p, x, eta=eta, steps=steps, max_steps=max_steps, throw=throw)


def ntk_edge(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, *,
             method: AbstractMethod = Auto(), grid: int = 96, stages: int = 3, steps: int = 16,
             max_steps: int = 64, throw: bool = True) -> Array:
    r"""Right edge :math:`\lambda_{\max}` of the NTK law (:func:`combination_edge`). Differentiable."""
    p = _ntk_problem(inp, gammas, activation, method)
    return _edge(p, grid=grid, stages=stages, steps=steps, max_steps=max_steps, throw=throw)


def ntk_moments(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, *, order: int = 4,
                method: AbstractMethod = Auto(), points: int = 128, steps: int = 16, max_steps: int = 64,
                throw: bool = True) -> Array:
    r"""Moments of the NTK law, :math:`k = 1..\text{order}` (:func:`combination_moments`)."""
    p = _ntk_problem(inp, gammas, activation, method)
    return _moments(p, order=order, points=points, steps=steps, max_steps=max_steps, throw=throw)


def max_stable_learning_rate(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, *,
                             method: AbstractMethod = Auto(), **kwargs) -> Array:
    r""":math:`2/\lambda_{\max}(K^{\mathrm{NTK}})`: full-batch gradient descent on
    :math:`\frac12\|f(X) - y\|^2` (sum over the :math:`n` samples, no :math:`1/n`) of the linearized
    network, :math:`f_{t+1} - y = (I - \eta K^{\mathrm{NTK}})(f_t - y)`, is stable iff
    :math:`\eta < 2/\lambda_{\max}`. Keyword arguments go to :func:`ntk_edge`. Differentiable.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Tanh
        >>> lr = max_stable_learning_rate(marchenko_pastur_input(1.0), jnp.array([1.0, 1.0]), Tanh())
    """
    return 2.0 / ntk_edge(inp, gammas, activation, method=method, **kwargs)


# --------------------------------------------------------------------------------------
# Finite networks
# --------------------------------------------------------------------------------------


class FiniteKernels(NamedTuple):
    r"""Empirical kernels of one random network: ``ck[l]`` is :math:`K_l = X_l^T X_l` for ``l = 0..L``
    (``ck[0]`` the input Gram matrix), ``ntk`` the empirical NTK (all weights, including ``w``), and
    ``w_scale`` :math:`= \|w\|^2/d_L`.

    ``w_scale`` is :math:`1 \pm O(d_L^{-1/2})` and multiplies every back-propagated term of the NTK, so
    at moderate width it is the main finite-size fluctuation of the NTK spectrum: conditionally on it, the
    NTK law is that of :math:`\kappa(r_+ I + \sum_{\ell<L} r_\ell K_\ell) + K_L`
    (:func:`combination_density` with ``shift = kappa r_+``, ``coef = (kappa r_0, .., kappa r_{L-1}, 1)``)."""

    ck: Array
    ntk: Array
    w_scale: Array


def finite_network_kernels(x: ArrayLike, key: jax.Array, widths: Sequence[int], activation: AbstractActivation, *,
                           method: AbstractMethod = Auto()) -> FiniteKernels:
    r"""CK of every layer and the NTK of one random network of the paper's form (module docstring).

    The NTK uses the per-layer formula :math:`K^{\mathrm{NTK}} = K_L + \sum_{\ell=1}^{L}
    (S_\ell^\top S_\ell)\odot K_{\ell-1}`, :math:`S_L = \sigma'(H_L)\odot w/\sqrt{d_L}`,
    :math:`S_\ell = \sigma'(H_\ell)\odot(W_{\ell+1}^\top S_{\ell+1})/\sqrt{d_\ell}`,
    :math:`H_\ell = W_\ell X_{\ell-1}` (the exact Gram matrix of the Jacobian of :math:`f(x_1..x_n)`
    with respect to :math:`(W_1..W_L, w)`; the tests check it against ``jax.jacrev``).

    Args:
        x: inputs, shape ``(n, d_0)``, one per row (used as given; normalize rows for the paper's setting).
        key: PRNG key for the weights.
        widths: :math:`d_1..d_L` (static positive integers).
        activation: :math:`\phi`, normalized to :math:`\sigma` as in :func:`activation_constants`.

    Example:
        >>> import jax
        >>> from rmtjax.activations import Tanh
        >>> x = jax.random.normal(jax.random.key(0), (50, 40))
        >>> x = x / jax.numpy.linalg.norm(x, axis=1, keepdims=True)
        >>> k = finite_network_kernels(x, jax.random.key(1), (60, 70), Tanh())
    """
    x = check_matrix(x, "x")
    widths = tuple(widths)
    if len(widths) < 1 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in widths):
        raise ValueError(f"widths must be a non-empty sequence of integers >= 1, got {widths!r}")
    c = activation_constants(activation, method=method)
    dt = x.dtype

    def sig(h):
        return (activation(h) - c.mean.astype(dt)) / c.std.astype(dt)

    def dsig(h):
        return activation.derivative(h) / c.std.astype(dt)

    keys = jax.random.split(key, len(widths) + 1)
    X = x.T
    Xs, Hs, Ws = [X], [], []
    for k, d in zip(keys[:-1], widths):
        W = jax.random.normal(k, (d, X.shape[0]), dt)
        H = W @ X
        X = sig(H) / math.sqrt(d)
        Ws.append(W)
        Hs.append(H)
        Xs.append(X)
    w = jax.random.normal(keys[-1], (widths[-1],), dt)
    cks = [Xl.T @ Xl for Xl in Xs]
    L = len(widths)
    S = dsig(Hs[-1]) * w[:, None] / math.sqrt(widths[-1])
    ntk = cks[L] + (S.T @ S) * cks[L - 1]
    for l in range(L - 1, 0, -1):  # noqa: E741  (layer index l = L-1..1)
        S = dsig(Hs[l - 1]) * (Ws[l].T @ S) / math.sqrt(widths[l - 1])
        ntk = ntk + (S.T @ S) * cks[l - 1]
    return FiniteKernels(jnp.stack(cks), ntk, jnp.sum(w * w) / widths[-1])
