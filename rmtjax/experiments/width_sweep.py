r"""Empirical NNGP and NTK of finite ReLU networks against the infinite-width kernels, across widths and depths.

``rmtjax reproduce width-sweep`` measures how fast the kernels of finite networks approach their
infinite-width limits (Neal 1996; Lee et al. 2018, "Deep neural networks as Gaussian processes";
Jacot et al. 2018, "Neural tangent kernel"): the fluctuation of a finite network's kernel around the
limit has standard deviation :math:`O(n^{-1/2})` at width :math:`n` (Hanin & Nica 2020, "Finite depth
and width corrections to the neural tangent kernel", Thm. 1: the NTK's variance is :math:`O(L/n)`
at fixed depth :math:`L`; its mean moves only by :math:`O(1/n)`), so the relative deviation falls
with a log-log slope of :math:`-1/2` against the width.

**The networks.** ReLU MLPs in the NTK parameterization (:math:`\sigma_w^2 = 2`,
:math:`\sigma_b^2 = 0.1`, one scalar output), ``n_inputs`` Gaussian inputs of dimension
``in_features`` scaled to norm :math:`\sqrt{d}`. Every network of the grid (``widths`` x ``depths``
x ``seeds``) is a :class:`rmtjax.finite.PaddedMLP` padded to the largest width and depth (width
and depth are arrays), drawn from the key ``fold_in(fold_in(key(seed), width), depth)`` (so no
two points share weights), and the whole grid is ONE :func:`rmtjax.sweep.run`: one compiled
program, chunks of ``chunk_size`` networks kept in the Zarr store ``out_dir/width_sweep.zarr``. An
interrupted run resumes from the store when rerun with the same configuration and seed; a store
of another configuration is refused by the runner (remove it to start over).

**The kernels of one network.** The empirical NNGP is the readout's conditional covariance
given the last hidden layer, :math:`\hat K(x, x') = \frac{\sigma_w^2}{n}\phi(z^L(x))\cdot\phi(z^L(x'))
+ \sigma_b^2` (the Gram matrix whose expectation is the NNGP: Lee et al. 2018, eq. 4; a single
output's :math:`f(x)f(x')` would fluctuate at :math:`O(1)` whatever the width); the empirical NTK
is :math:`\hat\Theta(x, x') = \nabla_\theta f(x)\cdot\nabla_\theta f(x')` (``jax.jacrev`` of the
padded network: the padding has exactly zero gradient). The limits are
:func:`rmtjax.kernels.kernel` of :class:`rmtjax.kernels.FullyConnected` (float64 in every mode;
``--float32`` adds how far the same kernels computed in float32 are from them).

**The measurement.** Per network, the relative Frobenius deviation
:math:`r = \|\hat K - K\|_F / \|K\|_F` (and the same for the NTK); per (width, depth), its root
mean square over the seeds, :math:`\bar r = (\overline{r^2})^{1/2}` (the standard deviation of the
deviation plus an :math:`O(1/n)` bias), with the standard error of :math:`\log\bar r` from the
seeds (delta method: :math:`\mathrm{sd}(r^2)/(2\sqrt{S}\,\overline{r^2})`). Per depth, a weighted
least-squares fit of :math:`\log\bar r` against :math:`\log n` over the widths gives the slope and
its standard error (the formal one, inflated by :math:`\sqrt{\chi^2/\mathrm{dof}}` when that
exceeds 1). The fit of depth :math:`L` uses the widths with :math:`L/n \le` ``fit_depth_over_width`` (1/4; at
least the three largest), where the leading order holds: at :math:`L/n` of order one the
fluctuations grow like :math:`e^{5L/n}` (Hanin & Nica 2020) and are heavy-tailed (measured: the rms
deviation of the NTK at width 16 jumps between 0.8 and 4.4 from depth 5 to 10 with 32 seeds); the
report also gives the fit over all widths. A slope is *within tolerance* of :math:`-1/2` when
:math:`|s + 1/2| \le 3\,\mathrm{SE} + \text{slope\_tolerance}` (the allowance covers the
:math:`O(L/n)` curvature at the smallest widths). ``ok`` requires every kernel finite and every
slope (NNGP and NTK, every depth) within tolerance.

**Timing.** The whole vectorised sweep (compilation included, summed over resumed runs) against a
Python loop over jitted calls on a small subset of the same grid (the (smallest width, smallest
depth) and (largest width, largest depth) networks, ``loop_seeds`` seeds each): each (width, depth) its own unpadded program
(``PaddedMLP`` with ``max_width = width``, ``max_depth = depth``), compiled on its first call.

Writes ``width_sweep.png`` (the relative deviation against the width, one line per depth, with the
:math:`n^{-1/2}` guide), ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..activations import Relu
from ..kernels import FullyConnected, kernel
from ._common import (
    check_seed,
    config_dict,
    dtype_name,
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

__all__ = ["FULL", "MID", "QUICK", "Config", "run"]

NAME = "width-sweep"
SIGMA_W2 = 2.0  # ReLU at criticality (He initialisation)
SIGMA_B2 = 0.1
STORE = "width_sweep.zarr"
THEORY_SLOPE = -0.5
KINDS = ("nngp", "ntk")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        widths: hidden widths (increasing, ``>= 2``, at least 3 for a slope).
        depths: depths :math:`L` (hidden layers; increasing, ``>= 1``).
        seeds: networks per (width, depth) (``>= 2``: a standard error needs two).
        n_inputs: inputs the kernels are evaluated on (``>= 2``); in_features: their dimension.
        slope_tolerance: the allowance added to 3 standard errors around -1/2.
        fit_depth_over_width: the slope of depth ``L`` is fitted over the widths with
            ``L / n <= fit_depth_over_width`` (at least the 3 largest), where the leading-order law holds.
        chunk_size: networks per compiled call of the sweep (the resume granularity).
        loop_seeds: seeds per (width, depth) of the Python-loop timing (the corners (smallest width,
            smallest depth) and (largest width, largest depth)); from 2 on, the report separates
            compilation from the later calls and extrapolates the loop to the whole grid.
    """

    widths: tuple[int, ...] = tuple(2**k for k in range(4, 13))
    depths: tuple[int, ...] = tuple(range(1, 11))
    seeds: int = 32
    n_inputs: int = 8
    in_features: int = 16
    slope_tolerance: float = 0.05
    fit_depth_over_width: float = 0.25
    chunk_size: int = 32
    loop_seeds: int = 2

    def __post_init__(self):
        int_grid(self.widths, "widths", lo=2, min_len=3)
        int_grid(self.depths, "depths", lo=1, min_len=1)
        positive_int(self.seeds, "seeds", lo=2)
        positive_int(self.n_inputs, "n_inputs", lo=2)
        positive_int(self.in_features, "in_features", lo=1)
        number(self.slope_tolerance, "slope_tolerance", lo=0.0)
        number(self.fit_depth_over_width, "fit_depth_over_width", lo=0.0, lo_open=True)
        positive_int(self.chunk_size, "chunk_size", lo=1)
        positive_int(self.loop_seeds, "loop_seeds", lo=1)


