r"""The layers of the infinite-width kernel engine.

A layer is an ``eqx.Module`` that maps a :class:`KernelState` (the NNGP and NTK of a block of input
pairs, with the variances of its rows and columns) to the next. The recursion is written once, here
(Neal 1996; Lee et al. 2018; Jacot et al. 2018; Arora et al. 2019, eq. 6; neural-tangents'
conventions, Novak et al. 2020):

* :class:`Dense` (NTK parameterization):
  :math:`\Sigma \mapsto \sigma_w^2\Sigma + \sigma_b^2`,
  :math:`\Theta \mapsto \sigma_w^2\Sigma + \sigma_b^2 + \sigma_w^2\Theta`; standard
  parameterization (Sohl-Dickstein et al. 2020):
  :math:`\Theta \mapsto n\,\Sigma + \sigma_w^2\Theta + [\text{bias}]`, ``n`` the width feeding it.
* :class:`Activation`: :math:`\Sigma \mapsto \mathbb E[\phi(u)\phi(v)]`,
  :math:`\Theta \mapsto \mathbb E[\phi'(u)\phi'(v)]\,\Theta` with
  :math:`(u, v) \sim \mathcal N(0, [[\Sigma_{11}, \Sigma_{12}], [\Sigma_{12}, \Sigma_{22}]])`.
* :class:`Parallel` (branches fed the same input, outputs summed with weights :math:`w_i`) and
  :class:`Residual`: :math:`K \mapsto \sum_i w_i^2 K_i` for both kernels (the branches are
  independent given the input: each ends in a zero-mean random ``Dense``, or is the identity next to
  such branches).

The identical-input rule, in one place (:class:`Activation`): for identical inputs the covariance is
exactly the variance, and identical or opposite inputs have exactly equal variances, so rounding
never leaves a correlation of ``1 - eps`` (an error of ``sqrt(eps)`` in arc-cosine kernels).

Uniform stacks run as a ``lax.scan`` (:class:`Stack`; :class:`Serial` finds repeated blocks
itself), so depth costs no compile time and XLA never duplicates a chain of producers across layers.
:func:`rmtjax.kernels.kernel` runs any layer over tiles of the output, jitted and spread over
devices.

The convolutional layers (:mod:`rmtjax.kernels._conv`: convolution, pooling, flattening, layer norm,
attention on image states, :class:`Spatial`) are further subclasses of :class:`AbstractLayer`: a
layer sees only the state of its tile and returns the next one; :class:`Activation`,
:class:`Dense` (a 1x1 convolution on images), :class:`Parallel`, :class:`Product` and
:class:`Residual` act on image states unchanged.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .._validate import as_real, check_range, choice, static_int
from ..activations import AbstractActivation
from ..gaussian import AbstractMethod, _expectations, _resolve

__all__ = ["AbstractLayer", "Activation", "Dense", "Identity", "Kernel", "KernelState", "Parallel", "Product",
           "Residual", "Serial", "Stack"]


class Kernel(NamedTuple):
    """NNGP and NTK matrices (a leading depth axis when ``all_depths=True``)."""

    nngp: Array
    ntk: Array


@jax.custom_jvp
def with_value(mask, x, value):
    """``x`` with the entries under ``mask`` replaced by ``value`` (broadcast), keeping the
    derivative of ``x`` there: the exact value where rounding would lose it, the derivative of the
    formula it stands for.

    The value is a plain ``where`` (a custom JVP carries the derivative): written as
    ``x - stop_gradient(x) + value``, XLA may evaluate the two ``x`` in different fusions, one with a
    fused multiply-add, and the difference is not 0 (measured: identical inputs at a correlation of
    1 - 1e-16, a ReLU NTK 3e-9 relative off)."""
    return jnp.where(mask, value, x)


@with_value.defjvp
def _with_value_jvp(primals, tangents):
    mask, x, value = primals
    out = with_value(mask, x, value)
    return out, jnp.broadcast_to(tangents[1], out.shape)


class KernelState(eqx.Module):
    """The infinite-width state of a block of input pairs ``(x_i, x'_j)`` between two layers.

    On a tile, ``nngp`` and ``ntk`` are ``(t1, t2)``, ``var1`` is ``(t1, 1)`` and ``var2`` ``(1, t2)``;
    on the diagonal (:func:`rmtjax.kernels.kernel_diagonal`) every array is ``(n,)``. Layers use only
    broadcasting, so both layouts run through the same code.

    Attributes:
        nngp: :math:`\\Sigma(x_i, x'_j)`.
        ntk: :math:`\\Theta(x_i, x'_j)`.
        var1: :math:`\\Sigma(x_i, x_i)`.
        var2: :math:`\\Sigma(x'_j, x'_j)`.
        same: the inputs of the pair are identical (bit for bit).
        mirror: the inputs are identical or opposite (their variances are equal at every layer).
        width: the number of channels of the current activations (the fan-in of a following
            standard-parameterization :class:`Dense`), or ``None`` where unknown (after a
            :class:`Dense` without ``out_dim``).
        method: how :class:`Activation` layers without a method of their own evaluate Gaussian
            expectations (static).
        spatial: ``None`` for vectors; for images (the convolutional engine,
            :mod:`rmtjax.kernels._conv`) a :class:`Spatial` (static): the spatial shape ``S`` and
            whether the full pixel-pixel covariance is kept. Then ``nngp`` and ``ntk`` are
            ``(t1, t2, *S, *S)`` (full: pixel ``p`` of ``x_i`` against pixel ``p'`` of ``x'_j``) or
            ``(t1, t2, *S)`` (diagonal: same pixel only), ``var1``/``var2`` the same layout for the
            pairs ``(x_i, x_i)`` (``(t1, 1, ...)``) and ``(x'_j, x'_j)`` (``(1, t2, ...)``), and
            ``same``/``mirror`` ``(t1, t2, 1, ...)`` (whole images identical or opposite).
        sample: ``None``, or a mask like ``same``: the pair is one sample with itself (the diagonal
            of a kernel of ``x1`` with itself: what :class:`rmtjax.kernels._conv.Dropout` scales; an
            identical row elsewhere is another sample with independent dropout).
        centered: the channels have mean zero at infinite width (static): true after a
            :class:`Dense`, ``Conv`` or attention layer (zero-mean random weights), kept by linear
            layers and by sums and products of centred branches, false for the inputs and after an
            :class:`Activation`. ``LayerNorm`` needs it: the finite layer subtracts the channel
            mean, which its kernel takes to be zero (neural-tangents' ``is_gaussian`` rule).
    """

    nngp: Array
    ntk: Array
    var1: Array
    var2: Array
    same: Array
    mirror: Array
    width: Array | None
    method: AbstractMethod = eqx.field(static=True)
    spatial: Spatial | None = eqx.field(static=True, default=None)
    sample: Array | None = None
    centered: bool = eqx.field(static=True, default=False)

    def replace(self, **changes) -> KernelState:
        """This state with the given fields changed (the others, ``spatial`` included, kept)."""
        return dataclasses.replace(self, **changes)


class Spatial(NamedTuple):
    """The layout of an image state (see :class:`KernelState`): spatial ``shape`` and ``full``
    (pixel-pixel covariances) or not (same-pixel covariances only)."""

    shape: tuple[int, ...]
    full: bool

    @property
    def ndim(self) -> int:
        """The number of trailing layout axes of ``nngp`` (``2 len(shape)`` when full)."""
        return len(self.shape) * (2 if self.full else 1)


def once(q):
    """``q`` itself, evaluated once for all its uses: divided by an exact 1 that XLA cannot fold away.

    The variances, for example, feed the Gaussian expectation three times (``q1``, and through the
    identical-input rule ``q2`` and ``q12``), and XLA duplicates a cheap producer (``w^2 q + b^2``)
    into every fusion that reads it, some copies with a fused multiply-add and some without: the
    copies then differ in the last bit, and an identical pair gets a correlation of ``1 - 1e-16``
    (measured: a depth-1 ReLU NTK 3e-9 relative off; ``jax.lax.optimization_barrier`` did not
    prevent it: the compiled program had no barrier left). A division is an expensive operation,
    which XLA never duplicates, so every use reads the same bits. The divisor is 1 wherever ``q`` is
    not NaN, and its derivative is 0."""
    return q / jnp.where(jnp.isnan(q), 2.0, 1.0).astype(q.dtype)


def pixel_eye(shape: tuple[int, ...]) -> Array:
    """``(*shape, *shape)`` boolean: pixel ``p`` equals pixel ``p'``."""
    m = 1
    for s in shape:
        m *= s
    return jnp.eye(m, dtype=bool).reshape(tuple(shape) * 2)


def pixel_diagonal(a: Array, shape: tuple[int, ...]) -> Array:
    """The same-pixel entries ``a[..., p, p]`` of a full layout ``(..., *shape, *shape)``, as
    ``(..., *shape)``."""
    m = 1
    for s in shape:
        m *= s
    lead = a.shape[:a.ndim - 2 * len(shape)]
    return jnp.diagonal(a.reshape(lead + (m, m)), axis1=-2, axis2=-1).reshape(lead + tuple(shape))


class AbstractLayer(eqx.Module):
    """A layer of the kernel engine: ``layer(state) -> state`` on one tile (see :class:`KernelState`).

    Subclasses implement ``__call__``; :meth:`with_history` (the kernels after every :class:`Dense`
    outside branches, for ``all_depths=True``) and :meth:`num_activations` have defaults.
    """

    @abc.abstractmethod
    def __call__(self, state: KernelState) -> KernelState:
        """The state after this layer."""

    def with_history(self, state: KernelState) -> tuple[KernelState, Kernel | None]:
        """The state after this layer and the kernels after each :class:`Dense` on its main path
        (not inside branches), stacked along a leading axis (``None`` if there is none)."""
        return self(state), None

    def num_activations(self) -> int:
        """How many activation layers the state passes through (the depth the engine uses to decide
        whether to spread tiles over devices)."""
        return 0

    def keeps_layout(self) -> bool:
        """Whether the output state has the input's shapes and layout (only such layers are run as a
        ``lax.scan`` by :class:`Serial`; a strided convolution or a pooling layer is not)."""
        return True


def _scalar(x, name: str) -> Array:
    return check_range(as_real(x, name, ndim=0), name, lo=0.0)


class Dense(AbstractLayer):
    r"""A fully-connected layer, neural-tangents' conventions (see the module docstring).

    Args:
        W_std: :math:`\sigma_w`, a real scalar, finite and ``>= 0``. Differentiable.
        b_std: :math:`\sigma_b` (scalar, finite, ``>= 0``) or ``None`` for no bias. Differentiable.
        out_dim: the layer's output width, a positive integer or ``None``; only a following
            standard-parameterization ``Dense`` needs it (its NTK grows with its fan-in).
        parameterization: ``"ntk"`` (default) or ``"standard"``.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Relu
        >>> from rmtjax.kernels import Activation, Serial, kernel
        >>> net = Serial(Dense(1.4, 0.1), Activation(Relu()), Dense(1.4, 0.1))
        >>> kernel(jnp.ones((3, 5)), None, net).ntk.shape
        (3, 3)
    """

    W_std: Array
    b_std: Array
    out_dim: int | None = eqx.field(static=True)
    bias: bool = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)

    def __init__(self, W_std: ArrayLike = 1.0, b_std: ArrayLike | None = 0.0, *, out_dim: int | None = None,
                 parameterization: str = "ntk"):
        self.parameterization = choice(parameterization, "parameterization", ("ntk", "standard"))
        self.W_std = _scalar(W_std, "W_std")
        self.bias = b_std is not None
        self.b_std = _scalar(0.0 if b_std is None else b_std, "b_std")
        self.out_dim = None if out_dim is None else static_int(out_dim, "out_dim", lo=1)

    def __call__(self, state: KernelState) -> KernelState:
        w2, b2 = self.W_std**2, self.b_std**2
        nngp = w2 * state.nngp + b2
        if self.parameterization == "ntk":
            ntk = nngp + w2 * state.ntk
        else:
            if state.width is None:
                raise ValueError("Dense: parameterization='standard' needs the width feeding it (its NTK grows with "
                                 "its fan-in); give the Dense before it an out_dim")
            ntk = state.width * state.nngp + w2 * state.ntk + (1.0 if self.bias else 0.0)
        width = None if self.out_dim is None else jnp.asarray(self.out_dim, nngp.dtype)
        return state.replace(nngp=nngp, ntk=ntk, var1=w2 * state.var1 + b2, var2=w2 * state.var2 + b2, width=width,
                             centered=True)

    def with_history(self, state: KernelState) -> tuple[KernelState, Kernel]:
        out = self(state)
        return out, Kernel(out.nngp[None], out.ntk[None])


class Activation(AbstractLayer):
    """An :mod:`rmtjax.activations` module as a layer of the engine.

    Args:
        activation: the activation (its parameters are array leaves: differentiable).
        method: how to evaluate its Gaussian expectations (an :mod:`rmtjax.gaussian` method
            object), or ``None`` (default) for the ``method=`` of :func:`rmtjax.kernels.kernel`.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Erf
        >>> from rmtjax.kernels import Dense, Serial, kernel
        >>> k = kernel(jnp.eye(3), None, Serial(Dense(1.5), Activation(Erf()), Dense(1.5)))
        >>> k.nngp.shape
        (3, 3)
    """

    activation: AbstractActivation
    method: AbstractMethod | None = eqx.field(static=True)

    def __init__(self, activation: AbstractActivation, method: AbstractMethod | None = None):
        if not isinstance(activation, AbstractActivation):
            raise ValueError(f"activation must be an rmtjax.activations module, got {type(activation).__name__}")
        if method is not None:
            _resolve(activation, method)
        self.activation = activation
        self.method = method

    def __call__(self, state: KernelState) -> KernelState:
        method = state.method if self.method is None else self.method
        if state.spatial is not None and state.spatial.full:
            return self._full(state, method)
        # the identical-input rule: covariance = variance for identical inputs, equal variances for
        # identical or opposite ones (gradients kept from the formulas)
        q1, q2 = once(state.var1), once(state.var2)
        q12 = with_value(state.same, state.nngp, q1)
        q2_pair = with_value(state.mirror, jnp.broadcast_to(q2, state.nngp.shape), q1)
        k, kdot = _expectations(self.activation, q1, q2_pair, q12, method)
        v1 = _expectations(self.activation, q1, q1, q1, method).k
        v2 = _expectations(self.activation, q2, q2, q2, method).k
        return state.replace(nngp=k, ntk=kdot * state.ntk, var1=v1, var2=v2, centered=False)

    def _full(self, state: KernelState, method) -> KernelState:
        """Images with pixel-pixel covariances: the pair ``(x_i[p], x'_j[p'])`` has the variances
        of pixel ``p`` of ``x_i`` and pixel ``p'`` of ``x'_j`` (the diagonals of ``var1``, ``var2``);
        the identical-input rule holds on identical images at the same pixel."""
        shape = state.spatial.shape
        eye = pixel_eye(shape)[None, None]  # (1, 1, *S, *S): the two batch axes of a tile
        d1, d2 = once(pixel_diagonal(state.var1, shape)), once(pixel_diagonal(state.var2, shape))
        rows = lambda d: d.reshape(d.shape + (1,) * len(shape))  # pixel p, broadcast over p'
        cols = lambda d: d.reshape(d.shape[:2] + (1,) * len(shape) + d.shape[2:])  # pixel p'

        def pair(qa, qb, q12, same, mirror):
            q12 = with_value(same, q12, qa)
            qb = with_value(mirror, jnp.broadcast_to(qb, q12.shape), qa)
            return _expectations(self.activation, qa, qb, q12, method)

        k, kdot = pair(rows(d1), cols(d2), state.nngp, state.same & eye, state.mirror & eye)
        v1 = pair(rows(d1), cols(d1), state.var1, eye, eye).k
        v2 = pair(rows(d2), cols(d2), state.var2, eye, eye).k
        return state.replace(nngp=k, ntk=kdot * state.ntk, var1=v1, var2=v2, centered=False)

    def num_activations(self) -> int:
        return 1


class Identity(AbstractLayer):
    """The identity layer (the skip branch of a residual block).

    Example:
        >>> from rmtjax.kernels import Dense, Parallel
        >>> block = Parallel(Identity(), Dense(1.2))
    """

    def __call__(self, state: KernelState) -> KernelState:
        return state


def _check_layers(layers, name: str) -> tuple[AbstractLayer, ...]:
    layers = tuple(layers)
    for i, layer in enumerate(layers):
        if not isinstance(layer, AbstractLayer):
            raise ValueError(f"{name}[{i}] must be an rmtjax.kernels layer (Dense, Activation, Serial, ...), got "
                             f"{type(layer).__name__}")
    return layers


def _signature(layer) -> tuple | None:
    """The structure of a layer and the shapes and dtypes of its leaves; ``None`` if a leaf is not an
    array or a number (such a layer is never stacked)."""
    if not layer.keeps_layout():
        return None
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    shapes = []
    for leaf in leaves:
        if not (eqx.is_array(leaf) or isinstance(leaf, (int, float))) or isinstance(leaf, bool):
            return None
        shapes.append((jnp.shape(leaf), jnp.result_type(leaf)))
    return treedef, tuple(shapes)


_MAX_PERIOD = 4


def _stacked(layers: tuple[AbstractLayer, ...]) -> tuple[AbstractLayer, ...]:
    """``layers`` with every run of ``k >= 2`` structurally identical blocks of ``p <= 4`` consecutive
    layers replaced by one :class:`Stack` of ``k`` (values stacked, never compared: they may be
    traced)."""
    sigs = [_signature(layer) for layer in layers]
    out, i, n = [], 0, len(layers)
    while i < n:
        for p in range(1, _MAX_PERIOD + 1):
            if i + 2 * p > n or any(s is None for s in sigs[i:i + p]):
                continue
            k = 1
            while i + (k + 1) * p <= n and sigs[i + k * p:i + (k + 1) * p] == sigs[i:i + p]:
                k += 1
            if k >= 2:
                blocks = [layers[i + j * p] if p == 1 else Serial(*layers[i + j * p:i + (j + 1) * p]) for j in range(k)]
                out.append(Stack(jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *blocks),
                                 k))
                i += k * p
                break
        else:
            out.append(layers[i])
            i += 1
    return tuple(out)


