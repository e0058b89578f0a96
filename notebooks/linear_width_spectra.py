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
# # CK and NTK spectra of linear-width networks (Fan & Wang 2020)
#
# For $n$ inputs in dimension $d_0$ and hidden widths $d_1..d_L$ all proportional to $n$, the
# eigenvalue distribution of the conjugate kernel $K_\ell = X_\ell^\top X_\ell$ of every layer and of
# the neural tangent kernel converge to deterministic laws (Z. Fan & Z. Wang, NeurIPS 2020):
#
# $$\mu_\ell = \rho^{\mathrm{MP}}_{\gamma_\ell} \boxtimes \big((1 - b_\sigma^2) + b_\sigma^2\,\mu_{\ell-1}\big),
# \qquad K^{\mathrm{NTK}} \simeq r_+ I + \sum_{\ell=0}^L r_\ell K_\ell ,$$
#
# with $\gamma_\ell = n/d_\ell$ and $b_\sigma = \mathbb E\,\sigma'(\xi)$ for the normalized activation.
# This notebook
#
# 1. computes these laws with `rmtjax.rmt` and compares them with random tanh networks;
# 2. evaluates the largest NTK eigenvalue and the largest stable learning rate $2/\lambda_{\max}$ of
#    gradient descent, and differentiates it with respect to the width ratio.
#
# `RMTJAX_NOTEBOOK_N` sets the number of inputs $n$ (the tests use 16); figures go to
# `RMTJAX_NOTEBOOK_OUT`.

# %%
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

jax.config.update("jax_enable_x64", True)

from rmtjax.activations import Tanh  # noqa: E402
from rmtjax.rmt import (  # noqa: E402
    activation_constants,
    ck_density,
    empirical_input,
    finite_network_kernels,
    max_stable_learning_rate,
    ntk_coefficients,
    ntk_density,
    ntk_edge,
)

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 600))  # number of inputs n
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="rmtjax_linear_width_"))
OUT.mkdir(parents=True, exist_ok=True)
INTERACTIVE = "ipykernel" in sys.modules


def save(fig, name):
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=100)
    if not INTERACTIVE:
        plt.close(fig)
    print(f"saved {path}")


# %% [markdown]
# ## 1. The activation's constants and the NTK's coefficients
#
# $\sigma = (\tanh - \mathbb E\tanh)/\mathrm{sd}(\tanh)$ at $\xi \sim \mathcal N(0,1)$;
# $b_\sigma^2 = (\mathbb E\sigma')^2$ and $a_\sigma = \mathbb E\sigma'^2$ set the NTK's coefficients
# $r_\ell = b_\sigma^{2(L-\ell)}$, $r_+ = \sum_{k=1}^L (a_\sigma^k - b_\sigma^{2k})$.

# %%
act = Tanh()
c = activation_constants(act)
ratios = (1.5, 1.2, 1.1)  # d_1/n, d_2/n, d_3/n
widths = tuple(int(round(r * N)) for r in ratios)
d0 = int(round(1.2 * N))
gammas = jnp.asarray([N / d for d in widths], float)
r_plus, r = ntk_coefficients(act, len(widths))
print(f"b_sigma^2 = {float(c.b2):.4f}, a_sigma = {float(c.a):.4f}, r_+ = {float(r_plus):.4f}, r = {np.round(r, 4)}")

# %% [markdown]
# ## 2. Limit laws against random networks
#
# Inputs: i.i.d. Gaussian rows normalized to unit norm. The theory uses the empirical spectrum of the
# inputs' Gram matrix as $\mu_0$ (`empirical_input`; `marchenko_pastur_input(n / d0)` is its
# $n \to \infty$ limit). All four laws share one compiled program (the CK of layer $\ell$ is the
# combination with coefficient vector $e_\ell$).

# %%
x = np.random.default_rng(0).standard_normal((N, d0))  # data on the host: numpy (no compilation)
x = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))
key_net = jax.random.key(0)
inp = empirical_input(x)
kernels = finite_network_kernels(x, key_net, widths, act)

fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), layout="constrained")
for layer, ax in enumerate(axes, start=1):
    name = f"CK layer {layer}" if layer <= len(widths) else "NTK"
    mat = kernels.ck[layer] if layer <= len(widths) else kernels.ntk
    ev = np.linalg.eigvalsh(np.asarray(mat))
    grid = np.linspace(1e-3, 1.2 * ev.max(), 300)
    dens = ck_density(inp, gammas, act, grid, layer=layer) if layer <= len(widths) else ntk_density(inp, gammas,
                                                                                                    act, grid)
    ax.hist(ev, bins=40, density=True, color="0.8", edgecolor="0.5", label=f"one network, n = {N}")
    ax.plot(grid, dens, "C3", label="Fan & Wang limit")
    ax.set(title=name, xlabel="eigenvalue", ylim=(0, 1.5 * float(np.max(dens[grid > 0.05 * ev.max()]))))
axes[0].legend(fontsize=8)
save(fig, "ck_ntk_spectra")

# %% [markdown]
# ## 3. Largest eigenvalue and the largest stable learning rate
#
# Gradient descent on $\frac12\|f(X) - y\|^2$ of the linearized network,
# $f_{t+1} - y = (I - \eta K^{\mathrm{NTK}})(f_t - y)$, is stable iff $\eta < 2/\lambda_{\max}$. The edge
# solves a fold of the fixed point, so it is differentiable: here with respect to a common width ratio
# $\gamma = n/d$ of the three hidden layers (same inputs).

# %%
edge = float(ntk_edge(inp, gammas, act))
print(f"lambda_max: theory {edge:.4f}, this network {float(np.linalg.eigvalsh(np.asarray(kernels.ntk))[-1]):.4f}")


def lr_of(g):
    return max_stable_learning_rate(inp, g * jnp.ones(3), act)


g_grid = np.geomspace(0.25, 4.0, 5)
lrs = np.array([float(lr_of(jnp.asarray(g))) for g in g_grid])
slope = float(jax.jit(jax.grad(lr_of))(jnp.asarray(1.0)))  # jit: one compiled program for the gradient
h = 1e-5
fd = (float(lr_of(jnp.asarray(1 + h))) - float(lr_of(jnp.asarray(1 - h)))) / (2 * h)
print(f"d(2/lambda_max)/d gamma at gamma = 1: autodiff {slope:.8f}, central difference {fd:.8f}")
assert abs(slope - fd) < 1e-5 * abs(fd)

fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
ax.plot(g_grid, lrs, "C3o-")
lr1 = float(lr_of(jnp.asarray(1.0)))
ax.plot([0.7, 1.3], [lr1 - 0.3 * slope, lr1 + 0.3 * slope], "k-", lw=2, label="tangent from jax.grad")
ax.set(xscale="log", xlabel=r"$\gamma = n/d$ (3 hidden layers)", ylabel=r"$2/\lambda_{\max}(K^{\mathrm{NTK}})$",
       title="largest stable learning rate")
ax.legend()
save(fig, "max_stable_learning_rate")
