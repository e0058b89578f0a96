r"""Kernel shaping: local Q/C maps at unit variance, network descriptions, DKS and TAT solved exactly.

Notation of Martens et al. (2021, "Rapid training of deep neural networks without skip connections
or normalization layers using Deep Kernel Shaping", DKS) and Zhang et al. (2022, "Deep learning
without shortcuts: shaping the kernel with tailored rectifiers", TAT). For an activation
:math:`\hat\phi` and :math:`z \sim \mathcal N(0, 1)` the *local maps* of a layer (weights of
variance :math:`1/\text{fan-in}`, no biases, inputs of squared norm per dimension :math:`q`) are

.. math::
    \mathcal Q(q) = \mathbb E[\hat\phi(\sqrt q z)^2], \qquad
    \mathcal C(c) = \frac{\mathbb E[\hat\phi(u)\hat\phi(v)]}{\mathcal Q(1)},\
    (u, v) \sim \mathcal N\Big(0, \begin{pmatrix}1 & c\\ c & 1\end{pmatrix}\Big),

and at :math:`q = 1` (by Gaussian integration by parts and Mehler's formula)

.. math::
    \mathcal Q'(1) = \mathbb E[\hat\phi(z)\hat\phi'(z)z], \quad
    \mathcal C(0) = \frac{\mathbb E[\hat\phi(z)]^2}{\mathcal Q(1)}, \quad
    \mathcal C'(1) = \frac{\mathbb E[\hat\phi'(z)^2]}{\mathcal Q(1)}, \quad
    \mathcal C''(1) = \frac{\mathbb E[\hat\phi''(z)^2]}{\mathcal Q(1)}.

For :math:`\hat\phi(x) = \gamma(\phi(\alpha x + \beta) + \delta)` these are one-dimensional
expectations over :math:`u = \alpha z + \beta`, computed here by a composite Gauss-Legendre rule on
:math:`[\beta - 12|\alpha|, \beta + 12|\alpha|]` split at :math:`u = 0` (the kink of ReLU-like and ELU
bases), 4 panels of 64 nodes on each side: about 1e-15 for analytic bases and for bases smooth on
each side of 0, differentiable in every parameter.

**Conditions.** A network's C map is built from the local ones by composition (a layer) and convex
combination (a residual block :math:`w^2\,\mathrm{id} + (1-w^2)\,\text{branch}`); its *subnetwork
maximizing function* :math:`M_{f,r}(x)` (TAT, Appendix B) replaces every local map by ``r`` and takes
the largest value over the paths of the network (:class:`Chain`, :class:`Residual`). With
:math:`\mathcal Q(1) = 1` (so :math:`q = 1` propagates) the methods fix the local maps so that

* **DKS** (parameters :math:`\alpha, \beta`; :math:`\delta = -\mathbb E[\phi(u)]`, :math:`\gamma` from
  :math:`\mathcal Q(1) = 1`): :math:`\mathcal C(0) = 0`, :math:`\mathcal Q'(1) = ` ``q_slope`` and
  :math:`\mathcal C'(1) = s` where :math:`M_{f, y\mapsto sy}(1) = \zeta` (``slope``; a chain of
  :math:`L` layers: :math:`s = \zeta^{1/L}`);
* **TAT, smooth activations** (parameters :math:`\alpha, \beta, \delta`; :math:`\gamma` from
  :math:`\mathcal Q(1) = 1`): :math:`\mathcal Q'(1) = 1`, :math:`\mathcal C'(1) = 1` and
  :math:`\mathcal C''(1) = k` where :math:`M_{f, y\mapsto y + k}(0) = \tau` (``curvature``; a chain:
  :math:`k = \tau/L`), rejecting solutions with :math:`\alpha\gamma \ge 2` as ``dks`` does;
* **TAT, Leaky ReLU** (:math:`\hat\phi = \sqrt{2/(1+a^2)}\,\mathrm{LReLU}_a`, :math:`\mathcal Q(1) = 1`
  exactly): the negative slope :math:`a \in [0, 1]` with :math:`M_{f,\mathcal C_a}(0) = \eta` (``c0``).

The equations are solved by :func:`rmtjax.solve.root` (Newton from a fixed list of starting points,
all run at once; the first that converges, in ``dks``' order, is taken; a bracketed Newton for the
one-dimensional targets), so the shaped parameters are differentiable in the targets and in the
base activation's parameters by the implicit function theorem.
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

from .. import solve
from .._validate import as_real, concrete, error_if, flag, real, reraise_as_value_error, static_int
from ..activations import ABRelu, AbstractActivation, Transformed

__all__ = [
    "AbstractNetwork",
    "Chain",
    "LocalMaps",
    "Residual",
    "Shaping",
    "dks",
    "local_maps",
    "tat",
    "tat_leaky_relu",
]

_CUTOFF = 12.0  # standard deviations on each side
_PANELS = 4
_NODES = 64


@functools.lru_cache(maxsize=None)
def _panel_rule() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1]: ``_PANELS`` Gauss-Legendre panels of ``_NODES`` nodes."""
    x, w = np.polynomial.legendre.leggauss(_NODES)
    edges = np.linspace(0.0, 1.0, _PANELS + 1)
    t = np.concatenate([a + (b - a) * (x + 1) / 2 for a, b in zip(edges[:-1], edges[1:])])
    wt = np.concatenate([(b - a) * w / 2 for a, b in zip(edges[:-1], edges[1:])])
    return t, wt


