"""Reports people can look at: one self-contained HTML page per run (inline SVG charts, no network),
PNG plots for papers, and a page comparing several runs.

    nasloop report RUN_DIR [-o report.html] [--window 15] [--watch [SECONDS]]
    nasloop compare RUN_DIR... -o compare.html

From Python: `write_report(run_dir)` and `write_comparison(run_dirs, output)`; the numbers behind the
pages come from `nasloop.report.data` (`load_run`, `analyse_run`).
"""

from nasloop.report.files import ReportFiles, write_comparison, write_report

__all__ = ["ReportFiles", "write_comparison", "write_report"]
