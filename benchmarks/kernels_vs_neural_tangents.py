"""rmtjax vs neural-tangents 0.6.5: speed, peak memory and accuracy of NNGP + NTK kernels.

One command (from the repository root, with the project's Python; the NT oracle environment
must exist, see ``benchmarks/reference/README.md``):

    .venv/bin/python benchmarks/kernels_vs_neural_tangents.py            # full grid, 1-2 hours
    .venv/bin/python benchmarks/kernels_vs_neural_tangents.py --quick    # smoke test, minutes

What it measures. Workload: ``X`` = n x 784 Gaussian rows of norm sqrt(784) (``nt_bench.make_data``,
seed 0, identical bits for both libraries); network ``depth`` x (Dense(512, W_std, 0.05) + act) +
Dense(1), NTK parameterization, ``W_std = sqrt(2)`` for ReLU else 1.5; NNGP and NTK of ``X``
with itself (``x2=None``). Every configuration runs in a fresh process per library
(``_rmtjax_bench.py`` with this Python, ``reference/nt_bench.py`` in the NT environment): compile
excluded (one warm-up call), median of ``--repeats`` timed calls (at least 20 for the
millisecond cells, n <= 1000, of the full grid) with ``block_until_ready``, peak RSS of that
process and RSS after imports (their difference is the "working memory"; NT's import alone loads
TensorFlow, ~630 MiB). rmtjax uses one XLA host device per core, NT one device.

1. Grid: n in {500, 1000, 2000, 4000} x depth {1, 5, 20} x {relu, erf, gelu} x {float32, float64}.
2. Accuracy at n = 500: float32 kernels of both libraries and NT's float64 kernels against
   rmtjax's float64 kernels.
3. tanh (float64, n in {200, 500}, depth {5, 20}): rmtjax ``Auto()`` (= ``Mehler(64)``) and
   ``Mehler(32)`` vs NT ``ElementwiseNumerical(tanh, deg=25)`` (deg^2 n^2 memory: at n = 1000 NT
   needs ~25 GB, more than the 24 GB machine, so it is not attempted), errors against rmtjax
   ``Mehler(256)``, which is itself checked against scipy ``dblquad`` (tolerance 1e-12) on a few
   entries (layer by layer, the kernel of one pair of inputs is a chain of 2-d Gaussian
   expectations).

4. Lower bound, per grid cell, measured in the same run on the same machine: before each n, a fresh
   process (``_bounds.py``, one XLA host device per core like the rmtjax worker) measures the
   matmul rate, the write bandwidth and the in-place elementwise bandwidth per dtype (a few
   seconds); the bound of a cell is the Gram product X X^T (2 n^2 d flops) at that matmul rate
   + the NNGP and NTK outputs (2 n^2 entries) at the write bandwidth + ``depth`` x 2 in-place
   passes (read + write) over an n x n array at the in-place bandwidth (the exact model and how
   the rates are measured: ``_bounds.py``'s docstring). The tables give rmtjax's time as a
   multiple of it (``x bound``) beside the speedup over NT, and the 1-minute load average.

A subset (e.g. the cells issue 18 asks about), into files of its own so the full grid's stay:

    .venv/bin/python benchmarks/kernels_vs_neural_tangents.py --n 4000 --depth 1 20 --no-tanh \
        --name kernels_vs_nt_bound

Output (``--out``, default ``benchmarks/results``; ``--quick`` defaults to
``benchmarks/results/quick``; file names from ``--name``, default ``kernels_vs_nt``):
``kernels_vs_nt.jsonl`` (one record per finished run, appended as it finishes; a rerun skips what
is there, ``--fresh`` starts over), ``kernels_vs_nt.json`` (all records, the per-cell bounds,
host, accuracy, summary) and ``kernels_vs_nt.md`` (tables and the verdict against the targets). Saved kernels go to ``<out>/kernels/`` (scratch, git-ignored by its own .gitignore).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
NT_PYTHON = HERE / "reference" / ".venv-nt" / "bin" / "python"
NT_BENCH = HERE / "reference" / "nt_bench.py"
RMT_BENCH = HERE / "_rmtjax_bench.py"
BOUNDS = HERE / "_bounds.py"
D_INPUT = 784  # features of the benchmark's inputs (nt_bench.make_data)

FULL = dict(n=(500, 1000, 2000, 4000), depth=(1, 5, 20), tanh_n=(200, 500), tanh_depth=(5, 20),
            repeats=3, small_repeats=20)
QUICK = dict(n=(200, 500), depth=(1, 5), tanh_n=(200,), tanh_depth=(5,), repeats=2, small_repeats=None)
SMALL_N = 1000  # grid cells with n <= SMALL_N take milliseconds: time small_repeats calls there
ACTIVATIONS = ("relu", "erf", "gelu")
DTYPES = ("float32", "float64")
ACC_N = 500                      # kernels saved (and compared) at this n
REFCHECK = [(0, 0), (0, 1), (3, 7), (11, 150)]  # entries checked against scipy quadrature
W_TANH, B_STD = 1.5, 0.05


def _load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_bounds = _load("_bounds", BOUNDS)  # stdlib only at import: no JAX in this driver process
lower_bound = _bounds.lower_bound
# 1-minute load above which the Markdown says the machine was shared: the load before a run includes
# this benchmark's own previous worker (rmtjax keeps every core busy), so up to about one per core
# is this run itself.
SHARED_LOAD = (os.cpu_count() or 1) + 0.5


def load_nt_bench():
    """``reference/nt_bench.py`` as a module (stdlib only at import; gives ``make_data``)."""
    spec = importlib.util.spec_from_file_location("nt_bench", NT_BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def host_info() -> dict:
    """CPU model, core count, memory (from /proc)."""
    model, mem = "unknown", None
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        with open("/proc/meminfo") as f:
            mem = int(next(l.split()[1] for l in f if l.startswith("MemTotal"))) // 1024
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "mem_total_mib": mem, "python": sys.version.split()[0]}


# --------------------------------------------------------------------------------------------
# Jobs: one subprocess each
# --------------------------------------------------------------------------------------------

def make_jobs(grid: dict, only: str | None) -> list[dict]:
    """Every run of the grid and the tanh section, smallest first; rmtjax and NT interleaved. Before
    each n, one ``_bounds.py`` run per dtype measures the machine's rates for the lower bound."""
    jobs = []
    for n in sorted(grid["n"]):
        for dtype in DTYPES:
            jobs.append(dict(section="bound", lib="bound", variant="rates", n=n, depth=0, activation="-",
                             dtype=dtype, save=False))
        for depth in grid["depth"]:
            for act in ACTIVATIONS:
                for dtype in DTYPES:
                    for lib in ("rmtjax", "nt"):
                        jobs.append(dict(section="grid", lib=lib, variant="default", n=n, depth=depth,
                                         activation=act, dtype=dtype, save=n == ACC_N))
    variants = [("rmtjax", "mehler256"), ("rmtjax", "auto"), ("rmtjax", "mehler32"), ("nt", "deg25")]
    for n in sorted(grid["tanh_n"]):
        for depth in grid["tanh_depth"]:
            for lib, variant in variants:
                jobs.append(dict(section="tanh", lib=lib, variant=variant, n=n, depth=depth,
                                 activation="tanh", dtype="float64", save=True))
    # the reference at depth 1, for the independent check against scipy quadrature
    jobs.append(dict(section="refcheck", lib="rmtjax", variant="mehler256", n=200, depth=1,
                     activation="tanh", dtype="float64", save=True))
    if only:  # the bound goes with rmtjax (same process setup), not with NT
        jobs = [j for j in jobs if j["lib"] == only or (only == "rmtjax" and j["lib"] == "bound")]
    for j in jobs:
        j["key"] = job_key(j)
    return jobs


