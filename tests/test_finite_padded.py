"""rmtjax.finite.PaddedMLP / train_padded: networks padded to a largest width and depth equal the
unpadded MLP of the same width, depth and parameters (outputs, parameter gradients, empirical
NNGP/NTK, training under GD, SGD and Adam), to 1e-12 in float64; a vmap over (width, depth, seed,
W_std) is one traced program and equals the loop; bad width/depth raise eagerly and under jit."""

import equinox as eqx
import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rmtjax import sweep
from rmtjax.activations import Erf, LeakyRelu, Tanh
from rmtjax.finite import (PaddedMLP, PaddedParams, empirical_nngp, empirical_ntk, functional, train,
                           train_padded)

D_IN, K, N, DEPTH = 4, 2, 8, 3
X = np.random.default_rng(0).normal(size=(6, D_IN))
Y = np.random.default_rng(1).normal(size=(6, K))
TOL = 1e-12


def _net(width, depth, W_std=1.4, b_std=0.2, activation=None, parameterization="ntk", **kw):
    return PaddedMLP(width, depth, W_std, b_std, Erf() if activation is None else activation, in_features=D_IN,
                     out_features=K, max_width=N, max_depth=DEPTH, parameterization=parameterization, **kw)


def _blocks(p: PaddedParams, width: int, depth: int):
    """The active blocks of padded parameters, layer by layer: [(kernel, bias), ...] (the rule of
    the module docstring, written out independently)."""
    out = [(p.first_kernel[:, :width], p.first_bias[:width])]
    out += [(p.hidden_kernel[l, :width, :width], p.hidden_bias[l, :width]) for l in range(depth - 1)]
    return out + [(p.readout_kernel[:width], p.readout_bias)]


def _mlp_blocks(mlp):
    return [(layer.kernel[...], layer.bias[...]) for layer in mlp.layers]


def _mlp_grad_blocks(mlp, grads):
    clone = nnx.clone(mlp)
    nnx.update(clone, grads)
    return _mlp_blocks(clone)


def _close(a, b, tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max(initial=0.0))))


def _close_blocks(padded, unpadded, tol=TOL):
    assert len(padded) == len(unpadded)
    for (w1, b1), (w2, b2) in zip(padded, unpadded, strict=True):
        _close(w1, w2, tol)
        _close(b1, b2, tol)


def _inactive_equal(p, q, net):
    """Every inactive entry of ``p`` equals that of ``q`` exactly (``q = 0``: exactly zero)."""
    q = jax.tree_util.tree_map(jnp.zeros_like, p) if isinstance(q, float) else q
    for a, b, m in zip(p, q, net.active(), strict=True):
        a, b, m = np.asarray(a), np.asarray(b), np.asarray(m)
        assert np.array_equal(a[~m], b[~m])


def _mse(out, y):
    return 0.5 * jnp.mean((out - y) ** 2)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_equals_unpadded_outputs_gradients_and_kernels(parameterization):
    @jax.jit  # the padded side: one program for every (width, depth, seed)
    def padded(width, depth, seed):
        net = _net(width, depth, parameterization=parameterization)
        params = net.init(seed)
        grads = jax.grad(lambda p: _mse(net(p, X), Y))(params)
        return (params, net(params, X), net.features(params, X), grads, empirical_nngp(X, None, net, params),
                empirical_ntk(X, X[:3], net, params, implementation="jacobian"))

    # widths and depths below, at and mixed with the padded maxima (depth 1: every hidden layer is
    # the identity; width N, depth D: nothing is padded)
    points = {"ntk": [(3, 1, 0), (5, 2, 1), (N, DEPTH, 2)], "standard": [(2, DEPTH, 3), (5, 2, 1)]}
    for width, depth, seed in points[parameterization]:
        params, out, feats, g, nngp, ntk = padded(width, depth, seed)
        net = _net(width, depth, parameterization=parameterization)
        mlp = net.to_mlp(params)
        assert mlp.widths == (width,) * depth and len(mlp.layers) == depth + 1
        _close_blocks(_blocks(params, width, depth), _mlp_blocks(mlp), 0.0)  # the draw rule, exactly
        _close(net.init(seed).first_kernel, params.first_kernel)  # eager init == jit init (to 1 ulp: XLA fuses)
        _close(out, mlp(X))
        _close(feats[:, :width], mlp.features(X))
        assert np.all(np.asarray(feats[:, width:]) == 0.0)

        apply, mp = functional(mlp)
        gm = jax.grad(lambda p: _mse(apply(p, X), Y))(mp)
        _close_blocks(_blocks(g, width, depth), _mlp_grad_blocks(mlp, gm))
        _inactive_equal(g, 0.0, net)  # inactive parameters: exactly zero gradient

        _close(nngp, empirical_nngp(X, None, apply, mp))
        _close(ntk, empirical_ntk(X, X[:3], apply, mp, implementation="jacobian"))


