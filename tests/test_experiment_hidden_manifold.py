"""`rmtjax reproduce hidden-manifold` (quick, float64 and float32): ODE vs simulation on generated
data, Gaussian equivalence, resume."""

import json

import jax
import pytest

from rmtjax.experiments import hidden_manifold
from rmtjax.experiments.hidden_manifold import run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("hidden_manifold")
    return out, run(out, quick=True, progress=False)


@pytest.mark.slow
def test_reproduce_hidden_manifold_quick(quick):
    out, report = quick
    assert report["ok"], report["summary"]
    assert (out / "hidden_manifold.png").read_bytes()[:8] == PNG
    assert "Reproduced" in (out / "report.md").read_text()
    saved = json.loads((out / "report.json").read_text())
    c = saved["checks"]
    # the ODE follows the simulated seeds within their fluctuation, and the fields get more Gaussian with N
    assert c["max_gap_over_tolerance"] <= 1.0 and c["final_relative_gap"] < 0.05
    assert c["final_eps_g_ode"] < 0.5 * saved["ode"]["eps_g"][0]
    d = saved["deep"]
    assert [x["N"] for x in d] == list(hidden_manifold.QUICK.deep_N) and d[-1]["distance"] < d[0]["distance"]
    assert all(x["covariance_rel_error"] < 0.05 for x in d)


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(quick):
    out, report = quick
    again = run(out, quick=True, progress=False)
    assert again["resume"] == {"file": "resume.json", "status": "resumed",
                               "resumed_entries": report["config"]["seeds"] + 1 + len(report["deep"]), "notice": None}
    assert again["simulations"] == report["simulations"] and again["ode"]["eps_g"] == report["ode"]["eps_g"]


@pytest.mark.slow
def test_reproduce_hidden_manifold_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["summary"]
    p = report["precision"]
    assert p["dtype"] == "float32" and list(p["quantities"]) == ["ODE eps_g"]
    assert p["max_rel_diff"] < 1e-5, p  # measured 8.5e-7 (moments of the generator and ODE, float32 vs float64)


def test_bad_sizes_are_clear_errors():
    import dataclasses

    for field, value, message in [("deep_N", (64,), "deep_N must hold at least 2 values"),
                                  ("seeds", 1, "seeds must be an integer >= 2"),
                                  ("eta", 0.0, "eta must be a finite number > 0")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(hidden_manifold.QUICK, **{field: value})
