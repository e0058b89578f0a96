r"""Kernel regression with infinite-width kernels, in neural-tangents' ``nt.predict`` conventions.

Code written for ``neural_tangents.predict`` ports by changing the import: the factories
:func:`gp_inference`, :func:`gradient_descent_mse` and :func:`gradient_descent_mse_ensemble` take
the same arguments and return ``predict_fn`` callables with the same signatures and outputs
(kernels of shape ``(n, n)``, targets ``(n, k)``, outputs traced: ``trace_axes=(-1,)``).

**GP posterior** (Rasmussen & Williams 2006, eq. 2.25-2.26; Lee et al. 2018) with
:math:`K \leftarrow K + \lambda I`:

.. math::
    \mu_* = K_{*X} K^{-1} Y, \qquad \Sigma_* = K_{**} - K_{*X} K^{-1} K_{X*},

and the infinite-time ensemble of NTK-trained networks (Lee et al. 2019, eq. 16):
:math:`\mu_* = \Theta_{*X}\Theta^{-1}Y`,
:math:`\Sigma_* = K_{**} + \Theta_{*X}\Theta^{-1}K\Theta^{-1}\Theta_{X*}
- (\Theta_{*X}\Theta^{-1}K_{X*} + \text{h.c.})`.

**Gradient flow** on :math:`L = \frac{1}{2nk}\sum (f - y)^2` with learning rate :math:`\eta`
(Jacot et al. 2018; Lee et al. 2019, eq. 9-11), in the eigenbasis
:math:`\Theta = V\Lambda V^\top` and with :math:`\tau = \eta t/(nk)`:

.. math::
    f_X(t) = Y + V e^{-\Lambda\tau} V^\top (f_X(0) - Y), \qquad
    f_*(t) = f_*(0) - \Theta_{*X} V \frac{1 - e^{-\Lambda\tau}}{\Lambda} V^\top (f_X(0) - Y),

and the ensemble covariance at time :math:`t` (Lee et al. 2019, eq. 15) with
:math:`U_t = V\frac{1-e^{-\Lambda\tau}}{\Lambda}V^\top`:
:math:`\Sigma_*(t) = K_{**} + \Theta_{*X}U_t K U_t\Theta_{X*} - (\Theta_{*X}U_t K_{X*} + \text{h.c.})`.

Numerics: ``t = None`` (infinity) uses a Cholesky factorisation; when it fails the smallest
jitter :math:`\epsilon\,\overline{\mathrm{diag}K}\,10^j` that makes it succeed is added and
reported (``predict_fn.jitter``); a kernel with an eigenvalue below
:math:`-\min(100\,n\,\epsilon, 10^{-3})\lambda_{\max}` is rejected as not positive semi-definite
with a ``ValueError``. Finite ``t`` uses ``eigh``; eigenvalues within rounding of 0 are treated
by their limits (:math:`(1-e^{-\lambda\tau})/\lambda \to \tau`, and 0 at :math:`t = \infty`,
the pseudo-inverse), so ``t = 0`` and ``t = inf`` give no NaN, in values or gradients.

The ``predict_fn`` objects are immutable pytrees (``equinox.Module``): the factorisations they
reuse (the Cholesky factors of :func:`gp_inference`, the eigendecompositions for finite ``t``) are
computed when the predictor is built, and a call caches nothing, so a predictor built eagerly may
be called under ``jit`` and eagerly in any order, and passed into a jitted function as an
argument.

Everything is differentiable (with respect to kernels, targets, ``diag_reg``, ``t``), so
hyperparameters of a :class:`~rmtjax.kernels.FullyConnected` spec can be tuned by gradient
descent on a validation loss.

For large ``n`` (up to about 20,000 on a 24 GiB machine) :func:`blocked_kernel` builds the
kernels block by block with :func:`rmtjax.kernels.kernel` into host memory.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._validate import as_real, check_range, choice, concrete, error_if, flag, get_names, static_int
from .gaussian import Auto
from .kernels import FullyConnected, Kernel, kernel, kernel_matvec
from .kernels._core import _check_net, _matrix, _signature, _tile
from .kernels._matvec import _pad_edge, matvec_core, matvec_tile

__all__ = ["Fit", "Gaussian", "KernelRidgeCG", "blocked_kernel", "fit_hyperparameters", "generalized_cross_validation",
           "gp_inference", "gradient_descent_mse", "gradient_descent_mse_ensemble", "kernel_ridge_cg",
           "log_marginal_likelihood"]


class Gaussian(NamedTuple):
    """A Gaussian over outputs: ``mean`` ``(m, k)`` and ``covariance`` ``(m, m)`` (the same for
    every output column, the kernels being traced over outputs)."""

    mean: Array
    covariance: Array


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


def _get(k, g: str):
    """``k.nngp`` / ``k.ntk`` of a kernel named tuple, or the array itself."""
    if hasattr(k, g):
        v = getattr(k, g)
        if v is None:
            raise ValueError(f"the kernel has no {g!r} entry")
        return v
    return k


def _names(get, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """neural-tangents' ``get``: ``None`` (nngp and ntk), a name, or a tuple of names."""
    return get_names(get, allowed)


def _pack(get, names, out: dict):
    """The value itself for a string ``get``, else a named tuple ``Gaussians`` (as neural-tangents)."""
    if isinstance(get, str):
        return out[get]
    return collections.namedtuple("Gaussians", names)(*(out[g] for g in names))


def _symmetric_tolerance(n: int, dtype) -> float:
    return min(100.0 * n * float(jnp.finfo(dtype).eps), 1e-3)


def _square(k, name: str) -> Array:
    """A real, finite, symmetric ``(n, n)`` kernel, symmetrized exactly. Asymmetry beyond rounding
    (``max |K - K^T| > min(100 n eps, 1e-3) max |K|``) is a ``ValueError``: the factorisations read
    one triangle only, so an asymmetric kernel would be used silently half-read."""
    k = as_real(k, name, ndim=2)
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) matrix, got shape {k.shape}")
    tol = _symmetric_tolerance(k.shape[0], k.dtype)
    msg = f"{name} must be symmetric (max |K - K^T| <= {tol:.1e} max |K|)"
    finite, asym, scale, sym = _square_stats(k)  # one fused pass (eagerly: ~4x less time at n = 4000)
    if concrete(finite) is None:
        k = check_range(k, name)  # traced: the checks are compiled in
    elif not bool(finite):
        check_range(k, name)  # raises, naming the entries
    a, sc = concrete(asym), concrete(scale)
    if a is not None and sc is not None:
        if a > tol * sc:
            raise ValueError(f"{msg}, got max asymmetry {float(a):.3g} against max |K| {float(sc):.3g}")
        return sym
    k = error_if(k, asym > tol * scale, msg)
    return 0.5 * (k + k.T)


@jax.jit
def _square_stats(k):
    """Whether ``k`` is finite, its largest asymmetry and entry, and its symmetric part."""
    return jnp.all(jnp.isfinite(k)), jnp.max(jnp.abs(k - k.T)), jnp.max(jnp.abs(k)), 0.5 * (k + k.T)


def _covariance_diagonal(k: Array, name: str) -> Array:
    """``k`` (square, symmetric), checked to have the nonnegative diagonal of a covariance (within
    rounding): a negative prior variance would give negative posterior variances, silently."""
    tol = _symmetric_tolerance(k.shape[0], k.dtype)
    low, scale = jnp.min(jnp.diagonal(k)), jnp.max(jnp.abs(k))
    lc, sc = concrete(low), concrete(scale)
    msg = f"{name} must be a covariance (a diagonal >= 0)"
    if lc is not None and sc is not None:
        if lc < -tol * sc:
            raise ValueError(f"{msg}, got a diagonal entry {float(lc):.3g}")
        return k
    return error_if(k, low < -tol * scale, msg)


