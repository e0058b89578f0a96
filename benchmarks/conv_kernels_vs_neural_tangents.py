"""rmtjax vs neural-tangents 0.6.5 on convolutional kernels: speed, peak memory and agreement of
NNGP + NTK of Myrtle-5 and a depth-10 CNTK with global average pooling (issue 16, part 5).

One command (repository root, the project's Python; the NT environment must exist, see
``benchmarks/reference/README.md``):

    .venv/bin/python benchmarks/conv_kernels_vs_neural_tangents.py            # full grid
    .venv/bin/python benchmarks/conv_kernels_vs_neural_tangents.py --quick    # smoke test, ~2 minutes

Workload. Images: scikit-learn's 8 x 8 digits (``rmtjax.data.digits``) and the MNIST 5k subset
(``rmtjax.data.mnist``, 28 x 28), the first ``n`` training images of the seed-0 stratified split,
each standardized over its pixels (NT's convention), as ``(n, H, W, 1)`` float64. Myrtle-5 on
MNIST: the 28 x 28 images are zero-padded to 32 x 32 (2 pixels per side), the CIFAR size of NT's
``MyrtleNetwork``, whose pools then run 32 -> 16 -> 8 -> 4 -> 2 -> 1 unchanged; the CNTK runs on
28 x 28. Networks: ``reference/nt_conv_bench.layers`` (one list builds both libraries' networks
from their ``stax`` modules). Kernels: ``kernel_fn(X, None, ('nngp', 'ntk'))`` in float64.

Every run is a fresh process (its peak RSS is the cell's memory): rmtjax (this file with
``--worker``, ``rmtjax.stax`` facade, one XLA host device per core), NT plain
(``jax.jit(kernel_fn)``, one device) and NT batched (``nt.batch(kernel_fn, batch_size=b)``,
pmapped over one host device per core; ``b`` the largest divisor of ``n / cores`` whose
``b x b`` block of full pixel-pair covariances is at most ``--nt-block-mib``). Compilation (the
first call) is reported separately from the median of ``--repeats`` further calls. Each run has a
wall-clock limit (``--timeout``) and an address-space limit (``--mem-limit-gib``, ``RLIMIT_AS``,
so an out-of-memory run fails inside its own process instead of waking the kernel's OOM killer on a
shared machine); a run without a result line was killed and is recorded as such.

Agreement: both libraries' kernels are saved and compared in every cell where both ran, as
``max |K_rmt - K_nt| / sqrt(K_nt[i, i] K_nt[j, j])`` (NNGP and NTK, the max over entries); the
bar is 1e-10.

Output (``--out``, default ``benchmarks/results``, ``--quick``: ``benchmarks/results/quick``):
``conv_kernels_vs_nt.jsonl`` (one record per run, appended; a rerun skips what is there, ``--fresh``
starts over), ``conv_kernels_vs_nt.json`` and ``conv_kernels_vs_nt.md``. Inputs and saved kernels go
to ``<out>/conv_kernels/`` (scratch, git-ignored).
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # before JAX is imported
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={os.cpu_count() or 1}").strip()

import argparse
import datetime
import importlib.util
import json
import math
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
NT_PYTHON = HERE / "reference" / ".venv-nt" / "bin" / "python"
NT_CONV_BENCH = HERE / "reference" / "nt_conv_bench.py"
TOL = 1e-10

# (arch, dataset) -> sizes n. 28 x 28 full pixel-pair covariances cost 614,656 entries per pair of
# images (32 x 32: 1,048,576) per array per layer: small n there.
# Sizes chosen so that every run finishes in a few minutes on a shared 2-core machine (measured:
# rmtjax 9 s per call for Myrtle-5 at n = 100 on 8 x 8, 44 s for the CNTK).
FULL = {("myrtle5", "digits8"): (50, 100, 200),
        ("cntk10_gap", "digits8"): (25, 50, 100),
        ("myrtle5", "mnist32"): (4, 8, 16),
        ("cntk10_gap", "mnist28"): (4, 8)}
QUICK = {("myrtle5", "digits8"): (8,), ("cntk10_gap", "digits8"): (8,)}
SMOKE = {("smoke", "digits8"): (3,)}  # tests/test_benchmark_conv_kernels.py
# NT batched runs everywhere on the MNIST sizes, only at the largest n on the 8 x 8 digits (where
# NT plain fits in memory; one batched run there shows which NT is faster).
BATCH_EVERYWHERE = ("mnist28", "mnist32")
VARIANTS = ("rmtjax", "nt_plain", "nt_batch")


def _load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


nt_conv_bench = _load("nt_conv_bench", NT_CONV_BENCH)  # stdlib only at import
nt_bench = nt_conv_bench.nt_bench


def make_images(dataset: str, n: int, seed: int = 0) -> np.ndarray:
    """The first ``n`` training images of ``dataset`` as ``(n, H, W, 1)`` float64 (see the module
    docstring); ``mnist32`` is ``mnist28`` zero-padded to 32 x 32."""
    import jax

    jax.config.update("jax_enable_x64", True)  # standardized in float64
    from rmtjax import data

    if dataset == "digits8":
        x = np.asarray(data.digits(n, 1797 - n, seed=seed, dtype=np.float64).x_train).reshape(n, 8, 8, 1)
    elif dataset in ("mnist28", "mnist32"):
        x = np.asarray(data.mnist(n, 100, seed=seed, dtype=np.float64).x_train).reshape(n, 28, 28, 1)
        if dataset == "mnist32":
            x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    return np.ascontiguousarray(x, np.float64)


# --------------------------------------------------------------------------------------------
# The rmtjax worker (a fresh process per run, like nt_conv_bench.py)
# --------------------------------------------------------------------------------------------

def worker(argv) -> int:
    """rmtjax's twin of ``nt_conv_bench.py``: same options (no batching), one JSON line."""
    args = nt_conv_bench.common_parser("rmtjax worker").parse_args(argv)
    record = {"lib": "rmtjax", "version": None, "jax": None, "arch": args.arch, "data": str(args.data),
              "repeats": args.repeats, "dtype": "float64", "times_s": [], "median_s": None, "compile_s": None}

    def run(args, record):
        import jax

        jax.config.update("jax_enable_x64", True)
        import rmtjax
        from rmtjax import stax

        record["version"] = rmtjax.__version__
        record["jax"] = jax.__version__
        record["device"] = f"{len(jax.devices())} x {jax.devices()[0]}"
        record["import_rss_mib"] = round(nt_bench._rss_mib(), 1)
        x = np.load(args.data)
        record["shape"] = list(x.shape)
        X = jax.device_put(x)
        _, _, kernel_fn = nt_conv_bench.build(stax, args.arch, x.shape[1])
        t0 = time.perf_counter()
        out = jax.block_until_ready(kernel_fn(X, None, ("nngp", "ntk")))
        record["compile_s"] = time.perf_counter() - t0
        if str(out[0].dtype) != "float64" or out[0].shape != (len(x), len(x)):
            raise TypeError(f"kernel dtype/shape {out[0].dtype} {out[0].shape}")
        nt_bench.time_calls(lambda: kernel_fn(X, None, ("nngp", "ntk")), out, args, record)

    return nt_bench.run_and_report(run, args, record)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def host_info() -> dict:
    model, mem = "unknown", None
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
        meminfo = pathlib.Path("/proc/meminfo").read_text().splitlines()
        model = next(l.split(":", 1)[1].strip() for l in cpuinfo if l.startswith("model name"))
        mem = int(next(l.split()[1] for l in meminfo if l.startswith("MemTotal"))) // 1024
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "mem_total_mib": mem, "python": sys.version.split()[0]}