FULL = Config()
#: What runs on the 2-core machine in minutes (the full grid pads every network to width 4096 and depth 10:
#: 151 million parameters drawn per network, 2,880 networks); the committed results are this size.
MID = Config(widths=(16, 32, 64, 128, 256), depths=tuple(range(1, 11)), seeds=32, n_inputs=8, chunk_size=32)
QUICK = Config(widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 4), seeds=8, n_inputs=4, in_features=8,
               slope_tolerance=0.1, chunk_size=40)


# ------------------------------------------------------------------------------------------
# Theory
# ------------------------------------------------------------------------------------------


def _inputs(cfg: Config, seed: int) -> np.ndarray:
    """``n_inputs`` Gaussian inputs scaled to norm sqrt(d) (float64)."""
    x = np.random.default_rng(seed).standard_normal((cfg.n_inputs, cfg.in_features))
    return x * np.sqrt(cfg.in_features) / np.linalg.norm(x, axis=1, keepdims=True)


def _theory(x, w_std, b_std, *, max_depth: int):
    """The infinite-width NNGP and NTK of the networks of every depth ``1..max_depth`` (one call:
    index ``L`` of ``all_depths`` is the output of the depth-``L`` network in the NTK parameterization)."""
    k = kernel(x, None, FullyConnected(max_depth, w_std, b_std, Relu()), all_depths=True)
    return {"nngp": k.nngp[1:], "ntk": k.ntk[1:]}


# ------------------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------------------


