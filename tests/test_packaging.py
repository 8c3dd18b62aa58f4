"""The installed package carries its payload: every docker/ recipe, the run-side runtime and the
web UI's templates and assets."""

import subprocess
import sys
import tomllib
import zipfile

from conftest import REPO


def test_every_recipe_folder_is_declared_for_packaging():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    recipes = {path.name for path in (REPO / "docker").iterdir() if (path / "Dockerfile").is_file()}

    assert {f"amlocal.recipes.{name}" for name in recipes} <= set(config["packages"])
    assert all(config["package-data"].get(f"amlocal.recipes.{name}") == ["*"] for name in recipes)


def test_wheel_holds_the_recipes_and_the_runtime(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("amlocal-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())

    assert "amlocal/recipes/chainer/Dockerfile" in names
    assert {"amlocal/backends/local/runtime/sitecustomize.py",
            "amlocal/backends/local/runtime/amlocal_run.py",
            "amlocal/backends/local/runtime/shim/azureml/core/run.py",
            "amlocal/backends/local/runtime/opendatasets/azureml/opendatasets/__init__.py",
            "amlocal/cli/main.py"} <= names
    # the web UI serves its pages and assets from the package: the browser needs no network
    assert {"amlocal/ui/templates/run.html", "amlocal/ui/static/ui.js",
            "amlocal/ui/static/uPlot.iife.min.js", "amlocal/ui/static/uPlot.LICENSE"} <= names
    assert not any(name.startswith(("trainer/", "tests/")) for name in names)


def test_every_python_package_of_the_import_root_is_declared_for_packaging():
    # setuptools ships only the packages listed; a new room (a folder with an __init__.py) left
    # out of the list would work from a checkout and be missing from the wheel.
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in config["package-dir"].items():
        for marker in (REPO / folder).rglob("__init__.py"):
            relative = marker.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *relative)))

    assert "amlocal.backends.history" in found
    assert found - set(config["packages"]) == set()
