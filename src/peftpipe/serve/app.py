"""`peftpipe serve`: exported models behind an HTTP API (FastAPI on uvicorn).

- ``POST /v1/predict`` ``{"model": NAME, "texts": [...]}`` (or ``"pairs": [[a, b], ...]``)
  answers with exactly the rows `peftpipe predict --json` prints for the same texts.
- ``GET /v1/models``: each served model's task, labels, method, base model and test score
  with its interval (from the export's peftpipe.json and metrics); ``GET /health`` (the
  process answers), ``GET /ready`` (loaded and not overloaded); ``GET /metrics``
  (Prometheus); ``/docs`` (Swagger UI from local files) and ``/openapi.json``; ``/`` a page.

Requests are queued per model and run in batches (serve/batcher.py), texts of similar
length together (serving.Predictor), each answer routed back to its request. Every request
is bounded (body bytes, texts, characters per text, a deadline, the queue's length), every
error is one JSON line ``{"error": ...}``, and no request value becomes a path. The port
opens before the models load: /ready says 503 until they have.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request  # resolved by FastAPI at run time (annotations are strings)

from peftpipe.errors import InputError, ModelError
from peftpipe.serve.batcher import Batcher, Overloaded
from peftpipe.serve.observe import LOG, Metrics, access_line, request_id, route_of

__all__ = ["Batcher", "Limits", "Options", "Served", "create_app", "load"]


class PredictRequest(BaseModel):
    """POST /v1/predict: the model's name (default: the first served) and texts, or pairs."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    texts: list[str] | None = None
    pairs: list[tuple[str, str]] | None = None


class ErrorBody(BaseModel):
    """Every error the API answers: one line naming the limit or the problem."""

    error: str


@dataclass(frozen=True)
class Limits:
    """What one request may hold; over it, a one-line JSON error naming the limit."""

    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_chars: int = 20_000


@dataclass(frozen=True)
class Options:
    """How requests are run: batch size and wait, each request's deadline, the queue's length."""

    max_batch: int = 32
    max_wait_ms: float = 0.0
    timeout_s: float = 30.0
    max_queue: int = 1024  # texts waiting per model; past it, 429 with Retry-After
    parallel: int = 1  # batches of one model run at once, one compute thread each


@dataclass
class Served:
    """One model behind the API: its predictor, what /v1/models says of it, its batcher."""

    name: str
    predictor: Any  # serving.Predictor (or anything answering a list of texts)
    card: dict
    batcher: Batcher | None = None
    base: Any = None  # models with one base share its worker thread: one adapter active at a time
    load_seconds: float = 0.0


@dataclass
class AppState:
    """What the handlers share: the served models (empty until loaded), the limits and
    options, the token, the metrics; ``failure`` is why loading stopped, if it did."""

    source: dict[str, Served] | Callable[[], dict[str, Served]]
    limits: Limits
    options: Options
    token: str | None
    metrics: Metrics = field(default_factory=Metrics)
    served: dict[str, Served] = field(default_factory=dict)
    ready: bool = False
    failure: Exception | None = None
    on_failure: Callable[[Exception], None] | None = None

    async def load(self) -> None:
        """Load the models (in a thread: the port already answers /health and /ready), then
        start one batcher per model running up to ``parallel`` batches at once; models on one
        base share one worker thread (one adapter is active at a time), and so do models
        that write labels (generate keeps state on the model)."""
        if callable(self.source):
            try:
                served = await asyncio.get_running_loop().run_in_executor(None, self.source)
            except Exception as err:
                self.failure = err
                LOG.error("loading failed: %s", err)
                if self.on_failure:
                    self.on_failure(err)
                return
        else:
            served = self.source
        workers: dict = {}
        for model in served.values():
            # The predictor says whether it may run batches at once (not when it shares its base).
            parallel = self.options.parallel if getattr(model.predictor, "runs_in_parallel", False) else 1
            worker = workers.setdefault(model.base if model.base is not None else model.name,
                                        ThreadPoolExecutor(parallel, thread_name_prefix="peftpipe-model"))
            batch_sizes = self.metrics.batch.labels(model.name)
            model.batcher = Batcher(model.predictor, self.options.max_batch, self.options.max_wait_ms,
                                    executor=worker, max_queue=self.options.max_queue, on_batch=batch_sizes.observe,
                                    parallel=parallel)
            model.batcher.start()
            self.metrics.load.labels(model.name).set(model.load_seconds)
            self.metrics.queue.labels(model.name).set_function(lambda batcher=model.batcher: batcher.queued)
        self.served, self.ready = served, True

    async def stop(self) -> None:
        for model in self.served.values():
            await model.batcher.stop()

    @property
    def overloaded(self) -> list[str]:
        return [name for name, model in self.served.items() if model.batcher and model.batcher.full]


