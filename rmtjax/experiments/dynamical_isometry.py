r"""Dynamical isometry: Jacobian singular-value spectra of deep networks at initialization.

``rmtjax reproduce dynamical-isometry`` reproduces the comparison of Pennington, Schoenholz &
Ganguli (2017, "Resurrecting the sigmoid in deep learning through dynamical isometry", Figs. 1-2)
at criticality (:math:`\chi = 1`): ReLU, hard-tanh and erf networks with Gaussian or
Haar-orthogonal weights. For each configuration and depth :math:`L` the free-probability density
of the squared singular values of :math:`J = \prod_\ell D^\ell W^\ell`
(:func:`rmtjax.rmt._jacobian.jacobian_spectrum`) is compared with the singular values of the
Jacobians of random finite networks (plain JAX, width ``width``), by moments
(:math:`m_1 = 1`, variance) and histograms of :math:`\log_{10}s`.

``ok`` requires, for every configuration and depth, the subordination to converge on at least
half of the :math:`\lambda` grid (points right next to the atom at 0 can fail and are not drawn), the empirical mean and variance of
:math:`s^2` within tolerance of the theory (finite-width corrections are :math:`O(L/N)` relative;
tolerance :math:`5\,\mathrm{SE}` over independent networks plus :math:`2L/N`), the largest empirical
singular value below the theoretical edge times :math:`1.2 + 4L/N` (the top of heavy-tailed
product spectra converges slowly in :math:`N`), and the qualitative claim: at
the deepest :math:`L`, orthogonal hard-tanh/erf spectra stay :math:`O(1)`-wide while ReLU's
variance grows linearly in :math:`L` for both weight laws. Writes ``dynamical_isometry.png``,
``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..activations import Erf, Relu
from ..meanfield import edge_of_chaos
from ..rmt._jacobian import HardTanh, jacobian_law, jacobian_q_star, jacobian_spectrum
from ._common import check_seed, config_dict, dtype_name, int_grid, positive_int, versions
from ._output import check_out_dir, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "dynamical-isometry"
ACTIVATIONS = ("relu", "hard-tanh", "erf")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        width: width of the finite networks (``>= 2``).
        depths: depths compared (increasing).
        networks: random networks per point (``>= 2``, for a standard error).
        activations: among ``relu``, ``hard-tanh``, ``erf`` (each with Gaussian and orthogonal weights).
        theory_grid: points of the lambda grid of the theory density (``>= 8``).
    """

    width: int = 1000
    depths: tuple[int, ...] = (4, 16, 64)
    networks: int = 2
    activations: tuple[str, ...] = ACTIVATIONS
    theory_grid: int = 400

    def __post_init__(self):
        positive_int(self.width, "width", lo=2)
        int_grid(self.depths, "depths", lo=1)
        positive_int(self.networks, "networks", lo=2)
        acts = self.activations
        if (isinstance(acts, str) or not isinstance(acts, tuple) or not acts or any(a not in ACTIVATIONS for a in acts)
                or len(set(acts)) != len(acts)):
            raise ValueError(f"activations must be a non-empty tuple of distinct names among {ACTIVATIONS}, got {acts!r}")
        positive_int(self.theory_grid, "theory_grid", lo=8)


FULL = Config()
QUICK = Config(width=120, depths=(2, 8), networks=2, activations=("relu",), theory_grid=160)


def _critical_hardtanh(q_target):
    """(sigma_w2, sigma_b2) with chi = sigma_w2 erf(1 / sqrt(2 q*)) = 1 and q* = q_target."""
    from jax.scipy.special import erf

    w2 = 1 / erf(1 / jnp.sqrt(2 * q_target))
    # sigma_b2 from the length map at q*: q = V(q)
    b2 = q_target - w2 * HardTanh().length_map(q_target)
    return float(w2), float(b2)


def _critical_erf(b2):
    return float(edge_of_chaos(Erf(), b2).value), b2


