r"""Finite-width corrections to the infinite-width kernels, measured on Flax networks across widths.

``rmtjax reproduce finite-width`` checks the :math:`1/n` theory of :mod:`rmtjax.finite_width`
against ensembles of finite networks (:func:`rmtjax.finite.init_ensemble`, NTK parameterization,
hidden widths :math:`n`), for one input :math:`x` with :math:`|x|^2/d = 1`:

(a) **the mean correction of the NNGP**: the readout's conjugate kernel
    :math:`\hat G_n = C_b + C_W|h^{(L)}|^2/n` has :math:`n(\mathbb E\hat G_n - K) \to G^{\{1\}}`
    (``nngp_corrections(...).correction``; Yaida 2020; PDLT eq. 4.115). Tanh with biases has a
    non-zero :math:`G^{\{1\}}`; ReLU without biases has exactly 0 (a null check). The raw
    Monte-Carlo mean has standard error :math:`n\,\mathrm{se} = \sqrt{nV/N}`, which grows with
    :math:`n`; the estimator used subtracts a control variate with mean exactly zero: with the
    network's own conjugate kernels :math:`\hat G^{(\ell)}` of every layer and the length map
    :math:`F(q) = \mathbb E\phi(\sqrt q z)^2`, the innovations
    :math:`\xi_\ell = \hat G^{(\ell+1)} - C_b - C_W F(\hat G^{(\ell)})` satisfy
    :math:`\mathbb E[\xi_\ell \mid \text{layers} \le \ell] = 0` exactly (the preactivations of layer
    :math:`\ell` are Gaussian with covariance :math:`\hat G^{(\ell)}` given the layer below), so
    :math:`\hat G^{(L+1)} - \sum_\ell c_\ell\xi_\ell` has the same mean for any constants
    :math:`c_\ell`; with :math:`c_\ell = \prod_{k>\ell} C_W F'(K^{(k)})` (the infinite-width linear
    response) it cancels the :math:`O(n^{-1/2})` fluctuation, leaving :math:`O(1/n)`: the
    standard error of :math:`n(\mathbb E\hat G - K)` no longer grows with :math:`n`. Both
    estimates are reported; the check fits :math:`n(\bar G - K) = A + B/n` across widths (weighted
    least squares, errors inflated by :math:`\sqrt{\chi^2/\mathrm{dof}}` when above 1) and compares
    the intercept :math:`A` with :math:`G^{\{1\}}`.
    **The vertex**: :math:`n\operatorname{Var}\hat G_n \to V` (``nngp_corrections(...).vertex``,
    PDLT eq. 4.90), same fit.
(b) **the NTK's relative variance**: :math:`\operatorname{Var}\hat\Theta/\mathbb E^2\hat\Theta`
    of the empirical NTK :math:`|\partial f(x)/\partial\theta|^2` against :math:`L/n`, vs
    ``ntk_fluctuations(...).relative_variance()`` (Hanin & Nica 2019; Dyer & Gur-Ari 2019), for
    ReLU (no bias, :math:`\sigma_w = \sqrt 2`) and tanh with biases; the check fits
    :math:`n\operatorname{Var}/\mathbb E^2 = A + B/n` and compares :math:`A`.
(c) **the NTK change during training**: ensembles of width-:math:`n` networks with one hidden
    layer trained by full-batch gradient descent on the MSE of a two-class Gaussian-mixture data set
    (:func:`rmtjax.data.gaussian_mixture_dataset`, centred targets :math:`\pm 1/2`), learning rate
    ``learning_rate`` :math:`\times\, m/\lambda_{\max}(\Theta_\infty)`. The prediction is
    ``ntk_change`` (the dNTK, ddNTK and second-order step terms): the ensemble mean
    :math:`n\,\mathbb E[\hat\Theta_T - \hat\Theta_0]` on the training inputs converges to its
    ``change``. The check projects each network's :math:`n(\hat\Theta_T - \hat\Theta_0)` on the
    predicted matrix :math:`C`, :math:`\rho = \langle C, n\Delta\hat\Theta\rangle/\langle C, C\rangle`
    (1 when theory and networks agree), fits :math:`\bar\rho_n = A + B/n` across widths and
    compares :math:`A` with 1; the entries at the widest width are compared one by one as well.
    The relative size :math:`\|\hat\Theta_T - \hat\Theta_0\|_F/\|\hat\Theta_0\|_F` of one
    network's change, averaged over the ensemble, is :math:`O(1/n)` (Dyer & Gur-Ari 2019, Huang &
    Yau 2020) with relative corrections of order :math:`n^{-1/2}`: unlike the mean, whose odd terms
    vanish by the symmetry :math:`a \to -a` of the readout weights, a network's change carries the
    product of the dNTK's :math:`O(1/n)` fluctuations and the residuals' :math:`O(n^{-1/2})` ones
    (measured, full run: local log-log slopes -0.84, -0.89, -0.94, -0.95 from width 64 to 1024, a
    fit ``A + B/n`` of :math:`n\times` the change has :math:`\chi^2/\mathrm{dof} = 4.2`). The check
    fits :math:`n\times\text{change} = A + B/\sqrt n` and asks for :math:`A > 0` resolved with an
    acceptable fit; the log-log slopes are reported. ``train_depth`` above 1 keeps only this check
    (``ntk_change`` covers one hidden layer).

Standard errors: of a mean, std/sqrt(N); of a variance, :math:`\sqrt{(m_4 - s^4)/N}` with the
sample fourth central moment; of a ratio, the delta method. Each (activation, depth, width)
ensemble and each training width is saved to ``resume.json`` as it completes (:mod:`._resume`).
In a float32 run the report gives the float32 accuracy of the theory quantities against float64.
Writes ``finite_width.png``, ``report.json`` and ``report.md``.

Example:
    >>> from rmtjax.experiments import finite_width
    >>> report = finite_width.run("out/finite-width", quick=True)  # doctest: +SKIP
    >>> report["ok"]  # doctest: +SKIP
    True
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

from ..activations import Relu, Tanh
from ..kernels import FullyConnected, kernel
from ._common import check_seed, config_dict, dtype_name, int_grid, number, positive_int, versions
from ._output import check_out_dir, num, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["Config", "FULL", "QUICK", "SPECS", "run"]

NAME = "finite-width"
D_IN = 4  # input dimension of panels (a) and (b); the input is ones(d): |x|^2 / d = 1
#: The networks: tanh with biases (non-zero NNGP correction) and critical ReLU without biases.
SPECS = {"tanh": (Tanh, 1.4, 0.3), "relu": (Relu, math.sqrt(2.0), 0.0)}
TRAIN_ACTIVATION = "tanh"
CLASS_SEPARATION = 1.5  # class means +-1.5 e_1 of the training set of panel (c)
_CHUNK_ENTRIES = 2**22  # about 32 MiB of float64 weights per hidden layer and chunk


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        widths: hidden widths of panels (a) and (b) (strictly increasing, ``>= 2``; at least 3 for
            the fits ``A + B/n``).
        depths: hidden layers :math:`L` (strictly increasing, ``>= 1``).
        networks: networks per (activation, depth, width) (``>= 16``).
        train_widths: hidden widths of panel (c) (at least 3: the slope is checked over the
            three widest).
        train_depth: hidden layers of the trained networks (1: compared with ``ntk_change``).
        train_networks: networks trained per width (``>= 2``, for the standard error).
        theory_samples: Monte-Carlo neurons of ``ntk_change`` (``>= 16``).
        train_points, train_dim: the training set (``m`` points in ``d`` dimensions).
        train_steps: full-batch gradient-descent steps.
        learning_rate: in units of :math:`m/\\lambda_{\\max}(\\Theta_\\infty)` (the stability limit
            of gradient descent on the linearized network is 2); in ``(0, 2)``.
        tolerance_se: agreement means ``|measured - theory| <= tolerance_se`` standard errors.
    """

    widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 4)
    networks: int = 2000
    train_widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    train_depth: int = 1
    train_networks: int = 2000
    train_points: int = 16
    train_dim: int = 8
    train_steps: int = 100
    learning_rate: float = 1.0
    theory_samples: int = 2**18
    tolerance_se: float = 5.0

    def __post_init__(self):
        int_grid(self.widths, "widths", lo=2, min_len=3)
        int_grid(self.depths, "depths", lo=1)
        positive_int(self.networks, "networks", lo=16)
        int_grid(self.train_widths, "train_widths", lo=2, min_len=3)
        positive_int(self.train_depth, "train_depth", lo=1)
        positive_int(self.train_networks, "train_networks", lo=2)
        positive_int(self.theory_samples, "theory_samples", lo=16)
        positive_int(self.train_points, "train_points", lo=2)
        positive_int(self.train_dim, "train_dim", lo=1)
        positive_int(self.train_steps, "train_steps", lo=1)
        number(self.learning_rate, "learning_rate", lo=0, hi=2, lo_open=True, hi_open=True)
        number(self.tolerance_se, "tolerance_se", lo=0, lo_open=True)


