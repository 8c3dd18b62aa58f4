"""`amlocal runs compare` and `amlocal runs report` against real runs in a real run history.

The runs are real process-executor runs whose scripts log through `azureml.core.run`; the richer
metric types (list, row, table, image, confusion matrix, accuracy table, residuals, predictions)
are added as rows of the run history's metrics table in the shapes the run-side API writes.
"""

import base64
import io
import json
import re
import subprocess
import sys
import time
from html.parser import HTMLParser

import matplotlib.image
from matplotlib.colors import to_rgb
import numpy as np
import pytest
from click.testing import CliRunner

from amlocal.backends import get_backend
from amlocal.backends.history.store import RunStore
from amlocal.cli import charts, report
from amlocal.cli.main import cli
from conftest import write_script

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOG_LINES = 600  # the rich run prints more lines than the report keeps (500)

RICH_SCRIPT = f"""
import os
from azureml.core.run import Run
from matplotlib.figure import Figure

run = Run.get_context()
for step, loss in zip([0, 10, 20, 30], [0.9, 0.5, 0.3, 0.25]):
    run.log("loss", loss, step=step)
for accuracy in [0.5, 0.75, 0.875]:
    run.log("accuracy", accuracy, description="validation <accuracy>")
run.log("optimizer", "sgd <momentum> & nesterov")
run.log("learning rate", 0.0125)
run.tag("team", "vision & <ml>")
run.add_properties({{"dataset": "mnist-10k"}})

os.makedirs("outputs", exist_ok=True)
figure = Figure(figsize=(3, 2), dpi=100)
figure.add_subplot().plot([0, 1, 2], [2, 1, 0])
figure.savefig("outputs/loss_curve.png")
open("outputs/notes.txt", "w").write("notes")

for number in range({LOG_LINES}):
    print(f"log line {{number:04d}}")
print("\\x1b[32mgreen\\x1b[0m text")
print("<script>alert(1)</script>")
"""

OTHER_SCRIPT = """
from azureml.core.run import Run
run = Run.get_context()
for loss in [1.0, 0.8, 0.6, 0.5, 0.45]:
    run.log("loss", loss)
"""

FAILING_SCRIPT = """
import sys
from azureml.core.run import Run
run = Run.get_context()
run.log("loss", 2.0)
run.log("loss", 1.5)
print("about to fail: <bad & worse>")
sys.exit(3)
"""

CONFUSION = {"schema_type": "confusion_matrix", "schema_version": "1.0.0",
             "data": {"class_labels": ["cat", "dog", "<bird>"],
                      "matrix": [[50, 3, 1], [4, 40, 6], [0, 2, 44]]}}
ACCURACY_TABLE = {"schema_type": "accuracy_table", "schema_version": "1.0.1",
                  "data": {"probability_tables": [[[30, 20, 0, 0], [17, 3, 17, 13]],
                                                  [[20, 30, 0, 0], [11, 4, 26, 9]]],
                           "percentile_tables": [[[30, 20, 0, 0], [21, 7, 13, 9]],
                                                 [[20, 30, 0, 0], [13, 6, 24, 7]]],
                           "probability_thresholds": [0.0, 0.5],
                           "percentile_thresholds": [0.0, 50.0],
                           "class_labels": ["negative", "positive"]}}
RESIDUALS = {"schema_type": "residuals", "schema_version": "1.0.0",
             "data": {"bin_edges": [-1.0, -0.5, 0.0, 0.5, 1.0], "bin_counts": [3, 17, 21, 4]}}
PREDICTIONS = {"schema_type": "predictions", "schema_version": "1.0.0",
               "data": {"bin_averages": [0.3, 1.1, 2.2], "bin_errors": [0.1, 0.2, 0.15],
                        "bin_counts": [10, 12, 9], "bin_edges": [0.0, 1.0, 2.0, 3.0]}}
RICH_ROWS = [
    ("per-class recall", "list", [0.91, 0.82, 0.73]),
    ("epoch table", "row", {"epoch": 1, "loss": 0.9}),
    ("epoch table", "row", {"epoch": 2, "loss": 0.5, "note": "warm<up>"}),
    ("lr schedule", "table", {"step": [0, 100, 200], "lr": [0.1, 0.01, 0.001]}),
    ("loss curve", "image", {"file": "outputs/loss_curve.png"}),
    ("confusion", "confusion_matrix", CONFUSION),
    ("roc", "accuracy_table", ACCURACY_TABLE),
    ("residuals", "residuals", RESIDUALS),
    ("predicted vs true", "predictions", PREDICTIONS),
]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_run(source, experiment, *extra):
    result = invoke("run", source, "--script", "train.py", "--executor", "process",
                    "--experiment", experiment, "--json", *extra)
    return result, last_json(result)


