"""Shared fixtures: a tiny random-weight BERT built from a config, and tiny NER data."""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
# The package under test is this tree's src/: a copy of the tree (mutmut's mutants/) tests its
# own copy, not the editable install's. In the checkout itself both are the same folder.
sys.path.insert(0, str(ROOT / "src"))
if "peftpipe" in sys.modules and not Path(sys.modules["peftpipe"].__file__).resolve().is_relative_to(ROOT / "src"):
    for _name in [m for m in sys.modules if m == "peftpipe" or m.startswith("peftpipe.")]:
        del sys.modules[_name]  # imported from another tree before the tests started: take this one's
SHARED_CORPORA = ROOT.parent / "shared" / "corpora"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the cores (pyproject's addopts): one compute thread each, here and in
    # the stages they start, since torch's threads wait on each other whenever another process
    # takes a core (a default run beside a second worker took 14 min instead of 4).
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    # Under mutmut each mutant runs the tests that reach it and stops at the first failure: the
    # quickest go first (mutmut measured each test's time), so a mutant a unit test catches costs
    # a second, not the stage runs' half minute.
    stats = ROOT / "mutmut-stats.json"  # ROOT is mutmut's mutants/ copy when mutmut runs us
    if os.environ.get("MUTANT_UNDER_TEST") and stats.exists():
        seconds = json.loads(stats.read_text()).get("duration_by_test", {})
        items.sort(key=lambda item: seconds.get(item.nodeid, float("inf")))
        return
    # Two workers take whole files (pyproject's addopts, in collection order): the files with
    # end-to-end runs go first, so the longest (the real default's `dvc repro`) starts at once
    # instead of last, beside an idle worker. A file's tests keep their order.
    with_slow = {item.path for item in items if item.get_closest_marker("slow")}
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (item.path not in with_slow, position[id(item)]))


# Mutation runs only (TESTING.md): the serving tests' fixtures train and export tiny models
# through the real stages, 3-10 s each, which every mutant's run would repeat. With this set, a
# fixture built once by a plain run of the unmutated code (PEFTPIPE_TEST_FIXTURE_CACHE_FILL=1)
# is copied instead. A mutant then meets fixtures its own code did not build: it can only
# survive more often, never be counted caught for it. Never set for the export module's mutants
# (its fixtures are its output) nor in ordinary runs.
FIXTURE_CACHE = os.environ.get("PEFTPIPE_TEST_FIXTURE_CACHE")


def built_once(key: str, folder: Path, build) -> Path:
    """``build()`` fills ``folder``; with a fixture cache, a copy of the unmutated build instead."""
    cached = Path(FIXTURE_CACHE) / key if FIXTURE_CACHE else None
    if cached is not None and cached.is_dir():
        shutil.copytree(cached, folder, dirs_exist_ok=True, symlinks=True)
        return folder
    build()
    if cached is not None and os.environ.get("PEFTPIPE_TEST_FIXTURE_CACHE_FILL") == "1":
        shutil.copytree(folder, cached, symlinks=True)
    return folder


def peftpipe_json_reads(monkeypatch) -> list[Path]:
    """Every opening of a peftpipe.json from now on (open or Path.read_text), in a list that fills."""
    import builtins

    opened: list[Path] = []
    real_open, real_read_text = builtins.open, Path.read_text

    def recording_open(file, *args, **kwargs):
        if str(file).endswith("peftpipe.json"):
            opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    def recording_read_text(self, *args, **kwargs):
        if self.name == "peftpipe.json":
            opened.append(self)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(Path, "read_text", recording_read_text)
    return opened


WORDS = ("alice bob carol paris london berlin acme globex initech visited works at in the "
         "and met from to a city company person went saw").split()
ENTITIES = {"alice": "PER", "bob": "PER", "carol": "PER", "paris": "LOC", "london": "LOC",
            "berlin": "LOC", "acme": "ORG", "globex": "ORG", "initech": "ORG"}


