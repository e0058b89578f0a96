"""The ``rmtjax`` command: ``reproduce kernels --quick`` end to end, ``--list``, usage errors,
resume, and the flags' plumbing (checked with a stand-in experiment)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from rmtjax.cli import main
from rmtjax.experiments import EXPERIMENTS, Experiment
from rmtjax.experiments import kernels as kernels_experiment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``rmtjax reproduce kernels --quick`` run shared by the tests below (~15 s)."""
    out = tmp_path_factory.mktemp("kernels_quick")
    code = main(["reproduce", "kernels", "--quick", "--out", str(out), "--no-progress"])
    return out, code


def test_quick_run_writes_figure_and_reports(quick_run):
    out, code = quick_run
    assert code == 0
    for name in ("kernels.png", "report.json", "report.md", "steps.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "kernels.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "report.md").read_text()
    assert "](kernels.png)" in md and "| Relu | 1 |" in md


def test_quick_run_agrees_with_theory_within_standard_errors(quick_run):
    out, _ = quick_run
    report = json.loads((out / "report.json").read_text())
    cfg = report["config"]
    assert report["ok"] and cfg["quick"] and cfg["dtype"] == "float64"
    assert len(report["steps"]) == len(cfg["activations"]) * len(cfg["depths"])
    tol = cfg["tolerance_se"]
    for step in report["steps"]:
        for k in ("nngp", "ntk"):
            s = step[k]
            assert s["noise_floor"] > 0
            assert s["rel_error"] <= tol * s["noise_floor"], (step["activation"], step["depth"], k, s["ratio"])
            assert s["agrees"]
            n = cfg["n_points"]
            assert np.shape(s["mc_mean"]) == np.shape(s["theory"]) == (n, n)
    assert report["timing"]["computed_steps"] == len(report["steps"])
    assert report["versions"]["jax"] == jax.__version__


def test_rerun_skips_completed_steps(quick_run):
    out, _ = quick_run
    first = json.loads((out / "report.json").read_text())
    lines = (out / "steps.jsonl").read_text().splitlines()
    assert main(["reproduce", "kernels", "--quick", "--out", str(out), "--no-progress"]) == 0
    second = json.loads((out / "report.json").read_text())
    assert (out / "steps.jsonl").read_text().splitlines() == lines  # nothing recomputed or appended
    assert second["timing"]["resumed_steps"] == len(second["steps"])
    assert second["timing"]["computed_steps"] == 0
    assert all(s["resumed"] for s in second["steps"])
    assert [s["ntk"]["rel_error"] for s in second["steps"]] == [s["ntk"]["rel_error"] for s in first["steps"]]


TINY = kernels_experiment.Config(n_points=6, dim=4, width=16, depths=(1, 2), activations=("relu",),
                                 n_seeds_nngp=16, n_seeds_ntk=4)


def test_partial_resume_recomputes_only_missing_steps_deterministically(tmp_path):
    full = kernels_experiment.run(tmp_path / "a", config=TINY, progress=False)
    lines = (tmp_path / "a" / "steps.jsonl").read_text().splitlines()
    assert len(lines) == 2
    partial = tmp_path / "b"
    partial.mkdir()
    # One completed step, a line cut short by an interrupted run, a step of another configuration.
    other = json.loads(lines[1]) | {"config_hash": "another-config"}
    (partial / "steps.jsonl").write_text("\n".join([lines[0], lines[1][:50], json.dumps(other)]) + "\n")
    resumed = kernels_experiment.run(partial, config=TINY, progress=False)
    assert resumed["timing"]["resumed_steps"] == 1 and resumed["timing"]["computed_steps"] == 1
    for a, b in zip(full["steps"], resumed["steps"], strict=True):
        assert (a["activation"], a["depth"]) == (b["activation"], b["depth"])
        np.testing.assert_allclose(b["nngp"]["mc_mean"], a["nngp"]["mc_mean"], rtol=1e-12)
        np.testing.assert_allclose(b["ntk"]["mc_mean"], a["ntk"]["mc_mean"], rtol=1e-12)
    # Another configuration (here: another width or seed) reuses none of these steps.
    for changed in (dataclasses.replace(TINY, width=8), dataclasses.replace(TINY, seed=1)):
        assert changed.fingerprint() != TINY.fingerprint()
        assert not kernels_experiment._load_steps(tmp_path / "a" / "steps.jsonl", changed.fingerprint())


def test_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name, exp in EXPERIMENTS.items():
        assert name in out and exp.description in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["reproduce"], "give an experiment NAME or --list"),
        (["reproduce", "kernels", "--seed", "-1"], "--seed must be a non-negative integer"),
        (["reproduce", "kernels", "--no-such-flag"], "unrecognized arguments"),
        (["no-such-command"], "invalid choice"),
        ([], "usage: rmtjax"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_flags_reach_the_experiment(tmp_path, monkeypatch):
    """--out, --seed, --quick, --float32 are passed on; float64 is restored afterwards."""
    seen = {}

    def fake_run(out_dir, *, quick, seed, progress):
        seen.update(out=Path(out_dir), quick=quick, seed=seed, x64=jax.config.jax_enable_x64)
        return {"ok": seed != 13, "summary": "fake"}

    module = types.ModuleType("rmtjax_fake_experiment")
    module.run = fake_run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(EXPERIMENTS, "fake", Experiment("a stand-in", f"{module.__name__}:run"))
    assert main(["reproduce", "fake", "--quick", "--seed", "7", "--float32", "--out", str(tmp_path)]) == 0
    assert seen == {"out": tmp_path, "quick": True, "seed": 7, "x64": False}
    assert jax.config.jax_enable_x64
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "fake", "--seed", "13"]) == 1  # ran, did not reproduce
    assert seen == {"out": Path("out") / "fake", "quick": False, "seed": 13, "x64": True}


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("rmtjax")
    if not script.exists():
        pytest.skip("the rmtjax console script is not installed next to this interpreter")
    res = subprocess.run([str(script), "reproduce", "--list"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "kernels" in res.stdout
    res = subprocess.run([str(script), "reproduce", "nope"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown experiment" in res.stderr
