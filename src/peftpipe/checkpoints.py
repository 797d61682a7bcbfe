"""Resumable training: checkpoints that are trusted only when complete, and only for the
run they belong to.

DVC dropped its own checkpoints (dvc #9221), so resuming goes through the Trainer. The
folder (train's --checkpoint-dir) is deliberately not a DVC output, so DVC leaves it alone
when the stage reruns after an interruption, and a clone that pulled the outputs from a
remote has nothing missing (dvc.yaml says the same). A checkpoint counts only once a marker file is written
after the Trainer has finished saving it; anything else is a partial write and is deleted.
A fingerprint of the params and data the run trains on keeps a changed recipe (say
``lora.r=8``) from resuming someone else's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from peftpipe.io import read_json, write_json
from peftpipe.params import Params

MARKER = "COMPLETE"
FINGERPRINT_FILE = "run.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def fingerprint(params: Params, data_dir: Path, settings: Path) -> str:
    """Hash of what decides the training trajectory, exactly what training reads: seed, task,
    model and train, the method's settings (the settings stage's file: peft and only the
    sections the method reads) and the data. The data by what stands for its bytes, not the
    bytes again (the stage has just loaded them): the saved datasets' own fingerprints
    (state.json, which `datasets` derives from the rows and every transform), the split
    list and the label list."""
    digest = hashlib.sha256()
    sections = {"seed": params.seed, **{name: getattr(params, name).model_dump() for name in ("task", "model", "train")}}
    digest.update(json.dumps(sections, sort_keys=True).encode())
    digest.update(Path(settings).read_bytes())
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file() and p.suffix == ".json"):
        digest.update(path.relative_to(data_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def step_of(checkpoint: Path) -> int:
    """The step a checkpoint folder (checkpoint-N) was saved at."""
    match = _STEP.match(checkpoint.name)
    if not match:
        raise ValueError(f"{checkpoint}: not a checkpoint-N folder")
    return int(match.group(1))


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return sorted(found)


def prepare(folder: Path, run_fingerprint: str) -> Path | None:
    """Make ``folder`` safe to resume from; return the latest complete checkpoint, if any."""
    folder.mkdir(parents=True, exist_ok=True)
    recorded = folder / FINGERPRINT_FILE
    if not recorded.exists() or read_json(recorded).get("fingerprint") != run_fingerprint:
        clear(folder)
        write_json(recorded, {"fingerprint": run_fingerprint})
    latest = None
    for _, path in _checkpoints(folder):
        if (path / MARKER).exists():
            latest = path
        else:
            shutil.rmtree(path)  # interrupted while saving
    return latest


def clear(folder: Path) -> None:
    """Remove every checkpoint (after a finished run, or when the recipe changed). A folder
    never made (the accelerate loop keeps no checkpoints) has none to remove."""
    if not folder.is_dir():
        return
    for _, path in _checkpoints(folder):
        shutil.rmtree(path)


def marker_callback():
    """A TrainerCallback that marks a checkpoint complete; on_save runs after it is written."""
    from transformers import TrainerCallback

    class MarkComplete(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir():
                (path / MARKER).write_text(f"{state.global_step}\n")

    return MarkComplete()
