"""The fuzz harness for the one rule of :mod:`rmtjax._validate`.

**Every public function returns a finite, correct value, or raises a ValueError that names the
offending argument** — eagerly and under ``jit``. An :class:`Entry` describes one public entry
point: how to call it, a hypothesis strategy per argument (valid values mixed with NaN, inf,
negative, zero, huge, tiny, wrong types, ranks and empty arrays), and an optional ``check`` of
the value (an invariant or an independent reference) for the calls that succeed.

For every drawn example :func:`check_rule` runs the call

1. eagerly: it must return finite outputs (``+-inf`` only in the output fields named by
   ``allow_inf``) that pass ``check``, or raise ``ValueError`` whose message names one of the
   arguments (or one of ``names``). Any other exception fails the test;
2. under ``equinox.filter_jit`` with every non-static numeric argument traced (Python scalars
   become arrays, so the value checks run inside the compiled program): the same outcome —
   an error (``ValueError`` at trace time, or a runtime error carrying a message that names an
   argument) exactly when the eager call raised, otherwise the same values. (With
   ``JIT_VALUE_PROGRAMS``, eagerly successful examples beyond that many compiled programs per
   entry are checked eagerly only; see :func:`check_rule`.)

An entry may also give ``valid``: one known-valid example (a function returning the kwargs, so no
array is built at import time). The test runs it through :func:`check_rule` before the
hypothesis examples, so the value path (finite outputs, ``check``, eager-versus-jit agreement) is
exercised even where the few derandomized examples of the default scale all stop at a bad
argument; the test then requires at least one eagerly successful call per entry (``eager_ok`` in
``COUNTS``), drawn or ``valid``. Use :func:`sample` for its arrays: the same values the
strategies of :func:`array` draw, so the compiled program matches theirs.

Specs live in ``tests/_fuzz/specs_*.py``, one module per part of the package; each defines
``ENTRIES`` (a list of :class:`Entry`) and ``EXEMPT`` (public names that are not entry points,
with the reason: result containers, abstract bases, aliases).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from rmtjax._validate import runtime_message

# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
SPECIAL = (NAN, INF, -INF, 0.0, -0.0, -1.0, 1e30, -1e30, 1e-300, -1e-300)
BAD_TYPES = (1.0 + 2.0j, True, "0.5", None)


def finite(lo: float = -1e3, hi: float = 1e3) -> st.SearchStrategy:
    """Ordinary finite floats in ``[lo, hi]``."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def special() -> st.SearchStrategy:
    """NaN, +-inf, zero, -1, huge (1e30) and tiny (1e-300) values."""
    return st.sampled_from(SPECIAL)


def bad_type() -> st.SearchStrategy:
    """Complex, bool, string and None where a real number is expected."""
    return st.sampled_from(BAD_TYPES)


def number(lo: float = -1e3, hi: float = 1e3, *, valid_weight: int = 3) -> st.SearchStrategy:
    """A real scalar: mostly valid values in ``[lo, hi]``, plus special values and wrong types."""
    return st.one_of(*([finite(lo, hi)] * valid_weight), special(), bad_type())


def static_int(lo: int = 0, hi: int = 10) -> st.SearchStrategy:
    """A structural integer: mostly valid, plus negatives, bools, floats and huge values."""
    return st.one_of(st.integers(lo, hi), st.integers(lo, hi),
                     st.sampled_from([-1, lo - 1, 10**9, True, 2.5, float(hi), None, "3"]))


def fixed_int(value: int, lo: int = 0) -> st.SearchStrategy:
    """A structural integer that is ``value`` when valid, plus the bad values of :func:`static_int`
    (negatives, bools, floats, huge values, None, strings). For entries where every new value compiles
    a new solver (eagerly, and under jit for the examples that raise at run time): with the entry's
    ``valid`` example at ``value``, every drawn example reuses its programs. (The integral float is
    ``value + 1``, not ``value``: a static argument equal to ``value`` with the same hash, like
    ``float(value)``, would be answered by the cached jit program of ``value``.)"""
    return st.one_of(st.just(value), st.just(value),
                     st.sampled_from([-1, lo - 1, 10**9, True, 2.5, float(value + 1), None, "3"]))


