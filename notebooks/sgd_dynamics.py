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
# # Online SGD of a two-layer network: the Saad-Solla ODEs
#
# A soft committee machine $\phi(x) = \sum_{k\le K} v_k\, g(w_k\cdot x/\sqrt N)$ learns a teacher of
# the same form with $M$ units from one fresh Gaussian sample per step. For $N\to\infty$ the
# overlaps $Q = ww^\top/N$, $R = w\tilde w^\top/N$ follow deterministic ODEs in the time
# $t = \mu/N$ (Saad & Solla 1995; Biehl & Schwarze 1995). This notebook
#
# 1. simulates online SGD for $g = \operatorname{erf}(x/\sqrt2)$, $K = M = 2$ (seeds vmapped) and
#    integrates the ODEs from each run's own initial order parameters;
# 2. finds the symmetric plateau as a fixed point of the flow and its escape rate;
# 3. sweeps the learning rate with one `jax.vmap` of the ODE solve.
#
# The input dimension is $N = 10\,n$ with $n$ from `RMTJAX_NOTEBOOK_N` (default 100; the tests use
# 16, and stop at $t = 100$: online SGD takes $tN$ steps); figures go to `RMTJAX_NOTEBOOK_OUT`
# (default: a temporary folder).

# %%
import functools
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # run as a plain script: draw off-screen, never block
    matplotlib.use("Agg")
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)

from rmtjax.dynamics import CommitteeState, committee_fixed_point, committee_ode  # noqa: E402
from rmtjax.dynamics import simulate_committee  # noqa: E402

N = 10 * int(os.environ.get("RMTJAX_NOTEBOOK_N", "100"))
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT", tempfile.mkdtemp()))
OUT.mkdir(parents=True, exist_ok=True)
K = M = 2
SEEDS = 4  # also the number of learning rates in part 3: the vmapped ODE solve compiles once for both
SMALL = N < 1000  # the test run: up to t = 100 (the plateau and the start of the escape), a third of the SGD steps
T_MAX = 100.0 if SMALL else 300.0
SAVES = int(T_MAX) // 2  # every 2 time units

# %% [markdown]
# ## 1. Simulation and ODEs
#
# Teacher rows with $\|\tilde w_m\|^2\approx N$ (so $T\approx I$), student weights
# $\mathcal N(0, 0.5^2)$, second layers fixed to 1, $\eta = 0.5$. The simulation records the
# order parameters and $\epsilon_g$ (exact for Gaussian inputs) every 2 time units.

# %%
rng = np.random.default_rng(0)  # initial weights on the host: numpy (no compilation)
wt = jnp.asarray(rng.standard_normal((M, N)))
w0 = jnp.asarray(0.5 * rng.standard_normal((SEEDS, K, N)))
k3 = jax.random.key(0)
sim = jax.jit(jax.vmap(functools.partial(simulate_committee, t_max=T_MAX, num_saves=SAVES),
                       in_axes=(0, 0, None, None, None, None)))(jax.random.split(k3, SEEDS), w0, jnp.ones(K), wt,
                                                                jnp.ones(M), 0.5)
T = wt @ wt.T / N
ts = sim.t[0]

# ODEs vmapped over (initial state, eta): one compilation serves parts 1 and 3
ode = eqx.filter_jit(jax.vmap(committee_ode, in_axes=(0, None, None, None, 0)))
s0 = CommitteeState(sim.Q[:, 0], sim.R[:, 0], sim.v[:, 0])
ode_runs = ode(s0, T, jnp.ones(M), ts, jnp.full(SEEDS, 0.5, float))  # float, not weakly typed: as in part 3
print("max |eps_g(sim) - eps_g(ODE)| per seed:", np.round(np.max(np.abs(np.asarray(sim.eps_g - ode_runs.eps_g)), 1), 4))

# %% [markdown]
# ## 2. The plateau
#
# From the flattest point of the ODE curve, Newton (`rmtjax.solve.root`) finds the symmetric
# fixed point: every student unit has the same overlap with every teacher unit. It is a saddle;
# its unstable eigenvalue sets the escape time $\sim \log(1/\delta)/\text{rate}$ from a
# symmetry breaking $\delta$ (here $O(N^{-1/2})$ from the random initialisation).

# %%
e = np.asarray(ode_runs.eps_g).mean(0)
t = np.asarray(ts)
mask = (t > 10) & (e > 1e-4)
i_pl = int(np.argmin(np.where(mask, np.abs(np.gradient(np.log(e), t)), np.inf)))
fp = committee_fixed_point(CommitteeState(ode_runs.Q[0, i_pl], ode_runs.R[0, i_pl], jnp.ones(K)), T, jnp.ones(M), 0.5)
print(f"plateau: eps_g = {float(fp.eps_g):.5f} (fixed point), simulation at t = {t[i_pl]:.0f}: "
      f"{float(sim.eps_g[:, i_pl].mean()):.5f}; unstable rate {float(fp.growth_rate):.4f}")
print("R at the plateau:\n", np.round(np.asarray(fp.state.R), 4))

# %% [markdown]
# ## 3. Learning-rate sweep
#
# The same compiled solve, vmapped over $\eta$ (with the first run's initial state): small
# learning rates stay on the plateau longer (time in units of $\mu/N$), large ones learn faster
# until the $\eta^2$ term of $\dot Q$ makes learning fail.

# %%
etas = jnp.array([0.25, 0.5, 1.0, 1.5])
s_one = jax.tree.map(lambda a: jnp.broadcast_to(a[0], (len(etas),) + a.shape[1:]), s0)
sweep = ode(s_one, T, jnp.ones(M), ts, etas)
for eta, eg in zip(np.asarray(etas), np.asarray(sweep.eps_g)):
    print(f"eta = {eta:.2f}: eps_g(t = {T_MAX:.0f}) = {eg[-1]:.2e}")

# %%
fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
for i in range(SEEDS):
    ax[0].semilogy(t, sim.eps_g[i], color="C0", lw=0.7, label="simulation" if i == 0 else None)
    ax[0].semilogy(t, ode_runs.eps_g[i], color="C3", ls="--", lw=0.9, label="ODE" if i == 0 else None)
ax[0].axhline(float(fp.eps_g), color="k", ls=":", label="plateau (fixed point)")
ax[0].set(xlabel=r"$t=\mu/N$", ylabel=r"$\epsilon_g$", title=f"erf K=M=2, $\\eta$=0.5, N={N}")
ax[0].legend()
for eta, eg in zip(np.asarray(etas), np.asarray(sweep.eps_g)):
    ax[1].semilogy(t, eg, label=f"$\\eta$={eta}")
ax[1].set(xlabel=r"$t$", ylabel=r"$\epsilon_g$", title="learning-rate sweep (one vmapped ODE solve)")
ax[1].legend()
fig.tight_layout()
fig.savefig(OUT / "sgd_dynamics.png", dpi=100)
