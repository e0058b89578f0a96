"""Sweeps: a function of named hyperparameters evaluated over a grid, chunk by chunk, into an
``xarray.Dataset`` kept in a Zarr store; resumable, sharded over devices and shared between processes.

:class:`Grid` names the axes and their coordinates; :func:`run` evaluates ``fn(**point)`` at every
point of the grid. ``fn`` is any function JAX can trace: it receives one 0-d array per axis (the
coordinate, as a JAX array of the default dtype: float32 unless x64 is on) and returns an array, a
dictionary of arrays or any pytree of arrays (a :class:`rmtjax.Solution` of a solve with
``throw=False``, a named tuple, an ``equinox`` module).

**How it runs.** The grid's points, in C order (the last axis fastest), are cut into chunks of at
most ``chunk_size`` points: a chunk is a block of the grid that fixes all but the trailing axes
(see *Storage format*). Each chunk is one call of a single compiled program, ``jax.vmap`` of ``fn``
over the chunk's points, with the points spread over ``devices`` (a 1-d ``jax.sharding.Mesh`` with
one axis ``"grid"`` and ``NamedSharding(mesh, P("grid"))`` on every input and output). The
program's batch is the number of points in a full chunk rounded up to a multiple of the number of
devices; a chunk with fewer points (the last one along an axis) is padded by repeating its last
point, whose copies are discarded, so the whole sweep compiles once.

**Output.** A ``Dataset`` with one variable per array leaf of ``fn``'s output, its dimensions the
grid axes (in the grid's order, with the coordinates kept) followed by the output's own dimensions,
named ``dims[var]`` when given and ``<var>_dim0``, ``<var>_dim1``, ... otherwise. Variables are
named by their keys in the output: a dictionary's keys, a module's or named tuple's field names,
a sequence's positions, joined by ``.`` for nested outputs (``"kernel.nngp"``); private fields
(leading ``_``) are left out of the name, so the result code of a ``Solution`` is ``"result"``.
An output that is a single array is named ``"value"``. Integer and boolean outputs keep their
dtype (result codes come through as integer variables).

**Storage format** (``store`` given: a local folder path; Zarr format 3). The store is a Zarr group
that ``xarray`` reads (``xarray.open_zarr(store, consolidated=False)``: its metadata are not
consolidated, which Zarr format 3 does not specify; :func:`open_store` opens it that way):

* one coordinate array per axis, holding the coordinates as given;
* one array per output variable, of shape ``grid.shape + output shape``, filled with NaN
  (floating point), 0 (integers) or False (booleans) until its chunk is written, and chunked like
  the sweep: with the grid's axes ``a_0, ..., a_{k-1}`` and ``chunk_size = C``, the chunk block
  is 1 along the leading axes, ``b`` along one axis ``a_j`` and whole along the axes after it,
  where ``j`` is the first axis whose following axes together hold at most ``C`` points and
  ``b`` is the largest block along ``a_j`` within ``C`` points; each sweep chunk is exactly one Zarr
  chunk of every variable;
* ``_sweep_done``, one byte per chunk (in C order over the chunk blocks): 1 once the chunk's data
  are written in every variable, 0 (absent) before;
* the root attribute ``rmtjax_sweep``: the format (``"rmtjax-sweep/1"``), the axis names, the
  chunk size, the variables (dimensions, shape, dtype) and the function's fingerprint (a hash of
  the program JAX lowers ``fn`` to at one grid point, and of the output names and dimensions).

``run`` returns the dataset read back into memory (``_sweep_done`` and the attribute left out);
for a sweep larger than memory, or one still running, open the store lazily with :func:`open_store`.

**Resume rule.** A chunk counts as done when its ``_sweep_done`` byte is 1. The byte is written
after the chunk's data, and each Zarr chunk is written whole (Zarr's local store writes a
temporary file and renames it, since zarr-python 3.1.3), so a run stopped at any moment (an exception, Ctrl-C, the process
killed) leaves every chunk either marked and complete or unmarked; the rerun computes the unmarked
chunks, overwriting whatever part of them was written, and skips the marked ones. An interrupted
run loses at most the chunk (per process) it was computing. Files are not flushed to disk one by
one (no ``fsync``), so a crash of the machine itself may lose more. Neither the store nor the
resume depends on the devices or the number of processes: a sweep started on two GPUs can be
finished on one CPU, or by more processes. The rerun must describe the same sweep: the same axis names in the same
order, the same coordinates (equal values, the same kind of number), the same chunk size (left
out, it is read from the store) and the same function fingerprint; anything else is a
``ValueError`` that names what differs — a store never holds two grids. A fingerprint also changes
with the dtype mode (x64 on or off) and may change with the JAX version, which then asks for a new
store.

**Several processes.** After ``jax.distributed.initialize``, every process calls ``run`` with the
same arguments and store (a folder all of them can reach); process ``p`` of ``P`` computes the
chunks whose index is ``p`` modulo ``P``, on its own local devices. Process 0 creates the store,
the others validate it after a barrier, and all of them return the whole dataset once every process
has finished. Without a store, a sweep runs in one process only.

Example:
    >>> import tempfile, jax.numpy as jnp
    >>> from rmtjax import sweep
    >>> grid = sweep.Grid(sigma_w2=[1.0, 2.0], depth=[1, 2, 3])
    >>> def f(sigma_w2, depth):
    ...     return {"q": sigma_w2 ** depth, "odd": depth % 2 == 1, "moments": sigma_w2 * jnp.arange(1.0, 3.0)}
    >>> store = tempfile.mkdtemp() + "/phase.zarr"
    >>> ds = sweep.run(f, grid, store=store, chunk_size=4, dims={"moments": ("k",)}, progress=False)
    >>> ds.q.dims, ds.moments.dims, ds.odd.dtype
    (('sigma_w2', 'depth'), ('sigma_w2', 'depth', 'k'), dtype('bool'))
    >>> print(ds.q.sel(sigma_w2=2.0).values)
    [2. 4. 8.]
    >>> sweep.run(f, grid, store=store, dims={"moments": ("k",)}, progress=False).equals(ds)  # all chunks done
    True
    >>> sweep.run(f, sweep.Grid(sigma_w2=[1.0, 3.0], depth=[1, 2, 3]), store=store, progress=False)
    Traceback (most recent call last):
    ...
    ValueError: store ... was written by another grid: axis 'sigma_w2' has the coordinates [1.0, 2.0] there, [1.0, 3.0] here
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import keyword
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import xarray as xr
import zarr
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

__all__ = ["DONE", "FORMAT", "Grid", "open_store", "run"]

FORMAT = "rmtjax-sweep/1"
DONE = "_sweep_done"
_ATTR = "rmtjax_sweep"
_DEFAULT_CHUNK = 256


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


class Grid:
    """A grid over named axes, each with its coordinates (1-d, numbers, no repeats, not empty).

    Points are ordered as a C-ordered array of shape :attr:`shape` (the last axis fastest).

    Args:
        **axes: axis name -> coordinates (a sequence or 1-d array of booleans, integers or reals).

    Raises:
        ValueError: naming the axis: no axes, a name that is not a Python identifier, coordinates
            that are empty, not 1-d, not real numbers, NaN, or repeated.

    Example:
        >>> g = Grid(width=[16, 32], seed=[0, 1, 2])
        >>> g.shape, g.size, g.names
        ((2, 3), 6, ('width', 'seed'))
        >>> next(g.points())
        {'width': 16, 'seed': 0}
    """

    def __init__(self, **axes: Any):
        if not axes:
            raise ValueError("Grid needs at least one axis, got none")
        checked = {}
        for name, values in axes.items():
            if not name.isidentifier() or keyword.iskeyword(name) or name == DONE:
                raise ValueError(f"axis name must be a Python identifier (a keyword argument of fn), got {name!r}")
            v = np.asarray(values)
            if v.ndim != 1:
                raise ValueError(f"axis {name!r} must be a 1-d sequence of coordinates, got shape {v.shape}")
            if v.size == 0:
                raise ValueError(f"axis {name!r} must have at least one coordinate, got an empty axis")
            if v.dtype.kind not in "biuf":
                raise ValueError(f"axis {name!r} must hold booleans, integers or real numbers, got dtype {v.dtype}")
            if v.dtype.kind == "f" and np.isnan(v).any():
                raise ValueError(f"axis {name!r} must not hold NaN, got {_show(v)}")
            uniq, counts = np.unique(v, return_counts=True)
            if (counts > 1).any():
                raise ValueError(f"axis {name!r} must not repeat a coordinate, got {uniq[counts > 1].tolist()} "
                                 f"more than once in {_show(v)}")
            v = v.copy()
            v.flags.writeable = False
            checked[name] = v
        self._axes = checked

    @property
    def axes(self) -> dict[str, np.ndarray]:
        """Axis name -> coordinates (read-only arrays), in the grid's order."""
        return dict(self._axes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(v.size for v in self._axes.values())

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def points(self) -> Iterator[dict[str, Any]]:
        """The points in C order, each a dictionary axis name -> coordinate (a Python number)."""
        for idx in np.ndindex(*self.shape):
            yield {n: v[i].item() for (n, v), i in zip(self._axes.items(), idx, strict=True)}

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v.tolist()!r}" for n, v in self._axes.items())
        return f"Grid({inner})"


