"""`rmtjax reproduce conv-kernel-regression` at a reduced size (float64 and float32): runs, writes its
outputs, its accuracies are sane (in [0, 1], kernel regression above chance by five standard errors),
the finite CNNs approach the linearised NTK as the channels grow, and a rerun resumes."""

import dataclasses
import json
import math
import re

import jax
import pytest

from rmtjax.experiments import conv_kernel_regression as ckr
from rmtjax.experiments._output import num

PNG = b"\x89PNG\r\n\x1a\n"

# XLA's optimizations (tests/conftest.py): the run time of the pooling kernels dominates, not their
# compile. Measured on the 2-core machine, the float64 TEST run alone: 63.5 s at -O0 (41.8 s of it the
# Myrtle-5 kernels), 41.2 s optimized (compile 8.4 -> 21.2 s, Myrtle-5 21.1 s); 26.1 s optimized with the
# image engine's equal-sized tiles (Myrtle-5 11.7 s). The float32 TEST run (float32 run and its float64
# recomputation): 47.5 s optimized, 28 s of it compiling (16 kernel programs).
XLA_OPTIMIZED = True

# Smaller than QUICK: every architecture and section runs, on 100 test points and 40-150 training points.
TEST = dataclasses.replace(ckr.QUICK, n_test=100, n_train_fc=150, n_train_flat=80, n_train_pool=40, widths=(8, 64),
                           seeds=(0, 1), steps=20)


def _run(out, **kw):
    return ckr.run(out, config=TEST, progress=False, **kw)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv_kernel_regression")
    return out, _run(out)


@pytest.mark.slow
def test_reproduce_conv_kernel_regression_small(small):
    out, report = small
    assert report["ok"], report["checks"]
    assert (out / "conv_kernel_regression.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "Reproduced" in md and "Myrtle-5 (8x8)" in md
    assert re.search(r"\d\.\d{9,}", md) is None, re.search(r"\d\.\d{9,}", md)
    assert f"finite-CNN gap ~ width^{num(report['checks']['gap_slope'], 3)}" in md
    assert json.loads((out / "report.json").read_text())["ok"]
    kern = report["kernel"]
    assert {r["model"] for r in kern} == {m.name for m in ckr.models(TEST)}
    # every model meets at the pooling kernels' size; each at every grid size up to its own
    assert all(any(r["model"] == m.name and r["n_train"] == TEST.n_train_pool for r in kern) for m in ckr.models(TEST))
    for r in kern:
        assert r["n_test"] == TEST.n_test
        for g in ("nngp", "ntk"):
            p = r[g]["accuracy"]
            assert 0.0 <= p <= 1.0 and len(r[g]["correct"]) == TEST.n_test
            assert p == pytest.approx(r[g]["correct"].count("1") / TEST.n_test)
            se = math.sqrt(p * (1 - p) / TEST.n_test)
            assert p > ckr.CHANCE + 5 * se, (r["model"], r["n_train"], g, p)
            assert 0.0 < r[g]["mse"] < 0.2
    # paired differences are differences of the accuracies
    c = report["comparisons"][0]
    acc = {(r["model"], r["n_train"]): r[c["kernel"]]["accuracy"] for r in kern}
    assert c["difference"] == pytest.approx(acc[(c["conv"], c["n_train"])] - acc[(c["fc"], c["n_train"])])
    assert 0 < c["se"] < 0.2
    # finite CNNs: one record per width and seed; the gap to the linearised NTK shrinks with width
    fin = report["finite"]
    assert {(r["width"], r["seed"]) for r in fin} == {(w, s) for w in TEST.widths for s in TEST.seeds}
    bw = report["finite_by_width"]
    assert bw[-1]["relative_gap"] < bw[0]["relative_gap"]
    assert all(0.0 <= b["net_accuracy"] <= 1.0 for b in bw)


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(small):
    out, report = small
    before = (out / "resume.json").read_text()
    again = _run(out)
    assert (out / "resume.json").read_text() == before  # nothing recomputed or rewritten
    assert again["resume"]["status"] == "resumed" and again["checks"] == report["checks"]


@pytest.mark.slow
def test_reproduce_conv_kernel_regression_small_float32(tmp_path):
    with jax.enable_x64(False):
        report = _run(tmp_path)
    assert report["ok"], report["checks"]
    p = report["precision"]
    assert p["dtype"] == "float32" and len(p["quantities"]) == 2 * len(ckr.models(TEST))
    assert p["max_rel_diff"] < 1e-2, p  # measured 7.8e-4 (GAP CNTK NNGP predictions, max |diff| / max |f|)


def test_linearised_gd_is_gradient_descent_on_the_kernel():
    """The closed form of t steps equals t explicit steps of g <- g - eta/(nk) Theta (g - y) (train points)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((12, 5))
    theta = a @ a.T + 1e-3 * np.eye(12)
    y = rng.standard_normal((12, 3))
    eta = 0.9 * 12 * 3 / np.linalg.eigvalsh(theta)[-1]
    g = np.zeros_like(y)
    for _ in range(7):
        g = g - eta / 36 * theta @ (g - y)
    np.testing.assert_allclose(ckr.linearised_gd(theta, theta, y, eta, [7])[0], g, rtol=1e-10, atol=1e-12)


def test_bad_sizes_are_clear_errors():
    for field, value, message in [("widths", (64,), "widths must hold at least 2 values"),
                                  ("n_train_pool", 500, r"n_train_pool must be an integer in \[20, 200\]"),
                                  ("n_train_fc", 4950, r"n_train_fc must be an integer in \[20, 4900\]"),
                                  ("fc_depths", (), "fc_depths must hold at least 1 value")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(ckr.QUICK, **{field: value})
    with pytest.raises(ValueError, match="config must be a conv_kernel_regression.Config"):
        ckr.run("unused", config="quick")
