"""rmtjax.sweep: values against a Python loop over the same points, one compiled program per sweep,
resume (marked chunks skipped, unmarked and interrupted ones recomputed), one device against two,
two processes writing one store against one process, result codes, float32, and bad input."""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
import zarr

import rmtjax
from rmtjax import sweep

AXES = {"sigma_w2": [0.5, 1.0, 2.0], "depth": [1, 2, 3, 4, 5], "seed": [0, 1]}
CHUNK = 5  # blocks of (1, 2, 2) points: 9 chunks, the last along depth padded (1 of 2 depths)


def fn(sigma_w2, depth, seed):
    """Floats, a trailing output dim, integers and booleans; random bits make each point distinct."""
    u = jax.random.uniform(jax.random.key(seed), (3,), dtype=sigma_w2.dtype)
    d = jnp.asarray(depth, sigma_w2.dtype)
    q = jnp.tanh(sigma_w2 * d) + jnp.exp(-sigma_w2) * u[0]
    return {"q": q, "moments": sigma_w2 * u**d, "code": depth % 3, "big": sigma_w2 * d > 2.5}


def loop(f, grid):
    """The reference: one jitted call per point, assembled by hand."""
    jf = jax.jit(f)
    outs = [jf(**p) for p in grid.points()]
    return {k: np.stack([np.asarray(o[k]) for o in outs]).reshape(grid.shape + np.shape(outs[0][k])) for k in outs[0]}


@pytest.fixture(scope="module")
def grid():
    return sweep.Grid(**AXES)


@pytest.fixture(scope="module")
def reference(grid):
    return loop(fn, grid)


@pytest.fixture(scope="module")
def swept(grid):
    traces = []

    def counted(**kw):
        traces.append(1)
        return fn(**kw)

    ds = sweep.run(counted, grid, chunk_size=CHUNK, dims={"moments": ("k",)}, progress=False)
    return ds, len(traces)


def check_against(ds, ref, grid):
    assert tuple(ds.q.dims) == grid.names and tuple(ds.moments.dims) == (*grid.names, "k")
    for name, values in grid.axes.items():
        np.testing.assert_array_equal(ds[name].values, values)
    for k, v in ref.items():
        assert ds[k].dtype == v.dtype, k
        np.testing.assert_allclose(ds[k].values, v, rtol=1e-13, atol=0, err_msg=k)


def test_values_equal_a_python_loop(grid, swept, reference):
    ds, traces = swept
    check_against(ds, reference, grid)
    assert ds.code.dtype.kind == "i" and ds.big.dtype == bool and ds.q.dtype == np.float64
    assert reference["big"].any() and not reference["big"].all()  # both values occur
    # fn is traced twice in memory: output shapes and the one compiled program (the padded last chunks
    # along depth reuse it; a recompile would trace a third time; the fingerprint is for stores only)
    assert traces == 2


def test_a_rerun_reuses_the_compiled_program(grid):
    calls = []

    def counted(**point):
        calls.append(1)
        return fn(**point)

    sweep.run(counted, grid, chunk_size=CHUNK, progress=False)
    first = len(calls)
    sweep.run(counted, grid, chunk_size=CHUNK, progress=False)
    assert len(calls) - first == 1  # the output shapes only: no new compile (it was a new jit per call)


