r"""The hidden manifold model and its Gaussian-equivalent online-SGD dynamics.

Inputs live near a ``D``-dimensional manifold of the ``N``-dimensional input space: latent
:math:`c\sim\mathcal N(0, I_D)` and a generator, e.g. a single layer
:math:`x = \sigma(Fc/\sqrt D) - \mathbb E[\cdot]`, :math:`F\in\mathbb R^{N\times D}`, or a deep
random network. The teacher acts on the latent variables,
:math:`y = \sum_m \tilde v_m \tilde g(\nu_m)`, :math:`\nu_m = \tilde w_m\cdot c/\sqrt D`, and a
soft committee student :math:`\phi(x) = \sum_k v_k g(\lambda_k)`,
:math:`\lambda_k = w_k\cdot x/\sqrt N`, is trained by online SGD (Goldt, Mezard, Krzakala &
Zdeborova 2020, Phys. Rev. X 10, 041044, arXiv:1909.11500).

**Gaussian equivalence** (ibid. and Goldt, Reeves et al. 2020, arXiv:2006.14709): the fields
:math:`(\lambda, \nu)` are jointly Gaussian with covariance
:math:`C = \begin{pmatrix} Q & R\\ R^\top & T\end{pmatrix}`, :math:`Q = w\Omega w^\top/N`,
:math:`R = w\Phi\tilde w^\top/\sqrt{ND}`, :math:`T = \tilde w\tilde w^\top/D`, where only
:math:`\Omega = \operatorname{Cov}(x)` and :math:`\Phi = \mathbb E[x c^\top]` enter.

**ODEs over the spectrum of** :math:`\Omega = \sum_\tau \rho_\tau\psi_\tau\psi_\tau^\top`.
With :math:`\beta = \Phi\tilde w^\top/\sqrt D` and the densities (per eigenvector, then summed
over bins :math:`b` of eigenvalues with weight :math:`1/N`)
:math:`q_b = \frac1N\sum_{\tau\in b} (w\psi_\tau)(w\psi_\tau)^\top`,
:math:`r_b = \frac{1}{\sqrt N}\sum_{\tau\in b} (w\psi_\tau)(\psi_\tau^\top\beta)`,
:math:`t_b = \sum_{\tau\in b}(\beta^\top\psi_\tau)(\psi_\tau^\top\beta)`, so that
:math:`Q = \sum_b \rho_b q_b` and :math:`R = \sum_b r_b`. Each eigen-projection
:math:`x_\tau = \psi_\tau\cdot x` is Gaussian jointly with the fields, so
:math:`\mathbb E[d_k x_\tau] = a_\tau^\top C^{-1}\mathbb E[d_k u]` (Gaussian regression; the
:math:`\mathbb E[d_k u]` are the committee integrals). With
:math:`G = C^{-1} B^\top`, :math:`B_{kb} = \mathbb E[d_k u_b]`, split into its student rows
:math:`G_s` (``K x K``) and teacher rows :math:`G_t` (``M x K``):

.. math::
    \dot r_b = -\eta\,(\rho_b\, G_s^\top r_b + G_t^\top t_b),\qquad
    \dot q_b = -\eta\,\big(\rho_b (q_b G_s + G_s^\top q_b) + r_b G_t + G_t^\top r_b^\top\big)
               + \eta^2 \rho_b \mu_b\, \mathbb E[d d^\top],

:math:`\mu_b` the fraction of eigenvalues in bin ``b`` (the equations of Goldt et al. 2020 for the
densities over the spectrum of :math:`\Omega`, re-derived in this notation). With
:math:`\Omega = I` and :math:`\Phi` the identity embedding they reduce to the Saad-Solla
equations. ``num_bins=None`` keeps one bin per eigenvalue (exact); a bin of several eigenvalues
replaces each by the bin's mean :math:`\rho_b` (an approximation).

Compare simulations with the ODE on the simulation's own time grid (``Trajectory.t``): the
simulation rounds the steps per save to whole blocks, so its times differ from
``linspace(0, t_max, num_saves + 1)`` by up to a few percent.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._validate import (
    as_real,
    check_range,
    error_if,
    prng_key,
    reraise_as_value_error,
    static_int,
    symmetric_psd,
)
from ..activations import AbstractActivation, AbstractClosedFormActivation, Erf, Identity, Relu, Sign
from ..gaussian import AbstractMethod, Auto, gaussian_expectations, hermite_coefficients_at
from . import _checks
from ._committee import (
    Trajectory,
    _activations,
    _covariance,
    _eps,
    _finish_integration,
    _integrate,
    _moments,
    _rates,
)
from ._integrals import _integrals
from ._simulation import _check_finite_run, _online_sgd, _schedule, gaussian_block

__all__ = [
    "Densities",
    "Generator",
    "GeneratorMoments",
    "HiddenManifoldRun",
    "LocalFieldDistance",
    "analytic_moments",
    "hidden_manifold_densities",
    "hidden_manifold_ode",
    "local_field_distance",
    "monte_carlo_moments",
    "simulate_hidden_manifold",
]


class Generator(eqx.Module):
    r"""A random generator :math:`x = \sigma(W_L \cdots \sigma(W_1 c/\sqrt{n_0}) \cdots /\sqrt{n_{L-1}})`
    of the latent :math:`c\in\mathbb R^D` (``n_0 = D``), before centering.

    Attributes:
        weights: ``(W_1, ..., W_L)``, ``W_l`` of shape ``(n_l, n_{l-1})``; ``n_L = N``.
        activation: :math:`\sigma` (every layer).

    Raises:
        ValueError: a weight that is not a real 2-d array, is empty, has non-finite entries or does
            not chain (``weights[l]`` must have ``weights[l-1].shape[0]`` columns); an
            ``activation`` that is not one of :mod:`rmtjax.activations`.
    """

    weights: tuple[Array, ...]
    activation: AbstractActivation

    def __init__(self, weights, activation: AbstractActivation):
        if not isinstance(weights, (tuple, list)):
            weights = (weights,)
        if len(weights) < 1:
            raise ValueError("weights: a generator needs at least one layer")
        ws = []
        for i, w in enumerate(weights):
            name = f"weights[{i}] (generator matrix)"
            w = as_real(w, name, ndim=2)
            if i > 0 and w.shape[1] != ws[i - 1].shape[0]:
                raise ValueError(f"{name} must have {ws[i - 1].shape[0]} columns to follow weights[{i - 1}] of "
                                 f"shape {ws[i - 1].shape}, got shape {w.shape}")
            ws.append(w)
        dt = _checks.common_dtype(*ws)
        self.weights = tuple(check_range(w.astype(dt), f"weights[{i}] (generator matrix)") for i, w in enumerate(ws))
        self.activation = _checks.activation(activation, "activation")

    @property
    def latent_dim(self) -> int:
        return self.weights[0].shape[1]

    @property
    def input_dim(self) -> int:
        return self.weights[-1].shape[0]

    def __call__(self, c: Array) -> Array:
        """``c`` of shape ``(n, D)`` -> uncentered inputs ``(n, N)``."""
        h = c
        for w in self.weights:
            h = self.activation(h @ w.T / math.sqrt(w.shape[1]))
        return h


class GeneratorMoments(NamedTuple):
    """``mean`` :math:`\\mathbb E[x]` ``(N,)``, ``omega`` :math:`\\operatorname{Cov}(x)` ``(N, N)``,
    ``phi`` :math:`\\mathbb E[(x - \\mathbb E x) c^\\top]` ``(N, D)``."""

    mean: Array
    omega: Array
    phi: Array


def _check_generator(generator):
    if not isinstance(generator, Generator):
        raise ValueError(f"generator must be a rmtjax.dynamics.Generator, got {type(generator).__name__}")
    return generator


def _weights(w, name: str, msg: str, cols: int):
    """A real ``(rows >= 1, cols)`` weight matrix (structure only)."""
    w = as_real(w, name, ndim=2, allow_empty=True)
    if w.shape[0] < 1 or w.shape[1] != cols:
        raise ValueError(f"{msg}, got shape {w.shape}")
    return w


def _check_moments(moments, shape: tuple[int, int] | None = None) -> GeneratorMoments:
    """``GeneratorMoments(mean (N,), omega (N, N), phi (N, D))``: real, finite, ``omega`` symmetric
    positive semi-definite (up to rounding)."""
    if not (isinstance(moments, tuple) and len(moments) == 3):
        raise ValueError(f"moments must be GeneratorMoments(mean, omega, phi), got {type(moments).__name__}")
    phi = as_real(moments[2], "moments.phi", ndim=2)
    N, D = phi.shape
    if shape is not None and (N, D) != tuple(shape):
        raise ValueError(f"moments.phi must have shape (N, D) = {tuple(shape)} for this generator, got {phi.shape}")
    mean = as_real(moments[0], "moments.mean", shape=(N,))
    omega = as_real(moments[1], "moments.omega", shape=(N, N))
    dt = _checks.common_dtype(mean, omega, phi)
    mean, omega, phi = (check_range(a.astype(dt), n) for a, n in ((mean, "moments.mean"), (omega, "moments.omega"),
                                                                  (phi, "moments.phi")))
    return GeneratorMoments(mean, symmetric_psd(omega, "moments.omega"), phi)


def _check_densities(d) -> Densities:
    """A :class:`Densities` with consistent shapes, finite entries, ``mu`` in [0, 1] and ``T``
    symmetric positive semi-definite. (The joint covariance of the fields is not required PSD:
    binning replaces eigenvalues by their bin means, which can break it slightly; an integration
    that fails is reported by :func:`hidden_manifold_ode`.)"""
    if not (isinstance(d, tuple) and len(d) == 6):
        raise ValueError(f"densities must be Densities(rho, mu, q, r, t, T) (from hidden_manifold_densities), got "
                         f"{type(d).__name__}")
    q = as_real(d[2], "densities.q", ndim=3)
    B, K = q.shape[0], q.shape[1]
    if q.shape[2] != K:
        raise ValueError(f"densities.q must be (B, K, K) with K >= 1, got shape {q.shape}")
    r = as_real(d[3], "densities.r", ndim=3, allow_empty=True)
    if r.shape[:2] != (B, K) or r.shape[2] < 1:
        raise ValueError(f"densities.r must be (B, K, M) with M >= 1 and (B, K) = {(B, K)}, got shape {r.shape}")
    M = r.shape[2]
    shapes = {"rho": (B,), "mu": (B,), "t": (B, M, M), "T": (M, M)}
    rho, mu, t, T = (as_real(d[i], f"densities.{n}", shape=shapes[n]) for i, n in ((0, "rho"), (1, "mu"), (4, "t"),
                                                                                  (5, "T")))
    dt = _checks.common_dtype(rho, mu, q, r, t, T)
    rho, q, r, t = (check_range(a.astype(dt), f"densities.{n}") for a, n in ((rho, "rho"), (q, "q"), (r, "r"),
                                                                             (t, "t")))
    mu = check_range(mu.astype(dt), "densities.mu", lo=0.0, hi=1.0)
    T = symmetric_psd(check_range(T.astype(dt), "densities.T"), "densities.T")
    return Densities(rho, mu, q, r, t, T)


def _mean_slope(sigma: AbstractActivation, q: Array, order: int):
    """:math:`\\mathbb E[\\sigma(u)]` and :math:`\\mathbb E[\\sigma'(u)]`, :math:`u\\sim N(0, q)`."""
    if isinstance(sigma, Sign):
        return jnp.zeros_like(q), jnp.sqrt(2 / (math.pi * q))
    if isinstance(sigma, Erf):
        return jnp.full_like(q, 1.0) * sigma.c, sigma.a * sigma.b * (2 / math.sqrt(math.pi)) / jnp.sqrt(1 + 2 * sigma.b**2 * q)
    if isinstance(sigma, Relu):
        return jnp.sqrt(q / (2 * math.pi)), jnp.full_like(q, 0.5)
    if isinstance(sigma, Identity):
        return jnp.zeros_like(q), jnp.ones_like(q)
    a = hermite_coefficients_at(sigma, q, order=1)
    return a[:, 0], a[:, 1] / jnp.sqrt(q)


@reraise_as_value_error
def analytic_moments(generator: Generator, *, order: int = 12) -> GeneratorMoments:
    r"""Exact :math:`\Omega` and :math:`\Phi` of a single-layer generator
    :math:`x = \sigma(u)`, :math:`u = Fc/\sqrt D` (Goldt et al. 2020):
    :math:`\Phi = \operatorname{diag}(\mathbb E\sigma'(u_i))\,F/\sqrt D` (Stein's lemma) and
    :math:`\Omega_{ij} = \mathbb E[\sigma(u_i)\sigma(u_j)] - \mathbb E\sigma(u_i)\mathbb E\sigma(u_j)`
    with :math:`\operatorname{Cov}(u) = FF^\top/D`: the activation's closed-form dual where it
    has one, else the Mehler series :math:`\sum_{n=1}^{\text{order}} a_n(q_i)a_n(q_j)\rho_{ij}^n`
    in the Hermite coefficients of :math:`\sigma` (off the diagonal, where
    :math:`\rho_{ij} = O(D^{-1/2})`), and the exact variance on the diagonal.

    Example:
        >>> import jax
        >>> from rmtjax.activations import Sign
        >>> F = jax.random.normal(jax.random.key(0), (40, 10))
        >>> m = analytic_moments(Generator(F, Sign()))
        >>> m.omega.shape, m.phi.shape
        ((40, 40), (40, 10))
    """
    _check_generator(generator)
    if len(generator.weights) != 1:
        raise ValueError(f"generator: analytic_moments needs a single-layer generator, got {len(generator.weights)} "
                         "layers; use monte_carlo_moments")
    order = static_int(order, "order", lo=1, hi=64)
    F = generator.weights[0]
    msg = ("generator: every row of its matrix F must be non-zero and not overflow (the pre-activation "
           "variances |F_i|^2 / D must be finite and > 0)")
    F = error_if(F, _bad_rows(F), msg)
    return _analytic_moments(F, generator.activation, order)


@jax.jit
def _bad_rows(F):
    # jitted: eagerly, 8 one-operation programs on the first call (measured 2026-12-07)
    q = jnp.sum(F * F, axis=1) / F.shape[1]
    return ~jnp.all(jnp.isfinite(q) & (q > 0))


@eqx.filter_jit
def _analytic_moments(F, sigma: AbstractActivation, order: int) -> GeneratorMoments:
    D = F.shape[1]
    S = F @ F.T / D
    q = jnp.diagonal(S)
    mean, slope = _mean_slope(sigma, q, order)
    phi = slope[:, None] * F / math.sqrt(D)
    if isinstance(sigma, AbstractClosedFormActivation):
        omega = gaussian_expectations(sigma, q[:, None], q[None, :], S).k - mean[:, None] * mean[None, :]
    else:
        a = hermite_coefficients_at(sigma, q, order=order)  # (N, order + 1)
        rho = S / jnp.sqrt(q[:, None] * q[None, :])
        omega = sum(a[:, n][:, None] * a[:, n][None, :] * rho**n for n in range(1, order + 1))
        var = gaussian_expectations(sigma, q, q, q).k - mean**2
        omega = omega - jnp.diag(jnp.diagonal(omega)) + jnp.diag(var)
    return GeneratorMoments(mean, 0.5 * (omega + omega.T), phi)


@reraise_as_value_error
def monte_carlo_moments(key: Array, generator: Generator, *, num_samples: int = 100_000,
                        batch_size: int = 2_000) -> GeneratorMoments:
    r"""Monte-Carlo :math:`\mathbb E[x]`, :math:`\Omega` and :math:`\Phi` of any generator (deep
    ones included) from exactly ``num_samples`` latent draws, accumulated in batches of
    ``batch_size`` (the last one partly used when ``batch_size`` does not divide ``num_samples``).

    Example:
        >>> import jax
        >>> from rmtjax.activations import Tanh
        >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        >>> gen = Generator((jax.random.normal(k1, (30, 10)), jax.random.normal(k2, (40, 30))), Tanh())
        >>> m = monte_carlo_moments(k3, gen, num_samples=2000, batch_size=1000)
        >>> m.omega.shape, m.phi.shape
        ((40, 40), (40, 10))
    """
    key = prng_key(key, "key")
    _check_generator(generator)
    num_samples = static_int(num_samples, "num_samples", lo=2)
    batch_size = min(static_int(batch_size, "batch_size", lo=2), num_samples)
    m = _mc_moments(key, generator, num_samples, batch_size)
    ok = jnp.all(jnp.isfinite(m.omega)) & jnp.all(jnp.isfinite(m.phi))
    return error_if(m, ~ok, "generator: its outputs overflow (non-finite moments); scale its weights down")


@eqx.filter_jit
def _mc_moments(key, generator: Generator, n: int, batch_size: int) -> GeneratorMoments:
    D, N = generator.latent_dim, generator.input_dim
    dtype = generator.weights[0].dtype
    nb = -(-n // batch_size)  # the last batch counts only its first n - (nb - 1) batch_size draws

    def body(acc, ki):
        k, i = ki
        c = jax.random.normal(k, (batch_size, D), dtype)
        x = generator(c)
        xw = x * (i * batch_size + jnp.arange(batch_size) < n).astype(dtype)[:, None]
        s1, s2, s3 = acc
        return (s1 + xw.sum(0), s2 + xw.T @ x, s3 + xw.T @ c), None

    init = (jnp.zeros(N, dtype), jnp.zeros((N, N), dtype), jnp.zeros((N, D), dtype))
    (s1, s2, s3), _ = jax.lax.scan(body, init, (jax.random.split(key, nb), jnp.arange(nb)))
    mean = s1 / n
    omega = s2 / n - mean[:, None] * mean[None, :]
    return GeneratorMoments(mean, 0.5 * (omega + omega.T), s3 / n)


# ------------------------------------------------------------------------------------------
# densities over the spectrum of Omega, and the ODEs
# ------------------------------------------------------------------------------------------


class Densities(NamedTuple):
    """The state of the hidden-manifold ODEs over ``B`` spectral bins (module docstring).

    Attributes:
        rho: ``(B,)`` eigenvalue of :math:`\\Omega` per bin (the bin's mean).
        mu: ``(B,)`` fraction of eigenvalues in the bin.
        q: ``(B, K, K)``; r: ``(B, K, M)``; t: ``(B, M, M)`` (fixed teacher density).
        T: ``(M, M)`` teacher overlaps :math:`\\tilde w\\tilde w^\\top/D`.
    """

    rho: Array
    mu: Array
    q: Array
    r: Array
    t: Array
    T: Array

    @property
    def Q(self) -> Array:
        return jnp.einsum("b,bkl->kl", self.rho, self.q)

    @property
    def R(self) -> Array:
        return self.r.sum(0)


@reraise_as_value_error
def hidden_manifold_densities(moments: GeneratorMoments, w: ArrayLike, w_teacher: ArrayLike, *,
                              num_bins: int | None = None) -> Densities:
    r"""Initial densities :math:`q_b, r_b, t_b` of student weights ``w`` ``(K, N)`` and teacher
    weights ``w_teacher`` ``(M, D)`` over the spectrum of :math:`\Omega` (module docstring);
    ``num_bins`` groups the sorted eigenvalues into that many contiguous bins of (nearly) equal
    count (``None``: one per eigenvalue, exact).

    Example:
        >>> import jax
        >>> from rmtjax.activations import Sign
        >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        >>> m = analytic_moments(Generator(jax.random.normal(k1, (40, 10)), Sign()))
        >>> d = hidden_manifold_densities(m, jax.random.normal(k2, (2, 40)), jax.random.normal(k3, (2, 10)))
    """
    moments = _check_moments(moments)
    N, D = moments.phi.shape
    w = _weights(w, "w", "w must be (K, N) with K >= 1 and N = {N}".format(N=N), N)
    w = check_range(w, "w (initial student weights)")
    wt = _weights(w_teacher, "w_teacher", "w_teacher must be (M, D) with M >= 1 and D = {D}".format(D=D), D)
    dt = _checks.common_dtype(w, wt, moments.phi)
    w, wt, moments = w.astype(dt), check_range(wt.astype(dt), "w_teacher"), jax.tree.map(lambda a: a.astype(dt), moments)
    if num_bins is not None:
        num_bins = static_int(num_bins, "num_bins", lo=1)
    return _densities(moments, w, wt, num_bins)


@functools.partial(jax.jit, static_argnames="num_bins")
def _densities(moments, w, wt, num_bins):
    # jitted: eagerly, 28 one-operation programs on the first call (measured 2026-12-07)
    N, D = moments.phi.shape
    rho, psi = jnp.linalg.eigh(moments.omega)
    beta = moments.phi @ wt.T / math.sqrt(D)  # (N, M)
    wp, bp = w @ psi, psi.T @ beta  # (K, N), (N, M)
    q = jnp.einsum("kn,ln->nkl", wp, wp) / N
    r = jnp.einsum("kn,nm->nkm", wp, bp) / math.sqrt(N)
    t = jnp.einsum("nm,np->nmp", bp, bp)
    if num_bins is None or num_bins >= N:
        return Densities(rho, jnp.full((N,), 1.0 / N, rho.dtype), q, r, t, wt @ wt.T / D)
    edges = np.linspace(0, N, num_bins + 1).round().astype(int)
    seg = jnp.asarray(np.repeat(np.arange(num_bins), np.diff(edges)))
    count = jnp.asarray(np.diff(edges), rho.dtype)
    agg = lambda a: jax.ops.segment_sum(a, seg, num_segments=num_bins)  # noqa: E731
    return Densities(agg(rho) / count, count / N, agg(q), agg(r), agg(t), wt @ wt.T / D)


def _hm_rhs(state, args):
    q, r, v = state
    rho, mu, tdens, T, vt, eta, eta_v, noise_var, student, teacher, method = args
    K = v.shape[0]
    Q = jnp.einsum("b,bkl->kl", rho, q)
    Q = 0.5 * (Q + Q.T)
    R = r.sum(0)
    C = _covariance(Q, R, T)
    ints = _integrals(C, student, teacher, K, method)
    B, Dm, h = _moments(ints, v, vt, noise_var)
    G = jnp.linalg.solve(C, B.T)  # (P, K)
    Gs, Gt = G[:K], G[K:]
    qG = jnp.einsum("bkj,jl->bkl", q, Gs)
    rG = jnp.einsum("bkm,ml->bkl", r, Gt)
    dq = -eta * (rho[:, None, None] * (qG + jnp.swapaxes(qG, 1, 2)) + rG + jnp.swapaxes(rG, 1, 2)) \
        + (eta * eta) * (rho * mu)[:, None, None] * Dm[None]
    dr = -eta * (rho[:, None, None] * jnp.einsum("lk,blm->bkm", Gs, r) + jnp.einsum("mk,bmp->bkp", Gt, tdens))
    dv = -eta_v * h
    return dq, dr, dv


@reraise_as_value_error
def hidden_manifold_ode(
    densities: Densities,
    v0: ArrayLike,
    v_teacher: ArrayLike,
    ts: ArrayLike,
    eta: ArrayLike,
    eta_v: ArrayLike = 0.0,
    noise_std: ArrayLike = 0.0,
    *,
    student: AbstractActivation | None = None,
    teacher: AbstractActivation | None = None,
    method: AbstractMethod = Auto(),
    rtol: float = 1e-7,
    atol: float = 1e-9,
    max_steps: int = 100_000,
) -> Trajectory:
    r"""Integrates the hidden-manifold ODEs (module docstring; Goldt et al. 2020) with diffrax
    and returns :math:`Q(t) = \sum_b\rho_b q_b`, :math:`R(t) = \sum_b r_b`, ``v`` and
    :math:`\epsilon_g(t)` (Gaussian equivalent) at ``ts``. Arguments as in
    :func:`committee_ode`; ``densities`` from :func:`hidden_manifold_densities`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.activations import Sign
        >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        >>> m = analytic_moments(Generator(jax.random.normal(k1, (40, 10)), Sign()))
        >>> d = hidden_manifold_densities(m, jax.random.normal(k2, (2, 40)), jax.random.normal(k3, (2, 10)))
        >>> traj = hidden_manifold_ode(d, jnp.ones(2), jnp.ones(2), jnp.linspace(0, 5, 6), 0.2)
    """
    d = _check_densities(densities)
    K, M = d.r.shape[1], d.r.shape[2]
    v0 = as_real(v0, "v0", ndim=1)
    if v0.shape != (K,):
        raise ValueError(f"v0 must have shape (K,) = {(K,)}, got {v0.shape}")
    vt = as_real(v_teacher, "v_teacher", ndim=1)
    if vt.shape != (M,):
        raise ValueError(f"v_teacher must have shape (M,) = {(M,)}, got {vt.shape}")
    dt = _checks.common_dtype(d.q, v0, vt)
    d = Densities(*(a.astype(dt) for a in d))
    v0, vt = check_range(v0.astype(dt), "v0"), check_range(vt.astype(dt), "v_teacher")
    eta, eta_v, noise_std = _rates(eta, eta_v, noise_std, dt)
    ts = _checks.times(ts, "ts", dt)
    student, teacher = _activations(student, teacher)
    method = _checks.method(method)
    rtol, atol = _checks.tolerances(dt, rtol, atol, 1e-7, 1e-9)
    max_steps = _checks.max_steps(max_steps)
    args = (d.rho, d.mu, d.t, d.T, vt, eta, eta_v, noise_std**2, student, teacher, method)
    traj, result = _hm_solve((d.q, d.r, v0), args, ts, rtol, atol, max_steps)
    return _finish_integration(traj, result, "hidden_manifold_ode", max_steps)


@eqx.filter_jit
def _hm_solve(y0, args, ts, rtol: float, atol: float, max_steps: int) -> Trajectory:
    # jitted at module level: repeated calls with the same shapes reuse one compilation
    rho, T, vt, student, teacher, method = args[0], args[3], args[4], args[8], args[9], args[10]
    K = y0[2].shape[0]
    (q, r, v), result = _integrate(_hm_rhs, y0, args, ts, rtol, atol, max_steps)
    Q = jnp.einsum("b,tbkl->tkl", rho, q)
    R = r.sum(1)

    def eps(Q, R, v):
        return _eps(_integrals(_covariance(Q, R, T), student, teacher, K, method), v, vt)

    return Trajectory(ts, Q, R, v, jax.vmap(eps)(Q, R, v)), result


# ------------------------------------------------------------------------------------------
# simulation on generated data
# ------------------------------------------------------------------------------------------


class HiddenManifoldRun(NamedTuple):
    """A simulation: ``trajectory`` (``Q = w\\Omega w^T/N``, ``R``, ``v`` and the Gaussian-
    equivalent :math:`\\epsilon_g(Q, R)`) and ``eps_g_test``, the error measured on a fixed test
    set of generated data (what Gaussian equivalence predicts)."""

    trajectory: Trajectory
    eps_g_test: Array


@reraise_as_value_error
def simulate_hidden_manifold(
    key: Array,
    generator: Generator,
    moments: GeneratorMoments,
    w0: ArrayLike,
    v0: ArrayLike,
    w_teacher: ArrayLike,
    v_teacher: ArrayLike,
    eta: ArrayLike,
    eta_v: ArrayLike = 0.0,
    *,
    t_max: float,
    num_saves: int,
    test_size: int = 2_000,
    student: AbstractActivation | None = None,
    teacher: AbstractActivation | None = None,
) -> HiddenManifoldRun:
    r"""Online SGD on inputs :math:`x = G(c) - \mathbb E[x]` from ``generator`` with the teacher
    on the latent ``c`` (module docstring). ``moments`` (centering, :math:`\Omega`, :math:`\Phi`)
    define the recorded order parameters. ``jax.vmap`` over ``key`` for seeds.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.activations import Sign
        >>> k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
        >>> gen = Generator(jax.random.normal(k1, (40, 10)), Sign())
        >>> run = simulate_hidden_manifold(k4, gen, analytic_moments(gen), 0.1 * jax.random.normal(k2, (2, 40)),
        ...                                jnp.ones(2), jax.random.normal(k3, (2, 10)), jnp.ones(2), 0.2,
        ...                                t_max=1.0, num_saves=2, test_size=100)
    """
    key = prng_key(key, "key")
    _check_generator(generator)
    N, D = generator.input_dim, generator.latent_dim
    moments = _check_moments(moments, (N, D))
    w0 = _weights(w0, "w0", f"w0 must be (K, N) with K >= 1 and N = {N}", N)
    wt = _weights(w_teacher, "w_teacher", f"w_teacher must be (M, D) with M >= 1 and D = {D}", D)
    K, M = w0.shape[0], wt.shape[0]
    v0, vt = as_real(v0, "v0", ndim=1), as_real(v_teacher, "v_teacher", ndim=1)
    if v0.shape != (K,) or vt.shape != (M,):
        raise ValueError(f"v0 and v_teacher must have shapes {(K,)} and {(M,)}, got {v0.shape}, {vt.shape}")
    dt = _checks.common_dtype(w0, wt, v0, vt, generator.weights[0])
    w0, v0, wt, vt = (check_range(a.astype(dt), n) for a, n in ((w0, "w0"), (v0, "v0"), (wt, "w_teacher"),
                                                                (vt, "v_teacher")))
    moments = jax.tree.map(lambda a: a.astype(dt), moments)
    eta, eta_v, _ = _rates(eta, eta_v, 0.0, dt)
    student, teacher = _activations(student, teacher)
    schedule = _schedule(N, t_max, num_saves)
    num_saves = static_int(num_saves, "num_saves", lo=1)
    test_size = static_int(test_size, "test_size", lo=1, hi=10**8)
    run, finite = _simulate(key, generator, moments, w0, v0, wt, vt, eta, eta_v, schedule, num_saves, test_size,
                            student, teacher)
    return _check_finite_run(run, finite, "simulate_hidden_manifold")


@eqx.filter_jit
def _simulate(key, generator, moments, w0, v0, wt, vt, eta, eta_v, schedule, num_saves: int, test_size: int,
              student, teacher) -> HiddenManifoldRun:
    K = w0.shape[0]
    N, D = generator.input_dim, generator.latent_dim
    dtype = w0.dtype
    T = wt @ wt.T / D
    beta = moments.phi @ wt.T / math.sqrt(D)
    ktest, key = jax.random.split(key)

    def draw(k, n):
        c = gaussian_block(k, (n, D), dtype)
        return generator(c) - moments.mean[None, :], teacher(c @ wt.T / math.sqrt(D)) @ vt

    Xt, yt = draw(ktest, test_size)

    def observe(w, v):
        Q = w @ moments.omega @ w.T / N
        R = w @ beta / math.sqrt(N)
        ints = _integrals(_covariance(Q, R, T), student, teacher, K, Auto())
        test = 0.5 * jnp.mean((student(Xt @ w.T / math.sqrt(N)) @ v - yt) ** 2)
        return Q, R, v, _eps(ints, v, vt), test

    (Q, R, v, eps, test), finite = _online_sgd(key, w0, v0, eta, eta_v, draw, observe, student, schedule,
                                               num_saves, False)
    t = jnp.arange(num_saves + 1, dtype=dtype) * (schedule[0] * schedule[1] / N)
    return HiddenManifoldRun(Trajectory(t, Q, R, v, eps), test), finite


# ------------------------------------------------------------------------------------------
# how Gaussian are the local fields?
# ------------------------------------------------------------------------------------------


class LocalFieldDistance(NamedTuple):
    r"""``distance``: mean over random directions of the Kolmogorov-Smirnov distance between the
    standardized projection of :math:`(\lambda, \nu)` and :math:`N(0, 1)`; ``null``: the same
    statistic for exactly Gaussian samples of the same size (its finite-sample floor);
    ``null_se``: the standard error of ``null`` over directions; ``covariance``: the empirical
    covariance of :math:`(\lambda, \nu)`, to compare with the Gaussian-equivalent
    :math:`C = \begin{pmatrix} Q & R\\ R^\top & T\end{pmatrix}` built from :math:`\Omega, \Phi`
    (e.g. ``Densities.Q``, ``Densities.R``, ``Densities.T``)."""

    distance: Array
    null: Array
    null_se: Array
    covariance: Array


@reraise_as_value_error
def local_field_distance(key: Array, generator: Generator, moments: GeneratorMoments, w: ArrayLike,
                         w_teacher: ArrayLike, *, num_samples: int = 50_000,
                         num_directions: int = 16) -> LocalFieldDistance:
    r"""A distance between the law of the local fields :math:`(\lambda, \nu)` on generated data
    and the Gaussian with the same mean and covariance (the Gaussian equivalence of Goldt et al.
    2020): for random unit directions :math:`e`, the Kolmogorov-Smirnov distance
    :math:`\sup_z |\hat F_e(z) - \Phi(z)|` of the whitened projection :math:`e^\top \hat C^{-1/2}
    (u - \hat m)`, averaged over directions; ``null`` is its value for Gaussian samples.

    Example:
        >>> import jax
        >>> from rmtjax.activations import Sign
        >>> k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
        >>> gen = Generator(jax.random.normal(k1, (40, 10)), Sign())
        >>> d = local_field_distance(k4, gen, analytic_moments(gen), jax.random.normal(k2, (2, 40)),
        ...                          jax.random.normal(k3, (2, 10)), num_samples=2000)
    """
    key = prng_key(key, "key")
    _check_generator(generator)
    N, D = generator.input_dim, generator.latent_dim
    moments = _check_moments(moments, (N, D))
    w = _weights(w, "w", f"w must be (K, N) with K >= 1 and N = {N}", N)
    wt = _weights(w_teacher, "w_teacher", f"w_teacher must be (M, D) with M >= 1 and D = {D}", D)
    dt = _checks.common_dtype(w, wt, generator.weights[0])
    w, wt = check_range(w.astype(dt), "w"), check_range(wt.astype(dt), "w_teacher")
    P = w.shape[0] + wt.shape[0]
    num_samples = static_int(num_samples, "num_samples", hi=10**8)
    if num_samples <= 2 * P:
        raise ValueError(f"num_samples must be an integer > 2 (K + M) = {2 * P}, got {num_samples!r}")
    num_directions = static_int(num_directions, "num_directions", lo=2, hi=10**6)
    out, bad = _local_field_distance(key, generator, moments.mean, w, wt, num_samples, num_directions)
    return error_if(out, bad, "w, w_teacher: the local fields have a singular (or non-finite) covariance, so their "
                    "whitened law is undefined; use linearly independent rows of w and w_teacher")


@eqx.filter_jit
def _local_field_distance(key, generator, mean, w, wt, num_samples: int, num_directions: int):
    """The statistic and whether it is not finite (the cast of ``mean`` and the finiteness test inside:
    eagerly, 6 one-operation programs on the first call, measured 2026-12-07)."""
    from jax.scipy.special import ndtr

    mean = mean.astype(w.dtype)

    N, D = generator.input_dim, generator.latent_dim
    kc, kd, kg = jax.random.split(key, 3)
    c = jax.random.normal(kc, (num_samples, D), w.dtype)
    x = generator(c) - mean[None, :]
    u = jnp.concatenate([x @ w.T / math.sqrt(N), c @ wt.T / math.sqrt(D)], 1)
    P = u.shape[1]
    e = jax.random.normal(kd, (num_directions, P), w.dtype)
    e = e / jnp.linalg.norm(e, axis=1, keepdims=True)
    cdf = (jnp.arange(1, num_samples + 1, dtype=w.dtype) - 0.5) / num_samples

    def ks(u):
        u = u - u.mean(0)[None, :]
        cov = u.T @ u / num_samples
        L = jnp.linalg.cholesky(cov)
        z = jax.scipy.linalg.solve_triangular(L, u.T, lower=True)  # (P, n), whitened
        s = jnp.sort(e @ z, axis=1)
        return jnp.max(jnp.abs(ndtr(s) - cdf[None, :]), axis=1) + 0.5 / num_samples, cov

    d, cov = ks(u)
    null, _ = ks(jax.random.normal(kg, u.shape, w.dtype))
    out = LocalFieldDistance(d.mean(), null.mean(), null.std(ddof=1) / math.sqrt(num_directions), cov)
    return out, ~(jnp.isfinite(out.distance) & jnp.all(jnp.isfinite(out.covariance)))
