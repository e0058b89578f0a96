# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Finite width: the 1/n corrections to the kernels, against Flax networks
#
# A network of width $n$ is not its infinite-width limit: its conjugate kernel $\hat G_n$ and its
# NTK $\hat\Theta_n$ fluctuate from initialization to initialization, and their means are shifted.
# `rmtjax.finite_width` computes the leading terms (Roberts, Yaida & Hanin, *The Principles of Deep
# Learning Theory*, ch. 4 and 8; Hanin & Nica 2019):
#
# * `nngp_corrections`: the four-point vertex $V$ ($n\,\mathrm{Var}\,\hat G_n \to V$) and the mean
#   correction $G^{\{1\}}$ ($n(\mathbb E\hat G_n - K) \to G^{\{1\}}$);
# * `ntk_fluctuations`: the NTK's variance, $\mathrm{Var}\,\hat\Theta/\Theta^2 \approx c_L/n$ with
#   $c_L$ growing linearly in depth: the expansion parameter is $L/n$.
#
# * `ntk_change`: the expected $O(1/n)$ move of the NTK during gradient descent (one hidden layer).
#
# This notebook (1) measures the vertex and the mean correction on ensembles of Flax networks
# (`rmtjax.finite.init_ensemble`), (2) the NTK's relative variance against $L/n$, (3) uses
# `jax.grad` through the finite-width theory: the output's non-Gaussianity $V/K^2$ of a deep tanh
# network, as a function of $\sigma_w$, peaks in the ordered phase, below the edge of chaos, and (4) compares the NTK's
# change during training of Flax networks with `ntk_change`.
#
# Sizes come from `RMTJAX_NOTEBOOK_N` (the tests use 16: a few hundred networks of widths 16 and 32)
# and figures are written to `RMTJAX_NOTEBOOK_OUT` (default: a temporary folder).

# %%
import functools
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # run as a plain script: draw off-screen, never block
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from rmtjax.activations import Relu, Tanh
from rmtjax.finite import init_ensemble
from rmtjax.finite_width import nngp_corrections, ntk_fluctuations
from rmtjax.kernels import FullyConnected
from rmtjax.meanfield import edge_of_chaos

jax.config.update("jax_enable_x64", True)

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 100))
SMALL = N < 50  # the test run
NETWORKS = 25 * N  # networks per width
WIDTHS = (16, 32) if SMALL else (32, 64, 128, 256)
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="rmtjax_finite_width_"))
OUT.mkdir(parents=True, exist_ok=True)
INTERACTIVE = "ipykernel" in sys.modules


