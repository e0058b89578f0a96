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

from .._validate import as_real, check_range, concrete, error_if, flag, prng_key, static_int

__all__ = ["History", "cross_entropy", "mse", "train"]


def _mse(outputs, targets):
    return 0.5 * jnp.mean((outputs - targets) ** 2)


def _cross_entropy(outputs, targets):
    return jnp.mean(optax.softmax_cross_entropy(outputs, targets))


def _pair(outputs, targets):
    f = as_real(outputs, "outputs", ndim=2)
    y = as_real(targets, "targets", ndim=2)
    if f.shape != y.shape:
        raise ValueError(f"outputs and targets must have the same shape (n, k), got {f.shape} and {y.shape}")
    dt = np.result_type(np.dtype(f.dtype), np.dtype(y.dtype))
    return check_range(f.astype(dt), "outputs"), check_range(y.astype(dt), "targets")


def _probabilities(y, name: str):
    """Rows of ``y`` must be probability vectors: entries in [0, 1], sums 1 within ``100 k eps``."""
    tol = 100 * y.shape[1] * float(jnp.finfo(y.dtype).eps)
    bad = jnp.any((y < 0) | (y > 1)) | jnp.any(jnp.abs(jnp.sum(y, axis=1) - 1) > tol)
    return error_if(y, bad, f"{name} must be probability vectors for the cross-entropy (entries in [0, 1], rows "
                    f"summing to 1 within {tol:.1e}; one-hot, not centred, targets)")


def mse(outputs: Float[Array, "n k"], targets: Float[Array, "n k"]) -> Array:
    r""":math:`\frac{1}{2nk}\sum_{i,c}(f_{ic} - y_{ic})^2` (neural-tangents' normalization).

    Raises:
        ValueError: shapes other than two equal ``(n, k)``, or non-finite entries (under ``jit``:
            ``equinox.error_if``).
    """
    return _mse(*_pair(outputs, targets))


def cross_entropy(outputs: Float[Array, "n k"], targets: Float[Array, "n k"]) -> Array:
    r"""Softmax cross-entropy :math:`-\frac1n\sum_i\sum_c y_{ic}\log\mathrm{softmax}(f_i)_c`
    with one-hot (or probability-vector) targets, not centred ones.

    Raises:
        ValueError: shapes other than two equal ``(n, k)``, non-finite entries, or targets that
            are not probability vectors (entries in [0, 1], rows summing to 1); under ``jit``:
            ``equinox.error_if``.
    """
    f, y = _pair(outputs, targets)
    return _cross_entropy(f, _probabilities(y, "targets"))


