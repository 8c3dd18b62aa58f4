"""Stand-in for `azureml.core.run` inside amlocal runs."""
from amlocal_run import Run, _OfflineRun  # noqa: F401
