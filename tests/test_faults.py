"""Faults a run must survive with the right status and reason and nothing lost, each injected for
real: a killed supervisor, a timeout, an out-of-memory script, a Docker engine restart, a full
disk, a preempted low-priority node, damaged run records."""

import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from amlocal.backends.base import LogLine, RunSpec
from amlocal.backends.local import LocalBackend
from amlocal.backends.local.compute import ComputeTargets, TargetSpec
from amlocal.backends.local.processes import process_alive
from amlocal.backends.history.store import RunStore
from conftest import write_script
from test_cli import invoke, last_json, wait_for

# Writes outputs/progress.txt, prints 'started', then sleeps: for faults injected mid-run.
PROGRESS_THEN_SLEEP = """
import os, sys, time
os.makedirs("outputs", exist_ok=True)
open("outputs/progress.txt", "w").write("epoch 1 done")
print("started", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 300)
"""


def docker_spec(source, *args, **options):
    return RunSpec(source_dir=source, script="train.py", arguments=tuple(args), executor="docker",
                   **options)


def started(lines):
    return lambda event: isinstance(event, LogLine) and lines.append(event.line)


def containers_of(docker_client, run_id):
    return docker_client.containers.list(all=True, filters={"label": f"amlocal.run_id={run_id}"})


@pytest.fixture
def backend(amlocal_home):
    return LocalBackend()


