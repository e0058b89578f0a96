"""rmtjax.finite: Flax networks built from a FullyConnected spec, ensembles, training loops,
empirical kernels against the infinite-width theory (Monte Carlo within 5 standard errors, and
convergence rates in the width)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rmtjax.activations import Erf, Gelu, Relu
from rmtjax.data._mixtures import gaussian_mixture_dataset
from rmtjax.finite import MLP, Dense, functional, init_ensemble, train
from rmtjax.kernels import FullyConnected, kernel


def _x(n=4, d=6, seed=1):
    x = jax.random.normal(jax.random.key(seed), (n, d))
    return x.at[-1].set(-x[0])  # an opposite pair


# ------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,residual",
    [
        (FullyConnected(2, W_std=jnp.array([1.2, 1.5, 0.9]), b_std=0.2, activation=Erf()), False),
        (FullyConnected(1, W_std=1.0, b_std=0.1, activation=Gelu(), parameterization="standard", widths=256), False),
        (FullyConnected(3, W_std=1.3, b_std=0.1, activation=Relu()), True),
    ],
    ids=["erf-per-layer", "gelu-standard", "relu-residual"],
)
def test_initial_outputs_have_the_nngp_covariance(spec, residual):
    # f(x) f(x')^T averaged over 128 initialisations (and 2 output units) vs the theory: 5 SE.
    # Width 256: the finite-width bias O(1/width) is far below the Monte-Carlo error (~10%).
    x = _x()
    ens = init_ensemble(jax.random.key(0), spec, x.shape[1], 2, size=128, width=256, residual=residual)
    f = np.asarray(jax.jit(ens.__call__)(x))  # (s, n, k)
    prods = np.einsum("sik,sjk->sij", f, f) / f.shape[2]
    mean, se = prods.mean(0), prods.std(0, ddof=1) / np.sqrt(len(prods))
    theory = np.asarray(ens.model.infinite_width_kernel(x).nngp)
    assert np.max(np.abs(mean - theory) / se) < 5
    assert np.max(se) < 0.15 * np.max(np.abs(theory))


def test_parameterizations_compute_the_same_function():
    ntk = Dense(5, 3, 1.7, 0.3, rngs=nnx.Rngs(0))
    std = Dense(5, 3, 1.7, 0.3, parameterization="standard", rngs=nnx.Rngs(0))
    std.kernel[...] = ntk.kernel[...] * (1.7 / np.sqrt(5))
    std.bias[...] = ntk.bias[...] * 0.3
    x = _x(4, 5)
    np.testing.assert_allclose(ntk(x), std(x), rtol=1e-13)
    w, b = ntk.effective()
    np.testing.assert_allclose(ntk(x), x @ w + b[None, :], rtol=1e-13)


def test_functional_ensemble_and_readout_are_consistent():
    spec = FullyConnected(2, 1.4, 0.1, Erf())
    x = _x(5, 7)
    ens = init_ensemble(jax.random.key(3), spec, 7, 3, size=4, width=16)
    keys = jax.random.split(jax.random.key(3), 4)
    loop = np.stack([MLP(spec, 7, 3, width=16, rngs=nnx.Rngs(params=k))(x) for k in keys])
    np.testing.assert_allclose(np.asarray(ens(x)), loop, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(ens.member(2)(x)), loop[2], rtol=1e-13)
    net = ens.member(1)
    apply, params = functional(net)
    np.testing.assert_allclose(apply(params, x), net(x), rtol=1e-14)
    np.testing.assert_allclose(jax.jit(apply)(params, x), net(x), rtol=1e-13)
    w, b = net.readout()
    np.testing.assert_allclose(net.features(x) @ w.T + b[None, :], net(x), rtol=1e-12)
    # a linear network (depth 0) is x -> W_std/sqrt(d) x W + b_std b
    lin = MLP(FullyConnected(0, 2.0, 0.5), 7, 2, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(lin.features(x), x)


def test_network_bad_input():
    with pytest.raises(ValueError, match="spec"):
        MLP("relu", 3, width=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        MLP(FullyConnected(2), 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        MLP(FullyConnected(2), 3, width=(4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="disagrees"):
        MLP(FullyConnected(1, parameterization="standard", widths=8), 3, width=9, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="residual"):
        MLP(FullyConnected(2), 3, width=(4, 5), residual=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="parameterization"):
        Dense(2, 2, parameterization="mup", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="size"):
        init_ensemble(jax.random.key(0), FullyConnected(1), 3, size=0, width=4)


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def test_full_batch_gradient_descent_matches_a_hand_written_loop():
    spec = FullyConnected(1, 1.5, 0.1, Erf())
    x = _x(8, 5)
    y = jnp.sin(x[:, :2])
    net = MLP(spec, 5, 2, width=32, rngs=nnx.Rngs(0))
    apply, p = functional(net)

    def loss(p):  # (1 / 2nk) sum (f - y)^2, written out
        return 0.5 * jnp.sum((apply(p, x) - y) ** 2) / y.size

    gd_step = jax.jit(lambda p: jax.tree_util.tree_map(lambda a, g: a - 0.3 * g, p, jax.grad(loss)(p)))
    p_ref = p
    for _ in range(7):
        p_ref = gd_step(p_ref)
    hist = train(net, x, y, optax.sgd(0.3), epochs=7, record_every=3, eval_x=x[:3], progress=False)
    np.testing.assert_allclose(net(x), apply(p_ref, x), rtol=1e-12)
    assert hist.epoch.tolist() == [0, 3, 6, 7] and hist.step.tolist() == [0, 3, 6, 7]
    np.testing.assert_allclose(hist.loss[-1], loss(p_ref), rtol=1e-12)
    np.testing.assert_allclose(hist.outputs[-1], apply(p_ref, x[:3]), rtol=1e-12)
    assert hist.outputs.shape == (4, 3, 2) and hist.loss[-1] < hist.loss[0]


def test_minibatch_sgd_with_weight_decay_and_callback_learns_a_mixture():
    ds = gaussian_mixture_dataset(jax.random.key(0), 2.0 * jnp.eye(5)[:3], 1.0, n_train=90, n_test=30)
    spec = FullyConnected(2, 2.0**0.5, 0.1, Relu())

    def run(wd):
        net = MLP(spec, 5, 3, width=64, rngs=nnx.Rngs(0))
        opt = optax.chain(optax.add_decayed_weights(wd), optax.sgd(0.5, momentum=0.9))
        hist = train(net, ds.x_train, ds.y_train, opt, loss="cross_entropy", epochs=30, batch_size=20,
                     key=jax.random.key(1), record_every=10, progress=False,
                     callback=lambda m, e: {"epoch": e, "features": m.features(ds.x_train)})
        return net, hist

    net, hist = run(0.0)
    assert hist.step.tolist() == [0, 40, 80, 120]  # 4 minibatches of 20 per epoch (10 left out)
    assert [r["epoch"] for r in hist.records] == [0, 10, 20, 30]
    assert hist.records[-1]["features"].shape == (90, 64)
    assert hist.accuracy[-1] > 0.95 and hist.loss[-1] < 0.3 * hist.loss[0]
    test_acc = np.mean(np.argmax(np.asarray(net(ds.x_test)), 1) == np.asarray(ds.labels_test))
    assert test_acc > 0.8
    net_wd, _ = run(0.05)
    norm = lambda m: sum(float(jnp.sum(a**2)) for a in jax.tree_util.tree_leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    assert norm(net_wd) < 0.8 * norm(net)


def test_adam_and_a_custom_loss():
    x = _x(10, 3)
    y = x[:, :1] ** 2
    net = MLP(FullyConnected(1, 1.0, 0.1, Relu()), 3, 1, width=32, rngs=nnx.Rngs(0))
    hist = train(net, x, y, optax.adam(1e-2), epochs=50, record_every=50, progress=False,
                 loss=lambda f, t: jnp.mean(jnp.abs(f - t)))
    assert hist.loss[-1] < 0.5 * hist.loss[0]
    np.testing.assert_allclose(hist.loss[-1], np.mean(np.abs(np.asarray(net(x)) - np.asarray(y))), rtol=1e-12)


def test_training_bad_input():
    net = MLP(FullyConnected(1), 3, width=4, rngs=nnx.Rngs(0))
    x, y = jnp.ones((6, 3)), jnp.ones((6, 1))
    with pytest.raises(ValueError, match="same n"):
        train(net, x, jnp.ones((5, 1)), optax.sgd(0.1), epochs=1)
    with pytest.raises(ValueError, match="loss"):
        train(net, x, y, optax.sgd(0.1), epochs=1, loss="hinge")
    with pytest.raises(ValueError, match="key"):
        train(net, x, y, optax.sgd(0.1), epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        train(net, x, y, optax.sgd(0.1), epochs=1, batch_size=7, key=jax.random.key(0))
    with pytest.raises(ValueError, match="epochs"):
        train(net, x, y, optax.sgd(0.1), epochs=-1)
    with pytest.raises(ValueError, match="finite"):
        train(net, x.at[0, 0].set(jnp.nan), y, optax.sgd(0.1), epochs=1)
    with pytest.raises(ValueError, match="eval_x"):
        train(net, x, y, optax.sgd(0.1), epochs=1, eval_x=jnp.ones((2, 4)))
