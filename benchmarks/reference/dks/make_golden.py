"""Golden DKS / TAT activation parameters from DeepMind's `dks` 0.1.2 (the oracle).

Run from the repository root with the oracle's own environment (see README.md):

    benchmarks/reference/dks/.venv-dks/bin/python benchmarks/reference/dks/make_golden.py

Writes tests/data/dks_golden.json.  dks is never imported by rmtjax; this script only
*calls* dks (its private `dks.base.activation_transform._get_activations_params`, which
is what the public `get_transformed_activations` calls to get the parameter dicts, and
its `_compute_local_*_target` helpers for the local targets).  Everything in the output
is deterministic (dks seeds its own random restarts with 123) except the timings.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import logging as pylogging
import math
import os
import platform
import sys
import time
import warnings

DKS_ACTS = ["softplus", "tanh", "swish", "gelu_exact", "elu", "gelu"]
TAT_ACTS = ["softplus", "tanh", "swish", "gelu_exact", "elu"]
ZETAS = [1.2, 1.5, 2.0]
TAUS = [0.1, 0.3, 1.0]
ETAS = [0.5, 0.9, 0.95]
CHAIN_DEPTHS = [2, 5, 10, 20, 50, 100]
RESIDUALS = [(8, 2, 0.9, 0), (16, 2, 0.8, 1), (4, 3, 0.95, 0)]

# dks' definitions (dks/base/activation_getter.py), in words, for the reader.
ACTIVATIONS = {
    "softplus": "log(1 + exp(x)) (computed as log(1 + exp(-|x|)) + max(x, 0))",
    "tanh": "tanh(x)",
    "swish": "x * sigmoid(x) (= SiLU)",
    "gelu_exact": "x * (1 + erf(x / sqrt(2))) / 2 (exact GELU, = x * Phi(x))",
    "gelu": "x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2 "
            "(the tanh-APPROXIMATE GELU, as jax.nn.gelu(approximate=True))",
    "elu": "x for x >= 0, exp(x) - 1 for x < 0 (alpha = 1)",
    "leaky_relu": "x for x >= 0, negative_slope * x for x < 0",
}


def architectures():
    out = [{"kind": "chain", "depth": d} for d in CHAIN_DEPTHS]
    out += [{"kind": "residual", "blocks": b, "branch_depth": k, "shortcut_weight": w,
             "final_layers": f} for (b, k, w, f) in RESIDUALS]
    return out


def subnet_max_func(arch):
    """The subnetwork maximizing function M(x, r_fn) of `arch`, in dks' convention."""
    if arch["kind"] == "chain":
        depth = arch["depth"]

        def fn(x, r_fn):
            for _ in range(depth):
                x = r_fn(x)
            return x
        return fn

    blocks, k = arch["blocks"], arch["branch_depth"]
    w, final = arch["shortcut_weight"], arch["final_layers"]

    def branch(x, r_fn):
        for _ in range(k):
            x = r_fn(x)
        return x

    def fn(x, r_fn):
        y = x
        for _ in range(blocks):
            y = w**2 * y + (1.0 - w**2) * branch(y, r_fn)
        for _ in range(final):
            y = r_fn(y)
        return max(y, branch(x, r_fn))
    return fn


def cases():
    out = []
    for act in DKS_ACTS:
        for zeta in ZETAS:
            for arch in architectures():
                out.append({"method": "DKS", "activation": act, "architecture": arch,
                            "targets": {"c_slope_1_target": zeta,
                                        "local_q_slope_target": 1.0}})
    for act in TAT_ACTS:
        for tau in TAUS:
            for arch in architectures():
                out.append({"method": "TAT", "activation": act, "architecture": arch,
                            "targets": {"c_curve_target": tau}})
    for eta in ETAS:
        for arch in architectures():
            out.append({"method": "TAT", "activation": "leaky_relu", "architecture": arch,
                        "targets": {"c_val_0_target": eta}})
    for c in out:
        if c["activation"] == "gelu":
            c["approximate_gelu"] = True
    return out


def _f(x):
    return float(x)


def local_maps(at, getter, name, params):
    """dks' own local Q/C map quantities of the transformed activation (input q = 1)."""
    if name == "leaky_relu":
        return {}
    phi_hat = at._transform_activation(getter(name), params)
    q1 = at._estimate_gaussian_mean(lambda x: phi_hat(x) ** 2)
    return {
        "q_val_1": _f(q1),
        "q_slope_1": _f(at._calc_q_slope_1(phi_hat)),
        "c_val_0": _f(at._estimate_gaussian_mean(phi_hat) ** 2 / q1),
        "c_slope_1": _f(at._calc_c_slope(phi_hat, c=1.0, q_output=1.0)),
        "c_curv_1": _f(at._calc_c_curv(phi_hat, c=1.0, q_output=1.0)),
    }


