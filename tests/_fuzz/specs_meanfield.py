"""Fuzz entries for rmtjax.solve, rmtjax.meanfield and rmtjax.hermite."""

from __future__ import annotations

from hypothesis import strategies as st

from rmtjax import meanfield
from rmtjax.activations import Erf, Gelu, Relu, Sin, Tanh

from .harness import Entry, number

ACTIVATIONS = st.sampled_from([Tanh(), Erf(), Relu(), Gelu(), Sin()])


def _q_star_physical(kwargs, out):
    assert float(out.value) >= 0, f"q* = {float(out.value)} < 0 is not a variance"


ENTRIES = [
    Entry("meanfield.q_star", lambda activation, sigma_w2, sigma_b2: meanfield.q_star(activation, sigma_w2, sigma_b2),
          {"activation": ACTIVATIONS, "sigma_w2": number(0.0, 12.0), "sigma_b2": number(0.0, 2.0)},
          check=_q_star_physical),
]

EXEMPT = {
    "meanfield.MeanField": "result container (NamedTuple)",
    "solve.Solution": "result container",
}
