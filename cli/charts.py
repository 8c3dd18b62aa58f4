"""Charts for `amlocal runs compare` and `amlocal runs report`, drawn with matplotlib.

Pure rendering: each function takes plain values, builds its own `matplotlib.figure.Figure` on an
Agg canvas and returns it. Nothing goes through pyplot, so no figure is kept in a global registry
(a report with a hundred charts leaks none) and no GUI backend is ever chosen; tests inspect the
returned Figure (`figure.axes[0].get_lines()`, ...). `png_bytes` renders one to PNG.
"""

import io
import math
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100

# Status colors, shared with the HTML report: Azure ML studio's palette in spirit.
STATUS_COLORS = {
    "Completed": "#2e7d32",
    "Failed": "#c62828",
    "Canceled": "#ef6c00",
    "CancelRequested": "#ef6c00",
    "Running": "#1565c0",
    "Finalizing": "#1565c0",
    "Preparing": "#6a1b9a",
    "Starting": "#6a1b9a",
    "Queued": "#6d4c41",
    "NotStarted": "#9e9e9e",
    "NotResponding": "#ad1457",
}
DEFAULT_COLOR = "#607d8b"


def status_color(status):
    return STATUS_COLORS.get(status, DEFAULT_COLOR)


@dataclass
class Series:
    """One curve: `label` for the legend, x and y of equal length."""

    label: str
    x: list
    y: list


def new_figure(width, height):
    """A Figure of width x height inches on its own Agg canvas (no pyplot)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure):
    """The figure as PNG bytes, at its own size (width*DPI x height*DPI pixels)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _plottable(value):
    """A y value matplotlib can draw: infinities become gaps like NaN."""
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _shorten(text, limit=60):
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def curve_figure(title, series, x_label, y_label=None, legend=True, height=4.8):
    """Line chart of one metric: one line per series, markers while points are few.

    The legend (one entry per series) goes below the plot, outside it, so long run ids never
    cover a curve; the figure grows with the number of entries.
    """
    rows = len(series) if legend and len(series) > 1 else 0
    figure = new_figure(9, height + 0.28 * rows)
    ax = figure.add_subplot()
    few = max((len(item.y) for item in series), default=0) <= 60
    for item in series:
        ax.plot(item.x, [_plottable(value) for value in item.y], label=item.label,
                marker="o" if few else None, markersize=4, linewidth=1.6)
    ax.set_title(_shorten(title, 90), fontsize=13)
    ax.set_xlabel(x_label)
    if y_label:
        ax.set_ylabel(_shorten(y_label, 40))
    ax.grid(True, alpha=0.3)
    if all(float(x).is_integer() for item in series for x in item.x):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if rows:
        figure.legend(loc="outside lower center", ncols=1, fontsize=9, frameon=False)
    return figure


@dataclass
class StageBar:
    """A stage on the timeline, in seconds since the run was created (None: not started/ended)."""

    name: str
    status: str
    start_s: float = None
    end_s: float = None


def _duration_text(seconds):
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def timeline_figure(stages, now_s=None):
    """Gantt chart of the stages: a horizontal bar from each stage's start to its end.

    Bars are colored by the stage's status; a stage still going is drawn up to `now_s`, hatched;
    one not started has no bar. Every bar gets its status and duration written after it, and a
    very short stage is drawn a sliver wide so that it can still be seen next to a long one. The
    axis is in seconds, or minutes or hours for long runs.
    """
    figure = new_figure(9, 1.0 + 0.45 * max(len(stages), 1))
    ax = figure.add_subplot()
    ends = [stage.end_s for stage in stages if stage.end_s is not None]
    ends += [stage.start_s for stage in stages if stage.start_s is not None]
    if now_s is not None and any(stage.start_s is not None and stage.end_s is None for stage in stages):
        ends.append(now_s)
    span_s = max(ends + [0.001])
    unit, scale = (("hours", 3600.0) if span_s > 3 * 3600 else
                   ("minutes", 60.0) if span_s > 300 else ("seconds", 1.0))
    span = span_s / scale
    sliver = span * 0.004
    for row, stage in enumerate(stages):
        color = status_color(stage.status)
        if stage.start_s is None:
            ax.text(0, row, f"  {stage.status}", va="center", ha="left", fontsize=9, color=color)
            continue
        going = stage.end_s is None
        end_s = (now_s if now_s is not None else stage.start_s) if going else stage.end_s
        start, width = stage.start_s / scale, max((end_s - stage.start_s) / scale, sliver)
        ax.barh(row, width, left=start, height=0.55, color=color,
                hatch="//" if going else None, edgecolor="white" if going else color)
        label = f"{stage.status}, {_duration_text(end_s - stage.start_s)}" + (" so far" if going else "")
        ax.text(start + width + span * 0.01, row, label, va="center", ha="left", fontsize=9,
                color="#222222")
    ax.set_yticks(range(len(stages)), [stage.name for stage in stages])
    ax.set_ylim(len(stages) - 0.5, -0.5)  # first stage on top
    ax.set_xlim(0, span * 1.32)  # room for the text after the last bar
    ax.set_xlabel(f"{unit} since the run was created")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return figure


