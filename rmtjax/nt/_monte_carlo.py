r"""``monte_carlo_kernel_fn``: NNGP and NTK averaged over random initialisations
(``neural_tangents.monte_carlo_kernel_fn``)."""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable, Iterable

import jax
import numpy as np

from .._validate import ArgumentError, get_names, prng_key
from ._batching import batch
from ._empirical import NtkImplementation, empirical_kernel_fn

__all__ = ["monte_carlo_kernel_fn"]


def _n_samples(n_samples) -> tuple[tuple[int, ...], bool]:
    """The sample counts to report and whether the result is a generator (an iterable was given)."""
    def ok(n):
        return isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and n >= 1

    if isinstance(n_samples, (int, np.integer)) and not isinstance(n_samples, (bool, np.bool_)):
        if not ok(n_samples):
            raise ArgumentError(f"n_samples must be a positive integer or an iterable of them, got {n_samples!r}")
        return (int(n_samples),), False
    if isinstance(n_samples, Iterable) and not isinstance(n_samples, (str, bytes)):
        ns = list(n_samples)
        if not ns or not all(ok(n) for n in ns):
            raise ArgumentError(f"n_samples must be a positive integer or a non-empty iterable of them, got "
                                f"{n_samples!r}")
        return tuple(sorted({int(n) for n in ns})), True
    raise ArgumentError(f"n_samples must be a positive integer or an iterable of them, got {n_samples!r}")


def _takes_rng(fn) -> bool:
    """Whether ``fn`` accepts an ``rng`` keyword (a parameter of that name, or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "rng" or p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


def monte_carlo_kernel_fn(
    init_fn: Callable,
    apply_fn: Callable,
    key,
    n_samples: int | Iterable[int],
    batch_size: int = 0,
    device_count: int = -1,
    store_on_device: bool = True,
    trace_axes=(-1,),
    diagonal_axes=(),
    vmap_axes=None,
    implementation: NtkImplementation | int = NtkImplementation.JACOBIAN_CONTRACTION,
) -> Callable:
    r"""Monte-Carlo NNGP and NTK of the network ``(init_fn, apply_fn)``
    (``neural_tangents.monte_carlo_kernel_fn``):

    .. math::
        \bar K_S(x_1, x_2) = \frac1S\sum_{s=1}^{S}\hat K(x_1, x_2; \theta_s),\qquad
        \theta_s = \mathrm{init\_fn}(k_s, \mathrm{shape}(x_1)),

    the empirical kernels of :func:`empirical_kernel_fn` averaged over ``S`` initialisations; as
    the widths grow :math:`\mathbb E\,\bar K_S` tends to the infinite-width kernel of
    ``kernel_fn`` and its spread to zero like :math:`S^{-1/2}`. The keys follow
    neural-tangents: ``key, k = split(key)`` per sample, and ``init_key, dropout_key = split(k)``
    feed ``init_fn`` and ``apply_fn`` — so an ``init_fn`` that draws the same numbers as in neural-tangents (e.g. one
    written with ``jax.random.normal``, under the same ``jax_threefry_partitionable`` setting)
    gets the same parameters. (``rmtjax.stax``'s ``init_fn`` draws differently from
    neural-tangents' own, so estimates of the same network agree only within Monte-Carlo error.)

    Args:
        init_fn: ``init_fn(key, input_shape) -> (output_shape, params)`` (e.g. from
            :mod:`rmtjax.stax`).
        apply_fn: ``apply_fn(params, x)``.
        key: a PRNG key (``jax.random.key`` or ``jax.random.PRNGKey``).
        n_samples: ``S >= 1``, or an iterable of sample counts: then ``kernel_fn`` returns a
            generator of the estimates after each count, in increasing order.
        batch_size, device_count, store_on_device: as in :func:`batch` (each sample's kernel is
            computed in blocks, with the same parameters in every block).
        trace_axes, diagonal_axes, vmap_axes, implementation: as in :func:`empirical_ntk_fn`.

    Returns:
        ``kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs)``: ``get`` as in
        :func:`empirical_kernel_fn` (a named tuple ``MonteCarloKernel`` for a tuple or ``None``).
        Each sample's second key goes to ``apply_fn`` as ``rng=`` (split between ``x1`` and ``x2``
        as in :func:`empirical_ntk_fn`: dropout) as in neural-tangents — but only when
        ``apply_fn`` takes an ``rng`` keyword or ``**kwargs``, so a plain ``apply_fn(params, x)``
        works too (neural-tangents would fail on it).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax import nt, stax
        >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(1))
        >>> mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), 4)
        >>> mc(jnp.ones((3, 2)), None, "ntk").shape
        (3, 3)
    """
    if not callable(init_fn):
        raise ArgumentError(f"init_fn must be a function init_fn(key, input_shape), got {type(init_fn).__name__}")
    key = prng_key(key, "key")
    counts, generator = _n_samples(n_samples)
    kernel_fn = empirical_kernel_fn(apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation)

    def _init(init_key, x1):
        shape = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), x1)
        try:
            return init_fn(init_key, shape)[1]
        except Exception as e:  # noqa: BLE001
            raise ArgumentError(f"init_fn(key, input_shape) failed for input_shape {shape}: {type(e).__name__}: "
                                f"{e}") from None

    takes_rng = _takes_rng(apply_fn)

    def sample_once(x1, x2, sample_key, get, **apply_fn_kwargs):
        init_key, dropout_key = jax.random.split(sample_key)
        if takes_rng:
            apply_fn_kwargs = {"rng": dropout_key, **apply_fn_kwargs}
        return kernel_fn(x1, x2, get, _init(init_key, x1), **apply_fn_kwargs)

    one = batch(sample_once, batch_size, device_count, store_on_device)

    def estimates(x1, x2, get, names, apply_fn_kwargs):
        get_t = get if isinstance(get, str) else tuple(names)
        k, total = key, None
        for n in range(1, counts[-1] + 1):
            k, sub = jax.random.split(k)
            s = one(x1, x2, sub, get_t, **apply_fn_kwargs)
            total = s if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, s)
            if n in counts:
                mean = jax.tree_util.tree_map(lambda a, n=n: a / n, total)
                if isinstance(get, str):
                    yield mean
                else:  # EmpiricalKernel named tuples (one per output leaf) renamed
                    mc_type = collections.namedtuple("MonteCarloKernel", names)
                    yield jax.tree_util.tree_map(lambda k: mc_type(*k), mean,
                                                 is_leaf=lambda v: isinstance(v, tuple) and hasattr(v, "_fields"))

    def mc_kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
        names = get_names(get, ("nngp", "ntk"))
        it = estimates(x1, x2, get, names, apply_fn_kwargs)
        if generator:
            return it
        return next(iter(it))

    return mc_kernel_fn
