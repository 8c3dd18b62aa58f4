"""The web UI's ASGI app (Starlette): the pages, the JSON they fetch, a run's files, and the one
thing it changes, cancelling a run.

Everything a run's script controlled (metric names, tags, file names, log text) is untrusted:
the templates escape it (Jinja2 autoescape), files go out as attachments that a browser never
renders or sniffs, and a strict Content-Security-Policy allows scripts and styles from this
server only (no inline script: the session's token is a data attribute of the page). Cancel is
a POST that needs that token and comes from a page of this server (Origin, Sec-Fetch-Site).
"""

import csv
import hmac
import io
import json
import math
import secrets
import time
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from amlocal.backends import get_backend, open_run
from amlocal.backends.history.run_folder import printable
from amlocal.backends.history.store import RunStore
from amlocal.errors import AmlocalError, RunNotFoundError, RunRecordCorruptedError, UserInputError
from amlocal.ui import views

HERE = Path(__file__).resolve().parent
TOKEN_HEADER = "x-amlocal-token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY")]
# Pages and data are the history as it is now; the assets are kept and revalidated (ETag).
NO_STORE = (b"cache-control", b"no-store")
REVALIDATE = (b"cache-control", b"no-cache")
MAX_IMAGE_BYTES = 20 << 20
# A chart is a few hundred pixels wide: a longer curve is sent as the smallest and largest value
# of each of this many stretches (so spikes and dips stay), the full values as CSV or JSON.
CHART_BUCKETS = 1000
IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
               (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


class GuardedApp:
    """ASGI wrapper: the security headers on every response, and a Host header that names this
    server (a page of another site that rebinds its DNS name to 127.0.0.1 is refused)."""

    def __init__(self, app, allowed_hosts):
        self.app = app
        self.allowed_hosts = allowed_hosts  # None: any (a host the user chose to expose)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            response = Response(f"unknown host {host[:100]!r}\n", status_code=421,
                                media_type="text/plain")
            return await response(scope, receive, self._with_headers(send))
        caching = REVALIDATE if scope["path"].startswith("/static/") else NO_STORE
        await self.app(scope, receive, self._with_headers(send, caching))

    @staticmethod
    def _with_headers(send, caching=NO_STORE):
        async def sending(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *SECURITY_HEADERS,
                                                 caching])
            await send(message)
        return sending


def create_app(home, origins=None):
    """The UI over the run history at `home`. `origins`: the http://host:port this server is
    reached at (its Host header and the Origin of its pages); None accepts any host."""
    ui = UI(home, origins)
    routes = [
        Route("/", ui.runs_page),
        Route("/runs/{run_id}", ui.run_page),
        Route("/runs/{run_id}/download", ui.download),
        Route("/runs/{run_id}/image", ui.image),
        Route("/compare", ui.compare_page),
        Route("/compute", ui.compute_page),
        Route("/models", ui.models_page),
        Route("/services", ui.services_page),
        Route("/api/runs", ui.api_runs),
        Route("/api/runs/{run_id}/status", ui.api_status),
        Route("/api/runs/{run_id}/series", ui.api_series),
        Route("/api/runs/{run_id}/metric.{format}", ui.api_metric_download),
        Route("/api/runs/{run_id}/log", ui.api_log),
        Route("/api/runs/{run_id}/cancel", ui.api_cancel, methods=["POST"]),
        Route("/api/compare", ui.api_compare),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        RunNotFoundError: ui.error_page, UserInputError: ui.error_page,
        RunRecordCorruptedError: ui.error_page, AmlocalError: ui.error_page})
    app.state.ui = ui
    hosts = None if origins is None else {origin.split("://", 1)[1] for origin in origins}
    return GuardedApp(app, hosts)


