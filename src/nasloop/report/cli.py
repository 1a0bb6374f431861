"""The `nasloop report` and `nasloop compare` commands (dispatched lazily by `nasloop.cli`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from nasloop.errors import EXIT_OK, UsageError
from nasloop.report.files import ReportFiles, write_comparison, write_report
from nasloop.store import RunDir

DEFAULT_WATCH_S = 10.0


def _check_run(run_dir: Path) -> None:
    if not RunDir(run_dir).exists():
        raise UsageError(f"{run_dir} holds no run (no {RunDir(run_dir).store_path.name} there)")


def _check_window(window: int) -> None:
    if window < 1:
        raise UsageError(f"--window must be at least 1, got {window}")


def _print_files(files: ReportFiles) -> None:
    print(f"wrote {files.html}")
    for path in files.pngs:
        print(f"wrote {path}")
    if files.png_skipped:
        print(f"note: {files.png_skipped}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------


def add_report(parser: argparse.ArgumentParser) -> None:
    """Arguments of `nasloop report RUN_DIR [-o report.html] [--window 15] [--watch [SECONDS]] [--no-png]`."""
    parser.add_argument("run_dir", type=Path, help="the run directory")
    parser.add_argument("-o", "--output", type=Path, help="HTML file to write (default RUN_DIR/report.html)")
    parser.add_argument("--window", type=int, default=15, help="moving-average window of the trend (default 15)")
    parser.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=DEFAULT_WATCH_S,
        metavar="SECONDS",
        help=f"regenerate every SECONDS (default {DEFAULT_WATCH_S:g}) while the run changes, until Ctrl-C",
    )
    parser.add_argument("--no-png", action="store_true", help="write only the HTML page, no PNG plots")


def cmd_report(args: argparse.Namespace) -> int:
    """Write the run's HTML report and PNG plots once, or keep them current with `--watch`."""
    _check_run(args.run_dir)
    _check_window(args.window)
    if args.watch is not None:
        if args.watch <= 0:
            raise UsageError(f"--watch needs a positive number of seconds, got {args.watch:g}")
        return _watch(args)
    _print_files(write_report(args.run_dir, args.output, window=args.window, pngs=not args.no_png))
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    """Regenerate whenever the run recorded something new; Ctrl-C ends it (exit status 0)."""
    from nasloop.report.data import run_fingerprint

    output = args.output or args.run_dir / "report.html"
    print(f"watching {args.run_dir}: {output} is regenerated every {args.watch:g} s; Ctrl-C stops", file=sys.stderr)
    seen: tuple[int, float, int] | None = None
    warned = False
    # Ctrl-C sets a flag instead of raising: a KeyboardInterrupt that lands inside a garbage-collector
    # callback (matplotlib makes many) is swallowed by Python, and the loop would never end.
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        while not stop.is_set():
            fingerprint = run_fingerprint(args.run_dir)
            if fingerprint != seen:
                files = write_report(
                    args.run_dir, output, window=args.window, pngs=not args.no_png, refresh_s=args.watch
                )
                seen = fingerprint
                print(f"{time.strftime('%H:%M:%S')} {fingerprint[0]} candidates: wrote {files.html}", flush=True)
                if files.png_skipped and not warned:
                    print(f"note: {files.png_skipped}", file=sys.stderr)
                    warned = True
            stop.wait(args.watch)
    finally:
        signal.signal(signal.SIGINT, previous)
    print("stopped watching", file=sys.stderr)
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------------


def add_compare(parser: argparse.ArgumentParser) -> None:
    """Arguments of `nasloop compare RUN_DIR... [-o compare.html] [--window 15] [--no-png]`."""
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories to compare")
    parser.add_argument("-o", "--output", type=Path, default=Path("compare.html"), help="HTML file (compare.html)")
    parser.add_argument("--window", type=int, default=15, help="window of the rolling valid rate (default 15)")
    parser.add_argument("--no-png", action="store_true", help="write only the HTML page, no PNG plots")


def cmd_compare(args: argparse.Namespace) -> int:
    """Write one page comparing the runs, and its PNG plots."""
    for run_dir in args.run_dirs:
        _check_run(run_dir)
    resolved = [run_dir.resolve() for run_dir in args.run_dirs]
    repeated = sorted({str(run_dir) for run_dir in args.run_dirs if resolved.count(run_dir.resolve()) > 1})
    if repeated:
        raise UsageError(f"run directory listed twice: {', '.join(repeated)}")
    _check_window(args.window)
    _print_files(write_comparison(args.run_dirs, args.output, window=args.window, pngs=not args.no_png))
    return EXIT_OK