def job_key(j: dict) -> str:
    return f"{j['section']}|{j['lib']}|{j['variant']}|{j['activation']}|{j['dtype']}|n{j['n']}|d{j['depth']}"


def kernel_dir(out: pathlib.Path, j: dict) -> pathlib.Path:
    return out / "kernels" / f"{j['lib']}-{j['variant']}-{j['activation']}-{j['dtype']}-n{j['n']}-d{j['depth']}"


def command(j: dict, repeats: int, seed: int, out: pathlib.Path) -> tuple[list[str], dict]:
    """The worker command line and its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    common = ["--n", str(j["n"]), "--depth", str(j["depth"]), "--activation", j["activation"],
              "--dtype", j["dtype"], "--repeats", str(repeats), "--seed", str(seed)]
    if j["save"]:
        common += ["--save-kernels", str(kernel_dir(out, j))]
    if j["lib"] == "bound":
        return [sys.executable, str(BOUNDS), "--n", str(j["n"]), "--d", str(D_INPUT), "--dtype", j["dtype"]], env
    if j["lib"] == "nt":
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        extra = ["--deg", "25"] if j["activation"] == "tanh" else []
        return [str(NT_PYTHON), str(NT_BENCH), *common, *extra], env
    extra = {"mehler32": ["--order", "32"], "mehler256": ["--order", "256"]}.get(j["variant"], [])
    return [sys.executable, str(RMT_BENCH), *common, *extra], env  # worker sets XLA_FLAGS itself


def run_job(j: dict, repeats: int, seed: int, out: pathlib.Path, timeout: float) -> dict:
    """Runs one worker; returns its JSON record with the job's fields, or a failure record.

    A worker killed by the kernel (out of memory) or by ``timeout`` prints nothing; its peak RSS
    still comes from ``wait4``.
    """
    cmd, env = command(j, repeats, seed, out)
    load = os.getloadavg()[0]
    t0 = datetime.datetime.now()
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, cwd=ROOT, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: take the worker down too, record nothing
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        lines = [l for l in fout.read().decode(errors="replace").splitlines() if l.startswith("{")]
        stderr_tail = ferr.read().decode(errors="replace")[-1500:]
    wall = (datetime.datetime.now() - t0).total_seconds()
    if lines:
        rec = json.loads(lines[-1])
    else:
        rc = proc.returncode
        why = (f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}")
        if rc == -signal.SIGKILL:
            why += f" (timeout after {timeout:.0f} s)" if wall >= timeout else " (out of memory?)"
        rec = {"ok": False, "error": f"no result line: {why}; stderr: {stderr_tail}",
               "median_s": None, "peak_rss_mib": None}
    rec.update({k: j[k] for k in ("key", "section", "lib", "variant", "n", "depth", "activation", "dtype")})
    rec["child_maxrss_mib"] = round(usage.ru_maxrss / 1024, 1)
    rec["wall_s"] = round(wall, 2)
    rec["loadavg_1min_before"] = load
    rec["started"] = t0.isoformat(timespec="seconds")
    rec["host"] = host_info()
    if rec.get("peak_rss_mib") and rec.get("import_rss_mib"):
        rec["working_rss_mib"] = round(rec["peak_rss_mib"] - rec["import_rss_mib"], 1)
    return rec


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------

def scaled_errors(a: np.ndarray, ref: np.ndarray) -> dict:
    """``max |a - ref| / sqrt(ref_ii ref_jj)`` off the diagonal and on it (plain relative there)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    d = np.sqrt(np.diag(ref))
    e = np.abs(a - ref) / np.outer(d, d)
    off = e[~np.eye(len(e), dtype=bool)]
    return {"offdiag": float(off.max()) if off.size else 0.0, "diag": float(np.diag(e).max())}


