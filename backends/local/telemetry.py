"""Reading what a script logged (runtime/amlocal_run.py writes it) into the run history.

The script appends JSON events to <run>/telemetry/events.jsonl and puts uploaded files and logged
images under <run>/telemetry/uploads/. `ingest` reads the events since the last call, in one
transaction with the offset it got to, so a second reader (or a crash between calls) never loses
or repeats one. Events:

    {"kind": "metric", "name", "type", "value", "step"?, "description"?}   a metric value
    {"kind": "tags" | "properties", ...} / {"kind": "remove_tags", "tags": [...]}
    {"kind": "upload", "name"}            a file now in telemetry/uploads/[child-<digest of its id>/]<name>
    {"kind": "fail", "error"}             Run.fail() of the run itself
    {"kind": "child", "name"}             a child run started (its id is the event's "run")
    {"kind": "status", "status", "error"?} a child run completed, failed or was canceled

An event with "run" belongs to that child run of the run. Metric rows keep `metric_type` and the
JSON `value` as logged: scalar (a value), list (a list), row ({column: value}), table ({column:
[values]}), image ({"file": run file name}), confusion_matrix / accuracy_table / residuals /
predictions (the logged JSON object).
"""

import hashlib
import json
import time

from amlocal.backends import status as run_status
from amlocal.backends.history.run_folder import NotARunFile, RunFolder
from amlocal.backends.history.store import (FILE_FOLDERS, TELEMETRY_FILE, UPLOADS_FOLDER,
                                          is_plain_run_id, run_file_location)
from amlocal.errors import UserInputError

_FIELDS = {"metric": ("name", "type", "value"), "tags": ("tags",), "remove_tags": ("tags",),
           "properties": ("properties",), "upload": ("name",), "fail": (), "child": (),
           "status": ("status",)}


# A child run's id is a plain one (runtime/amlocal_run.py refuses other ids given to child_run)
# of up to 512 characters, as a run id of the longest experiment name with a child's suffix
# needs; store.run_folder_name bounds the folder it names.
MAX_CHILD_RUN_ID = 512


def _is_child_run_id(value):
    return isinstance(value, str) and 0 < len(value) <= MAX_CHILD_RUN_ID and is_plain_run_id(value)


