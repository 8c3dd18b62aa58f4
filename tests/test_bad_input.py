"""Requests at the edges of what Azure ML accepts, and damaged histories: each gets what a user
expects (it works, or one line saying why not), never a traceback.

Real parts throughout: the CLI through CliRunner, a real run history, real runs (the process
executor, and Docker where marked).
"""

import json
import shutil
from pathlib import Path

import pytest

from amlocal.backends.history.store import RunStore
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
    from amlocal.backends.history.store import run_folder_name

    long_a, long_b = "x" * 300 + "_a", "x" * 300 + "_b"

    assert run_folder_name("exp_1796111793_5cd5eaab") == "exp_1796111793_5cd5eaab"
    assert run_folder_name(long_a) == run_folder_name(long_a)
    assert run_folder_name(long_a) != run_folder_name(long_b)
    assert all(len(run_folder_name(name)) <= 200 for name in (long_a, long_b))
    # A plain id that looks like a digested one keeps its own folder.
    assert run_folder_name(run_folder_name(long_a).replace("+", "-")) != run_folder_name(long_a)
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


# -- 8: sweep expressions are validated at submission --------------------------------------------

BAD_EXPRESSIONS = {
    "lr=quniform(0,1,0)": "quniform expects q to be a positive int",
    "lr=quniform(0,10,-2)": "quniform expects q to be a positive int",
    "lr=uniform(1,1e999)": "uniform expects max_value to be a finite number",
    "lr=uniform(-1e308,1e308)": "uniform expects max_value - min_value to be a finite number",
    "lr=loguniform(-1,800)": "loguniform expects max_value of at most 709.78",
    "lr=qloguniform(0,1,0)": "qloguniform expects q to be a positive int",
    "lr=normal(0,0)": "normal expects sigma to be positive",
    "lr=normal(0,1e308)": "normal expects mu + 10 sigma to be a finite number",
    "lr=lognormal(700,1)": "lognormal expects mu + 10 sigma to be at most 709.78",
    "lr=choice(1,1e999)": "choice expects finite numbers",
    "lr=choice()": "Please specify an input for choice.",
    "lr=choice([])": "choice expects non-empty single list",
    "lr=randint(0)": "randint expects a positive number as input",
    "lr=uniform(1)": "--param 'lr=uniform(1)'",
    "lr=choice({[1]: 2})": "cannot read distribution",
    "a b=choice(1)": "the parameter name 'a b'",
}


@pytest.mark.parametrize("expression", sorted(BAD_EXPRESSIONS))
def test_bad_sweep_expressions_are_refused_before_anything_is_created(amlocal_home, tmp_path,
                                                                     expression):
    source = write_script(tmp_path / "src", "train.py", TRAIN)

    result = invoke("sweep", source, "--script", "train.py", "--executor", "process",
                    "--param", expression, "--metric", "loss", "--goal", "minimize",
                    "--max-total-runs", "2")

    assert_one_line_error(result, 2, BAD_EXPRESSIONS[expression])
    assert last_json(invoke("runs", "list", "--json")) == []


@pytest.mark.parametrize("policy, message", [
    ("bandit(slack_factor=-0.1)", "slack_factor expects a positive, finite number"),
    ("bandit(slack_amount=1e999)", "slack_amount expects a positive, finite number"),
    ("bandit(slack_factor='x')", "Expected type float for slack_factor but got str"),
    ("bandit(slack_factor=0.1,evaluation_interval=0)", "evaluation_interval expects a value of at least 1"),
    ("median(delay_evaluation=-1)", "delay_evaluation expects a value of at least 0"),
])
def test_bad_policies_are_refused(amlocal_home, tmp_path, policy, message):
    source = write_script(tmp_path / "src", "train.py", TRAIN)

    result = invoke("sweep", source, "--script", "train.py", "--executor", "process",
                    "--param", "lr=uniform(0,1)", "--policy", policy, "--metric", "loss",
                    "--goal", "minimize", "--max-total-runs", "2")

    assert_one_line_error(result, 2, message)


def test_hand_written_search_spaces_are_validated_from_python(amlocal_home, tmp_path):
    from amlocal.train.hyperdrive import (HyperDriveConfigException, PrimaryMetricGoal,
                                          RandomParameterSampling, quniform)

    for make in (lambda: quniform(0, 1, 0),
                 lambda: RandomParameterSampling({"lr": ["uniform", [1, 1e999]]}),
                 lambda: RandomParameterSampling({"lr": ["quniform", [0, 1, 0]]}),
                 lambda: RandomParameterSampling({"lr": ["uniform", [0]]}),
                 lambda: RandomParameterSampling({"lr": ["uniform", [0, 1]]},
                                                 properties={"seed": 2**40})):
        with pytest.raises(HyperDriveConfigException):
            make()
    assert PrimaryMetricGoal.MINIMIZE  # the module imported above is the one users import


