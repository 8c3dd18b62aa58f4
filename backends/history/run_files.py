"""A run's files: listing them, opening them, and the size and SHA-256 PostProcessing records of
them, so that damage found later is reported instead of served.

A run's files live in its folder (see store.py's layout): outputs/, logs/ and azureml-logs/ under
their own names, uploads/ for the rest.
"""

import os
from contextlib import contextmanager

from amlocal.backends.history.run_folder import (NotARunFile, RunFolder, copy_hashing, name_parts,
                                                 printable)
from amlocal.errors import RunRecordCorruptedError, UserInputError

FILE_FOLDERS = ("outputs", "logs", "azureml-logs")
# Files a script uploads under other names (run.upload_file, log_image) live here, listed and
# downloaded by the name they were given.
UPLOADS_FOLDER = "uploads"


class RunFiles:
    """The file half of RunStore (store.py), which it is mixed into: it needs the store's
    run_dir, get_status, _connection and transaction."""

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


def sha256_of_file(path):
    with open(path, "rb") as handle:
        return copy_hashing(handle)[1]
