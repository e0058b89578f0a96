r"""Trainability of deep tanh networks against the correlation depth scale (Schoenholz et al. 2017, Fig. 5).

``rmtjax reproduce trainability`` reproduces the trainability phase diagram of Schoenholz, Gilmer,
Ganguli & Sohl-Dickstein (2017), "Deep information propagation" (arXiv:1611.01232), Fig. 5: plain
tanh networks over a grid of :math:`(\sigma_w^2, L)` at :math:`\sigma_b^2 = 0.05`, trained for a
fixed number of SGD steps on MNIST, train only where the depth is below a few correlation depth
scales, :math:`L \lesssim 6\,\xi_c(\sigma_w^2)`, with :math:`\xi_c = -1/\log\chi_c`
(Schoenholz eq. 9) diverging at the edge of chaos (:math:`\sigma_w^2 \approx 1.761` at
:math:`\sigma_b^2 = 0.05`).

**The sweep.** Every network of the grid (``sigma_w2`` x ``depths`` x ``seeds``) is a
:class:`rmtjax.finite.PaddedMLP` (padded to the largest depth, so width, depth, :math:`\sigma_w`
and the seed are arrays) and the whole grid is ONE :func:`rmtjax.sweep.run`: one compiled program
(``jax.vmap`` over the points of a chunk, the points sharded over the host devices), its results
kept chunk by chunk in the Zarr store ``out_dir/trainability.zarr``. An interrupted run (Ctrl-C,
killed) resumes from the store when rerun with the same configuration and seed, losing at most the
chunk it was computing; a store of another configuration is refused by the runner (remove it to
start over).

**Training** (as the paper: plain SGD, no momentum, softmax cross-entropy, minibatches):
standard parameterization (:math:`W_{ij} \sim \mathcal N(0, \sigma_w^2/\text{fan-in})`, biases
:math:`\mathcal N(0, \sigma_b^2)`, the readout drawn like the hidden layers), every network trained
for the same ``steps`` with learning rate ``learning_rate`` on minibatches of ``batch_size`` drawn
without replacement at every step, the same minibatch sequence for every network (the seed draws
the weights). Training is in float32 in every mode (``--float32`` or not): the networks are
Monte-Carlo objects, float32 is what the paper's networks used, and it halves the cost. The
theory (:math:`\xi_c` from :func:`rmtjax.meanfield.mean_field`, the edge of chaos from
:func:`rmtjax.meanfield.edge_of_chaos`) is computed in float64 in every mode; with ``--float32``
the report adds how far the same theory computed in float32 is from it (float32 cannot tell a
correlation fixed point :math:`c^*` within :math:`\sqrt{\varepsilon} \approx 3.5\times10^{-4}` of 1 from 1,
so there :math:`\xi_c` is infinite up to about 0.1 above the edge of chaos: measured, an infinite
difference on the curve).

**The comparison.** A network is *trainable* when its final training accuracy (on the whole
training set) is at least ``threshold``; a cell :math:`(\sigma_w^2, L)` when the mean over its seeds
is. The cell is *predicted trainable* when :math:`L < 6\,\xi_c(\sigma_w^2)`. The report gives the
2 x 2 table of cells and the two agreement fractions: the fraction of the predicted-trainable
cells that trained and the fraction of the predicted-untrainable cells that did not (and the
overall agreement). ``ok`` requires every accuracy finite and in [0, 1] and an overall agreement
of at least ``min_agreement``.

**Sizes.** The paper trained width-300 networks to depth 300 with SGD at learning rate
:math:`10^{-3}`; on 2 CPU cores the full run here is width 64, depths 4-60, 21 values of
:math:`\sigma_w^2` in [0.5, 4.5] (the range reaches below 1 so that the ordered side of the
boundary lies inside depth 60, as the chaotic side does above :math:`\sigma_w^2 \approx 2.9`),
2 seeds, 300 steps of batch 128 at learning rate :math:`10^{-2}` (fixed by one pilot of 32
networks, :math:`\sigma_w^2 \in \{1, 1.75\}`: the shallow ones reached 0.87-0.93 train accuracy in
300 steps; :math:`10^{-3}` was not tried). A chunk of 16-20 networks took 33-58 s on the loaded
machine (2 host devices), the whole sweep of 420 networks 863 s (2026-12-06). Result: 95.2% of
the 210 cells agree with :math:`L < 6\xi_c` (154 of the 163 predicted-trainable cells trained,
46 of the 47 predicted-untrainable did not); the 9 cells that disagree sit on the boundary, mostly
on its chaotic side, where 300 steps leave networks just below 6 xi_c short of the threshold.

Writes ``trainability.png`` (the heat map of training accuracy with :math:`6\xi_c` on top),
``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..activations import Tanh
from ..meanfield import edge_of_chaos, mean_field
from ._common import (
    check_seed,
    config_dict,
    dtype_name,
    float_grid,
    int_grid,
    number,
    positive_int,
    versions,
)
from ._output import (
    check_out_dir,
    num,
    nums,
    save_figure,
    write_report,
)
from ._timed_sweep import timed_sweep
from ._precision import float64_comparison, precision_lines

__all__ = ["FULL", "QUICK", "Config", "run"]

NAME = "trainability"
SIGMA_B2 = 0.05  # Schoenholz et al. 2017, Fig. 5
XI_FACTOR = 6.0  # the trainable region is L < 6 xi_c
STORE = "trainability.zarr"
N_CURVE = 241  # points of the theory curve


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        sigma_w2: the :math:`\\sigma_w^2` of the grid (increasing, ``> 0``).
        depths: the depths :math:`L` (hidden layers) of the grid (increasing, ``>= 1``).
        seeds: networks per cell (``>= 1``).
        width: hidden width of every network.
        n_train, n_test: MNIST 5k split (``n_train + n_test <= 5000``).
        steps: SGD steps per network; batch_size: minibatch size; learning_rate: SGD step size.
        threshold: train accuracy at and above which a cell counts as trainable (chance: 0.1).
        min_agreement: the overall agreement with the 6 xi_c prediction that ``ok`` requires.
        chunk_size: grid points per compiled call of the sweep (the resume granularity).
    """

    sigma_w2: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 4.5, 21), 6).tolist())
    depths: tuple[int, ...] = (4, 8, 12, 16, 20, 25, 30, 40, 50, 60)
    seeds: int = 2
    width: int = 64
    n_train: int = 4000
    n_test: int = 1000
    steps: int = 300
    batch_size: int = 128
    learning_rate: float = 1e-2
    threshold: float = 0.5
    min_agreement: float = 0.75
    chunk_size: int = 20

    def __post_init__(self):
        float_grid(self.sigma_w2, "sigma_w2", lo=0.0, lo_open=True, min_len=2)
        int_grid(self.depths, "depths", lo=1, min_len=2)
        positive_int(self.seeds, "seeds", lo=1)
        positive_int(self.width, "width", lo=2)
        positive_int(self.n_train, "n_train", lo=10)
        positive_int(self.n_test, "n_test", lo=10)
        if self.n_train + self.n_test > 5000:
            raise ValueError(f"n_train + n_test must be at most 5000 (MNIST 5k), got {self.n_train + self.n_test}")
        positive_int(self.steps, "steps", lo=1)
        positive_int(self.batch_size, "batch_size", lo=1, hi=self.n_train)
        number(self.learning_rate, "learning_rate", lo=0.0, lo_open=True)
        number(self.threshold, "threshold", lo=0.0, hi=1.0)
        number(self.min_agreement, "min_agreement", lo=0.0, hi=1.0)
        positive_int(self.chunk_size, "chunk_size", lo=1)


