"""Fuzz entries for rmtjax.finite_width.

The checks are independent of the recursions: the last layer's kernels equal rmtjax.kernels' NNGP
and NTK, and the vertex and the NTK variance are covariances (symmetric under (ab) <-> (cd), non-negative variances)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import rmtjax.activations as A
from rmtjax.finite_width import nngp_corrections, ntk_change, ntk_covariance, ntk_fluctuations
from rmtjax.kernels import FullyConnected, kernel

from .harness import Entry, array, number, static_int

ACTS = st.one_of(st.sampled_from([A.Relu(), A.Erf()]), st.sampled_from(["relu", None]))


def _check(kwargs, out):
    K = np.asarray(out.nngp)
    spec = FullyConnected(kwargs["depth"], kwargs["W_std"], kwargs["b_std"], kwargs["activation"])
    ref = np.asarray(kernel(kwargs["x"], None, spec).nngp)
    # the readout's kernel (layer depth + 1) is the network's NNGP
    assert np.allclose(K[-1], ref, rtol=1e-9, atol=1e-12 * max(np.max(np.abs(ref)), 1e-300)), (K[-1], ref)
    V = np.asarray(out.vertex)
    scale = max(np.max(np.abs(V)), 1e-300)
    assert np.allclose(V, np.transpose(V, (0, 3, 4, 1, 2)), rtol=1e-9, atol=1e-12 * scale), "vertex not symmetric"
    m = K.shape[-1]
    for a in range(m):
        assert np.all(V[:, a, a, a, a] >= -1e-9 * scale), "negative variance of a diagonal kernel entry"


def _check_ntk(kwargs, out):
    spec = FullyConnected(kwargs["depth"], kwargs["W_std"], kwargs["b_std"], kwargs["activation"])
    ref = np.diag(np.asarray(kernel(kwargs["x"], None, spec).ntk))
    Th = np.asarray(out.ntk)[-1]
    assert np.allclose(Th, ref, rtol=1e-9, atol=1e-12 * max(np.max(np.abs(ref)), 1e-300)), (Th, ref)
    var = np.asarray(out.variance)
    assert np.all(var >= -1e-9 * max(np.max(np.abs(var)), 1e-300)), "negative variance"


def _check_ntk_covariance(kwargs, out):
    spec = FullyConnected(kwargs["depth"], kwargs["W_std"], kwargs["b_std"], kwargs["activation"])
    ref = np.asarray(kernel(kwargs["x"], None, spec).ntk)
    Th = np.asarray(out.ntk)[-1]
    assert np.allclose(Th, ref, rtol=1e-9, atol=1e-12 * max(np.max(np.abs(ref)), 1e-300)), (Th, ref)
    C = np.asarray(out.covariance)
    scale = max(np.max(np.abs(C)), 1e-300)
    assert np.allclose(C, np.transpose(C, (0, 2, 1)), rtol=1e-9, atol=1e-12 * scale), "covariance not symmetric"
    assert np.all(np.linalg.eigvalsh(C).min(-1) >= -1e-9 * scale), "covariance not positive semidefinite"


def _check_ntk_change(kwargs, out):
    spec = FullyConnected(1, kwargs["W_std"], kwargs["b_std"], kwargs["activation"])
    ref = np.asarray(kernel(kwargs["x"], None, spec).ntk)
    Th = np.asarray(out.ntk)
    assert np.allclose(Th, ref, rtol=1e-9, atol=1e-12 * max(np.max(np.abs(ref)), 1e-300)), (Th, ref)
    C = np.asarray(out.change)
    assert np.allclose(C, C.T, rtol=1e-9, atol=1e-12 * max(np.max(np.abs(C)), 1e-300)), "change not symmetric"
    assert np.all(np.asarray(out.stderr) >= 0), "negative standard error"


ENTRIES = [
    Entry("finite_width.nngp_corrections",
          lambda x, W_std, b_std, activation, depth: nngp_corrections(
              x, FullyConnected(depth, W_std, b_std, activation)),
          {"x": array((2, 3)), "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0), "activation": ACTS,
           "depth": static_int(0, 2)}, static=("depth",), check=_check, max_examples=8,
          valid=lambda: {"x": np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.4]]), "W_std": 1.3, "b_std": 0.2,
                         "activation": A.Erf(), "depth": 2}),
    Entry("finite_width.ntk_fluctuations",
          lambda x, W_std, b_std, activation, depth: ntk_fluctuations(
              x, FullyConnected(depth, W_std, b_std, activation)),
          {"x": array((2, 3)), "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0), "activation": ACTS,
           "depth": static_int(0, 2)}, static=("depth",), check=_check_ntk, max_examples=8,
          valid=lambda: {"x": np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.4]]), "W_std": 1.3, "b_std": 0.2,
                         "activation": A.Erf(), "depth": 2}),
    Entry("finite_width.ntk_covariance",
          lambda x, W_std, b_std, activation, depth: ntk_covariance(
              x, FullyConnected(depth, W_std, b_std, activation)),
          {"x": array((2, 3)), "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0), "activation": ACTS,
           "depth": static_int(0, 2)}, static=("depth",), check=_check_ntk_covariance, max_examples=8,
          valid=lambda: {"x": np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.4]]), "W_std": 1.3, "b_std": 0.2,
                         "activation": A.Erf(), "depth": 2}),
    Entry("finite_width.ntk_change",
          lambda x, y, W_std, b_std, activation, learning_rate, steps: ntk_change(
              x, y, FullyConnected(1, W_std, b_std, activation), learning_rate=learning_rate, steps=steps,
              samples=64),
          {"x": array((2, 3)), "y": array((2,)), "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0),
           "activation": st.one_of(st.sampled_from([A.Tanh(), A.Erf()]), st.sampled_from([A.Relu(), "tanh"])),
           "learning_rate": number(0.0, 2.0), "steps": static_int(0, 3)},
          static=("steps",), names=("spec",), check=_check_ntk_change, max_examples=8,
          valid=lambda: {"x": np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.4]]), "y": np.array([0.5, -0.5]),
                         "W_std": 1.3, "b_std": 0.2, "activation": A.Erf(), "learning_rate": 0.3, "steps": 2}),
    Entry("finite_width.ntk_change",  # gradient flow
          lambda x, y, W_std, b_std, activation, time: ntk_change(
              x, y, FullyConnected(1, W_std, b_std, activation), time=time, samples=64),
          {"x": array((2, 3)), "y": array((2,)), "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0),
           "activation": st.sampled_from([A.Tanh(), A.Erf()]), "time": number(0.0, 1e4)},
          names=("spec",), check=_check_ntk_change, max_examples=8,
          valid=lambda: {"x": np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.4]]), "y": np.array([0.5, -0.5]),
                         "W_std": 1.3, "b_std": 0.2, "activation": A.Erf(), "time": 2.0}),
]
EXEMPT = {"finite_width.NNGPCorrections": "a NamedTuple of results (its methods are arithmetic on its fields)",
          "finite_width.NTKFluctuations": "a NamedTuple of results (its methods are arithmetic on its fields)",
          "finite_width.NTKCovariance": "a NamedTuple of results (its methods are arithmetic and indexing on its fields)",
          "finite_width.NTKChange": "a NamedTuple of results (its methods are arithmetic on its fields)",
          "finite_width.ExpansionWarning": "a warning class"}
