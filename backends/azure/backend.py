"""The Azure backend: the same RunSpec a local run takes, submitted to Azure ML (SDK v1, or
with `sdk="v2"` SDK v2, whose path is jobs_v2.py; sdk_choice.py says which by default).

    spec --translate_v1 (pure)--> azureml-core objects --AzureSession (the seam)--> Azure ML
    spec --translate_v2 (pure)--> azure-ai-ml entities --AzureSessionV2 (the seam)--> Azure ML

`AzureBackend.submit` translates the spec, makes sure the compute target exists (created from the
local target of the same name, if there is one), uploads the named inputs, submits, and records the
run in the local run history (backend "azure", the same run id as on Azure, its portal URL, the
source snapshot), so `amlocal runs list` shows it beside its local twin. `AzureRunHandle`
(run_handle.py) is the one Run interface over such a run: status, logs, metrics, files and cancel
go to Azure through the session, and what it learns (status, error, tags) is mirrored into the
local record.

`dry_run` does everything up to the seam and returns what would be submitted; it needs no
network, no Azure account and no workspace configuration file.

Nothing here imports azureml: the translation and the session do, when first used, so that the
local backend (and listing Azure runs already in the history) works without the `azure` extra.
"""

import json
from pathlib import Path

from amlocal.backends.azure.errors import AzureComputeError, AzureConfigError, redact, require_sdk
from amlocal.backends.azure.run_handle import (AZURE_PROPERTY, BACKEND_NAME, AzureRunHandle,
                                               azure_part)
from amlocal.backends.azure.sdk_choice import SDKS, chosen_sdk
from amlocal.backends.base import (Backend, LogLine, StatusChanged, ignore_event,
                                   not_available)
from amlocal.backends.history.compute_targets import LOCAL_TARGET, ComputeTargetRecords
from amlocal.backends.history.store import RunStore, new_run_id
from amlocal.workspace_config import WorkspaceConfigError, find_config, read_config

EXECUTOR = "amlcompute"
DEFAULT_DATASTORE = "workspaceblobstore"
# Log files that hold a script's output on Azure ML, newest runtime first.


# -- the workspace configuration file ----------------------------------------------------------

def find_workspace_config(path=None):
    """The Azure ML workspace named by a config.json, as azureml-core finds it (no network).

    Returns {config_file, subscription_id, resource_group, workspace_name}, or None where no
    configuration file is found. Raises AzureConfigError for a file that cannot be used.
    """
    found = find_config(path if path is not None else ".")
    if found is None:
        if path is not None:
            raise AzureConfigError(f"no workspace configuration file at {path}")
        return None
    try:
        subscription_id, resource_group, workspace_name = read_config(found)
    except WorkspaceConfigError as error:
        raise AzureConfigError(str(error)) from None
    if not subscription_id or not resource_group:
        raise AzureConfigError(
            f"the workspace configuration file {found} names the local workspace, not an Azure ML "
            "one: download your workspace's config.json from the Azure portal (the workspace's "
            "Overview, 'Download config.json') into .azureml/config.json")
    return {"config_file": found, "subscription_id": subscription_id,
            "resource_group": resource_group, "workspace_name": workspace_name}


def _required_workspace_config(path):
    config = find_workspace_config(path)
    if config is None:
        raise AzureConfigError(
            "no workspace configuration file (config.json) in this folder, its .azureml/ or "
            "aml_config/, or their parents: download it from the Azure portal (your workspace's "
            "Overview, 'Download config.json') into .azureml/config.json, or name it with "
            "--workspace-config (a dry run, --dry-run, needs none)")
    return config


# -- the backend -----------------------------------------------------------------------------

