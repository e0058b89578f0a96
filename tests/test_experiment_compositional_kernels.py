"""The Liang & Tran-Bach reproduction (quick mode, float64 and float32) runs, writes its outputs and
reproduces the result; its headline and its table give the same (exact) mu."""

import json
import math

import jax
import numpy as np
import pytest

from rmtjax import activations as A
from rmtjax.experiments import compositional_kernels
from rmtjax.experiments.compositional_kernels import run
from rmtjax.gaussian import gaussian_expectations

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("liang_tranbach")
    return out, run(out, quick=True, progress=False)


@pytest.mark.slow
def test_reproduce_liang_tranbach_quick(quick):
    out, report = quick
    assert report["ok"], report["checks"]
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["ok"] and on_disk["summary"] == report["summary"]
    for png in ("compositional_kernels.png", "mnist_random_features.png"):
        assert (out / png).read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "Reproduced" in md and "[" not in md.split("## Random features")[1].split("![")[0]  # no raw lists
    # the table: ReLU is critical (mu = 1, a_1^2 = 1/2); the centered ReLU mu = pi / (pi - 1)
    relu = {row["centered"]: row for row in report["table"] if row["activation"] == "ReLU"}
    assert abs(relu[False]["mu"] - 1.0) < 1e-12 and abs(relu[False]["a1_squared"] - 0.5) < 1e-12
    assert abs(relu[True]["mu"] - math.pi / (math.pi - 1)) < 1e-10
    # random features classify MNIST well above chance even in quick mode
    assert max(max(v["accuracy"]) for v in report["mnist"]["results"].values()) > 0.6


@pytest.mark.slow
def test_headline_mu_is_the_exact_one_of_the_table(quick):
    """Issue 12: the headline said centered ReLU mu = 1.4207 (the order-64 truncation, whose tail
    a_k^2 ~ k^-5/2 makes sum k a_k^2 converge like k^-1/2) where the table gives the exact 1.4669.
    Independent check: mu = E[relu'(z)^2] / Var relu(z) = (1/2) / (1/2 - 1/(2 pi)) = pi/(pi - 1),
    here from Gaussian expectations, not from the Hermite module."""
    _, report = quick
    one = np.ones(())
    e = gaussian_expectations(A.Relu(), one, one, one)
    mean = 1 / math.sqrt(2 * math.pi)  # E relu(z)
    mu = float(e.kdot) / (float(e.k) - mean**2)
    assert mu == pytest.approx(math.pi / (math.pi - 1), rel=1e-12)
    row = next(t for t in report["table"] if t["activation"] == "ReLU" and t["centered"])
    assert f"centered ReLU mu = {mu:.4f} (exact" in report["summary"] and f"{row['mu']:.4f}" == f"{mu:.4f}"
    assert abs(row["mu_truncated"] - 1.4207) < 1e-3 and f"{row['mu_truncated']:.4f} at order 64" in report["summary"]


@pytest.mark.slow
def test_reproduce_liang_tranbach_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["checks"]
    p = json.loads((tmp_path / "report.json").read_text())["precision"]
    assert p["dtype"] == "float32"
    assert p["quantities"]["mu, ReLU centered"]["float64"] == pytest.approx(math.pi / (math.pi - 1), rel=1e-12)
    assert p["max_rel_diff"] < 1e-3, p


def test_bad_sizes_are_clear_errors():
    import dataclasses

    for field, value, message in [("features", (1000,), "features must hold at least 2 values"),
                                  ("memorization_n", (), "memorization_n must hold at least 1 value"),
                                  ("mnist_train", 4900, r"mnist_train \+ mnist_test must be <= 5000"),
                                  ("mnist_activations", ("relu",), "mnist_activations must be")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(compositional_kernels.QUICK, **{field: value})
