"""Generation's parts one at a time, without training: what the model is prompted with
(decoder and encoder-decoder layouts, cuts to model.max_length), how prompts are batched
and padded for `generate`, how generations become labels with their probability, and the
scores. tests/test_generation.py runs the same code end to end through the stages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import recorder, word_tokenizer

from peftpipe.tasks import generation, get_task

LABELS = ["people", "places"]
LONG_TEXT = "alice bob carol paris london berlin acme globex"


def decoder_tokenizer(bos: bool = False):
    """A word-level decoder tokenizer (pad 0, end 1); with ``bos`` it starts every encoded
    text with <s>, as Llama's does: the prompt and target must be built without it."""
    from tokenizers import processors

    tokenizer, vocab = word_tokenizer(["<s>"], "<pad>", "</s>", template=False)
    if bos:
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", vocab.index("<s>"))])
        tokenizer.bos_token = "<s>"
    return tokenizer


def t5_tokenizer():
    return word_tokenizer([], "<pad>", "</s>", template=True)[0]


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------- the model's kind


def test_is_encoder_decoder_reads_the_models_config(tiny_gpt_dir, tiny_t5_dir):
    assert generation.is_encoder_decoder(str(tiny_t5_dir)) is True
    assert generation.is_encoder_decoder(str(tiny_gpt_dir)) is False


def test_is_encoder_decoder_asks_for_the_pinned_revision_and_a_config_without_the_field_is_a_decoder(monkeypatch):
    import transformers

    config, calls = recorder(object())
    monkeypatch.setattr(transformers, "AutoConfig", config)
    assert generation.is_encoder_decoder("org/model", "abc123") is False
    assert calls == [("org/model", {"revision": "abc123"})]


@pytest.mark.parametrize("seq2seq, auto_class", [(True, "AutoModelForSeq2SeqLM"), (False, "AutoModelForCausalLM")])
def test_load_model_picks_the_language_model_class_at_the_pinned_revision(monkeypatch, seq2seq, auto_class):
    import transformers

    config, config_calls = recorder(SimpleNamespace(is_encoder_decoder=seq2seq))
    model_class, model_calls = recorder("model")
    monkeypatch.setattr(transformers, "AutoConfig", config)
    monkeypatch.setattr(transformers, auto_class, model_class)
    assert generation.load_model("org/model", LABELS, "abc123", dtype="bfloat16") == "model"
    assert config_calls == [("org/model", {"revision": "abc123"})]
    assert model_calls == [("org/model", {"revision": "abc123", "dtype": "bfloat16"})]


# --------------------------------------------------------------------------- prompts and targets


def test_a_decoders_prompt_is_the_text_then_the_cue_without_special_tokens():
    tokenizer = decoder_tokenizer(bos=True)
    words, cue = ids(tokenizer, LONG_TEXT), ids(tokenizer, generation.CUE)
    assert len(words) == 8 and len(cue) == 2
    assert generation.causal_prompt(tokenizer, LONG_TEXT, 100) == words + cue
    assert generation.causal_prompt(tokenizer, LONG_TEXT, len(cue) + 3) == words[:3] + cue
    # Even with no room at all one word of the text stays: a prompt of the cue alone says nothing.
    assert generation.causal_prompt(tokenizer, LONG_TEXT, len(cue)) == words[:1] + cue


def _tokenize(monkeypatch, tokenizer, seq2seq: bool, max_length: int, labels=("people", "places")):
    asked = []
    monkeypatch.setattr(generation, "is_encoder_decoder", lambda path, revision=None: asked.append(revision) or seq2seq)
    frame = pd.DataFrame({"text": [LONG_TEXT, "alice"], "label": list(labels)}, index=[3, 8])  # as left by a filter
    params = SimpleNamespace(model=SimpleNamespace(max_length=max_length, revision="abc123"))
    dataset = generation.tokenize(frame, tokenizer, LABELS, params)
    assert asked == ["abc123"]
    return dataset


