"""Stand-in for `azureml.core` inside amlocal runs: only the training-script side (Run)."""
from azureml.core.run import Run  # noqa: F401
