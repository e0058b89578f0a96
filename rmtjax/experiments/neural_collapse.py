r"""Neural collapse during the terminal phase of training (Papyan, Han & Donoho, PNAS 2020).

``rmtjax reproduce neural-collapse`` trains LayerNorm ReLU MLPs (:class:`rmtjax.finite.Classifier`, optax SGD with
momentum and weight decay, cross-entropy, learning rate divided by 10 at 1/3 and 2/3 of training
as in the paper) on scikit-learn digits and on the MNIST 5k subset (:mod:`rmtjax.data`), far
beyond zero training error, and tracks the metrics of :mod:`rmtjax.collapse` on the penultimate
features every few epochs:

* NC1 :math:`\operatorname{Tr}(\Sigma_W\Sigma_B^\dagger)/C` (Papyan et al. Fig. 6, log scale);
* NC2 equinorm, equiangularity and maximal angle of the centred class means and of the
  classifier rows (Figs. 2-4);
* NC3 self-duality :math:`\|W^\top/\|W\|_F - M/\|M\|_F\|_F^2` (Fig. 5);
* NC4 the fraction of points where the classifier and the nearest class centre disagree (Fig. 7),
  on the training and on the test set.

The terminal phase of training (TPT) starts at the first recorded epoch with zero training error.
``ok`` requires, for every data set: zero training error reached; NC1 at the end at least 10x
below its value at the start of the TPT; and the equinorm, equiangularity and maximal-angle metrics
of the class means, NC3 and the training NC4 lower at the end than at the start of the TPT (NC4 may
stay at 0). The classifier-side NC2 metrics are reported.

The network is :class:`rmtjax.finite.Classifier` (3 hidden layers of 256 units,
layer normalization before each ReLU), trained 300 epochs with learning rate 0.05 (divided by 10
at epochs 100 and 200), weight decay 2e-3 and gradient clipping at global norm 1. What was tried:

* the plain spec-built :class:`rmtjax.finite.MLP` (no normalization) reached zero training error
  but its NC1 stayed at 0.05-0.3 through the TPT in every setting tried (learning rates 0.01-0.2,
  weight decay 1e-4 to 2e-2, MSE or cross-entropy, depth 3 or 6, SGD or Adam);
* with layer normalization, weight decay shrinks the scale-invariant weights and raises their
  effective learning rate; around epoch 70 training goes through an instability (the loss jumps
  from 1e-3 to 1e-1, a few training points are misclassified for some epochs). Without clipping
  the network diverged to chance level; with clipping it recovers, and after the learning-rate
  decay every metric falls further than before the event (equinorm and NC3 only fall after it).
  The report lists the recorded epochs of the TPT with training errors.

Features are computed in the network's dtype (float32 by default, fast on CPU) and the metrics in
float64 when x64 is enabled (the CLI's default); in a float32 run the report gives the largest
differences of the final metrics, computed from the same features in float32 and in float64.
Results of each data set are saved to ``resume.json`` as they are finished and reused when the run
is repeated with the same configuration (:class:`rmtjax.experiments._resume.ResumeFile`).

Writes ``neural_collapse.png``, ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..collapse import class_statistics, collapse_metrics, ncc_mismatch
from ._common import check_seed, dtype_name, number, positive_int, versions
from ._output import check_out_dir, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["DataConfig", "FULL", "QUICK", "run"]

NAME = "neural-collapse"

_METRICS = ("nc1", "equinorm_means", "equinorm_weights", "equiangular_means", "equiangular_weights",
            "max_angle_means", "max_angle_weights", "self_duality")
# the metrics that must fall during the terminal phase (besides NC1, which must fall 10x)
_FALLING = ("equinorm_means", "equiangular_means", "max_angle_means", "self_duality", "ncc_mismatch_train")
# reported at the start of the TPT and at the end, not required
_REPORTED = ("equinorm_weights", "equiangular_weights", "max_angle_weights")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """One training run (each field checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        name: ``"digits"`` (scikit-learn, 1797 images) or ``"mnist"`` (the MNIST 5k subset).
        n_train, n_test: split sizes (at most the data set's size together).
        batch_size: at most ``n_train``.
        depth, width: the LayerNorm ReLU MLP.
        learning_rate, weight_decay, clip: SGD with momentum 0.9 (learning rate divided by 10 at
            1/3 and 2/3 of training), decoupled weight decay, gradient clipping at this global
            norm (0: none).
        epochs: training epochs; record_every: epochs between metric records (``<= epochs``).
    """

    name: str
    n_train: int
    n_test: int
    batch_size: int
    depth: int = 3
    width: int = 256
    learning_rate: float = 0.05
    weight_decay: float = 2e-3
    clip: float = 1.0
    epochs: int = 300
    record_every: int = 5

    def __post_init__(self):
        sizes = {"digits": 1797, "mnist": 5000}
        if self.name not in sizes:
            raise ValueError(f"name must be 'digits' or 'mnist', got {self.name!r}")
        positive_int(self.n_train, "n_train", lo=10)
        positive_int(self.n_test, "n_test", lo=1)
        if self.n_train + self.n_test > sizes[self.name]:
            raise ValueError(f"n_train + n_test must be <= {sizes[self.name]} ({self.name}), got "
                             f"{self.n_train} + {self.n_test}")
        positive_int(self.batch_size, "batch_size", lo=1, hi=self.n_train)
        positive_int(self.depth, "depth", lo=1)
        positive_int(self.width, "width", lo=1)
        number(self.learning_rate, "learning_rate", lo=0, lo_open=True)
        number(self.weight_decay, "weight_decay", lo=0)
        number(self.clip, "clip", lo=0)
        positive_int(self.epochs, "epochs", lo=1)
        positive_int(self.record_every, "record_every", lo=1, hi=self.epochs)


FULL = (DataConfig("digits", 1297, 500, 32), DataConfig("mnist", 4000, 1000, 100))
QUICK = (DataConfig("digits", 1297, 500, 32, record_every=20),)


def _dataset(cfg: DataConfig, seed):
    from ..data import digits, mnist

    load = {"digits": digits, "mnist": mnist}[cfg.name]
    return load(cfg.n_train, cfg.n_test, seed=seed, dtype=jnp.float32)


def _final_metrics(h, ht, W, b, labels_tr, labels_te, num_classes):
    """NC metrics of given features (float32 runs compare them with float64 from the same features)."""
    stats = class_statistics(h, labels_tr, num_classes=num_classes)
    m = collapse_metrics(stats, W)
    pred = jnp.argmax(ht @ W.T + b[None, :], axis=1)
    return {**m._asdict(), "ncc_mismatch_train": ncc_mismatch(h, stats.class_means, W, b),
            "ncc_mismatch_test": ncc_mismatch(ht, stats.class_means, W, b),
            "test_accuracy": jnp.mean((pred == labels_te.astype(pred.dtype)).astype(h.dtype))}


@functools.partial(jax.jit, static_argnums=(6, 7))
def _metrics(h, ht, W, b, labels_tr, labels_te, num_classes, dtype):
    """:func:`_final_metrics` of the features cast to ``dtype``, one compiled program (the eager
    version compiled every operation of the metrics on its own, for each shape)."""
    return _final_metrics(*(a.astype(dtype) for a in (h, ht, W, b)), labels_tr, labels_te, num_classes)


def _metrics_in_default_dtype(h, ht, W, b, labels_tr, labels_te, num_classes):
    return _metrics(h, ht, W, b, labels_tr, labels_te, num_classes, jnp.result_type(float))


def _features(model, x_train, x_test):
    """Penultimate features of both sets and the readout ``(W, b)``, one compiled program."""
    from flax import nnx

    return _features_jit(*nnx.split(model), x_train, x_test)


@functools.partial(jax.jit, static_argnums=0)
def _features_jit(graphdef, state, x_train, x_test):
    from flax import nnx

    model = nnx.merge(graphdef, state)
    W, b = model.readout()
    return model.features(x_train), model.features(x_test), W, b


def _train_one(cfg: DataConfig, seed: int, progress: bool) -> dict:
    import optax

    from ..finite import Classifier, train

    ds = _dataset(cfg, seed)
    C = ds.num_classes
    net = Classifier(ds.x_train.shape[1], C, width=cfg.width, depth=cfg.depth, layer_norm=True, seed=seed,
                     dtype=jnp.float32)
    steps = ds.x_train.shape[0] // cfg.batch_size
    boundaries = {int(cfg.epochs * steps / 3): 0.1, int(2 * cfg.epochs * steps / 3): 0.1}
    schedule = optax.piecewise_constant_schedule(cfg.learning_rate, boundaries)
    clip = [optax.clip_by_global_norm(cfg.clip)] if cfg.clip else []
    opt = optax.chain(*clip, optax.add_decayed_weights(cfg.weight_decay), optax.sgd(schedule, momentum=0.9))
    mdtype = jnp.result_type(float)  # float64 under x64
    labels_tr, labels_te = ds.labels_train, ds.labels_test

    def measure(model, epoch):
        values = _metrics(*_features(model, ds.x_train, ds.x_test), labels_tr, labels_te, C, mdtype)
        return {k: float(v) for k, v in values.items()}

    hist = train(net, ds.x_train, ds.y_train, opt, loss="cross_entropy", epochs=cfg.epochs,
                 batch_size=cfg.batch_size, key=jax.random.key(seed + 1), record_every=cfg.record_every,
                 callback=measure, progress=progress, desc=f"neural-collapse {cfg.name}")
    curves = {k: [r[k] for r in hist.records] for k in hist.records[0]}
    # the metrics of the final features in this run's dtype against float64 (float32 runs only)
    precision = float64_comparison(_metrics_in_default_dtype, *_features(net, ds.x_train, ds.x_test),
                                   labels_tr, labels_te, C,
                                   float32_values={k: v[-1] for k, v in curves.items()})
    return {"config": dataclasses.asdict(cfg), "epoch": hist.epoch.tolist(), "train_loss": hist.loss.tolist(),
            "train_accuracy": hist.accuracy.tolist(), **curves, "train_seconds": hist.wall_time,
            "precision": precision}


def _checks(res: dict) -> dict:
    acc = np.asarray(res["train_accuracy"])
    zero = np.flatnonzero(acc >= 1.0)
    if zero.size == 0:
        return {"zero_training_error": False, "ok": False}
    i0 = int(zero[0])
    out = {"zero_training_error": True, "tpt_start_epoch": int(res["epoch"][i0]),
           # recorded epochs after the start of the TPT with a non-zero training error (an instability)
           "tpt_epochs_with_training_errors": [int(e) for e, a in zip(res["epoch"][i0:], acc[i0:]) if a < 1.0],
           "final_train_accuracy": float(acc[-1]), "final_test_accuracy": float(res["test_accuracy"][-1])}
    nc1 = np.asarray(res["nc1"])
    out["nc1_at_tpt_start"] = float(nc1[i0])
    out["nc1_final"] = float(nc1[-1])
    out["nc1_drop"] = float(nc1[i0] / nc1[-1])
    ok = out["nc1_drop"] >= 10
    for k in _FALLING:
        v = np.asarray(res[k])
        out[f"{k}_at_tpt_start"], out[f"{k}_final"] = float(v[i0]), float(v[-1])
        falls = bool(v[-1] < v[i0] or (k == "ncc_mismatch_train" and v[-1] == 0.0))
        out[f"{k}_falls"] = falls
        ok = ok and falls
    for k in _REPORTED:
        v = np.asarray(res[k])
        out[f"{k}_at_tpt_start"], out[f"{k}_final"] = float(v[i0]), float(v[-1])
        out[f"{k}_falls"] = bool(v[-1] < v[i0])
    out["ok"] = bool(ok)
    return out


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: tuple[DataConfig, ...] | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes the figure and reports into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the finished data sets.
        quick: use :data:`QUICK` (digits only, metrics every 20 epochs) instead of :data:`FULL`.
        seed: seed of the split, the initialisation and the batches, in ``[0, 2**32 - 1]``.
        progress: show progress bars.
        config: explicit training runs, a non-empty tuple of :class:`DataConfig` with distinct
            names (overrides ``quick``).
    """
    configs = config if config is not None else (QUICK if quick else FULL)
    if (not isinstance(configs, tuple) or not configs or any(not isinstance(c, DataConfig) for c in configs)
            or len({c.name for c in configs}) != len(configs)):
        raise ValueError(f"config must be a non-empty tuple of neural_collapse.DataConfig with distinct names, "
                         f"got {configs!r}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    resume = ResumeFile(out, NAME, {"config": [dataclasses.asdict(c) for c in configs], "seed": seed,
                                    "dtype": dtype_name()})
    results = []
    for cfg in configs:
        if cfg.name not in resume:
            res = _train_one(cfg, seed, progress)
            res["checks"] = _checks(res)
            resume.put(cfg.name, res)
        results.append(resume[cfg.name])
    ok = all(r["checks"]["ok"] for r in results)
    summary = "; ".join(
        f"{r['config']['name']}: zero training error at epoch {r['checks'].get('tpt_start_epoch')}, NC1 "
        f"{r['checks'].get('nc1_at_tpt_start', float('nan')):.3g} -> {r['checks'].get('nc1_final', float('nan')):.3g} "
        f"({r['checks'].get('nc1_drop', float('nan')):.1f}x)" for r in results)
    precision = {"dtype": dtype_name()}
    if precision["dtype"] == "float32":  # one table: the data sets' quantities, named by data set
        parts = [r["precision"] for r in results]
        quantities = {f"{r['config']['name']}: {k}": v for r, p in zip(results, parts) for k, v in p["quantities"].items()}
        worst = max(quantities, key=lambda k: quantities[k]["max_rel_diff"])
        precision = {"dtype": "float32", "reference": parts[0]["reference"], "quantities": quantities,
                     "max_rel_diff": quantities[worst]["max_rel_diff"], "worst": worst}
    report = {"name": NAME, "ok": ok, "quick": configs == QUICK, "seed": seed, "dtype": dtype_name(),
              "seconds": time.perf_counter() - t0, "results": results, "summary": summary, "precision": precision,
              "resume": resume.summary(), "versions": versions()}
    _figure(report, out / "neural_collapse.png")
    write_report(out, report, _markdown(report))
    return report


def _figure(r, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    panels = [
        ("training / test error", [("train_accuracy", "train", "-"), ("test_accuracy", "test", "--")], False),
        ("NC1: Tr(Σ_W Σ_B†)/C  (Fig. 6)", [("nc1", None, "-")], True),
        ("NC2 equinorm: CV of norms (Fig. 2)", [("equinorm_means", "means", "-"), ("equinorm_weights", "classifier", "--")], True),
        ("NC2 equiangularity: Std cos (Fig. 3)", [("equiangular_means", "means", "-"), ("equiangular_weights", "classifier", "--")], True),
        ("NC2 max angle: Avg |cos + 1/(C-1)| (Fig. 4)", [("max_angle_means", "means", "-"), ("max_angle_weights", "classifier", "--")], True),
        ("NC3 self-duality (Fig. 5)", [("self_duality", None, "-")], True),
        ("NC4 classifier vs nearest centre (Fig. 7)", [("ncc_mismatch_train", "train", "-"), ("ncc_mismatch_test", "test", "--")], False),
        ("training loss", [("train_loss", None, "-")], True),
    ]
    fig = Figure(figsize=(19, 8.5))
    axes = fig.subplots(2, 4)
    colors = ["C0", "C3", "C2", "C1"]
    for ax, (title, series, log) in zip(axes.ravel(), panels):
        for res, c in zip(r["results"], colors):
            ep = np.asarray(res["epoch"])
            for key, label, ls in series:
                y = np.asarray(res[key], float)
                if key.endswith("accuracy"):
                    y = 1.0 - y
                lab = res["config"]["name"] + ("" if label is None else f" ({label})")
                ax.plot(ep, y, ls, color=c, label=lab, lw=1.6)
            t = res["checks"].get("tpt_start_epoch")
            if t is not None:
                ax.axvline(t, color=c, ls=":", lw=1)
        if log:
            ax.set_yscale("log")
        ax.set(title=title, xlabel="epoch")
        ax.legend(fontsize=7)
    fig.suptitle("Neural collapse in the terminal phase of training (dotted: zero training error reached)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _markdown(r):
    lines = ["# Neural collapse during the terminal phase of training", "",
             f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s"
             f"{' (quick)' if r['quick'] else ''}. Papyan, Han & Donoho, PNAS 2020.", "",
             "| data | MLP | epochs | TPT from | test acc | NC1 start -> end | drop | NC2 equinorm | NC2 equiangular | "
             "NC2 max angle | NC3 | NC4 train | NC4 test (end) |",
             "|---|---|---:|---:|---:|---|---:|---|---|---|---|---|---:|"]
    for res in r["results"]:
        c, k = res["config"], res["checks"]
        if not k.get("zero_training_error"):
            lines.append(f"| {c['name']} | - | {c['epochs']} | never | - | - | - | - | - | - | - | - | - |")
            continue

        def pair(name):
            return f"{k[name + '_at_tpt_start']:.3g} -> {k[name + '_final']:.3g}"

        lines.append(
            f"| {c['name']} (n={c['n_train']}, batch {c['batch_size']}) | {c['depth']}x{c['width']} LayerNorm-ReLU | {c['epochs']} | {k['tpt_start_epoch']} | "
            f"{k['final_test_accuracy']:.3f} | {k['nc1_at_tpt_start']:.3g} -> {k['nc1_final']:.3g} | {k['nc1_drop']:.1f}x | "
            f"{pair('equinorm_means')} | {pair('equiangular_means')} | {pair('max_angle_means')} | "
            f"{pair('self_duality')} | {pair('ncc_mismatch_train')} | {res['ncc_mismatch_test'][-1]:.3g} |")
    cfg = r["results"][0]["config"]
    lines += ["", f"SGD, momentum 0.9, learning rate {cfg['learning_rate']} divided by 10 at 1/3 and 2/3 of training, "
              f"weight decay {cfg['weight_decay']} on every parameter, gradient clipping at global norm {cfg['clip']}, "
              "cross-entropy. `ok` requires, for every data set, NC1 to fall >= 10x from the first epoch with zero "
              "training error (start of the TPT) to the end, and the equinorm, equiangularity and maximal-angle metrics "
              "of the class means, NC3 and the training NC4 to fall (or NC4 to stay at 0).", ""]
    for res in r["results"]:
        bad = res["checks"].get("tpt_epochs_with_training_errors")
        if bad:
            lines.append(f"- {res['config']['name']}: the training error is not zero at recorded epochs {nums(bad)} of the TPT "
                         "(an instability of the layer-normalized network at the large learning rate, bounded by the "
                         "gradient clipping; see the loss panel).")
    lines += [""] + precision_lines(r.get("precision"))
    lines += ["![neural collapse](neural_collapse.png)", ""]
    return "\n".join(lines)
