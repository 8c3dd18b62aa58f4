"""The local run history: SQLite for records, stages and metrics, folders for files.

Layout under $AMLOCAL_HOME (default ~/.amlocal):

    amlocal.db                      runs, stages, status history, metrics
    runs/<run folder>/snapshot/     the source folder as submitted (read-only by convention)
    runs/<run folder>/outputs/      ./outputs of the run       } the run's files, as
    runs/<run folder>/logs/         ./logs of the run          } get_file_names()
    runs/<run folder>/azureml-logs/ image build and driver log } lists them
    runs/<run folder>/telemetry/    events the script logged, read into the database

A run's folder is named by its id, or where the id is too long for a file name (or no plain
one), by `run_folder_name`.

Every process opens its own short-lived connections; WAL mode and a busy timeout let concurrent
runs and readers share the file. Status changes go through `set_status`, which asks the state
machine (backends.status) and writes with a compare-and-set inside one IMMEDIATE transaction.
"""

import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from amlocal.backends import status as run_status
from amlocal.backends.base import STAGES
from amlocal.backends.history.run_folder import (NotARunFile, RunFolder, copy_hashing, name_parts,
                                               printable)
from amlocal.errors import (IllegalTransitionError, RunNotFoundError, RunRecordCorruptedError,
                            UserInputError)

FILE_FOLDERS = ("outputs", "logs", "azureml-logs")
# Files a script uploads under other names (run.upload_file, log_image) live here, listed and
# downloaded by the name they were given.
UPLOADS_FOLDER = "uploads"
RESERVE_BYTES = 8 << 20
TELEMETRY_FILE = "events.jsonl"
BUILD_LOG = "azureml-logs/20_image_build_log.txt"
DRIVER_LOG = "azureml-logs/70_driver_log.txt"

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    number INTEGER NOT NULL,
    experiment TEXT NOT NULL,
    status TEXT NOT NULL,
    backend TEXT NOT NULL,
    executor TEXT NOT NULL,
    compute TEXT NOT NULL,
    spec TEXT NOT NULL,
    image TEXT,
    exit_code INTEGER,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    driver_pid INTEGER,
    container_id TEXT,
    script_pid INTEGER,
    telemetry_offset INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment, created_at);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at REAL,
    ended_at REAL,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS status_history (
    run_id TEXT NOT NULL REFERENCES runs (id),
    status TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    metric_type TEXT NOT NULL,
    value TEXT NOT NULL,
    step INTEGER,
    description TEXT NOT NULL DEFAULT '',
    logged_at REAL NOT NULL,
    PRIMARY KEY (run_id, name, position)
);
"""

# Compute targets, their nodes and the queue in front of them (backends/local/compute.py).
_SCHEMA_V2 = """
ALTER TABLE runs ADD COLUMN nodes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN preemptions INTEGER NOT NULL DEFAULT 0;
CREATE TABLE compute_targets (
    name TEXT PRIMARY KEY,
    vm_size TEXT NOT NULL,
    vm_priority TEXT NOT NULL,
    min_nodes INTEGER NOT NULL,
    max_nodes INTEGER NOT NULL,
    idle_seconds_before_scaledown INTEGER NOT NULL,
    allow_overcommit INTEGER NOT NULL,
    emulate_gpus INTEGER NOT NULL,
    created_at REAL NOT NULL,
    modified_at REAL NOT NULL
);
CREATE TABLE nodes (
    target TEXT NOT NULL,
    node_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT,
    created_at REAL NOT NULL,
    idle_since REAL,
    PRIMARY KEY (target, node_id)
);
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    run_id TEXT NOT NULL UNIQUE,
    node_count INTEGER NOT NULL,
    enqueued_at REAL NOT NULL
);
CREATE INDEX queue_by_target ON queue (target, seq);
"""

# What PostProcessing found in ./outputs and ./logs, so damage found later is reported.
_SCHEMA_V3 = """
CREATE TABLE files (
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""

# Child runs (Run.child_run in a script) and the display name a run may be given.
_SCHEMA_V4 = """
ALTER TABLE runs ADD COLUMN parent_id TEXT;
ALTER TABLE runs ADD COLUMN display_name TEXT;
CREATE INDEX runs_by_parent ON runs (parent_id);
"""

# The model registry (backends/history/models.py): each name's last version (never reused), the
# registered versions, and the size and SHA-256 of each file, so damage found later is reported.
_SCHEMA_V5 = """
CREATE TABLE model_names (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE models (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    model_path TEXT NOT NULL,
    run_id TEXT REFERENCES runs (id),
    run_path TEXT,
    experiment_name TEXT,
    description TEXT,
    framework TEXT,
    framework_version TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX models_by_run ON models (run_id);
CREATE TABLE model_files (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (name, version, path),
    FOREIGN KEY (name, version) REFERENCES models (name, version) ON DELETE CASCADE
);
"""

# Schema steps in order; a history at version N gets the steps after N.
_MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4, _SCHEMA_V5)
SCHEMA_VERSION = len(_MIGRATIONS)

