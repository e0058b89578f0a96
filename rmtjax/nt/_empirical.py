r"""Empirical kernels, linearization and Taylor expansion of any ``f(params, x)``, with
neural-tangents' signatures and output layout (``neural_tangents.empirical_*``).

For a function :math:`f(\theta, x)` with outputs of shape :math:`(s_1, \dots, s_m)` and
parameters :math:`\theta` (any pytree of arrays), the empirical kernels of two inputs are

.. math::
    \hat K_{a b}(x_1, x_2) = \frac{1}{|T|}\sum_{t \in T} f_{a t}(\theta, x_1)\, f_{b t}(\theta, x_2),
    \qquad
    \hat\Theta_{a b}(x_1, x_2) = \frac{1}{|T|}\sum_{t \in T}\sum_{p}
        \frac{\partial f_{a t}(\theta, x_1)}{\partial\theta_p}
        \frac{\partial f_{b t}(\theta, x_2)}{\partial\theta_p},

the NNGP sample (Lee et al. 2018) and the NTK, :math:`J_1 J_2^\top` summed over every parameter
leaf (Jacot et al. 2018, eq. 3), where ``trace_axes`` :math:`T` are output axes summed over in
pairs and divided by their size, ``diagonal_axes`` are output axes of which only the diagonal
:math:`a_i = b_i` is kept (once), and every other output axis appears twice. The result has
neural-tangents' "zipped" layout: for outputs ``(N, K)``, ``trace_axes=()`` gives
``(N1, N2, K, K)``, ``trace_axes=(-1,)`` gives ``(N1, N2)``, ``diagonal_axes=(0,)`` with
``trace_axes=(-1,)`` gives ``(N,)``, ``diagonal_axes=(-1,)`` with ``trace_axes=()`` gives
``(N1, N2, K)``. A pytree output gives a pytree of kernels, one per output leaf (no cross terms).

Formulas of :func:`linearize` and :func:`taylor_expand`: with :math:`\delta = \theta - \theta_0`,

.. math::
    f_{\mathrm{lin}}(\theta, x) = f(\theta_0, x) + J(\theta_0, x)\,\delta, \qquad
    f_{\mathrm{taylor}}(\theta, x) = \sum_{k=0}^{d} \frac{1}{k!}\,
        D^k_\theta f(\theta_0, x)[\delta, \dots, \delta],

each directional derivative a nested ``jax.jvp``.
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validate import ArgumentError, error_if, get_names, static_int

__all__ = ["NtkImplementation", "empirical_kernel_fn", "empirical_nngp_fn", "empirical_ntk_fn", "empirical_ntk_vp_fn",
           "linearize", "taylor_expand"]


class NtkImplementation(enum.IntEnum):
    """neural-tangents' NTK implementations (``nt.NtkImplementation``), with what rmtjax runs for each.

    Attributes:
        AUTO: ``0``; rmtjax runs :attr:`JACOBIAN_CONTRACTION` (neural-tangents chooses by a FLOP
            count, which it documents as unreliable off TPU).
        JACOBIAN_CONTRACTION: ``1`` (the default): the Jacobians :math:`\\partial f/\\partial
            \\theta` of both inputs by reverse mode (per example with ``vmap_axes``), contracted
            over the parameters.
        NTK_VECTOR_PRODUCTS: ``2``: no Jacobian is stored; each column of the full kernel is one
            VJP of ``f(., x2)`` and one JVP of ``f(., x1)`` (``jax.lax.map`` over the columns,
            64 at a time), then traced and diagonalised (``vmap_axes`` is not used).
        STRUCTURED_DERIVATIVES: ``3``; rmtjax runs :attr:`JACOBIAN_CONTRACTION` (the same values to
            rounding; neural-tangents' structured-derivative interpreter walks JAX internals,
            which rmtjax does not use).
    """

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


def _check_f(f, name: str = "f") -> Callable:
    if not callable(f):
        raise ArgumentError(f"{name} must be a function {name}(params, x), got {type(f).__name__}")
    return f


def _axes(axes, name: str) -> tuple[int, ...]:
    """``trace_axes`` / ``diagonal_axes``: an int or a sequence of distinct ints."""
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, (bool, np.bool_)):
        return (int(axes),)
    if isinstance(axes, (tuple, list)) and all(
            isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in axes):
        return tuple(int(a) for a in axes)
    raise ArgumentError(f"{name} must be an int or a tuple of ints (output axes), got {axes!r}")


def _implementation(implementation) -> NtkImplementation:
    try:
        if isinstance(implementation, (bool, np.bool_)):
            raise ValueError
        return NtkImplementation(implementation)
    except ValueError:
        raise ArgumentError(f"implementation must be an NtkImplementation or one of 0, 1, 2, 3, got "
                            f"{implementation!r}") from None


def _vmap_axes(vmap_axes):
    """``(in_axes, out_axes)`` from neural-tangents' ``vmap_axes`` (``None``, an int, or a triple
    ``(in_axes, out_axes, kwargs_axes)``)."""
    if vmap_axes is None:
        return None
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        in_axes, out_axes, kw_axes = vmap_axes
        if kw_axes not in (None, {}):
            raise ArgumentError(f"vmap_axes: kwargs_axes (the third entry) is not supported by rmtjax.nt (keyword "
                                f"arguments of f are passed unbatched), got {kw_axes!r}")
    else:
        in_axes = out_axes = vmap_axes
    for v, what in ((in_axes, "in_axes"), (out_axes, "out_axes")):
        for leaf in jax.tree_util.tree_leaves(v):
            if not isinstance(leaf, (int, np.integer)) or isinstance(leaf, (bool, np.bool_)):
                raise ArgumentError(f"vmap_axes: {what} must be an int, None or a pytree of them, got {v!r}")
    return in_axes, out_axes


def _array_leaves(tree, name: str):
    """Every leaf of ``tree`` as a non-empty real floating (or integer) array with finite entries
    (``ValueError`` naming ``name`` otherwise; compiled in with ``error_if`` when traced)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if not leaves:
        raise ArgumentError(f"{name} must hold at least one array, got {tree!r}")
    out = []
    for leaf in leaves:
        try:
            a = jnp.asarray(leaf)
        except TypeError:
            raise ArgumentError(f"{name} must be an array or a pytree of arrays, got a leaf of type "
                                f"{type(leaf).__name__}") from None
        if jnp.issubdtype(a.dtype, jnp.complexfloating) or a.dtype == jnp.bool_ or not (
                jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)):
            raise ArgumentError(f"{name} must hold real arrays, got dtype {a.dtype}")
        if a.size == 0:  # (rmtjax's rule: empty arrays are errors)
            raise ArgumentError(f"{name} must not hold empty arrays, got shape {a.shape}")
        if jnp.issubdtype(a.dtype, jnp.floating):
            a = error_if(a, ~jnp.all(jnp.isfinite(a)), f"{name} must be finite (it holds NaN or inf)")
        out.append(a)
    return jax.tree_util.tree_unflatten(treedef, out)


