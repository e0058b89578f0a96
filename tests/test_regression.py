"""rmtjax.regression against independent closed forms (NumPy solves, SciPy matrix exponentials
and an ODE integration of the gradient flow), plus the numerical edge cases: singular kernels,
t = 0 and t = inf, jitter, gradients, jit, and bad input. (Agreement with neural-tangents'
nt.predict to 1e-8 is checked by benchmarks/kernel_regression.py in the oracle environment.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from rmtjax.activations import Erf
from rmtjax.kernels import FullyConnected, kernel
from rmtjax.regression import blocked_kernel, gp_inference, gradient_descent_mse, gradient_descent_mse_ensemble

NET = FullyConnected(2, 1.5, 0.1, Erf())


@pytest.fixture(scope="module")
def problem():
    x = jax.random.normal(jax.random.key(0), (12, 4))
    xt = jax.random.normal(jax.random.key(1), (5, 4))
    y = jnp.stack([jnp.sin(2 * x[:, 0]), jnp.cos(x[:, 1])], axis=1)
    return x, xt, y, kernel(x, None, NET), kernel(xt, x, NET), kernel(xt, None, NET)


def _np(*a):
    return [np.asarray(v, np.float64) for v in a]


def test_gp_inference_matches_the_closed_forms(problem):
    x, xt, y, ktr, kte, ktt = problem
    reg = 1e-3
    out = gp_inference(ktr, y, diag_reg=reg)(None, kte, ktt)
    K, T, Kt, Tt, Ktt, Y = _np(ktr.nngp, ktr.ntk, kte.nngp, kte.ntk, ktt.nngp, y)
    n = len(K)
    Kr = K + reg * np.trace(K) / n * np.eye(n)
    Tr = T + reg * np.trace(T) / n * np.eye(n)
    np.testing.assert_allclose(out.nngp.mean, Kt @ np.linalg.solve(Kr, Y), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.nngp.covariance, Ktt - Kt @ np.linalg.solve(Kr, Kt.T), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(out.ntk.mean, Tt @ np.linalg.solve(Tr, Y), rtol=1e-9, atol=1e-12)
    A = Tt @ np.linalg.inv(Tr)  # Lee et al. 2019, eq. 16
    cov = Ktt + A @ K @ A.T - (A @ Kt.T + Kt @ A.T)
    np.testing.assert_allclose(out.ntk.covariance, cov, rtol=1e-8, atol=1e-10)
    gp = gp_inference(ktr.ntk, y, diag_reg=reg)("ntkgp", kte.ntk, ktt.ntk)
    np.testing.assert_allclose(gp.covariance, _np(ktt.ntk)[0] - Tt @ np.linalg.solve(Tr, Tt.T), rtol=1e-8, atol=1e-10)
    # training set: N(y, 0); a string get returns the value itself
    tr = gp_inference(ktr, y)("nngp", None, True)
    np.testing.assert_array_equal(tr.mean, y)
    assert not np.any(tr.covariance)
    assert gp_inference(ktr.nngp, y, 1e-2, True)("nngp", kte.nngp).shape == (5, 2)


def test_gradient_descent_mse_matches_expm_and_an_ode_integration(problem):
    x, xt, y, ktr, kte, _ = problem
    eta, ts = 0.7, np.array([0.0, 0.5, 3.0, 40.0])
    f0 = 0.3 * jnp.cos(jnp.arange(24.0)).reshape(12, 2)
    ft0 = 0.2 * jnp.sin(jnp.arange(10.0)).reshape(5, 2)
    predict = gradient_descent_mse(ktr.ntk, y, learning_rate=eta)
    ftr, fte = predict(ts, f0, ft0, kte.ntk)
    assert ftr.shape == (4, 12, 2) and fte.shape == (4, 5, 2)
    T, Tt, Y, F0, Ft0 = _np(ktr.ntk, kte.ntk, y, f0, ft0)
    N = Y.size
    for i, t in enumerate(ts):
        E = scipy.linalg.expm(-eta * t * T / N)
        np.testing.assert_allclose(ftr[i], Y + E @ (F0 - Y), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(fte[i], Ft0 + Tt @ np.linalg.solve(T, (np.eye(12) - E) @ (Y - F0)),
                                   rtol=1e-7, atol=1e-9)
    # the flow itself: d/dt (f_X, f_*) = -(eta / N) (Theta, Theta_*X) (f_X - Y)
    def rhs(_, z):
        fx = z[:24].reshape(12, 2)
        g = -(eta / N) * np.concatenate([T @ (fx - Y), Tt @ (fx - Y)])
        return g.ravel()

    sol = scipy.integrate.solve_ivp(rhs, (0, ts[-1]), np.concatenate([F0, Ft0]).ravel(), t_eval=ts,
                                    rtol=1e-11, atol=1e-13, method="DOP853")
    z = sol.y.T.reshape(4, 17, 2)
    np.testing.assert_allclose(ftr, z[:, :12], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fte, z[:, 12:], rtol=1e-7, atol=1e-9)
    # t = 0 is the initialisation; t = inf (eigh) equals t = None (Cholesky)
    np.testing.assert_allclose(ftr[0], f0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fte[0], ft0, rtol=1e-12, atol=1e-14)
    inf_tr, inf_te = predict(jnp.inf, f0, ft0, kte.ntk)
    none_tr, none_te = predict(None, f0, ft0, kte.ntk)
    np.testing.assert_allclose(inf_te, none_te, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(inf_tr, Y, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(none_tr, y)
    # test outputs only (fx_train_0=None means f_X(0) = 0, as in neural-tangents) / training only
    np.testing.assert_allclose(predict(ts, None, ft0, kte.ntk), predict(ts, 0.0, ft0, kte.ntk)[1], rtol=1e-13)
    np.testing.assert_allclose(predict(ts, f0), ftr, rtol=1e-13)


def test_ensemble_mean_and_covariance(problem):
    x, xt, y, ktr, kte, ktt = problem
    eta, t = 1.3, 2.0
    predict = gradient_descent_mse_ensemble(NET, x, y, learning_rate=eta)
    out = predict(t, xt, None, compute_cov=True)
    K, T, Kt, Tt, Ktt, Y = _np(ktr.nngp, ktr.ntk, kte.nngp, kte.ntk, ktt.nngp, y)
    N = Y.size
    for g, Th, Th_t in (("ntk", T, Tt), ("nngp", K, Kt)):
        U = np.linalg.solve(Th, np.eye(12) - scipy.linalg.expm(-eta * t * Th / N))  # Theta^-1 (1 - e^{-Theta tau})
        A = Th_t @ U
        mean = A @ Y
        cov = Ktt + A @ K @ A.T - (A @ Kt.T + Kt @ A.T)  # Lee et al. 2019, eq. 15
        np.testing.assert_allclose(getattr(out, g).mean, mean, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(getattr(out, g).covariance, cov, rtol=1e-6, atol=1e-9)
    # t = inf (eigh) agrees with t = None (the GP posterior, Cholesky)
    a = predict(jnp.inf, xt, "ntk", compute_cov=True)
    b = predict(None, xt, "ntk", compute_cov=True)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-6, atol=1e-8)
    # training set: the covariance is E K E for the NTK
    tr = predict(t, None, "ntk", compute_cov=True)
    E = scipy.linalg.expm(-eta * t * T / N)
    np.testing.assert_allclose(tr.covariance, E @ K @ E, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(tr.mean, (np.eye(12) - E) @ Y, rtol=1e-7, atol=1e-10)
    # a stax kernel_fn works the same way
    from rmtjax import stax

    _, _, kfn = stax.serial(stax.Dense(8, 1.5, 0.1), stax.Erf(), stax.Dense(8, 1.5, 0.1), stax.Erf(),
                            stax.Dense(1, 1.5, 0.1))
    np.testing.assert_allclose(gradient_descent_mse_ensemble(kfn, x, y, eta)(t, xt, "ntk"), out.ntk.mean, rtol=1e-10)


def test_issue_19_predictors_hold_no_state(problem):
    """Issue 19: the predictors cached their factorisations in dicts on their first call, so a
    predictor built eagerly and first called under jit kept a tracer, and the next eager call
    failed (UnexpectedTracerError). They are immutable pytrees now, factorised when built."""
    x, xt, y, ktr, kte, _ = problem
    gp = gp_inference(ktr, y, 1e-3)
    gd = gradient_descent_mse(ktr.ntk, y, 0.7)
    ens = gradient_descent_mse_ensemble(NET, x, y, 0.7)

    def predict(kt):  # the first call of each predictor (and of each of gd's two factorisations)
        return gp("nngp", kt), gd(2.0, 0.0, 0.0, kt.ntk)[1], gd(None, 0.0, 0.0, kt.ntk)[1], ens(1.0, None, "ntk")

    first = jax.jit(predict)(kte)
    eager = predict(kte)  # raised UnexpectedTracerError before
    for a, b in zip(first, eager):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    # a predictor is a pytree of arrays: an argument of a jitted function
    np.testing.assert_allclose(jax.jit(lambda p, kt: p("nngp", kt))(gp, kte), eager[0], rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(gp.jitter["nngp"], 0.0)


def test_singular_kernels_jitter_and_no_nan():
    # duplicated training points: a rank-deficient kernel
    x = jax.random.normal(jax.random.key(3), (6, 3))
    x = jnp.concatenate([x, x[:2]])
    xt = jax.random.normal(jax.random.key(4), (3, 3))
    y = jnp.concatenate([jnp.ones((6, 1)), jnp.ones((2, 1))])
    k, kt = kernel(x, None, NET), kernel(xt, x, NET)
    p = gp_inference(k, y)
    m = p("nngp", kt)
    assert np.all(np.isfinite(m)) and float(p.jitter["nngp"]) > 0
    assert float(p.jitter["nngp"]) < 1e-6 * float(jnp.mean(jnp.diag(k.nngp)))
    gd = gradient_descent_mse(k.ntk, y)
    for t in (0.0, 1.0, jnp.inf, None):
        f = gd(t, 0.0, 0.0, kt.ntk)
        assert all(np.all(np.isfinite(a)) for a in f)
    assert gd.jitter is not None and float(gd.jitter) > 0
    # gradients with respect to t and to the kernel at t = 0 and t = inf: finite
    # (one compilation of each gradient for both times: t is an argument)
    loss = lambda kk, t: jnp.sum(gradient_descent_mse(kk, y)(t, 0.0, 0.0, kt.ntk)[1])  # noqa: E731
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))
    for t in (0.0, jnp.inf):
        gk, gt = grads(k.ntk, jnp.asarray(t))
        assert np.isfinite(gt) and np.all(np.isfinite(gk))


def test_not_positive_semidefinite_kernels_are_rejected():
    k = jnp.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3, -1
    y = jnp.ones((2, 1))
    with pytest.raises(ValueError, match="positive semi-definite"):
        gp_inference(k, y)("nngp", jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="positive semi-definite"):
        gradient_descent_mse(k, y)(1.0, 0.0)


def test_a_test_covariance_with_a_negative_diagonal_is_rejected():
    """A probe's reproducer: k_test_test = -I was accepted and gave negative posterior variances."""
    predict = gp_inference(2.0 * np.eye(3), np.ones((3, 1)))
    ktr = 0.5 * np.ones((2, 3))
    with pytest.raises(ValueError, match=r"k_test_test.nngp must be a covariance \(a diagonal >= 0\), got a "
                                         r"diagonal entry -1"):
        predict("nngp", ktr, -np.eye(2))
    with pytest.raises(Exception, match=r"k_test_test.nngp must be a covariance"):  # compiled check under jit
        jax.jit(lambda k: predict("nngp", ktr, k).covariance)(-jnp.eye(2))
    # posterior covariance: 1 - 0.5^2 * 3 / 2 on the diagonal, -0.375 off it
    np.testing.assert_allclose(predict("nngp", ktr, np.eye(2)).covariance, [[0.625, -0.375], [-0.375, 0.625]],
                               rtol=1e-14)


