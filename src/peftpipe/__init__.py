"""peftpipe: a reproducible, cached DVC pipeline for parameter-efficient fine-tuning."""

__version__ = "0.1.0"
