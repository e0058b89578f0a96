"""Write neural-tangents 0.6.5's finite ``apply_fn`` outputs, layer by layer, for the
convolutional stax layers (the finite side of issue 16).

Runs in the isolated oracle environment built by ``build_env.sh``:

    benchmarks/reference/.venv-nt/bin/python benchmarks/reference/make_conv_finite_golden.py

For each case of :func:`cases` (one NT layer: Conv and ConvTranspose over paddings, strides,
1-d/2-d, both parameterizations, with and without bias; AvgPool/SumPool with and without
``normalize_edges``; GlobalAvgPool/GlobalSumPool; Flatten; LayerNorm; Dropout in test mode;
FanInConcat; FanInProd; Index; ImageResize; GlobalSelfAttention), NT's ``init_fn`` gives the
output shape and the parameter tree (its structure and leaf shapes), the inputs and the
parameter leaves are drawn with NumPy (:func:`arrays`, seeded by the case number, so the test
regenerates them without storing them), and NT's ``apply_fn(params, x)`` gives the output.
Writes ``tests/data/nt_conv_finite_layers.npz``: ``"{i}/y"`` (float64 output), ``"{i}/shape"``
(``init_fn``'s output shape), ``"cases"`` (the case list) and ``"leaf_shapes"`` (per case, the
shapes of NT's parameter leaves in ``jax.tree_util`` order), both as JSON strings. This file imports neither JAX nor NT at module level, so
:func:`cases` and :func:`arrays` can be loaded from the project's environment.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "nt_conv_finite_layers.npz"


def cases() -> list[dict]:
    """The layer cases: ``{"layer": NT name, "args": [...], "kwargs": {...}, "shapes": input
    shape (or a list of shapes for the fan-in layers, with "multi": true)}``."""
    out = []
    conv_grid = [((9,), (3,), (1,), "VALID"), ((9,), (3,), (2,), "SAME"), ((8,), (4,), (3,), "CIRCULAR"),
                 ((4,), (6,), (1,), "CIRCULAR"), ((6,), (2,), (2,), "VALID"),
                 ((7, 6), (3, 3), (1, 1), "SAME"), ((7, 6), (3, 2), (2, 1), "VALID"),
                 ((7, 6), (3, 3), (2, 2), "CIRCULAR"), ((5, 8), (2, 3), (1, 2), "SAME"),
                 ((3, 3), (5, 5), (1, 1), "CIRCULAR"), ((6, 6), (2, 2), (2, 2), "SAME")]
    for sp, f, s, pad in conv_grid:
        for param in ("ntk", "standard"):
            for b in (0.3, None):
                for tr in (False, True):
                    out.append({"layer": "ConvTranspose" if tr else "Conv", "args": [4, list(f)],
                                "kwargs": {"strides": list(s), "padding": pad, "W_std": 1.3, "b_std": b,
                                           "parameterization": param},
                                "shapes": [2, *sp, 3]})
        for kind in ("AvgPool", "SumPool"):
            kws = [{"strides": list(s), "padding": pad}]
            if kind == "AvgPool":
                kws.append({"strides": list(s), "padding": pad, "normalize_edges": True})
            for kw in kws:
                out.append({"layer": kind, "args": [list(f)], "kwargs": kw, "shapes": [2, *sp, 3]})
    out.append({"layer": "AvgPool", "args": [[2, 2]], "shapes": [2, 5, 5, 3]})  # default strides, padding
    for kind in ("GlobalAvgPool", "GlobalSumPool", "Flatten"):
        for sh in ([2, 5, 3], [2, 4, 5, 3], [2, 4]):
            out.append({"layer": kind, "shapes": sh})
    for ax in (-1, [1, 2, 3], [1, 3], [0, 3]):
        out.append({"layer": "LayerNorm", "kwargs": {"axis": ax, "eps": 1e-3}, "shapes": [2, 4, 5, 3]})
    out.append({"layer": "LayerNorm", "shapes": [3, 7]})
    out.append({"layer": "Dropout", "args": [0.7], "kwargs": {"mode": "test"}, "shapes": [3, 4, 5, 2]})
    out.append({"layer": "FanInConcat", "multi": True, "shapes": [[2, 4, 4, 3], [2, 4, 4, 5]]})
    out.append({"layer": "FanInConcat", "kwargs": {"axis": 1}, "multi": True, "shapes": [[2, 4, 4, 3], [2, 2, 4, 3]]})
    out.append({"layer": "FanInProd", "multi": True, "shapes": [[2, 4, 4, 3]] * 3})
    out.append({"layer": "Index", "idx": [[None, None, 2], [0, 3], 1], "shapes": [4, 5, 6, 3]})
    out.append({"layer": "Index", "idx": ["...", [1, None]], "shapes": [4, 5, 6, 3]})
    for meth, sh in (("linear", [-1, 9, 4, -1]), ("nearest", [-1, 8, 10, -1]), ("cubic", [-1, 3, 7, -1]),
                     ("linear", [-1, 2, 3, -1])):
        out.append({"layer": "ImageResize", "kwargs": {"shape": sh, "method": meth}, "shapes": [2, 5, 6, 3]})
    attention = [
        ({"linear_scaling": True, "attention_mechanism": "SOFTMAX", "b_std": 0.1}, [2, 5, 3]),
        ({"linear_scaling": False, "attention_mechanism": "SOFTMAX", "W_query_std": 0.8}, [2, 3, 4, 3]),
        ({"linear_scaling": False, "attention_mechanism": "IDENTITY", "b_std": 0.2}, [2, 3, 2, 4]),
        ({"linear_scaling": True, "attention_mechanism": "RELU", "pos_emb_type": "SUM", "W_pos_emb_std": 0.7,
          "val_pos_emb": True}, [2, 6, 3]),
        ({"linear_scaling": True, "attention_mechanism": "ABS", "pos_emb_type": "SUM"}, [2, 3, 3, 3]),
        ({"linear_scaling": False, "attention_mechanism": "SOFTMAX", "pos_emb_type": "CONCAT", "n_chan_pos_emb": 2,
          "b_std": 0.3}, [2, 3, 4, 3]),
        ({"linear_scaling": True, "attention_mechanism": "SOFTMAX", "pos_emb_type": "CONCAT", "val_pos_emb": True,
          "W_pos_emb_std": 1.3}, [2, 5, 2]),
    ]
    for kw, shape in attention:
        out.append({"layer": "GlobalSelfAttention", "args": [6, 4, 5, 3],
                    "kwargs": {"W_key_std": 1.1, "W_value_std": 0.9, "W_out_std": 1.2, **kw}, "shapes": shape})
    return out


def decode_index(idx) -> tuple:
    """``[start, stop, step]`` -> slice, ``"..."`` -> Ellipsis, an int stays."""
    return tuple(slice(*a) if isinstance(a, list) else (Ellipsis if a == "..." else a) for a in idx)


def tuples(value):
    """JSON lists -> tuples (NT wants tuples for shapes, strides, axes)."""
    return tuple(tuples(v) for v in value) if isinstance(value, list) else value


def arrays(i: int, case: dict, leaf_shapes) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The inputs (a list: one array, or one per branch) and the parameter leaves (of
    ``leaf_shapes``, in order) of case ``i``: standard normal, from ``numpy.random.default_rng(i)``,
    inputs first."""
    rng = np.random.default_rng(i)
    shapes = case["shapes"] if case.get("multi") else [case["shapes"]]
    xs = [rng.standard_normal(s) for s in shapes]
    return xs, [rng.standard_normal(tuple(s)) for s in leaf_shapes]


