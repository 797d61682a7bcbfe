"""export: merge the adapter into the base model, save it for serving (safetensors,
tokenizer, label map, model card with the loss curve), reload it and check its predictions
equal the adapter's."""

from pathlib import Path

from peftpipe import export
from peftpipe.artifacts import load_tokenized, load_trained
from peftpipe.io import atomic_path, read_json
from peftpipe.provenance import write_metrics
from peftpipe.stage import stage
from peftpipe.tasks import get_task

OUT, REPORT = "models/export", "metrics/export.json"
RUN_FACTS = {"baseline": "metrics/baseline.json", "eval": "metrics/eval.json",
             "train": "metrics/train.json", "data": "metrics/data.json"}
CURVES = Path("metrics/curves")


@stage
def main(params):
    """Merge, save, reload, compare."""
    model, tokenizer, info = load_trained()
    datasets, labels = load_tokenized()
    task = get_task(info["task"])
    test = datasets["test"]
    adapter_logits, adapter_ms = export.timed_logits(task, model, tokenizer, test, params.eval.batch_size)
    merged = export.merge(model, info)
    with atomic_path(OUT, directory=True) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        reloaded = task.load_model(str(tmp), labels)
        merged_logits, merged_ms = export.timed_logits(task, reloaded, tokenizer, test, params.eval.batch_size)
        check = export.compare_logits(adapter_logits, merged_logits, params.export.logits_tolerance)
        export.check_pipeline(tmp, " ".join(test[0]["tokens"]))
        facts = {name: read_json(path) for name, path in RUN_FACTS.items()}
        export.loss_curve_png(CURVES, tmp / export.LOSS_CURVE)
        (tmp / "README.md").write_text(export.model_card(params.recipe, info, facts))
    write_metrics(REPORT, {**check, "adapter_ms_per_example": round(adapter_ms, 3),
                        "merged_ms_per_example": round(merged_ms, 3)}, info["seed"])
    print(f"export: merged model matches the adapter (max logit diff {check['max_abs_logit_diff']:.1e}) -> {OUT}")


if __name__ == "__main__":
    main()