def _nodes(alpha: Array, beta: Array) -> tuple[Array, Array]:
    r"""Nodes :math:`u` and weights (Gaussian density included) of
    :math:`\mathbb E[g(\alpha z + \beta)] \approx \sum_i w_i g(u_i)`, split at :math:`u = 0`."""
    dt = jnp.result_type(alpha, beta)
    t, wt = (jnp.asarray(a, dt) for a in _panel_rule())
    s = jnp.abs(alpha)
    lo, hi = beta - _CUTOFF * s, beta + _CUTOFF * s
    mid = jnp.clip(jnp.zeros((), dt), lo, hi)
    u = jnp.concatenate([lo + (mid - lo) * t, mid + (hi - mid) * t])
    w = jnp.concatenate([(mid - lo) * wt, (hi - mid) * wt])
    dens = jnp.exp(-0.5 * ((u - beta) / s) ** 2) / (math.sqrt(2 * math.pi) * s)
    return u, w * dens


class LocalMaps(NamedTuple):
    r"""The local maps of one layer at :math:`q = 1` (module docstring): ``q`` :math:`=\mathcal Q(1)`,
    ``q_slope`` :math:`=\mathcal Q'(1)`, ``c0`` :math:`=\mathcal C(0)`, ``c_slope``
    :math:`=\mathcal C'(1)`, ``c_curvature`` :math:`=\mathcal C''(1)` (``C`` normalized by
    :math:`\mathcal Q(1)`), ``mean`` :math:`=\mathbb E[\hat\phi(z)]`."""

    q: Array
    q_slope: Array
    c0: Array
    c_slope: Array
    c_curvature: Array
    mean: Array


def _second(fn, x):
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


def _as_transformed(activation: AbstractActivation) -> Transformed:
    if isinstance(activation, Transformed):
        return activation
    dt = jnp.result_type(float, *[x for x in jax.tree_util.tree_leaves(activation) if eqx.is_inexact_array(x)])
    one, zero = jnp.ones((), dt), jnp.zeros((), dt)
    return Transformed(activation, one, zero, one, zero)


def _local_raw(base, a, b, g, d) -> LocalMaps:
    u, w = _nodes(a, b)
    phi = base(u)
    dphi = base.derivative(u)
    ddphi = _second(base.derivative, u)
    z = (u - b) / a
    sh = phi + d
    q = g * g * jnp.sum(w * sh * sh)
    q_slope = g * g * a * jnp.sum(w * sh * dphi * z)
    mean = g * jnp.sum(w * sh)
    c_slope = g * g * a * a * jnp.sum(w * dphi * dphi) / q
    c_curv = g * g * a**4 * jnp.sum(w * ddphi * ddphi) / q
    return LocalMaps(q, q_slope, mean * mean / q, c_slope, c_curv, mean)


def _local(act: Transformed) -> LocalMaps:
    return _local_raw(act.base, act.alpha, act.beta, act.gamma, act.delta)