def _optimizers():
    return {"gd": (optax.sgd(0.1), None),
            "sgd-momentum": (optax.sgd(0.05, momentum=0.9), 2),
            "adamw": (optax.adamw(1e-2, weight_decay=0.1), 3)}


@pytest.mark.parametrize("name", ["gd", "sgd-momentum", "adamw"])
def test_training_equals_unpadded_and_leaves_padding_unchanged(name):
    optimizer, batch_size = _optimizers()[name]
    width, depth = (5, 2) if name != "adamw" else (3, 3)
    net = _net(width, depth, activation=Tanh(), parameterization="standard" if name == "gd" else "ntk")
    params = net.init(7)
    key = jax.random.key(11) if batch_size else None
    res = train_padded(net, params, X, Y, optimizer, epochs=3, batch_size=batch_size, key=key)
    mlp = net.to_mlp(params)
    hist = train(mlp, X, Y, optimizer, epochs=3, batch_size=batch_size, key=key, progress=False)
    assert res.loss.shape == (4,)
    _close(res.loss, hist.loss)
    _close_blocks(_blocks(res.params, width, depth), _mlp_blocks(mlp))
    _inactive_equal(res.params, params, net)  # padding exactly unchanged (under weight decay too)
    assert float(res.loss[-1]) < float(res.loss[0])


def test_vmap_over_width_depth_seed_and_hyperparameters_is_one_program_and_equals_the_loop():
    traces = []

    @eqx.debug.assert_max_traces(max_traces=1)
    def point(width, depth, seed, W_std, b_std, alpha):
        traces.append(1)
        net = _net(width, depth, W_std, b_std, LeakyRelu(alpha))
        params = net.init(seed)
        return net(params, X), empirical_nngp(X, None, net, params)

    grid = (jnp.array([1, 3, 8, 5]), jnp.array([3, 1, 2, 3]), jnp.array([0, 1, 2, 3]),
            jnp.array([0.5, 1.0, 1.5, 2.0]), jnp.array([0.0, 0.1, 0.3, 0.2]), jnp.array([0.0, 0.1, 0.5, -0.2]))
    batched = jax.jit(jax.vmap(point))
    out, nngp = batched(*grid)
    other = batched(jnp.array([2, 4, 6, 8]), jnp.array([1, 2, 3, 1]), grid[2] + 4, *(a + 0.25 for a in grid[3:]))
    jax.block_until_ready(other)
    assert len(traces) == 1  # another grid of the same size: no retrace
    for i in range(4):
        w, d, s = (int(a[i]) for a in grid[:3])
        ws, bs, alpha = (float(a[i]) for a in grid[3:])
        net = _net(w, d, ws, bs, LeakyRelu(alpha))
        mlp = net.to_mlp(net.init(s))
        _close(out[i], mlp(X))
        _close(nngp[i], mlp(X) @ mlp(X).T / K)


def test_vmapped_training_equals_individual_runs():
    def run(width, depth, seed, learning_rate):
        net = _net(width, depth)
        return train_padded(net, net.init(seed), X, Y, optax.sgd(learning_rate, momentum=0.5), epochs=2,
                            batch_size=3, key=jax.random.key(seed))

    grid = (jnp.array([2, 8, 4]), jnp.array([1, 3, 2]), jnp.array([0, 1, 2]), jnp.array([0.05, 0.1, 0.2]))
    batched = jax.jit(jax.vmap(run))(*grid)
    for i in range(3):
        one = run(*(a[i] for a in grid))
        _close(batched.loss[i], one.loss)
        for a, b in zip(batched.params, one.params, strict=True):
            _close(a[i], b)


