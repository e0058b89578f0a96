"""`rmtjax reproduce trainability --quick` (float64 and float32) runs one resumable sweep of padded tanh
networks, writes its outputs, and compares the trainable cells with 6 xi_c; bad sizes are clear errors."""

import dataclasses
import json
import math

import numpy as np
import pytest

from rmtjax.cli import main
from rmtjax.experiments import trainability

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainability")
    # exit status 0 (reproduced) or 1 (ran, agreement below the bar): both wrote a report
    assert main(["reproduce", "trainability", "--quick", "--out", str(out), "--no-progress"]) in (0, 1)
    return out, json.loads((out / "report.json").read_text())


def _check_outputs(out, report, dtype):
    cfg = trainability.QUICK
    assert report["quick"] and report["dtype"] == dtype and report["training_dtype"] == "float32"
    assert (out / "trainability.png").read_bytes()[:8] == PNG
    assert (out / trainability.STORE).is_dir()  # the sweep's store, kept for a resume
    md = (out / "report.md").read_text()
    assert ("Reproduced" in md or "NOT reproduced" in md) and "[]" not in md and "6 xi_c" in md
    g = report["grid"]
    acc = np.array(g["train_accuracy"])
    assert acc.shape == (len(cfg.sigma_w2), len(cfg.depths), cfg.seeds)
    assert np.all(np.isfinite(acc)) and np.all((acc >= 0) & (acc <= 1))
    test_acc = np.array(g["test_accuracy"])
    assert np.all((test_acc >= 0) & (test_acc <= 1))
    # the shallowest networks train well above chance (0.1) even at this size
    assert np.min(acc[:, 0]) > 0.5
    assert report["checks"]["accuracies_finite_in_unit_interval"]
    # the theory: 6 xi_c finite and positive away from the edge of chaos (1.7610 at sigma_b^2 = 0.05)
    th = report["theory"]
    w2c = th["critical_sigma_w2"]
    assert abs(w2c - 1.76095) < 1e-3
    for w, xi in zip(th["sigma_w2_curve"], th["xi_c_curve"], strict=True):
        if abs(w - w2c) > 0.05:
            assert xi is not None and math.isfinite(xi) and xi > 0, (w, xi)
    # rmtjax.meanfield, float64: 6 xi_c(sigma_w^2 = 1, sigma_b^2 = 0.05) = 21.7619
    assert 6 * th["xi_c_cells"][0] == pytest.approx(21.7619, rel=1e-3)
    # the 2 x 2 table adds up, and the fractions are its ratios
    a = report["agreement"]
    tp, fn, fp, tn = (a["trainable_and_predicted"], a["untrainable_but_predicted"], a["trainable_but_not_predicted"],
                      a["untrainable_and_not_predicted"])
    assert tp + fn + fp + tn == a["cells"] == len(cfg.sigma_w2) * len(cfg.depths)
    assert a["overall"] == pytest.approx((tp + tn) / a["cells"])
    if tp + fn:
        assert a["predicted_trainable_that_trained"] == pytest.approx(tp / (tp + fn))
    pred = np.array(g["predicted_trainable"])
    assert pred.sum() == tp + fn and pred[:, 0].all()  # depth 2 is below 6 xi_c everywhere


@pytest.mark.slow
def test_outputs_and_numbers(quick):
    out, report = quick
    _check_outputs(out, report, "float64")
    assert report["precision"] == {"dtype": "float64"}


@pytest.mark.slow
def test_rerun_resumes_from_the_store(quick, tmp_path):
    out, report = quick
    again = trainability.run(out, quick=True, progress=False)  # every chunk is in the store: nothing trains
    assert again["grid"]["train_accuracy"] == report["grid"]["train_accuracy"]
    assert again["timings"]["sweep_seconds"] < report["timings"]["sweep_seconds"]
    other = dataclasses.replace(trainability.QUICK, sigma_w2=(1.0, 2.0, 3.0, 4.0))
    with pytest.raises(ValueError, match="written by another grid"):  # the runner refuses to mix two grids
        trainability.run(out, config=other, progress=False)


@pytest.mark.slow
def test_reproduce_trainability_quick_float32(tmp_path):
    assert main(["reproduce", "trainability", "--quick", "--float32", "--out", str(tmp_path), "--no-progress"]) in (0, 1)
    report = json.loads((tmp_path / "report.json").read_text())
    _check_outputs(tmp_path, report, "float32")
    p = report["precision"]
    assert p["dtype"] == "float32" and set(p["quantities"]) == {"xi_c at the cells", "xi_c curve",
                                                                "critical sigma_w^2"}
    assert p["quantities"]["critical sigma_w^2"]["float64"] == pytest.approx(1.76095, abs=1e-4)
    assert p["quantities"]["xi_c at the cells"]["max_rel_diff"] < 1e-3, p
    assert "## float32 accuracy" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("field, value, message", [
    ("sigma_w2", (1.0,), "sigma_w2 must hold at least 2 values"),
    ("depths", (4, 2), "depths must be strictly increasing"),
    ("width", 1, "width must be an integer >= 2, got 1"),
    ("n_train", 4500, "n_train \\+ n_test must be at most 5000"),
    ("threshold", 1.5, "threshold"),
])
def test_bad_sizes_are_clear_errors(field, value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(trainability.QUICK, **{field: value, **({"n_test": 600} if field == "n_train" else {})})
    with pytest.raises(ValueError, match="seed must be an integer in"):
        trainability.run(tmp_path / "never", seed=-1)
    assert not (tmp_path / "never").exists()
