r"""rmtjax's fully-connected NNGP + NTK kernel at large n on whatever device JAX has, against that
device's measured lower bound (issue 18, item 4).

On a GPU machine, from the repository root (a CUDA build of JAX; the project's own dependencies
otherwise; nothing else is needed, neural-tangents is not involved):

    python -m venv .venv-gpu && . .venv-gpu/bin/activate
    pip install -e . "jax[cuda12]>=0.7,<0.12"   # pyproject's jax range, CUDA 12 wheels
    python benchmarks/kernels_gpu.py                      # n = 10^4, 2x10^4, 5x10^4; ~10 min budget
    python benchmarks/kernels_gpu.py --tile 128 1024      # also compare tile sizes
    python benchmarks/kernels_gpu.py --small              # the CPU smoke size the tests run

What it measures. ``X`` = n x 784 Gaussian rows of norm sqrt(784) (``reference/nt_bench.make_data``,
the same data as ``kernels_vs_neural_tangents.py``); network ``FullyConnected(depth, W_std, 0.05,
act)``, NTK parameterization, ``W_std = sqrt(2)`` for ReLU and 1.5 for erf; NNGP and NTK of X
with itself, ``jax.jit(lambda x, net: kernel(x, None, net, tile=..., compute_dtype=dtype))``.
Grid: n in {10^4, 2x10^4, 5x10^4} x depth {10, 20} x {relu, erf} x {float32, float64} (``--small``:
n in {256, 512}, depth 2). Per cell: the first call (compile + run) is ``compile_s``, then the
median of ``--repeats`` calls with ``block_until_ready`` (one call when the first took longer than
``--slow`` seconds); a failure (e.g. out of device memory at n = 5x10^4 in float64, where the two
outputs alone are 40 GB) is recorded as data and the run goes on. Cells are run smallest first and
the files are rewritten after each, so a run stopped by ``--budget`` (or killed) keeps what it
measured; cells not reached are listed as skipped.

Lower bound, measured in this process on the same device (``_bounds.py``; its docstring has the
model and how the rates are measured), once per n and dtype: the Gram product X X^T (2 n^2 d
flops) at the measured matmul rate + NNGP and NTK written once (2 n^2 entries) at the measured
write bandwidth + ``depth`` x 2 in-place passes (read + write) over an n x n array at the
measured in-place bandwidth. ``x bound`` = measured time / bound; issue 18's goal on a GPU is
within 3x.

Accuracy: on a subset of ``--check-rows`` rows spread over the n inputs (all of them with
``--small``), the kernel's entries against a float64 NumPy recursion with the closed-form duals
(arc-cosine for ReLU, arcsine for erf), error ``max |K - K_ref| / sqrt(K_ref[i,i] K_ref[j,j])``.
On a GPU, float32 matmuls may run in TF32 (XLA's default precision there), which shows in the
float32 error; the bound's matmul rate is measured at the same default precision.

Output (``--out``, default ``benchmarks/results/gpu``): ``kernels_gpu_<device kind>.json`` (host,
device, tile, rates, every cell) and ``.md`` (the table). The tile is the engine's default unless
``--tile`` names others; the files record which.

The engine's default tile is chosen per backend (``rmtjax.kernels.default_tile``: 128 on CPUs,
1024 on accelerators, where ``lax.map`` runs the tiles one after another: at n = 5x10^4 about
76,000 tiles of 128 against 1,200 of 1024); the 1024 is not yet measured on a GPU, which is what
``--tile 128 1024 2048`` is for.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
D_INPUT = 784
B_STD = 0.05
FULL = {"n": (10_000, 20_000, 50_000), "depth": (10, 20), "repeats": 3, "check_rows": 256}
SMALL = {"n": (256, 512), "depth": (2,), "repeats": 3, "check_rows": None}
ACTIVATIONS = ("relu", "erf")
DTYPES = ("float32", "float64")


def _load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_bounds = _load("_bounds", HERE / "_bounds.py")
nt_bench = _load("nt_bench", HERE / "reference" / "nt_bench.py")  # stdlib only at import


def w_std(act: str) -> float:
    return math.sqrt(2.0) if act == "relu" else 1.5


# --------------------------------------------------------------------------------------------
# The independent reference: the layer recursion in float64 NumPy with closed-form duals
# --------------------------------------------------------------------------------------------

def reference_kernels(x: np.ndarray, depth: int, act: str) -> tuple[np.ndarray, np.ndarray]:
    r"""NNGP and NTK of ``depth`` x (Dense + act) + Dense, NTK parameterization, in float64.

    :math:`K_0 = W^2 x \cdot x' / d + b^2`, :math:`\Theta_0 = K_0`; per layer
    :math:`K_{l+1} = W^2 E[\phi(u)\phi(v)] + b^2`,
    :math:`\Theta_{l+1} = K_{l+1} + W^2 E[\phi'(u)\phi'(v)]\,\Theta_l` for
    :math:`(u, v) \sim N(0, K_l)`. ReLU: :math:`E[\phi\phi] = \sqrt{q q'}(\sin\theta + (\pi - \theta)
    \cos\theta) / 2\pi`, :math:`E[\phi'\phi'] = (\pi - \theta)/2\pi` (Cho & Saul 2009);
    erf: :math:`E[\phi\phi] = \tfrac{2}{\pi}\arcsin(2c / \sqrt{(1 + 2q)(1 + 2q')})`,
    :math:`E[\phi'\phi'] = \tfrac{4}{\pi}((1 + 2q)(1 + 2q') - 4c^2)^{-1/2}` (Williams 1997).
    """
    x = np.asarray(x, np.float64)
    w2, b2 = w_std(act) ** 2, B_STD**2
    k = w2 * (x @ x.T) / x.shape[1] + b2
    t = k.copy()
    for _ in range(depth):
        q = np.diag(k).copy()
        qq = np.outer(q, q)
        if act == "relu":
            rho = np.clip(k / np.sqrt(qq), -1.0, 1.0)
            np.fill_diagonal(rho, 1.0)
            th = np.arccos(rho)
            e = np.sqrt(qq) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
            ed = (np.pi - th) / (2 * np.pi)
        else:
            a = 1.0 + 2.0 * q
            aa = np.outer(a, a)
            e = 2.0 / np.pi * np.arcsin(2.0 * k / np.sqrt(aa))
            ed = 4.0 / np.pi / np.sqrt(aa - 4.0 * k * k)
        k = w2 * e + b2
        t = k + w2 * ed * t
    return k, t


def scaled_error(a: np.ndarray, ref: np.ndarray) -> float:
    """``max |a - ref| / sqrt(ref_ii ref_jj)``."""
    d = np.sqrt(np.diag(ref))
    return float((np.abs(np.asarray(a, np.float64) - ref) / np.outer(d, d)).max())


# --------------------------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------------------------

def run_cell(n: int, depth: int, act: str, dtype: str, tile, *, repeats: int, slow: float,
             check_rows: int | None, seed: int) -> dict:
    """Times rmtjax's kernel for one cell; checks a subset of its entries against the reference."""
    import jax
    import jax.numpy as jnp

    import rmtjax
    from rmtjax import activations

    rec = {"n": n, "depth": depth, "activation": act, "dtype": dtype, "tile": tile, "ok": False}
    try:
        x_np = nt_bench.make_data(n, seed, dtype)
        x = jax.device_put(x_np)
        phi = activations.Relu() if act == "relu" else activations.Erf()
        net = rmtjax.FullyConnected(depth, w_std(act), B_STD, phi)
        kw = {"compute_dtype": jnp.dtype(dtype)} | ({} if tile is None else {"tile": tile})
        fn = jax.jit(lambda x, net: rmtjax.kernels.kernel(x, None, net, **kw))
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(x, net))
        rec["compile_s"] = time.perf_counter() - t0
        if str(out.nngp.dtype) != dtype:
            raise TypeError(f"kernel dtype {out.nngp.dtype} != requested {dtype}")
        reps = repeats if rec["compile_s"] <= slow else 1
        times = []
        for _ in range(reps):
            del out
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn(x, net))
            times.append(time.perf_counter() - t0)
        rec["times_s"], rec["median_s"] = times, statistics.median(times)
        rows = np.arange(n) if not check_rows or check_rows >= n else np.linspace(0, n - 1, check_rows).astype(int)
        idx = jnp.asarray(rows)
        got = [np.asarray(o[idx][:, idx]) for o in out]
        rec["finite"] = bool(all(np.isfinite(g).all() for g in got))
        ref = reference_kernels(x_np[rows], depth, act)
        rec["check_rows"] = len(rows)
        rec["err_nngp"], rec["err_ntk"] = (scaled_error(g, r) for g, r in zip(got, ref, strict=True))
        del out
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            rec["device_peak_gib"] = stats["peak_bytes_in_use"] / 2**30
        rec["ok"] = True
    except Exception as e:  # noqa: BLE001 - out of memory and the like are data
        rec["error"] = f"{type(e).__name__}: {e}"[:1500]
    return rec


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def fmt_t(s):
    if s is None:
        return "—"
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def markdown(doc: dict) -> str:
    dev, host = doc["device"], doc["host"]
    lines = [f"# rmtjax FC kernel (NNGP + NTK) on {dev['kind']}", "",
             f"Device: {dev['count']} x {dev['kind']} ({dev['platform']}), jax {doc['jax']}; host "
             f"{host['machine']}, {host['cores']} cores, load {doc['loadavg_1min_start']:.1f} at the start. "
             f"Generated {doc['finished']} by `benchmarks/kernels_gpu.py{' --small' if doc['small'] else ''}`. "
             f"Tile: {doc['tile_note']}. Default matmul precision: {doc['matmul_precision']}.", "",
             "Workload: X = n x 784 (rows of norm sqrt(784)), FullyConnected(depth, W_std, 0.05, act) "
             "(NTK parameterization, W_std = sqrt(2) for ReLU, 1.5 for erf), NNGP + NTK of X with itself; "
             "time = median of the timed calls after one warm-up (compile excluded). Bound = X X^T at the "
             "measured matmul rate + 2 n^2 entries written at the measured write bandwidth + depth x 2 "
             "in-place passes over n x n at the measured in-place bandwidth (`benchmarks/_bounds.py`). "
             "err = max |K - K_ref| / sqrt(K_ref[i,i] K_ref[j,j]) against a float64 NumPy recursion, on "
             "the rows checked. peak GiB: the device's peak memory in use so far in this process "
             "(cells run smallest first), where the backend reports it.", "",
             "Rates measured on the device:", "",
             "| n | dtype | matmul TFLOP/s | write GB/s | in-place GB/s | arrays of |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in doc["rates"]:
        if r.get("ok"):
            lines.append(f"| {r['n']} | {r['dtype']} | {r['matmul_flops_per_s'] / 1e12:.2f} | "
                         f"{r['write_bytes_per_s'] / 1e9:.0f} | {r['inplace_bytes_per_s'] / 1e9:.0f} | "
                         f"{r['m']} x {r['m']} |")
        else:
            lines.append(f"| {r['n']} | {r['dtype']} | FAILED: {r.get('error', '')[:60]} | | | |")
    lines += ["", "| n | depth | act | dtype | tile | rmtjax | bound | x bound | Gram / write / recursion "
              "| compile | err NNGP | err NTK | rows | peak GiB |",
              "|---:|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for c in doc["cells"]:
        if not c.get("ok"):
            why = c.get("error", "skipped" if c.get("skipped") else "?").split("\n")[0][:70].replace("|", "/")
            lines.append(f"| {c['n']} | {c['depth']} | {c['activation']} | {c['dtype']} | {c['tile']} | "
                         f"{'skipped' if c.get('skipped') else 'FAILED'} ({why}) | "
                         f"{fmt_t(c.get('bound_s'))} | | | | | | | |")
            continue
        peak = c.get("device_peak_gib")
        xb = "—" if c.get("x_bound") is None else f"{c['x_bound']:.1f}x"
        lines.append(f"| {c['n']} | {c['depth']} | {c['activation']} | {c['dtype']} | {c['tile']} | "
                     f"{fmt_t(c['median_s'])} | {fmt_t(c.get('bound_s'))} | "
                     f"{xb} | "
                     f"{fmt_t(c.get('gram_s'))} / {fmt_t(c.get('write_s'))} / {fmt_t(c.get('recursion_s'))} | "
                     f"{fmt_t(c['compile_s'])} | {c['err_nngp']:.1e} | {c['err_ntk']:.1e} | {c['check_rows']} | "
                     f"{'—' if peak is None else f'{peak:.1f}'} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="CPU smoke size: n in {256, 512}, depth 2")
    p.add_argument("--n", type=int, nargs="+", default=None)
    p.add_argument("--depth", type=int, nargs="+", default=None)
    p.add_argument("--activation", nargs="+", choices=ACTIVATIONS, default=list(ACTIVATIONS))
    p.add_argument("--dtype", nargs="+", choices=DTYPES, default=list(DTYPES))
    p.add_argument("--tile", type=int, nargs="+", default=None,
                   help="tile edges to run (default: the engine's default only)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--slow", type=float, default=20.0,
                   help="time one call only where the first call took longer than this (s)")
    p.add_argument("--budget", type=float, default=540.0,
                   help="start no new cell after this many seconds (a GPU session allows 10 min per command)")
    p.add_argument("--check-rows", type=int, default=None, help="rows checked against the reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "gpu")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if "jax" not in sys.modules:  # on CPU, one XLA host device per core as rmtjax's benchmarks use them
        _bounds.set_host_devices()
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 cells; float32 ones pass compute_dtype=float32
    import rmtjax

    grid = dict(SMALL if args.small else FULL)
    ns = tuple(args.n or grid["n"])
    depths = tuple(args.depth or grid["depth"])
    repeats = args.repeats or grid["repeats"]
    check_rows = args.check_rows if args.check_rows is not None else grid["check_rows"]
    default_tile = rmtjax.kernels.default_tile()
    tiles = tuple(args.tile) if args.tile else (None,)
    dev = jax.devices()[0]
    kind = dev.device_kind
    slug = "".join(ch if ch.isalnum() else "_" for ch in kind).strip("_").lower() or "device"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kernels_gpu_{slug}{'_small' if args.small else ''}"
    doc = {
        "small": args.small, "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": {"kind": kind, "platform": dev.platform, "count": len(jax.devices())},
        "host": {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                 "python": sys.version.split()[0]},
        "jax": jax.__version__, "rmtjax": rmtjax.__version__,
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "engine_default_tile": default_tile,
        "tile_note": (f"the engine's default, {default_tile}" if args.tile is None
                      else ", ".join(str(t) for t in args.tile) + f" (engine default {default_tile})"),
        "loadavg_1min_start": os.getloadavg()[0], "grid": {"n": ns, "depth": depths,
                                                           "activation": args.activation, "dtype": args.dtype},
        "bound_model": _bounds.MODEL, "rates": [], "cells": [],
    }

    def write():
        doc["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        doc["wall_s"] = time.perf_counter() - t_start
        stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        stem.with_suffix(".md").write_text(markdown(doc))

    for n in sorted(ns):
        for dtype in args.dtype:
            over = time.perf_counter() - t_start > args.budget
            rates = None
            if not over:
                try:
                    rates = _bounds.measure_rates(n, D_INPUT, dtype) | {"n": n, "ok": True}
                except Exception as e:  # noqa: BLE001
                    rates = {"n": n, "dtype": dtype, "ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
                doc["rates"].append(rates)
            for depth in sorted(depths):
                for act in args.activation:
                    for tile in tiles:
                        cell_tile = default_tile if tile is None else tile
                        lb = (_bounds.lower_bound(rates, n, D_INPUT, depth, np.dtype(dtype).itemsize)
                              if rates and rates.get("ok") else {})
                        if time.perf_counter() - t_start > args.budget:
                            rec = {"n": n, "depth": depth, "activation": act, "dtype": dtype, "tile": cell_tile,
                                   "ok": False, "skipped": True, "error": f"budget of {args.budget:.0f} s spent"}
                        else:
                            rec = run_cell(n, depth, act, dtype, tile, repeats=repeats, slow=args.slow,
                                           check_rows=check_rows, seed=args.seed)
                            rec["tile"] = cell_tile
                        rec |= lb
                        if rec.get("ok") and lb:
                            rec["x_bound"] = rec["median_s"] / lb["bound_s"]
                        doc["cells"].append(rec)
                        write()
                        print(json.dumps({k: rec.get(k) for k in ("n", "depth", "activation", "dtype", "tile",
                                                                    "median_s", "bound_s", "x_bound", "ok")}),
                              file=sys.stderr, flush=True)
    write()
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
