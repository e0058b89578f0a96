"""Fuzz entries for rmtjax.data, rmtjax.collapse and rmtjax.regression."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from rmtjax import collapse, data, regression
from rmtjax.activations import Erf, LeakyRelu, Relu, Tanh
from rmtjax.kernels import FullyConnected, kernel

from .harness import NAN, Entry, array, number, sample, static_int
from .specs_dynamics import finite_array, keys, positive_rate, psd

# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------


def labels(n: int, num_classes: int) -> st.SearchStrategy:
    """Integer labels covering every class, plus out-of-range, float, bool, 2-d and empty ones."""

    def valid(seed):
        rng = np.random.default_rng(seed)
        return rng.permutation(np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n - num_classes)]))

    base = st.integers(0, 2**16).map(valid)
    bads = st.one_of(
        base.map(lambda a: np.where(a == 0, num_classes, a)),
        base.map(lambda a: np.where(a == 0, -1, a)),
        base.map(lambda a: a.astype(float)),
        base.map(lambda a: a > 0),
        base.map(lambda a: a[None]),
        st.just(np.zeros(0, int)),
    )
    return st.one_of(base, base, base, bads)


def weights_tuple(k: int) -> st.SearchStrategy:
    good = st.tuples(*[st.floats(0.1, 3.0)] * k)
    return st.one_of(good, good, st.sampled_from([(0.0,) * k, (NAN,) + (1.0,) * (k - 1), (1.0,) * (k + 1),
                                                  (-1.0,) + (1.0,) * (k - 1)]))


def dims() -> st.SearchStrategy:
    return st.one_of(st.sampled_from([(3, 5), (3, 6, 4), (2, 4)]),
                     st.sampled_from([(3,), (3, 0), (3, 2.5), (3, True), (3, -1), "35", None]))


# ---------------------------------------------------------------------------------------------
# fixed inputs
# ---------------------------------------------------------------------------------------------

NET = FullyConnected(1, 1.5, 0.1, Erf())


@functools.lru_cache(maxsize=None)
def _problem():
    x = np.random.default_rng(0).normal(size=(6, 3))
    xt = np.random.default_rng(1).normal(size=(2, 3))
    return x, xt, kernel(x, None, NET), kernel(xt, x, NET), kernel(xt, None, NET)


@functools.lru_cache(maxsize=None)
def _generator():
    return data.random_generator(jax.random.key(0), (3, 6, 5), activation=Tanh(), sigma_star=1.5)


def _stats(features, labels):
    return collapse.class_statistics(features, labels, num_classes=3)


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def _one_hot_rows(kwargs, out):
    out = np.asarray(out)
    assert out.shape[1] == kwargs["num_classes"]
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(out.argmax(1), np.asarray(kwargs["labels"]))


def _norm_below(kwargs, out):
    s = np.linalg.norm(np.asarray(out), 2)
    assert s <= float(kwargs["sigma_star"]) * (1 + 1e-9) + 1e-12, (s, kwargs["sigma_star"])


def _power_bound(kwargs, out):
    s = float(out[0])
    assert s <= np.linalg.norm(np.asarray(kwargs["w"]), 2) * (1 + 1e-9) + 1e-12, "power iteration overshoots sigma_1"


def _counts_sum(kwargs, out):
    assert sum(out) == kwargs["n"] and all(c >= 0 for c in out)


def _stats_decomposition(kwargs, out):
    np.testing.assert_allclose(out.sigma_t, out.sigma_w + out.sigma_b, atol=1e-10 * (1 + float(jnp.abs(out.sigma_t).max())))
    assert int(np.sum(out.counts)) == len(kwargs["labels"])


def _metrics_nonnegative(kwargs, out):
    assert all(float(v) >= -1e-12 for v in out), out


def _fraction(kwargs, out):
    assert 0.0 <= float(out) <= 1.0


def _etf(kwargs, out):
    m = np.asarray(out)
    np.testing.assert_allclose(m.sum(0), 0.0, atol=1e-9 * max(1.0, abs(float(kwargs["scale"]))))


def _posterior_variance(kwargs, out):
    assert np.all(np.diag(np.asarray(out.covariance)) >= -1e-8), "a posterior variance is negative"


def _gd_limits(kwargs, out):
    assert np.all(np.isfinite(np.asarray(out)))


def _split_sizes(kwargs, out):
    assert out.x_train.shape[0] == kwargs["n_train"] and out.x_test.shape[0] == kwargs["n_test"]


def _lml_bound(kwargs, out):
    """log p(Y) <= -(k/2) log det(2 pi (K + noise I)) (the quadratic term is <= 0)."""
    k = np.asarray(kwargs["k_train_train"], float) + float(kwargs["noise"]) * np.eye(6)
    _, logdet = np.linalg.slogdet(2 * np.pi * k)
    assert float(out) <= -0.5 * 2 * logdet * (1 - 1e-9) + 1e-9, (float(out), logdet)


def _nonnegative(out):
    assert float(out) >= 0, float(out)


def _cg_check(kwargs, out):
    """The weights solve (K + ridge I) a = y (the dense kernel, an independent product)."""
    K = np.asarray(kernel(kwargs["x_train"], None, NET).nngp)
    y = np.asarray(kwargs["y_train"], float)
    r = (K + float(kwargs["ridge"]) * np.eye(len(K))) @ np.asarray(out.weights) - y
    assert np.linalg.norm(r) <= 1e-8 * max(np.linalg.norm(y), 1e-300), np.linalg.norm(r)


def _fit_at_target(kwargs, out):
    if bool(out.grad_norm < 1e-6):
        assert abs(float(np.log(out.params["a"])) - 0.5) < 1e-5, out



ENTRIES = [
    # ------------------------------------------------------------------ data: real and mixtures
    Entry("data.one_hot", lambda labels, num_classes, center: data.one_hot(labels, num_classes, center=center),
          {"labels": labels(8, 3), "num_classes": st.one_of(st.just(3), st.just(3), static_int(1, 5)),
           "center": st.sampled_from([False, False, True, "yes"])},
          static=("num_classes", "center"),
          check=lambda kw, out: _one_hot_rows(kw, np.asarray(out) + (1 / kw["num_classes"] if kw["center"] else 0))),
    Entry("data.class_counts", lambda n, weights: data.class_counts(n, weights),
          {"n": static_int(1, 50), "weights": weights_tuple(3)}, static=("n", "weights"), check=_counts_sum),
    Entry("data.gaussian_mixture",
          lambda key, means, covariances, n: data.gaussian_mixture(key, means, covariances, n=n),
          {"key": keys(), "means": finite_array((2, 3)), "covariances": st.one_of(number(0.0, 2.0), psd(3).map(
              lambda c: np.stack([c + 0.1 * np.eye(3), np.eye(3)]) if np.ndim(c) == 2 and c.shape == (3, 3) else c)),
           "n": static_int(1, 12)}, static=("n",), max_examples=15),
    Entry("data.gaussian_mixture_dataset",
          lambda key, means, n_train: data.gaussian_mixture_dataset(key, means, 0.5, n_train=n_train, n_test=4),
          {"key": keys(), "means": finite_array((3, 2)), "n_train": static_int(1, 10)},
          static=("n_train",), names=("n_test",)),
    Entry("data.split",
          lambda x, labels, n_train, n_test, standardize: data.split(x, labels, n_train=n_train, n_test=n_test,
                                                                     standardize=standardize),
          {"x": finite_array((8, 3)), "labels": labels(8, 3), "n_train": static_int(1, 8), "n_test": static_int(1, 8),
           "standardize": st.sampled_from(["samples", "features", None, "pixels"])},
          jit=False, check=_split_sizes, names=("num_classes",)),
    Entry("data.standardize", lambda x_train, x_test, over: data.standardize(x_train, x_test, over=over),
          {"x_train": finite_array((4, 3)), "x_test": finite_array((2, 3)),
           "over": st.sampled_from(["samples", "features", None, "rows"])}, jit=False),
    Entry("data.mnist", lambda n_train, n_test, seed: data.mnist(n_train, n_test, seed=seed, classes=(0, 1)),
          {"n_train": static_int(1, 20), "n_test": static_int(1, 20), "seed": static_int(0, 5)},
          static=("n_train", "n_test", "seed"), max_examples=6),
    Entry("data.digits",
          lambda n_train, n_test, center_targets: data.digits(n_train, n_test, center_targets=center_targets),
          {"n_train": static_int(1, 20), "n_test": static_int(1, 20),
           "center_targets": st.sampled_from([False, True, "yes"])},
          static=("n_train", "n_test", "center_targets"), max_examples=6),
    # ------------------------------------------------------------------ data: concentrated
    Entry("data.activation_lipschitz", lambda a, b: data.activation_lipschitz(Erf(a, b)),
          {"a": number(-3.0, 3.0), "b": number(-3.0, 3.0)}, names=("activation",)),
    Entry("data.power_iteration", lambda w, v0, n_iter: data.power_iteration(w, v0, n_iter=n_iter),
          {"w": finite_array((4, 3)), "v0": finite_array((3,)), "n_iter": static_int(1, 30)},
          static=("n_iter",), check=_power_bound, rtol=1e-5),
    Entry("data.project_spectral_norm", lambda w, sigma_star: data.project_spectral_norm(w, sigma_star),
          {"w": finite_array((4, 3), -3.0, 3.0), "sigma_star": positive_rate(3.0)}, check=_norm_below),
    Entry("data.sigma_star_step", lambda w, sigma_star: data.sigma_star_step(w, sigma_star),
          {"w": finite_array((4, 3), -3.0, 3.0), "sigma_star": positive_rate(3.0)}),
    Entry("data.sigma_star_update",
          lambda w, grad, eta, sigma_star: data.sigma_star_update(w, grad, eta, sigma_star),
          {"w": finite_array((3, 3)), "grad": finite_array((3, 3)), "eta": positive_rate(0.5),
           "sigma_star": positive_rate(3.0)}),
    Entry("data.spectral_normalize",
          lambda w, sigma_star, n_iter: data.spectral_normalize(w, sigma_star, n_iter=n_iter),
          {"w": finite_array((4, 3)), "sigma_star": positive_rate(3.0),
           "n_iter": st.one_of(st.none(), static_int(1, 20))}, static=("n_iter",), rtol=1e-5),
    Entry("data.random_generator",
          lambda key, dims, weight_std, bias_std: data.random_generator(key, dims, weight_std=weight_std,
                                                                        bias_std=bias_std, activation=LeakyRelu(0.2)),
          {"key": keys(), "dims": dims(), "weight_std": number(0.0, 3.0), "bias_std": number(0.0, 1.0)},
          static=("dims",)),
    Entry("data.LipschitzGenerator",
          lambda w, b, z: data.LipschitzGenerator((w,), (b,), Tanh(), None)(z),
          {"w": finite_array((4, 3)), "b": finite_array((4,)), "z": finite_array((2, 3))}, names=("weights", "biases")),
    Entry("data.LipschitzGenerator.project", lambda sigma_star: _generator().project(sigma_star).lipschitz_bound(),
          {"sigma_star": positive_rate(3.0)}),
    Entry("data.LipschitzGenerator.spectral_normalized",
          lambda sigma_star: _generator().spectral_normalized(sigma_star).layer_norms(),
          {"sigma_star": positive_rate(3.0)}),
    Entry("data.LipschitzGenerator.__call__", lambda z: _generator()(z), {"z": finite_array((2, 3), -3.0, 3.0)}),
    Entry("data.concentrated_mixture",
          lambda key, latent_means, latent_std, n: data.concentrated_mixture(key, _generator(), latent_means, n=n,
                                                                             latent_std=latent_std),
          {"key": keys(), "latent_means": finite_array((2, 3)), "latent_std": number(0.0, 2.0),
           "n": static_int(1, 10)}, static=("n",), names=("generators",)),
    Entry("data.concentrated_moments",
          lambda key, latent_means, n_samples: data.concentrated_moments(key, _generator(), latent_means,
                                                                         n_samples=n_samples, batch_size=16),
          {"key": keys(), "latent_means": finite_array((2, 3)), "n_samples": static_int(1, 40)},
          static=("n_samples",), names=("generators", "batch_size"), max_examples=8,
          valid=lambda: {"key": jax.random.key(0), "latent_means": sample((2, 3), -1.0, 1.0), "n_samples": 32}),
    # ------------------------------------------------------------------ collapse
    Entry("collapse.class_statistics", lambda features, labels: _stats(features, labels),
          {"features": finite_array((9, 4)), "labels": labels(9, 3)}, names=("num_classes",),
          check=_stats_decomposition),
    Entry("collapse.collapse_metrics",
          lambda features, labels, weights: collapse.collapse_metrics(_stats(features, labels), weights),
          {"features": finite_array((9, 4)), "labels": labels(9, 3), "weights": finite_array((3, 4))},
          names=("num_classes",), check=_metrics_nonnegative, allow_inf=("nc1",), rtol=1e-5),
    Entry("collapse.within_class_variation",
          lambda features, labels, rtol: collapse.within_class_variation(_stats(features, labels), rtol=rtol),
          {"features": finite_array((9, 4)), "labels": labels(9, 3),
           "rtol": st.one_of(st.none(), st.sampled_from([1e-12, 0.1, -1.0, 2.0, NAN]))},
          static=("rtol",), names=("num_classes",), allow_inf=("",), rtol=1e-5,
          check=lambda kw, out: _metrics_nonnegative(kw, [out])),
    Entry("collapse.ncc_mismatch",
          lambda features, class_means, weights, bias: collapse.ncc_mismatch(features, class_means, weights, bias),
          {"features": finite_array((6, 4)), "class_means": finite_array((3, 4)), "weights": finite_array((3, 4)),
           "bias": finite_array((3,))}, check=_fraction),
    Entry("collapse.simplex_etf",
          lambda rotation, scale, num_classes: collapse.simplex_etf(rotation, scale, num_classes=num_classes),
          {"rotation": st.one_of(st.none(), st.none(), finite_array((3, 3))), "scale": number(-3.0, 3.0),
           "num_classes": st.one_of(st.just(3), static_int(1, 4))}, static=("num_classes",), check=_etf),
    Entry("collapse.StreamingStatistics.init",
          lambda dim, num_classes: collapse.StreamingStatistics.init(dim, num_classes=num_classes),
          {"dim": static_int(1, 5), "num_classes": static_int(1, 4)}, static=("dim", "num_classes"),
          valid=lambda: {"dim": 4, "num_classes": 3}),
    Entry("collapse.StreamingStatistics.update",
          lambda features, labels: collapse.StreamingStatistics.init(4, num_classes=3).update(features, labels),
          {"features": finite_array((9, 4)), "labels": labels(9, 3)}, names=("num_classes",)),
    Entry("collapse.StreamingStatistics.statistics",
          lambda features, labels: collapse.StreamingStatistics.init(4, num_classes=3).update(features,
                                                                                            labels).statistics(),
          {"features": finite_array((9, 4)), "labels": labels(9, 3)}, names=("num_classes",),
          check=_stats_decomposition),
    # ------------------------------------------------------------------ regression
    Entry("regression.gp_inference",
          lambda k_train_train, y_train, diag_reg: regression.gp_inference(k_train_train, y_train, diag_reg)(
              "nngp", _problem()[3].nngp, _problem()[4].nngp),
          {"k_train_train": st.one_of(st.just(None), psd(6, bad=True)), "y_train": finite_array((6, 2)),
           "diag_reg": number(0.0, 1.0)},
          check=_posterior_variance, rtol=1e-5, max_examples=15),
    Entry("regression.gradient_descent_mse",
          lambda k_train_train, y_train, t, learning_rate: regression.gradient_descent_mse(
              k_train_train, y_train, learning_rate)(t, 0.0, 0.0, _problem()[3].ntk),
          {"k_train_train": st.one_of(st.just(None), psd(6)), "y_train": finite_array((6, 2)),
           "t": st.one_of(number(0.0, 100.0), st.just(np.inf)), "learning_rate": positive_rate(3.0)},
          rtol=1e-5, max_examples=15),
    Entry("regression.gradient_descent_mse_ensemble",
          lambda x_train, y_train, t: regression.gradient_descent_mse_ensemble(NET, x_train, y_train)(
              t, _problem()[1], "ntk", compute_cov=True),
          {"x_train": finite_array((6, 3)), "y_train": finite_array((6, 2)),
           "t": st.one_of(number(0.0, 100.0), st.just(None))},
          static=("t",), check=_posterior_variance, rtol=1e-5, max_examples=10),
    Entry("regression.blocked_kernel", lambda x1, x2, block: regression.blocked_kernel(x1, x2, NET, block=block),
          {"x1": finite_array((10, 3)), "x2": st.one_of(st.none(), finite_array((9, 3))), "block": static_int(6, 12)},
          jit=False, max_examples=8,
          valid=lambda: {"x1": sample((10, 3), -1.0, 1.0), "x2": sample((9, 3), -1.0, 1.0, seed=1), "block": 8}),
    Entry("regression.log_marginal_likelihood",
          lambda k_train_train, y_train, noise: regression.log_marginal_likelihood(k_train_train, y_train, noise),
          {"k_train_train": psd(6), "y_train": finite_array((6, 2)), "noise": number(0.0, 1.0)},
          check=_lml_bound, max_examples=12,
          valid=lambda: {"k_train_train": np.eye(6) + 0.5, "y_train": sample((6, 2), -1.0, 1.0), "noise": 0.1}),
    Entry("regression.generalized_cross_validation",
          lambda k_train_train, y_train, ridge: regression.generalized_cross_validation(k_train_train, y_train, ridge),
          {"k_train_train": psd(6), "y_train": finite_array((6, 2)), "ridge": number(0.0, 1.0)},
          check=lambda kw, out: _nonnegative(out), max_examples=12,
          valid=lambda: {"k_train_train": np.eye(6) + 0.5, "y_train": sample((6, 2), -1.0, 1.0), "ridge": 0.1}),
    Entry("regression.kernel_ridge_cg",
          lambda x_train, y_train, ridge: regression.kernel_ridge_cg(x_train, y_train, NET, ridge, rank=3, tile=8),
          {"x_train": finite_array((10, 3)), "y_train": finite_array((10, 2)), "ridge": number(0.0, 1.0)},
          check=_cg_check, jit=False, max_examples=6,
          valid=lambda: {"x_train": sample((10, 3), -1.0, 1.0), "y_train": sample((10, 2), -1.0, 1.0, seed=1),
                         "ridge": 0.1}),
    Entry("regression.KernelRidgeCG.__call__",
          lambda x_test: regression.kernel_ridge_cg(sample((10, 3), -1.0, 1.0), sample((10, 2), -1.0, 1.0, seed=1),
                                                    NET, 0.1, rank=3, tile=8)(x_test),
          {"x_test": finite_array((4, 3))}, names=("x1",), jit=False, max_examples=6,
          valid=lambda: {"x_test": sample((4, 3), -1.0, 1.0, seed=2)}),
    Entry("regression.fit_hyperparameters",
          lambda a, max_steps: regression.fit_hyperparameters(lambda p: (jnp.log(p["a"]) - 0.5) ** 2, {"a": a},
                                                              max_steps=max_steps),
          {"a": number(0.1, 10.0), "max_steps": static_int(1, 30)}, static=("max_steps",),
          names=("params", "max_steps"), check=lambda kw, out: _fit_at_target(kw, out), jit=False, max_examples=8,
          valid=lambda: {"a": 1.0, "max_steps": 20}),
]

# a None training kernel means "the true kernel of the fixed problem" (valid input, mixed with bad ones)
for _e in ENTRIES:
    if _e.name in ("regression.gp_inference", "regression.gradient_descent_mse"):
        _fn = _e.fn
        _e.fn = (lambda fn, which: lambda k_train_train, **kw: fn(
            getattr(_problem()[2], which) if k_train_train is None else k_train_train, **kw))(
            _fn, "nngp" if _e.name.endswith("gp_inference") else "ntk")

EXEMPT = {
    "data.Dataset": "result container (NamedTuple)",
    "data.Mixture": "result container (NamedTuple)",
    "data.MixtureMoments": "result container (NamedTuple)",
    "collapse.ClassStatistics": "result container (NamedTuple)",
    "collapse.Collapse": "result container (NamedTuple)",
    "regression.Gaussian": "result container (NamedTuple)",
    "regression.Fit": "result container (NamedTuple)",
}

_ = (array, Relu)
