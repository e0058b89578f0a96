r"""Activation design, proved by training: deep plain networks with shaped activations vs ReLU and tanh.

``rmtjax reproduce activation-design`` (issue 13, item 4) trains plain fully-connected networks
(no skip connections, no normalization layers) of depth :math:`L` (50; quick: 16) and width
:math:`n` (256; quick: 64) on the MNIST 5k subset (quick: scikit-learn's 8 x 8 digits), every image
standardized over its pixels so that :math:`|x|^2/d = 1` (:math:`q = 1`, what DKS/TAT assume), with
six activations:

* ``tanh``: :math:`\sigma_w^2 = 1`, zero biases (LeCun's initialization; without biases this is
  also tanh's order-to-chaos boundary, where :math:`q^* = 0` and the variance decays like
  :math:`1/(2\ell)`);
* ``relu``: He initialization, :math:`\sigma_w^2 = 2`, zero biases;
* ``eoc-tanh``: tanh on the edge of chaos with :math:`\sigma_b^2 = 0.01`,
  :math:`\sigma_w^2` from :func:`rmtjax.meanfield.edge_of_chaos` (:math:`\chi_1 = 1`; Schoenholz et
  al. 2017). A small :math:`\sigma_b^2` keeps :math:`q^*` small (0.27), where tanh is closest to
  dynamical isometry (Pennington et al. 2017), while keeping :math:`q^* > 0`;
* ``dks-tanh``: :func:`rmtjax.design.dks` of tanh for ``Chain(L)``, :math:`\zeta = 1.5`
  (Martens et al. 2021);
* ``tat-softplus``: :func:`rmtjax.design.tat` of softplus, :math:`\tau = 0.3` (Zhang et al. 2022);
* ``tat-lrelu``: :func:`rmtjax.design.tat_leaky_relu`, :math:`\eta = 0.9` (Zhang et al. 2022);

the shaped ones with :math:`\sigma_w^2 = 1` and zero biases (the setting they are solved for). All
networks are :class:`rmtjax.finite.PaddedMLP` in the standard parameterization
(:math:`W_{ij} \sim \mathcal N(0, \sigma_w^2/\text{fan-in})`, biases :math:`\mathcal N(0, \sigma_b^2)`,
all trained; the readout initialized like the hidden layers), trained with the same optimizer and
step budget: Adam with one learning rate for every activation (the papers used K-FAC; we do
not), softmax cross-entropy, minibatches drawn without replacement at every step, 3 seeds each.
The full run's learning rate, 1e-4, was fixed by a pilot (depth 50, width 256, MNIST, one seed,
300 steps, float32): at 1e-3 every network tested (tanh, ReLU, DKS-tanh, TAT-Leaky-ReLU) stayed at
test accuracy 0.10 or diverged; at 1e-4 all four trained (0.83-0.90). The quick run (depth 16) uses 1e-3.
A depth-2 ReLU network (He initialization) is the shallow baseline.

Three parts:

1. **Training** (``training``): train loss and test accuracy over the steps (mean and standard
   deviation over seeds). The headline check: at depth :math:`L`, DKS-tanh and TAT-Leaky-ReLU end
   within ``accuracy_margin`` of the depth-2 baseline's test accuracy, and above both plain ReLU
   and plain tanh by at least ``accuracy_gap`` (means over seeds).
2. **C maps at initialization** (``cmap``): the correlation of the conjugate kernel
   :math:`\hat G^{(\ell)} = \sigma_w^2 h^{(\ell)}h^{(\ell)\top}/n + \sigma_b^2` of a few test inputs at every
   layer :math:`\ell = 1..L` of ``cmap_networks`` independent networks (Monte-Carlo mean and
   standard error), against the correlation map iterated layer by layer,
   :math:`q_{\ell} = \mathcal V(q_{\ell-1})`,
   :math:`c_\ell = \mathcal C(c_{\ell-1}; q_{\ell-1})\,q_{\ell-1}/q_\ell` (:func:`rmtjax.meanfield.q_map`,
   :func:`rmtjax.meanfield.c_map`; for the shaped activations :math:`q \equiv 1` and this is
   ``c_map(c, 1.0, act, 1.0, 0.0)``). The check: every :math:`|z| = |\bar\rho - c_\ell|/\mathrm{se}`
   is at most ``tolerance_se``. The finite-width bias of a correlation is :math:`O(\ell/n)`, so the
   check is a check at these sizes, not of the infinite-width limit.
3. **A designed activation** (``design``): a :class:`rmtjax.design.HermiteSeries` of degree
   ``design_order`` (:func:`rmtjax.design.hermite_family`, :math:`\sum_k a_k^2 = 1`, started from
   equal coefficients :math:`a_k = 1/\sqrt{N+1}`, not from any known activation) minimizing
   :class:`rmtjax.design.ValidationLoss`, the kernel-ridge validation error of the depth-``design_depth``
   NNGP on a subset of the training set (its first ``design_train`` points, validated on the next
   ``design_val``; the test set is never used), plus ``design_shaping_weight`` times
   :math:`(\mathcal Q'(1) - q_s)^2` (:class:`rmtjax.design.KernelShaping`, :math:`q_s` =
   ``design_q_slope`` < 1), by :func:`rmtjax.design.design` (Adam). The penalty is needed: a
   polynomial's length map :math:`\mathcal Q` is convex, so with :math:`\mathcal Q'(1) \ge 1` the
   finite-width fluctuations of :math:`q` run away through the layers (measured at initialization,
   depth 10, 32 seeds: the task objective alone gave a degree-3 series with :math:`\mathcal Q'(1) = 1.01`
   whose mean squared outputs reached 1e106 at width 64 and 1.6e5 at width 256; with :math:`q_s = 0.85`
   at most 5.6e3 and 2.0, with :math:`q_s = 0.7` at most 2.1 at width 64). Reported: the task objective
   before and after, and the ReLU network's (:math:`\sigma_w^2 = 2`) for comparison; then finite
   depth-``design_depth`` networks with the designed activation and with ReLU (He initialization),
   trained as in part 1.

Each trained activation, c-map ensemble and the design are saved to ``resume.json`` as they finish
(:mod:`._resume`). In a float32 run the report gives the float32 accuracy of the theory quantities
(c-map curves, design objectives) against float64. Writes ``activation_design.png``,
``report.json`` and ``report.md``.

Example:
    >>> from rmtjax.experiments import activation_design
    >>> report = activation_design.run("out/activation-design", quick=True)  # doctest: +SKIP
    >>> report["checks"]["design_objective_decreased"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._common import check_seed, config_dict, dtype_name, number, positive_int, versions
from ._output import check_out_dir, num, nums, save_figure, write_report
from ._precision import float64_comparison, precision_lines
from ._resume import ResumeFile

__all__ = ["ACTIVATIONS", "Config", "FULL", "QUICK", "run"]

NAME = "activation-design"
#: The deep networks, in the order of the tables.
ACTIVATIONS = ("tanh", "relu", "eoc-tanh", "dks-tanh", "tat-softplus", "tat-lrelu")
SHAPED = ("dks-tanh", "tat-lrelu")  # the headline's shaped activations
PLAIN = ("tanh", "relu")
EOC_SIGMA_B2 = 0.01
DKS_SLOPE = 1.5
TAT_CURVATURE = 0.3
TAT_C0 = 0.9
BASELINE = "relu-shallow"
HERMITE = "hermite"
DESIGN_RELU = "relu-design-depth"


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Sizes of the reproduction (each checked: a bad value is a ``ValueError`` naming it).

    Attributes:
        data: ``"mnist"`` (the MNIST 5k subset) or ``"digits"`` (scikit-learn, 1797 images).
        n_train, n_test: sizes of the stratified split (together at most 5000 / 1797).
        depth: hidden layers :math:`L` of the deep networks (``>= 3``).
        width: hidden width :math:`n`.
        baseline_depth: hidden layers of the shallow ReLU baseline (``< depth``).
        seeds: trained networks per activation (``>= 2``, for the standard deviations).
        steps: Adam steps; batch_size: minibatch size (``<= n_train``).
        learning_rate: Adam's learning rate, the same for every network.
        records: evaluations along training (train loss and accuracy on the whole training set,
            test loss and accuracy), evenly spaced; ``steps`` must be a multiple of it.
        cmap_networks: networks per activation of the c-map panel (``>= 8``).
        cmap_inputs: test inputs whose pairwise correlations are followed (``>= 2``).
        design_depth: depth of the NNGP of the design objective and of the networks of part 3.
        design_order: degree of the designed Hermite series.
        design_train, design_val: training-set points of the objective (fit / validation).
        design_steps: Adam steps of the design; design_learning_rate: its learning rate.
        design_ridge: relative ridge of the kernel regression.
        design_shaping_weight: weight of the penalty :math:`(\mathcal Q'(1) - 1)^2` added to the design
            objective (:class:`rmtjax.design.KernelShaping`).
        design_q_slope: the target :math:`\mathcal Q'(1) < 1` of that penalty: a polynomial's length map
            is convex, so :math:`q = 1` needs :math:`\mathcal Q'(1) < 1` to attract the finite-width
            fluctuations of :math:`q` (relative size about :math:`\sqrt{2/n}` per layer).
        accuracy_margin: the shaped networks' test accuracy must be within this of the baseline's.
        accuracy_gap: and above plain ReLU's and tanh's by at least this.
        tolerance_se: the c-map check's bound on :math:`|z|`.
    """

    data: str = "mnist"
    n_train: int = 4000
    n_test: int = 1000
    depth: int = 50
    width: int = 256
    baseline_depth: int = 2
    seeds: int = 3
    steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 1e-4
    records: int = 10
    cmap_networks: int = 32
    cmap_inputs: int = 4
    design_depth: int = 10
    design_order: int = 3
    design_train: int = 300
    design_val: int = 300
    design_steps: int = 150
    design_learning_rate: float = 0.05
    design_ridge: float = 1e-3
    design_shaping_weight: float = 10.0
    design_q_slope: float = 0.85
    accuracy_margin: float = 0.03
    accuracy_gap: float = 0.02
    tolerance_se: float = 5.0

    def __post_init__(self):
        sizes = {"mnist": 5000, "digits": 1797}
        if self.data not in sizes:
            raise ValueError(f"data must be 'mnist' or 'digits', got {self.data!r}")
        positive_int(self.n_train, "n_train", lo=20)
        positive_int(self.n_test, "n_test", lo=10)
        if self.n_train + self.n_test > sizes[self.data]:
            raise ValueError(f"n_train + n_test must be <= {sizes[self.data]} ({self.data}), got "
                             f"{self.n_train} + {self.n_test}")
        positive_int(self.depth, "depth", lo=3, hi=1000)
        positive_int(self.width, "width", lo=2)
        positive_int(self.baseline_depth, "baseline_depth", lo=1, hi=self.depth - 1)
        positive_int(self.seeds, "seeds", lo=2)
        positive_int(self.steps, "steps", lo=1)
        positive_int(self.batch_size, "batch_size", lo=1, hi=self.n_train)
        number(self.learning_rate, "learning_rate", lo=0, lo_open=True)
        positive_int(self.records, "records", lo=1, hi=self.steps)
        if self.steps % self.records:
            raise ValueError(f"steps must be a multiple of records, got steps {self.steps} and records {self.records}")
        positive_int(self.cmap_networks, "cmap_networks", lo=8)
        positive_int(self.cmap_inputs, "cmap_inputs", lo=2, hi=min(self.n_test, 16))
        positive_int(self.design_depth, "design_depth", lo=1, hi=1000)
        positive_int(self.design_order, "design_order", lo=1, hi=20)
        positive_int(self.design_train, "design_train", lo=10)
        positive_int(self.design_val, "design_val", lo=10)
        if self.design_train + self.design_val > self.n_train:
            raise ValueError(f"design_train + design_val must be <= n_train (the design sees only training data), "
                             f"got {self.design_train} + {self.design_val} > {self.n_train}")
        positive_int(self.design_steps, "design_steps", lo=10)
        number(self.design_learning_rate, "design_learning_rate", lo=0, lo_open=True)
        number(self.design_ridge, "design_ridge", lo=0, lo_open=True)
        number(self.design_shaping_weight, "design_shaping_weight", lo=0)
        number(self.design_q_slope, "design_q_slope", lo=0, lo_open=True)
        number(self.accuracy_margin, "accuracy_margin", lo=0, hi=1)
        number(self.accuracy_gap, "accuracy_gap", lo=0, hi=1)
        number(self.tolerance_se, "tolerance_se", lo=0, lo_open=True)