def nt_batch_size(n: int, side: int, devices: int, block_mib: float) -> int:
    """The largest ``b`` dividing ``n / devices`` with a ``b x b`` block of full pixel-pair
    covariances (float64) of at most ``block_mib``."""
    per_pair = 8 * side**4 / 2**20
    m = n // devices if n % devices == 0 else n
    best = 1
    for b in range(1, m + 1):
        if m % b == 0 and b * b * per_pair <= block_mib:
            best = b
    return best


def cell_key(arch, dataset, n, variant):
    return f"{arch}|{dataset}|n{n}|{variant}"


def run_job(cmd, env, timeout: float, mem_limit: int | None) -> dict:
    """Runs one worker; its JSON record, or a failure record (killed: timeout or out of memory)."""
    if mem_limit:  # prlimit, not a preexec_fn: no Python code between fork and exec in a process with JAX threads
        cmd = ["prlimit", f"--as={mem_limit}", "--", *cmd]
    load = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, cwd=ROOT, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        rc = proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        lines = [l for l in fout.read().decode(errors="replace").splitlines() if l.startswith("{")]
        stderr_tail = ferr.read().decode(errors="replace")[-1500:]
    wall = time.perf_counter() - t0
    if lines:
        rec = json.loads(lines[-1])
    else:
        why = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        if rc == -signal.SIGKILL:
            why += f" (timeout after {timeout:.0f} s)" if wall >= timeout - 1 else " (out of memory?)"
        rec = {"ok": False, "error": f"no result line: {why}; stderr: {stderr_tail}", "median_s": None,
               "peak_rss_mib": None}
    rec["child_maxrss_mib"] = round(usage.ru_maxrss / 1024, 1)
    rec["wall_s"] = round(wall, 2)
    rec["timeout_s"] = timeout
    rec["loadavg_before"] = load
    rec["loadavg_after"] = os.getloadavg()
    return rec


