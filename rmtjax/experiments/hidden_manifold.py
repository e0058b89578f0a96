r"""Online SGD on the hidden manifold model: ODEs vs simulation, and Gaussian equivalence.

``rmtjax reproduce hidden-manifold`` reproduces, at CPU size, the setting of Goldt, Mezard,
Krzakala & Zdeborova, "Modelling the influence of data structure on learning in neural networks:
the hidden manifold model" (Phys. Rev. X 10, 041044, 2020; arXiv:1909.11500), and the check of
Goldt, Reeves et al., "The Gaussian equivalence of generative models for learning with two-layer
neural networks" (arXiv:2006.14709):

* **Dynamics panel.** Inputs :math:`x = \operatorname{sign}(Fc/\sqrt D)`, latent
  :math:`c\sim\mathcal N(0, I_D)`, :math:`F` i.i.d. Gaussian (``D = 200``, ``N = 2000`` in the full
  run); teacher and student soft committees with :math:`g = \operatorname{erf}(x/\sqrt2)`,
  ``M = K = 2``, second layers fixed to 1, learning rate :math:`\eta = 0.2`. :math:`\Omega` and
  :math:`\Phi` are exact (:func:`rmtjax.dynamics._hidden_manifold.analytic_moments`); the ODEs over
  the whole spectrum of :math:`\Omega` (one density per eigenvalue) start from the simulation's
  initial weights and are integrated on the simulation's time grid. Online SGD runs on generated
  data for several seeds; the curves are :math:`\epsilon_g` of the ODE, the seed mean of the
  Gaussian-equivalent :math:`\epsilon_g(Q, R)` measured on the simulated weights, and the seed
  mean of the error on a fixed generated test set.
* **Gaussian-equivalence panel.** A two-layer ReLU generator
  :math:`x = \operatorname{relu}(W_2\operatorname{relu}(W_1c/\sqrt D)/\sqrt N)` with ``D = N/4``,
  :math:`\Omega, \Phi` by Monte Carlo; the Kolmogorov-Smirnov distance between the law of the
  local fields :math:`(\lambda, \nu)` and the Gaussian with the same moments (averaged over random
  projections, :func:`~rmtjax.dynamics._hidden_manifold.local_field_distance`) against ``N``,
  next to the floor of the same statistic on exactly Gaussian samples.

``ok`` requires: at every saved time the seed mean of :math:`\epsilon_g(Q, R)` within
``5 SE + 1/N`` of the ODE (SE over seeds; ``1/N`` for the finite-size drift of the mean), the
final relative gap below 5 %, learning (:math:`\epsilon_g` falls by at least 2x); the excess
distance (distance minus Gaussian floor) falling with ``N`` (log-log slope below -0.5, fitted
where it exceeds 5 SE of the floor) and the largest ``N`` within 3x of the floor (6x in the
quick run, whose largest ``N`` is 64).

Partial results (the ODE, each seed, each ``N``) are saved to ``resume.json`` as they finish and
reused when the run is repeated with the same configuration
(:class:`rmtjax.experiments._resume.ResumeFile`). In a float32 run the report also gives the
largest difference of the ODE curve (moments of the generator included) to float64 from the same
generator and initial weights. Writes ``hidden_manifold.png``, ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._common import check_seed, config_dict, dtype_name, int_grid, number, positive_int, versions
from ._output import check_out_dir, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "hidden-manifold"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        N, D: input and latent dimensions of the sign generator; K, M: student and teacher units;
        eta: learning rate; t_max, num_saves: SGD time and recorded times; seeds: SGD runs (``>= 2``);
        test_size: generated test points.
        deep_N: input dimensions of the Gaussian-equivalence panel (at least 2, increasing; D = N/4);
        deep_samples, deep_directions: its Monte-Carlo sizes; floor_factor: the largest ``N`` must be
        within this factor of the Gaussian floor.
    """

    N: int = 2000
    D: int = 200
    K: int = 2
    M: int = 2
    eta: float = 0.2
    t_max: float = 100.0
    num_saves: int = 50
    seeds: int = 8
    test_size: int = 4000
    deep_N: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    deep_samples: int = 50_000
    deep_directions: int = 32
    floor_factor: float = 3.0

    def __post_init__(self):
        for name, lo in (("N", 2), ("D", 1), ("K", 1), ("M", 1), ("num_saves", 1), ("seeds", 2), ("test_size", 2),
                         ("deep_samples", 100), ("deep_directions", 1)):
            positive_int(getattr(self, name), name, lo=lo)
        number(self.eta, "eta", lo=0, lo_open=True)
        number(self.t_max, "t_max", lo=0, lo_open=True)
        int_grid(self.deep_N, "deep_N", lo=4, min_len=2)
        number(self.floor_factor, "floor_factor", lo=1)


