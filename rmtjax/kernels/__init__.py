"""Infinite-width NNGP/NTK: one engine of layers (``Dense``, ``Activation``, ``Serial``, ``Stack``,
``Parallel``, ``Product``, ``Residual``, and :class:`FullyConnected` built from them; for images the
convolutional layers of ``rmtjax.kernels._conv``), run tiled and jitted by :func:`kernel`;
:mod:`rmtjax.kernels.stax` (also ``rmtjax.stax``) is the neural-tangents facade."""

from ._core import FullyConnected as FullyConnected
from ._core import bucket_size as bucket_size
from ._core import default_tile as default_tile
from ._core import kernel as kernel
from ._core import kernel_diagonal as kernel_diagonal
from ._matvec import kernel_matvec as kernel_matvec
from ._layers import AbstractLayer as AbstractLayer
from ._layers import Activation as Activation
from ._layers import Dense as Dense
from ._layers import Identity as Identity
from ._layers import Kernel as Kernel
from ._layers import KernelState as KernelState
from ._layers import Parallel as Parallel
from ._layers import Product as Product
from ._layers import Residual as Residual
from ._layers import Serial as Serial
from ._layers import Stack as Stack
from . import stax as stax
