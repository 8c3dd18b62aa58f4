"""The parts of a run on Azure ML that do not depend on the SDK that sends it (translate_v1.py,
translate_v2.py): the compute target's name, the notes a dry run shows, and the named inputs.

Named inputs: each local path is uploaded to the workspace's default datastore under amlocal-inputs/<name>/<hash of its content>
(so an unchanged input is uploaded once), and the run reads it from there: a v1 data reference
(`$AZUREML_DATAREFERENCE_<name>`) or a v2 input (`${{inputs.<name>}}`) at the same path.
No SDK is imported here."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from amlocal.backends.azure.errors import TranslationError

DEFAULT_DATASTORE = "workspaceblobstore"  # Azure ML's default datastore, unless a user changed it
INPUTS_PREFIX = "amlocal-inputs"


@dataclass(frozen=True)
class InputUpload:
    """One named input: a local path, and where in the datastore it goes."""

    name: str
    source: Path
    datastore: str
    target_path: str  # the folder in the datastore the upload writes into
    is_file: bool

    @property
    def path_on_datastore(self):
        """What the run reads: the folder, or the file inside it."""
        return f"{self.target_path}/{self.source.name}" if self.is_file else self.target_path

    @property
    def datastore_uri(self):
        """The path as azure-ai-ml names it (an Input's `path`)."""
        return f"azureml://datastores/{self.datastore}/paths/{self.path_on_datastore}"

    def describe(self):
        return {"input": self.name, "from": str(self.source), "datastore": self.datastore,
                "target_path": self.target_path, "path_on_datastore": self.path_on_datastore,
                "mode": "mount"}


def content_hash(path):
    """A short digest of a file's or folder's content (names and bytes), for upload paths."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        (candidate for candidate in path.rglob("*") if candidate.is_file()),
        key=lambda candidate: candidate.relative_to(path).as_posix())
    for file in files:
        name = file.name if file == path else file.relative_to(path).as_posix()
        file_digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                file_digest.update(block)
        digest.update(b"file\0" + name.encode() + b"\0" + file_digest.digest())
    return digest.hexdigest()[:16]


def input_upload(name, source, datastore=DEFAULT_DATASTORE):
    source = Path(source)
    return InputUpload(name=name, source=source, datastore=datastore,
                       target_path=f"{INPUTS_PREFIX}/{name}/{content_hash(source)}",
                       is_file=source.is_file())


def uploads_of(spec, datastore=DEFAULT_DATASTORE):
    """The InputUploads of a validated spec's inputs, by name."""
    return tuple(input_upload(name, spec.inputs[name], datastore) for name in sorted(spec.inputs))


def check_compute_name(name):
    """`name`, or TranslationError where it names no cluster (the local host)."""
    if name == "local":
        raise TranslationError(
            "the Azure backend runs on an AmlCompute cluster, not on 'local': give "
            "--compute NAME (compute_target=NAME), a cluster in the workspace or one defined "
            "with `amlocal compute create NAME --vm-size ...`")
    return name


def existing_cluster_note(name):
    """What a dry run says of a cluster the local history has no target of that name for."""
    return (f"an existing compute target {name!r} in the workspace is used; there is no local "
            f"compute target of that name to create it from (`amlocal compute create {name} "
            "--vm-size ...` defines one)")


def run_notes(spec, vm_size, environment_name):
    """What a dry run says about the spec's fields that have no counterpart on Azure."""
    notes = []
    if spec.executor == "process":
        notes.append("executor 'process' is local-only: on AmlCompute the script runs in the "
                     "environment's Docker image")
    if spec.use_gpu:
        notes.append("use_gpu: the GPUs come from the compute target's VM size "
                     f"({vm_size or 'that of the existing cluster'}); the environment "
                     f"is {environment_name}")
    if spec.node_count > 1 and spec.distribution is None:
        notes.append(f"node_count {spec.node_count}: AmlCompute allocates that many nodes; with no "
                     "distribution (--distribution mpi or pytorch) amlocal translates no "
                     "distributed job configuration")
    return notes
