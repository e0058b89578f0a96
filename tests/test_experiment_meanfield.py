"""`rmtjax reproduce meanfield --quick` runs, writes its outputs and reproduces the result."""

import json

from rmtjax.cli import main


def test_reproduce_meanfield_quick(tmp_path):
    assert main(["reproduce", "meanfield", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"]
    assert (tmp_path / "meanfield.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
    # the vmapped grid and the independent root solve agree on the phase boundary
    w2 = report["grid"]["sigma_w2"]
    chi = report["grid"]["chi_1"]
    crit0 = report["edge_of_chaos"]["sigma_w2"][0]
    first_chaotic = next(w for w, row in zip(w2, chi) if row[0] > 1)
    assert first_chaotic >= crit0 and first_chaotic - crit0 <= w2[1] - w2[0]
