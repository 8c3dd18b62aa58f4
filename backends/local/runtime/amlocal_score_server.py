"""amlocal's scoring server, inside a web service's container (standard library only).

It keeps the contract of Azure ML's inference server (azureml-inference-server-http) for an
entry script with init() and run(raw_data):
    GET  /              200 "Healthy" once init() has returned
    POST /score         the request body (text) to run(), or for a run() decorated with
                        inference-schema the body's JSON object as keyword arguments (as Azure's
                        server does); its result as JSON; 500 if run() raises
    GET  /swagger.json  an OpenAPI 2 document when run() is decorated with inference-schema, else 404
With a keys file (AMLOCAL_KEYS_FILE: {"primaryKey", "secondaryKey"}), /score asks for
`Authorization: Bearer <key>` (401 without it), reading the file on every request so that a
regenerated key applies at once. run() is called for one request at a time, as by Azure's server
with its default single worker. An init() that raises ends the process with its traceback on
stderr: the container's log, what get_logs() shows.

It listens on a Unix socket (AMLOCAL_SCORE_SOCKET) in a folder shared with the service's relay
container, which publishes it on the host's loopback; this container has no network at all.
"""

import hmac
import http.server
import importlib.util
import json
import os
import socketserver
import sys
import threading
import traceback

APP_ROOT = os.environ.get("AML_APP_ROOT", "/var/azureml-app")
_run_lock = threading.Lock()


def load_entry_script():
    path = os.path.join(APP_ROOT, os.environ["AZUREML_ENTRY_SCRIPT"])
    sys.path.insert(0, os.path.dirname(path))
    spec = importlib.util.spec_from_file_location("main", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for function in ("init", "run"):
        if not callable(getattr(module, function, None)):
            raise AttributeError(f"the entry script {path} has no {function}() function")
    return module


def current_keys():
    """The keys a request may carry; None when the service has no authentication."""
    keys_file = os.environ.get("AMLOCAL_KEYS_FILE")
    if not keys_file:
        return None
    with open(keys_file, encoding="utf-8") as handle:
        keys = json.load(handle)
    return [key for key in (keys.get("primaryKey"), keys.get("secondaryKey")) if key]


def schema_decorated(run):
    """Whether run() uses inference-schema's decorators (the package may not be installed)."""
    try:
        from inference_schema.schema_util import is_schema_decorated
    except ImportError:
        return False
    return is_schema_decorated(run)


def swagger_document(run):
    """The OpenAPI document of a run() decorated with inference-schema, or None."""
    if not schema_decorated(run):
        return None
    from inference_schema.schema_util import get_input_schema, get_output_schema

    input_schema, output_schema = get_input_schema(run), get_output_schema(run)
    return {"swagger": "2.0", "info": {"title": "amlocal web service", "version": "1.0"},
            "schemes": ["http"], "consumes": ["application/json"], "produces": ["application/json"],
            "paths": {"/score": {"post": {
                "operationId": "RunMLService", "description": "Run web service's model",
                "parameters": [{"name": "serviceInputPayload", "in": "body",
                                "schema": {"$ref": "#/definitions/ServiceInput"}}],
                "responses": {"200": {"description": "Success",
                                      "schema": {"$ref": "#/definitions/ServiceOutput"}}}}}},
            "definitions": {"ServiceInput": input_schema or {}, "ServiceOutput": output_schema or {}}}


class ScoringHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "amlocal-score"
    entry = None  # the entry script's module, set once init() has returned

    def address_string(self):
        return "client"  # a Unix socket has no peer address; the relay is the only peer

    def log_message(self, format, *args):
        print(f"{self.log_date_time_string()} {format % args}", flush=True)

    def _reply(self, status, body, content_type="application/json"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("", "/score"):
            self._reply(200, "Healthy", "text/plain")
        elif path == "/swagger.json":
            document = swagger_document(self.entry.run)
            if document is None:
                self._reply(404, json.dumps({"message": "swagger.json is served for entry scripts "
                                             "whose run() uses inference-schema's decorators"}))
            else:
                self._reply(200, json.dumps(document))
        else:
            self._reply(404, json.dumps({"message": f"no route {path}"}))

    def do_POST(self):
        if self.path.split("?", 1)[0].rstrip("/") != "/score":
            self._reply(404, json.dumps({"message": f"no route {self.path}"}))
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        keys = current_keys()
        if keys is not None and not self._authorized(keys):
            self._reply(401, json.dumps({"message": "Authorization: Bearer <key> is required "
                                         "(the service's primary or secondary key)"}))
            return
        text = body.decode("utf-8", errors="replace")
        try:
            with _run_lock:
                if schema_decorated(self.entry.run):
                    result = self.entry.run(**json.loads(text))
                else:
                    result = self.entry.run(text)
            answer = json.dumps(result, default=_as_json)
        except Exception:
            traceback.print_exc()
            self._reply(500, json.dumps({"message": traceback.format_exc(limit=-1).strip()}))
            return
        self._reply(200, answer)

    def _authorized(self, keys):
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and any(
            hmac.compare_digest(given.strip().encode(), key.encode()) for key in keys)


def _as_json(value):
    """What json cannot write itself: NumPy arrays and scalars (what models return)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"run() returned a {type(value).__name__}, which is not JSON")


class ScoringServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # socketserver's default backlog of 5 refuses (EAGAIN) a sixth client connecting at once.
    request_queue_size = 128


def main():
    socket_path = os.environ["AMLOCAL_SCORE_SOCKET"]
    print(f"amlocal scoring server: loading {os.environ['AZUREML_ENTRY_SCRIPT']} "
          f"(AZUREML_MODEL_DIR={os.environ.get('AZUREML_MODEL_DIR')})", flush=True)
    try:
        entry = load_entry_script()
        entry.init()
    except BaseException:
        print("init() failed:", file=sys.stderr, flush=True)
        traceback.print_exc()
        sys.exit(1)
    print("init() completed; scoring on /score", flush=True)
    ScoringHandler.entry = entry
    if os.path.exists(socket_path):
        os.unlink(socket_path)  # left by the container's previous start
    with ScoringServer(socket_path, ScoringHandler) as server:
        os.chmod(socket_path, 0o660)
        server.serve_forever()


if __name__ == "__main__":
    main()
