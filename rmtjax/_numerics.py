"""Elementwise numerics shared by every kernel formula.

Everything here is safe on the whole domain: no NaN in values or in derivatives at the
singular points (sqrt at 0, the angle of two collinear or vanishing vectors).

The angle ``theta = arctan2(y, x)`` for ``y >= 0`` is evaluated with a vectorisable rational
approximation (Cephes' ``atan``: range reduction to ``[0, tan(pi/8)]`` style intervals and a
4/5 rational function), accurate to a few ulp in float64. XLA on CPU evaluates
``arctan2``/``arccos`` as scalar library calls; this version vectorises and is several times
cheaper, which matters because it runs once per kernel entry per layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# Cephes atan.c rational approximation of atan(x) on |x| <= 0.66 after reduction.
_ATAN_P = (
    -8.750608600031904122785e-1,
    -1.615753718733365076637e1,
    -7.500855792314704667340e1,
    -1.228866684490136173410e2,
    -6.485021904942025371773e1,
)
_ATAN_Q = (
    2.485846490142306297962e1,
    1.650270098316988542046e2,
    4.328810604912902668951e2,
    4.853903996359136964868e2,
    1.945506571482613964425e2,
)
_MOREBITS = 6.123233995736765886130e-17


def _horner(z, coeffs, monic: bool = False):
    acc = jnp.ones_like(z) if monic else jnp.full_like(z, coeffs[0])
    for c in coeffs if monic else coeffs[1:]:
        acc = acc * z + c
    return acc


def _atan_unit(t):
    """atan(t) for t in [0, 1], vectorised (Cephes reduction at 0.66)."""
    big = t > 0.66
    x = jnp.where(big, (t - 1.0) / (t + 1.0), t)
    z = x * x
    p = z * _horner(z, _ATAN_P) / _horner(z, _ATAN_Q, monic=True)
    r = x * p + x
    return jnp.where(big, (math.pi / 4 + 0.5 * _MOREBITS) + r, r)


def _angle_value(y, x):
    """arctan2(|y|, x) in [0, pi] with the vectorised atan; 0 at (0, 0)."""
    ay = jnp.abs(y)
    ax = jnp.abs(x)
    hi = jnp.maximum(ay, ax)
    lo = jnp.minimum(ay, ax)
    t = lo / jnp.where(hi > 0, hi, 1.0)
    a = _atan_unit(t)
    a = jnp.where(ay > ax, math.pi / 2 - a, a)
    return jnp.where(x < 0, math.pi - a, a)


def _atan2_jvp_rule(fn):
    def jvp(primals, tangents):
        y, x = primals
        dy, dx = tangents
        r2 = x * x + y * y
        safe = jnp.where(r2 > 0, r2, 1.0)
        return fn(y, x), jnp.where(r2 > 0, (x * dy - y * dx) / safe, 0.0)

    return jvp


@jax.custom_jvp
def angle(y, x):
    r"""Angle :math:`\theta = \operatorname{arctan2}(y, x) \in [0, \pi]` for ``y >= 0``.

    Returns ``pi / 2`` at ``(0, 0)`` (the limit used by every arc-cosine kernel: two
    orthogonal or vanishing vectors), and a zero derivative there.
    """
    return jnp.where((x == 0) & (y == 0), math.pi / 2, _angle_value(y, x))


angle.defjvp(_atan2_jvp_rule(angle))


@jax.custom_jvp
def atan2(y, x):
    """``arctan2(y, x)`` for any signs (vectorised, a few ulp in float64); derivative 0 at (0, 0)."""
    a = _angle_value(y, x)
    return jnp.where(y < 0, -a, a)


atan2.defjvp(_atan2_jvp_rule(atan2))


@jax.custom_jvp
def safe_sqrt(x):
    """``sqrt(max(x, 0))`` with derivative 0 wherever ``x <= 0`` (instead of inf/NaN)."""
    return jnp.sqrt(jnp.maximum(x, 0.0))


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    out = safe_sqrt(x)
    d = jnp.where(x > 0, dx / (2 * jnp.where(x > 0, out, 1.0)), 0.0)
    return out, d


def safe_div(num, den):
    """``num / den`` where ``den != 0``, else 0, with finite derivatives everywhere."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


