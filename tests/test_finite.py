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
from rmtjax.finite import (MLP, Classifier, Dense, cross_entropy, empirical_nngp, empirical_ntk, ensemble_kernels,
                           functional, init_ensemble, input_jacobian, monte_carlo_kernels, mse, train)
from rmtjax.kernels import FullyConnected, kernel
from rmtjax.regression import gradient_descent_mse


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
        (FullyConnected(2, W_std=1.3, b_std=0.1, activation=Relu()), True),
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


@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_minibatch_sgd_with_weight_decay_and_callback_learns_a_mixture():
    ds = gaussian_mixture_dataset(jax.random.key(0), 2.0 * jnp.eye(5)[:3], 1.0, n_train=90, n_test=30)
    spec = FullyConnected(2, 2.0**0.5, 0.1, Relu())

    def run(wd):
        net = MLP(spec, 5, 3, width=64, rngs=nnx.Rngs(0))
        opt = optax.chain(optax.add_decayed_weights(wd), optax.sgd(0.5, momentum=0.9))
        hist = train(net, ds.x_train, ds.y_train, opt, loss="cross_entropy", epochs=20, batch_size=20,
                     key=jax.random.key(1), record_every=10, progress=False,
                     callback=lambda m, e: {"epoch": e, "features": m.features(ds.x_train)})
        return net, hist

    net, hist = run(0.0)
    assert hist.step.tolist() == [0, 40, 80]  # 4 minibatches of 20 per epoch (10 left out)
    assert [r["epoch"] for r in hist.records] == [0, 10, 20]
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
    with pytest.raises(ValueError, match="x must be finite"):
        train(net, x.at[0, 0].set(jnp.nan), y, optax.sgd(0.1), epochs=1)
    with pytest.raises(ValueError, match="eval_x"):
        train(net, x, y, optax.sgd(0.1), epochs=1, eval_x=jnp.ones((2, 4)))


# ------------------------------------------------------------------------------------------
# Empirical kernels
# ------------------------------------------------------------------------------------------


def _one_hidden_layer_ntk(net, x1, x2):
    """The NTK of a one-hidden-layer NTK-parameterised network written out by hand:
    sw1^2/w h.h' + sb1^2 + sw1^2/w sum_j v_jc^2 phi'(z_j) phi'(z'_j) (sw0^2 x.x'/d + sb0^2),
    averaged over the outputs c."""
    l0, l1 = net.layers
    sw0, sb0, sw1, sb1 = (float(a[...]) for a in (l0.W_std, l0.b_std, l1.W_std, l1.b_std))
    d, w = l0.in_features, l0.out_features
    phi = net.spec.activation
    z1, z2 = l0(x1), l0(x2)
    v2 = l1.kernel[...] ** 2  # (w, k)
    first = sw0**2 * (x1 @ x2.T) / d + sb0**2
    readout = sw1**2 / w * phi(z1) @ phi(z2).T + sb1**2
    hidden = sw1**2 / w * jnp.einsum("ij,lj,jc->il", phi.derivative(z1), phi.derivative(z2), v2) / v2.shape[1]
    return readout + hidden * first


@pytest.mark.parametrize("implementation", ["jacobian", "products", "auto"])
def test_empirical_ntk_matches_the_hand_written_formula(implementation):
    net = MLP(FullyConnected(1, 1.3, 0.2, Erf()), 4, 3, width=24, rngs=nnx.Rngs(2))
    apply, params = functional(net)
    x1, x2 = _x(5, 4), _x(3, 4, seed=4)
    k = empirical_ntk(x1, x2, apply, params, implementation=implementation, batch_size=4)
    np.testing.assert_allclose(k, _one_hidden_layer_ntk(net, x1, x2), rtol=1e-12)
    ks = empirical_ntk(x1, None, apply, params, implementation=implementation)
    np.testing.assert_allclose(ks, _one_hidden_layer_ntk(net, x1, x1), rtol=1e-12)
    f1, f2 = net(x1), net(x2)
    np.testing.assert_allclose(empirical_nngp(x1, x2, apply, params), f1 @ f2.T / 3, rtol=1e-13)


