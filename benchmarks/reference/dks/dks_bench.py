"""Time DeepMind dks' DKS and TAT parameter solves (the oracle's speed, for comparison).

Run from the repository root with the oracle's environment (see README.md):

    benchmarks/reference/dks/.venv-dks/bin/python benchmarks/reference/dks/dks_bench.py \
        [--depth 50] [--repeats 3]

Times `dks.base.activation_transform._get_activations_params([act], method, ...)`
(what `get_transformed_activations` spends its time in) for DKS and TAT with dks'
default targets (DKS c_slope_1_target 1.5, local_q_slope_target 1.0; TAT
c_curve_target 0.3), tanh and softplus, on a plain chain of `--depth` nonlinear layers.
The Gauss-Legendre nodes are loaded once before timing.  Prints one JSON line to stdout;
logs go to stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import statistics
import sys
import time
import warnings


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    from dks.base import activation_transform as at

    depth = args.depth

    def chain(x, r_fn):
        for _ in range(depth):
            x = r_fn(x)
        return x

    at._precompute_or_load_roots(at._QUADRATURE_ORDER)
    cases = []
    for method in ("DKS", "TAT"):
        for act in ("tanh", "softplus"):
            times, params = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                params = at._get_activations_params([act], method=method,
                                                    subnet_max_func=chain)[act]
                times.append(time.perf_counter() - t0)
            rec = {"method": method, "activation": act, "depth": depth,
                   "seconds_median": statistics.median(times), "times_s": times,
                   "params": {k: float(v) for k, v in sorted(params.items())}}
            print(f"{method} {act} depth {depth}: {times}", file=sys.stderr)
            cases.append(rec)
    out = {"dks_version": md.version("dks"), "numpy": md.version("numpy"),
           "scipy": md.version("scipy"), "autograd": md.version("autograd"),
           "repeats": args.repeats, "cases": cases}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
