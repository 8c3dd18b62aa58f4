"""What every operation shares: its route, its checks on the caller and the request, its answer.

An operation is a plain (synchronous) function of a `Call`, declared with `operation(...)`; it
returns a JSON-ready value, a Response, or raises ServiceError. The wrapper reads the body (up to
a bound), checks the token, checks that the URL names the emulator's workspace and that a run id
in it is a plain one that the token may touch, runs the function in a worker thread (the run
history is SQLite) and renders amlocal's errors as Azure's.
"""

import json
import re
import sys
import traceback
from dataclasses import dataclass
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from amlocal.backends.history.store import is_plain_run_id
from amlocal.errors import AmlocalError, RunNotFoundError
from amlocal.validation import one_line
from amlocal.service.errors import ServiceError, as_service_error, bad_request, error_response
from amlocal.service.tokens import READ_SCOPE, READ_TOKEN_SECONDS, InvalidToken

# The workspace part of every workspace-scoped URL (ARM and the data plane alike).
WS = ("/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
      "/providers/Microsoft.MachineLearningServices/workspaces/{workspace_name}")
MAX_JSON_BODY = 16 << 20  # a metric batch of 45 values is a few kB; 16 MiB is far past any SDK call
MAX_RUN_ID = 512  # the longest run id the history takes (a child of a 255-character experiment)
_WORKSPACE_PARAMS = ("subscription_id", "resource_group", "workspace_name")


@dataclass
class Call:
    """One request, as an operation sees it."""

    service: object  # app.Service: the run history, backend, identity, tokens, endpoint
    method: str
    path: str
    params: dict
    query: dict
    body: bytes
    claims: object = None  # tokens.Claims of the caller (None for public operations)
    headers: dict = None  # the request's headers (lower-case names)

    def json(self):
        """The body as JSON (an empty body is {}); 400 with Azure's body when it is not JSON."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise bad_request(f"the request body is not valid JSON: {error}") from None

    def json_object(self):
        document = self.json()
        if not isinstance(document, dict):
            raise bad_request("the request body must be a JSON object")
        return document

    @property
    def run_id(self):
        return self.params.get("run_id")


CONTENT = "/amlocal/content/{run_id}/{path:path}"


def read_token(service, run_id):
    """A token that lets its holder read run `run_id`'s files for an hour (a SAS, on Azure)."""
    return service.tokens.issue(READ_SCOPE + run_id, READ_TOKEN_SECONDS)


def content_url(service, run_id, name, token=None):
    """The URL a client GETs, with no other credential, for run file `name`."""
    return (f"{service.endpoint}/amlocal/content/{quote(run_id)}/{quote(name)}"
            f"?sig={token or read_token(service, run_id)}")


def json_response(value, status=200):
    return value if isinstance(value, Response) else JSONResponse(value, status_code=status)


def operation(paths, methods, auth="token", status=200, max_body=MAX_JSON_BODY,
              errors=error_response):
    """The Routes (one per path of `paths`, a path or a tuple of them) whose handler is the
    decorated function of a Call.

    auth: "token" (a valid bearer token whose scope allows the URL's run, if it names one) or
    "public" (no token: discovery, and content URLs that carry their own signature) or
    "caller" (a valid bearer token of any scope: the operation decides what that scope allows).
    max_body: the largest body taken, in bytes (413 past it).
    errors: renders a refusal, (status, code, message, details) -> Response; Azure's services
    differ in their error bodies (Model Management's is not ARM's).
    """

    def decorate(function):
        async def endpoint(request):
            try:
                body = await _read_body(request, max_body)
                service = request.app.state.service
                call = Call(service=service, method=request.method, path=request.url.path,
                            params=dict(request.path_params), query=dict(request.query_params),
                            body=body, headers=dict(request.headers))
                _check_workspace(call)
                _check_run_id(call)
                if auth != "public":
                    call.claims = _caller(service, request)
                if auth == "token":
                    _check_scope(call)
                result = await run_in_threadpool(function, call)
                return json_response(result, status)
            except (ServiceError, AmlocalError) as error:
                refusal = as_service_error(error)
                if refusal is None:
                    return _internal_error(request, error)
                return errors(refusal.status, refusal.code, refusal.message, refusal.details)
            except Exception as error:  # a bug: said in Azure's shape, its traceback logged
                return _internal_error(request, error)

        endpoint.__name__ = function.__name__
        return [Route(path, endpoint, methods=list(methods))
                for path in ((paths,) if isinstance(paths, str) else paths)]

    return decorate


def _internal_error(request, error):
    traceback.print_exception(error, file=sys.stderr)
    return error_response(500, "ServiceError", f"amlocal's emulator failed on {request.method} "
                          f"{request.url.path}: {type(error).__name__}: {one_line(str(error))}")


async def _read_body(request, max_body):
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body):
        raise ServiceError(413, "RequestEntityTooLarge",
                           f"the request body is over {max_body} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise ServiceError(413, "RequestEntityTooLarge",
                               f"the request body is over {max_body} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_BEARER = re.compile(r"Bearer\s+(\S+)\Z", re.IGNORECASE)


def _caller(service, request):
    found = _BEARER.match(request.headers.get("authorization", ""))
    if not found:
        raise ServiceError(401, "AuthenticationFailed",
                           "the request has no bearer token (Authorization: Bearer ...): get a "
                           "workspace with amlocal.emulator.workspace()")
    try:
        return service.tokens.verify(found.group(1))
    except InvalidToken as error:
        raise ServiceError(401, "InvalidAuthenticationToken",
                           f"{error} (a workspace token comes from amlocal.emulator.auth() over "
                           "the run history this emulator serves: the same AMLOCAL_HOME)") from None


def caller_claims(service, request):
    """The Claims of a request's bearer token (401 with Azure's body without a valid one), for
    a route that streams its body and so is not an `operation`."""
    return _caller(service, request)


def _check_workspace(call):
    if all(name in call.params for name in _WORKSPACE_PARAMS):
        if not call.service.identity.matches(*(call.params[name] for name in _WORKSPACE_PARAMS)):
            raise ServiceError(404, "ResourceNotFound",
                               f"workspace {call.params['workspace_name']!r} of resource group "
                               f"{call.params['resource_group']!r} was not found: this emulator "
                               f"serves {call.service.identity.arm_id}")


def _check_run_id(call):
    run_id = call.run_id
    if run_id is not None and not (len(run_id) <= MAX_RUN_ID and is_plain_run_id(run_id)):
        raise bad_request(f"invalid run id {run_id[:100]!r}: letters, digits, '_', '-' and '.', "
                          f"up to {MAX_RUN_ID} characters", code="ValidationError")


def _check_scope(call):
    claims = call.claims
    if claims.is_workspace:
        return
    if call.run_id is None or not claims.allows_run(call.run_id, lambda run_id: _parent_of(call)):
        raise ServiceError(403, "AuthorizationFailed",
                           f"the token's scope ({claims.scope}) does not allow "
                           f"{call.method} {call.path}")


def _parent_of(call):
    """The parent of the URL's run: its record's, or for a run not created yet, the one the
    request creates it under (azureml-core's child_run PATCHes a new id with its parentRunId)."""
    try:
        return call.service.store.get_run(call.run_id)["parent_id"]
    except RunNotFoundError:
        if call.method != "PATCH":
            return None
        try:
            body = json.loads(call.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return None
        return body.get("parentRunId") if isinstance(body, dict) else None
