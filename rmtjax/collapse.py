r"""Neural-collapse metrics NC1-NC4 and the simplex equiangular tight frame.

Papyan, Han & Donoho, "Prevalence of neural collapse during the terminal phase of deep learning
training", PNAS 117 (2020), arXiv:2008.08186. Last-layer features :math:`h_{i,c} \in \mathbb R^p`
(sample :math:`i` of class :math:`c`, :math:`C` classes) and a linear classifier
:math:`h \mapsto Wh + b`, :math:`W \in \mathbb R^{C\times p}` with rows :math:`w_c`:

* class means :math:`\mu_c = \operatorname{Ave}_i h_{i,c}`, global mean
  :math:`\mu_G = \operatorname{Ave}_c \mu_c`, centred class-mean matrix
  :math:`M = [\mu_c - \mu_G]_c \in \mathbb R^{p\times C}` (here stored as rows, shape ``(C, p)``);
* within-, between-class and total covariances (paper, eqs. 1-3)

  .. math::
      \Sigma_W = \operatorname{Ave}_{c}\operatorname{Ave}_{i}(h_{i,c}-\mu_c)(h_{i,c}-\mu_c)^\top,\quad
      \Sigma_B = \operatorname{Ave}_c(\mu_c-\mu_G)(\mu_c-\mu_G)^\top,\quad
      \Sigma_T = \operatorname{Ave}_{c}\operatorname{Ave}_{i}(h_{i,c}-\mu_G)(h_{i,c}-\mu_G)^\top
      = \Sigma_W + \Sigma_B;

* NC1, within-class variability collapse (Fig. 6): :math:`\operatorname{Tr}(\Sigma_W\Sigma_B^\dagger)/C`;
* NC2, convergence to a simplex ETF: equinorm (Fig. 2) :math:`\operatorname{Std}_c\|\mu_c-\mu_G\|/
  \operatorname{Ave}_c\|\mu_c-\mu_G\|` and the same for :math:`\|w_c\|`; equiangularity (Fig. 3)
  :math:`\operatorname{Std}_{c\ne c'}\cos(\cdot_c, \cdot_{c'})`; maximal angle (Fig. 4)
  :math:`\operatorname{Ave}_{c\ne c'}|\cos(\cdot_c, \cdot_{c'}) + 1/(C-1)|`, for the centred means and
  for the classifier rows;
* NC3, self-duality (Fig. 5): :math:`\big\|W^\top/\|W\|_F - M/\|M\|_F\big\|_F^2` (:math:`W^\top` and
  :math:`M` are both :math:`p\times C`, column :math:`c` belonging to class :math:`c`);
* NC4, nearest-class-centre behaviour (Fig. 7): the fraction of points where
  :math:`\arg\max_c \langle w_c, h\rangle + b_c \ne \arg\min_c \|h - \mu_c\|`.

Class weighting: the averages :math:`\operatorname{Ave}_c\operatorname{Ave}_i` weigh every class by
:math:`1/C` and every sample of class :math:`c` by :math:`1/n_c`. For balanced classes (the paper's
setting) these are the paper's plain averages over all samples; for unbalanced ones (scikit-learn
digits) they keep :math:`\Sigma_T = \Sigma_W + \Sigma_B` exact and make every metric vanish at an exact
simplex ETF whatever the class sizes (the sample mean would not be the ETF's centre).
Standard deviations are population ones (divisor :math:`C`, resp. :math:`C(C-1)` pairs).

The pseudo-inverse: :math:`\Sigma_B = MM^\top/C` has rank at most :math:`C-1` (the columns of
:math:`M` sum to zero). With the :math:`C\times C` Gram matrix :math:`G = M^\top M`,
:math:`(MM^\top)^\dagger = M(G^\dagger)^2M^\top`, so

.. math::
    \mathrm{NC1} = \operatorname{Tr}\big(M^\top\Sigma_W M\,(G^\dagger)^2\big),

which costs :math:`O(Cp^2)` instead of a :math:`p\times p` eigendecomposition. :math:`G^\dagger` comes
from the eigendecomposition :math:`G = V\Lambda V^\top`: eigenvalues below ``rtol`` times the largest
are treated as zero (default :math:`10\,C\,\varepsilon`, the rounding floor of a Gram matrix: singular
values of :math:`M` below :math:`\sqrt{\texttt{rtol}}` times the largest are not resolved by
:math:`G`). The value is the spectral sum :math:`\sum_k v_k^\top M^\top\Sigma_W M v_k/\lambda_k^2` over
the kept eigenpairs (non-negative terms, accurate even for an ill-conditioned :math:`G`); its
derivative is taken through :math:`G^\dagger = (G + sQ)^{-1} - Q/s` with :math:`Q` the projector
on the discarded eigenvectors and :math:`s = \lambda_{\max}`, both held constant, so gradients
stay finite at the exact ETF (where the non-zero eigenvalues are all equal and the derivative of
``eigh`` is undefined); they are exact whenever the rank of :math:`M` is locally constant (always
the case for rank :math:`C-1`, whose null vector :math:`\mathbf 1` is fixed).
If all class means coincide (:math:`\Sigma_B = 0`), NC1 is ``inf``.

Everything is a pure function (``jit``/``vmap``/``grad``); ``num_classes`` is static. Features that
arrive in batches go through :class:`StreamingStatistics` (Chan, Golub & LeVeque's pairwise update
per class, never raw sums of squares), which gives the same :class:`ClassStatistics` as
:func:`class_statistics`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> C, p = 4, 6
    >>> U = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (p, C)))[0]
    >>> mu = simplex_etf(U, 3.0, num_classes=C)           # (C, p): an ETF in a random pose
    >>> labels = jnp.repeat(jnp.arange(C), 5)
    >>> stats = class_statistics(mu[labels], labels, num_classes=C)
    >>> m = collapse_metrics(stats, 0.5 * mu)              # a self-dual classifier
    >>> bool(max(m) < 1e-6)  # every metric vanishes (float32 rounding; < 1e-10 in float64)
    True
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ._numerics import safe_div, safe_sqrt
from ._validate import as_real, check_finite_array, check_matrix, check_range, concrete, error_if, static_int

__all__ = [
    "ClassStatistics",
    "Collapse",
    "StreamingStatistics",
    "class_statistics",
    "collapse_metrics",
    "ncc_mismatch",
    "simplex_etf",
    "within_class_variation",
]


# ----------------------------------------------------------------------------------------------
# validation


def _check_num_classes(num_classes) -> int:
    return static_int(num_classes, "num_classes", lo=2)


def _check_features_labels(features, labels, num_classes, *, allow_no_rows: bool = False):
    """Shapes and dtypes eagerly; label range eagerly (concrete) or by ``eqx.error_if`` (traced)."""
    if allow_no_rows:  # a batch of a stream may be empty
        features = as_real(features, "features", ndim=2, allow_empty=True)
        if features.shape[1] == 0:
            raise ValueError(f"features must have at least one column, got shape {features.shape}")
        features = check_range(features, "features")
    else:
        features = check_finite_array(check_matrix(features, "features"), "features")
    try:
        labels = jnp.asarray(labels)
    except Exception:  # noqa: BLE001 - strings, ragged lists
        raise ValueError(f"labels must be an integer array (class indices), got {type(labels).__name__}") from None
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be an integer array (class indices), got dtype {labels.dtype}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape (n,) with n = features.shape[0] = {features.shape[0]}, "
                         f"got {labels.shape}")
    msg = f"labels must be in [0, num_classes) = [0, {num_classes})"
    v = concrete(labels)
    if v is not None:
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{msg}, got values in [{v.min()}, {v.max()}]")
    else:
        labels = eqx.error_if(labels, jnp.any((labels < 0) | (labels >= num_classes)), msg)
    return features, labels


def _check_nonempty(counts):
    msg = "labels: every class needs at least one sample (a class with no samples has no mean)"
    v = concrete(counts)
    if v is not None:
        empty = np.flatnonzero(v == 0)
        if empty.size:
            raise ValueError(f"{msg}; classes {empty.tolist()} have none")
        return counts
    return eqx.error_if(counts, jnp.any(counts == 0), msg)


def _check_classifier(weights, stats_or_means, name="weights"):
    C, p = stats_or_means.shape
    weights = check_matrix(weights, name)
    if weights.shape != (C, p):
        raise ValueError(f"{name} must have shape (num_classes, p) = ({C}, {p}) (one row w_c per class), "
                         f"got {weights.shape}")
    return check_range(weights.astype(stats_or_means.dtype), name)


def _check_stats(stats) -> ClassStatistics:
    """A :class:`ClassStatistics` with consistent shapes and finite entries."""
    if not (isinstance(stats, tuple) and len(stats) == 6):
        raise ValueError(f"stats must be a ClassStatistics (from class_statistics or StreamingStatistics.statistics), "
                         f"got {type(stats).__name__}")
    means = check_matrix(stats.class_means, "stats.class_means")
    C, p = means.shape
    if C < 2:
        raise ValueError(f"stats.class_means must have at least 2 rows (classes), got shape {means.shape}")
    shapes = {"global_mean": (p,), "sigma_w": (p, p), "sigma_b": (p, p), "sigma_t": (p, p)}
    rest = {n: check_range(as_real(getattr(stats, n), f"stats.{n}", shape=shp).astype(means.dtype), f"stats.{n}")
            for n, shp in shapes.items()}
    return ClassStatistics(stats.counts, check_range(means, "stats.class_means"), **rest)


def _check_rtol(rtol, C, dtype) -> float:
    if rtol is None:
        return _default_rtol(C, dtype)
    v = float(rtol) if isinstance(rtol, (int, float)) and not isinstance(rtol, bool) else \
        concrete(as_real(rtol, "rtol", ndim=0))
    if v is None:
        raise ValueError("rtol must be a concrete number (a static eigenvalue cutoff), got a traced value")
    v = float(v)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"rtol must be in [0, 1), got {v!r}")
    return v


# ----------------------------------------------------------------------------------------------
# simplex ETF


def _helmert(C: int) -> np.ndarray:
    """Orthonormal basis ``(C, C-1)`` of the vectors orthogonal to ``1`` (Helmert contrasts)."""
    B = np.zeros((C, C - 1))
    for k in range(1, C):
        B[:k, k - 1] = 1.0
        B[k, k - 1] = -k
        B[:, k - 1] /= np.sqrt(k * (k + 1))
    return B


def simplex_etf(rotation: ArrayLike | None = None, scale: ArrayLike = 1.0, *, num_classes: int) -> Float[Array, "C p"]:
    r"""A simplex equiangular tight frame in any pose and scale (Papyan et al. 2020, Definition 1).

    .. math::
        M^\star = \alpha\sqrt{\tfrac{C}{C-1}}\;U\big(I_C - \tfrac1C\mathbf 1\mathbf 1^\top\big),

    returned transposed, as ``C`` rows :math:`m_c` (one per class) with :math:`\|m_c\| = \alpha` and
    :math:`\cos(m_c, m_{c'}) = -1/(C-1)` for :math:`c \ne c'`, summing to zero.

    Args:
        rotation: :math:`U`, shape ``(p, C)`` with orthonormal columns (:math:`U^\top U = I_C`,
            :math:`p \ge C`), or ``(p, C-1)`` (then :math:`U` acts on an orthonormal basis of
            :math:`\mathbf 1^\perp`, so :math:`p \ge C-1` suffices). ``None``: :math:`U = I_C`.
        scale: :math:`\alpha`, the norm of every vertex. Differentiable.
        num_classes: :math:`C \ge 2` (static).

    Returns:
        The vertices, shape ``(C, p)``.

    Example:
        >>> m = simplex_etf(num_classes=3)
        >>> bool(jnp.allclose(m @ m.T, jnp.array([[1., -.5, -.5], [-.5, 1., -.5], [-.5, -.5, 1.]])))
        True
    """
    C = _check_num_classes(num_classes)
    scale = as_real(scale, "scale")
    if scale.ndim != 0:
        raise ValueError(f"scale must be a scalar, got shape {scale.shape}")
    scale = check_range(scale, "scale")
    if rotation is None:
        rotation = jnp.eye(C, dtype=scale.dtype)
    U = check_range(check_matrix(rotation, "rotation"), "rotation")
    if U.shape[1] not in (C, C - 1) or U.shape[0] < U.shape[1]:
        raise ValueError(f"rotation must have shape (p, {C}) or (p, {C - 1}) with p >= its number of "
                         f"columns, got {U.shape}")
    tol = 10 * float(np.sqrt(np.finfo(U.dtype).eps))
    err = jnp.max(jnp.abs(U.T @ U - jnp.eye(U.shape[1], dtype=U.dtype)))
    msg = f"rotation must have orthonormal columns (U^T U = I), max |U^T U - I| <= {tol:.1e}"
    e = concrete(err)
    if e is not None:
        if e > tol:
            raise ValueError(f"{msg}, got {float(e):.3g}")
    else:
        U = error_if(U, err > tol, msg)
    base = np.eye(C) - 1.0 / C if U.shape[1] == C else _helmert(C)
    dtype = jnp.result_type(U.dtype, scale.dtype)
    return _etf(jnp.asarray(np.sqrt(C / (C - 1)) * base, dtype), U.astype(dtype), scale.astype(dtype))


@jax.jit
def _etf(base, U, scale):
    return scale * (base @ U.T)


# ----------------------------------------------------------------------------------------------
# class statistics


class ClassStatistics(NamedTuple):
    r"""First and second moments of features by class (class-balanced averages, see the module).

    Attributes:
        counts: :math:`n_c`, shape ``(C,)``, integers.
        class_means: :math:`\mu_c`, shape ``(C, p)``.
        global_mean: :math:`\mu_G = \operatorname{Ave}_c\mu_c`, shape ``(p,)``.
        sigma_w: :math:`\Sigma_W`, shape ``(p, p)``.
        sigma_b: :math:`\Sigma_B`, shape ``(p, p)``.
        sigma_t: :math:`\Sigma_T`, shape ``(p, p)``.
    """

    counts: Int[Array, " C"]
    class_means: Float[Array, "C p"]
    global_mean: Float[Array, " p"]
    sigma_w: Float[Array, "p p"]
    sigma_b: Float[Array, "p p"]
    sigma_t: Float[Array, "p p"]


def _between(class_means):
    C = class_means.shape[0]
    mu_g = jnp.mean(class_means, axis=0)
    centred = class_means - mu_g[None, :]
    return mu_g, (centred.T @ centred) / C


def class_statistics(features: ArrayLike, labels: ArrayLike, *, num_classes: int) -> ClassStatistics:
    r"""Class means, global mean, :math:`\Sigma_W, \Sigma_B, \Sigma_T` of ``features`` in one pass
    (two-pass centring: means first, then centred products).

    Args:
        features: :math:`h_i`, shape ``(n, p)``.
        labels: integer classes in ``[0, num_classes)``, shape ``(n,)``; every class must occur.
        num_classes: :math:`C \ge 2` (static).

    Raises:
        ValueError: mismatched shapes, non-integer or out-of-range labels, a class with no sample
            (under ``jit`` the value checks raise ``eqx.error_if``'s runtime error instead).

    Example:
        >>> s = class_statistics(jnp.array([[0., 1.], [2., 1.], [4., 5.]]), jnp.array([0, 0, 1]), num_classes=2)
        >>> s.class_means.tolist(), s.global_mean.tolist()
        ([[1.0, 1.0], [4.0, 5.0]], [2.5, 3.0])
    """
    C = _check_num_classes(num_classes)
    h, labels = _check_features_labels(features, labels, C)
    v = concrete(labels)  # counted by NumPy when concrete: no compilation per shape
    counts = jnp.asarray(np.bincount(v, minlength=C)) if v is not None else jnp.bincount(labels, length=C)
    return _class_statistics(h, labels, _check_nonempty(counts))


@jax.jit
def _class_statistics(h, labels, counts):
    C = counts.shape[0]
    n_c = counts.astype(h.dtype)
    onehot = jax.nn.one_hot(labels, C, dtype=h.dtype)
    means = (onehot.T @ h) / n_c[:, None]
    mu_g, sigma_b = _between(means)
    w = (1.0 / (C * n_c))[labels]  # class-balanced weight of each sample
    d_w = h - means[labels]
    d_t = h - mu_g[None, :]
    sigma_w = (d_w * w[:, None]).T @ d_w
    sigma_t = (d_t * w[:, None]).T @ d_t
    return ClassStatistics(counts, means, mu_g, sigma_w, sigma_b, sigma_t)


class StreamingStatistics(eqx.Module):
    r"""Per-class running moments for features that arrive in batches.

    The state is, per class, the count :math:`n_c`, the mean and the scatter matrix
    :math:`S_c = \sum_{i \in c}(h_i - \mu_c)(h_i - \mu_c)^\top`. A batch with :math:`m_c` points of
    class :math:`c`, mean :math:`\bar h_c` and scatter :math:`T_c` is merged by Chan, Golub &
    LeVeque's pairwise rule (1979; Welford's update for single points):

    .. math::
        \delta = \bar h_c - \mu_c,\quad \mu_c \leftarrow \mu_c + \tfrac{m_c}{n_c + m_c}\delta,\quad
        S_c \leftarrow S_c + T_c + \tfrac{n_c m_c}{n_c + m_c}\delta\delta^\top,\quad n_c \leftarrow n_c + m_c,

    which never subtracts large sums of squares. :meth:`statistics` then gives
    :math:`\Sigma_W = \frac1C\sum_c S_c/n_c` and :math:`\Sigma_T = \Sigma_W + \Sigma_B`, equal to
    :func:`class_statistics` on the concatenated data up to rounding. Memory :math:`O(Cp^2)`; an
    update costs :math:`O(Cmp^2)` for a batch of :math:`m` points.

    Example:
        >>> acc = StreamingStatistics.init(2, num_classes=2)
        >>> acc = acc.update(jnp.array([[0., 1.], [4., 5.]]), jnp.array([0, 1]))
        >>> acc = acc.update(jnp.array([[2., 1.]]), jnp.array([0]))
        >>> acc.statistics().class_means.tolist()
        [[1.0, 1.0], [4.0, 5.0]]
    """

    counts: Int[Array, " C"]
    means: Float[Array, "C p"]
    scatter: Float[Array, "C p p"]
    num_classes: int = eqx.field(static=True)

    def __check_init__(self):
        _check_num_classes(self.num_classes)
        C = self.num_classes
        if self.means.ndim != 2 or self.means.shape[0] != C:
            raise ValueError(f"means must have shape ({C}, p), got {self.means.shape}")
        p = self.means.shape[1]
        if self.counts.shape != (C,) or self.scatter.shape != (C, p, p):
            raise ValueError(f"counts and scatter must have shapes ({C},) and ({C}, {p}, {p}), got "
                             f"{self.counts.shape} and {self.scatter.shape}")

    @classmethod
    def init(cls, dim: int, *, num_classes: int, dtype=None) -> StreamingStatistics:
        """An empty accumulator for features of dimension ``dim`` (default dtype: JAX's float)."""
        C = _check_num_classes(num_classes)
        dim = static_int(dim, "dim", lo=1)
        try:
            dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
        except TypeError:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype!r}") from None
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        return cls(jnp.zeros((C,), int), jnp.zeros((C, dim), dtype), jnp.zeros((C, dim, dim), dtype), C)

    def update(self, features: ArrayLike, labels: ArrayLike) -> StreamingStatistics:
        """Merges a batch ``features`` ``(m, p)`` with integer ``labels`` ``(m,)`` (any classes may be
        missing from a batch); returns the new accumulator."""
        C = self.num_classes
        h, labels = _check_features_labels(features, labels, C, allow_no_rows=True)
        if h.shape[1] != self.means.shape[1]:
            raise ValueError(f"features must have {self.means.shape[1]} columns (the accumulator's dim), "
                             f"got shape {h.shape}")
        return _merge(self, h.astype(self.means.dtype), labels)

    def statistics(self) -> ClassStatistics:
        """The :class:`ClassStatistics` of everything merged so far (every class must have a sample)."""
        return _finish(self, _check_nonempty(self.counts))