def run_case(at, getter, case):
    name, method, tg = case["activation"], case["method"], case["targets"]
    smf = subnet_max_func(case["architecture"])
    rec = dict(case)
    kwargs = {"subnet_max_func": smf}
    if method == "DKS":
        kwargs["dks_params"] = dict(tg)
    else:
        kwargs["tat_params"] = dict(tg)
    # Instrument (not modify) dks' calls to scipy.optimize.root, to record which of its
    # starting points gave the accepted solution.
    root_calls = []
    real_root = at.sp_opt.root

    def counting_root(fun, x0, *a, **kw):
        sol = real_root(fun, x0, *a, **kw)
        root_calls.append(([_f(v) for v in x0], bool(sol.success)))
        return sol

    at.sp_opt.root = counting_root
    t0 = time.perf_counter()
    try:
        params = at._get_activations_params([name], method=method, **kwargs)[name]
    except Exception as e:  # noqa: BLE001 - record every failure
        rec["seconds"] = time.perf_counter() - t0
        rec["error"] = f"{type(e).__name__}: {e}"
        if name == "leaky_relu":
            rec["network_value"] = {"max_c_val_0_at_negative_slope_0": _f(
                smf(0.0, lambda c: at._leaky_relu_cmap(c, 0.0)))}
        return rec
    finally:
        at.sp_opt.root = real_root
    rec["seconds"] = time.perf_counter() - t0
    rec["params"] = {k: _f(v) for k, v in sorted(params.items())}
    if method == "TAT" and name != "leaky_relu":
        # dks would return a rejected solution if it came from its very last start.
        assert params["input_scale"] * params["output_scale"] < 2.0, rec
    if root_calls:
        rec["root_search"] = {
            "accepted_start_index": len(root_calls) - 1,
            "accepted_start": root_calls[-1][0],
            "n_converged_but_rejected": sum(ok for _, ok in root_calls[:-1]),
        }

    # The local target dks derived, recomputed with dks' own helper and the same maximal
    # function (deterministic, so identical to the one used inside the solve), and the
    # network-level value it achieves.
    if method == "DKS":
        max_slope = lambda x: smf(1.0, lambda y: x * y)  # noqa: E731 - as in dks
        t = at._compute_local_c_slope_1_target(max_slope, tg["c_slope_1_target"])
        rec["local_targets"] = {"local_c_slope_1_target": _f(t)}
        rec["network_value"] = {"max_c_slope_1": _f(max_slope(t))}
    elif name != "leaky_relu":
        max_curv = lambda x: smf(0.0, lambda y: x + y)  # noqa: E731 - as in dks
        t = at._compute_local_c_curv_target(max_curv, tg["c_curve_target"])
        rec["local_targets"] = {"local_c_curv_target": _f(t)}
        rec["network_value"] = {"max_c_curv_1": _f(max_curv(t))}
    else:
        a = params["negative_slope"]
        rec["local_targets"] = {}
        rec["network_value"] = {
            "max_c_val_0": _f(smf(0.0, lambda c: at._leaky_relu_cmap(c, a))),
            "max_c_val_0_at_negative_slope_0": _f(
                smf(0.0, lambda c: at._leaky_relu_cmap(c, 0.0)))}
    rec["local_maps"] = local_maps(at, getter, name, params)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/dks_golden.json")
    args = ap.parse_args(argv)

    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    pylogging.basicConfig(stream=sys.stderr, level=pylogging.INFO, format="%(message)s")
    log = pylogging.getLogger("make_golden")
    # autograd's derivatives of tanh/exp overflow for the huge trial arguments the root
    # finder visits; dks tolerates it (the trial is rejected), so keep stderr readable.
    warnings.filterwarnings("ignore", category=RuntimeWarning)

    from dks.base import activation_transform as at
    from dks.base.activation_getter import get_activation_function as getter

    all_cases = cases()
    out_cases = []
    t_all = time.perf_counter()
    for i, case in enumerate(all_cases):
        rec = run_case(at, getter, case)
        out_cases.append(rec)
        log.info("[%3d/%d] %s %-10s %s %s -> %s (%.2f s)", i + 1, len(all_cases),
                 rec["method"], rec["activation"], json.dumps(rec["architecture"]),
                 json.dumps(rec["targets"]), rec.get("params", rec.get("error")),
                 rec["seconds"])
    total = time.perf_counter() - t_all

    versions = {p: md.version(p) for p in ("dks", "numpy", "scipy", "autograd", "absl-py")}
    versions["python"] = platform.python_version()
    doc = {
        "description": "DKS / TAT transformed-activation parameters from DeepMind dks "
                       "(dks.base.activation_transform._get_activations_params); "
                       "see benchmarks/reference/dks/README.md",
        "versions": versions,
        "quadrature": {"order": at._QUADRATURE_ORDER, "interval": [-10.0, 10.0],
                       "rule": "scipy.integrate.fixed_quad (Gauss-Legendre)"},
        "activations": ACTIVATIONS,
        "n_cases": len(out_cases),
        "n_failed": sum("error" in c for c in out_cases),
        "total_seconds": total,
        "cases": out_cases,
    }
    for c in out_cases:
        for k in ("params", "local_maps"):
            for v in c.get(k, {}).values():
                assert math.isfinite(v), c
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    log.info("wrote %s: %d cases, %d failed, %.1f s", args.out, len(out_cases),
             doc["n_failed"], total)


if __name__ == "__main__":
    main()