FULL = Config()
#: ``--quick``: one depth, three small widths, a few hundred networks.
QUICK = Config(widths=(16, 32, 64), depths=(2,), networks=400, train_widths=(32, 128, 512), train_networks=400,
               train_points=8, train_steps=50, theory_samples=2**16)


def _spec(name: str, depth: int) -> FullyConnected:
    act, W, b = SPECS[name]
    return FullyConnected(depth, W_std=W, b_std=b, activation=act())


def _input(dtype) -> jax.Array:
    return jnp.ones((1, D_IN), dtype)


# ------------------------------------------------------------------------------------------
# Theory
# ------------------------------------------------------------------------------------------


def _theory_one(x, name: str, depth: int, width: int) -> dict[str, Any]:
    """Theory of one network: the NNGP, its correction and vertex at the readout, the NTK's
    :math:`n\\operatorname{Var}/\\Theta^2` (``relative_variance()`` at ``width``, times ``width``), and
    the control-variate coefficients."""
    from ..finite_width import nngp_corrections, ntk_fluctuations

    spec = _spec(name, depth)
    c = nngp_corrections(x, spec, widths=width)
    f = ntk_fluctuations(x, spec, widths=width)
    K = c.nngp[:, 0, 0]  # layers 1 .. L + 1
    act = spec.activation
    W, _ = spec.layer_params(x.dtype)
    # s_j = dK^(j+1)/dK^(j) = C_W F'(K^(j)), j = 1..L; xi_j (j = 1..L) reaches the readout
    # multiplied by s_(j+1) ... s_L
    slope = jnp.stack([W[j] ** 2 * jax.grad(act.length_map)(K[j - 1]) for j in range(1, depth + 1)])
    coef = jnp.stack([jnp.prod(slope[j:]) for j in range(1, depth + 1)])
    return {"K": K[-1], "correction": c.correction[-1, 0, 0], "vertex": c.vertex[-1, 0, 0, 0, 0],
            "ntk": f.ntk[-1, 0], "ntk_relative_variance": width * f.relative_variance()[-1, 0],
            "nngp_layers": K, "cv_coefficients": coef}


def _theory_all(x, depths, width) -> dict[str, Any]:
    """Every theory quantity of the run (the float32 run compares them with float64)."""
    out = {}
    for name in SPECS:
        for depth in depths:
            t = _theory_one(x, name, depth, width)
            for q in ("K", "correction", "vertex", "ntk", "ntk_relative_variance"):
                out[f"{name} L={depth} {q}"] = t[q]
    return out


# ------------------------------------------------------------------------------------------
# Finite networks
# ------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _network_statistics(graphdef, rest, params, x):
    r"""Per member: :math:`\hat G^{(\ell)} = C_b + C_W|h^{(\ell-1)}|^2/n_{\ell-1}` of every layer
    :math:`\ell = 1..L+1` (the covariance of layer :math:`\ell`'s preactivations given the layer
    below), :math:`\phi`'s length map at each, and the empirical NTK
    :math:`\hat\Theta(x, x) = |\partial f(x)/\partial\theta|^2` (what
    :func:`rmtjax.finite.ensemble_kernels` computes for one input and one output; done here in the
    same compiled program): ``(size, 3, L + 1)``, the NTK in every entry of the last row."""
    from flax import nnx

    def one(p):
        def out(p):
            return nnx.merge(graphdef, p, rest)(x)[0, 0]

        net = nnx.merge(graphdef, p, rest)
        act = net.spec.activation
        G = net.conjugate_kernels(x)[:, 0, 0]
        grad = jax.grad(out)(p)
        ntk = sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grad))
        return jnp.stack([G, act.length_map(G), jnp.broadcast_to(ntk, G.shape)])

    return jax.vmap(one)(params)