def test_a_sweep_that_fails_while_sampling_closes_its_running_stage(amlocal_home, tmp_path):
    """A sweep whose space was stored before validation (or that fails for another reason) ends
    Failed with the reason and no stage left open."""
    from amlocal.backends.base import RunSpec
    from amlocal.backends.local import LocalBackend

    source = write_script(tmp_path / "src", "train.py", TRAIN)
    backend = LocalBackend()
    sweep = {"generator_config": {"name": "RANDOM",
                                  "parameter_space": {"lr": ["quniform", [0, 1, 0]]}},
             "policy_config": {"name": "Default"},
             "primary_metric_config": {"name": "loss", "goal": "minimize"},
             "max_total_runs": 2, "max_concurrent_runs": 1, "max_duration_minutes": 10}
    template = RunSpec(source_dir=source, script="train.py", executor="process")

    with pytest.raises(ZeroDivisionError):
        backend.submit_sweep(template, sweep, detach=False)

    (record,) = backend.list_runs()
    assert record["status"] == "Failed" and "ZeroDivisionError" in record["error"]
    assert all(stage["status"] != "Running" for stage in record["stages"])


# -- 9: tags and properties are Azure ML's text; a report shows whatever a history holds ----------

BAD_TAGS = {
    "k=v\udcff": "the value of tag 'k' holds bytes that are not UTF-8",  # argv's invalid UTF-8
    "k\udcfe=v": "holds bytes that are not UTF-8",
    "k=a\x01b": "holds the control character U+0001",
    "k=line\nbreak": "holds the control character U+000A",
    "k\x1b[31m=v": "holds the control character U+001B",
    "k" * 101 + "=v": "has 101 characters; Azure ML allows at most 100",
    "k=" + "v" * 1001: "has a value of 1001 characters; Azure ML allows at most 1000",
}


@pytest.mark.parametrize("tag", sorted(BAD_TAGS), ids=range(len(BAD_TAGS)))
def test_bad_tags_are_refused_at_submission(amlocal_home, tmp_path, tag):
    source = write_script(tmp_path / "src", "train.py", TRAIN)

    result = invoke("run", source, "--script", "train.py", "--executor", "process", "--tag", tag)

    assert_one_line_error(result, 2, BAD_TAGS[tag])
    assert last_json(invoke("runs", "list", "--json")) == []


