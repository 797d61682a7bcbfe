"""peftpipe: a reproducible, cached DVC pipeline for parameter-efficient fine-tuning."""

from peftpipe.quantized import quiet_kernel_notice

__version__ = "0.1.0"

quiet_kernel_notice()  # before anything imports bitsandbytes (peft, transformers do)
