"""baseline: score the base model (untrained head, no adapter; 4-bit for qlora) and the
trivial reference (all-O for NER, the majority class otherwise) on the test split, in the
same schema as evaluate's metrics/eval.json."""

from peftpipe.artifacts import load_tokenized
from peftpipe.evaluation import score_split, scored, write_plots
from peftpipe.methods import get_method
from peftpipe.models import load_base
from peftpipe.provenance import write_metrics
from peftpipe.sources import load_eval_set
from peftpipe.stage import stage
from peftpipe.tasks import get_task


@stage(reads=("tokenized",), writes=("metrics", "plots"))
def main(params, tokenized, metrics, plots):
    """Score the untrained model and the reference predictor on test."""
    task, method = get_task(params.task.kind), get_method(params.peft.method)
    datasets, labels = load_tokenized(tokenized)
    model, tokenizer = load_base(params.model, task, labels, params.seed,  # qlora's base is scored in 4 bits
                                 params.quantization if method.quantized else None)
    test = datasets["test"]
    scores, predicted = score_split(task, model, tokenizer, test, labels, params.eval.batch_size)
    gold = task.gold(test)
    reference = task.reference_predictions(task.gold(datasets["train"]), gold)
    scores["reference"] = scored(task, gold, reference, labels)
    extra = {}
    for name, path in params.eval.extra.items():  # the untrained and reference numbers beside evaluate's
        dataset = task.tokenize(load_eval_set(params.data, params.task.kind, name, path, labels), tokenizer, labels,
                                params)
        found, _ = score_split(task, model, tokenizer, dataset, labels, params.eval.batch_size)
        found["reference"] = scored(task, task.gold(dataset), task.reference_predictions(
            task.gold(datasets["train"]), task.gold(dataset)), labels)
        extra[name] = {"file": path, "examples": len(dataset), **found}
    if extra:
        scores["extra"] = extra
    write_plots(plots, task, scores, gold, predicted)
    write_metrics(metrics, scores, params.seed)
    print(f"baseline: test F1 {scores['overall']['f1']:.4f} "
          f"(reference {scores['reference']['overall']['f1']:.4f}) -> {metrics}")


if __name__ == "__main__":
    main()
