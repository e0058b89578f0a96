"""neural-tangents semantics of the rmtjax.stax facade."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rmtjax.activations as A
from rmtjax import stax
from rmtjax.kernels import FullyConnected, kernel


def _net():
    return stax.serial(stax.Dense(256, 1.5, 0.1), stax.Erf(), stax.Dense(1, 1.5, 0.1))


def test_get_semantics_and_jit_with_static_get():
    x1 = jax.random.normal(jax.random.key(0), (5, 7))
    x2 = jax.random.normal(jax.random.key(1), (3, 7))
    _, _, kernel_fn = _net()
    both = kernel_fn(x1, x2)
    assert both.nngp.shape == both.ntk.shape == (5, 3)
    np.testing.assert_array_equal(kernel_fn(x1, x2, "ntk"), both.ntk)
    rev = kernel_fn(x1, x2, ("ntk", "nngp"))
    assert rev._fields == ("ntk", "nngp")
    np.testing.assert_array_equal(rev.nngp, both.nngp)
    jitted = jax.jit(kernel_fn, static_argnames="get")(x1, x2, get="nngp")
    np.testing.assert_allclose(jitted, both.nngp, rtol=1e-14)
    np.testing.assert_allclose(kernel_fn(x1, None, "cov1"), np.diag(kernel_fn(x1, None, "nngp")), rtol=1e-14)
    with pytest.raises(ValueError, match="get"):
        kernel_fn(x1, x2, "ntk_diag")


def test_fast_path_equals_functional_core():
    x = jax.random.normal(jax.random.key(0), (6, 7))
    _, _, kernel_fn = _net()
    ref = kernel(x, None, FullyConnected(1, 1.5, 0.1, A.Erf()))
    np.testing.assert_array_equal(kernel_fn(x).ntk, ref.ntk)


def test_apply_fn_shapes_and_parameterizations():
    x = jax.random.normal(jax.random.key(0), (4, 7))
    for par in ("ntk", "standard"):
        init_fn, apply_fn, _ = stax.serial(stax.Dense(32, 1.5, 0.1, parameterization=par), stax.Relu(),
                                           stax.Dense(3, 1.5, None, parameterization=par))
        shape, params = init_fn(jax.random.key(0), x.shape)
        assert shape == (4, 3)
        assert apply_fn(params, x).shape == (4, 3)


def test_unsupported_layers_raise_not_implemented_naming_the_layer():
    for name in ("MaxPool", "ConvLocal", "BatchNorm", "DotGeneral"):
        with pytest.raises(NotImplementedError, match=name):
            getattr(stax, name)(8)


def test_bad_input():
    _, _, kernel_fn = _net()
    with pytest.raises(ValueError, match="W_std"):
        stax.Dense(8, W_std=-1.0)
    with pytest.raises(ValueError, match="b_std"):
        stax.Dense(8, b_std=float("inf"))
    with pytest.raises(ValueError, match="out_dim"):
        stax.Dense(0)
    with pytest.raises(ValueError, match="features"):
        kernel_fn(jnp.ones((3, 7)), jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="x1"):
        kernel_fn(jnp.ones(7))
    with pytest.raises(ValueError, match="x1 must be finite, got nan"):
        kernel_fn(jnp.full((2, 7), jnp.nan))
    with pytest.raises(ValueError, match="FanInSum"):
        stax.serial(stax.FanOut(2), stax.parallel(stax.Relu(), stax.Erf()))[2](jnp.ones((2, 7)))


def test_combinators_without_branches_raise_clear_errors():
    x = jnp.ones((2, 7))
    # issue 12: FanInSum without FanOut raised AttributeError
    with pytest.raises(ValueError, match="FanInSum needs several branches.*FanOut"):
        stax.FanInSum()[2](x)
    with pytest.raises(ValueError, match="FanInSum needs several branches"):
        stax.serial(stax.Dense(3), stax.FanInSum())[2](x)
    with pytest.raises(ValueError, match="parallel needs several branches"):
        stax.parallel(stax.Relu(), stax.Erf())[2](x)
    with pytest.raises(ValueError, match="parallel: got 3 branches for 2 layers"):
        stax.serial(stax.FanOut(3), stax.parallel(stax.Relu(), stax.Erf()))[2](x)
    with pytest.raises(ValueError, match="Dense got 2 branches"):
        stax.serial(stax.FanOut(2), stax.Dense(3))[2](x)
    with pytest.raises(ValueError, match="several branches; close them with FanInSum"):
        stax.FanOut(2)[2](x)
    # the finite network: the same clear errors instead of silently summing rows
    init_fn, apply_fn, _ = stax.FanInSum()
    with pytest.raises(ValueError, match="FanInSum needs several branches"):
        apply_fn((), x)
    with pytest.raises(ValueError, match="FanInSum needs several branches"):
        init_fn(jax.random.key(0), (2, 7))
    with pytest.raises(ValueError, match="parallel needs several branches"):
        stax.parallel(stax.Relu())[1](((),), x)
    with pytest.raises(ValueError, match="Relu got 2 branches"):
        stax.Relu()[1]((), [x, x])
    init_fn, apply_fn, _ = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Identity()))
    with pytest.raises(ValueError, match="Dense: x must have 7 channels"):
        apply_fn(init_fn(jax.random.key(0), (2, 7))[1], jnp.ones((2, 5)))


def test_layer_arguments_validated():
    for make, match in [(lambda: stax.FanOut(True), "num must be an integer"), (lambda: stax.FanOut(0), "num"),
                        (lambda: stax.Dense(3, 1 + 2j), "W_std must be real"),
                        (lambda: stax.Dense(3, 1.0, True), "b_std must be a real number"),
                        (lambda: stax.Dense(True), "out_dim"), (lambda: stax.Dense(3, batch_axis=1), "batch_axis"),
                        (lambda: stax.Dense(3, s=(2, 1), parameterization="standard"), "s must be"),
                        (lambda: stax.Dense(3, parameterization="mup"), "parameterization"),
                        (lambda: stax.Erf(a=float("nan")), "Erf.a must be finite"),
                        (lambda: stax.Relu(do_stabilize=1), "do_stabilize"),
                        (lambda: stax.Activation(A.Tanh(), method="gh"), "method must be"),
                        (lambda: stax.ElementwiseNumerical(jnp.tanh, deg=1), "GaussHermite.deg"),
                        (lambda: stax.ElementwiseNumerical(3.0, deg=20), "fn must be callable"),
                        (lambda: stax.serial(stax.Relu(), (1, 2, 3)), "layers\\[1\\] is not an rmtjax.stax layer"),
                        (lambda: stax.parallel(), "at least one layer")]:
        with pytest.raises(ValueError, match=match):
            make()
    _, _, kernel_fn = _net()
    x = jnp.ones((2, 7))
    with pytest.raises(ValueError, match="keyword arguments trace_axes are not supported"):
        kernel_fn(x, None, "ntk", trace_axes=())
    with pytest.raises(ValueError, match="diagonal_batch must be"):
        kernel_fn(x, None, "ntk", diagonal_batch="yes")
    for get in ((), ("ntk", "ntk"), 3, ("nngp", 1)):
        with pytest.raises(ValueError, match="get"):
            kernel_fn(x, None, get)


def test_buckets_in_kernel_fn_fast_and_generic_paths():
    x = jax.random.normal(jax.random.key(0), (11, 7))
    # a plain chain asked for nngp and ntk takes the fast path (the kernel engine); the branched
    # network takes the generic layer-by-layer path (as does any get with cov1 or cov2)
    for layers, get in [((stax.Dense(8, 1.5, 0.1), stax.Erf(), stax.Dense(1, 1.5, 0.1)), ("nngp", "ntk")),
                        ((stax.Dense(8, 1.5, 0.1), stax.FanOut(2), stax.parallel(stax.Erf(), stax.Relu()),
                          stax.FanInSum(), stax.Dense(1, 1.5, 0.1)), ("nngp", "ntk", "cov1"))]:
        _, _, kernel_fn = stax.serial(*layers)
        exact = kernel_fn(x, x[:5], get)
        padded = kernel_fn(x, x[:5], get, buckets=True)
        for a, b in zip(padded, exact):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_traced_activation_parameters_through_two_activation_layers():
    """Issue 19: a traced activation parameter in two activation layers crashed the chain detection
    (``np.asarray`` of a tracer). The facade only stacks values (never compares them): gradient and
    vmap over Erf's ``a``, against the FullyConnected spec with that activation (the same engine,
    built another way) and a central difference."""
    x = jax.random.normal(jax.random.key(0), (4, 5))

    def ntk(a, build):
        if build == "stax":
            return stax.serial(stax.Dense(8, 1.5, 0.1), stax.Erf(a), stax.Dense(8, 1.5, 0.1), stax.Erf(a),
                               stax.Dense(1, 1.5, 0.1))[2](x, None, "ntk").sum()
        return kernel(x, None, FullyConnected(2, 1.5, 0.1, A.Erf(a, 1.0, 0.0))).ntk.sum()

    g = jax.jit(jax.vmap(jax.grad(lambda a: ntk(a, "stax"))))(jnp.array([0.8, 1.3]))
    ref = jax.jit(jax.vmap(jax.grad(lambda a: ntk(a, "fc"))))(jnp.array([0.8, 1.3]))
    np.testing.assert_allclose(g, ref, rtol=1e-13)
    h = 1e-5  # central difference: truncation error ~h^2 f^(3) / 6
    fd = (ntk(0.8 + h, "stax") - ntk(0.8 - h, "stax")) / (2 * h)
    np.testing.assert_allclose(g[0], fd, rtol=1e-7)


def test_facade_and_engine_layers_convert_both_ways():
    """kernel_fn.net is the engine graph (a residual block is the engine's Parallel), and
    stax.layer(net) gives back a triple on the same graph with a finite network of the right shape."""
    from rmtjax import kernels

    layers = (stax.Dense(16, 1.0, 0.1), stax.FanOut(2),
              stax.parallel(stax.Identity(), stax.serial(stax.Relu(), stax.Dense(16, 1.2, 0.1))), stax.FanInSum(),
              stax.Relu(), stax.Dense(1, 1.3, 0.0))
    kernel_fn = stax.serial(*layers).kernel_fn
    net = kernel_fn.net
    assert isinstance(net, kernels.Serial) and isinstance(net.layers[1], kernels.Parallel)
    x = jax.random.normal(jax.random.key(0), (5, 7))
    back = stax.layer(net)
    # the round trip's kernel is the same engine graph (so the same kernel by construction; comparing
    # the two kernels' values could not fail); its finite network is checked below
    assert eqx.tree_equal(back.kernel_fn.net, net)
    shape, params = back.init_fn(jax.random.key(1), x.shape)
    assert shape == (5, 1) and back.apply_fn(params, x).shape == (5, 1)
    assert np.all(np.isfinite(np.asarray(back.apply_fn(params, x))))
    # a Dense layer's finite network is stax.Dense's: the same draws give the same outputs
    for par in ("ntk", "standard"):
        ours, theirs = stax.layer(kernels.Dense(1.5, 0.1, out_dim=3, parameterization=par)), stax.Dense(
            3, 1.5, 0.1, parameterization=par)
        p = ours.init_fn(jax.random.key(2), x.shape)[1]
        np.testing.assert_array_equal(ours.apply_fn(p, x), theirs.apply_fn(theirs.init_fn(jax.random.key(2), x.shape)[1], x))
    with pytest.raises(ValueError, match="out_dim"):
        stax.layer(kernels.Dense(1.0)).init_fn(jax.random.key(0), (2, 3))
