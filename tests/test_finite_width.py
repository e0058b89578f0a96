"""`rmtjax.finite_width`: the four-point vertex and the 1/n NNGP correction against closed forms
(ReLU, deep linear networks), independent quadrature, and ensembles of finite Flax networks."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from rmtjax.activations import Erf, Identity, Relu, Tanh
from rmtjax.finite_width import ExpansionWarning, nngp_corrections, ntk_covariance, ntk_fluctuations
from rmtjax.kernels import FullyConnected, kernel

X3 = np.array([[1.0, 0.5, -0.3, 0.2], [0.4, -1.1, 0.8, 0.1], [-0.7, 0.3, 0.9, -1.2]])


def test_relu_single_input_vertex_is_five_per_layer():
    # ReLU, no biases, any C_W: Cov(relu^2) = (3/2 - 1/4) K^2 and d<relu^2>/dK = 1/2 give
    # V^(l+1) = (5/4) C_W^2 K^2 + (C_W/2)^2 V^(l), K^(l+1) = C_W K^(l) / 2: V^(l) / K^(l)^2 = 5 (l - 1)
    # (PDLT sec. 5.5); E[relu^2 | G] is linear in G, so the mean correction vanishes
    for W in (2**0.5, 1.1):
        c = nngp_corrections(jnp.array([[0.3, -1.2, 0.5]]), FullyConnected(5, W_std=W, b_std=0.0))
        ratio = c.vertex[:, 0, 0, 0, 0] / c.nngp[:, 0, 0] ** 2
        np.testing.assert_allclose(ratio, 5.0 * np.arange(6), rtol=1e-12, atol=1e-12)  # measured 6e-16
        np.testing.assert_allclose(c.correction, 0.0, atol=1e-12)


def test_deep_linear_network_closed_form_with_unequal_widths():
    # phi(z) = z: F(K) = K, Cov[z_a z_b, z_c z_d] = K_ac K_bd + K_ad K_bc, the map is linear (no mean
    # correction) and V^(l+1)/n_l = C_W^2 (K K + K K)/n_l + C_W^2 V^(l)/n_{l-1}: the covariance of
    # the last kernel is sum_l (1/n_l) (K_ac K_bd + K_ad K_bc) at the last layer's K (b = 0).
    # Three distinct inputs: every quadrature (1-d, polar 2-d, 3-d and 4-d Gauss-Hermite) is used.
    widths = (16, 48, 32)
    W = 1.3
    c = nngp_corrections(X3, FullyConnected(3, W_std=W, b_std=0.0, activation=Identity()), widths=widths)
    K = np.asarray(c.nngp[-1])
    np.testing.assert_allclose(K, W**8 * X3 @ X3.T / 4, rtol=1e-12)
    pair = np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K)
    np.testing.assert_allclose(c.covariance()[-1], sum(1 / n for n in widths) * pair, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(c.correction, 0.0, atol=1e-12)
    np.testing.assert_allclose(c.fan_in, (4,) + widths)


def _relu_four_point_reference(K, p):
    """E[relu(u)^p relu(v)^(4-p)] for (u, v) ~ N(0, K) by scipy's adaptive quadrature over the
    angle (ReLU is positively homogeneous: E = E[r^4] * angular mean, E[r^4] = 8 in 2-d), with the
    points where u or v changes sign given to quad."""
    L = np.linalg.cholesky(K)

    def g(t):
        u, v = L @ np.array([np.cos(t), np.sin(t)])
        return max(u, 0.0) ** p * max(v, 0.0) ** (4 - p)

    kinks = sorted((math.atan2(-row[0], row[1]) + k * math.pi) % (2 * math.pi) for row in L for k in (0, 1))
    val, _ = integrate.quad(g, 0.0, 2 * math.pi, points=kinks, epsabs=1e-14, epsrel=1e-13, limit=400)
    return 8.0 * val / (2 * math.pi)


def test_two_input_four_point_function_against_scipy():
    # layer 2 of a ReLU network: V^(2) = C_W^2 Cov_K1[relu_a relu_b, relu_c relu_d] exactly
    x = X3[:2]
    W, b = 1.2, 0.3
    c = nngp_corrections(x, FullyConnected(1, W_std=W, b_std=b))
    K = W**2 * x @ x.T / 4 + b**2
    E = {p: _relu_four_point_reference(K, p) for p in (1, 2, 3)}
    k = np.asarray(c.nngp[1] - b**2) / W**2  # E[relu_a relu_b]
    V = np.asarray(c.vertex[1])
    # (01)(01): E[relu0^2 relu1^2]; (00)(01): E[relu0^3 relu1]; (01)(11): E[relu0 relu1^3]
    np.testing.assert_allclose(V[0, 1, 0, 1], W**4 * (E[2] - k[0, 1] ** 2), rtol=1e-10)
    np.testing.assert_allclose(V[0, 0, 0, 1], W**4 * (E[3] - k[0, 0] * k[0, 1]), rtol=1e-10)
    np.testing.assert_allclose(V[0, 1, 1, 1], W**4 * (E[1] - k[0, 1] * k[1, 1]), rtol=1e-10)


def _ensemble_conjugate_kernels(x, spec, width, size, seed):
    """The readout's conjugate kernel G = C_W h h^T / n + C_b of `size` Flax networks
    (rmtjax.finite.init_ensemble, in equal chunks: one compiled program)."""
    from flax import nnx

    from rmtjax.finite import init_ensemble

    W, b = (float(v[-1]) for v in spec.layer_params(jnp.float64))
    chunk = min(size, max(500, 2**22 // width**2))  # about 32 MiB of weights per layer and draw
    out = []
    for k in jax.random.split(jax.random.key(seed), size // chunk):
        ens = init_ensemble(k, spec, x.shape[1], size=chunk, width=width)
        graphdef, _, rest = nnx.split(ens.model, nnx.Param, ...)
        h = _features(graphdef, rest, ens.params, x)
        out.append(np.asarray(W**2 * jnp.einsum("sai,sbi->sab", h, h) / width + b**2))
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=0)
def _features(graphdef, rest, params, x):
    from flax import nnx

    return jax.vmap(lambda p: nnx.merge(graphdef, p, rest).features(x))(params)


# xla_optimized: drawing and running 20,000 networks is run time, not compile time (measured 2026-12-07
# on the 2-core machine under load: 25.7 s at -O0, 18.1 s optimized; the NTK ensembles below 14.8 -> 9.9 s)
@pytest.mark.slow
def test_flax_ensembles_match_vertex_and_mean_correction(xla_optimized):
    # tanh, depth 3, two inputs. The vertex: width 128, 4000 networks, n Cov(G) against V within
    # 5 standard errors (se of a covariance by batch means). The mean correction needs more
    # resolution (n * se(mean) = sqrt(n V / N)): width 32, 16000 networks. Measured largest
    # z-scores: vertex 2.3, correction 1.2 (se 0.03-0.045 against corrections of -0.14 and 0.06).
    x = jnp.asarray(X3[:2])
    spec = FullyConnected(3, W_std=1.4, b_std=0.3, activation=Tanh())
    c = nngp_corrections(x, spec)
    a, b = np.triu_indices(2)
    V = np.asarray(c.vertex[-1])[a, b][:, a, b]
    G1 = np.asarray(c.correction[-1])[a, b]
    K = np.asarray(c.nngp[-1])[a, b]

    n, N = 128, 4000
    g = _ensemble_conjugate_kernels(x, spec, n, N, 0)[:, a, b]
    batches = np.stack([n * np.cov(chunk.T) for chunk in np.split(g, 20)])
    z = np.abs(n * np.cov(g.T) - V) / (batches.std(0, ddof=1) / np.sqrt(len(batches)))
    assert z.max() < 5, (z, n * np.cov(g.T), V)

    n, N = 32, 16000
    g = _ensemble_conjugate_kernels(x, spec, n, N, 1)[:, a, b]
    dev = n * (g.mean(0) - K)
    se = n * g.std(0, ddof=1) / np.sqrt(N)
    z = np.abs(dev - G1) / se
    assert z.max() < 5, (z, dev, G1, se)
    # informative: the diagonal corrections are resolved (not lost in the noise), with their sign
    diag = a == b
    assert np.all(np.abs(G1[diag]) > 3 * se[diag]) and np.all(np.sign(dev[diag]) == np.sign(G1[diag])), (dev, G1, se)


def test_relu_ntk_variance_closed_form():
    # ReLU without biases, equal widths, layer l + 1 after l hidden layers: Theta = (l + 1) K with no
    # 1/n shift of the mean, and n Var(Theta) / Theta^2 = l (11 l + 7) / (3 (l + 1)) (worked out by
    # hand from the recursion's ReLU moments: F = q/2, H = 1/2, Var(phi^2) = 5K^2/4, ...)
    x = jnp.array([[0.3, -1.2, 0.5], [1.0, 0.2, 0.1]])
    for W in (2**0.5, 0.9):
        f = ntk_fluctuations(x, FullyConnected(6, W_std=W, b_std=0.0), widths=64)
        l = np.arange(7)[:, None]
        np.testing.assert_allclose(f.variance / f.ntk**2, np.broadcast_to(l * (11 * l + 7) / (3 * (l + 1)), (7, 2)),
                                   rtol=1e-12, atol=1e-12)  # measured 7e-16
        np.testing.assert_allclose(f.correction, 0.0, atol=1e-8)
        np.testing.assert_allclose(f.ntk[-1], kernel(x, None, FullyConnected(6, W_std=W, b_std=0.0)).ntk.diagonal(),
                                   rtol=1e-12)


@pytest.mark.slow
def test_flax_ensembles_match_ntk_mean_and_variance(xla_optimized):
    # tanh with biases, depth 3, width 128: the empirical NTK of 2000 Flax networks. Variance within
    # 5 standard errors (se of a sample variance: sqrt(2/N) relative, 3.2%; the O(L/n) bias at
    # this size is smaller: measured at depth 4 with 8000-16000 networks, 1% at width 256 and 7% at
    # width 32). Measured here: z = 0.8 for the variance, 2.2 for the mean.
    from rmtjax.finite import ensemble_kernels, init_ensemble

    x = jnp.asarray(X3[:1])
    spec = FullyConnected(3, W_std=1.8**0.5, b_std=0.1**0.5, activation=Tanh())
    n, N, chunk = 128, 2000, 500
    f = ntk_fluctuations(x, spec, widths=n)
    vals = np.concatenate([
        np.asarray(ensemble_kernels(x, None, init_ensemble(k, spec, x.shape[1], size=chunk, width=n)).ntk[:, 0, 0])
        for k in jax.random.split(jax.random.key(3), N // chunk)])
    var = vals.var(ddof=1)
    z_var = abs(var - f.variance[-1, 0] / n) / (var * np.sqrt(2 / N))
    z_mean = abs(vals.mean() - f.mean()[-1, 0]) / (vals.std(ddof=1) / np.sqrt(N))
    assert z_var < 5 and z_mean < 5, (z_var, z_mean, var, f.variance[-1, 0] / n)


def test_float32_then_float64_in_one_process():
    # float32 values against float64; and a float64 call after a float32 one (the cached index
    # arrays were once int64 NumPy arrays whose int32 conversion JAX reused: lax.add int32/int64)
    x = X3[:2]
    spec = FullyConnected(2, W_std=1.4, b_std=0.3, activation=Tanh())
    with jax.enable_x64(False):
        c32 = nngp_corrections(jnp.asarray(x, jnp.float32), spec)
        f32 = ntk_fluctuations(jnp.asarray(x, jnp.float32), spec)
        assert c32.vertex.dtype == jnp.float32
    c64, f64 = nngp_corrections(x, spec), ntk_fluctuations(x, spec)
    # measured 7e-7 (vertex), 1.5e-7 (correction), 4e-7 (NTK variance) of the largest entry
    for a, b in ((c32.vertex, c64.vertex), (c32.correction, c64.correction), (f32.variance, f64.variance)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.max(np.abs(b))))


def test_jit_vmap_and_gradients():
    x = jnp.asarray(X3[:2])

    def vertex(W):
        return nngp_corrections(x, FullyConnected(2, W_std=W, b_std=0.2, activation=Tanh())).vertex[-1, 0, 1, 0, 1]

    Ws = jnp.array([1.1, 1.5])
    eager = np.array([vertex(W) for W in Ws])
    np.testing.assert_allclose(jax.jit(jax.vmap(vertex))(Ws), eager, rtol=1e-12)
    h = 1e-5
    fd = (vertex(1.3 + h) - vertex(1.3 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(vertex)(1.3), fd, rtol=1e-7)

    def ntk_var(W):
        return ntk_fluctuations(x, FullyConnected(2, W_std=W, b_std=0.2, activation=Tanh())).variance[-1, 0]

    fd = (ntk_var(1.3 + h) - ntk_var(1.3 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(ntk_var)(1.3), fd, rtol=1e-6)


def test_repeated_and_parallel_rows_give_the_single_input_values_and_finite_gradients():
    # a repeated row and a parallel one (no biases) make the kernels singular: the values are
    # those of the distinct inputs, the gradients finite and equal to finite differences
    x = jnp.asarray(X3).at[2].set(2 * X3[0])
    for act in (Relu(), Tanh()):
        def stats(W, x=x, act=act):
            c = nngp_corrections(x, FullyConnected(3, W_std=W, b_std=0.0, activation=act))
            return c.vertex[-1], c.correction[-1]

        V, G1 = stats(1.3)
        V2, G2 = stats(1.3, x[:2])
        np.testing.assert_allclose(V[:2, :2, :2, :2], V2, rtol=1e-12)
        np.testing.assert_allclose(G1[:2, :2], G2, rtol=1e-12, atol=1e-15)
        x_rep = x.at[1].set(x[0])
        V3, G3 = stats(1.3, x_rep[:2])
        np.testing.assert_allclose(V3, np.broadcast_to(V[0, 0, 0, 0], (2, 2, 2, 2)), rtol=1e-12)
        if isinstance(act, Relu):  # the kinked activation, whose dual is singular there

            def total(W):
                V, G1 = stats(W)
                return jnp.stack([V.sum(), G1.sum()])

            h = 1e-5
            fd = (total(1.3 + h) - total(1.3 - h)) / (2 * h)
            np.testing.assert_allclose(jax.jacfwd(total)(1.3), fd, rtol=1e-6)  # measured 2e-9


@pytest.mark.slow  # two gradients of depth-2 corrections
def test_a_zero_input_without_bias_has_finite_corrections_and_gradients():
    """A probe's reproducer: a zero row of x with b_std = 0 (variance 0 at every layer) raised "a variance
    overflows float64" (0/0 in the polar rule's Cholesky factor), and its gradients were NaN. The zero
    input's vertex is 0; the other input's is the limit of small b_std; gradients match differences."""
    x = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    exact = nngp_corrections(x, FullyConnected(1, 1.0, 0.0, Tanh())).vertex[-1]
    near = nngp_corrections(x, FullyConnected(1, 1.0, 1e-3, Tanh())).vertex[-1]
    assert float(exact[0, 0, 0, 0]) == 0.0
    # they differ at O(b_std^2) = 1e-6 (measured 4.0e-6 of the largest entry)
    np.testing.assert_allclose(exact, near, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(exact))))
    # one gradient each (each compiles for tens of seconds at -O0; measured: both ReLU and tanh pass)
    f = lambda w: nngp_corrections(x, FullyConnected(2, w, 0.0, Tanh())).vertex.sum()  # noqa: E731
    g = lambda w: ntk_covariance(x, FullyConnected(2, w, 0.0, Relu())).cov().sum()  # noqa: E731
    for fn in (f, g):
        d = float(jax.grad(fn)(1.0))
        assert d == pytest.approx((float(fn(1.0 + 1e-6)) - float(fn(1.0 - 1e-6))) / 2e-6, rel=1e-7)


def test_bad_input_is_a_clear_error():
    spec = FullyConnected(2)
    x = jnp.asarray(X3[:2])
    with pytest.raises(ValueError, match="widths must be"):
        nngp_corrections(x, spec, widths=(8, 8, 8))
    with pytest.raises(ValueError, match="widths must be"):
        nngp_corrections(x, spec, widths=0)
    with pytest.raises(ValueError, match="spec must be"):
        nngp_corrections(x, "relu")
    with pytest.raises(ValueError, match="x must be finite"):
        nngp_corrections(x.at[0, 0].set(jnp.nan), spec)
    with pytest.raises(ValueError, match="parameterization='ntk' only"):
        ntk_fluctuations(x, FullyConnected(2, parameterization="standard", widths=8))
    deep = FullyConnected(8, W_std=2**0.5, b_std=0.0)
    for fn in (nngp_corrections, ntk_fluctuations):
        with pytest.warns(ExpansionWarning, match=r"depth-to-width ratio L/n = 2\)"):
            fn(x[:1], deep, widths=4)
        fn(x[:1], deep, widths=256)  # no warning (warnings are errors in this suite)
    with pytest.raises(ValueError, match="x must be real"):
        nngp_corrections(np.asarray(x) + 1j, spec)


# ---------------------------------------------------------------------------------------------
# ntk_covariance: the covariance of all NTK entries for a batch of inputs
# ---------------------------------------------------------------------------------------------


def _permuted(T, perm):
    """``T[l, perm[a], perm[b], ...]`` over every axis but the first."""
    for axis in range(1, T.ndim):
        T = np.take(T, perm, axis=axis)
    return T


def test_ntk_covariance_diagonal_symmetry_and_permutation():
    # three inputs, unequal widths, a smooth and a kinked activation with biases: the diagonal
    # entries are ntk_fluctuations' (its ReLU closed form is tested above), the last NTK is the
    # engine's, n Cov over the pairs is symmetric and PSD, and permuting the inputs permutes
    # every output. Measured: diagonal 1.1e-15 (correction) and 2.5e-16 (variance) relative to the
    # largest entry; asymmetry 1e-16 relative; smallest eigenvalue > 0 (tanh 3.9 of 69, ReLU 3.9 of
    # 572); permutation 1.0e-4 (tanh) and 1.3e-3 (ReLU) of the
    # largest entry in the covariance (its three-input entries are tensor Gauss-Hermite of degree 16,
    # whose grid turns with the order of the inputs), 6e-16 in the mean correction (two-input formulas)
    widths = (16, 48, 32)
    perm = np.array([2, 0, 1])
    for act, b in ((Tanh(), 0.3), (Relu(), 0.4)):
        spec = FullyConnected(3, W_std=1.4, b_std=b, activation=act)
        c = ntk_covariance(X3, spec, widths=widths)
        f = ntk_fluctuations(X3, spec, widths=widths)
        a, b_ = c.pairs()
        diag = np.flatnonzero(a == b_)
        for got, ref in ((np.diagonal(c.ntk, axis1=1, axis2=2), f.ntk),
                         (np.diagonal(c.correction, axis1=1, axis2=2), f.correction),
                         (np.asarray(c.covariance)[:, diag, diag], f.variance)):
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * max(float(np.max(np.abs(ref))), 1e-300))
        np.testing.assert_allclose(c.ntk[-1], kernel(X3, None, spec).ntk, rtol=1e-12)
        C = np.asarray(c.covariance)
        scale = np.max(np.abs(C))
        np.testing.assert_allclose(C, np.transpose(C, (0, 2, 1)), rtol=0, atol=1e-13 * scale)
        assert np.linalg.eigvalsh(C[1:]).min() > -1e-12 * scale
        np.testing.assert_allclose(c.cov(), C / np.asarray(c.fan_in)[:, None, None], rtol=1e-15)
        p = ntk_covariance(X3[perm], spec, widths=widths)
        for got, ref, tol in ((p.ntk, c.ntk, 1e-13), (p.correction, c.correction, 3e-3),
                              (p.tensor(), c.tensor(), 3e-3)):
            ref = _permuted(np.asarray(ref), perm)
            np.testing.assert_allclose(got, ref, rtol=0, atol=tol * np.max(np.abs(ref)))


def test_ntk_covariance_repeated_row_equals_the_original():
    # two copies of one input: the off-diagonal formulas (two-input expectations at correlation 1,
    # the Stein weights 2 dk/dq1 and dk/dq12 split between the copies, S_ab,ef and U_ab,dc) must give
    # the diagonal ones, so every entry equals the (0, 0) entry. Measured: NTK 7e-16, correction 1.2e-10,
    # covariance 8e-13 (tanh); NTK and correction exact, covariance 1.1e-9 (ReLU) of the largest entry
    x = np.stack([X3[0], X3[0]])
    for act in (Tanh(), Relu()):
        c = ntk_covariance(x, FullyConnected(3, W_std=1.4, b_std=0.3, activation=act), widths=(16, 48, 32))
        for T in (c.ntk, c.correction, c.tensor()):
            T = np.asarray(T).reshape(T.shape[0], -1)
            np.testing.assert_allclose(T, np.broadcast_to(T[:, :1], T.shape), rtol=0, atol=1e-8 * np.max(np.abs(T)))


def test_ntk_covariance_deep_linear_closed_form():
    # phi(z) = z, b = 0: Theta = sum_l |g_l|^2 G^(l) (backward norms times forward Gram matrices, which
    # are independent); at O(1/n) the forward Wishart fluctuations eps_k (Cov eps_ab eps_cd =
    # (Kb_ac Kb_bd + Kb_ad Kb_bc)/n_k) and backward chi^2 fluctuations xi_k (Var 2/n_k) of layer k enter
    # L+1-k and k terms of the sum, so Cov(Theta_ab, Theta_cd) = C_W^(2L) sum_k (1/n_k) [(L+1-k)^2
    # (Kb_ac Kb_bd + Kb_ad Kb_bc) + 2 k^2 Kb_ab Kb_cd], Kb = C_W x x'/d, and no mean correction
    # (E|g_l|^2 and E G^(l) are exact). Measured: 1e-15 relative.
    widths, W, L = (16, 48, 32), 1.3, 3
    c = ntk_covariance(X3, FullyConnected(L, W_std=W, b_std=0.0, activation=Identity()), widths=widths)
    Kb = W**2 * X3 @ X3.T / 4
    pair = np.einsum("ac,bd->abcd", Kb, Kb) + np.einsum("ad,bc->abcd", Kb, Kb)
    same = np.einsum("ab,cd->abcd", Kb, Kb)
    ref = W ** (4 * L) * sum(((L + 1 - k) ** 2 * pair + 2 * k**2 * same) / n for k, n in enumerate(widths, start=1))
    np.testing.assert_allclose(np.asarray(c.tensor()[-1]) / widths[-1], ref, rtol=1e-12, atol=1e-14 * np.max(ref))
    np.testing.assert_allclose(c.correction, 0.0, atol=1e-12)
    np.testing.assert_allclose(c.ntk[-1], (L + 1) * W ** (2 * L) * Kb, rtol=1e-12)


def _two_inputs_ntk_covariance(W, b, dtype=None):
    x = jnp.asarray(X3[:2], dtype)
    return ntk_covariance(x, FullyConnected(3, W_std=W, b_std=b, activation=Tanh()), widths=(16, 48, 32))


def test_ntk_covariance_gradients_jit_and_vmap():
    # forward-mode derivatives in W_std and b_std along two random directions against fourth-order
    # central differences (erf: a closed-form dual, the cheapest smooth activation to differentiate
    # three times over; reverse mode adds 10-25 s of compile here and was measured once instead).
    # Measured (separate script, h = 1e-4): the forward- and reverse-mode Jacobians agree with the
    # difference to 2.2e-10 (W_std) and 6.6e-12 (b_std) relative per entry.
    from tests._gradcheck import check_gradients

    def stats(W, b):
        c = ntk_covariance(jnp.asarray(X3[:2]), FullyConnected(2, W_std=W, b_std=b, activation=Erf()), widths=16)
        return jnp.concatenate([c.covariance[-1].ravel(), c.correction[-1].ravel()])

    check_gradients(stats, (1.4, 0.3), modes=("fwd",), atol=1e-7, rtol=1e-6)
    # eager == jit(vmap) over W_std
    Ws = jnp.array([1.1, 1.5])
    eager = np.stack([stats(W, 0.3) for W in Ws])
    np.testing.assert_allclose(jax.jit(jax.vmap(stats, in_axes=(0, None)))(Ws, 0.3), eager, rtol=1e-12, atol=1e-14)


def test_ntk_covariance_float32():
    # no NaN, and agreement with float64. Measured: 2.7e-7 (NTK), 3.5e-7 (correction), 3.8e-7
    # (covariance) of the largest entry
    c64 = _two_inputs_ntk_covariance(1.4, 0.3)
    with jax.enable_x64(False):
        c32 = _two_inputs_ntk_covariance(1.4, 0.3, jnp.float32)
        assert c32.covariance.dtype == jnp.float32
    for a, b in ((c32.ntk, c64.ntk), (c32.correction, c64.correction), (c32.covariance, c64.covariance)):
        assert np.all(np.isfinite(np.asarray(a)))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.max(np.abs(b))))


def test_ntk_covariance_bad_input_is_a_clear_error():
    x = jnp.asarray(X3[:2])
    with pytest.raises(ValueError, match="widths must be"):
        ntk_covariance(x, FullyConnected(2), widths=(8, 8, 8))
    with pytest.raises(ValueError, match="widths must be"):
        ntk_covariance(x, FullyConnected(2), widths=0)
    with pytest.raises(ValueError, match="spec must be"):
        ntk_covariance(x, "relu")
    with pytest.raises(ValueError, match="parameterization='ntk' only"):
        ntk_covariance(x, FullyConnected(2, parameterization="standard", widths=8))
    with pytest.raises(ValueError, match="x must be finite"):
        ntk_covariance(x.at[0, 0].set(jnp.nan), FullyConnected(2))
    with pytest.raises(ValueError, match="x must be real"):
        ntk_covariance(np.asarray(x) + 1j, FullyConnected(2))
    with pytest.raises(ValueError, match="at most 32 inputs"):
        ntk_covariance(jnp.ones((33, 2)), FullyConnected(2))
    with pytest.raises(ValueError, match="deg3"):
        ntk_covariance(x, FullyConnected(2), deg3=1)
    deep = FullyConnected(8, W_std=2**0.5, b_std=0.0)
    with pytest.warns(ExpansionWarning, match=r"depth-to-width ratio L/n = 2\)"):
        ntk_covariance(x[:1], deep, widths=4)
    ntk_covariance(x[:1], deep, widths=256)  # no warning (warnings are errors in this suite)


def _ensemble_ntks(x, spec, width, size, seed, chunk):
    """The empirical NTK of `size` Flax networks (rmtjax.finite), over the pairs a <= b."""
    from rmtjax.finite import ensemble_kernels, init_ensemble

    a, b = np.triu_indices(x.shape[0])
    return np.concatenate([
        np.asarray(ensemble_kernels(x, None, init_ensemble(k, spec, x.shape[1], size=chunk, width=width)).ntk)
        for k in jax.random.split(jax.random.key(seed), size // chunk)])[:, a, b]


@pytest.mark.slow
def test_flax_ensembles_match_ntk_covariance_and_mean_correction(xla_optimized):
    # tanh with biases, depth 3, three inputs (the pairs 00, 01, 02, 11, 12, 22; the covariance's
    # three-input entries use the 3-d Gauss-Hermite rule). Covariance: width 128, 2000 networks;
    # every entry of the sample covariance over the pairs against Cov = covariance / n within 5
    # standard errors (se of a sample covariance from the sample fourth moments,
    # sd((X - mean X)(Y - mean Y)) / sqrt(N)). Mean correction: width 32, 16000 networks,
    # n (mean - Theta) against the correction within 5 se; the off-diagonal corrections are resolved
    # (more than 2 se from zero, with their sign). Measured (same keys, separate script): covariance
    # max |z| 2.3 over the 36 entries (n Cov on the diagonal sampled 15.7 / 2.91 / 3.17 / 20.3 / 3.50 /
    # 26.2 against 17.0 / 2.87 / 3.10 / 21.5 / 3.39 / 26.5: the O(L/n) term plus noise); mean correction
    # max |z| 1.3 (off-diagonal sampled 0.19 / 0.18 / 0.29 against 0.20 / 0.25 / 0.18, se 0.08).
    # Also measured once, not run here: ReLU (C_W = 2, C_b = 0.1), two inputs, width 128: max |z| 1.0.
    x = jnp.asarray(X3)
    spec = FullyConnected(3, W_std=1.8**0.5, b_std=0.1**0.5, activation=Tanh())
    a, b = np.triu_indices(3)
    off = a != b

    n, N = 128, 2000
    c = ntk_covariance(x, spec, widths=n)
    vals = _ensemble_ntks(x, spec, n, N, 0, 500)
    dev = vals - vals.mean(0)
    cov = dev.T @ dev / (N - 1)
    se = (dev[:, :, None] * dev[:, None, :]).std(0, ddof=1) / np.sqrt(N)
    z = np.abs(cov - np.asarray(c.cov()[-1])) / se
    assert z.max() < 5, (z, n * cov, c.covariance[-1])

    n, N = 32, 16000
    c = ntk_covariance(x, spec, widths=n)
    vals = _ensemble_ntks(x, spec, n, N, 1, 4000)
    dev = n * (vals.mean(0) - np.asarray(c.ntk[-1])[a, b])
    se = n * vals.std(0, ddof=1) / np.sqrt(N)
    corr = np.asarray(c.correction[-1])[a, b]
    z = np.abs(dev - corr) / se
    assert z.max() < 5, (z, dev, corr, se)
    assert np.all(np.abs(corr[off]) > 2 * se[off]) and np.all(np.sign(dev[off]) == np.sign(corr[off])), (dev, corr, se)
