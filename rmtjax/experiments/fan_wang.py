r"""CK and NTK spectra of linear-width networks (Fan & Wang, NeurIPS 2020) and the largest stable
learning rate :math:`2/\lambda_{\max}(K^{\mathrm{NTK}})`.

``rmtjax reproduce fan-wang`` compares the theory of :mod:`rmtjax.rmt._linear_width` with random
networks of the paper's form (normalized tanh, :math:`L = 3` hidden layers; inputs i.i.d. Gaussian rows
normalized to unit norm; the theory uses the empirical spectrum of the input Gram matrix as
:math:`\mu_0`):

1. the eigenvalue histogram of the CK :math:`K_\ell = X_\ell^\top X_\ell` of every layer and of the NTK,
   pooled over ``seeds`` networks, against the limit density: every bin within 5 standard errors (the
   larger of the multinomial error and the seed-to-seed spread of the counts, which dominates for the
   NTK: its scale carries :math:`\|w\|^2/d_L = 1 \pm O(d_L^{-1/2})`) plus 2 counts; the moments
   :math:`\frac1n\operatorname{tr}K^k`, :math:`k \le 3`, within 5 standard errors over seeds plus a relative
   :math:`2/n`; the largest eigenvalue against the right edge of the support, within 3 times the distance
   from the edge to the theoretical :math:`(1 - 1/n)`-quantile (the scale of the top eigenvalue's
   finite-size shift and Tracy-Widom fluctuations), plus :math:`3\sqrt{2/d_L}` relative for the NTK;
2. :math:`2/\lambda_{\max}` of the NTK (the largest stable learning rate of gradient descent on
   :math:`\frac12\|f(X) - y\|^2` of the linearized network) against the width ratio
   :math:`\gamma = n/d` (all hidden layers of equal width), theory curve vs finite networks (same tolerance).

In a float32 run the report also gives the largest differences of the theory (edges, moments,
densities, learning rate) to float64 from the same inputs. Writes ``fan_wang.png``,
``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..activations import Tanh
from ..rmt._linear_width import (
    activation_constants,
    combination_density,
    combination_edge,
    combination_moments,
    ck_density,
    ck_edge,
    ck_moments,
    empirical_input,
    finite_network_kernels,
    max_stable_learning_rate,
    ntk_coefficients,
    ntk_density,
    ntk_edge,
    ntk_moments,
)
from ._common import check_seed, config_dict, dtype_name, float_grid, positive_int, versions
from ._output import check_out_dir, num, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "fan-wang"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        n: number of inputs (``>= 8``); d0: input dimension.
        widths: hidden widths (at least one layer).
        seeds: random networks (``>= 2``, for standard errors).
        sweep: width ratios gamma = n/d of the learning-rate sweep (increasing, > 0).
    """

    n: int = 1000
    d0: int = 1200
    widths: tuple[int, ...] = (1500, 1250, 1100)
    seeds: int = 4
    sweep: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)

    def __post_init__(self):
        positive_int(self.n, "n", lo=8)
        positive_int(self.d0, "d0", lo=1)
        if isinstance(self.widths, str) or not isinstance(self.widths, tuple) or not self.widths:
            raise ValueError(f"widths must be a non-empty tuple of integers, got {self.widths!r}")
        for i, w in enumerate(self.widths):
            positive_int(w, f"widths[{i}]", lo=1)
        positive_int(self.seeds, "seeds", lo=2)
        float_grid(self.sweep, "sweep", lo=0, lo_open=True)


FULL = Config()
# quick: n = 120 (the gammas of n = 200, d0 = 240, widths 300/250/220): the theory's solves scale with n, the
# tolerances are computed from n (edge quantile, 2/n on moments) and the seeds (standard errors). Measured in one
# loaded-machine session: CPU of run() 56.3 s at n = 200, 46.4 s at n = 120; float64 ok with max histogram z 3.35,
# float32 ok with the same precision bounds in tests/test_experiment_fan_wang.py
QUICK = Config(n=120, d0=144, widths=(180, 150, 132), seeds=3, sweep=(0.5, 2.0))


