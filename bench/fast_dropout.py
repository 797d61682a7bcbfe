"""A probe, measured and not kept (bench/README.md, "Tried"): dropout with a bulk-drawn mask.

torch's CPU dropout draws its mask with ``bernoulli_``, one double-precision draw per
element in a serial loop: about 3-4 ms for a 16 x 40 x 384 activation here, 50 times the
multiply it feeds; the profiler puts it at 18% of a default LoRA training step's CPU time.
This mask takes 16 random bits per element from torch's own generator (full-range int64
draws, four 16-bit fields each) and keeps an element when its field is at or above
``round(p * 65536)``: a Bernoulli(1 - p) mask with p rounded to 1/65536, scaled by
1 / (1 - rounded p). A dropout call costs a third of torch's, yet one epoch end to end
was no faster (within the machine's noise), so the pipeline keeps torch's dropout.
``python bench/train_run.py --style pipeline --epochs 1 --fast-dropout`` runs it.
"""

from __future__ import annotations

import torch

LEVELS = 1 << 16  # a mask field is 16 bits: p is used to 1/65536
FIELDS_PER_DRAW = 4  # 16-bit fields in one int64 draw


class _Masked(torch.autograd.Function):
    """x * mask, the mask kept for the backward pass (as torch's dropout keeps its own)."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype, device) -> torch.Tensor:
    """0 where dropped, 1 / (1 - p) where kept, with p rounded to 1/65536."""
    dropped_levels = round(p * LEVELS)
    count = shape.numel()
    # random_(min, max) over the whole int64 range: all 64 bits random (random_() leaves the top one 0).
    draws = torch.empty(-(-count // FIELDS_PER_DRAW), dtype=torch.int64, device=device)
    draws.random_(-(2**63), 2**63 - 1)
    fields = draws.view(torch.int16)[:count].view(shape)
    threshold = dropped_levels - LEVELS // 2  # int16 holds -32768..32767: shift the cut with it
    return (fields >= threshold).to(dtype).mul_(LEVELS / (LEVELS - dropped_levels))


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return _Masked.apply(x, keep_mask(x.shape, p, x.dtype, x.device))


class FastDropout(torch.nn.Dropout):
    """nn.Dropout with the faster mask; same p, same module otherwise (code that reads
    ``.p``, as BERT's attention does for SDPA, reads the same value)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        return dropout(x, self.p)


def use_fast_dropout(model) -> int:
    """Make every nn.Dropout module in ``model`` a FastDropout, in place; how many. Dropout
    applied functionally (attention probabilities inside SDPA) is left as it is."""
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout:
            module.__class__ = FastDropout
            swapped += 1
    return swapped
