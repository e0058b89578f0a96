"""Time neural-tangents 0.6.5 on the benchmark workload (NNGP + NTK of a deep MLP).

Runs in the isolated oracle environment built by ``build_env.sh``:

    benchmarks/reference/.venv-nt/bin/python benchmarks/reference/nt_bench.py \\
        --n 1000 --depth 20 --activation relu --dtype float64 --repeats 3 --seed 0

Workload: ``X = rng.standard_normal((n, 784))`` with rows rescaled to norm ``sqrt(784)``
(``numpy.random.default_rng(seed)``), cast to ``dtype``; network
``serial(*[Dense(512, W_std, 0.05), act] * depth, Dense(1, W_std, 0.05))`` with
``W_std = sqrt(2)`` for ReLU and 1.5 otherwise; ``act`` is ``Relu()``, ``Erf()``,
``Gelu()`` or ``ElementwiseNumerical(jnp.tanh, deg)`` (Gauss-Hermite quadrature).
Times ``jax.jit(kernel_fn, static_argnames='get')(X, None, ('nngp', 'ntk'))``: the first
call (compilation + one run) is reported as ``compile_s``, then the median of
``repeats`` further calls, each with ``block_until_ready``.

Prints exactly one JSON line on stdout. Any exception (out of memory included) gives
``"ok": false`` with the message, and exit status 0. ``peak_rss_mib`` is the process's
peak resident memory (``ru_maxrss``); ``import_rss_mib`` is the peak after importing
neural-tangents (which imports TensorFlow), before any data is made.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # NT imports TensorFlow; keep it quiet.


def _rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def common_parser(description: str) -> argparse.ArgumentParser:
    """The options both workers share (this one and rmtjax's ``benchmarks/_rmtjax_bench.py``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--n", type=int, required=True, help="number of inputs")
    p.add_argument("--depth", type=int, required=True, help="hidden Dense+activation blocks")
    p.add_argument("--activation", choices=["relu", "erf", "gelu", "tanh"], required=True)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-kernels", type=pathlib.Path, default=None, metavar="DIR",
                   help="write DIR/nngp.npy and DIR/ntk.npy (for accuracy checks at small n)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--deg", type=int, default=25, help="quadrature degree (tanh only)")
    return p.parse_args(argv)


def make_data(n: int, seed: int, dtype: str):
    """``(n, 784)`` Gaussian rows rescaled to norm ``sqrt(784)``, as a numpy array of ``dtype``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 784))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X *= np.sqrt(784)
    return X.astype(dtype)


def make_kernel_fn(activation: str, depth: int, deg: int):
    """The benchmark network's ``kernel_fn`` built with ``neural_tangents.stax``."""
    import jax.numpy as jnp
    import numpy as np
    from neural_tangents import stax

    w_std = float(np.sqrt(2.0)) if activation == "relu" else 1.5
    act = {
        "relu": stax.Relu,
        "erf": stax.Erf,
        "gelu": stax.Gelu,
        "tanh": lambda: stax.ElementwiseNumerical(jnp.tanh, deg=deg),
    }[activation]()
    layers = [stax.Dense(512, W_std=w_std, b_std=0.05), act] * depth
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=w_std, b_std=0.05))
    return kernel_fn


def run(args: argparse.Namespace, record: dict) -> None:
    """Build, compile and time; fills ``record`` in place."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import neural_tangents

    record["version"] = neural_tangents.__version__
    record["jax"] = jax.__version__
    record["device"] = str(jax.devices()[0])
    record["import_rss_mib"] = round(_rss_mib(), 1)

    X = jax.device_put(make_data(args.n, args.seed, args.dtype))
    kernel_fn = jax.jit(make_kernel_fn(args.activation, args.depth, args.deg),
                        static_argnames="get")

    t0 = time.perf_counter()
    out = jax.block_until_ready(kernel_fn(X, None, ("nngp", "ntk")))
    record["compile_s"] = time.perf_counter() - t0
    if str(out[0].dtype) != args.dtype:
        raise TypeError(f"kernel dtype {out[0].dtype} != requested {args.dtype}")

    time_calls(lambda: kernel_fn(X, None, ("nngp", "ntk")), out, args, record)


def time_calls(call, out, args, record):
    """Times ``args.repeats`` calls of ``call`` (after the warm-up that produced ``out``), checks
    the kernels are finite and saves them if asked. Shared with rmtjax's worker."""
    import jax
    import numpy as np

    times = []
    for _ in range(args.repeats):
        del out
        t0 = time.perf_counter()
        out = jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    record["times_s"] = times
    record["median_s"] = statistics.median(times) if times else None
    nngp, ntk = (np.asarray(k) for k in out)
    record["finite"] = bool(np.isfinite(nngp).all() and np.isfinite(ntk).all())
    if args.save_kernels is not None:
        args.save_kernels.mkdir(parents=True, exist_ok=True)
        np.save(args.save_kernels / "nngp.npy", nngp)
        np.save(args.save_kernels / "ntk.npy", ntk)
        record["saved"] = str(args.save_kernels)


def main(argv=None) -> int:
    """Entry point: always prints one JSON line and returns 0."""
    args = parse_args(argv)
    record = {"lib": "neural_tangents", "version": None, "jax": None, "n": args.n,
              "depth": args.depth, "activation": args.activation, "dtype": args.dtype,
              "seed": args.seed, "repeats": args.repeats,
              "deg": args.deg if args.activation == "tanh" else None,
              "times_s": [], "median_s": None, "compile_s": None}
    return run_and_report(run, args, record)


def run_and_report(run, args, record) -> int:
    """Runs ``run(args, record)``, records any failure as data, adds the peak RSS and prints the
    record as one JSON line (shared with rmtjax's worker); returns 0."""
    try:
        run(args, record)
        record["ok"] = True
    except (Exception, MemoryError) as e:  # noqa: BLE001 - report every failure as data
        record["ok"] = False
        record["error"] = f"{type(e).__name__}: {e}"[:2000]
    record["peak_rss_mib"] = round(_rss_mib(), 1)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
