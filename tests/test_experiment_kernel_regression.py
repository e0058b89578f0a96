"""`rmtjax reproduce kernel-regression --quick` (the runner, called directly until the lead registers
it in the CLI): runs, writes its outputs, reproduces the result, and resumes from its JSONL."""

import json

from rmtjax.experiments.kernel_regression import run


def test_reproduce_kernel_regression_quick(tmp_path):
    report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["checks"]
    assert (tmp_path / "kernel_regression.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["ok"]
    kern = report["kernel"]
    assert {(r["activation"], r["depth"]) for r in kern} == {("relu", 1), ("relu", 3), ("erf", 1), ("erf", 3)}
    # the gap to the NTK flow is zero at t = 0 (same initial outputs) and shrinks with width
    fin = report["finite"]
    assert all(r["relative_gap"][0] < 1e-10 for r in fin)
    assert fin[-1]["relative_gap"][-1] < fin[0]["relative_gap"][-1]
    # a second run resumes from records.jsonl: nothing is recomputed
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    again = run(tmp_path, quick=True, progress=False)
    assert (tmp_path / "records.jsonl").read_text().splitlines() == lines
    assert again["checks"] == report["checks"]