def _check_activation(activation, name: str = "activation") -> AbstractActivation:
    if not isinstance(activation, AbstractActivation):
        raise ValueError(f"{name} must be an rmtjax.activations module (e.g. Tanh()), got {activation!r:.80}")
    return activation


# jitted: eagerly, 37 one-operation programs on the first call of local_maps (measured 2026-12-07)
_local_jit = eqx.filter_jit(lambda act: _local(_as_transformed(act)))


def local_maps(activation: AbstractActivation) -> LocalMaps:
    r"""The local Q and C maps of ``activation`` at unit variance (module docstring) and their
    derivatives: what DKS and TAT prescribe. Differentiable in the activation's parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from rmtjax.activations import Relu
        >>> m = local_maps(Relu())  # Q(1) = 1/2, C(0) = (1/2pi) / (1/2) = 1/pi, C'(1) = 1
        >>> round(float(m.q), 12), round(float(m.c0 * jnp.pi), 12), round(float(m.c_slope), 12)
        (0.5, 1.0, 1.0)
    """
    return _local_jit(_check_activation(activation))


# --------------------------------------------------------------------------------------------
# Networks: the subnetwork maximizing function
# --------------------------------------------------------------------------------------------


class AbstractNetwork(eqx.Module):
    r"""The structure of a network for kernel shaping: how its local maps combine.

    Subclasses implement :meth:`subnet_max`, TAT's :math:`M_{f,r}(x)`: ``r`` applied for every
    nonlinear layer, convex combinations for residual blocks, the largest value over the paths."""

    def subnet_max(self, x, r):
        raise NotImplementedError

    def c_map(self, local_c_map, c):
        r"""The network's C map :math:`\mathcal C_f(c)` given the local one (whole network, not
        maximized over subnetworks)."""
        raise NotImplementedError

    def local_slope(self, slope: Array) -> Array:
        r"""The local :math:`\mathcal C'(1) = s` with :math:`M_{f, y\mapsto sy}(1) = \zeta`: bracketed
        Newton on :math:`[1, \zeta]` (:math:`M \ge s` since some path has a layer)."""
        sol = solve.root(_slope_residual, slope, (self, slope), bracket=(jnp.ones_like(slope), slope),
                         name="DKS local slope (M_f(1) = slope)")
        return sol.value

    def local_curvature(self, curvature: Array) -> Array:
        r"""The local :math:`\mathcal C''(1) = k` with :math:`M_{f, y\mapsto y+k}(0) = \tau`; the
        function is linear in :math:`k` (compositions add curvature, residual blocks weight it)."""
        return curvature / _unit_curvature(self, jnp.zeros_like(curvature))


@eqx.filter_jit
def _unit_curvature(net, zero):
    # jitted (once per network structure): called eagerly, the fori_loop over a residual network's
    # blocks, with a new closure for its body, was compiled anew on every call
    return net.subnet_max(zero, lambda y: y + 1)


def _slope_residual(s, args):
    net, target = args
    return net.subnet_max(jnp.ones_like(s), lambda y: s * y) - target


def _repeat(fn, n: int, x):
    """``fn`` applied ``n`` times: unrolled up to twice, a ``fori_loop`` beyond (one copy of ``fn`` to
    compile: unrolling eight residual blocks of two layers made ``tat_leaky_relu(Residual(8, 2, 0.9))``
    compile for 13.6 s of its 16 s, against 1.5 s of 1.6 s with the loop; measured 2026-12-07)."""
    if n == 0:
        return x
    if n <= 2:
        for _ in range(n):
            x = fn(x)
        return x
    return jax.lax.fori_loop(0, n, lambda i, y: fn(y), x)


class Chain(AbstractNetwork):
    r"""A plain network of ``depth`` nonlinear layers (Dense then activation), no skips:
    :math:`M_{f,r}(x) = r^{\circ L}(x)`; DKS's local slope :math:`\zeta^{1/L}`, TAT's local curvature
    :math:`\tau/L`.

    Example:
        >>> Chain(10)
        Chain(depth=10)
    """

    depth: int = eqx.field(static=True)

    def __init__(self, depth: int):
        self.depth = static_int(depth, "Chain.depth", lo=1, hi=100_000)

    def subnet_max(self, x, r):
        return _repeat(r, self.depth, x)

    def c_map(self, local_c_map, c):
        return _repeat(local_c_map, self.depth, c)

    def local_slope(self, slope):
        return slope ** (1.0 / self.depth)

    def local_curvature(self, curvature):
        return curvature / self.depth


