"""The run history: SQLite for records, stages and metrics, folders for files.

Layout under $AMLOCAL_HOME (default ~/.amlocal):

    amlocal.db                      runs, stages, status history, metrics (schema.py)
    runs/<run folder>/snapshot/     the source folder as submitted (read-only by convention)
    runs/<run folder>/outputs/      ./outputs of the run       } the run's files, as
    runs/<run folder>/logs/         ./logs of the run          } get_file_names()
    runs/<run folder>/azureml-logs/ image build and driver log } lists them
    runs/<run folder>/telemetry/    events the script logged, read into the database

A run's folder is named by its id, or where the id is too long for a file name (or no plain
one), by `run_folder_name`. The run's files are listed, opened and checked by run_files.py, whose
RunFiles is mixed into RunStore; a stored record is decoded by records.py.

Every process opens its own short-lived connections; WAL mode and a busy timeout let concurrent
runs and readers share the file. Status changes go through `set_status`, which asks the state
machine (backends.status) and writes with a compare-and-set inside one IMMEDIATE transaction.
"""

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
from amlocal.backends.history.queries import RunQueries
from amlocal.backends.history.records import iso_time, run_details, run_record
from amlocal.backends.history.run_files import (FILE_FOLDERS, UPLOADS_FOLDER, RunFile, RunFiles,
                                                not_run_files, run_file_location, sha256_of_file)
from amlocal.backends.history.schema import SCHEMA_VERSION, prepare
from amlocal.errors import (IllegalTransitionError, RunNotFoundError, RunRecordCorruptedError,
                            UserInputError)

# What callers import from here, wherever in the history it is defined.
__all__ = ["BUILD_LOG", "DRIVER_LOG", "FILE_FOLDERS", "RESERVE_BYTES", "RUN_FOLDER_NAME_MAX",
           "SCHEMA_VERSION", "TELEMETRY_FILE", "UPLOADS_FOLDER", "RunFile", "RunStore",
           "default_home", "is_plain_run_id", "iso_time", "new_run_id", "not_run_files",
           "run_details", "run_file_location", "run_folder_name", "sha256_of_file"]

RESERVE_BYTES = 8 << 20
TELEMETRY_FILE = "events.jsonl"
BUILD_LOG = "azureml-logs/20_image_build_log.txt"
DRIVER_LOG = "azureml-logs/70_driver_log.txt"

# Columns that executors may set besides status (which only set_status writes).
_UPDATABLE = {"image", "driver_pid", "container_id", "script_pid", "error", "exit_code",
              "preemptions"}


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


class RunStore(RunFiles, RunQueries):
    """The run history at `home`. Cheap to create; safe to use from many processes at once."""

    def __init__(self, home=None):
        self.home = Path(home) if home is not None else default_home()
        self.runs_dir = self.home / "runs"
        self.db_path = self.home / "amlocal.db"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.reserve_path = self.home / ".reserve"
        self._ensure_reserve()
        with self._connection() as conn:
            prepare(conn)

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
                   driver_pid=None, also=None, run_id=None, parent_id=None, display_name=None):
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
        renamed = False  # only a folder this call put in place is removed on failure
        try:
            staging.mkdir()
            fill_snapshot(staging / "snapshot")
            for folder in FILE_FOLDERS + (UPLOADS_FOLDER, "telemetry", "telemetry/uploads"):
                (staging / folder).mkdir(exist_ok=True)
            os.rename(staging, final)
            renamed = True
            with self.transaction() as conn:
                self.insert_run_in(conn, run_id=run_id, experiment=experiment, executor=executor,
                                   compute=compute, spec=spec, tags=spec.get("tags", {}),
                                   backend=backend, driver_pid=driver_pid, parent_id=parent_id,
                                   display_name=display_name)
                if also is not None:
                    also(conn, run_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if renamed:
                shutil.rmtree(final, ignore_errors=True)
            raise
        return run_id

    def check_new_run_id(self, run_id):
        """UserInputError unless `run_id` is a plain id that no run has (for a caller that
        chooses the id, as azureml-core does)."""
        if not (isinstance(run_id, str) and is_plain_run_id(run_id)):
            raise UserInputError(f"invalid run id {str(run_id)[:100]!r}: letters, digits, '_', "
                                 "'-' and '.', not starting with '.'")
        with self._connection() as conn:
            taken = conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
        if taken is not None or self.run_dir(run_id).exists():
            raise UserInputError(f"a run with id {run_id!r} already exists")

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
        record = run_record(row, stages)
        if not self.run_dir(run_id).is_dir():
            raise RunRecordCorruptedError(f"run {run_id}'s folder {self.run_dir(run_id)} is missing: "
                                          "its snapshot, outputs and logs are gone")
        return record

    def exists_in(self, conn, run_id):
        """Whether a run `run_id` is recorded (inside the caller's transaction)."""
        return conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def status_in(self, conn, run_id):
        """The run's status, read inside the caller's transaction (None: no such run)."""
        row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row["status"] if row is not None else None

    def record_first_error(self, run_id, message):
        """Set the run's error to `message` unless it has one already (the first one stays)."""
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET error = ? WHERE id = ? AND error IS NULL",
                         (message, run_id))

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
                records.append(run_record(row, stages.get(row["id"], [])))
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


def _is_corruption(error):
    """SQLite's words for a damaged file (a constraint or SQL error is a bug, not damage)."""
    text = str(error).lower()
    return "malformed" in text or "not a database" in text
