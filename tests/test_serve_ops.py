"""`peftpipe serve` as a serving engineer runs it: deadlines, dropped work of gone clients,
back-pressure (429 with Retry-After), /ready while loading or overloaded, /metrics, one
access-log line per request with its id, the token read once, the port checked first,
/docs offline and an OpenAPI schema with the real error shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import serving_app, venv_env

httpx = pytest.importorskip("httpx")
PEFTPIPE = str(Path(sys.executable).parent / "peftpipe")


class SlowPredictor:
    """A served model's stand-in: each call takes ``seconds``; records what it ran."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self.calls = seconds, []

    def input_problem(self, texts):
        return None

    def __call__(self, texts, batch_size=None):
        self.calls.append(list(texts))
        time.sleep(self.seconds)
        return [{"label": "x", "score": 1.0} for _ in texts]

    def rows(self, texts, answers):
        return [{"text": text, **answer} for text, answer in zip(texts, answers)]


def app_for(predictor, **options):
    from peftpipe.serve import app as server

    return server.create_app({"m": server.Served("m", predictor, {"name": "m"})}, **options)


@contextlib.contextmanager
def client_for(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        deadline = time.monotonic() + 10
        while test_client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield test_client


# --------------------------------------------------------------------------- deadlines, back-pressure


def test_a_request_past_its_deadline_gets_504_and_its_texts_never_run():
    predictor = SlowPredictor(0.6)
    with client_for(app_for(predictor, timeout_s=0.3)) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/v1/predict", json={"texts": ["first"]})
        time.sleep(0.1)  # the model is busy with "first" for 0.6 s
        late = client.post("/v1/predict", json={"texts": ["late"]})
        assert first.result().status_code == 504  # 0.6 s > 0.3 s: its answer came too late
        assert late.status_code == 504 and late.json() == {
            "error": "no answer within 0.3 s (limit --timeout); the request was dropped"}
        time.sleep(0.8)
    assert predictor.calls == [["first"]]  # "late" was dropped before it ran


def test_the_work_of_a_client_that_disconnected_is_dropped_unrun():
    predictor = SlowPredictor(1.0)
    with serving_app(app_for(predictor, timeout_s=30)) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, f"{url}/v1/predict", json={"texts": ["first"]}, timeout=30)
        time.sleep(0.2)  # the model is busy with "first" for 1 s
        body = json.dumps({"texts": ["gone"]}).encode()
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as raw:
            raw.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.2)
        assert first.result().status_code == 200
        time.sleep(0.5)
        counted = httpx.get(f"{url}/metrics").text
    assert predictor.calls == [["first"]]
    # Nobody reads the answer to a client that left; the count says what it was.
    assert 'peftpipe_predict_requests_total{code="499",model="m"} 1.0' in counted


def test_a_full_queue_answers_429_with_retry_after_and_ready_says_overloaded():
    predictor = SlowPredictor(0.5)
    with client_for(app_for(predictor, max_queue=2)) as client, ThreadPoolExecutor(3) as pool:
        busy = pool.submit(client.post, "/v1/predict", json={"texts": ["running"]})
        time.sleep(0.1)  # running: the queue is empty again
        queued = pool.submit(client.post, "/v1/predict", json={"texts": ["a", "b"]})  # fills the queue (2)
        time.sleep(0.1)
        overloaded = client.get("/ready")
        assert overloaded.status_code == 503 and overloaded.headers["retry-after"] == "1"
        assert overloaded.json() == {"error": "overloaded: the queue of m is full (limit --max-queue)"}
        refused = client.post("/v1/predict", json={"texts": ["c"]})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "m: 2 texts are waiting for this model; the queue holds 2 "
                                           "(limit --max-queue); retry later"}
        assert busy.result().status_code == 200 and queued.result().status_code == 200
        assert client.post("/v1/predict", json={"texts": ["c", "d"]}).status_code == 200  # exactly the limit
        assert client.get("/ready").status_code == 200


