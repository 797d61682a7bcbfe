"""baseline: score the base model (untrained head, no adapter; 4-bit for qlora) and the
trivial reference (all-O for NER, the majority class otherwise) on the test split, in the
same schema as evaluate's metrics/eval.json."""

from peftpipe.artifacts import load_tokenized
from peftpipe.evaluation import score_split, scored, write_plots
from peftpipe.models import load_base
from peftpipe.provenance import write_metrics
from peftpipe.stage import stage
from peftpipe.tasks import get_task

OUT, PLOTS = "metrics/baseline.json", "metrics/plots/baseline"


@stage
def main(params):
    """Score the untrained model and the reference predictor on test."""
    task = get_task(params.task.kind)
    datasets, labels = load_tokenized()
    model, tokenizer = load_base(params, labels)
    test = datasets["test"]
    metrics, predicted = score_split(task, model, tokenizer, test, labels, params.eval.batch_size)
    gold = task.gold(test)
    reference = task.reference_predictions(task.gold(datasets["train"]), gold)
    metrics["reference"] = scored(task, gold, reference, labels)
    write_plots(PLOTS, task, metrics, gold, predicted)
    write_metrics(OUT, metrics, params.seed)
    print(f"baseline: test F1 {metrics['overall']['f1']:.4f} "
          f"(reference {metrics['reference']['overall']['f1']:.4f}) -> {OUT}")


if __name__ == "__main__":
    main()
