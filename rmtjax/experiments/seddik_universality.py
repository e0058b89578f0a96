r"""Universality of Gram matrices of concentrated (GAN-like) data (Seddik, Louart, Tamaazousti &
Couillet, ICML 2020, Thm. 1 and Fig. 2-4).

``rmtjax reproduce seddik-universality`` draws :math:`k = 3` classes of *generated* data
:math:`x = g(m_c + z) - \bar\mu`, :math:`z \sim \mathcal N(0, I_{d_0})`, from one random deep
generator :math:`g` (LeakyReLU hidden layer, tanh output, every weight projected to
:math:`\sigma_1(W) \le \sigma_*`, so :math:`\|g\|_{\rm Lip}` is bounded independently of :math:`p`;
:mod:`rmtjax.data._concentrated`), with class means :math:`\mu_c` and covariances :math:`\Sigma_c`
estimated once by Monte Carlo, and :math:`\bar\mu = \frac1k\sum_c\mu_c` removed so that the
class structure, not the common mean, makes the spikes. Its *Gaussian twin* is the mixture
:math:`\mathcal N(\mu_c, \Sigma_c)`. For both, over many independent draws of
:math:`X \in \mathbb R^{p \times n}` (``n_per_class`` columns per class):

1. the eigenvalues of :math:`G = X^\top X/p`: pooled histograms against the limiting density of
   :func:`rmtjax.rmt._gram.gram_spectral_density` (Kolmogorov distances between the three);
2. :math:`\frac1n\operatorname{tr}(G + zI)^{-1}` against :func:`rmtjax.rmt._gram.gram_trace_resolvent`
   (within 5 standard errors plus the theorem's :math:`O(1/p)`);
3. the isolated eigenvalues and the class alignment
   :math:`\sum_s (j_a^\top v_s)^2/n_a` of the leading eigenvectors against
   :func:`rmtjax.rmt._gram.gram_spikes`;
4. the test accuracy of a ridge (least-squares) classifier trained on the :math:`n` columns
   and tested on fresh draws.

``ok`` requires generated and Gaussian data to agree within Monte-Carlo error on every
statistic, and the deterministic equivalent to predict both. The run resumes from
``resume.json`` (per-draw statistics saved as they come; :class:`rmtjax.experiments._resume.ResumeFile`).
In a float32 run the report also gives the largest differences of the deterministic equivalent
(resolvent traces, density, atom at 0) to float64 from the same class moments. Writes
``seddik_universality.png``, ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..activations import LeakyRelu, Tanh
from ..data._concentrated import concentrated_moments, random_generator
from ..rmt._frechet import frechet_distance
from ..rmt._gram import GramMixture, gram_spectral_density, gram_spikes, gram_trace_resolvent
from ._common import check_seed, config_dict, dtype_name, number, positive_int, versions
from ._output import check_out_dir, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "seddik-universality"
K = 3
Z_GRID = (0.5, 1.0, 2.0)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        p: data dimension; n_per_class: columns per class (``n = 3 n_per_class``); latent_dim, hidden:
        the generator; draws: independent draws of X (``>= 2``); n_moments: Monte-Carlo samples per
        class for the class moments (``> p``); n_test_per_class: test points of the ridge classifier;
        latent_scale: distance of the latent class means; sigma_star: spectral-norm bound of every
        layer; ridge: ridge parameter (``> 0``); grid: points of the theory density (``>= 8``);
        theory_spikes: compute the spikes and alignments of the deterministic equivalent (slow).
    """

    p: int = 512
    n_per_class: int = 256
    latent_dim: int = 128
    hidden: int = 512
    draws: int = 40
    n_moments: int = 131072
    n_test_per_class: int = 1000
    latent_scale: float = 3.0
    sigma_star: float = 2.0
    ridge: float = 0.1
    grid: int = 120
    theory_spikes: bool = True

    def __post_init__(self):
        positive_int(self.p, "p", lo=2)
        positive_int(self.n_per_class, "n_per_class", lo=2)
        positive_int(self.latent_dim, "latent_dim", lo=K)
        positive_int(self.hidden, "hidden", lo=1)
        positive_int(self.draws, "draws", lo=2)
        positive_int(self.n_moments, "n_moments", lo=self.p + 1)
        positive_int(self.n_test_per_class, "n_test_per_class", lo=1)
        number(self.latent_scale, "latent_scale", lo=0, lo_open=True)
        number(self.sigma_star, "sigma_star", lo=0, lo_open=True)
        number(self.ridge, "ridge", lo=0, lo_open=True)
        positive_int(self.grid, "grid", lo=8)
        if not isinstance(self.theory_spikes, bool):
            raise ValueError(f"theory_spikes must be True or False, got {self.theory_spikes!r}")


