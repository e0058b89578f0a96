"""Mean-field signal propagation against closed forms, scipy quadrature and wide random networks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, optimize

import rmtjax.activations as A
from rmtjax.meanfield import c_map, c_star, edge_of_chaos, mean_field, phase_diagram, q_star


def test_relu_closed_forms():
    # V(q) = sigma_w^2 q / 2 + sigma_b^2: q* = sigma_b^2 / (1 - sigma_w^2 / 2), chi_1 = sigma_w^2 / 2
    for w2, b2 in [(1.0, 0.1), (1.5, 0.3), (1.9, 0.05)]:
        mf = mean_field(A.Relu(), w2, b2)
        assert float(mf.q_star) == pytest.approx(b2 / (1 - w2 / 2), rel=1e-12)
        assert float(mf.chi_1) == pytest.approx(w2 / 2, rel=1e-12)
        assert float(mf.chi_q) == pytest.approx(w2 / 2, rel=1e-12)
        assert float(mf.c_star) == pytest.approx(1.0, abs=1e-9)  # ReLU nets are never chaotic
    assert float(edge_of_chaos(A.Relu(), 0.0).value) == pytest.approx(2.0, rel=1e-12)


def test_erf_against_independent_root_finding():
    w2, b2 = 2.0, 0.1
    V = lambda q: w2 * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + b2  # noqa: E731  Williams (1997)
    q_ref = optimize.brentq(lambda q: V(q) - q, 1e-6, 50.0, xtol=1e-15)
    mf = mean_field(A.Erf(), w2, b2)
    assert float(mf.q_star) == pytest.approx(q_ref, rel=1e-10)
    assert float(mf.chi_1) == pytest.approx(w2 * 4 / math.pi / math.sqrt(1 + 4 * q_ref), rel=1e-10)
    # critical line from the same closed forms
    for b2 in (0.0, 0.05, 0.3):
        w2c = float(edge_of_chaos(A.Erf(), b2).value)
        q = float(q_star(A.Erf(), w2c, b2).value)
        assert w2c * 4 / math.pi / math.sqrt(1 + 4 * q) == pytest.approx(1.0, rel=1e-9)


def test_tanh_against_scipy_quadrature():
    w2, b2 = 2.5, 0.05
    npdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    E = lambda f: integrate.quad(lambda z: f(z) * npdf(z), -12, 12, epsabs=1e-14, epsrel=1e-14, limit=200)[0]  # noqa: E731
    q_ref = optimize.brentq(lambda q: w2 * E(lambda z: math.tanh(math.sqrt(q) * z) ** 2) + b2 - q, 1e-3, 10, xtol=1e-14)
    chi_ref = w2 * E(lambda z: (1 - math.tanh(math.sqrt(q_ref) * z) ** 2) ** 2)
    mf = mean_field(A.Tanh(), w2, b2)
    assert float(mf.q_star) == pytest.approx(q_ref, rel=1e-9)
    assert float(mf.chi_1) == pytest.approx(chi_ref, rel=1e-8)
    assert float(mf.chi_1) > 1 and float(mf.c_star) < 1  # chaotic: a stable fixed point below 1
    assert float(c_map(mf.c_star, mf.q_star, A.Tanh(), w2, b2)) == pytest.approx(float(mf.c_star), abs=1e-11)


def test_depth_scale_diverges_at_the_edge_of_chaos():
    b2 = 0.05
    w2c = float(edge_of_chaos(A.Tanh(), b2).value)
    xi = [float(mean_field(A.Tanh(), w2c * (1 - eps), b2).xi_c) for eps in (0.1, 0.03, 0.01)]
    assert xi[0] < xi[1] < xi[2]
    # xi_c ~ 1 / (1 - chi_1) ~ 1 / eps near criticality: the slope of log xi vs log eps is -1
    slope = np.polyfit(np.log([0.1, 0.03, 0.01]), np.log(xi), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.15)


def test_gradients_match_finite_differences():
    def f(w2, b2, a):
        mf = mean_field(A.Erf(a, 1.0, 0.0), w2, b2)
        return mf.q_star + mf.chi_1 + 0.01 * mf.xi_c

    check_grads(f, (jnp.array(1.5), jnp.array(0.1), jnp.array(1.2)), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)
    g = jax.grad(lambda w2: mean_field(A.Tanh(), w2, 0.05).chi_1)(1.2)
    eps = 1e-5
    fd = (mean_field(A.Tanh(), 1.2 + eps, 0.05).chi_1 - mean_field(A.Tanh(), 1.2 - eps, 0.05).chi_1) / (2 * eps)
    assert float(g) == pytest.approx(float(fd), rel=1e-6)


def test_phase_diagram_vmapped_with_codes():
    w2 = jnp.linspace(0.5, 3.0, 6)
    b2 = jnp.array([0.01, 0.1, 0.3])
    pd = phase_diagram(A.Tanh(), w2, b2)
    assert pd.chi_1.shape == (6, 3)
    assert bool(jnp.all(pd.ok))
    crit = jax.vmap(lambda b: edge_of_chaos(A.Tanh(), b).value)(b2)
    chaotic = np.asarray(pd.chi_1 > 1)
    np.testing.assert_array_equal(chaotic, np.asarray(w2[:, None] > crit[None, :]))


def test_correlations_of_a_wide_random_network_follow_the_c_map():
    act, w2, b2, width, depth, seeds = A.Tanh(), 2.5, 0.05, 1000, 8, 16
    q = float(q_star(act, w2, b2).value)
    c = 0.6
    theory = [c]
    for _ in range(depth):
        c = float(c_map(c, q, act, w2, b2))
        theory.append(c)

    def run(key):
        k0, key = jax.random.split(key)
        z = jax.random.normal(k0, (2, width))
        h = jnp.sqrt(q) * jnp.stack([z[0], 0.6 * z[0] + 0.8 * z[1]])
        out = [jnp.sum(h[0] * h[1]) / jnp.sqrt(jnp.sum(h[0] ** 2) * jnp.sum(h[1] ** 2))]
        for _ in range(depth):
            kw, kb, key = jax.random.split(key, 3)
            W = jax.random.normal(kw, (width, width)) * jnp.sqrt(w2 / width)
            b = jax.random.normal(kb, (width,)) * jnp.sqrt(b2)
            h = jnp.tanh(h) @ W.T + b[None, :]
            out.append(jnp.sum(h[0] * h[1]) / jnp.sqrt(jnp.sum(h[0] ** 2) * jnp.sum(h[1] ** 2)))
        return jnp.stack(out)

    emp = np.asarray(jax.vmap(run)(jax.random.split(jax.random.key(0), seeds)))
    mean, se = emp.mean(0), emp.std(0, ddof=1) / np.sqrt(seeds)
    z = np.abs(mean - np.array(theory)) / np.maximum(se, 1e-12)
    assert np.all(z[1:] < 5), (mean, theory, se)
    cs = float(c_star(act, w2, b2).value)
    gaps = np.abs(np.array(theory) - cs)
    assert np.all(np.diff(gaps) < 0)  # the iterates approach c* monotonically


def test_bad_input():
    with pytest.raises(ValueError, match="sigma_w2"):
        mean_field(A.Tanh(), -1.0, 0.1)
    with pytest.raises(ValueError, match="sigma_b2"):
        mean_field(A.Tanh(), 1.0, float("nan"))
    with pytest.raises(ValueError, match="1-d"):
        phase_diagram(A.Tanh(), jnp.ones((2, 2)), jnp.ones(2))
