"""A run cannot reach outside its folder through the host (issue 10, items 1, 4 and 7).

Everything a run's script controls is untrusted input to the host side of amlocal: the names it
uploads under, the lines in its telemetry file, the symlinks, hard links, FIFOs and sockets it
leaves in ./outputs. These tests let real scripts (in real containers, or as host processes)
try each route, and check that nothing appears outside the run folder and the run still ends
the way its script did. Host paths are tmp folders the test owns ("sentinels"): a container
cannot see them, but the host side would follow a link to them.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amlocal.backends.history.snapshot import snapshot_files, take_snapshot
from amlocal.backends.history.store import RunStore
from amlocal.errors import UserInputError
from conftest import write_script
from test_cli import invoke, last_json

AMLOCAL = [sys.executable, "-m", "amlocal"]


def listing(root):
    """Every path under root (links not followed) with its bytes, for before/after comparisons."""
    root = Path(root)
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[relative] = ("link", os.readlink(path))
            elif path.is_file():
                found[relative] = ("file", path.read_bytes())
            elif path.is_dir():
                found[relative] = ("dir",)
            else:
                found[relative] = ("special",)
    return found


@pytest.fixture
def sentinel(tmp_path):
    """A host folder outside every run, with one file in it, that no run may change."""
    folder = tmp_path / "sentinel"
    folder.mkdir()
    (folder / "secret.txt").write_text("host secret\n")
    return folder


def run_cli(source, executor, *options, args=(), timeout=300):
    """`amlocal run --json` in a child process (a hang fails the test instead of hanging it)."""
    completed = subprocess.run(
        [*AMLOCAL, "run", str(source), "--script", "train.py", "--executor", executor, *options,
         "--json", *args], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in completed.stderr, completed.stderr
    return completed, json.loads(completed.stdout.strip().splitlines()[-1])


def outside_entries(amlocal_home, run_id):
    """What is in $AMLOCAL_HOME/runs besides the run folders (an escape lands there)."""
    return sorted(entry.name for entry in (Path(amlocal_home) / "runs").iterdir()
                  if entry.name != run_id)


# -- the escape through a symlink the script made -----------------------------------------------

UPLOAD_THROUGH_LINK = """
import os, sys
from azureml.core import Run
run = Run.get_context()
os.symlink(sys.argv[1], "outputs/link")
with open("data.txt", "w") as handle:
    handle.write("written by the run\\n")
run.upload_file("outputs/link/" + sys.argv[2], "data.txt")
print("uploaded", flush=True)
"""


@pytest.mark.docker
def test_an_upload_through_a_symlink_in_outputs_writes_nothing_on_the_host(
        amlocal_home, docker_client, tmp_path, sentinel):
    source = write_script(tmp_path / "src", "train.py", UPLOAD_THROUGH_LINK)
    before = listing(sentinel)

    completed, record = run_cli(source, "docker", args=["--", str(sentinel), "x.txt"])

    assert listing(sentinel) == before
    assert record["status"] == "Completed", record["error"]
    link = Path(record["run_dir"]) / "outputs" / "link"
    assert link.is_symlink() and os.readlink(link) == str(sentinel)  # kept as a link, as data
    assert "outputs/link" not in last_json(invoke("runs", "files", record["id"], "--json"))


@pytest.mark.docker
def test_an_upload_through_a_symlink_cannot_overwrite_a_read_only_input(
        amlocal_home, docker_client, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("1,2,3\n")
    source = write_script(tmp_path / "src", "train.py", UPLOAD_THROUGH_LINK)

    _completed, record = run_cli(source, "docker", "--input", f"data={data}",
                                 args=["--", str(data), "rows.csv"])

    assert (data / "rows.csv").read_text() == "1,2,3\n"
    assert sorted(os.listdir(data)) == ["rows.csv"]
    assert record["status"] == "Completed", record["error"]


@pytest.mark.docker
def test_a_telemetry_upload_name_with_dot_dot_stays_in_its_run_folder(amlocal_home, docker_client,
                                                                       tmp_path):
    source = write_script(tmp_path / "src", "train.py", """