def test_a_decoder_learns_only_the_target_which_follows_the_prompt_within_max_length(monkeypatch, capsys,
                                                                                       datasets_progress_bars):
    tokenizer = decoder_tokenizer(bos=True)
    dataset = _tokenize(monkeypatch, tokenizer, seq2seq=False, max_length=10)
    assert "tokenize: 100%" in capsys.readouterr().err
    assert set(dataset.column_names) == {"text", "label", "input_ids", "attention_mask", "labels", "prompt_ids",
                                         "full_length"}
    words, cue, end = ids(tokenizer, LONG_TEXT), ids(tokenizer, generation.CUE), tokenizer.eos_token_id
    target = ids(tokenizer, "people") + [end]
    first = dataset[0]
    assert first["prompt_ids"] == words[:6] + cue  # 10 - 2 target tokens - 2 cue tokens = 6 words
    assert first["input_ids"] == words[:6] + cue + target
    assert first["labels"] == [-100] * 8 + target
    assert first["attention_mask"] == [1] * 10
    assert dataset[1]["input_ids"] == ids(tokenizer, "alice") + cue + ids(tokenizer, "places") + [end]
    # The text's cut tokens are counted (the tokenize stage's report), the label's never cut.
    assert generation.truncation(dataset) == {"rows": 2, "rows_cut": 1, "tokens_cut": len(words) - 6}


def test_an_encoder_decoder_reads_the_text_and_writes_the_label_both_cut_to_max_length(monkeypatch):
    tokenizer = t5_tokenizer()
    end = tokenizer.eos_token_id
    dataset = _tokenize(monkeypatch, tokenizer, seq2seq=True, max_length=4, labels=("people places people places", "places"))
    assert set(dataset.column_names) == {"text", "label", "input_ids", "attention_mask", "labels", "prompt_ids",
                                         "full_length"}
    first = dataset[0]
    assert first["input_ids"] == ids(tokenizer, LONG_TEXT)[:3] + [end]
    assert generation.truncation(dataset) == {"rows": 2, "rows_cut": 1,
                                              "tokens_cut": len(ids(tokenizer, LONG_TEXT)) + 1 - 4}
    assert first["prompt_ids"] == first["input_ids"] and first["attention_mask"] == [1] * 4
    assert first["labels"] == ids(tokenizer, "people places people") + [end]
    assert dataset[1]["labels"] == ids(tokenizer, "places") + [end]


def test_a_row_one_token_over_counts_as_cut():
    """rows_cut counts every row that lost a token, one included (the report's warning and
    the stage's check read it)."""
    dataset = {"full_length": [5, 6, 7, 9], "prompt_ids": [[1] * 5] * 4}  # lost 0, 1, 2 and 4 tokens
    assert generation.truncation(dataset) == {"rows": 4, "rows_cut": 3, "tokens_cut": 7}


def test_train_label_ids_are_the_target_tokens():
    import datasets

    dataset = datasets.Dataset.from_dict({"labels": [[-100, 5, 6], [-100, -100, 7]]})
    assert generation.train_label_ids(dataset) == [5, 6, 7]


def test_generation_steps_cover_the_longest_label_and_its_end():
    tokenizer = decoder_tokenizer()
    assert generation.generation_steps(tokenizer, LABELS) == 2
    assert generation.generation_steps(tokenizer, ["people", "people places and"]) == 4


# --------------------------------------------------------------------------- generating


class FakeLM:
    """Records each `generate` call; step s of a row's logits is (sum of its unpadded prompt
    ids + s) everywhere, so each output says which prompt it came from."""

    def __init__(self, seq2seq: bool = False, device: str = "cpu", prompt_learning: bool = False, vocab: int = 3):
        import torch

        self.config = SimpleNamespace(is_encoder_decoder=seq2seq)
        self.device, self.vocab, self.calls = torch.device(device), vocab, []
        if prompt_learning:
            self.active_peft_config = SimpleNamespace(is_prompt_learning=True)

    def parameters(self):
        import torch

        yield torch.empty(0, device=self.device)

    def eval(self):
        self.calls.append("eval")

    def generate(self, input_ids, attention_mask, **options):
        import torch

        self.calls.append({"devices": (input_ids.device.type, attention_mask.device.type)})
        if input_ids.device.type == "meta":
            return SimpleNamespace(logits=tuple(torch.zeros(len(input_ids), self.vocab)
                                                for _ in range(options["max_new_tokens"])))
        self.calls[-1].update(input_ids=input_ids.tolist(), attention_mask=attention_mask.tolist(), **options)
        sums = (input_ids * attention_mask).sum(1, keepdim=True).float()
        return SimpleNamespace(logits=tuple(sums.repeat(1, self.vocab) + s for s in range(options["max_new_tokens"])))


