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
# # Free probability with rmtjax: convolutions by subordination and Jacobian spectra
#
# 1. Free additive convolution: Marchenko-Pastur $\boxplus$ semicircle (the spectrum of
#    $XX^\top/n + $ GOE) against the eigenvalues of random matrices.
# 2. Free multiplicative convolution: the Fuss-Catalan law of a product of $L$ Gaussian
#    matrices, its exact moments, and the singular values of such products.
# 3. Jacobian spectra of deep networks at criticality (Pennington, Schoenholz & Ganguli 2017):
#    ReLU vs erf, Gaussian vs orthogonal weights, and a gradient with respect to $\sigma_w^2$.
#
# Matrix sizes scale with `RMTJAX_NOTEBOOK_N` (the tests use 16, and then draw one Jacobian spectrum
# of the three, every law being a separately compiled solve, and every density on a coarse grid);
# figures go to `RMTJAX_NOTEBOOK_OUT` (default: a temporary folder).

# %%
import math
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

from rmtjax.activations import Erf, Relu  # noqa: E402
from rmtjax.meanfield import edge_of_chaos  # noqa: E402
from rmtjax.rmt import free_additive_convolution, free_multiplicative_power  # noqa: E402
from rmtjax.rmt import jacobian_law, jacobian_spectrum  # noqa: E402
from rmtjax.rmt import MarchenkoPastur, Semicircle  # noqa: E402

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 125))
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT", tempfile.mkdtemp()))
OUT.mkdir(parents=True, exist_ok=True)
p = 16 * N  # matrix size (2000 with the default N)
SMALL = N < 100  # the test run: one Jacobian spectrum (erf, orthogonal) instead of three, on coarser grids
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. $\mathrm{MP}(c = 1/2) \boxplus$ semicircle$(\sigma^2 = 1/2)$ against a $p\times p$ matrix

# %%
X = rng.standard_normal((p, 2 * p))
A = rng.standard_normal((p, p))
ev = np.linalg.eigvalsh(X @ X.T / (2 * p) + (A + A.T) / np.sqrt(2 * p) * np.sqrt(0.5))
rho = free_additive_convolution(MarchenkoPastur(0.5, 1.0), Semicircle(0.5))
x = np.linspace(-1.5, 4.5, 61 if SMALL else 301)
d = rho.density_on_grid(jnp.asarray(x))
print("converged everywhere:", bool(jnp.all(d.ok)), " mass:", np.trapezoid(np.asarray(d.density), x))

# %% [markdown]
# ## 2. Fuss-Catalan: $\mathrm{MP}^{\boxtimes L}$ vs products of $L$ Gaussian matrices

# %%
L = 3
fc = free_multiplicative_power(MarchenkoPastur(1.0, 1.0), L)
print("moments:", np.asarray(fc.moments(4)), "exact:", [math.comb((L + 1) * k, k) / (L * k + 1) for k in range(1, 5)])
P = np.eye(p // 2)
for _ in range(L):
    P = rng.standard_normal((p // 2, p // 2)) / np.sqrt(p // 2) @ P
sv2 = np.linalg.svd(P, compute_uv=False) ** 2
xf = np.linspace(0.05, (L + 1) ** (L + 1) / L**L, 40 if SMALL else 200)
dfc = fc.density_on_grid(jnp.asarray(xf)).density

# %% [markdown]
# ## 3. Jacobian spectra at criticality, depth 16

# %%
depth = 16
erf_w2 = float(edge_of_chaos(Erf(), 0.01).value)
# every point of a Jacobian spectrum is a continuation of 32 Newton solves against the law of phi'^2
# (for erf 180 atoms); the test run draws a coarse curve (measured under XLA -O0 on a loaded 2-core
# machine: 0.6 s per point, 160 points 130 s)
lam = np.geomspace(1e-8, 1e4, 12 if SMALL else 160)
spectra = {}
if not SMALL:
    spectra[("relu", "gaussian")] = jacobian_spectrum(Relu(), 2.0, 0.0, jnp.asarray(lam), depth=depth, throw=False)
    spectra[("relu", "orthogonal")] = jacobian_spectrum(Relu(), 2.0, 0.0, jnp.asarray(lam), depth=depth,
                                                        orthogonal=True, throw=False)
spectra[("erf", "orthogonal")] = jacobian_spectrum(Erf(), erf_w2, 0.01, jnp.asarray(lam), depth=depth, orthogonal=True,
                                                   throw=False)
for k, s in spectra.items():
    print(k, f"chi = {float(s.chi):.4f}, Var(s^2) = {float(s.variance):.3f}, max s = {float(s.max_singular_value):.3f}")


# the variance of the spectrum is differentiable in sigma_w^2 (through q*, the phi'^2 law and the product)
def variance(w2):
    m = jacobian_law(Erf(), w2, 0.01, depth=depth, orthogonal=True).moments(2)
    return m[1] - m[0] ** 2


print("d Var / d sigma_w^2 =", float(jax.jit(jax.grad(variance))(erf_w2)))  # jit: one compiled program

# %%
fig, ax = plt.subplots(1, 3, figsize=(15, 4))
ax[0].hist(ev, bins=60, density=True, alpha=0.4, label=f"eigenvalues, p = {p}")
ax[0].plot(x, d.density, "k", label="subordination")
ax[0].set(title=r"MP $\boxplus$ semicircle", xlabel=r"$\lambda$")
ax[0].legend()
ax[1].hist(sv2, bins=60, density=True, alpha=0.4, range=(0, xf[-1]), label="product of 3 Gaussians")
ax[1].plot(xf, dfc, "k", label=r"MP$^{\boxtimes 3}$")
ax[1].set(title="Fuss-Catalan", xlabel=r"$s^2$", ylim=(0, 1))
ax[1].legend()
for (name, wl), s in spectra.items():
    dens = np.where(np.asarray(s.converged), np.asarray(s.density), np.nan)
    ax[2].plot(0.5 * np.log10(lam), dens * 2 * lam * math.log(10), label=f"{name}, {wl}")
ax[2].set(title=f"Jacobian singular values, depth {depth}", xlabel=r"$\log_{10} s$", xlim=(-3, 2))
ax[2].legend()
fig.tight_layout()
fig.savefig(OUT / "free_probability_and_spectra.png", dpi=90)
