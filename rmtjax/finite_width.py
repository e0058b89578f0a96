r"""Finite-width corrections to the infinite-width kernels: the four-point vertex and the
:math:`1/n` correction to the NNGP (:func:`nngp_corrections`), and the NTK's mean to :math:`O(1/n)`
and its fluctuations at initialization: the diagonal entries one input at a time
(:func:`ntk_fluctuations`) and the covariance of all entries for a batch (:func:`ntk_covariance`,
PDLT ch. 8; the recursions are in their docstrings); and the NTK's expected :math:`O(1/n)` change
during full-batch gradient descent or gradient flow, for one hidden layer (:func:`ntk_change`, derived in its
docstring).

A fully-connected network of finite widths :math:`n_1, \dots, n_L` is not a Gaussian process.
Given the activations of layer :math:`\ell`, the preactivations of layer :math:`\ell + 1` are
Gaussian with the *empirical* covariance (the conjugate kernel)

.. math::
    \hat G^{(\ell+1)}_{ab} = C_b + \frac{C_W}{n_\ell}\sum_{j=1}^{n_\ell}
        \phi\big(z^{(\ell)}_{j;a}\big)\,\phi\big(z^{(\ell)}_{j;b}\big),
    \qquad C_W = \sigma_{w,\ell}^2,\; C_b = \sigma_{b,\ell}^2,

which fluctuates from network to network. To leading order in the widths (Yaida 2020,
"Non-Gaussian processes and neural networks at finite widths", MSML; Roberts, Yaida & Hanin
2022, "The Principles of Deep Learning Theory" (PDLT), ch. 4)

.. math::
    \mathbb E\,\hat G^{(\ell)} = K^{(\ell)} + \frac{1}{n_{\ell-1}} G^{\{1\}(\ell)} + O(n^{-2}),
    \qquad
    \operatorname{Cov}\big(\hat G^{(\ell)}_{ab}, \hat G^{(\ell)}_{cd}\big)
        = \frac{1}{n_{\ell-1}} V^{(\ell)}_{(ab)(cd)} + O(n^{-2}),

where :math:`K^{(\ell)}` is the NNGP kernel (:func:`rmtjax.kernels.kernel`), :math:`V` the
four-point vertex (the connected four-point function of the preactivations is
:math:`\frac{1}{n_{\ell-1}}(\delta_{i_1i_2}\delta_{i_3i_4}V_{(a_1a_2)(a_3a_4)} + \text{2 perms})`,
PDLT eq. 4.77) and :math:`G^{\{1\}}` the :math:`1/n` correction to the mean metric. Both start at
zero at the first layer (:math:`\hat G^{(1)} = C_b + C_W\, x\cdot x'/d` is not random) and obey
(PDLT eqs. 4.90 and 4.115, written with the operators below; the derivation is the delta method:
:math:`\mathbb E\,F(\hat G) = F(G) + \tfrac12 D^2F[\operatorname{Cov}\hat G] + \dots`)

.. math::
    V^{(\ell+1)} &= C_W^2\,\operatorname{Cov}_{K^{(\ell)}}\big[\phi_a\phi_b,\, \phi_c\phi_d\big]
        + \frac{n_\ell}{n_{\ell-1}}\; \mathcal L^{(\ell)} V^{(\ell)} \mathcal L^{(\ell)\top},\\
    G^{\{1\}(\ell+1)} &= \frac{n_\ell}{n_{\ell-1}}\Big(\mathcal L^{(\ell)} G^{\{1\}(\ell)}
        + \frac{C_W}{2}\,D^2F\big[V^{(\ell)}\big]\Big),

with :math:`F(K)_{ab} = \mathbb E_{z\sim\mathcal N(0,K)}[\phi(z_a)\phi(z_b)]`, the linearised
kernel map :math:`\mathcal L = C_W\,DF(K^{(\ell)})` acting on symmetric perturbations
(:math:`(\mathcal L\delta)_{ab} = C_W(\partial_{q_1}k\,\delta_{aa} + \partial_{q_2}k\,\delta_{bb}
+ \partial_{q_{12}}k\,\delta_{ab})`, the derivatives of the dual kernel
:math:`k(q_1, q_2, q_{12})` of :func:`rmtjax.gaussian.gaussian_expectations`, which PDLT writes
with Stein's lemma as :math:`\tfrac12\langle\partial^2(\phi_a\phi_b)\rangle`), and
:math:`D^2F[V]_{ab} = \sum H_{rs}V_{rs}` the Hessian of the dual kernel contracted with the
covariance of :math:`(\hat G_{aa}, \hat G_{bb}, \hat G_{ab})`. The network's outputs (the readout,
layer :math:`L+1`) have covariance :math:`\mathbb E\,\hat G^{(L+1)}` and connected four-point
function :math:`V^{(L+1)}/n_L`; the expansion parameter is the depth-to-width ratio :math:`L/n`.

Closed forms (tested): for a single input and ReLU at criticality (:math:`C_W = 2, C_b = 0`),
:math:`V^{(\ell)} = 5(\ell - 1)\,(K^{(1)})^2` and :math:`G^{\{1\}} = 0` (PDLT eq. 5.112 ff.:
the normalised vertex grows like :math:`5\ell/n`); for deep linear networks (:math:`\phi(z) = z`,
:math:`C_b = 0`) :math:`G^{\{1\}} = 0` and
:math:`\operatorname{Cov}(\hat G^{(L+1)}_{ab}, \hat G^{(L+1)}_{cd}) = \sum_{\ell=1}^{L} n_\ell^{-1}
(K_{ac}K_{bd} + K_{ad}K_{bc})` at the last layer's :math:`K` (PDLT sec. 3.3).

The four-point expectations :math:`\mathbb E[\phi_a\phi_b\phi_c\phi_d]` are integrals over as
many dimensions as there are distinct inputs among :math:`a, b, c, d`: one input by the
trapezoidal rule of :meth:`rmtjax.activations.AbstractActivation.length_map` (exponentially
convergent for analytic :math:`\phi`; ReLU's closed-form vertex is met to 6e-16), two by polar
coordinates with the angle split where either preactivation changes sign (1e-10 against scipy for
ReLU; exact to rounding for activations whose kinks are at 0: ReLU, leaky ReLU, ELU, abs), three or
four by tensor Gauss-Hermite of degree ``deg3`` / ``deg4``. That last rule is accurate for smooth
activations (tanh, measured against degree 60 / 30: 7e-5 in 3-d at ``deg3 = 16``, 7e-4 in 4-d at
``deg4 = 10``) but converges only like 1/degree across a kink: for ReLU, against 4e7 Monte-Carlo
samples, 1.4% (3-d, degree 16; 0.6% at 32) and 5.6% (4-d, degree 10; 2.5% at 20). Entries of the
vertex that involve three or more distinct inputs are that approximate for kinked activations;
batches of one or two inputs are not affected.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._numerics import gauss_hermite, safe_sqrt, trapezoid_gaussian
from ._validate import as_real, check_range, concrete, error_if, prng_key, static_int
from .gaussian import Auto, _expectations
from .kernels import FullyConnected

__all__ = ["ExpansionWarning", "NNGPCorrections", "NTKChange", "NTKCovariance", "NTKFluctuations", "nngp_corrections", "ntk_change", "ntk_covariance",
           "ntk_fluctuations"]


def _or_float64(dtype) -> str:
    """The advice to compute in float64, where the computation is not in float64 already."""
    return "" if jnp.dtype(dtype) == jnp.float64 else ", or float64 (jax_enable_x64)"


class ExpansionWarning(UserWarning):
    """The :math:`1/n` corrections at the given widths are as large as the values they correct:
    the depth-to-width ratio is too large for the expansion to mean anything."""


def _warn_if_large(relative, widths, depth: int, given: bool) -> None:
    """Warns (eagerly, with concrete values only) when a relative correction exceeds 1."""
    r = concrete(relative) if given else None
    if r is None or r.size == 0:
        return
    worst = float(np.nanmax(np.abs(r)))
    if worst > 1:
        ratio = depth / min(widths) if widths else 0.0
        warnings.warn(f"widths: the 1/n corrections are {worst:.3g} times the infinite-width values they correct "
                      f"(depth-to-width ratio L/n = {ratio:.3g}); the expansion is not meaningful at these widths",
                      ExpansionWarning, stacklevel=3)


class NNGPCorrections(NamedTuple):
    r"""The leading finite-width statistics of the conjugate kernels of a fully-connected
    network, one entry per layer :math:`\ell = 1, \dots, L + 1` (``L = depth``; entry ``L`` is
    the readout, i.e. the covariance of the network's outputs).

    Attributes:
        nngp: :math:`K^{(\ell)}`, ``(depth + 1, m, m)``: the infinite-width NNGP kernel.
        vertex: :math:`V^{(\ell)}`, ``(depth + 1, m, m, m, m)``: the four-point vertex
            (``vertex[l, a, b, c, d] = n_{l-1} Cov(G_ab, G_cd)`` to leading order).
        correction: :math:`G^{\{1\}(\ell)}`, ``(depth + 1, m, m)``: the :math:`1/n` correction
            to the mean (``n_{l-1} (E G - K)`` to leading order).
        fan_in: :math:`n_{\ell-1}`, ``(depth + 1,)``, the width that divides ``vertex`` and
            ``correction`` at each layer (the input dimension for ``l = 0``, where both are 0).
    """

    nngp: Float[Array, "layers m m"]
    vertex: Float[Array, "layers m m m m"]
    correction: Float[Array, "layers m m"]
    fan_in: Float[Array, " layers"]

    def mean(self) -> Float[Array, "layers m m"]:
        r""":math:`\mathbb E\,\hat G^{(\ell)} \approx K^{(\ell)} + G^{\{1\}(\ell)}/n_{\ell-1}`."""
        return self.nngp + self.correction / self.fan_in[:, None, None]

    def covariance(self) -> Float[Array, "layers m m m m"]:
        r""":math:`\operatorname{Cov}(\hat G^{(\ell)}_{ab}, \hat G^{(\ell)}_{cd}) \approx
        V^{(\ell)}_{(ab)(cd)}/n_{\ell-1}`."""
        return self.vertex / self.fan_in[:, None, None, None, None]


# --------------------------------------------------------------------------------------------
# Static index bookkeeping: symmetric matrices as vectors over the pairs a <= b
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _pairs(m: int):
    """Pairs ``(a, b)``, ``a <= b``, their index map, and the rows of the linearised kernel map."""
    # int32 throughout: JAX converts a NumPy int64 index to int32 without x64 and caches the
    # converted constant by object, so reusing these (cached) arrays after a float32 call would
    # hand an int32 constant to a float64 trace that expects int64 (lax.add int32/int64 error)
    a, b = (v.astype(np.int32) for v in np.triu_indices(m))
    index = np.zeros((m, m), dtype=np.int32)
    index[a, b] = np.arange(a.size)
    index[b, a] = np.arange(a.size)
    return a, b, index


@functools.lru_cache(maxsize=64)
def _quadruples(m: int):
    """The four-point expectations needed for ``m`` inputs, grouped by pattern.

    Returns ``(groups, table)``: ``groups`` maps a multiplicity pattern (e.g. ``(2, 1, 1)``) to
    an ``(G, r)`` array of distinct input indices; ``table[p, p']`` indexes the concatenation of
    the groups' expectations for the pairs ``p = (a, b)``, ``p' = (c, d)``."""
    a, b, _ = _pairs(m)
    position: dict[tuple[int, ...], int] = {}
    groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    keys = []
    for p in range(a.size):
        for q in range(a.size):
            idx = (int(a[p]), int(b[p]), int(a[q]), int(b[q]))
            counts: dict[int, int] = {}
            for i in idx:
                counts[i] = counts.get(i, 0) + 1
            # canonical: by decreasing multiplicity, then index
            items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            pattern = tuple(c for _, c in items)
            distinct = tuple(i for i, _ in items)
            key = (pattern, distinct)
            if key not in position:
                groups.setdefault(pattern, []).append(distinct)
                position[key] = -1
            keys.append(key)
    order = sorted(groups)
    offsets, start = {}, 0
    for pattern in order:
        offsets[pattern] = start
        for k, distinct in enumerate(groups[pattern]):
            position[(pattern, distinct)] = start + k
        start += len(groups[pattern])
    table = np.array([position[k] for k in keys], dtype=np.int32).reshape(a.size, a.size)
    return tuple((pattern, np.array(groups[pattern], dtype=np.int32)) for pattern in order), table


@functools.lru_cache(maxsize=16)
def _polar_rule(deg_angle: int, deg_radius: int, cutoff: float):
    """Gauss-Legendre nodes on ``[0, 1]`` (angle pieces) and a radial rule for
    :math:`\\int_0^\\infty r e^{-r^2/2} g(r)\\,dr` on ``[0, cutoff]``."""
    t, wt = np.polynomial.legendre.leggauss(deg_angle)
    r, wr = np.polynomial.legendre.leggauss(deg_radius)
    r = 0.5 * cutoff * (r + 1)
    wr = 0.5 * cutoff * wr * r * np.exp(-0.5 * r * r)
    return 0.5 * (t + 1), 0.5 * wt, r, wr


def _product(act, x, pattern):
    """:math:`\\prod_i \\phi(x_i)^{p_i}` over the last axis of ``x``; a pattern of pairs
    ``(p_i, q_i)`` gives :math:`\\prod_i \\phi(x_i)^{p_i}\\phi'(x_i)^{q_i}`."""
    if isinstance(pattern[0], tuple):
        vals, dvals = act(x), act.derivative(x)
        out = None
        for i, (p, q) in enumerate(pattern):
            for v, e in ((vals, p), (dvals, q)):
                if e:
                    out = v[..., i] ** e if out is None else out * v[..., i] ** e
        return out
    vals = act(x)
    out = vals[..., 0] ** pattern[0]
    for i, p in enumerate(pattern[1:], start=1):
        out = out * vals[..., i] ** p
    return out


def _expect_1d(act, K, idx, pattern):
    z, w = trapezoid_gaussian(0.04, 13.0)
    q = K[idx[:, 0], idx[:, 0]]
    x = safe_sqrt(q)[:, None, None] * jnp.asarray(z, K.dtype)[None, :, None]  # a zero input: no inf derivative
    return _product(act, x, pattern) @ jnp.asarray(w, K.dtype)


def _expect_2d(act, K, idx, pattern, deg_angle=24, deg_radius=64, cutoff=12.0):
    """Polar coordinates :math:`z = r(\\cos t, \\sin t)`, :math:`x = Lz`; the angle is split at
    the four rays where :math:`x_1 = 0` or :math:`x_2 = 0` (kinks of ReLU-like activations)."""
    i, j = idx[:, 0], idx[:, 1]
    q1, q2, q12 = K[i, i], K[j, j], K[i, j]
    l11 = safe_sqrt(q1)
    # a zero-variance input (a zero row with b_std = 0) is the zero vector: x1 = 0, and q12 = 0 too
    l21 = jnp.where(l11 > 0, q12 / jnp.where(l11 > 0, l11, 1.0), 0.0)
    l22 = safe_sqrt(q2 - l21 * l21)  # zero derivative at 0: parallel inputs
    # x1 = l11 r cos t (zero at t = pi/2, 3pi/2); x2 = r (l21 cos t + l22 sin t), zero where
    # tan t = -l21 / l22, i.e. t0 = atan2(-l21, l22) + k pi
    # (both zero: x2 = 0 is a zero input and any t0 will do; atan2(0, 0) has a NaN derivative)
    none = (l21 == 0) & (l22 == 0)
    t0 = jnp.mod(jnp.arctan2(-l21, jnp.where(none, 1.0, l22)), jnp.pi)
    cuts = jnp.sort(jnp.stack([jnp.full_like(t0, 0.5 * jnp.pi), t0, jnp.full_like(t0, 1.5 * jnp.pi), t0 + jnp.pi], -1), -1)
    edges = jnp.concatenate([cuts, cuts[:, :1] + 2 * jnp.pi], -1)  # 5 edges, 4 pieces
    u, wu, r, wr = (jnp.asarray(v, K.dtype) for v in _polar_rule(deg_angle, deg_radius, cutoff))
    lo, width = edges[:, :-1], edges[:, 1:] - edges[:, :-1]  # (G, 4)
    t = lo[:, :, None] + width[:, :, None] * u[None, None, :]  # (G, 4, deg_angle)
    wt = width[:, :, None] * wu[None, None, :] / (2 * jnp.pi)
    c, s = jnp.cos(t)[..., None], jnp.sin(t)[..., None]
    rr = r[None, None, None, :]
    x1 = l11[:, None, None, None] * c * rr  # (G, 4, deg_angle, deg_radius)
    x2 = (l21[:, None, None, None] * c + l22[:, None, None, None] * s) * rr
    vals = _product(act, jnp.stack([x1, x2], -1), pattern)  # (G, 4, deg_angle, deg_radius)
    return jnp.einsum("gpa,gpar,r->g", wt, vals, wr)


def _expect_nd(act, K, idx, pattern, deg):
    r = idx.shape[1]
    z1, w1 = gauss_hermite(deg)
    z = np.stack(np.meshgrid(*([z1] * r), indexing="ij"), -1).reshape(-1, r)
    w = functools.reduce(np.multiply.outer, [w1] * r).ravel()
    S = K[idx[:, :, None], idx[:, None, :]]
    # a jitter of 16 eps times the largest variance keeps the factor finite (and differentiable)
    # for repeated or parallel inputs, whose covariance is singular
    jitter = 16 * jnp.finfo(K.dtype).eps * jnp.max(jnp.diagonal(S, axis1=-2, axis2=-1), -1)
    L = jnp.linalg.cholesky(S + jitter[:, None, None] * jnp.eye(r, dtype=K.dtype)[None])
    x = jnp.einsum("nk,gik->gni", jnp.asarray(z, K.dtype), L)
    return _product(act, x, pattern) @ jnp.asarray(w, K.dtype)


def _expect_groups(act, K, groups, deg3, deg4, expect_1d):
    """The expectations of every group of :func:`_quadruples` or :func:`_mixed_quadruples`,
    concatenated: one distinct input by ``expect_1d``, two by polar coordinates, three or four by
    tensor Gauss-Hermite of degree ``deg3`` / ``deg4``."""
    parts = []
    for pattern, idx in groups:
        r = len(pattern)
        if r == 1:
            parts.append(expect_1d(act, K, idx, pattern))
        elif r == 2:
            parts.append(_expect_2d(act, K, idx, pattern))
        else:
            parts.append(_expect_nd(act, K, idx, pattern, deg3 if r == 3 else deg4))
    return jnp.concatenate(parts)


def _four_point(act, K, m, deg3, deg4):
    r""":math:`\mathbb E[\phi_a\phi_b\phi_c\phi_d]` over the pairs, ``(P, P)``."""
    groups, table = _quadruples(m)
    return _expect_groups(act, K, groups, deg3, deg4, _expect_1d)[table]


def _dual(act, q1, q2, q12):
    # the unchecked core (the covariances here are valid by construction; the public function's
    # checks would be traced three times over by the Hessian)
    return _expectations(act, q1, q2, q12, Auto()).k


def _jet(f3, f1, K, m):
    """Values, gradients ``(P, 3)`` and Hessians ``(P, 3, 3)`` in ``(q1, q2, q12)`` of a
    two-input Gaussian expectation over the pairs: ``f3(q1, q2, q12)`` on off-diagonal pairs,
    ``f1(q)`` (the same expectation at one input, a function of its variance) on diagonal pairs,
    whose gradient row is ``(f1', 0, 0)`` and Hessian ``f1''`` in the corner (the 3-argument
    derivatives are singular at rho = 1 for kinked phi)."""
    a, b, _ = _pairs(m)
    off = a != b
    qa, qb, qab = K[a, a], K[b, b], K[a, b]
    safe = jnp.where(off, qab, 0.0)

    def g3(v):
        return f3(v[0], v[1], v[2])

    v3 = jnp.stack([qa, qb, safe], -1)
    k_off = jax.vmap(g3)(v3)
    g_off = jax.vmap(jax.grad(g3))(v3)
    h_off = jax.vmap(jax.hessian(g3))(v3)
    h1 = jax.vmap(jax.grad(f1))(qa)
    h2 = jax.vmap(jax.grad(jax.grad(f1)))(qa)
    zero = jnp.zeros_like(h1)
    value = jnp.where(off, k_off, jax.vmap(f1)(qa))
    # column by column (a broadcast where gave NaN tangents at rho = 1 under XLA -O0; measured)
    grad = jnp.stack([jnp.where(off, g_off[:, 0], h1), jnp.where(off, g_off[:, 1], zero),
                      jnp.where(off, g_off[:, 2], zero)], -1)
    hess = jnp.where(off[:, None, None], h_off, jnp.zeros_like(h_off).at[:, 0, 0].set(h2))
    return value, grad, hess


def _linear(grad, m):
    """The linearised map on pair vectors: ``L[p, (aa)] += dk/dq1``, ``L[p, (bb)] += dk/dq2``,
    ``L[p, p] += dk/dq12`` for ``p = (a, b)``."""
    a, b, index = _pairs(m)
    p = np.arange(a.size, dtype=np.int32)
    L = jnp.zeros((a.size, a.size), grad.dtype)
    return L.at[p, index[a, a]].add(grad[:, 0]).at[p, index[b, b]].add(grad[:, 1]).at[p, p].add(grad[:, 2])


def _triples(m):
    """``(P, 3)``: the pair indices of ``(aa), (bb), (ab)`` for each pair ``p = (a, b)``."""
    a, b, index = _pairs(m)
    return np.stack([index[a, a], index[b, b], np.arange(a.size, dtype=np.int32)], -1)


def _second(hess, V, m):
    r""":math:`\tfrac12 D^2f[V]`: the Hessians contracted with the covariance ``V`` ``(P, P)`` of
    :math:`(\hat G_{aa}, \hat G_{bb}, \hat G_{ab})`."""
    idx3 = _triples(m)
    return 0.5 * jnp.sum(hess * V[idx3[:, :, None], idx3[:, None, :]], (-2, -1))


def _layer(carry, params, act, m, deg3, deg4):
    """One Dense + activation step: ``(K, V, G1)`` of layer l -> layer l + 1; also returns the
    dual kernel ``F`` over the pairs, its gradients ``(P, 3)`` and the four-point covariance."""
    K, V, G1 = carry
    CW, Cb, ratio = params
    F, gF, hF = _jet(functools.partial(_dual, act), act.length_map, K, m)
    Lmat = CW * _linear(gF, m)
    hess = _second(hF, V, m)
    E4 = _four_point(act, K, m, deg3, deg4)
    cov4 = E4 - F[:, None] * F[None, :]
    K_next = Cb + CW * F
    V_next = CW**2 * cov4 + ratio * (Lmat @ V @ Lmat.T)
    G1_next = ratio * (Lmat @ G1 + CW * hess)
    return (K_next, V_next, G1_next), (F, gF, cov4)


@functools.partial(jax.jit, static_argnames=("m", "deg3", "deg4"))
def _corrections(x, W, b, act, ratios, *, m, deg3, deg4):
    a, _, index = _pairs(m)
    d = x.shape[1]
    K1 = W[0] ** 2 * (x @ x.T) / d + b[0] ** 2
    P = a.size
    zero_v = jnp.zeros((P, P), x.dtype)
    zero_g = jnp.zeros((P,), x.dtype)
    params = (W[1:] ** 2, b[1:] ** 2, ratios)

    def body(carry, prm):  # carry: K as a matrix, V and G1 over the pairs
        (Kn, Vn, Gn), _ = _layer(carry, prm, act, m, deg3, deg4)
        Kmat = Kn[index]
        return (Kmat, Vn, Gn), (Kmat, Vn, Gn)

    _, (Ks, Vs, Gs) = jax.lax.scan(body, (K1, zero_v, zero_g), params)
    Ks = jnp.concatenate([K1[None], Ks])
    Vs = jnp.concatenate([zero_v[None], Vs])
    Gs = jnp.concatenate([zero_g[None], Gs])
    return Ks, Vs[:, index[:, :, None, None], index[None, None, :, :]], Gs[:, index]


def _inputs(x, spec: FullyConnected, widths):
    """Validated ``x``, the hidden widths, the ratios ``n_l / n_{l-1}`` of the steps into layers
    ``2 .. depth + 1`` (the first is 1: nothing is random before it) and the fan-ins."""
    x = check_range(as_real(x, "x", ndim=2), "x")
    d = x.shape[1]
    if d == 0:
        raise ValueError("x must have at least one feature (column), got shape " + str(x.shape))
    if widths is None:
        widths = spec.widths if spec.widths is not None else (1,) * spec.depth
    elif isinstance(widths, (int, np.integer)) and not isinstance(widths, (bool, np.bool_)):
        widths = (static_int(widths, "widths", lo=1),) * spec.depth
    if not isinstance(widths, (tuple, list)) or len(widths) != spec.depth:
        raise ValueError(f"widths must be a positive integer or {spec.depth} positive integers, got {widths!r}")
    widths = tuple(static_int(w, "widths", lo=1) for w in widths)
    ratios = np.array([1.0] + [widths[l] / widths[l - 1] for l in range(1, spec.depth)])[: spec.depth]
    return x, widths, ratios, (d,) + widths


def nngp_corrections(
    x: Float[ArrayLike, "m d"],
    spec: FullyConnected,
    *,
    widths: int | tuple[int, ...] | None = None,
    deg3: int = 16,
    deg4: int = 10,
) -> NNGPCorrections:
    r"""The four-point vertex :math:`V^{(\ell)}` and the :math:`1/n` correction
    :math:`G^{\{1\}(\ell)}` to the NNGP kernel of a fully-connected network, layer by layer
    (the recursions of the module docstring; PDLT eqs. 4.90, 4.115).

    Args:
        x: the inputs, ``(m, d)``, real and finite (at most 64 rows; repeated rows are allowed
            and give the entries of the single input).
        spec: the network (:class:`rmtjax.kernels.FullyConnected`: depth, per-layer ``W_std``,
            ``b_std``, activation; the NNGP does not depend on the parameterization).
            Differentiable in ``W_std``, ``b_std`` and the activation's parameters.
        widths: the hidden widths ``n_1 .. n_depth`` (an int for equal widths); only their
            ratios enter ``vertex`` and ``correction``, which are reported per ``fan_in``.
            Default: ``spec.widths`` or equal widths. Where given, a standard deviation
            :math:`\sqrt{V/n}` or a mean shift :math:`G^{\{1\}}/n` larger than the kernel it
            corrects raises an :class:`ExpansionWarning` naming the depth-to-width ratio (eagerly).
        deg3, deg4: Gauss-Hermite degrees of the four-point expectations over three and four
            distinct inputs (static; ``deg3**3`` and ``deg4**4`` points per expectation).

    Returns:
        :class:`NNGPCorrections` with ``nngp``, ``vertex``, ``correction`` and ``fan_in``.

    Raises:
        ValueError: for invalid arguments, or where a value comes out non-finite (a variance
            that overflows the dtype).

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Relu
        >>> from rmtjax.kernels import FullyConnected
        >>> c = nngp_corrections(jnp.ones((1, 3)), FullyConnected(3, W_std=2**0.5, b_std=0.0))
        >>> [round(float(v), 4) for v in c.vertex[:, 0, 0, 0, 0] / c.nngp[:, 0, 0] ** 2]  # 5 (l - 1)
        [0.0, 5.0, 10.0, 15.0]
    """
    if not isinstance(spec, FullyConnected):
        raise ValueError(f"spec must be an rmtjax.kernels.FullyConnected, got {type(spec).__name__}")
    given = widths is not None or spec.widths is not None
    x, widths, ratios, fan_in = _inputs(x, spec, widths)
    m = x.shape[0]
    if m > 64:
        raise ValueError(f"x: at most 64 inputs (the vertex has m**4 = {m**4} entries), got {m}")
    deg3 = static_int(deg3, "deg3", lo=2, hi=64)
    deg4 = static_int(deg4, "deg4", lo=2, hi=24)
    W, b = spec.layer_params(x.dtype)
    Ks, Vs, Gs = _corrections(x, W, b, spec.activation, jnp.asarray(ratios, x.dtype),
                              m=m, deg3=deg3, deg4=deg4)
    bad = ~(jnp.all(jnp.isfinite(Vs)) & jnp.all(jnp.isfinite(Gs)) & jnp.all(jnp.isfinite(Ks)))
    msg = (f"x: the finite-width corrections came out non-finite (a variance overflows {x.dtype.name}); use "
           f"smaller inputs or W_std{_or_float64(x.dtype)}")
    Ks, Vs, Gs = error_if((Ks, Vs, Gs), bad, msg)
    out = NNGPCorrections(Ks, Vs, Gs, jnp.asarray(fan_in, x.dtype))
    diag = jnp.arange(x.shape[0])
    K_aa = Ks[:, diag, diag]
    K_aa = jnp.where(K_aa > 0, K_aa, jnp.inf)  # a zero input (b_std = 0) has no corrections to compare
    relative = jnp.concatenate([jnp.sqrt(jnp.maximum(Vs[:, diag, diag, diag, diag], 0.0) / out.fan_in[:, None]) / K_aa,
                                Gs[:, diag, diag] / out.fan_in[:, None] / K_aa])
    _warn_if_large(relative, widths, spec.depth, given)
    return out


# --------------------------------------------------------------------------------------------
# The NTK at initialization: mean to O(1/n) and variance, one input at a time
# --------------------------------------------------------------------------------------------


class NTKFluctuations(NamedTuple):
    r"""Leading finite-width statistics of the diagonal NTK entries :math:`\hat\Theta(x, x)` of
    a fully-connected network in the NTK parameterization, per layer :math:`\ell = 1..L+1`
    (entry ``L`` = the network's output) and per input.

    Attributes:
        ntk: :math:`\Theta^{(\ell)}(x, x)`, ``(depth + 1, m)``: the infinite-width NTK.
        correction: ``(depth + 1, m)``: :math:`n_{\ell-1}(\mathbb E\hat\Theta - \Theta)` to leading order.
        variance: ``(depth + 1, m)``: :math:`n_{\ell-1}\operatorname{Var}\hat\Theta` to leading order.
        fan_in: :math:`n_{\ell-1}`, ``(depth + 1,)``.
    """

    ntk: Float[Array, "layers m"]
    correction: Float[Array, "layers m"]
    variance: Float[Array, "layers m"]
    fan_in: Float[Array, " layers"]

    def mean(self) -> Float[Array, "layers m"]:
        r""":math:`\mathbb E\hat\Theta^{(\ell)} \approx \Theta^{(\ell)} + \text{correction}/n_{\ell-1}`."""
        return self.ntk + self.correction / self.fan_in[:, None]

    def relative_variance(self) -> Float[Array, "layers m"]:
        r""":math:`\operatorname{Var}\hat\Theta/\Theta^2` at the given widths."""
        return self.variance / self.fan_in[:, None] / self.ntk**2


@functools.lru_cache(maxsize=4)
def _midpoint_rule(step: float, cutoff: float):
    """Midpoints ``(i + 1/2) step`` of ``[-cutoff, cutoff]`` with normalised Gaussian weights (no
    node on a kink at 0; exponentially convergent for analytic integrands)."""
    m = int(math.ceil(cutoff / step))
    z = step * (np.arange(-m, m) + 0.5)
    w = np.exp(-0.5 * z * z)
    return z, w / w.sum()


def _moments(act, q):
    r"""One-input Gaussian moments at variance ``q``: :math:`H = \langle\phi'^2\rangle`,
    :math:`\langle\phi^4\rangle, \langle\phi^2\phi'^2\rangle, \langle\phi'^4\rangle`."""
    z, w = (jnp.asarray(v, q.dtype) for v in _midpoint_rule(0.01, 13.0))
    u = safe_sqrt(q) * z
    f, df = act(u), act.derivative(u)
    f2, d2 = f * f, df * df
    return jnp.stack([d2 @ w, (f2 * f2) @ w, (f2 * d2) @ w, (d2 * d2) @ w])


def _ntk_layer(carry, params, act):
    """One step of the joint recursion of (G, Theta): see :func:`ntk_fluctuations`."""
    K, Th, g1, t1, S, s, u = carry
    sw2, sb2, r = params

    def F(q):
        return act.length_map(q)

    def H(q):
        return _moments(act, q)[0]

    Fv, Fp = jax.value_and_grad(F)(K)
    Fpp = jax.grad(jax.grad(F))(K)
    Hv, Hp = jax.value_and_grad(H)(K)
    Hpp = jax.grad(jax.grad(H))(K)
    _, f4, f2d2, d4 = _moments(act, K)
    vXX = f4 - Fv * Fv
    cXD = f2d2 - Fv * Hv  # Cov(phi^2, phi'^2)
    vD = d4 - Hv * Hv
    C = sw2**2 * jnp.array([[vXX, vXX + Th * cXD], [vXX + Th * cXD, vXX + 2 * Th * cXD + Th**2 * vD]])
    J = sw2 * jnp.array([[Fp, 0.0], [Fp + Hp * Th, Hv]])
    g1n = r * sw2 * (Fp * g1 + 0.5 * Fpp * S[0, 0])
    t1n = g1n + r * sw2 * (Hp * g1 * Th + Hv * t1 + 0.5 * Hpp * S[0, 0] * Th + Hp * S[0, 1] + 2 * s * Hp)
    Sn = C + r * (J @ S @ J.T)
    sn = sw2**2 * (f2d2 * Th + r * s * Fp**2)
    un = sw2**2 * d4 * Th**2 + r * (sw2 * Hv) ** 2 * u
    Kn = sb2 + sw2 * Fv
    Thn = Kn + sw2 * Hv * Th
    return (Kn, Thn, g1n, t1n, Sn, sn, un), (Thn, t1n, Sn[1, 1] + 2 * un)


@jax.jit
def _ntk_fluctuations(x, W, b, act, ratios):
    d = x.shape[1]
    params = (W[1:] ** 2, b[1:] ** 2, ratios)

    def one(row):
        K1 = W[0] ** 2 * (row @ row) / d + b[0] ** 2
        z = jnp.zeros((), x.dtype)
        carry = (K1, K1, z, z, jnp.zeros((2, 2), x.dtype), z, z)
        _, (Th, t1, var) = jax.lax.scan(functools.partial(_ntk_layer, act=act), carry, params)
        return (jnp.concatenate([K1[None], Th]), jnp.concatenate([z[None], t1]), jnp.concatenate([z[None], var]))

    Th, t1, var = jax.vmap(one)(x)
    return Th.T, t1.T, var.T


def ntk_fluctuations(
    x: Float[ArrayLike, "m d"],
    spec: FullyConnected,
    *,
    widths: int | tuple[int, ...] | None = None,
) -> NTKFluctuations:
    r"""Mean (to :math:`O(1/n)`) and variance of the diagonal NTK entries :math:`\hat\Theta(x,x)`
    of a finite-width fully-connected network at initialization, layer by layer.

    The recursion (derived as in PDLT ch. 8 — the NTK-preactivation cross-correlations
    :math:`D, F` and the NTK variance tensors :math:`A, B` of eqs. 8.63-8.89 — here in
    collective variables, for one input). Given layer :math:`\ell`, the preactivations of the
    next layer are Gaussian with covariance :math:`\hat G` and their NTK diagonal has
    conditional mean :math:`\hat Y = C_b + C_W\langle\phi^2\rangle_n + C_W\langle\phi'^2\hat\Theta\rangle_n`
    (averages over the :math:`n_\ell` neurons). With :math:`F(q) = \langle\phi^2\rangle_q`,
    :math:`H(q) = \langle\phi'^2\rangle_q` at :math:`q = K^{(\ell)}`:

    * the covariance :math:`\Sigma` of :math:`(\hat G, \hat Y)` obeys
      :math:`n_\ell\Sigma^{(\ell)} = C_W^2\operatorname{Cov}(\phi^2, \phi^2 + \Theta\phi'^2)
      + \frac{n_\ell}{n_{\ell-1}} J\,n_{\ell-1}\Sigma^{(\ell-1)}J^\top`,
      :math:`J = C_W\begin{pmatrix}F' & 0\\ F' + H'\Theta & H\end{pmatrix}`;
    * a neuron's NTK correlates with its own preactivation:
      :math:`\mathbb E[\hat\Theta_{ii} - \hat Y \mid z_i] = s\,(z_i^2 - \hat G)/\hat G^2` with
      :math:`n_\ell s^{(\ell)} = C_W^2(\langle\phi^2\phi'^2\rangle\Theta + \frac{n_\ell}{n_{\ell-1}}
      n_{\ell-1}s^{(\ell-1)}F'^2)` (Stein's lemma gives the :math:`2sH'` term of the mean);
    * the within-layer part has variance :math:`2u` with
      :math:`n_\ell u^{(\ell)} = C_W^2\langle\phi'^4\rangle\Theta^2 + \frac{n_\ell}{n_{\ell-1}}
      (C_WH)^2 n_{\ell-1}u^{(\ell-1)}` (from the off-diagonal neuron entries
      :math:`\hat\Theta_{jk} = O(n^{-1/2})`);
    * means: :math:`\mathbb E\hat G` as in :func:`nngp_corrections`, and
      :math:`\mathbb E\hat Y = \mathbb E\hat G + C_W(H\Theta + H'\Theta\,\delta G + H\,\delta Y
      + \tfrac12 H''\Theta\Sigma_{GG} + H'\Sigma_{GY} + 2sH')`.

    Then :math:`\mathbb E\hat\Theta^{(\ell+1)} = \mathbb E\hat Y` and
    :math:`\operatorname{Var}\hat\Theta^{(\ell+1)} = \Sigma_{YY} + 2u`. Everything starts at zero
    (the first layer's NTK :math:`C_b + C_W|x|^2/d` is not random).

    ReLU without biases (any :math:`C_W`), equal widths: :math:`\mathbb E\hat\Theta = \Theta =
    (L+1)K` exactly at this order and
    :math:`n\operatorname{Var}\hat\Theta/\Theta^2 = L(11L + 7)/(3(L + 1))`, growing like
    :math:`\tfrac{11}{3}L/n` — the linear term of the :math:`e^{cL/n}` growth of Hanin & Nica
    (2019, "Finite depth and width corrections to the neural tangent kernel", Thm. 1, which
    states :math:`e^{5\beta}`, :math:`\beta = \sum_\ell 1/n_\ell`, up to constants, for their
    weights-only kernel).

    Args:
        x: inputs ``(m, d)``, real and finite; each row's :math:`\hat\Theta(x, x)` is treated on
            its own (covariances between different inputs are not computed).
        spec: a :class:`rmtjax.kernels.FullyConnected` with ``parameterization="ntk"``;
            differentiable in ``W_std``, ``b_std`` and the activation's parameters.
        widths: hidden widths (an int for equal widths); default ``spec.widths`` or equal. Where
            given, a relative standard deviation or mean shift above 1 raises an
            :class:`ExpansionWarning` naming the depth-to-width ratio (eagerly).

    Returns:
        :class:`NTKFluctuations`.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.kernels import FullyConnected
        >>> f = ntk_fluctuations(jnp.ones((1, 3)), FullyConnected(6, W_std=2**0.5, b_std=0.0))
        >>> round(float(f.variance[-1, 0] / f.ntk[-1, 0] ** 2), 4)  # 6 (11 * 6 + 7) / (3 * 7)
        20.8571
    """
    if not isinstance(spec, FullyConnected):
        raise ValueError(f"spec must be an rmtjax.kernels.FullyConnected, got {type(spec).__name__}")
    if spec.parameterization != "ntk":
        raise ValueError("spec: ntk_fluctuations supports parameterization='ntk' only, got 'standard'")
    given = widths is not None or spec.widths is not None
    x, widths, ratios, fan_in = _inputs(x, spec, widths)
    W, b = spec.layer_params(x.dtype)
    Th, t1, var = _ntk_fluctuations(x, W, b, spec.activation, jnp.asarray(ratios, x.dtype))
    bad = ~(jnp.all(jnp.isfinite(Th)) & jnp.all(jnp.isfinite(t1)) & jnp.all(jnp.isfinite(var)))
    msg = (f"x: the NTK fluctuations came out non-finite (a variance overflows {x.dtype.name}); use smaller "
           f"inputs or W_std{_or_float64(x.dtype)}")
    Th, t1, var = error_if((Th, t1, var), bad, msg)
    out = NTKFluctuations(Th, t1, var, jnp.asarray(fan_in, x.dtype))
    _warn_if_large(jnp.concatenate([jnp.sqrt(out.relative_variance()), out.correction / out.fan_in[:, None] / Th]),
                   widths, spec.depth, given)
    return out


# --------------------------------------------------------------------------------------------
# The NTK at initialization for a batch: mean to O(1/n) and covariance of all entries
# --------------------------------------------------------------------------------------------


class NTKCovariance(NamedTuple):
    r"""Leading finite-width statistics of all entries :math:`\hat\Theta(x_a, x_b)` of the NTK of a
    fully-connected network in the NTK parameterization, per layer :math:`\ell = 1..L+1` (entry
    ``L`` = the network's output; a hidden layer's entry is one neuron's NTK).

    Attributes:
        ntk: :math:`\Theta^{(\ell)}`, ``(depth + 1, m, m)``: the infinite-width NTK.
        correction: ``(depth + 1, m, m)``: :math:`n_{\ell-1}(\mathbb E\hat\Theta - \Theta)` to leading order.
        covariance: ``(depth + 1, P, P)``, :math:`P = m(m+1)/2`:
            :math:`n_{\ell-1}\operatorname{Cov}(\hat\Theta_{ab}, \hat\Theta_{cd})` to leading order, over
            the pairs ``(a, b)``, ``a <= b``, in the order of ``numpy.triu_indices(m)`` (:meth:`pairs`).
        fan_in: :math:`n_{\ell-1}`, ``(depth + 1,)``.
    """

    ntk: Float[Array, "layers m m"]
    correction: Float[Array, "layers m m"]
    covariance: Float[Array, "layers P P"]
    fan_in: Float[Array, " layers"]

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The pairs ``(a, b)`` that index ``covariance``: ``numpy.triu_indices(m)``."""
        a, b, _ = _pairs(self.ntk.shape[-1])
        return a, b

    def mean(self) -> Float[Array, "layers m m"]:
        r""":math:`\mathbb E\hat\Theta^{(\ell)} \approx \Theta^{(\ell)} + \text{correction}/n_{\ell-1}`."""
        return self.ntk + self.correction / self.fan_in[:, None, None]

    def cov(self) -> Float[Array, "layers P P"]:
        r""":math:`\operatorname{Cov}(\hat\Theta_{ab}, \hat\Theta_{cd}) \approx \text{covariance}/n_{\ell-1}`
        over the pairs."""
        return self.covariance / self.fan_in[:, None, None]

    def tensor(self) -> Float[Array, "layers m m m m"]:
        r"""``covariance`` as ``(depth + 1, m, m, m, m)``: ``[l, a, b, c, d]`` is
        :math:`n_{\ell-1}\operatorname{Cov}(\hat\Theta_{ab}, \hat\Theta_{cd})` for all ``a, b, c, d``."""
        _, _, index = _pairs(self.ntk.shape[-1])
        return self.covariance[:, index[:, :, None, None], index[None, None, :, :]]


@functools.lru_cache(maxsize=64)
def _mixed_quadruples(m: int, kinds: tuple[int, ...]):
    r"""Like :func:`_quadruples`, for :math:`\mathbb E[f_{k_1}(z_a)f_{k_2}(z_b)f_{k_3}(z_c)f_{k_4}(z_d)]`
    over all ``(a, b, c, d)`` (``f_0 = phi``, ``f_1 = phi'``): patterns are tuples of
    ``(power of phi, power of phi')`` per distinct input; ``table`` is ``(m, m, m, m)``."""
    position: dict = {}
    groups: dict = {}
    keys = []
    for idx in np.ndindex(m, m, m, m):
        counts: dict[int, list[int]] = {}
        for i, k in zip(idx, kinds):
            counts.setdefault(int(i), [0, 0])[k] += 1
        items = sorted(((i, tuple(c)) for i, c in counts.items()), key=lambda it: (-sum(it[1]), -it[1][1], it[0]))
        key = (tuple(c for _, c in items), tuple(i for i, _ in items))
        if key not in position:
            groups.setdefault(key[0], []).append(key[1])
            position[key] = -1
        keys.append(key)
    order = sorted(groups)
    start = 0
    for pattern in order:
        for k, distinct in enumerate(groups[pattern]):
            position[(pattern, distinct)] = start + k
        start += len(groups[pattern])
    table = np.array([position[k] for k in keys], dtype=np.int32).reshape(m, m, m, m)
    return tuple((pattern, np.array(groups[pattern], dtype=np.int32)) for pattern in order), table


def _expect_midpoint(act, K, idx, pattern):
    # the midpoint rule of _moments (no node on a kink of phi' at 0)
    z, w = (jnp.asarray(v, K.dtype) for v in _midpoint_rule(0.01, 13.0))
    x = safe_sqrt(K[idx[:, 0], idx[:, 0]])[:, None, None] * z[None, :, None]
    return _product(act, x, pattern) @ w


def _mixed_four_point(act, K, kinds, deg3, deg4):
    r""":math:`\mathbb E[f_{k_1}(z_a)f_{k_2}(z_b)f_{k_3}(z_c)f_{k_4}(z_d)]`, ``(m, m, m, m)``, for
    :math:`z\sim\mathcal N(0, K)` (the rules of :func:`_four_point`; one input: the midpoint rule)."""
    groups, table = _mixed_quadruples(K.shape[0], kinds)
    return _expect_groups(act, K, groups, deg3, deg4, _expect_midpoint)[table]


def _stein_weights(gF, m):
    r""":math:`D_{(ae)g} = \mathbb E[\partial_g(\phi'_a\phi_e)]`, ``(m, m, m)``, from the dual
    kernel's gradient: :math:`2\partial_{q_a}k_{ae}` at ``g = a`` and :math:`\partial_{q_{ae}}k_{ae}`
    at ``g = e`` for ``a != e``; :math:`F'(q_a)` at ``g = a = e``."""
    _, _, index = _pairs(m)
    A, E = (v.astype(np.int32) for v in np.nonzero(~np.eye(m, dtype=bool)))
    p = index[A, E]
    col = np.where(A < E, 0, 1).astype(np.int32)  # which of (q1, q2) of the pair is q_a
    r = np.arange(m, dtype=np.int32)
    D = jnp.zeros((m, m, m), gF.dtype)
    D = D.at[A, E, A].set(2 * gF[p, col]).at[A, E, E].set(gF[p, 2])
    return D.at[r, r, r].set(gF[index[r, r], 0])


def _ntk_cov_layer(carry, params, act, m, deg3, deg4):
    """One step of the joint recursion of :func:`ntk_covariance`."""
    K, Th, V, G1, T1, SGY, SYY, S, U = carry
    CW, Cb, r = params
    a, b, index = _pairs(m)
    (K_next, V_next, G1_next), (F, gF, cov4) = _layer((K, V, G1), params, act, m, deg3, deg4)

    def kdot(q1, q2, q12):
        return _expectations(act, q1, q2, q12, Auto()).kdot

    Hv, gH, hH = _jet(kdot, lambda q: _moments(act, q)[0], K, m)
    LF = CW * _linear(gF, m)
    LH = _linear(gH, m)
    Thp = Th[a, b]
    Effdd = _mixed_four_point(act, K, (0, 0, 1, 1), deg3, deg4)  # <phi_a phi_b phi'_c phi'_d>
    Edddd = _mixed_four_point(act, K, (1, 1, 1, 1), deg3, deg4)
    ap, bp, aq, bq = a[:, None], b[:, None], a[None, :], b[None, :]
    cFD = Effdd[ap, bp, aq, bq] - F[:, None] * Hv[None, :]  # Cov(phi_p phi_p, phi'_q phi'_q)
    cDD = Edddd[ap, bp, aq, bq] - Hv[:, None] * Hv[None, :]
    C_GY = cov4 + cFD * Thp[None, :]
    C_YY = cov4 + cFD * Thp[None, :] + cFD.T * Thp[:, None] + cDD * (Thp[:, None] * Thp[None, :])
    JYG = LF + CW * Thp[:, None] * LH
    JYY = CW * Hv  # a diagonal
    SGY_next = CW**2 * C_GY + r * (LF @ (V @ JYG.T + SGY * JYY[None, :]))
    SYY_next = CW**2 * C_YY + r * (JYG @ V @ JYG.T + (JYG @ SGY) * JYY[None, :] + JYY[:, None] * (SGY.T @ JYG.T)
                                   + JYY[:, None] * SYY * JYY[None, :])
    idx3 = _triples(m)
    p = np.arange(a.size, dtype=np.int32)
    ST = (2 * S[a, b, a, a] * gH[:, 0] + 2 * S[a, b, b, b] * gH[:, 1] + (S[a, b, a, b] + S[a, b, b, a]) * gH[:, 2])
    T1_next = G1_next + r * CW * (Hv * T1 + Thp * jnp.sum(gH * G1[idx3], -1) + Thp * _second(hH, V, m)
                                  + jnp.sum(gH * SGY[idx3, p[:, None]], -1) + ST)
    D = _stein_weights(gF, m)
    S_next = CW**2 * (jnp.transpose(Effdd, (2, 3, 0, 1)) * Th[:, :, None, None]
                      + r * jnp.einsum("abgh,aeg,bfh->abef", S, D, D))
    Hm = Hv[index]
    U_next = CW**2 * (Edddd * (Th[:, :, None, None] * Th[None, None, :, :])
                      + r * (Hm[:, None, :, None] * Hm[None, :, None, :]) * U)
    Kmat = K_next[index]
    Th_next = Kmat + CW * Hm * Th
    cov = SYY_next + U_next[ap, bp, aq, bq] + U_next[ap, bp, bq, aq]
    carry = (Kmat, Th_next, V_next, G1_next, T1_next, SGY_next, SYY_next, S_next, U_next)
    return carry, (Th_next, T1_next, cov)


@functools.partial(jax.jit, static_argnames=("m", "deg3", "deg4"))
def _ntk_covariance(x, W, b, act, ratios, *, m, deg3, deg4):
    a, _, index = _pairs(m)
    d = x.shape[1]
    K1 = W[0] ** 2 * (x @ x.T) / d + b[0] ** 2
    P = a.size
    zp, zpp, zm4 = (jnp.zeros(s, x.dtype) for s in ((P,), (P, P), (m,) * 4))
    carry = (K1, K1, zpp, zp, zp, zpp, zpp, zm4, zm4)
    params = (W[1:] ** 2, b[1:] ** 2, ratios)
    body = functools.partial(_ntk_cov_layer, act=act, m=m, deg3=deg3, deg4=deg4)
    _, (Th, T1, cov) = jax.lax.scan(body, carry, params)
    return (jnp.concatenate([K1[None], Th]), jnp.concatenate([zp[None], T1])[:, index],
            jnp.concatenate([zpp[None], cov]))


def ntk_covariance(
    x: Float[ArrayLike, "m d"],
    spec: FullyConnected,
    *,
    widths: int | tuple[int, ...] | None = None,
    deg3: int = 16,
    deg4: int = 10,
) -> NTKCovariance:
    r"""Mean (to :math:`O(1/n)`) and covariance of all NTK entries :math:`\hat\Theta(x_a, x_b)` of a
    finite-width fully-connected network at initialization, for a batch of inputs, layer by layer.

    The multi-input form of :func:`ntk_fluctuations` (whose diagonal it reproduces), derived as in
    PDLT ch. 8 (the NTK-preactivation cross-correlations :math:`D, F` and the NTK variance tensors
    :math:`A, B` of eqs. 8.63-8.89, there for general inputs), in collective variables. Write
    :math:`\langle\cdot\rangle` for the Gaussian expectation over :math:`z\sim\mathcal N(0, K^{(\ell)})`, :math:`\phi_a = \phi(z_a)`,
    :math:`F_{ab} = \langle\phi_a\phi_b\rangle`, :math:`H_{ab} = \langle\phi'_a\phi'_b\rangle`,
    :math:`\Theta = \Theta^{(\ell)}`, :math:`r = n_\ell/n_{\ell-1}`; all :math:`O(1/n)` quantities below
    are multiplied by the fan-in that divides them. Given layer :math:`\ell`, neuron :math:`i` of the
    next layer has :math:`\hat\Theta^{(\ell+1)}_{ii;ab} = \hat Y_{ab} + \varepsilon_{i;ab}` with the
    collective variables :math:`\hat G_{ab} = C_b + \frac{C_W}{n_\ell}\sum_k\phi_{k;a}\phi_{k;b}`,
    :math:`\hat Y_{ab} = \hat G_{ab} + \frac{C_W}{n_\ell}\sum_k\phi'_{k;a}\phi'_{k;b}\hat\Theta_{kk;ab}`
    and :math:`\varepsilon_i` the part of the weights' quadratic form with conditional mean zero.

    * Collective covariance :math:`\Sigma` of :math:`(\hat G, \hat Y)` over the pairs:
      :math:`\Sigma^{(\ell+1)} = C_W^2\operatorname{Cov}\big[(\phi_a\phi_b,\ \phi_a\phi_b +
      \Theta_{ab}\phi'_a\phi'_b),\ (\phi_c\phi_d,\ \phi_c\phi_d + \Theta_{cd}\phi'_c\phi'_d)\big] +
      r\,J\Sigma^{(\ell)}J^\top`, with
      :math:`J = \begin{pmatrix}\mathcal L & 0\\ \mathcal L + C_W\Theta_{ab}\,DH_{ab} &
      C_W\operatorname{diag}H_{ab}\end{pmatrix}`, :math:`\mathcal L = C_W\,DF` the linearised kernel map of
      :func:`nngp_corrections` and :math:`DH_{ab}` the gradient of :math:`H_{ab}` in
      :math:`(K_{aa}, K_{bb}, K_{ab})` (:math:`\Sigma_{GG}` is the four-point vertex :math:`V`).
    * Off-diagonal neurons (:math:`j \ne k`; the role of PDLT's :math:`B`):
      :math:`\mathbb E[\hat\Theta_{jk;ab}\hat\Theta_{jk;cd}] = U_{ab,cd}/n` with
      :math:`U^{(\ell+1)}_{ab,cd} = C_W^2\big(\langle\phi'_a\phi'_b\phi'_c\phi'_d\rangle\Theta_{ab}\Theta_{cd}
      + r\,H_{ac}H_{bd}U^{(\ell)}_{ab,cd}\big)`; the conditional covariance of the Gaussian quadratic
      form is :math:`\operatorname{Cov}(\varepsilon_{ab}, \varepsilon_{cd}) = (U_{ab,cd} + U_{ab,dc})/n`.
    * NTK-preactivation correlation (the role of PDLT's :math:`D, F`): by Gaussian conditioning of the weights on
      :math:`z_i`, :math:`\mathbb E[\varepsilon_{i;ab}\mid z_i] = \frac1n S_{ab,ef}\,
      [K^{-1}(z_iz_i^\top - K)K^{-1}]_{ef}` and
      :math:`\mathbb E[\hat\Theta_{jk;ab}\mid z_j, z_k] = \frac1n S_{ab,ef}(K^{-1}z_j)_e(K^{-1}z_k)_f`
      with one tensor :math:`S^{(\ell+1)}_{ab,ef} = C_W^2\big(\langle\phi'_a\phi'_b\phi_e\phi_f\rangle
      \Theta_{ab} + r\,S^{(\ell)}_{ab,gh}\mathcal D_{(ae)g}\mathcal D_{(bf)h}\big)`, where Stein's lemma
      gives :math:`\mathcal D_{(ae)g} = \langle\partial_g(\phi'_a\phi_e)\rangle`: :math:`2\partial_{K_{aa}}F_{ae}`
      at :math:`g = a`, :math:`\partial_{K_{ae}}F_{ae} = H_{ae}` at :math:`g = e` (:math:`F'(K_{aa})` when
      :math:`a = e`).
    * Means: :math:`\mathbb E\hat G` as in :func:`nngp_corrections` (:math:`G^{\{1\}}`) and, by the
      delta method and second-order Stein (:math:`\langle f\,[K^{-1}(zz^\top-K)K^{-1}]_{ef}\rangle =
      \langle\partial_e\partial_f f\rangle`),
      :math:`\Theta^{\{1\}(\ell+1)}_{ab} = G^{\{1\}(\ell+1)}_{ab} + rC_W\big(H_{ab}\Theta^{\{1\}}_{ab} +
      \Theta_{ab}DH_{ab}\cdot G^{\{1\}} + \tfrac12\Theta_{ab}D^2H_{ab}[V] + DH_{ab}\cdot\Sigma_{G,Y_{ab}}
      + 2S_{ab,aa}\partial_{K_{aa}}H_{ab} + 2S_{ab,bb}\partial_{K_{bb}}H_{ab}
      + (S_{ab,ab} + S_{ab,ba})\partial_{K_{ab}}H_{ab}\big)`.

    Then :math:`\mathbb E\hat\Theta^{(\ell+1)} = \Theta^{(\ell+1)} + \Theta^{\{1\}(\ell+1)}/n_\ell`,
    :math:`\Theta^{(\ell+1)} = K^{(\ell+1)} + C_W H\odot\Theta^{(\ell)}`, and
    :math:`n_\ell\operatorname{Cov}(\hat\Theta_{ab}, \hat\Theta_{cd}) = \Sigma_{Y_{ab}Y_{cd}} + U_{ab,cd} +
    U_{ab,dc}` (law of total covariance; everything starts at zero at the first layer). For one input
    the recursion is that of :func:`ntk_fluctuations` (:math:`s = S_{aa,aa}`, :math:`u = U_{aa,aa}`).

    Deep linear network (:math:`\phi(z) = z`, :math:`C_b = 0`; tested): no mean correction and, with
    :math:`\bar K = K^{(1)}`,
    :math:`\operatorname{Cov}(\hat\Theta_{ab}, \hat\Theta_{cd}) = C_W^{2L}\sum_{k=1}^{L}\frac{1}{n_k}
    \big[(L+1-k)^2(\bar K_{ac}\bar K_{bd} + \bar K_{ad}\bar K_{bc}) + 2k^2\bar K_{ab}\bar K_{cd}\big]`
    (derived independently: :math:`\hat\Theta = \sum_\ell |g_\ell|^2\hat G^{(\ell)}` with independent
    Wishart forward and :math:`\chi^2` backward fluctuations at this order).

    Expectations: as in :func:`nngp_corrections` (one input by the midpoint rule of
    :func:`ntk_fluctuations`, two by the split polar rule, three or four by tensor Gauss-Hermite of
    degree ``deg3`` / ``deg4``, approximate for kinked activations: see the module docstring).
    The mean correction of an entry :math:`(a, b)` involves inputs :math:`a, b` only (two-input
    formulas); covariances between entries with three or four distinct inputs carry the
    Gauss-Hermite error: measured at ``deg3 = 16``, reordering three inputs changes them by 1e-4
    (tanh) and 1.3e-3 (ReLU) of the largest entry, and at a repeated input (a singular covariance)
    by up to 0.4% for tanh (3e-4 at ``deg3 = 40``).

    Args:
        x: inputs ``(m, d)``, real and finite (at most 32 rows).
        spec: a :class:`rmtjax.kernels.FullyConnected` with ``parameterization="ntk"``;
            differentiable in ``W_std``, ``b_std`` and the activation's parameters.
        widths: hidden widths (an int for equal widths); default ``spec.widths`` or equal. Where
            given, a relative standard deviation or mean shift of a diagonal entry above 1 raises an
            :class:`ExpansionWarning` naming the depth-to-width ratio (eagerly).
        deg3, deg4: Gauss-Hermite degrees of the expectations over three and four distinct inputs.

    Returns:
        :class:`NTKCovariance` (``ntk``, ``correction``, ``covariance`` over the pairs, ``fan_in``).

    Raises:
        ValueError: for invalid arguments, or where a value comes out non-finite.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Identity
        >>> from rmtjax.kernels import FullyConnected
        >>> c = ntk_covariance(jnp.eye(2), FullyConnected(1, b_std=0.0, activation=Identity()))
        >>> (c.covariance[-1] + 0.0).round(6).tolist()  # K = I/2: K_ac K_bd + K_ad K_bc + 2 K_ab K_cd
        [[1.0, 0.0, 0.5], [0.0, 0.25, 0.0], [0.5, 0.0, 1.0]]
    """
    if not isinstance(spec, FullyConnected):
        raise ValueError(f"spec must be an rmtjax.kernels.FullyConnected, got {type(spec).__name__}")
    if spec.parameterization != "ntk":
        raise ValueError("spec: ntk_covariance supports parameterization='ntk' only, got 'standard'")
    given = widths is not None or spec.widths is not None
    x, widths, ratios, fan_in = _inputs(x, spec, widths)
    m = x.shape[0]
    if m > 32:
        raise ValueError(f"x: at most 32 inputs (the recursion carries m**4 = {m**4} entries), got {m}")
    deg3 = static_int(deg3, "deg3", lo=2, hi=64)
    deg4 = static_int(deg4, "deg4", lo=2, hi=24)
    W, b = spec.layer_params(x.dtype)
    Th, T1, cov = _ntk_covariance(x, W, b, spec.activation, jnp.asarray(ratios, x.dtype), m=m, deg3=deg3, deg4=deg4)
    bad = ~(jnp.all(jnp.isfinite(Th)) & jnp.all(jnp.isfinite(T1)) & jnp.all(jnp.isfinite(cov)))
    msg = (f"x: the NTK covariance came out non-finite (a variance overflows {x.dtype.name}); use smaller "
           f"inputs or W_std{_or_float64(x.dtype)}")
    Th, T1, cov = error_if((Th, T1, cov), bad, msg)
    out = NTKCovariance(Th, T1, cov, jnp.asarray(fan_in, x.dtype))
    # the warning looks at the diagonal entries, as ntk_fluctuations does
    _, _, index = _pairs(m)
    diag = np.arange(m, dtype=np.int32)
    th = Th[:, diag, diag]
    var = cov[:, index[diag, diag], index[diag, diag]]
    _warn_if_large(jnp.concatenate([jnp.sqrt(jnp.maximum(var, 0.0) / out.fan_in[:, None]) / th,
                                    T1[:, diag, diag] / out.fan_in[:, None] / th]), widths, spec.depth, given)
    return out


# --------------------------------------------------------------------------------------------
# The NTK's expected change during training (one hidden layer)
# --------------------------------------------------------------------------------------------


class NTKChange(NamedTuple):
    r"""The expected change of the empirical NTK on the training inputs during full-batch gradient
    descent, to leading order in :math:`1/n` (:func:`ntk_change`). With test inputs every
    ``(m, m)`` field is ``(m + t, m + t)``, over the training rows then the test rows.

    Attributes:
        ntk: :math:`\Theta`, ``(m, m)``: the infinite-width NTK on the training inputs.
        change: ``(m, m)``: :math:`n\,\mathbb E[\hat\Theta_T - \hat\Theta_0]` to leading order (the
            coefficient of :math:`1/n`), a Monte-Carlo estimate over ``samples`` neurons.
        stderr: ``(m, m)``: the Monte-Carlo standard error of ``change``.
        terms: ``(3, m, m)``: ``change`` split into the dNTK term (the NTK's derivative along the
            gradient, correlated with the initial function), the ddNTK term (the dNTK's own drift)
            and the second-order term of each discrete step; they sum to ``change``.
        width: :math:`n`, the hidden width that divides ``change``.
    """

    ntk: Float[Array, "m m"]
    change: Float[Array, "m m"]
    stderr: Float[Array, "m m"]
    terms: Float[Array, "3 m m"]
    width: Float[Array, ""]

    def expected_change(self) -> Float[Array, "m m"]:
        r""":math:`\mathbb E[\hat\Theta_T - \hat\Theta_0] \approx \text{change}/n`."""
        return self.change / self.width

    def relative_change(self) -> Float[Array, ""]:
        r""":math:`\|\mathbb E[\hat\Theta_T - \hat\Theta_0]\|_F / \|\Theta\|_F` at the given width."""
        return jnp.linalg.norm(self.expected_change()) / jnp.linalg.norm(self.ntk)


def _smooth_activations():
    from . import activations as A

    return (A.Tanh, A.Erf, A.Gelu, A.Sin, A.Cos, A.Identity, A.Exp, A.Gaussian, A.Rbf, A.Polynomial, A.Monomial,
            A.Hermite, A.HermiteSeries, A.Sigmoid, A.Swish, A.Softplus, A.Mish)


def _check_smooth(act) -> None:
    """:func:`ntk_change` differentiates the activation three times: kinks would need delta terms."""
    from .activations import Transformed

    base = act
    while isinstance(base, Transformed):
        base = base.base
    if not isinstance(base, _smooth_activations()):
        names = ", ".join(c.__name__ for c in _smooth_activations())
        raise ValueError(f"spec.activation: ntk_change needs an activation with three continuous derivatives "
                         f"({names}, or Transformed of one), got {type(act).__name__}")


def _dT(T_parts, e_a, e_z):
    """:math:`DT_{ij}[e]` for :math:`T_{ij} = \\phi_i\\phi_j + a^2\\phi'_i\\phi'_j G_{ij}` in the
    direction ``(e_a, e_z)`` (``e_z`` already multiplied by the metric ``G``)."""
    a, p0, p1, p2, _, G = T_parts
    ti = jnp.outer(p1, p0) + a * a * jnp.outer(p2, p1) * G  # dT_ij / dz_i
    return 2 * a * jnp.outer(p1, p1) * G * e_a + ti * e_z[:, None] + ti.T * e_z[None, :]


def _d2T(T_parts, B):
    r""":math:`\sum_{\alpha\beta} B_{\alpha\beta}\, D^2T_{ij}[\hat e_\alpha, \hat e_\beta]`, with
    :math:`\hat e_\alpha = (\phi_\alpha, a\phi'_\alpha G_{:\alpha})` the metric-raised gradient of
    :math:`g_\alpha = a\phi(z_\alpha)` in the neuron's parameters :math:`(a, z)`."""
    a, p0, p1, p2, p3, G = T_parts
    s_aa = p0 @ B @ p0
    u = a * (G @ (p1 * (B.T @ p0)))  # sum B e_a f_i
    v = a * (G @ (p1 * (B @ p0)))  # sum B e_i f_a
    GD = G * p1[None, :]
    Mx = a * a * (GD @ B @ GD.T)  # sum B e_i f_j
    mixed = u + v
    d_ii = jnp.diagonal(Mx)
    out = 2 * jnp.outer(p1, p1) * G * s_aa
    out = out + 2 * a * G * (jnp.outer(p2, p1) * mixed[:, None] + jnp.outer(p1, p2) * mixed[None, :])
    out = out + (jnp.outer(p2, p0) + a * a * jnp.outer(p3, p1) * G) * d_ii[:, None]
    out = out + (jnp.outer(p0, p2) + a * a * jnp.outer(p1, p3) * G) * d_ii[None, :]
    return out + (jnp.outer(p1, p1) + a * a * jnp.outer(p2, p2) * G) * (Mx + Mx.T)


def _change_sample(act, G, M1, M2, M3, a, z):
    """The three terms of :func:`ntk_change` for one neuron ``(a, z)``, before the factor
    :math:`C_W^2` of the readout (``(3, m, m)``), from the propagators already scaled by the step
    (``M1 = h B1``, ``M2 = h^2 B2``, ``M3 = h^2 B3 / 2``; :func:`_propagators`, :func:`_flow_propagators`)."""
    d1 = jax.grad(act)
    d2 = jax.grad(d1)
    d3 = jax.grad(d2)
    p0, p1, p2, p3 = act(z), jax.vmap(d1)(z), jax.vmap(d2)(z), jax.vmap(d3)(z)
    parts = (a, p0, p1, p2, p3, G)
    # dNTK: sum_{alpha gamma} M1 U_{ij alpha} a phi_gamma = DT[sum_alpha c_alpha e_alpha], c = a M1 phi
    c = a * (M1 @ p0)
    t1 = -_dT(parts, c @ p0, G @ (a * c * p1))
    # ddNTK: sum M2_{alpha beta} Y_{ij alpha beta} = D^2T[M2] + DT[G w], w = sum M2 Hess(g_alpha) e_beta
    MG = M2 * G
    w_a = a * (p1 @ MG @ p1)
    w_z = p1 * (M2 @ p0) + a * a * p2 * (MG @ p1)
    t2 = _d2T(parts, M2) + _dT(parts, w_a, G @ w_z)
    # second order of each step: sum M3 D^2T
    t3 = _d2T(parts, M3)
    return jnp.stack([t1, t2, t3])


def _propagators(theta, C, h, steps: int):
    r""":math:`B_1 = \sum_{k<T} A^k`, :math:`B_2 = \sum_{k<T}\big(\sum_{j<k} A^jCA^k\big)^\top`,
    :math:`B_3 = \sum_{k<T} A^kCA^k` for :math:`A = I - h\Theta`."""
    m = theta.shape[0]
    A = jnp.eye(m, dtype=theta.dtype) - h * theta

    def body(carry, _):
        Ak, acc, B1, B2, B3 = carry
        B1 = B1 + Ak
        B2 = B2 + (acc @ Ak).T
        B3 = B3 + Ak @ C @ Ak
        return (A @ Ak, acc + Ak @ C, B1, B2, B3), None

    zero = jnp.zeros_like(theta)
    (_, _, B1, B2, B3), _ = jax.lax.scan(body, (jnp.eye(m, dtype=theta.dtype), zero, zero, zero, zero), None,
                                         length=steps)
    return B1, B2, B3


def _flow_propagators(theta, C, rate, time, max_doublings: int = 80):
    r"""The gradient-flow propagators :math:`(M_1, M_2, 0)`, :math:`M_1 = r\int_0^t e^{-Xs}ds`,
    :math:`M_2 = r^2 J^\top`, :math:`J = \iint_{0\le s\le u\le t} e^{-Xs}Ce^{-Xu}\,ds\,du`,
    :math:`X = r\Theta`: the :math:`h \to 0` limits of :math:`hB_1` and :math:`h^2B_2` at
    :math:`hT = rt`.

    By scaling and doubling, without eigenvectors (whose derivatives are infinite where
    :math:`\Theta` has a repeated eigenvalue, as for symmetric or repeated inputs): a third-order
    Taylor start at :math:`t_0 = t/2^K` with :math:`\operatorname{tr}(X)t_0 \le 2^{-20}` (truncation
    :math:`\sim 10^{-18}`), then :math:`K` exact doublings of the integrals (:math:`E = e^{-Xt}`,
    :math:`F = \int_0^t e^{-Xs}ds`, the two halves and the cross term of the ordered square)

    .. math::
        E(2t) = E^2,\quad F(2t) = F + EF,\quad J(2t) = J + EJE + FCFE,

    with :math:`E - I` carried instead of :math:`E` (:math:`I + D` would round :math:`D` away when
    :math:`t_0` is small). :math:`K` is chosen from :math:`\operatorname{tr}(X)t` (at most
    ``max_doublings``, enough for :math:`\operatorname{tr}(X)t \le 2^{60}`)."""
    m = theta.shape[0]
    eye = jnp.eye(m, dtype=theta.dtype)
    X = rate * theta
    time = jnp.asarray(time, theta.dtype)
    scale = jax.lax.stop_gradient(jnp.trace(X) * time)
    K = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(scale, jnp.finfo(theta.dtype).tiny))) + 20, 0, max_doublings)
    t0 = time / jnp.exp2(K)
    Xt = X * t0
    Xt2 = Xt @ Xt
    D = -Xt + Xt2 / 2 - Xt2 @ Xt / 6
    F = t0 * (eye - Xt / 2 + Xt2 / 6)
    J = t0 * t0 * (C / 2 - Xt @ C / 6 - C @ Xt / 3 + Xt2 @ C / 24 + Xt @ C @ Xt / 8 + C @ Xt2 / 8)

    def body(carry, i):
        D, F, J = carry
        E = eye + D
        new = (2 * D + D @ D, F + E @ F, J + E @ J @ E + F @ C @ (F @ E))
        return tuple(jnp.where(i < K, n, o) for n, o in zip(new, carry)), None

    (_, F, J), _ = jax.lax.scan(body, (D, F, J), jnp.arange(max_doublings, dtype=theta.dtype))
    return rate * F, rate * rate * J.T, jnp.zeros_like(theta)


@functools.partial(jax.jit, static_argnames=("m", "steps", "samples", "chunk"))
def _ntk_change(x, y, spec, lr, time, key, *, m, steps, samples, chunk):
    """``x``: the ``m`` training inputs, then any test inputs (``N`` rows in all); gradient descent
    (``steps`` steps at rate ``lr``) or, with ``steps=None``, gradient flow to ``time``."""
    from .kernels import kernel

    N, d = x.shape
    W, b = spec.layer_params(x.dtype)
    act = spec.activation
    k = kernel(x, None, spec)
    theta, K = k.ntk, k.nngp
    G = b[0] ** 2 + W[0] ** 2 * (x @ x.T) / d  # the hidden preactivations' covariance
    train = (slice(0, m), slice(0, m))
    C = K[train] + jnp.outer(y, y)
    # the loss is (1 / 2m) sum_alpha (f_alpha - y_alpha)^2
    if steps is None:
        Ms = _flow_propagators(theta[train], C, 1.0 / m, time)
    else:
        h = lr / m
        B1, B2, B3 = _propagators(theta[train], C, h, steps)
        Ms = (h * B1, h * h * B2, 0.5 * h * h * B3)
    # the contractions run over the training inputs: zero rows and columns for the test inputs
    M1, M2, M3 = (jnp.zeros((N, N), x.dtype).at[train].set(M) for M in Ms)
    jitter = 16 * jnp.finfo(x.dtype).eps * jnp.max(jnp.diagonal(G))
    L = jnp.linalg.cholesky(G + jitter * jnp.eye(N, dtype=x.dtype))
    xi = jax.random.normal(key, (samples, N), x.dtype)
    # the terms are polynomials of degree <= 4 in the readout weight a, even: exact with the
    # 3-point Gauss-Hermite rule a in {0, +-sqrt 3}, weights {2/3, 1/6, 1/6}
    root3 = jnp.sqrt(jnp.asarray(3.0, x.dtype))

    def neuron(xi_s):
        z = L @ xi_s
        f = functools.partial(_change_sample, act, G, M1, M2, M3, z=z)
        return (2 * f(jnp.zeros((), x.dtype)) + f(root3)) / 3

    # chunks of samples in a scan, accumulating the terms' sums and the total's mean and centred
    # sum of squares (Chan et al.'s pairwise update): memory O(chunk N^2), not O(samples N^2)
    chunks = -(-samples // chunk)
    pad = chunks * chunk - samples
    xi = jnp.concatenate([xi, jnp.zeros((pad, N), x.dtype)]).reshape(chunks, chunk, N)
    weight = (jnp.arange(chunks * chunk) < samples).astype(x.dtype).reshape(chunks, chunk)

    def accumulate(carry, batch):
        count, mean, m2, sums = carry
        xi_c, w = batch
        vals = jax.vmap(neuron)(xi_c) * w[:, None, None, None]  # (chunk, 3, N, N)
        total = jnp.sum(vals, 1)
        c = jnp.sum(w)
        mean_c = jnp.sum(total, 0) / c
        m2_c = jnp.sum(w[:, None, None] * (total - mean_c[None]) ** 2, 0)
        both = count + c
        delta = mean_c - mean
        return (both, mean + delta * (c / both), m2 + m2_c + delta**2 * (count * c / both),
                sums + jnp.sum(vals, 0)), None

    zero = jnp.zeros((N, N), x.dtype)
    init = (jnp.zeros((), x.dtype), zero, zero, jnp.zeros((3, N, N), x.dtype))
    (_, _, m2, sums), _ = jax.lax.scan(accumulate, init, (xi, weight))
    scale = W[1] ** 4
    terms = scale * sums / samples
    se = scale * safe_sqrt(m2 / (samples - 1)) / math.sqrt(samples)  # finite derivative at 0 (steps = 0)
    return theta, jnp.sum(terms, 0), se, terms, jnp.linalg.eigvalsh(theta[train])[-1]


def ntk_change(
    x: Float[ArrayLike, "m d"],
    y: Float[ArrayLike, " m"],
    spec: FullyConnected,
    *,
    learning_rate: float | Float[ArrayLike, ""] | None = None,
    steps: int | None = None,
    time: float | Float[ArrayLike, ""] | None = None,
    widths: int | tuple[int] | None = None,
    samples: int = 2**14,
    key=None,
    x_test: Float[ArrayLike, "t d"] | None = None,
) -> NTKChange:
    r"""The expected change of the empirical NTK :math:`\hat\Theta(x_i, x_j)` on the training
    inputs after ``steps`` of full-batch gradient descent on the MSE (or gradient flow to ``time``),
    to leading order in the width :math:`n`, for a network with one hidden layer in the NTK parameterization
    (:math:`f(x) = \frac{\sigma_{w}}{\sqrt n}\sum_{k} a_k\phi(z_k(x)) + \sigma_b c`,
    :math:`z_k(x) = \frac{\sigma_{w,0}}{\sqrt d} w_k\cdot x + \sigma_{b,0} b_k`, every parameter
    :math:`\mathcal N(0, 1)`, as :func:`rmtjax.finite.init_ensemble` builds it).

    The step is :math:`\theta \leftarrow \theta - \eta\nabla_\theta\frac{1}{2m}\sum_\alpha
    \varepsilon_\alpha^2`, :math:`\varepsilon = f(X) - y`; write :math:`h = \eta/m`. The NTK changes
    through its derivative along the parameters, the dNTK
    :math:`\hat O_{ij\alpha} = \nabla\hat\Theta_{ij}\cdot\nabla f_\alpha` (Dyer & Gur-Ari 2019,
    "Asymptotics of wide networks from Feynman diagrams"; Huang & Yau 2020, "Dynamics of deep neural
    networks and neural tangent hierarchy"; PDLT ch. 11 and ∞; the derivation for one hidden layer is
    written out here), whose own derivative is
    :math:`\hat O_{ij\alpha\beta} = \nabla\hat O_{ij\alpha}\cdot\nabla f_\beta`, and through the
    second-order term of a discrete step,
    :math:`\hat R_{ij\alpha\beta} = \nabla f_\alpha^\top\nabla^2\hat\Theta_{ij}\nabla f_\beta`:

    .. math::
        \hat\Theta_{k+1} - \hat\Theta_k = -h\sum_\alpha \hat O_\alpha\varepsilon_\alpha(k)
            + \tfrac{h^2}{2}\sum_{\alpha\beta}\hat R_{\alpha\beta}\varepsilon_\alpha(k)\varepsilon_\beta(k),
        \qquad \hat O(k+1) - \hat O(k) = -h\sum_\beta \hat O_{\alpha\beta}\varepsilon_\beta(k),

    up to terms of order :math:`n^{-3/2}`. With one hidden layer every one of these is a sum over
    neurons: :math:`\hat O_\alpha = n^{-3/2}\sum_k U_k` is odd in the readout weights (mean zero,
    fluctuations :math:`O(1/n)`) and correlates with the initial function
    :math:`f_0 = n^{-1/2}\sum_k a_k\phi_k` through each neuron's own term, while
    :math:`\mathbb E\hat O_{\alpha\beta}` and :math:`\mathbb E\hat R_{\alpha\beta}` are
    :math:`O(1/n)`. Along the infinite-width trajectory
    :math:`\varepsilon(k) = A^k(f_0 - y)`, :math:`A = I - h\Theta`, with
    :math:`\mathbb E[\varepsilon(j)\varepsilon(k)^\top] = A^jCA^k`, :math:`C = K + yy^\top`
    (:math:`K`, :math:`\Theta` the NNGP and NTK on the training inputs), every other correlation
    being :math:`O(n^{-2})`:

    .. math::
        n\,\mathbb E[\hat\Theta_T - \hat\Theta_0]_{ij} = \sum_{\alpha\beta}\Big[
            -h\,(B_1)_{\alpha\beta}\,P_{ij\alpha\beta} + h^2\,(B_2)_{\alpha\beta}\,Q_{ij\alpha\beta}
            + \tfrac{h^2}{2}(B_3)_{\alpha\beta}\,S_{ij\alpha\beta}\Big],

    :math:`B_1 = \sum_{k<T}A^k`, :math:`B_2 = \sum_{k<T}(\sum_{j<k}A^jCA^k)^\top`,
    :math:`B_3 = \sum_{k<T}A^kCA^k`, and the single-neuron expectations
    :math:`P = n\,\mathbb E[\hat O_{ij\alpha} f_{0,\beta}]`,
    :math:`Q = n\mathbb E\hat O_{ij\alpha\beta}`, :math:`S = n\mathbb E\hat R_{ij\alpha\beta}`:
    with :math:`g_\alpha = a\phi(z_\alpha)`, :math:`T_{ij} = \langle\nabla g_i, \nabla g_j\rangle
    = \phi_i\phi_j + a^2\phi'_i\phi'_jG_{ij}` (gradients in the neuron's parameters, whose inner
    products reduce to :math:`G = \sigma_{b,0}^2 + \sigma_{w,0}^2 XX^\top/d`),
    :math:`P = \sigma_w^4\,\mathbb E[\langle\nabla T_{ij}, \nabla g_\alpha\rangle g_\beta]`,
    :math:`Q = \sigma_w^4\,\mathbb E\langle\nabla\langle\nabla T_{ij}, \nabla g_\alpha\rangle, \nabla g_\beta\rangle`,
    :math:`S = \sigma_w^4\,\mathbb E[D^2T_{ij}[\nabla g_\alpha, \nabla g_\beta]]`, over
    :math:`a \sim \mathcal N(0, 1)` (exactly: the integrands are even polynomials of degree 4 in
    :math:`a`) and :math:`z \sim \mathcal N(0, G)` (by Monte Carlo over ``samples`` neurons: an
    integral over all :math:`m` inputs at once, contracted with the :math:`B`'s per sample in
    :math:`O(m^3)`). The three terms are returned separately (``terms``); under gradient flow
    (:math:`h \to 0` at fixed :math:`hT = t/m`, ``time=t``:
    :math:`\dot\theta = -\nabla_\theta\frac{1}{2m}\sum_\alpha\varepsilon_\alpha^2`) the third vanishes and, with
    :math:`X = \Theta/m`, :math:`hB_1 \to \frac1m\int_0^t e^{-Xs}ds` and
    :math:`h^2B_2 \to \frac{1}{m^2}\big(\iint_{0\le s\le u\le t}e^{-Xs}Ce^{-Xu}\,ds\,du\big)^\top`,
    computed by scaling and doubling (no eigenvectors: finite derivatives at repeated eigenvalues).
    For a linear activation
    :math:`P = S = Q/2 = \sigma_w^4(2G_{ij}G_{\alpha\beta} + G_{i\alpha}G_{j\beta} + G_{i\beta}G_{j\alpha})`
    (tested). Deeper networks need the layer-to-layer recursions of the dNTK and ddNTKs (PDLT
    ch. 11 and ∞), which are not implemented: ``spec.depth`` must be 1.

    Args:
        x: the training inputs ``(m, d)``, real and finite (``m <= 256``).
        y: the targets ``(m,)`` or ``(m, 1)`` (one output), real and finite.
        spec: a :class:`rmtjax.kernels.FullyConnected` with ``depth=1``, ``parameterization="ntk"``
            and an activation with three continuous derivatives (tanh, erf, GELU, sin, polynomials,
            sigmoid, SiLU, softplus, ...; ReLU-like kinks would add delta terms and raise).
            Differentiable in ``W_std``, ``b_std`` and the activation's parameters.
        learning_rate: :math:`\eta > 0`, below the stability limit :math:`2m/\lambda_{\max}(\Theta)`
            of the linearised dynamics (a ``ValueError`` states the limit). With ``steps``.
        steps: gradient-descent steps :math:`T \ge 0` (static). With ``learning_rate``.
        time: instead of ``learning_rate`` and ``steps``: gradient flow
            :math:`\dot\theta = -\nabla_\theta\frac{1}{2m}\sum_\alpha\varepsilon_\alpha^2` to time
            :math:`t \ge 0` (finite; traced, so it can be vmapped and differentiated), the limit of
            ``steps`` steps at ``learning_rate = time / steps`` as ``steps`` grows (the difference
            falls like ``1 / steps``, tested). At most :math:`2^{60}/\lambda_{\max}(\Theta)` (a
            ``ValueError`` states it; the integrals' doublings would lose accuracy beyond).
        widths: the hidden width :math:`n` that divides ``change`` in ``expected_change()`` (an
            int, or a 1-tuple as ``spec.widths``; default ``spec.widths`` or 1). Where given, an
            expected change larger than :math:`\Theta` raises an :class:`ExpansionWarning` (eagerly).
        samples: Monte-Carlo neurons (static, ``>= 16``); the standard error falls like
            ``samples**-1/2`` (measured for tanh, m = 3, 10 steps: 3% of the largest entry at
            ``2**14``).
        key: a JAX PRNG key for the samples (default ``jax.random.key(0)``).
        x_test: optional further inputs ``(t, d)`` where the NTK's change is wanted too (the
            kernel between test and training points moves the predictions): every ``(m, m)``
            field of the result becomes ``(m + t, m + t)`` over the rows of
            ``concatenate([x, x_test])``. The contractions still run over the training inputs only.

    Returns:
        :class:`NTKChange`.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Identity
        >>> from rmtjax.kernels import FullyConnected
        >>> c = ntk_change(jnp.eye(2), jnp.array([1.0, -1.0]), FullyConnected(1, b_std=0.0, activation=Identity()),
        ...                learning_rate=0.5, steps=1, widths=100)
        >>> c.change.shape, bool(jnp.all(c.stderr < 0.1))
        ((2, 2), True)

        Gradient flow to time 2 (the limit of 4000 steps at rate 0.0005), which has no
        second-order step term:

        >>> flow = ntk_change(jnp.eye(2), jnp.array([1.0, -1.0]), FullyConnected(1, b_std=0.0, activation=Identity()),
        ...                   time=2.0, widths=100)
        >>> float(jnp.max(jnp.abs(flow.terms[2])))
        0.0
    """
    if not isinstance(spec, FullyConnected):
        raise ValueError(f"spec must be an rmtjax.kernels.FullyConnected, got {type(spec).__name__}")
    flow = time is not None
    if flow and (learning_rate is not None or steps is not None):
        raise ValueError("time: give either time (gradient flow) or learning_rate and steps (gradient descent), "
                         "not both")
    if not flow and (learning_rate is None or steps is None):
        raise ValueError("learning_rate and steps (gradient descent) are both required unless time (gradient flow) "
                         "is given")
    if spec.parameterization != "ntk":
        raise ValueError("spec: ntk_change supports parameterization='ntk' only, got 'standard'")
    if spec.depth != 1:
        raise ValueError(f"spec.depth must be 1 (one hidden layer): the dNTK/ddNTK recursions of deeper networks are "
                         f"not implemented, got depth {spec.depth}")
    _check_smooth(spec.activation)
    given = widths is not None or spec.widths is not None
    x, widths, _, _ = _inputs(x, spec, widths)
    m = x.shape[0]
    if x_test is not None:
        x_test = check_range(as_real(x_test, "x_test", ndim=2), "x_test")
        if x_test.shape[1] != x.shape[1]:
            raise ValueError(f"x_test must have {x.shape[1]} features (columns) like x, got shape {x_test.shape}")
    if m + (0 if x_test is None else x_test.shape[0]) > 256:
        raise ValueError(f"x: at most 256 inputs (training and test together), got {m} training inputs"
                         + ("" if x_test is None else f" and {x_test.shape[0]} test inputs"))
    y = as_real(y, "y", ndim=(1, 2))
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise ValueError(f"y must have shape ({m},) or ({m}, 1) (one output), got {y.shape}")
        y = y[:, 0]
    if y.shape != (m,):
        raise ValueError(f"y must have shape ({m},) or ({m}, 1), got {y.shape}")
    y = check_range(y, "y").astype(x.dtype)
    if flow:
        t = check_range(as_real(time, "time", ndim=0), "time", lo=0.0).astype(x.dtype)
        lr = jnp.ones((), x.dtype)
    else:
        lr = check_range(as_real(learning_rate, "learning_rate", ndim=0), "learning_rate", lo=0.0, lo_open=True)
        steps = static_int(steps, "steps", lo=0, hi=10**6)
        t = jnp.zeros((), x.dtype)
    samples = static_int(samples, "samples", lo=16, hi=2**24)
    if key is None:
        key = jax.random.key(0)
    key = prng_key(key)
    points = x if x_test is None else jnp.concatenate([x, x_test.astype(x.dtype)])
    Th, change, se, terms, lam = _ntk_change(points, y, spec, lr.astype(x.dtype), t, key, m=m,
                                             steps=None if flow else steps, samples=samples,
                                             chunk=min(samples, 1024))
    if flow:  # tr(Theta) t / m <= lambda_max t keeps the doublings of _flow_propagators within their 80
        name, value, limit, what = ("time", t, 2.0**60 / lam, "at most 2^60 / lambda_max(Theta) (the flow's "
                                    "integrals are doubled at most 80 times; e^(-Theta t / m) has long vanished "
                                    "on every nonzero eigenvalue by then)")
        over = value > limit
    else:
        name, value, limit, what = ("learning_rate", lr, 2 * m / lam, "below the stability limit 2 m / "
                                    "lambda_max(Theta) of gradient descent on the linearised network")
        over = value >= limit
    v_c, l_c = concrete(value), concrete(limit)
    if v_c is not None and l_c is not None and bool(concrete(over)):
        raise ValueError(f"{name} must be {what} = {float(l_c):.6g}, got {float(v_c):.6g}")
    change = error_if(change, over, f"{name} must be {what}")
    bad = ~(jnp.all(jnp.isfinite(change)) & jnp.all(jnp.isfinite(se)) & jnp.all(jnp.isfinite(Th)))
    msg = (f"x, y: the NTK change came out non-finite (a variance or the targets' second moment overflows "
           f"{x.dtype.name}); use smaller inputs, targets, W_std or learning_rate{_or_float64(x.dtype)}")
    Th, change, se, terms = error_if((Th, change, se, terms), bad, msg)
    out = NTKChange(Th, change, se, terms, jnp.asarray(widths[0], x.dtype))
    _warn_if_large(out.relative_change()[None], widths, 1, given)
    return out
