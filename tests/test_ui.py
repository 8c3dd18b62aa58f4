"""`amlocal ui` over HTTP: the real command serving a real run history, with runs made by real
process-executor runs (test_ui_browser.py looks at the same pages in Chromium).

What a user relies on: the first line names the address, run pages are named by `runs show` and
Run.get_portal_url() while it runs, the runs table filters, sorts and pages, a run's page shows
what its script logged (as text, never as markup), files download as attachments and nothing
outside the run is served, a long metric reaches the chart downsampled and the download whole,
and cancel needs the page's token and a request from the page's own origin.
"""

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from amlocal.backends.history.store import RunStore
from conftest import write_script
from test_cli import invoke, last_json, wait_for

AMLOCAL = [sys.executable, "-m", "amlocal"]
HOSTILE = "<script>alert(1)</script>"
# A file name cannot hold "/": markup that needs none.
HOSTILE_FILE = "<img src=x onerror=alert(2)>.txt"

LOGGING_SCRIPT = f"""
import math
from azureml.core.run import Run
run = Run.get_context()
for i in range(40):
    run.log("loss", math.exp(-i / 10), step=i)
    run.log("system/cpu_utilization_percentage", 40 + i % 7)
run.log("accuracy", 0.93)
run.log_list("per_class", [0.9, 0.8, 0.95])
run.log_row("epochs", epoch=1, loss=0.5)
run.log_confusion_matrix("confusion", {{"schema_type": "confusion_matrix", "schema_version": "1.0.0",
    "data": {{"class_labels": ["cat", "dog"], "matrix": [[5, 1], [2, 7]]}}}})
run.log_accuracy_table("accuracy", '{{"schema_type": "accuracy_table", "schema_version": "1.0.1", "data": {{"probability_tables": [[[4, 1, 3, 2]]], "percentile_tables": [[[4, 1, 3, 2]]], "probability_thresholds": [0.5], "percentile_thresholds": [50], "class_labels": ["cat"]}}}}')
run.log_residuals("residuals", {{"schema_type": "residuals", "schema_version": "1.0.0",
    "data": {{"bin_edges": [-1, 0, 1, 2], "bin_counts": [3, 9, 2]}}}})
run.log_predictions("predictions", {{"schema_type": "predictions", "schema_version": "1.0.0",
    "data": {{"bin_edges": [0, 1, 2], "bin_averages": [0.4, 1.6], "bin_errors": [0.1, 0.2], "bin_counts": [5, 5]}}}})
import struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
pixels = b"".join(b"\\x00" + b"".join(bytes((x * 8, y * 8, 160)) for x in range(32)) for y in range(32))
with open("gradient.png", "wb") as image:
    image.write(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))
run.log_image("gradient", path="gradient.png")
run.log({HOSTILE!r}, 1.0)
child = run.child_run(name="fold-1")
child.log("fold accuracy", 0.8)
child.complete()
run.tag({HOSTILE!r}, {HOSTILE!r})
import os
os.makedirs("outputs", exist_ok=True)
open("outputs/" + {HOSTILE_FILE!r}, "w").write("hostile name")
open("outputs/report.html", "w").write("<script>alert(3)</script>")
print("trained", flush=True)
"""


# -- the server, as a user starts it --------------------------------------------------------------

class RunningUI:
    def __init__(self, process, url):
        self.process = process
        self.url = url

    def get(self, path, headers=None):
        """(status, headers, body bytes) of a GET."""
        return self.request("GET", path, headers=headers)

    def request(self, method, path, headers=None, data=None):
        request = urllib.request.Request(self.url + path, method=method, headers=headers or {},
                                         data=data)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def page(self, path):
        status, _headers, body = self.get(path)
        assert status == 200, body[:500]
        return body.decode()

    def json(self, path):
        status, _headers, body = self.get(path)
        assert status == 200, body[:500]
        return json.loads(body)

    def token(self):
        return re.search(r'data-token="([^"]+)"', self.page("/")).group(1)


