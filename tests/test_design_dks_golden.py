"""`rmtjax.design` against DeepMind's `dks` 0.1.2 (golden values from its own environment,
`benchmarks/reference/dks/`): DKS and TAT parameters for softplus, tanh, SiLU, GELU (exact and
tanh-approximate), ELU over chains of depth 2..100 and three residual networks, and TAT's Leaky-ReLU
negative slope, 324 cases (15 of them targets out of reach, where dks gives up)."""

import json
import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax.activations import Elu, Gelu, Softplus, Swish, Tanh, Transformed
from rmtjax.design import Chain, Residual, dks, local_maps, tat, tat_leaky_relu
from rmtjax.design._shaping import _tat_residual
from rmtjax.solve import root

# XLA at -O0 like most modules (see conftest.py). It ran optimized while the multistart Newton searches
# dominated (measured 2026-12-07 on the idle 2-core machine: 180 s at -O0, 92 s optimized); since the
# searches stop at the first accepted start, compiling is nearly all of its time: measured 2026-12-07
# (eighth session), one process, 30.2 s optimized, 19.5 s at -O0.
XLA_OPTIMIZED = False

GOLDEN = json.loads((Path(__file__).parent / "data" / "dks_golden.json").read_text())
BASES = {"softplus": Softplus(), "tanh": Tanh(), "swish": Swish(), "gelu_exact": Gelu(),
         "gelu": Gelu(approximate=True), "elu": Elu()}
ODD = {"tanh"}  # phi(-x) = -phi(x): (beta, delta) -> (-beta, -delta) is the same shaping


def _network(arch):
    if arch["kind"] == "chain":
        return Chain(arch["depth"])
    return Residual(arch["blocks"], arch["branch_depth"], arch["shortcut_weight"], arch["final_layers"])


def _ours(case):
    net = _network(case["architecture"])
    t = case["targets"]
    if case["activation"] == "leaky_relu":
        s = tat_leaky_relu(net, c0=t["c_val_0_target"])
        return {"negative_slope": float(s.params["negative_slope"]), "output_scale": float(s.params["output_scale"])}
    base = BASES[case["activation"]]
    if case["method"] == "DKS":
        s = dks(base, net, slope=t["c_slope_1_target"], q_slope=t["local_q_slope_target"])
    else:
        s = tat(base, net, curvature=t["c_curve_target"])
    return {k: float(v) for k, v in s.params.items()}


def _relative(ours, theirs, odd):
    """Largest relative difference, up to the symmetries that leave every local map unchanged: the
    reflection x -> -x (input_scale -> -input_scale, as z and -z have one law; rmtjax keeps
    input_scale > 0, dks does not) and, for odd activations, (input_shift, output_shift) -> their
    negatives."""

    def diff(o):
        return max(abs(o[k] - theirs[k]) / max(abs(theirs[k]), 1e-3) for k in theirs)

    if "input_scale" in theirs and theirs["input_scale"] < 0:
        ours = dict(ours, input_scale=-ours["input_scale"])
    d = diff(ours)
    if odd:
        flipped = dict(ours, input_shift=-ours["input_shift"], output_shift=-ours["output_shift"])
        d = min(d, diff(flipped))
    return d


def _theirs(case):
    p = case["params"]
    return Transformed(BASES[case["activation"]], p["input_scale"], p["input_shift"], p["output_scale"],
                       p["output_shift"])


