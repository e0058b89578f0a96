"""`rmtjax reproduce width-sweep --quick` (float64 and float32) runs one resumable sweep of padded ReLU networks,
writes its outputs, and its numbers agree with independent computations: the limits recomputed depth by depth,
the kernels of one network recomputed from its unpadded Flax twin, the mean kernel at the largest width within a
few standard errors of the limit, every slope near -1/2; bad sizes are clear errors."""

import dataclasses
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax import sweep
from rmtjax.activations import Relu
from rmtjax.cli import main
from rmtjax.experiments import width_sweep

PNG = b"\x89PNG\r\n\x1a\n"
# XLA's optimizations on: the sweep's run time is the padded networks' random draws (threefry), which -O0 leaves
# unvectorised (measured, a chunk of 40 quick networks: 2.5 s at -O0, 1.2 s optimized).
XLA_OPTIMIZED = True


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("width_sweep")
    # exit status 0 (reproduced) or 1 (ran, a slope outside the band): both wrote a report
    assert main(["reproduce", "width-sweep", "--quick", "--out", str(out), "--no-progress"]) in (0, 1)
    return out, json.loads((out / "report.json").read_text())


def _limits(report):
    """The infinite-width kernels recomputed independently of `rmtjax.kernels`: the ReLU arc-cosine recursion
    (Cho & Saul 2009; NTK: Jacot et al. 2018, Thm. 1) in NumPy, NTK parameterization, depth by depth."""
    x = np.asarray(report["grid"]["inputs"], np.float64)
    w2, b2 = 2.0, 0.1
    nngp = w2 * (x @ x.T) / x.shape[1] + b2
    ntk = nngp.copy()
    out = {"nngp": [], "ntk": []}
    for depth in range(1, max(report["grid"]["depth"]) + 1):
        q = np.sqrt(np.diag(nngp))
        cos = np.clip(nngp / np.outer(q, q), -1.0, 1.0)
        theta = np.arccos(cos)
        np.fill_diagonal(theta, 0.0)
        nngp_next = w2 * np.outer(q, q) * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi) + b2
        ntk = nngp_next + w2 * ntk * (np.pi - theta) / (2 * np.pi)
        nngp = nngp_next
        if depth in report["grid"]["depth"]:
            out["nngp"].append(nngp)
            out["ntk"].append(ntk)
    return {k: np.stack(v) for k, v in out.items()}