class Serial(AbstractLayer):
    """Layers applied one after the other.

    Runs of a repeated block (up to 4 layers, the same structure and shapes; the values may differ)
    run as a :class:`Stack`: one ``lax.scan`` whatever the depth.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Erf
        >>> from rmtjax.kernels import Activation, Dense, kernel
        >>> net = Serial(Dense(1.5, 0.1), Activation(Erf()), Dense(1.5, 0.1))
        >>> kernel(jnp.ones((2, 4)), None, net).nngp.shape
        (2, 2)
    """

    layers: tuple[AbstractLayer, ...]

    def __init__(self, *layers: AbstractLayer):
        self.layers = _check_layers(layers, "layers")

    def __call__(self, state: KernelState) -> KernelState:
        for layer in _stacked(self.layers):
            state = layer(state)
        return state

    def with_history(self, state: KernelState) -> tuple[KernelState, Kernel | None]:
        hist = []
        for layer in _stacked(self.layers):
            state, h = layer.with_history(state)
            if h is not None:
                hist.append(h)
        if not hist:
            return state, None
        return state, Kernel(*(jnp.concatenate(parts) for parts in zip(*hist)))

    def num_activations(self) -> int:
        return sum(layer.num_activations() for layer in self.layers)

    def keeps_layout(self) -> bool:
        return all(layer.keeps_layout() for layer in self.layers)


