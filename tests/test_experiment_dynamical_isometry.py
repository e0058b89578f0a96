"""The dynamical-isometry reproduction (quick mode, float64 and float32) runs, writes its outputs,
reproduces the result and resumes from its resume file."""

import json

import pytest

from rmtjax.cli import main
from rmtjax.experiments.dynamical_isometry import run

# XLA's default optimizations (conftest.py): this reproduction's run time is long elementwise loops,
# which XLA at -O0 runs 1.1-2x slower than it saves in compiling.
XLA_OPTIMIZED = True

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("dynamical_isometry")
    return out, run(out, quick=True, progress=False)


@pytest.mark.slow
def test_reproduce_dynamical_isometry_quick(quick):
    out, report = quick
    assert report["ok"], report["summary"]
    assert (out / "dynamical_isometry.png").read_bytes()[:8] == PNG
    assert "Reproduced" in (out / "report.md").read_text()
    saved = json.loads((out / "report.json").read_text())
    assert saved["ok"] and saved["summary"] == report["summary"]
    relu = {(r["weights"], r["depth"]): r for r in saved["results"] if r["name"] == "relu"}
    assert len(relu) == 4
    # Pennington et al. 2017: at chi = 1, Var(s^2) = 2L (Gaussian) and L (orthogonal) for ReLU
    for (weights, depth), r in relu.items():
        assert abs(r["theory"]["variance"] - (2 if weights == "gaussian" else 1) * depth) < 1e-8
        assert abs(r["theory"]["zero_mass"] - 0.5) < 1e-12


@pytest.mark.slow
def test_rerun_resumes(quick):
    out, report = quick
    again = run(out, quick=True, progress=False)
    assert again["resume"]["status"] == "resumed" and again["resume"]["resumed_entries"] == 4
    assert again["results"] == report["results"]


@pytest.mark.slow
def test_reproduce_dynamical_isometry_quick_float32(tmp_path):
    """The reproducer of issue 12: `--float32` crashed writing float32 values to JSON."""
    assert main(["reproduce", "dynamical-isometry", "--quick", "--float32", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["dtype"] == "float32"
    p = report["precision"]
    assert p["dtype"] == "float32" and len(p["quantities"]) == 4 * 4
    assert p["max_rel_diff"] < 1e-3, p
