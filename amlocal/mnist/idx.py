"""The four MNIST files as IDX gzip files: their names, reading and checking them, writing one."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Mapping, Sequence

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
MNIST_FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

IMAGES_MAGIC = 2051  # IDX: 0x00 0x00, type 0x08 (uint8), 3 dimensions
LABELS_MAGIC = 2049  # IDX: 0x00 0x00, type 0x08 (uint8), 1 dimension
ROWS = COLS = 28
PIXELS = ROWS * COLS


def gunzip(data: bytes, name: str) -> bytes:
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
    raw = gunzip(bytes(data), name)
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


def read_dir(folder: Path) -> dict[str, bytes]:
    files = {}
    for name in MNIST_FILES:
        path = folder / name
        if not path.is_file():
            raise ValueError(f"missing {path}")
        files[name] = path.read_bytes()
    return files


def validate_mnist_dir(folder: Path | str) -> tuple[int, int]:
    """`validate_mnist_files` on the four files in `folder`; return (train, test) counts."""
    return validate_mnist_files(read_dir(Path(folder)))


def write_idx(magic: int, dims: Sequence[int], payload: bytes) -> bytes:
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    return gzip.compress(header + payload, compresslevel=9, mtime=0)
