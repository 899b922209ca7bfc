"""Server extensions on the embedding routes: prompts, long texts read whole, a client that leaves.

Every answer must equal the in-process runtime's (Embedder.encode with the same options).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'polyglot-onnx[serve]'")
pytest.importorskip("openai", reason="the test extra installs the openai client")

import httpx
import openai
from serve_helpers import free_port, start_server

from conftest import sample_lines
from polyglot_onnx import Embedder
from polyglot_onnx.manifest import read_manifest, write_manifest
from polyglot_onnx.serve.tokens import full_length

PROMPTS = {"query": "query: ", "passage": "passage: "}
LONG = " ".join(sample_lines())  # over tiny-bert's maximum


def normalized(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def packages(tiny_models, tmp_path_factory):
    """tiny-bert, and a copy of tiny-encoder whose manifest defines prompts (default 'query')."""
    prompted = tmp_path_factory.mktemp("prompted") / "pkg"
    shutil.copytree(tiny_models["tiny-encoder"].package, prompted)
    manifest = read_manifest(prompted)
    model = dataclasses.replace(manifest.model, prompts=PROMPTS, default_prompt_name="query")
    write_manifest(prompted, dataclasses.replace(manifest, model=model))
    return {"bert": tiny_models["tiny-bert"].package, "p": prompted}


@pytest.fixture(scope="module")
def server(packages):
    srv = start_server(*(f"--name={n}={p}" for n, p in packages.items()), "--threads", "1")
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.fixture(scope="module")
def local(packages):
    return {n: Embedder.load(p, provider="cpu", threads=1) for n, p in packages.items()}


def post(server, path, body):
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_prompts_equal_the_runtime_and_count_as_tokens(server, local):
    emb = local["p"]
    texts = sample_lines(3)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    for extra, kwargs in (({}, {}), ({"prompt_name": "passage"}, {"prompt_name": "passage"}),
                          ({"prompt": "x: "}, {"prompt": "x: "}), ({"prompt": ""}, {"prompt": ""})):
        res = client.embeddings.create(model="p", input=texts, encoding_format="float", extra_body=extra)
        got = np.array([d.embedding for d in res.data], np.float32)
        np.testing.assert_array_equal(got, emb.encode(texts, batch_size=len(texts), **kwargs))
        prompt = kwargs.get("prompt", PROMPTS[kwargs.get("prompt_name", "query")])
        tokens = sum(len(e.ids) for e in emb.engine.text.encode([prompt + t for t in texts]))
        assert res.usage.prompt_tokens == tokens
    # the default prompt is the package's, as in the runtime: its tokens are counted
    assert post(server, "/embed", {"model": "p", "inputs": texts[0]}).headers["x-compute-tokens"] != \
        post(server, "/embed", {"model": "p", "inputs": texts[0], "prompt": ""}).headers["x-compute-tokens"]
    tei = post(server, "/embed", {"model": "p", "inputs": texts, "prompt_name": "passage", "normalize": False})
    np.testing.assert_array_equal(np.array(tei.json(), np.float32),
                                  emb.encode(texts, normalize=False, prompt_name="passage"))
    every = post(server, "/embed_all", {"model": "p", "inputs": texts[:2], "prompt": "x: "}).json()
    for got, want in zip(every, emb.encode(texts[:2], output="token", normalize=False, prompt="x: ")):
        np.testing.assert_array_equal(np.array(got, np.float32), want.embeddings)
    words = post(server, "/embed_words", {"model": "p", "inputs": [texts[1]], "prompt_name": "passage"}).json()[0]
    want = emb.encode([texts[1]], output="word", prompt_name="passage")[0]
    assert words["words"] == want.words
    np.testing.assert_array_equal(np.array(words["embeddings"], np.float32), want.embeddings)


def test_prompt_refusals_name_the_known_prompts(server):
    for path in ("/embed", "/embed_all", "/embed_words"):
        res = post(server, path, {"model": "p", "inputs": "x", "prompt_name": "doc"})
        assert res.status_code == 422 and "unknown prompt name 'doc'" in res.json()["error"], res.text
        assert "passage, query" in res.json()["error"] and res.json()["error_type"] == "Validation"
    res = post(server, "/v1/embeddings", {"model": "p", "input": "x", "prompt_name": "doc"})
    err = res.json()["error"]
    assert res.status_code == 400 and err["param"] == "prompt_name" and "passage, query" in err["message"]  # OpenAI's 400
    res = post(server, "/embed", {"model": "p", "inputs": [[2, 7, 3]], "prompt_name": "query"})
    assert res.status_code == 422 and "not token ids" in res.json()["error"]
    res = post(server, "/embed", {"model": "bert", "inputs": "x", "prompt_name": "query"})
    assert res.status_code == 422 and "prompts are none" in res.json()["error"]


def test_window_reads_a_long_text_whole_as_the_runtime_does(server, local):
    emb = local["bert"]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    res = client.embeddings.create(model="bert", input=LONG, encoding_format="float", extra_body={"long_text": "window"})
    whole = emb.encode([LONG], long_text="window")
    np.testing.assert_array_equal(np.array([res.data[0].embedding], np.float32), whole)
    full = full_length(emb.engine.text.encode([LONG], truncating=False)[0])
    assert res.usage.prompt_tokens == full > emb.engine.text.max_length  # the whole text is counted
    cut = client.embeddings.create(model="bert", input=LONG, encoding_format="float")
    assert not np.allclose(cut.data[0].embedding, whole[0], atol=1e-4)  # the default still truncates
    # mixed: short inputs batched as ids, the long one read whole; dimensions as in the runtime
    mixed = [sample_lines(1)[0], LONG, "Ok"]
    res = post(server, "/embed", {"model": "bert", "inputs": mixed, "long_text": "window", "dimensions": 16})
    got = np.array(res.json(), np.float32)
    np.testing.assert_array_equal(got[1], emb.encode([LONG], long_text="window", dimensions=16)[0])
    np.testing.assert_allclose(got, emb.encode(mixed, long_text="window", dimensions=16), atol=1e-6)
    stride = post(server, "/embed", {"model": "bert", "inputs": LONG, "long_text": "window", "window_stride": 8})
    np.testing.assert_array_equal(np.array(stride.json(), np.float32),
                                  emb.encode([LONG], long_text="window", window_stride=8))
    tokens = post(server, "/embed_all", {"model": "bert", "inputs": LONG, "long_text": "window"}).json()[0]
    want = emb.encode([LONG], output="token", long_text="window", normalize=False)[0]
    np.testing.assert_array_equal(np.array(tokens, np.float32), want.embeddings)
    words = post(server, "/embed_words", {"model": "bert", "inputs": LONG, "long_text": "window"}).json()[0]
    want = emb.encode([LONG], output="word", long_text="window")[0]
    assert words["words"] == want.words and len(words["embeddings"]) == len(want.words)
    np.testing.assert_array_equal(np.array(words["embeddings"], np.float32), want.embeddings)
    # a prompt and a window together, on the prompted package
    p = post(server, "/embed", {"model": "p", "inputs": LONG, "long_text": "window", "prompt_name": "passage"})
    np.testing.assert_array_equal(np.array(p.json(), np.float32),
                                  local["p"].encode([LONG], long_text="window", prompt_name="passage"))


def test_window_refusals(server):
    ids = list(range(5, 5 + 600))
    res = post(server, "/embed", {"model": "bert", "inputs": [ids], "long_text": "window"})
    assert res.status_code == 422 and "over the model maximum" in res.json()["error"]
    res = post(server, "/embed", {"model": "bert", "inputs": LONG, "long_text": "window", "window_stride": 0})
    assert res.status_code == 422 and "window_stride" in res.json()["error"]
    res = post(server, "/embed", {"model": "bert", "inputs": LONG, "long_text": "whole"})
    assert res.status_code == 422 and "long_text" in res.json()["error"]


def _uvicorn(app):
    """The app on a real uvicorn in this process (a slow model can be injected); returns (url, stop)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started

    def stop():
        server.should_exit = True
        thread.join(30)

    return f"http://127.0.0.1:{port}", stop, thread


