"""``rmtjax.nt``: neural-tangents' top-level names, each checked against something independent.

* empirical NTK/NNGP of a plain MLP and of a tiny convolutional net (``lax.conv_general_dilated``)
  against an explicit ``jax.jacobian`` + ``einsum`` contraction, for every ``trace_axes`` /
  ``diagonal_axes`` layout, implementation and ``vmap_axes``;
* golden values written by neural-tangents 0.6.5 itself (``tests/data/nt_api_golden.{npz,json}``,
  from ``benchmarks/reference/make_nt_api_golden.py``, same inputs and parameters): empirical
  kernels, Monte Carlo, ``predict``, ``linearize``, ``taylor_expand``;
* ``batch`` against the unbatched call; ``linearize``/``taylor_expand`` against closed forms and
  their convergence order; ``max_learning_rate`` against the divergence of gradient descent;
* bad input: a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rmtjax.nt as nt
from rmtjax import regression, stax

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_nt_api_golden",
                                               ROOT / "benchmarks" / "reference" / "make_nt_api_golden.py")
G = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(G)
GOLDEN = ROOT / "tests" / "data" / "nt_api_golden.npz"

DATA = {k: jnp.asarray(v) for k, v in G.inputs().items()}
PARAMS = G.params_from(DATA)
X1, X2 = DATA["x1"], DATA["x2"]
CONV_PARAMS = (DATA["conv_w1"], DATA["conv_w2"])
CX1, CX2 = DATA["conv_x1"], DATA["conv_x2"]


# ------------------------------------------------------------------------------------------
# The independent reference: explicit Jacobians, contracted with einsum
# ------------------------------------------------------------------------------------------


def _flat_jacobian(f, params, x):
    """``(out_shape..., P)``: the Jacobian of ``f(., x)`` with every parameter flattened and stacked."""
    jac = jax.jacobian(lambda p: f(p, x))(params)
    out_ndim = jax.eval_shape(f, params, x).ndim
    leaves = jax.tree_util.tree_leaves(jac)
    return jnp.concatenate([a.reshape(a.shape[:out_ndim] + (-1,)) for a in leaves], axis=-1)


def _full_ntk(f, params, x1, x2):
    """``(out1..., out2...)``: sum_p J1[..., p] J2[..., p]."""
    j1, j2 = _flat_jacobian(f, params, x1), _flat_jacobian(f, params, x2)
    return jnp.tensordot(j1, j2, axes=([-1], [-1]))


def _full_nngp(f, params, x1, x2):
    return jnp.tensordot(f(params, x1), f(params, x2), axes=0)


def _expected(full, n_out, trace_axes, diagonal_axes):
    """The zipped layout from a full kernel ``(out1..., out2...)`` by explicit loops over every
    output entry (written independently of the einsum in rmtjax.nt)."""
    trace = {a % n_out for a in trace_axes}
    diag = {a % n_out for a in diagonal_axes}
    k = np.asarray(full)
    shape1 = k.shape[:n_out]
    out_axes = []
    for i in range(n_out):
        if i in diag:
            out_axes.append(("d", i))
        elif i not in trace:
            out_axes += [("1", i), ("2", i)]
    out_shape = tuple(shape1[i] if t != "2" else k.shape[n_out + i] for t, i in out_axes)
    res = np.zeros(out_shape)
    size = math.prod(shape1[i] for i in trace)
    trace_l = sorted(trace)
    for idx in np.ndindex(out_shape):
        a, b = [0] * n_out, [0] * n_out
        for (t, i), v in zip(out_axes, idx):
            if t in "1d":
                a[i] = v
            if t in "2d":
                b[i] = v
        total = 0.0
        for tidx in np.ndindex(*[shape1[i] for i in trace_l]):
            for i, v in zip(trace_l, tidx):
                a[i] = b[i] = v
            total += k[tuple(a) + tuple(b)]
        res[idx] = total / size
    return res


def mlp(params, x):
    return G.mlp_apply(params, x)


def conv(params, x):
    return G.conv_apply(params, x)


# measured max |rmtjax - reference| / max |reference| over the cases below, float64: 6.9e-16 (MLP, every
# implementation and vmap_axes), 5.7e-16 (conv)
TOL = 1e-12

LAYOUTS = [((), ()), ((-1,), ()), ((), (-1,)), ((), (0,)), ((-1,), (0,)), ((0, -1), ())]


@pytest.mark.parametrize("trace_axes, diagonal_axes", LAYOUTS)
@pytest.mark.parametrize("implementation", [1, 2, 3])
def test_mlp_ntk_against_explicit_jacobians(trace_axes, diagonal_axes, implementation):
    x2 = X1 if 0 in diagonal_axes + trace_axes else X2  # pairing examples needs x1, x2 of one size
    full = _full_ntk(mlp, PARAMS, X1, x2)
    want = _expected(full, 2, trace_axes, diagonal_axes)
    for vmap_axes in (None, 0):
        got = nt.empirical_ntk_fn(mlp, trace_axes, diagonal_axes, vmap_axes, implementation)(X1, x2, PARAMS)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL * np.abs(want).max())


@pytest.mark.parametrize("trace_axes, diagonal_axes", LAYOUTS)
def test_mlp_nngp_against_outer_product(trace_axes, diagonal_axes):
    x2 = X1 if 0 in diagonal_axes + trace_axes else X2
    want = _expected(_full_nngp(mlp, PARAMS, X1, x2), 2, trace_axes, diagonal_axes)
    got = nt.empirical_nngp_fn(mlp, trace_axes, diagonal_axes)(X1, x2, PARAMS)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL * np.abs(want).max())


@pytest.mark.parametrize("trace_axes, diagonal_axes", [((-1,), ()), ((), ()), ((-1,), (1, 2)), ((1, 2, 3), ()),
                                                       ((-1,), (0,))])
def test_conv_ntk_against_explicit_jacobians(trace_axes, diagonal_axes):
    x2 = CX1 if 0 in diagonal_axes else CX2
    want = _expected(_full_ntk(conv, CONV_PARAMS, CX1, x2), 4, trace_axes, diagonal_axes)
    for vmap_axes, impl in ((None, 1), (0, 1), (None, 2)):
        got = nt.empirical_ntk_fn(conv, trace_axes, diagonal_axes, vmap_axes, impl)(CX1, x2, CONV_PARAMS)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL * np.abs(want).max())


def test_layout_shapes_as_neural_tangents_documents():
    # outputs (N, K) = (5, 3), x2 with 3 rows; conv outputs (N, H, W, C) = (2, 4, 3, 2)
    shape = lambda ta, da, x2=X2: nt.empirical_ntk_fn(mlp, ta, da)(X1, x2, PARAMS).shape  # noqa: E731
    assert shape((), ()) == (5, 3, 3, 3)
    assert shape((-1,), ()) == (5, 3)
    assert shape((), (-1,)) == (5, 3, 3)
    assert shape((-1,), (0,), X1) == (5,)
    assert shape((), (0,), X1) == (5, 3, 3)
    cshape = lambda ta, da: nt.empirical_ntk_fn(conv, ta, da)(CX1, CX2, CONV_PARAMS).shape  # noqa: E731
    assert cshape((-1,), ()) == (2, 3, 4, 4, 3, 3)
    assert cshape((-1,), (1, 2)) == (2, 3, 4, 3)
    assert cshape((), (2,)) == (2, 3, 4, 4, 3, 2, 2)


def test_pytree_inputs_and_outputs():
    def f(p, x):  # x a pair of arrays, output a dict: one kernel per output leaf, no cross terms
        a, b = x
        return {"u": mlp(p, a), "v": jnp.tanh(mlp(p, b))[:, :2]}

    x = (X1, X1[::-1] * 0.5)
    k = nt.empirical_ntk_fn(f, vmap_axes=0)(x, None, PARAMS)
    np.testing.assert_allclose(k["u"], nt.empirical_ntk_fn(mlp)(X1, None, PARAMS), rtol=0, atol=1e-12)
    g = lambda p, z: jnp.tanh(mlp(p, z))[:, :2]  # noqa: E731
    np.testing.assert_allclose(k["v"], nt.empirical_ntk_fn(g)(x[1], None, PARAMS), rtol=0, atol=1e-12)


def test_pytree_outputs_give_one_named_tuple_per_output_and_vmap_axes_may_hold_none():
    def f(p, x):  # x = (examples, a shared scale), output a pair
        a, scale = x
        return mlp(p, a) * scale[0], jnp.tanh(mlp(p, a))

    x = (X1, jnp.asarray([0.7]))
    k = nt.empirical_kernel_fn(f)(x, None, ("nngp", "ntk"), PARAMS)
    assert isinstance(k, tuple) and len(k) == 2 and k[0]._fields == ("nngp", "ntk")
    kv = nt.empirical_kernel_fn(f, vmap_axes=((0, None), 0, {}))(x, None, ("nngp", "ntk"), PARAMS)
    for a, b in zip(jax.tree_util.tree_leaves(k), jax.tree_util.tree_leaves(kv)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(a).max())
    np.testing.assert_allclose(k[0].ntk, 0.49 * nt.empirical_ntk_fn(mlp)(X1, None, PARAMS), rtol=1e-13)
    mc = nt.monte_carlo_kernel_fn(lambda key, s: (None, PARAMS), f, jax.random.key(0), 2, device_count=0)(x, None)
    assert mc[1]._fields == ("nngp", "ntk") and type(mc[1]).__name__ == "MonteCarloKernel"
    np.testing.assert_allclose(mc[1].ntk, k[1].ntk, rtol=1e-13)


def test_ntk_vector_products_against_the_full_kernel():
    full = nt.empirical_ntk_fn(mlp, trace_axes=())(X1, X2, PARAMS)  # (n1, n2, k, k)
    v = jnp.asarray(np.random.default_rng(6).normal(size=(3, 3)))  # the shape of f(params, x2)
    want = jnp.einsum("ijkl,jl->ik", full, v)
    got = nt.empirical_ntk_vp_fn(mlp, X1, X2, PARAMS)(v)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    with pytest.raises(ValueError, match="cotangents"):
        nt.empirical_ntk_vp_fn(mlp, X1, X2, PARAMS)(v[:2])


def test_rng_keyword_is_split_between_x1_and_x2_as_neural_tangents_does():
    # f(., x1) gets the key, f(., x2) the key folded in with 1 unless x2 equals x1; pairs split
    key = jax.random.PRNGKey(5)
    drop = G.dropout_apply

    def explicit(k1, k2, x2):
        j1 = _flat_jacobian(lambda p, x: drop(p, x, rng=k1), PARAMS, X1)
        j2 = _flat_jacobian(lambda p, x: drop(p, x, rng=k2), PARAMS, x2)
        return jnp.einsum("ikp,jkp->ij", j1, j2) / 3

    ntk_fn = nt.empirical_ntk_fn(drop)
    for got, want in ((ntk_fn(X1, X2, PARAMS, rng=key), explicit(key, jax.random.fold_in(key, 1), X2)),
                      (ntk_fn(X1, X1 + 0.0, PARAMS, rng=key), explicit(key, key, X1)),
                      (ntk_fn(X1, None, PARAMS, rng=key), explicit(key, key, X1))):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    ka, kb = jax.random.split(key)
    want = explicit(ka, kb, X2)
    np.testing.assert_allclose(ntk_fn(X1, X2, PARAMS, rng=(ka, kb)), want, rtol=0, atol=1e-12 * np.abs(want).max())
    # typed keys work the same way
    tk = jax.random.key(5)
    want = explicit(tk, jax.random.fold_in(tk, 1), X2)
    np.testing.assert_allclose(ntk_fn(X1, X2, PARAMS, rng=tk), want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_kernel_fn_get():
    kernel_fn = nt.empirical_kernel_fn(mlp, vmap_axes=0)
    both = kernel_fn(X1, X2, None, PARAMS)
    assert type(both).__name__ == "EmpiricalKernel" and both._fields == ("nngp", "ntk")
    np.testing.assert_array_equal(kernel_fn(X1, X2, "ntk", PARAMS), both.ntk)
    assert kernel_fn(X1, X2, ("ntk", "nngp"), PARAMS)._fields == ("ntk", "nngp")
    # x2=None is x1
    np.testing.assert_allclose(kernel_fn(X1, None, "nngp", PARAMS), kernel_fn(X1, X1, "nngp", PARAMS), atol=1e-14)


def test_jit_and_grad_through_ntk_fn():
    ntk_fn = nt.empirical_ntk_fn(mlp, vmap_axes=0)
    eager = ntk_fn(X1, X2, PARAMS)
    np.testing.assert_allclose(jax.jit(ntk_fn)(X1, X2, PARAMS), eager, rtol=1e-13, atol=1e-13)
    # d/ds of tr NTK(s x1, x2) by autodiff against a central difference
    g = jax.grad(lambda s: jnp.sum(ntk_fn(s * X1, X2, PARAMS)))(1.0)
    h = 1e-5
    fd = (jnp.sum(ntk_fn((1 + h) * X1, X2, PARAMS)) - jnp.sum(ntk_fn((1 - h) * X1, X2, PARAMS))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-7)


# ------------------------------------------------------------------------------------------
# linearize / taylor_expand
# ------------------------------------------------------------------------------------------


def _displaced(t):
    return jax.tree_util.tree_map(lambda a, d: a + t * d, PARAMS, G.params_from(DATA, "delta"))


def test_linearize_is_f_plus_jacobian_times_delta():
    p = _displaced(0.05)
    j = _flat_jacobian(mlp, PARAMS, X1)  # (n, k, P)
    delta = jnp.concatenate([(a - b).ravel() for a, b in zip(jax.tree_util.tree_leaves(p),
                                                            jax.tree_util.tree_leaves(PARAMS))])
    want = mlp(PARAMS, X1) + j @ delta
    np.testing.assert_allclose(nt.linearize(mlp, PARAMS)(p, X1), want, rtol=0, atol=1e-13)
    np.testing.assert_allclose(nt.taylor_expand(mlp, PARAMS, 1)(p, X1), want, rtol=0, atol=1e-13)
    np.testing.assert_allclose(nt.taylor_expand(mlp, PARAMS, 0)(p, X1), mlp(PARAMS, X1), rtol=0, atol=0)


def test_taylor_expand_is_exact_for_a_cubic_and_converges_at_order_d_plus_1():
    cubic = lambda p, x: (x @ p) ** 3 - 2.0 * (x @ p)  # noqa: E731
    p0 = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    p1 = p0 + 0.3 * jnp.cos(p0)
    np.testing.assert_allclose(nt.taylor_expand(cubic, p0, 3)(p1, X1), cubic(p1, X1), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(nt.taylor_expand(cubic, p0, 5)(p1, X1), cubic(p1, X1), rtol=1e-13, atol=1e-12)
    # for the MLP the error of degree d falls like t^(d+1): halving t divides it by ~2^(d+1)
    for d in (1, 2, 3):
        err = [float(jnp.max(jnp.abs(nt.taylor_expand(mlp, PARAMS, d)(_displaced(t), X1) - mlp(_displaced(t), X1))))
               for t in (2e-2, 1e-2)]
        assert abs(math.log2(err[0] / err[1]) - (d + 1)) < 0.3, (d, err)


# ------------------------------------------------------------------------------------------
# batch
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x2", ["x2", None])
def test_batch_of_stax_kernel_fn(x2):
    x1 = jnp.asarray(np.random.default_rng(1).normal(size=(7, 4)))
    x2 = None if x2 is None else jnp.asarray(np.random.default_rng(2).normal(size=(5, 4)))
    _, _, kernel_fn = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Erf(), stax.Dense(1, 1.5, 0.1))
    want = kernel_fn(x1, x2)
    for kwargs in ({"batch_size": 3}, {"batch_size": 3, "store_on_device": False}, {"device_count": 0}):
        got = nt.batch(kernel_fn, **kwargs)(x1, x2)
        np.testing.assert_array_equal(got.ntk, want.ntk)
        np.testing.assert_array_equal(got.nngp, want.nngp)
    assert nt.batch(kernel_fn, 3)(x1, x2, "cov1").shape == (7,)


@pytest.mark.parametrize("x2", ["x2", None])
@pytest.mark.parametrize("kwargs", [{"batch_size": 3}, {"batch_size": 3, "device_count": 0},
                                    {"batch_size": 3, "store_on_device": False}, {"batch_size": 0},
                                    {"batch_size": 2, "device_count": -1}])
def test_batch_of_empirical_kernel_fn(x2, kwargs):
    x1 = jnp.asarray(np.random.default_rng(1).normal(size=(7, 4)))  # 7 and 5: not multiples of 3
    x2 = None if x2 is None else jnp.asarray(np.random.default_rng(2).normal(size=(5, 4)))
    kernel_fn = nt.empirical_kernel_fn(mlp, trace_axes=(), vmap_axes=0)
    want = kernel_fn(x1, x2, None, PARAMS)
    got = nt.batch(kernel_fn, **kwargs)(x1, x2, None, PARAMS)
    assert got._fields == ("nngp", "ntk")
    for g in ("nngp", "ntk"):
        assert getattr(got, g).shape == getattr(want, g).shape
        np.testing.assert_allclose(getattr(got, g), getattr(want, g), rtol=0, atol=1e-13)
    if kwargs.get("store_on_device") is False:
        assert isinstance(got.ntk, jax.Array) and got.ntk.devices() == {jax.devices("cpu")[0]}


def test_batch_spreads_blocks_over_devices():
    # tests/conftest.py asks for two host devices: blocks alternate between them
    if jax.local_device_count() < 2:
        pytest.skip("needs two devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")

    def kernel_fn(x1, x2):
        return x1 @ x2.T

    x = jnp.arange(12.0).reshape(6, 2)
    out = nt.batch(kernel_fn, batch_size=2, device_count=-1)(x, None)
    np.testing.assert_allclose(out, x @ x.T)
    out0 = nt.batch(kernel_fn, batch_size=0, device_count=-1)(x, x[:4])
    np.testing.assert_allclose(out0, x @ x[:4].T)


# ------------------------------------------------------------------------------------------
# monte_carlo_kernel_fn
# ------------------------------------------------------------------------------------------


def _replayed_params(key, n, shape):
    """The parameters of neural-tangents' sample keys, drawn with ``mlp_init``."""
    out = []
    for _ in range(n):
        key, sub = jax.random.split(key)
        init_key, _ = jax.random.split(sub)
        out.append(G.mlp_init(init_key, shape)[1])
    return out


