r"""Random-features ridge regression: its test and train error, for given data and in the
proportional limit.

**Model.** :math:`N` random features :math:`\sigma_j(x) = \phi(w_j^\top x + b_j)` with
:math:`w_j \sim \mathcal N(0, \sigma_w^2 I_d/d)` and :math:`b_j \sim \mathcal N(0, \sigma_b^2)`,
i.i.d.; on the training inputs :math:`X = [x_1..x_T]` they form
:math:`\Sigma = [\sigma_j(x_a)] \in \mathbb R^{N\times T}`. Only the readout is trained, by ridge
regression on targets :math:`Y \in \mathbb R^{T\times k}`:

.. math::
    \hat\beta = \arg\min_\beta \frac1T\|Y - \Sigma^\top\beta\|_F^2 + \gamma\|\beta\|_F^2
              = \frac1T\Sigma\,Q\,Y,\qquad Q = \Big(\frac1T\Sigma^\top\Sigma + \gamma I_T\Big)^{-1},

with train error :math:`E_{\rm train} = \frac1T\|Y - \Sigma^\top\hat\beta\|_F^2 = \frac{\gamma^2}{T}
\|QY\|_F^2` and test error :math:`E_{\rm test} = \frac1{\hat T}\|\hat Y - \hat\Sigma^\top\hat\beta\|_F^2`
on test inputs :math:`\hat X` with targets :math:`\hat Y`.

**Given data** (:func:`random_features_ridge`; Louart, Liao & Couillet 2018, "A random matrix
approach to neural networks", Ann. Appl. Probab. 28(2), Thms. 1-3 and their test-error formula,
eq. (6) ff.). The columns of :math:`\Sigma^\top` are i.i.d. with second moment
:math:`\Phi_{ab} = \mathbb E_w[\sigma(x_a)\sigma(x_b)]`, the dual kernel of :math:`\phi` at the
covariances :math:`q_{ab} = \sigma_w^2 x_a^\top x_b/d + \sigma_b^2`
(the NNGP of one hidden layer, :func:`rmtjax.kernels.kernel`). Sherman-Morrison, as for every sample-covariance
resolvent, gives the deterministic equivalent :math:`\mathbb E\,Q \simeq \bar Q`:

.. math::
    \bar Q = (\Psi + \gamma I_T)^{-1},\qquad \Psi = \frac NT\,\frac{\Phi}{1 + \delta},\qquad
    \delta = \frac1T\operatorname{tr}\Phi\bar Q,

and, with :math:`\Psi_{\hat XX} = \frac NT\Phi_{\hat XX}/(1+\delta)` and
:math:`\Delta = 1 - \frac1N\operatorname{tr}(\Psi\bar Q)^2`,

.. math::
    \bar E_{\rm train} &= \frac{\gamma^2}{T}\Big(\|\bar QY\|_F^2
        + \frac{\frac1N\operatorname{tr}\Psi\bar Q^2}{\Delta}\,
          \operatorname{tr}(Y^\top\bar Q\Psi\bar QY)\Big),\\
    \bar E_{\rm test} &= \frac1{\hat T}\|\hat Y - \Psi_{\hat XX}\bar QY\|_F^2
        + \frac{\operatorname{tr}(Y^\top\bar Q\Psi\bar QY)}{N\Delta}
          \Big(\frac1{\hat T}\operatorname{tr}\Psi_{\hat X\hat X}
          - \frac1{\hat T}\operatorname{tr}\big((I_T + \gamma\bar Q)\Psi_{X\hat X}\Psi_{\hat XX}\bar Q\big)\Big).

The first term of the test error is the error of the mean prediction
:math:`\Psi_{\hat XX}\bar QY` (``test_mean``), the second the variance over the features. The
equivalents are exact as :math:`N, T, d \to \infty` together; at finite sizes their relative
error is a few :math:`10^{-3}` for the traces and up to about 1% for the errors (measured against
Monte-Carlo averages over feature draws at :math:`N = 180..720`, :math:`T = 240..960`; see the
tests).

**The proportional limit** (:func:`random_features_risk`; Mei & Montanari 2022, "The
generalization error of random features regression: precise asymptotics and the double descent
curve", Comm. Pure Appl. Math. 75(4), Def. 1 and Thm. 1). Inputs and feature directions uniform on
the sphere of radius :math:`\sqrt d`, features :math:`\phi(\theta_j^\top x/\sqrt d)`, target
:math:`f(x) = \beta_0 + \beta_1^\top x + f_{\rm NL}(x)` with :math:`\|\beta_1\|^2 = F_1^2`, a
nonlinear part of variance :math:`F_\star^2` and label noise :math:`\tau^2`; ridge objective
:math:`\frac1n\|y - Za\|^2 + \frac{N\lambda}{d}\|a\|^2` (so :math:`\gamma = \psi_1\lambda` above),
:math:`N/d \to \psi_1`, :math:`n/d \to \psi_2`. With the Hermite constants
:math:`\mu_1 = \mathbb E\,G\phi(G)`, :math:`\mu_\star^2 = \mathbb E\phi(G)^2 - \mu_0^2 - \mu_1^2`,
:math:`\zeta = \mu_1/\mu_\star` and :math:`\bar\lambda = \lambda/\mu_\star^2`, the functions
:math:`\nu_1, \nu_2` of Def. 1 taken at :math:`\xi = i\eta`, :math:`\eta = \sqrt{\psi_1\psi_2\bar\lambda}`,
are :math:`\nu_i = i a_i` with :math:`a_i > 0` solving

.. math::
    a_1 = \frac{\psi_1}{\eta + a_2(1 + c)},\qquad a_2 = \frac{\psi_2}{\eta + a_1(1 + c)},\qquad
    c = \frac{\zeta^2}{1 + \zeta^2a_1a_2}.

Here they reduce to one scalar equation in :math:`p = a_1a_2 = -\chi`: with
:math:`s(p) = p + \zeta^2p/(1 + \zeta^2p)`, :math:`\eta^2p = (\psi_1 - s(p))(\psi_2 - s(p))`,
increasing on :math:`s(p) \in [0, \min(\psi_1, \psi_2)]` with a unique root there (bracketed
Newton, :func:`rmtjax.solve.root`, implicit gradients). Then the test error against the clean
target is :math:`R = F_1^2\,E_1/E_0 + (\tau^2 + F_\star^2)\,E_2/E_0 + F_\star^2` (Thm. 1: the
nonlinear part is not learned at :math:`N, n = O(d)` and also acts as noise) with the polynomials
:math:`E_0, E_1, E_2` in :math:`(\chi, \zeta, \psi_1, \psi_2)` of Def. 1 (written out in
:func:`_risk_terms`). It does not depend on :math:`\mu_0` or :math:`\beta_0`.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .. import solve
from .._validate import ArgumentError, as_real, check_range, concrete, error_if
from ..activations import AbstractActivation
from ..gaussian import AbstractMethod, Auto, _expectations
from ..kernels import FullyConnected, kernel, kernel_diagonal
from ._checks import check_activation, check_method

__all__ = ["RandomFeaturesRidge", "RandomFeaturesRisk", "random_features_ridge", "random_features_risk"]


# --------------------------------------------------------------------------------------------
# Given data: Louart, Liao & Couillet (2018)
# --------------------------------------------------------------------------------------------


class RandomFeaturesRidge(NamedTuple):
    r"""The deterministic equivalent of random-features ridge regression on given data.

    Attributes:
        test_error: :math:`\bar E_{\rm test}`, the mean squared error on ``(x_test, y_test)``
            (summed over outputs, averaged over test points), expected over the features.
        train_error: :math:`\bar E_{\rm train}`, the same on the training data.
        test_mean: :math:`\Psi_{\hat XX}\bar QY`, the prediction on ``x_test`` averaged over the
            features, ``(T_test, k)`` (or ``(T_test,)`` for 1-d targets).
        bias: :math:`\frac1{\hat T}\|\hat Y - \Psi_{\hat XX}\bar QY\|_F^2`, the test error of ``test_mean``.
        variance: ``test_error - bias``, the part from the spread of the features.
        delta: the fixed point :math:`\delta`.
    """

    test_error: Array
    train_error: Array
    test_mean: Array
    bias: Array
    variance: Array
    delta: Array


def _delta_residual(delta, args):
    lam, c, ridge = args  # the eigenvalues of Phi
    return delta - jnp.mean(lam / (c * lam / (1 + delta) + ridge))


@jax.custom_jvp
def _delta(phi, c, ridge):
    r"""The fixed point :math:`\delta` and its ``ok`` flag: a bracketed scalar root over the
    eigenvalues of :math:`\Phi` (one ``eigh``, then :math:`O(T)` per Newton step). Its derivative
    is the implicit one, in closed form (:func:`_delta_jvp`), so no eigenvector derivative (NaN at
    degenerate eigenvalues) is ever taken."""
    lam, _ = _spectrum(phi)
    upper = jnp.maximum(jnp.sum(lam) / (phi.shape[0] * ridge), jnp.finfo(phi.dtype).tiny)
    sol = solve.root(_delta_residual, 0.5 * upper, (lam, c, ridge), bracket=(jnp.zeros_like(upper), upper),
                     throw=False, name="delta (random features)")
    return sol.value, sol.ok


def _spectrum(phi):
    lam, U = jnp.linalg.eigh(phi)
    return jnp.maximum(lam, 0.0), U


@_delta.defjvp
def _delta_jvp(primals, tangents):
    r"""Implicit differentiation of :math:`r = \delta - \frac1T\sum_i f(\lambda_i)`,
    :math:`f(\lambda) = \lambda/(a\lambda + \gamma)`, :math:`a = c/(1+\delta)`:
    :math:`d\delta = -(\partial_\Phi r[d\Phi] + \partial_c r\,dc + \partial_\gamma r\,d\gamma)/\partial_\delta r`
    with :math:`\partial_\Phi r[d\Phi] = -\frac1T\operatorname{tr}(f'(\Phi)\,d\Phi)` (a matrix
    function: defined at degenerate eigenvalues too)."""
    phi, c, ridge = primals
    dphi, dc, dridge = tangents
    (delta, ok) = _delta(phi, c, ridge)
    lam, U = _spectrum(jax.lax.stop_gradient(phi))
    T = phi.shape[0]
    a = c / (1 + delta)
    den2 = (a * lam + ridge) ** 2
    fprime = ridge / den2
    d_phi = -jnp.sum((U * fprime[None, :]) @ U.T * dphi) / T
    d_c = jnp.mean(lam * lam / ((1 + delta) * den2))
    d_ridge = jnp.mean(lam / den2)
    d_delta = 1 - jnp.mean(lam * lam * c / ((1 + delta) ** 2 * den2))
    ddelta = -(d_phi + d_c * dc + d_ridge * dridge) / d_delta
    return (delta, ok), (ddelta, np.zeros(jnp.shape(ok), dtype=jax.dtypes.float0))


def _feature_kernels(activation, method, x, x_t, W_std, b_std):
    r""":math:`\Phi(X, X)`, :math:`\Phi(\hat X, X)` and the diagonal :math:`\Phi(\hat x, \hat x)` from
    the kernel engine: the NNGP of one hidden layer (``W_std``, ``b_std``) read out with
    :math:`\sigma_w = 1`, :math:`\sigma_b = 0` is exactly :math:`\mathbb E_w[\phi(w^\top x + b)\phi(w^\top x' + b)]`
    (identical inputs handled exactly, tiled, differentiable)."""
    one, zero = jnp.ones_like(W_std), jnp.zeros_like(b_std)
    net = FullyConnected(1, jnp.stack([W_std, one]), jnp.stack([b_std, zero]), activation)
    phi = kernel(x, None, net, method=method).nngp
    return phi, kernel(x_t, x, net, method=method).nngp, kernel_diagonal(x_t, net, method=method).nngp


@jax.jit
def _ridge_equivalent(phi, phi_t, phi_tt, y, y_t, features, ridge):
    phi = 0.5 * (phi + phi.T)
    T, Tt = phi.shape[0], phi_t.shape[0]
    c = features / T
    eye = jnp.eye(T, dtype=phi.dtype)
    delta, ok_delta = _delta(phi, c, ridge)
    psi = c * phi / (1 + delta)
    psi_t = c * phi_t / (1 + delta)
    chol = jax.scipy.linalg.cho_factor(psi + ridge * eye, lower=True)
    qbar = jax.scipy.linalg.cho_solve(chol, eye)
    qbar = 0.5 * (qbar + qbar.T)
    q_psi = qbar @ psi
    a = qbar @ y
    a_psi_a = jnp.sum(a * (psi @ a))
    denom = 1 - jnp.sum(q_psi * q_psi.T) / features
    train = ridge**2 / T * (jnp.sum(a * a) + jnp.sum(q_psi * qbar) / features / denom * a_psi_a)
    mean = psi_t @ a
    bias = jnp.sum((y_t - mean) ** 2) / Tt
    q_pt = qbar @ psi_t.T
    spread = (c * jnp.sum(phi_tt) / (1 + delta) - jnp.sum((psi_t.T + ridge * q_pt) * q_pt)) / Tt
    variance = a_psi_a / (features * denom) * spread
    ok = ok_delta & (denom > 0) & jnp.isfinite(train) & jnp.isfinite(bias) & jnp.isfinite(variance)
    return RandomFeaturesRidge(bias + variance, train, mean, bias, variance, delta), ok


def random_features_ridge(
    x: Float[ArrayLike, "T d"],
    y: Float[ArrayLike, "T *k"],
    x_test: Float[ArrayLike, "Tt d"],
    y_test: Float[ArrayLike, "Tt *k"],
    activation: AbstractActivation,
    *,
    features: ArrayLike,
    ridge: ArrayLike,
    W_std: ArrayLike = 1.0,
    b_std: ArrayLike = 0.0,
    method: AbstractMethod = Auto(),
) -> RandomFeaturesRidge:
    r"""Test and train error of ridge regression on ``features`` random features of the data,
    expected over the features: the deterministic equivalent of Louart, Liao & Couillet (2018)
    (formulas in the module docstring).

    The features are :math:`\phi(w^\top x + b)`, :math:`w \sim \mathcal N(0, \sigma_w^2 I/d)`,
    :math:`b \sim \mathcal N(0, \sigma_b^2)` (one hidden layer of an NTK-parameterized network at
    initialization, of width ``features``); the readout minimizes
    :math:`\frac1T\|Y - \Sigma^\top\beta\|_F^2 + \gamma\|\beta\|_F^2`.

    Args:
        x: training inputs ``(T, d)``, real and finite.
        y: training targets ``(T,)`` or ``(T, k)``.
        x_test: test inputs ``(T_test, d)``.
        y_test: test targets, ``(T_test,)`` or ``(T_test, k)`` like ``y``.
        activation: an :mod:`rmtjax.activations` module (any; the feature kernel :math:`\Phi` is the
            NNGP of one hidden layer from :func:`rmtjax.kernels.kernel` with ``method``).
        features: the number of features :math:`N > 0` (real: the formula is smooth in it).
        ridge: :math:`\gamma > 0`.
        W_std, b_std: :math:`\sigma_w \ge 0`, :math:`\sigma_b \ge 0`.
        method: the Gaussian-expectation method (default :class:`rmtjax.gaussian.Auto`).

    Differentiable in ``x``, the targets, ``features``, ``ridge``, ``W_std``, ``b_std`` and the
    activation's parameters (:math:`\delta` by implicit differentiation, in closed form). Cost: one
    symmetric eigendecomposition of :math:`\Phi` (for :math:`\delta`; each Newton step is then
    :math:`O(T)`), one Cholesky factorization and a few :math:`T\times T` products, and
    :math:`O(T^2\hat T)` for the test error.

    Returns:
        :class:`RandomFeaturesRidge`.

    Raises:
        ValueError: for invalid arguments (eagerly, or through a compiled check under ``jit``),
            and where the equivalent has no finite value (e.g. a feature kernel that is not
            finite in this dtype).

    Example:
        >>> import jax
        >>> from rmtjax.activations import Relu
        >>> x = jax.random.normal(jax.random.key(0), (40, 10))
        >>> y = x[:, 0]
        >>> r = random_features_ridge(x[:30], y[:30], x[30:], y[30:], Relu(), features=60, ridge=0.1)
        >>> bool(r.train_error < r.test_error)
        True
    """
    activation = check_activation(activation)
    method = check_method(method, activation)
    x = check_range(as_real(x, "x", ndim=2), "x")
    dt = x.dtype
    y = check_range(as_real(y, "y", ndim=(1, 2), dtype=dt), "y")
    x_test = check_range(as_real(x_test, "x_test", ndim=2, dtype=dt), "x_test")
    y_test = check_range(as_real(y_test, "y_test", ndim=(1, 2), dtype=dt), "y_test")
    if y.shape[0] != x.shape[0]:
        raise ArgumentError(f"y must have one row per row of x ({x.shape[0]}), got shape {y.shape}")
    if x_test.shape[1] != x.shape[1]:
        raise ArgumentError(f"x_test must have the features of x ({x.shape[1]} columns), got shape {x_test.shape}")
    if y_test.shape[0] != x_test.shape[0] or y_test.shape[1:] != y.shape[1:]:
        raise ArgumentError(f"y_test must have shape {(x_test.shape[0],) + y.shape[1:]} (one row per row of x_test, "
                            f"outputs as y), got {y_test.shape}")
    features = check_range(as_real(features, "features", ndim=0, dtype=dt), "features", lo=0.0, lo_open=True)
    ridge = check_range(as_real(ridge, "ridge", ndim=0, dtype=dt), "ridge", lo=0.0, lo_open=True)
    W_std = check_range(as_real(W_std, "W_std", ndim=0, dtype=dt), "W_std", lo=0.0)
    b_std = check_range(as_real(b_std, "b_std", ndim=0, dtype=dt), "b_std", lo=0.0)
    phi, phi_t, phi_tt = _feature_kernels(activation, method, x, x_test, W_std, b_std)
    y2, yt2 = y.reshape(y.shape[0], -1), y_test.reshape(y_test.shape[0], -1)
    out, ok = _ridge_equivalent(phi, phi_t, phi_tt, y2, yt2, features, ridge)
    out = out._replace(test_mean=out.test_mean.reshape(y_test.shape))
    msg = (f"x, ridge: the random-features equivalent has no finite value here (a ridge too small for "
           f"{jnp.dtype(dt).name}, or a feature kernel of {type(activation).__name__} that is not finite at these "
           "inputs); raise the ridge, scale the inputs or W_std down, or use float64")
    return RandomFeaturesRidge(*error_if(tuple(out), ~ok, msg))


# --------------------------------------------------------------------------------------------
# The proportional limit: Mei & Montanari (2022)
# --------------------------------------------------------------------------------------------


class RandomFeaturesRisk(NamedTuple):
    r"""The asymptotic test error of random-features ridge regression (Mei & Montanari), arrays
    of the broadcast shape of ``psi1``, ``psi2`` and ``ridge``.

    Attributes:
        test_error: :math:`R = F_1^2 B + (\tau^2 + F_\star^2) V + F_\star^2`, against the clean target.
        bias: :math:`B = E_1/E_0` (the error per unit of :math:`F_1^2`).
        variance: :math:`V = E_2/E_0` (the error per unit of noise :math:`\tau^2 + F_\star^2`).
        chi: :math:`\chi = \nu_1\nu_2 < 0` at :math:`\xi = i\sqrt{\psi_1\psi_2\bar\lambda}`.
        zeta: :math:`\zeta = \mu_1/\mu_\star` of the activation (a scalar).
    """

    test_error: Array
    bias: Array
    variance: Array
    chi: Array
    zeta: Array


def _risk_terms(chi, z2, psi1, psi2):
    """Mei & Montanari's :math:`E_0, E_1, E_2` (Def. 1), ``z2`` = :math:`\\zeta^2`."""
    z4, z6, p = z2 * z2, z2 * z2 * z2, psi1 * psi2
    c2, c3 = chi * chi, chi * chi * chi
    c4, c5 = c3 * chi, c3 * chi * chi
    e0 = (-c5 * z6 + 3 * c4 * z4 + (p - psi2 - psi1 + 1) * c3 * z6 - 2 * c3 * z4 - 3 * c3 * z2
          + (psi1 + psi2 - 3 * p + 1) * c2 * z4 + 2 * c2 * z2 + c2 + 3 * p * chi * z2 - p)
    e1 = psi2 * c3 * z4 - psi2 * c2 * z2 + p * chi * z2 - p
    e2 = c5 * z6 - 3 * c4 * z4 + (psi1 - 1) * c3 * z6 + 2 * c3 * z4 + 3 * c3 * z2 - (psi1 + 1) * c2 * z4 - 2 * c2 * z2 - c2
    return e0, e1, e2


