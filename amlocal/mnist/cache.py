"""amlocal's own MNIST: $AMLOCAL_HOME/datasets/mnist, what `amlocal datasets fetch mnist` keeps
when given no folder, and what runs that ask azureml.opendatasets for MNIST are given.

Beside the four files, SOURCE.txt says where they came from (FetchResult.source), so whoever
reads them later (a run, the next fetch) can say so too.
"""

from __future__ import annotations

from pathlib import Path

from amlocal.mnist.fetch import FetchResult, fetch_mnist
from amlocal.mnist.sources import Progress

SOURCE_NOTE = "SOURCE.txt"


def cache_dir(home: Path | str) -> Path:
    return Path(home) / "datasets" / "mnist"


def recorded_source(folder: Path | str) -> str | None:
    try:
        return (Path(folder) / SOURCE_NOTE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def fetch_into(dest: Path | str, *, progress: Progress = lambda message: None,
               from_dir: Path | str | None = None) -> FetchResult:
    """fetch_mnist(dest), and the source noted beside the files; a folder that already held
    them keeps the source it noted then."""
    result = fetch_mnist(dest, progress=progress, from_dir=from_dir)
    if result.source == "already present":
        noted = recorded_source(dest)
        return FetchResult(noted or result.source, result.train_count, result.test_count,
                           result.dest, result.failures)
    note = Path(dest) / SOURCE_NOTE
    temporary = note.with_name(f".{SOURCE_NOTE}.tmp")
    temporary.write_text(result.source + "\n", encoding="utf-8")
    temporary.replace(note)
    return result


def cached_mnist(home: Path | str, *, progress: Progress = lambda message: None) -> FetchResult:
    """The dataset cache's MNIST, fetched on first use (MnistFetchError when no source works)."""
    return fetch_into(cache_dir(home), progress=progress)
