"""Argument checks shared by :mod:`rmtjax.rmt` (the rule of :mod:`rmtjax._validate`: a finite,
correct value or a ``ValueError`` naming the argument, eagerly and under ``jit``/``vmap``).

Structural checks raise at once; value checks raise eagerly when the argument is concrete and
are compiled in with :func:`rmtjax._validate.error_if` otherwise. Everything here is private.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from .._numerics import solver_tolerances
from .._validate import ArgumentError, _kind, _summary, as_real, concrete, error_if, flag, static_int

__all__ = [
    "as_complex",
    "check_activation",
    "check_method",
    "cdtype",
    "eps",
    "finish",
    "points",
    "static_number",
    "static_options",
]


def cdtype(dtype):
    """The complex dtype of the precision of ``dtype`` (real or complex)."""
    return jnp.complex128 if jnp.dtype(dtype) in (jnp.float64, jnp.complex128) else jnp.complex64


def rdtype(dtype):
    """The real dtype of the precision of ``dtype`` (real or complex)."""
    return jnp.float64 if jnp.dtype(dtype) in (jnp.float64, jnp.complex128) else jnp.float32


def eps(dtype) -> float:
    """Machine epsilon of the real precision of ``dtype``."""
    return float(np.finfo(np.dtype(rdtype(dtype))).eps)


def tolerances(dtype, rtol64: float = 1e-10, atol64: float = 1e-12) -> tuple[float, float]:
    """Solver tolerances for ``dtype`` (:func:`rmtjax._numerics.solver_tolerances`)."""
    return solver_tolerances(rdtype(dtype), rtol64=rtol64, atol64=atol64)


def points(z, name: str, *, complex_ok: bool = True, ndim=None, allow_empty: bool = False):
    """``z`` as a JAX array of points: real (integers become floats) or, if ``complex_ok``,
    complex; booleans, strings, objects, the wrong rank and (unless ``allow_empty``) empty arrays
    raise at once; non-finite entries (NaN, inf, in either part) raise eagerly or under tracing."""
    kind = _kind(z)
    if kind == "complex" and complex_ok:
        a = jnp.asarray(z)
        if ndim is not None and a.ndim not in ((ndim,) if isinstance(ndim, int) else tuple(ndim)):
            want = " or ".join(f"{d}-d" for d in ((ndim,) if isinstance(ndim, int) else ndim))
            raise ArgumentError(f"{name} must be {want}, got shape {a.shape}")
        if not allow_empty and a.size == 0:
            raise ArgumentError(f"{name} must not be empty, got shape {a.shape}")
    else:
        if kind in ("bool", "object"):
            what = "a real or complex number or array" if complex_ok else "a real number or array"
            got = "a boolean" if kind == "bool" else type(z).__name__
            raise ArgumentError(f"{name} must be {what}, got {got}")
        a = as_real(z, name, ndim=ndim, allow_empty=allow_empty)
    v = concrete(a)
    if v is not None:
        bad = ~np.isfinite(v)
        if np.any(bad):
            raise ArgumentError(f"{name} must be finite, got {_summary(v, bad)}")
        return a
    return error_if(a, ~jnp.all(jnp.isfinite(a)), f"{name} must be finite (no nan or inf)")


def as_complex(z):
    """A real or complex array as complex of the same precision."""
    z = jnp.asarray(z)
    if jnp.iscomplexobj(z):
        return z
    return _real_to_complex(z)


@jax.jit
def _real_to_complex(z):
    # jitted: eagerly, two one-operation programs per shape (measured 2026-12-07)
    return jax.lax.complex(z, jnp.zeros_like(z))


def static_number(x, name: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = True) -> float:
    """A static (structural) real number as a Python float: finite, ``> lo`` (or ``>= lo``) and
    ``<= hi``; tracers, arrays of rank > 0, booleans and non-numbers raise ``ValueError``."""
    kind = _kind(x)
    if kind not in ("int", "float"):
        got = "a boolean" if kind == "bool" else f"{x!r:.60}"
        raise ArgumentError(f"{name} must be a real number, got {got}")
    v = concrete(x)
    if v is None:
        raise ArgumentError(f"{name} must be a static Python number (it sets the numerical method), got a traced value")
    if v.ndim != 0:
        raise ArgumentError(f"{name} must be a scalar, got shape {v.shape}")
    v = float(v)
    rng = ("" if lo is None else (f" {'>' if lo_open else '>='} {lo:g}")) + \
          ("" if hi is None else f"{' and' if lo is not None else ''} <= {hi:g}")
    if not np.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        raise ArgumentError(f"{name} must be finite{' and' if rng else ''}{rng}, got {v!r}")
    return v


def static_options(throw=None, **ints):
    """``flag(throw)`` (unless ``None``) and each ``name=(value, lo, hi)`` as a static int."""
    out = {k: static_int(v, k, lo=lo, hi=hi) for k, (v, lo, hi) in ints.items()}
    if throw is not None:
        out["throw"] = flag(throw, "throw")
    return out


def check_activation(activation):
    """An :mod:`rmtjax.activations` module whose array parameters are real and finite."""
    from ..activations import AbstractActivation
    from .._validate import real

    if not isinstance(activation, AbstractActivation):
        raise ArgumentError(f"activation must be an rmtjax.activations module (e.g. Tanh()), got {activation!r:.80}")

    def check(path, leaf):
        if not (hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)):
            return leaf
        return real(leaf, "activation" + jax.tree_util.keystr(path), allow_empty=True)

    return jax.tree_util.tree_map_with_path(check, activation)


def check_method(method, activation=None):
    """An :mod:`rmtjax.gaussian` method object (and, given ``activation``, one it supports)."""
    from ..gaussian import AbstractMethod, _resolve

    if not isinstance(method, AbstractMethod):
        raise ArgumentError(f"method must be an rmtjax.gaussian method (Auto(), ClosedForm(), GaussHermite(deg), "
                            f"Mehler(order)), got {method!r:.80}")
    if activation is not None:
        _resolve(activation, method)  # raises for a method the activation does not support
    return method


def finish(value, ok, *, throw: bool, eager: str, traced: str | None = None, at=None):
    """Applies ``throw`` to a result with a per-point ``ok`` mask: eagerly (concrete ``ok``) a
    ``ValueError`` with ``eager`` (and ``at(mask)``, a description of the failing points), under
    tracing :func:`error_if` on ``value`` with ``traced`` (default ``eager``)."""
    if not throw:
        return value
    okc = concrete(ok)
    if okc is not None:
        if not np.all(okc):
            where = "" if at is None else f" {at(~np.asarray(okc))}"
            raise ArgumentError(f"{eager}{where}")
        return value
    return error_if(value, ~jnp.all(ok), traced or eager)


def describe_points(z):
    """``at(mask)`` for :func:`finish`: the first failing points of a concrete ``z`` (or nothing)."""
    zc = concrete(z)

    def at(mask):
        if zc is None:
            return ""
        bad = np.broadcast_to(np.asarray(zc), mask.shape)[mask] if np.ndim(zc) else np.asarray(zc)[None]
        n = int(np.sum(mask))
        shown = ", ".join(f"{complex(b):.6g}" if np.iscomplexobj(b) else f"{float(b):.6g}" for b in bad[:3])
        return f"(at {shown}{', ...' if n > 3 else ''}; {n} of {mask.size} points)"

    return at
