r"""``batch``: a kernel computed block by block over its rows and columns (``neural_tangents.batch``)."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validate import ArgumentError, flag, reraise_as_value_error, static_int
from ..kernels.stax import KernelFn

__all__ = ["batch"]


def _rows(x, name: str) -> int:
    """The number of examples of ``x`` (an array or a pytree of arrays sharing a leading axis)."""
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves or not all(hasattr(a, "shape") or isinstance(a, (list, tuple, np.ndarray)) for a in leaves):
        raise ArgumentError(f"{name} must be an array of examples (n, ...) or a pytree of them, got "
                            f"{type(x).__name__}")
    shapes = [np.shape(a) for a in leaves]
    if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ArgumentError(f"{name} must have a leading example axis shared by all its arrays, got shapes {shapes}")
    if shapes[0][0] == 0:
        raise ArgumentError(f"{name} must hold at least one example, got shape {shapes[0]}")
    return shapes[0][0]


def _slice(x, start: int, stop: int):
    return jax.tree_util.tree_map(lambda a: a[start:stop], x)


def _put(tree, device):
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, device) if isinstance(a, (jax.Array, np.ndarray))
                                  else a, tree)


def _last_key(path) -> str | None:
    if not path:
        return None
    k = path[-1]
    return getattr(k, "name", None) or getattr(k, "key", None)


def _assemble(blocks: list[list], rows: list[int], cols: list[int], host: bool):
    """One output from the grid ``blocks[i][j]`` (pytrees of the same structure): leaves named
    ``cov1`` depend on the rows only, ``cov2`` on the columns only; every other leaf has leading
    axes ``(rows[i], cols[j])``."""
    cat = np.concatenate if host else jnp.concatenate
    flat = [[jax.tree_util.tree_flatten_with_path(b) for b in row] for row in blocks]
    paths_leaves, treedef = flat[0][0]
    out = []
    for li, (path, _) in enumerate(paths_leaves):
        leaf = lambda i, j: flat[i][j][0][li][1]  # noqa: E731
        name = _last_key(path)
        if leaf(0, 0) is None:
            out.append(None)
        elif name == "cov1":
            out.append(cat([leaf(i, 0) for i in range(len(rows))], axis=0))
        elif name == "cov2":
            out.append(cat([leaf(0, j) for j in range(len(cols))], axis=0))
        else:
            for i, r in enumerate(rows):
                for j, c in enumerate(cols):
                    s = np.shape(leaf(i, j))
                    if len(s) < 2 or s[:2] != (r, c):
                        raise ArgumentError(
                            f"kernel_fn: batch needs outputs with leading axes (rows of x1, rows of x2); a block of "
                            f"{r} x {c} examples returned shape {s} at {jax.tree_util.keystr(path)} (a kernel with "
                            "diagonal_axes=(0,) cannot be batched; compute it without batch)")
            out.append(cat([cat([leaf(i, j) for j in range(len(cols))], axis=1) for i in range(len(rows))], axis=0))
    return jax.tree_util.tree_unflatten(treedef, out)


def _to_host(tree):
    cpu = jax.devices("cpu")[0]
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, cpu) if isinstance(a, (jax.Array, np.ndarray)) else a,
                                  tree)


def batch(kernel_fn: Callable, batch_size: int = 0, device_count: int = -1, store_on_device: bool = True) -> Callable:
    r"""``kernel_fn`` computed in blocks of ``batch_size`` rows and columns, spread over host
    devices (``neural_tangents.batch``).

    For ``kernel_fn(x1, x2, *args, **kwargs)`` returning kernels with leading axes
    ``(n1, n2)`` (an array, a named tuple or any pytree of them), the batched function computes
    each block :math:`K[I, J] = \mathrm{kernel\_fn}(x_1[I], x_2[J])` for consecutive index blocks
    :math:`I, J` of ``batch_size`` examples and assembles them; leaves named ``cov1`` (``cov2``)
    are taken from the first block column (row), as they depend on ``x1`` (``x2``) only.
    ``x2=None`` computes the blocks of ``x2 = x1``. ``kernel_fn`` is compiled once per block shape
    (``equinox.filter_jit``: arrays traced, other arguments static).

    More lenient than neural-tangents: ``n1`` and ``n2`` need not be multiples of ``batch_size``
    (or of ``device_count``): the last block row and column are smaller (one more compiled
    program), where neural-tangents reduces ``batch_size`` to a divisor of both with a warning or
    raises. Keyword arguments go to every block unchanged (neural-tangents splits an ``rng`` key
    and ``(kw1, kw2)`` tuples per block). Kernels that do not have leading ``(n1, n2)`` axes
    (``diagonal_axes=(0,)``) raise a ``ValueError`` (neural-tangents fails there too). The form
    ``kernel_fn(kernel_in)`` of neural-tangents' layer kernels (a ``Kernel`` object in place of
    ``x1``) is not supported.

    An rmtjax :mod:`rmtjax.stax` ``kernel_fn`` is returned as it is (called unchanged): its engine
    already tiles the kernel and never holds more than a tile of intermediates; blocks would only
    lose its exact identical-input rule on the diagonal.

    Args:
        kernel_fn: ``kernel_fn(x1, x2, *args, **kwargs)``; ``x1``, ``x2`` arrays ``(n, ...)`` or
            pytrees of them sharing the leading axis.
        batch_size: ``>= 0``; ``0``: no blocks (one call, or one block row per device).
        device_count: ``-1`` (every local device), ``0`` (the default device only) or a number of
            local devices; block ``k`` (row-major) runs on device ``k mod device_count``.
        store_on_device: ``False`` gathers the blocks in host memory (NumPy) and returns arrays
            on the CPU device.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax import nt
        >>> kernel_fn = nt.empirical_kernel_fn(lambda p, x: jnp.tanh(x @ p))
        >>> batched = nt.batch(kernel_fn, batch_size=2)
        >>> x = jnp.linspace(-1, 1, 10).reshape(5, 2)
        >>> bool(jnp.allclose(batched(x, None, "ntk", jnp.ones((2, 3))), kernel_fn(x, None, "ntk", jnp.ones((2, 3)))))
        True
    """
    if not callable(kernel_fn):
        raise ArgumentError(f"kernel_fn must be a function kernel_fn(x1, x2, ...), got {type(kernel_fn).__name__}")
    batch_size = static_int(batch_size, "batch_size", lo=0)
    n_local = jax.local_device_count()
    device_count = static_int(device_count, "device_count", lo=-1, hi=n_local)
    store_on_device = flag(store_on_device, "store_on_device")
    devices = jax.local_devices()[: (n_local if device_count == -1 else max(device_count, 1))]

    if isinstance(kernel_fn, KernelFn):
        def batched_engine(x1, x2=None, *args, **kwargs):
            out = kernel_fn(x1, x2, *args, **kwargs)
            return out if store_on_device else _to_host(out)

        batched_engine.__doc__ = kernel_fn.__doc__
        return batched_engine

    compiled = reraise_as_value_error(eqx.filter_jit(kernel_fn))

    def call(device, x1, x2, args, kwargs):
        if len(devices) > 1:
            x1, x2, args, kwargs = _put((x1, x2, args, kwargs), device)
        out = compiled(x1, x2, *args, **kwargs)
        return jax.tree_util.tree_map(np.asarray, out) if not store_on_device else out

    def batched(x1, x2=None, *args, **kwargs):
        if batch_size == 0 and len(devices) == 1:  # one call: x1, x2 need no shared example axis
            out = compiled(x1, x2, *args, **kwargs)
            return out if store_on_device else _to_host(out)
        n1 = _rows(x1, "x1")
        x2_full = x1 if x2 is None else x2
        n2 = _rows(x2_full, "x2")
        if batch_size == 0:  # one block row per device
            edges = np.linspace(0, n1, min(len(devices), n1) + 1).round().astype(int)
            row_blocks = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
            col_blocks = [(0, n2)]
        else:
            row_blocks = [(s, min(s + batch_size, n1)) for s in range(0, n1, batch_size)]
            col_blocks = [(s, min(s + batch_size, n2)) for s in range(0, n2, batch_size)]
        blocks, k = [], 0
        for r0, r1 in row_blocks:
            row = []
            for c0, c1 in col_blocks:
                xb2 = None if (batch_size == 0 and x2 is None and len(row_blocks) == 1) else _slice(x2_full, c0, c1)
                row.append(call(devices[k % len(devices)], _slice(x1, r0, r1), xb2, args, kwargs))
                k += 1
            blocks.append(row)
        if store_on_device and len(devices) > 1:
            blocks = [[_put(b, devices[0]) for b in row] for row in blocks]
        out = _assemble(blocks, [b - a for a, b in row_blocks], [b - a for a, b in col_blocks], not store_on_device)
        return out if store_on_device else _to_host(out)

    batched.__doc__ = getattr(kernel_fn, "__doc__", None)
    return batched
