r"""Input validation: the one rule every public function of rmtjax follows.

**A public function returns a finite, correct value, or raises a** ``ValueError`` **that names
the offending argument and its allowed range** — eagerly, and under ``jax.jit`` / ``jax.vmap``.

How each kind of check is carried out:

* Structure (dtype, rank, shape, emptiness, static integers, flags, choices) is known at trace
  time, so it always raises ``ValueError`` at once, with or without ``jit``.
* Values (finite, in range, positive semi-definite, ...) raise ``ValueError`` at once when the
  argument is concrete. When it is traced, the same check is compiled in (:func:`error_if`, the
  same mechanism as ``equinox.error_if``: a ``lax.cond`` on the predicate, reduced over any
  ``vmap`` axes, whose failing branch is a host callback), and the compiled program stops with
  the same message. Under your own ``jax.jit`` it arrives as the exception JAX makes of a failed
  callback (``ValueError`` or ``jax.errors.JaxRuntimeError``, depending on the transformation)
  whose message ends with ``ArgumentError: <our message>`` — no equinox banner; rmtjax's
  own compiled entry points re-raise it as :class:`ArgumentError` (:func:`reraise_as_value_error`).
  The log record JAX writes for a failed callback (a second copy of the traceback) is dropped for
  these errors: the exception is the message.
* Functions that return a result code (solvers with ``throw=False``) report bad points through
  the code instead, so a sweep carries on.

Messages read ``"<argument> must be <condition>, got <value>"``; the argument is named as the
user wrote it (``sigma_w2``, ``x1``, ``net.W_std``).
"""

from __future__ import annotations

import functools
import logging
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ArgumentError",
    "as_real",
    "check_finite_array",
    "check_matrix",
    "check_nonnegative",
    "check_range",
    "choice",
    "concrete",
    "error_if",
    "flag",
    "get_names",
    "prng_key",
    "real",
    "reraise_as_value_error",
    "runtime_message",
    "static_int",
    "symmetric_psd",
]


class ArgumentError(ValueError):
    """An invalid argument: its message names the argument and the allowed range. A
    ``ValueError``, so ``except ValueError`` catches it."""


ArgumentError.__module__ = "rmtjax"  # tracebacks print ``rmtjax.ArgumentError: <message>``


# --------------------------------------------------------------------------------------------
# Concrete or traced
# --------------------------------------------------------------------------------------------


def concrete(x):
    """``x`` as a NumPy array when it is a concrete value, else ``None`` (a tracer)."""
    try:
        return np.asarray(x)
    except Exception:  # jax.errors.TracerArrayConversionError and friends
        return None


def to_device(x):
    """A Python scalar, NumPy value or nested list as a JAX array, as ``jnp.asarray(x)`` makes it (the
    same dtype, weakly typed for Python scalars), without compiling: ``jnp.asarray`` of a concrete
    value binds ``lax.stage``, which compiles a one-operation program per shape and dtype (measured
    2026-12-07, JAX 0.10.2: 940 ``jit(stage)`` programs in a run of the test suite). JAX arrays and
    tracers are returned as they are."""
    if isinstance(x, jax.Array):
        return x
    if not isinstance(x, (bool, int, float, complex, np.generic, np.ndarray)):
        x = np.asarray(x)
    return jax.device_put(x)


def _summary(v: np.ndarray, bad: np.ndarray | None = None) -> str:
    """A short rendering of a value (the first offending entry of a large array)."""
    v = np.asarray(v)
    if v.ndim == 0:
        return repr(v.item())
    if bad is not None and np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"{v[idx].item()!r} at index {idx if len(idx) > 1 else idx[0]} (shape {v.shape})"
    if v.size <= 6:
        return np.array2string(v, precision=6, separator=", ")
    return f"an array of shape {v.shape}"


@jax.custom_batching.custom_vmap
def _any(pred):
    return jnp.any(pred)


@_any.def_vmap
def _any_vmap(axis_size, in_batched, pred):
    del axis_size, in_batched
    # One verdict for the whole batch, so the cond below stays a cond. Through _any itself, not
    # jnp.any: under a vmap of a vmap the outer batch must be reduced by this rule as well, or the
    # verdict comes out batched, the cond becomes a select and the failing branch's callback runs
    # for valid input too (found: jit(vmap(vmap(kernel))) raised "W_std must be finite").
    return _any(pred), False


