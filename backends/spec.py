"""The run spec every backend takes (`RunSpec`, with its `EnvironmentSpec`), how a run's record
keeps it (`RecordedSpec`: the spec plus the notes beside it), and Azure ML v1's data-reference
tokens in script arguments. backends/base.py re-exports these names with the Run interface."""

import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from amlocal.errors import RunRecordCorruptedError, UserInputError
from amlocal.validation import (bounded_int, check_experiment_name, check_key_values, check_text,
                                shown, usable_path)

DEFAULT_EXPERIMENT = "Default"
DEFAULT_RECIPE = "chainer"
EXECUTORS = ("docker", "process")
DISTRIBUTIONS = ("mpi", "pytorch")
# PyTorchConfiguration's communication backends, spelled as azureml-core spells them.
PYTORCH_BACKENDS = ("Nccl", "Gloo")

# An input name becomes the environment variable AZUREML_DATAREFERENCE_<name> (so it may start
# with a digit: azureml-core names data references by uuid4().hex).
_INPUT_NAME = re.compile(r"^[A-Za-z0-9_]{1,128}$")
DATAREFERENCE_PREFIX = "AZUREML_DATAREFERENCE_"
_DATAREFERENCE_TOKEN = re.compile(r"\$(?:\{" + DATAREFERENCE_PREFIX + r"([A-Za-z0-9_]+)\}|"
                                  + DATAREFERENCE_PREFIX + r"([A-Za-z0-9_]+))")


@dataclass(frozen=True)
class EnvironmentSpec:
    """What the run's image is built from: a recipe folder in docker/ plus pip packages.

    `base_image` overrides the recipe's BASE_IMAGE build argument; None lets the backend choose
    (the public default, or a locally imported base where no registry is reachable). A
    `dockerfile` (its text) replaces the recipe's Dockerfile (Environment.from_dockerfile).
    """

    recipe: str = DEFAULT_RECIPE
    pip_packages: tuple = ()
    base_image: str | None = None
    dockerfile: str | None = None  # a Dockerfile's text, used instead of the recipe's
    build_notes: tuple = ()  # lines the build log opens with (how this environment was chosen)


@dataclass(frozen=True)
class DistributionSpec:
    """How a distributed run starts its ranks (Azure ML v1's distributed_job_config).

    kind: "mpi" (MpiConfiguration, the estimators' Mpi()) or "pytorch" (PyTorchConfiguration);
    process_count_per_node: ranks on each of the run's node_count nodes, so the world size is
        node_count * process_count_per_node (PyTorchConfiguration's process_count);
    communication_backend: PyTorch only, "Nccl" (Azure's default) or "Gloo"; None for MPI.
    """

    kind: str
    process_count_per_node: int = 1
    communication_backend: str | None = None

    def validated(self):
        kind = str(self.kind).lower()
        if kind not in DISTRIBUTIONS:
            raise UserInputError(f"unknown distribution {self.kind!r}: use one of "
                                 f"{', '.join(DISTRIBUTIONS)}")
        bounded_int("process_count_per_node", self.process_count_per_node, 1, 64)
        backend = self.communication_backend
        if kind == "mpi":
            if backend is not None:
                raise UserInputError("a communication backend is a PyTorch setting; an MPI run "
                                     "has none")
        else:
            backend = backend or "Nccl"
            matching = [name for name in PYTORCH_BACKENDS if name.lower() == str(backend).lower()]
            if not matching:
                raise UserInputError(f"unknown communication backend {backend!r}: use one of "
                                     f"{', '.join(PYTORCH_BACKENDS)}")
            backend = matching[0]
        return DistributionSpec(kind=kind, process_count_per_node=int(self.process_count_per_node),
                                communication_backend=backend)


