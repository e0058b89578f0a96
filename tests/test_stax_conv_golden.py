"""rmtjax.stax against golden kernels of convolutional networks written by neural-tangents 0.6.5.

The architectures and inputs are defined once, in benchmarks/reference/conv_architectures.json
and make_conv_golden.py (see benchmarks/reference/README.md, "Convolutional goldens"); the same
builder constructs them with ``rmtjax.stax`` here, so porting a neural-tangents script is exactly
an import change. NT cannot run in this environment, so two goldens are also checked against a
closed form computed here with numpy from the image patches (``test_golden_*_closed_form``): that
checks the golden file itself, independently of both NT's and rmtjax's code.
"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
GOLDEN_JSON, GOLDEN_NPZ = DATA / "nt_conv_golden.json", DATA / "nt_conv_golden.npz"
_spec = importlib.util.spec_from_file_location(
    "make_conv_golden", ROOT / "benchmarks" / "reference" / "make_conv_golden.py")
make_conv_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_conv_golden)

if not (GOLDEN_JSON.exists() and GOLDEN_NPZ.exists()):  # committed, so this never skips in CI
    pytest.skip("tests/data/nt_conv_golden.{json,npz} missing: run "
                "benchmarks/reference/make_conv_golden.py in the NT oracle environment",
                allow_module_level=True)

META = json.loads(GOLDEN_JSON.read_text())
GOLD = np.load(GOLDEN_NPZ)
SPECS = META["specs"]
# For an image against itself (or its negative) the arc-cosine kernels see rho = +-1 at every
# position pair (p, p); neural-tangents evaluates rho = +-(1 - O(eps)) there (cov1 and nngp come
# from differently ordered sums), so theta ~ 1e-8 instead of 0 and those kernel entries carry
# ~1e-9..1e-8 relative error (switching NT's own diagonal_batch moves a ReLU CNTK diagonal by
# 1e-9). Such entries are compared at RTOL_ALIGNED, all others at RTOL.
ARC_COSINE = {"Relu", "LeakyRelu", "ABRelu", "Abs", "Sign"}
RTOL, RTOL_ALIGNED = 1e-10, 1e-7
# Relative errors are taken against max(|ref|, FLOOR * max|ref|): entries that are exactly 0 by
# symmetry in NT (every entry of a zero image's row without bias; the ReLU NNGP of an image and
# its negative on the spatial diagonal, hence through Flatten) come out as rounding residue,
# ~1e-16 of the largest entry, when summed in another order. So those entries are held to an
# absolute 1e-14 * max|ref| instead of a relative 1e-10 of zero.
FLOOR = 1e-4


def _aligned(x1, x2):
    """(n1, n2) mask: image i of x1 equals image j of x2 or its negative (zero images included)."""
    a, b = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    same = np.all(a[:, None, :] == b[None, :, :], axis=-1)
    opposite = np.all(a[:, None, :] == -b[None, :, :], axis=-1)
    return same | opposite


def _input(name):
    return GOLD[f"inputs/{name}"]


def test_golden_set_covers_the_issue():
    assert len(SPECS) >= 45
    used = set().union(*(make_conv_golden.layer_types(s["layers"]) for s in SPECS))
    assert make_conv_golden.REQUIRED_TYPES <= used
    core = [s for s in SPECS if s["group"] == "core"]
    assert len(core) > len(SPECS) / 2 and SPECS[: len(core)] == core  # core specs first
    convs = [layer for s in SPECS for layer in s["layers"] if layer["type"] == "Conv"]
    assert {c["padding"] for c in convs} == {"SAME", "VALID", "CIRCULAR"}
    assert {c["parameterization"] for c in convs} == {"ntk", "standard"}
    assert {len(c["filter_shape"]) for c in convs} == {1, 2}
    assert any(c["strides"] and max(c["strides"]) == 2 for c in convs)
    assert {s["x2"] is None for s in SPECS} == {True, False}
    assert any(len(s["shape"]) > 2 for s in SPECS)  # spatial outputs
    assert {"myrtle5", "myrtle7_x2null", "myrtle10"} <= {s["name"] for s in SPECS}
    assert len(META["finite"]) == 6


def test_golden_inputs_are_reproducible():
    """The inputs in the .npz are exactly what make_conv_golden.make_inputs() draws today."""
    for name, x in make_conv_golden.make_inputs().items():
        np.testing.assert_array_equal(_input(name), x)
    a, b = _input("img_a"), _input("img_b")
    assert np.array_equal(b[0], a[1]) and np.array_equal(b[1], -a[2])
    assert not np.any(_input("img_zero")[3])


def _same_patches(x, f=3):
    """(n, positions, f*f*C) patches of a SAME, stride-1, f x f convolution (zero padding)."""
    n, h, w, c = x.shape
    p = (f - 1) // 2
    xp = np.pad(x, ((0, 0), (p, f - 1 - p), (p, f - 1 - p), (0, 0)))
    cols = [xp[:, i:i + h, j:j + w, :] for i in range(f) for j in range(f)]
    return np.concatenate(cols, axis=-1).reshape(n, h * w, f * f * c)


def _relu_closed_form(q1, q2, c):
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)] for centred Gaussians (arc-cosine kernels)."""
    s = np.sqrt(q1 * q2)
    theta = np.arccos(np.clip(c / np.where(s > 0, s, 1.0), -1.0, 1.0))
    k0 = (np.pi - theta) / (2 * np.pi)
    return s * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi), k0