class Stack(AbstractLayer):
    """``depth`` repetitions of one block with per-repetition values, run as one ``lax.scan``.

    Args:
        block: a layer whose every array leaf has a leading axis of length ``depth`` (slice ``l`` is
            repetition ``l``); build it from a list of identically structured layers with
            ``jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)``.
        depth: the number of repetitions, a static integer ``>= 1``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.activations import Relu
        >>> from rmtjax.kernels import Activation, Dense, Serial, kernel
        >>> blocks = [Serial(Dense(w, 0.1), Activation(Relu())) for w in (1.2, 1.4, 1.6)]
        >>> stack = Stack(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *blocks), 3)
        >>> kernel(jnp.ones((2, 4)), None, Serial(stack, Dense(1.0))).ntk.shape
        (2, 2)
    """

    block: AbstractLayer
    depth: int = eqx.field(static=True)

    def __init__(self, block: AbstractLayer, depth: int):
        if not isinstance(block, AbstractLayer):
            raise ValueError(f"block must be an rmtjax.kernels layer, got {type(block).__name__}")
        self.depth = static_int(depth, "depth", lo=1, hi=10**6)
        for leaf in jax.tree_util.tree_leaves(block):
            if not eqx.is_array(leaf) or leaf.ndim < 1 or leaf.shape[0] != self.depth:
                raise ValueError(f"block: every leaf must be an array with a leading axis of length depth = "
                                 f"{self.depth} (one slice per repetition), got {jnp.shape(leaf)}")
        self.block = block

    def _run(self, state, record: bool):
        dyn, static = eqx.partition(self.block, eqx.is_array)

        def step(s, d):
            layer = eqx.combine(d, static)
            return layer.with_history(s) if record else (layer(s), None)

        first = jax.tree_util.tree_map(lambda a: a[0], dyn)
        if self.depth == 1:
            return step(state, first)
        after = jax.eval_shape(lambda s, d: step(s, d)[0], state, first)
        if state.width is not None and after.width is None:
            state = dataclasses.replace(state, width=None)  # a scan carries one structure: unknown from the start
        head = None
        if after.centered != state.centered:  # a scan carries one structure: the first repetition runs outside it
            state, head = step(state, first)
            dyn = jax.tree_util.tree_map(lambda a: a[1:], dyn)
        state, hist = jax.lax.scan(step, state, dyn)
        if hist is not None:
            if head is not None:
                hist = Kernel(*(jnp.concatenate([h0[None], h]) for h0, h in zip(head, hist, strict=True)))
            hist = Kernel(*(h.reshape((-1,) + h.shape[2:]) for h in hist))
        return state, hist

    def __call__(self, state: KernelState) -> KernelState:
        return self._run(state, False)[0]

    def with_history(self, state: KernelState) -> tuple[KernelState, Kernel | None]:
        return self._run(state, True)

    def num_activations(self) -> int:
        return self.depth * self.block.num_activations()

    def keeps_layout(self) -> bool:
        return self.block.keeps_layout()


