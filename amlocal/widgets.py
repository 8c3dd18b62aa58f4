"""Mirrors `azureml.widgets`: `RunDetails(run).show()`, which Azure ML's notebooks call to watch a
run.

Azure's widget is a live Jupyter extension drawn from the portal's data. Here `show()` draws the
run as it is now: in a Jupyter notebook, a small HTML table (status, the latest value of each
metric, a sweep's children best first) with a link to the run's full report (`amlocal runs report`,
written under $AMLOCAL_HOME/reports/<run id>/ when shown); anywhere else, the same as plain text.
Call it again, or `run.wait_for_completion(show_output=True)`, to follow a run that is still going.
"""

import html
import os
from pathlib import Path

from amlocal.backends import default_home
from amlocal.backends.status import TERMINAL_STATUSES

# A metric logged many times shows its latest value; lists longer than this are cut.
_SHOWN_VALUES = 5


def _in_notebook():
    """Whether this is a Jupyter kernel (where IPython.display draws HTML)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _latest(value):
    if isinstance(value, list):
        return value[-1] if value else None
    return value


def _shown(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > _SHOWN_VALUES:
        return f"[{', '.join(map(str, value[:_SHOWN_VALUES]))}, ... ({len(value)} values)]"
    return str(value)


class RunDetails:
    """What a run (or a HyperDrive sweep) is doing, shown in a notebook or printed."""

    def __init__(self, run_instance):
        self.run_instance = run_instance

    def summary(self):
        """{run_id, status, metrics: {name: latest value}, children: [...]} of the run now."""
        run = self.run_instance
        metrics = {name: _latest(value) for name, value in run.get_metrics().items()}
        children = []
        if hasattr(run, "get_children_sorted_by_primary_metric"):
            children = run.get_children_sorted_by_primary_metric()
        return {"run_id": run.id, "experiment": run.experiment.name, "status": run.get_status(),
                "metrics": metrics, "children": children}

    def show(self):
        """Draw the run now: HTML in a notebook, plain text elsewhere. Returns the summary."""
        summary = self.summary()
        if _in_notebook():
            from IPython.display import HTML, display

            display(HTML(self._html(summary, self._write_report())))
        else:
            print(self._text(summary))
        return summary

    def get_widget_data(self, widget_settings=None):
        return self.summary()

    def _write_report(self):
        """The run's HTML report, written for the link; None where it cannot be (the notebook
        still shows the table)."""
        from amlocal.cli.report import write_report

        folder = Path(default_home()) / "reports" / self.run_instance.id
        try:
            return write_report(self.run_instance._handle, folder)["file"]
        except (OSError, AttributeError):
            return None

    @staticmethod
    def _text(summary):
        lines = [f"Run {summary['run_id']} (experiment {summary['experiment']}): {summary['status']}"]
        lines += [f"  {name}: {_shown(value)}" for name, value in sorted(summary["metrics"].items())]
        if summary["children"]:
            lines.append(f"  {len(summary['children'])} child runs, best first:")
            lines += [f"    {child['run_id']}  {child['status']:<10} "
                      f"best {_shown(child['best_primary_metric'])}  {child['hyperparameters'] or ''}"
                      for child in summary["children"]]
        if summary["status"] not in TERMINAL_STATUSES:
            lines.append("  (still going: show() again, or run.wait_for_completion(show_output=True))")
        return "\n".join(lines)

    @staticmethod
    def _html(summary, report):
        esc = html.escape
        rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(_shown(value))}</td></tr>"
                       for name, value in sorted(summary["metrics"].items()))
        children = "".join(
            f"<tr><td>{esc(child['run_id'])}</td><td>{esc(child['status'])}</td>"
            f"<td>{esc(_shown(child['best_primary_metric']))}</td>"
            f"<td>{esc(str(child['hyperparameters'] or ''))}</td></tr>"
            for child in summary["children"])
        link = (f'<p><a href="file://{esc(os.path.abspath(report))}" target="_blank">the run\'s '
                f'report</a> ({esc(report)})</p>' if report else "")
        return (f"<div class='amlocal-run-details'><p><b>Run {esc(summary['run_id'])}</b> "
                f"(experiment {esc(summary['experiment'])}): <b>{esc(summary['status'])}</b></p>"
                + (f"<table><tr><th>metric</th><th>latest</th></tr>{rows}</table>" if rows else "")
                + ("<table><tr><th>child run</th><th>status</th><th>best</th>"
                   f"<th>hyperparameters</th></tr>{children}</table>" if children else "")
                + link + "</div>")
