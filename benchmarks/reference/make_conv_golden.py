"""Write golden NNGP/NTK kernels of convolutional networks computed by neural-tangents 0.6.5.

Runs in the isolated oracle environment built by ``build_env.sh``:

    benchmarks/reference/.venv-nt/bin/python benchmarks/reference/make_conv_golden.py

Reads the specs in ``conv_architectures.json`` (the grammar of ``architectures.json``
extended with NT's convolutional layers, see README.md, "Convolutional goldens"), builds
each one with ``neural_tangents.stax``, evaluates
``kernel_fn(x1, x2, ('nngp', 'ntk'), **options)`` in float64 (``options``: the spec's
``diagonal_spatial`` / ``diagonal_batch`` keys, when present) and writes

* ``tests/data/nt_conv_golden.npz``: ``"{name}/nngp"``, ``"{name}/ntk"`` for every spec,
  the inputs under ``"inputs/{input_name}"``, and for the specs in ``FINITE`` NT's finite
  network: ``"finite/{name}/param/{i:02d}"`` (the leaves of the parameter tree that
  ``init_fn(PRNGKey(seed), x1.shape)`` returned, in ``jax.tree_util`` flattening order)
  and ``"finite/{name}/out"`` (``apply_fn(params, x1)``);
* ``tests/data/nt_conv_golden.json``: versions, inputs, NT's conventions and limitations,
  the spec list (each with its output ``shape`` and ``layout``) and the finite-network
  records (seed, input, leaf paths and shapes).

``build(stax_module, layer_dict)`` only uses ``getattr`` on the module it is given, so the
same JSON can be fed to any neural-tangents-compatible ``stax`` module (``rmtjax.stax``);
this file imports neither JAX nor NT at module level.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import warnings

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPECS = HERE / "conv_architectures.json"
OUT_DIR = ROOT / "tests" / "data"
STEM = "nt_conv_golden"

# Layer types the spec list must use (checked before anything is computed).
REQUIRED_TYPES = {
    "Conv", "ConvTranspose", "AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten",
    "LayerNorm", "Dropout", "FanInConcat", "FanInProd", "GlobalSelfAttention", "ImageResize",
    "Index", "Dense", "FanOut", "FanInSum", "serial", "parallel", "Identity",
    "Relu", "Erf", "Gelu", "Sin", "Gaussian",
}
# Keys a spec may carry besides its layers; the two options go to kernel_fn.
OPTIONS = ("diagonal_spatial", "diagonal_batch")
SPEC_KEYS = {"name", "group", "x1", "x2", "note", "layers", *OPTIONS}
CONV_TYPES = ("Conv", "ConvTranspose")

# Specs whose finite network (apply_fn with the parameters NT's init_fn drew) is recorded,
# with the PRNGKey seed given to init_fn.
FINITE = {
    "myrtle5": 5,
    "cnn_relu_gap_d1": 1,
    "cnn_relu_stride2_valid_flat_odd": 2,
    "conv1d_relu_flat_d2": 3,
    "layernorm_channel_flat": 4,
    "resnet_block1_flat": 6,
}


def _images(rng: np.random.Generator, n: int, shape, scales) -> np.ndarray:
    """``n`` Gaussian arrays of ``shape`` with ``|x|^2 / x.size = 1``, then times ``scales[i]``."""
    x = rng.standard_normal((n, *shape))
    x *= np.sqrt(np.prod(shape)) / np.sqrt(np.sum(x**2, axis=tuple(range(1, x.ndim)), keepdims=True))
    return x * np.asarray(scales, np.float64).reshape((n,) + (1,) * len(shape))


def make_inputs() -> dict[str, np.ndarray]:
    """The float64 inputs (NHWC images, NWC sequences), from one fixed seed.

    * ``img_a`` (5, 8, 8, 3), norms ``|x|/sqrt(size)`` 0.5, 1, 1.5, 0.8, 2.
    * ``img_b`` (4, 8, 8, 3): ``img_b[0] = img_a[1]``, ``img_b[1] = -img_a[2]``, 2 new (0.7, 1.2).
    * ``img_zero`` (4, 8, 8, 3): ``img_a[:3]`` and an all-zero image.
    * ``img_c`` (4, 7, 7, 3), ``img_d`` (3, 7, 7, 3): odd size; ``img_d[0] = img_c[2]``.
    * ``img_r`` (3, 6, 5, 2), ``img_s`` (2, 6, 5, 2): H != W, for full spatial outputs;
      ``img_s[0] = img_r[1]``.
    * ``seq_a`` (5, 12, 2), ``seq_b`` (4, 12, 2): 1-d; ``seq_b[0] = seq_a[1]``, ``seq_b[1] = -seq_a[3]``.
    """
    rng = np.random.default_rng(20261206)
    img_a = _images(rng, 5, (8, 8, 3), [0.5, 1.0, 1.5, 0.8, 2.0])
    img_b = np.concatenate([img_a[1:2], -img_a[2:3], _images(rng, 2, (8, 8, 3), [0.7, 1.2])])
    img_zero = np.concatenate([img_a[:3], np.zeros((1, 8, 8, 3))])
    img_c = _images(rng, 4, (7, 7, 3), [0.6, 1.0, 1.3, 0.9])
    img_d = np.concatenate([img_c[2:3], _images(rng, 2, (7, 7, 3), [1.1, 0.7])])
    img_r = _images(rng, 3, (6, 5, 2), [1.0, 0.7, 1.4])
    img_s = np.concatenate([img_r[1:2], _images(rng, 1, (6, 5, 2), [0.9])])
    seq_a = _images(rng, 5, (12, 2), [0.5, 1.0, 1.5, 0.8, 1.2])
    seq_b = np.concatenate([seq_a[1:2], -seq_a[3:4], _images(rng, 2, (12, 2), [0.9, 1.3])])
    return {"img_a": img_a, "img_b": img_b, "img_zero": img_zero, "img_c": img_c, "img_d": img_d,
            "img_r": img_r, "img_s": img_s, "seq_a": seq_a, "seq_b": seq_b}


def _tuples(value):
    """JSON lists -> tuples (recursively); NT/JAX want tuples for shapes, strides, axes."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def decode_index(idx) -> tuple:
    """``Index``'s JSON ``idx`` -> a numpy index: ``[start, stop, step]`` is a slice, an int an int,
    ``"..."`` an Ellipsis. E.g. ``[[null, null, null], 2, "..."]`` is ``x[:, 2, ...]``."""
    out = []
    for item in idx:
        if isinstance(item, list):
            out.append(slice(*item))
        elif item == "...":
            out.append(Ellipsis)
        else:
            out.append(int(item))
    return tuple(out)


