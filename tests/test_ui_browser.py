"""The web UI as a user sees it: `amlocal ui` in headless Chromium (Debian's, driven by Playwright,
which downloads no browser of its own here), against runs made in the test.

Each test leaves a full-page screenshot in $AMLOCAL_SCREENSHOTS (default
test-artifacts/screenshots/) for review.
"""

import os
from pathlib import Path

import pytest

from amlocal.backends.history.store import RunStore
from conftest import REPO, write_script
from test_cli import invoke, last_json, wait_for
from test_ui import (COMPARE_SCRIPT, HOSTILE, HOSTILE_FILE, LOGGING_SCRIPT, finished_sweep, process_run,
                     running_ui, sleeping_run)

playwright_api = pytest.importorskip("playwright.sync_api")
# the page's own CSP forbids eval, so waits go through locators (expect), not wait_for_function
expect = playwright_api.expect

CHROMIUM = os.environ.get("AMLOCAL_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("AMLOCAL_SCREENSHOTS") or REPO / "test-artifacts" / "screenshots")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (CI does), or name one "
                    "with AMLOCAL_CHROMIUM", pytrace=False)
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    opened.problems = []  # script errors and dialogs: a page of ours raises neither by itself
    opened.on("pageerror", lambda error: opened.problems.append(f"error: {error}"))
    yield opened
    context.close()


@pytest.fixture
def ui(amlocal_home):
    with running_ui() as server:
        yield server


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def drawn_charts(page):
    """How many uPlot charts the page drew (a canvas each)."""
    return page.locator(".uplot canvas").count()


def test_the_run_table_and_a_docker_runs_page(amlocal_home, docker_client, tmp_path, ui, page):
    source = write_script(tmp_path / "src", "train.py", LOGGING_SCRIPT)
    result = invoke("run", source, "--script", "train.py", "--executor", "docker",
                    "--experiment", "ui-browser", "--json")
    assert result.exit_code == 0, result.output
    run_id = last_json(result)["id"]

    dialogs = []  # an alert() the script's text smuggled in would open one
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(ui.url + "/")
    row = page.locator(f'tr[data-run="{run_id}"]')
    row.wait_for()
    assert "Completed" in row.inner_text() and "ui-browser" in row.inner_text()
    screenshot(page, "runs")

    row.get_by_role("link", name=run_id).click()
    page.wait_for_url(f"**/runs/{run_id}")
    page.locator("[data-series] canvas").first.wait_for()
    stages = page.locator("table.stages tbody tr")
    assert stages.count() == 4
    assert all("Completed" in stages.nth(index).inner_text() for index in range(4))
    assert page.locator("figure.curve", has_text="loss").locator("canvas").count() == 1
    assert "40 values" in page.locator("figure.curve", has_text="loss").inner_text()
    assert page.locator("#system figure.curve", has_text="system/cpu_utilization_percentage").count() == 1
    assert "0.93" in page.locator("table.singles").inner_text()
    assert "trained" in page.locator("#log-text").inner_text()
    # what the script controlled shows as text, and ran as nothing
    assert HOSTILE in page.locator("#metrics").inner_text()
    assert HOSTILE in page.locator("#tags").inner_text()
    assert HOSTILE_FILE in page.locator("#files").inner_text()
    page.locator("figure.image img").wait_for()
    assert page.locator("figure.image img").evaluate("image => image.naturalWidth") == 32
    assert page.problems == [] and dialogs == []
    screenshot(page, "run")


def test_the_log_view_grows_while_a_run_runs(amlocal_home, tmp_path, ui, page):
    source = write_script(tmp_path / "slow", "train.py", """
import time
from azureml.core.run import Run
run = Run.get_context()
for i in range(16):
    print(f"epoch {i} done", flush=True)
    run.log("progress", i)
    time.sleep(0.5)
""")
    result = invoke("run", source, "--script", "train.py", "--executor", "process", "--detach",
                    "--json")
    run_id = last_json(result)["id"]
    store = RunStore(amlocal_home)
    wait_for(lambda: "epoch 1 done" in _driver_log(store, run_id), timeout=60)

    page.goto(f"{ui.url}/runs/{run_id}")
    log = page.locator("#log-text")
    before = log.inner_text()
    assert "following live" in page.locator("#log-state").inner_text()
    expect(log).to_contain_text("epoch 8 done", timeout=30_000)
    screenshot(page, "run-live-log")

    assert "epoch 8 done" not in before
    assert len(log.inner_text()) > len(before)
    # once it ends, the page shows the run as it ended
    expect(page.locator("#run-status .badge")).to_have_text("Completed", timeout=60_000)
    expect(page.locator("#log-state")).to_have_text("complete", timeout=30_000)
    expect(page.locator("#log-text")).to_contain_text("epoch 15 done")
    expect(page.locator("#run")).to_have_attribute("data-terminal", "yes", timeout=30_000)
    assert page.locator("figure.curve", has_text="progress").count() == 1
    assert page.problems == []


def _driver_log(store, run_id):
    path = store.run_dir(run_id) / "azureml-logs" / "70_driver_log.txt"
    return path.read_text() if path.exists() else ""