def _configs(cfg: Config):
    """(name, activation, sigma_w2, sigma_b2, orthogonal) of every configuration, at chi = 1."""
    out = []
    for name in cfg.activations:
        if name == "relu":
            act, w2, b2 = Relu(), 2.0, 0.0
        elif name == "hard-tanh":
            act, (w2, b2) = HardTanh(), _critical_hardtanh(jnp.asarray(0.05, float))
        else:
            act, (w2, b2) = Erf(), _critical_erf(0.01)
        out += [(name, act, w2, b2, orth) for orth in (False, True)]
    return out


def _orthogonal(key, n):
    q, r = jnp.linalg.qr(jax.random.normal(key, (n, n)))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def _network_singular_values(act, w2, b2, q, depth, width, orthogonal, key, max_depth=None):
    """Squared singular values of J = prod D W for one random network at its fixed point q*.

    One compiled program serves every depth up to ``max_depth`` and both weight laws (of one
    activation): the layers run in a scan of ``max_depth`` steps whose steps past ``depth`` are
    skipped by ``lax.cond``, and the weight law is a ``lax.cond`` too. The layer keys are
    ``split(key, max_depth)[:depth]``, the same as ``split(key, depth)`` (threefry keys split by
    counter), so the network is the one of a scan of exactly ``depth`` layers."""
    max_depth = depth if max_depth is None else max_depth
    return np.asarray(_singular_values(act, jnp.asarray(w2, float), jnp.asarray(b2, float), jnp.asarray(q, float),
                                       key, jnp.asarray(depth), jnp.asarray(orthogonal), max_depth=max_depth,
                                       width=width), np.float64)


@functools.partial(jax.jit, static_argnames=("max_depth", "width"))
def _singular_values(act, w2, b2, q, key, depth, orthogonal, *, max_depth, width):
    dtype = w2.dtype
    k0, key = jax.random.split(key)
    x = act(jnp.sqrt(q) * jax.random.normal(k0, (width,), dtype))  # h^0 ~ N(0, q*): x^0 = phi(h^0)
    J = jnp.eye(width, dtype=dtype)

    def layer(carry, k):
        x, J = carry
        kw, kb = jax.random.split(k)
        W = jax.lax.cond(orthogonal, lambda kw: _orthogonal(kw, width).astype(dtype),
                         lambda kw: jax.random.normal(kw, (width, width), dtype) / math.sqrt(width), kw)
        W = jnp.sqrt(w2) * W
        h = W @ x + jnp.sqrt(b2) * jax.random.normal(kb, (width,), dtype)
        J = act.derivative(h)[:, None] * (W @ J)
        return act(h), J

    def step(carry, ik):
        i, k = ik
        return jax.lax.cond(i < depth, layer, lambda c, k: c, carry, k), None

    (x, J), _ = jax.lax.scan(step, (x, J), (jnp.arange(max_depth), jax.random.split(key, max_depth)))
    return jnp.linalg.svd(J, compute_uv=False) ** 2


def _theory_grid(act, w2, b2, L, orth, n_grid):
    """A log grid of lambda, wide enough for the deepest ReLU spectra; near-isometric laws get a
    quarter of the points (same size) on [m1 - 8 sd, m1 + 8 sd]. (For orthogonal hard-tanh at
    q* = 0.05 the law is almost all an atom at sigma_w^(2L), of mass ~ 1 - L P(|h| > 1), which the
    density leaves out, plus a continuous part of mass ~ L P(|h| > 1).)

    The grid starts at 1e-8 in float64 and at 1e4 eps = 1.2e-3 in float32, below which the
    float32 subordination does not converge (measured for ReLU, Gaussian weights, L = 2: every
    point below 1e-3 failed, and a float32 run on the grid from 1e-8 converged at 77 of 160 points)."""
    eps = float(jnp.finfo(jnp.result_type(float)).eps)
    grid = np.geomspace(max(1e-8, 1e4 * eps), 1e4, n_grid)
    law = jacobian_law(act, w2, b2, depth=L, orthogonal=orth).moments(2)
    m1, sd = float(law[0]), math.sqrt(max(float(law[1] - law[0] ** 2), 0.0))
    if sd < 0.1 * m1:
        k = n_grid // 4
        grid = np.sort(np.concatenate([np.geomspace(1e-8, 1e4, n_grid - k),
                                       np.linspace(max(m1 - 8 * sd, 1e-8), m1 + 8 * sd, k)]))
    return grid


