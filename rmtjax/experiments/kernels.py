r"""Infinite-width NNGP/NTK across depths versus Monte-Carlo finite-width networks.

``rmtjax reproduce kernels`` checks the kernel engine against the networks it describes. For
each activation (Relu, Erf, Tanh) and depth :math:`L` it compares

* the theory: :func:`rmtjax.kernels.kernel` with ``all_depths=True`` — one call gives the NNGP
  :math:`\Sigma^{(L)}` and NTK :math:`\Theta^{(L)}` of every depth (NTK parameterization; Lee et
  al. 2018, eq. 5; Jacot et al. 2018, Thm. 1; Arora et al. 2019, eq. 6);
* Monte-Carlo estimates from ``S`` independent initialisations of the finite network
  ``stax.serial(Dense(n), phi, ..., Dense(n), phi, Dense(1))`` built with :mod:`rmtjax.stax`:

  .. math::
      \hat\Sigma = \frac1S\sum_{s=1}^S f_s(X) f_s(X)^\top, \qquad
      \hat\Theta = \frac1S\sum_{s=1}^S J_s J_s^\top, \quad
      J_s = \frac{\partial f_s(X)}{\partial \theta}

  (the outputs have mean zero, so :math:`\hat\Sigma` is unbiased for the NNGP; the Jacobian is
  taken by ``jax.jacrev`` over all parameters).

The data are ``n_points`` equally spaced points on a great circle of radius :math:`\sqrt d` in
:math:`\mathbb R^d` (so :math:`x\cdot x'/d = \cos\Delta`): every kernel is a function of the
angle :math:`\Delta` between the inputs, which the figure plots.

For each depth the report gives the relative Frobenius error
:math:`e = \|\hat K - K\|_F / \|K\|_F` and its Monte-Carlo noise floor
:math:`e_{\rm MC} = (\sum_{ij}\mathrm{SE}_{ij}^2)^{1/2} / \|K\|_F`, with
:math:`\mathrm{SE}_{ij}` the standard deviation over seeds divided by :math:`\sqrt S` (the
error expected from sampling alone: :math:`\mathbb E[e^2] = e_{\rm MC}^2` when the theory is
right). The theory agrees with the networks when :math:`e \le` ``tolerance_se`` :math:`\times
e_{\rm MC}`. The finite-width bias, :math:`O(L/n)` for :math:`L \ge 2` (Hanin & Nica 2020;
Dyer & Gur-Ari 2020), is far below the sampling error at the widths used here; at
:math:`L = 1` both estimators are exactly unbiased at any width.

Each (activation, depth) step is saved to ``resume.json`` in the output folder as it completes
(:class:`rmtjax.experiments._resume.ResumeFile`: atomic rewrites, fingerprinted by the
configuration); a rerun with the same configuration skips the steps already there. In a float32
run the report also gives the largest relative difference of the theory kernels to float64.

Example:
    >>> from rmtjax.experiments import kernels
    >>> report = kernels.run("out/kernels", quick=True)  # doctest: +SKIP
    >>> report["ok"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import activations, stax
from ..kernels import FullyConnected, kernel
from ._common import check_seed, config_dict, dtype_name, int_grid, number, positive_int, versions
from ._output import check_out_dir, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile, fingerprint

__all__ = ["ACTIVATIONS", "ActivationSetup", "Config", "QUICK", "circle_data", "compare", "mc_samples", "run"]

NAME = "kernels"


@dataclasses.dataclass(frozen=True)
class ActivationSetup:
    """An activation and the initialisation it is run at (NTK parameterization)."""

    make: Any  # () -> rmtjax.activations module
    W_std: float
    b_std: float


#: Activations known to the experiment; the index in this table seeds the random keys, so the
#: keys of a step do not depend on which other activations are selected.
ACTIVATIONS: dict[str, ActivationSetup] = {
    "relu": ActivationSetup(activations.Relu, W_std=1.4, b_std=0.1),
    "erf": ActivationSetup(activations.Erf, W_std=1.5, b_std=0.1),
    "tanh": ActivationSetup(activations.Tanh, W_std=1.5, b_std=0.1),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the experiment (every field enters the resume fingerprint).

    Attributes:
        n_points: inputs on the circle (the kernels are ``n_points x n_points``).
        dim: input dimension ``d``.
        width: hidden width ``n`` of the finite networks.
        depths: numbers of hidden layers ``L`` compared.
        activations: names in :data:`ACTIVATIONS`.
        n_seeds_nngp: initialisations averaged for the NNGP (a forward pass each).
        n_seeds_ntk: initialisations averaged for the NTK (a Jacobian each; the NTK
            concentrates, so it needs fewer).
        tolerance_se: agreement means ``error <= tolerance_se x noise floor``.
        seed: master seed of the data and of the initialisations.
        dtype: ``"float64"`` or ``"float32"`` (taken from ``jax_enable_x64``).
    """

    n_points: int = 16
    dim: int = 32
    width: int = 512
    depths: tuple[int, ...] = (1, 2, 3, 4)
    activations: tuple[str, ...] = ("relu", "erf", "tanh")
    n_seeds_nngp: int = 512
    n_seeds_ntk: int = 64
    tolerance_se: float = 4.0
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self):
        positive_int(self.n_points, "n_points", lo=3)
        positive_int(self.dim, "dim", lo=2)
        positive_int(self.width, "width", lo=1)
        int_grid(self.depths, "depths", lo=1)
        if (isinstance(self.activations, str) or not isinstance(self.activations, tuple) or not self.activations
                or any(a not in ACTIVATIONS for a in self.activations) or len(set(self.activations)) != len(self.activations)):
            raise ValueError(f"activations must be a non-empty tuple of distinct names among {sorted(ACTIVATIONS)}, "
                             f"got {self.activations!r}")
        positive_int(self.n_seeds_nngp, "n_seeds_nngp", lo=2)
        positive_int(self.n_seeds_ntk, "n_seeds_ntk", lo=2)
        if self.n_seeds_nngp % self.n_seeds_ntk:
            raise ValueError(f"n_seeds_ntk must divide n_seeds_nngp, got {self.n_seeds_ntk} and {self.n_seeds_nngp}")
        number(self.tolerance_se, "tolerance_se", lo=0, lo_open=True)
        check_seed(self.seed)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def fingerprint(self) -> str:
        """A short hash of the configuration: steps recorded under another one are not reused."""
        return fingerprint(NAME, config_dict(self))