def _check_outputs(out, report, dtype):
    cfg = width_sweep.QUICK
    assert report["quick"] and report["dtype"] == dtype and report["theory_dtype"] == "float64"
    assert (out / "width_sweep.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert ("Reproduced" in md or "NOT reproduced" in md) and "[]" not in md and "Python loop" in md
    ds = sweep.open_store(out / width_sweep.STORE).load()  # the sweep's store, kept for a resume
    shape = (len(cfg.widths), len(cfg.depths), cfg.seeds, cfg.n_inputs, cfg.n_inputs)
    emp = {k: np.asarray(ds[k].values, np.float64) for k in width_sweep.KINDS}
    assert all(e.shape == shape and np.all(np.isfinite(e)) for e in emp.values())
    assert ds.ntk.dims == ("width", "depth", "seed", "x1", "x2") and ds.width.values.tolist() == list(cfg.widths)
    lim = _limits(report)
    for kind in width_sweep.KINDS:
        th = lim[kind]
        np.testing.assert_allclose(report["theory"][kind], th, rtol=1e-12)  # float64 in both modes (measured 1e-15)
        s = report["statistics"][kind]
        # the report's deviations are those of the stored kernels against the recomputed limits
        r = np.sqrt(((emp[kind] - th[None, :, None]) ** 2).sum((-2, -1)) / (th**2).sum((-2, -1))[None, :, None])
        np.testing.assert_allclose(s["relative_deviation"], r, rtol=1e-9)
        rms = np.sqrt((r**2).mean(-1))
        np.testing.assert_allclose(s["rms_relative_deviation"], rms, rtol=1e-9)
        # the deviation falls with the width: the largest width is below the smallest at every depth
        assert np.all(rms[-1] < rms[0]), rms
        for j, f in enumerate(s["fits"]):
            # the slope near -1/2 within its measured standard error band (3 SE + the quick allowance 0.1)
            assert abs(f["slope"] + 0.5) <= 3 * f["se"] + cfg.slope_tolerance, f
            assert 0 < f["se"] < 0.25, f
            # an unweighted fit of the same points is within 3 SE of the weighted one
            plain = np.polyfit(np.log(cfg.widths), np.log(rms[:, j]), 1)[0]
            assert abs(plain - f["slope"]) < 3 * f["se"], (plain, f)
        # at the largest width the mean over the seeds is within a few standard errors of the limit:
        # ||mean - K|| / ||K|| against its standard error rms / sqrt(seeds) (measured at most 2.0 over depths)
        last = emp[kind][-1]
        bias = np.sqrt(((last.mean(1) - th) ** 2).sum((-2, -1)) / (th**2).sum((-2, -1)))
        assert np.all(bias <= 3.5 * rms[-1] / np.sqrt(cfg.seeds)), (kind, bias, rms[-1])
        np.testing.assert_allclose(s["largest_width_mean"], last.mean(1), rtol=1e-9)
    t = report["timings"]
    assert t["networks"] == math.prod(shape[:3]) and t["sweep_seconds"] > 0
    assert t["loop"]["networks"] == 2 * cfg.loop_seeds and t["loop"]["programs_compiled"] == 2
    assert report["checks"]["kernels_finite"]


@pytest.mark.slow
def test_outputs_and_numbers(quick):
    out, report = quick
    _check_outputs(out, report, "float64")
    assert report["precision"] == {"dtype": "float64"}


@pytest.mark.slow
def test_one_network_matches_its_unpadded_flax_twin(quick):
    """The sweep's kernels of one padded network equal those of the unpadded Flax MLP it stands for
    (`PaddedMLP.to_mlp`), computed by `rmtjax.finite.empirical_ntk` and the MLP's own features."""
    from rmtjax.finite import PaddedMLP, empirical_ntk, functional

    out, report = quick
    ds = sweep.open_store(out / width_sweep.STORE)
    x = jnp.asarray(report["grid"]["inputs"], jnp.float64)
    width, depth, seed = 32, 3, report["grid"]["seed"][1]
    net = PaddedMLP(width, depth, math.sqrt(2.0), math.sqrt(0.1), Relu(), in_features=x.shape[1],
                    max_width=max(width_sweep.QUICK.widths), max_depth=max(width_sweep.QUICK.depths))
    mlp = net.to_mlp(net.init(width_sweep._key(seed, width, depth)))
    ntk = empirical_ntk(x, None, *functional(mlp), implementation="jacobian")
    h = mlp.features(x)
    nngp = 2.0 / width * (h @ h.T) + 0.1
    point = {"width": width, "depth": depth, "seed": seed}
    np.testing.assert_allclose(ds.ntk.sel(point).values, ntk, rtol=1e-10)
    np.testing.assert_allclose(ds.nngp.sel(point).values, nngp, rtol=1e-10)


@pytest.mark.slow
def test_rerun_resumes_from_the_store(quick):
    out, report = quick
    again = width_sweep.run(out, quick=True, progress=False)  # every chunk is in the store: nothing is computed
    assert again["statistics"]["ntk"]["relative_deviation"] == report["statistics"]["ntk"]["relative_deviation"]
    assert again["timings"]["networks_computed_this_run"] == 0 and len(again["timings"]["runs"]) == 2
    assert again["timings"]["sweep_seconds"] < report["timings"]["sweep_seconds"]
    other = dataclasses.replace(width_sweep.QUICK, widths=(16, 32, 64, 128))
    with pytest.raises(ValueError, match="written by another grid"):  # the runner refuses to mix two grids
        width_sweep.run(out, config=other, progress=False)


@pytest.mark.slow
def test_reproduce_width_sweep_quick_float32(tmp_path):
    assert main(["reproduce", "width-sweep", "--quick", "--float32", "--out", str(tmp_path), "--no-progress"]) in (0, 1)
    report = json.loads((tmp_path / "report.json").read_text())
    _check_outputs(tmp_path, report, "float32")
    assert np.asarray(sweep.open_store(tmp_path / width_sweep.STORE).ntk.values).dtype == np.float32
    p = report["precision"]
    assert p["dtype"] == "float32" and set(p["quantities"]) == {"nngp", "ntk"}
    # the limits in float32 against float64, every depth to 10 (measured 2e-7 relative)
    assert p["max_rel_diff"] < 1e-5, p
    assert "## float32 accuracy" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("field, value, message", [
    ("widths", (16, 32), "widths must hold at least 3 values"),
    ("widths", (16, 64, 32), "widths must be strictly increasing"),
    ("widths", (1, 16, 32), r"widths\[0\] must be an integer >= 2, got 1"),
    ("depths", (2, 1), "depths must be strictly increasing"),
    ("seeds", 1, "seeds must be an integer >= 2, got 1"),
    ("n_inputs", 1.5, "n_inputs must be an integer >= 2"),
    ("slope_tolerance", -0.1, "slope_tolerance must be a finite number >= 0"),
    ("chunk_size", 0, "chunk_size must be an integer >= 1"),
])
def test_bad_sizes_are_clear_errors(field, value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(width_sweep.QUICK, **{field: value})
    with pytest.raises(ValueError, match="seed must be an integer in"):
        width_sweep.run(tmp_path / "never", seed=-1)
    with pytest.raises(ValueError, match="config must be a width_sweep.Config"):
        width_sweep.run(tmp_path / "never", config={"widths": (16, 32, 64)})
    assert not (tmp_path / "never").exists()
