"""Finite-width networks built by ``rmtjax.stax`` converge to ``kernel_fn``: the Monte-Carlo
NNGP over random initialisations agrees with the infinite-width NNGP within 5 standard errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmtjax import stax

# Width 256 and 256 initialisations: the standard error of the NNGP estimate is ~sqrt(2/256) =
# 9% of the kernel, the finite-width bias O(1/width) ~ 0.4%, far inside 5 SE (measured: max z
# 1.2 for the erf network; width 1024 with 512 draws gave 2.8 and took 5x longer).
WIDTH = 256
N_INIT = 256
CHUNK = 128


@pytest.mark.parametrize(
    "layers",
    [
        lambda: [stax.Dense(WIDTH, 1.5, 0.1), stax.Erf(), stax.Dense(WIDTH, 1.5, 0.1), stax.Erf(), stax.Dense(1, 1.5, 0.1)],
        lambda: [stax.Dense(WIDTH, 1.4, 0.2), stax.Relu(), stax.Dense(1, 1.4, 0.2)],
        lambda: [stax.Dense(WIDTH, 1.0, 0.1, parameterization="standard"), stax.Gelu(),
                 stax.Dense(1, 1.0, 0.1, parameterization="standard")],
        lambda: [stax.Dense(WIDTH, 1.0, 0.0),
                 stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(stax.Relu(), stax.Dense(WIDTH, 1.2, 0.1))),
                 stax.FanInSum(), stax.Relu(), stax.Dense(1, 1.3, 0.0)],
    ],
    ids=["erf-depth2", "relu-depth1", "gelu-standard", "residual-relu"],
)
@pytest.mark.slow  # a long statistical or convergence check (several compiled sizes or long runs)
def test_monte_carlo_nngp_within_five_standard_errors(layers):
    init_fn, apply_fn, kernel_fn = stax.serial(*layers())
    x = jax.random.normal(jax.random.key(1), (5, 8))
    x = x.at[4].set(-x[0])  # an opposite pair
    # compiled as one program (the residual network's layer-by-layer path would compile op by op)
    theory = np.asarray(jax.jit(kernel_fn, static_argnames="get")(x, None, "nngp"))

    @jax.jit
    def products(keys):
        def one(key):
            _, params = init_fn(key, x.shape)
            f = apply_fn(params, x)[:, 0]
            return f[:, None] * f[None, :]

        return jax.vmap(one)(keys)

    keys = jax.random.split(jax.random.key(0), N_INIT).reshape(N_INIT // CHUNK, CHUNK)
    samples = np.concatenate([np.asarray(products(k)) for k in keys])
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / np.sqrt(N_INIT)
    z = np.abs(mean - theory) / se
    assert z.max() < 5, (z.max(), mean, theory)
    # the estimate is informative: its standard error is small next to the kernel itself
    # (sqrt(2 / N_INIT) = 0.088 for a product of two Gaussian outputs)
    assert np.max(se) < 0.15 * np.max(np.abs(theory))


def test_cli_host_devices_flag_is_honoured_after_import():
    # `import rmtjax` must not start the XLA backend, or the rmtjax command could not set
    # --xla_force_host_platform_device_count after its own import.
    code = (
        "import os, rmtjax, rmtjax.stax, rmtjax.kernels\n"
        "os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=3'\n"
        "import jax; print(len(jax.devices()))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "3"


def test_gradient_through_residual_infinite_width_kernel():
    """Issue 19: jax.grad with respect to W_std through finite.infinite_width_kernel(residual=True)
    raised TracerArrayConversionError (the spec went through float() into stax closures). Now the
    residual graph is engine layers holding the spec's arrays: the gradient is finite and equals a
    central difference."""
    from rmtjax import finite
    from rmtjax.activations import Erf
    from rmtjax.kernels import FullyConnected

    x = jax.random.normal(jax.random.key(0), (4, 6))

    def total(w):
        return finite.infinite_width_kernel(x, None, FullyConnected(3, w, 0.1, Erf()), widths=32, residual=True).ntk.sum()

    g = jax.grad(total)(jnp.array(1.4))
    h = 1e-5  # central difference: truncation ~h^2 f^(3) / 6
    fd = (total(1.4 + h) - total(1.4 - h)) / (2 * h)
    assert np.isfinite(float(g))
    np.testing.assert_allclose(g, fd, rtol=1e-7)
