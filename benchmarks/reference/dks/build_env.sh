#!/usr/bin/env bash
# Build the isolated DeepMind `dks` (Deep Kernel Shaping / TAT) oracle environment.
#
# dks 0.1.2 is rmtjax's *oracle* for activation design (issue 13), never a dependency:
# this script builds a separate venv at benchmarks/reference/dks/.venv-dks (git-ignored)
# and nothing else.  Only dks.base (NumPy + autograd + scipy + absl) is used; dks.jax,
# dks.pytorch, dks.tensorflow (and their extras) are not installed.
#
# Pins (all from PyPI, by name; exact versions that were checked to work on Python 3.11):
#   dks==0.1.2        the last release (its wheel ships dks/base/roots_100000.npy, the
#                     cached Gauss-Legendre nodes; without it dks would spend minutes
#                     recomputing them on first use and write them into site-packages)
#   numpy==2.4.6  scipy==1.17.1  autograd==1.9.1   what pip resolved for dks' own
#                     open requirements (numpy>=1.16, scipy>=1.2.1, autograd>=1.3)
#   absl-py==2.5.1    dks.base.activation_transform imports absl.logging, but dks does
#                     not declare absl-py as a requirement, so it must be named here
# scipy note: dks imports `scipy.integrate._quadrature._cached_roots_legendre` (with a
# fallback to the old `scipy.integrate.quadrature` module) and fills its `.cache`; on
# scipy 1.17.1 the first import works and `scipy.integrate.fixed_quad` still calls that
# cached function, so the shipped nodes are really used (the check below asserts it).
#
# Usage:  bash benchmarks/reference/dks/build_env.sh        (idempotent; --force rebuilds)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-dks"
PY="${PYTHON:-python3}"

PINS=("dks==0.1.2" "numpy==2.4.6" "scipy==1.17.1" "autograd==1.9.1" "absl-py==2.5.1")

check() {
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import inspect
import warnings
warnings.filterwarnings("ignore", category=RuntimeWarning)  # autograd overflow on trial points
import numpy, scipy, autograd  # noqa: F401
import scipy.integrate
from scipy.integrate._quadrature import _cached_roots_legendre
from dks.base import activation_transform as at

assert md.version("dks") == "0.1.2", md.version("dks")
# fixed_quad must go through the cache that dks fills (else every integral recomputes
# 1e5 Legendre nodes, minutes each).
assert "_cached_roots_legendre(n)" in inspect.getsource(scipy.integrate.fixed_quad)
at._precompute_or_load_roots(at._QUADRATURE_ORDER)
assert at._QUADRATURE_ORDER in _cached_roots_legendre.cache
# E[x^2] = 1 for x ~ N(0, 1) with dks' own quadrature (it gives 1 + 1.35e-11: every
# dks Gaussian mean carries that relative bias, see README).
m2 = at._estimate_gaussian_mean(lambda x: x**2)
assert abs(m2 - 1.0) < 1e-9, m2
chain = lambda x, r: r(r(r(x)))
p = at._get_activations_params(["tanh"], method="DKS", subnet_max_func=chain)["tanh"]
assert all(numpy.isfinite(float(v)) for v in p.values()), p
print("dks {} (numpy {}, scipy {}, autograd {}, absl-py {}): OK".format(
    md.version("dks"), md.version("numpy"), md.version("scipy"),
    md.version("autograd"), md.version("absl-py")))
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
"$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
check