def test_monte_carlo_is_the_mean_of_empirical_kernels_at_the_drawn_params():
    key = jax.random.PRNGKey(3)
    mc = nt.monte_carlo_kernel_fn(G.mlp_init, mlp, key, 5, trace_axes=(), vmap_axes=0)
    got = mc(X1, X2)
    kernel_fn = nt.empirical_kernel_fn(mlp, trace_axes=())
    samples = [kernel_fn(X1, X2, None, p) for p in _replayed_params(key, 5, X1.shape)]
    for g in ("nngp", "ntk"):
        want = sum(getattr(s, g) for s in samples) / 5
        np.testing.assert_allclose(getattr(got, g), want, rtol=0, atol=1e-12 * np.abs(want).max())
    # a list of counts: a generator of the running means
    gen = list(nt.monte_carlo_kernel_fn(G.mlp_init, mlp, key, [5, 1, 3])(X1, X2, "ntk"))
    ntk = nt.empirical_ntk_fn(mlp)
    for n, est in zip((1, 3, 5), gen):
        want = sum(ntk(X1, X2, p) for p in _replayed_params(key, n, X1.shape)) / n
        np.testing.assert_allclose(est, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_monte_carlo_of_a_wide_stax_net_matches_the_infinite_width_kernel():
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(1024, 1.5, 0.1), stax.Erf(), stax.Dense(1, 1.5, 0.1))
    x1 = X1[:3]
    key = jax.random.key(11)
    s = 24
    est = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, s, batch_size=2)(x1, X2, "ntk")
    # the per-sample kernels (rmtjax's own draws) give the Monte-Carlo standard error
    ntk = nt.empirical_ntk_fn(apply_fn)
    k = key
    samples = []
    for _ in range(s):
        k, sub = jax.random.split(k)
        samples.append(ntk(x1, X2, init_fn(jax.random.split(sub)[0], x1.shape)[1]))
    samples = np.stack(samples)
    np.testing.assert_allclose(est, samples.mean(0), rtol=0, atol=1e-12)
    se = samples.std(0, ddof=1) / math.sqrt(s)
    exact = kernel_fn(x1, X2, "ntk")
    # 5 standard errors, plus 1e-3 relative for the finite-width bias O(1/width) (measured: max |z| 2.0,
    # the mean of the per-sample kernels equal to the estimate to 3.7e-16)
    assert np.all(np.abs(est - exact) <= 5 * se + 1e-3 * np.abs(exact)), np.abs(est - exact) / se


