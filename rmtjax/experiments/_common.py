"""Pieces every reproduction shares: checked configurations, the seed, the dtype, versions.

Each reproduction describes its sizes by a frozen dataclass whose ``__post_init__`` checks every
field with the helpers below, so a bad size or an empty grid is a one-line ``ValueError`` naming
the field before anything is computed (never an ``IndexError`` halfway through a run).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["SEED_MAX", "check_seed", "config_dict", "dtype_name", "float_grid", "int_grid", "number", "positive_int", "versions"]

#: Seeds are 32-bit: without x64, ``jax.random.key(2**32)`` silently equals ``jax.random.key(0)``.
SEED_MAX = 2**32 - 1


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def positive_int(value: Any, name: str, *, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an ``int`` in ``[lo, hi]``, else ``ValueError`` naming ``name``."""
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}")
    return int(value)


def number(value: Any, name: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> float:
    """``value`` as a finite ``float`` within the bounds, else ``ValueError`` naming ``name``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = not ((lo is not None and (v <= lo if lo_open else v < lo))
                  or (hi is not None and (v >= hi if hi_open else v > hi)))
    if not ok:
        parts = [f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else "",
                 f"{'<' if hi_open else '<='} {hi:g}" if hi is not None else ""]
        cond = " and ".join(p for p in parts if p)
        raise ValueError(f"{name} must be a finite number{' ' + cond if cond else ''}, got {value!r}")
    return float(value)


def int_grid(values: Any, name: str, *, lo: int = 1, min_len: int = 1, increasing: bool = True) -> tuple[int, ...]:
    """A non-empty tuple of integers ``>= lo`` (strictly increasing if ``increasing``)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}")
    if len(values) < min_len:
        raise ValueError(f"{name} must hold at least {min_len} value{'s' if min_len > 1 else ''}, got {tuple(values)}")
    out = tuple(positive_int(v, f"{name}[{i}]", lo=lo) for i, v in enumerate(values))
    if increasing and any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {out}")
    return out


def float_grid(values: Any, name: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
               min_len: int = 1, increasing: bool = True) -> tuple[float, ...]:
    """A tuple of at least ``min_len`` finite numbers within the bounds (strictly increasing if
    ``increasing``)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}")
    if len(values) < min_len:
        raise ValueError(f"{name} must hold at least {min_len} value{'s' if min_len > 1 else ''}, got {tuple(values)}")
    out = tuple(number(v, f"{name}[{i}]", lo=lo, hi=hi, lo_open=lo_open) for i, v in enumerate(values))
    if increasing and any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {out}")
    return out


def check_seed(seed: Any) -> int:
    """The master seed as an ``int`` in ``[0, 2**32 - 1]``."""
    return positive_int(seed, "seed", lo=0, hi=SEED_MAX)


def dtype_name() -> str:
    """``"float64"`` when x64 is enabled, else ``"float32"``."""
    import jax.numpy as jnp

    return jnp.dtype(jnp.result_type(float)).name


def config_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass configuration as a dict (tuples kept)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def versions() -> dict[str, Any]:
    """Versions of the software and the machine a report was computed with."""
    import jax
    import jaxlib
    import numpy as np

    from .. import __version__

    return {"rmtjax": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "backend": jax.default_backend(),
            "devices": jax.local_device_count(), "cpu_count": os.cpu_count()}
