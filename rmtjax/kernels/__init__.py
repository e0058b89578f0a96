"""Infinite-width NNGP/NTK kernels: the functional core (:func:`kernel`) and :mod:`rmtjax.stax`."""

from ._core import FullyConnected as FullyConnected
from ._core import Kernel as Kernel
from ._core import bucket_size as bucket_size
from ._core import kernel as kernel