@contextlib.contextmanager
def running_ui(*args):
    """`amlocal ui --port 0` in a process of its own; stopped (SIGTERM) and checked at the end."""
    process = subprocess.Popen([*AMLOCAL, "ui", "--port", "0", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline().strip()
        assert re.fullmatch(r"http://[0-9.]+:\d+", first), (first, process.stderr.read())
        yield RunningUI(process, first)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, process.stderr.read()


@pytest.fixture
def ui(amlocal_home):
    with running_ui() as server:
        yield server


def process_run(source, *options):
    result = invoke("run", source, "--script", "train.py", "--executor", "process", "--json",
                    *options)
    assert result.exit_code in (0, 1), result.output
    return last_json(result)


@pytest.fixture
def logged_run(amlocal_home, tmp_path):
    record = process_run(write_script(tmp_path / "src", "train.py", LOGGING_SCRIPT),
                         "--experiment", "ui-test", "--tag", "team=vision")
    assert record["status"] == "Completed"
    return record


# -- the command ------------------------------------------------------------------------------------

def test_the_ui_names_its_address_first_and_run_pages_while_it_runs(amlocal_home, logged_run):
    run_id = logged_run["id"]
    page = None
    with running_ui() as server:
        address = json.loads((amlocal_home / "ui.json").read_text())
        page = f"{server.url}/runs/{run_id}"
        shown = invoke("runs", "show", run_id)
        from amlocal.core import Workspace

        portal = Workspace.from_config(path=str(amlocal_home)).get_run(run_id).get_portal_url()

        assert address == {"url": server.url, "pid": server.process.pid}
        assert f"Run page:    {page}" in shown.stdout
        assert last_json(invoke("runs", "show", run_id, "--json"))["page_url"] == page
        assert portal == page
        assert server.get(f"/runs/{run_id}")[0] == 200

    assert not (amlocal_home / "ui.json").exists()
    assert "Run page" not in invoke("runs", "show", run_id).stdout
    assert last_json(invoke("runs", "show", run_id, "--json"))["page_url"] is None
    from amlocal.core import Workspace

    assert Workspace.from_config(path=str(amlocal_home)).get_run(run_id).get_portal_url() \
        .startswith("file://")


def test_a_ui_file_left_by_a_dead_ui_is_ignored(amlocal_home, logged_run):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (amlocal_home / "ui.json").write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": dead.pid}))

    assert "Run page" not in invoke("runs", "show", logged_run["id"]).stdout


def test_a_non_loopback_host_is_warned_about_and_a_loopback_ui_refuses_other_host_names(
        amlocal_home):
    with running_ui("--host", "0.0.0.0") as exposed:
        assert exposed.get("/")[0] == 200
    assert "Warning: listening on 0.0.0.0, not loopback" in exposed.process.stderr.read()

    with running_ui() as server:
        # a page of another site whose name resolves to 127.0.0.1 (DNS rebinding)
        status, _headers, _body = server.get("/", headers={"Host": "attacker.example:80"})
        assert status == 421


def test_a_port_in_use_is_one_line_of_error(amlocal_home):
    with running_ui() as server:
        port = server.url.rsplit(":", 1)[1]
        taken = subprocess.run([*AMLOCAL, "ui", "--port", port], capture_output=True, text=True,
                               timeout=30)
    assert taken.returncode == 2
    assert taken.stderr.startswith("Error: cannot listen on 127.0.0.1:") and "Traceback" not in taken.stderr


# -- the runs table -----------------------------------------------------------------------------------

def record_runs(home, count, experiment="bulk", backend="local", spec=None, **overrides):
    """`count` finished runs recorded through RunStore in one transaction (no script ran)."""
    store = RunStore(home)
    now = time.time()
    ids = [f"{experiment}_{index:05d}" for index in range(count)]
    with store.transaction() as conn:
        for index, run_id in enumerate(ids):
            store.run_dir(run_id).mkdir()
            store.insert_run_in(conn, run_id=run_id, experiment=experiment, executor="process",
                                compute="local", spec=spec or {"script": "train.py"},
                                tags={"index": str(index)}, backend=backend, driver_pid=None)
            conn.execute("UPDATE runs SET created_at = ?, status = ? WHERE id = ?",
                         (now - count + index, overrides.get("status", "Completed"), run_id))
    return ids


def test_the_runs_table_lists_a_run_and_filters_sorts_and_pages(amlocal_home, logged_run, ui):
    bulk = record_runs(amlocal_home, 60)

    first = ui.page("/")
    assert logged_run["id"] in first  # the newest run is on the first page
    assert "page 1 of 2" in first
    second = ui.page("/?page=2")
    assert bulk[0] in second and logged_run["id"] not in second

    by_experiment = ui.json("/api/runs?experiment=ui-test")
    (child,) = RunStore().children_of(logged_run["id"])  # the script's child run
    assert {row["id"] for row in by_experiment["rows"]} == {logged_run["id"], child}
    assert ui.json("/api/runs?tag=team%3Dvision")["total"] == 1
    assert ui.json("/api/runs?tag=index")["total"] == 60
    assert ui.json("/api/runs?tag=index%3D7")["rows"][0]["id"] == bulk[7]
    assert ui.json("/api/runs?status=Failed")["total"] == 0
    assert ui.json("/api/runs?backend=local")["total"] == 62
    oldest_first = ui.json("/api/runs?sort=created&order=asc")["rows"]
    assert oldest_first[0]["id"] == bulk[0]
    assert ui.get("/api/runs?sort=nonsense")[0] == 400


# -- one run --------------------------------------------------------------------------------------------

def test_a_run_page_shows_what_the_script_logged_as_text(logged_run, ui):
    run_id = logged_run["id"]
    status, headers, body = ui.get(f"/runs/{run_id}")
    page = body.decode()

    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    # every stage, in its table
    for stage in ("Preparing", "Scaling", "Running", "PostProcessing"):
        assert f"</span>{stage}</td>" in page
    assert 'data-series="/api/runs/' in page and "name=loss" in page
    assert "accuracy" in page and "0.93" in page
    assert "per_class" in page and "epochs" in page
    assert 'class="heat"' in page  # the confusion matrix
    assert "Probability tables" in page and "residuals" in page and "predictions" in page
    image = re.search(r'<img alt="gradient.png" src="([^"]+)"', page).group(1).replace("&amp;", "&")
    image_status, image_headers, image_body = ui.get(image)
    assert image_status == 200 and image_headers["Content-Type"] == "image/png"
    assert image_body.startswith(b"\x89PNG")
    assert 'id="system"' in page and "system/cpu_utilization_percentage" in page
    assert "trained" in page  # the driver log
    (child,) = RunStore().children_of(run_id)
    assert "Child runs" in page and f'href="/runs/{child}"' in page
    # what the script controlled is text: escaped, never markup
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # metric, tag key, tag value
    assert "&lt;img src=x onerror=alert(2)&gt;.txt" in page
    assert "<script" not in page.replace('<script src="/static/', "")  # no inline script


def test_files_download_as_attachments_and_nothing_outside_the_run_is_served(logged_run, ui,
                                                                             amlocal_home):
    run_id = logged_run["id"]
    status, headers, body = ui.get(f"/runs/{run_id}/download?name=" + quote("outputs/report.html"))

    assert status == 200 and body == b"<script>alert(3)</script>"
    assert headers["Content-Disposition"].startswith('attachment; filename="report.html"')
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Content-Type-Options"] == "nosniff"
    hostile = ui.get(f"/runs/{run_id}/download?name=" + quote("outputs/" + HOSTILE_FILE))
    assert hostile[0] == 200 and hostile[2] == b"hostile name"
    assert hostile[1]["Content-Disposition"].startswith(f'attachment; filename="{HOSTILE_FILE}"')

    outside = RunStore(amlocal_home).run_dir(run_id) / "outputs" / "passwd"
    outside.symlink_to("/etc/passwd")
    for name in ("../../amlocal.db", "/etc/passwd", "outputs/../../../amlocal.db",
                 "snapshot/train.py", "outputs/passwd", ""):
        status, _headers, body = ui.get(f"/runs/{run_id}/download?name={quote(name)}")
        assert status == 400, (name, body[:200])
        assert b"root:" not in body and b"SQLite" not in body


def test_a_long_metric_reaches_the_chart_downsampled_and_downloads_whole(amlocal_home, tmp_path, ui):
    source = write_script(tmp_path / "long", "train.py", """
import math
from azureml.core.run import Run
run = Run.get_context()
for i in range(6000):
    run.log("wave", math.sin(i / 30) + (5.0 if i == 4321 else 0.0))
""")
    run_id = process_run(source)["id"]

    chart = ui.json(f"/api/runs/{run_id}/series?name=wave")
    _status, headers, body = ui.get(f"/api/runs/{run_id}/metric.csv?name=wave")
    rows = list(csv.reader(io.StringIO(body.decode())))

    assert chart["total"] == 6000 and chart["shown"] <= 2000 and len(chart["x"]) == chart["shown"]
    assert max(chart["y"]) == pytest.approx(5.0 + __import__("math").sin(4321 / 30))  # the spike stays
    assert min(chart["y"]) == pytest.approx(-1.0, abs=1e-3)
    assert headers["Content-Disposition"].startswith('attachment; filename="wave.csv"')
    assert len(rows) == 6001 and rows[0] == ["index", "step", "value", "logged_at"]
    assert float(rows[4322][2]) == pytest.approx(chart["max"])
    assert len(ui.json(f"/api/runs/{run_id}/metric.json?name=wave")) == 6000


def test_the_log_is_read_from_an_offset(logged_run, ui, amlocal_home):
    run_id = logged_run["id"]
    log = (RunStore(amlocal_home).run_dir(run_id) / "azureml-logs" / "70_driver_log.txt").read_bytes()

    whole = ui.json(f"/api/runs/{run_id}/log?offset=0")
    rest = ui.json(f"/api/runs/{run_id}/log?offset=3")

    assert whole["text"].encode() == log and whole["offset"] == len(log) and whole["terminal"]
    assert rest["text"].encode() == log[3:]
    assert ui.get(f"/api/runs/{run_id}/log?offset=x")[0] == 400


def test_unknown_runs_and_metrics_are_a_clear_not_found(ui):
    status, _headers, body = ui.get("/runs/no_such_run")
    assert status == 404 and b"no run with id" in body and b"Traceback" not in body
    assert ui.get("/api/runs/no_such_run/series?name=x")[0] == 404


# -- sweeps, compare, compute, models, services ---------------------------------------------------------

SWEEP_SCRIPT = """
import argparse
from azureml.core.run import Run
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--batch", type=int)
args = parser.parse_args()
run = Run.get_context()
for step in range(5):
    run.log("loss", args.lr * (5 - step) / args.batch)
"""
# Each run logs `loss` at steps 0..29, scaled by its first argument.
COMPARE_SCRIPT = """
import sys
from azureml.core.run import Run
run = Run.get_context()
for step in range(30):
    run.log("loss", float(sys.argv[1]) / (step + 1), step=step)
"""


def finished_sweep(folder, runs):
    """A finished sweep of SWEEP_SCRIPT over lr and batch: (parent id, child ids)."""
    source = write_script(folder, "train.py", SWEEP_SCRIPT)
    result = invoke("sweep", source, "--script", "train.py", "--executor", "process",
                    "--param", "lr=uniform(0.1,1)", "--param", "batch=choice(16,32,64)",
                    "--metric", "loss", "--goal", "minimize", "--max-total-runs", str(runs),
                    "--max-concurrent-runs", "2", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    parent = last_json(result)["id"]
    return parent, RunStore().children_of(parent)


def test_a_sweep_page_lists_children_with_hyperparameters_and_primary_metric(amlocal_home, tmp_path,
                                                                           ui):
    parent, children = finished_sweep(tmp_path / "sweep", 2)

    page = ui.page(f"/runs/{parent}")

    assert len(children) == 2
    assert all(f"/runs/{child}" in page for child in children)
    assert "Best loss" in page and '<th class="num">lr</th>' in page and "data-parallel=" in page
    parallel = json.loads(re.search(r'data-parallel="([^"]+)"', page).group(1).replace("&#34;", '"'))
    assert sorted(axis["name"] for axis in parallel["axes"][:2]) == ["batch", "lr"]
    assert parallel["axes"][2]["name"] == "loss"
    assert parallel["runs"] == children


def test_compare_shows_both_runs_curves_and_the_parameters_that_differ(amlocal_home, tmp_path, ui):
    source = write_script(tmp_path / "cmp", "train.py", COMPARE_SCRIPT)
    first = process_run(source, "--", "1.0")["id"]
    second = process_run(source, "--", "2.0")["id"]

    page = ui.page(f"/compare?runs={first},{second}")
    data = ui.json(f"/api/compare?runs={first},{second}&name=loss")

    assert "Parameters that differ" in page and "<th>arguments</th>" in page
    assert "<td>1.0</td>" in page and "<td>2.0</td>" in page
    assert [series["run"] for series in data["series"]] == [first, second]
    assert data["series"][1]["y"][:5] == [2.0, 1.0, 2 / 3, 0.5, 0.4]
    assert data["series"][1]["x"] == list(range(30))
    assert ui.page(f"/compare?run={first}&run={second}").count("/runs/") >= 2  # the table's form
    assert ui.get("/compare")[0] == 400


def test_compute_models_and_services_pages(amlocal_home, logged_run, ui):
    invoke("models", "register", "--name", "vision-model", "--run", logged_run["id"],
           "--path", "outputs/report.html")

    assert "local" in ui.page("/compute") and "queued runs" in ui.page("/compute")
    models = ui.page("/models")
    assert "vision-model" in models and logged_run["id"] in models
    assert "No web services deployed" in ui.page("/services")

    from amlocal.backends.history.services import ServiceRecords

    ServiceRecords(RunStore(amlocal_home)).create(
        "scorer", "local", {"models": [{"name": "vision-model", "version": 1}],
                            "auth_enabled": True},
        keys={"primary": "SECRET-PRIMARY-KEY", "secondary": "SECRET-SECONDARY-KEY"}, port=32100)
    services = ui.page("/services")
    assert "scorer" in services and "vision-model:1" in services and "32100" in services
    assert "SECRET-" not in services  # a page is no place for a service's keys


# -- cancel ---------------------------------------------------------------------------------------------

def sleeping_run(tmp_path):
    source = write_script(tmp_path / "sleep", "train.py",
                          "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    result = invoke("run", source, "--script", "train.py", "--executor", "process", "--detach",
                    "--json")
    assert result.exit_code == 0, result.output
    return last_json(result)["id"]


def test_cancel_needs_the_pages_token_and_a_same_origin_request(amlocal_home, tmp_path, ui):
    run_id = sleeping_run(tmp_path)
    store = RunStore(amlocal_home)
    wait_for(lambda: store.get_status(run_id) == "Running")
    token = ui.token()
    path = f"/api/runs/{run_id}/cancel"

    refused = [
        ui.request("POST", path),
        ui.request("POST", path, headers={"X-Amlocal-Token": "guessed"}),
        ui.request("POST", path, headers={"X-Amlocal-Token": token,
                                          "Origin": "http://attacker.example"}),
        ui.request("POST", path, headers={"X-Amlocal-Token": token, "Sec-Fetch-Site": "cross-site"}),
    ]
    assert [status for status, _headers, _body in refused] == [403, 403, 403, 403]
    assert b"cross-site" in refused[2][2] and b"cross-site" in refused[3][2]
    assert ui.get(path)[0] == 405  # never by a GET (a link, an image)
    assert store.get_status(run_id) == "Running"

    status, _headers, body = ui.request("POST", path, headers={
        "X-Amlocal-Token": token, "Origin": ui.url, "Sec-Fetch-Site": "same-origin"})

    assert status == 200, body
    wait_for(lambda: store.get_status(run_id) == "Canceled", timeout=60)
    assert "canceled from the amlocal UI" in store.get_run(run_id)["error"]


def test_an_azure_runs_page_links_to_its_portal_page(amlocal_home, ui):
    portal = "https://ml.azure.com/runs/cloud_1?wsid=/subscriptions/s/x"
    (run_id,) = record_runs(amlocal_home, 1, experiment="cloud", backend="azure",
                            spec={"script": "train.py", "azure": {"portal_url": portal}})

    page = ui.page(f"/runs/{run_id}")

    assert f'<a href="{portal}" rel="noopener noreferrer"' in page
    assert [row["id"] for row in ui.json("/api/runs?backend=azure")["rows"]] == [run_id]


def test_values_that_are_not_numbers_are_gaps_in_a_curve(amlocal_home, ui):
    (run_id,) = record_runs(amlocal_home, 1, experiment="odd")
    store = RunStore(amlocal_home)
    for value in (1.0, "diverged", float("nan"), -2, float("-inf"), 3.5):
        store.add_metric(run_id, "loss", "scalar", value)

    chart = ui.json(f"/api/runs/{run_id}/series?name=loss")

    assert chart["y"] == [1.0, None, None, -2.0, None, 3.5]
    assert (chart["min"], chart["max"], chart["last"], chart["total"]) == (-2.0, 3.5, 3.5, 6)
    assert ui.get(f"/runs/{run_id}")[0] == 200
