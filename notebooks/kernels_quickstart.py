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
# # Infinite-width kernels with rmtjax: a quickstart
#
# 1. Port a [neural-tangents](https://github.com/google/neural-tangents) fully-connected script
#    by changing one import, including a residual block built from `FanOut`, `parallel` and
#    `FanInSum`.
# 2. Differentiate the NTK with respect to the weight scale $\sigma_w$ (`W_std`), which the
#    functional core `rmtjax.kernels.FullyConnected` keeps as an array leaf, and check the
#    gradient against a finite difference.
# 3. `jax.vmap` the kernel over a grid of `W_std` values.
# 4. Get the kernels of every depth in one call (`all_depths=True`) and plot them against depth.
# 5. Port a convolutional network the same way, check its NNGP against finite CNNs, and see
#    what `diagonal_spatial=True` changes.
#
# Sizes are set by the environment variable `RMTJAX_NOTEBOOK_N` (number of inputs; the tests
# run this notebook with a small value, and then leave Tanh out of part 4). Figures are written
# to `RMTJAX_NOTEBOOK_OUT` (default: a temporary folder).

# %%
import os
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # run as a plain script: draw off-screen, never block
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)  # float64: finite differences below need it

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 64))  # number of training inputs
SMALL = N < 32  # the test run: two activations in part 4 (each activation is a separate compilation)
D = 16  # input dimension
# width of the finite residual network checked by Monte Carlo (the test run: 64, since drawing the
# 8 N initialisations' weights is most of that check's time; its O(1/width) bias stays far below the
# Monte-Carlo noise floor of 8 N networks)
WIDTH = 64 if SMALL else 256
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="rmtjax_quickstart_"))
OUT.mkdir(parents=True, exist_ok=True)
INTERACTIVE = "ipykernel" in sys.modules


