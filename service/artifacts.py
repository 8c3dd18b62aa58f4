"""Artifact v2.0: a run's files (list, content information, prefix listing), their download,
and uploads (batch metadata answers a SAS URI per path; the blob PUT lands in the run's files).

A run's artifacts are its run files (outputs/..., logs/..., azureml-logs/..., uploads), read
only through the run history (`RunStore.file_names`, `open_verified_file`: the run-folder door,
which follows no link and opens only regular files). azureml-core downloads a file with a plain
GET of the artifact's `contentUri`; here that is the emulator's /amlocal/content route with a
signature (a read token for that run) in its query, as a SAS is on Azure.
"""

import itertools
import re

from starlette.responses import StreamingResponse

from amlocal.backends.history.run_files import run_file_location
from amlocal.backends.history.run_folder import RunFolder, printable
from amlocal.backends.history.store import is_plain_run_id
from amlocal.errors import RunNotFoundError, UserInputError
from amlocal.service.blobs import ARTIFACT_CONTAINER, BlobError, BlobStore
from amlocal.service.errors import ServiceError, bad_request, not_found
from amlocal.service.history import run_handle
from amlocal.service.tokens import InvalidToken
from amlocal.service.wire import CONTENT, WS, content_url, operation, read_token

ARTIFACTS = "/artifact/v2.0" + WS + "/artifacts"
CONTAINER = "{origin}/dcid.{run_id}"
CHUNK_BYTES = 1 << 20


def _file_names(call):
    """The run's file names that can be written in a URL (a name that is not UTF-8 is a run
    file here but could never be an Azure artifact: it is left out)."""
    run_handle(call)
    names = []
    for name in call.service.store.file_names(call.run_id):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            continue
        names.append(name)
    return names


def _check_origin(call):
    if call.params["origin"] != "ExperimentRun":
        raise not_found(f"artifact origin {call.params['origin']!r} is not served: a run's "
                        "artifacts are under ExperimentRun")


def artifact_dto(call, name):
    return {"artifactId": f"ExperimentRun/dcid.{call.run_id}/{name}", "origin": "ExperimentRun",
            "container": f"dcid.{call.run_id}", "path": name, "etag": None, "createdTime": None,
            "dataPath": None}


def content_info(call, name, token):
    return {"contentUri": content_url(call.service, call.run_id, name, token),
            "origin": "ExperimentRun", "container": f"dcid.{call.run_id}", "path": name}


@operation(ARTIFACTS + "/" + CONTAINER, ["GET"])
def list_in_container(call):
    _check_origin(call)
    return {"value": [artifact_dto(call, name) for name in _file_names(call)],
            "continuationToken": None, "nextLink": None}


@operation(ARTIFACTS + "/contentinfo/" + CONTAINER + "/{path:path}", ["GET"])
def get_content_information(call):
    _check_origin(call)
    name = call.params["path"]
    if name not in _file_names(call):
        raise not_found(f"run {call.run_id} has no artifact {name!r}")
    return content_info(call, name, read_token(call.service, call.run_id))


@operation(ARTIFACTS + "/prefix/contentinfo/" + CONTAINER + "/{path:path}", ["GET"])
def list_sas_by_prefix(call):
    _check_origin(call)
    prefix = call.params["path"]
    token = read_token(call.service, call.run_id)
    return {"value": [content_info(call, name, token) for name in _file_names(call)
                      if name == prefix or name.startswith(prefix.rstrip("/") + "/")],
            "continuationToken": None, "nextLink": None}


@operation(CONTENT, ["GET"], auth="public")
def download(call):
    try:
        claims = call.service.tokens.verify(call.query.get("sig", ""))
    except InvalidToken as error:
        raise ServiceError(403, "AuthorizationFailure", f"the content URL's signature is not "
                           f"valid: {error}") from None
    if not claims.allows_reading_run(call.run_id):
        raise ServiceError(403, "AuthorizationFailure",
                           "the content URL's signature is for another run")
    return streamed_run_file(call.service.store, call.run_id, call.params["path"], "file")


def streamed_run_file(store, run_id, name, noun):
    """Run `run_id`'s file `name` as a streamed answer; 404 naming the run's `noun` ("file",
    "artifact") if it has none of that name. The file is opened and checked before the answer
    starts, so a refusal is a status, not a broken stream."""
    chunks = _chunks(store, run_id, name)
    try:
        first = next(chunks)
    except UserInputError:
        raise not_found(f"run {run_id} has no {noun} {name!r}") from None
    return StreamingResponse(itertools.chain([first], chunks),
                             media_type="application/octet-stream")