def _targets(y, n: int) -> Array:
    y = as_real(y, "y_train", ndim=2)
    if y.shape[0] != n:
        raise ValueError(f"y_train must have shape ({n}, k) (one row per training point), got {y.shape}")
    return check_range(y, "y_train")


def _cross(k, name: str, n: int) -> Array:
    k = as_real(k, name, ndim=2)
    if k.shape[1] != n:
        raise ValueError(f"{name} must have shape (m, {n}), got {k.shape}")
    return check_range(k, name)


def _trace_axes(trace_axes):
    try:
        axes = tuple(np.atleast_1d(np.asarray(trace_axes)).tolist())
    except Exception:  # noqa: BLE001
        axes = None
    if axes not in ((-1,), (1,)):
        raise ValueError(f"trace_axes: only trace_axes=(-1,) (kernels traced over outputs) is supported, got "
                         f"{trace_axes!r}")


def _diag_reg(diag_reg, diag_reg_absolute_scale):
    reg = check_range(as_real(diag_reg, "diag_reg", ndim=0), "diag_reg", lo=0.0)
    return reg, flag(diag_reg_absolute_scale, "diag_reg_absolute_scale")


@functools.partial(jax.jit, static_argnames=("absolute",))
def _regularize(k: Array, diag_reg, absolute: bool) -> Array:
    diag_reg = jnp.asarray(diag_reg, k.dtype)
    n = k.shape[0]
    scale = 1.0 if absolute else jnp.trace(k) / n
    return k + (diag_reg * scale) * jnp.eye(n, dtype=k.dtype)


def _psd_tolerance(n: int, dtype) -> float:
    return min(100.0 * n * float(jnp.finfo(dtype).eps), 1e-3)


def _not_psd_message(name: str, lo, hi) -> str:
    return (f"{name} is not positive semi-definite: smallest eigenvalue {lo:.3g} against largest {hi:.3g} "
            "(pass a kernel from rmtjax.kernels.kernel, or a larger diag_reg)")


# ------------------------------------------------------------------------------------------
# Factorisations
# ------------------------------------------------------------------------------------------


class _Eig(NamedTuple):
    evals: Array  # (n,), clipped at 0
    evecs: Array  # (n, n)
    tol: Array  # eigenvalues <= tol are treated as 0


def _eigh(a: Array, name: str) -> _Eig:
    evals, evecs = jnp.linalg.eigh(a)
    hi = jnp.max(jnp.abs(evals))
    tol = _psd_tolerance(a.shape[0], a.dtype) * hi
    lo = evals[0]
    lo_c, hi_c = concrete(lo), concrete(hi)
    if lo_c is not None:
        if not np.isfinite(lo_c) or lo_c < -float(concrete(tol)):
            raise ValueError(_not_psd_message(name, float(lo_c), float(hi_c)))
    else:
        evals = eqx.error_if(evals, ~(lo >= -tol), f"{name} is not positive semi-definite")
    return _Eig(jnp.maximum(evals, 0.0), evecs, tol)


class _Chol(NamedTuple):
    factor: Array  # upper Cholesky factor of a + jitter I
    jitter: Array


def _upper_cholesky(a: Array) -> Array:
    # the upper factor: 2.5x faster than jnp.linalg.cholesky's lower one on CPU here (n = 3000:
    # 2.2 s vs 5.5 s; row-major arrays, column-major LAPACK)
    return jax.scipy.linalg.cho_factor(a, lower=False)[0]


def _cholesky(a: Array, name: str) -> _Chol:
    n = a.shape[0]
    first = _upper_cholesky(a)
    if concrete(jnp.all(jnp.isfinite(first))):  # the common case, eagerly: one factorisation
        return _Chol(first, jnp.zeros((), a.dtype))
    eps = float(jnp.finfo(a.dtype).eps)
    a0 = jax.lax.stop_gradient(a)
    scale = jnp.maximum(jnp.mean(jnp.abs(jnp.diag(a0))), jnp.finfo(a.dtype).tiny)
    levels = [0.0] + [eps * 10.0**j for j in range(9) if eps * 10.0**j <= 1e-3]

    def works(j):
        jit = jnp.asarray(levels, a.dtype)[j] * scale
        return jnp.all(jnp.isfinite(_upper_cholesky(a0 + jit * jnp.eye(n, dtype=a.dtype))))

    # the smallest jitter that factorises (searched without gradients)
    j = jax.lax.while_loop(lambda j: (j < len(levels)) & ~works(jnp.minimum(j, len(levels) - 1)),
                           lambda j: j + 1, jnp.asarray(0))
    jc = concrete(j)
    if jc is not None and int(jc) == len(levels):
        ev = np.linalg.eigvalsh(np.asarray(a0, np.float64))
        raise ValueError(_not_psd_message(name, ev[0], np.abs(ev).max()))
    jitter = jnp.asarray(levels, a.dtype)[jnp.minimum(j, len(levels) - 1)] * scale
    factor = _upper_cholesky(a + jitter * jnp.eye(n, dtype=a.dtype))
    if jc is None:
        factor = eqx.error_if(factor, j >= len(levels), f"{name} is not positive semi-definite")
    return _Chol(factor, jitter)


def _cho_solve(c: _Chol, b: Array) -> Array:
    return jax.scipy.linalg.cho_solve((c.factor, False), b)


def _decay(e: _Eig, tau: Array) -> tuple[Array, Array]:
    r"""For times ``tau`` (shape ``(T,)``, may be inf): ``exp(-lambda tau) - 1`` and
    ``(1 - exp(-lambda tau)) / lambda``, both ``(T, n)``, safe at lambda -> 0, tau = 0, inf."""
    lam = e.evals[None, :]
    live = lam > e.tol
    finite = jnp.isfinite(tau)[:, None]
    tau_f = jnp.where(finite, tau[:, None], 0.0)
    lam_s = jnp.where(live, lam, 1.0)
    x = jnp.where(live, lam_s, 0.0) * tau_f
    em1 = jnp.where(finite, jnp.expm1(-x), jnp.where(live, -1.0, 0.0))
    # (1 - e^{-lam tau}) / lam: its limit tau at lam = 0 (finite tau), the pseudo-inverse at tau = inf
    inv = jnp.where(live, -em1 / lam_s, jnp.where(finite, tau_f, 0.0))
    return em1, inv


def _learning_rate(learning_rate, dtype):
    return check_range(as_real(learning_rate, "learning_rate", ndim=0).astype(dtype), "learning_rate",
                       lo=0.0, lo_open=True)


def _times(t, learning_rate, size: int, dtype) -> tuple[Array, tuple]:
    """``tau = learning_rate * t / size`` flattened, and the shape of ``t`` (``t >= 0``, ``inf``
    allowed, never NaN)."""
    t = check_range(as_real(t, "t").astype(dtype), "t", lo=0.0, finite=False)
    lr = _learning_rate(learning_rate, dtype)
    return (t * lr / size).reshape(-1), t.shape


# ------------------------------------------------------------------------------------------
# gp_inference
# ------------------------------------------------------------------------------------------


