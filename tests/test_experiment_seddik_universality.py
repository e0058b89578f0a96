"""`rmtjax reproduce seddik-universality` (quick, float64 and float32): generated (GAN-like) data and
their Gaussian twin have the same Gram spectrum, spikes, eigenvector alignments and classifier
accuracy, and the deterministic equivalent predicts the spectrum of both."""

import json

import jax
import numpy as np
import pytest

from rmtjax.experiments import seddik_universality
from rmtjax.experiments.seddik_universality import run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("seddik")
    return out, run(out, quick=True, progress=False)


@pytest.mark.slow
def test_reproduce_seddik_universality_quick(quick):
    out, report = quick
    assert report["ok"], report["summary"]
    assert (out / "seddik_universality.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "Reproduced" in md and "[" not in md.split("![")[0]  # no raw Python lists
    saved = json.loads((out / "report.json").read_text())
    assert saved["ok"] and saved["summary"] == report["summary"]
    c, mc, th = report["checks"], report["monte_carlo"], report["theory"]
    # Kolmogorov distances between the pooled bulk spectra and against the deterministic equivalent
    assert c["ks_gen_vs_gauss"] < c["ks_tolerance"] and c["ks_gen_vs_theory"] < c["ks_tolerance"]
    # the density integrates to ~1 (continuous part + atom at 0)
    assert abs(c["density_mass"] - 1) < 0.05  # minus the spikes (K - 1)/n and the trapezoid error
    # resolvent traces: both data kinds within 5 SE + 2/p of the theory
    p = report["config"]["p"]
    for name in ("gen", "gauss"):
        err = np.abs(np.array(mc[name]["trace"]) - np.array(th["trace"]))
        assert np.all(err <= 5 * np.array(mc[name]["trace_se"]) + 2.0 / p)
    # generator's Lipschitz bound is the product of the projected layer norms times Lip(LeakyRelu, tanh) = 1
    gen = report["generator"]
    assert max(gen["layer_norms"]) <= report["config"]["sigma_star"] * (1 + 1e-12)
    np.testing.assert_allclose(gen["lipschitz_bound"], np.prod(gen["layer_norms"]), rtol=1e-12)
    # the classes are separable (above chance) and the classifier performs alike on both kinds of data
    assert mc["gen"]["accuracy"] > 0.5 and mc["gauss"]["accuracy"] > 0.5
    assert c["z_accuracy_gen_vs_gauss"] < 5 and c["z_spikes_gen_vs_gauss"] < 5
    assert min(mc["gen"]["top_eigenvalues"]) > 0


@pytest.mark.slow
def test_rerun_resumes_the_draws(quick):
    out, report = quick
    again = run(out, quick=True, progress=False)
    assert again["resume"]["status"] == "resumed"
    assert again["resume"]["resumed_entries"] == seddik_universality.QUICK.draws
    assert again["monte_carlo"] == report["monte_carlo"] and again["kolmogorov"] == report["kolmogorov"]


@pytest.mark.slow
def test_cut_off_resume_file_is_reported_and_recomputed(quick, tmp_path, capsys):
    """Issue 12: a resume file cut off mid-write made every rerun fail with JSONDecodeError."""
    out, report = quick
    text = (out / "resume.json").read_text()
    (tmp_path / "resume.json").write_text(text[: len(text) // 2])
    again = run(tmp_path, quick=True, progress=False)
    err = capsys.readouterr().err
    assert again["resume"]["status"] == "unreadable" and again["resume"]["resumed_entries"] == 0
    assert err.count("resume.json is unreadable (JSONDecodeError") == 1
    assert again["monte_carlo"] == report["monte_carlo"]  # recomputed: the same draws
    assert json.loads((tmp_path / "resume.json").read_text())["experiment"] == "seddik-universality"


@pytest.mark.slow
def test_reproduce_seddik_universality_quick_float32(tmp_path):
    with jax.enable_x64(False):
        report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["summary"]
    p = report["precision"]
    assert p["dtype"] == "float32" and set(p["quantities"]) == {"(1/n) tr (G + z)^-1", "density", "atom at 0"}
    # measured: traces 8.3e-8, atom at 0 4.8e-8, density 1.8e-5 (relative, where it is small near the edges)
    assert p["quantities"]["(1/n) tr (G + z)^-1"]["max_rel_diff"] < 1e-6, p
    assert p["max_rel_diff"] < 1e-3, p


def test_bad_sizes_are_clear_errors():
    import dataclasses

    for field, value, message in [("draws", 1, "draws must be an integer >= 2"),
                                  ("n_moments", 10, "n_moments must be an integer >= 65"),
                                  ("ridge", 0.0, "ridge must be a finite number > 0")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(seddik_universality.QUICK, **{field: value})