PROMPTS = [[5, 6, 7], [9], [3, 4]]
GREEDY = {"max_new_tokens": 2, "min_new_tokens": 2, "do_sample": False, "num_beams": 1, "output_logits": True,
          "return_dict_in_generate": True, "pad_token_id": 0}


@pytest.mark.parametrize("seq2seq, padded", [
    (False, ([[0, 9], [3, 4]], [[0, 1], [1, 1]])),  # a decoder continues the last token: pad on the left
    (True, ([[9, 0], [3, 4]], [[1, 0], [1, 1]])),  # an encoder reads from the start: pad on the right
])
def test_generate_logits_pads_each_batch_for_the_model_and_generates_greedily_a_fixed_number_of_steps(seq2seq, padded):
    model = FakeLM(seq2seq=seq2seq)
    out = generation.generate_logits(model, SimpleNamespace(pad_token_id=0), PROMPTS, 2, 2)
    ids, mask = padded
    assert model.calls == [
        "eval",
        {"devices": ("cpu", "cpu"), "input_ids": ids, "attention_mask": mask, **GREEDY},
        {"devices": ("cpu", "cpu"), "input_ids": [[5, 6, 7]], "attention_mask": [[1, 1, 1]], **GREEDY},
    ]
    assert [o.tolist() for o in out] == [[[18] * 3, [19] * 3], [[9] * 3, [10] * 3], [[7] * 3, [8] * 3]]


def test_generate_logits_sends_the_batches_to_the_models_device():
    model = FakeLM(device="meta")
    out = generation.generate_logits(model, SimpleNamespace(pad_token_id=0), PROMPTS, 3, 8)
    assert model.calls[1:] == [{"devices": ("meta", "meta")}]
    assert [o.shape for o in out] == [(3, 3)] * 3


@pytest.mark.parametrize("seq2seq", [False, True])
def test_a_prefix_tuned_model_writes_what_its_forward_pass_computes(tiny_gpt_dir, tiny_t5_dir, seq2seq, capsys):
    """Each step's logits are the forward pass's over the prompt and what was written before
    it, the computation training did. `generate` was not (transformers 5.24, peft 0.21.2):
    for this prefix-tuned Llama its second step was off by 0.08 without the key/value cache
    and its first by 0.39 with it. Prompts of one length per batch, unpadded."""
    import torch
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    base = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(
        tiny_t5_dir if seq2seq else tiny_gpt_dir)
    torch.manual_seed(0)
    model = get_peft_model(base, PrefixTuningConfig(task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
                                                    num_virtual_tokens=4))
    with torch.no_grad():
        for weights in model.prompt_encoder.parameters():
            weights.normal_(0, 1)  # a prefix that matters, as a trained one does
    prompts = [[5, 9, 13, 22], [7, 20], [8, 11, 12, 14]]
    out = generation.generate_logits(model, SimpleNamespace(pad_token_id=0), prompts, 4, 2)
    assert "generate (batches of one length): 2/2" in capsys.readouterr().err
    with torch.no_grad():
        for prompt, logits in zip(prompts, out):
            before = logits.argmax(-1)[:-1].tolist()  # what it wrote, fed back as in training
            if seq2seq:
                start = [model.config.decoder_start_token_id]
                full = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([start + before])).logits[0]
            else:
                full = model(input_ids=torch.tensor([prompt + before])).logits[0, len(prompt) - 1:]
            np.testing.assert_allclose(logits, full.numpy(), atol=1e-4)


def test_batches_of_one_length_keep_the_dataset_order_and_the_batch_size():
    lengths = np.random.default_rng(0).integers(1, 4, size=300)
    prompts = [[1] * n for n in lengths]
    batches = [list(b) for b in generation._generation_batches(FakeLM(prompt_learning=True), prompts, 64)]
    expected = []
    for n in (1, 2, 3):
        same = [i for i in range(300) if lengths[i] == n]
        expected += [same[start:start + 64] for start in range(0, len(same), 64)]
    assert batches == expected