def make_sentences(n: int, seed: int = 0) -> list[dict]:
    """Synthetic but consistent NER sentences: the tag follows from the word."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        tags = [("B-" + ENTITIES[t]) if t in ENTITIES else "O" for t in tokens]
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def save_random_model(folder: Path, model_class, config, tokenizer) -> Path:
    """A model of ``config``'s shape with seeded random weights, saved with its tokenizer."""
    import torch

    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and a WordPiece vocabulary, saved to a folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    if FIXTURE_CACHE:  # one fixed folder, so the cached builds that name it as their base find it
        folder = Path(FIXTURE_CACHE) / "tiny-bert"
        if folder.is_dir():
            return folder
        folder.mkdir(parents=True)
    else:
        folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ed", "##ing"]
    # Built with `tokenizers` directly: transformers 5 ignores BertTokenizerFast(vocab_file=).
    backend = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    return save_random_model(folder, BertModel, config, tokenizer)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A 2-layer Llama (decoder LLM) with random weights and a word-level tokenizer without
    a pad token, as decoder LLMs come."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = ["<unk>", "<s>", "</s>", *WORDS, "row", "news"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2)
    return save_random_model(folder, LlamaForCausalLM, config, tokenizer)


# The stage scripts in the order dvc repro runs them (run_stage runs settings before train).
STAGES = ["download", "split", "tokenize_align", "baseline", "train", "evaluate", "export"]


def write_tiny_recipe(folder: Path, model_dir: Path) -> Path:
    """Tiny synthetic NER data in folder/corpus and a params.yaml that trains the tiny model on it."""
    from ruamel.yaml import YAML

    write_jsonl(folder / "corpus" / "train.jsonl", make_sentences(120, seed=1))
    write_jsonl(folder / "corpus" / "test.jsonl", make_sentences(30, seed=2))
    yaml = YAML(typ="safe", pure=True)
    params = yaml.load((ROOT / "params.yaml").read_text())
    params["data"].update(source="local", name=None,
                          files={"train": "corpus/train.jsonl", "test": "corpus/test.jsonl"})
    params["model"].update(source="local", name=str(model_dir), max_length=32)
    params["train"].update(epochs=10, batch_size=8, learning_rate=2e-2, logging_steps=5, checkpoint_steps=20)
    params["eval"]["batch_size"] = 16
    with open(folder / "params.yaml", "w") as fh:
        yaml.dump(params, fh)
    return folder


def write_tiny_classifier(folder: Path, model_dir: Path) -> Path:
    """A two-class text classification project (people or places) for the tiny model."""
    from peftpipe.params import write_params

    rows = [{"text": f"{'alice bob' if i % 2 else 'paris london'} the city", "label": ["place", "person"][i % 2]}
            for i in range(48)]
    write_jsonl(folder / "corpus/train.jsonl", rows)
    write_jsonl(folder / "corpus/test.jsonl", rows[:12])
    write_params(folder / "params.yaml", {
        "task": {"kind": "sequence_classification"},
        "data": {"source": "local", "name": None, "files": {"train": "corpus/train.jsonl", "test": "corpus/test.jsonl"},
                 "columns": {"text": "text", "label": "label"}},
        "model": {"source": "local", "name": str(model_dir), "max_length": 16},
        "train": {"max_steps": 10, "batch_size": 16, "checkpoint_steps": 0}})
    return folder


