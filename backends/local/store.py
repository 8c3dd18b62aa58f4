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

# The model registry (backends/local/models.py): each name's last version (never reused), the
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


def run_folder_name(run_id):
    """The name of the run's folder under runs/: its id where that is a short, plain file name,
    else a readable prefix of the id, '+' and a digest of the whole id. Stable; distinct ids get
    distinct folders ('+' is in no plain name, and the digest is 64 bits of SHA-256)."""
    if len(run_id) <= RUN_FOLDER_NAME_MAX and _PLAIN_FOLDER_NAME.fullmatch(run_id):
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
            now = time.time()
            with self.transaction() as conn:
                number = conn.execute(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE experiment = ?",
                    (experiment,)).fetchone()[0]
                conn.execute(
                    "INSERT INTO runs (id, number, experiment, status, backend, executor, compute, "
                    "spec, created_at, tags, driver_pid, parent_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, number, experiment, run_status.NOT_STARTED, backend, executor, compute,
                     json.dumps(spec), now, json.dumps(spec.get("tags", {})), driver_pid, parent_id))
                conn.executemany(
                    "INSERT INTO stages (run_id, name, position, status) VALUES (?, ?, ?, ?)",
                    [(run_id, name, position, run_status.NOT_STARTED)
                     for position, name in enumerate(STAGES)])
                conn.execute("INSERT INTO status_history (run_id, status, at) VALUES (?, ?, ?)",
                             (run_id, run_status.NOT_STARTED, now))
                if also is not None:
                    also(conn, run_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            raise
        return run_id

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

    def start_stage(self, run_id, stage, detail=""):
        with self.transaction() as conn:
            conn.execute(
                "UPDATE stages SET status = 'Running', started_at = ?, detail = ? "
                "WHERE run_id = ? AND name = ?", (time.time(), detail, run_id, stage))

    def set_stage_detail(self, run_id, stage, detail):
        with self.transaction() as conn:
            conn.execute("UPDATE stages SET detail = ? WHERE run_id = ? AND name = ?",
                         (detail, run_id, stage))

    def finish_stage(self, run_id, stage, stage_status, detail=None):
        """Close a stage; return its duration in seconds."""
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute("SELECT started_at, detail FROM stages WHERE run_id = ? AND name = ?",
                               (run_id, stage)).fetchone()
            started = row["started_at"] if row["started_at"] is not None else now
            conn.execute(
                "UPDATE stages SET status = ?, started_at = ?, ended_at = ?, detail = ? "
                "WHERE run_id = ? AND name = ?",
                (stage_status, started, now, row["detail"] if detail is None else detail,
                 run_id, stage))
        return now - started

    def ingest_telemetry(self, run_id):
        """Read what the script logged since the last call into the history (see telemetry.py)."""
        from amlocal.backends.local.telemetry import ingest
        return ingest(self, run_id)

    # -- files --------------------------------------------------------------------------------

    def file_names(self, run_id):
        """The run's files as posix names (outputs/model.npz, azureml-logs/..., uploaded names).

        A link the script left in outputs/ counts only if it resolves to a file inside the run's
        file folders, the same rule file_path applies, so every listed name can be downloaded.
        """
        self.get_status(run_id)
        root = self.run_dir(run_id)
        names = []
        for folder, strip in [(folder, root) for folder in FILE_FOLDERS] + [(UPLOADS_FOLDER, root / UPLOADS_FOLDER)]:
            for dirpath, _dirnames, filenames in os.walk(root / folder):
                for filename in filenames:
                    name = (Path(dirpath) / filename).relative_to(strip).as_posix()
                    if self._resolve_file(root, name) is not None:
                        names.append(name)
        return sorted(names)

    def file_path(self, run_id, name):
        """The host path of run file `name`; UserInputError if it is not one of the run's files."""
        path = self._resolve_file(self.run_dir(run_id), name)
        if path is None:
            raise UserInputError(f"run {run_id} has no file {name!r} (see `amlocal runs files {run_id}`)")
        return path

    def record_files(self, run_id):
        """Note the size and SHA-256 of the run's files but its amlocal logs (PostProcessing)."""
        root = self.run_dir(run_id)
        rows = []
        for name in self.file_names(run_id):
            if not name.startswith("azureml-logs/"):
                path = self._resolve_file(root, name)
                rows.append((run_id, name, path.stat().st_size, sha256_of_file(path)))
        with self.transaction() as conn:
            conn.execute("DELETE FROM files WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT INTO files (run_id, name, size, sha256) VALUES (?, ?, ?, ?)", rows)
        return rows

    def verified_file_path(self, run_id, name):
        """file_path, after checking the file against what PostProcessing recorded of it."""
        path = self.file_path(run_id, name)
        with self._connection() as conn:
            recorded = conn.execute("SELECT size, sha256 FROM files WHERE run_id = ? AND name = ?",
                                    (run_id, name)).fetchone()
        if recorded is not None and (path.stat().st_size != recorded["size"]
                                     or sha256_of_file(path) != recorded["sha256"]):
            raise RunRecordCorruptedError(
                f"run {run_id}'s file {name} is damaged: it is not the file the run left "
                f"({path.stat().st_size} bytes now, {recorded['size']} recorded, SHA-256 differs)")
        return path

    @staticmethod
    def _resolve_file(root, name):
        if Path(name).parts[:1] and Path(name).parts[0] in FILE_FOLDERS:
            candidate = (root / name).resolve()
            inside = any(candidate.is_relative_to((root / folder).resolve()) for folder in FILE_FOLDERS)
        else:
            candidate = (root / UPLOADS_FOLDER / name).resolve()
            inside = candidate.is_relative_to((root / UPLOADS_FOLDER).resolve())
        return candidate if inside and candidate.is_file() else None


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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