def insert_metric(store, run_id, name, metric_type, value, step=None, description=""):
    """Add a metric row as the run-side API does (next position of its name)."""
    with store.transaction() as conn:
        position = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM metrics "
                                "WHERE run_id = ? AND name = ?", (run_id, name)).fetchone()[0]
        conn.execute("INSERT INTO metrics (run_id, name, position, metric_type, value, step, "
                     "description, logged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (run_id, name, position, metric_type, json.dumps(value), step, description,
                      time.time()))


class History:
    def __init__(self, home, rich, other, failed):
        self.home = home
        self.store = RunStore(home)
        self.backend = get_backend("local")
        self.rich, self.other, self.failed = rich, other, failed


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """One run history with three real runs: a rich one, another experiment's, a failed one."""
    root = tmp_path_factory.mktemp("report-history")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AMLOCAL_HOME", str(root / "amlocal-home"))
        # The stand-in's API (AMLOCAL_IN_RUN_SDK=0): the emulator does not record the step of
        # azureml-core's run.log(..., step=N) yet, and the charts draw curves by step.
        patch.setenv("AMLOCAL_IN_RUN_SDK", "0")
        rich_result, rich = start_run(write_script(root / "rich", "train.py", RICH_SCRIPT), "vision",
                                      "--tag", "owner=<tests>")
        assert rich["status"] == "Completed", rich_result.output
        _result, other = start_run(write_script(root / "other", "train.py", OTHER_SCRIPT), "baseline")
        assert other["status"] == "Completed"
        _result, failed = start_run(write_script(root / "failing", "train.py", FAILING_SCRIPT),
                                    "vision")
        assert failed["status"] == "Failed"
        store = RunStore(root / "amlocal-home")
        for name, metric_type, value in RICH_ROWS:
            insert_metric(store, rich["id"], name, metric_type, value)
        yield History(root / "amlocal-home", rich["id"], other["id"], failed["id"])


