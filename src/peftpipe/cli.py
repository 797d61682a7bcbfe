"""The `peftpipe` command: predict with an exported model, check params files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from peftpipe.errors import InputError, ModelError, PeftpipeError


def _fail(err: Exception, debug: bool) -> None:
    if debug:
        raise err
    click.echo(f"error: {_error_line(err)}", err=True)
    sys.exit(2)


def _error_line(err: Exception) -> str:
    from peftpipe.limits import one_line
    from peftpipe.stage import unexpected

    return one_line(str(err) if isinstance(err, PeftpipeError) else unexpected(err))


def stdin_lines() -> list[str]:
    """The non-blank lines of stdin, read as UTF-8 with the line named when one is not."""
    from peftpipe.io import decode

    text = decode(sys.stdin.buffer.read(), "utf-8", "stdin", InputError,
                  "convert it first, e.g. iconv -f latin1 -t utf-8")
    return [line for line in text.splitlines() if line.strip()]


def not_utf8(text: str) -> str | None:
    """Why a command-line text is not UTF-8 (Python keeps each byte that is not as a lone
    surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raw = text[err.start]
        byte = f"byte 0x{ord(raw) - 0xDC00:02x}" if 0xDC80 <= ord(raw) <= 0xDCFF else f"character {raw!r}"
        return f"{byte} at character {err.start} is not UTF-8; convert the text first (e.g. iconv -f latin1 -t utf-8)"
    return None


def split_pair(line: str) -> dict:
    first, tab, second = line.partition("\t")
    if not tab or not first.strip() or not second.strip():
        raise click.BadParameter(f"{line!r}: --pair expects two texts separated by a tab", param_hint="TEXTS")
    return {"text": first, "text_pair": second}


@click.group()
@click.version_option(package_name="peftpipe", message="peftpipe %(version)s")
def main() -> None:
    """peftpipe: reproducible parameter-efficient fine-tuning on DVC."""


@main.command()
@click.argument("texts", nargs=-1)
@click.option("--model", "model_dir", default="models/export", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Exported model folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one line per text.")
@click.option("--pair", is_flag=True, help="Each text is a sentence pair, FIRST<TAB>SECOND (as MRPC).")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "int8"]), default="auto", show_default=True,
              help="PyTorch, or the exported ONNX graph (fp32, or int8) through ONNX Runtime; auto: the fp32 graph "
                   "where the export has one (it agreed with the trained model on every test prediction), else PyTorch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Texts run together, grouped by length (answers as one at a time); int8 runs one at a time.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def predict(texts: tuple[str, ...], model_dir: Path, as_json: bool, pair: bool, backend: str, batch_size: int,
            debug: bool) -> None:
    """Print the entities (NER), the class, or the label a generation model writes, for
    TEXTS (or each line of stdin), with the exported model."""
    from peftpipe import serving  # loads torch and transformers: only for this command

    if not serving.exported(model_dir):  # before waiting on stdin
        _fail(ModelError(f"{model_dir}: no exported model here; run `dvc repro` first (or pass --model)"), debug)
    blank = [i for i, text in enumerate(texts, start=1) if not text.strip()]
    if blank:
        raise click.UsageError(f"text {blank[0]} is empty")
    for i, text in enumerate(texts, start=1):
        bad = not_utf8(text)
        if bad:
            raise click.UsageError(f"text {i}: {bad}")
    if not texts and sys.stdin.isatty():  # nothing piped in: say so instead of waiting
        raise click.UsageError("give text as arguments or on stdin (one text per line)")
    try:
        lines = list(texts) or stdin_lines()
        if not lines:
            raise click.UsageError("give text as arguments or on stdin (one text per line)")
        inputs = [split_pair(line) for line in lines] if pair else lines
        predictor = serving.Predictor(model_dir, backend)
        results = predictor(inputs, batch_size)
    except click.ClickException:
        raise
    except Exception as err:  # ours in one line; a library's too (--debug: the traceback)
        _fail(err, debug)
    if as_json:  # the same rows `peftpipe serve` answers with
        for row in predictor.rows(inputs, results):
            click.echo(json.dumps(row))
        return
    for text, spans in zip(lines, results):
        if not predictor.task.per_token:  # a class for the whole text (or pair)
            click.echo(f"{spans['label']}\t{spans['score']:.3f}\t{text}")
            if "truncated_at_tokens" in spans:
                click.echo(f"note: the text above was cut at the model's {spans['truncated_at_tokens']} tokens "
                           f"(model.max_length); the rest was not read", err=True)
            continue
        click.echo(text)
        for span in spans or []:
            click.echo(f"  {span['word']}\t{span['type']}\t{span['score']:.3f}\t{span['start']}-{span['end']}")
        if not spans:
            click.echo("  (no entities)")


