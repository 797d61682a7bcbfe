"""`peftpipe serve`: the API answers as `peftpipe predict --json`, batches concurrent
requests and routes each answer to its request, keeps every limit, checks the token,
drains in-flight requests on SIGTERM, and refuses to start half-up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import (
    STAGES,
    built_once,
    free_port,
    peftpipe_json_reads,
    run_stage,
    serving_app,
    venv_env,
    write_tiny_recipe,
)

from peftpipe.cli import main
from peftpipe.params import write_params

httpx = pytest.importorskip("httpx")
PEFTPIPE = str(Path(sys.executable).parent / "peftpipe")
TEXTS = ["alice visited paris and met bob", "carol works at acme in berlin", "the company went to london",
         "bob", "paris london berlin acme alice carol"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny NER model trained and exported by the real stages (module-wide: about 10 s)."""
    folder = tmp_path_factory.mktemp("serve")

    def build():
        write_tiny_recipe(folder, tiny_model_dir)
        write_params(folder / "params.yaml", {"train": {"max_steps": 40}, "export": {"onnx": False}})
        before = Path.cwd()
        os.chdir(folder)
        try:
            for name in STAGES:
                run_stage(name)
        finally:
            os.chdir(before)

    return built_once("serve-exported", folder, build) / "models/export"


def predict_json(folder: Path, texts: list[str]) -> list[dict]:
    result = CliRunner().invoke(main, ["predict", "--json", "--model", str(folder), *texts])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def client(exported):
    from fastapi.testclient import TestClient

    from peftpipe.serve import app as server

    app = server.create_app(server.load({"ner": exported}, "torch"),
                            limits=server.Limits(max_body_bytes=4096, max_texts=8, max_chars=200))
    with TestClient(app) as test_client:
        yield test_client


def test_the_api_answers_exactly_as_predict_json(client, exported):
    answered = client.post("/v1/predict", json={"model": "ner", "texts": TEXTS})
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"model": "ner", "results": predict_json(exported, TEXTS)}
    assert any(row["entities"] for row in answered.json()["results"])
    assert client.post("/v1/predict", json={"texts": TEXTS[:1]}).json()["results"] == predict_json(exported, TEXTS[:1])


def test_models_health_ready_page_and_schema(client, exported):
    card = client.get("/v1/models").json()["models"][0]
    assert card["name"] == "ner" and card["task"] == "token_classification" and "B-PER" in card["labels"]
    assert card["method"] == "lora" and card["test"]["f1"]["low"] <= card["test"]["f1"]["value"] <= card["test"]["f1"]["high"]
    assert card["source"] == {"folder": str(exported)}
    trained = json.loads((exported.parent / "adapter/peftpipe.json").read_text())
    assert len(card["fingerprint"]) == 64 and card["fingerprint"] == trained["fingerprint"]
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True, "models": ["ner"], "worker": os.getpid()}
    page = client.get("/")
    assert page.status_code == 200 and "/v1/predict" in page.text and "http" not in page.text.split("<script>")[1]
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_models_say_where_each_came_from_and_which_are_one_run(exported, caplog):
    from peftpipe.serve import app as server

    with caplog.at_level("WARNING", logger="peftpipe.serve"):
        served = server.load({"default": exported, "r8": exported}, "torch",
                             {"r8": {"experiment": "r8", "commit": "0" * 40}})
    assert served["r8"].card["source"] == {"experiment": "r8", "commit": "0" * 40}
    assert served["default"].card["source"] == {"folder": str(exported)}
    assert served["r8"].card["fingerprint"] == served["default"].card["fingerprint"]
    assert [record.getMessage() for record in caplog.records] == [
        "serve: default and r8 are one training run (the same fingerprint): the same model under 2 names"]
    assert [served[name].card["name"] for name in ("default", "r8")] == ["default", "r8"]
    from peftpipe.serving import folder_info

    info = folder_info(exported)
    assert served["default"].card == {
        "name": "default", "task": "token_classification", "labels": info.labels,
        "method": info.merged_from or info.peft_method, "base_model": info.model.name, "test": info.test,
        "source": {"folder": str(exported)}, "fingerprint": info.fingerprint, "backend": "torch"}
    assert info.test and info.labels


