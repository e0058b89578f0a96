"""Time neural-tangents 0.6.5 on the convolutional benchmark workload (NNGP + NTK of Myrtle-5 and
of a depth-10 CNTK with global average pooling on images).

Runs in the isolated oracle environment built by ``build_env.sh``:

    benchmarks/reference/.venv-nt/bin/python benchmarks/reference/nt_conv_bench.py \\
        --data X.npy --arch myrtle5 --repeats 3 [--batch-size 10 --devices 2] [--save-kernels DIR]

Workload: the images in ``--data`` (an ``(n, H, W, 1)`` float64 ``.npy`` written by
``benchmarks/conv_kernels_vs_neural_tangents.py``, so both libraries see bit-identical inputs)
and the network :func:`layers` (``--arch``):

* ``myrtle5``: neural-tangents' ``MyrtleNetwork(5)`` (its ``myrtle_kernels`` notebook):
  ``[Conv(1, (3, 3), SAME, W_std=sqrt 2, b_std=0), Relu] x 2``, ``AvgPool((2, 2), (2, 2))``,
  ``[Conv, Relu] x 1``, ``AvgPool``, ``[Conv, Relu] x 1``, then ``AvgPool((2, 2), (2, 2))`` until
  the image is 1 x 1 (three times on 32 x 32 inputs, as NT; once on 8 x 8), ``Flatten``,
  ``Dense(10)``. The input side must be a power of two (28 x 28 MNIST is zero-padded to 32 x 32
  by the driver).
* ``cntk10_gap``: ``[Conv(1, (3, 3), SAME, W_std=sqrt 2, b_std=0), Relu] x 10``,
  ``GlobalAvgPool``, ``Dense(1)``.
* ``smoke``: ``Conv, Relu, AvgPool, GlobalAvgPool, Dense(1)`` (the benchmark's own test).

``--batch-size 0`` (default) times ``jax.jit(kernel_fn, static_argnames='get')`` on the whole
``(n, n)`` kernel at once; ``--batch-size b`` times ``nt.batch(kernel_fn, batch_size=b)`` (NT's
documented way to fit big kernels in memory: ``b x b`` blocks, jitted by ``nt.batch`` itself, over
``--devices`` XLA host devices with ``pmap``; ``n`` must be divisible by ``b`` times that).
Each call is ``kernel_fn(X, None, ('nngp', 'ntk'))``: the first call (compilation + one run) is
``compile_s``, then the median of ``repeats`` further calls, each with ``block_until_ready``.

Prints exactly one JSON line on stdout (``nt_bench.run_and_report``): any exception (out of
memory included) gives ``"ok": false`` with the message and exit status 0; ``peak_rss_mib`` is the
process's peak resident memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # NT imports TensorFlow; keep it quiet.

_spec = importlib.util.spec_from_file_location("nt_bench", pathlib.Path(__file__).resolve().parent / "nt_bench.py")
nt_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nt_bench)  # stdlib only at module level

ARCHS = ("myrtle5", "cntk10_gap", "smoke")
W_STD, B_STD = math.sqrt(2.0), 0.0


def layers(arch: str, side: int) -> list[tuple[str, tuple, dict]]:
    """The network as ``(layer name, args, kwargs)`` of an NT-compatible ``stax`` module (the same
    list builds neural-tangents' and rmtjax's network); ``side``: the input's height = width."""
    conv = ("Conv", (1, (3, 3)), dict(padding="SAME", W_std=W_STD, b_std=B_STD))
    relu = ("Relu", (), {})
    pool = ("AvgPool", ((2, 2),), dict(strides=(2, 2)))
    if arch == "myrtle5":
        if side < 8 or side & (side - 1):
            raise ValueError(f"myrtle5 needs a power-of-two side >= 8, got {side}")
        out = [conv, relu, conv, relu, pool, conv, relu, pool, conv, relu]
        out += [pool] * (int(math.log2(side)) - 2)  # 32 -> 16 -> 8 -> 4 -> 2 -> 1 (NT: 3 pools at the end)
        return out + [("Flatten", (), {}), ("Dense", (10,), dict(W_std=W_STD, b_std=B_STD))]
    if arch == "smoke":  # a small net for the benchmark's own test (seconds to compile)
        return [conv, relu, pool, ("GlobalAvgPool", (), {}), ("Dense", (1,), dict(W_std=W_STD, b_std=B_STD))]
    if arch == "cntk10_gap":
        return [conv, relu] * 10 + [("GlobalAvgPool", (), {}), ("Dense", (1,), dict(W_std=W_STD, b_std=B_STD))]
    raise ValueError(f"unknown arch {arch!r}; one of {ARCHS}")


def build(stax, arch: str, side: int):
    """``stax.serial(*layers(arch, side))`` with ``stax`` NT's or rmtjax's facade."""
    return stax.serial(*(getattr(stax, name)(*args, **kw) for name, args, kw in layers(arch, side)))


def common_parser(description: str) -> argparse.ArgumentParser:
    """The options both workers share (this one and the rmtjax worker of the driver)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", type=pathlib.Path, required=True, help="(n, H, W, 1) float64 .npy")
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--save-kernels", type=pathlib.Path, default=None, metavar="DIR",
                   help="write DIR/nngp.npy and DIR/ntk.npy")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=0, help="0: plain jit(kernel_fn); b: nt.batch(kernel_fn, b)")
    p.add_argument("--devices", type=int, default=1,
                   help="XLA host devices (set before JAX is imported); nt.batch pmaps over them")
    return p.parse_args(argv)


def run(args: argparse.Namespace, record: dict) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    import numpy as np
    from neural_tangents import stax

    record["version"] = nt.__version__
    record["jax"] = jax.__version__
    record["device"] = f"{len(jax.devices())} x {jax.devices()[0]}"
    record["import_rss_mib"] = round(nt_bench._rss_mib(), 1)

    x = np.load(args.data)
    record["shape"] = list(x.shape)
    X = jax.device_put(x)
    _, _, kernel_fn = build(stax, args.arch, x.shape[1])
    if args.batch_size:
        kernel_fn = nt.batch(kernel_fn, batch_size=args.batch_size, device_count=-1, store_on_device=False)
    else:
        kernel_fn = jax.jit(kernel_fn, static_argnames="get")

    t0 = time.perf_counter()
    out = jax.block_until_ready(kernel_fn(X, None, ("nngp", "ntk")))
    record["compile_s"] = time.perf_counter() - t0
    if str(out[0].dtype) != "float64" or out[0].shape != (len(x), len(x)):
        raise TypeError(f"kernel dtype/shape {out[0].dtype} {out[0].shape}, expected float64 ({len(x)}, {len(x)})")
    nt_bench.time_calls(lambda: kernel_fn(X, None, ("nngp", "ntk")), out, args, record)


def main(argv=None) -> int:
    """Entry point: always prints one JSON line and returns 0."""
    args = parse_args(argv)
    if args.devices > 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.devices}").strip()
    record = {"lib": "neural_tangents", "version": None, "jax": None, "arch": args.arch, "data": str(args.data),
              "batch_size": args.batch_size, "devices": args.devices, "repeats": args.repeats, "dtype": "float64",
              "times_s": [], "median_s": None, "compile_s": None}
    return nt_bench.run_and_report(run, args, record)


if __name__ == "__main__":
    sys.exit(main())
