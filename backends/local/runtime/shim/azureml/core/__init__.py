"""Stand-in for `azureml.core` inside amlocal runs: the training-script side (Run), and the name
`Dataset`, which Azure ML's samples import beside their data code."""
from azureml.core.run import Run  # noqa: F401


class Dataset:
    """Importable, as in azureml-core; registered datasets are not emulated in a run."""

    def __getattr__(self, name):
        raise NotImplementedError("amlocal's azureml.core stand-in does not emulate datasets "
                                  "(Dataset." + name + "); use an input (--input NAME=PATH)")

    @staticmethod
    def get_by_name(workspace, name, version="latest"):
        raise NotImplementedError("amlocal's azureml.core stand-in does not emulate registered "
                                  "datasets (Dataset.get_by_name); use an input (--input NAME=PATH)")
