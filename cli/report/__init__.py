"""`amlocal runs compare` and `amlocal runs report`: a chart across runs, and one run as HTML.

The report is one self-contained HTML file: charts and logged images are embedded as base64 data
URIs, the CSS is inline, there is no script, and a Content-Security-Policy forbids the page from
loading anything else, so it opens the same offline, attached to a mail, or years later. Every
value that comes from the user or the run (names, values, tags, the log, ...) is HTML-escaped.

Metric rows are read with their types and steps (get_metric_records; get_metrics keeps values
only): a scalar logged again and again is a curve, log_row rows of one name are one table, and the
artifact-backed types (image, confusion_matrix, accuracy_table, residuals, predictions) are drawn.
"""

import time

from amlocal.cli.output import make_output_folder, write_atomically
from amlocal.backends.base import tail_lines
from amlocal.cli.report.html import esc, text_of
from amlocal.cli.report.metrics import compare_figure, write_compare_chart
from amlocal.cli.report.renderers import Report

__all__ = ["compare_figure", "esc", "tail_lines", "text_of", "write_compare_chart", "write_report"]


def write_report(handle, out_dir, now=None):
    """Write the run's report to out_dir/index.html (atomically); return a summary dict.

    Works for a run in any status: a failed run shows its error, a live one its stages so far.
    """
    out_dir = make_output_folder(out_dir)
    report = Report(handle, time.time() if now is None else now)
    document = report.html()
    # Whatever text escaped esc() (a chart title, a file name) is written escaped, not refused.
    path = write_atomically(out_dir / "index.html", document.encode("utf-8", "backslashreplace"))
    return {"file": str(path), "run_id": report.details["id"], "status": report.details["status"],
            "charts": report.charts, "images": report.images}