class GPInference(eqx.Module):
    """``predict_fn(get=None, k_test_train=None, k_test_test=None)`` of :func:`gp_inference`.

    An immutable pytree: the Cholesky factors of the regularised training kernels are computed
    when it is built (one per entry of ``k_train_train``: an ``(n, n)`` array serves as both NNGP
    and NTK, a ``Kernel`` gives one factor per non-``None`` entry), never cached on a call, so a
    predictor built eagerly can be called under ``jit`` and eagerly in any order, or passed into a
    jitted function as an argument.

    Attributes:
        y: the ``(n, k)`` targets.
        kernels: per kernel (``"nngp"``, ``"ntk"``) the symmetrised ``(n, n)`` training kernel.
        factors: per kernel the Cholesky factor of the regularised kernel and its jitter.
        weights: per kernel :math:`(K + \\lambda I)^{-1} Y`.
    """

    y: Array
    kernels: dict[str, Array]
    factors: dict[str, _Chol]
    weights: dict[str, Array]

    def __init__(self, k_train_train, y_train, diag_reg, diag_reg_absolute_scale):
        entries = {"nngp": k_train_train, "ntk": k_train_train}
        if hasattr(k_train_train, "nngp") or hasattr(k_train_train, "ntk"):
            entries = {g: getattr(k_train_train, g, None) for g in ("nngp", "ntk")}
            entries = {g: k for g, k in entries.items() if k is not None}
            if not entries:
                raise ValueError("k_train_train must be an (n, n) array or a Kernel(nngp, ntk), got no entries")
            names = {g: f"k_train_train.{g}" for g in entries}
        else:
            names = {"nngp": "k_train_train", "ntk": "k_train_train"}
        kernels: dict[str, Array] = {}
        for g, k in entries.items():
            if g == "ntk" and "nngp" in kernels and k is entries["nngp"]:  # one array for both
                kernels[g] = kernels["nngp"]
                continue
            kernels[g] = _square(k, names[g])
        n = next(iter(kernels.values())).shape[0]
        for g, k in kernels.items():
            if k.shape[0] != n:
                raise ValueError(f"{names[g]} must be ({n}, {n}) like k_train_train.nngp, got {k.shape}")
        self.y = _targets(y_train, n)
        reg, absolute = _diag_reg(diag_reg, diag_reg_absolute_scale)
        factors: dict[str, _Chol] = {}
        for g, k in kernels.items():
            same = g == "ntk" and k is kernels.get("nngp")
            factors[g] = factors["nngp"] if same else _cholesky(_regularize(k, reg, absolute), names[g])
        self.kernels = kernels
        self.factors = factors
        # K^{-1} Y per kernel (the posterior mean's weights), once
        self.weights = {g: _cho_solve(c, self.y.astype(c.factor.dtype)) for g, c in factors.items()}

    @property
    def jitter(self) -> dict[str, Array]:
        """Per kernel (``"nngp"``, ``"ntk"``) the jitter added to factorise it (after ``diag_reg``)."""
        return {g: c.jitter for g, c in self.factors.items()}

    def _factor(self, g: str) -> _Chol:
        if g not in self.factors:
            raise ValueError(f"get={g!r} needs k_train_train.{g}, but the Kernel given to gp_inference has no {g!r} "
                             "entry")
        return self.factors[g]

    def _solve(self, g: str, b: Array) -> Array:
        c = self._factor(g)
        return _cho_solve(c, b.astype(c.factor.dtype))

    def __call__(self, get=None, k_test_train=None, k_test_test=None):
        names = _names(get, ("nngp", "ntk", "ntkgp"))
        n = self.y.shape[0]
        out = {}
        for g in names:
            kg = "ntk" if g == "ntkgp" else g
            dt = self._factor(kg).factor.dtype
            if k_test_train is None:
                mean = self.y.astype(dt)
                out[g] = Gaussian(mean, jnp.zeros((n, n), dt)) if k_test_test is not None else mean
                continue
            k_td = _cross(_get(k_test_train, kg), f"k_test_train.{kg}", n)
            mean = k_td @ self.weights[kg]
            if k_test_test is None:
                out[g] = mean
                continue
            init = "ntk" if g == "ntkgp" else "nngp"
            k_tt = _covariance_diagonal(_square(_get(k_test_test, init), f"k_test_test.{init}"), f"k_test_test.{init}")
            if k_tt.shape[0] != k_td.shape[0]:
                raise ValueError(f"k_test_test.{init} must be ({k_td.shape[0]}, {k_td.shape[0]}) like the rows of "
                                 f"k_test_train, got {k_tt.shape}")
            k_td_init = _cross(_get(k_test_train, init), f"k_test_train.{init}", n)
            if g in ("nngp", "ntkgp"):
                cov = k_tt - k_td @ self._solve(kg, k_td_init.T)
            else:
                if "nngp" not in self.kernels:
                    raise ValueError("the NTK posterior covariance needs k_train_train.nngp: pass a Kernel(nngp, ntk)")
                k_nngp = self.kernels["nngp"]
                term_1 = self._solve("ntk", k_td.T)  # Theta^{-1} Theta_{X*}
                term_2 = k_td @ self._solve("ntk", k_td_init.T)  # Theta_{*X} Theta^{-1} K_{X*}
                cov = k_tt + term_1.T @ k_nngp @ term_1 - (term_2 + term_2.T)
            out[g] = Gaussian(mean, cov)
        return _pack(get, names, out)


def gp_inference(
    k_train_train: Kernel | Float[ArrayLike, "n n"],
    y_train: Float[ArrayLike, "n k"],
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes=(-1,),
) -> GPInference:
    r"""Posterior of NNGP / NTK / NTK-GP inference (``neural_tangents.predict.gp_inference``).

    Args:
        k_train_train: train-train kernel: an ``(n, n)`` array or a ``Kernel(nngp, ntk)``
            (both are needed for the NTK posterior covariance).
        y_train: targets ``(n, k)``.
        diag_reg: :math:`\lambda \ge 0`, added as :math:`\lambda\,\mathrm{tr}(K)/n` to the
            diagonal (or :math:`\lambda` with ``diag_reg_absolute_scale=True``).
        diag_reg_absolute_scale: see ``diag_reg``.
        trace_axes: only ``(-1,)``: the kernels are shared by all output columns.

    Returns:
        ``predict_fn(get=None, k_test_train=None, k_test_test=None)`` (a :class:`GPInference`,
        factorised when built): for each ``get`` in
        ``"nngp"``, ``"ntk"``, ``"ntkgp"`` (default ``("nngp", "ntk")``) the posterior mean
        ``(m, k)`` on the test points, or a :class:`Gaussian` ``(mean, covariance)`` when
        ``k_test_test`` is given; a named tuple ``Gaussians`` for a tuple ``get``, the value
        itself for a string. ``k_test_train=None`` predicts the training set (``N(y, 0)``).

    Raises:
        ValueError: a kernel that is not real, square, finite and symmetric: every kernel is
            required symmetric up to rounding, :math:`\max|K - K^\top| \le \min(100\,n\,
            \varepsilon, 10^{-3})\max|K|` (the factorisations read one triangle; an asymmetric
            matrix is not a kernel); a training kernel that is not positive semi-definite (no
            jitter up to :math:`10^{-3}` of its mean diagonal factorises it); targets that are not
            finite or of the wrong shape; ``diag_reg`` not finite and ``>= 0``; test kernels of
            inconsistent shapes; an unknown ``get``; ``trace_axes`` other than ``(-1,)``. Under
            ``jit`` the value checks are compiled in (``equinox.error_if``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.kernels import FullyConnected, kernel
        >>> x = jax.random.normal(jax.random.key(0), (25, 3)); y = jnp.sin(x[:20, :1])
        >>> k = kernel(x, None, FullyConnected(2, 1.5, 0.1)).nngp  # 20 training, 5 test points
        >>> predict_fn = gp_inference(k[:20, :20], y, diag_reg=1e-4)
        >>> post = predict_fn("nngp", k[20:, :20], k[20:, 20:])
        >>> post.mean.shape, post.covariance.shape
        ((5, 1), (5, 5))
    """
    _trace_axes(trace_axes)
    return GPInference(k_train_train, y_train, diag_reg, diag_reg_absolute_scale)


# ------------------------------------------------------------------------------------------
# gradient_descent_mse
# ------------------------------------------------------------------------------------------


