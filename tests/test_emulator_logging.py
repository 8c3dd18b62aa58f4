"""Interactive runs: `Experiment.start_logging()` from the user's own process (a notebook, a test)
against `amlocal serve`, with the real azureml-core 1.61 as the client. The run is created in the
run history Running with no executor, keeps the snapshot of `snapshot_directory`, takes metrics,
tags and files, and `complete()` / `fail()` / `cancel()` end it through the run-status state
machine; its children (`child_run`, `create_children`) are recorded under it, as are those of a
submitted run."""

import json
import subprocess
import sys
import textwrap

import pytest
import requests

from conftest import emulator_environment, write_script

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Experiment, Run  # noqa: E402

import amlocal.emulator  # noqa: E402
from amlocal.backends.base import RunSpec  # noqa: E402
from amlocal.backends.local import LocalBackend  # noqa: E402

AMLOCAL = [sys.executable, "-c", "from amlocal.cli.main import main; main()"]
EXPERIMENT = "interactive"
WS_PATH = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/amlocal/providers"
           "/Microsoft.MachineLearningServices/workspaces/local")


def history_url(emulator):
    return f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments/{EXPERIMENT}"


def experiment():
    return Experiment(amlocal.emulator.workspace(), EXPERIMENT)


def cli(home, sdk_home, *args):
    result = subprocess.run([*AMLOCAL, *args], capture_output=True, text=True, timeout=120,
                            env=emulator_environment(home, sdk_home))
    assert result.returncode == 0, result.stderr
    return result.stdout


def shown(emulator, run_id):
    return json.loads(cli(emulator.home, emulator.home, "runs", "show", run_id, "--json"))


def statuses(emulator, run_id):
    return [status for status, _at in LocalBackend(emulator.home).store.status_history(run_id)]


def test_start_logging_records_a_running_run_with_its_snapshot(emulator, tmp_path):
    source = write_script(tmp_path / "notebook", "prepare.py", "print('prepare')\n")

    run = experiment().start_logging(snapshot_directory=str(source), display_name="notebook")

    assert run.get_status() == "Running"
    details = shown(emulator, run.id)
    assert details["status"] == "Running" and details["experiment"] == EXPERIMENT
    assert details["executor"] == "interactive" and details["display_name"] == "notebook"
    snapshot = LocalBackend(emulator.home).get_run(run.id).run_dir / "snapshot"
    assert (snapshot / "prepare.py").read_text() == "print('prepare')\n"
    run.complete()


def test_an_interactive_run_logs_tags_uploads_and_completes(emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "notes.txt").write_text("notes")
    run = experiment().start_logging(snapshot_directory=None, outputs="outputs")
    for accuracy in (0.5, 0.6, 0.7):
        run.log("Accuracy", accuracy)
    run.log_row("roc", fpr=0.1, tpr=0.8)
    run.tag("team", "vision")
    run.upload_file("uploaded/notes.txt", str(tmp_path / "notes.txt"))
    # Written after the start: complete() uploads the outputs folder.
    (tmp_path / "outputs" / "model.txt").write_text("weights")

    run.complete()

    assert run.get_status() == "Completed"
    assert statuses(emulator, run.id) == ["NotStarted", "Preparing", "Queued", "Running",
                                          "Finalizing", "Completed"]
    again = Run(experiment(), run.id)
    assert again.get_metrics() == {"Accuracy": [0.5, 0.6, 0.7], "roc": {"fpr": 0.1, "tpr": 0.8}}
    assert again.get_tags() == {"team": "vision"}
    assert {"uploaded/notes.txt", "outputs/model.txt"} <= set(again.get_file_names())
    listed = cli(emulator.home, emulator.home, "runs", "list", "--experiment", EXPERIMENT)
    assert run.id in listed
    details = shown(emulator, run.id)
    assert details["status"] == "Completed" and details["tags"] == {"team": "vision"}
    handle = LocalBackend(emulator.home).get_run(run.id)
    assert (handle.run_dir / "outputs" / "model.txt").read_text() == "weights"


def test_fail_ends_an_interactive_run_failed_with_its_message(emulator):
    run = experiment().start_logging(snapshot_directory=None)

    run.fail(error_details="the data was bad")

    assert run.get_status() == "Failed"
    details = shown(emulator, run.id)
    assert details["status"] == "Failed" and "the data was bad" in details["error"]


def test_cancel_ends_an_interactive_run_canceled(emulator):
    run = experiment().start_logging(snapshot_directory=None)

    run.cancel()

    assert run.get_status() == "Canceled"
    assert statuses(emulator, run.id)[-2:] == ["CancelRequested", "Canceled"]


def test_amlocal_runs_cancel_ends_an_interactive_run(emulator):
    """Nothing runs an interactive run: a cancel from the command line ends it at once."""
    run = experiment().start_logging(snapshot_directory=None)

    cli(emulator.home, emulator.home, "runs", "cancel", run.id)

    assert shown(emulator, run.id)["status"] == "Canceled"


