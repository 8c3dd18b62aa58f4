"""The driver log keeps every byte, a closed terminal pipe neither stops a run nor swallows its
Ctrl-C, and a run whose driving process is killed is adopted and finished by the next look.

Everything real: `amlocal run` as a subprocess with real pipes and signals, real containers, real
host processes, the real run history.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amlocal.backends.base import LogLine, RunSpec
from amlocal.backends.local import LocalBackend
from amlocal.backends.local.processes import process_alive
from amlocal.backends.history.store import DRIVER_LOG, RunStore
from conftest import write_script
from test_cli import invoke, last_json, wait_for

AMLOCAL = [sys.executable, "-m", "amlocal"]
EXECUTORS = ["process", pytest.param("docker", marks=pytest.mark.docker)]

# Prints 'started', waits for its driver to be killed, then finishes its work.
FINISHES_AFTER_A_WHILE = """
import os, sys, time
print("started", flush=True)
time.sleep(float(sys.argv[1]))
for step in range(100):
    print(f"after the driver died {step}", flush=True)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
print("done", flush=True)
"""


def fast_printer(lines):
    return f"for i in range({lines}):\n    print(f'line {{i}}')\n"


def driver_log_lines(run_dir):
    log = Path(run_dir) / DRIVER_LOG
    return log.read_bytes().decode(errors="replace").splitlines() if log.exists() else []


def open_stages(record):
    return [stage["name"] for stage in record["stages"] if stage["status"] == "Running"]


def start_foreground_run(source, executor, *script_args, stdout=subprocess.DEVNULL):
    """`amlocal run` as a user starts it in a terminal; returns (process, run id)."""
    process = subprocess.Popen(
        [*AMLOCAL, "run", str(source), "--script", "train.py", "--executor", executor,
         "--", *script_args],
        stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first = process.stderr.readline().decode()
    assert first.startswith("RunId: "), first
    return process, first.split()[1]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_two_million_fast_lines_are_all_kept(amlocal_home, tmp_path, executor):
    source = write_script(tmp_path / "src", "train.py", fast_printer(2_000_000))

    details = LocalBackend().submit(RunSpec(source_dir=source, script="train.py",
                                            executor=executor)).wait(timeout=600)

    assert details["status"] == "Completed", details["error"]
    lines = driver_log_lines(details["run_dir"])
    assert len(lines) == 2_000_000
    assert lines[-1] == "line 1999999"
    assert lines[123_456] == "line 123456"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_closed_stdout_pipe_keeps_the_run_and_its_whole_log(amlocal_home, tmp_path, executor):
    source = write_script(tmp_path / "src", "train.py", """
import os, time
for i in range(3000):
    print(f"line {i}", flush=True)
    if i % 100 == 0:
        time.sleep(0.01)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
""")
    process, run_id = start_foreground_run(source, executor, stdout=subprocess.PIPE)
    head = [process.stdout.readline() for _ in range(8)]  # what `| head -n 8` reads
    process.stdout.close()
    try:
        process.wait(timeout=120)
    finally:
        process.kill()

    assert head[-1] == b"line 7\n"
    record = last_json(invoke("runs", "show", run_id, "--json"))
    assert record["status"] == "Completed", record["error"]
    lines = driver_log_lines(record["run_dir"])
    assert len(lines) == 3000 and lines[-1] == "line 2999"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ctrl_c_through_a_broken_pipe_cancels_the_run(amlocal_home, tmp_path, executor):
    source = write_script(tmp_path / "src", "train.py", """
import time
for i in range(100000):
    print(f"line {i}", flush=True)
    time.sleep(0.02)
""")
    process, run_id = start_foreground_run(source, executor, stdout=subprocess.PIPE)
    process.stdout.readline()
    # `amlocal run ... | tee f.log` and Ctrl-C: the shell signals both; tee is gone first.
    process.stdout.close()
    time.sleep(1)  # the script prints on, into a pipe nobody reads
    process.send_signal(signal.SIGINT)
    try:
        exit_code = process.wait(timeout=60)
    finally:
        process.kill()

    assert exit_code != 0
    record = last_json(invoke("runs", "show", run_id, "--json"))
    assert record["status"] == "Canceled", record["error"]
    assert not open_stages(record)
    assert len(driver_log_lines(record["run_dir"])) > 20  # the log went on after the pipe closed


@pytest.mark.parametrize("executor", EXECUTORS)
def test_killed_foreground_driver_is_adopted_and_the_run_completes(amlocal_home, tmp_path,
                                                                  executor):
    source = write_script(tmp_path / "src", "train.py", FINISHES_AFTER_A_WHILE)
    process, run_id = start_foreground_run(source, executor, "3")
    run_dir = RunStore().run_dir(run_id)
    wait_for(lambda: "started" in driver_log_lines(run_dir), timeout=120)

    process.kill()  # kill -9: no handler, no cleanup
    process.wait()
    waited = invoke("runs", "wait", run_id, "--json")

    assert waited.exit_code == 0, waited.output
    record = last_json(waited)
    assert record["status"] == "Completed", record["error"]
    assert record["exit_code"] == 0
    assert "outputs/model.txt" in last_json(invoke("runs", "files", run_id, "--json"))
    lines = driver_log_lines(run_dir)
    assert lines[0] == "started" and lines[-1] == "done"
    assert [line for line in lines if line.startswith("after the driver died")] == [
        f"after the driver died {step}" for step in range(100)]
    assert not open_stages(record)
    stages = {stage["name"]: stage["status"] for stage in record["stages"]}
    assert stages["Running"] == "Completed" and stages["PostProcessing"] == "Completed"


@pytest.mark.docker
def test_killed_driver_and_removed_container_end_the_run_with_the_reason(amlocal_home, tmp_path,
                                                                         docker_client):
    source = write_script(tmp_path / "src", "train.py", FINISHES_AFTER_A_WHILE)
    process, run_id = start_foreground_run(source, "docker", "300")
    wait_for(lambda: "started" in driver_log_lines(RunStore().run_dir(run_id)), timeout=120)

    process.kill()
    process.wait()
    for container in docker_client.containers.list(
            all=True, filters={"label": f"amlocal.run_id={run_id}"}):
        container.remove(force=True)
    waited = invoke("runs", "wait", run_id, "--json", "--timeout", "60")

    assert waited.exit_code == 1, waited.output
    record = last_json(waited)
    assert record["status"] in ("Failed", "NotResponding")
    assert "container" in record["error"] and "gone" in record["error"]
    assert not open_stages(record)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cancel_of_an_adopted_run(amlocal_home, tmp_path, executor):
    source = write_script(tmp_path / "src", "train.py", FINISHES_AFTER_A_WHILE)
    process, run_id = start_foreground_run(source, executor, "300")
    store = RunStore()
    wait_for(lambda: "started" in driver_log_lines(store.run_dir(run_id)), timeout=120)
    process.kill()
    process.wait()

    shown = last_json(invoke("runs", "show", run_id, "--json"))  # the look that adopts it
    assert shown["status"] == "Running", shown["error"]
    wait_for(lambda: process_alive(store.get_run(run_id)["driver_pid"]), timeout=30)
    script = store.get_run(run_id)
    canceled = invoke("runs", "cancel", run_id, "--json")

    assert last_json(canceled)["status"] == "Canceled"
    record = store.get_run(run_id)
    assert not open_stages(record)
    if executor == "process":
        wait_for(lambda: not process_alive(script["script_pid"]), timeout=30)
    else:
        import docker
        with pytest.raises(docker.errors.NotFound):
            docker.from_env().containers.get(script["container_id"])


def test_a_swapped_output_file_is_not_followed_and_the_log_says_it_is_incomplete(amlocal_home,
                                                                                 tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret\n")
    source = write_script(tmp_path / "src", "train.py", f"""
