"""``rmtjax.nt.predict``: neural-tangents' ``nt.predict`` names.

:func:`gp_inference`, :func:`gradient_descent_mse`, :func:`gradient_descent_mse_ensemble` and
:class:`Gaussian` are :mod:`rmtjax.regression`'s (same arguments and outputs as neural-tangents'
for kernels traced over the outputs, ``trace_axes=(-1,)``, the only value they accept);
:func:`max_learning_rate` is :func:`rmtjax.nt._predict.max_learning_rate`. Differences from
neural-tangents: ``trace_axes`` must be ``(-1,)`` (kernels ``(n, n)``, not the full
``(n, n, k, k)``); ``gradient_descent_mse_ensemble`` takes no ``**kernel_fn_train_train_kwargs``;
not provided: ``gradient_descent`` (discrete steps with a general loss, momentum) and ``ODEState``.
"""

from ..regression import Gaussian as Gaussian
from ..regression import gp_inference as gp_inference
from ..regression import gradient_descent_mse as gradient_descent_mse
from ..regression import gradient_descent_mse_ensemble as gradient_descent_mse_ensemble
from ._predict import max_learning_rate as max_learning_rate

__all__ = ["Gaussian", "gp_inference", "gradient_descent_mse", "gradient_descent_mse_ensemble", "max_learning_rate"]
