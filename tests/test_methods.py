"""Every PEFT method in the registry, on the tiny model, for token and sequence
classification: it trains, evaluates and exports through the real stages (export's own check
proves a merge predicts what the adapter did), and its options are checked against its peft
config class before any model loads."""

import json
from pathlib import Path

import pytest
from conftest import run_stage, write_jsonl

from peftpipe.errors import ModelError, ParamsError
from peftpipe.io import read_json
from peftpipe.methods import METHODS, check_options, get_method
from peftpipe.params import load_params, parse_params, write_params
from peftpipe.tasks import get_task

# qlora: a 4-bit base, tested in test_quantized and test_sequence_classification
TINY_METHODS = [name for name in METHODS if name != "qlora"]


@pytest.mark.parametrize("name", TINY_METHODS)
def test_method_trains_evaluates_and_exports_token_classification(tiny_project, tiny_model_dir, name):
    # ONNX graphs: tests/test_onnx.py (here they would only add time per method)
    write_params(tiny_project / "params.yaml", {"peft": {"method": name}, "train": {"max_steps": 30},
                                                "export": {"onnx": False}})
    for stage in ("download", "split", "tokenize_align", "baseline"):
        run_stage(stage)
    method = get_method(name)
    from peftpipe.tasks import token_classification

    assert method.misfit_model(token_classification.load_model(str(tiny_model_dir), ["O", "B-PER"])) is None
    for stage in ("train", "evaluate", "export"):
        run_stage(stage)
    train = read_json(tiny_project / "metrics/train.json")
    assert train["steps"] == 30 and train["train_loss"] > 0 and train["peak_memory_mib"]["rss"] > 100
    assert (train["trainable_share"] == 1.0) == (name == "none")
    # The optimizer the Trainer really used: LoRA+ trains the B matrices at ratio x the rate.
    rate = load_params(tiny_project / "params.yaml").train.learning_rate
    if name == "lora_plus":
        ratio = method.option(load_params(tiny_project / "params.yaml"), "loraplus_lr_ratio")
        assert train["learning_rates"] == pytest.approx([rate, rate * ratio])
    else:
        assert train["learning_rates"] == pytest.approx([rate])
    check = read_json(tiny_project / "metrics/export.json")
    assert check["prediction_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-3
    exported = tiny_project / "models/export"
    # A merged method ships a plain model; the others ship their adapter with its base named.
    assert (exported / "adapter_config.json").exists() == method.kept_as_adapter
    info = read_json(exported / "peftpipe.json")
    assert info["peft_method"] == (name if method.kept_as_adapter else "none")
    if method.merges:
        assert info["merged_from"] == name
    if name == "adalora":  # the budget was reallocated during training
        assert json.loads((tiny_project / "models/adapter/adapter_config.json").read_text())["rank_pattern"]
    # One prediction per word, in place (virtual tokens cut off, not shifting the words).
    predicted = [json.loads(line) for line in (tiny_project / "data/predictions/test.jsonl").read_text().splitlines()]
    assert all(len(row["predicted"]) == len(row["tokens"]) for row in predicted)
    # Learned something: word accuracy above the all-O reference's (0.60 here) and some entity right.
    overall = read_json(tiny_project / "metrics/eval.json")["overall"]
    reference = read_json(tiny_project / "metrics/baseline.json")["reference"]["overall"]
    assert overall["accuracy"] > reference["accuracy"] and overall["f1"] > 0


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """Two classes a bag of words can tell apart (words of the tiny model's vocabulary):
    rows about people or rows about places."""
    import random

    rng = random.Random(seed)
    words = {"positive": ["alice", "bob", "carol", "person"], "negative": ["paris", "london", "berlin", "city"]}
    rows = []
    for i in range(n):
        label = ["positive", "negative"][i % 2]
        rows.append({"text": " ".join(rng.choice(words[label] + ["the", "a", "and"]) for _ in range(6)), "label": label})
    return rows


@pytest.mark.parametrize("name", TINY_METHODS)
def test_method_trains_evaluates_and_exports_sequence_classification(tmp_path, tiny_model_dir, name, monkeypatch):
    write_jsonl(tmp_path / "corpus/train.jsonl", sentiment_rows(64, seed=1))
    write_jsonl(tmp_path / "corpus/test.jsonl", sentiment_rows(16, seed=2))
    write_params(tmp_path / "params.yaml", {
        "task": {"kind": "sequence_classification"},
        "data": {"source": "local", "name": None, "files": {"train": "corpus/train.jsonl", "test": "corpus/test.jsonl"},
                 "columns": {"text": "text", "label": "label"}},
        "model": {"source": "local", "name": str(tiny_model_dir), "max_length": 16},
        "peft": {"method": name}, "prompt": {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
        "train": {"max_steps": 12, "batch_size": 16, "learning_rate": 1e-2, "logging_steps": 4, "checkpoint_steps": 0},
        "export": {"onnx": False},
    })
    monkeypatch.chdir(tmp_path)
    for stage in ("download", "split", "tokenize_align", "baseline"):
        run_stage(stage)
    method = get_method(name)
    for stage in ("train", "evaluate", "export"):
        run_stage(stage)
    assert read_json("metrics/train.json")["steps"] == 12
    check = read_json("metrics/export.json")
    assert check["prediction_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-3
    assert (tmp_path / "models/export/adapter_config.json").exists() == method.kept_as_adapter
    evaluated = read_json("metrics/eval.json")["overall"]
    assert 0.0 <= evaluated["accuracy_ci"]["low"] <= evaluated["accuracy"] <= evaluated["accuracy_ci"]["high"]


def test_virtual_tokens_are_cut_from_token_outputs_and_from_the_loss(tiny_model_dir):
    """Prompt tuning on token classification: peft prepends the virtual tokens and leaves the
    labels as they are; the outputs are the input positions' and the loss is theirs."""
    import torch

    from peftpipe import adapters
    from peftpipe.tasks import token_classification

    params = parse_params({"peft": {"method": "prompt_tuning"}, "prompt": {"num_virtual_tokens": 5}})
    model = token_classification.load_model(str(tiny_model_dir), ["O", "B-PER", "I-PER"])
    model = adapters.wrap(model, get_method(params.peft.method), get_task(params.task.kind), params)
    inputs = {"input_ids": torch.randint(5, 30, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    labels = torch.tensor([[0, 1, 2, 0, -100, 0, 0], [1, 1, 0, 0, 0, 2, -100]])
    output = model(**inputs, labels=labels)
    assert output.logits.shape == (2, 7, 3)
    expected = torch.nn.functional.cross_entropy(output.logits.reshape(-1, 3), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(output.loss, expected)
    assert model(**inputs).logits.shape == (2, 7, 3) and model(**inputs).loss is None


@pytest.mark.parametrize("name", ["pissa", "olora"])
def test_an_adapter_that_rewrote_its_base_is_saved_for_the_original_base(tmp_path, tiny_model_dir, name):
    """PiSSA and OLoRA subtract their initial adapter from the base weights; the saved adapter,
    loaded onto the original base (as evaluate and export do), predicts what the trained model did."""
    import torch
    from peft import PeftModel

    from peftpipe import adapters
    from peftpipe.tasks import token_classification

    labels = ["O", "B-PER", "I-PER"]
    params = parse_params({"peft": {"method": name}, "lora": {"r": 4}})
    model = adapters.wrap(token_classification.load_model(str(tiny_model_dir), labels), get_method(params.peft.method),
                          get_task(params.task.kind), params)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = torch.randint(5, 30, (4, 9))
    for _ in range(3):
        model(input_ids=inputs, labels=torch.randint(0, 3, (4, 9))).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    trained = model(input_ids=inputs).logits
    get_method(name).save(model, tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as saved:
        assert saved.metadata() == {"format": "pt"}  # as save_pretrained writes it: loaders check the format
    reloaded = PeftModel.from_pretrained(token_classification.load_model(str(tiny_model_dir), labels), str(tmp_path))
    assert torch.allclose(reloaded.eval()(input_ids=inputs).logits, trained, atol=1e-5)


@pytest.mark.parametrize(("method", "options", "message"), [
    ("lora", {"use_dorra": True}, "peft.options.use_dorra: not an option of LoraConfig (peft.method lora) "
                                  "(did you mean 'use_dora'?)"),
    ("lora", {"use_dora": "yes"}, "peft.options.use_dora: expected true or false (LoraConfig.use_dora), got 'yes' (str)"),
    ("lora", {"r": True}, "peft.options.r: expected an integer (LoraConfig.r), got True (bool)"),
    # The pipeline sets these two from task.kind and peft.method: they are not the user's to give.
    ("lora", {"task_type": "CAUSAL_LM"}, "peft.options.task_type: not an option of LoraConfig (peft.method lora)"),
    ("lora", {"peft_type": "IA3"}, "peft.options.peft_type: not an option of LoraConfig (peft.method lora)"),
    ("ia3", {"r": 8}, "peft.options.r: not an option of IA3Config (peft.method ia3)"),
    ("lora_plus", {"loraplus_lr_ratio": "high"}, "peft.options.loraplus_lr_ratio: expected a number, got 'high'"),
    # An option of the method's own, then a misspelt one: the second is still checked.
    ("lora_plus", {"loraplus_lr_ratio": 8, "rr": 1}, "peft.options.rr: not an option of LoraConfig "
                                                    "(peft.method lora_plus) (did you mean 'r'?)"),
    ("none", {"r": 8, "alpha": 1}, "peft.options: full fine-tuning (peft.method none) takes no options, got r, alpha"),
])
def test_method_options_are_checked_against_the_peft_config(method, options, message):
    with pytest.raises(ParamsError) as err:
        check_options(get_method(method), options)
    assert str(err.value) == f"params.yaml: {message}"


def test_method_options_reach_the_peft_config():
    params = parse_params({"peft": {"method": "lora", "options": {"init_lora_weights": "gaussian", "r": 4}}})
    check_options(get_method("lora"), params.peft.options)
    config = get_method("lora").config(params, "TOKEN_CLS", ["classifier"])
    assert config.init_lora_weights == "gaussian" and config.r == 4  # options override lora.r too
    assert get_method("dora").config(params, "TOKEN_CLS", []).use_dora is True
    assert get_method("rslora").config(params, "TOKEN_CLS", []).use_rslora is True


def test_lora_plus_trains_b_faster_than_a(tiny_model_dir):
    from peftpipe import adapters
    from peftpipe.tasks import token_classification

    params = parse_params({"peft": {"method": "lora_plus", "options": {"loraplus_lr_ratio": 8}},
                           "lora": {"bias": "all"}, "train": {"learning_rate": 1e-3, "weight_decay": 0.05}})
    model = token_classification.load_model(str(tiny_model_dir), ["O", "B-PER", "I-PER"])
    model = adapters.wrap(model, get_method(params.peft.method), get_task(params.task.kind), params)
    optimizer = get_method("lora_plus").optimizer(model, params)
    rates = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            rates[names[id(parameter)]] = group["lr"]
    a = {r for n, r in rates.items() if "lora_A" in n}
    b = {r for n, r in rates.items() if "lora_B" in n}
    assert a == {1e-3} and b == {8e-3}
    # Only the B matrices: biases (lora.bias: all) and the head learn at the base rate (peft's
    # own LoRA+ optimizer put every 1-D parameter at 8x, and the default collapsed to all-O).
    others = {n: r for n, r in rates.items() if "lora_" not in n}
    assert any(n.endswith(".bias") for n in others) and set(others.values()) == {1e-3}
    decay = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert all(d == 0.0 for n, d in decay.items() if n.endswith(".bias"))
    assert all(d == 0.05 for n, d in decay.items() if "lora_" in n)  # the matrices decay, as the Trainer's


def test_prefix_tuning_fits_only_models_that_take_a_key_value_cache():
    import torch

    class Encoder(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    class CachedEncoder(torch.nn.Module):  # transformers 5.24 calls it cache
        def forward(self, input_ids, attention_mask=None, cache=None):
            return input_ids

    class Head(torch.nn.Module):
        base_model_prefix = "encoder"

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, labels=None, **kwargs):  # passes the cache on to the encoder
            return self.encoder(input_ids, **kwargs)

    class ClosedHead(Head):
        def forward(self, input_ids, labels=None):
            return self.encoder(input_ids)

    prefix = get_method("prefix_tuning")
    assert "Head takes no key/value cache" in prefix.misfit_model(Head(Encoder()))
    assert prefix.misfit_model(Head(CachedEncoder())) is None  # through the backbone, as peft does
    assert "ClosedHead takes no key/value cache" in prefix.misfit_model(ClosedHead(CachedEncoder()))
    assert get_method("lora").misfit_model(Head(Encoder())) is None
    plain = Encoder()  # no base_model_prefix: a model without a backbone is judged by its own forward
    assert "Encoder takes no key/value cache" in prefix.misfit_model(plain)
    assert prefix.misfit_model(CachedEncoder()) is None


def test_prefixes_reach_a_transformers_5_24_encoder(tiny_model_dir):
    """peft 0.21.2 looks for past_key_values in the forward's signature; transformers 5.24
    named it cache. The prefixes must reach the attention: changing them changes the logits."""
    import torch

    from peftpipe import adapters
    from peftpipe.tasks import sequence_classification

    params = parse_params({"task": {"kind": "sequence_classification"}, "peft": {"method": "prefix_tuning"},
                           "prompt": {"num_virtual_tokens": 3}})
    model = adapters.wrap(sequence_classification.load_model(str(tiny_model_dir), ["a", "b"]), get_method(params.peft.method),
                          get_task(params.task.kind), params).eval()
    inputs = {"input_ids": torch.randint(5, 30, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    before = model(**inputs).logits
    with torch.no_grad():
        for parameter in model.prompt_encoder.parameters():
            parameter.add_(1.0)
    assert not torch.allclose(model(**inputs).logits, before)


def test_methods_command_queues_what_fits_and_tabulates_the_runs(tmp_path, monkeypatch):
    from peftpipe.tools import method_sweep

    queued = []
    names = method_sweep.queue(run=queued.append)
    assert names == [f"method-{n}" for n in METHODS]
    assert queued[1] == ["dvc", "exp", "run", "--queue", "-n", "method-lora", "-S", "peft.method=lora"]
    queued.clear()
    assert method_sweep.queue(run=queued.append, settings=("export.onnx=false",), only=("dora", "ia3")) == [
        "method-dora", "method-ia3"]
    assert queued[1][-4:] == ["-S", "peft.method=ia3", "-S", "export.onnx=false"]
    with pytest.raises(ParamsError, match="--method lorra: not a method; expected one of none, lora"):
        method_sweep.queue(run=queued.append, only=("lorra",))

    def run(name, f1, share, seconds, ms):
        return {"name": name, "data": {
            "params": {"params.yaml": {"data": {"seed": 42, "peft": {"method": name[7:]}}}},
            "metrics": {"metrics/eval.json": {"data": {"overall": {"f1": f1, "f1_ci": {"low": f1 - 0.1, "high": f1 + 0.1}}}},
                        "metrics/train.json": {"data": {"trainable_share": share, "train_seconds": seconds,
                                                        "peak_memory_mib": {"rss": 1234.5}}},
                        "metrics/export.json": {"data": {"merged_ms_per_example": ms}}}}}

    # As `dvc exp show --json` shows a run in progress: its task's rev, data.rev "workspace",
    # and its baseline's metrics (not a result yet).
    running = {**run("method-ia3", 0.9, 0.001, 1.0, 1.0), "rev": "e03bdb7d"}
    running["data"]["rev"] = "workspace"
    shown = [{"rev": "abc", "data": {}, "experiments": [{"revs": [
        run("method-lora", 0.48, 0.008, 150.0, 9.0), run("method-dora", 0.5, 0.009, 210.0, 9.1),
        {"name": "r8", "data": {"params": {"params.yaml": {"data": {}}}, "metrics": {}}},
        running]}]}]
    found = method_sweep.rows(shown)
    assert [r["method"] for r in found] == ["dora", "lora"]  # best first; other experiments left out
    running["data"]["rev"] = "e03bdb7d"  # once it has finished it counts
    assert [r["method"] for r in method_sweep.rows(shown)] == ["ia3", "dora", "lora"]
    text = method_sweep.table(found)
    assert "dora            0.5000 [0.4000, 0.6000]" in text and "0.80%" in text and "150" in text
    assert "peak MiB" in text.splitlines()[0] and " 1234 " in text.splitlines()[1]


def test_methods_table_pairs_every_method_with_the_reference_and_records_plots(tmp_path):
    """--table: each method's paired difference from lora on the same test rows (the planted
    better method is significantly better, the equal one not), one row per method when the
    same method ran under two commits, and metrics/methods/ for `dvc plots show`."""
    import yaml

    from peftpipe.tools import method_sweep

    def run(name, f1, seconds):
        return {"name": name, "data": {
            "params": {"params.yaml": {"data": {"seed": 42}}},
            "metrics": {"metrics/eval.json": {"data": {"overall": {"f1": f1, "f1_ci": {"low": f1 - 0.1, "high": f1 + 0.1}}}},
                        "metrics/train.json": {"data": {"trainable_share": 0.01, "train_seconds": seconds}}}}}

    shown = [{"rev": "new", "data": {}, "experiments": [{"revs": [run("method-lora", 0.5, 100.0), run("method-vera", 0.9, 50.0),
                                                                 run("method-ia3", 0.5, 20.0)]}]},
             {"rev": "old", "data": {}, "experiments": [{"revs": [run("method-vera", 0.1, 60.0)]}]}]
    found = method_sweep.rows(shown)
    assert [(r["method"], r["f1"]) for r in found] == [("vera", 0.9), ("lora", 0.5), ("ia3", 0.5)]  # newest vera only

    gold = ["pos", "neg"] * 40
    half_right = [g if i % 2 == 0 else "pos" for i, g in enumerate(gold)]
    predictions = {"method-lora": half_right, "method-ia3": half_right, "method-vera": gold}
    loaded = []

    def load(experiment):
        loaded.append(experiment)
        from peftpipe.tools.compare import Meaning, Predictions

        return Predictions([{"text": str(i), "gold": g, "predicted": p}
                            for i, (g, p) in enumerate(zip(gold, predictions[experiment]))],
                           Meaning("sequence_classification", ("neg", "pos")))

    method_sweep.add_paired(found, "lora", load=load)
    by_method = {r["method"]: r for r in found}
    assert "vs" not in by_method["lora"] and sorted(loaded) == ["method-ia3", "method-lora", "method-vera"]
    assert by_method["vera"]["vs"]["diff"] > 0.2 and by_method["vera"]["vs"]["p"] < 0.05
    assert by_method["ia3"]["vs"]["diff"] == 0 and by_method["ia3"]["vs"]["p"] == 1.0
    text = method_sweep.table(found)
    assert "vs lora" in text.splitlines()[0] and text.splitlines()[1].endswith(" *")
    assert not text.splitlines()[3].endswith(" *")

    folder = method_sweep.record(found, folder=tmp_path / "methods")
    rows = json.loads((folder / "methods.json").read_text())
    assert [r["method"] for r in rows] == ["vera", "lora", "ia3"] and {"f1", "train_seconds", "f1_low"} <= set(rows[0])
    # dvc plots reads nothing from a file with a null or a field some rows lack (lora has no vs_*).
    assert all(value is not None for row in rows for value in row.values())
    assert all(set(row) == set(rows[0]) for row in rows) and "vs_diff" not in rows[0]
    plots = yaml.safe_load((folder / "dvc.yaml").read_text())["plots"]
    assert {next(iter(p.values()))["x"] for p in plots} == {"f1", "train_seconds"}
    assert method_sweep.add_paired(found, "prefix_tuning", load=load) is None  # not run: no column, no error


def test_queued_and_temp_runs_get_paths_that_leave_the_repository_pinned(tmp_path, monkeypatch):
    """DVC runs queued and --temp experiments in a copy of the repository (.dvc/tmp/exps):
    a recipe's ../shared/corpora path did not resolve there and every queued method run
    failed in download. methods --queue and tune pin such paths; paths inside stay relative."""
    from peftpipe import experiments
    from peftpipe.io import unusable
    from peftpipe.tools import method_sweep, tune

    repo = tmp_path / "project"
    repo.mkdir()
    params = {"data": {"source": "local", "name": None,
                       "files": {"train": "../corpora/train.jsonl", "test": "inputs/test.jsonl",
                                 "validation": str(tmp_path / "abs.jsonl")}},
              "eval": {"extra": {"other": "../corpora/other.jsonl"}},
              "model": {"source": "local", "name": "../models/tiny"}}
    write_params(repo / "params.yaml", params)
    monkeypatch.chdir(repo)
    outside = str((tmp_path / "corpora").resolve())
    pinned = experiments.pinned_paths(parse_params(params))
    assert pinned == {"data.files.train": f"{outside}/train.jsonl", "eval.extra.other": f"{outside}/other.jsonl",
                      "model.name": str((tmp_path / "models/tiny").resolve())}

    queued = []
    method_sweep.queue(run=queued.append, only=("lora",))
    assert queued[0][-6:] == ["-S", f"++data.files.train={outside}/train.jsonl", "-S",
                              f"++eval.extra.other={outside}/other.jsonl", "-S", "++model.name=" + pinned["model.name"]]

    ran = []

    class Finished:  # the dvc process, done at once
        def __init__(self, command, **options):
            ran.append(command)
            self.returncode, self.pid = 0, 0

        def communicate(self, timeout=None):
            return "", ""

    monkeypatch.setattr(tune.subprocess, "Popen", Finished)
    tune.run_experiment("tune-x-0", {"lora.r": 8}, None)
    assert f"++data.files.train={outside}/train.jsonl" in ran[0] and "++lora.r=8" in ran[0]

    # A run that still meets such a path (a user's own `dvc exp run --queue`) says why.
    copy = repo / ".dvc/tmp/exps/tmpabc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    assert "runs in a copy of the repository" in unusable(Path("../corpora/train.jsonl"))
    assert unusable(Path("inputs/missing.jsonl")) == "file not found"


def test_each_methods_settings_from_params():
    """What each method hands its peft config, exactly (mutation testing: AdaLoRA's schedule,
    IA3's feed-forward layers and prefix tuning's head survived the training tests)."""
    from peftpipe.methods import get_method

    params = parse_params({"lora": {"r": 16, "alpha": 32, "dropout": 0.05, "bias": "all"},
                           "prompt": {"num_virtual_tokens": 7}})
    adalora = get_method("adalora").settings(params, ["classifier"], 250)
    assert adalora == {"lora_alpha": 32, "lora_dropout": 0.05, "target_modules": None,
                       "modules_to_save": ["classifier"], "init_r": 16, "target_r": 8, "total_step": 250,
                       "tinit": 25, "tfinal": 25, "deltaT": 12}
    assert all(type(adalora[key]) is int for key in ("init_r", "target_r", "total_step", "tinit", "tfinal", "deltaT"))
    short = get_method("adalora").settings(parse_params({"lora": {"r": 1}}), [], 5)
    assert (short["tinit"], short["deltaT"], short["target_r"]) == (1, 1, 1)  # never a zero-step schedule
    assert get_method("ia3").settings(params, [], 0) == {"target_modules": None, "modules_to_save": []}
    targeted = parse_params({"lora": {"target_modules": ["query"]}})
    assert get_method("ia3").settings(targeted, [], 0) == {"target_modules": ["query"], "feedforward_modules": [],
                                                           "modules_to_save": []}
    assert get_method("prefix_tuning").settings(params, [], 0) == {"num_virtual_tokens": 7, "modules_to_save": None}
    assert get_method("prefix_tuning").settings(params, ["score"], 0)["modules_to_save"] == ["score"]


def test_prefixes_reach_a_model_whose_forward_names_the_cache_differently():
    import inspect
    from types import SimpleNamespace

    from peftpipe.methods import pass_prefixes_as_cache

    seen = []

    def forward(input_ids=None, cache=None, **kwargs):  # transformers 5.24's signature
        seen.append((input_ids, cache, kwargs))

    model = SimpleNamespace(forward=forward)
    pass_prefixes_as_cache(model)
    signature = inspect.signature(model.forward)
    assert list(signature.parameters) == ["input_ids", "cache", "past_key_values", "kwargs"]
    assert signature.parameters["past_key_values"].default is None  # optional, as it was
    model.forward([1, 2], past_key_values="prefixes", labels=[0])
    model.forward([3])
    assert seen == [([1, 2], "prefixes", {"labels": [0]}), ([3], None, {})]

    def strict(input_ids=None, cache=None):  # no **kwargs: the old name goes last
        return input_ids

    model = SimpleNamespace(forward=strict)
    pass_prefixes_as_cache(model)
    assert list(inspect.signature(model.forward).parameters) == ["input_ids", "cache", "past_key_values"]


def test_a_model_that_takes_past_key_values_is_left_as_it_is():
    from types import SimpleNamespace

    from peftpipe.methods import pass_prefixes_as_cache

    def forward(input_ids=None, past_key_values=None):
        return input_ids

    model = SimpleNamespace(forward=forward)
    pass_prefixes_as_cache(model)
    assert model.forward is forward


def test_a_config_peft_refuses_is_one_line_naming_the_class(monkeypatch):
    import peft

    adalora = parse_params({"peft": {"method": "adalora"}})
    with pytest.raises(ModelError) as caught:  # AdaLoRA's schedule needs the step count
        get_method("adalora").config(adalora, "TOKEN_CLS", [])
    assert str(caught.value).startswith("params.yaml: peft.options: AdaLoraConfig refused them: ")
    assert "total_step" in str(caught.value)

    def refuse(**kwargs):
        raise ValueError("a   long\nreason " * 40)

    monkeypatch.setattr(peft, "LoraConfig", refuse)
    with pytest.raises(ModelError) as caught:
        get_method("lora").config(parse_params({}), "TOKEN_CLS", [], 10)
    prefix = "params.yaml: peft.options: LoraConfig refused them: "
    assert str(caught.value) == prefix + ("a long reason " * 40)[:300]


def test_alpha_is_written_as_an_integer_when_it_is_one():
    settings = get_method("lora").settings(parse_params({"lora": {"alpha": 16.0}}), [], 0)
    assert settings["lora_alpha"] == 16 and type(settings["lora_alpha"]) is int
    assert get_method("lora").settings(parse_params({"lora": {"alpha": 8.5}}), [], 0)["lora_alpha"] == 8.5


def test_an_unknown_method_names_the_known_ones():
    with pytest.raises(ModelError) as caught:
        get_method("lorra")
    assert str(caught.value) == f"unknown PEFT method 'lorra'; known: {', '.join(METHODS)}"


def test_the_methods_table_says_what_f1_means_and_warns_when_rows_mix_meanings():
    from peftpipe.tools import method_sweep

    def row(method, meaning):
        return {"method": method, "experiment": f"method-{method}", "f1": 0.5, "ci": {"low": 0.4, "high": 0.6},
                "trainable_share": None, "train_seconds": None, "ms_per_example": None, "f1_is": meaning}

    one = method_sweep.table([row("lora", "F1 of the positive class 'equivalent'"),
                              row("vera", "F1 of the positive class 'equivalent'")])
    assert one.splitlines()[-1] == "f1: F1 of the positive class 'equivalent'"
    mixed = method_sweep.table([row("lora", "F1 of the positive class 'equivalent'"),
                                row("vera", "macro F1 over 3 classes")])
    assert mixed.splitlines()[-1] == ("note: f1 means different things in these rows (F1 of the positive class "
                                      "'equivalent'; macro F1 over 3 classes): compare rows of one meaning only")


@pytest.mark.parametrize("kind, labels, meaning", [
    ("token_classification", ["O", "B-PER", "I-PER"], "entity-level micro F1 (seqeval)"),
    ("sequence_classification", ["not_equivalent", "equivalent"], "F1 of the positive class 'equivalent'"),
    ("sequence_classification", ["a", "b", "c"], "macro F1 over 3 classes"),
    ("generation", ["negative", "positive"], "macro F1 over 2 classes"),
])
def test_each_scores_file_says_what_its_f1_is(kind, labels, meaning):
    from peftpipe.evaluation import scored

    task = get_task(kind, labels)
    assert task.f1_meaning(labels) == meaning
    gold = [["O", "B-PER", "I-PER"]] * 3 if kind == "token_classification" else [labels[0], labels[1], labels[0]]
    assert scored(task, gold, gold, labels)["f1_is"] == meaning
