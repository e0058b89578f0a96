"""`rmtjax reproduce fan-wang --quick` (run directly until the lead registers it) writes its outputs
and reproduces the result."""

import json

import numpy as np

from rmtjax.experiments.fan_wang import run


def test_reproduce_fan_wang_quick(tmp_path):
    report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["checks"]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["ok"] and saved["summary"] == report["summary"]
    assert (tmp_path / "fan_wang.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
    # every kernel (CK of each layer, NTK, NTK given |w|^2/d_L) was checked three ways, and the theory
    # densities are normalized
    assert len(report["spectra"]) == 5
    for s in report["spectra"]:
        assert set(report["checks"][s["name"]]) == {"histogram", "moments", "edge"}
        assert abs(s["histogram"]["mass_in_range"] - 1) < 1e-2  # trapezoidal rule at sqrt edges
        assert np.all(np.isfinite(s["density"]))
    # the largest stable learning rate decreases as the layers get narrower (gamma = n/d grows)
    lr = [row["lr_theory"] for row in report["learning_rate_sweep"]]
    assert all(a > b for a, b in zip(lr, lr[1:]))