def _one_layer_cnn(name, readout):
    """Conv(3x3, SAME) -> Relu -> readout -> Dense, from patches: per position pair (p, p') the
    pre-activation covariance is W^2 <patch_p(x), patch_p'(x')> / (9 C) + b^2; the readout is the
    mean over the diagonal p = p' (Flatten) or over all pairs (GlobalAvgPool)."""
    spec = next(s for s in SPECS if s["name"] == name)
    conv, act, ro, dense = spec["layers"]
    assert (conv["type"], conv["filter_shape"], conv["padding"], act["type"], ro["type"]) == (
        "Conv", [3, 3], "SAME", "Relu", readout)
    x1 = _input(spec["x1"])
    x2 = x1 if spec["x2"] is None else _input(spec["x2"])
    p1, p2 = _same_patches(x1), _same_patches(x2)
    d = p1.shape[-1]
    w2, b2 = conv["W_std"] ** 2, conv["b_std"] ** 2
    q1 = w2 * np.einsum("ipk,ipk->ip", p1, p1) / d + b2  # (n1, P)
    q2 = w2 * np.einsum("jpk,jpk->jp", p2, p2) / d + b2
    if readout == "Flatten":
        c = w2 * np.einsum("ipk,jpk->ijp", p1, p2) / d + b2  # (n1, n2, P)
        k, kdot = _relu_closed_form(q1[:, None, :], q2[None, :, :], c)
        axes = (2,)
    else:
        c = w2 * np.einsum("ipk,jqk->ijpq", p1, p2) / d + b2  # (n1, n2, P, P)
        k, kdot = _relu_closed_form(q1[:, None, :, None], q2[None, :, None, :], c)
        axes = (2, 3)
    # NTK parameterization: the conv's NTK is its NNGP c (input NTK 0), ReLU multiplies it by
    # kdot, and the readout Dense adds its own NNGP: ntk = nngp + W^2 * mean(c * kdot)
    nngp_pre, ntk_pre = k.mean(axes), (c * kdot).mean(axes)
    wd, bd = dense["W_std"] ** 2, dense["b_std"] ** 2
    nngp = wd * nngp_pre + bd
    ntk = nngp + wd * ntk_pre
    aligned = _aligned(x1, x2)
    for what, ours in (("nngp", nngp), ("ntk", ntk)):
        ref = GOLD[f"{name}/{what}"]
        assert ours.shape == ref.shape
        err = np.abs(ours - ref) / np.abs(ref)
        # NT's rho = 1 - eps rounding on identical/opposite images (module comment)
        assert err[~aligned].max() < 1e-12, (what, err[~aligned].max())
        assert err[aligned].max(initial=0) < RTOL_ALIGNED, (what, err[aligned].max())


def test_golden_cnn_gp_flatten_closed_form():
    _one_layer_cnn("cnn_relu_flat_d1", "Flatten")


def test_golden_cnn_gap_closed_form():
    _one_layer_cnn("cnn_relu_gap_d1", "GlobalAvgPool")


def _finite_params(name):
    record = META["finite"][name]
    return [GOLD[f"finite/{name}/param/{i:02d}"] for i in range(len(record["leaves"]))], record


