"""One catalogue of every public activation crossed with every activation-specific function.

As optimistix crosses its problem catalogue with its solvers: each activation of
:mod:`rmtjax.activations` (typical parameters) goes through each of its facts — the Hermite
coefficients (closed form or the numerical default), the length map and the diagonal of the Gaussian
dual, the dual at orthogonal inputs against the Hermite coefficients (independence and Stein's
lemma), the law of :math:`\\phi'(h)^2`, the Lipschitz constant, ``rmtjax.hermite`` with the one
``Auto``, and :math:`q^*` (``meanfield.q_star`` and ``rmt.jacobian_q_star`` agree and solve the length
map) — against NumPy references built only from :math:`\\phi` itself (its values and its autodiff
derivative at the nodes of a composite Gauss-Legendre rule split at the kinks, and finite differences
on a grid). One compiled program per activation computes every fact (plus the q* solve).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rmtjax
import rmtjax.activations as A
from rmtjax import hermite, meanfield
from rmtjax._numerics import hermite_table
from rmtjax.data import activation_lipschitz
from rmtjax.gaussian import gaussian_expectations
from rmtjax.rmt import jacobian_q_star

# (activation, kinks of phi in x, (sigma_w2, sigma_b2) with a finite q* reached from q0 = 1)
CATALOGUE = [
    (A.ABRelu(-0.3, 1.2), (0.0,), (1.0, 0.1)),
    (A.Abs(), (0.0,), (0.8, 0.1)),
    (A.Cos(0.9, 1.2, 0.1), (), (1.5, 0.1)),
    (A.Custom(lambda x, p: jnp.sin(p["w"] * x) + 0.1 * x, {"w": jnp.array(1.3)}), (), (1.5, 0.1)),
    (A.Elu(0.7), (0.0,), (1.5, 0.1)),
    (A.Erf(1.3, 0.7, 0.2), (), (1.5, 0.1)),
    (A.Exp(0.5, 0.6), (), (1.0, 0.1)),
    (A.Gaussian(1.2, -0.4), (), (1.5, 0.1)),
    (A.Gelu(), (), (1.5, 0.1)),
    (A.HardTanh(), (-1.0, 1.0), (1.05, 0.05)),
    (A.Hermite(3), (), (0.5, 0.1)),
    (A.HermiteSeries(jnp.array([0.1, 0.8, 0.4, -0.2])), (), (0.2, 0.05)),
    (A.Identity(), (), (0.8, 0.1)),
    (A.LeakyRelu(0.2), (0.0,), (1.5, 0.1)),
    (A.Mish(), (), (1.5, 0.1)),
    (A.Monomial(4), (), (0.005, 0.1)),
    (A.Polynomial([0.3, -1.0, 0.5, 0.2]), (), (0.2, 0.05)),
    (A.Rbf(0.7), (), (1.5, 0.1)),
    (A.RectifiedMonomial(0), (0.0,), (1.5, 0.1)),
    (A.RectifiedMonomial(3), (0.0,), (0.1, 0.05)),
    (A.Relu(), (0.0,), (1.5, 0.1)),
    (A.Sigmoid(), (), (1.5, 0.1)),
    (A.Sign(), (0.0,), (1.5, 0.1)),
    (A.Sin(1.1, 0.8, 0.3), (), (1.5, 0.1)),
    (A.Softplus(), (), (1.5, 0.1)),
    (A.Swish(1.5), (), (1.5, 0.1)),
    (A.Tanh(), (), (1.5, 0.1)),
    (A.Transformed(A.Tanh(), 1.3, 0.2, 0.9, -0.1), (), (1.5, 0.1)),
]
IDS = [type(c[0]).__name__ + (f"{c[0].degree}" if hasattr(c[0], "degree") else "") for c in CATALOGUE]

QS = (0.5, 2.0)  # the variances of the 1-d facts
ORDER = 12
STEP = 1e-3  # the Lipschitz grid on [-40, 40]
LIP_X = np.arange(-40_000, 40_001) * STEP


def _nodes(q, kinks, lim=12.0, width=1.0, deg=24):
    """Composite Gauss-Legendre nodes in z on [-lim, lim], panels of width <= ``width`` split at
    the kinks of phi(sqrt(q) z), with the weights of E[f(z)], z ~ N(0, 1) (exact to rounding for the
    piecewise-smooth integrands here)."""
    cuts = sorted({-lim, lim, *[k / math.sqrt(q) for k in kinks if abs(k / math.sqrt(q)) < lim]})
    x, w = np.polynomial.legendre.leggauss(deg)
    zs, ws = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        n = max(1, math.ceil((hi - lo) / width))
        edges = np.linspace(lo, hi, n + 1)
        for a, b in zip(edges[:-1], edges[1:]):
            zs.append(0.5 * (b - a) * x + 0.5 * (b + a))
            ws.append(0.5 * (b - a) * w)
    z, w = np.concatenate(zs), np.concatenate(ws)
    return z, w * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


@eqx.filter_jit
def _facts(act, qs, x):
    """Every fact of ``act`` (at the variances ``qs``) and the values of phi and of its autodiff
    derivative on ``x``, in one program per activation type (measured on the loaded 2-core machine:
    1.3 s per activation, against 1.4 s for the same calls made eagerly)."""
    atoms, weights = act.derivative_squared_law(qs[0])
    return dict(
        hermite=act.hermite_coefficients(qs, order=ORDER),
        length_map=act.length_map(qs),
        dual_orth=tuple(gaussian_expectations(act, qs[0], qs[1], 0.0)),
        d2_atoms=atoms, d2_weights=weights,
        lipschitz=act.lipschitz(),
        phi=act(x), dphi=jax.vmap(jax.grad(lambda t: act(t)))(x),
    )


@pytest.fixture(scope="module")
def catalogue():
    """Per activation: its facts, q* (meanfield and rmt) and the NumPy references."""
    out = []
    for act, kinks, (w2, b2) in CATALOGUE:
        sol = meanfield.q_star(act, w2, b2, throw=False)
        # the same compiled solve (rmt's q* is meanfield's): a cache hit, no second compile
        jq = float(jacobian_q_star(act, w2, b2, throw=False))
        rules = [_nodes(q, kinks) for q in QS]
        xs = [math.sqrt(q) * z for q, (z, _) in zip(QS, rules)]
        x = np.concatenate(xs + [LIP_X])
        facts = _facts(act, jnp.asarray(QS + (float(sol.value),)), jnp.asarray(x))
        f = {k: jax.tree_util.tree_map(np.asarray, v) for k, v in facts.items()}
        f.update(q_star=float(sol.value), q_star_ok=bool(sol.ok), jacobian_q_star=jq,
                 length_map_at_q_star=float(f["length_map"][-1]), w2b2=(w2, b2))
        phi, dphi, i = f["phi"], f["dphi"], 0
        ref = {"hermite": [], "length_map": [], "d2": None}
        for q, (z, w) in zip(QS, rules):
            n = z.size
            p, dp = phi[i:i + n], dphi[i:i + n]
            ref["hermite"].append((w * p) @ hermite_table(z, ORDER))
            ref["length_map"].append(w @ (p * p))
            if ref["d2"] is None:
                ref["d2"] = (w @ dp**2, w @ dp**4)
            i += n
        f["slopes"] = np.abs(np.diff(phi[i:])) / STEP
        out.append((f, ref))
    return out


def _tol(act, smooth=1e-10, kink=1e-4):
    """The numerical defaults (trapezoid, spacing 0.04) are exponentially accurate for analytic phi; at
    ELU's kink (alpha = 0.7: phi' jumps at 0) they are O(h^2): Hermite coefficients measured 1.6e-5 of
    the scale, the length map (phi^2 is C^1 there) 1.1e-8 relative (pass kink=1e-7)."""
    return kink if isinstance(act, A.Elu) else smooth


def test_catalogue_is_every_public_activation():
    public = {n for n in A.__all__ if not n.startswith("Abstract") and n != "SiLU"}
    assert public == {type(c[0]).__name__ for c in CATALOGUE}


def test_classes_are_abstract_or_final():
    """No concrete activation subclasses another (equinox's abstract-or-final rule)."""
    classes = [getattr(A, n) for n in A.__all__ if isinstance(getattr(A, n), type)]
    for cls in classes:
        for base in cls.__mro__[1:]:
            if issubclass(base, A.AbstractActivation):
                assert base.__name__.startswith("Abstract"), f"{cls.__name__} subclasses the concrete {base.__name__}"


@pytest.mark.parametrize("i", range(len(CATALOGUE)), ids=IDS)
def test_hermite_coefficients(i, catalogue):
    act = CATALOGUE[i][0]
    f, ref = catalogue[i]
    for j, q in enumerate(QS):
        scale = math.sqrt(ref["length_map"][j])
        np.testing.assert_allclose(f["hermite"][j], ref["hermite"][j], rtol=0, atol=_tol(act) * scale, err_msg=f"q={q}")


@pytest.mark.parametrize("i", range(len(CATALOGUE)), ids=IDS)
def test_length_map_and_dual(i, catalogue):
    act = CATALOGUE[i][0]
    f, ref = catalogue[i]
    np.testing.assert_allclose(f["length_map"][:2], ref["length_map"], rtol=_tol(act, kink=1e-7))
    # orthogonal inputs: E[phi(u) phi(v)] = a_0(q1) a_0(q2), E[phi'(u) phi'(v)] = a_1(q1) a_1(q2) / sqrt(q1 q2)
    a = np.asarray(ref["hermite"])
    k, kdot = f["dual_orth"]
    scale = math.sqrt(ref["length_map"][0] * ref["length_map"][1])
    assert abs(k - a[0, 0] * a[1, 0]) <= _tol(act) * scale
    # (sign and the step: derivative 0 almost everywhere, neural-tangents' convention)
    if not (isinstance(act, A.Sign) or (isinstance(act, A.RectifiedMonomial) and act.degree == 0)):
        want = a[0, 1] * a[1, 1] / math.sqrt(QS[0] * QS[1])
        # ELU's phi' jumps at 0 (alpha = 0.7): the Mehler series of phi' (a trapezoidal rule with a node
        # on the jump) is only O(h) there, measured 3.2e-3
        tol = 1e-2 if isinstance(act, A.Elu) else 10 * _tol(act)
        assert abs(kdot - want) <= tol * max(1.0, abs(want)), (kdot, want)


@pytest.mark.parametrize("i", range(len(CATALOGUE)), ids=IDS)
def test_derivative_squared_law(i, catalogue):
    act = CATALOGUE[i][0]
    f, ref = catalogue[i]
    atoms, weights = f["d2_atoms"], f["d2_weights"]
    assert weights.sum() == pytest.approx(1.0, abs=1e-14) and np.all(weights >= 0)
    # midpoint rule of spacing 0.05 (the default): O(h^2) at ELU's jump of phi' at 0, measured 5e-5 relative
    # at q = 0.5 (the trapezoidal rule, with a node on the jump, was O(h): 8e-3)
    tol = 3e-4 if isinstance(act, A.Elu) else 1e-10
    m2, m4 = ref["d2"]
    assert weights @ atoms == pytest.approx(m2, rel=tol, abs=1e-13)
    assert weights @ atoms**2 == pytest.approx(m4, rel=tol, abs=1e-13)


@pytest.mark.parametrize("i", range(len(CATALOGUE)), ids=IDS)
def test_lipschitz(i, catalogue):
    f, _ = catalogue[i]
    lip, slopes = float(f["lipschitz"]), f["slopes"]
    if math.isinf(lip):  # a jump or an unbounded slope: finite differences on [-40, 40] see it
        assert slopes.max() > 50
        with pytest.raises(ValueError, match="Lipschitz"):
            activation_lipschitz(CATALOGUE[i][0])
        return
    # a bound (up to the rounding of the chords, 1e-11), and tight: the largest chord slope on a grid of
    # spacing 1e-3 is within O(h^2) of it
    assert slopes.max() <= lip * (1 + 1e-10) + 1e-12
    assert slopes.max() >= lip * (1 - 1e-6) - 1e-12
    assert float(activation_lipschitz(CATALOGUE[i][0])) == pytest.approx(lip, rel=1e-14)


@pytest.mark.parametrize("i", range(len(CATALOGUE)), ids=IDS)
def test_one_q_star(i, catalogue):
    f, _ = catalogue[i]
    w2, b2 = f["w2b2"]
    assert f["q_star_ok"]
    assert f["jacobian_q_star"] == f["q_star"]  # one fact, one solve
    # q* solves the activation's length map (meanfield's length map is the dual's diagonal, evaluated by
    # gaussian_expectations: the same fact) to the solver's tolerance (rtol 1e-10)
    q = float(f["q_star"])
    assert w2 * float(f["length_map_at_q_star"]) + b2 == pytest.approx(q, rel=1e-9, abs=1e-12)


def test_one_auto():
    """rmtjax.Auto is gaussian.Auto is hermite.Auto, accepted by every method= (issue 19: hermite
    refused rmtjax.Auto()); its numerical method defaults per function (Mehler for expectations, the
    trapezoidal rule for Hermite coefficients) and one that a function cannot use is refused there."""
    assert rmtjax.Auto is hermite.Auto is rmtjax.gaussian.Auto
    for act in (A.Tanh(), A.Relu()):
        got = hermite.hermite_coefficients(act, order=4, method=rmtjax.Auto())
        np.testing.assert_array_equal(got, act.hermite_coefficients(1.0, order=4))
        assert gaussian_expectations(act, 1.0, 1.0, 0.5, method=rmtjax.Auto()).k.shape == ()
    with pytest.raises(ValueError, match="Hermite coefficients need Trapezoid"):
        hermite.hermite_coefficients(A.Tanh(), order=4, method=rmtjax.Auto(rmtjax.gaussian.Mehler()))
