"""The ``rmtjax`` command.

Usage::

    rmtjax reproduce --list
    rmtjax reproduce NAME [--quick] [--out DIR] [--seed S] [--float32]

``reproduce`` runs a registered experiment (:data:`rmtjax.experiments.EXPERIMENTS`) and writes
its figure, ``report.json`` and ``report.md`` into ``DIR`` (default ``out/NAME/``). Unless the
user set ``XLA_FLAGS``, the command exposes one XLA host device per CPU core
(``--xla_force_host_platform_device_count``) so experiments can spread work over all cores; it
computes in float64 unless ``--float32`` is given.

Exit codes: 0 when the experiment reproduced its result, 1 when it ran but did not, 2 for a
usage error (unknown experiment, bad arguments).

Example:
    >>> from rmtjax.cli import main
    >>> main(["reproduce", "--list"])  # doctest: +SKIP
    kernels  Infinite-width NNGP/NTK across depths vs Monte-Carlo finite-width networks ...
    0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_PROG = "rmtjax"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="rmtjax: infinite-width and random-matrix theory of deep networks in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rep = sub.add_parser("reproduce", help="run a registered experiment and write its figure and report",
                         description="Run a registered experiment; writes a PNG figure, report.json and report.md.")
    rep.add_argument("name", nargs="?", metavar="NAME", help="experiment name (see --list)")
    rep.add_argument("--list", action="store_true", help="list the experiments and exit")
    rep.add_argument("--quick", action="store_true", help="small sizes (under a minute on two CPU cores)")
    rep.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: out/NAME/)")
    rep.add_argument("--seed", type=int, default=0, metavar="S", help="master random seed (default: 0)")
    rep.add_argument("--float32", action="store_true", help="compute in float32 (default: float64)")
    rep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _error(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rmtjax`` console script.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 (reproduced), 1 (ran, not reproduced), 2 (usage error).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors with status 2, --help with 0
        return int(exc.code or 0)
    if args.command != "reproduce":
        parser.print_help(sys.stderr)
        return 2

    from .experiments import EXPERIMENTS

    if args.list:
        width = max(map(len, EXPERIMENTS))
        for name, exp in EXPERIMENTS.items():
            print(f"{name:<{width}}  {exp.description}")
        return 0
    if args.name is None:
        return _error("reproduce: give an experiment NAME or --list")
    if args.name not in EXPERIMENTS:
        return _error(f"reproduce: unknown experiment {args.name!r}; available: {', '.join(sorted(EXPERIMENTS))} "
                      f"(see '{_PROG} reproduce --list')")
    if args.seed < 0:
        return _error(f"reproduce: --seed must be a non-negative integer, got {args.seed}")

    # XLA reads XLA_FLAGS when its CPU backend starts (the first computation), not at import.
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")
    import jax

    out = args.out if args.out is not None else Path("out") / args.name
    previous_x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", not args.float32)
    try:
        runner = EXPERIMENTS[args.name].load()
        t0 = time.perf_counter()
        report = runner(out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
        elapsed = time.perf_counter() - t0
    finally:
        jax.config.update("jax_enable_x64", previous_x64)
    status = "reproduced" if report.get("ok") else "NOT reproduced"
    print(f"{args.name}: {status} in {elapsed:.1f} s: {report.get('summary', '')}")
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and the figure in {out}/")
    return 0 if report.get("ok") else 1
