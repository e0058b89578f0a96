"""Finite-width networks against the infinite-width theory (the only module that imports flax).

Flax (nnx) networks built from the same :class:`rmtjax.kernels.FullyConnected` spec as the
kernels (:class:`MLP`, :func:`init_ensemble` for batches of seeds), empirical NNGP/NTK with
Monte-Carlo standard errors and input Jacobians, optax training loops (:func:`train`), and
networks padded to a largest width and depth whose width, depth and hyperparameters are arrays
(:class:`PaddedMLP`, :func:`train_padded`: a ``jax.vmap`` over them is one program).
"""

from ._classifier import Classifier as Classifier
from ._empirical import MonteCarloKernel as MonteCarloKernel
from ._empirical import empirical_nngp as empirical_nngp
from ._empirical import empirical_ntk as empirical_ntk
from ._empirical import ensemble_kernels as ensemble_kernels
from ._empirical import input_jacobian as input_jacobian
from ._empirical import monte_carlo_kernels as monte_carlo_kernels
from ._network import Dense as Dense
from ._network import Ensemble as Ensemble
from ._network import Hyperparameter as Hyperparameter
from ._network import MLP as MLP
from ._network import functional as functional
from ._network import infinite_width_kernel as infinite_width_kernel
from ._network import init_ensemble as init_ensemble
from ._network import stax_layers as stax_layers
from ._padded import PaddedMLP as PaddedMLP
from ._padded import PaddedParams as PaddedParams
from ._padded import PaddedTraining as PaddedTraining
from ._padded import train_padded as train_padded
from ._train import History as History
from ._train import cross_entropy as cross_entropy
from ._train import mse as mse
from ._train import train as train
