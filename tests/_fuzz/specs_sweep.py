"""Fuzz entries for rmtjax.sweep: none. Its objects are a grid description, a runner that compiles
and calls a user's function, and a store opener; none is a traced function of arrays, so the harness's rule
(eager == jit, finite values) does not apply. Their bad input (axes, coordinates, arguments, stores
of another grid) is tested in tests/test_sweep.py."""

from __future__ import annotations

ENTRIES = []
EXEMPT = {"sweep.Grid": "a grid description (checked at construction; bad input tested in tests/test_sweep.py)",
          "sweep.open_store": "opens a folder (its bad input is tested in tests/test_sweep.py)",
          "sweep.run": "a runner over a grid, not a traced function (bad input tested in tests/test_sweep.py)"}
