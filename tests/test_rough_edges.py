"""The rough edges a new user hit, each with the test that fails without its fix: init says
what it kept and which split each file became and never renames the recipe; params are
written so that every YAML reader reads them the same; --version."""

from __future__ import annotations

import shutil

import yaml
from click.testing import CliRunner
from conftest import ROOT

from peftpipe.cli import main


def test_init_keeps_the_recipe_says_what_it_kept_and_which_split_each_file_became(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs/test.csv").write_text("text,label\n" + "".join(
        f"{w} story {i},{['no', 'yes'][i % 2]}\n" for i, w in enumerate(["alice", "bob"] * 20)))
    result = CliRunner().invoke(main, ["init", "inputs/test.csv"])
    assert result.exit_code == 0, result.output
    assert "inputs/test.csv -> the train split (validation and test are carved from it" in result.output
    assert "kept the rest, from recipe 'default': model.name all-MiniLM-L6-v2, peft.method lora" in result.output
    assert "model and method are the defaults" not in result.output
    written = (tmp_path / "params.yaml").read_text()
    read = yaml.safe_load(written)  # PyYAML: a YAML 1.1 reader
    assert read["recipe"] == "default"  # not "test", a recipe that does not exist
    assert read["data"]["columns"]["text_pair"] is None and "text_pair: null" in written
    # The schema's descriptions stay beside the keys init set.
    assert "files:                 # local only: {train: inputs/..., validation: ..., test: ...}" in written


def test_params_are_written_so_every_yaml_reader_reads_the_same(tmp_path):
    from peftpipe.params import load_params, write_params

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    write_params(path, {"data": {"labels": ["no", "yes", "off", "null", "On"]}})
    text = path.read_text()
    assert yaml.safe_load(text)["data"]["labels"] == ["no", "yes", "off", "null", "On"]  # YAML 1.1 (PyYAML)
    assert load_params(path).data.labels == ["no", "yes", "off", "null", "On"]  # YAML 1.2 (ruamel, DVC)


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("peftpipe ") and result.output.strip()[-1].isdigit()
