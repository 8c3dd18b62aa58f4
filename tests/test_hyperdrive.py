"""HyperDrive, locally: the API's validation, the samplers, the policies, and sweeps end to end."""

import datetime
import json
import math
import subprocess
import statistics

import pytest

from amlocal.backends.local.compute import ComputeTargets, TargetSpec
from amlocal.core import Experiment, ScriptRunConfig, Workspace
from amlocal.core.runconfig import DockerConfiguration
from amlocal.train.hyperdrive import (BanditPolicy, BayesianParameterSampling, GridParameterSampling,
                                      HyperDriveConfig, HyperDriveConfigException,
                                      MedianStoppingPolicy, NoTerminationPolicy, PrimaryMetricGoal,
                                      RandomParameterSampling, TruncationSelectionPolicy, choice,
                                      lognormal, loguniform, normal, qlognormal, qloguniform, qnormal,
                                      quniform, randint, uniform)
from amlocal.train.hyperdrive.policy import decide
from amlocal.train.hyperdrive.sampling import Sampler
from conftest import MNIST_DIR, TRAINER_DIR, write_script
from test_cli import AMLOCAL, DATA_ARGS, invoke, last_json, wait_for
from test_scheduling import max_overlap

# A cheap stand-in for training: Accuracy rises each epoch, best near lr=0.3 and depth=1.
TOY = """
import argparse, time
from azureml.core.run import Run
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--depth", type=int, default=1)
parser.add_argument("--epochs", type=int, default=4)
args = parser.parse_args()
run = Run.get_context()
for epoch in range(args.epochs):
    run.log("Accuracy", 1 - abs(args.lr - 0.3) - 0.05 * args.depth + 0.02 * epoch)
    time.sleep(0.25)
"""


def script_config(source):
    return ScriptRunConfig(source_directory=str(source), script="train.py",
                           docker_runtime_config=DockerConfiguration(use_docker=False))


def sweep_config(source, sampling, policy=None, total=6, concurrent=2):
    return HyperDriveConfig(run_config=script_config(source), hyperparameter_sampling=sampling,
                            policy=policy, primary_metric_name="Accuracy",
                            primary_metric_goal=PrimaryMetricGoal.MAXIMIZE, max_total_runs=total,
                            max_concurrent_runs=concurrent)


# -- the API: what azureml-train-core (and the service) accept and reject ------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: choice(), "Please specify an input for choice."),
    (lambda: choice([1], [2]), "choice expects non-empty single list"),
    (lambda: randint(0), "randint expects a positive number as input"),
    (lambda: uniform(2, 1), "uniform expects min_value < max_value"),
    (lambda: uniform("a", 1), "uniform expects min_value to be a float"),
    (lambda: quniform(0, 10, 0.5), "quniform expects q to be an int"),
    (lambda: GridParameterSampling({"lr": uniform(0, 1)}),
     "This sampling method expects only the following distributions: [choice]"),
    (lambda: BayesianParameterSampling({"lr": loguniform(-3, 0)}),
     "This sampling method expects only the following distributions: [choice, quniform, uniform]"),
    (lambda: BayesianParameterSampling({}), "BayesianParameterSampling expects parameter_space to "
                                            "not be None or empty."),
    (lambda: BayesianParameterSampling({"n": quniform(0, 10, 1.0)}),
     "Failed to validate a parameter distribution due to Expected quniform arguments to be int."),
    (lambda: GridParameterSampling({"opt": choice("adam", 1)}),
     "Either all or none of the 'choice' values should be 'str' type."),
    (lambda: BanditPolicy(slack_factor=0.1, slack_amount=0.2),
     "Bandit termination policy expects exactly one of slack factor or slack amount to be set."),
    (lambda: BanditPolicy(slack_factor=0.1, evaluation_interval=1.5),
     "Expected type int for evaluation_interval but got float"),
    (lambda: TruncationSelectionPolicy(truncation_percentage=100),
     "truncation_percentage expects value to be between 1 and 99."),
])
def test_invalid_search_spaces_and_policies_get_azures_errors(make, message):
    with pytest.raises(HyperDriveConfigException) as raised:
        make()
    assert message in str(raised.value)


