"""Every notebook (jupytext percent-format source in ``notebooks/``) runs top to bottom.

The notebooks read their sizes from ``RMTJAX_NOTEBOOK_N`` and write figures to
``RMTJAX_NOTEBOOK_OUT``; here they run in-process (so the suite's float64, strict promotion and
warnings-as-errors settings apply to them) with small sizes.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_percent_format(path):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.reads(path.read_text(), fmt="py:percent")
    kinds = {cell.cell_type for cell in nb.cells}
    assert kinds == {"code", "markdown"}
    assert nb.cells[0].cell_type == "markdown"


@pytest.mark.slow  # ~20 s each (mostly compiling); the README's `-m "not slow"` leaves them out, as it says
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("RMTJAX_NOTEBOOK_N", "16")
    monkeypatch.setenv("RMTJAX_NOTEBOOK_OUT", str(tmp_path))
    # (a notebook compiles hundreds of programs; conftest.py drops them once too many have piled up)
    runpy.run_path(str(path), run_name="__main__")
    assert list(tmp_path.glob("*.png"))