def confusion_matrix_figure(title, class_labels, matrix):
    """Heatmap of a confusion matrix (rows: true class, columns: predicted), counts written in."""
    size = len(matrix)
    side = min(max(4.5, 0.55 * size + 2.5), 14)
    figure = new_figure(side + 1.2, side)
    ax = figure.add_subplot()
    values = [[_plottable(cell) for cell in row] for row in matrix]
    image = ax.imshow(values, cmap="Blues", aspect="equal")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    labels = [_shorten(label, 18) for label in class_labels]
    long_labels = max((len(label) for label in labels), default=0) > 3
    ax.set_xticks(range(size), labels, rotation=45 if long_labels else 0,
                  ha="right" if long_labels else "center", rotation_mode="anchor")
    ax.set_yticks(range(size), labels)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(_shorten(title, 60), fontsize=13)
    finite = [cell for row in values for cell in row if not math.isnan(cell)]
    if size <= 30 and finite:
        high = max(finite)
        for i, row in enumerate(values):
            for j, cell in enumerate(row):
                if math.isnan(cell):
                    continue
                text = f"{cell:g}" if float(cell).is_integer() else f"{cell:.2g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if size > 12 else 10,
                        color="white" if high and cell > high * 0.55 else "#1a1a1a")
    return figure


def residuals_figure(title, bin_edges, bin_counts):
    """Histogram of residuals from pre-computed bins (one more edge than counts)."""
    figure = new_figure(9, 4.5)
    ax = figure.add_subplot()
    widths = [bin_edges[i + 1] - bin_edges[i] for i in range(len(bin_counts))]
    ax.bar(bin_edges[:-1], bin_counts, width=widths, align="edge", color="#1565c0",
           edgecolor="white")
    ax.set_title(_shorten(title, 90), fontsize=13)
    ax.set_xlabel("residual (true - predicted)")
    ax.set_ylabel("count")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return figure


def predictions_figure(title, bin_edges, bin_averages, bin_errors):
    """Predicted vs true: the mean prediction of each bin of true values, with its error bar,
    against the ideal line."""
    figure = new_figure(9, 5)
    ax = figure.add_subplot()
    centers = [(bin_edges[i] + bin_edges[i + 1]) / 2 for i in range(len(bin_averages))]
    ax.errorbar(centers, bin_averages, yerr=bin_errors, fmt="o", color="#1565c0", capsize=3,
                label="mean prediction per bin")
    low, high = bin_edges[0], bin_edges[-1]
    ax.plot([low, high], [low, high], linestyle="--", color="#888888", label="ideal")
    ax.set_title(_shorten(title, 90), fontsize=13)
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    return figure


def sweep_scatter_figure(parameter, points, metric):
    """The primary metric against one hyperparameter: a point per child run.

    `points` are (value, metric, terminated) with terminated children drawn as red crosses. A
    hyperparameter whose values are not all numbers is drawn over its categories, in order of
    first appearance.
    """
    figure = new_figure(6.2, 3.6)
    ax = figure.add_subplot()
    numeric = all(isinstance(value, (int, float)) and not isinstance(value, bool)
                  for value, _metric, _terminated in points)
    categories = list(dict.fromkeys(str(value) for value, _m, _t in points))

    def position(value):
        return value if numeric else categories.index(str(value))

    for terminated, style in ((False, dict(marker="o", color="#1a7f37", label="completed")),
                              (True, dict(marker="x", color="#cf222e", label="terminated early"))):
        chosen = [(position(value), metric_value) for value, metric_value, flag in points
                  if flag == terminated]
        if chosen:
            ax.scatter([x for x, _ in chosen], [_plottable(y) for _, y in chosen], s=36, **style)
    if not numeric:
        ax.set_xticks(range(len(categories)), [_shorten(c, 16) for c in categories])
    ax.set_title(f"{_shorten(metric, 40)} against {_shorten(parameter, 40)}", fontsize=12)
    ax.set_xlabel(_shorten(parameter, 50))
    ax.set_ylabel(_shorten(metric, 40))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    return figure


def sweep_curves_figure(metric, series, terminated):
    """Every child's primary-metric curve; the children in `terminated` (labels) dashed, ending
    in a red cross where the policy stopped them."""
    figure = curve_figure(f"{metric} of each child run", series, "interval (times logged)",
                          y_label=metric, legend=True)
    ax = figure.axes[0]
    for line, item in zip(ax.get_lines(), series):
        if item.label in terminated and item.y:
            line.set_linestyle("--")
            ax.plot([item.x[-1]], [_plottable(item.y[-1])], marker="x", markersize=10,
                    color="#cf222e", linestyle="none")
    return figure