FULL = Config()
QUICK = Config(p=64, n_per_class=48, latent_dim=16, hidden=64, draws=16, n_moments=8192, n_test_per_class=200,
               latent_scale=2.5, grid=64, theory_spikes=False)


def _theory(covs, means, nl, x_grid, eta):
    """The deterministic equivalent's traces, density and atom at 0 (a float32 run compares them with
    float64 from the same class moments)."""
    model = GramMixture(covs, means, n_per_class=(nl,) * K)
    dens = gram_spectral_density(model, x_grid, eta=eta)
    traces = jnp.stack([gram_trace_resolvent(model, jnp.asarray(z, covs.dtype)) for z in Z_GRID])
    return {"(1/n) tr (G + z)^-1": traces, "density": dens.density, "atom at 0": dens.zero_mass}


@eqx.filter_jit
def _generator(cfg, key):
    """The generator and the latent class means, in one compiled program (eagerly, each draw,
    projection and check compiles its own)."""
    kg, kl = jax.random.split(key)
    g = random_generator(kg, (cfg["latent_dim"], cfg["hidden"], cfg["p"]), activation=LeakyRelu(0.2),
                         final_activation=Tanh(), weight_std=2.0, bias_std=0.3, sigma_star=cfg["sigma_star"])
    xi, _ = jnp.linalg.qr(jax.random.normal(kl, (cfg["latent_dim"], K)))
    return g, cfg["latent_scale"] * xi.T  # (K, d0) orthogonal latent class means


@eqx.filter_jit
def _draw_pair(g, latent_means, mbar, means, chol, key, nl):
    """One draw of generated data and one of its Gaussian twin, each (K * nl, p), ordered by class."""
    kg, kn = jax.random.split(key)
    d0, p = g.latent_dim, g.out_dim
    z = jax.random.normal(kg, (K, nl, d0))
    xg = jax.vmap(lambda m, zc: g(m[None, :] + zc))(latent_means, z).reshape(K * nl, p) - mbar[None, :]
    e = jax.random.normal(kn, (K, nl, p))
    xn = (means[:, None, :] + jnp.einsum("lij,lnj->lni", chol, e)).reshape(K * nl, p)
    return xg, xn


@eqx.filter_jit
def _statistics(x_train, x_test, nl, nt, ridge):
    n, p = x_train.shape
    G = x_train @ x_train.T / p
    w, v = jnp.linalg.eigh(G)
    labels = jnp.repeat(jnp.arange(K), nl, total_repeat_length=K * nl)
    J = (labels[:, None] == jnp.arange(K)[None, :]).astype(x_train.dtype)
    align = jnp.sum((J.T @ v[:, -(K - 1):]) ** 2, axis=1) / nl  # (K,) summed over the K-1 spikes
    z = jnp.asarray(Z_GRID, x_train.dtype)
    trace = jnp.mean(1.0 / (w[None, :] + z[:, None]), axis=1)
    # ridge classifier on centred one-hot targets
    Y = J - 1.0 / K
    A = x_train.T @ x_train / n + ridge * jnp.eye(p, dtype=x_train.dtype)
    W = jnp.linalg.solve(A, x_train.T @ Y / n)
    test_labels = jnp.repeat(jnp.arange(K), nt, total_repeat_length=K * nt)
    acc = jnp.mean(jnp.argmax(x_test @ W, axis=1) == test_labels)
    return w, align, trace, acc


