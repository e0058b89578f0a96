"""Write golden values of neural-tangents 0.6.5's top-level API (the oracle of ``rmtjax.nt``).

Runs in the isolated oracle environment built by ``build_env.sh``:

    benchmarks/reference/.venv-nt/bin/python benchmarks/reference/make_nt_api_golden.py

For fixed inputs and fixed parameters (both saved, so rmtjax evaluates the same functions at
the same points) it records, in float64:

* ``nt.empirical_ntk_fn`` / ``nt.empirical_nngp_fn`` of a plain MLP ``mlp_apply(params, x)``
  (not a stax network: the same function runs in both environments) with ``trace_axes=()`` and
  ``(-1,)``, ``vmap_axes=None`` and ``0``, implementations 1 and 3, ``diagonal_axes=(0,)`` and
  ``(-1,)``; and the NTK of a tiny convolutional net ``conv_apply`` (``lax.conv_general_dilated``);
* the same with dropout (``dropout_apply``, an ``rng`` key split between ``x1`` and ``x2``), also
  under Monte Carlo;
* ``nt.monte_carlo_kernel_fn(mlp_init, mlp_apply, key, ...)`` (one count, a list of counts, and
  ``batch_size=3``), and the parameters each sample drew (replaying neural-tangents' key
  splitting), so rmtjax can average its own empirical kernels over the same parameters;
* ``nt.predict.gp_inference``, ``gradient_descent_mse`` at several times,
  ``gradient_descent_mse_ensemble`` (a ``stax`` kernel_fn: Dense-Erf-Dense, built identically by
  ``rmtjax.stax``), ``max_learning_rate``;
* ``nt.linearize`` and ``nt.taylor_expand`` (degrees 1-3) at displaced parameters;

into ``tests/data/nt_api_golden.npz`` (arrays) and ``tests/data/nt_api_golden.json`` (versions,
settings, the list of keys). ``mlp_apply``, ``mlp_init``, ``conv_apply`` and ``inputs`` are imported
by ``tests/test_nt_compat.py`` (this file imports neither JAX nor neural-tangents at module level).
"""

from __future__ import annotations

import collections
import json
import math
import os
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "tests" / "data" / "nt_api_golden"

MC_KEY = 7
MC_SAMPLES = 4
MC_COUNTS = (1, 2, 4)
TIMES = (0.0, 1.0, 10.0, 1e3)
LEARNING_RATE = 0.5
DIAG_REG = 1e-3


def mlp_apply(params, x, **kwargs):
    """A 2-hidden-layer tanh MLP in the NTK parameterization, 3 outputs (``**kwargs`` takes the
    ``rng`` that neural-tangents' Monte Carlo passes)."""
    import jax.numpy as jnp

    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w / math.sqrt(w.shape[0]) * 1.3 + 0.2 * jnp.reshape(b, (1,) * (h.ndim - 1) + (-1,))
        if i < len(params) - 1:
            h = jnp.tanh(h)
    return h


def mlp_init(key, input_shape, widths=(16, 12, 3)):
    """Standard-normal weights and biases for :func:`mlp_apply` (``jax.random.normal``)."""
    import jax

    params, d = [], input_shape[-1]
    for w in widths:
        key, k1, k2 = jax.random.split(key, 3)
        params.append((jax.random.normal(k1, (d, w)), jax.random.normal(k2, (w,))))
        d = w
    return tuple(input_shape[:-1]) + (widths[-1],), tuple(params)


def dropout_apply(params, x, rng=None, **kwargs):
    """:func:`mlp_apply` with dropout (keep probability 0.8) on its output when ``rng`` is given."""
    import jax
    import jax.numpy as jnp

    h = mlp_apply(params, x)
    if rng is None:
        return h
    return jnp.where(jax.random.bernoulli(rng, 0.8, h.shape), h / 0.8, 0.0)


def conv_apply(params, x, **kwargs):
    """Two 3x3 'SAME' convolutions (NHWC, HWIO) with a ReLU between: output ``(N, H, W, 2)``."""
    import jax
    import jax.numpy as jnp

    w1, w2 = params
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=dn) / math.sqrt(9 * w1.shape[2])
    h = jnp.maximum(h, 0.0)
    return jax.lax.conv_general_dilated(h, w2, (1, 1), "SAME", dimension_numbers=dn) / math.sqrt(9 * w2.shape[2])


