"""Input validation: eager ``ValueError`` for concrete values, ``eqx.error_if`` under tracing."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np


def concrete(x):
    """``x`` as a NumPy array when it is a concrete value, else ``None`` (a tracer)."""
    try:
        return np.asarray(x)
    except Exception:  # jax.errors.TracerArrayConversionError and friends
        return None


def check_nonnegative(x, name: str):
    """``x >= 0`` and finite: ``ValueError`` eagerly, ``eqx.error_if`` under jit."""
    v = concrete(x)
    if v is not None:
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {v}")
        if np.any(v < 0):
            raise ValueError(f"{name} must be >= 0, got {v}")
        return x
    x = jnp.asarray(x)
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x) & (x >= 0)), f"{name} must be finite and >= 0")


def check_finite_array(x, name: str):
    v = concrete(x)
    if v is not None:
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains NaN or inf")
        return x
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"{name} contains NaN or inf")


def check_matrix(x, name: str):
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (n, d), got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    return x
