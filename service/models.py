"""Model Management (v1.0): assets, models (register, get, list, patch, delete) and the files of
a registered model, served over amlocal's model registry (backends/history/models.py), so that a
model registered through the emulator is in `amlocal models list` and one registered by
`amlocal models register` is found by the SDK: one registry.

How azureml-core registers a model: it POSTs an asset (a name and the artifact prefix of the
model's files: `ExperimentRun/dcid.{run}/outputs/model.npz` for run.register_model), then a model
whose url is `aml://asset/{asset id}`. The emulator keeps such assets as small JSON files under
$AMLOCAL_HOME/emulator/assets/ until a model names them; registering copies the files into the
registry, with the registry's checks (Azure's name rule, a model_path that the run has).

How it downloads one: it GETs the model's asset and lists the asset's artifact prefix
(artifact v2.0 prefix/contentinfo), then GETs each contentUri. The asset of registered model
NAME:VERSION has the id NAME:VERSION and the prefix `RegisteredModel/{VERSION}/{NAME}/{model}`;
its files are served from the registry's own copy, each checked against its recorded SHA-256,
by a URL signed for that model only (a SAS, on Azure).

Model Management answers errors in its own shape (ModelErrorResponse: code, statusCode, message,
details), which azureml-core reads to raise WebserviceException ("ModelNotFound: ...").
"""

import functools
import json
import os
import re
import secrets
import tempfile
import time
import uuid
from urllib.parse import quote, urlencode

from starlette.responses import JSONResponse, Response, StreamingResponse

from amlocal.backends.history.models import ModelNotFoundError, ModelRegistry
from amlocal.backends.history.run_folder import name_parts
from amlocal.backends.history.store import is_plain_run_id, iso_time
from amlocal.errors import UserInputError
from amlocal.service.blobs import BlobStore
from amlocal.service.config import emulator_dir
from amlocal.service.errors import ServiceError, bad_request
from amlocal.service.tokens import InvalidToken
from amlocal.service.wire import WS, operation

MMS = "/modelmanagement/v1.0" + WS
ARTIFACTS = "/artifact/v2.0" + WS + "/artifacts"
MODEL_ORIGIN = "RegisteredModel"
MODEL_CONTENT = "/amlocal/models/{name}/{version}/{path:path}"
MODEL_READ_SCOPE = "model:"
MODEL_READ_SECONDS = 3600
ASSETS_FOLDER = "assets"
LOCAL_UPLOAD = "LocalUpload"  # the artifact origin of Model.register's files
UPLOADS_CONTAINER = "model-uploads"  # the blob container they are uploaded to
MAX_UPLOAD_PATHS = 500  # azureml-core sends 50 at a time (SUPPORTED_NUM_EMPTY_ARTIFACTS)
MIME_TYPE = "application/json"  # what azureml-core sends and Azure records for a model
DEFAULT_PAGE = 255  # azureml-core's largest page_count
_ASSET_ID = re.compile(r"[0-9a-f]{32}\Z")
# What azureml-core names an upload's container ({yymmddTHHMMSS}-{uuid[:8]}), and the like.
_UPLOAD_CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# Model Management's top-level error code for each status (the detail says what happened).
_MMS_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
              409: "Conflict", 413: "RequestEntityTooLarge", 500: "InternalServerError",
              501: "NotImplemented"}


def mms_error(status, code, message, details=()):
    """Model Management's error body (azureml-core's ModelErrorResponse)."""
    return JSONResponse({"code": _MMS_CODES.get(status, code), "statusCode": status,
                         "message": message,
                         "details": [{"code": code, "message": message}, *details],
                         "correlation": {"RequestId": str(uuid.uuid4())}}, status_code=status)


def mms_operation(paths, methods, **options):
    """operation(...) with Model Management's error body; a model that is not in the registry
    is its 404 with the detail code ModelNotFound."""

    def decorate(function):
        @functools.wraps(function)
        def answering(call):
            try:
                return function(call)
            except ModelNotFoundError as error:
                raise ServiceError(404, "ModelNotFound", str(error)) from None

        return operation(paths, methods, errors=mms_error, **options)(answering)

    return decorate


