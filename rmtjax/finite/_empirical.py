r"""Empirical kernels of finite networks, their Monte-Carlo averages, and input Jacobians.

For a network :math:`f(\theta, x) \in \mathbb R^k` with parameters :math:`\theta`:

* empirical NNGP (one draw): :math:`\hat K(x, x') = \frac1k \sum_c f_c(x) f_c(x')`, whose
  expectation over initialisations tends to the NNGP as the widths grow (Neal 1996; Lee et al.
  2018);
* empirical NTK (Jacot et al. 2018, eq. 3), traced over the outputs:
  :math:`\hat\Theta(x, x') = \frac1k \sum_c \langle \partial_\theta f_c(x), \partial_\theta
  f_c(x')\rangle`, which converges to the infinite-width NTK with fluctuations
  :math:`O(n^{-1/2})` in the width (Hanin & Nica 2020; Dyer & Gur-Ari 2020).

Two implementations of the NTK, equal to rounding (Novak et al. 2022, "Fast Finite Width Neural
Tangent Kernel", §3): ``"jacobian"`` materialises :math:`J(x) \in \mathbb R^{n k \times P}` and
contracts, costing :math:`(n_1 + n_2) k P` memory; ``"products"`` never stores a Jacobian and
computes each column :math:`\Theta e_{j,c} = J_1 (J_2^\top e_{j,c})` as one VJP and one JVP
(:math:`O(P)` memory, :math:`n_2 k` passes). ``"auto"`` takes the Jacobian when it fits in
``max_bytes``.

:func:`monte_carlo_kernels` averages both over an :class:`~rmtjax.finite.Ensemble` and reports
the standard errors of the means.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._validate import check_finite_array, check_matrix, choice, flag, static_int
from ..kernels import Kernel
from ..nt._empirical import _nngp as _nt_nngp
from ..nt._empirical import _ntk_jacobian as _nt_ntk_jacobian
from ._network import Ensemble

__all__ = ["MonteCarloKernel", "empirical_nngp", "ensemble_kernels", "empirical_ntk", "input_jacobian", "monte_carlo_kernels"]

_IMPLEMENTATIONS = ("auto", "jacobian", "products")


class MonteCarloKernel(NamedTuple):
    """Ensemble averages of the empirical kernels and their Monte-Carlo standard errors.

    Attributes:
        nngp, ntk: means over the ensemble, ``(n1, n2)`` (``ntk`` is ``None`` when not computed).
        nngp_stderr, ntk_stderr: standard errors of those means, ``std(ddof=1) / sqrt(samples)``.
        samples: ensemble size.
    """

    nngp: Array
    ntk: Array | None
    nngp_stderr: Array
    ntk_stderr: Array | None
    samples: int


def _inputs(x1, x2):
    x1 = check_finite_array(check_matrix(x1, "x1"), "x1")
    if x2 is None:
        return x1, None
    x2 = check_finite_array(check_matrix(x2, "x2"), "x2")
    if x2.shape[1] != x1.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of features, got {x1.shape[1]} and {x2.shape[1]}")
    return x1, x2


def _check_implementation(implementation):
    choice(implementation, "implementation", _IMPLEMENTATIONS)


def _check_network(apply_fn, params, x):
    """``apply_fn(params, x)`` must be a function returning ``(n, k)`` floats for ``x`` ``(n, d)``."""
    if not callable(apply_fn):
        raise ValueError(f"apply_fn must be a function apply_fn(params, x), got {type(apply_fn).__name__}")
    try:
        out = jax.eval_shape(apply_fn, params, x)
    except Exception as e:  # noqa: BLE001 - params that do not fit apply_fn, x of the wrong width
        raise ValueError(f"apply_fn(params, x) cannot be evaluated for x of shape {x.shape}: {e}") from None
    if not (hasattr(out, "shape") and len(out.shape) == 2 and out.shape[0] == x.shape[0]
            and jnp.issubdtype(out.dtype, jnp.floating)):
        raise ValueError(f"apply_fn(params, x) must return floating outputs of shape (n, k) = ({x.shape[0]}, k), got "
                         f"{getattr(out, 'shape', out)}")


def _config(max_bytes, batch_size):
    return static_int(max_bytes, "max_bytes", lo=1), static_int(batch_size, "batch_size", lo=1, hi=2**31 - 1)


# The traced (n1, n2) kernels are the general empirical kernels of rmtjax.nt with trace_axes=(-1,):
# one engine for both (rmtjax.nt handles any output shape, trace/diagonal axes and vmap_axes).
def _nngp(x1, x2, apply_fn, params):
    return _nt_nngp(apply_fn, (-1,), (), x1, x2, params, ({}, {}))


def _ntk_jacobian(x1, x2, apply_fn, params):
    return _nt_ntk_jacobian(apply_fn, (-1,), (), None, x1, x2, params, ({}, {}))


def _ntk_products(x1, x2, apply_fn, params, batch_size):
    xb = x1 if x2 is None else x2
    out = jax.eval_shape(apply_fn, params, xb)
    n2, k = out.shape
    _, vjp = jax.vjp(lambda p: apply_fn(p, xb), params)

    def column(jc):  # Theta[:, j] for output c: J1 (J2^T e_{j,c}), then keep component c
        j, c = jc[0], jc[1]
        ct = jnp.zeros(out.shape, out.dtype).at[j, c].set(1.0)
        (tangent,) = vjp(ct)
        col = jax.jvp(lambda p: apply_fn(p, x1), (params,), (tangent,))[1]
        return col[:, c]

    jc = jnp.stack(jnp.meshgrid(jnp.arange(n2), jnp.arange(k), indexing="ij"), axis=-1).reshape(n2 * k, 2)
    cols = jax.lax.map(column, jc, batch_size=min(batch_size, n2 * k))  # (n2 k, n1)
    return jnp.sum(cols.reshape(n2, k, -1), axis=1).T / k


def _choose(implementation, x1, x2, apply_fn, params, max_bytes):
    if implementation != "auto":
        return implementation
    n_params = sum(math.prod(np.shape(a)) for a in jax.tree_util.tree_leaves(params))
    out = jax.eval_shape(apply_fn, params, x1)
    n = x1.shape[0] + (0 if x2 is None else x2.shape[0])
    jac_bytes = n * out.shape[1] * n_params * jnp.dtype(out.dtype).itemsize
    return "jacobian" if jac_bytes <= max_bytes else "products"


_nngp_jit = eqx.filter_jit(_nngp)


@eqx.filter_jit
def _ntk(x1, x2, apply_fn, params, implementation, batch_size):
    if implementation == "jacobian":
        return _ntk_jacobian(x1, x2, apply_fn, params)
    return _ntk_products(x1, x2, apply_fn, params, batch_size)


def empirical_nngp(
    x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"] | None, apply_fn: Callable, params: Any
) -> Float[Array, "n1 n2"]:
    r"""One network's output Gram matrix :math:`\frac1k f(x_1) f(x_2)^\top` (one Monte-Carlo
    draw of the NNGP; average over initialisations with :func:`monte_carlo_kernels`).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from rmtjax.finite import MLP, functional
        >>> from rmtjax.kernels import FullyConnected
        >>> apply, params = functional(MLP(FullyConnected(1), 3, width=8, rngs=nnx.Rngs(0)))
        >>> empirical_nngp(jnp.ones((2, 3)), None, apply, params).shape
        (2, 2)
    """
    x1, x2 = _inputs(x1, x2)
    _check_network(apply_fn, params, x1)
    return _finite(_nngp_jit(x1, x2, apply_fn, params), "empirical_nngp")


def empirical_ntk(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None,
    apply_fn: Callable,
    params: Any,
    *,
    implementation: str = "auto",
    max_bytes: int = 2**28,
    batch_size: int = 64,
) -> Float[Array, "n1 n2"]:
    r"""One network's NTK :math:`\frac1k\sum_c J_c(x_1) J_c(x_2)^\top`, traced over outputs.

    Args:
        x1, x2: inputs ``(n1, d)``, ``(n2, d)`` (``x2=None``: ``x1``).
        apply_fn, params: the network as ``apply_fn(params, x) -> (n, k)`` (see
            :func:`~rmtjax.finite.functional`); ``params`` is any pytree of arrays.
        implementation: ``"jacobian"`` (contract materialised Jacobians), ``"products"``
            (one VJP + one JVP per column, no Jacobian stored) or ``"auto"`` (the Jacobian when
            ``(n1 + n2) k P`` entries fit in ``max_bytes``).
        max_bytes: memory budget of the Jacobians for ``"auto"``.
        batch_size: columns computed at once by ``"products"``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from rmtjax.finite import MLP, functional
        >>> from rmtjax.kernels import FullyConnected
        >>> apply, params = functional(MLP(FullyConnected(2), 3, width=64, rngs=nnx.Rngs(0)))
        >>> x = jnp.eye(3)
        >>> a = empirical_ntk(x, None, apply, params, implementation="jacobian")
        >>> b = empirical_ntk(x, None, apply, params, implementation="products")
        >>> bool(jnp.allclose(a, b))
        True
    """
    _check_implementation(implementation)
    max_bytes, batch_size = _config(max_bytes, batch_size)
    x1, x2 = _inputs(x1, x2)
    _check_network(apply_fn, params, x1)
    impl = _choose(implementation, x1, x2, apply_fn, params, max_bytes)
    return _finite(_ntk(x1, x2, apply_fn, params, impl, batch_size), "empirical_ntk")


def ensemble_kernels(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None,
    ensemble: Ensemble,
    *,
    ntk: bool = True,
    implementation: str = "auto",
    max_bytes: int = 2**28,
    batch_size: int = 8,
) -> Kernel:
    """:func:`empirical_nngp` and :func:`empirical_ntk` of every member of an ensemble:
    ``Kernel(nngp, ntk)`` with a leading axis of length ``ensemble.size`` (``ntk`` is ``None``
    when ``ntk=False``). Arguments as in :func:`monte_carlo_kernels`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.finite import init_ensemble
        >>> from rmtjax.kernels import FullyConnected
        >>> ens = init_ensemble(jax.random.key(0), FullyConnected(1), 4, size=3, width=32)
        >>> ensemble_kernels(jnp.eye(4), None, ens).ntk.shape
        (3, 4, 4)
    """
    if not isinstance(ensemble, Ensemble):
        raise ValueError(f"ensemble must be an rmtjax.finite.Ensemble, got {type(ensemble).__name__}")
    _check_implementation(implementation)
    ntk = flag(ntk, "ntk")
    max_bytes, batch_size = _config(max_bytes, batch_size)
    x1, x2 = _inputs(x1, x2)
    one = jax.tree_util.tree_map(lambda a: a[0], ensemble.params)
    _check_network(ensemble.apply, one, x1)
    impl = _choose(implementation, x1, x2, ensemble.apply, one, max_bytes)
    nngp, ntk_s = _ensemble_kernels(x1, x2, ensemble.apply, ensemble.params, ntk, impl, batch_size)
    return _finite(Kernel(nngp, ntk_s), "ensemble_kernels")


def monte_carlo_kernels(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None,
    ensemble: Ensemble,
    *,
    ntk: bool = True,
    implementation: str = "auto",
    max_bytes: int = 2**28,
    batch_size: int = 8,
) -> MonteCarloKernel:
    r"""Monte-Carlo NNGP and NTK: means over an ensemble of initialisations and standard errors.

    .. math::
        \bar K = \frac1S\sum_{s=1}^S \hat K_s,\qquad
        \mathrm{SE}(\bar K) = \frac{\mathrm{std}_s(\hat K_s)}{\sqrt S},

    per entry, for :math:`\hat K_s` the :func:`empirical_nngp` and :func:`empirical_ntk` of
    member :math:`s`. The mean converges to the infinite-width kernel as the width grows (with
    a finite-width bias :math:`O(1/n)`), the standard error to zero as ``S`` grows.

    Args:
        x1, x2: inputs (``x2=None``: ``x1``).
        ensemble: from :func:`~rmtjax.finite.init_ensemble`.
        ntk: also compute the NTK (else ``ntk`` and ``ntk_stderr`` are ``None``).
        implementation, max_bytes: see :func:`empirical_ntk` (``max_bytes`` per member).
        batch_size: members processed at once (``jax.lax.map`` over the ensemble).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rmtjax.finite import init_ensemble
        >>> from rmtjax.kernels import FullyConnected, kernel
        >>> spec = FullyConnected(1, 1.5, 0.1)
        >>> ens = init_ensemble(jax.random.key(0), spec, 4, size=32, width=256)
        >>> mc = monte_carlo_kernels(jnp.eye(4), None, ens)
        >>> mc.ntk.shape, mc.samples
        ((4, 4), 32)
    """
    s = ensemble.size if isinstance(ensemble, Ensemble) else 0
    if isinstance(ensemble, Ensemble) and s < 2:
        raise ValueError(f"the ensemble needs >= 2 members for standard errors, got size {s}")
    nngp, ntk_s = ensemble_kernels(x1, x2, ensemble, ntk=ntk, implementation=implementation, max_bytes=max_bytes,
                                   batch_size=batch_size)
    mean = lambda k: None if k is None else jnp.mean(k, axis=0)  # noqa: E731
    se = lambda k: None if k is None else jnp.std(k, axis=0, ddof=1) / math.sqrt(s)  # noqa: E731
    return MonteCarloKernel(mean(nngp), mean(ntk_s), se(nngp), se(ntk_s), s)


@eqx.filter_jit
def _ensemble_kernels(x1, x2, apply_fn, params, with_ntk, implementation, batch_size):
    def one(p):
        k = _nngp(x1, x2, apply_fn, p)
        if not with_ntk:
            return k, None
        if implementation == "jacobian":
            return k, _ntk_jacobian(x1, x2, apply_fn, p)
        return k, _ntk_products(x1, x2, apply_fn, p, 64)

    size = jax.tree_util.tree_leaves(params)[0].shape[0]
    return jax.lax.map(one, params, batch_size=min(batch_size, size))


def input_jacobian(x: Float[ArrayLike, "n d"], apply_fn: Callable, params: Any) -> Float[Array, "n k d"]:
    r"""Jacobians of the outputs with respect to the inputs, :math:`\partial f_c(x_i)/\partial
    x_{i,a}`, one ``(k, d)`` matrix per point (e.g. for the singular-value spectra of dynamical
    isometry, Pennington et al. 2017).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from rmtjax.finite import MLP, functional
        >>> from rmtjax.kernels import FullyConnected
        >>> apply, params = functional(MLP(FullyConnected(2), 5, 3, width=16, rngs=nnx.Rngs(0)))
        >>> input_jacobian(jnp.ones((4, 5)), apply, params).shape
        (4, 3, 5)
    """
    x = check_finite_array(check_matrix(x, "x"), "x")
    _check_network(apply_fn, params, x)
    return _finite(_input_jacobian(x, apply_fn, params), "input_jacobian")


def _finite(out, fn: str):
    """``out`` if every entry is finite; else ``ValueError`` (eager) / ``error_if`` (traced): the
    network's parameters or outputs overflow."""
    from .._validate import error_if

    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(out)]
    ok = jnp.all(jnp.stack(leaves))
    return error_if(out, ~ok, f"{fn}: params (the network) give non-finite outputs or derivatives (NaN or overflowing "
                    "parameters)")


@eqx.filter_jit
def _input_jacobian(x, apply_fn, params):
    return jax.vmap(jax.jacrev(lambda xi: apply_fn(params, xi[None, :])[0]))(x)