def sample(shape: tuple[int, ...], lo: float = -3.0, hi: float = 3.0, seed: int = 0) -> np.ndarray:
    """The valid float64 array that :func:`array` draws for ``seed`` (for ``Entry.valid``)."""
    return np.random.default_rng(seed).uniform(lo, hi, size=shape)


def array(shape: tuple[int, ...], lo: float = -3.0, hi: float = 3.0, *, bad: bool = True,
          seed_range: int = 2**16) -> st.SearchStrategy:
    """A float64 array of ``shape``: random valid entries (:func:`sample`), or (if ``bad``) the same
    array with a NaN/inf/huge entry, complex or bool dtype, the wrong rank, or no rows."""

    def valid(seed):
        return sample(shape, lo, hi, seed)

    base = st.integers(0, seed_range).map(valid)
    if not bad:
        return base

    def poison(a, v):
        a = a.copy()
        a.flat[0] = v
        return a

    bads = st.one_of(
        st.tuples(base, st.sampled_from([NAN, INF, -INF, 1e30])).map(lambda t: poison(*t)),
        base.map(lambda a: a.astype(complex) + 1j),
        base.map(lambda a: a > 0),
        base.map(lambda a: a[None]),                     # one rank too many
        base.map(lambda a: a.reshape(-1)[:1].reshape(()) if a.ndim else a[None]),  # wrong rank
        st.just(np.zeros((0,) + tuple(shape[1:]))),      # empty
    )
    return st.one_of(base, base, base, bads)


# ---------------------------------------------------------------------------------------------
# Entries and the rule
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Entry:
    """One public entry point.

    Attributes:
        name: the public name, ``"module.function"`` or ``"module.Class.method"``
            (``module`` relative to ``rmtjax``).
        fn: ``fn(**kwargs)`` calls the entry point (a lambda that builds objects as needed).
        args: a hypothesis strategy per keyword argument of ``fn``.
        static: arguments never traced under ``jit`` (structural: depths, degrees, flags, names).
        names: further words a ValueError may name (e.g. ``"W_std"`` for an argument ``w``).
        allow_inf: output fields (substrings of ``jax.tree_util.keystr`` paths) where ``+-inf``
            is a legitimate value (e.g. a depth scale at criticality).
        ok: for result-code APIs (``throw=False``): ``ok(out)`` is a boolean mask; only entries
            where it is true must be finite.
        check: ``check(kwargs, out)`` asserts correctness of a successful call (an invariant, a
            closed form, a reference); raise ``AssertionError`` on failure.
        jit: also check the rule under ``equinox.filter_jit``.
        max_examples: hypothesis examples for this entry.
        rtol: eager-versus-jit agreement of successful calls.
        slow: mark the test ``slow`` (only for entries whose single call takes seconds).
        valid: ``valid()`` returns one known-valid kwargs dict (built when called, not at import),
            checked by :func:`check_rule` before the hypothesis examples, eagerly and under jit.
            Give one whenever the derandomized examples at the default scale never return a value
            eagerly (the test fails then, naming the entry): ordinary arguments of the shapes,
            dtypes and static values the strategies draw, so the compiled program is theirs.
    """

    name: str
    fn: Callable[..., Any]
    args: dict[str, st.SearchStrategy]
    static: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    allow_inf: tuple[str, ...] = ()
    ok: Callable[[Any], Any] | None = None
    check: Callable[[dict, Any], None] | None = None
    jit: bool = True
    max_examples: int = 12
    rtol: float = 1e-6
    slow: bool = False
    valid: Callable[[], dict] | None = None
    _jitted: Any = dataclasses.field(default=None, repr=False, compare=False)

    def jitted(self):
        if self._jitted is None:
            fn = self.fn

            @eqx.filter_jit
            def run(traced, static, kinds):
                del kinds  # part of the cache key only (see _kinds)
                return fn(**traced, **static)

            self._jitted = run
        return self._jitted


COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

# XLA programs compiled so far in this process (from JAX's compile events): check_rule records how
# many each entry's eager and jit calls compiled (``eager_compiles``, ``jit_compiles`` in COUNTS), and
# the test module releases compiled programs once many have piled up.
COMPILED = [0]