@jax.jit
def _merge(acc, h, labels):
    C = acc.num_classes
    m = jnp.bincount(labels, length=C).astype(acc.counts.dtype)
    m_f = m.astype(h.dtype)
    onehot = jax.nn.one_hot(labels, C, dtype=h.dtype)
    batch_mean = safe_div(onehot.T @ h, jnp.maximum(m_f, 1.0)[:, None])
    d = h - batch_mean[labels]
    batch_scatter = jnp.einsum("nc,np,nq->cpq", onehot, d, d)
    n_f = acc.counts.astype(h.dtype)
    safe_total = jnp.maximum(n_f + m_f, 1.0)
    delta = batch_mean - acc.means
    means = acc.means + (m_f / safe_total)[:, None] * delta
    scatter = (acc.scatter + batch_scatter
               + (n_f * m_f / safe_total)[:, None, None] * (delta[:, :, None] * delta[:, None, :]))
    return StreamingStatistics(acc.counts + m, means, scatter, C)


@jax.jit
def _finish(acc, counts):
    C = acc.num_classes
    n_c = counts.astype(acc.means.dtype)
    mu_g, sigma_b = _between(acc.means)
    sigma_w = jnp.sum(acc.scatter / (C * n_c)[:, None, None], axis=0)
    return ClassStatistics(counts, acc.means, mu_g, sigma_w, sigma_b, sigma_w + sigma_b)


