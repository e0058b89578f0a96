"""The Liang & Tran-Bach reproduction runs in quick mode, writes its outputs and reproduces the result."""

import json

from rmtjax.experiments.compositional_kernels import run


def test_reproduce_liang_tranbach_quick(tmp_path):
    report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["checks"]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["ok"] and on_disk["summary"] == report["summary"]
    for png in ("compositional_kernels.png", "mnist_random_features.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
    # the table: ReLU is critical (mu = 1, a_1^2 = 1/2); the centered ReLU mu = pi / (pi - 1)
    relu = {row["centered"]: row for row in report["table"] if row["activation"] == "ReLU"}
    assert abs(relu[False]["mu"] - 1.0) < 1e-12 and abs(relu[False]["a1_squared"] - 0.5) < 1e-12
    assert abs(relu[True]["mu"] - 3.141592653589793 / (3.141592653589793 - 1)) < 1e-10
    # random features classify MNIST well above chance even in quick mode
    assert max(max(v["accuracy"]) for v in report["mnist"]["results"].values()) > 0.6
