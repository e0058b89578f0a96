r"""Order/chaos phase diagram of tanh networks and the divergence of depth scales at criticality.

``rmtjax reproduce meanfield`` reproduces the mean-field picture of Poole et al. (2016, Fig. 2-3)
and Schoenholz et al. (2017, Fig. 1-2) for :math:`\phi = \tanh`:

1. :math:`\chi_1(\sigma_w^2, \sigma_b^2)` on a grid (:func:`rmtjax.meanfield.phase_diagram`,
   one vmapped call) with the edge of chaos :math:`\chi_1 = 1` computed independently by
   :func:`rmtjax.meanfield.edge_of_chaos` (a root solve per :math:`\sigma_b^2`, vmapped);
2. the correlation depth scale :math:`\xi_c = -1/\log\chi_c` along :math:`\sigma_b^2 = 0.05`,
   which diverges at the critical :math:`\sigma_w^2` (``ok`` requires its maximum on the grid to
   sit next to the critical point and :math:`\xi_c(1-\epsilon) \propto \epsilon^{-1}`);
3. wide random tanh networks (width ``width``, ``seeds`` draws): the correlation of two inputs,
   layer by layer, against the c-map iterates, in the ordered and in the chaotic phase (``ok``
   requires every layer within 5 standard errors).

Writes ``meanfield.png``, ``report.json`` and ``report.md``.
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

from ..activations import Tanh
from ..meanfield import c_map, edge_of_chaos, phase_diagram
from ._common import check_seed, config_dict, dtype_name, positive_int, versions
from ._output import check_out_dir, num, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines

__all__ = ["Config", "FULL", "QUICK", "run"]

NAME = "meanfield"
SIGMA_W2 = (0.5, 4.0)  # range of the phase diagram
SIGMA_B2 = (0.0, 0.3)
B0 = 0.05  # sigma_b^2 of the depth-scale line and of the finite networks
EPS = (0.1, 0.03, 0.01, 0.003)  # 1 - sigma_w^2 / critical, for the divergence of xi_c
C0 = 0.6  # input correlation of the finite networks


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        n_sigma_w2, n_sigma_b2: points of the phase-diagram grid (``>= 2`` each).
        n_line: points of the depth-scale line ``0.6-1.6 x`` critical ``sigma_w^2`` (``>= 3``).
        n_edge: values of ``sigma_b^2`` on the edge-of-chaos curve (``>= 2``).
        width, depth, seeds: the finite random networks (``seeds >= 2`` for a standard error).
    """

    n_sigma_w2: int = 80
    n_sigma_b2: int = 40
    n_line: int = 101
    n_edge: int = 31
    width: int = 1500
    depth: int = 12
    seeds: int = 24

    def __post_init__(self):
        positive_int(self.n_sigma_w2, "n_sigma_w2", lo=2)
        positive_int(self.n_sigma_b2, "n_sigma_b2", lo=2)
        positive_int(self.n_line, "n_line", lo=3)
        positive_int(self.n_edge, "n_edge", lo=2)
        positive_int(self.width, "width", lo=2)
        positive_int(self.depth, "depth", lo=1)
        positive_int(self.seeds, "seeds", lo=2)


FULL = Config()
QUICK = Config(n_sigma_w2=24, n_sigma_b2=10, n_line=41, n_edge=16, width=500, depth=6, seeds=8)


def _theory(b_line, w_all, b_all):
    """The edge of chaos along ``b_line`` and every mean-field quantity on ``w_all x b_all``: two
    compiled programs for the whole reproduction (a float32 run compares them with float64)."""
    crit = edge_of_chaos(Tanh(), b_line, throw=False)
    return crit, phase_diagram(Tanh(), w_all, b_all)


def _headline(b_line, w_all, b_all, i0, nw, nb, n_line):
    """The quantities of the summary, from :func:`_theory`."""
    crit, pd = _theory(b_line, w_all, b_all)
    xi = pd.xi_c[nw + n_line: nw + n_line + len(EPS), nb]
    slope = np.polyfit(np.log(EPS), np.log(np.asarray(xi, np.float64)), 1)[0]
    return {"critical sigma_w^2": crit.value[i0], "edge of chaos curve": crit.value,
            "chi_1 on the grid": pd.chi_1[:nw, :nb], "xi_c near criticality": xi, "xi_c slope": slope,
            "q* of the networks": pd.q_star[-2:, nb]}


