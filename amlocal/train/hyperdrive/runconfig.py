"""`HyperDriveConfig` and `PrimaryMetricGoal`: what a sweep runs, how it samples and stops.

Validated as azureml-train-core and the service validate (the same messages), including the
service's bounds (max_total_runs 1-1000, max_concurrent_runs 1-100) and its refusal of early
termination with Bayesian sampling. Submitted through an Experiment, it becomes a parent run of
type hyperdrive whose children are ordinary runs on the compute target.
"""

import enum
import warnings

from amlocal.train.hyperdrive.exceptions import invalid_setting, invalid_type
from amlocal.train.hyperdrive.policy import EarlyTerminationPolicy, NoTerminationPolicy
from amlocal.train.hyperdrive.sampling import BayesianParameterSampling, HyperParameterSampling

MAX_DURATION_MINUTES = 10080
MAX_TOTAL_RUNS = 1000
MAX_CONCURRENT_RUNS = 100
RECOMMENDED_MIN_RUNS_PER_PARAMETER_BAYESIAN = 20
RECOMMENDED_MAX_CONCURRENT_RUNS_BAYESIAN = 20


class PrimaryMetricGoal(enum.Enum):
    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"

    @staticmethod
    def from_str(goal):
        try:
            return PrimaryMetricGoal[goal.upper()]
        except (KeyError, AttributeError):
            raise invalid_setting("primary_metric_goal", "one of MAXIMIZE or MINIMIZE") from None


def _bounded(name, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type("int", name, type(value).__name__)
    if not low <= value <= high:
        raise invalid_setting(name, f"a value between {low} and {high}")


class HyperDriveConfig:
    """A hyperparameter sweep over an estimator or a ScriptRunConfig."""

    def __init__(self, hyperparameter_sampling, primary_metric_name, primary_metric_goal,
                 max_total_runs, max_concurrent_runs=None, max_duration_minutes=MAX_DURATION_MINUTES,
                 policy=None, estimator=None, run_config=None, resume_from=None,
                 resume_child_runs=None, pipeline=None, debug_flag=None, custom_run_id=None):
        from amlocal.script_run_config import ScriptRunConfig

        given = [value for value in (estimator, run_config, pipeline) if value is not None]
        if not given:
            raise invalid_setting("HyperDriveConfig",
                                  "at least one of ['estimator', 'run_config', 'pipeline'] to be set")
        if len(given) != 1:
            raise invalid_setting("HyperDriveConfig",
                                  "only one of ['estimator', 'run_config', 'pipeline'] to be set")
        if pipeline is not None:
            raise invalid_setting("HyperDriveConfig", "a run_config or an estimator (pipelines are "
                                  "not emulated)")
        if run_config is not None and not isinstance(run_config, ScriptRunConfig):
            raise invalid_type("ScriptRunConfig", "run_config", type(run_config).__name__)
        if not isinstance(hyperparameter_sampling, HyperParameterSampling):
            raise invalid_setting("HyperDriveConfig", "hyperparameter_sampling to be set")
        if not isinstance(primary_metric_goal, PrimaryMetricGoal):
            raise invalid_type("PrimaryMetricGoal", "primary_metric_goal",
                               type(primary_metric_goal).__name__)
        if not primary_metric_name or not isinstance(primary_metric_name, str):
            raise invalid_setting("HyperDriveConfig", "primary_metric_name to be set")
        if resume_from or resume_child_runs:
            raise invalid_setting("HyperDriveConfig", "no resume_from or resume_child_runs (warm "
                                  "starts are not emulated)")
        policy = policy or NoTerminationPolicy()
        if not isinstance(policy, EarlyTerminationPolicy):
            raise invalid_type("EarlyTerminationPolicy", "policy", type(policy).__name__)
        _bounded("max_total_runs", max_total_runs, 1, MAX_TOTAL_RUNS)
        if max_concurrent_runs is None:
            max_concurrent_runs = min(max_total_runs, MAX_CONCURRENT_RUNS)
        _bounded("max_concurrent_runs", max_concurrent_runs, 1, MAX_CONCURRENT_RUNS)
        if not isinstance(max_duration_minutes, int) or isinstance(max_duration_minutes, bool):
            raise invalid_type("int", "max_duration_minutes", type(max_duration_minutes).__name__)
        if max_duration_minutes < 1:
            raise invalid_setting("max_duration_minutes", "a value of at least 1")
        if max_duration_minutes > MAX_DURATION_MINUTES:
            warnings.warn(f"The experiment maximum duration provided exceeds the service limit of "
                          f"{MAX_DURATION_MINUTES} minutes. The maximum duration will be overridden "
                          f"with {MAX_DURATION_MINUTES} minutes.")
            max_duration_minutes = MAX_DURATION_MINUTES
        if isinstance(hyperparameter_sampling, BayesianParameterSampling):
            if not isinstance(policy, NoTerminationPolicy):
                raise invalid_setting("BayesianParameterSampling", "no early termination policy: "
                                      "Bayesian sampling does not support early termination")
            recommended = RECOMMENDED_MIN_RUNS_PER_PARAMETER_BAYESIAN * len(
                hyperparameter_sampling._parameter_space)
            if max_total_runs < recommended:
                warnings.warn(f"For best results with Bayesian Sampling we recommend using a maximum "
                              f"number of runs greater than or equal to "
                              f"{RECOMMENDED_MIN_RUNS_PER_PARAMETER_BAYESIAN} times the number of "
                              f"hyperparameters being tuned. Recommendend value:{recommended}.")
        self.estimator = estimator
        self.run_config = run_config
        self._sampling = hyperparameter_sampling
        self._policy = policy
        self._generator_config = hyperparameter_sampling.to_json()
        self._policy_config = policy.to_json()
        self._primary_metric_config = {"name": primary_metric_name,
                                       "goal": primary_metric_goal.name.lower()}
        self._max_total_runs = max_total_runs
        self._max_concurrent_runs = max_concurrent_runs
        self._max_duration_minutes = max_duration_minutes

    def _sweep(self):
        """The sweep's settings as stored with its parent run."""
        return {"generator_config": self._generator_config, "policy_config": self._policy_config,
                "primary_metric_config": self._primary_metric_config,
                "max_total_runs": self._max_total_runs,
                "max_concurrent_runs": self._max_concurrent_runs,
                "max_duration_minutes": self._max_duration_minutes}

    def _submit_to(self, experiment, tags=None, **kwargs):
        """Start the sweep's parent run (it runs on in a process of its own); return it."""
        from amlocal.train.hyperdrive.run import HyperDriveRun

        template = (self.estimator or self.run_config)._to_spec(experiment.name, tags=tags)
        handle = experiment._backend().submit_sweep(template, self._sweep(), detach=True)
        return HyperDriveRun(experiment, handle.id, _handle=handle)