def _theory(act, w2, b2, grid, L, orth):
    """The theory summaries of one configuration (a float32 run compares them with float64)."""
    spec = jacobian_spectrum(act, w2, b2, grid, depth=L, orthogonal=orth, throw=False)
    return {"mean": spec.mean, "variance": spec.variance, "max_eigenvalue": spec.max_eigenvalue,
            "zero_mass": spec.zero_mass, "chi": spec.chi, "ok": spec.ok, "density": spec.density,
            "converged": spec.converged}


def _point(cfg, seed, ci, di, name, act, w2, b2, orth, L):
    q = float(jacobian_q_star(act, w2, b2))
    q_net = 1.0 if not np.isfinite(q) else q
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 100 * ci + di), cfg.networks)
    lam = np.stack([_network_singular_values(act, w2, b2, q_net, L, cfg.width, orth, k, max(cfg.depths)) for k in keys])
    m1s, v = lam.mean(1), lam.var(1)
    grid = _theory_grid(act, w2, b2, L, orth, cfg.theory_grid)
    th = _theory(act, w2, b2, jnp.asarray(grid, float), L, orth)
    th_var, edge = float(th["variance"]), float(th["max_eigenvalue"])
    nets, width = cfg.networks, cfg.width
    # the standard error of the mean: the sample one, but at least the binomial one of ReLU's gains
    # (each layer multiplies m1 by 2 f, f the active fraction, Var(2 f) = 1 / width; not derived for
    # the other laws, where it is a floor only). With two networks the sample standard deviation
    # alone can come out small by chance (seen in a float32 run: 0.036 where the binomial SE is 0.091).
    se_m1 = max(m1s.std(ddof=1) / math.sqrt(nets), math.sqrt(L / (width * nets)))
    tol_m1 = 5 * se_m1 + 2 * L / width + 0.02
    tol_var = 5 * v.std(ddof=1) / math.sqrt(nets) + 2 * L / width * max(th_var, 1) + 0.05 * max(th_var, 0.05)
    # histogram of log10 s (s = sqrt(lambda)) vs theory p(log10 s) = rho(lambda) * 2 lambda ln 10
    nz = lam[lam > 1e-12 * max(1.0, edge)]
    converged = np.asarray(th["converged"])
    r = {
        "name": name, "weights": "orthogonal" if orth else "gaussian", "depth": L, "sigma_w2": w2,
        "sigma_b2": b2, "q_star": q if np.isfinite(q) else None, "chi": float(th["chi"]),
        "theory": {"mean": float(th["mean"]), "variance": th_var, "max_eigenvalue": edge,
                   "zero_mass": float(th["zero_mass"]), "ok": bool(th["ok"]), "grid": grid.tolist(),
                   "density": np.asarray(th["density"], np.float64).tolist(), "converged": converged.tolist(),
                   "converged_fraction": float(np.mean(converged))},
        "empirical": {"mean": float(m1s.mean()), "variance": float(v.mean()), "max_eigenvalue": float(lam.max()),
                      "zero_fraction": float(np.mean(lam <= 1e-12 * max(1.0, edge))),
                      "log10_s": np.log10(np.sqrt(nz)).tolist()[:20000]},
        "tolerance": {"mean": tol_m1, "variance": tol_var},
    }
    r["ok"] = bool(r["theory"]["converged_fraction"] >= 0.5
                   and abs(r["empirical"]["mean"] - r["theory"]["mean"]) <= tol_m1
                   and abs(r["empirical"]["variance"] - th_var) <= tol_var
                   and r["empirical"]["max_eigenvalue"] <= edge * (1.2 + 4 * L / width))
    return r


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes the figure and reports into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the finished points.
        quick: use :data:`QUICK` (ReLU only, width 120) instead of :data:`FULL`.
        seed: master seed of the networks, in ``[0, 2**32 - 1]``.
        progress: show a progress bar.
        config: explicit sizes (overrides ``quick``).
    """
    from tqdm.auto import tqdm

    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a dynamical_isometry.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    resume = ResumeFile(out, NAME, {"config": config_dict(cfg), "seed": seed, "dtype": dtype_name()})
    cfgs = _configs(cfg)
    bar = tqdm(total=len(cfgs) * len(cfg.depths), desc="reproduce dynamical-isometry", disable=not progress)
    results = []
    for ci, (name, act, w2, b2, orth) in enumerate(cfgs):
        for di, L in enumerate(cfg.depths):
            tag = f"{name}|{'orthogonal' if orth else 'gaussian'}|{L}"
            bar.set_postfix_str(tag)
            if tag not in resume:
                resume.put(tag, _point(cfg, seed, ci, di, name, act, w2, b2, orth, L))
            results.append(resume[tag])
            bar.update()
    bar.close()

    # float32: the theory summaries of every point against float64 on the same grid
    def theory_all(points):
        out = {}
        for (name, act, w2, b2, orth), L, grid in points:
            th = _theory(act, w2, b2, grid, L, orth)
            for k in ("mean", "variance", "max_eigenvalue", "zero_mass"):
                out[f"{name} {'orthogonal' if orth else 'gaussian'} L={L}: {k}"] = th[k]
        return out

    points = [(c, r["depth"], jnp.asarray(r["theory"]["grid"], float))
              for c in cfgs for r in results if (r["name"], r["weights"]) == (c[0], "orthogonal" if c[4] else "gaussian")]
    values32 = {f"{r['name']} {r['weights']} L={r['depth']}: {k}": r["theory"][k]
                for r in results for k in ("mean", "variance", "max_eigenvalue", "zero_mass")}
    precision = float64_comparison(theory_all, points, float32_values=values32)

    deepest = max(cfg.depths)
    var_at = {(r["name"], r["weights"]): r["theory"]["variance"] for r in results if r["depth"] == deepest}
    claims = {}
    if ("relu", "gaussian") in var_at:
        claims["relu_variance_grows_with_depth_for_both_weight_laws"] = bool(
            var_at[("relu", "gaussian")] >= deepest and var_at[("relu", "orthogonal")] >= 0.9 * deepest)
    if ("hard-tanh", "orthogonal") in var_at:
        claims["orthogonal_hard_tanh_is_nearly_isometric"] = bool(
            var_at[("hard-tanh", "orthogonal")] < 0.25 * var_at[("hard-tanh", "gaussian")])
    if ("erf", "orthogonal") in var_at:
        claims["orthogonal_beats_gaussian_for_erf"] = bool(var_at[("erf", "orthogonal")] < var_at[("erf", "gaussian")])
    ok = all(r["ok"] for r in results) and all(claims.values())
    worst = max(abs(r["empirical"]["variance"] - r["theory"]["variance"]) / max(r["tolerance"]["variance"], 1e-12)
                for r in results)
    report = {
        "name": NAME, "ok": ok, "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
        "seconds": time.perf_counter() - t0,
        "config": {**config_dict(cfg), "networks_per_point": cfg.networks},
        "results": results, "claims": claims, "precision": precision, "resume": resume.summary(),
        "summary": f"{sum(r['ok'] for r in results)}/{len(results)} configurations match theory (moments within "
                   f"tolerance, worst variance error {worst:.2f} x tolerance); claims: "
                   + ", ".join(f"{k}={v}" for k, v in claims.items()),
        "versions": versions(),
    }
    _figure(report, out / "dynamical_isometry.png")
    slim = {**report, "results": [{**r, "empirical": {k: v for k, v in r["empirical"].items() if k != "log10_s"}}
                                  for r in results]}
    write_report(out, slim, _markdown(report))
    return slim


def _figure(rep, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    res = rep["results"]
    names = sorted({r["name"] for r in res}, key=["relu", "hard-tanh", "erf"].index)
    depths = rep["config"]["depths"]
    fig = Figure(figsize=(12, 3.4 * len(names)))
    axes = fig.subplots(len(names), 2, squeeze=False)
    colors = dict(zip(depths, ["C0", "C1", "C3", "C4"]))
    for i, n in enumerate(names):
        for j, wl in enumerate(("gaussian", "orthogonal")):
            ax = axes[i, j]
            for r in res:
                if r["name"] != n or r["weights"] != wl:
                    continue
                c = colors[r["depth"]]
                ls = np.asarray(r["empirical"]["log10_s"])
                if ls.size:  # continuous part only: counts over all nonzero values, scaled by their mass
                    h, e = np.histogram(ls, bins=np.linspace(-3, 2.5, 111))
                    ax.stairs(h * (1 - r["empirical"]["zero_fraction"]) / (ls.size * np.diff(e)), e, fill=True,
                              alpha=0.3, color=c)
                lam = np.asarray(r["theory"]["grid"])
                dens = np.where(np.asarray(r["theory"]["converged"]), np.asarray(r["theory"]["density"]), np.nan)
                ax.plot(0.5 * np.log10(lam), dens * 2 * lam * math.log(10), color=c, lw=2,
                        label=f"L={r['depth']}: var {r['theory']['variance']:.2g} (emp. {r['empirical']['variance']:.2g})")
            ax.set(xlabel=r"$\log_{10}$ singular value", ylabel="density",
                   title=f"{n}, {wl} weights (chi = 1)", xlim=(-3, 2.5))
            ax.legend(fontsize=7)
    fig.suptitle(f"Jacobian singular values: free probability (lines) vs width-{rep['config']['width']} networks")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _markdown(rep):
    lines = ["# Dynamical isometry (Pennington, Schoenholz & Ganguli 2017)", "",
             f"**{'Reproduced' if rep['ok'] else 'NOT reproduced'}** in {rep['seconds']:.1f} s "
             f"({'quick' if rep['quick'] else 'full'} mode, {rep['dtype']}; width {rep['config']['width']}, depths "
             f"{nums(rep['config']['depths'])}, {rep['config']['networks_per_point']} networks per point).", "",
             "| activation | weights | L | sigma_w^2 | sigma_b^2 | mean (th / emp) | variance (th / emp, tol) | "
             "max s^2 (edge / emp) | ok |", "|---|---|---:|---:|---:|---|---|---|:---:|"]
    for r in rep["results"]:
        t, e = r["theory"], r["empirical"]
        lines.append(f"| {r['name']} | {r['weights']} | {r['depth']} | {r['sigma_w2']:.4f} | {r['sigma_b2']:.4f} | "
                     f"{t['mean']:.4f} / {e['mean']:.4f} | {t['variance']:.4g} / {e['variance']:.4g} "
                     f"(+-{r['tolerance']['variance']:.2g}) | {t['max_eigenvalue']:.4g} / {e['max_eigenvalue']:.4g} | "
                     f"{'yes' if r['ok'] else 'no'} |")
    lines += ["", "Claims: " + ", ".join(f"{k.replace('_', ' ')}: {'yes' if v else 'no'}"
                                         for k, v in rep["claims"].items()), ""]
    lines += precision_lines(rep.get("precision"))
    lines += ["![spectra](dynamical_isometry.png)", ""]
    return "\n".join(lines)
