r"""Differentiable objectives of an activation, composable by ``+`` and scalar ``*``.

Each objective is an ``equinox`` module called on an activation, ``objective(activation) ->``
scalar, non-negative and zero where its targets are met (the task objectives: a loss). Data and
targets are array leaves (differentiable, vmappable); structure (depths, networks) is static.

==============================  ===============================================================================
objective                       what it measures (its formula in the class docstring)
==============================  ===============================================================================
:class:`Criticality`            :math:`\log^2\chi_1` at :math:`q^*` and :math:`(q^*/q_{\rm target} - 1)^2` (Poole et al. 2016)
:class:`KernelShaping`          DKS/TAT local-map conditions :math:`\mathcal Q(1), \mathcal Q'(1), \mathcal C(0), \mathcal C'(1), \mathcal C''(1)`
:class:`JacobianMoments`        log-mean and variance of the spectrum of :math:`JJ^\top` (Pennington et al. 2017)
:class:`JacobianEdge`           :math:`\log^2` of the spectrum's right edge (free multiplicative convolution, 2018)
:class:`Branching`              Liang & Tran-Bach's :math:`\mu` and extinction probability
:class:`KernelDistance`         squared distance of the depth-:math:`L` compositional kernel to a target
:class:`NTKCondition`           :math:`\log` condition number of the NTK on data
:class:`ValidationLoss`         NNGP/NTK kernel-ridge validation mean squared error on data
:class:`MarginalLikelihood`     GP negative log marginal likelihood per sample
==============================  ===============================================================================
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .. import hermite, kernels, meanfield, regression, rmt
from .._validate import as_real, choice, concrete, real, reraise_as_value_error, static_int
from ..activations import AbstractActivation
from ..gaussian import gaussian_expectations
from ._shaping import AbstractNetwork, _check_network, local_maps

__all__ = [
    "AbstractObjective",
    "Branching",
    "Criticality",
    "JacobianEdge",
    "JacobianMoments",
    "KernelDistance",
    "KernelShaping",
    "MarginalLikelihood",
    "NTKCondition",
    "ValidationLoss",
]


def _scalar(x, name, **bounds):
    return real(x, name, ndim=0, **bounds)


def _optional(x, name, **bounds):
    return None if x is None else _scalar(x, name, **bounds)


def _jitted(call):
    """``__call__`` of an objective, compiled once per objective structure and activation type (the
    objective's arguments are validated by its constructor): eagerly, an objective compiled one
    program per operation on its first call (measured 2026-12-07: 32 for ``KernelShaping``, 32 for
    ``JacobianEdge``, 26 for ``ValidationLoss``, 25 for ``MarginalLikelihood``, 21 for
    ``JacobianMoments``). A check failing inside surfaces as a ``ValueError``."""
    return reraise_as_value_error(eqx.filter_jit(call))


class AbstractObjective(eqx.Module):
    """An objective of an activation: ``objective(activation)`` is a scalar to minimize.
    ``a + b`` and ``w * a`` combine objectives (the sum and the weighted objective are objectives)."""

    @abc.abstractmethod
    def __call__(self, activation: AbstractActivation) -> Array:
        raise NotImplementedError

    def __add__(self, other):
        if not isinstance(other, AbstractObjective):
            return NotImplemented
        return _Sum((self, other))

    def __mul__(self, weight):
        return _Weighted(_scalar(weight, "objective weight", lo=0.0), self)

    __rmul__ = __mul__


class _Sum(AbstractObjective):
    terms: tuple

    @_jitted
    def __call__(self, activation):
        return sum(t(activation) for t in self.terms)


class _Weighted(AbstractObjective):
    weight: Array
    objective: AbstractObjective

    @_jitted
    def __call__(self, activation):
        return self.weight * self.objective(activation)


def _inf_unless(ok, x):
    """``x`` where the theory has a value (a finite fixed point ``q*``), ``+inf`` elsewhere: a line
    search backs off from it and :func:`rmtjax.design.design` never steps there."""
    return jnp.where(ok, x, jnp.inf)


class Criticality(AbstractObjective):
    r"""The edge of chaos at the given weight and bias variances (Poole et al. 2016; Schoenholz et
    al. 2017): :math:`\log^2\chi_1 + [(q^*/q_{\rm target} - 1)^2]`, with
    :math:`\chi_1 = \sigma_w^2\mathbb E[\phi'(\sqrt{q^*}z)^2]` at the length-map fixed point
    :math:`q^*` (:func:`rmtjax.meanfield.chi_1`, implicit gradients). ``q_star=None`` leaves
    :math:`q^*` free. ``+inf`` where the length map has no finite fixed point."""

    sigma_w2: Array
    sigma_b2: Array
    q_star: Array | None

    def __init__(self, sigma_w2: ArrayLike = 1.0, sigma_b2: ArrayLike = 0.0, q_star: ArrayLike | None = None):
        self.sigma_w2 = _scalar(sigma_w2, "sigma_w2", lo=0.0, lo_open=True)
        self.sigma_b2 = _scalar(sigma_b2, "sigma_b2", lo=0.0)
        self.q_star = _optional(q_star, "q_star", lo=0.0, lo_open=True)

    @_jitted
    def __call__(self, activation):
        chi = meanfield.chi_1(activation, self.sigma_w2, self.sigma_b2, throw=False)
        loss = jnp.log(chi.value) ** 2
        if self.q_star is not None:
            q = meanfield.q_star(activation, self.sigma_w2, self.sigma_b2, throw=False).value
            loss = loss + (q / self.q_star - 1.0) ** 2
        return _inf_unless(chi.ok, loss)


class KernelShaping(AbstractObjective):
    r"""Kernel-shaping conditions as a penalty: :math:`(\mathcal Q(1) - 1)^2` plus, for each target
    given, the squared miss of the local map (:func:`rmtjax.design.local_maps`): ``q_slope``
    (:math:`\mathcal Q'(1)`), ``c0`` (:math:`\mathcal C(0)`, local), ``slope`` (the network's maximal
    :math:`\mathcal C_f'(1) = \zeta`, through ``network.local_slope``) and ``curvature`` (the network's
    maximal :math:`\mathcal C_f''(1) = \tau`, through ``network.local_curvature``). DKS is
    ``KernelShaping(net, q_slope=1, c0=0, slope=1.5)``; TAT (smooth) is
    ``KernelShaping(net, q_slope=1, slope=1, curvature=0.3)`` with :math:`\zeta = 1` meaning
    :math:`\mathcal C'(1) = 1`."""

    network: AbstractNetwork
    q_slope: Array | None
    c0: Array | None
    slope: Array | None
    curvature: Array | None

    def __init__(self, network: AbstractNetwork, *, q_slope=None, c0=None, slope=None, curvature=None):
        self.network = _check_network(network)
        self.q_slope = _optional(q_slope, "q_slope", lo=0.0, lo_open=True)
        self.c0 = _optional(c0, "c0", lo=0.0, hi=1.0)
        self.slope = _optional(slope, "slope", lo=1.0)
        self.curvature = _optional(curvature, "curvature", lo=0.0, lo_open=True)

    @_jitted
    def __call__(self, activation):
        m = local_maps(activation)
        loss = (m.q - 1.0) ** 2
        if self.q_slope is not None:
            loss = loss + (m.q_slope - self.q_slope) ** 2
        if self.c0 is not None:
            loss = loss + (m.c0 - self.c0) ** 2
        if self.slope is not None:
            loss = loss + (m.c_slope - self.network.local_slope(self.slope)) ** 2
        if self.curvature is not None:
            loss = loss + (m.c_curvature - self.network.local_curvature(self.curvature)) ** 2
        return loss


class JacobianMoments(AbstractObjective):
    r"""Dynamical isometry (Pennington, Schoenholz & Ganguli 2017, 2018): the input-output
    Jacobian of a depth-:math:`L` network at :math:`q^*` has :math:`JJ^\top` spectrum of mean
    :math:`m_1 = \chi_1^L` and normalized variance
    :math:`\sigma^2 = m_2/m_1^2 - 1 = L\,(\mu_2/\mu_1^2 - 1 + [\text{Gaussian } W])`, :math:`\mu_k =
    \mathbb E[\phi'(\sqrt{q^*}z)^{2k}]` (free multiplicative convolution adds the normalized variances
    of free factors: 1 for a square Gaussian :math:`WW^\top`, 0 for orthogonal; at :math:`\chi_1 = 1`
    this is Pennington et al.'s :math:`\sigma^2_{JJ^\top}`). The objective is
    :math:`\log^2 m_1 + w\,\sigma^2` with ``variance_weight`` :math:`w`."""

    sigma_w2: Array
    sigma_b2: Array
    variance_weight: Array
    depth: int = eqx.field(static=True)
    orthogonal: bool = eqx.field(static=True)

    def __init__(self, sigma_w2: ArrayLike = 1.0, sigma_b2: ArrayLike = 0.0, *, depth: int, orthogonal: bool = True,
                 variance_weight: ArrayLike = 1.0):
        self.sigma_w2 = _scalar(sigma_w2, "sigma_w2", lo=0.0, lo_open=True)
        self.sigma_b2 = _scalar(sigma_b2, "sigma_b2", lo=0.0)
        self.variance_weight = _scalar(variance_weight, "variance_weight", lo=0.0)
        self.depth = static_int(depth, "depth", lo=1, hi=100_000)
        self.orthogonal = bool(orthogonal)

    def moments(self, activation) -> tuple[Array, Array]:
        """``(mean, normalized variance)`` of the spectrum of :math:`JJ^\\top`."""
        ok, log_mean, var = self._log_moments(activation)
        return _inf_unless(ok, jnp.exp(log_mean)), _inf_unless(ok, var)

    def _log_moments(self, activation):
        # L log(sigma_w^2 mu1), not log((sigma_w^2 mu1)^L): the power overflows or underflows at depth
        # (chi_1 = 0.39 at depth 2000 is 1e-818), its logarithm does not
        sol = meanfield.q_star(activation, self.sigma_w2, self.sigma_b2, throw=False)
        q = jnp.where(sol.ok, sol.value, 1.0)
        atoms, weights = activation.derivative_squared_law(q)
        mu1 = jnp.sum(weights * atoms)
        mu2 = jnp.sum(weights * atoms * atoms)
        var = self.depth * (mu2 / (mu1 * mu1) - 1.0 + (0.0 if self.orthogonal else 1.0))
        return sol.ok, self.depth * jnp.log(self.sigma_w2 * mu1), var

    @_jitted
    def __call__(self, activation):
        ok, log_mean, var = self._log_moments(activation)
        return _inf_unless(ok, log_mean**2 + self.variance_weight * var)


class JacobianEdge(AbstractObjective):
    r"""The right edge :math:`\lambda_{\max}` of the limiting spectrum of :math:`JJ^\top` (the largest
    squared singular value of the input-output Jacobian of a depth-:math:`L` network at :math:`q^*`):
    :math:`\log^2\lambda_{\max}`, zero when no direction is amplified. The law is the free
    multiplicative convolution :math:`(\mu_{WW^\top}\boxtimes\mu_{D^2})^{\boxtimes L}`
    (:func:`rmtjax.rmt.jacobian_law`) and its edge the minimum of
    :math:`(1+w)/(w\prod_i S_i(w)^{n_i})` (:func:`rmtjax.rmt.multiplicative_edge`; Pennington,
    Schoenholz & Ganguli 2018), differentiable through its Newton refinement. ``+inf`` where the
    edge is not found or :math:`q^*` has no finite fixed point."""

    sigma_w2: Array
    sigma_b2: Array
    depth: int = eqx.field(static=True)
    orthogonal: bool = eqx.field(static=True)

    def __init__(self, sigma_w2: ArrayLike = 1.0, sigma_b2: ArrayLike = 0.0, *, depth: int, orthogonal: bool = True):
        self.sigma_w2 = _scalar(sigma_w2, "sigma_w2", lo=0.0, lo_open=True)
        self.sigma_b2 = _scalar(sigma_b2, "sigma_b2", lo=0.0)
        self.depth = static_int(depth, "depth", lo=1, hi=100_000)
        self.orthogonal = bool(orthogonal)

    def edge(self, activation) -> Array:
        r""":math:`\lambda_{\max}`."""
        law = rmt.jacobian_law(activation, self.sigma_w2, self.sigma_b2, depth=self.depth, orthogonal=self.orthogonal)
        sol, ok = rmt.multiplicative_edge(law, throw=False)
        return _inf_unless(ok, sol.value)

    @_jitted
    def __call__(self, activation):
        return jnp.log(self.edge(activation)) ** 2


class Branching(AbstractObjective):
    r"""Liang & Tran-Bach (2020): the mean offspring :math:`\mu = \sum_k k a_k^2/\sum_k a_k^2` of the
    activation's Hermite law (:func:`rmtjax.hermite.activation_mu`) and its extinction probability
    :math:`\xi` (:func:`rmtjax.hermite.extinction_probability`, from ``order + 1`` coefficients at
    :math:`q = 1`): :math:`(\mu - \mu_{\rm target})^2 + (\xi - \xi_{\rm target})^2` for the targets given."""

    mu: Array | None
    extinction: Array | None
    order: int = eqx.field(static=True)

    def __init__(self, *, mu: ArrayLike | None = None, extinction: ArrayLike | None = None, order: int = 40):
        if mu is None and extinction is None:
            raise ValueError("Branching needs a target: mu or extinction (or both)")
        self.mu = _optional(mu, "mu", lo=0.0)
        self.extinction = _optional(extinction, "extinction", lo=0.0, hi=1.0)
        self.order = static_int(order, "order", lo=1, hi=10_000)

    @_jitted
    def __call__(self, activation):
        loss = jnp.zeros(())
        if self.mu is not None:
            loss = loss + (hermite.activation_mu(activation) - self.mu) ** 2
        if self.extinction is not None:
            a = activation.hermite_coefficients(jnp.ones(()), order=self.order)
            loss = loss + (hermite.extinction_probability(a).value - self.extinction) ** 2
        return loss


def _normalized_c_map(activation, c):
    one = jnp.ones_like(c)
    k = gaussian_expectations(activation, one, one, c).k
    q = gaussian_expectations(activation, one[:1], one[:1], one[:1]).k
    return k / q


class KernelDistance(AbstractObjective):
    r"""The mean squared distance, on a grid of input correlations :math:`\rho`, between the
    depth-``depth`` compositional kernel of the activation at unit variance,
    :math:`\mathcal C^{\circ L}(\rho)` with :math:`\mathcal C(\rho) = \mathbb E[\phi(u)\phi(v)]/
    \mathbb E[\phi(z)^2]`, and a ``target`` (values on the grid, or a function of :math:`\rho`).
    The grid ``rho`` defaults to 41 points on :math:`[-1, 1]`."""

    target: Array
    rho: Array
    depth: int = eqx.field(static=True)

    def __init__(self, target: ArrayLike | Callable, *, depth: int, rho: ArrayLike | None = None):
        self.depth = static_int(depth, "depth", lo=1, hi=100_000)
        rho = jnp.linspace(-1.0, 1.0, 41) if rho is None else rho
        self.rho = real(rho, "rho", ndim=1, lo=-1.0, hi=1.0)
        values = target(self.rho) if callable(target) else target
        self.target = real(values, "target", shape=self.rho.shape)

    def kernel(self, activation) -> Array:
        c = self.rho
        for _ in range(self.depth):
            c = _normalized_c_map(activation, c)
        return c

    @_jitted
    def __call__(self, activation):
        return jnp.mean((self.kernel(activation) - self.target) ** 2)


def _net(activation, depth, W_std, b_std):
    return kernels.FullyConnected(depth, W_std, b_std, activation)


class NTKCondition(AbstractObjective):
    r""":math:`\log(\lambda_{\max}/\lambda_{\min})` of the NTK Gram matrix of a depth-``depth``
    fully-connected network on ``x`` (a well-conditioned NTK trains fast; Xiao et al. 2020).

    ``x`` must have distinct rows (two equal rows make the NTK singular for every activation: a
    ``ValueError``). An NTK that is singular in the working precision for this activation (its
    smallest eigenvalue not above :math:`n\,\varepsilon\,\lambda_{\max}`, e.g. a linear network
    on linearly dependent inputs) has an infinite condition number: the objective is ``+inf``, as
    where the theory has no value, so :func:`rmtjax.design.design`'s line search backs off from it."""

    x: Array
    W_std: Array
    b_std: Array
    depth: int = eqx.field(static=True)

    def __init__(self, x: ArrayLike, *, depth: int, W_std: ArrayLike = 1.0, b_std: ArrayLike = 0.0):
        self.x = real(x, "x", ndim=2)
        c = concrete(self.x)
        if c is not None:
            rows, first = np.unique(c, axis=0, return_index=True)
            if rows.shape[0] < c.shape[0]:
                dup = sorted(set(range(c.shape[0])) - set(first.tolist()))[0]
                same = int(np.flatnonzero(np.all(c == c[dup], axis=1))[0])
                raise ValueError(f"x: rows {same} and {dup} are equal, so the NTK on x is singular (an infinite "
                                 "condition number) for every activation: give distinct inputs")
        self.depth = static_int(depth, "depth", lo=1, hi=100_000)
        self.W_std = _scalar(W_std, "W_std", lo=0.0, lo_open=True)
        self.b_std = _scalar(b_std, "b_std", lo=0.0)

    @_jitted
    def __call__(self, activation):
        k = kernels.kernel(self.x, None, _net(activation, self.depth, self.W_std, self.b_std)).ntk
        e = jnp.linalg.eigvalsh(k)
        regular = e[0] > k.shape[0] * jnp.finfo(k.dtype).eps * e[-1]
        return jnp.where(regular, jnp.log(e[-1] / jnp.where(regular, e[0], e[-1])), jnp.inf)


class ValidationLoss(AbstractObjective):
    r"""Kernel-ridge validation error of the infinite network: with :math:`K` the NNGP or NTK of a
    depth-``depth`` fully-connected network, :math:`\hat y = K_{vt}(K_{tt} + \lambda\bar k I)^{-1}y_t`
    (:math:`\bar k` the mean diagonal of :math:`K_{tt}`, so ``ridge`` is relative) and the loss
    :math:`\frac{1}{n_v}\|\hat y - y_v\|^2`."""

    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array
    ridge: Array
    W_std: Array
    b_std: Array
    depth: int = eqx.field(static=True)
    kernel: str = eqx.field(static=True)

    def __init__(self, x_train, y_train, x_val, y_val, *, depth: int, ridge: ArrayLike = 1e-3,
                 W_std: ArrayLike = 1.0, b_std: ArrayLike = 0.0, kernel: str = "nngp"):
        self.x_train = real(x_train, "x_train", ndim=2)
        self.x_val = real(x_val, "x_val", ndim=2)
        y_train, y_val = as_real(y_train, "y_train", ndim=(1, 2)), as_real(y_val, "y_val", ndim=(1, 2))
        self.y_train = real(y_train.reshape(y_train.shape[0], -1), "y_train")
        self.y_val = real(y_val.reshape(y_val.shape[0], -1), "y_val")
        if self.y_train.shape[0] != self.x_train.shape[0] or self.y_val.shape[0] != self.x_val.shape[0]:
            raise ValueError(f"y_train/y_val must have one row per input: x_train {self.x_train.shape}, y_train "
                             f"{self.y_train.shape}, x_val {self.x_val.shape}, y_val {self.y_val.shape}")
        self.depth = static_int(depth, "depth", lo=1, hi=100_000)
        self.ridge = _scalar(ridge, "ridge", lo=0.0, lo_open=True)
        self.W_std = _scalar(W_std, "W_std", lo=0.0, lo_open=True)
        self.b_std = _scalar(b_std, "b_std", lo=0.0)
        self.kernel = choice(kernel, "kernel", ("nngp", "ntk"))

    def predict(self, activation) -> Array:
        """Validation predictions :math:`\\hat y`."""
        n = self.x_train.shape[0]
        x = jnp.concatenate([self.x_train, self.x_val])
        k = getattr(kernels.kernel(x, None, _net(activation, self.depth, self.W_std, self.b_std)), self.kernel)
        ktt, kvt = k[:n, :n], k[n:, :n]
        kbar = jnp.mean(jnp.diagonal(ktt))
        # a zero mean diagonal is a zero kernel (zero inputs and b_std = 0): its predictions are 0
        reg = self.ridge * jnp.where(kbar > 0, kbar, 1.0)
        chol = jax.scipy.linalg.cho_factor(ktt + reg * jnp.eye(n, dtype=ktt.dtype))
        return kvt @ jax.scipy.linalg.cho_solve(chol, self.y_train)

    @_jitted
    def __call__(self, activation):
        return jnp.mean(jnp.sum((self.predict(activation) - self.y_val) ** 2, axis=-1))


class MarginalLikelihood(AbstractObjective):
    r"""The Gaussian-process negative log marginal likelihood per sample of targets ``y`` under the
    NNGP of a depth-``depth`` network with observation noise ``noise``
    (:func:`rmtjax.regression.log_marginal_likelihood`; Rasmussen & Williams 2006, eq. 2.30)."""

    x: Array
    y: Array
    noise: Array
    W_std: Array
    b_std: Array
    depth: int = eqx.field(static=True)

    def __init__(self, x, y, *, depth: int, noise: ArrayLike = 1e-2, W_std: ArrayLike = 1.0, b_std: ArrayLike = 0.0):
        self.x = real(x, "x", ndim=2)
        y = as_real(y, "y", ndim=(1, 2))
        self.y = real(y.reshape(y.shape[0], -1), "y")
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError(f"y must have one row per input: x {self.x.shape}, y {self.y.shape}")
        self.depth = static_int(depth, "depth", lo=1, hi=100_000)
        self.noise = _scalar(noise, "noise", lo=0.0, lo_open=True)
        self.W_std = _scalar(W_std, "W_std", lo=0.0, lo_open=True)
        self.b_std = _scalar(b_std, "b_std", lo=0.0)

    @_jitted
    def __call__(self, activation):
        k = kernels.kernel(self.x, None, _net(activation, self.depth, self.W_std, self.b_std)).nngp
        return -regression.log_marginal_likelihood(k, self.y, self.noise) / self.x.shape[0]
