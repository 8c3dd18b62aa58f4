"""The model registry: named, numbered copies of model files, next to the run history.

Layout under $AMLOCAL_HOME:

    amlocal.db                      models, model_names, model_files (schema step 5 of schema.py)
    models/<name>/<version>/<model> a copy of the model file or folder, as registered
    models/.staging/<pid>-<token>/  a registration being copied (renamed into place when done)

A registration copies the model into a staging folder first (hashing every file as it goes),
then, inside one IMMEDIATE transaction, takes the name's next version, records the model and
renames the staging folder to models/<name>/<version>. Versions are integers per name, 1, 2,
3, ..., allocated under the database's write lock, so registrations of one name from many
processes never collide or skip a number; a number once given is never given again, even after
its model is deleted, so NAME:VERSION always means the same files. A failure at any point leaves
neither a folder nor a record, and consumes no version.

The size and SHA-256 of every file are recorded, and files are checked against them whenever
they are served (download, verified_path): a damaged model is reported, never served.

What callers give (names, versions, files, tags, filters) is checked by model_input.py.
"""

import datetime
import json
import os
import posixpath
import secrets
import shutil
import sqlite3
import time
from contextlib import ExitStack
from pathlib import Path

from amlocal.backends.history.model_files import (download_model, open_verified_model_file,
                                                  verified_model_path)
from amlocal.backends.history.model_input import (MODEL_NAME_RULE, collect_local_files,
                                                  is_valid_model_name, json_object, matches_filter,
                                                  model_entries, parse_filter, parse_model_id,
                                                  parse_version, validate_model_name)
from amlocal.backends.history.run_files import RunFile
from amlocal.backends.history.run_folder import copy_hashing
from amlocal.backends.liveness import process_alive
from amlocal.errors import AmlocalError, RunRecordCorruptedError, UserInputError

# What callers import from here, wherever in the history it is defined.
__all__ = ["DEFAULT_FRAMEWORK", "FRAMEWORK_VERSION_WITHOUT_FRAMEWORK", "MODELS_FOLDER",
           "MODEL_NAME_RULE", "ModelNotFoundError", "ModelPathNotFoundError", "ModelRegistry",
           "RUN_LOGGING_HELP", "collect_local_files", "is_valid_model_name", "parse_model_id",
           "parse_version", "validate_model_name"]

MODELS_FOLDER = "models"
_STAGING = ".staging"
_DELETING = ".deleting-"
# What Azure ML records as the framework of a model registered without one.
DEFAULT_FRAMEWORK = "Custom"
FRAMEWORK_VERSION_WITHOUT_FRAMEWORK = ("Model framework version cannot be provided without a "
                                       "valid framework")
RUN_LOGGING_HELP = "See https://aka.ms/run-logging for more details."


class ModelNotFoundError(AmlocalError):
    """No model of that name, or no such version of it, in the registry."""

    exit_code = 4


class ModelPathNotFoundError(UserInputError):
    """The model_path given for a run is none of the run's files or folders."""