def test_an_interactive_run_whose_process_died_stays_running(emulator, tmp_path):
    """As on Azure ML (an interactive run has no heartbeat): nothing drives it, so nothing
    fails it; `amlocal runs cancel` (or Run(...).cancel()) ends it."""
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from azureml.core import Experiment
        import amlocal.emulator
        run = Experiment(amlocal.emulator.workspace(), {EXPERIMENT!r}).start_logging(
            snapshot_directory=None)
        run.log("loss", 0.5)
        run.flush()
        print(run.id, flush=True)
        os._exit(0)  # no complete(): the user's kernel died
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, env=emulator_environment(emulator.home,
                                                                  emulator.stderr_path.parent))
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[-1]

    assert shown(emulator, run_id)["status"] == "Running"
    assert Run(experiment(), run_id).get_metrics() == {"loss": 0.5}


def test_child_runs_of_an_interactive_run(emulator):
    run = experiment().start_logging(snapshot_directory=None)

    child = run.child_run(name="fold-1")
    child.log("fold_accuracy", 0.6)
    child.complete()
    batch = run.create_children(count=3)
    for index, each in enumerate(batch):
        each.log("index", index)
        each.complete()
    run.complete()

    children = {each.id: each for each in Run(experiment(), run.id).get_children()}
    assert set(children) == {child.id, *(each.id for each in batch)}
    assert all(each.get_status() == "Completed" for each in children.values())
    assert children[child.id].get_metrics() == {"fold_accuracy": 0.6}
    assert sorted(children[each.id].get_tags()["azureml.batch_child_number"]
                  for each in batch) == ["0", "1", "2"]
    for each in batch:
        assert LocalBackend(emulator.home).get_run(each.id).get_details()["parent_id"] == run.id
    assert statuses(emulator, batch[0].id)[:4] == ["NotStarted", "Preparing", "Queued", "Running"]


