"""The LitServe peer for bench/serve_load.py: the same transformers pipeline, batched by
LitServe (max_batch_size 32, batch_timeout 5 ms), as its docs write a server.

    python bench/litserve_server.py models/export 8002
"""

from __future__ import annotations

import sys

import litserve as ls
from transformers import pipeline

folder, port = sys.argv[1], int(sys.argv[2])


class Entities(ls.LitAPI):
    def setup(self, device):
        self.ner = pipeline("token-classification", model=folder, aggregation_strategy="simple", device="cpu")

    def decode_request(self, request):
        return request["texts"][0]

    def predict(self, texts):
        return self.ner(list(texts), batch_size=len(texts))

    def encode_response(self, spans):
        return {"results": [{"entities": [{"type": s["entity_group"], "score": round(float(s["score"]), 4),
                                           "start": int(s["start"]), "end": int(s["end"])} for s in spans]}]}


if __name__ == "__main__":
    api = Entities(max_batch_size=32, batch_timeout=0.005, api_path="/v1/predict")
    ls.LitServer(api, accelerator="cpu", workers_per_device=1).run(port=port, generate_client_file=False)
