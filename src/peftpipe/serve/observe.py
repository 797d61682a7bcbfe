"""What a serving engineer watches `peftpipe serve` with: Prometheus metrics at /metrics (the
prometheus-client library, one registry per app), one access-log line per request with its
id, and logs as text or JSON lines at a chosen level."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

ACCESS = logging.getLogger("peftpipe.serve.access")
LOG = logging.getLogger("peftpipe.serve")

# A request id a client sends is echoed back only if it is a plain token (no header or log
# injection); otherwise one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(given: str | None) -> str:
    return given if given and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class Metrics:
    """Requests by model and status code, latency and batch-size histograms, queue depth and
    model load time, in a registry of this app's own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("peftpipe_requests", "HTTP requests answered, by path and status code",
                                ["path", "code"], registry=self.registry)
        self.predictions = Counter("peftpipe_predict_requests", "Prediction requests, by model and status code",
                                   ["model", "code"], registry=self.registry)
        self.latency = Histogram("peftpipe_request_seconds", "Time from request to answer, by path",
                                 ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch = Histogram("peftpipe_batch_texts", "Texts per model call, by model", ["model"],
                               registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.queue = Gauge("peftpipe_queue_texts", "Texts waiting for a batch, by model", ["model"],
                           registry=self.registry)
        self.load = Gauge("peftpipe_model_load_seconds", "Time the model took to load, by model", ["model"],
                          registry=self.registry)

    def text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_of(path: str) -> str:
    """A bounded label for a path (unknown paths share one, so a scan cannot grow the metrics)."""
    known = ("/v1/predict", "/v1/models", "/health", "/ready", "/metrics", "/docs", "/openapi.json", "/")
    return path if path in known or path.startswith("/docs/") else "other"


def access_line(rid: str, client: str, method: str, path: str, status: int, started: float) -> None:
    ms = (time.perf_counter() - started) * 1000
    ACCESS.info("%s %s \"%s %s\" %d %.1fms", rid, client, method, path, status, ms,
                extra={"request_id": rid, "client": client, "method": method, "path": path, "status": status,
                       "ms": round(ms, 1)})


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and a request's fields."""

    FIELDS = ("request_id", "client", "method", "path", "status", "ms")

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        line.update({name: getattr(record, name) for name in self.FIELDS if hasattr(record, name)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, json_lines: bool) -> None:
    """peftpipe's serve logs on stderr, at ``level``, as text or JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("peftpipe.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