@jax.jit
def sqrt_prod(q1, q2):
    r"""The geometric mean :math:`p = \sqrt{q_1 q_2}` (``q1, q2 >= 0``) as ``sqrt(q1 * q2)`` —
    which is exactly ``q`` for ``q1 == q2 == q``, what keeps identical inputs at a correlation of
    exactly 1 — or, where the product leaves the normal range (overflow above 1.8e308 in float64,
    3.4e38 in float32; underflow below 2.2e-308, 1.2e-38), from the mantissas scaled by even
    powers of two: :math:`2^{(k_1+k_2)/2}\sqrt{(q_1 2^{-k_1})(q_2 2^{-k_2})}`, exact scalings, so
    large and tiny variances give the true value (still exactly ``q`` on the diagonal).

    Jitted: called eagerly (the validation of ``dual``'s arguments does), a ``lax.cond`` whose
    branches close over arrays is compiled anew on every call (measured: one 50 ms compile per
    call of ``Erf().dual(1., 2., .5)``); under ``jit`` the program is compiled once per shape."""
    prod = q1 * q2
    tiny = jnp.finfo(jnp.result_type(prod)).tiny
    normal = jnp.isfinite(prod) & ((prod >= tiny) | (q1 == 0) | (q2 == 0))
    q1, q2 = jnp.broadcast_arrays(q1, q2)
    # the rescaled branch only where some product left the normal range (it costs several times
    # the rest of a ReLU layer when evaluated for every entry); under vmap both branches run
    return jax.lax.cond(jnp.all(normal), lambda: safe_sqrt(prod),
                        lambda: jnp.where(normal, safe_sqrt(prod), _sqrt_prod_scaled(q1, q2)))


def _half_exponent(q):
    """``k / 2`` (an int32) for the even ``k`` with ``q 2^{-k}`` in ``[1, 4)``, 0 where ``q <= 0``.

    From ``frexp`` (``q = m 2^e``, ``m`` in ``[1/2, 1)``, subnormals included): ``k/2 = floor((e-1)/2)``.
    Bit operations: ``log2`` cost 6 ns per entry, a sixth of the whole kernel of a ReLU layer."""
    safe = jnp.where(q > 0, q, 1.0)
    _, e = jnp.frexp(jax.lax.stop_gradient(safe))
    return jnp.floor_divide(e.astype(jnp.int32) - 1, 2)


def _pow2(q, h):
    """:math:`2^h` in the dtype of ``q``, exactly, for the ``h`` of :func:`_half_exponent` and its
    negation (``|h| <= 537`` in float64, ``<= 75`` in float32: normal numbers), built from its
    exponent bits (``exp2`` rounds: measured 1 ulp off at h = 332; ``ldexp`` is exact but cost 5 ns
    per entry)."""
    dt = jnp.result_type(q)
    if dt == jnp.float64:
        bits = (h.astype(jnp.int64) + 1023) << 52
    elif dt == jnp.float32:
        bits = (h.astype(jnp.int32) + 127) << 23
    else:
        return jnp.ldexp(jnp.ones_like(q), h)
    return jnp.broadcast_to(jax.lax.bitcast_convert_type(bits, dt), jnp.shape(q))


def _sqrt_prod_scaled(q1, q2):
    h1, h2 = _half_exponent(q1), _half_exponent(q2)
    # each power of two is applied in two halves: 2^{+-k} alone can overflow for subnormal q
    m1 = q1 * _pow2(q1, -h1) * _pow2(q1, -h1)
    m2 = q2 * _pow2(q2, -h2) * _pow2(q2, -h2)
    return safe_sqrt(m1 * m2) * _pow2(q1, h1) * _pow2(q2, h2)


def gap(q1, q2, q12):
    r"""The Gram determinant's root :math:`\sqrt{q_1q_2 - q_{12}^2}` as
    :math:`\sqrt{p - q_{12}}\,\sqrt{p + q_{12}}`, :math:`p = \sqrt{q_1q_2}`: exactly 0 for
    identical inputs (``q1 == q2 == q12``) even when the compiler contracts ``q1*q2 - q12*q12``
    into a fused multiply-add, whose rounding residue would otherwise leave an angle of ~1e-8, and
    finite for every finite input (the product :math:`(p - q_{12})(p + q_{12})` overflows above
    ~1e154 in float64, 1e19 in float32). Two square roots, no branch: measured cheaper than one
    square root of the product with a ``where`` falling back to this form (a ReLU dual on one core,
    float64: 24.7 vs 28.3 ns per entry), and a ``lax.cond`` between the two gave NaN derivatives."""
    p = sqrt_prod(q1, q2)
    return safe_sqrt(p - q12) * safe_sqrt(p + q12)