@pytest.mark.parametrize("changes, message", [
    ({"max_total_runs": 0}, "max_total_runs expects a value between 1 and 1000"),
    ({"max_total_runs": 1001}, "max_total_runs expects a value between 1 and 1000"),
    ({"max_concurrent_runs": 101}, "max_concurrent_runs expects a value between 1 and 100"),
    ({"run_config": None}, "HyperDriveConfig expects at least one of ['estimator', 'run_config', "
                           "'pipeline'] to be set"),
    ({"run_config": "train.py"}, "Expected type ScriptRunConfig for run_config but got str"),
    ({"primary_metric_goal": "maximize"}, "Expected type PrimaryMetricGoal for primary_metric_goal"),
    ({"hyperparameter_sampling": BayesianParameterSampling({"lr": uniform(0, 1)}),
      "policy": BanditPolicy(slack_factor=0.1)}, "Bayesian sampling does not support early termination"),
])
def test_invalid_hyperdrive_configs_are_refused(tmp_path, changes, message):
    arguments = dict(run_config=script_config(tmp_path),
                     hyperparameter_sampling=RandomParameterSampling({"lr": uniform(0, 1)}),
                     primary_metric_name="Accuracy", primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                     max_total_runs=4, max_concurrent_runs=2)
    arguments.update(changes)

    with pytest.raises(HyperDriveConfigException) as raised:
        HyperDriveConfig(**arguments)

    assert message in str(raised.value)


def test_expressions_are_azureml_train_cores_json():
    assert choice(1, 2) == ["choice", [[1, 2]]] == choice([1, 2]) == choice(range(1, 3))
    assert loguniform(-6, -1) == ["loguniform", [-6, -1]]
    assert qnormal(0, 1, 2) == ["qnormal", [0, 1, 2]]
    assert BanditPolicy(slack_factor=0.1, evaluation_interval=2).to_json() == {
        "name": "Bandit", "properties": {"evaluation_interval": 2, "delay_evaluation": 0,
                                         "slack_factor": 0.1}}
    assert RandomParameterSampling({"lr": uniform(0, 1)}).to_json() == {
        "name": "RANDOM", "parameter_space": {"lr": ["uniform", [0, 1]]}}


# -- samplers ------------------------------------------------------------------------------------

def test_grid_proposes_every_combination_once_then_stops():
    space = {"batchsize": choice(64, 128), "opt": choice("adam", "sgd", "rms")}
    sampler = Sampler.for_config(GridParameterSampling(space).to_json(), "maximize")

    proposed = list(iter(sampler.propose, None))

    assert len(proposed) == 6
    assert {(p["batchsize"], p["opt"]) for p in proposed} == {
        (b, o) for b in (64, 128) for o in ("adam", "sgd", "rms")}


def test_random_draws_are_seeded_and_within_each_distribution():
    space = {"c": choice(1, 2), "r": randint(5), "u": uniform(1, 2), "qu": quniform(0, 100, 10),
             "lu": loguniform(-2, 0), "qlu": qloguniform(0, 3, 2), "n": normal(0, 1),
             "qn": qnormal(10, 3, 5), "ln": lognormal(0, 0.5), "qln": qlognormal(1, 0.5, 1)}
    definition = RandomParameterSampling(space, properties={"seed": 7}).to_json()

    first = [Sampler.for_config(definition, "maximize").propose() for _ in range(1)]
    draws = [sampler.propose() for sampler in [Sampler.for_config(definition, "maximize")]
             for _ in range(200)]

    assert first[0] == draws[0]  # the same seed gives the same configurations
    assert all(d["c"] in (1, 2) and 0 <= d["r"] < 5 and 1 <= d["u"] <= 2 for d in draws)
    assert all(d["qu"] % 10 == 0 and 0 <= d["qu"] <= 100 for d in draws)
    assert all(math.exp(-2) <= d["lu"] <= 1 and d["qlu"] % 2 == 0 and d["qn"] % 5 == 0 for d in draws)
    assert all(d["ln"] > 0 and d["qln"] >= 0 for d in draws)
    assert abs(statistics.fmean(d["n"] for d in draws)) < 0.3


def objective(configuration):
    """A cheap synthetic objective with its best at x=0.3, y=0.7 (maximum 0)."""
    return -((configuration["x"] - 0.3) ** 2) - (configuration["y"] - 0.7) ** 2


def best_found(definition, trials):
    sampler = Sampler.for_config(definition, "maximize")
    best = -math.inf
    for _ in range(trials):
        configuration = sampler.propose()
        value = objective(configuration)
        sampler.tell(configuration, value)
        best = max(best, value)
    return best


