"""Real faults, not mocks: resource bombs under an address-space limit, two runs of a stage
at once (one paused inside its write with SIGSTOP), a full disk (RLIMIT_FSIZE), a
read-only project, and the silent or unclear inputs of the same classes. Each stops with
exit code 2 and one line, within seconds, and loses nothing."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, venv_env

PEFTPIPE = str(Path(sys.executable).parent / "peftpipe")
MEMORY = 3 << 30  # an address-space limit that torch, pandas and pyarrow still load under
NER_ROWS = [{"tokens": ["alice", "visited", "paris"], "tags": ["B-PER", "O", "B-LOC"]},
            {"tokens": ["bob", "is", "here"], "tags": ["B-PER", "O", "O"]}] * 20


def limited(memory: int | None = MEMORY, file_size: int | None = None, user: int | None = None):
    def apply() -> None:
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        if user is not None:
            os.setgid(user)
            os.setuid(user)
    return apply


def run(args: list[str], cwd: Path, timeout: float = 60, **limits) -> subprocess.CompletedProcess:
    env = {**venv_env(), "HOME": str(cwd)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limited(**limits))


def one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one `error:` line on stderr, no traceback; the line holds each needle."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def project(tmp_path: Path, contents: dict[str, bytes | str], **data) -> Path:
    """A project folder: the default params with local data files, the stages' own dvc.yaml."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    params = yaml.load((ROOT / "params.yaml").read_text())
    params["data"].update({"source": "local", "name": None, "files": {"train": next(iter(contents))}, **data})
    for name, content in contents.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with open(tmp_path / "params.yaml", "w") as fh:
        yaml.dump(params, fh)
    return tmp_path


def stage(name: str) -> list[str]:
    return [sys.executable, str(ROOT / "stages" / f"{name}.py"), "--raw", "data/raw"]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# --------------------------------------------------------------------------- resource bombs


def alias_bomb(levels: int = 9) -> str:
    lines = ["peft:", "  method: lora", "  options:", '    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    for i in range(levels):
        name = f"l{i}"
        lines.append(f"    {name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = name
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, needle", [
    (alias_bomb(), "once its YAML aliases are expanded (limit PARAMS_VALUES)"),
    ("seed: &s [1, *s]\n", "a YAML alias refers to a value that holds it"),
    ("a:\n" + "".join("  " * i + f" b{i}:\n" for i in range(1, 40)) + "  " * 40 + " c: 1\n", "limit PARAMS_DEPTH"),
    ("[" * 50_000 + "]" * 50_000 + "\n", "limit PARAMS_DEPTH"),
    ("seed: 1\n" + "# padding\n" * 200_000, "limit PARAMS_FILE_BYTES"),
], ids=["billion laughs", "alias loop", "nested 40 deep", "nested 50,000 deep", "2 MB"])
def test_a_params_bomb_stops_check_and_recipe_in_one_line_with_bounded_memory(tmp_path, text, needle):
    (tmp_path / "params.yaml").write_text(text)
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    before = (tmp_path / "params.yaml").read_bytes()
    for args in (["check"], ["recipe", "conll-ner-cpu", "--drop-edits"]):
        started = time.monotonic()
        one_line(run([PEFTPIPE, *args], tmp_path), "params.yaml", needle)
        assert time.monotonic() - started < 30
    assert (tmp_path / "params.yaml").read_bytes() == before and not (tmp_path / "params.yaml.bak").exists()


def _bomb(kind: str, size: int = 100 << 20) -> bytes:
    zeros = b"\0" * size
    if kind == "gz":
        return gzip.compress(zeros, 1)
    if kind == "bz2":
        return bz2.compress(zeros, 1)
    if kind == "xz":
        return lzma.compress(zeros, preset=0)
    with tempfile.SpooledTemporaryFile() as buffer:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("train.jsonl", zeros)
        buffer.seek(0)
        return buffer.read()


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zip"])
def test_a_compression_bomb_stops_download_before_it_fills_the_memory(tmp_path, kind):
    name = f"inputs/train.jsonl.{kind}"
    project(tmp_path, {name: _bomb(kind)})
    result = run(stage("download"), tmp_path, memory=2 << 30)
    one_line(result, name, "limit DECOMPRESSION_RATIO")
    assert not (tmp_path / "data/raw").exists()