def _ks(a, b):
    """Kolmogorov distance between two samples."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))


def _ks_theory(sample, x, cdf):
    s = np.sort(sample)
    emp_hi = np.arange(1, len(s) + 1) / len(s)
    th = np.interp(s, x, cdf)
    return float(max(np.max(np.abs(emp_hi - th)), np.max(np.abs(emp_hi - 1 / len(s) - th))))


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes the figure and reports into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the finished draws.
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed, in ``[0, 2**32 - 1]``.
        progress: show progress bars.
        config: explicit sizes (overrides ``quick``).
    """
    from tqdm.auto import tqdm

    conf = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(conf, Config):
        raise ValueError(f"config must be a seddik_universality.Config, got {type(conf).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    cfg = config_dict(conf)
    resume = ResumeFile(out, NAME, {"config": cfg, "seed": seed, "dtype": dtype_name()})
    p, nl, nt = cfg["p"], cfg["n_per_class"], cfg["n_test_per_class"]
    n = K * nl
    key = jax.random.key(seed)
    k_gen, k_mom, k_draw = jax.random.split(key, 3)
    bar = tqdm(total=2, desc="seddik-universality: setup", disable=not progress)

    bar.set_postfix_str("generator and Monte-Carlo moments")
    g, lm = _generator(cfg, k_gen)
    mom = concentrated_moments(k_mom, g, lm, n_samples=cfg["n_moments"], batch_size=4096)
    mbar = jnp.mean(mom.means, 0)
    means, covs = mom.means - mbar[None, :], mom.covariances
    chol = jnp.linalg.cholesky(covs)
    pairs = [(a, b) for a in range(K) for b in range(a + 1, K)]
    ia, ib = np.array(pairs).T
    mh, ch = np.asarray(means), np.asarray(covs)
    fd = np.asarray(frechet_distance(mh[ia], ch[ia], mh[ib], ch[ib]))  # every pair in one (batched) call
    fid = {f"{a}-{b}": float(d) for (a, b), d in zip(pairs, fd)}
    bar.update()

    bar.set_postfix_str("Monte-Carlo draws")
    bar.update()
    bar.close()
    keys = jax.random.split(k_draw, cfg["draws"])
    done = sum(f"draw|{i}" in resume for i in range(cfg["draws"]))
    for i in tqdm(range(cfg["draws"]), desc="seddik-universality: draws", disable=not progress, initial=done,
                  total=cfg["draws"]):
        if f"draw|{i}" in resume:
            continue
        k_train, k_test = jax.random.split(keys[i])
        train = _draw_pair(g, lm, mbar, means, chol, k_train, nl)
        test = _draw_pair(g, lm, mbar, means, chol, k_test, nt)
        draw = {}
        for name, xtr, xte in (("gen", train[0], test[0]), ("gauss", train[1], test[1])):
            w, align, trace, acc = _statistics(xtr, xte, nl, nt, jnp.asarray(cfg["ridge"], xtr.dtype))
            draw[name] = {"eig": np.round(np.asarray(w, np.float64), 7), "align": align, "trace": trace,
                          "acc": float(acc)}
        resume.put(f"draw|{i}", draw)
    rows = {name: [resume[f"draw|{i}"][name] for i in range(cfg["draws"])] for name in ("gen", "gauss")}


    # ---------------------------------------------------------------- deterministic equivalent
    bar = tqdm(total=3, desc="seddik-universality: theory", disable=not progress)
    n_bulk = min(n, p)  # nonzero eigenvalues of G (n > p: an atom of mass 1 - p/n at 0)
    bulk_max = max(float(np.max(np.array(r["eig"])[n - n_bulk: n - (K - 1)])) for nm in rows for r in rows[nm])
    model = GramMixture(covs, means, n_per_class=(nl,) * K)
    bar.set_postfix_str("spikes")
    spikes = gram_spikes(model) if cfg["theory_spikes"] else None
    bar.update()
    bar.set_postfix_str("density")
    # the grid spans the observed bulk (where to look); the density itself uses the moments only
    edge = float(spikes.edge) if spikes is not None else 1.02 * bulk_max
    # quadratic spacing: fine near 0, where covariances with many small eigenvalues put a sharp peak
    x_grid = 1.1 * max(edge, bulk_max) * np.linspace(0.0, 1.0, cfg["grid"] + 1)[1:] ** 2
    # heights proportional to x: an absolute eta = 1e-3 edge leaked 2.5% of the mass of the sharp peak
    # near 0 to x < 0 (Lorentzian tails), which alone gave a Kolmogorov distance of 0.03 at p = 512
    eta = jnp.asarray(1e-2 * x_grid + 1e-6 * edge, float)
    dens = gram_spectral_density(model, jnp.asarray(x_grid, float), eta=eta)
    density = np.maximum(np.asarray(dens.density, np.float64), 0.0)
    zero_mass = float(dens.zero_mass)
    bar.update()
    bar.set_postfix_str("resolvent traces")
    tr_theory = [float(gram_trace_resolvent(model, z)) for z in Z_GRID]
    precision = float64_comparison(
        _theory, covs, means, nl, jnp.asarray(x_grid, float), eta,
        float32_values={"(1/n) tr (G + z)^-1": tr_theory, "density": np.asarray(dens.density, np.float64),
                        "atom at 0": zero_mass})
    bar.update()
    bar.close()

    # ---------------------------------------------------------------- comparisons
    if spikes is not None:
        n_spikes = int(np.sum(np.asarray(spikes.exists)))
        theory_spikes = np.asarray(spikes.eigenvalue)[:n_spikes]
        theory_align = np.sum(np.asarray(spikes.alignment)[:n_spikes], axis=0)  # (K,), summed over spikes
    else:  # quick mode: spikes counted from the data (K - 1 class-mean directions), no theory values
        n_spikes, theory_spikes, theory_align = K - 1, np.array([]), None
    stats: dict[str, Any] = {}
    pooled_bulk = {}
    for name in ("gen", "gauss"):
        R = rows[name]
        eig = np.array([r["eig"] for r in R])  # (draws, n) ascending
        D = len(R)
        se = lambda a: a.std(0, ddof=1) / np.sqrt(D)  # noqa: E731
        top = eig[:, ::-1][:, :K - 1]
        align = np.array([r["align"] for r in R])
        trace = np.array([r["trace"] for r in R])
        acc = np.array([r["acc"] for r in R])
        pooled_bulk[name] = eig[:, n - n_bulk: n - n_spikes].ravel()  # nonzero, spikes removed
        stats[name] = {"top_eigenvalues": top.mean(0).tolist(), "top_eigenvalues_se": se(top).tolist(),
                       "alignment": align.mean(0).tolist(), "alignment_se": se(align).tolist(),
                       "trace": trace.mean(0).tolist(), "trace_se": se(trace).tolist(),
                       "accuracy": float(acc.mean()), "accuracy_se": float(se(acc)), "draws": D}

    # theory CDF of the continuous part (the atom at 0 and the spikes removed on both sides)
    xs = np.concatenate([[0.0], x_grid])
    dd = np.concatenate([[0.0], density])
    cont = np.concatenate([[0.0], np.cumsum(0.5 * (dd[1:] + dd[:-1]) * np.diff(xs))])
    density_mass = float(cont[-1] + zero_mass)
    cdf = cont / max(cont[-1], 1e-300)
    ks = {"gen_vs_gauss": _ks(pooled_bulk["gen"], pooled_bulk["gauss"]),
          "gen_vs_theory": _ks_theory(pooled_bulk["gen"], xs, cdf),
          "gauss_vs_theory": _ks_theory(pooled_bulk["gauss"], xs, cdf)}

    def z_score(a, sa, b, sb):
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.sqrt(np.asarray(sa) ** 2 + np.asarray(sb) ** 2 + 1e-300)))

    sg, sn = stats["gen"], stats["gauss"]
    ks_tol = 0.08 if quick else 0.03
    checks: dict[str, Any] = {
        "ks_gen_vs_gauss": ks["gen_vs_gauss"], "ks_gen_vs_theory": ks["gen_vs_theory"],
        "ks_gauss_vs_theory": ks["gauss_vs_theory"], "ks_tolerance": ks_tol,
        "density_mass": density_mass,
        "z_trace_gen_vs_gauss": z_score(sg["trace"], sg["trace_se"], sn["trace"], sn["trace_se"]),
        "z_spikes_gen_vs_gauss": z_score(sg["top_eigenvalues"][:n_spikes], sg["top_eigenvalues_se"][:n_spikes],
                                         sn["top_eigenvalues"][:n_spikes], sn["top_eigenvalues_se"][:n_spikes]),
        "z_alignment_gen_vs_gauss": z_score(sg["alignment"], sg["alignment_se"], sn["alignment"], sn["alignment_se"]),
        "z_accuracy_gen_vs_gauss": z_score(sg["accuracy"], sg["accuracy_se"], sn["accuracy"], sn["accuracy_se"]),
        "n_spikes_theory": n_spikes,
    }
    # theory vs both: 5 SE plus the theorem's finite-p error (O(1/p) for traces, O(p^{-1/2}) for spikes)
    for name, s in (("gen", sg), ("gauss", sn)):
        checks[f"trace_error_{name}"] = float(np.max(np.abs(np.array(s["trace"]) - tr_theory)))
        checks[f"trace_ok_{name}"] = bool(np.all(np.abs(np.array(s["trace"]) - tr_theory)
                                                 <= 5 * np.array(s["trace_se"]) + 2.0 / p))
        if spikes is not None and n_spikes:
            rel = np.abs(np.array(s["top_eigenvalues"][:n_spikes]) - theory_spikes) / theory_spikes
            checks[f"spike_rel_error_{name}"] = float(rel.max())
            checks[f"spike_ok_{name}"] = bool(np.all(np.abs(np.array(s["top_eigenvalues"][:n_spikes]) - theory_spikes)
                                                     <= 5 * np.array(s["top_eigenvalues_se"][:n_spikes])
                                                     + 3.0 / np.sqrt(p) * theory_spikes))
        else:
            checks[f"spike_rel_error_{name}"], checks[f"spike_ok_{name}"] = None, spikes is None
        if theory_align is not None:
            err_al = np.abs(np.array(s["alignment"]) - theory_align)
            checks[f"alignment_error_{name}"] = float(err_al.max())
            checks[f"alignment_ok_{name}"] = bool(np.all(err_al <= 5 * np.array(s["alignment_se"]) + 3.0 / np.sqrt(p)))
        else:
            checks[f"alignment_error_{name}"], checks[f"alignment_ok_{name}"] = None, True
    universal = (ks["gen_vs_gauss"] < ks_tol and checks["z_trace_gen_vs_gauss"] < 5
                 and checks["z_spikes_gen_vs_gauss"] < 5 and checks["z_alignment_gen_vs_gauss"] < 5
                 and checks["z_accuracy_gen_vs_gauss"] < 5)
    checks["density_mass_ok"] = bool(abs(density_mass - 1.0) < (0.02 if quick else 0.01))
    predicted = (ks["gen_vs_theory"] < ks_tol and ks["gauss_vs_theory"] < ks_tol and checks["density_mass_ok"]
                 and all(checks[f"{c}_ok_{nm}"] for c in ("trace", "spike", "alignment") for nm in ("gen", "gauss")))
    checks["universality"] = bool(universal)
    checks["deterministic_equivalent_predicts_both"] = bool(predicted)
    checks["spikes_checked_against_theory"] = spikes is not None
    ok = bool(universal and predicted and n_spikes >= 1)
    lip = float(g.lipschitz_bound())
    report = {
        "name": "seddik-universality", "ok": ok, "quick": quick, "seed": seed,
        "seconds": time.perf_counter() - t0, "config": cfg,
        "generator": {"dims": list(g.dims), "layer_norms": np.asarray(g.layer_norms()).tolist(),
                      "lipschitz_bound": lip, "class_mean_distances": {
                          f"{a}-{b}": float(jnp.linalg.norm(means[a] - means[b])) for a in range(K) for b in range(a + 1, K)},
                      "covariance_norms": [float(jnp.linalg.norm(c, 2)) for c in covs],
                      "frechet_distance_between_classes": fid, "moment_samples_per_class": mom.n_samples},
        "theory": {"edge": edge, "spikes": theory_spikes.tolist(),
                   "alignment": None if theory_align is None else theory_align.tolist(),
                   "trace_z": list(Z_GRID), "trace": tr_theory, "zero_mass": zero_mass,
                   "density_x": x_grid.tolist(), "density": density.tolist()},
        "monte_carlo": stats, "kolmogorov": ks, "checks": checks, "precision": precision,
        "resume": resume.summary(), "dtype": dtype_name(),
        "summary": (f"p={p}, n={n}: KS(gen, gauss)={ks['gen_vs_gauss']:.4f}, KS(gen, theory)={ks['gen_vs_theory']:.4f}; "
                    f"top eigenvalues gen {nums(sg['top_eigenvalues'], 3)} / gauss {nums(sn['top_eigenvalues'], 3)} / "
                    f"theory {nums(theory_spikes, 3) or 'not computed (quick)'}; "
                    f"ridge accuracy gen {sg['accuracy']:.4f}+-{sg['accuracy_se']:.4f} vs gauss "
                    f"{sn['accuracy']:.4f}+-{sn['accuracy_se']:.4f}"),
        "versions": versions(),
    }
    _figure(report, pooled_bulk, rows, out / "seddik_universality.png")
    write_report(out, report, _markdown(report))
    return report


