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
# # Sweeps: grids over named axes, labelled results, resumable stores
#
# `rmtjax.sweep.run(fn, Grid(...))` evaluates any function JAX can trace at every point of a grid,
# vmapped chunk by chunk in one compiled program and sharded over the devices; the results come back
# as an `xarray.Dataset` whose dimensions are the axis names. With `store=` they are written to a
# Zarr store chunk by chunk, and a rerun skips the chunks already written.
#
# 1. an order/chaos phase diagram of tanh (chi_1 over sigma_w^2 x sigma_b^2), with per-point result
#    codes from `throw=False`;
# 2. the NNGP of deep ReLU networks over (W_std, depth), stored and resumed;
# 3. finite networks of many widths and seeds in one program (`rmtjax.finite.PaddedMLP`): the spread
#    of their conjugate kernel around the NNGP shrinks with width.
#
# Sizes come from `RMTJAX_NOTEBOOK_N` (the tests use 16) and figures are written to
# `RMTJAX_NOTEBOOK_OUT` (default: a temporary folder).

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

from rmtjax import meanfield, sweep
from rmtjax.activations import Relu, Tanh
from rmtjax.finite import PaddedMLP
from rmtjax.kernels import FullyConnected, kernel

jax.config.update("jax_enable_x64", True)

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 64))  # grid resolution
SMALL = N < 32
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="rmtjax_sweeps_"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. A phase diagram as a sweep
#
# `chi_1` with `throw=False` returns a `Solution`; its leaves (`value`, `result`, `steps`,
# `residual`) become variables of the dataset. Where the variance grows without bound there is no
# fixed point: `result` is non-zero there and `value` is NaN.


# %%
def chi(sigma_w2, sigma_b2):
    return meanfield.chi_1(Tanh(), sigma_w2, sigma_b2, throw=False)


phase = sweep.run(chi, sweep.Grid(sigma_w2=np.linspace(0.5, 4.0, N), sigma_b2=np.linspace(0.0, 0.3, N // 2)),
                  progress=False)
print(phase)
assert set(phase.dims) == {"sigma_w2", "sigma_b2"}
# the edge of chaos at sigma_b2 = 0 is sigma_w2 = 1 for tanh
row = phase.value.sel(sigma_b2=0.0)
assert float(row.sel(sigma_w2=0.5)) < 1 < float(row.sel(sigma_w2=4.0))

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
phase.value.T.plot.contourf(ax=ax, levels=20, cmap="coolwarm", vmin=0.0, vmax=2.0)
phase.value.T.plot.contour(ax=ax, levels=[1.0], colors="k")
ax.set_title("tanh: chi_1 (black: the edge of chaos)")
fig.tight_layout()
fig.savefig(OUT / "sweeps_phase.png", dpi=100)

# %% [markdown]
# ## 2. Kernels over (W_std, depth), stored and resumed
#
# Depth is structural (a static integer) in `FullyConnected`; the kernel engine returns every depth
# at once with `all_depths=True`, so the grid runs over `W_std` and the depth becomes an output
# dimension, named through `dims=`.

# %%
x = jax.random.normal(jax.random.key(0), (8, 5))
DEPTH = 6 if SMALL else 20


def nngp(W_std):
    k = kernel(x, None, FullyConnected(DEPTH, W_std, 0.1, Relu()), all_depths=True).nngp
    return {"diag": jnp.diagonal(k, axis1=1, axis2=2).mean(-1), "corr": k[:, 0, 1] / jnp.sqrt(k[:, 0, 0] * k[:, 1, 1])}


store = OUT / "nngp.zarr"
grid = sweep.Grid(W_std=np.linspace(1.0, 1.8, max(4, N // 4)))
first = sweep.run(nngp, grid, store=store, chunk_size=2, dims={"diag": ("layer",), "corr": ("layer",)},
                  progress=False)
again = sweep.run(nngp, grid, store=store, dims={"diag": ("layer",), "corr": ("layer",)}, progress=False)
np.testing.assert_array_equal(first.diag.values, again.diag.values)  # the rerun read every chunk back
print(sweep.open_store(store))

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
for W in first.W_std.values[:: max(1, len(first.W_std) // 4)]:
    first.diag.sel(W_std=W).plot(ax=ax, label=f"W_std = {W:.2f}")
ax.set_yscale("log")
ax.set_title("ReLU: mean NNGP diagonal by layer")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "sweeps_nngp.png", dpi=100)

# %% [markdown]
# ## 3. Many widths and seeds in one program
#
# `PaddedMLP` allocates its parameters at `max_width` and masks the rest, so `width` is an array
# and a grid over (width, seed) is one compiled program. The conjugate kernel of one network,
# $\sigma_w^2 h h^\top/n + \sigma_b^2$ on the last hidden layer, estimates the NNGP; its
# average diagonal scatters across seeds around the infinite-width value by about width^(-1/2)
# (the network's output itself would not: its readout weights keep O(1) randomness at any width).

# %%
WIDTHS = np.array([8, 32, 128]) if SMALL else np.array([8, 16, 32, 64, 128, 256])
SEEDS = np.arange(8 if SMALL else 32)
xs = jax.random.normal(jax.random.key(1), (64, 5))


def conjugate_kernel_diagonal(width, seed):
    net = PaddedMLP(width, 2, 1.5, 0.1, Tanh(), in_features=5, max_width=int(WIDTHS.max()), max_depth=2)
    h = net.features(net.init(seed), xs)  # (64, max_width), zero beyond width
    return {"power": 1.5**2 * jnp.mean(jnp.sum(h * h, axis=1)) / jnp.asarray(width, h.dtype) + 0.1**2}


power = sweep.run(conjugate_kernel_diagonal, sweep.Grid(width=WIDTHS, seed=SEEDS), progress=False).power
theory = float(jnp.mean(jnp.diagonal(kernel(xs, None, FullyConnected(2, 1.5, 0.1, Tanh())).nngp)))
spread = power.std("seed")
print(spread.values, "theory", theory)
assert float(spread.isel(width=-1)) < float(spread.isel(width=0))  # wider: closer to the NNGP
assert abs(float(power.isel(width=-1).mean()) - theory) < 0.05 * theory

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.errorbar(power.width, power.mean("seed"), yerr=spread, fmt="o-", label="finite networks (mean +- sd over seeds)")
ax.axhline(theory, color="k", ls="--", label="NNGP (infinite width)")
ax.set_xscale("log", base=2)
ax.set_xlabel("width")
ax.set_ylabel("conjugate kernel, mean diagonal")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "sweeps_widths.png", dpi=100)