import json, os
with open("outputs/p.txt", "w") as handle:
    handle.write("p")
with open(os.environ["AMLOCAL_TELEMETRY_FILE"], "a") as telemetry:
    for name in ("../../outputs/p.txt", "/etc/hostname", "outputs/./../../p.txt", "a\\u0000b"):
        telemetry.write(json.dumps({"kind": "upload", "name": name}) + "\\n")
""")

    _completed, record = run_cli(source, "docker")

    assert outside_entries(amlocal_home, record["id"]) == []
    assert record["status"] == "Completed", record["error"]
    assert (Path(record["run_dir"]) / "outputs" / "p.txt").read_text() == "p"


def test_a_telemetry_child_run_id_cannot_name_a_folder_outside_the_history(amlocal_home, tmp_path,
                                                                           sentinel):
    source = write_script(tmp_path / "src", "train.py", f"""
import json, os
with open(os.environ["AMLOCAL_TELEMETRY_FILE"], "a") as telemetry:
    telemetry.write(json.dumps({{"kind": "child", "name": "x",
                                 "run": "../../sentinel/child"}}) + "\\n")
""")
    before = listing(sentinel)

    _completed, record = run_cli(source, "process")

    assert record["status"] == "Completed", record["error"]
    assert listing(sentinel) == before
    assert outside_entries(amlocal_home, record["id"]) == []


# -- hard links, FIFOs and sockets in ./outputs ----------------------------------------------------

SPECIAL_FILES = """
import os, socket, sys
with open("outputs/model.bin", "wb") as handle:
    handle.write(b"model")
os.link("outputs/model.bin", "outputs/model-again.bin")
os.mkfifo("outputs/pipe")
server = socket.socket(socket.AF_UNIX)
server.bind("outputs/sock")
# The telemetry file itself replaced by a FIFO: reading it must not hang the host either.
telemetry = os.environ["AMLOCAL_TELEMETRY_FILE"]
if os.path.exists(telemetry):
    os.remove(telemetry)
os.mkfifo(telemetry)
print("done", flush=True)
"""


@pytest.mark.docker
def test_a_fifo_a_socket_and_a_hard_link_in_outputs_do_not_hang_postprocessing_docker(
        amlocal_home, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", SPECIAL_FILES)

    completed, record = run_cli(source, "docker", timeout=180)

    assert record["status"] == "Completed", record["error"]
    files = last_json(invoke("runs", "files", record["id"], "--json"))
    assert {"outputs/model.bin", "outputs/model-again.bin"} <= set(files)
    assert "outputs/pipe" not in files and "outputs/sock" not in files
    postprocessing = next(s for s in record["stages"] if s["name"] == "PostProcessing")
    assert "outputs/pipe" in postprocessing["detail"] and "outputs/sock" in postprocessing["detail"]
    outputs = Path(record["run_dir"]) / "outputs"
    assert (outputs / "model.bin").stat().st_nlink == 1  # each name has its own copy now


def test_a_hard_link_to_a_host_file_is_kept_as_a_copy_that_the_host_file_no_longer_shares(
        amlocal_home, tmp_path, sentinel):
    # Only a host process can reach a host file to link it (a container sees its mounts only).
    source = write_script(tmp_path / "src", "train.py", """
