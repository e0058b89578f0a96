r"""Convolutional kernels (CNN-GP, CNTK, Myrtle) against fully-connected kernels and finite CNNs on MNIST.

``rmtjax reproduce conv-kernel-regression`` asks, on the data split of ``kernel-regression``
(:mod:`rmtjax.experiments.kernel_regression`: the MNIST 5k subset, ``mnist(4000, 1000, seed)``,
images standardized per sample, centred one-hot targets), whether convolutional infinite-width
kernels classify better than the fully-connected NNGP/NTK (Novak et al. 2019; Arora et al. 2019;
Shankar et al. 2020), and whether finite CNNs of the same architecture trained in the NTK
regime approach their kernel as the number of channels grows. Every regression is
``kernel_regression``'s own (:func:`~rmtjax.experiments.kernel_regression.regress_timed`:
:func:`rmtjax.regression.gp_inference`, ``diag_reg = 1e-4``) on one common test set, the first
``n_test`` of that split's test points.

**What runs at which size, and why.** A kernel that pools needs the covariance of every pixel of
one image with every pixel of the other: :math:`(HW)^2` entries per image pair and layer, 615,000
at 28 x 28. Measured on the 2-core development machine (float64, loaded by other jobs, 200 images,
symmetric call, after compilation): a 3-layer CNN read out by ``Flatten`` at 28 x 28 (same-pixel
covariances only, 784 per pair) took 3.6 s; a 3-layer CNTK with ``GlobalAvgPool`` on 7 x 7 images
(2,401 pixel pairs) 21 s; Myrtle-5 on 8 x 8 (4,096 pixel pairs) 34 s. Extrapolated (cost
:math:`\propto` image pairs) to the 5,000 x 5,000 kernel of ``kernel-regression``: 38 min, 3.6 h and
6 h; Myrtle at 28 x 28 would be another 150 times more. So the full run computes

* the **fully-connected** ReLU NNGP/NTK (``kernel_regression.spec_for("relu", depth)``, the same
  kernels as ``kernel-regression``) at ``n_train_fc = 4000`` on the 784 pixels, and of the deepest
  one also on the 8 x 8 images (a control: what downsampling alone does);
* a **CNN-GP / CNTK read out by Flatten** (``conv_depth`` x [3 x 3 SAME Conv, ReLU], Flatten,
  Dense) on the full 28 x 28 images at ``n_train_flat = 1000``;
* a **CNTK with GlobalAvgPool** (the same convolutions, then GlobalAvgPool, Dense) on images
  average-pooled 4 x 4 to 7 x 7, and **Myrtle-5** (Shankar et al. 2020; neural-tangents'
  notebook network with one AvgPool after each group, 8 -> 4 -> 2 -> 1) on images cropped to
  24 x 24 and average-pooled 3 x 3 to 8 x 8, both at ``n_train_pool = 200``;

downsampled images are standardized per sample again. The full run measured 620 s of CPU time
(user; 31.5 min wall on the 2-core machine at load average ~10 from other jobs): kernels of the
Flatten CNN 591 s wall, GlobalAvgPool CNTK 332 s, Myrtle-5 495 s, the fully-connected ones 12-18 s
each; the widest finite CNNs 108 s each. ``--quick`` (1000 / 200 / 60 training points, 100 test
points, conv depth 1, widths 8-128, one seed, 30 steps) measured 74 s of CPU time (with 200 test
points; 146 s wall at that load). Each kernel is also read at every smaller
training size of the grid (its training prefix; prefixes of the split are stratified), so all
kernels meet at ``n_train_pool``. Convolutions have :math:`\sigma_w^2 = 2`, :math:`\sigma_b = 0`
(Myrtle's), NTK parameterization; the train-train kernel is one symmetric call and the
test-train kernel another. Accuracy differences between two kernels are given with their paired
standard error over the common test points.

**Finite CNNs.** The GlobalAvgPool network on the 7 x 7 images with ``widths`` channels (float32,
:mod:`rmtjax.stax`'s ``init_fn``/``apply_fn``, NTK parameterization), for each of ``seeds``: the
centred outputs :math:`g = f_\theta - f_{\theta_0}` (so the infinite-width prediction starts at 0)
trained by full-batch gradient descent (``optax.sgd``) on :math:`\frac{1}{2nk}\sum(g - y)^2` over
the ``n_train_pool`` training images for ``steps`` steps with :math:`\eta = nk/\lambda_{\max}(\Theta)`,
against the linearised infinite-width network trained by the same discrete steps,
:math:`g_{\rm test}(t) = \Theta_{\rm test}\,\Theta^{-1}\,[I - (I - \eta\Theta/nk)^t]\,y`.
``ok`` requires every kernel accuracy above chance (0.1) by five standard errors and the relative
gap :math:`\|g_{\rm net} - g_{\rm NTK}\| / \|g_{\rm NTK}\|` on the test set (mean over seeds) to
shrink with width at a fitted log-log slope below -0.25 (theory: -1/2).

Each kernel and each trained network is saved to ``resume.json`` as it finishes
(:class:`rmtjax.experiments._resume.ResumeFile`); ``conv_kernel_regression.png``, ``report.json``
and ``report.md`` are written at the end. In a float32 run the report also gives the largest
differences of every kernel's regression predictions to float64.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np

from ._common import (
    check_seed,
    config_dict,
    dtype_name,
    int_grid,
    positive_int,
    versions,
)
from ._output import check_out_dir, num, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["FULL", "QUICK", "Config", "run"]

NAME = "conv-kernel-regression"
CHANCE = 0.1
W_STD = math.sqrt(2.0)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        n_test: common test points (a prefix of ``kernel-regression``'s test set).
        n_train_fc: training points of the fully-connected kernels (``+ n_test <= 5000``).
        n_train_flat: training points of the CNN read out by Flatten (28 x 28), ``<= n_train_fc``.
        n_train_pool: training points of the pooling kernels (7 x 7 GlobalAvgPool CNTK, 8 x 8
            Myrtle-5) and of the finite CNNs, ``<= n_train_flat``.
        fc_depths: depths of the fully-connected kernels (increasing).
        conv_depth: convolutional layers of the Flatten and GlobalAvgPool networks.
        widths: channels of the finite CNNs (at least 2, increasing: the gap is fitted against them).
        seeds: network seeds (offsets added to the run's seed), at least 1, increasing.
        steps: full-batch gradient-descent steps of the finite CNNs.
    """

    n_test: int = 1000
    n_train_fc: int = 4000
    n_train_flat: int = 1000
    n_train_pool: int = 200
    fc_depths: tuple[int, ...] = (1, 3)
    conv_depth: int = 2
    widths: tuple[int, ...] = (16, 64, 256)
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 100

    def __post_init__(self):
        positive_int(self.n_test, "n_test", lo=20, hi=1000)
        positive_int(self.n_train_fc, "n_train_fc", lo=20, hi=5000 - self.n_test)
        positive_int(self.n_train_flat, "n_train_flat", lo=20, hi=self.n_train_fc)
        positive_int(self.n_train_pool, "n_train_pool", lo=20, hi=self.n_train_flat)
        int_grid(self.fc_depths, "fc_depths", lo=1)
        positive_int(self.conv_depth, "conv_depth", lo=1, hi=10)
        int_grid(self.widths, "widths", lo=1, min_len=2)
        int_grid(self.seeds, "seeds", lo=0)
        positive_int(self.steps, "steps", lo=1)


