"""What a run can reach: an unprivileged, confined container; a clean environment and a memory
limit for the process executor. Against the real Docker engine and real host processes.

The tests run as root here, so "a root submitter" is the real case, not a simulation.
"""

import json
import os
import signal
from pathlib import Path

import pytest

from amlocal.backends.base import RunSpec
from amlocal.backends.local import LocalBackend
from amlocal.backends.local.compute import ComputeTargets, TargetSpec, host_resources, local_memory_limit
from amlocal.backends.local.processes import process_alive
from amlocal.backends.history.store import RunStore
from conftest import write_script
from test_cli import invoke, last_json, wait_for

# Reports who the script is and what it may do, into outputs/report.json.
PROBE = r"""
import json, os, sys

def status_field(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return line.split()[1]

def first_readable(*paths):  # cgroup v2 names first, then v1's
    for path in paths:
        if os.path.exists(path):
            return open(path).read().strip()

def can_write(path):
    try:
        with open(path, "w") as handle:
            handle.write("x")
        return True
    except OSError:
        return False

report = {
    "uid": os.getuid(), "gid": os.getgid(),
    "CapEff": status_field("CapEff"), "NoNewPrivs": status_field("NoNewPrivs"),
    "write_usr": can_write("/usr/amlocal-probe"), "write_root": can_write("/amlocal-probe"),
    "write_tmp": can_write("/tmp/amlocal-probe"),
    "pids_max": first_readable("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    "memory_max": first_readable("/sys/fs/cgroup/memory.max",
                                 "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "env": dict(os.environ),
}
os.makedirs("outputs/sub", exist_ok=True)
os.makedirs("logs", exist_ok=True)
with open("outputs/report.json", "w") as handle:
    json.dump(report, handle)
open("outputs/sub/nested.txt", "w").write("nested")
open("logs/own.log", "w").write("a log of its own")
with open("outputs/setuid_tool", "wb") as handle:  # setuid/setgid to its own user
    handle.write(open("/bin/true", "rb").read())
os.chmod("outputs/setuid_tool", 0o6755)
# Links to host paths (given as arguments): data to keep, never to follow.
for index, target in enumerate(sys.argv[1:]):
    os.symlink(target, f"outputs/link_{index}")
"""

NO_CAPABILITIES = "0000000000000000"
DOCKER_DEFAULT_CAPABILITIES = "00000000a80425fb"
# Owner of the host files behind the links: neither the submitter nor the container's user.
STRANGER = 4242


def probe_source(tmp_path):
    return write_script(tmp_path / "src", "train.py", PROBE)


def report_of(details):
    return json.loads((Path(details["run_dir"]) / "outputs" / "report.json").read_text())


def owners_under(folder):
    """{relative path: (uid, gid)} of everything under folder, links themselves (not followed)."""
    owners = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            stat = path.lstat()
            owners[str(path.relative_to(folder))] = (stat.st_uid, stat.st_gid)
    return owners


@pytest.fixture
def backend(amlocal_home):
    return LocalBackend()


# -- the docker executor ------------------------------------------------------------------------

@pytest.mark.docker
def test_docker_script_runs_unprivileged_and_confined(backend, docker_client, tmp_path):
    assert os.getuid() == 0, "the case that matters: a root submitter"
    spec = RunSpec(source_dir=probe_source(tmp_path), script="train.py", executor="docker")

    details = backend.submit(spec).wait(timeout=120)

    assert details["status"] == "Completed", details["error"]
    report = report_of(details)
    assert report["uid"] != 0 and report["gid"] != 0
    assert report["CapEff"] == NO_CAPABILITIES
    assert report["NoNewPrivs"] == "1"
    assert report["write_usr"] is False and report["write_root"] is False
    assert report["write_tmp"] is True
    assert report["pids_max"] == "2048"
    assert int(report["memory_max"]) == local_memory_limit(host_resources().memory_bytes)


