"""Independent references: adaptive scipy quadrature of bivariate Gaussian expectations."""

from __future__ import annotations

import math

from scipy import integrate

_LIM = 12.0


def _npdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def quad_expectation(f, g, q1, q2, q12, kinks=(0.0,), tol=1e-13):
    """E[f(u) g(v)], (u, v) ~ N(0, [[q1, q12], [q12, q2]]), by nested adaptive quadrature.

    ``f, g`` are scalar Python functions; ``kinks`` are the points where they are not smooth
    (the integration splits there). Accurate to ~1e-12 for the moderate parameters of the tests.
    """
    r1, r2 = math.sqrt(q1), math.sqrt(q2)
    rho = 0.0 if q1 * q2 == 0 else max(-1.0, min(1.0, q12 / (r1 * r2)))
    s = math.sqrt(max(1 - rho * rho, 0.0))

    def inner(z1):
        if s < 1e-12:
            return g(r2 * rho * z1)
        pts = []
        for k in kinks:
            if r2 > 0:
                z = (k / r2 - rho * z1) / s
                if -_LIM < z < _LIM:
                    pts.append(z)
        val, _ = integrate.quad(lambda z2: g(r2 * (rho * z1 + s * z2)) * _npdf(z2), -_LIM, _LIM,
                                points=sorted(pts) or None, epsabs=tol, epsrel=tol, limit=400)
        return val

    pts = [k / r1 for k in kinks if r1 > 0 and -_LIM < k / r1 < _LIM]
    val, _ = integrate.quad(lambda z1: f(r1 * z1) * inner(z1) * _npdf(z1), -_LIM, _LIM,
                            points=sorted(pts) or None, epsabs=tol, epsrel=tol, limit=400)
    return val


def quad_expectation_1d(f, q, tol=1e-14):
    """E[f(sqrt(q) z)], z ~ N(0, 1)."""
    r = math.sqrt(q)
    val, _ = integrate.quad(lambda z: f(r * z) * _npdf(z), -_LIM, _LIM, points=[0.0], epsabs=tol, epsrel=tol, limit=400)
    return val


# ---------------------------------------------------------------------------------------------
# High-precision references (mpmath, 60 digits): the textbook formulas, whose cancellations are
# harmless at this precision, and exact moment sums. Independent of rmtjax's stable rewrites.
# ---------------------------------------------------------------------------------------------

import mpmath as mp  # noqa: E402

DPS = 60


def mp_erf_dual(a, b, c, q1, q2, q12):
    """Williams (1997): E[phi phi], E[phi' phi'] for phi = a erf(b x) + c, textbook form."""
    with mp.workdps(DPS):
        a, b, c, q1, q2, q12 = map(mp.mpf, (a, b, c, q1, q2, q12))
        b2 = b * b
        prod = (1 + 2 * b2 * q1) * (1 + 2 * b2 * q2)
        k = 2 * a * a / mp.pi * mp.asin(2 * b2 * q12 / mp.sqrt(prod)) + c * c
        kdot = 4 * a * a * b2 / (mp.pi * mp.sqrt(prod - 4 * b2 * b2 * q12 * q12))
        return float(k), float(kdot)


def mp_gelu_dual(q1, q2, q12):
    """Tsuchida et al. (2020): the exact-GELU dual in its textbook form (neural-tangents')."""
    with mp.workdps(DPS):
        q1, q2, q12 = map(mp.mpf, (q1, q2, q12))
        pp1 = (1 + q1) * (1 + q2)
        d2 = pp1 - q12 * q12
        d = mp.sqrt(d2)
        ang = mp.atan2(q12, d)
        k = ((q12 * q12 + q1 * q2 * d2) / (pp1 * d) + q12 * ang) / (2 * mp.pi) + q12 / 4
        kdot = (1 / d2 + (1 - q1 * q2) / pp1 + 1) * q12 / d / (2 * mp.pi) + mp.mpf(1) / 4 + ang / (2 * mp.pi)
        return float(k), float(kdot)


def _dfact(n):
    """(n)!! as an exact integer ((-1)!! = 0!! = 1)."""
    out = 1
    while n > 1:
        out *= n
        n -= 2
    return out


