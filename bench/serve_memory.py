"""Memory of several adapters served on one base, against one adapter alone.

Each measurement loads the models as `peftpipe serve` does (peftpipe.serve.app.load), answers one
request per model, and reports the process's peak RSS, in a fresh process of its own:
- one: the first adapter alone (the base and one adapter);
- shared: every adapter given, on one base where they can share it.
The target: shared <= (one + the other adapters' weights) x 1.1.

    python bench/serve_memory.py ADAPTER_FOLDER [ADAPTER_FOLDER ...]

Adapters that trained biases (lora.bias all, the default's) cannot share a base (peft keeps
one such adapter per model); train with -S lora.bias=none to share.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, resource, sys
from pathlib import Path
from peftpipe.serve import app as server
folders = {f"m{i}": Path(p) for i, p in enumerate(sys.argv[1:])}
served = server.load(folders, "torch")
for model in served.values():
    model.predictor(["Alice flew from Paris to London to meet Bob"])
bases = len({id(model.predictor.model) for model in served.values()})
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bases": bases}))
"""


def measure(folders: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *folders], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def adapter_mib(folder: str) -> float:
    return sum(p.stat().st_size for p in Path(folder).glob("adapter_model.*")) / 2**20


def main() -> None:
    folders = sys.argv[1:]
    if not folders:
        raise SystemExit(__doc__)
    one, shared = measure(folders[:1]), measure(folders)
    others = sum(adapter_mib(f) for f in folders[1:])
    budget = (one["peak_rss_mib"] + others) * 1.1
    print(json.dumps({"adapters": len(folders), "one_mib": round(one["peak_rss_mib"], 1),
                      "shared_mib": round(shared["peak_rss_mib"], 1), "bases_loaded": shared["bases"],
                      "other_adapters_mib": round(others, 1), "budget_mib": round(budget, 1),
                      "within": shared["peak_rss_mib"] <= budget}))


if __name__ == "__main__":
    main()
