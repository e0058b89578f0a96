"""Fuzz entries for rmtjax.activations, rmtjax.gaussian, rmtjax.kernels and rmtjax.stax.

An activation entry builds the activation from drawn parameters and takes its Gaussian
expectations at drawn (q1, q2, q12) — so the constructor's checks (complex, bool, NaN
parameters) and the covariance checks both run, eagerly and under jit. Checks are invariants:
Cauchy-Schwarz against the diagonal, symmetry in (q1, q2), kernels symmetric with a
non-negative diagonal, and for the stax layers agreement with the functional core."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import rmtjax.activations as A
from rmtjax import stax
from rmtjax.gaussian import (Auto, ClosedForm, GaussHermite, Mehler, MonteCarlo, gaussian_expectations,
                             hermite_coefficients_at)
from rmtjax import kernels as K
from rmtjax.kernels import FullyConnected, bucket_size, kernel, kernel_diagonal, kernel_matvec

from .harness import Entry, array, number, sample, static_int

Q = number(0.0, 10.0)
Q12 = number(-3.0, 3.0)
P = number(-3.0, 3.0)
FLAG = st.sampled_from([True, False, False, 1, None, "yes"])


def _f(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def _cauchy_schwarz(make):
    """|E[phi(u)phi(v)]| <= sqrt(E[phi(u)^2] E[phi(v)^2]) (and the same for phi'), from the
    diagonal evaluated separately; and the expectation is symmetric in (u, v)."""

    def check(kwargs, out):
        act = make(**{k: v for k, v in kwargs.items() if k not in ("q1", "q2", "q12")})
        q1, q2, q12 = kwargs["q1"], kwargs["q2"], kwargs["q12"]
        d1 = gaussian_expectations(act, q1, q1, q1)
        d2 = gaussian_expectations(act, q2, q2, q2)
        swapped = gaussian_expectations(act, q2, q1, q12)
        for v, a, b, s in ((out.k, d1.k, d2.k, swapped.k), (out.kdot, d1.kdot, d2.kdot, swapped.kdot)):
            v, a, b, s = _f(v), _f(a), _f(b), _f(s)
            if not (np.isfinite(v) and np.isfinite(a) and np.isfinite(b)):
                continue
            tol = 1e-6 if isinstance(act, (A.Tanh, A.Sigmoid, A.Softplus, A.Swish, A.Elu, A.Mish, A.HardTanh,
                                           A.Custom, A.Transformed)) else 1e-9
            assert abs(v) <= math.sqrt(max(a * b, 0.0)) * (1 + tol) + 1e-12, (v, a, b)
            assert abs(v - s) <= tol * max(abs(v), math.sqrt(max(a * b, 0.0)), 1e-300), (v, s)

    return check


def _act_entry(name, make, params, *, static=(), allow_inf=(), max_examples=8, slow=False, valid=None):
    def fn(q1, q2, q12, **p):
        return gaussian_expectations(make(**p), q1, q2, q12)

    return Entry(f"activations.{name}", fn, {**params, "q1": Q, "q2": Q, "q12": Q12}, static=static,
                 names=("q1", "q2", "q12"), allow_inf=allow_inf, check=_cauchy_schwarz(make),
                 max_examples=max_examples, slow=slow, valid=valid)


# a covariance with q12^2 < q1 q2 (for ``valid=``)
Q_VALID = {"q1": 1.0, "q2": 2.0, "q12": 0.5}


def _scaled_tanh(x, p):
    return jnp.tanh(x if p is None else p * x)


DEGREE = st.one_of(st.integers(0, 8), st.sampled_from([40, 100, 101, -1, True, 2.5, "3", None]))
COEF = st.one_of(array((4,), -2.0, 2.0), st.sampled_from([[], [1.0, float("nan")], np.ones(102), "x"]))

ACTIVATIONS = [
    _act_entry("ABRelu", lambda a, b: A.ABRelu(a, b), {"a": P, "b": P}),
    _act_entry("Abs", lambda: A.Abs(), {}),
    _act_entry("Cos", lambda a, b, c: A.Cos(a, b, c), {"a": P, "b": P, "c": P}),
    _act_entry("Custom", lambda params: A.Custom(_scaled_tanh, params), {"params": P}),
    _act_entry("Elu", lambda alpha: A.Elu(alpha), {"alpha": P}),
    _act_entry("Erf", lambda a, b, c: A.Erf(a, b, c), {"a": P, "b": P, "c": P}),
    _act_entry("Exp", lambda a, b: A.Exp(a, b), {"a": P, "b": P}, allow_inf=("k",)),
    _act_entry("Gaussian", lambda a, b: A.Gaussian(a, b), {"a": P, "b": P},
               valid=lambda: {"a": 1.0, "b": -0.5, **Q_VALID}),
    _act_entry("Gelu", lambda approximate: A.Gelu(approximate=approximate), {"approximate": FLAG},
               static=("approximate",)),
    _act_entry("HardTanh", lambda: A.HardTanh(), {}),
    _act_entry("Hermite", lambda degree: A.Hermite(degree), {"degree": DEGREE}, static=("degree",),
               allow_inf=("k",)),
    _act_entry("HermiteSeries", lambda coeffs: A.HermiteSeries(coeffs), {"coeffs": COEF}, allow_inf=("k",)),
    _act_entry("Identity", lambda: A.Identity(), {}),
    _act_entry("LeakyRelu", lambda alpha: A.LeakyRelu(alpha), {"alpha": P}),
    _act_entry("Mish", lambda: A.Mish(), {}),
    _act_entry("Monomial", lambda degree: A.Monomial(degree), {"degree": DEGREE}, static=("degree",),
               allow_inf=("k",)),
    _act_entry("Polynomial", lambda coef: A.Polynomial(coef), {"coef": COEF}, allow_inf=("k",)),
    _act_entry("Rbf", lambda gamma: A.Rbf(gamma), {"gamma": P}),
    _act_entry("RectifiedMonomial", lambda degree: A.RectifiedMonomial(degree), {"degree": DEGREE},
               static=("degree",), allow_inf=("k",)),
    _act_entry("Relu", lambda: A.Relu(), {}),
    _act_entry("Sigmoid", lambda: A.Sigmoid(), {}),
    _act_entry("Sign", lambda: A.Sign(), {}),
    _act_entry("Sin", lambda a, b, c: A.Sin(a, b, c), {"a": P, "b": P, "c": P}),
    _act_entry("Softplus", lambda: A.Softplus(), {}),
    _act_entry("Swish", lambda beta: A.Swish(beta), {"beta": P}),
    _act_entry("Tanh", lambda: A.Tanh(), {}),
    _act_entry("Transformed", lambda alpha, beta, gamma, delta: A.Transformed(A.Tanh(), alpha, beta, gamma, delta),
               {"alpha": P, "beta": P, "gamma": P, "delta": P}),
]


# --------------------------------------------------------------------------------------------
# rmtjax.gaussian
# --------------------------------------------------------------------------------------------


METHOD_ACTS = st.one_of(st.sampled_from([A.Tanh(), A.Erf(), A.Relu()]), st.sampled_from(["tanh", None]))


def _method_entry(name, make, params, static, valid=None):
    def fn(activation, q1, q2, q12, **p):
        return gaussian_expectations(activation, q1, q2, q12, method=make(**p))

    def check(kwargs, out):
        # within the method's accuracy of the closed form / Mehler(128) reference
        ref = gaussian_expectations(kwargs["activation"], kwargs["q1"], kwargs["q2"], kwargs["q12"],
                                    method=Auto(Mehler(128)))
        scale = math.sqrt(max(_f(gaussian_expectations(kwargs["activation"], kwargs["q1"], kwargs["q1"],
                                                       kwargs["q1"]).k)
                              * _f(gaussian_expectations(kwargs["activation"], kwargs["q2"], kwargs["q2"],
                                                         kwargs["q2"]).k), 0.0))
        if name == "MonteCarlo" or not all(np.isfinite([_f(ref.k), scale])):
            return
        assert abs(_f(out.k) - _f(ref.k)) <= 0.05 * scale + 1e-9, (out.k, ref.k)

    return Entry(f"gaussian.{name}", fn, {"activation": METHOD_ACTS, "q1": Q, "q2": Q, "q12": Q12, **params},
                 static=static, names=("activation", "method") + tuple(params), check=check,
                 max_examples=8, valid=valid)


def _parseval(kwargs, out):
    """The truncated sum of squared Hermite coefficients never exceeds E[tanh(sqrt(q) z)^2]."""
    total = _f(gaussian_expectations(A.Tanh(), kwargs["q"], kwargs["q"], kwargs["q"]).k)
    assert _f(jnp.sum(out**2)) <= total * (1 + 1e-9) + 1e-12


GAUSSIAN = [
    Entry("gaussian.gaussian_expectations",
          lambda activation, q1, q2, q12: gaussian_expectations(activation, q1, q2, q12),
          {"activation": METHOD_ACTS, "q1": Q, "q2": Q, "q12": Q12},
          check=lambda kw, out: _cauchy_schwarz(lambda: kw["activation"])(
              {k: v for k, v in kw.items() if k != "activation"}, out), max_examples=12),
    _method_entry("Auto", lambda: Auto(), {}, ()),
    _method_entry("ClosedForm", lambda: ClosedForm(), {}, (), valid=lambda: {"activation": A.Erf(), **Q_VALID}),
    _method_entry("GaussHermite", lambda deg: GaussHermite(deg), {"deg": static_int(2, 40)}, ("deg",)),
    _method_entry("Mehler", lambda order, step: Mehler(order, step),
                  {"order": static_int(1, 64), "step": st.sampled_from([0.04, 0.1, 0.5, float("nan"), True, "0.1"])},
                  ("order", "step")),
    _method_entry("MonteCarlo", lambda num_samples, seed: MonteCarlo(num_samples, seed),
                  {"num_samples": st.sampled_from([1000, 0, -5, True, 2.5]), "seed": static_int(0, 5)},
                  ("num_samples", "seed")),
    Entry("gaussian.hermite_coefficients_at",
          lambda q, order: hermite_coefficients_at(A.Tanh(), q, order=order),
          {"q": Q, "order": static_int(0, 12)}, static=("order",), check=_parseval, max_examples=8),
]


# --------------------------------------------------------------------------------------------
# rmtjax.kernels
# --------------------------------------------------------------------------------------------


KACTS = st.one_of(st.sampled_from([A.Relu(), A.Erf(), A.Gelu()]), st.sampled_from(["relu", None]))


def _kernel_check(kwargs, out):
    for m in (out.nngp, out.ntk):
        m = _f(m)
        assert np.allclose(m, m.T, rtol=1e-12, atol=1e-300), "kernel not symmetric"
        assert np.all(np.diag(m) >= -1e-12 * np.max(np.abs(m))), "negative variance"
        if np.all(np.isfinite(m)) and np.max(np.abs(m)) < 1e100:
            ev = np.linalg.eigvalsh(m)
            assert ev[0] >= -1e-8 * max(abs(ev[-1]), 1e-300), ev


KERNELS = [
    Entry("kernels.kernel",
          lambda x1, W_std, b_std, activation, depth: kernel(x1, None, FullyConnected(depth, W_std, b_std, activation)),
          {"x1": array((3, 2)), "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0), "activation": KACTS,
           "depth": static_int(0, 3)}, static=("depth",), check=_kernel_check, max_examples=10),
    Entry("kernels.FullyConnected",
          lambda W_std, b_std, depth, parameterization, widths: kernel(
              np.eye(2, 3), None, FullyConnected(depth, W_std, b_std, A.Erf(), parameterization=parameterization,
                                                 widths=widths)),
          {"W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0), "depth": static_int(0, 2),
           "parameterization": st.sampled_from(["ntk", "standard", "mup", None]),
           "widths": st.sampled_from([None, 4, (4, 4), 0, True, (4, 2.5), "4"])},
          static=("depth", "parameterization", "widths"), check=_kernel_check, max_examples=10),
    Entry("kernels.bucket_size", lambda n, tile: bucket_size(n, tile),
          {"n": static_int(1, 3000), "tile": static_int(8, 256)}, static=("n", "tile"), jit=False,
          check=lambda kw, out: _bucket_check(kw, out), max_examples=15),
]


def _net_kernel(x1, *layers):
    return kernel(x1, None, K.Serial(K.Dense(1.3, 0.1), *layers, K.Dense(1.1, 0.2)))


def _stack(W_std, depth):
    # the stacked block is built for a valid depth only (10**9 copies would not fit in memory); Stack
    # itself must reject the others
    k = depth if isinstance(depth, int) and not isinstance(depth, bool) and 1 <= depth <= 3 else 1
    blocks = [K.Serial(K.Activation(A.Relu()), K.Dense(W_std, 0.1))] * k
    return K.Stack(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *blocks), depth)


def _diagonal_check(kwargs, out):
    assert np.all(_f(out.nngp) >= 0) and np.all(_f(out.ntk) >= 0), out
    ref = kernel(kwargs["x"], None, FullyConnected(kwargs["depth"], kwargs["W_std"], kwargs["b_std"], A.Erf()))
    np.testing.assert_allclose(_f(out.nngp), np.diag(_f(ref.nngp)), rtol=1e-12, atol=1e-300)


X = array((3, 2))
WEIGHTS = array((2,), -2.0, 2.0)
GRAPH_LAYERS = st.sampled_from([(K.Activation(A.Erf()),), (K.Identity(), K.Activation(A.Relu())), (), (None,),
                                (stax.Relu(),), (A.Relu(),)])

GRAPH = [
    Entry("kernels.Dense",
          lambda x1, W_std, b_std, out_dim, parameterization: kernel(x1, None, K.Serial(
              K.Dense(W_std, b_std, out_dim=out_dim, parameterization=parameterization), K.Activation(A.Erf()),
              K.Dense(1.1, 0.2, parameterization=parameterization))),
          {"x1": X, "W_std": number(0.0, 3.0), "b_std": st.one_of(number(0.0, 1.0), st.just(None)),
           "out_dim": st.sampled_from([None, 4, 0, True, 2.5]), "parameterization": st.sampled_from(["ntk", "standard", "mup"])},
          static=("out_dim", "parameterization"), check=_kernel_check, max_examples=10,
          valid=lambda: {"x1": sample((3, 2)), "W_std": 1.2, "b_std": 0.1, "out_dim": 4, "parameterization": "standard"}),
    Entry("kernels.Activation", lambda x1, activation, method: _net_kernel(x1, K.Activation(activation, method)),
          {"x1": X, "activation": KACTS, "method": st.sampled_from([None, Auto(), Mehler(16), "mehler"])},
          static=("method",), check=_kernel_check, max_examples=8),
    Entry("kernels.Identity", lambda x1: _net_kernel(x1, K.Identity()), {"x1": X}, check=_kernel_check,
          max_examples=4),
    Entry("kernels.Serial", lambda x1, layers: _net_kernel(x1, K.Serial(*layers)), {"x1": X, "layers": GRAPH_LAYERS},
          static=("layers",), check=_kernel_check, max_examples=8),
    Entry("kernels.Stack", lambda x1, W_std, depth: _net_kernel(x1, _stack(W_std, depth)),
          {"x1": X, "W_std": number(0.0, 3.0), "depth": static_int(1, 3)}, static=("depth",), check=_kernel_check,
          max_examples=8),
    Entry("kernels.Parallel",
          lambda x1, weights: _net_kernel(x1, K.Parallel(K.Activation(A.Erf()), K.Activation(A.Relu()), weights=weights)),
          {"x1": X, "weights": st.one_of(WEIGHTS, st.just(None))}, check=_kernel_check, max_examples=8),
    Entry("kernels.Product",
          lambda x1, W_std: _net_kernel(x1, K.Product(K.Dense(W_std, 0.1), K.Serial(K.Activation(A.Erf()),
                                                                                    K.Dense(1.3, 0.2)))),
          {"x1": X, "W_std": P}, check=_kernel_check, max_examples=8),
    Entry("kernels.Residual",
          lambda x1, weights: _net_kernel(x1, K.Residual(K.Serial(K.Activation(A.Relu()), K.Dense(1.2, 0.1)), weights)),
          {"x1": X, "weights": st.one_of(WEIGHTS, st.just(None))}, check=_kernel_check, max_examples=8),
    Entry("kernels.kernel_diagonal",
          lambda x, W_std, b_std, depth: kernel_diagonal(x, FullyConnected(depth, W_std, b_std, A.Erf())),
          {"x": array((3, 2)), "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0), "depth": static_int(0, 3)},
          static=("depth",), check=_diagonal_check, max_examples=8),
]


def _bucket_check(kwargs, out):
    n, tile = kwargs["n"], kwargs["tile"]
    assert out >= n, (n, out)
    assert out <= max(8, 2 * n) if n <= tile else out <= tile * math.ceil(1.5 * math.ceil(n / tile)), (n, tile, out)


# --------------------------------------------------------------------------------------------
# rmtjax.stax
# --------------------------------------------------------------------------------------------


def _stax_entry(name, make_layer, params, *, static=(), allow_inf=(), max_examples=6, jit=False, core=None, names=(),
                valid=None):
    """``serial(Dense, layer, Dense)`` built from drawn parameters, its kernel at drawn inputs;
    ``core(**params)`` (an activation module) gives the functional-core reference."""

    def fn(x1, **p):
        return stax.serial(stax.Dense(4, 1.3, 0.1), make_layer(**p), stax.Dense(1, 1.1, 0.2))[2](x1)

    def check(kwargs, out):
        if core is None:
            return
        x1 = kwargs["x1"]
        p = {k: v for k, v in kwargs.items() if k != "x1"}
        ref = kernel(x1, None, FullyConnected(1, jnp.array([1.3, 1.1]), jnp.array([0.1, 0.2]), core(**p)))
        for a, b in ((out.nngp, ref.nngp), (out.ntk, ref.ntk)):
            a, b = _f(a), _f(b)
            fin = np.isfinite(b)
            np.testing.assert_allclose(a[fin], b[fin], rtol=1e-10, atol=1e-12 * max(np.max(np.abs(b[fin]), initial=0), 1))

    return Entry(f"stax.{name}", fn, {"x1": X, **params}, static=static, allow_inf=allow_inf, check=check,
                 max_examples=max_examples, jit=jit, names=names,
                 valid=None if valid is None else lambda: {"x1": sample((3, 2)), **valid()})


STAX = [
    _stax_entry("ABRelu", lambda a, b: stax.ABRelu(a, b), {"a": P, "b": P}, core=lambda a, b: A.ABRelu(a, b), jit=True),
    _stax_entry("Abs", lambda: stax.Abs(), {}, core=lambda: A.Abs()),
    _stax_entry("Activation", lambda activation: stax.Activation(activation),
                {"activation": st.one_of(st.sampled_from([A.Tanh(), A.Relu()]), st.sampled_from(["tanh", None]))},
                core=lambda activation: activation),
    _stax_entry("Cos", lambda a, b, c: stax.Cos(a, b, c), {"a": P, "b": P, "c": P}, core=lambda a, b, c: A.Cos(a, b, c)),
    _stax_entry("Dense", lambda W_std, b_std, out_dim: stax.Dense(out_dim, W_std, b_std),
                {"W_std": number(0.0, 3.0), "b_std": st.one_of(number(0.0, 1.0), st.just(None)),
                 "out_dim": static_int(1, 4)}, static=("out_dim",), jit=True),
    _stax_entry("ElementwiseNumerical", lambda deg: stax.ElementwiseNumerical(jnp.tanh, deg),
                {"deg": static_int(2, 30)}, static=("deg",)),
    _stax_entry("Erf", lambda a, b, c: stax.Erf(a, b, c), {"a": P, "b": P, "c": P}, core=lambda a, b, c: A.Erf(a, b, c),
                jit=True),
    _stax_entry("Exp", lambda a, b: stax.Exp(a, b), {"a": P, "b": P}, core=lambda a, b: A.Exp(a, b),
                allow_inf=("nngp", "ntk")),
    # the drawn count is FanOut's ``num``; a count that does not match parallel's two layers is an
    # error naming "layers"
    _stax_entry("FanInSum", lambda num: stax.serial(stax.FanOut(num), stax.parallel(*[stax.Erf()] * 2),
                                                    stax.FanInSum()),
                {"num": static_int(1, 3)}, static=("num",), names=("layers",), valid=lambda: {"num": 2}),
    _stax_entry("FanOut", lambda num: stax.serial(stax.FanOut(num), stax.parallel(*[stax.Relu()] * 2), stax.FanInSum()),
                {"num": static_int(1, 3)}, static=("num",), names=("layers",), valid=lambda: {"num": 2}),
    _stax_entry("Gaussian", lambda a, b: stax.Gaussian(a, b), {"a": P, "b": P}, core=lambda a, b: A.Gaussian(a, b),
                valid=lambda: {"a": 1.0, "b": -0.5}),
    _stax_entry("Gelu", lambda approximate: stax.Gelu(approximate), {"approximate": FLAG}, static=("approximate",),
                core=lambda approximate: A.Gelu(approximate=approximate)),
    _stax_entry("Hermite", lambda degree: stax.Hermite(degree), {"degree": DEGREE}, static=("degree",),
                core=lambda degree: A.Hermite(degree), allow_inf=("nngp", "ntk")),
    _stax_entry("Identity", lambda: stax.Identity(), {}),
    _stax_entry("LeakyRelu", lambda alpha: stax.LeakyRelu(alpha), {"alpha": P}, core=lambda alpha: A.LeakyRelu(alpha)),
    _stax_entry("Monomial", lambda degree: stax.Monomial(degree), {"degree": DEGREE}, static=("degree",),
                core=lambda degree: A.Monomial(degree), allow_inf=("nngp", "ntk")),
    _stax_entry("Polynomial", lambda coef: stax.Polynomial(coef), {"coef": COEF}, core=lambda coef: A.Polynomial(coef),
                allow_inf=("nngp", "ntk")),
    _stax_entry("Rbf", lambda gamma: stax.Rbf(gamma), {"gamma": P}, core=lambda gamma: A.Rbf(gamma)),
    _stax_entry("RectifiedMonomial", lambda degree: stax.RectifiedMonomial(degree), {"degree": DEGREE},
                static=("degree",), core=lambda degree: A.RectifiedMonomial(degree), allow_inf=("nngp", "ntk")),
    _stax_entry("Relu", lambda do_stabilize: stax.Relu(do_stabilize), {"do_stabilize": FLAG},
                static=("do_stabilize",), core=lambda do_stabilize: A.Relu()),
    _stax_entry("Sign", lambda: stax.Sign(), {}, core=lambda: A.Sign()),
    _stax_entry("Sin", lambda a, b, c: stax.Sin(a, b, c), {"a": P, "b": P, "c": P}, core=lambda a, b, c: A.Sin(a, b, c)),
    _stax_entry("parallel", lambda layers: stax.serial(stax.FanOut(2), stax.parallel(*layers), stax.FanInSum()),
                {"layers": st.sampled_from([(), (stax.Erf(),), (stax.Erf(), stax.Relu()), (stax.Erf(),) * 3,
                                            (stax.Erf(), None), (stax.Erf(), 2.5)])},
                valid=lambda: {"layers": (stax.Erf(), stax.Relu())}),
    _stax_entry("serial", lambda layer: stax.serial(stax.Relu(), layer), {"layer": st.sampled_from(
        [stax.Identity(), stax.Erf(), (1, 2, 3), None, stax.FanInSum()])}, static=("layer",)),
    # the triple of engine layers: its kernel_fn (between the facade's two Dense layers)
    _stax_entry("layer", lambda net: stax.layer(net), {"net": st.sampled_from(
        [K.Activation(A.Erf()), K.Serial(K.Activation(A.Relu()), K.Dense(1.2, 0.1, out_dim=4)), None, stax.Relu(),
         "relu"])}, static=("net",), valid=lambda: {"net": K.Activation(A.Erf())}),
]

def _matvec_check(kwargs, out):
    net = FullyConnected(kwargs["depth"], kwargs["W_std"], kwargs["b_std"], kwargs["activation"])
    ref = np.asarray(kernel(kwargs["x1"], None, net).nngp) @ np.asarray(kwargs["v"], float)
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    assert np.allclose(np.asarray(out), ref, rtol=1e-9, atol=1e-12 * scale), (out, ref)


MATVEC = [
    Entry("kernels.kernel_matvec",
          lambda x1, v, W_std, b_std, activation, depth: kernel_matvec(
              x1, None, v, FullyConnected(depth, W_std, b_std, activation), tile=8),
          {"x1": array((5, 2)), "v": array((5,)), "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0),
           "activation": KACTS, "depth": static_int(0, 2)}, static=("depth",), check=_matvec_check, max_examples=8,
          valid=lambda: {"x1": sample((5, 2), -1.0, 1.0), "v": sample((5,), -1.0, 1.0, seed=1), "W_std": 1.3,
                         "b_std": 0.1, "activation": A.Relu(), "depth": 1}),
]

IMG = array((2, 4, 4, 2))
PAD = st.sampled_from(["SAME", "VALID", "CIRCULAR", "FULL"])


def _conv_check(kwargs, out):
    """A kernel of images with itself: symmetric, with a nonnegative diagonal."""
    for k in (out.nngp, out.ntk):
        k = _f(k)
        np.testing.assert_allclose(k, k.T, rtol=1e-12, atol=1e-14 * max(np.max(np.abs(k)), 1))
        assert np.all(np.diagonal(k) >= -1e-14 * max(np.max(np.abs(k)), 1))


def _conv_entry(name, make_layers, params, *, static=(), names=(), valid=None, max_examples=5, readout=True):
    """``serial(Conv, *layers, [Flatten], Dense)`` on images ``(2, 4, 4, 2)`` (``readout=False``:
    the layers end with their own readout)."""

    def fn(x1, **p):
        tail = [stax.Flatten()] if readout else []
        return stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=1.3, b_std=0.1), *make_layers(**p), *tail,
                           stax.Dense(1, 1.1, 0.2))[2](x1)

    return Entry(f"stax.{name}", fn, {"x1": IMG, **params}, static=static, check=_conv_check, jit=False,
                 max_examples=max_examples, names=names,
                 valid=lambda: {"x1": sample((2, 4, 4, 2)), **(valid() if valid else {})})


CONV = [
    _conv_entry("Conv", lambda W_std, b_std, padding: [stax.Relu(), stax.Conv(3, (2, 2), padding=padding, W_std=W_std,
                                                                               b_std=b_std)],
                {"W_std": P, "b_std": P, "padding": PAD}, static=("padding",),
                valid=lambda: {"W_std": 1.2, "b_std": 0.1, "padding": "SAME"}),
    _conv_entry("ConvTranspose", lambda W_std, padding: [stax.Relu(), stax.ConvTranspose(3, (2, 2), (2, 2), padding,
                                                                                          W_std=W_std)],
                {"W_std": P, "padding": PAD}, static=("padding",), valid=lambda: {"W_std": 1.2, "padding": "SAME"}),
    _conv_entry("AvgPool", lambda padding: [stax.Erf(), stax.AvgPool((2, 2), (2, 2), padding)], {"padding": PAD},
                static=("padding",), valid=lambda: {"padding": "VALID"}),
    _conv_entry("SumPool", lambda padding: [stax.Relu(), stax.SumPool((2, 2), (1, 1), padding)], {"padding": PAD},
                static=("padding",), valid=lambda: {"padding": "SAME"}),
    _conv_entry("GlobalAvgPool", lambda: [stax.Relu(), stax.GlobalAvgPool()], {}, readout=False),
    _conv_entry("GlobalSumPool", lambda: [stax.Relu(), stax.GlobalSumPool()], {}, readout=False),
    _conv_entry("Flatten", lambda: [stax.Relu(), stax.Flatten()], {}, readout=False),
    _conv_entry("LayerNorm", lambda eps: [stax.LayerNorm(axis=(1, 2, 3), eps=eps), stax.Relu()], {"eps": P},
                valid=lambda: {"eps": 1e-3}),
    _conv_entry("Dropout", lambda: [stax.Relu(), stax.Dropout(0.7)], {}),
    _conv_entry("Index", lambda: [stax.Relu(), stax.Index((slice(None), slice(1, 4), slice(None, None, 2)))], {}),
    _conv_entry("ImageResize", lambda: [stax.Relu(), stax.ImageResize((-1, 3, 5, -1), "linear")], {}),
    _conv_entry("GlobalSelfAttention", lambda W_query_std, b_std: [stax.Relu(), stax.GlobalSelfAttention(
        3, 3, 3, 1, W_query_std=W_query_std, b_std=b_std), stax.GlobalAvgPool()],
                {"W_query_std": P, "b_std": P}, valid=lambda: {"W_query_std": 0.9, "b_std": 0.1}, readout=False),
    _conv_entry("FanInProd", lambda: [stax.FanOut(2), stax.parallel(stax.Conv(3, (1, 1)), stax.Conv(2, (2, 2),
                                                                                                   padding="SAME")),
                                      stax.FanInProd()], {}),
    _conv_entry("FanInConcat", lambda axis: [stax.FanOut(2), stax.parallel(stax.Conv(3, (1, 1)), stax.Conv(2, (1, 1))),
                                             stax.FanInConcat(axis)], {"axis": st.sampled_from([-1, 1, 2, 0, 7])},
                static=("axis",), valid=lambda: {"axis": -1}),
]

ENTRIES = ACTIVATIONS + GAUSSIAN + KERNELS + GRAPH + STAX + MATVEC + CONV

EXEMPT = {
    "activations.AbstractActivation": "abstract base class",
    "activations.AbstractClosedFormActivation": "abstract base class",
    "activations.AbstractPolynomial": "abstract base class",
    "activations.SiLU": "alias of Swish",
    "kernels.default_tile": "no numerical input: the backend's tile edge (its devices argument is checked by kernel)",
    "gaussian.AbstractMethod": "abstract base class",
    "gaussian.Expectations": "result container (NamedTuple)",
    "kernels.Kernel": "result container (NamedTuple)",
    "kernels.KernelState": "state container passed between layers (exercised by every kernels entry)",
    "kernels.AbstractLayer": "abstract base class",
    "stax.KernelFn": "the kernel_fn of every stax layer (exercised by every stax entry)",
    "stax.Layer": "result container (NamedTuple)",
}
