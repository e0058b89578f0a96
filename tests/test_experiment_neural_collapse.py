"""The neural-collapse reproduction (quick mode) runs, writes its outputs, reproduces the result and
resumes from its partial results; the classifier it trains has the interface the metrics need."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax.experiments.neural_collapse import run
from rmtjax.finite import Classifier


def test_reproduce_neural_collapse_quick(tmp_path):
    report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["summary"]
    assert json.loads((tmp_path / "report.json").read_text())["ok"]
    assert (tmp_path / "neural_collapse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
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
    # a second call resumes from the saved partial result instead of training again
    again = run(tmp_path, quick=True, progress=False)
    assert again["results"][0]["nc1"] == res["nc1"] and again["seconds"] < report["seconds"]


def test_classifier_readout_reproduces_the_logits():
    net = Classifier(5, 3, width=7, depth=2, seed=1, dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5)))
    W, b = net.readout()
    np.testing.assert_allclose(np.asarray(net.features(x) @ W.T + b[None, :]), np.asarray(net(x)), atol=1e-13)
    assert float(jnp.min(net.features(x))) >= 0.0  # post-ReLU
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        Classifier(5, 3, width=7, depth=0)
