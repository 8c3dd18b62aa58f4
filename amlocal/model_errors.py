"""azureml-core's model exceptions, and the checks and translations that raise them, for
`Model` (amlocal/model.py) and `Model.get_model_path` (amlocal/model_lookup.py)."""

from amlocal.errors import AmlocalError, UserInputError

_UNSUPPORTED = ("datasets", "sample_input_dataset", "sample_output_dataset",
                "resource_configuration")


class WebserviceException(AmlocalError):
    """azureml.exceptions.WebserviceException: the model registry refused a request."""

    exit_code = 2

    def __init__(self, exception_message, status_code=None, logger=None, **kwargs):
        super().__init__(exception_message)
        self.status_code = status_code

    @property
    def message(self):
        return str(self)


class ModelNotFoundException(WebserviceException):
    """azureml.exceptions.ModelNotFoundException: no such model (or version)."""

    exit_code = 4


class ModelPathNotFoundException(AmlocalError):
    """azureml.exceptions.ModelPathNotFoundException: the run has no file at model_path."""

    exit_code = 2

    def __init__(self, exception_message, logger=None, **kwargs):
        super().__init__(exception_message)

    @property
    def message(self):
        return str(self)


class UserErrorException(UserInputError):
    """azureml.exceptions.UserErrorException: an argument is of the wrong kind."""

    def __init__(self, exception_message, **kwargs):
        super().__init__(exception_message)

    @property
    def message(self):
        return str(self)


def _models():
    # The registries' rules and errors (backends/registries.py), imported on first use.
    from amlocal.backends import registries

    return registries


def _not_found_message(**kwargs):
    """azureml-core's populate_model_not_found_details."""
    return ("ModelNotFound: Model with "
            + ", ".join(f"{key} {value}" for key, value in kwargs.items() if value)
            + " not found in provided workspace")


def _check_name(name):
    if not _models().is_valid_model_name(name):
        raise WebserviceException(_models().MODEL_NAME_RULE)


def _check_metadata(tags, properties, model_framework, model_framework_version, extras):
    """azureml-core's checks of what goes with a model, before anything is copied."""
    if model_framework is None and model_framework_version is not None:
        raise WebserviceException(_models().FRAMEWORK_VERSION_WITHOUT_FRAMEWORK)
    for value, what in ((tags, "Tags"), (properties, "Properties")):
        if value and not isinstance(value, dict):
            raise WebserviceException(f"{what} must be a dict")
    for key in _UNSUPPORTED:
        if extras.get(key):
            raise WebserviceException(f"{key} is not supported by amlocal: it has no datasets or "
                                      "model profiling; register the model without it")


def _translate(error):
    """A backend error as the azureml-core exception a user would catch."""
    models = _models()
    if isinstance(error, models.ModelNotFoundError):
        return ModelNotFoundException(f"ModelNotFound: {error}")
    if isinstance(error, models.ModelPathNotFoundError):
        return ModelPathNotFoundException(str(error))
    if isinstance(error, UserInputError):
        return WebserviceException(str(error))
    return error