class UI:
    def __init__(self, home, origins):
        self.home = Path(home)
        self.store = RunStore(home)
        self.origins = origins
        self.token = secrets.token_urlsafe(32)  # this server's session: embedded in its pages
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True),
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["q"] = lambda text: quote(str(text), safe="")
        self.templates.filters["tojson_attr"] = lambda value: json.dumps(value, allow_nan=False)

    def render(self, name, status_code=200, **context):
        page = self.templates.get_template(name).render(token=self.token, home=str(self.home),
                                                        **context)
        return HTMLResponse(page, status_code=status_code)

    async def error_page(self, request, error):
        status = (404 if isinstance(error, RunNotFoundError) else
                  400 if isinstance(error, UserInputError) else 500)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(error)}, status_code=status)
        return self.render("error.html", status_code=status, message=str(error), status=status)

    # -- pages ----------------------------------------------------------------------------------

    async def runs_page(self, request):
        filters = views.parse_table_query(request.query_params)
        table = views.runs_table(self.store, filters, time.time())
        return self.render("runs.html", title="Runs", nav="runs", **table)

    async def run_page(self, request):
        run_id = request.path_params["run_id"]
        page = views.run_page(self.store, run_id, time.time())
        return self.render("run.html", title=f"Run {run_id}", nav="runs", **page)

    async def compare_page(self, request):
        run_ids = _compare_ids(request)
        runs = [views.run_details(self.store.get_run(run_id), self.store.run_dir(run_id))
                for run_id in run_ids]
        for details in runs:
            details["created"] = (details["created_at"] or "").replace("T", " ")[:19]
        names = {}
        for run_id in run_ids:
            for item in self.store.metric_summaries(run_id):
                if item["type"] == "scalar":
                    names.setdefault(item["name"], set()).add(run_id)
        # the metrics every run logged first, then the others
        metrics = sorted(names, key=lambda name: (-len(names[name]), name))
        metric = request.query_params.get("metric") or (metrics[0] if metrics else None)
        return self.render("compare.html", title="Compare runs", nav="compare", runs=runs,
                           run_ids=run_ids, metrics=metrics, metric=metric,
                           parameters=_differing_parameters(runs))

    async def compute_page(self, request):
        return self.render("compute.html", title="Compute targets", nav="compute",
                           **views.compute_page(get_backend("local", home=self.home)))

    async def models_page(self, request):
        return self.render("models.html", title="Models", nav="models",
                           **views.models_page(get_backend("local", home=self.home)))

    async def services_page(self, request):
        return self.render("services.html", title="Services", nav="services",
                           **views.services_page(self.store))

    # -- a run's files ----------------------------------------------------------------------------

    def _opened(self, request):
        run_id = request.path_params["run_id"]
        name = request.query_params.get("name") or ""
        self.store.get_status(run_id)
        opening = self.store.open_verified_file(run_id, name)  # checks the name: no way out
        return name, opening, opening.__enter__()

    async def download(self, request):
        name, opening, handle = self._opened(request)

        def chunks():
            try:
                while block := handle.read(1 << 20):
                    yield block
            finally:
                opening.__exit__(None, None, None)

        return StreamingResponse(chunks(), media_type="application/octet-stream",
                                 headers=_attachment(name))

    async def image(self, request):
        name, opening, handle = self._opened(request)
        try:
            data = handle.read(MAX_IMAGE_BYTES + 1)
        finally:
            opening.__exit__(None, None, None)
        mime = next((kind for magic, kind in IMAGE_TYPES if data.startswith(magic)), None)
        if mime is None or len(data) > MAX_IMAGE_BYTES:
            raise UserInputError(f"{printable(name)} is not a PNG, JPEG or GIF image of at most "
                                 f"{MAX_IMAGE_BYTES >> 20} MB: download it instead")
        return Response(data, media_type=mime, headers=_attachment(name))

    # -- JSON -----------------------------------------------------------------------------------

    async def api_runs(self, request):
        filters = views.parse_table_query(request.query_params)
        table = views.runs_table(self.store, filters, time.time())
        return JSONResponse({key: table[key] for key in ("rows", "total", "page", "pages")})

    async def api_status(self, request):
        run_id = request.path_params["run_id"]
        record = self.store.get_run(run_id)
        names = sorted({item["name"] for item in self.store.metric_summaries(run_id)})
        return JSONResponse({"status": record["status"], "metric_names": names,
                             "terminal": views.run_status.is_terminal(record["status"]),
                             "stages": [{"name": stage["name"], "status": stage["status"]}
                                        for stage in record["stages"]]})

    async def api_series(self, request):
        run_id = request.path_params["run_id"]
        name = request.query_params.get("name") or ""
        series = self.store.scalar_series(run_id, name, buckets=CHART_BUCKETS)
        if not series["total"]:
            raise UserInputError(f"run {run_id} has no scalar metric {name[:100]!r}")
        return JSONResponse({"run": run_id, "name": name, **_chartable(series)})

    async def api_metric_download(self, request):
        run_id = request.path_params["run_id"]
        name = request.query_params.get("name") or ""
        kind = request.path_params["format"]
        if kind not in ("csv", "json"):
            raise UserInputError(f"a metric downloads as csv or json, not {kind[:20]!r}")
        records = self.store.metric_records_named(run_id, [name])
        if not records:
            self.store.get_status(run_id)
            raise UserInputError(f"run {run_id} has no metric {name[:100]!r}")
        file_name = f"{views.safe_file_part(name)}.{kind}"
        if kind == "json":
            body = json.dumps([{key: record[key] for key in ("type", "value", "step", "logged_at")}
                               for record in records])
            return Response(body, media_type="application/json", headers=_attachment(file_name))
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["index", "step", "value", "logged_at"])
        for index, record in enumerate(records, start=1):
            value = record["value"]
            writer.writerow([index, "" if record["step"] is None else record["step"],
                             value if isinstance(value, (int, float, str)) else json.dumps(value),
                             record["logged_at"]])
        return Response(out.getvalue(), media_type="text/csv", headers=_attachment(file_name))

    async def api_log(self, request):
        try:
            offset = max(0, int(request.query_params.get("offset") or 0))
        except ValueError:
            raise UserInputError("offset must be a whole number of bytes") from None
        return JSONResponse(views.log_since(self.store, request.path_params["run_id"], offset))

    async def api_compare(self, request):
        run_ids = _compare_ids(request)
        name = request.query_params.get("name") or ""
        series = []
        for run_id in run_ids:
            found = self.store.scalar_series(run_id, name, buckets=CHART_BUCKETS)
            if found["total"]:
                series.append({"run": run_id, **_chartable(found)})
        return JSONResponse({"name": name, "series": series,
                             "uses_steps": all(item["uses_steps"] for item in series)})

    async def api_cancel(self, request):
        refusal = self._refusal(request)
        if refusal:
            return JSONResponse({"error": refusal}, status_code=403)
        run_id = request.path_params["run_id"]
        handle = open_run(run_id, home=self.home)
        handle.cancel(reason="canceled from the amlocal UI")
        return JSONResponse({"run": run_id, "status": self.store.get_status(run_id)})

    def _refusal(self, request):
        """Why a state-changing request is refused (None: it is not)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
        origin = request.headers.get("origin")
        if origin is not None and self.origins is not None and origin not in self.origins:
            return f"cross-site request refused (Origin: {origin[:100]})"
        token = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return "this request needs the token of a page of this UI session"
        return None


def _chartable(series):
    """The series with its points counted, and any infinity (JSON has none) as a gap."""
    series["y"] = [None if value is None or not math.isfinite(value) else value
                   for value in series["y"]]
    for key in ("min", "max", "last"):
        if series[key] is not None and not math.isfinite(series[key]):
            series[key] = None
    return {**series, "shown": len(series["y"])}


def _compare_ids(request):
    """The runs to compare: ?runs=a,b or ?run=a&run=b (the run table's checkboxes)."""
    ids = [part for value in request.query_params.getlist("runs") for part in value.split(",")]
    ids += request.query_params.getlist("run")
    ids = list(dict.fromkeys(part.strip() for part in ids if part.strip()))
    if not ids:
        raise UserInputError("name the runs to compare: /compare?runs=RUN_ID,RUN_ID")
    if len(ids) > 20:
        raise UserInputError("compare at most 20 runs at once")
    return ids


def _differing_parameters(runs):
    """[(parameter, [value per run])] of the parameters whose values are not all the same."""
    flat = []
    for details in runs:
        values = {"experiment": details["experiment"], "script": details["script"],
                  "arguments": " ".join(map(str, details["arguments"])),
                  "compute": details["compute"], "executor": details["executor"],
                  "nodes": details["node_count"], "status": details["status"]}
        for key, value in (details.get("environment") or {}).items():
            values[f"environment.{key}"] = json.dumps(value) if isinstance(value, (dict, list)) else value
        for key, value in views.visible_tags(details["tags"]).items():
            values[f"tag {key}"] = value
        flat.append(values)
    keys = list(dict.fromkeys(key for values in flat for key in values))
    rows = [(key, [views.metric_blocks.text_of(values.get(key, "")) for values in flat])
            for key in keys]
    return [row for row in rows if len(set(row[1])) > 1]


def _attachment(name):
    """Content-Disposition that makes the browser save the file under its base name, never
    render it (an HTML file a run wrote must not run as a page of this server)."""
    base = name.rsplit("/", 1)[-1]
    plain = "".join(char if char.isascii() and char.isprintable() and char not in '"\\;' else "_"
                    for char in base) or "file"
    return {"content-disposition": f"attachment; filename=\"{plain}\"; "
                                   f"filename*=UTF-8''{quote(base.encode('utf-8', 'surrogateescape'), safe='')}"}
