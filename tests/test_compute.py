"""Tests for local compute targets (backends/local/compute.py), on real run histories in tmp_path.

Hosts are fixed HostResources passed explicitly, so the results do not depend on the machine
that runs the tests. Runs are created with RunStore.create_run and enqueued inside
store.transaction(), as the backend does at submission.
"""

import datetime
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

from amlocal.backends.local.compute import (
    LOCAL_TARGET, VM_SIZES, ComputeTargetError, ComputeTargets, HostResources, NodeResources,
    TargetSpec, combine_node_resources, local_memory_limit, local_target, node_resources)
from amlocal.backends.history.store import RunStore
from amlocal.errors import AmlocalError, UserInputError

GIB = 2**30


def host(cores, memory_gib, gpus=0):
    return HostResources(cores=tuple(range(cores)),
                         memory_bytes=memory_gib * GIB,
                         gpus=tuple(str(index) for index in range(gpus)))


SMALL_HOST = host(4, 16)  # a laptop: 4 cores, 16 GiB, no GPU
GPU_HOST = host(32, 256, gpus=2)
ROOMY_HOST = host(64, 512, gpus=4)  # fits one node of every size in VM_SIZES


def spec(name="cpu", vm_size="STANDARD_D2_V2", max_nodes=2, **settings):
    return TargetSpec(name=name, vm_size=vm_size, max_nodes=max_nodes, **settings)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "home")


@pytest.fixture
def targets(store):
    return ComputeTargets(store, host=ROOMY_HOST)


def write_snapshot(folder):
    folder.mkdir()
    (folder / "train.py").write_text("print('training')\n")


def submit(store, targets, target="cpu", node_count=1):
    """Create a run on `target` and put it at the back of the target's queue."""
    run_spec = {"experiment": "mnist", "source_dir": "src", "script": "train.py",
                "arguments": [], "inputs": {}, "environment": {}, "compute": target,
                "node_count": node_count, "tags": {}}  # the fields the backend stores
    run_id = store.create_run(experiment="mnist", executor="process", compute=target,
                              spec=run_spec, fill_snapshot=write_snapshot)
    with store.transaction() as conn:
        targets.enqueue(conn, run_id, target, node_count)
    return run_id


def allocated(targets, run_id):
    """The node ids try_allocate gave the run; fails the test if it gave none."""
    nodes = targets.try_allocate(run_id)
    assert nodes, f"{run_id} got no nodes"
    return [node_id for node_id, _slot in nodes]


def nodes_of(targets, name):
    return targets.describe(name)["nodes"]


def queue_of(targets, name):
    return targets.describe(name)["queue"]


def idle_for(store, target, seconds):
    """Make the target's idle nodes look idle for `seconds` already."""
    with store.transaction() as conn:
        conn.execute("UPDATE nodes SET idle_since = ? WHERE target = ? AND state = 'idle'",
                     (time.time() - seconds, target))


def dead_pid():
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


# -- TargetSpec.validated -------------------------------------------------------------------

@pytest.mark.parametrize("vm_size", sorted(VM_SIZES))
def test_every_known_vm_size_is_accepted_in_any_case_and_normalised(vm_size):
    for written in (vm_size, vm_size.lower(), vm_size.title()):
        validated = spec(vm_size=written, max_nodes=1).validated(ROOMY_HOST)

        assert validated.vm_size == vm_size
        assert validated.size == VM_SIZES[vm_size]


def test_an_unknown_vm_size_is_refused_with_the_known_ones_listed():
    with pytest.raises(UserInputError) as raised:
        spec(vm_size="Standard_Z99").validated(ROOMY_HOST)

    message = str(raised.value)
    assert message.startswith("unknown VM size 'Standard_Z99': known sizes are ")
    assert all(size in message for size in VM_SIZES)


@pytest.mark.parametrize("name", ["ab", "gpu-cluster", "A" + "b-1" * 5])
def test_valid_names_are_accepted(name):
    assert spec(name=name).validated(ROOMY_HOST).name == name


@pytest.mark.parametrize("name", [
    "a",                    # too short
    "a" * 17,               # too long
    "1gpu",                 # starts with a digit
    "-gpu",
    "gpu_cluster",          # '_' is not allowed
    "gpu cluster",
    "gpu\n",                # a trailing newline is not part of a valid name
    "",
])
def test_invalid_names_are_refused(name):
    with pytest.raises(UserInputError, match=re.escape(f"invalid compute name {name!r}: 2-16")):
        spec(name=name).validated(ROOMY_HOST)


