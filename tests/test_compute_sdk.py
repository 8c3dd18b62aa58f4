"""azureml-core's Workspace / ComputeTarget / AmlCompute shapes over the local run history.

Everything runs against a real history in a fresh AMLOCAL_HOME, from a working folder without a
workspace configuration file (unless a test writes one).
"""

import ast
import json
import subprocess
import sys

import pytest

from amlocal import AmlCompute, ComputeTarget, ComputeTargetException, Workspace
from amlocal.backends.local.compute import ComputeTargets, host_resources
from amlocal.backends.history.store import RunStore
from amlocal.errors import AmlocalError
from amlocal.workspace import WorkspaceException

# The notebook idiom, as given, with only the import line changed to amlocal.
SEED = '''
from amlocal import Workspace, ComputeTarget, AmlCompute, ComputeTargetException
ws = Workspace.from_config()
try:
    compute_target = ComputeTarget(workspace=ws, name="gpu-cluster")
    print('Found existing compute target.')
except ComputeTargetException:
    print('Creating a new compute target...')
    compute_config = AmlCompute.provisioning_configuration(vm_size='STANDARD_NC6', max_nodes=4)
    compute_target = ComputeTarget.create(ws, "gpu-cluster", compute_config)
    compute_target.wait_for_completion(show_output=True)
print(compute_target.get_status().serialize())
'''
# The seed on a host of any size: amlocal's two extensions, for a host too small for 4 x NC6.
SEED_ANY_HOST = SEED.replace("max_nodes=4)", "max_nodes=4, allow_overcommit=True, emulate_gpus=True)")

# azureml-core 1.61's AmlComputeStatus.serialize, AmlComputeNodeStateCounts.serialize and
# ScaleSettings.serialize keys, in their order.
AZURE_STATUS_KEYS = ["currentNodeCount", "targetNodeCount", "nodeStateCounts", "allocationState",
                     "allocationStateTransitionTime", "errors", "creationTime", "modifiedTime",
                     "provisioningState", "provisioningStateTransitionTime", "scaleSettings",
                     "vmPriority", "vmSize"]
AZURE_NODE_COUNT_KEYS = ["preparingNodeCount", "runningNodeCount", "idleNodeCount",
                         "unusableNodeCount", "leavingNodeCount", "preemptedNodeCount"]
AZURE_SCALE_KEYS = ["minNodeCount", "maxNodeCount", "nodeIdleTimeBeforeScaleDown"]

CREATED_OUTPUT = ('Creating.\nSucceededProvisioning operation finished, operation "Succeeded"\n'
                  "Succeeded\nAmlCompute wait for completion finished\n\n"
                  "Minimum number of nodes requested have been provisioned\n")


