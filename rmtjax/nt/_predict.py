r"""``max_learning_rate`` (``neural_tangents.predict.max_learning_rate``); the other names of
:mod:`rmtjax.nt.predict` are :mod:`rmtjax.regression`'s."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._validate import ArgumentError, as_real, check_range, error_if, static_int
from ..regression import _square

__all__ = ["max_learning_rate"]


def _make_2d(k: Array) -> Array:
    """A kernel in neural-tangents' zipped layout ``(N1, N2, K1, K2, ...)`` as the matrix
    ``(N1 K1 ..., N2 K2 ...)``."""
    if k.ndim % 2:
        raise ArgumentError(f"ntk_train_train must have an even number of axes (zipped pairs (N, N, K, K, ...)), got "
                            f"shape {k.shape}")
    half = k.ndim // 2
    k = jnp.transpose(k, tuple(range(0, k.ndim, 2)) + tuple(range(1, k.ndim, 2)))
    return k.reshape(int(np.prod(k.shape[:half])), int(np.prod(k.shape[half:])))


def max_learning_rate(ntk_train_train: ArrayLike, y_train_size: int | None = None, momentum: float = 0.0,
                      eps: float = 1e-12) -> Array:
    r"""The largest learning rate for which gradient descent (with heavy-ball momentum) on the
    MSE of a linearised network converges (``neural_tangents.predict.max_learning_rate``):

    .. math::
        \eta_{\max} = \frac{2\,(1 + \mu)\,m}{\lambda_{\max}(\Theta) + \varepsilon},

    for the loss :math:`\frac{1}{2m}\lVert f(X) - Y\rVert^2` with :math:`m` = ``y_train_size``
    (the number of training outputs :math:`n k`; by default the side of the 2-d kernel, right for
    ``trace_axes=()``), momentum :math:`\mu` and :math:`\lambda_{\max}` the largest eigenvalue of
    the NTK (Lee et al. 2019, §2.3; Goh 2017, "Why momentum really works" for :math:`1 + \mu`).
    Gradient descent contracts when :math:`I - \eta\Theta/m` has spectral radius below 1.

    Args:
        ntk_train_train: the ``(n, n)`` NTK, or neural-tangents' zipped ``(n, n, k, k, ...)``
            (reshaped to ``(n k, n k)``); finite and symmetric to rounding (as in
            :func:`rmtjax.regression.gp_inference`).
        y_train_size: :math:`m \ge 1` or ``None``.
        momentum: :math:`\mu \in [0, 1)`.
        eps: :math:`\varepsilon \ge 0`, keeps the division finite for a zero kernel.

    Example:
        >>> import jax.numpy as jnp
        >>> float(max_learning_rate(jnp.diag(jnp.array([1.0, 4.0]))))  # 2 * 2 / 4
        1.0
    """
    k = _square(_make_2d(as_real(ntk_train_train, "ntk_train_train")), "ntk_train_train")  # symmetrised
    m = k.shape[0] if y_train_size is None else static_int(y_train_size, "y_train_size", lo=1)
    momentum = check_range(as_real(momentum, "momentum", ndim=0), "momentum", lo=0.0, hi=1.0, hi_open=True)
    eps = check_range(as_real(eps, "eps", ndim=0), "eps", lo=0.0)
    lam = jnp.linalg.eigvalsh(k)[-1] + eps
    lam = error_if(lam, ~(lam > 0), "ntk_train_train must have a positive largest eigenvalue (or pass eps > 0)")
    return 2.0 * (1.0 + momentum) * m / lam