class AzureBackend(Backend):
    name = BACKEND_NAME

    def __init__(self, home=None, workspace_config=None, session=None, sdk=None):
        """`workspace_config`: a config.json (or the folder to search from; default: the current
        folder); `session`: the seam to Azure (default: an AzureSession over that workspace, an
        AzureSessionV2 for SDK v2); `sdk`: "v1" or "v2" (default: sdk_choice.chosen_sdk)."""
        self.store = RunStore(home)
        self._workspace_config = workspace_config
        self._session = session
        self._sdk = sdk

    @property
    def sdk(self):
        """The Azure ML SDK this backend speaks, "v1" or "v2" (chosen on first use)."""
        if self._sdk not in SDKS:
            self._sdk = chosen_sdk(self._sdk)
        return self._sdk

    @property
    def home(self):
        return self.store.home

    def models(self):
        """The model registry of the local run history: Model.register on an Azure workspace
        keeps models there (a run's register_model registers in the Azure ML workspace)."""
        from amlocal.backends.registries import HistoryModelRegistry

        return HistoryModelRegistry(self.store)

    def compute_targets(self):
        """Compute targets are created on Azure from the local ones (`amlocal compute`, on the
        local backend) when a run needs them; this backend keeps none of its own."""
        raise not_available("managing compute targets (they are defined on the local backend, "
                            "`amlocal compute create`, and a run creates its cluster on Azure "
                            "from the local target of the same name)", self.name)

    def session(self):
        if self._session is None and self.sdk == "v2":
            from amlocal.backends.azure.session_v2 import AzureSessionV2
            config = _required_workspace_config(self._workspace_config)
            self._session = AzureSessionV2(config["config_file"])
        if self._session is None:
            require_sdk()
            from amlocal.backends.azure.session import AzureSession
            config = _required_workspace_config(self._workspace_config)
            self._session = AzureSession(config["config_file"])
        return self._session

    def _local_target(self, name):
        """The local compute target called `name`, if the history has one (its settings are how
        amlocal creates the cluster on Azure)."""
        targets = ComputeTargetRecords(self.store)
        if name == LOCAL_TARGET or name not in targets.names():
            return None
        return targets.get(name)

    def translate(self, spec, datastore=DEFAULT_DATASTORE):
        """The translate_v1.Submission of a validated spec."""
        require_sdk()
        from amlocal.backends.azure import translate_v1

        return translate_v1.translate(spec, local_target=self._local_target(spec.compute),
                                      datastore=datastore)

    def dry_run(self, spec):
        """What `submit` would send, as JSON-ready data; touches no network.

        The workspace configuration file is read if there is one (to name the workspace), never
        required. Uploads are listed, not made.
        """
        spec = spec.validated()
        if self.sdk == "v2":
            from amlocal.backends.azure import jobs_v2
            return jobs_v2.dry_run(self, spec)
        config = find_workspace_config(self._workspace_config)
        submission = self.translate(spec)
        return self._dry_run_document(spec, submission.describe(
            subscription_id=config["subscription_id"] if config else None), config)

    def _dry_run_document(self, spec, described, config=None):
        """A dry run's document: what a translation describes, with the workspace (a
        config.json's, if one is found), the snapshot's size and the notes on both."""
        from amlocal.backends.history.snapshot import snapshot_files

        config = config or find_workspace_config(self._workspace_config)
        files = snapshot_files(spec.source_dir)
        document = {"backend": self.name, "dry_run": True, "workspace": config, **described}
        document["snapshot"] = {"files": len(files), "bytes": sum(size for _, size in files)}
        if config is None:
            document["notes"].append("no workspace configuration file (config.json) was found: "
                                     "submitting needs one")
        if described["uploads"]:
            document["notes"].append(
                f"inputs are uploaded to the workspace's default datastore ({DEFAULT_DATASTORE} "
                "unless it was changed) before the run is submitted; files already there are "
                "not uploaded again")
        return document

    def dry_run_sweep(self, template, sweep):
        """A sweep's dry run: the child runs' submission, and the HyperDrive configuration
        (azureml-train-core's real HyperDriveConfig) that would carry it; no network. On SDK v2,
        the command job and the sweep job over it."""
        if self.sdk == "v2":
            from amlocal.backends.azure import jobs_v2
            return jobs_v2.dry_run(self, template.validated(), sweep=sweep)
        from amlocal.backends.azure import translate_v1

        document = self.dry_run(template)
        config = translate_v1.hyperdrive_config(self.translate(template.validated()), sweep)
        document["hyperdrive"] = translate_v1.describe_hyperdrive(config)
        return document

    def submit_sweep(self, template, sweep, detach=True):
        """Submit a sweep to Azure ML as a HyperDrive run (a sweep job on SDK v2); its children
        run there."""
        template = template.validated()
        if self.sdk == "v2":
            from amlocal.backends.azure import jobs_v2
            return jobs_v2.submit(self, template, sweep=sweep)
        from amlocal.backends.azure import translate_v1

        submission = self.translate(template)
        session = self.session()
        self._ensure_compute(session, submission.compute, session.workspace_info(), lambda line: None)
        for upload in submission.uploads:
            session.upload_input(upload)
        result = session.submit_hyperdrive(template.experiment,
                                           translate_v1.hyperdrive_config(submission, sweep),
                                           submission.tags)
        return self._record(template, submission, result, session.workspace_info(),
                            session.default_datastore(), sweep=sweep)

    def submit(self, spec, on_event=ignore_event, detach=False):
        """Submit `spec` to Azure ML; return its handle (the run goes on in Azure whatever this
        process does: `detach` changes nothing but is accepted, as the interface has it)."""
        spec = spec.validated()
        if self.sdk == "v2":
            from amlocal.backends.azure import jobs_v2
            return jobs_v2.submit(self, spec, on_event=on_event)

        def send(session, submission, run_id, progress):
            progress(f"Submitting {spec.script} to experiment {spec.experiment} on "
                     f"{submission.compute.name}")
            return session.submit(spec.experiment, submission.config, submission.tags, run_id)

        return self._send(spec, lambda datastore: self.translate(spec, datastore=datastore), send,
                          on_event)

    def _send(self, spec, translate, send, on_event, sweep=None):
        """What every submission does, on either SDK: `translate(datastore)` (a spec Azure
        cannot take is refused before any request), the workspace named, the compute target
        made sure of, the inputs uploaded, `send(session, submission, run_id, progress)` (the
        seam's answer: {run_id, status, portal_url}), the run recorded; returns its handle."""
        from amlocal.backends.history.snapshot import snapshot_files

        files = snapshot_files(spec.source_dir)
        submission = translate(DEFAULT_DATASTORE)
        run_id = new_run_id(spec.experiment)

        def progress(line):
            on_event(LogLine(run_id, "build", line))

        session = self.session()
        workspace = session.workspace_info()
        progress(f"Workspace {workspace['workspace_name']} (resource group "
                 f"{workspace['resource_group']}, subscription {workspace['subscription_id']})")
        datastore = session.default_datastore()
        if datastore != DEFAULT_DATASTORE:
            submission = translate(datastore)
        self._ensure_compute(session, submission.compute, workspace, progress)
        for upload in submission.uploads:
            progress(f"Uploading input {upload.name} ({upload.source}) to "
                     f"{upload.datastore}/{upload.target_path}")
            session.upload_input(upload)
        result = send(session, submission, run_id, progress)
        handle = self._record(spec, submission, result, workspace, datastore, files=files,
                              sweep=sweep)
        progress(f"Web View: {azure_part(self.store.get_run(handle.id))['portal_url']}")
        on_event(StatusChanged(handle.id, self.store.get_status(handle.id)))
        return handle

    def _record(self, spec, submission, result, workspace, datastore, files=None, sweep=None):
        """Keep the submitted run in the local history (one history); return its handle.

        Where the workspace is the emulator serving this same history, the run Azure ML started
        is already in it, as the emulator's local run under the same id: that run's record is
        the one record, and the Azure side is added to it (AZURE_PROPERTY)."""
        from amlocal.backends.history.snapshot import snapshot_files, take_snapshot

        azure = {
            "sdk": self.sdk,
            "workspace": workspace,
            "config_file": str(self.session().config_path),
            "portal_url": redact(result.get("portal_url")),
            "environment": submission.environment.name,
            "datastore": datastore,
            "uploads": [upload.describe() for upload in submission.uploads],
            "compute": {"name": submission.compute.name, "vm_size": submission.compute.vm_size},
        }
        if self._serves_this_history():
            self.store.add_properties(result["run_id"], {AZURE_PROPERTY: json.dumps(azure)})
            return AzureRunHandle(self, result["run_id"])
        files = files if files is not None else snapshot_files(spec.source_dir)
        record_spec = dict(spec.to_json(), azure=azure)
        if sweep is not None:
            record_spec["sweep"] = sweep
        self.store.create_run(
            experiment=spec.experiment, executor=EXECUTOR, compute=spec.compute, spec=record_spec,
            backend=self.name, run_id=result["run_id"],
            fill_snapshot=lambda folder: take_snapshot(spec.source_dir, folder, files))
        handle = AzureRunHandle(self, result["run_id"])
        handle.mirror(result.get("status"))
        return handle

    def _serves_this_history(self):
        """Whether the workspace is the emulator (`amlocal serve`) of this run history."""
        emulator = getattr(self.session(), "emulator", None)
        return emulator is not None and emulator.home.resolve() == Path(self.home).resolve()

    @staticmethod
    def _ensure_compute(session, plan, workspace, progress):
        """The cluster exists with the VM size the run was made for (created if it can be)."""
        vm_size = session.compute_vm_size(plan.name)
        where = f"workspace {workspace['workspace_name']}"
        if vm_size is None:
            if plan.provisioning is None:
                raise AzureComputeError(
                    f"{where} has no compute target named {plan.name!r}: create it in Azure ML "
                    f"studio, or define it here with `amlocal compute create {plan.name} --vm-size "
                    "SIZE --max-nodes N` and amlocal creates it on Azure with those settings")
            progress(f"Creating compute target {plan.name} ({plan.vm_size}, up to "
                     f"{plan.max_nodes} nodes)")
            session.create_compute(plan.name, plan.provisioning)
            return
        if plan.vm_size and vm_size.upper() != plan.vm_size.upper():
            raise AzureComputeError(
                f"compute target {plan.name!r} exists in {where} with VM size {vm_size}, but the "
                f"local target {plan.name!r} the run was made for has {plan.vm_size}: use another "
                f"--compute name, or make the local target match (`amlocal compute delete "
                f"{plan.name}` and create it with --vm-size {vm_size})")
        progress(f"Compute target {plan.name} ({vm_size})")

    def get_run(self, run_id):
        record = self.store.get_run(run_id)
        if record["backend"] != self.name:
            from amlocal.errors import RunNotFoundError
            raise RunNotFoundError(f"run {run_id} ran on the {record['backend']} backend, not on Azure")
        if self._workspace_config is None and self._session is None:
            # The workspace the run was submitted to, wherever this command runs from, through
            # the SDK that submitted it.
            self._workspace_config = record["spec"].get("azure", {}).get("config_file")
            self._sdk = self._sdk or record["spec"].get("azure", {}).get("sdk")
        return AzureRunHandle(self, run_id)

    def list_runs(self, experiment=None, limit=None):
        """The Azure runs in the local history, newest first, with their recorded status."""
        return [AzureRunHandle(self, record["id"]).get_details(refresh=False)
                for record in self.store.list_runs(experiment, None)
                if record.get("backend") == self.name][:limit]