def test_a_model_served_alone_or_beside_another_run_is_not_called_a_duplicate(exported, two_adapters, caplog):
    from peftpipe.serve import app as server

    with caplog.at_level("WARNING", logger="peftpipe.serve"):
        server.load({"alone": exported}, "torch")
        served = server.load({"one": two_adapters[0], "ner": exported}, "torch")
    assert caplog.records == []
    assert served["one"].card["fingerprint"] != served["ner"].card["fingerprint"]
    assert (served["one"].base, served["ner"].base) != (None, None) and served["ner"].base == "ner"


def test_load_says_how_long_each_model_took(exported):
    from peftpipe.serve import app as server

    started = time.perf_counter()
    served = server.load({"ner": exported}, "torch")
    took = time.perf_counter() - started
    seconds = served["ner"].load_seconds
    assert isinstance(seconds, float) and 0 < seconds <= round(took, 3) + 0.001 and seconds == round(seconds, 3)


def test_a_request_exactly_at_each_limit_is_answered(client):
    assert client.post("/v1/predict", json={"texts": ["alice"] * 8}).status_code == 200  # max_texts 8
    assert client.post("/v1/predict", json={"texts": ["a" * 200]}).status_code == 200  # max_chars 200
    over = client.post("/v1/predict", json={"texts": ["a" * 201]})
    assert over.status_code == 413 and over.json() == {"error": "texts[0]: 201 characters, over 200 (limit max_chars)"}


@pytest.mark.parametrize("body, status, needle", [
    ({"model": "nope", "texts": ["x"]}, 404, "no model 'nope'; served: ner"),
    ({"texts": ["x"] * 9}, 413, "limit max_texts"),
    ({"texts": ["word " * 50]}, 413, "limit max_chars"),
    ({"texts": []}, 422, "texts: empty; give at least one text"),
    ({"texts": ["  "]}, 422, "texts[0]: empty"),
    ({"texts": "x"}, 422, "texts: Input should be a valid list"),
    ({"texts": ["x"], "extra": 1}, 422, "extra"),
    ({"pairs": [["a", "b"]]}, 422, "not pairs"),
    ({}, 422, "give texts (a list of strings) or pairs (a list of [first, second]), not both"),
    ({"texts": ["x"], "pairs": [["a", "b"]]}, 422, "give texts (a list of strings) or pairs (a list of [first, second]), not both"),
])
def test_every_limit_and_bad_request_is_one_json_line(client, body, status, needle):
    answered = client.post("/v1/predict", json=body)
    assert answered.status_code == status, answered.text
    assert needle in answered.json()["error"] and "\n" not in answered.json()["error"]


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(client):
    answered = client.post("/v1/predict", content=b'{"texts": ["' + b"a" * 5000 + b'"]}',
                           headers={"content-type": "application/json"})
    assert answered.status_code == 413 and "limit max_body_bytes" in answered.json()["error"]


def test_the_batcher_runs_requests_together_and_routes_each_answer_back():
    from peftpipe.serve.app import Batcher

    calls = []

    def predictor(texts, batch_size=None):
        calls.append(list(texts))
        time.sleep(0.01)
        return [f"answer to {text}" for text in texts]

    async def clients():
        batcher = Batcher(predictor, max_batch=16, max_wait_ms=20)
        batcher.start()
        requests = [[f"text {i}-{j}" for j in range(1 + i % 3)] for i in range(24)]
        answers = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        await batcher.stop()
        return requests, answers

    requests, answers = asyncio.run(clients())
    assert answers == [[f"answer to {text}" for text in texts] for texts in requests]
    assert len(calls) < len(requests) and max(map(len, calls)) <= 16  # batched, never over max_batch


