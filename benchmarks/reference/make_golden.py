"""Write golden NNGP/NTK kernels computed by neural-tangents 0.6.5.

Runs in the isolated oracle environment built by ``build_env.sh``:

    benchmarks/reference/.venv-nt/bin/python benchmarks/reference/make_golden.py

Reads the architecture specs in ``architectures.json`` (a neutral JSON grammar, see
README.md), builds each one with ``neural_tangents.stax``, evaluates
``kernel_fn(x1, x2, ('nngp', 'ntk'))`` in float64 and writes

* ``tests/data/nt_golden.npz``: ``"{name}/nngp"``, ``"{name}/ntk"`` for every spec, and
  the input arrays under ``"inputs/{input_name}"``;
* ``tests/data/nt_golden.json``: the spec list (with the inputs each one uses and the
  output shape), the input shapes, the library versions, and what NT could not do.

``build(stax_module, layer_dict)`` only uses ``getattr`` on the module it is given, so
the same JSON can be fed to any neural-tangents-compatible ``stax`` module (such as
``rmtjax.kernels.stax``); this file imports neither JAX nor NT at module level.

What neural-tangents 0.6.5 could not do (so no spec asks for it):

* ``RectifiedMonomial``: its kernel evaluates ``(pi - theta) / sin(theta)`` and its
  derivatives, so it is NaN (or wildly wrong, e.g. a negative NTK diagonal) wherever
  ``theta`` is 0 or pi: identical rows, opposite rows, and every diagonal ``cov1``.
  Because the per-input variances become NaN, any network with a ``RectifiedMonomial``
  followed by another nonlinearity is NaN everywhere. Specs use it at depth 1 only,
  on inputs ``c``/``d`` with no shared or opposite rows.
* ``Polynomial`` divides by ``sqrt(q1 q2)``: NaN for an input row of zero
  pre-activation variance (zero row, no bias). No zero-row spec uses it.
* ``FanInSum`` requires every incoming branch to be Gaussian (end in ``Dense``); it adds
  the branch kernels, i.e. assumes independent branches (true for ``Identity`` plus a
  branch ending in a fresh ``Dense``, as in a residual block).
* With ``x2 = None`` the arc-cosine family (Relu, LeakyRelu, ABRelu, Abs, Sign) can be
  ~1e-9 off on a diagonal entry (``rho = 1 - eps`` gives ``theta ~ sqrt(eps)``).
* ``Hermite`` returns ``nngp**degree`` regardless of the variances: it is only the
  Gaussian expectation when every pre-activation has unit variance. Specs use unit-norm
  rows (``u``, ``v``: ``|x|^2 / d = 1``), ``W_std = 1`` and no bias.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import warnings

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPECS = HERE / "architectures.json"
OUT_DIR = ROOT / "tests" / "data"

# Activations the spec list must cover (checked before anything is computed).
REQUIRED_ACTIVATIONS = {
    "Relu", "LeakyRelu", "ABRelu", "Abs", "Erf", "Gelu", "Sin", "Cos", "Identity",
    "Sign", "Exp", "Gaussian", "Rbf", "Polynomial", "Hermite", "Monomial",
    "RectifiedMonomial",
}
COMBINATORS = {"serial", "parallel", "FanOut", "FanInSum", "Dense"}


def _rows(rng: np.random.Generator, n: int, d: int, scales) -> np.ndarray:
    """``n`` Gaussian rows with ``|x|^2 / d = 1``, row ``i`` then multiplied by ``scales[i]``."""
    x = rng.standard_normal((n, d))
    x *= np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.asarray(scales, dtype=np.float64)[:, None]


def make_inputs() -> dict[str, np.ndarray]:
    """The float64 input arrays, from fixed seeds.

    * ``a`` (8, 12): norms ``|x|/sqrt(d)`` from 0.1 to 3.
    * ``b`` (6, 12): row 0 = ``a[2]``, row 1 = ``-a[3]``, row 2 = ``a[5]`` (norm 3), 3 new rows.
    * ``a_zero`` (7, 12): ``a[:6]`` plus an all-zero row.
    * ``c`` (6, 10), ``d`` (5, 10): moderate norms (0.3 to 1.5), no shared or opposite rows.
    * ``u`` (7, 16), ``v`` (5, 16): unit rows (``|x|^2 / d = 1``); ``v[0] = u[1]``, ``v[1] = -u[4]``.
    """
    rng = np.random.default_rng(20231218)
    a = _rows(rng, 8, 12, [0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 1.0, 0.8])
    b = np.concatenate([a[2:3], -a[3:4], a[5:6], _rows(rng, 3, 12, [0.3, 1.2, 2.5])])
    a_zero = np.concatenate([a[:6], np.zeros((1, 12))])
    c = _rows(rng, 6, 10, [0.3, 0.6, 1.0, 1.2, 1.5, 0.8])
    d = _rows(rng, 5, 10, [0.5, 1.0, 1.4, 0.7, 1.1])
    u = _rows(rng, 7, 16, np.ones(7))
    v = np.concatenate([u[1:2], -u[4:5], _rows(rng, 3, 16, np.ones(3))])
    return {"a": a, "b": b, "a_zero": a_zero, "c": c, "d": d, "u": u, "v": v}


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
    if kind == "FanOut":
        return stax.FanOut(layer["num"])
    return getattr(stax, kind)(**layer.get("kwargs", {}))


def build_net(stax, spec: dict):
    """The whole network of a spec: ``stax.serial(*spec['layers'])``."""
    return build(stax, {"type": "serial", "layers": spec["layers"]})


def layer_types(layers) -> set[str]:
    """All ``type`` values used in a (nested) layer list."""
    out = set()
    for layer in layers:
        out.add(layer["type"])
        out |= layer_types(layer.get("layers", []))
    return out


def load_specs(path: pathlib.Path = SPECS) -> list[dict]:
    """Read and sanity-check the spec list (unique names, known inputs, full coverage)."""
    specs = json.loads(path.read_text())
    inputs = make_inputs()
    names = [s["name"] for s in specs]
    assert len(names) == len(set(names)), "duplicate spec names"
    used = set()
    for s in specs:
        assert s["x1"] in inputs and (s["x2"] is None or s["x2"] in inputs), s["name"]
        used |= layer_types(s["layers"])
    missing = REQUIRED_ACTIVATIONS - used
    assert not missing, f"activations not covered: {sorted(missing)}"
    unknown = used - REQUIRED_ACTIVATIONS - COMBINATORS
    assert not unknown, f"unknown layer types: {sorted(unknown)}"
    return specs


def _dump(meta: dict) -> str:
    """JSON with one line per top-level key and one line per spec (diff-friendly)."""
    lines = []
    for key, value in meta.items():
        if key == "specs":
            body = ",\n".join("  " + json.dumps(v) for v in value)
            lines.append(f'"specs": [\n{body}\n ]')
        elif key == "nt_limitations":
            body = ",\n".join("  " + json.dumps(v) for v in value)
            lines.append(f'"nt_limitations": [\n{body}\n ]')
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    text = "{\n " + ",\n ".join(lines) + "\n}\n"
    assert json.loads(text) == meta
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=pathlib.Path, default=SPECS)
    parser.add_argument("--out-dir", type=pathlib.Path, default=OUT_DIR)
    args = parser.parse_args()

    import jax
    jax.config.update("jax_enable_x64", True)
    import jaxlib
    import neural_tangents
    from neural_tangents import stax

    warnings.filterwarnings("ignore", message="Inputs to this layer are assumed")  # Hermite
    warnings.filterwarnings("ignore", message="`FanIn` layers assume independent")  # residuals
    specs = load_specs(args.specs)
    inputs = make_inputs()
    arrays = {f"inputs/{k}": v for k, v in inputs.items()}
    records = []
    for spec in specs:
        x1 = inputs[spec["x1"]]
        x2 = None if spec["x2"] is None else inputs[spec["x2"]]
        _, _, kernel_fn = build_net(stax, spec)
        nngp, ntk = kernel_fn(x1, x2, ("nngp", "ntk"))
        nngp, ntk = np.asarray(nngp, np.float64), np.asarray(ntk, np.float64)
        for what, k in (("nngp", nngp), ("ntk", ntk)):
            if not np.all(np.isfinite(k)):
                raise FloatingPointError(f"{spec['name']}/{what}: NT returned non-finite values")
            arrays[f"{spec['name']}/{what}"] = k
        records.append({**spec, "shape": list(nngp.shape)})
        print(f"{spec['name']:32s} {str(nngp.shape):8s} "
              f"max|nngp|={np.abs(nngp).max():.3e} max|ntk|={np.abs(ntk).max():.3e}")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out_dir / "nt_golden.npz", **arrays)
    meta = {
        "generator": "benchmarks/reference/make_golden.py",
        "versions": {"neural_tangents": neural_tangents.__version__, "jax": jax.__version__,
                     "jaxlib": jaxlib.__version__, "numpy": np.__version__},
        "dtype": "float64",
        "get": ["nngp", "ntk"],
        "npz_keys": "'{name}/nngp', '{name}/ntk', 'inputs/{input_name}'",
        "inputs": {k: list(v.shape) for k, v in inputs.items()},
        "nt_limitations": [
            "RectifiedMonomial: NaN/inaccurate at theta = 0 or pi (identical or opposite "
            "rows, every diagonal), so NaN everywhere at depth >= 2; used at depth 1 on "
            "inputs with distinct rows only.",
            "Polynomial: NaN for a zero-variance input row (divides by sqrt(q1 q2)).",
            "Hermite: returns nngp**degree, valid only for unit-variance pre-activations; "
            "used with unit-norm rows, W_std = 1, b_std = null.",
            "FanInSum: every branch must end in Dense (Gaussian); branch kernels are added.",
            "Sign: NTK contribution through the Sign is set to zero (its derivative is "
            "zero almost everywhere; the Dirac delta is ignored).",
            "Arc-cosine family (Relu, LeakyRelu, ABRelu, Abs, Sign) with x2 = null: a diagonal "
            "entry can carry ~1e-9 relative rounding error (rho = 1 - eps); identical rows "
            "across x1/x2 are exact. Opposite rows give exact zeros: compare with rtol ~1e-7 "
            "plus a small atol.",
            "Dense(parameterization='standard'): NNGP as in 'ntk'; NTK = in_width * nngp_in + "
            "W_std**2 * ntk_in + (1 if b_std is not None, even b_std = 0), in_width = previous "
            "out_dim (input dimension d for the first layer).",
        ],
        "specs": records,
    }
    (args.out_dir / "nt_golden.json").write_text(_dump(meta))
    print(f"wrote {len(records)} specs to {args.out_dir}")


if __name__ == "__main__":
    main()
