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

    Symlinks are followed as azureml-core follows them (a link to a file is taken as that file,
    a link to a folder as that folder's files, under the link's name) when they point inside
    source_dir. A link that points outside it, to nothing or to a folder above itself (a loop),
    and a FIFO, socket or device, are refused with a UserInputError unless the ignore file
    leaves them out: Azure would upload the host file a link points to, and fail with a
    traceback on the others. Raises UserInputError when the snapshot would exceed Azure ML's
    limits.
    """
    source_dir = Path(source_dir)
    files = list(_walk(source_dir.resolve(), source_dir.resolve(), "", _ignore_spec(source_dir)))
    total = sum(size for _relative, size in files)
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


def _walk(root, folder, prefix, spec, above=()):
    """(relative path, size) of the files under `folder` (a real folder inside `root`) that
    `spec` does not ignore; `above` holds the real folders the walk came through."""
    above = above + (folder,)
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        relative = prefix + entry.name
        if entry.name == ".git" and entry.is_dir():
            continue
        is_dir = entry.is_dir()  # follows a link, as azureml-core's isfile/listdir do
        if spec.match_file(relative + "/" if is_dir else relative):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            path = _link_target(root, path, relative, above)
        if is_dir:
            yield from _walk(root, path, relative + "/", spec, above)
        elif path.is_file():
            yield relative, path.stat().st_size
        else:
            raise UserInputError(f"the source folder's {relative} is not a file or a folder (a "
                                 "FIFO, socket or device cannot be snapshotted): remove it or "
                                 "list it in .amlignore")


def _link_target(root, link, relative, above):
    """Where the source folder's symlink `link` points, if that may be taken; UserInputError."""
    target = link.resolve()
    advice = "replace it with what it points to, or list it in .amlignore"
    if not target.exists():
        raise UserInputError(f"the source folder's symlink {relative} points to nothing "
                             f"({os.readlink(link)}): {advice}")
    if not target.is_relative_to(root):
        raise UserInputError(f"the source folder's symlink {relative} points outside it, to "
                             f"{target}, which would be copied into the snapshot: {advice}")
    if target in above:
        raise UserInputError(f"the source folder's symlink {relative} points to a folder that "
                             f"holds it ({target}), a loop: {advice}")
    return target


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