def test_other_models_generate_in_length_sorted_padded_batches(capsys):
    model = FakeLM()
    generation.generate_logits(model, SimpleNamespace(pad_token_id=0), [[5, 6], [9], [3, 4]], 2, 2)
    assert [c["input_ids"] for c in model.calls[1:]] == [[[0, 9], [5, 6]], [[3, 4]]]
    assert "generate (batches): 2/2" in capsys.readouterr().err


def test_predict_logits_generates_enough_steps_for_the_longest_label_of_the_label_set():
    import datasets

    tokenizer = decoder_tokenizer()
    model = FakeLM(vocab=4)
    dataset = datasets.Dataset.from_dict({"prompt_ids": PROMPTS})
    out = generation.predict_logits(model, dataset, 8, SimpleNamespace(tokenizer=tokenizer), ["people places", "x"])
    assert [o.shape for o in out] == [(3, 4)] * 3  # two label tokens and the end


# --------------------------------------------------------------------------- decoding and serving


def _steps(vocab_size: int, chosen: list[int]) -> np.ndarray:
    logits = np.zeros((len(chosen), vocab_size))
    logits[np.arange(len(chosen)), chosen] = 5.0
    return logits


def test_decode_stops_at_the_end_token_and_drops_special_tokens():
    tokenizer = decoder_tokenizer()
    vocab = len(tokenizer)
    people, places, end, pad = (tokenizer.convert_tokens_to_ids(t) for t in ("people", "places", "</s>", "<pad>"))
    texts = generation.decode([_steps(vocab, [pad, people, end, places]), _steps(vocab, [places, people])], None,
                              LABELS, tokenizer)
    assert texts == ["people", "places people"]


def _softmax(row: np.ndarray) -> np.ndarray:
    return np.exp(row) / np.exp(row).sum()


@pytest.mark.parametrize("seq2seq", [True, False])
def test_write_labels_prompts_as_in_training_and_scores_the_continuation_up_to_its_end(monkeypatch, seq2seq):
    tokenizer = t5_tokenizer() if seq2seq else decoder_tokenizer()
    people, places, end = (tokenizer.convert_tokens_to_ids(t) for t in ("people", "places", "</s>"))
    vocab = len(tokenizer)
    labels = ["people", "places people"]  # three steps: two words and the end
    ended = np.random.default_rng(0).normal(size=(3, vocab))
    ended[0, people], ended[1, end], ended[2, places] = 6.0, 6.0, 6.0  # what follows the end is not scored
    unended = np.random.default_rng(1).normal(size=(3, vocab))
    unended[:, people] = 6.0
    asked = []

    def generate_logits(model, tokenizer_, prompts, steps, batch_size):
        asked.append((prompts, steps, batch_size))
        return [ended, unended]

    monkeypatch.setattr(generation, "generate_logits", generate_logits)
    model = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=seq2seq))
    written = generation.write_labels(model, tokenizer, [LONG_TEXT, "alice"], labels, 7, batch_size=5)
    if seq2seq:
        prompts = [ids(tokenizer, LONG_TEXT)[:6] + [end], ids(tokenizer, "alice") + [end]]
    else:  # 7 - 3 generated steps - 2 cue tokens: two words
        prompts = [generation.causal_prompt(tokenizer, LONG_TEXT, 4), generation.causal_prompt(tokenizer, "alice", 4)]
        assert len(prompts[0]) == 4
    assert asked == [(prompts, 3, 5)]
    assert [label for label, _ in written] == ["people", "people people people"]
    assert written[0][1] == pytest.approx(_softmax(ended[0])[people] * _softmax(ended[1])[end])
    assert written[1][1] == pytest.approx(np.prod([_softmax(step)[people] for step in unended]))


# --------------------------------------------------------------------------- scores