_LOSSES = {"mse": _mse, "cross_entropy": _cross_entropy}


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
        diverged_at: ``None`` for a run that stayed finite; with ``on_divergence="stop"``, the
            epoch at which the parameters, the loss or the outputs became non-finite (training
            stopped there; the records end at the last finite one and the model holds the last
            finite parameters).
    """

    epoch: np.ndarray
    step: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    outputs: np.ndarray | None
    records: list
    wall_time: float
    diverged_at: int | None = None


def _positive_int(v, name, minimum=1):
    return static_int(v, name, lo=minimum, hi=2**31 - 1)


def _finite_tree(tree):
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


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
        return p, s, _finite_tree(p)
    n = x.shape[0]
    steps = n // batch_size
    perm = jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)
    (p, s), _ = jax.lax.scan(lambda c, b: _step(c, b, rest, static), (p, s), (x[perm], y[perm]))
    return p, s, _finite_tree(p)


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
    on_divergence: str = "raise",
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
        on_divergence: what a run whose parameters, loss or recorded outputs become non-finite
            (NaN or inf: too large a learning rate, typically) does: ``"raise"`` (default) a
            ``ValueError`` naming the epoch, the model keeping the last finite parameters;
            ``"stop"``: training stops, ``History.diverged_at`` holds the epoch, the records end
            at the last finite one and the model keeps the last finite parameters. No History
            ever holds a NaN loss.

    Returns:
        A :class:`History`.

    Raises:
        ValueError: ``x`` ``(n, d)`` / ``y`` ``(n, k)`` not real, finite and consistent (for
            ``loss="cross_entropy"``, rows of ``y`` must be probability vectors), a model without
            trainable parameters or whose outputs do not match ``y``, an optimizer that is not an
            optax transformation, a loss that is not a known name or a function returning a scalar,
            ``epochs``/``batch_size``/``record_every`` not static integers in range, a missing or
            invalid ``key``, ``eval_x`` of the wrong shape or non-finite, bad flags; and (with
            ``on_divergence="raise"``) a diverging run.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, nnx.Module):
        raise ValueError(f"model must be an nnx.Module, got {type(model).__name__}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update") and callable(optimizer.init)):
        raise ValueError(f"optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.1)), got "
                         f"{type(optimizer).__name__}")
    x = _host(x, "x")
    y = _host(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be (n, d) and y (n, k) with the same n, got shapes {x.shape} and {y.shape}")
    epochs = _positive_int(epochs, "epochs", 0)
    record_every = _positive_int(record_every, "record_every")
    progress = flag(progress, "progress")
    if not isinstance(desc, str):
        raise ValueError(f"desc must be a string, got {type(desc).__name__}")
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function callback(model, epoch), got {type(callback).__name__}")
    n = x.shape[0]
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
        if batch_size > n:
            raise ValueError(f"batch_size must be <= n = {n}, got {batch_size}")
        if key is None:
            raise ValueError("key is required for minibatch training (batch_size is set)")
    if key is not None:
        key = prng_key(key, "key")
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {tuple(_LOSSES)} or a callable, got {loss!r}")
        if loss == "cross_entropy":
            _probabilities(jnp.asarray(y), "y")
        loss_fn = _LOSSES[loss]
    elif callable(loss):
        loss_fn = loss
    else:
        raise ValueError(f"loss must be one of {tuple(_LOSSES)} or a callable, got {loss!r}")
    if eval_x is not None:
        eval_x = _host(eval_x, "eval_x")
        if eval_x.shape[1] != x.shape[1]:
            raise ValueError(f"eval_x must be (m, {x.shape[1]}), got shape {eval_x.shape}")

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("model has no trainable parameters (nnx.Param)")
    dt = leaves[0].dtype
    x, y = jnp.asarray(x, dt), jnp.asarray(y, dt)
    eval_x = None if eval_x is None else jnp.asarray(eval_x, dt)
    try:
        out = jax.eval_shape(lambda p: _forward(p, rest, x, graphdef), params)
    except Exception as e:  # noqa: BLE001 - a model that cannot take x
        raise ValueError(f"model cannot be applied to x of shape {x.shape}: {e}") from None
    if out.shape != y.shape:
        raise ValueError(f"model outputs have shape {out.shape}, y has {y.shape}: they must match")
    lshape = jax.eval_shape(loss_fn, out, y).shape
    if lshape != ():
        raise ValueError(f"loss must return a scalar, got shape {lshape}")

    opt_state = optimizer.init(params)
    steps_per_epoch = 1 if batch_size is None else n // batch_size
    static = (graphdef, optimizer, loss_fn, batch_size)

    def epoch_fn(p, s, k):
        return _epoch(p, s, rest, x, y, k, static)  # (params, state, params finite)

    def measure(p):
        return _measure(p, rest, x, y, eval_x, static)

    hist = {"epoch": [], "loss": [], "accuracy": [], "outputs": [], "records": []}
    bar = tqdm(total=epochs, desc=desc, disable=not progress)

    def record(p, epoch) -> bool:
        """Records epoch ``epoch``; False (nothing recorded) if its loss or outputs are not finite."""
        l, a, o = measure(p)
        if not (np.isfinite(float(l)) and (o is None or np.all(np.isfinite(np.asarray(o))))):
            return False
        hist["epoch"].append(epoch)
        hist["loss"].append(float(l))
        hist["accuracy"].append(float(a))
        if o is not None:
            hist["outputs"].append(np.asarray(o))
        if callback is not None:
            nnx.update(model, p)
            hist["records"].append(callback(model, epoch))
        bar.set_postfix(loss=f"{float(l):.4g}", acc=f"{float(a):.3f}")
        return True

    def diverged(epoch, last_finite):
        bar.close()
        nnx.update(model, last_finite)
        if on_divergence == "raise":
            what = "the initial loss (or outputs) of model is" if epoch == 0 else \
                f"training diverged at epoch {epoch}: the parameters, loss or outputs became"
            raise ValueError(f"train: {what} non-finite (NaN or inf); lower the optimizer's learning rate (or check "
                             "the model and the loss). The model keeps the last finite parameters; pass "
                             "on_divergence='stop' to get the History up to there")
        return epoch

    diverged_at = None
    wall = 0.0
    if not record(params, 0):
        diverged_at = diverged(0, params)
    keys = jax.random.split(key, max(epochs, 1)) if key is not None else None
    last = params
    for e in range(1, epochs + 1 if diverged_at is None else 1):
        t0 = time.perf_counter()
        new_params, new_state, finite = epoch_fn(params, opt_state, None if keys is None else keys[e - 1])
        jax.block_until_ready(new_params)
        wall += time.perf_counter() - t0
        if not bool(finite):
            diverged_at = diverged(e, params)
            break
        params, opt_state = new_params, new_state
        bar.update()
        if e % record_every == 0 or e == epochs:
            if not record(params, e):
                diverged_at = diverged(e, last)
                params = last
                break
            last = params
    bar.close()
    nnx.update(model, params)
    ep = np.asarray(hist["epoch"], dtype=np.int64)
    return History(ep, ep * steps_per_epoch, np.asarray(hist["loss"]), np.asarray(hist["accuracy"]),
                   np.stack(hist["outputs"]) if hist["outputs"] else None, hist["records"], wall, diverged_at)


def _host(a, name: str) -> np.ndarray:
    """A concrete, real, finite 2-d array (training data live on the host)."""
    as_real(a, name, ndim=2)  # structure (dtype, rank, empty)
    v = concrete(a)  # from a itself: under jit, jnp.asarray of NumPy data would be a tracer
    if v is None:
        raise ValueError(f"{name} must be a concrete array (train runs its own compiled epochs; call it outside "
                         "jit), got a traced value")
    if not np.all(np.isfinite(v)):
        check_range(v, name)
    v = v if np.issubdtype(v.dtype, np.floating) else v.astype(np.float64)
    return v
