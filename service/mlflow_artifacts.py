"""MLflow's proxied artifact API (`mlflow-artifacts:`), over a run's files.

A run's MLflow artifact_uri is `mlflow-artifacts:/<run id>`; MLflow's client resolves it against
its tracking URI (tracking URI + /api/2.0/mlflow-artifacts/artifacts/<run id>/<path>) and then

    PUT  .../artifacts/<run id>/<path>           log_artifact, log_text, log_dict (the body is
                                                  the file, streamed to disk)
    GET  .../artifacts/<run id>/<path>           download_artifacts
    GET  .../artifacts?path=<run id>[/<folder>]  list_artifacts (one folder's entries)

An artifact is the run file of the same name, as on Azure ML (`outputs/model.pkl` is the run's
./outputs file; another name is an upload). Names and writes get the artifacts family's checks
(artifacts.py: a name that could leave the run's folder, or one the run already has, is refused)
and go through the run-folder door (RunFileBlobs), so nothing lands outside the run's folder.
"""

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route

from amlocal.backends.history.store import is_plain_run_id
from amlocal.errors import AmlocalError, RunNotFoundError
from amlocal.service.artifacts import (RunFileBlobs, _upload_refusal, artifact_blob_name,
                                       streamed_run_file)
from amlocal.service.blobs import (ARTIFACT_CONTAINER, MAX_BLOB_BYTES, BlobError, BlobStore,
                                   _receive)
from amlocal.service.errors import ServiceError, as_service_error, bad_request, not_found
from amlocal.service.mlflow import NOT_EMULATED, PREFIX, mlflow_error
from amlocal.service.wire import MAX_RUN_ID, caller_claims, operation

ARTIFACTS = PREFIX + "/api/2.0/mlflow-artifacts/artifacts"


def _allowed(service, claims, run_id):
    def parent_of(child):
        try:
            return service.store.get_run(child)["parent_id"]
        except RunNotFoundError:
            return None
    return claims.allows_run(run_id, parent_of)


def _check_run(service, claims, run_id):
    if not (len(run_id) <= MAX_RUN_ID and is_plain_run_id(run_id)):
        raise bad_request(f"invalid run id {run_id[:100]!r}")
    if not _allowed(service, claims, run_id):
        raise ServiceError(403, "AuthorizationFailed", f"the token's scope ({claims.scope}) does "
                           f"not allow run {run_id}")
    try:
        service.store.get_status(run_id)
    except RunNotFoundError:
        raise not_found(f"Run with id={run_id} not found") from None


async def put_artifact(request):
    """The body, streamed into the blob store's incoming folder, becomes run file `path` of the
    run, or nothing is written."""
    service = request.app.state.service
    run_id, name = request.path_params["run_id"], request.path_params["path"]
    try:
        identity = [request.path_params[key] for key in
                    ("subscription_id", "resource_group", "workspace_name")]
        if not service.identity.matches(*identity):
            raise not_found(f"this server serves {service.identity.arm_id} only")
        claims = caller_claims(service, request)
        await run_in_threadpool(_check_run, service, claims, run_id)
        existing = set(await run_in_threadpool(service.store.file_names, run_id))
        refusal = _upload_refusal(name, existing)
        if refusal:
            status = 409 if refusal[0] == "Conflict" else 400
            raise ServiceError(status, refusal[0], refusal[1])
        blobs = BlobStore(service.home, service.tokens)
        temporary, _md5 = await _receive(request, blobs.incoming(), MAX_BLOB_BYTES)
        try:
            await run_in_threadpool(RunFileBlobs(service, blobs).commit, ARTIFACT_CONTAINER,
                                    artifact_blob_name(run_id, name), temporary)
        finally:
            (blobs.incoming() / temporary).unlink(missing_ok=True)
    except BlobError as error:
        return mlflow_error(error.status, error.code, error.message)
    except (ServiceError, AmlocalError) as error:
        refusal = as_service_error(error)
        if refusal is None:
            raise
        return mlflow_error(refusal.status, refusal.code, refusal.message)
    return JSONResponse({})


@operation(ARTIFACTS + "/{run_id}/{path:path}", ["GET"], errors=mlflow_error)
def download_artifact(call):
    return streamed_run_file(call.service.store, call.run_id, call.params["path"], "artifact")


@operation(ARTIFACTS, ["GET"], auth="caller", errors=mlflow_error)
def list_artifacts(call):
    """The entries of one folder of a run's artifacts: `path` is <run id>[/<folder>]."""
    path = str(call.query.get("path") or "").strip("/")
    run_id, _, folder = path.partition("/")
    if not run_id:
        raise bad_request("list the artifacts of a run: path=<run id>[/<folder>]")
    _check_run(call.service, call.claims, run_id)
    prefix = folder + "/" if folder else ""
    entries = {}
    for name in call.service.store.file_names(run_id):
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        head, below, _ = rest.partition("/")
        if below:
            entries.setdefault(head, {"path": head, "is_dir": True})
        else:  # no size: finding it would mean a look at the file outside the run-folder door
            entries[head] = {"path": head, "is_dir": False}
    return {"files": [entries[key] for key in sorted(entries)]}


ROUTES = [download_artifact, list_artifacts,
          [Route(ARTIFACTS + "/{run_id}/{path:path}", put_artifact, methods=["PUT"])],
          NOT_EMULATED]
