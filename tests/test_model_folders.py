"""A model folder is checked when it is opened (predict, serve, export's reload, the ONNX
backend): a tampered or mixed-up export stops in one line naming the file and both values,
never served with a wrong vocabulary, the wrong head or the wrong label names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import peftpipe_json_reads, save_random_model

from peftpipe.cli import main

LABELS = ["O", "B-PER", "B-LOC"]


def trained_info(**changes) -> dict:
    return {"task": "token_classification", "peft_method": "none", "labels": LABELS,
            "model": {"source": "local", "name": "x", "revision": None, "max_length": 32},
            "quantization": None, "seed": 1, **changes}


@pytest.fixture(scope="module")
def ner_export(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT with a token-classification head for LABELS, as export writes it."""
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    folder = tmp_path_factory.mktemp("ner") / "export"
    config = BertConfig.from_pretrained(tiny_model_dir, id2label=dict(enumerate(LABELS)),
                                        label2id={label: i for i, label in enumerate(LABELS)})
    save_random_model(folder, BertForTokenClassification, config, AutoTokenizer.from_pretrained(tiny_model_dir))
    (folder / "peftpipe.json").write_text(json.dumps(trained_info()))
    return folder


def tampered(ner_export: Path, tmp_path: Path, change) -> Path:
    folder = Path(shutil.copytree(ner_export, tmp_path / "export"))
    change(folder)
    return folder


def edit_json(name: str, **changes):
    def change(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return change


def predict_error(folder: Path) -> str:
    result = CliRunner().invoke(main, ["predict", "--model", str(folder), "alice visited paris"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_an_untampered_export_predicts(ner_export):
    result = CliRunner().invoke(main, ["predict", "--json", "--model", str(ner_export), "alice visited paris"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == "alice visited paris"


def _extra_tokens(folder: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens([f"word{i}" for i in range(100)])  # another model's, larger vocabulary
    tokenizer.save_pretrained(folder)


def _smaller_vocabulary(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)


@pytest.mark.parametrize("change, expected", [
    (lambda folder: (folder / "tokenizer.json").unlink(),
     "no tokenizer vocabulary (none of tokenizer.json, vocab.txt"),
    (edit_json("peftpipe.json", task="sequence_classification"),
     "config.json: architecture BertForTokenClassification is a token_classification model, but peftpipe.json "
     "says task sequence_classification"),
    (edit_json("peftpipe.json", labels=["O", "B-LOC", "B-PER"]),
     "config.json: id2label ['O', 'B-PER', 'B-LOC'] differs from peftpipe.json's labels ['O', 'B-LOC', 'B-PER']"),
    (edit_json("peftpipe.json", labels=["O", "B-PER", "B-LOC", "B-ORG"]),
     "differs from peftpipe.json's labels ['O', 'B-PER', 'B-LOC', 'B-ORG']"),
    (edit_json("config.json", id2label={"0": "O", "2": "B-PER", "3": "B-LOC"}),
     "config.json: id2label's keys are not 0..2"),
    (_extra_tokens, "the tokenizer has 132 tokens but the model's embeddings have 32 rows"),
    (_smaller_vocabulary, "the tokenizer has 4 tokens but the model's embeddings have 32 rows"),
], ids=["no tokenizer.json", "task differs from the head", "labels reordered", "label count differs",
        "id2label with a gap", "a larger foreign vocabulary", "a vocabulary far smaller than the model's"])
def test_a_tampered_export_is_refused_in_one_line_naming_the_file(ner_export, tmp_path, change, expected):
    folder = tampered(ner_export, tmp_path, change)
    assert expected in predict_error(folder)


def test_serve_refuses_a_tampered_export_at_start_up(ner_export, tmp_path):
    from peftpipe.errors import ModelError
    from peftpipe.serve import app as server

    folder = tampered(ner_export, tmp_path, edit_json("peftpipe.json", labels=["O", "B-LOC", "B-PER"]))
    with pytest.raises(ModelError, match=r"--model ner=.*id2label \['O', 'B-PER', 'B-LOC'\] differs"):
        server.load({"ner": folder}, "torch")


def test_an_export_is_read_once_and_checked_once_when_served(ner_export, monkeypatch):
    """Serve start-up opens peftpipe.json once per model (the Predictor hands its info down)."""
    from peftpipe.serve import app as server

    opened = peftpipe_json_reads(monkeypatch)
    served = server.load({"ner": ner_export}, "torch")
    assert served["ner"].card["labels"] == LABELS
    assert len(opened) == 1, opened


def tagging_every_word(ner_export: Path, tmp_path: Path) -> Path:
    """A copy of the export that tags every token B-PER: each word its own entity."""
    import torch
    from transformers import BertForTokenClassification

    folder = Path(shutil.copytree(ner_export, tmp_path / "export"))
    model = BertForTokenClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    model.save_pretrained(folder)
    return folder


def test_entity_spans_cover_whole_words(ner_export, tmp_path):
    """A word the tokenizer splits ("alices": alice + ##s) is one span, tagged by its first
    sub-word as training labels it, never half a word."""
    from peftpipe.serving import Predictor

    folder = tagging_every_word(ner_export, tmp_path)
    text = "alices visited paris"
    spans = Predictor(folder)([text])[0]
    assert [(s["word"], s["start"], s["end"]) for s in spans] == [
        ("alices", 0, 6), ("visited", 7, 14), ("paris", 15, 20)]


def test_served_entities_tokenize_each_text_once(ner_export):
    """The NER path reads a text whole in windows and reports no cut, so the texts go through
    the tokenizer once a call, not a second time to count tokens."""
    from peftpipe.serving import Predictor

    predictor = Predictor(ner_export, backend="torch")
    tokenizer = predictor.classify.tokenizer
    calls = []
    real_call = type(tokenizer).__call__

    def counting_call(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("text"))
        return real_call(self, *args, **kwargs)

    type(tokenizer).__call__ = counting_call
    try:
        answers = predictor(["alice visited paris", "bob"])
    finally:
        type(tokenizer).__call__ = real_call
    assert len(answers) == 2 and all(isinstance(spans, list) for spans in answers)
    assert calls == [["alice visited paris", "bob"]]


def test_a_text_longer_than_one_window_is_tagged_to_its_end(ner_export, tmp_path):
    """NER reads a long text in overlapping windows: a word past the first window is tagged too."""
    from peftpipe.serving import Predictor

    folder = tagging_every_word(ner_export, tmp_path)
    predictor = Predictor(folder, backend="torch")
    words = ["alice", "bob", "carol"] * 40  # 120 words; the model reads 64 tokens at a time
    assert predictor.classify.tokenizer.model_max_length < len(words)
    spans = predictor([" ".join(words)])[0]
    assert [span["word"] for span in spans] == words


def test_a_predictor_answers_the_same_one_text_at_a_time_or_batched(ner_export):
    from peftpipe.serving import Predictor

    predictor, texts = Predictor(ner_export, backend="torch"), ["alice visited paris", "bob"]
    assert predictor(texts, batch_size=1) == predictor(texts)