def _finite(out, fn: str):
    """``out`` if every entry is finite, else ``ValueError`` (``error_if`` when traced)."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(out)]
    if not leaves:
        return out
    return error_if(out, ~jnp.all(jnp.stack(leaves)), f"{fn}: the kernel is not finite: f(params, x) or its "
                    "derivatives overflow (x1, x2 and params are finite)")


def _inputs(x1, x2, params):
    x1 = _array_leaves(x1, "x1")
    x2 = None if x2 is None else _array_leaves(x2, "x2")
    params = _array_leaves(params, "params")
    return x1, x2, params


def _output_shapes(f, params, x, name, kwargs):
    try:
        return jax.eval_shape(lambda p, x: f(p, x, **kwargs), params, x)
    except Exception as e:  # noqa: BLE001 - params that do not fit f, x of the wrong shape
        raise ArgumentError(f"f(params, {name}) cannot be evaluated for {name} of shape "
                            f"{jax.tree_util.tree_map(jnp.shape, x)}: {type(e).__name__}: {e}") from None


def _canonical(axes: tuple[int, ...], ndim: int, name: str) -> tuple[int, ...]:
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ArgumentError(f"{name} must be output axes in [-{ndim}, {ndim}) (f returns {ndim}-d outputs), "
                                f"got {a}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ArgumentError(f"{name} must be distinct axes, got {axes}")
    return tuple(sorted(out))


def _layout(shape1, shape2, trace_axes, diagonal_axes):
    """Canonical axes and the einsum labels of the kernel of outputs ``shape1``, ``shape2``."""
    n = len(shape1)
    if len(shape2) != n:
        raise ArgumentError(f"x2: f(params, x2) must have as many axes as f(params, x1), got shapes {shape1} and "
                            f"{shape2}")
    trace = _canonical(trace_axes, n, "trace_axes")
    diag = _canonical(diagonal_axes, n, "diagonal_axes")
    if set(trace) & set(diag):
        raise ArgumentError(f"trace_axes and diagonal_axes must not share an axis, got {trace_axes} and "
                            f"{diagonal_axes}")
    for i in trace + diag:
        if shape1[i] != shape2[i]:
            raise ArgumentError(f"x2: output axis {i} is in trace_axes or diagonal_axes, so f(params, x1) and "
                                f"f(params, x2) must have the same size there, got {shape1} and {shape2}")
    lab1 = list(range(n))
    lab2 = [i if (i in trace or i in diag) else n + i for i in range(n)]
    out = []
    for i in range(n):
        if i in diag:
            out.append(i)
        elif i not in trace:
            out += [i, n + i]
    size = math.prod(shape1[i] for i in trace)
    return lab1, lab2, out, size


def _contract(a, b, n_out, trace_axes, diagonal_axes):
    r"""``sum_{T, rest} a[out1, rest] b[out2, rest] / |T|`` in the zipped layout (``a``, ``b``: an
    output of ``n_out`` axes followed by the same trailing axes, e.g. one parameter's)."""
    lab1, lab2, out, size = _layout(a.shape[:n_out], b.shape[:n_out], trace_axes, diagonal_axes)
    rest = list(range(2 * n_out, 2 * n_out + a.ndim - n_out))
    prec = jax.lax.Precision.HIGHEST
    return jnp.einsum(a, lab1 + rest, b, lab2 + rest, out, precision=prec) / size


def _reduce_full(k, n_out, trace_axes, diagonal_axes):
    """A full kernel ``out1 + out2`` traced and diagonalised into the zipped layout."""
    lab1, lab2, out, size = _layout(k.shape[:n_out], k.shape[n_out:], trace_axes, diagonal_axes)
    return jnp.einsum(k, lab1 + lab2, out) / size


# ------------------------------------------------------------------------------------------
# The kernels
# ------------------------------------------------------------------------------------------


def _nngp(f, trace_axes, diagonal_axes, x1, x2, params, kw):
    kw1, kw2 = kw
    out1 = f(params, x1, **kw1)
    out2 = out1 if x2 is None else f(params, x2, **kw2)
    return jax.tree_util.tree_map(lambda a, b: _contract(a, b, a.ndim, trace_axes, diagonal_axes), out1, out2)


def _expand(x, axis):
    return x if axis is None else jnp.expand_dims(x, axis)


def _jacobian(f, params, x, vmap_axes, kwargs):
    """``jax.jacrev`` of ``p -> f(p, x)``: per output leaf a pytree over ``params`` of arrays
    ``out_shape + param_shape``; with ``vmap_axes`` one example at a time (``jax.vmap``)."""
    if vmap_axes is None:
        return jax.jacrev(lambda p: f(p, x, **kwargs))(params)
    in_axes, out_axes = vmap_axes
    in_tree = jax.tree_util.tree_map(lambda _: in_axes, x) if not isinstance(in_axes, (tuple, list, dict)) else in_axes
    fx = jax.eval_shape(lambda p: f(p, x, **kwargs), params)
    out_tree = (jax.tree_util.tree_map(lambda _: out_axes, fx) if not isinstance(out_axes, (tuple, list, dict))
                else out_axes)
    is_none = lambda v: v is None  # noqa: E731 - None (an unbatched leaf) is a leaf of the axes trees
    try:
        out_tree = jax.tree_util.tree_map(lambda a, s: None if a is None else a % len(s.shape), out_tree, fx,
                                          is_leaf=is_none)
        in_tree = jax.tree_util.tree_map(lambda a, s: None if a is None else a % jnp.ndim(s), in_tree, x,
                                         is_leaf=is_none)
    except (ValueError, TypeError) as e:
        raise ArgumentError(f"vmap_axes: in_axes must be an int or match the structure of x, and out_axes that of "
                            f"f(params, x); got {vmap_axes}: {e}") from None

    def one(xi):
        xe = jax.tree_util.tree_map(_expand, xi, in_tree)

        def g(p):
            return jax.tree_util.tree_map(lambda a, o: o if a is None else jnp.squeeze(o, a), out_tree,
                                          f(p, xe, **kwargs), is_leaf=is_none)

        return jax.jacrev(g)(params)

    # the Jacobian of output leaf o is batched along out_tree[o] for every parameter leaf
    jac_out_axes = jax.tree_util.tree_map(
        lambda a, s: jax.tree_util.tree_map(lambda _: a, params), out_tree, fx, is_leaf=is_none)
    return jax.vmap(one, in_axes=(in_tree,), out_axes=jac_out_axes)(x)


def _ntk_jacobian(f, trace_axes, diagonal_axes, vmap_axes, x1, x2, params, kw):
    kw1, kw2 = kw
    fx = jax.eval_shape(lambda p: f(p, x1, **kw1), params)
    j1 = _jacobian(f, params, x1, vmap_axes, kw1)
    j2 = j1 if x2 is None else _jacobian(f, params, x2, vmap_axes, kw2)
    fx_leaves, fx_tree = jax.tree_util.tree_flatten(fx)
    j1_leaves = fx_tree.flatten_up_to(j1)
    j2_leaves = fx_tree.flatten_up_to(j2)
    out = []
    for s, a, b in zip(fx_leaves, j1_leaves, j2_leaves):
        n = len(s.shape)
        terms = [_contract(u, v, n, trace_axes, diagonal_axes)
                 for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))]
        out.append(sum(terms[1:], terms[0]))
    return jax.tree_util.tree_unflatten(fx_tree, out)