def error(status: int, message: str, headers: dict | None = None, **extra):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def authorized(header: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, the scheme in any case, compared in constant time."""
    scheme, _, given = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class Guard:
    """ASGI middleware around every request: its id (X-Request-Id taken or made, echoed),
    the token on /v1/*, the body's size, one access-log line and the request metrics; an
    unexpected error is a one-line JSON 500 with the details in the log. Plain ASGI, not
    Starlette's BaseHTTPMiddleware: the endpoint keeps the server's own `receive`, so it
    sees a client that disconnected (and no task per request is spent on the wrapper)."""

    def __init__(self, app, state: AppState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        rid = request_id(headers.get("x-request-id"))
        status, sent = 500, False

        async def send_with_id(message):
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status, sent = message["status"], True
                given = list(message.get("headers", []))
                given.append((b"x-request-id", rid.encode()))
                if not any(key.lower() == b"x-content-type-options" for key, _ in given):
                    given.append((b"x-content-type-options", b"nosniff"))
                message["headers"] = given
            await send(message)

        try:
            refusal, receive = await self._refusal(scope, headers, receive)
            await (refusal or self.app)(scope, receive, send_with_id)
        except Exception as err:
            LOG.exception("request %s failed", rid)
            if not sent:
                await error(500, unexpected_line(err))(scope, receive, send_with_id)
        path = route_of(scope["path"])
        self.state.metrics.requests.labels(path, str(status)).inc()
        self.state.metrics.latency.labels(path).observe(time.perf_counter() - started)
        client = scope["client"][0] if scope.get("client") else "-"
        access_line(rid, client, scope["method"], scope["path"], status, started)

    async def _refusal(self, scope, headers: dict, receive):
        """(an error response, or None; the receive the app should read the body from)."""
        state, limits = self.state, self.state.limits
        if scope["path"].startswith("/v1/") and state.token is not None and \
                not authorized(headers.get("authorization", ""), state.token):
            return error(401, "missing or wrong bearer token (Authorization: Bearer <token from --token-file>)"), receive
        too_big = error(413, f"request body over {limits.max_body_bytes:,} bytes (limit max_body_bytes)")
        length = headers.get("content-length")
        if length is not None:
            return (too_big if not length.isdigit() or int(length) > limits.max_body_bytes else None), receive
        if scope["method"] != "POST":
            return None, receive
        # No length given (chunked): read up to the limit, then hand the body on as one message.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None, receive
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limits.max_body_bytes:
                return too_big, receive
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the server's own (a disconnect shows)

        return None, replay


def unexpected_line(err: Exception) -> str:
    return (f"internal error ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
            "the server's log has the details")


def unencodable(parts: list[str]) -> str | None:
    """What stops a text from being UTF-8 (a lone surrogate, which JSON's \\u escapes can
    carry), said before it reaches the tokenizer; None when every part encodes."""
    for part in parts:
        try:
            part.encode("utf-8")
        except UnicodeEncodeError as err:
            return (f"character {err.start} is {part[err.start]!r}, a lone surrogate, which is not text; "
                    "send valid UTF-8 (pair surrogates or drop it)")
    return None


def request_problem(given: list, limits: Limits):
    """The first text over a limit or not a text, as an error response; None if all fit."""
    if not given:
        return error(422, "texts: empty; give at least one text")
    if len(given) > limits.max_texts:
        return error(413, f"{len(given)} texts, over {limits.max_texts} a request may hold (limit max_texts)")
    for i, text in enumerate(given):
        parts = [text["text"], text["text_pair"]] if isinstance(text, dict) else [text]
        if any(not part.strip() for part in parts):
            return error(422, f"texts[{i}]: empty; every text needs some characters")
        bad = unencodable(parts)
        if bad is not None:
            return error(422, f"texts[{i}]: {bad}")
        if sum(map(len, parts)) > limits.max_chars:
            return error(413, f"texts[{i}]: {sum(map(len, parts)):,} characters, over {limits.max_chars:,} "
                              f"(limit max_chars)")
    return None


class _Gone(Exception):
    """The client disconnected before its answer was ready."""


async def within_deadline(job: asyncio.Future, request, seconds: float):
    """``job``'s result; cancelled (its texts dropped unrun) when the client disconnects or
    ``seconds`` pass (TimeoutError)."""
    deadline = time.monotonic() + seconds
    while not job.done():
        left = deadline - time.monotonic()
        if left <= 0:
            job.cancel()
            raise TimeoutError
        await asyncio.wait({job}, timeout=min(0.1, left))
        if not job.done() and await request.is_disconnected():
            job.cancel()
            raise _Gone
    return job.result()


async def predict(state: AppState, body: PredictRequest, request):
    if not state.ready:
        return error(503, "models are loading; retry shortly", headers={"Retry-After": "1"})
    name = body.model or next(iter(state.served))
    if name not in state.served:
        return error(404, f"no model {name!r}; served: {', '.join(state.served)}", models=list(state.served))
    response = await _predict(state, state.served[name], body, request)
    state.metrics.predictions.labels(name, str(response.status_code)).inc()
    return response


async def _predict(state: AppState, model: Served, body: PredictRequest, request):
    from fastapi.responses import JSONResponse

    if (body.texts is None) == (body.pairs is None):
        return error(422, "give texts (a list of strings) or pairs (a list of [first, second]), not both")
    given: list = body.texts if body.texts is not None else \
        [{"text": first, "text_pair": second} for first, second in body.pairs]
    problem = request_problem(given, state.limits) or \
        (model.predictor.input_problem(given) and error(422, model.predictor.input_problem(given)))
    if problem:
        return problem
    job = asyncio.ensure_future(model.batcher.submit(given))
    try:
        answers = await within_deadline(job, request, state.options.timeout_s)
    except (InputError, ModelError) as err:
        return error(422, str(err))
    except Overloaded as err:
        return error(429, f"{model.name}: {err}; retry later", headers={"Retry-After": "1"})
    except TimeoutError:
        return error(504, f"no answer within {state.options.timeout_s:g} s (limit --timeout); the request was dropped")
    except _Gone:
        return error(499, "the client disconnected; its texts were dropped")
    return JSONResponse({"model": model.name, "results": model.predictor.rows(given, answers)})


def ready(state: AppState):
    if state.failure is not None:
        return error(503, f"models failed to load: {state.failure}")
    if not state.ready:
        return error(503, "models are loading", headers={"Retry-After": "1"})
    if state.overloaded:
        return error(503, f"overloaded: the queue of {', '.join(state.overloaded)} is full (limit --max-queue)",
                     headers={"Retry-After": "1"})
    # The pid tells an operator (and a test) which of --workers N answered.
    return {"ready": True, "models": list(state.served), "worker": os.getpid()}


ERRORS = {
    401: "missing or wrong bearer token (with --token-file)",
    404: "no such model (the error lists the served ones)",
    413: "a body, a request's texts or a text over its limit",
    422: "an empty text, a text that is not UTF-8, pairs to a single-text model, a malformed body",
    429: "the model's queue is full (--max-queue); Retry-After says when to retry",
    500: "an unexpected error (details in the server's log)",
    503: "the models are still loading; Retry-After says when to retry",
    504: "no answer within --timeout",
}


def create_app(served: dict[str, Served] | Callable[[], dict[str, Served]], limits: Limits = Limits(),
               token: str | None = None, max_batch: int = 32, max_wait_ms: float = 0.0, timeout_s: float = 30.0,
               max_queue: int = 1024, cors_origins: tuple[str, ...] = (), parallel: int = 1,
               on_failure: Callable[[Exception], None] | None = None):
    """The FastAPI application serving ``served``: loaded models, or a function that loads
    them (the app then answers /health and /ready while it runs)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from peftpipe import __version__

    state = AppState(served, limits, Options(max_batch, max_wait_ms, timeout_s, max_queue, parallel), token,
                     on_failure=on_failure)

    @asynccontextmanager
    async def lifespan(app):
        loading = asyncio.get_running_loop().create_task(state.load())
        yield
        loading.cancel()
        await state.stop()

    app = FastAPI(title="peftpipe serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Exported peftpipe models: the rows `peftpipe predict --json` prints. "
                              "Every error is one JSON line, {\"error\": \"...\"}.")
    app.add_middleware(Guard, state=state)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                           expose_headers=["X-Request-Id", "Retry-After"])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, err: StarletteHTTPException):
        """404, 405 and the like: the documented shape, one JSON line."""
        return error(err.status_code, f"{request.method} {request.url.path}: {err.detail}")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorBody, "description": "loading or overloaded"}})
    async def is_ready():
        return ready(state)

    @app.get("/v1/models", responses={code: {"model": ErrorBody, "description": ERRORS[code]} for code in (401, 503)})
    async def models():
        if not state.ready:
            return error(503, "models are loading; retry shortly", headers={"Retry-After": "1"})
        return {"models": [model.card for model in state.served.values()]}

    @app.post("/v1/predict", responses={code: {"model": ErrorBody, "description": text} for code, text in ERRORS.items()})
    async def predict_texts(body: PredictRequest, request: Request):
        return await predict(state, body, request)

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        content, media_type = state.metrics.text()
        return Response(content, media_type=media_type)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        from peftpipe.serve.page import HEADERS, PAGE

        return HTMLResponse(PAGE, headers=HEADERS)

    _offline_docs(app)
    app.openapi = lambda: _openapi(app, token is not None)
    return app


def _offline_docs(app) -> None:
    """Swagger UI 5 at /docs from the files fastapi-offline ships (its static folder only):
    no CDN, so it works offline."""
    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs/assets", StaticFiles(directory=str(assets)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="peftpipe serve: API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon.png")


def _openapi(app, bearer: bool) -> dict:
    """The schema, with the bearer scheme on /v1/* when a token is required."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        if bearer:
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the line in --token-file"}}
            for path, operations in schema["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def model_card(name: str, info, source: dict) -> dict:
    """What /v1/models says of an export: from its peftpipe.json (``info``, a TrainedInfo;
    a plain transformers folder has none: its name and source only). ``source``: where it was
    read ({"folder": path} or {"experiment": name, "commit": sha}); with the training run's
    fingerprint it tells apart two served models, or shows they are one."""
    if info is None:
        return {"name": name, "source": source}
    return {"name": name, "task": info.task, "labels": info.labels, "method": info.merged_from or info.peft_method,
            "base_model": info.model.name, "test": info.test,  # test: {metric: {value, low, high}}, from export
            "source": source, "fingerprint": info.fingerprint}


def load(models: dict[str, Path], backend: str, sources: dict[str, dict] | None = None) -> dict[str, Served]:
    """Every model loaded before any is served: one that fails stops start-up with its
    one-line error (never a half-up server). ``sources``: where a model came from, when not
    its folder (an experiment's export, copied out of the DVC cache)."""
    from peftpipe.serving import Predictor, chosen_backend, folder_info

    served, bases = {}, {}
    for name, folder in models.items():
        started = time.perf_counter()
        try:
            info = folder_info(Path(folder)) if Path(folder).is_dir() else None  # read and checked once
            runs = chosen_backend(Path(folder), backend)
            key = Predictor.base_key(Path(folder), runs, info)
            if key is not None and key in bases:  # another adapter of a base already loaded: share it
                predictor = bases[key].sharing(Path(folder), name, info)
            else:
                predictor = Predictor(folder, runs, adapter_name=name, info=info)
                if key is not None:
                    bases[key] = predictor
        except (InputError, ModelError) as err:
            raise ModelError(f"--model {name}={folder}: {err}") from None
        source = (sources or {}).get(name) or {"folder": str(folder)}
        card = {**model_card(name, predictor.info, source), "backend": predictor.backend}
        served[name] = Served(name, predictor, card, base=key or name,
                              load_seconds=round(time.perf_counter() - started, 3))
    runs: dict[str, list[str]] = {}
    for name, model in served.items():
        if model.card.get("fingerprint"):
            runs.setdefault(model.card["fingerprint"], []).append(name)
    for names in (names for names in runs.values() if len(names) > 1):
        # `--exp r8` right after `dvc exp run -n r8`: the workspace holds r8's results too.
        LOG.warning("serve: %s are one training run (the same fingerprint): the same model under %d names",
                    " and ".join(names), len(names))
    return served


ARTIFACT = "artifact:"


def artifact_path(name: str) -> Path:
    """The folder dvc.yaml's ``artifacts:`` declares under ``name`` (DVC's model registry)."""
    from dvc.repo import Repo

    try:
        with Repo(".") as repo:
            declared = {artifact: spec for found in repo.artifacts.read().values()
                        for artifact, spec in found.items()}
    except Exception as err:  # not a DVC project, or a dvc.yaml DVC cannot read
        raise InputError(f"--model {ARTIFACT}{name}: cannot read dvc.yaml's artifacts ({type(err).__name__})") from None
    if name not in declared:
        raise InputError(f"--model {ARTIFACT}{name}: no such artifact in dvc.yaml; declared: "
                         f"{', '.join(declared) or 'none'}")
    return Path(declared[name].path)


def parse_models(values: tuple[str, ...], default: Path = Path("models/export")) -> dict[str, Path]:
    """``--model NAME=FOLDER`` options (a bare FOLDER is named after its folder; FOLDER may be
    ``artifact:NAME``, an artifact dvc.yaml declares)."""
    if not values:
        return {"default": default}
    found: dict[str, Path] = {}
    for value in values:
        name, _, folder = value.rpartition("=") if "=" in value else (Path(value).name, "", value)
        if not name or not folder:
            raise InputError(f"--model {value!r}: expected NAME=FOLDER")
        if name in found:
            raise InputError(f"--model {value!r}: the name {name!r} is given twice")
        found[name] = artifact_path(folder[len(ARTIFACT):]) if folder.startswith(ARTIFACT) else Path(folder)
    return found


def wait_until_up(url: str, process, seconds: float = 120) -> None:
    """Poll ``url`` until it answers 200 while ``process`` (a Popen) runs: for scripts and
    tests that start a server. RuntimeError with the end of its stderr if it exits first,
    or after ``seconds``."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}): {(process.stderr.read() or '')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not answer {url} within {seconds:g} s")


def read_token(path: Path) -> str:
    """The bearer token: the file's first line, read once (a pipe or FIFO, as secrets are
    often handed over, can be read only once)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"--token-file {path}: cannot read it ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"--token-file {path}: byte {err.start} is not UTF-8; write the token as text") from None
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise InputError(f"--token-file {path}: the token is {len(token)} characters; use at least 16 "
                         f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


def loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int):
    """A socket bound to ``host``:``port`` and listening (port 0: a free one), or one line
    saying why not: checked before the models load, not after."""
    import errno
    import socket

    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(2048)
    except (socket.gaierror, UnicodeError) as err:
        listening.close()
        raise InputError(f"--host {host}: not an address of this machine ({err})") from None
    except OSError as err:
        listening.close()
        why = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be bound ({err.strerror})"
        raise InputError(f"--host {host} --port {port}: the address {why}; choose another --port "
                         f"(or stop what holds it)") from None
    listening.set_inheritable(True)
    return listening


def run_workers(uvicorn_server, listening, workers: int, finish: Callable[[], int]) -> int:
    """Serve on ``listening`` in this process (one worker), or in ``workers`` forked
    processes sharing the socket, each loading the models and batching on its own; SIGTERM
    and SIGINT are passed on to them. ``finish()`` says how a worker ended (its exit code,
    after printing why). The exit code: the first failed worker's, or 0."""
    import signal

    from peftpipe.serve.cpus import use_threads

    # Each batch on one compute thread, ``threads`` batches at once (Options.parallel): threads
    # splitting one batch wait on each other whenever another process takes a core (on a
    # shared 2-core machine 12 requests/s with two, 83 with one a batch).
    if workers == 1:
        use_threads(1)
        uvicorn_server.run(sockets=[listening])
        return finish()
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own models, batcher and threads
            code = 2
            try:
                use_threads(1)
                uvicorn_server.run(sockets=[listening])
                code = finish()
            finally:
                os._exit(code)
        children.append(pid)
    forward = lambda signum, frame: [os.kill(pid, signum) for pid in children]  # noqa: E731
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    return next((code for code in codes if code > 0), 0)


def remove_copies(folders: list[Path]) -> None:
    """The --exp copies taken out of the DVC cache: gone when the server stops."""
    import shutil

    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def experiment_export(name: str) -> tuple[Path, str]:
    """Experiment (or any revision) ``name``'s models/export, copied out of the DVC cache
    into a temporary folder: served as it was exported, nothing retrained. With the commit
    it was read from."""
    import tempfile

    from dvc.api import DVCFileSystem

    from peftpipe.experiments import commit_of

    folder = Path(tempfile.mkdtemp(prefix="peftpipe-serve-"))  # the caller removes it (remove_copies)
    try:
        commit = commit_of(name)
        fs = DVCFileSystem(".", rev=commit)
        fs.get("models/export", str(folder / "export"), recursive=True)
    except Exception as err:  # dvc raises many types for an unknown revision or a missing output
        remove_copies([folder])
        if type(err).__name__ in ("DataIndexDirError", "FileNotFoundError", "CheckoutError"):
            raise InputError(f"--exp {name}: its models/export is not in this clone's DVC cache; run `dvc pull` "
                             f"(or `dvc exp apply {name} && dvc repro`) first") from None
        raise InputError(f"--exp {name}: cannot read its models/export ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}); give an experiment, branch or commit") from None
    return folder / "export", commit
