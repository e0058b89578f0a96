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

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's compiled programs after each test module. Every compiled XLA CPU executable keeps
    about three memory mappings; a worker that runs the whole suite (tens of thousands of programs,
    the fuzz suite's many shapes and dtypes above all) reached the kernel's limit of 65530 mappings
    (vm.max_map_count) and crashed with a segmentation fault inside XLA's compiler (measured: 15,654
    mappings after 12 minutes of one worker; 3.2 per program, released by jax.clear_caches)."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def float32_mode():
    """Runs the test as a float32 user would: x64 disabled, Python floats become float32."""
    with jax.enable_x64(False):
        yield