class Residual(AbstractNetwork):
    r"""A residual network: ``blocks`` blocks :math:`y \leftarrow w^2 y + (1 - w^2)\,
    \mathrm{branch}(y)` with branches of ``branch_depth`` nonlinear layers and shortcut weight
    :math:`w` = ``shortcut_weight`` in (0, 1), then ``final_layers`` nonlinear layers.
    :math:`M_{f,r}(x) = \max(\text{network}(x), \mathrm{branch}(x))` (the largest path besides the
    whole network is one branch alone, as in the ``dks`` ResNet example).

    Example:
        >>> Residual(8, 2, 0.9)
        Residual(shortcut_weight=0.9, blocks=8, branch_depth=2)
    """

    shortcut_weight: float = eqx.field(static=True)
    blocks: int = eqx.field(static=True)
    branch_depth: int = eqx.field(static=True)
    final_layers: int = eqx.field(static=True, default=0)

    def __init__(self, blocks: int, branch_depth: int, shortcut_weight: float, final_layers: int = 0):
        self.blocks = static_int(blocks, "Residual.blocks", lo=1, hi=100_000)
        self.branch_depth = static_int(branch_depth, "Residual.branch_depth", lo=1, hi=1000)
        self.final_layers = static_int(final_layers, "Residual.final_layers", lo=0, hi=1000)
        w = concrete(as_real(shortcut_weight, "Residual.shortcut_weight", ndim=0))
        if w is None or not 0.0 < float(w) < 1.0:
            raise ValueError(f"Residual.shortcut_weight must be a number in (0, 1), got {shortcut_weight!r:.40}")
        # a static Python float (it fixes the network's structure); kept at full precision
        self.shortcut_weight = float(shortcut_weight) if isinstance(shortcut_weight, (int, float)) else float(w)

    def _run(self, x, r):
        w2 = self.shortcut_weight**2

        def block(y):
            return w2 * y + (1.0 - w2) * _repeat(r, self.branch_depth, y)

        return _repeat(r, self.final_layers, _repeat(block, self.blocks, x))

    def subnet_max(self, x, r):
        return jnp.maximum(self._run(x, r), _repeat(r, self.branch_depth, x))

    def c_map(self, local_c_map, c):
        return self._run(c, local_c_map)


def _check_network(network) -> AbstractNetwork:
    if not isinstance(network, AbstractNetwork):
        raise ValueError(f"network must be rmtjax.design.Chain(depth) or Residual(blocks, branch_depth, "
                         f"shortcut_weight), got {network!r:.80}")
    return network


# --------------------------------------------------------------------------------------------
# Solves
# --------------------------------------------------------------------------------------------


class Shaping(eqx.Module):
    r"""A shaped activation and what was solved for.

    Attributes:
        activation: :math:`\hat\phi`, an ordinary :mod:`rmtjax.activations` module
            (:class:`~rmtjax.activations.Transformed`; :class:`~rmtjax.activations.ABRelu` for TAT's
            Leaky ReLU) for kernels, mean field, Hermite maps and finite networks.
        method: ``"DKS"``, ``"TAT"`` or ``"TAT-LReLU"``.
        local: the local maps achieved (:class:`LocalMaps`).
        target: the local target: DKS's :math:`\mathcal C'(1)`, TAT's :math:`\mathcal C''(1)`, TAT-LReLU's
            network :math:`\mathcal C_f(0)`.
        residual: max-norm of the conditions' residuals at the solution.
        ok: whether a solution was found (``False`` only with ``throw=False``).
        start: index of the starting point that gave the solution (``-1``: none).
    """

    activation: AbstractActivation
    method: str = eqx.field(static=True)
    local: LocalMaps
    target: Array
    residual: Array
    ok: Array
    start: Array

    @property
    def params(self) -> dict:
        """The parameters under ``dks``' names (``input_scale``, ``input_shift``, ``output_shift``,
        ``output_scale``; ``negative_slope``, ``output_scale`` for Leaky ReLU)."""
        a = self.activation
        if isinstance(a, ABRelu):
            return {"negative_slope": a.a / a.b, "output_scale": a.b}
        return {"input_scale": a.alpha, "input_shift": a.beta, "output_shift": a.delta, "output_scale": a.gamma}