# ----------------------------------------------------------------------------------------------
# metrics


class Collapse(NamedTuple):
    r"""NC1-NC3 (Papyan et al. 2020, Figs. 2-6); every entry vanishes under neural collapse.

    Attributes:
        nc1: :math:`\operatorname{Tr}(\Sigma_W\Sigma_B^\dagger)/C` (Fig. 6).
        equinorm_means: coefficient of variation of :math:`\|\mu_c - \mu_G\|` (Fig. 2).
        equinorm_weights: coefficient of variation of :math:`\|w_c\|` (Fig. 2).
        equiangular_means: standard deviation of :math:`\cos(\mu_c-\mu_G, \mu_{c'}-\mu_G)`, :math:`c\ne c'` (Fig. 3).
        equiangular_weights: standard deviation of :math:`\cos(w_c, w_{c'})`, :math:`c\ne c'` (Fig. 3).
        max_angle_means: :math:`\operatorname{Ave}_{c\ne c'}|\cos(\mu_c-\mu_G,\mu_{c'}-\mu_G) + 1/(C-1)|` (Fig. 4).
        max_angle_weights: :math:`\operatorname{Ave}_{c\ne c'}|\cos(w_c, w_{c'}) + 1/(C-1)|` (Fig. 4).
        self_duality: NC3, :math:`\|W^\top/\|W\|_F - M/\|M\|_F\|_F^2` (Fig. 5).
    """

    nc1: Array
    equinorm_means: Array
    equinorm_weights: Array
    equiangular_means: Array
    equiangular_weights: Array
    max_angle_means: Array
    max_angle_weights: Array
    self_duality: Array


