"""A few hundred generated bad requests through the command line, each refused cleanly.

Names (experiment, input, compute, model, tag keys and values, environment variables), paths
(source folder, script, --input, -o targets: odd bytes, `..`, absolute, very long), sweep
expressions, and numbers, each made bad by one known ingredient and sent through the real CLI
against a real run history. For every one: a one-line error on stderr, a non-zero exit code, no
traceback, nothing written outside $AMLOCAL_HOME (the working folder and $HOME are compared
before and after), no run half-created, and the history still readable. A few valid requests
with odd but legal values go to real (process executor) runs among them.

The generator is seeded (FUZZ_SEED) so that a failure reproduces: its id names the case.
"""

import json
import os
import random
from pathlib import Path

from click.testing import CliRunner

from amlocal.cli.main import cli, run as run_command
from conftest import write_script

FUZZ_SEED = 20261201
CASES_PER_KIND = 30

TRAIN = """
import os
from azureml.core.run import Run
Run.get_context().log("loss", 0.5)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
"""

# Fragments that make a name bad: bytes that are not UTF-8 (as argv delivers them), control
# characters, separators, shell and format characters, a right-to-left override, an emoji.
ODD = ["\udcff", "\udcfe\udcfd", "\x01", "\x1b[31m", "\n", "\t", " ", "../", "/", "\u202e",
       "\U0001f600", "%s", "$HOME", "*", "'", '"', "\\", "\x7f", "\x00"]
# Those of them that no tag may hold (a tag may hold spaces, quotes, emoji, ...).
UNPRINTABLE = ["\udcff", "\udcfe\udcfd", "\x01", "\x1b[31m", "\n", "\t", "\x7f", "\x00"]
HUGE_NUMBERS = ["1" + "0" * 20, "9" * 40, "1" + "0" * 400]


def odd_text(rng, base, fragments=ODD):
    """`base` with one to three odd fragments put in, sometimes made very long."""
    text = base
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(fragments) + text[at:]
    if rng.random() < 0.15:
        text *= 300
    return text


def bad_path(rng, folder):
    """A path that names nothing: odd bytes, `..`, absolute, or a component too long."""
    return rng.choice([
        lambda: str(folder / odd_text(rng, "missing")),
        lambda: str(folder / ".." / ".." / odd_text(rng, "nowhere")),
        lambda: "/" + odd_text(rng, "absent") + "/x",
        lambda: str(folder / ("n" * rng.randint(256, 5000))),
        lambda: str(folder / "file.txt" / "under-a-file"),
    ])()


def bad_number(rng, allow_floats=False):
    values = [*HUGE_NUMBERS, "-" + rng.choice(HUGE_NUMBERS), "abc", "", "0x10",
              "\udcff", " ", "nan", "inf", "-inf"]
    if not allow_floats:
        values += ["1.5", "1e3", "2.0"]
    return rng.choice(values)


def bad_expression(rng):
    a, k = rng.randint(-5, 5), rng.randint(1, 9)
    return rng.choice([
        f"lr=quniform({a},{a + k},0)", f"lr=qloguniform({a},{a + k},-{k})",
        f"lr=uniform({a},{a})", f"lr=uniform({a},1e999)", f"lr=uniform(-1e999,{a})",
        f"lr=loguniform({a},{800 + k})", f"lr=normal({a},-{k})", f"lr=lognormal({700 + k},1)",
        "lr=choice()", "lr=choice([])", f"lr=randint(-{k})", f"lr=uniform({a})",
        f"lr=quniform({a},{a + k},{k},{k})", f"lr=nosuch({a})", f"lr=choice({a},1e999)",
        f"lr=__import__('os').system('touch {k}')", "lr=choice(" * 60, "lr=",
        "=choice(1)", "lr" + odd_text(rng, "") + "=choice(1)",
        "lr=" + "".join(rng.choice("()[]{},.=+-*/'\"") for _ in range(rng.randint(1, 20))),
    ])


