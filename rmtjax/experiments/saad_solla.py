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
   seed-to-seed standard errors) must give the slope :math:`-1/2` within 0.15 (0.25 in the quick run) or within 3
   standard errors of the fit, whichever is larger.

Partial results (one entry per finished ``N`` of part 2) are saved to ``resume.json`` as they
finish; a rerun with the same configuration resumes from it
(:class:`rmtjax.experiments._resume.ResumeFile`). In a float32 run the report also gives the
largest differences of the ODE curves and the plateau fixed point to float64 (same initial
conditions). Writes ``saad_solla.png``, ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..dynamics._committee import CommitteeState, committee_fixed_point, committee_ode
from ..dynamics._simulation import simulate_committee
from ._common import check_seed, config_dict, dtype_name, int_grid, number, positive_int, versions
from ._output import check_out_dir, num, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "saad-solla"
K = M = 2
ETA = 0.5


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        N_plateau: input dimension of the plateau runs; seeds: their number (``>= 2``).
        t_max: their final time (long enough to escape the plateau, ``> 10``); saves: recorded times.
        gap_Ns: input dimensions of the finite-N gap (at least 2, increasing); gap_seeds (``>= 2``),
        t_gap (``> 0``), gap_saves: its runs; gap_slope_tolerance: the fitted slope must be within
        the larger of this and 3 standard errors of -1/2.
    """

    N_plateau: int = 500
    seeds: int = 8
    t_max: float = 300.0
    saves: int = 300
    gap_Ns: tuple[int, ...] = (500, 1000, 2000, 5000, 10000)
    gap_seeds: int = 8
    t_gap: float = 2.0
    gap_saves: int = 4
    gap_slope_tolerance: float = 0.15

    def __post_init__(self):
        positive_int(self.N_plateau, "N_plateau", lo=2)
        positive_int(self.seeds, "seeds", lo=2)
        number(self.t_max, "t_max", lo=10, lo_open=True)
        positive_int(self.saves, "saves", lo=2)
        int_grid(self.gap_Ns, "gap_Ns", lo=2, min_len=2)
        positive_int(self.gap_seeds, "gap_seeds", lo=2)
        number(self.t_gap, "t_gap", lo=0, lo_open=True)
        positive_int(self.gap_saves, "gap_saves", lo=1)
        number(self.gap_slope_tolerance, "gap_slope_tolerance", lo=0, lo_open=True)


FULL = Config()
# quick: N over a 16x range only; with 8 seeds per N the fitted slopes of master seeds 0-5 spread from
# -0.37 to -0.80 in float32 (-0.54, -0.61 for seeds 0-1 in float64) while the fit's own standard error
# said 0.07-0.09: 16 seeds and a tolerance of 0.25 (a smoke-level check; the full run keeps 0.15)
QUICK = Config(N_plateau=200, seeds=4, t_max=250.0, saves=125, gap_Ns=(100, 400, 1600), gap_seeds=16, t_gap=4.0,
               gap_saves=8, gap_slope_tolerance=0.25)
_ode_batch = eqx.filter_jit(jax.vmap(committee_ode, in_axes=(0, None, None, None, None)))


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _simulate_batch(keys, w0, wt, t_max, saves, progress):
    """Online SGD of every seed (vmapped); compiled once per shape (a rerun reuses the program)."""
    return jax.vmap(functools.partial(simulate_committee, t_max=t_max, num_saves=saves, progress=progress),
                    in_axes=(0, 0, None, None, None, None))(keys, w0, jnp.ones(K), wt, jnp.ones(M), ETA)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _setup(key, N, seeds, scale=0.5):
    """Teacher rows with ||w~||^2 = N (T ~ I), student weights N(0, scale^2), v = v~ = 1; the
    teacher overlaps T and the seeds' keys (one compiled program per N: eagerly each draw and
    product compiles its own)."""
    kw, ks = jax.random.split(key)
    k1, k2 = jax.random.split(kw)
    wt = jax.random.normal(k1, (M, N))
    w0 = scale * jax.random.normal(k2, (seeds, K, N))
    return w0, wt, wt @ wt.T / N, jax.random.split(ks, seeds)


def _sim_and_ode(key, N, seeds, t_max, saves, progress):
    w0, wt, T, keys = _setup(key, N, seeds)
    desc = f"SGD N={N} ({seeds} seeds)" if progress else False
    sim = jax.tree.map(np.asarray, _simulate_batch(keys, w0, wt, float(t_max), saves, desc))
    s0 = CommitteeState(*(jnp.asarray(a[:, 0]) for a in (sim.Q, sim.R, sim.v)))  # sliced on the host
    ode = _ode_batch(s0, T, jnp.ones(M, T.dtype), jnp.asarray(sim.t[0]), jnp.asarray(ETA, T.dtype))
    return sim, jax.tree.map(np.asarray, ode), np.asarray(T)


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


def _theory(s0, T, t, guess):
    """The ODE curves from the runs' initial order parameters and the plateau fixed point (a
    float32 run compares them with float64 from the same initial conditions)."""
    ode = _ode_batch(s0, T, jnp.ones(M, T.dtype), t, jnp.asarray(ETA, T.dtype))
    fp = committee_fixed_point(guess, T, jnp.ones(M, T.dtype), jnp.asarray(ETA, T.dtype))
    return {"ODE eps_g (every seed and time)": ode.eps_g, "plateau eps_g (fixed point)": fp.eps_g,
            "plateau growth rate": fp.growth_rate}


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes the figure and reports into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the finished gap runs.
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed, in ``[0, 2**32 - 1]``.
        progress: show progress bars.
        config: explicit sizes (overrides ``quick``).
    """
    from tqdm.auto import tqdm

    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a saad_solla.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    resume = ResumeFile(out, NAME, {"config": config_dict(cfg), "seed": seed, "dtype": dtype_name()})
    key_plateau, key_gap = jax.random.split(jax.random.key(seed))
    bar = tqdm(total=2 + len(cfg.gap_Ns), desc="reproduce saad-solla", disable=not progress)

    # 1. plateau ---------------------------------------------------------------------------
    bar.set_postfix_str(f"plateau, N={cfg.N_plateau}")
    sim, ode, T = _sim_and_ode(key_plateau, cfg.N_plateau, cfg.seeds, cfg.t_max, cfg.saves, progress)
    t = sim.t[0]
    ode_mean = ode.eps_g.mean(0)
    # the plateau: where the seed-averaged ODE curve is flattest (after the escape log eps_g
    # falls linearly, at the rate of the specialised fixed point)
    slope_e = np.abs(np.gradient(np.log(ode_mean), t))
    window = (t > 10) & (ode_mean > 1e-4)
    i_pl = int(np.argmin(np.where(window, slope_e, np.inf)))
    Qm = ode.Q[:, i_pl].mean(0)
    guess = CommitteeState(jnp.asarray((Qm + Qm.T) / 2), jnp.asarray(ode.R[:, i_pl].mean(0)), jnp.ones(K, T.dtype))
    fp = committee_fixed_point(guess, jnp.asarray(T), jnp.ones(M, T.dtype), jnp.asarray(ETA, T.dtype))
    plateau = float(fp.eps_g)
    sim_plateau = float(sim.eps_g[:, i_pl].mean())
    sim_plateau_se = float(sim.eps_g[:, i_pl].std(ddof=1) / math.sqrt(cfg.seeds))
    esc_sim = np.array([_crossing(t, e, 0.5 * plateau) for e in sim.eps_g])
    esc_ode = np.array([_crossing(t, e, 0.5 * plateau) for e in ode.eps_g])
    # symmetric to the last bit: the float64 recomputation checks symmetry at float64 precision
    Q0 = sim.Q[:, 0]
    s0 = CommitteeState(jnp.asarray((Q0 + np.swapaxes(Q0, -1, -2)) / 2), jnp.asarray(sim.R[:, 0]),
                        jnp.asarray(sim.v[:, 0]))
    precision = float64_comparison(
        _theory, s0, jnp.asarray(T), jnp.asarray(t), guess,
        float32_values={"ODE eps_g (every seed and time)": ode.eps_g, "plateau eps_g (fixed point)": plateau,
                        "plateau growth rate": float(fp.growth_rate)})
    bar.update()

    # 2. gap vs N (resumable) -------------------------------------------------------------
    gap_curves = {}
    for i, N in enumerate(cfg.gap_Ns):
        bar.set_postfix_str(f"gap, N={N}")
        if f"N={N}" not in resume:
            s, o, _ = _sim_and_ode(jax.random.fold_in(key_gap, i), N, cfg.gap_seeds, cfg.t_gap, cfg.gap_saves,
                                   progress)
            d = s.eps_g[:, 1:] - o.eps_g[:, 1:]
            resume.put(f"N={N}", {"rms_gap_per_seed": np.sqrt(np.mean(d**2, axis=1)), "t": s.t[0],
                                  "sim_mean": s.eps_g.mean(0), "ode_mean": o.eps_g.mean(0)})
        gap_curves[N] = resume[f"N={N}"]
        bar.update()
    Ns = np.array(cfg.gap_Ns, float)
    m, se, gslope, gslope_se, icpt = _gap_fit(Ns, [gap_curves[N]["rms_gap_per_seed"] for N in cfg.gap_Ns])

    # checks ------------------------------------------------------------------------------
    esc_s, esc_o = float(np.nanmean(esc_sim)), float(np.nanmean(esc_ode))
    R_fp = np.asarray(fp.state.R, np.float64)
    checks = {
        "fixed_point_converged": bool(fp.ok),
        # symmetric up to the O(N^-1/2) asymmetry of the empirical teacher overlaps T
        "plateau_symmetric": bool(np.allclose(R_fp, float(np.mean(R_fp)), rtol=0.1)),
        "plateau_rel_diff_sim_vs_fixed_point": abs(sim_plateau - plateau) / plateau,
        "plateau_ok": bool(abs(sim_plateau - plateau) < 0.1 * plateau),
        "escape_rel_diff_sim_vs_ode": abs(esc_s - esc_o) / esc_o if np.isfinite(esc_o) else float("nan"),
        "escape_ok": bool(np.isfinite(esc_s) and np.isfinite(esc_o) and abs(esc_s - esc_o) < 0.35 * esc_o),
        "learns_teacher": bool(sim.eps_g[:, -1].mean() < 0.01 * plateau and ode_mean[-1] < 0.01 * plateau),
        "gap_slope": gslope,
        "gap_slope_se": gslope_se,
        "gap_slope_tolerance": max(cfg.gap_slope_tolerance, 3 * gslope_se),
        "gap_like_inverse_sqrt_n": bool(abs(gslope + 0.5) < max(cfg.gap_slope_tolerance, 3 * gslope_se)),
    }
    ok = all(checks[k] for k in ("fixed_point_converged", "plateau_symmetric", "plateau_ok", "escape_ok",
                                 "learns_teacher", "gap_like_inverse_sqrt_n"))
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
        "seconds": time.perf_counter() - t0,
        "config": {**config_dict(cfg), "K": K, "M": M, "eta": ETA, "activation": "erf(x/sqrt(2))", "init_scale": 0.5},
        "plateau": {
            "fixed_point_eps_g": plateau, "growth_rate": float(fp.growth_rate), "t_plateau": float(t[i_pl]),
            "sim_eps_g_at_t_plateau": sim_plateau, "sim_eps_g_at_t_plateau_se": sim_plateau_se,
            "ode_eps_g_at_t_plateau": float(ode_mean[i_pl]),
            "escape_time_sim": esc_sim.tolist(), "escape_time_ode": esc_ode.tolist(),
            "t": t.tolist(), "sim_eps_g": sim.eps_g.tolist(), "ode_eps_g": ode.eps_g.tolist(),
            "sim_R": sim.R[0].reshape(len(t), -1).tolist(), "ode_R": ode.R[0].reshape(len(t), -1).tolist(),
        },
        "gap": {"N": list(cfg.gap_Ns), "mean": m.tolist(), "se": se.tolist(), "slope": gslope, "slope_se": gslope_se,
                "intercept": icpt, "curves": {str(k): v for k, v in gap_curves.items()}},
        "checks": checks, "precision": precision, "resume": resume.summary(),
        "summary": (f"plateau eps_g: sim {sim_plateau:.5f} vs fixed point {plateau:.5f}; escape t (eps_g = plateau/2): "
                    f"sim {esc_s:.1f} vs ODE {esc_o:.1f}; |sim - ODE| ~ N^{gslope:.3f} +- {gslope_se:.3f}"),
        "versions": versions(),
    }
    bar.update()
    bar.close()
    _figure(report, out / "saad_solla.png")
    write_report(out, report, _markdown(report))
    return report


def _figure(r, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    p, g, c = r["plateau"], r["gap"], r["config"]
    t = np.array(p["t"])
    fig = Figure(figsize=(16, 4.6))
    ax = fig.subplots(1, 3)
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
    save_figure(fig, path, dpi=110)


def _markdown(r):
    p, g, c, ch = r["plateau"], r["gap"], r["config"], r["checks"]
    lines = [
        "# Saad-Solla: online SGD of a soft committee machine, ODEs vs simulation", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s"
        f" ({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). {r['summary']}.", "",
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
              "Checks: " + ", ".join(f"{k.replace('_', ' ')} = {num(v)}" for k, v in ch.items()) + ".", ""]
    lines += precision_lines(r.get("precision"))
    lines += ["![eps_g vs t, overlaps, gap vs N](saad_solla.png)", ""]
    return "\n".join(lines)