@pytest.mark.docker
def test_docker_run_files_belong_to_the_submitter_and_links_are_not_followed(backend, docker_client,
                                                                            tmp_path):
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    host_file = host_dir / "secret.txt"
    host_file.write_text("host data")
    for path in (host_dir, host_file):
        os.chown(path, STRANGER, STRANGER)
    spec = RunSpec(source_dir=probe_source(tmp_path), script="train.py", executor="docker",
                   arguments=(str(host_file), str(host_dir), "/etc/passwd"))
    passwd_owner = os.stat("/etc/passwd").st_uid

    details = backend.submit(spec).wait(timeout=120)

    assert details["status"] == "Completed", details["error"]
    run_dir = Path(details["run_dir"])
    submitter = (os.getuid(), os.getgid())
    outputs, logs = owners_under(run_dir / "outputs"), owners_under(run_dir / "logs")
    assert {"report.json", "sub", "sub/nested.txt", "setuid_tool", "link_0", "link_1",
            "link_2"} <= set(outputs)
    assert "own.log" in logs
    assert set(outputs.values()) | set(logs.values()) == {submitter}
    # Given to root, a setuid file of the script's would be a way up: the kernel clears the bits.
    assert (run_dir / "outputs" / "setuid_tool").stat().st_mode & 0o7777 == 0o755
    # The links are kept as links, and what they point at on the host is untouched.
    assert os.readlink(run_dir / "outputs" / "link_0") == str(host_file)
    assert (host_file.stat().st_uid, host_dir.stat().st_uid) == (STRANGER, STRANGER)
    assert os.stat("/etc/passwd").st_uid == passwd_owner


@pytest.mark.docker
def test_files_the_script_uploads_belong_to_the_submitter(backend, docker_client, tmp_path):
    # Uploads under names outside ./outputs and ./logs land in the run's uploads/ folder, which
    # is no mount of the container's: they are given to the submitter as they are taken in.
    source = write_script(tmp_path / "src", "train.py", """
from azureml.core.run import Run
run = Run.get_context()
open("/tmp/plot.txt", "w").write("a chart")
run.upload_file("charts/plot.txt", "/tmp/plot.txt")
run.upload_file("outputs/copied.txt", "/tmp/plot.txt")
""")
    details = backend.submit(RunSpec(source_dir=source, script="train.py",
                                     executor="docker")).wait(timeout=120)

    assert details["status"] == "Completed", details["error"]
    run_dir = Path(details["run_dir"])
    owners = {**owners_under(run_dir / "uploads"), **owners_under(run_dir / "outputs")}
    assert {"charts/plot.txt", "copied.txt"} <= set(owners)
    assert set(owners.values()) == {(os.getuid(), os.getgid())}


@pytest.mark.docker
def test_run_files_are_given_back_when_the_process_driving_the_run_died(amlocal_home, docker_client,
                                                                       tmp_path):
    source = write_script(tmp_path / "src", "train.py", """
import os, time
os.makedirs("outputs/sub", exist_ok=True)
open("outputs/sub/progress.txt", "w").write("epoch 1 done")
print("started", flush=True)
time.sleep(3)
""")
    run_id = last_json(invoke("run", source, "--script", "train.py", "--executor", "docker",
                              "--detach", "--json"))["id"]
    wait_for(lambda: "started" in invoke("runs", "logs", run_id).stdout, timeout=120)
    supervisor = RunStore().get_run(run_id)["driver_pid"]

    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not process_alive(supervisor), timeout=10)
    invoke("runs", "wait", run_id, "--timeout", 120)  # whoever ends the run gives the files back

    run_dir = RunStore().run_dir(run_id)
    assert set(owners_under(run_dir / "outputs").values()) == {(os.getuid(), os.getgid())}


