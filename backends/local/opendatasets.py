"""Azure ML's open datasets, for runs whose script reads them: MNIST from amlocal's dataset cache.

Azure ML's samples read MNIST with `azureml.opendatasets.MNIST.get_file_dataset().download(...)`,
which fetches from Azure's storage: a run here has no network, and amlocal never fetches data
behind a user's back from a source they did not choose. So when a run's snapshot imports
azureml.opendatasets and names MNIST, the submission makes sure amlocal's dataset cache holds it
(`$AMLOCAL_HOME/datasets/mnist`, what `amlocal datasets fetch mnist` keeps; fetched on first use
from the sources that command tries, each said in the build log) and mounts the cache read-only
as the input MNIST_INPUT; the run-side stand-in (runtime/opendatasets/) copies the files from
there. The run's build log says where they came from.
"""

import dataclasses
import re
from pathlib import Path

from amlocal.errors import UserInputError

MNIST_INPUT = "azureml_opendatasets_mnist"
# A source file that imports azureml.opendatasets (any import form) and names MNIST.
_IMPORTS_OPENDATASETS = re.compile(rb"\bazureml\.opendatasets\b|\bfrom\s+azureml\s+import\s+[^\n]*\bopendatasets\b")
_NAMES_MNIST = re.compile(rb"\bMNIST\b")
# Scripts larger than this are not read for the check (a snapshot's data files are not code).
_LARGEST_SOURCE_BYTES = 1 << 20


def uses_open_mnist(source_dir, files):
    """Whether a Python file of the snapshot (`files`: snapshot_files' (path, size) pairs)
    reads MNIST through azureml.opendatasets."""
    for relative, size in files:
        if not relative.endswith(".py") or size > _LARGEST_SOURCE_BYTES:
            continue
        try:
            text = (Path(source_dir) / relative).read_bytes()
        except OSError:
            continue
        if _IMPORTS_OPENDATASETS.search(text) and _NAMES_MNIST.search(text):
            return True
    return False


def with_open_datasets(spec, files, home):
    """`spec` with amlocal's MNIST mounted as MNIST_INPUT when its snapshot reads MNIST through
    azureml.opendatasets (the build log's first lines say so); `spec` itself otherwise."""
    if MNIST_INPUT in spec.inputs or not uses_open_mnist(spec.source_dir, files):
        return spec
    from amlocal.mnist import MnistFetchError, cached_mnist  # only for runs that read it

    fetched = []
    try:
        result = cached_mnist(home, progress=fetched.append)
    except MnistFetchError as error:
        raise UserInputError(f"the run reads MNIST through azureml.opendatasets, which amlocal "
                             f"serves from its dataset cache, and filling it failed: {error} "
                             "(or fill it with `amlocal datasets fetch mnist --from-dir DIR`)") from None
    subset = "" if result.is_full_mnist else ", a subset of MNIST"
    notes = [f"azureml.opendatasets.MNIST: this run's script reads it; amlocal gives it from its "
             f"dataset cache {result.dest} ({result.train_count:,} train / "
             f"{result.test_count:,} test images{subset}; from {result.source}), mounted "
             f"read-only as input {MNIST_INPUT}: Azure's storage is not reached."]
    notes += [f"  fetching it: {line}" for line in fetched if not line.startswith("already present")]
    environment = dataclasses.replace(
        spec.environment, build_notes=tuple(spec.environment.build_notes) + tuple(notes))
    return dataclasses.replace(spec, inputs={**spec.inputs, MNIST_INPUT: Path(result.dest).resolve()},
                               environment=environment)