def test_gradients_jit_and_vmap(problem):
    x, xt, y, *_ = problem

    def test_loss(w_std, t):
        net = FullyConnected(2, w_std, 0.1, Erf())
        k, kt = kernel(x, None, net), kernel(xt, x, net)
        return jnp.sum(gradient_descent_mse(k.ntk, y)(t, 0.0, 0.0, kt.ntk)[1] ** 2)

    w, t = jnp.asarray(1.5), jnp.asarray(5.0)
    # one compiled program for the gradient and the values of the finite differences
    f = jax.jit(jax.value_and_grad(test_loss, argnums=(0, 1)))
    g = f(w, t)[1]
    eps = 1e-5
    fd_w = (f(w + eps, t)[0] - f(w - eps, t)[0]) / (2 * eps)
    fd_t = (f(w, t + eps)[0] - f(w, t - eps)[0]) / (2 * eps)
    np.testing.assert_allclose(g[0], fd_w, rtol=1e-6)
    np.testing.assert_allclose(g[1], fd_t, rtol=1e-6)
    np.testing.assert_allclose(f(w, t)[0], test_loss(w, t), rtol=1e-12)  # jit == eager
    ts = jnp.array([0.5, 5.0, 50.0])
    # eagerly (only t is batched: the kernels are the unbatched programs compiled above)
    np.testing.assert_allclose(jax.vmap(test_loss, (None, 0))(w, ts), [f(w, s)[0] for s in ts], rtol=1e-12)


