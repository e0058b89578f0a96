"""rmtjax.solve: implicit differentiation, vmapped sweeps with failures, complex unknowns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rmtjax.solve import fixed_point, root


def _dottie(a):
    return fixed_point(lambda y, a: jnp.cos(a * y), jnp.array(0.5), a).value


def test_fixed_point_value_and_implicit_gradient():
    a = jnp.array(1.0)
    y = _dottie(a)
    assert abs(float(y - jnp.cos(y))) < 1e-10
    # implicit function theorem by hand: y = cos(a y) => dy/da = -y sin(a y) / (1 + a sin(a y))
    expected = -y * jnp.sin(a * y) / (1 + a * jnp.sin(a * y))
    assert float(jax.grad(_dottie)(a)) == pytest.approx(float(expected), rel=1e-8)
    check_grads(_dottie, (a,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_root_newton_and_gradient():
    def sqrt_of(c):
        return root(lambda y, c: y**2 - c, jnp.array(1.0), c).value

    assert float(sqrt_of(jnp.array(2.0))) == pytest.approx(2**0.5, rel=1e-14)
    assert float(jax.grad(sqrt_of)(jnp.array(2.0))) == pytest.approx(0.5 / 2**0.5, rel=1e-10)


def test_vmap_sweep_survives_points_that_do_not_converge():
    # logistic map fixed point: converges (attracting) for r = 2.5, not for r = 3.9 (chaos)
    def solve(r):
        return fixed_point(lambda x, r: r * x * (1 - x), jnp.array(0.3), r, max_steps=200, throw=False)

    sols = jax.vmap(solve)(jnp.array([2.5, 3.9, 2.8]))
    np.testing.assert_array_equal(np.asarray(sols.ok), [True, False, True])
    np.testing.assert_allclose(sols.value[jnp.array([0, 2])], 1 - 1 / jnp.array([2.5, 2.8]), rtol=1e-9)
    assert float(sols.residual[1]) > 1e-3


def test_jit_vmap_grad():
    grads = jax.jit(jax.vmap(jax.grad(_dottie)))(jnp.array([0.5, 1.0, 1.2]))
    for a, g in zip([0.5, 1.0, 1.2], grads):
        eps = 1e-6
        fd = (_dottie(jnp.array(a + eps)) - _dottie(jnp.array(a - eps))) / (2 * eps)
        assert float(g) == pytest.approx(float(fd), rel=1e-6)


def test_complex_unknown_semicircle_stieltjes():
    # G = 1 / (z - G): the Stieltjes transform of the semicircle law, G = (z - sqrt(z^2 - 4)) / 2
    def stieltjes(x, eta):
        z = jax.lax.complex(x, eta)
        return fixed_point(lambda g, z: 1 / (z - g), jnp.array(0j), z, rtol=1e-13, atol=1e-14).value

    for x in (-1.5, 0.3, 2.5):
        z = complex(x, 0.4)
        exact = (z - np.sqrt(z - 2) * np.sqrt(z + 2)) / 2
        assert abs(complex(stieltjes(x, 0.4)) - exact) < 1e-10
    # gradient of the density -Im G / pi with respect to x against a finite difference
    dens = lambda x: -jnp.imag(stieltjes(x, 0.4)) / jnp.pi  # noqa: E731
    eps = 1e-6
    fd = (dens(0.3 + eps) - dens(0.3 - eps)) / (2 * eps)
    assert float(jax.grad(dens)(0.3)) == pytest.approx(float(fd), rel=1e-6)


def test_damping_rescues_an_oscillating_iteration():
    f = lambda x, a: a - 1.5 * x  # noqa: E731  fixed point a / 2.5, |f'| = 1.5 > 1
    bad = fixed_point(f, jnp.array(0.0), 1.0, max_steps=100, throw=False)
    good = fixed_point(f, jnp.array(0.0), 1.0, damping=0.5, max_steps=200)
    assert not bool(bad.ok)
    assert float(good.value) == pytest.approx(0.4, rel=1e-10)
    assert float(fixed_point(f, jnp.array(0.0), 1.0, solver="newton").value) == pytest.approx(0.4, rel=1e-12)


def test_throw_names_the_equation_and_residual():
    f = lambda x, r: r * x * (1 - x)  # noqa: E731
    with pytest.raises(ValueError, match=r"logistic map did not converge: residual .* after 50 steps"):
        fixed_point(f, jnp.array(0.3), 3.9, max_steps=50, name="logistic map")
    g = jax.jit(lambda r: fixed_point(f, jnp.array(0.3), r, max_steps=50, name="logistic map").value)
    with pytest.raises(Exception, match="logistic map did not converge"):
        jax.block_until_ready(g(3.9))


def test_bad_configuration():
    f = lambda x, a: a  # noqa: E731
    with pytest.raises(ValueError, match="damping"):
        fixed_point(f, 0.0, 1.0, damping=1.0)
    with pytest.raises(ValueError, match="solver"):
        fixed_point(f, 0.0, 1.0, solver="anderson")
    with pytest.raises(ValueError, match="max_steps"):
        fixed_point(f, 0.0, 1.0, max_steps=0)