_DKS_STARTS = list(itertools.product((1.0, 0.1), (0.0, 1.0, -1.0))) + list(
    itertools.product((0.5, 2.0, 0.3), (0.5, -0.5, 2.0, -2.0)))
_TAT_STARTS = list(itertools.product((1.0, 0.1), (0.0, 1.0, -1.0), (0.0, 1.0, -1.0))) + list(
    itertools.product((0.5, 2.0), (0.5, -0.5, 2.0, -2.0), (0.5, -0.5)))


def _with(base, log_alpha, beta, delta, normalize_mean: bool):
    """``(alpha, beta, gamma, delta)`` with gamma from Q(1) = 1 (and delta from C(0) = 0)."""
    alpha = jnp.exp(log_alpha)
    one = jnp.ones_like(alpha)
    if normalize_mean:
        delta = -_local_raw(base, alpha, beta, one, jnp.zeros_like(alpha)).mean
    m = _local_raw(base, alpha, beta, one, delta)
    return alpha, beta, jax.lax.rsqrt(m.q), delta


def _dks_residual(y, args):
    base, q_slope, s = args
    m = _local_raw(base, *_with(base, y[0], y[1], None, True))
    return jnp.stack([m.q_slope - q_slope, m.c_slope - s])


def _tat_residual(y, args):
    base, k = args
    m = _local_raw(base, *_with(base, y[0], y[1], y[2], False))
    return jnp.stack([m.q_slope - 1.0, m.c_slope - 1.0, m.c_curvature - k])


_STEPS = 2.0 ** -np.arange(13)  # backtracking: full Newton step, then halved up to 12 times


def _damped_newton(residual, y, args, steps: int, tol):
    """Newton's method with backtracking on the residual norm: of the steps :math:`t\\Delta`,
    :math:`t = 1, 1/2, \\dots, 2^{-12}` (all evaluated at once), the longest that lowers the norm and
    stays finite; robust from far starting points, where plain Newton can step to parameters at which
    the expectations overflow. Stops after ``steps`` steps, once every residual is at most ``tol``, or
    when no trial step lowers the norm (then ``y`` would not move again). Not differentiated (see
    :func:`_multistart`)."""

    def norm(r):
        return jnp.where(jnp.all(jnp.isfinite(r), axis=-1), jnp.sqrt(jnp.sum(r * r, axis=-1)), jnp.inf)

    ts = jnp.asarray(_STEPS, y.dtype)

    def body(carry):
        i, y, r, _ = carry
        jac = jax.jacfwd(residual)(y, args)
        # pseudo-inverse step: directions with singular values below 1e-10 of the largest are left
        # alone. On a symmetry line (beta = 0 for an odd phi) the Jacobian is singular up to rounding,
        # and a plain solve would step to one side or the other by the sign of a rounding error
        # (eager and jit then pick mirrored roots); this way the iterate stays on the line.
        u, sv, vt = jnp.linalg.svd(jac)
        inv = jnp.where(sv > 1e-10 * sv[0], 1.0 / jnp.where(sv > 0, sv, 1.0), 0.0)
        step = vt.T @ (inv * (u.T @ -r))
        step = jnp.where(jnp.all(jnp.isfinite(step)), step, jnp.zeros_like(step))
        trial = y[None, :] + ts[:, None] * step[None, :]
        r_trial = jax.vmap(residual, in_axes=(0, None))(trial, args)
        better = norm(r_trial) < norm(r)
        k = jnp.argmax(better)
        ok = jnp.any(better)
        return i + 1, jnp.where(ok, trial[k], y), jnp.where(ok, r_trial[k], r), ok

    def going(carry):
        i, _, r, moved = carry
        return (i < steps) & moved & ~(jnp.max(jnp.abs(r)) <= tol)

    _, y, r, _ = jax.lax.while_loop(going, body, (jnp.zeros((), jnp.int32), y, residual(y, args), jnp.ones((), bool)))
    return y, r