# The shape RunSpec.to_json writes; a record without `spec_version` is of version 1.
SPEC_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """Everything a backend needs to run a training script, independent of where it runs."""

    source_dir: Path
    script: str
    arguments: tuple = ()
    experiment: str = DEFAULT_EXPERIMENT
    inputs: dict = field(default_factory=dict)  # name -> host path, mounted read-only
    environment: EnvironmentSpec = EnvironmentSpec()
    executor: str | None = None  # None: the backend picks (docker when an engine answers)
    compute: str = "local"
    node_count: int = 1
    # None: the script runs once, on the run's first node (as a v1 run without a
    # distributed_job_config); else the ranks start as DistributionSpec says, on every node.
    distribution: DistributionSpec | None = None
    max_run_duration_seconds: int | None = None  # from the start of Running; None: no limit
    tags: dict = field(default_factory=dict)
    environment_variables: dict = field(default_factory=dict)  # set for the script
    use_gpu: bool = False  # the script wants its node's GPUs
    # docker executor: root with Docker's default capabilities and a writable root filesystem,
    # instead of an unprivileged user; needs amlocal itself to run as root.
    run_as_root: bool = False

    def validated(self):
        """Return this spec with absolute paths, or raise UserInputError naming what is wrong.

        Checks everything that can be checked without running anything, so that a bad request
        never leaves a half-created run behind.
        """
        source_dir = usable_path(self.source_dir, "source folder").expanduser()
        if not source_dir.is_dir():
            raise UserInputError(f"source folder not found: {self.source_dir}")
        source_dir = source_dir.resolve()
        script_path = usable_path(source_dir / self.script, "script").resolve()
        if not script_path.is_relative_to(source_dir):
            raise UserInputError(f"script {self.script} is outside the source folder {source_dir}")
        if not script_path.is_file():
            raise UserInputError(f"script {self.script} not found in {source_dir}")
        check_experiment_name(self.experiment)
        bounded_int("node_count", self.node_count, 1)
        if self.max_run_duration_seconds is not None:
            bounded_int("max_run_duration_seconds", self.max_run_duration_seconds, 1)
        tags = check_key_values(self.tags, "tag")
        check_text(self.compute, f"compute target name {shown(self.compute)}")
        for name in self.environment_variables:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
                raise UserInputError(f"invalid environment variable name {name!r}")
        if self.run_as_root and self.executor != "process" and os.getuid() != 0:
            # (The process executor runs the script as the submitter anyway.)
            raise UserInputError("--run-as-root needs amlocal itself to run as root (sudo): the "
                                 "files a root script writes could not be given back to you")
        # A process's arguments and environment are C strings: a NUL cannot be passed on.
        for what, text in [*((f"environment variable {name}", value)
                             for name, value in self.environment_variables.items()),
                           *(("argument", argument) for argument in self.arguments)]:
            if "\x00" in str(text):
                raise UserInputError(f"{what} {shown(str(text))} holds a NUL character")
        if self.executor is not None and self.executor not in EXECUTORS:
            raise UserInputError(f"unknown executor {self.executor!r}: use one of {', '.join(EXECUTORS)}")
        inputs = {}
        for name, path in self.inputs.items():
            if not _INPUT_NAME.match(name):
                raise UserInputError(
                    f"invalid input name {name!r}: 1-128 letters, digits or '_'")
            host_path = usable_path(path, f"input {name}").expanduser()
            if not host_path.exists():
                raise UserInputError(f"input {name}: path does not exist: {path}")
            inputs[name] = host_path.resolve()
        for argument in self.arguments:
            for referenced in referenced_inputs(str(argument)):
                if referenced not in inputs:
                    raise UserInputError(
                        f"argument {argument!r} refers to input {referenced!r}, which is not given "
                        f"(add --input {referenced}=PATH)")
        return RunSpec(
            source_dir=source_dir,
            script=script_path.relative_to(source_dir).as_posix(),
            arguments=tuple(str(argument) for argument in self.arguments),
            experiment=self.experiment,
            inputs=inputs,
            environment=EnvironmentSpec(
                recipe=self.environment.recipe,
                pip_packages=tuple(self.environment.pip_packages),
                base_image=self.environment.base_image,
                dockerfile=self.environment.dockerfile,
                build_notes=tuple(str(note) for note in self.environment.build_notes),
            ),
            executor=self.executor,
            compute=self.compute,
            node_count=self.node_count,
            distribution=self.distribution.validated() if self.distribution is not None else None,
            max_run_duration_seconds=self.max_run_duration_seconds,
            tags=tags,
            environment_variables={str(name): str(value)
                                   for name, value in self.environment_variables.items()},
            use_gpu=bool(self.use_gpu),
            run_as_root=bool(self.run_as_root),
        )


    def to_json(self):
        """This spec as a JSON-ready dict (what a run's record keeps), with its `spec_version`;
        RunSpec.from_json reads it back."""
        data = asdict(self)
        data.update(spec_version=SPEC_VERSION, source_dir=str(self.source_dir),
                    inputs={name: str(path) for name, path in self.inputs.items()},
                    arguments=list(self.arguments))
        data["environment"]["pip_packages"] = list(self.environment.pip_packages)
        return data

    @classmethod
    def from_json(cls, data):
        """The spec that to_json wrote. Keys that are not fields (a record's `sweep` or `azure`
        notes) are ignored; a field newer than the record gets its default."""
        version = data.get("spec_version", 1)
        if not isinstance(version, int) or version > SPEC_VERSION:
            raise RunRecordCorruptedError(f"a run spec of version {version!r}, newer than this "
                                          f"amlocal's {SPEC_VERSION}: upgrade amlocal to read it")
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        environment = data.get("environment") or {}
        distribution = data.get("distribution")
        values.update(
            distribution=DistributionSpec(**distribution) if distribution is not None else None,
            source_dir=Path(data["source_dir"]),
            arguments=tuple(data.get("arguments", ())),
            inputs={name: Path(path) for name, path in (data.get("inputs") or {}).items()},
            environment=EnvironmentSpec(**{
                **{f.name: environment[f.name] for f in fields(EnvironmentSpec) if f.name in environment},
                "pip_packages": tuple(environment.get("pip_packages", ())),
                "build_notes": tuple(environment.get("build_notes", ()))}))
        return cls(**values)