def _network_kernels(net, key, x):
    """The empirical NNGP (readout covariance given the last hidden layer) and NTK of one network."""
    p = net.init(key)
    dt = p.first_kernel.dtype
    h = net.features(p, x)
    nngp = net.W_std.astype(dt) ** 2 / net.width.astype(dt) * (h @ h.T) + net.b_std.astype(dt) ** 2
    jac = jax.jacrev(lambda q: net(q, x)[:, 0])(p)
    ntk = sum(j.reshape(x.shape[0], -1) @ j.reshape(x.shape[0], -1).T for j in jax.tree_util.tree_leaves(jac))
    return {"nngp": nngp, "ntk": ntk}


def _key(seed, width, depth):
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), width), depth)


def _point_fn(cfg: Config, x):
    """The function of one grid point ``(width, depth, seed)`` that :func:`rmtjax.sweep.run` vmaps."""
    from ..finite import PaddedMLP

    dt = x.dtype
    w_std, b_std = np.sqrt(SIGMA_W2).astype(dt), np.sqrt(SIGMA_B2).astype(dt)

    def fn(width, depth, seed):
        net = PaddedMLP(width, depth, w_std, b_std, Relu(), in_features=cfg.in_features,
                        max_width=max(cfg.widths), max_depth=max(cfg.depths), dtype=dt)
        return _network_kernels(net, _key(seed, width, depth), x)

    return fn


def _sweep(cfg: Config, out: Path, x, seeds: np.ndarray, progress: bool):
    from .. import sweep

    grid = sweep.Grid(width=np.asarray(cfg.widths, np.int64), depth=np.asarray(cfg.depths, np.int64), seed=seeds)
    return timed_sweep(_point_fn(cfg, x), grid, out, STORE, lambda ds: np.isfinite(ds.ntk.values[..., 0, 0]).sum(),
                       chunk_size=cfg.chunk_size, progress=progress, dims={"nngp": ("x1", "x2"), "ntk": ("x1", "x2")})


def _loop_timing(cfg: Config, x, seeds: np.ndarray) -> dict[str, Any]:
    """A Python loop over jitted calls, one unpadded program per (width, depth), on the two corners of
    the grid with ``loop_seeds`` seeds each (compilation included, as a loop pays it)."""
    from ..finite import PaddedMLP

    dt = x.dtype
    w_std, b_std = np.sqrt(SIGMA_W2).astype(dt), np.sqrt(SIGMA_B2).astype(dt)
    corners = [(cfg.widths[0], cfg.depths[0]), (cfg.widths[-1], cfg.depths[-1])]
    pairs = []
    t_all = time.perf_counter()
    for w, d in corners:
        @jax.jit
        def one(seed, w=w, d=d):
            net = PaddedMLP(w, d, w_std, b_std, Relu(), in_features=cfg.in_features, max_width=w, max_depth=d, dtype=dt)
            return _network_kernels(net, _key(seed, w, d), x)

        calls = []
        for s in seeds[: cfg.loop_seeds]:
            t0 = time.perf_counter()
            jax.block_until_ready(one(jnp.asarray(s)))
            calls.append(time.perf_counter() - t0)
        run_s = float(np.mean(calls[1:])) if len(calls) > 1 else None
        pairs.append({"width": w, "depth": d, "networks": len(calls), "seconds": float(sum(calls)),
                      "first_call_seconds": calls[0], "later_call_seconds": run_s})
    seconds = time.perf_counter() - t_all
    networks = sum(p["networks"] for p in pairs)
    out = {"pairs": pairs, "seeds_each": len(calls), "networks": networks, "seconds": seconds,
           "seconds_per_network": seconds / networks, "programs_compiled": len(pairs)}
    if all(p["later_call_seconds"] is not None for p in pairs):
        # the whole grid as a loop: one compilation per (width, depth), then one call per network (the means of
        # the two corners: a rough midpoint of the grid's sizes)
        run_s = float(np.mean([p["later_call_seconds"] for p in pairs]))
        compile_s = float(np.mean([p["first_call_seconds"] - p["later_call_seconds"] for p in pairs]))
        out.update(compile_seconds_per_program=compile_s, run_seconds_per_network=run_s,
                   whole_grid_seconds_extrapolated=len(cfg.widths) * len(cfg.depths) * compile_s
                   + len(cfg.widths) * len(cfg.depths) * cfg.seeds * run_s)
    return out


# ------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------


