"""`rmtjax reproduce seddik-universality` (quick): generated (GAN-like) data and their Gaussian twin have
the same Gram spectrum, spikes, eigenvector alignments and classifier accuracy, and the deterministic
equivalent predicts the spectrum of both."""

import json

import numpy as np

from rmtjax.experiments.seddik_universality import run


def test_reproduce_seddik_universality_quick(tmp_path):
    report = run(tmp_path, quick=True, progress=False)
    assert report["ok"], report["summary"]
    assert (tmp_path / "seddik_universality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reproduced" in (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "report.json").read_text())
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
    # the spikes separate from the bulk in both
    assert min(mc["gen"]["top_eigenvalues"]) > 0 and (tmp_path / "partial.json").exists()