# ------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------


def test_predict_reuses_regression():
    assert nt.predict.gp_inference is regression.gp_inference
    assert nt.predict.gradient_descent_mse is regression.gradient_descent_mse
    assert nt.predict.gradient_descent_mse_ensemble is regression.gradient_descent_mse_ensemble
    assert nt.stax is stax


def test_max_learning_rate_is_where_gradient_descent_starts_to_diverge():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(6, 4)))
    y = jnp.asarray(np.random.default_rng(5).normal(size=(6, 3)))
    theta = nt.empirical_ntk_fn(mlp, trace_axes=())(x, None, PARAMS)  # (6, 6, 3, 3)
    theta2 = jnp.transpose(theta, (0, 2, 1, 3)).reshape(18, 18)
    lr = nt.predict.max_learning_rate(theta)
    np.testing.assert_allclose(lr, 2 * 18 / np.linalg.eigvalsh(np.asarray(theta2))[-1], rtol=1e-12)

    def residual_after(eta, steps=400):  # linearised GD on 1/(2m) |f - y|^2: r <- (I - eta Theta / m) r
        r = -y.reshape(-1)
        for _ in range(steps):
            r = r - eta / 18 * (theta2 @ r)
        return float(jnp.linalg.norm(r))

    assert residual_after(0.98 * lr) < 10 * float(jnp.linalg.norm(y))
    assert residual_after(1.02 * lr) > 1e3 * float(jnp.linalg.norm(y))
    traced = nt.empirical_ntk_fn(mlp)(x, None, PARAMS)
    np.testing.assert_allclose(nt.predict.max_learning_rate(traced, y.size, momentum=0.5),
                               3 * y.size / np.linalg.eigvalsh(np.asarray(traced))[-1], rtol=1e-12)