class GradientDescentMSE(eqx.Module):
    """``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` of
    :func:`gradient_descent_mse`.

    An immutable pytree holding the eigendecomposition of the regularised kernel (every finite
    ``t``), computed when it is built; nothing is cached by a call (see :class:`GPInference`).
    ``t = None`` solves with a Cholesky factorisation made by that call (cheaper than the
    eigendecomposition, and absent from the compiled programs of finite ``t``).

    Attributes:
        y: the ``(n, k)`` targets.
        a: the regularised training kernel :math:`K + \\lambda I`.
        learning_rate: :math:`\\eta`.
        eig: its eigendecomposition (eigenvalues clipped at 0, with the cut-off below which they count as 0).
    """

    y: Array
    a: Array
    learning_rate: Array
    eig: _Eig

    def __init__(self, k_train_train, y_train, learning_rate, diag_reg, diag_reg_absolute_scale):
        k = _square(k_train_train, "k_train_train")
        self.y = _targets(y_train, k.shape[0])
        self.a = _regularize(k, *_diag_reg(diag_reg, diag_reg_absolute_scale))
        self.learning_rate = _learning_rate(learning_rate, k.dtype)
        self.eig = _eigh(self.a, "k_train_train")

    @property
    def jitter(self) -> Array:
        """The jitter that the Cholesky factorisation of ``t = None`` adds to the regularised kernel
        (computed by this access)."""
        return _cholesky(self.a, "k_train_train").jitter

    def _fx0(self, fx, name, rows):
        fx = as_real(fx, name, ndim=(0, 2)).astype(self.a.dtype)
        if fx.ndim == 2 and fx.shape != (rows, self.y.shape[1]):
            raise ValueError(f"{name} must be a scalar or have shape ({rows}, {self.y.shape[1]}), got {fx.shape}")
        fx = check_range(fx, name)
        return jnp.broadcast_to(fx, (rows, self.y.shape[1])) if fx.ndim == 0 else fx

    def __call__(self, t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        if fx_train_0 is None and fx_test_0 is None:
            raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("k_test_train is required for test predictions (fx_test_0 is given)")
        y = self.y.astype(self.a.dtype)
        f0 = None if fx_train_0 is None else self._fx0(fx_train_0, "fx_train_0", self.y.shape[0])
        k_td = None
        if fx_test_0 is not None:
            k_td = _cross(k_test_train, "k_test_train", self.y.shape[0]).astype(self.a.dtype)
            ft0 = self._fx0(fx_test_0, "fx_test_0", k_td.shape[0])
        rhs = (y if f0 is None else y - f0)  # Y - f_X(0)
        if t is None:
            fx_train = y
            fx_test = None if k_td is None else ft0 + k_td @ _cho_solve(_cholesky(self.a, "k_train_train"), rhs)
        else:
            tau, shape = _times(t, self.learning_rate, self.y.size, self.a.dtype)
            em1, inv = _decay(self.eig, tau)  # (T, n)
            v = self.eig.evecs
            proj = v.T @ rhs  # (n, k)
            fx_train = None
            if f0 is not None:
                fx_train = f0[None] - jnp.einsum("in,tn,nk->tik", v, em1, proj)
                fx_train = fx_train.reshape(shape + fx_train.shape[1:])
            fx_test = None
            if k_td is not None:
                fx_test = ft0[None] + jnp.einsum("mn,tn,nk->tmk", k_td @ v, inv, proj)
                fx_test = fx_test.reshape(shape + fx_test.shape[1:])
        if fx_train_0 is None:
            return fx_test
        if fx_test_0 is None:
            return fx_train
        return fx_train, fx_test


def gradient_descent_mse(
    k_train_train: Float[ArrayLike, "n n"],
    y_train: Float[ArrayLike, "n k"],
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes=(-1,),
) -> GradientDescentMSE:
    r"""Outputs of gradient flow on the MSE, for a linearised network with kernel ``k_train_train``
    (``neural_tangents.predict.gradient_descent_mse``).

    See the module docstring for the formulas; ``t`` is in units of the learning rate
    (absolute time ``learning_rate * t``), as in neural-tangents, and the loss is
    :math:`\frac{1}{2nk}\sum(f - y)^2` (:func:`rmtjax.finite.mse`), so ``t`` steps of full-batch
    gradient descent with step ``learning_rate`` and a small enough step approach ``predict_fn(t)``.

    Args:
        k_train_train: ``(n, n)`` NTK (or NNGP for readout-only training) on the training set.
        y_train: ``(n, k)`` targets.
        learning_rate: :math:`\eta > 0`.
        diag_reg, diag_reg_absolute_scale: ridge, as in :func:`gp_inference`.
        trace_axes: only ``(-1,)``.

    Returns:
        ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` (a
        :class:`GradientDescentMSE`, factorised when built): the training
        outputs at ``t`` (``fx_test_0=None``), the test outputs (``fx_train_0=None``) or both as a
        tuple; ``t`` may be a scalar or an array of times (a leading axis per time axis),
        ``None`` or ``inf`` for the end of training.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.kernels import FullyConnected, kernel
        >>> x = jax.random.normal(jax.random.key(0), (25, 3)); y = jnp.sin(x[:20, :1])
        >>> theta = kernel(x, None, FullyConnected(2, 1.5, 0.1)).ntk  # 20 training, 5 test points
        >>> predict_fn = gradient_descent_mse(theta[:20, :20], y)
        >>> f_train, f_test = predict_fn(jnp.array([0.0, 10.0, jnp.inf]), 0.0, 0.0, theta[20:, :20])
        >>> f_train.shape, f_test.shape
        ((3, 20, 1), (3, 5, 1))
    """
    _trace_axes(trace_axes)
    return GradientDescentMSE(k_train_train, y_train, learning_rate, diag_reg, diag_reg_absolute_scale)


def gradient_descent_mse_ensemble(
    kernel_fn: FullyConnected | Callable,
    x_train: Float[ArrayLike, "n d"],
    y_train: Float[ArrayLike, "n k"],
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes=(-1,),
) -> GradientDescentMSEEnsemble:
    r"""Mean and covariance of an infinite ensemble of infinitely wide networks trained by
    gradient flow on the MSE (``neural_tangents.predict.gradient_descent_mse_ensemble``).

    Args:
        kernel_fn: a :class:`~rmtjax.kernels.FullyConnected` spec or a ``kernel_fn(x1, x2)``
            returning ``Kernel(nngp, ntk)`` (e.g. :mod:`rmtjax.stax`'s).
        x_train, y_train: training data ``(n, d)``, ``(n, k)``.
        learning_rate, diag_reg, diag_reg_absolute_scale, trace_axes: as in
            :func:`gradient_descent_mse`.

    Returns:
        ``predict_fn(t=None, x_test=None, get=None, compute_cov=False)`` (a
        :class:`GradientDescentMSEEnsemble`, factorised when built): for each ``get``
        (``"nngp"``: only the readout trained, the NNGP acting as the NTK; ``"ntk"``: every
        layer trained) the mean ``(..., m, k)`` at times ``t`` (``None``: infinity), or a
        :class:`Gaussian` with the ``(..., m, m)`` covariance when ``compute_cov``; a named tuple
        ``Gaussians`` for a tuple ``get``. ``x_test=None`` predicts the training points.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.kernels import FullyConnected
        >>> x = jax.random.normal(jax.random.key(0), (20, 3)); y = jnp.sin(x[:, :1])
        >>> predict_fn = gradient_descent_mse_ensemble(FullyConnected(2, 1.5, 0.1), x, y)
        >>> out = predict_fn(t=1.0, get="ntk", compute_cov=True)  # on the training points
        >>> out.mean.shape, out.covariance.shape
        ((20, 1), (20, 20))
    """
    _trace_axes(trace_axes)
    return GradientDescentMSEEnsemble(kernel_fn, x_train, y_train, learning_rate, diag_reg, diag_reg_absolute_scale)


class GradientDescentMSEEnsemble(eqx.Module):
    """``predict_fn(t=None, x_test=None, get=None, compute_cov=False)`` of
    :func:`gradient_descent_mse_ensemble`.

    An immutable pytree: the training kernels and their eigendecompositions (every finite ``t``) are
    computed when it is built; nothing is cached by a call (see :class:`GPInference`). ``t = None``
    (the GP posterior, :class:`GPInference`) factorises by Cholesky in that call.

    Attributes:
        kernel_fn: a :class:`~rmtjax.kernels.FullyConnected` spec or ``kernel_fn(x1, x2)`` returning
            ``Kernel(nngp, ntk)``.
        x_train, y: the training inputs ``(n, d)`` and targets ``(n, k)``.
        learning_rate: :math:`\\eta`.
        k_train_train: the training kernels.
        diag_reg, diag_reg_absolute_scale: the ridge, as in :func:`gp_inference`.
        eig: per kernel (``"nngp"``, ``"ntk"``) the eigendecomposition of the regularised kernel.
    """

    kernel_fn: FullyConnected | Callable
    x_train: Array
    y: Array
    learning_rate: Array
    k_train_train: Kernel
    diag_reg: Array
    diag_reg_absolute_scale: bool = eqx.field(static=True)
    eig: dict[str, _Eig]

    def __init__(self, kernel_fn, x_train, y_train, learning_rate, diag_reg, diag_reg_absolute_scale):
        if not isinstance(kernel_fn, FullyConnected) and not callable(kernel_fn):
            raise ValueError(f"kernel_fn must be a FullyConnected spec or a function kernel_fn(x1, x2), got "
                             f"{type(kernel_fn).__name__}")
        self.kernel_fn = kernel_fn
        self.x_train = check_range(as_real(x_train, "x_train", ndim=2), "x_train")
        reg, absolute = _diag_reg(diag_reg, diag_reg_absolute_scale)
        self.diag_reg, self.diag_reg_absolute_scale = reg, absolute
        k_dd = self._kernel(self.x_train, None)
        self.k_train_train = k_dd
        self.y = _targets(y_train, self.x_train.shape[0])
        self.learning_rate = _learning_rate(learning_rate, self.x_train.dtype)
        self.eig = {g: _eigh(_regularize(_square(_get(k_dd, g), f"k_train_train.{g}"), reg, absolute),
                             f"k_train_train.{g}") for g in ("nngp", "ntk")}

    def _kernel(self, x1, x2):
        if isinstance(self.kernel_fn, FullyConnected):
            return kernel(x1, x2, self.kernel_fn)
        return self.kernel_fn(x1, x2)

    def __call__(self, t=None, x_test=None, get=None, compute_cov=False):
        names = _names(get, ("nngp", "ntk"))
        compute_cov = flag(compute_cov, "compute_cov")
        x_train, y, k_dd = self.x_train, self.y, self.k_train_train
        k_td = k_tt = None
        if x_test is not None:
            x_test = check_range(as_real(x_test, "x_test", ndim=2), "x_test")
            if x_test.shape[1] != x_train.shape[1]:
                raise ValueError(f"x_test must have {x_train.shape[1]} columns like x_train, got shape {x_test.shape}")
            k_td = self._kernel(x_test, x_train)
            k_tt = self._kernel(x_test, None) if compute_cov else None
        if t is None:  # infinite time: the GP posterior (Cholesky), as neural-tangents does
            gp = GPInference(k_dd, y, self.diag_reg, self.diag_reg_absolute_scale)
            res = gp(names, k_td, (k_tt if x_test is not None else k_dd) if compute_cov else None)
            return res[0] if isinstance(get, str) else res
        k_nngp = _get(k_dd, "nngp")
        out = {}
        for g in names:
            e = self.eig[g]
            dt = e.evecs.dtype
            tau, shape = _times(t, self.learning_rate, y.size, dt)
            em1, inv = _decay(e, tau)  # (T, n)
            proj = e.evecs.T @ y.astype(dt)
            if k_td is None:  # training set
                mean = -jnp.einsum("in,tn,nk->tik", e.evecs, em1, proj)
            else:
                kv = _get(k_td, g) @ e.evecs  # Theta_{*X} V
                mean = jnp.einsum("mn,tn,nk->tmk", kv, inv, proj)
            mean = mean.reshape(shape + mean.shape[1:])
            if not compute_cov:
                out[g] = mean
                continue
            if k_td is None and g == "nngp":  # V diag(lambda e^{-2 lambda tau}) V^T
                cov = jnp.einsum("in,tn,jn->tij", e.evecs, e.evals[None, :] * (em1 + 1.0) ** 2, e.evecs)
            elif k_td is None:  # E K E with E = exp(-Theta tau)
                ex = jnp.einsum("in,tn,jn->tij", e.evecs, em1 + 1.0, e.evecs)
                cov = jnp.einsum("tij,jk,tlk->til", ex, k_nngp, ex)
            elif g == "nngp":  # K_** - K_*X V diag((1 - e^{-2 lambda tau}) / lambda) V^T K_X*
                _, inv2 = _decay(e, 2.0 * tau)
                kv = _get(k_td, "nngp") @ e.evecs
                cov = _get(k_tt, "nngp")[None] - jnp.einsum("mn,tn,ln->tml", kv, inv2, kv)
            else:  # K_** + Theta_*X U K U Theta_X* - (Theta_*X U K_X* + h.c.)
                a = kv[None] * inv[:, None, :]  # (T, m, n) = Theta_*X V diag(inv)
                kvv = e.evecs.T @ k_nngp @ e.evecs
                cross = jnp.einsum("tmn,np->tmp", a, e.evecs.T @ _get(k_td, "nngp").T)
                cov = (_get(k_tt, "nngp")[None] + jnp.einsum("tmn,np,tqp->tmq", a, kvv, a)
                       - cross - jnp.swapaxes(cross, 1, 2))
            out[g] = Gaussian(mean, cov.reshape(shape + cov.shape[1:]))
        return _pack(get, names, out)


# ------------------------------------------------------------------------------------------
# Large kernels
# ------------------------------------------------------------------------------------------


def blocked_kernel(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None,
    net: FullyConnected,
    *,
    block: int = 2048,
    dtype=np.float64,
    progress: bool = False,
) -> Kernel:
    """``kernel(x1, x2, net)`` assembled block by block into host (NumPy) memory.

    Each ``block x block`` piece is one call of :func:`rmtjax.kernels.kernel` (itself tiled),
    so device memory stays ``O(block^2)`` and the result needs ``2 n1 n2`` host numbers
    (n = 20,000 in float64: 6.4 GB for NNGP and NTK). With ``x2=None`` only the blocks on and
    above the diagonal are computed and mirrored.

    Example:
        >>> import jax
        >>> x = jax.random.normal(jax.random.key(0), (16, 5))
        >>> k = blocked_kernel(x, None, FullyConnected(2), block=8)  # 3 blocks of 8 x 8, one mirrored
        >>> k.ntk.shape
        (16, 16)
    """
    from tqdm.auto import tqdm

    block = static_int(block, "block", lo=8)
    if not isinstance(net, FullyConnected):
        raise ValueError(f"net must be a rmtjax.kernels.FullyConnected spec, got {type(net).__name__}")
    progress = flag(progress, "progress")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype!r}") from None
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")

    def host(x, name):  # blocked_kernel assembles in host memory: its inputs must be concrete
        as_real(x, name, ndim=2)  # structure (dtype, rank, empty)
        v = concrete(x)  # from x itself: under jit, jnp.asarray of NumPy data would be a tracer
        if v is None:
            raise ValueError(f"{name} must be a concrete array (blocked_kernel assembles the kernel in host memory, "
                             "outside jit), got a traced value")
        if not np.all(np.isfinite(v)):
            check_range(v, name)
        v = v if np.issubdtype(v.dtype, np.floating) else v.astype(np.float64)
        return v

    a = host(x1, "x1")
    sym = x2 is None
    b = a if sym else host(x2, "x2")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x1 and x2 must be 2-d with the same number of columns, got {a.shape} and {b.shape}")
    n1, n2 = a.shape[0], b.shape[0]
    nngp = np.empty((n1, n2), dtype)
    ntk = np.empty((n1, n2), dtype)
    pairs = [(i, j) for i in range(0, n1, block) for j in range(i if sym else 0, n2, block)]
    for i, j in tqdm(pairs, desc="kernel blocks", disable=not progress):
        k = kernel(a[i : i + block], None if (sym and i == j) else b[j : j + block], net)
        kn, kt = np.asarray(k.nngp), np.asarray(k.ntk)
        nngp[i : i + block, j : j + block] = kn
        ntk[i : i + block, j : j + block] = kt
        if sym and i != j:
            nngp[j : j + block, i : i + block] = kn.T
            ntk[j : j + block, i : i + block] = kt.T
    return Kernel(nngp, ntk)


