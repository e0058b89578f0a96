"""`rmtjax reproduce finite-width --quick` (float64 and float32) runs, writes its outputs, reproduces
the 1/n theory, resumes from its resume file; bad sizes are clear errors."""

import dataclasses
import json

import jax
import pytest

from rmtjax.cli import main
from rmtjax.experiments import finite_width

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("finite_width")
    assert main(["reproduce", "finite-width", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_reproduce_finite_width_quick(quick):
    out, report = quick
    assert report["ok"] and report["quick"] and report["dtype"] == "float64"
    assert (out / "finite_width.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "Reproduced" in md and "[]" not in md and "ntk_change" in md
    assert report["precision"] == {"dtype": "float64"}
    assert report["resume"]["status"] == "new"
    p = report["panels"]
    # one entry per (activation, depth) in each panel, theory from rmtjax.finite_width
    assert {(e["activation"], e["depth"]) for e in p["correction"]} == {("tanh", 2), ("relu", 2)}
    tanh = next(e for e in p["correction"] if e["activation"] == "tanh")
    relu_v = next(e for e in p["vertex"] if e["activation"] == "relu")
    relu_t = next(e for e in p["ntk_variance"] if e["activation"] == "relu")
    assert tanh["theory"] == pytest.approx(-0.064125, abs=1e-5)  # nngp_corrections, tanh W 1.4 b 0.3 L 2
    assert relu_v["theory"] == pytest.approx(40.0, rel=1e-8)  # ReLU: V = 5 L K^2, K = 2 at L = 2
    assert relu_t["theory"] == pytest.approx(2 * 29 / 9, rel=1e-6)  # L (11 L + 7) / (3 (L + 1))
    # the control variate is what resolves the tanh correction: its standard errors are far below
    # the raw mean's (measured: variance reduced 800-1900x at widths 16-64)
    assert min(tanh["variance_reduction"]) > 50
    assert report["checks"]["nngp_correction_resolved_tanh"]
    t = report["training"]
    assert len(t["rows"]) == 3 and all(r["final_loss"] < 0.01 * r["initial_loss"] for r in t["rows"])
    assert t["fit"]["slope"] < 0 and t["depth"] == 1
    # (c) the prefactor: the networks' n E[Theta_T - Theta_0], projected on ntk_change's prediction,
    # extrapolates to 1 (measured: A = 0.94 +- 0.05; rho = 0.67, 0.83, 0.96 at n = 32, 128, 512)
    c = report["checks"]
    assert c["ntk_change_prefactor_limit"] and c["ntk_change_prefactor_resolved"] and c["ntk_change_entries_at_widest"]
    assert abs(t["projection_fit"]["A"] - 1) < 5 * t["projection_fit"]["A_se"] < 0.5


@pytest.mark.slow
def test_rerun_resumes_every_ensemble(quick):
    out, report = quick
    again = finite_width.run(out, quick=True, progress=False)
    assert again["resume"]["status"] == "resumed" and again["resume"]["resumed_entries"] == 9
    assert again["panels"] == json.loads(json.dumps(report["panels"])) and again["ok"]


@pytest.mark.slow
def test_reproduce_finite_width_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = finite_width.run(tmp_path, quick=True, progress=False)
    assert report["ok"] and report["dtype"] == "float32"
    p = report["precision"]
    assert p["dtype"] == "float32"
    assert set(p["quantities"]) == {f"{a} L=2 {q}" for a in ("tanh", "relu")
                                    for q in ("K", "correction", "vertex", "ntk", "ntk_relative_variance")}
    # measured: largest relative difference 5.6e-7 (the tanh correction, a difference of O(1) terms)
    assert p["max_rel_diff"] < 1e-4, p
    assert "## float32 accuracy" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("field, value, message", [
    ("widths", (16, 32), r"widths must hold at least 3 values"),
    ("widths", (16, 64, 32), r"widths must be strictly increasing"),
    ("networks", 8, r"networks must be an integer >= 16, got 8"),
    ("train_widths", (16, 32), r"train_widths must hold at least 3 values"),
    ("learning_rate", 2.0, r"learning_rate must be a finite number > 0 and < 2, got 2.0"),
    ("tolerance_se", 0, r"tolerance_se must be a finite number > 0"),
    ("depths", (0, 2), r"depths\[0\] must be an integer >= 1, got 0"),
])
def test_bad_sizes_are_clear_errors(field, value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(finite_width.QUICK, **{field: value})
    with pytest.raises(ValueError, match="seed must be an integer in"):
        finite_width.run(tmp_path / "never", seed=-1)
    with pytest.raises(ValueError, match="config must be a finite_width.Config"):
        finite_width.run(tmp_path / "never", config={"widths": (8, 16, 32)})
    assert not (tmp_path / "never").exists()
