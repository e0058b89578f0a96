#!/usr/bin/env bash
# Build the isolated neural-tangents oracle environment.
#
# neural-tangents 0.6.5 (the last release, Dec 2023) does not import on current JAX
# (it uses jax._src / jax.core internals that were removed).  It is our *oracle*,
# never a dependency of rmtjax: this script builds a separate venv with the last JAX
# it works with, at benchmarks/reference/.venv-nt (git-ignored).
#
# Pins (all from PyPI, by name):
#   jax==0.4.23 jaxlib==0.4.23   the JAX of NT 0.6.5's release (Dec 2023); newer JAX breaks it
#   numpy<2                      jax 0.4.23 was built against numpy 1.x
#   scipy<1.13                   jax 0.4.23 imports scipy.linalg.tril/triu (removed in 1.13)
#   neural-tangents==0.6.5
# NT's own requirements (frozendict, tensorflow, tf2jax) come in as pip resolves them.
# No further pins were needed: on Python 3.11 pip resolved (when this was written)
# tensorflow 2.21.0, tf2jax 0.3.6, frozendict 2.5.1, numpy 1.26.4, scipy 1.12.0,
# ml_dtypes 0.5.4, keras 3.15.1; `import neural_tangents` imports tensorflow (through
# tf2jax) and works with these.  The venv is ~2.6 GB, mostly tensorflow.  Add pins to
# EXTRA_PINS if a future resolution breaks the import.
#
# Usage:  bash benchmarks/reference/build_env.sh        (idempotent; --force rebuilds)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-nt"
PY="${PYTHON:-python3}"

PINS=("jax==0.4.23" "jaxlib==0.4.23" "numpy<2" "scipy<1.13" "neural-tangents==0.6.5")
EXTRA_PINS=()

check() {
  TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" - <<'PY'
import jax, neural_tangents as nt
from neural_tangents import stax
assert jax.__version__ == "0.4.23", jax.__version__
assert nt.__version__ == "0.6.5", nt.__version__
_, _, kernel_fn = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))
import numpy as np
k = kernel_fn(np.ones((2, 3)), None, "nngp")
assert np.all(np.isfinite(k))
print(f"neural_tangents {nt.__version__} on jax {jax.__version__}: OK")
PY
}

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$VENV"
fi

if [[ -x "$VENV/bin/python" ]] && check 2>/dev/null; then
  echo "already built: $VENV"
  exit 0
fi

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${PINS[@]}" ${EXTRA_PINS[@]+"${EXTRA_PINS[@]}"}
check
