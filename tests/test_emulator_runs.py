"""The emulator's run history, metrics and artifacts, with the real azureml-core 1.61 as the client:
runs that the local backend ran (the process executor: fast, no Docker) read and changed through
`Run`, `Experiment.get_runs`, `get_metrics`, `run.log` + flush (metric batch ingest, with Azure's
rules), `get_file_names`, `download_file(s)`."""

import json
from pathlib import Path

import pytest
import requests

from conftest import write_script

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Experiment, Run  # noqa: E402

import amlocal.emulator  # noqa: E402
from amlocal.backends.base import RunSpec  # noqa: E402
from amlocal.backends.local import LocalBackend  # noqa: E402
from amlocal.service.tokens import TokenIssuer  # noqa: E402

WS_PATH = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/amlocal/providers"
           "/Microsoft.MachineLearningServices/workspaces/local")

SCRIPT = """\
import os
from azureml.core.run import Run
run = Run.get_context()
for accuracy in (0.5, 0.6, 0.7):
    run.log("Accuracy", accuracy)
run.log("Epochs", 3)
run.log("model", "mlp")
run.log_list("losses", [0.9, 0.5, 0.25])
run.log_row("roc", fpr=0.1, tpr=0.8)
run.log_row("roc", fpr=0.2, tpr=0.9)
run.log_row("best", epoch=3, accuracy=0.7)
run.log_table("summary", {"epoch": [1, 2], "loss": [0.5, 0.25]})
run.tag("team", "vision")
os.makedirs("outputs/sub", exist_ok=True)
with open("outputs/model.txt", "w") as out:
    out.write("weights")
with open("outputs/sub/notes.txt", "w") as out:
    out.write("notes")
"""

# What azureml-core's get_metrics gives for SCRIPT's metrics on Azure ML (InlineMetric's rules:
# one value is the value, several a list; a table's rows become columns of lists).
EXPECTED_METRICS = {"Accuracy": [0.5, 0.6, 0.7], "Epochs": 3, "model": "mlp",
                    "losses": [0.9, 0.5, 0.25], "roc": {"fpr": [0.1, 0.2], "tpr": [0.8, 0.9]},
                    "best": {"epoch": 3, "accuracy": 0.7},
                    "summary": {"epoch": [1, 2], "loss": [0.5, 0.25]}}


@pytest.fixture(scope="module")
def runs(emulator, tmp_path_factory):
    """Two Completed runs of SCRIPT in experiment `emulated`, run by the local backend."""
    source = write_script(tmp_path_factory.mktemp("src"), "train.py", SCRIPT)
    backend = LocalBackend(emulator.home)
    ids = []
    for _ in range(2):
        handle = backend.submit(RunSpec(source_dir=source, script="train.py",
                                        experiment="emulated", executor="process"))
        assert handle.wait()["status"] == "Completed"
        ids.append(handle.id)
    return ids


def experiment():
    return Experiment(amlocal.emulator.workspace(), "emulated")


def headers():
    return amlocal.emulator.auth().get_authentication_header()


# -- run history ------------------------------------------------------------------------------

def test_a_local_run_reads_back_as_an_azure_ml_run(emulator, runs):
    run = Run(experiment(), runs[0])

    details = run.get_details()

    assert run.get_status() == "Completed"
    assert details["runId"] == runs[0] and details["status"] == "Completed"
    assert details["target"] == "local"
    assert details["startTimeUtc"] and details["endTimeUtc"]
    assert list(details["logFiles"]) == ["azureml-logs/70_driver_log.txt"]
    assert run.get_tags() == {"team": "vision"}
    assert run.number >= 1 and run.experiment.name == "emulated"
    assert amlocal.emulator.workspace().get_run(runs[0]).id == runs[0]


def test_tags_and_properties_are_written_to_the_run_history(emulator, runs):
    run = Run(experiment(), runs[0])

    run.tag("stage", "eval")
    run.set_tags({"owner": "ci", "team": "vision-2"})
    run.add_properties({"commit": "abc123"})

    again = Run(experiment(), runs[0])
    assert again.get_tags() == {"team": "vision-2", "stage": "eval", "owner": "ci"}
    assert again.get_properties() == {"commit": "abc123"}
    handle = LocalBackend(emulator.home).get_run(runs[0])  # amlocal runs show sees the same
    assert handle.get_details()["tags"] == again.get_tags()
    assert handle.get_details()["properties"] == {"commit": "abc123"}


