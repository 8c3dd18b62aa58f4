"""Who may import whom among the rooms, read from the source with `ast` (nothing is imported).

The run history (backends/history/) is shared by both backends, so it imports neither; the Azure
backend stands beside the local one, not on it; and nothing in backends/ reaches up into the
command line or the SDK's shapes (amlocal.workspace, amlocal.run, ...), which sit above it.
Imports inside functions count as much as those at the top of a module.
"""

import ast

import pytest

from conftest import REPO

BACKENDS = REPO / "backends"
# What backends/ may import from the import root besides itself: the error root, the checks of
# user input, reading a workspace's config.json, and the MNIST dataset cache (the local backend
# fills it for runs that read azureml.opendatasets' MNIST).
BACKEND_MAY_USE = ("amlocal.errors", "amlocal.validation", "amlocal.workspace_config",
                   "amlocal.mnist")
# The local sweep's search and early-termination algorithms live beside the SDK classes they
# serve (amlocal.train.hyperdrive mirrors azureml.train.hyperdrive); a known exception, named here
# so that no other reach into the SDK's shapes goes unnoticed.
SWEEP_ALGORITHMS = ("amlocal.train.hyperdrive.policy", "amlocal.train.hyperdrive.sampling")
# A run's driver serves the emulator's app (amlocal.service, what `amlocal serve` runs) to its
# script: backends/local/run_endpoint.py is the one module of backends/ that may import it.
RUN_ENDPOINT = BACKENDS / "local" / "run_endpoint.py"
SERVICE = "amlocal.service"
# The Azure backend's seam signs in to an emulator's workspace (`amlocal serve`'s config.json)
# with the emulator's client side, amlocal.emulator, as a user's azureml-core code does.
AZURE_SESSION = BACKENDS / "azure" / "session.py"
EMULATOR_CLIENT = "amlocal.emulator"


def module_name(path, root=BACKENDS):
    """The import name of a source file under `root`, the backends/ folder (amlocal.backends)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["amlocal", "backends", *parts])


def imported_modules(path, root=BACKENDS):
    """Every module a source file under `root` imports (`import a.b`; `from a.b import c` as a.b
    and a.b.c, since c may be a module), relative imports resolved; [(line, module)]."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def within(module, *packages):
    return any(module == package or module.startswith(package + ".") for package in packages)


def sources(room):
    return sorted((BACKENDS / room).rglob("*.py"))


def offences(paths, forbidden):
    """'file:line imports module' for each import of paths that `forbidden(module)` refuses."""
    return [f"{path.relative_to(REPO)}:{line} imports {module}"
            for path in paths for line, module in imported_modules(path) if forbidden(module)]


def test_the_reader_sees_top_level_lazy_and_relative_imports(tmp_path):
    room = tmp_path / "backends" / "history"
    room.mkdir(parents=True)
    source = room / "probe.py"
    source.write_text("import os\nfrom . import store\nfrom ..local.compute import X\n\n"
                      "def later():\n    from amlocal.workspace import Workspace\n")

    assert [module for _line, module in imported_modules(source, tmp_path / "backends")] == [
        "os", "amlocal.backends.history", "amlocal.backends.history.store",
        "amlocal.backends.local.compute", "amlocal.backends.local.compute.X",
        "amlocal.workspace", "amlocal.workspace.Workspace"]


@pytest.mark.parametrize("room", ["history", "azure"])
def test_the_history_and_the_azure_backend_import_nothing_of_the_local_backend(room):
    assert offences(sources(room), lambda module: within(module, "amlocal.backends.local")) == []


def test_the_history_imports_nothing_of_the_azure_backend():
    assert offences(sources("history"), lambda module: within(module, "amlocal.backends.azure")) == []


def test_backends_import_neither_the_cli_nor_the_sdk_shapes():
    def reaches_up(module, allowed=()):
        return (within(module, "amlocal") and module != "amlocal"
                and not within(module, "amlocal.backends", *BACKEND_MAY_USE, *SWEEP_ALGORITHMS,
                               *allowed))

    others = [path for path in sources(".") if path not in (RUN_ENDPOINT, AZURE_SESSION)]
    assert offences(others, reaches_up) == []
    assert offences([RUN_ENDPOINT], lambda module: reaches_up(module, allowed=(SERVICE,))) == []
    assert offences([AZURE_SESSION],
                    lambda module: reaches_up(module, allowed=(EMULATOR_CLIENT,))) == []


def test_the_run_side_runtime_imports_nothing_of_amlocal():
    # It runs in the script's Python (in a container, or a venv without amlocal): standard
    # library only.
    assert offences(sources("local/runtime"), lambda module: within(module, "amlocal")) == []


# The web UI (ui/, amlocal.ui) reads the history through backends/ and is started by one
# command; nothing else may depend on it.
UI = REPO / "ui"
UI_MAY_USE = ("amlocal.backends", "amlocal.errors", "amlocal.validation", "amlocal.ui")
UI_COMMAND = REPO / "cli" / "ui.py"


def plain_imports(path):
    """[(line, module)] of a file's imports as written; a relative one as "." + its name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}")
                                               for alias in node.names]
    return found


def plain_offences(paths, forbidden):
    return [f"{path.relative_to(REPO)}:{line} imports {module}"
            for path in paths for line, module in plain_imports(path) if forbidden(module)]


def test_the_ui_imports_only_backends_errors_and_validation():
    paths = sorted(UI.rglob("*.py"))
    assert plain_offences(paths, lambda module: module.startswith(".")) == []  # absolute only
    assert plain_offences(paths, lambda module: within(module, "amlocal")
                          and not within(module, *UI_MAY_USE)) == []


def test_nothing_but_its_command_imports_the_ui():
    others = [path for folder in ("amlocal", "cli", "backends", "service")
              for path in sorted((REPO / folder).rglob("*.py")) if path != UI_COMMAND]

    def reaches_ui(module):
        return within(module, "amlocal.ui") or (module.startswith("..") and ".ui" in module)

    assert plain_offences(others, reaches_ui) == []
    assert plain_offences([UI_COMMAND], reaches_ui) != []