def test_bayesian_sampling_beats_random_sampling_on_a_synthetic_objective():
    space = {"x": uniform(0, 1), "y": uniform(0, 1)}
    bayesian = [best_found(BayesianParameterSampling(space, properties={"seed": seed}).to_json(), 30)
                for seed in range(5)]
    rand = [best_found(RandomParameterSampling(space, properties={"seed": seed}).to_json(), 30)
            for seed in range(5)]

    assert statistics.median(bayesian) > statistics.median(rand)
    assert sum(b > r for b, r in zip(bayesian, rand)) >= 4


# -- policies ----------------------------------------------------------------------------------

BANDIT = BanditPolicy(slack_factor=0.1, evaluation_interval=2, delay_evaluation=2).to_json()


@pytest.mark.parametrize("values, goal, terminated", [
    ({"a": [0.5, 0.9], "b": [0.4, 0.83]}, "maximize", False),  # 0.83 * 1.1 >= 0.9
    ({"a": [0.5, 0.9], "b": [0.4, 0.7]}, "maximize", True),    # 0.7 * 1.1 < 0.9
    ({"a": [0.5, 0.9], "b": [0.4]}, "maximize", False),        # interval 1: not evaluated
    ({"a": [2.0, 1.0], "b": [2.0, 1.2]}, "minimize", True),    # 1.2 / 1.1 > 1.0
    ({"a": [2.0, 1.0], "b": [2.0, 1.05]}, "minimize", False),
])
def test_bandit_policy(values, goal, terminated):
    assert bool(decide(BANDIT, goal, "b", values)) is terminated


def test_bandit_slack_amount_and_no_termination():
    amount = BanditPolicy(slack_amount=0.05).to_json()
    assert decide(amount, "maximize", "b", {"a": [0.9], "b": [0.84]})
    assert not decide(amount, "maximize", "b", {"a": [0.9], "b": [0.86]})
    assert not decide(NoTerminationPolicy().to_json(), "maximize", "b", {"a": [0.9], "b": [0.1]})


def test_median_stopping_and_truncation_selection():
    median = MedianStoppingPolicy().to_json()
    values = {"a": [0.8, 0.9], "b": [0.7, 0.8], "c": [0.1, 0.2]}
    assert decide(median, "maximize", "c", values) and not decide(median, "maximize", "a", values)
    truncation = TruncationSelectionPolicy(truncation_percentage=40).to_json()
    five = {name: [value] for name, value in zip("abcde", (0.9, 0.8, 0.7, 0.6, 0.5))}
    assert [name for name in five if decide(truncation, "maximize", name, five)] == ["d", "e"]


# -- sweeps, end to end (process executor: fast, no image) -------------------------------------

@pytest.fixture
def workspace(amlocal_home):
    return Workspace.from_config(path=str(amlocal_home))


def running_spans(run):
    spans = []
    for child in run.get_children():
        stage = next(s for s in child._handle.get_details()["stages"] if s["name"] == "Running")
        if stage["started_at"]:
            spans.append((datetime.datetime.fromisoformat(stage["started_at"]).timestamp(),
                          datetime.datetime.fromisoformat(stage["ended_at"]).timestamp()))
    return spans


def test_random_sweep_with_bandit_on_two_nodes(workspace, tmp_path):
    ComputeTargets(workspace._backend().store).create(TargetSpec("two", "STANDARD_D1_V2", max_nodes=2))
    source = write_script(tmp_path / "src", "train.py", TOY)
    config = sweep_config(source, RandomParameterSampling(
        {"lr": uniform(0, 1), "depth": choice(1, 2, 3)}, properties={"seed": 1}),
        BanditPolicy(slack_factor=0.05, evaluation_interval=1), total=6, concurrent=2)
    config.run_config.run_config.target = "two"

    run = Experiment(workspace, "sweep").submit(config)
    run.wait_for_completion()
    children = run.get_children_sorted_by_primary_metric()

    assert run.type == "hyperdrive" and run.get_status() == "Completed"
    assert len(children) == 6
    assert all(child["status"] in ("Completed", "Canceled") for child in children)
    canceled = [c for c in run.get_children() if c.get_status() == "Canceled"]
    assert all("early termination policy: BanditPolicy" in c.get_details()["error"]["error"]["message"]
               for c in canceled)
    assert max_overlap(running_spans(run)) <= 2
    best = run.get_best_run_by_primary_metric()
    best_values = {c["run_id"]: c["best_primary_metric"] for c in children}
    assert best.id == max(best_values, key=best_values.get)
    hyperparameters = run.get_hyperparameters()
    assert set(hyperparameters) == set(best_values)
    assert json.loads(hyperparameters[best.id]) == json.loads(best.get_tags()["hyperparameters"])
    assert run.get_metrics()["best_child_by_primary_metric"]["run_id"][-1] == best.id


