r"""The Gaussian integrals of online-SGD order-parameter equations.

For a soft committee machine with ``K`` student units (activation :math:`g`) and ``M`` teacher
units (activation :math:`\tilde g`) the local fields
:math:`u = (\lambda_1, \dots, \lambda_K, \nu_1, \dots, \nu_M)` are jointly Gaussian with
covariance :math:`C = \begin{pmatrix} Q & R \\ R^\top & T \end{pmatrix}`. Write
:math:`f_a = g` for student indices and :math:`f_a = \tilde g` for teacher indices. The
equations of Saad & Solla (1995, Phys. Rev. E 52, 4225, eqs. 9-13) and Biehl & Schwarze (1995,
J. Phys. A 28, 643) need

.. math::
    I_2(a, b) = \mathbb E[f_a(u_a) f_b(u_b)],\quad
    I_3(k, b, c) = \mathbb E[g'(u_k)\, u_b\, f_c(u_c)],\quad
    I_4(k, l, c, d) = \mathbb E[g'(u_k) g'(u_l) f_c(u_c) f_d(u_d)],\quad
    J_2(k, l) = \mathbb E[g'(u_k) g'(u_l)].

Closed forms (:class:`~rmtjax.gaussian.ClosedForm`) exist when student and teacher use the same
family: ``Erf(a, b, c)`` (Saad & Solla's :math:`\operatorname{erf}(x/\sqrt2)` is
``Erf(b=1/sqrt(2))``; every other scale and offset is reduced to it by rescaling the fields),
``Identity`` and ``Relu`` (:math:`I_2, I_3, J_2` in closed form; :math:`I_4` reduced by Stein's
lemma and Plackett's identity to bivariate orthant probabilities and one smooth integral over a
correlation path, evaluated by Gauss-Legendre quadrature). Every other activation (or a mixed
student/teacher pair) uses :class:`~rmtjax.gaussian.GaussHermite` tensor-product quadrature of
the same 2-, 3- and 4-dimensional expectations, with the sub-covariance factorised by its
eigendecomposition (so singular covariances, e.g. a student equal to its teacher, are fine).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._numerics import angle, atan2, gap, gauss_hermite, safe_div, safe_sqrt
from ..activations import AbstractActivation, Erf, Identity, Relu
from .._validate import as_real, check_range, static_int, symmetric_psd
from ..gaussian import AbstractMethod, Auto, ClosedForm, GaussHermite
from . import _checks

__all__ = ["Integrals", "committee_integrals", "has_closed_form", "pair_integrals"]


class Integrals(NamedTuple):
    """The Gaussian integrals of the committee-machine ODEs (``P = K + M`` fields).

    Attributes:
        i2: ``(P, P)``, :math:`\\mathbb E[f_a f_b]`.
        i3: ``(K, P, P)``, :math:`\\mathbb E[g'(u_k) u_b f_c]`.
        i4: ``(K, K, P, P)``, :math:`\\mathbb E[g'(u_k) g'(u_l) f_c f_d]`.
        j2: ``(K, K)``, :math:`\\mathbb E[g'(u_k) g'(u_l)]`.
    """

    i2: Array
    i3: Array
    i4: Array
    j2: Array


_CLOSED = (Erf, Relu, Identity)


def has_closed_form(student: AbstractActivation, teacher: AbstractActivation) -> bool:
    """Whether :func:`committee_integrals` has closed forms for this pair."""
    return type(student) is type(teacher) and type(student) in _CLOSED


# ------------------------------------------------------------------------------------------
# index tuples (static) and sub-covariances
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _tuples(K: int, P: int):
    t2 = np.array(list(itertools.product(range(P), range(P))), dtype=np.int32)
    t3 = np.array(list(itertools.product(range(K), range(P), range(P))), dtype=np.int32)
    t4 = np.array(list(itertools.product(range(K), range(K), range(P), range(P))), dtype=np.int32)
    j2 = np.array(list(itertools.product(range(K), range(K))), dtype=np.int32)
    return t2, t3, t4, j2


def _sub(C, idx):
    """``C[idx[n, i], idx[n, j]]`` for every tuple ``n``: shape ``(n, d, d)``."""
    return C[idx[:, :, None], idx[:, None, :]]


# ------------------------------------------------------------------------------------------
# closed forms
# ------------------------------------------------------------------------------------------


def _erf0_i2(C):
    # E[g0(u0) g0(u1)], g0 = erf(x / sqrt 2): (2/pi) arcsin(C01 / sqrt((1+C00)(1+C11)))
    p = (1 + C[:, 0, 0]) * (1 + C[:, 1, 1])
    return (2 / math.pi) * atan2(C[:, 0, 1], safe_sqrt(p - C[:, 0, 1] ** 2))


def _erf0_j2(C):
    # E[g0'(u0) g0'(u1)] = (2/pi) / sqrt((1+C00)(1+C11) - C01^2)
    return (2 / math.pi) / jnp.sqrt((1 + C[:, 0, 0]) * (1 + C[:, 1, 1]) - C[:, 0, 1] ** 2)


def _erf0_i3(C):
    # E[g0'(u0) u1 g0(u2)] = (2/pi) (C12 (1+C00) - C01 C02) / ((1+C00) sqrt(L3)),
    # L3 = (1+C00)(1+C22) - C02^2   (Saad & Solla 1995, eq. A3)
    a = 1 + C[:, 0, 0]
    l3 = a * (1 + C[:, 2, 2]) - C[:, 0, 2] ** 2
    return (2 / math.pi) * (C[:, 1, 2] * a - C[:, 0, 1] * C[:, 0, 2]) / (a * jnp.sqrt(l3))


def _erf0_i4(C):
    # E[g0'(u0) g0'(u1) g0(u2) g0(u3)] = 4 / (pi^2 sqrt(L4)) arcsin(L0 / sqrt(L1 L2))
    # (Saad & Solla 1995, eq. A4)
    a, b = 1 + C[:, 0, 0], 1 + C[:, 1, 1]
    c01, c02, c03 = C[:, 0, 1], C[:, 0, 2], C[:, 0, 3]
    c12, c13, c23 = C[:, 1, 2], C[:, 1, 3], C[:, 2, 3]
    l4 = a * b - c01**2
    l0 = l4 * c23 - c12 * c13 * a - c02 * c03 * b + c01 * c02 * c13 + c01 * c03 * c12
    l1 = l4 * (1 + C[:, 2, 2]) - c12**2 * a - c02**2 * b + 2 * c01 * c02 * c12
    l2 = l4 * (1 + C[:, 3, 3]) - c13**2 * a - c03**2 * b + 2 * c01 * c03 * c13
    return 4 / (math.pi**2 * jnp.sqrt(l4)) * atan2(l0, safe_sqrt(l1 * l2 - l0**2))


def _scale(C, s):
    return C * s[:, :, None] * s[:, None, :]


def _erf_closed(C2, C3, C4, Cj, idx2, idx3, idx4, idxj, student: Erf, teacher: Erf, K: int):
    # g = a erf(b x) + c = a g0(s x) + c with s = sqrt(2) b.
    def par(idx):  # per-position (a, s, c), shape (n, d)
        is_st = idx < K
        pick = lambda x, y: jnp.where(is_st, x, y)  # noqa: E731
        return (pick(student.a, teacher.a), pick(math.sqrt(2) * student.b, math.sqrt(2) * teacher.b),
                pick(student.c, teacher.c))

    a, s, c = par(idx2)
    i2 = a[:, 0] * a[:, 1] * _erf0_i2(_scale(C2, s)) + c[:, 0] * c[:, 1]
    a, s, _ = par(idxj)
    j2 = a[:, 0] * a[:, 1] * s[:, 0] * s[:, 1] * _erf0_j2(_scale(Cj, s))
    a, s, _ = par(idx3)
    s3 = s.at[:, 1].set(1.0)  # the middle field enters linearly and is not rescaled
    i3 = a[:, 0] * s[:, 0] * a[:, 2] * _erf0_i3(_scale(C3, s3))
    a, s, c = par(idx4)
    C4 = _scale(C4, s)
    pre = a[:, 0] * a[:, 1] * s[:, 0] * s[:, 1]
    i4 = pre * (a[:, 2] * a[:, 3] * _erf0_i4(C4) + c[:, 2] * c[:, 3] * _erf0_j2(C4))
    return i2, i3, i4, j2


# ReLU -------------------------------------------------------------------------------------


def _orthant2(c00, c11, c01):
    """P(u0 > 0, u1 > 0) = (pi - theta) / (2 pi)."""
    return (math.pi - angle(gap(c00, c11, c01), c01)) / (2 * math.pi)


def _density0(var):
    """Density of N(0, var) at 0 (0 for a vanishing variance, where the delta terms drop)."""
    return safe_div(1.0, safe_sqrt(2 * math.pi * var))


def _condition(C, i):
    """Covariance of the other fields given ``u_i = 0`` (Schur complement), shape (n, d-1, d-1)."""
    d = C.shape[-1]
    rest = [j for j in range(d) if j != i]
    Crr = C[:, rest][:, :, rest]
    ci = C[:, rest, i]
    return Crr - safe_div(ci[:, :, None] * ci[:, None, :], C[:, i, i][:, None, None])


def _relu_i3(C):
    # E[theta(u0) u1 relu(u2)] = C01 E[delta(u0) relu(u2)] + C12 E[theta(u0) theta(u2)]  (Stein)
    e_delta = safe_div(gap(C[:, 0, 0], C[:, 2, 2], C[:, 0, 2]), 2 * math.pi * C[:, 0, 0])
    return C[:, 0, 1] * e_delta + C[:, 1, 2] * _orthant2(C[:, 0, 0], C[:, 2, 2], C[:, 0, 2])


def _step_step_relu(C):
    # E[theta(u0) theta(u1) relu(u2)] = sum_j C2j E[d_j (theta0 theta1 theta2)]: each term is a
    # density at 0 times a bivariate orthant probability of the conditional law.
    out = 0.0
    for j in range(3):
        Cj = _condition(C, j)
        out = out + C[:, 2, j] * _density0(C[:, j, j]) * _orthant2(Cj[:, 0, 0], Cj[:, 1, 1], Cj[:, 0, 1])
    return out


def _orthant4(C, nodes: int = 24):
    r"""P(u > 0) in four dimensions by Plackett's identity along
    :math:`C(t) = \begin{pmatrix} A & tB \\ tB^\top & D\end{pmatrix}`:
    :math:`P(1) = P_2(A)P_2(D) + \int_0^1 \sum_{i\in\{0,1\}, j\in\{2,3\}} B_{ij}\,
    \varphi_{ij}(0,0)\,P_2(\text{rest} \mid u_i = u_j = 0)\,dt` (Gauss-Legendre)."""
    # t = 1 - s^2 absorbs the (1 - t)^(-1/2) endpoint singularity of nearly collinear fields
    x, w = np.polynomial.legendre.leggauss(nodes)
    s = 0.5 * (x + 1)
    t = jnp.asarray(1 - s * s, C.dtype)
    w = jnp.asarray(w * s, C.dtype)
    p0 = _orthant2(C[:, 0, 0], C[:, 1, 1], C[:, 0, 1]) * _orthant2(C[:, 2, 2], C[:, 3, 3], C[:, 2, 3])
    mask = np.zeros((4, 4))
    mask[:2, 2:] = mask[2:, :2] = 1.0
    mask = jnp.asarray(mask, C.dtype)

    def integrand(tt):
        Ct = C * (1 - mask[None] + tt * mask[None])
        acc = 0.0
        for i, j in ((0, 2), (0, 3), (1, 2), (1, 3)):
            rest = [k for k in range(4) if k not in (i, j)]
            S = Ct[:, [i, j]][:, :, [i, j]]
            det = S[:, 0, 0] * S[:, 1, 1] - S[:, 0, 1] ** 2
            dens = safe_div(1.0, 2 * math.pi * safe_sqrt(det))
            X = Ct[:, rest][:, :, [i, j]]  # (n, 2, 2)
            inv = jnp.stack([jnp.stack([S[:, 1, 1], -S[:, 0, 1]], -1),
                             jnp.stack([-S[:, 0, 1], S[:, 0, 0]], -1)], -2)
            inv = safe_div(inv, det[:, None, None])
            cond = Ct[:, rest][:, :, rest] - X @ inv @ jnp.swapaxes(X, 1, 2)
            acc = acc + C[:, i, j] * dens * _orthant2(cond[:, 0, 0], cond[:, 1, 1], cond[:, 0, 1])
        return acc

    vals = jax.vmap(integrand)(t)  # (nodes, n)
    return p0 + w @ vals


def _relu_i4(C):
    # E[theta0 theta1 relu(u2) relu(u3)]: Stein on u2 (relu(u2) = u2 theta2):
    #   sum_{j != 2} C2j E[delta_j ...] + C22 E[theta0 theta1 delta2 relu(u3)] + C23 E[theta0..theta3]
    # each delta term = density at 0 times a three-dimensional E[theta theta relu] of the
    # conditional law (closed form above), the last one a four-dimensional orthant probability.
    out = C[:, 2, 3] * _orthant4(C)
    for j in range(3):
        Cj = _condition(C, j)  # remaining fields, relu(u3) last
        out = out + C[:, 2, j] * _density0(C[:, j, j]) * _step_step_relu(Cj)
    return out


def _orthant3(C):
    """P(u0 > 0, u1 > 0, u2 > 0) = 1/2 - (theta_01 + theta_02 + theta_12) / (4 pi), theta_ij the
    angle between the fields (1/8 + sum arcsin(rho_ij) / (4 pi))."""
    th = sum(angle(gap(C[:, i, i], C[:, j, j], C[:, i, j]), C[:, i, j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    return 0.5 - th / (4 * math.pi)


def _step_relu(S):
    """E[theta(u0) relu(u1)] = (S01 / sqrt(2 pi S00) + sqrt(S11 / (2 pi))) / 2 (Stein on u1; the
    conditional means vanish, so each orthant factor is 1/2)."""
    return 0.5 * (safe_div(S[:, 0, 1], safe_sqrt(2 * math.pi * S[:, 0, 0])) + safe_sqrt(S[:, 1, 1] / (2 * math.pi)))


def _relu_trr(C):
    # E[theta0 relu1 relu2]: Stein on u1 (relu1 = u1 theta1):
    #   C10 E[delta0 theta1 relu2] + C11 E[theta0 delta1 relu2] + C12 E[theta0 theta1 theta2]
    return (C[:, 1, 0] * _density0(C[:, 0, 0]) * _step_relu(_condition(C, 0))
            + C[:, 1, 1] * _density0(C[:, 1, 1]) * _step_relu(_condition(C, 1))
            + C[:, 1, 2] * _orthant3(C))


def _relu_ttr2(C):
    # E[theta0 theta1 relu2^2] = E[u2 (u2 theta0 theta1 theta2)]: Stein on u2 (u2 delta2 = 0):
    #   C22 P(u > 0) + C20 E[delta0 theta1 relu2] + C21 E[theta0 delta1 relu2]
    c0, c1 = _condition(C, 0), _condition(C, 1)  # fields (1, 2) given u0 = 0 / (0, 2) given u1 = 0
    return (C[:, 2, 2] * _orthant3(C) + C[:, 2, 0] * _density0(C[:, 0, 0]) * _step_relu(c0)
            + C[:, 2, 1] * _density0(C[:, 1, 1]) * _step_relu(c1))


def _relu_tr2(C):
    # E[theta0 relu1^2] = C11 P(u0 > 0, u1 > 0) + C10 E[delta0 relu1]
    #                   = C11 (pi - theta) / (2 pi) + C10 sqrt(C00 C11 - C01^2) / (2 pi C00)
    return (C[:, 1, 1] * _orthant2(C[:, 0, 0], C[:, 1, 1], C[:, 0, 1])
            + C[:, 1, 0] * safe_div(gap(C[:, 0, 0], C[:, 1, 1], C[:, 0, 1]), 2 * math.pi * C[:, 0, 0]))


def _relu_rr(C):
    return Relu().dual(C[:, 0, 0], C[:, 1, 1], C[:, 0, 1])[0]


def _reduce_relu_tuple(row) -> tuple[str, tuple[int, ...]]:
    """The product theta(u_k) theta(u_l) relu(u_c) relu(u_d) of ``row = (k, l, c, d)`` on its
    distinct fields (theta theta = theta, theta relu = relu, relu relu = relu^2): the kind of
    expectation and the fields in its canonical order (steps, then relus)."""
    th: dict[int, int] = {}
    re: dict[int, int] = {}
    for i in row[:2]:
        th[i] = 1
    for i in row[2:]:
        re[i] = re.get(i, 0) + 1
    steps = tuple(i for i in dict.fromkeys(row[:2]) if i not in re)
    ones = tuple(i for i in dict.fromkeys(row[2:]) if re[i] == 1)
    twos = tuple(i for i in dict.fromkeys(row[2:]) if re[i] == 2)
    kind = "t" * len(steps) + "r" * len(ones) + "R" * len(twos)
    return kind, steps + ones + twos


_RELU_KINDS = {"ttrr": None, "trr": _relu_trr, "ttR": _relu_ttr2, "tR": _relu_tr2, "rr": _relu_rr,
               "R": lambda C: 0.5 * C[:, 0, 0]}


def _relu_i4_exact(C, idx4, jitter):
    """I4 for ReLU: tuples with repeated fields reduced exactly to lower-dimensional closed forms
    (static patterns); only tuples on four distinct fields go through the four-dimensional
    reduction :func:`_relu_i4`, with a relative ``jitter`` on their diagonal (it separates fields
    that coincide numerically, e.g. a student unit equal to a teacher unit)."""
    groups: dict[str, tuple[list, list]] = {}
    for n, row in enumerate(idx4.tolist()):
        kind, fields = _reduce_relu_tuple(row)
        rows, sub = groups.setdefault(kind, ([], []))
        rows.append(n)
        sub.append(fields)
    out = jnp.zeros(len(idx4), C.dtype)
    for kind, (rows, fields) in groups.items():
        Csub = _sub(C, np.asarray(fields, dtype=np.int32))
        if kind == "ttrr":
            vals = _relu_i4(Csub + jitter * jnp.eye(4, dtype=C.dtype)[None])
        else:
            vals = _RELU_KINDS[kind](Csub)
        out = out.at[np.asarray(rows)].set(vals)
    return out


def _relu_closed(C, C2, C3, idx4, Cj):
    i2 = _relu_rr(C2)
    j2 = _orthant2(Cj[:, 0, 0], Cj[:, 1, 1], Cj[:, 0, 1])
    # relative jitter: 1e-10 in float64 (changes the four-field integrals by ~1e-7), 100 eps in
    # lower precisions, where 1e-10 would be lost to rounding
    rel = max(1e-10, 100 * float(jnp.finfo(C.dtype).eps))
    jitter = rel * jnp.mean(jnp.diagonal(C))
    return i2, _relu_i3(C3), _relu_i4_exact(C, idx4, jitter), j2


# ------------------------------------------------------------------------------------------
# Gauss-Hermite quadrature (any activation)
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _grid(deg: int, d: int):
    z, w = gauss_hermite(deg)
    Z = np.stack(np.meshgrid(*([z] * d), indexing="ij"), -1).reshape(-1, d)
    W = np.prod(np.stack(np.meshgrid(*([w] * d), indexing="ij"), -1).reshape(-1, d), -1)
    return Z, W


def _gh(Csub, fns, deg: int):
    """``E[prod_i fns[i](u_i)]`` for ``u ~ N(0, Csub[n])``; ``fns[i](u)`` gets the field values
    ``(n, nodes)``. The covariance is factorised by ``eigh`` (positive semi-definite is enough)."""
    d = Csub.shape[-1]
    Z, W = _grid(deg, d)
    Z, W = jnp.asarray(Z, Csub.dtype), jnp.asarray(W, Csub.dtype)
    lam, V = jnp.linalg.eigh(Csub)
    L = V * safe_sqrt(lam)[:, None, :]  # (n, d, d)
    U = jnp.einsum("pd,nid->nip", Z, L)  # (n, d, nodes)
    prod = fns[0](U[:, 0])
    for i in range(1, d):
        prod = prod * fns[i](U[:, i])
    return prod @ W


def _gh_tuples(C, idx, kinds, student, teacher, K: int, deg: int):
    """Quadrature of ``E[prod_p f_{kinds[p]}(u_{idx[n, p]})]`` for every tuple ``n``. Tuples with
    repeated fields (``I4[k, k, c, d]``, ...) are integrated over their distinct fields only:
    the tuples are grouped by their (static) pattern of repeats, so each group gets an exact
    lower-dimensional Gauss-Hermite rule instead of a rotated, degenerate one."""
    def fn(kind, is_student):
        if kind == "d":
            return student.derivative
        if kind == "x":
            return lambda u: u
        st = jnp.asarray(is_student)[:, None]
        return lambda u: jnp.where(st, student(u), teacher(u))

    patterns = {}
    for n, row in enumerate(idx):
        uniq = list(dict.fromkeys(row.tolist()))
        patterns.setdefault(tuple(uniq.index(i) for i in row), []).append(n)
    out = jnp.zeros(len(idx), C.dtype)
    for pat, rows in patterns.items():
        rows = np.asarray(rows)
        d = max(pat) + 1
        first = [pat.index(j) for j in range(d)]  # a position holding each distinct field
        fields = idx[rows][:, first]  # (n_g, d)
        Csub = C[fields[:, :, None], fields[:, None, :]]
        per_slot = []
        for j in range(d):
            fs = [fn(kinds[p], idx[rows, p] < K) for p in range(len(pat)) if pat[p] == j]
            per_slot.append(lambda u, fs=fs: functools.reduce(lambda a, f: a * f(u), fs[1:], fs[0](u)))
        out = out.at[rows].set(_gh(Csub, per_slot, deg))
    return out


def _quadrature(C, idx2, idx3, idx4, idxj, student, teacher, K, deg):
    q = functools.partial(_gh_tuples, C, student=student, teacher=teacher, K=K, deg=deg)
    return q(idx2, "ff"), q(idx3, "dxf"), q(idx4, "ddff"), q(idxj, "dd")


# ------------------------------------------------------------------------------------------
# public entry
# ------------------------------------------------------------------------------------------


def _check_covariance(C, num_student, student, teacher, method, four_dimensional=True):
    """The (P, P) covariance of the local fields (real, finite, symmetric positive semi-definite up
    to rounding), ``1 <= num_student < P`` (static), the activations and the method."""
    C = as_real(C, "C", ndim=2)
    if C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be a square (P, P) covariance, got shape {C.shape}")
    K = static_int(num_student, "num_student", lo=1)
    if not K < C.shape[0]:
        raise ValueError(f"num_student must be in [1, P) with P = {C.shape[0]} (at least one teacher field), got {K}")
    C = symmetric_psd(check_range(C, "C"), "C")
    _checks.activation(student, "student")
    _checks.activation(teacher, "teacher")
    method = _checks.method(method, four_dimensional=four_dimensional)
    if isinstance(method, ClosedForm) and not has_closed_form(student, teacher):
        raise ValueError(f"method: no closed-form committee integrals for student {type(student).__name__} and "
                         f"teacher {type(teacher).__name__}; use method=GaussHermite(deg) (or Auto())")
    return C, K, method


def committee_integrals(
    C: ArrayLike,
    student: AbstractActivation,
    teacher: AbstractActivation,
    *,
    num_student: int,
    method: AbstractMethod = Auto(),
) -> Integrals:
    r"""All :math:`I_2, I_3, I_4, J_2` for the field covariance ``C`` (see the module docstring).

    Args:
        C: ``(P, P)`` covariance of :math:`(\lambda_1..\lambda_K, \nu_1..\nu_M)`.
        student, teacher: activations :math:`g`, :math:`\tilde g`.
        num_student: ``K`` (static).
        method: :class:`~rmtjax.gaussian.Auto` (closed form where available, else
            ``GaussHermite(10)``), :class:`~rmtjax.gaussian.ClosedForm` or
            :class:`~rmtjax.gaussian.GaussHermite`. The tensor-product rule costs ``deg**4`` points for
            the 4-dimensional integrals, and it converges slowly for activations with complex poles
            near the real axis: for :math:`E[g'(x)^2 g(x)^2]`, :math:`g = \tanh`, relative errors of
            ``deg = 10`` are 2e-3 / 8% / 29% at field variance 0.2 / 0.55 / 1, of ``deg = 30``
            1e-8 / 1e-4 / 5e-3. The default suits small fields only: pass ``GaussHermite(30)`` (or
            more) for O(1) variances, and check convergence in ``deg``.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Erf
        >>> g = Erf(b=2 ** -0.5)
        >>> ints = committee_integrals(jnp.eye(2), g, g, num_student=1)
        >>> round(float(ints.i2[0, 0]), 6)  # (2/pi) arcsin(1/2) = 1/3
        0.333333
    """
    C, K, method = _check_covariance(C, num_student, student, teacher, method)
    return _integrals(C, student, teacher, K, method)


@eqx.filter_jit
def _integrals(C, student, teacher, K: int, method: AbstractMethod) -> Integrals:
    P = C.shape[0]
    idx2, idx3, idx4, idxj = _tuples(K, P)
    C2, C3, C4, Cj = (_sub(C, i) for i in (idx2, idx3, idx4, idxj))
    closed = has_closed_form(student, teacher)
    if isinstance(method, Auto):
        method = ClosedForm() if closed else GaussHermite(10)
    if isinstance(method, ClosedForm):
        if not closed:
            raise ValueError(
                f"method: no closed-form committee integrals for student {type(student).__name__} and teacher "
                f"{type(teacher).__name__}; use method=GaussHermite(deg)")
        if isinstance(student, Erf):
            out = _erf_closed(C2, C3, C4, Cj, idx2, idx3, idx4, idxj, student, teacher, K)
        elif isinstance(student, Identity):
            out = (C2[:, 0, 1], C3[:, 1, 2], C4[:, 2, 3], jnp.ones_like(Cj[:, 0, 1]))
        else:
            out = _relu_closed(C, C2, C3, idx4, Cj)
    elif isinstance(method, GaussHermite):
        out = _quadrature(C, idx2, idx3, idx4, idxj, student, teacher, K, method.deg)
    else:
        raise ValueError(f"method must be Auto(), ClosedForm() or GaussHermite(deg), got {method!r}")
    i2, i3, i4, j2 = out
    return Integrals(i2.reshape(P, P), i3.reshape(K, P, P), i4.reshape(K, K, P, P), j2.reshape(K, K))


def pair_integrals(
    C: ArrayLike,
    student: AbstractActivation,
    teacher: AbstractActivation,
    *,
    num_student: int,
    method: AbstractMethod = Auto(),
) -> Array:
    r"""Only :math:`I_2(a, b) = \mathbb E[f_a(u_a) f_b(u_b)]`, ``(P, P)``: all that
    :math:`\epsilon_g` needs (cheaper to compile and run than :func:`committee_integrals`).

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Erf
        >>> g = Erf(b=2 ** -0.5)
        >>> round(float(pair_integrals(jnp.eye(2), g, g, num_student=1)[0, 1]), 6)
        0.0
    """
    C, K, method = _check_covariance(C, num_student, student, teacher, method, four_dimensional=False)
    return _pair(C, student, teacher, K, method)


@eqx.filter_jit
def _pair(C, student, teacher, K: int, method: AbstractMethod) -> Array:
    P = C.shape[0]
    idx2 = _tuples(K, P)[0]
    C2 = _sub(C, idx2)
    closed = has_closed_form(student, teacher)
    if isinstance(method, Auto):
        method = ClosedForm() if closed else GaussHermite(10)
    if isinstance(method, ClosedForm):
        if not closed:
            raise ValueError(
                f"method: no closed-form committee integrals for student {type(student).__name__} and teacher "
                f"{type(teacher).__name__}; use method=GaussHermite(deg)")
        if isinstance(student, Erf):
            is_st = idx2 < K
            pick = lambda x, y: jnp.where(is_st, x, y)  # noqa: E731
            a, s, c = (pick(student.a, teacher.a), pick(math.sqrt(2) * student.b, math.sqrt(2) * teacher.b),
                       pick(student.c, teacher.c))
            i2 = a[:, 0] * a[:, 1] * _erf0_i2(_scale(C2, s)) + c[:, 0] * c[:, 1]
        elif isinstance(student, Identity):
            i2 = C2[:, 0, 1]
        else:
            i2 = Relu().dual(C2[:, 0, 0], C2[:, 1, 1], C2[:, 0, 1])[0]
    elif isinstance(method, GaussHermite):
        i2 = _gh_tuples(C, idx2, "ff", student, teacher, K, method.deg)
    else:
        raise ValueError(f"method must be Auto(), ClosedForm() or GaussHermite(deg), got {method!r}")
    return i2.reshape(P, P)