def _count_compile(event: str, duration: float, **_) -> None:
    if "backend_compile" in event:
        COMPILED[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compile)


def _mentions(msg: str, entry: Entry) -> bool:
    words = tuple(entry.args) + tuple(entry.names)
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(w)}(?![A-Za-z0-9_])", msg) for w in words)


def _leaves(out):
    return jax.tree_util.tree_leaves_with_path(out)


def _assert_finite(entry: Entry, out, where: str):
    mask = None
    if entry.ok is not None:
        mask = np.asarray(entry.ok(out))
    for path, leaf in _leaves(out):
        if not hasattr(leaf, "dtype") and not isinstance(leaf, (float, complex)):
            continue
        a = np.asarray(leaf)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
            continue
        key = jax.tree_util.keystr(path)
        allowed_inf = any(f in key for f in entry.allow_inf)
        bad = np.isnan(a) if allowed_inf else ~np.isfinite(a)
        if mask is not None and mask.shape and a.shape[: mask.ndim] == mask.shape:
            bad = bad & np.broadcast_to(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a.shape)
        elif mask is not None and not mask.shape and not bool(mask):
            bad = np.zeros_like(bad)
        if np.any(bad):
            raise AssertionError(f"{entry.name} ({where}) returned a non-finite value in output {key or 'value'}: "
                                 f"{a.ravel()[np.argmax(bad.ravel())]} (no error raised)")


def _to_traced(v):
    if isinstance(v, (bool, np.bool_)):
        return jnp.asarray(v)
    if isinstance(v, (int, float, complex, np.number)):
        return jnp.asarray(v)
    return v