def test_a_zip_of_several_files_and_a_good_compressed_file(tmp_path):
    buffer = tmp_path / "two.zip"
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.jsonl", jsonl(NER_ROWS))
        archive.writestr("test.jsonl", jsonl(NER_ROWS))
    project(tmp_path, {"inputs/train.jsonl.zip": buffer.read_bytes()})
    one_line(run(stage("download"), tmp_path), "a zip of 2 files (train.jsonl, test.jsonl)")
    project(tmp_path, {"inputs/train.jsonl.xz": lzma.compress(jsonl(NER_ROWS).encode())})
    result = run(stage("download"), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_an_error_about_thousands_of_labels_is_one_short_line(tmp_path):
    rows = [{"text": f"text {i}", "label": f"class{i}"} for i in range(5000)]
    project(tmp_path, {"inputs/train.jsonl": jsonl(rows), "inputs/test.jsonl": jsonl(
        [{"text": "x", "label": f"other{i}"} for i in range(5000)])},
            labels=["class0", "class1"], files={"train": "inputs/train.jsonl", "test": "inputs/test.jsonl"})
    params = (tmp_path / "params.yaml").read_text().replace("kind: token_classification",
                                                            "kind: sequence_classification")
    (tmp_path / "params.yaml").write_text(params)
    line = one_line(run(stage("download"), tmp_path), "not in the label set", "more")
    assert len(line) < 2200


# --------------------------------------------------------------------------- two runs at once


PAUSE_IN_WRITE = '''
import contextlib, os, signal
import peftpipe.io as io
_real = io.atomic_path


@contextlib.contextmanager
def paused(target, **kw):
    with _real(target, **kw) as tmp:
        if kw.get("directory"):
            os.kill(os.getpid(), signal.SIGSTOP)  # paused inside its write, until the test sends SIGCONT
        yield tmp


io.atomic_path = paused
'''


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_second_run_of_a_stage_stops_naming_the_first_which_still_finishes_whole(tmp_path):
    project(tmp_path, {"inputs/train.jsonl": jsonl(NER_ROWS)})
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_IN_WRITE)
    env = {**venv_env(), "PYTHONPATH": str(hook)}
    first = subprocess.Popen(stage("download"), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not stopped(first.pid):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = run(stage("download"), tmp_path)
        one_line(second, "stage download: another run is writing its outputs", f"pid {first.pid}")
        live = list((tmp_path / "data").glob(".raw.tmp-*"))
        assert live, "the paused run's temporary output must not be swept by the second run"
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err[-2000:]
    assert sorted(p.name for p in (tmp_path / "data/raw").iterdir()) == ["meta.json", "train.parquet"]
    assert run(stage("download"), tmp_path).returncode == 0  # and the lock is free again


def test_a_sweep_removes_only_the_temporaries_of_runs_that_are_gone(tmp_path):
    project(tmp_path, {"inputs/train.jsonl": jsonl(NER_ROWS)})
    alive = subprocess.Popen(["sleep", "60"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        (tmp_path / "data").mkdir()
        live_tmp = tmp_path / f"data/.raw.tmp-{alive.pid}-abcd1234"
        dead_tmp = tmp_path / f"data/.raw.tmp-{gone.pid}-defg5678"
        # A user's own files whose names merely look like temporaries are not ours to delete.
        mine = [tmp_path / "data/.raw.tmp-notes", tmp_path / f"data/.raw.tmp-{gone.pid}-my-notes.txt"]
        live_tmp.mkdir()
        dead_tmp.mkdir()
        for path in mine:
            path.write_text("my notes")
        assert run(stage("download"), tmp_path).returncode == 0
        assert live_tmp.exists() and not dead_tmp.exists()
        assert all(path.read_text() == "my notes" for path in mine)
        # A killed run's temporary goes when the stage next starts, even if that run fails early.
        dead_tmp.mkdir()
        (tmp_path / "inputs/train.jsonl").unlink()
        assert run(stage("download"), tmp_path).returncode == 2 and not dead_tmp.exists()
    finally:
        alive.kill()
        alive.wait()


# --------------------------------------------------------------------------- write faults


GOOD_BACKUP = "# my good backup\nseed: 7\n"


@pytest.mark.parametrize("command", [["recipe", "conll-ner-cpu"], ["init", "inputs/news.csv"]])
def test_a_full_disk_is_one_line_and_never_replaces_a_good_backup(tmp_path, command):
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "params.yaml.bak").write_text(GOOD_BACKUP)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs/news.csv").write_text("text,label\n" + "".join(
        f"{w} story {i},{['World', 'Sports'][i % 2]}\n" for i, w in enumerate(["alice", "bob"] * 20)))
    before = (tmp_path / "params.yaml").read_text()
    result = run([PEFTPIPE, *command], tmp_path, file_size=2048)  # params.yaml is about 7 KB
    one_line(result, "params.yaml", "(EFBIG)")
    assert (tmp_path / "params.yaml.bak").read_text() == GOOD_BACKUP
    assert (tmp_path / "params.yaml").read_text() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def read_only(folder: Path, args: list[str]) -> list[str]:
    """``args`` run with ``folder`` read-only: a read-only bind mount in a mount namespace of
    their own where the system allows it (root: file modes do not stop root), else file modes."""
    if os.getuid() == 0:
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("root without mount namespaces: cannot make a folder read-only for root")
        script = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && cd "$PWD" && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, "sh", *args]
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return args


