"""Reproducible experiments, one module per result, each run by ``rmtjax reproduce NAME``.

The registry :data:`EXPERIMENTS` maps a name to an :class:`Experiment`: a one-line description
and the ``"module:function"`` that runs it. Modules are imported only when an experiment is run,
so listing them (``rmtjax reproduce --list``) is instant.

Every runner has the signature ``run(out_dir, *, quick=False, seed=0, progress=True) -> dict``:
it writes a PNG figure, ``report.json`` and ``report.md`` into ``out_dir`` and returns the report
as a dictionary (with a boolean ``"ok"``: whether the result was reproduced).

Example:
    >>> from rmtjax.experiments import EXPERIMENTS
    >>> sorted(EXPERIMENTS)
    ['kernels', 'meanfield']
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
    """

    description: str
    target: str

    def load(self) -> Callable[..., dict[str, Any]]:
        """Imports the module and returns the runner function."""
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


EXPERIMENTS: dict[str, Experiment] = {
    "kernels": Experiment(
        "Infinite-width NNGP/NTK across depths vs Monte-Carlo finite-width networks (Relu, Erf, Tanh)",
        "rmtjax.experiments.kernels:run",
    ),
    "meanfield": Experiment(
        "Order/chaos phase diagram of tanh networks, depth-scale divergence, c-map vs wide random networks",
        "rmtjax.experiments.meanfield:run",
    ),
}
