"""neural-tangents semantics of the rmtjax.stax facade."""

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
    for name in ("Conv", "AvgPool", "Flatten", "LayerNorm", "GlobalSelfAttention"):
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
    with pytest.raises(ValueError, match="NaN"):
        kernel_fn(jnp.full((2, 7), jnp.nan))
    with pytest.raises(ValueError, match="FanInSum"):
        stax.serial(stax.FanOut(2), stax.parallel(stax.Relu(), stax.Erf()))[2](jnp.ones((2, 7)))