def _ntk_products(f, trace_axes, diagonal_axes, x1, x2, params, kw):
    kw1, kw2 = kw
    f1 = lambda p: f(p, x1, **kw1)  # noqa: E731
    f2 = f1 if x2 is None else (lambda p: f(p, x2, **kw2))
    fx1, fx2 = jax.eval_shape(f1, params), jax.eval_shape(f2, params)
    _, vjp2 = jax.vjp(f2, params)
    leaves2, tree2 = jax.tree_util.tree_flatten(fx2)
    leaves1 = tree2.flatten_up_to(fx1)
    out = []
    for o, (s1, s2) in enumerate(zip(leaves1, leaves2)):
        m2 = math.prod(s2.shape)

        def column(j, o=o, s2=s2):  # Theta[..., j] for output leaf o: J1 (J2^T e_j)
            cts = [jnp.zeros(s.shape, s.dtype) for s in leaves2]
            cts[o] = jnp.zeros(m2, s2.dtype).at[j].set(1.0).reshape(s2.shape)
            (tangent,) = vjp2(jax.tree_util.tree_unflatten(tree2, cts))
            col = jax.jvp(f1, (params,), (tangent,))[1]
            return tree2.flatten_up_to(col)[o]

        cols = jax.lax.map(column, jnp.arange(m2), batch_size=min(64, m2))  # (m2,) + out1
        full = jnp.moveaxis(cols.reshape(s2.shape + s1.shape), list(range(len(s2.shape))),
                            list(range(len(s1.shape), len(s1.shape) + len(s2.shape))))
        out.append(_reduce_full(full, len(s1.shape), trace_axes, diagonal_axes))
    return jax.tree_util.tree_unflatten(tree2, out)


