"""Driving a hyperparameter sweep (HyperDrive): a parent run whose children are ordinary runs.

The parent run (executor "sweep") runs in a process of its own, like any detached run, so the
sweep survives the process that submitted it. Its driver:
- asks the sampler for configurations and starts children `<parent id>_<n>` as ordinary runs
  of the template spec, the hyperparameters appended to the arguments (`--name value`), at most
  max_concurrent_runs at a time (the compute target's queue keeps them within its nodes);
- reads each running child's primary metric as it is logged and applies the early termination
  policy, canceling the children it terminates with the policy's reason;
- tells the sampler how each finished child scored (Bayesian sampling uses it);
- keeps the best child so far in the parent's `best_child_by_primary_metric` table metric, as
  Azure ML does, and records every child's hyperparameters in the parent's tags
  (`_aml_system_<child id>`: the JSON of its configuration);
- ends when max_total_runs children ran (or the grid is exhausted), max_duration_minutes passed,
  or the parent is canceled (its children with it).
"""

import contextlib
import dataclasses
import json
import time

from amlocal.backends import status as run_status
from amlocal.backends.base import HYPERPARAMETER_TAG_PREFIX, RecordedSpec, numeric_values
from amlocal.backends.local.lifecycle import POLL_INTERVAL_S
from amlocal.errors import AmlocalError, IllegalTransitionError
from amlocal.train.hyperdrive.policy import decide
from amlocal.train.hyperdrive.sampling import Sampler

BEST_CHILD_METRIC = "best_child_by_primary_metric"


def hyperparameter_arguments(configuration):
    """`--name value` for each hyperparameter (a name that starts with '-' is kept as given)."""
    arguments = []
    for name, value in sorted(configuration.items()):
        arguments += [name if name.startswith("-") else f"--{name}", str(value)]
    return arguments


def primary_values(store, run_id, metric_name):
    """The numeric values a run logged for the metric, in order."""
    return numeric_values(store.get_metric_records(run_id), metric_name)


