r"""Deterministic equivalents of Gram matrices of class mixtures (Seddik, Louart, Tamaazousti &
Couillet, "Random Matrix Theory Proves that Deep Learning Representations of GAN-data Behave as
Gaussian Mixtures", ICML 2020, Thm. 1; Louart & Couillet 2018, "Concentration of measure and large
random matrices with an application to sample covariance matrices").

**Model.** :math:`X = [x_1, \dots, x_n] \in \mathbb R^{p\times n}` with independent columns,
:math:`n_\ell` of them in class :math:`\ell = 1..k` (columns ordered by class), with mean
:math:`\mu_\ell`, covariance :math:`\Sigma_\ell` and second moment
:math:`C_\ell = \mathbb E[xx^\top] = \Sigma_\ell + \mu_\ell\mu_\ell^\top`. :math:`G = X^\top X/p`,
:math:`Q(z) = (G + zI_n)^{-1}`, :math:`R(z) = (XX^\top/p + zI_p)^{-1}`, :math:`J = [j_1..j_k]` the
class indicators, :math:`M = [\mu_1..\mu_k]`.

**The** :math:`\delta` **equations, with unequal classes.** :math:`XX^\top/p = \sum_i x_ix_i^\top/p`,
and Sherman-Morrison gives :math:`R x_i = R_{-i}x_i/(1 + x_i^\top R_{-i}x_i/p)` with
:math:`x_i^\top R_{-i}x_i/p \simeq \frac1p\operatorname{tr}C_{\ell(i)}\tilde R =: \delta_{\ell(i)}`.
Taking expectations in :math:`I_p = R\,(XX^\top/p + z)` column by column, each of the :math:`n_\ell`
columns of class :math:`\ell` contributes :math:`C_\ell/(p(1+\delta_\ell))`, so

.. math::
    \tilde R(z) = \Big(\sum_{\ell=1}^k \frac{n_\ell}{p}\,\frac{C_\ell}{1+\delta_\ell(z)} + zI_p\Big)^{-1},
    \qquad \delta_\ell(z) = \frac1p\operatorname{tr}\big(C_\ell\tilde R(z)\big).

The class weight is :math:`n_\ell/p`: Seddik et al. write the theorem for :math:`k` classes of equal
size :math:`n/k` with :math:`n = p`, where it reads :math:`\frac1k\sum_\ell C_\ell/(1+\delta_\ell)`.

**The co-resolvent.** :math:`Q = z^{-1}(I_n - X^\top R X/p)`. On the diagonal, Sherman-Morrison gives
:math:`Q_{ii} = 1/(z(1 + x_i^\top R_{-i}x_i/p)) \simeq 1/(z(1+\delta_{\ell(i)}))`; off the diagonal,
removing columns :math:`i` and :math:`j` (classes :math:`a, b`),
:math:`Q_{ij} = -\frac{x_i^\top R_{-ij}x_j}{pz(1+\delta_a)(1+\delta_b)} + O(p^{-3/2})` and
:math:`\mathbb E[x_i^\top R_{-ij}x_j] \simeq \mu_a^\top\tilde R\mu_b`. Hence (Seddik et al., Thm. 1)

.. math::
    \tilde Q(z) = \frac1z\Lambda(z) + \frac{1}{pz}J\,\Omega(z)\,J^\top,\quad
    \Lambda = \operatorname{diag}\Big\{\frac{1_{n_\ell}}{1+\delta_\ell}\Big\},\quad
    \Omega_{ab}(z) = -\frac{\mu_a^\top\tilde R(z)\mu_b}{(1+\delta_a(z))(1+\delta_b(z))},

with :math:`\|\mathbb E Q(z) - \tilde Q(z)\| \to 0`. The paper prints :math:`\Omega` as the diagonal
:math:`\{\mu_\ell^\top\tilde R\mu_\ell\}`; the derivation above (and the Monte-Carlo test of the
off-diagonal class blocks) needs the whole :math:`k\times k` matrix, with the sign and the
:math:`(1+\delta)` factors shown. The :math:`J\Omega J^\top` term has :math:`O(1)` operator norm but
changes the normalized trace by :math:`O(1/p)` only (its diagonal is not what the derivation
estimates), so :func:`gram_trace_resolvent` returns
:math:`\frac1n\sum_\ell n_\ell/(z(1+\delta_\ell))`.

**Means as a low-rank term.** With :math:`a_\ell = n_\ell/(p(1+\delta_\ell))`,
:math:`A = \operatorname{diag}(a)`, :math:`\tilde R_0 = (\sum_\ell a_\ell\Sigma_\ell + z)^{-1}` and
:math:`S = M^\top\tilde R_0M`, Woodbury gives :math:`\tilde R = \tilde R_0 - \tilde R_0MA(I + SA)^{-1}M^\top\tilde R_0`
(cost :math:`O(k^2p)` for diagonal covariances) and

.. math::
    J^\top\tilde Q(z)J = \frac pz\,A^{1/2}H(z)^{-1}A^{1/2},\qquad H(z) = I_k + A^{1/2}SA^{1/2}.

**Isolated eigenvalues.** For real :math:`z = -\lambda` to the right of the bulk, :math:`H` is
symmetric; :math:`G` has an isolated eigenvalue at each zero of an eigenvalue curve
:math:`h_j(\lambda)` of :math:`H(-\lambda)` (the poles of :math:`J^\top\tilde QJ`), with :math:`\delta`
taken from the covariances alone (the means move :math:`\delta` by :math:`O(1/p)` and would add
spurious :math:`O(1/p)` poles). Since :math:`\operatorname{Res}_{z=-\lambda_s}Q(z) = v_sv_s^\top`,
the residue gives the alignment of the eigenvector :math:`v_s` with the classes:

.. math::
    (j_a^\top v_s)(j_b^\top v_s) = \frac{p}{\lambda_s h_j'(\lambda_s)}\sqrt{a_aa_b}\,u_au_b,
    \qquad H(-\lambda_s)u = 0,\ \|u\| = 1.

For isotropic noise (:math:`\Sigma_\ell = I`) this reduces to the closed form
:math:`\lambda = (1+\theta)(1 + c/\theta)` for each eigenvalue :math:`\theta > \sqrt c` of
:math:`N^{1/2}M^\top MN^{1/2}/p`, :math:`c = n/p` (tested).

**Spectral density.** :math:`m_G(\zeta) = \frac1n\operatorname{tr}(G-\zeta)^{-1} =
\frac1n\operatorname{tr}Q(-\zeta)` and the density is :math:`\frac1\pi\operatorname{Im}m_G(x+i\eta)`.
For :math:`\operatorname{Im}\zeta > 0` the physical solution is the unique one with
:math:`\operatorname{Im}\delta_\ell > 0` for every :math:`\ell`; Newton's method from
:math:`\delta = 0` next to the support can converge to another root (negative density), so
:func:`gram_spectral_density` continues each point from :math:`\operatorname{Im}\zeta` large (where
:math:`\delta \approx 0`) down to :math:`\eta`, warm-starts along the grid, and checks the sign.

Example:
    >>> import jax.numpy as jnp
    >>> model = GramMixture(jnp.ones((2, 100)), jnp.zeros((2, 100)), n_per_class=(100, 100))
    >>> float(gram_trace_resolvent(model, 1.0)) > 0
    True
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

import optimistix as optx

from .._validate import (ArgumentError, check_range, concrete, error_if, flag, real, reraise_as_value_error,
                         static_int, symmetric_psd)
from ..solve import Newton, Solution, fixed_point, root
from ._checks import describe_points, finish, points, tolerances

__all__ = [
    "GramDensity",
    "GramMixture",
    "GramResolvent",
    "GramSpikes",
    "gram_delta",
    "gram_resolvent",
    "gram_spectral_density",
    "gram_spikes",
    "gram_trace_resolvent",
]


class GramMixture(eqx.Module):
    r"""A :math:`k`-class mixture for the Gram deterministic equivalents.

    Attributes:
        cov: class covariances :math:`\Sigma_\ell`, shape ``(k, p, p)`` (symmetric PSD), or
            ``(k, p)``: their diagonals when every :math:`\Sigma_\ell` is diagonal (the cheap path:
            every evaluation costs :math:`O(k^2p)` instead of :math:`O(p^3)`). Differentiable.
        means: class means :math:`\mu_\ell`, shape ``(k, p)``. Differentiable.
        n_per_class: class sizes :math:`n_\ell \ge 1` (static).

    Every argument is validated (finite, the shapes above, ``cov`` symmetric PSD up to rounding or
    diagonal entries ``>= 0``): ``ValueError`` eagerly, or a compiled check when the arrays are
    traced (a non-PSD covariance would give an unphysical, e.g. negative, :math:`\delta`).

    The second moments are :math:`C_\ell = \Sigma_\ell + \mu_\ell\mu_\ell^\top`.
    """

    cov: Array
    means: Array
    n_per_class: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, cov: ArrayLike, means: ArrayLike | None = None, *, n_per_class):
        cov = real(cov, "cov", ndim=(2, 3))
        if cov.ndim == 3 and cov.shape[1] != cov.shape[2]:
            raise ArgumentError(f"cov must have shape (k, p, p) or (k, p) (diagonal covariances), got {cov.shape}")
        k, p = cov.shape[:2]
        if cov.ndim == 3:
            cov = symmetric_psd(cov, "cov")
        else:
            cov = check_range(cov, "cov", lo=0.0)  # diagonal covariances: variances >= 0
        if means is None:
            means = jnp.zeros((k, p), cov.dtype)
        else:
            means = real(means, "means", shape=(k, p))
        if isinstance(n_per_class, (str, bytes)) or not hasattr(n_per_class, "__len__"):
            raise ArgumentError(f"n_per_class must be a sequence of k = {k} positive integers, got {n_per_class!r:.60}")
        n = tuple(static_int(v, "n_per_class", lo=1, hi=10**9) for v in np.asarray(n_per_class, dtype=object).ravel()) \
            if np.ndim(np.asarray(n_per_class, dtype=object)) == 1 else None
        if n is None or len(n) != k:
            raise ArgumentError(f"n_per_class must have k = {k} entries (one class size each), got {n_per_class!r:.60}")
        strong = [np.dtype(x.dtype) for x in (cov, means) if not x.weak_type]
        dt = np.result_type(*strong) if strong else cov.dtype
        self.cov = jnp.asarray(cov, dtype=dt)
        self.means = jnp.asarray(means, dtype=dt)
        self.n_per_class = n

    @property
    def k(self) -> int:
        return self.cov.shape[0]

    @property
    def p(self) -> int:
        return self.cov.shape[1]

    @property
    def n(self) -> int:
        return sum(self.n_per_class)

    @property
    def diagonal(self) -> bool:
        return self.cov.ndim == 2

    def second_moments(self) -> Array:
        r""":math:`C_\ell = \Sigma_\ell + \mu_\ell\mu_\ell^\top`, shape ``(k, p, p)``."""
        cov = jax.vmap(jnp.diag)(self.cov) if self.diagonal else self.cov
        return cov + self.means[:, :, None] * self.means[:, None, :]

    def indicators(self) -> Array:
        """The class-indicator matrix :math:`J`, shape ``(n, k)`` (columns ordered by class)."""
        labels = np.repeat(np.arange(self.k), self.n_per_class)
        return jnp.asarray(labels[:, None] == np.arange(self.k)[None, :], self.cov.dtype)


def _common_dtype(real, other):
    """The float dtype ``real`` made complex when ``other`` is complex (no implicit promotion: the tests
    run with strict dtype promotion)."""
    double = jnp.dtype(real) in (jnp.float64, jnp.complex128)
    if jnp.issubdtype(other, jnp.complexfloating) or jnp.issubdtype(real, jnp.complexfloating):
        return jnp.dtype(jnp.complex128 if double else jnp.complex64)
    return jnp.dtype(real)


def _weights(model, dtype):
    return jnp.asarray(np.asarray(model.n_per_class, float) / model.p).astype(dtype)


class _Pieces(NamedTuple):
    trace: Array  # (k,) (1/p) tr(C_l R~)
    mtrm: Array  # (k, k) M^T R~ M
    s0: Array  # (k, k) M^T R~_0 M (bulk resolvent, no means)


def _pieces(cov, means, a, z, *, with_means: bool = True) -> _Pieces:
    """Traces and mean forms of R~ for weights a_l = n_l / (p (1 + delta_l)) (see the module doc)."""
    dtype = _common_dtype(a.dtype, jnp.asarray(z).dtype)
    cov = cov.astype(dtype)
    M = means.astype(dtype)  # (k, p)
    a = a.astype(dtype)
    z = jnp.asarray(z).astype(dtype)
    p = cov.shape[1]
    k = cov.shape[0]
    if cov.ndim == 2:
        rinv = 1.0 / (jnp.einsum("l,li->i", a, cov) + z)  # diagonal of R~_0
        tr0 = jnp.einsum("li,i->l", cov, rinv)
        RM = M * rinv[None, :]  # rows: (R~_0 mu_l)^T
        s0 = jnp.einsum("ai,bi->ab", M, RM)
        quad = jnp.einsum("ai,li,bi->lab", RM, cov, RM)  # mu_a^T R0 Sigma_l R0 mu_b
    else:
        R0 = jnp.linalg.inv(jnp.einsum("l,lij->ij", a, cov) + z * jnp.eye(p, dtype=dtype))
        tr0 = jnp.einsum("lij,ji->l", cov, R0)
        RM = M @ R0.T
        s0 = jnp.einsum("ai,bi->ab", M, RM)
        quad = jnp.einsum("ai,lij,bj->lab", RM, cov, RM)
    if not with_means:
        return _Pieces(tr0 / p, s0 - s0, s0)
    eye = jnp.eye(k, dtype=dtype)
    inner = a[:, None] * jnp.linalg.inv(eye + s0 * a[None, :])  # A (I + S A)^{-1}
    tr_sigma = tr0 - jnp.einsum("lab,ba->l", quad, inner)  # tr(Sigma_l R~)
    mtrm = s0 @ jnp.linalg.inv(eye + a[:, None] * s0)  # S (I + A S)^{-1} = M^T R~ M
    return _Pieces((tr_sigma + jnp.diagonal(mtrm)) / p, mtrm, s0)


def _delta_map(model, *, with_means=True):
    def f(delta, args):
        cov, means, z = args
        a = _weights(model, delta.dtype) / (1 + delta)
        return _pieces(cov, means, a, z, with_means=with_means).trace

    return f


def _solve_delta(model, z, delta0=None, *, with_means=True, throw=True, max_steps=200):
    z = jnp.asarray(z)
    dtype = _common_dtype(model.cov.dtype, z.dtype)
    y0 = jnp.zeros((model.k,), dtype) if delta0 is None else jnp.asarray(delta0).astype(dtype)
    return fixed_point(_delta_map(model, with_means=with_means), y0, (model.cov, model.means, z.astype(dtype)),
                       solver=Newton(), max_steps=max_steps, throw=throw, name="Gram delta fixed point")


def _check_model(model):
    if not isinstance(model, GramMixture):
        raise ArgumentError(f"model must be a GramMixture, got {model!r:.80}")
    return model


_Z_RULE = ("z must be > 0 or complex off the half-line (-inf, 0]: real z <= 0 can lie on the support of the spectrum "
           "of G (in [0, inf)), where Q(z) is singular")


def _check_z(z, throw: bool):
    """``(z, z_ok)``: a scalar real or complex ``z`` (structure checked at once) and whether it is a
    finite point of the domain. With ``throw`` a bad value raises (eagerly, or compiled in);
    without, it is reported through the result code."""
    if not throw:
        z = _structure_z(z)
        return z, jnp.isfinite(z) & ~((jnp.imag(z) == 0) & (jnp.real(z) <= 0))
    z = points(z, "z", ndim=0)
    bad = (jnp.imag(z) == 0) & (jnp.real(z) <= 0)
    b = concrete(bad)
    if b is not None:
        if bool(b):
            raise ArgumentError(f"{_Z_RULE}; got {complex(concrete(z)) if jnp.iscomplexobj(z) else float(concrete(z))!r}")
    else:
        z = error_if(z, bad, _Z_RULE)
    return z, jnp.ones((), bool)


def _structure_z(z):
    """Structural checks of ``z`` only (a real or complex scalar; values reported through ``ok``)."""
    from .._validate import _kind

    kind = _kind(z)
    if kind in ("bool", "object"):
        raise ArgumentError(f"z must be a real or complex number, got {'a boolean' if kind == 'bool' else type(z).__name__}")
    z = jnp.asarray(z)
    if kind == "int":
        z = z.astype(jnp.result_type(float))
    if z.ndim != 0:
        raise ArgumentError(f"z must be a scalar (vmap over z for several points), got shape {z.shape}")
    return z


def _physical(delta, z):
    r"""Whether ``delta`` is finite and on the physical branch: :math:`\operatorname{Im}\delta_\ell` of
    the sign opposite to :math:`\operatorname{Im}z` (or 0), and :math:`\delta_\ell \ge 0` for real
    :math:`z > 0` (then :math:`\tilde R` is positive definite and :math:`C_\ell` PSD)."""
    rtol, _ = tolerances(delta.dtype)
    tol = 10 * rtol * (1 + jnp.abs(delta))
    zi = jnp.imag(z).astype(tol.dtype)
    im_ok = jnp.imag(delta) * jnp.sign(zi) <= tol
    re_ok = (zi != 0) | (jnp.real(delta) >= -tol)
    return jnp.all(jnp.isfinite(delta) & im_ok & re_ok)


def _with_branch(sol, ok):
    """``sol`` with ``result`` = divergence and ``value`` NaN where ``ok`` is false."""
    result = optx.RESULTS.where(ok, sol.result, optx.RESULTS.nonlinear_divergence)
    good = ok & (sol.result == optx.RESULTS.successful)
    value = jnp.where(good, sol.value, jnp.full_like(sol.value, jnp.nan))
    return Solution(value, result, sol.steps, sol.residual)


def _safe_z(z, zok, dtype):
    return jnp.where(zok, z, jnp.ones_like(z)).astype(dtype)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _delta_core(model, z, zok, delta0, max_steps):
    dtype = _common_dtype(model.cov.dtype, z.dtype)
    zs = _safe_z(z, zok, dtype)
    sol = _solve_physical(model, zs, delta0, max_steps)
    return _with_branch(sol, zok & _physical(sol.value, zs))


_N_CONTINUATION = 32  # heights of the continuation that recovers the physical branch next to the support


def _solve_physical(model, z, delta0, max_steps):
    """Newton from ``delta0`` (default 0); for a complex ``z`` where that lands off the physical branch
    (next to the support Newton from 0 can converge to another root, e.g. at z = -2 + 0.1i), the
    point is recomputed by continuation from Im z = 10 ||G|| + |z| down to Im z (geometric heights,
    each solve warm-started from the one above; far from the axis delta ~ 0 is on the branch)."""
    sol = _solve_delta(model, z, delta0, throw=False, max_steps=max_steps)
    if not jnp.iscomplexobj(z):
        return sol
    ok = sol.ok & _physical(sol.value, z)

    def continued():
        rdt = z.real.dtype
        target = jnp.abs(jnp.imag(z))
        top = 10 * _spectral_bound(model).astype(rdt) + jnp.abs(z)
        steps = jnp.arange(_N_CONTINUATION, dtype=rdt) / (_N_CONTINUATION - 1)
        floor = jnp.maximum(target, jnp.finfo(rdt).eps * top)
        hs = (top * (floor / top) ** steps).at[-1].set(target)
        sign = jnp.where(jnp.imag(z) < 0, -1.0, 1.0).astype(rdt)

        def step(d, h):
            sh = _solve_delta(model, jax.lax.complex(jnp.real(z), sign * h), d, throw=False, max_steps=max_steps)
            return sh.value, None

        d, _ = jax.lax.scan(step, jnp.zeros((model.k,), z.dtype), hs[:-1])
        return _solve_delta(model, z, d, throw=False, max_steps=max_steps)

    return jax.lax.cond(ok, lambda: sol, continued)


def _finish_delta(sol, throw: bool, max_steps: int, z):
    """Applies ``throw`` to a delta solve: eagerly a ``ValueError`` with the residual, under tracing a
    compiled check."""
    if not throw:
        return sol
    msg = (f"Gram delta fixed point did not converge on the physical branch (Im delta of the sign opposite to Im z; "
           f"delta >= 0 for real z > 0) within max_steps = {max_steps}")
    ok = concrete(sol.ok)
    if ok is not None:
        if not np.all(ok):
            zc = concrete(z)
            raise ArgumentError(f"{msg} at z = {complex(zc) if np.iscomplexobj(zc) else float(zc)!r}: residual "
                                f"{float(np.max(concrete(sol.residual))):.3e}; raise max_steps, start elsewhere "
                                "(delta0), or pass throw=False to read ok per point")
        return sol
    return eqx.tree_at(lambda s_: s_.value, sol, error_if(sol.value, ~sol.ok, msg + "; pass throw=False to read ok"))


def _static(max_steps, throw):
    return static_int(max_steps, "max_steps", lo=1, hi=10**6), flag(throw, "throw")


@reraise_as_value_error
def gram_delta(model: GramMixture, z: ArrayLike, *, max_steps: int = 200, throw: bool = True,
               delta0: ArrayLike | None = None):
    r"""The fixed point :math:`\delta_\ell(z) = \frac1p\operatorname{tr}(C_\ell\tilde R(z))` (a
    :class:`rmtjax.solve.Solution`; ``value`` has shape ``(k,)``), by Newton's method through
    :func:`rmtjax.solve.fixed_point` (implicit differentiation: differentiable in ``model.cov``,
    ``model.means`` and ``z``; jit/vmap over ``z``).

    .. math::
        \tilde R(z) = \Big(\sum_\ell \frac{n_\ell}{p}\frac{C_\ell}{1+\delta_\ell(z)} + zI_p\Big)^{-1}

    (Seddik et al. 2020, Thm. 1, with the class weights :math:`n_\ell/p` derived in the module doc).
    Only the physical solution counts as converged: :math:`\operatorname{Im}\delta_\ell` of the sign
    opposite to :math:`\operatorname{Im}z`, :math:`\delta_\ell \ge 0` for real :math:`z > 0`.

    Args:
        model: the mixture (:class:`GramMixture`).
        z: a finite scalar, real ``> 0`` or complex off the half-line :math:`(-\infty, 0]`.
        max_steps: Newton step limit (static).
        throw: raise (``ValueError``, or a compiled check under ``jit``) for a ``z`` outside the
            domain or a solve that does not reach the physical branch; with ``throw=False`` such
            points get ``ok = False`` (``value`` NaN), so a ``vmap`` over ``z`` carries on.
        delta0: starting point (default 0), shape ``(k,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> m = GramMixture(jnp.ones((1, 50)), n_per_class=(100,))
        >>> d = float(gram_delta(m, 0.5).value[0])  # solves d = 1 / (2 / (1 + d) + 0.5)
    """
    model = _check_model(model)
    max_steps, throw = _static(max_steps, throw)
    z, zok = _check_z(z, throw)
    if delta0 is not None:
        delta0 = points(delta0, "delta0", ndim=1)
        if delta0.shape != (model.k,):
            raise ArgumentError(f"delta0 must have shape (k,) = ({model.k},), got {delta0.shape}")
    sol = _delta_core(model, z, zok, delta0, max_steps)
    return _finish_delta(sol, throw, max_steps, z)


class GramResolvent(NamedTuple):
    r""":math:`\tilde Q(z) = \operatorname{diag}\{\text{diag}_{\ell(i)}\} + J\,\text{block}\,J^\top`.

    Attributes:
        delta: :math:`\delta_\ell(z)`, shape ``(k,)``.
        diag: :math:`1/(z(1+\delta_\ell))`, shape ``(k,)``.
        block: :math:`\Omega(z)/(pz)`, shape ``(k, k)``.
        ok: the delta solve converged.
    """

    delta: Array
    diag: Array
    block: Array
    ok: Array

    def dense(self, n_per_class) -> Array:
        """The ``n x n`` matrix :math:`\\tilde Q(z)`."""
        labels = np.repeat(np.arange(len(n_per_class)), n_per_class)
        return jnp.diag(self.diag[labels]) + self.block[labels][:, labels]

    def trace(self, n_per_class) -> Array:
        r""":math:`\frac1n\sum_\ell n_\ell/(z(1+\delta_\ell))` (see :func:`gram_trace_resolvent`)."""
        nl = jnp.asarray(n_per_class, dtype=self.diag.real.dtype).astype(self.diag.dtype)
        return jnp.sum(nl * self.diag) / jnp.sum(nl)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _resolvent_core(model, z, zok, max_steps):
    dtype = _common_dtype(model.cov.dtype, z.dtype)
    zs = _safe_z(z, zok, dtype)
    sol = _solve_physical(model, zs, None, max_steps)
    sol = _with_branch(sol, zok & _physical(sol.value, zs))
    delta = sol.value
    a = _weights(model, delta.dtype) / (1 + delta)
    mtrm = _pieces(model.cov, model.means, a, zs).mtrm
    omega = -mtrm / ((1 + delta)[:, None] * (1 + delta)[None, :])
    zz = zs.astype(delta.dtype)
    return sol, GramResolvent(delta, 1 / (zz * (1 + delta)), omega / (model.p * zz), sol.ok)


@reraise_as_value_error
def gram_resolvent(model: GramMixture, z: ArrayLike, *, max_steps: int = 200, throw: bool = True) -> GramResolvent:
    r"""The deterministic equivalent :math:`\tilde Q(z) = \frac1z\Lambda + \frac1{pz}J\Omega J^\top` of
    :math:`\mathbb E[(X^\top X/p + zI_n)^{-1}]` (Seddik et al. 2020, Thm. 1; the full :math:`k\times k`
    :math:`\Omega_{ab} = -\mu_a^\top\tilde R\mu_b/((1+\delta_a)(1+\delta_b))`, see the module doc), in
    factored form (``.dense(n_per_class)`` builds the ``n x n`` matrix). Arguments as in :func:`gram_delta`
    (with ``throw=False``, points that are not ok have NaN entries and ``ok = False``).

    Example:
        >>> import jax.numpy as jnp
        >>> m = GramMixture(jnp.ones((2, 40)), jnp.eye(2, 40), n_per_class=(30, 50))
        >>> Qt = gram_resolvent(m, 1.0).dense(m.n_per_class)  # (80, 80)
    """
    model = _check_model(model)
    max_steps, throw = _static(max_steps, throw)
    z, zok = _check_z(z, throw)
    sol, out = _resolvent_core(model, z, zok, max_steps)
    if throw:
        sol = _finish_delta(sol, throw, max_steps, z)
        out = out._replace(delta=sol.value)
    return out


@reraise_as_value_error
def gram_trace_resolvent(model: GramMixture, z: ArrayLike, *, max_steps: int = 200, throw: bool = True) -> Array:
    r""":math:`\frac1n\operatorname{tr}\tilde Q(z) \simeq \frac1n\sum_\ell n_\ell/(z(1+\delta_\ell(z)))`, the
    deterministic equivalent of :math:`\frac1n\operatorname{tr}(G + zI)^{-1}` (error :math:`O(1/p)`; the
    :math:`J\Omega J^\top` term changes the trace by :math:`O(1/p)` only). Arguments as in :func:`gram_delta`;
    with ``throw=False`` a point that is not ok (see :func:`gram_delta`) is NaN.

    Example:
        >>> import jax.numpy as jnp
        >>> m = GramMixture(jnp.ones((1, 50)), n_per_class=(100,))
        >>> t = gram_trace_resolvent(m, 0.5)  # Marchenko-Pastur: 1 / (0.5 (1 + delta))
    """
    model = _check_model(model)
    max_steps, throw = _static(max_steps, throw)
    z, zok = _check_z(z, throw)
    sol, out = _resolvent_core(model, z, zok, max_steps)
    tr = out.trace(model.n_per_class)
    if throw:
        sol = _finish_delta(sol, throw, max_steps, z)
        if concrete(sol.ok) is None:
            tr = error_if(tr, ~sol.ok, "Gram delta fixed point did not converge on the physical branch; pass "
                                       "throw=False to get NaN at such points")
    return tr


def _spectral_bound(model) -> Array:
    r"""An upper estimate of :math:`\|G\|`: :math:`(\sqrt{\theta_{\max}} + (1 + \sqrt{n/p})\sqrt{\max_\ell\|\Sigma_\ell\|})^2`
    with :math:`\theta_{\max} = \|N^{1/2}M^\top MN^{1/2}\|/p` (not differentiated)."""
    cov = jax.lax.stop_gradient(model.cov)
    means = jax.lax.stop_gradient(model.means)
    smax = jnp.max(cov) if model.diagonal else jnp.max(jnp.linalg.eigvalsh(cov))
    sq = jnp.sqrt(jnp.asarray(model.n_per_class, dtype=means.dtype))
    theta = jnp.max(jnp.linalg.eigvalsh((sq[:, None] * means) @ (sq[:, None] * means).T)) / model.p
    c = model.n / model.p
    return (jnp.sqrt(theta) + (1 + np.sqrt(c)) * jnp.sqrt(smax)) ** 2 + jnp.finfo(means.dtype).tiny


class GramDensity(NamedTuple):
    r"""Limiting eigenvalue density of :math:`G` on a grid.

    Attributes:
        density: continuous part, :math:`\frac1\pi\operatorname{Im}m_G(x+i\eta)` minus the Lorentzian
            of the atom at 0 (so it integrates to ``1 - zero_mass``).
        stieltjes: :math:`m_G(x + i\eta)` (complex, the atom included).
        zero_mass: the mass :math:`\max(0, 1 - r/n)` of the eigenvalue 0, :math:`r` the rank of
            :math:`\sum_\ell C_\ell` (``p`` when it cannot be computed, under tracing).
        ok: per point: the solve converged on the physical branch
            (:math:`\operatorname{Im}\delta_\ell \ge 0`).
    """

    density: Array
    stieltjes: Array
    zero_mass: Array
    ok: Array


@reraise_as_value_error
def gram_spectral_density(model: GramMixture, x: ArrayLike, *, eta: float | ArrayLike = 1e-3, n_heights: int = 40,
                          throw: bool = True) -> GramDensity:
    r"""Limiting eigenvalue density of :math:`G = X^\top X/p` at the points ``x`` by Stieltjes
    inversion at height ``eta`` (module doc). Each point is solved by Newton's method warm-started
    from the previous point of ``x`` (pass a sorted grid); where that lands off the physical branch
    (some :math:`\operatorname{Im}\delta_\ell < 0`) or does not converge, the point is recomputed by
    continuation from :math:`\operatorname{Im}\zeta = 10\|G\|` down to ``eta`` over ``n_heights``
    geometric steps, each warm-started from the previous one.

    Args:
        model: the mixture.
        x: 1-d grid of real points.
        eta: height of the inversion, a scalar or one height per point of ``x`` (absolute; the density
            is the true one convolved with a Lorentzian of half-width ``eta``, which moves a fraction
            of about :math:`\eta/(\pi d)` of the mass across a feature at distance :math:`d`: near a
            sharp peak at small :math:`x`, pass heights proportional to ``x``, e.g.
            ``eta=1e-3 * x + 1e-6``).
        n_heights: continuation steps (static).
        throw: raise when a point is not on the physical branch even after continuation.

    Example:
        >>> import jax.numpy as jnp
        >>> m = GramMixture(jnp.ones((1, 100)), n_per_class=(200,))
        >>> d = gram_spectral_density(m, jnp.linspace(0.1, 6.0, 50))  # Marchenko-Pastur, c = 2
    """
    model = _check_model(model)
    x = points(x, "x", complex_ok=False, ndim=1)
    eta = real(eta, "eta", ndim=(0, 1), lo=0.0, lo_open=True)
    if eta.ndim == 1 and eta.shape != x.shape:
        raise ArgumentError(f"eta must be a scalar or have the shape of x {x.shape}, got shape {eta.shape}")
    eta = jnp.broadcast_to(eta, x.shape)
    n_heights, throw = static_int(n_heights, "n_heights", lo=2, hi=10_000), flag(throw, "throw")
    deltas, m, oks = _density_impl(model, x, eta, n_heights)
    dtype = m.real.dtype
    x = x.astype(dtype)
    C = concrete(model.cov)
    rank = model.p
    if C is not None and concrete(model.means) is not None:
        rank = int(np.linalg.matrix_rank(np.asarray(jnp.sum(model.second_moments(), 0))))
    zero_mass = jnp.asarray(max(0.0, 1.0 - rank / model.n), dtype)
    eta = eta.astype(dtype)
    dens = jnp.imag(m) / np.pi - zero_mass * eta / (np.pi * (x**2 + eta**2))
    out = GramDensity(dens, m, zero_mass, oks)
    return finish(out, oks, throw=throw, eager="gram_spectral_density: no solution on the physical branch at these x "
                  "(raise n_heights or eta, or pass throw=False to read ok per point)", at=describe_points(x))



@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # a trace counter (tests check that repeated calls do not retrace)
def _density_impl(model, x, eta, n_heights):
    dtype = model.cov.dtype
    x = x.astype(dtype)
    eta = eta.astype(dtype)
    cdtype = jnp.complex128 if dtype == jnp.float64 else jnp.complex64
    top = 10 * _spectral_bound(model).astype(dtype)
    steps = jnp.arange(n_heights, dtype=dtype) / (n_heights - 1)

    def heights(h):  # geometric from top down to h, ending exactly at h
        return (top * (h / top) ** steps).at[-1].set(h)

    def on_branch(sol):  # z = -(x + i eta): Im delta >= 0
        rtol, _ = tolerances(dtype)
        d = sol.value
        return sol.ok & jnp.all(jnp.isfinite(d)) & jnp.all(jnp.imag(d) >= -10 * rtol * (1 + jnp.abs(d)))

    def at(xi, h, d0):
        sol = _solve_delta(model, -jax.lax.complex(xi, h), d0, throw=False)
        return sol.value, on_branch(sol)

    def from_above(xi, h):
        def step(d, hj):
            d, ok = at(xi, hj, d)
            return d, ok

        d, oks = jax.lax.scan(step, jnp.zeros((model.k,), cdtype), heights(h))
        return d, oks[-1]

    def scan_x(carry, xh):
        xi, h = xh
        d_prev, ok_prev = carry
        d, ok = at(xi, h, d_prev)
        d, ok = jax.lax.cond(ok & ok_prev, lambda: (d, ok), lambda: from_above(xi, h))
        return (d, ok), (d, ok)

    d0, ok0 = from_above(x[0], eta[0])
    _, (deltas, oks) = jax.lax.scan(scan_x, (d0, ok0), (x, eta))
    nl = jnp.asarray(model.n_per_class, dtype=dtype)
    zeta = jax.lax.complex(x, eta)
    m = jnp.einsum("l,xl->x", nl.astype(cdtype), 1 / (-zeta[:, None] * (1 + deltas))) / jnp.sum(nl).astype(cdtype)
    return deltas, m, oks


class GramSpikes(NamedTuple):
    r"""Isolated eigenvalues of :math:`G` right of the bulk, caused by the means.

    Attributes:
        eigenvalue: :math:`\lambda_s`, shape ``(k,)``, descending; ``edge`` where no spike exists
            (the spike merges into the edge at the transition).
        alignment: :math:`(j_a^\top v_s)^2/n_a`, shape ``(k, k)`` (spike, class): the squared cosine
            between the eigenvector and the normalized class indicator; 0 where no spike exists.
        overlap: :math:`(j_a^\top v_s)(j_b^\top v_s)`, shape ``(k, k, k)``.
        exists: shape ``(k,)``, the spike is separated from the bulk.
        edge: right edge of the bulk (covariances only; not differentiated).
        ok: every solve converged.

    For a degenerate spike (equal eigenvalues, e.g. symmetric classes) only the sum of ``overlap``
    over the degenerate spikes is meaningful (the eigenvectors of :math:`G` are then not unique).
    """

    eigenvalue: Array
    alignment: Array
    overlap: Array
    exists: Array
    edge: Array
    ok: Array


def _h_matrix(model, delta, lam):
    a = _weights(model, delta.dtype) / (1 + delta)
    s0 = _pieces(model.cov, model.means, a, -lam, with_means=False).s0
    sa = jnp.sqrt(a)
    return jnp.eye(model.k, dtype=delta.dtype) + sa[:, None] * s0 * sa[None, :]


def _real_state(model, lam, d0):
    """Bulk delta at z = -lam (real), whether it is the physical branch (converged, 1 + delta > 0,
    Perron root of the fixed-point Jacobian < 1), and the eigenvalues of H."""
    f = _delta_map(model, with_means=False)
    args = (model.cov, model.means, -lam)
    sol = fixed_point(f, d0, args, solver=Newton(), max_steps=100, throw=False, name="Gram delta (real z)")
    d = sol.value
    jac = jax.jacfwd(f)(d, args)
    w = _weights(model, d.dtype) / (1 + d) ** 2
    sw = jnp.sqrt(jnp.abs(w))
    rho = jnp.max(jnp.abs(jnp.linalg.eigvalsh(0.5 * (sw[:, None] * jac / sw[None, :] + (sw[:, None] * jac / sw[None, :]).T))))
    ok = sol.ok & jnp.all(1 + d > 0) & (rho < 1) & jnp.all(jnp.isfinite(d))
    return d, ok, jnp.linalg.eigvalsh(_h_matrix(model, d, lam))


@reraise_as_value_error
def gram_spikes(model: GramMixture, *, n_grid: int = 120, n_bisect: int = 60, throw: bool = True) -> GramSpikes:
    r"""Isolated eigenvalues of :math:`G = X^\top X/p` to the right of the bulk and the alignment of their
    eigenvectors with the classes (module doc: zeros of the eigenvalue curves of
    :math:`H(-\lambda) = I + A^{1/2}M^\top\tilde R_0(-\lambda)MA^{1/2}` and residues of
    :math:`J^\top\tilde QJ`).

    The bulk edge is found by walking :math:`\lambda` down a geometric grid of ``n_grid`` points from
    an upper bound of :math:`\|G\|` (warm-started real solves, stopping where the physical branch
    ends: the fold where the fixed-point Jacobian reaches 1) and bisection (``n_bisect`` steps). Each
    spike is then a root of :math:`(\delta - f(\delta, \lambda), h_j(\delta, \lambda))` through
    :func:`rmtjax.solve.root`, so eigenvalues and alignments are differentiable in ``model``.

    Example:
        >>> import jax.numpy as jnp
        >>> m = GramMixture(jnp.ones((2, 200)), 3 * jnp.eye(2, 200), n_per_class=(200, 200))
        >>> s = gram_spikes(m)  # both spikes at (1 + 9) (1 + 2 / 9) = 12.22...
    """
    model = _check_model(model)
    n_grid = static_int(n_grid, "n_grid", lo=4, hi=100_000)
    n_bisect = static_int(n_bisect, "n_bisect", lo=1, hi=1000)
    throw = flag(throw, "throw")
    out = _spikes_impl(model, n_grid, n_bisect)
    return finish(out, out.ok, throw=throw, eager="gram_spikes: a spike root or the bulk edge did not converge; "
                  "raise n_grid (or pass throw=False to read ok)")


@eqx.filter_jit
def _spikes_impl(model, n_grid, n_bisect):
    dtype = model.cov.dtype
    k = model.k
    stop = jax.lax.stop_gradient
    frozen = eqx.tree_at(lambda m: (m.cov, m.means), model, (stop(model.cov), stop(model.means)))
    top = 2 * _spectral_bound(model).astype(dtype)
    lams = top * (1e-6) ** (jnp.arange(n_grid, dtype=dtype) / (n_grid - 1))

    def walk(carry, lam):
        d, alive = carry
        d2, ok, h = _real_state(frozen, lam, d)
        alive2 = alive & ok
        return (jnp.where(alive2, d2, d), alive2), (jnp.where(alive2, d2, d), alive2, h)

    (_, _), (ds, alive, hs) = jax.lax.scan(walk, (jnp.zeros((k,), dtype), jnp.asarray(True)), lams)
    last = jnp.sum(alive) - 1  # index of the last physical grid point (lams descend)
    lo = lams[jnp.minimum(last + 1, n_grid - 1)]
    hi = lams[last]
    d_hi = ds[last]

    def bisect(_, state):
        lo, hi, d_hi = state
        mid = 0.5 * (lo + hi)
        d, ok, _ = _real_state(frozen, mid, d_hi)
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi), jnp.where(ok, d, d_hi)

    lo, edge, d_edge = jax.lax.fori_loop(0, n_bisect, bisect, (jnp.where(last + 1 < n_grid, lo, 0.0), hi, d_hi))
    h_edge = _real_state(frozen, edge, d_edge)[2]
    exists = h_edge < 0  # eigenvalue curves (ascending) below 0 at the edge cross 0 right of it

    def one(j):
        # bracket: the largest grid lambda (above the edge) with h_j < 0, else the edge
        below = alive & (hs[:, j] < 0)
        idx = jnp.argmax(below)  # first (largest lambda) index with h_j < 0
        has = jnp.any(below)
        lam_b = jnp.where(has, lams[idx], edge)
        d_b = jnp.where(has, ds[idx], d_edge)
        h_b = jnp.where(has, hs[idx, j], h_edge[j])
        ia = jnp.maximum(jnp.where(has, idx - 1, last), 0)
        lam_a, h_a = lams[ia], hs[ia, j]
        t = h_b / (h_b - h_a)
        lam0 = lam_b + t * (lam_a - lam_b)
        d0 = d_b

        def g(y, mod):
            d, lam = y[:k], y[k]
            f = _delta_map(mod, with_means=False)(d, (mod.cov, mod.means, -lam))
            return jnp.concatenate([d - f, jnp.linalg.eigvalsh(_h_matrix(mod, d, lam))[j][None]])

        sol = root(g, jnp.concatenate([d0, lam0[None]]), model, throw=False, name="Gram spike")
        d, lam = sol.value[:k], sol.value[k]
        # h_j'(lambda) along the implicit curve delta(lambda)
        f = _delta_map(model, with_means=False)
        args = (model.cov, model.means, -lam)
        jac = jax.jacfwd(f)(d, args)
        dfdl = jax.jacfwd(lambda l_: f(d, (model.cov, model.means, -l_)))(lam)
        dd = jnp.linalg.solve(jnp.eye(k, dtype=dtype) - jac, dfdl)
        Hm, dH = jax.jvp(lambda d_, l_: _h_matrix(model, d_, l_), (d, lam), (dd, jnp.ones_like(lam)))
        _, U = jnp.linalg.eigh(Hm)
        u = U[:, j]
        hprime = u @ dH @ u
        a = _weights(model, dtype) / (1 + d)
        v = jnp.sqrt(a) * u
        overlap = model.p / (lam * hprime) * v[:, None] * v[None, :]
        return lam, overlap, sol.ok

    # a Python loop over the k spikes (static index), not vmap: vmapping the root solves with eigvalsh
    # inside deadlocked XLA:CPU (jax 0.10) for full covariances at p >= 128
    lam, overlap, ok = (jnp.stack(v) for v in zip(*[one(j) for j in range(k)]))
    lam = jnp.where(exists, lam, edge)
    overlap = jnp.where(exists[:, None, None], overlap, 0.0)
    order = jnp.argsort(-lam)
    lam, overlap, exists = lam[order], overlap[order], exists[order]
    nl = jnp.asarray(model.n_per_class, dtype=dtype)
    alignment = jnp.diagonal(overlap, axis1=1, axis2=2) / nl[None, :]
    ok_all = jnp.all(ok | ~exists) & (last >= 0)
    return GramSpikes(lam, alignment, overlap, exists, edge, ok_all)
