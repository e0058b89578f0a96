"""Random Lipschitz generators, the sigma* projection, concentration, Monte-Carlo moments, and the
Fréchet distance between Gaussians (FID formula) — rmtjax.data._concentrated, rmtjax.rmt._frechet."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla
from _compiles import Programs
from _gradcheck import check_gradients

from rmtjax.activations import Abs, Erf, Gelu, LeakyRelu, Relu, Sigmoid, Sign, Sin, Tanh
from rmtjax.data._concentrated import (
    LipschitzGenerator,
    activation_lipschitz,
    concentrated_mixture,
    concentrated_moments,
    power_iteration,
    project_spectral_norm,
    random_generator,
    sigma_star_step,
    sigma_star_update,
    spectral_normalize,
)
from rmtjax.rmt._frechet import frechet_distance, psd_sqrtm


def _rand_w(seed, shape=(12, 9), scale=1.0):
    return scale * np.random.default_rng(seed).normal(size=shape)


# ---------------------------------------------------------------- activations & bound


def test_activation_lipschitz_matches_sup_of_derivative():
    x = jnp.linspace(-6.0, 6.0, 20001)
    for a in [Relu(), Abs(), Tanh(), Sigmoid(), LeakyRelu(0.2), LeakyRelu(-1.5), Erf(0.7, 2.0, 0.3), Sin(1.3, 0.5, 0.2)]:
        sup = float(jnp.max(jnp.abs(a.derivative(x))))
        lip = float(activation_lipschitz(a))
        assert sup <= lip + 1e-12 and sup >= lip - 1e-3, (type(a).__name__, sup, lip)
    # the activation's own fact (the catalogue test checks every class): GELU's is Phi(sqrt 2) + sqrt 2 varphi(sqrt 2)
    sup = float(jnp.max(jnp.abs(Gelu().derivative(x))))
    assert float(activation_lipschitz(Gelu())) == pytest.approx(sup, rel=1e-6)
    with pytest.raises(ValueError, match="Lipschitz constant must be finite; Sign"):
        activation_lipschitz(Sign())  # a jump: not Lipschitz


@pytest.mark.parametrize("activation,final", [(Tanh(), None), (LeakyRelu(0.2), Tanh()), (Relu(), Sigmoid())])
def test_lipschitz_bound_holds_empirically(activation, final):
    g = random_generator(jax.random.key(0), (6, 40, 40, 30), activation=activation, final_activation=final,
                         weight_std=1.5, bias_std=0.3)
    bound = float(g.lipschitz_bound())
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    z = 2 * jax.random.normal(k1, (1000, 6))
    far = z + 2 * jax.random.normal(k2, (1000, 6))
    near = z + 1e-4 * jax.random.normal(k3, (1000, 6))
    for z2 in (far, near):
        ratio = jnp.linalg.norm(g(z) - g(z2), axis=1) / jnp.linalg.norm(z - z2, axis=1)
        assert float(jnp.max(ratio)) <= bound * (1 + 1e-9)
    # the Jacobian's operator norm (the local Lipschitz constant) at many points stays below the bound
    jac = jax.vmap(jax.jacfwd(g))(z[:100])
    assert float(jnp.max(jnp.linalg.norm(jac, 2, axis=(1, 2)))) <= bound * (1 + 1e-9)


def test_lipschitz_bound_is_tight_for_a_linear_generator():
    w = jnp.asarray(_rand_w(0))
    g = LipschitzGenerator((w,), (jnp.zeros(12),), Tanh(), None)
    _, _, vt = jnp.linalg.svd(w)
    ratio = jnp.linalg.norm(g(vt[0]) - g(0 * vt[0])) / jnp.linalg.norm(vt[0])
    np.testing.assert_allclose(float(ratio), float(g.lipschitz_bound()), rtol=1e-12)
    np.testing.assert_allclose(float(g.lipschitz_bound()), np.linalg.norm(np.asarray(w), 2), rtol=1e-12)


def test_lipschitz_bound_is_differentiable_in_the_weights():
    g = random_generator(jax.random.key(3), (4, 7, 5), activation=LeakyRelu(0.3))
    grads = jax.grad(lambda g: g.lipschitz_bound())(g)
    w0 = np.asarray(g.weights[0])
    u, s, vt = np.linalg.svd(w0)
    # d sigma_1 / dW = u_1 v_1^T, times the other factors of the product
    other = float(g.lipschitz_bound()) / s[0]
    np.testing.assert_allclose(np.asarray(grads.weights[0]), other * np.outer(u[:, 0], vt[0]), atol=1e-10)


# ---------------------------------------------------------------- spectral control


def test_sigma_star_step_clips_top_singular_value_exactly():
    w = _rand_w(1, scale=0.3)
    s = np.linalg.svd(w, compute_uv=False)
    sigma_star = 0.5 * (s[0] + s[1])
    out = np.asarray(sigma_star_step(w, sigma_star))
    s_out = np.linalg.svd(out, compute_uv=False)
    np.testing.assert_allclose(s_out, np.sort(np.r_[sigma_star, s[1:]])[::-1], rtol=1e-12)
    # below sigma_2 the new top singular value is sigma_2 (the rank-one step only touches sigma_1)
    out2 = np.asarray(sigma_star_step(w, 0.5 * s[2]))
    np.testing.assert_allclose(np.linalg.norm(out2, 2), s[1], rtol=1e-12)
    # already inside the ball: unchanged
    np.testing.assert_allclose(np.asarray(sigma_star_step(w, 2 * s[0])), w, atol=1e-14)
    # power iteration gives the same step
    out_pi = np.asarray(sigma_star_step(w, sigma_star, n_iter=300))
    np.testing.assert_allclose(out_pi, out, atol=1e-8)


def test_projection_and_repeated_steps_agree():
    w = _rand_w(2)
    sigma_star = 0.8
    proj = np.asarray(project_spectral_norm(w, sigma_star))
    assert np.linalg.norm(proj, 2) <= sigma_star * (1 + 1e-12)
    s, s_proj = np.linalg.svd(w, compute_uv=False), np.linalg.svd(proj, compute_uv=False)
    np.testing.assert_allclose(s_proj, np.minimum(s, sigma_star), rtol=1e-12)
    rep = jnp.asarray(w)
    for _ in range(int(np.sum(s > sigma_star))):
        rep = sigma_star_step(rep, sigma_star)
    np.testing.assert_allclose(np.asarray(rep), proj, atol=1e-10)


def test_sigma_star_dynamic_keeps_the_spectral_norm_bounded():
    """Small gradient steps followed by the rank-one correction: sigma_1 <= sigma* after every step
    once only the top singular value can cross sigma* (eta E small against the gap sigma_1 - sigma_2)."""
    q1, _ = np.linalg.qr(_rand_w(3, (3, 3)))
    q2, _ = np.linalg.qr(_rand_w(4, (3, 3)))
    w = jnp.asarray(q1 @ np.diag([3.0, 1.0, 0.5]) @ q2)
    sigma_star = 2.0
    step = jax.jit(lambda w, e: sigma_star_update(w, e, 1e-2, sigma_star))
    keys = jax.random.split(jax.random.key(0), 50)
    for k in keys:
        w = step(w, jax.random.normal(k, (3, 3)))
        assert float(jnp.linalg.norm(w, 2)) <= sigma_star * (1 + 1e-12)


def test_power_iteration_and_spectral_normalize():
    w = _rand_w(4)
    s_true = np.linalg.norm(w, 2)
    s, u, v = power_iteration(w, jnp.ones(9), n_iter=200)
    np.testing.assert_allclose(float(s), s_true, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(w @ np.asarray(v)), float(s) * np.asarray(u), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(spectral_normalize(w, 1.7)), 2), 1.7, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(spectral_normalize(w, 1.0, n_iter=200)), 2), 1.0, rtol=1e-9)
    g = random_generator(jax.random.key(5), (5, 20, 30), weight_std=3.0)
    np.testing.assert_allclose(np.asarray(g.spectral_normalized(0.9).layer_norms()), 0.9, rtol=1e-12)
    gp = g.project(0.9)
    assert np.all(np.asarray(gp.layer_norms()) <= 0.9 * (1 + 1e-12))
    # jit/vmap: a batch of matrices projected at once
    ws = jnp.asarray(np.stack([_rand_w(i) for i in range(4)]))
    batched = jax.jit(jax.vmap(lambda w: sigma_star_step(w, 1.0)))(ws)
    for i in range(4):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(sigma_star_step(ws[i], 1.0)), atol=1e-12)


# ---------------------------------------------------------------- concentration & moments


@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_concentration_is_dimension_free():
    """Var f(x) <= Lip(f o g)^2 (Gaussian Poincaré) for the 1-Lipschitz functionals ||x|| and u^T x:
    their fluctuations stay O(1) as p grows while ||x|| grows like sqrt(p)."""
    stds, norms = [], []
    for p in (32, 128, 512):
        g = random_generator(jax.random.key(p), (p // 2, p, p), activation=LeakyRelu(0.2),
                             final_activation=Tanh(), weight_std=2.0, bias_std=0.5, sigma_star=1.5)
        L = float(g.lipschitz_bound())
        x = concentrated_mixture(jax.random.key(1), [g], n=1500).x
        u = jax.random.normal(jax.random.key(2), (p,))
        u = u / jnp.linalg.norm(u)
        for f in (jnp.linalg.norm(x, axis=1), x @ u):
            sd = float(jnp.std(f))
            # sample sd above L only with probability ~ exp(-O(N)): a 5-SE margin for the sd estimate
            assert sd <= L * (1 + 5 / np.sqrt(2 * 1500))
        stds.append(float(jnp.std(jnp.linalg.norm(x, axis=1))))
        norms.append(float(jnp.mean(jnp.linalg.norm(x, axis=1))))
    assert norms[-1] / norms[0] > 3.0  # ~ sqrt(512 / 32) = 4
    assert max(stds) / min(stds) < 2.0


def test_mixture_and_moments():
    g = random_generator(jax.random.key(0), (4, 16, 10), activation=Tanh(), final_activation=Tanh(), weight_std=2.0)
    lm = 1.5 * jnp.eye(3, 4)
    # 6000 points / 6000 moment samples per class: the 5-6 SE checks below are scale-free in n
    mix = concentrated_mixture(jax.random.key(1), g, lm, n=6000)
    assert mix.x.shape == (6000, 10)
    np.testing.assert_array_equal(np.bincount(np.asarray(mix.labels)), [2000, 2000, 2000])
    mom = concentrated_moments(jax.random.key(2), g, lm, n_samples=6000, batch_size=2000)
    assert mom.n_samples == 6000
    x, lab = np.asarray(mix.x), np.asarray(mix.labels)
    for c in range(3):
        xc = x[lab == c]
        # independent draws: means agree within 5 combined standard errors
        se = np.sqrt(np.asarray(mom.mean_se[c]) ** 2 + xc.var(0) / len(xc))
        assert np.all(np.abs(xc.mean(0) - np.asarray(mom.means[c])) < 5 * se)
        # covariances: within 6 combined standard errors entrywise (SE from the fourth moments)
        y = xc - xc.mean(0)
        prod = y[:, :, None] * y[:, None, :]
        se_cov = np.sqrt(2 * prod.var(0) / len(xc))  # the two independent estimates have ~ equal SE
        assert np.all(np.abs(np.cov(xc.T) - np.asarray(mom.covariances[c])) < 6 * se_cov + 1e-12)
        np.testing.assert_allclose(np.asarray(mom.second_moments[c]),
                                   np.asarray(mom.covariances[c]) + np.outer(mom.means[c], mom.means[c]), atol=1e-12)
    # classes differ: distinct latent means give distinct data means
    assert float(jnp.linalg.norm(mom.means[0] - mom.means[1])) > 10 * float(jnp.max(mom.mean_se))
    # a list of per-class generators
    g2 = random_generator(jax.random.key(7), (3, 8, 10))
    m2 = concentrated_mixture(jax.random.key(3), [g, g2], n=10)
    assert m2.x.shape == (10, 10) and np.asarray(m2.labels).tolist() == [0] * 5 + [1] * 5


def test_bad_input():
    w = _rand_w(0)
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="sigma_star"):
            sigma_star_step(w, bad)
        with pytest.raises(ValueError, match="sigma_star"):
            project_spectral_norm(w, bad)
    with pytest.raises(ValueError, match="sigma_star"):
        random_generator(jax.random.key(0), (3, 4), sigma_star=0.0)
    with pytest.raises(ValueError, match="w must be"):
        sigma_star_step(np.ones(3), 1.0)
    with pytest.raises(ValueError, match="grad"):
        sigma_star_update(w, np.ones((3, 3)), 0.1, 1.0)
    with pytest.raises(ValueError, match="v0"):
        power_iteration(w, np.ones(3))
    with pytest.raises(ValueError, match="dims"):
        random_generator(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match="dims"):
        random_generator(jax.random.key(0), (3, 0, 2))
    with pytest.raises(ValueError, match="weights\\[1\\]"):
        LipschitzGenerator((jnp.ones((4, 3)), jnp.ones((2, 5))), (jnp.zeros(4), jnp.zeros(2)), Tanh(), None)
    with pytest.raises(ValueError, match="biases\\[0\\]"):
        LipschitzGenerator((jnp.ones((4, 3)),), (jnp.zeros(3),), Tanh(), None)
    with pytest.raises(ValueError, match="activation"):
        LipschitzGenerator((jnp.ones((4, 3)),), (jnp.zeros(4),), Sign(), None)
    g = random_generator(jax.random.key(0), (3, 4))
    with pytest.raises(ValueError, match="z must"):
        g(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="latent_means"):
        concentrated_mixture(jax.random.key(0), g, jnp.ones((2, 5)), n=4)
    with pytest.raises(ValueError, match="latent_means"):
        concentrated_mixture(jax.random.key(0), g, n=4)
    with pytest.raises(ValueError, match="output dimension"):
        concentrated_mixture(jax.random.key(0), [g, random_generator(jax.random.key(1), (3, 5))], n=4)
    with pytest.raises(ValueError, match="n_samples"):
        concentrated_moments(jax.random.key(0), [g], n_samples=1)
    with pytest.raises(ValueError, match="latent_std"):
        concentrated_mixture(jax.random.key(0), [g], n=4, latent_std=-1.0)


# ---------------------------------------------------------------- Fréchet distance


def _spd(seed, d, rank=None):
    a = np.random.default_rng(seed).normal(size=(d, d if rank is None else rank))
    return a @ a.T


def _fid_scipy(m1, c1, m2, c2):
    s1 = sla.sqrtm(c1)
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * sla.sqrtm(s1 @ c2 @ s1)).real)


def test_frechet_vs_scipy_and_closed_forms():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    c1, c2 = _spd(1, 6), _spd(2, 6)
    np.testing.assert_allclose(float(frechet_distance(m1, c1, m2, c2)), _fid_scipy(m1, c1, m2, c2), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(psd_sqrtm(c1)), sla.sqrtm(c1).real, atol=1e-10)
    # diagonal: |m1 - m2|^2 + sum (sqrt a - sqrt b)^2
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    np.testing.assert_allclose(float(frechet_distance(m1, np.diag(a), m2, np.diag(b))),
                               np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rtol=1e-12)
    # commuting: same eigenvectors
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    np.testing.assert_allclose(float(frechet_distance(m1, q @ np.diag(a) @ q.T, m2, q @ np.diag(b) @ q.T)),
                               np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rtol=1e-10)
    # symmetric in its two Gaussians, zero on the diagonal, also for singular covariances
    np.testing.assert_allclose(float(frechet_distance(m2, c2, m1, c1)), float(frechet_distance(m1, c1, m2, c2)),
                               rtol=1e-10)
    cs = _spd(3, 6, rank=2)
    assert float(frechet_distance(m1, cs, m1, cs)) < 1e-12
    assert float(frechet_distance(m1, c1, m1, c1)) < 1e-12
    # rank-one covariances along the same line: the 1-d formula
    v = rng.normal(size=6)
    v /= np.linalg.norm(v)
    np.testing.assert_allclose(float(frechet_distance(m1, 4 * np.outer(v, v), m1, 9 * np.outer(v, v))), 1.0, rtol=1e-10)
    # batched == loop, jit == eager
    C1, C2 = np.stack([c1, cs]), np.stack([c2, c1])
    batched = jax.jit(frechet_distance)(np.stack([m1, m2]), C1, np.stack([m2, m1]), C2)
    for i, (ma, mb) in enumerate([(m1, m2), (m2, m1)]):
        np.testing.assert_allclose(float(batched[i]), float(frechet_distance(ma, C1[i], mb, C2[i])), rtol=1e-10)


def test_frechet_gradients():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    a1, a2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))

    # through factors A A^T + I: finite differences stay on the PD cone
    def f(m1, a1, m2, a2):
        eye = jnp.eye(4)
        return frechet_distance(m1, a1 @ a1.T + 0.5 * eye, m2, a2 @ a2.T + 0.5 * eye)

    check_gradients(f, (m1, a1, m2, a2), atol=1e-6, rtol=1e-6)
    # identity covariances (fully repeated eigenvalues): finite, and 0 at the minimum C1 = C2
    g = jax.grad(frechet_distance, argnums=(1, 3))(m1, jnp.eye(4), m2, jnp.eye(4))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in g)
    np.testing.assert_allclose(np.asarray(g[0]), 0.0, atol=1e-12)
    # gradient with respect to a scale t of C2 = t C at a repeated-eigenvalue point vs the closed form
    # d/dt [tr C + t tr C - 2 sqrt(t) tr C] = tr C (1 - 1/sqrt(t))
    c = 2.0 * jnp.eye(4)
    dt = jax.grad(lambda t: frechet_distance(m1, c, m1, t * c))(2.25)
    np.testing.assert_allclose(float(dt), 8.0 * (1 - 1 / 1.5), rtol=1e-12)
    # singular (PSD) covariances: no NaN, and the one-sided derivative along the range
    cs = jnp.asarray(_spd(4, 4, rank=2))
    g = jax.grad(frechet_distance, argnums=(0, 1, 2, 3))(m1, cs, m2, 2 * cs)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in g)
    ds = jax.grad(lambda t: frechet_distance(m1, cs, m1, t * cs))(4.0)
    np.testing.assert_allclose(float(ds), float(jnp.trace(cs)) * (1 - 1 / 2.0), rtol=1e-10)


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="square"):
        frechet_distance(np.zeros(2), np.ones((2, 3)), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="mean2"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="same size"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# ---------------------------------------------------------------- compilation of eager calls


def test_eager_calls_compile_few_programs():
    """The numerical work of the public functions runs in functions jitted once at module level: a
    first eager call with new shapes compiles few one-operation programs (measured 2026-12-07 on this
    sequence: 82 before, 6 after, the transfers and conversions of the validation), and a second
    call with the same shapes and new values compiles nothing (that part passed before too)."""
    rng = np.random.default_rng(0)

    def run(seed):
        g = random_generator(jax.random.key(seed), (5, 7, 11), activation=LeakyRelu(0.3), sigma_star=1.3)
        lm = rng.normal(size=(3, 5))
        concentrated_mixture(jax.random.key(seed + 1), g, lm, n=13)
        concentrated_moments(jax.random.key(seed + 2), g, lm, n_samples=24, batch_size=8)
        concentrated_moments(jax.random.key(seed + 3), [g, g], n_samples=24, batch_size=8)
        return g(rng.normal(size=(6, 5))), g.lipschitz_bound(), g.layer_norms()

    with Programs() as first:
        run(0)
    assert len(first.one_op) <= 12, f"{len(first.one_op)} one-operation programs: {first.one_op}"
    with Programs() as second:
        run(10)
    assert not second.names, f"{len(second.names)} programs compiled by a repeated call: {second.names}"
