"""The ``rmtjax`` command: ``reproduce kernels --quick`` end to end (float64 and float32), ``--list``,
one-line usage errors, ``--out`` checked before computing, errors of a run as one line, resume
(partial, foreign, damaged), and the flags' plumbing (checked with stand-in experiments)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
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
    """One ``rmtjax reproduce kernels --quick`` run shared by the tests below."""
    out = tmp_path_factory.mktemp("kernels_quick")
    code = main(["reproduce", "kernels", "--quick", "--out", str(out), "--no-progress"])
    return out, code


@pytest.mark.slow
def test_quick_run_writes_figure_and_reports(quick_run):
    out, code = quick_run
    assert code == 0
    for name in ("kernels.png", "report.json", "report.md", "resume.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in out.iterdir()) == ["kernels.png", "report.json", "report.md", "resume.json"]
    assert (out / "kernels.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "report.md").read_text()
    assert "](kernels.png)" in md and "| Relu | 1 |" in md


@pytest.mark.slow
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
    assert report["precision"] == {"dtype": "float64"} and report["resume"]["status"] == "new"


@pytest.mark.slow
def test_rerun_skips_completed_steps(quick_run):
    out, _ = quick_run
    first = json.loads((out / "report.json").read_text())
    before = (out / "resume.json").read_text()
    assert main(["reproduce", "kernels", "--quick", "--out", str(out), "--no-progress"]) == 0
    second = json.loads((out / "report.json").read_text())
    assert (out / "resume.json").read_text() == before  # nothing recomputed or rewritten
    assert second["timing"]["resumed_steps"] == len(second["steps"])
    assert second["timing"]["computed_steps"] == 0
    assert all(s["resumed"] for s in second["steps"])
    assert [s["ntk"]["rel_error"] for s in second["steps"]] == [s["ntk"]["rel_error"] for s in first["steps"]]


@pytest.mark.slow
def test_quick_run_float32(tmp_path):
    assert main(["reproduce", "kernels", "--quick", "--float32", "--out", str(tmp_path), "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["config"]["dtype"] == "float32"
    p = report["precision"]
    assert p["dtype"] == "float32" and len(p["quantities"]) == 2 * len(report["config"]["activations"])
    assert p["max_rel_diff"] < 2e-5, p  # measured 2.4e-6 (erf and tanh kernels)
    assert "## float32 accuracy" in (tmp_path / "report.md").read_text()


# the quick configuration with 8x fewer initialisations: the same chunks of 16 seeds (the compiled
# programs of the quick run), 1/8 of its Monte-Carlo time, for the resume tests that recompute every step
CHEAP = dataclasses.replace(kernels_experiment.QUICK, n_seeds_nngp=32, n_seeds_ntk=4)


@pytest.fixture(scope="module")
def partial_then_foreign(quick_run, tmp_path_factory):
    """A quick run interrupted before its last step, resumed; then, in the same folder, a run of
    another configuration (CHEAP, seed 1), whose whole resume file the damaged-file test reuses
    (one CHEAP run fewer). Each run's stderr is kept."""
    out, _ = quick_run
    folder = tmp_path_factory.mktemp("partial_resume")
    full = json.loads((out / "report.json").read_text())
    saved = json.loads((out / "resume.json").read_text())
    # a run interrupted before its last step (the compiled programs are those of the quick run)
    last = f"{full['steps'][-1]['activation']}|depth={full['steps'][-1]['depth']}"
    saved["entries"].pop(last)
    (folder / "resume.json").write_text(json.dumps(saved))
    runs = []
    for kwargs in ({"quick": True}, {"config": CHEAP, "seed": 1}):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            runs.append((kernels_experiment.run(folder, progress=False, **kwargs), err.getvalue()))
    return folder, full, runs, (folder / "resume.json").read_text()