import os, sys
os.link(sys.argv[1], "outputs/host-file.txt")
""")
    host_file = sentinel / "secret.txt"

    _completed, record = run_cli(source, "process", args=["--", str(host_file)], timeout=180)

    assert record["status"] == "Completed", record["error"]
    kept = Path(record["run_dir"]) / "outputs" / "host-file.txt"
    assert host_file.stat().st_nlink == 1 and kept.stat().st_nlink == 1
    assert not os.path.samestat(host_file.stat(), kept.stat())
    host_file.write_text("changed later on the host\n")
    download = invoke("runs", "download", record["id"], "--prefix", "outputs/host-file.txt",
                      "-o", tmp_path / "dl")
    assert download.exit_code == 0, download.output
    assert (tmp_path / "dl" / "outputs" / "host-file.txt").read_text() == "host secret\n"


# -- a symlink swapped while PostProcessing reads ------------------------------------------------

FLIPPER = """
import os, sys
outputs = sys.argv[1]
sub, real, link = (os.path.join(outputs, name) for name in ("sub", ".real", ".link"))
while True:
    os.rename(sub, real); os.rename(link, sub)
    os.rename(sub, link); os.rename(real, sub)
"""


def test_a_symlink_swapped_in_while_files_are_recorded_is_never_followed(amlocal_home, tmp_path,
                                                                          sentinel):
    store = RunStore()
    run_id = store.create_run(experiment="race", executor="process", compute="local", spec={},
                              fill_snapshot=lambda folder: folder.mkdir())
    outputs = store.run_dir(run_id) / "outputs"
    (outputs / "sub").mkdir()
    (outputs / "sub" / "secret.txt").write_text("the run's own file\n")
    (outputs / ".link").symlink_to(sentinel)
    secret = hashlib.sha256((sentinel / "secret.txt").read_bytes()).hexdigest()
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, str(outputs)])
    seen = []
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            rows, _skipped = _record_files(store, run_id)
            seen += [digest for _run, _name, _size, digest in rows]
    finally:
        flipper.kill()
        flipper.wait()

    assert seen, "the run's own file was never recorded"
    assert secret not in seen


def test_a_link_or_fifo_swapped_in_after_listing_is_refused_not_followed(tmp_path, sentinel):
    from amlocal.backends.history.run_folder import NotARunFile, RunFolder

    run = tmp_path / "run"
    (run / "outputs" / "sub").mkdir(parents=True)
    (run / "outputs" / "sub" / "model.bin").write_bytes(b"the run's")
    (run / "outputs" / "later.bin").write_bytes(b"the run's too")
    (sentinel / "model.bin").write_bytes(b"the host's")
    before = listing(sentinel)

    with RunFolder(run) as folder:
        listed = [entry.name for entry in folder.entries("outputs") if entry.kind == "file"]
        assert listed == ["outputs/later.bin", "outputs/sub/model.bin"]
        # What the script (or a racing process) does after the listing, before the reads:
        (run / "outputs" / "sub").rename(run / "outputs" / "real")
        (run / "outputs" / "sub").symlink_to(sentinel)
        (run / "outputs" / "later.bin").unlink()
        os.mkfifo(run / "outputs" / "later.bin")

        for name in listed:
            with pytest.raises(NotARunFile):
                folder.open(name)  # a FIFO is refused at once: no wait for a writer
            with pytest.raises(NotARunFile):
                folder.digest(name)
        assert not folder.move_from(folder, "outputs/real/model.bin", "outputs/sub/moved.bin")

    assert listing(sentinel) == before
    assert (run / "outputs" / "real" / "model.bin").read_bytes() == b"the run's"


def _record_files(store, run_id):
    """record_files as (rows, skipped) whatever its version returns."""
    result = store.record_files(run_id)
    return result if isinstance(result, tuple) else (result, [])


# -- a file name that is not UTF-8 -----------------------------------------------------------------

@pytest.mark.parametrize("executor", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_non_utf8_output_name_completes_is_listed_and_downloads_under_its_bytes(
        amlocal_home, tmp_path, executor, request):
    if executor == "docker":
        request.getfixturevalue("docker_client")
    source = write_script(tmp_path / "src", "train.py", """
with open(b"outputs/bad_\\xff.txt", "wb") as handle:
    handle.write(b"odd name")
