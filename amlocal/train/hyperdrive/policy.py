"""Early termination policies: when to cancel a child run whose primary metric lags.

The classes mirror azureml-train-core (names, JSON form, validation messages). `decide` applies
one to a child: given every child's primary-metric values in logging order (one value = one
interval, as "each time the training script logs the primary metric counts as one interval"), it
says whether the child is terminated at its latest interval, and why. A policy acts at interval k
when k is a multiple of evaluation_interval and k >= delay_evaluation.
"""

import statistics

from amlocal.train.hyperdrive.exceptions import invalid_setting, invalid_type
from amlocal.train.hyperdrive.parameter_expressions import finite


def _check_int(name, value, minimum=None):
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type("int", name, type(value).__name__)
    if minimum is not None and value < minimum:
        raise invalid_setting(name, f"a value of at least {minimum}")


def _check_slack(name, value):
    """A slack the policy multiplies or adds to metric values: a positive, finite number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise invalid_type("float", name, type(value).__name__)
    if not (finite(value) and value > 0):
        raise invalid_setting(name, "a positive, finite number")


class EarlyTerminationPolicy:
    POLICY_NAME = None

    def __init__(self, name, properties=None):
        self._name = name
        self._properties = properties

    def to_json(self):
        policy = {"name": self._name}
        if self._properties is not None:
            policy["properties"] = self._properties
        return policy

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__


class BanditPolicy(EarlyTerminationPolicy):
    """Terminate a child whose value falls outside the slack of the best value at that interval."""

    POLICY_NAME = "Bandit"

    def __init__(self, evaluation_interval=1, slack_factor=None, slack_amount=None, delay_evaluation=0):
        if (slack_factor is None and slack_amount is None) or (slack_factor and slack_amount):
            raise invalid_setting("Bandit termination policy",
                                  "exactly one of slack factor or slack amount to be set.")
        _check_int("evaluation_interval", evaluation_interval, minimum=1)
        _check_int("delay_evaluation", delay_evaluation, minimum=0)
        if slack_factor is not None:
            _check_slack("slack_factor", slack_factor)
        else:
            _check_slack("slack_amount", slack_amount)
        properties = {"evaluation_interval": evaluation_interval, "delay_evaluation": delay_evaluation}
        if slack_factor:
            properties["slack_factor"] = slack_factor
        else:
            properties["slack_amount"] = slack_amount
        super().__init__(self.POLICY_NAME, properties)

    @property
    def slack_factor(self):
        return self._properties.get("slack_factor")


class MedianStoppingPolicy(EarlyTerminationPolicy):
    """Terminate a child whose running average is worse than the median of the others'."""

    POLICY_NAME = "MedianStopping"

    def __init__(self, evaluation_interval=1, delay_evaluation=0):
        _check_int("evaluation_interval", evaluation_interval, minimum=1)
        _check_int("delay_evaluation", delay_evaluation, minimum=0)
        super().__init__(self.POLICY_NAME, {"evaluation_interval": evaluation_interval,
                                            "delay_evaluation": delay_evaluation})


class TruncationSelectionPolicy(EarlyTerminationPolicy):
    """At each evaluation, terminate the lowest truncation_percentage % of the children."""

    POLICY_NAME = "TruncationSelection"

    def __init__(self, truncation_percentage, evaluation_interval=1, delay_evaluation=0):
        _check_int("truncation_percentage", truncation_percentage)
        if not 1 <= truncation_percentage <= 99:
            raise invalid_setting("truncation_percentage", "value to be between 1 and 99.")
        _check_int("evaluation_interval", evaluation_interval, minimum=1)
        _check_int("delay_evaluation", delay_evaluation, minimum=0)
        super().__init__(self.POLICY_NAME, {"truncation_percentage": truncation_percentage,
                                            "evaluation_interval": evaluation_interval,
                                            "delay_evaluation": delay_evaluation})


class NoTerminationPolicy(EarlyTerminationPolicy):
    """Let every child run to its end."""

    POLICY_NAME = "Default"

    def __init__(self):
        super().__init__(self.POLICY_NAME)


def decide(policy_json, goal, child_id, values_by_child):
    """Why `child_id` is terminated at its latest interval under the policy, or None.

    `values_by_child` maps every child (running or ended) to its primary-metric values in order.
    """
    name, settings = policy_json["name"], policy_json.get("properties") or {}
    values = values_by_child.get(child_id) or []
    interval = len(values)
    if name == NoTerminationPolicy.POLICY_NAME or interval == 0:
        return None
    every, delay = settings.get("evaluation_interval", 1) or 1, settings.get("delay_evaluation", 0)
    if interval % every or interval < delay:
        return None
    maximize = goal == "maximize"
    peers = {other: vals[:interval] for other, vals in values_by_child.items() if len(vals) >= interval}
    current = values[interval - 1]
    if name == BanditPolicy.POLICY_NAME:
        at_interval = [vals[interval - 1] for vals in peers.values()]
        best = max(at_interval) if maximize else min(at_interval)
        if "slack_factor" in settings:
            factor = 1 + settings["slack_factor"]
            lagging = current * factor < best if maximize else current / factor > best
            slack = f"slack_factor {settings['slack_factor']}"
        else:
            amount = settings["slack_amount"]
            lagging = current + amount < best if maximize else current - amount > best
            slack = f"slack_amount {amount}"
        if lagging:
            return (f"BanditPolicy at interval {interval}: {current:.6g} is outside the {slack} of "
                    f"the best value {best:.6g}")
        return None
    if name == MedianStoppingPolicy.POLICY_NAME:
        others = [statistics.fmean(vals) for other, vals in peers.items() if other != child_id]
        if not others:
            return None
        median, average = statistics.median(others), statistics.fmean(values)
        if (average < median) if maximize else (average > median):
            return (f"MedianStoppingPolicy at interval {interval}: running average {average:.6g} is "
                    f"worse than the median {median:.6g} of the other runs'")
        return None
    if name == TruncationSelectionPolicy.POLICY_NAME:
        ranked = sorted(peers, key=lambda other: peers[other][interval - 1], reverse=not maximize)
        cut = len(ranked) * settings["truncation_percentage"] // 100
        if child_id in ranked[:cut]:
            return (f"TruncationSelectionPolicy at interval {interval}: {current:.6g} is in the lowest "
                    f"{settings['truncation_percentage']}% of {len(ranked)} runs")
        return None
    return None


_POLICIES = {cls.POLICY_NAME: cls for cls in
             (BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy, NoTerminationPolicy)}
