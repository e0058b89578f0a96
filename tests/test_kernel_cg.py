"""Matrix-free kernel products and kernel ridge regression by preconditioned conjugate gradients
(issue 15, item 1), against the dense kernel and dense solves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax.activations import Erf
from rmtjax.kernels import FullyConnected, kernel, kernel_matvec
from rmtjax.regression import kernel_ridge_cg

# XLA's default optimizations (see conftest.py): CG recomputes the kernel in tiles at every step, so
# this module is run time more than compile time (measured 2026-12-07 on the loaded 2-core machine,
# two runs each: 87 and 77 s at -O0, 79 and 50 s optimized)
XLA_OPTIMIZED = True

X = jax.random.normal(jax.random.key(0), (600, 8))
Y = jnp.stack([jnp.sin(X[:, 0]), X[:, 1] * X[:, 2], jnp.cos(X[:, 3])], 1)
XT = jax.random.normal(jax.random.key(1), (50, 8))
NET = FullyConnected(2, 1.4, 0.1)


@pytest.fixture(scope="module")
def dense():
    K, Kt = kernel(X, None, NET), kernel(XT, X, NET)
    return K, Kt


def test_matvec_equals_dense_products(dense):
    K, Kt = dense
    V = jax.random.normal(jax.random.key(2), (600, 3))
    for kind in ("nngp", "ntk"):
        ref = getattr(K, kind) @ V
        out = kernel_matvec(X, None, V, NET, kind=kind, tile=128)  # 600 = 4 tiles + a padded one
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(ref))))
    np.testing.assert_allclose(kernel_matvec(XT, X, V[:, 0], NET, tile=64), Kt.nngp @ V[:, 0], rtol=1e-12)


def test_matvec_gradient_in_the_network():
    x, v = X[:40], jnp.linspace(-1.0, 1.0, 40)

    def lhs(w):
        return kernel_matvec(x, None, v, FullyConnected(2, w, 0.1, Erf()), tile=16).sum()

    def rhs(w):
        return (kernel(x, None, FullyConnected(2, w, 0.1, Erf())).nngp @ v).sum()

    np.testing.assert_allclose(jax.grad(lhs)(1.3), jax.grad(rhs)(1.3), rtol=1e-11)


def test_preconditioned_cg_equals_the_dense_solve(dense):
    K, Kt = dense
    ridge = 1e-3
    for kind in ("nngp", "ntk"):
        k = getattr(K, kind)
        alpha = jnp.linalg.solve(k + ridge * jnp.eye(600), Y)
        model = kernel_ridge_cg(X, Y, NET, ridge, kind=kind, rank=128, tile=128)
        # measured: weights 4e-10 (NNGP), 6e-10 (NTK) of the largest; 84 and 59 steps (plain CG: 429, 204)
        np.testing.assert_allclose(model.weights, alpha, rtol=0, atol=1e-8 * float(jnp.max(jnp.abs(alpha))))
        pred = getattr(Kt, kind) @ alpha
        np.testing.assert_allclose(model(XT), pred, rtol=0, atol=1e-8 * float(jnp.max(jnp.abs(pred))))
        assert model.relative_residual < 1e-9 and 0 < int(model.steps) < 300


def test_plain_cg_and_one_target_column():
    model = kernel_ridge_cg(X[:200], Y[:200, 0], NET, 0.5, rank=0, tile=64)
    K = kernel(X[:200], None, NET).nngp
    alpha = jnp.linalg.solve(K + 0.5 * jnp.eye(200), Y[:200, 0])
    np.testing.assert_allclose(model.weights[:, 0], alpha, rtol=0, atol=1e-8 * float(jnp.max(jnp.abs(alpha))))
    jitted = jax.jit(lambda x, y: kernel_ridge_cg(x, y, NET, 0.5, rank=0, tile=64).weights)(X[:200], Y[:200, 0])
    # Under an outer jit the CG loop body is fused differently (XLA contracts multiply-adds per
    # fusion), so the matvecs differ in the last bit and plain CG's ~400 steps amplify that: measured
    # 3.5e-9 relative to the largest weight (after sqrt_prod's rewrite changed the fusions; 0 before).
    # Both are held to the dense solve's tolerance.
    np.testing.assert_allclose(jitted, model.weights, rtol=0, atol=1e-8 * float(jnp.max(jnp.abs(alpha))))


def test_default_rank_on_fewer_than_256_points():
    """A probe's reproducer: with the default rank (256) every call on n < 256 points raised "rank must be
    an integer in [0, n]". The default is min(256, n): all points as landmarks, an exact preconditioner."""
    model = kernel_ridge_cg(X[:30], Y[:30], NET, 1e-2, tile=64)
    K = kernel(X[:30], None, NET).nngp
    alpha = jnp.linalg.solve(K + 1e-2 * jnp.eye(30), Y[:30])
    np.testing.assert_allclose(model.weights, alpha, rtol=0, atol=1e-8 * float(jnp.max(jnp.abs(alpha))))


