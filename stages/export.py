"""export: merge the adapter into the base model, save it for serving (safetensors,
tokenizer, label map, model card with the loss curve), reload it and check its predictions
equal the adapter's.

qlora merges into a fresh full-precision copy of the base (never into 4-bit weights) that
holds the dequantized 4-bit weights the adapter was trained against: the merge is checked
exactly against that copy with the adapter, and its predictions against the 4-bit model's.
Methods with no weights to merge (prompt methods) are exported as adapter + base.

A merged classifier is also written as ONNX graphs for CPU serving (fp32, and int8 when its
predictions agree with PyTorch's on at least export.min_int8_agreement of the test split).
"""


from peftpipe import export, serving
from peftpipe.artifacts import load_tokenized, load_trained
from peftpipe.io import atomic_path, read_json
from peftpipe.model_card import LOSS_CURVE, loss_curve_png, model_card
from peftpipe.provenance import write_metrics
from peftpipe.stage import stage
from peftpipe.tasks import get_task


# The model card is built from the run's own files: these metrics and the loss curves.
@stage(reads=("tokenized", "adapter", "baseline", "evaluation", "training", "data", "curves"), writes=("export_dir", "report"))
def main(params, tokenized, adapter, baseline, evaluation, training, data, curves, export_dir, report):
    """Merge, save, reload, compare."""
    model, tokenizer, info = load_trained(adapter)
    datasets = load_tokenized(tokenized)[0]
    task = get_task(info.task)
    test, batch = datasets["test"], params.eval.batch_size
    trained_logits, adapter_ms = export.timed_logits(task, model, tokenizer, test, info.labels, batch)
    reference_logits = trained_logits
    if info.quantization:  # merge into a full-precision base, never into 4-bit weights
        model = export.full_precision_copy(model, adapter)
        reference_logits = export.timed_logits(task, model, tokenizer, test, info.labels, batch)[0]
    merged = export.merge(model, info)
    with atomic_path(export_dir, directory=True) as tmp:
        export.save(merged, tokenizer, info, tmp)
        served_logits, merged_ms = export.timed_logits(task, export.reload(tmp), tokenizer, test, info.labels, batch)
        check = export.compare_logits(reference_logits, served_logits, params.export.logits_tolerance)
        if info.quantization:
            check["quantized_agreement"] = export.check_quantized(
                trained_logits, served_logits, params.export.min_quantized_agreement)
        serving.check_pipeline(tmp, task, test[0])
        graphs = export.onnx_graphs(tmp, merged, tokenizer, task, info, test, served_logits, params) \
            if params.export.onnx else {"skipped": "export.onnx is false"}
        facts = {name: read_json(path) for name, path in
                 {"baseline": baseline, "eval": evaluation, "train": training, "data": data}.items()}
        export.record_scores(tmp, facts["eval"])
        loss_curve_png(curves, tmp / LOSS_CURVE)
        (tmp / "README.md").write_text(model_card(params.recipe, task, info, facts))
    write_metrics(report, {**check, "adapter_ms_per_example": round(adapter_ms, 3),
                           "merged_ms_per_example": round(merged_ms, 3), "onnx": graphs}, info.seed)
    print(f"export: exported model matches the adapter (max logit diff {check['max_abs_logit_diff']:.1e}) -> {export_dir}")
    for line in export.onnx_lines(graphs):
        print(line)


if __name__ == "__main__":
    main()