def _raiser(msg: str):
    def raise_(*leaves):
        del leaves
        raise ArgumentError(msg)

    return raise_


@functools.partial(jax.jit, static_argnums=2)
def _cond_check(x, pred, msg):
    # jitted: bound outside jit (under an eager grad or custom-derivative trace), a lax.cond whose
    # branches are new closures is compiled anew on every call; jitted, once per shape and message
    def fail(x):
        leaves, tree = jax.tree_util.tree_flatten(x)
        structs = [jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)) for leaf in leaves]
        out = jax.pure_callback(_raiser(msg), structs, *leaves, vmap_method="broadcast_all")
        return jax.tree_util.tree_unflatten(tree, out)

    return jax.lax.cond(_any(pred), fail, lambda x: x, x)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _checked(x, pred, msg):
    return _cond_check(x, pred, msg)


@_checked.defjvp
def _checked_jvp(msg, primals, tangents):
    x, pred = primals
    tx, _ = tangents
    return _checked(x, pred, msg), tx  # the check acts on the primal; derivatives pass through


def error_if(x, pred, msg: str):
    """Returns ``x``; raises :class:`ArgumentError` (a ``ValueError``) with ``msg`` now if
    ``pred`` is concrete and any entry is true, else compiles the check into the traced program
    (``x`` may be any pytree of arrays; use the return value: an unused one checks nothing).
    Under ``vmap`` the program stops if the check fails for any batch member; derivatives pass
    through unchanged."""
    p = concrete(pred)
    if p is not None:
        if np.any(p):
            raise ArgumentError(msg)
        return x
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise TypeError("error_if needs at least one array in x to attach the check to")
    return _checked(x, jnp.asarray(pred), msg)


def tie(x, *checked):
    """Returns ``x`` (a floating array) carrying the compiled checks of the arrays ``checked``:
    a checked argument whose value the result happens not to use (the bias of a scale-free
    activation's Jacobian law, say) would otherwise have its check removed as dead code under
    ``jit``. Adds ``0 * c`` for one entry of each ``c`` (exactly 0 for every finite entry: the
    value and the derivatives of ``x`` are unchanged)."""
    for c in checked:
        c = jnp.ravel(jnp.asarray(c))
        if c.size:
            x = x + jnp.zeros_like(x) * c[0].astype(x.dtype)
    return x


# --------------------------------------------------------------------------------------------
# Structure: dtypes, ranks, integers, flags, choices (always checked at once)
# --------------------------------------------------------------------------------------------


def _kind(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "bool"
    if isinstance(x, numbers.Integral):
        return "int"
    if isinstance(x, numbers.Real):
        return "float"
    if isinstance(x, numbers.Complex):
        return "complex"
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(x).dtype
        except Exception:
            return "object"
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.integer):
        return "int"
    if np.issubdtype(dtype, np.floating):
        return "float"
    if np.issubdtype(dtype, np.complexfloating):
        return "complex"
    return "object"


