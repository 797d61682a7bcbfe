"""Known library noise, filtered where it is raised (its logger, or its warning's exact
text), not by muting every warning: a new warning still shows. PEFTPIPE_VERBOSE=1 keeps
everything."""

from __future__ import annotations

import logging
import os
import re
import warnings

# (logger, text in the message): messages that say nothing a peftpipe user can act on.
LOGGED = [
    # The transformers pipeline checks the model's class against its own list and logs the
    # whole list (4.7 KB) when it meets peftpipe's ONNX Runtime wrapper, which works.
    ("transformers.pipelines.base", "'OnnxClassifier' is not supported for"),
    # ONNX Runtime's int8 quantizer logs to the root logger; the export checks int8 by agreement.
    ("", "Please consider to run pre-processing before quantization"),
]
# (warning category, start of the message)
WARNED = [
    # transformers 5 deprecates the property that peft and the Trainer still read.
    (FutureWarning, "`is_gradient_checkpointing` is deprecated"),
]


class _Drop(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def install() -> None:
    """Filter the known noise (once per process)."""
    if os.environ.get("PEFTPIPE_VERBOSE") == "1" or getattr(install, "done", False):
        return
    for name, text in LOGGED:
        logging.getLogger(name).addFilter(_Drop(text))
    for category, start in WARNED:
        warnings.filterwarnings("ignore", message=f"^{re.escape(start)}", category=category)
    install.done = True
