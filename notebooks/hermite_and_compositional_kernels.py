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
# # Hermite coefficients, compositional kernels and branching processes
#
# Liang & Tran-Bach (2020), *Mehler's formula, branching processes, and compositional kernels of
# deep neural networks*, with `rmtjax.hermite`:
#
# 1. Hermite coefficients $a_k$ of activations in the orthonormal basis $h_k = He_k/\sqrt{k!}$
#    (closed forms and quadrature), and Mehler's formula $G(\rho) = \sum_k a_k^2 \rho^k$.
# 2. The compositional kernel $K^{(L)} = G\circ\cdots\circ G$ is the NNGP of a deep network that
#    preserves the variance — checked against `rmtjax.kernels.kernel`.
# 3. $p_k = a_k^2$ is an offspring law: $\mu$, the extinction probability $\xi$, the phases and
#    the limits of $K^{(L)}$ as the depth grows.
# 4. Gradient-based tuning of an activation parameter (Swish $\beta$) to hit a target $\mu$ with
#    optax: every quantity is differentiable, including $\xi$ (implicit differentiation).
# 5. Random features for $K^{(L)}$: degrees drawn from the branching process, products of random
#    projections, and ridge regression with them.
#
# Sizes come from `RMTJAX_NOTEBOOK_N` (the tests use a small value); figures go to
# `RMTJAX_NOTEBOOK_OUT` (default: a temporary folder).

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
import optax

import rmtjax.activations as A
from rmtjax.gaussian import gaussian_expectations
from rmtjax.hermite import (
    GaussLegendre,
    Phase,
    branching_process,
    compositional_features,
    compositional_kernel,
    extinction_probability,
    hermite_coefficients,
    normalized,
    rescaled_limit,
    ridge_predict,
    unscaled_limit,
)
from rmtjax.kernels import FullyConnected, kernel

jax.config.update("jax_enable_x64", True)

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 200))  # data points for the random-feature regression
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="rmtjax_hermite_"))
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
# ## 1. Hermite coefficients
#
# ReLU, GELU and erf have closed forms; tanh, Swish and sigmoid go through the trapezoidal rule
# (exponentially accurate for analytic activations). The split Gauss-Legendre rule handles the
# kink of ReLU; we compare it with the closed form.

# %%
ORDER = 40
acts = {"ReLU": A.Relu(), "GELU": A.Gelu(), "erf": A.Erf(), "tanh": A.Tanh(), "Swish": A.Swish(), "sigmoid": A.Sigmoid()}
coeffs = {name: hermite_coefficients(act, order=ORDER) for name, act in acts.items()}
relu_split = hermite_coefficients(A.Relu(), order=ORDER, method=GaussLegendre())
print("ReLU closed form vs split quadrature, max |diff| =", float(jnp.max(jnp.abs(relu_split - coeffs["ReLU"]))))

fig, ax = plt.subplots(figsize=(6, 4))
k = np.arange(ORDER + 1)
for name, a in coeffs.items():
    a = np.abs(np.asarray(a))
    ax.semilogy(k[a > 1e-300], a[a > 1e-300], "o-", ms=3, label=name)
ax.set(xlabel="k", ylabel=r"$|a_k|$", title=r"Hermite coefficients, $h_k = He_k/\sqrt{k!}$", ylim=(1e-17, 2))
ax.legend()
save(fig, "hermite_coefficients")

# %% [markdown]
# ## 2. The compositional kernel is the NNGP of a variance-preserving network
#
# With inputs of squared norm $d$ (so $\Sigma^{(0)} = x\cdot x'/d = \rho$), no biases and
# `W_std = (1, c, ..., c)`, $c = \mathbb E[\sigma(z)^2]^{-1/2}$, the kernel engine's NNGP after
# layer $\ell$ is $K^{(\ell)}(\rho)$ for the coefficients $a_k/\sqrt{\mathbb E\sigma^2}$.