def as_real(x, name: str, *, ndim: int | Sequence[int] | None = None, shape: tuple | None = None,
            allow_empty: bool = False, dtype=None, allow_int: bool = True):
    """``x`` as a real floating JAX array; structural checks only.

    Raises ``ValueError`` (naming ``name``) for complex, boolean, string or object input, the
    wrong rank or shape, and empty arrays (unless ``allow_empty``). Integers become the default
    float dtype (or ``dtype``); float inputs keep their precision unless ``dtype`` is given.
    """
    kind = _kind(x)
    if kind == "complex":
        raise ArgumentError(f"{name} must be real, got a complex value ({_describe(x)})")
    if kind == "bool":
        raise ArgumentError(f"{name} must be a real number or array, got a boolean ({_describe(x)})")
    if kind == "object":
        raise ArgumentError(f"{name} must be a real number or array, got {type(x).__name__} ({_describe(x)})")
    if kind == "int" and not allow_int:
        raise ArgumentError(f"{name} must be a floating-point array, got integers ({_describe(x)})")
    if isinstance(x, jax.Array):  # an array or a tracer
        arr = x
        if dtype is not None:
            arr = arr.astype(dtype)
        elif not jnp.issubdtype(arr.dtype, jnp.floating):
            arr = arr.astype(jnp.result_type(float))
    else:
        target = dtype if dtype is not None else (None if kind == "float" else jnp.result_type(float))
        arr = to_device(x if target is None else np.asarray(x, dtype=target))
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-d" for d in allowed)
            raise ArgumentError(f"{name} must be {want}, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ArgumentError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ArgumentError(f"{name} must not be empty, got shape {arr.shape}")
    return arr


def _describe(x) -> str:
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) > 0:
        return f"shape {tuple(shape)}, dtype {getattr(x, 'dtype', '?')}"
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def static_int(x, name: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """``x`` as a Python ``int`` (a static, structural integer such as a depth or a degree).

    Booleans, floats (even integral ones), arrays that are not 0-d integers, and tracers raise
    ``ValueError``; so does a value outside ``[lo, hi]``.
    """
    if isinstance(x, (bool, np.bool_)):
        raise ArgumentError(f"{name} must be an integer, got a boolean ({x!r})")
    if isinstance(x, numbers.Integral):
        v = int(x)
    else:
        c = concrete(x) if hasattr(x, "dtype") else None
        if c is not None and c.ndim == 0 and np.issubdtype(c.dtype, np.integer):
            v = int(c)
        elif hasattr(x, "dtype") and c is None:
            raise ArgumentError(f"{name} must be a static Python integer (it sets a shape or a loop "
                             f"length), got a traced value")
        else:
            raise ArgumentError(f"{name} must be an integer, got {_describe(x)} ({type(x).__name__})")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ArgumentError(f"{name} must be an integer in {_interval(lo, hi, False, False)}, got {v}")
    return v


def flag(x, name: str) -> bool:
    """``x`` as a Python ``bool``; anything else raises ``ValueError``."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    raise ArgumentError(f"{name} must be True or False, got {_describe(x)}")


def choice(x, name: str, options: Sequence[Any]):
    """``x`` if it is one of ``options`` (compared with ``==``), else ``ValueError``."""
    try:
        if x in tuple(options):
            return x
    except Exception:
        pass
    raise ArgumentError(f"{name} must be one of {tuple(options)}, got {x!r}")


# --------------------------------------------------------------------------------------------
# Values: finite, in a range (eager ValueError, or error_if under tracing)
# --------------------------------------------------------------------------------------------


def get_names(get, allowed: Sequence[str]) -> tuple[str, ...]:
    """neural-tangents' ``get=``: ``None`` (``("nngp", "ntk")``), one name, or a non-empty tuple of
    distinct names, each in ``allowed``; anything else is a ``ValueError`` naming ``get``."""
    allowed = tuple(allowed)
    msg = f"get must be None, one of {allowed} or a non-empty tuple of them, got {get!r}"
    if get is None:
        names = ("nngp", "ntk")
    elif isinstance(get, str):
        names = (get,)
    elif isinstance(get, (tuple, list)) and len(get) > 0:
        names = tuple(get)
    else:
        raise ValueError(msg)
    if any(not isinstance(n, str) or n not in allowed for n in names):
        raise ValueError(msg)
    if len(set(names)) != len(names):
        raise ValueError(f"get must not repeat a name, got {get!r}")
    return names


def _interval(lo, hi, lo_open, hi_open) -> str:
    if lo is None and hi is None:
        return "(-inf, inf)"
    left = "(-inf" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
    right = "inf)" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
    return f"{left}, {right}"


def _condition(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None and lo is None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    if lo is None and hi is None:
        return ""
    return f"in {_interval(lo, hi, lo_open, hi_open)}"


def check_range(x, name: str, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False, finite: bool = True):
    """Returns ``x`` after checking every entry is finite (if ``finite``; NaN is always rejected)
    and within ``lo``/``hi`` (open or closed ends). Eager ``ValueError`` with the offending
    value, or ``equinox.error_if`` with the same message under tracing."""
    cond = _condition(lo, hi, lo_open, hi_open)
    what = ("finite" if finite else "not NaN") + (f" and {cond}" if cond else "")
    v = concrete(x)
    if v is not None:
        if np.issubdtype(v.dtype, np.complexfloating):
            raise ArgumentError(f"{name} must be real, got a complex value")
        with np.errstate(invalid="ignore"):
            bad = np.isnan(v) if not finite else ~np.isfinite(v)
            if lo is not None:
                bad = bad | ((v <= lo) if lo_open else (v < lo))
            if hi is not None:
                bad = bad | ((v >= hi) if hi_open else (v > hi))
        if np.any(bad):
            raise ArgumentError(f"{name} must be {what}, got {_summary(v, bad)}")
        return x
    x = jnp.asarray(x)
    bad = jnp.isnan(x) if not finite else ~jnp.isfinite(x)
    if lo is not None:
        bad = bad | ((x <= lo) if lo_open else (x < lo))
    if hi is not None:
        bad = bad | ((x >= hi) if hi_open else (x > hi))
    return error_if(x, jnp.any(bad), f"{name} must be {what}")


def real(x, name: str, *, ndim: int | Sequence[int] | None = None, shape: tuple | None = None,
         allow_empty: bool = False, dtype=None, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, hi_open: bool = False, finite: bool = True):
    """:func:`as_real` then :func:`check_range`: a real array of the right structure whose
    entries are finite and in range (``ValueError`` naming ``name`` otherwise)."""
    arr = as_real(x, name, ndim=ndim, shape=shape, allow_empty=allow_empty, dtype=dtype)
    return check_range(arr, name, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, finite=finite)


# Older helpers, kept as thin wrappers (used across the package).


def check_nonnegative(x, name: str):
    """A real, finite array with every entry ``>= 0`` (see :func:`real`)."""
    return real(x, name, lo=0.0, allow_empty=True)


def check_finite_array(x, name: str):
    """A real array with every entry finite (see :func:`real`)."""
    return real(x, name, allow_empty=True)


def check_matrix(x, name: str):
    """A real, non-empty 2-d array ``(n, d)`` (structure only; see :func:`as_real`)."""
    x = as_real(x, name, ndim=2, allow_empty=True)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ArgumentError(f"{name} must have at least one row and one column, got shape {x.shape}")
    return x


# --------------------------------------------------------------------------------------------
# Runtime errors from compiled code -> ValueError
# --------------------------------------------------------------------------------------------

_OUR_MESSAGE = re.compile(r"ArgumentError: (.*)\Z", re.DOTALL)
_EQX_MESSAGE = re.compile(r"EquinoxRuntimeError: (.*?)(?:\n\s*\n\s*-{5,}|\Z)", re.DOTALL)
_RUNTIME_ERRORS = (jax.errors.JaxRuntimeError, eqx.EquinoxRuntimeError, ValueError)


def runtime_message(err: BaseException) -> str | None:
    """The message of a check that failed inside compiled code, or ``None`` if ``err`` is not
    such a failure.

    A failed :func:`error_if` surfaces from compiled code as ``ValueError`` or
    ``jax.errors.JaxRuntimeError`` whose text ends with ``ArgumentError: <message>``; a
    failed ``equinox.error_if`` (optimistix, equinox-based code) as
    ``jax.errors.JaxRuntimeError`` or ``equinox.EquinoxRuntimeError``."""
    if isinstance(err, ArgumentError):
        return str(err)
    text = str(err)
    if isinstance(err, _RUNTIME_ERRORS) and "allback error" in text:
        m = _OUR_MESSAGE.search(text)
        if m:
            return m.group(1).strip()
    if isinstance(err, eqx.EquinoxRuntimeError):
        m = _EQX_MESSAGE.search(text)
        return m.group(1).strip() if m else text.strip()
    if isinstance(err, jax.errors.JaxRuntimeError):
        m = _EQX_MESSAGE.search(text)
        return m.group(1).strip() if m else None
    return None


def reraise_as_value_error(fn: Callable) -> Callable:
    """Decorator for entry points that run compiled code: a check that fails inside
    (:func:`error_if`, ``equinox.error_if``) surfaces as :class:`ArgumentError` (a
    ``ValueError``) with the check's message, not as a runtime error of the compiled program."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ArgumentError:
            raise
        except _RUNTIME_ERRORS as err:
            msg = runtime_message(err)
            if msg is None:
                raise
            raise ArgumentError(msg) from None

    return wrapper


class _QuietCheckFailures(logging.Filter):
    """Drops JAX's "jax.pure_callback failed" log record (with its traceback) when the failure
    is a validation check: the exception that follows carries the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ArgumentError) and not type(exc).__name__.endswith("EquinoxRuntimeError")


# The logger JAX's callback module writes to (a logger name, not an import of JAX internals; if
# JAX renames it, the filter simply stops applying).
logging.getLogger("jax").getChild("_src.callback").addFilter(_QuietCheckFailures())


# --------------------------------------------------------------------------------------------
# PRNG keys and symmetric positive semi-definite matrices
# --------------------------------------------------------------------------------------------


def prng_key(key, name: str = "key"):
    """``key`` if it is one JAX PRNG key: a typed key of shape ``()`` (``jax.random.key(seed)``)
    or a raw ``uint32`` key of shape ``(2,)`` (``jax.random.PRNGKey(seed)``); else ``ValueError``.
    (Under ``jax.vmap`` over a batch of keys each call sees one key.)"""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if tuple(key.shape) != ():
            raise ArgumentError(f"{name} must be a single PRNG key (shape ()), got a batch of shape {tuple(key.shape)}; "
                                "split it, or jax.vmap over the batch")
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and tuple(getattr(key, "shape", ())) == (2,):
        return key
    raise ArgumentError(f"{name} must be a JAX PRNG key (jax.random.key(seed)), got {_describe(key)} "
                        f"({type(key).__name__})")


def symmetric_psd(x, name: str, *, rtol: float | None = None):
    """Returns ``x`` (a real ``(..., n, n)`` array) after checking that it is symmetric and positive
    semi-definite up to rounding: :math:`\\max|x - x^\\top| \\le` ``rtol`` :math:`\\max|x|` and every
    eigenvalue :math:`\\ge -` ``rtol`` :math:`\\max|\\lambda|`, with ``rtol`` by default
    :math:`\\min(100\\,n\\,\\varepsilon, 10^{-3})` of ``x``'s dtype. Asymmetry is reported as such
    (never as "not positive semi-definite"). Eager ``ValueError``, or :func:`error_if` with
    the same message under tracing."""
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ArgumentError(f"{name} must be a square matrix (n, n), got shape {x.shape}")
    n = x.shape[-1]
    tol = min(100.0 * n * float(jnp.finfo(x.dtype).eps), 1e-3) if rtol is None else float(rtol)
    sym_msg = f"{name} must be symmetric (max |{name} - {name}^T| <= {tol:.1e} max |{name}|)"
    psd_msg = f"{name} must be positive semi-definite (eigenvalues >= -{tol:.1e} times the largest |eigenvalue|)"
    v = concrete(x)
    if v is not None:
        v = np.asarray(v, np.float64)
        scale = np.max(np.abs(v), axis=(-2, -1), initial=0.0)
        asym = np.max(np.abs(v - np.swapaxes(v, -1, -2)), axis=(-2, -1), initial=0.0)
        if np.any(asym > tol * scale):
            raise ArgumentError(f"{sym_msg}, got max asymmetry {np.max(asym):.3g} against max |{name}| {np.max(scale):.3g}")
        ev = np.linalg.eigvalsh(0.5 * (v + np.swapaxes(v, -1, -2)))
        lo, hi = ev[..., 0], np.max(np.abs(ev), axis=-1)
        if np.any(lo < -tol * hi):
            i = np.unravel_index(np.argmin(lo / np.where(hi > 0, hi, 1.0)), lo.shape)
            raise ArgumentError(f"{psd_msg}, got smallest eigenvalue {lo[i]:.3g} against largest {hi[i]:.3g}")
        return x
    scale = jnp.max(jnp.abs(x), axis=(-2, -1))
    asym = jnp.max(jnp.abs(x - jnp.swapaxes(x, -1, -2)), axis=(-2, -1))
    x = error_if(x, jnp.any(asym > tol * scale), sym_msg)
    ev = jnp.linalg.eigvalsh(0.5 * (x + jnp.swapaxes(x, -1, -2)))
    lo, hi = ev[..., 0], jnp.max(jnp.abs(ev), axis=-1)
    return error_if(x, jnp.any(~(lo >= -tol * hi)), psd_msg)
