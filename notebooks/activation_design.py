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
# # Designing activations through the theory
#
# `rmtjax.design` turns the infinite-width theory into objectives of the activation function and
# designs activations by gradient descent through it (implicit gradients through every solve):
#
# 1. **criticality**: reshape tanh so that a network at given `sigma_w2, sigma_b2` sits on the edge of
#    chaos (`chi_1 = 1`) at a chosen `q*`; Swish's `beta` for a branching mean `mu`;
# 2. **dynamical isometry**: the spectrum of the input-output Jacobian, mean one and its spread;
# 3. **kernel shaping**: DKS and TAT solved exactly (`dks`, `tat`, `tat_leaky_relu`), and the same
#    conditions met by descent;
# 4. **a task objective**: a unit-variance Hermite-series activation designed for the NNGP
#    kernel-ridge validation loss on digits.
#
# Sizes come from `RMTJAX_NOTEBOOK_N` (the tests use 16) and figures go to `RMTJAX_NOTEBOOK_OUT`.

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

from rmtjax import data, design, meanfield
from rmtjax.activations import Relu, Softplus, Swish, Tanh, Transformed
from rmtjax.design import Chain
from rmtjax.kernels import FullyConnected, kernel

jax.config.update("jax_enable_x64", True)

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 64))
SMALL = N < 32
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="rmtjax_design_"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Criticality at unit weight variance
#
# `Criticality(sigma_w2, sigma_b2, q_star)` is `log(chi_1)^2 + (q*/target - 1)^2` at the length-map
# fixed point `q*`. Here tanh is rescaled, `gamma tanh(alpha x)` (`alpha, gamma > 0` as `exp(u)`), so
# that a network with `sigma_w2 = 1`, `sigma_b2 = 0.1` is critical at `q* = 1`. (Without biases an odd
# activation is critical at `q* = 1` only in its linear limit: `E[phi'^2] >= E[phi^2]` by the Gaussian
# Poincare inequality.) The objective is `+inf` where there is no finite fixed point, so L-BFGS's line
# search backs off from there.

# %%
family = design.Family(lambda u: Transformed(Tanh(), alpha=jnp.exp(u[0]), gamma=jnp.exp(u[1])), jnp.array([0.0, 0.2]))
crit = design.design(family, design.Criticality(sigma_w2=1.0, sigma_b2=0.1, q_star=1.0), steps=40)
chi = float(meanfield.chi_1(crit.activation, 1.0, 0.1).value)
q = float(meanfield.q_star(crit.activation, 1.0, 0.1).value)
print(f"{float(crit.activation.gamma):.6f} tanh({float(crit.activation.alpha):.6f} x): chi_1 = {chi:.12f}, q* = {q:.12f}")
assert abs(chi - 1) < 1e-9 and abs(q - 1) < 1e-9

# A parameterized activation is a family of its own: Swish's beta, kept positive as exp(u), for the
# Liang & Tran-Bach branching mean mu (mu = 1: the compositional kernel neither collapses nor explodes)
swish = design.design(design.Family(lambda u: Swish(beta=jnp.exp(u)), jnp.array(0.0)),
                      design.Branching(mu=1.05), steps=30)
print(f"Swish beta = {float(swish.activation.beta):.6f}: objective {float(jnp.min(swish.history)):.2e}")

# %% [markdown]
# ## 2. Dynamical isometry
#
# `JacobianMoments(sigma_w2, sigma_b2, depth=L)` gives the mean `m_1 = chi_1^L` and the normalized
# variance `sigma^2` of the spectrum of `J J^T` (Pennington, Schoenholz & Ganguli 2017); as an
# objective it is `log(m_1)^2 + w sigma^2`. Along tanh's edge of chaos (`sigma_w2` from
# `meanfield.edge_of_chaos` for each `sigma_b2`) the mean is one and the spread grows with `q*`: tanh
# is nearly linear at small variance, and with orthogonal weights the Jacobian is then nearly isometric
# (their Fig. 1). The objective's unconstrained minimum is the linear network (spread zero), so in a
# design it is weighed against a nonlinearity target (a `KernelShaping` or task term).

# %%
depth = 32
rows = []
for b2 in (0.005, 0.02, 0.05, 0.2):
    w2 = meanfield.edge_of_chaos(Tanh(), b2).value
    q = float(meanfield.q_star(Tanh(), w2, b2).value)
    m1, s2_orth = design.JacobianMoments(w2, b2, depth=depth, orthogonal=True).moments(Tanh())
    _, s2_gauss = design.JacobianMoments(w2, b2, depth=depth, orthogonal=False).moments(Tanh())
    rows.append((q, float(m1), float(s2_orth), float(s2_gauss)))
    print(f"sigma_b2 = {b2:5.3f}: sigma_w2 = {float(w2):.4f}, q* = {q:.4f}, mean {float(m1):.6f}, "
          f"variance orthogonal {float(s2_orth):7.3f}, Gaussian {float(s2_gauss):7.3f}")
rows = np.array(rows)
assert np.allclose(rows[:, 1], 1.0, atol=1e-6) and np.all(np.diff(rows[:, 2]) > 0)

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(rows[:, 0], rows[:, 2], "o-", label="orthogonal W")
ax.plot(rows[:, 0], rows[:, 3], "s--", label="Gaussian W")
ax.set(xscale="log", xlabel="q* on tanh's edge of chaos", ylabel=f"variance of JJ^T spectrum, depth {depth}")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "isometry.png", dpi=100)

