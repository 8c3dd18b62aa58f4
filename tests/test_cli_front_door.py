"""The command line's front door: the backend factory seam (an injected in-memory backend), the
options `run` and `sweep` share, what `runs show` gives of a sweep, and what the quick commands
import."""

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from amlocal.cli.main import cli
from conftest import write_script
from memory_backend import MemoryBackends
from test_cli import invoke, last_json
from test_hyperdrive import TOY


def invoke_with(factory, *args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], obj=factory, catch_exceptions=False)


def test_run_and_runs_show_use_the_backend_the_factory_gives(amlocal_home, tmp_path):
    factory = MemoryBackends()
    source = write_script(tmp_path / "src", "train.py", "print('never run here')\n")

    ran = invoke_with(factory, "run", source, "--script", "train.py", "--tag", "team=a",
                      "--json", "--", "--epochs", "3")

    assert ran.exit_code == 0, ran.output
    record = last_json(ran)
    assert record["backend"] == "memory" and record["tags"] == {"team": "a"}
    assert "ran train.py" in ran.stdout
    shown = invoke_with(factory, "runs", "show", record["id"])
    assert shown.exit_code == 0, shown.output
    assert f"Run {record['id']} Completed" in click.unstyle(shown.stdout)
    assert "argument_1" in shown.stdout  # its metrics, read through the Run interface
    listed = invoke_with(factory, "runs", "list", "--json")
    assert [run["id"] for run in last_json(listed)] == [record["id"]]
    metrics = invoke_with(factory, "runs", "metrics", record["id"], "--json")
    assert last_json(metrics) == {"argument_0": [0], "argument_1": [1]}
    assert invoke_with(factory, "runs", "logs", record["id"]).stdout == "ran train.py\n"
    waited = invoke_with(factory, "runs", "wait", record["id"], "--json")
    assert waited.exit_code == 0 and last_json(waited)["status"] == "Completed"
    assert set(factory.asked_for) == {"local"}
    assert not (amlocal_home / "runs").exists()  # nothing went to the real history


def test_a_failed_run_from_the_factory_exits_1_and_says_why(amlocal_home, tmp_path):
    factory = MemoryBackends()
    source = write_script(tmp_path / "src", "train.py", "")
    submit = factory.backend.submit

    def failing(spec, **options):
        handle = submit(spec, **options)
        handle.record.update(status="Failed", error="the script said no")
        return handle

    factory.backend.submit = failing
    result = invoke_with(factory, "run", source, "--script", "train.py")

    assert result.exit_code == 1
    assert "the script said no" in result.stderr


def _option_names(command):
    return {option for parameter in command.params if isinstance(parameter, click.Option)
            for option in parameter.opts}


def test_sweep_offers_every_option_of_run():
    from amlocal.cli.sweep import sweep

    run = cli.get_command(None, "run")
    assert _option_names(run) - _option_names(sweep) == set()


def test_sweep_children_get_the_run_options(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", TOY.replace(
        "run = Run.get_context()", "run = Run.get_context()\nimport os\n"
        "run.log('Accuracy', float(os.environ['BONUS']))"))

    result = invoke("sweep", source, "--script", "train.py", "--executor", "process",
                    "--param", "lr=choice(0.1,0.3)", "--sampling", "grid", "--metric", "Accuracy",
                    "--goal", "maximize", "--max-total-runs", "2", "--tag", "team=a",
                    "--env", "BONUS=5", "--max-duration", "600", "--json", "--", "--epochs", "1")

    assert result.exit_code == 0, result.output
    for child in last_json(result)["children"]:
        details = last_json(invoke("runs", "show", child["run_id"], "--json"))
        assert details["tags"]["team"] == "a"
        assert details["max_run_duration_seconds"] == 600
        assert child["best_primary_metric"] == 5


def test_runs_show_json_of_a_sweep_lists_its_children_and_the_best(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", TOY)
    swept = invoke("sweep", source, "--script", "train.py", "--executor", "process",
                   "--param", "lr=choice(0.1,0.3,0.9)", "--sampling", "grid", "--metric",
                   "Accuracy", "--goal", "maximize", "--max-total-runs", "3", "--json", "--",
                   "--epochs", "2")
    assert swept.exit_code == 0, swept.output
    sweep_id = last_json(swept)["id"]

    shown = invoke("runs", "show", sweep_id, "--json")

    assert shown.exit_code == 0, shown.output
    record = last_json(shown)
    children = record["children"]
    assert [child["id"] for child in children] == [f"{sweep_id}_{index}" for index in range(3)]
    assert all(set(child) == {"id", "status", "hyperparameters", "best", "last"}
               for child in children)
    assert all(child["status"] == "Completed" for child in children)
    assert {json.dumps(child["hyperparameters"]) for child in children} == \
        {'{"lr": 0.1}', '{"lr": 0.3}', '{"lr": 0.9}'}
    best = max(children, key=lambda child: child["best"])
    assert best["hyperparameters"] == {"lr": 0.3}
    assert best["last"] == best["best"]  # Accuracy rises each epoch
    assert record["best_child"] == {"id": best["id"], "metric": "Accuracy", "value": best["best"]}
    text = invoke("runs", "show", sweep_id).stdout
    assert "CHILD RUN" in text and best["id"] in text


HEAVY = ("docker", "azureml", "matplotlib", "optuna", "starlette", "uvicorn")


@pytest.mark.parametrize("args", [["runs", "list"], ["runs", "list", "--json"], ["--help"],
                                  ["run", "--help"], ["sweep", "--help"]])
def test_the_quick_commands_import_no_heavy_library(amlocal_home, args):
    code = ("import sys\n"
            "from amlocal.cli.main import cli\n"
            "try:\n"
            f"    cli({args!r}, prog_name='amlocal')\n"
            "except SystemExit as exit:\n"
            "    assert not exit.code, exit.code\n"
            f"print(sorted({{name.split('.')[0] for name in sys.modules}} & {set(HEAVY)!r}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_sweep_dry_run_shows_the_child_run_options_and_the_hyperdrive_config(amlocal_home,
                                                                             tmp_path, monkeypatch):
    pytest.importorskip("azureml.train.hyperdrive", reason="the azure extra (CI installs it)")
    monkeypatch.chdir(tmp_path)
    source = write_script(tmp_path / "src", "train.py", TOY)
    args = ["sweep", source, "--script", "train.py", "--backend", "azure", "--compute",
            "gpu-cluster", "--dry-run", "--param", "lr=choice(0.1,0.3)", "--metric", "Accuracy",
            "--goal", "maximize", "--max-total-runs", "2", "--tag", "team=a", "--node-count", "2",
            "--experiment", "swept"]

    text = invoke(*args)
    document = last_json(invoke(*args, "--json"))

    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("Dry run: nothing is sent to Azure ML.")
    assert "HyperDrive configuration" in text.stdout
    assert document["experiment"] == "swept" and document["tags"] == {"team": "a"}
    assert document["run_configuration"]["nodeCount"] == 2
    assert document["hyperdrive"]["max_total_runs"] == 2
    assert last_json(invoke("runs", "list", "--json")) == []  # nothing was submitted or recorded


def test_a_backend_without_a_dry_run_refuses_it_before_submitting(amlocal_home, tmp_path):
    factory = MemoryBackends()
    source = write_script(tmp_path / "src", "train.py", "")

    result = invoke_with(factory, "run", source, "--script", "train.py", "--dry-run")

    assert result.exit_code == 2
    assert "--dry-run shows what would be submitted to Azure ML" in result.stderr
    assert factory.backend.runs == {}
