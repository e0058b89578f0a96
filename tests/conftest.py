"""Test configuration: float64, strict promotion, warnings are errors (see pyproject)."""

import os
import shutil
import tempfile

# Two host devices (the sharded code paths run on CPU), and a cheaper XLA CPU backend: compiling is
# most of the suite's time, and these two flags halve it (measured: the gradient of a depth-3 kernel
# compiles in 1.8 s instead of 4.6 s; test_meanfield.py runs in 60 s instead of 90 s) at the cost of
# slower compiled loops, which the suite's small sizes do not notice. They change how XLA emits
# machine code, not what it computes (no fast-math either way). Users' programs (and the
# reproductions the `rmtjax` command runs) keep XLA's defaults.
_FLAGS = ("--xla_force_host_platform_device_count=2", "--xla_cpu_use_fusion_emitters=false",
          "--xla_backend_optimization_level=0")
os.environ.setdefault("XLA_FLAGS", " ".join(_FLAGS))

# One on-disk cache of compiled programs for the whole run, shared by the xdist workers (the
# controller creates it before the workers start; they inherit the variable). Compiling is most of
# the suite's time (measured: 75% of test_meanfield.py is XLA's backend compile), and the same
# program recurs: in other test modules after each module drops its programs (see
# _release_compiled_programs), on the other worker, in the float64 half of every float32
# reproduction. Set RMTJAX_TEST_COMPILATION_CACHE to a directory of your own to keep the cache
# between runs (the edit-test loop then recompiles only what the edit changed); the default is a
# fresh directory per run, removed at the end, so the measured suite time is that of a cold start.
_OWN_CACHE = "RMTJAX_TEST_COMPILATION_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["RMTJAX_TEST_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="rmtjax-test-xla-")
    os.environ["RMTJAX_TEST_COMPILATION_CACHE_OWNER"] = str(os.getpid())

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["RMTJAX_TEST_COMPILATION_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# A bounded cache is an LRU cache whose reads and writes hold a file lock: two workers never read
# an entry the other is half-way through writing.
jax.config.update("jax_compilation_cache_max_size", 4 * 2**30)
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


def pytest_unconfigure(config):
    if os.environ.get("RMTJAX_TEST_COMPILATION_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["RMTJAX_TEST_COMPILATION_CACHE"], ignore_errors=True)


@pytest.fixture
def float32_mode():
    """Runs the test as a float32 user would: x64 disabled, Python floats become float32."""
    with jax.enable_x64(False):
        yield
