"""4-bit (bitsandbytes) models on CPU: the same layout and kernels on every CPU family, and
LoRA gradients through 4-bit layers equal to those through their dequantized weights.

bitsandbytes repacks a 4-bit layer for a bf16 CPU kernel after an eval-mode forward on CPUs
with AVX-512 BF16 (quantized.py says what that breaks). Each test forces the library's
answer to "does this CPU have it", so both paths run on any machine.
"""

from __future__ import annotations

import pytest

bnb_modules = pytest.importorskip("bitsandbytes.nn.modules")
torch = pytest.importorskip("torch")

from peftpipe.models import load_task_model  # noqa: E402
from peftpipe.params import QuantizationParams  # noqa: E402
from peftpipe.quantized import dequantized_weight, four_bit_layers, is_repacked, keep_standard_layout  # noqa: E402
from peftpipe.tasks import get_task  # noqa: E402

LABELS = ["LOC", "ORG", "PER"]


@pytest.fixture(params=[True, False], ids=["avx512bf16", "avx2"])
def cpu_offers_bf16_kernel(request, monkeypatch):
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: request.param)
    return request.param


def load(folder, quantized: bool):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    quantization = QuantizationParams(compute_dtype="float32", gradient_checkpointing=False) if quantized else None
    torch.manual_seed(0)  # the same new head in both models
    model = load_task_model(get_task("sequence_classification"), str(folder), LABELS, tokenizer, None, quantization)
    return model, tokenizer


def batch(tokenizer):
    texts = ["alice visited paris", "acme met bob in london and the city", "initech"]
    return tokenizer(texts, padding=True, return_tensors="pt")


def eval_pass(model, inputs) -> None:
    """What evaluate, baseline, export and the Trainer's between-epoch evaluation do."""
    model.eval()
    with torch.no_grad():
        model(**inputs)


def test_an_evaluation_leaves_4bit_weights_in_the_standard_layout(tiny_llama_dir, cpu_offers_bf16_kernel):
    model, tokenizer = load(tiny_llama_dir, quantized=True)
    layers = four_bit_layers(model)
    assert len(layers) == 14  # q, k, v, o, gate, up, down in each of 2 layers; the head stays full
    before = [dequantized_weight(layer).clone() for layer in layers]
    eval_pass(model, batch(tokenizer))
    assert not any(is_repacked(layer) for layer in layers)
    for layer, weight in zip(layers, before):
        assert torch.equal(dequantized_weight(layer), weight)


def test_a_layer_repacked_elsewhere_is_restored_before_its_weights_are_read(tiny_llama_dir):
    """The hazard is real on this machine, and the guard undoes it: a layer with the repack
    allowed (as bitsandbytes leaves it on an AVX-512 BF16 CPU) changes layout on an eval
    forward, and keep_standard_layout brings back the weights (up to absmax in bf16, which
    is what the repacked layout kept)."""
    model, _ = load(tiny_llama_dir, quantized=True)
    layer = four_bit_layers(model)[0]
    weight = dequantized_weight(layer).clone()
    layer.support_avx512bf16_for_cpu = True
    x = torch.randn(1, 2, layer.in_features)
    layer.eval()
    with torch.no_grad():
        layer(x)
    assert is_repacked(layer) and layer.weight.shape != (weight.numel() // 2, 1)
    with pytest.raises(RuntimeError, match="keep_standard_layout"):
        dequantized_weight(layer)
    assert keep_standard_layout(model) == 14
    assert not is_repacked(layer) and not layer.support_avx512bf16_for_cpu
    torch.testing.assert_close(dequantized_weight(layer), weight, rtol=1e-2, atol=1e-3)


def lora(model, seed: int):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, bias="none",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
                        modules_to_save=["score"])
    torch.manual_seed(seed)  # A is drawn at random
    model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B starts at zero in peft, which would leave A without a gradient
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


def test_lora_gradients_through_4bit_layers_equal_those_through_the_dequantized_weights(
        tiny_llama_dir, cpu_offers_bf16_kernel):
    """After an evaluation (as the Trainer does between epochs), a training step through the
    4-bit base gives the adapter the gradients a full-precision base holding the dequantized
    weights gives it. Before the fix, on AVX-512 BF16 CPUs the evaluation switched the layers to
    a kernel with no autograd, and no gradient reached the adapters of the first layer."""
    from peft import prepare_model_for_kbit_training

    quantized, tokenizer = load(tiny_llama_dir, quantized=True)
    quantized = prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False)
    full, _ = load(tiny_llama_dir, quantized=False)
    by_name = dict(full.named_modules())
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if module in four_bit_layers(quantized):
                by_name[name].weight.copy_(dequantized_weight(module))
    quantized, full = lora(quantized, seed=1), lora(full, seed=1)
    inputs, labels = batch(tokenizer), torch.tensor([2, 1, 1])

    eval_pass(quantized, inputs)
    gradients = []
    for model in (quantized, full):
        model.train()
        model(**inputs, labels=labels).loss.backward()
        gradients.append({n: p.grad for n, p in model.named_parameters() if "lora_" in n})
    assert len(gradients[0]) == 2 * 2 * 6 and gradients[0].keys() == gradients[1].keys()
    first_layer = [n for n in gradients[0] if ".layers.0." in n and "lora_A" in n]
    assert first_layer and all(gradients[0][n].abs().sum() > 0 for n in first_layer)
    for name, gradient in gradients[0].items():
        # float32 throughout; the 4-bit kernel dequantizes and runs the same matmul
        torch.testing.assert_close(gradient, gradients[1][name], rtol=1e-4, atol=1e-6,
                                   msg=lambda detail, name=name: f"{name}: {detail}")


def test_a_4bit_model_counts_the_weights_it_holds_not_the_bytes_it_packs_them_in(tiny_llama_dir):
    """numel() of a 4-bit parameter is its packed storage (two weights a byte): counted so,
    the total came out short and qlora's trainable share too high."""
    from peftpipe.adapters import parameter_counts

    quantized, full = (lora(load(tiny_llama_dir, quantized=q)[0], seed=1) for q in (True, False))
    counted = parameter_counts(quantized)
    assert counted == parameter_counts(full)
    assert counted["total_params"] > sum(p.numel() for p in quantized.parameters())  # what was counted before

