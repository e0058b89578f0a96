"""Fuzz entries for rmtjax.finite (flax networks, empirical kernels, training)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from hypothesis import strategies as st

from rmtjax import finite
from rmtjax.activations import Erf
from rmtjax.kernels import FullyConnected

from .harness import NAN, Entry, number, static_int
from .specs_dynamics import finite_array, keys

X = np.random.default_rng(0).normal(size=(3, 4))


@functools.lru_cache(maxsize=None)
def _net():
    return finite.MLP(FullyConnected(1, 1.5, 0.1, Erf()), 4, 2, width=8, rngs=0)


@functools.lru_cache(maxsize=None)
def _ensemble():
    return finite.init_ensemble(jax.random.key(0), FullyConnected(1, 1.5, 0.1, Erf()), 4, 2, size=3, width=8)


def _apply_params():
    return finite.functional(_net())


def _rngs():
    good = st.integers(0, 100)
    return st.one_of(good, good, st.integers(0, 100).map(jax.random.key),
                     st.sampled_from([-1, 1.5, None, True, "seed"]))


def probabilities(shape):
    def valid(seed):
        p = np.random.default_rng(seed).uniform(size=shape)
        return p / p.sum(1, keepdims=True)

    base = st.integers(0, 2**16).map(valid)
    return st.one_of(base, base, base, base.map(lambda p: p - 1 / shape[1]), base.map(lambda p: 2 * p),
                     st.just(np.full(shape, NAN)), base.map(lambda p: p[0]))


def _symmetric_psd(kwargs, out):
    a = np.asarray(out)
    np.testing.assert_allclose(a, a.T, rtol=1e-9, atol=1e-12)
    assert np.linalg.eigvalsh(a).min() >= -1e-8 * max(1.0, np.abs(a).max())


def _loss_nonnegative(kwargs, out):
    assert float(out) >= 0.0


def _history(kwargs, out):
    assert out.diverged_at is None and np.all(np.isfinite(out.loss))
    assert out.epoch[0] == 0 and out.epoch[-1] == kwargs["epochs"]


ENTRIES = [
    Entry("finite.Dense", lambda W_std, b_std, x: finite.Dense(4, 2, W_std, b_std, rngs=nnx.Rngs(0))(x),
          {"W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0), "x": finite_array((3, 4))}),
    Entry("finite.MLP",
          lambda W_std, width, rngs: finite.MLP(FullyConnected(2, W_std, 0.1, Erf()), 4, 2, width=width,
                                                rngs=rngs)(X),
          {"W_std": number(0.0, 3.0), "width": static_int(1, 8), "rngs": _rngs()},
          static=("width", "rngs"), max_examples=10),
    Entry("finite.MLP.__call__", lambda x: _net()(x), {"x": finite_array((3, 4))}, max_examples=8),
    Entry("finite.MLP.features", lambda x: _net().features(x), {"x": finite_array((3, 4))}, max_examples=8),
    Entry("finite.MLP.infinite_width_kernel", lambda x1: _net().infinite_width_kernel(x1),
          {"x1": finite_array((3, 4))}, check=lambda kw, out: _symmetric_psd(kw, out.nngp), max_examples=8),
    Entry("finite.Classifier",
          lambda width, depth, seed, layer_norm: finite.Classifier(4, 3, width=width, depth=depth, seed=seed,
                                                                   layer_norm=layer_norm)(X),
          {"width": static_int(1, 6), "depth": static_int(1, 3), "seed": static_int(0, 5),
           "layer_norm": st.sampled_from([True, False, "no"])},
          static=("width", "depth", "seed", "layer_norm"), names=("in_features", "num_classes"), max_examples=8),
    Entry("finite.init_ensemble",
          lambda key, size, width: finite.init_ensemble(key, FullyConnected(1, 1.5, 0.1, Erf()), 4, size=size,
                                                        width=width)(X),
          {"key": keys(), "size": static_int(1, 4), "width": static_int(1, 6)},
          static=("size", "width"), max_examples=8),
    Entry("finite.Ensemble.__call__", lambda x: _ensemble()(x), {"x": finite_array((3, 4))}, max_examples=8),
    Entry("finite.Ensemble.member", lambda i: _ensemble().member(i)(X), {"i": static_int(0, 3)}, static=("i",),
          max_examples=6),
    Entry("finite.functional", lambda x: _apply_params()[0](_apply_params()[1], x), {"x": finite_array((3, 4))},
          names=("model",), max_examples=6),
    Entry("finite.infinite_width_kernel",
          lambda x1, W_std, residual: finite.infinite_width_kernel(x1, None, FullyConnected(2, W_std, 0.1, Erf()),
                                                                   widths=8, residual=residual),
          {"x1": finite_array((3, 4)), "W_std": number(0.0, 3.0), "residual": st.sampled_from([False, True, "yes"])},
          static=("residual",), names=("spec", "widths"), check=lambda kw, out: _symmetric_psd(kw, out.nngp),
          max_examples=10),
    Entry("finite.stax_layers",
          lambda x1, widths, residual: __import__("rmtjax").stax.serial(
              *finite.stax_layers(FullyConnected(2, 1.4, 0.1), widths, residual=residual))[2](x1, None).nngp,
          {"x1": finite_array((3, 4)), "widths": st.one_of(static_int(1, 8), st.just((8, 8)), st.just((8,))),
           "residual": st.sampled_from([False, True])},
          static=("widths", "residual"), names=("width",), check=_symmetric_psd, max_examples=8),
    Entry("finite.mse", lambda outputs, targets: finite.mse(outputs, targets),
          {"outputs": finite_array((4, 3)), "targets": finite_array((4, 3))}, check=_loss_nonnegative),
    Entry("finite.cross_entropy", lambda outputs, targets: finite.cross_entropy(outputs, targets),
          {"outputs": finite_array((4, 3), -5.0, 5.0), "targets": probabilities((4, 3))}, check=_loss_nonnegative),
    Entry("finite.empirical_nngp", lambda x1, x2: finite.empirical_nngp(x1, x2, *_apply_params()),
          {"x1": finite_array((3, 4)), "x2": st.one_of(st.none(), finite_array((2, 4)))}, max_examples=10),
    Entry("finite.empirical_ntk",
          lambda x1, implementation: finite.empirical_ntk(x1, None, *_apply_params(), implementation=implementation),
          {"x1": finite_array((3, 4)), "implementation": st.sampled_from(["auto", "jacobian", "products", "fast"])},
          static=("implementation",), check=_symmetric_psd, max_examples=10),
    Entry("finite.ensemble_kernels", lambda x1, ntk: finite.ensemble_kernels(x1, None, _ensemble(), ntk=ntk),
          {"x1": finite_array((3, 4)), "ntk": st.sampled_from([True, False, "yes"])}, static=("ntk",),
          names=("ensemble",), max_examples=8),
    Entry("finite.monte_carlo_kernels", lambda x1, x2: finite.monte_carlo_kernels(x1, x2, _ensemble()),
          {"x1": finite_array((3, 4)), "x2": st.one_of(st.none(), finite_array((2, 4)))}, names=("ensemble",),
          max_examples=8),
    Entry("finite.input_jacobian", lambda x: finite.input_jacobian(x, *_apply_params()), {"x": finite_array((3, 4))},
          names=("apply_fn", "params"), max_examples=8),
    Entry("finite.train",
          lambda x, y, learning_rate, epochs: finite.train(
              finite.MLP(FullyConnected(1, 1.5, 0.1, Erf()), 4, 2, width=8, rngs=0), x, y, optax.sgd(learning_rate),
              epochs=epochs, progress=False),
          {"x": finite_array((3, 4)), "y": finite_array((3, 2)), "learning_rate": st.floats(1e-3, 1.0),
           "epochs": static_int(0, 3)},
          jit=False, check=_history, names=("model", "optimizer"), max_examples=8),
]

EXEMPT = {
    "finite.History": "result container (NamedTuple)",
    "finite.MonteCarloKernel": "result container (NamedTuple)",
    "finite.Hyperparameter": "an nnx.Variable type (marks untrained arrays), not an entry point",
    "finite.Ensemble": "result container of init_ensemble (its methods are fuzzed: __call__, member)",
}

_ = jnp


# --------------------------------------------------------------------------------------------
# Padded networks (PaddedMLP, train_padded): width, depth and seed are traced under jit
# --------------------------------------------------------------------------------------------


def _padded(width=3, depth=2, W_std=1.5):
    return finite.PaddedMLP(width, depth, W_std, 0.1, Erf(), in_features=4, out_features=2, max_width=6, max_depth=3)


def _padded_call(x):
    net = _padded()
    return net(net.init(0), x)


def _padded_train(x, y, learning_rate, epochs):
    net = _padded()
    return finite.train_padded(net, net.init(0), x, y, optax.sgd(learning_rate), epochs=epochs)


def _padded_training_check(kwargs, out):
    assert out.loss.shape == (kwargs["epochs"] + 1,)


ENTRIES += [
    Entry("finite.PaddedMLP",
          lambda width, depth, W_std, seed: (lambda net: net(net.init(seed), X))(_padded(width, depth, W_std)),
          {"width": static_int(1, 6), "depth": static_int(1, 3), "W_std": number(0.0, 3.0),
           "seed": st.one_of(st.integers(0, 100), st.sampled_from([-1, 2.5, None]))},
          names=("key",), max_examples=12,
          valid=lambda: {"width": 2, "depth": 3, "W_std": 1.0, "seed": 4}),
    Entry("finite.PaddedMLP.__call__", _padded_call, {"x": finite_array((3, 4))}, max_examples=6),
    Entry("finite.train_padded", _padded_train,
          {"x": finite_array((3, 4)), "y": finite_array((3, 2)), "learning_rate": st.floats(1e-3, 0.5),
           "epochs": st.one_of(st.integers(0, 3), st.sampled_from([-1, 2.5, None, True]))},
          static=("epochs",), check=_padded_training_check, max_examples=8),
]

EXEMPT |= {
    "finite.PaddedParams": "result container of PaddedMLP.init (NamedTuple)",
    "finite.PaddedTraining": "result container of train_padded (NamedTuple)",
}
