"""`peftpipe serve`: exported models behind an HTTP API (FastAPI on uvicorn).

- ``POST /v1/predict`` ``{"model": NAME, "texts": [...]}`` (or ``"pairs": [[a, b], ...]``)
  answers with exactly the rows `peftpipe predict --json` prints for the same texts.
- ``GET /v1/models``: each served model's task, labels, method, base model and test score
  with its interval (from the export's peftpipe.json and metrics); ``GET /health`` (the
  process answers), ``GET /ready`` (every model is loaded); ``/openapi.json``; ``/`` a page
  to try it.

Requests are queued per model and run in batches (up to ``max_batch`` texts, waiting at
most ``max_wait_ms`` for more), texts of similar length together (serving.Predictor), each
answer routed back to its request; int8 graphs run one text at a time, as predict does.
The model runs in a worker thread, so /health answers while a batch runs. Every request
is bounded (body bytes, texts, characters per text) and no request value becomes a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from peftpipe.errors import InputError, ModelError


class PredictRequest(BaseModel):
    """POST /v1/predict: the model's name (default: the first served) and texts, or pairs."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    texts: list[str] | None = None
    pairs: list[tuple[str, str]] | None = None


@dataclass(frozen=True)
class Limits:
    """What one request may hold; over it, a one-line JSON error naming the limit."""

    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_chars: int = 20_000


@dataclass
class Served:
    """One model behind the API: its predictor, what /v1/models says of it, its batcher."""

    name: str
    predictor: Any  # serving.Predictor (or anything answering a list of texts)
    card: dict
    batcher: Batcher | None = None
    base: Any = None  # models with one base share its worker thread: one adapter active at a time


@dataclass
class _Waiting:
    texts: list
    future: asyncio.Future


class Batcher:
    """Requests to one model, run together: up to ``max_batch`` texts per model call,
    waiting at most ``max_wait_ms`` after the first for more to arrive."""

    def __init__(self, predictor, max_batch: int = 32, max_wait_ms: float = 0.0, executor=None):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait_ms / 1000
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="peftpipe-model")
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, texts: list) -> list:
        if texts and isinstance(texts[0], dict):  # pairs run one at a time in the predictor anyway
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.predictor, texts)
        waiting = _Waiting(texts, asyncio.get_running_loop().create_future())
        await self.queue.put(waiting)
        return await waiting.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        held: _Waiting | None = None  # a request that did not fit the last batch goes first in the next
        while True:
            batch = [held if held is not None else await self.queue.get()]
            held, size = None, len(batch[0].texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                # What queued while the last batch ran joins at once; then wait up to max_wait.
                if self.queue.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        waiting = await asyncio.wait_for(self.queue.get(), left)
                    except TimeoutError:
                        break
                else:
                    waiting = self.queue.get_nowait()
                if size + len(waiting.texts) > self.max_batch:  # never over max_batch texts in one call
                    held = waiting
                    break
                batch.append(waiting)
                size += len(waiting.texts)
            await self._answer(loop, batch)

    async def _answer(self, loop, batch: list[_Waiting]) -> None:
        """Run ``batch`` in one model call; if that fails, each request again alone, so one
        request's bad input fails that request only."""
        texts = [text for waiting in batch for text in waiting.texts]
        try:
            answers = await loop.run_in_executor(self.executor, self.predictor, texts)
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0], error=err)
            else:
                for waiting in batch:
                    await self._answer(loop, [waiting])
            return
        start = 0
        for waiting in batch:
            _settle(waiting, answers[start:start + len(waiting.texts)])
            start += len(waiting.texts)


def _settle(waiting: _Waiting, answers: list | None = None, error: Exception | None = None) -> None:
    """Give a request its answers or its error (unless its client is gone)."""
    if waiting.future.done():
        return
    if error is not None:
        waiting.future.set_exception(error)
    else:
        waiting.future.set_result(answers)


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


def model_card(name: str, info) -> dict:
    """What /v1/models says of an export: from its peftpipe.json (``info``, a TrainedInfo;
    a plain transformers folder has none: its name only)."""
    if info is None:
        return {"name": name}
    return {"name": name, "task": info.task, "labels": info.labels, "method": info.merged_from or info.peft_method,
            "base_model": info.model.name, "test": info.test}  # test: {metric: {value, low, high}}, from export