def _network_correlations(w2, b2, q, c0, width, depth, seeds, key):
    theory = [c0]
    for _ in range(depth):
        theory.append(float(c_map(theory[-1], q, Tanh(), w2, b2)))
    emp = np.asarray(_correlations(jax.random.split(key, seeds), jnp.asarray(w2, float), jnp.asarray(b2, float),
                                   jnp.asarray(q, float), jnp.asarray(c0, float), width, depth), np.float64)
    mean, se = emp.mean(0), emp.std(0, ddof=1) / np.sqrt(seeds)
    z = np.abs(mean - np.array(theory)) / np.maximum(se, 1e-15)
    return {"sigma_w2": float(w2), "sigma_b2": float(b2), "q_star": float(q), "theory": theory, "mean": mean.tolist(),
            "se": se.tolist(), "max_z": float(z[1:].max()), "ok": bool(np.all(z[1:] < 5))}


@functools.partial(jax.jit, static_argnames=("width", "depth"))
def _correlations(keys, w2, b2, q, c0, width, depth):
    """Correlation of two inputs, layer by layer, in random tanh networks (one row per key)."""

    def one(key):
        k0, key = jax.random.split(key)
        z = jax.random.normal(k0, (2, width), w2.dtype)
        h = jnp.sqrt(q) * jnp.stack([z[0], c0 * z[0] + jnp.sqrt(1 - c0**2) * z[1]])
        corr = lambda h: jnp.sum(h[0] * h[1]) / jnp.sqrt(jnp.sum(h[0] ** 2) * jnp.sum(h[1] ** 2))  # noqa: E731

        def layer(carry, _):  # a scan, not a Python loop: the layer is compiled once, not depth times
            h, key = carry
            kw, kb, key = jax.random.split(key, 3)
            W = jax.random.normal(kw, (width, width), w2.dtype) * jnp.sqrt(w2 / width)
            h = jnp.tanh(h) @ W.T + jnp.sqrt(b2) * jax.random.normal(kb, (width,), w2.dtype)[None, :]
            return (h, key), corr(h)

        _, out = jax.lax.scan(layer, (h, key), None, length=depth)
        return jnp.concatenate([corr(h)[None], out])

    return jax.lax.map(one, keys)


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes ``meanfield.png``, ``report.json``, ``report.md`` into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation).
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed of the finite networks, in ``[0, 2**32 - 1]``.
        progress: show a progress bar.
        config: explicit sizes (overrides ``quick``).
    """
    from tqdm.auto import tqdm

    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a meanfield.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    w2 = np.linspace(*SIGMA_W2, cfg.n_sigma_w2)
    b2 = np.linspace(*SIGMA_B2, cfg.n_sigma_b2)
    bar = tqdm(total=3, desc="reproduce meanfield", disable=not progress)

    bar.set_postfix_str("edge of chaos")
    b_line = np.union1d(np.linspace(*SIGMA_B2, cfg.n_edge), [B0])
    i0 = int(np.flatnonzero(b_line == B0)[0])
    crit_sol = edge_of_chaos(Tanh(), jnp.asarray(b_line, float), throw=False)
    crit = np.asarray(crit_sol.value, np.float64)
    w2c = float(crit[i0])
    if not (bool(np.asarray(crit_sol.ok)[i0]) and np.isfinite(w2c)):
        raise ValueError(f"edge_of_chaos(Tanh(), {B0}) did not converge ({crit_sol.result}); cannot place the depth "
                         "scales and the finite networks")
    bar.update()

    # one phase diagram holds the grid, the depth-scale line at B0, the points 1 - eps below the
    # critical point and the two finite-network points (one compiled program)
    bar.set_postfix_str("phase diagram")
    line = np.linspace(0.6 * w2c, 1.6 * w2c, cfg.n_line)
    w2_nets = (0.9 * w2c, 1.4 * w2c)
    w_all = np.concatenate([w2, line, w2c * (1 - np.asarray(EPS)), w2_nets])
    b_all = np.append(b2, B0)
    nw, nb, nl = len(w2), len(b2), len(line)
    pd_all = phase_diagram(Tanh(), jnp.asarray(w_all, float), jnp.asarray(b_all, float))
    pd = jax.tree.map(lambda a: np.asarray(a)[:nw, :nb], pd_all)
    col = jax.tree.map(lambda a: np.asarray(a)[nw:, nb], pd_all)  # sigma_b^2 = B0
    xi_c, xi_q = np.asarray(col.xi_c[:nl], np.float64), np.asarray(col.xi_q[:nl], np.float64)
    xi_near = np.asarray(col.xi_c[nl:nl + len(EPS)], np.float64)
    q_nets = np.asarray(col.q_star[-2:], np.float64)
    slope = float(np.polyfit(np.log(EPS), np.log(xi_near), 1)[0])
    peak = float(line[np.nanargmax(np.where(np.isfinite(xi_c), xi_c, -1))])
    bar.update()

    bar.set_postfix_str("finite networks")
    k1, k2 = jax.random.split(jax.random.key(seed))
    nets = [_network_correlations(w2_nets[0], B0, q_nets[0], C0, cfg.width, cfg.depth, cfg.seeds, k1),
            _network_correlations(w2_nets[1], B0, q_nets[1], C0, cfg.width, cfg.depth, cfg.seeds, k2)]
    bar.update()
    bar.close()

    precision = float64_comparison(
        _headline, jnp.asarray(b_line, float), jnp.asarray(w_all, float), jnp.asarray(b_all, float), i0, nw, nb, nl,
        float32_values={"critical sigma_w^2": w2c, "edge of chaos curve": crit,
                        "chi_1 on the grid": np.asarray(pd.chi_1, np.float64), "xi_c near criticality": xi_near,
                        "xi_c slope": slope, "q* of the networks": q_nets})

    step = line[1] - line[0]
    # grid points without a converged fixed point keep their result codes (ok = False, values NaN)
    pd_ok = np.asarray(pd.ok)
    chi = np.asarray(pd.chi_1, np.float64)
    failed = [(float(w2[i]), float(b2[j]), float(chi[i, j])) for i, j in np.argwhere(~pd_ok)]
    checks = {
        "phase_diagram_converged_fraction": float(pd_ok.mean()),
        "phase_diagram_not_converged": failed,
        "phase_diagram_converged": bool(pd_ok.mean() >= 0.99),
        "xi_c_peak_at_critical_point": bool(abs(peak - w2c) <= 1.5 * step),
        "xi_c_slope_near_criticality": slope,
        "xi_c_diverges_like_1_over_eps": bool(abs(slope + 1) < 0.15),
        "finite_networks_follow_c_map": all(n["ok"] for n in nets),
    }
    ok = (checks["phase_diagram_converged"] and checks["xi_c_peak_at_critical_point"]
          and checks["xi_c_diverges_like_1_over_eps"] and checks["finite_networks_follow_c_map"])
    finite = lambda a: [float(v) if np.isfinite(v) else None for v in np.asarray(a, np.float64).ravel()]  # noqa: E731
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype_name(),
        "seconds": time.perf_counter() - t0, "config": config_dict(cfg),
        "grid": {"sigma_w2": w2.tolist(), "sigma_b2": b2.tolist(), "chi_1": chi.tolist(),
                 "q_star": np.asarray(pd.q_star, np.float64).tolist(), "ok": pd_ok.tolist()},
        "edge_of_chaos": {"sigma_b2": b_line.tolist(), "sigma_w2": finite(crit)},
        "depth_scales": {"sigma_b2": B0, "critical_sigma_w2": w2c, "sigma_w2": line.tolist(),
                         "xi_c": finite(xi_c), "xi_q": finite(xi_q), "eps": list(EPS), "xi_c_near": xi_near.tolist()},
        "finite_networks": nets, "checks": checks, "precision": precision,
        "summary": f"critical sigma_w^2 = {w2c:.4f} at sigma_b^2 = {B0}; xi_c ~ eps^{slope:.3f}; "
                   f"finite nets within {max(n['max_z'] for n in nets):.1f} SE of the c-map",
        "versions": versions(),
    }
    _figure(report, out / "meanfield.png")
    write_report(out, report, _markdown(report))
    return report


def _figure(r, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    fig = Figure(figsize=(16, 4.6))
    ax = fig.subplots(1, 3)
    g = r["grid"]
    w2, b2, chi = np.array(g["sigma_w2"]), np.array(g["sigma_b2"]), np.array(g["chi_1"])
    im = ax[0].pcolormesh(w2, b2, np.log(chi.T), cmap="RdBu_r", vmin=-1, vmax=1, shading="auto")
    ax[0].contour(w2, b2, chi.T, levels=[1.0], colors="lime", linewidths=3)
    e = r["edge_of_chaos"]
    ax[0].plot(e["sigma_w2"], e["sigma_b2"], "k--", lw=1.5, label="edge_of_chaos (root solve)")
    ax[0].plot([], [], color="lime", lw=3, label=r"$\chi_1 = 1$ contour of the grid")
    ax[0].set(xlabel=r"$\sigma_w^2$", ylabel=r"$\sigma_b^2$", title=r"tanh: $\log\chi_1$ (ordered < 0 < chaotic)")
    ax[0].text(0.7, 0.25, "ordered", color="navy")
    ax[0].text(3.0, 0.03, "chaotic", color="darkred")
    ax[0].legend(loc="upper right", fontsize=8)
    fig.colorbar(im, ax=ax[0])
    d = r["depth_scales"]
    xs = np.array(d["sigma_w2"])
    ax[1].semilogy(xs, [np.nan if v is None else v for v in d["xi_c"]], label=r"$\xi_c$")
    ax[1].semilogy(xs, [np.nan if v is None else v for v in d["xi_q"]], label=r"$\xi_q$")
    ax[1].axvline(d["critical_sigma_w2"], color="k", ls=":", label="critical $\\sigma_w^2$")
    ax[1].set(xlabel=r"$\sigma_w^2$", ylabel="depth scale", title=rf"depth scales at $\sigma_b^2={d['sigma_b2']}$")
    ax[1].legend()
    for n, c in zip(r["finite_networks"], ["C0", "C3"]):
        L = np.arange(len(n["theory"]))
        ax[2].plot(L, n["theory"], color=c, label=rf"c-map, $\sigma_w^2$={n['sigma_w2']:.2f}")
        ax[2].errorbar(L, n["mean"], yerr=n["se"], fmt="o", color=c, ms=4, capsize=2, label="width-"
                       f"{r['config']['width']} nets ({r['config']['seeds']} seeds)")
    ax[2].set(xlabel="layer", ylabel="correlation $c^\\ell$", title="correlation propagation")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _markdown(r):
    c, d = r["checks"], r["depth_scales"]
    failed = c["phase_diagram_not_converged"]
    n_grid = len(r["grid"]["sigma_w2"]) * len(r["grid"]["sigma_b2"])
    if failed:
        shown = "; ".join(f"({num(w, 4)}, {num(b, 4)}, {num(x, 4)})" for w, b, x in failed[:8])
        more = f" and {len(failed) - 8} more" if len(failed) > 8 else ""
        not_converged = (f"The {len(failed)} point{'s' if len(failed) > 1 else ''} (sigma_w^2, sigma_b^2, chi_1) = "
                         f"{shown}{more} have no converged fixed point (phase_diagram's ok = False; their values are NaN and "
                         "their result codes are kept).")
    else:
        not_converged = "Every fixed point of the grid converged."
    lines = [
        "# Mean-field order/chaos transition of tanh networks", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). {r['summary']}.", "",
        f"- Critical sigma_w^2 at sigma_b^2 = {d['sigma_b2']}: {d['critical_sigma_w2']:.6f} (chi_1 = 1).",
        f"- Phase diagram: {len(r['grid']['sigma_w2'])} x {len(r['grid']['sigma_b2'])} grid, "
        f"{n_grid - len(failed)} of {n_grid} fixed points converged "
        f"({100 * c['phase_diagram_converged_fraction']:.2f}%). {not_converged}",
        f"- xi_c peaks next to the critical point: {'yes' if c['xi_c_peak_at_critical_point'] else 'no'}; near "
        f"criticality xi_c ~ eps^{c['xi_c_slope_near_criticality']:.3f} (theory: -1; eps = "
        f"{nums(d['eps'])}, xi_c = {nums(d['xi_c_near'])}).",
        "", "| sigma_w^2 | phase | max z over layers (finite nets vs c-map) | within 5 SE |", "|---:|---|---:|:---:|",
    ]
    for n in r["finite_networks"]:
        phase = "ordered" if n["sigma_w2"] < d["critical_sigma_w2"] else "chaotic"
        lines.append(f"| {n['sigma_w2']:.3f} | {phase} | {n['max_z']:.2f} | {'yes' if n['ok'] else 'no'} |")
    cfg = r["config"]
    lines += ["", f"Finite networks: width {cfg['width']}, depth {cfg['depth']}, {cfg['seeds']} seeds, input "
              f"correlation {C0}.", ""]
    lines += precision_lines(r.get("precision"))
    lines += ["![phase diagram, depth scales, correlations](meanfield.png)", ""]
    return "\n".join(lines)
