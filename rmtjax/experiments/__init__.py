"""Reproducible experiments, one module per result, each run by ``rmtjax reproduce NAME``.

The registry :data:`EXPERIMENTS` maps a name to an :class:`Experiment`: a one-line description
and the ``"module:function"`` that runs it. Modules are imported only when an experiment is run,
so listing them (``rmtjax reproduce --list``) is instant.

Every runner has the signature ``run(out_dir, *, quick=False, seed=0, progress=True, config=None)
-> dict``: it checks ``out_dir`` (a writable folder, created if needed) and its sizes (the
module's ``QUICK``/``FULL`` configuration or ``config``, a frozen dataclass checked field by field)
before computing anything, writes a PNG figure, ``report.json`` and ``report.md`` into
``out_dir`` (atomically: see :mod:`._output`) and returns the report as a dictionary (with a
boolean ``"ok"``: whether the result was reproduced). Runners that take long keep their finished
pieces in ``out_dir/resume.json`` (:mod:`._resume`) and skip them when rerun with the same
configuration. Run with x64 disabled (``rmtjax reproduce NAME --float32``), the report's
``"precision"`` entry gives the float32 accuracy of the headline quantities against float64
(:mod:`._precision`).

Example:
    >>> from rmtjax.experiments import EXPERIMENTS
    >>> sorted(EXPERIMENTS)  # doctest: +NORMALIZE_WHITESPACE
    ['activation-design', 'conv-kernel-regression', 'dynamical-isometry', 'fan-wang', 'finite-width', 'hidden-manifold',
     'kernel-regression', 'kernels', 'learning-curves', 'liang-tranbach', 'meanfield', 'neural-collapse', 'saad-solla',
     'seddik-universality', 'trainability', 'width-sweep']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["EXPERIMENTS", "Experiment"]


class Experiment(NamedTuple):
    """A registered experiment.

    Attributes:
        description: one line, shown by ``rmtjax reproduce --list``.
        target: ``"package.module:function"``, the runner (imported lazily by :meth:`load`).
        quick_seconds: measured CPU time (user + system, import and compilation included) of
            ``rmtjax reproduce NAME --quick`` in float64 (shown by ``--list``), or ``None``. Measured
            2026-12-05 on the 2-core development machine under heavy load (load average 6-12), where
            the wall times were 2-5x longer; compilation is most of it. kernel-regression, meanfield and
            dynamical-isometry remeasured 2026-12-06 on a quiet machine after their compile-count cuts, fan-wang
            after its quick size went to n = 120 (49 s CPU, 35 s wall); finite-width remeasured 2026-12-07 by the CLI
            after panel (c) moved to 400 one-hidden-layer networks per width and ntk_change (43 s CPU, 34 s wall,
            quiet machine); activation-design measured 2026-12-06 by the CLI (99 s CPU,
            99 s wall, load average 2.7; about 45 s of it compiles the shaping solves, the design and nine training
            programs); trainability measured 2026-12-06 by the CLI (20 s CPU, 24 s wall, load average 5.5);
            learning-curves remeasured 2026-12-07 by the CLI after panels (e) and (f) were added (26 s CPU, 19 s
            wall, quiet machine; the earlier 63 s was under a load average of about 5).
    """

    description: str
    target: str
    quick_seconds: float | None = None

    def load(self) -> Callable[..., dict[str, Any]]:
        """Imports the module and returns the runner function."""
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


EXPERIMENTS: dict[str, Experiment] = {
    "kernels": Experiment(
        "Infinite-width NNGP/NTK across depths vs Monte-Carlo finite-width networks (Relu, Erf, Tanh)",
        "rmtjax.experiments.kernels:run",
        quick_seconds=69,
    ),
    "meanfield": Experiment(
        "Order/chaos phase diagram of tanh networks, depth-scale divergence, c-map vs wide random networks",
        "rmtjax.experiments.meanfield:run",
        quick_seconds=33,
    ),
    "liang-tranbach": Experiment(
        "Compositional kernels as branching processes (Liang & Tran-Bach 2020): mu table, depth limits, "
        "extinction probability, memorization depth, compositional random features on MNIST",
        "rmtjax.experiments.compositional_kernels:run",
        quick_seconds=76,
    ),
    "kernel-regression": Experiment(
        "NNGP/NTK regression on MNIST 5k across depths (ReLU, Erf) and finite MLPs approaching the NTK across widths",
        "rmtjax.experiments.kernel_regression:run",
        quick_seconds=40,
    ),
    "conv-kernel-regression": Experiment(
        "CNN-GP/CNTK and Myrtle kernel regression on MNIST vs the fully-connected NNGP/NTK and finite CNNs across widths",
        "rmtjax.experiments.conv_kernel_regression:run",
        quick_seconds=74,
    ),
    "neural-collapse": Experiment(
        "Neural collapse NC1-NC4 in the terminal phase of training: LayerNorm MLPs on digits and MNIST 5k "
        "(Papyan et al. 2020)",
        "rmtjax.experiments.neural_collapse:run",
        quick_seconds=52,
    ),
    "dynamical-isometry": Experiment(
        "Jacobian singular-value spectra at criticality, ReLU/hard-tanh/erf, Gaussian vs orthogonal weights, "
        "vs finite networks (Pennington et al. 2017)",
        "rmtjax.experiments.dynamical_isometry:run",
        quick_seconds=41,
    ),
    "saad-solla": Experiment(
        "Soft committee machine (erf, K = M = 2): Saad-Solla ODEs vs online SGD, plateau and escape, "
        "finite-N gap ~ N^-1/2",
        "rmtjax.experiments.saad_solla:run",
        quick_seconds=77,
    ),
    "hidden-manifold": Experiment(
        "Hidden manifold model (Goldt et al. 2020): online-SGD ODEs over the spectrum of Omega vs simulation on "
        "sign-generated data; Gaussian equivalence of the local fields for a deep generator",
        "rmtjax.experiments.hidden_manifold:run",
        quick_seconds=43,
    ),
    "seddik-universality": Experiment(
        "GAN-like (random Lipschitz generator) data vs their Gaussian twin: Gram spectra, spikes, eigenvector "
        "alignments, ridge accuracy, and the deterministic equivalent (Seddik et al. 2020)",
        "rmtjax.experiments.seddik_universality:run",
        quick_seconds=37,
    ),
    "fan-wang": Experiment(
        "CK/NTK eigenvalue spectra of linear-width networks and the largest stable learning rate (Fan & Wang 2020)",
        "rmtjax.experiments.fan_wang:run",
        quick_seconds=49,
    ),
    "finite-width": Experiment(
        "1/n corrections vs Flax networks across widths: NNGP mean correction and four-point vertex, NTK relative "
        "variance against L/n, NTK change during gradient-descent training ~ 1/n and its prefactor (ntk_change)",
        "rmtjax.experiments.finite_width:run",
        quick_seconds=43,
    ),
    "activation-design": Experiment(
        "Activation design proved by training: depth-50 plain MLPs on MNIST with DKS/TAT-shaped activations vs "
        "ReLU, tanh and edge-of-chaos tanh; c maps at init vs theory; a Hermite activation designed for the task",
        "rmtjax.experiments.activation_design:run",
        quick_seconds=99,
    ),
    "trainability": Experiment(
        "Trainability phase diagram of tanh MLPs on MNIST over (sigma_w^2, depth) vs 6 xi_c, one sharded, resumable "
        "sweep of padded networks (Schoenholz et al. 2017, Fig. 5)",
        "rmtjax.experiments.trainability:run",
        quick_seconds=20,
    ),
    "width-sweep": Experiment(
        "Empirical NNGP/NTK of finite ReLU MLPs vs the infinite-width kernels over widths 16-4096 and depths 1-10: "
        "deviation ~ n^-1/2, one resumable sweep of padded networks vs a Python loop of jitted calls",
        "rmtjax.experiments.width_sweep:run",
        quick_seconds=15,
    ),
    "learning-curves": Experiment(
        "Learning curves predicted: NNGP kernel ridge regression on MNIST and a synthetic teacher vs eigenlearning; "
        "random-features ridge regression on MNIST through its double-descent peak and the Mei-Montanari limit; "
        "NNGP and NTK of ReLU and erf at depths 1 and 5; the ridge chosen by the theory vs by validation",
        "rmtjax.experiments.learning_curves:run",
        quick_seconds=20,
    ),
}
