"""`HyperDriveRun`: the parent run of a sweep, with azureml-train-core's methods; and
`PrimaryMetricGoal`, which azureml-train-core's notebooks import from here."""

from amlocal.run import Run
from amlocal.train.hyperdrive.runconfig import PrimaryMetricGoal

__all__ = ["HyperDriveRun", "PrimaryMetricGoal"]


class HyperDriveRun(Run):
    """A sweep's parent run; its children are the runs it started."""

    RUN_TYPE = "hyperdrive"

    @property
    def type(self):
        return self.RUN_TYPE

    def _sweep(self):
        return self._handle.get_details()["sweep"]

    @property
    def hyperdrive_config(self):
        """The sweep's settings: sampling, policy, primary metric and limits, as stored."""
        return self._sweep()

    def get_hyperparameters(self):
        """{child run id: JSON string of its hyperparameters}, from the parent's tags."""
        from amlocal.backends.base import HYPERPARAMETER_TAG_PREFIX

        prefix = HYPERPARAMETER_TAG_PREFIX + self.id + "_"
        return {name[len(HYPERPARAMETER_TAG_PREFIX):]: value
                for name, value in self.get_tags().items() if name.startswith(prefix)}

    def _summaries(self):
        return self._handle.get_child_summaries()

    def get_children_sorted_by_primary_metric(self, top=0, reverse=False, discard_no_metric=False):
        """Children as {run_id, hyperparameters, best_primary_metric, status}, best first (by
        each child's best logged value); children without the metric come last."""
        maximize = self._sweep()["primary_metric_config"]["goal"] == "maximize"
        hyperparameters = self.get_hyperparameters()
        with_metric, without = [], []
        for summary in self._summaries():
            child = {"run_id": summary["run_id"],
                     "hyperparameters": hyperparameters.get(summary["run_id"]),
                     "best_primary_metric": summary["best_primary_metric"],
                     "status": summary["status"]}
            (with_metric if child["best_primary_metric"] is not None else without).append(child)
        ordered = sorted(with_metric, key=lambda child: child["best_primary_metric"],
                         reverse=(maximize != reverse))
        if not discard_no_metric:
            ordered += without
        return ordered if top == 0 else ordered[:top]

    def get_best_run_by_primary_metric(self, include_failed=True, include_canceled=True,
                                       include_resume_from_runs=True):
        """The child with the best primary metric (None if no child logged it)."""
        for child in self.get_children_sorted_by_primary_metric(discard_no_metric=True):
            if child["status"] == "Failed" and not include_failed:
                continue
            if child["status"] == "Canceled" and not include_canceled:
                continue
            return Run(self.experiment, child["run_id"])
        return None

    def get_diagnostics(self):
        return {"children": self._summaries()}

