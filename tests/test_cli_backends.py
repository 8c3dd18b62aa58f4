"""The command line over each backend: the in-memory test backend (injected through the factory
seam, cli/backends.py) and the local backend (a real run of the process executor, found by the
default factory in $AMLOCAL_HOME). The same commands give the same answers over both, which
proves that `amlocal runs ...` and `amlocal models ...` need nothing of a backend but the Run
interface (backends/base.py, backends/registries.py).
"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from amlocal.backends import status as run_status
from amlocal.cli.main import cli
from backend_harness import GREETING, MODEL_BYTES, make_harness
from memory_backend import MemoryBackends


class Cli:
    """`amlocal ...` over one backend's harness."""

    def __init__(self, harness):
        self.harness = harness
        self.factory = None
        if harness.backend.name == "memory":
            self.factory = MemoryBackends()
            self.factory.backend = harness.backend

    def __call__(self, *args, exit_code=0):
        result = CliRunner().invoke(cli, [str(arg) for arg in args], obj=self.factory,
                                    catch_exceptions=False)
        assert result.exit_code == exit_code, result.output
        return result

    def json(self, *args):
        return json.loads(self(*args, "--json").stdout.strip().splitlines()[-1])


@pytest.fixture(params=["memory", "process"])
def amlocal(request, tmp_path, monkeypatch):
    return Cli(make_harness(request.param, tmp_path, monkeypatch))


def test_runs_list_and_show_give_the_run_and_its_metrics(amlocal):
    run_id = amlocal.harness.finished().id

    assert run_id in [record["id"] for record in amlocal.json("runs", "list")]
    shown = amlocal.json("runs", "show", run_id)
    assert (shown["id"], shown["status"], shown["experiment"]) == \
        (run_id, run_status.COMPLETED, "contract")
    text = amlocal("runs", "show", run_id).stdout
    assert run_id in text and "loss" in text
    assert amlocal.json("runs", "metrics", run_id)["loss"] == [0.5, 0.25]


def test_runs_logs_and_files_show_what_the_script_left(amlocal):
    run_id = amlocal.harness.finished().id

    assert GREETING in amlocal("runs", "logs", run_id).stdout
    assert "outputs/model.bin" in amlocal.json("runs", "files", run_id)


def test_runs_download_writes_the_files_bytes(amlocal, tmp_path):
    run_id = amlocal.harness.finished().id

    written = amlocal.json("runs", "download", run_id, "--prefix", "outputs/",
                           "-o", tmp_path / "dl")

    assert str(tmp_path / "dl" / "outputs" / "model.bin") in written
    assert (tmp_path / "dl" / "outputs" / "model.bin").read_bytes() == MODEL_BYTES


def test_runs_cancel_ends_a_running_run_canceled(amlocal):
    run_id = amlocal.harness.running().id

    canceled = amlocal.json("runs", "cancel", run_id)

    assert canceled["status"] == run_status.CANCELED
    refused = amlocal("runs", "cancel", run_id, exit_code=2)
    assert "already ended Canceled" in refused.stderr


def test_runs_report_shows_the_runs_log_files_and_metrics(amlocal, tmp_path):
    run_id = amlocal.harness.finished().id

    summary = amlocal.json("runs", "report", run_id, "-o", tmp_path / "report")

    page = Path(summary["file"]).read_text()
    assert summary["status"] == run_status.COMPLETED
    for shown in (GREETING, "outputs/model.bin", "loss"):
        assert shown in page


def test_models_register_list_show_download_update_delete(amlocal, tmp_path):
    run_id = amlocal.harness.finished().id

    registered = amlocal.json("models", "register", "--name", "digits", "--run", run_id,
                              "--path", "outputs/model.bin", "--tag", "stage=dev")
    assert (registered["id"], registered["run_id"]) == ("digits:1", run_id)
    again = amlocal("models", "register", "--name", "digits", "--run", run_id, "--path",
                    "outputs/model.bin")
    assert "Registered model digits:2" in again.stdout
    assert [record["id"] for record in amlocal.json("models", "list", "--name", "digits")] == \
        ["digits:2", "digits:1"]
    assert "model.bin" in amlocal("models", "show", "digits:1").stdout
    path = amlocal.json("models", "download", "digits:1", "-o", tmp_path / "model")["path"]
    assert Path(path).read_bytes() == MODEL_BYTES
    assert amlocal.json("models", "update", "digits:1", "--tag", "stage=prod")["tags"] == \
        {"stage": "prod"}
    amlocal("models", "delete", "digits:2")
    assert [record["id"] for record in amlocal.json("models", "list")] == ["digits:1"]
