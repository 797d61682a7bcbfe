"""bench/gpu_check.py, the script for the day a GPU is lent: its dry run (tiny models of the
full recipes' architectures, on the CPU) goes through the same code a CUDA run does."""

import math
import runpy

import pytest
from conftest import ROOT

GPU_CHECK = runpy.run_path(str(ROOT / "bench/gpu_check.py"))


def test_every_full_recipe_has_a_model_shape():
    from peftpipe.params import load_params
    from peftpipe.tools.recipes import params_text

    names = GPU_CHECK["full_recipes"]()
    assert len(names) >= 7 and all("-full" in name for name in names)
    for name in names:
        params_file = ROOT / "bench" / f".{name}.yaml"
        try:
            params_file.write_text(params_text(name))
            assert load_params(params_file).model.name in GPU_CHECK["SHAPES"], name
        finally:
            params_file.unlink()


def test_a_dry_run_trains_the_recipes_it_is_given_and_prints_one_table(tmp_path, capsys):
    rows = GPU_CHECK["main"](["--dry-run", "--steps", "2", "--recipes", "agnews-qlora-full", "conll-ner-full-lora",
                              "finphrase-prefix-full", "--no-two-processes", "--results", str(tmp_path)])
    said = capsys.readouterr().out
    assert [row["recipe"] for row in rows] == ["agnews-qlora-full", "conll-ner-full-lora", "finphrase-prefix-full"]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["steps"] == 2 and math.isfinite(row["loss"]) and row["train_s"] > 0
        assert f"| {row['recipe']} |" in said
    assert [row["four_bit"] for row in rows] == [True, False, False]  # qlora's base is the 4-bit one
    assert [row["method"] for row in rows] == ["qlora", "lora", "prefix_tuning"]
    assert len(list(tmp_path.glob("gpu-check-dry-*.json"))) == 1


def test_a_recipe_whose_stage_fails_is_a_row_with_the_stage_error(tmp_path, monkeypatch):
    def empty_files(params, folder, rows):
        (folder / "inputs").mkdir()
        for split in ("train", "test"):
            (folder / "inputs" / f"{split}.jsonl").write_text("")
        return {"train": "inputs/train.jsonl", "test": "inputs/test.jsonl"}

    monkeypatch.setitem(GPU_CHECK["check_recipe"].__globals__, "write_rows", empty_files)
    rows = GPU_CHECK["main"](["--dry-run", "--steps", "1", "--recipes", "conll-ner-full", "--results", str(tmp_path)])
    assert rows[0]["status"] == "failed" and "inputs/train.jsonl" in rows[0]["error"], rows


def test_without_cuda_the_real_run_refuses_and_says_how_to_dry_run(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        GPU_CHECK["main"]([])
    assert "--dry-run" in capsys.readouterr().err


@pytest.mark.slow
def test_a_full_dry_run_includes_two_processes(tmp_path):
    rows = GPU_CHECK["main"](["--dry-run", "--steps", "2", "--results", str(tmp_path)])
    assert all(row["status"] == "ok" for row in rows), rows
    assert rows[-1]["processes"] == 2 and rows[-1]["steps"] == 2
    assert {row["recipe"] for row in rows} >= set(GPU_CHECK["full_recipes"]())
