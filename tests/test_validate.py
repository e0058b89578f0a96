"""The validation layer itself: one rule, eagerly and under jit / vmap / grad."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import Programs

from rmtjax._validate import (
    ArgumentError,
    as_real,
    check_matrix,
    check_range,
    choice,
    error_if,
    flag,
    real,
    reraise_as_value_error,
    runtime_message,
    static_int,
    symmetric_psd,
    to_device,
)


def _f(x):
    x = check_range(x, "sigma_w2", lo=0.0)
    return x**2


def _message(call):
    """The check's message, whichever way the failure surfaced."""
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError)) as info:
        jax.block_until_ready(call())
    msg = runtime_message(info.value)
    assert msg is not None, str(info.value)
    return msg


def test_argument_error_is_a_value_error_with_the_argument_and_value():
    with pytest.raises(ValueError, match=r"sigma_w2 must be finite and >= 0, got -1.0"):
        _f(-1.0)
    assert issubclass(ArgumentError, ValueError)


@pytest.mark.parametrize("transform", ["jit", "vmap", "jit_vmap", "grad", "jit_grad", "vmap_grad", "scan",
                                       "jit_vmap_vmap"])
def test_checks_survive_every_transformation(transform):
    bad = jnp.array([1.0, -1.0])
    calls = {
        "jit_vmap_vmap": lambda: jax.jit(jax.vmap(jax.vmap(_f)))(jnp.stack([bad, -bad])),
        "jit": lambda: jax.jit(_f)(-1.0),
        "vmap": lambda: jax.vmap(_f)(bad),
        "jit_vmap": lambda: jax.jit(jax.vmap(_f))(bad),
        "grad": lambda: jax.grad(_f)(-1.0),
        "jit_grad": lambda: jax.jit(jax.grad(_f))(-1.0),
        "vmap_grad": lambda: jax.jit(jax.vmap(jax.grad(_f)))(bad),
        "scan": lambda: jax.jit(lambda xs: jax.lax.scan(lambda c, x: (c + _f(x), None), 0.0, xs)[0])(bad),
    }
    assert _message(calls[transform]) == "sigma_w2 must be finite and >= 0"


def test_valid_values_pass_through_with_their_derivatives():
    good = jnp.array([1.0, 2.0])
    np.testing.assert_array_equal(jax.jit(jax.vmap(_f))(good), [1.0, 4.0])
    np.testing.assert_array_equal(jax.jit(jax.vmap(jax.grad(_f)))(good), [2.0, 4.0])
    # a vmap of a vmap: the verdict is reduced over both batch axes (it came out batched, the check's
    # cond became a select and the failing branch raised for valid input: kernel under vmap(vmap))
    np.testing.assert_array_equal(jax.jit(jax.vmap(jax.vmap(_f)))(jnp.stack([good, 2 * good])), [[1.0, 4.0], [4.0, 16.0]])
    assert float(jax.hessian(_f)(3.0)) == 2.0
    assert float(jax.jacfwd(_f)(3.0)) == 6.0


def test_reraise_turns_compiled_failures_into_argument_errors():
    with pytest.raises(ArgumentError, match=r"^sigma_w2 must be finite and >= 0$"):
        reraise_as_value_error(jax.jit(_f))(-1.0)
    with pytest.raises(ArgumentError):
        jax.vmap(reraise_as_value_error(_f))(jnp.array([1.0, -1.0]))


def test_failed_check_writes_no_log_record(caplog):
    with caplog.at_level(logging.DEBUG):
        _message(lambda: jax.jit(_f)(-1.0))
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


def test_compiled_message_ends_with_ours_and_has_no_banner():
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError)) as info:
        jax.jit(_f)(-1.0)
    text = str(info.value)
    assert text.rstrip().endswith("ArgumentError: sigma_w2 must be finite and >= 0")
    assert "equinox" not in text.lower()


def test_error_if_needs_the_return_value_and_an_array():
    assert error_if(jnp.ones(2), False, "x bad") is not None
    with pytest.raises(ArgumentError, match="x bad"):
        error_if(jnp.ones(2), jnp.array([False, True]), "x bad")
    # a traced predicate with nothing to attach to is a programming error
    with pytest.raises(TypeError):
        jax.jit(lambda p: error_if((), p, "x bad"))(True)


@pytest.mark.parametrize("value, message", [
    (1 + 2j, "must be real, got a complex value"),
    (True, "got a boolean"),
    ("0.5", "got str"),
    (None, "got NoneType"),
    (np.zeros((0,)), "must not be empty"),
    (np.ones((2, 2)), "must be 0-d or 1-d"),
])
def test_structure_is_checked_at_once(value, message):
    with pytest.raises(ArgumentError, match=message):
        as_real(value, "x", ndim=(0, 1))
    if isinstance(value, np.ndarray) or value is None or isinstance(value, str):
        return
    with pytest.raises(ArgumentError, match=message):  # also while tracing (types are static)
        jax.jit(lambda v: as_real(v, "x", ndim=(0, 1)))(value)


