"""Resume files: the finished pieces of a reproduction, kept so that a rerun skips them.

One format for every reproduction: ``resume.json`` in the output folder,

.. code-block:: json

    {"format": "rmtjax-resume/1", "experiment": "kernels", "fingerprint": "3f2a...",
     "config": {...}, "entries": {"relu|depth=1": {...}, ...}}

rewritten atomically (:func:`rmtjax.experiments._output.atomic_write_text`) each time a piece
finishes, so a run killed at any moment leaves either the previous complete file or the new one.
``fingerprint`` hashes everything that determines the results (the experiment, its sizes, the
seed, the dtype): a file written by another configuration is never reused. A file that cannot be
read (cut off by a crash of another program, edited by hand, not JSON, another format) or that
belongs to another configuration is reported in one line on stderr and recomputed; it is
overwritten by the first piece that finishes.

This module depends only on the standard library and :mod:`._output`, so it can move as a whole
(to ``rmtjax.sweep``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ._output import atomic_write_text, dumps, to_jsonable

__all__ = ["FORMAT", "FILENAME", "ResumeFile", "fingerprint"]

FORMAT = "rmtjax-resume/1"
FILENAME = "resume.json"


def fingerprint(experiment: str, config: Mapping[str, Any]) -> str:
    """A short hash of the experiment name, the resume format and ``config`` (which must hold
    everything the results depend on: sizes, seed, dtype)."""
    text = json.dumps({"format": FORMAT, "experiment": experiment, "config": to_jsonable(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResumeFile:
    """The finished pieces of one run, keyed by strings, in ``out_dir/resume.json``.

    Args:
        out_dir: the output folder (must exist).
        experiment: the experiment's name.
        config: everything the results depend on (JSON-able; hashed into the fingerprint).
        quiet: do not print the one-line notice about an unusable file.

    Attributes:
        status: ``"new"`` (no file), ``"resumed"`` (its entries are used), ``"unreadable"`` (cut
            off, not JSON or not a resume file: recomputed) or ``"foreign"`` (another experiment
            or configuration: recomputed).
        notice: the one-line explanation for ``"unreadable"`` and ``"foreign"``, else ``None``.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> r = ResumeFile(d, "demo", {"n": 3})
        >>> r.put("a", {"x": 1.5})
        {'x': 1.5}
        >>> ResumeFile(d, "demo", {"n": 3}).get("a"), ResumeFile(d, "demo", {"n": 3}).status
        ({'x': 1.5}, 'resumed')
    """

    def __init__(self, out_dir: str | os.PathLike, experiment: str, config: Mapping[str, Any], *,
                 quiet: bool = False):
        self.path = Path(out_dir) / FILENAME
        self.experiment = experiment
        self.config = to_jsonable(config)
        self.fingerprint = fingerprint(experiment, config)
        self.status, self.notice, self._entries = self._load()
        self.resumed = len(self._entries)
        if self.notice and not quiet:
            print(f"rmtjax: {self.notice}", file=sys.stderr, flush=True)

    def _load(self) -> tuple[str, str | None, dict[str, Any]]:
        if not self.path.exists():
            return "new", None, {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            return "unreadable", f"{self.path} is unreadable ({reason}); recomputing everything", {}
        if not (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), dict)):
            return "unreadable", f"{self.path} is not an {FORMAT} file; recomputing everything", {}
        if data.get("experiment") != self.experiment or data.get("fingerprint") != self.fingerprint:
            return ("foreign", f"{self.path} was written by another run (experiment {data.get('experiment')!r}, "
                    f"configuration {data.get('fingerprint')!r}, not {self.fingerprint!r}); recomputing everything",
                    {})
        return "resumed", None, dict(data["entries"])

    # -- mapping access -----------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __getitem__(self, key: str) -> Any:
        return self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, key: str, default: Any = None) -> Any:
        return self._entries.get(key, default)

    def put(self, key: str, value: Any) -> Any:
        """Stores ``value`` under ``key``, rewrites the file atomically and returns the value as a
        rerun will read it back (JSON types: lists for tuples and arrays), so that a fresh run and
        a resumed one continue from identical data."""
        stored = json.loads(dumps(value, indent=None))
        self._entries[key] = stored
        self.save()
        return stored

    def save(self) -> None:
        """Rewrites the file (atomically) with the current entries."""
        data = {"format": FORMAT, "experiment": self.experiment, "fingerprint": self.fingerprint,
                "config": self.config, "entries": self._entries}
        atomic_write_text(self.path, dumps(data, indent=None))

    def summary(self) -> dict[str, Any]:
        """What the report records about resuming: file, status, entries reused, notice."""
        return {"file": self.path.name, "status": self.status, "resumed_entries": self.resumed,
                "notice": self.notice}
