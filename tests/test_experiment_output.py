"""What every reproduction shares: the JSON encoder (float32 and JAX values), atomic files, the
output-folder check, the resume file (cut off, foreign, not JSON: one line, recomputed), number
formatting, checked configurations and the float32-vs-float64 comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax.experiments import EXPERIMENTS, _common, _output, _precision, _resume


# ------------------------------------------------------------------------------------------
# JSON
# ------------------------------------------------------------------------------------------


def test_dumps_accepts_numpy_and_jax_values_of_every_dtype():
    """The crash of ``reproduce dynamical-isometry --quick --float32`` (json cannot write float32)."""
    with pytest.raises(TypeError):
        json.dumps({"x": np.float32(0.5)})
    value = {"f32": np.float32(0.1), "f64": np.float64(0.25), "i": np.int64(3), "b": np.bool_(True),
             "a32": np.arange(3, dtype=np.float32), "jax": jnp.ones((2,), jnp.float32), "t": (1, np.int32(2)),
             "path": Path("a/b"), np.int64(7): None, "nan": float("nan")}
    back = json.loads(_output.dumps(value))
    assert back["f32"] == float(np.float32(0.1)) and back["f64"] == 0.25 and back["i"] == 3 and back["b"] is True
    assert back["a32"] == [0.0, 1.0, 2.0] and back["jax"] == [1.0, 1.0] and back["t"] == [1, 2]
    assert back["path"] == "a/b" and back["7"] is None and np.isnan(back["nan"])
    with jax.enable_x64(False):
        assert json.loads(_output.dumps({"x": jnp.float32(2) * jnp.ones(())}))["x"] == 2.0
    with pytest.raises(TypeError, match="cannot write object"):
        _output.dumps({"x": object()})


# ------------------------------------------------------------------------------------------
# Atomic files
# ------------------------------------------------------------------------------------------


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    _output.atomic_write_text(path, "old")
    _output.atomic_write_text(path, "new content")
    assert path.read_text() == "new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not the private mode of mkstemp


def test_atomic_write_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    """A failure between writing and renaming (a crash, a full disk) leaves the previous file."""
    path = tmp_path / "resume.json"
    _output.atomic_write_text(path, '{"complete": true}')

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        _output.atomic_write_text(path, '{"complete": false, "cut')
    assert json.loads(path.read_text()) == {"complete": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume.json"]


def test_killed_writer_never_leaves_a_partial_file(tmp_path):
    """A process killed in the middle of writing a large file leaves the old file or the new one."""
    path = tmp_path / "big.json"
    _output.atomic_write_text(path, json.dumps({"old": 1}))
    # _output needs only the standard library and NumPy: loaded from its file, without importing
    # rmtjax (and JAX) in the child process
    script = textwrap.dedent(f"""
        import importlib.util, os
        spec = importlib.util.spec_from_file_location("_output", {_output.__file__!r})
        _output = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_output)
        def die(fd):
            os.kill(os.getpid(), 9)  # killed after the data were written, before the rename
        os.fsync = die
        _output.atomic_write_text({str(path)!r}, "x" * 1_000_000)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert res.returncode == -9
    assert json.loads(path.read_text()) == {"old": 1}


# ------------------------------------------------------------------------------------------
# Output folder
# ------------------------------------------------------------------------------------------


def test_check_out_dir(tmp_path):
    assert _output.check_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"^--out must be a folder, got '.*file', which is an existing file$"):
        _output.check_out_dir(tmp_path / "file", name="--out")
    with pytest.raises(ValueError, match="out_dir must be a folder that can be created, got .*Not a directory"):
        _output.check_out_dir(tmp_path / "file" / "sub")


