"""`rmtjax reproduce meanfield --quick` (float64 and float32) runs, writes its outputs and reproduces
the result; bad sizes are clear errors."""

import json

import numpy as np
import pytest

from rmtjax.cli import main
from rmtjax.experiments import meanfield

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("meanfield")
    assert main(["reproduce", "meanfield", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_reproduce_meanfield_quick(quick):
    out, report = quick
    assert report["ok"] and report["quick"] and report["dtype"] == "float64"
    assert (out / "meanfield.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "Reproduced" in md and "[]" not in md  # no empty Python list in the prose
    # the vmapped grid and the independent root solve agree on the phase boundary
    w2 = report["grid"]["sigma_w2"]
    chi = report["grid"]["chi_1"]
    crit0 = report["edge_of_chaos"]["sigma_w2"][0]
    first_chaotic = next(w for w, row in zip(w2, chi) if row[0] > 1)
    assert first_chaotic >= crit0 and first_chaotic - crit0 <= w2[1] - w2[0]
    # Schoenholz et al.: at the critical point chi_1 = 1 (tanh, sigma_b^2 = 0.05: 1.7610)
    assert abs(report["depth_scales"]["critical_sigma_w2"] - 1.76) < 0.01
    assert report["precision"] == {"dtype": "float64"}


@pytest.mark.slow
def test_markdown_lists_the_points_that_did_not_converge(quick):
    _, report = quick
    report = json.loads(json.dumps(report))
    md = meanfield._markdown(report)
    assert "Every fixed point of the grid converged." in md or "did not converge" in md
    report["checks"]["phase_diagram_not_converged"] = [[1.0, 0.0, 0.5], [1.75, 0.05, 1.0000000000000002]]
    md = meanfield._markdown(report)
    assert "The 2 points (sigma_w^2, sigma_b^2, chi_1) = (1, 0, 0.5); (1.75, 0.05, 1) have no converged" in md


@pytest.mark.slow
def test_reproduce_meanfield_quick_float32(tmp_path):
    """The reproducer of issue 12: `rmtjax reproduce meanfield --quick --float32` failed."""
    assert main(["reproduce", "meanfield", "--quick", "--float32", "--out", str(tmp_path), "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["dtype"] == "float32"
    p = report["precision"]
    assert p["dtype"] == "float32" and set(p["quantities"]) == {
        "critical sigma_w^2", "edge of chaos curve", "chi_1 on the grid", "xi_c near criticality", "xi_c slope",
        "q* of the networks"}
    assert p["quantities"]["critical sigma_w^2"]["float64"] == pytest.approx(1.76096, abs=1e-4)
    # measured: 1.3e-5 (xi_c at 1 - eps = 0.003 below the critical point, where xi_c ~ 900), the others
    # 5e-7 to 3e-6
    assert p["max_rel_diff"] < 1e-4, p
    assert p["quantities"]["chi_1 on the grid"]["max_rel_diff"] < 1e-5, p
    assert "## float32 accuracy" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("field, value, message", [
    ("n_sigma_w2", 1, "n_sigma_w2 must be an integer >= 2, got 1"),
    ("seeds", 1, "seeds must be an integer >= 2"),
    ("width", 10.5, "width must be an integer >= 2, got 10.5"),
])
def test_bad_sizes_are_clear_errors(field, value, message, tmp_path):
    import dataclasses

    with pytest.raises(ValueError, match=message):
        dataclasses.replace(meanfield.QUICK, **{field: value})
    with pytest.raises(ValueError, match="seed must be an integer in"):
        meanfield.run(tmp_path / "never", seed=-1)
    assert not (tmp_path / "never").exists()
    assert np.isfinite(meanfield.B0)
