"""Argument checks shared by the dynamics modules (the rule of :mod:`rmtjax._validate`)."""

from __future__ import annotations

import math
import numbers

import jax.numpy as jnp
import numpy as np

from .._numerics import solver_tolerances
from .._validate import as_real, check_range, concrete, error_if, static_int
from ..activations import AbstractActivation
from ..gaussian import AbstractMethod, Auto, ClosedForm, GaussHermite

# the 4-dimensional committee integrals take deg**4 quadrature nodes per index tuple
MAX_DEG = 64


def activation(x, name: str) -> AbstractActivation:
    if not isinstance(x, AbstractActivation):
        raise ValueError(f"{name} must be an activation of rmtjax.activations (e.g. Erf(), Relu()), got "
                         f"{type(x).__name__}")
    return x


def method(x, name: str = "method", *, four_dimensional: bool = True) -> AbstractMethod:
    """The integration method; ``GaussHermite(deg)`` with ``deg <= MAX_DEG`` when four-dimensional
    integrals are taken (``deg**4`` nodes)."""
    if not isinstance(x, (Auto, ClosedForm, GaussHermite)):
        raise ValueError(f"{name} must be Auto(), ClosedForm() or GaussHermite(deg), got {x!r}")
    if four_dimensional and isinstance(x, GaussHermite) and x.deg > MAX_DEG:
        raise ValueError(f"{name}: GaussHermite(deg) needs deg <= {MAX_DEG} here (the four-dimensional integrals "
                         f"take deg**4 nodes), got deg = {x.deg}")
    return x


def positive(x, name: str, dtype):
    """A real scalar learning rate ``> 0`` (finite), as an array of ``dtype``."""
    return check_range(as_real(x, name, ndim=0).astype(dtype), name, lo=0.0, lo_open=True)


def nonnegative(x, name: str, dtype):
    return check_range(as_real(x, name, ndim=0).astype(dtype), name, lo=0.0)


def common_dtype(*arrays):
    """The floating dtype all of ``arrays`` are cast to (NumPy's promotion: float32 with float64
    gives float64), so strict promotion never sees mixed precisions."""
    return np.result_type(*[np.dtype(a.dtype) for a in arrays])


def times(ts, name: str, dtype):
    """A 1-d array of at least 2 finite, strictly increasing times."""
    ts = as_real(ts, name, ndim=1).astype(dtype)
    if ts.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 increasing times, got shape {ts.shape}")
    msg = f"{name} must be finite and strictly increasing ({name}[0] < {name}[1] < ...)"
    v = concrete(ts)
    if v is not None:
        if not np.all(np.isfinite(v)) or np.any(np.diff(v) <= 0):
            raise ValueError(f"{msg}, got {v if v.size <= 8 else f'{v[:4]} ... {v[-4:]}'}")
        return ts
    return error_if(ts, ~(jnp.all(jnp.isfinite(ts)) & jnp.all(jnp.diff(ts) > 0)), msg)


def tolerances(dtype, rtol, atol, rtol64: float, atol64: float) -> tuple[float, float]:
    """ODE step-size tolerances: ``None`` scales the float64 defaults to ``dtype``."""
    for name, v in (("rtol", rtol), ("atol", atol)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0):
            raise ValueError(f"{name} must be None or a finite number > 0, got {v!r}")
    return solver_tolerances(dtype, None if rtol is None else float(rtol), None if atol is None else float(atol),
                             rtol64=rtol64, atol64=atol64)


def max_steps(x, name: str = "max_steps") -> int:
    return static_int(x, name, lo=1, hi=2**31 - 1)


def static_number(x, name: str, *, lo: float = 0.0) -> float:
    """A concrete real number ``> lo`` (a static configuration value such as ``t_max``)."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        v = float(x)  # a Python number is static (jnp.asarray of it would be traced under jit)
        if not (math.isfinite(v) and v > lo):
            raise ValueError(f"{name} must be finite and > {lo:g}, got {v!r}")
        return v
    arr = as_real(x, name, ndim=0)
    v = concrete(arr)
    if v is None:
        raise ValueError(f"{name} must be a concrete number (it sets the number of steps), got a traced value")
    v = float(v)
    if not (math.isfinite(v) and v > lo):
        raise ValueError(f"{name} must be finite and > {lo:g}, got {v!r}")
    return v