def _norms(x):
    return safe_sqrt(jnp.sum(x * x, axis=-1))


def _coefficient_of_variation(x):
    mean = jnp.mean(x)
    return safe_div(safe_sqrt(jnp.mean((x - mean) ** 2)), mean)


def _angles(x):
    """(std of the off-diagonal cosines, mean |cos + 1/(C-1)| over them) of the rows of ``x``."""
    C = x.shape[0]
    u = safe_div(x, _norms(x)[:, None])
    cos = u @ u.T
    off = ~np.eye(C, dtype=bool)
    vals = cos[off]
    std = safe_sqrt(jnp.mean((vals - jnp.mean(vals)) ** 2))
    return std, jnp.mean(jnp.abs(vals + 1.0 / (C - 1)))


def _trace_pinv_squared(A, G, rtol):
    """``Tr(A (G^+)^2)`` for symmetric PSD ``A``, ``G`` (eigenvalue cutoff ``rtol * max`` on ``G``)
    and ``max eig(G)``.

    The value is the spectral sum ``sum_k v_k^T A v_k / lambda_k^2`` over the kept eigenpairs (a sum
    of non-negative terms, accurate even when ``G`` is ill-conditioned); the derivative is that of
    ``Tr(A X^2)`` with ``X = inv(G + s Q) - Q / s``, the null projector ``Q`` and ``s`` held
    constant (finite where the kept eigenvalues are degenerate, unlike ``eigh``'s)."""
    lam, V = jnp.linalg.eigh(jax.lax.stop_gradient(G))
    top = lam[-1]
    keep = lam > rtol * top
    Q = (V * (~keep).astype(G.dtype)[None, :]) @ V.T
    s = jnp.where(top > 0, top, 1.0)
    X = jnp.linalg.solve(G + s * Q, jnp.eye(G.shape[0], dtype=G.dtype)) - Q / s
    smooth = jnp.trace(A @ X @ X)
    inv_lam2 = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0) ** 2, 0.0)
    quad = jnp.maximum(jnp.sum(V * (jax.lax.stop_gradient(A) @ V), axis=0), 0.0)  # v^T A v >= 0 (A is PSD)
    spectral = jnp.sum(quad * inv_lam2)
    return smooth + jax.lax.stop_gradient(spectral - smooth), top


