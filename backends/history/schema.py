"""The run history's SQLite schema: its tables, the steps that bring an older file up to date, and
the journal mode every process shares it in.

The schema's version is SQLite's user_version; `prepare` (run by every RunStore as it opens the
file) switches the file to WAL and applies the steps after the file's version, once, under the
write lock, whichever of several processes opening a new history gets there first.
"""

import sqlite3
import time

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

# Compute targets (history/compute_targets.py), their nodes and the queue in front of them
# (local/compute.py).
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

# Deployed web services (backends/history/services.py): what each was deployed from, its
# containers and published port, its keys and the state last seen.
_SCHEMA_V6 = """
CREATE TABLE services (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    settings TEXT NOT NULL,
    keys TEXT NOT NULL DEFAULT '{}',
    image TEXT,
    scorer_id TEXT,
    relay_id TEXT,
    port INTEGER,
    tags TEXT NOT NULL DEFAULT '{}',
    description TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    healthy_at REAL
);
"""

# Schema steps in order; a history at version N gets the steps after N.
MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4, _SCHEMA_V5, _SCHEMA_V6)
SCHEMA_VERSION = len(MIGRATIONS)


def prepare(conn):
    """Bring the database behind `conn` (autocommit) to WAL and to SCHEMA_VERSION."""
    use_wal(conn)
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def use_wal(conn, timeout_s=30):
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
