"""Where the command line writes (-o): checked before anything is drawn or copied, and folders
made whole or not at all."""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from amlocal.errors import UserInputError
from amlocal.validation import usable_path


def _make_folders(path, option):
    """Create the folder `path` and its missing parents; return it and the folders made here.

    If that fails (a parent is a file, a name is too long, no permission), the folders made
    here are removed again and UserInputError says why, so a refused -o leaves nothing behind.
    """
    folder = usable_path(path, option)
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"{option} {folder} is a file; name a folder")
    made = []
    try:
        for step in [*reversed(folder.parents), folder]:
            if not step.is_dir():
                step.mkdir()
                made.append(step)
    except OSError as error:
        _remove_empty(made)
        raise UserInputError(f"cannot create {option} {folder}: {error.strerror or error}") from None
    return folder, made


def _remove_empty(folders):
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty: something was written there, and is kept
            return


def make_output_folder(path, option="-o"):
    """Create the folder `path` and its missing parents (see _make_folders); return it as a Path."""
    return _make_folders(path, option)[0]


@contextmanager
def output_folder(path, option="-o"):
    """make_output_folder for a command that then writes into it: if the command fails, the
    folders made here that are still empty go again, so a refused download leaves nothing."""
    folder, made = _make_folders(path, option)
    try:
        yield folder
    except BaseException:
        _remove_empty(made)
        raise


def png_file(path, option="-o"):
    """`path` as the Path of a PNG file to write, or UserInputError saying why it cannot be."""
    path = usable_path(path, option)
    if path.suffix.lower() != ".png":
        raise UserInputError(f"{option} {path} must name a .png file: the chart is written as PNG")
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a folder; name the .png file to write")
    return path


def write_atomically(path, data):
    """Write bytes to path through a temporary file in the same folder and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                                 dir=path.parent)
    except OSError as error:
        raise UserInputError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise UserInputError(f"cannot write {path}: {error.strerror or error}") from None
        raise
    return path