def _relative_deviation(emp, th):
    """``||emp - th||_F / ||th||_F`` over the last two axes; ``th`` broadcasts against ``emp``."""
    return np.sqrt(((emp - th) ** 2).sum((-2, -1))) / np.sqrt((th**2).sum((-2, -1)))


def _fit_slope(log_w, log_r, se):
    """Weighted least squares of ``log_r`` on ``log_w`` (weights ``1/se**2``): slope, its standard
    error (inflated by sqrt(chi^2/dof) when that exceeds 1), intercept and chi^2/dof."""
    w = 1.0 / np.maximum(se, 1e-12) ** 2
    xm = np.sum(w * log_w) / np.sum(w)
    ym = np.sum(w * log_r) / np.sum(w)
    sxx = np.sum(w * (log_w - xm) ** 2)
    slope = np.sum(w * (log_w - xm) * (log_r - ym)) / sxx
    intercept = ym - slope * xm
    dof = log_w.size - 2
    chi2 = float(np.sum(w * (log_r - intercept - slope * log_w) ** 2) / dof) if dof > 0 else float("nan")
    se_slope = math.sqrt(1.0 / sxx) * (math.sqrt(chi2) if dof > 0 and chi2 > 1 else 1.0)
    return float(slope), float(se_slope), float(intercept), chi2


def _statistics(cfg: Config, emp: dict[str, np.ndarray], th: dict[str, np.ndarray]) -> dict[str, Any]:
    widths = np.asarray(cfg.widths, np.float64)
    stats: dict[str, Any] = {}
    for kind in KINDS:
        e = emp[kind]  # (width, depth, seed, n, n)
        r = _relative_deviation(e, th[kind][None, :, None])  # (width, depth, seed)
        r2 = r**2
        rms = np.sqrt(r2.mean(-1))
        se_log = r2.std(-1, ddof=1) / np.sqrt(r.shape[-1]) / (2 * r2.mean(-1))
        fits = []
        for j, depth in enumerate(cfg.depths):
            use = depth / widths <= cfg.fit_depth_over_width
            use[-3:] = True  # at least the 3 largest widths
            s, se, b, chi2 = _fit_slope(np.log(widths[use]), np.log(rms[use, j]), se_log[use, j])
            s_all, se_all, _, _ = _fit_slope(np.log(widths), np.log(rms[:, j]), se_log[:, j])
            fits.append({"depth": depth, "widths_fitted": widths[use].astype(int).tolist(), "slope": s, "se": se,
                         "intercept": b, "chi2_per_dof": chi2,
                         "within_tolerance": bool(abs(s - THEORY_SLOPE) <= 3 * se + cfg.slope_tolerance),
                         "all_widths_slope": s_all, "all_widths_se": se_all})
        # the mean kernel at the largest width against the limit, in standard errors of the mean
        last = e[-1]
        mean = last.mean(1)
        sem = last.std(1, ddof=1) / np.sqrt(last.shape[1])
        z = np.abs(mean - th[kind]) / np.where(sem > 0, sem, np.inf)
        bias = _relative_deviation(mean, th[kind])
        stats[kind] = {
            "relative_deviation": r.tolist(), "rms_relative_deviation": rms.tolist(), "se_log_rms": se_log.tolist(),
            "fits": fits,
            "largest_width_mean": mean.tolist(), "largest_width_sem": sem.tolist(),
            "largest_width_max_z": z.reshape(z.shape[0], -1).max(-1).tolist(),
            "largest_width_mean_relative_bias": bias.tolist(),
            # ||mean - K|| / ||K|| in units of its standard error rms / sqrt(S) (about 1 when the bias is negligible)
            "largest_width_bias_in_standard_errors": (bias / (rms[-1] / np.sqrt(last.shape[1]))).tolist(),
        }
    return stats