def inputs() -> dict[str, np.ndarray]:
    """Fixed inputs and parameters (NumPy, float64), identical in both environments."""
    rng = np.random.default_rng(20261206)
    d = 4
    out = {
        "x1": rng.normal(size=(5, d)),
        "x2": rng.normal(size=(3, d)),
        "x_train": rng.normal(size=(6, d)),
        "x_test": rng.normal(size=(3, d)),
        "y_train": rng.normal(size=(6, 3)),
        "conv_x1": rng.normal(size=(2, 4, 3, 2)),
        "conv_x2": rng.normal(size=(3, 4, 3, 2)),
        "conv_w1": rng.normal(size=(3, 3, 2, 5)),
        "conv_w2": rng.normal(size=(3, 3, 5, 2)),
    }
    dims = (d, 16, 12, 3)
    for i in range(3):
        out[f"params/{i}/w"] = rng.normal(size=(dims[i], dims[i + 1]))
        out[f"params/{i}/b"] = rng.normal(size=(dims[i + 1],))
        out[f"delta/{i}/w"] = rng.normal(size=(dims[i], dims[i + 1]))
        out[f"delta/{i}/b"] = rng.normal(size=(dims[i + 1],))
    return out


def params_from(arrays, prefix="params"):
    """The MLP parameters ``((w, b), ...)`` stored under ``prefix``."""
    return tuple((arrays[f"{prefix}/{i}/w"], arrays[f"{prefix}/{i}/b"]) for i in range(3))


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    data = inputs()
    out = {k: np.asarray(v) for k, v in data.items()}
    x1, x2 = jnp.asarray(data["x1"]), jnp.asarray(data["x2"])
    params = jax.tree_util.tree_map(jnp.asarray, params_from(data))

    # empirical kernels of the MLP
    for ta in ((), (-1,)):
        tname = "trace" if ta else "full"
        nngp_fn = nt.empirical_nngp_fn(mlp_apply, trace_axes=ta)
        out[f"nngp/{tname}/x2"] = np.asarray(nngp_fn(x1, x2, params))
        out[f"nngp/{tname}/none"] = np.asarray(nngp_fn(x1, None, params))
        for impl in (1, 3):
            for vm in (None, 0):
                ntk_fn = nt.empirical_ntk_fn(mlp_apply, trace_axes=ta, vmap_axes=vm, implementation=impl)
                v = "vmap0" if vm == 0 else "novmap"
                out[f"ntk/{tname}/impl{impl}/{v}/x2"] = np.asarray(ntk_fn(x1, x2, params))
                out[f"ntk/{tname}/impl{impl}/{v}/none"] = np.asarray(ntk_fn(x1, None, params))
    out["ntk/diag0_trace/none"] = np.asarray(
        nt.empirical_ntk_fn(mlp_apply, trace_axes=(-1,), diagonal_axes=(0,), vmap_axes=0)(x1, None, params))
    out["nngp/diag0_trace/none"] = np.asarray(
        nt.empirical_nngp_fn(mlp_apply, trace_axes=(-1,), diagonal_axes=(0,))(x1, None, params))
    out["ntk/diaglast/x2"] = np.asarray(
        nt.empirical_ntk_fn(mlp_apply, trace_axes=(), diagonal_axes=(-1,), vmap_axes=0)(x1, x2, params))
    kernel_fn = nt.empirical_kernel_fn(mlp_apply, trace_axes=(-1,), vmap_axes=0)
    both = kernel_fn(x1, x2, ("ntk", "nngp"), params)
    out["kernel_fn/ntk"], out["kernel_fn/nngp"] = np.asarray(both.ntk), np.asarray(both.nngp)

    # keyword arguments: an rng key split between x1 and x2, and (v1, v2) pairs
    drop_key = jax.random.PRNGKey(5)
    dntk = nt.empirical_ntk_fn(dropout_apply)
    out["rng/ntk/x2"] = np.asarray(dntk(x1, x2, params, rng=drop_key))
    out["rng/ntk/none"] = np.asarray(dntk(x1, None, params, rng=drop_key))
    out["rng/ntk/same"] = np.asarray(dntk(x1, x1 + 0.0, params, rng=drop_key))
    out["rng/nngp/x2"] = np.asarray(nt.empirical_nngp_fn(dropout_apply)(x1, x2, params, rng=drop_key))
    k_a, k_b = jax.random.split(jax.random.PRNGKey(6))
    out["rng/ntk/pair"] = np.asarray(dntk(x1, x2, params, rng=(k_a, k_b)))
    mc_drop = nt.monte_carlo_kernel_fn(mlp_init, dropout_apply, jax.random.PRNGKey(MC_KEY), 3, device_count=0)
    est = mc_drop(x1, x2, ("nngp", "ntk"))
    out["rng/mc/nngp"], out["rng/mc/ntk"] = np.asarray(est.nngp), np.asarray(est.ntk)

    # the convolutional net
    cparams = (jnp.asarray(data["conv_w1"]), jnp.asarray(data["conv_w2"]))
    cx1, cx2 = jnp.asarray(data["conv_x1"]), jnp.asarray(data["conv_x2"])
    out["conv/ntk/trace"] = np.asarray(nt.empirical_ntk_fn(conv_apply, vmap_axes=0)(cx1, cx2, cparams))
    out["conv/ntk/diag12"] = np.asarray(
        nt.empirical_ntk_fn(conv_apply, trace_axes=(-1,), diagonal_axes=(1, 2))(cx1, cx2, cparams))
    out["conv/nngp/full"] = np.asarray(nt.empirical_nngp_fn(conv_apply, trace_axes=())(cx1, cx2, cparams))

    # Monte Carlo: the estimate, and the parameters of each sample (neural-tangents' key splitting)
    key = jax.random.PRNGKey(MC_KEY)
    mc = nt.monte_carlo_kernel_fn(mlp_init, mlp_apply, key, MC_SAMPLES, device_count=0)
    est = mc(x1, x2, ("nngp", "ntk"))
    out["mc/nngp"], out["mc/ntk"] = np.asarray(est.nngp), np.asarray(est.ntk)
    mc_gen = nt.monte_carlo_kernel_fn(mlp_init, mlp_apply, key, list(MC_COUNTS), device_count=0)
    for n, e in zip(MC_COUNTS, mc_gen(x1, x2, "ntk")):
        out[f"mc/gen/{n}/ntk"] = np.asarray(e)
    x1b = jnp.asarray(data["x_train"])  # 6 rows: batch_size 3 divides both 6 and 3
    mc_b = nt.monte_carlo_kernel_fn(mlp_init, mlp_apply, key, MC_SAMPLES, batch_size=3, device_count=0)
    out["mc/batched/ntk"] = np.asarray(mc_b(x1b, x2, "ntk"))
    k = key
    for s in range(MC_SAMPLES):
        k, sub = jax.random.split(k)
        init_key, _ = jax.random.split(sub)
        p = mlp_init(init_key, x1.shape)[1]
        for i, (w, b) in enumerate(p):
            out[f"mc/params/{s}/{i}/w"], out[f"mc/params/{s}/{i}/b"] = np.asarray(w), np.asarray(b)

    # predict, on empirical kernels of the MLP
    xtr, xte, ytr = jnp.asarray(data["x_train"]), jnp.asarray(data["x_test"]), jnp.asarray(data["y_train"])
    Kernel = collections.namedtuple("Kernel", "nngp ntk")
    kf = nt.empirical_kernel_fn(mlp_apply, trace_axes=(-1,), vmap_axes=0)
    k_tr = Kernel(*(np.asarray(a) for a in kf(xtr, None, ("nngp", "ntk"), params)))
    k_te = Kernel(*(np.asarray(a) for a in kf(xte, xtr, ("nngp", "ntk"), params)))
    k_tt = Kernel(*(np.asarray(a) for a in kf(xte, None, ("nngp", "ntk"), params)))
    for g in ("nngp", "ntk"):
        out[f"predict/k_train_train/{g}"] = getattr(k_tr, g)
        out[f"predict/k_test_train/{g}"] = getattr(k_te, g)
        out[f"predict/k_test_test/{g}"] = getattr(k_tt, g)
    gp = nt.predict.gp_inference(k_tr, ytr, diag_reg=DIAG_REG)
    post = gp(("nngp", "ntk", "ntkgp"), k_te, k_tt)
    for g in ("nngp", "ntk", "ntkgp"):
        out[f"predict/gp/{g}/mean"] = np.asarray(getattr(post, g).mean)
        out[f"predict/gp/{g}/covariance"] = np.asarray(getattr(post, g).covariance)
    fx_train_0 = np.asarray(mlp_apply(params, xtr))
    fx_test_0 = np.asarray(mlp_apply(params, xte))
    out["predict/fx_train_0"], out["predict/fx_test_0"] = fx_train_0, fx_test_0
    gd = nt.predict.gradient_descent_mse(k_tr.ntk, ytr, learning_rate=LEARNING_RATE, diag_reg=DIAG_REG)
    f_train, f_test = gd(np.asarray(TIMES), fx_train_0, fx_test_0, k_te.ntk)
    out["predict/gd/train"], out["predict/gd/test"] = np.asarray(f_train), np.asarray(f_test)
    out["predict/gd/inf_test"] = np.asarray(gd(None, None, fx_test_0, k_te.ntk))

    _, _, stax_kernel_fn = stax.serial(stax.Dense(512, 1.5, 0.1), stax.Erf(), stax.Dense(1, 1.5, 0.1))
    ens = nt.predict.gradient_descent_mse_ensemble(stax_kernel_fn, xtr, ytr, learning_rate=1.0, diag_reg=DIAG_REG)
    for t_name, t in (("t", np.asarray([1.0, 10.0])), ("inf", None)):
        res = ens(t, xte, ("nngp", "ntk"), compute_cov=True)
        for g in ("nngp", "ntk"):
            out[f"predict/ensemble/{t_name}/{g}/mean"] = np.asarray(getattr(res, g).mean)
            out[f"predict/ensemble/{t_name}/{g}/covariance"] = np.asarray(getattr(res, g).covariance)

    full = nt.empirical_ntk_fn(mlp_apply, trace_axes=(), vmap_axes=0)(xtr, None, params)
    out["predict/full_ntk"] = np.asarray(full)
    out["predict/max_lr/traced"] = np.asarray(nt.predict.max_learning_rate(k_tr.ntk))
    out["predict/max_lr/traced_size_momentum"] = np.asarray(
        nt.predict.max_learning_rate(k_tr.ntk, y_train_size=ytr.size, momentum=0.9))
    out["predict/max_lr/full"] = np.asarray(nt.predict.max_learning_rate(full))

    # linearize and taylor_expand at params + 0.05 * delta
    p2 = jax.tree_util.tree_map(lambda a, d: a + 0.05 * jnp.asarray(d), params, params_from(data, "delta"))
    out["linearize"] = np.asarray(nt.linearize(mlp_apply, params)(p2, x1))
    for deg in (1, 2, 3):
        out[f"taylor/{deg}"] = np.asarray(nt.taylor_expand(mlp_apply, params, deg)(p2, x1))
    out["f_at_p2"] = np.asarray(mlp_apply(p2, x1))

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT.with_suffix(".npz"), **out)
    meta = {
        "neural_tangents": nt.__version__, "jax": jax.__version__, "numpy": np.__version__,
        "x64": True, "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "mc": {"key": f"jax.random.PRNGKey({MC_KEY})", "n_samples": MC_SAMPLES, "counts": list(MC_COUNTS)},
        "times": list(TIMES), "learning_rate": LEARNING_RATE, "diag_reg": DIAG_REG,
        "keys": sorted(out),
        "written_by": "benchmarks/reference/make_nt_api_golden.py",
    }
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {OUT}.npz ({len(out)} arrays) and .json")


if __name__ == "__main__":
    main()