def test_a_submitted_runs_script_creates_children_in_a_batch(emulator, tmp_path):
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        run = Run.get_context()
        for index, child in enumerate(run.create_children(tag_key="fold", tag_values=["a", "b"])):
            child.log("index", index)
            child.complete()
    """))
    handle = LocalBackend(emulator.home).submit(RunSpec(
        source_dir=source, script="train.py", experiment=EXPERIMENT, executor="process"))
    assert handle.wait(timeout=120)["status"] == "Completed", \
        (handle.run_dir / "azureml-logs" / "70_driver_log.txt").read_text()

    children = list(Run(experiment(), handle.id).get_children())

    assert sorted(child.get_tags()["fold"] for child in children) == ["a", "b"]
    assert all(child.get_status() == "Completed" for child in children)


def test_a_run_token_creates_and_starts_children_of_its_own_run_only(emulator):
    own = experiment().start_logging(snapshot_directory=None)
    other = experiment().start_logging(snapshot_directory=None)
    as_run = {"Authorization": f"Bearer {own._client.run.get_token().token}"}
    batch = f"{history_url(emulator)}/batch"

    def create(parent, child_id):
        return requests.patch(f"{batch}/runs", headers=as_run, timeout=30, json={"runs": [
            {"runId": child_id, "parentRunId": parent, "status": "NotStarted"}]})

    def start(run_id):
        return requests.post(f"{batch}/events", headers=as_run, timeout=30, json={"events": [
            {"name": "Microsoft.MachineLearning.Run.Start", "data": {"RunId": run_id}}]})

    assert create(other.id, "intruder").status_code == 403
    assert start(other.id).status_code == 403
    assert create(own.id, "own-child").status_code == 200
    assert start("own-child").status_code == 200
    store = LocalBackend(emulator.home).store
    assert store.get_run("own-child")["status"] == "Running"
    assert store.children_of(other.id) == [] and other.get_status() == "Running"
    own.complete()
    other.complete()


def test_a_new_run_with_a_bad_request_is_refused_and_not_recorded(emulator):
    headers = amlocal.emulator.auth().get_authentication_header()
    base = f"{history_url(emulator)}/runs/"
    answer = requests.patch(base + "bad-status", headers=headers, timeout=30,
                            json={"runId": "bad-status", "status": "Completed"})
    assert answer.status_code == 400 and "NotStarted" in answer.json()["error"]["message"]
    answer = requests.patch(base + "bad-name", json={"runId": "bad-name", "name": "a\x1b[2Jb"},
                            headers=headers, timeout=30)
    assert answer.status_code == 400
    store = LocalBackend(emulator.home).store
    for run_id in ("bad-status", "bad-name"):
        with pytest.raises(Exception):
            store.get_run(run_id)


# -- metric ingestion: every value, in logging order --------------------------------------------

def test_thousands_of_values_logged_read_back_complete_and_in_logging_order(emulator):
    """azureml-core sends its metric batches from several threads at once: a batch may arrive
    after one holding later values."""
    run = experiment().start_logging(snapshot_directory=None)
    for value in range(2000):
        run.log("loss", value)
    run.complete()

    assert Run(experiment(), run.id).get_metrics()["loss"] == list(range(2000))
    assert LocalBackend(emulator.home).get_run(run.id).get_metrics()["loss"] == list(range(2000))


def _value(name, value, created, step=None):
    return {"name": name, "columns": {name: "int"},
            "properties": {"uxMetricType": "azureml.v1.scalar"},
            "value": [{"metricId": f"{name}-{value}", "createdUtc": created, "data": {name: value},
                       **({"step": step} if step is not None else {})}]}


def test_a_batch_that_arrives_late_takes_its_place_by_the_time_it_was_logged(emulator):
    run = experiment().start_logging(snapshot_directory=None)
    url = f"{emulator.endpoint}/metric/v2.0{WS_PATH}/runs/{run.id}/batch"
    headers = amlocal.emulator.auth().get_authentication_header()

    def post(*metrics):
        answer = requests.post(url, json={"values": list(metrics), "reportErrors": True},
                               headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text

    post(_value("loss", 3, "2026-12-01T10:00:03.000000Z"),
         _value("loss", 4, "2026-12-01T10:00:04.000000Z"))
    post(_value("loss", 1, "2026-12-01T10:00:01.000000Z"),
         _value("loss", 2, "2026-12-01T10:00:02.000000Z"),
         _value("loss", 5, "2026-12-01T10:00:05.000000Z"))
    post(_value("loss", 6, "2026-12-01T10:00:05.000000Z"))  # a tie: after the one there first
    post(_value("stepped", 7, "2026-12-01T10:00:06.000000Z", step=70))

    assert Run(experiment(), run.id).get_metrics()["loss"] == [1, 2, 3, 4, 5, 6]
    records = LocalBackend(emulator.home).get_run(run.id).get_metric_records()
    assert [record["step"] for record in records if record["name"] == "stepped"] == [70]
    run.complete()


@pytest.mark.parametrize("step", ["1", -1, True, 1.5])
def test_a_step_that_is_not_a_whole_number_from_0_is_refused(emulator, step):
    run = experiment().start_logging(snapshot_directory=None)
    answer = requests.post(f"{emulator.endpoint}/metric/v2.0{WS_PATH}/runs/{run.id}/batch",
                           json={"values": [_value("loss", 1, "2026-12-01T10:00:00Z", step=step)]},
                           headers=amlocal.emulator.auth().get_authentication_header(), timeout=30)

    assert answer.status_code == 400 and "whole number" in answer.json()["error"]["message"]
    assert LocalBackend(emulator.home).get_run(run.id).get_metrics() == {}
    run.complete()


def test_artifact_backed_metrics_keep_their_document_and_name_a_file_of_the_run(emulator, tmp_path):
    run = experiment().start_logging(snapshot_directory=None)
    matrix = {"schema_type": "confusion_matrix", "schema_version": "1.0.0",
              "data": {"class_labels": ["0", "1"], "matrix": [[5, 1], [0, 4]]}}
    run.log_confusion_matrix("confusion", matrix)
    run.log_predictions("predictions", {"schema_type": "predictions", "schema_version": "1.0.0",
                                        "data": {"bin_averages": [0.5], "bin_counts": [[2]]}})
    run.flush()

    handle = LocalBackend(emulator.home).get_run(run.id)
    recorded = {record["name"]: record for record in handle.get_metric_records()}
    assert recorded["confusion"]["type"] == "confusion_matrix"
    assert recorded["confusion"]["value"] == matrix  # the document, for reports and `runs metrics`
    assert {"confusion", "predictions"} <= set(handle.get_file_names())
    assert run.get_metrics()["confusion"] == f"aml://artifactId/ExperimentRun/dcid.{run.id}/confusion"

    # What a script sends is checked: the metric must name a JSON object it uploaded first.
    url = f"{emulator.endpoint}/metric/v2.0{WS_PATH}/runs/{run.id}/batch"
    headers = amlocal.emulator.auth().get_authentication_header()

    def batch(uri):
        return requests.post(url, headers=headers, timeout=30, json={"values": [{
            "name": "late", "columns": {"late": "Artifact"},
            "properties": {"uxMetricType": "azureml.v2.accuracy_table"},
            "value": [{"metricId": "1", "createdUtc": "2026-12-01T00:00:00Z",
                       "data": {"late": uri}}]}]})

    prefix = f"aml://artifactId/ExperimentRun/dcid.{run.id}/"
    missing = batch(prefix + "never-uploaded")
    assert missing.status_code == 400 and "upload the artifact" in missing.json()["error"]["message"]
    other_run = batch("aml://artifactId/ExperimentRun/dcid.someone_else/confusion")
    assert other_run.status_code == 400
    run.upload_file("notes.txt", str(write_script(tmp_path, "notes.txt", "not json") / "notes.txt"))
    not_json = batch(prefix + "notes.txt")
    assert not_json.status_code == 400 and "not a JSON object" in not_json.json()["error"]["message"]
    assert "late" not in {record["name"] for record in handle.get_metric_records()}
    run.complete()