def test_up_to_parallel_batches_run_at_once_and_no_more():
    """With parallel=2 two batches are in the model at the same time (each on its own
    thread), a third waits; what queued meanwhile forms the next batch."""
    import threading

    from peftpipe.serve.app import Batcher

    lock, inside, most = threading.Lock(), [0], [0]

    def predictor(texts, batch_size=None):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        with lock:
            inside[0] -= 1
        return list(texts)

    async def clients(parallel):
        batcher = Batcher(predictor, max_batch=2, parallel=parallel)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([i]) for i in range(12)))
        await batcher.stop()
        return answers

    for parallel in (1, 2, 3):
        most[0] = 0
        assert asyncio.run(clients(parallel)) == [[i] for i in range(12)]
        assert most[0] == parallel


def test_a_request_that_fails_its_batch_fails_alone_and_the_others_get_their_answers():
    """A batch that raises is run again request by request: each request gets its own
    answer or its own error, whoever it was batched with."""
    from peftpipe.errors import ModelError
    from peftpipe.serve.app import Batcher

    calls = []

    def predictor(texts, batch_size=None):
        calls.append(list(texts))
        time.sleep(0.01)
        if any("bad" in text for text in texts):
            raise ModelError(f"cannot read {next(t for t in texts if 'bad' in t)}")
        return [f"answer to {text}" for text in texts]

    async def clients():
        batcher = Batcher(predictor, max_batch=16, max_wait_ms=50)
        batcher.start()
        requests = [["good 1", "good 2"], ["bad 1"], ["good 3"], ["bad 2", "good 4"]]
        answers = await asyncio.gather(*(batcher.submit(texts) for texts in requests), return_exceptions=True)
        await batcher.stop()
        return answers

    answers = asyncio.run(clients())
    assert answers[0] == ["answer to good 1", "answer to good 2"] and answers[2] == ["answer to good 3"]
    assert [str(answers[1]), str(answers[3])] == ["cannot read bad 1", "cannot read bad 2"]
    assert calls[0] == ["good 1", "good 2", "bad 1", "good 3", "bad 2", "good 4"]  # first together, then alone
    assert calls[1:] == [["good 1", "good 2"], ["bad 1"], ["good 3"], ["bad 2", "good 4"]]


class RecordingPredictor:
    """A served model's stand-in: answers each text with its length, refuses texts with 'bad'."""

    def __init__(self, label: str = "positive"):
        self.label, self.calls = label, []

    def input_problem(self, texts):
        return None

    def __call__(self, texts, batch_size=None):
        self.calls.append(list(texts))
        bad = [text for text in texts if "bad" in text]
        if bad:
            raise ValueError(f"the model cannot read {bad[0]!r}")
        return [{"label": self.label, "score": 0.5} for _ in texts]

    def rows(self, texts, answers):
        return [{"text": text, **answer} for text, answer in zip(texts, answers)]


def test_batches_run_in_parallel_only_through_models_that_allow_it():
    """--threads N runs N batches at once through a classifier; a model that keeps state
    across a call (generation, adapters sharing a base) or does not say runs one at a time."""
    from fastapi.testclient import TestClient

    from peftpipe.serve import app as server

    class Stateless(RecordingPredictor):
        runs_in_parallel = True

    class Stateful(RecordingPredictor):
        runs_in_parallel = False

    served = {"a": server.Served("a", Stateless(), {"name": "a"}), "b": server.Served("b", Stateful(), {"name": "b"}),
              "c": server.Served("c", RecordingPredictor(), {"name": "c"})}
    with TestClient(server.create_app(served, parallel=3)) as client:
        assert client.get("/ready").status_code == 200
        assert [served[name].batcher.parallel for name in "abc"] == [3, 1, 1]
        assert served["a"].batcher.executor._max_workers == 3
        assert client.post("/v1/predict", json={"model": "a", "texts": ["x"]}).status_code == 200


