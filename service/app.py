"""The emulator as one ASGI app: each service family's routes, the request log, and 501 for the
rest, so that a user sees exactly which operation is not emulated yet."""

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from amlocal.backends.history.store import RunStore
from amlocal.validation import one_line
from amlocal.service import (artifacts, blobs, children, compute, datastores, events, execution,
                             experiments, history, metrics, mlflow, mlflow_artifacts,
                             mlflow_search, models, snapshots, workspace)
from amlocal.service.config import WorkspaceIdentity, emulator_dir
from amlocal.service.errors import error_response
from amlocal.service.tokens import TokenIssuer, WORKSPACE_SCOPE

# blobs first: its routes are chosen by the Host header, before any path route.
FAMILIES = (blobs, workspace, experiments, compute, history, children, metrics, artifacts,
            snapshots, datastores, execution, models, events, mlflow, mlflow_search,
            mlflow_artifacts)
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
REQUEST_LOG = "requests.log"


@dataclass
class Service:
    """What the operations share: the run history at `home` and the workspace it is served as."""

    home: Path
    endpoint: str
    identity: WorkspaceIdentity
    tokens: TokenIssuer
    store: RunStore

    @classmethod
    def over(cls, home, endpoint):
        home = Path(home)
        return cls(home=home, endpoint=endpoint.rstrip("/"),
                   identity=WorkspaceIdentity.of_home(home),
                   tokens=TokenIssuer(emulator_dir(home) / "token-secret"), store=RunStore(home))

    def backend(self):
        """The local backend over this history (made per use: it is cheap and holds no state)."""
        from amlocal.backends.local import LocalBackend

        return LocalBackend(self.home)

    def workspace_token(self):
        return self.tokens.issue(WORKSPACE_SCOPE)


async def not_implemented(request):
    return error_response(501, "NotImplemented",
                          f"amlocal's emulator does not emulate {request.method} "
                          f"{request.url.path} yet")


async def _not_implemented_asgi(scope, receive, send):
    await (await not_implemented(Request(scope, receive)))(scope, receive, send)


class RequestLog:
    """ASGI middleware: one line per request (method, path, status, milliseconds) to stderr and
    to $AMLOCAL_HOME/emulator/requests.log. The query string is left out: content URLs carry
    their signature there."""

    def __init__(self, app, log_path, echo=True):
        self.app = app
        self._path = log_path
        self._echo = echo
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status, logged = [500], [False]

        def log():
            logged[0] = True
            self.write(f"{scope['method']} {scope['path']} {status[0]} "
                       f"{(time.monotonic() - started) * 1000:.1f}ms")

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                log()  # before the last byte goes: a client that has its answer finds the line
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not logged[0]:
                log()

    def write(self, line):
        # A path may hold anything a client sent: the line stays one ASCII line.
        line = one_line(line).encode("ascii", "backslashreplace").decode("ascii")
        with self._lock:
            if self._echo:
                print(line, file=sys.stderr, flush=True)
            with open(self._path, "a", encoding="ascii") as log:
                log.write(line + "\n")


def create_app(home, endpoint, echo=True):
    """The emulator over the run history at `home`, as seen at `endpoint`; `echo`: its request
    log goes to stderr too (a run's driver serves it without: stderr is the user's terminal)."""
    service = Service.over(home, endpoint)
    routes = [route for family in FAMILIES for routes in family.ROUTES for route in routes]
    # Last, for any method: a path that an operation has but a method it has not is a 501 too.
    routes.append(Route("/{anything:path}", not_implemented, methods=ALL_METHODS))
    app = Starlette(routes=routes)
    app.router.default = _not_implemented_asgi  # what no route matches (a path with a newline)
    app.state.service = service
    log_path = emulator_dir(home) / REQUEST_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return RequestLog(app, log_path, echo=echo)
