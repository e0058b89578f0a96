"""The neural-collapse reproduction (quick mode, float64 and float32) runs, writes its outputs,
reproduces the result and resumes from its resume file; the classifier it trains has the interface
the metrics need."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax.experiments import neural_collapse
from rmtjax.experiments.neural_collapse import run
from rmtjax.finite import Classifier

# XLA's default optimizations (conftest.py): this reproduction's run time is long elementwise loops,
# which XLA at -O0 runs 1.1-2x slower than it saves in compiling.
XLA_OPTIMIZED = True

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("neural_collapse")
    return out, run(out, quick=True, progress=False)


@pytest.mark.slow
def test_reproduce_neural_collapse_quick(quick):
    out, report = quick
    assert report["ok"], report["summary"]
    assert json.loads((out / "report.json").read_text())["ok"]
    assert (out / "neural_collapse.png").read_bytes()[:8] == PNG
    assert "Reproduced" in (out / "report.md").read_text()
    (res,) = report["results"]
    k = res["checks"]
    # the terminal phase: zero training error at its start and at the end (an instability of the
    # layer-normalized network may misclassify a few points in between; the report lists when)
    i0 = res["epoch"].index(k["tpt_start_epoch"])
    assert res["train_accuracy"][i0] == 1.0 and res["train_accuracy"][-1] == 1.0
    assert all(res["train_accuracy"][res["epoch"].index(e)] < 1 for e in k["tpt_epochs_with_training_errors"])
    assert k["nc1_drop"] >= 10 and res["nc1"][-1] < 0.01
    for name in ("equinorm_means", "equiangular_means", "max_angle_means", "self_duality"):
        assert k[f"{name}_final"] < k[f"{name}_at_tpt_start"], name
    # NC4: the classifier agrees with the nearest class centre on (almost) every test point too
    assert res["ncc_mismatch_test"][-1] <= 0.02


@pytest.mark.slow
def test_rerun_resumes_instead_of_training_again(quick):
    out, report = quick
    again = run(out, quick=True, progress=False)
    assert again["resume"]["status"] == "resumed" and again["results"] == report["results"]
    assert again["seconds"] < report["seconds"]


@pytest.mark.slow
def test_reproduce_neural_collapse_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["summary"]
    p = report["precision"]
    assert p["dtype"] == "float32" and "digits: nc1" in p["quantities"]
    # the same float32 features in float32 and float64 metrics: measured 2.4e-6 (equinorm of the means)
    assert p["max_rel_diff"] < 1e-4, p


def test_classifier_readout_reproduces_the_logits():
    net = Classifier(5, 3, width=7, depth=2, seed=1, dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5)))
    W, b = net.readout()
    np.testing.assert_allclose(np.asarray(net.features(x) @ W.T + b[None, :]), np.asarray(net(x)), atol=1e-13)
    assert float(jnp.min(net.features(x))) >= 0.0  # post-ReLU
    with pytest.raises(ValueError, match="depth must be an integer"):
        Classifier(5, 3, width=7, depth=0)


def test_bad_configurations_are_clear_errors(tmp_path):
    import dataclasses

    base = neural_collapse.QUICK[0]
    for field, value, message in [("batch_size", 5000, r"batch_size must be an integer in \[1, 1297\]"),
                                  ("record_every", 0, "record_every must be an integer"),
                                  ("name", "cifar", "name must be 'digits' or 'mnist'"),
                                  ("n_train", 1700, r"n_train \+ n_test must be <= 1797")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(base, **{field: value})
    with pytest.raises(ValueError, match="config must be a non-empty tuple"):
        run(tmp_path, config=())