def test_grid_sweep_runs_exactly_the_grid(workspace, tmp_path):
    source = write_script(tmp_path / "src", "train.py", TOY.replace("time.sleep(0.25)", "pass"))
    config = sweep_config(source, GridParameterSampling(
        {"lr": choice(0.1, 0.3), "depth": choice(1, 2)}), total=10, concurrent=2)

    run = Experiment(workspace, "grid").submit(config)
    run.wait_for_completion()

    grid = sorted(tuple(sorted(json.loads(value).items()))
                  for value in run.get_hyperparameters().values())
    assert grid == sorted(tuple(sorted({"lr": lr, "depth": depth}.items()))
                          for lr in (0.1, 0.3) for depth in (1, 2))
    assert all(child.get_status() == "Completed" for child in run.get_children())


def test_canceling_the_sweep_cancels_its_children_and_it_outlives_the_submitter(amlocal_home,
                                                                                 tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          TOY.replace("time.sleep(0.25)", "time.sleep(30)"))
    submitted = subprocess.run(
        [*AMLOCAL, "sweep", str(source), "--script", "train.py", "--executor", "process",
         "--param", "lr=uniform(0,1)", "--metric", "Accuracy", "--goal", "maximize",
         "--max-total-runs", "3", "--detach", "--json"], capture_output=True, text=True, check=True)
    sweep_id = json.loads(submitted.stdout.strip().splitlines()[-1])["id"]
    wait_for(lambda: any(run.get("parent_id") == sweep_id and run["status"] == "Running"
                         for run in last_json(invoke("runs", "list", "--json"))), timeout=60)

    canceled = invoke("runs", "cancel", sweep_id, "--json")

    assert last_json(canceled)["status"] == "Canceled"
    children = [run for run in last_json(invoke("runs", "list", "--json"))
                if run.get("parent_id") == sweep_id]
    assert children and all(child["status"] == "Canceled" for child in children)
    shown = invoke("runs", "show", sweep_id)
    assert "CHILD RUN" in shown.stdout and sweep_id + "_0" in shown.stdout