def _weights(weights, n: int):
    if weights is None:
        return None
    w = as_real(weights, "weights", ndim=1)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) (one per branch), got {w.shape}")
    return check_range(w, "weights")


def _weighted_sum(states: list[KernelState], weights) -> KernelState:
    """:math:`\\sum_i w_i^2 K_i` for both kernels and the variances (plain sums without weights)."""
    def total(get):
        if weights is None:
            return sum((get(s) for s in states[1:]), get(states[0]))
        w2 = weights**2
        return sum((w2[i] * get(s) for i, s in enumerate(states) if i), w2[0] * get(states[0]))

    layouts = {s.spatial for s in states}
    if len(layouts) > 1:
        raise ValueError(f"branches end with different image layouts {sorted(map(str, layouts))}: their outputs cannot "
                         "be summed (FanInSum needs equal spatial shapes)")
    return states[0].replace(nngp=total(lambda s: s.nngp), ntk=total(lambda s: s.ntk), var1=total(lambda s: s.var1),
                             var2=total(lambda s: s.var2), centered=all(s.centered for s in states))


class Parallel(AbstractLayer):
    r"""Branches fed the same input, their outputs summed: neural-tangents'
    ``FanOut(n) >> parallel(*branches) >> FanInSum()``.

    With ``weights`` :math:`w` the output is :math:`\sum_i w_i f_i(z)` and the kernels
    :math:`\sum_i w_i^2 K_i` (branches independent given the input: each ends in a zero-mean random
    ``Dense``, or is the identity beside such branches).

    Args:
        *branches: one or more layers.
        weights: ``None`` (all 1) or one real, finite weight per branch. Differentiable.

    Example:
        >>> from rmtjax.activations import Erf, Relu
        >>> from rmtjax.kernels import Activation, Dense, Serial
        >>> net = Serial(Dense(1.0), Parallel(Activation(Erf()), Activation(Relu())), Dense(1.0))
    """

    branches: tuple[AbstractLayer, ...]
    weights: Array | None

    def __init__(self, *branches: AbstractLayer, weights: ArrayLike | None = None):
        self.branches = _check_layers(branches, "branches")
        if not self.branches:
            raise ValueError("branches must hold at least one layer, got none")
        self.weights = _weights(weights, len(self.branches))

    def __call__(self, state: KernelState) -> KernelState:
        return _weighted_sum([b(state) for b in self.branches], self.weights)

    def num_activations(self) -> int:
        return max(b.num_activations() for b in self.branches)

    def keeps_layout(self) -> bool:
        return all(b.keeps_layout() for b in self.branches)