""")

    completed, record = run_cli(source, executor)

    assert record["status"] == "Completed", record["error"]
    listed = subprocess.run([*AMLOCAL, "runs", "files", record["id"]], capture_output=True)
    assert listed.returncode == 0 and b"outputs/bad_\\xff.txt" in listed.stdout.splitlines()
    as_json = subprocess.run([*AMLOCAL, "runs", "files", record["id"], "--json"],
                             capture_output=True, text=True)
    names = [name for name in json.loads(as_json.stdout) if name.startswith("outputs/")]
    assert [os.fsencode(name) for name in names] == [b"outputs/bad_\xff.txt"]
    downloaded = subprocess.run([*AMLOCAL, "runs", "download", record["id"], "-o",
                                 str(tmp_path / "dl")], capture_output=True)
    assert downloaded.returncode == 0, downloaded.stderr
    assert b"Traceback" not in downloaded.stderr
    target = os.path.join(os.fsencode(tmp_path / "dl"), b"outputs", b"bad_\xff.txt")
    with open(target, "rb") as handle:
        assert handle.read() == b"odd name"


# -- symlinks in the source folder at submission ----------------------------------------------------

def test_a_dangling_symlink_in_the_source_is_refused_with_one_line(tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('x')\n")
    (source / "gone.txt").symlink_to(tmp_path / "nowhere")

    with pytest.raises(UserInputError, match=r"gone\.txt.* points to nothing"):
        snapshot_files(source)


def test_a_symlink_to_a_host_file_outside_the_source_is_refused(tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('x')\n")
    (source / "passwd").symlink_to("/etc/passwd")

    with pytest.raises(UserInputError, match=r"passwd.* points outside .*/etc/passwd"):
        snapshot_files(source)


def test_a_symlink_outside_the_source_that_amlignore_leaves_out_is_no_problem(tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('x')\n")
    (source / "passwd").symlink_to("/etc/passwd")
    (source / ".amlignore").write_text("passwd\n")

    assert [name for name, _size in snapshot_files(source)] == [".amlignore", "train.py"]


def test_symlinks_inside_the_source_are_followed_as_azure_does(tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('x')\n")
    (source / "data").mkdir()
    (source / "data" / "rows.csv").write_text("1,2\n")
    (source / "data-link").symlink_to("data")
    (source / "rows-link.csv").symlink_to("data/rows.csv")

    files = snapshot_files(source)
    take_snapshot(source, tmp_path / "snap", files)

    assert sorted(name for name, _size in files) == ["data-link/rows.csv", "data/rows.csv",
                                                     "rows-link.csv", "train.py"]
    assert listing(tmp_path / "snap") == {
        "data": ("dir",), "data-link": ("dir",), "data/rows.csv": ("file", b"1,2\n"),
        "data-link/rows.csv": ("file", b"1,2\n"), "rows-link.csv": ("file", b"1,2\n"),
        "train.py": ("file", b"print('x')\n")}


def test_a_folder_symlink_outside_or_a_loop_is_refused(tmp_path, sentinel):
    source = write_script(tmp_path / "src", "train.py", "print('x')\n")
    (source / "host").symlink_to(sentinel)
    with pytest.raises(UserInputError, match=r"host.* points outside"):
        snapshot_files(source)
    (source / "host").unlink()
    (source / "sub").mkdir()
    (source / "sub" / "loop").symlink_to("..")
    with pytest.raises(UserInputError, match=r"sub/loop.* loop"):
        snapshot_files(source)


def test_a_source_symlink_to_etc_passwd_fails_the_submission_with_exit_2_and_one_line(
        amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('x')\n")
    (source / "passwd").symlink_to("/etc/passwd")

    completed = subprocess.run([*AMLOCAL, "run", str(source), "--script", "train.py",
                                "--executor", "process"], capture_output=True, text=True)

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr and len(completed.stderr.strip().splitlines()) == 1
    assert "passwd" in completed.stderr
    assert not (amlocal_home / "runs").exists() or list((amlocal_home / "runs").iterdir()) == []


@pytest.mark.parametrize("backend", ["local", "azure"])
def test_a_source_symlink_to_etc_passwd_never_reaches_a_snapshot_on_either_backend(
        amlocal_home, tmp_path, monkeypatch, backend):
    # --backend azure takes the same snapshot_files before azureml-core (which would follow the
    # link and upload /etc/passwd) sees the folder; the dry run stops there too.
    monkeypatch.chdir(tmp_path)
    source = write_script(tmp_path / "src", "train.py", "print('x')\n")
    (source / "passwd").symlink_to("/etc/passwd")
    options = (["--backend", "azure", "--compute", "gpu-cluster", "--dry-run"] if backend == "azure"
               else ["--executor", "process"])

    result = invoke("run", source, "--script", "train.py", *options)

    assert result.exit_code == 2 and "points outside it, to /etc/passwd" in result.output


# -- downloads -------------------------------------------------------------------------------------

def test_downloading_a_run_whose_outputs_hold_symlinks_writes_only_into_the_folder(
        amlocal_home, tmp_path, sentinel):
    source = write_script(tmp_path / "src", "train.py", """
