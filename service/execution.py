"""Execution: `Experiment.submit(ScriptRunConfig(...))` starts a run on the local backend.

azureml-core posts the run definition (`{"Configuration": <the run configuration>, ...}`, see
azureml/_execution/_commands.py) under the run id it chose, either with the project as a zip
(`startrun`, multipart: runDefinitionFile + projectZipFile, sent when AML_FORCE_EXECUTE_WITH_ZIP
is set) or naming a snapshot it uploaded before (`snapshotrun`, JSON with SnapshotId). The
project is unpacked (safely: no `..`, no absolute names, no links, bounded) into a folder under
the emulator's home, the definition becomes a RunSpec, and the local backend runs it detached
(the run outlives the request, and the emulator): the same stages, queue, executors and history
as `amlocal run`. What the definition asks for and the local backend cannot do is refused with
Azure's 400 body naming it, before anything is created.
"""

import io
import json
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from email import policy
from email.parser import BytesParser
from pathlib import Path, PurePosixPath

from amlocal.backends.base import DATAREFERENCE_PREFIX, RunSpec, distribution_of
from amlocal.backends.history.compute_targets import ComputeTargetError
from amlocal.errors import EngineUnavailableError, UserInputError
from amlocal.service import snapshots
from amlocal.service.blobs import BlobError
from amlocal.service.config import emulator_dir
from amlocal.service.datastores import datastore_folder
from amlocal.service.environments import local_environment
from amlocal.service.errors import ServiceError, bad_request
from amlocal.service.submitted import keep_definition
from amlocal.service.wire import MAX_RUN_ID, WS, operation
from amlocal.validation import check_experiment_name

EXECUTION = "/execution/v1.0" + WS + "/experiments/{experiment_name}"
SUBMISSIONS = "submissions"
# Azure ML's snapshot limits (azureml/_restclient/constants.py): 300 MB, 2,000 files.
MAX_PROJECT_BYTES = 300 << 20
MAX_PROJECT_ENTRIES = 10_000  # files and folders (a zip names its folders too)
MAX_COMPRESSION_RATIO = 200  # past this (for a member over 1 MiB) a member is a zip bomb
_COPY_BYTES = 1 << 20
_READ_MODES = ("mount", "download")

# Parts of a run configuration the local backend cannot honour, each with the values that mean
# "not asked for", and what asking for it is called in the refusal. (framework and communicator
# are read by backends/distribution.py: an MPI or PyTorch job is a distributed run, the others
# are refused there.)
_NOT_EMULATED = (
    ("data", ({}, None), "dataset inputs (run_config.data: {})"),
    ("outputData", ({}, None), "output datasets (run_config.output_data: {})"),
    ("datacaches", ([], None), "data caches ({})"),
    ("sourceDirectoryDataStore", (None, ""), "a source directory datastore ({})"),
    ("autoClusterComputeSpecification", (None,), "automatically created compute ({})"),
    ("credentialPassthrough", (False, None), "credential passthrough"),
    ("command", ("", None, []), "a command instead of a script ({})"),
    ("applicationEndpoints", ({}, None), "application endpoints ({})"),
)


@contextmanager
def project_folder(service):
    """A fresh folder for a submission's project under the emulator's home, removed afterwards
    (the run keeps a snapshot of its own)."""
    root = emulator_dir(service.home) / SUBMISSIONS
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as folder:
        yield Path(folder) / "project"


def _multipart(call):
    """{field name: bytes} of a multipart/form-data body."""
    content_type = (call.headers or {}).get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise bad_request("startrun takes multipart/form-data (runDefinitionFile, projectZipFile)")
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(head + call.body)
    if not message.is_multipart():
        raise bad_request("the multipart body cannot be read")
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name in parts:
            raise bad_request(f"the multipart body has two {name!r} parts")
        parts[name] = part.get_payload(decode=True) or b""
    return parts


def _member_path(name):
    """A zip member's name as a relative path; 400 for one that could land outside the folder."""
    path = PurePosixPath(name)
    if not name or "\x00" in name or path.is_absolute() or ".." in path.parts:
        raise bad_request(f"project.zip holds a file named {name[:200]!r}, which would land "
                          "outside the project folder")
    return path


