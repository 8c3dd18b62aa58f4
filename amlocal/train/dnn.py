"""Mirrors `azureml.train.dnn`: the framework estimators (here, `Chainer`) and the
distributed_training values they take (`Mpi`; `Gloo` and `Nccl` are for PyTorch and the generic
Estimator, `ParameterServer` for TensorFlow: importable, refused by Chainer as by azureml)."""

from amlocal.errors import UserInputError
from amlocal.train.distributed_training import Gloo, Mpi, Nccl, ParameterServer
from amlocal.train.estimator import Estimator, logger

__all__ = ["Chainer", "Gloo", "Mpi", "Nccl", "ParameterServer"]

SUPPORTED_VERSIONS = ("5.1.0", "7.0.0")  # azureml-train-core's list for Chainer
DEFAULT_VERSION = "5.1.0"


class Chainer(Estimator):
    """A Chainer training run: the docker/chainer recipe (Chainer 7.8.1 on NumPy < 2) plus the
    estimator's pip packages. framework_version takes azureml-train-core's values; amlocal's
    image has Chainer 7.8.1 whichever is asked for (Chainer 7 reads 5.x code)."""

    _recipe = "chainer"

    def __init__(self, source_directory, *, framework_version=None, **kwargs):
        logger.warning("'Chainer' estimator is deprecated. Please use 'ScriptRunConfig' from "
                       "'azureml.core.script_run_config' with your own defined environment or an "
                       "Azure ML curated environment.")
        if framework_version is not None and framework_version not in SUPPORTED_VERSIONS:
            raise UserInputError(f"Chainer framework_version {framework_version!r} is not "
                                 f"supported: supported versions are {', '.join(SUPPORTED_VERSIONS)}")
        self.framework_version = framework_version or DEFAULT_VERSION
        super().__init__(source_directory, **kwargs)
