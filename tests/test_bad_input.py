"""Requests at the edges of what Azure ML accepts, and damaged histories: each gets what a user
expects (it works, or one line saying why not), never a traceback.

Real parts throughout: the CLI through CliRunner, a real run history, real runs (the process
executor, and Docker where marked).
"""

import json
import shutil
from pathlib import Path

import pytest

from conftest import write_script
from test_cli import invoke, last_json

LONGEST_EXPERIMENT = "e" * 254 + "9"  # Azure ML allows 255 characters

TRAIN = """
import os
from azureml.core.run import Run
run = Run.get_context()
run.log("loss", 0.5)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
"""


def assert_one_line_error(result, exit_code=2, containing=""):
    assert result.exit_code == exit_code, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    assert containing in result.stderr, result.stderr


# -- 5: experiment names of up to 255 characters -------------------------------------------------

@pytest.mark.parametrize("executor", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_longest_experiment_name_runs_and_everything_about_the_run_works(
        amlocal_home, tmp_path, executor, request):
    if executor == "docker":
        request.getfixturevalue("docker_client")
    source = write_script(tmp_path / "src", "train.py", TRAIN)

    result = invoke("run", source, "--script", "train.py", "--executor", executor,
                    "--experiment", LONGEST_EXPERIMENT, "--json")

    assert result.exit_code == 0, result.output
    record = last_json(result)
    run_id = record["id"]
    # The id users see is azureml-core's, <experiment>_<unix time>_<8 hex>; its folder is bounded.
    assert run_id.startswith(LONGEST_EXPERIMENT + "_") and len(run_id) == 255 + 1 + 10 + 1 + 8
    assert record["status"] == "Completed"
    assert len(Path(record["run_dir"]).name) <= 255
    assert [entry["id"] for entry in last_json(invoke("runs", "list", "--json"))] == [run_id]
    assert invoke("runs", "show", run_id).exit_code == 0
    assert "outputs/model.txt" in last_json(invoke("runs", "files", run_id, "--json"))
    downloaded = invoke("runs", "download", run_id, "--prefix", "outputs/", "-o", tmp_path / "dl")
    assert downloaded.exit_code == 0 and (tmp_path / "dl" / "outputs" / "model.txt").read_text() == "weights"
    assert invoke("runs", "report", run_id, "-o", tmp_path / "report").exit_code == 0
    registered = invoke("models", "register", "--run", run_id, "--name", "long", "--path",
                        "outputs/model.txt")
    assert registered.exit_code == 0, registered.output


def test_sweep_in_an_experiment_of_the_longest_name_completes(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", TRAIN)

    result = invoke("sweep", source, "--script", "train.py", "--executor", "process",
                    "--experiment", LONGEST_EXPERIMENT, "--param", "lr=uniform(0.1,1)",
                    "--metric", "loss", "--goal", "minimize", "--max-total-runs", "2",
                    "--seed", "7", "--json")

    assert result.exit_code == 0, result.output
    sweep = last_json(result)
    assert sweep["status"] == "Completed" and len(sweep["children"]) == 2


def test_run_folder_names_are_bounded_stable_and_distinct():
    from amlocal.backends.local.store import run_folder_name

    long_a, long_b = "x" * 300 + "_a", "x" * 300 + "_b"

    assert run_folder_name("exp_1796111793_5cd5eaab") == "exp_1796111793_5cd5eaab"
    assert run_folder_name(long_a) == run_folder_name(long_a)
    assert run_folder_name(long_a) != run_folder_name(long_b)
    assert all(len(run_folder_name(name)) <= 200 for name in (long_a, long_b))
    # An id that is no plain file name (a script's child_run(run_id=...)) never names a path.
    for odd in ("../../escape", "/etc", ".hidden", "a/b", "nul\x00byte"):
        name = run_folder_name(odd)
        assert "/" not in name and "\x00" not in name and not name.startswith(".")


# -- 6: a damaged run does not hide the others ---------------------------------------------------

def test_runs_list_shows_the_other_runs_and_marks_one_whose_folder_is_missing(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", TRAIN)
    first, lost, last = (last_json(invoke("run", source, "--script", "train.py", "--executor",
                                          "process", "--json")) for _ in range(3))
    shutil.rmtree(lost["run_dir"])

    listed = invoke("runs", "list", "--json")
    table = invoke("runs", "list")

    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.stdout)
    assert [record["id"] for record in records] == [last["id"], lost["id"], first["id"]]
    assert "is missing" in records[1]["corrupted"]
    assert records[0]["status"] == records[2]["status"] == "Completed"
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith(lost["id"]))
    assert "DAMAGED" in row
    assert f"run {lost['id']}" in table.stderr and "is missing" in table.stderr
    assert "Traceback" not in table.output
    # The damaged run itself is still reported, not served.
    assert invoke("runs", "show", lost["id"]).exit_code == 5