FULL = Config()
QUICK = Config(N=200, D=50, t_max=10.0, num_saves=10, seeds=3, test_size=2000, deep_N=(16, 64), deep_samples=20_000,
               deep_directions=16, floor_factor=6.0)


def _bar(it, progress: bool, desc: str):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


@functools.partial(jax.jit, static_argnums=1)
def _normals(keys, draws):
    """``jax.random.normal(keys[i], shape)`` for every ``(i, shape)`` of ``draws``, in one compiled
    program (eagerly, each shape compiles its own)."""
    return tuple(jax.random.normal(keys[i], shape) for i, shape in draws)


def _dynamics_setup(cfg, seed):
    from ..activations import Sign
    from ..dynamics._hidden_manifold import Generator, analytic_moments

    k = jax.random.split(jax.random.key(seed), 4)
    N, D = cfg.N, cfg.D
    F, w0, wt = _normals(k, ((0, (N, D)), (1, (cfg.K, N)), (2, (cfg.M, D))))
    gen = Generator(F, Sign())
    mom = analytic_moments(gen)
    return gen, mom, w0, wt, k[3]


def _simulate_seed(cfg, setup, i):
    from ..dynamics._hidden_manifold import simulate_hidden_manifold

    gen, mom, w0, wt, key = setup
    v0, vt = jnp.ones(cfg.K), jnp.ones(cfg.M)
    t0 = time.perf_counter()
    r = simulate_hidden_manifold(jax.random.fold_in(key, i), gen, mom, w0, v0, wt, vt, cfg.eta,
                                 t_max=cfg.t_max, num_saves=cfg.num_saves, test_size=cfg.test_size)
    r.eps_g_test.block_until_ready()
    return {"t": np.asarray(r.trajectory.t).tolist(), "eps_g": np.asarray(r.trajectory.eps_g).tolist(),
            "eps_g_test": np.asarray(r.eps_g_test).tolist(), "seconds": time.perf_counter() - t0}


def _ode_eps_g(gen, w0, wt, ts, eta):
    """The ODE's eps_g from the generator (analytic moments) and the initial weights (a float32 run
    compares it with float64 from the same generator and weights)."""
    from ..dynamics._hidden_manifold import analytic_moments, hidden_manifold_densities, hidden_manifold_ode

    d = hidden_manifold_densities(analytic_moments(gen), w0, wt)
    ones = lambda n: jnp.ones(n, w0.dtype)  # noqa: E731
    return {"ODE eps_g": hidden_manifold_ode(d, ones(w0.shape[0]), ones(wt.shape[0]), ts, eta).eps_g}


def _ode(cfg, setup, ts):
    from ..dynamics._hidden_manifold import hidden_manifold_densities, hidden_manifold_ode

    _, mom, w0, wt, _ = setup
    d = hidden_manifold_densities(mom, w0, wt)
    v0, vt = jnp.ones(cfg.K), jnp.ones(cfg.M)
    t0 = time.perf_counter()
    traj = hidden_manifold_ode(d, v0, vt, jnp.asarray(ts), cfg.eta)
    traj.eps_g.block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()  # again, compiled: the integration alone
    traj = hidden_manifold_ode(d, v0, vt, jnp.asarray(ts), cfg.eta)
    traj.eps_g.block_until_ready()
    return {"t": list(ts), "eps_g": np.asarray(traj.eps_g).tolist(), "seconds_with_compile": first,
            "seconds": time.perf_counter() - t0, "num_eigenvalues": int(d.rho.shape[0]),
            "omega_spectrum": [float(np.min(np.asarray(d.rho))), float(np.max(np.asarray(d.rho)))]}