class PageParser(HTMLParser):
    """Collects a page's tags, image sources and links; checks that elements nest properly."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr", "area", "base"}

    def __init__(self):
        super().__init__()
        self.stack, self.tags, self.images, self.links, self.errors = [], [], [], [], []
        self.text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("href", "src", "action"):
            if name in attrs:
                self.links.append(attrs[name])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_page(text):
    parser = PageParser()
    parser.feed(text)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    return parser


def decode_data_uri(uri):
    match = re.fullmatch(r"data:(image/[a-z+]+);base64,([A-Za-z0-9+/=]+)", uri)
    assert match, uri[:80]
    return match.group(1), base64.b64decode(match.group(2), validate=True)


def decoded_png(data):
    """The pixels of a PNG, decoded for real by matplotlib (rows, columns, channels)."""
    assert data.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def contains_color(pixels, color, tolerance=0.03):
    rgb = np.array(to_rgb(color))
    return bool((np.abs(pixels[..., :3] - rgb).max(axis=-1) < tolerance).any())


def one_line_error(result):
    return result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")


# -- runs compare -------------------------------------------------------------------------------

def test_compare_draws_each_runs_curve_by_step_or_logging_order(history, tmp_path):
    target = tmp_path / "charts" / "loss.png"

    result = invoke("runs", "compare", history.rich, history.other, "--metric", "loss",
                    "-o", target, "--json")

    assert result.exit_code == 0, result.output
    answer = last_json(result)
    assert answer == {"file": str(target), "runs": {history.rich: [0.9, 0.5, 0.3, 0.25],
                                                    history.other: [1.0, 0.8, 0.6, 0.5, 0.45]}}
    data = target.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert not [path for path in target.parent.iterdir() if path != target]  # no temp file left

    figure, values = report.compare_figure(history.backend, [history.rich, history.other], "loss")
    ax = figure.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 2
    assert list(lines[0].get_xdata()) == [0, 10, 20, 30]  # logged with steps
    assert list(lines[0].get_ydata()) == [0.9, 0.5, 0.3, 0.25]
    assert list(lines[1].get_xdata()) == [1, 2, 3, 4, 5]  # logged without: logging order
    assert list(lines[1].get_ydata()) == [1.0, 0.8, 0.6, 0.5, 0.45]
    assert [line.get_label() for line in lines] == [f"{history.rich} (vision)",
                                                    f"{history.other} (baseline)"]
    assert ax.get_title() == "loss"
    assert ax.get_xlabel().startswith("step")
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [
        f"{history.rich} (vision)", f"{history.other} (baseline)"]
    assert values == answer["runs"]

    pixels = decoded_png(data)
    width, height = figure.get_size_inches() * figure.dpi
    assert pixels.shape == (round(height), round(width), 4)
    # both lines were drawn, in their own colors
    assert contains_color(pixels, lines[0].get_color()) and contains_color(pixels, lines[1].get_color())


def test_compare_of_one_run_writes_compare_metric_png_in_the_current_folder(history, tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)

    result = invoke("runs", "compare", history.rich, "--metric", "accuracy")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "compare-accuracy.png"
    pixels = decoded_png((tmp_path / "compare-accuracy.png").read_bytes())
    assert pixels.shape == (480, 900, 4)  # 9 x 4.8 inches at 100 dpi, no legend for one run
    figure, _values = report.compare_figure(history.backend, [history.rich], "accuracy")
    assert [list(line.get_ydata()) for line in figure.axes[0].get_lines()] == [[0.5, 0.75, 0.875]]
    assert figure.axes[0].get_xlabel() == "logging order"


def test_compare_file_name_is_made_safe_from_the_metric_name(history, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    result = invoke("runs", "compare", history.rich, "--metric", "learning rate", "--json")

    assert result.exit_code == 0, result.output
    assert last_json(result) == {"file": "compare-learning_rate.png",
                                 "runs": {history.rich: [0.0125]}}
    assert (tmp_path / "compare-learning_rate.png").read_bytes().startswith(PNG_SIGNATURE)


def _compare_bad_input(history, tmp_path):
    out = ["-o", tmp_path / "out.png"]
    return {
        "no run": ([*out, "--metric", "loss"], 2, "give at least one run id"),
        "unknown run": ([history.rich, "exp_1_deadbeef", "--metric", "loss", *out], 4,
                        "no run with id 'exp_1_deadbeef'"),
        "run without the metric": ([history.rich, history.other, "--metric", "accuracy", *out], 2,
                                   f"run {history.other} has no metric 'accuracy' (it logged loss)"),
        "string metric": ([history.rich, "--metric", "optimizer", *out], 2,
                          "is not a numeric scalar curve: value 1 is 'sgd <momentum> & nesterov'"),
        "list metric": ([history.rich, "--metric", "per-class recall", *out], 2,
                        "is a list metric, not a numeric scalar curve"),
        "table metric": ([history.rich, "--metric", "confusion", *out], 2,
                         "is a confusion_matrix metric, not a numeric scalar curve"),
        "run given twice": ([history.rich, history.rich, "--metric", "loss", *out], 2,
                            f"run {history.rich} is given twice"),
        "not a png": ([history.rich, "--metric", "loss", "-o", tmp_path / "out.jpg"], 2,
                      "must name a .png file"),
    }


@pytest.mark.parametrize("case", ["no run", "unknown run", "run without the metric", "string metric",
                                  "list metric", "table metric", "run given twice", "not a png"])
def test_compare_bad_input_is_one_line_and_writes_nothing(history, tmp_path, case):
    args, exit_code, message = _compare_bad_input(history, tmp_path)[case]

    result = invoke("runs", "compare", *args)

    assert result.exit_code == exit_code, result.output
    assert one_line_error(result), result.stderr
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- runs report --------------------------------------------------------------------------------

def test_report_shows_the_whole_run_escaped_and_self_contained(history, tmp_path):
    out = tmp_path / "reports" / "rich"

    result = invoke("runs", "report", history.rich, "-o", out, "--json")

    assert result.exit_code == 0, result.output
    answer = last_json(result)
    assert answer["file"] == str(out / "index.html") and answer["status"] == "Completed"
    assert sorted(path.name for path in out.iterdir()) == ["index.html"]  # no temp file left
    text = (out / "index.html").read_text()
    page = parse_page(text)

    # self-contained: no script, no stylesheet link, nothing fetched
    assert "script" not in page.tags and "link" not in page.tags
    assert all(link.startswith(("data:image/", "#")) for link in page.links), page.links
    assert "default-src 'none'" in text

    details = history.backend.get_run(history.rich).get_details()
    for needle in [history.rich, "vision", "Completed", "process", "local",
                   "train.py", details["created_at"], "Preparing", "Scaling", "Running",
                   "PostProcessing", "NotStarted", "Finalizing"]:
        assert needle in text, needle
    for stage in details["stages"]:
        assert stage["detail"] and report.esc(stage["detail"]) in text

    # every metric name and value
    metrics = history.store.get_metrics(history.rich)
    assert set(metrics) == {name for name in ["loss", "accuracy", "optimizer", "learning rate"]} | {
        name for name, _type, _value in RICH_ROWS}
    for name in metrics:
        assert f"{report.esc(name)}<" in text, name
    for name in ["loss", "accuracy", "learning rate"]:
        for value in metrics[name]:
            assert f">{report.text_of(value)}<" in text, (name, value)
    for step in [0, 10, 20, 30]:
        assert f'<td class="num">{step}</td>' in text
    assert "sgd &lt;momentum&gt; &amp; nesterov" in text
    assert "validation &lt;accuracy&gt;" in text  # the description
    for value in [0.91, 0.82, 0.73, 0.1, 0.01, 0.001, 50, 40, 44, 17, 21, 13, 0.3, 1.1, 2.2]:
        assert f">{report.text_of(value)}<" in text, value
    # log_row rows merged into one table, columns in order of appearance
    assert "<th>epoch</th><th>loss</th><th>note</th>" in text and "warm&lt;up&gt;" in text
    assert "<th>step</th><th>lr</th>" in text
    assert "&lt;bird&gt;" in text and "<bird>" not in text
    assert "negative" in text and "Probability tables" in text and "Percentile tables" in text

    # tags, properties, files
    assert "vision &amp; &lt;ml&gt;" in text and "&lt;tests&gt;" in text and "mnist-10k" in text
    for name in history.backend.get_run(history.rich).get_file_names():
        assert f">{report.esc(name)}<" in text, name

    # the driver log: its last 500 lines, escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    log = re.search(r'<pre class="log">(.*?)</pre>', text, re.S).group(1)
    assert len(log.splitlines()) == 500
    assert f"log line {LOG_LINES - 1:04d}" in log and "log line 0000" not in text
    assert "\ngreen text\n" in log  # terminal color codes are taken out

    # images: the charts and the logged image, all PNGs that decode
    assert len(page.images) == answer["charts"] + answer["images"]
    assert answer["images"] == 1
    # timeline, loss, accuracy, list, confusion matrix, residuals, predictions
    assert answer["charts"] == 7
    for uri in page.images:
        mime, data = decode_data_uri(uri)
        assert mime == "image/png"
        pixels = decoded_png(data)
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    logged = (history.home / "runs" / history.rich / "outputs" / "loss_curve.png").read_bytes()
    assert [decode_data_uri(uri)[1] for uri in page.images].count(logged) == 1


def test_report_of_a_failed_run_shows_its_error_and_failed_stage(history, tmp_path):
    result = invoke("runs", "report", history.failed, "-o", tmp_path / "failed")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "failed" / "index.html")
    text = (tmp_path / "failed" / "index.html").read_text()
    parse_page(text)
    details = history.backend.get_run(history.failed).get_details()
    assert report.esc(details["error"]) in text and "exited with code 3" in text
    assert "&lt;bad &amp; worse&gt;" in text and "<bad" not in text
    assert f'background:{charts.status_color("Failed")}">Failed<' in text
    assert ">1.5<" in text and ">2<" in text


def test_report_of_a_running_run(amlocal_home, tmp_path):
    release = tmp_path / "release"
    source = write_script(tmp_path / "src", "train.py", f"""
