"""`rmtjax.experiments.saad_solla` (quick): runs, writes its outputs and reproduces the plateau."""

import json

from rmtjax.experiments.saad_solla import run


def test_saad_solla_quick(tmp_path):
    report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["checks"]
    assert (tmp_path / "saad_solla.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["summary"] == report["summary"]
    p = report["plateau"]
    # Saad & Solla's symmetric plateau of K = M = 2 erf learning at eta = 0.5: an unstable saddle
    # whose height the simulation reaches within 10%
    assert 0.01 < p["fixed_point_eps_g"] < 0.02 and p["growth_rate"] > 0
    assert abs(p["sim_eps_g_at_t_plateau"] - p["fixed_point_eps_g"]) < 0.1 * p["fixed_point_eps_g"]
    assert abs(report["gap"]["slope"] + 0.5) < 0.15
    # the partial results are there, and a rerun resumes from them
    assert (tmp_path / "partial.json").exists()