FULL = Config()
#: ``--quick``: digits, depth 16, width 64, 300 Adam steps at learning rate 1e-3 (stable at this depth), a
#: degree-3 design on 100 + 100 points.
QUICK = Config(data="digits", n_train=1297, n_test=500, depth=16, width=64, steps=300, batch_size=64,
               learning_rate=1e-3, records=6, cmap_networks=16, design_depth=10, design_train=100, design_val=100,
               design_steps=60, design_q_slope=0.7)


# ------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------


def _activations(depth: int, dtype) -> dict[str, tuple[Any, Any, Any]]:
    """``name -> (activation, sigma_w2, sigma_b2)`` of the deep networks (arrays of ``dtype``)."""
    from ..activations import Relu, Softplus, Tanh
    from ..design import Chain, dks, tat, tat_leaky_relu
    from ..meanfield import edge_of_chaos

    one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
    b2 = jnp.asarray(EOC_SIGMA_B2, dtype)
    net = Chain(depth)
    return {
        "tanh": (Tanh(), one, zero),
        "relu": (Relu(), 2 * one, zero),
        "eoc-tanh": (Tanh(), edge_of_chaos(Tanh(), b2).value, b2),
        "dks-tanh": (dks(Tanh(), net, slope=jnp.asarray(DKS_SLOPE, dtype)).activation, one, zero),
        "tat-softplus": (tat(Softplus(), net, curvature=jnp.asarray(TAT_CURVATURE, dtype)).activation, one, zero),
        "tat-lrelu": (tat_leaky_relu(net, c0=jnp.asarray(TAT_C0, dtype)).activation, one, zero),
    }