def test_golden_finite_network_layout():
    """NT's finite Conv(3x3, SAME) -> Relu -> GlobalAvgPool -> Dense, redone with numpy from the
    recorded parameters: checks the documented layout (Conv W HWIO, b (1, 1, 1, C); Dense W
    (C_in, C_out), b (1, C_out); NTK parameterization W_std / sqrt(fan_in) * x W + b_std * b)."""
    name = "cnn_relu_gap_d1"
    spec = next(s for s in SPECS if s["name"] == name)
    conv, _, _, dense = spec["layers"]
    (w1, b1, w2, b2), record = _finite_params(name)
    assert [shape for _, shape in record["leaves"]] == [[3, 3, 3, 8], [1, 1, 1, 8], [8, 1], [1, 1]]
    x = _input(record["input"])
    patches = _same_patches(x)  # (n, P, 27) in (kh, kw, c) order = W.reshape(27, C_out)
    h = conv["W_std"] / np.sqrt(27) * patches @ w1.reshape(27, -1) + conv["b_std"] * b1.reshape(1, 1, -1)
    h = np.maximum(h, 0).mean(axis=1)
    out = dense["W_std"] / np.sqrt(h.shape[1]) * h @ w2 + dense["b_std"] * b2
    np.testing.assert_allclose(out, GOLD[f"finite/{name}/out"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", sorted(META["finite"]))
def test_finite_apply_matches_neural_tangents(name):
    """rmtjax's finite network with NT's parameters (same tree layout) gives NT's outputs."""
    import jax
    from rmtjax import stax

    spec = next(s for s in SPECS if s["name"] == name)
    leaves, record = _finite_params(name)
    x = _input(record["input"])
    init_fn, apply_fn, _ = make_conv_golden.build_net(stax, spec)
    _, params = init_fn(jax.random.PRNGKey(record["seed"]), x.shape)
    ours_leaves, treedef = jax.tree_util.tree_flatten(params)
    assert len(ours_leaves) == len(leaves)
    # Same leaves up to size-1 axes: NT's Dense bias is (1, C_out) where rmtjax's Dense keeps
    # (C_out,); both broadcast the same numbers over the batch.
    squeeze = lambda shape: [d for d in shape if d != 1]
    for ours, (path, shape) in zip(ours_leaves, record["leaves"]):
        assert squeeze(np.shape(ours)) == squeeze(shape), (path, np.shape(ours), shape)
    leaves = [np.reshape(v, np.shape(ours)) for v, ours in zip(leaves, ours_leaves)]
    out = np.asarray(apply_fn(jax.tree_util.tree_unflatten(treedef, leaves), x))
    np.testing.assert_allclose(out, GOLD[f"finite/{name}/out"], rtol=1e-12, atol=1e-12)


# Specs where neural-tangents 0.6.5 is the one that is off, and the spec change that reproduces its
# value with rmtjax (so the test still pins both numbers down).
NT_WRONG = {
    # NT's ImageResize kernel resizes the axis pairs in the order (H, H', W, W') even when the kernel
    # it gets is reversed (W, W', H, H'), as after one Conv: it resizes W to 10 and H to 9, while its
    # own apply_fn resizes H to 10 and W to 9 (a square target, as in image_resize_linear_down,
    # hides it). rmtjax follows the finite network (checked by Monte Carlo in
    # tests/test_kernels_conv.py::test_image_resize_monte_carlo); NT's numbers are rmtjax's with the
    # target swapped, to 8e-16.
    "image_resize_nearest_up": lambda spec: _with_resize_shape(spec, [-1, 9, 10, -1]),
}


def _with_resize_shape(spec, shape):
    spec = json.loads(json.dumps(spec))
    for layer in spec["layers"]:
        if layer["type"] == "ImageResize":
            layer["kwargs"]["shape"] = shape
    return spec


@pytest.mark.parametrize("spec", SPECS, ids=[s["name"] for s in SPECS])
def test_matches_neural_tangents(spec):
    from rmtjax import stax

    if spec["name"] in NT_WRONG:
        spec = NT_WRONG[spec["name"]](spec)
    x1 = _input(spec["x1"])
    x2 = None if spec["x2"] is None else _input(spec["x2"])
    _, _, kernel_fn = make_conv_golden.build_net(stax, spec)
    out = kernel_fn(x1, x2, ("nngp", "ntk"), **make_conv_golden.kernel_options(spec))
    arc = bool(make_conv_golden.layer_types(spec["layers"]) & ARC_COSINE)
    aligned = _aligned(x1, x1 if x2 is None else x2)
    for name in ("nngp", "ntk"):
        ours, ref = np.asarray(getattr(out, name)), GOLD[f"{spec['name']}/{name}"]
        # spatial outputs keep NT's layout, spec["layout"] (e.g. reversed after an odd number of Convs)
        assert ours.shape == ref.shape, (name, ours.shape, ref.shape, spec["layout"])
        assert ours.dtype == np.float64
        assert np.all(np.isfinite(ours))
        scale = np.max(np.abs(ref))
        err = np.abs(ours - ref) / np.maximum(np.abs(ref), FLOOR * scale)
        special = np.broadcast_to(aligned.reshape(aligned.shape + (1,) * (ref.ndim - 2)), ref.shape)
        if not arc:
            special = np.zeros_like(special)
        assert err[~special].max(initial=0) < RTOL, (name, err[~special].max(initial=0))
        assert err[special].max(initial=0) < RTOL_ALIGNED, (name, err[special].max(initial=0))