# --------------------------------------------------------------------------------------------
# Hyperparameters by gradient: the marginal likelihood, generalized cross-validation, a fit
# --------------------------------------------------------------------------------------------


def _plain_cholesky(a: Array, name: str) -> Array:
    """The upper Cholesky factor of ``a``, which must be positive definite (no jitter: the
    likelihood of a singular covariance is not finite)."""
    factor = _upper_cholesky(a)
    msg = (f"{name} must be positive definite (its Cholesky factorisation failed); add noise > 0 or use "
           "a kernel with full rank on these inputs")
    ok = concrete(jnp.all(jnp.isfinite(factor)))
    if ok is not None:
        if not bool(ok):
            raise ValueError(msg)
        return factor
    return error_if(factor, ~jnp.all(jnp.isfinite(factor)), msg)


def log_marginal_likelihood(
    k_train_train: Float[ArrayLike, "n n"], y_train: Float[ArrayLike, "n k"], noise: ArrayLike = 0.0
) -> Array:
    r"""The Gaussian-process log marginal likelihood of the targets (Rasmussen & Williams 2006,
    eq. 2.30), summed over the ``k`` independent output columns:

    .. math::
        \log p(Y \mid X) = -\tfrac12\operatorname{tr}\big(Y^\top (K + \sigma^2 I)^{-1} Y\big)
            - \tfrac{k}{2}\log\det(K + \sigma^2 I) - \tfrac{nk}{2}\log 2\pi.

    Differentiable in the kernel (hence in ``W_std``, ``b_std``, activation parameters and graph
    weights of the network that made it), the targets and the noise variance.

    Args:
        k_train_train: the kernel on the training inputs ``(n, n)``, symmetric (checked) and with
            :math:`K + \sigma^2 I` positive definite.
        y_train: targets ``(n, k)`` (or ``(n,)``).
        noise: :math:`\sigma^2 \ge 0`, the observation-noise variance added to the diagonal.

    Example:
        >>> import jax.numpy as jnp
        >>> k = jnp.array([[2.0, 0.5], [0.5, 1.0]])
        >>> round(float(log_marginal_likelihood(k, jnp.array([1.0, -1.0]), 0.1)), 5)
        -3.21865
    """
    k = _square(k_train_train, "k_train_train")
    y = as_real(y_train, "y_train", ndim=(1, 2))
    y = _targets(y.reshape(y.shape[0], -1), k.shape[0])
    noise = check_range(as_real(noise, "noise", ndim=0), "noise", lo=0.0)
    dt = jnp.result_type(k, y, noise)
    k, y, noise = k.astype(dt), y.astype(dt), noise.astype(dt)
    n, cols = y.shape
    factor = _plain_cholesky(k + noise * jnp.eye(n, dtype=dt), "k_train_train + noise I")
    alpha = jax.scipy.linalg.cho_solve((factor, False), y)
    logdet = 2 * jnp.sum(jnp.log(jnp.diag(factor)))
    return -0.5 * jnp.sum(y * alpha) - 0.5 * cols * logdet - 0.5 * n * cols * jnp.log(2 * jnp.pi).astype(dt)


