"""`rmtjax reproduce kernel-regression --quick` (float64 and float32): runs, writes its outputs,
reproduces the result, and resumes from its resume file."""

import json
import re

import jax
import pytest

from rmtjax.experiments import kernel_regression
from rmtjax.experiments._output import num
from rmtjax.experiments.kernel_regression import run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel_regression")
    return out, run(out, quick=True, progress=False)


@pytest.mark.slow
def test_reproduce_kernel_regression_quick(quick):
    out, report = quick
    assert report["ok"], report["checks"]
    assert (out / "kernel_regression.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "Reproduced" in md
    # the accuracy difference is a number people read ("0.01"), not float noise ("0.010000000000000009")
    gap = report["checks"]["widest_accuracy_gap"]
    assert f"accuracy difference {num(gap, 3)} (ok" in md
    assert re.search(r"\d\.\d{9,}", md) is None, re.search(r"\d\.\d{9,}", md)
    assert json.loads((out / "report.json").read_text())["ok"]
    kern = report["kernel"]
    depths = kernel_regression.QUICK.depths
    assert {(r["activation"], r["depth"]) for r in kern} == {(a, d) for a in ("relu", "erf") for d in depths}
    # the gap to the NTK flow is zero at t = 0 (same initial outputs) and shrinks with width
    fin = report["finite"]
    assert all(r["relative_gap"][0] < 1e-10 for r in fin)
    assert fin[-1]["relative_gap"][-1] < fin[0]["relative_gap"][-1]


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(quick):
    out, report = quick
    before = (out / "resume.json").read_text()
    again = run(out, quick=True, progress=False)
    assert (out / "resume.json").read_text() == before  # nothing recomputed or rewritten
    assert again["resume"]["status"] == "resumed" and again["checks"] == report["checks"]


@pytest.mark.slow
def test_reproduce_kernel_regression_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["checks"]
    p = report["precision"]
    assert p["dtype"] == "float32" and len(p["quantities"]) == 2 * 2 * len(kernel_regression.QUICK.depths)
    assert p["max_rel_diff"] < 2e-3, p  # measured 2.0e-4 (relu depth 1 NNGP predictions, max |diff| / max |f|)


def test_bad_sizes_are_clear_errors():
    import dataclasses

    for field, value, message in [("widths", (64,), "widths must hold at least 2 values"),
                                  ("depths", (), "depths must hold at least 1 value"),
                                  ("records", 50, r"records must be an integer in \[1, 40\]"),
                                  ("n_train", 4900, r"n_train \+ n_test must be <= 5000")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(kernel_regression.QUICK, **{field: value})
