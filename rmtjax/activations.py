r"""Activation functions as ``equinox`` modules.

Every activation is an :class:`eqx.Module` whose continuous parameters are array leaves, so
``jax.grad`` and ``jax.vmap`` act on them. Activations with a closed-form Gaussian dual
subclass :class:`AbstractClosedFormActivation` and implement

.. math::
    \mathrm{dual}(q_1, q_2, q_{12}) = \big(\mathbb{E}[\phi(u)\phi(v)],\;
    \mathbb{E}[\phi'(u)\phi'(v)]\big), \qquad
    (u, v) \sim \mathcal{N}\!\left(0, \begin{pmatrix} q_1 & q_{12} \\ q_{12} & q_2
    \end{pmatrix}\right).

The formulas follow neural-tangents' conventions (Novak et al. 2020, "Neural Tangents: Fast
and Easy Infinite Neural Networks in Python", ICLR), which are the golden reference of the
test suite. Everything else (``Tanh``, ``Sigmoid``, ``Swish``, ``Softplus``, ``Elu``, ``Mish``,
``Custom``) goes through the numerical methods of :mod:`rmtjax.gaussian`.

Example:
    >>> import jax.numpy as jnp
    >>> from rmtjax.activations import Relu
    >>> k, kdot = Relu().dual(jnp.array(1.0), jnp.array(1.0), jnp.array(1.0))
    >>> float(k), float(kdot)
    (0.5, 0.5)
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
from jaxtyping import Array, ArrayLike

from ._numerics import angle, atan2, correlation, gap, safe_sqrt

__all__ = [
    "AbstractActivation",
    "AbstractClosedFormActivation",
    "ABRelu",
    "Abs",
    "Cos",
    "Custom",
    "Elu",
    "Erf",
    "Exp",
    "Gaussian",
    "Gelu",
    "HardTanh",
    "Hermite",
    "Identity",
    "LeakyRelu",
    "Mish",
    "Monomial",
    "Polynomial",
    "Rbf",
    "RectifiedMonomial",
    "Relu",
    "Sigmoid",
    "Sign",
    "Sin",
    "Softplus",
    "Swish",
    "SiLU",
    "Tanh",
]


def _leaf(x: ArrayLike, name: str) -> Array:
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(float)
    if arr.ndim != 0:
        raise ValueError(f"activation parameter {name!r} must be a scalar, got shape {arr.shape}")
    return arr


class AbstractActivation(eqx.Module):
    """An elementwise activation :math:`\\phi`.

    Subclasses implement ``__call__``; ``derivative`` defaults to forward-mode autodiff.
    ``nt_name`` is the neural-tangents layer name used by :mod:`rmtjax.stax`.
    """

    nt_name: ClassVar[str] = ""

    @abc.abstractmethod
    def __call__(self, x: ArrayLike) -> Array:
        raise NotImplementedError

    def derivative(self, x: ArrayLike) -> Array:
        r""":math:`\phi'(x)`, elementwise."""
        x = jnp.asarray(x)
        return jax.jvp(self.__call__, (x,), (jnp.ones_like(x),))[1]


class AbstractClosedFormActivation(AbstractActivation):
    """An activation with closed-form Gaussian expectations (see the module docstring)."""

    @abc.abstractmethod
    def dual(self, q1: ArrayLike, q2: ArrayLike, q12: ArrayLike) -> tuple[Array, Array]:
        r"""Returns :math:`(\mathbb{E}[\phi(u)\phi(v)], \mathbb{E}[\phi'(u)\phi'(v)])`."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------
# ReLU family:  phi(x) = a min(x, 0) + b max(x, 0)
# --------------------------------------------------------------------------------------


def _abrelu_dual(a, b, q1, q2, q12):
    # Cho & Saul (2009) arc-cosine kernel of order 1, generalised to two slopes:
    #   E = (a-b)^2/(2 pi) sqrt(q1 q2 - q12^2) + ((a^2+b^2)/2 - (a-b)^2 theta/(2 pi)) q12
    #   E' = (a^2+b^2)/2 - (a-b)^2 theta / (2 pi),  theta = arccos(q12 / sqrt(q1 q2)).
    s = gap(q1, q2, q12)
    theta = angle(s, q12)
    f = (a - b) ** 2 / (2 * math.pi)
    kdot = (a * a + b * b) / 2 - f * theta
    return f * s + kdot * q12, kdot


