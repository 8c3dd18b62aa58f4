"""`ComputeTarget` and `AmlCompute` shaped as in azureml-core (SDK v1), over local compute targets.

The notebook idiom works unchanged, with only the imports pointing at amlocal:

    try:
        compute_target = ComputeTarget(workspace=ws, name="gpu-cluster")
    except ComputeTargetException:
        config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=4)
        compute_target = ComputeTarget.create(ws, "gpu-cluster", config)
        compute_target.wait_for_completion(show_output=True)
    print(compute_target.get_status().serialize())

A target is a set of node slots of this host (backends/local/compute.py): its VM size's cores,
memory and GPUs per node, checked against what the host has when the target is created. Two
amlocal extensions of `provisioning_configuration`, keyword-only, say what to do when the host is
too small: `allow_overcommit=True` lets the nodes share the host's cores and memory, and
`emulate_gpus=True` runs a GPU size on the CPU (the run sees no GPU). The rest of azureml-core's
signature (credentials, VNet, identity, tags, location, ...) is accepted and validated as
azureml-core validates it, then ignored: nothing local corresponds to it.

Creating is synchronous: the target exists when `ComputeTarget.create` returns, and
`wait_for_completion` reports the finished operation in azureml-core's words. Unlike azureml-core,
nothing is printed unless `show_output=True`.

The backend is imported on first use, so `from amlocal import ComputeTarget` stays cheap.
"""

import os
import sys
import time

from amlocal.compute_status import (AmlComputeNodeStateCounts, AmlComputeStatus,  # noqa: F401
                                    ScaleSettings)
from amlocal.errors import AmlocalError, UserInputError
from amlocal.validation import bounded_int

COMPUTE_TYPE = "AmlCompute"
# azureml-core refuses these names in ComputeTarget.create.
RESERVED_NAMES = ("amlcompute", "local", "containerinstance")
# The size azureml-core's documentation names as the default when vm_size is not given.
DEFAULT_VM_SIZE = "STANDARD_NC6"
_POLL_S = 1.0  # azureml-core polls Azure every 5 s; the local state is one SQLite read


class ComputeTargetException(AmlocalError):
    """A compute target is missing, or cannot be created, changed or deleted as asked.

    azureml.exceptions.ComputeTargetException's role: catch it around `ComputeTarget(ws, name)`.
    """

    exit_code = 2

    @property
    def message(self):
        return str(self)


def _setting(variable):
    """A machine-wide default for provisioning: set AMLOCAL_ALLOW_OVERCOMMIT=1 (or
    AMLOCAL_EMULATE_GPUS=1) to run unchanged SDK code that asks for more cores or GPUs than
    this host has."""
    return os.environ.get(variable, "").lower() in ("1", "true", "yes")


def _not_found(name):
    return ComputeTargetException(f"ComputeTargetNotFound: Compute Target with name {name} not "
                                  "found in provided workspace")


def _backend(workspace):
    """The compute targets of the workspace's run history: the local backend's, also for an
    Azure ML workspace, whose clusters are created from them (imported here: it is heavy)."""
    from amlocal.backends import get_backend
    from amlocal.workspace import Workspace

    if not isinstance(workspace, Workspace):
        raise ComputeTargetException(
            f"amlocal's compute targets need amlocal's Workspace (Workspace.from_config()), "
            f"got {type(workspace).__name__}")
    return get_backend("local", home=workspace._home).compute_targets()