@pytest.mark.docker
def test_timeout_cancels_the_run_with_the_reason_and_keeps_outputs(backend, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", PROGRESS_THEN_SLEEP)

    details = backend.submit(docker_spec(source, max_run_duration_seconds=2)).wait(timeout=120)

    assert details["status"] == "Canceled"
    assert details["error"] == "Run exceeded max_run_duration_seconds (2 s) and was canceled"
    assert "outputs/progress.txt" in backend.get_run(details["id"]).get_file_names()


@pytest.mark.docker
def test_killed_supervisor_is_adopted_and_the_run_ends_completed_with_its_outputs(
        amlocal_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", PROGRESS_THEN_SLEEP)
    run_id = last_json(invoke("run", source, "--script", "train.py", "--executor", "docker",
                              "--detach", "--json", "--", "3"))["id"]
    store = RunStore()
    wait_for(lambda: "started" in invoke("runs", "logs", run_id).stdout, timeout=120)
    supervisor = store.get_run(run_id)["driver_pid"]

    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not process_alive(supervisor), timeout=10)
    shown = last_json(invoke("runs", "show", run_id, "--json"))
    waited = last_json(invoke("runs", "wait", run_id, "--json"))

    assert shown["status"] == "Running"
    assert waited["status"] == "Completed" and waited["exit_code"] == 0
    assert store.get_run(run_id)["driver_pid"] != supervisor
    assert not containers_of(docker_client, run_id)
    assert "outputs/progress.txt" in last_json(invoke("runs", "files", run_id, "--json"))


@pytest.mark.docker
def test_script_out_of_its_nodes_memory_fails_with_out_of_memory(backend, docker_client, tmp_path):
    ComputeTargets(backend.store).create(TargetSpec("small", "STANDARD_D1_V2", max_nodes=1))
    source = write_script(tmp_path / "src", "train.py", """
import os
os.makedirs("outputs", exist_ok=True)
open("outputs/before.txt", "w").write("kept")
hog = []
while True:
    hog.append(bytearray(256 << 20))  # a 3.5 GiB node is full after 14 of these
""")

    details = backend.submit(docker_spec(source, compute="small")).wait(timeout=180)

    assert details["status"] == "Failed"
    assert details["error"].startswith("out of memory: the script exceeded its node's memory of 3.5 GiB")
    assert "outputs/before.txt" in backend.get_run(details["id"]).get_file_names()


@pytest.mark.docker
def test_preempted_low_priority_run_restarts_and_resumes_from_its_checkpoint(backend, docker_client,
                                                                            tmp_path):
    targets = ComputeTargets(backend.store)
    targets.create(TargetSpec("spot", "STANDARD_D1_V2", max_nodes=1, vm_priority="lowpriority"))
    source = write_script(tmp_path / "src", "train.py", """
import os, time
os.makedirs("outputs", exist_ok=True)
checkpoint = "outputs/checkpoint.txt"
step = int(open(checkpoint).read()) if os.path.exists(checkpoint) else 0
print(f"resuming at step {step}", flush=True)
first_attempt = step == 0
while step < 8:
    step += 1
    open(checkpoint, "w").write(str(step))
    print(f"step {step}", flush=True)
    time.sleep(0.25)
    if first_attempt and step == 3:
        time.sleep(120)  # the first attempt waits here to be preempted
        raise SystemExit("never preempted")
""")
    lines = []
    handle = backend.submit(docker_spec(source, compute="spot"), on_event=started(lines))
    # The first attempt holds at step 3 until it is preempted: on a loaded machine its output
    # can reach `lines` late, and a script that had run to its end would have no node to lose.
    wait_for(lambda: "step 3" in lines, timeout=120)

    assert targets.preempt("spot") == [handle.id]
    details = handle.wait(timeout=120)

    assert details["status"] == "Completed" and details["preemptions"] == 1
    assert lines[0] == "resuming at step 0"
    resumed = [line for line in lines if line.startswith("resuming at step")][1]
    assert int(resumed.split()[-1]) == 3
    history = [status for status, _at in backend.store.status_history(handle.id)]
    assert history[history.index("Running"):][:3] == ["Running", "Queued", "Running"]
    assert targets.status("spot")["nodeStateCounts"]["preemptedNodeCount"] == 0


@pytest.mark.docker
def test_cancel_of_a_queued_run_and_of_a_running_one(backend, docker_client, tmp_path):
    ComputeTargets(backend.store).create(TargetSpec("one", "STANDARD_D1_V2", max_nodes=1))
    source = write_script(tmp_path / "src", "train.py", PROGRESS_THEN_SLEEP)
    lines = []
    running = backend.submit(docker_spec(source, compute="one"), on_event=started(lines))
    queued = backend.submit(docker_spec(source, compute="one"))
    wait_for(lambda: "started" in lines, timeout=120)

    queued.cancel()
    running.cancel()

    assert queued.wait(timeout=30)["status"] == "Canceled"
    details = running.wait(timeout=30)
    assert details["status"] == "Canceled"
    assert "outputs/progress.txt" in running.get_file_names()
    assert not containers_of(docker_client, running.id)


def restart_docker_engine(docker_client):
    """Restart the engine the way an operator (or a crash and systemd) would."""
    if os.geteuid() != 0:
        pytest.skip("restarting the Docker engine needs root")
    if shutil.which("systemctl") and subprocess.run(["systemctl", "is-active", "--quiet", "docker"]).returncode == 0:
        subprocess.run(["systemctl", "restart", "docker"], check=True)
    else:
        pid = int(subprocess.run(["pgrep", "-xo", "dockerd"], capture_output=True, text=True,
                                 check=True).stdout.split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not process_alive(pid), timeout=60)
        with open("/tmp/amlocal-dockerd.log", "ab") as log:
            subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    wait_for(lambda: _engine_answers(docker_client), timeout=60, interval=0.5)


def _engine_answers(docker_client):
    try:
        return docker_client.ping()
    except Exception:
        return False


@pytest.mark.docker
def test_docker_engine_restart_during_a_run_fails_it_with_an_infrastructure_reason(
        backend, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", PROGRESS_THEN_SLEEP)
    lines = []
    handle = backend.submit(docker_spec(source), on_event=started(lines))
    wait_for(lambda: "started" in lines, timeout=120)

    restart_docker_engine(docker_client)
    details = handle.wait(timeout=120)

    assert details["status"] == "Failed"
    assert details["error"].startswith("infrastructure failure:")
    assert "engine" in details["error"]
    assert "outputs/progress.txt" in handle.get_file_names()


@pytest.fixture
def small_disk_home(tmp_path, monkeypatch):
    """AMLOCAL_HOME on a 64 MB file system of its own, so a run can fill it for real."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    home = tmp_path / "small-disk"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(home)], check=True)
    monkeypatch.setenv("AMLOCAL_HOME", str(home))
    yield home
    subprocess.run(["umount", str(home)], check=True)


@pytest.mark.docker
def test_full_disk_fails_the_run_with_the_reason_and_outputs_stay_recoverable(
        small_disk_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", """
import os
os.makedirs("outputs", exist_ok=True)
open("outputs/checkpoint.txt", "w").write("epoch 3")
try:
    with open("outputs/blob.bin", "wb") as blob:
        while True:
            blob.write(b"x" * (1 << 20))
            blob.flush()
except OSError as error:
    print("stopped:", error, flush=True)
""")

    result = invoke("run", source, "--script", "train.py", "--executor", "docker", "--json")

    assert result.exit_code == 1
    record = last_json(result)
    assert record["status"] == "Failed" and record["error"].startswith("disk full while")
    assert "its driver log may be incomplete" in record["error"]
    downloaded = invoke("runs", "download", record["id"], "--prefix", "outputs/checkpoint.txt",
                        "-o", tmp_path / "recovered")
    assert downloaded.exit_code == 0, downloaded.output
    assert (tmp_path / "recovered" / "outputs" / "checkpoint.txt").read_text() == "epoch 3"
    assert last_json(invoke("runs", "list", "--json"))[0]["status"] == "Failed"


# -- damaged run records: reported, never served (no Docker needed) --------------------------

@pytest.fixture
def finished_run(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import os\nos.makedirs('outputs', exist_ok=True)\n"
                          "open('outputs/model.txt', 'w').write('weights')\n")
    record = last_json(invoke("run", source, "--script", "train.py", "--executor", "process", "--json"))
    assert record["status"] == "Completed"
    return record


def test_damaged_record_is_reported_not_served(finished_run):
    store = RunStore()
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("UPDATE runs SET spec = '{\"script\": \"train.py\", ' WHERE id = ?",
                     (finished_run["id"],))

    shown = invoke("runs", "show", finished_run["id"])
    listed = last_json(invoke("runs", "list", "--json"))

    assert shown.exit_code == 5
    assert f"run {finished_run['id']}'s record is damaged (spec is not valid JSON" in shown.stderr
    assert listed == [{"id": finished_run["id"], "experiment": "Default",
                       "corrupted": listed[0]["corrupted"]}]
    assert "record is damaged" in listed[0]["corrupted"]


def test_damaged_output_file_is_reported_on_download(finished_run, tmp_path):
    model = Path(finished_run["run_dir"]) / "outputs" / "model.txt"
    model.write_text("weightz")

    result = invoke("runs", "download", finished_run["id"], "--prefix", "outputs/", "-o", tmp_path / "dl")

    assert result.exit_code == 5
    assert "file outputs/model.txt is damaged" in result.stderr
    assert not (tmp_path / "dl" / "outputs" / "model.txt").exists()


def test_missing_run_folder_is_reported(finished_run):
    shutil.rmtree(finished_run["run_dir"])

    result = invoke("runs", "show", finished_run["id"])

    assert result.exit_code == 5
    assert "folder" in result.stderr and "is missing" in result.stderr


def test_damaged_database_is_reported_with_what_to_do(finished_run):
    db_path = RunStore().db_path
    for leftover in (db_path.with_name(db_path.name + suffix) for suffix in ("-wal", "-shm")):
        leftover.unlink(missing_ok=True)
    db_path.write_bytes(b"this is not a database" * 100)

    result = invoke("runs", "list")

    assert result.exit_code == 5
    assert "is damaged" in result.stderr and "move it aside" in result.stderr


def test_half_created_run_folder_is_never_listed(finished_run):
    staging = RunStore().runs_dir / ".creating-Default_1_deadbeef"
    (staging / "snapshot").mkdir(parents=True)

    listed = last_json(invoke("runs", "list", "--json"))

    assert [run["id"] for run in listed] == [finished_run["id"]]