def test_check_out_dir_unwritable(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: use a folder of a read-only file system
        target = Path("/proc/self")
        if not target.is_dir():
            pytest.skip("no unwritable folder available")
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    with pytest.raises(ValueError, match="out_dir must be a writable folder"):
        _output.check_out_dir(target)


# ------------------------------------------------------------------------------------------
# Resume files
# ------------------------------------------------------------------------------------------


def test_resume_round_trip_and_put_returns_what_a_rerun_reads(tmp_path):
    r = _resume.ResumeFile(tmp_path, "demo", {"n": 3, "seed": 0})
    assert r.status == "new" and len(r) == 0 and r.notice is None
    stored = r.put("a", {"x": np.float32(1.5), "y": (1, 2), "z": np.arange(2)})
    assert stored == {"x": 1.5, "y": [1, 2], "z": [0, 1]}
    again = _resume.ResumeFile(tmp_path, "demo", {"n": 3, "seed": 0})
    assert again.status == "resumed" and again.resumed == 1 and again["a"] == stored and "a" in again
    assert again.summary() == {"file": "resume.json", "status": "resumed", "resumed_entries": 1, "notice": None}


@pytest.mark.parametrize("content, status, words", [
    ('{"format": "rmtjax-resume/1", "experiment": "demo", "finger', "unreadable", "unreadable (JSONDecodeError"),
    ("", "unreadable", "unreadable (JSONDecodeError"),
    (b"\xff\xfe\x00garbage", "unreadable", "unreadable (UnicodeDecodeError"),
    ("[1, 2]", "unreadable", "is not an rmtjax-resume/1 file"),
    ('{"rows": []}', "unreadable", "is not an rmtjax-resume/1 file"),  # the old partial.json format
])
def test_resume_unreadable_file_is_reported_in_one_line_and_recomputed(tmp_path, capsys, content, status, words):
    path = tmp_path / "resume.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = _resume.ResumeFile(tmp_path, "demo", {"n": 3})
    err = capsys.readouterr().err
    assert r.status == status and len(r) == 0 and words in r.notice
    assert err.count("\n") == 1 and err.startswith("rmtjax: ") and "recomputing everything" in err
    r.put("a", 1)  # the first finished piece replaces the unusable file
    assert _resume.ResumeFile(tmp_path, "demo", {"n": 3}).get("a") == 1


def test_resume_foreign_configuration_is_not_reused(tmp_path, capsys):
    _resume.ResumeFile(tmp_path, "demo", {"n": 3}).put("a", 1)
    for experiment, config in (("demo", {"n": 4}), ("other", {"n": 3})):
        r = _resume.ResumeFile(tmp_path, experiment, config)
        assert r.status == "foreign" and "a" not in r and "written by another run" in r.notice
    assert capsys.readouterr().err.count("\n") == 2
    assert _resume.fingerprint("demo", {"n": 3}) != _resume.fingerprint("demo", {"n": 3.5})
    quiet = _resume.ResumeFile(tmp_path, "other", {"n": 3}, quiet=True)
    assert quiet.status == "foreign" and capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------------
# Numbers, configurations
# ------------------------------------------------------------------------------------------


def test_number_formatting():
    assert _output.num(0.010000000000000009) == "0.01"
    assert _output.num(1 / 3, 3) == "0.333" and _output.num(np.float32(0.1)) == "0.1"
    assert _output.num(np.int64(12)) == "12" and _output.num(True) == "True" and _output.num(None) == "n/a"
    assert _output.nums([0.5, 0.25000000000000006, 2e-7]) == "0.5, 0.25, 2e-07"
    assert _output.nums([]) == ""


def test_config_helpers_name_the_field():
    assert _common.int_grid((1, 2, 5), "depths") == (1, 2, 5)
    for bad, msg in [((), "depths must hold at least 1 value, got ()"), ((2, 1), "strictly increasing"),
                     ((1, 0), r"depths\[1\] must be an integer >= 1, got 0"), ((1, 2.0), r"depths\[1\]"),
                     ((1, True), r"depths\[1\]"), ("12", "sequence of integers"), (3, "sequence of integers")]:
        with pytest.raises(ValueError, match=msg):
            _common.int_grid(bad, "depths")
    with pytest.raises(ValueError, match=r"sweep must hold at least 2 values"):
        _common.float_grid((1.0,), "sweep", min_len=2)
    with pytest.raises(ValueError, match=r"sweep\[0\] must be a finite number > 0, got nan"):
        _common.float_grid((float("nan"),), "sweep", lo=0, lo_open=True)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 4294967295\], got 4294967296"):
        _common.check_seed(2**32)  # without x64, jax.random.key(2**32) == jax.random.key(0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        _common.check_seed(1.0)
    assert _common.check_seed(np.int64(5)) == 5


# ------------------------------------------------------------------------------------------
# float32 against float64
# ------------------------------------------------------------------------------------------


def _sum_of_squares(x):
    # a float32 sum of 1e5 terms loses digits: relative error ~ 1e-6 to 1e-4
    return {"sum": jnp.sum(x * x), "first": x[0], "exact zero": x[0] - x[0]}


def test_float64_comparison_measures_float32_rounding():
    x = np.linspace(0.0, 1.0, 100_001)
    with jax.enable_x64(False):
        p = _precision.float64_comparison(_sum_of_squares, jnp.asarray(x, jnp.float32) + 0.1)
    assert p["dtype"] == "float32" and set(p["quantities"]) == {"sum", "first", "exact zero"}
    s = p["quantities"]["sum"]
    # both values computed here: float64 is the exact sum of the float32 inputs squared
    x32 = (np.asarray(x, np.float32) + np.float32(0.1)).astype(np.float64)
    assert s["float64"] == pytest.approx(np.sum(x32 * x32), rel=1e-12)
    assert s["max_rel_diff"] == pytest.approx(abs(s["float32"] - s["float64"]) / s["float64"], rel=1e-9)
    assert 1e-9 < s["max_rel_diff"] < 1e-3  # float32 is off, by float32 rounding only
    assert p["quantities"]["first"]["max_rel_diff"] == 0.0 and p["quantities"]["exact zero"]["max_rel_diff"] == 0.0
    assert p["worst"] == "sum" and p["max_rel_diff"] == s["max_rel_diff"]
    assert "| sum |" in "\n".join(_precision.precision_lines(p))
    # in a float64 run there is nothing to compare
    assert _precision.float64_comparison(_sum_of_squares, jnp.asarray(x)) == {"dtype": "float64"}


def test_float64_comparison_flags_nan_on_one_side():
    with jax.enable_x64(False):
        p = _precision.float64_comparison(lambda x: {"v": x}, jnp.ones(2, jnp.float32),
                                          float32_values={"v": [1.0, float("nan")]})
    assert p["quantities"]["v"]["max_rel_diff"] == float("inf")


def test_every_experiment_takes_a_checked_config():
    """Empty grids and bad sizes are ValueErrors naming the field, before anything is computed."""
    import importlib

    for name, exp in EXPERIMENTS.items():
        module = importlib.import_module(exp.target.partition(":")[0])
        cls = getattr(module, "Config", None) or getattr(module, "DataConfig")
        fields = cls.__dataclass_fields__
        grid = next((f for f, v in fields.items() if "tuple" in str(v.type)), None)
        size = next(f for f, v in fields.items() if v.type in ("int", int))
        base = module.QUICK[0] if isinstance(module.QUICK, tuple) else module.QUICK
        import dataclasses

        with pytest.raises(ValueError, match=size):
            dataclasses.replace(base, **{size: 0})
        if grid is not None:
            with pytest.raises(ValueError, match=grid):
                dataclasses.replace(base, **{grid: ()})
        with pytest.raises(ValueError, match="config must be"):
            exp.load()("unused", config="quick")
