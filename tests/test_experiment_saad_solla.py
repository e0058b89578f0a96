"""`rmtjax reproduce saad-solla` (quick, float64 and float32): runs, writes its outputs and
reproduces the plateau; resumes from its resume file."""

import json

import jax
import pytest

from rmtjax.experiments import saad_solla
from rmtjax.experiments.saad_solla import run

# XLA's default optimizations (conftest.py): this reproduction's run time is long elementwise loops,
# which XLA at -O0 runs 1.1-2x slower than it saves in compiling.
XLA_OPTIMIZED = True

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("saad_solla")
    return out, run(out, quick=True, progress=False)


@pytest.mark.slow
def test_saad_solla_quick(quick):
    out, report = quick
    assert report["ok"], report["checks"]
    assert (out / "saad_solla.png").read_bytes()[:8] == PNG
    assert "Reproduced" in (out / "report.md").read_text()
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["summary"] == report["summary"]
    p = report["plateau"]
    # Saad & Solla's symmetric plateau of K = M = 2 erf learning at eta = 0.5: an unstable saddle
    # whose height the simulation reaches within 10%
    assert 0.01 < p["fixed_point_eps_g"] < 0.02 and p["growth_rate"] > 0
    assert abs(p["sim_eps_g_at_t_plateau"] - p["fixed_point_eps_g"]) < 0.1 * p["fixed_point_eps_g"]
    assert abs(report["gap"]["slope"] + 0.5) < report["checks"]["gap_slope_tolerance"]


@pytest.mark.slow
def test_rerun_resumes_the_gap_runs(quick):
    out, report = quick
    again = run(out, quick=True, progress=False)
    assert again["resume"]["status"] == "resumed"
    assert again["resume"]["resumed_entries"] == len(saad_solla.QUICK.gap_Ns)
    assert again["gap"] == report["gap"]


@pytest.mark.slow
def test_saad_solla_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["checks"]
    p = report["precision"]
    assert p["dtype"] == "float32" and "plateau eps_g (fixed point)" in p["quantities"]
    # measured: ODE curves 7.5e-5 (max |diff| / max eps_g; the escape from the unstable plateau
    # amplifies rounding), fixed point 1.9e-7, growth rate 9.7e-8
    assert p["max_rel_diff"] < 1e-3, p
    assert p["quantities"]["plateau eps_g (fixed point)"]["max_rel_diff"] < 1e-5, p


def test_bad_sizes_are_clear_errors():
    import dataclasses

    for field, value, message in [("gap_Ns", (100,), "gap_Ns must hold at least 2 values"),
                                  ("gap_Ns", (400, 100), "gap_Ns must be strictly increasing"),
                                  ("t_max", 5.0, "t_max must be a finite number > 10")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(saad_solla.QUICK, **{field: value})