def test_blocked_kernel_equals_kernel(problem):
    # the fixture's inputs and kernels (no new reference programs): 12 = 8 + 4 rows (a ragged last
    # block, blocks above the diagonal mirrored) and 5 test rows against two blocks of training rows
    x, xt, _, ktr, kte, _ = problem
    for a, b, ref in ((x, None, ktr), (xt, x, kte)):
        blk = blocked_kernel(a, b, NET, block=8)
        np.testing.assert_allclose(blk.nngp, ref.nngp, rtol=1e-13)
        np.testing.assert_allclose(blk.ntk, ref.ntk, rtol=1e-13)
    assert np.array_equal(blk.ntk.shape, (5, 12))


def test_bad_input(problem):
    x, xt, y, ktr, kte, _ = problem
    with pytest.raises(ValueError, match="y_train must be 2-d"):
        gp_inference(ktr, y[:, 0])
    with pytest.raises(ValueError, match="y_train must have shape"):
        gradient_descent_mse(ktr.ntk, y[:5])
    with pytest.raises(ValueError, match="diag_reg must be finite and >= 0"):
        gp_inference(ktr, y, diag_reg=-1.0)
    with pytest.raises(ValueError, match="diag_reg must be finite and >= 0"):
        gradient_descent_mse(ktr.ntk, y, diag_reg=-1.0)
    with pytest.raises(ValueError, match="t must be not NaN and >= 0"):
        gradient_descent_mse(ktr.ntk, y)(-1.0, 0.0)
    with pytest.raises(ValueError, match="t must be not NaN and >= 0"):
        gradient_descent_mse(ktr.ntk, y)(jnp.nan, 0.0)
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_descent_mse(ktr.ntk, y, learning_rate=0.0)
    with pytest.raises(ValueError, match="k_train_train must be finite"):
        gradient_descent_mse(ktr.ntk.at[0, 0].set(jnp.inf), y)
    with pytest.raises(ValueError, match="square"):
        gp_inference(kte.ntk, y)
    with pytest.raises(ValueError, match="k_test_train"):
        gp_inference(ktr, y)("nngp", kte.nngp.T)
    with pytest.raises(ValueError, match="k_test_train is required"):
        gradient_descent_mse(ktr.ntk, y)(1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="get"):
        gp_inference(ktr, y)("gp", kte)
    with pytest.raises(ValueError, match="fx_train_0"):
        gradient_descent_mse(ktr.ntk, y)(1.0, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="trace_axes"):
        gp_inference(ktr, y, trace_axes=())
    with pytest.raises(ValueError, match="block"):
        blocked_kernel(x, None, NET, block=2)