def test_a_client_that_disconnects_has_its_inputs_dropped_over_http(tiny_models, local):
    """While a slow batch runs, a client times out and leaves: its queued inputs are never computed."""
    from polyglot_onnx.serve.app import create_app
    from polyglot_onnx.serve.config import ModelSpec, ServeConfig
    from polyglot_onnx.serve.server import load_backends

    config = ServeConfig(models=(ModelSpec(str(tiny_models["tiny-bert"].package), "bert"),), threads=1,
                         auto_truncate=False)
    backends = load_backends(config)
    real = backends[0].embedder.encode_ids
    seen: list[list[int]] = []
    slow, slow_running = threading.Event(), threading.Event()

    def recorded(rows, **kw):
        seen.extend(list(map(int, r)) for r in rows)
        if slow.is_set():
            slow_running.set()
            time.sleep(1.5)
        return real(rows, **kw)

    backends[0].embedder.encode_ids = recorded
    tokenize = backends[0].tokens.encode
    tokenized_in: set[int] = set()

    def where(*args, **kw):
        tokenized_in.add(threading.get_ident())
        return tokenize(*args, **kw)

    backends[0].tokens.encode = where
    url, stop, loop_thread = _uvicorn(create_app(config, backends))
    try:
        gone = ["this client leaves early", "and so does this text"]
        gone_ids = [e.ids for e in backends[0].tokens.encode(gone, "inputs", True)]

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                slow.set()
                first = asyncio.create_task(http.post("/embed", json={"inputs": "a slow batch"}))
                deadline = time.monotonic() + 30  # until the slow batch runs: the next request queues behind it
                while not slow_running.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                with pytest.raises(httpx.ReadTimeout):
                    await http.post("/embed", json={"inputs": gone}, timeout=0.4)
                answered = await first
                slow.clear()
                await asyncio.sleep(0.3)  # the worker had its chance to run what was still queued
                return answered, (await http.get("/metrics")).text

        answered, metrics = asyncio.run(main())
        assert answered.status_code == 200
        assert not any(ids in seen for ids in gone_ids), "a disconnected client's inputs were computed"
        dropped = re.search(r'^polyglot_dropped_inputs_total\{model="bert"\} (\S+)$', metrics, re.MULTILINE)
        assert dropped and float(dropped.group(1)) == 2.0, metrics
        # the same server without auto-truncate: an over-long text is a 422, unless read whole or truncated
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.post("/embed", json={"inputs": LONG}).status_code == 422
            assert http.post("/embed", json={"inputs": LONG, "long_text": "truncate"}).status_code == 200
            whole = http.post("/embed", json={"inputs": LONG, "long_text": "window"})
        assert whole.status_code == 200
        np.testing.assert_array_equal(np.array(whole.json(), np.float32), local["bert"].encode([LONG], long_text="window"))
        assert tokenized_in and loop_thread.ident not in tokenized_in  # tokenizing never ran on the event loop
    finally:
        stop()


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precision_equals_the_runtime(server, local, precision):
    """sentence-transformers' precision on /embed and /v1/embeddings: the same values as Embedder.encode."""
    import base64

    emb, texts = local["bert"], sample_lines(4)
    want = emb.encode(texts, batch_size=len(texts), precision=precision)
    got = post(server, "/embed", {"model": "bert", "inputs": texts, "precision": precision})
    assert got.status_code == 200, got.text
    np.testing.assert_array_equal(np.array(got.json()), want)
    res = post(server, "/v1/embeddings", {"model": "bert", "input": texts, "precision": precision,
                                          "encoding_format": "base64"})
    raw = [np.frombuffer(base64.b64decode(d["embedding"]), dtype=want.dtype) for d in res.json()["data"]]
    np.testing.assert_array_equal(np.stack(raw), want)
    if precision in ("int8", "uint8"):  # calibrated ranges make a single text quantizable, as in the runtime
        ranges = np.vstack([emb.encode(texts).min(0), emb.encode(texts).max(0)])
        one = post(server, "/embed", {"model": "bert", "inputs": texts[0], "precision": precision,
                                      "ranges": ranges.tolist()})
        np.testing.assert_array_equal(np.array(one.json()), emb.encode(texts[:1], precision=precision, ranges=ranges))
        alone = post(server, "/embed", {"model": "bert", "inputs": texts[0], "precision": precision})
        assert alone.status_code == 422 and "needs ranges" in alone.json()["error"]


def test_precision_refusals_are_422(server):
    res = post(server, "/embed", {"model": "bert", "inputs": "x", "precision": "int4"})
    assert res.status_code == 422 and "precision" in res.json()["error"]
    res = post(server, "/v1/embeddings", {"model": "bert", "input": "x", "precision": "binary", "ranges": [[0], [1]]})
    assert res.status_code == 400 and res.json()["error"]["param"] == "ranges"  # OpenAI's status
    res = post(server, "/embed", {"model": "bert", "inputs": "x", "precision": "int8", "ranges": [[0, 1], [1]]})
    assert res.status_code == 422 and "ranges must be" in res.json()["error"]
    res = post(server, "/embed_all", {"model": "bert", "inputs": "x", "precision": "binary"})
    assert res.status_code == 422 and "precision applies to sentence vectors" in res.json()["error"]
    for extra in ({"dimensions": 8}, {"normalize": True}):  # nor answered full-width / unnormalized in silence
        res = post(server, "/embed_all", {"model": "bert", "inputs": "x", **extra})
        assert res.status_code == 422 and f"{next(iter(extra))} applies to sentence vectors" in res.json()["error"]
    assert post(server, "/embed_all", {"model": "bert", "inputs": "x", "normalize": False}).status_code == 200
