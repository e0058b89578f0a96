"""Saad-Solla ODEs vs online-SGD simulation: time to reach t = 10^4 and accuracy.

One command (from the repository root, with the project's Python):

    .venv/bin/python benchmarks/dynamics.py            # simulation slice t = 1 at N = 10^4
    .venv/bin/python benchmarks/dynamics.py --quick    # slice t = 0.2

What it measures (float64 order parameters, K = M = 2, g = erf(x/sqrt 2), eta = 0.5, v fixed):

1. ODE: ``rmtjax.dynamics.committee_ode`` from t = 0 to 10^4 (101 save points, Tsit5 with
   rtol 1e-8, atol 1e-10), compiled first; the median of 3 timed calls (``block_until_ready``).
   Its own numerical error: max |eps_g| difference against a solve at rtol 1e-11, atol 1e-13.
2. Simulation: ``rmtjax.dynamics.simulate_committee`` at N = 10^4 (one seed). 10^4 time units
   would be 10^8 SGD steps (10^12 Gaussian input entries), far too long here: a slice of
   ``t_slice`` time units (N t_slice steps) is timed after a warm-up call of the same shape, and
   the time for t = 10^4 is extrapolated linearly (the cost per step is constant: one fresh
   input and a rank-1 update). The speed-up ODE vs simulation uses that extrapolation.
3. Accuracy of the ODE against the simulation over the slice: the ODE started at the
   simulation's own initial order parameters, max |eps_g(sim) - eps_g(ODE)| and the relative
   gap; the simulation's own finite-N fluctuation is O(N^-1/2) = 1% (the ODE is the N -> infinity
   limit the simulation estimates).

Results: ``<out>/dynamics.json``, ``dynamics.md`` and ``dynamics.png`` (``--out`` defaults to
``benchmarks/results``; ``benchmarks/results/quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pathlib
import statistics
import time

import numpy as np
from kernels_vs_neural_tangents import host_info  # the script folder is on sys.path

HERE = pathlib.Path(__file__).resolve().parent
T_END = 1e4
N_SIM = 10_000
ETA = 0.5


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--t-slice", type=float, default=None, help="simulated time units at N = 10^4 (default 1, quick 0.2)")
    args = p.parse_args(argv)
    t_slice = args.t_slice or (0.2 if args.quick else 1.0)
    out = pathlib.Path(args.out) if args.out else HERE / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from rmtjax.dynamics._committee import CommitteeState, committee_ode
    from rmtjax.dynamics._simulation import simulate_committee

    rec: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": host_info(),
                 "loadavg_1min_start": os.getloadavg()[0], "jax": jax.__version__, "device": str(jax.devices()[0]),
                 "setting": {"K": 2, "M": 2, "activation": "erf(x/sqrt(2))", "eta": ETA, "t_end": T_END,
                             "N_sim": N_SIM, "t_slice": t_slice, "dtype": "float64 (inputs drawn in float32)"}}

    # 1. ODE --------------------------------------------------------------------------------
    s0 = CommitteeState(0.25 * jnp.eye(2), 1e-3 * jnp.ones((2, 2)) + 1e-3 * jnp.eye(2), jnp.ones(2))
    T, vt = jnp.eye(2), jnp.ones(2)
    ts = jnp.linspace(0.0, T_END, 101)
    t0 = time.perf_counter()
    ref = jax.block_until_ready(committee_ode(s0, T, vt, ts, ETA))
    rec["ode_first_call_s"] = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(committee_ode(s0, T, vt, ts, ETA))
        times.append(time.perf_counter() - t0)
    rec["ode_s"] = statistics.median(times)
    rec["ode_times_s"] = times
    tight = committee_ode(s0, T, vt, ts, ETA, rtol=1e-11, atol=1e-13, max_steps=1_000_000)
    rec["ode_abs_error_eps_g"] = float(jnp.max(jnp.abs(tight.eps_g - ref.eps_g)))
    rec["ode_eps_g_final"] = float(ref.eps_g[-1])

    # 2. simulation slice at N = 10^4 ----------------------------------------------------------
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    wt = jax.random.normal(k1, (2, N_SIM))
    w0 = 0.5 * jax.random.normal(k2, (2, N_SIM))
    saves = 10
    sim_fn = jax.jit(functools.partial(simulate_committee, t_max=t_slice, num_saves=saves))
    t0 = time.perf_counter()
    jax.block_until_ready(sim_fn(k3, w0, jnp.ones(2), wt, jnp.ones(2), ETA))
    rec["sim_warmup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim = jax.block_until_ready(sim_fn(jax.random.fold_in(k3, 1), w0, jnp.ones(2), wt, jnp.ones(2), ETA))
    rec["sim_slice_s"] = time.perf_counter() - t0
    steps = int(round(float(sim.t[-1]) * N_SIM))
    rec["sim_slice_steps"] = steps
    rec["sim_s_per_step"] = rec["sim_slice_s"] / steps
    rec["sim_extrapolated_s"] = rec["sim_s_per_step"] * T_END * N_SIM
    rec["speedup_ode_vs_sim"] = rec["sim_extrapolated_s"] / rec["ode_s"]

    # 3. accuracy of the ODE against the simulation ---------------------------------------------
    st = CommitteeState(sim.Q[0], sim.R[0], sim.v[0])
    ode = committee_ode(st, wt @ wt.T / N_SIM, jnp.ones(2), sim.t, ETA)
    gap = np.abs(np.asarray(sim.eps_g - ode.eps_g))
    rec["sim_vs_ode_max_abs_gap"] = float(gap.max())
    rec["sim_vs_ode_max_rel_gap"] = float(np.max(gap / np.asarray(ode.eps_g)))
    rec["sim_vs_ode"] = {"t": np.asarray(sim.t).tolist(), "sim_eps_g": np.asarray(sim.eps_g).tolist(),
                         "ode_eps_g": np.asarray(ode.eps_g).tolist()}
    rec["loadavg_1min_end"] = os.getloadavg()[0]
    rec["target_met"] = bool(rec["speedup_ode_vs_sim"] >= 100)

    rec["ode_curve"] = {"t": np.asarray(ts).tolist(), "eps_g": np.asarray(ref.eps_g).tolist()}
    _figure(rec, out / "dynamics.png")
    (out / "dynamics.json").write_text(json.dumps(rec, indent=1))
    (out / "dynamics.md").write_text(_markdown(rec))
    print(json.dumps({k: v for k, v in rec.items() if k not in ("sim_vs_ode", "ode_curve")}, indent=1))
    return rec


def _figure(r: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    c = r["ode_curve"]
    ax[0].loglog(np.array(c["t"][1:]), np.array(c["eps_g"][1:]), "C3")
    ax[0].set(xlabel=r"$t$", ylabel=r"$\epsilon_g$",
              title=f"ODE to t = 1e4: {r['ode_s'] * 1e3:.0f} ms (sim. extrapolated {r['sim_extrapolated_s']:.2g} s)")
    d = r["sim_vs_ode"]
    ax[1].plot(d["t"], d["sim_eps_g"], "o-", label=f"simulation N = {r['setting']['N_sim']}")
    ax[1].plot(d["t"], d["ode_eps_g"], "k--", label="ODE")
    ax[1].set(xlabel=r"$t$", ylabel=r"$\epsilon_g$", title="the timed simulation slice vs the ODE")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(r: dict) -> str:
    h, s = r["host"], r["setting"]
    return "\n".join([
        "# Saad-Solla ODEs vs online-SGD simulation", "",
        f"Run {r['date']}, host: {h['cpu']} ({h['cores']} cores, shared: 1-min load average "
        f"{r['loadavg_1min_start']:.1f} at the start, {r['loadavg_1min_end']:.1f} at the end; wall times are noisy), "
        f"jax {r['jax']} on {r['device']}.", "",
        f"Setting: soft committee machine K = M = {s['K']}, g = {s['activation']}, eta = {s['eta']}, "
        f"second layer fixed, float64 order parameters.", "",
        "| | time | notes |", "|---|---:|---|",
        f"| ODE, t = 0 .. {s['t_end']:.0e} (diffrax Tsit5, rtol 1e-8) | {r['ode_s'] * 1e3:.1f} ms | median of 3 after "
        f"compilation (first call with compilation {r['ode_first_call_s']:.1f} s); numerical error in eps_g vs "
        f"rtol 1e-11: {r['ode_abs_error_eps_g']:.1e} |",
        f"| simulation, N = {s['N_sim']}, t = {s['t_slice']} ({r['sim_slice_steps']} steps) | {r['sim_slice_s']:.2f} s | "
        f"measured after a warm-up call of the same shape: {r['sim_s_per_step'] * 1e6:.1f} us per step |",
        f"| simulation, N = {s['N_sim']}, t = {s['t_end']:.0e} ({s['t_end'] * s['N_sim']:.0e} steps) | "
        f"{r['sim_extrapolated_s']:.3g} s (**extrapolated**) | linear in the number of steps; not run |", "",
        f"**Speed-up of the ODE: {r['speedup_ode_vs_sim']:.3g}x** (target >= 100x: "
        f"{'met' if r['target_met'] else 'NOT met'}).", "",
        f"Accuracy: over the simulated slice the ODE (started at the simulation's initial order parameters) and the "
        f"N = {s['N_sim']} simulation differ by at most {r['sim_vs_ode_max_abs_gap']:.2e} in eps_g "
        f"({100 * r['sim_vs_ode_max_rel_gap']:.2f}% relative): the simulation's finite-N fluctuation, "
        "O(N^-1/2); the ODE's own integration error is orders of magnitude smaller. The ODE is the "
        "N -> infinity limit that the simulation estimates, so one ODE solve replaces many seeds of "
        "simulation at any N.", "",
    ])


if __name__ == "__main__":
    main()
