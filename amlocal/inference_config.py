"""`InferenceConfig` shaped as in azureml-core (azureml.core.model.InferenceConfig).

    inference_config = InferenceConfig(entry_script="score.py", source_directory="trainer",
                                       environment=env)

The entry script (relative to source_directory) has init() and run(raw_data), as Azure ML's
inference server calls them. The environment is an amlocal Environment (its recipe and pip
packages build the service's image, as for runs); None gives amlocal's default recipe (Chainer).
azureml-core's older image options (runtime, conda_file, extra_docker_file_steps, base_image,
enable_gpu, cuda_version) are accepted as None only: say them through the Environment instead.
"""

from amlocal.model_errors import UserErrorException

_IMAGE_OPTIONS = ("runtime", "conda_file", "extra_docker_file_steps", "enable_gpu", "base_image",
                  "base_image_registry", "cuda_version")


class InferenceConfig:
    """What a web service runs: an entry script in a source folder, in an environment."""

    def __init__(self, entry_script, runtime=None, conda_file=None, extra_docker_file_steps=None,
                 source_directory=None, enable_gpu=None, description=None, base_image=None,
                 base_image_registry=None, cuda_version=None, environment=None):
        given = locals()
        for option in _IMAGE_OPTIONS:
            if given[option] is not None:
                raise UserErrorException(
                    f"InferenceConfig({option}=...) is not supported by amlocal: give an "
                    "Environment (environment=...) with the packages the entry script needs")
        if not entry_script or not isinstance(entry_script, str):
            raise UserErrorException("Error, InferenceConfig requires an entry_script")
        self.entry_script = entry_script
        self.source_directory = source_directory if source_directory is not None else "."
        self.environment = environment
        self.description = description
        for option in _IMAGE_OPTIONS:
            setattr(self, option, None)

    def __repr__(self):
        return (f"InferenceConfig(entry_script={self.entry_script!r}, "
                f"source_directory={self.source_directory!r}, environment={self.environment!r})")

    def _environment_spec(self):
        """The EnvironmentSpec of the service's image (None: the backend's default)."""
        return self.environment._to_spec() if self.environment is not None else None

    def serialize(self):
        return {"entryScript": self.entry_script, "sourceDirectory": self.source_directory,
                "environment": getattr(self.environment, "name", None),
                "description": self.description}
