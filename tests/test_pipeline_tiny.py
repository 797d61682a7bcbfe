"""The seven stages, in order, on a tiny random-weight BERT and synthetic NER data."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, STAGES, run_stage, stage_args

from peftpipe.io import read_json


def _venv_env() -> dict:
    """The environment with this interpreter's bin folder (dvc, peftpipe) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}




def schema(metrics: dict) -> set:
    return {(k, tuple(sorted(v))) if isinstance(v, dict) and k == "overall" else k for k, v in metrics.items()}


@pytest.fixture
def finished_project(tiny_project):
    for name in STAGES:
        run_stage(name)
    return tiny_project


def test_all_stages_run_and_agree(finished_project):
    root = finished_project
    assert sorted(p.name for p in (root / "data/split").iterdir()) == [
        "labels.json", "test.parquet", "train.parquet", "validation.parquet"]
    data = read_json(root / "metrics/data.json")
    assert data["test"]["rows"] == 30 and data["train"]["rows"] + data["validation"]["rows"] == 120

    baseline, evaluated = read_json(root / "metrics/baseline.json"), read_json(root / "metrics/eval.json")
    # Same schema so `dvc metrics diff` lines up; baseline adds the trivial reference.
    assert set(baseline) - set(evaluated) == {"reference"}
    assert baseline["overall"].keys() == evaluated["overall"].keys() == baseline["reference"]["overall"].keys()
    assert baseline["reference"]["overall"]["f1"] == 0.0
    # The synthetic tags follow from the words: even a tiny model learns them.
    assert evaluated["overall"]["f1"] > baseline["overall"]["f1"] + 0.3

    train = read_json(root / "metrics/train.json")
    assert 0 < train["trainable_share"] < 1 and train["steps"] == 10 * 14  # 108 train rows / 8 per batch
    # A real training number, pinned: a change to the loss, the schedule, the batching or the
    # seeding moves it. (The tolerance allows other CPUs' float kernels, not other behaviour.)
    assert train["train_loss"] == pytest.approx(0.339051, rel=1e-3)
    assert train["validation"]["loss"] == pytest.approx(0.034601, rel=1e-2)

    adapter = root / "models/adapter"
    assert (adapter / "adapter_model.safetensors").exists() and read_json(adapter / "peftpipe.json")["pairs"] is False
    assert "classifier" in json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"]

    check = read_json(root / "metrics/export.json")
    assert check["prediction_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-3
    card = (root / "models/export/README.md").read_text()
    assert f"{evaluated['overall']['f1']:.4f}" in card and "lora" in card
    assert "transformers 5." in card and "108 |" in card  # versions, train rows
    assert "- Recipe: default" in card and "(loss_curve.png)" in card
    png = (root / "models/export/loss_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000  # a drawn figure, not an empty file

    for name in ("data", "baseline", "train", "eval", "export"):
        made = read_json(root / f"metrics/{name}.json")["provenance"]
        assert set(made) == {"git", "seed", "versions", "hardware"}, name
        assert "torch 2." in made["versions"] and "peft 0." in made["versions"]
    assert read_json(root / "metrics/eval.json")["provenance"]["seed"] == 42

    lines = (root / "data/predictions/test.jsonl").read_text().splitlines()
    assert len(lines) == 30 and set(json.loads(lines[0])) == {"tokens", "gold", "predicted"}


def test_exported_model_loads_plainly_and_predicts(finished_project):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(finished_project / "models/export")
    assert model.config.id2label[0] == "O"
    assert not any("lora" in name for name, _ in model.named_parameters())

    from peftpipe.cli import main

    result = CliRunner().invoke(main, ["predict", "--json", "alice visited paris", "bob works at acme"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["alice visited paris", "bob works at acme"]
    for row in rows:
        for span in row["entities"]:
            assert row["text"][span["start"]:span["end"]] == span["word"]
            assert span["type"] in {"PER", "LOC", "ORG"}


@pytest.mark.slow  # two whole tiny pipelines: with the end-to-end runs (the quick suite stays under 5 min)
def test_same_seed_gives_identical_eval_metrics(tiny_project):
    for name in STAGES[:6]:
        run_stage(name)
    first = (tiny_project / "metrics/eval.json").read_text()
    run_stage("train")
    run_stage("evaluate")
    assert (tiny_project / "metrics/eval.json").read_text() == first


def test_a_failing_stage_leaves_no_output(tiny_project, monkeypatch, capsys):
    run_stage("download")
    run_stage("split")
    import peftpipe.artifacts

    def broken(datasets, labels, folder):
        (folder / "partial.arrow").write_text("half")
        raise OSError("disk full")  # as if it failed half-way through writing

    monkeypatch.setattr(peftpipe.artifacts, "save_tokenized", broken)
    with pytest.raises(SystemExit) as stopped:  # an error no reader translated: one line all the same
        run_stage("tokenize_align")
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: OSError: disk full (in ")
    assert not (tiny_project / "data/tokenized").exists()
    assert not [p for p in (tiny_project / "data").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("lora:\n  rank: 8\n", "error: params.yaml: unknown key 'lora.rank' (did you mean 'lora.r'?)"),
        ("lora:\n  r: eight\n", "error: params.yaml: lora.r: expected an integer, got 'eight' (str)"),
    ],
)
def test_bad_params_stop_a_stage_with_one_line(tmp_path, yaml_text, expected):
    (tmp_path / "params.yaml").write_text(yaml_text)
    result = subprocess.run([sys.executable, str(ROOT / "stages/download.py"), *stage_args("download")], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(expected)
    assert not (tmp_path / "data").exists()


def test_check_command_validates_params_files(tmp_path):
    from peftpipe.cli import main

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("lora:\n  r: 8\n")
    bad.write_text("train:\n  epochs: many\n")
    result = CliRunner().invoke(main, ["check", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"ok: {good}" in result.output and "train.epochs: expected a number" in result.output


def plot_files() -> set[str]:
    from ruamel.yaml import YAML

    pipeline = YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())
    return {path for plot in pipeline["plots"] for spec in plot.values() for path in spec["y"]}


def test_plot_declarations_resolve_to_files_the_stages_write(finished_project):
    files = plot_files()
    assert len(files) == 7
    for path in files:
        assert (finished_project / path).is_file(), path
    curve = (finished_project / "metrics/curves/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "loss"] and len(curve) > 5
    confusion = json.loads((finished_project / "metrics/plots/eval/confusion.json").read_text())
    assert len(confusion) == sum(len(json.loads(line)["tokens"]) for line in
                                 (finished_project / "data/predictions/test.jsonl").read_text().splitlines())
    assert {row["actual"] for row in confusion} <= {"O", "PER", "LOC", "ORG"}


@pytest.mark.slow  # dvc init and dvc plots show in subprocesses
def test_dvc_plots_page_has_no_external_scripts(finished_project):
    """`dvc plots show` with the committed template: vega inlined, no CDN, all plots there."""
    shutil.copy(ROOT / "dvc.yaml", finished_project / "dvc.yaml")
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=finished_project, check=True, env=_venv_env())
    shutil.copytree(ROOT / ".dvc/plots", finished_project / ".dvc/plots")
    shutil.copy(ROOT / ".dvc/config", finished_project / ".dvc/config")
    subprocess.run(["dvc", "plots", "show", "-o", "page"], cwd=finished_project, check=True,
                   capture_output=True, env=_venv_env())
    page = (finished_project / "page/index.html").read_text()
    assert not re.search(r"<script[^>]+src=", page), "a script is loaded from elsewhere"
    assert not re.search(r"<link[^>]+href=[\"']https?:", page)
    assert "vega-embed" in page and page.count("vegaEmbed(") >= 5
    for title in ("Loss", "Validation F1", "Confusion, trained model"):
        assert title in page


def test_accelerate_loop_and_trainer_agree(tiny_project):
    """train.loop: accelerate (the course's custom loop) gives the Trainer's metrics schema
    and, with the same seed and data, a close score. The accelerate loop runs first, on a
    project with no models/checkpoints yet (a fresh clone: the Trainer's run creates it)."""
    for name in ("download", "split", "tokenize_align"):
        run_stage(name)
    assert not (tiny_project / "models/checkpoints").exists()
    scores, reports = {}, {}
    for loop in ("accelerate", "trainer"):
        text = (tiny_project / "params.yaml").read_text()
        (tiny_project / "params.yaml").write_text(re.sub(r"loop: \w+", f"loop: {loop}", text))
        run_stage("train")
        run_stage("evaluate")
        reports[loop] = read_json(tiny_project / "metrics/train.json")
        scores[loop] = read_json(tiny_project / "metrics/eval.json")["overall"]["f1"]
        curves = tiny_project / "metrics/curves/plots/metrics"
        assert {p.relative_to(curves).as_posix() for p in curves.rglob("*.tsv")} == {
            "train/loss.tsv", "eval/loss.tsv", "eval/f1.tsv"}, loop
    assert set(reports["trainer"]) == set(reports["accelerate"])
    assert reports["trainer"]["steps"] == reports["accelerate"]["steps"] == 140
    assert scores["accelerate"] > 0.8 and abs(scores["accelerate"] - scores["trainer"]) < 0.05, scores


def test_loss_curve_png_is_drawn_even_when_no_loss_was_logged(tmp_path):
    """A run shorter than train.logging_steps logs no loss; export must still finish."""
    from peftpipe.model_card import loss_curve_png

    loss_curve_png(tmp_path / "no-curves", tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes().startswith(b"\x89PNG")


def _set_extra(project: Path, extra: dict) -> None:
    from peftpipe.params import write_params

    write_params(project / "params.yaml", {"eval": {"extra": extra}})


def test_extra_test_sets_are_scored_like_test(finished_project, capsys):
    """eval.extra: the test file again (in CoNLL columns) must score exactly as test does;
    another set gets its own scores; both reach the model card and `compare --set`."""
    from conftest import make_sentences, write_jsonl

    from peftpipe.tools.compare import load_predictions, predictions_path

    root = finished_project
    test_rows = [json.loads(line) for line in (root / "corpus/test.jsonl").read_text().splitlines()]
    (root / "inputs").mkdir()
    (root / "inputs/again.conll").write_text(
        "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(r["tokens"], r["tags"])) for r in test_rows) + "\n")
    write_jsonl(root / "corpus/later.jsonl", make_sentences(17, seed=9))
    _set_extra(root, {"again": "inputs/again.conll", "later": "corpus/later.jsonl"})
    run_stage("evaluate")
    said = capsys.readouterr().out
    assert "eval.extra.later (corpus/later.jsonl) is outside inputs/" in said
    assert "eval.extra.again" not in said  # under inputs/: DVC watches it
    evaluated = read_json(root / "metrics/eval.json")
    again, later = evaluated["extra"]["again"], evaluated["extra"]["later"]
    assert again["overall"] == evaluated["overall"] and again["examples"] == 30
    assert later["examples"] == 17 and set(later["overall"]) == set(evaluated["overall"])
    assert later["overall"]["f1_ci"]["low"] <= later["overall"]["f1"] <= later["overall"]["f1_ci"]["high"]
    assert again["truncation"]["rows"] == 30 and later["truncation"]["rows"] == 17  # evaluate reports cuts per set
    run_stage("baseline")  # the untrained model and the reference, on the extra sets too
    baseline = read_json(root / "metrics/baseline.json")
    assert set(baseline["extra"]) == {"again", "later"}
    assert baseline["extra"]["again"]["overall"] == baseline["overall"]  # the test rows again: the same scores
    assert baseline["extra"]["again"]["reference"]["overall"] == baseline["reference"]["overall"]
    assert baseline["extra"]["later"]["examples"] == 17
    assert load_predictions("workspace", predictions_path("again")) == load_predictions("workspace")
    assert len(load_predictions("workspace", predictions_path("later")).rows) == 17
    run_stage("export")
    card = (root / "models/export/README.md").read_text()
    assert "### Other test sets (eval.extra)" in card and "| later | `corpus/later.jsonl` | 17 |" in card

    # A label the model was not trained on stops evaluate before any output is replaced.
    before = (root / "metrics/eval.json").read_text()
    (root / "bad.jsonl").write_text(json.dumps({"tokens": ["alice"], "tags": ["B-DRUG"]}) + "\n")
    _set_extra(root, {"odd": "bad.jsonl"})
    with pytest.raises(SystemExit):
        run_stage("evaluate")
    err = capsys.readouterr().err
    assert "eval.extra.odd (bad.jsonl): label(s) B-DRUG not in the label set" in err
    assert (root / "metrics/eval.json").read_text() == before


@pytest.mark.slow  # three stages of the tiny project first (~15 s)
def test_a_missing_extra_test_set_stops_training_before_it_starts(tiny_project, capsys):
    """Not an hour later in evaluate: the train stage checks eval.extra's files first."""
    for name in ("download", "split", "tokenize_align"):
        run_stage(name)
    _set_extra(tiny_project, {"later": "inputs/later.jsonl"})
    with pytest.raises(SystemExit):
        run_stage("train")
    err = capsys.readouterr().err
    assert "eval.extra.later (inputs/later.jsonl): file not found (the evaluate stage reads it after training" in err
    assert not (tiny_project / "models/adapter").exists() and not (tiny_project / "models/checkpoints").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    ({"test": "a.jsonl"}, "eval.extra.test: got 'a.jsonl', expected a name of letters"),
    ({"../x": "a.jsonl"}, "eval.extra.../x: got 'a.jsonl', expected a name of letters"),
    ({"later": " "}, "eval.extra.later: got ' ', expected non-empty names"),
    ({"later": ["a.jsonl"]}, "eval.extra.later: expected a string, got ['a.jsonl']"),
])
def test_bad_extra_test_set_params(extra, expected):
    from peftpipe.errors import ParamsError
    from peftpipe.params import parse_params

    with pytest.raises(ParamsError, match=re.escape(expected)):
        parse_params({"eval": {"extra": extra}})


def test_export_stops_when_the_merged_model_predicts_otherwise(finished_project, monkeypatch, capsys):
    """The export stage's own safety check, with a mismatch planted in the merge: the stage
    stops with one line and the previous export stays whole."""
    import torch

    from peftpipe import export

    card = (finished_project / "models/export/README.md").read_text()
    real_merge = export.merge

    def lossy_merge(model, info):
        merged = real_merge(model, info)
        with torch.no_grad():
            merged.classifier.weight.mul_(-1)  # as if a merge had lost the trained head
        return merged

    monkeypatch.setattr(export, "merge", lossy_merge)
    with pytest.raises(SystemExit) as stopped:
        run_stage("export")
    assert stopped.value.code == 2
    assert "error: the exported model's predictions differ from the adapter's on the test split" in capsys.readouterr().err
    assert (finished_project / "models/export/README.md").read_text() == card


@pytest.mark.slow
def test_bf16_autocast_trains_on_cpu_with_float32_weights(tiny_project, tmp_path):
    """train.mixed_precision bf16 without a GPU: the Trainer autocasts the forward to bf16 on
    the CPU (the bench's faster row) and keeps the weights it saves in float32."""
    import torch

    from peftpipe import adapters, training
    from peftpipe.artifacts import load_tokenized
    from peftpipe.methods import get_method
    from peftpipe.models import load_base
    from peftpipe.params import load_params
    from peftpipe.tasks import get_task

    for name in ("download", "split", "tokenize_align"):
        run_stage(name)
    params = load_params(tiny_project / "params.yaml")
    params = params.model_copy(update={"train": params.train.model_copy(update={"mixed_precision": "bf16",
                                                                                 "max_steps": 4})})
    task = get_task(params.task.kind)
    datasets, labels = load_tokenized(tiny_project / "data/tokenized")
    method = get_method(params.peft.method)
    model, tokenizer = load_base(params.model, task, labels, params.seed)
    model = adapters.wrap(model, method, task, params)
    seen = set()
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: seen.add(out.dtype) if module.training else None)
    summary = training.train(model, tokenizer, datasets, params, method, task, labels, tmp_path / "ck",
                             tmp_path / "curves")
    assert summary.steps == 4 and seen == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize(("precision", "flags", "expected"), [
    ("bf16", {"avx512f", "avx512_bf16"}, None),
    ("bf16", {"amx_bf16"}, None),
    ("bf16", {"avx512f", "avx2"}, "without bf16 in hardware"),
    ("fp16", {"avx512f"}, "fp16 on a CPU"),
    ("no", set(), None),
    ("bf16", None, None),  # flags unknown (not Linux): no guess
])
def test_precision_note_says_when_mixed_precision_will_not_pay_on_this_cpu(precision, flags, expected):
    from peftpipe.training import cpu_flags, precision_note

    note = precision_note(precision, False, flags)
    assert (note is None) if expected is None else (expected in note and note.startswith("train: "))
    assert precision_note(precision, True, flags) is None  # a GPU autocasts natively
    assert cpu_flags(ROOT / "no-such-cpuinfo") is None


def test_bf16_caps_onednn_kernel_cache_unless_the_user_set_it(monkeypatch):
    """bf16 on a CPU caps oneDNN's per-shape kernel cache (the bench: +28% peak RSS without
    it); float32 leaves it alone, and a user's own value wins."""
    import os

    from peftpipe.training import KERNEL_CACHE_SIZE, bound_kernel_cache

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    bound_kernel_cache("no")
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    bound_kernel_cache("bf16")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == KERNEL_CACHE_SIZE
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    bound_kernel_cache("bf16")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"
