"""`rmtjax reproduce learning-curves --quick` (float64 and float32) runs, writes its outputs,
reproduces the result and resumes; bad sizes are clear errors."""

import dataclasses
import json

import pytest

from rmtjax.cli import main
from rmtjax.experiments import learning_curves

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("learning_curves")
    assert main(["reproduce", "learning-curves", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_reproduce_learning_curves_quick(quick):
    out, report = quick
    assert report["ok"] and report["quick"] and report["dtype"] == "float64"
    assert (out / "learning_curves.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "Reproduced" in md and "[]" not in md
    c = report["checks"]
    assert c["mnist_kernel_points_checked"] == 8 and c["double_descent_peak_at_N_equals_T"]
    # the random-features peak is the point: at the smallest ridge the error at N = T is several
    # times the error at N = 4T (measured 4.26 vs 0.51; theory 4.54 vs 0.51), in theory and in the measurement
    rf = [p for p in report["random_features"]["points"] if p["ridge"] == 1e-4]
    peak, wide = min(rf, key=lambda p: abs(p["ratio"] - 1)), rf[-1]
    assert peak["theory"] > 4 * wide["theory"] and peak["measured"] > 4 * wide["measured"]
    # the learning curves decrease with n, in theory and measured
    for key in ("teacher",):
        pts = report[key]["points"]
        assert all(a["theory"] > b["theory"] for a, b in zip(pts, pts[1:]))
    assert report["precision"] == {"dtype": "float64"}
    # (e) every kernel (NNGP, NTK) x (ReLU, erf) x depths (1, 5) at every n was compared (measured: max |z| 3.2)
    kr = report["kernels"]["points"]
    assert len(kr) == 8 * 4 and {(p["kind"], p["activation"], p["depth"]) for p in kr} == {
        (k, a, d) for k in ("nngp", "ntk") for a in ("relu", "erf") for d in (1, 5)}
    assert c["nngp_and_ntk_curves_agree"]
    # (f) the teacher's label noise puts the best ridge inside the grid, in theory and measured (both 0.1 here),
    # and the theory's choice is as good as validation's (measured: 0.4734 vs 0.4749, paired difference
    # -0.0016 +- 0.0029)
    rs = report["ridge_selection"]
    grid = report["config"]["ridge_grid"]
    assert grid[0] < rs["theory_ridge"] < grid[-1] and grid[0] < rs["measured_best_ridge"] < grid[-1]
    assert c["theory_ridge_as_good_as_validation"] and c["ridge_curve_agrees"]


@pytest.mark.slow
def test_rerun_resumes_every_measurement(quick):
    out, first = quick
    report = learning_curves.run(out, quick=True, progress=False)
    assert report["resume"]["status"] == "resumed"
    # 2 x 4 kernel, 5 teacher, 2 x 7 features, 2 x 4 limit, 8 x 4 NNGP/NTK, 1 ridge selection
    assert report["resume"]["resumed_entries"] == 68
    for panel in ("mnist_kernel", "teacher", "random_features", "mei_montanari", "kernels", "ridge_selection"):
        assert [p["measured"] for p in report[panel]["points"]] == [p["measured"] for p in first[panel]["points"]]


@pytest.mark.slow
def test_reproduce_learning_curves_quick_float32(tmp_path):
    assert main(["reproduce", "learning-curves", "--quick", "--float32", "--out", str(tmp_path), "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["dtype"] == "float32"
    p = report["precision"]
    # measured: 1.2e-5 (random-features test error through the peak, ridge 1e-4), the rest <= 8e-7
    assert p["dtype"] == "float32" and p["max_rel_diff"] < 1e-4, p
    assert p["quantities"]["kernel learning curves"]["max_rel_diff"] < 1e-5, p


@pytest.mark.parametrize("field, value, message", [
    ("krr_trials", 1, "krr_trials must be an integer >= 2"),
    ("krr_n", (10, 700), r"krr_n must stay below pool \(600\)"),
    ("rf_ratios", (1.0, 0.5), "rf_ratios must be strictly increasing"),
    ("tolerance", -0.1, "tolerance"),
    ("kernel_n", (10, 70), r"kernel_n must stay at or below pool / 10 \(60\)"),
    ("ridge_grid", (0.1, 1.0), "ridge_grid must hold at least 3 ridges"),
])
def test_bad_sizes_are_clear_errors(field, value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(learning_curves.QUICK, **{field: value})
    with pytest.raises(ValueError, match="seed must be an integer in"):
        learning_curves.run(tmp_path / "never", seed=-1)
