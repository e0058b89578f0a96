r"""A plain classifier network for training experiments (neural collapse): an MLP with optional
layer normalization, built from an integer seed.

:class:`rmtjax.finite.MLP` is tied to an infinite-width spec (no normalization layers, which have
no kernel counterpart here). Neural-collapse experiments (Papyan, Han & Donoho 2020) train
networks with normalization far into the terminal phase of training; this module provides

.. math::
    h^{0} = x,\qquad h^{\ell} = \operatorname{ReLU}\big(\operatorname{LN}(W^{\ell}h^{\ell-1} + b^{\ell})\big),
    \qquad f(x) = W h^{L} + b,

with He initialization :math:`W^\ell_{ij} \sim \mathcal N(0, 2/n_{\ell-1})`, zero biases and
``LN`` the layer normalization of Ba, Kiros & Hinton (2016) with a learned gain and offset
(identity when ``layer_norm=False``). It has the interface the training loop and the metrics
need: ``__call__`` (logits), :meth:`Classifier.features` (:math:`h^L`, the penultimate layer) and
:meth:`Classifier.readout` (``(W, b)`` with ``logits = features @ W.T + b``), and trains with
:func:`rmtjax.finite.train`.

Example:
    >>> import jax.numpy as jnp
    >>> net = Classifier(64, 10, width=32, depth=2, seed=0)
    >>> x = jnp.ones((3, 64))
    >>> net(x).shape, net.features(x).shape
    ((3, 10), (3, 32))
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from .._validate import flag, static_int
from ._network import _float_dtype, _input

__all__ = ["Classifier"]


class _LayerNorm(nnx.Module):
    r""":math:`\gamma\odot(z - \bar z)/\sqrt{\operatorname{Var} z + \epsilon} + \beta` over the last axis, in the
    parameters' dtype (flax's ``nnx.LayerNorm`` promotes to float32 internally, which strict dtype
    promotion rejects in float64)."""

    def __init__(self, width: int, dtype, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((width,), dtype))
        self.bias = nnx.Param(jnp.zeros((width,), dtype))
        self.eps = eps

    def __call__(self, z):
        mean = jnp.mean(z, axis=-1, keepdims=True)
        var = jnp.mean((z - mean) ** 2, axis=-1, keepdims=True)
        return (z - mean) / jnp.sqrt(var + self.eps) * self.scale[...][None, :] + self.bias[...][None, :]


class Classifier(nnx.Module):
    """``depth`` hidden ReLU layers of ``width`` units (each optionally layer-normalized before the
    ReLU) and a linear readout to ``num_classes`` logits (see the module docstring).

    Args:
        in_features: input dimension.
        num_classes: number of outputs.
        width: hidden width.
        depth: number of hidden layers (>= 1).
        layer_norm: layer normalization before every ReLU.
        seed: integer seed of the initialization.
        dtype: parameter dtype (default: JAX's default float).
    """

    def __init__(self, in_features: int, num_classes: int, *, width: int, depth: int, layer_norm: bool = True,
                 seed: int = 0, dtype=None):
        in_features = static_int(in_features, "in_features", lo=1)
        num_classes = static_int(num_classes, "num_classes", lo=2)
        width = static_int(width, "width", lo=1, hi=2**31 - 1)
        depth = static_int(depth, "depth", lo=1, hi=10_000)
        layer_norm = flag(layer_norm, "layer_norm")
        seed = static_int(seed, "seed", lo=0, hi=2**63 - 1)
        dt = _float_dtype(dtype)
        self.in_features = in_features
        rngs = nnx.Rngs(seed)
        he = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
        sizes = [in_features] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(sizes[i], sizes[i + 1], kernel_init=he, param_dtype=dt, dtype=dt,
                                           rngs=rngs) for i in range(depth)])
        self.norms = nnx.List([_LayerNorm(width, dt) if layer_norm else None for _ in range(depth)])
        self.out = nnx.Linear(width, num_classes, param_dtype=dt, dtype=dt, rngs=rngs)

    def features(self, x: Float[Array, "n d"]) -> Float[Array, "n width"]:
        """The penultimate representation :math:`h^L` (the readout's input); ``x`` real and finite,
        ``(n, in_features)``."""
        h = _input(x, self.in_features)
        for layer, norm in zip(self.hidden, self.norms):
            z = layer(h)
            h = nnx.relu(z if norm is None else norm(z))
        return h

    def __call__(self, x: Float[Array, "n d"]) -> Float[Array, "n k"]:
        return self.out(self.features(x))

    def readout(self) -> tuple[Array, Array]:
        """``(W (k, width), b (k,))`` with ``net(x) = features(x) @ W.T + b``."""
        return self.out.kernel[...].T, self.out.bias[...]
