"""Time rmtjax on the benchmark workload (NNGP + NTK of a deep MLP); the twin of
``benchmarks/reference/nt_bench.py`` (same options, same one-line JSON output).

Run with the project's Python (``benchmarks/kernels_vs_neural_tangents.py`` calls it once per
configuration, in a fresh process):

    .venv/bin/python benchmarks/_rmtjax_bench.py --n 1000 --depth 20 --activation relu \\
        --dtype float64 --repeats 3 --seed 0 [--order 64] [--save-kernels DIR]

Data: ``nt_bench.make_data`` itself (imported from the reference folder), so both libraries
see bit-identical inputs. Network: ``FullyConnected(depth, W_std, 0.05, act)`` in the NTK
parameterization (``depth`` blocks Dense + act, then a Dense readout), ``W_std = sqrt(2)`` for
ReLU and 1.5 otherwise. ``tanh`` uses ``Tanh()`` with ``method=Auto()`` (``Mehler(64)``), or
``Mehler(order)`` with ``--order``. Times
``jax.jit(lambda x, net: rmtjax.kernels.kernel(x, None, net))``: the first call is
``compile_s``, then the median of ``repeats`` calls, each with ``block_until_ready``.

One XLA host device per CPU core (``XLA_FLAGS``, set before JAX is imported: rmtjax spreads
its tiles over host devices). x64 is enabled only for ``--dtype float64``, so a float32 run
computes in float32 (with x64 on, rmtjax would accumulate float32 inputs in float64).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import time

_FLAG = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

_spec = importlib.util.spec_from_file_location(
    "nt_bench", pathlib.Path(__file__).resolve().parent / "reference" / "nt_bench.py")
nt_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nt_bench)  # stdlib only at module level: no JAX, no NT
make_data, _rss_mib = nt_bench.make_data, nt_bench._rss_mib


def parse_args(argv=None):
    """``nt_bench.py``'s options, with ``--order`` (Mehler order, tanh only) instead of ``--deg``."""
    p = nt_bench.common_parser(__doc__.splitlines()[0])
    p.add_argument("--order", type=int, default=None,
                   help="tanh only: Mehler(order); default Auto() (= Mehler(64))")
    return p.parse_args(argv)


def run(args, record: dict) -> None:
    """Build, compile and time; fills ``record`` in place."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import numpy as np

    import rmtjax
    from rmtjax import activations

    record["version"] = rmtjax.__version__
    record["jax"] = jax.__version__
    record["device"] = f"{len(jax.devices())} x {jax.devices()[0]}"
    record["import_rss_mib"] = round(_rss_mib(), 1)

    w_std = float(np.sqrt(2.0)) if args.activation == "relu" else 1.5
    act = {"relu": activations.Relu, "erf": activations.Erf, "gelu": activations.Gelu,
           "tanh": activations.Tanh}[args.activation]()
    method = rmtjax.Auto() if args.order is None else rmtjax.Mehler(args.order)
    net = rmtjax.FullyConnected(args.depth, w_std, 0.05, act)
    X = jax.device_put(make_data(args.n, args.seed, args.dtype))
    kernel_fn = jax.jit(lambda x, net: rmtjax.kernels.kernel(x, None, net, method=method))

    t0 = time.perf_counter()
    out = jax.block_until_ready(kernel_fn(X, net))
    record["compile_s"] = time.perf_counter() - t0
    if str(out.nngp.dtype) != args.dtype:
        raise TypeError(f"kernel dtype {out.nngp.dtype} != requested {args.dtype}")

    nt_bench.time_calls(lambda: kernel_fn(X, net), out, args, record)


def main(argv=None) -> int:
    """Entry point: always prints one JSON line and returns 0."""
    args = parse_args(argv)
    record = {"lib": "rmtjax", "version": None, "jax": None, "n": args.n, "depth": args.depth,
              "activation": args.activation, "dtype": args.dtype, "seed": args.seed,
              "repeats": args.repeats,
              "method": None if args.activation != "tanh" else
              ("Auto() = Mehler(64)" if args.order is None else f"Mehler({args.order})"),
              "times_s": [], "median_s": None, "compile_s": None}
    return nt_bench.run_and_report(run, args, record)


if __name__ == "__main__":
    sys.exit(main())
