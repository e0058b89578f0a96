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

**Validation.** Arguments follow the rule of :mod:`rmtjax._validate` (``ValueError`` naming the
argument, eagerly or as a compiled check under ``jit``): ``gammas`` finite and ``> 0``, ``b2`` in
:math:`[0, 1]`, ``shift`` and ``coef`` finite and ``>= 0``, ``z`` finite with
:math:`\operatorname{Im}z \ne 0` or real :math:`z < 0`, ``x`` and ``eta > 0`` finite, static
integers in range. A solve that does not reach the physical branch
(:math:`\operatorname{Im}m \ge 0` above the axis) raises with ``throw=True`` (compiled in under
``jit``) and gives ``nan`` at that point with ``throw=False``. Tolerances scale with the dtype.

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
from .._validate import (ArgumentError, check_matrix, check_range, concrete, error_if, flag, prng_key, real,
                         reraise_as_value_error, static_int)
from ..activations import AbstractActivation
from ..gaussian import AbstractMethod, Auto, gaussian_expectations, hermite_coefficients_at
from ..solve import Newton, fixed_point, root
from ._checks import as_complex, check_activation, check_method, describe_points, eps, finish, points, tolerances

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


@reraise_as_value_error
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
    activation = check_activation(activation)
    method = check_method(method)
    return _activation_constants(activation, method)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _expectations(activation, method):
    """E[phi^2], E[phi]^2, E[phi'^2], E[phi']^2 and a signed estimate of E[phi] (compiled once per
    activation type and method)."""
    dt = _widest(*[x for x in jax.tree_util.tree_leaves(activation) if jnp.issubdtype(x.dtype, jnp.floating)])
    one = jnp.ones((), dt)
    e = gaussian_expectations(activation, one, one, jnp.array([1.0, 0.0], dt), method=method)
    t = hermite_coefficients_at(activation, one, order=0)[0]
    return e.k, e.kdot, t


def _activation_constants(activation, method):
    k, kdot, t = _expectations(activation, method)
    var = k[0] - k[1]
    v = concrete(var)
    msg = (f"activation ({type(activation).__name__}) cannot be normalized: Var[phi(xi)] must be finite and > 0 for "
           "xi ~ N(0, 1) (Fan & Wang's assumption E sigma = 0, E sigma^2 = 1)")
    if v is not None:
        scale = float(np.abs(concrete(k[0])))
        if not (np.isfinite(v) and np.isfinite(scale) and v > 100 * eps(var.dtype) * max(1.0, scale)):
            raise ArgumentError(f"{msg}; got Var = {float(v)}")
    else:
        var = error_if(var, ~(jnp.isfinite(var) & (var > 0)), msg)
    mean = t + jax.lax.stop_gradient(jnp.sign(t) * safe_sqrt(k[1]) - t)
    return ActivationConstants(mean, jnp.sqrt(var), kdot[1] / var, kdot[0] / var)


class NTKCoefficients(NamedTuple):
    r""":math:`K^{\mathrm{NTK}} \simeq r_+ I + \sum_{\ell=0}^L r_\ell K_\ell` (``r`` has length ``L + 1``)."""

    r_plus: Array
    r: Array


def _ntk_coefficients(c: ActivationConstants, depth: int) -> NTKCoefficients:
    k = jnp.arange(1, depth + 1, dtype=c.b2.dtype)
    r_plus = jnp.sum(c.a**k - c.b2**k)
    r = c.b2 ** jnp.arange(depth, -1, -1, dtype=c.b2.dtype)
    return NTKCoefficients(r_plus, r)


@reraise_as_value_error
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
    depth = static_int(depth, "depth", lo=1, hi=10**6)
    return _ntk_coefficients(activation_constants(activation, method=method), depth)


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
        ev = real(eigenvalues, "eigenvalues", ndim=1, lo=0.0)
        w = None if weights is None else real(weights, "weights", ndim=1, lo=0.0)
        r = None if ratio is None else real(ratio, "ratio", ndim=0, lo=0.0, lo_open=True)
        if w is not None and w.shape != ev.shape:
            raise ArgumentError(f"weights must have the shape of eigenvalues {ev.shape}, got {w.shape}")
        dt = _widest(ev, w, r)
        ev = jnp.asarray(ev, dtype=dt)
        if w is None:
            w = jnp.full(ev.shape, 1.0 / ev.shape[0], dt)
        else:
            w = jnp.asarray(w, dtype=dt)
            total = jnp.sum(w)
            tol = max(1e-8, 8 * ev.shape[0] * eps(dt))
            msg = f"weights must sum to 1 (within {tol:.1e})"
            tc = concrete(total)
            if tc is not None:
                if not abs(float(tc) - 1.0) <= tol:
                    raise ArgumentError(f"{msg}, got sum {float(tc)!r}")
            else:
                w = error_if(w, ~(jnp.abs(total - 1) <= tol), msg)
        self.eigenvalues, self.weights = ev, w
        self.ratio = None if r is None else jnp.asarray(r, dtype=dt)