def generalized_cross_validation(
    k_train_train: Float[ArrayLike, "n n"], y_train: Float[ArrayLike, "n k"], ridge: ArrayLike
) -> Array:
    r"""The generalized cross-validation score of kernel ridge regression (Craven & Wahba 1979;
    Golub, Heath & Wahba 1979): with the hat matrix :math:`H = K(K + \lambda I)^{-1}`,

    .. math::
        \mathrm{GCV}(\lambda) = \frac{\tfrac1n\|(I - H)Y\|_F^2}{\big(\tfrac1n\operatorname{tr}(I - H)\big)^2}
            = \frac{n\,\|(K + \lambda I)^{-1}Y\|_F^2}{\operatorname{tr}\big((K + \lambda I)^{-1}\big)^2},

    a nearly unbiased estimate of the test error (against noisy labels) from the training data
    alone; differentiable in the kernel, the targets and :math:`\lambda > 0`.

    Example:
        >>> import jax.numpy as jnp
        >>> k = jnp.array([[2.0, 0.5], [0.5, 1.0]])
        >>> round(float(generalized_cross_validation(k, jnp.array([1.0, -1.0]), 0.1)), 5)
        1.82031
    """
    k = _square(k_train_train, "k_train_train")
    y = as_real(y_train, "y_train", ndim=(1, 2))
    y = _targets(y.reshape(y.shape[0], -1), k.shape[0])
    ridge = check_range(as_real(ridge, "ridge", ndim=0), "ridge", lo=0.0, lo_open=True)
    dt = jnp.result_type(k, y, ridge)
    k, y, ridge = k.astype(dt), y.astype(dt), ridge.astype(dt)
    n = y.shape[0]
    factor = _plain_cholesky(k + ridge * jnp.eye(n, dtype=dt), "k_train_train + ridge I")
    inv = jax.scipy.linalg.cho_solve((factor, False), jnp.eye(n, dtype=dt))
    r = inv @ y
    return n * jnp.sum(r * r) / jnp.trace(inv) ** 2


class Fit(NamedTuple):
    """The result of :func:`fit_hyperparameters`.

    Attributes:
        params: the fitted hyperparameters (the structure of the initial ones).
        loss: the objective at ``params``.
        steps: the number of L-BFGS iterations taken.
        grad_norm: the norm of the gradient with respect to the optimised (log) coordinates at
            the end; small when the fit converged.
    """

    params: object
    loss: Array
    steps: Array
    grad_norm: Array


def fit_hyperparameters(
    objective: Callable[[object], Array],
    params: object,
    *,
    positive: bool = True,
    max_steps: int = 200,
    gtol: float | None = None,
) -> Fit:
    r"""Minimises ``objective(params)`` over a pytree of hyperparameters with L-BFGS (optax,
    zoom line search), compiled as one ``lax.while_loop``.

    Typical objectives: the negative :func:`log_marginal_likelihood` or the
    :func:`generalized_cross_validation` score of a kernel built from ``params`` (``W_std``,
    ``b_std``, activation parameters, graph weights, the noise or ridge). A mixture over depths,
    :math:`K = \sum_l w_l K^{(l)}`, takes its kernels from one call of
    ``kernel(x, None, net, all_depths=True)`` (``.nngp[l]`` is depth ``l``) and fits the weights
    :math:`w_l` with the rest (tests/test_regression_hyperparameters.py fits five depths and the
    noise, against SciPy's L-BFGS-B).

    Args:
        objective: ``objective(params) -> scalar``, jit-compatible and differentiable.
        params: the initial hyperparameters, a pytree of real arrays (finite; ``> 0`` with
            ``positive``).
        positive: optimise the logarithms (every leaf stays positive; the natural scale for
            standard deviations, variances and ridges).
        max_steps: at most this many iterations (static, ``>= 1``).
        gtol: stop when the gradient norm in the optimised coordinates is below this (default
            :math:`\sqrt\varepsilon` of the dtype times ``max(1, |loss|)``).

    Returns:
        :class:`Fit` with the fitted ``params``, the final ``loss``, ``steps`` and ``grad_norm``.

    Example:
        >>> import jax.numpy as jnp
        >>> fit = fit_hyperparameters(lambda p: (jnp.log(p["a"]) - 1.0) ** 2, {"a": jnp.array(1.0)})
        >>> round(float(fit.params["a"]), 4)  # e
        2.7183
    """
    if not callable(objective):
        raise ValueError(f"objective must be callable, got {type(objective).__name__}")
    positive = flag(positive, "positive")
    max_steps = static_int(max_steps, "max_steps", lo=1, hi=100_000)
    leaves, tree = jax.tree_util.tree_flatten(params)
    if not leaves:
        raise ValueError("params must hold at least one array")
    leaves = [check_range(as_real(v, f"params[{i}]"), f"params[{i}]", lo=0.0 if positive else None,
                          lo_open=positive) for i, v in enumerate(leaves)]
    dt = jnp.result_type(*leaves)
    leaves = [v.astype(dt) for v in leaves]
    x0 = [jnp.log(v) if positive else v for v in leaves]
    gtol = float(np.sqrt(np.finfo(np.dtype(dt)).eps)) if gtol is None else float(gtol)

    # optax's L-BFGS mixes int32 and int64 counters, which strict dtype promotion refuses
    with jax.numpy_dtype_promotion("standard"):
        x, value, k, gnorm = _fit(objective, x0, tree, positive, max_steps, gtol)
    bad = ~jnp.isfinite(value)
    msg = "objective: the fit reached a non-finite loss; start nearer a good value or bound the hyperparameters"
    x, value = error_if((x, value), bad, msg)
    return Fit(_to_params(x, tree, positive), value, k, gnorm)