def unpack_project(data, folder):
    """Unpack project.zip (bytes) into `folder` (which must not exist); 400 for a member named
    outside it, a link or a special file, a duplicate, or more than the snapshot limits."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as error:
        raise bad_request(f"project.zip is not a zip archive: {error}") from None
    if len(members) > MAX_PROJECT_ENTRIES:
        raise bad_request(f"project.zip has {len(members)} entries, over the limit of "
                          f"{MAX_PROJECT_ENTRIES}")
    if sum(member.file_size for member in members) > MAX_PROJECT_BYTES:
        raise bad_request(f"project.zip unpacks to more than {MAX_PROJECT_BYTES >> 20} MB")
    folder.mkdir()
    seen, written = set(), 0
    for member in members:
        path = _member_path(member.filename)
        kind = stat.S_IFMT(member.external_attr >> 16)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            what = "a symbolic link" if kind == stat.S_IFLNK else "a special file"
            raise bad_request(f"project.zip holds {what} ({member.filename[:200]!r}): a "
                              "project's files must be regular files")
        if path.as_posix() in seen:
            raise bad_request(f"project.zip names {member.filename[:200]!r} twice")
        seen.add(path.as_posix())
        if (member.file_size > _COPY_BYTES
                and member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1)):
            raise bad_request(f"project.zip member {member.filename[:200]!r} expands "
                              f"{member.file_size // max(member.compress_size, 1)} times: refused "
                              "as a zip bomb")
        target = folder.joinpath(*path.parts)
        try:
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "xb") as sink:
                while chunk := source.read(_COPY_BYTES):
                    written += len(chunk)
                    if written > MAX_PROJECT_BYTES:
                        raise bad_request(f"project.zip unpacks to more than "
                                          f"{MAX_PROJECT_BYTES >> 20} MB")
                    sink.write(chunk)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as error:
            # (A bad CRC, an encrypted member, an unknown compression, a file where a folder is.)
            raise bad_request(f"project.zip member {member.filename[:200]!r} cannot be "
                              f"unpacked: {error}") from None


def _refuse_not_emulated(definition, configuration):
    if definition.get("TargetDetails"):
        raise bad_request("custom compute target definitions (TargetDetails) are not emulated: "
                          "name an amlocal compute target")
    if definition.get("ParentRunId"):
        raise bad_request("submitting a run as the child of another (ParentRunId) is not emulated")
    for key, defaults, what in _NOT_EMULATED:
        value = configuration.get(key)
        if value not in defaults:
            raise bad_request(f"{what.format(json.dumps(value)[:200])} is not emulated by "
                              f"amlocal (run configuration {key!r})")
    docker = configuration.get("docker") or {}
    if isinstance(docker, dict) and docker.get("arguments"):
        raise bad_request("docker run arguments (DockerConfiguration(arguments=...)) are not "
                          "emulated: amlocal chooses how the container runs")
    for section, key, what in (("amlcompute", "vmSize", "a cluster created for the run"),
                               ("kubernetescompute", "instanceType", "Kubernetes instance types")):
        value = (configuration.get(section) or {}).get(key)
        if value:
            raise bad_request(f"{what} ({section}.{key} {value!r}) is not emulated: create an "
                              "amlocal compute target and name it")


def _datastore_input(service, name, reference):
    """The host folder of a data reference to a datastore path (mounted or downloaded: both are
    a read-only input here), from the datastores family (datastores.datastore_folder)."""
    if not isinstance(reference, dict):
        raise bad_request(f"data reference {name!r} must be an object")
    mode = str(reference.get("mode") or "mount").lower()
    if mode not in _READ_MODES:
        raise bad_request(f"data reference {name!r}: mode {mode!r} is not emulated (only "
                          f"{' and '.join(_READ_MODES)}: inputs, read-only)")
    if reference.get("pathOnCompute"):
        raise bad_request(f"data reference {name!r}: pathOnCompute is not emulated: the script "
                          f"finds the data at ${DATAREFERENCE_PREFIX}{name}")
    try:
        return datastore_folder(service.home, str(reference.get("dataStoreName") or ""),
                                str(reference.get("pathOnDataStore") or ""))
    except (UserInputError, BlobError) as error:
        raise bad_request(f"data reference {name!r}: {getattr(error, 'message', error)}") from None


def run_spec(service, experiment, configuration, folder):
    """The RunSpec of a run configuration whose project is in `folder`."""
    script = configuration.get("script")
    if not isinstance(script, str) or not script:
        raise bad_request("the run configuration names no script")
    arguments = configuration.get("arguments") or []
    if not isinstance(arguments, list) or any(isinstance(argument, (dict, list))
                                              for argument in arguments):
        raise bad_request("the run configuration's arguments must be a list of strings and numbers")
    references = configuration.get("dataReferences") or {}
    if not isinstance(references, dict):
        raise bad_request("the run configuration's dataReferences must be an object")
    docker = configuration.get("docker") or {}
    environment = local_environment(configuration.get("environment") or {},
                                    use_docker=bool(isinstance(docker, dict)
                                                    and docker.get("useDocker")))
    variables = configuration.get("environmentVariables") or {}
    if not isinstance(variables, dict):
        raise bad_request("the run configuration's environmentVariables must be an object")
    try:
        distribution = distribution_of(configuration)
    except UserInputError as error:
        raise bad_request(str(error)) from None
    return RunSpec(
        source_dir=folder, script=script,
        arguments=tuple("" if argument is None else str(argument) for argument in arguments),
        experiment=experiment,
        inputs={name: _datastore_input(service, name, reference)
                for name, reference in references.items()},
        environment=environment.spec, executor=environment.executor,
        compute=str(configuration.get("target") or ""),
        node_count=configuration.get("nodeCount") or 1, distribution=distribution,
        max_run_duration_seconds=configuration.get("maxRunDurationSeconds"),
        environment_variables={**environment.variables, **variables})


def _submit(call, definition, fill_project):
    """Check the definition, fill the project folder (`fill_project(folder)`), start the run."""
    experiment = call.params["experiment_name"]
    check_experiment_name(experiment)
    run_id = call.query.get("runId") or ""
    if len(run_id) > MAX_RUN_ID:
        raise bad_request(f"run id {run_id[:100]!r}... is over {MAX_RUN_ID} characters")
    if not isinstance(definition, dict) or not isinstance(definition.get("Configuration"), dict):
        raise bad_request("the run definition has no Configuration object")
    configuration = definition["Configuration"]
    _refuse_not_emulated(definition, configuration)
    call.service.store.check_new_run_id(run_id)
    with project_folder(call.service) as folder:
        fill_project(folder)
        spec = run_spec(call.service, experiment, configuration, folder)
        try:
            handle = call.service.backend().submit(spec, detach=True, run_id=run_id)
        except ComputeTargetError as error:
            raise ServiceError(400, "UserError", str(error)) from None
        except EngineUnavailableError as error:
            raise ServiceError(503, "ServiceUnavailable", str(error)) from None
    keep_definition(call.service, handle.id, _without_secrets(configuration))
    return {"runId": handle.id, "status": handle.get_status()}


def _without_secrets(configuration):
    """The run configuration as get_details() shows it: a registry password is not kept."""
    kept = json.loads(json.dumps(configuration))
    registry = ((kept.get("environment") or {}).get("docker") or {}).get("baseImageRegistry")
    if isinstance(registry, dict) and registry.get("password"):
        registry["password"] = None
    return kept


def _definition_of(data, what):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(f"{what} is not valid JSON: {error}") from None


@operation(EXECUTION + "/startrun", ["POST"], max_body=MAX_PROJECT_BYTES + (1 << 20))
def start_run(call):
    parts = _multipart(call)
    missing = [name for name in ("runDefinitionFile", "projectZipFile") if name not in parts]
    if missing:
        raise bad_request(f"startrun needs the multipart parts runDefinitionFile and "
                          f"projectZipFile; {', '.join(missing)} missing")
    definition = _definition_of(parts["runDefinitionFile"], "definition.json")
    return _submit(call, definition, lambda folder: unpack_project(parts["projectZipFile"], folder))


@operation(EXECUTION + "/snapshotrun", ["POST"])
def snapshot_run(call):
    definition = call.json_object()
    snapshot_id = definition.get("SnapshotId")
    if not snapshot_id:
        raise bad_request("the run definition names no snapshot (SnapshotId): with "
                          "history.snapshot_project=False there is no source to run; amlocal "
                          "needs the snapshot, or the project zip (AML_FORCE_EXECUTE_WITH_ZIP=true)")

    def materialize(folder):
        try:
            snapshots.materialize(call.service.home, str(snapshot_id), folder)
        except UserInputError as error:
            raise bad_request(str(error)) from None

    return _submit(call, definition, materialize)


ROUTES = [start_run, snapshot_run]