class ComputeTarget:
    """A compute target of the workspace: `ComputeTarget(workspace, name)` finds an existing one.

    As in azureml-core, the constructor returns the subclass for the target's type (here always
    AmlCompute) and raises ComputeTargetException when there is no target of that name. `local`
    is not a workspace compute target (it is the name runs use for this machine), so it is not
    found here either.
    """

    _compute_type = None

    def __new__(cls, workspace, name):
        if workspace and name:
            spec = _lookup(workspace, name)
            target = super().__new__(AmlCompute)
            target._initialize(workspace, spec)
            return target
        return super().__new__(cls)

    def __init__(self, workspace, name):
        pass  # __new__ did the work, as in azureml-core

    def __repr__(self):
        return (f"{type(self).__name__}(workspace={getattr(self, 'workspace', None)!r}, "
                f"name={getattr(self, 'name', None)}, id={getattr(self, 'id', None)}, "
                f"type={getattr(self, 'type', None)}, "
                f"provisioning_state={getattr(self, 'provisioning_state', None)}, "
                f"location={getattr(self, 'location', None)}, tags={getattr(self, 'tags', None)})")

    @staticmethod
    def create(workspace, name, provisioning_configuration):
        """Create a compute target from `AmlCompute.provisioning_configuration(...)`."""
        if name in RESERVED_NAMES:
            raise ComputeTargetException(
                f"Please specify a different target name. {name} is a reserved name.")
        if not isinstance(provisioning_configuration, AmlComputeProvisioningConfiguration):
            raise ComputeTargetException(
                "amlocal can create AmlCompute targets only: pass "
                "AmlCompute.provisioning_configuration(...), got "
                f"{type(provisioning_configuration).__name__}")
        return AmlCompute._create(workspace, name, provisioning_configuration)

    @staticmethod
    def list(workspace):
        """The workspace's compute targets (`local` is not one), by name."""
        targets = _backend(workspace)
        found = []
        for name in targets.names():
            if name == "local":
                continue  # the built-in target, not a workspace compute target
            try:
                found.append(AmlCompute(workspace, name))
            except ComputeTargetException:
                continue  # deleted meanwhile
        return found


def _lookup(workspace, name):
    """The target's TargetSpec, or ComputeTargetException."""
    from amlocal.backends.registries import LOCAL_TARGET, ComputeTargetError

    if name == LOCAL_TARGET:
        raise ComputeTargetException(
            "ComputeTargetNotFound: Compute Target with name local not found in provided "
            "workspace ('local' is amlocal's built-in target for runs on this machine, used by "
            "name: compute_target='local')")
    try:
        return _backend(workspace).get(name)
    except ComputeTargetError:
        raise _not_found(name) from None