# Largest input scale accepted: features of phi(alpha z + beta) narrower than 1/50 in z are below what
# the quadrature resolves (a spurious near-ReLU root with alpha ~ 7000, gamma ~ 2e-4 solves the
# discretized TAT equations of softplus and ELU otherwise)
_MAX_ALPHA = 50.0


@eqx.filter_jit
def _search(residual, accept, y0, fixed):
    """Damped Newton from the rows of ``y0`` in turn, up to the first that converges and is accepted
    (``dks``' rule; compiled once per residual, acceptance rule and argument structure): that start's
    index (-1 if none) and solution (the last start's iterate if none). One start at a time, not all
    at once: the first start usually converges within a few steps, and a batch over all starts runs as
    long as its slowest member (measured on ``dks``' 324 golden cases: 92 s batched, at 40 steps each,
    against 50 s in turn, the same roots to 4e-13)."""
    tol = 100 * float(jnp.finfo(y0.dtype).eps) ** 0.75

    def cond(carry):
        j, found, _ = carry
        return ~found & (j < y0.shape[0])

    def body(carry):
        j, _, _ = carry
        y, r = _damped_newton(residual, y0[j], fixed, 40, tol)
        ok = jnp.all(jnp.isfinite(y)) & (jnp.max(jnp.abs(r)) <= tol) & (y[0] <= math.log(_MAX_ALPHA))
        return j + 1, ok & accept(y, fixed), y

    j, found, y = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), y0[0]))
    return y, jnp.where(found, j - 1, -1)


def _multistart(residual, starts, args, dt, accept):
    """Damped Newton from the starting points in ``dks``' order up to the first that converges and is
    accepted (not differentiated), then one differentiable :func:`rmtjax.solve.root` from there (it
    converges at once): its implicit gradients are those of the solution."""
    starts = np.array(starts, dtype=np.float64)
    starts[:, 0] = np.log(starts[:, 0])  # alpha > 0 through log(alpha)
    y0 = jnp.asarray(starts, dt)
    fixed = jax.tree_util.tree_map(jax.lax.stop_gradient, args)
    value, idx = _search(residual, accept, y0, fixed)
    found = idx >= 0
    # no solution (throw=False): the first starting point, so the returned module stays finite
    start = jnp.where(found, value, y0[0])
    sol = solve.root(residual, start, args, throw=False, max_steps=16)
    found = found & sol.ok
    return jnp.where(found, sol.value, y0[0]), found, jnp.where(found, idx, -1), sol.residual


def _dtype(*xs):
    return jnp.result_type(float, *[x for x in jax.tree_util.tree_leaves(xs) if eqx.is_inexact_array(x)])


def _raise_if(x, ok, throw: bool, msg: str):
    if not throw:
        return x
    v = concrete(ok)
    if v is not None:
        if not bool(np.all(v)):
            raise ValueError(msg)
        return x
    return error_if(x, ~jnp.all(ok), msg)