# %%
depth, d = 5, 10
act = A.Tanh()
one = jnp.ones(())
m2 = gaussian_expectations(act, one, one, one).k
a = hermite_coefficients(act, order=120) / jnp.sqrt(m2)
X = np.random.default_rng(0).standard_normal((6, d))  # data on the host: numpy (no compilation)
X = jnp.asarray(X / np.linalg.norm(X, axis=1)[:, None] * math.sqrt(d))
W = jnp.concatenate([jnp.ones(1), jnp.full((depth,), 1 / jnp.sqrt(m2))])
nngp = kernel(X, None, FullyConnected(depth, W, 0.0, act), all_depths=True).nngp
K = compositional_kernel(a, jnp.clip(X @ X.T / d, -1, 1), depth=depth)
print("max |K^(l) - NNGP^(l)| over all depths:", float(jnp.max(jnp.abs(K - nngp))))

# %% [markdown]
# ## 3. Branching processes: phases and limits
#
# Normalized so that $\sum_k a_k^2 = 1$, $p_k = a_k^2$ is the offspring law of a Galton-Watson
# process, $G$ its generating function and $K^{(L)}$ that of generation $L$. Sub-critical
# ($\mu < 1$): $K^{(L)} \to 1$. Super-critical: $K^{(L)}(\rho) \to \xi$ on $[0, 1)$ and
# $K^{(L)}(e^{-t/\mu^L}) \to \mathbb E[e^{-tW}]$.

# %%
rows = []
for name in ("ReLU", "GELU", "sigmoid", "Swish", "tanh"):
    for center in (False, True):
        bp = branching_process(normalized(coeffs[name], center=center))
        rows.append((name + (" (centered)" if center else ""), float(bp.mu), float(bp.xi), Phase(int(bp.phase)).name))
print(f"{'activation':22s} {'mu':>8s} {'xi':>8s}  phase")
for r in rows:
    print(f"{r[0]:22s} {r[1]:8.4f} {r[2]:8.4f}  {r[3].lower()}")

fig, ax = plt.subplots(1, 2, figsize=(11, 4))
for name, center in [("sigmoid", False), ("GELU", False), ("Swish", False), ("tanh", False), ("ReLU", True)]:
    c = normalized(coeffs[name], center=center)
    KL = compositional_kernel(c, jnp.asarray(0.5), depth=60)
    line, = ax[0].plot(np.asarray(KL), label=name + (" (centered)" if center else ""))
    ax[0].axhline(float(unscaled_limit(c, 0.5)), color=line.get_color(), ls=":")
ax[0].set(xlabel="depth L", ylabel=r"$K^{(L)}(0.5)$", title="unscaled limits (dotted: predicted)")
ax[0].legend(fontsize=8)
c = normalized(coeffs["GELU"])
bp = branching_process(c)
t = jnp.linspace(0, 8, 81)
for L in (5, 20, 60):
    ax[1].plot(t, compositional_kernel(c, jnp.exp(-t / bp.mu**L), depth=L)[-1], label=f"L = {L}")
ax[1].plot(t, rescaled_limit(c, t), "k--", label=r"$\mathbb{E}e^{-tW}$")
ax[1].axhline(float(bp.xi), color="gray", ls=":", label=rf"$\xi$ = {float(bp.xi):.3f}")
ax[1].set(xlabel="t", title=rf"GELU, rescaled: $K^{{(L)}}(e^{{-t/\mu^L}})$, $\mu$ = {float(bp.mu):.3f}")
ax[1].legend(fontsize=8)
save(fig, "limits")

# %% [markdown]
# ## 4. Tuning Swish $\beta$ to a target $\mu$ with optax
#
# $\mu(\beta) = \sum_k k a_k(\beta)^2 / \sum_k a_k(\beta)^2$ is differentiable through the
# quadrature; so is the extinction probability (implicit differentiation through
# `rmtjax.solve.fixed_point`).

# %%
TARGET = 1.03


def mu_of(beta):
    return branching_process(normalized(hermite_coefficients(A.Swish(beta), order=ORDER))).mu


def loss(log_beta):
    return (mu_of(jnp.exp(log_beta)) - TARGET) ** 2


opt = optax.adam(0.1)
log_beta = jnp.log(jnp.asarray(1.0))
state = opt.init(log_beta)