def is_oom(rec: dict) -> bool:
    err = (rec.get("error") or "").lower()
    return not rec.get("ok") and any(s in err for s in ("memory", "resource_exhausted", "bad_alloc",
                                                        "out of memory", "cannot allocate"))


def is_timeout(rec: dict) -> bool:
    return not rec.get("ok") and "timeout after" in (rec.get("error") or "")


def agreement(dir_a: pathlib.Path, dir_b: pathlib.Path) -> dict | None:
    """Errors of ``a`` (rmtjax's kernels) against ``b`` (NT's), ``|a - b| / sqrt(b_ii b_jj)``: the max
    over the NNGP, over the NTK off the diagonal and on it (the pairs of an image with itself);
    None if a file is missing."""
    res = {}
    for k in ("nngp", "ntk"):
        fa, fb = dir_a / f"{k}.npy", dir_b / f"{k}.npy"
        if not (fa.exists() and fb.exists()):
            return None
        a, b = np.load(fa), np.load(fb)
        d = np.sqrt(np.abs(np.diag(b)))
        e = np.abs(a - b) / np.outer(d, d)
        off = np.where(np.eye(len(e), dtype=bool), -1.0, e)
        res[f"{k}_offdiag"] = float(off.max()) if len(e) > 1 else 0.0
        res[f"{k}_worst"] = [int(i) for i in np.unravel_index(np.argmax(off), off.shape)]
        res[f"{k}_diag"] = float(np.diag(e).max())
    vals = {k: v for k, v in res.items() if not k.endswith("_worst")}
    res["max"] = max(vals.values())
    res["max_but_ntk_diag"] = max(v for k, v in vals.items() if k != "ntk_diag")
    return res