class ModelRegistry:
    """The models registered in the run history `store` (a RunStore). Safe across processes."""

    def __init__(self, store):
        self.store = store
        self.root = Path(store.home) / MODELS_FOLDER
        self._staging_root = self.root / _STAGING
        self._staging_root.mkdir(parents=True, exist_ok=True)
        self._sweep()

    def model_dir(self, name, version):
        """The folder that holds version `version` of model `name` (its one entry is the model)."""
        return self.root / name / str(version)

    # -- registering ----------------------------------------------------------------------------

    def register(self, name, source_paths, *, run_id=None, run_path=None, experiment_name=None,
                 tags=None, properties=None, description=None, framework=None,
                 framework_version=None):
        """Copy a model into the registry as the next version of `name`; return its record.

        `source_paths` is a local file or folder (copied under its base name), or (host file,
        name in the model) pairs whose names all start with the same first part (the model:
        'model.npz', or 'outputs' for 'outputs/a', 'outputs/b'). run_id/run_path/experiment_name
        say where a model registered from a run came from.
        """
        validate_model_name(name)
        tags = json_object(tags, "tags")
        properties = json_object(properties, "properties")
        if framework is None and framework_version is not None:
            raise UserInputError(FRAMEWORK_VERSION_WITHOUT_FRAMEWORK)
        entries = model_entries(source_paths)
        model_path = entries[0][1].split("/", 1)[0]
        staging = self._staging_root / f"{os.getpid()}-{secrets.token_hex(6)}"
        final = None
        try:
            files = self._stage(staging, entries)
            with self.store.transaction() as conn:
                now = time.time()  # under the lock, so that newer versions are never older
                row = conn.execute("SELECT last_version FROM model_names WHERE name = ?",
                                   (name,)).fetchone()
                version = (row["last_version"] if row else 0) + 1
                conn.execute(
                    "INSERT INTO model_names (name, last_version) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version",
                    (name, version))
                conn.execute(
                    "INSERT INTO models (name, version, model_path, run_id, run_path, "
                    "experiment_name, description, framework, framework_version, tags, "
                    "properties, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, version, model_path, run_id, run_path, experiment_name, description,
                     framework if framework is not None else DEFAULT_FRAMEWORK, framework_version,
                     json.dumps(tags), json.dumps(properties), now))
                conn.executemany(
                    "INSERT INTO model_files (name, version, path, size, sha256) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(name, version, relative, size, digest) for relative, size, digest in files])
                target = self.model_dir(name, version)
                target.parent.mkdir(exist_ok=True)
                if os.path.lexists(target):
                    # Left by a process that died between this rename and its commit: the number
                    # was never recorded, and under the write lock no one else can be using it.
                    shutil.rmtree(target)
                os.rename(staging, target)
                final = target
                row = conn.execute("SELECT * FROM models WHERE name = ? AND version = ?",
                                   (name, version)).fetchone()
                record = self._record(row, self._files(conn, [(name, version)])[(name, version)])
        except sqlite3.IntegrityError:
            self._discard(staging, final)
            if run_id is not None:
                self.store.get_status(run_id)  # RunNotFoundError for a run that is not there
            raise
        except BaseException:
            self._discard(staging, final)
            raise
        return record

    def _stage(self, staging, entries):
        """Copy the model's files into the staging folder; [(name, size, SHA-256)]."""
        files = []
        try:
            staging.mkdir()
            for source, relative in entries:
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                size, digest = _copy_hashing(source, target, reading=True)
                target.chmod(0o444)  # the registry's copy is read-only by convention
                files.append((relative, size, digest))
        except OSError as error:
            raise AmlocalError(f"cannot copy the model into the registry at {self.root}: "
                               f"{error.strerror or error}") from None
        return files

    def register_from_run(self, run_id, model_name, model_path=None, **metadata):
        """Register a run's file or folder (e.g. 'outputs/model.npz' or 'outputs') as a model.

        model_path is one of the run's file names (store.file_names) or a folder of them; None
        means model_name, as in azureml-core's Run.register_model. Each file is checked against
        what PostProcessing recorded of it (store.open_verified_file), so a damaged file is
        refused. The model keeps the path's last part: 'model.npz', or 'outputs' with the
        folder's files under it.
        """
        validate_model_name(model_name)
        record = self.store.get_run(run_id)
        if model_path is None:
            model_path = model_name
        wanted = os.path.normpath(os.fspath(model_path)).replace(os.sep, "/")
        names = self.store.file_names(run_id)
        chosen = [wanted] if wanted in names else [name for name in names
                                                   if name.startswith(wanted + "/")]
        if not chosen:
            raise ModelPathNotFoundError(
                f"Could not locate the provided model_path {wanted} in the set of files uploaded "
                f"to the run: {names} {RUN_LOGGING_HELP}")
        parent = posixpath.dirname(wanted)
        sources = [(RunFile(self.store, run_id, name),
                    posixpath.relpath(name, parent) if parent else name) for name in chosen]
        return self.register(model_name, sources, run_id=run_id, run_path=wanted,
                             experiment_name=record["experiment"], **metadata)

    # -- reading --------------------------------------------------------------------------------

    def get(self, name, version=None):
        """The record of NAME:VERSION, or of the latest version when version is None."""
        validate_model_name(name)
        if version is not None:
            version = parse_version(version)
        with self.store.transaction() as conn:
            if version is None:
                row = conn.execute("SELECT * FROM models WHERE name = ? ORDER BY version DESC "
                                   "LIMIT 1", (name,)).fetchone()
            else:
                row = conn.execute("SELECT * FROM models WHERE name = ? AND version = ?",
                                   (name, version)).fetchone()
            if row is None:
                raise self._not_found(conn, name, version)
            files = self._files(conn, [(name, row["version"])])
        return self._record(row, files[(name, row["version"])])

    def list(self, name=None, tags=None, properties=None, run_id=None, latest=False,
             framework=None):
        """Records of the models that match, newest first.

        tags and properties filter as azureml-core's Model.list does: a list whose entries are a
        key (the model has it) or [key, value] (it has it with that value); all must match.
        latest: only the latest version of each name among the models that match. A record
        that is damaged is listed as {name, version, id, corrupted: reason}, after the others.
        """
        tag_filter = parse_filter(tags, "tags")
        property_filter = parse_filter(properties, "properties")
        query, params = "SELECT * FROM models", []
        conditions = []
        for column, value in (("name", name), ("run_id", run_id), ("framework", framework)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        query += " ORDER BY created_at DESC, name, version DESC"
        with self.store.transaction() as conn:
            rows = conn.execute(query, params).fetchall()
            records, damaged = [], []
            for row in rows:
                try:
                    records.append(self._record(row, None))
                except RunRecordCorruptedError as error:
                    damaged.append({"name": row["name"], "version": row["version"],
                                    "id": f"{row['name']}:{row['version']}",
                                    "corrupted": str(error)})
            records = [record for record in records
                       if matches_filter(record["tags"], tag_filter)
                       and matches_filter(record["properties"], property_filter)]
            if latest:
                highest = {}
                for record in records:
                    highest[record["name"]] = max(highest.get(record["name"], 0),
                                                  record["version"])
                records = [record for record in records
                           if record["version"] == highest[record["name"]]]
            files = self._files(conn, [(record["name"], record["version"]) for record in records])
        for record in records:
            self._add_files(record, files[(record["name"], record["version"])])
        # A damaged record is listed as such (it cannot match a tag or property filter).
        if not tag_filter and not property_filter:
            records += [entry for entry in damaged
                        if not latest or entry["version"] >= highest.get(entry["name"], 0)]
        return records

    def names(self):
        """Every name that has at least one registered version, sorted."""
        with self.store.transaction() as conn:
            return [row["name"] for row in conn.execute(
                "SELECT DISTINCT name FROM models ORDER BY name")]

    def verified_path(self, name, version=None):
        """The registry's own copy of the model (file or folder), after checking its files."""
        record = self.get(name, version)
        return verified_model_path(record, self.model_dir(record["name"], record["version"]))

    def open_file(self, name, version, path):
        """File `path` of NAME:VERSION (a name in its record's `files`), open for reading in
        binary, after checking it (see model_files.open_verified_model_file)."""
        record = self.get(name, version)
        return open_verified_model_file(record, self.model_dir(name, record["version"]), path)

    def download(self, name, version, target_dir, exist_ok=False):
        """Copy NAME:VERSION (latest when version is None) into target_dir; return the model's
        path (see model_files.download_model: every file is checked, nothing is half-written)."""
        record = self.get(name, version)
        return download_model(record, self.model_dir(record["name"], record["version"]),
                              target_dir, exist_ok)

    # -- changing -------------------------------------------------------------------------------

    def update(self, name, version, *, tags=None, description=None, add_tags=None,
               remove_tags=None, add_properties=None):
        """Change a version's tags or description, or add properties; return its new record.

        tags (not None) replaces all tags; add_tags and remove_tags change some. Properties are
        immutable, as in Azure ML: adding a key the model already has is refused.
        """
        validate_model_name(name)
        version = parse_version(version)
        tags = None if tags is None else json_object(tags, "tags")
        add_tags = json_object(add_tags, "tags")
        add_properties = json_object(add_properties, "properties")
        if isinstance(remove_tags, str):
            remove_tags = [remove_tags]
        with self.store.transaction() as conn:
            row = conn.execute("SELECT * FROM models WHERE name = ? AND version = ?",
                               (name, version)).fetchone()
            if row is None:
                raise self._not_found(conn, name, version)
            record = self._record(row, None)
            current_tags = record["tags"] if tags is None else dict(tags)
            current_tags.update(add_tags)
            for key in remove_tags or ():
                current_tags.pop(key, None)
            duplicates = [key for key in add_properties if key in record["properties"]]
            if duplicates:
                raise UserInputError("properties are immutable, the following keys cannot "
                                     f"be added/modified: {','.join(duplicates)}")
            conn.execute(
                "UPDATE models SET tags = ?, properties = ?, description = ? "
                "WHERE name = ? AND version = ?",
                (json.dumps(current_tags), json.dumps({**record["properties"], **add_properties}),
                 record["description"] if description is None else description, name, version))
        return self.get(name, version)

    def add_tags(self, name, version, tags):
        return self.update(name, version, add_tags=tags)

    def remove_tags(self, name, version, keys):
        return self.update(name, version, remove_tags=keys)

    def add_properties(self, name, version, properties):
        return self.update(name, version, add_properties=properties)

    def delete(self, name, version):
        """Delete NAME:VERSION: its record and its files. Its number is not given out again."""
        validate_model_name(name)
        version = parse_version(version)
        folder = self.model_dir(name, version)
        trash = self.root / f"{_DELETING}{os.getpid()}-{secrets.token_hex(6)}"
        # Says what the trash was, should this process die before its transaction commits.
        marker = trash.with_name(trash.name + ".json")
        marker.write_text(json.dumps({"name": name, "version": version}))
        moved = False
        try:
            with self.store.transaction() as conn:
                if conn.execute("SELECT 1 FROM models WHERE name = ? AND version = ?",
                                (name, version)).fetchone() is None:
                    raise self._not_found(conn, name, version)
                conn.execute("DELETE FROM model_files WHERE name = ? AND version = ?",
                             (name, version))
                conn.execute("DELETE FROM models WHERE name = ? AND version = ?", (name, version))
                if os.path.lexists(folder):
                    os.rename(folder, trash)
                    moved = True
                try:
                    folder.parent.rmdir()  # under the write lock: no registration is using it
                except OSError:
                    pass  # other versions are there
        except BaseException:
            if moved:
                folder.parent.mkdir(exist_ok=True)
                os.rename(trash, folder)
            marker.unlink(missing_ok=True)
            raise
        if moved:
            _remove_tree(trash)
        marker.unlink(missing_ok=True)

    # -- inside ---------------------------------------------------------------------------------

    def _record(self, row, files):
        record = {key: row[key] for key in row.keys()}
        model_id = f"{record['name']}:{record['version']}"
        for column in ("tags", "properties"):
            try:
                record[column] = json.loads(record[column])
            except (TypeError, json.JSONDecodeError) as error:
                raise RunRecordCorruptedError(
                    f"model {model_id}'s record is damaged ({column} is not valid JSON: {error}); "
                    "it is not served") from None
            if not isinstance(record[column], dict):
                raise RunRecordCorruptedError(f"model {model_id}'s record is damaged ({column} "
                                              "is not an object); it is not served")
        path = self.model_dir(record["name"], record["version"]) / record["model_path"]
        record.update(
            id=model_id,
            path=str(path),
            url=path.as_uri(),
            created_time=datetime.datetime.fromtimestamp(
                record["created_at"], datetime.timezone.utc).isoformat(),
        )
        if files is not None:
            self._add_files(record, files)
        return record

    @staticmethod
    def _add_files(record, files):
        record["files"] = files
        record["size_bytes"] = sum(entry["size"] for entry in files)

    @staticmethod
    def _files(conn, keys):
        """{(name, version): [{path, size, sha256}, ...]} for the given models."""
        files = {key: [] for key in keys}
        if not keys:
            return files
        names = sorted({name for name, _version in keys})
        placeholders = ", ".join("?" for _ in names)
        for row in conn.execute(
                f"SELECT name, version, path, size, sha256 FROM model_files WHERE name IN "
                f"({placeholders}) ORDER BY name, version, path", names):
            key = (row["name"], row["version"])
            if key in files:
                files[key].append({"path": row["path"], "size": row["size"],
                                   "sha256": row["sha256"]})
        return files

    def _not_found(self, conn, name, version):
        versions = [row["version"] for row in conn.execute(
            "SELECT version FROM models WHERE name = ? ORDER BY version", (name,))]
        if version is None or not versions:
            return ModelNotFoundError(f"no model named {name!r} in the registry at {self.root} "
                                      "(see `amlocal models list`)")
        return ModelNotFoundError(f"model {name!r} has no version {version} (its versions: "
                                  f"{', '.join(map(str, versions))})")

    @staticmethod
    def _discard(staging, final):
        shutil.rmtree(staging, ignore_errors=True)
        if final is not None:
            shutil.rmtree(final, ignore_errors=True)

    def _sweep(self):
        """Clear what registrations and deletions left when their process died.

        A staging folder is removed. A deletion's trash is removed if its deletion committed;
        if the process died before that, the model is still recorded, so its files go back.
        """
        for entry in self._staging_root.iterdir():
            if _owner_gone(entry.name):
                _remove_tree(entry)
        for entry in self.root.iterdir():
            if (not entry.name.startswith(_DELETING) or entry.name.endswith(".json")
                    or not _owner_gone(entry.name.removeprefix(_DELETING))):
                continue
            marker = entry.with_name(entry.name + ".json")
            try:
                deleted = json.loads(marker.read_text())
                name, version = deleted["name"], int(deleted["version"])
            except (OSError, ValueError, KeyError, TypeError):
                name = version = None
            if name is not None and is_valid_model_name(name):
                with self.store.transaction() as conn:
                    recorded = conn.execute("SELECT 1 FROM models WHERE name = ? AND version = ?",
                                            (name, version)).fetchone()
                    folder = self.model_dir(name, version)
                    if recorded and not os.path.lexists(folder):
                        folder.parent.mkdir(exist_ok=True)
                        os.rename(entry, folder)
            _remove_tree(entry)
            marker.unlink(missing_ok=True)
        for marker in self.root.glob(f"{_DELETING}*.json"):
            if (_owner_gone(marker.name.removeprefix(_DELETING))
                    and not marker.with_suffix("").exists()):
                marker.unlink(missing_ok=True)


def _copy_hashing(source, target, reading=False):
    """Copy a file's bytes to a new file `target`; return (size, SHA-256) of what was copied.

    `source` is a Path or a RunFile (a run's file, read through the run folder and verified).
    reading: an error opening or reading `source` is the caller's input, so it is reported as a
    UserInputError (a link to nowhere in a model folder, a file that cannot be read).
    """
    with ExitStack() as stack:
        try:
            handle_in = stack.enter_context(source.open("rb"))
        except OSError as error:
            if not reading:
                raise
            raise UserInputError(f"cannot read {source}: {error.strerror}") from None
        with open(target, "xb") as handle_out:
            return copy_hashing(handle_in, handle_out)


def _owner_gone(entry_name):
    """Whether the process named by '<pid>-<token>' has exited."""
    pid = entry_name.split("-", 1)[0]
    return pid.isdigit() and not process_alive(int(pid))


def _remove_tree(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
