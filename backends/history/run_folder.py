"""The host's one way into a run's folder, which the run's script shares and so may booby-trap.

A script controls what is in its ./outputs, ./logs and telemetry folders: the names, symlinks
(to any host path: the host would follow them, although the container cannot), hard links (a
host process can link any file of the user's), FIFOs, sockets. Everything amlocal's host side
reads or writes there goes through `RunFolder`, which

- checks every name it is given (`name_parts`): relative, no `..`, `.` or empty parts, no NUL,
  bounded length;
- opens each part relative to the folder above it (a directory descriptor), never following a
  symlink (O_NOFOLLOW), so a link swapped in at any moment is refused, not followed;
- counts only regular files as run files. A symlink is data: it stays in the folder as the link
  it is, and is never listed, read through or written through. A FIFO, socket or device is never
  opened (so reading cannot hang) and is reported as skipped;
- gives a file with other names (st_nlink > 1) an inode of its own before it is recorded, so
  nothing the host does to a run file later reaches a file outside the run that the script
  hard-linked in, and a change to that outside file does not change the run's record.

Names are `str` as the OS gives them: a name that is not UTF-8 keeps its bytes as surrogate
escapes (os.fsdecode), so it round-trips to the same file; `printable` shows it escaped.
"""

import errno
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass

from amlocal.errors import UserInputError

MAX_PART_BYTES = 255  # NAME_MAX of Linux file systems
MAX_NAME_BYTES = 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The top folder is named by amlocal (a run folder it made) or by the user (a download folder):
# a link there is theirs, and followed.
_TOP_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the check opens at once (and is then refused) instead of
# waiting for a writer; it changes nothing for a regular file.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What following a link or a non-folder part gives with O_NOFOLLOW | O_DIRECTORY.
_NOT_FOLLOWED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT)
_BLOCK = 1 << 20


class NotARunFile(Exception):
    """The name is not a regular file reached without following a link (or is gone)."""


@dataclass(frozen=True)
class Entry:
    """What a run folder holds under a name: kind is "file", "link", "folder" or the special
    file's type ("FIFO", "socket", "device")."""

    name: str
    kind: str