def test_azure_limits_on_tags_and_properties_answer_with_azures_error(emulator, runs):
    url = f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments/emulated/runs/{runs[1]}"
    too_many = {f"tag{index}": "x" for index in range(51)}

    refused = [requests.patch(url, json=body, headers=headers(), timeout=10) for body in
               ({"tags": too_many}, {"tags": {"k" * 101: "v"}},
                {"properties": {"key": "v" * 1001}})]
    Run(experiment(), runs[1]).add_properties({"fixed": "1"})
    changed = requests.patch(url, json={"properties": {"fixed": "2"}}, headers=headers(), timeout=10)

    for answer in [*refused, changed]:
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "UserError"
    assert "at most 50" in refused[0].json()["error"]["message"]
    assert "cannot be changed" in changed.json()["error"]["message"]
    assert "tag0" not in Run(experiment(), runs[1]).get_tags()  # nothing half-written


def test_get_runs_lists_the_experiments_runs_with_filters(emulator, runs):
    Run(experiment(), runs[1]).tag("picked", "yes")

    listed = list(experiment().get_runs())
    picked = list(experiment().get_runs(tags={"picked": "yes"}))
    completed = list(Run.list(experiment(), status="Completed"))

    assert sorted(run.id for run in listed) == sorted(runs)
    assert [run.id for run in picked] == [runs[1]]
    assert sorted(run.id for run in completed) == sorted(runs)
    assert list(experiment().get_runs(tags={"picked": "no"})) == []


def test_a_run_that_is_not_there_or_not_a_plain_id_is_refused(emulator, runs):
    base = f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments"

    missing = requests.get(f"{base}/emulated/runs/emulated_1_00000000", headers=headers(), timeout=10)
    elsewhere = requests.get(f"{base}/other/runs/{runs[0]}", headers=headers(), timeout=10)
    odd = requests.get(f"{base}/emulated/runs/a%24b%00c", headers=headers(), timeout=10)

    assert missing.status_code == elsewhere.status_code == 404
    assert missing.json()["error"]["code"] == "ResourceNotFound"
    assert odd.status_code == 400
    assert odd.json()["error"]["code"] == "ValidationError"


# -- metrics ----------------------------------------------------------------------------------

def test_get_metrics_reads_what_the_script_logged(emulator, runs):
    assert Run(experiment(), runs[0]).get_metrics() == EXPECTED_METRICS
    assert Run(experiment(), runs[0]).get_metrics(name="Accuracy") == \
        {"Accuracy": [0.5, 0.6, 0.7]}


def test_run_log_through_the_sdk_lands_in_the_run_history(emulator, runs):
    run = Run(experiment(), runs[1])

    run.log("Loss", 0.25)
    run.log("Loss", 0.125)
    run.log_list("scores", [1, 2, 3])
    run.log_row("pr", precision=0.9, recall=0.5)
    run.flush()

    metrics = Run(experiment(), runs[1]).get_metrics()
    assert metrics["Loss"] == [0.25, 0.125]
    assert metrics["scores"] == [1, 2, 3]
    assert metrics["pr"] == {"precision": 0.9, "recall": 0.5}
    assert LocalBackend(emulator.home).get_run(runs[1]).get_metrics()["Loss"] == [0.25, 0.125]
    assert f"POST /metric/v2.0{WS_PATH}/runs/{runs[1]}/batch 200" in emulator.request_log()


def _batch(name, columns, values, kind="azureml.v1.scalar"):
    return {"name": name, "columns": columns, "properties": {"uxMetricType": kind},
            "value": [{"metricId": str(index), "createdUtc": "2026-12-01T00:00:00Z", **value}
                      for index, value in enumerate(values)]}