@eqx.filter_jit
def _nngp_jit(f, trace_axes, diagonal_axes, x1, x2, params, kw):
    return _nngp(f, trace_axes, diagonal_axes, x1, x2, params, kw)


@eqx.filter_jit
def _ntk_jit(f, trace_axes, diagonal_axes, vmap_axes, implementation, x1, x2, params, kw):
    if implementation == NtkImplementation.NTK_VECTOR_PRODUCTS:
        return _ntk_products(f, trace_axes, diagonal_axes, x1, x2, params, kw)
    return _ntk_jacobian(f, trace_axes, diagonal_axes, vmap_axes, x1, x2, params, kw)


def _x1_is_x2(x1, x2, eps: float = 1e-12):
    """neural-tangents' test of identical inputs: same shapes and entries within ``eps``."""
    l1, l2 = jax.tree_util.tree_leaves(x1), jax.tree_util.tree_leaves(x2)
    if len(l1) != len(l2) or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(l1, l2)):
        return jnp.asarray(False)
    def same(a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        if not jnp.issubdtype(a.dtype, jnp.inexact):  # raw PRNG keys (uint32)
            return jnp.all(a == b)
        return jnp.all(jnp.abs(a - b) < eps)

    return jnp.all(jnp.stack([same(a, b) for a, b in zip(l1, l2)]))


def _select_key(pred, k1, k2):
    if jnp.issubdtype(k1.dtype, jax.dtypes.prng_key):
        data = jnp.where(pred, jax.random.key_data(k1), jax.random.key_data(k2))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(k1))
    return jnp.where(pred, k1, k2)