@pytest.fixture
def ws(amlocal_home, tmp_path, monkeypatch):
    """The local workspace, from a working folder with no config.json in it or above it."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return Workspace.from_config()


def small_target(ws, name="cpu", **settings):
    """A target that fits any host (overcommit lets its node be bigger than the host)."""
    settings = {"vm_size": "STANDARD_D1_V2", "max_nodes": 2, "allow_overcommit": True, **settings}
    return ComputeTarget.create(ws, name, AmlCompute.provisioning_configuration(**settings))


def queued_run(target_name):
    store = RunStore()
    run_id = store.create_run(experiment="compute-sdk", executor="process", compute=target_name,
                              spec={"script": "train.py", "node_count": 1},
                              fill_snapshot=lambda folder: folder.mkdir())
    with store.transaction() as conn:
        ComputeTargets(store).enqueue(conn, run_id, target_name, 1)
    return run_id


# -- the seed -------------------------------------------------------------------------------------

def test_seed_creates_the_target_then_finds_it(ws, capsys):
    exec(SEED_ANY_HOST, {})
    first = capsys.readouterr().out
    exec(SEED_ANY_HOST, {})
    second = capsys.readouterr().out

    assert first.startswith("Creating a new compute target...\n" + CREATED_OUTPUT)
    assert second.startswith("Found existing compute target.\n")
    for output in (first, second):
        status = ast.literal_eval(output.splitlines()[-1])
        assert list(status) == AZURE_STATUS_KEYS
        assert list(status["nodeStateCounts"]) == AZURE_NODE_COUNT_KEYS
        assert status["scaleSettings"] == {"minNodeCount": 0, "maxNodeCount": 4,
                                           "nodeIdleTimeBeforeScaleDown": "PT1800S"}
        assert (status["vmSize"], status["vmPriority"]) == ("STANDARD_NC6", "Dedicated")
        assert (status["provisioningState"], status["allocationState"]) == ("Succeeded", "Steady")
        assert status["currentNodeCount"] == 0 and status["errors"] is None
    assert list(ws.compute_targets) == ["gpu-cluster"]


def test_seed_as_given_says_which_extension_this_host_needs(ws):
    host = host_resources()
    short_of_cpu = len(host.cores) < 24 or host.memory_bytes < 224 * 2**30  # 4 x (6 cores, 56 GiB)
    short_of_gpus = len(host.gpus) < 4
    if not (short_of_cpu or short_of_gpus):
        pytest.skip("this host holds 4 x STANDARD_NC6 as they are")

    with pytest.raises(ComputeTargetException) as raised:
        exec(SEED, {})

    message = raised.value.message
    assert ("allow_overcommit=True" in message) == short_of_cpu
    assert ("emulate_gpus=True" in message) == short_of_gpus
    assert "--" not in message  # the keyword arguments, not the CLI's flags
    assert ws.compute_targets == {}


def test_too_big_for_the_host_names_allow_overcommit(ws):
    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D1_V2", max_nodes=60000)

    with pytest.raises(ComputeTargetException, match="allow_overcommit=True") as raised:
        ComputeTarget.create(ws, "huge", config)

    assert "emulate_gpus" not in str(raised.value).split("pass ")[1].split(" to ")[0]
    assert small_target(ws, "huge", max_nodes=60000).scale_settings.maximum_node_count == 60000


def test_more_gpus_than_the_host_names_emulate_gpus(ws):
    nodes = len(host_resources().gpus) + 1
    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=nodes,
                                                   allow_overcommit=True)

    with pytest.raises(ComputeTargetException, match=r"pass emulate_gpus=True to") as raised:
        ComputeTarget.create(ws, "gpu", config)
    assert f"{nodes} node(s) of STANDARD_NC6" in str(raised.value)

    target = small_target(ws, "gpu", vm_size="STANDARD_NC6", max_nodes=nodes, emulate_gpus=True)
    assert target.emulate_gpus and target.allow_overcommit and target.vm_size == "STANDARD_NC6"


# -- status ---------------------------------------------------------------------------------------

def test_get_status_serializes_to_the_backends_status(ws):
    target = small_target(ws, min_nodes=1, idle_seconds_before_scaledown=60, vm_priority="lowpriority")

    status = target.get_status()

    assert status.serialize() == ComputeTargets(RunStore()).status("cpu")
    assert list(status.serialize()) == AZURE_STATUS_KEYS
    assert status.current_node_count == 1 and status.target_node_count == 1
    assert status.node_state_counts.idle_node_count == 1
    assert status.node_state_counts.running_node_count == 0
    assert status.scale_settings.minimum_node_count == 1
    assert status.scale_settings.idle_seconds_before_scaledown == 60
    assert (status.vm_size, status.vm_priority) == ("STANDARD_D1_V2", "LowPriority")
    assert status.creation_time.tzinfo is not None and status.provisioning_state == "Succeeded"


def test_status_follows_runs_on_the_target(ws):
    target = small_target(ws)
    run_id = queued_run("cpu")
    assert ComputeTargets(RunStore()).try_allocate(run_id)

    status = target.get_status()

    assert status.current_node_count == 1 and status.node_state_counts.running_node_count == 1
    nodes = target.list_nodes()
    assert [(node["nodeState"], node["runId"]) for node in nodes] == [("running", run_id)]
    assert nodes[0]["nodeId"].startswith("tvmps_") and nodes[0]["nodeId"].endswith("_d")


def test_the_target_object_has_azureml_cores_attributes(ws):
    created = small_target(ws, min_nodes=1)
    found = ComputeTarget(workspace=ws, name="cpu")

    for target in (created, found, AmlCompute(ws, "cpu")):
        assert type(target) is AmlCompute
        assert (target.name, target.type, target.vm_size) == ("cpu", "AmlCompute", "STANDARD_D1_V2")
        assert target.provisioning_state == "Succeeded" and target.vm_priority == "Dedicated"
        assert target.scale_settings.serialize() == {"minNodeCount": 1, "maxNodeCount": 2,
                                                     "nodeIdleTimeBeforeScaleDown": "PT1800S"}
        assert target.workspace is ws
    assert [target.name for target in ComputeTarget.list(ws)] == ["cpu"]
    assert [node["nodeState"] for node in found.list_nodes()] == ["idle"]
    assert "AmlCompute(workspace=" in repr(found) and "name=cpu" in repr(found)


def test_vm_size_defaults_to_standard_nc6(ws):
    target = small_target(ws, vm_size="", emulate_gpus=True)
    assert target.vm_size == "STANDARD_NC6"


# -- waiting --------------------------------------------------------------------------------------

def test_wait_for_completion_is_silent_without_show_output(ws, capsys):
    small_target(ws).wait_for_completion()
    assert capsys.readouterr().out == ""


def test_wait_for_completion_of_a_found_target_reports_the_nodes_only(ws, capsys):
    small_target(ws, min_nodes=1)
    ComputeTarget(ws, "cpu").wait_for_completion(show_output=True)

    assert capsys.readouterr().out == ("Succeeded\nAmlCompute wait for completion finished\n\n"
                                       "Minimum number of nodes requested have been provisioned\n")


def test_wait_for_completion_times_out_waiting_for_nodes(ws, capsys):
    target = small_target(ws)
    capsys.readouterr()

    target.wait_for_completion(show_output=True, min_node_count=1, timeout_in_minutes=0.01)

    output = capsys.readouterr().out
    assert output.startswith('Creating.\nSucceededProvisioning operation finished, operation "Succeeded"\nSucceeded')
    assert output.endswith("AmlCompute wait for completion finished\n\nWait timeout has been reached\n"
                           'Current provisioning state of AmlCompute is "Succeeded" and current '
                           'node count is "0"\n')


# -- errors ---------------------------------------------------------------------------------------

def test_a_missing_target_raises_compute_target_exception(ws):
    with pytest.raises(ComputeTargetException, match="ComputeTargetNotFound: Compute Target with "
                                                     "name nope not found in provided workspace"):
        ComputeTarget(workspace=ws, name="nope")
    with pytest.raises(ComputeTargetException, match="built-in target"):
        ComputeTarget(ws, "local")  # not a workspace compute target, as on Azure
    assert issubclass(ComputeTargetException, AmlocalError) and ComputeTargetException.exit_code == 2


@pytest.mark.parametrize("settings, message", [
    ({"vm_size": "STANDARD_D1_V2"}, "max nodes count is mandatory"),
    ({"max_nodes": 1, "min_nodes": 2}, "max nodes count must be greater than or equal to min nodes"),
    ({"max_nodes": -1}, "max nodes count must be greater than or equal to 0"),
    ({"max_nodes": 1, "admin_user_password": "x"}, "admin username must be provided"),
    ({"max_nodes": 1, "vnet_name": "net"}, "not all virtual net information provided"),
])
def test_provisioning_configuration_validates_as_azureml_core(settings, message):
    with pytest.raises(ComputeTargetException, match=message):
        AmlCompute.provisioning_configuration(**settings)


def test_meaningless_settings_are_accepted(ws):
    config = AmlCompute.provisioning_configuration(
        vm_size="STANDARD_D1_V2", max_nodes=1, admin_username="azureuser", admin_user_ssh_key="ssh-rsa AAA",
        vnet_resourcegroup_name="rg", vnet_name="net", subnet_name="default", tags={"team": "vision"},
        description="d", remote_login_port_public_access="Disabled", identity_type="SystemAssigned",
        location="westeurope", enable_node_public_ip=False, allow_overcommit=True)
    assert ComputeTarget.create(ws, "cpu", config).name == "cpu"


@pytest.mark.parametrize("name, message", [
    ("local", "local is a reserved name"), ("amlcompute", "amlcompute is a reserved name"),
    ("9lives", "invalid compute name"),
])
def test_create_refuses_reserved_and_invalid_names(ws, name, message):
    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D1_V2", max_nodes=1)
    with pytest.raises(ComputeTargetException, match=message):
        ComputeTarget.create(ws, name, config)


def test_create_refuses_a_taken_name_and_an_unknown_size(ws):
    small_target(ws)
    with pytest.raises(ComputeTargetException, match="compute target 'cpu' already exists"):
        small_target(ws)
    with pytest.raises(ComputeTargetException, match="unknown VM size 'STANDARD_X9'"):
        small_target(ws, "other", vm_size="STANDARD_X9")
    with pytest.raises(ComputeTargetException, match="can create AmlCompute targets only"):
        ComputeTarget.create(ws, "other", {"vm_size": "STANDARD_D1_V2"})


def test_update_and_detach_say_what_to_do_instead(ws):
    target = small_target(ws)
    with pytest.raises(ComputeTargetException, match="delete the target and create it again"):
        target.update(max_nodes=3)
    with pytest.raises(ComputeTargetException, match="Try to use delete instead"):
        target.detach()


# -- delete ---------------------------------------------------------------------------------------

def test_delete_removes_the_target(ws, capsys):
    target = small_target(ws, min_nodes=1)
    capsys.readouterr()

    target.delete()
    target.wait_for_completion(show_output=True, is_delete_operation=True)

    assert capsys.readouterr().out == ('Deleting.\nSucceededProvisioning operation finished, '
                                       'operation "Succeeded"\n')
    assert target.provisioning_state == "Deleting"
    assert ws.compute_targets == {}
    with pytest.raises(ComputeTargetException, match="ComputeTargetNotFound"):
        target.get_status()


def test_delete_is_refused_while_a_run_waits_for_the_target(ws):
    target = small_target(ws)
    run_id = queued_run("cpu")

    with pytest.raises(ComputeTargetException, match=f"1 active run\\(s\\) \\({run_id}\\)"):
        target.delete()
    assert list(ws.compute_targets) == ["cpu"]


# -- the workspace --------------------------------------------------------------------------------

def test_without_a_config_file_the_workspace_is_local(ws, amlocal_home):
    assert (ws.name, ws.subscription_id, ws.resource_group, ws.location) == (
        "local", "00000000-0000-0000-0000-000000000000", "amlocal", "local")
    assert ws._home == amlocal_home
    assert ws.compute_targets == {}
    assert Workspace.get("local").name == "local"


def azure_config(folder, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    config = {"subscription_id": "00000000-1111-2222-3333-444444444444",
              "resource_group": "ml-rg", "workspace_name": "ml-ws", **extra}
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "config.json"


def test_a_config_file_naming_an_azure_workspace_gives_that_workspace(amlocal_home, tmp_path,
                                                                       monkeypatch):
    pytest.importorskip("azureml.core")  # without the azure extra: test_azure_backend.py
    found = azure_config(tmp_path / "project" / ".azureml")
    nested = tmp_path / "project" / "src" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)  # found from a subfolder, in .azureml/ of a parent, as azureml-core does

    ws = Workspace.from_config()

    assert (ws.name, ws.subscription_id, ws.resource_group) == (
        "ml-ws", "00000000-1111-2222-3333-444444444444", "ml-rg")
    assert ws._azure_config == str(found)
    assert type(ws._backend()).__name__ == "AzureBackend"  # runs submitted here go to Azure ML
    assert ws._home == amlocal_home


def test_from_config_takes_a_path_or_a_file(amlocal_home, tmp_path, monkeypatch):
    pytest.importorskip("azureml.core")
    monkeypatch.chdir(tmp_path)
    config_file = azure_config(tmp_path / "elsewhere")
    assert Workspace.from_config(path=str(config_file)).name == "ml-ws"
    assert Workspace.from_config(path=str(tmp_path / "elsewhere")).name == "ml-ws"
    scoped = tmp_path / "scoped"
    scoped.mkdir()
    (scoped / "ws.json").write_text(json.dumps({"Scope": "/subscriptions/sub/resourceGroups/rg/providers/"
                                                         "Microsoft.MachineLearningServices/workspaces/ws"}))
    ws = Workspace.from_config(path=str(scoped), _file_name="ws.json")
    assert (ws.name, ws.subscription_id, ws.resource_group) == ("ws", "sub", "rg")
    assert Workspace.from_config(path=str(tmp_path)).name == "local"  # nothing at or above tmp_path


def test_unusable_config_files_are_errors(amlocal_home, tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WorkspaceException, match="cannot read the workspace configuration file"):
        Workspace.from_config(path=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"workspace_name": "ws"}))
    with pytest.raises(WorkspaceException, match="does not seem to contain the required parameters"):
        Workspace.from_config(path=str(tmp_path))


def test_workspace_get_refuses_azure_and_other_names(amlocal_home):
    with pytest.raises(WorkspaceException, match="names an Azure ML workspace: amlocal reaches one "
                                                 "through its configuration file"):
        Workspace.get("ml-ws", subscription_id="sub", resource_group="rg")
    with pytest.raises(WorkspaceException, match="no workspace named 'ml-ws'"):
        Workspace.get("ml-ws")
    with pytest.raises(WorkspaceException, match="Workspace.from_config\\(\\) with the workspace's "
                                                 "config.json"):
        Workspace("sub", "rg", "ml-ws")


def test_compute_targets_needs_an_amlocal_workspace(amlocal_home):
    with pytest.raises(ComputeTargetException, match="need amlocal's Workspace"):
        ComputeTarget(workspace="not-a-workspace", name="cpu")


# -- importing ------------------------------------------------------------------------------------

def test_importing_amlocal_and_its_azureml_names_imports_no_docker():
    code = ("import sys, amlocal\n"
            "assert 'docker' not in sys.modules and 'amlocal.compute' not in sys.modules\n"
            "from amlocal import Workspace, ComputeTarget, AmlCompute, ComputeTargetException\n"
            "assert 'docker' not in sys.modules\n"
            "assert {'Workspace', 'ComputeTarget'} <= set(dir(amlocal))\n"
            "try:\n    amlocal.NoSuchName\nexcept AttributeError:\n    print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