def test_gradients_in_the_hyperparameters_match_finite_differences():
    # W_std, b_std and the activation's parameter are differentiable leaves (the padding does not
    # block them); the standard parameterization also folds W_std into init
    def f(W_std, b_std, alpha):
        net = _net(5, 2, W_std, b_std, LeakyRelu(alpha), parameterization="standard")
        return jnp.sum(jnp.sin(net(net.init(0), X)))

    jax.test_util.check_grads(jax.jit(f), (1.3, 0.2, 0.1), order=1, modes=("rev",), eps=1e-6)


def test_inside_a_sweep():
    def fn(width, depth, seed):
        net = _net(width, depth)
        return {"trace": jnp.trace(empirical_ntk(X, None, net, net.init(seed), implementation="jacobian"))}

    ds = sweep.run(fn, sweep.Grid(width=[2, 8], depth=[1, 3], seed=[0, 1]), chunk_size=8, progress=False)
    net = _net(8, 1)
    apply, mp = functional(net.to_mlp(net.init(1)))
    _close(ds.trace.sel(width=8, depth=1, seed=1).values, jnp.trace(empirical_ntk(X, None, apply, mp)))


def test_float32(float32_mode):
    net = PaddedMLP(6, 2, 1.5, 0.1, Erf(), in_features=D_IN, out_features=K, max_width=N, max_depth=DEPTH)
    params = net.init(jax.random.key(0))
    assert params.first_kernel.dtype == jnp.float32 and net.W_std.dtype == jnp.float32
    x = jnp.asarray(X, jnp.float32)
    out = net(params, x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, net.to_mlp(params)(x), rtol=1e-5, atol=1e-6)
    res = train_padded(net, params, x, jnp.asarray(Y, jnp.float32), optax.sgd(0.1), epochs=2)
    assert res.loss.dtype == jnp.float32 and bool(res.loss[-1] < res.loss[0])


def test_bad_input_eagerly_and_under_jit():
    def outputs(width, depth):
        net = _net(width, depth)
        return net(net.init(0), X)

    cases = [(N + 1, 1, "width must be finite and in \\[1, 8\\], got 9"),
             (0, 1, "width must be finite and in \\[1, 8\\], got 0"),
             (-3, 1, "width must be"),
             (3, DEPTH + 1, "depth must be finite and in \\[1, 3\\], got 4"),
             (3, 0, "depth must be")]
    for width, depth, msg in cases:
        with pytest.raises(ValueError, match=msg):
            outputs(width, depth)
        with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match=msg.split(",")[0]):
            jax.block_until_ready(jax.jit(outputs)(width, depth))
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="width must be"):  # one bad point in a vmap
        jax.block_until_ready(jax.vmap(outputs)(jnp.array([2, 9]), jnp.array([1, 1])))
    for bad, msg in [(2.0, "width must be an integer"), (True, "width must be an integer"),
                     (jnp.array([2, 3]), "width must be 0-d")]:
        with pytest.raises(ValueError, match=msg):
            _net(bad, 1)
    with pytest.raises(ValueError, match="W_std must be finite and >= 0"):
        _net(2, 1, W_std=-1.0)
    net = _net(2, 1)
    with pytest.raises(ValueError, match="params.first_kernel must have shape"):
        net(net.init(0)._replace(first_kernel=jnp.zeros((D_IN, N + 1))), X)
    with pytest.raises(ValueError, match="key is required"):
        train_padded(net, net.init(0), X, Y, optax.sgd(0.1), epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="y must have shape"):
        train_padded(net, net.init(0), X, Y[:, :1], optax.sgd(0.1), epochs=1)
    with pytest.raises(ValueError, match="width and depth must be concrete"):
        jax.jit(lambda w: _net(w, 1).to_mlp(_net(w, 1).init(0)).widths)(2)
