"""Stand-in for `azureml.opendatasets` inside amlocal runs whose Python does not have it: MNIST.

Azure ML's open datasets are read from Azure's storage, which a run here cannot reach (it has no
network). A run whose snapshot uses azureml.opendatasets' MNIST gets amlocal's dataset cache
mounted read-only (backends/local/opendatasets.py); `MNIST.get_file_dataset().download(folder)`
copies its four IDX .gz files from there, under the names Azure's dataset has, and says where
they came from. Standard library only: this runs in the script's Python.
"""
import os
import shutil
import sys

# The input the run's driver mounts the cache as (backends/local/opendatasets.py MNIST_INPUT).
_MNIST_INPUT = "azureml_opendatasets_mnist"
_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_SOURCE_NOTE = "SOURCE.txt"


class OpenDatasetNotEmulated(Exception):
    """What amlocal's stand-in cannot give a run."""


def _cache_folder():
    folder = os.environ.get("AZUREML_DATAREFERENCE_" + _MNIST_INPUT)
    if not folder or not os.path.isdir(folder):
        raise OpenDatasetNotEmulated(
            "amlocal: MNIST from azureml.opendatasets is given to runs whose snapshot imports "
            "azureml.opendatasets and names MNIST; this run has no dataset cache mounted")
    return folder


class _MnistFileDataset:
    """The four MNIST files, as azureml-core's FileDataset downloads them."""

    def to_path(self):
        return ["/" + name for name in _MNIST_FILES]

    def download(self, target_path=None, overwrite=False, ignore_not_found=False):
        source = _cache_folder()
        target = target_path or os.path.join(os.getcwd(), "mnist")
        os.makedirs(target, exist_ok=True)
        written = []
        for name in _MNIST_FILES:
            destination = os.path.join(target, name)
            if os.path.exists(destination) and not overwrite:
                raise FileExistsError(f"{destination} exists: download(..., overwrite=True) "
                                      "replaces it")
            shutil.copyfile(os.path.join(source, name), destination)
            written.append(destination)
        try:
            with open(os.path.join(source, _SOURCE_NOTE), encoding="utf-8") as handle:
                origin = handle.read().strip()
        except OSError:
            origin = "source not recorded"
        print(f"azureml.opendatasets.MNIST (amlocal): the 4 files come from amlocal's dataset "
              f"cache ({origin}), not from Azure", file=sys.stderr)
        return written

    def mount(self, mount_point=None, **kwargs):
        raise OpenDatasetNotEmulated("amlocal: MNIST's file dataset can be downloaded "
                                     "(.download(folder)), not mounted")


class MNIST:
    """azureml.opendatasets.MNIST: its file dataset, from amlocal's dataset cache."""

    @staticmethod
    def get_file_dataset(enable_telemetry=True):
        return _MnistFileDataset()

    @staticmethod
    def get_tabular_dataset(dataset="all", enable_telemetry=True):
        raise OpenDatasetNotEmulated("amlocal: MNIST's tabular dataset is not emulated (it "
                                     "needs azureml-dataprep); use get_file_dataset()")


def __getattr__(name):
    raise OpenDatasetNotEmulated(f"amlocal: azureml.opendatasets.{name} is not emulated; only "
                                 "MNIST's file dataset is")
