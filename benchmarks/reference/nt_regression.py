"""neural-tangents 0.6.5's ``nt.predict`` on kernels computed elsewhere (the oracle for
``benchmarks/kernel_regression.py``).

Runs in the isolated oracle environment (``build_env.sh``) as a long-lived worker, so
TensorFlow is imported once:

    benchmarks/reference/.venv-nt/bin/python benchmarks/reference/nt_regression.py

It reads one job per line on stdin: the path of an ``.npz`` holding ``k_train_train_nngp``,
``k_train_train_ntk``, ``k_test_train_nngp``, ``k_test_train_ntk`` (float64), ``y_train``,
``diag_reg`` and optionally ``ts`` and ``learning_rate``. For each job it computes, in float64,

* ``nt.predict.gp_inference(Kernel(nngp, ntk), y_train, diag_reg)(("nngp", "ntk"), k_test_train)``
  (posterior means on the test set),
* if ``ts`` is present: ``nt.predict.gradient_descent_mse(k_train_train_ntk, y_train,
  learning_rate, diag_reg)(ts, 0., 0., k_test_train_ntk)`` (test outputs at the times ``ts``),

writes them to ``<path>.nt.npz`` (``gp_nngp``, ``gp_ntk``, ``gd_test``) and prints one JSON line
with the wall times (``gp_inference_s``: factory + prediction, factorisations included, with
``block_until_ready``, best of 2 calls; ``gradient_descent_mse_s`` likewise). An empty line or end of input stops
the worker. Errors are reported as ``{"ok": false, "error": ...}`` and the worker carries on.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPEATS = 2  # times reported are the best of REPEATS calls (the machine is shared)


def main() -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import neural_tangents as nt

    Kernel = collections.namedtuple("Kernel", "nngp ntk")
    # compile NT's small helpers once, outside the timings
    k = np.eye(3) + 0.1
    nt.predict.gp_inference(Kernel(k, k), np.ones((3, 2)), 1e-4)(("nngp", "ntk"), Kernel(k[:1], k[:1]))
    nt.predict.gradient_descent_mse(k, np.ones((3, 2)), 1.0, 1e-4)(np.ones(2), 0.0, 0.0, k[:1])
    print(json.dumps({"ready": True, "nt": nt.__version__, "jax": jax.__version__}), flush=True)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            break
        rec = {"path": path, "ok": True}
        try:
            d = np.load(path)
            ktr = Kernel(d["k_train_train_nngp"], d["k_train_train_ntk"])
            kte = Kernel(d["k_test_train_nngp"], d["k_test_train_ntk"])
            y, reg = d["y_train"], float(d["diag_reg"])
            times = []
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                out = nt.predict.gp_inference(ktr, y, reg)(("nngp", "ntk"), kte)
                out = jax.block_until_ready(out)
                times.append(time.perf_counter() - t0)
            rec["gp_inference_s"] = min(times)
            res = {"gp_nngp": np.asarray(out.nngp), "gp_ntk": np.asarray(out.ntk)}
            if "ts" in d:
                times = []
                for _ in range(REPEATS):
                    t0 = time.perf_counter()
                    fn = nt.predict.gradient_descent_mse(ktr.ntk, y, float(d["learning_rate"]), reg)
                    gd = jax.block_until_ready(fn(d["ts"], 0.0, 0.0, kte.ntk)[1])
                    times.append(time.perf_counter() - t0)
                rec["gradient_descent_mse_s"] = min(times)
                res["gd_test"] = np.asarray(gd)
            np.savez(path + ".nt.npz", **res)
        except Exception as e:  # report and carry on
            rec = {"path": path, "ok": False, "error": f"{type(e).__name__}: {e}",
                   "trace": traceback.format_exc()[-1500:]}
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
