"""Stand-in for `azureml.exceptions` inside amlocal runs: the errors the Run API raises."""


class AzureMLException(Exception):
    """The root of azureml's errors."""


class UserErrorException(AzureMLException):
    """A call the service would reject."""


class RunEnvironmentException(AzureMLException):
    """Not inside a run."""
