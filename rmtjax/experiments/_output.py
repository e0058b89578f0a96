"""What every reproduction writes, written one way: JSON that accepts NumPy/JAX values, files
replaced atomically, the output folder checked before any computation, numbers formatted for
people.

* :func:`to_jsonable` / :func:`dumps`: NumPy and JAX scalars and arrays (float32 included), tuples,
  paths and dataclasses become plain JSON values; non-finite floats are written as ``NaN`` /
  ``Infinity``, as Python's :mod:`json` reads them back.
* :func:`atomic_write_text` / :func:`atomic_write_bytes`: the data go to a temporary file in the
  same folder, are flushed to disk, and the temporary file is renamed over the target
  (``os.replace``). A reader sees the old file or the new one, never half of one, even if the run
  is killed mid-write.
* :func:`check_out_dir`: the output folder exists (or can be created), is a folder, and accepts a
  new file; otherwise a one-line ``ValueError``.
* :func:`num` / :func:`nums`: numbers in prose and tables (``0.01``, not ``0.010000000000000009``;
  ``0.5, 0.25`` rather than a Python list).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "check_out_dir", "dumps", "num", "nums", "save_figure",
           "to_jsonable", "write_report"]


# ------------------------------------------------------------------------------------------
# JSON
# ------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """``obj`` with every NumPy/JAX scalar or array, tuple, set, path and dataclass replaced by
    plain Python values that :func:`json.dumps` accepts (``dict`` keys become strings).

    Example:
        >>> import numpy as np
        >>> to_jsonable({"x": np.float32(0.5), 1: (np.arange(2), None)})
        {'x': 0.5, '1': [[0, 1], None]}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, (np.generic,)):
        return obj
    if isinstance(obj, Mapping):
        return {_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "__array__") and hasattr(obj, "dtype"):  # np.ndarray, jax.Array
        return np.asarray(obj).tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to a report: {obj!r:.80}")


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    v = to_jsonable(k)
    return v if isinstance(v, str) else json.dumps(v)


def dumps(obj: Any, *, indent: int | None = 1) -> str:
    """``json.dumps(to_jsonable(obj))``: the one encoder of every report and resume file."""
    return json.dumps(to_jsonable(obj), indent=indent)


# ------------------------------------------------------------------------------------------
# Atomic files
# ------------------------------------------------------------------------------------------


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``:
    ``path`` holds either its old content or all of ``data``, never part of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 100) -> None:
    """Renders a matplotlib figure to PNG in memory and writes it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def write_report(out: str | os.PathLike, report: Mapping[str, Any], markdown: str) -> None:
    """``report.json`` (via :func:`dumps`) and ``report.md``, each written atomically."""
    out = Path(out)
    atomic_write_text(out / "report.json", dumps(report))
    atomic_write_text(out / "report.md", markdown)


def check_out_dir(path: str | os.PathLike, *, name: str = "out_dir") -> Path:
    """Creates the output folder if needed and checks that a file can be written in it.

    Raises:
        ValueError: one line naming ``name``: the path exists and is not a folder, or the folder
            cannot be created, or a file cannot be created in it.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{name} must be a folder, got {str(p)!r}, which is an existing file")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{name} must be a folder that can be created, got {str(p)!r}: "
                         f"{err.strerror or err}") from None
    try:
        with tempfile.TemporaryFile(dir=p, prefix=".rmtjax-write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{name} must be a writable folder, got {str(p)!r}: {err.strerror or err}") from None
    return p


# ------------------------------------------------------------------------------------------
# Numbers for people
# ------------------------------------------------------------------------------------------


def num(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, without float noise: ``num(0.010000000000000009)``
    is ``'0.01'``; ``None`` is ``'n/a'``; integers stay integers.

    Example:
        >>> num(0.010000000000000009), num(1234567.0), num(3), num(None), num(float("nan"))
        ('0.01', '1.235e+06', '3', 'n/a', 'nan')
    """
    if x is None:
        return "n/a"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    v = float(x)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def nums(xs: Iterable[Any], digits: int = 4, sep: str = ", ") -> str:
    """:func:`num` of every entry, joined by ``sep`` (for prose and table cells, never a raw list).

    Example:
        >>> nums([0.5, 0.25000000000000006, 3])
        '0.5, 0.25, 3'
    """
    return sep.join(num(x, digits) for x in xs)
