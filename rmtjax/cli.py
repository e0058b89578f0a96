"""The ``rmtjax`` command.

Usage::

    rmtjax reproduce --list
    rmtjax reproduce NAME [--quick] [--out DIR] [--seed S] [--float32] [--no-progress]

``reproduce`` runs a registered experiment (:data:`rmtjax.experiments.EXPERIMENTS`) and writes
its figure, ``report.json`` and ``report.md`` into ``DIR`` (default ``out/NAME/``). The arguments
and the output folder are checked before anything is imported or computed: a bad argument, or an
``--out`` that is a file, cannot be created or is not writable, is one line on stderr and exit
status 2. Unless the user set ``XLA_FLAGS``, the command exposes one XLA host device per CPU core
(``--xla_force_host_platform_device_count``) so experiments can spread work over all cores; it
computes in float64 unless ``--float32`` is given (the report then states the float32 accuracy
against float64).

Exit codes: 0 when the experiment reproduced its result, 1 when it ran but did not, 2 for a
usage error (unknown experiment, bad arguments, unusable ``--out``), 3 when the computation
stopped on a ``ValueError`` (printed as one line), 130 when interrupted (rerun the same command
to resume where the experiment supports it).

Example:
    >>> from rmtjax.cli import main
    >>> main(["reproduce", "--list"])  # doctest: +SKIP
    kernels  Infinite-width NNGP/NTK across depths vs Monte-Carlo finite-width networks ...
    0
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_PROG = "rmtjax"
_SEED_MAX = 2**32 - 1  # rmtjax.experiments._common.SEED_MAX (not imported: --help stays light)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block before them)."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _seed(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= _SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {_SEED_MAX}], got {text!r}")
    return value


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a folder path, got an empty string")
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG, description="rmtjax: infinite-width and random-matrix theory of deep networks in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rep = sub.add_parser("reproduce", help="run a registered experiment and write its figure and report",
                         description="Run a registered experiment; writes a PNG figure, report.json and report.md.")
    rep.add_argument("name", nargs="?", metavar="NAME", help="experiment name (see --list)")
    rep.add_argument("--list", action="store_true", help="list the experiments (with their --quick times) and exit")
    rep.add_argument("--quick", action="store_true",
                     help="small sizes: 35-80 s of CPU time per experiment, mostly compilation (see --list)")
    rep.add_argument("--out", type=_folder, metavar="DIR", help="output folder (default: out/NAME/)")
    rep.add_argument("--seed", type=_seed, default=0, metavar="S", help=f"master random seed in [0, {_SEED_MAX}] "
                     "(default: 0)")
    rep.add_argument("--float32", action="store_true",
                     help="compute in float32 (default: float64); the report states the accuracy against float64")
    rep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _error(message: str, code: int = 2) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return code


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if len(lines) == 1 else " ".join(lines) if lines else "(no message)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rmtjax`` console script.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 (reproduced), 1 (ran, not reproduced), 2 (usage error), 3 (stopped on a
        ``ValueError``), 130 (interrupted).
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
            quick = f" (--quick: about {exp.quick_seconds:.0f} s of CPU)" if exp.quick_seconds else ""
            print(f"{name:<{width}}  {exp.description}{quick}")
        return 0
    if args.name is None:
        return _error("reproduce: give an experiment NAME or --list")
    if args.name not in EXPERIMENTS:
        close = difflib.get_close_matches(args.name, EXPERIMENTS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return _error(f"reproduce: unknown experiment {args.name!r}; {hint}available: "
                      f"{', '.join(sorted(EXPERIMENTS))} (see '{_PROG} reproduce --list')")

    from .experiments._output import check_out_dir

    out = args.out if args.out is not None else Path("out") / args.name
    try:
        check_out_dir(out, name="--out")
    except ValueError as err:
        return _error(f"reproduce: {err}")

    # XLA reads XLA_FLAGS when its CPU backend starts (the first computation), not at import.
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")
    import equinox as eqx
    import jax

    from ._validate import runtime_message

    previous_x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", not args.float32)
    t0 = time.perf_counter()
    try:
        runner = EXPERIMENTS[args.name].load()
        report = runner(out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    except (ValueError, jax.errors.JaxRuntimeError, eqx.EquinoxRuntimeError) as err:
        # a check that failed in compiled code carries the callback's traceback and, for
        # equinox checks, a banner: only its message is printed
        msg = runtime_message(err)
        if msg is None:
            if not isinstance(err, ValueError):
                raise
            msg = str(err)
        return _error(f"reproduce {args.name}: {_one_line(msg)}", 3)
    except KeyboardInterrupt:
        print(f"\n{_PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        jax.config.update("jax_enable_x64", previous_x64)
    elapsed = time.perf_counter() - t0
    status = "reproduced" if report.get("ok") else "NOT reproduced"
    print(f"{args.name}: {status} in {elapsed:.1f} s: {report.get('summary', '')}")
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and the figure in {out}/")
    return 0 if report.get("ok") else 1
