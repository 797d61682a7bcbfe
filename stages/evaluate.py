"""evaluate: score the trained model on the test split; save its predictions."""

import json

from peftpipe.artifacts import load_tokenized, load_trained
from peftpipe.evaluation import score_split, write_plots
from peftpipe.io import atomic_path
from peftpipe.provenance import write_metrics
from peftpipe.stage import stage
from peftpipe.tasks import get_task

OUT, PREDICTIONS, PLOTS = "metrics/eval.json", "data/predictions/test.jsonl", "metrics/plots/eval"


@stage
def main(params):
    """Score models/adapter on test (same schema as metrics/baseline.json)."""
    model, tokenizer, info = load_trained()
    datasets, labels = load_tokenized()
    task = get_task(info["task"])
    test = datasets["test"]
    metrics, predicted = score_split(task, model, tokenizer, test, labels, params.eval.batch_size)
    with atomic_path(PREDICTIONS) as tmp, open(tmp, "w") as fh:
        for row in task.prediction_rows(test, predicted):
            fh.write(json.dumps(row) + "\n")
    write_plots(PLOTS, task, metrics, task.gold(test), predicted)
    write_metrics(OUT, metrics, info["seed"])
    print(f"evaluate: test F1 {metrics['overall']['f1']:.4f} -> {OUT}")


if __name__ == "__main__":
    main()
