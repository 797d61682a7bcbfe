"""4-bit (bitsandbytes NF4) models on CPU: one weight layout on every CPU, and the weights
they hold in full precision.

Why this module exists: on a CPU with AVX-512 BF16 (Intel Xeon since Cooper Lake, AMD
since Zen 4), bitsandbytes >= 0.49 repacks a ``Linear4bit`` the first time it runs in eval
mode without grad (``Linear4bit.forward``): its uint8 weights move to a blocked layout
(a 576x576 layer's (165888, 1) becomes (576, 288)), its absmax to bfloat16 (double quant
undone), and its matmul to a bf16 kernel (``gemv_4bit``). Three things then go wrong:

- ``dequantize_4bit(weight, quant_state)`` reads the blocked bytes as if they were in the
  standard layout and returns unrelated numbers, so a full-precision copy made after an
  evaluation serves a different model (the export agreed with the 4-bit model on 27% of
  test predictions, chance level);
- the layer computes in bf16 with bf16 absmax from then on, so the same adapter scores
  differently on AVX-512 and AVX2 machines (metrics are no longer reproducible across CPUs);
- the Trainer evaluates between epochs and then trains on: ``gemv_4bit`` has no autograd
  kernel ("an autograd kernel was not registered ... may lead to silently incorrect
  behavior"), so no gradient flows through the frozen 4-bit layers to the adapters below.

Our fix is to keep every layer in the standard layout: the repack is gated by the layer's
own ``support_avx512bf16_for_cpu`` flag, which we clear on every loaded 4-bit model. Every
CPU then runs the 4-bit kernels training runs, in the configured compute dtype (float32 on
CPU), and dequantized weights stay the weights the adapter was trained against.
"""

from __future__ import annotations

import logging

# bitsandbytes tries, on AVX-512 BF16 CPUs, to fetch a faster bf16 CPU kernel for the
# repacked layout from the hub through the optional `kernels` package, and logs a warning on
# every import when it cannot. We never use that layout (above), so the warning is noise.
_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_KERNEL_NOTICE)


def quiet_kernel_notice() -> None:
    """Install the filter before bitsandbytes is imported (peft and transformers import it)."""
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _DropKernelNotice) for f in logger.filters):
        logger.addFilter(_DropKernelNotice())


def four_bit_layers(model) -> list:
    """The model's bitsandbytes 4-bit linear layers (none if bitsandbytes is not installed)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    return [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]


def is_repacked(layer) -> bool:
    """Whether a 4-bit layer holds its weights in bitsandbytes' CPU bf16 layout."""
    return bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))


def keep_standard_layout(model) -> int:
    """Stop bitsandbytes from repacking the model's 4-bit layers for its CPU bf16 kernel, and
    undo it (with the library's own inverse) where it already happened. Returns the number of
    4-bit layers."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    layers = four_bit_layers(model)
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
        if is_repacked(layer):
            layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                layer.weight.data, layer.weight.quant_state)
    return len(layers)


def dequantized_weight(layer):
    """A 4-bit layer's weight in full precision, as the 4-bit kernel computes with it."""
    import bitsandbytes as bnb

    if is_repacked(layer):  # the standard-layout reader would return unrelated numbers
        raise RuntimeError("4-bit layer is in the CPU bf16 layout; call keep_standard_layout(model) first")
    return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