@pytest.fixture
def tiny_project(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A project folder with params.yaml for the tiny model and local jsonl data; cwd set there."""
    write_tiny_recipe(tmp_path, tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def venv_env() -> dict:
    """The environment with this interpreter's bin folder (dvc, accelerate, peftpipe) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run_cli(args: list[str], cwd: Path) -> str:
    """Run a command line tool; fail the test with its output's tail if it fails."""
    result = subprocess.run(args, cwd=cwd, env=venv_env(), capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def ran_stages(output: str) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def git_commit(repo: Path, message: str) -> None:
    run_cli(["git", "add", "-A"], repo)
    run_cli(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def git_repo(folder: Path) -> Path:
    """``folder`` as a fresh git repository with everything in it committed."""
    run_cli(["git", "init", "-q", "-b", "main"], folder)
    run_cli(["git", "config", "user.name", "t"], folder)  # dvc exp commits too
    run_cli(["git", "config", "user.email", "t@t"], folder)
    git_commit(folder, "clone")
    return folder


def stage_args(script: str) -> list[str]:
    """The path options dvc.yaml gives stages/<script>.py (the one place they are written)."""
    import shlex

    from ruamel.yaml import YAML

    stages = YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        words = shlex.split(stage["cmd"])
        if f"stages/{script}.py" in words:
            return words[words.index(f"stages/{script}.py") + 1:]
    raise KeyError(f"no stage runs stages/{script}.py in dvc.yaml")


def module_file(name: str) -> Path | None:
    """The source file of a dotted peftpipe module or package name, or None."""
    path = ROOT / "src" / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """The peftpipe modules a file imports, anywhere in it (function-level imports too)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] == "peftpipe" and module_file(n)}


def dvc_stage_of(script: str) -> dict:
    """dvc.yaml's entry for the stage that runs stages/<script>.py."""
    from ruamel.yaml import YAML

    stages = YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())["stages"]
    return next(stage for stage in stages.values() if f"stages/{script}.py" in stage["cmd"].split())


def undeclared_reads(script: str, read: list[str], settings: dict | None = None) -> list[str]:
    """The params leaves a stage read that its dvc.yaml ``params:`` do not cover (a change to
    one would leave DVC's cached output standing). Sections in the settings stage's file
    count as declared where the stage depends on that file."""
    stage = dvc_stage_of(script)
    declared = [str(entry) for entry in stage.get("params", [])]
    if SETTINGS_FILE in stage.get("deps", []):
        declared += list(settings or {})
    return [leaf for leaf in read if not any(under(leaf, key) for key in declared)]


def under(leaf: str, key: str) -> bool:
    """Whether a params entry (``data.columns``) covers a leaf (``data.columns.tokens``)."""
    return leaf == key or leaf.startswith(key + ".")


SETTINGS_FILE = "data/train_settings.json"


def run_stage(name: str, *args: str) -> list[str] | None:
    """Run stages/<name>.py in this process (the real click command, no subprocess), with
    dvc.yaml's paths; fail if it read a param its dvc.yaml entry does not list."""
    import tempfile

    from peftpipe.stage import PARAMS_READ_ENV

    if name == "train":  # as dvc repro does: the settings stage first (what train reads of peft.*)
        run_stage("settings")
    command = runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="peftpipe_test")["main"]
    with tempfile.TemporaryDirectory() as folder:
        os.environ[PARAMS_READ_ENV] = folder
        try:
            command.main([*stage_args(name), *args], standalone_mode=False)
        finally:
            del os.environ[PARAMS_READ_ENV]
        record = Path(folder) / f"{name}.json"
        read = json.loads(record.read_text()) if record.exists() else None
    if read is None:  # the stage stopped before its body (bad params): nothing to check
        return
    settings = json.loads(Path(SETTINGS_FILE).read_text()) if Path(SETTINGS_FILE).is_file() else None
    missing = undeclared_reads(name, read, settings)
    assert not missing, f"stages/{name}.py read params dvc.yaml does not list for it: {missing}"
    return read


def copy_repo(dest: Path) -> Path:
    """The project's tracked (and untracked, not ignored) files, as a fresh clone has them."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


TOPIC_WORDS = {"people": [w for w, t in ENTITIES.items() if t == "PER"],
               "places": [w for w, t in ENTITIES.items() if t == "LOC"]}


def word_tokenizer(extra: list[str], pad: str, eos: str, template: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [pad, eos, "<unk>", *WORDS, *TOPIC_WORDS, "Label", ":", *extra]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:  # T5 style: every encoded text ends with </s>
        backend.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token=pad, eos_token=eos), vocab


@pytest.fixture(scope="session")
def tiny_gpt_dir(tmp_path_factory):
    """A 2-layer Llama language model with random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer, vocab = word_tokenizer([], "<pad>", "</s>", template=False)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return save_random_model(folder, LlamaForCausalLM, config, tokenizer)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
    """A 2-layer T5 with random weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer, vocab = word_tokenizer([], "<pad>", "</s>", template=True)
    config = T5Config(vocab_size=len(vocab), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return save_random_model(folder, T5ForConditionalGeneration, config, tokenizer)


def recorder(result="model"):
    """Stands in for a transformers auto class or AutoConfig: records what it is asked."""
    calls: list = []

    class Recorder:
        @classmethod
        def from_pretrained(cls, path, **kwargs):
            calls.append((path, kwargs))
            return result

    return Recorder, calls


@pytest.fixture
def datasets_progress_bars(monkeypatch):
    """datasets' progress bars on, as on a user's terminal, whatever ran before in this
    process (a stage run turns them off through HF_DATASETS_DISABLE_PROGRESS_BARS, which
    outranks enable_progress_bars()); restored afterwards."""
    import importlib

    bars = importlib.import_module("datasets.utils.tqdm")  # the module: datasets.utils.tqdm names its class too
    monkeypatch.setattr(bars, "_hf_datasets_progress_bars_disabled", False)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving_app(app, port: int | None = None):
    """``app`` on uvicorn in a thread on ``port`` (a free one if None), on loopback: yields
    its base URL; stopped on leaving."""
    import threading
    import time

    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