def _s(p, z2):
    return p + z2 * p / (1 + z2 * p)


def _p_residual(p, args):
    z2, psi1, psi2, eta2 = args
    s = _s(p, z2)
    return eta2 * p - (psi1 - s) * (psi2 - s)


def _risk_one(z2, psi1, psi2, lam_bar):
    m = jnp.minimum(psi1, psi2)
    b = 1 + z2 - m * z2
    p_max = 2 * m / (b + jnp.sqrt(b * b + 4 * z2 * m))  # s(p_max) = min(psi1, psi2)
    eta2 = psi1 * psi2 * lam_bar
    sol = solve.root(_p_residual, 0.5 * p_max, (z2, psi1, psi2, eta2), bracket=(jnp.zeros_like(p_max), p_max),
                     throw=False, name="chi (random features)")
    chi = -sol.value
    e0, e1, e2 = _risk_terms(chi, z2, psi1, psi2)
    return e1 / e0, e2 / e0, chi, sol.ok & (e0 != 0)


@eqx.filter_jit
def _risk(activation, method, psi1, psi2, ridge):
    dt = psi1.dtype
    one, zero = jnp.ones((), dt), jnp.zeros((), dt)
    full = _expectations(activation, one, one, one, method)
    indep = _expectations(activation, one, one, zero, method)
    mu1_sq = indep.kdot  # (E phi')^2 = (E G phi(G))^2 by Stein's lemma
    mu_star_sq = full.k - indep.k - mu1_sq  # E phi^2 - mu0^2 - mu1^2
    linear = ~(mu_star_sq > 100 * jnp.finfo(dt).eps * jnp.maximum(full.k, jnp.finfo(dt).tiny))
    z2 = mu1_sq / jnp.where(linear, 1, mu_star_sq)
    shape = psi1.shape
    flat = [a.reshape(-1) for a in (psi1, psi2, ridge / jnp.where(linear, 1, mu_star_sq))]
    out = jax.vmap(_risk_one, (None, 0, 0, 0))(z2, *flat)
    return tuple(a.reshape(shape) for a in out), jnp.sqrt(z2), linear