def _chunks(store, run_id, name):
    with store.open_verified_file(run_id, name) as handle:
        yield handle.read(CHUNK_BYTES)
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


MAX_PATHS_PER_BATCH = 500


def artifact_blob_name(run_id, name):
    """The blob (of container `azureml`) that is run `run_id`'s file `name`."""
    return f"ExperimentRun/dcid.{run_id}/{name}"


@operation(ARTIFACTS + "/batch/metadata/" + CONTAINER, ["POST"])
def batch_create_empty_artifacts(call):
    """Artifacts to be: each path checked (a run file name that is not taken yet) and answered
    with a SAS URI for its upload; a refused path is in `errors`, the others go on (as Azure)."""
    _check_origin(call)
    paths = call.json_object().get("paths")
    if not isinstance(paths, list) or len(paths) > MAX_PATHS_PER_BATCH:
        raise bad_request(f"`paths` must be a list of at most {MAX_PATHS_PER_BATCH} paths")
    existing = set(_file_names(call))
    store = BlobStore(call.service.home, call.service.tokens)
    artifacts, contents, errors = {}, {}, {}
    for entry in paths:
        name = entry.get("path") if isinstance(entry, dict) else None
        refusal = _upload_refusal(name, existing)
        if refusal:
            errors[str(name)] = {"error": {"code": refusal[0], "message": refusal[1]}}
            continue
        try:
            upload_url = store.sas_url(ARTIFACT_CONTAINER, artifact_blob_name(call.run_id, name),
                                       write=True)
        except UserInputError as error:
            errors[name] = {"error": {"code": "ValidationError", "message": str(error)}}
            continue
        artifacts[name] = artifact_dto(call, name)
        contents[name] = content_info(call, name, None) | {"contentUri": upload_url}
        existing.add(name)
    return {"artifacts": artifacts, "artifactContentInformation": contents, "errors": errors}


def _upload_refusal(name, existing):
    """(code, message) when `name` cannot be a new artifact of the run, else None."""
    if not isinstance(name, str):
        return "ValidationError", "each path must be {\"path\": \"a/run/file/name\"}"
    try:
        run_file_location(name)
    except UserInputError as error:
        return "ValidationError", str(error)
    if name in existing:
        return "Conflict", f"the run already has an artifact {printable(name)!r}"
    return None


class RunFileBlobs:
    """The `azureml` container of the blob host (blobs.py): its blob
    `ExperimentRun/dcid.{run id}/{name}` is run file `name`, written into the run's folder
    (run_file_location: outputs/, logs/ under their names, others under uploads/) through
    RunFolder, so nothing lands outside it."""

    _NAME = re.compile(r"ExperimentRun/dcid\.([^/]+)/(.+)", re.DOTALL)

    def __init__(self, service, blob_store):
        self.store = service.store
        self.incoming = blob_store.incoming

    def _run_file(self, name):
        found = self._NAME.fullmatch(name)
        if not found or not is_plain_run_id(found.group(1)):
            raise BlobError(404, "BlobNotFound", f"{printable(name)} is not a run's file")
        return found.group(1), found.group(2)

    def open(self, _container, name):
        run_id, path = self._run_file(name)
        try:
            return self.store.open_file(run_id, path)
        except (UserInputError, RunNotFoundError):
            raise BlobError(404, "BlobNotFound", f"run {run_id} has no file "
                            f"{printable(path)}") from None

    def commit(self, _container, name, temporary):
        run_id, path = self._run_file(name)
        try:
            self.store.get_status(run_id)
            location = run_file_location(path)
        except (UserInputError, RunNotFoundError) as error:
            raise BlobError(404, "ContainerNotFound", str(error)) from None
        with RunFolder(self.incoming()) as incoming, RunFolder(self.store.run_dir(run_id)) as run:
            if not run.move_from(incoming, temporary, location):
                raise BlobError(409, "InvalidBlobName",
                                f"run {run_id}'s file {printable(path)} cannot be written: a "
                                "part of its path is a file or a link, or a folder has its name")


ROUTES = [list_in_container, get_content_information, list_sas_by_prefix, download,
          batch_create_empty_artifacts]
