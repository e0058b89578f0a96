"""Kernel regression solvers: rmtjax vs scikit-learn and GPJax at n = 1k..4k, and rmtjax's
matrix-free conjugate gradients beyond.

One command (from the repository root, with the project's Python; GPJax from the ``bench``
extra, ``pip install -e ".[bench]"``, is skipped with a note when it is missing):

    .venv/bin/python benchmarks/kernel_regression_solvers.py            # n = 1000, 2000, 4000; CG to 10^4
    .venv/bin/python benchmarks/kernel_regression_solvers.py --quick    # n = 500, 1000; CG to 2000
    .venv/bin/python benchmarks/kernel_regression_solvers.py --large-n 20000 50000 100000  # section 4 only

What it measures, float64, one XLA host device, in one process (same machine, same run; the
1-minute load average is recorded with each section):

1. **Precomputed NNGP kernel** (MNIST 5k subset, images standardized, centred one-hot targets,
   10 outputs; ReLU depth 3, ``sigma_w^2 = 2``, ``sigma_b = 0.1``; ridge ``lambda`` = 1e-4 x the
   mean diagonal, absolute): the posterior mean on 1000 test images by
   ``rmtjax.regression.gp_inference`` (Cholesky) and by scikit-learn's
   ``KernelRidge(kernel="precomputed")`` (LAPACK ``solve``, assume_a="pos"), given the same kernel
   matrices; best of 2 calls each; predictions must agree to 1e-8 (max abs difference over max
   abs value). The kernel's own time (``rmtjax.kernels.kernel``) is reported separately. Then
   ``rmtjax.regression.kernel_ridge_cg`` from the raw inputs (it recomputes the kernel in tiles
   at every step; Nystrom rank 256; float64 and ``storage="float32"``): its time and its
   predictions against the dense solve.
2. **RBF kernel, one output** (the first class's centred indicator; lengthscale sqrt(d) on the
   standardized images, noise variance 1e-2): exact GP posterior means of
   ``gpjax`` (``ConjugateModel.condition``, Cholesky with its jitter 1e-6 added to the prior
   covariance), scikit-learn's ``GaussianProcessRegressor`` (fixed kernel, ``optimizer=None``,
   ``alpha`` = noise) and ``rmtjax.regression.gp_inference`` on the RBF Gram matrix computed with
   ``jnp``; times (best of 2; GPJax's conditioning and prediction jitted, compile excluded) and
   agreement (GPJax's jitter moves its answer by about 1e-6 relative: its tolerance is 1e-4).
3. **Conjugate gradients alone beyond the dense sizes** (Gaussian-mixture data, d = 32, 2
   classes, ReLU depth 3, ridge 1e-2, rank 512): time, steps and relative residual for n = 2k..10k
   (``--cg-n`` for more), with predictions on 500 test points against a dense solve (Cholesky of
   the kernel from ``rmtjax.kernels.kernel``) where it fits (n <= ``--dense-max``, default 10^4).

4. **At scale** (``--large-n``, run on its own: the other sections are skipped): CG with float32
   storage on Gaussian-mixture data (d = 32, means +-1.5 e_1, unit variance, one-hot targets),
   ReLU depth 1 (``sigma_w^2 = 2``, ``sigma_b = 0.1``), ridge 0.1, Nystrom rank 1024, stopping at
   relative residual 1e-6: the time of one solve (compile included), its steps, the recomputed
   relative residual, the test accuracy on 2000 points against the Bayes accuracy
   Phi(1.5) = 0.933 of the mixture, and, where n <= ``--dense-max``, the predictions against a
   float64 dense Cholesky solve (LAPACK with one BLAS thread beyond n = 12,000: see
   ``THREADED_CHOLESKY_MAX``). Writes ``kernel_regression_solvers_large.json`` and ``.md``.

Writes ``<out>/kernel_regression_solvers.json`` and ``.md`` (``--out`` defaults to
``benchmarks/results``, ``benchmarks/results/quick`` with ``--quick``).
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

import numpy as np
from kernels_vs_neural_tangents import host_info  # the script folder is on sys.path

HERE = pathlib.Path(__file__).resolve().parent
FULL = dict(n=(1000, 2000, 4000), n_test=1000, cg_n=(2000, 5000, 10000))
QUICK = dict(n=(500, 1000), n_test=500, cg_n=(1000, 2000))
TOL, TOL_GPJAX = 1e-8, 1e-4
REPEATS = 2


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _best(fn, repeats=REPEATS):
    """The result of ``fn()`` and the best wall time of ``repeats`` calls (results blocked)."""
    import jax

    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return out, min(times)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def precomputed_nngp(n: int, n_test: int, seed: int) -> dict:
    import jax.numpy as jnp
    from sklearn.kernel_ridge import KernelRidge

    from rmtjax.activations import Relu
    from rmtjax.data import mnist
    from rmtjax.kernels import FullyConnected, kernel
    from rmtjax.regression import gp_inference, kernel_ridge_cg

    ds = mnist(n, n_test, seed=seed, center_targets=True)
    net = FullyConnected(3, math.sqrt(2.0), 0.1, Relu())
    load = _load()
    (k_train, k_test), t_kernel = _best(lambda: (kernel(ds.x_train, None, net).nngp,
                                                 kernel(ds.x_test, ds.x_train, net).nngp))
    ridge = 1e-4 * float(jnp.mean(jnp.diag(k_train)))
    pred, t_rmt = _best(lambda: gp_inference(k_train, ds.y_train, diag_reg=ridge, diag_reg_absolute_scale=True)(
        "nngp", k_test_train=k_test))
    Kn, Ktn, yn = (np.asarray(a, np.float64) for a in (k_train, k_test, ds.y_train))
    pred_sk, t_sk = _best(lambda: KernelRidge(alpha=ridge, kernel="precomputed").fit(Kn, yn).predict(Ktn))
    rec = {"section": "precomputed", "n": n, "n_test": n_test, "ridge": ridge, "load_before": load,
           "kernel_s": t_kernel, "rmtjax_s": t_rmt, "sklearn_s": t_sk, "rel_diff_sklearn": _rel(pred_sk, pred),
           "accuracy": float(np.mean(np.argmax(np.asarray(pred), 1) == np.argmax(np.asarray(ds.y_test), 1)))}
    for storage in (None, "float32"):
        model, t_cg = _best(lambda: kernel_ridge_cg(ds.x_train, ds.y_train, net, ridge, rank=256, tile=256,
                                                    storage=storage))
        key = "cg" if storage is None else "cg_float32"
        rec[f"{key}_s"] = t_cg
        rec[f"{key}_steps"] = int(model.steps)
        rec[f"{key}_rel_diff"] = _rel(model(ds.x_test), pred)
    rec["ok"] = rec["rel_diff_sklearn"] <= TOL
    return rec


def rbf_one_output(n: int, n_test: int, seed: int) -> dict:
    import jax
    import jax.numpy as jnp
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF

    from rmtjax.data import mnist
    from rmtjax.regression import gp_inference

    ds = mnist(n, n_test, seed=seed, center_targets=True)
    x, xt = ds.x_train, ds.x_test
    y = ds.y_train[:, :1]
    d = x.shape[1]
    ell, noise = math.sqrt(d), 1e-2

    def rbf(a, b):
        sq = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T
        return jnp.exp(-0.5 * jnp.maximum(sq, 0.0) / ell**2)

    load = _load()
    K, Kt = rbf(x, x), rbf(xt, x)
    pred, t_rmt = _best(lambda: gp_inference(K, y, diag_reg=noise, diag_reg_absolute_scale=True)(
        "nngp", k_test_train=Kt))
    xn, yn, xtn = (np.asarray(a, np.float64) for a in (x, y, xt))
    gpr = GaussianProcessRegressor(kernel=RBF(length_scale=ell, length_scale_bounds="fixed"), alpha=noise,
                                   optimizer=None, normalize_y=False)
    pred_sk, t_sk = _best(lambda: gpr.fit(xn, yn).predict(xtn))
    rec = {"section": "rbf", "n": n, "n_test": n_test, "lengthscale": ell, "noise": noise, "load_before": load,
           "rmtjax_s": t_rmt, "rmtjax_incl_gram_s": None, "sklearn_s": t_sk,
           "rel_diff_sklearn": _rel(np.reshape(pred_sk, (-1, 1)), pred)}
    (_, t_gram) = _best(lambda: (rbf(x, x), rbf(xt, x)))
    rec["rmtjax_incl_gram_s"] = t_rmt + t_gram
    try:
        import gpjax as gpx
    except ImportError:
        rec["gpjax"] = "not installed (pip install -e '.[bench]')"
    else:
        prior = gpx.gps.Prior(mean_function=gpx.mean_functions.Zero(), kernel=gpx.kernels.RBF(lengthscale=ell,
                                                                                               variance=1.0))
        model = prior * gpx.likelihoods.Gaussian(obs_stddev=math.sqrt(noise))
        data = gpx.Dataset(X=x, y=y)

        @jax.jit
        def predict(data, xt):
            return model.condition(data)(xt).mean

        jax.block_until_ready(predict(data, xt))  # compile excluded
        pred_gp, t_gp = _best(lambda: predict(data, xt))
        rec["gpjax"] = gpx.__version__
        rec["gpjax_s"] = t_gp
        rec["rel_diff_gpjax"] = _rel(np.reshape(pred_gp, (-1, 1)), pred)
    rec["ok"] = rec["rel_diff_sklearn"] <= 1e-6 and rec.get("rel_diff_gpjax", 0.0) <= TOL_GPJAX
    return rec


def _mixture(n: int, n_test: int, d: int, seed: int):
    """Sections 3 and 4: two Gaussian classes in ``d`` dimensions, means +-1.5 e_1, unit variance."""
    import jax
    import jax.numpy as jnp

    from rmtjax.data import gaussian_mixture_dataset

    means = np.zeros((2, d))
    means[0, 0], means[1, 0] = 1.5, -1.5
    return gaussian_mixture_dataset(jax.random.key(seed), jnp.asarray(means), 1.0, n_train=n, n_test=n_test)


# The largest n at which LAPACK's Cholesky ran with 2 BLAS threads here: the threaded dpotrf of the
# OpenBLAS in the numpy and scipy wheels (0.3.30/0.3.31) segfaults from n ~ 16,300 with 2 threads on
# the 2-core machine (measured 2026-12-07: numpy, scipy and jax alike; 12,000 ran; fine with one thread;
# OpenBLAS issue #2562 reports the same with 2 threads at n = 32768). Beyond it, one thread.
THREADED_CHOLESKY_MAX = 12000


def _dense_predictions(ds, net, ridge: float):
    """The float64 reference: predictions on ``ds.x_test`` of a dense Cholesky solve, and its time."""
    import jax
    import jax.numpy as jnp
    import threadpoolctl

    from rmtjax.kernels import kernel

    n = ds.x_train.shape[0]
    t = time.perf_counter()
    K = kernel(ds.x_train, None, net).nngp
    with threadpoolctl.threadpool_limits(1 if n > THREADED_CHOLESKY_MAX else None, user_api="blas"):
        factor = jax.block_until_ready(jax.scipy.linalg.cho_factor(K + ridge * jnp.eye(n)))
        alpha = jax.block_until_ready(jax.scipy.linalg.cho_solve(factor, ds.y_train))
    dense = np.asarray(kernel(ds.x_test, ds.x_train, net).nngp @ alpha, np.float64)
    return dense, time.perf_counter() - t


def cg_scaling(n: int, dense_max: int, seed: int) -> dict:
    import jax

    from rmtjax.activations import Relu
    from rmtjax.kernels import FullyConnected
    from rmtjax.regression import kernel_ridge_cg

    d = 32
    ds = _mixture(n, 500, d, seed)
    net = FullyConnected(3, math.sqrt(2.0), 0.1, Relu())
    ridge = 1e-2
    load = _load()
    rec = {"section": "cg", "n": n, "d": d, "ridge": ridge, "rank": 512, "load_before": load}
    for storage in (None, "float32"):
        t = time.perf_counter()
        model = kernel_ridge_cg(ds.x_train, ds.y_train, net, ridge, rank=512, tile=512, storage=storage)
        jax.block_until_ready(model.weights)
        key = "cg" if storage is None else "cg_float32"
        rec[f"{key}_s_incl_compile"] = time.perf_counter() - t
        rec[f"{key}_steps"] = int(model.steps)
        rec[f"{key}_residual"] = float(model.relative_residual)
        rec[f"{key}_pred"] = np.asarray(model(ds.x_test), np.float64)
    if n <= dense_max:
        dense, rec["dense_s_incl_compile"] = _dense_predictions(ds, net, ridge)
        for key in ("cg", "cg_float32"):
            rec[f"{key}_rel_diff"] = _rel(rec[f"{key}_pred"], dense)
    for key in ("cg", "cg_float32"):
        del rec[f"{key}_pred"]
    return rec


LARGE = dict(d=32, depth=1, ridge=0.1, rank=1024, rtol=1e-6, n_test=2000)


def cg_large(n: int, dense_max: int, seed: int) -> dict:
    """Section 4: one matrix-free solve at size ``n`` (see the module docstring)."""
    import jax

    from rmtjax.activations import Relu
    from rmtjax.kernels import FullyConnected
    from rmtjax.regression import kernel_ridge_cg

    c = LARGE
    ds = _mixture(n, c["n_test"], c["d"], seed)
    net = FullyConnected(c["depth"], math.sqrt(2.0), 0.1, Relu())
    rec = {"section": "cg_large", "n": n, **c, "storage": "float32", "load_before": _load()}
    t = time.perf_counter()
    model = kernel_ridge_cg(ds.x_train, ds.y_train, net, c["ridge"], rank=c["rank"], rtol=c["rtol"], storage="float32")
    jax.block_until_ready(model.weights)
    rec["cg_s_incl_compile"] = time.perf_counter() - t
    rec["steps"] = int(model.steps)
    rec["residual"] = float(model.relative_residual)
    t = time.perf_counter()
    pred = np.asarray(model(ds.x_test), np.float64)
    rec["predict_s"] = time.perf_counter() - t
    labels = np.argmax(np.asarray(ds.y_test), axis=1)
    rec["test_accuracy"] = float(np.mean(np.argmax(pred, axis=1) == labels))
    rec["bayes_accuracy"] = 0.5 * (1 + math.erf(1.5 / math.sqrt(2)))
    if n <= dense_max:
        dense, rec["dense_s_incl_compile"] = _dense_predictions(ds, net, c["ridge"])
        rec["rel_diff_dense"] = _rel(pred, dense)
    rec["load_after"] = _load()
    return rec


def _markdown_large(doc: dict) -> str:
    h, c = doc["host"], LARGE
    lines = ["# Kernel ridge regression by matrix-free conjugate gradients at scale", "",
             f"Host: {h['cpu']}, {h['cores']} cores, {h['mem_total_mib']} MiB. Generated {doc['generated']} by "
             f"`benchmarks/kernel_regression_solvers.py --large-n {' '.join(str(r['n']) for r in doc['records'])}`; "
             f"versions {doc['versions']}. 1-minute load average before and after each row (on 2 cores: above 2 "
             "means other work shared the machine).", "",
             f"`rmtjax.regression.kernel_ridge_cg(..., storage=\"float32\")`: Gaussian mixture, d = {c['d']}, means "
             f"+-1.5 e_1, unit variance, one-hot targets; ReLU depth {c['depth']} NNGP (sigma_w^2 = 2, sigma_b = 0.1); "
             f"ridge {c['ridge']}; Nystrom rank {c['rank']}; stop at relative residual {c['rtol']:g}. The kernel "
             "(n^2 entries) is never stored: every CG step recomputes it tile by tile in float32 and sums in "
             "float64. Time of one solve, compile included. Test accuracy on "
             f"{c['n_test']} points; the mixture's Bayes accuracy is Phi(1.5) = 0.933. Where n <= --dense-max, the "
             "predictions against a float64 dense Cholesky solve (max abs difference over max abs value).", "",
             "| n | solve (s) | steps | s / step | residual | test acc. | vs dense | dense (s) | predict (s) | load |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["records"]:
        dd = f"{r['rel_diff_dense']:.1e}" if "rel_diff_dense" in r else "-"
        ds_ = f"{r['dense_s_incl_compile']:.0f}" if "dense_s_incl_compile" in r else "-"
        lines.append(f"| {r['n']} | {r['cg_s_incl_compile']:.0f} | {r['steps']} | "
                     f"{r['cg_s_incl_compile'] / max(r['steps'], 1):.1f} | {r['residual']:.1e} | "
                     f"{r['test_accuracy']:.3f} | {dd} | {ds_} | {r['predict_s']:.1f} | "
                     f"{r['load_before']} / {r['load_after']} |")
    lines += ["", f"Every solve reached its tolerance: {'yes' if doc['ok'] else 'NO'}.", ""]
    return "\n".join(lines)


def _markdown(doc: dict) -> str:
    h = doc["host"]
    lines = ["# Kernel regression solvers: rmtjax vs scikit-learn and GPJax, and conjugate gradients beyond", "",
             f"Host: {h['cpu']}, {h['cores']} cores, {h['mem_total_mib']} MiB. Generated {doc['generated']} by "
             f"`benchmarks/kernel_regression_solvers.py{' --quick' if doc['quick'] else ''}`; float64, one XLA host "
             f"device; versions {doc['versions']}. 1-minute load average before each row in its last column (on 2 "
             "cores: above 2 means other work shared the machine and every time is inflated).", "",
             "## 1. Precomputed NNGP kernel (MNIST, ReLU depth 3, 10 outputs, ridge 1e-4 x mean diagonal)", "",
             "Times are best of 2 calls. rmtjax = `gp_inference` (Cholesky + prediction); scikit-learn = "
             "`KernelRidge(kernel='precomputed')` fit + predict on the same matrices; CG = `kernel_ridge_cg` from the "
             "raw inputs (recomputes the kernel in tiles every step; rank 256), its predictions against the "
             "dense solve.", "",
             "| n | kernel (s) | rmtjax solve (s) | sklearn (s) | sklearn / rmtjax | pred. diff | CG (s) | CG steps | "
             "CG diff | CG f32 storage (s) | f32 diff | test acc. | load |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["records"]:
        if r["section"] == "precomputed":
            lines.append(f"| {r['n']} | {r['kernel_s']:.3f} | {r['rmtjax_s']:.3f} | {r['sklearn_s']:.3f} | "
                         f"{r['sklearn_s'] / r['rmtjax_s']:.1f}x | {r['rel_diff_sklearn']:.1e} | {r['cg_s']:.2f} | "
                         f"{r['cg_steps']} | {r['cg_rel_diff']:.1e} | {r['cg_float32_s']:.2f} | "
                         f"{r['cg_float32_rel_diff']:.1e} | {r['accuracy']:.3f} | {r['load_before']} |")
    lines += ["", "## 2. RBF kernel, one output (exact GP posterior mean)", "",
              "rmtjax = `gp_inference` on the RBF Gram matrix (its time without / with computing the Gram matrices); "
              "scikit-learn = `GaussianProcessRegressor` (fixed kernel) fit + predict; GPJax = "
              "`ConjugateModel.condition(data)(x_test).mean`, jitted, compile excluded.", "",
              "| n | rmtjax (s) | with Gram (s) | sklearn (s) | GPJax (s) | sklearn diff | GPJax diff | load |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["records"]:
        if r["section"] == "rbf":
            gp_s = f"{r['gpjax_s']:.3f}" if "gpjax_s" in r else "-"
            gp_d = f"{r['rel_diff_gpjax']:.1e}" if "rel_diff_gpjax" in r else str(r.get("gpjax"))
            lines.append(f"| {r['n']} | {r['rmtjax_s']:.3f} | {r['rmtjax_incl_gram_s']:.3f} | {r['sklearn_s']:.3f} | "
                         f"{gp_s} | {r['rel_diff_sklearn']:.1e} | {gp_d} | {r['load_before']} |")
    lines += ["", "## 3. Conjugate gradients beyond the dense sizes (Gaussian mixture, d = 32, ReLU depth 3, ridge "
              "1e-2, rank 512)", "",
              "Times include compilation (one solve per n). Predictions on 500 test points against a dense Cholesky "
              "solve where it fits.", "",
              "| n | CG f64 (s) | steps | residual | diff | CG f32 storage (s) | steps | residual | diff | dense (s) | "
              "load |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["records"]:
        if r["section"] == "cg":
            dd = lambda k: f"{r[k]:.1e}" if k in r else "-"  # noqa: E731
            dense = f"{r['dense_s_incl_compile']:.1f}" if "dense_s_incl_compile" in r else "-"
            lines.append(f"| {r['n']} | {r['cg_s_incl_compile']:.1f} | {r['cg_steps']} | {r['cg_residual']:.1e} | "
                         f"{dd('cg_rel_diff')} | {r['cg_float32_s_incl_compile']:.1f} | {r['cg_float32_steps']} | "
                         f"{r['cg_float32_residual']:.1e} | {dd('cg_float32_rel_diff')} | {dense} | "
                         f"{r['load_before']} |")
    lines += ["", f"All agreement checks passed: {'yes' if doc['ok'] else 'NO'} (sklearn to {TOL:g} on the precomputed "
              f"kernel, 1e-6 on RBF; GPJax to {TOL_GPJAX:g}).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n = 500, 1000; CG to 2000")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--cg-n", type=int, nargs="+", default=None, help="sizes of the CG section")
    p.add_argument("--large-n", type=int, nargs="+", default=None,
                   help="run only section 4 (CG at scale) at these sizes")
    p.add_argument("--dense-max", type=int, default=None,
                   help="largest n with a dense reference solve (default 10^4; 2x10^4 with --large-n)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    cfg = dict(QUICK if args.quick else FULL)
    if args.cg_n:
        cfg["cg_n"] = tuple(args.cg_n)
    out = args.out or (HERE / "results" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    if args.large_n:
        return _main_large(args, out)
    dense_max = 10000 if args.dense_max is None else args.dense_max
    records = []
    for n in cfg["n"]:
        records.append(precomputed_nngp(n, cfg["n_test"], args.seed))
        print(json.dumps(records[-1]), flush=True)
        records.append(rbf_one_output(n, cfg["n_test"], args.seed))
        print(json.dumps(records[-1]), flush=True)
    for n in cfg["cg_n"]:
        records.append(cg_scaling(n, dense_max, args.seed))
        print(json.dumps(records[-1]), flush=True)
    versions = _versions()
    doc = {"generated": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
           "host": host_info(), "versions": versions, "config": cfg, "records": records,
           "ok": all(r.get("ok", True) for r in records)}
    (out / "kernel_regression_solvers.json").write_text(json.dumps(doc, indent=1))
    (out / "kernel_regression_solvers.md").write_text(_markdown(doc))
    print(f"wrote {out / 'kernel_regression_solvers.md'}")
    return 0 if doc["ok"] else 1


def _versions() -> dict:
    import jax
    import sklearn

    import rmtjax

    versions = {"rmtjax": rmtjax.__version__, "jax": jax.__version__, "scikit-learn": sklearn.__version__}
    try:
        import gpjax

        versions["gpjax"] = gpjax.__version__
    except ImportError:
        pass
    return versions


def _main_large(args, out: pathlib.Path) -> int:
    dense_max = 20000 if args.dense_max is None else args.dense_max
    records = []
    for n in args.large_n:
        records.append(cg_large(n, dense_max, args.seed))
        print(json.dumps(records[-1]), flush=True)
    doc = {"generated": datetime.datetime.now().isoformat(timespec="seconds"), "host": host_info(),
           "versions": _versions(), "config": LARGE, "records": records,
           "ok": all(r["residual"] <= LARGE["rtol"] for r in records)}
    (out / "kernel_regression_solvers_large.json").write_text(json.dumps(doc, indent=1))
    (out / "kernel_regression_solvers_large.md").write_text(_markdown_large(doc))
    print(f"wrote {out / 'kernel_regression_solvers_large.md'}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
