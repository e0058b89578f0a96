"""Test configuration: float64, strict promotion, warnings are errors (see pyproject)."""

import os

# Two host devices (the sharded code paths run on CPU), and XLA CPU's older (elemental) fusion
# emitter, which compiles faster. Compiling is most of the suite's time (measured 2026-12-05: 3,859
# of 5,502 s of test time is XLA's backend compile). Measured with the flag on a quiet machine: the
# gradient of a depth-3 kernel compiles in 3.1 s instead of 4.6 s; test_meanfield.py and the quick
# saad-solla reproduction together run in 121 s. The whole suite went from 2,810 s to 1,963 s with
# this flag and tests/_gradcheck.py together. It changes how XLA emits machine code, not what it
# computes. Users' programs keep XLA's defaults.
#
# XLA's backend at optimization level 1 (not its default 2) for the modules that opt out of -O0 (see
# ``_ALL_OPTIMIZED`` below): LLVM at -O1 vectorizes the long elementwise loops those reproductions
# run, at less compile time. Measured 2026-12-06 on the quiet 2-core machine, the four opted-out
# modules (saad-solla, neural-collapse, fan-wang, dynamical-isometry) with pytest -n 2: 350 -> 300 s
# of test time; the quick fan-wang run alone 28.5 -> 24.6 s (backend compile 13.9 -> 10.2 s, run
# time unchanged; -O0: 39 s, of which 29 s running unvectorized code).
#
# One LLVM module per program (--xla_cpu_parallel_codegen_split_count=1; XLA splits it into parts
# compiled on parallel threads otherwise, which on two busy cores only adds work): measured
# 2026-12-07 on the quiet 2-core machine, test_finite.py and test_hermite.py in one process 77-83 ->
# 60-66 s (backend compile 35-38 -> 26-29 s); with pytest -n 2, alternating runs of test_activations,
# test_rmt_free and test_meanfield 97.6, 98.8 -> 93.9, 88.9 s (4-10%). On the whole suite the gain
# is within the run-to-run variation: a local run 1,461 -> 1,292 s, but `.ci/run` on a fresh clone
# 1,327 s against 1,297 and 1,322 s in earlier sessions without the flag. It
# changes the machine code's instruction order, not what it computes: two tests whose tolerances
# were a lucky measurement of rounding failed with it and were fixed (a float32 eigenvalue compared
# relative to itself instead of to the Jacobian's norm; a solver residual of 1e-18 compared relatively
# in the fuzz suite's eager-vs-jit check).
_FLAGS = ("--xla_force_host_platform_device_count=2", "--xla_cpu_use_fusion_emitters=false",
          "--xla_backend_optimization_level=1", "--xla_cpu_parallel_codegen_split_count=1")
os.environ.setdefault("XLA_FLAGS", " ".join(_FLAGS))

import jax  # noqa: E402
import threadpoolctl  # noqa: E402

# One BLAS thread per process: pytest -n 2 runs two workers on two cores, and numpy's OpenBLAS
# starts a thread per core in each (numpy is already imported by pytest's plugins, so the
# environment variable would come too late). Measured on the loaded 2-core machine: 100 draws of the
# Gram Monte-Carlo step 27.8 s with two threads per process, 0.85 s with one; a batched 128 x 128
# inverse 13.9 s and 1.7 s.
threadpoolctl.threadpool_limits(1, user_api="blas")

