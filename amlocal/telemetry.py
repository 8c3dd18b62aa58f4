"""Mirrors `azureml.telemetry`, which Azure ML's notebooks call first.

amlocal collects no diagnostics and sends nothing anywhere, so turning collection on or off
changes nothing; the call says so once instead of failing the notebook's first cell.
"""

import sys


def set_diagnostics_collection(send_diagnostics=True, verbose=False, reconfigure=False,
                               path=None):
    """Accepted for azureml-core's notebooks; amlocal never collects or sends diagnostics."""
    print("amlocal collects no diagnostics: nothing is sent "
          f"(set_diagnostics_collection(send_diagnostics={send_diagnostics!r}) changes nothing)",
          file=sys.stderr)


def get_diagnostics_collection_info(component_name=None, path=None):
    return {"amlocal": {"enabled": False}}
