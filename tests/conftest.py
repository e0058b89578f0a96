"""Test configuration: float64, strict promotion, warnings are errors (see pyproject)."""

import os
import shutil
import tempfile

# Two host devices (the sharded code paths run on CPU), and XLA CPU's older (elemental) fusion
# emitter, which compiles faster: compiling is most of the suite's time (measured: 70% of it is
# XLA's backend compile). Measured with it: the gradient of a depth-3 kernel compiles in 3.1 s
# instead of 4.6 s; the quick saad-solla reproduction takes 55 s instead of 69 s (float32: 48 s
# instead of 79 s). It changes how XLA emits machine code, not what it computes; the exactness
# tests of identical inputs run under it (a first try, with LLVM at -O0 as well, exposed a 3e-9
# error at identical inputs, fixed in the kernel engine; -O0 was then dropped: it slowed the
# simulations more than it sped up the compiles). Users' programs keep XLA's defaults.
_FLAGS = ("--xla_force_host_platform_device_count=2", "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("XLA_FLAGS", " ".join(_FLAGS))

# An on-disk cache of compiled programs per xdist worker (the controller creates the directory
# before the workers start; they inherit the variable). Compiling is most of the suite's time
# (measured: 75% of test_meanfield.py is XLA's backend compile), and the same program recurs in
# later test modules after each module drops its compiled programs (see
# _release_compiled_programs). One directory per worker: JAX's cache writes entries in place, and
# only its size-bounded mode locks, which rescans the whole directory on every write. Set
# RMTJAX_TEST_COMPILATION_CACHE to a directory of your own to keep the cache between runs (the
# edit-test loop then recompiles only what the edit changed); the default is a fresh directory,
# removed at the end, so the measured suite time is that of a cold start.
_OWN_CACHE = "RMTJAX_TEST_COMPILATION_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["RMTJAX_TEST_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="rmtjax-test-xla-")
    os.environ["RMTJAX_TEST_COMPILATION_CACHE_OWNER"] = str(os.getpid())

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(os.environ["RMTJAX_TEST_COMPILATION_CACHE"],
                                                            os.environ.get("PYTEST_XDIST_WORKER", "main")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
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