def _moment(a, b, q1, q2, q12):
    """E[u^a v^b] by Isserlis' theorem: pair k of the u's with k of the v's, the rest among
    themselves (exact integer combinatorics, mpmath powers of q)."""
    import math

    total = mp.mpf(0)
    for k in range(a % 2, min(a, b) + 1, 2):
        if (b - k) % 2:
            continue
        c = math.comb(a, k) * math.comb(b, k) * math.factorial(k) * _dfact(a - k - 1) * _dfact(b - k - 1)
        total += c * q1 ** ((a - k) // 2) * q2 ** ((b - k) // 2) * q12**k
    return total


def mp_poly_expectation(coef, q1, q2, q12, scale=1):
    """``scale * E[p(u) p(v)]`` for p = sum_n coef[n] x^n, exactly: ``coef`` are Python integers
    or floats (converted exactly), the sum runs at 60 + 3 * degree digits so that the
    cancellations of alternating coefficients (Hermite polynomials) are harmless."""
    with mp.workdps(DPS + 3 * len(coef)):
        coef = [mp.mpf(c) for c in coef]
        q1, q2, q12 = map(mp.mpf, (q1, q2, q12))
        total = sum(ca * cb * _moment(i, j, q1, q2, q12)
                    for i, ca in enumerate(coef) if ca for j, cb in enumerate(coef) if cb)
        return float(total * scale)


def hermite_int_coef(n):
    """Integer monomial coefficients of He_n: (-1)^m n! / (m! (n-2m)! 2^m) at x^(n-2m)."""
    import math

    c = [0] * (n + 1)
    for m in range(n // 2 + 1):
        c[n - 2 * m] = (-1) ** m * math.factorial(n) // (math.factorial(m) * math.factorial(n - 2 * m) * 2**m)
    return c


def mp_hermite_dual(n, q1, q2, q12):
    """E[h_n(u) h_n(v)] and E[h_n'(u) h_n'(v)] for h_n = He_n / sqrt(n!) (exact integer
    coefficients, high-precision sums)."""
    import math

    c = hermite_int_coef(n)
    dc = [i * ci for i, ci in enumerate(c)][1:] or [0]
    inv = mp.mpf(1) / math.factorial(n)
    with mp.workdps(DPS + 3 * n):
        return (mp_poly_expectation(c, q1, q2, q12, scale=inv), mp_poly_expectation(dc, q1, q2, q12, scale=inv))


def mp_rect_moment(n, q1, q2, q12):
    """E[u_+^n v_+^n] by Cho & Saul's Stein recursion G_{a,b} = (a-1) G_{a-2,b} + b rho G_{a-1,b-1}
    (plus boundary terms) in 60 + 8 n digit arithmetic, where its cancellations (about
    n log10(1/(1 + rho)) digits for rho near -1) are harmless."""
    with mp.workdps(DPS + 8 * n):
        q1, q2, q12 = map(mp.mpf, (q1, q2, q12))
        p = mp.sqrt(q1 * q2)
        rho = q12 / p
        s = mp.sqrt(1 - rho * rho)
        theta = mp.acos(rho)
        phi0 = 1 / mp.sqrt(2 * mp.pi)
        pos = lambda k: 2 ** (mp.mpf(k) / 2) * mp.gamma(mp.mpf(k + 1) / 2) / (2 * mp.sqrt(mp.pi))  # noqa: E731
        memo = {}

        def g(a, b):
            if a < b:
                a, b = b, a
            if (a, b) in memo:
                return memo[(a, b)]
            if a == 0:
                out = (mp.pi - theta) / (2 * mp.pi)
            elif a == 1:
                out = phi0 * (1 + rho) / 2 if b == 0 else phi0 * pos(b) * s**b + b * rho * g(0, b - 1)
            else:
                out = (a - 1) * g(a - 2, b)
                out += b * rho * g(a - 1, b - 1) if b >= 1 else rho * phi0 * pos(a - 1) * s ** (a - 1)
            memo[(a, b)] = out
            return out

        return float(p**n * g(n, n))