def _deep_point(cfg, N, seed):
    from ..activations import Relu
    from ..dynamics._hidden_manifold import Generator, local_field_distance, monte_carlo_moments

    D = max(2, N // 4)
    k = jax.random.split(jax.random.fold_in(jax.random.key(seed + 1), N), 6)
    W1, W2, w, wt = _normals(k, ((0, (N, D)), (1, (N, N)), (3, (cfg.K, N)), (4, (cfg.M, D))))
    gen = Generator((W1, W2), Relu())
    t0 = time.perf_counter()
    mom = monte_carlo_moments(k[2], gen, num_samples=cfg.deep_samples, batch_size=min(5000, cfg.deep_samples))
    r = local_field_distance(k[5], gen, mom, w, wt, num_samples=cfg.deep_samples,
                             num_directions=cfg.deep_directions)
    # the Gaussian-equivalent covariance of the fields from Omega, Phi (Monte Carlo) vs the measured one
    # on the host in float64 (eager jnp ops would compile a program each, for each N)
    wh, wth = np.asarray(w, np.float64), np.asarray(wt, np.float64)
    Q = wh @ np.asarray(mom.omega, np.float64) @ wh.T / N
    R = wh @ np.asarray(mom.phi, np.float64) @ wth.T / math.sqrt(N * D)
    T = wth @ wth.T / D
    C = np.block([[Q, R], [R.T, T]])
    cov_err = float(np.max(np.abs(np.asarray(r.covariance, np.float64) - C)) / np.max(np.abs(C)))
    return {"N": N, "D": D, "distance": float(r.distance), "null": float(r.null), "null_se": float(r.null_se),
            "covariance_rel_error": cov_err, "seconds": time.perf_counter() - t0}


def _checks(cfg, ode, sims, deep) -> dict[str, Any]:
    o = np.asarray(ode["eps_g"])
    e = np.asarray([s["eps_g"] for s in sims])
    et = np.asarray([s["eps_g_test"] for s in sims])
    S = e.shape[0]
    se = e.std(0, ddof=1) / math.sqrt(S)
    gap = np.abs(e.mean(0) - o)
    tol = 5 * se + 1.0 / cfg.N
    out = {"max_gap": float(gap.max()), "max_gap_over_tolerance": float((gap / tol)[1:].max()),
           "final_eps_g_ode": float(o[-1]), "final_eps_g_sim": float(e.mean(0)[-1]),
           "final_eps_g_sim_se": float(se[-1]), "final_eps_g_test": float(et.mean(0)[-1]),
           "final_eps_g_test_se": float(et.std(0, ddof=1)[-1] / math.sqrt(S)),
           "final_relative_gap": float(gap[-1] / o[-1]),
           "final_relative_gap_test": float(abs(et.mean(0)[-1] - o[-1]) / o[-1])}
    out["ode_matches_simulation"] = bool(np.all(gap[1:] <= tol[1:]) and out["final_relative_gap"] < 0.05)
    out["learns"] = bool(o[-1] < 0.5 * o[0])
    Ns = np.asarray([d["N"] for d in deep], float)
    dist = np.asarray([d["distance"] for d in deep])
    null = np.asarray([d["null"] for d in deep])
    null_se = np.asarray([d["null_se"] for d in deep])
    excess = dist - null
    # fit only where the distance is resolved above the Gaussian-sample floor (5 of its SE)
    sig = excess > 5 * null_se
    slope = float(np.polyfit(np.log(Ns[sig]), np.log(excess[sig]), 1)[0]) if sig.sum() >= 2 else float("nan")
    out["slope_fit_N"] = [int(n) for n in Ns[sig]]
    out["excess_distance_slope"] = slope
    out["largest_N_distance_over_floor"] = float(dist[-1] / null[-1])
    out["gaussian_equivalence"] = bool(slope < -0.5 and np.all(np.diff(dist) < 0) and dist[-1] < cfg.floor_factor * null[-1])
    out["ok"] = bool(out["ode_matches_simulation"] and out["learns"] and out["gaussian_equivalence"])
    return out


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes the figure and reports into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the finished pieces.
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed, in ``[0, 2**32 - 1]``.
        progress: show progress bars.
        config: explicit sizes (overrides ``quick``).
    """
    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a hidden_manifold.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t_start = time.perf_counter()
    resume = ResumeFile(out, NAME, {"config": config_dict(cfg), "seed": seed, "dtype": dtype_name()})

    setup = _dynamics_setup(cfg, seed)
    for i in _bar(range(cfg.seeds), progress, f"hidden-manifold SGD N={cfg.N}"):
        if f"sim|{i}" not in resume:
            resume.put(f"sim|{i}", _simulate_seed(cfg, setup, i))
    sims = [resume[f"sim|{i}"] for i in range(cfg.seeds)]
    if "ode" not in resume:
        resume.put("ode", _ode(cfg, setup, sims[0]["t"]))
    ode = resume["ode"]
    for N in _bar(cfg.deep_N, progress, "Gaussian equivalence"):
        if f"deep|{N}" not in resume:
            resume.put(f"deep|{N}", _deep_point(cfg, N, seed))
    deep = [resume[f"deep|{N}"] for N in cfg.deep_N]
    gen, _, w0, wt, _ = setup
    precision = float64_comparison(_ode_eps_g, gen, w0, wt, jnp.asarray(ode["t"], float), jnp.asarray(cfg.eta, float),
                                   float32_values={"ODE eps_g": ode["eps_g"]})

    checks = _checks(cfg, ode, sims, deep)
    sim_seconds = sum(s["seconds"] for s in sims)
    summary = (f"N={cfg.N}, D={cfg.D}: eps_g(t={cfg.t_max:g}) ODE {checks['final_eps_g_ode']:.4f} vs "
               f"simulation {checks['final_eps_g_sim']:.4f} +- {checks['final_eps_g_sim_se']:.4f} (test set "
               f"{checks['final_eps_g_test']:.4f}); max gap / (5 SE + 1/N) = {checks['max_gap_over_tolerance']:.2f}; "
               f"deep-generator KS excess distance ~ N^{checks['excess_distance_slope']:.2f}, "
               f"{checks['largest_N_distance_over_floor']:.2f}x the Gaussian floor at N={cfg.deep_N[-1]}")
    report = {"name": NAME, "ok": checks["ok"], "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
              "config": config_dict(cfg), "seconds": time.perf_counter() - t_start, "simulation_seconds": sim_seconds,
              "ode": ode, "simulations": sims, "deep": deep, "checks": checks, "precision": precision,
              "resume": resume.summary(), "summary": summary, "versions": versions()}
    _figure(report, out / "hidden_manifold.png")
    write_report(out, report, _markdown(report))
    return report


def _figure(r, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    cfg = r["config"]
    fig = Figure(figsize=(12, 4.6))
    a1, a2 = fig.subplots(1, 2)
    t = np.asarray(r["ode"]["t"])
    e = np.asarray([s["eps_g"] for s in r["simulations"]])
    et = np.asarray([s["eps_g_test"] for s in r["simulations"]])
    for row in e:
        a1.plot(t, row, color="C0", alpha=0.25, lw=0.8)
    a1.plot(t, e.mean(0), "o", color="C0", ms=3.5, label=f"SGD, eps_g(Q, R) ({len(e)} seeds, mean)")
    a1.plot(t, et.mean(0), "s", color="C2", ms=3, mfc="none", label="SGD, test error on generated data")
    a1.plot(t, r["ode"]["eps_g"], "-", color="C3", lw=1.8, label="ODE (Gaussian equivalent)")
    a1.set(xscale="symlog", yscale="log", xlabel="t = steps / N", ylabel="eps_g",
           title=f"Hidden manifold: sign generator, erf, K=M=2, eta={cfg['eta']}, D={cfg['D']}, N={cfg['N']}")
    a1.legend(fontsize=8)
    Ns = [d["N"] for d in r["deep"]]
    a2.plot(Ns, [d["distance"] for d in r["deep"]], "o-", color="C0", label="local fields (2-layer ReLU generator)")
    a2.errorbar(Ns, [d["null"] for d in r["deep"]], yerr=[2 * d["null_se"] for d in r["deep"]], fmt="s--",
                color="gray", ms=3, label="Gaussian samples (floor)")
    a2.set(xscale="log", yscale="log", xlabel="N (D = N/4)", ylabel="KS distance to the Gaussian",
           title="Gaussian equivalence of (lambda, nu)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _markdown(r):
    c, k, cfg = r["checks"], r["ode"], r["config"]
    lines = ["# Hidden manifold model: online-SGD ODEs vs simulation, Gaussian equivalence", "",
             f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s"
             f" ({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). Goldt et al., PRX 2020 (arXiv:1909.11500); Goldt, Reeves et al. "
             "(arXiv:2006.14709).", "", r["summary"], "",
             f"Setting: x = sign(F c / sqrt(D)), D = {cfg['D']}, N = {cfg['N']}, erf(x/sqrt 2) student and teacher, "
             f"K = M = {cfg['K']}, eta = {cfg['eta']}, second layers fixed to 1, {cfg['seeds']} SGD seeds up to "
             f"t = {cfg['t_max']:g}; ODE over all {k['num_eigenvalues']} eigenvalues of Omega (spectrum "
             f"[{k['omega_spectrum'][0]:.3g}, {k['omega_spectrum'][1]:.3g}]).", "",
             "| | value |", "|---|---:|",
             f"| eps_g final, ODE | {c['final_eps_g_ode']:.5f} |",
             f"| eps_g(Q, R) final, simulation (mean +- SE) | {c['final_eps_g_sim']:.5f} +- {c['final_eps_g_sim_se']:.5f} |",
             f"| test error final, simulation (mean +- SE) | {c['final_eps_g_test']:.5f} +- {c['final_eps_g_test_se']:.5f} |",
             f"| final relative gap ODE vs eps_g(Q, R) / vs test error | {c['final_relative_gap']:.4f} / "
             f"{c['final_relative_gap_test']:.4f} |",
             f"| max over t of gap / (5 SE + 1/N) | {c['max_gap_over_tolerance']:.3f} |",
             f"| ODE time (compiled) / with compilation | {k['seconds']:.3f} s / {k['seconds_with_compile']:.2f} s |",
             f"| simulation time, all seeds | {r['simulation_seconds']:.1f} s |", "",
             "Gaussian equivalence, two-layer ReLU generator, D = N/4, Omega and Phi by Monte Carlo "
             f"({cfg['deep_samples']} samples):", "",
             "| N | D | KS distance | Gaussian floor | C(Omega, Phi) vs measured covariance (rel.) |",
             "|---:|---:|---:|---:|---:|"]
    for d in r["deep"]:
        lines.append(f"| {d['N']} | {d['D']} | {d['distance']:.5f} | {d['null']:.5f} +- {d['null_se']:.5f} | "
                     f"{d['covariance_rel_error']:.4f} |")
    lines += ["", f"Excess distance (minus floor) ~ N^{c['excess_distance_slope']:.2f} (fitted over N = "
              f"{nums(c['slope_fit_N']) or 'none'}, where it exceeds 5 SE of the floor).", ""]
    lines += precision_lines(r.get("precision"))
    lines += ["![hidden manifold](hidden_manifold.png)", ""]
    return "\n".join(lines)