def _chunk(width: int, networks: int, depth: int) -> tuple[int, int]:
    """Networks per chunk (one compiled program per width) and the number of chunks."""
    per = max(8, _CHUNK_ENTRIES // (width * width * max(depth - 1, 1)))
    chunks = -(-networks // per)
    return -(-networks // chunks), chunks


def _ensemble_samples(name: str, depth: int, width: int, networks: int, key, x) -> tuple[np.ndarray, np.ndarray]:
    """Per network: the layer kernels and length maps ``(N, 2, L + 1)`` and the NTK ``(N,)``."""
    from flax import nnx

    from ..finite import init_ensemble

    spec = _spec(name, depth)
    size, chunks = _chunk(width, networks, depth)
    parts = []
    for i in range(chunks):
        ens = init_ensemble(jax.random.fold_in(key, i), spec, D_IN, size=size, width=width)
        graphdef, _, rest = nnx.split(ens.model, nnx.Param, ...)
        parts.append(np.asarray(_network_statistics(graphdef, rest, ens.params, x), np.float64))
    out = np.concatenate(parts)[:networks]
    return out[:, :2], out[:, 2, 0]


def _var_se(v: np.ndarray) -> tuple[float, float]:
    """Sample variance and its standard error :math:`\\sqrt{(m_4 - s^4)/N}`."""
    c = v - v.mean()
    s2 = float(np.mean(c * c) * len(v) / (len(v) - 1))
    m4 = float(np.mean(c**4))
    return s2, math.sqrt(max(m4 - s2 * s2, 0.0) / len(v))


def _summarise(samples: np.ndarray, ntk: np.ndarray, theory: dict[str, Any], width: int, params,
               eps: float) -> dict[str, Any]:
    """Statistics of one ensemble: raw and control-variate estimates of ``n (E G - K)``,
    ``n Var G``, and the NTK's relative variance. ``eps``: the machine epsilon of the run, for the
    rounding floor of the control-variate standard error (ReLU without biases has a linear length
    map: the control variate cancels every fluctuation and leaves only rounding)."""
    W2, b2 = params
    G, FG = samples[:, 0], samples[:, 1]  # (N, L + 1)
    N, n = G.shape[0], width
    K = float(theory["K"])
    # innovations xi_l = G^(l+1) - b^2 - W^2 F(G^(l)), l = 1..L (layers 2..L+1)
    xi = G[:, 1:] - b2[1:][None, :] - W2[1:][None, :] * FG[:, :-1]
    resid = G[:, -1] - xi @ np.asarray(theory["cv_coefficients"], np.float64)
    raw = n * (G[:, -1] - K)
    cv = n * (resid - K)
    floor = n * 16 * G.shape[1] * eps * abs(K) / math.sqrt(N)
    var, var_se = _var_se(G[:, -1])
    tvar, tvar_se = _var_se(ntk)
    tmean, tmean_se = float(ntk.mean()), float(ntk.std(ddof=1) / math.sqrt(N))
    rel = tvar / tmean**2
    rel_se = rel * math.sqrt((tvar_se / tvar) ** 2 + 4 * (tmean_se / tmean) ** 2)
    return {"width": n, "networks": N,
            "correction_raw": float(raw.mean()), "correction_raw_se": float(raw.std(ddof=1) / math.sqrt(N)),
            "correction_cv": float(cv.mean()), "correction_cv_se": max(float(cv.std(ddof=1) / math.sqrt(N)), floor),
            "vertex": n * var, "vertex_se": n * var_se,
            "ntk_mean": tmean, "ntk_mean_se": tmean_se, "ntk_relative_variance": rel,
            "ntk_relative_variance_se": rel_se}


@functools.partial(jax.jit, static_argnums=(0, 6))
def _train(graphdef, rest, params, x, y, lr, steps):
    """Full-batch gradient descent on :math:`\\frac1{2m}\\|f(X) - y\\|^2`, every member at once;
    returns the trained parameters and the final losses."""
    from flax import nnx

    def loss(p):
        return 0.5 * jnp.mean((nnx.merge(graphdef, p, rest)(x) - y) ** 2)

    def one(p):
        def step(p, _):
            g = jax.grad(loss)(p)
            return jax.tree.map(lambda a, b: a - lr * b, p, g), None

        p, _ = jax.lax.scan(step, p, None, length=steps)
        return p, loss(p)

    return jax.vmap(one)(params)


def _training_data(cfg: Config, seed: int, dtype):
    from ..data import gaussian_mixture_dataset

    means = np.zeros((2, cfg.train_dim))
    means[0, 0], means[1, 0] = CLASS_SEPARATION, -CLASS_SEPARATION
    ds = gaussian_mixture_dataset(jax.random.key(seed), jnp.asarray(means, dtype), 1.0, n_train=cfg.train_points,
                                  n_test=1, center_targets=True)
    return ds.x_train, ds.y_train[:, :1]


def _ntk_change(cfg: Config, width: int, key, x, y, lr, predicted) -> dict[str, Any]:
    """One trained ensemble: the relative NTK change, the entries of ``n (Theta_T - Theta_0)``
    (mean and standard error over the networks) and their projection on ``predicted`` (the
    theory's ``n E[Theta_T - Theta_0]``, or ``None``)."""
    from flax import nnx

    from ..finite import ensemble_kernels, init_ensemble

    spec = _spec(TRAIN_ACTIVATION, cfg.train_depth)
    ens = init_ensemble(key, spec, cfg.train_dim, size=cfg.train_networks, width=width)
    graphdef, _, rest = nnx.split(ens.model, nnx.Param, ...)
    lr = jnp.asarray(lr, x.dtype)
    init_loss = 0.5 * jnp.mean((ens(x) - y[None]) ** 2, axis=(1, 2))
    trained, loss = _train(graphdef, rest, ens.params, x, y, lr, cfg.train_steps)
    t0 = np.asarray(ensemble_kernels(x, None, ens, batch_size=16).ntk, np.float64)
    t1 = np.asarray(ensemble_kernels(x, None, ens._replace(params=trained), batch_size=16).ntk, np.float64)
    rel = np.linalg.norm(t1 - t0, axis=(1, 2)) / np.linalg.norm(t0, axis=(1, 2))
    N = cfg.train_networks
    scaled = width * (t1 - t0)  # (N, m, m)
    row = {"width": width, "networks": N, "relative_change": float(rel.mean()),
           "relative_change_se": float(rel.std(ddof=1) / math.sqrt(N)),
           "change_mean": scaled.mean(0).tolist(), "change_se": (scaled.std(0, ddof=1) / math.sqrt(N)).tolist(),
           "initial_loss": float(np.mean(np.asarray(init_loss))), "final_loss": float(np.mean(np.asarray(loss))),
           "final_loss_max": float(np.max(np.asarray(loss)))}
    if predicted is not None:
        C = np.asarray(predicted, np.float64)
        rho = np.einsum("sij,ij->s", scaled, C) / np.sum(C * C)
        row["projection"] = float(rho.mean())
        row["projection_se"] = float(rho.std(ddof=1) / math.sqrt(N))
    return row


def _change_theory(cfg: Config, x, y, lr, width):
    """``ntk_change`` for the trained networks (one hidden layer), or ``None`` for deeper ones."""
    from ..finite_width import ntk_change

    if cfg.train_depth != 1:
        return None
    return ntk_change(x, y[:, 0], _spec(TRAIN_ACTIVATION, 1), learning_rate=lr, steps=cfg.train_steps,
                      samples=cfg.theory_samples, widths=width, key=jax.random.key(7))


# ------------------------------------------------------------------------------------------
# Fits
# ------------------------------------------------------------------------------------------


def fit_intercept(widths, values, se, power: float = 1.0) -> dict[str, float]:
    r"""Weighted least squares of ``values = A + B / width**power``: ``A`` (the :math:`n \to \infty`
    limit), ``B``, their standard errors (multiplied by :math:`\sqrt{\chi^2/\mathrm{dof}}` when it
    is above 1, so a misfit widens them) and ``chi2_dof``.

    Example:
        >>> f = fit_intercept([10, 20, 40], [1.1, 1.05, 1.025], [0.01, 0.01, 0.01])
        >>> round(f["A"], 6), round(f["B"], 6)
        (1.0, 1.0)
    """
    n, v, s = (np.asarray(a, np.float64) for a in (widths, values, se))
    X = np.stack([np.ones_like(n), n**-power], 1) / s[:, None]
    coef, *_ = np.linalg.lstsq(X, v / s, rcond=None)
    cov = np.linalg.inv(X.T @ X)
    dof = len(n) - 2
    chi2 = float(np.sum((X @ coef - v / s) ** 2) / dof) if dof > 0 else 0.0
    cov = cov * max(chi2, 1.0)
    return {"A": float(coef[0]), "A_se": float(math.sqrt(cov[0, 0])), "B": float(coef[1]),
            "B_se": float(math.sqrt(cov[1, 1])), "chi2_dof": chi2, "power": float(power)}


def fit_slope(widths, values, se) -> dict[str, float]:
    r"""Weighted least squares of ``log values = a + slope log width`` (weights from
    ``se / values``), with standard errors widened by :math:`\sqrt{\chi^2/\mathrm{dof}}` above 1.

    Example:
        >>> f = fit_slope([10, 20, 40], [0.1, 0.05, 0.025], [0.001, 0.0005, 0.00025])
        >>> round(f["slope"], 6)
        -1.0
    """
    n, v, s = (np.asarray(a, np.float64) for a in (widths, values, se))
    ls = s / v
    X = np.stack([np.ones_like(n), np.log(n)], 1) / ls[:, None]
    coef, *_ = np.linalg.lstsq(X, np.log(v) / ls, rcond=None)
    cov = np.linalg.inv(X.T @ X)
    dof = len(n) - 2
    chi2 = float(np.sum((X @ coef - np.log(v) / ls) ** 2) / dof) if dof > 0 else 0.0
    cov = cov * max(chi2, 1.0)
    return {"slope": float(coef[1]), "slope_se": float(math.sqrt(cov[1, 1])), "log_prefactor": float(coef[0]),
            "chi2_dof": chi2}


def _z(measured, se, theory) -> float:
    return abs(measured - theory) / se if se > 0 else (0.0 if measured == theory else math.inf)


# ------------------------------------------------------------------------------------------
# Runner
# ------------------------------------------------------------------------------------------


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes ``finite_width.png``, ``report.json``, ``report.md``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the finished ensembles and training runs.
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed of the networks and the training set, in ``[0, 2**32 - 1]``.
        progress: show a progress bar.
        config: explicit sizes (overrides ``quick``).

    Returns:
        The report (also in ``report.json``); ``report["ok"]`` is true when every fitted limit
        agrees with the theory within ``tolerance_se`` standard errors and the NTK change decays
        with the width.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a finite_width.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    dtype = jnp.dtype(dtype_name())
    resume = ResumeFile(out, NAME, {**config_dict(cfg), "seed": seed, "dtype": dtype.name})
    x = _input(dtype)

    theory = {(name, depth): jax.tree.map(lambda a: np.asarray(a, np.float64),
                                          _theory_one(x, name, depth, cfg.widths[-1]))
              for name in SPECS for depth in cfg.depths}
    ensembles = [(name, depth, n) for name in SPECS for depth in cfg.depths for n in cfg.widths]
    master = jax.random.key(seed)
    todo = len(ensembles) + len(cfg.train_widths)
    done_before = sum(f"{a}|depth={d}|width={n}" in resume for a, d, n in ensembles) + sum(
        f"train|width={n}" in resume for n in cfg.train_widths)
    with tqdm(total=todo, initial=done_before, desc=f"reproduce {NAME}", unit="ensemble",
              disable=not progress) as bar:
        for name, depth, n in ensembles:
            k = f"{name}|depth={depth}|width={n}"
            if k in resume:
                continue
            bar.set_postfix_str(f"{name} L={depth} n={n}")
            t0 = time.perf_counter()
            key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(master, list(SPECS).index(name)), depth), n)
            samples, ntk = _ensemble_samples(name, depth, n, cfg.networks, key, x)
            W, b = (np.asarray(a, np.float64) for a in _spec(name, depth).layer_params(dtype))
            stats = _summarise(samples, ntk, theory[(name, depth)], n, (W**2, b**2),
                               float(jnp.finfo(dtype).eps))
            resume.put(k, {**stats, "seconds": time.perf_counter() - t0})
            bar.update()

        xt, yt = _training_data(cfg, seed, dtype)
        train_spec = _spec(TRAIN_ACTIVATION, cfg.train_depth)
        theta_inf = np.asarray(kernel(xt, None, train_spec).ntk, np.float64)
        lam_max = float(np.linalg.eigvalsh(theta_inf)[-1])
        lr = cfg.learning_rate * cfg.train_points / lam_max
        tkey = jax.random.fold_in(master, 1000)
        change_theory = _change_theory(cfg, xt, yt, lr, cfg.train_widths[-1])
        predicted = None if change_theory is None else np.asarray(change_theory.change, np.float64)
        for n in cfg.train_widths:
            k = f"train|width={n}"
            if k in resume:
                continue
            bar.set_postfix_str(f"training n={n}")
            t0 = time.perf_counter()
            resume.put(k, {**_ntk_change(cfg, n, jax.random.fold_in(tkey, n), xt, yt, lr, predicted),
                           "seconds": time.perf_counter() - t0})
            bar.update()

    # -- analysis ------------------------------------------------------------------------------
    tol = cfg.tolerance_se
    panels: dict[str, Any] = {"correction": [], "vertex": [], "ntk_variance": []}
    for name in SPECS:
        for depth in cfg.depths:
            th = theory[(name, depth)]
            rows = [resume[f"{name}|depth={depth}|width={n}"] for n in cfg.widths]
            ws = [r["width"] for r in rows]
            for panel, key, theory_value in (("correction", "correction_cv", th["correction"]),
                                             ("vertex", "vertex", th["vertex"]),
                                             ("ntk_variance", "ntk_n_relvar", th["ntk_relative_variance"])):
                if key == "ntk_n_relvar":
                    vals = [r["width"] * r["ntk_relative_variance"] for r in rows]
                    ses = [r["width"] * r["ntk_relative_variance_se"] for r in rows]
                else:
                    vals, ses = [r[key] for r in rows], [r[f"{key}_se"] for r in rows]
                fit = fit_intercept(ws, vals, ses)
                z_points = [_z(v, s, float(theory_value)) for v, s in zip(vals, ses)]
                entry = {"activation": name, "depth": depth, "theory": float(theory_value), "widths": ws,
                         "values": vals, "se": ses, "z": z_points, "fit": fit,
                         "z_fit": _z(fit["A"], fit["A_se"], float(theory_value))}
                entry["agrees"] = bool(entry["z_fit"] <= tol)
                if panel == "correction":
                    entry["raw"] = [r["correction_raw"] for r in rows]
                    entry["raw_se"] = [r["correction_raw_se"] for r in rows]
                    entry["fit_raw"] = fit_intercept(ws, entry["raw"], entry["raw_se"])
                    entry["z_fit_raw"] = _z(entry["fit_raw"]["A"], entry["fit_raw"]["A_se"], float(theory_value))
                    entry["resolved"] = bool(abs(float(theory_value)) > 3 * fit["A_se"])
                    entry["variance_reduction"] = [(a / b) ** 2 if b > 0 else math.inf
                                                   for a, b in zip(entry["raw_se"], ses)]
                if panel == "ntk_variance":
                    entry["relative_variance"] = [r["ntk_relative_variance"] for r in rows]
                    entry["relative_variance_se"] = [r["ntk_relative_variance_se"] for r in rows]
                    entry["theory_relative_variance"] = [float(theory_value) / w for w in ws]
                panels[panel].append(entry)

    train_rows = [resume[f"train|width={n}"] for n in cfg.train_widths]
    tw = [r["width"] for r in train_rows]
    tv = [r["relative_change"] for r in train_rows]
    ts = [r["relative_change_se"] for r in train_rows]
    slope_all = fit_slope(tw, tv, ts)
    slope = fit_slope(tw[-3:], tv[-3:], ts[-3:])
    # a network's |Theta_T - Theta_0| has relative corrections of order n^(-1/2) (see the docstring)
    scaled = fit_intercept(tw, [n * v for n, v in zip(tw, tv)], [n * s for n, s in zip(tw, ts)], power=0.5)
    training = {"activation": TRAIN_ACTIVATION, "depth": cfg.train_depth, "learning_rate": lr,
                "learning_rate_units": cfg.learning_rate, "lambda_max": lam_max, "rows": train_rows,
                "fit": slope, "fit_widths": tw[-3:],
                "fit_all_widths": slope_all, "fit_n_times_change": scaled,
                "z_slope_minus_one": _z(slope["slope"], slope["slope_se"], -1.0),
                "z_slope_minus_one_all_widths": _z(slope_all["slope"], slope_all["slope_se"], -1.0)}
    if predicted is not None:
        C = predicted
        C_se = np.asarray(change_theory.stderr, np.float64)
        # the theory's Monte-Carlo error moves the projection's target by about this much
        theory_se = float(np.sqrt(np.sum((C * C_se) ** 2)) / np.sum(C * C))
        rho = [r["projection"] for r in train_rows]
        rho_se = [r["projection_se"] for r in train_rows]
        pfit = fit_intercept(tw, rho, rho_se)
        widest = train_rows[-1]
        mean_w, se_w = np.asarray(widest["change_mean"]), np.asarray(widest["change_se"])
        iu = np.triu_indices(C.shape[0])
        z_entries = (np.abs(mean_w - C) / np.sqrt(se_w**2 + C_se**2))[iu]
        training["theory"] = {
            "function": "rmtjax.finite_width.ntk_change", "samples": cfg.theory_samples,
            "change": C.tolist(), "stderr": C_se.tolist(),
            "terms": np.asarray(change_theory.terms, np.float64).tolist(),
            "term_names": ["dNTK (with the initial function)", "ddNTK (drift of the dNTK)", "second order of each step"],
            "ntk": np.asarray(change_theory.ntk, np.float64).tolist(),
            "relative_change_at_widest": float(change_theory.relative_change()),
            "projection_theory_se": theory_se}
        training["projection_fit"] = pfit
        training["z_projection"] = _z(pfit["A"], math.sqrt(pfit["A_se"] ** 2 + theory_se**2), 1.0)
        training["z_entries_widest"] = {"max": float(np.max(z_entries)), "median": float(np.median(z_entries)),
                                        "count": int(z_entries.size), "width": widest["width"]}
        training["prediction"] = (f"rmtjax.finite_width.ntk_change: projection limit A = {pfit['A']:.4f} +- "
                                  f"{pfit['A_se']:.4f} (theory 1)")
    else:
        training["prediction"] = (f"not compared: rmtjax.finite_width.ntk_change covers one hidden layer (train_depth "
                                  f"= {cfg.train_depth}); only the scaling (slope -1) is compared")
    trained = all(r["final_loss"] < 0.5 * r["initial_loss"] for r in train_rows)

    checks = {
        "nngp_correction_limit": all(e["agrees"] for e in panels["correction"]),
        "nngp_correction_raw_limit": all(e["z_fit_raw"] <= tol for e in panels["correction"]),
        "nngp_correction_resolved_tanh": all(e["resolved"] for e in panels["correction"] if e["activation"] == "tanh"),
        "vertex_limit": all(e["agrees"] for e in panels["vertex"]),
        "ntk_relative_variance_limit": all(e["agrees"] for e in panels["ntk_variance"]),
        "ntk_change_decreases": bool(slope_all["slope"] + tol * slope_all["slope_se"] < 0),
        "ntk_change_one_over_n_law": bool(scaled["A"] > tol * scaled["A_se"] and scaled["chi2_dof"] <= tol**2),
        **({"ntk_change_prefactor_limit": bool(training["z_projection"] <= tol),
            "ntk_change_prefactor_resolved": bool(training["projection_fit"]["A_se"] < 1 / tol),
            "ntk_change_entries_at_widest": bool(training["z_entries_widest"]["max"] <= tol)}
           if predicted is not None else {}),
        "networks_trained": bool(trained),
        "max_z": max(e["z_fit"] for p in panels.values() for e in p),
    }
    ok = all(v for k, v in checks.items() if k != "max_z")
    precision = float64_comparison(
        _theory_all, x, cfg.depths, cfg.widths[-1],
        float32_values={f"{a} L={d} {q}": theory[(a, d)][q] for a in SPECS for d in cfg.depths
                        for q in ("K", "correction", "vertex", "ntk", "ntk_relative_variance")})
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype.name,
        "config": config_dict(cfg),
        "networks": {a: {"activation": SPECS[a][0].__name__, "W_std": SPECS[a][1], "b_std": SPECS[a][2],
                         "parameterization": "ntk"} for a in SPECS},
        "input": {"d": D_IN, "x": "ones(d)", "norm2_over_d": 1.0},
        "panels": panels, "training": training, "checks": checks, "precision": precision,
        "resume": resume.summary(), "summary": _summary(panels, training), "versions": versions(),
        "files": {"figure": "finite_width.png", "report_md": "report.md", "resume": resume.path.name},
    }
    _figure(report, out / "finite_width.png")
    report["seconds"] = time.perf_counter() - t_start
    write_report(out, report, _markdown(report))
    return report


