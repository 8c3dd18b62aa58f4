"""Runs on compute targets, end to end on a real Docker engine: queueing, node limits, scaling."""

import datetime
import json
import time

import pytest

from amlocal.backends.base import RunSpec
from amlocal.backends.local import LocalBackend
from amlocal.backends.local.compute import ComputeTargets, TargetSpec
from conftest import write_script
from test_cli import invoke, last_json, wait_for

pytestmark = pytest.mark.docker

SLEEPER = "import time, sys\nprint('started', flush=True)\ntime.sleep(float(sys.argv[1]))\n"


def timestamp(iso):
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def stage(details, name):
    return next(stage for stage in details["stages"] if stage["name"] == name)


@pytest.fixture
def backend(amlocal_home, docker_client):
    return LocalBackend()


def create_target(backend, name="cpu2", max_nodes=2, **options):
    return ComputeTargets(backend.store).create(
        TargetSpec(name=name, vm_size="STANDARD_D1_V2", max_nodes=max_nodes, **options))


def submit(backend, source, *args, compute="cpu2", node_count=1):
    return backend.submit(RunSpec(source_dir=source, script="train.py", arguments=tuple(args),
                                  executor="docker", compute=compute, node_count=node_count))


def max_overlap(intervals):
    """The largest number of [start, end) intervals that hold at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda edge: (edge[0], edge[1]))
    current = peak = 0
    for _moment, change in edges:
        current += change
        peak = max(peak, current)
    return peak


def test_twelve_runs_on_two_nodes_run_two_at_a_time_in_submission_order(backend, tmp_path):
    create_target(backend)
    source = write_script(tmp_path / "src", "train.py", SLEEPER)

    handles = [submit(backend, source, "0.5") for _ in range(12)]
    results = [handle.wait(timeout=300) for handle in handles]

    assert [details["status"] for details in results] == ["Completed"] * 12
    running = [(timestamp(stage(d, "Running")["started_at"]), timestamp(stage(d, "Running")["ended_at"]))
               for d in results]
    assert max_overlap(running) == 2  # both nodes used, never more
    # Nodes are handed out in one transaction each, in submission order (two runs given nodes
    # at once may start their containers a few milliseconds apart either way).
    allocated = [details["nodes"][0]["allocated_at"] for details in results]
    assert allocated == sorted(allocated)


def test_queued_run_says_why_it_waits_and_can_be_canceled(backend, tmp_path):
    create_target(backend, max_nodes=1)
    source = write_script(tmp_path / "src", "train.py", SLEEPER)
    first = submit(backend, source, "60")
    second = submit(backend, source, "0")
    wait_for(lambda: first.get_status() == "Running", timeout=60)
    # Nobody is ahead of it in the queue now: it waits for the one node the first run holds.
    expected = {"status": "Queued", "details": "Run requested 1 node(s). Run is in pending status."}
    waiting = wait_for(lambda: second.get_detailed_status() == expected and expected, timeout=10)

    second.cancel()
    canceled = second.wait(timeout=30)
    first.cancel()
    first.wait(timeout=30)

    assert waiting == expected
    assert canceled["status"] == "Canceled"
    assert stage(canceled, "Scaling")["status"] == "Canceled"
    assert stage(canceled, "Running")["status"] == "NotStarted"


def test_run_asking_for_two_nodes_waits_until_both_are_free(backend, tmp_path):
    create_target(backend)
    source = write_script(tmp_path / "src", "train.py", SLEEPER)
    holder = submit(backend, source, "2")
    wait_for(lambda: holder.get_status() == "Running", timeout=60)

    pair = submit(backend, source, "0", node_count=2)
    details = pair.wait(timeout=120)
    held = holder.wait(timeout=60)

    assert details["status"] == "Completed" and len(details["nodes"]) == 2
    assert timestamp(stage(details, "Running")["started_at"]) >= timestamp(stage(held, "Running")["ended_at"])
    assert "2 node(s) requested, 2 allocated on cpu2" in stage(details, "Scaling")["detail"]


def test_container_is_confined_to_its_node(backend, tmp_path):
    create_target(backend)
    source = write_script(tmp_path / "src", "train.py", """
import json, os
limits = {"cores": sorted(os.sched_getaffinity(0))}
for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
    if os.path.exists(path):
        limits["memory"] = int(open(path).read().strip())
os.makedirs("outputs", exist_ok=True)
json.dump(limits, open("outputs/limits.json", "w"))
""")
    first, second = submit(backend, source), submit(backend, source)
    reports = []
    for handle in (first, second):
        details = handle.wait(timeout=120)
        assert details["status"] == "Completed", details["error"]
        reports.append(json.loads((handle.run_dir / "outputs" / "limits.json").read_text()))

    assert all(report["memory"] == int(3.5 * 2**30) for report in reports)
    assert all(len(report["cores"]) == 1 for report in reports)


def test_idle_nodes_scale_down_to_min_nodes(backend, tmp_path):
    targets = ComputeTargets(backend.store)
    create_target(backend, idle_seconds_before_scaledown=3, min_nodes=1)
    source = write_script(tmp_path / "src", "train.py", SLEEPER)
    handles = [submit(backend, source, "0.2") for _ in range(2)]
    for handle in handles:
        assert handle.wait(timeout=120)["status"] == "Completed"

    right_after = targets.status("cpu2")["currentNodeCount"]
    time.sleep(3.5)
    later = targets.status("cpu2")

    assert right_after == 2
    assert later["currentNodeCount"] == 1 and later["nodeStateCounts"]["idleNodeCount"] == 1


def test_run_naming_a_missing_target_or_too_many_nodes_is_refused(amlocal_home, docker_client,
                                                                   tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")

    missing = invoke("run", source, "--script", "train.py", "--compute", "nowhere")
    too_many = invoke("run", source, "--script", "train.py", "--node-count", "2")

    assert missing.exit_code == 2 and "no compute target named 'nowhere'" in missing.stderr
    assert too_many.exit_code == 2 and "asks for 2 nodes but local has at most 1" in too_many.stderr
    assert last_json(invoke("runs", "list", "--json")) == []
