r"""Padded networks: many widths and depths in one compiled program.

:class:`MLP` has static widths and depth, so a ``jax.vmap`` over them is impossible and every
(width, depth) compiles a program of its own. :class:`PaddedMLP` allocates its parameters at a
largest width :math:`N` (``max_width``) and depth :math:`D` (``max_depth``) and takes the actual
``width`` :math:`n \le N` and ``depth`` :math:`L \le D` as *arrays*, like :math:`\sigma_w`,
:math:`\sigma_b`, the activation's parameters and the seed; a ``jax.vmap`` over any of them (or a
:func:`rmtjax.sweep.run` grid) is one XLA program.

**The network.** With the mask :math:`m_i = [i < n]` on the :math:`N` hidden units and
:math:`\odot` the entrywise product (NTK parameterization, Jacot et al. 2018, eq. 1; ``"standard"``
folds the factors into the parameters as :class:`Dense` does):

.. math::
    z^{1} &= \tfrac{\sigma_w}{\sqrt d}\, x W^{0} + \sigma_b b^{0},\\
    z^{\ell+1} &= \begin{cases}\tfrac{\sigma_w}{\sqrt n}\,\big(m\odot\phi(z^{\ell})\big) W^{\ell}
        + \sigma_b b^{\ell} & \ell < L \\ z^{\ell} & \ell \ge L \end{cases}
        \qquad (\ell = 1, \dots, D-1),\\
    f(x) &= \tfrac{\sigma_w}{\sqrt n}\,\big(m\odot\phi(z^{D})\big) W^{\rm out} + \sigma_b b^{\rm out}.

Masked units contribute exactly zero, the layers beyond the depth are the identity (a
``jnp.where``, so their parameters get exactly zero gradient), the readout acts on the last active
layer, and the :math:`1/\sqrt{\text{fan-in}}` factors use the *actual* width :math:`n`. On the
active units this is, operation for operation, :class:`MLP` of that width and depth; the padded
matrix products only add exact zeros (equal to about 1e-15 relative in float64: XLA may sum
in another order).

**The random draw** (the rule that makes a padded network a definite unpadded one).
:meth:`PaddedMLP.init` draws one vector of standard normals, ``jax.random.normal(key, (P,))``,
laid out as :class:`Dense` lays out a layer (weights row-major, then the bias), layer after
layer at the *padded* sizes: ``W0 (d, N), b0 (N,)``, then for each of the ``D - 1`` hidden
layers ``W (N, N), b (N,)``, then ``W_out (N, k), b_out (k,)``. The network of width ``n`` and
depth ``L`` is the :class:`MLP` whose layers are the leading blocks ``W0[:, :n], b0[:n]``,
``W[l][:n, :n], b[l][:n]`` (``l < L - 1``), ``W_out[:n], b_out`` (:meth:`PaddedMLP.to_mlp` builds
it). The entries outside those blocks are *inactive* (:meth:`PaddedMLP.active`): they never
touch the output, get exactly zero gradient, and :func:`train_padded` leaves them unchanged.
(So a padded draw is not ``MLP(..., rngs=seed)``'s draw: the reference is ``to_mlp``.)

Limits: ``depth >= 1`` (a depth-0 network has no hidden width to pad); scalar :math:`\sigma_w,
\sigma_b` shared by all layers; no residual blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._validate import ArgumentError, as_real, check_range, choice, concrete, prng_key, static_int
from ..activations import AbstractActivation, Relu
from ..kernels import FullyConnected
from ._network import MLP, _float_dtype, _input, _std
from ._train import _cross_entropy, _mse

__all__ = ["PaddedMLP", "PaddedParams", "PaddedTraining", "train_padded"]


class PaddedParams(NamedTuple):
    """The trainable parameters of a :class:`PaddedMLP`, at the padded sizes (``d`` inputs,
    ``k`` outputs, ``N = max_width``, ``D = max_depth``).

    Attributes:
        first_kernel: ``(d, N)``; first_bias: ``(N,)``.
        hidden_kernel: ``(D - 1, N, N)``; hidden_bias: ``(D - 1, N)`` (hidden layers ``1 .. D-1``).
        readout_kernel: ``(N, k)``; readout_bias: ``(k,)``.
    """

    first_kernel: Array
    first_bias: Array
    hidden_kernel: Array
    hidden_bias: Array
    readout_kernel: Array
    readout_bias: Array


def _int_hyper(x, name: str, hi: int):
    """A 0-d integer array in ``[1, hi]`` (eager ``ValueError`` or a compiled check), as int32."""
    if x is None or isinstance(x, (str, bytes)):
        raise ArgumentError(f"{name} must be an integer, got {type(x).__name__} ({x!r})")
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be an integer, got {type(x).__name__}") from None
    if arr.dtype == jnp.bool_:
        raise ArgumentError(f"{name} must be an integer, got a boolean ({x!r})")
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise ArgumentError(f"{name} must be an integer (array), got dtype {arr.dtype}")
    if arr.shape != ():
        raise ArgumentError(f"{name} must be 0-d (jax.vmap over a batch of them), got shape {arr.shape}")
    return check_range(arr, name, lo=1, hi=hi).astype(jnp.int32)


class PaddedMLP(eqx.Module):
    r"""A fully-connected network padded to ``max_width`` and ``max_depth``, whose actual width,
    depth, :math:`\sigma_w`, :math:`\sigma_b` and activation parameters are array leaves (see the
    module docstring for the map, the masks and the random-draw rule).

    The module holds the architecture, not the trainable parameters: :meth:`init` draws them
    (a :class:`PaddedParams`), ``net(params, x)`` applies them (``net`` itself is the ``apply``
    function of :func:`~rmtjax.finite.empirical_ntk`, ``jax.grad`` and optax).

    Args:
        width: hidden width :math:`n`, an integer in ``[1, max_width]`` (0-d; traced under ``vmap``).
        depth: number of hidden layers :math:`L`, an integer in ``[1, max_depth]``.
        W_std, b_std: :math:`\sigma_w`, :math:`\sigma_b` of every layer (0-d, finite, ``>= 0``).
        activation: an :mod:`rmtjax.activations` module (its parameters are array leaves).
        in_features: input dimension :math:`d` (static).
        out_features: number of outputs :math:`k` (static).
        max_width, max_depth: the padded sizes :math:`N`, :math:`D` (static, ``>= 1``).
        parameterization: ``"ntk"`` or ``"standard"`` (as :class:`Dense`).
        dtype: floating dtype of the parameters (default: JAX's default float).

    Raises:
        ValueError: ``width`` or ``depth`` not an integer in range (traced: a compiled check, so
            ``jax.jit``/``jax.vmap`` stop with the same message), ``W_std``/``b_std`` negative or
            not finite, bad static arguments.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.activations import Erf
        >>> from rmtjax.finite import PaddedMLP
        >>> x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
        >>> def outputs(width, depth, seed, W_std):
        ...     net = PaddedMLP(width, depth, W_std, 0.1, Erf(), in_features=4, max_width=64, max_depth=3)
        ...     return net(net.init(seed), x)
        >>> grid = jnp.array([8, 64, 16]), jnp.array([1, 3, 2]), jnp.array([0, 1, 2]), jnp.array([1.0, 1.5, 2.0])
        >>> jax.jit(jax.vmap(outputs))(*grid).shape  # three networks, one program
        (3, 3, 1)
        >>> net = PaddedMLP(16, 2, 2.0, 0.1, Erf(), in_features=4, max_width=64, max_depth=3)
        >>> params = net.init(2)
        >>> mlp = net.to_mlp(params)  # the unpadded network it equals
        >>> mlp.widths, float(jnp.max(jnp.abs(net(params, x) - mlp(x)))) < 1e-6
        ((16, 16), True)
    """

    width: Array
    depth: Array
    W_std: Array
    b_std: Array
    activation: AbstractActivation
    in_features: int = eqx.field(static=True)
    out_features: int = eqx.field(static=True)
    max_width: int = eqx.field(static=True)
    max_depth: int = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __init__(self, width: Int[ArrayLike, ""], depth: Int[ArrayLike, ""], W_std: ArrayLike = 1.0,
                 b_std: ArrayLike = 0.0, activation: AbstractActivation = Relu(), *, in_features: int,
                 out_features: int = 1, max_width: int, max_depth: int, parameterization: str = "ntk", dtype=None):
        self.in_features = static_int(in_features, "in_features", lo=1, hi=2**31 - 1)
        self.out_features = static_int(out_features, "out_features", lo=1, hi=2**31 - 1)
        self.max_width = static_int(max_width, "max_width", lo=1, hi=2**31 - 1)
        self.max_depth = static_int(max_depth, "max_depth", lo=1, hi=100_000)
        self.parameterization = choice(parameterization, "parameterization", ("ntk", "standard"))
        dt = _float_dtype(dtype)
        self.dtype = np.dtype(dt).name
        if not isinstance(activation, AbstractActivation):
            raise ArgumentError(f"activation must be an rmtjax.activations module, got {type(activation).__name__}")
        self.activation = activation
        self.width = _int_hyper(width, "width", self.max_width)
        self.depth = _int_hyper(depth, "depth", self.max_depth)
        self.W_std = _std(W_std, "W_std", dt)
        self.b_std = _std(b_std, "b_std", dt)

    # -- parameters -------------------------------------------------------------------------

    def _shapes(self) -> PaddedParams:
        d, k, n, m = self.in_features, self.out_features, self.max_width, self.max_depth - 1
        return PaddedParams((d, n), (n,), (m, n, n), (m, n), (n, k), (k,))

    def init(self, key: PRNGKeyArray | Int[ArrayLike, ""]) -> PaddedParams:
        """The parameters drawn from ``key`` (a PRNG key, or an integer seed ``s`` meaning
        ``jax.random.key(s)``; either may be traced, so ``jax.vmap`` over seeds works): one
        ``jax.random.normal`` draw at the padded sizes, in the layout of the module docstring;
        for ``parameterization="standard"`` the weights are scaled by :math:`\\sigma_w/\\sqrt{\\text{fan-in}}`
        (fan-in ``d`` for the first layer, the actual ``width`` after it) and the biases by
        :math:`\\sigma_b`."""
        key = _key(key)
        dt = jnp.dtype(self.dtype)
        m, n = self.max_depth - 1, self.max_width
        d, k = self.in_features, self.out_features
        # the layout of the module docstring: layer after layer, weights then bias
        sizes = (d * n + n, m * (n * n + n), n * k + k)
        first, hidden, readout = jnp.split(jax.random.normal(key, (sum(sizes),), dt), np.cumsum(sizes)[:2])
        hidden = hidden.reshape(m, n * n + n)
        p = PaddedParams(first[: d * n].reshape(d, n), first[d * n:], hidden[:, : n * n].reshape(m, n, n),
                         hidden[:, n * n:], readout[: n * k].reshape(n, k), readout[n * k:])
        if self.parameterization == "standard":
            s_in, s_hid, sb = self._scales(dt)
            p = PaddedParams(p.first_kernel * s_in, p.first_bias * sb, p.hidden_kernel * s_hid,
                             p.hidden_bias * sb, p.readout_kernel * s_hid, p.readout_bias * sb)
        return p

    def _scales(self, dt):
        """``(sigma_w / sqrt(d), sigma_w / sqrt(width), sigma_b)``."""
        w = self.W_std.astype(dt)
        return (w / math.sqrt(self.in_features), w / jnp.sqrt(self.width.astype(dt)), self.b_std.astype(dt))

    def active(self) -> PaddedParams:
        """Boolean masks, one per parameter array: ``True`` on the entries the network of this
        width and depth uses (the blocks of the module docstring), ``False`` on the padding."""
        n = self.max_width
        units = jnp.arange(n, dtype=jnp.int32) < self.width
        layers = jnp.arange(1, self.max_depth, dtype=jnp.int32) < self.depth
        both = units[:, None] & units[None, :]
        return PaddedParams(
            jnp.broadcast_to(units[None, :], (self.in_features, n)),
            units,
            layers[:, None, None] & both[None],
            layers[:, None] & units[None, :],
            jnp.broadcast_to(units[:, None], (n, self.out_features)),
            jnp.ones((self.out_features,), bool),
        )

    def _check_params(self, params) -> PaddedParams:
        if not isinstance(params, PaddedParams):
            raise ArgumentError(f"params must be a PaddedParams (from PaddedMLP.init), got {type(params).__name__}")
        for name, shape, a in zip(PaddedParams._fields, self._shapes(), params, strict=True):
            if tuple(jnp.shape(a)) != shape:
                raise ArgumentError(f"params.{name} must have shape {shape} (the padded sizes of this network), "
                                    f"got {tuple(jnp.shape(a))}")
        return params

    # -- the map ----------------------------------------------------------------------------

    def _mask(self, dt):
        return (jnp.arange(self.max_width, dtype=jnp.int32) < self.width).astype(dt)[None, :]

    def _features(self, p: PaddedParams, x):
        dt = p.first_kernel.dtype
        s_in, s_hid, sb = self._scales(dt)
        mask = self._mask(dt)
        phi = self.activation
        x = x.astype(dt)
        if self.parameterization == "ntk":
            z = s_in * (x @ p.first_kernel) + sb * p.first_bias[None, :]
        else:
            z = x @ p.first_kernel + p.first_bias[None, :]

        def layer(z, wbl):
            w, b, l = wbl
            h = phi(z) * mask
            if self.parameterization == "ntk":
                new = s_hid * (h @ w) + sb * b[None, :]
            else:
                new = h @ w + b[None, :]
            return jnp.where(l < self.depth, new, z), None

        ls = jnp.arange(1, self.max_depth, dtype=jnp.int32)
        z, _ = jax.lax.scan(layer, z, (p.hidden_kernel, p.hidden_bias, ls))
        return phi(z) * mask

    def _apply(self, p: PaddedParams, x):
        h = self._features(p, x)
        if self.parameterization == "ntk":
            _, s_hid, sb = self._scales(h.dtype)
            return s_hid * (h @ p.readout_kernel) + sb * p.readout_bias[None, :]
        return h @ p.readout_kernel + p.readout_bias[None, :]

    def features(self, params: PaddedParams, x: Float[ArrayLike, "n d"]) -> Float[Array, "n max_width"]:
        r"""The readout's input :math:`m\odot\phi(z^{D})`, ``(n, max_width)``: the :meth:`MLP.features`
        of :meth:`to_mlp` in the first ``width`` columns, zeros after them."""
        return self._features(self._check_params(params), _input(x, self.in_features))

    def __call__(self, params: PaddedParams, x: Float[ArrayLike, "n d"]) -> Float[Array, "n k"]:
        """Outputs ``(n, out_features)`` of the network with parameters ``params`` at inputs ``x``
        (real and finite, ``(n, in_features)``)."""
        return self._apply(self._check_params(params), _input(x, self.in_features))

    # -- the unpadded network ---------------------------------------------------------------

    def spec(self) -> FullyConnected:
        """The :class:`~rmtjax.kernels.FullyConnected` spec of this network (its infinite-width
        kernels: ``rmtjax.kernels.kernel(x1, x2, net.spec())``); needs a concrete depth (and
        width, for the standard parameterization)."""
        width, depth = self._concrete()
        return FullyConnected(depth, self.W_std, self.b_std, self.activation, parameterization=self.parameterization,
                              widths=width if self.parameterization == "standard" else None)

    def _concrete(self) -> tuple[int, int]:
        w, d = concrete(self.width), concrete(self.depth)
        if w is None or d is None:
            raise ArgumentError("width and depth must be concrete (outside jit/vmap) to build the unpadded network, "
                                "got traced values")
        return int(w), int(d)

    def to_mlp(self, params: PaddedParams) -> MLP:
        """The unpadded :class:`MLP` this network equals: width ``width``, depth ``depth``, the
        same :math:`\\sigma_w, \\sigma_b`, activation and parameterization, and as parameters the
        active blocks of ``params`` (module docstring). Eager only (width and depth concrete)."""
        params = self._check_params(params)
        width, depth = self._concrete()
        mlp = MLP(self.spec(), self.in_features, self.out_features, width=width, dtype=self.dtype, rngs=0)
        blocks = [(params.first_kernel[:, :width], params.first_bias[:width])]
        blocks += [(params.hidden_kernel[l, :width, :width], params.hidden_bias[l, :width]) for l in range(depth - 1)]
        blocks.append((params.readout_kernel[:width], params.readout_bias))
        for layer, (w, b) in zip(mlp.layers, blocks, strict=True):
            layer.kernel[...] = jnp.asarray(w)
            layer.bias[...] = jnp.asarray(b)
        return mlp


def _key(key):
    dtype = getattr(key, "dtype", None)
    if dtype is not None and (jnp.issubdtype(dtype, jax.dtypes.prng_key) or np.dtype(dtype) == np.uint32):
        return prng_key(key, "key")
    if isinstance(key, (bool, np.bool_)) or (dtype is not None and not jnp.issubdtype(dtype, jnp.integer)):
        raise ArgumentError(f"key must be a JAX PRNG key or an integer seed, got {key!r}")
    if dtype is None and not isinstance(key, (int, np.integer)):
        raise ArgumentError(f"key must be a JAX PRNG key or an integer seed, got {type(key).__name__} ({key!r})")
    seed = jnp.asarray(key)
    if seed.shape != ():
        raise ArgumentError(f"key must be one seed (0-d; jax.vmap over a batch of seeds), got shape {seed.shape}")
    return jax.random.key(check_range(seed, "key", lo=0))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


class PaddedTraining(NamedTuple):
    """What :func:`train_padded` returns.

    Attributes:
        params: the trained :class:`PaddedParams` (inactive entries as they were).
        loss: ``(epochs + 1,)`` training loss on the whole training set at initialization and
            after every epoch (non-finite once a run diverges: a sweep carries on).
    """

    params: PaddedParams
    loss: Array


_LOSSES = {"mse": _mse, "cross_entropy": _cross_entropy}


def train_padded(
    net: PaddedMLP,
    params: PaddedParams,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "n k"],
    optimizer: optax.GradientTransformation,
    *,
    epochs: int,
    loss: str | Callable[[Array, Array], Array] = "mse",
    batch_size: int | None = None,
    key: PRNGKeyArray | None = None,
) -> PaddedTraining:
    r"""Trains a :class:`PaddedMLP` with an optax optimizer: a pure function, so ``jax.vmap``
    over the network's width, depth, :math:`\sigma_w`, :math:`\sigma_b`, activation parameters,
    over seeds (``params``, ``key``), data or anything the optimizer is built from is one program.

    The schedule is :func:`~rmtjax.finite.train`'s: ``batch_size=None`` is full-batch gradient
    descent (one step per epoch); otherwise epoch ``e`` (``1 .. epochs``) takes ``n // batch_size``
    steps on the minibatches ``perm[:steps * batch_size].reshape(steps, batch_size)`` of
    ``perm = jax.random.permutation(jax.random.split(key, epochs)[e - 1], n)``. So training
    ``net.to_mlp(params)`` with :func:`~rmtjax.finite.train` (same optimizer, loss, batches and
    key) gives the active blocks of the result, and its ``History.loss`` (``record_every=1``)
    is ``loss``. The updates of the inactive entries are set to zero before they are applied,
    so they stay exactly unchanged under any optimizer (weight decay included).

    Args:
        net: the network (its hyperparameters may be traced).
        params: its parameters (:meth:`PaddedMLP.init`).
        x: inputs ``(n, in_features)``; y: targets ``(n, out_features)`` (real, finite).
        optimizer: an optax transformation (``optax.sgd``, ``optax.adam``, a chain, ...).
        epochs: number of epochs (static, ``>= 0``).
        loss: ``"mse"`` (:func:`~rmtjax.finite.mse`), ``"cross_entropy"`` or a function
            ``loss(outputs, targets) -> scalar``.
        batch_size: minibatch size (static, ``<= n``; ``None``: full batch).
        key: PRNG key of the minibatch permutations (required with ``batch_size``).

    Returns:
        :class:`PaddedTraining` ``(params, loss)``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from rmtjax.activations import Tanh
        >>> from rmtjax.finite import PaddedMLP, train_padded
        >>> x = jnp.linspace(-1.0, 1.0, 16).reshape(8, 2)
        >>> y = jnp.sin(3 * x[:, :1])
        >>> def final_loss(width, depth, seed):
        ...     net = PaddedMLP(width, depth, 1.5, 0.1, Tanh(), in_features=2, max_width=32, max_depth=4)
        ...     return train_padded(net, net.init(seed), x, y, optax.adam(1e-2), epochs=20).loss
        >>> losses = jax.jit(jax.vmap(final_loss))(jnp.array([8, 32]), jnp.array([1, 4]), jnp.array([0, 1]))
        >>> losses.shape, bool(jnp.all(losses[:, -1] < losses[:, 0]))
        ((2, 21), True)
    """
    if not isinstance(net, PaddedMLP):
        raise ArgumentError(f"net must be a PaddedMLP, got {type(net).__name__}")
    params = net._check_params(params)
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update") and callable(optimizer.init)):
        raise ArgumentError(f"optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.1)), got "
                            f"{type(optimizer).__name__}")
    x = _input(x, net.in_features)
    y = as_real(y, "y", ndim=2)
    if y.shape != (x.shape[0], net.out_features):
        raise ArgumentError(f"y must have shape (n, out_features) = {(x.shape[0], net.out_features)}, got {y.shape}")
    y = check_range(y, "y")
    epochs = static_int(epochs, "epochs", lo=0, hi=2**31 - 1)
    n = x.shape[0]
    if batch_size is not None:
        batch_size = static_int(batch_size, "batch_size", lo=1, hi=n)
        if key is None:
            raise ArgumentError("key is required for minibatch training (batch_size is set)")
    if key is not None:
        key = prng_key(key, "key")
    if isinstance(loss, str):
        loss_fn = _LOSSES.get(loss)
        if loss_fn is None:
            raise ArgumentError(f"loss must be one of {tuple(_LOSSES)} or a callable, got {loss!r}")
    elif callable(loss):
        loss_fn = loss
    else:
        raise ArgumentError(f"loss must be one of {tuple(_LOSSES)} or a callable, got {loss!r}")
    dt = params.first_kernel.dtype
    return _train(net, params, x.astype(dt), y.astype(dt), key, optimizer, loss_fn, epochs, batch_size)


@eqx.filter_jit
def _train(net, params, x, y, key, optimizer, loss_fn, epochs, batch_size):
    active = net.active()

    def step(carry, batch):
        p, s = carry
        xb, yb = batch
        g = jax.grad(lambda p: loss_fn(net._apply(p, xb), yb))(p)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counters and floats (Adam)
            updates, s = optimizer.update(g, s, p)
        updates = jax.tree_util.tree_map(lambda u, a: jnp.where(a, u, jnp.zeros_like(u)), updates, active)
        return (optax.apply_updates(p, updates), s), None

    def full_loss(p):
        return loss_fn(net._apply(p, x), y)

    def epoch(carry, k):
        if batch_size is None:
            carry, _ = step(carry, (x, y))
        else:
            n = x.shape[0]
            steps = n // batch_size
            perm = jax.random.permutation(k, n)[: steps * batch_size].reshape(steps, batch_size)
            carry, _ = jax.lax.scan(step, carry, (x[perm], y[perm]))
        return carry, full_loss(carry[0])

    with jax.numpy_dtype_promotion("standard"):
        state = optimizer.init(params)
    loss0 = full_loss(params)
    if key is None:
        keys = jnp.zeros((epochs,))  # placeholders: full-batch epochs use no randomness
    else:
        keys = jax.random.split(key, max(epochs, 1))[:epochs]
    (params, _), losses = jax.lax.scan(epoch, (params, state), keys, length=epochs)
    return PaddedTraining(params, jnp.concatenate([loss0[None], losses]))
