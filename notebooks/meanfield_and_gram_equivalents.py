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
# # Mean-field signal propagation and Gram deterministic equivalents
#
# Two pieces of theory that every later result builds on:
#
# 1. **Mean field** (Poole et al. 2016; Schoenholz et al. 2017): the length map's fixed point
#    $q^*$, the slope $\chi_1 = \sigma_w^2\,\mathbb E[\phi'(\sqrt{q^*}z)^2]$, the edge of chaos
#    $\chi_1 = 1$ and the order/chaos phase diagram (`rmtjax.meanfield`).
# 2. **Gram matrices of mixtures** (Seddik, Louart, Tamaazousti & Couillet, ICML 2020, Thm. 1): for
#    $X\in\mathbb R^{p\times n}$ with $k$ classes, $G = X^\top X/p$ has a deterministic equivalent that
#    depends only on the class means and covariances, through the fixed point
#    $\delta_\ell(z) = \frac1p\operatorname{tr}C_\ell\tilde R(z)$. Consequence: data produced by a
#    Lipschitz generator (GAN-like, *concentrated*) have the Gram spectrum of the Gaussian mixture with
#    the same moments.
#
# `RMTJAX_NOTEBOOK_N` sets the sizes (the tests use 16: grids of $N\times N$, dimension $p = 4N$);
# figures go to `RMTJAX_NOTEBOOK_OUT`.

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

from rmtjax.activations import LeakyRelu, Relu, Tanh  # noqa: E402
from rmtjax.data import concentrated_mixture, concentrated_moments, random_generator  # noqa: E402
from rmtjax.meanfield import edge_of_chaos, mean_field, phase_diagram  # noqa: E402
from rmtjax.rmt import frechet_distance  # noqa: E402
from rmtjax.rmt import GramMixture, gram_spectral_density, gram_trace_resolvent  # noqa: E402

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", "40"))
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT", tempfile.mkdtemp()))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Mean field: $q^*$, $\chi_1$ and the edge of chaos
#
# For ReLU without bias the critical point is $\sigma_w^2 = 2$ exactly ($\chi_1 = \sigma_w^2/2$).
# For tanh the edge of chaos is a curve $\sigma_w^2(\sigma_b^2)$, found by a root solve per
# $\sigma_b^2$; the vmapped phase diagram must put its $\chi_1 = 1$ contour on it.

# %%
relu_crit = float(edge_of_chaos(Relu(), 0.0).value)
print(f"ReLU critical sigma_w^2 at sigma_b^2 = 0: {relu_crit:.10f} (closed form 2)")
assert abs(relu_crit - 2.0) < 1e-8


def chi_1_and_all(w2):
    mf = mean_field(Tanh(), w2, 0.05)
    return mf.chi_1, mf


# every mean-field quantity and d chi_1 / d sigma_w^2 (through the implicit q* solve): one compiled program
chi_1_and_slope = jax.jit(jax.value_and_grad(chi_1_and_all, has_aux=True))
(_, mf), dchi = chi_1_and_slope(1.5)
print(f"tanh, sigma_w^2 = 1.5, sigma_b^2 = 0.05: q* = {float(mf.q_star):.6f}, chi_1 = {float(mf.chi_1):.6f}, "
      f"xi_c = {float(mf.xi_c):.3f}")
h = 1e-5
fd = (float(chi_1_and_slope(1.5 + h)[0][0]) - float(chi_1_and_slope(1.5 - h)[0][0])) / (2 * h)
print(f"d chi_1 / d sigma_w^2 = {float(dchi):.8f} (finite difference {fd:.8f})")
assert abs(float(dchi) - fd) < 1e-5 * (1 + abs(fd))

