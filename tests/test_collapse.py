"""Neural-collapse metrics (rmtjax.collapse) against independent NumPy computations (loops over
classes and pairs, ``np.linalg.pinv``), exact simplex ETFs, invariances and the streaming
accumulator."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmtjax.collapse import (
    ClassStatistics,
    Collapse,
    StreamingStatistics,
    class_statistics,
    collapse_metrics,
    ncc_mismatch,
    simplex_etf,
    within_class_variation,
)


def orthogonal(rng, p, k):
    q, r = np.linalg.qr(rng.standard_normal((p, k)))
    return q * np.sign(np.diag(r))[None, :]


def random_problem(seed, C=4, p=6, n_per_class=(5, 3, 7, 4)):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class[:C])])
    rng.shuffle(labels)
    centres = 2.0 * rng.standard_normal((C, p))
    h = centres[labels] + rng.standard_normal((labels.size, p))
    W = rng.standard_normal((C, p))
    b = rng.standard_normal(C)
    return h, labels, W, b


# ---------------------------------------------------------------------------------------------
# independent NumPy references (plain loops, numpy.linalg.pinv)


def numpy_statistics(h, labels, C):
    means = np.stack([h[labels == c].mean(0) for c in range(C)])
    mu_g = means.mean(0)
    sw = sum(np.cov(h[labels == c].T, bias=True).reshape(h.shape[1], h.shape[1]) for c in range(C)) / C
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in means) / C
    st_ = sum(np.mean([np.outer(x - mu_g, x - mu_g) for x in h[labels == c]], axis=0) for c in range(C)) / C
    return means, mu_g, sw, sb, st_


def numpy_metrics(h, labels, W, C):
    means, mu_g, sw, sb, _ = numpy_statistics(h, labels, C)
    nc1 = np.trace(sw @ np.linalg.pinv(sb, hermitian=True)) / C
    M = (means - mu_g).T  # p x C, as in the paper

    def cv(x):
        return np.std(x) / np.mean(x)

    def angles(cols):
        cos = [cols[:, i] @ cols[:, j] / np.linalg.norm(cols[:, i]) / np.linalg.norm(cols[:, j])
               for i, j in itertools.permutations(range(C), 2)]
        return np.std(cos), np.mean(np.abs(np.array(cos) + 1 / (C - 1)))

    eq_m, ang_m = angles(M)
    eq_w, ang_w = angles(W.T)
    nc3 = np.linalg.norm(W.T / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2
    return Collapse(nc1, cv(np.linalg.norm(M, axis=0)), cv(np.linalg.norm(W, axis=1)), eq_m, eq_w, ang_m, ang_w, nc3)


def assert_metrics_close(a, b, rtol, atol=0.0):
    for name, x, y in zip(Collapse._fields, a, b):
        np.testing.assert_allclose(float(x), float(y), rtol=rtol, atol=atol, err_msg=name)


# ---------------------------------------------------------------------------------------------
# simplex ETF and exact collapse


@pytest.mark.parametrize("C,p,cols", [(2, 2, 2), (3, 2, 2), (10, 16, 10), (6, 11, 5)])
def test_simplex_etf_geometry(C, p, cols):
    U = orthogonal(np.random.default_rng(C + p), p, cols)
    m = np.asarray(simplex_etf(jnp.asarray(U), 2.5, num_classes=C))
    assert m.shape == (C, p)
    gram = m @ m.T
    np.testing.assert_allclose(np.diag(gram), 2.5**2, rtol=1e-13)
    off = gram[~np.eye(C, dtype=bool)] / 2.5**2
    np.testing.assert_allclose(off, -1 / (C - 1), atol=1e-13)
    np.testing.assert_allclose(m.sum(0), 0.0, atol=1e-13)


def test_simplex_etf_matches_the_paper_formula():
    C, p = 4, 7
    U = orthogonal(np.random.default_rng(1), p, C)
    paper = 1.7 * np.sqrt(C / (C - 1)) * U @ (np.eye(C) - np.ones((C, C)) / C)  # p x C columns
    np.testing.assert_allclose(np.asarray(simplex_etf(jnp.asarray(U), 1.7, num_classes=C)), paper.T, atol=1e-14)


@pytest.mark.parametrize("C,p", [(2, 1), (4, 3), (4, 9), (10, 32)])
def test_exact_etf_with_self_dual_classifier_collapses(C, p):
    rng = np.random.default_rng(7 * C + p)
    U = orthogonal(rng, p, C - 1) if p < C else orthogonal(rng, p, C)
    mu = simplex_etf(jnp.asarray(U), 3.3, num_classes=C) + jnp.asarray(rng.standard_normal(p))[None, :]
    counts = rng.integers(1, 6, size=C)  # unbalanced classes
    labels = jnp.asarray(np.repeat(np.arange(C), counts))
    stats = class_statistics(mu[labels], labels, num_classes=C)
    W = 0.4 * (stats.class_means - stats.global_mean[None, :])
    b = -(W @ stats.global_mean)
    m = collapse_metrics(stats, W)
    assert max(float(v) for v in m) <= 1e-10, m
    assert float(ncc_mismatch(mu[labels], stats.class_means, W, b)) == 0.0


def test_random_features_are_clearly_not_collapsed():
    h, labels, W, b = random_problem(3, C=4, p=6)
    stats = class_statistics(h, labels, num_classes=4)
    m = collapse_metrics(stats, W)
    assert float(m.nc1) > 0.05
    for name in Collapse._fields[1:]:
        assert float(getattr(m, name)) > 1e-2, name
    # a random classifier disagrees with the nearest class centre on a sizeable fraction
    assert float(ncc_mismatch(h, stats.class_means, W, b)) > 0.1


# ---------------------------------------------------------------------------------------------
# agreement with NumPy


@pytest.mark.parametrize("C,p", [(4, 6), (4, 2), (3, 1)])
def test_statistics_and_metrics_match_numpy(C, p):
    h, labels, W, _ = random_problem(C + 10 * p, C=C, p=p)
    stats = class_statistics(h, labels, num_classes=C)
    means, mu_g, sw, sb, st_ = numpy_statistics(h, labels, C)
    np.testing.assert_array_equal(np.asarray(stats.counts), np.bincount(labels, minlength=C))
    for got, want in [(stats.class_means, means), (stats.global_mean, mu_g), (stats.sigma_w, sw),
                      (stats.sigma_b, sb), (stats.sigma_t, st_)]:
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(stats.sigma_t), np.asarray(stats.sigma_w + stats.sigma_b), atol=1e-12)
    # p < C - 1: Sigma_B has rank p < C - 1 (rank-deficient Gram matrix of the class means)
    assert_metrics_close(collapse_metrics(stats, W), numpy_metrics(h, labels, W, C), rtol=1e-9)


def test_balanced_classes_use_the_papers_plain_averages():
    rng = np.random.default_rng(0)
    C, p, n = 3, 4, 6
    labels = np.repeat(np.arange(C), n)
    h = rng.standard_normal((C * n, p)) + 3 * rng.standard_normal((C, p))[labels]
    stats = class_statistics(h, labels, num_classes=C)
    mu_g = h.mean(0)  # Ave_{i,c} over all samples
    np.testing.assert_allclose(np.asarray(stats.global_mean), mu_g, atol=1e-13)
    np.testing.assert_allclose(np.asarray(stats.sigma_t), (h - mu_g).T @ (h - mu_g) / (C * n), atol=1e-12)


def test_ncc_mismatch_matches_a_loop():
    h, labels, W, b = random_problem(5, C=4, p=3)
    means = np.stack([h[labels == c].mean(0) for c in range(4)])
    rng = np.random.default_rng(9)
    test = rng.standard_normal((50, 3)) * 3
    want = np.mean([np.argmax(W @ x + b) != np.argmin(np.linalg.norm(x[None, :] - means, axis=1)) for x in test])
    assert float(ncc_mismatch(test, means, W, b)) == pytest.approx(want, abs=0)
    want0 = np.mean([np.argmax(W @ x) != np.argmin(np.linalg.norm(x[None, :] - means, axis=1)) for x in test])
    assert float(ncc_mismatch(test, means, W)) == pytest.approx(want0, abs=0)


def test_nc1_closed_form_two_classes_on_a_line():
    # class 0 at {0, 2}, class 1 at {4, 6}: Sigma_W = 1, Sigma_B = 4, NC1 = (1/4)/2
    h = jnp.array([[0.0], [2.0], [4.0], [6.0]])
    assert float(within_class_variation(class_statistics(h, jnp.array([0, 0, 1, 1]), num_classes=2))) == pytest.approx(
        0.125, rel=1e-14)


def test_nc1_is_inf_when_all_class_means_coincide():
    h = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert float(within_class_variation(class_statistics(h, jnp.array([0, 0, 1, 1]), num_classes=2))) == np.inf


# ---------------------------------------------------------------------------------------------
# invariances


def transformed_metrics(h, labels, W, b, C, R, s_h, s_w, shift):
    h2 = s_h * (h @ R.T) + shift[None, :]
    W2 = s_w * (W @ R.T)
    b2 = s_h * s_w * b - W2 @ shift  # keeps the logits' argmax fixed
    stats = class_statistics(h2, labels, num_classes=C)
    return collapse_metrics(stats, W2), ncc_mismatch(h2, stats.class_means, W2, b2)


def test_metrics_invariant_to_rotation_scaling_translation():
    h, labels, W, b = random_problem(11, C=4, p=5)
    rng = np.random.default_rng(2)
    ref = transformed_metrics(h, labels, W, b, 4, np.eye(5), 1.0, 1.0, np.zeros(5))
    got = transformed_metrics(h, labels, W, b, 4, orthogonal(rng, 5, 5), 37.0, 1e-3, rng.standard_normal(5))
    assert_metrics_close(got[0], ref[0], rtol=1e-10)
    assert float(got[1]) == float(ref[1])


@settings(max_examples=8)
@given(C=st.sampled_from([2, 5]), p=st.sampled_from([1, 6]), seed=st.integers(0, 2**16), log_s=st.floats(-3, 3))
def test_invariance_property(C, p, seed, log_s):
    rng = np.random.default_rng(seed)
    n = 12  # fixed sizes: compiled once per (C, p)
    labels = rng.permutation(np.concatenate([np.arange(C), rng.integers(0, C, n - C)]))
    h = rng.standard_normal((n, p)) + 2 * rng.standard_normal((C, p))[labels]
    W = rng.standard_normal((C, p))
    stats = class_statistics(h, labels, num_classes=C)
    m = collapse_metrics(stats, W)
    R = orthogonal(rng, p, p)
    s = 10.0**log_s
    stats2 = class_statistics(s * h @ R.T, labels, num_classes=C)
    m2 = collapse_metrics(stats2, W @ R.T / s)
    assert_metrics_close(m2, m, rtol=1e-7, atol=1e-12)
    # ranges and the decomposition Sigma_T = Sigma_W + Sigma_B into PSD parts
    assert float(m.nc1) >= 0 and 0 <= float(m.self_duality) <= 4
    assert float(m.max_angle_means) <= 1 + 1 / (C - 1) + 1e-12
    for S in (stats.sigma_w, stats.sigma_b):
        assert np.linalg.eigvalsh(np.asarray(S)).min() >= -1e-12 * max(1.0, float(jnp.max(jnp.abs(S))))
    np.testing.assert_allclose(np.asarray(stats.sigma_t), np.asarray(stats.sigma_w + stats.sigma_b),
                               atol=1e-12 * float(jnp.max(jnp.abs(stats.sigma_t))))


# ---------------------------------------------------------------------------------------------
# streaming


def stream(h, labels, C, cuts):
    acc = StreamingStatistics.init(h.shape[1], num_classes=C)
    update = jax.jit(StreamingStatistics.update)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        acc = update(acc, h[lo:hi], labels[lo:hi])
    return acc.statistics()


def relative_error(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_streaming_equals_one_shot():
    h, labels, W, _ = random_problem(4, C=4, p=6, n_per_class=(40, 25, 33, 30))
    n = labels.size
    cuts = [0, 1, 2, 17, 17, 60, 61, 100, n]  # a single point, an empty batch, batches missing classes
    s1 = class_statistics(h, labels, num_classes=4)
    s2 = stream(h, labels, 4, cuts)
    np.testing.assert_array_equal(np.asarray(s2.counts), np.asarray(s1.counts))
    for name in ClassStatistics._fields[1:]:
        assert relative_error(getattr(s2, name), getattr(s1, name)) < 1e-12, name
    assert_metrics_close(collapse_metrics(s2, W), collapse_metrics(s1, W), rtol=1e-12)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**16), log_s=st.floats(-2, 2))
def test_streaming_property(seed, log_s):
    rng = np.random.default_rng(seed)
    C, p, n = 3, 4, 15
    labels = rng.permutation(np.concatenate([np.arange(C), rng.integers(0, C, n - C)]))
    h = (rng.standard_normal((n, p)) + rng.standard_normal((C, p))[labels]) * 10.0**log_s
    s1 = class_statistics(h, labels, num_classes=C)
    s2 = stream(h, labels, C, [0, 1, 6, 15])  # the labels are random, so batches miss random classes
    for name in ClassStatistics._fields[1:]:
        np.testing.assert_allclose(np.asarray(getattr(s2, name)), np.asarray(getattr(s1, name)), rtol=1e-11,
                                   atol=1e-12 * float(jnp.max(jnp.abs(getattr(s1, name)))), err_msg=name)


def test_streaming_is_stable_under_a_large_offset():
    # features 1e8 + O(1): raw sums of squares lose every digit; the pairwise update does not
    h, labels, _, _ = random_problem(6, C=3, p=3, n_per_class=(50, 40, 60))
    offset = 1e8
    ref = class_statistics(h, labels, num_classes=3)  # translation-invariant covariances
    s = stream(h + offset, labels, 3, list(range(0, labels.size + 1, 7)) + [labels.size])
    for name in ("sigma_w", "sigma_b", "sigma_t"):
        assert relative_error(getattr(s, name), getattr(ref, name)) < 1e-6, name
    x = h[labels == 0] + offset  # what the naive formula would give for one class
    naive = (x.T @ x) / len(x) - np.outer(x.mean(0), x.mean(0))
    assert np.linalg.norm(naive - np.cov(h[labels == 0].T, bias=True)) > 1e-3 * np.linalg.norm(naive)


# ---------------------------------------------------------------------------------------------
# transformations: jit, vmap, grad


def all_metrics(h, labels, W, b, C):
    stats = class_statistics(h, labels, num_classes=C)
    return collapse_metrics(stats, W), ncc_mismatch(h, stats.class_means, W, b)


def test_jit_equals_eager():
    h, labels, W, b = random_problem(8)
    eager = all_metrics(h, labels, W, b, 4)
    jitted = jax.jit(all_metrics, static_argnums=4)(h, labels, W, b, 4)
    assert_metrics_close(jitted[0], eager[0], rtol=1e-13)
    assert float(jitted[1]) == float(eager[1])


def test_vmap_equals_loop():
    probs = [random_problem(s) for s in range(3)]
    labels = probs[0][1]
    hs = jnp.stack([jnp.asarray(p[0]) for p in probs])
    Ws = jnp.stack([jnp.asarray(p[2]) for p in probs])
    bs = jnp.stack([jnp.asarray(p[3]) for p in probs])
    batched = jax.vmap(lambda h, W, b: all_metrics(h, labels, W, b, 4))(hs, Ws, bs)
    for i in range(3):
        one = all_metrics(hs[i], labels, Ws[i], bs[i], 4)
        assert_metrics_close(Collapse(*(x[i] for x in batched[0])), one[0], rtol=1e-13)
        assert float(batched[1][i]) == float(one[1])


def test_gradients_match_finite_differences():
    h, labels, W, _ = random_problem(12)
    weights = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, len(Collapse._fields)))

    @jax.jit
    def f(h, W):  # a random combination of all the metrics
        return jnp.dot(weights, jnp.stack(list(collapse_metrics(class_statistics(h, labels, num_classes=4), W))))

    x = (jnp.asarray(h), jnp.asarray(W))
    grad = jax.jit(jax.grad(f, argnums=(0, 1)))(*x)
    rng = np.random.default_rng(1)
    for _ in range(3):  # directional derivatives against central differences (float64)
        v = [jnp.asarray(rng.standard_normal(a.shape)) for a in x]
        eps = 1e-6
        fd = (f(*(a + eps * d for a, d in zip(x, v))) - f(*(a - eps * d for a, d in zip(x, v)))) / (2 * eps)
        ad = sum(jnp.sum(g * d) for g, d in zip(grad, v))
        assert float(ad) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


def test_gradients_finite_at_exact_collapse():
    C, p = 4, 6
    mu = simplex_etf(jnp.asarray(orthogonal(np.random.default_rng(0), p, C)), num_classes=C)
    labels = jnp.asarray(np.repeat(np.arange(C), (5, 3, 7, 4)))

    def total(h, W):
        return sum(collapse_metrics(class_statistics(h, labels, num_classes=C), W))

    gh, gw = jax.jit(jax.grad(total, argnums=(0, 1)))(mu[labels], mu)
    assert np.all(np.isfinite(np.asarray(gh))) and np.all(np.isfinite(np.asarray(gw)))
    nc1 = jax.jit(jax.grad(lambda h: within_class_variation(class_statistics(h, labels, num_classes=C))))
    np.testing.assert_allclose(np.asarray(nc1(mu[labels])), 0.0, atol=1e-12)  # NC1 = 0 is a minimum


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_raises_value_errors():
    h, labels, W, b = random_problem(0)
    with pytest.raises(ValueError, match=r"num_classes must be an integer in \[2, inf\)"):
        class_statistics(h, labels, num_classes=1)
    with pytest.raises(ValueError, match="labels must be an integer array"):
        class_statistics(h, labels.astype(float), num_classes=4)
    with pytest.raises(ValueError, match=r"labels must have shape \(n,\)"):
        class_statistics(h, labels[:-1], num_classes=4)
    with pytest.raises(ValueError, match=r"features must be 2-d"):
        class_statistics(h[:, 0], labels, num_classes=4)
    with pytest.raises(ValueError, match=r"labels must be in \[0, num_classes\) = \[0, 3\)"):
        class_statistics(h, labels, num_classes=3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, num_classes\)"):
        class_statistics(h, np.where(labels == 0, -1, labels), num_classes=4)
    with pytest.raises(ValueError, match=r"every class needs at least one sample.*\[4\]"):
        class_statistics(h, labels, num_classes=5)
    with pytest.raises(ValueError, match="features must be finite"):
        class_statistics(np.where(h > 1, np.nan, h), labels, num_classes=4)
    stats = class_statistics(h, labels, num_classes=4)
    with pytest.raises(ValueError, match=r"weights must have shape \(num_classes, p\) = \(4, 6\)"):
        collapse_metrics(stats, W.T)
    with pytest.raises(ValueError, match=r"bias must have shape \(num_classes,\)"):
        ncc_mismatch(h, stats.class_means, W, b[:2])
    with pytest.raises(ValueError, match="class_means must have shape"):
        ncc_mismatch(h, stats.class_means[:, :2], W, b)
    with pytest.raises(ValueError, match="rotation must have orthonormal columns"):
        simplex_etf(jnp.ones((5, 3)), num_classes=3)
    with pytest.raises(ValueError, match=r"rotation must have shape \(p, 3\) or \(p, 2\)"):
        simplex_etf(jnp.eye(5), num_classes=3)
    with pytest.raises(ValueError, match="scale must be a scalar"):
        simplex_etf(None, jnp.ones(2), num_classes=3)
    acc = StreamingStatistics.init(6, num_classes=4)
    with pytest.raises(ValueError, match="features must have 6 columns"):
        acc.update(h[:, :3], labels)
    with pytest.raises(ValueError, match="dim must be an integer"):
        StreamingStatistics.init(0, num_classes=4)
    with pytest.raises(ValueError, match=r"every class needs at least one sample.*\[1, 2, 3\]"):
        acc.update(h[labels == 0], labels[labels == 0]).statistics()


def test_bad_values_under_jit_raise_runtime_errors():
    h, labels, _, _ = random_problem(0)
    f = jax.jit(lambda h, y: class_statistics(h, y, num_classes=4).sigma_w)
    with pytest.raises(Exception, match=r"labels must be in \[0, num_classes\)"):
        f(h, np.where(labels == 0, 7, labels)).block_until_ready()
    with pytest.raises(Exception, match="every class needs at least one sample"):
        f(h, np.where(labels == 0, 1, labels)).block_until_ready()
    acc = StreamingStatistics.init(6, num_classes=4)
    with pytest.raises(Exception, match="every class needs at least one sample"):
        jax.jit(lambda a: a.statistics().sigma_w)(acc).block_until_ready()


def test_every_argument_is_validated_eagerly_and_under_jit():
    h, labels, W, b = random_problem(0)
    stats = class_statistics(h, labels, num_classes=4)
    for k in (2.0, True, None, "4"):
        with pytest.raises(ValueError, match="num_classes"):
            class_statistics(h, labels, num_classes=k)
    with pytest.raises(ValueError, match="labels must be an integer array"):
        class_statistics(h, labels > 1, num_classes=4)
    with pytest.raises(ValueError, match="weights must be finite"):
        collapse_metrics(stats, W.at[0, 0].set(np.nan) if hasattr(W, "at") else np.where(W > 1, np.nan, W))
    with pytest.raises(ValueError, match="bias must be finite"):
        ncc_mismatch(h, stats.class_means, W, np.full(4, np.inf))
    with pytest.raises(ValueError, match="bias must be real"):
        ncc_mismatch(h, stats.class_means, W, b + 1j)
    with pytest.raises(ValueError, match="stats.sigma_w must be finite"):
        within_class_variation(stats._replace(sigma_w=stats.sigma_w.at[0, 0].set(np.nan)))
    with pytest.raises(ValueError, match="rtol must be in"):
        within_class_variation(stats, rtol=-1.0)
    with pytest.raises(ValueError, match="scale must be finite"):
        simplex_etf(None, np.nan, num_classes=3)
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
        StreamingStatistics.init(3, num_classes=2, dtype=jnp.int32)
    # under jit: non-orthonormal rotation, NaN scale and NaN weights are caught at run time
    etf = jax.jit(lambda U, s: simplex_etf(U, s, num_classes=3))
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="rotation must have orthonormal columns"):
        jax.block_until_ready(etf(jnp.ones((5, 3)), 1.0))
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="scale must be finite"):
        jax.block_until_ready(etf(jnp.eye(3), jnp.nan))
    metrics = jax.jit(lambda W: collapse_metrics(stats, W).self_duality)
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="weights must be finite"):
        jax.block_until_ready(metrics(jnp.full((4, 6), jnp.nan)))
