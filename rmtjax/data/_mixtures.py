r"""Synthetic Gaussian mixtures.

A :math:`K`-class mixture draws :math:`n_c` points of class :math:`c` as

.. math::
    x_i = \mu_c + C_c^{1/2} z_i,\qquad z_i \sim \mathcal N(0, I_d),

the model of the random-matrix analyses of kernel and Gram matrices of mixtures (Couillet &
Benaych-Georges 2016, "Kernel spectral clustering of large dimensional data", eq. 1; Couillet &
Liao 2022, *Random Matrix Methods for Machine Learning*, §4.3). :math:`C_c^{1/2}` is
:math:`\sqrt{\sigma_c^2}\,I` for isotropic covariances, the elementwise square root of a diagonal,
and the Cholesky factor of a full covariance. The class counts are exact, :math:`n_c` being
:math:`n\,\pi_c` rounded by largest remainders, so a statistic of the sample is a function of the
key alone. The draw is differentiable with respect to the means and covariances.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rmtjax.data._mixtures import gaussian_mixture
    >>> mix = gaussian_mixture(jax.random.key(0), jnp.array([[1.0, 0.0], [-1.0, 0.0]]), 0.5, n=6)
    >>> mix.x.shape, mix.labels.tolist()
    ((6, 2), [0, 0, 0, 1, 1, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._validate import as_real, check_range, concrete, error_if, flag, prng_key, static_int
from ._real import Dataset, one_hot

__all__ = ["Mixture", "class_counts", "gaussian_mixture", "gaussian_mixture_dataset"]


class Mixture(NamedTuple):
    """Samples of a mixture, ordered by class.

    Attributes:
        x: ``(n, d)`` points.
        labels: ``(n,)`` integer class labels (JAX's default int), non-decreasing.
    """

    x: Float[Array, "n d"]
    labels: Int[Array, " n"]


def class_counts(n: int, weights: Sequence[float]) -> tuple[int, ...]:
    r"""Class sizes :math:`n_c` summing to ``n``: :math:`n\pi_c` rounded by largest remainders
    (ties to the lower class index).

    Example:
        >>> class_counts(10, [1, 1, 1])
        (4, 3, 3)
    """
    n = static_int(n, "n", lo=1)
    as_real(np.zeros(0) if weights is None else weights, "weights", ndim=1, allow_empty=True)  # dtype, rank
    w = concrete(weights)  # NumPy: under jit, jnp.asarray of Python numbers would be traced
    if w is None:
        raise ValueError("weights must be concrete numbers (they set the class counts, a static structure), got a "
                         "traced value")
    w = np.asarray(w, np.float64)
    if w.size < 1:
        raise ValueError("weights must not be empty")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    exact = n * w / w.sum()
    base = np.floor(exact).astype(np.int64)
    rest = int(n - base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return tuple(int(c) for c in base)


def _factors(covariances, k: int, d: int, dtype):
    """Per-class square roots: (k, 1) scales, (k, d) diagonal scales or (k, d, d) Cholesky factors
    (full covariances must be symmetric up to rounding and positive definite)."""
    c = as_real(covariances, "covariances").astype(dtype)
    if c.ndim == 0:
        c = jnp.broadcast_to(c, (k,))
    if c.shape in ((k,), (k, d)):
        root = jnp.sqrt(check_range(c, "covariances", lo=0.0))
        return root[:, None] if c.ndim == 1 else root
    if c.shape == (k, d, d):
        c = check_range(c, "covariances")
        tol = min(100.0 * d * float(jnp.finfo(dtype).eps), 1e-3)
        asym = jnp.max(jnp.abs(c - jnp.swapaxes(c, -1, -2)), axis=(1, 2))
        c = error_if(c, jnp.any(asym > tol * jnp.max(jnp.abs(c), axis=(1, 2))),
                     f"covariances must be symmetric (max |C_c - C_c^T| <= {tol:.1e} max |C_c|)")
        chol = jnp.linalg.cholesky(0.5 * (c + jnp.swapaxes(c, -1, -2)))
        return error_if(chol, ~jnp.all(jnp.isfinite(chol)),
                        "covariances must be positive definite (each C_c has a Cholesky factor)")
    raise ValueError(
        f"covariances must be a scalar or have shape ({k},), ({k}, {d}) or ({k}, {d}, {d}), got {c.shape}"
    )


def gaussian_mixture(
    key: PRNGKeyArray,
    means: Float[ArrayLike, "k d"],
    covariances: Float[ArrayLike, "..."] = 1.0,
    *,
    n: int,
    weights: Sequence[float] | None = None,
) -> Mixture:
    r"""``n`` points of the Gaussian mixture :math:`\sum_c \pi_c\,\mathcal N(\mu_c, C_c)`.

    Args:
        key: a JAX PRNG key.
        means: class means :math:`\mu_c`, shape ``(K, d)``. Differentiable.
        covariances: :math:`C_c` as a scalar :math:`\sigma^2` (all classes :math:`\sigma^2 I`),
            ``(K,)`` variances (:math:`\sigma_c^2 I`), ``(K, d)`` diagonals, or ``(K, d, d)``
            symmetric positive-definite matrices. Differentiable.
        n: number of points (static).
        weights: class proportions :math:`\pi_c` (static; default uniform). The class counts are
            exactly :func:`class_counts` ``(n, weights)``.

    Returns:
        ``Mixture(x, labels)`` with the points ordered by class.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> mu = jnp.zeros((3, 4))
        >>> gaussian_mixture(jax.random.key(1), mu, jnp.array([1.0, 2.0, 3.0]), n=9).x.shape
        (9, 4)
    """
    key = prng_key(key, "key")
    means = as_real(means, "means", ndim=2)
    k, d = means.shape
    w = np.ones(k) if weights is None else weights
    if np.shape(w) != (k,):
        raise ValueError(f"weights must have shape ({k},), got {np.shape(w)}")
    counts = class_counts(n, w)
    means = check_range(means, "means")
    factors = _factors(covariances, k, d, means.dtype)
    z = jax.random.normal(key, (n, d), means.dtype)
    parts, start = [], 0
    for c, m in enumerate(counts):
        zc = z[start : start + m]
        f = factors[c]
        noise = zc @ f.T if f.ndim == 2 else zc * f[None, :]
        parts.append(means[c][None, :] + noise)
        start += m
    labels = np.repeat(np.arange(k), counts)
    return Mixture(jnp.concatenate(parts, axis=0), jnp.asarray(labels, jnp.result_type(int)))


def gaussian_mixture_dataset(
    key: PRNGKeyArray,
    means: Float[ArrayLike, "k d"],
    covariances: Float[ArrayLike, "..."] = 1.0,
    *,
    n_train: int,
    n_test: int,
    weights: Sequence[float] | None = None,
    center_targets: bool = False,
) -> Dataset:
    """Independent train and test draws of :func:`gaussian_mixture`, shuffled, with one-hot targets.

    The training and test sets are drawn with ``jax.random.split(key)`` and each is shuffled by a
    key-derived permutation (so prefixes mix the classes). Needs ``K >= 2`` classes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> ds = gaussian_mixture_dataset(jax.random.key(0), 2.0 * jnp.eye(3), 1.0, n_train=30, n_test=12)
        >>> ds.x_train.shape, ds.y_test.shape
        ((30, 3), (12, 3))
    """
    key = prng_key(key, "key")
    means = as_real(means, "means", ndim=2)
    k = means.shape[0]
    if k < 2:
        raise ValueError(f"means must be a 2-d array (K, d) with K >= 2 classes, got shape {means.shape}")
    center_targets = flag(center_targets, "center_targets")
    out = []
    for kk, n, name in zip(jax.random.split(key, 2), (n_train, n_test), ("n_train", "n_test")):
        n = static_int(n, name, lo=1)
        k_draw, k_perm = jax.random.split(kk)
        mix = gaussian_mixture(k_draw, means, covariances, n=n, weights=weights)
        perm = jax.random.permutation(k_perm, n)
        out.append((mix.x[perm], mix.labels[perm]))
    (xa, la), (xb, lb) = out
    dt = xa.dtype
    return Dataset(xa, one_hot(la, k, center=center_targets, dtype=dt), xb,
                   one_hot(lb, k, center=center_targets, dtype=dt), la, lb)