# --------------------------------------------------------------------------------------------
# Chunk layout
# --------------------------------------------------------------------------------------------


class _Layout:
    """Chunks of a grid of ``shape``: block 1 along axes ``< j``, ``b`` along axis ``j``, whole after."""

    def __init__(self, shape: tuple[int, ...], chunk_size: int):
        k = len(shape)
        after = [math.prod(shape[i + 1:]) for i in range(k)]  # points after axis i
        j = next(i for i in range(k) if after[i] <= chunk_size)
        self.shape, self.j, self.after = shape, j, after[j]
        self.b = min(shape[j], chunk_size // after[j])
        self.points = self.b * after[j]  # points in a full chunk
        self.grid = shape[:j] + (-(-shape[j] // self.b),)
        self.n = math.prod(self.grid)
        self.block = (1,) * j + (self.b,) + shape[j + 1:]

    def chunk(self, c: int) -> tuple[tuple, np.ndarray]:
        """Chunk ``c``: its region (an index tuple into the grid) and its points' flat indices."""
        idx = np.unravel_index(c, self.grid)
        lead, q = tuple(int(i) for i in idx[:-1]), int(idx[-1])
        lo = q * self.b
        hi = min(lo + self.b, self.shape[self.j])
        first = int(np.ravel_multi_index(lead + (lo,) + (0,) * (len(self.shape) - self.j - 1), self.shape))
        return lead + (slice(lo, hi),), np.arange(first, first + (hi - lo) * self.after)


# --------------------------------------------------------------------------------------------
# Function, outputs, fingerprint
# --------------------------------------------------------------------------------------------


def _check_signature(fn: Callable, grid: Grid) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # not introspectable: the call will tell
        return
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    takes = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in grid.names:
        if name not in takes and not var_kw:
            raise ValueError(f"fn does not take the axis {name!r} (its keyword arguments: {', '.join(takes) or 'none'})")
    for n, p in params.items():
        if (p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and n not in grid.names):
            raise ValueError(f"fn requires the argument {n!r}, which is not an axis of the grid "
                             f"(axes: {', '.join(grid.names)}); bind it first, e.g. with functools.partial")


def _key_name(k: Any) -> str | None:
    if isinstance(k, jax.tree_util.DictKey):
        return str(k.key)
    if isinstance(k, jax.tree_util.GetAttrKey):
        return None if k.name.startswith("_") else k.name
    if isinstance(k, jax.tree_util.SequenceKey):
        return str(k.idx)
    if isinstance(k, jax.tree_util.FlattenedIndexKey):
        return str(k.key)
    return str(k)


def _names(paths: Sequence[tuple]) -> list[str]:
    def name(path, private):
        parts = [str(k.name) if isinstance(k, jax.tree_util.GetAttrKey) and private else _key_name(k) for k in path]
        return ".".join(p for p in parts if p is not None) or "value"

    names = [name(p, False) for p in paths]
    if len(set(names)) != len(names):  # private fields are needed to tell the leaves apart
        names = [name(p, True) for p in paths]
    return names


def _point_specs(grid: Grid, batch: tuple[int, ...] = ()) -> dict[str, jax.ShapeDtypeStruct]:
    return {n: jax.ShapeDtypeStruct(batch, _jax_dtype(v.dtype)) for n, v in grid.axes.items()}


def _jax_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _device_coordinates(grid: Grid) -> list[np.ndarray]:
    """Each axis in the dtype ``fn`` receives (JAX's: 32-bit unless x64 is enabled), checked to
    keep its coordinates: an integer that does not fit, or floats that the narrower type merges,
    turns to 0 or to infinity, would make ``fn`` compute at other points than the labels say."""
    out = []
    for name, v in grid.axes.items():
        t = _jax_dtype(v.dtype)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            c = v.astype(t)
        if np.issubdtype(v.dtype, np.integer):
            lost = c.astype(v.dtype) != v
        elif np.issubdtype(v.dtype, np.floating):
            # subnormals count as lost: XLA flushes them to zero on CPU and GPU
            lost = (np.isinf(c) & ~np.isinf(v)) | ((np.abs(c) < np.finfo(t).tiny) & (v != 0))
            if not lost.any() and np.unique(c).size < np.unique(v).size:
                raise ValueError(f"axis {name!r}: its coordinates {_show(v)} are not all distinct in {t.name} (the "
                                 f"dtype fn receives{'' if t.itemsize == 8 else ' without x64'}): enable x64 "
                                 "(jax.config.update('jax_enable_x64', True)) or space them further apart")
        else:
            lost = np.zeros(v.shape, bool)
        if lost.any():
            raise ValueError(f"axis {name!r}: the coordinates {_show(v[lost])} do not fit {t.name} (the dtype fn "
                             f"receives{'' if t.itemsize == 8 else ' without x64'}): enable x64 "
                             "(jax.config.update('jax_enable_x64', True)) or rescale the axis")
        out.append(c)
    return out


def _show(v: np.ndarray) -> str:
    """Coordinates for a message: all of them when few, else the first and last few."""
    if v.size <= 8:
        return str(v.tolist())
    return f"[{', '.join(map(str, v[:4].tolist()))}, ..., {', '.join(map(str, v[-2:].tolist()))}] ({v.size} values)"


def _fill(dtype: np.dtype) -> Any:
    if dtype.kind in "fc":
        return np.nan
    return False if dtype.kind == "b" else 0


class _Outputs:
    """Names, dims, per-point shapes and dtypes of ``fn``'s outputs."""

    def __init__(self, out_struct: Any, grid: Grid, dims: Mapping[str, Sequence[str]] | None):
        leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(out_struct)
        if not leaves_with_path:
            raise ValueError("fn must return at least one array, got an output with no array leaves")
        self.names = _names([p for p, _ in leaves_with_path])
        for name in self.names:
            if self.names.count(name) > 1 or "/" in name:
                raise ValueError(f"fn's outputs must have distinct names without '/', got {name!r} "
                                 f"(all names: {', '.join(self.names)})")
        self.shapes = [tuple(s.shape[1:]) for _, s in leaves_with_path]
        self.dtypes = [np.dtype(s.dtype) for _, s in leaves_with_path]
        if dims is not None and not isinstance(dims, Mapping):
            raise ValueError(f"dims must be a mapping variable name -> dimension names, got {type(dims).__name__}")
        dims = dict(dims or {})
        for key, value in dims.items():
            if isinstance(value, str) or not all(isinstance(d, str) for d in value):
                raise ValueError(f"dims[{key!r}] must be a sequence of dimension names, got {value!r}")
        for key in dims:
            if key not in self.names:
                raise ValueError(f"dims names the variable {key!r}, which fn does not return "
                                 f"(its variables: {', '.join(self.names)})")
        self.dims, sizes = [], {}
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes, strict=True):
            if name in grid.names or name == DONE:
                raise ValueError(f"fn's output {name!r} has the name of an axis or of {DONE!r}; rename it")
            if dtype.kind not in "biufc":
                raise ValueError(f"fn's output {name!r} must be numbers or booleans, got dtype {dtype}")
            d = tuple(dims.get(name, (f"{name}_dim{i}" for i in range(len(shape)))))
            if len(d) != len(shape):
                raise ValueError(f"dims[{name!r}] must name {len(shape)} dimension(s) (the output's shape is "
                                 f"{shape}), got {d}")
            for dn, size in zip(d, shape, strict=True):
                if dn in grid.names:
                    raise ValueError(f"dims[{name!r}] uses the axis name {dn!r}; output dimensions need names of "
                                     "their own")
                if sizes.setdefault(dn, size) != size:
                    raise ValueError(f"dims: dimension {dn!r} has size {sizes[dn]} in one output and {size} in "
                                     f"{name!r}")
            self.dims.append(d)

    def meta(self) -> dict[str, Any]:
        return {n: {"dims": list(d), "shape": list(s), "dtype": str(t)}
                for n, d, s, t in zip(self.names, self.dims, self.shapes, self.dtypes, strict=True)}


@functools.lru_cache(maxsize=32)
def _program(fn: Callable, devices: tuple):
    """The vmapped, sharded program of ``fn`` over ``devices``, kept across calls of :func:`run`
    (a new ``jax.jit`` per call would compile again every time: measured 0.8 s of a 1.2 s rerun of a
    128-point mean-field sweep); keyed by the function object, so pass the same function to reuse it."""
    mesh = Mesh(np.array(devices), ("grid",))
    sharding = NamedSharding(mesh, PartitionSpec("grid"))

    def point_fn(point):
        return fn(**point)

    return jax.jit(jax.vmap(point_fn), in_shardings=(sharding,), out_shardings=sharding), sharding, point_fn


def _fingerprint(point_fn: Callable, grid: Grid, outputs: _Outputs) -> str:
    text = jax.jit(point_fn).lower(_point_specs(grid)).as_text()
    h = hashlib.sha256(text.encode())
    h.update(json.dumps(outputs.meta(), sort_keys=True).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------


class _Store:
    """The Zarr group of a sweep; created by :meth:`create`, checked by :meth:`check`."""

    def __init__(self, path: Path):
        self.path = path
        self.group = zarr.open_group(str(path), mode="r+", zarr_format=3)

    @staticmethod
    def read_meta(path: Path) -> dict[str, Any] | None:
        """The store's ``rmtjax_sweep`` attribute, ``None`` if there is no store at ``path``."""
        if not path.exists():
            return None
        if not (path / "zarr.json").exists():
            if path.is_dir() and not any(path.iterdir()):
                return None
            raise ValueError(f"store must be a new path or a sweep's Zarr store, got {str(path)!r}, which exists "
                             "and is not a Zarr store")
        try:
            meta = zarr.open_group(str(path), mode="r", zarr_format=3).attrs.get(_ATTR)
        except Exception as err:  # noqa: BLE001 - any reason the group cannot be read
            raise ValueError(f"store {str(path)!r} cannot be read as a Zarr group: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"store {str(path)!r} is a Zarr store but not an {FORMAT} sweep (or its creation was "
                             "interrupted); use another path or remove it")
        return meta

    @classmethod
    def create(cls, path: Path, grid: Grid, layout: _Layout, outputs: _Outputs, meta: dict) -> None:
        g = zarr.open_group(str(path), mode="w", zarr_format=3)
        for name, v in grid.axes.items():
            g.create_array(name, shape=v.shape, dtype=v.dtype, chunks=v.shape, dimension_names=[name])[:] = v
        for name, d, shape, dtype in zip(outputs.names, outputs.dims, outputs.shapes, outputs.dtypes, strict=True):
            g.create_array(name, shape=grid.shape + shape, dtype=dtype, chunks=layout.block + shape,
                           fill_value=_fill(dtype), dimension_names=list(grid.names) + list(d))
        g.create_array(DONE, shape=(layout.n,), dtype="uint8", chunks=(1,), fill_value=0,
                       dimension_names=["_sweep_chunk"])
        g.attrs[_ATTR] = meta  # last: a store with this attribute is complete

    def check(self, grid: Grid, meta: dict) -> None:
        there = self.group.attrs[_ATTR]
        where = f"store {str(self.path)!r} was written by another grid"
        if there["axes"] != list(grid.names):
            for name in grid.names:
                if name not in there["axes"]:
                    raise ValueError(f"{where}: axis {name!r} is not one of its axes ({', '.join(there['axes'])})")
            for name in there["axes"]:
                if name not in grid.names:
                    raise ValueError(f"{where}: its axis {name!r} is missing here")
            raise ValueError(f"{where}: its axes are in the order {', '.join(there['axes'])}, here "
                             f"{', '.join(grid.names)}")
        for name, v in grid.axes.items():
            old = self.group[name][:]
            if old.shape != v.shape or old.dtype.kind != v.dtype.kind or not np.array_equal(old, v):
                raise ValueError(f"{where}: axis {name!r} has the coordinates {_show(old)} there, {_show(v)} here")
        if there["chunk_size"] != meta["chunk_size"]:
            raise ValueError(f"chunk_size must be the store's, {there['chunk_size']}, to resume it, got "
                             f"{meta['chunk_size']}")
        if there["variables"] != meta["variables"]:
            raise ValueError(f"store {str(self.path)!r} was written by another function: its variables are "
                             f"{there['variables']}, here {meta['variables']}")
        if there["fingerprint"] != meta["fingerprint"]:
            raise ValueError(f"store {str(self.path)!r} was written by another function (or in another dtype mode "
                             f"or JAX version): fingerprint {there['fingerprint']} there, {meta['fingerprint']} here; "
                             "use a new store")

    def done(self) -> np.ndarray:
        return self.group[DONE][:].astype(bool)


def open_store(store: str | os.PathLike) -> xr.Dataset:
    """The dataset of a sweep's store, opened lazily (values are read when used), without the
    bookkeeping (``_sweep_done`` and the ``rmtjax_sweep`` attribute). A store whose sweep is unfinished
    opens too: its unwritten points hold NaN (floating point), 0 (integers) or False (booleans).

    Raises:
        ValueError: ``store`` is not a sweep's store.
    """
    path = Path(store)
    if _Store.read_meta(path) is None:
        raise ValueError(f"store must be a sweep's Zarr store, got {str(path)!r}, which does not exist or is empty")
    ds = xr.open_zarr(str(path), consolidated=False, chunks=None).drop_vars(DONE)
    ds.attrs = {}
    return ds


def _write_chunk(target: Any, names: Sequence[str], region: tuple, values: Sequence[np.ndarray],
                 count: int, block: tuple[int, ...], mark: Callable[[], None] | None) -> None:
    """Writes one chunk's values (the first ``count`` points of each) into ``target`` (the Zarr group,
    or a dict of NumPy arrays), then marks it done."""
    for name, v in zip(names, values, strict=True):
        data = v[:count].reshape(block + v.shape[1:])
        target[name][region] = data
    if mark is not None:
        mark()


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


def run(fn: Callable[..., Any], grid: Grid, *, store: str | os.PathLike | None = None, chunk_size: int | None = None,
        dims: Mapping[str, Sequence[str]] | None = None, devices: Sequence[jax.Device] | None = None,
        progress: bool = True) -> xr.Dataset:
    """Evaluates ``fn(**point)`` at every point of ``grid``, vmapped chunk by chunk, sharded over
    ``devices``; stored in ``store`` and resumed from it when given (see the module docstring for the
    storage format and the resume rule).

    Args:
        fn: a function JAX can trace, taking every axis of ``grid`` as a keyword argument (each a 0-d
            array) and returning an array or a pytree of arrays.
        grid: the :class:`Grid`.
        store: a local folder for the Zarr store: created if absent, resumed if it holds this sweep.
            ``None``: results in memory only (no resume; one process).
        chunk_size: the most grid points per chunk (one compiled program evaluates a chunk). Default:
            the store's when resuming, else 256.
        dims: variable name -> names of its output dimensions (default ``<var>_dim0``, ...).
        devices: the devices the points of a chunk are spread over. Default: this process's
            ``jax.local_devices()``.
        progress: show a ``tqdm`` progress bar (chunks done, time left) on stderr.

    Returns:
        An ``xarray.Dataset``: one variable per output leaf, dimensions the grid axes (coordinates
        kept) then the output dimensions.

    Raises:
        ValueError: naming the axis or argument: ``fn`` does not take an axis or needs an argument that
            is not one, a bad ``chunk_size``/``dims``/``devices``/``store``, a store written by another
            grid, chunk size or function, several processes without a store.
    """
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a rmtjax.sweep.Grid, got {type(grid).__name__}")
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    _check_signature(fn, grid)
    coords = _device_coordinates(grid)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device, got none")
    local = set(jax.local_devices())
    for d in devices:
        if d not in local:
            raise ValueError(f"devices must be devices of this process (jax.local_devices()), got {d}")
    nproc, rank = jax.process_count(), jax.process_index()
    if store is None and nproc > 1:
        raise ValueError(f"store must be given when running on {nproc} processes (each writes its chunks there)")

    path = None if store is None else Path(store)
    if path is not None and path.exists() and not path.is_dir():
        raise ValueError(f"store must be a folder path, got {str(path)!r}, which is a file")
    if path is not None and rank != 0:
        _barrier("rmtjax.sweep: store ready")  # process 0 creates or checks the store first
    meta_there = None if path is None else _Store.read_meta(path)
    if chunk_size is None:
        chunk_size = meta_there["chunk_size"] if meta_there else min(_DEFAULT_CHUNK, grid.size)
    chunk_size = int(chunk_size)

    layout = _Layout(grid.shape, chunk_size)
    ndev = len(devices)
    batch = -(-layout.points // ndev) * ndev

    try:
        hash(fn)
        program, sharding, point_fn = _program(fn, tuple(devices))
    except TypeError:  # an unhashable callable: a program of its own
        program, sharding, point_fn = _program.__wrapped__(fn, tuple(devices))
    outputs = _Outputs(jax.eval_shape(jax.vmap(point_fn), _point_specs(grid, (batch,))), grid, dims)
    meta = {"format": FORMAT, "axes": list(grid.names), "chunk_size": chunk_size, "variables": outputs.meta(),
            "fingerprint": _fingerprint(point_fn, grid, outputs) if path is not None else None}

    st = None
    if path is not None:
        try:
            if meta_there is None:
                if rank != 0:
                    raise ValueError(f"store {str(path)!r} was not created by process 0")
                _Store.create(path, grid, layout, outputs, meta)
            st = _Store(path)
            st.check(grid, meta)
        finally:
            if rank == 0:
                _barrier("rmtjax.sweep: store ready")
        done = st.done()
        target: Any = st.group
    else:
        done = np.zeros(layout.n, bool)
        target = {n: np.full(grid.shape + s, _fill(t), t)
                  for n, s, t in zip(outputs.names, outputs.shapes, outputs.dtypes, strict=True)}

    def compute(c):
        region, flat = layout.chunk(c)
        padded = np.concatenate([flat, np.full(batch - flat.size, flat[-1])])
        idx = np.unravel_index(padded, grid.shape)
        point = {n: jax.device_put(v[i], sharding) for n, v, i in zip(grid.names, coords, idx, strict=True)}
        values = [np.asarray(v) for v in jax.tree_util.tree_leaves(program(point))]
        return region, flat.size, values

    mine = [c for c in range(layout.n) if c % nproc == rank]
    todo = [c for c in mine if not done[c]]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="chunk", disable=not progress,
               desc="rmtjax.sweep" + (f" [process {rank}/{nproc}]" if nproc > 1 else ""))
    try:
        for c in todo:
            region, count, values = compute(c)
            mark = None if st is None else (lambda c=c: st.group[DONE].__setitem__(c, 1))
            _write_chunk(target, outputs.names, region, values, count,
                         (region[-1].stop - region[-1].start,) + grid.shape[layout.j + 1:], mark)
            bar.update(1)
    finally:
        bar.close()

    if st is None:
        data = target
    else:
        _barrier("rmtjax.sweep: all chunks written")
        missing = np.flatnonzero(~st.done())
        if missing.size:
            raise RuntimeError(f"store {str(path)!r}: chunks {missing[:10].tolist()} were not written (did another "
                               "process fail?); rerun to complete them")
        return open_store(path).load()
    return xr.Dataset({n: (grid.names + d, data[n]) for n, d in zip(outputs.names, outputs.dims, strict=True)},
                      coords={n: (n, np.asarray(v)) for n, v in grid.axes.items()})