def _describe(act) -> dict[str, Any]:
    """The activation's type and parameters (for the report)."""
    out: dict[str, Any] = {"type": type(act).__name__}
    for f in dataclasses.fields(act):
        v = getattr(act, f.name)
        if isinstance(v, (jax.Array, np.ndarray)):
            out[f.name] = np.asarray(v, np.float64).tolist()
        elif isinstance(v, eqx.Module):
            out[f.name] = type(v).__name__
    return out


def _network(act, w2, b2, depth: int, width: int, d: int, k: int, dtype):
    from ..finite import PaddedMLP

    return PaddedMLP(width, depth, jnp.sqrt(w2), jnp.sqrt(b2), act, in_features=d, out_features=k, max_width=width,
                     max_depth=depth, parameterization="standard", dtype=dtype)


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


@eqx.filter_jit
def _train_seeds(net, keys, x, y, x_test, y_test, lr, steps_per_record: int, records: int, batch: int):
    """Adam on the softmax cross-entropy for every seed at once (``jax.vmap`` over ``keys``):
    ``(seeds, records + 1, 4)`` of (train loss, train accuracy, test loss, test accuracy) at steps
    ``0, s, 2s, ..., records * s``."""
    import optax

    opt = optax.adam(lr)
    n = x.shape[0]

    def loss_fn(p, xb, yb):
        return jnp.mean(optax.softmax_cross_entropy(net(p, xb), yb))

    def evaluate(p):
        def stats(xs, ys):
            out = net(p, xs)
            acc = jnp.mean((jnp.argmax(out, 1) == jnp.argmax(ys, 1)).astype(out.dtype))
            return jnp.mean(optax.softmax_cross_entropy(out, ys)), acc

        return jnp.stack([*stats(x, y), *stats(x_test, y_test)])

    def one(key):
        kinit, ktrain = jax.random.split(key)
        p = net.init(kinit)
        with jax.numpy_dtype_promotion("standard"):
            s = opt.init(p)

        def step(c, k):
            p, s = c
            idx = jax.random.choice(k, n, (batch,), replace=False)
            g = jax.grad(loss_fn)(p, x[idx], y[idx])
            with jax.numpy_dtype_promotion("standard"):  # optax mixes int counters and floats
                u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        def block(c, k):
            c, _ = jax.lax.scan(step, c, jax.random.split(k, steps_per_record))
            return c, evaluate(c[0])

        first = evaluate(p)
        _, recs = jax.lax.scan(block, (p, s), jax.random.split(ktrain, records))
        return jnp.concatenate([first[None], recs])

    return jax.vmap(one)(keys)


