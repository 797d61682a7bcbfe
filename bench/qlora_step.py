"""What QLoRA's 4-bit base costs a training step on this CPU, side by side in one run: the
same model and LoRA (r 16 on q/k/v/o, as agnews-qlora-cpu) trained on its float32 base, on
its float32 base under bf16 autocast, and on the 4-bit NF4 base (float32 compute, the
standard layout peftpipe keeps on every CPU: src/peftpipe/quantized.py). Rounds alternate
(fp32, bf16, 4-bit, fp32, ...) so a load that comes and goes hits each alike; the median step.

The model is SmolLM2-135M's architecture (576 hidden, 9 heads, 3 KV heads, 1536 MLP) with
random weights and fewer layers, so it builds in seconds with no download. Prints a JSON
line: milliseconds per step for each, and the 4-bit and bf16 steps as ratios of fp32's.

    python bench/qlora_step.py [--layers 6] [--batch 8] [--tokens 64] [--steps 4] [--rounds 3]
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time

import click
from cpu_4bit_kernels import build  # bench/ is on the path: python bench/qlora_step.py


def with_lora(folder: str, four_bit: bool):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    from peftpipe.quantized import keep_standard_layout

    if four_bit:
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=["score"])
        model = AutoModelForSequenceClassification.from_pretrained(folder, quantization_config=quantization)
        keep_standard_layout(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    torch.manual_seed(1)
    config = LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=8, lora_dropout=0.05,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, config)
    model.train()
    return model


def step_ms(model, batch: dict, steps: int, bf16: bool) -> list[float]:
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(1000 * (time.perf_counter() - started))
    return times


@click.command()
@click.option("--layers", default=6, show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--tokens", default=64, show_default=True)
@click.option("--steps", default=4, show_default=True, help="timed steps a round, after one untimed")
@click.option("--rounds", default=3, show_default=True)
def main(layers: int, batch: int, tokens: int, steps: int, rounds: int) -> None:
    import torch

    torch.manual_seed(2)
    inputs = {"input_ids": torch.randint(1, 49152, (batch, tokens)), "attention_mask": torch.ones(batch, tokens,
              dtype=torch.long), "labels": torch.randint(0, 8, (batch,))}
    found: dict[str, list[float]] = {"fp32": [], "bf16_autocast": [], "nf4_4bit": []}
    with tempfile.TemporaryDirectory() as folder:
        build(folder, layers, num_labels=8)
        models = {"fp32": with_lora(folder, False), "nf4_4bit": with_lora(folder, True)}
        for _ in range(rounds):
            for name, model, bf16 in (("fp32", models["fp32"], False), ("bf16_autocast", models["fp32"], True),
                                      ("nf4_4bit", models["nf4_4bit"], False)):
                step_ms(model, inputs, 1, bf16)  # untimed: first-call work (repacking, allocations)
                found[name] += step_ms(model, inputs, steps, bf16)
    median = {name: statistics.median(times) for name, times in found.items()}
    print(json.dumps({
        "layers": layers, "batch": batch, "tokens": tokens, "threads": torch.get_num_threads(),
        "steps_each": len(found["fp32"]), **{f"{name}_ms": round(ms, 1) for name, ms in median.items()},
        "nf4_over_fp32_time": round(median["nf4_4bit"] / median["fp32"], 3),
        "bf16_over_fp32_time": round(median["bf16_autocast"] / median["fp32"], 3),
    }))


if __name__ == "__main__":
    main()