class AmlCompute(ComputeTarget):
    """A cluster of nodes of one VM size that scales between min_nodes and max_nodes.

    Locally its nodes are slots of this host (see backends/local/compute.py). Attributes as in
    azureml-core: name, type ("AmlCompute"), vm_size, vm_priority ("Dedicated"/"LowPriority"),
    scale_settings, provisioning_state, provisioning_errors, status (AmlComputeStatus),
    created_on, modified_on; and the two amlocal settings allow_overcommit and emulate_gpus.
    """

    _compute_type = COMPUTE_TYPE

    def _initialize(self, workspace, spec):
        self.workspace = workspace
        self.name = spec.name
        self.type = COMPUTE_TYPE
        self.id = None
        self.location = None
        self.tags = None
        self.description = None
        self.cluster_resource_id = None
        self.cluster_location = None
        self.is_attached = False
        self.provisioning_errors = None
        self._operation_state = None  # "Creating"/"Deleting" after create()/delete() in this object
        self._apply(spec, _backend(workspace).status(spec.name))

    def _apply(self, spec, status):
        self.status = AmlComputeStatus.deserialize(status)
        self.vm_size = spec.vm_size
        self.vm_priority = status["vmPriority"]
        self.scale_settings = ScaleSettings(spec.min_nodes, spec.max_nodes,
                                            spec.idle_seconds_before_scaledown)
        self.allow_overcommit = spec.allow_overcommit
        self.emulate_gpus = spec.emulate_gpus
        self.provisioning_state = status["provisioningState"]
        self.created_on = self.status.creation_time
        self.modified_on = self.status.modified_time

    # -- creating ---------------------------------------------------------------------------------

    @staticmethod
    def provisioning_configuration(vm_size="", vm_priority="dedicated", min_nodes=0,
                                   max_nodes=None, idle_seconds_before_scaledown=1800,
                                   admin_username=None, admin_user_password=None,
                                   admin_user_ssh_key=None, vnet_resourcegroup_name=None,
                                   vnet_name=None, subnet_name=None, tags=None, description=None,
                                   remote_login_port_public_access="NotSpecified",
                                   identity_type=None, identity_id=None, location=None,
                                   enable_node_public_ip=True, *, allow_overcommit=False,
                                   emulate_gpus=False):
        """azureml-core's signature, plus two amlocal extensions (keyword-only):

        allow_overcommit: let the nodes share this host's cores and memory when max_nodes nodes
            of vm_size need more than the host has (each node is then limited to its size's
            worth of CPU time and memory instead of owning whole cores).
        emulate_gpus: accept a GPU size on a host with fewer GPUs; its runs see no GPU and use
            the CPU.

        vm_size defaults to STANDARD_NC6 (azureml-core's documented default). The other
        parameters are validated as azureml-core validates them and otherwise ignored.
        """
        return AmlComputeProvisioningConfiguration(
            vm_size, vm_priority, min_nodes, max_nodes, idle_seconds_before_scaledown,
            admin_username, admin_user_password, admin_user_ssh_key, vnet_resourcegroup_name,
            vnet_name, subnet_name, tags, description, remote_login_port_public_access,
            identity_type, identity_id, location, enable_node_public_ip,
            allow_overcommit=allow_overcommit, emulate_gpus=emulate_gpus)

    @staticmethod
    def _create(workspace, name, config):
        targets = _backend(workspace)
        settings = dict(
            min_nodes=config.scale_settings.minimum_node_count,
            idle_seconds_before_scaledown=config.scale_settings.idle_seconds_before_scaledown,
            vm_priority=(config.vm_priority or "dedicated").lower(),
            allow_overcommit=bool(config.allow_overcommit) or _setting("AMLOCAL_ALLOW_OVERCOMMIT"),
            emulate_gpus=bool(config.emulate_gpus) or _setting("AMLOCAL_EMULATE_GPUS"))
        vm_size = config.vm_size or DEFAULT_VM_SIZE
        max_nodes = config.scale_settings.maximum_node_count
        try:
            targets.create_target(name, vm_size, max_nodes, **settings)
        except UserInputError as error:
            raise ComputeTargetException(
                _creation_error(error, targets, name, vm_size, max_nodes, settings)) from None
        except AmlocalError as error:
            raise ComputeTargetException(str(error)) from None
        target = AmlCompute(workspace, name)
        target._operation_state = "Creating"
        return target

    # -- state ----------------------------------------------------------------------------------

    def refresh_state(self):
        """Read the target's settings and status again (ComputeTargetException if it is gone)."""
        from amlocal.backends.registries import ComputeTargetError

        targets = _backend(self.workspace)
        try:
            spec = targets.get(self.name)
            status = targets.status(self.name)
        except ComputeTargetError:
            raise _not_found(self.name) from None
        self._apply(spec, status)

    def get_status(self):
        """The current AmlComputeStatus (nodes by state, scale settings, ...)."""
        self.refresh_state()
        return self.status

    def list_nodes(self):
        """The target's nodes, as azureml-core lists them (no addresses or ports locally)."""
        from amlocal.backends.registries import ComputeTargetError

        try:
            nodes = _backend(self.workspace).describe(self.name)["nodes"]
        except ComputeTargetError:
            raise _not_found(self.name) from None
        return [{"nodeId": node["node_id"], "privateIpAddress": None, "publicIpAddress": None,
                 "port": None, "nodeState": node["state"], "runId": node["run_id"]}
                for node in nodes]

    def wait_for_completion(self, show_output=False, min_node_count=None, timeout_in_minutes=25,
                            is_delete_operation=False):
        """Wait for the create/delete operation and for min_node_count nodes, as azureml-core does.

        Creating and deleting are already done when they return, so this waits only for nodes:
        min_node_count (default: the target's min_nodes) of them, up to timeout_in_minutes.
        With show_output, prints what azureml-core prints.
        """
        if self._operation_state is not None:
            if show_output:
                sys.stdout.write(self._operation_state)
                if self._operation_state != "Succeeded":
                    sys.stdout.write(".\nSucceeded")
                sys.stdout.flush()
                print('Provisioning operation finished, operation "Succeeded"')
            self._operation_state = "Succeeded"
            if not is_delete_operation:
                self.refresh_state()
        if is_delete_operation:
            return
        reached, timed_out = self._wait_for_nodes(min_node_count, timeout_in_minutes, show_output)
        if not show_output:
            return
        print("AmlCompute wait for completion finished\n")
        if reached:
            print("Minimum number of nodes requested have been provisioned")
        elif timed_out:
            print("Wait timeout has been reached")
            print('Current provisioning state of AmlCompute is "{0}" and current node count is '
                  '"{1}"'.format(self.status.provisioning_state.capitalize(),
                                 self.status.current_node_count))

    def _wait_for_nodes(self, min_node_count, timeout_in_minutes, show_output):
        self.refresh_state()
        deadline = time.monotonic() + timeout_in_minutes * 60
        if show_output:
            sys.stdout.write(self.status.provisioning_state)
            sys.stdout.flush()
        if not min_node_count:
            min_node_count = self.scale_settings.minimum_node_count
        while True:
            reached = self.status.current_node_count >= min_node_count
            timed_out = time.monotonic() > deadline
            if reached or timed_out:
                break
            if show_output and self.status.current_node_count:
                sys.stdout.write(f"Waiting for cluster to scale. {self.status.current_node_count} "
                                 f"out of {min_node_count} nodes ready.\n")
            time.sleep(min(_POLL_S, max(0.05, deadline - time.monotonic())))
            self.refresh_state()
            if show_output:
                sys.stdout.write(".")
                sys.stdout.flush()
        if show_output:
            sys.stdout.write("\n")
            sys.stdout.flush()
        return reached, timed_out

    # -- changing -------------------------------------------------------------------------------

    def update(self, min_nodes=None, max_nodes=None, idle_seconds_before_scaledown=None):
        """Not available locally yet: delete the target and create it with the new settings."""
        raise ComputeTargetException(
            "AmlCompute.update is not supported by amlocal yet: delete the target and create it "
            "again with the new scale settings")

    def delete(self):
        """Delete the target; refused (ComputeTargetException) while runs use or wait for it."""
        try:
            _backend(self.workspace).delete(self.name)
        except AmlocalError as error:
            raise ComputeTargetException(str(error)) from None
        self.provisioning_state = "Deleting"
        self._operation_state = "Deleting"

    def detach(self):
        raise ComputeTargetException(
            "Detach is not supported for AmlCompute object. Try to use delete instead.")

    @staticmethod
    def supported_vmsizes(workspace, location=None):
        """The VM sizes amlocal knows, in azureml-core's shape (name, vCPUs, gpus, memoryGB)."""
        sizes = _backend(workspace).vm_sizes()
        return [{"name": name, "vCPUs": size["cores"], "gpus": size["gpus"],
                 "memoryGB": size["memory_gib"]} for name, size in sizes.items()]