def _theory(inp, gammas, act, grids):
    """Edges, moments and densities of the CK of every layer and of the NTK, and 2/lambda_max (a
    float32 run compares them with float64 from the same inputs)."""
    L = gammas.shape[0]
    out = {}
    for l in range(1, L + 2):
        name = f"CK layer {l}" if l <= L else "NTK"
        if l <= L:
            out[f"{name} edge"] = ck_edge(inp, gammas, act, layer=l)
            out[f"{name} moments 1-3"] = ck_moments(inp, gammas, act, layer=l, order=3)
            out[f"{name} density"] = ck_density(inp, gammas, act, grids[l - 1], layer=l)
        else:
            out[f"{name} edge"] = ntk_edge(inp, gammas, act)
            out[f"{name} moments 1-3"] = ntk_moments(inp, gammas, act, order=3)
            out[f"{name} density"] = ntk_density(inp, gammas, act, grids[l - 1])
    out["2/lambda_max"] = max_stable_learning_rate(inp, gammas, act)
    return out


def _cdf(grid, dens):
    return np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])


def _histogram_check(ev_seeds, grid, dens, bins=24):
    """Counts of the pooled eigenvalues against N x the mass of the density in each bin."""
    ev = ev_seeds.ravel()
    lo, hi = float(ev.min()), float(ev.max())
    pad = 0.02 * (hi - lo)
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    cdf = _cdf(grid, dens)
    p = np.clip(np.diff(np.interp(edges, grid, cdf)), 0.0, 1.0)
    counts = np.histogram(ev, edges)[0]
    per_seed = np.stack([np.histogram(e, edges)[0] for e in ev_seeds])
    N, S = ev.size, ev_seeds.shape[0]
    se = np.sqrt(np.maximum(N * p * (1 - p), S * per_seed.var(axis=0, ddof=1)))
    z = np.abs(counts - N * p) / np.maximum(se, 1.0)
    ok = bool(np.all(np.abs(counts - N * p) < 5 * se + 2))
    return {"edges": edges.tolist(), "counts": counts.tolist(), "expected": (N * p).tolist(),
            "max_z": float(z.max()), "mass_in_range": float(cdf[-1]), "ok": ok}


def _edge_tolerance(grid, dens, edge, n, scale_rel=0.0):
    """3 x (edge - (1 - 1/n)-quantile of the limit law) + 3 x scale_rel x edge."""
    cdf = _cdf(grid, dens)
    q = float(np.interp(1 - 1 / n, cdf / cdf[-1], grid))
    return 3 * max(edge - q, 0.0) + 3 * scale_rel * edge


def _spectrum_report(name, ev, grid, dens, moments, edge, n, scale_rel):
    """ev: (seeds, n) eigenvalues of one kernel; theory: density on grid, moments (k = 1..3), edge."""
    hist = _histogram_check(ev, grid, dens)
    emp = np.stack([np.mean(ev**k, axis=1) for k in (1, 2, 3)], axis=1)  # (seeds, 3)
    mean, se = emp.mean(0), emp.std(0, ddof=1) / np.sqrt(emp.shape[0])
    mom_ok = bool(np.all(np.abs(mean - moments) < 5 * se + 2.0 / n * np.abs(moments)))
    lmax = ev[:, -1]
    tol = _edge_tolerance(grid, dens, edge, n, scale_rel)
    return {"name": name, "histogram": hist, "moments_theory": list(map(float, moments)),
            "moments_mean": mean.tolist(), "moments_se": se.tolist(), "moments_ok": mom_ok,
            "edge": float(edge), "lambda_max": lmax.tolist(), "lambda_max_tolerance": float(tol),
            "edge_ok": bool(abs(lmax.mean() - edge) < tol),
            "ok": bool(hist["ok"] and mom_ok and abs(lmax.mean() - edge) < tol)}