@reraise_as_value_error
def dks(activation: AbstractActivation, network: AbstractNetwork, *, slope: ArrayLike = 1.5,
        q_slope: ArrayLike = 1.0, throw: bool = True) -> Shaping:
    r"""Deep Kernel Shaping (Martens et al. 2021): the transformation
    :math:`\hat\phi(x) = \gamma(\phi(\alpha x + \beta) + \delta)` of ``activation`` with
    :math:`\mathcal Q(1) = 1`, :math:`\mathcal Q'(1) =` ``q_slope``, :math:`\mathcal C(0) = 0` and the
    network's maximal C-map slope :math:`\max_f \mathcal C_f'(1) = \zeta` = ``slope`` (module
    docstring). Differentiable in ``slope``, ``q_slope`` and the activation's parameters.

    Args:
        activation: the base activation (smooth or with a kink at 0: ELU, softplus, tanh, SiLU, GELU).
        network: :class:`Chain` or :class:`Residual`.
        slope: :math:`\zeta > 1` (``dks``' ``c_slope_1_target``; 1.5 in the paper).
        q_slope: :math:`\mathcal Q'(1) > 0` (``local_q_slope_target``; 1 in the paper).
        throw: raise when no starting point converges (``ValueError``; a compiled check under ``jit``),
            or return ``ok=False``.

    Example:
        >>> from rmtjax.activations import Tanh
        >>> s = dks(Tanh(), Chain(10), slope=1.5)
        >>> m = s.local
        >>> round(float(m.q), 10), round(float(m.c0), 10), round(float(m.c_slope ** 10), 10)
        (1.0, 0.0, 1.5)
    """
    base = _check_activation(activation)
    network = _check_network(network)
    throw = flag(throw, "throw")
    dt = _dtype(base, slope, q_slope)
    zeta = real(slope, "slope", ndim=0, lo=1.0, lo_open=True).astype(dt)
    qs = real(q_slope, "q_slope", ndim=0, lo=0.0, lo_open=True).astype(dt)
    # eager, outside the solve's program, so that the solve is compiled once for every network
    s = network.local_slope(zeta)
    act, local, found, idx, res = _dks_core(base, qs, s, dt)
    msg = (f"dks: no transformation of {type(base).__name__} reaches C'(1) = slope**(1/depth) with Q'(1) = q_slope "
           f"from {len(_DKS_STARTS)} starting points; check that slope > 1 is reachable (a smaller slope is easier)")
    act, local = _raise_if((act, local), found, throw, msg)
    return Shaping(act, "DKS", local, s, res, found, idx)


@eqx.filter_jit
def _dks_core(base, qs, s, dt):
    # jitted (once per activation type and dtype; not per network, whose local slope is an argument):
    # eagerly, 51 one-operation programs on the first call of dks (measured 2026-12-07)
    y, found, idx, res = _multistart(_dks_residual, _DKS_STARTS, (base, qs, s), dt, _accept_all)
    act = Transformed(base, *_with(base, y[0], y[1], None, True))
    return act, _local(act), found, idx, res


def _accept_all(y, args):
    return jnp.ones((), bool)


def _tat_accept(y, args):
    alpha, _, gamma, _ = _with(args[0], y[0], y[1], y[2], False)
    return alpha * gamma < 2.0


@reraise_as_value_error
def tat(activation: AbstractActivation, network: AbstractNetwork, *, curvature: ArrayLike = 0.3,
        throw: bool = True) -> Shaping:
    r"""Tailored Activation Transformation for smooth activations (Zhang et al. 2022): the
    transformation with :math:`\mathcal Q(1) = 1`, :math:`\mathcal Q'(1) = 1`,
    :math:`\mathcal C'(1) = 1` and the network's maximal C-map curvature
    :math:`\max_f\mathcal C_f''(1) = \tau` = ``curvature`` (module docstring), rejecting solutions
    with :math:`\alpha\gamma \ge 2` (``dks``' rule against unstable Q maps). Differentiable in
    ``curvature`` and the activation's parameters.

    Example:
        >>> from rmtjax.activations import Softplus
        >>> s = tat(Softplus(), Chain(50), curvature=0.3)
        >>> round(float(s.local.c_curvature * 50), 10), round(float(s.local.c_slope), 10)
        (0.3, 1.0)
    """
    base = _check_activation(activation)
    network = _check_network(network)
    throw = flag(throw, "throw")
    dt = _dtype(base, curvature)
    tau = real(curvature, "curvature", ndim=0, lo=0.0, lo_open=True).astype(dt)
    # eager, outside the solve's program, so that the solve is compiled once for every network
    k = network.local_curvature(tau)
    act, local, found, idx, res = _tat_core(base, k, dt)
    msg = (f"tat: no transformation of {type(base).__name__} reaches C''(1) = curvature/depth with Q'(1) = C'(1) = 1 "
           f"and input_scale * output_scale < 2 from {len(_TAT_STARTS)} starting points")
    act, local = _raise_if((act, local), found, throw, msg)
    return Shaping(act, "TAT", local, k, res, found, idx)


@eqx.filter_jit
def _tat_core(base, k, dt):
    # jitted (once per activation type and dtype; not per network, whose local curvature is an
    # argument): eagerly, 44 one-operation programs on the first call of tat (measured 2026-12-07)
    y, found, idx, res = _multistart(_tat_residual, _TAT_STARTS, (base, k), dt, _tat_accept)
    act = Transformed(base, *_with(base, y[0], y[1], y[2], False))
    return act, _local(act), found, idx, res