def _default_rtol(C, dtype):
    return 10 * C * float(jnp.finfo(dtype).eps)


def within_class_variation(stats: ClassStatistics, *, rtol: float | None = None) -> Array:
    r"""NC1 :math:`= \operatorname{Tr}(\Sigma_W\Sigma_B^\dagger)/C`, evaluated as
    :math:`\operatorname{Tr}(M^\top\Sigma_W M\,(G^\dagger)^2)` with :math:`G = M^\top M` (see the
    module for the cutoff ``rtol``, default :math:`10C\varepsilon`). ``inf`` if :math:`\Sigma_B = 0`.

    Example:
        >>> h = jnp.array([[0., 0.], [2., 0.], [4., 0.], [6., 0.]])  # Sigma_W = 1, Sigma_B = 4 along x
        >>> round(float(within_class_variation(class_statistics(h, jnp.array([0, 0, 1, 1]), num_classes=2))), 6)
        0.125
    """
    stats = _check_stats(stats)
    C = stats.class_means.shape[0]
    rtol = _check_rtol(rtol, C, stats.class_means.dtype)
    return _nc1(stats.class_means, stats.global_mean, stats.sigma_w, rtol)


@partial(jax.jit, static_argnums=3)
def _nc1(class_means, global_mean, sigma_w, rtol):
    centred = class_means - global_mean[None, :]
    G = centred @ centred.T
    A = centred @ sigma_w @ centred.T
    nc1, top = _trace_pinv_squared(A, G, rtol)
    return jnp.where(top > 0, nc1, jnp.inf)


