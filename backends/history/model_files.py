"""Serving a registered model's files: each is checked against the size and SHA-256 recorded when
it was registered, so a damaged model is reported, never served.

These take a model's record (ModelRegistry.get) and the registry folder that holds its version;
ModelRegistry.verified_path and .download are the ways in.
"""

import os
from pathlib import Path

from amlocal.backends.history.run_files import sha256_of_file
from amlocal.backends.history.run_folder import (NotARunFile, RunFolder, copy_hashing, name_parts,
                                                 printable, stage_file)
from amlocal.errors import RunRecordCorruptedError, UserInputError


def verified_model_path(record, folder):
    """The registry's own copy of the model (file or folder) in `folder`, after checking its
    files."""
    for entry in record["files"]:
        path = folder / entry["path"]
        try:
            size, digest = path.stat().st_size, sha256_of_file(path)
        except OSError as error:
            raise damaged_model(record, f"{entry['path']} is unreadable ({error.strerror})") \
                from None
        if (size, digest) != (entry["size"], entry["sha256"]):
            raise damaged_model(record, _difference(entry, size))
    return folder / record["model_path"]


def open_verified_model_file(record, folder, path):
    """The model file `path` (one of `record`'s files, kept in `folder`), open for reading in
    binary at its start, after checking its bytes against what was recorded: UserInputError for
    a path the model does not have, RunRecordCorruptedError for a damaged file. Opened without
    following any link, and only if it is a regular file."""
    entry = next((entry for entry in record["files"] if entry["path"] == path), None)
    if entry is None:
        raise UserInputError(f"model {record['id']} has no file {printable(path)!r}")
    try:
        with RunFolder(folder) as model_folder:
            handle = model_folder.open(path)
    except (NotARunFile, OSError) as error:
        raise damaged_model(record, f"{entry['path']} is missing or not a regular file "
                            f"({error})") from None
    try:
        size, digest = copy_hashing(handle)
        if (size, digest) != (entry["size"], entry["sha256"]):
            raise damaged_model(record, _difference(entry, size))
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return handle


def download_model(record, folder, target_dir, exist_ok=False):
    """Copy the model of `record`, kept in `folder`, into target_dir; return the model's path.

    The model keeps its name there (target_dir/model.npz, or target_dir/outputs/...). As in
    azureml-core, a file that is already there is an error unless exist_ok, and then it is
    replaced; here nothing is written in that case. Every file is checked against the size
    and SHA-256 recorded when it was registered, and written under a temporary name first:
    a damaged model leaves nothing in target_dir.
    """
    target_dir = Path(target_dir)
    for entry in record["files"]:
        try:
            name_parts(entry["path"], "model file name")
        except UserInputError as error:
            raise damaged_model(record, str(error)) from None  # would leave target_dir
    plan = [(folder / entry["path"], target_dir / entry["path"], entry)
            for entry in record["files"]]
    if not exist_ok:
        for _source, target, _entry in plan:
            if os.path.lexists(target):
                raise UserInputError("File already exists. To overwrite, set exist_ok to "
                                     f"True. {target}")
    for _source, target, _entry in plan:
        if target.is_dir():
            raise UserInputError(f"cannot download {record['id']}: {target} is a folder")
    staged, created = [], []
    try:
        for source, target, entry in plan:
            missing = target.parent
            while not missing.exists() and missing not in created:
                created.append(missing)
                missing = missing.parent
            try:
                handle = open(source, "rb")
            except FileNotFoundError:
                raise damaged_model(record, f"{entry['path']} is missing from {folder}") \
                    from None
            with handle:
                # Written through the folder's descriptors: never through a link there.
                staged.append(stage_file(target_dir, entry["path"], handle))
            if (staged[-1].size, staged[-1].sha256) != (entry["size"], entry["sha256"]):
                raise damaged_model(record, _difference(entry, staged[-1].size))
        for file in staged:
            file.commit()
    except BaseException:
        for file in staged:
            file.discard()  # before the folders it made are removed
        for made in sorted(created, key=lambda path: len(path.parts), reverse=True):
            try:
                made.rmdir()
            except OSError:
                pass
        raise
    finally:
        for file in staged:
            file.discard()  # closes what a commit left open
    return target_dir / record["model_path"]


def damaged_model(record, what):
    return RunRecordCorruptedError(
        f"model {record['id']}'s files in the registry are damaged: {what}; it is not served "
        "(register the model again)")


def _difference(entry, size):
    return (f"{entry['path']} is not the file that was registered ({size} bytes now, "
            f"{entry['size']} recorded, SHA-256 differs)")