def compare(out: pathlib.Path, ja: dict, jref: dict) -> dict | None:
    """Errors of job ``ja``'s saved kernels against ``jref``'s, per kernel; None if missing."""
    da, dr = kernel_dir(out, ja), kernel_dir(out, jref)
    res = {}
    for k in ("nngp", "ntk"):
        fa, fr = da / f"{k}.npy", dr / f"{k}.npy"
        if not (fa.exists() and fr.exists()):
            return None
        res[k] = scaled_errors(np.load(fa), np.load(fr))
    res["max"] = max(v for k in ("nngp", "ntk") for v in res[k].values())
    return res


def grid_accuracy(out: pathlib.Path, grid: dict) -> list[dict]:
    rows = []
    for depth in grid["depth"]:
        for act in ACTIVATIONS:
            def j(lib, dtype):
                return dict(lib=lib, variant="default", activation=act, dtype=dtype, n=ACC_N, depth=depth)
            ref = j("rmtjax", "float64")
            row = {"n": ACC_N, "depth": depth, "activation": act,
                   "rmtjax_f32_vs_rmtjax_f64": compare(out, j("rmtjax", "float32"), ref),
                   "nt_f32_vs_rmtjax_f64": compare(out, j("nt", "float32"), ref),
                   "nt_f64_vs_rmtjax_f64": compare(out, j("nt", "float64"), ref)}
            if any(v is not None for k, v in row.items() if k.endswith("f64")):
                rows.append(row)
    return rows


def tanh_accuracy(out: pathlib.Path, grid: dict) -> list[dict]:
    rows = []
    for n in grid["tanh_n"]:
        for depth in grid["tanh_depth"]:
            def j(lib, variant):
                return dict(lib=lib, variant=variant, activation="tanh", dtype="float64", n=n, depth=depth)
            ref = j("rmtjax", "mehler256")
            rows.append({"n": n, "depth": depth, "reference": "rmtjax Mehler(256)",
                         **{v: compare(out, j(lib, v), ref)
                            for lib, v in (("rmtjax", "auto"), ("rmtjax", "mehler32"), ("nt", "deg25"))}})
    return rows


def quad_kernel_entry(xi: np.ndarray, xj: np.ndarray, depth: int, same: bool) -> tuple[float, float]:
    """NNGP and NTK of the tanh benchmark net for one pair of inputs, by scipy quadrature.

    Per layer the pair's covariance is 2 x 2, and ``E[phi(u) phi(v)]``, ``E[phi'(u) phi'(v)]``
    are 2-d Gaussian integrals (``dblquad``, tolerance 1e-12; 1-d ``quad`` on the diagonal).
    """
    from scipy import integrate

    def g(z):
        return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    phi, dphi = math.tanh, (lambda x: 1.0 - math.tanh(x) ** 2)
    lim, tol = 12.0, dict(epsabs=1e-15, epsrel=1e-12)

    def e1(f, q):
        s = math.sqrt(q)
        return integrate.quad(lambda z: f(s * z) ** 2 * g(z), -lim, lim, limit=200, **tol)[0]

    def e2(f, q1, q2, q12):
        a, b = math.sqrt(q1), math.sqrt(q2)
        r = q12 / (a * b)
        s = math.sqrt(max(1.0 - r * r, 0.0))
        return integrate.dblquad(lambda z2, z1: f(a * z1) * f(b * (r * z1 + s * z2)) * g(z1) * g(z2),
                                 -lim, lim, -lim, lim, **tol)[0]

    d = len(xi)
    w2, b2 = W_TANH**2, B_STD**2
    q1 = w2 * float(xi @ xi) / d + b2
    q2 = w2 * float(xj @ xj) / d + b2
    q12 = q1 if same else w2 * float(xi @ xj) / d + b2
    t1, t2, t12 = q1, q2, q12
    for _ in range(depth):
        if same:
            k, kd = e1(phi, q1), e1(dphi, q1)
            q1 = q2 = q12 = w2 * k + b2
            t1 = t2 = t12 = q12 + w2 * kd * t12
            continue
        k1, kd1, k2, kd2 = e1(phi, q1), e1(dphi, q1), e1(phi, q2), e1(dphi, q2)
        k12, kd12 = e2(phi, q1, q2, q12), e2(dphi, q1, q2, q12)
        n1, n2, n12 = w2 * k1 + b2, w2 * k2 + b2, w2 * k12 + b2
        t1, t2, t12 = n1 + w2 * kd1 * t1, n2 + w2 * kd2 * t2, n12 + w2 * kd12 * t12
        q1, q2, q12 = n1, n2, n12
    return q12, t12