def build(stax, layer: dict):
    """Build one layer dict of the JSON grammar with ``stax`` (any NT-compatible module).

    Returns the ``(init_fn, apply_fn, kernel_fn)`` triple of ``stax``.
    """
    kind = layer["type"]
    if kind in ("serial", "parallel"):
        return getattr(stax, kind)(*(build(stax, sub) for sub in layer["layers"]))
    if kind == "Dense":
        return stax.Dense(layer["out_dim"], W_std=layer["W_std"], b_std=layer["b_std"],
                          parameterization=layer.get("parameterization", "ntk"))
    if kind in CONV_TYPES:
        strides = layer.get("strides")
        return getattr(stax, kind)(
            layer["out_chan"], tuple(layer["filter_shape"]),
            strides=None if strides is None else tuple(strides),
            padding=layer.get("padding", "VALID"), W_std=layer["W_std"], b_std=layer["b_std"],
            parameterization=layer.get("parameterization", "ntk"))
    if kind == "FanOut":
        return stax.FanOut(layer["num"])
    kwargs = dict(layer.get("kwargs", {}))
    if kind == "Index":
        kwargs["idx"] = decode_index(kwargs["idx"])
        return stax.Index(**kwargs)
    return getattr(stax, kind)(**_tuples(kwargs))


def build_net(stax, spec: dict):
    """The whole network of a spec: ``stax.serial(*spec['layers'])``."""
    return build(stax, {"type": "serial", "layers": spec["layers"]})


def kernel_options(spec: dict) -> dict:
    """The keyword arguments a spec passes to ``kernel_fn`` (``diagonal_spatial``, ``diagonal_batch``)."""
    return {k: spec[k] for k in OPTIONS if k in spec}


def layer_types(layers) -> set[str]:
    """All ``type`` values used in a (nested) layer list."""
    out = set()
    for layer in layers:
        out.add(layer["type"])
        out |= layer_types(layer.get("layers", []))
    return out


def load_specs(path: pathlib.Path = SPECS) -> list[dict]:
    """Read and sanity-check the spec list (unique names, known inputs and keys, coverage)."""
    specs = json.loads(path.read_text())
    inputs = make_inputs()
    names = [s["name"] for s in specs]
    assert len(names) == len(set(names)), "duplicate spec names"
    used = set()
    for s in specs:
        assert set(s) <= SPEC_KEYS, (s["name"], set(s) - SPEC_KEYS)
        assert s["x1"] in inputs and (s["x2"] is None or s["x2"] in inputs), s["name"]
        used |= layer_types(s["layers"])
    missing = REQUIRED_TYPES - used
    assert not missing, f"layer types not covered: {sorted(missing)}"
    assert set(FINITE) <= set(names)
    return specs