def random_features_risk(
    activation: AbstractActivation,
    psi1: ArrayLike,
    psi2: ArrayLike,
    ridge: ArrayLike,
    *,
    signal: ArrayLike = 1.0,
    nonlinear: ArrayLike = 0.0,
    noise: ArrayLike = 0.0,
    method: AbstractMethod = Auto(),
) -> RandomFeaturesRisk:
    r"""The asymptotic test error of random-features ridge regression with :math:`N = \psi_1 d`
    features and :math:`n = \psi_2 d` samples on the sphere, as :math:`d \to \infty` (Mei &
    Montanari, Def. 1 and Thm. 1; formulas and conventions in the module docstring): the double
    descent curve.

    Args:
        activation: an :mod:`rmtjax.activations` module that is not linear
            (:math:`\mu_\star > 0`); its constants come from
            :func:`rmtjax.gaussian.gaussian_expectations` at unit variance with ``method``.
        psi1: :math:`N/d > 0`; ``psi1``, ``psi2`` and ``ridge`` broadcast together.
        psi2: :math:`n/d > 0`.
        ridge: :math:`\lambda > 0` of the objective :math:`\frac1n\|y - Za\|^2 + \frac{N\lambda}{d}\|a\|^2`
            (the ridgeless limit is not covered).
        signal: :math:`F_1^2 \ge 0`, the squared norm of the target's linear part.
        nonlinear: :math:`F_\star^2 \ge 0`, the variance of its nonlinear part.
        noise: :math:`\tau^2 \ge 0`, the label-noise variance.
        method: the Gaussian-expectation method (default :class:`rmtjax.gaussian.Auto`).

    Differentiable in every real argument and in the activation's parameters.

    Returns:
        :class:`RandomFeaturesRisk`.

    Raises:
        ValueError: for invalid arguments, eagerly or through a compiled check under ``jit``
            (including a linear activation, :math:`\mu_\star = 0`).

    Example:
        >>> from rmtjax.activations import Relu
        >>> r = random_features_risk(Relu(), 2.0, 3.0, 0.1, noise=0.2)
        >>> round(float(r.test_error), 4)
        0.4357
    """
    activation = check_activation(activation)
    method = check_method(method, activation)
    psi1 = check_range(as_real(psi1, "psi1"), "psi1", lo=0.0, lo_open=True)
    dt = psi1.dtype
    psi2 = check_range(as_real(psi2, "psi2", dtype=dt), "psi2", lo=0.0, lo_open=True)
    ridge = check_range(as_real(ridge, "ridge", dtype=dt), "ridge", lo=0.0, lo_open=True)
    try:
        psi1, psi2, ridge = jnp.broadcast_arrays(psi1, psi2, ridge)
    except ValueError:
        raise ArgumentError(f"psi1, psi2 and ridge must broadcast together, got shapes {jnp.shape(psi1)}, "
                            f"{jnp.shape(psi2)}, {jnp.shape(ridge)}") from None
    signal = check_range(as_real(signal, "signal", ndim=0, dtype=dt), "signal", lo=0.0)
    nonlinear = check_range(as_real(nonlinear, "nonlinear", ndim=0, dtype=dt), "nonlinear", lo=0.0)
    noise = check_range(as_real(noise, "noise", ndim=0, dtype=dt), "noise", lo=0.0)
    (bias, variance, chi, ok), zeta, linear = _risk(activation, method, psi1, psi2, ridge)
    msg = (f"activation: {type(activation).__name__} is linear at unit variance (mu_star = 0); the formula needs a "
           "nonlinear one")
    if concrete(linear) is not None and bool(concrete(linear)):
        raise ArgumentError(msg)
    zeta = error_if(zeta, linear, msg)
    out = RandomFeaturesRisk(signal * bias + (noise + nonlinear) * variance + nonlinear, bias, variance, chi, zeta)
    msg = "psi1, psi2, ridge: the random-features fixed point did not converge (or E0 = 0) at these values"
    return RandomFeaturesRisk(*error_if(tuple(out), ~ok, msg))