# ------------------------------------------------------------------------------------------
# Golden values from neural-tangents 0.6.5
# ------------------------------------------------------------------------------------------

golden = pytest.mark.skipif(not GOLDEN.exists(), reason="tests/data/nt_api_golden.npz not written (run "
                            "benchmarks/reference/make_nt_api_golden.py in the neural-tangents environment)")
# measured max |rmtjax - NT| / max |NT| per test: empirical kernels 8.2e-16, Monte Carlo 4.0e-16, predict 6.1e-15,
# linearize/taylor 4.9e-16, rng keyword and dropout Monte Carlo 5.7e-16
GTOL = 1e-10


@pytest.fixture(scope="module")
def gold():
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def _close(got, want, tol=GTOL):
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=tol * max(np.abs(want).max(), 1e-300))


@golden
def test_golden_inputs_are_ours(gold):
    for k, v in G.inputs().items():
        np.testing.assert_array_equal(gold[k], v)


@golden
def test_golden_empirical_kernels(gold):
    for ta, tname in (((), "full"), ((-1,), "trace")):
        nngp_fn = nt.empirical_nngp_fn(mlp, trace_axes=ta)
        _close(nngp_fn(X1, X2, PARAMS), gold[f"nngp/{tname}/x2"])
        _close(nngp_fn(X1, None, PARAMS), gold[f"nngp/{tname}/none"])
        for impl in (1, 2, 3):
            for vm, v in ((None, "novmap"), (0, "vmap0")):
                ntk_fn = nt.empirical_ntk_fn(mlp, trace_axes=ta, vmap_axes=vm, implementation=impl)
                gimpl = 1 if impl == 2 else impl  # NT's 1 and 3 were recorded; 2 must equal them too
                _close(ntk_fn(X1, X2, PARAMS), gold[f"ntk/{tname}/impl{gimpl}/{v}/x2"])
                _close(ntk_fn(X1, None, PARAMS), gold[f"ntk/{tname}/impl{gimpl}/{v}/none"])
    _close(nt.empirical_ntk_fn(mlp, (-1,), (0,), 0)(X1, None, PARAMS), gold["ntk/diag0_trace/none"])
    _close(nt.empirical_nngp_fn(mlp, (-1,), (0,))(X1, None, PARAMS), gold["nngp/diag0_trace/none"])
    _close(nt.empirical_ntk_fn(mlp, (), (-1,), 0)(X1, X2, PARAMS), gold["ntk/diaglast/x2"])
    both = nt.empirical_kernel_fn(mlp, trace_axes=(-1,), vmap_axes=0)(X1, X2, ("ntk", "nngp"), PARAMS)
    _close(both.ntk, gold["kernel_fn/ntk"])
    _close(both.nngp, gold["kernel_fn/nngp"])
    _close(nt.empirical_ntk_fn(conv, vmap_axes=0)(CX1, CX2, CONV_PARAMS), gold["conv/ntk/trace"])
    _close(nt.empirical_ntk_fn(conv, (-1,), (1, 2))(CX1, CX2, CONV_PARAMS), gold["conv/ntk/diag12"])
    _close(nt.empirical_nngp_fn(conv, ())(CX1, CX2, CONV_PARAMS), gold["conv/nngp/full"])