def test_the_port_answers_while_the_models_load_and_ready_says_503_until_then():
    from peftpipe.serve import app as server

    release = threading.Event()

    def load():
        release.wait(10)
        return {"m": server.Served("m", SlowPredictor(), {"name": "m"})}

    from fastapi.testclient import TestClient

    with TestClient(server.create_app(load)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        loading = client.get("/ready")
        assert loading.status_code == 503 and loading.json() == {"error": "models are loading"}
        assert loading.headers["retry-after"] == "1"
        early = client.post("/v1/predict", json={"texts": ["x"]})
        assert early.status_code == 503 and early.headers["retry-after"] == "1"
        assert early.json() == {"error": "models are loading; retry shortly"}
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/ready").json() == {"ready": True, "models": ["m"], "worker": os.getpid()}
        assert client.post("/v1/predict", json={"texts": ["x"]}).status_code == 200


def test_a_model_that_refuses_a_text_in_its_batch_answers_422_with_its_reason():
    from peftpipe.errors import ModelError

    class Refusing(SlowPredictor):
        def __call__(self, texts, batch_size=None):
            raise ModelError("m: this text is in a script the tokenizer has no pieces for")

    with client_for(app_for(Refusing())) as client:
        answered = client.post("/v1/predict", json={"texts": ["x"]})
    assert answered.status_code == 422
    assert answered.json() == {"error": "m: this text is in a script the tokenizer has no pieces for"}


def test_a_load_that_failed_keeps_ready_503_with_its_reason(caplog):
    from fastapi.testclient import TestClient

    from peftpipe.serve import app as server

    failures = []

    def load():
        raise ValueError("models/x: no config.json")

    with TestClient(server.create_app(load, on_failure=failures.append)) as client:
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.02)
        answered = client.get("/ready")
    assert answered.status_code == 503
    assert answered.json() == {"error": "models failed to load: models/x: no config.json"}
    assert [str(err) for err in failures] == ["models/x: no config.json"]
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("peftpipe")] == [
        ("ERROR", "loading failed: models/x: no config.json")]


# --------------------------------------------------------------------------- observability


def test_metrics_count_requests_codes_batches_and_latency():
    with client_for(app_for(SlowPredictor())) as client:
        assert client.post("/v1/predict", json={"texts": ["a", "b", "c"]}).status_code == 200
        assert client.post("/v1/predict", json={"model": "nope", "texts": ["a"]}).status_code == 404
        text = client.get("/metrics").text
    assert 'peftpipe_requests_total{code="200",path="/v1/predict"} 1.0' in text
    assert 'peftpipe_requests_total{code="404",path="/v1/predict"} 1.0' in text
    assert 'peftpipe_predict_requests_total{code="200",model="m"} 1.0' in text
    assert 'peftpipe_batch_texts_bucket{le="2.0",model="m"} 0.0' in text
    assert 'peftpipe_batch_texts_bucket{le="4.0",model="m"} 1.0' in text
    assert 'peftpipe_request_seconds_count{path="/v1/predict"} 2.0' in text
    assert 'peftpipe_queue_texts{model="m"} 0.0' in text and "peftpipe_model_load_seconds" in text


def test_every_request_gets_one_access_line_with_its_id_echoed(caplog):
    with caplog.at_level(logging.INFO, logger="peftpipe.serve.access"), client_for(app_for(SlowPredictor())) as client:
        caplog.clear()
        mine = client.post("/v1/predict", json={"texts": ["a"]}, headers={"X-Request-Id": "abc-123"})
        made = client.get("/nowhere")
        injected = client.get("/health", headers={"X-Request-Id": "bad id\twith tab"})
    assert mine.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32 and injected.headers["x-request-id"] != "bad id\twith tab"
    lines = [record for record in caplog.records if record.name == "peftpipe.serve.access"]
    assert [(r.request_id, r.method, r.path, r.status) for r in lines] == [
        ("abc-123", "POST", "/v1/predict", 200), (made.headers["x-request-id"], "GET", "/nowhere", 404),
        (injected.headers["x-request-id"], "GET", "/health", 200)]
    assert lines[0].getMessage().startswith('abc-123 testclient "POST /v1/predict" 200 ')