def reference_kernel(xa: np.ndarray, xb: np.ndarray | None, arch: str) -> tuple[float, float]:
    """NNGP and NTK of two images ``xa``, ``xb`` (``(H, W, 1)``; ``xb=None``: ``xa`` with itself)
    by a plain NumPy recursion on their ``(H, W, H, W)`` pixel-pair covariances (independent of
    both libraries): SAME 3 x 3 conv ``w2/9 sum_a Sigma(p + a, p' + a) + b2``, ReLU by the
    arc-cosine formulas ``(sqrt(q q' - S^2) + (pi - theta) S) / 2 pi``,
    ``theta = atan2(sqrt(q q' - S^2), S)`` with the root taken as ``sqrt((r - S)(r + S))``,
    ``r = sqrt(q q')`` (exactly 0 where two pixels' patches are identical) and the correlation set
    to exactly 1 for a pixel of an image with itself; 2 x 2 average pools, Flatten (mean of the
    pixel diagonal) or global average pooling (mean of all), Dense."""
    H = xa.shape[0]
    w2, b2 = nt_conv_bench.W_STD**2, nt_conv_bench.B_STD**2
    va = xa[..., 0].astype(np.float64)
    vb = None if xb is None else xb[..., 0].astype(np.float64)
    S11 = np.einsum("hw,HW->hwHW", va, va)
    S22 = None if vb is None else np.einsum("hw,HW->hwHW", vb, vb)
    S12 = S11 if vb is None else np.einsum("hw,HW->hwHW", va, vb)
    T = np.zeros_like(S12)

    def conv(M):
        h, w = M.shape[:2]
        P = np.pad(M, 1)
        out = np.zeros_like(M)
        for a in range(3):
            for b in range(3):
                out += P[a:a + h, b:b + w, a:a + h, b:b + w]
        return out / 9.0

    def relu(S, q1, q2, same):
        h, w = S.shape[:2]
        norm = np.sqrt(q1[:, :, None, None] * q2[None, None])
        if same:  # a pixel of an image with itself: correlation exactly 1
            S = np.where(np.eye(h * w, dtype=bool).reshape(h, w, h, w), norm, S)
        gap = np.sqrt(np.maximum((norm - S) * (norm + S), 0.0))
        th = np.arctan2(gap, S)
        return (gap + (np.pi - th) * S) / (2 * np.pi), (np.pi - th) / (2 * np.pi)

    def pool(M):
        h, w = M.shape[:2]
        return M.reshape(h // 2, 2, w // 2, 2, h // 2, 2, w // 2, 2).mean(axis=(1, 3, 5, 7))

    def diag(M):
        return np.einsum("hwhw->hw", M)

    for name, _, _ in nt_conv_bench.layers(arch, H):
        if name == "Conv":
            S11 = w2 * conv(S11) + b2
            S22 = None if S22 is None else w2 * conv(S22) + b2
            S12 = S11 if vb is None else w2 * conv(S12) + b2
            T = S12 + w2 * conv(T)
        elif name == "Relu":
            q1 = diag(S11)
            q2 = q1 if S22 is None else diag(S22)
            S12n, kdot = relu(S12, q1, q2, vb is None)
            T = T * kdot
            if vb is None:
                S11 = S12 = S12n
            else:
                S11, S22, S12 = relu(S11, q1, q1, True)[0], relu(S22, q2, q2, True)[0], S12n
        elif name == "AvgPool":
            S11, S12, T = pool(S11), pool(S12), pool(T)
            S22 = None if S22 is None else pool(S22)
        elif name in ("Flatten", "GlobalAvgPool"):
            red = (lambda M: diag(M).mean()) if name == "Flatten" else (lambda M: M.mean())
            S12, T = red(S12), red(T)
            S11 = S22 = None
        elif name == "Dense":
            S12 = w2 * S12 + b2
            T = S12 + w2 * T
    return float(S12), float(T)


def reference_self_kernel(x: np.ndarray, arch: str) -> tuple[float, float]:
    """:func:`reference_kernel` of one image with itself."""
    return reference_kernel(x, None, arch)


def reference_check(data: pathlib.Path, kdir: pathlib.Path, arch: str, count: int = 3,
                    extra: tuple = (), cache: dict | None = None) -> dict | None:
    """Errors of the kernels saved in ``kdir`` against :func:`reference_kernel`: relative on the
    diagonal (the first ``count`` images with themselves), ``|K - R| / sqrt(R_ii R_jj)`` on the
    pairs of those images and on ``extra`` pairs ``(i, j)`` (where the two libraries disagree most);
    None if not saved. ``cache``: reference values by ``(data, i, j)``, shared between calls."""
    if not (kdir / "ntk.npy").exists():
        return None
    x = np.load(data)
    cache = {} if cache is None else cache
    nngp, ntk = np.load(kdir / "nngp.npy"), np.load(kdir / "ntk.npy")

    def ref(i, j):
        key = (str(data), arch, min(i, j), max(i, j))
        if key not in cache:
            cache[key] = reference_kernel(x[i], None if i == j else x[j], arch)
        return cache[key]

    m = min(count, len(x))
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)] + [tuple(map(int, e)) for e in extra if e[0] != e[1]]
    err = {"nngp": 0.0, "ntk": 0.0, "nngp_offdiag": 0.0, "ntk_offdiag": 0.0, "images": m, "pairs": pairs}
    for i in sorted({i for p in pairs for i in p} | set(range(m))):
        rs, rt = ref(i, i)
        if i < m:
            err["nngp"] = max(err["nngp"], abs(nngp[i, i] - rs) / abs(rs))
            err["ntk"] = max(err["ntk"], abs(ntk[i, i] - rt) / abs(rt))
    for i, j in pairs:
        (si, ti), (sj, tj), (s, t) = ref(i, i), ref(j, j), ref(i, j)
        err["nngp_offdiag"] = max(err["nngp_offdiag"], abs(nngp[i, j] - s) / math.sqrt(si * sj))
        err["ntk_offdiag"] = max(err["ntk_offdiag"], abs(ntk[i, j] - t) / math.sqrt(ti * tj))
    return err


