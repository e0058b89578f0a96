r"""Online SGD of a soft committee machine: the Saad-Solla ODEs against simulations.

``rmtjax reproduce saad-solla`` reproduces the plateau picture of Saad & Solla (1995, Phys. Rev.
E 52, 4225, Figs. 1-2) and Biehl & Schwarze (1995) for :math:`g = \operatorname{erf}(x/\sqrt2)`,
``K = M = 2``, orthonormal teacher, :math:`\eta = 0.5` (:mod:`rmtjax.dynamics`):

1. **Plateau.** Online SGD at input dimension ``N`` (``seeds`` runs, ``jax.vmap`` over seeds)
   from small random weights, and the ODEs started at each run's own initial order parameters
   (vmapped). ``ok`` requires the simulated :math:`\epsilon_g` on the plateau to match the
   height of the symmetric fixed point (:func:`rmtjax.dynamics.committee_fixed_point`) within
   10%, the seed-averaged escape times of simulation and ODE to agree within 35% (finite-N
   noise adds symmetry breaking, so the simulation escapes somewhat earlier), and both to
   learn the teacher (final :math:`\epsilon_g` below 1% of the plateau).
2. **Finite-N gap.** For several ``N`` the RMS difference between simulated and ODE
   :math:`\epsilon_g` over :math:`0 < t \le t_{gap}` (per seed, averaged): a weighted
   least-squares fit of :math:`\log` gap against :math:`\log N` (weights from the
   seed-to-seed standard errors) must give the slope :math:`-1/2` within 0.15 or within 3
   standard errors of the fit, whichever is larger.

Partial results (one entry per finished ``N`` of part 2) go to ``partial.json`` as they finish;
a rerun with the same configuration resumes from it. Writes ``saad_solla.png``,
``report.json`` and ``report.md``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..dynamics._committee import CommitteeState, committee_fixed_point, committee_ode
from ..dynamics._simulation import simulate_committee

__all__ = ["run", "CONFIGS"]

K = M = 2
ETA = 0.5
CONFIGS = {
    "quick": dict(N_plateau=200, seeds=4, t_max=250.0, saves=125, gap_Ns=(100, 400, 1600), gap_seeds=8, t_gap=4.0,
                  gap_saves=8),
    "full": dict(N_plateau=500, seeds=8, t_max=300.0, saves=300, gap_Ns=(500, 1000, 2000, 5000, 10000),
                 gap_seeds=8, t_gap=2.0, gap_saves=4),
}
_ode_batch = eqx.filter_jit(jax.vmap(committee_ode, in_axes=(0, None, None, None, None)))


def _setup(key, N, seeds, scale=0.5):
    """Teacher rows with ||w~||^2 = N (T ~ I), student weights N(0, scale^2), v = v~ = 1."""
    k1, k2 = jax.random.split(key)
    wt = jax.random.normal(k1, (M, N))
    w0 = scale * jax.random.normal(k2, (seeds, K, N))
    return w0, wt


def _sim_and_ode(key, N, seeds, t_max, saves, progress):
    kw, ks = jax.random.split(key)
    w0, wt = _setup(kw, N, seeds)
    desc = f"SGD N={N} ({seeds} seeds)" if progress else False
    sim = jax.jit(jax.vmap(functools.partial(simulate_committee, t_max=t_max, num_saves=saves, progress=desc),
                           in_axes=(0, 0, None, None, None, None)))(
        jax.random.split(ks, seeds), w0, jnp.ones(K), wt, jnp.ones(M), ETA)
    T = wt @ wt.T / N
    s0 = CommitteeState(sim.Q[:, 0], sim.R[:, 0], sim.v[:, 0])
    ode = _ode_batch(s0, T, jnp.ones(M), sim.t[0], jnp.asarray(ETA))
    return jax.tree.map(np.asarray, sim), jax.tree.map(np.asarray, ode), np.asarray(T)


def _crossing(t, e, level, t_min=10.0):
    """First time after ``t_min`` at which ``e`` falls below ``level`` (linear interpolation)."""
    idx = np.nonzero((e < level) & (t > t_min))[0]
    if len(idx) == 0:
        return float("nan")
    j = idx[0]
    return float(np.interp(level, [e[j], e[j - 1]], [t[j], t[j - 1]]))


def _gap_fit(Ns, gaps):
    g = np.asarray(gaps)
    m, se = g.mean(1), g.std(1, ddof=1) / math.sqrt(g.shape[1])
    x, y, w = np.log(Ns), np.log(m), (m / se) ** 2
    xb = np.sum(w * x) / np.sum(w)
    slope = float(np.sum(w * (x - xb) * y) / np.sum(w * (x - xb) ** 2))
    slope_se = float(1 / math.sqrt(np.sum(w * (x - xb) ** 2)))
    icpt = float(np.sum(w * (y - slope * x)) / np.sum(w))
    return m, se, slope, slope_se, icpt


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Runs the reproduction and writes the figure and reports into ``out_dir``."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = CONFIGS["quick" if quick else "full"]
    key_plateau, key_gap = jax.random.split(jax.random.key(seed))
    bar = tqdm(total=2 + len(cfg["gap_Ns"]), desc="reproduce saad-solla", disable=not progress)

    # 1. plateau ---------------------------------------------------------------------------
    bar.set_postfix_str(f"plateau, N={cfg['N_plateau']}")
    sim, ode, T = _sim_and_ode(key_plateau, cfg["N_plateau"], cfg["seeds"], cfg["t_max"], cfg["saves"], progress)
    t = sim.t[0]
    ode_mean = ode.eps_g.mean(0)
    # the plateau: where the seed-averaged ODE curve is flattest (after the escape log eps_g
    # falls linearly, at the rate of the specialised fixed point)
    slope_e = np.abs(np.gradient(np.log(ode_mean), t))
    window = (t > 10) & (ode_mean > 1e-4)
    i_pl = int(np.argmin(np.where(window, slope_e, np.inf)))
    fp = committee_fixed_point(CommitteeState(jnp.asarray(ode.Q[:, i_pl].mean(0)), jnp.asarray(ode.R[:, i_pl].mean(0)),
                                              jnp.ones(K)), jnp.asarray(T), jnp.ones(M), ETA)
    plateau = float(fp.eps_g)
    sim_plateau = float(sim.eps_g[:, i_pl].mean())
    sim_plateau_se = float(sim.eps_g[:, i_pl].std(ddof=1) / math.sqrt(cfg["seeds"]))
    esc_sim = np.array([_crossing(t, e, 0.5 * plateau) for e in sim.eps_g])
    esc_ode = np.array([_crossing(t, e, 0.5 * plateau) for e in ode.eps_g])
    bar.update()

    # 2. gap vs N (resumable) -------------------------------------------------------------
    partial_path = out / "partial.json"
    key_cfg = json.dumps({"cfg": cfg, "seed": seed}, sort_keys=True)
    done: dict[str, Any] = {}
    if partial_path.exists():
        try:
            prev = json.loads(partial_path.read_text())
            if prev.get("config") == key_cfg:
                done = prev["gaps"]
        except (json.JSONDecodeError, KeyError):
            done = {}
    gap_curves = {}
    for i, N in enumerate(cfg["gap_Ns"]):
        bar.set_postfix_str(f"gap, N={N}")
        if str(N) not in done:
            s, o, _ = _sim_and_ode(jax.random.fold_in(key_gap, i), N, cfg["gap_seeds"], cfg["t_gap"], cfg["gap_saves"],
                                   progress)
            d = s.eps_g[:, 1:] - o.eps_g[:, 1:]
            done[str(N)] = {"rms_gap_per_seed": np.sqrt(np.mean(d**2, axis=1)).tolist(), "t": s.t[0].tolist(),
                            "sim_mean": s.eps_g.mean(0).tolist(), "ode_mean": o.eps_g.mean(0).tolist()}
            partial_path.write_text(json.dumps({"config": key_cfg, "gaps": done}))
        gap_curves[N] = done[str(N)]
        bar.update()
    Ns = np.array(cfg["gap_Ns"], float)
    m, se, gslope, gslope_se, icpt = _gap_fit(Ns, [gap_curves[N]["rms_gap_per_seed"] for N in cfg["gap_Ns"]])

    # checks ------------------------------------------------------------------------------
    esc_s, esc_o = float(np.nanmean(esc_sim)), float(np.nanmean(esc_ode))
    checks = {
        "fixed_point_converged": bool(fp.ok),
        # symmetric up to the O(N^-1/2) asymmetry of the empirical teacher overlaps T
        "plateau_symmetric": bool(np.allclose(np.asarray(fp.state.R), float(np.mean(fp.state.R)), rtol=0.1)),
        "plateau_rel_diff_sim_vs_fixed_point": abs(sim_plateau - plateau) / plateau,
        "plateau_ok": bool(abs(sim_plateau - plateau) < 0.1 * plateau),
        "escape_rel_diff_sim_vs_ode": abs(esc_s - esc_o) / esc_o if np.isfinite(esc_o) else float("nan"),
        "escape_ok": bool(np.isfinite(esc_s) and np.isfinite(esc_o) and abs(esc_s - esc_o) < 0.35 * esc_o),
        "learns_teacher": bool(sim.eps_g[:, -1].mean() < 0.01 * plateau and ode_mean[-1] < 0.01 * plateau),
        "gap_slope": gslope,
        "gap_slope_se": gslope_se,
        "gap_like_inverse_sqrt_n": bool(abs(gslope + 0.5) < max(0.15, 3 * gslope_se)),
    }
    ok = all(checks[k] for k in ("fixed_point_converged", "plateau_symmetric", "plateau_ok", "escape_ok",
                                 "learns_teacher", "gap_like_inverse_sqrt_n"))
    report = {
        "name": "saad-solla", "ok": ok, "quick": quick, "seed": seed, "seconds": time.perf_counter() - t0,
        "config": {**cfg, "K": K, "M": M, "eta": ETA, "activation": "erf(x/sqrt(2))", "init_scale": 0.5},
        "plateau": {
            "fixed_point_eps_g": plateau, "growth_rate": float(fp.growth_rate), "t_plateau": float(t[i_pl]),
            "sim_eps_g_at_t_plateau": sim_plateau, "sim_eps_g_at_t_plateau_se": sim_plateau_se,
            "ode_eps_g_at_t_plateau": float(ode_mean[i_pl]),
            "escape_time_sim": esc_sim.tolist(), "escape_time_ode": esc_ode.tolist(),
            "t": t.tolist(), "sim_eps_g": sim.eps_g.tolist(), "ode_eps_g": ode.eps_g.tolist(),
            "sim_R": sim.R[0].reshape(len(t), -1).tolist(), "ode_R": ode.R[0].reshape(len(t), -1).tolist(),
        },
        "gap": {"N": cfg["gap_Ns"], "mean": m.tolist(), "se": se.tolist(), "slope": gslope, "slope_se": gslope_se,
                "intercept": icpt, "curves": {str(k): v for k, v in gap_curves.items()}},
        "checks": checks,
        "summary": (f"plateau eps_g: sim {sim_plateau:.5f} vs fixed point {plateau:.5f}; escape t (eps_g = plateau/2): "
                    f"sim {esc_s:.1f} vs ODE {esc_o:.1f}; |sim - ODE| ~ N^{gslope:.3f} +- {gslope_se:.3f}"),
        "versions": {"jax": jax.__version__},
    }
    bar.update()
    bar.close()
    _figure(report, out / "saad_solla.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(_markdown(report))
    return report


def _figure(r, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, g, c = r["plateau"], r["gap"], r["config"]
    t = np.array(p["t"])
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))
    sim, ode = np.array(p["sim_eps_g"]), np.array(p["ode_eps_g"])
    for i in range(sim.shape[0]):
        ax[0].semilogy(t, sim[i], color="C0", lw=0.6, alpha=0.5, label="simulation (per seed)" if i == 0 else None)
        ax[0].semilogy(t, ode[i], color="C3", lw=0.8, ls="--", alpha=0.8, label="ODE (per seed)" if i == 0 else None)
    ax[0].axhline(p["fixed_point_eps_g"], color="k", ls=":", label="symmetric fixed point")
    ax[0].set(xlabel=r"$t = \mu/N$", ylabel=r"$\epsilon_g$",
              title=f"erf K=M=2, $\\eta$={c['eta']}, N={c['N_plateau']}")
    ax[0].legend(fontsize=8)
    sR, oR = np.array(p["sim_R"]), np.array(p["ode_R"])
    for j in range(sR.shape[1]):
        ax[1].plot(t, sR[:, j], color=f"C{j}", lw=1, label=f"$R_{{{j // 2 + 1}{j % 2 + 1}}}$ sim")
        ax[1].plot(t, oR[:, j], color=f"C{j}", lw=1, ls="--")
    ax[1].set(xlabel=r"$t$", ylabel="R (seed 0; dashed: ODE)", title="specialisation after the plateau")
    ax[1].legend(fontsize=8)
    Ns, m, se = np.array(g["N"], float), np.array(g["mean"]), np.array(g["se"])
    ax[2].errorbar(Ns, m, yerr=se, fmt="o", capsize=3, label="RMS |sim - ODE| (mean over seeds)")
    ax[2].loglog(Ns, np.exp(g["intercept"]) * Ns ** g["slope"], "k-", label=f"fit: slope {g['slope']:.3f}")
    ax[2].loglog(Ns, m[0] * (Ns / Ns[0]) ** -0.5, "k:", label="slope -1/2")
    ax[2].set(xlabel="N", ylabel=r"gap in $\epsilon_g$", title=f"finite-N gap, $0 < t \\leq {c['t_gap']}$")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(r):
    p, g, c, ch = r["plateau"], r["gap"], r["config"], r["checks"]
    lines = [
        "# Saad-Solla: online SGD of a soft committee machine, ODEs vs simulation", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s"
        f" ({'quick' if r['quick'] else 'full'} mode). {r['summary']}.", "",
        f"Setting: g = erf(x/sqrt 2), K = M = 2, eta = {c['eta']}, orthonormal teacher (T ~ I), v = v~ = 1 fixed, "
        f"student weights N(0, {c['init_scale']}^2); simulation: {c['seeds']} seeds vmapped at N = {c['N_plateau']}; "
        "ODE (diffrax Tsit5) from each run's own initial order parameters.", "",
        "| quantity | simulation | ODE / theory |", "|---|---:|---:|",
        f"| eps_g on the plateau (t = {p['t_plateau']:.0f}) | {p['sim_eps_g_at_t_plateau']:.5f} "
        f"+- {p['sim_eps_g_at_t_plateau_se']:.5f} | {p['fixed_point_eps_g']:.5f} (fixed point); "
        f"{p['ode_eps_g_at_t_plateau']:.5f} (ODE) |",
        f"| escape time (eps_g = plateau/2), mean over seeds | {np.nanmean(p['escape_time_sim']):.1f} | "
        f"{np.nanmean(p['escape_time_ode']):.1f} |",
        f"| plateau growth rate (saddle's unstable eigenvalue) | | {p['growth_rate']:.5f} "
        f"(1/rate = {1 / p['growth_rate']:.1f}) |", "",
        f"Finite-N gap (RMS over 0 < t <= {c['t_gap']} of sim - ODE eps_g, {c['gap_seeds']} seeds):", "",
        "| N | mean gap | SE |", "|---:|---:|---:|",
    ]
    lines += [f"| {n} | {a:.3e} | {b:.1e} |" for n, a, b in zip(g["N"], g["mean"], g["se"])]
    lines += ["", f"Fitted slope of log gap vs log N: {g['slope']:.3f} +- {g['slope_se']:.3f} (theory -1/2).", "",
              "Checks: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in ch.items()),
              "", "![eps_g vs t, overlaps, gap vs N](saad_solla.png)", ""]
    return "\n".join(lines)
