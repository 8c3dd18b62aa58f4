"""`Experiment`: a named group of runs in the workspace, and where runs are submitted."""

from amlocal.errors import UserInputError
from amlocal.validation import check_experiment_name


class Experiment:
    """Runs of one experiment in a workspace."""

    def __init__(self, workspace, name, _skip_name_validation=False, _id=None,
                 _archived_time=None, _create_in_cloud=True, _experiment_dto=None, **kwargs):
        if not _skip_name_validation:
            check_experiment_name(name)
        self.workspace = workspace
        self.name = name
        self.id = name

    def __repr__(self):
        return f"Experiment(Name: {self.name}, Workspace: {self.workspace.name})"

    def _backend(self):
        return self.workspace._backend()

    def submit(self, config, tags=None, dry_run=False, **kwargs):
        """Start a run of `config` (a ScriptRunConfig or an estimator); return its Run at once.

        The run is driven by a process of its own, as on Azure ML it runs on its compute target
        whatever the notebook does: follow it with run.wait_for_completion(show_output=True).

        dry_run=True (amlocal's) submits nothing: it prints what would be submitted to Azure ML
        (the run configuration as azureml-core serializes it, the environment's Dockerfile, the
        compute configuration, the uploads) and returns it as a dict. It needs the `azure` extra,
        and no network or Azure account.
        """
        from amlocal.run import Run

        if dry_run:
            return self._dry_run(config, tags)

        submit_to = getattr(config, "_submit_to", None)
        if submit_to is not None:  # configs that start runs of their own kind (HyperDriveConfig)
            return submit_to(self, tags=tags, **kwargs)
        to_spec = getattr(config, "_to_spec", None)
        if to_spec is None:
            raise UserInputError(f"cannot submit a {type(config).__name__}: give a ScriptRunConfig, "
                                 "an estimator or a HyperDriveConfig")
        handle = self._backend().submit(to_spec(self.name, tags=tags), detach=True)
        return Run(self, handle.id, _handle=handle)

    def _dry_run(self, config, tags):
        """submit(dry_run=True): print the dry run as `amlocal run --dry-run` does, return it."""
        from amlocal.backends import get_backend
        from amlocal.cli.dry_run import dry_run, dry_run_text

        azure = get_backend("azure", home=self.workspace._home,
                            workspace_config=getattr(self.workspace, "_azure_config", None))
        if hasattr(config, "_sweep"):  # a HyperDriveConfig
            template = (config.estimator or config.run_config)._to_spec(self.name, tags=tags)
            document = dry_run(azure, template, config._sweep())
        elif hasattr(config, "_to_spec"):
            document = dry_run(azure, config._to_spec(self.name, tags=tags))
        else:
            raise UserInputError(f"a dry run shows a ScriptRunConfig, an estimator or a "
                                 f"HyperDriveConfig, not a {type(config).__name__}")
        print(dry_run_text(document))  # the SDK's edge: dry_run=True is documented to print
        return document

    def get_runs(self, type=None, tags=None, properties=None, include_children=False):
        """This experiment's runs, newest first (children only with include_children=True)."""
        from amlocal.run import _matches_tags, run_of

        backend = self._backend()
        for record in backend.list_runs(experiment=self.name):
            if "corrupted" in record:
                continue
            if record.get("parent_id") and not include_children:
                continue
            if type is not None and (("hyperdrive" if record.get("sweep") else "azureml.scriptrun")
                                     != type):
                continue
            run = run_of(self, backend.get_run(record["id"]))
            if _matches_tags(record["tags"], tags) and _matches_tags(record["properties"], properties):
                yield run

    @staticmethod
    def list(workspace, experiment_name=None, view_type=None, tags=None):
        return [experiment for name, experiment in workspace.experiments.items()
                if experiment_name in (None, name)]
