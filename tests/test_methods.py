"""Every PEFT method in the registry, on the tiny model: it trains, evaluates and exports
through the real stages (export's own check proves a merge predicts what the adapter did),
and its options are checked against its peft config class before any model loads."""

import json

import pytest
from conftest import run_stage

from peftpipe.errors import ParamsError
from peftpipe.io import read_json
from peftpipe.methods import METHODS, check_options, fitting, get_method
from peftpipe.params import parse_params, write_params

NER_METHODS = [name for name in fitting("token_classification") if name != "qlora"]  # qlora: test_quantized


@pytest.mark.parametrize("name", NER_METHODS)
def test_method_trains_evaluates_and_exports(tiny_project, tiny_model_dir, name, capsys):
    write_params(tiny_project / "params.yaml", {"peft": {"method": name}, "train": {"max_steps": 30}})
    for stage in ("download", "split", "tokenize_align", "baseline"):
        run_stage(stage)
    method = get_method(name)
    from peftpipe.tasks import token_classification

    misfit = method.misfit_model(token_classification.load_model(str(tiny_model_dir), ["O", "B-PER"]))
    if misfit:  # prefix tuning on a transformers release whose BERT takes no past_key_values
        with pytest.raises(SystemExit):
            run_stage("train")
        assert f"error: params.yaml: peft.method {name}: BertForTokenClassification takes no past_key_values" \
            in capsys.readouterr().err
        assert not (tiny_project / "models/adapter").exists()
        return
    for stage in ("train", "evaluate", "export"):
        run_stage(stage)
    train = read_json(tiny_project / "metrics/train.json")
    assert train["steps"] == 30 and train["train_loss"] > 0
    assert (train["trainable_share"] == 1.0) == (name == "none")
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


def test_prompt_methods_are_refused_for_token_classification():
    refused = sorted(set(METHODS) - set(fitting("token_classification")))
    assert refused == ["p_tuning", "prompt_tuning"]
    for name in refused:
        with pytest.raises(ParamsError, match=f"peft.method: got '{name}', expected none, lora"):
            parse_params({"peft": {"method": name}})
    assert parse_params({"task": {"kind": "sequence_classification"}, "peft": {"method": "prompt_tuning"}})


@pytest.mark.parametrize(("method", "options", "message"), [
    ("lora", {"use_dorra": True}, "peft.options.use_dorra: not an option of LoraConfig (peft.method lora) "
                                  "(did you mean 'use_dora'?)"),
    ("lora", {"use_dora": "yes"}, "peft.options.use_dora: expected true or false (LoraConfig.use_dora), got 'yes'"),
    ("ia3", {"r": 8}, "peft.options.r: not an option of IA3Config (peft.method ia3)"),
    ("lora_plus", {"loraplus_lr_ratio": "high"}, "peft.options.loraplus_lr_ratio: expected a number, got 'high'"),
    ("none", {"r": 8}, "peft.options: full fine-tuning (peft.method none) takes no options, got r"),
])
def test_method_options_are_checked_against_the_peft_config(method, options, message):
    with pytest.raises(ParamsError) as err:
        check_options(get_method(method), options)
    assert message in str(err.value) and "\n" not in str(err.value)


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
                           "train": {"learning_rate": 1e-3}})
    model = token_classification.load_model(str(tiny_model_dir), ["O", "B-PER", "I-PER"])
    model = adapters.wrap(model, params, "TOKEN_CLS", ["classifier"])
    optimizer = get_method("lora_plus").optimizer(model, params)
    rates = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            rates[names[id(parameter)]] = group["lr"]
    a = {r for n, r in rates.items() if "lora_A" in n}
    b = {r for n, r in rates.items() if "lora_B" in n}
    assert a == {1e-3} and b == {8e-3}


def test_prefix_tuning_fits_only_models_that_take_past_key_values():
    import torch

    class Encoder(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    class CachedEncoder(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, past_key_values=None):
            return input_ids

    class Head(torch.nn.Module):
        base_model_prefix = "encoder"

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, labels=None):
            return self.encoder(input_ids)

    prefix = get_method("prefix_tuning")
    assert "Head takes no past_key_values" in prefix.misfit_model(Head(Encoder()))
    assert prefix.misfit_model(Head(CachedEncoder())) is None  # through the backbone, as peft does
    assert get_method("lora").misfit_model(Head(Encoder())) is None


def test_methods_command_queues_what_fits_and_tabulates_the_runs(tmp_path, monkeypatch):
    from peftpipe import method_sweep

    queued = []
    names = method_sweep.queue("token_classification", run=queued.append)
    assert names == [f"method-{n}" for n in fitting("token_classification")] and "method-p_tuning" not in names
    assert queued[1] == ["dvc", "exp", "run", "--queue", "-n", "method-lora", "-S", "peft.method=lora"]

    def run(name, f1, share, seconds, ms):
        return {"name": name, "data": {
            "params": {"params.yaml": {"data": {"seed": 42, "peft": {"method": name[7:]}}}},
            "metrics": {"metrics/eval.json": {"data": {"overall": {"f1": f1, "f1_ci": {"low": f1 - 0.1, "high": f1 + 0.1}}}},
                        "metrics/train.json": {"data": {"trainable_share": share, "train_seconds": seconds}},
                        "metrics/export.json": {"data": {"merged_ms_per_example": ms}}}}}

    shown = [{"rev": "abc", "data": {}, "experiments": [{"revs": [
        run("method-lora", 0.48, 0.008, 150.0, 9.0), run("method-dora", 0.5, 0.009, 210.0, 9.1),
        {"name": "r8", "data": {"params": {"params.yaml": {"data": {}}}, "metrics": {}}},
        {**run("method-ia3", 0.9, 0.001, 1.0, 1.0), "rev": "workspace"}]}]}]  # still running: not a result
    found = method_sweep.rows(shown)
    assert [r["method"] for r in found] == ["dora", "lora"]  # best first; other experiments left out
    text = method_sweep.table(found)
    assert "dora            0.5000 [0.4000, 0.6000]" in text and "0.80%" in text and "150" in text
