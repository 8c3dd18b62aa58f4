"""The run page's view of each metric that is not a scalar curve, as the report shows them: lists
(a curve and their values), rows and tables (tables), images (from the run's files), confusion
matrices (a shaded table), accuracy tables, residuals (a bar chart), predictions, and anything
else as its JSON.

A group becomes a list of blocks, plain data that the template renders (escaped):
    {"kind": "table", "headers": [...], "rows": [[text, ...]]}
    {"kind": "chart", "chart": {...}}           drawn by the page with uPlot
    {"kind": "image", "url": ..., "caption": ...}
    {"kind": "heat", "labels": [...], "rows": [[{"text", "shade"}, ...]]}
    {"kind": "json", "text": ...} and {"kind": "note", "text": ...}
"""

import json
from urllib.parse import quote

from amlocal.backends.history.metric_shapes import (accuracy_rows, confusion_matrix, is_number,
                                                    text_of)

MAX_TABLE_ROWS = 1000  # longer tables show their first rows; the values are in the JSON download


def _numbers(values):
    return isinstance(values, list) and bool(values) and all(is_number(value) for value in values)


def _json(value):
    return {"kind": "json", "text": json.dumps(value, indent=1, default=str)}


def _table(headers, rows):
    shown = rows[:MAX_TABLE_ROWS]
    block = {"kind": "table", "headers": [text_of(header) for header in headers],
             "rows": [[text_of(cell) if cell != "" else "" for cell in row] for row in shown]}
    if len(rows) > len(shown):
        block["more"] = len(rows) - len(shown)
    return block


def _data(row):
    data = row["value"].get("data") if isinstance(row["value"], dict) else None
    return data if isinstance(data, dict) else None


def group_blocks(name, kind, rows, run_id):
    """{name, type, count, description, blocks} for one metric name and type."""
    render = {"scalar": _scalars, "list": _lists, "row": _rows, "table": _tables,
              "image": _images, "confusion_matrix": _confusion, "accuracy_table": _accuracy,
              "residuals": _residuals, "predictions": _predictions}.get(kind)
    damaged = [row for row in rows if row["damaged"]]
    intact = [row for row in rows if not row["damaged"]]
    blocks = [] if render is None else render(name, intact, run_id)
    if render is None:
        blocks = [_json(row["value"]) for row in intact]
    if damaged:
        blocks.append({"kind": "note", "text": f"{len(damaged)} damaged value(s), not JSON: "
                       + "; ".join(str(row["value"])[:200] for row in damaged[:5])})
    return {"name": name, "type": kind, "count": len(rows),
            "description": next((row["description"] for row in rows if row["description"]), ""),
            "blocks": blocks}


def _scalars(name, rows, run_id):  # a scalar logged once with a damaged twin, or text values
    return [_table(["#", "Value", "Step"], [[index + 1, row["value"], row["step"]]
                                            for index, row in enumerate(rows)])]


def _lists(name, rows, run_id):
    blocks = []
    lists = [row["value"] if isinstance(row["value"], list) else [row["value"]] for row in rows]
    for number, values in enumerate(lists, start=1):
        if len(values) > 1 and _numbers(values):
            blocks.append({"kind": "chart", "chart": {
                "type": "line", "title": name if len(lists) == 1 else f"{name} (list {number})",
                "x": list(range(1, len(values) + 1)), "y": values, "xlabel": "index"}})
    headers = ["#"] + (["Value"] if len(lists) == 1 else
                       [f"List {number}" for number in range(1, len(lists) + 1)])
    length = max((len(values) for values in lists), default=0)
    blocks.append(_table(headers, [[index + 1] + [values[index] if index < len(values) else ""
                                                  for values in lists] for index in range(length)]))
    return blocks


def _rows(name, rows, run_id):
    columns = []
    for row in rows:
        for column in (row["value"] if isinstance(row["value"], dict) else {"value": row["value"]}):
            if column not in columns:
                columns.append(column)
    cells = [row["value"] if isinstance(row["value"], dict) else {"value": row["value"]}
             for row in rows]
    return [_table(columns, [[line.get(column, "") for column in columns] for line in cells])]


