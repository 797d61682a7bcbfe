"""Nothing from outside is trusted blindly, and nothing is written where it does not belong:
recipe names are names, output folders keep the umask's modes. (That no command writes into
the user's home folder is checked beside the quiet run, in test_quiet.py: one run of every
stage for both.)"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT

from peftpipe.cli import main

PEFTPIPE = str(Path(sys.executable).parent / "peftpipe")


@pytest.mark.parametrize("name", ["../../elsewhere/x", "/etc/passwd", "recipes/default", "..", ".hidden", "a b"])
def test_a_recipe_is_a_name_in_recipes_never_a_path(tmp_path, monkeypatch, name):
    import shutil

    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/x.yaml").write_text("seed: 7\n")
    monkeypatch.chdir(tmp_path / "recipes")  # ../../elsewhere/x from recipes/ would reach it
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["recipe", name])
    assert result.exit_code == 2, result.output
    assert f"recipe {name!r}: not a recipe name (letters, digits, '-', '_', no path); known: " in result.output
    assert not (tmp_path / "params.yaml").exists()


def test_a_params_files_recipe_key_cannot_name_a_path(tmp_path, monkeypatch):
    """`recipe:` in params.yaml is read to find a user's edits: a path there reads nothing
    (seed 7 from ../x.yaml is not taken as the recipe's: it is an edit over the defaults)."""
    from peftpipe.tools import recipes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "x.yaml").write_text("seed: 7\n")
    from peftpipe.params import Params

    current = {**Params().model_dump(), "recipe": "../x", "seed": 7}
    assert recipes.edits(current) == {"seed": (7, 42)}


def test_an_output_folder_gets_the_umasks_modes_whatever_a_library_wrote(tmp_path):
    """Some writers create files 0600 (weights); an output's files are all readable alike."""
    from peftpipe.io import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "export", directory=True) as folder:
            (folder / "model.safetensors").write_bytes(b"x")
            os.chmod(folder / "model.safetensors", 0o600)
            (folder / "sub").mkdir(mode=0o700)
            (folder / "sub/config.json").write_text("{}")
    finally:
        os.umask(old)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "export").rglob("*")}
    assert modes == {"model.safetensors": 0o644, "sub": 0o755, "config.json": 0o644}


def test_init_flags_look_alike_classes_and_cuts_a_long_class_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [("good day", "pos"), ("fine", "Pos"), ("bad day", "neg"), ("awful", "neg\u200b")] * 5
    (tmp_path / "mine.csv").write_text("text,label\n" + "".join(f"{t},{c}\n" for t, c in rows))
    result = CliRunner().invoke(main, ["init", "mine.csv"])
    assert result.exit_code == 0, result.output
    assert "init: check labels 'Pos', 'pos' differ only in case, spacing or invisible characters" in result.output
    assert "labels 'neg', 'neg\\u200b' differ only" in result.output  # shown escaped: visible
    many = tmp_path / "many.csv"
    many.write_text("text,label\n" + "".join(f"text {i} here,class{i % 500}\n" for i in range(2000)))
    result = CliRunner().invoke(main, ["init", "many.csv"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "500 classes" in line)
    assert line.endswith("and 492 more") and len(line) < 300


@pytest.mark.parametrize("url, message", [
    ("notaurl", "tune.storage notaurl: not a database URL; give e.g. postgresql://user@host:5432/db"),
    ("mysql://me:secret@localhost/db", "tune.storage mysql://me:***@localhost/db: its database driver MySQLdb is "
                                       "not installed; install it"),
    ("sqlite:////no/such/folder/study.db", "tune.storage sqlite:////no/such/folder/study.db: cannot open the "
                                           "database (unable to open database file); check that it runs"),
])
def test_a_storage_that_cannot_be_opened_is_one_line_with_its_password_hidden(url, message):
    from peftpipe.errors import ParamsError
    from peftpipe.params import Params
    from peftpipe.tools import tune

    with pytest.raises(ParamsError) as raised:
        tune.open_study(Params.model_validate({"tune": {"storage": url}}))
    assert message in str(raised.value) and "secret" not in str(raised.value) and "\n" not in str(raised.value)