#: ``--quick``: small enough to finish in well under a minute on two CPU cores.
QUICK = Config(n_points=12, dim=16, width=128, depths=(1, 2), activations=("relu", "erf", "tanh"),
               n_seeds_nngp=256, n_seeds_ntk=32)

_CHUNK = 16  # initialisations held in memory at once (bounds memory)
_GRID = 181  # angles of the theory curves in the figure


# ------------------------------------------------------------------------------------------
# Data and estimators
# ------------------------------------------------------------------------------------------


def circle_data(n_points: int, dim: int, seed: int, angles: np.ndarray | None = None) -> np.ndarray:
    r"""Points :math:`x_k = \sqrt d\,(\cos\alpha_k\,u + \sin\alpha_k\,v)` on a great circle.

    ``u, v`` are orthonormal directions drawn from ``seed``; ``angles`` defaults to
    :math:`\alpha_k = 2\pi k / n`. Then :math:`x_k\cdot x_l / d = \cos(\alpha_k - \alpha_l)`.

    Returns:
        A ``float64`` NumPy array of shape ``(len(angles), dim)``.
    """
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    if angles is None:
        angles = 2 * np.pi * np.arange(n_points) / n_points
    angles = np.asarray(angles, dtype=np.float64)
    return math.sqrt(dim) * (np.cos(angles)[:, None] * basis[:, 0] + np.sin(angles)[:, None] * basis[:, 1])