@dataclass(frozen=True)
class RecordedSpec:
    """What a run's record keeps as its `spec`: the RunSpec (its fields at the top level, as
    RunSpec.to_json writes them) and the notes a backend keeps beside them, which are not fields.

    sweep: a sweep parent's configuration (sampling, policy, primary metric, limits: what
        HyperDriveConfig._sweep() gives), None for any other run;
    azure: the Azure backend's facts about the run (workspace, portal_url, environment, uploads);
    child_of: the parent of a child run its parent's script started (Run.child_run).
    """

    spec: RunSpec
    sweep: dict | None = None
    azure: dict | None = None
    child_of: str | None = None

    def to_json(self):
        notes = {"sweep": self.sweep, "azure": self.azure, "child_of": self.child_of}
        return {**self.spec.to_json(),
                **{name: note for name, note in notes.items() if note is not None}}

    @classmethod
    def from_json(cls, data):
        """The recorded spec that to_json (or an older amlocal) wrote; RunRecordCorruptedError
        when it cannot be one (a required field missing, a value of the wrong shape)."""
        try:
            spec = RunSpec.from_json(data)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise RunRecordCorruptedError(
                f"a run's recorded spec is damaged ({type(error).__name__}: {error})") from None
        return cls(spec, sweep=data.get("sweep"), azure=data.get("azure"),
                   child_of=data.get("child_of"))


def referenced_inputs(argument):
    """Names of the inputs that `$AZUREML_DATAREFERENCE_<name>` tokens in an argument refer to."""
    return [braced or bare for braced, bare in _DATAREFERENCE_TOKEN.findall(argument)]


def substitute_data_references(arguments, in_run_paths):
    """Replace `$AZUREML_DATAREFERENCE_<name>` (or `${...}`) in script arguments by in-run paths.

    This is Azure ML v1's convention for `DataReference.as_mount()` values in script arguments.
    """

    def replace(match):
        return str(in_run_paths[match.group(1) or match.group(2)])

    return [_DATAREFERENCE_TOKEN.sub(replace, argument) for argument in arguments]
