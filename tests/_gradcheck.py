"""Derivatives against finite differences in three compiled programs.

``jax.test_util.check_grads`` traces and compiles its function anew for nearly every evaluation
(measured: 16 compilations of a depth-3 kernel in one test's two calls, 35 s of compile), which
made it the most expensive line of several test modules. :func:`check_gradients` checks the same thing — forward-
and reverse-mode directional derivatives against central finite differences along random
directions — with ``f``, its gradient and its JVP each compiled once; :func:`check_gradients_batched`
does it in one program for a vmappable ``f``, with directions per group of arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_gradients(f, args, *, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6, directions=2, h=1e-4, seed=0):
    """Asserts that the derivatives of ``f`` at ``args`` match finite differences.

    ``f(*args)`` returns an array (reduced against a fixed random weight to a scalar); ``args`` are
    real arrays or floats. Along ``directions`` random unit directions ``v`` (over all arguments
    at once) the directional derivative from ``jax.jvp`` (``"fwd"``) and from ``jax.grad``
    (``"rev"``, as ``grad . v``) must equal the fourth-order central difference
    ``(-f(x+2hv) + 8 f(x+hv) - 8 f(x-hv) + f(x-2hv)) / 12h`` (error estimates: truncation
    ~h^4 f^(5), rounding ~eps |f| / h, about 2e-12 |f| in float64 at the default ``h``) to ``atol + rtol * |fd|``.
    """
    args = tuple(jnp.asarray(a, dtype=jnp.result_type(float)) if not hasattr(a, "dtype") else jnp.asarray(a)
                 for a in args)
    out0 = np.asarray(f(*args))
    weight = jnp.asarray(np.random.default_rng(seed + 1).uniform(0.5, 1.5, out0.shape), out0.dtype)

    def scalar(*a):
        return jnp.sum(f(*a) * weight)

    value = jax.jit(scalar)
    grad = jax.jit(jax.grad(scalar, argnums=tuple(range(len(args)))))
    jvp = jax.jit(lambda a, v: jax.jvp(scalar, a, v)[1])
    rng = np.random.default_rng(seed)
    for _ in range(directions):
        v = [rng.standard_normal(np.shape(a)) for a in args]
        norm = np.sqrt(sum(np.sum(x**2) for x in v))
        v = tuple(jnp.asarray(x / norm, a.dtype) for x, a in zip(v, args))

        def at(t):
            return float(value(*(a + t * x for a, x in zip(args, v))))

        fd = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
        tol = atol + rtol * abs(fd)
        if "rev" in modes:
            g = grad(*args)
            rev = float(sum(jnp.sum(gi * vi) for gi, vi in zip(g, v)))
            assert abs(rev - fd) <= tol, f"reverse mode: grad . v = {rev!r}, finite differences {fd!r}"
        if "fwd" in modes:
            fwd = float(jvp(args, v))
            assert abs(fwd - fd) <= tol, f"forward mode: jvp = {fwd!r}, finite differences {fd!r}"


def check_gradients_batched(f, args, groups, *, atol, rtol, directions=2, h=1e-4, seed=0):
    """:func:`check_gradients` in one compiled program instead of three or four (value, gradient and
    JVP each with its own forward pass: measured 4 to 7 compiles of a depth-3 kernel per activation),
    for an ``f`` that can be vmapped. The same check, per group of argument indices in ``groups``:
    ``directions`` random unit directions over those arguments; the JVP and grad . v must equal the
    fourth-order central difference within ``atol + rtol * |fd|``. The four shifted values of every
    direction are one vmapped evaluation in the same program."""
    args = tuple(jnp.asarray(a, dtype=jnp.result_type(float)) for a in args)
    shape = jax.eval_shape(f, *args).shape
    weight = jnp.asarray(np.random.default_rng(seed + 1).uniform(0.5, 1.5, shape))

    def scalar(*a):
        return jnp.sum(f(*a) * weight)

    rng = np.random.default_rng(seed)
    dirs = []
    for group in groups:
        for _ in range(directions):
            v = [rng.standard_normal(np.shape(a)) if i in group else np.zeros(np.shape(a)) for i, a in enumerate(args)]
            norm = np.sqrt(sum(np.sum(x**2) for x in v))
            dirs.append([x / norm for x in v])
    vs = tuple(jnp.asarray(np.stack([d[i] for d in dirs])) for i in range(len(args)))

    @jax.jit
    def program(args, vs):
        ts = jnp.array([2 * h, h, -h, -2 * h])
        # one vmap over all (direction, shift) pairs
        points = tuple((a[None, None] + ts.reshape((1, 4) + (1,) * a.ndim) * x[:, None]).reshape((-1,) + a.shape)
                       for a, x in zip(args, vs))
        shifted = jax.vmap(scalar)(*points).reshape(-1, 4)
        g = jax.grad(scalar, argnums=tuple(range(len(args))))(*args)
        rev = jax.vmap(lambda v: sum(jnp.sum(gi * vi) for gi, vi in zip(g, v)))(vs)
        fwd = jax.vmap(lambda v: jax.jvp(scalar, args, v)[1])(vs)
        return shifted, rev, fwd

    shifted, rev, fwd = (np.asarray(a) for a in program(args, vs))
    fd = (-shifted[:, 0] + 8 * shifted[:, 1] - 8 * shifted[:, 2] + shifted[:, 3]) / (12 * h)
    tol = atol + rtol * np.abs(fd)
    assert np.all(np.abs(rev - fd) <= tol), f"reverse mode: grad . v = {rev!r}, finite differences {fd!r}"
    assert np.all(np.abs(fwd - fd) <= tol), f"forward mode: jvp = {fwd!r}, finite differences {fd!r}"
