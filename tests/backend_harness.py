"""The same run on each backend, for the tests that hold every backend to one behaviour (the Run
interface's contract suite, the CLI over each backend): a script that prints a line, logs `loss`
twice and writes outputs/model.bin. The local backend runs it; for the others the harness puts
what the script would have left where that backend reads it (Azure's run, the memory record)."""

import time

from amlocal.backends import status as run_status
from amlocal.backends.base import RunSpec
from amlocal.backends.local import LocalBackend
from conftest import write_script
from memory_backend import MemoryBackend

MODEL_BYTES = bytes(range(256)) * 3
GREETING = "hello from the script"
SCRIPT = f"""
import os, sys, time
from azureml.core.run import Run
run = Run.get_context()
run.log("loss", 0.5)
run.log("loss", 0.25)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.bin", "wb").write(bytes(range(256)) * 3)
print("{GREETING}", flush=True)
if "--sleep" in sys.argv:
    time.sleep(300)
"""


class LocalHarness:
    """The local backend, running the script with one executor."""

    models_here = True
    file_sizes_known = True

    def __init__(self, home, source, executor, docker_client=None):
        self.backend = LocalBackend(home=home, docker_client=docker_client)
        self.source = source
        self.executor = executor

    def spec(self, *arguments):
        return RunSpec(source_dir=self.source, script="train.py", arguments=arguments,
                       experiment="contract", executor=self.executor)

    def finished(self):
        handle = self.backend.submit(self.spec())  # driven by this process, in a thread
        handle.wait(timeout=120)
        return handle

    def running(self):
        handle = self.backend.submit(self.spec("--sleep"), detach=True)
        deadline = time.monotonic() + 120
        while GREETING not in list(handle.stream_logs()):
            assert time.monotonic() < deadline, handle.get_details()
            time.sleep(0.2)
        return handle


class AzureHarness:
    """The Azure backend over the fake seam; the fake Azure is given what the run left."""

    models_here = False  # a run's model is registered in the Azure ML workspace
    file_sizes_known = False

    def __init__(self, home, source, project, monkeypatch):
        from amlocal.backends.azure import AzureBackend
        from contract_specs import create_targets
        from fake_azure import FakeAzure, FakeSession, session_module

        self.azure = FakeAzure()
        monkeypatch.setattr(session_module, "AzureSession",
                            lambda config_path: FakeSession(self.azure, config_path))
        monkeypatch.setenv("AMLOCAL_AZURE_POLL_S", "0")
        self.backend = AzureBackend(home=home, workspace_config=project)
        create_targets(self.backend.store)
        self.source = source

    def spec(self, *arguments):
        return RunSpec(source_dir=self.source, script="train.py", arguments=arguments,
                       experiment="contract", compute="cpu-cluster")

    def finished(self):
        handle = self.backend.submit(self.spec())
        self.azure.logs[handle.id] = [GREETING]
        self.azure.metrics[handle.id] = {"loss": [0.5, 0.25]}
        self.azure.files[handle.id] = {"outputs/model.bin": MODEL_BYTES,
                                       "azureml-logs/70_driver_log.txt": f"{GREETING}\n".encode()}
        self.azure.statuses[handle.id] = ["Running", "Completed"]
        handle.wait()
        return handle

    def running(self):
        handle = self.backend.submit(self.spec("--sleep"))
        self.azure.statuses[handle.id] = ["Running"]
        assert handle.get_status() == run_status.RUNNING
        return handle


class MemoryHarness:
    """The in-memory backend; its record is given what the script would have left."""

    models_here = True
    file_sizes_known = True

    def __init__(self, source):
        self.backend = MemoryBackend()
        self.source = source

    def spec(self, *arguments):
        return RunSpec(source_dir=self.source, script="train.py", arguments=arguments,
                       experiment="contract")

    def finished(self):
        handle = self.backend.submit(self.spec(), detach=True)
        handle.record["log"].append(GREETING)
        handle.record["metrics"] = {"loss": [0.5, 0.25]}
        handle.record["files"]["outputs/model.bin"] = MODEL_BYTES
        handle.wait()
        return handle

    def running(self):
        return self.backend.submit(self.spec("--sleep"), detach=True)


def make_harness(kind, tmp_path, monkeypatch, docker_client=None):
    """The harness of backend `kind` (process, docker, azure, memory), with a run history of
    its own under tmp_path (named by AMLOCAL_HOME, as the command line finds it)."""
    home = tmp_path / "amlocal-home"
    monkeypatch.setenv("AMLOCAL_HOME", str(home))
    source = write_script(tmp_path / "src", "train.py", SCRIPT)
    if kind in ("process", "docker"):
        return LocalHarness(home, source, kind, docker_client)
    if kind == "azure":
        project = tmp_path / "project"
        write_script(project / ".azureml", "config.json",
                     '{"subscription_id": "sub-1", "resource_group": "rg-ml", '
                     '"workspace_name": "ws-prod"}')
        return AzureHarness(home, source, project, monkeypatch)
    return MemoryHarness(source)
