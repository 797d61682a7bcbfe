"""Generation with prefix tuning: a decoder LLM (CAUSAL_LM) through the seven stages, and an
encoder-decoder (SEQ_2_SEQ_LM, T5-style) through training and generation. These fail if a
transformers/peft version pair breaks prefix tuning ("Model does not support past key
values which are required for prefix tuning", seen with transformers 5.24 + peft 0.21.2)."""

from __future__ import annotations

import json
import random

import pytest
from conftest import TOPIC_WORDS, run_stage, write_jsonl
from test_sequence_classification import STAGES, write_params

from peftpipe.io import read_json
from peftpipe.methods import METHODS, get_method


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """The label (a word the model must write) follows from the words of the text."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(TOPIC_WORDS))
        rows.append({"text": " ".join(rng.choice(TOPIC_WORDS[label] + ["the", "and"]) for _ in range(rng.randint(3, 7))),
                     "label": label})
    return rows


def generation_params(folder, model_dir, epochs: int, method: str = "prefix_tuning", learning_rate: float = 2e-1) -> None:
    write_jsonl(folder / "corpus/train.jsonl", sentiment_rows(120, seed=1))
    write_jsonl(folder / "corpus/test.jsonl", sentiment_rows(24, seed=2))
    write_params(folder, {
        "recipe": "tiny-prefix",
        "task": {"kind": "generation"},
        "data": {"source": "local", "name": None, "files": {"train": "corpus/train.jsonl", "test": "corpus/test.jsonl"}},
        "model": {"source": "local", "name": str(model_dir), "max_length": 24},
        "peft": {"method": method},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "bias": "none", "target_modules": []},
        "prompt": {"num_virtual_tokens": 8, "encoder_hidden_size": 16},
        "train": {"epochs": epochs, "batch_size": 8, "learning_rate": learning_rate, "logging_steps": 5, "checkpoint_steps": 0},
    })


def validation_losses(folder) -> list[float]:
    import pandas as pd

    return pd.read_csv(folder / "metrics/curves/plots/metrics/eval/loss.tsv", sep="\t")["loss"].tolist()


def test_prefix_tuning_a_decoder_runs_every_stage_and_exports_the_adapter(tmp_path, tiny_gpt_dir, monkeypatch):
    generation_params(tmp_path, tiny_gpt_dir, epochs=3)
    monkeypatch.chdir(tmp_path)
    for name in STAGES:
        run_stage(name)
    config = json.loads((tmp_path / "models/adapter/adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["task_type"] == "CAUSAL_LM"
    losses = validation_losses(tmp_path)
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.1  # the prefixes learn
    baseline, evaluated = read_json("metrics/baseline.json"), read_json("metrics/eval.json")
    assert baseline["overall"].keys() == evaluated["overall"].keys() >= {"exact_match", "not_a_label", "f1"}
    assert baseline["overall"]["not_a_label"] > 0.8  # an untrained model writes no label
    # Prefixes cannot merge: the adapter is exported, and regenerates the same test outputs.
    check = read_json("metrics/export.json")
    assert check["prediction_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-3
    assert (tmp_path / "models/export/peftpipe.json").exists()
    rows = [json.loads(line) for line in (tmp_path / "data/predictions/test.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"text", "gold", "predicted"}
    # `peftpipe predict` puts the exported prefixes on their base and writes what evaluate wrote.
    from click.testing import CliRunner

    from peftpipe.cli import main

    result = CliRunner().invoke(main, ["predict", "--json"], input="".join(r["text"] + "\n" for r in rows))
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["label"] for line in result.stdout.splitlines()[-len(rows):]] == [r["predicted"] for r in rows]
    # Batching never changes what a prefix-tuned model writes (left padding did, on
    # transformers 5.24 + peft 0.21.2): one prompt at a time gives what evaluate wrote.
    from peftpipe.artifacts import load_tokenized, load_trained
    from peftpipe.tasks import generation

    model, tokenizer, info = load_trained(tmp_path / "models/export")
    prompts = load_tokenized(tmp_path / "data/tokenized")[0]["test"]["prompt_ids"]
    steps = generation.generation_steps(tokenizer, info.labels)
    alone = generation.decode(generation.generate_logits(model, tokenizer, prompts, steps, 1), None, info.labels,
                              tokenizer)
    assert alone == [r["predicted"] for r in rows]


def test_a_decoder_learns_to_write_the_label_and_generations_are_decoded_right(tmp_path, tiny_gpt_dir, monkeypatch):
    generation_params(tmp_path, tiny_gpt_dir, epochs=6, method="lora", learning_rate=2e-2)
    monkeypatch.chdir(tmp_path)
    for name in STAGES:
        run_stage(name)
    evaluated = read_json("metrics/eval.json")["overall"]
    assert evaluated["exact_match"] > 0.8 and evaluated["not_a_label"] == 0.0
    rows = [json.loads(line) for line in (tmp_path / "data/predictions/test.jsonl").read_text().splitlines()]
    assert {r["predicted"] for r in rows} == {"people", "places"}
    # LoRA merges: the export is a plain model, and peftpipe.json says so and keeps the labels.
    served = read_json("models/export/peftpipe.json")
    assert served["peft_method"] == "none" and served["merged_from"] == "lora" and served["labels"] == ["people", "places"]
    # `peftpipe predict` serves it: each text gets the label the evaluate stage generated.
    from click.testing import CliRunner

    from peftpipe.cli import main

    result = CliRunner().invoke(main, ["predict", "--json"], input="".join(r["text"] + "\n" for r in rows))
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in result.stdout.splitlines()[-len(rows):]]
    assert [w["label"] for w in written] == [r["predicted"] for r in rows]
    assert all(0.0 < w["score"] <= 1.0 for w in written) and len({w["score"] for w in written}) > 1


def test_prefix_tuning_an_encoder_decoder_trains_and_generates(tmp_path, tiny_t5_dir, monkeypatch):
    generation_params(tmp_path, tiny_t5_dir, epochs=3)
    monkeypatch.chdir(tmp_path)
    for name in ("download", "split", "tokenize_align", "train", "evaluate"):
        run_stage(name)
    config = json.loads((tmp_path / "models/adapter/adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["task_type"] == "SEQ_2_SEQ_LM"
    from datasets import load_from_disk

    test = load_from_disk(str(tmp_path / "data/tokenized"))["test"]
    assert test[0]["labels"][-1] == 1  # the target ends with </s>, unshifted (T5 shifts it itself)
    # The encoder reads the text alone and the decoder is scored on every target token
    # (a decoder-only layout would prompt with text + cue and hide it from the loss).
    assert all(-100 not in row["labels"] for row in test) and test[0]["prompt_ids"] == test[0]["input_ids"]
    losses = validation_losses(tmp_path)
    assert losses[-1] < losses[0]
    assert read_json("metrics/eval.json")["examples"] == 24
    # Serving writes what evaluate wrote, for each test text, with the probability of it.
    from peftpipe.artifacts import load_trained
    from peftpipe.tasks.generation import write_labels

    model, tokenizer, info = load_trained(tmp_path / "models/adapter")
    rows = [json.loads(line) for line in (tmp_path / "data/predictions/test.jsonl").read_text().splitlines()]
    written = write_labels(model, tokenizer, [row["text"] for row in rows], info.labels, 24, batch_size=5)
    assert [label for label, _ in written] == [row["predicted"] for row in rows]
    assert all(0 < probability <= 1 for _, probability in written)


GENERATION_METHODS = [name for name in METHODS if name not in ("qlora", "prefix_tuning", "lora")]  # those: above


@pytest.mark.slow
@pytest.mark.parametrize("name", GENERATION_METHODS)
def test_every_method_trains_evaluates_and_exports_a_decoder(tmp_path, tiny_gpt_dir, monkeypatch, name):
    """Generation (CAUSAL_LM) with each method: every stage runs, a mergeable method is
    exported merged and regenerates the adapter's test outputs, a prompt method ships its
    adapter (export's own check compares them)."""
    generation_params(tmp_path, tiny_gpt_dir, epochs=1, method=name, learning_rate=1e-2)
    monkeypatch.chdir(tmp_path)
    for stage in STAGES:
        run_stage(stage)
    check = read_json("metrics/export.json")
    assert check["prediction_agreement"] == 1.0, check
    shipped = sorted(p.name for p in (tmp_path / "models/export").iterdir())
    plain = "model.safetensors" in shipped and "adapter_config.json" not in shipped
    assert plain != get_method(name).kept_as_adapter, (name, shipped)
    assert read_json("metrics/eval.json")["overall"].keys() >= {"exact_match", "f1"}