def test_sweep_cli_and_report_show_the_children(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", TOY)

    result = invoke("sweep", source, "--script", "train.py", "--executor", "process",
                    "--param", "lr=choice(0.1,0.3,0.9)", "--sampling", "grid",
                    "--policy", "bandit(slack_factor=0.05,evaluation_interval=1)",
                    "--metric", "Accuracy", "--goal", "maximize", "--max-total-runs", "3",
                    "--json", "--", "--epochs", "3")

    assert result.exit_code == 0, result.output
    record = last_json(result)
    assert len(record["children"]) == 3
    best = max(record["children"], key=lambda child: child["best_primary_metric"] or -1)
    assert best["hyperparameters"] == {"lr": 0.3}
    report = invoke("runs", "report", record["id"], "-o", tmp_path / "report")
    html = (tmp_path / "report" / "index.html").read_text()
    assert report.exit_code == 0 and "Accuracy against lr" in html and "Accuracy of each child run" in html


@pytest.mark.parametrize("args, message", [
    (["--param", "lr"], "--param expects NAME=DISTRIBUTION(...)"),
    (["--param", "lr=gaussian(0,1)"], "unknown distribution 'gaussian'"),
    (["--param", "lr=uniform(__import__('os'),1)"], "cannot read distribution"),
    (["--param", "lr=uniform(0,1)", "--policy", "bandit(slack_factor=0.1,slack_amount=0.2)"],
     "exactly one of slack factor or slack amount"),
    (["--param", "lr=uniform(0,1)", "--sampling", "grid"], "only the following distributions: [choice]"),
])
def test_bad_sweep_requests_are_one_line_errors(amlocal_home, tmp_path, args, message):
    source = write_script(tmp_path / "src", "train.py", TOY)

    result = invoke("sweep", source, "--script", "train.py", *args, "--metric", "Accuracy",
                    "--goal", "maximize", "--max-total-runs", "2")

    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert last_json(invoke("runs", "list", "--json")) == []


def test_azure_dry_run_shows_azureml_train_cores_hyperdrive_config(amlocal_home, tmp_path, capsys):
    pytest.importorskip("azureml.train.hyperdrive", reason="the azure extra (CI installs it)")
    source = write_script(tmp_path / "src", "train.py", TOY)
    config = sweep_config(source, RandomParameterSampling(
        {"batchsize": choice(64, 128, 256), "lr": loguniform(-6, -1)}),
        BanditPolicy(slack_factor=0.1, evaluation_interval=2), total=8, concurrent=2)
    config.run_config.run_config.target = "gpu-cluster"

    document = Experiment(Workspace.from_config(path=str(amlocal_home)), "sweep").submit(
        config, dry_run=True)
    printed = capsys.readouterr().out

    assert document["hyperdrive"]["generator_config"] == {
        "name": "RANDOM", "parameter_space": {"batchsize": ["choice", [[64, 128, 256]]],
                                              "lr": ["loguniform", [-6, -1]]}}
    assert document["hyperdrive"]["policy_config"]["name"] == "Bandit"
    assert document["hyperdrive"]["max_total_runs"] == 8
    assert document["hyperdrive"]["max_concurrent_runs"] == 2
    assert document["run_configuration"]["script"] == "train.py"
    assert document["run_configuration"]["target"] == "gpu-cluster"
    assert "HyperDrive configuration" in printed
    assert last_json(invoke("runs", "list", "--json")) == []  # nothing was submitted or recorded


# -- the sweep: the chainer_mnist trainer, in Docker, on a 2-node target ---------------

@pytest.mark.docker
def test_random_sweep_of_chainer_mnist_in_docker_on_a_two_node_target(amlocal_home, docker_client):
    assert invoke("compute", "create", "cpu2", "--vm-size", "STANDARD_D1_V2",
                  "--max-nodes", "2").exit_code == 0

    result = invoke("sweep", TRAINER_DIR, "--script", "chainer_mnist.py", "--compute", "cpu2",
                    "--executor", "docker", "--param", "batchsize=choice(64,128,256)",
                    "--param", "lr=loguniform(-6,-1)", "--seed", "5",
                    "--policy", "bandit(slack_factor=0.1,evaluation_interval=1)",
                    "--metric", "Accuracy", "--goal", "maximize", "--max-total-runs", "8",
                    "--max-concurrent-runs", "2", "--input", f"mnist={MNIST_DIR}", "--json",
                    "--", "--epochs", "3", *DATA_ARGS)

    assert result.exit_code == 0, result.output
    sweep = last_json(result)
    assert sweep["status"] == "Completed" and len(sweep["children"]) == 8
    records = [last_json(invoke("runs", "show", child["run_id"], "--json"))
               for child in sweep["children"]]
    for record in records:
        assert record["status"] == "Completed" or (
            record["status"] == "Canceled"
            and "early termination policy: BanditPolicy" in record["error"]), record
        assert record["executor"] == "docker" and record["compute"] == "cpu2"
    spans = [(datetime.datetime.fromisoformat(running["started_at"]).timestamp(),
              datetime.datetime.fromisoformat(running["ended_at"]).timestamp())
             for running in (next(s for s in record["stages"] if s["name"] == "Running")
                             for record in records) if running["started_at"]]
    assert len(spans) == 8 and max_overlap(spans) <= 2
    # Each child trained: its hyperparameters reached the trainer, and it logged Accuracy per epoch.
    for child in sweep["children"]:
        assert set(child["hyperparameters"]) == {"batchsize", "lr"}
        assert 1 <= child["intervals"] <= 3
    # Azure ranks children by the best value each logged (azureml-train-core's
    # get_children_sorted_by_primary_metric takes max/min over the list), as amlocal does; a user
    # reads "best" as the best final Accuracy. With this seed (every child trains all 3 epochs, the
    # winner leads by 0.015) both readings name the same child, and the test holds us to both.
    best = Workspace.from_config(path=str(amlocal_home)).get_run(
        sweep["id"]).get_best_run_by_primary_metric()
    best_last = max(sweep["children"], key=lambda child: child["last_primary_metric"])
    best_max = max(sweep["children"], key=lambda child: child["best_primary_metric"])
    assert best.id == best_last["run_id"] == best_max["run_id"], json.dumps(sweep["children"])
    assert best.get_metrics()["Accuracy"][-1] == best_last["last_primary_metric"]
