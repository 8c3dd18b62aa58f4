"""The contract specs (contract_specs.py) on the local backend: each runs, and its script gets
exactly what the spec says. test_azure_translation.py holds the Azure translation to the same
specs, up to the seam."""

import dataclasses
import json
from pathlib import Path

import pytest

from amlocal.backends.base import substitute_data_references
from amlocal.backends.local import LocalBackend
from contract_specs import SPECS, create_targets


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_local_backend_runs_each_contract_spec_as_specified(name, amlocal_home, tmp_path):
    backend = LocalBackend(home=amlocal_home)
    create_targets(backend.store)
    spec = SPECS[name](tmp_path)
    # The process executor needs no Docker engine; the image side of a spec (recipe, pip
    # packages, base image, Dockerfile) is the Azure translation's to check.
    run_spec = dataclasses.replace(spec, executor="process").validated()

    details = backend.submit(run_spec).wait(timeout=120)

    assert details["status"] == "Completed", details["error"]
    seen = json.loads((Path(details["run_dir"]) / "outputs" / "seen.json").read_text())
    paths = {name: str(path) for name, path in run_spec.inputs.items()}
    assert seen["argv"] == substitute_data_references(list(run_spec.arguments), paths)
    assert seen["references"] == paths
    assert seen["env"] == {key: run_spec.environment_variables.get(key)
                           for key in ("CONTRACT_GREETING", "CONTRACT_LEVEL")}
    for input_name, path in run_spec.inputs.items():
        expected = sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_text()
        assert seen["inputs"][input_name] == expected
    assert details["experiment"] == run_spec.experiment
    assert details["compute"] == run_spec.compute
    assert details["node_count"] == run_spec.node_count
    assert len(details["nodes"]) == run_spec.node_count
    assert details["max_run_duration_seconds"] == run_spec.max_run_duration_seconds
    assert run_spec.tags.items() <= details["tags"].items()
    assert details["environment"]["pip_packages"] == list(run_spec.environment.pip_packages)
    if run_spec.distribution is not None:  # every rank ran the script, each with its own log
        ranks = run_spec.node_count * run_spec.distribution.process_count_per_node
        logs = ["70_driver_log.txt", *(f"70_driver_log_{rank}.txt" for rank in range(1, ranks))]
        for log in logs:
            assert "probe done" in (Path(details["run_dir"]) / "azureml-logs" / log).read_text()
        assert not (Path(details["run_dir"]) / "azureml-logs" / f"70_driver_log_{ranks}.txt").exists()
