"""How HyperDrive picks hyperparameters: random, grid, or Bayesian (sequential, model-based).

The sampling classes mirror azureml-train-core (names, JSON form, which distributions each takes,
the same validation messages). `Sampler.for_config` turns one into the thing a sweep asks for its
next configuration: random draws from a seeded generator; the grid's every combination once; and
for Bayesian sampling Optuna's TPE sampler (a sequential model-based optimiser), told each
finished child's primary metric before it proposes the next configuration.
"""

import itertools
import random
import re

from amlocal.train.hyperdrive.exceptions import HyperDriveConfigException, invalid_setting
from amlocal.train.hyperdrive.parameter_expressions import sample, validate


# The largest seed a sampler takes (NumPy's, under Optuna, is 32 bits).
MAX_SEED = 2**32 - 1


class HyperParameterSampling:
    """A search space and how to sample it."""

    SAMPLING_NAME = None

    def __init__(self, sampling_method_name, parameter_space, properties=None,
                 supported_distributions=None, distributions_validators=None):
        if not isinstance(parameter_space, dict):
            raise HyperDriveConfigException(
                f"Expected type dict for parameter_space but got {type(parameter_space).__name__}")
        seed = (properties or {}).get("seed") if isinstance(properties, dict) else None
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                                 or not 0 <= seed <= MAX_SEED):
            raise invalid_setting("The sampling seed", f"an int between 0 and {MAX_SEED}")
        self._sampling_method_name = sampling_method_name
        self._parameter_space = parameter_space
        self._properties = properties
        self._supported_distributions = supported_distributions
        self._distributions_validators = distributions_validators or {}
        for name, distribution in parameter_space.items():
            _validate_parameter_name(name)
            if not (isinstance(distribution, list) and len(distribution) == 2):
                raise HyperDriveConfigException(
                    f"Failed to validate a parameter distribution due to {name!r} not being a "
                    "parameter expression (use choice(), uniform(), ...)")
            validate(distribution)
        self._validate_supported_distributions()

    def to_json(self):
        definition = {"name": self._sampling_method_name, "parameter_space": self._parameter_space}
        if self._properties:
            definition["properties"] = self._properties
        return definition

    def _validate_supported_distributions(self):
        for distribution in self._parameter_space.values():
            if self._supported_distributions and distribution[0] not in self._supported_distributions:
                raise invalid_setting("This sampling method", "only the following distributions: [{}]"
                                      .format(", ".join(sorted(self._supported_distributions))))
            validator = self._distributions_validators.get(distribution[0])
            if validator is not None:
                valid, reason = validator(distribution)
                if not valid:
                    raise HyperDriveConfigException(
                        f"Failed to validate a parameter distribution due to {reason}")

    @staticmethod
    def _choice_validator(choice_definition):
        values = choice_definition[1][0]
        if not values:
            return False, "At least one 'choice' value is required."
        if any(type(value) not in (int, str, float) for value in values):
            return False, "'choice' values should be 'int', 'string' or 'float'."
        strings = sum(isinstance(value, str) for value in values)
        if strings % len(values) != 0:
            return False, "Either all or none of the 'choice' values should be 'str' type."
        return True, None

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__


# A hyperparameter's name becomes a script argument, `--<name>`: one printable word.
_PARAMETER_NAME = re.compile(r"[^\s\x00-\x1f\x7f\ud800-\udfff]{1,255}")


def _validate_parameter_name(name):
    if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name):
        raise HyperDriveConfigException(
            f"Failed to validate a parameter distribution due to the parameter name {name!r}: "
            "1-255 characters of UTF-8, no spaces or control characters")


class RandomParameterSampling(HyperParameterSampling):
    """Every value drawn at random from its distribution (all ten distributions)."""

    SAMPLING_NAME = "RANDOM"

    def __init__(self, parameter_space, properties=None):
        super().__init__(self.SAMPLING_NAME, parameter_space, properties)


