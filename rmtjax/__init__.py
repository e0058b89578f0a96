"""rmtjax: a JAX differentiable theory engine for the random-matrix and infinite-width theory
of deep networks.

The public API, re-exported explicitly (flax is imported only inside ``rmtjax.finite``).
"""

from . import activations as activations
from . import collapse as collapse
from . import data as data
from . import dynamics as dynamics
from . import finite_width as finite_width
from . import gaussian as gaussian
from . import hermite as hermite
from . import kernels as kernels
from . import meanfield as meanfield
from . import regression as regression
from . import rmt as rmt
from . import solve as solve
from . import stax as stax
from . import sweep as sweep
from .gaussian import Auto as Auto
from .gaussian import ClosedForm as ClosedForm
from .gaussian import GaussHermite as GaussHermite
from .gaussian import Mehler as Mehler
from .gaussian import MonteCarlo as MonteCarlo
from .gaussian import gaussian_expectations as gaussian_expectations
from .kernels import FullyConnected as FullyConnected
from .kernels import Kernel as Kernel
from .kernels import kernel as kernel
from .solve import Solution as Solution
from .solve import fixed_point as fixed_point
from .solve import root as root
from ._validate import ArgumentError as ArgumentError

__version__ = "0.1.0"