def create_app(served: dict[str, Served], limits: Limits = Limits(), token: str | None = None,
               max_batch: int = 32, max_wait_ms: float = 0.0):
    """The FastAPI application serving ``served`` (already loaded)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from peftpipe import __version__

    @asynccontextmanager
    async def lifespan(app):
        workers: dict = {}
        for model in served.values():
            worker = workers.setdefault(model.base if model.base is not None else model.name,
                                        ThreadPoolExecutor(1, thread_name_prefix="peftpipe-model"))
            model.batcher = Batcher(model.predictor, max_batch, max_wait_ms, executor=worker)
            model.batcher.start()
        app.state.ready = True
        yield
        for model in served.values():
            await model.batcher.stop()

    app = FastAPI(title="peftpipe serve", version=__version__, lifespan=lifespan,
                  description="Exported peftpipe models: the rows `peftpipe predict --json` prints.")
    app.state.ready = False
    default = next(iter(served))

    def error(status: int, message: str, **extra) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/") and token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "missing or wrong bearer token (Authorization: Bearer <token from --token-file>)")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            return error(413, f"request body over {limits.max_body_bytes:,} bytes (limit max_body_bytes)")
        if request.method == "POST" and length is None:
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > limits.max_body_bytes:
                    return error(413, f"request body over {limits.max_body_bytes:,} bytes (limit max_body_bytes)")
            request._body = body  # read once here: the endpoint reads it again from the cache
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not app.state.ready:
            return error(503, "models are loading")
        return {"ready": True, "models": list(served)}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"models": [model.card for model in served.values()]}

    @app.post("/v1/predict")
    async def predict(request: PredictRequest):
        name = request.model or default
        if name not in served:
            return error(404, f"no model {name!r}; served: {', '.join(served)}", models=list(served))
        if (request.texts is None) == (request.pairs is None):
            return error(422, "give texts (a list of strings) or pairs (a list of [first, second]), not both")
        given: list = request.texts if request.texts is not None else \
            [{"text": first, "text_pair": second} for first, second in request.pairs]
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
        model = served[name]
        problem = model.predictor.input_problem(given)
        if problem:
            return error(422, problem)
        try:
            answers = await model.batcher.submit(given)
        except (InputError, ModelError) as err:
            return error(422, str(err))
        return {"model": name, "results": model.predictor.rows(given, answers)}

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, err: StarletteHTTPException):
        """404, 405, an unparseable body: the documented shape, one JSON line."""
        return error(err.status_code, f"{request.method} {request.url.path}: {err.detail}")

    @app.exception_handler(Exception)
    async def failure(request: Request, err: Exception):
        """Whatever else fails answers in the documented shape, naming the error's type."""
        return error(500, f"internal error ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
                          "the server's log has the details")

    @app.get("/", response_class=HTMLResponse)
    async def page():
        from peftpipe.serve.page import HEADERS, PAGE

        return HTMLResponse(PAGE, headers=HEADERS)

    return app


def load(models: dict[str, Path], backend: str) -> dict[str, Served]:
    """Every model loaded before the server starts: one that fails stops start-up with its
    one-line error (never a half-up server)."""
    from peftpipe.serving import Predictor

    served, bases = {}, {}
    for name, folder in models.items():
        try:
            key = Predictor.base_key(Path(folder), backend)
            if key is not None and key in bases:  # another adapter of a base already loaded: share it
                predictor = bases[key].sharing(Path(folder), name)
            else:
                predictor = Predictor(folder, backend, adapter_name=name)
                if key is not None:
                    bases[key] = predictor
        except (InputError, ModelError) as err:
            raise ModelError(f"--model {name}={folder}: {err}") from None
        served[name] = Served(name, predictor, model_card(name, predictor.info), base=key or name)
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
    """The bearer token: the file's first line (a token file, as secrets are mounted)."""
    try:
        token = path.read_text().strip().splitlines()[0].strip() if path.read_text().strip() else ""
    except OSError as err:
        raise InputError(f"--token-file {path}: cannot read it ({err.strerror})") from None
    if len(token) < 16:
        raise InputError(f"--token-file {path}: the token is {len(token)} characters; use at least 16 "
                         f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


def experiment_export(name: str) -> Path:
    """Experiment (or any revision) ``name``'s models/export, copied out of the DVC cache
    into a temporary folder: served as it was exported, nothing retrained."""
    import tempfile

    from dvc.api import DVCFileSystem

    from peftpipe.experiments import commit_of

    try:
        fs = DVCFileSystem(".", rev=commit_of(name))
        target = Path(tempfile.mkdtemp(prefix=f"peftpipe-serve-{name}-")) / "export"
        fs.get("models/export", str(target), recursive=True)
    except Exception as err:  # dvc raises many types for an unknown revision or a missing output
        raise InputError(f"--exp {name}: cannot read its models/export ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}); give an experiment, branch or commit") from None
    return target