@pytest.mark.docker
def test_run_as_root_opts_out_of_the_unprivileged_user_and_the_read_only_root(amlocal_home,
                                                                            docker_client, tmp_path):
    result = invoke("run", probe_source(tmp_path), "--script", "train.py", "--executor", "docker",
                    "--run-as-root", "--json")

    assert result.exit_code == 0, result.output
    report = report_of(last_json(result))
    assert report["uid"] == 0
    assert report["CapEff"] == DOCKER_DEFAULT_CAPABILITIES
    assert report["write_root"] is True
    # What stays: no new privileges, the pids and memory limits (and no network).
    assert report["NoNewPrivs"] == "1" and report["pids_max"] == "2048"
    assert int(report["memory_max"]) == local_memory_limit(host_resources().memory_bytes)


@pytest.mark.docker
def test_docker_script_sees_variables_given_with_env(amlocal_home, docker_client, tmp_path,
                                                     monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")

    result = invoke("run", probe_source(tmp_path), "--script", "train.py", "--executor", "docker",
                    "--env", "GREETING=hello world", "--env", "EMPTY=", "--json")

    assert result.exit_code == 0, result.output
    environment = report_of(last_json(result))["env"]
    assert environment["GREETING"] == "hello world" and environment["EMPTY"] == ""
    assert "AWS_SECRET_ACCESS_KEY" not in environment


# -- the process executor -----------------------------------------------------------------------

def test_process_script_gets_a_clean_environment_and_what_env_gives(amlocal_home, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("AMLOCAL_STOP_GRACE_S", "5")

    result = invoke("run", probe_source(tmp_path), "--script", "train.py", "--executor", "process",
                    "--env", "GREETING=hello", "--json")

    assert result.exit_code == 0, result.output
    record = last_json(result)
    environment = report_of(record)["env"]
    assert "AWS_SECRET_ACCESS_KEY" not in environment
    assert "AMLOCAL_STOP_GRACE_S" not in environment  # amlocal's own settings are not the script's
    assert environment["AMLOCAL_HOME"] == str(amlocal_home)  # its SDK finds the run's workspace
    assert environment["GREETING"] == "hello"
    assert environment["PATH"] == os.environ["PATH"] and environment["LC_ALL"] == "C.UTF-8"
    assert environment["AZUREML_RUN_ID"] == record["id"]
    assert environment["AMLOCAL_TELEMETRY_FILE"].endswith("events.jsonl")


def test_env_option_refuses_what_is_not_key_value(amlocal_home, tmp_path):
    for value, message in (("NOEQUALS", "--env expects KEY=VALUE, got 'NOEQUALS'"),
                           ("1BAD=x", "invalid environment variable name '1BAD'")):
        result = invoke("run", probe_source(tmp_path), "--script", "train.py",
                        "--executor", "process", "--env", value)

        assert result.exit_code == 2
        assert result.output.strip() == f"Error: {message}"


def test_process_script_past_its_memory_limit_fails_out_of_memory(backend, tmp_path):
    ComputeTargets(backend.store).create(TargetSpec("small", "STANDARD_D1_V2", max_nodes=1,
                                                    allow_overcommit=True))
    # calloc'ed pages are not touched: without a limit this "succeeds" without using the memory,
    # so the test is safe on a shared machine either way.
    source = write_script(tmp_path / "src", "train.py", """
import numpy
print("allocating", flush=True)
hog = numpy.zeros(5 << 30, dtype=numpy.uint8)  # more than the 3.5 GiB node
print("allocated", flush=True)
""")
    spec = RunSpec(source_dir=source, script="train.py", executor="process", compute="small")

    details = backend.submit(spec).wait(timeout=120)

    assert details["status"] == "Failed"
    assert details["error"].startswith("out of memory: the script exceeded its memory limit of "
                                       "3.5 GiB"), details["error"]
    driver_log = Path(details["run_dir"]) / "azureml-logs" / "70_driver_log.txt"
    assert "MemoryError" in driver_log.read_text()
