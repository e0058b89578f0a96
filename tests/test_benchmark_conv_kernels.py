"""The convolutional benchmark (``benchmarks/conv_kernels_vs_neural_tangents.py``) at a tiny size,
rmtjax side only (no neural-tangents): the driver, the fresh-process worker, the independent NumPy
reference and the report all run, so the script cannot rot unnoticed.

The full benchmark takes an hour and needs NT's environment; this runs the ``--smoke`` grid (a
Conv-ReLU-AvgPool-GlobalAvgPool net on three 8 x 8 digits, one timed call; about 15 s, most of it
JAX's import and compilation in the worker).
"""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("conv_bench", ROOT / "benchmarks" / "conv_kernels_vs_neural_tangents.py")
conv_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv_bench)


def test_smoke_run_rmtjax_only(tmp_path):
    assert conv_bench.main(["--smoke", "--only-rmtjax", "--out", str(tmp_path)]) == 0
    recs = [json.loads(line) for line in (tmp_path / "conv_kernels_vs_nt.jsonl").read_text().splitlines()]
    (rec,) = recs
    assert rec["ok"], rec.get("error")
    assert rec["variant"] == "rmtjax" and rec["shape"] == [3, 8, 8, 1] and rec["finite"]
    assert rec["median_s"] > 0 and rec["compile_s"] > 0 and rec["peak_rss_mib"] >= rec["import_rss_mib"] > 0
    # against the independent NumPy recursion: the diagonal (measured 2e-16) and the three pairs
    ref = rec["reference"]
    assert ref["images"] == 3 and len(ref["pairs"]) == 3
    assert max(ref["nngp"], ref["ntk"]) < 1e-12, ref
    assert max(ref["nngp_offdiag"], ref["ntk_offdiag"]) < 1e-10, ref
    md = (tmp_path / "conv_kernels_vs_nt.md").read_text()
    assert "## smoke on digits8 (8 x 8)" in md and "| 3 |" in md
    doc = json.loads((tmp_path / "conv_kernels_vs_nt.json").read_text())
    assert doc["summary"][0]["rmtjax_ok"]


def test_network_lists_match_neural_tangents_myrtle():
    """Myrtle-5 as NT's notebook builds it for 32 x 32 inputs (layer_factor [2, 1, 1], three final
    pools) and the 8 x 8 variant of conv_architectures.json's ``myrtle5`` spec (one final pool)."""
    names = [name for name, _, _ in conv_bench.nt_conv_bench.layers("myrtle5", 32)]
    assert names == ["Conv", "Relu", "Conv", "Relu", "AvgPool", "Conv", "Relu", "AvgPool", "Conv", "Relu",
                     "AvgPool", "AvgPool", "AvgPool", "Flatten", "Dense"]
    spec = next(s for s in json.loads((ROOT / "benchmarks" / "reference" / "conv_architectures.json").read_text())
                if s["name"] == "myrtle5")
    assert [name for name, _, _ in conv_bench.nt_conv_bench.layers("myrtle5", 8)] == [l["type"] for l in spec["layers"]]
    cntk = [name for name, _, _ in conv_bench.nt_conv_bench.layers("cntk10_gap", 28)]
    assert cntk == ["Conv", "Relu"] * 10 + ["GlobalAvgPool", "Dense"]