def save(fig, name):
    """Writes the figure to OUT (and leaves it open for display in Jupyter)."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=100)
    if not INTERACTIVE:
        plt.close(fig)
    print(f"saved {path}")


rng = np.random.default_rng(0)  # data on the host: numpy (no compilation)
x_train = rng.standard_normal((N, D))
y_train = np.sin(x_train.sum(axis=1, keepdims=True) / np.sqrt(D))
x_test = rng.standard_normal((max(N // 4, 2), D))
y_test = np.sin(x_test.sum(axis=1, keepdims=True) / np.sqrt(D))
x_train, y_train, x_test, y_test = map(jnp.asarray, (x_train, y_train, x_test, y_test))
key_init = jax.random.key(0)

# %% [markdown]
# ## 1. Porting a neural-tangents script
#
# The original script, for neural-tangents 0.6.5 (which no longer imports on current JAX):
#
# ```python
# from neural_tangents import stax
#
# init_fn, apply_fn, kernel_fn = stax.serial(
#     stax.Dense(512, W_std=1.5, b_std=0.05), stax.Erf(),
#     stax.Dense(512, W_std=1.5, b_std=0.05), stax.Erf(),
#     stax.Dense(1, W_std=1.5, b_std=0.05))
#
# kernels = kernel_fn(x_train, x_test, ('nngp', 'ntk'))
# ```
#
# With rmtjax only the import changes. `kernel_fn(x1, x2, get)` has neural-tangents' semantics
# (NTK parameterization; `x2=None` means `x1`); `init_fn`/`apply_fn` are the finite network.

# %%
from rmtjax import stax

init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Dense(512, W_std=1.5, b_std=0.05), stax.Erf(),
    stax.Dense(512, W_std=1.5, b_std=0.05), stax.Erf(),
    stax.Dense(1, W_std=1.5, b_std=0.05))

kernel_fn = jax.jit(kernel_fn, static_argnames="get")  # as with neural-tangents
k_train = kernel_fn(x_train, None, get=("nngp", "ntk"))
k_test = kernel_fn(x_test, x_train, get=("nngp", "ntk"))
print("train kernels:", k_train.nngp.shape, k_train.ntk.shape, "test-train:", k_test.ntk.shape)

# Infinite-width predictions: the NNGP posterior mean and the NTK gradient-flow limit t -> oo,
# both K_test,train K_train,train^{-1} y (Lee et al. 2019, eq. 16) with a small ridge.
ridge = 1e-6 * jnp.eye(N)
for name in ("nngp", "ntk"):
    pred = getattr(k_test, name) @ jnp.linalg.solve(getattr(k_train, name) + ridge, y_train)
    print(f"{name.upper()} test RMSE: {float(jnp.sqrt(jnp.mean((pred - y_test) ** 2))):.4f}")

# The same description is a finite network.
_, params = init_fn(key_init, x_train.shape)
print("finite network output:", apply_fn(params, x_train).shape)

# %% [markdown]
# ### A residual block
#
# neural-tangents' residual block, $x \mapsto x + \mathrm{Dense}(\mathrm{Erf}(x))$: the input is
# copied into two branches (`FanOut(2)`), the branches are transformed in `parallel` and summed
# (`FanInSum`). The kernels of the branches add, because the branch ending in a fresh zero-mean
# `Dense` is uncorrelated with the identity branch. We check the infinite-width NNGP against a
# Monte-Carlo average of $f(x)f(x')^\top$ over random initialisations of the finite network.

# %%
ResBlock = stax.serial(
    stax.FanOut(2),
    stax.parallel(stax.serial(stax.Erf(), stax.Dense(WIDTH, W_std=1.5, b_std=0.05)), stax.Identity()),
    stax.FanInSum())
res_init, res_apply, res_kernel = stax.serial(
    stax.Dense(WIDTH, W_std=1.5, b_std=0.05), ResBlock, ResBlock, stax.Erf(), stax.Dense(1, W_std=1.5, b_std=0.05))

x_small = x_train[:8]
res_k = jax.jit(res_kernel, static_argnames="get")(x_small, None, get=("nngp", "ntk"))


@jax.jit
def outer_products(keys):
    """f(x) f(x)^T for one finite network per key (f is the network output on x_small)."""
    params = jax.vmap(lambda k: res_init(k, x_small.shape)[1])(keys)
    f = jax.vmap(lambda p: res_apply(p, x_small)[:, 0])(params)
    return f[:, :, None] * f[:, None, :]


n_seeds = 8 * N
ff = outer_products(jax.random.split(jax.random.key(1), n_seeds))  # (n_seeds, 8, 8)
mc_mean = ff.mean(axis=0)
mc_se = ff.std(axis=0, ddof=1) / np.sqrt(n_seeds)
rel = float(jnp.linalg.norm(mc_mean - res_k.nngp) / jnp.linalg.norm(res_k.nngp))
floor = float(jnp.linalg.norm(mc_se) / jnp.linalg.norm(res_k.nngp))
print(f"residual net NNGP: Monte-Carlo relative error {rel:.3f}, sampling noise floor {floor:.3f}")
assert rel < 4 * floor, "Monte Carlo disagrees with the residual-network NNGP"

# %% [markdown]
# ## 2. Differentiating the NTK with respect to `W_std`
#
# `stax` captures hyperparameters in closures, as neural-tangents does. The functional core,
# `rmtjax.kernels.FullyConnected`, keeps $\sigma_w$, $\sigma_b$ and the activation's parameters
# as array leaves, so `jax.grad` and `jax.vmap` act on them. The network above is
# `FullyConnected(depth=2, W_std=1.5, b_std=0.05, activation=Erf())`.

# %%
from rmtjax.activations import Erf, Relu, Tanh
from rmtjax.kernels import FullyConnected, kernel

net = FullyConnected(depth=2, W_std=1.5, b_std=0.05, activation=Erf())
same = jax.jit(kernel)(x_train, None, net)
print("max |FullyConnected - stax| NTK:", float(jnp.max(jnp.abs(same.ntk - k_train.ntk))))


@jax.jit
def mean_ntk(w_std):
    """The mean NTK entry over the training set as a function of sigma_w."""
    return kernel(x_train, None, FullyConnected(2, w_std, 0.05, Erf())).ntk.mean()


w0, h = 1.5, 1e-5
grad = jax.grad(mean_ntk)(w0)
fd = (mean_ntk(w0 + h) - mean_ntk(w0 - h)) / (2 * h)
print(f"d<NTK>/dW_std at {w0}: autodiff {float(grad):.10f}, central difference {float(fd):.10f}")
assert abs(float(grad) - float(fd)) <= 1e-6 * abs(float(fd))

# %% [markdown]
# ## 3. `vmap` over `W_std`
#
# One compiled program evaluates the NTK (and its derivative) for a whole grid of weight
# scales, with no Python loop and no network rebuilt.

# %%
w_grid = jnp.linspace(0.5, 3.0, 26)


@jax.jit
def ntk_at(w_std):
    return kernel(x_train, None, FullyConnected(2, w_std, 0.05, Erf())).ntk


ntk_grid = jax.vmap(ntk_at)(w_grid)  # (26, N, N)
dmean_grid = jax.vmap(jax.grad(mean_ntk))(w_grid)
diag = jnp.mean(jnp.diagonal(ntk_grid, axis1=1, axis2=2), axis=1)
off = (jnp.abs(ntk_grid).sum(axis=(1, 2)) - diag * N) / (N * (N - 1))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
ax1.semilogy(w_grid, diag, label="mean diagonal")
ax1.semilogy(w_grid, off, label="mean |off-diagonal|")
ax1.set(xlabel=r"$\sigma_w$ (W_std)", ylabel=r"NTK $\Theta$", title="Erf network, depth 2")
ax1.legend()
ax2.plot(w_grid, dmean_grid)
ax2.set(xlabel=r"$\sigma_w$ (W_std)", ylabel=r"$\partial \langle\Theta\rangle / \partial\sigma_w$",
        title="jax.vmap(jax.grad(...))")
save(fig, "ntk_vs_w_std")

# %% [markdown]
# ## 4. Kernels at every depth in one call
#
# `kernel(..., all_depths=True)` returns a leading axis of length `depth + 1`: index $\ell$ is
# the kernel after Dense layer $\ell$. The correlation $\rho^{(\ell)} = \Sigma_{12}^{(\ell)} /
# \sqrt{\Sigma_{11}^{(\ell)}\Sigma_{22}^{(\ell)}}$ of two inputs converges to the fixed point of
# the correlation map (Poole et al. 2016; Schoenholz et al. 2017): to 1 for ReLU at
# $\sigma_w^2 = 2$, to a value below 1 in the chaotic phase of Erf and Tanh; the NTK diagonal
# grows linearly with depth at the edge of chaos.

# %%
DEPTH = 50
x_pair = x_train[:2]
setups = {
    "Relu (W_std=sqrt 2)": FullyConnected(DEPTH, np.sqrt(2.0), 0.0, Relu()),
    "Erf (W_std=2)": FullyConnected(DEPTH, 2.0, 0.05, Erf()),
}
if not SMALL:
    setups["Tanh (W_std=1.5)"] = FullyConnected(DEPTH, 1.5, 0.05, Tanh())
all_depths = jax.jit(lambda x, net: kernel(x, None, net, all_depths=True))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
for label, net in setups.items():
    t0 = time.perf_counter()
    k = all_depths(x_pair, net)  # NNGP and NTK, shape (DEPTH + 1, 2, 2) each
    print(f"{label}: {DEPTH + 1} depths in {1e3 * (time.perf_counter() - t0):.0f} ms (including compilation)")
    rho = k.nngp[:, 0, 1] / jnp.sqrt(k.nngp[:, 0, 0] * k.nngp[:, 1, 1])
    ax1.plot(np.arange(DEPTH + 1), rho, label=label)
    ax2.plot(np.arange(DEPTH + 1), k.ntk[:, 0, 0] / k.ntk[0, 0, 0], label=label)
ax1.set(xlabel=r"depth $\ell$", ylabel=r"NNGP correlation $\rho^{(\ell)}$", title="NNGP vs depth")
ax2.set(xlabel=r"depth $\ell$", ylabel=r"$\Theta^{(\ell)}(x, x) / \Theta^{(0)}(x, x)$", title="NTK diagonal vs depth")
ax2.set_yscale("log")
ax1.legend(fontsize=8)
save(fig, "kernels_vs_depth")

# %% [markdown]
# ## 5. Convolutional networks
#
# A CNN as written for neural-tangents, with `from rmtjax import stax` in place of
# `from neural_tangents import stax`: images are channels last, `(n, H, W, C)`. Its NNGP/NTK
# (the CNN-GP of Novak et al. 2019 and the CNTK of Arora et al. 2019) come from the same
# `kernel_fn(x1, x2, get)`; its `init_fn`/`apply_fn` are the finite CNN, and the NNGP is checked
# against the Monte-Carlo average of $f(x)f(x')^\top$ over random initialisations, as for the
# residual network above.

# %%
cnn_init, cnn_apply, cnn_kernel = stax.serial(
    stax.Conv(WIDTH, (3, 3), padding="SAME", W_std=1.5, b_std=0.05), stax.Relu(),
    stax.Conv(WIDTH, (3, 3), padding="SAME", W_std=1.5, b_std=0.05), stax.Relu(),
    stax.AvgPool((2, 2), strides=(2, 2)), stax.Flatten(), stax.Dense(1, W_std=1.5, b_std=0.05))

images = jnp.asarray(rng.standard_normal((4, 6, 6, 2)))  # four 6 x 6 images with 2 channels
cnn_k = cnn_kernel(images, None, ("nngp", "ntk"))
print("CNN NNGP:\n", np.round(np.asarray(cnn_k.nngp), 4), "\nCNN NTK diagonal:", np.round(np.diag(cnn_k.ntk), 4))


@jax.jit
def cnn_outer_products(keys):
    """f(x) f(x)^T for one finite CNN per key (lax.map: one network at a time, plain convolutions)."""
    def one(key):
        f = cnn_apply(cnn_init(key, images.shape)[1], images)[:, 0]
        return f[:, None] * f[None, :]

    return jax.lax.map(one, keys)


ff = cnn_outer_products(jax.random.split(jax.random.key(2), 8 * N))
rel = float(jnp.linalg.norm(ff.mean(axis=0) - cnn_k.nngp) / jnp.linalg.norm(cnn_k.nngp))
floor = float(jnp.linalg.norm(ff.std(axis=0, ddof=1) / np.sqrt(8 * N)) / jnp.linalg.norm(cnn_k.nngp))
print(f"CNN NNGP: Monte-Carlo relative error {rel:.3f}, sampling noise floor {floor:.3f}")
assert rel < 4 * floor, "Monte Carlo disagrees with the CNN NNGP"

# %% [markdown]
# `diagonal_spatial=True` (neural-tangents' option) keeps only the covariances of each pixel with
# the same pixel of the other image: exact for a network read out by `Flatten` without pooling,
# and much cheaper, but pooling mixes pixels, so here it is only the independent-pixel
# approximation (by default rmtjax keeps pixel-pair covariances exactly as far as the last
# pooling layer needs them).

# %%
approx = cnn_kernel(images, None, "nngp", diagonal_spatial=True)
print("diagonal_spatial=True vs exact NNGP, relative difference:",
      f"{float(jnp.linalg.norm(approx - cnn_k.nngp) / jnp.linalg.norm(cnn_k.nngp)):.3f}")