# %% [markdown]
# ## 3. Kernel shaping: DKS and TAT, exact and by descent
#
# `dks(phi, Chain(L), slope=zeta)` finds `gamma (phi(alpha x + beta) + delta)` with `Q(1) = 1`,
# `Q'(1) = 1`, `C(0) = 0` and the network's C-map slope `C_f'(1) = zeta`; `tat` fixes the curvature
# `C_f''(1) = tau` with slope one; `tat_leaky_relu` the network's `C_f(0) = eta`. The C maps of the
# whole network show what the shaping does: a plain tanh or ReLU network maps every pair of inputs to
# nearly the same output (its C map is flat), the shaped ones keep it close to the identity.

# %%
L = 20 if SMALL else 50
shaped = {
    "DKS tanh": design.dks(Tanh(), Chain(L), slope=1.5).activation,
    "TAT softplus": design.tat(Softplus(), Chain(L), curvature=0.3).activation,
    "TAT leaky ReLU": design.tat_leaky_relu(Chain(L), c0=0.9).activation,
}
plain = {"tanh (sigma_w2 = 1)": (Tanh(), 1.0), "ReLU (sigma_w2 = 2)": (Relu(), 2.0)}
c = jnp.linspace(0.0, 1.0, N + 1)
# pairs of unit-variance inputs at correlation c: the network's output correlation from the NNGP
x = np.concatenate([np.sqrt(2.0) * np.array([[1.0, 0.0]]), np.sqrt(2.0) * np.stack([c, np.sqrt(1 - c**2)], 1)])


def network_c_map(act, w2):
    k = kernel(x, None, FullyConnected(L, W_std=float(np.sqrt(w2)), b_std=0.0, activation=act)).nngp
    return k[0, 1:] / jnp.sqrt(k[0, 0] * jnp.diagonal(k)[1:])


fig, ax = plt.subplots(figsize=(5, 4))
for name, act in shaped.items():
    ax.plot(c, network_c_map(act, 1.0), label=name)
for name, (act, w2) in plain.items():
    ax.plot(c, network_c_map(act, w2), "--", label=name)
ax.plot(c, c, ":", color="gray")
ax.set(xlabel="input correlation c", ylabel=f"output correlation C_f(c), depth {L}", title="network C maps")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "c_maps.png", dpi=100)

# the TAT leaky-ReLU network's C map is 0.9 at c = 0, read off the kernel engine's NNGP
cf = float(network_c_map(shaped["TAT leaky ReLU"], 1.0)[0])
print(f"TAT leaky ReLU: C_f(0) = {cf:.10f}")
assert abs(cf - 0.9) < 1e-9

# %% [markdown]
# The same DKS conditions, as a penalty minimized over the transformation's four parameters by
# L-BFGS (the default optimizer of `design`), land on the exact solve's parameters:

# %%
obj = design.KernelShaping(Chain(L), q_slope=1.0, c0=0.0, slope=1.5)
descent = design.design(design.transformed_family(Tanh(), alpha=0.5, beta=0.5), obj, steps=100)
exact = shaped["DKS tanh"]
for name in ("alpha", "beta", "gamma", "delta"):
    print(f"{name}: descent {float(getattr(descent.activation, name)):+.6f}  exact {float(getattr(exact, name)):+.6f}")

# %% [markdown]
# ## 4. A task objective: a Hermite-series activation for digit classification
#
# `ValidationLoss` is the NNGP kernel-ridge validation error of a depth-`L` network on data; the family
# is `sum_k a_k h_k` with `sum a_k^2 = 1` (unit variance). We start from the Hermite coefficients of
# ReLU (normalized) and descend.

# %%
n = 50 if SMALL else 400
ds = data.digits(n, n, seed=0)
y_train, y_val = np.asarray(ds.y_train), np.asarray(ds.y_test)  # one-hot targets
x_train = np.asarray(ds.x_train) / np.linalg.norm(ds.x_train, axis=1, keepdims=True) * np.sqrt(ds.x_train.shape[1])
x_val = np.asarray(ds.x_test) / np.linalg.norm(ds.x_test, axis=1, keepdims=True) * np.sqrt(ds.x_test.shape[1])
task = design.ValidationLoss(x_train, y_train, x_val, y_val, depth=10, ridge=1e-2)
relu_coeffs = Relu().hermite_coefficients(jnp.array(1.0), order=6)
designed = design.design(design.hermite_family(relu_coeffs), task, steps=10 if SMALL else 60, warn=False)
start, end = float(designed.history[0]), float(jnp.min(designed.history))
print(f"validation loss: ReLU-like start {start:.4f} -> designed {end:.4f}")
print("designed Hermite coefficients:", np.round(np.asarray(designed.activation.coeffs), 4))
assert end < start


def accuracy(act):
    pred = task.predict(act)
    return float(np.mean(np.argmax(np.asarray(pred), 1) == np.argmax(y_val, 1)))


print(f"NNGP validation accuracy: ReLU {accuracy(Relu()):.3f}, designed {accuracy(designed.activation):.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
axes[0].semilogy(np.asarray(designed.history))
axes[0].set(xlabel="L-BFGS step", ylabel="validation loss", title="task objective")
z = jnp.linspace(-3, 3, 200)
axes[1].plot(z, designed.activation(z), label="designed")
axes[1].plot(z, design.HermiteSeries(relu_coeffs / jnp.linalg.norm(relu_coeffs))(z), "--", label="start (ReLU, 6 terms)")
axes[1].legend()
axes[1].set(xlabel="x", title="activation")
fig.tight_layout()
fig.savefig(OUT / "task_design.png", dpi=100)