@pytest.mark.parametrize("metrics, message", [
    ([_batch(f"m{index}", {f"m{index}": "double"}, [{"data": {f"m{index}": 1.0}}])
      for index in range(51)], "at most 50"),
    ([_batch("wide", {f"c{index}": "int" for index in range(16)},
             [{"data": {f"c{index}": index for index in range(16)}}], "azureml.v1.table")],
     "at most 15"),
    ([_batch("x" * 256, {"x" * 256: "double"}, [{"data": {"x" * 256: 1.0}}])],
     "longer than 255 characters"),
    ([_batch("s", {"s": "string"}, [{"data": {"s": "v" * 256}}])], "longer than 255 characters"),
    ([_batch("stepped", {"stepped": "double"},
             [{"step": 1, "data": {"stepped": 1.0}}, {"data": {"stepped": 2.0}}])],
     "it must be specified for all values"),
    ([_batch("rows", {"rows": "double"}, [{"data": {"rows": 1.0}}] * 251)], "at most 250"),
    ([_batch("nested", {"nested": "string"}, [{"data": {"nested": {"a": 1}}}])], "not a scalar"),
    ([_batch("bell\x07", {"bell\x07": "double"}, [{"data": {"bell\x07": 1.0}}])],
     "the control character U+0007"),
    ([_batch("mixed", {"mixed": "double"}, [{"data": {"mixed": 1.0}}]),
      _batch("mixed-bad", {"other": "double"}, [{"data": {"other": 1.0}}])],
     "only column is its name"),
])
def test_metric_batches_that_break_azures_rules_are_refused_whole(emulator, runs, metrics,
                                                                  message):
    url = f"{emulator.endpoint}/metric/v2.0{WS_PATH}/runs/{runs[1]}/batch"
    before = LocalBackend(emulator.home).get_run(runs[1]).get_metrics()

    answer = requests.post(url, json={"values": metrics, "reportErrors": True}, headers=headers(),
                           timeout=10)

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ValidationError"
    assert message in answer.json()["error"]["message"]
    assert LocalBackend(emulator.home).get_run(runs[1]).get_metrics() == before


def test_a_metric_batch_that_is_not_json_or_too_big_is_refused(emulator, runs):
    url = f"{emulator.endpoint}/metric/v2.0{WS_PATH}/runs/{runs[1]}/batch"

    garbage = requests.post(url, data=b"\xff{", headers=headers(), timeout=10)
    huge = requests.post(url, data=b" " * (17 << 20), headers=headers(), timeout=30)

    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]["message"]
    assert huge.status_code == 413


# -- artifacts --------------------------------------------------------------------------------

def test_files_list_and_download_through_the_sdk(emulator, runs, tmp_path):
    run = Run(experiment(), runs[0])

    names = run.get_file_names()
    run.download_file("outputs/model.txt", str(tmp_path))
    run.download_files(prefix="outputs", output_directory=str(tmp_path / "all"))

    assert names == ["azureml-logs/70_driver_log.txt", "outputs/model.txt",
                     "outputs/sub/notes.txt"]
    assert (tmp_path / "model.txt").read_text() == "weights"
    assert (tmp_path / "all" / "outputs" / "sub" / "notes.txt").read_text() == "notes"
    assert not (tmp_path / "all" / "azureml-logs").exists()