def _gold_mc_params(gold, s):
    return tuple((jnp.asarray(gold[f"mc/params/{s}/{i}/w"]), jnp.asarray(gold[f"mc/params/{s}/{i}/b"]))
                 for i in range(3))


@golden
def test_golden_monte_carlo_from_neural_tangents_params(gold):
    n = json.loads(GOLDEN.with_suffix(".json").read_text())["mc"]["n_samples"]
    kernel_fn = nt.empirical_kernel_fn(mlp)
    samples = [kernel_fn(X1, X2, None, _gold_mc_params(gold, s)) for s in range(n)]
    for g in ("nngp", "ntk"):
        _close(sum(getattr(s, g) for s in samples) / n, gold[f"mc/{g}"])
    for c in (1, 2, 4):
        _close(sum(s.ntk for s in samples[:c]) / c, gold[f"mc/gen/{c}/ntk"])


@golden
def test_golden_monte_carlo_same_keys_same_draws(gold):
    # neural-tangents ran with jax_threefry_partitionable=False (jax 0.4.23's default): with the
    # same setting, the same key scheme and the same init_fn draw the same parameters here (to
    # 1 ulp: measured max relative difference 3.4e-16, jax.random.normal's inverse erf)
    meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    key = jax.random.PRNGKey(7)
    with jax.threefry_partitionable(meta["jax_threefry_partitionable"]):
        for s, p in enumerate(_replayed_params(key, meta["mc"]["n_samples"], X1.shape)):
            for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(_gold_mc_params(gold, s))):
                np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)
        est = nt.monte_carlo_kernel_fn(G.mlp_init, mlp, key, meta["mc"]["n_samples"])(X1, X2, ("nngp", "ntk"))
        _close(est.nngp, gold["mc/nngp"])
        _close(est.ntk, gold["mc/ntk"])
        for c, e in zip((1, 2, 4), nt.monte_carlo_kernel_fn(G.mlp_init, mlp, key, [1, 2, 4])(X1, X2, "ntk")):
            _close(e, gold[f"mc/gen/{c}/ntk"])
        xb = DATA["x_train"]
        _close(nt.monte_carlo_kernel_fn(G.mlp_init, mlp, key, 4, batch_size=3)(xb, X2, "ntk"), gold["mc/batched/ntk"])


