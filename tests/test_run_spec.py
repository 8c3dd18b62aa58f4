"""A run's spec is kept in its record as JSON and read back as the same RunSpec: the local
executors run it, the sweep's children and the Azure backend's records are made from it. Records
written by an older amlocal still run; a damaged one is reported as damage."""

import json
import shutil

import pytest

from amlocal.backends.base import SPEC_VERSION, RecordedSpec, RunSpec
from amlocal.backends.local import LocalBackend
from amlocal.backends.local.compute import ComputeTargets
from amlocal.errors import RunRecordCorruptedError
from conftest import write_script
from contract_specs import SPECS
from test_cli import invoke, last_json


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_contract_spec_round_trips_through_json(tmp_path, name):
    spec = SPECS[name](tmp_path).validated()

    stored = json.loads(json.dumps(spec.to_json()))

    assert stored["spec_version"] == SPEC_VERSION
    assert RunSpec.from_json(stored) == spec


def test_a_record_from_before_a_field_existed_reads_with_its_default(tmp_path):
    stored = SPECS["minimal"](tmp_path).validated().to_json()
    for newer in ("spec_version", "run_as_root", "use_gpu", "environment_variables"):
        del stored[newer]
    del stored["environment"]["dockerfile"]
    stored["sweep"] = {"primary_metric_name": "Accuracy"}  # a sweep parent's note, not a field

    spec = RunSpec.from_json(stored)

    assert (spec.run_as_root, spec.use_gpu, spec.environment_variables) == (False, False, {})
    assert spec.environment.dockerfile is None


def test_a_spec_written_by_a_newer_amlocal_is_reported_not_guessed(tmp_path):
    stored = dict(SPECS["minimal"](tmp_path).validated().to_json(), spec_version=SPEC_VERSION + 1)

    with pytest.raises(RunRecordCorruptedError, match="newer than this amlocal"):
        RunSpec.from_json(stored)


def test_a_recorded_spec_keeps_the_notes_beside_the_fields(tmp_path):
    spec = SPECS["minimal"](tmp_path).validated()
    sweep = {"max_total_runs": 4, "primary_metric_config": {"name": "Accuracy", "goal": "maximize"}}

    stored = json.loads(json.dumps(RecordedSpec(spec, sweep=sweep, child_of="parent_1").to_json()))

    assert stored["sweep"] == sweep and stored["child_of"] == "parent_1" and "azure" not in stored
    assert RecordedSpec.from_json(stored) == RecordedSpec(spec, sweep=sweep, child_of="parent_1")
    assert RecordedSpec(spec).to_json() == spec.to_json()  # a plain run's record has no notes


@pytest.mark.parametrize("damage", [
    lambda stored: stored.pop("script"),
    lambda stored: stored.pop("source_dir"),
    lambda stored: stored.update(inputs=["not", "a", "mapping"]),
    lambda stored: stored.update(environment="chainer"),
])
def test_a_damaged_recorded_spec_is_reported_as_damage(tmp_path, damage):
    stored = SPECS["minimal"](tmp_path).validated().to_json()
    damage(stored)

    with pytest.raises(RunRecordCorruptedError, match="recorded spec is damaged"):
        RecordedSpec.from_json(stored)


# Records as an amlocal from before spec_version (and before run_as_root, use_gpu,
# environment_variables, max_run_duration_seconds, executor and the environment's base_image and
# dockerfile) wrote them.
OLD_SPEC = {"experiment": "Default", "script": "train.py", "arguments": ["--epochs", "2"],
            "inputs": {}, "environment": {"recipe": "chainer", "pip_packages": []},
            "compute": "local", "node_count": 1, "tags": {}}


def recorded_run(store, source, spec):
    """A NotStarted run recorded as `spec` says, queued on the local target as submit does."""
    targets = ComputeTargets(store)
    return store.create_run(
        experiment="Default", executor="process", compute="local",
        spec=dict(spec, source_dir=str(source)),
        fill_snapshot=lambda folder: shutil.copytree(source, folder),
        also=lambda conn, run_id: targets.enqueue(conn, run_id, "local", 1))


def test_a_run_recorded_by_an_older_amlocal_runs_and_shows(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "import sys\nprint('args', sys.argv[1:])\n")
    backend = LocalBackend()
    run_id = recorded_run(backend.store, source, OLD_SPEC)

    assert backend.drive(run_id) == "Completed", backend.store.get_run(run_id)["error"]

    shown = last_json(invoke("runs", "show", run_id, "--json"))
    assert (shown["status"], shown["script"], shown["arguments"]) == (
        "Completed", "train.py", ["--epochs", "2"])
    assert "args ['--epochs', '2']" in invoke("runs", "logs", run_id).output


def test_a_run_whose_recorded_spec_is_damaged_fails_with_the_reason(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('never runs')\n")
    backend = LocalBackend()
    damaged = {name: value for name, value in OLD_SPEC.items() if name != "script"}
    run_id = recorded_run(backend.store, source, damaged)

    assert backend.drive(run_id) == "Failed"

    record = backend.store.get_run(run_id)
    assert "recorded spec is damaged" in record["error"] and "script" in record["error"]
    assert all(stage["status"] != "Running" for stage in record["stages"])