def _conditional_ntk(inp, gammas, act, ev, kappa, grid, n):
    """The NTK given kappa = |w|^2/d_L of each network: the law of kappa (r_+ I + sum_{l<L} r_l K_l) + K_L
    (same compiled programs as the NTK); pooled histogram against the mixture of the conditional laws,
    moments and largest eigenvalues seed by seed."""
    c = activation_constants(act)
    r_plus, r = ntk_coefficients(act, gammas.shape[0])
    grid = np.asarray(grid)
    dens, edges, moms = [], [], []
    for kp in kappa:
        coef = jnp.concatenate([kp * r[:-1], r[-1:]])
        dens.append(np.asarray(combination_density(inp, gammas, c.b2, kp * r_plus, coef, grid)))
        edges.append(float(combination_edge(inp, gammas, c.b2, kp * r_plus, coef)))
        moms.append(np.asarray(combination_moments(inp, gammas, c.b2, kp * r_plus, coef, order=3)))
    mix = np.mean(dens, axis=0)
    hist = _histogram_check(ev, grid, mix)
    emp = np.stack([np.mean(ev**k, axis=1) for k in (1, 2, 3)], axis=1)
    # relative residual of each network's (1/n) tr K^k against its own conditional law: mean over
    # networks within 5 standard errors plus 2/n
    rel = emp / np.stack(moms) - 1
    rel_mean, rel_se = rel.mean(0), rel.std(0, ddof=1) / np.sqrt(rel.shape[0])
    mom_ok = bool(np.all(np.abs(rel_mean) < 5 * rel_se + 2 / n))
    tol = [_edge_tolerance(grid, d, e, n) for d, e in zip(dens, edges)]
    lmax = ev[:, -1]
    edge_ok = bool(np.all(np.abs(lmax - np.array(edges)) < np.array(tol)))
    return {"name": "NTK given ‖w‖²/d_L", "kappa": kappa, "histogram": hist,
            "moments_theory": np.stack(moms).mean(0).tolist(),
            "moments_mean": emp.mean(0).tolist(), "moments_rel_residual": rel_mean.tolist(),
            "moments_rel_se": rel_se.tolist(), "moments_ok": mom_ok,
            "edge": float(np.mean(edges)), "edges": edges, "lambda_max": lmax.tolist(),
            "lambda_max_tolerance": float(np.mean(tol)), "edge_ok": edge_ok,
            "ok": bool(hist["ok"] and mom_ok and edge_ok), "grid": grid.tolist(), "density": mix.tolist()}