@golden
def test_golden_rng_keyword_and_dropout_monte_carlo(gold):
    meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    with jax.threefry_partitionable(meta["jax_threefry_partitionable"]):
        key = jax.random.PRNGKey(5)
        dntk = nt.empirical_ntk_fn(G.dropout_apply)
        _close(dntk(X1, X2, PARAMS, rng=key), gold["rng/ntk/x2"])
        _close(dntk(X1, None, PARAMS, rng=key), gold["rng/ntk/none"])
        _close(dntk(X1, X1 + 0.0, PARAMS, rng=key), gold["rng/ntk/same"])
        _close(nt.empirical_nngp_fn(G.dropout_apply)(X1, X2, PARAMS, rng=key), gold["rng/nngp/x2"])
        _close(dntk(X1, X2, PARAMS, rng=tuple(jax.random.split(jax.random.PRNGKey(6)))), gold["rng/ntk/pair"])
        # device_count=0 as recorded: split into row blocks, each block draws its own dropout mask
        # (in neural-tangents too), so the estimate depends on the blocking
        est = nt.monte_carlo_kernel_fn(G.mlp_init, G.dropout_apply, jax.random.PRNGKey(7), 3, device_count=0)(
            X1, X2, ("nngp", "ntk"))
        _close(est.nngp, gold["rng/mc/nngp"])
        _close(est.ntk, gold["rng/mc/ntk"])