FULL = Config()
QUICK = Config(n_test=100, n_train_fc=1000, n_train_flat=200, n_train_pool=60, fc_depths=(1,), conv_depth=1,
               widths=(8, 32, 128), seeds=(0,), steps=30)


# ------------------------------------------------------------------------------------------
# Data and architectures
# ------------------------------------------------------------------------------------------


def _restandardize(x: np.ndarray) -> np.ndarray:
    """Each image to zero mean and unit variance over its pixels (``mnist``'s convention)."""
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    s = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - m) / np.where(s > 0, s, 1.0)


def images(x: Any) -> dict[str, np.ndarray]:
    """The three image sizes of standardized MNIST rows ``(n, 784)``: ``"28x28"`` (as is),
    ``"7x7"`` (4 x 4 average pooling) and ``"8x8"`` (the 2-pixel border cropped, 3 x 3 average
    pooling); the downsampled ones standardized per image again. All ``(n, H, W, 1)``, float64
    on the host."""
    x = np.asarray(x, np.float64).reshape(-1, 28, 28, 1)
    n = x.shape[0]
    x7 = x.reshape(n, 7, 4, 7, 4, 1).mean(axis=(2, 4))
    x8 = x[:, 2:26, 2:26].reshape(n, 8, 3, 8, 3, 1).mean(axis=(2, 4))
    return {"28x28": x, "7x7": _restandardize(x7), "8x8": _restandardize(x8)}


