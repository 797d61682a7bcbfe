"""What DVC's queued and temporary experiments need from the workspace they leave.

`dvc exp run --queue` and `--temp` run in a copy of the repository under .dvc/tmp/exps:
files inside the repository come along, a relative path that leaves it (a recipe's
../shared/corpora, a model folder next to the project) does not resolve there. The commands
that start such runs for the user (`peftpipe methods --queue`, `peftpipe tune`) pin those
paths to absolute ones with `-S`, so the runs read what the workspace reads.
"""

from __future__ import annotations

from pathlib import Path

from peftpipe.params import Params


def pinned_paths(params: Params, root: Path | None = None) -> dict[str, str]:
    """``{param key: absolute path}`` for each relative path in ``params`` that points outside
    ``root`` (the repository: the current folder)."""
    root = (root or Path.cwd()).resolve()
    paths = {f"data.files.{split}": path for split, path in params.data.files.items()}
    paths |= {f"eval.extra.{name}": path for name, path in params.eval.extra.items()}
    if params.model.source == "local":
        paths["model.name"] = params.model.name
    pinned = {}
    for key, path in paths.items():
        if Path(path).is_absolute():
            continue
        resolved = (root / path).resolve()
        if not resolved.is_relative_to(root):
            pinned[key] = str(resolved)
    return pinned


def set_options(values: dict) -> list[str]:
    """``{param key: value}`` as `dvc exp run` options: `-S ++key=value`, hydra's add-or-override,
    because a params.yaml may leave keys at the schema's defaults by omitting them."""
    return [option for key, value in values.items() for option in ("-S", f"++{key}={override_text(value)}")]


def override_text(value) -> str:
    """A value as hydra's override grammar reads it: [a,b] for a list of names."""
    if isinstance(value, list):
        return "[" + ",".join(override_text(item) for item in value) + "]"
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def commit_of(rev: str) -> str:
    """An experiment name as its commit (dvc.api reads git revisions); others as given."""
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import resolve_name

    with Repo(".") as repo:
        ref = resolve_name(repo.scm, rev).get(rev)
        return repo.scm.get_ref(str(ref)) if ref else rev