def main() -> None:
    import jax
    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax

    warnings.filterwarnings("ignore", message="Linear scaling attention used")

    out, leaf_shapes = {}, []
    all_cases = cases()
    for i, case in enumerate(all_cases):
        kwargs = {k: tuples(v) for k, v in case.get("kwargs", {}).items()}
        if case["layer"] == "Index":
            kwargs["idx"] = decode_index(case["idx"])
        init_fn, apply_fn, _ = getattr(stax, case["layer"])(*map(tuples, case.get("args", [])), **kwargs)
        in_shape = [tuple(s) for s in case["shapes"]] if case.get("multi") else tuple(case["shapes"])
        shape, params = init_fn(jax.random.PRNGKey(i), in_shape)
        nt_leaves, tree = jax.tree_util.tree_flatten(params)
        leaf_shapes.append([list(np.shape(a)) for a in nt_leaves])
        xs, leaves = arrays(i, case, leaf_shapes[-1])
        params = jax.tree_util.tree_unflatten(tree, [jax.numpy.asarray(a) for a in leaves])
        extra = {"rng": jax.random.PRNGKey(i)} if case["layer"] == "Dropout" else {}  # NT needs it, even in test mode
        y = np.asarray(apply_fn(params, xs if case.get("multi") else xs[0], **extra), np.float64)
        out[f"{i}/y"] = y
        out[f"{i}/shape"] = np.asarray(shape)
        print(i, case["layer"], case.get("args"), kwargs, tuple(shape), flush=True)
    out["cases"] = np.asarray(json.dumps(all_cases))
    out["leaf_shapes"] = np.asarray(json.dumps(leaf_shapes))
    np.savez_compressed(OUT, **out)
    print(f"wrote {len(all_cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