def conv_net(kind: str, depth: int, width: int = 1):
    """The convolutional networks as :mod:`rmtjax.stax` triples (written as in neural-tangents).

    ``"flatten"``: ``depth`` x [Conv(width, 3 x 3, SAME), ReLU], Flatten, Dense(10);
    ``"gap"``: the same convolutions, GlobalAvgPool, Dense(10); ``"myrtle5"``: Myrtle-5 for
    8 x 8 inputs (Conv-ReLU twice, AvgPool 2, Conv-ReLU, AvgPool 2, Conv-ReLU, AvgPool 2, Flatten,
    Dense(10)). :math:`\\sigma_w^2 = 2`, :math:`\\sigma_b = 0`, NTK parameterization; ``width``
    matters only to the finite network.
    """
    from .. import stax

    def conv():
        return stax.Conv(width, (3, 3), padding="SAME", W_std=W_STD, b_std=0.0)

    readout = stax.Dense(10, W_std=W_STD, b_std=0.0)
    if kind == "flatten":
        return stax.serial(*([conv(), stax.Relu()] * depth), stax.Flatten(), readout)
    if kind == "gap":
        return stax.serial(*([conv(), stax.Relu()] * depth), stax.GlobalAvgPool(), readout)
    if kind == "myrtle5":
        pool = stax.AvgPool((2, 2), strides=(2, 2))
        return stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), pool, conv(), stax.Relu(), pool, conv(),
                           stax.Relu(), pool, stax.Flatten(), readout)
    raise ValueError(f"kind must be 'flatten', 'gap' or 'myrtle5', got {kind!r}")


class _Model:
    """One kernel of the comparison: its name, family, input images and training size."""

    def __init__(self, name: str, family: str, image: str, n_train: int, conv: tuple | None = None,
                 fc_depth: int | None = None):
        self.name, self.family, self.image, self.n_train = name, family, image, n_train
        self.conv, self.fc_depth = conv, fc_depth

    @property
    def key(self) -> str:
        return f"kernel|{self.name}"


def models(cfg: Config) -> list[_Model]:
    """The kernels of the comparison, cheapest first."""
    dmax = cfg.fc_depths[-1]
    out = [_Model(f"FC ReLU depth {d}", "fc", "28x28", cfg.n_train_fc, fc_depth=d) for d in cfg.fc_depths]
    out.append(_Model(f"FC ReLU depth {dmax} (8x8)", "fc", "8x8", cfg.n_train_fc, fc_depth=dmax))
    out.append(_Model(f"CNN Flatten depth {cfg.conv_depth}", "conv", "28x28", cfg.n_train_flat,
                      conv=("flatten", cfg.conv_depth)))
    out.append(_Model(f"CNN GAP depth {cfg.conv_depth} (7x7)", "conv", "7x7", cfg.n_train_pool,
                      conv=("gap", cfg.conv_depth)))
    out.append(_Model("Myrtle-5 (8x8)", "conv", "8x8", cfg.n_train_pool, conv=("myrtle5", 5)))
    return out


def model_kernels(m: _Model, x_train, x_test):
    """Train-train and test-train ``Kernel``s (NumPy) of a model on its images and the wall time
    (compilation included). Fully-connected: ``kernel_regression.union_kernels`` (one symmetric call
    on train and test points); convolutional: ``kernel_fn(x_train)`` and ``kernel_fn(x_test, x_train)``
    (no test-test pairs)."""
    import jax

    from ..kernels import Kernel
    from . import kernel_regression as kr

    n = m.n_train
    if m.family == "fc":
        flat = lambda a: np.asarray(a).reshape(a.shape[0], -1)
        ks, seconds = kr.union_kernels(flat(x_train[:n]), flat(x_test), "relu", [m.fc_depth])
        return ks[m.fc_depth], seconds[m.fc_depth][0]
    kernel_fn = conv_net(*m.conv)[2]
    t0 = time.perf_counter()
    ktr = jax.block_until_ready(kernel_fn(x_train[:n], None, ("nngp", "ntk")))
    kte = jax.block_until_ready(kernel_fn(x_test, x_train[:n], ("nngp", "ntk")))
    t = time.perf_counter() - t0
    return (Kernel(np.asarray(ktr.nngp), np.asarray(ktr.ntk)), Kernel(np.asarray(kte.nngp), np.asarray(kte.ntk))), t


def _sub(k, n: int):
    from ..kernels import Kernel

    ktr, kte = k
    return Kernel(ktr.nngp[:n, :n], ktr.ntk[:n, :n]), Kernel(kte.nngp[:, :n], kte.ntk[:, :n])


def _correct(pred, labels) -> str:
    """Which test points a prediction classifies correctly, as a string of 0/1 (compact in JSON)."""
    return "".join("1" if c else "0" for c in np.argmax(np.asarray(pred), 1) == np.asarray(labels))


