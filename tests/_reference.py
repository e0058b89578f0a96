"""Independent references: adaptive scipy quadrature of bivariate Gaussian expectations."""

from __future__ import annotations

import math

import numpy as np
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