class ABRelu(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a \min(x, 0) + b \max(x, 0)`.

    .. math::
        \mathbb{E}[\phi\phi] = \tfrac{(a-b)^2}{2\pi}\sqrt{q_1q_2 - q_{12}^2}
        + \Big(\tfrac{a^2+b^2}{2} - \tfrac{(a-b)^2}{2\pi}\theta\Big) q_{12},\quad
        \mathbb{E}[\phi'\phi'] = \tfrac{a^2+b^2}{2} - \tfrac{(a-b)^2}{2\pi}\theta,

    with :math:`\theta = \arccos(q_{12}/\sqrt{q_1 q_2})` (Cho & Saul 2009; Tsuchida et al. 2018).
    """

    a: Array
    b: Array
    nt_name: ClassVar[str] = "ABRelu"

    def __init__(self, a: ArrayLike = 0.0, b: ArrayLike = 1.0):
        self.a = _leaf(a, "a")
        self.b = _leaf(b, "b")

    def __call__(self, x):
        return self.a * jnp.minimum(x, 0) + self.b * jnp.maximum(x, 0)

    def derivative(self, x):
        return jnp.where(jnp.asarray(x) > 0, self.b, self.a)

    def dual(self, q1, q2, q12):
        return _abrelu_dual(self.a, self.b, q1, q2, q12)


class Relu(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \max(x, 0)`; the arc-cosine kernel of order 1 (Cho & Saul 2009):
    :math:`\mathbb{E}[\phi\phi] = \frac{\sqrt{q_1q_2}}{2\pi}(\sin\theta + (\pi-\theta)\cos\theta)`,
    :math:`\mathbb{E}[\phi'\phi'] = \frac{\pi-\theta}{2\pi}`."""

    nt_name: ClassVar[str] = "Relu"

    def __call__(self, x):
        return jnp.maximum(x, 0)

    def derivative(self, x):
        return (jnp.asarray(x) > 0).astype(jnp.result_type(x, float))

    def dual(self, q1, q2, q12):
        return _abrelu_dual(0.0, 1.0, q1, q2, q12)


class LeakyRelu(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \max(x, \alpha x)`: ``ABRelu(alpha, 1)``."""

    alpha: Array
    nt_name: ClassVar[str] = "LeakyRelu"

    def __init__(self, alpha: ArrayLike = 0.01):
        self.alpha = _leaf(alpha, "alpha")

    def __call__(self, x):
        return jnp.where(x > 0, x, self.alpha * x)

    def derivative(self, x):
        return jnp.where(jnp.asarray(x) > 0, 1.0, self.alpha)

    def dual(self, q1, q2, q12):
        return _abrelu_dual(self.alpha, 1.0, q1, q2, q12)


class Abs(AbstractClosedFormActivation):
    r""":math:`\phi(x) = |x|`: ``ABRelu(-1, 1)``."""

    nt_name: ClassVar[str] = "Abs"

    def __call__(self, x):
        return jnp.abs(x)

    def derivative(self, x):
        return jnp.sign(x)

    def dual(self, q1, q2, q12):
        return _abrelu_dual(-1.0, 1.0, q1, q2, q12)


class Identity(AbstractClosedFormActivation):
    r""":math:`\phi(x) = x`: :math:`(q_{12}, 1)`."""

    nt_name: ClassVar[str] = "Identity"

    def __call__(self, x):
        return jnp.asarray(x)

    def derivative(self, x):
        return jnp.ones_like(jnp.asarray(x, dtype=float))

    def dual(self, q1, q2, q12):
        q12 = jnp.asarray(q12)
        return q12, jnp.ones_like(q12)


class Sign(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \operatorname{sign}(x)`:
    :math:`\mathbb{E}[\phi\phi] = 1 - 2\theta/\pi`. Its derivative vanishes almost everywhere,
    so :math:`\mathbb{E}[\phi'\phi'] = 0` (the convention of neural-tangents)."""

    nt_name: ClassVar[str] = "Sign"

    def __call__(self, x):
        return jnp.sign(x)

    def derivative(self, x):
        return jnp.zeros_like(jnp.asarray(x, dtype=float))

    def dual(self, q1, q2, q12):
        s = gap(q1, q2, q12)
        k = 1 - 2 * angle(s, q12) / math.pi
        return k, jnp.zeros_like(k)


# --------------------------------------------------------------------------------------
# Smooth closed forms
# --------------------------------------------------------------------------------------


class Erf(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a\,\operatorname{erf}(b x) + c` (Williams 1997):

    .. math::
        \mathbb{E}[\phi\phi] = \tfrac{2a^2}{\pi}\arcsin\frac{2b^2q_{12}}
        {\sqrt{(1+2b^2q_1)(1+2b^2q_2)}} + c^2,\qquad
        \mathbb{E}[\phi'\phi'] = \frac{4a^2b^2}{\pi\sqrt{(1+2b^2q_1)(1+2b^2q_2) - 4b^4q_{12}^2}}.
    """

    a: Array
    b: Array
    c: Array
    nt_name: ClassVar[str] = "Erf"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = 1.0, c: ArrayLike = 0.0):
        self.a, self.b, self.c = _leaf(a, "a"), _leaf(b, "b"), _leaf(c, "c")

    def __call__(self, x):
        return self.a * jss.erf(self.b * x) + self.c

    def derivative(self, x):
        return self.a * self.b * (2 / math.sqrt(math.pi)) * jnp.exp(-((self.b * x) ** 2))

    def dual(self, q1, q2, q12):
        b2 = self.b * self.b
        prod = (1 + 2 * b2 * q1) * (1 + 2 * b2 * q2)
        x = 2 * b2 * q12
        root = safe_sqrt(prod - x * x)
        k = self.a**2 * (2 / math.pi) * atan2(x, root) + self.c**2
        kdot = self.a**2 * b2 * (4 / math.pi) / root
        return k, kdot


class Gelu(AbstractClosedFormActivation):
    r""":math:`\phi(x) = x\,\Phi(x)` (exact GELU; Tsuchida, Pearce, van der Heide, Roosta,
    Gallagher 2020, "Avoiding kernel fixed points: computing with ELU and GELU infinite
    networks"). With :math:`\delta^2 = (1+q_1)(1+q_2) - q_{12}^2`:

    .. math::
        \mathbb{E}[\phi\phi] = \frac{q_{12}}{4} + \frac{1}{2\pi}\Big(q_{12}\arcsin
        \frac{q_{12}}{\sqrt{(1+q_1)(1+q_2)}} + \frac{q_{12}^2 + q_1q_2\delta^2}
        {(1+q_1)(1+q_2)\,\delta}\Big).

    ``approximate=True`` only changes the finite network (tanh approximation), as in
    neural-tangents; the kernel is that of the exact GELU.
    """

    approximate: bool = eqx.field(static=True, default=False)
    nt_name: ClassVar[str] = "Gelu"

    def __call__(self, x):
        return jax.nn.gelu(x, approximate=self.approximate)

    def derivative(self, x):
        x = jnp.asarray(x)
        return jss.ndtr(x) + x * jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def dual(self, q1, q2, q12):
        pp1 = (1 + q1) * (1 + q2)
        d2 = pp1 - q12 * q12
        d = safe_sqrt(d2)
        ang = atan2(q12, d)
        k = (q12 * q12 + q1 * q2 * d2) / (pp1 * d) + q12 * ang
        k = k / (2 * math.pi) + 0.25 * q12
        first = (1 / d2 + (1 - q1 * q2) / pp1 + 1) * q12 / d / (2 * math.pi)
        kdot = first + 0.25 + ang / (2 * math.pi)
        return k, kdot


class Sin(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a\sin(bx + c)`. With :math:`s_\pm = e^{-b^2(q_1+q_2 \mp 2q_{12})/2}`:
    :math:`\mathbb{E}[\phi\phi] = \tfrac{a^2}{2}(s_+ - s_-\cos 2c)`,
    :math:`\mathbb{E}[\phi'\phi'] = \tfrac{a^2b^2}{2}(s_+ + s_-\cos 2c)`."""

    a: Array
    b: Array
    c: Array
    nt_name: ClassVar[str] = "Sin"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = 1.0, c: ArrayLike = 0.0):
        self.a, self.b, self.c = _leaf(a, "a"), _leaf(b, "b"), _leaf(c, "c")

    def __call__(self, x):
        return self.a * jnp.sin(self.b * x + self.c)

    def derivative(self, x):
        return self.a * self.b * jnp.cos(self.b * x + self.c)

    def dual(self, q1, q2, q12):
        b2 = self.b * self.b
        half = -0.5 * b2 * (q1 + q2)
        s1 = jnp.exp(half + b2 * q12)
        s2 = jnp.exp(half - b2 * q12) * jnp.cos(2 * self.c)
        h = self.a**2 / 2
        return h * (s1 - s2), h * b2 * (s1 + s2)


class Cos(Sin):
    r""":math:`\phi(x) = a\cos(bx + c) = a\sin(bx + c + \pi/2)`."""

    nt_name: ClassVar[str] = "Cos"

    def __call__(self, x):
        return self.a * jnp.cos(self.b * x + self.c)

    def derivative(self, x):
        return -self.a * self.b * jnp.sin(self.b * x + self.c)

    def dual(self, q1, q2, q12):
        return Sin(self.a, self.b, self.c + math.pi / 2).dual(q1, q2, q12)


class Rbf(AbstractClosedFormActivation):
    r"""Random Fourier feature map of the RBF kernel:
    :math:`\phi(x) = \sqrt2\sin(\sqrt{2\gamma}x + \pi/4)`, so that
    :math:`\mathbb{E}[\phi\phi] = e^{-\gamma(q_1 + q_2 - 2q_{12})}` and
    :math:`\mathbb{E}[\phi'\phi'] = 2\gamma\,\mathbb{E}[\phi\phi]`."""

    gamma: Array
    nt_name: ClassVar[str] = "Rbf"

    def __init__(self, gamma: ArrayLike = 1.0):
        self.gamma = _leaf(gamma, "gamma")

    def __call__(self, x):
        return math.sqrt(2) * jnp.sin(jnp.sqrt(2 * self.gamma) * x + math.pi / 4)

    def dual(self, q1, q2, q12):
        k = jnp.exp(self.gamma * (2 * q12 - q1 - q2))
        return k, 2 * self.gamma * k


class Exp(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a e^{bx}`:
    :math:`\mathbb{E}[\phi\phi] = a^2 e^{b^2(q_1 + q_2 + 2q_{12})/2}`,
    :math:`\mathbb{E}[\phi'\phi'] = b^2\,\mathbb{E}[\phi\phi]`."""

    a: Array
    b: Array
    nt_name: ClassVar[str] = "Exp"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = 1.0):
        self.a, self.b = _leaf(a, "a"), _leaf(b, "b")

    def __call__(self, x):
        return self.a * jnp.exp(self.b * x)

    def dual(self, q1, q2, q12):
        b2 = self.b * self.b
        k = self.a**2 * jnp.exp(b2 * (0.5 * (q1 + q2) + q12))
        return k, b2 * k


class Gaussian(AbstractClosedFormActivation):
    r""":math:`\phi(x) = a e^{bx^2}` (``b < 0``). With
    :math:`D = (1-2bq_1)(1-2bq_2) - 4b^2q_{12}^2`:
    :math:`\mathbb{E}[\phi\phi] = a^2 D^{-1/2}`,
    :math:`\mathbb{E}[\phi'\phi'] = 4a^2b^2q_{12}D^{-3/2}`."""

    a: Array
    b: Array
    nt_name: ClassVar[str] = "Gaussian"

    def __init__(self, a: ArrayLike = 1.0, b: ArrayLike = -1.0):
        self.a, self.b = _leaf(a, "a"), _leaf(b, "b")

    def __check_init__(self):
        try:
            b = float(self.b)
        except Exception:  # traced
            return
        if not b < 0:
            raise ValueError(f"Gaussian: parameter 'b' must be < 0 (integrable), got {b}")

    def __call__(self, x):
        return self.a * jnp.exp(self.b * x * x)

    def dual(self, q1, q2, q12):
        b = self.b
        det = (1 - 2 * b * q1) * (1 - 2 * b * q2) - 4 * b * b * q12 * q12
        inv = 1 / jnp.sqrt(det)
        a2 = self.a**2
        return a2 * inv, a2 * 4 * b * b * q12 * inv**3


# --------------------------------------------------------------------------------------
# Polynomials: exact Mehler expansion
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _mehler_poly_table(degree: int) -> np.ndarray:
    """T[l, n]: contribution of coefficient n to s_l (see ``Polynomial.dual``); q power is m."""
    t = np.zeros((degree + 1, degree + 1))
    for n in range(degree + 1):
        for m in range(n // 2 + 1):
            l = n - 2 * m
            t[l, n] = math.factorial(n) / (math.factorial(m) * 2**m * math.sqrt(math.factorial(l)))
    return t


def _poly_dual_terms(coef: Array, q: Array) -> list[Array]:
    r"""Returns :math:`s_l(q)` with :math:`p(\sqrt q z) = \sum_l s_l(q) q^{l/2}\,h_l(z)`."""
    degree = coef.shape[0] - 1
    table = _mehler_poly_table(degree)
    out = []
    for l in range(degree + 1):
        acc = jnp.zeros_like(q)
        for m in range((degree - l) // 2 + 1):
            n = l + 2 * m
            acc = acc + coef[n] * table[l, n] * q**m
        out.append(acc)
    return out


def _poly_expectation(coef: Array, q1, q2, q12) -> Array:
    r""":math:`\mathbb{E}[p(u)p(v)] = \sum_l s_l(q_1)s_l(q_2)\,q_{12}^l` (Mehler's formula)."""
    s1 = _poly_dual_terms(coef, jnp.asarray(q1))
    s2 = _poly_dual_terms(coef, jnp.asarray(q2))
    acc = jnp.zeros(jnp.broadcast_shapes(jnp.shape(q1), jnp.shape(q2), jnp.shape(q12)), coef.dtype)
    for l in reversed(range(len(s1))):
        acc = acc * q12 + s1[l] * s2[l]
    return acc


class Polynomial(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \sum_{n=0}^{N} c_n x^n` (``coef`` in increasing order, as NumPy's
    ``Polynomial``). Exact through Mehler's formula: writing
    :math:`p(\sqrt{q}z) = \sum_l r_l(q)\,h_l(z)` in orthonormal Hermite functions,

    .. math::
        \mathbb{E}[p(u)p(v)] = \sum_l r_l(q_1) r_l(q_2)\,\rho^l
        = \sum_l s_l(q_1)s_l(q_2)\,q_{12}^l,\qquad
        s_l(q) = \sum_m c_{l+2m}\frac{(l+2m)!}{m!\,2^m\sqrt{l!}}\,q^m,

    a polynomial in :math:`(q_1, q_2, q_{12})`, so no singularity anywhere.
    """

    coef: Array
    nt_name: ClassVar[str] = "Polynomial"

    def __init__(self, coef: ArrayLike):
        coef = jnp.asarray(coef)
        if not jnp.issubdtype(coef.dtype, jnp.floating):
            coef = coef.astype(float)
        if coef.ndim != 1 or coef.shape[0] < 1:
            raise ValueError(f"Polynomial: 'coef' must be a non-empty 1-d array, got shape {coef.shape}")
        self.coef = coef

    def __call__(self, x):
        x = jnp.asarray(x)
        acc = jnp.zeros_like(x, dtype=jnp.result_type(x, self.coef))
        for c in self.coef[::-1]:
            acc = acc * x + c
        return acc

    def _dcoef(self):
        n = jnp.arange(1, self.coef.shape[0], dtype=self.coef.dtype)
        d = self.coef[1:] * n
        return d if d.shape[0] else jnp.zeros((1,), self.coef.dtype)

    def derivative(self, x):
        return Polynomial(self._dcoef())(x)

    def dual(self, q1, q2, q12):
        return _poly_expectation(self.coef, q1, q2, q12), _poly_expectation(self._dcoef(), q1, q2, q12)


class Monomial(Polynomial):
    r""":math:`\phi(x) = x^{\mathrm{degree}}` (exact Mehler expansion, any degree)."""

    degree: int = eqx.field(static=True)
    nt_name: ClassVar[str] = "Monomial"

    def __init__(self, degree: int):
        if int(degree) != degree or degree < 0:
            raise ValueError(f"Monomial: 'degree' must be a non-negative integer, got {degree}")
        self.degree = int(degree)
        self.coef = jnp.asarray(np.eye(self.degree + 1)[self.degree])


class Hermite(Polynomial):
    r"""Normalized probabilists' Hermite polynomial :math:`h_n = He_n/\sqrt{n!}`.

    The dual is exact for any variances: :math:`\sum_l s_l(q_1)s_l(q_2)q_{12}^l`. For unit
    variances it reduces to :math:`q_{12}^n`, neural-tangents' formula (which assumes them).
    """

    degree: int = eqx.field(static=True)
    nt_name: ClassVar[str] = "Hermite"

    def __init__(self, degree: int):
        if int(degree) != degree or degree < 0:
            raise ValueError(f"Hermite: 'degree' must be a non-negative integer, got {degree}")
        from numpy.polynomial.hermite_e import herme2poly

        self.degree = int(degree)
        c = herme2poly([0] * self.degree + [1]) / math.sqrt(math.factorial(self.degree))
        self.coef = jnp.asarray(np.asarray(c, dtype=np.float64))


# --------------------------------------------------------------------------------------
# Rectified monomials: arc-cosine kernels of any order
# --------------------------------------------------------------------------------------


def _positive_moment(k: int) -> float:
    """E[max(z, 0)^k] for z ~ N(0, 1)."""
    return 2 ** (k / 2) * math.gamma((k + 1) / 2) / (2 * math.sqrt(math.pi))


def _rect_moments(a: int, b: int, rho, s, theta) -> Array:
    r"""G_{a,b}(rho) = E[u_+^a v_+^b] for unit variances and correlation rho, by Gaussian
    integration by parts in u (Stein's lemma):
    G_{a,b} = (a-1) G_{a-2,b} + b rho G_{a-1,b-1} (+ boundary terms at u = 0 or v = 0)."""
    phi0 = 1 / math.sqrt(2 * math.pi)
    one_m_r2 = 1 - rho * rho

    def spow(k):  # s^k without an infinite derivative of (1-rho^2)^{k/2} for k >= 2
        out = one_m_r2 ** (k // 2)
        return out * s if k % 2 else out

    @functools.lru_cache(maxsize=None)
    def g(a, b):
        if a < b:
            return g(b, a)
        if a == 0:
            return (math.pi - theta) / (2 * math.pi)
        # a >= 1, a >= b
        if a == 1:
            # E[delta(u) v_+^b] + b rho G_{0,b-1}, or for b = 0: E[delta(u)] P + rho E[delta(v)]
            if b == 0:
                return phi0 * 0.5 * (1 + rho)
            return phi0 * _positive_moment(b) * spow(b) + b * rho * g(0, b - 1)
        out = (a - 1) * g(a - 2, b)
        if b >= 1:
            out = out + b * rho * g(a - 1, b - 1)
        else:
            out = out + rho * phi0 * _positive_moment(a - 1) * spow(a - 1)
        return out

    return g(a, b)


class RectifiedMonomial(AbstractClosedFormActivation):
    r""":math:`\phi(x) = \max(x, 0)^n`: the arc-cosine kernel of order :math:`n` (Cho & Saul
    2009), :math:`\mathbb{E}[\phi\phi] = (q_1q_2)^{n/2} J_n(\theta)/(2\pi)`, evaluated by the
    exact recursion :math:`G_{a,b} = (a-1)G_{a-2,b} + b\rho G_{a-1,b-1}` for
    :math:`G_{a,b} = \mathbb{E}[u_+^a v_+^b]` (Stein's lemma), which stays finite at
    :math:`\rho = \pm 1` where the :math:`\partial_\theta / \sin\theta` form does not."""

    degree: int = eqx.field(static=True)
    nt_name: ClassVar[str] = "RectifiedMonomial"

    def __init__(self, degree: int):
        if int(degree) != degree or degree < 0:
            raise ValueError(f"RectifiedMonomial: 'degree' must be a non-negative integer, got {degree}")
        self.degree = int(degree)

    def __call__(self, x):
        x = jnp.asarray(x)
        return jnp.where(x >= 0, jnp.maximum(x, 0) ** self.degree, 0.0)

    def derivative(self, x):
        x = jnp.asarray(x)
        n = self.degree
        if n == 0:
            return jnp.zeros_like(x, dtype=float)
        return n * jnp.maximum(x, 0) ** (n - 1) * (x >= 0)

    def dual(self, q1, q2, q12):
        n = self.degree
        rho, s = correlation(q1, q2, q12)
        theta = angle(s, rho)
        root = safe_sqrt(q1 * q2)
        k = root**n * _rect_moments(n, n, rho, s, theta)
        if n == 0:
            return k, jnp.zeros_like(k)
        kdot = n * n * root ** (n - 1) * _rect_moments(n - 1, n - 1, rho, s, theta)
        return k, kdot


# --------------------------------------------------------------------------------------
# Numerical-only activations
# --------------------------------------------------------------------------------------


class Tanh(AbstractActivation):
    r""":math:`\phi(x) = \tanh(x)` (Gaussian expectations by quadrature / Mehler series)."""

    nt_name: ClassVar[str] = "Tanh"

    def __call__(self, x):
        return jnp.tanh(x)

    def derivative(self, x):
        return 1 - jnp.tanh(x) ** 2


class HardTanh(AbstractActivation):
    r""":math:`\phi(x) = \max(-1, \min(1, x))` (Pennington, Schoenholz & Ganguli 2017);
    :math:`\phi'(h)^2 = 1_{|h|<1}`. Gaussian expectations numerically (kinks at :math:`\pm1`: the
    Mehler series converges slowly, like ELU's); its length map has the closed form used by
    :func:`rmtjax.rmt.jacobian_q_star`:
    :math:`\mathbb E[\phi(\sqrt q z)^2] = q(\operatorname{erf}(t/\sqrt2) - 2t\varphi(t)) +
    \operatorname{erfc}(t/\sqrt2)`, :math:`t = q^{-1/2}`."""

    def __call__(self, x):
        return jnp.clip(x, -1.0, 1.0)

    def derivative(self, x):
        x = jnp.asarray(x)
        return (jnp.abs(x) < 1).astype(jnp.result_type(x, float))


class Sigmoid(AbstractActivation):
    r""":math:`\phi(x) = 1/(1 + e^{-x})`."""

    nt_name: ClassVar[str] = "Sigmoid"

    def __call__(self, x):
        return jax.nn.sigmoid(x)

    def derivative(self, x):
        s = jax.nn.sigmoid(x)
        return s * (1 - s)


class Swish(AbstractActivation):
    r""":math:`\phi(x) = x\,\sigma(\beta x)` (SiLU for :math:`\beta = 1`)."""

    beta: Array
    nt_name: ClassVar[str] = "Swish"

    def __init__(self, beta: ArrayLike = 1.0):
        self.beta = _leaf(beta, "beta")

    def __call__(self, x):
        return x * jax.nn.sigmoid(self.beta * x)

    def derivative(self, x):
        s = jax.nn.sigmoid(self.beta * x)
        return s + self.beta * x * s * (1 - s)


SiLU = Swish


class Softplus(AbstractActivation):
    r""":math:`\phi(x) = \log(1 + e^{x})`."""

    nt_name: ClassVar[str] = "Softplus"

    def __call__(self, x):
        return jax.nn.softplus(x)

    def derivative(self, x):
        return jax.nn.sigmoid(x)


class Elu(AbstractActivation):
    r""":math:`\phi(x) = x` for :math:`x > 0`, :math:`\alpha(e^x - 1)` otherwise."""

    alpha: Array
    nt_name: ClassVar[str] = "Elu"

    def __init__(self, alpha: ArrayLike = 1.0):
        self.alpha = _leaf(alpha, "alpha")

    def __call__(self, x):
        x = jnp.asarray(x)
        return jnp.where(x > 0, x, self.alpha * jnp.expm1(jnp.minimum(x, 0)))

    def derivative(self, x):
        x = jnp.asarray(x)
        return jnp.where(x > 0, 1.0, self.alpha * jnp.exp(jnp.minimum(x, 0)))


class Mish(AbstractActivation):
    r""":math:`\phi(x) = x\tanh(\operatorname{softplus}(x))` (Misra 2019)."""

    nt_name: ClassVar[str] = "Mish"

    def __call__(self, x):
        return x * jnp.tanh(jax.nn.softplus(x))


class Custom(AbstractActivation):
    r"""Any elementwise ``fn(x, params)``; ``params`` is a pytree of array leaves
    (differentiable and vmappable like every other activation parameter).

    Example:
        >>> import jax.numpy as jnp
        >>> act = Custom(lambda x, p: jnp.tanh(p["s"] * x), {"s": jnp.array(2.0)})
    """

    fn: Callable = eqx.field(static=True)
    params: Any = None

    def __call__(self, x):
        return self.fn(x, self.params)
