"""`rmtjax reproduce hidden-manifold` (quick): ODE vs simulation on generated data, Gaussian equivalence."""

import json

from rmtjax.experiments.hidden_manifold import run


def test_reproduce_hidden_manifold_quick(tmp_path):
    report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["summary"]
    assert (tmp_path / "hidden_manifold.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "report.json").read_text())
    c = saved["checks"]
    # the ODE follows the simulated seeds within their fluctuation, and the fields get more Gaussian with N
    assert c["max_gap_over_tolerance"] <= 1.0 and c["final_relative_gap"] < 0.05
    assert c["final_eps_g_ode"] < 0.5 * saved["ode"]["eps_g"][0]
    d = saved["deep"]
    assert [x["N"] for x in d] == [16, 64] and d[1]["distance"] < d[0]["distance"]
    assert all(x["covariance_rel_error"] < 0.05 for x in d)
    # a second run resumes from partial.json without recomputing
    again = run(tmp_path, quick=True, progress=False)
    assert again["simulations"] == saved["simulations"] and again["ode"]["eps_g"] == saved["ode"]["eps_g"]
