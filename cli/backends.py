"""Where the command line gets its backends: one factory, and the seam a test replaces.

Commands never name a backend class or special-case a backend's name: they ask the factory in
click's context object, `backends()`. By default that is `Backends`, which makes amlocal's
registered backends (amlocal.backends.get_backend) and opens runs of the local history. A test
injects its own by passing an object with the same two methods as click's `obj`:

    CliRunner().invoke(cli, [...], obj=MyBackends())
"""

import click

from amlocal.errors import UserInputError

DEFAULT_BACKEND = "local"
# The backend that takes --workspace-config (the Azure ML workspace's config.json).
WORKSPACE_BACKEND = "azure"


class Backends:
    """The default factory: amlocal's registered backends, imported only when asked for."""

    def get(self, name=DEFAULT_BACKEND, workspace_config=None, sdk=None):
        """The backend `name`; UserInputError if an option does not apply to it."""
        from amlocal.backends import get_backend

        if sdk is not None and name != WORKSPACE_BACKEND:
            raise UserInputError(f"--sdk chooses the Azure ML SDK: use it with --backend "
                                 f"{WORKSPACE_BACKEND}")
        if workspace_config is None and sdk is None:
            return get_backend(name)
        if name != WORKSPACE_BACKEND:
            raise UserInputError("--workspace-config names an Azure ML workspace: use it with "
                                 f"--backend {WORKSPACE_BACKEND}")
        return get_backend(name, workspace_config=workspace_config, sdk=sdk)

    def open_run(self, run_id):
        """The handle of a run in the history, from the backend that ran it."""
        from amlocal.backends import open_run

        return open_run(run_id)


def backend_named(name, workspace_config=None, sdk=None):
    """backends().get(name) with the Azure options a command was given (--sdk only where it was
    given, so that a factory a test injects need not take it)."""
    options = {"sdk": sdk} if sdk is not None else {}
    return backends().get(name, workspace_config=workspace_config, **options)


def backends():
    """The factory of the command being run: click's context object (see the module's doc)."""
    context = click.get_current_context()
    root = context.find_root()
    if root.obj is None:
        root.obj = Backends()
    return root.obj
