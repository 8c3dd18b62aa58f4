"""Tests for source snapshots (backends/history/snapshot.py), taken as Azure ML v1 takes them."""

import os

import pytest

from amlocal.backends.history import snapshot
from amlocal.backends.history.snapshot import copy_working_directory, snapshot_files, take_snapshot
from amlocal.errors import UserInputError


def make_tree(root, files):
    """Write {relative path: text} under root; return root."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def listed(source):
    return sorted(name for name, _size in snapshot_files(source))


def tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


@pytest.fixture(autouse=True)
def no_file_limit_override(monkeypatch):
    monkeypatch.delenv("AML_SNAPSHOT_NO_FILE_LIMIT", raising=False)


# -- what is left out --------------------------------------------------------------------------

def test_without_ignore_files_every_file_is_taken_with_its_size(tmp_path):
    make_tree(tmp_path, {"train.py": "print(1)\n", "lib/util.py": "x = 1\n", "empty.txt": ""})

    assert sorted(snapshot_files(tmp_path)) == [
        ("empty.txt", 0), ("lib/util.py", 6), ("train.py", 9)]


def test_amlignore_wins_over_gitignore(tmp_path):
    make_tree(tmp_path, {".amlignore": "*.csv\n", ".gitignore": "*.txt\n",
                         "train.py": "", "data.csv": "", "notes.txt": ""})

    assert listed(tmp_path) == [".amlignore", ".gitignore", "notes.txt", "train.py"]


def test_an_empty_amlignore_still_wins_over_gitignore(tmp_path):
    make_tree(tmp_path, {".amlignore": "", ".gitignore": "*.txt\n", "notes.txt": ""})

    assert listed(tmp_path) == [".amlignore", ".gitignore", "notes.txt"]


def test_gitignore_is_used_when_there_is_no_amlignore(tmp_path):
    make_tree(tmp_path, {".gitignore": "*.txt\n# a comment\n\n", "train.py": "",
                         "notes.txt": "", "sub/more.txt": ""})

    assert listed(tmp_path) == [".gitignore", "train.py"]


def test_a_directory_pattern_prunes_the_whole_folder(tmp_path):
    make_tree(tmp_path, {".amlignore": "data/\n", "train.py": "",
                         "data/a.bin": "", "data/deep/b.bin": "", "sub/data/c.bin": "",
                         "notes/data": "a file named like the folder is kept"})

    assert listed(tmp_path) == [".amlignore", "notes/data", "train.py"]


def test_a_file_inside_a_pruned_folder_cannot_be_negated_back(tmp_path):
    # As in git: once a folder is excluded, nothing below it is looked at.
    make_tree(tmp_path, {".amlignore": "data/\n!data/keep.txt\n", "data/keep.txt": "", "a.py": ""})

    assert listed(tmp_path) == [".amlignore", "a.py"]


def test_negation_patterns_bring_files_back(tmp_path):
    make_tree(tmp_path, {".amlignore": "*.log\n!important.log\n", "run.log": "", "important.log": "",
                         "sub/debug.log": "", "sub/important.log": "", "train.py": ""})

    assert listed(tmp_path) == [".amlignore", "important.log", "sub/important.log", "train.py"]


def test_anchored_patterns_apply_to_the_top_folder_only(tmp_path):
    make_tree(tmp_path, {".amlignore": "/build\n", "build/out.o": "", "src/build/keep.py": ""})

    assert listed(tmp_path) == [".amlignore", "src/build/keep.py"]


@pytest.mark.parametrize("ignore_files", [{}, {".amlignore": "!.git/\n"}])
def test_git_folders_are_always_left_out(tmp_path, ignore_files):
    make_tree(tmp_path, {**ignore_files, "train.py": "", ".git/HEAD": "ref: main\n",
                         ".git/objects/ab/cdef": "", "vendor/lib/.git/config": "",
                         ".github/workflows/ci.yml": ""})

    assert listed(tmp_path) == sorted([*ignore_files, ".github/workflows/ci.yml", "train.py"])


# -- Azure ML's limits -------------------------------------------------------------------------

def test_the_size_limit_is_azure_mls_300_mb_with_its_message(tmp_path):
    # A sparse file: 300 MB + 1 byte in size, next to nothing on disk.
    with open(tmp_path / "big.bin", "wb") as handle:
        handle.truncate(300 * 2**20 + 1)

    with pytest.raises(UserInputError, match=r"^Your total snapshot size exceeds the limit of "
                                             r"300\.0 MB \(300\.0 MB in .*amlignore\)$"):
        snapshot_files(tmp_path)


def test_size_limit_counts_taken_files_only_and_allows_exactly_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "SNAPSHOT_MAX_SIZE_BYTES", 2**20)
    make_tree(tmp_path, {".amlignore": "data/\n", "data/huge.bin": "x" * 2**21})
    (tmp_path / "model.bin").write_bytes(b"x" * (2**20 - len("data/\n")))

    assert listed(tmp_path) == [".amlignore", "model.bin"]

    with open(tmp_path / "model.bin", "ab") as handle:
        handle.write(b"x")  # one byte over
    with pytest.raises(UserInputError, match=r"^Your total snapshot size exceeds the limit of 1\.0 MB"):
        snapshot_files(tmp_path)


def files_named(count):
    return {f"f{index:02d}.txt": "" for index in range(count)}


def test_the_file_limit_is_azure_mls_2000():
    assert snapshot.SNAPSHOT_MAX_FILES == 2000


def test_the_file_limit_allows_exactly_the_limit_and_fails_above_it(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "SNAPSHOT_MAX_FILES", 5)
    make_tree(tmp_path, files_named(5))

    assert len(snapshot_files(tmp_path)) == 5

    make_tree(tmp_path, {"one-more.txt": ""})
    with pytest.raises(UserInputError, match=r"has 6 files, over the limit of 5 .*"
                                             r"AML_SNAPSHOT_NO_FILE_LIMIT=1"):
        snapshot_files(tmp_path)


def test_aml_snapshot_no_file_limit_lifts_the_file_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "SNAPSHOT_MAX_FILES", 5)
    monkeypatch.setenv("AML_SNAPSHOT_NO_FILE_LIMIT", "1")
    make_tree(tmp_path, files_named(6))

    assert len(snapshot_files(tmp_path)) == 6


def test_aml_snapshot_no_file_limit_does_not_lift_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "SNAPSHOT_MAX_SIZE_BYTES", 10)
    monkeypatch.setenv("AML_SNAPSHOT_NO_FILE_LIMIT", "1")
    make_tree(tmp_path, {"a.txt": "x" * 11})

    with pytest.raises(UserInputError, match="snapshot size exceeds"):
        snapshot_files(tmp_path)


# -- copying -----------------------------------------------------------------------------------

def test_take_snapshot_copies_exactly_the_listed_files(tmp_path):
    source = make_tree(tmp_path / "src", {".amlignore": "*.ckpt\n", "train.py": "print(1)\n",
                                          "lib/util.py": "x = 1\n", "model.ckpt": "big",
                                          ".git/HEAD": "ref"})
    destination = tmp_path / "runs" / "r1" / "snapshot"

    take_snapshot(source, destination)

    assert tree(destination) == listed(source) == [".amlignore", "lib/util.py", "train.py"]
    assert (destination / "lib" / "util.py").read_text() == "x = 1\n"


def test_take_snapshot_copies_a_given_file_list_only(tmp_path):
    source = make_tree(tmp_path / "src", {"train.py": "a", "lib/util.py": "b", "extra.txt": "c"})
    destination = tmp_path / "snapshot"

    take_snapshot(source, destination, files=[("lib/util.py", 1), ("train.py", 1)])

    assert tree(destination) == ["lib/util.py", "train.py"]


def test_take_snapshot_refuses_an_existing_destination(tmp_path):
    source = make_tree(tmp_path / "src", {"train.py": ""})
    (tmp_path / "snapshot").mkdir()

    with pytest.raises(FileExistsError):
        take_snapshot(source, tmp_path / "snapshot")


def test_copy_working_directory_leaves_out_top_level_outputs_and_logs_only(tmp_path):
    snapshot_dir = make_tree(tmp_path / "snapshot", {
        "train.py": "print(1)\n", "outputs/old-model.pt": "", "logs/old.log": "",
        "outputs.txt": "", "sub/outputs/keep.pt": "", "sub/logs/keep.log": ""})
    working_dir = tmp_path / "wd"

    copy_working_directory(snapshot_dir, working_dir)

    assert tree(working_dir) == ["outputs.txt", "sub/logs/keep.log", "sub/outputs/keep.pt", "train.py"]
    assert (working_dir / "train.py").read_text() == "print(1)\n"
    assert tree(snapshot_dir) == sorted(["logs/old.log", "outputs.txt", "outputs/old-model.pt",
                                         "sub/logs/keep.log", "sub/outputs/keep.pt", "train.py"])


def test_copy_working_directory_keeps_symlinks_as_links(tmp_path):
    snapshot_dir = make_tree(tmp_path / "snapshot", {"data/real.csv": "1,2\n"})
    os.symlink("data/real.csv", snapshot_dir / "link.csv")

    copy_working_directory(snapshot_dir, tmp_path / "wd")

    assert os.readlink(tmp_path / "wd" / "link.csv") == "data/real.csv"