# ------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs (or resumes) the reproduction and writes ``width_sweep.png``, ``report.json`` and
    ``report.md`` into ``out_dir``.

    Args:
        out_dir: output folder (created; checked before any computation); the sweep's store
            ``width_sweep.zarr`` is kept there for a resume.
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed (inputs and network draws), in ``[0, 2**20]``.
        progress: show the sweep's progress bar.
        config: explicit sizes (overrides ``quick``; :data:`MID` is the size the committed results used).
    """
    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a width_sweep.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    if seed > 2**20:
        raise ValueError(f"seed must be at most 2**20 here (network seeds are 100000 * seed + i), got {seed}")
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()

    x64 = _inputs(cfg, seed)
    max_depth = max(cfg.depths)
    w_std, b_std = math.sqrt(SIGMA_W2), math.sqrt(SIGMA_B2)
    with jax.enable_x64(True):  # the limits in float64 in every mode
        th_all = jax.tree.map(lambda a: np.asarray(a, np.float64),
                              _theory(jnp.asarray(x64), jnp.asarray(w_std), jnp.asarray(b_std), max_depth=max_depth))
    idx = np.asarray(cfg.depths) - 1
    th = {k: v[idx] for k, v in th_all.items()}
    fdt = jnp.result_type(float)
    precision = float64_comparison(lambda x, w, b: _theory(x, w, b, max_depth=max_depth), jnp.asarray(x64, fdt),
                                   jnp.asarray(w_std, fdt), jnp.asarray(b_std, fdt))
    t_theory = time.perf_counter() - t0

    x = jnp.asarray(x64, fdt)
    seeds = np.arange(cfg.seeds, dtype=np.int64) + 100000 * seed
    res, history = _sweep(cfg, out, x, seeds, progress)
    emp = {k: np.asarray(res[k].values, np.float64) for k in KINDS}
    loop = _loop_timing(cfg, x, seeds)

    stats = _statistics(cfg, emp, th)
    finite = bool(all(np.all(np.isfinite(emp[k])) for k in KINDS))
    within = {k: [f["within_tolerance"] for f in stats[k]["fits"]] for k in KINDS}
    n_net = int(np.prod(emp["ntk"].shape[:3]))
    sweep_all = sum(h["seconds"] for h in history)
    computed = sum(h["networks_computed"] for h in history)
    checks = {
        "kernels_finite": finite,
        "nngp_slopes_within_tolerance": int(sum(within["nngp"])),
        "ntk_slopes_within_tolerance": int(sum(within["ntk"])),
        "depths": len(cfg.depths),
        "all_slopes_within_tolerance": bool(all(within["nngp"]) and all(within["ntk"])),
        "nngp_largest_width_bias_in_standard_errors": float(max(stats["nngp"]["largest_width_bias_in_standard_errors"])),
        "ntk_largest_width_bias_in_standard_errors": float(max(stats["ntk"]["largest_width_bias_in_standard_errors"])),
    }
    ok = finite and checks["all_slopes_within_tolerance"]
    slopes = lambda k: ", ".join(f"{f['slope']:.3f}" for f in stats[k]["fits"])
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "size": _size_name(cfg), "seed": seed,
        "dtype": dtype_name(), "network_dtype": dtype_name(), "theory_dtype": "float64",
        "seconds": time.perf_counter() - t0, "config": config_dict(cfg),
        "network": {"activation": "relu", "parameterization": "ntk", "sigma_w2": SIGMA_W2, "sigma_b2": SIGMA_B2,
                    "max_width": max(cfg.widths), "max_depth": max_depth},
        "theory_slope": THEORY_SLOPE,
        "timings": {
            "theory_seconds": t_theory, "sweep_seconds": history[-1]["seconds"], "sweep_seconds_all_runs": sweep_all,
            "networks": n_net, "networks_computed_this_run": history[-1]["networks_computed"],
            "devices": jax.local_device_count(),
            "sweep_seconds_per_network": sweep_all / computed if computed else None,
            "loop": loop,
            "runs": history,
        },
        "grid": {"width": list(cfg.widths), "depth": list(cfg.depths), "seed": seeds.tolist(),
                 "inputs": x64.tolist()},
        "theory": {k: th[k].tolist() for k in KINDS},
        "statistics": stats, "checks": checks, "precision": precision,
        "summary": (f"log-log slope of the rms relative deviation against the width, per depth "
                    f"{nums(cfg.depths)}: NNGP {slopes('nngp')}; NTK {slopes('ntk')} (theory -1/2); "
                    f"{checks['nngp_slopes_within_tolerance'] + checks['ntk_slopes_within_tolerance']} of "
                    f"{2 * len(cfg.depths)} within 3 SE + {num(cfg.slope_tolerance)}"),
        "versions": versions(),
    }
    _figure(report, out / "width_sweep.png")
    write_report(out, report, _markdown(report))
    return report


def _size_name(cfg: Config) -> str:
    return {QUICK: "quick", MID: "mid", FULL: "full"}.get(cfg, "custom")


def _figure(r, path):
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, no backend switch
    )
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, 2, sharey=False)
    widths = np.asarray(r["grid"]["width"], np.float64)
    depths = r["grid"]["depth"]
    for ax, kind in zip(axes, KINDS, strict=True):
        s = r["statistics"][kind]
        rms = np.asarray(s["rms_relative_deviation"])
        se = np.asarray(s["se_log_rms"])
        for j, (d, f) in enumerate(zip(depths, s["fits"], strict=True)):
            c = (j + 0.5) / len(depths)
            color = (c, 0.25, 1 - c)
            ax.errorbar(widths, rms[:, j], yerr=[rms[:, j] * (1 - np.exp(-se[:, j])), rms[:, j] * (np.exp(se[:, j]) - 1)],
                        fmt="o", ms=3, color=color, capsize=2,
                        label=f"L={d}: slope {f['slope']:.3f} ± {f['se']:.3f}")
            ax.plot(widths, np.exp(f["intercept"]) * widths ** f["slope"], "-", lw=1, color=color)
        guide = np.exp(np.mean(np.log(rms[0]))) * (widths / widths[0]) ** -0.5
        ax.plot(widths, guide, "k--", lw=2, label=r"$n^{-1/2}$")
        ax.set(xscale="log", yscale="log", xlabel="width n", ylabel=r"rms$_{seeds}$ $\|\hat K - K\|_F / \|K\|_F$",
               title=f"empirical {kind.upper()} vs infinite width (ReLU, {r['config']['seeds']} seeds)")
        ax.set_xticks(widths, [str(int(w)) for w in widths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _markdown(r):
    cfg, t, c, s = r["config"], r["timings"], r["checks"], r["statistics"]
    loop = t["loop"]
    lines = [
        "# Empirical NNGP/NTK of finite networks vs the infinite-width kernels across widths", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s"
        + (f" (this run, resumed from the store; the sweep took {t['sweep_seconds_all_runs']:.0f} s over "
           f"{len(t['runs'])} runs) " if len(t["runs"]) > 1 else " ")
        + f"({r['size']} size, {r['dtype']} networks, theory in {r['theory_dtype']}). {r['summary']}.", "",
        "## Setup", "",
        f"- Networks: ReLU MLPs, NTK parameterization, sigma_w^2 = {num(r['network']['sigma_w2'])}, "
        f"sigma_b^2 = {num(r['network']['sigma_b2'])}, one output; `rmtjax.finite.PaddedMLP` padded to width "
        f"{r['network']['max_width']} and depth {r['network']['max_depth']}.",
        f"- Grid: width in {nums(cfg['widths'])} x depth in {nums(cfg['depths'])} x {cfg['seeds']} seeds = "
        f"{t['networks']} networks, one `rmtjax.sweep.run` (chunks of {cfg['chunk_size']}, {t['devices']} host "
        f"device(s), resumable from `width_sweep.zarr`).",
        f"- Kernels on {cfg['n_inputs']} Gaussian inputs of dimension {cfg['in_features']} (norm sqrt(d)): empirical "
        "NNGP = sigma_w^2/n phi(z^L).phi(z^L)' + sigma_b^2, empirical NTK = grad f . grad f' (jax.jacrev); limits "
        "from `rmtjax.kernels.kernel(FullyConnected)` in float64.",
        "- Deviation: r = ||K_emp - K||_F / ||K||_F per network; rms over seeds per (width, depth); slope by "
        "weighted least squares of log rms on log width over the widths with L/n <= "
        f"{num(cfg['fit_depth_over_width'])} (weights from the seeds' standard errors, SE inflated by sqrt(chi^2/dof) "
        "when > 1). Within tolerance: |slope + 1/2| <= 3 SE + "
        f"{num(cfg['slope_tolerance'])}.", "",
        "## Slopes (theory -1/2)", "",
        f"Fitted over the widths with L/n <= {num(cfg['fit_depth_over_width'])} (at least the 3 largest); the last two "
        "columns fit all widths (not used for the check).", "",
        "| depth | widths fitted | NNGP slope | SE | within | NTK slope | SE | within | all widths: NNGP | NTK |",
        "|---:|---|---:|---:|:---:|---:|---:|:---:|---:|---:|",
    ]
    for fn, ft in zip(s["nngp"]["fits"], s["ntk"]["fits"], strict=True):
        lines.append(f"| {fn['depth']} | {nums(fn['widths_fitted'])} | {fn['slope']:.3f} | {fn['se']:.3f} | "
                     f"{'yes' if fn['within_tolerance'] else 'no'} | {ft['slope']:.3f} | {ft['se']:.3f} | "
                     f"{'yes' if ft['within_tolerance'] else 'no'} | {fn['all_widths_slope']:.3f} ± "
                     f"{fn['all_widths_se']:.3f} | {ft['all_widths_slope']:.3f} ± {ft['all_widths_se']:.3f} |")
    lines += ["", f"NNGP: {c['nngp_slopes_within_tolerance']} of {c['depths']} depths within tolerance; NTK: "
              f"{c['ntk_slopes_within_tolerance']} of {c['depths']}.", "",
              "## rms relative deviation (rows: width; columns: depth)", ""]
    for kind in KINDS:
        rms = s[kind]["rms_relative_deviation"]
        lines += [f"**{kind.upper()}**", "", "| width | " + " | ".join(f"L={d}" for d in cfg["depths"]) + " |",
                  "|---:|" + "---:|" * len(cfg["depths"])]
        lines += [f"| {w} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for w, row in zip(cfg["widths"], rms, strict=True)]
        lines.append("")
    lines += ["## The mean kernel at the largest width", "",
              f"At width {cfg['widths'][-1]}, the mean over {cfg['seeds']} seeds against the limit: "
              "||mean - K||_F / ||K||_F in units of its standard error (rms deviation / sqrt(seeds); about 1 when the "
              "O(1/n) bias is negligible), largest over the depths: NNGP "
              f"{c['nngp_largest_width_bias_in_standard_errors']:.2f}, NTK "
              f"{c['ntk_largest_width_bias_in_standard_errors']:.2f}; relative deviation of the mean per depth, NNGP "
              f"{nums(s['nngp']['largest_width_mean_relative_bias'], 2)}, NTK "
              f"{nums(s['ntk']['largest_width_mean_relative_bias'], 2)}.", "",
              "## Timings", "",
              f"- Vectorised sweep: {t['sweep_seconds_all_runs']:.1f} s for the {t['networks']} networks of the whole "
              f"grid in {len(t['runs'])} run(s) (one compiled program, compilation included; "
              f"{num(t['sweep_seconds_per_network'], 3)} s per network, every network padded to the largest width and "
              f"depth), on {t['devices']} host device(s).",
              "- Python loop over jitted calls on a subset ((width, depth) = "
              + ", ".join(f"({p['width']}, {p['depth']})" for p in loop["pairs"])
              + f" x {loop['seeds_each']} seed(s) = {loop['networks']} networks, "
              f"{loop['programs_compiled']} programs compiled): {loop['seconds']:.1f} s "
              f"({num(loop['seconds_per_network'], 3)} s per network, compilation included"
              + (f"; {num(loop['compile_seconds_per_program'], 3)} s to compile a program, "
                 f"{num(loop['run_seconds_per_network'], 3)} s per later call). Extrapolated to the whole grid (one "
                 "program per (width, depth), one call per network, at the mean of the two corners): about "
                 f"{loop['whole_grid_seconds_extrapolated']:.0f} s." if "whole_grid_seconds_extrapolated" in loop
                 else ")."),
              *([f"- Comparison: the vectorised sweep took {t['sweep_seconds_all_runs'] / loop['whole_grid_seconds_extrapolated']:.2f}x "
                 "the extrapolated loop. Every padded network costs as much as the largest one (width "
                 f"{max(cfg['widths'])}, depth {max(cfg['depths'])}), while each of the loop's programs compiles in "
                 f"{num(loop['compile_seconds_per_program'], 2)} s here: on this grid the padding, not the compilation, "
                 "decides the cost; the sweep's gains are one program, resumable chunks and sharding over devices."] if "whole_grid_seconds_extrapolated" in loop
                else []),
              f"- Theory (float64, every depth in one call): {t['theory_seconds']:.1f} s.", ""]
    lines += precision_lines(r["precision"])
    lines += ["Figure: `width_sweep.png` (rms relative deviation against the width, one colour per depth, the "
              "weighted fit as a line, the n^-1/2 guide dashed; left NNGP, right NTK).", ""]
    return "\n".join(lines)