class AmlComputeProvisioningConfiguration:
    """What `AmlCompute.provisioning_configuration(...)` returns, for ComputeTarget.create."""

    def __init__(self, vm_size="", vm_priority="dedicated", min_nodes=0, max_nodes=None,
                 idle_seconds_before_scaledown=1800, admin_username=None,
                 admin_user_password=None, admin_user_ssh_key=None,
                 vnet_resourcegroup_name=None, vnet_name=None, subnet_name=None, tags=None,
                 description=None, remote_login_port_public_access="NotSpecified",
                 identity_type=None, identity_id=None, compute_location=None,
                 enable_node_public_ip=True, *, allow_overcommit=False, emulate_gpus=False):
        self._compute_type = AmlCompute
        self.location = None
        self.vm_size = vm_size
        self.vm_priority = vm_priority
        self.scale_settings = ScaleSettings(min_nodes or 0, max_nodes,
                                            idle_seconds_before_scaledown)
        self.admin_username = admin_username
        self.admin_user_password = admin_user_password
        self.admin_user_ssh_key = admin_user_ssh_key
        self.vnet_resourcegroup_name = vnet_resourcegroup_name
        self.vnet_name = vnet_name
        self.subnet_name = subnet_name
        self.tags = tags
        self.description = description
        self.remote_login_port_public_access = remote_login_port_public_access
        self.identity_type = identity_type
        self.identity_id = identity_id
        self.compute_location = compute_location
        self.enable_node_public_ip = enable_node_public_ip
        self.allow_overcommit = allow_overcommit
        self.emulate_gpus = emulate_gpus
        self.validate_configuration()

    def validate_configuration(self):
        """azureml-core's checks (ComputeTargetException); the host checks come at create time."""
        if any([self.admin_username, self.admin_user_password, self.admin_user_ssh_key]) and \
                not self.admin_username:
            raise ComputeTargetException(
                "Invalid user credentials, admin username must be provided along with either a "
                "password or SSH key information.")
        if self.admin_username and not self.admin_user_password and not self.admin_user_ssh_key:
            raise ComputeTargetException(
                "Invalid user credentials, no password or key information provided. Please "
                "provide either a password or SSH key information.")
        if any([self.vnet_name, self.vnet_resourcegroup_name, self.subnet_name]) and \
                not all([self.vnet_name, self.vnet_resourcegroup_name, self.subnet_name]):
            raise ComputeTargetException(
                "Invalid configuration, not all virtual net information provided. To use a "
                "custom virtual net, please provide vnet name, vnet resource group and subnet name")
        maximum = self.scale_settings.maximum_node_count
        if maximum is None:
            raise ComputeTargetException(
                "Invalid provisioning configuration, max nodes count is mandatory")
        for name, count in (("max_nodes", maximum),
                            ("min_nodes", self.scale_settings.minimum_node_count),
                            ("idle_seconds_before_scaledown",
                             self.scale_settings.idle_seconds_before_scaledown)):
            try:
                if count is not None:  # None: the service's default idle time
                    bounded_int(name, count)
            except UserInputError as error:
                raise ComputeTargetException(str(error)) from None
        if maximum < 0:
            raise ComputeTargetException(
                "Invalid provisioning configuration, max nodes count must be greater than or "
                "equal to 0")
        if maximum < self.scale_settings.minimum_node_count:
            raise ComputeTargetException(
                "Invalid provisioning configuration, max nodes count must be greater than or "
                "equal to min nodes count")
        if self.identity_type not in (None, "UserAssigned", "SystemAssigned"):
            raise ComputeTargetException("Invalid configuration, identity_type must be set to "
                                         "'UserAssigned' or 'SystemAssigned'.")
        if self.identity_id and self.identity_type != "UserAssigned":
            raise ComputeTargetException("Invalid configuration, identity_id cannot be set when "
                                         "identity type is not user assigned.")


def _creation_error(error, targets, name, vm_size, max_nodes, settings):
    """The backend's refusal in the SDK's terms: a too-small host names the keyword arguments."""
    flags = targets.fitting_flags(vm_size, max_nodes, name=name, **settings)
    if not flags:  # it fits (the refusal was of something else), or nothing makes it fit
        return str(error)
    size = targets.vm_sizes()[vm_size.upper()]
    needed = " and ".join(f"{flag}=True" for flag in flags)
    return (f"{max_nodes} node(s) of {vm_size.upper()} ({size['cores']} cores, "
            f"{size['memory_gib']:g} GiB, {size['gpus']} GPU(s) each) do not fit this host "
            f"({targets.host_summary()['text']}): use a smaller vm_size or max_nodes, or pass "
            f"{needed} to AmlCompute.provisioning_configuration (amlocal extensions: "
            "allow_overcommit lets the nodes share the host's cores and memory, emulate_gpus "
            "runs GPU sizes on the CPU)")