def _close(entry: Entry, a, b):
    """Eager and jit outputs agree: each floating leaf to ``entry.rtol`` of its largest entry, or to
    the rounding level of the whole output (16 eps of its largest entry over all leaves). The floor is
    for leaves that are rounding noise themselves: a solver's residual at a converged root (about
    1e-18 in float64) depends on how XLA orders the operations, and measured 2.2e-18 eagerly against
    4.0e-18 under jit for ``hermite.extinction_probability`` (value 0.0339 in both) once XLA's code
    generation changed (``--xla_cpu_parallel_codegen_split_count=1``)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb), f"{entry.name}: eager and jit outputs differ in structure"
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
             if hasattr(x, "dtype") and np.issubdtype(np.asarray(x).dtype, np.inexact)]
    floor = 0.0
    for x, y in pairs:
        fin = np.isfinite(x) & np.isfinite(y)
        if fin.any():
            big = max(np.max(np.abs(x[fin])), np.max(np.abs(y[fin])))
            floor = max(floor, 16 * float(np.finfo(x.dtype).eps) * big)
    for x, y in pairs:
        fin = np.isfinite(x) & np.isfinite(y)
        assert np.array_equal(np.isfinite(x), np.isfinite(y)), f"{entry.name}: eager and jit disagree on which outputs are finite"
        if fin.any():
            scale = max(np.max(np.abs(x[fin])), np.max(np.abs(y[fin])), 1e-300)
            diff = np.max(np.abs(x[fin] - y[fin]))
            err = diff / scale
            assert err <= entry.rtol or diff <= floor, (
                f"{entry.name}: eager and jit differ by {err:.2e} (relative to the largest output)")


def _outcome(entry: Entry, call, where: str):
    """('ok', out) or ('error', message); fails the test on any other exception."""
    try:
        out = call()
        out = jax.block_until_ready(out)
    except ValueError as e:
        msg = runtime_message(e) or str(e)
        assert _mentions(msg, entry), f"{entry.name} ({where}) raised a ValueError that names no argument: {msg!r}"
        return "error", msg
    except (jax.errors.JaxRuntimeError, eqx.EquinoxRuntimeError) as e:
        msg = runtime_message(e)
        assert msg is not None, f"{entry.name} ({where}) failed inside compiled code without a check message: {e}"
        assert _mentions(msg, entry), f"{entry.name} ({where}) raised a runtime error that names no argument: {msg!r}"
        return "error", msg
    except Exception as e:  # noqa: BLE001 - the point: nothing else may escape
        raise AssertionError(f"{entry.name} ({where}) raised {type(e).__name__} instead of a ValueError: {e}") from e
    return "ok", out


# per entry (by id: two entries may share a name, e.g. a function's throwing and sweep forms): the
# signatures (see _signature) of the examples that returned a value under jit
JIT_VALUE_SIGNATURES: dict[int, set] = collections.defaultdict(set)


def _signature(traced: dict, static: dict):
    """What decides whether ``Entry.jitted`` compiles a new program: the tree structure, the shape,
    dtype and weak type of every array leaf, the other leaves and the static arguments. ``None``
    when unknown."""
    try:
        leaves, treedef = jax.tree_util.tree_flatten(traced)
        sig = tuple((np.shape(x), str(x.dtype), bool(getattr(x, "weak_type", False))) if hasattr(x, "dtype")
                    else (type(x).__name__, repr(x)) for x in leaves)
        return treedef, sig, tuple(sorted((k, repr(v)) for k, v in static.items()))
    except Exception:  # noqa: BLE001 - an unusual argument: treat it as new
        return None


# at most this many programs per entry check values under jit (see check_rule; None: no limit; the test
# module sets it from RMTJAX_FUZZ_SCALE)
JIT_VALUE_PROGRAMS: int | None = None


def _kinds(v):
    """The types of a static argument, nested: jit's cache compares static arguments by ``==`` and
    ``hash``, under which ``True == 1`` and ``3.0 == 3``, so without them a program compiled for a
    valid ``1`` would answer a later ``True`` (which the eager call rejects)."""
    if isinstance(v, dict):
        return tuple((k, _kinds(x)) for k, x in v.items())
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_kinds(x) for x in v))
    return type(v).__name__


def check_rule(entry: Entry, kwargs: dict):
    """Checks the rule for one example (see the module docstring).

    ``JIT_VALUE_PROGRAMS``: at most this many distinct signatures of examples that succeed eagerly
    are checked under jit per entry (each compiles a program); an eagerly successful example with a
    further new signature skips the jit check (counted as ``jit_skipped``). Examples that raise
    eagerly are always checked under jit (validation must not disappear under jit), and so are
    examples whose signature already returned a value under jit (no new program). ``None``: no
    limit."""
    counts = COUNTS[entry.name]
    counts["examples"] += 1
    before = COMPILED[0]
    status, out = _outcome(entry, lambda: entry.fn(**kwargs), "eager")
    counts[f"eager_{status}"] += 1
    counts["eager_compiles"] += COMPILED[0] - before
    if status == "ok":
        _assert_finite(entry, out, "eager")
        if entry.check is not None:
            entry.check(kwargs, out)
    if not entry.jit:
        return
    traced = {k: _to_traced(v) for k, v in kwargs.items() if k not in entry.static}
    static = {k: v for k, v in kwargs.items() if k in entry.static}
    try:
        hash(tuple(static.items()))
    except TypeError:
        return  # an unhashable structural argument: nothing to compile against
    sig = _signature(traced, static) if status == "ok" else None
    seen = JIT_VALUE_SIGNATURES[id(entry)]
    if (status == "ok" and JIT_VALUE_PROGRAMS is not None and sig not in seen
            and len(seen) >= JIT_VALUE_PROGRAMS):
        counts["jit_skipped"] += 1
        return
    before = COMPILED[0]
    jstatus, jout = _outcome(entry, lambda: entry.jitted()(traced, static, _kinds(static)), "jit")
    counts[f"jit_{jstatus}"] += 1
    counts["jit_compiles"] += COMPILED[0] - before
    if status == "error":
        assert jstatus == "error", (f"{entry.name}: raised eagerly ({out!r}) but returned a value under jit: "
                                    "validation disappears under jit")
        return
    assert jstatus == "ok", f"{entry.name}: succeeded eagerly but raised under jit: {jout!r}"
    _assert_finite(entry, jout, "jit")
    _close(entry, out, jout)
    if sig is not None:
        seen.add(sig)


def describe(x) -> str:
    """Short text for a drawn value (for hypothesis' notes)."""
    if isinstance(x, np.ndarray):
        return f"array{x.shape}:{x.dtype}"
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    return repr(x)[:60]