def test_issue_12_asymmetric_kernels_are_rejected_as_asymmetric():
    """Issue 12: ``gp_inference`` silently read one triangle of an asymmetric K, and called an
    asymmetric K "not positive semi-definite: smallest eigenvalue 0.012". Every kernel must be
    symmetric to max |K - K^T| <= min(100 n eps, 1e-3) max |K| (eagerly, and under jit)."""
    y = jnp.ones((2, 1))
    kt = jnp.ones((1, 2))
    for K in (jnp.array([[1.0, 0.5], [0.0, 1.0]]), jnp.array([[1.0, 0.0], [3.0, 1.0]])):
        with pytest.raises(ValueError, match=r"k_train_train must be symmetric \(max \|K - K\^T\| <= 4.4e-14 max \|K\|\)"):
            gp_inference(K, y)("nngp", kt)
        with pytest.raises(ValueError, match="k_train_train must be symmetric"):
            gradient_descent_mse(K, y)(1.0, 0.0)
        with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="k_train_train must be symmetric"):
            jax.block_until_ready(jax.jit(lambda K: gp_inference(K, y)("nngp", kt))(K))
    # rounding-level asymmetry is accepted (and symmetrized): both triangles are used
    K = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    tiny = K.at[0, 1].add(1e-15)
    np.testing.assert_allclose(gp_inference(tiny, y)("nngp", kt), gp_inference(K, y)("nngp", kt), rtol=1e-14)
    # a symmetric indefinite kernel is still reported as not positive semi-definite
    with pytest.raises(ValueError, match="not positive semi-definite: smallest eigenvalue -1"):
        gp_inference(jnp.array([[1.0, 2.0], [2.0, 1.0]]), y)("nngp", kt)