def child_uploads_folder(run_id):
    """Where, under telemetry/uploads/, a child run's uploads are: what runtime/amlocal_run.py's
    function of the same name gives (it runs in the script's Python and cannot import this)."""
    return "child-" + hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def parse_event(line):
    """A telemetry event as a dict, or None for a line that is not one (never raises)."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("kind") not in _FIELDS:
        return None
    if any(field not in event for field in _FIELDS[event["kind"]]):
        return None
    if "run" in event and not _is_child_run_id(event["run"]):
        return None
    if event["kind"] in ("metric", "upload") and not isinstance(event["name"], str):
        return None
    if event["kind"] in ("tags", "properties") and not isinstance(event[event["kind"]], dict):
        return None
    if event["kind"] == "remove_tags" and not isinstance(event["tags"], list):
        return None
    return event


class _Batch:
    """The runs one ingest touches: their tags, properties and errors, written back at the end."""

    def __init__(self, store, conn, run_id):
        self.store = store
        self.conn = conn
        self.run_id = run_id
        self.runs = {}
        self.next_position = {}
        self.metric_rows = []

    def run(self, run_id):
        if run_id not in self.runs:
            row = self.conn.execute("SELECT tags, properties, error, parent_id FROM runs WHERE id = ?",
                                    (run_id,)).fetchone()
            if row is None or (run_id != self.run_id and row["parent_id"] != self.run_id):
                return None  # an event for a run that is not this run or one of its children
            self.runs[run_id] = {"tags": json.loads(row["tags"]),
                                 "properties": json.loads(row["properties"]), "error": row["error"]}
        return self.runs[run_id]

    def add_metric(self, run_id, event):
        key = (run_id, event["name"])
        if key not in self.next_position:
            self.next_position[key] = self.conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM metrics WHERE run_id = ? AND name = ?",
                key).fetchone()[0]
        self.metric_rows.append((run_id, event["name"], self.next_position[key], event["type"],
                                 json.dumps(event["value"]), event.get("step"),
                                 event.get("description", ""), event.get("t", time.time())))
        self.next_position[key] += 1

    def start_child(self, child_id, name):
        """Record a child run the script started, Running as Azure shows it (see _CHILD_START)."""
        if self.conn.execute("SELECT 1 FROM runs WHERE id = ?", (child_id,)).fetchone():
            return
        insert_child_in(self.store, self.conn, self.run_id, child_id, name)
        start_child_in(self.store, self.conn, child_id)

    def end_child(self, child_id, status, error):
        if end_child_in(self.store, self.conn, child_id, status) and error:
            self.run(child_id)["error"] = error  # written with the child's row in write_back

    def move_upload(self, run_id, name):
        """Move an uploaded file into its run's files. The name, and everything on the way, is
        the script's: a name that could leave the folder, a link or a non-file anywhere, and
        the upload is left where it is (not a run file), never followed."""
        uploads = ("telemetry/uploads" if run_id == self.run_id
                   else f"telemetry/uploads/{child_uploads_folder(run_id)}")
        try:
            source_name, destination = f"{uploads}/{name}", run_file_location(name)
        except UserInputError:
            return
        try:
            with RunFolder(self.store.run_dir(self.run_id)) as parent:
                if run_id == self.run_id:
                    parent.move_from(parent, source_name, destination)
                else:
                    with RunFolder(self.store.run_dir(run_id)) as child:
                        child.move_from(parent, source_name, destination)
        except FileNotFoundError:
            pass  # a run folder gone: reported as damaged by whatever reads the run next

    def write_back(self):
        self.conn.executemany(
            "INSERT INTO metrics (run_id, name, position, metric_type, value, step, description, "
            "logged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self.metric_rows)
        for run_id, state in self.runs.items():
            self.conn.execute("UPDATE runs SET tags = ?, properties = ?, error = ? WHERE id = ?",
                              (json.dumps(state["tags"]), json.dumps(state["properties"]),
                               state["error"], run_id))


# A child run started by its parent's script (Run.child_run) is Running at once: it needs no
# environment or node of its own, those of its parent are ready. So it takes the shortest legal
# path there in one moment: NotStarted -> Preparing -> Queued -> Running.
_CHILD_START = tuple(run_status.path_to(run_status.NOT_STARTED, run_status.RUNNING))


def insert_child_in(store, conn, parent_id, child_id, display_name=None):
    """Record child run `child_id` of run `parent_id`, NotStarted, with its folders (inside the
    caller's transaction): Run.child_run, through telemetry or the emulator's PATCH."""
    parent = conn.execute("SELECT * FROM runs WHERE id = ?", (parent_id,)).fetchone()
    child_dir = store.run_dir(child_id)
    for folder in FILE_FOLDERS + (UPLOADS_FOLDER,):
        (child_dir / folder).mkdir(parents=True, exist_ok=True)
    store.insert_run_in(
        conn, run_id=child_id, experiment=parent["experiment"], executor=parent["executor"],
        compute=parent["compute"], spec=dict(json.loads(parent["spec"]), child_of=parent_id),
        tags={}, backend=parent["backend"], driver_pid=parent["driver_pid"], parent_id=parent_id,
        display_name=display_name or None)


def start_child_in(store, conn, child_id):
    """A NotStarted child run starts: Running at once, its script being its parent's."""
    for status in _CHILD_START:
        store.set_status_in(conn, child_id, status)
    # Its script is its parent's, running already: of its stages only Running is its own.
    store.start_stage_in(conn, child_id, "Running")


_PATH_TO = {run_status.COMPLETED: (run_status.FINALIZING, run_status.COMPLETED),
            run_status.FAILED: (run_status.FAILED,),
            run_status.CANCELED: (run_status.CANCEL_REQUESTED, run_status.CANCELED)}
_STAGE_END = {run_status.COMPLETED: run_status.STAGE_COMPLETED,
              run_status.FAILED: run_status.STAGE_FAILED,
              run_status.CANCELED: run_status.STAGE_CANCELED}


def end_child_in(store, conn, child_id, status):
    """Take a running child run to `status` through the state machine; False if it had ended."""
    current = conn.execute("SELECT status FROM runs WHERE id = ?", (child_id,)).fetchone()
    if status not in _PATH_TO or current is None or run_status.is_terminal(current["status"]):
        return False
    for step in _PATH_TO[status]:
        store.set_status_in(conn, child_id, step)
    store.finish_stage_in(conn, child_id, "Running", _STAGE_END[status])
    return True


def end_open_children(store, parent_id, status):
    """When a run ends, its children still running end with it (with its status)."""
    with store.transaction() as conn:
        for row in conn.execute("SELECT id FROM runs WHERE parent_id = ?", (parent_id,)).fetchall():
            end_child_in(store, conn, row["id"], status)


def ingest(store, run_id):
    """Read the run's new telemetry into the history; return how many metric values it held."""
    try:
        with RunFolder(store.run_dir(run_id)) as folder:
            # The script may have replaced the file by a link or a FIFO: neither is read.
            handle = folder.open(f"telemetry/{TELEMETRY_FILE}")
    except (FileNotFoundError, NotARunFile):
        return 0
    with handle, store.transaction() as conn:
        offset = conn.execute("SELECT telemetry_offset FROM runs WHERE id = ?",
                              (run_id,)).fetchone()["telemetry_offset"]
        handle.seek(offset)
        data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]
        if not complete:
            return 0
        batch = _Batch(store, conn, run_id)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            event = parse_event(line)
            if event is None:
                continue  # a torn line from a killed script, or not an event; skip it
            target = event.get("run", run_id)
            if event["kind"] == "child" and target != run_id:
                batch.start_child(target, event.get("name"))
            state = batch.run(target)
            if state is None:
                continue
            _apply(batch, target, state, event)
        batch.write_back()
        conn.execute("UPDATE runs SET telemetry_offset = ? WHERE id = ?",
                     (offset + len(complete), run_id))
    return len(batch.metric_rows)


def _apply(batch, target, state, event):
    kind = event["kind"]
    if kind == "metric":
        batch.add_metric(target, event)
    elif kind == "tags":
        state["tags"].update(event["tags"])
    elif kind == "remove_tags":
        for tag in event["tags"]:
            state["tags"].pop(str(tag), None)
    elif kind == "properties":
        state["properties"].update(event["properties"])
    elif kind == "upload":
        batch.move_upload(target, event["name"])
    elif kind == "fail" and not state["error"]:
        state["error"] = f"Run.fail() called by the script: {event.get('error')}"
    elif kind == "status" and target != batch.run_id:
        batch.end_child(target, event["status"], event.get("error"))
