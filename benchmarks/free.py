r"""Free probability vs Monte Carlo: depth-64 spectra on a 1,000-point grid, time and accuracy.

One command (from the repository root, with the project's Python):

    .venv/bin/python benchmarks/free.py            # full: Monte Carlo sizes N = 64 .. 1024
    .venv/bin/python benchmarks/free.py --quick    # N = 64 .. 256, fewer draws

Two spectra, both with an exact reference (below), float64 throughout, one XLA CPU device:

1. **Fuss-Catalan** :math:`\mathrm{MP}^{\boxtimes 64}`: the law of :math:`PP^\top`,
   :math:`P = G_{64}\cdots G_1`, :math:`G_\ell` independent :math:`N\times N` Gaussian matrices with
   variance :math:`1/N` entries. Theory: ``free_multiplicative_power(MarchenkoPastur(1, 1), 64)
   .density_on_grid(x, eta=1e-12 x)`` (subordination through ``rmtjax.solve``). Monte Carlo: the
   squared singular values of :math:`P` (64 matrix products + one SVD per draw).
2. **Jacobian of a depth-64 ReLU network at criticality** (Gaussian weights, :math:`\sigma_w^2 = 2`,
   :math:`\sigma_b^2 = 0`): theory ``jacobian_spectrum(Relu(), 2, 0, x, depth=64, eta=1e-12 x)``
   (density, moments and the edge :math:`\lambda_{\max}`); Monte Carlo: the squared singular
   values of the input-output Jacobian of a width-:math:`N` network (forward pass with the Jacobian
   carried along, then one SVD), the computation a practitioner would run.

The grid is ``geomspace(1e-6, 0.999 lambda_max, 1000)`` (both spectra are heavy-tailed with most
of their mass near 0). Timings are after compilation (compile time recorded separately): the
theory is the median of 3 calls; Monte Carlo the median time of one draw at each size.

**Exact reference.** For :math:`S(w) = (1 + cw)^{-L}` (Fuss-Catalan of order :math:`L`:
:math:`c = 1`; the ReLU Jacobian: one layer is :math:`\mathrm{MP}(1, 2)\boxtimes(\tfrac12\delta_0 +
\tfrac12\delta_1) = \mathrm{MP}(\text{ratio } 2, \text{variance } 1)`, :math:`S(w) = (1 + 2w)^{-1}`,
so :math:`c = 2`) the inverse of :math:`\psi(z) = \int zt/(1 - zt)\,d\mu(t)` is
:math:`z = \psi/((1 + \psi)(1 + c\psi)^L)`. On the support :math:`z = 1/x > 0` with complex
:math:`\psi`, so :math:`\arg\psi - \arg(1 + \psi) = L\arg(\psi + 1/c)`: writing
:math:`\psi = -1/c + te^{i\beta}`, :math:`\beta\in(0, \pi/L)`, the left side is the angle under
which :math:`\psi` sees the segment :math:`[-1, 0]`, decreasing in :math:`t`, so :math:`t(\beta)`
is found by bisection, and then :math:`x(\beta) = |(1 + \psi)(1 + c\psi)^L/\psi|`,
:math:`\rho(x) = \operatorname{Im}\psi/(\pi x)` (decreasing from the edge at :math:`\beta = 0` to
:math:`x = 0` at :math:`\beta = \pi/L`; for :math:`c = 1` it is Haagerup & Moller's / Neuschel's
Fuss-Catalan parametrization, checked in the run to ~1e-13). Grid points are matched by a
bisection in :math:`\beta`; the CDF is :math:`1 - \int_x^{\lambda_{\max}}\rho`, trapezoidal in
:math:`x` over a dense table in :math:`\beta` (its error is estimated by halving the table and
recorded). The atom at 0 (1/2 for ReLU) is the mass the continuous part lacks.

**Accuracy, side by side.** Theory: the largest relative error of its density on the grid,
:math:`\varepsilon_{\rm th} = \max_x|\rho_{\rm th}/\rho - 1|` (a density with relative error
:math:`\varepsilon` integrates to a CDF with error :math:`\le\varepsilon`). Monte Carlo: the
Kolmogorov distance on the grid, :math:`D_N = \max_x|F_N(x) - F(x)|`, of one draw of size :math:`N`
(mean over draws) -- the metric most favourable to Monte Carlo (a histogram density estimate
converges much more slowly). :math:`D_N` falls like :math:`N^{-\alpha}` (finite-:math:`N` bias and
eigenvalue rigidity: :math:`\alpha\approx 1`); a least-squares fit of :math:`\log D_N` on
:math:`\log N` gives the size :math:`N^*` with :math:`D_{N^*} = \varepsilon_{\rm th}`, and its time
is extrapolated from the largest measured size with the :math:`N^3` cost of matrix products and the
SVD (the fitted time exponent is recorded too; it is lower at small :math:`N` where overheads
dominate). Speedup at equal accuracy = :math:`t_{\rm MC}(N^*)/t_{\rm th}`. Also reported without
any extrapolation: the speedup over the largest Monte-Carlo size actually run, where Monte Carlo
is still orders of magnitude less accurate (a lower bound).

Results: ``<out>/free.jsonl`` (one record per finished cell; a rerun skips what is there,
``--fresh`` starts over), ``free.json`` (everything, with host, load and versions), ``free.md``
and ``free.png``. ``--out`` defaults to ``benchmarks/results`` (``benchmarks/results/quick`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import sys
import time

# LAPACK (the Monte-Carlo SVDs) runs OpenMP threads; on a shared, oversubscribed machine they thrash
# (a 1000 x 1000 QR took 14 s with the default threads and 0.75 s with one), so one thread unless set.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from kernels_vs_neural_tangents import host_info  # noqa: E402 (the script folder is on sys.path)

HERE = pathlib.Path(__file__).resolve().parent
DEPTH = 64
GRID = 1000
ETA_REL = 1e-12  # Stieltjes-inversion height relative to each grid point
FULL = dict(sizes=(64, 128, 256, 512, 1024), draws=(16, 8, 4, 2, 1))
QUICK = dict(sizes=(64, 128, 256), draws=(8, 4, 2))
THEORY_REPEATS = 3
PRACTICAL_TARGETS = (1e-3, 1e-4)  # Monte-Carlo error levels also priced (extrapolated)
CASES = {
    "fuss-catalan": dict(c=1.0, title="Fuss-Catalan MP^{boxtimes 64}", mc="product of 64 Gaussian N x N matrices"),
    "relu-jacobian": dict(c=2.0, title="Jacobian, depth-64 ReLU network (sigma_w^2 = 2, Gaussian)",
                          mc="Jacobian of a width-N depth-64 ReLU network"),
}


# --------------------------------------------------------------------------------------------
# Exact reference for S(w) = (1 + c w)^{-L} (module docstring)
# --------------------------------------------------------------------------------------------

def _psi(beta, c, L, iters=200):
    """psi = -1/c + t e^{i beta} with arg(psi) - arg(1 + psi) = L beta (bisection in log t)."""
    beta = np.asarray(beta, float)
    lo, hi = np.full_like(beta, -40.0), np.full_like(beta, 40.0)
    e = np.exp(1j * beta)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        p = -1 / c + np.exp(mid) * e
        big = np.angle(p) - np.angle(1 + p) > L * beta  # the angle decreases in t
        lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
    return -1 / c + np.exp(0.5 * (lo + hi)) * e


def exact_point(beta, c, L):
    """(x, rho(x), residual of arg z = 0) at the parameter ``beta`` in (0, pi/L)."""
    p = _psi(beta, c, L)
    logz = np.log(p) - np.log1p(p) - L * np.log1p(c * p)
    x = np.exp(-logz.real)
    return x, p.imag / (np.pi * x), np.abs(np.angle(np.exp(1j * logz.imag)))


def exact_beta(x, c, L, iters=200):
    """The parameter of each point ``x`` in (0, edge) (x(beta) decreases)."""
    x = np.asarray(x, float)
    lo, hi = np.zeros_like(x), np.full_like(x, math.pi / L)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        gt = exact_point(mid, c, L)[0] > x
        lo, hi = np.where(gt, mid, lo), np.where(gt, hi, mid)
    return 0.5 * (lo + hi)


def exact_edge(c, L):
    return float(exact_point(np.array([1e-12]), c, L)[0][0])


def exact_reference(x, c, L, table=100_000) -> dict:
    """Density and CDF at ``x`` (increasing, inside the support), with error estimates."""
    b = exact_beta(x, c, L)
    xx, rho, res = exact_point(b, c, L)

    def tail(m):  # int_x^edge rho, trapezoidal in x over a table of m points in beta, plus the grid's
        tb = np.concatenate([np.linspace(0.0, b.max(), m)[1:], b])
        order = np.argsort(tb)
        tx, tr, _ = exact_point(tb[order], c, L)
        tx, tr = np.concatenate([[exact_edge(c, L)], tx]), np.concatenate([[0.0], tr])
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (tr[1:] + tr[:-1]) * (tx[:-1] - tx[1:]))])[1:]
        pos = np.empty_like(order)
        pos[order] = np.arange(order.size)
        return cum[pos[m - 1:]]

    t1, t2 = tail(table), tail(table // 2)
    out = {"x": xx, "density": rho, "cdf": 1 - t1, "cdf_error_estimate": float(np.max(np.abs(t1 - t2)) / 3),
           "x_match": float(np.max(np.abs(xx / x - 1))), "arg_residual": float(np.max(res))}
    if c == 1.0:  # Fuss-Catalan closed form (Haagerup & Moller 2012; Neuschel 2014), phi = beta
        s = L
        xf = np.sin((s + 1) * b) ** (s + 1) / (np.sin(b) * np.sin(s * b) ** s)
        rf = np.sin((s + 1) * b) * np.sin(b) / (np.pi * xf * np.sin(s * b))
        out["fuss_catalan_closed_form_rel_diff"] = float(max(np.max(np.abs(xx / xf - 1)), np.max(np.abs(rho / rf - 1))))
    return out


# --------------------------------------------------------------------------------------------
# Theory and Monte Carlo
# --------------------------------------------------------------------------------------------

def theory_fn(case: str):
    """A jitted ``x -> (density, ok, extras)`` for the case."""
    import jax
    import jax.numpy as jnp

    from rmtjax.activations import Relu
    from rmtjax.rmt._free import free_multiplicative_power
    from rmtjax.rmt._jacobian import jacobian_spectrum, multiplicative_edge
    from rmtjax.rmt._measures import MarchenkoPastur

    if case == "fuss-catalan":
        @jax.jit
        def f(x):
            rho = free_multiplicative_power(MarchenkoPastur(1.0, 1.0), DEPTH)
            d = rho.density_on_grid(x, eta=ETA_REL * x, throw=False)
            m = rho.moments(2)
            edge, ok_edge = multiplicative_edge(rho, throw=False)
            return d.density, d.ok & ok_edge, {"mean": m[0], "variance": m[1] - m[0] ** 2, "zero_mass": d.zero_mass,
                                               "max_eigenvalue": edge.value}
    else:
        @jax.jit
        def f(x):
            s = jacobian_spectrum(Relu(), 2.0, 0.0, x, depth=DEPTH, eta=ETA_REL * x, throw=False)
            return s.density, s.converged, {"mean": s.mean, "variance": s.variance, "zero_mass": s.zero_mass,
                                            "max_eigenvalue": s.max_eigenvalue, "chi": s.chi}
    return lambda x: f(jnp.asarray(x))


def mc_fn(case: str, n: int):
    """A jitted ``key -> squared singular values`` of one finite draw of size ``n``."""
    import jax
    import jax.numpy as jnp

    if case == "fuss-catalan":
        @jax.jit
        def one(key):
            def layer(p, k):
                return (jax.random.normal(k, (n, n)) / math.sqrt(n)) @ p, None

            p, _ = jax.lax.scan(layer, jnp.eye(n), jax.random.split(key, DEPTH))
            return jnp.linalg.svd(p, compute_uv=False) ** 2
    else:
        @jax.jit
        def one(key):
            k0, key = jax.random.split(key)
            x = jax.nn.relu(jax.random.normal(k0, (n,)))

            def layer(carry, k):
                x, jac = carry
                w = jax.random.normal(k, (n, n)) * math.sqrt(2.0 / n)
                h = w @ x
                return (jax.nn.relu(h), (h > 0).astype(h.dtype)[:, None] * (w @ jac)), None

            (_, jac), _ = jax.lax.scan(layer, (x, jnp.eye(n)), jax.random.split(key, DEPTH))
            return jnp.linalg.svd(jac, compute_uv=False) ** 2
    return one


def _timed(fn, *args):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def theory_record(case: str, x: np.ndarray, ref: dict) -> dict:
    f = theory_fn(case)
    out, compile_s = _timed(f, x)
    times = [_timed(f, x)[1] for _ in range(THEORY_REPEATS)]
    dens, ok, extra = out
    dens = np.asarray(dens)
    rel = np.abs(dens / ref["density"] - 1)
    rec = {"key": f"theory|{case}", "case": case, "compile_s": compile_s, "times_s": times,
           "median_s": float(np.median(times)), "converged_fraction": float(np.mean(np.asarray(ok))),
           "max_rel_error": float(np.max(rel)), "median_rel_error": float(np.median(rel)),
           "x_of_max_error": float(x[np.argmax(rel)]), "loadavg_1min": os.getloadavg()[0],
           "density": [float(f"{v:.10g}") for v in dens]}
    rec.update({k: float(v) for k, v in extra.items()})
    rec["edge_rel_error"] = abs(rec["max_eigenvalue"] / ref["edge"] - 1)
    rec["variance_rel_error"] = abs(rec["variance"] / ref["variance"] - 1)
    rec["zero_mass_error"] = abs(rec["zero_mass"] - ref["zero_mass"])
    return rec


def mc_record(case: str, n: int, draws: int, x: np.ndarray, ref: dict, seed: int, keep_sample: bool) -> dict:
    import jax

    one = mc_fn(case, n)
    key = jax.random.fold_in(jax.random.key(seed), n)
    lam, compile_s = _timed(one, jax.random.fold_in(key, 10_000))
    times, ks, pooled = [], [], []
    for i in range(draws):
        lam, t = _timed(one, jax.random.fold_in(key, i))
        lam = np.sort(np.asarray(lam))
        times.append(t)
        ks.append(float(np.max(np.abs(np.searchsorted(lam, x, side="right") / n - ref["cdf"]))))
        pooled.append(lam)
    pooled = np.sort(np.concatenate(pooled))
    d_pooled = float(np.max(np.abs(np.searchsorted(pooled, x, side="right") / pooled.size - ref["cdf"])))
    return {"key": f"mc|{case}|{n}", "case": case, "n": n, "draws": draws, "compile_s": compile_s,
            "times_s": times, "median_s": float(np.median(times)), "ks": ks, "ks_mean": float(np.mean(ks)),
            "ks_se": float(np.std(ks, ddof=1) / math.sqrt(draws)) if draws > 1 else None,
            "ks_pooled": d_pooled, "mean": float(pooled.mean()), "variance": float(pooled.var()),
            "max_eigenvalue": float(pooled.max()), "loadavg_1min": os.getloadavg()[0],
            "sample": [float(f"{v:.6g}") for v in pooled[pooled > 1e-12]] if keep_sample else []}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def summarize(case: str, th: dict, mcs: list[dict]) -> dict:
    ns = np.array([r["n"] for r in mcs], float)
    ds = np.array([r["ks_mean"] for r in mcs])
    ts = np.array([r["median_s"] for r in mcs])
    slope, icpt = np.polyfit(np.log(ns), np.log(ds), 1)
    alpha = -slope
    eps = th["max_rel_error"]
    n_star = float(np.exp((icpt - math.log(eps)) / alpha))
    big = ns >= 128
    gamma = float(np.polyfit(np.log(ns[big]), np.log(ts[big]), 1)[0]) if big.sum() >= 2 else float("nan")
    t_star = float(ts[-1] * (n_star / ns[-1]) ** 3)
    targets = {}
    for target in PRACTICAL_TARGETS:  # Monte-Carlo cost at looser accuracies (the theory's time stays the same)
        n_t = float(np.exp((icpt - math.log(target)) / alpha))
        t_t = float(ts[-1] * max(n_t / ns[-1], 1.0) ** 3)
        targets[f"{target:g}"] = {"n": n_t, "mc_s": t_t, "speedup": t_t / th["median_s"]}
    return {"case": case, "theory_s": th["median_s"], "theory_error": eps, "alpha": float(alpha),
            "practical_targets": targets,
            "ks_prefactor": float(math.exp(icpt)), "n_star": n_star, "time_exponent_fit": gamma,
            "mc_time_at_n_star_s": t_star, "speedup_equal_accuracy": t_star / th["median_s"],
            "largest_n": int(ns[-1]), "mc_s_at_largest_n": float(ts[-1]), "mc_error_at_largest_n": float(ds[-1]),
            "speedup_vs_largest_n": float(ts[-1] / th["median_s"]),
            "mc_memory_at_n_star_gib": 8 * n_star ** 2 / 2 ** 30}


def report(records: list[dict], refs: dict, cfg: dict, quick: bool) -> tuple[dict, str]:
    import jax

    host = host_info()
    loads = [r["loadavg_1min"] for r in records]
    summaries = {}
    for case in CASES:
        th = next((r for r in records if r["key"] == f"theory|{case}"), None)
        mcs = sorted((r for r in records if r["key"].startswith(f"mc|{case}|")), key=lambda r: r["n"])
        if th is not None and len(mcs) >= 2:
            summaries[case] = summarize(case, th, mcs)
    doc = {"benchmark": "free", "quick": quick, "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "host": host, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "jax": jax.__version__,
           "device": str(jax.devices()[0]), "dtype": "float64",
           "depth": DEPTH, "grid_points": GRID, "eta_relative": ETA_REL, "config": cfg,
           "loadavg_1min": {"min": min(loads), "max": max(loads), "mean": float(np.mean(loads))},
           "reference": {c: {k: v for k, v in r.items() if not isinstance(v, np.ndarray)} for c, r in refs.items()},
           "summary": summaries, "records": records}
    lines = [f"# Free probability vs Monte Carlo: depth-{DEPTH} spectra on a {GRID}-point grid", "",
             f"{'Quick' if quick else 'Full'} run, {doc['date']}, host: {host['cpu']} ({host['cores']} cores, "
             f"shared with other jobs: 1-min load average {doc['loadavg_1min']['min']:.1f}-"
             f"{doc['loadavg_1min']['max']:.1f} during the run, so wall times are noisy, for both sides alike). "
             f"jax {jax.__version__}, {doc['device']} (XLA's own threads; LAPACK with OMP_NUM_THREADS = "
             f"{doc['omp_num_threads']}), float64. Grid: `geomspace(1e-6, 0.999 lambda_max, {GRID})`; "
             f"theory density read at `eta = {ETA_REL:g} x` (per point). Timings after compilation: theory median of "
             f"{THEORY_REPEATS} calls, Monte Carlo median time of one draw (compile times in the JSON).", "",
             "Accuracy: theory = max relative error of the density on the grid against the exact parametric "
             "reference (this bounds the error of the CDF it integrates to); Monte Carlo = Kolmogorov distance on the "
             "grid of one draw's eigenvalue CDF (mean over draws), the metric most favourable to Monte Carlo. "
             "Equal accuracy: fit D_N = C N^-alpha, solve D_N* = theory error, time at N* = time at the largest N "
             "times (N*/N)^3 (matrix products and SVD).", ""]
    for case, spec in CASES.items():
        ref = refs.get(case)
        th = next((r for r in records if r["key"] == f"theory|{case}"), None)
        mcs = sorted((r for r in records if r["key"].startswith(f"mc|{case}|")), key=lambda r: r["n"])
        if th is None:
            continue
        lines += [f"## {spec['title']}", "",
                  f"Exact reference: edge lambda_max = {ref['edge']:.6g}, zero mass {ref['zero_mass']:.3g}, "
                  f"variance {ref['variance']:g}; parametrization checked: grid matched to {ref['x_match']:.1e}, "
                  f"arg residual {ref['arg_residual']:.1e}"
                  + (f", Fuss-Catalan closed form {ref['fuss_catalan_closed_form_rel_diff']:.1e}"
                     if "fuss_catalan_closed_form_rel_diff" in ref else "")
                  + f"; CDF error estimate {ref['cdf_error_estimate']:.1e}.", "",
                  "| method | size | draws | time (s) | compile (s) | error | mean | variance | max eigenvalue |",
                  "|---|---:|---:|---:|---:|---|---:|---:|---:|",
                  f"| theory (subordination) | - | - | {th['median_s']:.3f} | {th['compile_s']:.1f} | "
                  f"max rel. density error {th['max_rel_error']:.1e} (median {th['median_rel_error']:.1e}; "
                  f"{100 * th['converged_fraction']:.0f}% converged) | {th['mean']:.6f} | {th['variance']:.6g} | "
                  f"{th['max_eigenvalue']:.6g} |"]
        for r in mcs:
            se = f" +- {r['ks_se']:.1e}" if r["ks_se"] is not None else ""
            lines.append(f"| Monte Carlo | {r['n']} | {r['draws']} | {r['median_s']:.3f} | {r['compile_s']:.1f} | "
                         f"Kolmogorov {r['ks_mean']:.2e}{se} (pooled {r['ks_pooled']:.1e}) | {r['mean']:.4f} | "
                         f"{r['variance']:.4g} | {r['max_eigenvalue']:.4g} |")
        lines += ["", f"Theory vs exact: edge {th['edge_rel_error']:.1e} relative, variance "
                  f"{th['variance_rel_error']:.1e} "
                  f"relative, zero mass {th['zero_mass_error']:.1e}; largest density error at x = "
                  f"{th['x_of_max_error']:.4g}. Exact reference built in {ref['seconds']:.1f} s (numpy)."]
        s = summaries.get(case)
        if s is not None:
            lines += ["", f"Monte-Carlo error D_N = {s['ks_prefactor']:.3g} N^-{s['alpha']:.2f}; matching the theory's "
                      f"{s['theory_error']:.1e} needs N* = {s['n_star']:.2e} (a {s['mc_memory_at_n_star_gib']:.1e} GiB "
                      f"matrix), about {s['mc_time_at_n_star_s']:.1e} s per draw (fitted time exponent over N >= 128: "
                      f"{s['time_exponent_fit']:.2f}; N^3 used). **Speedup at equal accuracy: "
                      f"{s['speedup_equal_accuracy']:.1e}x** (extrapolated over many decades of N: an order of "
                      "magnitude "
                      "statement only). Without extrapolation: at N = "
                      f"{s['largest_n']} Monte Carlo takes {s['mc_s_at_largest_n']:.2f} s per draw for an error of "
                      f"{s['mc_error_at_largest_n']:.1e}, {s['speedup_vs_largest_n']:.1f}x the theory's time at "
                      f"{s['mc_error_at_largest_n'] / s['theory_error']:.1e}x its error. At looser targets "
                      "(where the theory stays as accurate as above): "
                      + "; ".join(f"Kolmogorov error {k}: N ~ {v['n']:.0f}, ~{v['mc_s']:.3g} s per draw, "
                                  f"{v['speedup']:.3g}x the theory's time" for k, v in s["practical_targets"].items())
                      + ".", ""]
    lines += ["![free vs Monte Carlo](free.png)", ""]
    return doc, "\n".join(lines)


def figure(doc: dict, refs: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = doc["records"]
    fig, axes = plt.subplots(len(CASES), 2, figsize=(12, 4.2 * len(CASES)), squeeze=False)
    for i, (case, spec) in enumerate(CASES.items()):
        ref = refs.get(case)
        th = next((r for r in recs if r["key"] == f"theory|{case}"), None)
        mcs = sorted((r for r in recs if r["key"].startswith(f"mc|{case}|")), key=lambda r: r["n"])
        if th is None or ref is None:
            continue
        ax = axes[i, 0]
        x = ref["x"]
        if mcs:
            s = np.asarray(mcs[-1]["sample"])
            bins = np.geomspace(1e-6, ref["edge"], 30)
            # histogram of the continuous part as a density in x (mass per bin / width)
            h, e = np.histogram(s, bins=bins)  # mass per bin over d(ln lambda) = lambda rho(lambda)
            ax.stairs(h / (mcs[-1]["n"] * mcs[-1]["draws"]) / np.diff(np.log(e)), e, color="0.6", fill=True, alpha=0.5,
                      label=f"Monte Carlo N = {mcs[-1]['n']}")
        ax.plot(x, ref["density"] * x, "k-", lw=3, alpha=0.4, label="exact")
        ax.plot(x, np.asarray(th["density"]) * x, "C0--", lw=1.5, label="theory (subordination)")
        ax.set(xscale="log", xlabel=r"$\lambda$", ylabel=r"$\lambda\,\rho(\lambda)$", title=spec["title"])
        ax.legend(fontsize=8)
        ax = axes[i, 1]
        if mcs:
            ts = np.array([r["median_s"] for r in mcs])
            ds = np.array([r["ks_mean"] for r in mcs])
            ax.loglog(ts, ds, "o-", color="C3", label="Monte Carlo (time per draw, Kolmogorov distance)")
            for r in mcs:
                ax.annotate(f"N={r['n']}", (r["median_s"], r["ks_mean"]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
            s = doc["summary"].get(case)
            if s is not None:
                nn = np.geomspace(mcs[-1]["n"], s["n_star"], 20)
                ax.loglog(ts[-1] * (nn / mcs[-1]["n"]) ** 3, s["ks_prefactor"] * nn ** -s["alpha"], ":", color="C3",
                          label=r"extrapolated ($N^{-\alpha}$ error, $N^3$ time)")
        ax.loglog([th["median_s"]], [th["max_rel_error"]], "*", ms=14, color="C0",
                  label="theory (max rel. density error)")
        ax.set(xlabel="seconds (after compilation)", ylabel="error", title="time vs accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="Monte Carlo N = 64, 128, 256")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--fresh", action="store_true", help="ignore (and replace) existing records")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    cfg = QUICK if args.quick else FULL
    out = args.out or (HERE / "results" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "free.jsonl"
    if args.fresh and jsonl.exists():
        jsonl.unlink()
    records = [json.loads(l) for l in jsonl.read_text().splitlines() if l.strip()] if jsonl.exists() else []
    done = {r["key"] for r in records}

    def keep(rec):
        records.append(rec)
        with jsonl.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: v for k, v in rec.items() if k not in ("density", "sample", "ks", "times_s")}),
              flush=True)

    refs = {}
    for case, spec in CASES.items():
        c = spec["c"]
        t0 = time.perf_counter()
        edge = exact_edge(c, DEPTH)
        x = np.geomspace(1e-6, 0.999 * edge, GRID)
        ref = exact_reference(x, c, DEPTH)
        ref.update(edge=edge, variance=c * DEPTH, zero_mass=1 - 1 / c, seconds=time.perf_counter() - t0)
        ref["x"] = x
        refs[case] = ref
        print(json.dumps({k: v for k, v in ref.items() if not isinstance(v, np.ndarray)}), flush=True)
        if f"theory|{case}" not in done:
            keep(theory_record(case, x, ref))
        for n, draws in zip(cfg["sizes"], cfg["draws"]):
            if f"mc|{case}|{n}" not in done:
                keep(mc_record(case, n, draws, x, ref, args.seed, n == max(cfg["sizes"])))
    doc, md = report(records, refs, cfg, args.quick)
    (out / "free.json").write_text(json.dumps(doc, indent=1, default=lambda a: np.asarray(a).tolist()))
    (out / "free.md").write_text(md)
    figure(doc, refs, out / "free.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
