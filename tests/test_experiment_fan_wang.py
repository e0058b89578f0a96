"""`rmtjax reproduce fan-wang --quick` (float64 and float32) writes its outputs and reproduces the result."""

import json

import jax
import numpy as np
import pytest

from rmtjax.experiments import fan_wang
from rmtjax.experiments.fan_wang import run

# XLA's default optimizations (conftest.py): this reproduction's run time is long elementwise loops,
# which XLA at -O0 runs 1.1-2x slower than it saves in compiling.
XLA_OPTIMIZED = True

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("fan_wang")
    return out, run(out, quick=True, progress=False)


@pytest.mark.slow
def test_reproduce_fan_wang_quick(quick):
    out, report = quick
    assert report["ok"], report["checks"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["ok"] and saved["summary"] == report["summary"]
    assert (out / "fan_wang.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "Reproduced" in md and "[" not in md.split("![")[0]  # no raw Python lists
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


@pytest.mark.slow
def test_reproduce_fan_wang_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["checks"]
    q = report["precision"]["quantities"]
    assert report["precision"]["dtype"] == "float32" and "NTK edge" in q
    # measured (float32 vs float64, same inputs, quick n = 120): edges <= 1.2e-6, 2/lambda_max 1.2e-6, moments
    # up to 7.7e-4 (CK layer 3), densities up to 6.4% of their maximum (CK layer 3, at its steep lower edge);
    # at n = 200: 1.2e-6, 1.1e-6, 4.3e-4, 7%
    for name, v in q.items():
        bound = {"edge": 1e-5, "lambda_max": 1e-5, "moments 1-3": 5e-3, "density": 0.25}[
            next(k for k in ("edge", "lambda_max", "moments 1-3", "density") if name.endswith(k))]
        assert v["max_rel_diff"] < bound, (name, v)


def test_bad_sizes_are_clear_errors():
    import dataclasses

    for field, value, message in [("widths", (), "widths must be a non-empty tuple"),
                                  ("sweep", (), "sweep must hold at least 1 value"),
                                  ("sweep", (2.0, 0.5), "sweep must be strictly increasing"),
                                  ("seeds", 1, "seeds must be an integer >= 2")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(fan_wang.QUICK, **{field: value})
