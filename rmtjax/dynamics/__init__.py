r"""Online-SGD dynamics of two-layer networks: order-parameter ODEs and matching simulations.

* :func:`committee_ode` — the Saad-Solla equations of a soft committee machine learning a
  teacher (Saad & Solla 1995; Biehl & Schwarze 1995; trainable second layer and output noise as
  in Goldt et al. 2019), integrated with diffrax; :func:`committee_integrals` (closed forms for
  ``Erf``, ``Relu``, ``Identity``; Gauss-Hermite quadrature for any activation);
  :func:`generalization_error`; :func:`committee_fixed_point` (plateaus and their escape rate).
* :func:`simulate_committee` — online SGD in JAX recording the same order parameters.
* The hidden manifold model (Goldt et al. 2020, arXiv:1909.11500) and Gaussian equivalence
  (arXiv:2006.14709): :class:`Generator`, :func:`analytic_moments`,
  :func:`monte_carlo_moments`, :func:`hidden_manifold_densities`,
  :func:`hidden_manifold_ode`, :func:`simulate_hidden_manifold`,
  :func:`local_field_distance`.

Example:
    >>> import jax.numpy as jnp
    >>> from rmtjax import dynamics
    >>> s0 = dynamics.CommitteeState(0.1 * jnp.eye(2), 0.01 * jnp.eye(2), jnp.ones(2))
    >>> traj = dynamics.committee_ode(s0, jnp.eye(2), jnp.ones(2), jnp.linspace(0, 100, 11), 0.5)
"""

from ._committee import CommitteeState as CommitteeState
from ._committee import FixedPoint as FixedPoint
from ._committee import Trajectory as Trajectory
from ._committee import committee_fixed_point as committee_fixed_point
from ._committee import committee_ode as committee_ode
from ._committee import committee_rhs as committee_rhs
from ._committee import generalization_error as generalization_error
from ._committee import saad_solla_erf as saad_solla_erf
from ._hidden_manifold import Densities as Densities
from ._hidden_manifold import Generator as Generator
from ._hidden_manifold import GeneratorMoments as GeneratorMoments
from ._hidden_manifold import HiddenManifoldRun as HiddenManifoldRun
from ._hidden_manifold import LocalFieldDistance as LocalFieldDistance
from ._hidden_manifold import analytic_moments as analytic_moments
from ._hidden_manifold import hidden_manifold_densities as hidden_manifold_densities
from ._hidden_manifold import hidden_manifold_ode as hidden_manifold_ode
from ._hidden_manifold import local_field_distance as local_field_distance
from ._hidden_manifold import monte_carlo_moments as monte_carlo_moments
from ._hidden_manifold import simulate_hidden_manifold as simulate_hidden_manifold
from ._integrals import Integrals as Integrals
from ._integrals import committee_integrals as committee_integrals
from ._integrals import pair_integrals as pair_integrals
from ._simulation import online_sgd as online_sgd
from ._simulation import simulate_committee as simulate_committee