def test_compare_draws_two_runs_on_one_chart(amlocal_home, tmp_path, ui, page):
    source = write_script(tmp_path / "cmp", "train.py", COMPARE_SCRIPT)
    first = process_run(source, "--", "1.0")["id"]
    second = process_run(source, "--", "2.5")["id"]

    page.goto(ui.url + "/")
    for run_id in (first, second):
        page.locator(f'tr[data-run="{run_id}"] input[type=checkbox]').check()
    page.get_by_role("button", name="Compare selected").click()
    page.locator("[data-compare] canvas").wait_for()

    legend = page.locator("[data-compare] .u-legend").inner_text()
    assert first in legend and second in legend
    assert "2.5" in page.locator("#parameters").inner_text()
    assert page.problems == []
    screenshot(page, "compare")


def test_a_sweep_page_lists_its_children_and_draws_parallel_coordinates(amlocal_home, tmp_path,
                                                                         ui, page):
    parent, children = finished_sweep(tmp_path / "sweep", 4)

    page.goto(f"{ui.url}/runs/{parent}")
    page.locator("[data-parallel] canvas").wait_for()

    table = page.locator("#children table.data").inner_text()
    assert len(children) == 4 and all(child in table for child in children)
    assert "Best loss" in table and "batch" in table and "lr" in table
    assert all(child in page.locator("[data-parallel] .u-legend").inner_text() for child in children)
    assert page.problems == []
    screenshot(page, "sweep")


def test_cancel_from_the_run_page(amlocal_home, tmp_path, ui, page):
    run_id = sleeping_run(tmp_path)
    store = RunStore(amlocal_home)
    wait_for(lambda: store.get_status(run_id) == "Running", timeout=60)
    page.on("dialog", lambda dialog: dialog.accept())

    page.goto(f"{ui.url}/runs/{run_id}")
    page.get_by_role("button", name="Cancel run").click()

    wait_for(lambda: store.get_status(run_id) == "Canceled", timeout=60)
    expect(page.locator("#run-status .badge")).to_have_text("Canceled", timeout=30_000)
    expect(page.locator("#cancel")).to_have_count(0, timeout=30_000)  # the page of the ended run
    assert page.problems == []
    screenshot(page, "run-canceled")


def test_the_compute_models_and_services_pages(amlocal_home, tmp_path, ui, page):
    record = process_run(write_script(tmp_path / "m", "train.py", LOGGING_SCRIPT))
    invoke("models", "register", "--name", "vision-model", "--run", record["id"],
           "--path", "outputs/report.html", "--tag", "stage=candidate")

    for path, expected in (("/compute", "local"), ("/models", "vision-model"),
                           ("/services", "No web services deployed")):
        page.goto(ui.url + path)
        assert expected in page.locator("main").inner_text()
        screenshot(page, path.strip("/"))
    page.get_by_role("link", name="Runs").click()
    page.wait_for_url(ui.url + "/")
    assert page.problems == []


@pytest.mark.docker
def test_a_run_logging_through_azureml_and_mlflow_shows_both_on_its_page(
        amlocal_home, docker_client, tmp_path, ui, page, monkeypatch):
    """Issue 15's end-to-end check: a Docker run whose script logs with run.log and with
    mlflow.log_metric (mlflow-skinny in its image), sampled by the driver meanwhile, is in the
    run table, and its page shows both metrics, the system metrics and its stages."""
    from test_mlflow import SCRIPT as MLFLOW_SCRIPT

    monkeypatch.setenv("AMLOCAL_SYSTEM_METRICS_S", "0.2")
    source = write_script(tmp_path / "src", "train.py",
                          MLFLOW_SCRIPT + "import time\ntime.sleep(1.5)\n")
    result = invoke("run", source, "--script", "train.py", "--executor", "docker",
                    "--pip", "mlflow-skinny", "--experiment", "both-ways", "--json")
    assert result.exit_code == 0, result.output
    run_id = last_json(result)["id"]
    metrics = last_json(invoke("runs", "metrics", run_id, "--json"))
    assert metrics["aml_metric"] == [0.0, 0.5, 1.0] and metrics["mlflow_metric"] == [0.0, 2.0, 4.0]

    page.goto(ui.url + "/")
    row = page.locator(f'tr[data-run="{run_id}"]')
    row.wait_for()
    assert "Completed" in row.inner_text() and "both-ways" in row.inner_text()

    page.goto(f"{ui.url}/runs/{run_id}")
    for name in ("aml_metric", "mlflow_metric"):
        curve = page.locator("#metrics figure.curve", has_text=name)
        expect(curve.locator("canvas")).to_have_count(1)
        assert "3 values" in curve.inner_text()
    expect(page.locator("#system figure.curve",
                        has_text="system/cpu_utilization_percentage").locator("canvas")).to_have_count(1)
    stages = page.locator("table.stages tbody tr")
    assert [stages.nth(index).inner_text().split()[0] for index in range(stages.count())] == [
        "Preparing", "Scaling", "Running", "PostProcessing"]
    assert all("Completed" in stages.nth(index).inner_text() for index in range(4))
    assert page.problems == []
    screenshot(page, "run-azureml-and-mlflow")