def test_json_logs_are_one_object_a_line_with_the_request_fields():
    from peftpipe.serve.observe import JsonFormatter

    record = logging.LogRecord("peftpipe.serve.access", logging.INFO, __file__, 1, "x %s", ("y",), None)
    record.request_id, record.status = "abc", 200
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "x y" and line["request_id"] == "abc" and line["status"] == 200
    assert line["level"] == "info" and line["logger"] == "peftpipe.serve.access"


# --------------------------------------------------------------------------- contract


def test_the_schema_documents_the_error_shape_every_code_and_the_bearer_scheme():
    app = app_for(SlowPredictor(), token="t" * 20)
    schema = app.openapi()
    responses = schema["paths"]["/v1/predict"]["post"]["responses"]
    assert {"401", "404", "413", "422", "429", "500", "503", "504"} <= set(responses)
    for code in ("401", "413", "422", "429"):
        assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "the line in --token-file"}
    assert schema["info"]["description"].startswith("Exported peftpipe models: the rows `peftpipe predict --json` "
                                                    "prints. Every error is one JSON line")
    from peftpipe import __version__

    assert (schema["info"]["title"], schema["info"]["version"]) == ("peftpipe serve", __version__)
    assert schema["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


@pytest.mark.parametrize("header, status", [
    ("Bearer " + "t" * 20, 200), ("bearer " + "t" * 20, 200), ("BEARER  " + "t" * 20, 200),
    ("Basic " + "t" * 20, 401), ("Bearer " + "t" * 19, 401), ("", 401), ("t" * 20, 401)])
def test_the_bearer_scheme_is_read_in_any_case(header, status):
    with client_for(app_for(SlowPredictor(), token="t" * 20)) as client:
        assert client.post("/v1/predict", json={"texts": ["a"]}, headers={"Authorization": header}).status_code == status


def test_cors_lets_a_named_origin_call_the_api():
    with client_for(app_for(SlowPredictor(), cors_origins=("https://app.example.com",))) as client:
        allowed = client.options("/v1/predict", headers={"Origin": "https://app.example.com",
                                                         "Access-Control-Request-Method": "POST"})
        other = client.options("/v1/predict", headers={"Origin": "https://evil.example.com",
                                                       "Access-Control-Request-Method": "POST"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers
    assert {method.strip() for method in allowed.headers["access-control-allow-methods"].split(",")} >= {"GET", "POST"}
    with client_for(app_for(SlowPredictor(), cors_origins=("https://app.example.com",))) as client:
        for header in ("Authorization", "Content-Type", "X-Request-Id"):  # what the page and clients send
            asked = client.options("/v1/predict", headers={"Origin": "https://app.example.com",
                                                           "Access-Control-Request-Method": "POST",
                                                           "Access-Control-Request-Headers": header})
            assert asked.status_code == 200, header
        answered = client.post("/v1/predict", json={"texts": ["a"]}, headers={"Origin": "https://app.example.com"})
    # A page on the other origin may read the request id and Retry-After.
    exposed = {name.strip().lower() for name in answered.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"x-request-id", "retry-after"}


def test_docs_are_served_from_local_files():
    with client_for(app_for(SlowPredictor())) as client:
        assert client.get("/redoc").status_code == 404  # one docs page, ours: FastAPI's CDN pages are off
        page = client.get("/docs").text
        assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        script = client.get("/docs/assets/swagger-ui-bundle.js")
        assert script.status_code == 200 and len(script.content) > 100_000


# --------------------------------------------------------------------------- the token and the port


def test_the_token_file_is_read_once_so_a_fifo_works(tmp_path):
    from peftpipe.serve.app import read_token

    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("a-token-of-enough-length\n"))
    writer.start()
    assert read_token(fifo) == "a-token-of-enough-length"
    writer.join(5)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe-token-of-enough-length", "--token-file {path}: byte 0 is not UTF-8; write the token as text"),
    (b"short\n", "--token-file {path}: the token is 5 characters; use at least 16"),
    (b"\n\n", "--token-file {path}: the token is 0 characters"),
    (b"f" * 15, "--token-file {path}: the token is 15 characters; use at least 16"),
    (None, "--token-file {path}: cannot read it (No such file or directory)"),
])
def test_a_token_file_that_is_no_token_is_one_line(tmp_path, content, message):
    from peftpipe.errors import InputError
    from peftpipe.serve.app import read_token

    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as raised:
        read_token(path)
    assert message.format(path=path) in str(raised.value)


