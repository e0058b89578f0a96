r"""Concentrated (GAN-like) data: random Lipschitz generators applied to Gaussian latents.

Seddik, Louart, Tamaazousti & Couillet ("Random Matrix Theory Proves that Deep Learning
Representations of GAN-data Behave as Gaussian Mixtures", ICML 2020, §2-3) model GAN images as
:math:`x = g(z)`, :math:`z \sim \mathcal N(0, I_{d_0})`, with :math:`g` a deep network

.. math::
    g(z) = \phi_L\big(W_L\,\phi(W_{L-1}\cdots\phi(W_1z + b_1)\cdots + b_{L-1}) + b_L\big),

whose Lipschitz constant is bounded by the product of the layers' spectral norms times the
activations' Lipschitz constants (their Prop. 1 / Remark 3.1):

.. math::
    \|g\|_{\rm Lip} \le \operatorname{Lip}(\phi_L)\operatorname{Lip}(\phi)^{L-1}\prod_{\ell=1}^L\sigma_1(W_\ell).

A Lipschitz image of a standard Gaussian is *concentrated*: every 1-Lipschitz functional
:math:`f` has :math:`\operatorname{Var}f(x) \le \|g\|_{\rm Lip}^2` (Gaussian Poincaré inequality) and
sub-Gaussian tails of width :math:`\|g\|_{\rm Lip}`, independently of the dimension :math:`p` — the
hypothesis of their Theorem 1, whose deterministic equivalent of the Gram matrix depends on the
class means and second moments only (:mod:`rmtjax.rmt._gram`): concentrated mixtures behave as
the Gaussian mixture with the same moments.

To keep :math:`\sigma_1(W_\ell)` bounded during GAN training they (§3, eq. 6) follow each gradient
step by a rank-one correction of the top singular value,

.. math::
    W \leftarrow W - \eta E,\qquad W \leftarrow W - \max\big(0, \sigma_1(W) - \sigma_*\big)\,u_1v_1^\top,

which clips :math:`\sigma_1` to :math:`\sigma_*` (the new top singular value is
:math:`\max(\sigma_*, \sigma_2)`); :func:`project_spectral_norm` clips them all (the Frobenius
projection onto :math:`\{\sigma_1 \le \sigma_*\}`), and :func:`spectral_normalize` is Miyato et al.'s
(2018) :math:`\sigma_*W/\sigma_1(W)`.

Classes: class :math:`c` draws :math:`x = g_c(m_c + s z)` (a class-conditional latent mean
:math:`m_c`, as in conditional GANs, and/or one generator per class).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rmtjax.activations import Tanh
    >>> g = random_generator(jax.random.key(0), (8, 32, 64), activation=Tanh(), sigma_star=1.5)
    >>> bool(g.lipschitz_bound() <= 1.5**2 * (1 + 1e-5))  # sigma_star^2, up to rounding (float32: 2.2500021)
    True
    >>> mix = concentrated_mixture(jax.random.key(1), g, 2.0 * jnp.eye(3, 8), n=30)
    >>> mix.x.shape
    (30, 64)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .. import activations as act
from .._numerics import safe_div
from .._validate import as_real, check_range, error_if, prng_key, static_int
from ._mixtures import Mixture, class_counts

__all__ = [
    "LipschitzGenerator",
    "MixtureMoments",
    "activation_lipschitz",
    "concentrated_mixture",
    "concentrated_moments",
    "power_iteration",
    "project_spectral_norm",
    "random_generator",
    "sigma_star_step",
    "sigma_star_update",
    "spectral_normalize",
]


def activation_lipschitz(activation: act.AbstractActivation | None) -> Array:
    r"""The Lipschitz constant :math:`\sup|\phi'|` of an activation of :mod:`rmtjax.activations`
    (``None`` is the identity): the activation's own fact,
    :meth:`rmtjax.activations.AbstractActivation.lipschitz` (closed form on every concrete class —
    e.g. ReLU, Abs, Tanh, Identity, Softplus, HardTanh: 1; LeakyReLU(:math:`\alpha`), ELU(:math:`\alpha`):
    :math:`\max(1, |\alpha|)`; ABReLU(:math:`a, b`): :math:`\max(|a|, |b|)`; Sigmoid: 1/4;
    :math:`a\operatorname{erf}(bx) + c`: :math:`2|ab|/\sqrt\pi`; :math:`a\sin(bx + c)`: :math:`|ab|`;
    GELU: 1.1289; SiLU: 1.0998 — numerical for :class:`~rmtjax.activations.Custom` and Mish). A
    differentiable array in the activation's parameters.

    Raises:
        ValueError: for an activation that is not Lipschitz (a jump, as sign; an unbounded slope, as
            exp or a polynomial of degree 2 or more), or whose constant is not finite (NaN or infinite
            parameters; under ``jit``: ``equinox.error_if``).

    Example:
        >>> from rmtjax.activations import LeakyRelu
        >>> float(activation_lipschitz(LeakyRelu(2.0)))
        2.0
    """
    if activation is not None and not isinstance(activation, act.AbstractActivation):
        raise ValueError(f"activation must be an activation of rmtjax.activations or None, got "
                         f"{type(activation).__name__}")
    lip, bad = _lipschitz(activation)
    return error_if(lip, bad, f"activation: its Lipschitz constant must be finite; "
                    f"{type(activation).__name__} has none (a jump or an unbounded slope) or non-finite parameters")


@eqx.filter_jit
def _lipschitz(activation):
    # jitted: eagerly, 2 one-operation programs (isfinite, invert) on the first call, more for an
    # activation whose constant is computed (measured 2026-12-07)
    lip = jnp.asarray(1.0) if activation is None else activation.lipschitz()
    return lip, ~jnp.isfinite(lip)


@jax.jit
def _not_finite_product(a, b):
    return ~jnp.isfinite(a * b)


def _check_sigma_star(sigma_star, dtype=None):
    s = as_real(sigma_star, "sigma_star", ndim=0)
    return check_range(s if dtype is None else s.astype(dtype), "sigma_star", lo=0.0, lo_open=True)


def _check_weight(w, name="w"):
    w = as_real(w, name, ndim=2)
    return check_range(w, name)


def _check_n_iter(n_iter):
    return None if n_iter is None else static_int(n_iter, "n_iter", lo=1, hi=10**6)


def power_iteration(w: Float[ArrayLike, "m n"], v0: Float[ArrayLike, " n"], *, n_iter: int = 50):
    r"""``n_iter`` steps of :math:`v \leftarrow W^\top Wv/\|W^\top Wv\|`; returns
    :math:`(\sigma_1, u_1, v_1)` with :math:`\sigma_1 = \|Wv\|`, :math:`u_1 = Wv/\sigma_1` (a lower
    bound of the top singular value converging at rate :math:`(\sigma_2/\sigma_1)^{2\,n_{\rm iter}}`;
    Miyato et al. 2018 keep ``v`` between training steps and use ``n_iter = 1``).

    Example:
        >>> import jax.numpy as jnp
        >>> s, u, v = power_iteration(jnp.diag(jnp.array([3.0, 1.0])), jnp.ones(2), n_iter=30)
        >>> round(float(s), 6)
        3.0
    """
    w = _check_weight(w)
    v0 = _check_v0(v0, w)
    n_iter = _check_n_iter(n_iter)
    return _power_iteration(w, v0, n_iter)


def _check_v0(v0, w):
    v0 = as_real(v0, "v0", ndim=1).astype(w.dtype)
    if v0.shape != (w.shape[1],):
        raise ValueError(f"v0 must have shape ({w.shape[1]},), got {v0.shape}")
    v0 = check_range(v0, "v0")
    return error_if(v0, ~jnp.any(v0 != 0), "v0 must not be the zero vector")


@functools.partial(jax.jit, static_argnums=2)
def _power_iteration(w, v0, n_iter):
    # an iterate in the null space of W stays there: v is kept (sigma = 0, u = 0), not divided by 0
    def body(_, v):
        y = w.T @ (w @ v)
        ny = jnp.linalg.norm(y)
        return jnp.where(ny > 0, y / jnp.where(ny > 0, ny, 1.0), v)

    v = jax.lax.fori_loop(0, n_iter, body, v0 / jnp.linalg.norm(v0))
    wv = w @ v
    s = jnp.linalg.norm(wv)
    return s, safe_div(wv, s), v


@jax.jit
def _svd_top(w):
    u, s, vt = jnp.linalg.svd(w, full_matrices=False)
    return s[0], u[:, 0], vt[0]


@jax.jit
def _clip_singular_values(w, sigma_star):
    u, s, vt = jnp.linalg.svd(w, full_matrices=False)
    return (u * jnp.minimum(s, sigma_star)[None, :]) @ vt


def _top_triplet(w, n_iter, v0):
    n_iter = _check_n_iter(n_iter)
    if n_iter is None:
        if v0 is not None:
            raise ValueError("v0 is only used with n_iter (power iteration); pass n_iter or leave v0 out")
        return _svd_top(w)
    v0 = jnp.ones((w.shape[1],), w.dtype) if v0 is None else _check_v0(v0, w)
    return _power_iteration(w, v0, n_iter)


def spectral_normalize(w: Float[ArrayLike, "m n"], sigma_star: ArrayLike = 1.0, *, n_iter: int | None = None,
                       v0: ArrayLike | None = None) -> Float[Array, "m n"]:
    r"""Spectral normalization (Miyato et al. 2018, "Spectral Normalization for GANs", eq. 8):
    :math:`\sigma_*W/\sigma_1(W)`, with :math:`\sigma_1` exact (SVD, ``n_iter=None``) or by
    :func:`power_iteration` from ``v0``.

    Raises:
        ValueError: ``w`` not a finite real matrix, ``sigma_star`` not finite and ``> 0``, or a top
            singular value of 0 (``w = 0``, or ``v0`` in the null space of ``w``), which has no
            normalization."""
    w = _check_weight(w)
    sigma_star = _check_sigma_star(sigma_star, w.dtype)
    s, _, _ = _top_triplet(w, n_iter, v0)
    s = error_if(s, ~(s > 0), "w must have a non-zero top singular value to be normalized (w = 0, or v0 in the "
                 "null space of w)")
    return w * (sigma_star / s)


def sigma_star_step(w: Float[ArrayLike, "m n"], sigma_star: ArrayLike, *, n_iter: int | None = None,
                    v0: ArrayLike | None = None) -> Float[Array, "m n"]:
    r"""Seddik et al.'s (2020, eq. 6) rank-one correction
    :math:`W - \max(0, \sigma_1(W) - \sigma_*)\,u_1v_1^\top`: the top singular value becomes
    :math:`\max(\sigma_*, \sigma_2(W))`, the others are unchanged. :math:`(\sigma_1, u_1, v_1)`
    exact (SVD, ``n_iter=None``) or by :func:`power_iteration`.

    Example:
        >>> import jax.numpy as jnp
        >>> sigma_star_step(jnp.diag(jnp.array([3.0, 0.5])), 1.0).diagonal().tolist()
        [1.0, 0.5]
    """
    w = _check_weight(w)
    sigma_star = _check_sigma_star(sigma_star, w.dtype)
    s, u, v = _top_triplet(w, n_iter, v0)
    return w - jnp.maximum(0.0, s - sigma_star) * jnp.outer(u, v)


def sigma_star_update(w: Float[ArrayLike, "m n"], grad: Float[ArrayLike, "m n"], eta: ArrayLike,
                      sigma_star: ArrayLike, *, n_iter: int | None = None, v0: ArrayLike | None = None):
    r"""One step of the :math:`\sigma_*` dynamic (Seddik et al. 2020, eq. 6):
    :math:`W \leftarrow W - \eta E`, then :func:`sigma_star_step`."""
    w = _check_weight(w)
    grad = as_real(grad, "grad")
    if grad.shape != w.shape:
        raise ValueError(f"grad must have the shape of w {w.shape}, got {grad.shape}")
    grad = check_range(grad.astype(w.dtype), "grad")
    eta = check_range(as_real(eta, "eta", ndim=0).astype(w.dtype), "eta", lo=0.0, lo_open=True)
    return sigma_star_step(w - eta * grad, sigma_star, n_iter=n_iter, v0=v0)


def project_spectral_norm(w: Float[ArrayLike, "m n"], sigma_star: ArrayLike) -> Float[Array, "m n"]:
    r""":math:`U\min(S, \sigma_*)V^\top`: the nearest matrix (Frobenius and operator norm) with
    :math:`\sigma_1 \le \sigma_*` — the fixed point of repeated :func:`sigma_star_step`.

    Example:
        >>> import jax.numpy as jnp
        >>> float(jnp.linalg.norm(project_spectral_norm(3 * jnp.eye(2), 2.0), 2))
        2.0
    """
    w = _check_weight(w)
    sigma_star = _check_sigma_star(sigma_star, w.dtype)
    return _clip_singular_values(w, sigma_star)


class LipschitzGenerator(eqx.Module):
    r"""A fully connected generator :math:`g(z) = \phi_L(W_L\phi(\cdots\phi(W_1z + b_1)\cdots) + b_L)`.

    Attributes:
        weights: :math:`W_\ell`, shapes ``(d_l, d_{l-1})`` (array leaves, differentiable).
        biases: :math:`b_\ell`, shapes ``(d_l,)``.
        activation: hidden activation :math:`\phi` (an :mod:`rmtjax.activations` module).
        final_activation: :math:`\phi_L`, or ``None`` (linear output).

    Calling it maps latents of shape ``(d_0,)`` or ``(n, d_0)`` to outputs ``(d_L,)`` / ``(n, d_L)``.
    """

    weights: tuple[Array, ...]
    biases: tuple[Array, ...]
    activation: act.AbstractActivation
    final_activation: act.AbstractActivation | None

    def __init__(self, weights, biases, activation: act.AbstractActivation,
                 final_activation: act.AbstractActivation | None = None):
        """Validates the layers (real, finite, chained shapes) and the activations (known,
        finite Lipschitz constants)."""
        if not (isinstance(weights, (tuple, list)) and isinstance(biases, (tuple, list))):
            raise ValueError("weights and biases must be sequences of arrays (one per layer)")
        if len(weights) < 1 or len(weights) != len(biases):
            raise ValueError(f"weights and biases must be non-empty and of equal length, got "
                             f"{len(weights)} and {len(biases)}")
        if activation is None:
            raise ValueError("activation must be an activation of rmtjax.activations, got None")
        ws, bs, d = [], [], None
        for i, (w, b) in enumerate(zip(weights, biases)):
            w = as_real(w, f"weights[{i}]", ndim=2)
            if d is not None and w.shape[1] != d:
                raise ValueError(f"weights[{i}] has input dimension {w.shape[1]}, expected {d} (the previous layer's "
                                 "output)")
            b = as_real(b, f"biases[{i}]", ndim=1)
            if b.shape != (w.shape[0],):
                raise ValueError(f"biases[{i}] must have shape ({w.shape[0]},), got {b.shape}")
            ws.append(w)
            bs.append(b)
            d = w.shape[0]
        dt = np.result_type(*[np.dtype(a.dtype) for a in ws + bs])
        ws = [check_range(w.astype(dt), f"weights[{i}]") for i, w in enumerate(ws)]
        bad = _not_finite_product(activation_lipschitz(activation), activation_lipschitz(final_activation))
        ws[0] = error_if(ws[0], bad, "activation and final_activation must have finite parameters "
                         "(finite Lipschitz constants)")
        self.weights = tuple(ws)
        self.biases = tuple(check_range(b.astype(dt), f"biases[{i}]") for i, b in enumerate(bs))
        self.activation = activation
        self.final_activation = final_activation

    @property
    def dims(self) -> tuple[int, ...]:
        """Layer widths :math:`(d_0, d_1, \\dots, d_L)`."""
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    @property
    def latent_dim(self) -> int:
        return self.dims[0]

    @property
    def out_dim(self) -> int:
        return self.dims[-1]

    def __call__(self, z: Float[ArrayLike, "... d0"]) -> Float[Array, "... p"]:
        z = as_real(z, "z", ndim=(1, 2))
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape ({self.latent_dim},) or (n, {self.latent_dim}), got {z.shape}")
        return _apply(self, check_range(z.astype(self.weights[0].dtype), "z"))

    def _apply(self, h):
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + (b if h.ndim == 1 else b[None, :])
            if i < last:
                h = self.activation(h)
            elif self.final_activation is not None:
                h = self.final_activation(h)
        return h

    def layer_norms(self) -> Array:
        r"""Spectral norms :math:`\sigma_1(W_\ell)`, shape ``(L,)`` (exact, by SVD)."""
        return _spectral_norms(self.weights)

    def lipschitz_bound(self) -> Array:
        r""":math:`\operatorname{Lip}(\phi_L)\operatorname{Lip}(\phi)^{L-1}\prod_\ell\sigma_1(W_\ell)`, an upper
        bound of :math:`\sup_{z\ne z'}\|g(z) - g(z')\|/\|z - z'\|` (Seddik et al. 2020, Remark 3.1)."""
        return _lipschitz_bound(self.layer_norms(), activation_lipschitz(self.activation),
                                activation_lipschitz(self.final_activation))

    def project(self, sigma_star: ArrayLike) -> LipschitzGenerator:
        r"""Every :math:`W_\ell` replaced by :func:`project_spectral_norm` ``(W_l, sigma_star)``."""
        return eqx.tree_at(lambda g: g.weights, self, tuple(project_spectral_norm(w, sigma_star) for w in self.weights))

    def spectral_normalized(self, sigma_star: ArrayLike = 1.0) -> LipschitzGenerator:
        r"""Every :math:`W_\ell` replaced by :func:`spectral_normalize` ``(W_l, sigma_star)``."""
        return eqx.tree_at(lambda g: g.weights, self, tuple(spectral_normalize(w, sigma_star) for w in self.weights))


# jitted: eagerly, a generator's forward pass compiles one program per operation, layer shape and
# activation on the first call (measured 2026-12-07: 9 for dims (3, 6, 4) with tanh), and
# lipschitz_bound 4 more (the stack of the norms, their product, the powers of the constants)
@eqx.filter_jit
def _apply(g, z):
    return g._apply(z)


@jax.jit
def _spectral_norms(weights):
    return jnp.stack([jnp.linalg.svd(w, compute_uv=False)[0] for w in weights])


@jax.jit
def _lipschitz_bound(norms, lip, lip_final):
    return jnp.prod(norms) * (lip ** (norms.shape[0] - 1) * lip_final)


def random_generator(key: PRNGKeyArray, dims: Sequence[int], *, activation: act.AbstractActivation | None = None,
                     final_activation: act.AbstractActivation | None = None, weight_std: float = 1.0,
                     bias_std: float = 0.0, sigma_star: float | None = None, dtype=None) -> LipschitzGenerator:
    r"""A random generator with :math:`W_\ell \sim \mathcal N(0, \sigma_w^2/d_{\ell-1})`,
    :math:`b_\ell \sim \mathcal N(0, \sigma_b^2)`, projected to :math:`\sigma_1(W_\ell) \le \sigma_*`
    (:func:`project_spectral_norm`) when ``sigma_star`` is given.

    Args:
        key: PRNG key.
        dims: :math:`(d_0, \dots, d_L)`, at least two positive integers.
        activation: hidden activation (default :class:`rmtjax.activations.Tanh`).
        final_activation: output activation (default ``None``: linear).
        weight_std, bias_std: :math:`\sigma_w \ge 0`, :math:`\sigma_b \ge 0`.
        sigma_star: optional spectral-norm bound (> 0).
        dtype: float dtype (default: JAX's default float).
    """
    key = prng_key(key, "key")
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
        raise ValueError(f"dims must be at least two positive integers (d_0, ..., d_L), got {dims!r}")
    dims = tuple(static_int(d, "dims", lo=1, hi=2**31 - 1) for d in dims)
    if len(dims) < 2:
        raise ValueError(f"dims must be at least two positive integers (d_0, ..., d_L), got {dims}")
    dtype = _float_dtype(dtype)
    weight_std = check_range(as_real(weight_std, "weight_std", ndim=0).astype(dtype), "weight_std", lo=0.0)
    bias_std = check_range(as_real(bias_std, "bias_std", ndim=0).astype(dtype), "bias_std", lo=0.0)
    if sigma_star is not None:
        sigma_star = _check_sigma_star(sigma_star, dtype)
    for a in (activation, final_activation):
        if a is not None and not isinstance(a, act.AbstractActivation):
            raise ValueError(f"activation and final_activation must be activations of rmtjax.activations or None, "
                             f"got {type(a).__name__}")
    ws, bs = _random_layers(key, weight_std, bias_std, dims, dtype)
    if sigma_star is not None:
        ws = tuple(project_spectral_norm(w, sigma_star) for w in ws)
    return LipschitzGenerator(ws, bs, act.Tanh() if activation is None else activation, final_activation)


@functools.partial(jax.jit, static_argnames=("dims", "dtype"))
def _random_layers(key, weight_std, bias_std, dims, dtype):
    # jitted: eagerly, 12 one-operation programs on the first call for two layers (measured 2026-12-07)
    keys = jax.random.split(key, 2 * (len(dims) - 1))
    ws, bs = [], []
    for i, (din, dout) in enumerate(zip(dims[:-1], dims[1:])):
        ws.append(jax.random.normal(keys[2 * i], (dout, din), dtype) * (weight_std / math.sqrt(din)))
        bs.append(jax.random.normal(keys[2 * i + 1], (dout,), dtype) * bias_std)
    return tuple(ws), tuple(bs)


def _float_dtype(dtype):
    try:
        dt = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    except TypeError:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dt}")
    return dt


def _class_setup(generators, latent_means, latent_std):
    gens = list(generators) if isinstance(generators, (list, tuple)) else None
    if gens is not None:
        if not gens or not all(isinstance(g, LipschitzGenerator) for g in gens):
            raise ValueError("generators must be a LipschitzGenerator or a non-empty sequence of them")
        if len({g.out_dim for g in gens}) != 1:
            raise ValueError(f"all generators must have the same output dimension, got {[g.out_dim for g in gens]}")
    elif not isinstance(generators, LipschitzGenerator):
        raise ValueError(f"generators must be a LipschitzGenerator or a sequence of them, got {type(generators).__name__}")
    if latent_means is None:
        if gens is None:
            raise ValueError("latent_means is required with a single generator (it defines the k classes)")
        lm = None
    else:
        lm = as_real(latent_means, "latent_means", ndim=2)
        k = lm.shape[0]
        if gens is not None and len(gens) != k:
            raise ValueError(f"latent_means has k = {k} rows but {len(gens)} generators were given")
        gens = gens or [generators] * k
        for g in gens:
            if g.latent_dim != lm.shape[1]:
                raise ValueError(f"latent_means must have shape (k, d_0) = ({k}, {g.latent_dim}), got {lm.shape}")
        lm = check_range(lm.astype(gens[0].weights[0].dtype), "latent_means")
    std = check_range(as_real(latent_std, "latent_std", ndim=0).astype(gens[0].weights[0].dtype), "latent_std",
                      lo=0.0)
    return gens, lm, std


def _latent_means(gens, lm):
    """The class latent means :math:`m_c` (zeros without ``latent_means``); inside the jitted cores
    (eagerly, the rows of ``lm`` are two one-operation programs per shape)."""
    if lm is None:
        return [jnp.zeros((g.latent_dim,), g.weights[0].dtype) for g in gens]
    return [lm[c] for c in range(len(gens))]


def _draw(g, m, s, key, count):
    return g._apply(m[None, :] + s * jax.random.normal(key, (count, g.latent_dim), m.dtype))


@eqx.filter_jit
def _mixture(gens, lm, s, key, counts):
    # jitted whole (the draws, their concatenation, the finiteness test): eagerly, 4 one-operation
    # programs on the first call besides one program per class (measured 2026-12-07)
    parts = [_draw(g, m, s, kc, n) for g, m, kc, n in zip(gens, _latent_means(gens, lm),
                                                           jax.random.split(key, len(gens)), counts)]
    x = jnp.concatenate(parts, axis=0)
    return x, ~jnp.all(jnp.isfinite(x))


def concentrated_mixture(key: PRNGKeyArray, generators, latent_means: ArrayLike | None = None, *, n: int,
                         weights: Sequence[float] | None = None, latent_std: ArrayLike = 1.0) -> Mixture:
    r"""``n`` points of a :math:`k`-class concentrated mixture: class :math:`c` is
    :math:`x = g_c(m_c + s z)`, :math:`z \sim \mathcal N(0, I_{d_0})`.

    Args:
        key: PRNG key.
        generators: one :class:`LipschitzGenerator` shared by the classes (then ``latent_means``
            defines them) or a sequence of ``k`` generators with a common output dimension.
        latent_means: :math:`m_c`, shape ``(k, d_0)`` (default zeros with a sequence of generators).
        n: number of points; class counts :func:`rmtjax.data._mixtures.class_counts` ``(n, weights)``.
        weights: class proportions (default uniform).
        latent_std: :math:`s \ge 0`.

    Returns:
        ``Mixture(x, labels)``, ``x`` of shape ``(n, p)``, ordered by class (like
        :func:`rmtjax.data._mixtures.gaussian_mixture`).
    """
    key = prng_key(key, "key")
    gens, lm, std = _class_setup(generators, latent_means, latent_std)
    k = len(gens)
    w = np.ones(k) if weights is None else weights
    if np.shape(w) != (k,):
        raise ValueError(f"weights must have shape ({k},), got {np.shape(w)}")
    counts = class_counts(n, w)
    x, bad = _mixture(gens, lm, std, key, tuple(int(c) for c in counts))
    labels = np.repeat(np.arange(k), counts)
    x = error_if(x, bad, "generators: their outputs overflow (non-finite samples); scale "
                 "their weights or latent_means down")
    return Mixture(x, jnp.asarray(labels, jnp.result_type(int)))


class MixtureMoments(NamedTuple):
    r"""Monte-Carlo class moments.

    Attributes:
        means: :math:`\hat\mu_c`, shape ``(k, p)``.
        covariances: :math:`\hat\Sigma_c` (unbiased), shape ``(k, p, p)``.
        second_moments: :math:`\hat C_c = \hat\Sigma_c + \hat\mu_c\hat\mu_c^\top`, shape ``(k, p, p)``.
        mean_se: standard errors of the means, shape ``(k, p)``.
        n_samples: samples per class.
    """

    means: Array
    covariances: Array
    second_moments: Array
    mean_se: Array
    n_samples: int


def _class_sums(g, m, s, key, n_batches, batch):
    p = g.out_dim

    def body(carry, kb):
        s1, s2 = carry
        x = g._apply(m[None, :] + s * jax.random.normal(kb, (batch, g.latent_dim), m.dtype))
        return (s1 + jnp.sum(x, 0), s2 + x.T @ x), None

    zero = (jnp.zeros((p,), m.dtype), jnp.zeros((p, p), m.dtype))
    (s1, s2), _ = jax.lax.scan(body, zero, jax.random.split(key, n_batches))
    return s1, s2


def concentrated_moments(key: PRNGKeyArray, generators, latent_means: ArrayLike | None = None, *,
                         n_samples: int, batch_size: int = 2048, latent_std: ArrayLike = 1.0) -> MixtureMoments:
    r"""Class means :math:`\mu_c = \mathbb E[x]` and second moments :math:`C_c = \mathbb E[xx^\top]` of
    :func:`concentrated_mixture` by Monte Carlo with ``n_samples`` per class (rounded up to a multiple
    of ``batch_size``; one compiled scan per class). The operator-norm error of
    :math:`\hat\Sigma_c` is :math:`O(\|\Sigma_c\|\sqrt{p/N})`.
    """
    key = prng_key(key, "key")
    gens, lm, std = _class_setup(generators, latent_means, latent_std)
    n_samples = static_int(n_samples, "n_samples", lo=2, hi=2**40)
    batch_size = static_int(batch_size, "batch_size", lo=1, hi=2**31 - 1)
    batch = int(min(batch_size, n_samples))
    n_batches = -(-int(n_samples) // batch)
    N = n_batches * batch
    mu, cov, second, ses, bad = _moments(gens, lm, std, key, n_batches, batch)
    mu, second = error_if((mu, second), bad, "generators: their outputs overflow (non-finite moments); scale their "
                          "weights or latent_means down")
    return MixtureMoments(mu, cov, second, ses, N)


@eqx.filter_jit
def _moments(gens, lm, std, key, n_batches, batch):
    # jitted whole (the scans and the moments from their sums): eagerly, 25 one-operation programs on
    # the first call besides one scan per class (measured 2026-12-07)
    N = n_batches * batch
    mus, covs, ses = [], [], []
    for g, m, kc in zip(gens, _latent_means(gens, lm), jax.random.split(key, len(gens))):
        s1, s2 = _class_sums(g, m, std, kc, n_batches, batch)
        mu = s1 / N
        cov = (s2 - N * jnp.outer(mu, mu)) / (N - 1)
        cov = 0.5 * (cov + cov.T)
        mus.append(mu)
        covs.append(cov)
        ses.append(jnp.sqrt(jnp.maximum(jnp.diagonal(cov), 0.0) / N))
    mu, cov = jnp.stack(mus), jnp.stack(covs)
    bad = ~(jnp.all(jnp.isfinite(mu)) & jnp.all(jnp.isfinite(cov)))
    return mu, cov, cov + mu[:, :, None] * mu[:, None, :], jnp.stack(ses), bad