@golden
def test_golden_predict(gold):
    Kernel = collections.namedtuple("Kernel", "nngp ntk")
    k_tr = Kernel(gold["predict/k_train_train/nngp"], gold["predict/k_train_train/ntk"])
    k_te = Kernel(gold["predict/k_test_train/nngp"], gold["predict/k_test_train/ntk"])
    k_tt = Kernel(gold["predict/k_test_test/nngp"], gold["predict/k_test_test/ntk"])
    # the kernels neural-tangents fed to predict are rmtjax's empirical kernels too
    kf = nt.empirical_kernel_fn(mlp, vmap_axes=0)
    _close(kf(DATA["x_train"], None, "ntk", PARAMS), k_tr.ntk)
    _close(kf(DATA["x_test"], DATA["x_train"], "nngp", PARAMS), k_te.nngp)
    meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    y = DATA["y_train"]
    post = nt.predict.gp_inference(k_tr, y, diag_reg=meta["diag_reg"])(("nngp", "ntk", "ntkgp"), k_te, k_tt)
    for g in ("nngp", "ntk", "ntkgp"):
        _close(getattr(post, g).mean, gold[f"predict/gp/{g}/mean"])
        _close(getattr(post, g).covariance, gold[f"predict/gp/{g}/covariance"])
    gd = nt.predict.gradient_descent_mse(k_tr.ntk, y, learning_rate=meta["learning_rate"], diag_reg=meta["diag_reg"])
    f_train, f_test = gd(np.asarray(meta["times"]), gold["predict/fx_train_0"], gold["predict/fx_test_0"], k_te.ntk)
    _close(f_train, gold["predict/gd/train"])
    _close(f_test, gold["predict/gd/test"])
    _close(gd(None, None, gold["predict/fx_test_0"], k_te.ntk), gold["predict/gd/inf_test"])
    _, _, kernel_fn = stax.serial(stax.Dense(512, 1.5, 0.1), stax.Erf(), stax.Dense(1, 1.5, 0.1))
    ens = nt.predict.gradient_descent_mse_ensemble(kernel_fn, DATA["x_train"], y, learning_rate=1.0,
                                                   diag_reg=meta["diag_reg"])
    for t_name, t in (("t", np.asarray([1.0, 10.0])), ("inf", None)):
        res = ens(t, DATA["x_test"], ("nngp", "ntk"), compute_cov=True)
        for g in ("nngp", "ntk"):
            _close(getattr(res, g).mean, gold[f"predict/ensemble/{t_name}/{g}/mean"])
            _close(getattr(res, g).covariance, gold[f"predict/ensemble/{t_name}/{g}/covariance"])
    _close(nt.predict.max_learning_rate(k_tr.ntk), gold["predict/max_lr/traced"])
    _close(nt.predict.max_learning_rate(k_tr.ntk, y_train_size=y.size, momentum=0.9),
           gold["predict/max_lr/traced_size_momentum"])
    _close(nt.predict.max_learning_rate(gold["predict/full_ntk"]), gold["predict/max_lr/full"])
    _close(nt.empirical_ntk_fn(mlp, trace_axes=(), vmap_axes=0)(DATA["x_train"], None, PARAMS),
           gold["predict/full_ntk"])