def kernel_records(m: _Model, ks, t_kernel: float, ds, sizes) -> tuple[list[dict], dict]:
    """The regressions of one model at every training size of ``sizes`` up to its own (with
    ``kernel_regression``'s ``regress_timed`` and ``metrics``); also the predictions at its own size."""
    from . import kernel_regression as kr

    recs, preds = [], {}
    for n in [s for s in sizes if s <= m.n_train]:
        ktr, kte = _sub(ks, n)
        sub = ds._replace(y_train=ds.y_train[:n])
        out, t_solve, jitter = kr.regress_timed(ktr, kte, sub.y_train)
        rec = {"model": m.name, "family": m.family, "image": m.image, "n_train": n, "n_test": int(ds.y_test.shape[0]),
               "kernel_n_train": m.n_train, "kernel_s": t_kernel, "solve_s": t_solve, "jitter": jitter,
               "diag_reg": kr.DIAG_REG}
        for g in ("nngp", "ntk"):
            rec[g] = kr.metrics(getattr(out, g), sub)
            rec[g]["correct"] = _correct(getattr(out, g), ds.labels_test)
        recs.append(rec)
        if n == m.n_train:
            preds = {f"{m.name} NNGP predictions": out.nngp, f"{m.name} NTK predictions": out.ntk}
    return recs, preds


# ------------------------------------------------------------------------------------------
# Finite CNNs
# ------------------------------------------------------------------------------------------


def linearised_gd(theta, theta_test, y, eta: float, steps) -> np.ndarray:
    r"""Test outputs of the linearised infinite-width network (zero initial output) after ``t``
    steps of full-batch gradient descent on :math:`\frac{1}{2nk}\sum(g - y)^2` with step ``eta``:
    :math:`\Theta_{\rm test} V\,{\rm diag}\big((1 - (1 - \eta\lambda/nk)^t)/\lambda\big) V^\top y`
    (:math:`\Theta = V\Lambda V^\top`; the ratio is continued by :math:`t\eta/nk` at
    :math:`\lambda = 0`). Shape ``(len(steps), m, k)``."""
    theta, theta_test, y = (np.asarray(a, np.float64) for a in (theta, theta_test, y))
    n, k = y.shape
    lam, v = np.linalg.eigh(theta)
    lam = np.maximum(lam, 0.0)
    c = eta / (n * k)
    x = np.minimum(c * lam, 1.0)
    vy = v.T @ y
    out = []
    below = x < 1.0
    xs = np.where(below, x, 0.0)  # the mode with eta lambda / nk = 1 is learned in one step
    for t in np.atleast_1d(steps):
        frac = np.where(below, -np.expm1(t * np.log1p(-xs)), 1.0)  # 1 - (1 - x)^t without cancellation
        h = np.where(x > 1e-12, frac / np.where(lam > 0, lam, 1.0), t * c)
        out.append(theta_test @ (v @ (h[:, None] * vy)))
    return np.stack(out)