import os, time
print("started", flush=True)
while not os.path.exists("../driver_output/driver-killed"):
    time.sleep(0.05)
# Point the output file that the next driver opens at a host file.
os.symlink({str(secret)!r}, "../driver_output/link")
os.replace("../driver_output/link", "../driver_output/script_output.txt")
print("written after the swap", flush=True)
""")
    process, run_id = start_foreground_run(source, "process")
    run_dir = RunStore().run_dir(run_id)
    wait_for(lambda: "started" in driver_log_lines(run_dir), timeout=60)
    process.kill()
    process.wait()
    (run_dir / "driver_output" / "driver-killed").touch()
    wait_for(lambda: (run_dir / "driver_output" / "script_output.txt").is_symlink(), timeout=30)

    record = last_json(invoke("runs", "wait", run_id, "--json"))

    assert record["status"] == "Completed", record["error"]
    lines = driver_log_lines(run_dir)
    assert "host secret" not in lines
    assert lines[-1].startswith("[amlocal] this driver log is incomplete")


def test_concurrent_looks_start_exactly_one_adopter(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", FINISHES_AFTER_A_WHILE)
    process, run_id = start_foreground_run(source, "process", "300")
    store = RunStore()
    wait_for(lambda: "started" in driver_log_lines(store.run_dir(run_id)), timeout=60)
    process.kill()
    process.wait()

    looks = [subprocess.Popen([*AMLOCAL, "runs", "show", run_id], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(4)]
    for look in looks:
        look.wait(timeout=60)
    adopter = wait_for(lambda: process_alive(store.get_run(run_id)["driver_pid"])
                       and store.get_run(run_id)["driver_pid"], timeout=30)
    supervisors = subprocess.run(["pgrep", "-f", f"amlocal.backends.local.supervisor .*{run_id}"],
                                 capture_output=True, text=True).stdout.split()

    assert supervisors == [str(adopter)]
    assert last_json(invoke("runs", "cancel", run_id, "--json"))["status"] == "Canceled"


def test_following_a_run_from_elsewhere_shows_every_line_of_a_big_log(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", fast_printer(500_000))  # ~6 MB
    backend = LocalBackend()
    run_id = backend.submit(RunSpec(source_dir=source, script="train.py", executor="process"),
                            detach=True).id

    lines = [event.line for event in backend.get_run(run_id).follow(poll_interval=0.05)
             if isinstance(event, LogLine) and event.source == "driver"]

    assert len(lines) == 500_000 and lines[-1] == "line 499999"


def test_a_run_whose_driver_died_in_post_processing_is_finished_by_the_next_look(amlocal_home,
                                                                                 tmp_path):
    store = RunStore()
    spec = {"experiment": "Default", "source_dir": str(tmp_path), "script": "train.py",
            "arguments": [], "inputs": {}, "environment": {}, "compute": "local",
            "node_count": 1, "tags": {}}
    run_id = store.create_run(experiment="Default", executor="process", compute="local",
                              spec=spec, fill_snapshot=lambda folder: None)
    for status in ("Preparing", "Queued", "Running", "Finalizing"):
        store.set_status(run_id, status)
    store.start_stage(run_id, "PostProcessing")
    (store.run_dir(run_id) / "outputs" / "model.txt").write_text("weights")
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    store.update_run(run_id, exit_code=0, driver_pid=dead.pid)

    record = last_json(invoke("runs", "wait", run_id, "--json", "--timeout", "60"))

    assert record["status"] == "Completed", record["error"]
    assert "outputs/model.txt" in last_json(invoke("runs", "files", run_id, "--json"))
    assert not open_stages(record)
