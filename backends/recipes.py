"""The image recipes in docker/, which both backends build from: where they are, which have a GPU
build.

The local backend builds a recipe's Dockerfile on this host (local/images.py); the Azure backend
hands the same Dockerfile to Azure ML's image build (azure/translate_v1.py).
"""

from pathlib import Path

from amlocal.errors import AmlocalError, UserInputError

# Recipes with a GPU build (CuPy on CUDA), used when a run asks for GPUs and its node has real
# ones: {recipe: its GPU build}.
GPU_RECIPES = {"chainer": "chainer-gpu"}


def recipes_root():
    """docker/ of a source checkout (editable install), or its copy in an installed wheel
    (amlocal/recipes, beside amlocal/backends)."""
    import_root = Path(__file__).resolve().parent.parent
    for candidate in (import_root / "recipes", import_root / "docker"):
        if candidate.is_dir():
            return candidate
    raise AmlocalError(f"amlocal's image recipes are missing (looked in {import_root})")


def recipe_dir(recipe):
    """The folder of recipe `recipe`; UserInputError naming the known ones if there is none."""
    root = recipes_root()
    folder = root / recipe
    if not (folder / "Dockerfile").is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "Dockerfile").is_file())
        raise UserInputError(f"unknown environment recipe {recipe!r}: known: {', '.join(known)}")
    return folder


def gpu_build(recipe):
    """The recipe's GPU build, or None where it has none."""
    return GPU_RECIPES.get(recipe)