def test_scores_are_exact_match_macro_f1_and_the_share_that_is_no_label():
    metrics = generation.compute_metrics(["people", "places", "people", "places"],
                                         ["people", "people", "nonsense", "places"], LABELS)["overall"]
    assert metrics["f1"] == metrics["macro_f1"] and metrics["exact_match"] == metrics["accuracy"] == 0.5
    assert metrics["not_a_label"] == 0.25


def test_the_trainer_keeps_only_the_argmax_of_the_language_model_logits():
    import torch

    logits = torch.zeros(2, 3, 5)
    logits[0, :, 4], logits[1, 0, 1], logits[1, 1, 2], logits[1, 2, 3] = 1, 1, 1, 1
    expected = [[4, 4, 4], [1, 2, 3]]
    assert generation.preprocess_logits(logits, None).tolist() == expected
    assert generation.preprocess_logits((logits, torch.ones(2, 3, 7)), None).tolist() == expected  # seq2seq's


DECODER = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=False))
ENCODER_DECODER = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=True))


@pytest.mark.parametrize("model, predicted, accuracy", [
    (DECODER, [[7, 5, 6, 9]], 1.0),  # logits at t predict token t + 1
    (DECODER, [[8, 8, 7, 5, 6, 9]], 1.0),  # two virtual tokens' columns first
    (DECODER, [[7, 5, 0, 9]], 0.5),
    (ENCODER_DECODER, [[0, 0, 5, 6]], 1.0),  # T5's logits are aligned with its labels
    (None, [[0, 0, 5, 6]], 1.0),
    (ENCODER_DECODER, [[0, 0, 6, 5]], 0.0),
])
def test_token_accuracy_during_training_counts_target_tokens_only(model, predicted, accuracy):
    compute = generation.trainer_metrics(LABELS, model)
    assert compute((np.array(predicted), np.array([[-100, -100, 5, 6]]))) == {"token_accuracy": accuracy}


def test_generation_intervals_name_exact_match_and_are_seeded():
    rng = np.random.default_rng(0)
    gold = [LABELS[i] for i in rng.integers(0, 2, size=60)]
    predicted = [g if rng.random() < 0.7 else "nonsense" for g in gold]
    task = get_task("generation", LABELS)
    found = task.intervals(gold, predicted, LABELS)
    assert found == task.intervals(gold, predicted, LABELS, seed=0) != task.intervals(gold, predicted, LABELS, seed=1)
    assert found["exact_match"] == found["accuracy"] and found["accuracy"][0] < 0.7 < found["accuracy"][1]


def test_generation_serves_with_pytorch_only_and_reads_one_text():
    task = get_task("generation", LABELS)
    assert task.onnx_unsupported() == "generation decodes token by token in PyTorch"
    assert task.serving_input_problem(["a text"], "onnx") == (
        "a generation model serves with --backend torch only (it decodes in PyTorch)")
    assert task.serving_input_problem(["a text"], "torch") is None
    assert task.serving_input_problem([{"text": "a", "text_pair": "b"}], "torch") == (
        "a generation model reads one text, not pairs; drop --pair")



def test_a_served_generation_model_gets_its_labels_length_and_batch_size_from_the_predictor():
    """The Predictor hands the task what the export recorded (labels, max_length) and the
    caller's batch size; the scores come back rounded as predict prints them."""
    from pathlib import Path
    from types import SimpleNamespace

    from peftpipe.serving import Predictor

    seen = []

    class Writer:
        writes_labels = True

        def serving_input_problem(self, texts, backend):
            return None

        def write_labels(self, model, tokenizer, texts, labels, max_length, batch_size):
            seen.append((list(texts), labels, max_length, batch_size))
            return [(labels[0], 0.912345)] * len(texts)

    predictor = Predictor.__new__(Predictor)  # what __init__ loads, set by hand: no model needed
    predictor.folder, predictor.backend, predictor.shared, predictor.adapter = Path("m"), "torch", False, "default"
    predictor.task, predictor.model, predictor.tokenizer = Writer(), None, None
    predictor.info = SimpleNamespace(labels=["negative", "positive"], model=SimpleNamespace(max_length=48), pairs=False)
    assert predictor(["a", "b"], batch_size=5) == [{"label": "negative", "score": 0.9123}] * 2
    assert seen == [(["a", "b"], ["negative", "positive"], 48, 5)]