@main.command()
@click.option("--model", "models", multiple=True, metavar="NAME=FOLDER",
              help="An exported model to serve under NAME (repeat it); default: default=models/export.")
@click.option("--exp", "experiments", multiple=True, metavar="NAME",
              help="Serve experiment NAME's export, read from the DVC cache (repeat it).")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "int8"]), default="auto", show_default=True,
              help="As predict's: auto serves the export's checked fp32 ONNX graph where it has one, else PyTorch.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Require `Authorization: Bearer <the file's first line>` on /v1/* (a pipe works).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Texts run together in one model call, at most.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=0.0, show_default=True,
              help="How long the first request of a batch waits for others.")
@click.option("--max-queue", type=click.IntRange(1, 1_000_000), default=1024, show_default=True,
              help="Texts that may wait per model; past it, 429 with Retry-After.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True,
              help="Seconds a request may take; past it, 504 and its texts are dropped.")
@click.option("--drain-seconds", type=click.FloatRange(0, 3600), default=30.0, show_default=True,
              help="On SIGTERM, how long requests in flight may still take.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow pages from ORIGIN (e.g. https://app.example.com) to call the API (repeat it).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Batches run at once per worker, one compute thread each (default: the CPUs this process "
                   "may use, by affinity and cgroup quota, shared among the workers).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes on the one port, each with its own models and batcher.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="info: one access-log line per request.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def serve(models: tuple[str, ...], experiments: tuple[str, ...], backend: str, host: str, port: int,
          token_file: Path | None, max_batch: int, max_wait_ms: float, max_queue: int, timeout_s: float,
          drain_seconds: float, cors_origins: tuple[str, ...], threads: int | None, workers: int, log_level: str,
          log_format: str, debug: bool) -> None:
    """Serve exported models over HTTP: POST /v1/predict answers as `predict --json`;
    GET /v1/models, /health, /ready, /metrics, /docs; a page to try it at /."""
    from peftpipe.serve import app as server
    from peftpipe.serve.cpus import available_cpus
    from peftpipe.serve.observe import configure_logging

    copies: list[Path] = []  # --exp exports copied out of the DVC cache: removed at exit
    try:
        folders = server.parse_models(models) if models or not experiments else {}
        sources: dict[str, dict] = {}
        for name in experiments:
            if name in folders:
                raise InputError(f"--exp {name!r}: the name is given twice")
            folders[name], commit = server.experiment_export(name)
            copies.append(folders[name].parent)
            sources[name] = {"experiment": name, "commit": commit}
        token = server.read_token(token_file) if token_file else None
        listening = server.listen(host, port)  # a port in use stops here, before minutes of loading
    except Exception as err:
        server.remove_copies(copies)
        _fail(err, debug)
    if token is None and not server.loopback(host):
        click.echo(f"serve: warning: --host {host} answers every machine that can reach it, and no --token-file "
                   f"is set: anyone can use the models", err=True)
    configure_logging(log_level, log_format == "json")
    failures: list[Exception] = []
    uvicorn_server = None

    def stop_on_failure(err: Exception) -> None:
        failures.append(err)
        uvicorn_server.should_exit = True

    threads = threads or max(1, available_cpus() // workers)
    app = server.create_app(lambda: server.load(folders, backend, sources), token=token, max_batch=max_batch,
                            max_wait_ms=max_wait_ms, timeout_s=timeout_s, max_queue=max_queue,
                            cors_origins=cors_origins, on_failure=stop_on_failure, parallel=threads)
    import uvicorn

    uvicorn_server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                   timeout_graceful_shutdown=drain_seconds))
    bound = listening.getsockname()[1]
    click.echo(f"serve: http://{host}:{bound}/ (loading {', '.join(f'{n} ({f})' for n, f in folders.items())}; "
               f"{workers} worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}; "
               f"/ready says when; API at /v1/predict, schema at /docs)", err=True)
    def finish() -> int:  # a worker's end: its models failed to load (one line), or a clean stop
        if failures and debug:
            raise failures[0]
        if failures:
            click.echo(f"error: {_error_line(failures[0])}", err=True)
        return 2 if failures else 0

    try:
        code = server.run_workers(uvicorn_server, listening, workers, finish)
    finally:
        server.remove_copies(copies)
    if code:
        sys.exit(code)