def test_ensemble_kernels_equal_a_loop_over_members():
    spec = FullyConnected(2, 1.4, 0.1, Relu())
    ens = init_ensemble(jax.random.key(5), spec, 4, 2, size=3, width=16)
    x = _x(3, 4)
    k = ensemble_kernels(x, None, ens, batch_size=2)
    for i in range(3):
        apply, params = functional(ens.member(i))
        np.testing.assert_allclose(k.ntk[i], empirical_ntk(x, None, apply, params), rtol=1e-12)
        np.testing.assert_allclose(k.nngp[i], empirical_nngp(x, None, apply, params), rtol=1e-12)


def test_input_jacobian_against_finite_differences_and_a_linear_network():
    net = MLP(FullyConnected(2, 1.5, 0.1, Erf()), 4, 2, width=16, rngs=nnx.Rngs(0))
    apply, params = functional(net)
    x = _x(3, 4)
    jac = np.asarray(input_jacobian(x, apply, params))
    eps = 1e-6
    for a in range(4):
        e = jnp.zeros(4).at[a].set(eps)[None, :]
        fd = (np.asarray(net(x + e)) - np.asarray(net(x - e))) / (2 * eps)
        np.testing.assert_allclose(jac[:, :, a], fd, rtol=1e-7, atol=1e-9)
    lin = MLP(FullyConnected(0, 2.0, 0.5), 4, 2, rngs=nnx.Rngs(0))
    apply, params = functional(lin)
    w = np.asarray(lin.layers[0].kernel[...]) * 2.0 / 2.0  # W_std / sqrt(d) = 1
    np.testing.assert_allclose(input_jacobian(x, apply, params), np.broadcast_to(w.T, (3, 2, 4)), rtol=1e-14)


def test_monte_carlo_kernels_within_five_standard_errors_of_the_theory():
    # 32 networks of width 256: the O(1/width) bias of the mean is well inside 5 SE
    spec = FullyConnected(2, 1.4, 0.1, Erf())
    x = _x(4, 6)
    ens = init_ensemble(jax.random.key(0), spec, 6, 1, size=32, width=256)
    mc = monte_carlo_kernels(x, None, ens)
    theory = kernel(x, None, spec)
    assert mc.samples == 32
    # informative: SE ~ sqrt(2/32) K_ii for the NNGP of one output, much smaller for the NTK
    for est, se, th, rel in ((mc.nngp, mc.nngp_stderr, theory.nngp, 0.5), (mc.ntk, mc.ntk_stderr, theory.ntk, 0.05)):
        assert np.max(np.abs(np.asarray(est - th)) / np.asarray(se)) < 5
        assert np.max(np.asarray(se)) < rel * np.max(np.abs(np.asarray(th)))


def _fit_slope(widths, errors):
    return float(np.polyfit(np.log(widths), np.log(errors), 1)[0])


@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_empirical_ntk_converges_at_rate_one_over_sqrt_width():
    # relative Frobenius error of one network's NTK, RMS over 8 initialisations per width:
    # O(width^-1/2) fluctuations (Hanin & Nica 2020). Fit over widths 64..4096 (one hidden layer;
    # the experiment does depth 2 over the same range).
    spec = FullyConnected(1, 1.4, 0.1, Relu())
    x = _x(5, 6)
    theory = np.asarray(kernel(x, None, spec).ntk)
    widths = (64, 256, 1024, 4096)
    errors = []
    for w in widths:
        ens = init_ensemble(jax.random.key(w), spec, 6, 1, size=8, width=w)
        k = np.asarray(ensemble_kernels(x, None, ens).ntk)
        errors.append(np.sqrt(np.mean(np.sum((k - theory[None]) ** 2, axis=(1, 2)))) / np.linalg.norm(theory))
    slope = _fit_slope(widths, errors)
    assert -0.7 < slope < -0.35, (slope, errors)
    assert errors[-1] < 0.05


