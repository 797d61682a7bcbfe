"""evaluate: score the trained model on the test split, and on eval.extra's test sets (and
the validation split with eval.validation); save the predictions they were scored from."""

import json

from peftpipe.artifacts import load_tokenized, load_trained
from peftpipe.evaluation import describe_predictions, report_truncation, score_split, write_plots
from peftpipe.io import atomic_path
from peftpipe.provenance import write_metrics
from peftpipe.sources import load_eval_set, unwatched_notes
from peftpipe.stage import stage
from peftpipe.tasks import get_task


@stage(reads=("tokenized", "adapter"), writes=("metrics", "predictions", "plots"))
def main(params, tokenized, adapter, metrics, predictions, plots):
    """Score models/adapter on test (same schema as metrics/baseline.json), then on each
    extra set (same schema again, under `extra.<name>`)."""
    model, tokenizer, info = load_trained(adapter)
    datasets, labels = load_tokenized(tokenized)
    task = get_task(info.task)
    sets = {"test": datasets["test"]}
    files = dict(params.eval.extra)
    if params.eval.validation:  # peftpipe tune's best trial: its validation score with an interval
        sets["validation"], files["validation"] = datasets["validation"], "the validation split"
    for name, path in params.eval.extra.items():  # read all first: a bad file stops before any scoring
        sets[name] = task.tokenize(load_eval_set(params.data, info.task, name, path, labels),
                                   tokenizer, labels, params)
    for note in unwatched_notes(params.eval.extra, "eval.extra", "evaluate"):
        print(note)
    scores = {}
    with atomic_path(predictions, directory=True) as folder:
        # What the rows mean, so `peftpipe compare` scores them as this stage did.
        describe_predictions(folder, info.task, labels)
        for name, dataset in sets.items():
            scores[name], predicted = score_split(task, model, tokenizer, dataset, labels, params.eval.batch_size)
            if name in params.eval.extra:
                report_truncation(scores[name], task.truncation(dataset), name, params.model.max_length)
            with open(folder / f"{name}.jsonl", "w") as fh:
                for row in task.prediction_rows(dataset, predicted):
                    fh.write(json.dumps(row) + "\n")
            if name == "test":
                write_plots(plots, task, scores[name], task.gold(dataset), predicted)
    found_on_test = scores.pop("test")
    if scores:
        found_on_test["extra"] = {name: {"file": files[name], "examples": len(sets[name]), **found}
                            for name, found in scores.items()}
    write_metrics(metrics, found_on_test, info.seed)
    print(f"evaluate: test F1 {found_on_test['overall']['f1']:.4f}"
          + "".join(f", {name} F1 {found['overall']['f1']:.4f}" for name, found in scores.items()) + f" -> {metrics}")


if __name__ == "__main__":
    main()