# Columns that executors may set besides status (which only set_status writes).
_UPDATABLE = {"image", "driver_pid", "container_id", "script_pid", "error", "exit_code",
              "preemptions"}


def _use_wal(conn, timeout_s=30):
    """Switch the database to WAL, so readers (runs list, logs -f) never wait for a writing run.

    WAL is a property of the file, so this only changes anything the first time. SQLite answers a
    journal-mode change with "database is locked" at once, ignoring the busy timeout, while
    another process holds the write lock (two processes opening a new history together), hence
    the retries.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def default_home():
    return Path(os.environ.get("AMLOCAL_HOME") or Path.home() / ".amlocal").expanduser()


def new_run_id(experiment):
    """Azure ML's local run id shape: <experiment>_<unix seconds>_<8 hex digits>.

    azureml-core builds it the same way whatever the experiment name's length (up to 255), so an
    id can be 275 characters long: longer than a file name may be. See `run_folder_name`.
    """
    return f"{experiment}_{int(time.time())}_{secrets.token_hex(4)}"


# Longest run id used as its folder's name as it is; room is left under the file systems' 255
# bytes for the ".creating-" prefix of a folder being assembled.
RUN_FOLDER_NAME_MAX = 200
_PLAIN_FOLDER_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def is_plain_run_id(text):
    """Letters, digits, '_', '-' and '.', not starting with '.': an id that names no other folder."""
    return _PLAIN_FOLDER_NAME.fullmatch(text) is not None


def run_folder_name(run_id):
    """The name of the run's folder under runs/: its id where that is a short, plain file name,
    else a readable prefix of the id, '+' and a digest of the whole id. Stable; distinct ids get
    distinct folders ('+' is in no plain name, and the digest is 64 bits of SHA-256)."""
    if len(run_id) <= RUN_FOLDER_NAME_MAX and is_plain_run_id(run_id):
        return run_id
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:RUN_FOLDER_NAME_MAX - len(digest) - 1]
    return f"{readable.lstrip('.')}+{digest}"


class RunStore:
    """The run history at `home`. Cheap to create; safe to use from many processes at once."""

    def __init__(self, home=None):
        self.home = Path(home) if home is not None else default_home()
        self.runs_dir = self.home / "runs"
        self.db_path = self.home / "amlocal.db"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.reserve_path = self.home / ".reserve"
        self._ensure_reserve()
        with self._connection() as conn:
            _use_wal(conn)
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Read again under the lock: another process may have migrated meanwhile.
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    for step in _MIGRATIONS[version:]:
                        for statement in step.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

    def _ensure_reserve(self):
        """Keep a few MB of the disk in reserve (a file of zeros).

        When the disk fills during a run, `free_reserve` gives that space back so that the run can
        still be recorded as Failed with its reason, instead of being left half-written.
        """
        if self.reserve_path.exists() or self.free_bytes() < 4 * RESERVE_BYTES:
            return  # taking the reserve back from a nearly full disk would fill it again
        partial = self.reserve_path.with_suffix(".partial")
        try:
            with open(partial, "wb") as handle:
                for _ in range(RESERVE_BYTES >> 20):
                    handle.write(bytes(1 << 20))
            os.replace(partial, self.reserve_path)
        except OSError:
            partial.unlink(missing_ok=True)  # no room for it now; the next store tries again

    def free_bytes(self):
        """Bytes this process can still write where the run history lives."""
        stats = os.statvfs(self.home)
        # root may also use the blocks a file system keeps back for it
        blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail
        return blocks * stats.f_frsize

    def free_reserve(self):
        """Give the reserve back to the disk; True if there was one."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        return True

    @contextmanager
    def _connection(self):
        """A short-lived connection in autocommit mode; transactions are begun explicitly."""
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            yield conn
        except sqlite3.DatabaseError as error:
            if not _is_corruption(error):
                raise
            raise RunRecordCorruptedError(
                f"the run history database {self.db_path} is damaged ({error}): move it aside "
                "(the run folders next to it keep their files) and amlocal starts a new one") from None
        finally:
            conn.close()

    @contextmanager
    def transaction(self):
        """A connection inside one IMMEDIATE transaction, committed on success.

        IMMEDIATE takes the database's write lock at once, so a read-then-write inside it (a
        compare-and-set, a node allocation) is never interleaved with another process's.
        """
        with self._connection() as conn:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- creating runs ------------------------------------------------------------------------

    def create_run(self, *, experiment, executor, compute, spec, fill_snapshot, backend="local",
                   driver_pid=None, also=None, run_id=None, parent_id=None):
        """Create a run in NotStarted with its snapshot; return its id.

        `fill_snapshot(folder)` writes the source snapshot. The run folder is assembled under a
        temporary name and renamed into place before the record is inserted, so a failure at any
        point leaves neither a folder nor a record. `also(conn, run_id)`, if given, runs inside
        the record's transaction (the run's place in its target's queue is taken there).
        `run_id` and `parent_id` name a child run (a sweep's children are <parent id>_<index>).
        """
        run_id = run_id or new_run_id(experiment)
        staging = self.runs_dir / f".creating-{run_folder_name(run_id)}"
        final = self.run_dir(run_id)
        try:
            staging.mkdir()
            fill_snapshot(staging / "snapshot")
            for folder in FILE_FOLDERS + (UPLOADS_FOLDER, "telemetry", "telemetry/uploads"):
                (staging / folder).mkdir(exist_ok=True)
            os.rename(staging, final)
            with self.transaction() as conn:
                self.insert_run_in(conn, run_id=run_id, experiment=experiment, executor=executor,
                                   compute=compute, spec=spec, tags=spec.get("tags", {}),
                                   backend=backend, driver_pid=driver_pid, parent_id=parent_id)
                if also is not None:
                    also(conn, run_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            raise
        return run_id

    def insert_run_in(self, conn, *, run_id, experiment, executor, compute, spec, tags, backend,
                      driver_pid, parent_id=None, display_name=None):
        """The record of a new run, NotStarted with its stages, inside the caller's transaction.

        create_run's (and, for a child run its parent's script starts, telemetry.py's) one way
        of writing it; the run's folder must exist already.
        """
        now = time.time()
        number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE experiment = ?",
                              (experiment,)).fetchone()[0]
        conn.execute(
            "INSERT INTO runs (id, number, experiment, status, backend, executor, compute, spec, "
            "created_at, tags, driver_pid, parent_id, display_name) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, number, experiment, run_status.NOT_STARTED, backend, executor, compute,
             json.dumps(spec), now, json.dumps(tags), driver_pid, parent_id, display_name))
        conn.executemany("INSERT INTO stages (run_id, name, position, status) VALUES (?, ?, ?, ?)",
                         [(run_id, name, position, run_status.STAGE_NOT_STARTED)
                          for position, name in enumerate(STAGES)])
        conn.execute("INSERT INTO status_history (run_id, status, at) VALUES (?, ?, ?)",
                     (run_id, run_status.NOT_STARTED, now))

    # -- reading ------------------------------------------------------------------------------

    def run_dir(self, run_id):
        return self.runs_dir / run_folder_name(run_id)

    def get_run(self, run_id):
        """The run's record as a dict (with `stages`), or RunNotFoundError."""
        with self._connection() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"no run with id {run_id!r} in {self.home}")
            stages = conn.execute(
                "SELECT name, status, started_at, ended_at, detail FROM stages "
                "WHERE run_id = ? ORDER BY position", (run_id,)).fetchall()
        record = _record(row, stages)
        if not self.run_dir(run_id).is_dir():
            raise RunRecordCorruptedError(f"run {run_id}'s folder {self.run_dir(run_id)} is missing: "
                                          "its snapshot, outputs and logs are gone")
        return record

    def get_status(self, run_id):
        with self._connection() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r} in {self.home}")
        return row["status"]

    def list_runs(self, experiment=None, limit=None):
        query = "SELECT * FROM runs"
        params = []
        if experiment:
            query += " WHERE experiment = ?"
            params.append(experiment)
        query += " ORDER BY created_at DESC, id DESC"
        if limit:
            query += " LIMIT ?"
            params.append(int(limit))
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
            stages = {}
            for stage in conn.execute(
                    "SELECT run_id, name, status, started_at, ended_at, detail FROM stages "
                    "ORDER BY run_id, position"):
                stages.setdefault(stage["run_id"], []).append(stage)
        records = []
        for row in rows:
            try:
                records.append(_record(row, stages.get(row["id"], [])))
            except RunRecordCorruptedError as error:
                records.append({"id": row["id"], "experiment": row["experiment"],
                                "corrupted": str(error)})
        return records

    def status_history(self, run_id):
        with self._connection() as conn:
            return [(row["status"], row["at"]) for row in conn.execute(
                "SELECT status, at FROM status_history WHERE run_id = ? ORDER BY rowid", (run_id,))]

    def get_metric_records(self, run_id):
        """Every logged value in logging order: {name, position, type, value, step, description,
        logged_at, damaged}. A value that is not valid JSON is kept as its text, damaged=True."""
        self.get_status(run_id)
        records = []
        with self._connection() as conn:
            for row in conn.execute(
                    "SELECT name, position, metric_type, value, step, description, logged_at "
                    "FROM metrics WHERE run_id = ? ORDER BY rowid", (run_id,)):
                try:
                    value, damaged = json.loads(row["value"]), False
                except (TypeError, json.JSONDecodeError):
                    value, damaged = row["value"], True
                records.append({"name": row["name"], "position": row["position"],
                                "type": row["metric_type"], "value": value, "step": row["step"],
                                "description": row["description"] or "",
                                "logged_at": row["logged_at"], "damaged": damaged})
        return records

    def children_of(self, run_id):
        with self._connection() as conn:
            return [row["id"] for row in conn.execute(
                "SELECT id FROM runs WHERE parent_id = ? ORDER BY created_at, id", (run_id,))]

    def update_tags(self, run_id, set_tags=None, remove=()):
        """Add or change tags, and remove some, in one transaction; returns the tags."""
        with self.transaction() as conn:
            row = conn.execute("SELECT tags FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"no run with id {run_id!r} in {self.home}")
            tags = json.loads(row["tags"])
            tags.update({str(key): "" if value is None else str(value)
                         for key, value in (set_tags or {}).items()})
            for key in remove:
                tags.pop(str(key), None)
            conn.execute("UPDATE runs SET tags = ? WHERE id = ?", (json.dumps(tags), run_id))
        return tags

    def add_properties(self, run_id, properties):
        """Add properties; as on Azure ML a property keeps its first value."""
        with self.transaction() as conn:
            row = conn.execute("SELECT properties FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"no run with id {run_id!r} in {self.home}")
            current = json.loads(row["properties"])
            for key, value in properties.items():
                if str(key) in current and current[str(key)] != str(value):
                    raise UserInputError(f"property {key!r} of run {run_id} is already "
                                         f"{current[str(key)]!r}; run properties cannot be changed")
                current[str(key)] = str(value)
            conn.execute("UPDATE runs SET properties = ? WHERE id = ?", (json.dumps(current), run_id))
        return current

    def add_metric(self, run_id, name, metric_type, value):
        """Record a metric value from the host side (a sweep's summary of its children)."""
        with self.transaction() as conn:
            position = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM metrics "
                                    "WHERE run_id = ? AND name = ?", (run_id, name)).fetchone()[0]
            conn.execute("INSERT INTO metrics (run_id, name, position, metric_type, value, "
                         "logged_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (run_id, name, position, metric_type, json.dumps(value), time.time()))

    def get_metrics(self, run_id):
        """{name: [values in logging order]} (a log_list entry is one value that is a list)."""
        self.get_status(run_id)  # raises for an unknown run
        metrics = {}
        with self._connection() as conn:
            for row in conn.execute(
                    "SELECT name, value FROM metrics WHERE run_id = ? ORDER BY name, position",
                    (run_id,)):
                metrics.setdefault(row["name"], []).append(json.loads(row["value"]))
        return metrics

    # -- changing runs ------------------------------------------------------------------------

    def set_status(self, run_id, new_status, **fields):
        """Move the run to `new_status` if the state machine allows it from its current status.

        Raises IllegalTransitionError otherwise (for example when another process canceled the
        run in the meantime). Terminal statuses stamp ended_at; Running stamps started_at.
        """
        with self.transaction() as conn:
            return self.set_status_in(conn, run_id, new_status, **fields)

    def set_status_in(self, conn, run_id, new_status, **fields):
        """set_status inside a transaction the caller holds; returns the previous status."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        now = time.time()
        row = conn.execute("SELECT status, started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r} in {self.home}")
        run_status.check_transition(row["status"], new_status)
        fields = dict(fields, status=new_status)
        if new_status == run_status.RUNNING and row["started_at"] is None:
            fields["started_at"] = now
        if run_status.is_terminal(new_status):
            fields["ended_at"] = now
        assignments = ", ".join(f"{column} = ?" for column in fields)
        conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*fields.values(), run_id])
        conn.execute("INSERT INTO status_history (run_id, status, at) VALUES (?, ?, ?)",
                     (run_id, new_status, now))
        return row["status"]

    def try_set_status(self, run_id, new_status, **fields):
        """set_status that returns False instead of raising when the move is not allowed."""
        try:
            self.set_status(run_id, new_status, **fields)
        except IllegalTransitionError:
            return False
        return True

    def update_run(self, run_id, **fields):
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        assignments = ", ".join(f"{column} = ?" for column in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*fields.values(), run_id])

    # Stage statuses change only here, through the stage state machine of backends/status.py.

    def start_stage(self, run_id, stage, detail="", requeued=False):
        """Mark a stage Running (`requeued`: again, after a preemption; see status.py)."""
        with self.transaction() as conn:
            self.start_stage_in(conn, run_id, stage, detail, requeued)

    def start_stage_in(self, conn, run_id, stage, detail="", requeued=False):
        """start_stage inside a transaction the caller holds."""
        self._stage_row_for_move(conn, run_id, stage, run_status.STAGE_RUNNING, requeued)
        conn.execute("UPDATE stages SET status = ?, started_at = ?, ended_at = NULL, detail = ? "
                     "WHERE run_id = ? AND name = ?",
                     (run_status.STAGE_RUNNING, time.time(), detail, run_id, stage))

    def set_stage_detail(self, run_id, stage, detail):
        with self.transaction() as conn:
            conn.execute("UPDATE stages SET detail = ? WHERE run_id = ? AND name = ?",
                         (detail, run_id, stage))

    def finish_stage(self, run_id, stage, stage_status, detail=None):
        """Close a stage with `stage_status`; return its duration in seconds.

        IllegalTransitionError if the stage cannot end so (it had ended already)."""
        with self.transaction() as conn:
            return self.finish_stage_in(conn, run_id, stage, stage_status, detail)

    def finish_stage_in(self, conn, run_id, stage, stage_status, detail=None):
        """finish_stage inside a transaction the caller holds."""
        if stage_status in (run_status.STAGE_NOT_STARTED, run_status.STAGE_RUNNING):
            raise IllegalTransitionError(f"a stage cannot end {stage_status}")
        row = self._stage_row_for_move(conn, run_id, stage, stage_status)
        now = time.time()
        started = row["started_at"] if row["started_at"] is not None else now
        conn.execute(
            "UPDATE stages SET status = ?, started_at = ?, ended_at = ?, detail = ? "
            "WHERE run_id = ? AND name = ?",
            (stage_status, started, now, row["detail"] if detail is None else detail,
             run_id, stage))
        return now - started

    def _stage_row_for_move(self, conn, run_id, stage, new_status, requeued=False):
        row = conn.execute("SELECT status, started_at, detail FROM stages WHERE run_id = ? "
                           "AND name = ?", (run_id, stage)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no stage {stage!r} of a run {run_id!r} in {self.home}")
        run_status.check_stage_transition(row["status"], new_status, requeued)
        return row

    def ingest_telemetry(self, run_id):
        """Read what the script logged since the last call into the history (see telemetry.py)."""
        from amlocal.backends.local.telemetry import ingest
        return ingest(self, run_id)

    # -- files --------------------------------------------------------------------------------
    # The run's script shares these folders: everything in them is read through run_folder,
    # which follows no link and opens nothing but regular files (see its docstring).

    def file_names(self, run_id):
        """The run's files as posix names (outputs/model.npz, azureml-logs/..., uploaded names).

        Only regular files count: a link the script left is kept in the folder but is not a run
        file, nor is a FIFO, socket or device (record_files reports them).
        """
        self.get_status(run_id)
        with self._run_folder(run_id) as folder:
            return _scan(folder)[0]

    def file_path(self, run_id, name):
        """The host path of run file `name` (to show where it is; read it with open_file);
        UserInputError if it is not one of the run's files."""
        location = self._location(run_id, name)
        with self._run_folder(run_id) as folder:
            if not folder.is_file(location):
                raise self._no_such_file(run_id, name)
        return self.run_dir(run_id) / location

    def open_file(self, run_id, name):
        """Run file `name`, open for reading in binary (a regular file reached without following
        any link); UserInputError if it is not one of the run's files."""
        location = self._location(run_id, name)
        with self._run_folder(run_id) as folder:
            try:
                return folder.open(location)
            except NotARunFile:
                raise self._no_such_file(run_id, name) from None

    @contextmanager
    def open_verified_file(self, run_id, name):
        """open_file, after checking the open file's bytes against what PostProcessing recorded
        of it (RunRecordCorruptedError if they differ); positioned at its start."""
        with self.open_file(run_id, name) as handle:
            with self._connection() as conn:
                recorded = conn.execute("SELECT size, sha256 FROM files WHERE run_id = ? AND "
                                        "name = ?", (run_id, _sql_name(name))).fetchone()
            if recorded is not None:
                size, digest = copy_hashing(handle)
                if (size, digest) != (recorded["size"], recorded["sha256"]):
                    raise RunRecordCorruptedError(
                        f"run {run_id}'s file {printable(name)} is damaged: it is not the file the "
                        f"run left ({size} bytes now, {recorded['size']} recorded, SHA-256 differs)")
                handle.seek(0)
            yield handle

    def record_files(self, run_id):
        """Note the size and SHA-256 of the run's files but its amlocal logs (PostProcessing).

        A file with other names (a hard link) is given an inode of its own first. Returns
        (rows, skipped): rows (run id, name, size, SHA-256) of the files recorded, skipped
        (name, kind) of what is not a run file: links (kept as links) and FIFOs, sockets and
        devices (never opened).
        """
        rows = []
        with self._run_folder(run_id) as folder:
            names, skipped = _scan(folder)
            for name in names:
                if name.startswith("azureml-logs/"):
                    continue
                try:
                    size, digest = folder.digest(run_file_location(name))
                except NotARunFile:
                    skipped.append((name, "removed while it was recorded"))
                    continue
                rows.append((run_id, name, size, digest))
        with self.transaction() as conn:
            conn.execute("DELETE FROM files WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT INTO files (run_id, name, size, sha256) VALUES (?, ?, ?, ?)",
                             [(run, _sql_name(name), size, digest)
                              for run, name, size, digest in rows])
        return rows, skipped

    def _run_folder(self, run_id):
        try:
            return RunFolder(self.run_dir(run_id))
        except FileNotFoundError:
            raise RunRecordCorruptedError(f"run {run_id}'s folder {self.run_dir(run_id)} is "
                                          "missing: its snapshot, outputs and logs are gone") from None

    def _location(self, run_id, name):
        try:
            return run_file_location(name)
        except UserInputError:
            raise self._no_such_file(run_id, name) from None

    @staticmethod
    def _no_such_file(run_id, name):
        return UserInputError(f"run {run_id} has no file {printable(name)!r} "
                              f"(see `amlocal runs files {run_id}`)")


class RunFile:
    """One of a run's files as a source to copy from (the model registry takes these): opened
    through the run folder and checked against its record, never by its host path."""

    def __init__(self, store, run_id, name):
        self.store, self.run_id, self.name = store, run_id, name

    def open(self, _mode="rb"):
        return self.store.open_verified_file(self.run_id, self.name)

    def __str__(self):
        return f"{self.run_id}/{printable(self.name)}"


def run_file_location(name):
    """Where run file `name` lives in its run's folder: outputs/, logs/ and azureml-logs/ names
    in those folders, any other name (an upload's) in the upload folder. UserInputError for a
    name that could leave the folder."""
    parts = name_parts(name)
    return name if parts[0] in FILE_FOLDERS else f"{UPLOADS_FOLDER}/{name}"


def _scan(folder):
    """(sorted run file names, [(name, kind)] of what is there but is not a run file)."""
    names, skipped = [], []
    for top in FILE_FOLDERS + (UPLOADS_FOLDER,):
        for entry in folder.entries(top):
            name = entry.name[len(UPLOADS_FOLDER) + 1:] if top == UPLOADS_FOLDER else entry.name
            if top == UPLOADS_FOLDER and name.split("/", 1)[0] in FILE_FOLDERS:
                continue  # shadowed by the folder of that name: not reachable by this name
            if entry.kind == "file":
                names.append(name)
            elif entry.kind != "folder":
                skipped.append((name, entry.kind))
    return sorted(names), skipped


def not_run_files(skipped, shown=10):
    """PostProcessing's words for what record_files skipped ("" when nothing was)."""
    if not skipped:
        return ""
    listed = ", ".join(f"{printable(name)} ({kind})" for name, kind in skipped[:shown])
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return (f"; not run files (links are kept as links, FIFOs, sockets and devices are never "
            f"opened): {listed}{more}")


def _sql_name(name):
    """A file name as SQLite keeps it: text, or its bytes (a BLOB) when it is not UTF-8 (a
    lone surrogate escape cannot be stored as TEXT; a BLOB never equals a TEXT name)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def iso_time(timestamp):
    """A stored epoch time as the ISO 8601 UTC text run details show (milliseconds, Z)."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def run_details(record, run_dir):
    """A run's details (what `get_details()` and `amlocal runs show --json` give) from its stored
    record: one shape for every backend, which a backend may add to or override."""
    spec = record["spec"]
    ended = record["ended_at"]
    return {
        "id": record["id"],
        "number": record["number"],
        "experiment": record["experiment"],
        "status": record["status"],
        "backend": record["backend"],
        "executor": record["executor"],
        "compute": record["compute"],
        "node_count": spec.get("node_count", 1),
        "nodes": record["nodes"],
        "preemptions": record["preemptions"],
        "max_run_duration_seconds": spec.get("max_run_duration_seconds"),
        "script": spec.get("script"),
        "arguments": spec.get("arguments", []),
        "source_dir": spec.get("source_dir"),
        "inputs": spec.get("inputs", {}),
        "environment": spec.get("environment", {}),
        "image": record["image"],
        "exit_code": record["exit_code"],
        "error": record["error"],
        "created_at": iso_time(record["created_at"]),
        "started_at": iso_time(record["started_at"]),
        "ended_at": iso_time(ended),
        "duration_s": round(ended - record["created_at"], 3) if ended else None,
        "stages": [{**stage, "started_at": iso_time(stage["started_at"]),
                    "ended_at": iso_time(stage["ended_at"])} for stage in record["stages"]],
        "tags": record["tags"],
        "properties": record["properties"],
        "parent_id": record["parent_id"],
        "display_name": record["display_name"],
        "sweep": spec.get("sweep"),
        "run_dir": str(run_dir),
    }


def sha256_of_file(path):
    with open(path, "rb") as handle:
        return copy_hashing(handle)[1]


def _is_corruption(error):
    """SQLite's words for a damaged file (a constraint or SQL error is a bug, not damage)."""
    text = str(error).lower()
    return "malformed" in text or "not a database" in text


def _record(row, stages):
    """A runs row as a dict, checked: a damaged record is reported, never served."""
    record = dict(row)

    def damaged(what):
        return RunRecordCorruptedError(f"run {record['id']}'s record is damaged ({what}); it is not "
                                       "served: its files are still in its folder")

    for column in ("spec", "tags", "properties", "nodes"):
        try:
            record[column] = json.loads(record[column])
        except (TypeError, json.JSONDecodeError) as error:
            raise damaged(f"{column} is not valid JSON: {error}") from None
    if not isinstance(record["spec"], dict):
        raise damaged("its spec is not an object")
    if record["status"] not in run_status.ALL_STATUSES:
        raise damaged(f"unknown status {record['status']!r}")
    if [stage["name"] for stage in stages] != list(STAGES):
        raise damaged("its stages are incomplete")
    record["stages"] = [
        {
            "name": stage["name"],
            "status": stage["status"],
            "started_at": stage["started_at"],
            "ended_at": stage["ended_at"],
            "duration_s": (round(stage["ended_at"] - stage["started_at"], 3)
                           if stage["ended_at"] is not None and stage["started_at"] is not None
                           else None),
            "detail": stage["detail"],
        }
        for stage in stages
    ]
    return record