@main.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def check(files: tuple[Path, ...], debug: bool) -> None:
    """Validate params files (default: params.yaml and recipes/*.yaml): every key, and what
    can be known of the model and data they name without loading them."""
    from peftpipe.methods import check_options, get_method
    from peftpipe.models import check_model
    from peftpipe.params import load_params, parse_params
    from peftpipe.sources import check_data
    from peftpipe.tools import recipes

    paths = list(files) or [Path("params.yaml"), *sorted(recipes.FOLDER.glob("*.yaml"))]
    for path in paths:
        try:  # a recipe is checked as what `peftpipe recipe` makes of it: composed over the defaults
            is_recipe = path.parent.resolve() == recipes.FOLDER.resolve()
            params = parse_params(recipes.compose(path.stem), str(path)) if is_recipe else load_params(path)
        except PeftpipeError as err:
            _fail(err, debug)
        try:
            check_data(params.data)
            check_model(params.model)
            check_options(get_method(params.peft.method), params.peft.options)
        except PeftpipeError as err:
            _fail(type(err)(f"{path}: {err}"), debug)
        click.echo(f"ok: {path}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--join", "text_columns", flag_value="join", help="Several text columns are one text in parts: join them.")
@click.option("--pair", "text_columns", flag_value="pair", help="Two text columns are a sentence pair.")
@click.option("--text", "text", multiple=True, metavar="COLUMN",
              help="The text column, when inference cannot tell (repeat it to join several).")