def fmt_s(rec):
    if rec is None:
        return "—"
    if not rec.get("ok"):
        return "timeout" if is_timeout(rec) else "OOM" if is_oom(rec) else "failed"
    return f"{rec['median_s']:.3g} s"


def fmt_mib(rec):
    if rec is None or not rec.get("peak_rss_mib"):
        return "—" if rec is None or rec.get("ok") is not False else ("killed" if rec.get("child_maxrss_mib") is None
                                                                       else f"({rec['child_maxrss_mib']:.0f})")
    return f"{rec['peak_rss_mib']:.0f}"


def best_nt(plain, batch):
    ok = [r for r in (plain, batch) if r and r.get("ok")]
    return min(ok, key=lambda r: r["median_s"]) if ok else None


def report(records: list[dict], grid: dict, meta: dict) -> tuple[dict, str]:
    by = {r["key"]: r for r in records if "key" in r}
    lines = ["# Convolutional NNGP + NTK: rmtjax vs neural-tangents 0.6.5", "",
             f"Generated by `benchmarks/conv_kernels_vs_neural_tangents.py` "
             f"({'quick' if meta.get('quick') else 'full grid'}). Host: {meta['host']['cpu']}, "
             f"{meta['host']['cores']} cores, {meta['host']['mem_total_mib']} MiB; shared with other engineers "
             "working at the same time (load averages below). float64; `kernel_fn(X, None, ('nngp', 'ntk'))`. "
             "Times are the median of the timed calls after a first (compiling) call; memory is the peak RSS "
             "of a fresh process per run (NT's includes TensorFlow's import, ~600 MiB; rmtjax's import "
             "~200 MiB — see `import_rss_mib` in the JSON). NT: the better of plain `jit(kernel_fn)` and "
             "`nt.batch(kernel_fn, batch_size=b)` (pmapped over one host device per core); which one is "
             "named in the table. Agreement: `|K_rmt - K_nt| / sqrt(K_nt[i,i] K_nt[j,j])`, max over the "
             "NNGP and the NTK off its diagonal (bar 1e-10), and separately on the NTK's diagonal (an image "
             "with itself), where NT's ReLU loses accuracy (rho = 1 - eps for a pixel with itself, "
             "theta ~ sqrt(2 eps)). The last two columns arbitrate with an independent NumPy recursion on "
             "the pixel-pair covariances of two images (`reference_kernel`): max relative error of the NNGP "
             "and NTK of the first 3 images with themselves, and max scaled error on their 3 pairs and on "
             "the entries where the two libraries differ most.", ""]
    loads = [r["loadavg_before"][0] for r in records if "loadavg_before" in r]
    if loads:
        lines += [f"Machine load (1-min load average at the start of each run): min {min(loads):.2f}, median "
                  f"{statistics.median(loads):.2f}, max {max(loads):.2f} on {meta['host']['cores']} cores "
                  f"(loads above the core count mean other engineers' jobs shared the CPUs: timings are then "
                  "noisier and slower for both libraries alike).", ""]
    summary = []
    for (arch, dataset), ns in grid.items():
        side = nt_conv_bench_side(dataset)
        lines += [f"## {arch} on {dataset} ({side} x {side})", "",
                  "| n | rmtjax | rmtjax compile | NT plain | NT batched (b) | NT best | NT compile | speed-up "
                  "| rmtjax MiB | NT MiB (best) | NT plain MiB | NT batch MiB | memory ratio "
                  "| agreement (NNGP; NTK off-diag) | NTK diag rmtjax vs NT | reference diag rmtjax / NT "
                  "| reference off-diag rmtjax / NT |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in ns:
            r = by.get(cell_key(arch, dataset, n, "rmtjax"))
            p = by.get(cell_key(arch, dataset, n, "nt_plain"))
            b = by.get(cell_key(arch, dataset, n, "nt_batch"))
            if r is None and p is None and b is None:
                continue
            nt = best_nt(p, b)
            sp = (nt["median_s"] / r["median_s"]) if (nt and r and r.get("ok")) else None
            mem = (nt["peak_rss_mib"] / r["peak_rss_mib"]) if (nt and r and r.get("ok")) else None
            agrs = [x["agreement"] for x in (p, b) if x and x.get("agreement") is not None]
            agr = max(a["max_but_ntk_diag"] for a in agrs) if agrs else None
            agr_diag = max(a["ntk_diag"] for a in agrs) if agrs else None
            refs = [x.get("reference") if x else None for x in (r, nt)]
            ref_txt = " / ".join("—" if x is None else f"{max(x['nngp'], x['ntk']):.0e}" for x in refs)
            ref_off = " / ".join("—" if x is None or "ntk_offdiag" not in x else
                                 f"{max(x['nngp_offdiag'], x['ntk_offdiag']):.0e}" for x in refs)
            which = None if nt is None else ("plain" if nt is p else f"batch b={b.get('batch_size')}")
            def num(v, f):
                return "—" if v is None else f.format(v)

            lines.append(
                f"| {n} | {fmt_s(r)} | {num(r.get('compile_s') if r and r.get('ok') else None, '{:.3g} s')} | "
                f"{fmt_s(p)} | {fmt_s(b)}{'' if b is None else ' (%s)' % b.get('batch_size')} | {which or '—'} | "
                f"{num(nt and nt['compile_s'], '{:.3g} s')} | {num(sp, '{:.1f}x')} | "
                f"{fmt_mib(r)} | {fmt_mib(nt)} | {fmt_mib(p)} | {fmt_mib(b)} | {num(mem, '{:.1f}x')} | "
                f"{num(agr, '{:.1e}')} | {num(agr_diag, '{:.1e}')} | {ref_txt} | {ref_off} |")
            summary.append(dict(arch=arch, dataset=dataset, n=n, speedup=sp, memory_ratio=mem, agreement=agr,
                                agreement_ntk_diag=agr_diag, reference_rmtjax=refs[0], reference_nt=refs[1],
                                nt_best=which, rmtjax_ok=bool(r and r.get("ok")),
                                nt_plain=None if p is None else ("ok" if p.get("ok") else fmt_s(p)),
                                nt_batch=None if b is None else ("ok" if b.get("ok") else fmt_s(b))))
        notes = []
        for n in ns:
            p = by.get(cell_key(arch, dataset, n, "nt_plain"))
            r = by.get(cell_key(arch, dataset, n, "rmtjax"))
            if p is not None and not p.get("ok") and r is not None and r.get("ok"):
                notes.append(f"NT plain {'out of memory' if is_oom(p) else fmt_s(p)} at n = {n} "
                             f"(rmtjax ran): {(p.get('error') or '')[:160]!r}")
        lines += [""] + [f"* {t}" for t in notes] + ([""] if notes else [])
    # targets at the largest n where both ran
    lines += ["## Targets (issue 16): >= 5x faster and >= 4x less memory at the largest n both can run", "",
              "| arch | images | largest n with both | speed-up | 5x | memory ratio | 4x | agreement <= 1e-10 (NNGP; NTK off-diag) |",
              "|---|---|---:|---:|---|---:|---|---|"]
    verdicts = []
    for (arch, dataset) in grid:
        both = [s for s in summary if s["arch"] == arch and s["dataset"] == dataset and s["speedup"] is not None]
        if not both:
            lines.append(f"| {arch} | {dataset} | — | — | not measured | — | not measured | — |")
            continue
        s = max(both, key=lambda s: s["n"])
        v = dict(arch=arch, dataset=dataset, n=s["n"], speedup=s["speedup"], memory_ratio=s["memory_ratio"],
                 speed_met=s["speedup"] >= 5, memory_met=s["memory_ratio"] >= 4,
                 agreement=s["agreement"], agree_met=s["agreement"] is not None and s["agreement"] <= TOL)
        verdicts.append(v)
        lines.append(f"| {arch} | {dataset} | {s['n']} | {s['speedup']:.1f}x | {'met' if v['speed_met'] else 'NOT met'} | "
                     f"{s['memory_ratio']:.1f}x | {'met' if v['memory_met'] else 'NOT met'} | "
                     f"{'—' if s['agreement'] is None else '%.1e' % s['agreement']} "
                     f"{'ok' if v['agree_met'] else 'FAILED'} |")
    lines.append("")
    notes = HERE / "results" / "conv_kernels_vs_nt_notes.md"  # hand-written analysis, kept across regenerations
    if notes.exists() and not meta.get("quick"):
        lines += [notes.read_text().rstrip(), ""]
    doc = {"meta": meta, "grid": {f"{a}|{d}": list(ns) for (a, d), ns in grid.items()}, "records": records,
           "summary": summary, "targets": verdicts}
    return doc, "\n".join(lines)


def nt_conv_bench_side(dataset: str) -> int:
    return int("".join(c for c in dataset if c.isdigit()))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: n = 20 on the 8 x 8 digits, 2 repeats")
    p.add_argument("--smoke", action="store_true", help="the test's run: a 2-conv net at n = 3, 1 repeat")
    p.add_argument("--only-rmtjax", action="store_true", help="no NT runs (and no agreement check)")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per run (default 3, quick 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="wall-clock seconds per run before it is killed")
    p.add_argument("--mem-limit-gib", type=float, default=16.0, help="address-space limit per run (0: none)")
    p.add_argument("--nt-block-mib", type=float, default=256.0, help="NT batch: most MiB of a b x b block")
    p.add_argument("--cells", nargs="+", default=None, metavar="ARCH:DATASET:N",
                   help="run only these cells, e.g. myrtle5:mnist32:20")
    p.add_argument("--report-only", action="store_true", help="rebuild the JSON/Markdown from the JSONL")
    p.add_argument("--recheck", action="store_true", help="with --report-only: redo missing/NaN reference checks")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(argv[1:])
    args = parse_args(argv)
    grid = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    if args.cells:
        picked = [c.split(":") for c in args.cells]
        grid = {}
        for a, d, n in picked:
            grid.setdefault((a, d), ())
            grid[(a, d)] += (int(n),)
    repeats = args.repeats or (1 if args.smoke else 2 if args.quick else 3)
    out = args.out or (HERE / "results" / "quick" if (args.quick or args.smoke) else HERE / "results")
    scratch = out / "conv_kernels"
    jsonl = out / "conv_kernels_vs_nt.jsonl"
    if args.fresh:
        jsonl.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / ".gitignore").write_text("*\n")
    if not args.only_rmtjax and not NT_PYTHON.exists():
        sys.exit(f"{NT_PYTHON} is missing: run `bash benchmarks/reference/build_env.sh` (or --only-rmtjax)")

    def read_records():
        return [json.loads(l) for l in jsonl.read_text().splitlines() if l.strip()] if jsonl.exists() else []

    meta = {"host": host_info(), "quick": args.quick or args.smoke, "timeout_s": args.timeout, "mem_limit_gib": args.mem_limit_gib,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "loadavg_start": os.getloadavg(), "uptime_start": subprocess.run(["uptime"], capture_output=True, check=False,
                                                                             text=True).stdout.strip()}
    done = {r["key"] for r in read_records() if r.get("key")}
    mem_limit = int(args.mem_limit_gib * 2**30) if args.mem_limit_gib else None
    cores = os.cpu_count() or 1
    variants = ("rmtjax",) if args.only_rmtjax else VARIANTS
    cells = sorted(((i, arch, dataset, n) for (arch, dataset), ns in grid.items() for i, n in enumerate(sorted(ns))),
                   key=lambda c: c[0])
    for _, arch, dataset, n in ([] if args.report_only else cells):
        if True:
            side = nt_conv_bench_side(dataset)
            data = scratch / f"{dataset}-n{n}.npy"
            if not data.exists():
                np.save(data, make_images(dataset, n))
            for variant in variants:
                key = cell_key(arch, dataset, n, variant)
                if key in done:
                    continue
                if (variant == "nt_batch" and dataset not in BATCH_EVERYWHERE and n != max(grid[(arch, dataset)])
                        and not args.cells):
                    continue
                kdir = scratch / f"{arch}-{dataset}-n{n}-{variant}"
                common = ["--data", str(data), "--arch", arch, "--repeats", str(repeats), "--save-kernels", str(kdir)]
                env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
                if variant == "rmtjax":
                    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", *common]
                elif variant == "nt_plain":
                    cmd = [str(NT_PYTHON), str(NT_CONV_BENCH), *common]
                else:
                    b = nt_batch_size(n, side, cores, args.nt_block_mib)
                    cmd = [str(NT_PYTHON), str(NT_CONV_BENCH), *common, "--batch-size", str(b),
                           "--devices", str(cores)]
                print(f"[{datetime.datetime.now():%H:%M:%S}] {key} (load {os.getloadavg()[0]:.2f}) ...",
                      file=sys.stderr, flush=True)
                rec = run_job(cmd, env, args.timeout, mem_limit)
                rec.update(key=key, arch=arch, dataset=dataset, n=n, variant=variant, side=side)
                if variant != "rmtjax":
                    rec["agreement"] = agreement(scratch / f"{arch}-{dataset}-n{n}-rmtjax", kdir)
                rec["reference"] = reference_check(data, kdir, arch)
                print(f"    -> {fmt_s(rec)}, peak {fmt_mib(rec)} MiB"
                      + (f", agreement {rec['agreement']}" if rec.get("agreement") is not None else "")
                      + (f", vs reference {rec['reference']}" if rec.get("reference") is not None else "")
                      + ("" if rec.get("ok") else f": {(rec.get('error') or '')[:200]}"), file=sys.stderr, flush=True)
                with jsonl.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
    if not args.report_only or args.recheck:  # agreement and reference checks from the saved kernels
        recs, cache = read_records(), {}
        for rec in recs:
            if "key" not in rec:
                continue
            base = f"{rec['arch']}-{rec['dataset']}-n{rec['n']}"
            data = scratch / f"{rec['dataset']}-n{rec['n']}.npy"
            if rec["variant"] != "rmtjax":
                rec["agreement"] = agreement(scratch / f"{base}-rmtjax", scratch / f"{base}-{rec['variant']}")
            extra = set()
            for other in recs:
                if other.get("key", "").startswith(f"{rec['arch']}|{rec['dataset']}|n{rec['n']}|") and other.get(
                        "agreement"):
                    extra |= {tuple(other["agreement"][f"{k}_worst"]) for k in ("nngp", "ntk")
                              if f"{k}_worst" in other["agreement"]}
            if data.exists():
                rec["reference"] = reference_check(data, scratch / f"{base}-{rec['variant']}", rec["arch"],
                                                   extra=sorted(extra), cache=cache)
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    meta["loadavg_end"] = os.getloadavg()
    meta["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    shown = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    for key, ns in grid.items():
        shown[key] = tuple(sorted(set(shown.get(key, ())) | set(ns)))
    doc, md = report(read_records(), shown, meta)
    (out / "conv_kernels_vs_nt.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "conv_kernels_vs_nt.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
