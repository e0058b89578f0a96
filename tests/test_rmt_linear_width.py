"""CK and NTK spectra at linear width (Fan & Wang 2020) against closed forms, an independent
polynomial solution of the Marchenko-Pastur equation, exact moment recursions, autodiff of the
finite network, and Monte Carlo over random finite networks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial import polynomial as P
from scipy import integrate

from rmtjax.activations import Abs, Identity, LeakyRelu, Polynomial, Relu, Tanh
from rmtjax.rmt._linear_width import (
    InputSpectrum,
    activation_constants,
    ck_density,
    ck_edge,
    ck_moments,
    ck_stieltjes,
    combination_stieltjes,
    empirical_input,
    finite_network_kernels,
    marchenko_pastur_input,
    max_stable_learning_rate,
    ntk_coefficients,
    ntk_edge,
    ntk_moments,
    ntk_stieltjes,
)



def _mp_density(x, g):
    lp, lm = (1 + math.sqrt(g)) ** 2, (1 - math.sqrt(g)) ** 2
    return np.sqrt(np.maximum((lp - x) * (x - lm), 0)) / (2 * np.pi * g * x)


def test_activation_constants_closed_forms_and_quadrature():
    c = activation_constants(Relu())
    var = 0.5 - 1 / (2 * np.pi)
    np.testing.assert_allclose([c.mean, c.std, c.b2, c.a], [1 / math.sqrt(2 * np.pi), math.sqrt(var), 0.25 / var,
                                                           0.5 / var], rtol=1e-12)
    # tanh (no closed form): against adaptive quadrature
    g = lambda f: integrate.quad(lambda t: f(t) * np.exp(-t * t / 2) / math.sqrt(2 * np.pi), -30, 30,  # noqa: E731
                                 epsabs=1e-14, epsrel=1e-13)[0]
    v = g(lambda t: np.tanh(t) ** 2)
    b = g(lambda t: 1 - np.tanh(t) ** 2)
    a = g(lambda t: (1 - np.tanh(t) ** 2) ** 2)
    c = activation_constants(Tanh())
    np.testing.assert_allclose([c.std**2, c.b2, c.a], [v, b * b / v, a / v], rtol=1e-9)
    assert abs(float(c.mean)) < 1e-12
    # NTK coefficients (Thm 3.7), L = 3
    r_plus, r = ntk_coefficients(Tanh(), 3)
    np.testing.assert_allclose(r, [c.b2**3, c.b2**2, c.b2, 1.0], rtol=1e-14)
    assert float(r_plus) == pytest.approx(sum(float(c.a) ** k - float(c.b2) ** k for k in (1, 2, 3)), rel=1e-14)


def test_finite_ntk_is_the_jacobian_gram():
    n, d0, widths = 5, 4, (6, 7)
    x = jax.random.normal(jax.random.key(0), (n, d0))
    key = jax.random.key(1)
    act = Tanh()
    k = jax.jit(lambda x, key: finite_network_kernels(x, key, widths, act))(x, key)
    c = activation_constants(act)
    # the same network written out with explicit parameters, differentiated by jax.jacrev
    keys = jax.random.split(key, 3)
    params = [jax.random.normal(keys[0], (6, 4)), jax.random.normal(keys[1], (7, 6)), jax.random.normal(keys[2], (7,))]

    def f(params):
        X = x.T
        for W in params[:-1]:
            X = (act(W @ X) - c.mean) / c.std / math.sqrt(W.shape[0])
        return params[-1] @ X

    jac = jax.jit(jax.jacrev(f))(params)
    ntk = sum(j.reshape(n, -1) @ j.reshape(n, -1).T for j in jac)
    np.testing.assert_allclose(k.ntk, ntk, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.ck[0], x @ x.T, rtol=1e-12)
    with pytest.raises(ValueError, match="widths"):
        finite_network_kernels(x, key, (6, 0), act)


# Shared shapes keep the number of compiled programs small: every density check below is a one-level
# problem on a two-atom input law evaluated on 13 points at eta = 1e-10.
TWO_ATOMS = InputSpectrum(jnp.array([0.4, 2.1]), jnp.array([0.3, 0.7]))
X13 = np.linspace(0.05, 6.0, 13)


def test_marchenko_pastur_closed_forms():
    # identity activation (b = 1) on orthonormal inputs (two equal atoms at 1): mu_1 = MP_gamma
    g = 0.25
    ones = InputSpectrum(jnp.ones(2))
    np.testing.assert_allclose(ck_density(ones, jnp.array([g]), Identity(), X13, eta=1e-10), _mp_density(X13, g),
                               atol=1e-7)
    # |x| has b_sigma = 0: the layer forgets its input, mu_1 = MP_{gamma_1} whatever mu_0 is
    np.testing.assert_allclose(ck_density(TWO_ATOMS, jnp.array([0.6]), Abs(), X13, eta=1e-10),
                               _mp_density(X13, 0.6), atol=1e-7)
    # linear network on Gaussian inputs, all ratios 1: a product of three Wishart matrices, with
    # Fuss-Catalan moments binom(4k, k) / (3k + 1) and right edge 4^4 / 3^3
    inp, g = marchenko_pastur_input(1.0), jnp.array([1.0, 1.0])
    np.testing.assert_allclose(ck_moments(inp, g, Identity(), order=4), [1, 4, 22, 140], rtol=1e-10)
    assert float(ck_edge(inp, g, Identity())) == pytest.approx(256 / 27, rel=1e-10)


def _silverstein_cubic(x, g, t, w):
    """Density of MP_g boxtimes (w1 delta_t1 + w2 delta_t2) from the roots of the cubic that the
    Marchenko-Pastur equation m = sum_k w_k / (t_k (1 - g - g z m) - z) becomes (numpy.roots)."""
    out = []
    for z in x:
        A = np.array([1 - g, -g * z], complex)  # 1 - g - g z m, ascending powers of m
        d1, d2 = P.polysub(t[0] * A, [z]), P.polysub(t[1] * A, [z])
        lhs = P.polymul([0, 1], P.polymul(d1, d2))
        rhs = P.polyadd(w[0] * d2, w[1] * d1)
        roots = P.polyroots(P.polysub(lhs, rhs))
        out.append(max(roots.imag) / np.pi)
    return np.array(out)


def test_one_layer_against_the_cubic():
    act = Tanh()
    b2 = float(activation_constants(act).b2)
    lam, w, g = np.array([0.4, 2.1]), np.array([0.3, 0.7]), 0.7
    d = ck_density(TWO_ATOMS, jnp.array([g]), act, X13, eta=1e-10)
    ref = _silverstein_cubic(X13, g, (1 - b2) + b2 * lam, w)
    np.testing.assert_allclose(d, ref, atol=1e-7)
    assert np.max(ref) > 0.1 and np.min(ref) == 0  # bulk and gaps both probed


def _ntk_second_moment(m1, m2, gammas, b2, a):
    """Exact recursion for lim (1/n) tr (r_+ I + sum_l r_l K_l)^2 given E[K_j | past] = Phi_j =
    (1 - b2) I + b2 K_{j-1} and (1/n) tr K_j^2 = (1/n) tr Phi_j^2 + gamma_j ((1/n) tr Phi_j)^2."""
    L = len(gammas)
    t, T = [m1], {(0, 0): m2}
    for j in range(1, L + 1):
        t.append((1 - b2) + b2 * t[j - 1])
        for i in range(j):
            T[i, j] = T[j, i] = (1 - b2) * t[i] + b2 * T[i, j - 1]
        phi2 = (1 - b2) ** 2 + 2 * (1 - b2) * b2 * t[j - 1] + b2**2 * T[j - 1, j - 1]
        T[j, j] = phi2 + gammas[j - 1] * t[j] ** 2
    r_plus = sum(a**k - b2**k for k in range(1, L + 1))
    r = [b2 ** (L - l) for l in range(L + 1)]
    first = r_plus + sum(r[i] * t[i] for i in range(L + 1))
    second = r_plus**2 + 2 * r_plus * sum(r[i] * t[i] for i in range(L + 1)) + sum(
        r[i] * r[j] * T[i, j] for i in range(L + 1) for j in range(L + 1))
    return first, second


def test_ntk_moments_against_exact_recursion():
    act, g0, gammas = Tanh(), 0.8, [0.5, 1.4]
    c = activation_constants(act)
    mom = ntk_moments(marchenko_pastur_input(g0), jnp.asarray(gammas), act, order=4)
    first, second = _ntk_second_moment(1.0, 1.0 + g0, gammas, float(c.b2), float(c.a))
    np.testing.assert_allclose(mom[:2], [first, second], rtol=1e-9)


@pytest.fixture(scope="module")
def simulation():
    """Eight random tanh networks on one normalized Gaussian data set (the shapes of the quick
    reproduction in test_experiment_fan_wang.py, so that the two share compiled programs)."""
    n, d0, widths, seeds = 200, 240, (300, 250, 220), 8
    act = Tanh()
    x = jax.random.normal(jax.random.key(0), (n, d0))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    kern = jax.jit(jax.vmap(lambda k, x: finite_network_kernels(x, k, widths, act), (0, None)))
    k = kern(jax.random.split(jax.random.key(1), seeds), x)
    ev = {"ck1": np.linalg.eigvalsh(np.asarray(k.ck[:, 1])), "ck3": np.linalg.eigvalsh(np.asarray(k.ck[:, 3])),
          "ntk": np.linalg.eigvalsh(np.asarray(k.ntk))}
    return {"n": n, "act": act, "inp": empirical_input(x), "gammas": jnp.asarray([n / w for w in widths]), "ev": ev}


def test_stieltjes_against_finite_networks(simulation):
    s = simulation
    z = np.array([0.4 + 0.3j, 1.2 + 0.3j, 2.5 + 0.3j, 4.0 + 0.3j])
    theory = {"ck1": ck_stieltjes(s["inp"], s["gammas"], s["act"], z, layer=1),
              "ck3": ck_stieltjes(s["inp"], s["gammas"], s["act"], z, layer=3),
              "ntk": ntk_stieltjes(s["inp"], s["gammas"], s["act"], z + 2.0)}
    for name, th in theory.items():
        zz = z + 2.0 if name == "ntk" else z
        vals = np.mean(1 / (s["ev"][name][:, :, None] - zz[None, None, :]), axis=1)  # (seeds, z)
        se = vals.std(axis=0, ddof=1) / np.sqrt(vals.shape[0])
        err = np.abs(vals.mean(axis=0) - np.asarray(th))
        # 5 standard errors of the seed average plus an O(1/n) finite-size allowance
        assert np.all(err < 5 * np.abs(se) + 1.0 / s["n"]), (name, err, se)
    # histograms, moments and largest eigenvalues of the same networks: tests/test_experiment_fan_wang.py
    edge = float(ntk_edge(s["inp"], s["gammas"], s["act"]))
    assert float(max_stable_learning_rate(s["inp"], s["gammas"], s["act"])) == pytest.approx(2 / edge, rel=1e-12)
    assert np.all(np.abs(s["ev"]["ntk"][:, -1] / edge - 1) < 0.3)


def test_gradients_match_finite_differences():
    inp = marchenko_pastur_input(0.7)

    def fd(f, x0, h=1e-5):
        return (f(x0 + h) - f(x0 - h)) / (2 * h)

    dens = lambda g, alpha: ck_density(inp, jnp.stack([g, jnp.asarray(1.3)]), LeakyRelu(alpha), 1.1)  # noqa: E731
    g0, a0 = jnp.asarray(0.6), jnp.asarray(0.2)
    gg, ga = jax.grad(dens, argnums=(0, 1))(g0, a0)
    assert float(gg) == pytest.approx(float(fd(lambda g: dens(g, a0), g0)), rel=1e-6)
    assert float(ga) == pytest.approx(float(fd(lambda a: dens(g0, a), a0)), rel=1e-6)
    edge = lambda g: ntk_edge(inp, jnp.stack([g, jnp.asarray(1.3)]), Tanh())  # noqa: E731
    assert float(jax.grad(edge)(g0)) == pytest.approx(float(fd(edge, g0)), rel=1e-6)


def test_jit_vmap_and_no_nan_at_the_edges():
    ones, g = InputSpectrum(jnp.ones(2)), jnp.array([0.25])
    z = jnp.array([0.5 + 0.1j, 1.5 - 0.2j, -0.3 + 0.0j])
    m = ck_stieltjes(ones, g, Identity(), z)
    loop = jnp.stack([ck_stieltjes(ones, g, Identity(), zi) for zi in z])
    jitted = jax.jit(lambda g, z: ck_stieltjes(ones, g, Identity(), z))(g, z)
    np.testing.assert_allclose(m, loop, rtol=1e-12)
    np.testing.assert_allclose(m, jitted, rtol=1e-12)
    assert float(jnp.imag(m[1])) < 0 and abs(float(jnp.imag(m[2]))) < 1e-14  # conjugate symmetry, real off support
    # m(z) = int dmu/(lambda - z) for MP_{1/4} at a real point left of the support
    mp = integrate.quad(lambda t: _mp_density(t, 0.25) / (t + 0.3), 0.25, 2.25, epsabs=1e-13)[0]
    assert float(jnp.real(m[2])) == pytest.approx(mp, rel=1e-9)
    # density and its gradient exactly at both edges (0.25, 2.25), at 0 and beyond the support
    pts = np.concatenate([[0.25, 2.25, 0.0, 3.0], np.linspace(0.3, 2.2, 9)])
    dens = lambda g: ck_density(ones, jnp.stack([g]), Identity(), pts, eta=1e-10)  # noqa: E731
    assert np.all(np.isfinite(dens(0.25))) and float(dens(0.25)[3]) < 1e-8
    jac = jax.jacfwd(dens)(jnp.asarray(0.25))
    assert np.all(np.isfinite(jac))


def test_combination_reduces_to_ck():
    # coef = e_L and shift 0 is the CK; a shift c moves the law by c
    inp, g = marchenko_pastur_input(0.5), jnp.array([0.8, 1.5])
    b2 = activation_constants(Tanh()).b2
    z = jnp.array([1.0 + 0.4j, 3.0 + 0.2j])
    ck = ck_stieltjes(inp, g, Tanh(), z)
    comb = combination_stieltjes(inp, g, b2, 0.7, jnp.array([0.0, 0.0, 1.0]), z + 0.7)
    np.testing.assert_allclose(ck, comb, rtol=1e-10)


def test_bad_input():
    inp = marchenko_pastur_input(0.5)
    with pytest.raises(ValueError, match="gammas"):
        ck_stieltjes(inp, jnp.array([0.5, 0.0]), Tanh(), 1j)
    with pytest.raises(ValueError, match="gammas"):
        ck_stieltjes(inp, jnp.array([-1.0]), Tanh(), 1j)
    with pytest.raises(ValueError, match="cannot be normalized"):
        ck_stieltjes(inp, jnp.array([0.5]), Polynomial(jnp.array([1.0])), 1j)
    with pytest.raises(ValueError, match="z must have Im z"):
        ck_stieltjes(inp, jnp.array([0.5]), Tanh(), 1.0)
    with pytest.raises(ValueError, match="layer"):
        ck_density(inp, jnp.array([0.5]), Tanh(), 1.0, layer=2)
    with pytest.raises(ValueError, match="eta"):
        ck_density(inp, jnp.array([0.5]), Tanh(), 1.0, eta=0.0)
    with pytest.raises(ValueError, match="ratio"):
        marchenko_pastur_input(0.0)
    with pytest.raises(ValueError, match="eigenvalues"):
        InputSpectrum(jnp.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="weights"):
        InputSpectrum(jnp.array([1.0, 2.0]), jnp.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="depth"):
        ntk_coefficients(Tanh(), 0)
    with pytest.raises(ValueError, match="coef must be finite and >= 0"):
        combination_stieltjes(inp, jnp.array([0.5]), 0.5, 0.0, jnp.array([1.0, -1.0]), 1j)