def test_float32():
    with jax.enable_x64(False):
        x, y = X[:200].astype(jnp.float32), Y[:200].astype(jnp.float32)
        model = kernel_ridge_cg(x, y, NET, 1e-2, rank=64, tile=64)
        assert model.weights.dtype == jnp.float32
        assert model.relative_residual < 1e-4
    K = kernel(X[:200], None, NET).nngp
    alpha = jnp.linalg.solve(K + 1e-2 * jnp.eye(200), Y[:200])
    # measured 3.7e-5 of the largest weight (float32 products, condition number ~3e4)
    np.testing.assert_allclose(model.weights, alpha, rtol=0, atol=3e-4 * float(jnp.max(jnp.abs(alpha))))


def test_float32_storage_with_float64_accumulation():
    # storage="float32": inputs and kernel tiles in float32, sums, iterates and the preconditioner in
    # float64. The solve converges to float64 tolerances for the float32-rounded kernel. Measured
    # at n = 200 (condition number ~3e4): residual 7e-11, weights within 1.1e-5 and predictions
    # within 2.6e-6 of the float64 solve, relative to the largest (a float32 solve: weights 3.7e-5,
    # test_float32); at n = 3000, d = 50,
    # Erf depth 3: predictions 1.3e-6 (float32 solve 7.2e-6), 2.6x faster than float64 on the
    # loaded 2-core machine.
    x, y = X[:200], Y[:200]
    model = kernel_ridge_cg(x, y, NET, 1e-2, rank=64, tile=64, storage="float32")
    assert model.x_train.dtype == jnp.float32 and model.weights.dtype == jnp.float64
    assert model.relative_residual < 1e-9
    K = kernel(x, None, NET).nngp
    alpha = jnp.linalg.solve(K + 1e-2 * jnp.eye(200), y)
    np.testing.assert_allclose(model.weights, alpha, rtol=0, atol=3e-5 * float(jnp.max(jnp.abs(alpha))))
    pred = kernel(XT, x, NET).nngp @ alpha
    out = model(XT)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, pred, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(pred))))
    with pytest.raises(ValueError, match="x_test must have 8 features"):
        model(XT[:, :3])
    with pytest.raises(ValueError, match="storage must be one of"):
        kernel_ridge_cg(x, y, NET, 1e-2, storage="bfloat16")
    with jax.enable_x64(False), pytest.raises(ValueError, match="storage='float32' keeps float32 inputs"):
        kernel_ridge_cg(x.astype(jnp.float32), y.astype(jnp.float32), NET, 1e-2, storage="float32")


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="ridge must be"):
        kernel_ridge_cg(X[:20], Y[:20], NET, 0.0)
    with pytest.raises(ValueError, match="rank must be"):
        kernel_ridge_cg(X[:20], Y[:20], NET, 0.1, rank=21)
    with pytest.raises(ValueError, match="y_train must have shape"):
        kernel_ridge_cg(X[:20], Y[:21], NET, 0.1, rank=4)
    with pytest.raises(ValueError, match="max_steps: conjugate gradients reached"):
        kernel_ridge_cg(X[:100], Y[:100], NET, 1e-6, rank=0, max_steps=3, tile=64)
    from rmtjax._validate import reraise_as_value_error

    solve = reraise_as_value_error(jax.jit(lambda x, y: kernel_ridge_cg(x, y, NET, 1e-6, rank=0, max_steps=3,
                                                                       tile=64).weights))
    with pytest.raises(ValueError, match="max_steps: conjugate gradients did not reach"):
        solve(X[:100], Y[:100])
    with pytest.raises(ValueError, match="v must have one row per row of x2"):
        kernel_matvec(X[:10], None, jnp.ones(11), NET)
    with pytest.raises(ValueError, match="kind must be"):
        kernel_matvec(X[:10], None, jnp.ones(10), NET, kind="cov1")
