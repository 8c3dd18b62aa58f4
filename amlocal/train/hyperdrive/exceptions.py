"""HyperDrive's errors, with azureml-train-core's names and message formats."""

from amlocal.errors import UserInputError


class HyperDriveConfigException(UserInputError):
    """A HyperDrive configuration azureml-train-core (or the service) rejects."""

    @property
    def message(self):
        return str(self)


def invalid_setting(obj, condition):
    """azureml-train-core's InvalidConfigSetting: "{obj} expects {condition}"."""
    return HyperDriveConfigException(f"{obj} expects {condition}")


def invalid_type(expected, obj, actual):
    """azureml-train-core's InvalidType: "Expected type {exp} for {obj} but got {actual}"."""
    return HyperDriveConfigException(f"Expected type {expected} for {obj} but got {actual}")
