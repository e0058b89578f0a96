"""Where rmtjax's convolutional kernel engine spends its time: one tile of image pairs, layer by
layer, against leaner formulations of the same maths (for the engine's maintainers; it reads
private modules of ``rmtjax.kernels``).

    .venv/bin/python benchmarks/conv_engine_profile.py            # 8 x 8 (22 x 22 pairs) and 28 x 28 (1 pair)

For each image size: a tile as the engine makes it (``_core._image_plan``'s tile edge; the state
after one SAME 3 x 3 ``Conv`` of the inputs), then, each jitted alone, the minimum of 9 calls taken
in alternation (the machine is shared: the minimum is the least disturbed):

* the engine's ``Conv`` layer (NNGP, NTK and the two variance arrays), the same linear map on one
  array as the engine writes it (``diagonal_window_sum``: padding + strided slices) and as 2 x 3
  shifted adds (checked bit-identical);
* the engine's ReLU ``Activation`` layer (masks for identical images, the variances' own
  full-layout expectations), the bare ``_abrelu_dual`` closed form on the cross covariance only,
  and the same formula without the overflow-safe square root of ``sqrt_prod`` (checked identical
  on these inputs);
* a one-pass multiply-add, the floor for an elementwise pass.

Writes ``benchmarks/results/conv_engine_profile.{json,md}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # one tile, one device

import json
import math
import pathlib
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conv_kernels_vs_neural_tangents as bench  # noqa: E402

from rmtjax import Auto, _numerics, activations  # noqa: E402
from rmtjax.kernels import _conv, _core, _layers  # noqa: E402


def _shift(a, ax1, ax2, d):
    """``a[p + d, p' + d]`` along the pair of axes, zero outside."""
    n = a.shape[ax1]
    src, pads = [slice(None)] * a.ndim, [(0, 0)] * a.ndim
    src[ax1] = src[ax2] = slice(d, n) if d > 0 else slice(0, n + d)
    pads[ax1] = pads[ax2] = (0, d) if d > 0 else (-d, 0)
    return jnp.pad(a[tuple(src)], pads)


def profile(dataset: str, n_images: int, rounds: int = 9) -> dict:
    x = jnp.asarray(bench.make_images(dataset, n_images))
    side = x.shape[1]
    _, _, kfn = bench.nt_conv_bench.build(__import__("rmtjax").stax, "cntk10_gap", side)
    _, full, tile = _core._image_plan(kfn.net, x, 128, False, False)
    xt = x[:tile]
    sig = _core._signature(xt)
    st = jax.jit(lambda a: _core.image_state(a, a[::-1], sig, sig, Auto(), True))(xt)
    conv = _conv.Conv(math.sqrt(2), 0.0, (3, 3), padding="SAME")
    st = eqx.filter_jit(lambda layer, s: layer(s))(conv, st)
    shape = (side, side)
    rows = lambda d: d.reshape(d.shape + (1, 1))
    cols = lambda d: d.reshape(d.shape[:2] + (1, 1) + d.shape[2:])

    def conv_slices(a):
        for i in range(2):
            a = _conv.diagonal_window_sum(a, 2 + i, 4 + i, 3, 1, 1, 1, side, False)
        return a / 9

    def conv_shifts(a):
        for ax1, ax2 in ((2, 4), (3, 5)):
            a = _shift(a, ax1, ax2, -1) + a + _shift(a, ax1, ax2, 1)
        return a / 9

    def relu_bare(nngp, ntk, v1, v2):
        d1, d2 = _layers.pixel_diagonal(v1, shape), _layers.pixel_diagonal(v2, shape)
        k, kd = activations._abrelu_dual(0.0, 1.0, rows(d1), cols(d2), nngp)
        return k, kd * ntk

    def relu_plain_sqrt(nngp, ntk, v1, v2):
        d1, d2 = _layers.pixel_diagonal(v1, shape), _layers.pixel_diagonal(v2, shape)
        p = jnp.sqrt(rows(d1) * cols(d2))
        g = jnp.sqrt(jnp.maximum((p - nngp) * (p + nngp), 0.0))
        kd = 0.25 + _numerics.atan2(nngp, g) / (2 * math.pi)
        return g / (2 * math.pi) + kd * nngp, kd * ntk

    layer_call = eqx.filter_jit(lambda layer, s: layer(s))
    act = _layers.Activation(activations.Relu())
    cands = {
        "conv: engine Conv layer (NNGP, NTK, var1, var2)": (layer_call, (conv, st)),
        "conv: engine's window sum (pad + strided slices), one array": (jax.jit(conv_slices), (st.nngp,)),
        "conv: 2 x 3 shifted adds, one array": (jax.jit(conv_shifts), (st.nngp,)),
        "relu: engine Activation layer": (layer_call, (act, st)),
        "relu: _abrelu_dual on NNGP + kdot * NTK only": (jax.jit(relu_bare), (st.nngp, st.ntk, st.var1, st.var2)),
        "relu: the same without sqrt_prod's overflow branch": (jax.jit(relu_plain_sqrt),
                                                               (st.nngp, st.ntk, st.var1, st.var2)),
        "floor: one multiply-add pass": (jax.jit(lambda a, b: a * b + 1.0), (st.nngp, st.ntk)),
    }
    checks = {
        "shifted adds == window sum (max abs diff)": float(jnp.abs(conv_slices(st.nngp) - conv_shifts(st.nngp)).max()),
        "plain sqrt relu == _abrelu_dual (max rel diff)": max(
            float(jnp.max(jnp.abs(a - b) / jnp.maximum(jnp.abs(a), 1e-300)))
            for a, b in zip(relu_bare(st.nngp, st.ntk, st.var1, st.var2),
                            relu_plain_sqrt(st.nngp, st.ntk, st.var1, st.var2), strict=True)),
    }
    for f, a in cands.values():
        jax.block_until_ready(f(*a))
    best = dict.fromkeys(cands, float("inf"))
    load0 = os.getloadavg()
    for _ in range(rounds):
        for k, (f, a) in cands.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*a))
            best[k] = min(best[k], time.perf_counter() - t0)
    return {"dataset": dataset, "side": side, "tile": tile, "entries": int(st.nngp.size), "full": full,
            "min_s": best, "checks": checks, "loadavg_before": load0, "loadavg_after": os.getloadavg()}


def main() -> int:
    out = HERE / "results"
    res = [profile("digits8", 22), profile("mnist28", 4)]
    lines = ["# rmtjax convolutional engine: time per layer on one tile", "",
             "Generated by `benchmarks/conv_engine_profile.py` (one host device, float64, minimum of 9 "
             "alternated calls; the 2-core machine was shared, load averages below). The tile is the "
             "engine's own (`_IMAGE_TILE_BUDGET`), full pixel-pair layout, after one SAME 3 x 3 conv.", ""]
    for r in res:
        lines += [f"## {r['dataset']}: tile {r['tile']} x {r['tile']} image pairs, {r['entries']:,} entries per "
                  f"array (load {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f})", "",
                  "| step | ms | ns / entry |", "|---|---:|---:|"]
        lines += [f"| {k} | {v * 1e3:.1f} | {v / r['entries'] * 1e9:.1f} |" for k, v in r["min_s"].items()]
        lines += ["", "Checks: " + "; ".join(f"{k}: {v:.1e}" for k, v in r["checks"].items()), ""]
    (out / "conv_engine_profile.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "conv_engine_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
