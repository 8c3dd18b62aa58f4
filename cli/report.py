"""`amlocal runs compare` and `amlocal runs report`: a chart across runs, and one run as HTML.

The report is one self-contained HTML file: charts and logged images are embedded as base64 data
URIs, the CSS is inline, there is no script, and a Content-Security-Policy forbids the page from
loading anything else, so it opens the same offline, attached to a mail, or years later. Every
value that comes from the user or the run (names, values, tags, the log, ...) is HTML-escaped.

Metric rows are read with their types and steps (RunStore.get_metrics keeps values only): a
scalar logged again and again is a curve, log_row rows of one name are one table, and the
artifact-backed types (image, confusion_matrix, accuracy_table, residuals, predictions) are drawn.
"""

import base64
import datetime
import html
import json
import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amlocal.backends.local.run_folder import printable
from amlocal.backends.local.store import DRIVER_LOG, iso_time
from amlocal.cli import charts
from amlocal.cli.output import make_output_folder, png_file
from amlocal.errors import AmlocalError, UserInputError

LOG_TAIL_LINES = 500
MAX_EMBEDDED_IMAGE_BYTES = 20 << 20
COLLAPSE_ROWS = 25  # tables longer than this start folded (<details>), all rows still there


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


def read_metric_rows(store, run_id):
    """Every metric row of the run, in logging order, values decoded from JSON (a damaged value
    is kept as its text, marked damaged, rather than failing the whole report)."""
    rows = [MetricRow(record["name"], record["position"], record["type"], record["value"],
                      record["step"], record["description"], record["logged_at"], record["damaged"])
            for record in store.get_metric_records(run_id)]
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


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def curve_points(rows):
    """(x, y, uses_steps): x is the step when every value was logged with one, else 1..n."""
    uses_steps = bool(rows) and all(is_number(row.step) for row in rows)
    x = [row.step for row in rows] if uses_steps else list(range(1, len(rows) + 1))
    return x, [row.value for row in rows], uses_steps


def _x_label(uses_steps):
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
        rows = [row for row in read_metric_rows(handle.store, run_id) if row.name == metric]
        if not rows:
            names = sorted({row.name for row in read_metric_rows(handle.store, run_id)})
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
    return series, _x_label(uses_steps), values_by_run


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


def write_atomically(path, data):
    """Write bytes to path through a temporary file in the same folder and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                                 dir=path.parent)
    except OSError as error:
        raise UserInputError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise UserInputError(f"cannot write {path}: {error.strerror or error}") from None
        raise
    return path


# -- HTML helpers -------------------------------------------------------------------------------

# Control characters, and lone surrogates (bytes that were not UTF-8, as a history may hold them
# from before tags were checked, or from a script): shown as U+FFFD, never written raw.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")  # colors, cursor moves


class Markup(str):
    """HTML built here, inserted as is (everything else is escaped)."""


def esc(value):
    if isinstance(value, Markup):
        return value
    return html.escape(_CONTROL.sub("\ufffd", str(value)), quote=True)


def text_of(value):
    """A value as the report shows it (floats with 6 significant digits, JSON for containers)."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def value_cell(value):
    """A value for a table cell: a float shows 6 digits and keeps its full value as a tooltip."""
    if isinstance(value, float) and repr(value) != text_of(value):
        return Markup(f'<span title="{esc(repr(value))}">{esc(text_of(value))}</span>')
    return Markup(esc(text_of(value)))