def registry(call):
    return ModelRegistry(call.service.store)


# -- assets ------------------------------------------------------------------------------------

def _assets_dir(service):
    folder = emulator_dir(service.home) / ASSETS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _model_asset(record):
    """The asset of a registered model: its files, by the registry's prefix."""
    return {"id": record["id"], "name": record["name"], "type": None, "description": None,
            "artifacts": [{"id": None, "prefix": f"{MODEL_ORIGIN}/{record['version']}/"
                                                  f"{record['name']}/{record['model_path']}"}],
            "kvTags": {}, "properties": {}, "runid": record["run_id"], "meta": None,
            "createdTime": record["created_time"]}


def _stored_asset(service, asset_id):
    if not _ASSET_ID.match(asset_id):
        return None
    path = _assets_dir(service) / f"{asset_id}.json"
    try:
        asset = json.loads(path.read_text())
        asset["artifacts"][0]["prefix"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise ServiceError(500, "ServiceError", f"asset {asset_id} is damaged ({path}: "
                           f"{error}); it is not served") from None
    return asset


def find_asset(call, asset_id):
    """An asset created by POST .../assets, or a registered model's (id NAME:VERSION)."""
    if ":" in asset_id:
        name, _, version = asset_id.partition(":")
        return _model_asset(registry(call).get(name, version))
    asset = _stored_asset(call.service, asset_id)
    if asset is None:
        raise ServiceError(404, "AssetNotFound", f"asset {asset_id[:100]!r} was not found in "
                           "this workspace")
    return asset


def _model_files_prefix(prefix):
    """(origin, container, path) of an asset's artifact prefix: a run's files
    (ExperimentRun/dcid.RUN/PATH, from run.register_model) or Model.register's upload
    (LocalUpload/CONTAINER/PATH); ServiceError otherwise."""
    parts = prefix.split("/", 2) if isinstance(prefix, str) else []
    if len(parts) != 3 or not all(parts):
        raise bad_request(f"an asset's artifact prefix is ORIGIN/CONTAINER/PATH, got "
                          f"{str(prefix)[:200]!r}")
    origin, container, path = parts
    if origin == LOCAL_UPLOAD:
        _check_upload_container(container)
    elif origin != "ExperimentRun" or not container.startswith("dcid.") or \
            not is_plain_run_id(container[len("dcid."):]):
        raise ServiceError(501, "NotImplemented", f"a model from artifacts of {origin[:100]}/"
                           f"{container[:100]} is not emulated: only a run's files "
                           "(ExperimentRun/dcid.RUN/PATH) and uploads (LocalUpload/...)")
    return origin, container, path


def _check_files_allowed(call, origin, container):
    """A workspace token may make models of any files; a run's token (AZUREML_RUN_TOKEN, what
    a script's own run.register_model sends) only of its own run's files."""
    claims = call.claims
    if claims.is_workspace or (origin == "ExperimentRun"
                               and claims.allows_run(container[len("dcid."):])):
        return
    raise ServiceError(403, "AuthorizationFailed", f"the token's scope ({claims.scope}) does "
                       f"not allow a model of {origin}/{container[:100]}")


@mms_operation(MMS + "/assets", ["POST"], auth="caller")
def create_asset(call):
    body = call.json_object()
    name = body.get("name")
    artifacts = body.get("artifacts")
    if not isinstance(name, str) or not name:
        raise bad_request("an asset needs a name")
    if not isinstance(artifacts, list) or len(artifacts) != 1 or \
            not isinstance(artifacts[0], dict) or not artifacts[0].get("prefix"):
        raise bad_request("an asset here holds exactly one artifact prefix: "
                          "{\"artifacts\": [{\"prefix\": \"ORIGIN/CONTAINER/PATH\"}]}")
    _check_files_allowed(call, *_model_files_prefix(artifacts[0]["prefix"])[:2])
    for field in ("kvTags", "properties", "meta"):
        if not isinstance(body.get(field) or {}, dict):
            raise bad_request(f"an asset's {field} is an object")
    asset_id = uuid.uuid4().hex
    asset = {"id": asset_id, "name": name, "type": body.get("type"),
             "description": body.get("description"),
             "artifacts": [{"id": None, "prefix": artifacts[0]["prefix"]}],
             "kvTags": body.get("kvTags") or {}, "properties": body.get("properties") or {},
             "runid": body.get("runid"), "meta": body.get("meta"),
             "createdTime": iso_time(time.time())}
    folder = _assets_dir(call.service)
    # Written whole under a name of its own, then renamed: a reader never sees half of one.
    temporary = folder / f".{asset_id}.{os.getpid()}-{secrets.token_hex(4)}"
    temporary.write_text(json.dumps(asset))
    os.replace(temporary, folder / f"{asset_id}.json")
    return asset


@mms_operation(MMS + "/assets/{asset_id}", ["GET"])
def get_asset(call):
    return find_asset(call, call.params["asset_id"])


# -- models ------------------------------------------------------------------------------------

def _text(value):
    return value if isinstance(value, str) else json.dumps(value)


def model_dto(record):
    """A Model (what Model Management answers) of a registry record."""
    return {
        "id": record["id"], "name": record["name"], "version": record["version"],
        "framework": record["framework"], "frameworkVersion": record["framework_version"],
        "description": record["description"], "url": f"aml://asset/{record['id']}",
        "mimeType": MIME_TYPE, "createdTime": record["created_time"], "modifiedTime": None,
        "unpack": False, "parentModelId": None, "derivedModelIds": None,
        "runId": record["run_id"], "experimentName": record["experiment_name"],
        # Model Management keeps tags and properties as strings.
        "kvTags": {key: _text(value) for key, value in record["tags"].items()},
        "properties": {key: _text(value) for key, value in record["properties"].items()},
        "datasets": [], "sampleInputData": None, "sampleOutputData": None,
        "resourceRequirements": None, "createdBy": {"userName": "amlocal"},
    }


_NOT_EMULATED_FIELDS = ("datasets", "sampleInputData", "sampleOutputData",
                        "resourceRequirements", "unpack")


@mms_operation(MMS + "/models", ["POST"], auth="caller")
def register_model(call):
    body = call.json_object()
    used = [field for field in _NOT_EMULATED_FIELDS if body.get(field)]
    if used:
        raise ServiceError(501, "NotImplemented", "registering a model with "
                           f"{', '.join(used)} is not emulated yet")
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith("aml://asset/"):
        raise bad_request(f"a model's url is aml://asset/ASSET_ID (of an asset created with "
                          f"POST .../assets), got {str(url)[:200]!r}")
    asset = find_asset(call, url[len("aml://asset/"):])
    origin, container, path = _model_files_prefix(asset["artifacts"][0]["prefix"])
    _check_files_allowed(call, origin, container)
    metadata = dict(tags=body.get("kvTags"), properties=body.get("properties"),
                    description=body.get("description"), framework=body.get("framework"),
                    framework_version=body.get("frameworkVersion"))
    if origin == LOCAL_UPLOAD:
        record = _register_upload(call, body.get("name"), container, path, metadata)
    else:
        record = registry(call).register_from_run(container[len("dcid."):], body.get("name"),
                                                  path, **metadata)
    return model_dto(record)


def _model_id(call):
    """(name, version) of the URL's model id NAME:VERSION; a name alone names no model."""
    name, separator, version = call.params["model_id"].partition(":")
    if not separator:
        raise ModelNotFoundError(f"model id {name[:100]!r} names no model: a model's id is "
                                 "NAME:VERSION")
    return name, version


@mms_operation(MMS + "/models/{model_id}", ["GET"])
def get_model(call):
    return model_dto(registry(call).get(*_model_id(call)))


def _filter(text):
    """azureml-core's tags/properties query ("key,key2=value") as the registry's filter."""
    if not text:
        return None
    return [list(entry.split("=", 1)) if "=" in entry else entry for entry in text.split(",")]


def _page_bounds(query):
    try:
        count = int(query.get("count") or DEFAULT_PAGE)
        offset = int(query.get("$skipToken") or 0)
    except ValueError:
        raise bad_request("count and $skipToken are whole numbers") from None
    if count < 1 or offset < 0:
        raise bad_request("count is at least 1 and $skipToken at least 0")
    return count, offset


@mms_operation(MMS + "/models", ["GET"])
def list_models(call):
    query = call.query
    count, offset = _page_bounds(query)
    records = registry(call).list(
        name=query.get("name"), tags=_filter(query.get("tags")),
        properties=_filter(query.get("properties")), run_id=query.get("runId"),
        latest=query.get("latestVersionOnly", "").lower() == "true",
        framework=query.get("framework"))
    served = [record for record in records if "corrupted" not in record]
    page = {"value": [model_dto(record) for record in served[offset:offset + count]]}
    if offset + count < len(served):
        rest = {key: value for key, value in query.items() if key != "$skipToken"}
        page["nextLink"] = (f"{call.service.endpoint}{call.path}?"
                            f"{urlencode({**rest, '$skipToken': offset + count})}")
    return page


def _changes(patch, record):
    """The registry's update arguments for a JSON patch that azureml-core sends."""
    if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
        raise bad_request("the body is a JSON patch: a list of {op, path, value}")
    changes = {}
    for op in patch:
        where, value = (op.get("op"), op.get("path")), op.get("value")
        if where == ("replace", "/kvTags"):
            changes["tags"] = value
        elif where == ("replace", "/description"):
            if not isinstance(value, str):
                raise bad_request("a model's description is a string")
            changes["description"] = value
        elif where == ("add", "/properties"):
            if not isinstance(value, dict):
                raise bad_request("properties must be an object")
            # azureml-core sends all properties: the new ones are what differs (an old key
            # with another value is refused by the registry: properties are immutable).
            changes["add_properties"] = {key: item for key, item in value.items()
                                         if record["properties"].get(key) != item}
        else:
            raise ServiceError(501, "NotImplemented", f"the patch {op.get('op')!r} of "
                               f"{str(op.get('path'))[:100]!r} is not emulated yet")
    return changes


@mms_operation(MMS + "/models/{model_id}", ["PATCH"])
def patch_model(call):
    name, version = _model_id(call)
    models = registry(call)
    changes = _changes(call.json(), models.get(name, version))
    return model_dto(models.update(name, version, **changes))


@mms_operation(MMS + "/models/{model_id}", ["DELETE"])
def delete_model(call):
    registry(call).delete(*_model_id(call))
    return Response(status_code=200)


# -- a registered model's files ----------------------------------------------------------------

def _model_file_url(call, record, path, token):
    return (f"{call.service.endpoint}/amlocal/models/{quote(record['name'])}/"
            f"{record['version']}/{quote(path)}?sig={token}")


@mms_operation(ARTIFACTS + f"/prefix/contentinfo/{MODEL_ORIGIN}/{{version}}/{{name}}"
               "/{path:path}", ["GET"])
def list_model_files(call):
    """The files under a registered model's prefix, each with a URL signed for that model."""
    record = registry(call).get(call.params["name"], call.params["version"])
    prefix = call.params["path"]
    token = call.service.tokens.issue(f"{MODEL_READ_SCOPE}{record['id']}", MODEL_READ_SECONDS)
    return {"value": [{"contentUri": _model_file_url(call, record, entry["path"], token),
                       "origin": MODEL_ORIGIN, "container": str(record["version"]),
                       "path": f"{record['name']}/{entry['path']}"}
                      for entry in record["files"]
                      if entry["path"] == prefix or entry["path"].startswith(prefix + "/")],
            "continuationToken": None, "nextLink": None}


@mms_operation(MODEL_CONTENT, ["GET"], auth="public")
def download_model_file(call):
    name, version, path = (call.params[key] for key in ("name", "version", "path"))
    try:
        claims = call.service.tokens.verify(call.query.get("sig", ""))
    except InvalidToken as error:
        raise ServiceError(403, "AuthorizationFailure", f"the content URL's signature is not "
                           f"valid: {error}") from None
    if claims.scope != f"{MODEL_READ_SCOPE}{name}:{version}":
        raise ServiceError(403, "AuthorizationFailure",
                           "the content URL's signature is for another model")
    try:
        handle = registry(call).open_file(name, version, path)
    except UserInputError as error:
        raise ServiceError(404, "ModelNotFound", str(error)) from None
    return StreamingResponse(_chunks(handle), media_type="application/octet-stream")


def _chunks(handle):
    with handle:
        yield from iter(functools.partial(handle.read, 1 << 20), b"")


# -- Model.register's upload ------------------------------------------------------------------

def _blob_store(service):
    return BlobStore(service.home, service.tokens)


def _check_upload_container(container):
    if not _UPLOAD_CONTAINER.match(container):
        raise bad_request(f"invalid LocalUpload container {container[:100]!r}: letters, digits, "
                          "'.', '_' and '-', up to 128 characters")


def _upload_blob(container, path):
    return f"{container}/{path}"


@operation(ARTIFACTS + f"/batch/metadata/{LOCAL_UPLOAD}/{{container}}", ["POST"])
def create_upload_artifacts(call):
    """The artifacts of a model that Model.register uploads: a SAS URI for each path's blob PUT
    (into the blob store's container for model uploads, under CONTAINER/PATH)."""
    container = call.params["container"]
    _check_upload_container(container)
    paths = call.json_object().get("paths")
    if not isinstance(paths, list) or not 0 < len(paths) <= MAX_UPLOAD_PATHS or \
            not all(isinstance(entry, dict) for entry in paths):
        raise bad_request(f"`paths` is a list of 1 to {MAX_UPLOAD_PATHS} {{\"path\": ...}}")
    for entry in paths:  # all checked before any is answered
        name_parts(entry.get("path") if isinstance(entry.get("path"), str) else "",
                   "model file name")
    store = _blob_store(call.service)
    artifacts, contents = {}, {}
    for entry in paths:
        path = entry["path"]
        where = {"origin": LOCAL_UPLOAD, "container": container, "path": path}
        artifacts[path] = {"artifactId": f"{LOCAL_UPLOAD}/{container}/{path}", **where,
                           "etag": None, "createdTime": None, "dataPath": None}
        contents[path] = {**where, "contentUri": store.sas_url(
            UPLOADS_CONTAINER, _upload_blob(container, path), write=True)}
    return {"artifacts": artifacts, "artifactContentInformation": contents, "errors": {}}


def _register_upload(call, name, container, path, metadata):
    """Register the files uploaded under LocalUpload/CONTAINER/PATH (a file or a folder)."""
    store = _blob_store(call.service)
    blob = _upload_blob(container, path)
    if not any(found == blob or found.startswith(blob + "/")
               for found in store.names(UPLOADS_CONTAINER, blob)):
        raise bad_request(f"no files were uploaded under {LOCAL_UPLOAD}/{container}/{path}")
    with tempfile.TemporaryDirectory(dir=emulator_dir(call.service.home)) as scratch:
        store.copy_to(UPLOADS_CONTAINER, container, scratch)
        return registry(call).register(name, os.path.join(scratch, path), **metadata)


ROUTES = [create_asset, get_asset, register_model, get_model, list_models, patch_model,
          delete_model, list_model_files, download_model_file, create_upload_artifacts]
