"""The report's sections, one renderer each: the run and its stages, status history, metrics
(curves, tables, and the drawn types), images, files, the log tail, a sweep's children."""

import json
import os
import shlex

from amlocal.backends.base import numeric_values
from amlocal.backends.history.metric_shapes import accuracy_rows, confusion_matrix
# Display helpers of the history (text of a stored name, of a stored time), no store access.
from amlocal.backends.history.run_folder import printable
from amlocal.backends.history.store import iso_time
from amlocal.cli import charts
from amlocal.cli.report.html import (ANSI_ESCAPE, CSP, CSS, Markup, badge, esc, figure_html,
                                     html_table, image_mime, parse_iso, png_data_uri, seconds_text,
                                     size_text, text_of, value_cell)
from amlocal.cli.report.metrics import (curve_points, group_metrics, is_number, read_metric_rows,
                                        x_label)
from amlocal.errors import AmlocalError

MAX_EMBEDDED_IMAGE_BYTES = 20 << 20


class Report:
    """Builds the HTML of one run's report, section by section."""

    def __init__(self, handle, now):
        self.handle = handle
        self.now = now
        self.details = handle.get_details()
        self.created = parse_iso(self.details["created_at"])
        self.charts = 0
        self.images = 0

    def figure(self, figure, alt):
        self.charts += 1
        return figure_html(figure, alt)

    # header ------------------------------------------------------------------------------

    def header(self):
        details = self.details
        if details["duration_s"] is not None:
            duration = seconds_text(details["duration_s"])
        else:
            duration = f"{seconds_text(max(self.now - self.created, 0))} so far (still {details['status']})"
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
        if not self.details["stages"]:  # a run on Azure ML: its stages are on its portal page
            where = self.details.get("portal_url")
            return self.section("stages", "Stages", [Markup(
                '<p class="note">No stages recorded here'
                + (f": see the run's page, {esc(where)}" if where else "") + ".</p>")])
        bars, rows = [], []
        for stage in self.details["stages"]:
            start, end = parse_iso(stage["started_at"]), parse_iso(stage["ended_at"])
            bars.append(charts.StageBar(
                stage["name"], stage["status"],
                None if start is None else max(start - self.created, 0),
                None if end is None else max(end - self.created, 0)))
            if stage["duration_s"] is not None:
                duration = seconds_text(stage["duration_s"])
            elif start is not None:
                duration = f"{seconds_text(max(self.now - start, 0))} so far"
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
        rows = [[badge(status), iso_time(at), f"+{seconds_text(max(at - self.created, 0))}"]
                for status, at in self.handle.get_status_history()]
        return self.section("status-history", "Status history",
                            [html_table(["Status", "At", "Since created"], rows, numeric=(2,),
                                        nowrap=(1, 2))])

    # metrics -----------------------------------------------------------------------------

    def metrics(self):
        groups = group_metrics(read_metric_rows(self.handle))
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
                                    x_label([uses_steps]), legend=False, height=3.8),
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
                with self.handle.open_file(name) as handle:
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
            mime = image_mime(data)
            if mime is None:
                parts.append(Markup(f'<p class="note">{esc(name)} is not an image format a browser '
                                    "shows (PNG, JPEG, GIF, WebP, SVG); it is in the run's files.</p>"))
                continue
            self.images += 1
            parts.append(Markup(
                f'<figure class="image"><img alt="{esc(group.name)}" src="{png_data_uri(data, mime)}">'
                f"<figcaption>{esc(name)}</figcaption></figure>"))
        return parts

    def metric_confusion_matrix(self, group):
        parts = []
        for row in group.rows:
            checked = confusion_matrix(_artifact_data(row) or {})
            if checked is None:
                parts.append(Markup('<p class="note">Not a valid confusion matrix '
                                    "(class_labels and a square matrix of numbers expected):</p>"))
                parts.append(_json_block(row.value))
                continue
            labels, matrix = checked
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
        for _row, data in _rows_with_data(group, parts):
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
            data = _artifact_data(row) or {}
            edges, counts = data.get("bin_edges"), data.get("bin_counts")
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
        for row, data in _rows_with_data(group, parts):
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
        for name, size in self.handle.get_file_sizes().items():
            size_cell = ("unknown" if size is None else
                         Markup(f'<span title="{size} bytes">{esc(size_text(size))}</span>'))
            rows.append([printable(name), size_cell])
        if not rows:
            return self.section("files", "Files", [Markup('<p class="note">No files.</p>')])
        return self.section("files", "Files",
                            [html_table(["Name", "Size"], rows, numeric=(1,),
                                        collapse_label=f"all {len(rows)} files")])

    def driver_log(self):
        tail = self.handle.get_log_tail()
        if tail is None:
            return self.section("log", "Driver log", [Markup('<p class="note">No driver log.</p>')])
        lines = tail["lines"]
        note = (f"The last {len(lines)} lines of {tail['name']}." if tail["truncated"]
                else f"{tail['name']}, {len(lines)} lines.")
        return self.section("log", "Driver log", [
            Markup(f'<p class="note">{esc(note)}</p>'),
            Markup(f'<pre class="log">{esc(ANSI_ESCAPE.sub("", chr(10).join(lines)))}</pre>'),
        ])

    @staticmethod
    def section(anchor, title, parts):
        return Markup(f'<section id="{anchor}"><h2>{esc(title)}</h2>'
                      + "".join(esc(part) for part in parts) + "</section>")

    def sweep(self):
        """A sweep's children: the primary metric against each hyperparameter, their curves
        (early-terminated ones marked), and a table of all of them."""
        metric = self.details["sweep"]["primary_metric_config"]["name"]
        children = self.handle.get_child_summaries()
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
        series = [charts.Series(child.id, list(range(1, len(values) + 1)), values)
                  for child in self.handle.get_children()
                  for values in [numeric_values(child.get_metric_records(), metric)] if values]
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
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Run {esc(self.details['id'])}: {esc(self.details['status'])}</title>"
            f"<style>{CSS}</style></head><body><main>"
            f"<nav>{nav}</nav>" + "".join(body)
            + f'<p class="note">Written by amlocal at {esc(generated)}.</p>'
            "</main></body></html>\n")


def _artifact_data(row):
    """The "data" object of an artifact metric's row (log_confusion_matrix and the like), or
    None where the row is not of that shape (it is then shown as its JSON)."""
    data = row.value.get("data") if isinstance(row.value, dict) else None
    return data if isinstance(data, dict) else None


def _rows_with_data(group, parts):
    """(row, its data object) for the group's rows of the artifact shape; any other row is shown
    in `parts` as its JSON."""
    for row in group.rows:
        data = _artifact_data(row)
        if data is None:
            parts.append(_json_block(row.value))
        else:
            yield row, data


def _json_block(value):
    return Markup(f'<pre class="json">{esc(json.dumps(value, indent=1, default=str))}</pre>')


def _numbers(values):
    return isinstance(values, list) and all(is_number(value) for value in values)


def _accuracy_rows(tables, thresholds, labels):
    """Table rows (class, threshold, TP, FP, TN, FN) of an accuracy table; None if it is not shaped so."""
    rows = accuracy_rows(tables, thresholds, labels)
    return None if rows is None else [[text_of(label), *(value_cell(cell) for cell in cells)]
                                      for label, *cells in rows]
