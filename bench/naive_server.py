"""The peer for bench/serve_load.py: the same endpoint written the way a tutorial does it.

The transformers token-classification pipeline (aggregation_strategy="simple"), called
once per request from a plain FastAPI endpoint (a sync function: FastAPI runs it in its
thread pool), no batching. Same answers' shape as `peftpipe serve`.

    python bench/naive_server.py models/export 8001
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

folder, port = sys.argv[1], int(sys.argv[2])
ner = pipeline("token-classification", model=folder, aggregation_strategy="simple", device="cpu")
app = FastAPI()


class Request(BaseModel):
    texts: list[str]


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/v1/predict")
def predict(request: Request) -> dict:
    results = []
    for text in request.texts:
        spans = ner(text)
        results.append({"text": text, "entities": [
            {"word": text[s["start"]:s["end"]], "type": s["entity_group"], "score": round(float(s["score"]), 4),
             "start": int(s["start"]), "end": int(s["end"])} for s in spans]})
    return {"results": results}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