import os, sys
with open("outputs/model.bin", "wb") as handle:
    handle.write(b"model")
os.symlink(sys.argv[1], "outputs/to-host-folder")
os.symlink(os.path.join(sys.argv[1], "secret.txt"), "outputs/to-host-file")
os.symlink("model.bin", "outputs/alias.bin")
""")
    _completed, record = run_cli(source, "process", args=["--", str(sentinel)])
    assert record["status"] == "Completed", record["error"]
    before = listing(sentinel)
    target = tmp_path / "dl"
    target.mkdir()
    (target / "outputs").symlink_to(sentinel)  # a trap in the download folder itself

    refused = subprocess.run([*AMLOCAL, "runs", "download", record["id"], "-o", str(target)],
                             capture_output=True, text=True)

    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert listing(sentinel) == before
    (target / "outputs").unlink()
    downloaded = subprocess.run([*AMLOCAL, "runs", "download", record["id"], "-o", str(target)],
                                capture_output=True, text=True)
    assert downloaded.returncode == 0, downloaded.stderr
    downloaded_outputs = {name: kind for name, kind in listing(target).items()
                          if name.startswith("outputs")}
    assert downloaded_outputs == {"outputs": ("dir",), "outputs/model.bin": ("file", b"model")}
    assert listing(sentinel) == before


def test_a_download_name_that_would_leave_the_folder_is_refused(amlocal_home, tmp_path):
    from amlocal.backends.local import LocalBackend

    source = write_script(tmp_path / "src", "train.py", "open('outputs/m.bin', 'w').write('m')\n")
    _completed, record = run_cli(source, "process")
    handle = LocalBackend().get_run(record["id"])

    for name in ("../m.bin", "outputs/../../m.bin", "/etc/passwd", "outputs/\0"):
        with pytest.raises(UserInputError):
            handle.download_file(name, tmp_path / "dl")
    assert not (tmp_path / "m.bin").exists()


def test_an_azure_run_file_name_that_would_leave_the_download_folder_is_refused(
        amlocal_home, tmp_path, monkeypatch):
    pytest.importorskip("azureml.core")
    from contract_specs import SPECS, create_targets
    from fake_azure import FakeAzure, FakeSession, session_module
    from amlocal.backends.azure import AzureBackend

    fake = FakeAzure()
    monkeypatch.setattr(session_module, "AzureSession",
                        lambda config_path: FakeSession(fake, config_path))
    (tmp_path / "project" / ".azureml").mkdir(parents=True)
    (tmp_path / "project" / ".azureml" / "config.json").write_text(json.dumps(
        {"subscription_id": "sub-1", "resource_group": "rg-ml", "workspace_name": "ws-prod"}))
    monkeypatch.chdir(tmp_path / "project")
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    run_id = backend.submit(SPECS["minimal"](tmp_path)).id
    fake.statuses[run_id] = ["Completed"]
    fake.files[run_id] = {"outputs/model.npz": b"weights", "outputs/../../escaped.txt": b"x"}

    result = invoke("runs", "download", run_id, "-o", tmp_path / "dl")

    assert result.exit_code == 2 and "escaped.txt" in result.output
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "dl").exists()


def test_a_model_download_never_writes_through_a_link_in_the_download_folder(amlocal_home,
                                                                            tmp_path, sentinel):
    from amlocal.backends.history.models import ModelRegistry

    (tmp_path / "model" / "outputs").mkdir(parents=True)
    (tmp_path / "model" / "outputs" / "weights.bin").write_bytes(b"weights")
    registry = ModelRegistry(RunStore())
    registry.register("m", tmp_path / "model" / "outputs")
    target = tmp_path / "dl"
    target.mkdir()
    (target / "outputs").symlink_to(sentinel)
    before = listing(sentinel)

    result = invoke("models", "download", "m", "-o", target)

    assert result.exit_code == 2, result.output
    assert listing(sentinel) == before
    (target / "outputs").unlink()
    assert invoke("models", "download", "m", "-o", target).exit_code == 0
    assert listing(target) == {"outputs": ("dir",), "outputs/weights.bin": ("file", b"weights")}


# -- every route at once ----------------------------------------------------------------------------

EVERY_ROUTE = """
import json, os, socket, sys
from azureml.core import Run
host = sys.argv[1]
run = Run.get_context()
with open("outputs/model.bin", "wb") as handle:
    handle.write(b"model")
