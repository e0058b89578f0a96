"""Settings for the docstring examples of ``rmtjax`` (``--doctest-modules``, see pyproject.toml).

A user pastes an example into a fresh Python session: JAX's defaults, float32 (x64 off) and
standard dtype and rank promotion. Every doctest runs in exactly that mode, whatever the test
session around it has switched on (tests/conftest.py turns on x64 and strict promotion for the
test modules, once imported, for the whole process). ``RMTJAX_DOCTEST_X64=1`` runs the examples
in float64 instead (a check that they hold in both modes; their printed values are rounded to
what float32 delivers, or compared with pytest's ``NUMBER`` option to the digits written).

XLA's backend runs at -O0 (``jax_disable_most_optimizations``) for the examples: they are small, so
compiling is nearly all their time (measured 2026-12-06 on the loaded 2-core machine, the examples of
rmt/_linear_width.py, dynamics/_committee.py and regression.py: 81 s with XLA's defaults, 62 s at
-O0). Their programs are float32 (x64 off), so they do not share compiled programs with the float64
test modules and the -O0 setting cannot leak into a module that opted out of it (tests/conftest.py).

The fixture applies to doctest items only; other tests take their settings from tests/conftest.py.
"""

import os

import jax
import pytest

_X64 = os.environ.get("RMTJAX_DOCTEST_X64", "") not in ("", "0")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """``pytest -n N`` hands whole test files to the workers (``--dist loadfile``) in collection
    order (``--no-loadscope-reorder``; tests/conftest.py orders the files longest first), unless
    ``--dist`` is given. Set here, before pytest-xdist's own hook picks ``--dist load``, and not in
    pyproject's addopts, where ``--dist`` would break ``-p no:xdist``."""
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "no":
        config.option.dist = "loadfile"
        config.option.loadscopereorder = False


@pytest.fixture(autouse=True)
def _doctest_user_session(request):
    if type(request.node).__name__ != "DoctestItem":
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        with (jax.enable_x64(_X64), jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow")):
            yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