def _widest(*arrays):
    """The widest float dtype among the strongly typed arrays (``None`` entries skipped)."""
    strong = [np.dtype(a.dtype) for a in arrays if a is not None and not a.weak_type]
    return np.result_type(*strong) if strong else jnp.result_type(float)


@reraise_as_value_error
def marchenko_pastur_input(ratio: ArrayLike) -> InputSpectrum:
    r"""Inputs with i.i.d. Gaussian entries (rows normalized or not): :math:`\mu_0 =
    \rho^{\mathrm{MP}}_{\text{ratio}}`, ``ratio`` :math:`= n/d_0 > 0`."""
    r = real(ratio, "ratio", ndim=0, lo=0.0, lo_open=True)
    return InputSpectrum(jnp.ones((1,), r.dtype), jnp.ones((1,), r.dtype), r)


@reraise_as_value_error
def empirical_input(x: ArrayLike) -> InputSpectrum:
    r"""The empirical spectral law of :math:`K_0 = X_0^\top X_0` for data ``x`` of shape ``(n, d_0)``
    (rows are the inputs; normalize them to unit norm for the paper's setting)."""
    x = check_range(check_matrix(x, "x"), "x")
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
    """``gammas`` (n/d_l, one per hidden layer): a finite, non-empty 1-d array with entries > 0."""
    return real(gammas, "gammas", ndim=1, lo=0.0, lo_open=True)


def _check_b2(b2) -> Array:
    return real(b2, "b2", ndim=0, lo=0.0, hi=1.0)


def _check_inp(inp):
    if not isinstance(inp, InputSpectrum):
        raise ArgumentError(f"inp must be an InputSpectrum (marchenko_pastur_input / empirical_input), got {inp!r:.80}")
    return inp


def _problem(inp: InputSpectrum, gammas, b2, shift, coef) -> _Problem:
    inp = _check_inp(inp)
    gammas = _check_gammas(gammas)
    b2 = _check_b2(b2)
    L = gammas.shape[0]
    coef = real(coef, "coef", ndim=1, lo=0.0)
    if coef.shape != (L + 1,):
        raise ArgumentError(f"coef must have shape (L + 1,) = ({L + 1},) (one per K_0..K_L), got {coef.shape}")
    shift = real(shift, "shift", ndim=0, lo=0.0)
    dt = _widest(gammas, b2, coef, shift, inp.eigenvalues)
    gammas, b2, coef, shift = (jnp.asarray(v, dtype=dt) for v in (gammas, b2, coef, shift))
    b2s = jnp.broadcast_to(b2, (L,))
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


def _fp_map(s, a):
    return _map(s, a[1], a[0])[0]


def _fp(p, z, s0, *, max_steps):
    return fixed_point(_fp_map, s0, (p, z), solver=Newton(), max_steps=max_steps, throw=False,
                       name="linear-width Marchenko-Pastur fixed point")


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


def _solve_at(p: _Problem, z, *, steps: int, max_steps: int):
    """(m(z), ok) for one complex z with Im z >= 0: continuation in Im z (:func:`_predict`), then one
    differentiable Newton solve through :func:`rmtjax.solve.fixed_point`. ``ok``: converged to a
    finite m on the physical branch (Im m >= 0 for Im z >= 0, m = int dmu / (lambda - z))."""
    z = jnp.asarray(z).astype(jnp.complex128 if p.gam.dtype == jnp.float64 else jnp.complex64)
    if p.gam.shape[0] == 0:
        q = _cast(p, z.dtype)
        return jnp.sum(q.wts / (q.shift + q.coef[0] * q.atoms - z)), jnp.asarray(True)
    x, y = jnp.real(z), jnp.imag(z)
    y_end = jnp.maximum(y, 1e-12 * _scale(p))
    s_pred = _predict(p, x, y_end, steps=steps, iters=_ITERS)
    sol = _fp(p, z, s_pred, max_steps=max_steps)
    fs, m = _map(sol.value, z, p)
    rtol, _ = tolerances(m.dtype)
    # At a square-root edge the Jacobian of s - F(s) is nearly singular (a fold at Im z -> 0), so
    # Newton's step stalls at rounding noise amplified by 1/|det| and whether it meets the step
    # tolerance depends on how the compiler orders floating-point operations (measured: the edge
    # x = 2.25 of MP_{1/4} at eta = 1e-10 met it under XLA's default optimizations, not under -O0).
    # A residual at the rounding level is as converged as the conditioning allows: accept it.
    at_rounding = jnp.max(jnp.abs(fs - sol.value)) <= 64 * eps(m.dtype) * jnp.maximum(1.0, jnp.max(jnp.abs(sol.value)))
    ok = (sol.ok | at_rounding) & jnp.isfinite(m) & (jnp.imag(m) >= -10 * rtol * jnp.abs(m))
    return m, ok


