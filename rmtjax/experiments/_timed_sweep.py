"""One ``rmtjax.sweep.run`` of a reproduction, timed across resumes: every run into the same store
appends its seconds and the points it computed to ``sweep_runs.json`` next to the store, so a
resumed reproduction reports the time of the whole sweep (trainability, width-sweep)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from ._output import atomic_write_text, dumps

HISTORY = "sweep_runs.json"


def history(out: Path, *, fresh: bool) -> list[dict[str, Any]]:
    """The sweep's earlier runs into the same store (``sweep_runs.json``: seconds and points
    computed by each); empty for a new store or an unreadable file."""
    path = out / HISTORY
    if fresh or not path.exists():
        return []
    try:
        runs = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return runs if isinstance(runs, list) and all(isinstance(r, dict) for r in runs) else []


def timed_sweep(fn, grid, out: Path, store_name: str, done: Callable[[Any], int], **run_kwargs):
    """``sweep.run(fn, grid, store=out / store_name, **run_kwargs)`` and the run history with this
    run appended. ``done(dataset)`` counts the points an existing store already holds (a store of
    another sweep counts 0, and ``sweep.run`` then says why it refuses it)."""
    from .. import sweep

    store = out / store_name
    before = 0
    if store.exists():
        try:
            before = int(done(sweep.open_store(store)))
        except (ValueError, AttributeError, KeyError, IndexError):
            before = 0
    runs = history(out, fresh=before == 0)
    t0 = time.perf_counter()
    result = sweep.run(fn, grid, store=store, **run_kwargs)
    runs.append({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": time.perf_counter() - t0,
                 "networks_computed": int(grid.size - before), "devices": jax.local_device_count()})
    atomic_write_text(out / HISTORY, dumps(runs))
    return result, runs
