r"""Finite-width Flax (nnx) networks built from the same spec as the infinite-width kernels.

One :class:`rmtjax.kernels.FullyConnected` spec gives both :func:`rmtjax.kernels.kernel` (the
infinite-width NNGP/NTK) and :class:`MLP` (a finite network whose width -> infinity limit has
exactly those kernels). The layers follow neural-tangents' ``stax.Dense`` (Novak et al. 2020):

* ``parameterization="ntk"`` (Jacot et al. 2018, eq. 1):
  :math:`z^{\ell} = \frac{\sigma_{w,\ell}}{\sqrt{n_\ell}}\,W^{\ell} h^{\ell} + \sigma_{b,\ell}\,b^{\ell}`
  with :math:`W^\ell_{ij}, b^\ell_i \sim \mathcal N(0, 1)` trained directly;
* ``parameterization="standard"`` (Sohl-Dickstein et al. 2020):
  :math:`z^{\ell} = W^{\ell} h^{\ell} + b^{\ell}` with
  :math:`W^\ell_{ij} \sim \mathcal N(0, \sigma_{w,\ell}^2/n_\ell)`,
  :math:`b^\ell_i \sim \mathcal N(0, \sigma_{b,\ell}^2)`;

where :math:`h^0 = x`, :math:`h^{\ell} = \phi(z^{\ell-1})` and :math:`n_\ell` is the fan-in.
A plain network is ``Dense_0 -> phi -> Dense_1 -> ... -> phi -> Dense_depth``. With
``residual=True`` the hidden layers ``1 .. depth-1`` are residual blocks

.. math::
    z^{\ell} = z^{\ell-1} + \mathrm{Dense}_\ell\big(\phi(z^{\ell-1})\big),

(all hidden widths equal), whose infinite-width kernels are those of the neural-tangents graph
``FanOut(2) -> parallel(Identity(), serial(phi, Dense)) -> FanInSum()`` (:func:`stax_layers`).

Batches of independently initialised networks (one per seed) come from :func:`init_ensemble`,
a ``jax.vmap`` over keys, in the functional form ``(apply, params)`` used by the empirical
kernels and by ``jax`` transformations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .. import kernels, stax
from .._validate import as_real, check_range, choice, flag, prng_key, static_int
from ..kernels import FullyConnected, Kernel, kernel

__all__ = ["Dense", "Ensemble", "Hyperparameter", "MLP", "functional", "init_ensemble", "stax_layers"]


class Hyperparameter(nnx.Variable):
    """A fixed (untrained) array of a network: the per-layer :math:`\\sigma_w`, :math:`\\sigma_b`.

    ``nnx.state(model, nnx.Param)`` (what :func:`train` optimises) does not contain it."""


def _float_dtype(dtype):
    try:
        dt = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    except TypeError:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dt}")
    return dt


class Dense(nnx.Module):
    r"""A fully-connected layer in neural-tangents' conventions (see the module docstring).

    Args:
        in_features, out_features: fan-in :math:`n` and fan-out.
        W_std, b_std: :math:`\sigma_w`, :math:`\sigma_b` (scalars).
        bias: whether the layer has a bias.
        parameterization: ``"ntk"`` or ``"standard"``.
        dtype: floating dtype of the parameters.
        rngs: ``nnx.Rngs``; one draw of its ``params`` stream gives the standard normals of
            the weights (row-major) followed by those of the bias.
        normals: instead of ``rngs``, those standard normals, shape
            ``(in_features * out_features + out_features,)`` (without bias: no trailing part).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> layer = Dense(3, 2, 1.5, 0.1, rngs=nnx.Rngs(0))
        >>> layer(jnp.ones((4, 3))).shape
        (4, 2)
    """

    def __init__(self, in_features: int, out_features: int, W_std: ArrayLike = 1.0, b_std: ArrayLike = 0.0, *,
                 bias: bool = True, parameterization: str = "ntk", dtype=None, rngs: nnx.Rngs | None = None,
                 normals: Array | None = None):
        parameterization = choice(parameterization, "parameterization", ("ntk", "standard"))
        in_features = static_int(in_features, "in_features", lo=1)
        out_features = static_int(out_features, "out_features", lo=1)
        bias = flag(bias, "bias")
        dt = _float_dtype(dtype)
        self.in_features, self.out_features = in_features, out_features
        self.parameterization = parameterization
        self.W_std = Hyperparameter(_std(W_std, "W_std", dt))
        self.b_std = Hyperparameter(_std(b_std, "b_std", dt))
        size = in_features * out_features + (out_features if bias else 0)
        if normals is None:
            if not isinstance(rngs, nnx.Rngs):
                raise ValueError(f"rngs must be an nnx.Rngs (or pass normals), got {type(rngs).__name__}")
            normals = jax.random.normal(rngs.params(), (size,), dt)
        else:
            normals = as_real(normals, "normals")
            if normals.shape != (size,):
                raise ValueError(f"normals must have shape ({size},), got {normals.shape}")
            normals = check_range(normals.astype(dt), "normals")
        w = normals[: in_features * out_features].reshape(in_features, out_features)
        b = normals[in_features * out_features :] if bias else None
        if parameterization == "standard":
            w = w * (self.W_std[...] / math.sqrt(in_features))
            b = None if b is None else b * self.b_std[...]
        self.kernel = nnx.Param(w)
        self.bias = None if b is None else nnx.Param(b)

    def __call__(self, x: Float[Array, "n in_features"]) -> Float[Array, "n out_features"]:
        """``x`` real and finite, ``(n, in_features)``."""
        return self._apply(_input(x, self.in_features))

    def _apply(self, x):
        w = self.kernel[...]
        if self.parameterization == "ntk":
            out = (self.W_std[...] / math.sqrt(self.in_features)) * (x @ w)
            return out if self.bias is None else out + self.b_std[...] * self.bias[...][None, :]
        out = x @ w
        return out if self.bias is None else out + self.bias[...][None, :]

    def effective(self) -> tuple[Array, Array]:
        r"""The affine map actually applied, :math:`z = h\,W_{\rm eff} + b_{\rm eff}`:
        ``(W_eff (in, out), b_eff (out,))`` (zeros for a layer without bias)."""
        w = self.kernel[...]
        b = jnp.zeros((self.out_features,), w.dtype) if self.bias is None else self.bias[...]
        if self.parameterization == "ntk":
            return (self.W_std[...] / math.sqrt(self.in_features)) * w, self.b_std[...] * b
        return w, b


def _input(x, d: int):
    """Network inputs: a real ``(n, d)`` array with finite entries (``ValueError``, or ``error_if``
    when traced: one cheap reduction per forward pass)."""
    x = as_real(x, "x", ndim=2)
    if x.shape[1] != d:
        raise ValueError(f"x must have {d} columns (the input dimension), got shape {x.shape}")
    return check_range(x, "x")


def _std(x, name: str, dtype):
    """A standard deviation: a real scalar, finite and ``>= 0`` (eager, or ``error_if`` when traced)."""
    return check_range(as_real(x, name, ndim=0).astype(dtype), name, lo=0.0)


def _check_spec(spec):
    if not isinstance(spec, FullyConnected):
        raise ValueError(f"spec must be an rmtjax.kernels.FullyConnected, got {type(spec).__name__}")
    return spec


def _hidden_widths(spec: FullyConnected, width) -> tuple[int, ...]:
    if width is None:
        if spec.widths is None and spec.depth > 0:
            raise ValueError("width is required (the spec has no widths)")
        return tuple(spec.widths or ())
    if isinstance(width, (tuple, list)):
        widths = tuple(static_int(w, "width", lo=1, hi=2**31 - 1) for w in width)
    else:
        widths = (static_int(width, "width", lo=1, hi=2**31 - 1),) * spec.depth
    if len(widths) != spec.depth:
        raise ValueError(f"width must be a positive integer or {spec.depth} positive integers, got {width!r}")
    if spec.widths is not None and tuple(spec.widths) != widths:
        raise ValueError(f"width {widths} disagrees with the spec's widths {spec.widths}")
    return widths


class MLP(nnx.Module):
    r"""The finite network of a :class:`~rmtjax.kernels.FullyConnected` spec.

    ``depth`` hidden layers of the given widths with the spec's activation, per-layer
    :math:`\sigma_w, \sigma_b` and parameterization, then a linear readout; see the module
    docstring for the layer maps and the residual variant. As every hidden width goes to
    infinity, the outputs at initialization are a centred Gaussian process with covariance
    ``kernel(x, x', spec).nngp`` and the empirical NTK tends to ``kernel(x, x', spec).ntk``
    (each output unit independently) — for ``residual=True``, to the kernels of
    :func:`stax_layers`.

    Args:
        spec: the network spec (depth, W_std, b_std, activation, parameterization).
        in_features: input dimension :math:`d`.
        out_features: number of outputs :math:`k` (e.g. classes).
        width: hidden width(s): an int or ``depth`` ints; may be omitted when ``spec.widths`` is
            set (standard parameterization), must agree with it otherwise.
        residual: hidden layers ``1 .. depth-1`` as residual blocks (needs equal widths).
        dtype: parameter dtype (default: JAX's default float, float64 under x64).
        rngs: ``nnx.Rngs`` (one draw of its ``params`` stream gives the standard normals of
            all layers, :class:`Dense`'s layout, layer after layer), or an int seed / PRNG key
            ``k`` meaning ``nnx.Rngs(params=k)``.

    Attributes:
        layers: the ``depth + 1`` :class:`Dense` layers (``layers[-1]`` is the readout).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from rmtjax.activations import Erf
        >>> from rmtjax.kernels import FullyConnected
        >>> spec = FullyConnected(2, W_std=1.5, b_std=0.1, activation=Erf())
        >>> net = MLP(spec, 784, 10, width=256, rngs=nnx.Rngs(0))
        >>> x = jnp.ones((5, 784))
        >>> net(x).shape, net.features(x).shape
        ((5, 10), (5, 256))
    """

    def __init__(self, spec: FullyConnected, in_features: int, out_features: int = 1, *, width=None,
                 residual: bool = False, dtype=None, rngs: nnx.Rngs | int | PRNGKeyArray):
        spec = _check_spec(spec)
        rngs = _rngs(rngs)
        in_features = static_int(in_features, "in_features", lo=1)
        out_features = static_int(out_features, "out_features", lo=1)
        widths = _hidden_widths(spec, width)
        residual = flag(residual, "residual")
        if residual and (spec.depth < 1 or len(set(widths)) > 1):
            raise ValueError(f"residual=True needs depth >= 1 and equal hidden widths, got {widths}")
        self.spec = nnx.data(spec)
        self.residual = residual
        self.widths = widths
        dt = _float_dtype(dtype)
        W, b = spec.layer_params(dt)  # arrays (traced under jit), validated by the spec
        sizes = (in_features,) + widths + (out_features,)
        counts = [sizes[l] * sizes[l + 1] + (sizes[l + 1] if spec.bias else 0) for l in range(spec.depth + 1)]
        # one draw for the whole network: one random-number kernel to compile, not 2 (depth + 1)
        normals = jax.random.normal(rngs.params(), (sum(counts),), dt)
        starts = np.cumsum([0] + counts)
        self.layers = nnx.List([
            Dense(sizes[l], sizes[l + 1], W[l], b[l], bias=spec.bias, parameterization=spec.parameterization,
                  dtype=dt, normals=normals[starts[l] : starts[l + 1]])
            for l in range(spec.depth + 1)
        ])

    def _phi(self, z):
        return self.spec.activation(z)

    def _input(self, x):
        return _input(x, self.layers[0].in_features)

    def features(self, x: Float[Array, "n d"]) -> Float[Array, "n width"]:
        r"""The penultimate representation :math:`h^{L} = \phi(z^{L-1})`, the readout's input
        (``x`` itself for ``depth = 0``); ``x`` real and finite, of shape ``(n, in_features)``."""
        return self._features(self._input(x))

    def _features(self, x):
        if self.spec.depth == 0:
            return x
        z = self.layers[0]._apply(x)
        for l in range(1, self.spec.depth):
            z = z + self.layers[l]._apply(self._phi(z)) if self.residual else self.layers[l]._apply(self._phi(z))
        return self._phi(z)

    def conjugate_kernels(self, x: Float[Array, "n d"]) -> Float[Array, "layers n n"]:
        r"""The empirical kernels of every Dense layer's input, ``(depth + 1, n, n)``:
        :math:`\hat G^{(\ell)} = \sigma_{w,\ell}^2\, h^{(\ell)} h^{(\ell)\top}/n_\ell
        + \sigma_{b,\ell}^2` (no bias term for a layer without bias), the covariance of Dense
        layer :math:`\ell`'s outputs given its input :math:`h^{(\ell)}` (:math:`h^{(0)} = x`);
        entry ``depth`` is the readout's, the conditional covariance of the network's outputs.
        These are the finite-width estimates of the NNGP at every depth that
        :mod:`rmtjax.finite_width` describes (mean :math:`K + G^{\{1\}}/n`, covariance
        :math:`V/n`)."""
        h = self._input(x)
        out, z, depth = [], None, self.spec.depth
        for l, layer in enumerate(self.layers):
            if l > 0:
                h = self._phi(z)
            G = layer.W_std[...] ** 2 * (h @ h.T) / layer.in_features
            out.append(G if layer.bias is None else G + layer.b_std[...] ** 2)
            if l < depth:
                step = layer._apply(h)
                z = z + step if (self.residual and l >= 1) else step
        return jnp.stack(out)

    def __call__(self, x: Float[Array, "n d"]) -> Float[Array, "n k"]:
        """Outputs ``(n, out_features)``; ``x`` real and finite, ``(n, in_features)`` (checked once,
        not layer by layer: a diverging training run is reported by :func:`train`)."""
        return self.layers[-1]._apply(self._features(self._input(x)))

    def readout(self) -> tuple[Array, Array]:
        r"""The last layer as a linear classifier on :meth:`features`:
        ``(W (k, width), b (k,))`` with ``net(x) = features(x) @ W.T + b`` (parameterization
        factors included)."""
        w, b = self.layers[-1].effective()
        return w.T, b

    def infinite_width_kernel(self, x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"] | None = None) -> Kernel:
        """The infinite-width ``Kernel(nngp, ntk)`` of this architecture (same spec; for the
        standard parameterization, the NTK at these widths)."""
        return infinite_width_kernel(x1, x2, self.spec, widths=self.widths, residual=self.residual)


def _rngs(rngs) -> nnx.Rngs:
    """``nnx.Rngs``, an int seed (``>= 0``) or a PRNG key, as ``nnx.Rngs``."""
    if isinstance(rngs, nnx.Rngs):
        return rngs
    if isinstance(rngs, (int, np.integer)) and not isinstance(rngs, bool):
        return nnx.Rngs(params=static_int(rngs, "rngs", lo=0, hi=2**63 - 1))
    if hasattr(rngs, "dtype") and not isinstance(rngs, bool):
        return nnx.Rngs(params=prng_key(rngs, "rngs"))
    raise ValueError(f"rngs must be an nnx.Rngs, an int seed >= 0 or a PRNG key, got {type(rngs).__name__} "
                     f"({rngs!r})")


def _spec_at_widths(spec: FullyConnected, widths) -> FullyConnected:
    if spec.parameterization == "standard" and spec.widths is None:
        return FullyConnected(spec.depth, spec.W_std, spec.b_std if spec.bias else None, spec.activation,
                              parameterization="standard", widths=tuple(widths))
    return spec


def _engine_layers(spec: FullyConnected, widths, residual: bool, out_features: int | None) -> list:
    """The layers of :class:`MLP` ``(spec, width=widths, residual=residual)`` as :mod:`rmtjax.kernels`
    layers (``widths=None``: Dense layers without ``out_dim``, enough for the NTK parameterization's
    kernels). The spec's arrays go in as they are (traced under ``jax.grad``: differentiable)."""
    W, b = spec.layer_params(spec.W_std.dtype)
    par = spec.parameterization

    def dense(l, n):
        return kernels.Dense(W[l], b[l] if spec.bias else None, out_dim=n, parameterization=par)

    if spec.depth == 0:
        return [dense(0, out_features)]
    act = kernels.Activation(spec.activation)
    width = (lambda l: None) if widths is None else (lambda l: widths[l])
    layers = [dense(0, width(0))]
    for l in range(1, spec.depth):
        if residual:
            layers.append(kernels.Residual(kernels.Serial(act, dense(l, width(l)))))
        else:
            layers += [act, dense(l, width(l))]
    return layers + [act, dense(spec.depth, out_features)]


def stax_layers(spec: FullyConnected, widths, *, residual: bool = False, out_features: int = 1) -> list:
    """The :mod:`rmtjax.stax` layers of the same architecture (the triples of the
    :mod:`rmtjax.kernels` layers behind :func:`infinite_width_kernel`; ``residual=True``: residual
    blocks ``FanOut(2) >> parallel(Identity(), serial(phi, Dense)) >> FanInSum()``).

    Example:
        >>> from rmtjax import stax
        >>> from rmtjax.kernels import FullyConnected
        >>> _, _, kernel_fn = stax.serial(*stax_layers(FullyConnected(3, 1.4, 0.1), 64, residual=True))
    """
    spec = _check_spec(spec)
    widths = _hidden_widths(spec, widths)
    residual = flag(residual, "residual")
    out_features = static_int(out_features, "out_features", lo=1)
    return [stax.layer(layer) for layer in _engine_layers(spec, widths, residual, out_features)]


def infinite_width_kernel(x1, x2, spec: FullyConnected, *, widths=None, residual: bool = False) -> Kernel:
    """``Kernel(nngp, ntk)`` of the infinite-width limit of :class:`MLP` ``(spec, width=widths,
    residual=residual)``: :func:`rmtjax.kernels.kernel` of the spec, or for ``residual=True`` of its
    graph of residual blocks (:class:`rmtjax.kernels.Residual`). Differentiable with respect to the
    spec's ``W_std``, ``b_std`` and activation parameters in both cases.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.kernels import FullyConnected
        >>> x = jnp.eye(3, 4)
        >>> f = lambda w: infinite_width_kernel(x, None, FullyConnected(3, w, 0.1), residual=True).ntk.sum()
        >>> bool(jnp.isfinite(jax.grad(f)(1.4)))
        True
    """
    spec = _check_spec(spec)
    residual = flag(residual, "residual")
    if widths is not None:
        widths = _hidden_widths(spec, widths)
    if not residual:
        return kernel(x1, x2, _spec_at_widths(spec, widths) if widths is not None else spec)
    if spec.parameterization == "standard" and widths is None:
        widths = _hidden_widths(spec, None)
    return kernel(x1, x2, kernels.Serial(*_engine_layers(spec, widths, True, None)))


def functional(model: nnx.Module) -> tuple[Callable[[Any, Array], Array], Any]:
    """A model as a pure function of its trainable parameters: ``(apply, params)`` with
    ``apply(params, x) == model(x)`` (``params = nnx.state(model, nnx.Param)``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from rmtjax.kernels import FullyConnected
        >>> net = MLP(FullyConnected(1), 3, width=8, rngs=nnx.Rngs(0))
        >>> apply, params = functional(net)
        >>> bool(jnp.all(apply(params, jnp.ones((2, 3))) == net(jnp.ones((2, 3)))))
        True
    """
    if not isinstance(model, nnx.Module):
        raise ValueError(f"model must be an nnx.Module, got {type(model).__name__}")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    return apply, params


class Ensemble(NamedTuple):
    """Independently initialised copies of one architecture, in functional form.

    Attributes:
        apply: ``apply(params, x) -> (n, k)`` for one member's parameters.
        params: the members' parameters, every leaf with a leading axis of length ``size``.
        model: member 0 as an ``nnx`` module (its graph and hyperparameters; to get member ``i``
            use :meth:`member`).
    """

    apply: Callable[[Any, Array], Array]
    params: Any
    model: nnx.Module

    @property
    def size(self) -> int:
        return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

    def __call__(self, x: Float[Array, "n d"]) -> Float[Array, "s n k"]:
        """Outputs of every member, ``(size, n, k)``."""
        x = as_real(x, "x", ndim=2)
        d = self.model.layers[0].in_features if isinstance(self.model, MLP) else x.shape[1]
        if x.shape[1] != d:
            raise ValueError(f"x must have {d} columns (the input dimension), got shape {x.shape}")
        return jax.vmap(self.apply, (0, None))(self.params, check_range(x, "x"))

    def member(self, i: int) -> nnx.Module:
        """Member ``i`` as an ``nnx`` module (a copy)."""
        i = static_int(i, "i", lo=0, hi=self.size - 1)
        model = nnx.clone(self.model)
        nnx.update(model, jax.tree_util.tree_map(lambda a: a[i], self.params))
        return model


def _make_member(k, spec, config):
    in_features, out_features, width, residual, dtype = config
    return MLP(spec, in_features, out_features, width=width, residual=residual, dtype=dtype,
               rngs=nnx.Rngs(params=k))


@eqx.filter_jit
def _init_states(keys, spec, config):
    return jax.vmap(lambda k: nnx.split(_make_member(k, spec, config))[1])(keys)


def init_ensemble(
    key: PRNGKeyArray, spec: FullyConnected, in_features: int, out_features: int = 1, *, size: int, width=None,
    residual: bool = False, dtype=None,
) -> Ensemble:
    """``size`` independent initialisations of :class:`MLP` ``(spec, ...)``, one per key of
    ``jax.random.split(key, size)``, drawn in one ``jax.vmap``.

    Member ``i`` equals ``MLP(spec, ..., rngs=nnx.Rngs(params=jax.random.split(key, size)[i]))``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.kernels import FullyConnected
        >>> ens = init_ensemble(jax.random.key(0), FullyConnected(2), 5, size=16, width=64)
        >>> ens(jnp.ones((3, 5))).shape
        (16, 3, 1)
    """
    key = prng_key(key, "key")
    spec = _check_spec(spec)
    size = static_int(size, "size", lo=1, hi=2**31 - 1)
    in_features = static_int(in_features, "in_features", lo=1)
    out_features = static_int(out_features, "out_features", lo=1)
    width = _hidden_widths(spec, width)
    residual = flag(residual, "residual")
    dtype = _float_dtype(dtype)
    keys = jax.random.split(key, size)

    config = (in_features, out_features, width, residual, np.dtype(dtype).name)
    # the graph of one member from abstract shapes (no computation), then one compiled, vmapped
    # initialisation, cached across calls with the same structure (eager nnx construction would
    # compile op by op, and a fresh jit closure would recompile on every call)
    graphdefs = []

    def member_state(k, spec):
        graphdef, state = nnx.split(_make_member(k, spec, config))
        graphdefs.append(graphdef)
        return state

    eqx.filter_eval_shape(member_state, keys[0], spec)  # traced like _init_states: the same graph
    graphdef = graphdefs[0]
    states = _init_states(keys, spec, config)
    model = nnx.merge(graphdef, jax.tree_util.tree_map(lambda a: a[0], states))
    apply, _ = functional(model)
    return Ensemble(apply, nnx.state(nnx.merge(graphdef, states), nnx.Param), model)
