"""Hermite coefficients for 1,000 activation parameters at once, and the compositional kernel on
a 10^6-point grid at depth 50: rmtjax against scipy / mpmath / NumPy.

One command (from the repository root, with the project's Python):

    .venv/bin/python benchmarks/hermite.py            # full run (about 2-3 min of CPU)
    .venv/bin/python benchmarks/hermite.py --quick    # smaller sizes, < 60 s

What it measures (float64 throughout, x64 enabled):

1. Coefficients ``a_0..a_64`` of :math:`\\sigma(\\sqrt q z)` in the orthonormal basis
   :math:`h_k = He_k/\\sqrt{k!}` for 1,000 values of one parameter at once:
   ``jax.jit(jax.vmap(lambda p: rmtjax.hermite.hermite_coefficients(act(p), order=64)))``.
   Five sweeps: Swish(beta), beta in [0.5, 3] and tanh(sqrt(q) z), q in [0.25, 4] (numerical:
   the default trapezoidal rule), ELU(alpha), alpha in [0.5, 2] (numerical:
   ``GaussLegendre()``, split at the kink), erf(b z), b in [0.25, 4] and LeakyRelu(alpha), alpha
   in [0, 0.5] (closed forms). Compile time (``lower().compile()``) separately, then the median
   of 7 calls with ``block_until_ready``.
   Peer: ``scipy.integrate.quad`` of :math:`\\sigma(\\sqrt q z)h_k(z)\\varphi(z)` on [-30, 30]
   with a break point at 0, ``epsabs=1e-15, epsrel=1e-13, limit=500``, one integral per (value,
   k), with :math:`h_k\\varphi` from the normalized three-term recurrence started at
   :math:`\\varphi(z)` (no overflow at order 64). 1000 x 65 integrals would take minutes per
   activation, so scipy runs on an evenly spaced subsample of the parameter values (20; 3 with
   ``--quick``); its time per value is reported and extrapolated linearly to 1,000. Also timed:
   ``scipy.integrate.quad_vec`` with all 65 orders in one vector integrand (a faster scipy peer).
   Accuracy: max |rmtjax - quad| over the subsample, separately for k <= 30 (the issue's target:
   1e-10 absolute) and k <= 64. Which side errs is settled with mpmath (30 digits, tanh-sinh on
   unit subintervals of [-30, 30]) at the entries of largest discrepancy, for k <= 30 and for
   30 < k <= 64, of each sweep.
2. Compositional kernel :math:`K^{(\\ell)} = G\\circ\\cdots\\circ G(\\rho)`, :math:`\\ell = 0..50`,
   :math:`G(\\rho) = \\sum_{k\\le64}a_k^2\\rho^k` with normalized coefficients
   (``normalized(hermite_coefficients(act, order=64))``) of ReLU and erf(z), on a 10^6-point
   grid of [-1, 1] (10^5 with ``--quick``): ``compositional_kernel(a, rho, depth=50)`` returns
   all 51 depths, shape (51, 10^6). Compile time separately, median of 3 calls. Peer for speed:
   the same iteration in plain NumPy on the full grid (Horner's rule with in-place updates,
   all depths stored). Accuracy: (a) max |rmtjax - NumPy| over the full grid and all depths;
   (b) against ``numpy.polynomial.polynomial.polyval`` iterated 50 times on every 100th grid
   point; (c) against the closed forms iterated 50 times: the normalized arc-cosine kernel
   :math:`G(\\rho) = (\\sqrt{1-\\rho^2} + (\\pi - \\arccos\\rho)\\rho)/\\pi` for ReLU and
   :math:`\\arcsin(2\\rho/3)/\\arcsin(2/3)` for erf(z). (c) includes the truncation of the
   series at order 64: ReLU's :math:`a_k^2 \\sim k^{-5/2}` leaves 1.6e-4 of the normalized mass
   beyond order 64 (the gap at depth 1), which the iteration carries to ~2e-3 at depth 50; erf's coefficients decay geometrically, so its tail is far
   below 1e-10 and (c) measures the iteration itself, whose rounding errors grow near
   :math:`\\rho = \\pm1` by up to :math:`\\mu^{50}` (:math:`\\mu = G'(1)`, recorded).

Timings are wall-clock on a shared 2-core machine (the 1-minute load average at start and end is
recorded): treat ratios below ~2x as noise. XLA may use both cores for the 10^6-point arrays;
NumPy uses one.

Results: ``<out>/hermite.json``, ``hermite.md`` and ``hermite.png`` (``--out`` defaults to
``benchmarks/results``; ``benchmarks/results/quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import statistics
import time
import warnings

import numpy as np
from kernels_vs_neural_tangents import host_info  # the script folder is on sys.path

HERE = pathlib.Path(__file__).resolve().parent
ORDER = 64
DEPTH = 50
QUAD_L = 30.0
_SQ2PI = math.sqrt(2 * math.pi)


# ------------------------------------------------------------------------------------------
# The sweeps: (name, parameter, range, method, rmtjax builder, scalar sigma for scipy, mpmath sigma)
# ------------------------------------------------------------------------------------------


def _swish(beta, z):
    t = beta * z
    if t >= 0:
        return z / (1.0 + math.exp(-t))
    e = math.exp(t)
    return z * e / (1.0 + e)


def _cases():
    import mpmath as mp

    from rmtjax import activations as A
    from rmtjax.hermite import GaussLegendre, hermite_coefficients

    return [
        dict(name="Swish(beta)", param="beta", lo=0.5, hi=3.0, method="trapezoid (Auto default)",
             rmtjax=lambda p: hermite_coefficients(A.Swish(p), order=ORDER),
             sigma=lambda p, z: _swish(p, z),
             mp=lambda p, z: z / (1 + mp.exp(-p * z))),
        dict(name="tanh(sqrt(q) z)", param="q", lo=0.25, hi=4.0, method="trapezoid (Auto default)",
             rmtjax=lambda p: hermite_coefficients(A.Tanh(), order=ORDER, q=p),
             sigma=lambda p, z: math.tanh(math.sqrt(p) * z),
             mp=lambda p, z: mp.tanh(mp.sqrt(p) * z)),
        dict(name="ELU(alpha)", param="alpha", lo=0.5, hi=2.0, method="GaussLegendre()",
             rmtjax=lambda p: hermite_coefficients(A.Elu(p), order=ORDER, method=GaussLegendre()),
             sigma=lambda p, z: z if z > 0 else p * math.expm1(z),
             mp=lambda p, z: z if z > 0 else p * mp.expm1(z)),
        dict(name="erf(b z)", param="b", lo=0.25, hi=4.0, method="closed form (Auto)",
             rmtjax=lambda p: hermite_coefficients(A.Erf(1.0, p), order=ORDER),
             sigma=lambda p, z: math.erf(p * z),
             mp=lambda p, z: mp.erf(p * z)),
        dict(name="LeakyRelu(alpha)", param="alpha", lo=0.0, hi=0.5, method="closed form (Auto)",
             rmtjax=lambda p: hermite_coefficients(A.LeakyRelu(p), order=ORDER),
             sigma=lambda p, z: z if z > 0 else p * z,
             mp=lambda p, z: z if z > 0 else p * z),
    ]


# ------------------------------------------------------------------------------------------
# References
# ------------------------------------------------------------------------------------------


def _hphi(z: float, k: int) -> float:
    """h_k(z) phi(z) by the normalized recurrence started at phi(z) (stable, no overflow)."""
    p0 = math.exp(-0.5 * z * z) / _SQ2PI
    if k == 0:
        return p0
    p1 = z * p0
    for j in range(1, k):
        p0, p1 = p1, (z * p1 - math.sqrt(j) * p0) / math.sqrt(j + 1)
    return p1


def _hphi_vec(z: float, n: int) -> np.ndarray:
    out = np.empty(n + 1)
    out[0] = math.exp(-0.5 * z * z) / _SQ2PI
    if n >= 1:
        out[1] = z * out[0]
    for j in range(1, n):
        out[j + 1] = (z * out[j] - math.sqrt(j) * out[j - 1]) / math.sqrt(j + 1)
    return out


def _scipy_quad(sigma, p: float, order: int):
    """a_0..a_order by one scipy.integrate.quad per k; also the largest error estimate and the
    number of IntegrationWarnings."""
    from scipy.integrate import IntegrationWarning, quad

    vals, errs, nwarn = np.empty(order + 1), np.empty(order + 1), 0
    for k in range(order + 1):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always", IntegrationWarning)
            vals[k], errs[k] = quad(lambda z: sigma(p, z) * _hphi(z, k), -QUAD_L, QUAD_L, points=[0.0],
                                    epsabs=1e-15, epsrel=1e-13, limit=500)
        nwarn += sum(issubclass(x.category, IntegrationWarning) for x in w)
    return vals, float(errs.max()), nwarn


def _scipy_quad_vec(sigma, p: float, order: int) -> np.ndarray:
    from scipy.integrate import quad_vec

    v, _ = quad_vec(lambda z: sigma(p, z) * _hphi_vec(z, order), -QUAD_L, QUAD_L, points=[0.0],
                    epsabs=1e-15, epsrel=1e-13, norm="max", limit=10000)
    return v


def _mpmath_coefficient(mp_sigma, p: float, k: int, dps: int = 30) -> float:
    import mpmath as mp

    with mp.workdps(dps):
        pp = mp.mpf(p)
        c = 1 / mp.sqrt(2 * mp.pi)

        def f(z):
            h0, h1 = c * mp.exp(-z * z / 2), None
            if k == 0:
                return mp_sigma(pp, z) * h0
            h1 = z * h0
            for j in range(1, k):
                h0, h1 = h1, (z * h1 - mp.sqrt(j) * h0) / mp.sqrt(j + 1)
            return mp_sigma(pp, z) * h1

        edges = [mp.mpf(x) for x in range(-int(QUAD_L), int(QUAD_L) + 1)]
        return float(mp.quad(f, edges))


# ------------------------------------------------------------------------------------------
# Benchmark pieces
# ------------------------------------------------------------------------------------------


def _timed(fn, repeats: int):
    import jax

    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), times


def coefficients_case(case: dict, n_params: int, n_sub: int, mp_check: bool) -> dict:
    import jax
    import jax.numpy as jnp

    params = jnp.linspace(case["lo"], case["hi"], n_params)
    fn = jax.jit(jax.vmap(case["rmtjax"]))
    t0 = time.perf_counter()
    compiled = fn.lower(params).compile()
    compile_s = time.perf_counter() - t0
    a, med, times = _timed(lambda: compiled(params), 7)
    a = np.asarray(a)
    assert a.shape == (n_params, ORDER + 1), a.shape

    sub = np.unique(np.linspace(0, n_params - 1, n_sub).round().astype(int))
    pvals = np.asarray(params)[sub]
    ref, qerr, nwarn = [], 0.0, 0
    t0 = time.perf_counter()
    for p in pvals:
        v, e, w = _scipy_quad(case["sigma"], float(p), ORDER)
        ref.append(v)
        qerr, nwarn = max(qerr, e), nwarn + w
    quad_s = (time.perf_counter() - t0) / len(sub)
    ref = np.array(ref)
    t0 = time.perf_counter()
    vec = np.array([_scipy_quad_vec(case["sigma"], float(p), ORDER) for p in pvals])
    quad_vec_s = (time.perf_counter() - t0) / len(sub)

    err = np.abs(a[sub] - ref)  # (n_sub, 65)
    rec = {
        "activation": case["name"], "parameter": case["param"], "range": [case["lo"], case["hi"]],
        "method": case["method"], "n_params": n_params, "order": ORDER,
        "compile_s": compile_s, "call_s": med, "call_times_s": times,
        "n_sub": len(sub), "sub_params": pvals.tolist(),
        "scipy_quad_s_per_value": quad_s, "scipy_quad_extrapolated_s": quad_s * n_params,
        "scipy_quad_vec_s_per_value": quad_vec_s, "scipy_quad_vec_extrapolated_s": quad_vec_s * n_params,
        "speedup_vs_quad": quad_s * n_params / med, "speedup_vs_quad_vec": quad_vec_s * n_params / med,
        "max_abs_err_k_le_30": float(err[:, :31].max()), "max_abs_err_k_le_64": float(err.max()),
        "max_abs_err_per_k": err.max(axis=0).tolist(),
        "quad_vec_vs_quad_max_abs": float(np.abs(vec - ref).max()),
        "quad_max_error_estimate": qerr, "quad_integration_warnings": nwarn,
        "max_abs_coefficient_k_gt_30": float(np.abs(a[:, 31:]).max()),
        "target_1e-10_k_le_30_met": bool(err[:, :31].max() <= 1e-10),
    }
    if mp_check:
        checks = []
        for lo, hi in ((0, 31), (31, ORDER + 1)):
            i, k = np.unravel_index(np.argmax(err[:, lo:hi]), err[:, lo:hi].shape)
            k = int(k) + lo
            p = float(pvals[i])
            t0 = time.perf_counter()
            m = _mpmath_coefficient(case["mp"], p, k)
            checks.append({"param": p, "k": k, "rmtjax": float(a[sub[i], k]), "scipy": float(ref[i, k]),
                           "mpmath": m, "rmtjax_err": abs(float(a[sub[i], k]) - m),
                           "scipy_err": abs(float(ref[i, k]) - m), "mpmath_s": time.perf_counter() - t0})
        rec["mpmath_checks"] = checks
    return rec


def _numpy_iterate(p: np.ndarray, rho: np.ndarray, depth: int) -> np.ndarray:
    """All iterates of G(x) = sum_k p_k x^k (Horner, in place), shape (depth + 1, n)."""
    out = np.empty((depth + 1, rho.size))
    out[0] = rho
    x = rho
    for l in range(depth):
        acc = np.full_like(x, p[-1])
        for c in p[-2::-1]:
            acc *= x
            acc += c
        out[l + 1] = acc
        x = acc
    return out


def _closed(name: str):
    if name == "ReLU":
        return lambda r: (np.sqrt(np.maximum(1 - r * r, 0.0)) + (np.pi - np.arccos(np.clip(r, -1, 1))) * r) / np.pi
    return lambda r: np.arcsin(2 * r / 3) / np.arcsin(2 / 3)


def kernel_case(name: str, n_grid: int) -> dict:
    import jax
    import jax.numpy as jnp
    from numpy.polynomial import polynomial as P

    from rmtjax import activations as A
    from rmtjax.hermite import compositional_kernel, hermite_coefficients, normalized

    act = {"ReLU": A.Relu(), "erf": A.Erf()}[name]
    a = normalized(hermite_coefficients(act, order=ORDER))
    rho = jnp.linspace(-1.0, 1.0, n_grid)
    fn = jax.jit(lambda c, r: compositional_kernel(c, r, depth=DEPTH))
    t0 = time.perf_counter()
    compiled = fn.lower(a, rho).compile()
    compile_s = time.perf_counter() - t0
    K, med, times = _timed(lambda: compiled(a, rho), 3)
    # the public call as written by a user (eager: input check on the host, then the jitted scan)
    _, eager_med, _ = _timed(lambda: compositional_kernel(a, rho, depth=DEPTH), 1)
    K = np.asarray(K)
    assert K.shape == (DEPTH + 1, n_grid), K.shape

    p = np.asarray(a) ** 2
    r = np.asarray(rho)
    np_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ref = _numpy_iterate(p, r, DEPTH)
        np_times.append(time.perf_counter() - t0)
    np_med = statistics.median(np_times)

    sub = np.arange(0, n_grid, 100)
    x, pv = r[sub], []
    for _ in range(DEPTH):
        x = P.polyval(x, p)
        pv.append(x)
    pv = np.array(pv)
    G = _closed(name)
    x, cf = r[sub], []
    for _ in range(DEPTH):
        x = G(x)
        cf.append(x)
    cf = np.array(cf)
    cf_err = np.abs(K[1:, sub] - cf).max(axis=1)
    rec = {
        "activation": name, "order": ORDER, "depth": DEPTH, "n_grid": n_grid, "output_shape": list(K.shape),
        "sum_a2_before_normalizing": float(np.sum(np.asarray(hermite_coefficients(act, order=ORDER)) ** 2)),
        "mu": float(np.sum(np.arange(ORDER + 1) * p)),
        "compile_s": compile_s, "call_s": med, "call_times_s": times, "eager_call_s": eager_med,
        "numpy_s": np_med, "numpy_times_s": np_times, "speedup_vs_numpy": np_med / med,
        "max_abs_vs_numpy_full_grid": float(np.abs(K - ref).max()),
        "max_abs_vs_polyval_subsample": float(np.abs(K[1:, sub] - pv).max()),
        "closed_form": "arc-cosine (normalized)" if name == "ReLU" else "arcsin(2 rho/3)/arcsin(2/3)",
        "max_abs_vs_closed_form_depth1": float(cf_err[0]), "max_abs_vs_closed_form_depth50": float(cf_err[-1]),
        "max_abs_vs_closed_form_any_depth": float(cf_err.max()),
        "curves": {"rho": r[sub][::10].tolist(),
                   **{f"K{l}": K[l, sub][::10].tolist() for l in (1, 2, 5, 10, 50)}},
    }
    del K, ref
    return rec


# ------------------------------------------------------------------------------------------
# Main, figure, Markdown
# ------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    out = pathlib.Path(args.out) if args.out else HERE / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    n_params, n_sub, n_grid = (100, 3, 10**5) if args.quick else (1000, 20, 10**6)

    import jax

    jax.config.update("jax_enable_x64", True)

    rec: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": host_info(),
                 "loadavg_1min_start": os.getloadavg()[0], "jax": jax.__version__, "device": str(jax.devices()[0]),
                 "quick": args.quick, "dtype": "float64",
                 "setting": {"order": ORDER, "n_params": n_params, "scipy_subsample": n_sub, "depth": DEPTH,
                             "n_grid": n_grid, "quad": f"[-{QUAD_L:g}, {QUAD_L:g}], points=[0], epsabs=1e-15, "
                                                       "epsrel=1e-13, limit=500"}}
    t_start = time.process_time()
    rec["coefficients"] = []
    for case in _cases():
        r = coefficients_case(case, n_params, n_sub, mp_check=True)
        print(f"{r['activation']:18s} compile {r['compile_s']:.2f} s, call {r['call_s'] * 1e3:.2f} ms, "
              f"quad {r['scipy_quad_s_per_value']:.2f} s/value, err k<=30 {r['max_abs_err_k_le_30']:.1e}, "
              f"k<=64 {r['max_abs_err_k_le_64']:.1e}", flush=True)
        rec["coefficients"].append(r)
    rec["kernel"] = []
    for name in ("ReLU", "erf"):
        r = kernel_case(name, n_grid)
        print(f"kernel {name}: compile {r['compile_s']:.2f} s, call {r['call_s']:.2f} s, numpy {r['numpy_s']:.2f} s, "
              f"vs numpy {r['max_abs_vs_numpy_full_grid']:.1e}, closed form depth 50 "
              f"{r['max_abs_vs_closed_form_depth50']:.1e}", flush=True)
        rec["kernel"].append(r)
    rec["loadavg_1min_end"] = os.getloadavg()[0]
    rec["process_cpu_s"] = time.process_time() - t_start

    _figure(rec, out / "hermite.png")
    (out / "hermite.json").write_text(json.dumps(rec, indent=1))
    (out / "hermite.md").write_text(_markdown(rec))
    print(_markdown(rec))
    return rec


def _figure(r: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, c in enumerate(r["coefficients"]):
        e = np.maximum(np.array(c["max_abs_err_per_k"]), 1e-19)
        ax[0].semilogy(np.arange(len(e)), e, ".-", color=f"C{i}", label=f"{c['activation']} ({c['method']})")
    ax[0].axhline(1e-10, color="k", ls=":", lw=1)
    ax[0].axvline(30, color="k", ls=":", lw=1)
    ax[0].set(xlabel="k", ylabel="max |rmtjax - scipy quad| over the subsample", ylim=(1e-19, 1e-8),
              title=f"Hermite coefficients, {r['setting']['n_params']} parameter values (zeros shown at 1e-19)")
    ax[0].legend(fontsize=7)
    ls = {"ReLU": "-", "erf": "--"}
    for k in r["kernel"]:
        cur = k["curves"]
        for j, l in enumerate((1, 2, 5, 10, 50)):
            ax[1].plot(cur["rho"], cur[f"K{l}"], ls[k["activation"]], color=f"C{j}",
                       label=f"{k['activation']}, L = {l}")
    ax[1].set(xlabel=r"$\rho$", ylabel=r"$K^{(L)}(\rho)$",
              title=f"compositional kernels (normalized, order {ORDER})")
    ax[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(r: dict) -> str:
    h, s = r["host"], r["setting"]
    lines = [
        "# Hermite coefficients and compositional kernels: rmtjax vs scipy / NumPy", "",
        f"Run {r['date']}{' (quick mode)' if r['quick'] else ''}, host: {h['cpu']} ({h['cores']} cores, shared: "
        f"1-min load average {r['loadavg_1min_start']:.1f} at the start, {r['loadavg_1min_end']:.1f} at the end; "
        f"wall times are noisy), jax {r['jax']} on {r['device']}, float64. Process CPU time of the whole run: "
        f"{r['process_cpu_s']:.0f} s.", "",
        f"## 1. Coefficients a_0..a_{s['order']} for {s['n_params']} parameter values at once "
        "(`jit(vmap(hermite_coefficients))`)", "",
        f"rmtjax: compile once, then the median of 7 calls. scipy: `quad` per (value, k) on {s['quad']}, and "
        f"`quad_vec` with all {s['order'] + 1} orders per call, on {s['scipy_subsample']} evenly spaced parameter "
        f"values; their time is extrapolated linearly to {s['n_params']} values. Error: max |rmtjax - quad| over "
        "those values.", "",
        "| activation (parameter range) | method | compile | rmtjax, all values | scipy quad per value | "
        f"quad, {s['n_params']} values (extrap.) | quad_vec, {s['n_params']} values (extrap.) | speed-up vs quad / "
        "quad_vec | max err k <= 30 | max err k <= 64 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in r["coefficients"]:
        lines.append(
            f"| {c['activation']}, {c['parameter']} in [{c['range'][0]:g}, {c['range'][1]:g}] | {c['method']} | "
            f"{c['compile_s']:.2f} s | {c['call_s'] * 1e3:.2f} ms | {c['scipy_quad_s_per_value']:.2f} s | "
            f"{c['scipy_quad_extrapolated_s']:.0f} s | {c['scipy_quad_vec_extrapolated_s']:.0f} s | "
            f"{c['speedup_vs_quad']:.2g}x / {c['speedup_vs_quad_vec']:.2g}x | {c['max_abs_err_k_le_30']:.1e} | "
            f"{c['max_abs_err_k_le_64']:.1e} |")
    met = all(c["target_1e-10_k_le_30_met"] for c in r["coefficients"])
    worst30 = max(c["max_abs_err_k_le_30"] for c in r["coefficients"])
    worst64 = max(c["max_abs_err_k_le_64"] for c in r["coefficients"])
    lines += [
        "",
        f"**Accuracy target (1e-10 absolute for k <= 30): {'met' if met else 'NOT met'}** (worst {worst30:.1e}; "
        f"worst over k <= 64: {worst64:.1e}). `quad` vs `quad_vec` differ by at most "
        f"{max(c['quad_vec_vs_quad_max_abs'] for c in r['coefficients']):.1e}; quad's own error estimates reach "
        f"{max(c['quad_max_error_estimate'] for c in r['coefficients']):.1e} "
        f"({sum(c['quad_integration_warnings'] for c in r['coefficients'])} IntegrationWarnings over all "
        "integrals: tolerance 1e-15 below roundoff).", "",
        "Who errs: mpmath (30 digits) at the entry of largest |rmtjax - quad| for k <= 30 and for k > 30 of "
        "each sweep:", "",
        "| activation | parameter | k | a_k (mpmath) | \\|rmtjax - mpmath\\| | \\|quad - mpmath\\| |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in r["coefficients"]:
        for m in c.get("mpmath_checks", []):
            lines.append(f"| {c['activation']} | {m['param']:.4g} | {m['k']} | {m['mpmath']:.6e} | "
                         f"{m['rmtjax_err']:.1e} | {m['scipy_err']:.1e} |")
    lines += [
        "",
        f"## 2. Compositional kernel on a {s['n_grid']:.0e}-point rho grid of [-1, 1], all depths 0..{s['depth']}", "",
        f"`compositional_kernel(normalized(hermite_coefficients(act, order={s['order']})), rho, depth={s['depth']})`, "
        f"output ({s['depth'] + 1}, {s['n_grid']}); compiled once, then the median of 3 calls. NumPy: the same "
        "Horner iteration with in-place updates on the full grid, all depths stored, median of 3 (one core). "
        "Accuracy: against that NumPy iteration (full grid, all depths), against `numpy.polynomial.polynomial."
        "polyval` iterated on every 100th point, and against the closed-form dual kernel iterated (every 100th point).",
        "",
        "| coefficients | compile | rmtjax | NumPy | speed-up | vs NumPy (all) | vs polyval | closed form | "
        "vs closed form, L = 1 | L = 50 | max over L |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for k in r["kernel"]:
        lines.append(
            f"| {k['activation']}, order {k['order']} | {k['compile_s']:.2f} s | {k['call_s']:.2f} s | "
            f"{k['numpy_s']:.2f} s | {k['speedup_vs_numpy']:.2g}x | {k['max_abs_vs_numpy_full_grid']:.1e} | "
            f"{k['max_abs_vs_polyval_subsample']:.1e} | {k['closed_form']} | {k['max_abs_vs_closed_form_depth1']:.1e} | "
            f"{k['max_abs_vs_closed_form_depth50']:.1e} | {k['max_abs_vs_closed_form_any_depth']:.1e} |")
    relu = next((k for k in r["kernel"] if k["activation"] == "ReLU"), None)
    if relu is not None:
        lines += [
            "",
            "The ReLU gap to the closed form is the truncation of the series at order "
            f"{relu['order']}, not the iteration: a_k^2 ~ k^(-5/2), sum_(k <= {relu['order']}) a_k^2 = "
            f"{relu['sum_a2_before_normalizing']:.6f} instead of 1/2, so the normalized G differs from the "
            f"arc-cosine kernel by {relu['max_abs_vs_closed_form_depth1']:.1e} (depth 1), and the iteration carries "
            f"this to {relu['max_abs_vs_closed_form_depth50']:.1e} at depth 50. "
            "The erf coefficients decay geometrically and its closed-form gap is the iteration's own "
            "rounding error, amplified by the conditioning of the map: a perturbation at depth l grows by "
            "prod G'(K^(l)) <= mu^L near rho = +-1 (mu = G'(1) = "
            + ", ".join(f"{k['mu']:.3f} for {k['activation']}" for k in r["kernel"])
            + "; mu^50 = " + ", ".join(f"{k['mu'] ** k['depth']:.1e}" for k in r["kernel"])
            + "), so two correct float64 evaluations may differ by ~1e-16 mu^50. rmtjax's eager call (host-side range check of rho, then the same compiled scan): "
            + ", ".join(f"{k['activation']} {k['eager_call_s']:.2f} s" for k in r["kernel"]) + ".",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