def _grid(edge):
    """Uniform on [0, 1.25 edge] plus a geometric refinement near 0 (steep lower edges when gamma ~ 1)."""
    return np.sort(np.concatenate([np.linspace(0.0, 1.25 * edge, 400), np.geomspace(1e-5, 0.05, 100) * edge]))


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes the figure and reports into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation).
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed (inputs and networks), in ``[0, 2**32 - 1]``.
        progress: show a progress bar.
        config: explicit sizes (overrides ``quick``).
    """
    from tqdm.auto import tqdm

    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a fan_wang.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    n, d0, widths, seeds, sweep = cfg.n, cfg.d0, cfg.widths, cfg.seeds, cfg.sweep
    L = len(widths)
    act = Tanh()
    key = jax.random.key(seed)
    kx, knet, ksweep = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n, d0))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    inp = empirical_input(x)
    gammas = jnp.asarray([n / d for d in widths], float)
    bar = tqdm(total=2 + len(sweep), desc="reproduce fan-wang", disable=not progress)

    bar.set_postfix_str("finite networks")
    kern = jax.jit(lambda k, x: finite_network_kernels(x, k, widths, act))
    ev = {f"CK layer {l}": [] for l in range(1, L + 1)}
    ev["NTK"], kappa = [], []
    for k in jax.random.split(knet, seeds):
        K = kern(k, x)
        for l in range(1, L + 1):
            ev[f"CK layer {l}"].append(np.linalg.eigvalsh(np.asarray(K.ck[l])))
        ev["NTK"].append(np.linalg.eigvalsh(np.asarray(K.ntk)))
        kappa.append(float(K.w_scale))
    ev = {name: np.stack(v) for name, v in ev.items()}
    bar.update()

    bar.set_postfix_str("theory")
    spectra = []
    for l in range(1, L + 2):  # CK of layers 1..L, then the NTK (one compiled program for all)
        name = f"CK layer {l}" if l <= L else "NTK"
        edge = float(ck_edge(inp, gammas, act, layer=l) if l <= L else ntk_edge(inp, gammas, act))
        grid = _grid(edge)
        if l <= L:
            dens = np.asarray(ck_density(inp, gammas, act, grid, layer=l))
            mom = np.asarray(ck_moments(inp, gammas, act, layer=l, order=3))
        else:
            dens = np.asarray(ntk_density(inp, gammas, act, grid))
            mom = np.asarray(ntk_moments(inp, gammas, act, order=3))
        scale_rel = 0.0 if l <= L else np.sqrt(2 / widths[-1])
        spectra.append(_spectrum_report(name, ev[name], grid, dens, mom, edge, n, scale_rel)
                       | {"grid": grid.tolist(), "density": dens.tolist()})
    spectra.append(_conditional_ntk(inp, gammas, act, ev["NTK"], kappa, spectra[-1]["grid"], n))
    values32 = {}
    for sp in spectra[:L + 1]:
        values32[f"{sp['name']} edge"] = sp["edge"]
        values32[f"{sp['name']} moments 1-3"] = sp["moments_theory"]
        values32[f"{sp['name']} density"] = sp["density"]
    values32["2/lambda_max"] = float(max_stable_learning_rate(inp, gammas, act))
    precision = float64_comparison(_theory, inp, gammas, act,
                                   [jnp.asarray(sp["grid"], float) for sp in spectra[:L + 1]],
                                   float32_values=values32)
    bar.update()

    # 2 / lambda_max against the width ratio (all hidden layers of width n / gamma)
    sweep_rows = []
    kern_sweep = jax.jit(lambda k, x, ws: finite_network_kernels(x, k, ws, act), static_argnums=2)
    for g, k in zip(sweep, jax.random.split(ksweep, len(sweep))):
        bar.set_postfix_str(f"learning-rate sweep gamma={g}")
        ws = (int(round(n / g)),) * L
        gs = jnp.asarray([n / w for w in ws], float)
        edge = float(ntk_edge(inp, gs, act))
        lr = float(max_stable_learning_rate(inp, gs, act))
        grid = _grid(edge)
        tol = _edge_tolerance(grid, np.asarray(ntk_density(inp, gs, act, grid)), edge, n, np.sqrt(2 / ws[-1]))
        lam = [float(np.linalg.eigvalsh(np.asarray(kern_sweep(kk, x, ws).ntk))[-1]) for kk in jax.random.split(k, 2)]
        sweep_rows.append({"gamma": g, "widths": ws, "edge": edge, "lr_theory": lr, "lambda_max": lam,
                           "lambda_max_tolerance": tol, "lr_finite": [2 / v for v in lam],
                           "ok": bool(all(abs(v - edge) < tol for v in lam))})
        bar.update()

    bar.close()
    ntk = next(s for s in spectra if s["name"] == "NTK")
    lr_star = 2 / ntk["edge"]

    checks = {s["name"]: {"histogram": s["histogram"]["ok"], "moments": s["moments_ok"], "edge": s["edge_ok"]}
              for s in spectra}
    checks["learning_rate_sweep"] = all(r["ok"] for r in sweep_rows)
    ok = all(s["ok"] for s in spectra) and checks["learning_rate_sweep"]
    c = activation_constants(act)
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
        "seconds": time.perf_counter() - t0,
        "config": {**config_dict(cfg), "gammas": np.asarray(gammas).tolist(), "activation": "tanh, normalized",
                   "b_sigma2": float(c.b2), "a_sigma": float(c.a)},
        "spectra": spectra, "learning_rate_sweep": sweep_rows, "max_stable_learning_rate": lr_star,
        "checks": checks, "precision": precision,
        "summary": f"NTK lambda_max: theory {ntk['edge']:.4f}, finite {np.mean(ntk['lambda_max']):.4f} "
                   f"(n = {n}); max histogram z = {max(s['histogram']['max_z'] for s in spectra):.2f}; "
                   f"2/lambda_max = {lr_star:.5f}",
        "versions": versions(),
    }
    _figure(report, out / "fan_wang.png")
    write_report(out, report, _markdown(report))
    return report


def _figure(r, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    spectra = r["spectra"]
    fig = Figure(figsize=(16, 9))
    axes = fig.subplots(2, 3)
    panels = list(axes[0]) + [axes[1, 0]]
    cond = spectra[-1]
    axes[1, 0].plot(cond["grid"], cond["density"], "C1--", lw=1.5, label=r"given $\Vert w\Vert^2/d_L$ (mixture)")
    for ax, s in zip(panels, spectra):
        h = s["histogram"]
        edges, counts = np.array(h["edges"]), np.array(h["counts"])
        width = np.diff(edges)
        N = counts.sum()
        ax.bar(edges[:-1], counts / (N * width), width=width, align="edge", color="0.8", edgecolor="0.5",
               label=f"{r['config']['seeds']} networks, n = {r['config']['n']}")
        ax.plot(s["grid"], s["density"], "C3", lw=2, label="Fan & Wang limit")
        ax.axvline(s["edge"], color="C0", ls="--", lw=1, label=r"edge $\lambda_{\max}$")
        ax.plot(s["lambda_max"], [0] * len(s["lambda_max"]), "kx", ms=8, label=r"finite $\lambda_{\max}$")
        ax.set(title=s["name"], xlabel="eigenvalue", ylabel="density", ylim=(0, 1.6 * np.max(counts / (N * width))))
        ax.legend(fontsize=8)
    ax = axes[1, 1]
    rows = r["learning_rate_sweep"]
    g = [row["gamma"] for row in rows]
    ax.plot(g, [row["lr_theory"] for row in rows], "C3o-", label=r"theory $2/\lambda_{\max}$")
    for row in rows:
        ax.plot([row["gamma"]] * len(row["lr_finite"]), row["lr_finite"], "kx", ms=8)
    ax.plot([], [], "kx", label="finite networks")
    ax.set(xscale="log", xlabel=r"$\gamma = n/d$ (all hidden layers)", ylabel="largest stable learning rate",
           title=f"NTK, L = {len(r['config']['widths'])}")
    ax.set_xticks(g, [f"{v:g}" for v in g])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    names = [s["name"] for s in spectra[:-1]]
    for i, s in enumerate(spectra[:-1]):
        ax.errorbar([i], [s["edge"]], yerr=[s["lambda_max_tolerance"]], fmt="C3o", capsize=4)
        ax.plot([i] * len(s["lambda_max"]), s["lambda_max"], "kx", ms=8)
    ax.plot([], [], "C3o", label="edge (tolerance bar)")
    ax.plot([], [], "kx", label=r"finite $\lambda_{\max}$")
    ax.set(xticks=range(len(names)), xticklabels=names, ylabel=r"$\lambda_{\max}$", title="largest eigenvalues")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _markdown(r):
    cfg = r["config"]
    lines = [
        "# CK and NTK spectra at linear width (Fan & Wang 2020)", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). "
        f"n = {cfg['n']}, d0 = {cfg['d0']}, widths = {nums(cfg['widths'])} (gamma = "
        f"{nums(cfg['gammas'], 3)}), {cfg['activation']} (b_sigma^2 = {cfg['b_sigma2']:.4f}, "
        f"a_sigma = {cfg['a_sigma']:.4f}), {cfg['seeds']} networks.", "",
        "| kernel | histogram max z | moments 1..3 theory | moments 1..3 finite (mean) | edge "
        "| finite lambda_max | ok |",
        "|---|---:|---|---|---:|---|:---:|",
    ]
    for s in r["spectra"]:
        lines.append(f"| {s['name']} | {s['histogram']['max_z']:.2f} | {nums(s['moments_theory'])} | "
                     f"{nums(s['moments_mean'])} | {s['edge']:.4f} | "
                     f"{nums(s['lambda_max'])} | {'yes' if s['ok'] else 'no'} |")
    lines += ["", "| gamma = n/d | 2/lambda_max theory | 2/lambda_max finite | ok |", "|---:|---:|---|:---:|"]
    for row in r["learning_rate_sweep"]:
        lines.append(f"| {num(row['gamma'])} | {row['lr_theory']:.4f} | {nums(row['lr_finite'])} | "
                     f"{'yes' if row['ok'] else 'no'} |")
    lines += ["", f"Largest stable learning rate of (linearized) full-batch GD on 0.5 ||f(X) - y||^2 at the main "
              f"configuration: 2/lambda_max = {r['max_stable_learning_rate']:.5f}.", ""]
    lines += precision_lines(r.get("precision"))
    lines += ["![CK and NTK spectra, learning rates, largest eigenvalues](fan_wang.png)", ""]
    return "\n".join(lines)
