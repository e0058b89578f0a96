"""float32 accuracy of a reproduction, measured against float64 in the same process.

A run with ``--float32`` computes everything with x64 disabled. Its report states how far its
headline quantities are from float64: each reproduction names a function of arrays that
recomputes them (deterministic theory: kernels, fixed points, spectra, ODEs, metrics of given
features), and :func:`float64_comparison` calls it again under ``jax.enable_x64(True)`` on the
same inputs cast to float64, then records the largest absolute and relative differences per
quantity. Monte-Carlo draws are not compared (float32 and float64 draw different random numbers
from the same key); the Monte-Carlo checks of the run itself say whether float32 reproduces the
result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._output import num

__all__ = ["float64_comparison", "precision_lines", "x64_enabled"]

REFERENCE = "the same quantities recomputed in float64 in the same process (jax.enable_x64), from the same inputs"


def x64_enabled() -> bool:
    """Whether the run computes in float64 (the default dtype of ``jnp.asarray(1.0)``)."""
    return jnp.result_type(float) == jnp.float64


def _upcast(tree):
    def up(a):  # floating arrays to float64, integer arrays to int64 (as a float64 run has them)
        if isinstance(a, (jax.Array, np.ndarray, np.generic)):
            if jnp.issubdtype(a.dtype, jnp.floating):
                return jnp.asarray(a, jnp.float64)
            if jnp.issubdtype(a.dtype, jnp.signedinteger):
                return jnp.asarray(a, jnp.int64)
        return a

    return jax.tree.map(up, tree)


def _diffs(a, b, floor: float = 0.0) -> tuple[float, float]:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"float32 and float64 results have different shapes {a.shape} and {b.shape}")
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & (a == b)
    skip = both_nan | same_inf
    a, b = a[~skip], b[~skip]
    if a.size == 0:
        return 0.0, 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf, math.inf
    d = float(np.max(np.abs(a - b)))
    scale = max(float(np.max(np.abs(b))), floor)
    return d, d / scale if scale > 0 else (math.inf if d > 0 else 0.0)


def float64_comparison(compute: Callable[..., Mapping[str, Any]], *args: Any,
                       float32_values: Mapping[str, Any] | None = None,
                       scales: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The float32 accuracy of ``compute(*args)``, a dict of named arrays or numbers.

    In a float64 run this records only the dtype. In a float32 run it evaluates ``compute`` (or
    takes ``float32_values``, the values the run already has), evaluates it again under
    ``jax.enable_x64(True)`` with every floating array of ``args`` cast to float64, and returns,
    per quantity, the largest absolute difference and the relative one, ``max |a - b| / max |b|``
    over the entries (normwise: entries of an array that cross zero, such as predictions, do not
    make it blow up; for a scalar the usual relative difference). Entries that are NaN or the same
    infinity in both are skipped; a NaN or inf in one only counts as an infinite difference.
    ``scales`` gives, per quantity, a natural scale that the denominator does not go below (a
    probability that is 2e-28 in float64 is compared relative to 1, not to itself).

    Returns:
        ``{"dtype", "reference", "quantities": {name: {"max_abs_diff", "max_rel_diff",
        "float32", "float64"}}, "max_rel_diff", "worst"}`` (values given for scalars only).
    """
    if x64_enabled():
        return {"dtype": "float64"}
    low = dict(float32_values) if float32_values is not None else dict(compute(*args))
    with jax.enable_x64(True):
        high = dict(compute(*_upcast(args)))
    quantities = {}
    for name, v32 in low.items():
        v64 = high[name]
        a, r = _diffs(v32, v64, (scales or {}).get(name, 0.0))
        q: dict[str, Any] = {"max_abs_diff": a, "max_rel_diff": r}
        if np.ndim(v32) == 0:
            q["float32"], q["float64"] = float(v32), float(np.asarray(v64))
        quantities[name] = q
    worst = max(quantities, key=lambda k: quantities[k]["max_rel_diff"]) if quantities else None
    return {"dtype": "float32", "reference": REFERENCE, "quantities": quantities,
            "max_rel_diff": quantities[worst]["max_rel_diff"] if worst else 0.0, "worst": worst}


def precision_lines(p: Mapping[str, Any] | None) -> list[str]:
    """Markdown for the report: a sentence in float64, a table of differences in float32."""
    if not p or p.get("dtype") != "float32":
        return ["Computed in float64 (`--float32` measures the float32 accuracy against float64).", ""]
    lines = ["## float32 accuracy", "",
             f"Computed in float32. Compared with {p['reference']}: largest relative difference "
             f"{num(p['max_rel_diff'], 2)} ({p['worst']}).", "",
             "| quantity | float32 | float64 | max abs difference | max rel difference |", "|---|---:|---:|---:|---:|"]
    for name, q in p["quantities"].items():
        lines.append(f"| {name} | {num(q.get('float32'), 7) if 'float32' in q else 'array'} | "
                     f"{num(q.get('float64'), 10) if 'float64' in q else 'array'} | {num(q['max_abs_diff'], 2)} | "
                     f"{num(q['max_rel_diff'], 2)} |")
    return lines + [""]
