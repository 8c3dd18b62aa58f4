"""What each page shows, read from the run history through backends/ (the history's RunStore and
its queries, the local backend's registries): plain dicts and lists for the templates, which
escape every value (Jinja2's autoescape). Nothing here writes to the history."""

import datetime
import json
import math
import re

from amlocal.backends import status as run_status
from amlocal.backends.base import HYPERPARAMETER_TAG_PREFIX, SYSTEM_METRIC_PREFIX
from amlocal.backends.history.records import run_details
from amlocal.backends.history.metric_shapes import size_text as shown_size
from amlocal.backends.history.run_folder import printable
from amlocal.backends.history.store import DRIVER_LOG
from amlocal.errors import AmlocalError, UserInputError
from amlocal.ui import metric_blocks

PAGE_SIZE = 50
LOG_TAIL_BYTES = 64 << 10


def when(timestamp):
    """An epoch time as the pages show it: UTC, to the second."""
    if timestamp is None:
        return ""
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


def duration_text(seconds):
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def size_text(size):
    return "?" if size is None else shown_size(size)


def safe_file_part(text):
    """A metric name made safe as a file name (its CSV or JSON download)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "metric"


def visible_tags(tags):
    """A run's tags less the sweep's bookkeeping ones (a child's hyperparameters, shown apart)."""
    return {key: value for key, value in tags.items()
            if not str(key).startswith(HYPERPARAMETER_TAG_PREFIX)}


# -- the runs table -----------------------------------------------------------------------------

def parse_table_query(query):
    """The runs table's filters, sort and page from the URL's query ({name: text})."""
    try:
        page = max(1, int(query.get("page") or 1))
    except ValueError:
        raise UserInputError(f"page must be a whole number, not {query.get('page')[:40]!r}") from None
    return {"experiment": query.get("experiment") or None, "status": query.get("status") or None,
            "backend": query.get("backend") or None, "tag": query.get("tag") or None,
            "sort": query.get("sort") or "created", "descending": query.get("order") != "asc",
            "page": page}


def runs_table(store, filters, now):
    """The runs table's page: rows, counts, filter choices."""
    rows, total = store.run_table(
        experiment=filters["experiment"], status=filters["status"], backend=filters["backend"],
        tag=filters["tag"], sort=filters["sort"], descending=filters["descending"],
        offset=(filters["page"] - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    for row in rows:
        ended = row["ended_at"]
        row["created"] = when(row["created_at"])
        row["duration"] = duration_text((ended if ended is not None else now) - row["created_at"])
        row["tags"] = visible_tags(row["tags"])
    pages = max(1, math.ceil(total / PAGE_SIZE))
    live = any(not run_status.is_terminal(row["status"]) for row in rows)
    return {"rows": rows, "total": total, "page": filters["page"], "pages": pages, "live": live,
            "facets": store.run_facets(), "filters": filters}


# -- one run ------------------------------------------------------------------------------------

def run_page(store, run_id, now):
    """Everything the run's page shows but the curves' values (fetched by the page)."""
    record = store.get_run(run_id)
    details = {**run_details(record, store.run_dir(run_id)), **backend_view(store, record)}
    created = record["created_at"]
    summaries = store.metric_summaries(run_id)
    curves = [item for item in summaries if item["type"] == "scalar" and item["count"] > 1]
    others = [item for item in summaries if item not in curves]
    records = store.metric_records_named(run_id, {item["name"] for item in others})
    other_keys = {(item["name"], item["type"]) for item in others}
    groups = {}
    for row in records:
        if (row["name"], row["type"]) in other_keys:
            groups.setdefault((row["name"], row["type"]), []).append(row)
    singles = [rows[0] for (name, kind), rows in groups.items()
               if kind == "scalar" and len(rows) == 1]
    blocks = [metric_blocks.group_blocks(name, kind, rows, run_id)
              for (name, kind), rows in groups.items() if not (kind == "scalar" and len(rows) == 1)]

    def system(name):
        return name.startswith(SYSTEM_METRIC_PREFIX)

    return {
        "run": details,
        "terminal": run_status.is_terminal(details["status"]),
        "cancelable": details["backend"] == "local" and not run_status.is_terminal(details["status"]),
        "created": when(created),
        "duration": duration_text((details["duration_s"] if details["duration_s"] is not None
                                   else now - created)),
        "timeline": stage_timeline(record, now),
        "status_history": [{"status": status, "at": when(at), "since": duration_text(at - created)}
                           for status, at in store.status_history(run_id)],
        "tags": visible_tags(details["tags"]),
        "curves": [item for item in curves if not system(item["name"])],
        "system_curves": [item for item in curves if system(item["name"])],
        "singles": [single for single in singles if not system(single["name"])],
        "system_singles": [single for single in singles if system(single["name"])],
        "blocks": blocks,
        "metric_names": sorted({item["name"] for item in summaries}),
        "files": run_files(store, run_id),
        "children": children(store, details),
        "log": log_tail(store, run_id),
    }


def backend_view(store, record):
    """What a run's own backend adds to its record, read without asking the cloud: an Azure
    run's portal URL ({} for a local run, or where that backend cannot be loaded here)."""
    if record["backend"] == "local":
        return {}
    from amlocal.backends import open_run

    try:
        details = open_run(record["id"], home=store.home).get_details(refresh=False)
    except (AmlocalError, ImportError):
        return {}
    return {"portal_url": details.get("portal_url")}


def stage_timeline(record, now):
    """The stages as bars on one time axis from the run's creation: {name, status, left, width
    (percent of the axis), duration}; drawn as SVG by the template."""
    start = record["created_at"]
    end = record["ended_at"] or now
    for stage in record["stages"]:
        if stage["ended_at"] is not None:
            end = max(end, stage["ended_at"])
    span = max(end - start, 1e-6)
    bars = []
    for stage in record["stages"]:
        began = stage["started_at"]
        finished = stage["ended_at"] if stage["ended_at"] is not None else (
            now if began is not None else None)
        bar = {"name": stage["name"], "status": stage["status"], "detail": stage["detail"],
               "started": when(began), "ended": when(stage["ended_at"]),
               "duration": duration_text(None if began is None else finished - began),
               "left": 0.0, "width": 0.0}
        if began is not None:
            bar["left"] = round(100 * (began - start) / span, 3)
            bar["width"] = round(max(100 * (finished - began) / span, 0.4), 3)
        bars.append(bar)
    return {"bars": bars, "span": duration_text(span)}


def run_files(store, run_id):
    files = []
    for name in store.file_names(run_id):
        try:
            size = store.file_path(run_id, name).stat().st_size
        except (AmlocalError, OSError):
            size = None  # gone since it was listed
        files.append({"name": name, "shown": printable(name), "size": size_text(size)})
    return files


def log_tail(store, run_id, max_bytes=LOG_TAIL_BYTES):
    """{offset (where the page's log ends), text, truncated} of the driver log's last bytes."""
    try:
        handle = store.open_file(run_id, DRIVER_LOG)
    except UserInputError:
        return {"offset": 0, "text": "", "truncated": False}
    with handle:
        size = handle.seek(0, 2)
        start = max(0, size - max_bytes)
        handle.seek(start)
        data = handle.read(size - start)
    if start:  # start at a whole line
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    return {"offset": size, "text": data.decode("utf-8", "replace"), "truncated": start > 0}


def log_since(store, run_id, offset, max_bytes=256 << 10):
    """The driver log's complete lines after byte `offset`: {offset, text, status, terminal}."""
    status = store.get_status(run_id)
    terminal = run_status.is_terminal(status)
    try:
        handle = store.open_file(run_id, DRIVER_LOG)
    except UserInputError:
        return {"offset": offset, "text": "", "status": status, "terminal": terminal}
    with handle:
        size = handle.seek(0, 2)
        if offset > size:  # the log was replaced: start again
            offset = 0
        handle.seek(offset)
        data = handle.read(max_bytes)
    if not terminal or len(data) == max_bytes:
        cut = data.rfind(b"\n")  # a line still being written waits for its end
        data = data[:cut + 1] if cut >= 0 else b""
    return {"offset": offset + len(data), "text": data.decode("utf-8", "replace"),
            "status": status, "terminal": terminal}


def children(store, details):
    """The run's child runs; for a sweep with each child's hyperparameters and best primary
    metric, and the parallel-coordinates data."""
    rows = store.child_rows(details["id"])
    sweep = details.get("sweep")
    for row in rows:
        row["created"] = when(row["created_at"])
    if not sweep:
        return {"rows": rows, "sweep": None}
    metric = sweep["primary_metric_config"]["name"]
    goal = sweep["primary_metric_config"]["goal"]
    values = store.scalar_values_of_runs([row["id"] for row in rows], metric)
    best = max if goal == "maximize" else min
    parameters = []
    for row in rows:
        tag = details["tags"].get(HYPERPARAMETER_TAG_PREFIX + row["id"])
        try:
            row["hyperparameters"] = json.loads(tag) if tag else {}
        except ValueError:
            row["hyperparameters"] = {}
        for name in row["hyperparameters"]:
            if name not in parameters:
                parameters.append(name)
        found = values.get(row["id"]) or []
        row["best"] = best(found) if found else None
    return {"rows": rows, "sweep": {"metric": metric, "goal": goal, "parameters": parameters,
                                    "parallel": parallel_coordinates(rows, parameters, metric)}}


def parallel_coordinates(rows, parameters, metric):
    """Each child as a line across axes (its hyperparameters, then the primary metric), every
    axis scaled to 0..1; a choice of texts is placed by its rank. The page draws it with uPlot."""
    axes = []
    for name in [*parameters, metric]:
        raw = [row["best"] if name == metric else row["hyperparameters"].get(name) for row in rows]
        numbers = [value for value in raw if isinstance(value, (int, float))
                   and not isinstance(value, bool)]
        if len(numbers) == len([value for value in raw if value is not None]) and numbers:
            low, high = min(numbers), max(numbers)
            scaled = [None if value is None else
                      (0.5 if high == low else (value - low) / (high - low)) for value in raw]
            axes.append({"name": name, "low": low, "high": high, "values": scaled, "raw": raw})
        else:
            choices = sorted({json.dumps(value) for value in raw if value is not None})
            scaled = [None if value is None else
                      (choices.index(json.dumps(value)) / max(len(choices) - 1, 1))
                      for value in raw]
            axes.append({"name": name, "choices": choices, "values": scaled,
                         "raw": [None if value is None else json.dumps(value) for value in raw]})
    return {"axes": axes, "runs": [row["id"] for row in rows]}


# -- compute, models, services ------------------------------------------------------------------

def compute_page(backend):
    targets = backend.compute_targets()
    found = []
    for name in targets.names():
        try:
            found.append(targets.describe(name))
        except AmlocalError as error:
            found.append({"name": name, "error": str(error)})
    return {"targets": found}


def models_page(backend):
    models = backend.models().list()
    for model in models:
        model["created"] = when(model.get("created_at"))
        model["size"] = size_text(model["size_bytes"]) if "size_bytes" in model else ""
    return {"models": models}


def services_page(store):
    from amlocal.backends.history.services import ServiceRecords

    services = []
    for record in ServiceRecords(store).list():
        # never the keys: a page is no place for credentials
        services.append({"name": record["name"], "kind": record["kind"], "state": record["state"],
                         "error": record["error"], "port": record["port"],
                         "image": record["image"], "tags": record["tags"],
                         "description": record["description"],
                         "created": when(record["created_at"]),
                         "updated": when(record["updated_at"]),
                         "model_ids": [f"{model.get('name')}:{model.get('version')}"
                                       for model in record["settings"].get("models") or []
                                       if isinstance(model, dict)]})
    return {"services": services}