def reference_check(out: pathlib.Path, seed: int) -> dict:
    """rmtjax ``Mehler(256)`` tanh kernels vs scipy quadrature.

    (a) The saved n = 200 reference kernels (depth 1, and depth 5 where the tanh section saved
    it) on the entries ``REFCHECK``. The benchmark rows are nearly orthogonal (input correlations
    ~0.1 at most), so (b) also pairs with input correlation 0.5, 0.9 and 0.99 (row 0 and a mix of it with
    row 1), computed here with ``Mehler(256)``, ``Mehler(64)`` (= ``Auto()``) and ``Mehler(32)``.
    """
    import warnings

    from scipy.integrate import IntegrationWarning

    X = load_nt_bench().make_data(200, seed, "float64")
    entries, synthetic = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IntegrationWarning)
        for depth in (1, 5):
            kd = kernel_dir(out, dict(lib="rmtjax", variant="mehler256", activation="tanh",
                                      dtype="float64", n=200, depth=depth))
            if not (kd / "ntk.npy").exists():
                continue
            nngp, ntk = np.load(kd / "nngp.npy"), np.load(kd / "ntk.npy")
            for i, j in REFCHECK:
                qn, qt = quad_kernel_entry(X[i], X[j], depth, i == j)
                entries.append({"depth": depth, "i": i, "j": j, "nngp_quad": qn, "ntk_quad": qt,
                                "nngp_err": abs(nngp[i, j] - qn) / math.sqrt(nngp[i, i] * nngp[j, j]),
                                "ntk_err": abs(ntk[i, j] - qt) / math.sqrt(ntk[i, i] * ntk[j, j])})
        import jax

        jax.config.update("jax_enable_x64", True)
        import rmtjax
        from rmtjax.activations import Tanh

        xi, xk = X[0], X[1] - (X[1] @ X[0]) / (X[0] @ X[0]) * X[0]
        xk *= np.linalg.norm(xi) / np.linalg.norm(xk)
        for r in (0.5, 0.9, 0.99):
            xj = r * xi + math.sqrt(1 - r * r) * xk
            for depth in (1, 5):
                qn, qt = quad_kernel_entry(xi, xj, depth, False)
                row = {"input_corr": r, "depth": depth}
                for order in (256, 64, 32):
                    k = rmtjax.kernels.kernel(np.stack([xi, xj]), None,
                                              rmtjax.FullyConnected(depth, W_TANH, B_STD, Tanh()),
                                              method=rmtjax.Mehler(order))
                    kn, kt = np.asarray(k.nngp), np.asarray(k.ntk)
                    row[f"mehler{order}_err"] = max(abs(kn[0, 1] - qn) / math.sqrt(kn[0, 0] * kn[1, 1]),
                                                    abs(kt[0, 1] - qt) / math.sqrt(kt[0, 0] * kt[1, 1]))
                row["output_corr"] = float(kn[0, 1] / math.sqrt(kn[0, 0] * kn[1, 1]))
                synthetic.append(row)
    c = X @ X.T / 784
    max_corr = float(np.abs(c[~np.eye(len(c), dtype=bool)]).max())
    errs = [max(e["nngp_err"], e["ntk_err"]) for e in entries] + [r["mehler256_err"] for r in synthetic]
    return {"kind": "refcheck", "key": "refcheck|scipy", "entries": entries, "synthetic": synthetic,
            "max_err": max(errs, default=None),
            "max_offdiag_input_corr_n200": max_corr, "quad_warnings": len(caught),
            "method": "scipy.integrate.dblquad / quad on [-12, 12]^2, epsrel 1e-12, layer by layer"}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def fmt_t(s):
    return "—" if s is None else (f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s")


def fmt_e(x):
    return "—" if x is None else f"{x:.1e}"


def fmt_mem(r):
    if r is None or r.get("working_rss_mib") is None:
        return "—"
    return f"{r['working_rss_mib']:.0f} ({r['peak_rss_mib']:.0f})"


def cell_time(r):
    if r is None:
        return "—"
    why = r.get("error", "?").removeprefix("no result line: ").split(";")[0].split("\n")[0]
    return fmt_t(r["median_s"]) if r.get("ok") else "FAILED (" + why[:50].replace("|", "/") + ")"


def speedup(a, b):
    """NT time / rmtjax time, or None."""
    if a and b and a.get("ok") and b.get("ok") and a["median_s"] and b["median_s"]:
        return b["median_s"] / a["median_s"]
    return None


def report(records: list[dict], out: pathlib.Path, seed: int) -> tuple[dict, str]:
    bench = {r["key"]: r for r in records if r.get("kind", "bench") == "bench" and r.get("section") != "bound"}
    rates = {(r["n"], r["dtype"]): r for r in records if r.get("section") == "bound" and r.get("ok")}
    refcheck = next((r for r in records if r.get("kind") == "refcheck"), None)

    def values(section, field):
        return tuple(sorted({r[field] for r in bench.values() if r["section"] == section}))

    # the tables show whatever the JSONL holds (so --report-only needs no grid options)
    grid = dict(n=values("grid", "n"), depth=values("grid", "depth"),
                tanh_n=values("tanh", "n"), tanh_depth=values("tanh", "depth"))

    def get(section, lib, variant, act, dtype, n, depth):
        return bench.get(job_key(dict(section=section, lib=lib, variant=variant, activation=act,
                                      dtype=dtype, n=n, depth=depth)))

    host = host_info()
    lines = ["# rmtjax vs neural-tangents: NNGP + NTK kernels", "",
             f"Host: {host['cpu']}, {host['cores']} cores, {host['mem_total_mib']} MiB. "
             f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by "
             "`benchmarks/kernels_vs_neural_tangents.py`; timed calls per run: "
             + "/".join(str(x) for x in sorted({r.get("repeats") for r in bench.values() if r.get("repeats")}))
             + ". "
             "Versions: " + ", ".join(sorted({f"{r['lib']} {r.get('version')} (jax {r.get('jax')})"
                                                for r in bench.values() if r.get("version")})) + ".", "",
             "Workload: X = n x 784 (rows of norm sqrt(784), seed "
             f"{seed}), depth x (Dense(512, W_std, 0.05) + act) + Dense(1), NTK parameterization, "
             "W_std = sqrt(2) (ReLU) or 1.5; NNGP + NTK of X with itself. Each cell is a fresh "
             "process per library; time = median of the timed calls after one warm-up "
             "(compilation excluded). rmtjax uses one XLA host device per core; NT one device.", "",
             "Memory: working = peak RSS - RSS after imports, in MiB, peak RSS in parentheses. "
             "NT's import loads TensorFlow (~630 MiB), so compare the working memory.", "",
             "float32 runs have x64 disabled, so rmtjax computes in float32 (with x64 enabled it would "
             "accumulate float32 inputs in float64: slower, more accurate).", ""]
    loads = [r["loadavg_1min_before"] for r in bench.values() if "loadavg_1min_before" in r]
    if loads:
        lines += [f"1-minute load average before each run: {min(loads):.1f} to {max(loads):.1f} "
                  f"(on {host['cores']} cores; it includes this benchmark's own previous worker, up to about "
                  "one per core; a loaded machine inflates every time)."
                  + (f" **This run was on a shared, loaded machine** (other jobs running: load above "
                     f"{SHARED_LOAD:.1f} before {sum(l > SHARED_LOAD for l in loads)} of {len(loads)} runs), so "
                     "its times, NT's and the measured rates behind the bound are all inflated, by "
                     "different amounts; the `load` column is the 1-minute load before rmtjax's run."
                     if max(loads) > SHARED_LOAD else ""), ""]
    if rates:
        lines += ["Lower bound (`bound`, `benchmarks/_bounds.py`), measured in the same run, in a fresh "
                  "process with rmtjax's XLA device setup, once per n and dtype: the Gram product X X^T "
                  f"(2 n^2 d flops, d = {D_INPUT}) at the measured matmul rate + the NNGP and NTK outputs "
                  "(2 n^2 entries) at the measured write bandwidth + the depth recursion as depth x 2 "
                  "in-place passes (read + write) over an n x n array (NNGP and NTK per layer) at the "
                  "measured in-place bandwidth. It leaves out the activations' arithmetic. `x bound` = "
                  "rmtjax time / bound; `speedup` = NT time / rmtjax time. Rates:", "",
                  "| n | dtype | matmul GFLOP/s | write GB/s | in-place GB/s | load |",
                  "|---:|---|---:|---:|---:|---:|"]
        lines += [f"| {n} | {dt} | {r['matmul_flops_per_s'] / 1e9:.0f} | {r['write_bytes_per_s'] / 1e9:.1f} | "
                  f"{r['inplace_bytes_per_s'] / 1e9:.1f} | {r['loadavg_1min_before']:.1f} |"
                  for (n, dt), r in sorted(rates.items())]
        lines.append("")

    def bound_of(n, depth, dtype):
        r = rates.get((n, dtype))
        return None if r is None else lower_bound(r, n, D_INPUT, depth, np.dtype(dtype).itemsize)

    bound_rows = []

    speed, mem_rows, nt_failed = [], [], []  # nt_failed: rmtjax ran, NT did not
    for dtype in DTYPES:
        lines += [f"## {dtype}", "",
                  "| n | depth | act | rmtjax | NT | speedup | bound | x bound | rmtjax MiB | NT MiB | load |",
                  "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in grid["n"]:
            for depth in grid["depth"]:
                for act in ACTIVATIONS:
                    a = get("grid", "rmtjax", "default", act, dtype, n, depth)
                    b = get("grid", "nt", "default", act, dtype, n, depth)
                    if a is None and b is None:
                        continue
                    s = speedup(a, b)
                    if s is None and a and a.get("ok") and b and not b.get("ok"):
                        nt_failed.append((n, depth, act, dtype))
                    else:
                        speed.append((n, depth, act, dtype, s))
                    if a and b and a.get("working_rss_mib") is not None and b.get("working_rss_mib") is not None:
                        mem_rows.append((n, depth, act, dtype, a["working_rss_mib"], b["working_rss_mib"]))
                    lb = bound_of(n, depth, dtype)
                    xb = (a["median_s"] / lb["bound_s"] if lb and a and a.get("ok") and a.get("median_s")
                          else None)
                    bound_rows.append({"n": n, "depth": depth, "activation": act, "dtype": dtype,
                                       "rmtjax_s": a.get("median_s") if a else None,
                                       "nt_s": b.get("median_s") if b else None, "speedup_vs_nt": s,
                                       "rmtjax_over_bound": xb, **(lb or {})})
                    ld = a.get("loadavg_1min_before") if a else None
                    lines.append(f"| {n} | {depth} | {act} | {cell_time(a)} | {cell_time(b)} | "
                                 f"{'—' if s is None else f'{s:.1f}x'} | {fmt_t(lb and lb['bound_s'])} | "
                                 f"{'—' if xb is None else f'{xb:.1f}x'} | {fmt_mem(a)} | {fmt_mem(b)} | "
                                 f"{'—' if ld is None else f'{ld:.1f}'} |")
        lines.append("")

    acc = grid_accuracy(out, grid)
    acc_lines = [f"## Accuracy (n = {ACC_N})", "",
                 "Error = max |K - K_ref| / sqrt(K_ref[i,i] K_ref[j,j]) over NNGP and NTK (the plain "
              "relative error on the diagonal; off the diagonal relative to the entry's scale, since "
              "entries can cross zero). Reference: rmtjax float64.", "",
              "| depth | act | rmtjax f32 | NT f32 | NT f64 off-diag | NT f64 diag |",
              "|---:|---|---:|---:|---:|---:|"]
    for row in acc:
        c = row["nt_f64_vs_rmtjax_f64"]
        off = None if c is None else max(c["nngp"]["offdiag"], c["ntk"]["offdiag"])
        dia = None if c is None else max(c["nngp"]["diag"], c["ntk"]["diag"])
        acc_lines.append(f"| {row['depth']} | {row['activation']} | "
                         f"{fmt_e((row['rmtjax_f32_vs_rmtjax_f64'] or {}).get('max'))} | "
                         f"{fmt_e((row['nt_f32_vs_rmtjax_f64'] or {}).get('max'))} | {fmt_e(off)} | {fmt_e(dia)} |")
    if acc:  # a subset run without n = 500 has no saved kernels to compare
        lines += acc_lines + [""]

    tacc = tanh_accuracy(out, grid)
    tanh_lines = ["## tanh (float64)", "",
                  "rmtjax `Tanh()` with `Auto()` (= `Mehler(64)`) and `Mehler(32)` vs NT "
                  "`ElementwiseNumerical(jnp.tanh, deg=25)` (Gauss-Hermite, deg^2 n^2 memory). Errors (as "
                  "above, max over NNGP and NTK) against rmtjax `Mehler(256)`; speedups are NT time / "
                  "rmtjax time.", "",
                  "| n | depth | rmtjax Auto | rmtjax Mehler(32) | NT deg 25 | speedup Auto | speedup M32 "
                  "| err Auto | err M32 | err NT | rmtjax MiB | NT MiB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tanh_ok = []
    for row in tacc:
        n, depth = row["n"], row["depth"]
        a = get("tanh", "rmtjax", "auto", "tanh", "float64", n, depth)
        m = get("tanh", "rmtjax", "mehler32", "tanh", "float64", n, depth)
        b = get("tanh", "nt", "deg25", "tanh", "float64", n, depth)
        if a is None and b is None:
            continue
        sa, sm = speedup(a, b), speedup(m, b)
        ea, em, eb = ((row[v] or {}).get("max") for v in ("auto", "mehler32", "deg25"))
        tanh_ok.append((n, depth, sa, ea, eb, b))
        tanh_lines.append(f"| {n} | {depth} | {cell_time(a)} | {cell_time(m)} | {cell_time(b)} | "
                          f"{'—' if sa is None else f'{sa:.0f}x'} | {'—' if sm is None else f'{sm:.0f}x'} | "
                          f"{fmt_e(ea)} | {fmt_e(em)} | {fmt_e(eb)} | {fmt_mem(a)} | {fmt_mem(b)} |")
    if tanh_ok:
        lines += tanh_lines + [""]
    if refcheck:
        lines += [f"Reference check: rmtjax `Mehler(256)` vs scipy quadrature (layer by layer, "
                  f"`dblquad`, tolerance 1e-12) on {len(refcheck['entries'])} entries of the saved n = 200 "
                  f"kernels (depths {sorted({e['depth'] for e in refcheck['entries']})}, diagonal "
                  f"included) and on {len(refcheck['synthetic'])} correlated pairs: max error "
                  f"{fmt_e(refcheck['max_err'])}.", "",
                  "The benchmark rows are nearly orthogonal (|input correlation| <= "
                  f"{refcheck['max_offdiag_input_corr_n200']:.2f} at n = 200), where a Mehler "
                  "series converges at once; the correlated pairs below (row 0 and a mix of it with "
                  "row 1) show the truncation error where it matters (error vs quadrature):", "",
                  "| input corr | depth | output corr | Mehler(256) | Mehler(64) = Auto | Mehler(32) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['input_corr']} | {r['depth']} | {r['output_corr']:.4f} | {fmt_e(r['mehler256_err'])} | "
                  f"{fmt_e(r['mehler64_err'])} | {fmt_e(r['mehler32_err'])} |" for r in refcheck["synthetic"]]
        lines.append("")

    # -- verdict against the targets
    def verdict(ok):
        return "met" if ok else "NOT met"

    summary = {}
    big = [(act, dt, s) for (n, d, act, dt, s) in speed if n == 4000 and d == 20 and act in ("relu", "erf")]
    if len(big) == 4 and all(s is not None for *_, s in big):
        summary["5x_at_4000_depth20"] = dict(met=all(s >= 5 for *_, s in big), values=big)
        t1 = (f"{verdict(summary['5x_at_4000_depth20']['met'])}: "
              + ", ".join(f"{a} {d} {s:.1f}x" for a, d, s in big))
    else:
        t1 = "not measured (needs n = 4000, depth 20, relu and erf, both dtypes)"
    known = [x for x in speed if x[4] is not None]
    slow = [x for x in known if x[4] < 1]
    failed = [x for x in speed if x[4] is None]
    if known:
        worst = min(known, key=lambda x: x[4])
        summary["never_slower"] = dict(met=not slow and not failed, min_speedup=worst[4], slower=slow,
                                       nt_failed=nt_failed)
        t2 = (f"{verdict(summary['never_slower']['met'])}: minimum speedup {worst[4]:.2f}x at n={worst[0]}, "
              f"depth {worst[1]}, {worst[2]}, {worst[3]}; slower in {len(slow)} of {len(speed)} cells"
              + (f"; {len(failed)} cells without both times" if failed else "")
              + (f"; NT failed where rmtjax ran in {len(nt_failed)} cells" if nt_failed else ""))
    else:
        t2 = "not measured"
    if mem_rows:
        ratio = max(mem_rows, key=lambda x: x[4] / max(x[5], 1e-9))
        higher = [x for x in mem_rows if x[4] > x[5]]
        summary["memory"] = dict(met=not higher, worst=ratio, higher=higher)
        t3 = (f"{verdict(not higher)}: rmtjax's working memory is above NT's in {len(higher)} of "
              f"{len(mem_rows)} cells; largest ratio {ratio[4]:.0f} / {ratio[5]:.0f} MiB at n={ratio[0]}, "
              f"depth {ratio[1]}, {ratio[2]}, {ratio[3]}")
    else:
        t3 = "not measured"
    if tanh_ok:
        parts, good = [], True
        for n, depth, sa, ea, eb, b in tanh_ok:
            if b is not None and not b.get("ok", False):
                parts.append(f"n={n} d={depth}: NT failed")
                continue
            okc = sa is not None and sa >= 50 and ea is not None and eb is not None and ea <= eb
            good &= okc
            parts.append(f"n={n} d={depth}: {'—' if sa is None else f'{sa:.0f}x'}, err {fmt_e(ea)} vs NT {fmt_e(eb)}")
        summary["tanh_50x"] = dict(met=good, cells=[(n, d, sa, ea, eb, bool(b and b.get("ok")))
                                                    for n, d, sa, ea, eb, b in tanh_ok])
        t4 = f"{verdict(good)}: " + "; ".join(parts)
    else:
        t4 = "not measured"
    relu = [r for r in bound_rows if r["n"] == 4000 and r["depth"] == 20 and r["activation"] == "relu"
            and r["rmtjax_over_bound"] is not None]
    if relu:
        summary["relu_2x_bound"] = dict(met=all(r["rmtjax_over_bound"] <= 2 for r in relu),
                                        values=[(r["dtype"], r["rmtjax_over_bound"]) for r in relu])
        t5 = (f"{verdict(summary['relu_2x_bound']['met'])}: "
              + ", ".join(f"{r['dtype']} {r['rmtjax_over_bound']:.1f}x" for r in relu))
    else:
        t5 = "not measured (needs n = 4000, depth 20, relu, with the bound)"
    def speed_target(key, depth, floor, digits):
        """The speedups over NT at n = 4000 and ``depth``, against ``floor``, into ``summary[key]``."""
        rows = [(act, dt, s) for (n, d, act, dt, s) in speed if n == 4000 and d == depth]
        if not rows or any(s is None for *_, s in rows):
            return f"not measured (needs n = 4000, depth {depth} with both libraries)"
        summary[key] = dict(met=all(s >= floor for *_, s in rows), values=rows)
        return f"{verdict(summary[key]['met'])}: " + ", ".join(f"{a} {d} {s:.{digits}f}x" for a, d, s in rows)

    t6 = speed_target("10x_at_4000_depth20", 20, 10, 1)
    t7 = speed_target("depth1_not_slower_at_4000", 1, 1, 2)
    lines += ["## Targets", "",
              f"* rmtjax >= 5x faster than NT at n = 4000, depth 20, relu and erf, both dtypes: {t1}.",
              f"* Never slower anywhere on the grid: {t2}.",
              f"* Peak working memory no higher: {t3}.",
              f"* tanh >= 50x faster at equal or better accuracy: {t4}.",
              f"* ReLU within 2x of the lower bound at n = 4000, depth 20 (issue 18): {t5}.",
              f"* Every activation >= 10x faster than NT at n = 4000, depth 20, both dtypes (issue 18): {t6}.",
              f"* Depth 1 never slower than NT at n = 4000 (issue 18): {t7}.", ""]
    doc = {"host": host, "seed": seed, "grid": grid, "records": records, "bounds": bound_rows,
           "bound_model": _bounds.MODEL, "accuracy": acc,
           "tanh_accuracy": tacc, "reference_check": refcheck,
           "summary": {k: {"met": v["met"]} | {kk: vv for kk, vv in v.items() if kk != "met"}
                       for k, v in summary.items()}}
    return doc, "\n".join(lines)


# --------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke test: n in {200, 500}, depth {1, 5}, tanh at n=200 depth 5, 2 repeats")
    p.add_argument("--only-rmtjax", action="store_true")
    p.add_argument("--only-nt", action="store_true")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="output folder (default benchmarks/results, or benchmarks/results/quick)")
    p.add_argument("--name", default="kernels_vs_nt",
                   help="base name of the JSONL/JSON/Markdown files in --out (a subset run: pick another name, "
                        "e.g. kernels_vs_nt_bound, so the full grid's files stay)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed calls per run (default 3, quick 2; full grid: at least 20 for n <= {SMALL_N})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run before it is killed")
    p.add_argument("--n", type=int, nargs="+", default=None, help="restrict the grid's n")
    p.add_argument("--depth", type=int, nargs="+", default=None, help="restrict the grid's depths")
    p.add_argument("--no-tanh", action="store_true", help="skip the tanh section")
    p.add_argument("--report-only", action="store_true", help="rebuild the JSON/Markdown from the JSONL")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    grid = dict(QUICK if args.quick else FULL)
    if args.n:
        grid["n"] = tuple(args.n)
    if args.depth:
        grid["depth"] = tuple(args.depth)
    if args.no_tanh:
        grid["tanh_n"], grid["tanh_depth"] = (), ()
    repeats = args.repeats or grid["repeats"]
    out = args.out or (HERE / "results" / "quick" if args.quick else HERE / "results")
    jsonl = out / f"{args.name}.jsonl"
    if args.fresh:
        jsonl.unlink(missing_ok=True)
        if args.name == "kernels_vs_nt":  # the saved kernels belong to the default name's runs
            shutil.rmtree(out / "kernels", ignore_errors=True)
    (out / "kernels").mkdir(parents=True, exist_ok=True)
    (out / "kernels" / ".gitignore").write_text("*\n")
    if not args.only_rmtjax and not NT_PYTHON.exists():
        sys.exit(f"{NT_PYTHON} is missing: run `bash benchmarks/reference/build_env.sh` (or --only-rmtjax)")

    def read_records():
        return [json.loads(l) for l in jsonl.read_text().splitlines() if l.strip()] if jsonl.exists() else []

    only = "rmtjax" if args.only_rmtjax else "nt" if args.only_nt else None
    jobs = [] if args.report_only else make_jobs(grid, only)
    if not grid["tanh_n"]:
        jobs = [j for j in jobs if j["section"] != "refcheck"]
    done = {r["key"] for r in read_records()}
    todo = [j for j in jobs if j["key"] not in done]
    if len(jobs) > len(todo):
        print(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} runs already in {jsonl}", file=sys.stderr)
    with tqdm(todo, unit="run", dynamic_ncols=True, disable=not todo) as bar:
        for j in bar:
            bar.set_postfix_str(j["key"])
            r = repeats
            if j["section"] == "grid" and j["n"] <= SMALL_N and grid["small_repeats"]:
                r = max(r, grid["small_repeats"])
            rec = run_job(j, r, args.seed, out, args.timeout)
            with jsonl.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            if not rec.get("ok"):
                tqdm.write(f"FAILED {j['key']}: {rec.get('error', '')[:300]}")
    if (not args.report_only and grid["tanh_n"] and only != "nt"
            and "refcheck|scipy" not in {r["key"] for r in read_records()}):
        print("checking the Mehler(256) reference against scipy quadrature ...", file=sys.stderr)
        check = reference_check(out, args.seed)
        if check["entries"]:
            with jsonl.open("a") as f:
                f.write(json.dumps(check) + "\n")

    doc, md = report(read_records(), out, args.seed)
    (out / f"{args.name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