def _finite_network(setup: ActivationSetup, depth: int, width: int):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=setup.W_std, b_std=setup.b_std), stax.Activation(setup.make())]
    layers.append(stax.Dense(1, W_std=setup.W_std, b_std=setup.b_std))
    return stax.serial(*layers)


def _chunk_size(n_seeds_nngp: int, n_seeds_ntk: int) -> int:
    """NNGP seeds per chunk: a multiple of the group (NNGP seeds per NTK seed), about
    ``_CHUNK`` seeds, dividing ``n_seeds_nngp`` so every chunk has the same shape."""
    group = n_seeds_nngp // n_seeds_ntk
    per_chunk = max(1, _CHUNK // group)
    while n_seeds_ntk % per_chunk:
        per_chunk -= 1
    return group * per_chunk


def mc_samples(setup: ActivationSetup, depth: int, width: int, x: jax.Array, key: jax.Array,
               n_seeds_nngp: int, n_seeds_ntk: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-initialisation kernels of a finite network: :math:`f f^\top` and :math:`J J^\top`.

    The seeds are processed in chunks (bounded memory): in one function compiled per network
    structure (and reused by every chunk and rerun), the chunk's parameters are drawn by the
    network's own ``init_fn`` (vmapped), then
    :math:`f f^\top` for every seed of the chunk (vmapped forward passes) and :math:`J J^\top`
    for the first seed of each group of ``n_seeds_nngp // n_seeds_ntk`` (``lax.map`` over
    ``jax.jacrev``).

    Args:
        setup: activation and initialisation.
        depth: number of hidden layers.
        width: hidden width.
        x: inputs, shape ``(n, d)``.
        key: a PRNG key.
        n_seeds_nngp: number of initialisations for the NNGP.
        n_seeds_ntk: number for the NTK (must divide ``n_seeds_nngp``).

    Returns:
        ``(nngp, ntk)`` of shapes ``(n_seeds_nngp, n, n)`` and ``(n_seeds_ntk, n, n)``, float64.
    """
    if n_seeds_nngp % n_seeds_ntk:
        raise ValueError(f"n_seeds_ntk must divide n_seeds_nngp, got {n_seeds_ntk} and {n_seeds_nngp}")
    group = n_seeds_nngp // n_seeds_ntk
    keys = jax.random.split(key, n_seeds_nngp)
    size = _chunk_size(n_seeds_nngp, n_seeds_ntk)
    parts = [_chunk_kernels(keys[i:i + size], x, setup=setup, depth=depth, width=width, group=group)
             for i in range(0, n_seeds_nngp, size)]
    nngp = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
    ntk = np.concatenate([np.asarray(p[1], np.float64) for p in parts])
    return nngp, ntk


@functools.partial(jax.jit, static_argnames=("setup", "depth", "width", "group"))
def _chunk_kernels(keys, x, *, setup, depth, width, group):
    """f f^T for every key of the chunk and J J^T for every ``group``-th one (compiled once per
    structure and shape, shared by every chunk and by reruns)."""
    init_fn, apply_fn, _ = _finite_network(setup, depth, width)
    n, d = x.shape

    def outputs(params):
        return apply_fn(params, x)[:, 0]

    def ntk_one(params):
        jac = jax.jacrev(outputs)(params)  # pytree of (n, *param.shape)
        rows = [j.reshape(n, -1) for j in jax.tree_util.tree_leaves(jac)]
        return sum(r @ r.T for r in rows)

    params = jax.vmap(lambda k: init_fn(k, (-1, d))[1])(keys)
    f = jax.vmap(outputs)(params)  # (seeds, n)
    ntk = jax.lax.map(ntk_one, jax.tree_util.tree_map(lambda a: a[::group], params))
    return f[:, :, None] * f[:, None, :], ntk


def _circulant_profile(samples: np.ndarray) -> np.ndarray:
    """Per-seed average of ``K[i, i + m mod n]`` over ``i``, for ``m = 0..n // 2``."""
    n = samples.shape[-1]
    rows = np.arange(n)[:, None]
    cols = (rows + np.arange(n // 2 + 1)[None, :]) % n
    return samples[:, rows, cols].mean(axis=1)


def _mean_se(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])


def _summarise(samples: np.ndarray) -> dict[str, Any]:
    mean, se = _mean_se(samples)
    pmean, pse = _mean_se(_circulant_profile(samples))
    return {"mean": mean.tolist(), "se": se.tolist(), "profile_mean": pmean.tolist(), "profile_se": pse.tolist(),
            "n_seeds": int(samples.shape[0])}


def compare(mc_mean: np.ndarray, mc_se: np.ndarray, theory: np.ndarray, tolerance_se: float) -> dict[str, Any]:
    r"""Relative Frobenius error of a Monte-Carlo kernel and its sampling noise floor.

    Returns:
        ``rel_error`` :math:`\|\hat K - K\|_F/\|K\|_F`, ``noise_floor``
        :math:`\|\mathrm{SE}\|_F/\|K\|_F`, ``ratio`` (their quotient, about 1 when only sampling
        noise separates them), ``max_abs_z`` (the largest entrywise ``|K_hat - K| / SE``) and
        ``agrees`` (``ratio <= tolerance_se``).
    """
    mc_mean, mc_se, theory = (np.asarray(a, np.float64) for a in (mc_mean, mc_se, theory))
    norm = np.linalg.norm(theory)
    err = np.linalg.norm(mc_mean - theory) / norm
    floor = np.linalg.norm(mc_se) / norm
    z = np.abs(mc_mean - theory)[mc_se > 0] / mc_se[mc_se > 0]
    ratio = err / floor if floor > 0 else math.inf
    return {"rel_error": float(err), "noise_floor": float(floor), "ratio": float(ratio),
            "max_abs_z": float(z.max()) if z.size else 0.0, "agrees": bool(ratio <= tolerance_se)}


# ------------------------------------------------------------------------------------------
# Theory
# ------------------------------------------------------------------------------------------


_all_depths = jax.jit(lambda a, b, net: kernel(a, b, net, all_depths=True))


def _theory(cfg: Config, name: str, x: np.ndarray, dtype) -> dict[str, Any]:
    """Kernels of every depth on the data and along the circle, and the time they took."""
    setup = ACTIVATIONS[name]
    net = FullyConnected(max(cfg.depths), setup.W_std, setup.b_std, setup.make())
    grid = np.linspace(0.0, np.pi, _GRID)
    xg = circle_data(0, cfg.dim, cfg.seed, angles=grid)
    # the data and the curve's points against the data in one call (one compiled program per
    # activation): rows :n are the kernels on the data, the other rows' first column the curve
    n = x.shape[0]
    xs, xall = jnp.asarray(x, dtype), jnp.asarray(np.concatenate([x, xg]), dtype)

    t0 = time.perf_counter()
    both = jax.block_until_ready(_all_depths(xall, xs, net))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    both = jax.block_until_ready(_all_depths(xall, xs, net))
    second = time.perf_counter() - t0
    nngp, ntk = np.asarray(both.nngp, np.float64), np.asarray(both.ntk, np.float64)
    return {
        "W_std": setup.W_std, "b_std": setup.b_std, "activation": type(net.activation).__name__,
        "nngp": nngp[:, :n], "ntk": ntk[:, :n], "grid": grid, "nngp_curve": nngp[:, n:, 0],
        "ntk_curve": ntk[:, n:, 0],
        "seconds_first_call": first, "seconds": second,
    }


# ------------------------------------------------------------------------------------------
# Steps, resume, report
# ------------------------------------------------------------------------------------------


def _step_key(name: str, depth: int) -> str:
    return f"{name}|depth={depth}"


def _theory_kernels(x, names: tuple[str, ...], depth: int) -> dict[str, Any]:
    """The theory kernels of every depth on ``x`` (the float32 run compares them with float64)."""
    out = {}
    for name in names:
        setup = ACTIVATIONS[name]
        k = _all_depths(x, None, FullyConnected(depth, setup.W_std, setup.b_std, setup.make()))
        out[f"{name} NNGP"], out[f"{name} NTK"] = k.nngp, k.ntk
    return out


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the experiment and writes ``kernels.png``, ``report.json``, ``report.md``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the completed steps.
        quick: use :data:`QUICK` instead of the default :class:`Config`.
        seed: master seed (data and initialisations), in ``[0, 2**32 - 1]``.
        progress: show a tqdm progress bar over (activation, depth) steps.
        config: explicit sizes (overrides ``quick``; its ``seed`` and ``dtype`` are replaced).

    Returns:
        The report (also in ``report.json``); ``report["ok"]`` is true when every step agrees
        with the theory within ``tolerance_se`` noise floors.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    base = config if config is not None else (QUICK if quick else Config())
    if not isinstance(base, Config):
        raise ValueError(f"config must be a kernels.Config, got {type(base).__name__}")
    cfg = dataclasses.replace(base, seed=check_seed(seed), dtype=dtype_name())
    dtype = jnp.dtype(cfg.dtype)
    out = check_out_dir(out_dir)
    fp = cfg.fingerprint()
    resume = ResumeFile(out, NAME, config_dict(cfg))

    x = circle_data(cfg.n_points, cfg.dim, cfg.seed)
    xs = jnp.asarray(x, dtype)
    theory = {name: _theory(cfg, name, x, dtype) for name in cfg.activations}

    todo = [(a, d) for a in cfg.activations for d in cfg.depths]
    resumed = [s for s in todo if _step_key(*s) in resume]
    master = jax.random.key(cfg.seed)
    with tqdm(total=len(todo), initial=len(resumed), desc=f"reproduce {NAME}", unit="step",
              disable=not progress) as bar:
        for name, depth in todo:
            if _step_key(name, depth) in resume:
                continue
            bar.set_postfix_str(f"{name} depth={depth} width={cfg.width}")
            t0 = time.perf_counter()
            key = jax.random.fold_in(jax.random.fold_in(master, list(ACTIVATIONS).index(name)), depth)
            nngp, ntk = mc_samples(ACTIVATIONS[name], depth, cfg.width, xs, key, cfg.n_seeds_nngp, cfg.n_seeds_ntk)
            resume.put(_step_key(name, depth), {"activation": name, "depth": depth, "width": cfg.width,
                                                "seconds": time.perf_counter() - t0, "nngp": _summarise(nngp),
                                                "ntk": _summarise(ntk)})
            bar.update(1)

    steps = []
    for name, depth in todo:
        rec, th = resume[_step_key(name, depth)], theory[name]
        row = {"activation": name, "depth": depth, "width": cfg.width, "seconds": rec["seconds"],
               "resumed": (name, depth) in resumed}
        for k in ("nngp", "ntk"):
            mc = rec[k]
            stats = compare(np.asarray(mc["mean"]), np.asarray(mc["se"]), th[k][depth], cfg.tolerance_se)
            profile = _circulant_profile(th[k][depth][None])[0]
            row[k] = {**stats, "n_seeds": mc["n_seeds"], "profile_mean": mc["profile_mean"],
                      "profile_se": mc["profile_se"], "theory_profile": profile.tolist(),
                      "mc_mean": mc["mean"], "mc_se": mc["se"], "theory": th[k][depth].tolist()}
        steps.append(row)

    precision = float64_comparison(
        _theory_kernels, xs, cfg.activations, max(cfg.depths),
        float32_values={f"{n} {k.upper()}": theory[n][k] for n in cfg.activations for k in ("nngp", "ntk")})
    ok = all(s[k]["agrees"] for s in steps for k in ("nngp", "ntk"))
    report = {
        "experiment": NAME,
        "name": NAME,
        "ok": ok,
        "summary": _summary_line(steps, cfg),
        "config": {**dataclasses.asdict(cfg), "config_hash": fp, "quick": base is QUICK},
        "dtype": cfg.dtype,
        "data": {"kind": "great circle", "n_points": cfg.n_points, "dim": cfg.dim,
                 "angles": (2 * np.pi * np.arange(cfg.n_points) / cfg.n_points).tolist()},
        "theory": {
            name: {"activation": th["activation"], "W_std": th["W_std"], "b_std": th["b_std"],
                   "parameterization": "ntk", "seconds": th["seconds"],
                   "seconds_first_call": th["seconds_first_call"], "grid": th["grid"].tolist(),
                   "nngp_curve": th["nngp_curve"].tolist(), "ntk_curve": th["ntk_curve"].tolist()}
            for name, th in theory.items()
        },
        "steps": steps,
        "precision": precision,
        "resume": resume.summary(),
        "timing": {},
        "versions": versions(),
        "files": {"figure": "kernels.png", "report_md": "report.md", "resume": resume.path.name},
    }
    _figure(report, out / "kernels.png")
    report["timing"] = {
        "total_seconds": time.perf_counter() - t_start,
        "monte_carlo_seconds": sum(s["seconds"] for s in steps),
        "monte_carlo_seconds_this_run": sum(s["seconds"] for s in steps if not s["resumed"]),
        "theory_seconds": sum(th["seconds"] for th in theory.values()),
        "resumed_steps": len(resumed),
        "computed_steps": len(todo) - len(resumed),
    }
    write_report(out, report, _markdown(report))
    return report


def _summary_line(steps: Sequence[dict[str, Any]], cfg: Config) -> str:
    n_ok = sum(s[k]["agrees"] for s in steps for k in ("nngp", "ntk"))
    worst = max(s[k]["ratio"] for s in steps for k in ("nngp", "ntk"))
    return (f"{n_ok}/{2 * len(steps)} kernels agree with the theory within {cfg.tolerance_se:g} noise floors "
            f"(largest error/floor ratio {worst:.2f})")


def _figure(report: dict[str, Any], path: Path) -> None:
    """Kernel vs angle (theory lines, Monte-Carlo points) and relative error vs depth."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    names = list(report["theory"])
    fig = Figure(figsize=(4.2 * len(names), 10.5), layout="constrained")
    axes = fig.subplots(3, len(names), squeeze=False)
    depths = sorted({s["depth"] for s in report["steps"]})
    cmap = colormaps["viridis"]
    n = report["data"]["n_points"]
    mc_angles = 2 * np.pi * np.arange(n // 2 + 1) / n
    for j, name in enumerate(names):
        th = report["theory"][name]
        rows = {s["depth"]: s for s in report["steps"] if s["activation"] == name}
        for i, k in enumerate(("nngp", "ntk")):
            ax = axes[i, j]
            for c, depth in enumerate(depths):
                color = cmap(c / max(len(depths) - 1, 1))
                ax.plot(th["grid"], th[f"{k}_curve"][depth], color=color, lw=1.5, label=f"L={depth}")
                s = rows[depth][k]
                ax.errorbar(mc_angles, s["profile_mean"], yerr=s["profile_se"], fmt="o", ms=3.5, color=color,
                            capsize=2, lw=1)
            ax.set_xlabel(r"angle $\Delta$ between inputs")
            ax.set_ylabel("NNGP $\\Sigma^{(L)}$" if k == "nngp" else "NTK $\\Theta^{(L)}$")
            ax.set_title(f"{th['activation']} ($\\sigma_w$={th['W_std']:g}, $\\sigma_b$={th['b_std']:g}): {k.upper()}")
            ax.set_xticks([0, np.pi / 2, np.pi], ["0", r"$\pi/2$", r"$\pi$"])
            if j == 0:
                ax.legend(title="lines: theory, dots: MC", fontsize=8)
        ax = axes[2, j]
        for k, marker in (("nngp", "o"), ("ntk", "s")):
            err = [rows[d][k]["rel_error"] for d in depths]
            floor = [rows[d][k]["noise_floor"] for d in depths]
            ax.plot(depths, err, marker=marker, label=f"{k.upper()} error")
            ax.plot(depths, floor, ls="--", color=ax.lines[-1].get_color(), label=f"{k.upper()} MC noise floor")
        ax.set_yscale("log")
        ax.set_xlabel("depth L (hidden layers)")
        ax.set_ylabel(r"$\|\hat K - K\|_F / \|K\|_F$")
        ax.set_xticks(depths)
        ax.set_title(f"width {report['config']['width']}: relative error vs depth")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 4)  # a band above the curves for the legend (it covered them)
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    save_figure(fig, path, dpi=110)


def _markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    tol = cfg["tolerance_se"]
    lines = [
        "# Infinite-width NNGP/NTK vs Monte-Carlo finite networks",
        "",
        f"**{'Reproduced' if report['ok'] else 'NOT reproduced'}**: {report['summary']}.",
        "",
        f"Data: {cfg['n_points']} points equally spaced on a great circle of radius sqrt(d) in d = {cfg['dim']}. "
        f"Finite networks: `stax.serial(Dense({cfg['width']}), phi, ..., Dense(1))` (NTK parameterization), "
        f"NNGP from {cfg['n_seeds_nngp']} initialisations (mean of f f^T), NTK from {cfg['n_seeds_ntk']} "
        "(mean of J J^T, J by `jax.jacrev`). Theory: `rmtjax.kernels.kernel(x, None, FullyConnected(...), "
        "all_depths=True)`, one call per activation for all depths.",
        "",
        "Error = ||K_MC - K||_F / ||K||_F; noise floor = ||SE||_F / ||K||_F with SE = std over seeds / sqrt(seeds), "
        f"the error sampling alone produces. A kernel agrees when error <= {tol:g} x noise floor.",
        "",
        "| activation | depth | NNGP error | NNGP floor | ratio | NTK error | NTK floor | ratio | agrees |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for s in report["steps"]:
        a, b = s["nngp"], s["ntk"]
        agree = "yes" if a["agrees"] and b["agrees"] else "**no**"
        lines.append(
            f"| {report['theory'][s['activation']]['activation']} | {s['depth']} | {a['rel_error']:.2%} | "
            f"{a['noise_floor']:.2%} | {a['ratio']:.2f} | {b['rel_error']:.2%} | {b['noise_floor']:.2%} | "
            f"{b['ratio']:.2f} | {agree} |"
        )
    t = report["timing"]
    v = report["versions"]
    lines += [
        "",
        f"![kernels vs angle and depth]({report['files']['figure']})",
        "",
        "## Timing",
        "",
        f"- total {t['total_seconds']:.1f} s; Monte Carlo {t['monte_carlo_seconds']:.1f} s over "
        f"{len(report['steps'])} steps ({t['resumed_steps']} resumed from `{report['files']['resume']}`)",
        f"- theory, all depths, every activation: {t['theory_seconds'] * 1e3:.1f} ms (after compilation)",
        "",
        "## Environment",
        "",
        f"rmtjax {v['rmtjax']}, jax {v['jax']}, jaxlib {v['jaxlib']}, numpy {v['numpy']}, Python {v['python']}, "
        f"{v['backend']} x {v['devices']} device(s), {cfg['dtype']}, seed {cfg['seed']}, "
        f"config `{cfg['config_hash']}`.",
        "",
    ]
    return "\n".join(lines[:-4] + precision_lines(report.get("precision")) + lines[-4:])