class Fuzz:
    """Builds the cases: (args, kind); every case carries one known-bad ingredient."""

    def __init__(self, rng, tmp_path, source, data_file, run_id):
        self.rng, self.tmp, self.source, self.data, self.run_id = rng, tmp_path, source, data_file, run_id

    def run_args(self, *extra):
        return ["run", self.source, "--script", "train.py", "--executor", "process", *extra]

    def sweep_args(self, *extra, param="lr=uniform(0,1)"):
        return ["sweep", self.source, "--script", "train.py", "--executor", "process",
                "--param", param, "--metric", "loss", "--goal", "minimize",
                "--max-total-runs", "2", *extra]

    def cases(self):
        rng = self.rng
        kinds = {
            "experiment": lambda: self.run_args("--experiment", rng.choice(
                [odd_text(rng, "exp"), "e" * rng.randint(256, 3000), "-leading", "_leading", ""])),
            "input name": lambda: self.run_args("--input", f"{odd_text(rng, 'data')}={self.data}"),
            "input path": lambda: self.run_args("--input", f"data={bad_path(rng, self.tmp)}"),
            "compute": lambda: rng.choice([
                self.run_args("--compute", odd_text(rng, "cpu")),
                ["compute", "create", odd_text(rng, "cpu"), "--vm-size", "STANDARD_D1_V2",
                 "--max-nodes", "1"],
                ["compute", "create", "cpu2", "--vm-size", odd_text(rng, "STANDARD_D1_V2"),
                 "--max-nodes", "1"]]),
            "model name": lambda: ["models", "register", "--name", odd_text(rng, "model"),
                                   "--from-path", self.data],
            "tag": lambda: rng.choice([
                self.run_args("--tag", f"{odd_text(rng, 'key', UNPRINTABLE)}=value"),
                self.run_args("--tag", f"key={odd_text(rng, 'value', UNPRINTABLE)}"),
                self.run_args("--tag", "k" * rng.randint(101, 500) + "=v"),
                self.run_args("--tag", "k=" + "v" * rng.randint(1001, 5000)),
                self.run_args("--tag", rng.choice(["=v", "novalue", ""])),
                ["models", "register", "--name", "m", "--from-path", self.data,
                 rng.choice(["--tag", "--property"]),
                 rng.choice([f"k={odd_text(rng, 'v', UNPRINTABLE)}",
                             f"{odd_text(rng, 'k', UNPRINTABLE)}=v"])]]),
            "source and script": lambda: rng.choice([
                ["run", bad_path(rng, self.tmp), "--script", "train.py", "--executor", "process"],
                self.run_args()[:3] + [rng.choice(["../train.py", "/etc/passwd", "../../" * 5 + "etc/hostname",
                                                   odd_text(rng, "train.py"), "t" * 300 + ".py"])]
                + ["--executor", "process"]]),
            "output target": lambda: rng.choice([
                ["runs", "download", self.run_id, "-o", rng.choice(
                    [self.data, str(self.tmp / "file.txt" / "sub"),
                     str(self.tmp / "out" / ("o" * rng.randint(256, 2000)))])],
                ["runs", "report", self.run_id, "-o", rng.choice(
                    [self.data, str(self.tmp / "file.txt" / "sub"),
                     str(self.tmp / "rep" / ("r" * rng.randint(256, 2000)))])],
                ["runs", "download", odd_text(rng, self.run_id), "-o", str(self.tmp / "dl")],
                ["runs", rng.choice(["show", "files", "logs", "metrics", "cancel"]),
                 rng.choice([odd_text(rng, "Default_1_deadbeef"), "../" * 8 + "etc", "x" * 5000])],
                ["runs", "compare", self.run_id, "--metric", "loss", "-o", rng.choice(
                    [str(self.tmp / "chart.txt"), str(self.tmp / "file.txt" / "c.png"),
                     str(self.tmp / ("c" * rng.randint(256, 2000) + ".png")), str(self.tmp)])],
                ["models", rng.choice(["show", "download"]), odd_text(rng, "model") + ":1"]]),
            "expression": lambda: self.sweep_args(param=bad_expression(rng)),
            "number": lambda: rng.choice([
                self.run_args("--node-count", rng.choice([bad_number(rng), "0"])),
                self.run_args("--max-duration", rng.choice([bad_number(rng), "0"])),
                ["compute", "create", "cpu2", "--vm-size", "STANDARD_D1_V2", "--allow-overcommit",
                 rng.choice(["--max-nodes", "--min-nodes", "--idle-seconds-before-scaledown"]),
                 bad_number(rng)] + (["--max-nodes", "1"] if rng.random() < 0.5 else []),
                ["compute", "sizes", "--nodes", rng.choice([bad_number(rng), "0"])],
                ["runs", "list", "--limit", rng.choice([bad_number(rng), "0"])],
                ["runs", "wait", self.run_id, "--timeout",
                 rng.choice(["nan", "inf", "-1", "1e999", "abc", "\udcff"])],
                self.sweep_args(rng.choice(["--max-concurrent-runs", "--seed"]),
                                rng.choice([bad_number(rng), "-1"])),
                # More than the service's 10080 minutes is lowered to it, with a warning, as
                # azureml-train-core does: only the ones below 1 or not whole are bad.
                self.sweep_args("--max-duration-minutes", rng.choice(["0", "-1", "1.5", "abc"])),
                self.sweep_args()[:-1] + [rng.choice([bad_number(rng), "0", "1001"])]]),
        }
        if any(option.name == "env" for option in run_command.params):
            kinds["environment variable"] = lambda: self.run_args(
                "--env", f"{odd_text(rng, 'NAME')}=value")
        for kind, make in kinds.items():
            for index in range(CASES_PER_KIND):
                yield f"{kind} {index}", [str(argument) for argument in make()]


