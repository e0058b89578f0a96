r"""Deterministic equivalents of Gram matrices of mixtures (Seddik, Louart, Tamaazousti & Couillet,
"Random Matrix Theory Proves that Deep Learning Representations of GAN-data Behave as Gaussian
Mixtures", ICML 2020, Thm. 1; Louart & Couillet 2018).

Data :math:`X = [x_1, \dots, x_n] \in \mathbb R^{p \times n}` with independent columns, :math:`n_\ell`
of them in class :math:`\ell` with second moment :math:`C_\ell = \mathbb E[x x^\top]`. With
:math:`G = X^\top X / p` and :math:`Q(z) = (G + zI_n)^{-1}`, the co-resolvent has the deterministic
equivalent

.. math::
    \tilde R(z) = \Big(\sum_\ell \frac{n_\ell}{p}\,\frac{C_\ell}{1 + \delta_\ell(z)} + z I_p\Big)^{-1},
    \qquad \delta_\ell(z) = \frac1p \operatorname{tr}\big(C_\ell \tilde R(z)\big),

and the diagonal of :math:`Q` concentrates on :math:`Q_{ii} \approx 1/(z(1 + \delta_{\ell(i)}))`
(Sherman-Morrison on :math:`Q = z^{-1}(I - X^\top R X/p)`), so

.. math::
    \frac1n\operatorname{tr} Q(z) \simeq \frac1n\sum_\ell \frac{n_\ell}{z(1 + \delta_\ell(z))}.

Class proportions: the weight of class :math:`\ell` in :math:`\tilde R` is :math:`n_\ell/p` (each column
contributes :math:`C_\ell/(p(1+\delta_\ell))`). Seddik et al. state the theorem for :math:`k` equal
classes, where it reads :math:`\frac{n}{pk}\sum_\ell C_\ell/(1+\delta_\ell)`; with :math:`n = p` this is
their :math:`\frac1k\sum_\ell`. The means enter through :math:`C_\ell`; their rank-:math:`k` part of
:math:`\tilde Q` (the :math:`J\Omega J^\top` term of the theorem, isolated eigenvalues) changes the
normalized trace only by :math:`O(1/p)` and is not built yet.

The spectral density of :math:`G` follows by Stieltjes inversion: :math:`m_G(\zeta) = \frac1n
\operatorname{tr}(G - \zeta I)^{-1} = \frac1n \operatorname{tr} Q(-\zeta)`, density
:math:`\frac1\pi\operatorname{Im} m_G(x + i\eta)` for small :math:`\eta > 0` (complex :math:`\delta`,
solved as real/imaginary pairs by :mod:`rmtjax.solve`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._validate import concrete
from ..solve import fixed_point

__all__ = ["gram_delta", "gram_spectral_density", "gram_trace_resolvent"]


def _check(C, n_per_class):
    C = jnp.asarray(C)
    if not jnp.issubdtype(C.dtype, jnp.floating):
        C = C.astype(float)
    if C.ndim != 3 or C.shape[1] != C.shape[2]:
        raise ValueError(f"C must have shape (k, p, p) (one second-moment matrix per class), got {C.shape}")
    n_per_class = np.asarray(n_per_class)
    if n_per_class.shape != (C.shape[0],) or np.any(n_per_class < 1) or np.any(n_per_class != np.round(n_per_class)):
        raise ValueError(f"n_per_class must be {C.shape[0]} positive integers, got {n_per_class}")
    c = concrete(C)
    if c is not None:
        if not np.allclose(c, np.swapaxes(c, 1, 2), rtol=1e-10, atol=1e-12):
            raise ValueError("C must be symmetric")
        if np.min(np.linalg.eigvalsh(c)) < -1e-10 * max(1.0, np.max(np.abs(c))):
            raise ValueError("C must be positive semi-definite (second-moment matrices)")
    return C, jnp.asarray(n_per_class, C.dtype)


def _r_tilde(C, w, delta, z):
    p = C.shape[-1]
    M = jnp.einsum("l,lij->ij", w.astype(delta.dtype) / (1 + delta), C.astype(delta.dtype)) + z * jnp.eye(p, dtype=delta.dtype)
    return jnp.linalg.inv(M)


def gram_delta(C: ArrayLike, n_per_class, z: ArrayLike, *, solver: str = "newton", damping: float = 0.0,
               max_steps: int = 500, throw: bool = True, delta0: ArrayLike | None = None):
    r"""The fixed point :math:`\delta_\ell(z) = \frac1p\operatorname{tr}(C_\ell\tilde R(z))` (a
    :class:`rmtjax.solve.Solution`; ``value`` has shape ``(k,)``).

    Args:
        C: second-moment matrices, shape ``(k, p, p)`` (symmetric PSD). Differentiable.
        n_per_class: class sizes ``n_l`` (static integers).
        z: spectral argument, real ``> 0`` or complex with ``Im z != 0``. Differentiable.
        solver: ``"newton"`` (default: a few steps even next to the support) or ``"iteration"``
            (the fixed-point map is a contraction for real ``z > 0``; ``damping`` then applies).
        delta0: starting point (default 0; continuation along a grid of ``z`` may pass the previous
            solution).
    """
    C, nl = _check(C, n_per_class)
    p = C.shape[-1]
    z = jnp.asarray(z)
    zc = concrete(z)
    if zc is not None and not np.iscomplexobj(zc) and np.any(zc <= 0):
        raise ValueError(f"z must be > 0 (or complex off the real axis): the spectrum of G lies in [0, inf); got {zc}")
    dtype = (jnp.complex128 if C.dtype == jnp.float64 else jnp.complex64) if jnp.iscomplexobj(z) else C.dtype
    w = nl / p

    def f(delta, a):
        C, z = a
        R = _r_tilde(C, w, delta, z)
        return jnp.einsum("lij,ji->l", C.astype(R.dtype), R) / p

    y0 = jnp.zeros((C.shape[0],), dtype) if delta0 is None else jnp.asarray(delta0).astype(dtype)
    return fixed_point(f, y0, (C, z.astype(dtype)), solver=solver, damping=damping,
                       max_steps=max_steps, throw=throw, name="Gram delta fixed point")


def gram_trace_resolvent(C: ArrayLike, n_per_class, z: ArrayLike, **kwargs) -> Array:
    r""":math:`\frac1n\operatorname{tr}\tilde Q(z) = \frac1n\sum_\ell n_\ell / (z(1+\delta_\ell(z)))`."""
    C, nl = _check(C, n_per_class)
    delta = gram_delta(C, n_per_class, z, **kwargs).value
    z = jnp.asarray(z).astype(delta.dtype)
    return jnp.sum(nl.astype(delta.dtype) / (z * (1 + delta))) / jnp.sum(nl).astype(delta.dtype)


def gram_spectral_density(C: ArrayLike, n_per_class, x: ArrayLike, *, eta: float = 1e-3) -> Array:
    r"""Limiting eigenvalue density of :math:`G = X^\top X/p` at the points ``x`` (vmapped), by Stieltjes
    inversion at height ``eta``: :math:`\frac1\pi\operatorname{Im}\frac1n\operatorname{tr}\tilde Q(-(x + i\eta))`.
    The atom at 0 when :math:`n > p` (``n - rank`` zero eigenvalues) appears as a peak of width ``eta``."""
    x = jnp.asarray(x, float)

    def one(xi):
        zeta = jax.lax.complex(xi, jnp.asarray(eta, xi.dtype))
        return jnp.imag(gram_trace_resolvent(C, n_per_class, -zeta)) / jnp.pi

    return jax.vmap(one)(x)
