"""Fuzz entries for rmtjax.nt (neural-tangents' top-level names) and rmtjax.nt.predict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import rmtjax.nt as nt

from .harness import Entry, number, sample, static_int
from .specs_dynamics import finite_array, psd

P0 = np.random.default_rng(3).normal(size=(4, 2))
P0_TREE = {"w": P0, "v": np.random.default_rng(4).normal(size=(2, 2))}


def _f(p, x):
    return jnp.tanh(x @ p["w"]) @ p["v"]


def _init(key, shape):
    k1, k2 = jax.random.split(key)
    return tuple(shape[:-1]) + (2,), {"w": jax.random.normal(k1, (shape[-1], 2)), "v": jax.random.normal(k2, (2, 2))}


TRACE = st.sampled_from([(-1,), (-1,), (), (0,), 5, (7,), "last", (1, 1)])


def _expansion_f(p, x):
    return jnp.sin(x @ p)


def _ntk_shape(kwargs, out):
    ta = kwargs["trace_axes"]
    if ta == (-1,):
        assert out.shape == (kwargs["x1"].shape[0], kwargs["x2"].shape[0])


ENTRIES = [
    Entry("nt.empirical_ntk_fn",
          lambda x1, x2, trace_axes, implementation: nt.empirical_ntk_fn(_f, trace_axes, (), 0, implementation)(
              x1, x2, P0_TREE),
          {"x1": finite_array((3, 4)), "x2": finite_array((2, 4)), "trace_axes": TRACE,
           "implementation": st.sampled_from([1, 2, 3, 0, 7, "jacobian"])},
          static=("trace_axes", "implementation"), check=_ntk_shape, names=("f",),
          valid=lambda: {"x1": sample((3, 4)), "x2": sample((2, 4), seed=1), "trace_axes": (-1,),
                         "implementation": 1}),
    Entry("nt.empirical_nngp_fn",
          lambda x1, x2, trace_axes: nt.empirical_nngp_fn(_f, trace_axes)(x1, x2, P0_TREE),
          {"x1": finite_array((3, 4)), "x2": finite_array((2, 4)), "trace_axes": TRACE},
          static=("trace_axes",), names=("f",),
          valid=lambda: {"x1": sample((3, 4)), "x2": sample((2, 4), seed=1), "trace_axes": ()}),
    Entry("nt.empirical_kernel_fn",
          lambda x1, params, get: nt.empirical_kernel_fn(_f, vmap_axes=0)(x1, None, get, {"w": params, "v": P0[:2]}),
          {"x1": finite_array((3, 4)), "params": finite_array((4, 2)),
           "get": st.sampled_from([None, "ntk", ("ntk", "nngp"), "cov1", ("ntk", "ntk"), 3])},
          static=("get",), names=("f",),
          valid=lambda: {"x1": sample((3, 4)), "params": sample((4, 2), seed=1), "get": None}),
    Entry("nt.batch",
          lambda x1, batch_size, device_count: nt.batch(nt.empirical_kernel_fn(_f), batch_size, device_count)(
              x1, None, "ntk", P0_TREE),
          {"x1": finite_array((5, 4)), "batch_size": static_int(0, 6), "device_count": static_int(-1, 2)},
          static=("batch_size", "device_count"), names=("f", "x2", "kernel_fn"),
          valid=lambda: {"x1": sample((5, 4)), "batch_size": 2, "device_count": -1}),
    Entry("nt.monte_carlo_kernel_fn",
          lambda x1, key, n_samples: nt.monte_carlo_kernel_fn(_init, _f, key, n_samples)(x1, None, "nngp"),
          {"x1": finite_array((3, 4)), "key": st.one_of(st.integers(0, 9).map(jax.random.PRNGKey),
                                                        st.sampled_from([1.5, None])),
           "n_samples": st.sampled_from([1, 2, 3, 0, -1, 2.5, "2"])},
          static=("n_samples",), names=("f", "x2", "init_fn"),
          valid=lambda: {"x1": sample((3, 4)), "key": jax.random.PRNGKey(0), "n_samples": 2}),
    Entry("nt.empirical_ntk_vp_fn",
          lambda x1, cotangents: nt.empirical_ntk_vp_fn(_f, x1, None, P0_TREE)(cotangents),
          {"x1": finite_array((3, 4)), "cotangents": finite_array((3, 2))}, names=("f",),
          valid=lambda: {"x1": sample((3, 4)), "cotangents": sample((3, 2), seed=1)}),
    Entry("nt.linearize", lambda params, x: nt.linearize(_expansion_f, P0)(params, x),
          {"params": finite_array((4, 2)), "x": finite_array((3, 4))}, names=("args",),
          valid=lambda: {"params": sample((4, 2)), "x": sample((3, 4), seed=1)}),
    Entry("nt.taylor_expand", lambda params, x, degree: nt.taylor_expand(_expansion_f, P0, degree)(params, x),
          {"params": finite_array((4, 2)), "x": finite_array((3, 4)), "degree": static_int(0, 4)},
          static=("degree",), names=("args",),
          valid=lambda: {"params": sample((4, 2)), "x": sample((3, 4), seed=1), "degree": 2}),
    Entry("nt.predict.max_learning_rate",
          lambda ntk_train_train, momentum, eps: nt.predict.max_learning_rate(ntk_train_train, None, momentum, eps),
          {"ntk_train_train": psd(4), "momentum": number(0.0, 0.99), "eps": number(0.0, 1e-6)},
          check=lambda kw, out: np.testing.assert_array_less(0.0, out),
          valid=lambda: {"ntk_train_train": np.eye(4) + 0.1, "momentum": 0.5, "eps": 1e-12}),
]

EXEMPT = {
    "nt.NtkImplementation": "enumeration of the NTK implementations (no computation; exercised by nt.empirical_ntk_fn)",
    "nt.predict.Gaussian": "result container (NamedTuple; rmtjax.regression's)",
    "nt.predict.gp_inference": "rmtjax.regression.gp_inference itself (fuzzed as regression.gp_inference)",
    "nt.predict.gradient_descent_mse": "rmtjax.regression.gradient_descent_mse itself (fuzzed there)",
    "nt.predict.gradient_descent_mse_ensemble": "rmtjax.regression.gradient_descent_mse_ensemble itself (fuzzed there)",
}