def _tree(root, home):
    """Every path under root but in $AMLOCAL_HOME, with its size and modification time."""
    found = {}
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if Path(folder, name) != home]
        for name in folders + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            found[path] = (info.st_size, info.st_mtime_ns)
    return found


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


def _history(home):
    listed = _invoke("runs", "list", "--json", "--limit", "1000")
    assert listed.exit_code == 0, listed.output
    return [record["id"] for record in json.loads(listed.stdout)], sorted(os.listdir(home / "runs"))


def test_generated_bad_requests_are_refused_cleanly(amlocal_home, tmp_path, monkeypatch):
    rng = random.Random(FUZZ_SEED)
    work, home_dir = tmp_path / "work", tmp_path / "home"
    for folder in (work, home_dir):
        folder.mkdir()
        (folder / "sentinel.txt").write_text("untouched")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home_dir))
    source = write_script(work / "src", "train.py", TRAIN)
    data_file = work / "data.txt"
    data_file.write_text("1 2 3")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    # Valid requests with odd but legal values: real runs, among the bad ones.
    valid = [["run", source, "--script", "train.py", "--executor", "process", "--experiment",
              "e" * 255, "--tag", "ключ=значение 😀", "--input", f"data={data_file}"],
             ["run", source, "--script", "train.py", "--executor", "process", "--tag", "k=",
              "--node-count", "1", "--max-duration", str(2**62)]]
    for args in valid:
        result = _invoke(*map(str, args), "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.splitlines()[-1])["status"] == "Completed"
    run_id = _history(amlocal_home)[0][0]

    cases = list(Fuzz(rng, tmp_path, source, data_file, run_id).cases())
    assert len(cases) >= 300
    failures = []
    # The working folder and $HOME are in tmp_path, beside $AMLOCAL_HOME.
    history, tree = _history(amlocal_home), _tree(tmp_path, amlocal_home)
    for label, args in cases:
        result = _invoke(*args)
        problems = []
        if result.exit_code == 0:
            problems.append("exit code 0")
        if "Traceback" in result.output or result.exception and not isinstance(result.exception,
                                                                                 SystemExit):
            problems.append(f"traceback: {result.exception!r}")
        if not (result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1):
            problems.append(f"stderr is not one error line: {result.stderr[:300]!r}")
        if _tree(tmp_path, amlocal_home) != tree:
            problems.append(f"wrote outside $AMLOCAL_HOME: {sorted(set(_tree(tmp_path, amlocal_home)) ^ set(tree))[:3]}")
            tree = _tree(tmp_path, amlocal_home)
        if _history(amlocal_home) != history:
            problems.append("changed the run history")
            history = _history(amlocal_home)
        if problems:
            failures.append(f"{label}: {args!r:.300}: {'; '.join(problems)}")
    assert not failures, f"{len(failures)} of {len(cases)} bad requests (seed {FUZZ_SEED}):\n" + \
        "\n".join(failures[:40])