def collapse_metrics(stats: ClassStatistics, weights: ArrayLike, *, rtol: float | None = None) -> Collapse:
    r"""NC1, NC2 (equinorm, equiangularity, maximal angle) and NC3 of features summarised by
    ``stats`` (:func:`class_statistics` or :meth:`StreamingStatistics.statistics`) and the classifier
    ``weights`` :math:`W`, shape ``(C, p)`` (rows :math:`w_c`, as in ``logits = h @ W.T + b``).

    All metrics are invariant to rotating the feature space (:math:`h \to Rh`, :math:`W \to WR^\top`)
    and to rescaling :math:`h` and :math:`W`; NC1-NC2 of the means are also invariant to translating
    :math:`h`.

    Example:
        >>> C = 5
        >>> mu = simplex_etf(num_classes=C)
        >>> labels = jnp.arange(3 * C) % C
        >>> m = collapse_metrics(class_statistics(mu[labels], labels, num_classes=C), mu)
        >>> bool(max(m) < 1e-6)
        True
    """
    stats = _check_stats(stats)
    W = _check_classifier(weights, stats.class_means)
    return _metrics(stats, W, within_class_variation(stats, rtol=rtol))


@jax.jit
def _metrics(stats, W, nc1):
    centred = stats.class_means - stats.global_mean[None, :]
    eq_m, ang_m = _angles(centred)
    eq_w, ang_w = _angles(W)
    Wn = safe_div(W, safe_sqrt(jnp.sum(W * W)))
    Mn = safe_div(centred, safe_sqrt(jnp.sum(centred * centred)))
    return Collapse(
        nc1=nc1,
        equinorm_means=_coefficient_of_variation(_norms(centred)),
        equinorm_weights=_coefficient_of_variation(_norms(W)),
        equiangular_means=eq_m,
        equiangular_weights=eq_w,
        max_angle_means=ang_m,
        max_angle_weights=ang_w,
        self_duality=jnp.sum((Wn - Mn) ** 2),
    )


