"""Source snapshots, taken the way Azure ML v1 takes them.

`.amlignore` is honoured, or `.gitignore` when there is no `.amlignore` (gitignore syntax, via
pathspec); `.git/` is always left out. Azure's limits apply: 300 MB and 2,000 files, the file
limit lifted by the AML_SNAPSHOT_NO_FILE_LIMIT environment variable, as in azureml-core.
"""

import os
import shutil
from pathlib import Path

import pathspec

from amlocal.errors import UserInputError

SNAPSHOT_MAX_SIZE_BYTES = 300 * 1024 * 1024
SNAPSHOT_MAX_FILES = 2000
IGNORE_FILES = (".amlignore", ".gitignore")


def _ignore_spec(source_dir):
    for name in IGNORE_FILES:
        ignore_file = source_dir / name
        if ignore_file.is_file():
            return pathspec.GitIgnoreSpec.from_lines(ignore_file.read_text().splitlines())
    return pathspec.GitIgnoreSpec.from_lines([])


def snapshot_files(source_dir):
    """The (relative posix path, size in bytes) of every file the snapshot of source_dir takes.

    Raises UserInputError when the snapshot would exceed Azure ML's limits.
    """
    source_dir = Path(source_dir)
    spec = _ignore_spec(source_dir)
    files = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(source_dir, followlinks=False):
        relative_dir = Path(dirpath).relative_to(source_dir)
        kept = []
        for dirname in sorted(dirnames):
            relative = (relative_dir / dirname).as_posix()
            if dirname != ".git" and not spec.match_file(relative + "/"):
                kept.append(dirname)
        dirnames[:] = kept
        for filename in sorted(filenames):
            relative = (relative_dir / filename).as_posix()
            if spec.match_file(relative):
                continue
            size = os.path.getsize(os.path.join(dirpath, filename))
            files.append((relative, size))
            total += size
    if total > SNAPSHOT_MAX_SIZE_BYTES:
        raise UserInputError(
            f"Your total snapshot size exceeds the limit of {SNAPSHOT_MAX_SIZE_BYTES / 2**20:.1f} MB "
            f"({total / 2**20:.1f} MB in {source_dir}; list what to leave out in .amlignore)")
    if len(files) > SNAPSHOT_MAX_FILES and not os.environ.get("AML_SNAPSHOT_NO_FILE_LIMIT"):
        raise UserInputError(
            f"snapshot of {source_dir} has {len(files)} files, over the limit of "
            f"{SNAPSHOT_MAX_FILES} (list what to leave out in .amlignore, or set "
            "AML_SNAPSHOT_NO_FILE_LIMIT=1)")
    return files


def take_snapshot(source_dir, destination, files=None):
    """Copy the snapshot of source_dir into destination (which must not exist yet)."""
    source_dir = Path(source_dir)
    destination = Path(destination)
    destination.mkdir(parents=True)
    for relative, _size in files if files is not None else snapshot_files(source_dir):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_dir / relative, target)


def copy_working_directory(snapshot_dir, working_dir, mapped=("outputs", "logs")):
    """A fresh working directory for a run: the snapshot minus the folders mapped into the store.

    The script may write anywhere in its working directory (as on Azure, where it runs in a copy
    of the snapshot), so the stored snapshot itself is never handed to the run.
    """
    shutil.copytree(snapshot_dir, working_dir, symlinks=True,
                    ignore=lambda directory, names: [name for name in names if
                                                     Path(directory) == Path(snapshot_dir)
                                                     and name in mapped])