def _tables(name, rows, run_id):
    blocks = []
    for row in rows:
        if not isinstance(row["value"], dict):
            blocks.append(_json(row["value"]))
            continue
        columns = {column: cells if isinstance(cells, list) else [cells]
                   for column, cells in row["value"].items()}
        length = max((len(cells) for cells in columns.values()), default=0)
        blocks.append(_table(list(columns), [[cells[index] if index < len(cells) else ""
                                              for cells in columns.values()]
                                             for index in range(length)]))
    return blocks


def _images(name, rows, run_id):
    blocks = []
    for row in rows:
        file_name = row["value"].get("file") if isinstance(row["value"], dict) else None
        if not isinstance(file_name, str):
            blocks += [{"kind": "note", "text": "An image metric without a file:"},
                       _json(row["value"])]
            continue
        blocks.append({"kind": "image", "caption": file_name,
                       "url": f"/runs/{quote(run_id, safe='')}/image?name={quote(file_name, safe='')}",
                       "download": f"/runs/{quote(run_id, safe='')}/download?name={quote(file_name, safe='')}"})
    return blocks


def _confusion(name, rows, run_id):
    blocks = []
    for row in rows:
        checked = confusion_matrix(_data(row) or {})
        if checked is None:
            blocks += [{"kind": "note", "text": "Not a valid confusion matrix (class_labels and a "
                        "square matrix of numbers expected):"}, _json(row["value"])]
            continue
        labels, matrix = checked
        top = max(max(line) for line in matrix) or 1
        blocks.append({"kind": "heat", "labels": [text_of(label) for label in labels],
                       "rows": [{"label": text_of(label),
                                 "cells": [{"text": text_of(cell),
                                            "shade": max(0, min(9, int(9 * cell / top)))}
                                           for cell in line]}
                                for label, line in zip(labels, matrix)]})
    return blocks


def _accuracy(name, rows, run_id):
    blocks = []
    for row in rows:
        data = _data(row)
        if data is None:
            blocks.append(_json(row["value"]))
            continue
        labels = data.get("class_labels") or []
        for kind in ("probability", "percentile"):
            tables, thresholds = data.get(f"{kind}_tables"), data.get(f"{kind}_thresholds")
            if tables is None:
                continue
            lines = accuracy_rows(tables, thresholds, labels)
            if lines is None:
                blocks.append(_json({f"{kind}_tables": tables, f"{kind}_thresholds": thresholds}))
            else:
                blocks.append({"kind": "note", "text": f"{kind.capitalize()} tables"})
                blocks.append(_table(["Class", "Threshold", "TP", "FP", "TN", "FN"], lines))
    return blocks


def _residuals(name, rows, run_id):
    blocks = []
    for row in rows:
        data = _data(row) or {}
        edges, counts = data.get("bin_edges"), data.get("bin_counts")
        if not (_numbers(edges) and _numbers(counts) and len(edges) == len(counts) + 1):
            blocks.append(_json(row["value"]))
            continue
        blocks.append({"kind": "chart", "chart": {
            "type": "bars", "title": name, "xlabel": "residual",
            "x": [(edges[i] + edges[i + 1]) / 2 for i in range(len(counts))], "y": counts}})
        blocks.append(_table(["From", "To", "Count"],
                             [[edges[i], edges[i + 1], count] for i, count in enumerate(counts)]))
    return blocks


def _predictions(name, rows, run_id):
    blocks = []
    for row in rows:
        data = _data(row) or {}
        edges, averages = data.get("bin_edges"), data.get("bin_averages")
        errors = data.get("bin_errors")
        if not (_numbers(edges) and _numbers(averages) and _numbers(errors)
                and len(edges) == len(averages) + 1 and len(errors) == len(averages)):
            blocks.append(_json(row["value"]))
            continue
        centers = [(edges[i] + edges[i + 1]) / 2 for i in range(len(averages))]
        blocks.append({"kind": "chart", "chart": {
            "type": "line", "title": name, "xlabel": "true value", "x": centers, "y": averages}})
        blocks.append(_table(["From", "To", "Average prediction", "Error"],
                             [[edges[i], edges[i + 1], averages[i], errors[i]]
                              for i in range(len(averages))]))
    return blocks