os.symlink(host, "outputs/link")
os.symlink(host + "/secret.txt", "outputs/secret-link.txt")
os.link("outputs/model.bin", "outputs/model-hard.bin")
os.mkfifo("outputs/pipe")
socket.socket(socket.AF_UNIX).bind("outputs/sock")
with open("data.txt", "w") as handle:
    handle.write("run data\\n")
run.upload_file("outputs/link/via-link.txt", "data.txt")
run.upload_file("outputs/secret-link.txt", "data.txt")
with open(os.environ["AMLOCAL_TELEMETRY_FILE"], "a") as telemetry:
    for name in ("../../outputs/model.bin", "../../../../../sentinel/p.txt", host + "/abs.txt"):
        telemetry.write(json.dumps({"kind": "upload", "name": name}) + "\\n")
    telemetry.write(json.dumps({"kind": "child", "run": "../../escape"}) + "\\n")
print("tried every route", flush=True)
"""


@pytest.mark.docker
def test_a_docker_run_that_tries_every_route_creates_nothing_outside_its_run_folder(
        amlocal_home, docker_client, tmp_path, sentinel):
    source = write_script(tmp_path / "src", "train.py", EVERY_ROUTE)
    before = listing(sentinel)
    home_before = sorted(os.listdir(amlocal_home)) if amlocal_home.exists() else None

    _completed, record = run_cli(source, "docker", args=["--", str(sentinel)], timeout=180)

    assert listing(sentinel) == before
    assert sorted(os.listdir(tmp_path)) == ["amlocal-home", "sentinel", "src"]
    assert outside_entries(amlocal_home, record["id"]) == []
    assert home_before is None or sorted(os.listdir(amlocal_home)) == home_before
    assert record["status"] == "Completed", record["error"]
    files = last_json(invoke("runs", "files", record["id"], "--json"))
    outputs = [name for name in files if name.startswith("outputs/")]
    # An upload onto a link's name replaces the link (the script could have done so itself).
    assert outputs == ["outputs/model-hard.bin", "outputs/model.bin", "outputs/secret-link.txt"]
    kept = listing(Path(record["run_dir"]) / "outputs")
    assert kept["link"] == ("link", str(sentinel))
    assert kept["secret-link.txt"] == ("file", b"run data\n")
    assert kept["pipe"] == kept["sock"] == ("special",)