@pytest.mark.slow  # 324 solves (measured 50 s in all, see XLA_OPTIMIZED)
def test_parameters_agree_with_dks():
    worst, elu_off, other_roots = {}, [], []
    for case in GOLDEN["cases"]:
        key = f"{case['method']} {case['activation']} {case['architecture']} {case['targets']}"
        if "error" in case:
            # dks gives up exactly where the target is out of reach: we raise and give the bound
            bound = case["network_value"]["max_c_val_0_at_negative_slope_0"]
            eta = case["targets"]["c_val_0_target"]
            assert eta > bound, key
            with pytest.raises(ValueError, match=rf"c0 = {eta:.6g} is out of reach.*at most ") as err:
                _ours(case)
            ours_bound = float(re.search(r"at most ([0-9.]+)", str(err.value)).group(1))
            assert abs(ours_bound - bound) < 1e-6, (key, ours_bound, bound)  # the bound as dks computes it
            continue
        ours = _ours(case)
        d = _relative(ours, case["params"], case["activation"] in ODD)
        group = (case["method"], case["activation"])
        worst[group] = max(worst.get(group, 0.0), d)
        if case["activation"] != "elu":
            # dks stops its network-level search at |value - target| < 1e-8 (it reports 0.002999999933
            # for an exact 0.003), so its parameters carry errors of about 1e-8 relative; ours solve the
            # targets to rounding. Measured worst: 4e-7 (DKS SiLU).
            assert d < 1e-6, (key, d, ours, case["params"])
            continue
        # ELU: phi'' jumps at 0 (phi' has a kink), and dks integrates across it with a fixed Legendre
        # rule on [-10, 10], O(h) there; we split the integral at the kink. At dks' own parameters the
        # exact local maps miss its local target by 1e-6 to 1.3e-4 (the smallest curvatures), so the parameters
        # differ by up to ~1e-5 where the root is the same.
        exact = local_maps(_theirs(case))
        if case["method"] == "DKS":
            miss = abs(exact.c_slope / case["local_targets"]["local_c_slope_1_target"] - 1)
        else:
            miss = abs(exact.c_curvature / case["local_targets"]["local_c_curv_target"] - 1)
        elu_off.append(miss)
        if d < 1e-4:
            continue
        # a different root of the same equations (dks' hybr failed from the first starting point, where
        # our damped Newton converges): both are TAT solutions; dks' one refines to an exact root nearby
        assert case["method"] == "TAT", key
        other_roots.append(key)
        m = local_maps(Transformed(BASES["elu"], ours["input_scale"], ours["input_shift"], ours["output_scale"],
                                   ours["output_shift"]))
        np.testing.assert_allclose([m.q, m.q_slope, m.c_slope], 1.0, rtol=1e-12)
        p = case["params"]
        y = jnp.array([math.log(p["input_scale"]), p["input_shift"], p["output_shift"]])
        net = _network(case["architecture"])
        sol = root(_tat_residual, y, (BASES["elu"], net.local_curvature(jnp.array(case["targets"]["c_curve_target"]))))
        np.testing.assert_allclose(sol.value, y, rtol=1e-4, atol=1e-4)
    print({f"{m} {a}": f"{v:.1e}" for (m, a), v in sorted(worst.items())})
    print(f"dks' ELU local maps at its own parameters miss its targets by up to {max(elu_off):.1e}; "
          f"{len(other_roots)} ELU TAT cases are other roots: {other_roots}")
    assert max(elu_off) > 1e-6  # dks' quadrature error at ELU's kink separates the two (measured up to 1.3e-4)
    assert len(other_roots) <= 3


def test_a_few_parameters_agree_with_dks():
    # the fast subset (no `slow` mark): the samples of the reference README
    picks = [c for c in GOLDEN["cases"] if "error" not in c and c["architecture"] == {"kind": "chain", "depth": 50}
             and c["activation"] in ("softplus", "leaky_relu") and c["targets"] in (
                 {"c_slope_1_target": 1.5, "local_q_slope_target": 1.0}, {"c_curve_target": 0.3},
                 {"c_val_0_target": 0.9})]
    assert len(picks) == 3
    for case in picks:
        assert _relative(_ours(case), case["params"], False) < 1e-6


def test_golden_file_is_complete():
    assert GOLDEN["versions"]["dks"] == "0.1.2"
    assert GOLDEN["n_cases"] == len(GOLDEN["cases"]) == 324
    assert math.isclose(sum("error" in c for c in GOLDEN["cases"]), GOLDEN["n_failed"])
