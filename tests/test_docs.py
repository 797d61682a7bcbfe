"""The user's guide stays a guide and its examples stay true: README.md is short, and every
block in it that shows output is what the code prints (run here on small inputs)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, venv_env

README = (ROOT / "README.md").read_text()
PEFTPIPE = str(Path(sys.executable).parent / "peftpipe")


def block_after(marker: str) -> list[str]:
    """The lines of the first ``` block that starts after ``marker``."""
    start = README.index("```", README.index(marker)) + 3
    return README[start:README.index("```", start)].strip("\n").splitlines()


def test_the_readme_is_a_short_guide_pointing_at_pages_that_exist():
    assert len(README.splitlines()) <= 300
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / link).is_file(), link
    for word in ("this round", "the issue", "session"):  # project history lives in commit messages
        assert word not in README.lower()


def test_the_init_example_is_what_init_prints(tmp_path):
    shown = block_after("one line instead of guessing")
    commands = [line[2:] for line in shown if line.startswith("$ ")]
    expected = [line for line in shown if not line.startswith("$ ")]
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "inputs").mkdir()
    printed = []
    for command in commands:
        command = command.split("  #")[0].split()
        program = [sys.executable, str(ROOT / command[1])] if command[0] == "python" else [PEFTPIPE]
        result = subprocess.run(program + command[2 if command[0] == "python" else 1:], cwd=tmp_path,
                                env=venv_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        if command[0] != "python":
            printed += result.stdout.splitlines()
    assert printed == expected


def test_the_compare_example_has_the_shape_compare_prints():
    from peftpipe.tools.compare import Difference, table

    shown = block_after("Measured here (2026-12-05")
    made = table("HEAD", "r8", [Difference("f1", 0.5, 0.4, -0.2, 0.1, 0.5, 0.5),
                                Difference("precision", 0.5, 0.4, -0.2, 0.1, 0.5, 0.6)], 239).splitlines()
    number = re.compile(r"[+-]?\d+\.\d+")
    assert number.sub("N", shown[0]) == number.sub("N", made[0]) and shown[1] == made[1]
    assert number.sub("N", shown[2]) == number.sub("N", made[2])  # the primary metric first
    assert number.sub("N", shown[-1]).replace("3 other", "1 other") == number.sub("N", made[-1])