def correlation(q1, q2, q12):
    r"""Returns ``(rho, s)`` with :math:`\rho = q_{12}/\sqrt{q_1 q_2}` clipped to ``[-1, 1]`` and
    :math:`s = \sqrt{1 - \rho^2}`; ``rho = 0`` where a variance vanishes."""
    rho = jnp.clip(safe_div(q12, sqrt_prod(q1, q2)), -1.0, 1.0)
    return rho, safe_sqrt((1.0 - rho) * (1.0 + rho))


@jax.custom_jvp
def det_ratio(q1, q2, q12, s):
    r""":math:`(q_1q_2 - q_{12}^2)/s`, clipped at 0, for a scale ``s > 0`` that grows like the
    variances (e.g. :math:`1 + q_1 + q_2`).

    Evaluated as :math:`(p - q_{12})\,((p + q_{12})/s)` with :math:`p = \sqrt{q_1q_2}`: no
    cancellation (exactly 0 for identical inputs) and no overflow of :math:`q_1 q_2` at large
    variances. Its derivative is that of the polynomial :math:`q_1q_2 - q_{12}^2` (exact also on
    the boundary :math:`q_{12}^2 = q_1q_2` and at zero variance, where differentiating through
    the square root would not be).
    """
    p = sqrt_prod(q1, q2)
    return jnp.maximum((p - q12) * ((p + q12) / s), 0.0)


@det_ratio.defjvp
def _det_ratio_jvp(primals, tangents):
    q1, q2, q12, s = primals
    d1, d2, d12, ds = tangents
    out = det_ratio(q1, q2, q12, s)
    return out, (q2 / s) * d1 + (q1 / s) * d2 - (2 * q12 / s) * d12 - out * (ds / s)


def atan_deficit(u):
    r""":math:`1 - \arctan(u)/u` for ``0 <= u <= 1`` (0 at ``u = 0``) without cancellation at small
    ``u``: the Cephes rational approximation :math:`\arctan u = u + u\,zP(z)/Q(z)` (``z = u^2``)
    gives it as :math:`-zP(z)/Q(z)` to a few ulp for ``u <= 0.66`` (no ``u^3``, which would
    underflow in float32); above, the difference loses at most a factor 9
    (``0.66 / (0.66 - atan 0.66)``)."""
    small = u <= 0.66
    z = jnp.where(small, u, 0.0) ** 2
    series = -(z * _horner(z, _ATAN_P) / _horner(z, _ATAN_Q, monic=True))
    ub = jnp.where(small, 1.0, u)
    return jnp.where(small, series, 1 - _atan_unit(ub) / ub)


def hermite_table(z: np.ndarray, order: int) -> np.ndarray:
    r"""Orthonormal probabilists' Hermite functions :math:`h_k(z) = He_k(z)/\sqrt{k!}`,
    ``k = 0..order``, at points ``z`` (NumPy, float64, stable three-term recurrence)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty(z.shape + (order + 1,))
    out[..., 0] = 1.0
    if order >= 1:
        out[..., 1] = z
    for k in range(1, order):
        out[..., k + 1] = (z * out[..., k] - math.sqrt(k) * out[..., k - 1]) / math.sqrt(k + 1)
    return out


def gauss_hermite(deg: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the ``deg``-point rule for ``E[f(z)]``, ``z ~ N(0, 1)``."""
    from scipy.special import roots_hermitenorm

    z, w = roots_hermitenorm(deg)
    z = 0.5 * (z - z[::-1])  # exactly symmetric nodes (the Mehler tails rely on it)
    w = 0.5 * (w + w[::-1])
    return z, w / w.sum()


