"""What a stored metric value means, for the two places that show one (the static report,
cli/report/, and the web UI, ui/): the text of a value, of a size, and the checked shapes of the
artifact metrics (confusion matrix, accuracy table). No store access: plain values in and out."""

import json


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def text_of(value):
    """A value as a page shows it (floats with 6 significant digits, JSON for containers)."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def size_text(size):
    """A size in bytes as B, KB, MB or GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def confusion_matrix(data):
    """(class labels, matrix) of a confusion_matrix metric's data, or None where it is not
    class_labels and a square matrix of numbers as large."""
    labels, matrix = data.get("class_labels"), data.get("matrix")
    valid = (isinstance(labels, list) and isinstance(matrix, list) and labels
             and len(matrix) == len(labels)
             and all(isinstance(line, list) and len(line) == len(labels)
                     and all(is_number(cell) for cell in line) for line in matrix))
    return (labels, matrix) if valid else None


def accuracy_rows(tables, thresholds, labels):
    """Rows (class label, threshold, TP, FP, TN, FN) of an accuracy table's probability or
    percentile tables; None if they are not shaped so."""
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
            rows.append([label, threshold, *counts])
    return rows