def _read_keys(key, x1, x2):
    """The ``rng`` keys of ``f(., x1)`` and ``f(., x2)`` as neural-tangents draws them: the same key
    exactly when ``x1`` and ``x2`` are the same inputs (so a dropout mask is shared then only)."""
    def raw(k):
        return jax.random.key_data(k) if jnp.issubdtype(k.dtype, jax.dtypes.prng_key) else k

    if isinstance(key, tuple) and len(key) == 2:
        k1, k2 = key
        k2 = _select_key(_x1_is_x2(raw(k1), raw(k2)), jax.random.fold_in(k2, 1), k2)
        return k1, _select_key(_x1_is_x2(x1, x2), k1, k2)
    return key, _select_key(_x1_is_x2(x1, x2), key, jax.random.fold_in(key, 1))


def _split_kwargs(kwargs, x1, x2):
    """``(kwargs of f(., x1), kwargs of f(., x2))`` by neural-tangents' rule: an ``rng`` key is split
    (:func:`_read_keys`, when ``x2`` is given), a pair ``(v1, v2)`` goes one to each, anything else
    to both."""
    kw1, kw2 = {}, {}
    for k, v in kwargs.items():
        if k == "rng" and x2 is not None and v is not None:
            kw1[k], kw2[k] = _read_keys(v, x1, x2)
        elif isinstance(v, tuple) and len(v) == 2:
            kw1[k], kw2[k] = v
        else:
            kw1[k] = kw2[k] = v
    return kw1, kw2


def _check_layouts(f, x1, x2, params, trace_axes, diagonal_axes, kw):
    """Structural checks (at once, before any compilation): ``f`` evaluates on both inputs and the
    axes fit its outputs."""
    fx1 = _output_shapes(f, params, x1, "x1", kw[0])
    fx2 = fx1 if x2 is None else _output_shapes(f, params, x2, "x2", kw[1])
    l1, t1 = jax.tree_util.tree_flatten(fx1)
    l2, t2 = jax.tree_util.tree_flatten(fx2)
    if t1 != t2:
        raise ArgumentError(f"x2: f(params, x2) must have the pytree structure of f(params, x1), got {t2} and {t1}")
    for a, b in zip(l1, l2):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise ArgumentError(f"f must return floating outputs, got dtype {a.dtype}")
        _layout(tuple(a.shape), tuple(b.shape), trace_axes, diagonal_axes)


def empirical_nngp_fn(f: Callable, trace_axes=(-1,), diagonal_axes=()) -> Callable:
    r"""``nngp_fn(x1, x2, params, **apply_fn_kwargs)``: one sample of the NNGP of ``f``
    (``neural_tangents.empirical_nngp_fn``),

    .. math::
        \hat K_{ab}(x_1, x_2) = \frac{1}{|T|}\sum_{t\in T} f_{at}(\theta, x_1) f_{bt}(\theta, x_2),

    in the layout of the module docstring (``trace_axes`` :math:`T`, ``diagonal_axes``).

    Args:
        f: ``f(params, x, **kwargs)``, any JAX function (``x`` and the outputs may be pytrees).
        trace_axes, diagonal_axes: output axes (ints or tuples of ints, distinct, disjoint).

    Returns:
        ``nngp_fn(x1, x2, params, **apply_fn_kwargs)`` (``x2=None``: ``x1``); keyword arguments
        are split between the two calls of ``f`` as in :func:`empirical_ntk_fn`.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda p, x: jnp.tanh(x @ p["w"])
        >>> nngp_fn = empirical_nngp_fn(f, trace_axes=())
        >>> nngp_fn(jnp.ones((3, 2)), None, {"w": jnp.ones((2, 4))}).shape
        (3, 3, 4, 4)
    """
    f = _check_f(f)
    trace_axes = _axes(trace_axes, "trace_axes")
    diagonal_axes = _axes(diagonal_axes, "diagonal_axes")

    def nngp_fn(x1, x2, params, **apply_fn_kwargs):
        x1, x2, params = _inputs(x1, x2, params)
        kw = _split_kwargs(apply_fn_kwargs, x1, x2)
        _check_layouts(f, x1, x2, params, trace_axes, diagonal_axes, kw)
        return _finite(_nngp_jit(f, trace_axes, diagonal_axes, x1, x2, params, kw), "nngp_fn")

    return nngp_fn