def spatial_layout(ndim_spatial: int, diagonal_spatial: bool, is_reversed: bool) -> str:
    """The axis names of an output kernel, e.g. ``"n1,n2,W,W',H,H'"``."""
    names = ["H", "W"] if ndim_spatial == 2 else ["L"] if ndim_spatial == 1 else [f"S{i}" for i in range(ndim_spatial)]
    if is_reversed:
        names = names[::-1]
    axes = ["n1", "n2"]
    for n in names:
        axes += [n] if diagonal_spatial else [n, n + "'"]
    return ",".join(axes)


# Written into the JSON; README.md ("Convolutional goldens") has the long version.
CONVENTIONS = [
    "Full spatial kernels are (n1, n2, H, H', W, W') (pairs of positions zipped per axis); "
    "NT keeps an is_reversed flag that every Conv (full-spatial path) flips, and returns the "
    "kernel as it stands: after an odd number of Convs the output is (n1, n2, W, W', H, H'). "
    "The spec's 'layout' field names the axes of the golden as returned.",
    "diagonal_spatial=True outputs (n1, n2, H, W) (spatial diagonal only, never reversed).",
    "NT's default diagonal_spatial for a net is the cheapest that works: True for Conv/"
    "activation stacks read out by Flatten (same values as False), False as soon as a pooling, "
    "GlobalAvgPool, attention, resize or spatial FanInConcat needs off-diagonal entries; asking "
    "True there raises ValueError.",
    "Input kernel: x.x' summed over channels divided by the channel count C (per position pair).",
    "Conv (ntk): K_out[p, p'] = W_std^2 / prod(f) * sum_{d in filter} K_in[s*p + d, s*p' + d] "
    "+ b_std^2 (zero padding for SAME/VALID, periodic for CIRCULAR); NTK_out = W_std^2 * "
    "(same window sum of NTK_in) / prod(f) + K_out. out_chan is ignored.",
    "Conv (standard): NNGP as ntk; NTK_out = C_in * prod(f) * (window mean of K_in) + W_std^2 * "
    "(window mean of NTK_in) + (1 if b_std is not None, even b_std = 0); C_in is the finite "
    "channel count of the layer input (image channels for the first layer).",
    "AvgPool: window sum / prod(window) (also at SAME edges unless normalize_edges=True, which "
    "divides by the number of in-image pixels); strides default to 1 (not the window), padding "
    "default VALID. SumPool: window sum. Both act on each spatial axis pair of the 4-d kernel.",
    "Flatten: mean over the spatial diagonal (p = p'), i.e. trace / (H*W); GlobalAvgPool: mean "
    "over all (p, p') pairs; GlobalSumPool: sum over all pairs.",
    "LayerNorm: divides K[i, j, p, p'] by sqrt((eps + v_i) (eps + v_j)), v the mean of the "
    "per-position variances over the normalised non-channel axes (just the position's own "
    "variance for axis=-1). Needs a Gaussian input (right after Conv/Dense/attention).",
    "Dropout(rate, 'train'): entries with the same input and the same position are multiplied "
    "by 1/rate, but only when NT's x1_is_x2 holds (x2 None or equal to x1); an x2 that merely "
    "shares an image gets no factor. 'test' mode is the identity.",
    "FanInConcat(axis=-1) averages branch kernels weighted by their finite channel counts; "
    "along a spatial axis it builds a block kernel with zero cross-branch blocks. FanInProd: "
    "nngp = prod nngp_k, ntk = sum_k ntk_k prod_{l != k} nngp_l.",
]