def test_models_on_one_base_share_one_worker_thread_and_others_have_their_own():
    from fastapi.testclient import TestClient

    from peftpipe.serve import app as server

    class Named(RecordingPredictor):
        def __call__(self, texts, batch_size=None):
            self.thread = threading.current_thread().name
            return super().__call__(texts, batch_size)

    served = {"one": server.Served("one", Named(), {"name": "one"}, base="base-a", load_seconds=1.25),
              "two": server.Served("two", Named(), {"name": "two"}, base="base-a"),
              "solo": server.Served("solo", Named(), {"name": "solo"}),
              "other": server.Served("other", Named(), {"name": "other"})}
    with TestClient(server.create_app(served)) as client:
        assert client.get("/ready").status_code == 200
        assert served["one"].batcher.executor is served["two"].batcher.executor  # one adapter active at a time
        assert served["solo"].batcher.executor not in (served["one"].batcher.executor, served["other"].batcher.executor,
                                                       None)  # models with no base each have their own
        assert client.post("/v1/predict", json={"model": "solo", "texts": ["x"]}).status_code == 200
        metrics = client.get("/metrics").text
    assert served["solo"].predictor.thread.startswith("peftpipe-model")  # named for py-spy and thread dumps
    assert 'peftpipe_model_load_seconds{model="one"} 1.25' in metrics


def test_a_good_and_a_bad_request_batched_together_each_get_their_own_answer():
    from fastapi.testclient import TestClient

    from peftpipe.serve import app as server

    predictor = RecordingPredictor()
    app = server.create_app({"m": server.Served("m", predictor, {"name": "m"})}, max_wait_ms=300)
    with TestClient(app, raise_server_exceptions=False) as test_client, ThreadPoolExecutor(2) as pool:
        good = pool.submit(test_client.post, "/v1/predict", json={"texts": ["good text"]})
        time.sleep(0.05)
        bad = pool.submit(test_client.post, "/v1/predict", json={"texts": ["bad text"]})
        good, bad = good.result(), bad.result()
    assert predictor.calls[0] == ["good text", "bad text"]  # they were batched together
    assert good.status_code == 200 and good.json()["results"] == [{"text": "good text", "label": "positive",
                                                                    "score": 0.5}]
    assert bad.status_code == 500 and bad.headers["content-type"] == "application/json"
    assert bad.json() == {"error": "internal error (ValueError: the model cannot read 'bad text'); "
                                   "the server's log has the details"}


@pytest.mark.parametrize("body, needle", [
    (b'{"texts": ["fine", "a \\ud800 b"]}', "texts[1]: character 2 is '\\ud800', a lone surrogate, which is not "
                                          "text; send valid UTF-8 (pair surrogates or drop it)"),
    (b'{"pairs": [["fine", "\\udfff"]]}', "texts[0]: character 0 is '\\udfff', a lone surrogate"),
])
def test_a_text_that_is_not_unicode_is_refused_before_the_model_sees_it(body, needle):
    from fastapi.testclient import TestClient

    from peftpipe.serve import app as server

    predictor = RecordingPredictor()
    app = server.create_app({"m": server.Served("m", predictor, {"name": "m"})})
    with TestClient(app) as test_client:
        answered = test_client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert answered.status_code == 422 and needle in answered.json()["error"], answered.text
        assert test_client.post("/v1/predict", json={"texts": ["a \U0001F600 b"]}).status_code == 200
    assert predictor.calls == [["a \U0001F600 b"]]  # a surrogate pair (an emoji) is text


@pytest.mark.parametrize("method, path, body, status, needle", [
    ("GET", "/nowhere", None, 404, "GET /nowhere: Not Found"),
    ("GET", "/v1/predict", None, 405, "GET /v1/predict: Method Not Allowed"),
    ("POST", "/v1/predict", b"{not json", 422, "JSON decode error"),
    ("POST", "/v1/predict", b"texts=a", 422, "body"),
])
def test_framework_errors_answer_in_the_documented_shape(method, path, body, status, needle):
    from fastapi.testclient import TestClient

    from peftpipe.serve import app as server

    app = server.create_app({"m": server.Served("m", RecordingPredictor(), {"name": "m"})})
    with TestClient(app) as test_client:
        answered = test_client.request(method, path, content=body,
                                       headers={"content-type": "application/json"} if body and b"{" in body else {})
    assert answered.status_code == status and set(answered.json()) == {"error"}, answered.text
    assert needle in answered.json()["error"] and "\n" not in answered.json()["error"]


