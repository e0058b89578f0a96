r"""Learning curves of kernel ridge regression: the deterministic equivalent of its test error.

Kernel ridge regression with kernel :math:`k`, ridge :math:`\delta` and :math:`n` training points
drawn from a distribution :math:`\mu`, fitting :math:`y = f(x) + \varepsilon`
(:math:`\operatorname{Var}\varepsilon = \sigma^2`), predicts
:math:`\hat f(x) = k(x, X)\,(k(X, X) + \delta I)^{-1} y`. Write the kernel's Mercer decomposition
under :math:`\mu` as :math:`k(x, x') = \sum_i \lambda_i \phi_i(x)\phi_i(x')` and the target as
:math:`f = \sum_i v_i \phi_i`. As :math:`n` and the number of relevant modes grow together, the
test error concentrates on a deterministic value (Bordelon, Canatar & Pehlevan 2020, "Spectrum
dependent learning curves in kernel regression and wide neural networks", ICML, eqs. 5-7; Canatar,
Bordelon & Pehlevan 2021, Nature Communications; in the notation of Simon, Dickens, Karkada &
DeWeese 2021, "The eigenlearning framework", eqs. 4-9): the effective regularization
:math:`\kappa > 0` solves

.. math::
    \sum_i \frac{\lambda_i}{\lambda_i + \kappa} + \frac{\delta}{\kappa} = n,

the learnability of mode :math:`i` is :math:`\mathcal L_i = \lambda_i/(\lambda_i + \kappa)`, the
overfitting coefficient :math:`\mathcal E_0 = n/(n - \sum_i \mathcal L_i^2)`, and

.. math::
    \mathbb E\,\|\hat f - f\|^2_\mu = \mathcal E_0\Big(\sum_i (1 - \mathcal L_i)^2 v_i^2 + \sigma^2\Big)
        - \sigma^2, \qquad
    \text{train MSE} = \Big(\frac{\delta}{n\kappa}\Big)^2 \mathcal E_0
        \Big(\sum_i (1 - \mathcal L_i)^2 v_i^2 + \sigma^2\Big).

:math:`\kappa` goes through :func:`rmtjax.solve.root` (bracketed Newton in :math:`\log\kappa`,
implicit differentiation), so the curve is differentiable in the eigenvalues (hence in a
kernel's hyperparameters), the target's coefficients, :math:`n`, the ridge and the noise.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .. import solve
from .._validate import as_real, check_range, concrete, error_if, symmetric_psd

__all__ = ["LearningCurve", "krr_learning_curve", "population_eigensystem"]


class LearningCurve(NamedTuple):
    r"""The deterministic equivalent of kernel ridge regression at each ``n``.

    Attributes:
        test_error: :math:`\mathbb E\|\hat f - f\|^2` (against the clean target), ``n.shape``.
        train_error: mean squared error on the (noisy) training labels, ``n.shape``.
        kappa: the effective regularization :math:`\kappa`, ``n.shape``.
        e0: the overfitting coefficient :math:`\mathcal E_0`, ``n.shape``.
        learnability: :math:`\mathcal L_i` per mode, ``n.shape + (modes,)``.
    """

    test_error: Array
    train_error: Array
    kappa: Array
    e0: Array
    learnability: Array


def _residual(u, args):
    lam, ridge, n = args
    kappa = jnp.exp(u)
    return jnp.sum(lam / (lam + kappa)) + ridge / kappa - n


def _curve_one(lam, v2, n, ridge, noise):
    dt = lam.dtype
    eps = jnp.finfo(dt).eps
    top = jnp.max(lam)
    lower = jnp.where(ridge > 0, jnp.log(jnp.maximum(ridge, jnp.finfo(dt).tiny) / (2 * n)), jnp.log(top * eps))
    lower = jnp.minimum(lower, jnp.log(top * eps))
    upper = jnp.log(2 * (jnp.sum(lam) + ridge) / n)
    sol = solve.root(_residual, 0.5 * (lower + upper), (lam, ridge, n), bracket=(lower, upper), throw=False,
                     name="kappa (learning curve)")
    kappa = jnp.exp(sol.value)
    L = lam / (lam + kappa)
    e0 = n / (n - jnp.sum(L * L))
    bias = jnp.sum((1 - L) ** 2 * v2)
    noisy = e0 * (bias + noise)
    return LearningCurve(noisy - noise, (ridge / (n * kappa)) ** 2 * noisy, kappa, e0, L), sol.ok


@jax.jit
def _curve(lam, v2, n, ridge, noise):
    flat = n.reshape(-1)
    out, ok = jax.vmap(_curve_one, (None, None, 0, None, None))(lam, v2, flat, ridge, noise)
    shape = n.shape
    return LearningCurve(*(a.reshape(shape + a.shape[1:]) for a in out)), ok.reshape(shape)


def krr_learning_curve(
    eigenvalues: Float[ArrayLike, " modes"],
    target: Float[ArrayLike, "modes *outputs"],
    n: Float[ArrayLike, "*ns"],
    ridge: ArrayLike = 0.0,
    noise: ArrayLike = 0.0,
) -> LearningCurve:
    r"""The test and train error of kernel ridge regression predicted from the kernel's
    eigenvalues and the target's coefficients (see the module docstring for the formulas).

    Args:
        eigenvalues: the Mercer eigenvalues :math:`\lambda_i \ge 0` of the kernel under the data
            distribution (e.g. from :func:`population_eigensystem`), finite; at least one > 0.
        target: the target's coefficients :math:`v_i` in the same eigenbasis, ``(modes,)`` or
            ``(modes, outputs)`` (errors are summed over outputs).
        n: the number of training points, a scalar or an array of them (real, ``>= 1``; the
            formula is smooth in ``n``). Differentiable.
        ridge: :math:`\delta \ge 0`, the ridge added to the training kernel matrix. With
            ``ridge = 0``, ``n`` must be below the number of nonzero eigenvalues (otherwise the
            training points determine the interpolant and :math:`\kappa = 0`).
        noise: :math:`\sigma^2 \ge 0`, the variance of the label noise.

    Returns:
        :class:`LearningCurve` (arrays of ``n``'s shape).

    Raises:
        ValueError: for invalid arguments, eagerly or through a compiled check under ``jit``;
            where :math:`\kappa` has no solution (``ridge = 0`` with ``n`` at or above the rank).

    Example:
        >>> import jax.numpy as jnp
        >>> k = jnp.arange(1.0, 201.0)
        >>> lam, v = 1 / k**2, 1 / k  # a power-law spectrum and target
        >>> curve = krr_learning_curve(lam, v, jnp.array([10.0, 100.0]), ridge=1e-3)
        >>> bool(curve.test_error[1] < curve.test_error[0])
        True
    """
    lam = check_range(as_real(eigenvalues, "eigenvalues", ndim=1), "eigenvalues", lo=0.0)
    v = check_range(as_real(target, "target", ndim=(1, 2)), "target")
    if v.shape[0] != lam.shape[0]:
        raise ValueError(f"target must have one row per eigenvalue ({lam.shape[0]}), got shape {v.shape}")
    dt = jnp.result_type(lam, v)
    lam = lam.astype(dt)
    v2 = (v.astype(dt) ** 2).reshape(lam.shape[0], -1).sum(-1)
    n = check_range(as_real(n, "n", dtype=dt), "n", lo=1.0)
    ridge = check_range(as_real(ridge, "ridge", ndim=0, dtype=dt), "ridge", lo=0.0)
    noise = check_range(as_real(noise, "noise", ndim=0, dtype=dt), "noise", lo=0.0)
    lam = error_if(lam, ~(jnp.max(lam) > 0), "eigenvalues must have at least one entry > 0")
    c_ridge, c_lam, c_n = concrete(ridge), concrete(lam), concrete(n)
    if c_ridge is not None and c_lam is not None and c_n is not None and float(c_ridge) == 0:
        rank = int(np.sum(c_lam > np.max(c_lam) * np.finfo(c_lam.dtype).eps * c_lam.size))
        if np.any(c_n >= rank):
            raise ValueError(f"n must be below the number of nonzero eigenvalues ({rank}) when ridge = 0 "
                             f"(got n up to {float(np.max(c_n)):g}); give a ridge > 0")
    out, ok = _curve(lam, v2, n, ridge, noise)
    msg = ("n: the effective regularization kappa has no solution (ridge = 0 with n at or above the number of "
           "nonzero eigenvalues); give a ridge > 0")
    return LearningCurve(*error_if(tuple(out), ~ok, msg))


def population_eigensystem(gram: Float[ArrayLike, "m m"], values: Float[ArrayLike, "m *outputs"]) -> tuple[Array, Array]:
    r"""Mercer eigenvalues and target coefficients for the uniform distribution on ``m`` points.

    For data drawn uniformly (with replacement) from a finite population :math:`x_1..x_m`
    with Gram matrix :math:`G = k(x_a, x_b)` and target values :math:`f(x_a)`: the kernel's
    eigenvalues under that distribution are those of :math:`G/m` and, with
    :math:`G = U\Lambda U^\top`, the eigenfunctions are :math:`\phi_i(x_a) = \sqrt m\,U_{ai}`, so
    :math:`v_i = U_{:i}^\top f/\sqrt m`. Returns ``(eigenvalues, coefficients)`` in decreasing
    order of eigenvalue (negative rounding clipped to 0). The population can be a held-out pool
    of real data (MNIST) standing in for its distribution.

    Args:
        gram: the population's Gram matrix ``(m, m)``: finite, symmetric and positive
            semi-definite up to rounding (checked).
        values: the target on the population, ``(m,)`` or ``(m, outputs)``.
    """
    G = check_range(as_real(gram, "gram", ndim=2), "gram")
    if G.shape[0] != G.shape[1]:
        raise ValueError(f"gram must be square, got shape {G.shape}")
    G = symmetric_psd(G, "gram")
    f = check_range(as_real(values, "values", ndim=(1, 2)), "values")
    if f.shape[0] != G.shape[0]:
        raise ValueError(f"values must have one row per population point ({G.shape[0]}), got shape {f.shape}")
    m = G.shape[0]
    w, U = jnp.linalg.eigh(0.5 * (G + G.T))
    order = jnp.arange(m)[::-1]
    w, U = w[order], U[:, order]
    return jnp.maximum(w, 0.0) / m, (U.T @ f.astype(U.dtype)) / jnp.sqrt(jnp.asarray(m, U.dtype))
