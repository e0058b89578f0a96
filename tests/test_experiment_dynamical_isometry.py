"""The dynamical-isometry reproduction (quick mode) runs, writes its outputs and reproduces the result."""

import json

from rmtjax.experiments.dynamical_isometry import run


def test_reproduce_dynamical_isometry_quick(tmp_path):
    report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["summary"]
    assert (tmp_path / "dynamical_isometry.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "report.json").read_text())
    relu = {(r["weights"], r["depth"]): r for r in saved["results"] if r["name"] == "relu"}
    # Pennington et al. 2017: at chi = 1, Var(s^2) = 2L (Gaussian) and L (orthogonal) for ReLU
    for (weights, depth), r in relu.items():
        assert abs(r["theory"]["variance"] - (2 if weights == "gaussian" else 1) * depth) < 1e-8
        assert abs(r["theory"]["zero_mass"] - 0.5) < 1e-12