def _figure(r, pooled, rows, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    th, cfg = r["theory"], r["config"]
    fig = Figure(figsize=(17, 4.6))
    ax = fig.subplots(1, 3)
    x, dens = np.array(th["density_x"]), np.array(th["density"])
    bins = np.linspace(0, x[-1], 80)  # nonzero bulk eigenvalues (the atom at 0 and the spikes removed)
    for name, c, lab in (("gen", "C0", "generated (GAN-like)"), ("gauss", "C1", "Gaussian twin")):
        e = pooled[name]
        h, _ = np.histogram(e, bins=bins)
        ax[0].stairs(h / (len(e) * np.diff(bins)), bins, color=c, lw=1.5, label=lab)
    ax[0].plot(x, dens / (1 - th["zero_mass"]), "k", lw=1.2, label="deterministic equivalent")
    ax[0].set(xlabel="eigenvalue of $G = X^TX/p$", ylabel="density of the nonzero eigenvalues",
              title=f"bulk spectrum, p={cfg['p']}, n={K * cfg['n_per_class']}")
    ax[0].legend(fontsize=8)
    for name, c, mk in (("gen", "C0", "o"), ("gauss", "C1", "s")):
        tops = np.array([np.array(rr["eig"])[::-1][:K - 1] for rr in rows[name]])
        for j in range(K - 1):
            ax[1].scatter(np.full(len(tops), j + (0.1 if name == "gauss" else -0.1)), tops[:, j], color=c, marker=mk,
                          s=10, alpha=0.5, label=("generated" if name == "gen" else "Gaussian twin") if j == 0 else None)
    for j, v in enumerate(th["spikes"]):
        ax[1].hlines(v, j - 0.3, j + 0.3, color="k", lw=2, label="gram_spikes" if j == 0 else None)
    ax[1].axhline(th["edge"], color="gray", ls=":", label="bulk edge" if r["checks"]["spikes_checked_against_theory"]
                  else "bulk edge (upper estimate)")
    ax[1].set(xticks=range(K - 1), xlabel="spike index", ylabel="eigenvalue", title="isolated eigenvalues")
    ax[1].legend(fontsize=8)
    mc = r["monte_carlo"]
    idx = np.arange(K)
    for off, name, c in ((-0.2, "gen", "C0"), (0.0, "gauss", "C1")):
        ax[2].bar(idx + off, mc[name]["alignment"], 0.2, yerr=mc[name]["alignment_se"], color=c,
                  label=f"{'generated' if name == 'gen' else 'Gaussian'}: acc {mc[name]['accuracy']:.3f}")
    if th["alignment"] is not None:
        ax[2].bar(idx + 0.2, th["alignment"], 0.2, color="k", label="theory")
    ax[2].set(xticks=idx, xlabel="class a", ylabel=r"$\sum_s (j_a^T v_s)^2 / n_a$",
              title="leading eigenvectors vs classes (legend: ridge test accuracy)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _markdown(r):
    c, mc, th = r["checks"], r["monte_carlo"], r["theory"]
    gen = r["generator"]
    lines = [
        "# Universality of Gram matrices of GAN-like data (Seddik et al., ICML 2020)", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}, seed {r['seed']}).", "",
        f"Generator {' -> '.join(map(str, gen['dims']))} (LeakyReLU(0.2) hidden, tanh output), layer spectral norms "
        f"{nums(gen['layer_norms'])} (sigma* = {r['config']['sigma_star']}), Lipschitz bound "
        f"{gen['lipschitz_bound']:.3f}; class moments from {gen['moment_samples_per_class']} Monte-Carlo samples per "
        f"class; ||mu_a - mu_b|| = {nums(gen['class_mean_distances'].values(), 3)} (classes "
        f"{', '.join(gen['class_mean_distances'])}), Fréchet distances between the classes "
        f"{nums(gen['frechet_distance_between_classes'].values(), 3)}.", "",
        "| statistic | generated | Gaussian twin | deterministic equivalent |", "|---|---|---|---|",
    ]
    fmt = lambda m, s: ", ".join(f"{a:.4f} ± {b:.4f}" for a, b in zip(m, s))  # noqa: E731
    lines.append(f"| top eigenvalues | {fmt(mc['gen']['top_eigenvalues'], mc['gen']['top_eigenvalues_se'])} | "
                 f"{fmt(mc['gauss']['top_eigenvalues'], mc['gauss']['top_eigenvalues_se'])} | "
                 f"{', '.join(f'{v:.4f}' for v in th['spikes'])} (edge {th['edge']:.4f}) |")
    lines.append(f"| class alignment of the spikes' eigenvectors | {fmt(mc['gen']['alignment'], mc['gen']['alignment_se'])} | "
                 f"{fmt(mc['gauss']['alignment'], mc['gauss']['alignment_se'])} | "
                 f"{'not computed (quick)' if th['alignment'] is None else ', '.join(f'{v:.4f}' for v in th['alignment'])} |")
    lines.append(f"| (1/n) tr (G + z)^-1, z = {nums(th['trace_z'])} | {fmt(mc['gen']['trace'], mc['gen']['trace_se'])} | "
                 f"{fmt(mc['gauss']['trace'], mc['gauss']['trace_se'])} | {', '.join(f'{v:.4f}' for v in th['trace'])} |")
    lines.append(f"| ridge test accuracy | {mc['gen']['accuracy']:.4f} ± {mc['gen']['accuracy_se']:.4f} | "
                 f"{mc['gauss']['accuracy']:.4f} ± {mc['gauss']['accuracy_se']:.4f} | — |")
    lines += [
        "", f"Kolmogorov distances of the pooled bulk eigenvalues ({mc['gen']['draws']} draws): generated vs Gaussian "
        f"{c['ks_gen_vs_gauss']:.4f}, generated vs theory {c['ks_gen_vs_theory']:.4f}, Gaussian vs theory "
        f"{c['ks_gauss_vs_theory']:.4f} (tolerance {c['ks_tolerance']}). Largest z-scores generated vs Gaussian: "
        f"traces {c['z_trace_gen_vs_gauss']:.2f}, spikes {c['z_spikes_gen_vs_gauss']:.2f}, alignments "
        f"{c['z_alignment_gen_vs_gauss']:.2f}, accuracy {c['z_accuracy_gen_vs_gauss']:.2f}.",
        f"Universality: {c['universality']}; deterministic equivalent predicts both: "
        f"{c['deterministic_equivalent_predicts_both']}.", "",
    ] + precision_lines(r.get("precision")) + [
        "![spectra, spikes, eigenvector alignments](seddik_universality.png)", "",
    ]
    return "\n".join(lines)