def test_store_resume_skips_marked_and_recomputes_unmarked_chunks(grid, swept, reference, tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    ds = sweep.run(fn, grid, store=store, chunk_size=CHUNK, dims={"moments": ("k",)}, progress=False)
    xr.testing.assert_identical(ds, swept[0])
    on_disk = xr.open_zarr(store, consolidated=False, chunks=None)
    assert on_disk[sweep.DONE].values.tolist() == [1] * 9
    assert on_disk.q.encoding["chunks"] == (1, 2, 2)

    g = zarr.open_group(str(store), mode="r+")
    g["q"][0, 0:2, :] = 999.0  # chunk 0: data spoilt, still marked done -> must be kept (proves the skip)
    g["q"][0, 2:4, :] = -1.0  # chunk 1: spoilt and unmarked -> must be recomputed
    g[sweep.DONE][1] = 0

    written = []
    real = sweep._write_chunk
    monkeypatch.setattr(sweep, "_write_chunk", lambda *a: (written.append(a[2]), real(*a)))
    again = sweep.run(fn, grid, store=store, dims={"moments": ("k",)}, progress=False)  # chunk size from the store
    assert written == [(0, slice(2, 4))]
    np.testing.assert_array_equal(again.q.values[0, 0:2], 999.0)
    np.testing.assert_allclose(again.q.values[0, 2:], reference["q"][0, 2:], rtol=1e-13)


def test_interrupted_run_loses_at_most_one_chunk(grid, reference, tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    real = sweep._write_chunk
    calls = []

    def dies_in_third_chunk(target, names, region, values, count, block, mark):
        calls.append(region)
        if len(calls) == 3:  # killed after writing the first variable of the third chunk, before its mark
            target[names[0]][region] = values[0][:count].reshape(block + values[0].shape[1:])
            raise KeyboardInterrupt
        real(target, names, region, values, count, block, mark)

    monkeypatch.setattr(sweep, "_write_chunk", dies_in_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(fn, grid, store=store, chunk_size=CHUNK, progress=False)
    assert zarr.open_group(str(store), mode="r")[sweep.DONE][:].tolist() == [1, 1] + [0] * 7
    partial = sweep.open_store(store)  # the finished chunks, (0, 0:2) and (0, 2:4), and NaN elsewhere
    assert sweep.DONE not in partial and not partial.attrs
    np.testing.assert_allclose(partial.q.values[0, :4], reference["q"][0, :4], rtol=1e-13)
    assert np.isnan(partial.moments.values[0, 4:]).all() and np.isnan(partial.moments.values[1:]).all()

    calls.clear()
    monkeypatch.setattr(sweep, "_write_chunk", lambda *a: (calls.append(a[2]), real(*a)))
    # resumed on one device (the store does not depend on the device count)
    ds = sweep.run(fn, grid, store=store, chunk_size=CHUNK, devices=jax.local_devices()[:1], progress=False)
    assert len(calls) == 7  # the two finished chunks were not recomputed
    for k, v in reference.items():
        np.testing.assert_allclose(ds[k].values, v, rtol=1e-13, err_msg=k)


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs two host devices (tests/conftest.py sets them)")
def test_two_devices_equal_one(grid, swept):
    one = sweep.run(fn, grid, chunk_size=CHUNK, dims={"moments": ("k",)}, devices=jax.local_devices()[:1],
                    progress=False)
    xr.testing.assert_identical(one, swept[0])


def test_result_codes_and_output_names(tmp_path):
    """A throw=False solve over a grid: its Solution's fields become variables, the result code an integer
    variable that is non-zero exactly where the loop's is."""

    def solve(a, y0):
        return rmtjax.fixed_point(lambda y, a: a * y + 1.0, jnp.asarray(y0), a, max_steps=60, throw=False)

    grid = sweep.Grid(a=[0.25, 0.5, 1.5], y0=[0.0, 1.0])
    ds = sweep.run(solve, grid, store=tmp_path / "s.zarr", progress=False)
    assert sorted(ds.data_vars) == ["residual", "result", "steps", "value"]
    codes = np.array([int(solve(**p).result._value) for p in grid.points()]).reshape(grid.shape)
    assert ds.result.dtype.kind == "i"
    np.testing.assert_array_equal(ds.result.values, codes)
    assert (codes[:2] == 0).all() and (codes[2] != 0).all()
    np.testing.assert_allclose(ds.value.values[:2], 1 / (1 - np.array([[0.25], [0.5]])) * np.ones((2, 2)), rtol=1e-9)

    single = sweep.run(lambda a, y0: {"inner": (a * y0, {"b": a})}, grid, progress=False)
    assert sorted(single.data_vars) == ["inner.0", "inner.1.b"]
    assert list(sweep.run(lambda a, y0: a + y0, grid, progress=False).data_vars) == ["value"]


def test_float32_and_progress_bar(float32_mode, capsys):
    grid = sweep.Grid(sigma_w2=[0.5, 2.0], depth=[1, 2, 3], seed=[3])
    ds = sweep.run(fn, grid, chunk_size=4)
    err = capsys.readouterr().err
    assert "rmtjax.sweep: 100%" in err and "2/2" in err and "<00:00" in err  # chunks done, time left
    ref = loop(fn, grid)
    assert ds.q.dtype == np.float32 and ds.depth.dtype == np.int64  # coordinates as given
    for k, v in ref.items():
        assert ds[k].dtype == v.dtype
        np.testing.assert_allclose(ds[k].values, v, rtol=1e-6, err_msg=k)


@pytest.mark.parametrize("axes, match", [
    (dict(s=[2**40, 2**40 + 1]), r"axis 's': the coordinates \[1099511627776, 1099511627777\] do not fit int32"),
    (dict(a=[1.0, 1.0 + 1e-12]), r"axis 'a': its coordinates \[1.0, 1.000000000001\] are not all distinct in float32"),
    (dict(a=[0.5, 1e-50]), r"axis 'a': the coordinates \[1e-50\] do not fit float32"),
    (dict(a=[1e-40]), r"axis 'a': the coordinates \[1e-40\] do not fit float32"),  # subnormal: flushed to 0
    (dict(a=[1e300]), r"axis 'a': the coordinates \[1e\+300\] do not fit float32"),
])
def test_float32_coordinates_that_the_cast_would_change_are_errors(float32_mode, axes, match, tmp_path):
    """The reproducer of a probe: without x64, 2**40 reached fn as 0 and [1, 1 + 1e-12] as one point,
    labelled with the coordinates as given. Raised before anything is computed or stored."""
    calls = []
    with pytest.raises(ValueError, match=match + r".*enable x64"):
        sweep.run(lambda **k: calls.append(1) or sum(k.values()), sweep.Grid(**axes), store=tmp_path / "s",
                  progress=False)
    assert not calls and not (tmp_path / "s").exists()


TWO_PROCESS_FN = textwrap.dedent("""
    def f(a, n, seed):  # correctly rounded operations only: any compilation gives the same bits
        return {"y": jnp.sqrt(a) / n.astype(a.dtype), "bits": jax.random.bits(jax.random.key(seed), (2,)), "code": n % 2}

    grid = sweep.Grid(a=[0.5, 2.0, 3.0], n=[1, 2, 3], seed=[7, 8])
""")

WORKER = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    port, rank, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=rank, initialization_timeout=60)
    import jax.numpy as jnp
    from rmtjax import sweep
""") + TWO_PROCESS_FN + textwrap.dedent("""
    written = []
    real = sweep._write_chunk
    sweep._write_chunk = lambda *a: (written.append(a[2]), real(*a))
    ds = sweep.run(f, grid, store=store, chunk_size=4, progress=False)
    assert ds.y.shape == (3, 3, 2) and not ds.y.isnull().any()
    print("CHUNKS", len(written), jax.process_count(), jax.local_device_count())
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_write_one_store(tmp_path):
    """Two local CPU processes (jax.distributed, two host devices each) share the chunks of one store; the
    store equals that of a single-process run (this process) value for value."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script), port, str(r), str(tmp_path / "two.zarr")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        ns = {"jax": jax, "jnp": jnp, "sweep": sweep}
        exec(TWO_PROCESS_FN, ns)
        sweep.run(ns["f"], ns["grid"], store=tmp_path / "one.zarr", chunk_size=4, progress=False)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    # grid (3, 3, 2), chunk_size 4: blocks of (1, 2, 2) points, 3 x 2 = 6 chunks, 3 per process
    assert [o.split("CHUNKS")[1].split() for o, _ in outs] == [["3", "2", "2"], ["3", "2", "2"]]
    two = xr.open_zarr(tmp_path / "two.zarr", consolidated=False, chunks=None).load()
    one = xr.open_zarr(tmp_path / "one.zarr", consolidated=False, chunks=None).load()
    xr.testing.assert_identical(two, one)
    assert two.bits.dtype.kind == "u" and two[sweep.DONE].values.tolist() == [1] * 6
    assert two.attrs == one.attrs  # the same fingerprint in both runs


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axes, match", [
    ({}, "at least one axis"),
    ({"width": []}, "axis 'width' must have at least one coordinate"),
    ({"width": [16, 32, 16]}, r"axis 'width' must not repeat a coordinate, got \[16\]"),
    ({"W_std": [1.0, np.nan]}, "axis 'W_std' must not hold NaN"),
    ({"act": ["relu", "tanh"]}, "axis 'act' must hold booleans, integers or real numbers"),
    ({"W_std": [[1.0, 2.0]]}, "axis 'W_std' must be a 1-d sequence"),
    ({"seed": [*range(20), 3]}, r"axis 'seed' must not repeat a coordinate, got \[3\] more than once in "
                                r"\[0, 1, 2, 3, ..., 19, 3\] \(21 values\)"),
])
def test_bad_grid(axes, match):
    with pytest.raises(ValueError, match=match):
        sweep.Grid(**axes)


def test_bad_run_arguments(grid):
    with pytest.raises(ValueError, match="fn does not take the axis 'seed'"):
        sweep.run(lambda sigma_w2, depth: sigma_w2, grid)
    with pytest.raises(ValueError, match="fn requires the argument 'width', which is not an axis"):
        sweep.run(lambda sigma_w2, depth, seed, width: sigma_w2, grid)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        sweep.run(fn, grid, chunk_size=0)
    with pytest.raises(ValueError, match="dims names the variable 'nngp'"):
        sweep.run(fn, grid, dims={"nngp": ("k",)})
    with pytest.raises(ValueError, match=r"dims\['moments'\] must name 1 dimension"):
        sweep.run(fn, grid, dims={"moments": ("k", "l")})
    with pytest.raises(ValueError, match=r"dims\['moments'\] must be a sequence of dimension names"):
        sweep.run(fn, grid, dims={"moments": "k"})
    with pytest.raises(ValueError, match="store must be a sweep's Zarr store"):
        sweep.open_store("/nonexistent/sweep.zarr")
    with pytest.raises(ValueError, match="fn's outputs must have distinct names without '/', got 'a.b'"):
        sweep.run(lambda sigma_w2, depth, seed: {"a.b": depth, "a": {"b": seed}}, grid)
    with pytest.raises(ValueError, match="output 'depth' has the name of an axis"):
        sweep.run(lambda sigma_w2, depth, seed: {"depth": depth}, grid)


def test_store_of_another_grid_is_refused(grid, tmp_path):
    small = sweep.Grid(sigma_w2=[0.5, 1.0], depth=[1, 2], seed=[0])
    store = tmp_path / "s.zarr"
    sweep.run(fn, small, store=store, chunk_size=2, progress=False)
    before = (store / "q" / "zarr.json").read_bytes(), zarr.open_group(str(store))["q"][:]
    cases = [
        (sweep.Grid(sigma_w2=[0.5, 2.0], depth=[1, 2], seed=[0]), {},
         r"another grid: axis 'sigma_w2' has the coordinates \[0.5, 1.0\] there, \[0.5, 2.0\] here"),
        (sweep.Grid(sigma_w2=[0.5, 1.0], depth=[1, 2, 3], seed=[0]), {}, "another grid: axis 'depth'"),
        (sweep.Grid(sigma_w2=[0.5, 1.0], depth=[1.0, 2.0], seed=[0]), {}, "another grid: axis 'depth'"),
        (sweep.Grid(sigma_w2=[0.5, 1.0], depth=[1, 2], width=[0]), {}, "another grid: axis 'width' is not one"),
        (sweep.Grid(depth=[1, 2], sigma_w2=[0.5, 1.0], seed=[0]), {}, "another grid: its axes are in the order"),
        (small, {"chunk_size": 4}, "chunk_size must be the store's, 2"),
        (small, {"dims": {"moments": ("k",)}}, "another function: its variables"),
    ]
    for g, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            sweep.run(lambda **p: fn(**{k: p.get(k, 0) for k in ("sigma_w2", "depth", "seed")}), g, store=store,
                      progress=False, **kw)
    with pytest.raises(ValueError, match="another function .*fingerprint"):
        sweep.run(lambda sigma_w2, depth, seed: {**fn(sigma_w2, depth, seed), "q": 2 * fn(sigma_w2, depth, seed)["q"]},
                  small, store=store, progress=False)
    after = (store / "q" / "zarr.json").read_bytes(), zarr.open_group(str(store))["q"][:]
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])  # nothing was written by the refused runs

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="store must be a folder path"):
        sweep.run(fn, small, store=tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a Zarr store"):
        sweep.run(fn, small, store=tmp_path / "other")
