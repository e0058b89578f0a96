"""Activation design: time per kernel-shaping solve and per design step, against DeepMind's ``dks``.

Run from the repository root (the ``dks`` oracle environment must be built for the comparison:
``bash benchmarks/reference/dks/build_env.sh``; without it the dks column is left empty):

    .venv/bin/python benchmarks/activation_design.py [--depth 50] [--repeats 5] [--out benchmarks/results]

Measures, in one run on this machine:

* ``dks``/``tat`` of rmtjax for tanh and softplus on a chain of ``--depth`` layers with dks' default
  targets (DKS slope 1.5, q-slope 1; TAT curvature 0.3): the first call (compile included) and the
  median of ``--repeats`` further calls with new targets (compiled code reused: the targets are traced);
* the same solves by ``dks`` 0.1.2 in its own environment (``benchmarks/reference/dks/dks_bench.py``,
  a subprocess, same depth and targets);
* one step of :func:`rmtjax.design.design` (L-BFGS) for three objectives: ``KernelShaping`` on the
  DKS family, ``Criticality`` with a q* target, and the depth-10 NNGP ``ValidationLoss`` on 200 digits
  (one compiled loop of 20 steps; time per step after compilation).

Writes ``activation_design.json`` and ``activation_design.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dks_times(depth: int, repeats: int) -> dict | None:
    py = ROOT / "benchmarks" / "reference" / "dks" / ".venv-dks" / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run([str(py), str(ROOT / "benchmarks" / "reference" / "dks" / "dks_bench.py"), "--depth",
                          str(depth), "--repeats", str(repeats)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from rmtjax import data, design
    from rmtjax.activations import Softplus, Tanh

    net = design.Chain(args.depth)
    rows = []
    for method, fn, target, values in (("DKS", design.dks, "slope", (1.5, 1.4, 1.6, 1.3, 1.7, 1.45, 1.55)),
                                       ("TAT", design.tat, "curvature", (0.3, 0.25, 0.35, 0.2, 0.4, 0.28, 0.32))):
        for name, act in (("tanh", Tanh()), ("softplus", Softplus())):
            t = time.perf_counter()
            jax.block_until_ready(fn(act, net, **{target: jnp.asarray(values[0])}).activation.alpha)
            first = time.perf_counter() - t
            times = []
            for v in values[1:1 + args.repeats]:
                t = time.perf_counter()
                jax.block_until_ready(fn(act, net, **{target: jnp.asarray(v)}).activation.alpha)
                times.append(time.perf_counter() - t)
            rows.append({"method": method, "activation": name, "depth": args.depth, "first_s": first,
                         "median_s": statistics.median(times)})
            print(rows[-1], file=sys.stderr)

    theirs = _dks_times(args.depth, 3)
    if theirs is not None:
        for r in rows:
            match = [c for c in theirs["cases"] if c["method"] == r["method"] and c["activation"] == r["activation"]]
            r["dks_median_s"] = match[0]["seconds_median"] if match else None

    ds = data.digits(200, 200, seed=0)
    xt = np.asarray(ds.x_train) / np.linalg.norm(ds.x_train, axis=1, keepdims=True) * 8.0
    xv = np.asarray(ds.x_test) / np.linalg.norm(ds.x_test, axis=1, keepdims=True) * 8.0
    objectives = {
        "KernelShaping (DKS family, 4 params)": (design.transformed_family(Tanh(), alpha=0.5, beta=0.5),
                                                 design.KernelShaping(net, q_slope=1.0, c0=0.0, slope=1.5)),
        "Criticality q*=1 (gamma tanh(alpha x))": (
            design.Family(lambda u: design.Transformed(Tanh(), alpha=jnp.exp(u[0]), gamma=jnp.exp(u[1])),
                          jnp.array([0.0, 0.2])), design.Criticality(1.0, 0.1, q_star=1.0)),
        "ValidationLoss NNGP depth 10, 200 digits (Hermite, 7 coeffs)": (
            design.hermite_family(Tanh().hermite_coefficients(jnp.array(1.0), order=6)),
            design.ValidationLoss(xt, ds.y_train, xv, ds.y_test, depth=10, ridge=1e-2)),
    }
    steps_rows = []
    for label, (family, obj) in objectives.items():
        t = time.perf_counter()
        design.design(family, obj, steps=20, warn=False)
        first = time.perf_counter() - t
        t = time.perf_counter()
        out = design.design(family, obj, steps=20, warn=False)
        jax.block_until_ready(out.history)
        run = time.perf_counter() - t
        steps_rows.append({"objective": label, "first_s": first, "per_step_s": run / 20})
        print(steps_rows[-1], file=sys.stderr)

    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_1min": os.getloadavg()[0], "jax": jax.__version__,
                          "device": str(jax.devices()[0].device_kind)},
              "dks": None if theirs is None else {"version": theirs.get("dks_version")},
              "shaping": rows, "design_steps": steps_rows}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "activation_design.json").write_text(json.dumps(record, indent=1))
    lines = ["# Activation design: shaping solves and design steps", "",
             f"Machine: {record['machine']['platform']}, {record['machine']['cpus']} CPUs, device "
             f"{record['machine']['device']}, 1-min load {record['machine']['load_1min']:.1f} at the end of the run; "
             f"jax {record['machine']['jax']}; dks {theirs['dks_version'] if theirs else 'not built'} in its own "
             "environment, same machine, same run.", "",
             f"## Kernel-shaping solves (chain of depth {args.depth}, dks' default targets)", "",
             "| method | activation | rmtjax first call (compile) s | rmtjax per solve s | dks per solve s | dks / rmtjax |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        d = r.get("dks_median_s")
        ratio = f"{d / r['median_s']:.0f}x" if d else "-"
        lines.append(f"| {r['method']} | {r['activation']} | {r['first_s']:.2f} | {r['median_s']:.3f} | "
                     f"{d if d is None else f'{d:.3f}'} | {ratio} |")
    lines += ["", "rmtjax's per-solve time is with compiled code reused (a new target value is a traced "
              "argument); the first call includes compilation (once per activation and method). dks solves "
              "with scipy's hybr and 1e5-node quadrature, no compilation.", "",
              "## Design steps (rmtjax.design.design, L-BFGS with zoom line search, 20 steps)", "",
              "| objective | first call (compile + 20 steps) s | per step s |", "|---|---|---|"]
    for r in steps_rows:
        lines.append(f"| {r['objective']} | {r['first_s']:.2f} | {r['per_step_s']:.4f} |")
    (out_dir / "activation_design.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