@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_trained_wide_network_follows_ntk_gradient_flow():
    # Full-batch GD with step eta on the MSE for T steps vs the NTK gradient-flow prediction at
    # t = T (in units of eta) from the same initial outputs. The gap shrinks like width^-1/2;
    # the discretisation error of GD vs the flow (checked below) is far smaller.
    spec = FullyConnected(1, 1.5, 0.1, Erf())
    x, xt = _x(8, 5), _x(4, 5, seed=7)
    y = jnp.sin(2.0 * x[:, :1])
    theta, theta_t = kernel(x, None, spec).ntk, kernel(xt, x, spec).ntk
    eta, steps = 0.25, 80
    predict = gradient_descent_mse(theta, y, learning_rate=eta)
    opt = optax.sgd(eta)
    widths, gaps = (64, 512, 4096), []
    for w in widths:
        g = []
        for seed in range(3):
            net = MLP(spec, 5, 1, width=w, rngs=nnx.Rngs(seed))
            f0, ft0 = net(x), net(xt)
            train(net, x, y, opt, epochs=steps, record_every=steps, progress=False)
            ft = predict(float(steps), f0, ft0, theta_t)[1]
            g.append(float(jnp.linalg.norm(net(xt) - ft) / jnp.linalg.norm(ft - ft0)))
        gaps.append(float(np.sqrt(np.mean(np.square(g)))))
    slope = _fit_slope(widths, gaps)
    assert gaps[0] > gaps[1] > gaps[2] and -0.8 < slope < -0.3, (slope, gaps)
    # discrete GD on the linearised model vs the flow: the floor the gap cannot go below
    lam, v = np.linalg.eigh(np.asarray(theta))
    rhs = v.T @ np.asarray(y)
    disc = np.asarray(theta_t) @ v @ (((1 - (1 - eta * lam / 8) ** steps) / lam)[:, None] * rhs)
    flow = np.asarray(theta_t) @ v @ ((-np.expm1(-eta * steps * lam / 8) / lam)[:, None] * rhs)
    assert np.linalg.norm(disc - flow) / np.linalg.norm(flow) < 0.25 * gaps[-1]


def test_empirical_bad_input():
    net = MLP(FullyConnected(1), 3, width=4, rngs=nnx.Rngs(0))
    apply, params = functional(net)
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk(jnp.ones((2, 3)), None, apply, params, implementation="fast")
    with pytest.raises(ValueError, match="same number of features"):
        empirical_ntk(jnp.ones((2, 3)), jnp.ones((2, 4)), apply, params)
    with pytest.raises(ValueError, match="x1 must be finite"):
        empirical_nngp(jnp.full((2, 3), jnp.nan), None, apply, params)
    with pytest.raises(ValueError, match="ensemble"):
        monte_carlo_kernels(jnp.ones((2, 3)), None, (apply, params))
    with pytest.raises(ValueError, match=">= 2 members"):
        monte_carlo_kernels(jnp.ones((2, 3)), None, init_ensemble(jax.random.key(0), FullyConnected(1), 3, size=1,
                                                                   width=4))


# ------------------------------------------------------------------------------------------
# Issue 12: hyperparameters validated, diverging runs reported
# ------------------------------------------------------------------------------------------


def test_network_hyperparameters_are_validated():
    for bad in (-1.0, jnp.nan, jnp.inf, 1.0 + 1j, True):
        with pytest.raises(ValueError, match="W_std"):
            Dense(2, 2, bad, 0.1, rngs=nnx.Rngs(0))
        with pytest.raises(ValueError, match="b_std"):
            Dense(2, 2, 1.0, bad, rngs=nnx.Rngs(0))
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match="width"):
            MLP(FullyConnected(1), 3, width=bad, rngs=0)
    with pytest.raises(ValueError, match="in_features"):
        MLP(FullyConnected(1), 0, width=4, rngs=0)
    with pytest.raises(ValueError, match="rngs"):
        MLP(FullyConnected(1), 3, width=4, rngs=1.5)
    with pytest.raises(ValueError, match="residual must be True or False"):
        MLP(FullyConnected(2), 3, width=4, residual="yes", rngs=0)
    with pytest.raises(ValueError, match="x must have 3 columns"):
        MLP(FullyConnected(1), 3, width=4, rngs=0)(jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="key must be a JAX PRNG key"):
        init_ensemble(0, FullyConnected(1), 3, size=2, width=4)
    with pytest.raises(ValueError, match="depth"):
        Classifier(3, 2, width=4, depth=0)
    with pytest.raises(ValueError, match="seed"):
        Classifier(3, 2, width=4, depth=1, seed=-1)
    # a traced W_std is checked inside the compiled program
    f = jax.jit(lambda s: Dense(2, 2, s, 0.1, rngs=nnx.Rngs(0))(jnp.ones((1, 2))))
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="W_std must be finite and >= 0"):
        jax.block_until_ready(f(-1.0))


