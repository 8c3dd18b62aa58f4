"""A run's spec is kept in its record as JSON and read back as the same RunSpec: the sweep's
children and the Azure backend's records are made from it."""

import json

import pytest

from amlocal.backends.base import SPEC_VERSION, RunSpec
from amlocal.errors import RunRecordCorruptedError
from contract_specs import SPECS


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
