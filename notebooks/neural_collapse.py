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
# # Neural collapse with rmtjax: NC1-NC4 metrics and the terminal phase of training
#
# Papyan, Han & Donoho (PNAS 2020) observed that, when a classifier is trained far beyond zero
# training error, its last-layer features collapse onto their class means (NC1), the centred class
# means form a simplex equiangular tight frame (NC2), the classifier aligns with them (NC3) and
# classifies like the nearest class centre (NC4). This notebook
#
# 1. builds a simplex ETF in a random pose and checks that every metric of `rmtjax.collapse`
#    vanishes on it;
# 2. adds Gaussian noise of size $\sigma$ to ETF features and compares NC1 with its closed form
#    $\mathrm{NC1} = \sigma^2 (C-1)^2 / (C\alpha^2)$ (isotropic $\Sigma_W = \sigma^2 I$, and
#    $\Sigma_B$ has $C-1$ eigenvalues $\alpha^2/(C-1)$ for vertices of norm $\alpha$);
# 3. accumulates the statistics batch by batch (`StreamingStatistics`) and compares with one shot;
# 4. trains a small layer-normalized ReLU network on scikit-learn digits into the terminal phase
#    and plots the metrics against epochs.
#
# The size is set by `RMTJAX_NOTEBOOK_N` (the number of samples per class in parts 2-3, and half
# the training epochs in part 4; the tests use 16, and then train for 8 epochs, short of the terminal
# phase); figures go to `RMTJAX_NOTEBOOK_OUT` (default: a temporary folder).

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

from rmtjax.collapse import (  # noqa: E402
    StreamingStatistics,
    class_statistics,
    collapse_metrics,
    ncc_mismatch,
    simplex_etf,
)