def _content_uri(emulator, run_id, name):
    answer = requests.get(f"{emulator.endpoint}/artifact/v2.0{WS_PATH}/artifacts/contentinfo/"
                          f"ExperimentRun/dcid.{run_id}/{name}", headers=headers(), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["contentUri"]


def test_content_urls_are_signed_for_one_run(emulator, runs):
    uri = _content_uri(emulator, runs[0], "outputs/model.txt")
    unsigned = uri.split("?")[0]
    other_run = uri.replace(runs[0], runs[1], 1)
    issuer = TokenIssuer(emulator.home / "emulator" / "token-secret")

    assert requests.get(uri, timeout=10).content == b"weights"
    assert requests.get(unsigned, timeout=10).status_code == 403
    assert requests.get(other_run, timeout=10).status_code == 403
    read_token = uri.split("sig=")[1]
    patched = requests.patch(f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments/emulated/"
                             f"runs/{runs[0]}", json={"tags": {"a": "b"}},
                             headers={"Authorization": f"Bearer {read_token}"}, timeout=10)
    assert patched.status_code == 403  # a content signature is no run token
    assert issuer.verify(read_token).scope == f"read:{runs[0]}"


def test_artifact_paths_go_through_the_run_folder_door(emulator, runs):
    base = (f"{emulator.endpoint}/artifact/v2.0{WS_PATH}/artifacts/contentinfo/ExperimentRun/"
            f"dcid.{runs[0]}")
    token = _content_uri(emulator, runs[0], "outputs/model.txt").split("sig=")[1]
    content = f"{emulator.endpoint}/amlocal/content/{runs[0]}"

    for name in ("..%2F..%2Famlocal.db", "outputs/..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
                 "snapshot/train.py", "outputs/missing.txt", "outputs%00"):
        assert requests.get(f"{base}/{name}", headers=headers(), timeout=10).status_code == 404
    for name in ("..%2F..%2Famlocal.db", "%2Fetc%2Fpasswd", "snapshot/train.py"):
        answer = requests.get(f"{content}/{name}?sig={token}", timeout=10)
        assert answer.status_code == 404, name
        assert answer.json()["error"]["code"] == "ResourceNotFound"
    prefix = requests.get(f"{emulator.endpoint}/artifact/v2.0{WS_PATH}/artifacts/prefix/"
                          f"contentinfo/ExperimentRun/dcid.{runs[0]}/outputs", headers=headers(),
                          timeout=10)
    assert [entry["path"] for entry in prefix.json()["value"]] == ["outputs/model.txt",
                                                                  "outputs/sub/notes.txt"]
    assert json.loads(Path(emulator.config_path).read_text())["endpoint"] == emulator.endpoint


def test_a_failed_run_reads_back_failed_with_its_error(emulator, tmp_path):
    from azureml.exceptions import ActivityFailedException

    source = write_script(tmp_path / "src", "fail.py", "raise SystemExit(3)\n")
    handle = LocalBackend(emulator.home).submit(RunSpec(source_dir=source, script="fail.py",
                                                        experiment="emulated", executor="process"))
    assert handle.wait()["status"] == "Failed"
    run = Run(experiment(), handle.id)

    details = run.get_details()

    assert run.get_status() == "Failed"
    assert details["error"]["error"]["code"] == "UserError"
    assert details["error"]["error"]["message"] == "fail.py exited with code 3"
    with pytest.raises(ActivityFailedException):
        run.wait_for_completion(show_output=False)


def test_wait_for_completion_of_a_completed_run_shows_its_summary(emulator, runs, capsys):
    details = Run(experiment(), runs[0]).wait_for_completion(show_output=True)

    shown = capsys.readouterr().out
    assert details["status"] == "Completed"
    assert f"RunId: {runs[0]}" in shown and "Execution Summary" in shown


def test_a_refused_patch_changes_nothing_and_remove_tags_removes(emulator, runs):
    run = Run(experiment(), runs[1])
    run.add_properties({"frozen": "1"})
    run.set_tags({"gone": "soon"})
    url = f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments/emulated/runs/{runs[1]}"

    refused = requests.patch(url, json={"tags": {"new": "x"}, "properties": {"frozen": "2"}},
                             headers=headers(), timeout=10)
    run.remove_tags(["gone"])

    assert refused.status_code == 400 and "cannot be changed" in refused.json()["error"]["message"]
    tags = Run(experiment(), runs[1]).get_tags()
    assert "new" not in tags and "gone" not in tags


def test_run_cancel_through_the_sdk_cancels_the_local_run(emulator, tmp_path):
    source = write_script(tmp_path / "src", "slow.py", "import time\ntime.sleep(120)\n")
    handle = LocalBackend(emulator.home).submit(
        RunSpec(source_dir=source, script="slow.py", experiment="emulated", executor="process"),
        detach=True)
    run = Run(experiment(), handle.id)

    run.cancel()

    assert handle.wait(timeout=60)["status"] == "Canceled"
    assert Run(experiment(), handle.id).get_status() == "Canceled"


def test_a_run_token_is_issued_for_that_run_only(emulator, runs):
    run_token = Run(experiment(), runs[0])._client.run.get_token().token
    issuer = TokenIssuer(emulator.home / "emulator" / "token-secret")
    as_run = {"Authorization": f"Bearer {run_token}"}
    runs_url = f"{emulator.endpoint}/history/v1.0{WS_PATH}/experiments/emulated/runs"

    assert issuer.verify(run_token).scope == f"run:{runs[0]}"
    assert requests.get(f"{runs_url}/{runs[0]}", headers=as_run, timeout=10).status_code == 200
    assert requests.get(f"{runs_url}/{runs[1]}", headers=as_run, timeout=10).status_code == 403
    renewed = requests.get(f"{runs_url}/{runs[0]}/token", headers=as_run, timeout=10)
    assert issuer.verify(renewed.json()["token"]).scope == f"run:{runs[0]}"
    assert requests.post(f"{emulator.endpoint}/metric/v2.0{WS_PATH}/runs/{runs[1]}/batch",
                         json={"values": []}, headers=as_run, timeout=10).status_code == 403