class SweepDriver:
    """Drives one sweep's parent run from NotStarted to its end. Use once: `drive()`."""

    def __init__(self, backend, run_id):
        self.backend = backend
        self.store = backend.store
        self.run_id = run_id
        recorded = RecordedSpec.from_json(self.store.get_run(run_id)["spec"])
        self.template = recorded.spec  # what each child runs, its hyperparameters added
        self.sweep = recorded.sweep
        self.metric = self.sweep["primary_metric_config"]
        self.children = {}  # child id -> {"configuration": ..., "handle": ..., "told": bool}
        self.best = None  # (value, child id)

    def drive(self):
        try:
            for status in (run_status.PREPARING, run_status.QUEUED, run_status.RUNNING):
                self.store.set_status(self.run_id, status)
            self.store.start_stage(self.run_id, "Running", self._describe())
            sampler = Sampler.for_config(self.sweep["generator_config"], self.metric["goal"])
            outcome, reason = self._sweep(sampler)
            self.store.finish_stage(self.run_id, "Running", outcome,
                                    f"{len(self.children)} child run(s); {reason}")
            if outcome == run_status.STAGE_CANCELED:
                self.store.set_status(self.run_id, run_status.CANCELED, error=reason)
                return run_status.CANCELED
            self.store.set_status(self.run_id, run_status.FINALIZING)
            self._record_best(final=True)
            self.store.set_status(self.run_id, run_status.COMPLETED)
            return run_status.COMPLETED
        except Exception as error:
            self._cancel_children("the sweep failed")
            reason = f"the sweep failed: {type(error).__name__}: {error}"
            if not run_status.is_terminal(self.store.get_status(self.run_id)):
                # No stage is left open by a run that has ended (one that ended keeps its end).
                with contextlib.suppress(IllegalTransitionError):
                    self.store.finish_stage(self.run_id, "Running", run_status.STAGE_FAILED, reason)
                self.store.try_set_status(self.run_id, run_status.FAILED, error=reason)
            if isinstance(error, AmlocalError):
                return run_status.FAILED
            raise

    def _describe(self):
        sampling = self.sweep["generator_config"]["name"]
        return (f"{sampling} sampling, {self.sweep['policy_config']['name']} policy, primary metric "
                f"{self.metric['name']} ({self.metric['goal']}), up to {self.sweep['max_total_runs']} "
                f"runs, {self.sweep['max_concurrent_runs']} at a time")

    def _sweep(self, sampler):
        deadline = time.monotonic() + self.sweep["max_duration_minutes"] * 60
        exhausted = False
        while True:
            if self.store.get_status(self.run_id) == run_status.CANCEL_REQUESTED:
                self._cancel_children("its sweep was canceled")
                return run_status.STAGE_CANCELED, "Canceled by request"
            if time.monotonic() > deadline:
                self._cancel_children("its sweep ran out of time")
                return run_status.STAGE_COMPLETED, (
                    f"max_duration_minutes ({self.sweep['max_duration_minutes']}) passed: running "
                    "children were canceled")
            values = self._observe(sampler)
            self._apply_policy(values)
            running = [child for child in self.children.values() if not child["ended"]]
            while (not exhausted and len(running) < self.sweep["max_concurrent_runs"]
                   and len(self.children) < self.sweep["max_total_runs"]):
                configuration = sampler.propose()
                if configuration is None:
                    exhausted = True
                    break
                running.append(self._start_child(configuration))
            if not running and (exhausted or len(self.children) >= self.sweep["max_total_runs"]):
                return run_status.STAGE_COMPLETED, ("the search space is exhausted" if exhausted
                                                    else "max_total_runs reached")
            time.sleep(POLL_INTERVAL_S * 2)

    def _start_child(self, configuration):
        index = len(self.children)
        child_id = f"{self.run_id}_{index}"
        template = dataclasses.replace(
            self.template, experiment=self.store.get_run(self.run_id)["experiment"],
            arguments=self.template.arguments + tuple(hyperparameter_arguments(configuration)),
            tags={**self.template.tags, "hyperparameters": json.dumps(configuration)})
        self.store.update_tags(self.run_id, {HYPERPARAMETER_TAG_PREFIX + child_id:
                                             json.dumps(configuration)})
        handle = self.backend.submit(template, run_id=child_id, parent_id=self.run_id)
        child = {"configuration": configuration, "handle": handle, "ended": False, "told": False}
        self.children[child_id] = child
        return child

    def _observe(self, sampler):
        """Every child's primary-metric values; finished children are told to the sampler."""
        values = {}
        for child_id, child in self.children.items():
            values[child_id] = primary_values(self.store, child_id, self.metric["name"])
            status = self.store.get_status(child_id)
            if run_status.is_terminal(status) and not child["told"]:
                child["ended"] = child["told"] = True
                completed = values[child_id] and status == run_status.COMPLETED
                final = values[child_id][-1] if completed else None
                sampler.tell(child["configuration"], final)
            if values[child_id]:
                self._consider_best(child_id, values[child_id])
        return values

    def _apply_policy(self, values):
        for child_id, child in self.children.items():
            if child["ended"] or self.store.get_status(child_id) != run_status.RUNNING:
                continue
            intervals = len(values[child_id])
            if intervals == child.get("evaluated_at", 0):
                continue
            child["evaluated_at"] = intervals
            reason = decide(self.sweep["policy_config"], self.metric["goal"], child_id, values)
            if reason:
                child["handle"].cancel(reason=f"Canceled by the sweep's early termination policy: "
                                              f"{reason}")

    def _consider_best(self, child_id, values):
        best = max(values) if self.metric["goal"] == "maximize" else min(values)
        better = self.best is None or (best > self.best[0] if self.metric["goal"] == "maximize"
                                       else best < self.best[0])
        if better:
            self.best = (best, child_id)
            self._record_best(final=False)

    def _record_best(self, final):
        if self.best is not None:
            self.store.add_metric(self.run_id, BEST_CHILD_METRIC, "row",
                                  {"run_id": self.best[1], "metric_value": self.best[0],
                                   "final": final})

    def _cancel_children(self, why):
        for child in self.children.values():
            child["handle"].cancel(reason=f"Canceled: {why}")
        for child in self.children.values():
            child["handle"].wait()
            child["ended"] = True
