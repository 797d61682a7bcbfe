"""The two CPU kernels bitsandbytes offers a 4-bit model in evaluation, side by side in one
run: the standard layout in float32 compute (what peftpipe keeps on every CPU, see
src/peftpipe/quantized.py) against the layout repacked for the bf16 kernel (what
bitsandbytes switches to on its own on CPUs with AVX-512 BF16).

The model is SmolLM2-135M's architecture (576 hidden, 9 heads, 3 KV heads, 1536 MLP) with
random weights and fewer layers, so it builds in seconds with no download. Prints a JSON line:
milliseconds per batch for each kernel, their ratio, and how far the logits move.

    python bench/cpu_4bit_kernels.py [--layers 6] [--batch 8] [--tokens 64] [--repeats 5]

Only meaningful on a CPU with AVX-512 BF16 (it says so and stops elsewhere)."""

from __future__ import annotations

import json
import tempfile
import time

import click


def build(folder: str, layers: int, num_labels: int = 4) -> None:
    """SmolLM2-135M's shapes with random weights and ``layers`` layers, saved to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         num_labels=num_labels, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(folder)


def load_4bit(folder: str):
    import torch
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=["score"])
    return AutoModelForSequenceClassification.from_pretrained(folder, quantization_config=quantization).eval()


def best_ms(model, inputs, repeats: int) -> tuple[float, object]:  # (ms, logits tensor)
    import torch

    times = []
    with torch.no_grad():
        logits = model(**inputs).logits  # the first call repacks where the kernel is allowed to
        for _ in range(repeats):
            started = time.perf_counter()
            model(**inputs)
            times.append(1000 * (time.perf_counter() - started))
    return min(times), logits.float()


@click.command()
@click.option("--layers", default=6, show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--tokens", default=64, show_default=True)
@click.option("--repeats", default=5, show_default=True)
def main(layers: int, batch: int, tokens: int, repeats: int) -> None:
    import torch
    from bitsandbytes.functional import has_avx512bf16

    from peftpipe.quantized import four_bit_layers, is_repacked, keep_standard_layout

    if not has_avx512bf16():
        raise SystemExit("this CPU has no AVX-512 BF16: bitsandbytes offers it only the standard kernel")
    torch.manual_seed(1)
    inputs = {"input_ids": torch.randint(1, 49152, (batch, tokens)), "attention_mask": torch.ones(batch, tokens)}
    with tempfile.TemporaryDirectory() as folder:
        build(folder, layers)
        standard = load_4bit(folder)
        keep_standard_layout(standard)
        repacked = load_4bit(folder)
        standard_ms, standard_logits = best_ms(standard, inputs, repeats)
        repacked_ms, repacked_logits = best_ms(repacked, inputs, repeats)
    assert not any(map(is_repacked, four_bit_layers(standard))) and all(map(is_repacked, four_bit_layers(repacked)))
    print(json.dumps({
        "layers": layers, "batch": batch, "tokens": tokens, "threads": torch.get_num_threads(),
        "standard_fp32_ms": round(standard_ms, 1), "repacked_bf16_ms": round(repacked_ms, 1),
        "repacked_over_standard_time": round(repacked_ms / standard_ms, 3),
        "max_abs_logit_diff": round(float((standard_logits - repacked_logits).abs().max()), 5),
        "max_abs_logit": round(float(standard_logits.abs().max()), 5),
        "prediction_agreement": float((standard_logits.argmax(-1) == repacked_logits.argmax(-1)).float().mean()),
    }))


if __name__ == "__main__":
    main()