def test_losses_validate_their_inputs():
    f, y = jnp.zeros((2, 3)), jnp.eye(3)[:2]
    assert float(cross_entropy(f, y)) == pytest.approx(np.log(3), rel=1e-14)
    with pytest.raises(ValueError, match="targets must be probability vectors"):
        cross_entropy(f, y - 1 / 3)  # centred one-hot targets are not probabilities
    with pytest.raises(ValueError, match="outputs and targets must have the same shape"):
        mse(f, y[:1])
    with pytest.raises(ValueError, match="outputs must be finite"):
        mse(f.at[0, 0].set(jnp.nan), y)
    net = MLP(FullyConnected(1), 3, 3, width=4, rngs=0)
    with pytest.raises(ValueError, match="y must be probability vectors"):
        train(net, jnp.ones((2, 3)), y - 1 / 3, optax.sgd(0.1), epochs=1, loss="cross_entropy", progress=False)
    with pytest.raises(ValueError, match="optimizer must be an optax.GradientTransformation"):
        train(net, jnp.ones((2, 3)), y, 0.1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="loss must return a scalar"):
        train(net, jnp.ones((2, 3)), y, optax.sgd(0.1), epochs=1, loss=lambda a, b: a - b, progress=False)
    with pytest.raises(ValueError, match="model outputs have shape"):
        train(net, jnp.ones((2, 3)), y[:, :2], optax.sgd(0.1), epochs=1, progress=False)


def test_diverging_training_is_reported_never_a_nan_loss():
    """Full-batch GD with a learning rate far above 2 / lambda_max of the NTK: the loss overflows
    within a few epochs. Default: a ValueError naming the epoch; on_divergence='stop': a History
    that ends at the last finite record, diverged_at set, and the model holding finite weights."""
    x = _x(6, 3)
    y = jnp.sin(x[:, :1])

    def make():
        return MLP(FullyConnected(1, 1.5, 0.1, Erf()), 3, 1, width=16, rngs=0)

    net = make()
    with pytest.raises(ValueError, match="training diverged at epoch [0-9]+.*lower the optimizer's learning rate"):
        train(net, x, y, optax.sgd(1e6), epochs=60, progress=False)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(nnx.state(net, nnx.Param)))
    net = make()
    hist = train(net, x, y, optax.sgd(1e6), epochs=60, progress=False, on_divergence="stop")
    assert hist.diverged_at is not None and 0 < hist.diverged_at <= 60
    assert np.all(np.isfinite(hist.loss)) and hist.epoch[-1] < hist.diverged_at
    assert np.all(np.isfinite(np.asarray(net(x))))
    ok = train(make(), x, y, optax.sgd(0.1), epochs=3, progress=False)
    assert ok.diverged_at is None
    with pytest.raises(ValueError, match="on_divergence must be"):
        train(make(), x, y, optax.sgd(0.1), epochs=1, progress=False, on_divergence="ignore")


def test_conjugate_kernels_of_every_layer():
    # entry 0 is the input kernel, entry depth the readout's (from features()), entry 1 from the
    # first layer's outputs; the residual network's readout entry from its own features()
    from rmtjax.activations import Tanh

    x = jax.random.normal(jax.random.key(3), (5, 4))
    for residual in (False, True):
        net = MLP(FullyConnected(3, 1.3, 0.2, Tanh()), 4, 2, width=16, residual=residual, rngs=nnx.Rngs(0))
        G = net.conjugate_kernels(x)
        assert G.shape == (4, 5, 5)
        np.testing.assert_allclose(G[0], 1.3**2 * x @ x.T / 4 + 0.2**2, rtol=1e-13)
        h = net.features(x)
        np.testing.assert_allclose(G[-1], 1.3**2 * h @ h.T / 16 + 0.2**2, rtol=1e-12)
        h1 = Tanh()(net.layers[0](x))
        np.testing.assert_allclose(G[1], 1.3**2 * h1 @ h1.T / 16 + 0.2**2, rtol=1e-12)
    no_bias = MLP(FullyConnected(1, 1.3, None, Tanh()), 4, width=8, rngs=nnx.Rngs(1))
    h = no_bias.features(x)
    np.testing.assert_allclose(no_bias.conjugate_kernels(x)[-1], 1.3**2 * h @ h.T / 8, rtol=1e-12)