@pytest.mark.slow
def test_partial_resume_recomputes_only_missing_steps_deterministically(partial_then_foreign):
    _, full, [(resumed, err), (rep, err_foreign)], _ = partial_then_foreign
    n = len(full["steps"])
    assert resumed["timing"]["resumed_steps"] == n - 1 and resumed["timing"]["computed_steps"] == 1
    for a, b in zip(full["steps"], resumed["steps"], strict=True):
        assert (a["activation"], a["depth"]) == (b["activation"], b["depth"])
        np.testing.assert_allclose(b["nngp"]["mc_mean"], a["nngp"]["mc_mean"], rtol=1e-12)
        np.testing.assert_allclose(b["ntk"]["mc_mean"], a["ntk"]["mc_mean"], rtol=1e-12)
    assert err == ""
    # another configuration (another seed; another width; here fewer seeds, CHEAP) reuses none of these
    # steps: one line, recomputed
    assert dataclasses.replace(kernels_experiment.QUICK, width=64).fingerprint() != kernels_experiment.QUICK.fingerprint()
    assert rep["resume"]["status"] == "foreign" and rep["timing"]["computed_steps"] == n
    assert err_foreign.count("written by another run") == 1


@pytest.mark.slow
def test_damaged_resume_file_is_reported_once_and_recomputed(partial_then_foreign, tmp_path, capsys):
    """Issue 12: a resume file cut off mid-write made every rerun fail with JSONDecodeError. (Other
    damage, not JSON, another format, another configuration: tests/test_experiment_output.py.)
    The whole file is the one the CHEAP run (seed 1) of ``partial_then_foreign`` wrote."""
    assert kernels_experiment._chunk_size(CHEAP.n_seeds_nngp, CHEAP.n_seeds_ntk) == kernels_experiment._chunk_size(
        kernels_experiment.QUICK.n_seeds_nngp, kernels_experiment.QUICK.n_seeds_ntk)
    _, _, [_, (first, _)], text = partial_then_foreign
    assert first["timing"]["computed_steps"] == len(first["steps"])
    (tmp_path / "resume.json").write_text(text[: len(text) // 3])
    rep = kernels_experiment.run(tmp_path, config=CHEAP, seed=1, progress=False)
    err = capsys.readouterr().err
    assert rep["resume"]["status"] == "unreadable"
    assert rep["timing"]["computed_steps"] == len(rep["steps"])
    assert err.count("\n") == 1 and "resume.json is unreadable (JSONDecodeError" in err and "recomputing" in err
    again = kernels_experiment.run(tmp_path, config=CHEAP, seed=1, progress=False)  # the file was rewritten whole
    assert again["resume"]["status"] == "resumed" and capsys.readouterr().err == ""
    def results(entries):  # the recomputed steps equal the lost ones (same keys), up to their timing
        return {k: {f: v for f, v in e.items() if f != "seconds"} for k, e in entries.items()}

    assert results(json.loads((tmp_path / "resume.json").read_text())["entries"]) == results(json.loads(text)["entries"])


def test_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name, exp in EXPERIMENTS.items():
        assert name in out and exp.description in out
        assert exp.quick_seconds and f"(--quick: about {exp.quick_seconds:.0f} s of CPU)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["reproduce", "kernel"], "unknown experiment 'kernel'; did you mean 'kernels'?"),
        (["reproduce"], "give an experiment NAME or --list"),
        (["reproduce", "kernels", "--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295], got '-1'"),
        (["reproduce", "kernels", "--seed", "4294967296"], "must be an integer in [0, 4294967295]"),
        (["reproduce", "kernels", "--seed", "1.5"], "argument --seed: must be an integer"),
        (["reproduce", "kernels", "--out", ""], "argument --out: must be a folder path, got an empty string"),
        (["reproduce", "kernels", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("rmtjax")


def test_no_command_prints_the_usage(capsys):
    assert main([]) == 2
    assert "usage: rmtjax" in capsys.readouterr().err


@pytest.fixture
def fake_experiment(monkeypatch):
    """Registers ``fake``, whose run records its call and does what ``behaviour`` says."""
    calls = []
    behaviour = {"do": lambda: {"ok": True, "summary": "fake"}}

    def fake_run(out_dir, *, quick, seed, progress):
        calls.append(Path(out_dir))
        return behaviour["do"]()

    module = types.ModuleType("rmtjax_fake_experiment")
    module.run = fake_run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(EXPERIMENTS, "fake", Experiment("a stand-in", f"{module.__name__}:run"))
    return calls, behaviour


def test_out_is_checked_before_any_computation(tmp_path, capsys, fake_experiment):
    """Issue 12: a non-directory or unwritable --out gave a raw traceback after the computation."""
    calls, _ = fake_experiment
    (tmp_path / "file").write_text("x")
    unwritable = Path("/proc/self") if os.geteuid() == 0 else tmp_path / "ro"
    if os.geteuid() != 0:
        unwritable.mkdir()
        unwritable.chmod(0o500)
    for out, message in [(tmp_path / "file", "--out must be a folder, got"),
                         (tmp_path / "file" / "sub", "--out must be a folder that can be created"),
                         (unwritable, "--out must be a writable folder")]:
        assert main(["reproduce", "fake", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert calls == []  # the experiment never ran
    assert main(["reproduce", "fake", "--out", str(tmp_path / "new" / "dir")]) == 0
    assert calls == [tmp_path / "new" / "dir"] and (tmp_path / "new" / "dir").is_dir()


def test_value_error_in_a_run_is_one_line_exit_3(tmp_path, capsys, fake_experiment):
    _, behaviour = fake_experiment

    def bad():
        raise ValueError("sigma_w2 must be finite and > 0, got nan\n(second line)")

    behaviour["do"] = bad
    assert main(["reproduce", "fake", "--out", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err == "rmtjax: error: reproduce fake: sigma_w2 must be finite and > 0, got nan (second line)\n"

    def interrupted():
        raise KeyboardInterrupt

    behaviour["do"] = interrupted
    assert main(["reproduce", "fake", "--out", str(tmp_path)]) == 130
    assert "interrupted; run the same command again to resume" in capsys.readouterr().err
    assert jax.config.jax_enable_x64


@pytest.mark.slow
def test_help_is_light_and_check_failing_under_jit_is_one_line(tmp_path):
    """One fresh interpreter (importing rmtjax and JAX costs 4 s of this test) checks two things.

    --help and --list parse the arguments before importing any experiment (or starting JAX).

    Issue 12: under jit a bad input printed a pure_callback traceback, the equinox banner and
    `JaxRuntimeError: INTERNAL: CpuCallback error`; the command prints the message alone, for our
    checks (rmtjax._validate.error_if) and for equinox's (optimistix, diffrax)."""
    (tmp_path / "jit_failing_experiments.py").write_text(textwrap.dedent("""
        import equinox as eqx, jax, jax.numpy as jnp
        from rmtjax._validate import error_if

        def ours(out_dir, *, quick, seed, progress):
            f = jax.jit(lambda x: error_if(x, x < 0, "x must be >= 0, got a negative value"))
            return {"ok": bool(f(jnp.asarray(-1.0)) > 0)}

        def equinox(out_dir, *, quick, seed, progress):
            f = jax.jit(lambda x: eqx.error_if(x, x < 0, "y must be >= 0, got a negative value"))
            return {"ok": bool(f(jnp.asarray(-1.0)) > 0)}
    """))
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from rmtjax.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(['reproduce', '--help']) == 0 and main(['reproduce', '--list']) == 0
        print(sorted(m for m in sys.modules if m.startswith('rmtjax.experiments.')))
        from rmtjax.experiments import EXPERIMENTS, Experiment
        EXPERIMENTS["ours"] = Experiment("fails under jit", "jit_failing_experiments:ours")
        EXPERIMENTS["eqx"] = Experiment("fails under jit", "jit_failing_experiments:equinox")
        codes = [main(["reproduce", name, "--out", {str(tmp_path / "out")!r}]) for name in ("ours", "eqx")]
        print(codes)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert res.stdout.splitlines() == ["[]", "[3, 3]"], (res.stdout, res.stderr)
    assert res.stderr == ("rmtjax: error: reproduce ours: x must be >= 0, got a negative value\n"
                          "rmtjax: error: reproduce eqx: y must be >= 0, got a negative value\n")


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


@pytest.mark.slow  # a fresh interpreter importing rmtjax: 5-15 s
def test_console_script_is_installed():
    script = Path(sys.executable).with_name("rmtjax")
    if not script.exists():
        pytest.skip("the rmtjax console script is not installed next to this interpreter")
    res = subprocess.run([str(script), "reproduce", "nope"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("rmtjax: error: reproduce: unknown experiment 'nope'")