def test_the_page_is_served_with_security_headers_and_builds_no_markup_from_data(client):
    from peftpipe.serve.page import PAGE

    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert "innerHTML" not in PAGE and "insertAdjacentHTML" not in PAGE  # labels become text, never markup


def start(args: list[str], port: int) -> subprocess.Popen:
    from peftpipe.serve.app import wait_until_up

    process = subprocess.Popen([PEFTPIPE, "serve", "--port", str(port), *args], env=venv_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_up(f"http://127.0.0.1:{port}/ready", process, 90)
    return process


@pytest.mark.slow
def test_a_real_server_under_concurrent_clients_with_a_token_then_sigterm_drains(exported, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token-of-enough-length\n")
    port = free_port()
    server = start(["--model", f"ner={exported}", "--token-file", str(token), "--max-wait-ms", "300"], port)
    url = f"http://127.0.0.1:{port}/v1/predict"
    auth = {"Authorization": "Bearer s3cret-token-of-enough-length"}
    try:
        assert httpx.post(url, json={"texts": ["x"]}).status_code == 401
        assert httpx.post(url, json={"texts": ["x"]}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        expected = {text: predict_json(exported, [text])[0] for text in TEXTS}
        with ThreadPoolExecutor(16) as pool:  # 40 clients, distinct texts: each gets its own answer
            asked = [TEXTS[i % len(TEXTS)] for i in range(40)]
            answers = list(pool.map(lambda text: httpx.post(url, json={"texts": [text]}, headers=auth,
                                                            timeout=60).json()["results"][0], asked))
        assert answers == [expected[text] for text in asked]
        # SIGTERM while a request waits in its batch (max-wait 300 ms): it still gets its answer.
        result = {}
        caller = threading.Thread(target=lambda: result.update(
            answer=httpx.post(url, json={"texts": TEXTS[:2]}, headers=auth, timeout=60)))
        caller.start()
        time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        caller.join()
        assert result["answer"].status_code == 200 and result["answer"].json()["results"] == \
            predict_json(exported, TEXTS[:2])
        # uvicorn re-raises the signal once drained: the conventional exit of a SIGTERMed process.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()


def test_a_model_that_fails_to_load_stops_start_up_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([PEFTPIPE, "serve", "--model", f"broken={tmp_path / 'empty'}", "--port", str(free_port())],
                            env=venv_env(), capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr
    assert "--model broken=" in errors[0] and "no exported model here" in errors[0]
    result = subprocess.run([PEFTPIPE, "serve", "--token-file", str(tmp_path / "missing")], env=venv_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--token-file" in result.stderr


def _chromium() -> tuple[str, str] | None:
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def headless_browser():
    """Headless Chromium (Debian's chromium and chromium-driver) through selenium."""
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: .ci/run installs chromium and chromium-driver")
        pytest.skip("no chromium and chromedriver here (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=found[1]), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.mark.slow
def test_the_page_highlights_entities_in_a_real_browser(exported):
    """Headless Chromium types a text into the page at / and sees the entities highlighted
    in place by type, as the API answered them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = start(["--model", f"ner={exported}"], port)
    try:
        with headless_browser() as browser:
            text = TEXTS[0]
            expected = predict_json(exported, [text])[0]["entities"]
            assert expected, "the tiny model should find entities in this text"
            browser.get(f"http://127.0.0.1:{port}/")
            WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "model").get_attribute("value") == "ner")
            box = browser.find_element(By.ID, "text")
            box.clear()
            box.send_keys(text)
            browser.find_element(By.ID, "go").click()
            WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result mark"))
            marks = browser.find_elements(By.CSS_SELECTOR, "#result mark")
            shown = [(m.text.split("\n")[0].removesuffix(m.find_element(By.TAG_NAME, "small").text).strip(),
                      m.find_element(By.TAG_NAME, "small").text) for m in marks]
            assert shown == [(e["word"], e["type"]) for e in expected]
            assert browser.find_element(By.ID, "result").text.replace("\n", "").startswith(text.split()[0])
            # Same type, same colour; the page loaded nothing from outside (no CDN).
            colours = {}
            for mark, (_, kind) in zip(marks, shown):
                assert colours.setdefault(kind, mark.value_of_css_property("background-color")) == \
                    mark.value_of_css_property("background-color")
            assert all(url.startswith(f"http://127.0.0.1:{port}") for url in browser.execute_script(
                "return performance.getEntriesByType('resource').map(r => r.name)"))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


class MarkupPredictor(RecordingPredictor):
    """Answers with label names that are markup: they must show as text, never run."""

    ENTITY = 'PER" onmouseover="window.pwned=1" x="'
    LABEL = '<img src=x onerror="window.pwned=1">'

    def rows(self, texts, answers):
        if self.label == "entities":
            return [{"text": text, "entities": [{"type": self.ENTITY, "word": text[:5], "start": 0, "end": 5,
                                                  "score": 0.9}]} for text in texts]
        return [{"text": text, "label": self.LABEL, "score": 0.75} for text in texts]


@pytest.mark.slow
def test_label_names_show_as_text_never_as_markup_and_a_gone_server_is_said_in_a_real_browser():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from peftpipe.serve import app as server

    served = {name: server.Served(name, MarkupPredictor(name), {"name": name}) for name in ("entities", "classes")}
    port = free_port()
    with headless_browser() as browser:
        with serving_app(server.create_app(served), port):
            browser.get(f"http://127.0.0.1:{port}/")
            WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
            browser.find_element(By.ID, "go").click()
            WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result mark"))
            mark = browser.find_element(By.CSS_SELECTOR, "#result mark")
            assert mark.get_attribute("title") == f"{MarkupPredictor.ENTITY} 0.9"
            assert mark.find_element(By.TAG_NAME, "small").text == MarkupPredictor.ENTITY
            assert mark.get_attribute("onmouseover") is None
            browser.execute_script("document.querySelector('#result mark').dispatchEvent(new MouseEvent('mouseover'))")
            browser.execute_script("const s = document.getElementById('model'); s.value = 'classes';"
                                   "s.dispatchEvent(new Event('change'))")
            browser.find_element(By.ID, "go").click()
            WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result .bar"))
            assert browser.find_element(By.CSS_SELECTOR, "#result .bar .name").text == MarkupPredictor.LABEL
            assert not browser.find_elements(By.CSS_SELECTOR, "#result img")
            assert browser.execute_script("return window.pwned") is None
        # The server is gone: the page says so instead of waiting on "..." forever.
        browser.find_element(By.ID, "go").click()
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result .error"))
        assert "cannot reach the server" in browser.find_element(By.CSS_SELECTOR, "#result .error").text


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, tiny_model_dir) -> list[Path]:
    """Two LoRA adapters of the tiny model (biases frozen, different seeds), as the train stage saves them."""
    import shutil

    folder = tmp_path_factory.mktemp("adapters")

    def build():
        write_tiny_recipe(folder, tiny_model_dir)
        before = Path.cwd()
        os.chdir(folder)
        try:
            for seed in (1, 2):
                write_params(folder / "params.yaml", {"seed": seed, "lora": {"bias": "none"}, "train": {"max_steps": 30}})
                for name in ("download", "split", "tokenize_align", "train"):
                    run_stage(name)
                shutil.copytree(folder / "models/adapter", folder / f"adapter-{seed}")
        finally:
            os.chdir(before)

    built_once("serve-two-adapters", folder, build)
    return [folder / f"adapter-{seed}" for seed in (1, 2)]


def test_adapters_of_one_base_share_it_and_answer_as_each_served_alone(two_adapters):
    from peftpipe.serve import app as server
    from peftpipe.serving import Predictor

    together = server.load({"one": two_adapters[0], "two": two_adapters[1]}, "torch")
    one, two = together["one"].predictor, together["two"].predictor
    assert one.model is two.model and set(one.model.peft_config) == {"one", "two"}  # one base in memory
    assert together["one"].base == together["two"].base is not None  # and one worker thread for both
    assert not one.runs_in_parallel and not two.runs_in_parallel  # set_adapter per call: one batch at a time
    alone = [Predictor(folder) for folder in two_adapters]
    assert alone[0].runs_in_parallel
    expected = [predictor(TEXTS) for predictor in alone]
    assert expected[0] != expected[1], "two adapters that answer alike would not show a wrong switch"
    for _ in range(2):  # in turn: each call selects its own adapter
        assert one(TEXTS) == expected[0] and two(TEXTS) == expected[1]


def test_adapters_sharing_a_base_read_their_peftpipe_json_once_each(two_adapters, monkeypatch):
    from peftpipe.serve import app as server

    opened = peftpipe_json_reads(monkeypatch)
    served = server.load({"one": two_adapters[0], "two": two_adapters[1]}, "torch")
    assert served["one"].predictor.model is served["two"].predictor.model
    assert sorted(opened) == sorted(folder / "peftpipe.json" for folder in two_adapters)


def test_adapters_whose_config_names_no_bias_share_a_base(two_adapters, tmp_path):
    """peft writes ``bias``; a hand-made adapter_config.json without it means none (peft's default)."""
    import shutil

    from peftpipe.serve import app as server

    copies = []
    for folder in two_adapters:
        copy = Path(shutil.copytree(folder, tmp_path / folder.name))
        config = json.loads((copy / "adapter_config.json").read_text())
        del config["bias"]
        (copy / "adapter_config.json").write_text(json.dumps(config))
        copies.append(copy)
    served = server.load({"one": copies[0], "two": copies[1]}, "torch")
    assert served["one"].predictor.model is served["two"].predictor.model


def test_an_adapter_sharing_a_base_carries_its_own_card(two_adapters):
    from peftpipe.serving import Predictor, folder_info

    first = Predictor(two_adapters[0])
    second = first.sharing(two_adapters[1], "two")  # its peftpipe.json not handed in: read from its folder
    assert second.info == folder_info(two_adapters[1]) and second.info != first.info
    assert (second.folder, second.adapter, first.folder) == (two_adapters[1], "two", two_adapters[0])
    assert first.adapter == "default" and set(first.model.peft_config) == {"default", "two"}  # peft's own name
    assert Predictor.base_key(two_adapters[0], "onnx", first.info) is None  # an ONNX graph shares no base


def test_adapters_that_trained_biases_each_get_their_own_base(exported):
    from peftpipe.serve import app as server

    adapter = exported.parent / "adapter"  # lora.bias: all (the default)
    together = server.load({"one": adapter, "two": adapter}, "torch")
    assert together["one"].predictor.model is not together["two"].predictor.model
    assert together["one"].predictor(TEXTS[:2]) == together["two"].predictor(TEXTS[:2])


@pytest.mark.slow
def test_the_api_docs_render_offline_in_a_real_browser():
    """/docs is Swagger UI from the swagger-ui-bundle package's files: it renders with no
    internet and loads nothing from another host."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from peftpipe.serve import app as server

    port = free_port()
    with headless_browser() as browser, serving_app(
            server.create_app({"m": server.Served("m", RecordingPredictor(), {"name": "m"})}), port):
        browser.get(f"http://127.0.0.1:{port}/docs")
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        paths = {element.text.replace("\u200b", "") for element in
                 browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/v1/predict", "/v1/models", "/health", "/ready"} <= paths
        assert all(url.startswith(f"http://127.0.0.1:{port}") for url in browser.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name)"))


@pytest.mark.slow
def test_several_workers_share_the_port_and_stop_together(exported):
    """--workers 2: two processes answer on one port, each with the model loaded; SIGTERM
    to the server stops both."""
    port = free_port()
    server = start(["--model", f"ner={exported}", "--workers", "2", "--threads", "1"], port)
    try:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert len(children) == 2
        # The kernel spreads connections over the workers; wait until each has said it is ready
        # (the other may still be loading: it answers 503 then).
        deadline = time.monotonic() + 180
        ready_workers = set()
        while ready_workers != set(map(int, children)) and time.monotonic() < deadline:
            answer = httpx.get(f"http://127.0.0.1:{port}/ready")
            if answer.status_code == 200:
                ready_workers.add(answer.json()["worker"])
            time.sleep(0.05)
        assert ready_workers == set(map(int, children)), "both workers should be ready"
        expected = predict_json(exported, TEXTS[:1])
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx.post(f"http://127.0.0.1:{port}/v1/predict",
                                                         json={"texts": TEXTS[:1]}, timeout=60), range(16)))
        assert [(answer.status_code, answer.text) for answer in answers if answer.status_code != 200] == []
        assert all(answer.json()["results"] == expected for answer in answers)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    assert not any(Path(f"/proc/{child}").exists() for child in children)


def test_the_model_cards_pipeline_call_loads_an_adapter_as_trained(two_adapters):
    """``inference_pipeline(folder)``, as the model card shows it: PyTorch, the adapter on its
    base under peft's default name, windows of the length the model was trained on; the
    export stage's pipeline check gets what that pipeline says of a test example's words."""
    from peftpipe.serving import check_pipeline, folder_info, inference_pipeline, served_task

    info = folder_info(two_adapters[0])
    pipe = inference_pipeline(two_adapters[0])
    assert type(pipe.model).__name__ == "PeftModelForTokenClassification"
    assert set(pipe.model.peft_config) == {"default"}
    assert pipe.tokenizer.model_max_length == info.model.max_length != 512
    example = {"tokens": TEXTS[0].split(), "tags": ["O"] * len(TEXTS[0].split())}
    checked = check_pipeline(two_adapters[0], served_task(two_adapters[0], info), example)
    assert checked is not None and checked == pipe(TEXTS[0])


def test_a_generation_model_has_no_classification_pipeline_and_no_pipeline_check(tmp_path):
    from peftpipe.errors import ModelError
    from peftpipe.serving import check_pipeline, inference_pipeline
    from peftpipe.tasks import get_task

    generation = get_task("generation", ["positive", "negative"])
    with pytest.raises(ModelError, match=f"^{tmp_path}: a generation model has no classification pipeline; use Predictor$"):
        inference_pipeline(tmp_path, task=generation)
    assert check_pipeline(tmp_path, generation, {"text": "growth", "label": "positive"}) is None


def test_a_predictor_refuses_a_folder_with_no_model_and_a_generation_model_off_torch(tmp_path):
    """Both before anything loads, each in one line that says what to do."""
    from peftpipe.errors import ModelError
    from peftpipe.serving import Predictor

    with pytest.raises(ModelError, match=rf"^{tmp_path}: no exported model here; run `dvc repro` first \(or pass --model\)$"):
        Predictor(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(ModelError, match=rf"^{tmp_path}: a generation model serves with --backend torch only"):
        Predictor(tmp_path, "onnx")


def test_a_predictor_keeps_the_folders_card_and_labels_and_never_reaches_for_the_hub(exported, monkeypatch):
    from peftpipe.serving import Predictor, folder_info

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    predictor = Predictor(exported, "torch")
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # a base named by the export comes from the local cache only
    info = folder_info(exported)
    assert predictor.info == info and predictor.task.labels == info.labels


def test_a_plain_transformers_folder_is_served_by_its_head(exported, tmp_path):
    """No peftpipe.json (a folder from elsewhere, given to --model): the head in config.json
    says the task; the pipeline answers as for the export it was copied from."""
    import shutil

    from peftpipe.serving import Predictor, inference_pipeline

    plain = Path(shutil.copytree(exported, tmp_path / "plain"))
    (plain / "peftpipe.json").unlink()
    assert inference_pipeline(plain)(TEXTS[0]) == inference_pipeline(exported)(TEXTS[0])
    assert Predictor(plain, "torch").info is None