FULL = Config()
QUICK = Config(sigma_w2=(1.0, 1.75, 2.5, 4.0), depths=(2, 6, 12, 24), seeds=2, width=32, n_train=1000, n_test=200,
               steps=60, batch_size=64, learning_rate=2e-2, min_agreement=0.0, chunk_size=8)


# ------------------------------------------------------------------------------------------
# Theory
# ------------------------------------------------------------------------------------------


def _theory(w2_cells, w2_curve, b2):
    """:math:`\\xi_c` at the cells and along the curve, and the edge of chaos at ``b2`` (one mean-field
    call for both sets of points; a float32 run compares them with float64)."""
    w = jnp.concatenate([w2_cells, w2_curve])
    mf = mean_field(Tanh(), w, b2, throw=False)
    crit = edge_of_chaos(Tanh(), b2, throw=False)
    xi = mf.xi_c
    n = w2_cells.shape[0]
    return {"xi_c at the cells": xi[:n], "xi_c curve": xi[n:], "critical sigma_w^2": crit.value}


def _finite_or_none(a) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, np.float64).ravel()]


# ------------------------------------------------------------------------------------------
# Training sweep
# ------------------------------------------------------------------------------------------


def _point_fn(cfg: Config, x, y, x_test, y_test, data_key):
    """The function of one grid point ``(sigma_w2, depth, seed)`` that :func:`rmtjax.sweep.run`
    vmaps: trains one padded tanh network with SGD and returns its final metrics."""
    import optax

    from ..finite import PaddedMLP

    max_depth = max(cfg.depths)
    n = x.shape[0]
    opt = optax.sgd(cfg.learning_rate)
    batch_keys = jax.random.split(data_key, cfg.steps)  # the same minibatches for every network

    def stats(net, p, xs, ys):
        out = net(p, xs)
        acc = jnp.mean((jnp.argmax(out, 1) == jnp.argmax(ys, 1)).astype(jnp.float32))
        return jnp.mean(optax.softmax_cross_entropy(out, ys)), acc

    def fn(sigma_w2, depth, seed):
        w = jnp.sqrt(jnp.asarray(sigma_w2, jnp.float32))
        net = PaddedMLP(cfg.width, depth, w, np.float32(np.sqrt(SIGMA_B2)), Tanh(), in_features=x.shape[1],
                        out_features=y.shape[1], max_width=cfg.width, max_depth=max_depth, parameterization="standard",
                        dtype="float32")
        p = net.init(seed)
        s = opt.init(p)
        loss0, acc0 = stats(net, p, x, y)

        def step(c, k):
            p, s = c
            idx = jax.random.choice(k, n, (cfg.batch_size,), replace=False)
            g = jax.grad(lambda p: jnp.mean(optax.softmax_cross_entropy(net(p, x[idx]), y[idx])))(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (p, s), batch_keys)
        loss, acc = stats(net, p, x, y)
        _, test_acc = stats(net, p, x_test, y_test)
        return {"train_accuracy": acc, "train_loss": loss, "test_accuracy": test_acc, "initial_loss": loss0,
                "initial_accuracy": acc0}

    return fn