w2_grid = np.linspace(0.5, 4.0, N)
b2_grid = np.linspace(0.0, 0.3, max(N // 4, 3))
pd = phase_diagram(Tanh(), w2_grid, b2_grid)
b_line = b2_grid  # the root-solved edge of chaos at the grid's sigma_b^2 (arrays broadcast: one vmapped solve)
crit = np.asarray(edge_of_chaos(Tanh(), jnp.asarray(b_line), throw=False).value)
chi = np.asarray(pd.chi_1)
for j, b in enumerate(b2_grid):  # the grid's sign change of chi_1 - 1 brackets the root-solved critical point
    c = float(crit[j])
    first = w2_grid[np.argmax(chi[:, j] > 1)]
    assert first >= c - 1e-9 and first - c <= (w2_grid[1] - w2_grid[0]) + 1e-9

fig, ax = plt.subplots(1, 2, figsize=(11, 4))
im = ax[0].pcolormesh(w2_grid, b2_grid, np.log(chi.T), cmap="RdBu_r", vmin=-1, vmax=1, shading="auto")
ax[0].plot(crit, b_line, "k--", label="edge of chaos (root solve)")
ax[0].set(xlabel=r"$\sigma_w^2$", ylabel=r"$\sigma_b^2$", title=r"tanh: $\log\chi_1$")
ax[0].legend(fontsize=8)
fig.colorbar(im, ax=ax[0])
ax[1].plot(w2_grid, np.asarray(pd.q_star)[:, 0], label=r"$q^*$, $\sigma_b^2 = 0$")
ax[1].plot(w2_grid, np.asarray(pd.q_star)[:, -1], label=rf"$q^*$, $\sigma_b^2 = {b2_grid[-1]:.2f}$")
ax[1].set(xlabel=r"$\sigma_w^2$", title="length-map fixed point")
ax[1].legend()
fig.tight_layout()
fig.savefig(OUT / "meanfield_phase_diagram.png", dpi=90)

# %% [markdown]
# ## 2. Gram deterministic equivalent vs Monte Carlo (Gaussian mixture)
#
# Two classes with diagonal covariances (the cheap path of `GramMixture`: $O(k^2p)$ per
# evaluation) and different means. $\frac1n\operatorname{tr}(G + zI)^{-1}$ from
# `gram_trace_resolvent` against the average over draws (tolerance: 5 standard errors plus the
# theorem's $O(1/p)$), and the eigenvalue histogram against `gram_spectral_density`.

# %%
p = 4 * N
nl = (3 * N, 2 * N)  # unequal classes
rng = np.random.default_rng(0)
diag_cov = jnp.asarray(np.stack([np.linspace(0.5, 1.5, p), rng.uniform(0.3, 2.0, p)]))
means = jnp.asarray(np.stack([np.r_[1.5, np.zeros(p - 1)], np.r_[-1.0, 1.0, np.zeros(p - 2)]]))
model = GramMixture(diag_cov, means, n_per_class=nl)


@jax.jit
def gram_draw(key):
    keys = jax.random.split(key, 2)
    cols = [means[c][None, :] + jnp.sqrt(diag_cov[c])[None, :] * jax.random.normal(keys[c], (nl[c], p))
            for c in range(2)]
    X = jnp.concatenate(cols).T  # (p, n)
    return jnp.linalg.eigvalsh(X.T @ X / p)


eigs = np.stack([np.asarray(gram_draw(k)) for k in jax.random.split(jax.random.key(1), max(N, 20))])
trace = jax.jit(gram_trace_resolvent)
for z in (0.5, 1.0, 2.0):
    mc = np.mean(1 / (eigs + z), axis=1)
    th = float(trace(model, z))
    se = mc.std(ddof=1) / np.sqrt(len(mc))
    print(f"z = {z}: Monte Carlo {mc.mean():.5f} +- {se:.5f}, deterministic equivalent {th:.5f}")
    assert abs(mc.mean() - th) < 5 * se + 2.0 / p

xs = np.linspace(0.01, 1.2 * eigs.max(), 80)
dens = gram_spectral_density(model, jnp.asarray(xs), eta=1e-2)
fig, ax = plt.subplots(figsize=(6, 4))
ax.hist(eigs.ravel(), bins=50, density=True, alpha=0.5, label=f"{len(eigs)} draws, p={p}, n={sum(nl)}")
ax.plot(xs, np.asarray(dens.density), "k", label="deterministic equivalent")
ax.set(xlabel="eigenvalue of $G$", title="Gaussian mixture Gram spectrum")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "gram_mixture_spectrum.png", dpi=90)

# %% [markdown]
# ## 3. Concentrated (GAN-like) data: universality
#
# A random generator $g$ (LeakyReLU, tanh output, $\sigma_1(W_\ell) \le \sigma_* = 2$, so
# $\|g\|_{\rm Lip} \le 4$), three classes from three latent means; moments by Monte Carlo. The
# Gram spectrum of generated data, of the Gaussian mixture with the same means and covariances, and
# the deterministic equivalent (which sees the moments only) coincide. The full experiment, with
# isolated eigenvalues, eigenvector alignments and a linear classifier, is
# `rmtjax reproduce seddik-universality`.

# %%
k = 3
gen = random_generator(jax.random.key(3), (N, p, p), activation=LeakyRelu(0.2), final_activation=Tanh(),
                       weight_std=2.0, bias_std=0.3, sigma_star=2.0)
print("Lipschitz bound of the generator:", float(gen.lipschitz_bound()))
latent_means = 2.5 * jnp.eye(k, N)
mom = concentrated_moments(jax.random.key(4), gen, latent_means, n_samples=100 * p)
mbar = mom.means.mean(0)
cmeans, covs = mom.means - mbar[None, :], mom.covariances
print("Frechet distances between the classes:",
      [round(float(frechet_distance(cmeans[a], covs[a], cmeans[b], covs[b])), 3) for a, b in ((0, 1), (0, 2), (1, 2))])
n_per = 2 * N
chol = jnp.linalg.cholesky(covs)


@jax.jit
def twin_eigs(key):
    e = jax.random.normal(key, (k, n_per, p))
    X = (cmeans[:, None, :] + jnp.einsum("lij,lnj->lni", chol, e)).reshape(k * n_per, p)
    return jnp.linalg.eigvalsh(X @ X.T / p)


def gen_eigs(key):
    X = concentrated_mixture(key, gen, latent_means, n=k * n_per).x - mbar[None, :]
    return jnp.linalg.eigvalsh(X @ X.T / p)


keys = jax.random.split(jax.random.key(5), max(N, 16))
e_gen = np.concatenate([np.asarray(gen_eigs(kk)) for kk in keys])
e_gau = np.concatenate([np.asarray(twin_eigs(kk)) for kk in keys])
cmodel = GramMixture(covs, cmeans, n_per_class=(n_per,) * k)
for z in (0.5, 1.0):
    th = float(trace(cmodel, z))
    print(f"z = {z}: (1/n) tr (G+z)^-1 generated {np.mean(1 / (e_gen + z)):.5f}, Gaussian {np.mean(1 / (e_gau + z)):.5f}, "
          f"deterministic equivalent {th:.5f}")
    assert abs(np.mean(1 / (e_gen + z)) - th) < 0.05 * th and abs(np.mean(1 / (e_gau + z)) - th) < 0.05 * th
zs = np.linspace(0.2, 3.0, 8).tolist()  # Python floats, as above: one compiled `trace` (np.float64 would compile anew)
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
bins = np.linspace(0.01, np.quantile(e_gen, 0.999) * 1.05, 40)
ax[0].hist(e_gen, bins=bins, density=True, histtype="step", lw=1.5, label="generated")
ax[0].hist(e_gau, bins=bins, density=True, histtype="step", lw=1.5, label="Gaussian twin")
ax[0].set(xlabel="eigenvalue of $G$ (nonzero part)", title=f"GAN-like vs Gaussian, p={p}, n={k * n_per}")
ax[0].legend()
ax[1].plot(zs, [float(trace(cmodel, z)) for z in zs], "k", label="deterministic equivalent")
ax[1].plot(zs, [np.mean(1 / (e_gen + z)) for z in zs], "o", label="generated")
ax[1].plot(zs, [np.mean(1 / (e_gau + z)) for z in zs], "s", mfc="none", label="Gaussian twin")
ax[1].set(xlabel="z", ylabel=r"$(1/n)\,\mathrm{tr}(G + z)^{-1}$", title="resolvent trace")
ax[1].legend()
fig.tight_layout()
fig.savefig(OUT / "generator_universality.png", dpi=90)

# %% [markdown]
# **Figures.** `meanfield_phase_diagram.png`: $\log\chi_1$ over $(\sigma_w^2, \sigma_b^2)$ for tanh with the
# root-solved edge of chaos on the $\chi_1 = 1$ contour, and $q^*$. `gram_mixture_spectrum.png`: Gram
# eigenvalues of a two-class Gaussian mixture against the deterministic equivalent.
# `generator_universality.png`: the spectra of generated data and of their Gaussian twin on top of each
# other, and their resolvent traces on the deterministic equivalent computed from the moments alone
# (the full density comparison is in `rmtjax reproduce seddik-universality`).