def empirical_ntk_fn(f: Callable, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                     implementation: NtkImplementation | int = NtkImplementation.JACOBIAN_CONTRACTION) -> Callable:
    r"""``ntk_fn(x1, x2, params, **apply_fn_kwargs)``: the empirical NTK of ``f`` at ``params``
    (``neural_tangents.empirical_ntk_fn``),

    .. math::
        \hat\Theta_{ab}(x_1, x_2) = \frac{1}{|T|}\sum_{t\in T}\sum_{\ell}
            \Big\langle \frac{\partial f_{at}(\theta, x_1)}{\partial\theta_\ell},
                        \frac{\partial f_{bt}(\theta, x_2)}{\partial\theta_\ell}\Big\rangle,

    :math:`J_1 J_2^\top` summed over the parameter leaves :math:`\theta_\ell`, in the layout of
    the module docstring.

    Args:
        f: ``f(params, x, **kwargs)``, any JAX function (``x`` and outputs may be pytrees).
        trace_axes, diagonal_axes: output axes (ints or tuples of ints, distinct, disjoint).
        vmap_axes: ``None``, an int, or ``(in_axes, out_axes, kwargs_axes)`` with
            ``kwargs_axes`` empty: certifies that ``f`` treats the examples along these axes
            independently, so the Jacobians are computed one example at a time (``jax.vmap``).
            Wrong for a function that mixes examples (batch normalisation), as in neural-tangents.
        implementation: an :class:`NtkImplementation` or ``0``-``3`` (what rmtjax runs for each is
            on :class:`NtkImplementation`).

    Returns:
        ``ntk_fn(x1, x2, params, **apply_fn_kwargs)`` (``x2=None``: ``x1``); keyword arguments are
        split between the calls ``f(params, x1)`` and ``f(params, x2)`` as in neural-tangents: a pair
        ``(v1, v2)`` one to each, an ``rng`` key kept for ``x1`` and folded in with 1 for ``x2``
        unless ``x2`` equals ``x1`` (so a dropout mask is shared only by identical inputs), anything
        else to both. Empty inputs and parameters are errors (rmtjax's rule).

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
        >>> params = {"w": jnp.ones((2, 4)) / 2, "v": jnp.ones((4, 1))}
        >>> ntk_fn = empirical_ntk_fn(f, vmap_axes=0)
        >>> ntk_fn(jnp.eye(2), None, params).shape
        (2, 2)
    """
    f = _check_f(f)
    trace_axes = _axes(trace_axes, "trace_axes")
    diagonal_axes = _axes(diagonal_axes, "diagonal_axes")
    vmap = _vmap_axes(vmap_axes)
    impl = _implementation(implementation)

    def ntk_fn(x1, x2, params, **apply_fn_kwargs):
        x1, x2, params = _inputs(x1, x2, params)
        kw = _split_kwargs(apply_fn_kwargs, x1, x2)
        _check_layouts(f, x1, x2, params, trace_axes, diagonal_axes, kw)
        return _finite(_ntk_jit(f, trace_axes, diagonal_axes, vmap, impl, x1, x2, params, kw),
                       "ntk_fn")

    return ntk_fn


def empirical_kernel_fn(f: Callable, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                        implementation: NtkImplementation | int = NtkImplementation.JACOBIAN_CONTRACTION) -> Callable:
    """``kernel_fn(x1, x2, get, params, **apply_fn_kwargs)``: :func:`empirical_nngp_fn` and
    :func:`empirical_ntk_fn` behind neural-tangents' ``get`` (``neural_tangents.empirical_kernel_fn``).

    ``get`` is ``"nngp"``, ``"ntk"`` (that kernel), a tuple of them (a named tuple
    ``EmpiricalKernel`` in that order; for a pytree-valued ``f`` a pytree of them, one per output
    leaf) or ``None`` (both); anything else is a ``ValueError``.
    ``vmap_axes`` and ``implementation`` apply to the NTK. Arguments as in :func:`empirical_ntk_fn`.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda p, x: jnp.tanh(x @ p)
        >>> kernel_fn = empirical_kernel_fn(f)
        >>> k = kernel_fn(jnp.eye(2), None, None, jnp.ones((2, 3)))
        >>> k.nngp.shape, k.ntk.shape
        ((2, 2), (2, 2))
    """
    fns = {"nngp": empirical_nngp_fn(f, trace_axes, diagonal_axes),
           "ntk": empirical_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation)}

    def kernel_fn(x1, x2, get, params, **apply_fn_kwargs):
        names = get_names(get, ("nngp", "ntk"))
        vals = {g: fns[g](x1, x2, params, **apply_fn_kwargs) for g in names}
        if isinstance(get, str):
            return vals[get]
        return _per_output(collections.namedtuple("EmpiricalKernel", names), [vals[g] for g in names])

    return kernel_fn