def _sweep(cfg: Config, out: Path, seed: int, progress: bool):
    from .. import sweep
    from ..data import mnist

    ds = mnist(cfg.n_train, cfg.n_test, seed=seed, dtype=np.float32)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    fn = _point_fn(cfg, f32(ds.x_train), f32(ds.y_train), f32(ds.x_test), f32(ds.y_test),
                   jax.random.key(seed))
    grid = sweep.Grid(sigma_w2=np.asarray(cfg.sigma_w2, np.float64), depth=np.asarray(cfg.depths, np.int64),
                      seed=np.arange(cfg.seeds, dtype=np.int64) + 1000 * seed)
    return timed_sweep(fn, grid, out, STORE, lambda ds: np.isfinite(ds.train_accuracy.values).sum(),
                       chunk_size=cfg.chunk_size, progress=progress)


# ------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs (or resumes) the reproduction and writes ``trainability.png``, ``report.json`` and
    ``report.md`` into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation); the sweep's store
            ``trainability.zarr`` is kept there for a resume.
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed (train/test split, minibatches, network draws), in ``[0, 2**32 - 1]``.
        progress: show the sweep's progress bar.
        config: explicit sizes (overrides ``quick``).
    """
    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a trainability.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    if seed > 2**20:
        raise ValueError(f"seed must be at most 2**20 here (network seeds are 1000 * seed + i), got {seed}")
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()

    w2_cells = np.asarray(cfg.sigma_w2, np.float64)
    w2_curve = np.linspace(w2_cells[0], w2_cells[-1], N_CURVE)
    with jax.enable_x64(True):  # the theory in float64 in every mode
        th = jax.tree.map(lambda a: np.asarray(a, np.float64),
                          _theory(jnp.asarray(w2_cells, jnp.float64), jnp.asarray(w2_curve, jnp.float64),
                                  jnp.asarray(SIGMA_B2, jnp.float64)))
    xi_cells, xi_curve = th["xi_c at the cells"], th["xi_c curve"]
    w2c = float(th["critical sigma_w^2"])
    # --float32: how far the same theory computed in float32 is from it
    fdt = jnp.result_type(float)
    precision = float64_comparison(_theory, jnp.asarray(w2_cells, fdt), jnp.asarray(w2_curve, fdt),
                                   jnp.asarray(SIGMA_B2, fdt))
    t_theory = time.perf_counter() - t0

    res, history = _sweep(cfg, out, seed, progress)
    acc = np.asarray(res.train_accuracy.values, np.float64)  # (sigma_w2, depth, seed)
    test_acc = np.asarray(res.test_accuracy.values, np.float64)
    loss = np.asarray(res.train_loss.values, np.float64)
    depths = np.asarray(cfg.depths)
    cell = acc.mean(-1)
    trained = cell >= cfg.threshold
    xi_ok = ~np.isnan(xi_cells)  # inf at and next to criticality: every depth predicted trainable
    predicted = depths[None, :] < XI_FACTOR * np.where(xi_ok, xi_cells, np.inf)[:, None]
    tp = int(np.sum(trained & predicted))
    fn_ = int(np.sum(~trained & predicted))
    fp = int(np.sum(trained & ~predicted))
    tn = int(np.sum(~trained & ~predicted))
    frac = lambda a, b: float(a / b) if b else None
    agreement = {
        "cells": int(trained.size),
        "trainable_and_predicted": tp, "untrainable_but_predicted": fn_, "trainable_but_not_predicted": fp,
        "untrainable_and_not_predicted": tn,
        "predicted_trainable_that_trained": frac(tp, tp + fn_),
        "predicted_untrainable_that_did_not": frac(tn, tn + fp),
        "trained_inside_prediction": frac(tp, tp + fp),
        "untrained_outside_prediction": frac(tn, tn + fn_),
        "overall": frac(tp + tn, trained.size),
        # per network (each seed on its own), the same two fractions
        "networks_predicted_trainable_that_trained": frac(np.sum((acc >= cfg.threshold) & predicted[..., None]),
                                                          np.sum(predicted) * acc.shape[-1]),
        "networks_predicted_untrainable_that_did_not": frac(np.sum((acc < cfg.threshold) & ~predicted[..., None]),
                                                            np.sum(~predicted) * acc.shape[-1]),
    }
    checks = {
        "accuracies_finite_in_unit_interval": bool(np.all(np.isfinite(acc)) and np.all((acc >= 0) & (acc <= 1))),
        "theory_finite_positive_away_from_criticality": bool(np.all(xi_cells[np.isfinite(xi_cells)] > 0)
                                                            and np.all(~np.isnan(xi_cells))),
        "critical_sigma_w2": w2c,
        "overall_agreement": agreement["overall"],
        "agreement_at_least_min": bool((agreement["overall"] or 0.0) >= cfg.min_agreement),
        "diverged_networks": int(np.sum(~np.isfinite(loss))),
    }
    ok = (checks["accuracies_finite_in_unit_interval"] and checks["theory_finite_positive_away_from_criticality"]
          and checks["agreement_at_least_min"])
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
        "training_dtype": "float32", "theory_dtype": "float64", "seconds": time.perf_counter() - t0, "config": config_dict(cfg),
        "optimizer": f"SGD (optax.sgd, no momentum), learning rate {num(cfg.learning_rate)}, batch {cfg.batch_size}",
        "sigma_b2": SIGMA_B2, "xi_factor": XI_FACTOR,
        "timings": {"theory_seconds": t_theory, "sweep_seconds": history[-1]["seconds"],
                    "sweep_seconds_all_runs": sum(h["seconds"] for h in history),
                    "networks": int(acc.size), "networks_computed_this_run": history[-1]["networks_computed"],
                    "devices": jax.local_device_count(),
                    "seconds_per_network": (sum(h["seconds"] for h in history)
                                            / sum(h["networks_computed"] for h in history)
                                            if any(h["networks_computed"] for h in history) else None),
                    "runs": history},
        "grid": {"sigma_w2": w2_cells.tolist(), "depth": depths.tolist(), "seed": res.seed.values.tolist(),
                 "train_accuracy": acc.tolist(), "test_accuracy": test_acc.tolist(),
                 "train_loss": _finite_or_none(loss), "cell_train_accuracy": cell.tolist(),
                 "trainable": trained.tolist(), "predicted_trainable": predicted.tolist()},
        "theory": {"critical_sigma_w2": w2c, "xi_c_cells": _finite_or_none(xi_cells),
                   "sigma_w2_curve": w2_curve.tolist(), "xi_c_curve": _finite_or_none(xi_curve)},
        "agreement": agreement, "checks": checks, "precision": precision,
        "summary": (f"{num(100 * (agreement['overall'] or 0), 3)}% of {trained.size} cells agree with L < 6 xi_c "
                    f"(train accuracy >= {num(cfg.threshold)} after {cfg.steps} SGD steps); predicted-trainable cells "
                    f"that trained: {num(agreement['predicted_trainable_that_trained'], 3)}, predicted-untrainable "
                    f"that did not: {num(agreement['predicted_untrainable_that_did_not'], 3)}"),
        "versions": versions(),
    }
    _figure(report, out / "trainability.png")
    write_report(out, report, _markdown(report))
    return report


def _figure(r, path):
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, no backend switch
    )

    fig = Figure(figsize=(13, 5.0))
    ax = fig.subplots(1, 2)
    g, th = r["grid"], r["theory"]
    w2, L = np.array(g["sigma_w2"]), np.array(g["depth"])
    cell = np.array(g["cell_train_accuracy"])

    def edges(v):
        v = np.asarray(v, np.float64)
        mid = (v[1:] + v[:-1]) / 2
        return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])

    im = ax[0].pcolormesh(edges(w2), edges(L), cell.T, cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax[0], label="train accuracy (mean over seeds)")
    xs = np.array(th["sigma_w2_curve"])
    six = XI_FACTOR * np.array([np.nan if v is None else v for v in th["xi_c_curve"]])
    ax[0].plot(xs, six, "w--", lw=2, label=r"$6\,\xi_c$ (mean field)")
    ax[0].axvline(th["critical_sigma_w2"], color="w", ls=":", lw=1, label=rf"edge of chaos $\sigma_w^2$ = "
                  f"{th['critical_sigma_w2']:.3f}")
    pred = np.array(g["predicted_trainable"])
    trained = np.array(g["trainable"])
    for i, wi in enumerate(w2):
        for j, lj in enumerate(L):
            if pred[i, j] != trained[i, j]:
                ax[0].plot(wi, lj, "rx", ms=6)
    ax[0].plot([], [], "rx", label="cell disagrees with the prediction")
    ax[0].set(xlabel=r"$\sigma_w^2$", ylabel="depth $L$", ylim=(edges(L)[0], edges(L)[-1]),
              title=rf"tanh MLPs on MNIST, $\sigma_b^2$={r['sigma_b2']}, {r['config']['steps']} SGD steps")
    ax[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=7, facecolor="0.55")
    for j in range(len(L)):
        c = (j + 0.5) / len(L)
        ax[1].plot(w2, cell[:, j], "o-", color=(c, 0.2, 1 - c), ms=3, label=f"L = {L[j]}")
    ax[1].axhline(r["config"]["threshold"], color="k", ls="--", lw=1, label="threshold")
    ax[1].axhline(0.1, color="gray", ls=":", lw=1, label="chance")
    ax[1].axvline(th["critical_sigma_w2"], color="k", ls=":", lw=1)
    ax[1].set(xlabel=r"$\sigma_w^2$", ylabel="train accuracy", ylim=(0, 1.02), title="train accuracy by depth")
    ax[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _markdown(r):
    a, c, cfg, t = r["agreement"], r["checks"], r["config"], r["timings"]
    g = r["grid"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    lines = [
        "# Trainability of deep tanh networks vs 6 xi_c (Schoenholz et al. 2017, Fig. 5)", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s"
        + (f" (this run, resumed from the store; the sweep took {t['sweep_seconds_all_runs']:.0f} s over "
           f"{len(t['runs'])} runs) " if len(t["runs"]) > 1 else " ")
        + f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']} run: theory in {r['theory_dtype']}, training in "
        f"{r['training_dtype']}). {r['summary']}.", "",
        "## Setup", "",
        f"- Networks: plain tanh MLPs, width {cfg['width']}, sigma_b^2 = {r['sigma_b2']}, standard parameterization "
        f"(W ~ N(0, sigma_w^2/fan-in)), padded to depth {max(cfg['depths'])} (`rmtjax.finite.PaddedMLP`).",
        f"- Grid: sigma_w^2 in {nums(g['sigma_w2'])} ({len(g['sigma_w2'])} values) x depth L in "
        f"{nums(g['depth'])} ({len(g['depth'])} values) x {cfg['seeds']} seeds = {t['networks']} networks, "
        f"one `rmtjax.sweep.run` (chunks of {cfg['chunk_size']} points, sharded over {t['devices']} host "
        "device(s), resumable from the store `trainability.zarr`).",
        f"- Training: {r['optimizer']}, {cfg['steps']} steps, softmax cross-entropy, MNIST 5k subset "
        f"({cfg['n_train']} train / {cfg['n_test']} test images), the same minibatch sequence for every network; "
        "float32.",
        f"- Trainable cell: mean train accuracy over the seeds >= {num(cfg['threshold'])} (chance 0.1). "
        f"Predicted trainable: L < {num(r['xi_factor'])} xi_c(sigma_w^2), xi_c = -1/log chi_c from "
        f"`rmtjax.meanfield.mean_field` ({r['theory_dtype']}); edge of chaos sigma_w^2 = "
        f"{num(r['theory']['critical_sigma_w2'], 6)}.", "",
        "## Agreement with 6 xi_c", "",
        "| | trained | did not train |", "|---|---:|---:|",
        f"| L < 6 xi_c (predicted trainable) | {a['trainable_and_predicted']} | {a['untrainable_but_predicted']} |",
        f"| L >= 6 xi_c (predicted untrainable) | {a['trainable_but_not_predicted']} | "
        f"{a['untrainable_and_not_predicted']} |", "",
        f"- Predicted-trainable cells that trained: {pct(a['predicted_trainable_that_trained'])}; "
        f"predicted-untrainable cells that did not: {pct(a['predicted_untrainable_that_did_not'])}.",
        f"- Trained cells inside L < 6 xi_c: {pct(a['trained_inside_prediction'])}; cells that did not train "
        f"outside it: {pct(a['untrained_outside_prediction'])}.",
        f"- Overall agreement: {pct(a['overall'])} of {a['cells']} cells (``ok`` needs at least "
        f"{pct(cfg['min_agreement'])}). Per network (each seed alone): "
        f"{pct(a['networks_predicted_trainable_that_trained'])} of the predicted-trainable trained, "
        f"{pct(a['networks_predicted_untrainable_that_did_not'])} of the predicted-untrainable did not.",
        f"- Diverged networks (non-finite final loss): {c['diverged_networks']}.", "",
        "## Cells (mean train accuracy; * = predicted trainable)", "",
        "| sigma_w^2 | 6 xi_c | " + " | ".join(f"L={d}" for d in g["depth"]) + " |",
        "|---:|---:|" + "---:|" * len(g["depth"]),
    ]
    for i, w in enumerate(g["sigma_w2"]):
        xi = r["theory"]["xi_c_cells"][i]
        cells = " | ".join(f"{g['cell_train_accuracy'][i][j]:.2f}{'*' if g['predicted_trainable'][i][j] else ''}"
                           for j in range(len(g["depth"])))
        lines.append(f"| {num(w)} | {'inf' if xi is None else num(6 * xi, 3)} | {cells} |")
    lines += ["", "## Timings", "",
              f"- Theory (float64): {t['theory_seconds']:.1f} s. Sweep: {t['sweep_seconds_all_runs']:.1f} s for "
              f"{t['networks']} networks in {len(t['runs'])} run(s) into the same store "
              f"({num(t['seconds_per_network'], 3)} s per network, compilation included), on {t['devices']} host "
              f"device(s); this run computed {t['networks_computed_this_run']} of them in {t['sweep_seconds']:.1f} s.",
              ""]
    lines += precision_lines(r["precision"])
    if r["precision"].get("dtype") == "float32":
        lines += ["The theory above (curve, cells, classification) is the float64 one. In float32 a correlation fixed "
                  "point within sqrt(eps) = 3.5e-4 of 1 reads as 1, so xi_c is infinite up to about 0.1 above the edge "
                  "of chaos: an infinite difference on the curve there, not an error of the cells' classification.", ""]
    lines += ["Figure: `trainability.png` (left: the heat map with 6 xi_c; red crosses: cells where training and the "
              "prediction disagree; right: accuracy against sigma_w^2 per depth).", ""]
    return "\n".join(lines)
