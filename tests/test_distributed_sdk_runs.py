"""Issue 14's end-to-end checks through the SDK shapes, on real Docker: a 2-node ChainerMN run
(the distributed trainer, `naive` communicator, CPU) submitted in the estimator form
(Chainer(node_count=2, distributed_training=Mpi())), and a 2-node run submitted as
ScriptRunConfig + MpiConfiguration (a probe reducing with mpi4py and with ChainerMN's `naive`
communicator, in an environment whose pip requirements ask for Chainer, so on the chainer recipe). Both ranks run in different containers, agree on what they
reduced, and rank 0's metrics, outputs and both ranks' logs are the run's."""

import re
import shutil

import pytest

from amlocal.core import Environment, Experiment, ScriptRunConfig, Workspace
from amlocal.core.compute import AmlCompute, ComputeTarget
from amlocal.core.runconfig import MpiConfiguration
from amlocal.train.dnn import Chainer, Mpi
from conftest import MNIST_DIR, REPO, write_script
from test_distributed_runs import MPI_PROBE, leftovers

pytestmark = pytest.mark.docker

RANK_LINE = re.compile(r"^rank (\d)/2 on (\S+): .*communicator naive", re.M)
WEIGHTS_LINE = re.compile(r"^rank (\d) weights sha256 ([0-9a-f]{64})$", re.M)


def two_node_workspace(home):
    workspace = Workspace.from_config(path=str(home))
    ComputeTarget.create(workspace, "cpu2", AmlCompute.provisioning_configuration(
        vm_size="STANDARD_D1_V2", max_nodes=2))
    return workspace


def rank_logs(run, folder):
    """Both ranks' driver logs, downloaded as run files."""
    logs = []
    for rank, name in enumerate(("azureml-logs/70_driver_log.txt",
                                 "azureml-logs/70_driver_log_1.txt")):
        assert name in run.get_file_names()
        target = folder / f"rank{rank}.txt"
        run.download_file(name, output_file_path=str(target))
        logs.append(target.read_text())
    return logs


def test_a_chainermn_run_in_the_estimator_form_trains_on_two_node_containers(
        amlocal_home, docker_client, tmp_path):
    source = tmp_path / "trainer"
    shutil.copytree(REPO / "trainer", source)
    shutil.copytree(MNIST_DIR, source / "mnist")
    estimator = Chainer(str(source), entry_script="chainer_mnist_distributed.py",
                        compute_target="cpu2", node_count=2, process_count_per_node=1,
                        distributed_training=Mpi(),
                        script_params={"--epochs": 2, "--data-dir": "mnist",
                                       "--communicator": "naive"})

    run = Experiment(two_node_workspace(amlocal_home), "chainermn").submit(estimator)
    run.wait_for_completion()

    assert run.get_status() == "Completed", run.get_details().get("error")
    first, second = rank_logs(run, tmp_path)
    hosts = dict(RANK_LINE.findall(first) + RANK_LINE.findall(second))
    assert set(hosts) == {"0", "1"} and hosts["0"] != hosts["1"]
    weights = dict(WEIGHTS_LINE.findall(first) + WEIGHTS_LINE.findall(second))
    assert set(weights) == {"0", "1"} and weights["0"] == weights["1"]  # the allreduce held
    metrics = run.get_metrics()
    assert len(metrics["Accuracy"]) == 2 and metrics["Accuracy"][-1] > 0.8
    assert "outputs/model.npz" in run.get_file_names()
    assert leftovers(docker_client, run.id) == ([], [])


def test_a_chainermn_run_from_script_run_config_runs_a_rank_in_each_node_container(
        amlocal_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "probe.py", MPI_PROBE)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("chainer==7.8.1\n")
    environment = Environment.from_pip_requirements("chainermn", str(requirements))
    environment.environment_variables = {"PROBE_CHAINERMN": "1"}
    config = ScriptRunConfig(str(source), "probe.py", compute_target="cpu2",
                             environment=environment,
                             distributed_job_config=MpiConfiguration(process_count_per_node=1,
                                                                     node_count=2))

    run = Experiment(two_node_workspace(amlocal_home), "mpi-probe").submit(config)
    run.wait_for_completion()

    assert run.get_status() == "Completed", run.get_details().get("error")
    fields = [dict(part.split("=", 1) for part in line.split())
              for log in rank_logs(run, tmp_path) for line in log.splitlines() if line.startswith("rank=")]
    by_rank = {int(seen["rank"]): seen for seen in fields}
    assert set(by_rank) == {0, 1} and by_rank[0]["host"] != by_rank[1]["host"]
    assert by_rank[0]["allreduce"] == by_rank[1]["allreduce"] == "3"
    assert by_rank[0]["chainermn"] == by_rank[1]["chainermn"] == "30"
    assert run.get_metrics()["allreduce"] == 3
    assert "outputs/rank0.txt" in run.get_file_names()
    assert leftovers(docker_client, run.id) == ([], [])
