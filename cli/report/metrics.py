"""The report's metric rows: read with their types and steps (a run's get_metrics keeps values
only), grouped into curves, tables and drawn types; and `amlocal runs compare`, one metric's
curve across runs."""

import re
from dataclasses import dataclass

from amlocal.backends.history.metric_shapes import is_number
from amlocal.cli import charts
from amlocal.cli.output import png_file, write_atomically
from amlocal.errors import UserInputError


# -- reading metric rows ------------------------------------------------------------------------

@dataclass
class MetricRow:
    name: str
    position: int
    metric_type: str
    value: object
    step: int = None
    description: str = ""
    logged_at: float = None
    damaged: bool = False


def read_metric_rows(handle):
    """Every metric row of the run (its handle), in logging order, values decoded from JSON (a damaged value
    is kept as its text, marked damaged, rather than failing the whole report)."""
    rows = [MetricRow(record["name"], record["position"], record["type"], record["value"],
                      record["step"], record["description"], record["logged_at"], record["damaged"])
            for record in handle.get_metric_records()]
    first_seen = {}
    for row in rows:
        first_seen.setdefault(row.name, len(first_seen))
    rows.sort(key=lambda row: (first_seen[row.name], row.position))
    return rows


@dataclass
class MetricGroup:
    """The rows of one metric name and type, in logging order."""

    name: str
    metric_type: str
    rows: list

    @property
    def values(self):
        return [row.value for row in self.rows]

    @property
    def description(self):
        return next((row.description for row in self.rows if row.description), "")


def group_metrics(rows):
    """Rows grouped by (name, type), groups in order of first logging."""
    groups = {}
    for row in rows:
        key = (row.name, row.metric_type)
        if key not in groups:
            groups[key] = MetricGroup(row.name, row.metric_type, [])
        groups[key].rows.append(row)
    return list(groups.values())


def curve_points(rows):
    """(x, y, uses_steps): x is the step when every value was logged with one, else 1..n."""
    uses_steps = bool(rows) and all(is_number(row.step) for row in rows)
    x = [row.step for row in rows] if uses_steps else list(range(1, len(rows) + 1))
    return x, [row.value for row in rows], uses_steps


def x_label(uses_steps):
    if all(uses_steps):
        return "step"
    if not any(uses_steps):
        return "logging order"
    return "step (logging order for runs logged without steps)"


# -- compare ------------------------------------------------------------------------------------

def safe_file_part(text):
    """A metric name made safe as part of a file name (compare-<metric>.png)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "metric"


def compare_curves(backend, run_ids, metric):
    """The metric's curve in each run: (series, x_label, {run id: values}).

    Raises RunNotFoundError for an unknown run and UserInputError for no runs, a run given twice,
    a run without the metric, or a metric that is not a numeric scalar curve.
    """
    if not run_ids:
        raise UserInputError("give at least one run id to compare")
    seen = set()
    for run_id in run_ids:
        if run_id in seen:
            raise UserInputError(f"run {run_id} is given twice")
        seen.add(run_id)
    series, uses_steps, values_by_run = [], [], {}
    for run_id in run_ids:
        handle = backend.get_run(run_id)
        experiment = handle.get_details()["experiment"]
        all_rows = read_metric_rows(handle)
        rows = [row for row in all_rows if row.name == metric]
        if not rows:
            names = sorted({row.name for row in all_rows})
            logged = f"it logged {', '.join(names)}" if names else "it logged no metrics"
            raise UserInputError(f"run {run_id} has no metric {metric!r} ({logged})")
        other_types = sorted({row.metric_type for row in rows} - {"scalar"})
        if other_types:
            raise UserInputError(
                f"metric {metric!r} of run {run_id} is a {other_types[0]} metric, not a numeric "
                "scalar curve (compare draws values logged with run.log)")
        for index, row in enumerate(rows, start=1):
            if row.damaged or not is_number(row.value):
                raise UserInputError(
                    f"metric {metric!r} of run {run_id} is not a numeric scalar curve: value "
                    f"{index} is {row.value!r}")
        x, y, steps = curve_points(rows)
        series.append(charts.Series(f"{run_id} ({experiment})", x, y))
        uses_steps.append(steps)
        values_by_run[run_id] = y
    return series, x_label(uses_steps), values_by_run


def compare_figure(backend, run_ids, metric):
    """(Figure of the metric's curves, {run id: values})."""
    series, x_label, values_by_run = compare_curves(backend, run_ids, metric)
    return charts.curve_figure(metric, series, x_label), values_by_run


def write_compare_chart(backend, run_ids, metric, output=None):
    """Write the comparison chart as PNG; return (path, {run id: values})."""
    path = png_file(output or f"compare-{safe_file_part(metric)}.png")
    figure, values_by_run = compare_figure(backend, run_ids, metric)
    write_atomically(path, charts.png_bytes(figure))
    return path, values_by_run