def ncc_mismatch(features: ArrayLike, class_means: ArrayLike, weights: ArrayLike,
                 bias: ArrayLike | None = None) -> Array:
    r"""NC4: the fraction of ``features`` where the classifier and the nearest class centre disagree,

    .. math::
        \frac1n\#\{i : \arg\max_c (\langle w_c, h_i\rangle + b_c) \ne \arg\min_c \|h_i - \mu_c\|\}

    (Papyan et al. 2020, Fig. 7; ``class_means`` normally from the training set, ``features`` from
    the training or the test set).

    Args:
        features: shape ``(n, p)``.
        class_means: :math:`\mu_c`, shape ``(C, p)`` (e.g. ``stats.class_means``).
        weights: :math:`W`, shape ``(C, p)``.
        bias: :math:`b`, shape ``(C,)``, or ``None`` (zero).

    Example:
        >>> mu = simplex_etf(num_classes=3)
        >>> float(ncc_mismatch(mu, mu, mu)), float(ncc_mismatch(mu, mu, -mu))
        (0.0, 1.0)
    """
    h = check_finite_array(check_matrix(features, "features"), "features")
    means = check_range(check_matrix(class_means, "class_means"), "class_means")
    if means.shape[1] != h.shape[1] or means.shape[0] < 2:
        raise ValueError(f"class_means must have shape (C, p) with C >= 2 and p = features.shape[1] = "
                         f"{h.shape[1]}, got {means.shape}")
    W = _check_classifier(weights, means)
    dtype = jnp.result_type(h.dtype, means.dtype)
    h, means, W = h.astype(dtype), means.astype(dtype), W.astype(dtype)
    if bias is None:
        b = jnp.zeros(means.shape[0], dtype)
    else:
        b = as_real(bias, "bias")
        if b.shape != (means.shape[0],):
            raise ValueError(f"bias must have shape (num_classes,) = ({means.shape[0]},), got {b.shape}")
        b = check_range(b, "bias")
    return _ncc_mismatch(h, means, W, b.astype(dtype))


@jax.jit
def _ncc_mismatch(h, means, W, b):
    logits = h @ W.T + b[None, :]
    # ||h - mu_c||^2 up to the c-independent ||h||^2
    dist = jnp.sum(means * means, axis=1)[None, :] - 2.0 * (h @ means.T)
    disagree = jnp.argmax(logits, axis=1) != jnp.argmin(dist, axis=1)
    return jnp.mean(disagree.astype(h.dtype))
