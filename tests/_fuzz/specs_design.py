"""Fuzz entries for rmtjax.design.

Checks independent of the solves where possible: a shaped activation's conditions are read back through
the kernel engine's own length map (Q(1) = 1), the local-map values are a covariance's (Q >= 0, C(0) in
[0, 1], slopes >= 0), objectives are non-negative where they are squared misses."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import rmtjax.activations as A
from rmtjax.design import (
    Branching,
    Chain,
    Criticality,
    JacobianEdge,
    JacobianMoments,
    KernelDistance,
    KernelShaping,
    MarginalLikelihood,
    NTKCondition,
    ValidationLoss,
    dks,
    hermite_family,
    local_maps,
    tat,
    tat_leaky_relu,
    transformed_family,
)

from .harness import Entry, array, fixed_int, number, sample


def _f(x):
    return float(np.asarray(x))


class _Shaped(NamedTuple):
    activation: object
    q_slope: object
    c_slope: object


def _shaped(s):
    return _Shaped(s.activation, s.local.q_slope, s.local.c_slope)


def _unit_q(kwargs, out):
    q = _f(out.activation.length_map(np.float64(1.0)))
    assert abs(q - 1.0) < 1e-7, q  # the engine's quadrature (trapezoid) against the shaping's


def _maps(kwargs, out):
    assert _f(out.q) >= 0 and -1e-12 <= _f(out.c0) <= 1 + 1e-12 and _f(out.c_slope) >= 0, out


def _nonnegative(kwargs, out):
    assert _f(out) >= -1e-15, out


# dks, tat and tat_leaky_relu compile a Newton solver per depth (eagerly, and under jit for every
# example that raises at run time): their depth is their valid example's, or a bad value (fixed_int)
X = array((5, 3))
Y = array((5,))

ENTRIES = [
    # (the shaping's C(0) and mean are zero to rounding, ~1e-15: left out of the eager-vs-jit comparison,
    # which is relative to each output's largest entry)
    Entry("design.dks", lambda slope, q_slope, depth: _shaped(dks(A.Tanh(), Chain(depth), slope=slope, q_slope=q_slope)),
          {"slope": number(0.5, 3.0), "q_slope": number(0.5, 1.5), "depth": fixed_int(5, 1)}, static=("depth",),
          check=_unit_q, max_examples=4, valid=lambda: {"slope": 1.5, "q_slope": 1.0, "depth": 5}),
    Entry("design.tat", lambda curvature, depth: tat(A.Softplus(), Chain(depth), curvature=curvature),
          {"curvature": number(0.0, 2.0), "depth": fixed_int(10, 1)}, static=("depth",), check=_unit_q, max_examples=4,
          valid=lambda: {"curvature": 0.3, "depth": 10}),
    Entry("design.tat_leaky_relu", lambda c0, depth: tat_leaky_relu(Chain(depth), c0=c0),
          {"c0": number(0.0, 1.0), "depth": fixed_int(10, 1)}, static=("depth",), check=_unit_q, max_examples=4,
          valid=lambda: {"c0": 0.5, "depth": 10}),
    Entry("design.local_maps", lambda alpha, beta, gamma, delta: local_maps(A.Transformed(A.Elu(), alpha, beta, gamma,
                                                                                         delta)),
          {"alpha": number(0.1, 3.0), "beta": number(-2.0, 2.0), "gamma": number(0.1, 3.0), "delta": number(-2.0, 2.0)},
          names=("Transformed",), check=_maps, max_examples=4,
          valid=lambda: {"alpha": 1.2, "beta": 0.3, "gamma": 0.8, "delta": -0.5}),
    Entry("design.hermite_family", lambda coeffs: hermite_family(coeffs).init, {"coeffs": array((4,))},
          max_examples=4),
    Entry("design.transformed_family", lambda alpha, beta: transformed_family(A.Tanh(), alpha=alpha, beta=beta).init,
          {"alpha": number(0.0, 3.0), "beta": number(-2.0, 2.0)}, max_examples=4,
          valid=lambda: {"alpha": 0.7, "beta": 0.2}),
    Entry("design.Criticality", lambda sigma_w2, sigma_b2: Criticality(sigma_w2, sigma_b2)(A.Erf()),
          {"sigma_w2": number(0.0, 4.0), "sigma_b2": number(0.0, 1.0)}, check=_nonnegative, max_examples=4,
          valid=lambda: {"sigma_w2": 1.5, "sigma_b2": 0.1}),
    Entry("design.KernelShaping", lambda slope, curvature: KernelShaping(Chain(4), slope=slope, curvature=curvature)(
        A.Tanh()), {"slope": number(0.5, 3.0), "curvature": number(0.0, 2.0)}, check=_nonnegative, max_examples=4,
          valid=lambda: {"slope": 1.5, "curvature": 0.3}),
    Entry("design.JacobianMoments", lambda sigma_w2, sigma_b2: JacobianMoments(sigma_w2, sigma_b2, depth=3)(A.Tanh()),
          {"sigma_w2": number(0.0, 4.0), "sigma_b2": number(0.0, 1.0)}, check=_nonnegative, max_examples=4,
          valid=lambda: {"sigma_w2": 1.2, "sigma_b2": 0.1}),
    Entry("design.JacobianEdge", lambda sigma_w2, sigma_b2: JacobianEdge(sigma_w2, sigma_b2, depth=2)(A.Tanh()),
          {"sigma_w2": number(0.0, 4.0), "sigma_b2": number(0.0, 1.0)}, check=_nonnegative, max_examples=3,
          allow_inf=("",), valid=lambda: {"sigma_w2": 1.2, "sigma_b2": 0.1}),
    Entry("design.Branching", lambda mu, extinction: Branching(mu=mu, extinction=extinction)(A.Erf()),
          {"mu": number(0.0, 3.0), "extinction": number(0.0, 1.0)}, check=_nonnegative, max_examples=4),
    Entry("design.KernelDistance", lambda target: KernelDistance(target, depth=2, rho=np.linspace(-1, 1, 5))(A.Erf()),
          {"target": array((5,), -1.0, 1.0)}, check=_nonnegative, max_examples=4),
    Entry("design.NTKCondition", lambda x: NTKCondition(x, depth=2)(A.Erf()), {"x": X}, check=_nonnegative,
          max_examples=3),
    Entry("design.ValidationLoss", lambda x_train, y_train, ridge: ValidationLoss(
        x_train, y_train, x_train[:2] + 0.1, y_train[:2], depth=2, ridge=ridge)(A.Erf()),
          {"x_train": X, "y_train": Y, "ridge": number(0.0, 1.0)}, check=_nonnegative, max_examples=3,
          valid=lambda: {"x_train": sample((5, 3)), "y_train": sample((5,)), "ridge": 0.1}),
    Entry("design.MarginalLikelihood", lambda x, y, noise: MarginalLikelihood(x, y, depth=2, noise=noise)(A.Erf()),
          {"x": X, "y": Y, "noise": number(0.0, 1.0)}, max_examples=3,
          valid=lambda: {"x": sample((5, 3)), "y": sample((5,)), "noise": 0.1}),
]
EXEMPT = {
    "design.AbstractNetwork": "abstract base class",
    "design.AbstractObjective": "abstract base class",
    "design.Chain": "a network's static structure (a depth; bad input tested in tests/test_design.py)",
    "design.Residual": "a network's static structure (ints and a static weight; bad input tested in tests/test_design.py)",
    "design.Design": "a result container",
    "design.DesignWarning": "a warning class",
    "design.Family": "a container of a build function and its start (validated; tested in tests/test_design.py)",
    "design.LocalMaps": "a NamedTuple of results",
    "design.Shaping": "a result container",
    "design.HermiteSeries": "re-export of activations.HermiteSeries",
    "design.Transformed": "re-export of activations.Transformed",
    "design.design": "an optimization loop that compiles itself (not a traced function; bad input tested in "
                     "tests/test_design.py)",
    "design.parameters_of": "takes an activation module (no numeric argument; tested in tests/test_design.py)",
}