def save(fig, name):
    """Writes the figure to OUT (and leaves it open for display in Jupyter)."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=100)
    if not INTERACTIVE:
        plt.close(fig)
    print(f"saved {path}")


# %% [markdown]
# ## 1. The vertex and the mean correction of a tanh network
#
# One input with $|x|^2/d = 1$, two hidden tanh layers, $\sigma_w = 1.4$, $\sigma_b = 0.3$ (NTK
# parameterization). The theory at the readout (layer $L + 1$):

# %%
x = jnp.ones((1, 4))
spec = FullyConnected(2, W_std=1.4, b_std=0.3, activation=Tanh())
c = nngp_corrections(x, spec, widths=WIDTHS[-1])
K, V, G1 = (float(a) for a in (c.nngp[-1, 0, 0], c.vertex[-1, 0, 0, 0, 0], c.correction[-1, 0, 0]))
print(f"K = {K:.5f}, vertex V = {V:.5f}, mean correction G1 = {G1:.5f}")
print("per layer, V:", np.round(np.asarray(c.vertex[:, 0, 0, 0, 0]), 4),
      " G1:", np.round(np.asarray(c.correction[:, 0, 0]), 4))

# %% [markdown]
# The networks: for each member we record the conjugate kernel of every layer,
# $\hat G^{(\ell)} = C_b + C_W |h^{(\ell-1)}|^2/n$ (the covariance of layer $\ell$'s preactivations
# given the layer below; $\ell = L+1$ is the readout's), and the empirical NTK
# $\hat\Theta = |\partial f/\partial\theta|^2$.
#
# The plain Monte-Carlo mean of $n(\hat G_n - K)$ has a standard error $\sqrt{nV/N}$ that *grows*
# with $n$. A control variate with mean exactly zero removes the leading fluctuation: given the
# layer below, $\mathbb E[\hat G^{(\ell+1)}] = C_b + C_W F(\hat G^{(\ell)})$ with the length map
# $F(q) = \mathbb E\,\phi(\sqrt q z)^2$, so the innovations
# $\xi_\ell = \hat G^{(\ell+1)} - C_b - C_W F(\hat G^{(\ell)})$ have mean zero, and
# $\hat G^{(L+1)} - \sum_\ell c_\ell \xi_\ell$ has the same mean as $\hat G^{(L+1)}$ for any constants;
# with $c_\ell$ the infinite-width linear response it fluctuates only at $O(1/n)$.


# %%
@functools.partial(jax.jit, static_argnums=0)
def layer_stats(graphdef, rest, params, x):
    """Per member: G of every layer, the length map at each, and the NTK at x."""

    def one(p):
        net = nnx.merge(graphdef, p, rest)
        act = net.spec.activation
        G = net.conjugate_kernels(x)[:, 0, 0]
        grad = jax.grad(lambda p: nnx.merge(graphdef, p, rest)(x)[0, 0])(p)
        return G, act.length_map(G), sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grad))

    return jax.vmap(one)(params)


def measure(spec, width, networks, key, chunk=500):
    out = []
    for i in range(-(-networks // chunk)):
        ens = init_ensemble(jax.random.fold_in(key, i), spec, x.shape[1], size=min(chunk, networks), width=width)
        graphdef, _, rest = nnx.split(ens.model, nnx.Param, ...)
        out.append(layer_stats(graphdef, rest, ens.params, x))
    return [np.concatenate([np.asarray(o[j]) for o in out])[:networks] for j in range(3)]


W2 = np.asarray(spec.layer_params(jnp.float64)[0]) ** 2
b2 = np.asarray(spec.layer_params(jnp.float64)[1]) ** 2
Ks = np.asarray(c.nngp[:, 0, 0])
slope = np.array([W2[j] * float(jax.grad(spec.activation.length_map)(Ks[j - 1])) for j in range(1, spec.depth + 1)])
coef = np.array([np.prod(slope[j:]) for j in range(1, spec.depth + 1)])

rows = []
for n in WIDTHS:
    G, FG, ntk = measure(spec, n, NETWORKS, jax.random.key(n))
    xi = G[:, 1:] - b2[1:] - W2[1:] * FG[:, :-1]
    raw, cv = n * (G[:, -1] - K), n * (G[:, -1] - xi @ coef - K)
    se = lambda v: v.std(ddof=1) / np.sqrt(len(v))  # noqa: E731
    rel = ntk.var(ddof=1) / ntk.mean() ** 2
    rows.append(dict(n=n, vertex=n * G[:, -1].var(ddof=1), vertex_se=n * G[:, -1].var() * np.sqrt(2 / len(G)),
                     raw=raw.mean(), raw_se=se(raw), cv=cv.mean(), cv_se=se(cv),
                     ntk_rel=rel, ntk_rel_se=rel * np.sqrt(2 / len(ntk))))  # Gaussian-approximation errors
    r = rows[-1]
    print(f"n={n:4d}: n Var G = {r['vertex']:.4f} +- {r['vertex_se']:.4f} (V = {V:.4f}); n(E G - K): raw "
          f"{r['raw']:+.4f} +- {r['raw_se']:.4f}, control variate {r['cv']:+.4f} +- {r['cv_se']:.4f} (G1 = {G1:+.4f})")

# %%
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
w = np.array([r["n"] for r in rows])
ax[0].errorbar(w, [r["vertex"] for r in rows], yerr=[r["vertex_se"] for r in rows], fmt="o", capsize=3,
               label="Flax ensembles")
ax[0].axhline(V, color="k", ls="--", label="theory V")
ax[0].set(xscale="log", xlabel="width n", ylabel=r"$n\,\mathrm{Var}\,\hat G_n$", title="four-point vertex")
ax[1].errorbar(w, [r["cv"] for r in rows], yerr=[r["cv_se"] for r in rows], fmt="o", capsize=3,
               label="control variate")
ax[1].errorbar(w * 1.05, [r["raw"] for r in rows], yerr=[r["raw_se"] for r in rows], fmt="x", alpha=0.4, capsize=2,
               label="raw mean")
ax[1].axhline(G1, color="k", ls="--", label=r"theory $G^{\{1\}}$")
ax[1].set(xscale="log", xlabel="width n", ylabel=r"$n(\mathbb{E}\hat G_n - K)$", title="mean correction of the NNGP")
for a in ax:
    a.legend()
fig.tight_layout()
save(fig, "vertex_and_correction")

# %% [markdown]
# ## 2. The NTK's relative variance grows like $L/n$
#
# `ntk_fluctuations` gives the variance of the NTK layer by layer, so one call on a deep network gives
# the curve of every shallower one (layer $\ell$'s NTK is that of the network with $\ell - 1$ hidden
# layers). ReLU at criticality has the closed form $n\,\mathrm{Var}\,\Theta/\Theta^2 = L(11L+7)/(3(L+1))$,
# about $\tfrac{11}{3}L$: the relative variance is a function of $L/n$ only, the linear term of Hanin &
# Nica's $e^{cL/n}$. The tanh points are the networks of section 1.

# %%
depth_max = 8
relu = ntk_fluctuations(x, FullyConnected(depth_max, W_std=2**0.5, b_std=0.0, activation=Relu()), widths=256)
tanh = ntk_fluctuations(x, spec, widths=WIDTHS[-1])
c_relu = np.asarray(relu.variance[:, 0] / relu.ntk[:, 0] ** 2)  # entry L: the network with L hidden layers
L = np.arange(depth_max + 1)
print("ReLU n Var/Theta^2 per depth:", np.round(c_relu, 4))
print("closed form                 :", np.round(L * (11 * L + 7) / (3 * (L + 1)), 4))
c_tanh = float(tanh.variance[-1, 0] / tanh.ntk[-1, 0] ** 2)

fig, ax = plt.subplots(figsize=(6, 4.2))
ratio = np.geomspace(1 / 512, 0.25, 50)
for d in (2, 4, 8):
    ax.plot(ratio, c_relu[d] / d * ratio, label=f"ReLU theory, L={d}")
ax.plot(ratio, c_tanh / spec.depth * ratio, "k--", label=f"tanh theory, L={spec.depth}")
ax.errorbar([spec.depth / r["n"] for r in rows], [r["ntk_rel"] for r in rows], yerr=[r["ntk_rel_se"] for r in rows],
            fmt="ko", capsize=3, label="tanh Flax ensembles")
ax.set(xscale="log", yscale="log", xlabel="L / n", ylabel=r"$\mathrm{Var}\,\hat\Theta / \mathbb{E}^2\hat\Theta$",
       title="NTK fluctuations at initialization")
ax.legend(fontsize=8)
fig.tight_layout()
save(fig, "ntk_variance")

# %% [markdown]
# ## 3. Differentiating the finite-width theory: where is the output least Gaussian?
#
# Every quantity is a differentiable function of $\sigma_w, \sigma_b$. The normalised vertex
# $V/K^2$ of the readout measures how non-Gaussian the output of a width-$n$ network is (in units of
# $1/n$). For a depth-4 tanh network with $\sigma_b = 0.3$ we take its gradient in $\sigma_w$ with
# `jax.grad` (checked against finite differences), locate the maximum where the gradient changes sign
# (refining the bracket twice), and mark the edge of chaos $\chi_1 = 1$ from
# `rmtjax.meanfield.edge_of_chaos` for comparison. (Measured: the maximum sits at
# $\sigma_w \approx 1.18$, in the ordered phase, below the edge of chaos at $1.40$.)


# %%
def normalised_vertex(W_std, depth=4, b_std=0.3):
    c = nngp_corrections(x, FullyConnected(depth, W_std=W_std, b_std=b_std, activation=Tanh()), widths=128)
    return c.vertex[-1, 0, 0, 0, 0] / c.nngp[-1, 0, 0] ** 2


value_and_slope = jax.jit(jax.vmap(jax.value_and_grad(normalised_vertex)))
grid = jnp.linspace(0.8, 2.6, 10)
vals, grads = value_and_slope(grid)
lo, hi = 0.8, 2.6
for _ in range(2):  # refine the bracket of the sign change of the gradient (same shapes: no recompilation)
    g = jnp.linspace(lo, hi, 10)
    _, d = value_and_slope(g)
    i = int(np.flatnonzero(np.diff(np.sign(np.asarray(d))) < 0)[0])
    lo, hi = float(g[i]), float(g[i + 1])
    w_star = lo + (hi - lo) * float(d[i] / (d[i] - d[i + 1]))  # linear interpolation of the gradient's zero
w_crit = float(jnp.sqrt(edge_of_chaos(Tanh(), 0.3**2).value))
h = 1e-5
fd = (normalised_vertex(1.5 + h) - normalised_vertex(1.5 - h)) / (2 * h)
print(f"d(V/K^2)/dW_std at 1.5: jax.grad {float(value_and_slope(jnp.full(10, 1.5))[1][0]):.8f}, "
      f"finite differences {float(fd):.8f}")
print(f"maximum of V/K^2 at W_std = {w_star:.4f}; edge of chaos sqrt(sigma_w^2*) = {w_crit:.4f}")
assert abs(float(value_and_slope(jnp.full(10, 1.5))[1][0]) - float(fd)) < 1e-6 * abs(float(fd))

fig, ax = plt.subplots(1, 2, figsize=(11, 4))
ax[0].plot(grid, vals, "o-")
ax[0].axvline(w_star, color="C1", label=f"maximum (grad = 0): {w_star:.3f}")
ax[0].axvline(w_crit, color="k", ls=":", label=f"edge of chaos: {w_crit:.3f}")
ax[0].set(xlabel=r"$\sigma_w$", ylabel=r"$V/K^2$", title=r"normalised vertex, tanh, L = 4, $\sigma_b$ = 0.3")
ax[1].plot(grid, grads, "o-")
ax[1].axhline(0, color="k", lw=0.8)
ax[1].set(xlabel=r"$\sigma_w$", ylabel=r"$\partial (V/K^2)/\partial\sigma_w$", title="its gradient (jax.grad)")
ax[0].legend(fontsize=8)
fig.tight_layout()
save(fig, "vertex_gradient")

# %% [markdown]
# ## 4. How far does the NTK move during training?
#
# At infinite width the NTK is frozen; at width $n$ it moves by $O(1/n)$. `ntk_change` predicts the
# expected move after $T$ steps of full-batch gradient descent on the MSE, for one hidden layer: the
# NTK's derivative along the gradient (the dNTK) is correlated with the initial function, the dNTK
# itself drifts (the ddNTK), and each discrete step adds a second-order term (Dyer & Gur-Ari 2019;
# Huang & Yau 2020; PDLT ch. 11). We train ensembles of Flax networks of two or three widths with
# the same data, step size and step count, and compare $n\,\mathbb E[\hat\Theta_T - \hat\Theta_0]$ on
# the training inputs with the prediction, entry by entry.

# %%
from rmtjax.finite import ensemble_kernels
from rmtjax.finite_width import ntk_change
from rmtjax.kernels import kernel

rng = np.random.default_rng(0)
x_train = jnp.asarray(rng.normal(size=(6, 5)))
y_train = jnp.asarray(np.where(np.asarray(x_train[:, 0]) > 0, 0.5, -0.5))
shallow = FullyConnected(1, W_std=1.4, b_std=0.3, activation=Tanh())
lam_max = float(jnp.linalg.eigvalsh(kernel(x_train, None, shallow).ntk)[-1])
eta = 1.0 * x_train.shape[0] / lam_max  # half the stability limit 2 m / lambda_max
STEPS = 20
pred = ntk_change(x_train, y_train, shallow, learning_rate=eta, steps=STEPS, samples=2**16)
C = np.asarray(pred.change)
print("predicted n E[Theta_T - Theta_0] (largest Monte-Carlo standard error "
      f"{float(np.max(pred.stderr)):.3g}):\n", np.round(C, 3))
print("split into dNTK, ddNTK and second-order terms, Frobenius norms:",
      np.round(np.linalg.norm(np.asarray(pred.terms), axis=(1, 2)), 3))


@functools.partial(jax.jit, static_argnums=(0, 5))
def gradient_descent(graphdef, rest, params, x, y, steps, lr):
    """Full-batch GD on (1/2m) |f(X) - y|^2 for every member of the ensemble at once."""

    def loss(p):
        return 0.5 * jnp.mean((nnx.merge(graphdef, p, rest)(x)[:, 0] - y) ** 2)

    def one(p):
        def step(p, _):
            return jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p)), None

        return jax.lax.scan(step, p, None, length=steps)[0]

    return jax.vmap(one)(params)


TRAIN_WIDTHS = (64, 256) if SMALL else (64, 256, 1024)
TRAIN_NETWORKS = 25 * N
moved = {}
for n in TRAIN_WIDTHS:
    ens = init_ensemble(jax.random.key(n), shallow, x_train.shape[1], size=TRAIN_NETWORKS, width=n)
    graphdef, _, rest = nnx.split(ens.model, nnx.Param, ...)
    trained = gradient_descent(graphdef, rest, ens.params, x_train, y_train, STEPS, eta)
    t0 = np.asarray(ensemble_kernels(x_train, None, ens, batch_size=50).ntk)
    t1 = np.asarray(ensemble_kernels(x_train, None, ens._replace(params=trained), batch_size=50).ntk)
    delta = n * (t1 - t0)
    moved[n] = (delta.mean(0), delta.std(0, ddof=1) / np.sqrt(TRAIN_NETWORKS))
    z = np.abs(moved[n][0] - C) / np.sqrt(moved[n][1] ** 2 + np.asarray(pred.stderr) ** 2)
    print(f"n = {n:5d}: largest |networks - theory| = {np.max(z):.2f} standard errors (median {np.median(z):.2f})")

n_wide = TRAIN_WIDTHS[-1]
z_wide = np.abs(moved[n_wide][0] - C) / np.sqrt(moved[n_wide][1] ** 2 + np.asarray(pred.stderr) ** 2)
assert np.max(z_wide) < 5, "the widest networks disagree with ntk_change"

fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
iu = np.triu_indices(C.shape[0])
lim = 1.15 * float(np.max(np.abs(C)))
for i, n in enumerate(TRAIN_WIDTHS):
    ax[0].errorbar(C[iu], moved[n][0][iu], yerr=moved[n][1][iu], fmt="o", ms=3, capsize=2, color=f"C{i}",
                   label=f"networks, n = {n}")
ax[0].plot([-lim, lim], [-lim, lim], "k--", lw=1, label="theory = networks")
ax[0].set(xlabel=r"predicted $n\,\mathbb{E}[\Delta\Theta_{ij}]$ (ntk_change)",
          ylabel=r"networks: $n\,\overline{\Delta\hat\Theta_{ij}}$",
          title=f"NTK change after {STEPS} GD steps, entry by entry")
ax[0].legend(fontsize=8)
widths = np.array(TRAIN_WIDTHS, float)
theta_norm = float(np.linalg.norm(np.asarray(pred.ntk)))
rel = [np.linalg.norm(moved[n][0]) / n / theta_norm for n in TRAIN_WIDTHS]
grid_n = np.geomspace(widths[0] / 2, widths[-1] * 2, 50)
ax[1].plot(grid_n, np.linalg.norm(C) / grid_n / theta_norm, "k--", label=r"theory $\|C\|/(n\|\Theta\|)$")
ax[1].plot(widths, rel, "o", color="C0", label="networks (ensemble mean)")
ax[1].set(xscale="log", yscale="log", xlabel="width n",
          ylabel=r"$\|\mathbb{E}[\hat\Theta_T - \hat\Theta_0]\|_F / \|\Theta\|_F$",
          title="the mean change shrinks like 1/n")
ax[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping minor labels
ax[1].set_xticks(widths, [str(n) for n in TRAIN_WIDTHS])
ax[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "ntk_change")

# %% [markdown]
# ### Gradient flow: the limit of small steps
#
# `ntk_change(..., time=t)` gives the same expectation under gradient flow
# $\dot\theta = -\nabla_\theta \frac{1}{2m}\sum_\alpha \varepsilon_\alpha^2$ (exact time integrals, no
# second-order step term). Gradient descent with $k$ times more steps at a $k$ times smaller rate, over
# the same $t = \eta T$, approaches it like $1/k$; the same Monte-Carlo draws (the default key) make the
# differences free of sampling noise.

# %%
flow = ntk_change(x_train, y_train, shallow, time=eta * STEPS, samples=2**12)
gaps = []
for k in (1, 4, 16):
    gd = ntk_change(x_train, y_train, shallow, learning_rate=eta / k, steps=STEPS * k, samples=2**12)
    gaps.append(float(np.max(np.abs(np.asarray(gd.change - flow.change)))))
    print(f"{STEPS * k:4d} steps at rate eta/{k:<2d}: largest |GD - flow| = {gaps[-1]:.4f} "
          f"(entries up to {float(np.max(np.abs(np.asarray(flow.change)))):.3f})")
assert 3.0 < gaps[1] / gaps[2] < 5.0, "gradient descent should approach gradient flow like 1/k"