def test_local_is_reserved_for_the_built_in_target():
    with pytest.raises(UserInputError, match="'local' is the built-in target"):
        spec(name=LOCAL_TARGET).validated(ROOMY_HOST)


@pytest.mark.parametrize("settings, message", [
    ({"max_nodes": 0}, "max_nodes must be at least 1, got 0"),
    ({"min_nodes": -1}, "min_nodes cannot be negative, got -1"),
    ({"min_nodes": 3, "max_nodes": 2}, "max_nodes (2) must be at least min_nodes (3)"),
    ({"idle_seconds_before_scaledown": -1}, "idle_seconds_before_scaledown cannot be negative"),
    ({"vm_priority": "spot"}, "vm_priority must be one of dedicated, lowpriority, got 'spot'"),
])
def test_invalid_scale_settings_are_refused(settings, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        spec(**settings).validated(ROOMY_HOST)


def test_min_nodes_may_equal_max_nodes_and_both_priorities_are_accepted():
    for priority in ("dedicated", "lowpriority"):
        validated = spec(min_nodes=2, max_nodes=2, vm_priority=priority).validated(ROOMY_HOST)
        assert (validated.min_nodes, validated.max_nodes, validated.vm_priority) == (2, 2, priority)


def test_more_cores_or_memory_than_the_host_has_is_refused_naming_both_and_the_flag():
    too_many_cores = spec(vm_size="STANDARD_D2_V2", max_nodes=3)  # 6 cores, 21 GiB
    too_much_memory = spec(vm_size="STANDARD_D11_V2", max_nodes=2)  # 4 cores, 28 GiB

    for refused, need in ((too_many_cores, "6 cores and 21.0 GiB"),
                          (too_much_memory, "4 cores and 28.0 GiB")):
        with pytest.raises(UserInputError) as raised:
            refused.validated(SMALL_HOST)
        message = str(raised.value)
        assert f"{refused.max_nodes} node(s) of {refused.vm_size} need {need}" in message
        assert "this host has 4 cores, 16 GiB, no GPU" in message
        assert "--allow-overcommit" in message


def test_overcommit_lets_nodes_share_a_host_that_is_too_small():
    validated = spec(vm_size="standard_d4_v2", max_nodes=4, allow_overcommit=True).validated(
        SMALL_HOST)

    assert (validated.vm_size, validated.max_nodes, validated.allow_overcommit) == (
        "STANDARD_D4_V2", 4, True)


def test_more_gpus_than_the_host_has_is_refused_naming_both_and_the_flag():
    for host_with, vm_size, max_nodes, need, has in ((SMALL_HOST, "STANDARD_NC6", 1, 1, 0),
                                                     (GPU_HOST, "STANDARD_NC6", 3, 3, 2),
                                                     (GPU_HOST, "STANDARD_NC12", 2, 4, 2)):
        with pytest.raises(UserInputError) as raised:
            spec(vm_size=vm_size, max_nodes=max_nodes,
                 allow_overcommit=True).validated(host_with)
        message = str(raised.value)
        assert (f"{max_nodes} node(s) of {vm_size} need {need} GPU(s); "
                f"this host has {has}") in message
        assert "--emulate-gpus" in message


def test_emulate_gpus_accepts_gpu_sizes_on_a_host_without_enough_gpus():
    validated = spec(vm_size="Standard_NC6", max_nodes=1, allow_overcommit=True,
                     emulate_gpus=True).validated(SMALL_HOST)

    assert validated.vm_size == "STANDARD_NC6" and validated.emulate_gpus


def test_a_gpu_size_that_fits_the_host_needs_no_flag():
    assert spec(vm_size="STANDARD_NC6", max_nodes=2).validated(GPU_HOST).max_nodes == 2


# -- node_resources -------------------------------------------------------------------------

def cpuset_cores(resources):
    return {int(core) for core in resources.cpuset.split(",")}


def test_each_node_gets_its_own_cores_and_its_sizes_memory():
    # Cores as sched_getaffinity may give them inside a container: not from 0, not contiguous.
    pinned_host = HostResources(cores=(2, 3, 4, 5, 8, 9, 10, 11), memory_bytes=32 * GIB, gpus=())
    target = spec(vm_size="STANDARD_D2_V2", max_nodes=4).validated(pinned_host)

    nodes = [node_resources(target, slot, pinned_host) for slot in range(4)]

    cpusets = [cpuset_cores(node) for node in nodes]
    assert all(len(cores) == 2 for cores in cpusets)
    assert set().union(*cpusets) == set(pinned_host.cores)  # disjoint and within the host
    for node in nodes:
        assert node.memory_bytes == 7 * GIB
        assert node.nano_cpus is None
        assert (node.gpu_ids, node.emulated_gpus) == ((), 0)


def test_overcommitted_nodes_share_all_cores_by_cpu_time_not_by_cpuset():
    target = spec(vm_size="STANDARD_D4_V2", max_nodes=4, allow_overcommit=True).validated(
        SMALL_HOST)  # 8 cores and 28 GiB per node on a 4-core, 16 GiB host

    for slot in range(4):
        assert node_resources(target, slot, SMALL_HOST) == NodeResources(
            cpuset=None, nano_cpus=4 * 10**9, memory_bytes=16 * GIB, gpu_ids=())

    smaller = spec(vm_size="STANDARD_D2_V2", max_nodes=4, allow_overcommit=True).validated(
        SMALL_HOST)
    assert node_resources(smaller, 3, SMALL_HOST) == NodeResources(
        cpuset=None, nano_cpus=2 * 10**9, memory_bytes=7 * GIB, gpu_ids=())


def test_each_gpu_node_gets_its_own_host_gpus():
    one_each = spec(vm_size="STANDARD_NC6", max_nodes=2).validated(GPU_HOST)
    two_each = spec(vm_size="STANDARD_NC12", max_nodes=1).validated(GPU_HOST)

    assert [node_resources(one_each, slot, GPU_HOST).gpu_ids for slot in (0, 1)] == [
        ("0",), ("1",)]
    assert node_resources(two_each, 0, GPU_HOST).gpu_ids == ("0", "1")
    assert all(node_resources(one_each, slot, GPU_HOST).emulated_gpus == 0 for slot in (0, 1))


def test_without_host_gpus_the_nodes_emulate_theirs_on_the_cpu():
    cpu_only = host(64, 512)
    target = spec(vm_size="STANDARD_NC12", max_nodes=2, emulate_gpus=True).validated(cpu_only)

    for slot in (0, 1):
        node = node_resources(target, slot, cpu_only)
        assert (node.gpu_ids, node.emulated_gpus) == ((), 2)
        assert len(cpuset_cores(node)) == 12


def test_the_built_in_local_target_is_the_whole_host_less_a_memory_reserve():
    local = local_target()

    assert node_resources(local, 0, GPU_HOST) == NodeResources(
        cpuset=None, nano_cpus=None, memory_bytes=local_memory_limit(GPU_HOST.memory_bytes),
        gpu_ids=("0", "1"))


@pytest.mark.parametrize("host_gib, limit_gib", [
    (512, 512 - 51.2),  # a tenth of a big host
    (24, 24 - 2.4),
    (8, 7),  # at least 1 GiB
    (1.5, 0.75),  # never less than half of a tiny host
])
def test_the_local_memory_limit_keeps_a_reserve_for_the_host(host_gib, limit_gib):
    limit = local_memory_limit(int(host_gib * GIB))

    assert limit % 2**20 == 0
    assert abs(limit - limit_gib * GIB) < 2**20


def resources_of_run(target_spec, slots, on_host):
    """What a run given the nodes at `slots` gets: their resources together."""
    return combine_node_resources([node_resources(target_spec, slot, on_host) for slot in slots],
                                  host=on_host)


def test_a_run_on_several_nodes_gets_their_cores_memory_and_gpus_together():
    cpu = spec(vm_size="STANDARD_D2_V2", max_nodes=2).validated(SMALL_HOST)
    gpu = spec(vm_size="STANDARD_NC6", max_nodes=2).validated(GPU_HOST)

    assert resources_of_run(cpu, [0, 1], SMALL_HOST) == NodeResources(
        cpuset="0,1,2,3", nano_cpus=None, memory_bytes=14 * GIB, gpu_ids=())
    assert resources_of_run(gpu, [0, 1], GPU_HOST).gpu_ids == ("0", "1")
    assert resources_of_run(cpu, [1], SMALL_HOST) == node_resources(cpu, 1, SMALL_HOST)


def test_a_run_on_several_emulated_gpu_nodes_emulates_all_their_gpus():
    cpu_only = host(64, 512)
    target = spec(vm_size="STANDARD_NC12", max_nodes=2, emulate_gpus=True).validated(cpu_only)

    assert resources_of_run(target, [0, 1], cpu_only).emulated_gpus == 4


def test_a_run_on_several_overcommitted_nodes_never_asks_for_more_cpus_than_the_host_has():
    # Docker refuses a container with more CPU time than the host has ("range of CPUs is from
    # 0.01 to 4.00"), so the run's CPU time is capped at the host's cores.
    target = spec(vm_size="STANDARD_D2_V2", max_nodes=4, allow_overcommit=True).validated(
        host(3, 32))

    assert resources_of_run(target, [0], host(3, 32)).nano_cpus == 2 * 10**9
    assert resources_of_run(target, [0, 1], host(3, 32)).nano_cpus == 3 * 10**9
    assert resources_of_run(target, [0, 1, 2, 3], host(3, 32)).nano_cpus == 3 * 10**9


# -- creating, reading and deleting targets ---------------------------------------------------

NODE_ID = re.compile(r"tvmps_[0-9a-f]{32}_[dp]")


def test_create_starts_min_nodes_idle_nodes_at_once(targets):
    created = targets.create(spec(vm_size="standard_d2_v2", min_nodes=2, max_nodes=3))

    assert created == spec(vm_size="STANDARD_D2_V2", min_nodes=2, max_nodes=3)
    nodes = nodes_of(targets, "cpu")
    assert [(node["slot"], node["state"], node["run_id"]) for node in nodes] == [
        (0, "idle", None), (1, "idle", None)]
    assert all(NODE_ID.fullmatch(node["node_id"]) and node["node_id"].endswith("_d")
               for node in nodes)


def test_low_priority_nodes_are_named_as_azure_names_them(targets):
    targets.create(spec(min_nodes=1, vm_priority="lowpriority"))

    assert nodes_of(targets, "cpu")[0]["node_id"].endswith("_p")


def test_get_reads_back_the_created_spec_and_names_lists_local_first(targets):
    for name in ("zeta", "alpha"):
        targets.create(spec(name=name, idle_seconds_before_scaledown=60, allow_overcommit=True))

    assert targets.get("zeta") == spec(name="zeta", idle_seconds_before_scaledown=60,
                                       allow_overcommit=True)
    assert targets.get(LOCAL_TARGET) == local_target()
    assert targets.names() == [LOCAL_TARGET, "alpha", "zeta"]


def test_an_unknown_target_and_a_second_create_are_refused(targets):
    with pytest.raises(ComputeTargetError, match="no compute target named 'cpu'"):
        targets.get("cpu")
    targets.create(spec())

    with pytest.raises(ComputeTargetError, match="compute target 'cpu' already exists"):
        targets.create(spec(max_nodes=1))
    assert targets.get("cpu").max_nodes == 2


def test_create_validates_against_its_host(store):
    with pytest.raises(UserInputError, match="--allow-overcommit"):
        ComputeTargets(store, host=SMALL_HOST).create(spec(max_nodes=3))

    assert ComputeTargets(store, host=SMALL_HOST).names() == [LOCAL_TARGET]


def test_status_has_exactly_the_shape_of_amlcompute_status(targets):
    before = time.time()
    targets.create(spec(vm_size="standard_ds3_v2", min_nodes=1, max_nodes=4,
                        vm_priority="lowpriority"))

    status = targets.status("cpu")

    for stamp in ("creationTime", "modifiedTime"):
        moment = datetime.datetime.fromisoformat(status.pop(stamp))
        assert moment.tzinfo is not None
        assert before - 1 <= moment.timestamp() <= time.time()
    assert status == {
        "currentNodeCount": 1,
        "targetNodeCount": 1,
        "nodeStateCounts": {"preparingNodeCount": 0, "runningNodeCount": 0, "idleNodeCount": 1,
                            "unusableNodeCount": 0, "leavingNodeCount": 0,
                            "preemptedNodeCount": 0},
        "allocationState": "Steady",
        "allocationStateTransitionTime": None,
        "errors": None,
        "provisioningState": "Succeeded",
        "provisioningStateTransitionTime": None,
        "scaleSettings": {"minNodeCount": 1, "maxNodeCount": 4,
                          "nodeIdleTimeBeforeScaleDown": "PT1800S"},
        "vmPriority": "LowPriority",
        "vmSize": "STANDARD_DS3_V2",
    }
    assert targets.status(LOCAL_TARGET)["vmPriority"] == "Dedicated"


def test_describe_shows_the_node_size_nodes_queue_and_status(store, targets):
    targets.create(spec(vm_size="STANDARD_NC6", max_nodes=1))
    running, waiting = submit(store, targets), submit(store, targets)
    [node_id] = allocated(targets, running)

    described = targets.describe("cpu")

    assert described["node_size"] == {"cores": 6, "memory_gib": 56, "gpus": 1, "gpu_model": "K80"}
    assert described["nodes"] == [{"node_id": node_id, "slot": 0, "state": "running",
                                   "run_id": running}]
    assert described["queue"] == [waiting]
    assert described["status"]["nodeStateCounts"]["runningNodeCount"] == 1
    assert targets.describe(LOCAL_TARGET)["node_size"] == {"host": ROOMY_HOST.describe()}


def test_status_counts_follow_a_run_through_the_target(store, targets):
    targets.create(spec(max_nodes=2, idle_seconds_before_scaledown=60))

    def counts():
        status = targets.status("cpu")
        return (status["currentNodeCount"], status["targetNodeCount"], status["allocationState"],
                status["nodeStateCounts"]["runningNodeCount"],
                status["nodeStateCounts"]["idleNodeCount"])

    assert counts() == (0, 0, "Steady", 0, 0)
    run_id = submit(store, targets, node_count=2)
    assert counts() == (0, 2, "Resizing", 0, 0)  # the queued run will scale the target up
    allocated(targets, run_id)
    assert counts() == (2, 2, "Steady", 2, 0)
    targets.release(run_id)
    assert counts() == (2, 2, "Steady", 0, 2)  # idle until scale-down, as Azure keeps them
    idle_for(store, "cpu", 61)
    assert counts() == (0, 0, "Steady", 0, 0)


def test_delete_is_refused_while_runs_are_active_and_removes_the_target_after(store, targets):
    targets.create(spec(min_nodes=1, max_nodes=1))
    running, queued = submit(store, targets), submit(store, targets)
    allocated(targets, running)

    with pytest.raises(ComputeTargetError,
                       match=f"'cpu' has 2 active run\\(s\\) \\({running}, {queued}\\)"):
        targets.delete("cpu")
    targets.release(running)
    with pytest.raises(ComputeTargetError, match=f"has 1 active run\\(s\\) \\({queued}\\)"):
        targets.delete("cpu")
    targets.release(queued)

    targets.delete("cpu")

    assert targets.names() == [LOCAL_TARGET]
    with pytest.raises(ComputeTargetError, match="no compute target named 'cpu'"):
        targets.get("cpu")
    targets.create(spec(max_nodes=1))  # the name is free again, with none of the old nodes
    assert nodes_of(targets, "cpu") == []


def test_local_and_unknown_targets_cannot_be_deleted(targets):
    with pytest.raises(UserInputError, match="'local' is the built-in target"):
        targets.delete(LOCAL_TARGET)
    with pytest.raises(ComputeTargetError, match="no compute target named 'gpu'"):
        targets.delete("gpu")


# -- the queue and the nodes ----------------------------------------------------------------

def test_a_run_is_refused_at_submission_if_the_target_can_never_give_it_its_nodes(store, targets):
    targets.create(spec(max_nodes=2))

    with pytest.raises(UserInputError,
                       match="requested 3 node\\(s\\) and compute target 'cpu' has at most 2"):
        submit(store, targets, node_count=3)
    with pytest.raises(ComputeTargetError, match="'gpu'"):
        submit(store, targets, target="gpu")

    assert queue_of(targets, "cpu") == []


def test_only_the_head_of_the_queue_gets_nodes(store, targets):
    targets.create(spec(max_nodes=2))
    first, second = submit(store, targets), submit(store, targets)

    assert targets.try_allocate(second) is None  # nodes are free, but `first` came first
    assert nodes_of(targets, "cpu") == []
    allocated(targets, first)
    allocated(targets, second)

    assert queue_of(targets, "cpu") == []
    with pytest.raises(AmlocalError, match=f"run {first} is not queued"):
        targets.try_allocate(first)


def test_a_smaller_run_never_overtakes_a_larger_one_waiting_ahead_of_it(store, targets):
    targets.create(spec(max_nodes=2))
    holder = submit(store, targets)
    allocated(targets, holder)
    big, small = submit(store, targets, node_count=2), submit(store, targets, node_count=1)

    assert targets.try_allocate(big) is None  # needs 2, one is free
    assert targets.try_allocate(small) is None  # one is free, but `big` is ahead
    targets.release(holder)
    assert targets.try_allocate(small) is None

    assert len(allocated(targets, big)) == 2
    assert targets.try_allocate(small) is None  # the target is full now
    targets.release(big)
    assert len(allocated(targets, small)) == 1


def test_idle_nodes_are_reused_before_new_ones_are_added(store, targets):
    targets.create(spec(min_nodes=1, max_nodes=3))
    [warm] = [node["node_id"] for node in nodes_of(targets, "cpu")]
    first = submit(store, targets)

    assert allocated(targets, first) == [warm]
    targets.release(first)
    second = submit(store, targets, node_count=2)
    second_nodes = allocated(targets, second)

    assert second_nodes[0] == warm and second_nodes[1] != warm
    assert len(nodes_of(targets, "cpu")) == 2
    recorded = store.get_run(second)["nodes"]
    assert [(node["node_id"], node["slot"]) for node in recorded] == [
        (warm, 0), (second_nodes[1], 1)]
    assert recorded[0]["allocated_at"] == recorded[1]["allocated_at"]  # in one transaction


def test_a_target_never_has_more_than_max_nodes(store, targets):
    targets.create(spec(max_nodes=2))
    runs = [submit(store, targets) for _ in range(3)]
    for run_id in runs[:2]:
        allocated(targets, run_id)

    assert targets.try_allocate(runs[2]) is None
    assert len(nodes_of(targets, "cpu")) == 2
    [freed] = store.get_run(runs[0])["nodes"]
    targets.release(runs[0])

    assert allocated(targets, runs[2]) == [freed["node_id"]]
    assert len(nodes_of(targets, "cpu")) == 2


def test_release_makes_the_nodes_idle_and_lets_the_next_run_go(store, targets):
    targets.create(spec(max_nodes=1))
    first, second = submit(store, targets), submit(store, targets)
    [node_id] = allocated(targets, first)
    assert targets.try_allocate(second) is None

    targets.release(first)

    assert nodes_of(targets, "cpu") == [{"node_id": node_id, "slot": 0, "state": "idle",
                                         "run_id": None}]
    assert targets.node_states(first) == []
    assert allocated(targets, second) == [node_id]
    assert targets.node_states(second) == ["running"]


def test_release_of_a_queued_run_takes_it_out_of_the_queue(store, targets):
    targets.create(spec(max_nodes=1))
    runs = [submit(store, targets) for _ in range(3)]

    targets.release(runs[1])

    assert queue_of(targets, "cpu") == [runs[0], runs[2]]


def end_run(store, run_id):
    store.set_status(run_id, "Preparing")
    store.set_status(run_id, "Queued")
    store.set_status(run_id, "Failed")


def orphan_run(store, run_id):
    store.update_run(run_id, driver_pid=dead_pid())


@pytest.mark.parametrize("make_stale", [end_run, orphan_run], ids=["ended", "driver-died"])
def test_runs_that_ended_or_lost_their_driver_do_not_block_the_queue(store, targets, make_stale):
    targets.create(spec(max_nodes=1))
    stale, live = submit(store, targets), submit(store, targets)
    make_stale(store, stale)

    assert len(allocated(targets, live)) == 1

    assert queue_of(targets, "cpu") == []


def test_a_run_with_a_living_driver_keeps_its_place(store, targets):
    targets.create(spec(max_nodes=1))
    first, second = submit(store, targets), submit(store, targets)
    store.update_run(first, driver_pid=os.getpid())

    assert targets.try_allocate(second) is None
    assert queue_of(targets, "cpu") == [first, second]


def test_waiting_detail_says_how_many_nodes_and_how_many_runs_are_ahead(store, targets):
    targets.create(spec(max_nodes=2))
    running = submit(store, targets, node_count=2)
    head, behind = submit(store, targets, node_count=1), submit(store, targets, node_count=2)
    allocated(targets, running)

    assert targets.waiting_detail(running) == ""  # not waiting any more
    assert targets.waiting_detail(head) == "Run requested 1 node(s). Run is in pending status."
    assert targets.waiting_detail(behind) == (
        "Run requested 2 node(s). Run is in pending status. 1 run(s) ahead in the queue of cpu.")


# -- scale-down -----------------------------------------------------------------------------

def run_on_every_node(store, targets, name, count):
    """Fill `count` nodes with runs, then release them all: `count` idle nodes."""
    runs = [submit(store, targets, name) for _ in range(count)]
    for run_id in runs:
        allocated(targets, run_id)
    for run_id in runs:
        targets.release(run_id)


def node_count_and_idle(targets, name):
    status = targets.status(name)
    return status["currentNodeCount"], status["nodeStateCounts"]["idleNodeCount"]


def test_idle_nodes_stay_until_their_idle_time_is_up(store, targets):
    targets.create(spec(max_nodes=3, idle_seconds_before_scaledown=60))
    run_on_every_node(store, targets, "cpu", 3)

    idle_for(store, "cpu", 30)
    assert node_count_and_idle(targets, "cpu") == (3, 3)
    idle_for(store, "cpu", 61)
    assert node_count_and_idle(targets, "cpu") == (0, 0)
    assert nodes_of(targets, "cpu") == []


def test_scale_down_keeps_min_nodes(store, targets):
    targets.create(spec(min_nodes=1, max_nodes=3, idle_seconds_before_scaledown=60))
    run_on_every_node(store, targets, "cpu", 3)

    idle_for(store, "cpu", 61)

    assert node_count_and_idle(targets, "cpu") == (1, 1)


def test_scale_down_never_removes_a_node_that_runs_something(store, targets):
    targets.create(spec(max_nodes=2, idle_seconds_before_scaledown=0))
    busy, done = submit(store, targets), submit(store, targets)
    allocated(targets, busy)
    allocated(targets, done)
    targets.release(done)  # idle: with no idle time, it goes at the next look

    assert [(node["state"], node["run_id"]) for node in nodes_of(targets, "cpu")] == [
        ("running", busy)]


def test_scale_down_happens_when_the_next_run_is_placed(store, targets):
    targets.create(spec(max_nodes=2, idle_seconds_before_scaledown=60))
    run_on_every_node(store, targets, "cpu", 2)
    idle_for(store, "cpu", 61)
    later = submit(store, targets)

    allocated(targets, later)

    with store.transaction() as conn:  # read the table itself: status() would scale down too
        assert conn.execute("SELECT COUNT(*) FROM nodes WHERE target = 'cpu'").fetchone()[0] == 1


# -- preemption -----------------------------------------------------------------------------

def test_only_low_priority_nodes_are_preempted(store, targets):
    targets.create(spec(max_nodes=1))
    allocated(targets, submit(store, targets))

    with pytest.raises(ComputeTargetError, match="'cpu' is dedicated"):
        targets.preempt("cpu")


def test_preempt_marks_the_runs_nodes_and_release_removes_them(store, targets):
    targets.create(spec(max_nodes=3, vm_priority="lowpriority"))
    hit, spared = submit(store, targets, node_count=2), submit(store, targets)
    allocated(targets, hit)
    allocated(targets, spared)

    assert targets.preempt("cpu", hit) == [hit]

    assert targets.node_states(hit) == ["preempted", "preempted"]
    assert targets.node_states(spared) == ["running"]
    assert targets.status("cpu")["nodeStateCounts"]["preemptedNodeCount"] == 2
    targets.release(hit)
    assert [node["run_id"] for node in nodes_of(targets, "cpu")] == [spared]


def test_preempt_without_a_run_takes_every_running_run(store, targets):
    targets.create(spec(max_nodes=2, vm_priority="lowpriority"))
    runs = [submit(store, targets) for _ in range(2)]
    for run_id in runs:
        allocated(targets, run_id)

    assert sorted(targets.preempt("cpu")) == sorted(runs)
    assert all(targets.node_states(run_id) == ["preempted"] for run_id in runs)


def test_preempting_a_run_that_is_not_running_there_is_refused(store, targets):
    targets.create(spec(max_nodes=1, vm_priority="lowpriority"))
    queued = submit(store, targets)

    with pytest.raises(ComputeTargetError, match=f"run {queued} is not running on 'cpu'"):
        targets.preempt("cpu", queued)


def preempt_and_requeue(targets, run_ids):
    """What the drivers of preempted runs do: give the nodes back and queue again, first."""
    for run_id in run_ids:
        targets.release(run_id)
        targets.requeue_first(run_id)


def test_a_preempted_run_goes_back_ahead_of_everything_queued(store, targets):
    targets.create(spec(max_nodes=2, vm_priority="lowpriority"))
    preempted = submit(store, targets, node_count=2)
    allocated(targets, preempted)
    waiting = [submit(store, targets) for _ in range(2)]
    targets.preempt("cpu")

    preempt_and_requeue(targets, [preempted])

    assert queue_of(targets, "cpu") == [preempted, *waiting]
    assert targets.try_allocate(waiting[0]) is None
    assert len(allocated(targets, preempted)) == 2


def test_several_preempted_runs_can_all_go_back_to_the_queue(store, targets):
    targets.create(spec(max_nodes=2, vm_priority="lowpriority"))
    runs = [submit(store, targets) for _ in range(2)]
    for run_id in runs:
        allocated(targets, run_id)
    targets.preempt("cpu")

    preempt_and_requeue(targets, runs)  # into an empty queue, one after the other

    assert queue_of(targets, "cpu") == runs[::-1]
    later = submit(store, targets)
    assert queue_of(targets, "cpu") == [*runs[::-1], later]


# -- several processes ----------------------------------------------------------------------

WORKER = """
import json, os, sys, time
from amlocal.backends.local.compute import ComputeTargets, HostResources
from amlocal.backends.history.store import RunStore
home, run_ids, record, go = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
host = HostResources(cores=tuple(range(64)), memory_bytes=512 * 2**30, gpus=())
targets = ComputeTargets(RunStore(home), host=host)
while not os.path.exists(go):
    time.sleep(0.005)
held = []
for run_id in run_ids:  # in submission order, as one terminal submits and waits
    deadline = time.monotonic() + 30
    while not (nodes := targets.try_allocate(run_id)):
        if time.monotonic() > deadline:
            sys.exit(f"{run_id} waited 30 s for nodes")
        time.sleep(0.002)
    start = time.time()  # after the allocation committed
    time.sleep(0.03)
    end = time.time()  # before the release commits
    targets.release(run_id)
    held += [[run_id, node_id, start, end] for node_id, _slot in nodes]
with open(record, "w") as handle:
    json.dump(held, handle)
"""

# Logs allocations in commit order, inside try_allocate's own transaction (the only writer of
# runs.nodes): timestamps taken by the workers after the fact could not order two of them.
ALLOCATION_LOG = """
CREATE TABLE allocation_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL);
CREATE TRIGGER log_allocation AFTER UPDATE OF nodes ON runs
BEGIN INSERT INTO allocation_log (run_id) VALUES (NEW.id); END;
"""


def log_allocations(store):
    with closing(sqlite3.connect(store.db_path)) as conn:
        conn.executescript(ALLOCATION_LOG)


def allocation_order(store):
    with closing(sqlite3.connect(store.db_path)) as conn:
        return [run_id for (run_id,) in conn.execute(
            "SELECT run_id FROM allocation_log ORDER BY seq")]


def run_workers(home, runs_per_worker, tmp_path):
    """One process per run list; all start at once; return every (run, node, start, end) held."""
    go = tmp_path / "go"
    records = [tmp_path / f"worker-{index}.json" for index in range(len(runs_per_worker))]
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, str(home), json.dumps(run_ids),
                                   str(record), str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for run_ids, record in zip(runs_per_worker, records)]
    try:
        time.sleep(0.5)  # let every interpreter start and wait for the go file
        go.touch()
        for process in processes:
            _stdout, stderr = process.communicate(timeout=60)
            assert process.returncode == 0, stderr
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [tuple(held) for record in records for held in json.loads(record.read_text())]


