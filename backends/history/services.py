"""The deployed web services of a run history: the `services` table (schema step 6 of schema.py).

A service's record says what it was deployed from (`settings`: models, entry script, source
folder, environment, resources, the port asked for), what runs it (the image, the scoring and
relay containers, the published port), its keys, and the state last seen. Records outlive the
process that deployed the service, so any later `amlocal` (or a fresh Python) finds it; the
containers themselves are looked at by whoever asks for the state (backends/local/services.py).
"""

import json
import re
import sqlite3
import time

from amlocal.errors import AmlocalError, UserInputError

# Azure ML's rule for service names (azureml-core checks it before deploying).
SERVICE_NAME_RULE = ("a service name must be 3 to 32 characters of lowercase letters, digits and "
                     "dashes, start with a letter and end with a letter or digit")
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{1,30}[a-z0-9]\Z")
# What each state means, as Azure ML reports a web service.
TRANSITIONING, HEALTHY, UNHEALTHY, FAILED = "Transitioning", "Healthy", "Unhealthy", "Failed"
STATES = (TRANSITIONING, HEALTHY, UNHEALTHY, FAILED)
_COLUMNS = ("kind", "state", "error", "settings", "keys", "image", "scorer_id", "relay_id",
            "port", "tags", "description", "healthy_at")
_JSON_COLUMNS = ("settings", "keys", "tags")


class ServiceNotFoundError(AmlocalError):
    """No service of that name in the run history."""

    exit_code = 4


class ServiceExistsError(UserInputError):
    """A service of that name is already there (and overwrite was not asked for)."""


def validate_service_name(name):
    """`name` if Azure ML would take it as a service name; UserInputError otherwise."""
    if not isinstance(name, str) or not _SERVICE_NAME.match(name):
        raise UserInputError(f"invalid service name {name!r}: {SERVICE_NAME_RULE}")
    return name


class ServiceRecords:
    """The services recorded in one run history (a RunStore)."""

    def __init__(self, store):
        self.store = store

    def create(self, name, kind, settings, **fields):
        """Record a new service in state Transitioning; ServiceExistsError if the name is taken."""
        now = time.time()
        row = {"kind": kind, "state": TRANSITIONING, "settings": settings, **fields}
        columns = ["name", *row, "created_at", "updated_at"]
        values = [name, *(_encoded(key, value) for key, value in row.items()), now, now]
        try:
            with self.store.transaction() as conn:
                conn.execute(f"INSERT INTO services ({', '.join(columns)}) "
                             f"VALUES ({', '.join('?' * len(columns))})", values)
        except sqlite3.IntegrityError:
            raise ServiceExistsError(f"a service named {name!r} already exists (delete it, or "
                                     "deploy with overwrite)") from None
        return self.get(name)

    def get(self, name):
        with self.store.transaction() as conn:
            row = conn.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ServiceNotFoundError(f"no service named {name!r} (see `amlocal services list`)")
        return _decoded(row)

    def exists(self, name):
        with self.store.transaction() as conn:
            row = conn.execute("SELECT 1 FROM services WHERE name = ?", (name,)).fetchone()
        return row is not None

    def list(self):
        """Every service's record, by name."""
        with self.store.transaction() as conn:
            rows = conn.execute("SELECT * FROM services ORDER BY name").fetchall()
        return [_decoded(row) for row in rows]

    def update(self, name, **fields):
        """Change some of a service's columns; return its record."""
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"not columns of a service: {sorted(unknown)}")
        assignments = ", ".join(f"{key} = ?" for key in fields)
        values = [_encoded(key, value) for key, value in fields.items()]
        with self.store.transaction() as conn:
            changed = conn.execute(
                f"UPDATE services SET {assignments}, updated_at = ? WHERE name = ?",
                [*values, time.time(), name]).rowcount
        if not changed:
            raise ServiceNotFoundError(f"no service named {name!r} (it was deleted)")
        return self.get(name)

    def delete(self, name):
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM services WHERE name = ?", (name,))


def _encoded(column, value):
    return json.dumps(value) if column in _JSON_COLUMNS else value


def _decoded(row):
    record = dict(row)
    for column in _JSON_COLUMNS:
        record[column] = json.loads(record[column])
    record["auth_enabled"] = bool(record["settings"].get("auth_enabled"))
    return record