def test_more_than_50_tags_are_refused(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", TRAIN)
    tags = [option for index in range(51) for option in ("--tag", f"k{index}=v")]

    result = invoke("run", source, "--script", "train.py", "--executor", "process", *tags)

    assert_one_line_error(result, 2, "51 tag values given; Azure ML allows at most 50")


def test_bad_model_tags_and_properties_are_refused(amlocal_home, tmp_path):
    (tmp_path / "model.txt").write_text("weights")

    for option, text in (("--tag", "k=\udcff"), ("--property", "p=\x07")):
        result = invoke("models", "register", "--name", "m", "--from-path", tmp_path / "model.txt",
                        option, text)
        assert_one_line_error(result, 2, "holds")
    assert last_json(invoke("models", "list", "--json")) == []


def test_bad_tags_are_refused_from_python(amlocal_home, tmp_path):
    from amlocal.core import Experiment, ScriptRunConfig, Workspace
    from amlocal.core.runconfig import DockerConfiguration
    from amlocal.errors import UserInputError

    source = write_script(tmp_path / "src", "train.py", TRAIN)
    config = ScriptRunConfig(source_directory=str(source), script="train.py",
                             docker_runtime_config=DockerConfiguration(use_docker=False))
    experiment = Experiment(Workspace.from_config(), "tags")
    with pytest.raises(UserInputError, match="control character"):
        experiment.submit(config, tags={"k": "a\x00b"})
    run = experiment.submit(config, tags={"ok": "yes"})
    run.wait_for_completion()
    with pytest.raises(UserInputError, match="not UTF-8"):
        run.tag("k", "\udcff")
    with pytest.raises(UserInputError, match="at most 50"):
        run.set_tags({f"k{index}": "v" for index in range(50)})  # 51 with "ok"
    with pytest.raises(UserInputError, match="at most 100"):
        run.add_properties({"p" * 101: "v"})
    assert run.get_tags() == {"ok": "yes"}


def test_report_escapes_whatever_the_history_holds(amlocal_home, tmp_path):
    """A history written before tags were checked (or by a script) may hold anything."""
    source = write_script(tmp_path / "src", "train.py", TRAIN)
    run_id = last_json(invoke("run", source, "--script", "train.py", "--executor", "process",
                              "--json"))["id"]
    store = RunStore()
    store.update_tags(run_id, {"k\udcff\x01": "<b>v\udcfe</b>\x1b[31m"})

    result = invoke("runs", "report", run_id, "-o", tmp_path / "report")

    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;v\ufffd&lt;/b&gt;" in page and "<b>v" not in page


# -- 10: every number a user gives is bounded -----------------------------------------------------

HUGE = "100000000000000000000"


@pytest.mark.parametrize("arguments, message", [
    (["compute", "create", "c1", "--vm-size", "STANDARD_D1_V2", "--max-nodes", HUGE],
     "max_nodes must be at most 65000"),
    (["compute", "create", "c1", "--vm-size", "STANDARD_D1_V2", "--max-nodes", HUGE,
      "--allow-overcommit"], "max_nodes must be at most 65000"),
    (["compute", "create", "c1", "--vm-size", "STANDARD_D1_V2", "--max-nodes", "1",
      "--min-nodes", HUGE, "--allow-overcommit"], "min_nodes must be at most 65000"),
    (["compute", "create", "c1", "--vm-size", "STANDARD_D1_V2", "--max-nodes", "1",
      "--idle-seconds-before-scaledown", HUGE], "idle_seconds_before_scaledown must be at most"),
    (["compute", "create", "c1", "--vm-size", "STANDARD_D1_V2", "--max-nodes", "1.5"],
     "'1.5' is not a valid integer"),
    (["compute", "sizes", "--nodes", HUGE], "is not in the range 1<=x<=9223372036854775807"),
    (["runs", "list", "--limit", HUGE], "is not in the range 1<=x<=9223372036854775807"),
    (["runs", "wait", "x", "--timeout", "nan"], "--timeout must be a number between 0 and"),
    (["runs", "wait", "x", "--timeout", "1e999"], "--timeout must be a number between 0 and"),
    (["run", "{source}", "--script", "train.py", "--executor", "process", "--node-count", HUGE],
     "node_count must be between 1 and 9223372036854775807"),
    (["run", "{source}", "--script", "train.py", "--executor", "process", "--max-duration", HUGE],
     "max_run_duration_seconds must be between 1 and 9223372036854775807"),
    (["sweep", "{source}", "--script", "train.py", "--executor", "process", "--param",
      "lr=uniform(0,1)", "--metric", "loss", "--goal", "minimize", "--max-total-runs", HUGE],
     "max_total_runs expects a value between 1 and 1000"),
    (["sweep", "{source}", "--script", "train.py", "--executor", "process", "--param",
      "lr=uniform(0,1)", "--metric", "loss", "--goal", "minimize", "--max-total-runs", "2",
      "--max-concurrent-runs", "0"], "max_concurrent_runs expects a value between 1 and 100"),
    (["sweep", "{source}", "--script", "train.py", "--executor", "process", "--param",
      "lr=uniform(0,1)", "--metric", "loss", "--goal", "minimize", "--max-total-runs", "2",
      "--seed", HUGE], "The sampling seed expects an int between 0 and 4294967295"),
    (["sweep", "{source}", "--script", "train.py", "--executor", "process", "--param",
      "lr=uniform(0,1)", "--metric", "loss", "--goal", "minimize", "--max-total-runs", "2",
      "--max-duration-minutes", "0"], "max_duration_minutes expects a value of at least 1"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_numbers_out_of_bounds_are_one_line_errors(amlocal_home, tmp_path, arguments, message):
    source = write_script(tmp_path / "src", "train.py", TRAIN)

    result = invoke(*[str(source) if argument == "{source}" else argument for argument in arguments])

    assert_one_line_error(result, 2, message)
    assert last_json(invoke("runs", "list", "--json")) == []


def test_numbers_out_of_bounds_are_refused_by_the_sdk_classes(amlocal_home, tmp_path):
    from amlocal import AmlCompute, ComputeTargetException
    from amlocal.core import Experiment, ScriptRunConfig, Workspace
    from amlocal.core.runconfig import DockerConfiguration
    from amlocal.errors import UserInputError

    for settings in ({"max_nodes": 10**20}, {"max_nodes": "4"},
                     {"max_nodes": 2, "idle_seconds_before_scaledown": 10**30}):
        with pytest.raises(ComputeTargetException, match="max_nodes|idle_seconds"):
            AmlCompute.provisioning_configuration(vm_size="STANDARD_D1_V2", **settings)
    source = write_script(tmp_path / "src", "train.py", TRAIN)
    for duration in (10**20, 0, 1.5):
        config = ScriptRunConfig(source_directory=str(source), script="train.py",
                                 max_run_duration_seconds=duration,
                                 docker_runtime_config=DockerConfiguration(use_docker=False))
        with pytest.raises(UserInputError, match="max_run_duration_seconds"):
            Experiment(Workspace.from_config(), "numbers").submit(config)
    assert last_json(invoke("runs", "list", "--json")) == []


def test_nul_in_arguments_or_environment_is_refused_from_python(amlocal_home, tmp_path):
    from amlocal.backends.base import RunSpec
    from amlocal.backends.local import LocalBackend
    from amlocal.errors import UserInputError

    source = write_script(tmp_path / "src", "train.py", TRAIN)
    for spec in (RunSpec(source_dir=source, script="train.py", executor="process",
                         arguments=("--x", "a\x00b")),
                 RunSpec(source_dir=source, script="train.py", executor="process",
                         environment_variables={"NAME": "a\x00b"}),
                 RunSpec(source_dir=source, script="tr\x00ain.py", executor="process"),
                 RunSpec(source_dir=source, script="train.py", executor="process",
                         inputs={"data": str(tmp_path / ("n" * 300))})):
        with pytest.raises(UserInputError, match="NUL|too long"):
            LocalBackend().submit(spec)
    assert LocalBackend().list_runs() == []


# -- amlocal's own settings in the environment ------------------------------------------------

@pytest.mark.parametrize("name, value", [("AMLOCAL_STOP_GRACE_S", "ten"),
                                         ("AMLOCAL_STOP_GRACE_S", "-1"),
                                         ("AMLOCAL_MAX_PREEMPTIONS", "1e999"),
                                         ("AMLOCAL_MAX_PREEMPTIONS", "2.5")])
def test_a_bad_setting_is_one_line_at_submission_and_other_commands_still_work(
        amlocal_home, tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    source = write_script(tmp_path / "src", "train.py", TRAIN)

    result = invoke("run", source, "--script", "train.py", "--executor", "process")

    assert_one_line_error(result, containing=name)
    listed = invoke("runs", "list", "--json")
    assert listed.exit_code == 0 and last_json(listed) == []  # nothing was created


def test_child_runs_of_a_run_with_the_longest_experiment_name_keep_what_they_log(amlocal_home,
                                                                                 tmp_path):
    # azureml-core's own run: the child's upload goes through the run's https route.
    source = write_script(tmp_path / "src", "train.py", """
from azureml.core.run import Run
run = Run.get_context()
child = run.child_run(name="fold-1")
child.log("loss", 0.25)
child.upload_file("charts/fold.txt", __file__)
child.complete()
""")
    result = invoke("run", source, "--script", "train.py", "--executor", "process",
                    "--experiment", LONGEST_EXPERIMENT, "--json")

    assert result.exit_code == 0, result.output
    store = RunStore()
    [child] = store.children_of(last_json(result)["id"])
    assert store.get_metrics(child) == {"loss": [0.25]}
    assert "charts/fold.txt" in store.file_names(child)
    assert store.get_status(child) == "Completed"


def test_a_child_run_id_that_could_name_another_folder_is_refused_in_the_script(amlocal_home,
                                                                               tmp_path,
                                                                               monkeypatch):
    # The stand-in's own refusal (AMLOCAL_IN_RUN_SDK=0); azureml-core's child_run asks the
    # emulator, which refuses the id with a 400 (wire.py's run id check).
    monkeypatch.setenv("AMLOCAL_IN_RUN_SDK", "0")
    source = write_script(tmp_path / "src", "train.py", """
from azureml.core.run import Run
from azureml.exceptions import UserErrorException
try:
    Run.get_context().child_run(run_id="../../elsewhere")
except UserErrorException as error:
    print("refused:", error)
""")
    result = invoke("run", source, "--script", "train.py", "--executor", "process", "--json")

    assert result.exit_code == 0, result.output
    assert "invalid run id '../../elsewhere'" in result.output
    assert RunStore().children_of(last_json(result)["id"]) == []