@golden
def test_golden_linearize_and_taylor(gold):
    p2 = _displaced(0.05)
    _close(mlp(p2, X1), gold["f_at_p2"])
    _close(nt.linearize(mlp, PARAMS)(p2, X1), gold["linearize"])
    for d in (1, 2, 3):
        _close(nt.taylor_expand(mlp, PARAMS, d)(p2, X1), gold[f"taylor/{d}"])


@golden
def test_golden_file_is_complete(gold):
    meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    assert meta["neural_tangents"] == "0.6.5"
    assert sorted(gold) == meta["keys"]


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, name", [
    (lambda: nt.batch(lambda a, b: a, batch_size=-1), "batch_size"),
    (lambda: nt.batch(lambda a, b: a, batch_size=2.5), "batch_size"),
    (lambda: nt.batch(lambda a, b: a, device_count=99), "device_count"),
    (lambda: nt.batch(lambda a, b: a, store_on_device="yes"), "store_on_device"),
    (lambda: nt.batch("kernel"), "kernel_fn"),
    (lambda: nt.batch(nt.empirical_ntk_fn(mlp, diagonal_axes=(0,)), 2)(DATA["x_train"], None, PARAMS), "kernel_fn"),
    (lambda: nt.batch(lambda a, b: a @ b.T, 2)(jnp.ones(()), None), "x1"),
    (lambda: nt.empirical_kernel_fn(mlp)(X1, X2, "cov1", PARAMS), "get"),
    (lambda: nt.empirical_kernel_fn(mlp)(X1, X2, ("ntk", "ntk"), PARAMS), "get"),
    (lambda: nt.empirical_ntk_fn(mlp, trace_axes="last"), "trace_axes"),
    (lambda: nt.empirical_ntk_fn(mlp, trace_axes=(5,))(X1, X2, PARAMS), "trace_axes"),
    (lambda: nt.empirical_ntk_fn(mlp, diagonal_axes=(0, 0))(X1, X1, PARAMS), "diagonal_axes"),
    (lambda: nt.empirical_ntk_fn(mlp, diagonal_axes=(0,))(X1, X2, PARAMS), "x2"),
    (lambda: nt.empirical_ntk_fn(mlp, implementation=7), "implementation"),
    (lambda: nt.empirical_ntk_fn(mlp, vmap_axes=(0, 0, {"mask": 0})), "vmap_axes"),
    (lambda: nt.empirical_ntk_fn(mlp, vmap_axes=1.5), "vmap_axes"),
    (lambda: nt.empirical_ntk_fn(mlp, vmap_axes=((0, 0), 0, {}))(X1, X2, PARAMS), "vmap_axes"),
    (lambda: nt.empirical_ntk_fn(mlp)(X1.at[0, 0].set(jnp.nan), X2, PARAMS), "x1"),
    (lambda: nt.empirical_nngp_fn(mlp)(X1, X2[:, :3], PARAMS), "x2"),
    (lambda: nt.empirical_ntk_fn(mlp)(X1, X2, ((jnp.ones((3, 2)), jnp.ones(2)),)), "params"),
    (lambda: nt.empirical_ntk_fn(3), "f"),
    (lambda: nt.monte_carlo_kernel_fn(G.mlp_init, mlp, jax.random.key(0), 0), "n_samples"),
    (lambda: nt.monte_carlo_kernel_fn(G.mlp_init, mlp, jax.random.key(0), [2, -1]), "n_samples"),
    (lambda: nt.monte_carlo_kernel_fn(G.mlp_init, mlp, 0, 2), "key"),
    (lambda: nt.monte_carlo_kernel_fn(G.mlp_init, mlp, jax.random.key(0), 2)(X1, X2, "cov2"), "get"),
    (lambda: nt.linearize(mlp, PARAMS)(PARAMS[:2], X1), "params"),
    (lambda: nt.taylor_expand(mlp, PARAMS, -1), "degree"),
    (lambda: nt.taylor_expand(mlp, PARAMS, 1.0), "degree"),
    (lambda: nt.predict.max_learning_rate(jnp.ones((3, 3, 2))), "ntk_train_train"),
    (lambda: nt.predict.max_learning_rate(jnp.ones((3, 2))), "ntk_train_train"),
    (lambda: nt.predict.max_learning_rate(jnp.eye(3), momentum=1.0), "momentum"),
    (lambda: nt.predict.max_learning_rate(jnp.eye(3), y_train_size=0), "y_train_size"),
    (lambda: nt.predict.max_learning_rate(jnp.zeros((3, 3)), eps=0.0), "ntk_train_train"),
    (lambda: nt.predict.gp_inference(jnp.eye(3), jnp.ones((3, 1)), trace_axes=()), "trace_axes"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])"):
        call()