@jax.jit
def step(p, s):
    value, grad = jax.value_and_grad(loss)(p)
    with jax.numpy_dtype_promotion("standard"):  # Adam's bias correction mixes an int counter and floats
        updates, s = opt.update(grad, s, p)
    return value, updates, s


history = []
for i in range(max(100, N // 2)):
    value, updates, state = step(log_beta, state)
    log_beta = optax.apply_updates(log_beta, updates)
    history.append(float(value))
beta = float(jnp.exp(log_beta))
print(f"beta = {beta:.4f}: mu = {float(mu_of(beta)):.6f} (target {TARGET})")
xi_of = lambda b: extinction_probability(normalized(hermite_coefficients(A.Swish(b), order=ORDER))).value  # noqa: E731
print(f"xi(beta) = {float(xi_of(beta)):.4f}, d xi / d beta = {float(jax.jit(jax.grad(xi_of))(beta)):.4f}")

fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
ax[0].semilogy(history)
ax[0].set(xlabel="Adam step", ylabel=r"$(\mu - \mu_{target})^2$", title="tuning Swish beta")
betas = jnp.linspace(0.1, 4.0, 40)
ax[1].plot(betas, jax.jit(jax.vmap(mu_of))(betas), label=r"$\mu(\beta)$")  # jit: one compiled program per curve
ax[1].plot(betas, jax.jit(jax.vmap(xi_of))(betas), label=r"$\xi(\beta)$")
ax[1].axvline(beta, color="k", ls=":")
ax[1].axhline(TARGET, color="gray", ls=":")
ax[1].set(xlabel=r"$\beta$")
ax[1].legend()
save(fig, "tuning")

# %% [markdown]
# ## 5. Random features for $K^{(L)}$ and ridge regression
#
# Each feature draws a degree $Z$ from the law of generation $L$ and multiplies $Z$ random
# projections: $\mathbb E[\prod_{i\le Z}(w_i\cdot x)(w_i\cdot x')] = \mathbb E[(x\cdot x')^Z] =
# K^{(L)}(x\cdot x')$. A cubic activation keeps the degrees bounded (light tails).

# %%
law = jnp.sqrt(jnp.array([0.0, 0.5, 0.3, 0.2]))
key_f = jax.random.key(1)
rng = np.random.default_rng(1)
Xall = rng.standard_normal((N + max(N // 2, 8), 5))  # N training and max(N // 2, 8) test points
Xall = Xall / np.linalg.norm(Xall, axis=1)[:, None]
yall = np.sin(3 * Xall[:, 0]) + Xall[:, 1] * Xall[:, 2]
Xall, ytr, yte = jnp.asarray(Xall), jnp.asarray(yall[:N]), jnp.asarray(yall[N:])
Kall = compositional_kernel(law, jnp.clip(Xall @ Xall.T, -1, 1), depth=2)[-1]
lam = 1e-2
exact = Kall[N:, :N] @ jnp.linalg.solve(Kall[:N, :N] + lam * jnp.eye(N), ytr)
Ms = [50, 400] if N < 100 else [50, 400, 3200]  # the test run: two feature counts (each is a compilation)
gaps, errs = [], []
for M in Ms:
    F = compositional_features(Xall, law, jax.random.fold_in(key_f, M), depth=2, num_features=M, max_degree=9).features
    pred = ridge_predict(F[:N], ytr, F[N:], lam)
    gaps.append(float(jnp.sqrt(jnp.mean((pred - exact) ** 2))))
    errs.append(float(jnp.sqrt(jnp.mean((pred - yte) ** 2))))
print("test rmse, exact kernel ridge:", float(jnp.sqrt(jnp.mean((exact - yte) ** 2))))
fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.loglog(Ms, gaps, "o-", label="|random-feature ridge - kernel ridge|")
ax.loglog(Ms, errs, "s-", label="test rmse (random features)")
ax.loglog(Ms, gaps[0] * np.sqrt(Ms[0] / np.array(Ms)), "k:", label=r"$M^{-1/2}$")
ax.set(xlabel="features M", title="ridge regression with compositional random features (L = 2)")
ax.legend(fontsize=8)
save(fig, "random_features")