def _per_output(tuple_type, trees):
    """One ``tuple_type(*kernels)`` per output leaf (a single named tuple for a single output), as
    neural-tangents lays out the kernels of a pytree-valued ``f``."""
    return jax.tree_util.tree_map(lambda *ks: tuple_type(*ks), *trees)


def empirical_ntk_vp_fn(f: Callable, x1, x2, params, **apply_fn_kwargs) -> Callable:
    r"""``ntk_vp_fn(cotangents)``: the product of the full empirical NTK with a vector, without
    forming the NTK (``neural_tangents.empirical_ntk_vp_fn``),

    .. math::
        \hat\Theta(x_1, x_2)\,v = J(x_1)\,ig(J(x_2)^	op vig),

    one VJP of ``f(., x2)`` and one JVP of ``f(., x1)`` (the memory of one VJP). ``cotangents``
    has the shape and structure of ``f(params, x2)``, the result those of ``f(params, x1)``;
    ``x2=None`` is ``x1``. Equal to contracting the ``trace_axes=()`` kernel of
    :func:`empirical_ntk_fn` with ``v`` over its ``x2`` axes.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda p, x: jnp.tanh(x @ p)
        >>> ntk_vp = empirical_ntk_vp_fn(f, jnp.eye(2), None, jnp.ones((2, 3)))
        >>> ntk_vp(jnp.ones((2, 3))).shape
        (2, 3)
    """
    f = _check_f(f)
    x1, x2, params = _inputs(x1, x2, params)
    kw1, kw2 = kw = _split_kwargs(apply_fn_kwargs, x1, x2)
    _check_layouts(f, x1, x2, params, (), (), kw)
    f1 = lambda p: f(p, x1, **kw1)  # noqa: E731
    f2 = f1 if x2 is None else (lambda p: f(p, x2, **kw2))
    fx2 = jax.eval_shape(f2, params)
    _, vjp2 = jax.vjp(f2, params)

    def ntk_vp_fn(cotangents):
        leaves, tree = jax.tree_util.tree_flatten(cotangents)
        if tree != jax.tree_util.tree_structure(fx2) or any(
                jnp.shape(a) != s.shape for a, s in zip(leaves, jax.tree_util.tree_leaves(fx2))):
            raise ArgumentError(f"cotangents must have the shapes of f(params, x2), "
                                f"{jax.tree_util.tree_map(lambda s: s.shape, fx2)}, got "
                                f"{jax.tree_util.tree_map(jnp.shape, cotangents)}")
        cts = _array_leaves(cotangents, "cotangents")
        cts = jax.tree_util.tree_map(lambda a, s: a.astype(s.dtype), cts, fx2)
        (tangent,) = vjp2(cts)
        return _finite(jax.jvp(f1, (params,), (tangent,))[1], "ntk_vp_fn")

    return ntk_vp_fn


# ------------------------------------------------------------------------------------------
# Linearization and Taylor expansion
# ------------------------------------------------------------------------------------------


def _expansion_finite(out, p, fn: str):
    """``out`` if ``p`` and ``out`` are finite (the check of ``p`` is attached to ``out``, so it
    stays in a compiled program even where ``out`` does not depend on ``p``, e.g. degree 0)."""
    p_ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(p)]))
    out = error_if(out, ~p_ok, "params must be finite (it holds NaN or inf)")
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(out) if jnp.issubdtype(a.dtype, jnp.inexact)]
    if not leaves:
        return out
    return error_if(out, ~jnp.all(jnp.stack(leaves)), f"{fn}: the expansion is not finite: the args passed to f hold "
                    "NaN or inf, or f or its derivatives overflow at the expansion point params")


