"""Content v1.0/v2.0: snapshots of a run's source, as azureml-core's SnapshotsClient makes them.

The client asks for the latest snapshot (to upload only what changed since the one it cached),
asks for blob URIs for the files it sends (`getblob`), PUTs each file through the https route,
then posts the snapshot: its directory tree (each file's sha512 of content, base name and
"File") and the files it uploaded. The snapshot is recorded here only when every file of the
tree is accounted for: uploaded with the hash the tree says, or unchanged from the parent
snapshot. `materialize` writes a recorded snapshot's files into a folder (the execution part
gives it the run's snapshot folder).

Records: $AMLOCAL_HOME/emulator/snapshots/{id}.json, written whole, never rewritten.
"""

import hashlib
import json
import os
import secrets
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from amlocal.backends.history.run_folder import name_parts, printable, write_file
from amlocal.errors import RunRecordCorruptedError, UserInputError
from amlocal.service.blobs import BlobError, BlobStore
from amlocal.service.config import BLOB_HOST, emulator_dir
from amlocal.service.errors import ServiceError, bad_request, not_found
from amlocal.service.wire import WS, operation

SNAPSHOTS_FOLDER = "snapshots"
SNAPSHOT_CONTAINER = "snapshots"
MAX_FILES = 100_000
_HASH = "sha512"


def _record_path(home, snapshot_id):
    try:
        canonical = str(uuid.UUID(snapshot_id))
    except (ValueError, TypeError, AttributeError):
        raise UserInputError(f"invalid snapshot id {str(snapshot_id)[:80]!r}: it must be a "
                             "UUID") from None
    return emulator_dir(home) / SNAPSHOTS_FOLDER / f"{canonical}.json"


def read_snapshot(home, snapshot_id):
    """The record of snapshot `snapshot_id`; UserInputError if there is none."""
    path = _record_path(home, snapshot_id)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"there is no snapshot {snapshot_id}") from None
    except ValueError as error:
        raise RunRecordCorruptedError(f"snapshot record {path} is damaged: {error}") from None


def materialize(home, snapshot_id, folder):
    """Write snapshot `snapshot_id`'s files into the host folder `folder` (made if missing),
    under their names (checked; nothing written through a link or outside `folder`). Returns the
    names written. UserInputError if the snapshot does not exist, RunRecordCorruptedError if a
    file of it is missing or is not what was uploaded."""
    record = read_snapshot(home, snapshot_id)
    store = BlobStore(home)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, file in sorted(record["files"].items()):
        try:
            source = store.open(SNAPSHOT_CONTAINER, file["blob"])
        except BlobError:
            raise RunRecordCorruptedError(f"snapshot {snapshot_id}'s file {printable(name)} is "
                                          "gone from the blob store") from None
        with source:
            if _file_hash(source, name) != file["hash"]:
                raise RunRecordCorruptedError(f"snapshot {snapshot_id}'s file {printable(name)} "
                                              "is not the file that was uploaded")
            source.seek(0)
            write_file(folder, name, source)
    return sorted(record["files"])


def _file_hash(handle, name):
    """azureml-core's hash of a snapshot file (merkle_tree._get_hash): its bytes, then its base
    name and "File"."""
    digest = hashlib.new(_HASH)
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    digest.update(name.rsplit("/", 1)[-1].encode("utf-8"))
    digest.update(b"File")
    return digest.hexdigest()


# -- the wire -----------------------------------------------------------------------------------

@operation("/content/v1.0" + WS + "/snapshots/latest/metadata", ["GET"])
def latest_snapshot_metadata(call):
    # No parent: a client without a cached snapshot uploads its whole folder, which is always
    # right; one with a cache names its parent, and the record below takes unchanged files from it.
    return {"id": None, "root": {}}


@operation("/content/v2.0" + WS + "/snapshots/getblob", ["POST"])
def get_blob_uris(call):
    names = call.json_object().get("FileNames")
    if not isinstance(names, list) or len(names) > MAX_FILES:
        raise bad_request(f"`FileNames` must be a list of at most {MAX_FILES} file names")
    store = BlobStore(call.service.home, call.service.tokens)
    batch = secrets.token_hex(16)
    nodes = []
    for name in names:
        _check_name(name)
        nodes.append({"fullName": name,
                      "blobUri": store.sas_url(SNAPSHOT_CONTAINER, f"{batch}/{name}", write=True)})
    return {"fileNodes": nodes}


