"""Whether the Hugging Face hub can be reached, asked once and quickly.

Unreachable, every hub look-up retries for 20-50 s and prints dozens of lines before it
fails. A stage whose params name the hub asks first (a 3-second connection attempt); if
the hub cannot be reached, the libraries run offline (cached copies still load) and a
failed load says why in one line.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

UNREACHABLE = "PEFTPIPE_HUB_UNREACHABLE"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def reachable(timeout: float = 3.0) -> bool:
    url = urlparse(endpoint())
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def go_offline_if_unreachable() -> bool:
    """Set the libraries offline when the hub cannot be reached; True if so."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or reachable():
        return False
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **{UNREACHABLE: "1"})
    return True


def why_not_loaded(what: str) -> str:
    """The end of a load error's line: the hub's absence, when that is the reason."""
    if not os.environ.get(UNREACHABLE):
        return ""
    return (f"; the hub ({urlparse(endpoint()).hostname}) cannot be reached and {what} is not in the local cache: "
            f"copy it to a folder and use source: local")
