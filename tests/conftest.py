"""Test configuration: float64, strict promotion, warnings are errors (see pyproject)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("deterministic", derandomize=True, max_examples=25, deadline=None,
                                     print_blob=True)
hypothesis.settings.load_profile("deterministic")

import pytest  # noqa: E402


@pytest.fixture
def float32_mode():
    """Runs the test as a float32 user would: x64 disabled, Python floats become float32."""
    with jax.enable_x64(False):
        yield