_ITERS = 5  # Newton steps per rung of the continuation ladder


def _cdtype(p):
    return jnp.complex128 if p.gam.dtype == jnp.float64 else jnp.complex64


def _check_z(z):
    """A finite ``z`` (any shape) with Im z != 0 or real z < 0 (eagerly, or a compiled check)."""
    z = as_complex(points(z, "z"))
    bad = (jnp.imag(z) == 0) & (jnp.real(z) >= 0)
    msg = ("z must have Im z != 0 or be real and < 0 (the spectra lie in [0, inf)); for the density on the "
           "support use *_density(x, eta=...)")
    b = concrete(bad)
    if b is not None:
        if np.any(b):
            raise ArgumentError(f"{msg}; got {np.asarray(concrete(z))[np.asarray(b)].ravel()[:3]}")
        return z
    return error_if(z, jnp.any(bad), msg)


def _solver_options(steps, max_steps, throw):
    return (static_int(steps, "steps", lo=1, hi=10_000), static_int(max_steps, "max_steps", lo=1, hi=10**6),
            flag(throw, "throw"))


_FAILED = ("the linear-width fixed point did not converge on the physical branch (Im m >= 0 above the axis) at "
           "these points; raise steps or max_steps, or pass throw=False to get nan there")


def _apply_throw(value, ok, throw, at=None):
    """``throw=True``: ValueError / compiled check where not ok; ``throw=False``: nan there."""
    if throw:
        return finish(value, ok, throw=True, eager=_FAILED, at=at)
    nan = jnp.full_like(value, jnp.nan)
    return jnp.where(ok, value, nan)


def _stieltjes(p, z, *, steps, max_steps, throw):
    steps, max_steps, throw = _solver_options(steps, max_steps, throw)
    z = _check_z(z).astype(_cdtype(p))
    m, ok = _stieltjes_jit(p, z, steps=steps, max_steps=max_steps)
    return _apply_throw(m, ok, throw, describe_points(z))


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _stieltjes_jit(p, z, *, steps, max_steps):
    flip = jnp.imag(z) < 0
    zu = jnp.where(flip, jnp.conj(z), z)
    m, ok = jax.vmap(lambda w: _solve_at(p, w, steps=steps, max_steps=max_steps))(zu.reshape(-1))
    m, ok = m.reshape(z.shape), ok.reshape(z.shape)
    return jnp.where(flip, jnp.conj(m), m), ok


def _default_eta(dtype):
    """Default height of the densities: 1e-8 in float64, 1e-5 in float32 (measured: the float32
    density is within 1e-4 of the float64 one there; smaller heights cost accuracy at the edges)."""
    return 1e-8 if eps(dtype) < 1e-10 else 1e-5