class Product(AbstractLayer):
    r"""Branches fed the same input, their outputs multiplied elementwise (neural-tangents'
    ``FanOut(n) >> parallel(*branches) >> FanInProd()``): for independent zero-mean Gaussian
    branches :math:`\Sigma = \prod_i\Sigma_i` and
    :math:`\Theta = \sum_i\Theta_i\prod_{j\ne i}\Sigma_j` (product rule; Novak et al. 2020).

    Args:
        *branches: one or more layers (each should end in a ``Dense`` or ``Conv``).

    Example:
        >>> from rmtjax.kernels import Dense
        >>> net = Product(Dense(1.0), Dense(1.5, 0.1))
    """

    branches: tuple[AbstractLayer, ...]

    def __init__(self, *branches: AbstractLayer):
        self.branches = _check_layers(branches, "branches")
        if not self.branches:
            raise ValueError("branches must hold at least one layer, got none")

    def __call__(self, state: KernelState) -> KernelState:
        states = [b(state) for b in self.branches]
        layouts = {s.spatial for s in states}
        if len(layouts) > 1:
            raise ValueError(f"branches end with different image layouts {sorted(map(str, layouts))}: their outputs "
                             "cannot be multiplied (FanInProd needs equal spatial shapes)")

        def prod(xs):
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out

        nngps = [s.nngp for s in states]
        ntk = sum((s.ntk * prod(nngps[:i] + nngps[i + 1:]) for i, s in enumerate(states) if i),
                  states[0].ntk * prod(nngps[1:]) if len(states) > 1 else states[0].ntk)
        # independent zero-mean branches multiply to zero mean
        return states[0].replace(nngp=prod(nngps), ntk=ntk, var1=prod([s.var1 for s in states]),
                                 var2=prod([s.var2 for s in states]), centered=all(s.centered for s in states))

    def num_activations(self) -> int:
        return max(b.num_activations() for b in self.branches)

    def keeps_layout(self) -> bool:
        return all(b.keeps_layout() for b in self.branches)