def read_only_line(result) -> str:
    line = one_line(result)
    assert "(EROFS)" in line or "(EACCES)" in line, line
    return line


def test_a_read_only_project_is_one_line_and_nothing_changes(tmp_path):
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    params = (ROOT / "params.yaml").read_text().replace("seed: 42", "seed: 43")  # an edit to drop
    (tmp_path / "params.yaml").write_text(params)
    project(tmp_path / "p2", {"inputs/train.jsonl": jsonl(NER_ROWS)})
    try:
        line = read_only_line(run(read_only(tmp_path, [PEFTPIPE, "recipe", "conll-ner-cpu", "--drop-edits"]),
                                  tmp_path))
        assert "params.yaml" in line
        assert (tmp_path / "params.yaml").read_text() == params and not (tmp_path / "params.yaml.bak").exists()
        line = read_only_line(run(read_only(tmp_path, stage("download")), tmp_path / "p2"))
        assert "data" in line and not (tmp_path / "p2/data").exists()
    finally:
        for path in [tmp_path, *tmp_path.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


# --------------------------------------------------------------------------- silent and unclear inputs


TOPIC_CSV = "text,label\n" + "".join(f"{w} story {i},{['World', 'Sports'][i % 2]}\n"
                                     for i, w in enumerate(["alice", "bob", "paris", "acme"] * 10))
TOPIC = {"kind": "sequence_classification"}


def classification(tmp_path: Path, name: str, content: str, **data) -> Path:
    project(tmp_path, {name: content}, **data)
    text = (tmp_path / "params.yaml").read_text().replace("kind: token_classification", "kind: sequence_classification")
    (tmp_path / "params.yaml").write_text(text)
    return tmp_path


def test_an_id_among_class_names_stops_in_a_csv_as_in_json(tmp_path):
    classification(tmp_path, "inputs/train.csv", TOPIC_CSV + "one more story,1\n")
    one_line(run(stage("download"), tmp_path), "row 40: label '1' is a number, but other rows give names")


def test_a_wrong_field_count_suggests_the_separator_init_would_find(tmp_path):
    text = "text;label\n" + "".join(f"{w} story, part {i};{['World', 'Sports'][i % 2]}\n"
                                    for i, w in enumerate(["alice", "bob"] * 10))
    classification(tmp_path, "inputs/train.csv", text)
    one_line(run(stage("download"), tmp_path), "expected 1 fields, saw 2", "set data.separator: ';'")


def test_a_url_where_a_path_belongs_says_it_takes_local_paths(tmp_path):
    classification(tmp_path, "inputs/train.csv", TOPIC_CSV)
    text = (tmp_path / "params.yaml").read_text().replace("train: inputs/train.csv",
                                                          "train: https://example.com/train.csv")
    (tmp_path / "params.yaml").write_text(text)
    one_line(run([PEFTPIPE, "check"], tmp_path), "data.files.train", "expected a local path", "data.source: hub")


def test_a_symbolic_link_loop_is_named(tmp_path):
    classification(tmp_path, "inputs/real.csv", TOPIC_CSV)
    (tmp_path / "inputs/train.csv").symlink_to("train.csv")
    text = (tmp_path / "params.yaml").read_text().replace("inputs/real.csv", "inputs/train.csv")
    (tmp_path / "params.yaml").write_text(text)
    one_line(run(stage("download"), tmp_path), "inputs/train.csv", "link loop")


def test_a_nul_byte_in_a_text_is_named(tmp_path):
    classification(tmp_path, "inputs/train.jsonl", jsonl([{"text": "good\u0000text", "label": "a"},
                                                          {"text": "other", "label": "b"}] * 5))
    one_line(run(stage("download"), tmp_path), "row 0", "NUL byte")


def test_lower_case_tags_are_read_and_said(tmp_path):
    rows = [{"tokens": ["alice", "in", "paris"], "tags": ["b-per", "o", "B-LOC"]}] * 10
    project(tmp_path, {"inputs/train.jsonl": jsonl(rows)})
    result = run(stage("download"), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tags of 10 rows written in lower case" in result.stdout


def test_init_is_told_the_text_column_when_it_holds_numbers(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs/codes.csv").write_text("code,label\n" + "".join(
        f"{1000 + i},{['a', 'b'][i % 2]}\n" for i in range(40)))
    one_line(run([PEFTPIPE, "init", "inputs/codes.csv"], tmp_path), "no text column")
    result = run([PEFTPIPE, "init", "inputs/codes.csv", "--text", "code", "--label", "label"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "text column: 'code'" in result.stdout
    one_line(run([PEFTPIPE, "init", "inputs/codes.csv", "--text", "nope"], tmp_path), "--text 'nope': no such column")


@pytest.mark.parametrize("section, expect", [
    ("eval: 5\n", "eval: expected a mapping of its keys"),
    ("train: []\n", "train: expected a mapping of its keys"),
])
def test_an_empty_or_wrong_section_is_one_line_never_a_dvc_failure_or_a_class_name(tmp_path, section, expect):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(section)
    line = one_line(run([PEFTPIPE, "check"], tmp_path), expect)
    assert "Params" not in line


def test_an_empty_section_means_its_defaults(tmp_path):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text("train: {}\neval:\nexport:\n")
    result = run([PEFTPIPE, "check"], tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_line_longer_than_the_limit_stops_naming_it(tmp_path, monkeypatch):
    from peftpipe import limits
    from peftpipe.errors import DataError
    from peftpipe.sources import read_text

    monkeypatch.setattr(limits, "LINE_CHARS", 50)
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "short", "label": "a"}\n' + '{"text": "' + "x" * 60 + '", "label": "b"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 holds 86 characters, over the 50 one line may have "
                                        r"\(limit LINE_CHARS\)"):
        read_text(path, "utf-8")
    path.write_text('{"text": "short", "label": "a"}\n' * 3)
    assert read_text(path, "utf-8").count("\n") == 3