def most_at_once(intervals):
    """The largest number of (start, end) intervals that overlap at one moment."""
    events = sorted([(start, 1) for start, _end in intervals]
                    + [(end, -1) for _start, end in intervals])
    most = current = 0
    for _moment, change in events:  # at a tie an end (-1) sorts before a start
        current += change
        most = max(most, current)
    return most


def test_four_processes_share_a_target_without_sharing_a_node_and_in_queue_order(
        store, targets, tmp_path):
    targets.create(spec(max_nodes=2))
    log_allocations(store)
    node_counts = [2 if index % 5 == 2 else 1 for index in range(16)]
    submitted = [submit(store, targets, node_count=count) for count in node_counts]

    held = run_workers(store.home, [submitted[worker::4] for worker in range(4)], tmp_path)

    holds = {run_id: [(node, start, end) for run, node, start, end in held if run == run_id]
             for run_id in submitted}
    assert [len(holds[run_id]) for run_id in submitted] == node_counts
    nodes_used = {node for _run, node, _start, _end in held}
    assert len(nodes_used) == 2  # reused, never a third
    for node in nodes_used:
        assert most_at_once([(start, end) for _run, used, start, end in held
                             if used == node]) == 1, f"node {node} was held by two runs at once"
    assert most_at_once([run_holds[0][1:] for run_holds in holds.values()]) <= 2
    assert allocation_order(store) == submitted
    assert queue_of(targets, "cpu") == []


def test_status_times_are_written_as_run_details_write_times(targets):
    targets.create(spec(min_nodes=1, max_nodes=2))

    status = targets.status("cpu")

    # store.iso_time's format: UTC, milliseconds, "Z" (as startTimeUtc in run details).
    for stamp in ("creationTime", "modifiedTime"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", status[stamp]), status[stamp]