LIMITATIONS = [
    "diagonal_spatial=True with any layer that needs off-diagonal spatial entries (GlobalAvgPool, "
    "AvgPool/SumPool, GlobalSelfAttention, ImageResize over spatial axes) raises ValueError.",
    "GlobalSelfAttention with linear_scaling=False has a kernel only for attention_mechanism="
    "'IDENTITY'.",
    "ImageResize's kernel_fn supports only 'linear' and 'nearest' and cannot resize channels.",
    "Index cannot index the channel axis, nor the batch axis with an integer.",
    "Dropout cannot be the first layer (kernel_fn raises on the input kernel).",
    "LayerNorm needs a Gaussian input kernel (is_gaussian), i.e. right after a Conv/Dense/attention.",
    "Arc-cosine activations (Relu, ...) with rho = +-1 exactly (an image against itself or its "
    "negative) carry ~1e-9..1e-8 relative rounding in NT (rho = 1 - eps); e.g. diagonal_batch=False "
    "moves a Relu CNTK diagonal by 1e-9 relative.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=pathlib.Path, default=SPECS)
    parser.add_argument("--out-dir", type=pathlib.Path, default=OUT_DIR)
    parser.add_argument("--only", nargs="*", help="compute these specs only (nothing is written)")
    args = parser.parse_args()

    import jax
    jax.config.update("jax_enable_x64", True)
    import jaxlib
    import neural_tangents
    from neural_tangents import stax

    warnings.filterwarnings("ignore", message="`FanIn` layers assume independent")
    warnings.filterwarnings("ignore", message="Concatenation along the batch axis")
    warnings.filterwarnings("ignore", message="Linear scaling attention used")
    specs = load_specs(args.specs)
    if args.only:
        specs = [s for s in specs if s["name"] in args.only]
    inputs = make_inputs()
    arrays = {f"inputs/{k}": v for k, v in inputs.items()}
    records, finite = [], {}
    for spec in specs:
        x1 = inputs[spec["x1"]]
        x2 = None if spec["x2"] is None else inputs[spec["x2"]]
        init_fn, apply_fn, kernel_fn = build_net(stax, spec)
        k = kernel_fn(x1, x2, None, **kernel_options(spec))
        nngp, ntk = np.asarray(k.nngp, np.float64), np.asarray(k.ntk, np.float64)
        for what, mat in (("nngp", nngp), ("ntk", ntk)):
            if not np.all(np.isfinite(mat)):
                raise FloatingPointError(f"{spec['name']}/{what}: NT returned non-finite values")
            arrays[f"{spec['name']}/{what}"] = mat
        n_sp = (nngp.ndim - 2) if k.diagonal_spatial else (nngp.ndim - 2) // 2
        layout = spatial_layout(n_sp, bool(k.diagonal_spatial), bool(k.is_reversed))
        records.append({**spec, "shape": list(nngp.shape), "layout": layout})
        line = (f"{spec['name']:40s} {str(nngp.shape):24s} {layout:22s} "
                f"max|nngp|={np.abs(nngp).max():.3e} max|ntk|={np.abs(ntk).max():.3e}")

        if spec["name"] in FINITE:
            seed = FINITE[spec["name"]]
            _, params = init_fn(jax.random.PRNGKey(seed), x1.shape)
            out = np.asarray(apply_fn(params, x1), np.float64)
            leaves = jax.tree_util.tree_flatten_with_path(params)[0]
            for i, (_, leaf) in enumerate(leaves):
                arrays[f"finite/{spec['name']}/param/{i:02d}"] = np.asarray(leaf, np.float64)
            arrays[f"finite/{spec['name']}/out"] = out
            finite[spec["name"]] = {
                "seed": seed, "init": f"init_fn(jax.random.PRNGKey({seed}), {list(x1.shape)})",
                "input": spec["x1"], "out_shape": list(out.shape),
                "leaves": [[jax.tree_util.keystr(p), list(np.shape(leaf))] for p, leaf in leaves],
            }
            line += f"  finite: {len(leaves)} leaves, out {out.shape}"
        print(line, flush=True)

    if args.only:
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out_dir / f"{STEM}.npz", **arrays)
    meta = {
        "generator": "benchmarks/reference/make_conv_golden.py",
        "versions": {"neural_tangents": neural_tangents.__version__, "jax": jax.__version__,
                     "jaxlib": jaxlib.__version__, "numpy": np.__version__},
        "dtype": "float64",
        "get": ["nngp", "ntk"],
        "npz_keys": ("'{name}/nngp', '{name}/ntk', 'inputs/{input_name}', "
                     "'finite/{name}/param/{i:02d}', 'finite/{name}/out'"),
        "inputs": {k: list(v.shape) for k, v in inputs.items()},
        "finite_note": ("params = the leaves of NT's parameter tree in jax.tree_util.tree_flatten "
                        "order (None biases have no leaf); 'leaves' lists their keystr paths and "
                        "shapes; out = apply_fn(params, inputs[input]). Conv: (W, b), W HWIO "
                        "(filter..., C_in, C_out), b (1, 1, 1, C_out) ((1, 1, C_out) in 1-d); Dense: "
                        "(W (C_in, C_out), b (1, C_out)); ntk parameterization: raw N(0, 1) draws."),
        "conventions": CONVENTIONS,
        "nt_limitations": LIMITATIONS,
        "finite": finite,
        "specs": records,
    }
    (args.out_dir / f"{STEM}.json").write_text(_dump(meta))
    print(f"wrote {len(records)} specs ({len(finite)} finite) to {args.out_dir}")


def _dump(meta: dict) -> str:
    """JSON with one line per top-level key and one line per list item (diff-friendly)."""
    lines = []
    for key, value in meta.items():
        if isinstance(value, list) and value and not isinstance(value[0], (int, float, str)) or key in (
                "conventions", "nt_limitations"):
            body = ",\n".join("  " + json.dumps(v) for v in value)
            lines.append(f'{json.dumps(key)}: [\n{body}\n ]')
        elif key == "finite":
            body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f'{json.dumps(key)}: {{\n{body}\n }}')
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    text = "{\n " + ",\n ".join(lines) + "\n}\n"
    assert json.loads(text) == meta
    return text


if __name__ == "__main__":
    main()
