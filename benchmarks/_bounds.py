r"""A lower bound on the time of an NNGP + NTK kernel call, from rates measured on this machine.

Shared by ``benchmarks/kernels_vs_neural_tangents.py`` (which runs this file as a worker, in a
fresh process with the same XLA device setup as ``_rmtjax_bench.py``) and
``benchmarks/kernels_gpu.py`` (which imports it and measures in its own process).

The model. For ``X`` of shape ``n x d`` and a fully-connected network of ``depth`` activation
layers, computing ``Kernel(nngp, ntk)`` of ``X`` with itself needs at least

* the Gram product ``X X^T``: :math:`2 n^2 d` flops (the full product, as the issue counts it;
  a symmetric ``syrk`` would need half), at the measured matmul rate;
* the output writes: NNGP and NTK, :math:`2 n^2` entries of the dtype written once, at the
  measured write bandwidth;
* the depth recursion: per activation layer, the NNGP and the NTK arrays (:math:`2 n^2`
  entries) each read once and written once, in place, at the measured in-place elementwise
  bandwidth: ``depth x 2`` passes over an ``n x n`` array, each pass moving
  :math:`2 n^2` entries (read + write).

``bound_s`` is the sum of the three. It counts only memory traffic and the Gram flops: it
leaves out the arithmetic of the activation's dual (arccos/arcsin/erf per entry and layer) and
it counts full ``n x n`` arrays where the symmetric case needs only a triangle, so it is a
model of what moving the data costs, not a tight bound: an engine that keeps each tile in cache
through the whole depth recursion can in principle beat the recursion term (it never goes to
memory), but not the Gram and write terms.

How the rates are measured (a few seconds per n and dtype on this 2-core CPU, most of it
compiling): spread by rows over every device of the default backend (``shard_map``; on this CPU
one XLA host device per core, as rmtjax uses them), each timed call a compiled loop of passes
(``fori_loop``: no dispatch or cross-device synchronisation per pass, which at n = 200 cost more
than the pass itself) on a donated buffer that XLA updates in place (no call pays for
page-faulting a fresh allocation; ``aliased`` in the record says the buffers were reused); the
best of ``repeats`` timed calls after one warm-up, divided by the passes per call:

* matmul: ``dynamic_update_slice(o, x_rows @ x.T)`` for ``x`` of shape ``m_mm x d``,
  ``m_mm = clip(n, 1024, cap)`` (a matmul's rate grows with its size, so a small cell gets the
  larger rate: a smaller bound), :math:`2 m_{mm}^2 d` flops per product, at least 2 GFLOP per call;
* write: a broadcast scalar written into an ``m x m`` array, ``m = min(n, cap)`` (the cell's own
  size when it fits, so cache effects at small n count in the machine's favour): :math:`m^2`
  entries per pass, at least 512 MiB per call;
* in-place: ``a * 0.5 + 0.25`` on an ``m x m`` array: :math:`2 m^2` entries moved per pass.

Measured on this shared 2-core AMD EPYC (2026-12-07), n = 4000, runs at 1-minute load 2.7-3.3
(other jobs): float32 matmul 64-195 GFLOP/s, float64 29-97 GFLOP/s, write 14-39 GB/s, in-place
27-67 GB/s; the spread is the other jobs' load, which is why the rates are measured in every run.

Run alone (prints one JSON line; what ``kernels_vs_neural_tangents.py`` does per n and dtype):

    .venv/bin/python benchmarks/_bounds.py --n 4000 --d 784 --dtype float64
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

CAP = 8192  # largest m x m array measured (512 MiB in float64)
BYTES_PER_CALL = 2**29  # write / in-place passes per timed call: at least 512 MiB moved
MATMUL_FLOPS_PER_CALL = 2e9  # products per timed call: at least 2 GFLOP
MODEL = ("2 n^2 d flops (X X^T) at the matmul rate + 2 n^2 entries (NNGP, NTK) at the write bandwidth + "
         "depth x 2 in-place passes (read + write) over an n x n array at the in-place bandwidth")


def _best(call, repeats: int) -> float:
    import jax

    jax.block_until_ready(call())  # warm-up: compile, first touch
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        ts.append(time.perf_counter() - t0)
    return min(ts)


def measure_rates(n: int, d: int, dtype: str, *, repeats: int = 5, cap: int = CAP) -> dict:
    """Matmul rate (flop/s), write and in-place bandwidths (bytes/s) at ``m = min(n, cap)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("float64 rates need jax_enable_x64")
    dt = jnp.dtype(dtype)
    devices = jax.devices()
    nd = len(devices)
    m = max(nd, min(n, cap) // nd * nd)  # rows split evenly over the devices
    mesh = Mesh(np.array(devices), ("r",))
    rows = NamedSharding(mesh, P("r"))
    size = m * m * dt.itemsize
    t0 = time.perf_counter()

    # Each timed call runs ``reps`` passes in one compiled loop (``fori_loop`` per device under
    # ``shard_map``: no dispatch or cross-device sync per pass, which at n = 200 cost more than the
    # pass) on a donated buffer, which XLA updates in place: a fresh result would be a fresh
    # allocation, and on this CPU a fresh 128 MiB buffer page-faults at ~2 GB/s. ``aliased`` records
    # that the buffers were reused.
    aliased = []

    def timed(fn, buf, *args):
        state = {"o": buf}

        def call():
            before = [s.data.unsafe_buffer_pointer() for s in state["o"].addressable_shards]
            state["o"] = fn(state["o"], *args)
            aliased.append(before == [s.data.unsafe_buffer_pointer() for s in state["o"].addressable_shards])
            return state["o"]

        t = _best(call, repeats)
        del state["o"]
        return t

    def looped(body, reps, n_in):
        def per_device(o, *args):
            return jax.lax.fori_loop(0, reps, lambda i, o: body(i, o, *args), o)

        f = jax.shard_map(per_device, mesh=mesh, in_specs=(P("r"),) * n_in, out_specs=P("r"))
        return jax.jit(f, donate_argnums=0)

    def into(o, y):
        return jax.lax.dynamic_update_slice(o, y, (0,) * o.ndim)

    # -- matmul: each device its block of rows of X X^T (as rmtjax spreads its tiles). The rate is
    # measured at m_mm = clip(n, 1024, cap) rows: it only grows with the size, so a small cell gets
    # the larger rate (a smaller bound). ``+ 0 * o[0, 0]`` makes each product depend on the previous
    # one, so XLA cannot hoist it out of the loop.
    m_mm = max(nd, min(max(n, 1024), cap) // nd * nd)
    flops = 2.0 * m_mm * m_mm * d
    reps_mm = max(1, math.ceil(MATMUL_FLOPS_PER_CALL / flops))
    x = jax.random.normal(jax.random.key(0), (m_mm, d), dt)
    mm = looped(lambda i, o, xr, xf: into(o, (xr + 0 * o[0, 0]) @ xf.T), reps_mm, 3)
    t_mm = timed(mm, jax.device_put(jnp.zeros((m_mm, m_mm), dt), rows), jax.device_put(x, rows),
                 jax.device_put(jnp.tile(x, (nd, 1)), rows)) / reps_mm  # every device gets all of x
    del x

    # -- write only (a broadcast into the array) and in place (read + write), rows split over devices
    reps_bw = max(1, math.ceil(BYTES_PER_CALL / size))
    fill = looped(lambda i, a: into(a, jnp.broadcast_to(i.astype(a.dtype), a.shape)), reps_bw, 1)
    axpy = looped(lambda i, a: a * 0.5 + 0.25, reps_bw, 1)
    t_write = timed(fill, jax.device_put(jnp.ones((m, m), dt), rows)) / reps_bw
    t_inplace = timed(axpy, jax.device_put(jnp.ones((m, m), dt), rows)) / reps_bw
    return {
        "m": m, "m_matmul": m_mm, "d": d, "dtype": dtype, "devices": nd, "device_kind": devices[0].device_kind,
        "platform": devices[0].platform, "repeats": repeats, "passes_per_call": reps_bw,
        "matmuls_per_call": reps_mm,
        "matmul_s": t_mm, "matmul_flops_per_s": flops / t_mm,
        "write_s": t_write, "write_bytes_per_s": size / t_write,
        "inplace_s": t_inplace, "inplace_bytes_per_s": 2 * size / t_inplace,
        "aliased": all(aliased), "measure_wall_s": time.perf_counter() - t0,
    }


def lower_bound(rates: dict, n: int, d: int, depth: int, itemsize: int) -> dict:
    """The bound of the module docstring for one cell, from :func:`measure_rates`' rates."""
    gram = 2.0 * n * n * d / rates["matmul_flops_per_s"]
    write = 2.0 * n * n * itemsize / rates["write_bytes_per_s"]
    recursion = depth * 2 * (2.0 * n * n * itemsize) / rates["inplace_bytes_per_s"]
    return {"bound_s": gram + write + recursion, "gram_s": gram, "write_s": write, "recursion_s": recursion}


def set_host_devices() -> None:
    """One XLA host device per core, as ``_rmtjax_bench.py`` sets it (before JAX is imported)."""
    flag = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--d", type=int, default=784)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    set_host_devices()
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    rec = {"kind": "bound", "n": args.n, "jax": jax.__version__, "loadavg_1min_before": os.getloadavg()[0]}
    try:
        rec.update(measure_rates(args.n, args.d, args.dtype, repeats=args.repeats))
        rec["ok"] = True
    except Exception as e:  # noqa: BLE001 - report the failure as data
        rec.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
    sys.stdout.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
