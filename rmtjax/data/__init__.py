"""Data sets: Gaussian mixtures, concentrated (GAN-like) data from random Lipschitz generators,
hidden-manifold data, the MNIST 5k subset (shipped by a PyPI package) and scikit-learn digits.

Each family lives in a private module of this package and is re-exported here.
"""