def _evaluable(f, params, args, kwargs, fn: str):
    """``f(params, *args, **kwargs)`` must evaluate (structure, dtypes): else a ``ValueError``."""
    try:
        out = jax.eval_shape(lambda q: f(q, *args, **kwargs), params)
    except Exception as e:  # noqa: BLE001 - args that do not fit f
        raise ArgumentError(f"{fn}: f(params, *args) cannot be evaluated for these args: {type(e).__name__}: "
                            f"{e}") from None
    if any(math.prod(s.shape) == 0 for s in jax.tree_util.tree_leaves(out)):
        raise ArgumentError(f"{fn}: f(params, *args) is empty for these args (rmtjax's rule: empty arrays are errors), "
                            f"got shapes {jax.tree_util.tree_map(lambda s: s.shape, out)}")


def _delta(p, params, treedef):
    p = _array_leaves(p, "params")
    if jax.tree_util.tree_structure(p) != treedef:
        raise ArgumentError(f"params: the parameters passed to the expansion must have the structure of the "
                            f"expansion point, got {jax.tree_util.tree_structure(p)} and {treedef}")
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(params)):
        if jnp.shape(a) != jnp.shape(b):
            raise ArgumentError(f"params: a leaf of shape {jnp.shape(a)} where the expansion point has "
                                f"{jnp.shape(b)}")
    return jax.tree_util.tree_map(lambda a, b: jnp.asarray(a) - b, p, params)


def linearize(f: Callable, params: Any) -> Callable:
    r"""The first-order Taylor expansion of ``f`` in its parameters about ``params``
    (``neural_tangents.linearize``):

    .. math::
        f_{\mathrm{lin}}(\theta, x) = f(\theta_0, x) + J(\theta_0, x)\,(\theta - \theta_0),
        \qquad J = \partial f/\partial\theta,

    one ``jax.jvp`` per call. ``f(params, *args, **kwargs)`` may return any pytree; the returned
    ``f_lin(params, *args, **kwargs)`` has the same signature.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda p, x: jnp.sin(p * x)
        >>> f_lin = linearize(f, jnp.array(0.0))
        >>> float(f_lin(jnp.array(0.1), jnp.array(2.0)))  # sin(0) + cos(0) * 2 * 0.1
        0.2
    """
    f = _check_f(f)
    params = _array_leaves(params, "params")
    treedef = jax.tree_util.tree_structure(params)

    def f_lin(p, *args, **kwargs):
        dp = _delta(p, params, treedef)
        _evaluable(f, params, args, kwargs, "linearize")
        y0, dy = jax.jvp(lambda q: f(q, *args, **kwargs), (params,), (dp,))
        return _expansion_finite(jax.tree_util.tree_map(jnp.add, y0, dy), p, "linearize")

    return f_lin


def taylor_expand(f: Callable, params: Any, degree: int) -> Callable:
    r"""The Taylor expansion of ``f`` in its parameters about ``params`` to order ``degree``
    (``neural_tangents.taylor_expand``):

    .. math::
        f_{\mathrm{taylor}}(\theta, x) = \sum_{k=0}^{d}\frac{1}{k!}\,
            D^k_\theta f(\theta_0, x)[\delta^{\otimes k}],\qquad \delta = \theta - \theta_0,

    the :math:`k`-th directional derivative as :math:`k` nested ``jax.jvp`` along :math:`\delta`
    (``degree`` :math:`d \ge 0`; ``degree=1`` is :func:`linearize`).

    Example:
        >>> import jax.numpy as jnp
        >>> f_2 = taylor_expand(lambda p, x: jnp.exp(p * x), jnp.array(0.0), 2)
        >>> float(f_2(jnp.array(1.0), jnp.array(1.0)))  # 1 + 1 + 1/2
        2.5
    """
    f = _check_f(f)
    degree = static_int(degree, "degree", lo=0, hi=64)
    params = _array_leaves(params, "params")
    treedef = jax.tree_util.tree_structure(params)

    def f_taylor(p, *args, **kwargs):
        dp = _delta(p, params, treedef)
        _evaluable(f, params, args, kwargs, "taylor_expand")
        g = lambda q: f(q, *args, **kwargs)  # noqa: E731
        # derivative k along dp: jvp of derivative k - 1; terms[k] = D^k f(params)[dp, ..., dp]
        derivs = [g]
        for _ in range(degree):
            prev = derivs[-1]
            derivs.append(lambda q, prev=prev: jax.jvp(prev, (q,), (dp,))[1])
        terms = [jax.tree_util.tree_map(lambda t, k=k: t / math.factorial(k), d(params)) for k, d in enumerate(derivs)]
        return _expansion_finite(jax.tree_util.tree_map(lambda *ts: sum(ts[1:], ts[0]), *terms), p, "taylor_expand")

    return f_taylor
