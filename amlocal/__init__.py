"""amlocal: Azure Machine Learning (SDK v1) training runs, emulated locally in Docker.

The import root for the command line (`amlocal.cli`), the run backends (`amlocal.backends`) and
the image recipes (`amlocal.recipes`, the top-level docker/ folder).
"""

__version__ = "0.1.0"