def finite_records(ds7, theta, theta_test, cfg: Config, seed: int, progress: bool, done: set):
    """Trains the GlobalAvgPool CNN at each width and seed (float32, centred outputs) and yields one
    record each, against :func:`linearised_gd` with the same steps."""
    import jax
    import jax.numpy as jnp
    import optax
    from tqdm.auto import tqdm

    from . import kernel_regression as kr

    todo = [(w, s) for w in cfg.widths for s in cfg.seeds if f"finite|w{w}|s{s}" not in done]
    if not todo:
        return
    x_tr = jnp.asarray(ds7.x_train, jnp.float32)
    x_te = jnp.asarray(ds7.x_test, jnp.float32)
    y = jnp.asarray(ds7.y_train, jnp.float32)
    n, k = ds7.y_train.shape
    lam_max = float(np.linalg.eigvalsh(np.asarray(theta))[-1])
    eta = n * k / lam_max
    record_steps = sorted({max(cfg.steps * i // 4, 1) for i in range(1, 5)})
    theory = linearised_gd(theta, theta_test, ds7.y_train, eta, record_steps)
    theory_inf = linearised_gd(theta, theta_test, ds7.y_train, eta, [1e12])[0]
    base = {"section": "finite", "model": f"CNN GAP depth {cfg.conv_depth} (7x7)", "n_train": n, "steps": cfg.steps,
            "learning_rate": eta, "record_steps": record_steps,
            "ntk_linearised": [kr.metrics(t, ds7) for t in theory]}
    bar = tqdm(total=len(todo), desc="finite CNNs", disable=not progress)
    opt = optax.sgd(eta)
    programs: dict[int, tuple] = {}
    for w, s in todo:
        init_fn, apply_fn, _ = conv_net("gap", cfg.conv_depth, w)
        if w not in programs:  # one compiled step per width, shared by the seeds

            def loss(p, f0, apply_fn=apply_fn):
                return 0.5 * jnp.mean((apply_fn(p, x_tr) - f0 - y) ** 2)

            @jax.jit
            def step(p, st, f0, loss=loss):
                val, g = jax.value_and_grad(loss)(p, f0)
                upd, st = opt.update(g, st, p)
                return optax.apply_updates(p, upd), st, val

            programs[w] = (jax.jit(apply_fn), step)
        apply, step = programs[w]
        _, params = init_fn(jax.random.key(seed + s), x_tr.shape)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
        f0_tr, f0_te = apply(params, x_tr), apply(params, x_te)
        st = opt.init(params)
        t0 = time.perf_counter()
        outs, losses = [], []
        for i in range(1, cfg.steps + 1):
            params, st, val = step(params, st, f0_tr)
            if i in record_steps:
                outs.append(np.asarray(apply(params, x_te) - f0_te, np.float64))
                losses.append(float(val))
        train_s = time.perf_counter() - t0
        outs = np.stack(outs)
        gap = (np.linalg.norm((outs - theory).reshape(len(outs), -1), axis=1)
               / np.linalg.norm(theory.reshape(len(theory), -1), axis=1))
        yield {**base, "key": f"finite|w{w}|s{s}", "width": w, "seed": s, "train_loss": losses,
               "relative_gap": gap.tolist(), "train_s": train_s, "net": kr.metrics(outs[-1], ds7),
               "ntk_regression_gd_limit": kr.metrics(theory_inf, ds7)}
        bar.update()
    bar.close()


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


def _split(cfg: Config, seed: int):
    from ..data import mnist

    ds = mnist(cfg.n_train_fc, cfg.n_test, seed=seed, center_targets=True)
    return ds, images(ds.x_train), images(ds.x_test)


def _predictions(data: dict, cfg: Config):
    """Every model's NNGP and NTK test predictions at its own training size (compared with float64
    in a float32 run)."""
    out = {}
    ds = data["ds"]
    for m in models(cfg):
        ks, _ = model_kernels(m, data["train"][m.image], data["test"][m.image])
        out.update(kernel_records(m, ks, 0.0, ds, [m.n_train])[1])
    return out


def paired(a: str, b: str) -> tuple[float, float]:
    """Accuracy of ``a`` minus that of ``b`` (0/1 strings over the same test points) and its
    paired standard error :math:`\\mathrm{sd}(d_i)/\\sqrt m`."""
    d = np.array([int(u) - int(v) for u, v in zip(a, b)], float)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan


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

    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a conv_kernel_regression.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    resume = ResumeFile(out, NAME, {"config": config_dict(cfg), "seed": seed, "dtype": dtype_name()})
    ds, img_tr, img_te = _split(cfg, seed)
    sizes = sorted({cfg.n_train_pool, cfg.n_train_flat, cfg.n_train_fc})
    preds32: dict[str, Any] = {}
    gap_kernel = None
    all_models = models(cfg)
    bar = tqdm(total=len(all_models), desc="kernels", disable=not progress)
    for m in all_models:
        if m.key in resume:
            bar.update()
            continue
        bar.set_postfix_str(m.name)
        ks, t_kernel = model_kernels(m, img_tr[m.image], img_te[m.image])
        recs, preds = kernel_records(m, ks, t_kernel, ds, sizes)
        preds32.update(preds)
        if m.conv is not None and m.conv[0] == "gap":
            gap_kernel = ks
        resume.put(m.key, {"key": m.key, "section": "kernel", "records": recs})
        bar.update()
    bar.close()

    # finite CNNs: the GlobalAvgPool network on its training prefix (its NTK recomputed if resumed)
    done = set(resume)
    gap_model = next(m for m in all_models if m.conv is not None and m.conv[0] == "gap")
    if any(f"finite|w{w}|s{s}" not in done for w in cfg.widths for s in cfg.seeds):
        if gap_kernel is None:
            gap_kernel, _ = model_kernels(gap_model, img_tr["7x7"], img_te["7x7"])
        n = cfg.n_train_pool
        ds7 = ds._replace(x_train=img_tr["7x7"][:n], y_train=ds.y_train[:n], x_test=img_te["7x7"])
        for rec in finite_records(ds7, gap_kernel[0].ntk, gap_kernel[1].ntk, cfg, seed, progress, done):
            resume.put(rec["key"], rec)

    data = {"ds": ds, "train": img_tr, "test": img_te}
    names = [f"{m.name} {g} predictions" for m in all_models for g in ("NNGP", "NTK")]
    precision = float64_comparison(_predictions, data, cfg,
                                   float32_values=preds32 if set(preds32) == set(names) else None)
    kern = [r for m in all_models for r in resume[m.key]["records"]]
    fin = sorted((resume[k] for k in resume if k.startswith("finite|")), key=lambda r: (r["width"], r["seed"]))
    report = summarise(cfg, seed, kern, fin)
    report.update({"precision": precision, "resume": resume.summary(), "seconds": time.perf_counter() - t0,
                   "versions": versions()})
    figure(report, out / "conv_kernel_regression.png")
    write_report(out, report, markdown(report))
    return report


def summarise(cfg: Config, seed: int, kern: list[dict], fin: list[dict]) -> dict[str, Any]:
    """The checks, the conv-vs-FC comparisons with paired standard errors and the finite-width
    summary (mean over seeds per width)."""
    m_test = cfg.n_test
    margins = []
    for r in kern:
        for g in ("nngp", "ntk"):
            p = r[g]["accuracy"]
            se = math.sqrt(max(p * (1 - p), 1e-12) / m_test)
            margins.append((p - CHANCE) / se)
    comparisons = []
    for n in sorted({r["n_train"] for r in kern}):
        at = [r for r in kern if r["n_train"] == n]
        fc = [r for r in at if r["family"] == "fc" and r["image"] == "28x28"]
        conv = [r for r in at if r["family"] == "conv"]
        if not fc or not conv:
            continue
        for g in ("nngp", "ntk"):
            best_fc = max(fc, key=lambda r: r[g]["accuracy"])
            for c in conv:
                d, se = paired(c[g]["correct"], best_fc[g]["correct"])
                comparisons.append({"n_train": n, "kernel": g, "conv": c["model"], "fc": best_fc["model"],
                                    "difference": d, "se": se})
    widths = sorted({r["width"] for r in fin})
    by_width = []
    for w in widths:
        rs = [r for r in fin if r["width"] == w]
        by_width.append({"width": w, "seeds": len(rs),
                         "net_accuracy": float(np.mean([r["net"]["accuracy"] for r in rs])),
                         "net_accuracy_sd": float(np.std([r["net"]["accuracy"] for r in rs])),
                         "net_mse": float(np.mean([r["net"]["mse"] for r in rs])),
                         "relative_gap": float(np.mean([r["relative_gap"][-1] for r in rs])),
                         "train_s": float(np.mean([r["train_s"] for r in rs]))})
    gaps = np.array([b["relative_gap"] for b in by_width])
    slope = float(np.polyfit(np.log(widths), np.log(gaps), 1)[0]) if len(widths) >= 2 else math.nan
    lin = fin[0]["ntk_linearised"][-1] if fin else None
    checks = {
        "min_margin_over_chance_in_se": float(min(margins)),
        "kernels_above_chance": bool(min(margins) > 5.0),
        "gap_slope": slope,
        "gap_shrinks_with_width": bool(slope < -0.25 and gaps[-1] < gaps[0]),
        "widest_net_minus_ntk_accuracy": (by_width[-1]["net_accuracy"] - lin["accuracy"]) if lin else None,
    }
    ok = checks["kernels_above_chance"] and checks["gap_shrinks_with_width"]
    best = {}
    for fam in ("fc", "conv"):
        rs = [r for r in kern if r["family"] == fam and r["n_train"] == cfg.n_train_pool]
        b = max(rs, key=lambda r: r["ntk"]["accuracy"])
        best[fam] = (b["model"], b["ntk"]["accuracy"])
    summary = (f"MNIST, {m_test} test points: at n_train = {cfg.n_train_pool} the best conv NTK ({best['conv'][0]}) "
               f"reaches {best['conv'][1]:.3f} against {best['fc'][1]:.3f} for the best FC NTK ({best['fc'][0]}); "
               f"finite CNNs: gap to the linearised NTK ~ width^{slope:.2f}")
    return {"name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
            "config": config_dict(cfg), "kernel": kern, "comparisons": comparisons, "finite": fin,
            "finite_by_width": by_width, "checks": checks, "summary": summary}


def figure(r: dict, path) -> None:
    """Accuracy against training size per kernel; accuracies at the common size; finite CNNs."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(17, 4.6))
    ax = fig.subplots(1, 3)
    names = list(dict.fromkeys(x["model"] for x in r["kernel"]))
    for i, name in enumerate(names):
        rows = [x for x in r["kernel"] if x["model"] == name]
        n = [x["n_train"] for x in rows]
        c = f"C{i}"
        ax[0].semilogx(n, [x["ntk"]["accuracy"] for x in rows], "o-", color=c, label=f"{name} NTK")
        ax[0].semilogx(n, [x["nngp"]["accuracy"] for x in rows], "s--", color=c, alpha=0.6)
    sizes = sorted({x["n_train"] for x in r["kernel"]})
    ax[0].set_xticks(sizes, [str(n) for n in sizes])  # the grid's sizes, no minor-tick labels
    ax[0].xaxis.set_minor_formatter(NullFormatter())
    ax[0].set(xlabel="training points", ylabel="test accuracy", title="kernel regression (solid NTK, dashed NNGP)")
    ax[0].legend(fontsize=7)
    n0 = r["config"]["n_train_pool"]
    at = [x for x in r["kernel"] if x["n_train"] == n0]
    pos = np.arange(len(at))
    ax[1].bar(pos - 0.2, [x["nngp"]["accuracy"] for x in at], 0.4, label="NNGP")
    ax[1].bar(pos + 0.2, [x["ntk"]["accuracy"] for x in at], 0.4, label="NTK")
    se = [math.sqrt(x["ntk"]["accuracy"] * (1 - x["ntk"]["accuracy"]) / x["n_test"]) for x in at]
    ax[1].errorbar(pos + 0.2, [x["ntk"]["accuracy"] for x in at], yerr=se, fmt="none", color="k")
    ax[1].set_xticks(pos)
    ax[1].set_xticklabels([x["model"] for x in at], rotation=30, ha="right", fontsize=7)
    lo = min(min(x["nngp"]["accuracy"], x["ntk"]["accuracy"]) for x in at)
    ax[1].set(ylim=(max(lo - 0.1, 0.0), 1.0), ylabel="test accuracy", title=f"all kernels at n_train = {n0}")
    ax[1].legend(fontsize=8)
    bw = r["finite_by_width"]
    if bw:
        w = np.array([b["width"] for b in bw], float)
        g = np.array([b["relative_gap"] for b in bw])
        ax[2].loglog(w, g, "o-", label=f"relative gap, fit slope {r['checks']['gap_slope']:.2f}")
        ax[2].loglog(w, g[0] * (w / w[0]) ** -0.5, "k:", label="width$^{-1/2}$")
        ax[2].set(xlabel="channels", ylabel=r"$\|g_{net} - g_{NTK}\| / \|g_{NTK}\|$ (test)",
                  title=f"finite GAP CNNs vs linearised NTK, {r['finite'][0]['steps']} GD steps")
        ax3 = ax[2].twinx()
        ax3.semilogx(w, [b["net_accuracy"] for b in bw], "^-", color="C2", label="net accuracy")
        ax3.axhline(r["finite"][0]["ntk_linearised"][-1]["accuracy"], color="C2", ls=":", label="NTK, same steps")
        ax3.set_ylabel("test accuracy", color="C2")
        ax3.set_xticks(w, [str(int(v)) for v in w])  # after semilogx (which resets the shared axis' formatters)
        ax3.xaxis.set_minor_formatter(NullFormatter())
        h = ax[2].get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
        ax[2].legend(handles=h, fontsize=8, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def findings(r: dict) -> list[str]:
    """Two sentences: conv kernels against FC kernels, finite CNNs against their kernel."""
    out = []
    n0 = r["config"]["n_train_pool"]
    comp = [x for x in r["comparisons"] if x["n_train"] == n0 and x["kernel"] == "ntk"]
    if comp:
        parts = ", ".join(f"{x['conv']} {x['difference']:+.3f} +- {x['se']:.3f}" for x in comp)
        out.append(f"Conv kernels vs the best fully-connected kernel at n_train = {n0} (NTK, paired SE): {parts}.")
    bw = r["finite_by_width"]
    if bw:
        f0 = r["finite"][0]
        lin, lim = f0["ntk_linearised"][-1]["accuracy"], f0["ntk_regression_gd_limit"]["accuracy"]
        shrinks = "shrinks" if bw[-1]["relative_gap"] < bw[0]["relative_gap"] else "does not shrink"
        out.append(f"Finite CNNs vs their kernel: the relative gap to the linearised NTK {shrinks} with the channels, "
                   f"{bw[0]['relative_gap']:.3f} at {bw[0]['width']} to {bw[-1]['relative_gap']:.3f} at {bw[-1]['width']} "
                   f"(~ width^{r['checks']['gap_slope']:.2f}; theory -1/2), and the test accuracy rises from "
                   f"{bw[0]['net_accuracy']:.3f} to {bw[-1]['net_accuracy']:.3f} towards the linearised NTK's {lin:.3f} after "
                   f"the same {f0['steps']} steps; the kernel regression limit (t = infinity, {lim:.3f}) is beyond the "
                   "step budget of both (the step size is capped by the largest NTK eigenvalue).")
    return [" ".join(out), ""] if out else []


def markdown(r: dict) -> str:
    """The report as Markdown."""
    c, cfg = r["checks"], r["config"]
    lines = [
        "# Convolutional kernels vs fully-connected kernels and finite CNNs on MNIST", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). {r['summary']}.", "",
        f"Data: the `kernel-regression` split (MNIST 5k subset, seed {r['seed']}); one common test set of "
        f"{cfg['n_test']} points (the first of that split's test points); training prefixes of "
        f"{', '.join(str(n) for n in sorted({x['n_train'] for x in r['kernel']}))} points. Regression: "
        f"`gp_inference(diag_reg={r['kernel'][0]['diag_reg']})`, the `kernel-regression` code.", "",
        "What runs at which size: fully-connected ReLU kernels at "
        f"{cfg['n_train_fc']} training points (784 pixels; the deepest also on the 8x8 images); the CNN read out by "
        f"Flatten ({cfg['conv_depth']} x [3x3 SAME Conv, ReLU], same-pixel covariances only) on 28x28 at "
        f"{cfg['n_train_flat']}; the CNTK with GlobalAvgPool (same convolutions) on 7x7 images and Myrtle-5 on 8x8 "
        f"images (pixel-pair covariances) at {cfg['n_train_pool']}. Pooling kernels need every pixel pair of every "
        "image pair, so on two CPU cores they run on downsampled images and few training points (see the module "
        "docstring for the measured costs).", "",
        "| kernel | image | n_train | NNGP acc | NTK acc | NNGP MSE | NTK MSE | kernel s | solve s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["kernel"]:
        lines.append(f"| {x['model']} | {x['image']} | {x['n_train']} | {x['nngp']['accuracy']:.3f} | "
                     f"{x['ntk']['accuracy']:.3f} | {x['nngp']['mse']:.4f} | {x['ntk']['mse']:.4f} | "
                     f"{x['kernel_s']:.1f} | {x['solve_s']:.2f} |")
    lines += ["", "kernel s: the wall time of the model's kernel calls at its largest training size (compilation "
              "included), shared by its rows. Accuracy standard error at p = 0.9: "
              f"{math.sqrt(0.09 / cfg['n_test']):.3f}.", ""]
    if r["comparisons"]:
        lines += ["Conv kernel minus the best fully-connected kernel (28x28) at the same training size, on the same "
                  "test points (paired standard error):", "",
                  "| n_train | kernel | conv | best FC | accuracy difference | paired SE |", "|---:|---|---|---|---:|---:|"]
        for x in r["comparisons"]:
            lines.append(f"| {x['n_train']} | {x['kernel'].upper()} | {x['conv']} | {x['fc']} | "
                         f"{x['difference']:+.3f} | {x['se']:.3f} |")
        lines.append("")
    if r["finite"]:
        f0 = r["finite"][0]
        lin = f0["ntk_linearised"][-1]
        lines += [f"Finite CNNs ({f0['model']}, float32, centred outputs, {f0['n_train']} training points, full-batch GD "
                  f"with eta = {f0['learning_rate']:.3g} for {f0['steps']} steps, seeds "
                  f"{', '.join(str(s) for s in cfg['seeds'])}) against the linearised infinite-width network after the "
                  f"same steps (test accuracy {lin['accuracy']:.3f}, MSE {lin['mse']:.4f}); the NTK regression (t = "
                  f"infinity) of the same kernel reaches {f0['ntk_regression_gd_limit']['accuracy']:.3f}.", "",
                  "| channels | seeds | net acc (mean) | sd | net MSE | relative gap to NTK | train s per net |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for b in r["finite_by_width"]:
            lines.append(f"| {b['width']} | {b['seeds']} | {b['net_accuracy']:.3f} | {b['net_accuracy_sd']:.3f} | "
                         f"{b['net_mse']:.4f} | {b['relative_gap']:.4f} | {b['train_s']:.1f} |")
        lines.append("")
    lines += findings(r)
    lines += [f"Checks: every kernel accuracy at least {num(c['min_margin_over_chance_in_se'], 3)} standard errors above "
              f"chance (ok: {c['kernels_above_chance']}); finite-CNN gap ~ width^{num(c['gap_slope'], 3)} "
              f"(ok: {c['gap_shrinks_with_width']}); widest CNN minus linearised NTK accuracy "
              f"{num(c['widest_net_minus_ntk_accuracy'], 3)}.", ""]
    lines += precision_lines(r.get("precision"))
    lines += ["![conv kernel regression](conv_kernel_regression.png)", ""]
    return "\n".join(lines)