def name_parts(name, what="run file name"):
    """The parts of a relative posix `name`; UserInputError if it could leave its folder."""
    if not isinstance(name, str) or not name:
        raise UserInputError(f"invalid {what} {name!r}: it must be a non-empty relative path")
    if "\0" in name:
        raise UserInputError(f"invalid {what} {printable(name)!r}: it contains a NUL character")
    if len(os.fsencode(name)) > MAX_NAME_BYTES:
        raise UserInputError(f"invalid {what} {printable(name)[:80]!r}...: longer than "
                             f"{MAX_NAME_BYTES} bytes")
    if name.startswith("/"):
        raise UserInputError(f"invalid {what} {printable(name)!r}: it must be relative")
    parts = tuple(name.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise UserInputError(f"invalid {what} {printable(name)!r}: empty, '.' and '..' "
                                 "parts are not allowed")
        if len(os.fsencode(part)) > MAX_PART_BYTES:
            raise UserInputError(f"invalid {what} {printable(name)!r}: a part is longer than "
                                 f"{MAX_PART_BYTES} bytes")
    return parts


def printable(name):
    """`name` as text that any terminal and encoder takes: bytes that are not UTF-8 as \\xNN,
    control characters as \\xNN too (a name with a newline would read as two names)."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7f else char
                   for char in text)


class RunFolder:
    """A run's folder (or a download folder), opened once; every name below it is reached
    through directory descriptors, part by part, without following links. A context manager."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, _TOP_FLAGS)

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # -- reading --------------------------------------------------------------------------------

    def entries(self, folder):
        """Every entry under `folder` (a name in the run folder), depth first, sorted; a folder
        that is missing, or that a link replaced, has none."""
        try:
            fd = self._open_folder(name_parts(folder))
        except NotARunFile:
            return []
        try:
            return list(_walk(fd, folder))
        finally:
            os.close(fd)

    def open(self, name):
        """The regular file `name`, open for reading in binary; NotARunFile for anything else."""
        parts = name_parts(name)
        parent = self._open_folder(parts[:-1])
        try:
            return os.fdopen(_open_regular(parent, parts[-1]), "rb")
        finally:
            os.close(parent)

    def is_file(self, name):
        try:
            self.open(name).close()
        except NotARunFile:
            return False
        return True

    def digest(self, name):
        """(size, SHA-256) of the regular file `name`. A file with other names (a hard link)
        first gets an inode of its own, in place and atomically, so the run keeps what it held
        and no host write or later change reaches the other names."""
        parts = name_parts(name)
        parent = self._open_folder(parts[:-1])
        try:
            source = _open_regular(parent, parts[-1])
            with os.fdopen(source, "rb") as handle:
                status = os.fstat(handle.fileno())
                if status.st_nlink == 1:
                    return copy_hashing(handle)
                return _replace(parent, parts[-1], handle, stat.S_IMODE(status.st_mode))
        finally:
            os.close(parent)

    # -- writing --------------------------------------------------------------------------------

    def move_from(self, source, source_name, name):
        """Move the regular file `source_name` of RunFolder `source` to `name` here (folders
        made as needed); False, with nothing moved, if either side is not what it must be (the
        source not a regular file, a link or a non-folder on the way, a folder at `name`)."""
        source_parts, parts = name_parts(source_name), name_parts(name)
        try:
            source_parent = source._open_folder(source_parts[:-1])
        except NotARunFile:
            return False
        try:
            if not _is_regular(source_parent, source_parts[-1]):
                return False
            try:
                parent = self._open_folder(parts[:-1], create=True)
            except NotARunFile:
                return False
            try:
                # rename never follows its last part: a link at `name` is replaced, not written.
                os.rename(source_parts[-1], parts[-1], src_dir_fd=source_parent, dst_dir_fd=parent)
                if os.geteuid() == 0:
                    # Written by the script's unprivileged user (ownership.py); among the run's
                    # files it is the submitter's, as the rest of the run folder is once the run
                    # ends. The name's own inode: a link swapped in is re-owned, not followed.
                    os.chown(parts[-1], os.getuid(), os.getgid(), dir_fd=parent,
                             follow_symlinks=False)
            except (IsADirectoryError, NotADirectoryError, FileNotFoundError):
                return False
            finally:
                os.close(parent)
        finally:
            os.close(source_parent)
        return True

    def _open_folder(self, parts, create=False):
        """A new descriptor of the folder at `parts` (made, part by part, when create)."""
        current = os.dup(self.fd)
        try:
            for part in parts:
                following = _open_subfolder(current, part, create)
                os.close(current)
                current = following
        except BaseException:
            os.close(current)
            raise
        return current


def write_file(folder, name, source):
    """Copy the binary file object `source` to `name` under the host folder `folder`, atomically
    (see stage_file); returns (size, SHA-256)."""
    staged = stage_file(folder, name, source)
    with staged:
        staged.commit()
    return staged.size, staged.sha256


def stage_file(folder, name, source):
    """Copy the binary file object `source` into a StagedFile for `name` under the host folder
    `folder`: under a temporary name until it is committed.

    `name` is checked (name_parts) and each folder on the way is made or opened without following
    a link, so nothing is ever written outside `folder`: a link on the way, or a folder that
    cannot be made, is refused with a UserInputError.
    """
    parts = name_parts(name)
    try:
        os.makedirs(folder, exist_ok=True)
        with RunFolder(folder) as root:
            parent = root._open_folder(parts[:-1], create=True)
    except NotARunFile:
        raise UserInputError(f"cannot write {printable(name)} into {folder}: a part of its "
                             "path there is a link or not a folder") from None
    except OSError as error:
        raise UserInputError(f"cannot write {printable(name)} into {folder}: "
                             f"{error.strerror}") from None
    try:
        temporary, (size, digest) = _write_temporary(parent, parts[-1], source)
    except BaseException:
        os.close(parent)
        raise
    return StagedFile(folder, name, parent, temporary, size, digest)


class StagedFile:
    """A file written in its folder under a temporary name, with the size and SHA-256 of what
    was written: `commit` puts it in place (a rename, which never follows the name), closing
    without a commit (or `discard`) leaves nothing. A context manager."""

    def __init__(self, folder, name, parent, temporary, size, sha256):
        self.folder, self.name, self.size, self.sha256 = folder, name, size, sha256
        self._parent, self._temporary = parent, temporary

    def commit(self):
        try:
            os.rename(self._temporary, self.name.rsplit("/", 1)[-1], src_dir_fd=self._parent,
                      dst_dir_fd=self._parent)
        except IsADirectoryError:
            raise UserInputError(f"cannot write {printable(self.name)} into {self.folder}: a "
                                 "folder has that name") from None
        self._temporary = None

    def discard(self):
        if self._parent is None:
            return
        if self._temporary is not None:
            _unlink_quietly(self._temporary, self._parent)
        os.close(self._parent)
        self._parent = None

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.discard()


def _replace(parent, part, source, mode):
    """Copy `source` into a new file with permissions `mode` that then takes the name `part` in
    folder `parent` (renamed from a temporary name, atomically). Returns (size, SHA-256)."""
    temporary, result = _write_temporary(parent, part, source, mode)
    try:
        os.rename(temporary, part, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        _unlink_quietly(temporary, parent)
        raise
    return result


def _write_temporary(parent, part, source, mode=None):
    """Copy `source` into a new file in folder `parent` named after `part`; (its name, (size,
    SHA-256)). mode: its permissions (None: 0o666 less the umask)."""
    temporary = f".{part[:200]}.{secrets.token_hex(4)}.partial"
    fd = os.open(temporary, _CREATE_FLAGS, 0o666 if mode is None else 0o600, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb") as out:
            result = copy_hashing(source, out)
            if mode is not None:
                os.fchmod(out.fileno(), mode)
    except BaseException:
        _unlink_quietly(temporary, parent)
        raise
    return temporary, result


def _walk(fd, prefix):
    with os.scandir(fd) as scan:
        found = sorted(scan, key=lambda entry: entry.name)
    for entry in found:
        name = f"{prefix}/{entry.name}"
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue  # removed (or renamed) since it was listed
        if stat.S_ISDIR(mode):
            yield Entry(name, "folder")
            try:
                sub = _open_subfolder(fd, entry.name, create=False)
            except NotARunFile:
                continue  # replaced by a link or removed since it was listed
            try:
                yield from _walk(sub, name)
            finally:
                os.close(sub)
        else:
            yield Entry(name, _kind(mode))


def _kind(mode):
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def _open_subfolder(parent, part, create):
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise NotARunFile(part) from None
    except OSError as error:
        if error.errno in _NOT_FOLLOWED:
            raise NotARunFile(part) from None
        raise
    try:
        os.mkdir(part, dir_fd=parent)
    except FileExistsError:
        pass  # made meanwhile (by another writer, or the script): opened below, no link followed
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except OSError as error:
        if error.errno in _NOT_FOLLOWED:
            raise NotARunFile(part) from None
        raise


def _is_regular(parent, part):
    try:
        return stat.S_ISREG(os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _open_regular(parent, part):
    """A descriptor of the regular file `part` in folder `parent`, or NotARunFile.

    Looked at before it is opened, so a FIFO, socket or device is never opened, and checked
    again once open (the same inode), so a swap in between is refused.
    """
    try:
        before = os.stat(part, dir_fd=parent, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        raise NotARunFile(part) from None
    if not stat.S_ISREG(before.st_mode):
        raise NotARunFile(part)
    try:
        fd = os.open(part, _READ_FLAGS, dir_fd=parent)
    except OSError as error:
        if error.errno in _NOT_FOLLOWED:
            raise NotARunFile(part) from None
        raise
    after = os.fstat(fd)
    if not (stat.S_ISREG(after.st_mode) and os.path.samestat(before, after)):
        os.close(fd)
        raise NotARunFile(part)
    return fd


def copy_hashing(source, out=None):
    """Read the binary file object `source` to its end, writing it to `out` if given; return
    (size, SHA-256) of what was read."""
    digest = hashlib.sha256()
    size = 0
    for block in iter(lambda: source.read(_BLOCK), b""):
        digest.update(block)
        size += len(block)
        if out is not None:
            out.write(block)
    return size, digest.hexdigest()


def _unlink_quietly(part, parent):
    try:
        os.unlink(part, dir_fd=parent)
    except FileNotFoundError:
        pass