class GridParameterSampling(HyperParameterSampling):
    """Every combination of the choice() values, once."""

    SAMPLING_NAME = "GRID"

    def __init__(self, parameter_space, properties=None):
        super().__init__(self.SAMPLING_NAME, parameter_space, properties,
                         supported_distributions={"choice"},
                         distributions_validators={"choice": self._choice_validator})


class BayesianParameterSampling(HyperParameterSampling):
    """Each configuration proposed by a model of how earlier ones scored (choice, uniform, quniform)."""

    SAMPLING_NAME = "BayesianOptimization"

    def __init__(self, parameter_space, properties=None):
        if not parameter_space:
            raise invalid_setting("BayesianParameterSampling",
                                  "parameter_space to not be None or empty.")
        super().__init__(self.SAMPLING_NAME, parameter_space, properties,
                         supported_distributions={"choice", "quniform", "uniform"},
                         distributions_validators={"choice": self._choice_validator,
                                                   "quniform": self._bayesian_quniform_validator})

    @staticmethod
    def _bayesian_quniform_validator(definition):
        arguments = definition[1]
        if any(type(item) is not int for item in arguments):
            return False, "Expected quniform arguments to be int."
        low, high, q = arguments
        if (high - low) / q > 100000:
            return False, ("Too many discrete points for quniform distribution. Use larger q or "
                           "uniform instead.")
        return True, None


_SAMPLINGS = {cls.SAMPLING_NAME: cls for cls in
              (RandomParameterSampling, GridParameterSampling, BayesianParameterSampling)}


def sampling_from_json(definition):
    return _SAMPLINGS[definition["name"]](definition["parameter_space"], definition.get("properties"))


class Sampler:
    """Proposes configurations one at a time; `tell` reports how one scored (Bayesian uses it)."""

    @staticmethod
    def for_config(definition, goal, seed=None):
        name, space = definition["name"], definition["parameter_space"]
        seed = (definition.get("properties") or {}).get("seed", seed)
        if name == GridParameterSampling.SAMPLING_NAME:
            return GridSampler(space)
        if name == BayesianParameterSampling.SAMPLING_NAME:
            return BayesianSampler(space, goal, seed)
        return RandomSampler(space, seed)

    def propose(self):
        """The next configuration {name: value}, or None when there is no other."""
        raise NotImplementedError

    def tell(self, configuration, value):
        """How `configuration` scored (None: it has no primary metric)."""


class RandomSampler(Sampler):
    def __init__(self, space, seed):
        self.space = space
        self.rng = random.Random(seed)

    def propose(self):
        return {name: sample(expression, self.rng) for name, expression in sorted(self.space.items())}


class GridSampler(Sampler):
    def __init__(self, space):
        names = sorted(space)
        self._grid = iter([dict(zip(names, values)) for values in
                           itertools.product(*(space[name][1][0] for name in names))])

    def propose(self):
        return next(self._grid, None)


class BayesianSampler(Sampler):
    """Optuna's TPE sampler in ask-and-tell form; one trial per proposed configuration."""

    def __init__(self, space, goal, seed):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._distributions = {name: self._distribution(expression)
                               for name, expression in space.items()}
        self._study = optuna.create_study(
            direction="maximize" if goal == "maximize" else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True))
        self._trials = {}

    def _distribution(self, expression):
        distributions = self._optuna.distributions
        kind, arguments = expression
        if kind == "choice":
            return distributions.CategoricalDistribution(arguments[0])
        if kind == "uniform":
            return distributions.FloatDistribution(arguments[0], arguments[1])
        low, high, q = arguments
        return distributions.IntDistribution(low, high - (high - low) % q, step=q)

    def propose(self):
        trial = self._study.ask(self._distributions)
        configuration = dict(trial.params)
        self._trials[_key(configuration)] = trial
        return configuration

    def tell(self, configuration, value):
        trial = self._trials.pop(_key(configuration), None)
        if trial is None:
            return
        if value is None:
            self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, value)


def _key(configuration):
    return tuple(sorted((name, repr(value)) for name, value in configuration.items()))
