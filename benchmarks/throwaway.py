"""What the benchmarks share: a throwaway run history and source folder for one measurement."""

import os
import tempfile
from pathlib import Path


def throwaway_source(script, prefix="amlocal-bench-"):
    """Point AMLOCAL_HOME at a new empty folder and write `script` as train.py in a new source
    folder next to it; return the source folder."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["AMLOCAL_HOME"] = str(workdir / "home")
    source = workdir / "src"
    source.mkdir()
    (source / "train.py").write_text(script)
    return source
