"""The rule of rmtjax._validate, fuzzed over every public entry point.

Every public function returns a finite, correct value or raises a ValueError naming the
offending argument, eagerly and under jit (see ``tests/_fuzz/harness.py``). The entries live in
``tests/_fuzz/specs_*.py``; :func:`test_every_public_entry_point_is_fuzzed` keeps the list
complete, and :func:`test_rule` requires at least one eagerly successful call per entry (a
drawn example or the entry's ``valid`` one, see ``harness.Entry``). Set
``RMTJAX_FUZZ_COUNTS=path.json`` to write the examples drawn per entry point and their outcomes
(eager/jit, value/error; an entry's ``valid`` example is counted with them), with the number of
XLA programs the eager and jit calls compiled (a program already compiled by an earlier entry is
not counted again).

``RMTJAX_FUZZ_SCALE`` scales every entry's number of examples (default 0.25, at least 2; the derandomized
examples are the same on every run, so a larger scale explores further: ``RMTJAX_FUZZ_SCALE=4``
for a thorough pass before a release, which also checks every example under jit, see
``harness.JIT_VALUE_PROGRAMS``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pathlib
import pkgutil

import jax
import pytest
from _fuzz import harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rmtjax

_HERE = pathlib.Path(__file__).parent / "_fuzz"
SPEC_MODULES = sorted(m.name for m in pkgutil.iter_modules([str(_HERE)]) if m.name.startswith("specs_"))
ENTRIES: list[harness.Entry] = []
EXEMPT: dict[str, str] = {}
for _name in SPEC_MODULES:
    _mod = importlib.import_module(f"_fuzz.{_name}")
    ENTRIES += _mod.ENTRIES
    EXEMPT.update(_mod.EXEMPT)

SCALE = float(os.environ.get("RMTJAX_FUZZ_SCALE", "0.25"))
# Under jit every example with a new shape, dtype or static argument compiles a program (most of
# this module's time). Below scale 1, one such program per entry checks the values under jit; the
# further eagerly successful examples with new signatures are checked eagerly only (``jit_skipped``
# in the counts), while every example that raises eagerly, and every one that reuses a compiled
# program, is still checked under jit. From scale 1 on, every example is checked under jit.
# (Set here, not passed by test_rule: hypothesis derives the derandomized examples from the source of
# test_rule's inner function, so editing it would change every entry's examples.)
harness.JIT_VALUE_PROGRAMS = None if SCALE >= 1 else 1

PUBLIC_MODULES = ("activations", "collapse", "data", "design", "dynamics", "finite", "finite_width", "gaussian", "hermite", "kernels",
                  "meanfield", "nt", "nt.predict", "regression", "rmt", "solve", "stax", "sweep")


@pytest.fixture(scope="module", autouse=True)
def _write_counts():
    yield
    path = os.environ.get("RMTJAX_FUZZ_COUNTS")
    if path:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        out = pathlib.Path(path)
        out = out.with_name(f"{out.stem}.{worker}{out.suffix}")
        out.write_text(json.dumps({k: dict(v) for k, v in harness.COUNTS.items()}, indent=1, sort_keys=True))


# Each compiled XLA CPU executable keeps about three memory mappings; a worker crashes at the kernel's
# limit of 65530 (see conftest.py). 4000 programs are about 13,000 mappings.
_MAX_COMPILED = 4000
_CLEARED_AT = [harness.COMPILED[0]]


@pytest.fixture(autouse=True)
def _release_compiled_programs_when_many():
    """Drops JAX's compiled programs once more than ``_MAX_COMPILED`` have piled up (see the
    module-level fixture of the same purpose in conftest.py), not after every entry: the eager calls
    of most entries compile the same small programs (one per jnp operation on scalars or small arrays
    of the shapes the specs share), and keeping them across entries saves most of the eager compile
    time (measured 2026-12-06 on the loaded 2-core machine, the 25 activation entries at the default
    scale: 1137 eager compiles, 137 s of backend compile and 339 s of wall with a clear after every
    entry; 194 compiles, 16 s and 108 s without)."""
    yield
    if harness.COMPILED[0] - _CLEARED_AT[0] > _MAX_COMPILED:
        jax.clear_caches()
        _CLEARED_AT[0] = harness.COMPILED[0]


@pytest.mark.parametrize(
    "entry", [pytest.param(e, id=e.name, marks=[pytest.mark.slow] if e.slow else []) for e in ENTRIES])
def test_rule(entry: harness.Entry):
    # (the lines around ``run`` may change freely: the derandomized examples depend on its source only)
    values_before = harness.COUNTS[entry.name]["eager_ok"]
    if entry.valid is not None:
        harness.check_rule(entry, entry.valid())

    @settings(max_examples=max(2, round(entry.max_examples * SCALE)),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(data=st.data())
    def run(data):
        kwargs = {k: data.draw(s, label=k) for k, s in entry.args.items()}
        harness.check_rule(entry, kwargs)

    run()
    assert harness.COUNTS[entry.name]["eager_ok"] > values_before, (
        f"{entry.name}: no example returned a value eagerly, so its value path (finite outputs, check, "
        "eager-versus-jit agreement) went unchecked; give its Entry a valid= example (see harness.Entry)")


def public_names() -> set[str]:
    """``module.Name`` for every public callable defined in rmtjax."""
    names = set()
    for m in PUBLIC_MODULES:
        mod = importlib.import_module(f"rmtjax.{m}")
        listed = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
        for n in listed:
            obj = getattr(mod, n, None)
            if callable(obj) and getattr(obj, "__module__", "").startswith("rmtjax") and not inspect.ismodule(obj):
                names.add(f"{m}.{n}")
    return names


def test_every_public_entry_point_is_fuzzed():
    covered = {e.name for e in ENTRIES}
    missing = sorted(n for n in public_names()
                     if n not in EXEMPT and n not in covered and not any(c.startswith(n + ".") for c in covered))
    assert not missing, f"public entry points without a fuzz entry (or an EXEMPT reason): {missing}"


def test_specs_name_real_objects():
    for name in [e.name for e in ENTRIES] + list(EXEMPT):
        obj = rmtjax
        for part in name.split("."):
            obj = getattr(obj, part, None) if part != "finite" or obj is not rmtjax else importlib.import_module("rmtjax.finite")
            assert obj is not None, f"spec names {name!r}, which is not a public object"
