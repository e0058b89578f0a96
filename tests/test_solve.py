"""rmtjax.solve: implicit differentiation, vmapped sweeps with failures, complex unknowns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _gradcheck import check_gradients

from rmtjax.solve import Iteration, Newton, fixed_point, root


def _dottie(a):
    return fixed_point(lambda y, a: jnp.cos(a * y), jnp.array(0.5), a).value


def test_fixed_point_value_and_implicit_gradient():
    a = jnp.array(1.0)
    y = _dottie(a)
    assert abs(float(y - jnp.cos(y))) < 1e-10
    # implicit function theorem by hand: y = cos(a y) => dy/da = -y sin(a y) / (1 + a sin(a y))
    expected = -y * jnp.sin(a * y) / (1 + a * jnp.sin(a * y))
    assert float(jax.grad(_dottie)(a)) == pytest.approx(float(expected), rel=1e-8)
    check_gradients(_dottie, (a,), atol=1e-6, rtol=1e-6)


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
        return fixed_point(lambda g, z: 1 / (z - g), jnp.array(0j), z, solver=Iteration(0.0, 1e-13, 1e-14)).value

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
    good = fixed_point(f, jnp.array(0.0), 1.0, solver=Iteration(damping=0.5), max_steps=200)
    assert not bool(bad.ok)
    assert float(good.value) == pytest.approx(0.4, rel=1e-10)
    assert float(fixed_point(f, jnp.array(0.0), 1.0, solver=Newton()).value) == pytest.approx(0.4, rel=1e-12)


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
        fixed_point(f, 0.0, 1.0, solver=Iteration(damping=1.0))
    with pytest.raises(ValueError, match="solver"):
        fixed_point(f, 0.0, 1.0, solver="anderson")
    # issue 19: solvers are objects; a string names its replacement
    with pytest.raises(ValueError, match=r"solver strings were replaced by objects: solver='newton' is "
                                         r"solver=rmtjax\.solve\.Newton\(\)"):
        fixed_point(f, 0.0, 1.0, solver="newton")
    with pytest.raises(ValueError, match=r"solver must be rmtjax\.solve\.Newton\(\.\.\.\), got Iteration"):
        root(f, 0.0, 1.0, solver=Iteration())
    with pytest.raises(ValueError, match="max_steps"):
        fixed_point(f, 0.0, 1.0, max_steps=0)


# --------------------------------------------------------------------------------------------
# Issue 12: validation, complex output for a real unknown, remedies, brackets, compilation, float32
# --------------------------------------------------------------------------------------------


def test_complex_output_for_a_real_unknown_is_an_error():
    # issue 12: this returned 0 (the imaginary part silently dropped). The exact call needs the
    # standard promotion of a user session (the suite's strict promotion rejects float + complex).
    with jax.numpy_dtype_promotion("standard"), pytest.raises(ValueError, match=r"complex value .* real unknown y0"):
        fixed_point(lambda y, a: 0.5 * y + 1j, 0.0)
    with pytest.raises(ValueError, match=r"complex value .* real unknown y0"):
        fixed_point(lambda y, a: 0.5 * y.astype(jnp.complex128) + 1j, 0.0)
    # a function that fails on y0 is reported naming fn
    with pytest.raises(ValueError, match=r"fn\(y0, args\) failed"):
        fixed_point(lambda y, a: 0.5 * y + 1j, 0.0)
    with pytest.raises(ValueError, match=r"complex value .* real unknown y0"):
        root(lambda y, a: y.astype(jnp.complex128) - 1j, 0.0)
    # the documented promotion: a complex y0 solves for a complex unknown (y = 0.5 y + i -> 2i)
    sol = fixed_point(lambda y, a: 0.5 * y + 1j, 0j)
    assert abs(complex(sol.value) - 2j) < 1e-9
    # real output for a complex unknown is fine (a real-valued map of a complex variable)
    assert abs(complex(fixed_point(lambda y, a: 0.5 * y + 1.0, 0j).value) - 2.0) < 1e-9


def _half(y, a):
    return 0.5 * y + a


@pytest.mark.parametrize("kwargs,match", [
    (dict(y0=float("nan")), "y0 must be finite"),
    (dict(y0=True), "y0 must be made of real or complex numbers"),
    (dict(y0="1"), "y0 must be made of real or complex numbers"),
    (dict(y0=None), "y0 must contain at least one"),
    (dict(y0=np.zeros(0)), "y0 must not contain empty arrays"),
    (dict(solver=lambda: Newton(rtol=-1.0)), r"Newton.rtol must be finite and >= 0"),
    (dict(solver=lambda: Iteration(atol=float("nan"))), r"Iteration.atol must be finite and >= 0"),
    (dict(solver=lambda: Newton(rtol=0.0, atol=0.0)), "Newton.rtol and Newton.atol must not both be 0"),
    (dict(solver=lambda: Newton(rtol="1e-3")), r"Newton.rtol must be a real number or None"),
    (dict(solver=lambda: Newton(rtol=jnp.array(1e-3))), r"Newton.rtol must be a Python number"),
    (dict(solver=lambda: Iteration(damping=1.0)), r"Iteration.damping must be a number in \[0, 1\)"),
    (dict(solver=lambda: Iteration(damping=float("nan"))), r"Iteration.damping must be finite"),
    (dict(solver=lambda: Iteration(damping=None)), r"Iteration.damping must be a number in \[0, 1\)"),
    (dict(max_steps=0), "max_steps must be an integer in"),
    (dict(max_steps=True), "max_steps must be an integer, got a boolean"),
    (dict(max_steps=10.0), "max_steps must be an integer"),
    (dict(throw=1), "throw must be True or False"),
    (dict(solver="anderson"), r"solver must be rmtjax.solve.Iteration\(...\) or rmtjax.solve.Newton"),
    (dict(name=3), "name must be a string"),
])
def test_fixed_point_rejects_bad_configuration_and_inputs(kwargs, match):
    call = dict(y0=0.0, args=1.0) | kwargs
    with pytest.raises(ValueError, match=match):
        if callable(call.get("solver")):  # a solver object that cannot be built
            call["solver"] = call["solver"]()
        fixed_point(_half, call.pop("y0"), call.pop("args"), **call)


def test_structure_of_fn_is_checked_before_solving():
    with pytest.raises(ValueError, match="fn must be a callable"):
        fixed_point(3.0, 0.0)
    with pytest.raises(ValueError, match=r"fn must return y of y0's shape \(\)"):
        fixed_point(lambda y, a: jnp.ones(3), 0.0)
    with pytest.raises(ValueError, match="fn must return y with the structure of y0"):
        fixed_point(lambda y, a: (y, y), 0.0)
    # under jit the structural checks raise at trace time, the value checks inside the program
    with pytest.raises(ValueError, match="complex value"):
        jax.jit(lambda a: fixed_point(lambda y, a: (y * 0.5 + a).astype(jnp.complex128) * 1j, 0.0, a).value)(1.0)
    with pytest.raises(Exception, match="y0 must be finite"):
        jax.block_until_ready(jax.jit(lambda y0: fixed_point(_half, y0, 1.0).value)(jnp.nan))


def test_error_advice_names_only_options_the_function_takes():
    f = lambda x, r: r * x * (1 - x)  # noqa: E731  the logistic map, chaotic at r = 3.9
    with pytest.raises(ValueError) as e:
        fixed_point(f, 0.3, 3.9, max_steps=50)
    assert "solver=Iteration(damping=0.5)" in str(e.value) and "solver=Newton()" in str(e.value)
    with pytest.raises(ValueError) as e:  # already damped: more damping
        fixed_point(f, 0.3, 3.9, max_steps=50, solver=Iteration(0.2))
    assert "add more damping" in str(e.value) and "solver=Newton()" in str(e.value)
    with pytest.raises(ValueError) as e:  # already Newton: do not suggest Newton
        fixed_point(f, 0.3, 3.9, max_steps=3, solver=Newton())
    assert "Newton()" not in str(e.value) and "solver=Iteration(damping=0.5)" in str(e.value)
    with pytest.raises(ValueError) as e:  # root takes no damping, and Newton is its only solver
        root(lambda y, a: y * y + 1.0, 0.5, None, max_steps=20)
    msg = str(e.value)
    assert "did not converge" in msg and "damping" not in msg and "solver" not in msg


def _square_minus(y, c):
    return y * y - c


def _log_minus(y, c):
    return jnp.log(y) - c


def test_bracketed_root_stays_on_its_branch_and_differentiates():
    # y^2 = c has two roots: the bracket picks one, and the derivative is the implicit one
    def pos(c):
        return root(_square_minus, 1.0, c, bracket=(0.0, 10.0)).value

    def neg(c):
        return root(_square_minus, -1.0, c, bracket=(-10.0, 0.0)).value

    assert float(pos(2.0)) == pytest.approx(2**0.5, rel=1e-14)
    assert float(neg(2.0)) == pytest.approx(-(2**0.5), rel=1e-14)
    assert float(jax.grad(pos)(2.0)) == pytest.approx(0.5 / 2**0.5, rel=1e-12)
    assert float(jax.grad(neg)(2.0)) == pytest.approx(-0.5 / 2**0.5, rel=1e-12)
    # second derivative through the implicit rule: d^2 sqrt(c) / dc^2 = -c^(-3/2) / 4
    assert float(jax.grad(jax.grad(pos))(2.0)) == pytest.approx(-0.25 * 2**-1.5, rel=1e-10)
    assert float(jax.jacfwd(jax.jacrev(pos))(2.0)) == pytest.approx(-0.25 * 2**-1.5, rel=1e-10)
    # log y = c: plain Newton from y0 = 10 jumps to y < 0 (log undefined); the bracket never leaves (0.01, 100)
    plain = root(_log_minus, 10.0, -2.0, throw=False)
    assert not bool(plain.ok)
    sol = root(_log_minus, 10.0, -2.0, bracket=(0.01, 100.0))
    assert float(sol.value) == pytest.approx(np.exp(-2.0), rel=1e-12)
    # vmap over the parameter, with a point whose bracket has no sign change: ok=False, value NaN
    sols = jax.vmap(lambda c: root(_square_minus, 1.0, c, bracket=(0.0, 3.0), throw=False))(jnp.array([1.0, 4.0, 16.0]))
    np.testing.assert_array_equal(np.asarray(sols.ok), [True, True, False])
    np.testing.assert_allclose(np.asarray(sols.value[:2]), [1.0, 2.0], rtol=1e-13)
    assert np.isnan(float(sols.value[2]))
    with pytest.raises(ValueError, match=r"has no sign change on the bracket"):
        root(_square_minus, 1.0, 16.0, bracket=(0.0, 3.0))
    with pytest.raises(ValueError, match="bracket must have lower <= upper"):
        root(_square_minus, 1.0, 2.0, bracket=(3.0, 0.0))
    with pytest.raises(ValueError, match="bracket needs a scalar real unknown"):
        root(_square_minus, jnp.ones(2), 2.0, bracket=(0.0, 3.0))


def test_repeated_solves_compile_once():
    import equinox as eqx

    from rmtjax import solve

    fixed_point(_half, 0.0, 1.0)
    before = eqx.debug.get_num_traces(solve._fixed_point_core)
    for a in (0.5, 2.0, jnp.array(3.0)):  # new values, same structure: no new trace
        assert float(fixed_point(_half, 0.0, a).value) == pytest.approx(2 * float(a), rel=1e-9)
    assert eqx.debug.get_num_traces(solve._fixed_point_core) == before
    root(_square_minus, 1.0, 2.0, bracket=(0.0, 10.0))
    before = eqx.debug.get_num_traces(solve._bracketed_core)
    root(_square_minus, 1.0, 3.0, bracket=(0.0, 5.0))
    assert eqx.debug.get_num_traces(solve._bracketed_core) == before


def test_float32_without_x64(float32_mode):
    # Default tolerances scale with the dtype (rtol 1.5e-5, atol 1.9e-6 in float32). Picard
    # iteration stops at a step |dy| <= 1.3e-5 with contraction r = sin(y*) = 0.674, so its error is
    # at most r / (1 - r) * 1.3e-5 = 2.7e-5 (measured: 5.0e-6); Newton and the bracketed solve reach
    # float32 rounding (measured relative errors 6e-9, 1.7e-8 for sqrt 2 and for its derivative).
    y = fixed_point(lambda y, a: jnp.cos(a * y), jnp.float32(0.5), jnp.float32(1.0))
    assert y.value.dtype == jnp.float32 and bool(y.ok)
    assert float(y.value) == pytest.approx(0.7390851332151607, abs=2.7e-5)
    yn = fixed_point(lambda y, a: jnp.cos(a * y), jnp.float32(0.5), jnp.float32(1.0), solver=Newton())
    assert float(yn.value) == pytest.approx(0.7390851332151607, rel=1e-6)
    r = root(_square_minus, jnp.float32(1.0), jnp.float32(2.0), bracket=(0.0, 10.0))
    assert r.value.dtype == jnp.float32 and float(r.value) == pytest.approx(2**0.5, rel=1e-6)
    g = jax.grad(lambda c: root(_square_minus, 1.0, c, bracket=(0.0, 10.0)).value)(jnp.float32(2.0))
    assert float(g) == pytest.approx(0.5 / 2**0.5, rel=1e-6)