def _to_params(x, tree, positive):
    return jax.tree_util.tree_unflatten(tree, [jnp.exp(v) if positive else v for v in x])


@eqx.filter_jit
def _fit(objective, x0, tree, positive, max_steps, gtol):
    """fit_hyperparameters' L-BFGS loop, compiled once per objective (its arrays traced, a function
    by identity), pytree structure and settings: built inside fit_hyperparameters, the loop was a
    new function, compiled again on every call (measured 2026-12-07)."""
    import optax

    dt = x0[0].dtype

    def loss(x):
        out = jnp.asarray(objective(_to_params(x, tree, positive)))
        if out.shape != ():
            raise ValueError(f"objective must return a scalar, got shape {out.shape}")
        return out.astype(dt)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def tree_norm(g):
        return jnp.sqrt(sum(jnp.sum(v * v) for v in jax.tree_util.tree_leaves(g)))

    def step(carry):
        x, state, _, k, _ = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=loss)
        x = optax.apply_updates(x, updates)
        return x, state, value, k + 1, tree_norm(grad)

    def cont(carry):
        _, _, value, k, gnorm = carry
        return (k < max_steps) & (gnorm > gtol * jnp.maximum(1.0, jnp.abs(value)))

    init = (x0, opt.init(x0), jnp.asarray(0.0, dt), jnp.asarray(0), jnp.asarray(jnp.inf, dt))
    x, _, _, k, _ = jax.lax.while_loop(cont, step, init)
    value, grad = jax.value_and_grad(loss)(x)
    return x, value, k, tree_norm(grad)


# --------------------------------------------------------------------------------------------
# Matrix-free kernel ridge regression: preconditioned conjugate gradients
# --------------------------------------------------------------------------------------------


class KernelRidgeCG(eqx.Module):
    r"""A kernel ridge regressor solved matrix-free (:func:`kernel_ridge_cg`).

    Attributes:
        weights: :math:`\alpha = (K + \lambda I)^{-1} Y`, ``(n, k)``.
        steps: conjugate-gradient iterations taken.
        relative_residual: :math:`\|(K + \lambda I)\alpha - Y\|_F / \|Y\|_F` at the end,
            recomputed with one more product (an independent check of convergence).
        x_train, net, kind, tile: what the predictions need.
    """

    weights: Array
    steps: Array
    relative_residual: Array
    x_train: Array
    net: object
    kind: str = eqx.field(static=True)
    tile: int = eqx.field(static=True)

    def __call__(self, x_test: Float[ArrayLike, "m d"]) -> Array:
        r"""The posterior mean :math:`K(X_*, X)\,\alpha`, ``(m, k)``, computed tile by tile (with
        ``storage="float32"``: kernel tiles in float32, sums in float64)."""
        if self.x_train.dtype == self.weights.dtype:
            return kernel_matvec(x_test, self.x_train, self.weights, self.net, kind=self.kind, tile=self.tile)
        x = _matrix(x_test, "x_test").astype(self.x_train.dtype)
        if x.shape[1] != self.x_train.shape[1]:
            raise ValueError(f"x_test must have {self.x_train.shape[1]} features (as x_train), got shape {x.shape}")
        dyn, static = eqx.partition(self.net, eqx.is_array)
        return _mixed_predict(x, self.x_train, self.weights, dyn, static=static, kind=self.kind, tile=self.tile)


@functools.partial(jax.jit, static_argnames=("static", "kind", "tile"))
def _mixed_predict(x, x_train, weights, dyn, *, static, kind, tile):
    return matvec_core(x, x_train, weights, eqx.combine(dyn, static), kind=kind, tile=tile, method=Auto())


def _nystrom_inverse(c, w, ridge):
    r"""The Nystrom preconditioner of Frangella, Tropp & Udell (2021, "Randomized Nystrom
    preconditioning", eq. 5.3), as a function: with the Nystrom approximation
    :math:`C W^{+} C^\top = Q\hat\Lambda Q^\top` (thin SVD of :math:`C\,U S^{-1/2}`, eigenvalues of
    :math:`W` below rounding dropped),
    :math:`P^{-1} = (\hat\lambda_r + \lambda)\,Q(\hat\Lambda + \lambda)^{-1}Q^\top + (I - QQ^\top)`."""
    S, U = jnp.linalg.eigh(0.5 * (w + w.T))
    keep = S > jnp.finfo(w.dtype).eps * w.shape[0] * jnp.max(S)
    B = c @ (U * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, S, 1.0)), 0.0)[None, :])
    Q, sig, _ = jnp.linalg.svd(B, full_matrices=False)
    lam = sig * sig
    # directions of the dropped eigenvalues of W (zero singular values: arbitrary columns of Q)
    # are left alone
    used = lam > jnp.finfo(w.dtype).eps * w.shape[0] * jnp.max(lam)
    lam_r = jnp.min(jnp.where(used, lam, jnp.inf))
    lam_r = jnp.where(jnp.isfinite(lam_r), lam_r, 0.0)
    scale = jnp.where(used, (lam_r + ridge) / (lam + ridge) - 1.0, 0.0)

    def apply(v):
        return v + Q @ (scale[:, None] * (Q.T @ v))

    return apply