def trapezoid_gaussian(step: float, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Nodes and weights of the trapezoidal rule for :math:`\mathbb E[f(z)]`, ``z ~ N(0, 1)``,
    on ``[-cutoff, cutoff]`` with spacing ``step`` (symmetric nodes).

    For ``f`` analytic in the strip :math:`|\operatorname{Im} z| < d` the error is
    :math:`O(e^{-2\pi d/h})` (Trefethen & Weideman 2014, "The exponentially convergent
    trapezoidal rule"): far better than Gauss-Hermite for activations with poles near the real
    axis (tanh, sigmoid at large variance), where Gauss-Hermite converges like
    :math:`e^{-c\sqrt{\deg}}`.
    """
    m = int(math.ceil(cutoff / step))
    z = step * np.arange(-m, m + 1, dtype=np.float64)
    w = step * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return z, w


# Variances above which the Gaussian expectations of numerical activations use the sinh-mapped rule
# below instead of the trapezoidal rule in z: the trapezoid of step h resolves f(sqrt(q) z) while
# h sqrt(q) is small against the distance of f's complex singularities from the real axis (tanh: pi/2;
# its error grows like exp(-pi^2 / (h sqrt q)): 1.7e-10 at q = 100, 3.3e-4 at 1000 with h = 0.04).
# At q = 16 that bound is 2e-27 for tanh; measured above it, the sinh rule: tanh and sigmoid within 4e-16
# of mpmath at q = 17, 1e3, 1e4.
LARGE_VARIANCE = 16.0


def sinh_gaussian_rule(q, half: int, cutoff: float):
    r"""Nodes ``z`` and weights ``w`` (shape ``q.shape + (2 half + 1,)``) for
    :math:`\mathbb E[f(\sqrt q\,z)]`, :math:`z\sim\mathcal N(0, 1)`, at large variance ``q``:
    the trapezoidal rule in :math:`t` after :math:`u = \sqrt q z = \sinh t`, on
    :math:`|t| \le T = \operatorname{asinh}(\mathrm{cutoff}\sqrt q)` with ``2 half + 1`` nodes.
    Near :math:`u = 0` the nodes are spaced like :math:`T/\mathrm{half}` in :math:`u`, the scale on
    which an activation varies (tanh's poles sit at :math:`u = \pm i\pi/2`), and they spread
    geometrically out to :math:`|z| = \mathrm{cutoff}`, the Gaussian's scale: the integrand in
    :math:`t` is analytic in a strip of half-width :math:`\pi/4` (where the Gaussian factor
    :math:`e^{-\sinh^2 t/2q}` still decays), so the rule converges like
    :math:`e^{-\pi^2\mathrm{half}/(2T)}` whatever ``q`` (Trefethen & Weideman 2014). Symmetric
    nodes. ``q`` must be ``> 0``."""
    r = jnp.sqrt(q)[..., None]
    T = jnp.arcsinh(cutoff * r)
    t = T * (jnp.arange(-half, half + 1, dtype=r.dtype) / half).reshape((1,) * (r.ndim - 1) + (-1,))
    z = jnp.sinh(t) / r
    w = (T / half) * jnp.cosh(t) / r * jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return z, w


def hermite_moments(vw, z, order: int):
    r""":math:`\sum_j v_j w_j h_k(z_j)`, ``k = 0..order`` (orthonormal Hermite functions by their
    three-term recurrence, evaluated at traced nodes ``z``): ``vw`` the values times the weights,
    ``(..., N)``; returns ``(..., order + 1)``."""
    h0, out = jnp.ones_like(z), [jnp.sum(vw, axis=-1)]
    if order == 0:
        return out[0][..., None]
    h1 = z
    out.append(jnp.sum(vw * h1, axis=-1))
    if order == 1:
        return jnp.stack(out, -1)

    def body(carry, k):
        hm, h = carry
        hn = (z * h - jnp.sqrt(k) * hm) / jnp.sqrt(k + 1)
        return (h, hn), jnp.sum(vw * hn, axis=-1)

    _, rest = jax.lax.scan(body, (h0, h1), jnp.arange(1, order, dtype=z.dtype))
    return jnp.concatenate([jnp.stack(out, -1), jnp.moveaxis(rest, 0, -1)], -1)


def solver_tolerances(dtype, rtol: float | None = None, atol: float | None = None, *,
                      rtol64: float = 1e-10, atol64: float = 1e-12) -> tuple[float, float]:
    r"""Convergence tolerances for a solve carried out in ``dtype``.

    ``None`` means the default: ``rtol64``/``atol64`` (set for float64) raised to
    :math:`128\,\varepsilon` / :math:`16\,\varepsilon` of ``dtype`` when that is larger, so a
    float32 solve asks for what float32 can deliver (``rtol = 1.5e-5``, ``atol = 1.9e-6``) instead
    of never converging against float64 tolerances. Explicit values are returned unchanged.
    """
    eps = float(np.finfo(np.dtype(dtype)).eps)
    return (max(rtol64, 128 * eps) if rtol is None else rtol,
            max(atol64, 16 * eps) if atol is None else atol)
