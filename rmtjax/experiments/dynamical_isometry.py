r"""Dynamical isometry: Jacobian singular-value spectra of deep networks at initialization.

``rmtjax reproduce dynamical-isometry`` reproduces the comparison of Pennington, Schoenholz &
Ganguli (2017, "Resurrecting the sigmoid in deep learning through dynamical isometry", Figs. 1-2)
at criticality (:math:`\chi = 1`): ReLU, hard-tanh and erf networks with Gaussian or
Haar-orthogonal weights. For each configuration and depth :math:`L` the free-probability density
of the squared singular values of :math:`J = \prod_\ell D^\ell W^\ell`
(:func:`rmtjax.rmt._jacobian.jacobian_spectrum`) is compared with the singular values of the
Jacobians of random finite networks (plain JAX, width ``width``), by moments
(:math:`m_1 = 1`, variance) and histograms of :math:`\log_{10}s`.

``ok`` requires, for every configuration and depth, the subordination to converge on at least
half of the :math:`\lambda` grid (points right next to the atom at 0 can fail and are not drawn), the empirical mean and variance of
:math:`s^2` within tolerance of the theory (finite-width corrections are :math:`O(L/N)` relative;
tolerance :math:`5\,\mathrm{SE}` over independent networks plus :math:`2L/N`), the largest empirical
singular value below the theoretical edge times :math:`1.2 + 4L/N` (the top of heavy-tailed
product spectra converges slowly in :math:`N`), and the qualitative claim: at
the deepest :math:`L`, orthogonal hard-tanh/erf spectra stay :math:`O(1)`-wide while ReLU's
variance grows linearly in :math:`L` for both weight laws. Writes ``dynamical_isometry.png``,
``report.json`` and ``report.md``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..activations import Erf, Relu
from ..meanfield import edge_of_chaos
from ..rmt._jacobian import HardTanh, jacobian_law, jacobian_q_star, jacobian_spectrum
from ..solve import root

__all__ = ["run"]

THEORY_GRID, THEORY_GRID_QUICK = 400, 160  # points of the lambda grid (one compilation per size)


def _critical_hardtanh(q_target):
    """(sigma_w2, sigma_b2) with chi = sigma_w2 erf(1 / sqrt(2 q*)) = 1 and q* = q_target."""
    from jax.scipy.special import erf

    w2 = 1 / erf(1 / jnp.sqrt(2 * q_target))
    # sigma_b2 from the length map at q*: q = V(q)
    from ..rmt._jacobian import _hardtanh_length_map

    b2 = q_target - _hardtanh_length_map(q_target, w2, 0.0)
    return float(w2), float(b2)


def _critical_erf(b2):
    return float(edge_of_chaos(Erf(), b2).value), b2


def _configs(quick):
    htw, htb = _critical_hardtanh(jnp.asarray(0.05))
    erw, erb = _critical_erf(0.01)
    cfgs = [("relu", Relu(), 2.0, 0.0), ("hard-tanh", HardTanh(), htw, htb), ("erf", Erf(), erw, erb)]
    out = [(name, act, w2, b2, orth) for name, act, w2, b2 in cfgs for orth in (False, True)]
    return out[:2] if quick else out  # quick: ReLU, both weight laws


def _orthogonal(key, n):
    q, r = jnp.linalg.qr(jax.random.normal(key, (n, n)))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def _network_singular_values(act, w2, b2, q, depth, width, orthogonal, key):
    """Squared singular values of J = prod D W for one random network at its fixed point q*."""

    @jax.jit
    def one(key):
        k0, key = jax.random.split(key)
        x = jnp.sqrt(q) * jax.random.normal(k0, (width,))  # h^0 ~ N(0, q*): x^0 = phi(h^0)
        x = act(x)
        J = jnp.eye(width)

        def layer(carry, k):
            x, J = carry
            kw, kb = jax.random.split(k)
            W = _orthogonal(kw, width) if orthogonal else jax.random.normal(kw, (width, width)) / math.sqrt(width)
            W = math.sqrt(w2) * W
            h = W @ x + math.sqrt(b2) * jax.random.normal(kb, (width,))
            J = act.derivative(h)[:, None] * (W @ J)
            return (act(h), J), None

        (x, J), _ = jax.lax.scan(layer, (x, J), jax.random.split(key, depth))
        return jnp.linalg.svd(J, compute_uv=False) ** 2

    return np.asarray(one(key))


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Runs the reproduction and writes the figure and reports into ``out_dir``."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    width, depths, nets = (120, (2, 8), 2) if quick else (1000, (4, 16, 64), 2)
    cfgs = _configs(quick)
    partial_path = out / "partial.json"
    done = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    bar = tqdm(total=len(cfgs) * len(depths), desc="reproduce dynamical-isometry", disable=not progress)
    key = jax.random.key(seed)
    results = []
    for ci, (name, act, w2, b2, orth) in enumerate(cfgs):
        q = float(jacobian_q_star(act, w2, b2))
        q_net = 1.0 if not np.isfinite(q) else q
        for di, L in enumerate(depths):
            tag = f"{name}|{'orthogonal' if orth else 'gaussian'}|{L}|{width}|{seed}"
            bar.set_postfix_str(tag)
            if tag in done:
                results.append(done[tag])
                bar.update()
                continue
            keys = jax.random.split(jax.random.fold_in(key, 100 * ci + di), nets)
            lam = np.stack([_network_singular_values(act, w2, b2, q_net, L, width, orth, k) for k in keys])
            m1s, v = lam.mean(1), lam.var(1)
            # theory on a log grid of lambda, wide enough for the deepest ReLU spectra
            n_grid = THEORY_GRID if not quick else THEORY_GRID_QUICK
            grid = np.geomspace(1e-8, 1e4, n_grid)
            law = jacobian_law(act, w2, b2, depth=L, orthogonal=orth).moments(2)
            m1, sd = float(law[0]), math.sqrt(max(float(law[1] - law[0] ** 2), 0.0))
            # near-isometric: a quarter of the grid (same size) on [m1 - 8 sd, m1 + 8 sd]. (For orthogonal
            # hard-tanh at q* = 0.05 the law is almost all an atom at sigma_w^(2L), of mass ~ 1 - L P(|h| > 1),
            # which the density leaves out, plus a continuous part of mass ~ L P(|h| > 1).)
            if sd < 0.1 * m1:
                k = n_grid // 4
                grid = np.sort(np.concatenate([np.geomspace(1e-8, 1e4, n_grid - k),
                                               np.linspace(max(m1 - 8 * sd, 1e-8), m1 + 8 * sd, k)]))
            spec = jacobian_spectrum(act, w2, b2, jnp.asarray(grid), depth=L, orthogonal=orth, throw=False)
            th_var = float(spec.variance)
            edge = float(spec.max_eigenvalue)
            tol_m1 = 5 * m1s.std(ddof=1) / math.sqrt(nets) + 2 * L / width + 0.02
            tol_var = 5 * v.std(ddof=1) / math.sqrt(nets) + 2 * L / width * max(th_var, 1) + 0.05 * max(th_var, 0.05)
            # histogram of log10 s (s = sqrt(lambda)) vs theory p(log10 s) = rho(lambda) * 2 lambda ln 10
            nz = lam[lam > 1e-12 * max(1.0, edge)]
            r = {
                "name": name, "weights": "orthogonal" if orth else "gaussian", "depth": L, "sigma_w2": w2,
                "sigma_b2": b2, "q_star": q if np.isfinite(q) else None, "chi": float(spec.chi),
                "theory": {"mean": float(spec.mean), "variance": th_var, "max_eigenvalue": edge,
                           "zero_mass": float(spec.zero_mass), "ok": bool(spec.ok),
                           "grid": grid.tolist(), "density": np.asarray(spec.density).tolist(),
                           "converged": np.asarray(spec.converged).tolist()},
                "empirical": {"mean": float(m1s.mean()), "variance": float(v.mean()), "max_eigenvalue": float(lam.max()),
                              "zero_fraction": float(np.mean(lam <= 1e-12 * max(1.0, edge))),
                              "log10_s": np.log10(np.sqrt(nz)).tolist()[:20000]},
                "tolerance": {"mean": tol_m1, "variance": tol_var},
            }
            r["theory"]["converged_fraction"] = float(np.mean(np.asarray(spec.converged)))
            r["ok"] = bool(r["theory"]["converged_fraction"] >= 0.5 and abs(r["empirical"]["mean"] - r["theory"]["mean"]) <= tol_m1
                           and abs(r["empirical"]["variance"] - th_var) <= tol_var
                           and r["empirical"]["max_eigenvalue"] <= edge * (1.2 + 4 * L / width))
            results.append(r)
            done[tag] = r
            partial_path.write_text(json.dumps(done))
            bar.update()
    bar.close()
    deepest = max(depths)
    var_at = {(r["name"], r["weights"]): r["theory"]["variance"] for r in results if r["depth"] == deepest}
    claims = {"relu_variance_grows_with_depth_for_both_weight_laws": bool(
        var_at[("relu", "gaussian")] >= deepest and var_at[("relu", "orthogonal")] >= 0.9 * deepest)}
    if ("hard-tanh", "orthogonal") in var_at:
        claims["orthogonal_hard_tanh_is_nearly_isometric"] = bool(
            var_at[("hard-tanh", "orthogonal")] < 0.25 * var_at[("hard-tanh", "gaussian")])
    if ("erf", "orthogonal") in var_at:
        claims["orthogonal_beats_gaussian_for_erf"] = bool(var_at[("erf", "orthogonal")] < var_at[("erf", "gaussian")])
    ok = all(r["ok"] for r in results) and all(claims.values())
    worst = max(abs(r["empirical"]["variance"] - r["theory"]["variance"]) / max(r["tolerance"]["variance"], 1e-12)
                for r in results)
    report = {
        "name": "dynamical-isometry", "ok": ok, "quick": quick, "seed": seed, "seconds": time.perf_counter() - t0,
        "config": {"width": width, "depths": list(depths), "networks_per_point": nets},
        "results": results, "claims": claims,
        "summary": f"{sum(r['ok'] for r in results)}/{len(results)} configurations match theory (moments within "
                   f"tolerance, worst variance error {worst:.2f} x tolerance); claims: "
                   + ", ".join(f"{k}={v}" for k, v in claims.items()),
        "versions": {"jax": jax.__version__},
    }
    _figure(report, out / "dynamical_isometry.png")
    slim = json.loads(json.dumps(report))
    for r in slim["results"]:
        r["empirical"].pop("log10_s")
    (out / "report.json").write_text(json.dumps(slim, indent=1))
    (out / "report.md").write_text(_markdown(report))
    partial_path.unlink(missing_ok=True)
    return slim


def _figure(rep, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = rep["results"]
    names = sorted({r["name"] for r in res}, key=["relu", "hard-tanh", "erf"].index)
    depths = rep["config"]["depths"]
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.4 * len(names)), squeeze=False)
    colors = dict(zip(depths, ["C0", "C1", "C3", "C4"]))
    for i, n in enumerate(names):
        for j, wl in enumerate(("gaussian", "orthogonal")):
            ax = axes[i, j]
            for r in res:
                if r["name"] != n or r["weights"] != wl:
                    continue
                c = colors[r["depth"]]
                ls = np.asarray(r["empirical"]["log10_s"])
                if ls.size:  # continuous part only: counts over all nonzero values, scaled by their mass
                    h, e = np.histogram(ls, bins=np.linspace(-3, 2.5, 111))
                    ax.stairs(h * (1 - r["empirical"]["zero_fraction"]) / (ls.size * np.diff(e)), e, fill=True,
                              alpha=0.3, color=c)
                lam = np.asarray(r["theory"]["grid"])
                dens = np.where(np.asarray(r["theory"]["converged"]), np.asarray(r["theory"]["density"]), np.nan)
                ax.plot(0.5 * np.log10(lam), dens * 2 * lam * math.log(10), color=c, lw=2,
                        label=f"L={r['depth']}: var {r['theory']['variance']:.2g} (emp. {r['empirical']['variance']:.2g})")
            ax.set(xlabel=r"$\log_{10}$ singular value", ylabel="density",
                   title=f"{n}, {wl} weights (chi = 1)", xlim=(-3, 2.5))
            ax.legend(fontsize=7)
    fig.suptitle(f"Jacobian singular values: free probability (lines) vs width-{rep['config']['width']} networks")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(rep):
    lines = ["# Dynamical isometry (Pennington, Schoenholz & Ganguli 2017)", "",
             f"**{'Reproduced' if rep['ok'] else 'NOT reproduced'}** in {rep['seconds']:.1f} s "
             f"(width {rep['config']['width']}, {rep['config']['networks_per_point']} networks per point).", "",
             "| activation | weights | L | sigma_w^2 | sigma_b^2 | mean (th / emp) | variance (th / emp, tol) | "
             "max s^2 (edge / emp) | ok |", "|---|---|---:|---:|---:|---|---|---|:---:|"]
    for r in rep["results"]:
        t, e = r["theory"], r["empirical"]
        lines.append(f"| {r['name']} | {r['weights']} | {r['depth']} | {r['sigma_w2']:.4f} | {r['sigma_b2']:.4f} | "
                     f"{t['mean']:.4f} / {e['mean']:.4f} | {t['variance']:.4g} / {e['variance']:.4g} "
                     f"(+-{r['tolerance']['variance']:.2g}) | {t['max_eigenvalue']:.4g} / {e['max_eigenvalue']:.4g} | "
                     f"{'yes' if r['ok'] else 'no'} |")
    lines += ["", "Claims: " + ", ".join(f"{k}: {v}" for k, v in rep["claims"].items()), "",
              "![spectra](dynamical_isometry.png)", ""]
    return "\n".join(lines)