class Residual(AbstractLayer):
    r"""A residual block :math:`z \mapsto \alpha z + \beta f(z)`: kernels
    :math:`\alpha^2 K + \beta^2 K_f` (He et al. 2016; the infinite-width kernels of
    neural-tangents' ``FanOut(2) >> parallel(Identity(), f) >> FanInSum()`` for
    :math:`\alpha = \beta = 1`).

    Args:
        block: the residual branch :math:`f` (a layer; it should end in a ``Dense``).
        weights: ``None`` (:math:`\alpha = \beta = 1`) or ``(alpha, beta)``, real and finite.
            Differentiable.

    Example:
        >>> from rmtjax.activations import Relu
        >>> from rmtjax.kernels import Activation, Dense, Serial
        >>> block = Residual(Serial(Activation(Relu()), Dense(1.2, 0.1)), weights=(1.0, 0.5))
    """

    block: AbstractLayer
    weights: Array | None

    def __init__(self, block: AbstractLayer, weights: ArrayLike | None = None):
        if not isinstance(block, AbstractLayer):
            raise ValueError(f"block must be an rmtjax.kernels layer, got {type(block).__name__}")
        self.block = block
        self.weights = _weights(weights, 2)

    def __call__(self, state: KernelState) -> KernelState:
        return _weighted_sum([state, self.block(state)], self.weights)

    def num_activations(self) -> int:
        return self.block.num_activations()

    def keeps_layout(self) -> bool:
        return self.block.keeps_layout()