# For the edit-test loop: RMTJAX_TEST_COMPILATION_CACHE=DIR keeps compiled programs on disk between
# runs (one subdirectory per xdist worker: JAX writes cache entries in place, without a lock), so
# a rerun recompiles only what an edit changed (measured: test_meanfield.py 31 s with a warm cache,
# 85 s cold). Off by default: a fresh run gains nothing measurable from it (93.8 s with it, 93.2 s
# without, test_meanfield.py and test_hermite.py).
if os.environ.get("RMTJAX_TEST_COMPILATION_CACHE"):
    jax.config.update("jax_compilation_cache_dir", os.path.join(os.environ["RMTJAX_TEST_COMPILATION_CACHE"],
                                                                os.environ.get("PYTEST_XDIST_WORKER", "main")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# XLA's backend at -O0 (jax_disable_most_optimizations: LLVM without its expensive passes) for every
# test module except those that set ``XLA_OPTIMIZED = True`` (the reproductions whose run time is
# long loops of elementwise code, which -O0 leaves unvectorized). Measured 2026-12-06, full suite on
# the 2-core machine: backend compile 2,149 -> 885 s of test time, wall 1,799 -> 1,350 s; the four
# opted-out modules ran 1.1-2x slower under -O0 (neural-collapse 100 -> 200 s). -O0 changes no
# formula, only instruction order, so it doubles as a check that results do not hinge on how XLA
# orders floating-point operations (it found the linear-width fold tolerance and an ODE tolerance
# that did). RMTJAX_TEST_XLA_OPTIMIZED=1 runs every module with XLA's defaults.
_ALL_OPTIMIZED = os.environ.get("RMTJAX_TEST_XLA_OPTIMIZED", "") not in ("", "0")
_O0 = [False]  # the module's setting
jax.config.update("jax_numpy_dtype_promotion", "strict")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("deterministic", derandomize=True, max_examples=25, deadline=None,
                                     print_blob=True)
hypothesis.settings.load_profile("deterministic")

import gc  # noqa: E402

# Python's cyclic garbage collector less often: its default thresholds (700, 10, 10) start a pass every
# 700 net allocations, and JAX's tracing and lowering allocate millions of small objects, so that
# the passes took 5-7% of the suite's time (perf, 2026-12-07: gc_collect_main 5.3% of the samples of
# test_hermite.py). Measured 2026-12-07 on the 2-core machine, test_hermite.py and test_finite_width.py
# in one process: 7,714 passes and 13.7 s of collecting, 184.5 s in all, at the defaults; 181 passes
# and 3.5 s, 171.1 s in all, at (20000, 20, 20), at the same peak memory (1.56 GB for test_hermite.py).
# Cycles still go: young ones at every 20,000 allocations, all of them after each module (below).
gc.set_threshold(20_000, 20, 20)

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


@pytest.fixture(autouse=True, scope="module")
def _xla_optimization_level(request):
    """-O0 unless the module sets ``XLA_OPTIMIZED = True`` (see the comment above ``_ALL_OPTIMIZED``). Module-scoped
    and autouse, so it is in force before the module's own module-scoped fixtures compile anything."""
    optimized = _ALL_OPTIMIZED or bool(getattr(request.module, "XLA_OPTIMIZED", False))
    _O0[0] = not optimized
    jax.config.update("jax_disable_most_optimizations", _O0[0])
    yield
    _O0[0] = False
    jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture
def xla_optimized():
    """XLA's default optimizations for one test whose result is not part of the -O0 check (see its
    comment). The setting is not part of JAX's cache keys, so the programs compiled so far go first."""
    jax.clear_caches()
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.clear_caches()
    jax.config.update("jax_disable_most_optimizations", _O0[0])


@pytest.fixture
def float32_mode():
    """Runs the test as a float32 user would: x64 disabled, Python floats become float32."""
    with jax.enable_x64(False):
        yield


# --------------------------------------------------------------------------------------------
# The edit-test tier: `pytest -m "not slow"` leaves out the tests marked slow by hand (the quick
# reproductions, the notebooks, the long Monte-Carlo checks) and every test whose measured time in
# tests/durations.json is above SLOW_SECONDS. Most tests cost about a second of JAX tracing and XLA
# compiling, so a tier of a few hand-picked exclusions could not reach two minutes (measured
# 2026-12-06: 1,350 of the suite's 2,177 test-seconds were in tests not marked slow). The file
# records per-test seconds (setup, call and teardown) of a full `pytest -n 2` run on the 2-core
# machine; `python -m pytest -n 2 --record-durations` rewrites it. A test missing from it (a new
# one) is in the fast tier until the file is refreshed. The full suite runs everything regardless.
# SLOW_SECONDS is 0.3, not 0.6 (measured 2026-12-07 with the file refreshed on the quiet machine): at
# 0.6 the fast tier took 163 s (1,161 tests), at 0.3 100 s (891 tests). The tier's time is more than
# its recorded test times (60 s at 0.3), because a fast test still sets up the module fixtures and
# compiles the programs that the full run charged to the slow tests of its module.
# --------------------------------------------------------------------------------------------

import json  # noqa: E402
import pathlib  # noqa: E402

DURATIONS = pathlib.Path(__file__).with_name("durations.json")
SLOW_SECONDS = 0.3
_RECORDED: dict[str, float] = {}


def pytest_addoption(parser):
    parser.addoption("--record-durations", action="store_true", default=False,
                     help=f"write each test's seconds (setup + call + teardown) to {DURATIONS.name}")


# Test files longest first, by their recorded seconds (a file without a record counts as
# UNRECORDED_FILE_SECONDS). `pytest -n 2` hands whole files to the xdist workers (`--dist
# loadfile`, set by the root conftest.py) in this order (`--no-loadscope-reorder`): a file's module fixtures and compiled programs
# are then built by one worker, not by each worker that runs some of its tests, and the longest files
# start first, so that the two workers finish together (longest-processing-time-first scheduling).
UNRECORDED_FILE_SECONDS = 30.0


def pytest_collection_modifyitems(config, items):
    durations = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    files: dict[str, float] = {}
    for item in items:
        if durations.get(item.nodeid, 0.0) > SLOW_SECONDS:
            item.add_marker(pytest.mark.slow)
        file = item.nodeid.split("::")[0]
        files[file] = files.get(file, 0.0) + durations.get(item.nodeid, 0.0)
    recorded = {k.split("::")[0] for k in durations}
    seconds = {f: (s if f in recorded else UNRECORDED_FILE_SECONDS) for f, s in files.items()}
    order = {item.nodeid: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-seconds[item.nodeid.split("::")[0]], order[item.nodeid]))


def pytest_runtest_logreport(report):
    _RECORDED[report.nodeid] = _RECORDED.get(report.nodeid, 0.0) + report.duration


# RMTJAX_TEST_PROFILE=DIR: where each test's time goes. Every worker appends one JSON line per test
# to DIR/<worker>.jsonl: its wall seconds (setup, call and teardown), JAX's compile events summed
# over them ([seconds, count] of tracing, lowering to MLIR and XLA's backend compile) and the number
# of programs compiled per function name (a name compiled again and again within one test is
# usually a cache miss: a lax.cond bound outside jit with closures for branches recompiles on every
# call). Measured with
# it 2026-12-07, full suite on the quiet 2-core machine: 2,883 test-seconds, of which tracing 509 s,
# lowering 380 s and backend compile 1,316 s (21,275 programs). Keeping compiled programs from one
# test module to the next (released only every 3,000 programs, not after every module) saved 4.5% of
# the compiles and 2% of the time over the first 543 tests, within the run-to-run noise: the modules
# share few programs. Off by default.
_PROFILE_DIR = os.environ.get("RMTJAX_TEST_PROFILE")
_PROFILE: dict[str, list[float]] = {}
if _PROFILE_DIR:
    import time

    import jax.monitoring  # noqa: E402

    _PROGRAMS: dict[str, int] = {}

    def _on_duration(event, seconds, fun_name=None, **_):
        if event.startswith("/jax/core/compile/"):
            entry = _PROFILE.setdefault(event.rsplit("/", 1)[1], [0.0, 0])
            entry[0] += seconds
            entry[1] += 1
            if event.endswith("backend_compile_duration"):
                _PROGRAMS[str(fun_name)] = _PROGRAMS.get(str(fun_name), 0) + 1

    jax.monitoring.register_event_duration_secs_listener(_on_duration)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        _PROFILE.clear()
        _PROGRAMS.clear()
        start = time.perf_counter()
        try:
            return (yield)
        finally:
            row = {"test": item.nodeid, "seconds": round(time.perf_counter() - start, 3),
                   **{k: [round(v[0], 3), v[1]] for k, v in _PROFILE.items()},
                   "programs": dict(sorted(_PROGRAMS.items(), key=lambda kv: -kv[1]))}
            os.makedirs(_PROFILE_DIR, exist_ok=True)
            with open(os.path.join(_PROFILE_DIR, f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption("--record-durations") and not hasattr(session.config, "workerinput"):
        old = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
        if not (session.config.option.keyword or session.config.option.markexpr):
            # every test of the files that ran has a report: entries of those files without one are
            # tests renamed or removed since
            ran = {k.split("::")[0] for k in _RECORDED}
            old = {k: v for k, v in old.items() if k.split("::")[0] not in ran}
        old.update({k: round(v, 2) for k, v in _RECORDED.items()})
        DURATIONS.write_text(json.dumps(dict(sorted(old.items())), indent=0) + "\n")
