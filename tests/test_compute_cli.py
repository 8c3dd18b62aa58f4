"""`amlocal compute ...` through CliRunner, against a real run history in a fresh AMLOCAL_HOME.

Runs that use a target are made the way the backend makes them: a run record from
RunStore.create_run, queued with ComputeTargets.enqueue inside one store transaction, and given
nodes with try_allocate. No Docker and no script is needed for that.
"""

import json

import pytest
from click.testing import CliRunner

from amlocal.backends.local.compute import VM_SIZES, ComputeTargets, host_resources
from amlocal.backends.history.store import RunStore
from amlocal.cli.main import cli

STATUS_KEYS = ["currentNodeCount", "targetNodeCount", "nodeStateCounts", "allocationState",
               "allocationStateTransitionTime", "errors", "creationTime", "modifiedTime",
               "provisioningState", "provisioningStateTransitionTime", "scaleSettings",
               "vmPriority", "vmSize"]
DESCRIBE_KEYS = {"name", "vm_size", "vm_priority", "min_nodes", "max_nodes",
                 "idle_seconds_before_scaledown", "allow_overcommit", "emulate_gpus", "node_size",
                 "nodes", "queue", "status"}
# Sizes chosen to work on any host: overcommit lets a node be bigger than the host.
CPU_TARGET = ["--vm-size", "STANDARD_D1_V2", "--allow-overcommit"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def json_of(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_error(result, *fragments, exit_code=2):
    """One line, `Error: ...`, on stderr, with the exit code for bad input."""
    assert result.exit_code == exit_code, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.fixture
def store(amlocal_home):
    return RunStore()  # the history the CLI uses, found through AMLOCAL_HOME


def queued_run(store, target, node_count=1):
    """A run record queued for `target`, as the backend creates one."""
    run_id = store.create_run(experiment="compute-cli", executor="process", compute=target,
                              spec={"script": "train.py", "node_count": node_count},
                              fill_snapshot=lambda folder: folder.mkdir())
    with store.transaction() as conn:
        ComputeTargets(store).enqueue(conn, run_id, target, node_count)
    return run_id


def running_run(store, target, node_count=1):
    """A run that holds nodes of `target` (it was at the head of the queue and got them)."""
    run_id = queued_run(store, target, node_count)
    assert ComputeTargets(store).try_allocate(run_id)
    return run_id


# -- create ---------------------------------------------------------------------------------------

def test_create_json_describes_the_new_target(store):
    result = invoke("compute", "create", "cpu-cluster", *CPU_TARGET, "--max-nodes", 3,
                    "--min-nodes", 1, "--idle-seconds-before-scaledown", 120,
                    "--vm-priority", "lowpriority", "--json")

    described = json_of(result)
    assert set(described) == DESCRIBE_KEYS
    assert described["name"] == "cpu-cluster" and described["vm_size"] == "STANDARD_D1_V2"
    assert (described["min_nodes"], described["max_nodes"]) == (1, 3)
    assert described["vm_priority"] == "lowpriority" and described["allow_overcommit"] is True
    assert described["node_size"] == {"cores": 1, "memory_gib": 3.5, "gpus": 0, "gpu_model": None}
    assert [node["state"] for node in described["nodes"]] == ["idle"]  # min_nodes made at once
    assert list(described["status"]) == STATUS_KEYS
    assert described["status"]["scaleSettings"] == {"minNodeCount": 1, "maxNodeCount": 3,
                                                    "nodeIdleTimeBeforeScaleDown": "PT120S"}
    assert described["status"]["vmPriority"] == "LowPriority"
    assert described == json_of(invoke("compute", "show", "cpu-cluster", "--json"))


def test_create_without_json_says_what_was_made(store):
    result = invoke("compute", "create", "cpu", *CPU_TARGET, "--max-nodes", 2)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Created compute target cpu: 0 to 2 node(s) of STANDARD_D1_V2")
    assert "overcommit allowed" in result.stdout


def test_size_names_are_case_insensitive(store):
    described = json_of(invoke("compute", "create", "cpu", "--vm-size", "standard_d1_v2",
                               "--allow-overcommit", "--max-nodes", 1, "--json"))
    assert described["vm_size"] == "STANDARD_D1_V2"


@pytest.mark.parametrize("args, fragments", [
    (["bad-size", "--vm-size", "STANDARD_X99", "--max-nodes", 1],
     ["unknown VM size 'STANDARD_X99'", "STANDARD_D1_V2"]),
    (["minmax", *CPU_TARGET, "--max-nodes", 1, "--min-nodes", 2],
     ["max_nodes (1) must be at least min_nodes (2)"]),
    (["zero", *CPU_TARGET, "--max-nodes", 0], ["max_nodes must be at least 1"]),
    (["9starts-with-digit", *CPU_TARGET, "--max-nodes", 1], ["invalid compute name"]),
    (["has_underscore", *CPU_TARGET, "--max-nodes", 1], ["invalid compute name"]),
    (["much-too-long-for-azure", *CPU_TARGET, "--max-nodes", 1], ["invalid compute name"]),
    (["local", *CPU_TARGET, "--max-nodes", 1], ["'local' is the built-in target"]),
    (["idle", *CPU_TARGET, "--max-nodes", 1, "--idle-seconds-before-scaledown", -1],
     ["idle_seconds_before_scaledown cannot be negative"]),
])
def test_create_refuses_bad_input_in_one_line(store, args, fragments):
    assert_error(invoke("compute", "create", *args), *fragments)
    assert json_of(invoke("compute", "list", "--json"))[1:] == []  # nothing was created


def test_create_refuses_a_taken_name(store):
    assert invoke("compute", "create", "cpu", *CPU_TARGET, "--max-nodes", 1).exit_code == 0

    assert_error(invoke("compute", "create", "cpu", *CPU_TARGET, "--max-nodes", 2),
                 "compute target 'cpu' already exists")
    assert json_of(invoke("compute", "show", "cpu", "--json"))["max_nodes"] == 1  # unchanged


def test_a_target_too_big_for_the_host_needs_allow_overcommit(store):
    cores = len(host_resources().cores)
    args = ["big", "--vm-size", "STANDARD_D1_V2", "--max-nodes", cores + 1]  # one core per node

    assert_error(invoke("compute", "create", *args), f"need {cores + 1} cores", "--allow-overcommit")
    described = json_of(invoke("compute", "create", *args, "--allow-overcommit", "--json"))
    assert described["max_nodes"] == cores + 1 and described["allow_overcommit"] is True


def test_a_gpu_size_beyond_the_hosts_gpus_needs_emulate_gpus(store):
    gpus = len(host_resources().gpus)
    args = ["gpu", "--vm-size", "STANDARD_NC6", "--max-nodes", gpus + 1, "--allow-overcommit"]

    assert_error(invoke("compute", "create", *args), f"need {gpus + 1} GPU(s)", "--emulate-gpus")
    described = json_of(invoke("compute", "create", *args, "--emulate-gpus", "--json"))
    assert described["emulate_gpus"] is True
    assert described["node_size"]["gpus"] == 1 and described["node_size"]["gpu_model"] == "K80"


def test_vm_priority_is_one_of_azures(store):
    result = invoke("compute", "create", "cpu", *CPU_TARGET, "--max-nodes", 1,
                    "--vm-priority", "spot")
    assert result.exit_code == 2 and "'spot' is not one of" in result.stderr


# -- list and show --------------------------------------------------------------------------------

def test_list_starts_with_local_and_counts_nodes_and_queued_runs(store):
    invoke("compute", "create", "busy", *CPU_TARGET, "--max-nodes", 1, "--min-nodes", 1)
    invoke("compute", "create", "quiet", "--vm-size", "STANDARD_NC6", "--max-nodes", 2,
           "--allow-overcommit", "--emulate-gpus", "--vm-priority", "lowpriority")
    running = running_run(store, "busy")
    waiting = queued_run(store, "busy")

    rows = json_of(invoke("compute", "list", "--json"))

    assert [row["name"] for row in rows] == ["local", "busy", "quiet"]
    local, busy, quiet = rows
    assert local["vm_size"] == "LOCAL" and local["max_nodes"] == 1
    assert busy["current_node_count"] == 1 and busy["queued_runs"] == 1
    assert busy["node_state_counts"] == {"preparing": 0, "running": 1, "idle": 0, "unusable": 0,
                                         "leaving": 0, "preempted": 0}
    assert quiet == {"name": "quiet", "vm_size": "STANDARD_NC6", "vm_priority": "lowpriority",
                     "min_nodes": 0, "max_nodes": 2, "current_node_count": 0,
                     "node_state_counts": dict.fromkeys(busy["node_state_counts"], 0),
                     "queued_runs": 0, "allow_overcommit": True, "emulate_gpus": True}

    text = invoke("compute", "list")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VM_SIZE", "PRIORITY", "MIN", "MAX", "NODES", "QUEUED"]
    assert lines[2].split() == ["busy", "STANDARD_D1_V2", "dedicated", "1", "1", "1", "running", "1"]

    shown = json_of(invoke("compute", "show", "busy", "--json"))
    assert shown["queue"] == [waiting]
    assert [(node["state"], node["run_id"]) for node in shown["nodes"]] == [("running", running)]


def test_list_on_a_fresh_history_shows_local_only(store):
    assert [row["name"] for row in json_of(invoke("compute", "list", "--json"))] == ["local"]


def test_show_text_has_settings_nodes_and_queue(store):
    invoke("compute", "create", "cpu", *CPU_TARGET, "--max-nodes", 2, "--min-nodes", 1)
    running = running_run(store, "cpu")
    waiting = queued_run(store, "cpu", node_count=2)

    result = invoke("compute", "show", "cpu")

    assert result.exit_code == 0, result.output
    assert "STANDARD_D1_V2 (1 cores, 3.5 GiB per node)" in result.stdout
    assert "Nodes:       1 to 2, scaled down after 1800 s idle" in result.stdout
    assert running in result.stdout and f"Queued runs, first to be served first: {waiting}" in result.stdout


def test_show_local_describes_the_host(store):
    described = json_of(invoke("compute", "show", "local", "--json"))
    assert described["node_size"] == {"host": host_resources().describe()}
    assert described["status"]["vmSize"] == "LOCAL"


# -- delete ---------------------------------------------------------------------------------------

def test_delete_removes_the_target(store):
    invoke("compute", "create", "cpu", *CPU_TARGET, "--max-nodes", 1, "--min-nodes", 1)

    result = invoke("compute", "delete", "cpu")

    assert result.exit_code == 0 and result.stdout == "Deleted compute target cpu\n"
    assert_error(invoke("compute", "show", "cpu"), "no compute target named 'cpu'")
    with store.transaction() as conn:  # its idle node went with it
        assert conn.execute("SELECT COUNT(*) FROM nodes WHERE target = 'cpu'").fetchone()[0] == 0


def test_delete_is_refused_while_a_run_is_queued_or_running(store):
    invoke("compute", "create", "cpu", *CPU_TARGET, "--max-nodes", 1)
    running = running_run(store, "cpu")
    waiting = queued_run(store, "cpu")

    assert_error(invoke("compute", "delete", "cpu"), "has 2 active run(s)", running, waiting)

    ComputeTargets(store).release(running)
    assert_error(invoke("compute", "delete", "cpu"), "has 1 active run(s)", waiting)
    ComputeTargets(store).release(waiting)
    assert invoke("compute", "delete", "cpu").exit_code == 0


def test_delete_is_refused_for_local(store):
    assert_error(invoke("compute", "delete", "local"), "'local' is the built-in target")


@pytest.mark.parametrize("command", [["show", "nope"], ["delete", "nope"], ["preempt", "nope"],
                                     ["preempt", "nope", "--run", "some-run"]])
def test_a_missing_target_is_an_error(store, command):
    assert_error(invoke("compute", *command), "no compute target named 'nope'")


# -- sizes ----------------------------------------------------------------------------------------

def test_sizes_lists_every_size_with_the_hosts_fit(store):
    host = host_resources()

    listing = json_of(invoke("compute", "sizes", "--json"))

    assert listing["host"] == {"cores": len(host.cores), "gpus": len(host.gpus),
                               "memory_gib": round(host.memory_bytes / 2**30, 1)}
    assert listing["nodes"] == 1
    rows = {row["vm_size"]: row for row in listing["sizes"]}
    assert set(rows) == set(VM_SIZES)
    nc6 = rows["STANDARD_NC6"]
    assert (nc6["cores"], nc6["memory_gib"], nc6["gpus"], nc6["gpu_model"]) == (6, 56, 1, "K80")
    for row in rows.values():
        assert row["fits"] == (row["needs"] == []) == (row["most_nodes_on_host"] >= 1)
        if row["gpus"] > len(host.gpus):
            assert "--emulate-gpus" in row["needs"] and row["most_nodes_on_host"] == 0


def test_what_sizes_says_is_what_create_does(store):
    """For each size, N nodes are created exactly with the flags `sizes --nodes N` names."""
    rows = json_of(invoke("compute", "sizes", "--nodes", 2, "--json"))["sizes"]

    for number, row in enumerate(rows):
        name = f"size-{number}"
        args = ["compute", "create", name, "--vm-size", row["vm_size"], "--max-nodes", 2]
        if row["needs"]:
            assert invoke(*args).exit_code == 2
            if len(row["needs"]) == 2:
                assert invoke(*args, row["needs"][0]).exit_code == 2
        assert invoke(*args, *row["needs"]).exit_code == 0, row
        assert row["fits"] == (row["most_nodes_on_host"] >= 2)


def test_sizes_text_names_the_host_and_the_flags(store):
    result = invoke("compute", "sizes", "--nodes", 10000)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"This host: {host_resources().describe()}"
    assert lines[1].split()[-1] == "10000_NODES_FIT"
    d1 = next(line for line in lines if line.startswith("STANDARD_D1_V2 "))
    assert d1.endswith("with --allow-overcommit")


# -- preempt --------------------------------------------------------------------------------------

def test_preempt_takes_the_nodes_of_running_runs(store):
    invoke("compute", "create", "spot", *CPU_TARGET, "--max-nodes", 3, "--vm-priority", "lowpriority")
    first = running_run(store, "spot")
    second = running_run(store, "spot", node_count=2)
    waiting = queued_run(store, "spot")

    result = json_of(invoke("compute", "preempt", "spot", "--run", second, "--json"))

    assert result == {"target": "spot", "preempted_runs": [second]}
    assert ComputeTargets(store).node_states(second) == ["preempted", "preempted"]
    assert ComputeTargets(store).node_states(first) == ["running"]

    result = json_of(invoke("compute", "preempt", "spot", "--json"))
    assert result["preempted_runs"] == [first]  # second's nodes are already gone
    status = json_of(invoke("compute", "show", "spot", "--json"))["status"]
    assert status["nodeStateCounts"]["preemptedNodeCount"] == 3
    assert status["nodeStateCounts"]["runningNodeCount"] == 0
    assert json_of(invoke("compute", "show", "spot", "--json"))["queue"] == [waiting]


def test_preempt_text_and_nothing_to_preempt(store):
    invoke("compute", "create", "spot", *CPU_TARGET, "--max-nodes", 1, "--vm-priority", "lowpriority")

    idle = invoke("compute", "preempt", "spot")
    assert idle.exit_code == 0 and idle.stdout == "No run is running on spot: nothing to preempt\n"
    assert json_of(invoke("compute", "preempt", "spot", "--json"))["preempted_runs"] == []

    run_id = running_run(store, "spot")
    result = invoke("compute", "preempt", "spot")
    assert result.exit_code == 0 and run_id in result.stdout
    assert "back to the head of the queue" in result.stdout


def test_preempt_is_refused_for_dedicated_targets_and_runs_elsewhere(store):
    invoke("compute", "create", "steady", *CPU_TARGET, "--max-nodes", 1)
    invoke("compute", "create", "spot", *CPU_TARGET, "--max-nodes", 1, "--vm-priority", "lowpriority")
    elsewhere = running_run(store, "steady")

    assert_error(invoke("compute", "preempt", "steady"), "'steady' is dedicated")
    assert_error(invoke("compute", "preempt", "local"), "'local' is the built-in target")
    assert_error(invoke("compute", "preempt", "spot", "--run", elsewhere),
                 f"run {elsewhere} is not running on 'spot'")
    assert ComputeTargets(store).node_states(elsewhere) == ["running"]


def test_compute_help_documents_preempt_as_the_checkpoint_knob(store):
    result = invoke("compute", "preempt", "--help")
    assert result.exit_code == 0
    assert "checkpoint/resume" in result.stdout and "low-priority" in result.stdout


def test_two_preempted_runs_both_go_back_in_the_queue(store):
    """Both runs of one `preempt` are requeued by their drivers (requeue_first once had seq 0 twice)."""
    invoke("compute", "create", "spot", *CPU_TARGET, "--max-nodes", 2, "--vm-priority", "lowpriority")
    first, second = running_run(store, "spot"), running_run(store, "spot")
    assert sorted(json_of(invoke("compute", "preempt", "spot", "--json"))["preempted_runs"]) == \
        sorted([first, second])
    targets = ComputeTargets(store)
    for run_id in (first, second):  # what each run's driver does when it sees the preemption
        targets.release(run_id)
        targets.requeue_first(run_id)

    assert set(json_of(invoke("compute", "show", "spot", "--json"))["queue"]) == {first, second}


# -- regressions -----------------------------------------------------------------------------------

def test_a_queue_row_of_an_ended_run_does_not_block_delete(store):
    invoke("compute", "create", "cpu", *CPU_TARGET, "--max-nodes", 1)
    ended = queued_run(store, "cpu")
    store.set_status(ended, "Failed", error="driver killed")

    result = invoke("compute", "delete", "cpu")

    assert result.exit_code == 0, result.stderr