def test_every_argument_is_validated(problem):
    x, xt, y, ktr, kte, ktt = problem
    for reg in (jnp.nan, jnp.inf, -1.0, 1.0 + 1j, True):
        with pytest.raises(ValueError, match="diag_reg"):
            gp_inference(ktr, y, diag_reg=reg)
    with pytest.raises(ValueError, match="diag_reg_absolute_scale must be True or False"):
        gp_inference(ktr, y, 0.0, "yes")
    with pytest.raises(ValueError, match="y_train must be finite"):
        gp_inference(ktr, y.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="k_test_test.nngp must be .5, 5."):
        gp_inference(ktr, y)("nngp", kte, kernel(xt[:3], None, NET))
    predict = gradient_descent_mse(ktr.ntk, y)
    with pytest.raises(ValueError, match="fx_train_0 must be finite"):
        predict(1.0, jnp.nan)
    with pytest.raises(ValueError, match="fx_train_0 must be real"):
        predict(1.0, 1j)
    with pytest.raises(ValueError, match="t must be real"):
        predict(1.0 + 1j, 0.0)
    for lr in (jnp.nan, -1.0, jnp.inf):
        with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
            gradient_descent_mse(ktr.ntk, y, learning_rate=lr)
    with pytest.raises(ValueError, match="kernel_fn must be"):
        gradient_descent_mse_ensemble("ntk", x, y)
    with pytest.raises(ValueError, match="x_train must be finite"):
        gradient_descent_mse_ensemble(NET, x.at[0, 0].set(jnp.inf), y)
    with pytest.raises(ValueError, match="x_test must have 4 columns"):
        gradient_descent_mse_ensemble(NET, x, y)(1.0, xt[:, :3])
    with pytest.raises(ValueError, match="get must be None, one of"):
        gradient_descent_mse_ensemble(NET, x, y)(1.0, xt, get="ntkgp")
    with pytest.raises(ValueError, match="get must not repeat a name"):
        gradient_descent_mse_ensemble(NET, x, y)(1.0, xt, get=("nngp", "nngp"))
    with pytest.raises(ValueError, match="x1 must be a concrete array"):
        jax.jit(lambda a: blocked_kernel(a, None, NET).nngp)(x)
    # under jit a NaN time or learning rate is caught at run time, with the same message
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="t must be not NaN and >= 0"):
        jax.block_until_ready(jax.jit(lambda t: predict(t, 0.0))(jnp.nan))
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="learning_rate must be finite and > 0"):
        jax.block_until_ready(jax.jit(lambda lr: gradient_descent_mse(ktr.ntk, y, lr)(1.0, 0.0))(-1.0))
