"""Mirrors `azureml.train.hyperdrive`: hyperparameter sweeps, run locally on compute targets."""

from amlocal.train.hyperdrive.exceptions import HyperDriveConfigException
from amlocal.train.hyperdrive.parameter_expressions import (choice, lognormal, loguniform, normal,
                                                            qlognormal, qloguniform, qnormal,
                                                            quniform, randint, uniform)
from amlocal.train.hyperdrive.policy import (BanditPolicy, EarlyTerminationPolicy,
                                             MedianStoppingPolicy, NoTerminationPolicy,
                                             TruncationSelectionPolicy)
from amlocal.train.hyperdrive.run import HyperDriveRun
from amlocal.train.hyperdrive.runconfig import HyperDriveConfig, PrimaryMetricGoal
from amlocal.train.hyperdrive.sampling import (BayesianParameterSampling, GridParameterSampling,
                                               HyperParameterSampling, RandomParameterSampling)

__all__ = ["BanditPolicy", "BayesianParameterSampling", "EarlyTerminationPolicy",
           "GridParameterSampling", "HyperDriveConfig", "HyperDriveConfigException",
           "HyperDriveRun", "HyperParameterSampling", "MedianStoppingPolicy", "NoTerminationPolicy",
           "PrimaryMetricGoal", "RandomParameterSampling", "TruncationSelectionPolicy", "choice",
           "lognormal", "loguniform", "normal", "qlognormal", "qloguniform", "qnormal", "quniform",
           "randint", "uniform"]