def _leaky_c_map(c, a):
    r"""The local C map of :math:`\sqrt{2/(1+a^2)}\,\mathrm{LReLU}_a` (:math:`\mathcal Q(1) = 1`, so
    :math:`\mathcal C(c) = \mathbb E[\hat\phi(u)\hat\phi(v)]`): the arc-cosine kernel of
    :class:`~rmtjax.activations.ABRelu` at unit variances."""
    g = jnp.sqrt(2.0 / (1.0 + a * a))
    one = jnp.ones_like(c)
    return ABRelu(g * a, g)._dual(one, one, jnp.clip(c, -1.0, 1.0))[0]


def _leaky_residual(a, args):
    net, eta = args
    return net.subnet_max(jnp.zeros_like(a), lambda c: _leaky_c_map(c, a)) - eta


@eqx.filter_jit
def _relu_c0(network, dt):
    # for the eager check in tat_leaky_relu: compiled once per network structure and dtype, not on every
    # call (the fori_loop over a chain's layers has a new closure for its body each time)
    zero = jnp.zeros((), dt)
    return _leaky_residual(zero, (network, zero))


@eqx.filter_jit
def _leaky_core(network, eta, dt):
    # jitted (once per network structure and dtype): eagerly, 46 one-operation programs on the first
    # call of tat_leaky_relu (measured 2026-12-07)
    eta = eta.astype(dt)
    zero, one = jnp.zeros((), dt), jnp.ones((), dt)
    sol = solve.root(_leaky_residual, jnp.asarray(0.5, dt), (network, eta), bracket=(zero, one), throw=False,
                     name="TAT Leaky-ReLU negative slope (C_f(0) = c0)")
    a = jnp.where(sol.ok, sol.value, zero)  # throw=False and out of reach: ReLU, the closest, with ok False
    g = jnp.sqrt(2.0 / (1.0 + a * a))
    act = ABRelu(a=g * a, b=g)
    return act, _local(_as_transformed(act)), eta, sol.ok, jnp.abs(sol.residual), jnp.where(sol.ok, 0, -1)


@reraise_as_value_error
def tat_leaky_relu(network: AbstractNetwork, *, c0: ArrayLike = 0.9, throw: bool = True) -> Shaping:
    r"""TAT for Leaky ReLU (Zhang et al. 2022, Sec. 4): the negative slope :math:`a` with the
    network's maximal :math:`\mathcal C_f(0) = \eta` = ``c0`` and output scale
    :math:`\sqrt{2/(1+a^2)}` (:math:`\mathcal Q(1) = 1`). :math:`\mathcal C_f(0)` falls from its ReLU
    value (:math:`a = 0`) to 0 (:math:`a = 1`, linear), so ``c0`` must lie in
    :math:`(0, \mathcal C_f^{\mathrm{ReLU}}(0)]`; a larger ``c0`` raises a ``ValueError`` that gives
    that bound. Differentiable in ``c0``.

    Example:
        >>> s = tat_leaky_relu(Chain(50), c0=0.9)
        >>> round(float(s.target), 10)
        0.9
    """
    network = _check_network(network)
    throw = flag(throw, "throw")
    dt = _dtype(c0)
    eta = real(c0, "c0", ndim=0, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    relu_c0, target = concrete(_relu_c0(network, dt)), concrete(eta)
    if relu_c0 is not None and target is not None and not bool(relu_c0 >= target.astype(dt)) and throw:
        raise ValueError(f"c0 = {float(target):.6g} is out of reach for this network: Leaky ReLU's C_f(0) is at most "
                         f"{float(relu_c0):.6g} (plain ReLU, negative slope 0); c0 must be in (0, {float(relu_c0):.6g}]")
    act, m, eta, ok, res, start = _leaky_core(network, eta, dt)
    act, m = _raise_if((act, m), ok, throw, "tat_leaky_relu: no negative slope in [0, 1] gives C_f(0) = c0 (at most "
                       "the ReLU network's C_f(0))")
    return Shaping(act, "TAT-LReLU", m, eta, res, ok, start)
