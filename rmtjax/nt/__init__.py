"""``rmtjax.nt``: neural-tangents' top-level names, so that a port changes only the import.

``import rmtjax.nt as nt`` in place of ``import neural_tangents as nt`` provides:

* ``nt.stax``: :mod:`rmtjax.stax` (fully-connected layers; infinite-width kernels by rmtjax's
  engine);
* ``nt.empirical_kernel_fn``, ``nt.empirical_ntk_fn``, ``nt.empirical_nngp_fn`` and
  ``nt.NtkImplementation``: empirical kernels of any ``f(params, x)``, with ``trace_axes``,
  ``diagonal_axes``, ``vmap_axes`` and neural-tangents' output layout; ``nt.empirical_ntk_vp_fn``:
  NTK-vector products without the NTK;
* ``nt.monte_carlo_kernel_fn``: those kernels averaged over ``init_fn`` draws;
* ``nt.batch``: a ``kernel_fn`` computed in blocks over host devices;
* ``nt.linearize``, ``nt.taylor_expand``: expansions of ``f`` in its parameters;
* ``nt.predict``: ``gp_inference``, ``gradient_descent_mse``, ``gradient_descent_mse_ensemble``
  (those of :mod:`rmtjax.regression`) and ``max_learning_rate``.

What differs from neural-tangents is written in each function's docstring. Not provided:
``nt.Kernel`` (neural-tangents' kernel dataclass; rmtjax's ``kernel_fn`` returns named tuples) and
``nt.experimental``. Everything here uses
public JAX API only.
"""

from .. import stax as stax
from . import predict as predict
from ._batching import batch as batch
from ._empirical import NtkImplementation as NtkImplementation
from ._empirical import empirical_kernel_fn as empirical_kernel_fn
from ._empirical import empirical_nngp_fn as empirical_nngp_fn
from ._empirical import empirical_ntk_fn as empirical_ntk_fn
from ._empirical import empirical_ntk_vp_fn as empirical_ntk_vp_fn
from ._empirical import linearize as linearize
from ._empirical import taylor_expand as taylor_expand
from ._monte_carlo import monte_carlo_kernel_fn as monte_carlo_kernel_fn

__all__ = ["NtkImplementation", "batch", "empirical_kernel_fn", "empirical_nngp_fn", "empirical_ntk_fn",
           "empirical_ntk_vp_fn", "linearize", "monte_carlo_kernel_fn", "predict", "stax", "taylor_expand"]
