"""The reference recipes: every preset is a complete, valid params file; cpu presets point
at the real corpora in ../shared; full presets name hub models and data sets."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, SHARED_CORPORA

from peftpipe.cli import main as cli
from peftpipe.models import load_tokenizer, resolve_model
from peftpipe.params import load_params

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
NAMES = [p.stem for p in RECIPES]


def test_the_reference_recipes_exist():
    assert {"conll-ner-cpu", "conll-ner-full", "conll-ner-full-lora", "bionlp-lora-cpu",
            "bionlp-lora-full", "mrpc-ptuning-cpu", "mrpc-ptuning-full", "agnews-qlora-cpu",
            "agnews-qlora-full"} <= set(NAMES)


@pytest.mark.parametrize("path", RECIPES, ids=NAMES)
def test_recipe_is_valid_and_names_itself(path):
    params = load_params(path)
    assert params.recipe == path.stem
    if path.stem.endswith("-full") or "-full-" in path.stem:
        # Tutorial size: hub model and data, resolved by name (no download here).
        assert params.model.source == "hub" and params.data.source == "hub" and params.uses_hub()
        assert resolve_model(params.model) == params.model.name
        assert params.train.mixed_precision == "bf16"
    else:  # runs here: packaged model, data from ../shared/corpora or a PyPI package
        assert params.model.source == "packaged" and params.data.source in ("local", "packaged")
        for name in params.data.files.values():
            assert name.startswith("../shared/corpora/"), name


@pytest.mark.skipif(not SHARED_CORPORA.exists(), reason="needs ../shared/corpora")
@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem.endswith("-cpu")], ids=lambda p: p.stem)
def test_cpu_recipe_data_is_there_and_fits_its_labels(path):
    from peftpipe.sources import load_raw

    params = load_params(path)
    if params.data.source == "packaged":
        import importlib.metadata

        from peftpipe.sources import PACKAGED_DATASETS

        distribution = PACKAGED_DATASETS[params.data.name].distribution
        try:
            importlib.metadata.distribution(distribution)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{distribution} is not installed (README: the recipes' set-up)")
    for name in params.data.files.values():
        assert (ROOT / name).is_file(), name
    import os

    here = os.getcwd()
    os.chdir(ROOT)  # recipe paths are relative to the repository root
    try:
        raw = load_raw(params.data, params.task.kind)
    finally:
        os.chdir(here)
    if params.data.labels:
        assert raw.labels == list(params.data.labels)  # every label is in the recipe's label set
    if params.split.per_class:
        assert len(raw.labels) > 2 and set(params.split.per_class) <= {"train", "validation", "test"}


def test_recipe_command_switches_params_yaml(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    for path in RECIPES:
        (tmp_path / "recipes" / path.name).write_text(path.read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    listed = runner.invoke(cli, ["recipe"])
    assert listed.exit_code == 0 and "conll-ner-cpu" in listed.output.split()
    done = runner.invoke(cli, ["recipe", "bionlp-lora-cpu"])
    assert done.exit_code == 0, done.output
    assert load_params(tmp_path / "params.yaml").recipe == "bionlp-lora-cpu"
    unknown = runner.invoke(cli, ["recipe", "bionlp"])
    assert unknown.exit_code == 2 and "no recipe 'bionlp' in recipes/; known: agnews-qlora-cpu, agnews-qlora-full, bionlp-lora-cpu" in unknown.output
    assert load_params(tmp_path / "params.yaml").recipe == "bionlp-lora-cpu"  # untouched by the failure


def test_byte_level_bpe_tokenizers_get_a_prefix_space_for_word_inputs(tmp_path):
    """RoBERTa-style tokenizers (bionlp-lora-full's roberta-large) read words one by one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["protein binds the gene", "the cell line expresses protein"] * 50, trainer)
    RobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                         unk_token="<unk>", mask_token="<mask>").save_pretrained(tmp_path)

    tokenizer = load_tokenizer(str(tmp_path))
    words = tokenizer(["protein", "binds"], is_split_into_words=True, add_special_tokens=False)
    sentence = tokenizer(" protein binds", add_special_tokens=False)
    assert words["input_ids"] == sentence["input_ids"]  # each word starts like it does in running text


# The hub data sets the full presets name, as the hub serves them (columns and ClassLabel
# names, from their dataset cards): a preset whose columns or labels do not fit fails here.
HUB_SCHEMAS = {
    ("glue", "mrpc"): ({"sentence1": "text", "sentence2": "text", "label": ["not_equivalent", "equivalent"],
                        "idx": "int"}, ["train", "validation", "test"]),
    ("ag_news", None): ({"text": "text", "label": ["World", "Sports", "Business", "Sci/Tech"]}, ["train", "test"]),
    ("financial_phrasebank", "sentences_allagree"): (
        {"sentence": "text", "label": ["negative", "neutral", "positive"]}, ["train"]),
    ("eriktks/conll2003", None): ({"tokens": "words", "ner_tags": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC",
                                                                    "I-LOC", "B-MISC", "I-MISC"]},
                                  ["train", "validation", "test"]),
    # tner stores tag ids without names (its label2id is a separate file): data.labels names them.
    ("tner/bionlp2004", None): ({"tokens": "words", "tags": "int ids"}, ["train", "validation", "test"]),
}


def fake_hub_dataset(schema: dict, splits: list[str]):
    import datasets

    features, rows = {}, {}
    for column, kind in schema.items():
        if kind == "text":
            features[column], rows[column] = datasets.Value("string"), ["a text", "another text"]
        elif kind == "words":
            features[column], rows[column] = datasets.Sequence(datasets.Value("string")), [["a"], ["b"]]
        elif kind == "int ids":
            features[column], rows[column] = datasets.Sequence(datasets.Value("int32")), [[0], [1]]
        elif kind == "int":
            features[column], rows[column] = datasets.Value("int32"), [0, 1]
        elif column.endswith("tags"):
            features[column] = datasets.Sequence(datasets.ClassLabel(names=kind))
            rows[column] = [[0], [1]]
        else:
            features[column], rows[column] = datasets.ClassLabel(names=kind), [0, 1]
    table = datasets.Dataset.from_dict(rows, features=datasets.Features(features))
    return datasets.DatasetDict({split: table for split in splits})


@pytest.mark.parametrize("path", [p for p in RECIPES if "-full" in p.stem], ids=lambda p: p.stem)
def test_full_recipe_fits_its_hub_data_set(path, monkeypatch):
    import datasets

    from peftpipe.sources import load_raw

    params = load_params(path)
    key = (params.data.name, params.data.config)
    if key not in HUB_SCHEMAS:
        pytest.skip(f"no schema on record for {key}")
    asked = []

    def load_dataset(name, config=None, revision=None):
        asked.append((name, config))
        return fake_hub_dataset(*HUB_SCHEMAS[key])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    raw = load_raw(params.data, params.task.kind)
    assert asked == [key]
    assert raw.labels == list(params.data.labels)  # the preset's label order is the hub's id order
    assert set(raw.splits) == set(HUB_SCHEMAS[key][1])
