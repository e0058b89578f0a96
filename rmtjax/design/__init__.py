r"""Activation design through the theory: kernel shaping (DKS, TAT), criticality, dynamical
isometry, branching quantities and task objectives, each a differentiable function of the activation,
and an optax loop that designs an activation against any combination of them.

* **Families** (:mod:`rmtjax.activations`, re-exported here): :class:`HermiteSeries` (an activation by
  its Hermite coefficients, exact dual at any variance), :class:`Transformed`
  (:math:`\gamma(\phi(\alpha x+\beta)+\delta)`, DKS/TAT's form) and every parameterized activation;
  :class:`Family`, :func:`hermite_family`, :func:`transformed_family`, :func:`parameters_of` make them
  designable with constraints by reparameterization.
* **Kernel shaping solved exactly** (:mod:`._shaping`): :func:`dks`, :func:`tat`,
  :func:`tat_leaky_relu` for a :class:`Chain` or :class:`Residual` network, with implicit gradients;
  :func:`local_maps` gives the local Q/C-map values any activation has.
* **Objectives** (:mod:`._objectives`): :class:`Criticality`, :class:`KernelShaping`,
  :class:`JacobianMoments`, :class:`JacobianEdge`, :class:`Branching`, :class:`KernelDistance`, :class:`NTKCondition`,
  :class:`ValidationLoss`, :class:`MarginalLikelihood`; ``a + b`` and ``w * a`` compose them.
* :func:`design` runs the jit-compiled optax loop and returns a :class:`Design`.

Example:
    >>> from rmtjax.activations import Tanh
    >>> from rmtjax.design import Chain, dks
    >>> phi = dks(Tanh(), Chain(20), slope=1.5).activation  # an ordinary activation module
    >>> type(phi).__name__
    'Transformed'

This module sits above :mod:`rmtjax.meanfield`, :mod:`rmtjax.hermite`, :mod:`rmtjax.kernels` and
:mod:`rmtjax.regression` and does not import flax; finite networks take the designed activation as
any other (:class:`rmtjax.finite.MLP`).
"""
from ..activations import HermiteSeries as HermiteSeries
from ..activations import Transformed as Transformed
from ._loop import Design as Design
from ._loop import DesignWarning as DesignWarning
from ._loop import Family as Family
from ._loop import design as design
from ._loop import hermite_family as hermite_family
from ._loop import parameters_of as parameters_of
from ._loop import transformed_family as transformed_family
from ._objectives import AbstractObjective as AbstractObjective
from ._objectives import Branching as Branching
from ._objectives import Criticality as Criticality
from ._objectives import JacobianEdge as JacobianEdge
from ._objectives import JacobianMoments as JacobianMoments
from ._objectives import KernelDistance as KernelDistance
from ._objectives import KernelShaping as KernelShaping
from ._objectives import MarginalLikelihood as MarginalLikelihood
from ._objectives import NTKCondition as NTKCondition
from ._objectives import ValidationLoss as ValidationLoss
from ._shaping import AbstractNetwork as AbstractNetwork
from ._shaping import Chain as Chain
from ._shaping import LocalMaps as LocalMaps
from ._shaping import Residual as Residual
from ._shaping import Shaping as Shaping
from ._shaping import dks as dks
from ._shaping import local_maps as local_maps
from ._shaping import tat as tat
from ._shaping import tat_leaky_relu as tat_leaky_relu

__all__ = [
    "AbstractNetwork", "AbstractObjective", "Branching", "Chain", "Criticality", "Design", "DesignWarning",
    "Family", "HermiteSeries", "JacobianEdge", "JacobianMoments", "KernelDistance", "KernelShaping", "LocalMaps",
    "MarginalLikelihood", "NTKCondition", "Residual", "Shaping", "Transformed", "ValidationLoss", "design", "dks",
    "hermite_family", "local_maps", "parameters_of", "tat", "tat_leaky_relu", "transformed_family",
]