def test_integers_become_floats_and_float32_stays_float32():
    assert as_real(3, "x").dtype == jnp.float64
    assert as_real(np.float32(3), "x").dtype == jnp.float32
    assert as_real(np.arange(3), "x").dtype == jnp.float64


@pytest.mark.parametrize("value", [True, 2.5, 3.0, np.array([1, 2]), "3", None])
def test_static_int_rejects_everything_but_integers(value):
    with pytest.raises(ArgumentError, match="depth must be"):
        static_int(value, "depth")


def test_static_int_range_and_numpy_integers():
    assert static_int(np.int64(4), "depth", lo=0) == 4
    assert static_int(jnp.array(4), "depth", lo=0) == 4
    with pytest.raises(ArgumentError, match=r"depth must be an integer in \[1, 5\], got 0"):
        static_int(0, "depth", lo=1, hi=5)
    with pytest.raises(ArgumentError, match="static Python integer"):
        jax.jit(lambda d: static_int(d, "depth"))(3)


def test_flag_and_choice():
    assert flag(np.bool_(True), "throw") is True
    with pytest.raises(ArgumentError, match="throw must be True or False"):
        flag(1, "throw")
    assert choice("ntk", "parameterization", ("ntk", "standard")) == "ntk"
    with pytest.raises(ArgumentError, match=r"parameterization must be one of \('ntk', 'standard'\), got 'NTK'"):
        choice("NTK", "parameterization", ("ntk", "standard"))


def test_ranges_open_closed_and_the_offending_entry_is_named():
    assert float(real(0.0, "p", lo=0.0, hi=1.0)) == 0.0
    with pytest.raises(ArgumentError, match=r"p must be finite and in \(0, 1\], got 0.0"):
        real(0.0, "p", lo=0.0, hi=1.0, lo_open=True)
    with pytest.raises(ArgumentError, match=r"got nan at index 2 \(shape \(4,\)\)"):
        real(np.array([1.0, 2.0, np.nan, 3.0]), "x")
    assert float(real(np.inf, "t", finite=False, lo=0.0)) == np.inf
    with pytest.raises(ArgumentError, match="t must be not NaN"):
        real(np.nan, "t", finite=False)


def test_check_matrix_needs_rows_and_columns():
    with pytest.raises(ArgumentError, match=r"x1 must have at least one row and one column, got shape \(3, 0\)"):
        check_matrix(np.ones((3, 0)), "x1")


def test_symmetric_psd_reports_asymmetry_as_asymmetry():
    with pytest.raises(ArgumentError, match="K must be symmetric"):
        symmetric_psd(jnp.array([[1.0, 2.0], [0.0, 1.0]]), "K")
    with pytest.raises(ArgumentError, match="K must be positive semi-definite"):
        symmetric_psd(-jnp.eye(3), "K")
    assert "K must be positive semi-definite" in _message(lambda: jax.jit(lambda a: symmetric_psd(a, "K"))(-jnp.eye(3)))
    ok = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    np.testing.assert_array_equal(jax.jit(lambda a: symmetric_psd(a, "K"))(ok), ok)


@pytest.mark.parametrize("x64", [True, False], ids=["float64", "float32"])
def test_as_real_of_concrete_input_compiles_nothing(x64):
    """as_real gives what jnp.asarray (then astype) gave (dtype, weak type, values) without compiling:
    jnp.asarray of a Python scalar or NumPy value binds lax.stage, one compiled program per shape and
    dtype, and astype one more (940 and 1,131 programs in a run of the suite)."""
    inputs = [1.5, 3, np.float64(2.5), np.arange(3.0), np.arange(4), [[1.0, 2.0], [3.0, 4.5]],
              np.ones((2, 3), np.float32), np.float32(0.25)]
    with jax.enable_x64(x64):
        jax.clear_caches()
        with Programs() as p:
            ours = [as_real(x, "x") for x in inputs] + [as_real(x, "x", dtype=jnp.float32) for x in inputs]
            moved = [to_device(x) for x in inputs]
        assert not p.names, p.names
        ref = [jnp.asarray(x) for x in inputs]
        ref = [r if jnp.issubdtype(r.dtype, jnp.floating) else r.astype(jnp.result_type(float)) for r in ref]
        ref += [jnp.asarray(x).astype(jnp.float32) for x in inputs]
        for a, b in zip(ours, ref):
            assert (a.dtype, a.weak_type, a.shape) == (b.dtype, b.weak_type, b.shape)
            np.testing.assert_array_equal(a, b)
        for a, x in zip(moved, inputs):
            b = jnp.asarray(x)
            assert (a.dtype, a.weak_type) == (b.dtype, b.weak_type)
            np.testing.assert_array_equal(a, b)