@click.option("--label", "label", metavar="COLUMN", help="The class column, when inference cannot tell.")
@click.option("--params", "params_path", default="params.yaml", show_default=True, type=click.Path(path_type=Path),
              help="Params file to write (an existing one is kept as <name>.bak).")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def init(files: tuple[Path, ...], text_columns: str | None, text: tuple[str, ...], label: str | None,
         params_path: Path, debug: bool) -> None:
    """Write params.yaml for your data FILES (one file: train, the rest is carved from it;
    or files named *train*, *valid*/*dev*, *test*), and say what was inferred."""
    from peftpipe.params import load_params, write_params
    from peftpipe.tools.infer import infer

    try:
        inferred = infer(list(files), text_columns, text=text, label=label)
        # The recipe keeps its name: the model card must not name a recipe that does not exist.
        backup = write_params(params_path, {"task": {"kind": inferred.task}, "data": inferred.data})
        written = load_params(params_path)
    except Exception as err:  # pandas' and the readers' errors too, in one line
        _fail(err, debug)
    for line in inferred.said:
        click.echo(f"init: {line}")
    if backup:
        click.echo(f"init: your previous {params_path} is kept as {backup}")
    for split, path in inferred.data["files"].items():
        carved = " (validation and test are carved from it: one file is always the train split)" \
            if len(inferred.data["files"]) == 1 else ""
        click.echo(f"init: {path} -> the {split} split{carved}")
    click.echo(f"init: wrote {params_path}: task.kind {inferred.task} and data.*; kept the rest, from recipe "
               f"{written.recipe!r}: model.name {written.model.name}, peft.method {written.peft.method}")
    for line in inferred.check:
        click.echo(f"init: check {line}")
    from peftpipe.sources import unwatched

    outside = unwatched(inferred.data["files"])
    if outside:
        click.echo(f"init: note: {', '.join(str(inferred.data['files'][s]) for s in outside)} outside inputs/: DVC "
                   f"reruns the pipeline when a file under inputs/ changes, not there (move it, then rerun init)")
    click.echo("init: next: peftpipe check && dvc repro")


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--seed", default=0, show_default=True, help="Seed of the resamples and permutations.")
@click.option("--set", "test_set", default="test", show_default=True,
              help="Which test set: test, or a name from eval.extra.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def compare(a: str, b: str, as_json: bool, seed: int, test_set: str, debug: bool) -> None:
    """Is B better than A? A paired test on the same test rows, per headline metric. A and B
    are experiment names, branches, commits, `workspace`, or predictions files."""
    from peftpipe.tools.compare import (
        PRIMARY,
        check_paired,
        load_predictions,
        predictions_path,
        same_predictions,
        table,
    )
    from peftpipe.tools.compare import compare as paired

    try:
        path = predictions_path(test_set)
        run_a, run_b = load_predictions(a, path), load_predictions(b, path)
        check_paired(run_a, run_b)
        if same_predictions(run_a, run_b):
            click.echo(f"A = {a} and B = {b} made the same prediction on every one of the {len(run_a.rows)} rows of "
                       f"the {test_set!r} set: nothing to compare (the same run twice? right after `dvc exp run`, "
                       f"the workspace holds that experiment's results)")
            return
        differences = paired(run_a, run_b, seed=seed)
    except Exception as err:
        _fail(err, debug)
    if as_json:
        click.echo(json.dumps({"a": a, "b": b, "set": test_set, "rows": len(run_a.rows), "primary": PRIMARY, "metrics": [
            {**d.__dict__, "diff": round(d.diff, 4), "verdict": d.verdict()} for d in differences]}))
    else:
        click.echo(table(a, b, differences, len(run_a.rows), test_set))


@main.command()
@click.option("--metric", "metrics", multiple=True, default=("f1", "precision", "recall", "accuracy"),
              show_default=True, help="metrics/eval.json overall metrics to show (repeat the option).")
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON (for plots).")
@click.option("--all-commits", is_flag=True, help="Every commit's experiments, not only HEAD's.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def summarize(metrics: tuple[str, ...], as_json: bool, all_commits: bool, debug: bool) -> None:
    """Experiments grouped by their params minus the seed: each metric's mean +- sd over
    the seeds. Run a recipe over seeds first: dvc exp run --queue -S seed=1,2,3 && dvc queue start"""
    from peftpipe.tools import summarize as summary

    try:
        groups = summary.group(summary.runs(summary.exp_show(all_commits)))
    except Exception as err:
        _fail(err, debug)
    if as_json:
        click.echo(json.dumps([{"params": {k: g.params.get(k) for k in summary.differing(groups)}, "runs": g.names,
                                "seeds": g.seeds, "metrics": g.stats()} for g in groups], default=str))
    else:
        click.echo(summary.table(groups, list(metrics)))


@main.command()
@click.argument("name", required=False)
@click.option("--keep-edits", is_flag=True, help="Carry params.yaml's edits (keys that differ from its recipe) over.")
@click.option("--drop-edits", is_flag=True, help="Drop them (params.yaml.bak keeps a copy).")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def recipe(name: str | None, keep_edits: bool, drop_edits: bool, debug: bool) -> None:
    """Make recipe NAME the active params.yaml: the schema's defaults + recipes/NAME.yaml
    (no NAME: list the recipes). Then `dvc exp run -n NAME` (or `dvc repro`) reruns only the
    stages whose params changed. Your edits to params.yaml are never dropped silently."""
    from peftpipe.errors import ParamsError
    from peftpipe.io import atomic_copy, atomic_path
    from peftpipe.params import nest, read_yaml
    from peftpipe.tools import recipes

    if not name:
        for stem in recipes.known():
            lines = recipes.header(stem)
            click.echo(f"{stem:24} {lines[0].lstrip('# ') if lines else ''}")
        return
    current = Path("params.yaml")
    try:
        if keep_edits and drop_edits:
            raise ParamsError("--keep-edits or --drop-edits, not both")
        recipes.compose(name)  # a broken recipe stops here, before anything is written
        edited = {}
        if current.exists():
            data = read_yaml(current)
            edited = recipes.edits(data) if isinstance(data, dict) else {}
        if edited and not (keep_edits or drop_edits):
            shown = ", ".join(f"{key} ({ours!r}, recipe: {theirs!r})" for key, (ours, theirs) in list(edited.items())[:5])
            more = f" and {len(edited) - 5} more" if len(edited) > 5 else ""
            raise ParamsError(
                f"params.yaml has edits to its recipe: {shown}{more}; rerun with --keep-edits to carry them "
                f"into {name!r}, or --drop-edits (params.yaml.bak keeps them)")
        changes = nest({k: ours for k, (ours, _) in edited.items()}) if keep_edits else None
        text = recipes.params_text(name, changes=changes)
        if current.exists() and current.read_text() != text:
            # The backup is whole before params.yaml is touched, and a failed one keeps the old backup.
            atomic_copy(current, "params.yaml.bak")
            click.echo("params.yaml.bak <- your previous params.yaml")
        with atomic_path(current) as tmp:
            tmp.write_text(text)
    except Exception as err:
        _fail(err, debug)
    kept = f", with your edits to {', '.join(edited)}" if keep_edits and edited else ""
    click.echo(f"params.yaml <- recipe {name}{kept}; run: dvc exp run -n {name}   (or dvc repro)")


@main.command()
@click.option("--queue", "to_queue", is_flag=True, help="Queue one DVC experiment per method.")
@click.option("--method", "only", multiple=True, help="With --queue: only this method (repeat the option).")
@click.option("-S", "--set", "settings", multiple=True,
              help="With --queue: a param every run sets, as dvc exp run -S (e.g. export.onnx=false).")
@click.option("--table", "as_table", is_flag=True,
              help="Compare the method-* experiments that have run; write metrics/methods/ for dvc plots show.")
@click.option("--metric", default="f1", show_default=True, help="With --table: the test metric (metrics/eval.json overall).")
@click.option("--against", default="lora", show_default=True,
              help="With --table: the method every other is compared with, paired on the same test rows.")
@click.option("--all-commits", is_flag=True, help="With --table: method experiments of every commit (newest run of each).")
@click.option("--json", "as_json", is_flag=True, help="With --table: print JSON rows.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def methods(to_queue: bool, only: tuple[str, ...], settings: tuple[str, ...], as_table: bool, metric: str,
            against: str, all_commits: bool, as_json: bool, debug: bool) -> None:
    """The PEFT methods and their comparison on your data: --queue, then
    `dvc queue start -j 1`, then --table."""
    from peftpipe.params import load_params
    from peftpipe.tools import method_sweep

    try:
        load_params("params.yaml")  # a broken params.yaml stops here, not in every queued run
        if to_queue:
            for name in method_sweep.queue(settings=settings, only=only):
                click.echo(f"queued {name}")
            click.echo("next: dvc queue start -j 1, then peftpipe methods --table")
        elif as_table:
            found = method_sweep.current(all_commits, metric)
            method_sweep.add_paired(found, against, metric)
            if found:
                method_sweep.record(found, metric)
            click.echo(method_sweep.as_json(found) if as_json else method_sweep.table(found, metric))
            if found and not as_json:
                click.echo(f"plots: dvc plots show {method_sweep.RECORD}/dvc.yaml")
        else:
            for line in method_sweep.described():
                click.echo(line)
    except Exception as err:
        _fail(err, debug)


@main.command()
@click.option("--trials", type=click.IntRange(min=0), default=None,
              help="This worker's trials (default: tune.trials; 0: none, report the study and score its best).")
@click.option("--timeout", "timeout_minutes", type=click.FloatRange(min=0), default=None,
              help="This worker's minutes (default: tune.timeout_minutes; 0: none).")
@click.option("--no-best", is_flag=True, help="Do not score the best trial on test at the end (other workers run on).")
@click.option("--push", "remote", metavar="GIT_REMOTE", default=None,
              help="dvc exp push each experiment to this git remote (and its outputs to the DVC remote), so "
                   "another clone pulls it: dvc exp pull GIT_REMOTE NAME.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def tune(trials: int | None, timeout_minutes: float | None, no_best: bool, remote: str | None, debug: bool) -> None:
    """Search tune.space with Optuna; every trial is a DVC experiment (tune-<study>-<n>) run up
    to the train stage and judged on validation only. At the end the best params run the whole
    pipeline once (tune-<study>-best) and are scored on test. Run it again to continue the
    study; run it on more machines with a shared tune.storage to search in parallel (and
    --push to gather their experiments in one git and DVC remote)."""
    import signal

    from peftpipe.params import load_params
    from peftpipe.tools import tune as search

    push = (lambda name: search.push_experiment(name, remote)) if remote else None
    # `kill` or a job's time limit stops the trial being run, as Ctrl-C does (its experiment
    # runs in a session of its own, which neither signal reaches).
    signal.signal(signal.SIGTERM, search.interrupt)
    try:
        params = load_params("params.yaml")
        study = search.search(params, params.tune.trials if trials is None else trials,
                              params.tune.timeout_minutes if timeout_minutes is None else timeout_minutes,
                              say=click.echo, push=push)
        summary = search.record(study)
        click.echo(f"tune: {summary['trials']} trials in study {summary['study']!r}: {summary['complete']} complete, "
                   f"{summary['pruned']} pruned, {summary['fail']} failed -> {search.PLOTS}/")
        if summary["best"] is None:
            raise click.ClickException("no trial completed: nothing to score")
        best = summary["best"]
        click.echo(f"tune: best {best['experiment']}: validation {params.tune.metric} {best['value']:.4f}, "
                   f"params {best['params']}")
        if no_best:
            return
        scored = search.evaluate_best(params, study, say=click.echo)
        click.echo(search.scores_line(scored, params.tune.metric))
        if push and (problem := push(search.experiment_name(search.study_name(params), "best"))):
            click.echo(problem)
    except click.ClickException:
        raise
    except Exception as err:
        _fail(err, debug)