import os, time
from azureml.core.run import Run
run = Run.get_context()
run.log("progress", 0.25)
run.log("progress", 0.5)
print("waiting for release", flush=True)
deadline = time.time() + 60
while not os.path.exists({str(release)!r}) and time.time() < deadline:
    time.sleep(0.05)
""")
    run_id = last_json(invoke("run", source, "--script", "train.py", "--executor", "process",
                              "--detach", "--json"))["id"]
    handle = get_backend("local").get_run(run_id)
    deadline = time.monotonic() + 30
    while "waiting for release" not in "\n".join(handle.stream_logs()) or "progress" not in handle.get_metrics():
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.1)
    try:
        result = invoke("runs", "report", run_id, "-o", tmp_path / "live", "--json")
    finally:
        release.touch()

    assert result.exit_code == 0, result.output
    assert last_json(result)["status"] == "Running"
    text = (tmp_path / "live" / "index.html").read_text()
    page = parse_page(text)
    assert "so far" in text and "waiting for release" in text
    assert ">0.25<" in text and ">0.5<" in text
    timeline = decoded_png(decode_data_uri(page.images[0])[1])
    assert contains_color(timeline, charts.status_color("Running"))
    assert handle.wait(timeout=60)["status"] == "Completed"


def test_report_is_replaced_whole_when_written_again(history, tmp_path):
    out = tmp_path / "report"
    assert invoke("runs", "report", history.other, "-o", out).exit_code == 0
    first = (out / "index.html").read_text()

    assert invoke("runs", "report", history.rich, "-o", out).exit_code == 0

    second = (out / "index.html").read_text()
    assert history.other in first and history.other not in second and history.rich in second
    assert sorted(path.name for path in out.iterdir()) == ["index.html"]


def test_report_bad_input_is_one_line_and_writes_nothing(history, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = [
        (["exp_1_deadbeef", "-o", tmp_path / "out"], 4, "no run with id 'exp_1_deadbeef'"),
        ([history.rich], 2, "-o DIR"),
        ([history.rich, "-o", a_file], 2, "is a file"),
    ]
    for args, exit_code, message in cases:
        result = invoke("runs", "report", *args)

        assert result.exit_code == exit_code, result.output
        assert one_line_error(result), result.stderr
        assert message in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]
    assert a_file.read_text() == "not a folder"


# -- the rendering helpers ----------------------------------------------------------------------

def test_timeline_draws_a_bar_per_started_stage_colored_by_status():
    stages = [charts.StageBar("Preparing", "Completed", 0.0, 2.0),
              charts.StageBar("Scaling", "Completed", 2.0, 2.001),
              charts.StageBar("Running", "Failed", 2.5, 10.0),
              charts.StageBar("PostProcessing", "NotStarted")]

    figure = charts.timeline_figure(stages)

    ax = figure.axes[0]
    bars = ax.patches
    assert len(bars) == 3
    assert [round(bar.get_x(), 3) for bar in bars] == [0.0, 2.0, 2.5]
    assert bars[0].get_width() == pytest.approx(2.0) and bars[2].get_width() == pytest.approx(7.5)
    assert bars[1].get_width() >= 10.0 * 0.004  # a sliver, visible next to the long stage
    assert [bar.get_facecolor()[:3] for bar in bars] == [
        to_rgb(charts.status_color("Completed")), to_rgb(charts.status_color("Completed")),
        to_rgb(charts.status_color("Failed"))]
    assert [label.get_text() for label in ax.get_yticklabels()] == [
        "Preparing", "Scaling", "Running", "PostProcessing"]
    assert "Failed, 7.50 s" in [text.get_text() for text in ax.texts]
    assert decoded_png(charts.png_bytes(figure)).shape[1] == 900


def test_confusion_matrix_heatmap_shows_the_matrix_with_its_labels():
    labels, matrix = CONFUSION["data"]["class_labels"], CONFUSION["data"]["matrix"]

    figure = charts.confusion_matrix_figure("confusion", labels, matrix)

    ax = figure.axes[0]
    assert np.array_equal(ax.get_images()[0].get_array(), np.array(matrix))
    assert [label.get_text() for label in ax.get_xticklabels()] == labels
    assert [label.get_text() for label in ax.get_yticklabels()] == labels
    assert sorted(text.get_text() for text in ax.texts) == sorted(
        str(cell) for row in matrix for cell in row)
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"


def test_tail_lines_reads_only_the_end_of_a_long_log(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("".join(f"line {number}\n" for number in range(100_000)))

    lines, truncated = report.tail_lines(log, 500, max_bytes=1 << 20)

    assert truncated and lines == [f"line {number}" for number in range(99_500, 100_000)]
    assert report.tail_lines(tmp_path / "absent") == (None, False)
    log.write_text("one\ntwo")
    assert report.tail_lines(log) == (["one", "two"], False)


def test_charts_never_touch_pyplot_and_the_cli_starts_without_matplotlib(tmp_path):
    probe = f"""
import sys
import amlocal.cli.main
assert "matplotlib" not in sys.modules, "the CLI imports matplotlib at startup"
from amlocal.cli import charts
figure = charts.curve_figure("m", [charts.Series("a", [1, 2], [3.0, 4.0])], "step")
open({str(tmp_path / "probe.png")!r}, "wb").write(charts.png_bytes(figure))
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
"""
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)

    assert (tmp_path / "probe.png").read_bytes().startswith(PNG_SIGNATURE)
