"""Spectral laws and deterministic equivalents of random matrices."""

from ._gram import gram_delta as gram_delta
from ._gram import gram_spectral_density as gram_spectral_density
from ._gram import gram_trace_resolvent as gram_trace_resolvent