@functools.partial(jax.jit, static_argnames=("static", "kind", "tile", "rank", "max_steps"))
def _ridge_cg(x, y, ridge, landmarks, rtol, dyn, *, static, kind, tile, rank, max_steps):
    net = eqx.combine(dyn, static)
    method = Auto()

    def K(v):
        return matvec_core(x, x, v, net, kind=kind, tile=tile, method=method)

    def A(v):
        return K(v) + ridge * v

    if rank:
        c = _engine_block(x, x[landmarks], net, kind, tile).astype(y.dtype)
        M = _nystrom_inverse(c, c[landmarks], ridge)
    else:
        def M(v):
            return v

    # preconditioned conjugate gradients on the (n, k) block: one step size per column (the
    # columns are independent systems sharing every kernel product), stopped on the Frobenius
    # norm of each column's residual (lineax's CG stops on an elementwise scale, which targets
    # with entries near 0 never meet)
    def dot(a, b):
        return jnp.sum(a * b, axis=0)

    target = rtol * jnp.sqrt(dot(y, y))
    r0 = y
    z0 = M(r0)
    init = (jnp.zeros_like(y), r0, z0, dot(r0, z0), jnp.asarray(0))

    def cond(state):
        _, r, _, _, k = state
        return (k < max_steps) & jnp.any(jnp.sqrt(dot(r, r)) > target)

    def body(state):
        xk, r, p, rz, k = state
        Ap = A(p)
        pAp = dot(p, Ap)
        active = jnp.sqrt(dot(r, r)) > target
        step = jnp.where(active & (pAp > 0), rz / jnp.where(pAp > 0, pAp, 1.0), 0.0)
        xk = xk + step[None, :] * p
        r = r - step[None, :] * Ap
        z = M(r)
        rz_new = dot(r, z)
        beta = jnp.where(active & (rz > 0), rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        p = jnp.where(active[None, :], z + beta[None, :] * p, p)
        return xk, r, p, rz_new, k + 1

    w, _, _, _, steps = jax.lax.while_loop(cond, body, init)
    resid = jnp.sqrt(jnp.sum((A(w) - y) ** 2)) / jnp.sqrt(jnp.sum(y * y))
    return w, steps, resid


def _engine_block(x1, x2, net, kind: str, tile: int):
    """``K(x1, x2)`` for a thin ``x2`` (the Nystrom columns) by the tiled engine, as one dense
    ``(n1, n2)`` block (traceable)."""
    n1, n2 = x1.shape[0], x2.shape[0]
    t1 = -(-n1 // tile)
    x1p = _pad_edge(x1, t1 * tile)
    s1, s2 = _signature(x1p), _signature(x2)
    blocks = jax.tree_util.tree_map(lambda b: b.reshape((t1, tile) + b.shape[1:]), (x1p, s1))

    def row(args):
        nngp, ntk = _tile(args[0], x2, args[1], s2, net, Auto(), False)
        return nngp if kind == "nngp" else ntk

    return jax.lax.map(row, blocks).reshape(t1 * tile, n2)[:n1]


def kernel_ridge_cg(
    x_train: Float[ArrayLike, "n d"],
    y_train: Float[ArrayLike, "n k"],
    net: FullyConnected,
    ridge: ArrayLike,
    *,
    kind: str = "nngp",
    rank: int | None = None,
    rtol: float | None = None,
    max_steps: int = 1000,
    tile: int | None = None,
    seed: int = 0,
    storage: str | None = None,
) -> KernelRidgeCG:
    r"""Kernel ridge regression :math:`\alpha = (K + \lambda I)^{-1}Y` without forming :math:`K`:
    preconditioned conjugate gradients on products :math:`Kv` computed tile by
    tile (:func:`rmtjax.kernels.kernel_matvec`), all right-hand sides (e.g. one-hot targets) in
    one solve.

    **Preconditioner** (Nystrom; Williams & Seeger 2001; the stable form of Frangella, Tropp &
    Udell 2021): ``rank`` landmark rows :math:`L` drawn uniformly without replacement give
    :math:`K \approx C W^{+} C^\top = Q\hat\Lambda Q^\top` (:math:`C = K(X, L)`,
    :math:`W = K(L, L)`), and :math:`P^{-1} = (\hat\lambda_r + \lambda)Q(\hat\Lambda +
    \lambda)^{-1}Q^\top + (I - QQ^\top)` costs :math:`O(nr)` per application. It flattens the top
    of :math:`K`'s spectrum, so the iteration count depends on the eigenvalues below the
    :math:`r`-th relative to :math:`\lambda`.

    Memory :math:`O(n(d + k + r))`; each iteration costs one kernel evaluation (the engine's
    tiles). Predictions ``model(x_test)`` are matrix-free too.

    Args:
        x_train: ``(n, d)``, real and finite.
        y_train: ``(n, k)`` or ``(n,)``.
        net: the network (a :class:`~rmtjax.kernels.FullyConnected` or any engine layer).
        ridge: :math:`\lambda > 0`.
        kind: ``"nngp"`` (the GP posterior mean) or ``"ntk"`` (the infinite-time mean of
            NTK-trained networks with ridge).
        rank: Nystrom rank (static; 0 for plain CG; at most ``n``; default ``min(256, n)``).
        rtol: stop when :math:`\|r\| \le` ``rtol`` :math:`\|Y\|` (default 1e-10 in float64,
            1e-5 in float32).
        max_steps: at most this many iterations (static).
        tile: the block edge of the kernel products; ``None`` (default):
            :func:`rmtjax.kernels._matvec.matvec_tile` (256 on CPUs, 1024 on accelerators).
        seed: the landmark draw.
        storage: ``None`` (everything in the inputs' dtype) or ``"float32"``: the inputs are
            stored and every kernel tile is computed in float32 (half the memory of the inputs,
            faster tiles), while the products are summed, and the iterates, residuals and the
            preconditioner kept, in float64 (needs x64). The solve then converges to float64
            tolerances (default ``rtol`` 1e-10) for the kernel as rounded to float32 (entries
            within about 1e-7 relative of the float64 kernel), where a float32 solve stalls near
            1e-5.

    Returns:
        :class:`KernelRidgeCG` (the weights, the step count, the recomputed relative residual;
        call it on test inputs for predictions).

    Raises:
        ValueError: for invalid arguments, and when the solve did not reach ``rtol`` within
            ``max_steps`` (eagerly; the message gives the residual reached).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.kernels import FullyConnected
        >>> x = jax.random.normal(jax.random.key(0), (300, 5))
        >>> model = kernel_ridge_cg(x, jnp.sin(x[:, :1]), FullyConnected(2, 1.4, 0.1), 1e-2, rank=64, tile=64)
        >>> model(x[:4]).shape
        (4, 1)
    """
    _check_net(net)
    kind = choice(kind, "kind", ("nngp", "ntk"))
    x = _matrix(x_train, "x_train")
    n = x.shape[0]
    y = as_real(y_train, "y_train", ndim=(1, 2))
    y = _targets(y.reshape(y.shape[0], -1), n)
    dt = jnp.result_type(x, y)
    x, y = x.astype(dt), y.astype(dt)
    storage = choice(storage, "storage", (None, "float32"))
    if storage == "float32":
        if not jax.config.read("jax_enable_x64"):
            raise ValueError("storage='float32' keeps float32 inputs and float64 sums: enable x64 "
                             "(jax.config.update('jax_enable_x64', True)); without it, pass float32 inputs and "
                             "storage=None")
        dt = jnp.float64
        y = y.astype(dt)
    ridge = check_range(as_real(ridge, "ridge", ndim=0, dtype=dt), "ridge", lo=0.0, lo_open=True)
    rank = min(256, n) if rank is None else static_int(rank, "rank", lo=0, hi=n)
    max_steps = static_int(max_steps, "max_steps", lo=1, hi=10**6)
    tile = matvec_tile() if tile is None else static_int(tile, "tile", lo=8, hi=4096)
    seed = static_int(seed, "seed", lo=0)
    eps = float(jnp.finfo(dt).eps)
    rtol = (1e-10 if eps < 1e-10 else 1e-5) if rtol is None else float(rtol)
    if not (0 < rtol < 1):
        raise ValueError(f"rtol must be in (0, 1), got {rtol}")
    landmarks = jnp.asarray(np.sort(np.random.default_rng(seed).choice(n, size=rank, replace=False)), jnp.int32)
    dyn, static = eqx.partition(net, eqx.is_array)
    if storage == "float32":
        x = x.astype(jnp.float32)
    w, steps, resid = _ridge_cg(x, y, ridge, landmarks, jnp.asarray(rtol, dt), dyn, static=static, kind=kind,
                                tile=tile, rank=rank, max_steps=max_steps)
    r = concrete(resid)
    if r is not None and not float(r) <= 10 * rtol:
        raise ValueError(f"max_steps: conjugate gradients reached a relative residual {float(r):.2e} after "
                         f"{int(steps)} steps, above rtol = {rtol:.1e}; raise max_steps or rank, or the ridge")
    if r is None:  # under jit: the same check, compiled in
        w = error_if(w, ~(resid <= 10 * rtol), f"max_steps: conjugate gradients did not reach rtol = {rtol:.1e}; "
                     "raise max_steps or rank, or the ridge")
    return KernelRidgeCG(w, steps, resid, x, net, kind, tile)