def html_table(headers, rows, numeric=(), nowrap=(), collapse_label=None):
    """A table; cells are escaped unless Markup. Long tables fold into <details>.

    Columns in `numeric` are right-aligned, those in `nowrap` never wrap (names, times).
    """
    head = "".join(f"<th>{esc(header)}</th>" for header in headers)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            classes = " ".join(name for name, columns in (("num", numeric), ("nowrap", nowrap))
                               if index in columns)
            css = f' class="{classes}"' if classes else ""
            cells.append(f"<td{css}>{'' if cell is None else esc(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    table = (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table></div>')
    if len(rows) > COLLAPSE_ROWS:
        label = collapse_label or f"all {len(rows)} rows"
        return Markup(f"<details><summary>{esc(label)}</summary>{table}</details>")
    return Markup(table)


def badge(status):
    return Markup(f'<span class="badge" style="background:{charts.status_color(status)}">'
                  f"{esc(status)}</span>")


def _png_data_uri(data, mime="image/png"):
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figure_html(figure, alt):
    return Markup(f'<figure class="chart"><img alt="{esc(alt)}" '
                  f'src="{_png_data_uri(charts.png_bytes(figure))}"></figure>')


def _parse_iso(text):
    if not text:
        return None
    return datetime.datetime.fromisoformat(text).timestamp()


def _seconds(value):
    if value is None:
        return ""
    if value < 120:
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    minutes, seconds = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)} min {seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def _size(size):
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _image_mime(data):
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return None


def tail_lines(path, count=LOG_TAIL_LINES, max_bytes=8 << 20):
    """(the last `count` lines of a text file, whether earlier text was left out); (None, False)
    if there is no such file. Reads backwards from the end, at most `max_bytes`."""
    try:
        with open(path, "rb") as handle:
            position = handle.seek(0, os.SEEK_END)
            data = b""
            while position > 0 and data.count(b"\n") <= count and len(data) < max_bytes:
                step = min(1 << 16, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return None, False
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0 and len(lines) > 1:
        lines = lines[1:]  # reading started inside a line
    return lines[-count:], position > 0 or len(lines) > count


# -- the report ---------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f4f5f7; color: #1f2328;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 20px 24px 40px; }
header.run { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 16px 20px;
             margin-bottom: 20px; }
header.run h1 { font-size: 20px; margin: 0 0 12px; word-break: break-all; }
section { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 12px 20px 16px;
          margin-bottom: 20px; }
h2 { font-size: 17px; margin: 4px 0 12px; }
h3 { font-size: 15px; margin: 18px 0 6px; word-break: break-word; }
h3 .kind { font-weight: normal; color: #57606a; font-size: 13px; margin-left: 6px; }
h4 { font-size: 14px; margin: 12px 0 4px; }
p.note, .description { color: #57606a; margin: 4px 0 8px; }
nav { margin-bottom: 16px; font-size: 13px; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dl.facts dt { color: #57606a; }
dl.facts dd { margin: 0; word-break: break-word; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 10px; color: #fff; font-weight: 600;
         white-space: nowrap; }
td.nowrap, th.nowrap { white-space: nowrap; word-break: normal; }
.error { background: #ffebe9; border: 1px solid #ff818266; border-radius: 6px; padding: 8px 12px;
         margin-top: 12px; white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
th { color: #57606a; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td { word-break: break-word; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figure figcaption { color: #57606a; font-size: 13px; }
details summary { cursor: pointer; color: #0969da; margin: 4px 0; }
pre.log { background: #0d1117; color: #e6edf3; padding: 12px; border-radius: 6px; overflow: auto;
          max-height: 640px; font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
          white-space: pre-wrap; word-break: break-all; }
pre.json { background: #f6f8fa; padding: 8px; border-radius: 6px; overflow: auto; max-height: 400px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class _Report:
    """Builds the HTML of one run's report, section by section."""

    def __init__(self, handle, now):
        self.handle = handle
        self.store = handle.store
        self.now = now
        self.details = handle.get_details()
        self.created = _parse_iso(self.details["created_at"])
        self.charts = 0
        self.images = 0

    def figure(self, figure, alt):
        self.charts += 1
        return _figure_html(figure, alt)

    # header ------------------------------------------------------------------------------

    def header(self):
        details = self.details
        if details["duration_s"] is not None:
            duration = _seconds(details["duration_s"])
        else:
            duration = f"{_seconds(max(self.now - self.created, 0))} so far (still {details['status']})"
        command = shlex.join([details["script"], *details["arguments"]])
        facts = [
            ("Experiment", details["experiment"]),
            ("Status", badge(details["status"])),
            ("Duration", duration),
            ("Created", details["created_at"]),
            ("Started", details["started_at"]),
            ("Ended", details["ended_at"]),
            ("Executor", details["executor"]),
            ("Compute", f"{details['compute']} ({details['node_count']} node(s))"),
            ("Image", details["image"] or "none (no container image: process executor)"),
            ("Script", Markup(f"<code>{esc(command)}</code>")),
            ("Source", details["source_dir"]),
            ("Inputs", ", ".join(f"{name}={path}" for name, path in details["inputs"].items())),
            ("Exit code", details["exit_code"]),
            ("Preemptions", details["preemptions"] or None),
        ]
        rows = "".join(f"<dt>{esc(label)}</dt><dd>{esc(value)}</dd>"
                       for label, value in facts if value not in (None, ""))
        error = (f'<div class="error"><strong>Error:</strong> {esc(details["error"])}</div>'
                 if details.get("error") else "")
        return (f'<header class="run"><h1>Run {esc(details["id"])}</h1>'
                f'<dl class="facts">{rows}</dl>{error}</header>')

    # stages ------------------------------------------------------------------------------

    def stages(self):
        bars, rows = [], []
        for stage in self.details["stages"]:
            start, end = _parse_iso(stage["started_at"]), _parse_iso(stage["ended_at"])
            bars.append(charts.StageBar(
                stage["name"], stage["status"],
                None if start is None else max(start - self.created, 0),
                None if end is None else max(end - self.created, 0)))
            if stage["duration_s"] is not None:
                duration = _seconds(stage["duration_s"])
            elif start is not None:
                duration = f"{_seconds(max(self.now - start, 0))} so far"
            else:
                duration = ""
            rows.append([stage["name"], badge(stage["status"]), stage["started_at"] or "",
                         stage["ended_at"] or "", duration, stage["detail"]])
        timeline = charts.timeline_figure(bars, now_s=self.now - self.created)
        return self.section("stages", "Stages", [
            self.figure(timeline, "timeline of the run's stages"),
            html_table(["Stage", "Status", "Started", "Ended", "Duration", "Detail"], rows,
                       nowrap=(0, 2, 3, 4)),
        ])

    def status_history(self):
        rows = [[badge(status), iso_time(at), f"+{_seconds(max(at - self.created, 0))}"]
                for status, at in self.store.status_history(self.details["id"])]
        return self.section("status-history", "Status history",
                            [html_table(["Status", "At", "Since created"], rows, numeric=(2,),
                                        nowrap=(1, 2))])

    # metrics -----------------------------------------------------------------------------

    def metrics(self):
        groups = group_metrics(read_metric_rows(self.store, self.details["id"]))
        if not groups:
            return self.section("metrics", "Metrics", [Markup('<p class="note">No metrics logged.</p>')])
        parts = []
        singles = [group for group in groups
                   if group.metric_type == "scalar" and len(group.rows) == 1]
        if singles:
            parts.append(Markup("<h3>Single values</h3>"))
            parts.append(html_table(
                ["Metric", "Value", "Step", "Description"],
                [[group.name, self.cell(group.rows[0]), group.rows[0].step, group.description]
                 for group in singles]))
        for group in groups:
            if group in singles:
                continue
            render = {"scalar": self.metric_scalar, "list": self.metric_list,
                      "row": self.metric_row, "table": self.metric_table,
                      "image": self.metric_image, "confusion_matrix": self.metric_confusion_matrix,
                      "accuracy_table": self.metric_accuracy_table,
                      "residuals": self.metric_residuals,
                      "predictions": self.metric_predictions}.get(group.metric_type,
                                                                   self.metric_other)
            heading = (f'<h3>{esc(group.name)}<span class="kind">{esc(group.metric_type)}'
                       f'{self._count(group)}</span></h3>')
            description = (f'<p class="description">{esc(group.description)}</p>'
                           if group.description else "")
            parts.append(Markup(heading + description))
            parts.extend(render(group))
        return self.section("metrics", "Metrics", parts)

    @staticmethod
    def _count(group):
        return f", {len(group.rows)} values" if group.metric_type == "scalar" else (
            f", logged {len(group.rows)} times" if len(group.rows) > 1 else "")

    @staticmethod
    def cell(row):
        if row.damaged:
            return Markup(f"<em>damaged value:</em> {esc(row.value)}")
        return value_cell(row.value)

    def metric_scalar(self, group):
        parts = []
        x, y, uses_steps = curve_points(group.rows)
        if all(not row.damaged and is_number(row.value) for row in group.rows):
            parts.append(self.figure(
                charts.curve_figure(group.name, [charts.Series(group.name, x, y)],
                                    _x_label([uses_steps]), legend=False, height=3.8),
                f"chart of metric {group.name}"))
        header = "Step" if uses_steps else "#"
        parts.append(html_table([header, "Value"],
                                [[xi, self.cell(row)] for xi, row in zip(x, group.rows)],
                                numeric=(0, 1), collapse_label=f"all {len(group.rows)} values"))
        return parts

    def metric_list(self, group):
        parts = []
        lists = [row.value if isinstance(row.value, list) else [row.value] for row in group.rows]
        for number, values in enumerate(lists, start=1):
            if len(values) > 1 and all(is_number(value) for value in values):
                title = group.name if len(lists) == 1 else f"{group.name} (list {number})"
                parts.append(self.figure(
                    charts.curve_figure(title, [charts.Series(title, list(range(1, len(values) + 1)),
                                                              values)], "index", legend=False,
                                        height=3.8),
                    f"chart of list metric {group.name}"))
        headers = ["#"] + (["Value"] if len(lists) == 1 else
                           [f"List {number}" for number in range(1, len(lists) + 1)])
        length = max((len(values) for values in lists), default=0)
        rows = [[index + 1] + [value_cell(values[index]) if index < len(values) else ""
                               for values in lists] for index in range(length)]
        parts.append(html_table(headers, rows, numeric=tuple(range(len(headers)))))
        return parts

    def metric_row(self, group):
        columns = []
        for row in group.rows:
            for column in (row.value if isinstance(row.value, dict) else {"value": row.value}):
                if column not in columns:
                    columns.append(column)
        rows = []
        for row in group.rows:
            cells = row.value if isinstance(row.value, dict) else {"value": row.value}
            rows.append([value_cell(cells[column]) if column in cells else ""
                         for column in columns])
        return [html_table(columns, rows)]

    def metric_table(self, group):
        parts = []
        for number, row in enumerate(group.rows, start=1):
            if not isinstance(row.value, dict):
                parts.append(_json_block(row.value))
                continue
            columns = {column: cells if isinstance(cells, list) else [cells]
                       for column, cells in row.value.items()}
            length = max((len(cells) for cells in columns.values()), default=0)
            if len(group.rows) > 1:
                parts.append(Markup(f"<h4>Table {number}</h4>"))
            parts.append(html_table(
                list(columns),
                [[value_cell(cells[index]) if index < len(cells) else "" for cells in columns.values()]
                 for index in range(length)]))
        return parts

    def metric_image(self, group):
        parts = []
        for row in group.rows:
            name = row.value.get("file") if isinstance(row.value, dict) else None
            if not isinstance(name, str):
                parts.append(Markup('<p class="note">An image metric without a file:</p>'))
                parts.append(_json_block(row.value))
                continue
            try:
                with self.store.open_verified_file(self.details["id"], name) as handle:
                    small = os.fstat(handle.fileno()).st_size <= MAX_EMBEDDED_IMAGE_BYTES
                    data = handle.read() if small else None
            except (AmlocalError, OSError) as error:
                parts.append(Markup(f'<p class="note">Image {esc(name)} cannot be shown: '
                                    f"{esc(error)}</p>"))
                continue
            if data is None:
                parts.append(Markup(f'<p class="note">Image {esc(name)} is larger than '
                                    f"{MAX_EMBEDDED_IMAGE_BYTES >> 20} MB and is not embedded; "
                                    "it is in the run's files.</p>"))
                continue
            mime = _image_mime(data)
            if mime is None:
                parts.append(Markup(f'<p class="note">{esc(name)} is not an image format a browser '
                                    "shows (PNG, JPEG, GIF, WebP, SVG); it is in the run's files.</p>"))
                continue
            self.images += 1
            parts.append(Markup(
                f'<figure class="image"><img alt="{esc(group.name)}" src="{_png_data_uri(data, mime)}">'
                f"<figcaption>{esc(name)}</figcaption></figure>"))
        return parts

    def metric_confusion_matrix(self, group):
        parts = []
        for row in group.rows:
            data = row.value.get("data") if isinstance(row.value, dict) else None
            labels = data.get("class_labels") if isinstance(data, dict) else None
            matrix = data.get("matrix") if isinstance(data, dict) else None
            valid = (isinstance(labels, list) and isinstance(matrix, list)
                     and len(matrix) == len(labels) and labels
                     and all(isinstance(line, list) and len(line) == len(labels)
                             and all(is_number(cell) for cell in line) for line in matrix))
            if not valid:
                parts.append(Markup('<p class="note">Not a valid confusion matrix '
                                    "(class_labels and a square matrix of numbers expected):</p>"))
                parts.append(_json_block(row.value))
                continue
            parts.append(self.figure(charts.confusion_matrix_figure(group.name, labels, matrix),
                                     f"confusion matrix {group.name}"))
            parts.append(html_table(
                ["True \\ Predicted"] + [text_of(label) for label in labels],
                [[text_of(label)] + [value_cell(cell) for cell in line]
                 for label, line in zip(labels, matrix)],
                numeric=tuple(range(1, len(labels) + 1))))
        return parts

    def metric_accuracy_table(self, group):
        parts = []
        for row in group.rows:
            data = row.value.get("data") if isinstance(row.value, dict) else None
            if not isinstance(data, dict):
                parts.append(_json_block(row.value))
                continue
            labels = data.get("class_labels") or []
            if labels:
                parts.append(Markup(f'<p class="note">Classes: {esc(", ".join(map(text_of, labels)))}</p>'))
            for kind in ("probability", "percentile"):
                tables = data.get(f"{kind}_tables")
                thresholds = data.get(f"{kind}_thresholds")
                if tables is None:
                    continue
                rows = _accuracy_rows(tables, thresholds, labels)
                parts.append(Markup(f"<h4>{kind.capitalize()} tables</h4>"))
                if rows is None:
                    parts.append(_json_block({f"{kind}_tables": tables,
                                              f"{kind}_thresholds": thresholds}))
                else:
                    parts.append(html_table(["Class", "Threshold", "TP", "FP", "TN", "FN"], rows,
                                            numeric=(1, 2, 3, 4, 5),
                                            collapse_label=f"all {len(rows)} rows"))
        return parts

    def metric_residuals(self, group):
        parts = []
        for row in group.rows:
            data = row.value.get("data") if isinstance(row.value, dict) else None
            edges = data.get("bin_edges") if isinstance(data, dict) else None
            counts = data.get("bin_counts") if isinstance(data, dict) else None
            if not (_numbers(edges) and _numbers(counts) and len(edges) == len(counts) + 1 and counts):
                parts.append(_json_block(row.value))
                continue
            parts.append(self.figure(charts.residuals_figure(group.name, edges, counts),
                                     f"residuals {group.name}"))
            parts.append(html_table(["From", "To", "Count"],
                                    [[value_cell(edges[i]), value_cell(edges[i + 1]),
                                      value_cell(count)] for i, count in enumerate(counts)],
                                    numeric=(0, 1, 2)))
        return parts

    def metric_predictions(self, group):
        parts = []
        for row in group.rows:
            data = row.value.get("data") if isinstance(row.value, dict) else None
            if not isinstance(data, dict):
                parts.append(_json_block(row.value))
                continue
            edges, averages = data.get("bin_edges"), data.get("bin_averages")
            errors, counts = data.get("bin_errors"), data.get("bin_counts")
            if (_numbers(edges) and _numbers(averages) and _numbers(errors) and averages
                    and len(edges) == len(averages) + 1 and len(errors) == len(averages)):
                parts.append(self.figure(
                    charts.predictions_figure(group.name, edges, averages, errors),
                    f"predictions {group.name}"))
                counts = counts if _numbers(counts) and len(counts) == len(averages) else [None] * len(averages)
                parts.append(html_table(
                    ["From", "To", "Count", "Average prediction", "Error"],
                    [[value_cell(edges[i]), value_cell(edges[i + 1]),
                      "" if counts[i] is None else value_cell(counts[i]), value_cell(averages[i]),
                      value_cell(errors[i])] for i in range(len(averages))],
                    numeric=(0, 1, 2, 3, 4)))
            else:
                parts.append(_json_block(row.value))
        return parts

    def metric_other(self, group):
        return [_json_block(row.value) for row in group.rows]

    # the rest ----------------------------------------------------------------------------

    def tags_and_properties(self):
        parts = []
        for title, values in (("Tags", self.details["tags"]), ("Properties", self.details["properties"])):
            parts.append(Markup(f"<h3>{esc(title)}</h3>"))
            if values:
                parts.append(html_table(["Key", "Value"],
                                        [[key, text_of(value)] for key, value in values.items()]))
            else:
                parts.append(Markup(f'<p class="note">No {title.lower()}.</p>'))
        return self.section("tags", "Tags and properties", parts)

    def files(self):
        rows = []
        for name in self.handle.get_file_names():
            try:
                size = self.store.file_path(self.details["id"], name).stat().st_size
                size_cell = Markup(f'<span title="{size} bytes">{esc(_size(size))}</span>')
            except (AmlocalError, OSError):
                size_cell = "gone"
            rows.append([printable(name), size_cell])
        if not rows:
            return self.section("files", "Files", [Markup('<p class="note">No files.</p>')])
        return self.section("files", "Files",
                            [html_table(["Name", "Size"], rows, numeric=(1,),
                                        collapse_label=f"all {len(rows)} files")])

    def driver_log(self):
        lines, truncated = tail_lines(self.store.run_dir(self.details["id"]) / DRIVER_LOG)
        if lines is None:
            return self.section("log", "Driver log", [Markup('<p class="note">No driver log.</p>')])
        note = (f"The last {len(lines)} lines of {DRIVER_LOG}." if truncated
                else f"{DRIVER_LOG}, {len(lines)} lines.")
        return self.section("log", "Driver log", [
            Markup(f'<p class="note">{esc(note)}</p>'),
            Markup(f'<pre class="log">{esc(_ANSI_ESCAPE.sub("", chr(10).join(lines)))}</pre>'),
        ])

    @staticmethod
    def section(anchor, title, parts):
        return Markup(f'<section id="{anchor}"><h2>{esc(title)}</h2>'
                      + "".join(esc(part) for part in parts) + "</section>")

    def sweep(self):
        """A sweep's children: the primary metric against each hyperparameter, their curves
        (early-terminated ones marked), and a table of all of them."""
        from amlocal.backends.local.sweep import child_summaries, primary_values

        metric = self.details["sweep"]["primary_metric_config"]["name"]
        children = child_summaries(self.handle)
        if not children:
            return self.section("sweep", "Sweep", [Markup('<p class="note">No child runs yet.</p>')])
        terminated = {child["run_id"] for child in children
                      if child["status"] == "Canceled" and "policy" in (child["error"] or "")}
        parts = [Markup(f'<p class="note">{esc(self.details["stages"][2]["detail"])}</p>')]
        parameters = sorted({name for child in children for name in (child["hyperparameters"] or {})})
        for parameter in parameters:
            points = [(child["hyperparameters"][parameter], child["best_primary_metric"],
                       child["run_id"] in terminated) for child in children
                      if child["hyperparameters"] and child["best_primary_metric"] is not None]
            if points:
                parts.append(self.figure(charts.sweep_scatter_figure(parameter, points, metric),
                                         f"{metric} against {parameter}"))
        series = [charts.Series(child["run_id"], list(range(1, len(values) + 1)), values)
                  for child in children
                  for values in [primary_values(self.store, child["run_id"], metric)] if values]
        if series:
            parts.append(self.figure(charts.sweep_curves_figure(metric, series, terminated),
                                     f"{metric} of each child run"))
        rows = [[child["run_id"], badge(child["status"]), child["best_primary_metric"],
                 child["last_primary_metric"], json.dumps(child["hyperparameters"]),
                 child["error"] if child["run_id"] in terminated else None] for child in children]
        parts.append(html_table(["Child run", "Status", f"Best {metric}", f"Last {metric}",
                                 "Hyperparameters", "Terminated because"], rows, numeric=(2, 3),
                                nowrap=(0, 1)))
        return self.section("sweep", "Sweep", parts)

    def html(self):
        sweep = [self.sweep()] if self.details.get("sweep") else []
        body = [self.header(), *sweep, self.stages(), self.status_history(), self.metrics(),
                self.tags_and_properties(), self.files(), self.driver_log()]
        nav = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in (
            *((("sweep", "Sweep"),) if sweep else ()),
            ("stages", "Stages"), ("status-history", "Status history"), ("metrics", "Metrics"),
            ("tags", "Tags and properties"), ("files", "Files"), ("log", "Driver log")))
        generated = iso_time(self.now)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Run {esc(self.details['id'])}: {esc(self.details['status'])}</title>"
            f"<style>{_CSS}</style></head><body><main>"
            f"<nav>{nav}</nav>" + "".join(body)
            + f'<p class="note">Written by amlocal at {esc(generated)}.</p>'
            "</main></body></html>\n")


def _json_block(value):
    return Markup(f'<pre class="json">{esc(json.dumps(value, indent=1, default=str))}</pre>')


def _numbers(values):
    return isinstance(values, list) and all(is_number(value) for value in values)


def _accuracy_rows(tables, thresholds, labels):
    """Rows (class, threshold, TP, FP, TN, FN) of an accuracy table; None if it is not shaped so."""
    if not isinstance(tables, list) or not isinstance(thresholds, list):
        return None
    rows = []
    for index, per_class in enumerate(tables):
        if not isinstance(per_class, list) or len(per_class) != len(thresholds):
            return None
        label = labels[index] if index < len(labels) else index
        for threshold, counts in zip(thresholds, per_class):
            if not (isinstance(counts, list) and len(counts) == 4):
                return None
            rows.append([text_of(label), value_cell(threshold), *(value_cell(count) for count in counts)])
    return rows


def write_report(handle, out_dir, now=None):
    """Write the run's report to out_dir/index.html (atomically); return a summary dict.

    Works for a run in any status: a failed run shows its error, a live one its stages so far.
    """
    out_dir = make_output_folder(out_dir)
    report = _Report(handle, time.time() if now is None else now)
    document = report.html()
    # Whatever text escaped esc() (a chart title, a file name) is written escaped, not refused.
    path = write_atomically(out_dir / "index.html", document.encode("utf-8", "backslashreplace"))
    return {"file": str(path), "run_id": report.details["id"], "status": report.details["status"],
            "charts": report.charts, "images": report.images}

