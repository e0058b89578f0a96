r"""Training loops with optax: full-batch gradient descent, minibatch SGD, Adam, weight decay.

:func:`train` optimises ``nnx.state(model, nnx.Param)`` with any ``optax`` transformation for a
number of epochs (one ``lax.scan`` over the minibatches of an epoch, compiled once), records the
training loss, accuracy and optionally the outputs on evaluation inputs every ``record_every``
epochs, calls a user callback at the same epochs (e.g. to compute penultimate-layer features for
neural-collapse metrics), shows a tqdm progress bar, and leaves the trained weights in ``model``.

Losses (neural-tangents' conventions, so gradient flow on :func:`mse` with learning rate
:math:`\eta` for time :math:`t` is ``rmtjax.regression.gradient_descent_mse(..., learning_rate=eta)``
at ``t``):

.. math::
    L_{\rm mse} = \frac{1}{2nk}\sum_{i,c}(f_c(x_i) - y_{ic})^2, \qquad
    L_{\rm ce} = -\frac1n\sum_i \sum_c y_{ic}\log\operatorname{softmax}(f(x_i))_c .

Example (minibatch SGD with momentum and weight decay on MNIST, recording features)::

    import jax, optax
    from flax import nnx
    from rmtjax.activations import Relu
    from rmtjax.data._real import mnist
    from rmtjax.finite import MLP, train
    from rmtjax.kernels import FullyConnected

    ds = mnist(1000, 200)
    net = MLP(FullyConnected(2, W_std=2**0.5, b_std=0.0, activation=Relu()), 784, 10, width=256,
              rngs=nnx.Rngs(0))
    opt = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.5, momentum=0.9))
    hist = train(net, ds.x_train, ds.y_train, opt, loss="cross_entropy", epochs=50, batch_size=100,
                 key=jax.random.key(1), record_every=5,
                 callback=lambda net, epoch: {"features": net.features(ds.x_train)})
    hist.loss, hist.accuracy, hist.records[-1]["features"].shape
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = ["History", "cross_entropy", "mse", "train"]


def mse(outputs: Float[Array, "n k"], targets: Float[Array, "n k"]) -> Array:
    r""":math:`\frac{1}{2nk}\sum_{i,c}(f_{ic} - y_{ic})^2` (neural-tangents' normalization)."""
    return 0.5 * jnp.mean((outputs - targets) ** 2)


def cross_entropy(outputs: Float[Array, "n k"], targets: Float[Array, "n k"]) -> Array:
    r"""Softmax cross-entropy :math:`-\frac1n\sum_i\sum_c y_{ic}\log\mathrm{softmax}(f_i)_c`
    with one-hot (or probability-vector) targets, not centred ones."""
    return jnp.mean(optax.softmax_cross_entropy(outputs, targets))


_LOSSES = {"mse": mse, "cross_entropy": cross_entropy}


class History(NamedTuple):
    """What :func:`train` recorded, at the epochs ``epoch`` (``0`` is the initialization).

    Attributes:
        epoch: ``(r,)`` epochs of the records (every ``record_every`` epochs and the last one).
        step: ``(r,)`` optimizer steps taken by then.
        loss: ``(r,)`` training loss on the whole training set.
        accuracy: ``(r,)`` training accuracy (argmax of outputs vs argmax of targets).
        outputs: ``(r, m, k)`` outputs on ``eval_x`` (``None`` without ``eval_x``).
        records: list of the callback's return values (empty without a callback).
        wall_time: seconds spent in training steps (compilation of the first epoch included).
    """

    epoch: np.ndarray
    step: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    outputs: np.ndarray | None
    records: list
    wall_time: float


def _positive_int(v, name, minimum=1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _forward(params, rest, x, graphdef):
    return nnx.merge(graphdef, params, rest)(x)


def _step(carry, batch, rest, static):
    graphdef, optimizer, loss_fn, _ = static
    p, s = carry
    xb, yb = batch
    g = jax.grad(lambda p: loss_fn(_forward(p, rest, xb, graphdef), yb))(p)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int counters and floats (Adam)
        updates, s = optimizer.update(g, s, p)
    return (optax.apply_updates(p, updates), s), None


# Module-level compiled functions: the network's graph, the optimizer, the loss and the batch size
# are static (hashed), so repeated `train` calls with the same ones and the same shapes reuse the
# compiled epoch (e.g. many seeds, or many record intervals).
@eqx.filter_jit
def _epoch(p, s, rest, x, y, key, static):
    batch_size = static[3]
    if batch_size is None:
        (p, s), _ = _step((p, s), (x, y), rest, static)
        return p, s
    n = x.shape[0]
    steps = n // batch_size
    perm = jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)
    (p, s), _ = jax.lax.scan(lambda c, b: _step(c, b, rest, static), (p, s), (x[perm], y[perm]))
    return p, s


@eqx.filter_jit
def _measure(p, rest, x, y, eval_x, static):
    graphdef, _, loss_fn, _ = static
    out = _forward(p, rest, x, graphdef)
    acc = jnp.mean((jnp.argmax(out, axis=1) == jnp.argmax(y, axis=1)).astype(out.dtype))
    return loss_fn(out, y), acc, (None if eval_x is None else _forward(p, rest, eval_x, graphdef))


def train(
    model: nnx.Module,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "n k"],
    optimizer: optax.GradientTransformation,
    *,
    epochs: int,
    loss: str | Callable[[Array, Array], Array] = "mse",
    batch_size: int | None = None,
    key: PRNGKeyArray | None = None,
    record_every: int = 1,
    eval_x: Float[ArrayLike, "m d"] | None = None,
    callback: Callable[[nnx.Module, int], Any] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> History:
    r"""Trains ``model`` in place with ``optimizer`` and returns the recorded trajectory.

    One epoch is ``n // batch_size`` optimizer steps on minibatches of a fresh random permutation
    of the training set (the last ``n mod batch_size`` points of the permutation are skipped
    that epoch); ``batch_size=None`` is full-batch gradient descent (one step per epoch, no
    shuffling), which with ``optax.sgd(eta)`` and ``loss="mse"`` discretises the gradient flow of
    ``rmtjax.regression.gradient_descent_mse`` at time ``t = eta * step``. Only the
    ``nnx.Param`` variables are trained (not the :class:`Hyperparameter` ones).

    Args:
        model: an ``nnx`` module mapping ``(n, d)`` to ``(n, k)`` (e.g. :class:`MLP`); updated
            in place.
        x: training inputs ``(n, d)``.
        y: targets ``(n, k)``: one-hot (or centred one-hot) for classification, any values for MSE.
        optimizer: an optax transformation: ``optax.sgd(lr)`` (GD/SGD), ``optax.sgd(lr,
            momentum=0.9)``, ``optax.adam(lr)``, ``optax.adamw(lr, weight_decay=...)``, or a
            chain with ``optax.add_decayed_weights(wd)``.
        epochs: number of epochs (>= 0; 0 only records the initialization).
        loss: ``"mse"`` (:func:`mse`), ``"cross_entropy"`` (:func:`cross_entropy`), or a
            callable ``loss(outputs, targets) -> scalar`` (mean over the batch).
        batch_size: minibatch size (``None``: full batch).
        key: PRNG key for the minibatch permutations (required when ``batch_size`` is set).
        record_every: record every this many epochs (always at epoch 0 and at the last epoch).
        eval_x: inputs whose outputs are recorded (``History.outputs``), e.g. a test set.
        callback: ``callback(model, epoch)`` called at every record with the current weights in
            ``model``; its return values are collected in ``History.records``.
        progress: show a tqdm progress bar (loss and accuracy in its postfix).
        desc: the progress bar's label.

    Returns:
        A :class:`History`.
    """
    from tqdm.auto import tqdm

    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be (n, d) and y (n, k) with the same n, got shapes {x.shape} and {y.shape}")
    if not (jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(y.dtype, jnp.floating)):
        raise ValueError(f"x and y must be floating point, got {x.dtype} and {y.dtype}")
    if not (np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(y)))):
        raise ValueError("x and y must be finite")
    epochs = _positive_int(epochs, "epochs", 0)
    record_every = _positive_int(record_every, "record_every")
    n = x.shape[0]
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
        if batch_size > n:
            raise ValueError(f"batch_size must be <= n = {n}, got {batch_size}")
        if key is None:
            raise ValueError("key is required for minibatch training (batch_size is set)")
    loss_fn = _LOSSES.get(loss) if isinstance(loss, str) else loss
    if loss_fn is None or not callable(loss_fn):
        raise ValueError(f"loss must be one of {tuple(_LOSSES)} or a callable, got {loss!r}")
    if eval_x is not None:
        eval_x = jnp.asarray(eval_x)
        if eval_x.ndim != 2 or eval_x.shape[1] != x.shape[1]:
            raise ValueError(f"eval_x must be (m, {x.shape[1]}), got shape {eval_x.shape}")

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    dt = jax.tree_util.tree_leaves(params)[0].dtype
    x, y = x.astype(dt), y.astype(dt)
    eval_x = None if eval_x is None else eval_x.astype(dt)

    opt_state = optimizer.init(params)
    steps_per_epoch = 1 if batch_size is None else n // batch_size
    static = (graphdef, optimizer, loss_fn, batch_size)

    def epoch_fn(p, s, k):
        return _epoch(p, s, rest, x, y, k, static)

    def measure(p):
        return _measure(p, rest, x, y, eval_x, static)

    hist = {"epoch": [], "loss": [], "accuracy": [], "outputs": [], "records": []}
    bar = tqdm(total=epochs, desc=desc, disable=not progress)

    def record(p, epoch):
        l, a, o = measure(p)
        hist["epoch"].append(epoch)
        hist["loss"].append(float(l))
        hist["accuracy"].append(float(a))
        if o is not None:
            hist["outputs"].append(np.asarray(o))
        if callback is not None:
            nnx.update(model, p)
            hist["records"].append(callback(model, epoch))
        bar.set_postfix(loss=f"{float(l):.4g}", acc=f"{float(a):.3f}")

    record(params, 0)
    wall = 0.0
    keys = jax.random.split(key, max(epochs, 1)) if key is not None else None
    for e in range(1, epochs + 1):
        t0 = time.perf_counter()
        params, opt_state = epoch_fn(params, opt_state, None if keys is None else keys[e - 1])
        jax.block_until_ready(params)
        wall += time.perf_counter() - t0
        bar.update()
        if e % record_every == 0 or e == epochs:
            record(params, e)
    bar.close()
    nnx.update(model, params)
    ep = np.asarray(hist["epoch"])
    return History(ep, ep * steps_per_epoch, np.asarray(hist["loss"]), np.asarray(hist["accuracy"]),
                   np.stack(hist["outputs"]) if hist["outputs"] else None, hist["records"], wall)
