"""The package uses public JAX API only (what broke neural-tangents must never break us)."""

import pathlib
import re
import subprocess
import sys

import rmtjax

PKG = pathlib.Path(rmtjax.__file__).parent
BANNED = re.compile(
    r"(^|[^a-zA-Z_])(from|import) +jax\.(_src|core|util|interpreters|example_libraries|experimental\.ode)([^a-zA-Z_]|$)"
    r"|jax\.(_src|core|util|interpreters|example_libraries)\."
    r"|jax\.random\.KeyArray"
)


def test_no_private_jax_imports():
    offenders = []
    for path in PKG.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if BANNED.search(line):
                offenders.append(f"{path.relative_to(PKG.parent)}:{i}: {line.strip()}")
    assert not offenders, "private JAX API used:\n" + "\n".join(offenders)


def test_banned_pattern_detects_violations():
    assert BANNED.search("from jax.core import Tracer")
    assert BANNED.search("import jax.util")
    assert BANNED.search("x = jax._src.foo")
    assert not BANNED.search("import jax.numpy as jnp")


def test_import_does_not_pull_flax():
    code = "import sys, rmtjax, rmtjax.stax, rmtjax.kernels; print('flax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_init_reexports_explicitly():
    text = (PKG / "__init__.py").read_text()
    for line in text.splitlines():
        if line.startswith("from ") and " import " in line and not line.startswith("from __future__"):
            names = line.split(" import ", 1)[1]
            assert " as " in names, f"re-export without 'as': {line}"
