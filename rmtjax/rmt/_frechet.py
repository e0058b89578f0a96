r"""The Fréchet (2-Wasserstein) distance between Gaussians: the FID formula, differentiable.

For :math:`\mathcal N(m_1, C_1)` and :math:`\mathcal N(m_2, C_2)` (Dowson & Landau 1982; Heusel et
al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
eq. 6, the *Fréchet Inception Distance*):

.. math::
    d^2 = \|m_1 - m_2\|^2 + \operatorname{tr}\Big(C_1 + C_2
    - 2\big(C_1^{1/2}C_2C_1^{1/2}\big)^{1/2}\Big).

Seddik et al. (ICML 2020) use it to compare GAN images with real ones; in this package it measures
how far generated (concentrated) data are from the Gaussian mixture with the same moments.

**Differentiability.** The square roots are taken by a symmetric eigendecomposition
:math:`A = U\operatorname{diag}(\lambda)U^\top`, :math:`A^{1/2} = U\operatorname{diag}(\sqrt{\lambda_+})U^\top`,
with a custom JVP from the Daleckii-Krein formula

.. math::
    d(A^{1/2}) = U\big(K\circ(U^\top dA\,U)\big)U^\top,\qquad
    K_{ij} = \frac{\sqrt{\lambda_i} - \sqrt{\lambda_j}}{\lambda_i - \lambda_j}
    = \frac{1}{\sqrt{\lambda_i} + \sqrt{\lambda_j}},

whose right-hand form has no :math:`0/0` at repeated eigenvalues (``jnp.linalg.eigh``'s own
derivative divides by :math:`\lambda_i - \lambda_j` and returns NaN for, e.g., identity
covariances). Eigenvalues below :math:`\epsilon_{\rm rel}\max_i|\lambda_i|` (round-off, default
:math:`\epsilon_{\rm rel} = 10\,d\,\varepsilon_{\rm machine}`) are set to 0, in the value as well (so
:math:`d(\mathcal N(m, C), \mathcal N(m, C)) = 0` to round-off for singular :math:`C`, where a plain
:math:`\sqrt{\max(\lambda, 0)}` leaves :math:`\sqrt{\varepsilon}\approx 10^{-8}`). Where both
:math:`\lambda_i = \lambda_j = 0` the square root is not differentiable; there :math:`K_{ij} = 0`
(the derivative along the range of :math:`A`, i.e. the pseudo-inverse
:math:`\tfrac12 A^{+1/2}` for :math:`d\operatorname{tr}A^{1/2}`), so gradients are finite everywhere on
the PSD cone and exact on its interior.

Example:
    >>> import jax.numpy as jnp
    >>> d = frechet_distance(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 4 * jnp.eye(2))
    >>> float(d)  # |1|^2 * 2 + 2 * (2 - 1)^2
    4.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._validate import ArgumentError, real, symmetric_psd
from ._checks import static_number

__all__ = ["frechet_distance", "psd_sqrtm"]


def _sym(a):
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _eig_sqrt(a, rtol):
    w, u = jnp.linalg.eigh(_sym(a))
    d = a.shape[-1]
    tol = (10 * d * jnp.finfo(w.dtype).eps if rtol is None else rtol) * jnp.max(jnp.abs(w), axis=-1, keepdims=True)
    keep = w > tol
    s = jnp.where(keep, jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0)
    return s, u


def _psd_sqrtm(a, rtol):
    s, u = _eig_sqrt(a, rtol)
    return (u * s[..., None, :]) @ jnp.swapaxes(u, -1, -2)


_psd_sqrtm = jax.custom_jvp(_psd_sqrtm, nondiff_argnums=(1,))


@_psd_sqrtm.defjvp
def _psd_sqrtm_jvp(rtol, primals, tangents):
    (a,), (da,) = primals, tangents
    s, u = _eig_sqrt(a, rtol)
    ut = jnp.swapaxes(u, -1, -2)
    den = s[..., :, None] + s[..., None, :]
    K = jnp.where(den > 0, 1.0 / jnp.where(den > 0, den, 1.0), 0.0)
    out = (u * s[..., None, :]) @ ut
    dout = u @ (K * (ut @ _sym(da) @ u)) @ ut
    return out, dout


def _check_square(c, name):
    """A real, finite, symmetric positive semi-definite ``(..., d, d)`` matrix (``ValueError`` naming
    ``name`` otherwise: eagerly, or compiled in under ``jit``; asymmetry is reported as such)."""
    c = real(c, name, ndim=tuple(range(2, 32)))
    if c.shape[-1] != c.shape[-2]:
        raise ArgumentError(f"{name} must be a square matrix (..., d, d), got shape {c.shape}")
    return symmetric_psd(c, name)


def _rtol(rtol):
    return None if rtol is None else static_number(rtol, "rtol", lo=0.0, hi=1.0)


def psd_sqrtm(a: Float[ArrayLike, "... d d"], *, rtol: float | None = None) -> Float[Array, "... d d"]:
    r"""The PSD square root :math:`A^{1/2} = U\operatorname{diag}(\sqrt{\lambda})U^\top` of a symmetric
    PSD matrix, with the Daleckii-Krein JVP (module doc): finite derivatives at repeated and at zero
    eigenvalues.

    Args:
        a: symmetric positive semi-definite, shape ``(..., d, d)``.
        rtol: eigenvalues below ``rtol * max|lambda|`` are treated as 0 (default
            ``10 d eps``).

    Example:
        >>> import jax.numpy as jnp
        >>> psd_sqrtm(jnp.diag(jnp.array([4.0, 9.0]))).diagonal().tolist()
        [2.0, 3.0]
    """
    a = _check_square(a, "a")
    return _psd_sqrtm(a, _rtol(rtol))


def frechet_distance(mean1: Float[ArrayLike, "... d"], cov1: Float[ArrayLike, "... d d"],
                     mean2: Float[ArrayLike, "... d"], cov2: Float[ArrayLike, "... d d"], *,
                     rtol: float | None = None) -> Float[Array, "..."]:
    r"""Squared Fréchet distance between :math:`\mathcal N(m_1, C_1)` and :math:`\mathcal N(m_2, C_2)`
    (Heusel et al. 2017, eq. 6; Dowson & Landau 1982):

    .. math::
        \|m_1 - m_2\|^2 + \operatorname{tr}\big(C_1 + C_2 - 2(C_1^{1/2}C_2C_1^{1/2})^{1/2}\big).

    Differentiable in all four arguments, with finite gradients for singular (PSD) covariances (module
    doc). The result is clipped at 0 (round-off can make it :math:`-10^{-15}`). Batched over leading
    axes.

    Args:
        mean1, mean2: means, shape ``(..., d)``.
        cov1, cov2: symmetric PSD covariances, shape ``(..., d, d)`` (``ValueError`` when not
            finite, not square, not symmetric or with a negative eigenvalue, beyond rounding:
            :func:`rmtjax._validate.symmetric_psd`; eagerly, and under ``jit`` as a compiled check).
        rtol: relative eigenvalue cut-off of the square roots (:func:`psd_sqrtm`).

    Example:
        >>> import jax.numpy as jnp
        >>> float(frechet_distance(jnp.zeros(3), jnp.eye(3), jnp.zeros(3), jnp.eye(3)))
        0.0
    """
    rtol = _rtol(rtol)
    c1, c2 = _check_square(cov1, "cov1"), _check_square(cov2, "cov2")
    m1 = real(mean1, "mean1", ndim=tuple(range(1, 31)))
    m2 = real(mean2, "mean2", ndim=tuple(range(1, 31)))
    d = c1.shape[-1]
    for name, m in (("mean1", m1), ("mean2", m2)):
        if m.shape[-1] != d:
            raise ArgumentError(f"{name} must have shape (..., d) with d = {d} (the covariances' size), got {m.shape}")
    if c2.shape[-1] != d:
        raise ArgumentError(f"cov1 and cov2 must have the same size d, got {c1.shape} and {c2.shape}")
    try:
        jnp.broadcast_shapes(m1.shape[:-1], m2.shape[:-1], c1.shape[:-2], c2.shape[:-2])
    except ValueError:
        raise ArgumentError(f"the batch shapes of mean1 {m1.shape}, cov1 {c1.shape}, mean2 {m2.shape} and cov2 "
                            f"{c2.shape} must broadcast") from None
    dtype = np.result_type(*(np.dtype(x.dtype) for x in (c1, c2, m1, m2) if not x.weak_type)) \
        if any(not x.weak_type for x in (c1, c2, m1, m2)) else c1.dtype
    c1, c2, m1, m2 = (x.astype(dtype) for x in (c1, c2, m1, m2))
    s1 = _psd_sqrtm(c1, rtol)
    cross = jnp.trace(_psd_sqrtm(s1 @ c2 @ s1, rtol), axis1=-2, axis2=-1)
    diff = m1 - m2
    val = jnp.sum(diff * diff, -1) + jnp.trace(c1, axis1=-2, axis2=-1) + jnp.trace(c2, axis1=-2, axis2=-1) - 2 * cross
    return jnp.maximum(val, 0.0)
