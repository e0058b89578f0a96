"""The fully-connected kernel benchmarks at a tiny size: ``benchmarks/kernels_gpu.py --small`` runs
whole on CPU (rates, bound, timing, the float64 NumPy reference, the report), and the lower-bound
columns of ``benchmarks/kernels_vs_neural_tangents.py`` are built from records as a run writes them.

Neither needs neural-tangents or an accelerator. The GPU script's grid at ``--small`` is n in
{256, 512}, depth 2, relu and erf, float32 and float64 (8 cells).
"""

import importlib.util
import json
import math
import pathlib

import pytest

# Times are compared with the measured bound: XLA's default optimization level, as the scripts run
# (the suite's -O0 leaves elementwise loops unvectorized; see tests/conftest.py).
XLA_OPTIMIZED = True

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gpu_bench = _load("kernels_gpu", "kernels_gpu.py")
nt_bench = _load("kernels_vs_neural_tangents", "kernels_vs_neural_tangents.py")
bounds = _load("_bounds", "_bounds.py")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    assert gpu_bench.main(["--small", "--out", str(out), "--repeats", "2"]) == 0
    (js,) = out.glob("kernels_gpu_*_small.json")
    return json.loads(js.read_text()), js.with_suffix(".md").read_text()


def test_small_run_records(small_run):
    import jax

    doc, md = small_run
    dev = jax.devices()[0]
    assert doc["device"]["kind"] == dev.device_kind and doc["device"]["platform"] == dev.platform
    assert doc["engine_default_tile"] == 128 and doc["bound_model"] == bounds.MODEL
    assert {(r["n"], r["dtype"]) for r in doc["rates"]} == {(n, d) for n in (256, 512) for d in ("float32", "float64")}
    for r in doc["rates"]:
        assert r["ok"] and r["aliased"], r
        assert r["matmul_flops_per_s"] > 0 and r["write_bytes_per_s"] > 0 and r["inplace_bytes_per_s"] > 0
    cells = doc["cells"]
    assert len(cells) == 8
    for c in cells:
        assert c["ok"], c.get("error")
        assert c["tile"] == 128 and c["depth"] == 2 and c["finite"] and c["check_rows"] == c["n"]
        assert c["bound_s"] > 0 and math.isclose(c["bound_s"], c["gram_s"] + c["write_s"] + c["recursion_s"])
        assert c["bound_s"] < c["median_s"], c  # a lower bound
        assert math.isclose(c["x_bound"], c["median_s"] / c["bound_s"])
    assert f"on {doc['device']['kind']}" in md and "| 512 | 2 | erf | float64 | 128 |" in md


def test_small_run_agrees_with_float64_reference(small_run):
    """rmtjax's kernels against the float64 NumPy recursion (closed-form duals), every entry."""
    for c in small_run[0]["cells"]:
        err = max(c["err_nngp"], c["err_ntk"])
        # measured on CPU: float64 1.2e-15, float32 4.2e-7 (both n, depth 2)
        assert err < (1e-12 if c["dtype"] == "float64" else 1e-5), c


def test_lower_bound_arithmetic():
    rates = {"matmul_flops_per_s": 1e11, "write_bytes_per_s": 2e10, "inplace_bytes_per_s": 4e10}
    b = bounds.lower_bound(rates, 1000, 784, 20, 8)
    assert math.isclose(b["gram_s"], 2 * 1000**2 * 784 / 1e11)
    assert math.isclose(b["write_s"], 2 * 1000**2 * 8 / 2e10)
    assert math.isclose(b["recursion_s"], 20 * 2 * 2 * 1000**2 * 8 / 4e10)
    assert math.isclose(b["bound_s"], b["gram_s"] + b["write_s"] + b["recursion_s"])


def test_nt_benchmark_report_has_bound_columns(tmp_path):
    """``report`` on records shaped as a run writes them: one bound record per (n, dtype) and the
    rmtjax / NT cells; the table gets ``bound`` and ``x bound``, the JSON the per-cell bounds."""
    rates = {"matmul_flops_per_s": 1e11, "write_bytes_per_s": 2e10, "inplace_bytes_per_s": 4e10,
             "loadavg_1min_before": nt_bench.SHARED_LOAD + 1}
    recs = []
    for j in nt_bench.make_jobs({"n": (4000,), "depth": (20,), "tanh_n": (), "tanh_depth": ()}, None):
        if j["section"] != "grid" and j["section"] != "bound":
            continue
        r = {**j, "ok": True, "loadavg_1min_before": nt_bench.SHARED_LOAD + 1}
        if j["section"] == "bound":
            r |= rates | {"kind": "bound"}
        else:
            r |= {"median_s": 0.5 if j["lib"] == "rmtjax" else 5.0, "peak_rss_mib": 900.0,
                  "import_rss_mib": 160.0, "working_rss_mib": 740.0, "version": "x", "jax": "y", "repeats": 3}
        recs.append(r)
    assert {j["lib"] for j in nt_bench.make_jobs({"n": (500,), "depth": (1,), "tanh_n": (), "tanh_depth": ()},
                                                 "rmtjax")} == {"rmtjax", "bound"}
    doc, md = nt_bench.report(recs, tmp_path, 0)
    expect = bounds.lower_bound(rates, 4000, 784, 20, 8)["bound_s"]
    row = next(b for b in doc["bounds"] if b["activation"] == "relu" and b["dtype"] == "float64")
    assert math.isclose(row["bound_s"], expect) and math.isclose(row["rmtjax_over_bound"], 0.5 / expect)
    assert math.isclose(row["speedup_vs_nt"], 10.0)
    assert "| bound | x bound |" in md and f"| {0.5 / expect:.1f}x |" in md
    assert "shared, loaded machine" in md and "ReLU within 2x of the lower bound" in md
