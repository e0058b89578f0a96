"""Shared elementwise numerics (rmtjax._numerics) at the ends of the floating range."""

import jax
import jax.numpy as jnp
import numpy as np

from rmtjax._numerics import sqrt_prod
from rmtjax.activations import Abs
from rmtjax.gaussian import gaussian_expectations


def test_sqrt_prod_exact_on_the_diagonal_where_the_product_under_or_overflows():
    q = jnp.asarray(np.logspace(-300, 300, 601))
    for f in (sqrt_prod, jax.jit(sqrt_prod)):
        np.testing.assert_array_equal(f(q, q), q)  # exactly q: identical inputs keep a correlation of 1
    # off the diagonal, against the product of square roots (independent evaluation)
    a, b = np.array([1e-300, 1e-200, 1e200, 3.0]), np.array([1e-10, 1e-150, 1e150, 5.0])
    np.testing.assert_allclose(sqrt_prod(jnp.asarray(a), jnp.asarray(b)), np.sqrt(a) * np.sqrt(b), rtol=1e-15)
    # derivative d/dq1 sqrt(q1 q2) = q2 / (2 sqrt(q1 q2)), finite at these scales
    g = jax.grad(sqrt_prod)(1e-300, 1e-10)
    assert float(g) == np.float64(1e-10) / (2 * np.sqrt(1e-300) * np.sqrt(1e-10))
    assert float(sqrt_prod(jnp.asarray(0.0), jnp.asarray(1e-300))) == 0.0


def test_sqrt_prod_float32(float32_mode):
    q = jnp.asarray(np.logspace(-37, 37, 149), jnp.float32)
    out = sqrt_prod(q, q)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, q)


def test_tiny_variance_is_a_valid_covariance():
    # the CI fuzz failure: q1 = q2 = q12 = 7.46e-247 was rejected (q1 q2 underflowed to 0)
    q = 7.46193755e-247
    e = gaussian_expectations(Abs(), q, q, q)
    assert float(e.k) == q and float(e.kdot) == 1.0  # E|u|^2 = q, E[sign(u)^2] = 1