@operation("/content/v2.0" + WS + "/snapshots/{snapshot_id}", ["POST"])
def create_snapshot(call):
    path = _record_path(call.service.home, call.params["snapshot_id"])
    body = call.json_object()
    uploaded = _uploaded_files(body)
    parent_files = {}
    if body.get("ParentSnapshotId"):
        try:
            parent_files = read_snapshot(call.service.home, body["ParentSnapshotId"])["files"]
        except UserInputError:
            raise not_found(f"the parent snapshot {body['ParentSnapshotId']} does not exist") from None
    store = BlobStore(call.service.home, call.service.tokens)
    files = {}
    for name, tree_hash in _tree_files(body.get("DirTreeNode")):
        if name in uploaded:
            blob = uploaded[name]
            try:
                with store.open(SNAPSHOT_CONTAINER, blob) as handle:
                    actual = _file_hash(handle, name)
            except BlobError:
                raise bad_request(f"the snapshot's file {name!r} was not uploaded") from None
            if actual != tree_hash:
                raise bad_request(f"the snapshot's file {name!r} is not the file its tree hashes")
            files[name] = {"blob": blob, "hash": tree_hash}
        elif parent_files.get(name, {}).get("hash") == tree_hash:
            files[name] = parent_files[name]
        else:
            raise bad_request(f"the snapshot's file {name!r} was neither uploaded nor is it in "
                              "the parent snapshot")
    record = {"id": str(uuid.UUID(call.params["snapshot_id"])),
              "parent": body.get("ParentSnapshotId"), "root": body.get("DirTreeNode"),
              "files": files}
    _write_once(path, record)
    return {"id": record["id"], "root": record["root"]}


def _check_name(name):
    try:
        name_parts(name, "snapshot file name")
    except UserInputError as error:
        raise bad_request(str(error)) from None


def _uploaded_files(body):
    """{file name: blob name} of the files the client says it uploaded (only the emulator's own
    snapshot blob URIs count)."""
    nodes = (body.get("FileRevisionList") or {}).get("FileNodes") or []
    uploaded = {}
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict) or not isinstance(node.get("BlobUri"), str):
            raise bad_request("each FileNodes entry needs FullName and BlobUri")
        parts = urlsplit(node["BlobUri"])
        container, _, blob = unquote(parts.path).lstrip("/").partition("/")
        if parts.hostname != BLOB_HOST or container != SNAPSHOT_CONTAINER:
            raise bad_request(f"{node['BlobUri'][:120]!r} is not a snapshot blob of this emulator")
        _check_name(node.get("FullName"))
        uploaded[node["FullName"]] = blob
    return uploaded


def _tree_files(root):
    """(name, hash) of every file in a DirTreeNode (children by name, as DirTreeJsonEncoderV2
    sends them)."""
    if not isinstance(root, dict):
        raise bad_request("the snapshot has no DirTreeNode")
    found, pending = [], [("", root)]
    while pending:
        prefix, node = pending.pop()
        children = node.get("children") or {}
        if not isinstance(children, dict):
            raise bad_request("a DirTreeNode's children must be an object")
        for child_name, child in children.items():
            if not isinstance(child, dict):
                raise bad_request("a DirTreeNode's child must be an object")
            name = f"{prefix}{child_name}"
            _check_name(name)
            if child.get("type") == "File":
                found.append((name, child.get("hash")))
            else:
                pending.append((f"{name}/", child))
        if len(found) > MAX_FILES:
            raise bad_request(f"a snapshot has at most {MAX_FILES} files")
    return found


def _write_once(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    temporary.write_text(json.dumps(record), encoding="utf-8")
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise ServiceError(409, "Conflict", f"snapshot {record['id']} already exists") from None
    finally:
        temporary.unlink()


ROUTES = [latest_snapshot_metadata, get_blob_uris, create_snapshot]
