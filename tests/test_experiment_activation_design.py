"""`rmtjax reproduce activation-design --quick` (float64 and float32) runs end to end, writes its outputs,
measures the c maps of finite networks against the theory and designs a Hermite activation whose objective
decreases; bad sizes are clear errors."""

import dataclasses
import json
import math
import re

import jax
import numpy as np
import pytest

from rmtjax.cli import main
from rmtjax.experiments import activation_design

# XLA's default optimizations (see conftest.py): training the nine networks is long elementwise loops
# (measured 2026-12-07, one quick run on the 2-core machine: 71 s at -O0, 57 s optimized)
XLA_OPTIMIZED = True

PNG = b"\x89PNG\r\n\x1a\n"
NETWORKS = list(activation_design.ACTIVATIONS) + ["relu-shallow", "hermite", "relu-design-depth"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("activation_design")
    # exit status 0 (reproduced) or 1 (ran, headline not reproduced at this size): both wrote a report
    assert main(["reproduce", "activation-design", "--quick", "--out", str(out), "--no-progress"]) in (0, 1)
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_outputs_and_numbers(quick):
    out, report = quick
    assert report["quick"] and report["dtype"] == "float64" and report["precision"] == {"dtype": "float64"}
    assert (out / "activation_design.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert ("Reproduced" in md or "NOT reproduced" in md) and "[]" not in md
    assert not re.search(r"\bnan\b", md)
    cfg = report["config"]
    assert set(report["training"]) == set(NETWORKS)
    for name in NETWORKS:
        t = report["training"][name]
        assert t["steps"][-1] == cfg["steps"] and len(t["steps"]) == cfg["records"] + 1
        assert np.asarray(t["test_accuracy"]).shape == (cfg["seeds"], cfg["records"] + 1)
        assert 0 <= t["final_test_accuracy"] <= 1 and math.isfinite(t["final_train_loss"])
    # the checks are measured numbers, and ok is exactly their conjunction
    c = report["checks"]
    assert report["ok"] == all(v for k, v in c.items() if k != "max_cmap_z")
    h = report["headline"]
    acc = {a: report["training"][a]["final_test_accuracy"] for a in NETWORKS}
    for a in activation_design.SHAPED:
        assert h["close"][a] == (acc["relu-shallow"] - acc[a] <= cfg["accuracy_margin"])
    # every network trains at this size (measured: final test accuracy 0.94-0.98 on digits, from ~0.1)
    for a in list(activation_design.ACTIVATIONS) + ["relu-shallow", "relu-design-depth"]:
        assert acc[a] > 0.8, (a, acc[a])


@pytest.mark.slow
def test_cmap_matches_theory(quick):
    _, report = quick
    cm = report["cmap"]
    cfg = report["config"]
    m = cfg["cmap_inputs"]
    assert len(cm["pairs"]) == m * (m - 1) // 2
    for name, e in cm["activations"].items():
        mean, th = np.asarray(e["mean"]), np.asarray(e["theory"])
        assert mean.shape == th.shape == (cfg["depth"], len(cm["pairs"]))
        # measured (quick, 16 networks of width 64, depth 16): max z 2.0-3.9 over all layers and pairs
        assert e["max_z"] <= cfg["tolerance_se"], (name, e["max_z"])
        assert e["agrees"]
    # the shaped activations keep q = 1 through the layers (Q(1) = 1, sigma_w^2 = 1, no biases)
    for name in ("dks-tanh", "tat-softplus", "tat-lrelu"):
        e = cm["activations"][name]
        np.testing.assert_allclose(e["theory_q"], 1.0, atol=1e-9)
        q, se = np.asarray(e["q_mean"]), np.asarray(e["q_se"])
        assert np.all(np.abs(q - 1.0) <= 5 * se + 1e-12), name
    # DKS: C(0) = 0 and a network C'(1) of 1.5 keep the decorrelation gentle; plain ReLU drives the
    # correlations up towards 1 faster than the TAT Leaky ReLU (its C_f(0) = 0.9 is at the full depth)
    relu, lrelu = cm["activations"]["relu"]["theory"][-1], cm["activations"]["tat-lrelu"]["theory"][-1]
    assert np.all(np.asarray(relu) > np.asarray(lrelu))


@pytest.mark.slow
def test_designed_activation(quick):
    _, report = quick
    d = report["design"]
    assert report["checks"]["design_objective_decreased"]
    # measured (quick): the task objective 0.72 -> 0.37, the length-map penalty 3.1 -> 6.6e-4, Q'(1) = 0.726
    assert d["objective_after"] < 0.8 * d["objective_before"]
    assert d["penalty_after"] < 0.01 * d["penalty_before"]
    assert abs(d["q_slope"] - report["config"]["design_q_slope"]) < 0.05
    coeffs = np.asarray(d["coefficients"])
    assert coeffs.shape == (report["config"]["design_order"] + 1,)
    np.testing.assert_allclose(np.sum(coeffs**2), 1.0, atol=1e-9)  # Q(1) = 1 by construction
    h = np.asarray(d["history"])
    assert h.shape == (report["config"]["design_steps"] + 1,) and np.all(np.isfinite(h))


@pytest.mark.slow
def test_rerun_resumes_every_piece(quick):
    out, report = quick
    again = activation_design.run(out, quick=True, progress=False)
    assert again["resume"]["status"] == "resumed" and again["resume"]["resumed_entries"] == 16
    assert again["training"] == json.loads(json.dumps(report["training"]))


@pytest.mark.slow
def test_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = activation_design.run(tmp_path, quick=True, progress=False)
    assert report["dtype"] == "float32"
    p = report["precision"]
    assert p["dtype"] == "float32"
    assert {f"{a} c-map" for a in activation_design.ACTIVATIONS} <= set(p["quantities"])
    assert p["max_rel_diff"] < 1e-3, p
    assert report["checks"]["design_objective_decreased"] and report["checks"]["cmap_agrees"]
    assert "## float32 accuracy" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("field, value, message", [
    ("data", "cifar", r"data must be 'mnist' or 'digits'"),
    ("n_train", 4500, r"n_train \+ n_test must be <= 5000"),
    ("baseline_depth", 50, r"baseline_depth must be an integer in \[1, 49\]"),
    ("seeds", 1, r"seeds must be an integer >= 2"),
    ("records", 7, r"steps must be a multiple of records"),
    ("design_val", 4000, r"design_train \+ design_val must be <= n_train"),
    ("learning_rate", 0.0, r"learning_rate must be a finite number > 0"),
])
def test_bad_sizes_are_clear_errors(field, value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(activation_design.FULL, **{field: value})
    with pytest.raises(ValueError, match="seed must be an integer in"):
        activation_design.run(tmp_path / "never", seed=-1)
    with pytest.raises(ValueError, match="config must be an activation_design.Config"):
        activation_design.run(tmp_path / "never", config={"depth": 8})
    assert not (tmp_path / "never").exists()