N = int(os.environ.get("RMTJAX_NOTEBOOK_N", 64))
C, P = 10, 32  # classes, feature dimension
OUT = Path(os.environ.get("RMTJAX_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="rmtjax_collapse_"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. A simplex ETF in a random pose
#
# `simplex_etf(U, alpha, num_classes=C)` returns the $C$ vertices $\alpha\sqrt{C/(C-1)}\,
# (I - \mathbf 1\mathbf 1^\top/C)U^\top$ as rows, for any $U$ with orthonormal columns. Features equal
# to their class's vertex (shifted by an arbitrary global mean) and a classifier proportional to
# the centred means are exactly collapsed.

# %%
rng = np.random.default_rng(0)
U = jnp.asarray(np.linalg.qr(rng.standard_normal((P, C)))[0])
alpha = 2.0
etf = simplex_etf(U, alpha, num_classes=C)
labels = jnp.repeat(jnp.arange(C), N)
shift = jnp.asarray(rng.standard_normal(P))
h_exact = etf[labels] + shift[None, :]
stats = class_statistics(h_exact, labels, num_classes=C)
W = 0.3 * etf
b = -(W @ shift)
exact = collapse_metrics(stats, W)
for name, value in exact._asdict().items():
    print(f"{name:>20s} = {float(value):.2e}")
print(f"{'NC4 (ncc_mismatch)':>20s} = {float(ncc_mismatch(h_exact, stats.class_means, W, b)):.2e}")
assert max(float(v) for v in exact) < 1e-10

# %% [markdown]
# ## 2. Noisy ETF features: NC1 against its closed form
#
# With $h = m_c + \sigma z$, $z \sim \mathcal N(0, I_P)$, the within-class covariance tends to
# $\sigma^2 I$ and the between-class one has $C-1$ eigenvalues $\alpha^2/(C-1)$, so
# $\mathrm{NC1} \to \sigma^2 (C-1)^2/(C\alpha^2)$ (finite $N$: a factor $1 - 1/N$ and sampling
# noise of relative size $\sqrt{2/((C-1)C(N-1))}$). One
# `jax.vmap` over the noise levels evaluates every point.

# %%
sigmas = jnp.logspace(-3, 0, 13)
z = jnp.asarray(rng.standard_normal((C * N, P)))


def nc_at(sigma):
    h = etf[labels] + sigma * z
    return collapse_metrics(class_statistics(h, labels, num_classes=C), etf)


curves = jax.jit(jax.vmap(nc_at))(sigmas)
theory = sigmas**2 * (C - 1) ** 2 / (C * alpha**2)
ratio = np.asarray(curves.nc1 / theory)
print("NC1 / closed form:", np.round(ratio, 3))
# Finite N: E[Sigma_W] = sigma^2 (1 - 1/N) I (class means estimated from the same samples), and the
# trace over the C-1 directions of the means averages (C-1) variances with C(N-1) degrees of freedom:
# relative standard error sqrt(2 / ((C-1) C (N-1))). The noise also enters Sigma_B (sigma^2/N against
# alpha^2/(C-1)), which matters only at the largest sigma, left out of the check.
se = np.sqrt(2 / ((C - 1) * C * (N - 1)))
small = np.asarray(sigmas) <= 0.3
assert np.all(np.abs(ratio[small] / (1 - 1 / N) - 1) < 4 * se + 0.02), ratio

fig, ax = plt.subplots(1, 2, figsize=(11, 4))
ax[0].loglog(sigmas, curves.nc1, "o", label="rmtjax NC1")
ax[0].loglog(sigmas, theory, "k-", label=r"$\sigma^2(C-1)^2/(C\alpha^2)$")
ax[0].set(xlabel=r"noise $\sigma$", ylabel="NC1", title=f"noisy simplex ETF, C={C}, {N} samples per class")
ax[0].legend()
for key in ("equinorm_means", "equiangular_means", "max_angle_means", "self_duality"):
    ax[1].loglog(sigmas, getattr(curves, key), ".-", label=key)
ax[1].set(xlabel=r"noise $\sigma$", title="NC2 / NC3 (classifier = exact ETF)")
ax[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "noisy_etf.png", dpi=100)

# %% [markdown]
# ## 3. Streaming statistics
#
# Features that do not fit in memory arrive in batches; `StreamingStatistics` merges per-class
# means and scatter matrices with Chan-Golub-LeVeque updates and gives the same statistics as one
# pass over everything, here with a large common offset that would ruin raw sums of squares.

# %%
h_big = 1e6 + etf[labels] + 0.1 * z
acc = StreamingStatistics.init(P, num_classes=C)
perm = rng.permutation(C * N)
for chunk in np.array_split(perm, 7):
    acc = acc.update(h_big[chunk], labels[chunk])
streamed = collapse_metrics(acc.statistics(), etf)
one_shot = collapse_metrics(class_statistics(h_big, labels, num_classes=C), etf)
for name in ("nc1", "equiangular_means", "self_duality"):
    print(f"{name:>18s}: streamed {float(getattr(streamed, name)):.10e}, one shot {float(getattr(one_shot, name)):.10e}")
    assert abs(float(getattr(streamed, name)) / float(getattr(one_shot, name)) - 1) < 1e-6

# %% [markdown]
# ## 4. The terminal phase of training
#
# A 3-layer layer-normalized ReLU network trained with SGD (momentum 0.9, weight decay 2e-3,
# gradient clipping) on scikit-learn digits, with the learning rate divided by 10 at 1/3 and 2/3 of
# training. (Without the clipping, long runs at this learning rate can diverge: weight decay shrinks
# the weights in front of each layer normalization and so raises their effective learning rate.) The metrics
# are computed on the penultimate features every few epochs through the training loop's callback.
# `rmtjax reproduce neural-collapse` runs the same on digits and the MNIST 5k subset with longer
# training.

# %%
import optax  # noqa: E402

from rmtjax.data import digits  # noqa: E402
from rmtjax.finite import train  # noqa: E402
from rmtjax.finite import Classifier  # noqa: E402

EPOCHS = 2 * N if N >= 32 else 8  # the test run: a few epochs (every training step runs at XLA -O0 there)
ds = digits(1297, 500, seed=0, dtype=jnp.float32)
net = Classifier(64, 10, width=128, depth=3, seed=0, dtype=jnp.float32)
steps = 1297 // 32
schedule = optax.piecewise_constant_schedule(0.05, {EPOCHS * steps // 3: 0.1, 2 * EPOCHS * steps // 3: 0.1})
opt = optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(2e-3), optax.sgd(schedule, momentum=0.9))


def measure(model, epoch):
    h = model.features(ds.x_train).astype(jnp.float64)
    Wr, br = (a.astype(jnp.float64) for a in model.readout())
    s = class_statistics(h, ds.labels_train, num_classes=10)
    return collapse_metrics(s, Wr)._asdict() | {"nc4": ncc_mismatch(h, s.class_means, Wr, br)}


hist = train(net, ds.x_train, ds.y_train, opt, loss="cross_entropy", epochs=EPOCHS, batch_size=32,
             key=jax.random.key(1), record_every=max(1, EPOCHS // 8), callback=measure, progress=False)
rec = {k: np.array([float(r[k]) for r in hist.records]) for k in hist.records[0]}
tpt = hist.epoch[np.argmax(hist.accuracy >= 1.0)] if np.any(hist.accuracy >= 1.0) else None
print(f"zero training error from epoch {tpt}; NC1 {rec['nc1'][0]:.3g} (init) -> {rec['nc1'][-1]:.3g}")

fig, ax = plt.subplots(1, 3, figsize=(15, 4))
ax[0].semilogy(hist.epoch, rec["nc1"])
ax[0].set(title="NC1 (Papyan et al. Fig. 6)", xlabel="epoch")
for key in ("equinorm_means", "equiangular_means", "max_angle_means", "self_duality"):
    ax[1].semilogy(hist.epoch, rec[key], label=key)
ax[1].set(title="NC2 / NC3", xlabel="epoch")
ax[1].legend(fontsize=8)
ax[2].plot(hist.epoch, 1 - hist.accuracy, label="training error")
ax[2].plot(hist.epoch, rec["nc4"], label="NC4 (train)")
ax[2].set(title="training error and NC4", xlabel="epoch")
ax[2].legend()
for a in ax:
    if tpt is not None:
        a.axvline(tpt, color="k", ls=":", lw=1)
fig.tight_layout()
fig.savefig(OUT / "terminal_phase.png", dpi=100)