def _train_record(net, key, ds, cfg: Config) -> dict[str, Any]:
    t0 = time.perf_counter()
    dt = ds.x_train.dtype
    keys = jax.random.split(key, cfg.seeds)
    out = _train_seeds(net, keys, ds.x_train, ds.y_train, ds.x_test, ds.y_test, jnp.asarray(cfg.learning_rate, dt),
                       cfg.steps // cfg.records, cfg.records, cfg.batch_size)
    out = np.asarray(out, np.float64)
    every = cfg.steps // cfg.records
    return {"steps": [i * every for i in range(cfg.records + 1)],
            "train_loss": out[:, :, 0].tolist(), "train_accuracy": out[:, :, 1].tolist(),
            "test_loss": out[:, :, 2].tolist(), "test_accuracy": out[:, :, 3].tolist(),
            "seconds": time.perf_counter() - t0}


def _final(rec: dict[str, Any], key: str) -> tuple[float, float]:
    """Mean and standard deviation over seeds of ``rec[key]`` at the last record (non-finite values
    count as they are: a diverged seed makes the mean NaN)."""
    v = np.asarray(rec[key], np.float64)[:, -1]
    return float(np.mean(v)), float(np.std(v, ddof=1))


# ------------------------------------------------------------------------------------------
# C maps at initialization
# ------------------------------------------------------------------------------------------


@eqx.filter_jit
def _layer_kernels(net, keys, x):
    r"""``(networks, L, m, m)``: :math:`\hat G^{(\ell)} = \sigma_w^2 h^{(\ell)}h^{(\ell)\top}/n + \sigma_b^2`,
    :math:`\ell = 1..L`, for networks drawn from ``keys`` (one at a time: ``lax.map``). Layer
    :math:`\ell`'s features are those of the same draw at depth :math:`\ell` (the padded draw does not
    depend on the depth; :class:`rmtjax.finite.PaddedMLP`)."""
    L = net.max_depth
    n = net.max_width

    def one(k):
        p = net.init(k)

        def at(depth):
            h = eqx.tree_at(lambda m: m.depth, net, depth).features(p, x)
            return net.W_std**2 * (h @ h.T) / n + net.b_std**2

        return jax.vmap(at)(jnp.arange(1, L + 1, dtype=jnp.int32))

    return jax.lax.map(one, keys)


def _correlations(G) -> np.ndarray:
    """Pairwise correlations ``(..., pairs)`` of kernels ``(..., m, m)`` (pairs ``i < j``)."""
    G = np.asarray(G, np.float64)
    m = G.shape[-1]
    d = np.sqrt(np.diagonal(G, axis1=-2, axis2=-1))
    iu = np.triu_indices(m, 1)
    return (G / (d[..., :, None] * d[..., None, :]))[..., iu[0], iu[1]]


def theory_correlations(act, w2, b2, c_in, depth: int):
    r"""The correlation map iterated layer by layer from inputs with :math:`|x|^2/d = 1` and
    correlations ``c_in``: the kernel of Dense layer :math:`\ell`'s output, :math:`\ell = 1..L`,
    ``(L, pairs)`` (module docstring), and the variances ``(L,)``."""
    from ..meanfield import c_map, q_map

    q = w2 + b2
    c = (w2 * c_in + b2) / q
    cs, qs = [], []
    for _ in range(depth):
        q_next = q_map(q, act, w2, b2)
        c = jnp.clip(c_map(c, q, act, w2, b2) * q / q_next, -1.0, 1.0)
        q = q_next
        cs.append(c)
        qs.append(q)
    return jnp.stack(cs), jnp.stack(qs)


def _cmap_record(act, w2, b2, depth, width, d, key, x, networks, dtype) -> dict[str, Any]:
    t0 = time.perf_counter()
    net = _network(act, w2, b2, depth, width, d, 1, dtype)
    G = np.asarray(_layer_kernels(net, jax.random.split(key, networks), x), np.float64)  # (N, L, m, m)
    rho = _correlations(G)  # (N, L, pairs)
    q = np.mean(np.diagonal(G, axis1=-2, axis2=-1), axis=-1)  # (N, L)
    return {"mean": rho.mean(0).tolist(), "se": (rho.std(0, ddof=1) / math.sqrt(networks)).tolist(),
            "q_mean": q.mean(0).tolist(), "q_se": (q.std(0, ddof=1) / math.sqrt(networks)).tolist(),
            "networks": networks, "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------
# Design
# ------------------------------------------------------------------------------------------


def _design_objective(ds, cfg: Config):
    """The task objective (the NNGP kernel-ridge validation MSE) and the length-map penalty."""
    from ..design import Chain, KernelShaping, ValidationLoss

    m, v = cfg.design_train, cfg.design_val
    task = ValidationLoss(ds.x_train[:m], ds.y_train[:m], ds.x_train[m:m + v], ds.y_train[m:m + v],
                          depth=cfg.design_depth, ridge=cfg.design_ridge)
    return task, KernelShaping(Chain(cfg.design_depth), q_slope=cfg.design_q_slope)


def _design_inputs(cfg: Config, dtype):
    return jnp.full((cfg.design_order + 1,), 1.0 / math.sqrt(cfg.design_order + 1), dtype)


def _run_design(ds, cfg: Config) -> dict[str, Any]:
    import warnings

    import optax

    from ..activations import Relu
    from ..design import DesignWarning, HermiteSeries, design, hermite_family, local_maps

    t0 = time.perf_counter()
    task, shaping = _design_objective(ds, cfg)
    objective = task + cfg.design_shaping_weight * shaping
    init = _design_inputs(cfg, ds.x_train.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DesignWarning)  # convergence is reported, not warned
        out = design(hermite_family(init), objective, steps=cfg.design_steps,
                     optimizer=optax.adam(cfg.design_learning_rate))
    coeffs = np.asarray(out.activation.coeffs, np.float64)
    relu_task = eqx.tree_at(lambda o: o.W_std, task, jnp.asarray(math.sqrt(2.0), task.W_std.dtype))
    history = np.asarray(out.history, np.float64)
    before, after = HermiteSeries(init), out.activation
    return {"coefficients": coeffs.tolist(), "initial_coefficients": np.asarray(init, np.float64).tolist(),
            "objective_before": float(task(before)), "objective_after": float(task(after)),
            "objective_relu": float(relu_task(Relu())), "penalty_before": float(shaping(before)),
            "penalty_after": float(shaping(after)), "q_slope": float(local_maps(after).q_slope),
            "c_slope": float(local_maps(after).c_slope), "c0": float(local_maps(after).c0),
            "history": history.tolist(), "converged": bool(out.converged), "seconds": time.perf_counter() - t0}


def _theory_all(acts: dict, c_in, depth: int, hermite, relu2, objective) -> dict[str, Any]:
    """The deterministic theory quantities of the run (the float32 run compares them with float64):
    the c-map curves of every activation and the design objective at the designed coefficients."""
    from ..activations import HermiteSeries, Relu

    out = {}
    for name, (act, w2, b2) in acts.items():
        c, q = theory_correlations(act, w2, b2, c_in, depth)
        out[f"{name} c-map"] = c
        out[f"{name} q-map"] = q
    out["design objective (designed)"] = objective(HermiteSeries(hermite))
    out["design objective (ReLU)"] = eqx.tree_at(lambda o: o.W_std, objective, relu2)(Relu())
    return out


# ------------------------------------------------------------------------------------------
# Runner
# ------------------------------------------------------------------------------------------


def _load_data(cfg: Config, seed: int, dtype):
    from ..data import digits, mnist

    load = {"mnist": mnist, "digits": digits}[cfg.data]
    return load(cfg.n_train, cfg.n_test, seed=seed, dtype=dtype)


def run(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True,
        config: Config | None = None) -> dict[str, Any]:
    """Runs the reproduction and writes ``activation_design.png``, ``report.json``, ``report.md``.

    Args:
        out_dir: output folder (created; checked before any computation); ``resume.json`` there
            holds the finished pieces.
        quick: use :data:`QUICK` instead of :data:`FULL`.
        seed: master seed of the split, the networks and the minibatches, in ``[0, 2**32 - 1]``.
        progress: show a progress bar.
        config: explicit sizes (overrides ``quick``).

    Returns:
        The report (also in ``report.json``); ``report["ok"]`` is the headline check (shaped deep
        networks close to the shallow baseline and ahead of plain ReLU and tanh) and the c-map and
        design checks, all measured.
    """
    from tqdm.auto import tqdm

    from ..activations import HermiteSeries, Relu

    t_start = time.perf_counter()
    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be an activation_design.Config, got {type(cfg).__name__}")
    seed = check_seed(seed)
    out = check_out_dir(out_dir)
    dtype = jnp.dtype(dtype_name())
    resume = ResumeFile(out, NAME, {**config_dict(cfg), "seed": seed, "dtype": dtype.name})
    ds = _load_data(cfg, seed, dtype)
    d, k = ds.x_train.shape[1], ds.y_train.shape[1]
    x_pairs = ds.x_test[: cfg.cmap_inputs]
    c_in = jnp.asarray(_correlations(np.asarray(x_pairs @ x_pairs.T / d)), dtype)  # |x|^2/d = 1
    master = jax.random.key(seed)

    acts = _activations(cfg.depth, dtype)
    pieces = ([f"cmap|{a}" for a in ACTIVATIONS] + [f"train|{a}" for a in ACTIVATIONS]
              + [f"train|{BASELINE}", "design", f"train|{HERMITE}", f"train|{DESIGN_RELU}"])
    with tqdm(total=len(pieces), initial=sum(p in resume for p in pieces), desc=f"reproduce {NAME}",
              unit="piece", disable=not progress) as bar:

        def do(key, fn):
            if key not in resume:
                bar.set_postfix_str(key)
                resume.put(key, fn())
                bar.update()
            return resume[key]

        for i, a in enumerate(ACTIVATIONS):
            act, w2, b2 = acts[a]
            do(f"cmap|{a}", lambda: _cmap_record(act, w2, b2, cfg.depth, cfg.width, d,
                                                 jax.random.fold_in(jax.random.fold_in(master, 1), i), x_pairs,
                                                 cfg.cmap_networks, dtype))
        for i, a in enumerate(ACTIVATIONS):
            act, w2, b2 = acts[a]
            net = _network(act, w2, b2, cfg.depth, cfg.width, d, k, dtype)
            do(f"train|{a}", lambda: _train_record(net, jax.random.fold_in(jax.random.fold_in(master, 2), i), ds, cfg))
        base = _network(Relu(), jnp.asarray(2.0, dtype), jnp.asarray(0.0, dtype), cfg.baseline_depth, cfg.width, d, k,
                        dtype)
        do(f"train|{BASELINE}", lambda: _train_record(base, jax.random.fold_in(master, 3), ds, cfg))
        des = do("design", lambda: _run_design(ds, cfg))
        herm = jnp.asarray(des["coefficients"], dtype)
        hnet = _network(HermiteSeries(herm), jnp.asarray(1.0, dtype), jnp.asarray(0.0, dtype), cfg.design_depth,
                        cfg.width, d, k, dtype)
        rnet = _network(Relu(), jnp.asarray(2.0, dtype), jnp.asarray(0.0, dtype), cfg.design_depth, cfg.width, d, k,
                        dtype)
        do(f"train|{HERMITE}", lambda: _train_record(hnet, jax.random.fold_in(master, 4), ds, cfg))
        do(f"train|{DESIGN_RELU}", lambda: _train_record(rnet, jax.random.fold_in(master, 5), ds, cfg))

    # -- analysis ------------------------------------------------------------------------------
    objective, _ = _design_objective(ds, cfg)
    relu2 = jnp.asarray(math.sqrt(2.0), dtype)
    theory = jax.tree.map(lambda a: np.asarray(a, np.float64), _theory_all(acts, c_in, cfg.depth, herm, relu2,
                                                                          objective))
    tol = cfg.tolerance_se
    cmap: dict[str, Any] = {}
    for a in ACTIVATIONS:
        r = resume[f"cmap|{a}"]
        mean, se = np.asarray(r["mean"]), np.asarray(r["se"])
        th = theory[f"{a} c-map"]
        z = np.abs(mean - th) / np.where(se > 0, se, np.inf)
        z = np.where((se == 0) & (mean != th), np.inf, z)
        cmap[a] = {**r, "theory": th.tolist(), "theory_q": theory[f"{a} q-map"].tolist(), "z": z.tolist(),
                   "max_z": float(np.max(z)), "max_abs_diff": float(np.max(np.abs(mean - th))),
                   "agrees": bool(np.max(z) <= tol)}
    pairs = [f"{i}-{j}" for i, j in itertools.combinations(range(cfg.cmap_inputs), 2)]

    names = list(ACTIVATIONS) + [BASELINE, HERMITE, DESIGN_RELU]
    training: dict[str, Any] = {}
    for a in names:
        r = resume[f"train|{a}"]
        tl, tl_sd = _final(r, "train_loss")
        ta, ta_sd = _final(r, "test_accuracy")
        training[a] = {**r, "final_train_loss": tl, "final_train_loss_std": tl_sd, "final_test_accuracy": ta,
                       "final_test_accuracy_std": ta_sd}
    acc = {a: training[a]["final_test_accuracy"] for a in names}
    base_acc = acc[BASELINE]
    close = {a: bool(base_acc - acc[a] <= cfg.accuracy_margin) for a in SHAPED}
    ahead = {a: bool(all(acc[a] - acc[p] >= cfg.accuracy_gap for p in PLAIN)) for a in SHAPED}
    checks = {
        "shaped_close_to_shallow": bool(all(close.values())),
        "shaped_ahead_of_plain": bool(all(ahead.values())),
        "cmap_agrees": bool(all(c["agrees"] for c in cmap.values())),
        "design_objective_decreased": bool(des["objective_after"] < des["objective_before"]),
        "max_cmap_z": max(c["max_z"] for c in cmap.values()),
    }
    ok = all(v for k_, v in checks.items() if k_ != "max_cmap_z")
    headline = {"baseline_test_accuracy": base_acc, "close": close, "ahead": ahead,
                "criterion": (f"at depth {cfg.depth}, {' and '.join(SHAPED)} mean final test accuracy within "
                              f"{cfg.accuracy_margin} of the depth-{cfg.baseline_depth} ReLU baseline and at least "
                              f"{cfg.accuracy_gap} above each of {' and '.join(PLAIN)}")}
    precision = float64_comparison(_theory_all, acts, c_in, cfg.depth, herm, relu2, objective, float32_values=theory)
    networks = {a: {"activation": _describe(acts[a][0]), "sigma_w2": float(acts[a][1]), "sigma_b2": float(acts[a][2]),
                    "depth": cfg.depth} for a in ACTIVATIONS}
    networks[BASELINE] = {"activation": {"type": "Relu"}, "sigma_w2": 2.0, "sigma_b2": 0.0, "depth": cfg.baseline_depth}
    networks[HERMITE] = {"activation": {"type": "HermiteSeries", "coeffs": des["coefficients"]}, "sigma_w2": 1.0,
                         "sigma_b2": 0.0, "depth": cfg.design_depth}
    networks[DESIGN_RELU] = {"activation": {"type": "Relu"}, "sigma_w2": 2.0, "sigma_b2": 0.0,
                             "depth": cfg.design_depth}
    report = {
        "name": NAME, "ok": bool(ok), "quick": cfg == QUICK, "seed": seed, "dtype": dtype.name,
        "config": config_dict(cfg), "networks": networks,
        "setup": {"parameterization": "standard (W ~ N(0, sigma_w^2/fan_in), biases N(0, sigma_b^2), all trained)",
                  "optimizer": f"optax.adam({cfg.learning_rate}), the same for every network",
                  "loss": "softmax cross-entropy, one-hot targets",
                  "batches": f"{cfg.batch_size} points drawn without replacement at every step",
                  "inputs": "each image standardized over its pixels: |x|^2/d = 1",
                  "data": f"{cfg.data}: {cfg.n_train} train, {cfg.n_test} test (stratified split, seed {seed})"},
        "training": training, "headline": headline,
        "cmap": {"pairs": pairs, "input_correlations": np.asarray(c_in, np.float64).tolist(), "activations": cmap},
        "design": {**des, "hermite_order": cfg.design_order, "depth": cfg.design_depth},
        "checks": checks, "precision": precision, "resume": resume.summary(), "versions": versions(),
        "files": {"figure": "activation_design.png", "report_md": "report.md", "resume": resume.path.name},
    }
    report["summary"] = _summary(report)
    _figure(report, out / "activation_design.png")
    report["seconds"] = time.perf_counter() - t_start
    report["pieces_seconds"] = float(sum(resume[p_].get("seconds", 0.0) for p_ in pieces))
    write_report(out, report, _markdown(report))
    return report


def _summary(r) -> str:
    t, cfg = r["training"], r["config"]
    parts = [f"{a} {num(t[a]['final_test_accuracy'], 3)}" for a in ACTIVATIONS]
    d = r["design"]
    return (f"depth-{cfg['depth']} test accuracy after {cfg['steps']} Adam steps: " + ", ".join(parts)
            + f"; depth-{cfg['baseline_depth']} ReLU {num(t[BASELINE]['final_test_accuracy'], 3)}. C maps at init: "
            f"max |z| {num(r['checks']['max_cmap_z'], 3)}. Designed Hermite activation: objective "
            f"{num(d['objective_before'], 4)} -> {num(d['objective_after'], 4)} (ReLU {num(d['objective_relu'], 4)}), "
            f"depth-{cfg['design_depth']} test accuracy {num(t[HERMITE]['final_test_accuracy'], 3)} vs ReLU "
            f"{num(t[DESIGN_RELU]['final_test_accuracy'], 3)}")


# ------------------------------------------------------------------------------------------
# Figure and Markdown
# ------------------------------------------------------------------------------------------

_COLORS = {"tanh": "C0", "relu": "C3", "eoc-tanh": "C9", "dks-tanh": "C2", "tat-softplus": "C4", "tat-lrelu": "C1",
           BASELINE: "k", HERMITE: "C6", DESIGN_RELU: "C7"}


def _band(ax, rec, key, label, color, ls="-"):
    steps = np.asarray(rec["steps"], float)
    v = np.asarray(rec[key], np.float64)
    m, s = v.mean(0), v.std(0, ddof=1)
    ax.plot(steps, m, color=color, ls=ls, label=label)
    ax.fill_between(steps, m - s, m + s, color=color, alpha=0.2, lw=0)


def _figure(r, path):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    cfg, t = r["config"], r["training"]
    fig = Figure(figsize=(25, 4.8))
    ax = fig.subplots(1, 5)
    for a in list(ACTIVATIONS) + [BASELINE]:
        lab = f"{a} L={cfg['depth']}" if a != BASELINE else f"ReLU L={cfg['baseline_depth']}"
        ls = "--" if a == BASELINE else "-"
        _band(ax[0], t[a], "train_loss", lab, _COLORS[a], ls)
        _band(ax[1], t[a], "test_accuracy", lab, _COLORS[a], ls)
    ax[0].set(xlabel="Adam step", ylabel="train loss (cross-entropy)", yscale="log",
              title=f"(a) train loss, width {cfg['width']}, mean $\\pm$ std over {cfg['seeds']} seeds")
    ax[1].set(xlabel="Adam step", ylabel="test accuracy", title=f"(b) test accuracy ({cfg['data']})")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    a = ax[2]
    layers = np.arange(1, cfg["depth"] + 1)
    for name in ACTIVATIONS:
        c = r["cmap"]["activations"][name]
        mean, se, th = np.asarray(c["mean"])[:, 0], np.asarray(c["se"])[:, 0], np.asarray(c["theory"])[:, 0]
        a.errorbar(layers, mean, yerr=se, fmt="o", ms=2.5, capsize=1.5, color=_COLORS[name], label=name)
        a.plot(layers, th, color=_COLORS[name], lw=1)
    a.set(xlabel="layer $\\ell$", ylabel="correlation of inputs 0 and 1",
          title=f"(c) c map at init: {cfg['cmap_networks']} networks (dots $\\pm$ se) vs theory (lines)\n"
                f"max |z| over {len(r['cmap']['pairs'])} pairs: {num(r['checks']['max_cmap_z'], 3)}")
    a.legend(fontsize=7)
    d = r["design"]
    a = ax[3]
    a.plot(np.arange(len(d["history"])), d["history"], color=_COLORS[HERMITE],
           label="Hermite series: task + penalty")
    a.axhline(d["objective_after"], color=_COLORS[HERMITE], ls=":", label="designed: task objective")
    a.axhline(d["objective_relu"], color=_COLORS[DESIGN_RELU], ls="--", label="ReLU: task objective")
    a.set(xlabel="design step", ylabel="NNGP kernel-ridge validation MSE (+ penalty)", yscale="log",
          title=f"(d) design objective, depth-{d['depth']} NNGP, degree {d['hermite_order']}")
    a.legend(fontsize=8)
    ins = a.inset_axes([0.5, 0.35, 0.45, 0.35])
    u = np.linspace(-3, 3, 121)
    coeffs = np.asarray(d["coefficients"])
    he = [np.ones_like(u), u]
    for kk in range(1, len(coeffs) - 1):
        he.append((u * he[kk] - math.sqrt(kk) * he[kk - 1]) / math.sqrt(kk + 1))
    ins.plot(u, sum(c * h for c, h in zip(coeffs, he)), color=_COLORS[HERMITE])
    ins.set_title("designed $\\phi$", fontsize=7)
    ins.tick_params(labelsize=6)
    a = ax[4]
    for name, lab in ((HERMITE, "designed Hermite"), (DESIGN_RELU, "ReLU (He)")):
        _band(a, t[name], "test_accuracy", f"{lab}, L={d['depth']}", _COLORS[name])
    a.set(xlabel="Adam step", ylabel="test accuracy", title=f"(e) depth-{d['depth']} networks: designed vs ReLU")
    a.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def _pm(m, s, digits=3):
    return f"{num(m, digits)} ± {num(s, 2)}"


def _markdown(r) -> str:
    cfg, t, c = r["config"], r["training"], r["checks"]
    s = r["setup"]
    lines = [
        "# Activation design proved by training: deep plain networks with shaped activations", "",
        f"**{'Reproduced' if r['ok'] else 'NOT reproduced'}** in {r['seconds']:.1f} s "
        f"({'quick' if r['quick'] else 'full'} mode, {r['dtype']}; the pieces took {r['pieces_seconds']:.0f} s when "
        f"computed, resume status: {r['resume']['status']}). {r['summary']}.", "",
        f"Setup: {s['data']}; {s['inputs']}. Plain MLPs (no skips, no normalization), width {cfg['width']}, "
        f"{s['parameterization']}; {s['optimizer']}, {cfg['steps']} steps, {s['batches']}; {s['loss']}; "
        f"{cfg['seeds']} seeds per network (mean ± std over seeds).", "",
        "| network | depth | sigma_w^2 | sigma_b^2 | activation |", "|---|---:|---:|---:|---|",
    ]
    for a, n in r["networks"].items():
        act = n["activation"]
        desc = act["type"] + "".join(f", {k_} = {nums(np.atleast_1d(v), 4)}" for k_, v in act.items()
                                     if k_ not in ("type",) and not isinstance(v, str))
        if "base" in act:
            desc += f" (base {act['base']})"
        lines.append(f"| {a} | {n['depth']} | {num(n['sigma_w2'])} | {num(n['sigma_b2'])} | {desc} |")
    steps = t[ACTIVATIONS[0]]["steps"]
    pick = sorted({0, len(steps) // 2, len(steps) - 1})
    lines += ["", "## Training", "",
              "| network | " + " | ".join(f"train loss @ {steps[i]}" for i in pick) + " | "
              + " | ".join(f"test acc @ {steps[i]}" for i in pick) + " |",
              "|---|" + "---:|" * (2 * len(pick))]
    for a in list(ACTIVATIONS) + [BASELINE, HERMITE, DESIGN_RELU]:
        rec = t[a]
        tl, ta = np.asarray(rec["train_loss"]), np.asarray(rec["test_accuracy"])
        cells = [_pm(tl[:, i].mean(), tl[:, i].std(ddof=1)) for i in pick]
        cells += [_pm(ta[:, i].mean(), ta[:, i].std(ddof=1)) for i in pick]
        lines.append(f"| {a} (L={r['networks'][a]['depth']}) | " + " | ".join(cells) + " |")
    h = r["headline"]
    lines += ["", f"Headline criterion: {h['criterion']}. Baseline {num(h['baseline_test_accuracy'], 4)}; "
              + "; ".join(f"{a}: {num(t[a]['final_test_accuracy'], 4)} (close: {'yes' if h['close'][a] else 'no'}, "
                          f"ahead of plain: {'yes' if h['ahead'][a] else 'no'})" for a in SHAPED)
              + "; plain: " + ", ".join(f"{a} {num(t[a]['final_test_accuracy'], 4)}" for a in PLAIN) + ".", "",
              "## C maps at initialization", "",
              f"Correlations of the conjugate kernels of {cfg['cmap_inputs']} test inputs (input correlations "
              f"{nums(r['cmap']['input_correlations'], 3)}) at every layer of {cfg['cmap_networks']} networks per "
              f"activation vs the c map iterated layer by layer; z = |mean - theory| / se; agreement: max z <= "
              f"{num(cfg['tolerance_se'])}.", "",
              "| activation | corr. at layer L (pair 0-1): measured | theory | max |measured - theory| | max z | "
              "agrees |", "|---|---:|---:|---:|---:|:---:|"]
    for a in ACTIVATIONS:
        e = r["cmap"]["activations"][a]
        lines.append(f"| {a} | {_pm(e['mean'][-1][0], e['se'][-1][0], 4)} | {num(e['theory'][-1][0], 4)} | "
                     f"{num(e['max_abs_diff'], 3)} | {num(e['max_z'], 3)} | {'yes' if e['agrees'] else '**no**'} |")
    d = r["design"]
    lines += ["", "## A designed activation", "",
              f"HermiteSeries of degree {d['hermite_order']} (sum a_k^2 = 1), from a_k = "
              f"{num(d['initial_coefficients'][0], 4)} for all k, designed by {cfg['design_steps']} Adam steps "
              f"(learning rate {num(cfg['design_learning_rate'])}) on the NNGP kernel-ridge validation MSE of a "
              f"depth-{d['depth']} network ({cfg['design_train']} training points, validated on the next "
              f"{cfg['design_val']} training points, relative ridge {num(cfg['design_ridge'])}; converged: "
              f"{'yes' if d['converged'] else 'no'}).", "",
              f"Penalty {num(cfg['design_shaping_weight'])} (Q'(1) - {num(cfg['design_q_slope'])})^2 added "
              "(KernelShaping): a polynomial's length map is convex, and with Q'(1) >= 1 the finite networks' "
              "variances run away through the layers (see the module docstring for the measurement).", "",
              f"- task objective before: {num(d['objective_before'], 5)}; after: {num(d['objective_after'], 5)}; "
              f"ReLU (sigma_w^2 = 2): {num(d['objective_relu'], 5)}; penalty {num(d['penalty_before'], 3)} -> "
              f"{num(d['penalty_after'], 3)}",
              f"- designed local maps: Q'(1) = {num(d['q_slope'], 4)}, C(0) = {num(d['c0'], 4)}, C'(1) = "
              f"{num(d['c_slope'], 4)}",
              f"- designed coefficients a_0..a_{d['hermite_order']}: {nums(d['coefficients'], 4)}",
              f"- trained depth-{d['depth']} networks, final test accuracy: designed "
              f"{_pm(t[HERMITE]['final_test_accuracy'], t[HERMITE]['final_test_accuracy_std'])}, ReLU "
              f"{_pm(t[DESIGN_RELU]['final_test_accuracy'], t[DESIGN_RELU]['final_test_accuracy_std'])}; final train "
              f"loss: designed {_pm(t[HERMITE]['final_train_loss'], t[HERMITE]['final_train_loss_std'])}, ReLU "
              f"{_pm(t[DESIGN_RELU]['final_train_loss'], t[DESIGN_RELU]['final_train_loss_std'])}", "",
              "## Checks", ""]
    lines += [f"- {k_}: {num(v, 3) if k_ == 'max_cmap_z' else ('yes' if v else '**no**')}" for k_, v in c.items()]
    lines.append("")
    lines += precision_lines(r.get("precision"))
    lines += ["![training, c maps, design](activation_design.png)", ""]
    return "\n".join(lines)