def _density(p, x, *, eta, steps, max_steps, throw):
    steps, max_steps, throw = _solver_options(steps, max_steps, throw)
    x = points(x, "x", complex_ok=False).astype(p.gam.dtype)
    eta = _default_eta(x.dtype) if eta is None else eta
    eta = real(eta, "eta", lo=0.0, lo_open=True)
    try:
        shape = jnp.broadcast_shapes(x.shape, eta.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ArgumentError(f"eta must be a scalar or broadcast against x {x.shape}, got shape {eta.shape}")
    eta = jnp.broadcast_to(eta.astype(x.dtype), x.shape)
    d, ok = _density_jit(p, x, eta, steps=steps, max_steps=max_steps)
    return _apply_throw(d, ok, throw, describe_points(x))


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _density_jit(p, x, eta, *, steps, max_steps):
    m, ok = jax.vmap(lambda xi, ei: _solve_at(p, jax.lax.complex(xi, ei), steps=steps, max_steps=max_steps))(
        x.reshape(-1), eta.reshape(-1))
    return (jnp.imag(m) / math.pi).reshape(x.shape), ok.reshape(x.shape)


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


def _edge(p: _Problem, *, grid: int, stages: int, steps: int, max_steps: int, throw: bool):
    steps, max_steps, throw = _solver_options(steps, max_steps, throw)
    grid = static_int(grid, "grid", lo=4, hi=100_000)
    stages = static_int(stages, "stages", lo=1, hi=20)
    e, ok = _edge_jit(p, grid=grid, stages=stages, steps=steps, max_steps=max_steps)
    if throw:
        return finish(e, ok, throw=True, eager="the spectral edge (fold of the linear-width fixed point) did not "
                      "converge; raise grid or stages, or pass throw=False to get nan")
    return jnp.where(ok, e, jnp.nan)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _edge_jit(p: _Problem, *, grid: int, stages: int, steps: int, max_steps: int):
    if p.gam.shape[0] == 0:
        return p.shift + p.coef[0] * jnp.max(p.atoms), jnp.asarray(True)
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
    sol = root(_fold, jax.lax.stop_gradient(y0), p, max_steps=max_steps, throw=False,
               name="spectral edge (fold of the linear-width fixed point)")
    e = sol.value[-1]
    return e, sol.ok & jnp.isfinite(e) & (e >= 0)


# --------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------


def _moments(p: _Problem, *, order: int, points: int, steps: int, max_steps: int, throw: bool):
    steps, max_steps, throw = _solver_options(steps, max_steps, throw)
    order = static_int(order, "order", lo=1, hi=100)
    points = static_int(points, "points", lo=16, hi=100_000)
    if points % 2:
        raise ArgumentError(f"points must be an even integer >= 16, got {points}")
    mom, ok = _moments_jit(p, order=order, points=points, steps=steps, max_steps=max_steps)
    if throw:
        return finish(mom, ok, throw=True, eager=_FAILED.replace("these points", "the contour"))
    return jnp.where(ok, mom, jnp.nan)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _moments_jit(p: _Problem, *, order: int, points: int, steps: int, max_steps: int):
    U = _scale(p)
    c0, R = 0.5 * U, 0.75 * U
    half = points // 2
    phi = math.pi * jnp.arange(half + 1, dtype=U.dtype) / half  # [0, pi], upper half circle
    zs = jax.lax.complex(c0 + R * jnp.cos(phi), R * jnp.sin(phi))
    zs = jnp.where(jnp.arange(half + 1) == half, jax.lax.complex(c0 - R, 0.0 * R), zs)
    zs = jnp.where(jnp.arange(half + 1) == 0, jax.lax.complex(c0 + R, 0.0 * R), zs)
    m, ok = jax.vmap(lambda w: _solve_at(p, w, steps=steps, max_steps=max_steps))(zs)
    # full circle by conjugate symmetry: phi_j = 2 pi j / points, j = 0..points-1
    m_full = jnp.concatenate([m, jnp.conj(m[1:half][::-1])])
    z_full = jnp.concatenate([zs, jnp.conj(zs[1:half][::-1])])
    e = (z_full - c0.astype(z_full.dtype)) / R.astype(z_full.dtype)  # e^{i phi}
    ks = jnp.arange(1, order + 1)
    zk = z_full[None, :] ** ks[:, None].astype(z_full.dtype)
    mom = -jnp.mean(zk * m_full[None, :] * e[None, :], axis=1) * R.astype(z_full.dtype)
    return jnp.real(mom), jnp.all(ok)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


@reraise_as_value_error
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


@reraise_as_value_error
def combination_density(inp: InputSpectrum, gammas: ArrayLike, b2: ArrayLike, shift: ArrayLike, coef: ArrayLike,
                        x: ArrayLike, *, eta: ArrayLike | None = None, steps: int = 16, max_steps: int = 64,
                        throw: bool = True) -> Array:
    r"""Density :math:`\operatorname{Im} m(x + i\eta)/\pi` of the law of :func:`combination_stieltjes`
    at the real points ``x`` (finite, any shape). Finite (no NaN) on the whole real line, edges
    included; atoms (e.g. at 0 when some :math:`\gamma > 1`) appear as peaks of width :math:`\eta`.
    ``eta > 0`` (a scalar or broadcasting against ``x``) defaults to :math:`10^{-8}` in float64 and
    :math:`10^{-5}` in float32."""
    p = _problem(inp, gammas, b2, shift, coef)
    return _density(p, x, eta=eta, steps=steps, max_steps=max_steps, throw=throw)


@reraise_as_value_error
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


@reraise_as_value_error
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
    _check_inp(inp)
    gammas = _check_gammas(gammas)
    c = activation_constants(activation, method=method)
    r_plus, r = _ntk_coefficients(c, gammas.shape[0])
    return _problem(inp, gammas, c.b2, r_plus, r)


def _ck(inp, gammas, activation, layer, method):
    """The CK of ``layer`` as the combination with coefficients e_layer over all L layers: the levels
    above ``layer`` get s = 0, and every layer shares one compiled program with the NTK."""
    _check_inp(inp)
    gammas = _check_gammas(gammas)
    L = gammas.shape[0]
    layer = L if layer is None else static_int(layer, "layer", lo=0, hi=L)
    b2 = activation_constants(activation, method=method).b2
    return _problem(inp, gammas, b2, 0.0, jnp.zeros((L + 1,), gammas.dtype).at[layer].set(1.0)), layer


@reraise_as_value_error
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


@reraise_as_value_error
def ck_density(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, x: ArrayLike, *,
               layer: int | None = None, eta: ArrayLike | None = None, method: AbstractMethod = Auto(), steps: int = 16,
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


@reraise_as_value_error
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
        _solver_options(steps, max_steps, throw)
        return jnp.max(jnp.where(inp.weights > 0, inp.eigenvalues, 0.0))
    return _edge(p, grid=grid, stages=stages, steps=steps, max_steps=max_steps, throw=throw)


@reraise_as_value_error
def ck_moments(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, *, layer: int | None = None,
               order: int = 4, method: AbstractMethod = Auto(), points: int = 128, steps: int = 16,
               max_steps: int = 64, throw: bool = True) -> Array:
    r"""Moments :math:`\int\lambda^k d\mu_\ell`, :math:`k = 1..\text{order}` (see :func:`combination_moments`)."""
    p, _ = _ck(inp, gammas, activation, layer, method)
    return _moments(p, order=order, points=points, steps=steps, max_steps=max_steps, throw=throw)


@reraise_as_value_error
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


@reraise_as_value_error
def ntk_density(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, x: ArrayLike, *,
                eta: ArrayLike | None = None, method: AbstractMethod = Auto(), steps: int = 16, max_steps: int = 64,
                throw: bool = True) -> Array:
    r"""Density of the NTK law at ``x`` by Stieltjes inversion (:func:`ntk_stieltjes`)."""
    p = _ntk_problem(inp, gammas, activation, method)
    return _density(p, x, eta=eta, steps=steps, max_steps=max_steps, throw=throw)


@reraise_as_value_error
def ntk_edge(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, *,
             method: AbstractMethod = Auto(), grid: int = 96, stages: int = 3, steps: int = 16,
             max_steps: int = 64, throw: bool = True) -> Array:
    r"""Right edge :math:`\lambda_{\max}` of the NTK law (:func:`combination_edge`). Differentiable."""
    p = _ntk_problem(inp, gammas, activation, method)
    return _edge(p, grid=grid, stages=stages, steps=steps, max_steps=max_steps, throw=throw)


@reraise_as_value_error
def ntk_moments(inp: InputSpectrum, gammas: ArrayLike, activation: AbstractActivation, *, order: int = 4,
                method: AbstractMethod = Auto(), points: int = 128, steps: int = 16, max_steps: int = 64,
                throw: bool = True) -> Array:
    r"""Moments of the NTK law, :math:`k = 1..\text{order}` (:func:`combination_moments`)."""
    p = _ntk_problem(inp, gammas, activation, method)
    return _moments(p, order=order, points=points, steps=steps, max_steps=max_steps, throw=throw)


@reraise_as_value_error
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
    allowed = {"grid", "stages", "steps", "max_steps", "throw"}
    if set(kwargs) - allowed:
        raise ArgumentError(f"max_stable_learning_rate takes the keyword arguments of ntk_edge ({sorted(allowed)}), "
                            f"got {sorted(set(kwargs) - allowed)}")
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


@reraise_as_value_error
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
    x = check_range(check_matrix(x, "x"), "x")
    key = prng_key(key, "key")
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise ArgumentError(f"widths must be a non-empty sequence of integers >= 1, got {widths!r:.60}")
    widths = tuple(static_int(d, "widths", lo=1, hi=10**6) for d in widths)
    if not widths:
        raise ArgumentError("widths must be a non-empty sequence of integers >= 1, got an empty sequence")
    activation = check_activation(activation)
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
