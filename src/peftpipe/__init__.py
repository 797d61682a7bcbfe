"""peftpipe: a reproducible, cached DVC pipeline for parameter-efficient fine-tuning."""

import os as _os
import tempfile as _tempfile

__version__ = "0.1.0"

# Nothing is written outside the project and the caches a user names (tests/test_trust.py
# runs the commands with an empty HOME and lists what appeared). Set before any library is
# imported, as the libraries read them once:
# - ONNX Runtime (1.32 on Linux) writes a device id and a telemetry database under
#   ~/.cache/Microsoft at import; ORT_DISABLE_TELEMETRY stops it all (no id, no upload).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# - matplotlib (the model card's loss curve) keeps its font cache in ~/.cache and
#   ~/.config: a per-user folder in the system's temporary folder instead.
_os.environ.setdefault("MPLCONFIGDIR", _os.path.join(_tempfile.gettempdir(), f"peftpipe-matplotlib-{_os.getuid()}"))