def test_a_token_of_sixteen_characters_is_enough(tmp_path):
    from peftpipe.serve.app import read_token

    (tmp_path / "token").write_text("  " + "s" * 16 + "  \nignored\n")
    assert read_token(tmp_path / "token") == "s" * 16


def test_a_port_in_use_is_said_before_anything_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([PEFTPIPE, "serve", "--model", f"m={tmp_path}", "--port", str(port)], env=venv_env(),
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: --host 127.0.0.1 --port {port}: the address is in use; choose another --port" in result.stderr
    assert time.monotonic() - started < 60


def test_loopback_hosts_are_told_apart_from_every_interface():
    from peftpipe.serve.app import loopback

    assert all(loopback(host) for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(loopback(host) for host in ("0.0.0.0", "::", "10.0.0.1", "example.com"))


@pytest.mark.slow
def test_port_zero_prints_the_real_port_and_every_interface_without_a_token_is_warned(tmp_path):
    """The port opens at once (before the models load); with --port 0 the line names the
    port bound; --host 0.0.0.0 with no token warns in one line."""
    from peftpipe.serve.app import wait_until_up

    (tmp_path / "empty").mkdir()
    process = subprocess.Popen([PEFTPIPE, "serve", "--model", f"broken={tmp_path / 'empty'}", "--host", "0.0.0.0",
                                "--port", "0"], env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert "serve: warning: --host 0.0.0.0 answers every machine that can reach it, and no --token-file" in err
    announced = next(line for line in err.splitlines() if line.startswith("serve: http://"))
    assert int(re.match(r"serve: http://0\.0\.0\.0:(\d+)/", announced).group(1)) > 0
    assert process.returncode == 2 and "no exported model here" in err and "Traceback" not in err
    assert wait_until_up  # the helper the other server tests use


def test_within_deadline_cancels_the_job_when_the_time_is_up():
    from peftpipe.serve.app import within_deadline

    class Connected:
        async def is_disconnected(self):
            return False

    async def run():
        job = asyncio.ensure_future(asyncio.sleep(5))
        with pytest.raises(TimeoutError):
            await within_deadline(job, Connected(), 0.05)
        await asyncio.sleep(0)
        return job.cancelled()

    assert asyncio.run(run())


# --------------------------------------------------------------------------- CPUs and workers


@pytest.mark.parametrize("files, cores, expected", [
    ({"cpu.max": "150000 100000\n"}, 4, 1),  # a container's --cpus 1.5: one whole core's threads
    ({"cpu.max": "max 100000\n"}, 4, 4),  # no quota: the cores it may run on
    ({"cpu.max": "800000 100000\n"}, 2, 2),  # a quota above the affinity: the affinity
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4, 2),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3, 3),
    ({"cpu.max": "50000 100000\n"}, 2, 1),  # under one CPU: still one thread
    ({}, 2, 2),  # no cgroup files
])
def test_threads_follow_the_cpus_this_process_may_really_use(tmp_path, monkeypatch, files, cores, expected):
    from peftpipe.serve import cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert cpus.available_cpus(tmp_path) == expected


def test_use_threads_sets_torch_and_onnx_runtime(monkeypatch):
    import torch

    from peftpipe.serve.cpus import use_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("PEFTPIPE_ORT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # both put back as they were afterwards
    try:
        use_threads(1)
        assert torch.get_num_threads() == 1 and os.environ["PEFTPIPE_ORT_THREADS"] == "1"
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_pairs_to_a_model_trained_on_single_texts_are_422(tmp_path, tiny_model_dir):
    """peftpipe.json says whether the model read pairs; a single-text classifier refuses them."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from peftpipe.artifacts import TrainedInfo, write_info
    from peftpipe.params import ModelParams
    from peftpipe.serve import app as server

    folder = tmp_path / "export"
    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=2, id2label={0: "neg", 1: "pos"})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    info = TrainedInfo(task="sequence_classification", peft_method="none", labels=["neg", "pos"],
                       model=ModelParams(source="local", name=str(tiny_model_dir), max_length=32), pairs=False)
    write_info(folder, info)
    with client_for(server.create_app(server.load({"m": folder}, "torch"))) as client:
        refused = client.post("/v1/predict", json={"pairs": [["alice", "bob"]]})
        assert refused.status_code == 422 and refused.json()["error"] == (
            "this model was trained on single texts, not pairs; give texts (drop --pair)")
        assert client.post("/v1/predict", json={"texts": ["alice"]}).status_code == 200
    write_info(folder, info.model_copy(update={"pairs": None}))  # an older export that did not say: served
    with client_for(server.create_app(server.load({"m": folder}, "torch"))) as client:
        assert client.post("/v1/predict", json={"pairs": [["alice", "bob"]]}).status_code == 200


def test_an_experiment_export_that_cannot_be_read_leaves_no_copy_and_says_what_to_run(tmp_path, monkeypatch):
    """--exp NAME copies the export out of DVC's cache into the temp folder; a failed read
    removes its folder, and a missing cache names `dvc pull`. remove_copies clears the rest."""
    import tempfile

    import dvc.api

    from peftpipe import experiments
    from peftpipe.errors import InputError
    from peftpipe.serve import app as server

    class DataIndexDirError(Exception):
        pass

    class Unreadable:
        def __init__(self, *args, **kwargs):
            pass

        def get(self, *args, **kwargs):
            raise DataIndexDirError("failed to load directory")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(dvc.api, "DVCFileSystem", Unreadable)
    monkeypatch.setattr(experiments, "commit_of", lambda name: name)
    with pytest.raises(InputError, match=r"--exp HEAD: its models/export is not in this clone's DVC cache; "
                                         r"run `dvc pull`"):
        server.experiment_export("HEAD")
    assert list(tmp_path.iterdir()) == []
    copy = tmp_path / "peftpipe-serve-x"
    (copy / "export").mkdir(parents=True)
    server.remove_copies([copy])
    assert not copy.exists()


def test_a_plain_transformers_folder_is_carded_by_its_name_and_source():
    from peftpipe.serve import app as server

    assert server.model_card("m", None, {"folder": "/models/m"}) == {"name": "m", "source": {"folder": "/models/m"}}


def test_an_internal_error_is_one_line_with_the_first_200_characters_of_its_message():
    from peftpipe.serve import app as server

    line = server.unexpected_line(ValueError("first\n  second " + "b" * 300))
    assert line == f"internal error (ValueError: first second {'b' * 187}); the server's log has the details"


def test_removing_copies_that_are_already_gone_is_quiet(tmp_path):
    from peftpipe.serve import app as server

    server.remove_copies([tmp_path / "gone", tmp_path / "also-gone"])  # a second SIGTERM, a failed copy


def test_an_experiment_export_is_copied_out_of_the_dvc_cache_with_its_commit(tmp_path, monkeypatch):
    """--exp REV on a real git + DVC repository: the tracked export comes out whole, in a
    folder of ours, with the commit it was read from; a revision that does not track it, or
    one that is not a revision, stops in one line."""
    import tempfile

    from dvc.repo import Repo

    from peftpipe.errors import InputError
    from peftpipe.serve import app as server

    repo_dir = tmp_path / "repo"
    (repo_dir / "models/export").mkdir(parents=True)
    run = lambda *args: subprocess.run(args, cwd=repo_dir, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    (repo_dir / "models/export/config.json").write_text('{"model_type": "bert"}')
    (repo_dir / "models/export/weights").mkdir()
    (repo_dir / "models/export/weights/part-0.bin").write_bytes(b"\x00\x01" * 64)
    monkeypatch.chdir(repo_dir)
    Repo.init(".")
    with Repo(".") as repo:
        repo.add("models/export")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "export")
    head = run("git", "rev-parse", "HEAD").stdout.decode().strip()
    (repo_dir / "models/export/config.json").write_text('{"model_type": "retrained, not committed"}')
    with Repo(".") as repo:
        repo.add("models/export")  # the workspace moves on; HEAD's export is what --exp HEAD serves
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    copy, commit = server.experiment_export("HEAD")
    assert commit == "HEAD" and copy.name == "export" and copy.parent.parent == temp
    assert copy.parent.name.startswith("peftpipe-serve-")
    assert (copy / "config.json").read_text() == '{"model_type": "bert"}'
    assert (copy / "weights/part-0.bin").read_bytes() == b"\x00\x01" * 64
    server.remove_copies([copy.parent])

    with pytest.raises(InputError, match=r"^--exp HEAD~1: its models/export is not in this clone's DVC cache; "
                                         r"run `dvc pull` \(or `dvc exp apply HEAD~1 && dvc repro`\) first$"):
        server.experiment_export("HEAD~1")  # the commit before the export was tracked
    with pytest.raises(InputError) as raised:
        server.experiment_export("no-such-rev")
    assert str(raised.value) == ("--exp no-such-rev: cannot read its models/export (RevError: unknown Git revision "
                                 "'no-such-rev'); give an experiment, branch or commit")
    assert list(temp.iterdir()) == []  # a failed read leaves no copy
    assert server.experiment_export(head)[1] == head


def test_an_app_built_without_options_has_peftpipe_serves_defaults():
    """create_app's defaults and the CLI's are written in two places; they must agree."""
    import inspect

    from peftpipe.cli import main
    from peftpipe.serve import app as server

    cli = {param.name: param.default for param in main.commands["serve"].params}
    built = {name: param.default for name, param in inspect.signature(server.create_app).parameters.items()}
    for name in ("max_batch", "max_wait_ms", "timeout_s", "max_queue"):
        assert built[name] == cli[name], name
    app = server.create_app({})
    state = next(middleware.kwargs["state"] for middleware in app.user_middleware if middleware.cls is server.Guard)
    assert state.options == server.Options(max_batch=cli["max_batch"], max_wait_ms=cli["max_wait_ms"],
                                           timeout_s=cli["timeout_s"], max_queue=cli["max_queue"], parallel=1)
    assert state.limits == server.Limits() and state.token is None  # one batch at a time unless --threads says more


def guarded(app, scope_extra: dict, caplog, limits=None, token=None, chunks=None) -> tuple[list[dict], object]:
    """``app`` behind the Guard, called once as a server would (plain ASGI): the messages sent
    and the app state (its metrics).
    ``chunks``: the request body as the server hands it over, message by message."""
    from peftpipe.serve import app as server

    state = server.AppState({}, limits or server.Limits(), server.Options(), token)
    sent = []
    given = list(chunks or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive():
        return given.pop(0) if given else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], **scope_extra}
    with caplog.at_level("INFO", logger="peftpipe"):
        asyncio.run(server.Guard(app, state)(scope, receive, send))
    return sent, state


def test_the_guard_marks_every_answer_and_logs_a_client_it_cannot_name(caplog):
    async def bare(scope, receive, send):  # a response start with no headers at all
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body", "body": b""})

    sent, state = guarded(bare, {"headers": [(b"X-Request-Id", b"given-id")]}, caplog)
    assert sent[0]["status"] == 204
    assert sorted(sent[0]["headers"]) == [(b"x-content-type-options", b"nosniff"), (b"x-request-id", b"given-id")]
    line = [r.getMessage() for r in caplog.records if r.name == "peftpipe.serve.access"]
    assert len(line) == 1 and line[0].startswith('given-id - "GET /x" 204 ')
    latency = state.metrics.registry.get_sample_value("peftpipe_request_seconds_sum", {"path": "other"})
    assert 0 <= latency < 5


def test_an_error_after_the_answer_began_is_logged_not_answered_twice(caplog):
    async def breaks_midway(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"X-Content-Type-Options", b"nosniff")]})  # already there: not added twice
        raise RuntimeError("the body could not be written")

    sent, state = guarded(breaks_midway, {"client": ("10.1.2.3", 5000)}, caplog)
    assert [message["type"] for message in sent] == ["http.response.start"]  # no second start for a 500
    assert [key.lower() for key, _ in sent[0]["headers"]].count(b"x-content-type-options") == 1
    rid = dict(sent[0]["headers"])[b"x-request-id"].decode()
    failed = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in failed] == [f"request {rid} failed"] and failed[0].exc_info
    assert next(r.getMessage() for r in caplog.records if r.name == "peftpipe.serve.access").startswith(
        f'{rid} 10.1.2.3 "GET /x" 200 ')
    assert state.metrics.registry.get_sample_value("peftpipe_requests_total", {"path": "other", "code": "200"}) == 1


@pytest.mark.parametrize("values, expected", [
    ((), {"default": Path("models/export")}),
    (("models/a",), {"a": Path("models/a")}),  # a bare folder is named after itself
    (("x=models/a", "y=/srv/b"), {"x": Path("models/a"), "y": Path("/srv/b")}),
])
def test_model_options_name_their_folders(values, expected):
    from peftpipe.serve.app import parse_models

    assert parse_models(values) == expected


@pytest.mark.parametrize("values, message", [
    (("=models/a",), "--model '=models/a': expected NAME=FOLDER"),
    (("x=",), "--model 'x=': expected NAME=FOLDER"),
    (("x=a", "x=b"), "--model 'x=b': the name 'x' is given twice"),
])
def test_a_model_option_that_names_nothing_is_one_line(values, message):
    from peftpipe.errors import InputError
    from peftpipe.serve.app import parse_models

    with pytest.raises(InputError) as raised:
        parse_models(values)
    assert str(raised.value) == message


def test_an_artifact_is_read_from_dvc_yaml_or_named_as_missing(tmp_path, monkeypatch):
    from peftpipe.errors import InputError
    from peftpipe.serve.app import parse_models

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # this project: dvc.yaml declares peftpipe-model
    assert parse_models(("ner=artifact:peftpipe-model",)) == {"ner": Path("models/export")}
    with pytest.raises(InputError) as raised:
        parse_models(("ner=artifact:nope",))
    assert str(raised.value) == "--model artifact:nope: no such artifact in dvc.yaml; declared: peftpipe-model"
    monkeypatch.chdir(tmp_path)  # not a DVC project
    with pytest.raises(InputError, match=r"^--model artifact:peftpipe-model: cannot read dvc.yaml's artifacts \(\w+\)$"):
        parse_models(("ner=artifact:peftpipe-model",))


def test_an_app_that_never_answers_is_logged_and_counted_as_500(caplog):
    async def silent(scope, receive, send):
        return None

    sent, state = guarded(silent, {}, caplog)
    assert sent == []
    assert next(r.getMessage() for r in caplog.records if r.name == "peftpipe.serve.access").split()[4] == "500"
    assert state.metrics.registry.get_sample_value("peftpipe_requests_total", {"path": "other", "code": "500"}) == 1


def test_ready_names_every_model_whose_queue_is_full():
    from types import SimpleNamespace

    from peftpipe.serve.app import ready

    answer = ready(SimpleNamespace(failure=None, ready=True, overloaded=["ner", "sentiment"]))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert json.loads(answer.body) == {"error": "overloaded: the queue of ner, sentiment is full (limit --max-queue)"}


def body_reader(seen: list):
    """An app that reads the whole body as FastAPI does, then answers 200."""
    async def app(scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            assert message["type"] == "http.request"  # as Starlette reads it
            body += message.get("body", b"")
            more = message.get("more_body", False)
        seen.append((body, await receive()))  # what follows the body: the server's own receive
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    return app


def chunked(*parts: bytes) -> list[dict]:
    return [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]


def test_a_chunked_body_within_the_limit_reaches_the_app_whole(caplog):
    from peftpipe.serve import app as server

    seen = []
    post = {"method": "POST", "path": "/v1/predict"}
    sent, _ = guarded(body_reader(seen), post, caplog, limits=server.Limits(max_body_bytes=10),
                      chunks=[{"type": "http.request", "more_body": True},  # ASGI: a message may carry no body
                              *chunked(b"01234", b"56789")])  # exactly the limit, no content-length
    assert sent[0]["status"] == 200 and seen == [(b"0123456789", {"type": "http.disconnect"})]


def test_a_chunked_body_over_the_limit_is_413_before_the_app_reads_it(caplog):
    from peftpipe.serve import app as server

    seen = []
    post = {"method": "POST", "path": "/v1/predict"}
    sent, _ = guarded(body_reader(seen), post, caplog, limits=server.Limits(max_body_bytes=10),
                      chunks=chunked(b"01234", b"56789", b"X"))
    assert sent[0]["status"] == 413 and seen == []
    assert json.loads(sent[1]["body"]) == {"error": "request body over 10 bytes (limit max_body_bytes)"}


@pytest.mark.parametrize("length, status", [("10", 200), ("11", 413), ("ten", 413), ("-1", 413)])
def test_a_declared_content_length_is_checked_before_the_body_is_read(caplog, length, status):
    from peftpipe.serve import app as server

    seen = []
    post = {"method": "POST", "path": "/v1/predict", "headers": [(b"content-length", length.encode())]}
    sent, _ = guarded(body_reader(seen), post, caplog, limits=server.Limits(max_body_bytes=10),
                      chunks=chunked(b"0123456789"))
    assert sent[0]["status"] == status and (seen != []) == (status == 200)


def test_a_request_with_no_authorization_header_is_401_in_one_line(caplog):
    seen = []
    sent, _ = guarded(body_reader(seen), {"method": "POST", "path": "/v1/predict"}, caplog, token="t" * 20)
    assert sent[0]["status"] == 401 and seen == []
    assert json.loads(sent[1]["body"]) == {
        "error": "missing or wrong bearer token (Authorization: Bearer <token from --token-file>)"}
    sent, _ = guarded(body_reader(seen), {"method": "GET", "path": "/health"}, caplog, token="t" * 20)
    assert sent[0]["status"] == 200  # only /v1/* needs the token


def test_a_model_folder_that_is_not_there_stops_loading_in_one_line(tmp_path):
    from peftpipe.errors import ModelError
    from peftpipe.serve import app as server

    with pytest.raises(ModelError) as raised:
        server.load({"m": tmp_path / "missing"}, "torch")
    missing = tmp_path / "missing"
    assert str(raised.value) == (f"--model m={missing}: {missing}: no exported model here; run `dvc repro` first "
                                 f"(or pass --model)")


def test_an_unknown_model_is_404_with_the_served_names():
    from peftpipe.serve import app as server

    served = {name: server.Served(name, SlowPredictor(), {"name": name}) for name in ("ner", "sentiment")}
    with client_for(server.create_app(served)) as client:
        answered = client.post("/v1/predict", json={"model": "nope", "texts": ["x"]})
        empty = client.post("/v1/predict", json={"texts": []})
        neither = client.post("/v1/predict", json={})
    assert answered.status_code == 404
    assert answered.json() == {"error": "no model 'nope'; served: ner, sentiment", "models": ["ner", "sentiment"]}
    assert empty.json() == {"error": "texts: empty; give at least one text"}
    assert neither.json() == {"error": "give texts (a list of strings) or pairs (a list of [first, second]), not both"}