def _summary(panels, training) -> str:
    zs = lambda p: max(e["z_fit"] for e in panels[p])  # noqa: E731
    f = training["fit"]
    out = (f"fitted n -> infinity limits vs theory: NNGP correction max z {zs('correction'):.2f}, vertex "
           f"{zs('vertex'):.2f}, NTK n Var/E^2 {zs('ntk_variance'):.2f}; NTK change during training ~ "
           f"n^({f['slope']:.3f} +- {f['slope_se']:.3f}) over the widest widths "
           f"(all widths: {training['fit_all_widths']['slope']:.3f} +- "
           f"{training['fit_all_widths']['slope_se']:.3f})")
    if "projection_fit" in training:
        p = training["projection_fit"]
        out += (f", and its prefactor n E[change] / ntk_change -> {p['A']:.3f} +- {p['A_se']:.3f} "
                f"(z {training['z_projection']:.2f})")
    return out


# ------------------------------------------------------------------------------------------
# Figure and Markdown
# ------------------------------------------------------------------------------------------


def _figure(r, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    t = r["training"]
    panels = 5 if "theory" in t else 4
    fig = Figure(figsize=(5 * panels, 4.8))
    ax = fig.subplots(1, panels)
    colors = {("tanh", d): c for d, c in zip(r["config"]["depths"], ["C0", "C1", "C2", "C4"])}
    colors.update({("relu", d): c for d, c in zip(r["config"]["depths"], ["C3", "C5", "C6", "C7"])})
    # (a) mean correction
    a = ax[0]
    lo, hi = [], []
    for e in r["panels"]["correction"]:
        if e["activation"] != "tanh":  # ReLU: 0 exactly (in the report)
            continue
        c = colors[(e["activation"], e["depth"])]
        w = np.array(e["widths"], float)
        v, s = np.array(e["values"]), np.array(e["se"])
        a.errorbar(w, v, yerr=s, fmt="o", color=c, ms=4, capsize=2, label=f"{e['activation']} L={e['depth']}")
        a.errorbar(w * 1.04, e["raw"], yerr=e["raw_se"], fmt="x", color=c, ms=4, capsize=1, alpha=0.3, lw=0.8)
        a.axhline(e["theory"], color=c, ls="--", lw=1)
        lo += [np.min(v - 2 * s), e["theory"]]
        hi += [np.max(v + 2 * s), e["theory"]]
    if lo:
        pad = 0.6 * (max(hi) - min(lo)) + 1e-3
        a.set_ylim(min(lo) - pad, max(hi) + pad)  # the raw means' error bars leave the axes
    a.set_xscale("log", base=2)
    a.set(xlabel="width n", ylabel=r"$n\,(\mathbb{E}\hat G_n - K)$",
          title="(a) NNGP mean correction, tanh (dashed: theory $G^{\\{1\\}}$)\n"
                "o: control-variate estimate, faint x: raw mean")
    a.legend(fontsize=8)
    # vertex
    a = ax[1]
    for i, e in enumerate(r["panels"]["vertex"]):
        c = colors[(e["activation"], e["depth"])]
        a.errorbar(np.array(e["widths"], float) * 1.03**i, np.array(e["values"]) / e["theory"],
                   yerr=np.array(e["se"]) / e["theory"], fmt="o", color=c, ms=4, capsize=2,
                   label=f"{e['activation']} L={e['depth']}: V = {e['theory']:.4g}")
    a.axhline(1.0, color="k", ls="--", lw=1)
    a.set_xscale("log", base=2)
    a.set(xlabel="width n", ylabel=r"$n\,\mathrm{Var}\,\hat G_n / V$", title="four-point vertex (theory: 1)")
    a.legend(fontsize=8)
    # (b) NTK relative variance
    a = ax[2]
    for e in r["panels"]["ntk_variance"]:
        c = colors[(e["activation"], e["depth"])]
        ratio = e["depth"] / np.array(e["widths"], float)
        a.errorbar(ratio, e["relative_variance"], yerr=e["relative_variance_se"], fmt="o", color=c, ms=4, capsize=2,
                   label=f"{e['activation']} L={e['depth']}")
        grid = np.geomspace(ratio.min() / 1.3, ratio.max() * 1.3, 50)
        a.plot(grid, e["theory"] * grid / e["depth"], color=c, ls="--", lw=1)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set(xlabel="L / n", ylabel=r"$\mathrm{Var}\,\hat\Theta / \mathbb{E}^2\hat\Theta$",
          title="(b) NTK relative variance (dashed: theory)")
    a.legend(fontsize=8)
    # (c) NTK change during training
    a = ax[3]
    w = np.array([row["width"] for row in t["rows"]], float)
    v = np.array([row["relative_change"] for row in t["rows"]])
    s = np.array([row["relative_change_se"] for row in t["rows"]])
    a.errorbar(w, v, yerr=s, fmt="o", color="C0", capsize=2, label=f"{t['activation']} L={t['depth']}, "
               f"{r['config']['train_networks']} nets per width")
    f, fa = t["fit"], t["fit_all_widths"]
    wf = np.array(t["fit_widths"], float)
    a.plot(wf, np.exp(f["log_prefactor"]) * wf ** f["slope"], color="C1", lw=2,
           label=f"fit, {len(wf)} widest: slope {f['slope']:.3f} $\\pm$ {f['slope_se']:.3f}")
    a.plot(w, np.exp(fa["log_prefactor"]) * w ** fa["slope"], color="C0", lw=1, ls="--",
           label=f"fit, all widths: slope {fa['slope']:.3f} $\\pm$ {fa['slope_se']:.3f}")
    a.plot(w, v[-1] * (w / w[-1]) ** -1.0, color="k", ls=":", lw=1, label="slope -1 (the limit)")
    sf = t["fit_n_times_change"]
    a.plot(w, (sf["A"] + sf["B"] * w ** -sf["power"]) / w, color="C2", lw=1,
           label=f"fit n x change = A + B/sqrt(n): A = {sf['A']:.3g} $\\pm$ {sf['A_se']:.2g}")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set(xlabel="width n", ylabel=r"$\|\hat\Theta_T - \hat\Theta_0\|_F / \|\hat\Theta_0\|_F$",
          title=f"(c) NTK change after {r['config']['train_steps']} GD steps\n(theory: O(1/n), slope -1 as n -> oo)")
    a.legend(fontsize=8)
    if "theory" in t:  # the prefactor: each network's change projected on ntk_change's prediction
        a = ax[4]
        rho = np.array([row["projection"] for row in t["rows"]])
        rho_se = np.array([row["projection_se"] for row in t["rows"]])
        a.errorbar(w, rho, yerr=rho_se, fmt="o", color="C0", capsize=2, label="networks")
        p = t["projection_fit"]
        grid = np.geomspace(w.min(), w.max() * 4, 60)
        a.plot(grid, p["A"] + p["B"] / grid, color="C1", lw=1.5,
               label=f"fit A + B/n: A = {p['A']:.3f} $\\pm$ {p['A_se']:.3f}")
        tse = t["theory"]["projection_theory_se"]
        a.axhspan(1 - tse, 1 + tse, color="k", alpha=0.12, lw=0)
        a.axhline(1.0, color="k", ls="--", lw=1, label="theory (ntk_change)")
        a.set_xscale("log", base=2)
        a.set(xlabel="width n", ylabel=r"$\langle C, n\,\Delta\hat\Theta\rangle / \langle C, C\rangle$",
              title="(c) prefactor: n E[NTK change] projected on\nthe predicted C = n E[$\\Delta\\Theta$] (theory: 1)")
        a.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _markdown(r) -> str:
    cfg, c = r["config"], r["checks"]
    tol = cfg["tolerance_se"]
    nets = r["networks"]
    lines = [
        "# Finite-width corrections: 1/n theory vs Flax networks", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}). {r['summary']}.", "",
        f"Networks (NTK parameterization, one input x = ones({D_IN}), |x|^2/d = 1): "
        + "; ".join(f"{v['activation']} W_std = {num(v['W_std'])}, b_std = {num(v['b_std'])}" for v in nets.values())
        + f". Widths {nums(cfg['widths'])}, depths {nums(cfg['depths'])}, {cfg['networks']} networks per "
        "(activation, depth, width) (rmtjax.finite.init_ensemble).", "",
        f"Each limit is the intercept A of a weighted fit `value = A + B/n` over the widths (standard errors "
        f"widened by sqrt(chi^2/dof) when above 1); it agrees when |A - theory| <= {num(tol)} standard errors.", "",
    ]
    titles = {"correction": ("(a) NNGP mean correction n (E G - K) -> G^{1} (control-variate estimate)", "G^{1}"),
              "vertex": ("Four-point vertex n Var G -> V", "V"),
              "ntk_variance": ("(b) NTK relative variance n Var(Theta)/E(Theta)^2 -> ntk_fluctuations",
                               "n Var/Theta^2")}
    for panel, (title, sym) in titles.items():
        lines += [f"## {title}", "",
                  f"| activation | L | theory {sym} | fitted A | se(A) | z | chi^2/dof | per-width values (z) "
                  "| agrees |",
                  "|---|---:|---:|---:|---:|---:|---:|---|:---:|"]
        for e in r["panels"][panel]:
            per = "; ".join(f"n={w}: {num(v)} ({num(z, 2)})" for w, v, z in zip(e["widths"], e["values"], e["z"]))
            lines.append(f"| {e['activation']} | {e['depth']} | {num(e['theory'])} | {num(e['fit']['A'])} | "
                         f"{num(e['fit']['A_se'], 2)} | {num(e['z_fit'], 2)} | {num(e['fit']['chi2_dof'], 2)} | "
                         f"{per} | "
                         f"{'yes' if e['agrees'] else '**no**'} |")
        lines.append("")
        if panel == "correction":
            vr = [v for e in r["panels"][panel] if e["activation"] == "tanh" for v in e["variance_reduction"]]
            lines += [f"For tanh the control variate (innovations of each layer's conjugate kernel, exactly mean-zero) "
                      f"reduced the variance by factors {num(min(vr), 3)} to {num(max(vr), 3)}; raw means (with "
                      "their standard errors): " + "; ".join(
                          f"{e['activation']} L={e['depth']}: " + ", ".join(
                              f"{num(v, 3)} +- {num(s, 2)}" for v, s in zip(e["raw"], e["raw_se"]))
                          for e in r["panels"][panel]) + ".",
                      "Raw means, fitted the same way: " + "; ".join(
                          f"{e['activation']} L={e['depth']}: A = {num(e['fit_raw']['A'], 3)} +- "
                          f"{num(e['fit_raw']['A_se'], 2)} (z = {num(e['z_fit_raw'], 2)})" for e in r["panels"][panel])
                      + ". For ReLU without biases the length map is linear, so E[G | layer below] is linear in the "
                      "layer below and E G = K exactly; the control variate then cancels every fluctuation (its "
                      "estimate is K up to rounding, and its standard error is floored at the rounding level).",
                      "Tanh corrections resolved (|G^{1}| > 3 se(A)): "
                      f"{'yes' if c['nngp_correction_resolved_tanh'] else 'no'}.",
                      ""]
    t, f = r["training"], r["training"]["fit"]
    lines += ["## (c) NTK change during training", "",
              f"{t['activation']} networks of depth {t['depth']} ({cfg['train_networks']} per width), "
              f"{cfg['train_points']} training points in d = {cfg['train_dim']} (two-class Gaussian mixture, class "
              f"means +-{CLASS_SEPARATION} e_1, targets +-1/2), {cfg['train_steps']} full-batch GD steps at learning "
              f"rate {num(t['learning_rate'])} (= {num(t['learning_rate_units'])} m / lambda_max(Theta_inf), "
              f"lambda_max = {num(t['lambda_max'])}).", "",
              "| width | ||Theta_T - Theta_0||_F / ||Theta_0||_F | se | initial loss | final loss |",
              "|---:|---:|---:|---:|---:|"]
    for row in t["rows"]:
        lines.append(f"| {row['width']} | {num(row['relative_change'])} | {num(row['relative_change_se'], 2)} | "
                     f"{num(row['initial_loss'])} | {num(row['final_loss'])} |")
    w = [row["width"] for row in t["rows"]]
    v = [row["relative_change"] for row in t["rows"]]
    local = [math.log(v[i + 1] / v[i]) / math.log(w[i + 1] / w[i]) for i in range(len(w) - 1)]
    lines += ["", "Slopes between neighbouring widths: " + ", ".join(
        f"{w[i]}-{w[i + 1]}: {num(s, 3)}" for i, s in enumerate(local)) + ".", "",
              f"Fitted slope over the widths {nums(t['fit_widths'])}: {num(f['slope'])} +- {num(f['slope_se'], 2)} "
              f"(chi^2/dof {num(f['chi2_dof'], 2)}; z = {num(t['z_slope_minus_one'], 2)} from the limit -1). "
              f"Over all widths: {num(t['fit_all_widths']['slope'])} +- {num(t['fit_all_widths']['slope_se'], 2)} "
              f"(z = {num(t['z_slope_minus_one_all_widths'], 2)}). The local slopes approach -1 like n^(-1/2): the "
              "change of one network has relative corrections of that order, so the check is the 1/n law with them, "
              "n x change = A + B/sqrt(n) (A > 0 resolved, a fit with chi^2/dof at most tolerance_se^2): A = "
              f"{num(t['fit_n_times_change']['A'])} +- {num(t['fit_n_times_change']['A_se'], 2)}, B = "
              f"{num(t['fit_n_times_change']['B'])} +- {num(t['fit_n_times_change']['B_se'], 2)} (chi^2/dof "
              f"{num(t['fit_n_times_change']['chi2_dof'], 2)}).", ""]
    if "theory" in t:
        th, p = t["theory"], t["projection_fit"]
        C = np.asarray(th["change"])
        term_norms = [float(np.linalg.norm(np.asarray(v))) for v in th["terms"]]
        lines += ["### The prefactor: rmtjax.finite_width.ntk_change", "",
                  f"The predicted C = n E[Theta_T - Theta_0] on the {C.shape[0]} training inputs ({th['samples']} "
                  f"Monte-Carlo neurons; largest standard error {num(float(np.max(th['stderr'])), 2)} against a largest "
                  f"entry {num(float(np.max(np.abs(C))), 3)}; ||C||_F = {num(float(np.linalg.norm(C)), 4)}; the "
                  "Frobenius norms of its three terms, which partly cancel: "
                  + ", ".join(f"{name} {num(v, 3)}" for name, v in zip(th["term_names"], term_norms))
                  + f"). At width {t['rows'][-1]['width']} the expected relative change is "
                  f"{num(th['relative_change_at_widest'], 3)}.", "",
                  "Each network's n (Theta_T - Theta_0) projected on C, rho = <C, n DeltaTheta> / <C, C> (theory: 1):", "",
                  "| width | rho | se |", "|---:|---:|---:|"]
        lines += [f"| {row['width']} | {num(row['projection'], 4)} | {num(row['projection_se'], 2)} |" for row in t["rows"]]
        ze = t["z_entries_widest"]
        lines += ["", f"Fit rho = A + B/n: A = {num(p['A'], 4)} +- {num(p['A_se'], 2)} (theory 1, its own Monte-Carlo "
                  f"error {num(th['projection_theory_se'], 2)}; z = {num(t['z_projection'], 2)}), B = {num(p['B'], 3)} "
                  f"+- {num(p['B_se'], 2)}, chi^2/dof {num(p['chi2_dof'], 2)}. Entry by entry at width {ze['width']}: "
                  f"the {ze['count']} distinct entries of the networks' mean are within {num(ze['max'], 2)} standard "
                  f"errors of C (median {num(ze['median'], 2)}).", ""]
    else:
        lines += [f"Prefactor: {t['prediction']}.", ""]
    lines += ["## Checks", ""]
    lines += [f"- {k}: {num(v, 3) if k == 'max_z' else ('yes' if v else '**no**')}" for k, v in c.items()]
    lines.append("")
    lines += precision_lines(r.get("precision"))
    lines += ["![NNGP correction, vertex, NTK variance, NTK change](finite_width.png)", ""]
    return "\n".join(lines)
