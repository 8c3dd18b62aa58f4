"""Artifact v2.0: a run's files (list, content information, prefix listing) and their download.

A run's artifacts are its run files (outputs/..., logs/..., azureml-logs/..., uploads), read
only through the run history (`RunStore.file_names`, `open_verified_file`: the run-folder door,
which follows no link and opens only regular files). azureml-core downloads a file with a plain
GET of the artifact's `contentUri`; here that is the emulator's /amlocal/content route with a
signature (a read token for that run) in its query, as a SAS is on Azure.
"""

import itertools

from starlette.responses import StreamingResponse

from amlocal.errors import UserInputError
from amlocal.service.errors import ServiceError, not_found
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
    chunks = _chunks(call.service.store, call.run_id, call.params["path"])
    try:
        first = next(chunks)  # opens and checks the file before the answer starts
    except UserInputError:
        raise not_found(f"run {call.run_id} has no file {call.params['path']!r}") from None
    return StreamingResponse(itertools.chain([first], chunks),
                             media_type="application/octet-stream")


def _chunks(store, run_id, name):
    with store.open_verified_file(run_id, name) as handle:
        yield handle.read(CHUNK_BYTES)
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


ROUTES = [list_in_container, get_content_information, list_sas_by_prefix, download]
