"""The HTTP server as users run it: a real process, real clients (httpx, openai), the runtime's answers."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'polyglot-onnx[serve]'")
pytest.importorskip("openai", reason="the test extra installs the openai client")

import httpx
import openai
from serve_helpers import start_server

from conftest import sample_lines
from polyglot_onnx import Embedder, FillMask

KEY = "test-key-123"
JSON = {"content-type": "application/json"}


def normalized(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def packages(tiny_models, quantized):
    return {"bert": tiny_models["tiny-bert"].package, "enc": tiny_models["tiny-encoder"].package,
            "mm": quantized["tiny-modernbert"]}


@pytest.fixture(scope="module")
def server(packages):
    srv = start_server(*(f"--name={n}={p}" for n, p in packages.items()), "--threads", "1",
                       "--max-client-batch-size", "8", "--payload-limit", "20000", "--strict-model-name")
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.fixture(scope="module")
def local(packages):
    """The in-process runtime on the same packages: what every HTTP answer must equal."""
    return {n: Embedder.load(p, provider="cpu", threads=1) for n, p in packages.items()}


def post(server, path, body, **kw):
    return httpx.post(f"{server.url}{path}", json=body, timeout=30, **kw)


def test_openai_client_float_and_base64_equal_the_runtime(server, local):
    texts = sample_lines(5)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    expected = local["bert"].encode(texts, batch_size=len(texts))
    as_b64 = client.embeddings.create(model="bert", input=texts)  # the client asks for base64 by default
    as_float = client.embeddings.create(model="bert", input=texts, encoding_format="float")
    for res in (as_b64, as_float):
        got = np.array([d.embedding for d in res.data], dtype=np.float32)
        np.testing.assert_array_equal(got, expected)
        assert [d.index for d in res.data] == list(range(5)) and res.model == "bert"
    tokens = sum(len(e.ids) for e in local["bert"].engine.text.encode(texts))
    assert as_float.usage.prompt_tokens == tokens == as_float.usage.total_tokens
    small = client.embeddings.create(model="bert", input=texts[:2], dimensions=16, encoding_format="float")
    raw = local["bert"].encode(texts[:2], normalize=False)
    np.testing.assert_array_equal(np.array([d.embedding for d in small.data], np.float32), normalized(raw[:, :16]))
    one = client.embeddings.create(model="mm", input=texts[0], encoding_format="float")
    np.testing.assert_array_equal(np.array(one.data[0].embedding, np.float32), local["mm"].encode([texts[0]])[0])


def test_tei_routes_equal_the_runtime(server, local):
    emb = local["bert"]
    texts = sample_lines(4)
    res = post(server, "/embed", {"inputs": texts, "normalize": False})
    assert res.status_code == 200
    np.testing.assert_array_equal(np.array(res.json(), np.float32), emb.encode(texts, normalize=False))
    assert int(res.headers["x-compute-tokens"]) > 0 and res.headers["x-polyglot-variant"] == emb.variant
    assert all(int(res.headers[h]) >= 0 for h in ("x-queue-time", "x-inference-time", "x-total-time"))
    # token ids from /tokenize give the same vector as the text; a token's text is the part of the input it covers
    tok = post(server, "/tokenize", {"inputs": texts[0]}).json()[0]
    enc = emb.engine.text.encode([texts[0]])[0]
    assert [t["id"] for t in tok] == enc.ids and tok[0]["text"] == enc.tokens[0]
    assert [t["text"] for t in tok[1:-1]] == [texts[0][a:b] for a, b in enc.offsets[1:-1]]
    assert tok[1]["start"] == enc.offsets[1][0] and tok[0]["special"] and tok[0]["start"] is None
    by_ids = post(server, "/embed", {"inputs": [t["id"] for t in tok]}).json()
    np.testing.assert_array_equal(np.array(by_ids, np.float32), emb.encode([texts[0]]))
    # token and word vectors
    all_tokens = post(server, "/embed_all", {"inputs": texts[:2]}).json()
    for got, want in zip(all_tokens, emb.encode(texts[:2], output="token", normalize=False)):
        np.testing.assert_array_equal(np.array(got, np.float32), want.embeddings)
    words = post(server, "/embed_words", {"inputs": [texts[1]]}).json()[0]
    want = emb.encode([texts[1]], output="word")[0]
    assert words["words"] == want.words and [tuple(o) for o in words["offsets"]] == want.offsets
    np.testing.assert_array_equal(np.array(words["embeddings"], np.float32), want.embeddings)
    # left truncation keeps the end of an over-long text
    long_text = " ".join(sample_lines())
    left = post(server, "/embed", {"inputs": long_text, "truncation_direction": "Left"})
    right = post(server, "/embed", {"inputs": long_text})
    assert left.status_code == right.status_code == 200 and left.json() != right.json()


def test_fill_mask_keeps_the_transformers_pipeline_contract(server, packages):
    fm = FillMask.load(packages["bert"], provider="cpu", threads=1)
    m = fm.mask_token
    single = f"Paris est la {m} de la France."
    res = post(server, "/fill-mask", {"model": "bert", "inputs": single, "top_k": 3})
    assert res.status_code == 200 and res.json() == fm(single, top_k=3)  # one text, one mask: flat list
    assert set(res.json()[0]) == {"score", "token", "token_str", "sequence"}
    texts = [f"Der Hund spielt im {m}.", f"{m} — столица {m}."]
    several = post(server, "/fill-mask", {"model": "bert", "inputs": texts, "top_k": 2}).json()
    assert several == fm(texts, top_k=2)
    assert len(several[1]) == 2 and len(several[1][0]) == 2  # two masks -> one list per mask
    targets = post(server, "/fill-mask", {"model": "bert", "inputs": single, "targets": ["la", "la", "le"]}).json()
    assert targets == fm(single, targets=["la", "la", "le"]) and len(targets) <= 2  # targets deduplicated
    long_text = " ".join(sample_lines()) + f" {m}."  # over the maximum: the runtime reads it whole
    res = post(server, "/fill-mask", {"model": "bert", "inputs": long_text, "top_k": 2})
    assert res.status_code == 200 and res.json() == fm(long_text, top_k=2)


def test_info_health_and_what_runs(server, local):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ready"}
    info = httpx.get(f"{server.url}/info").json()
    models = {m["name"]: m for m in info["models"]}
    assert set(models) == {"bert", "enc", "mm"}
    for name, emb in local.items():
        assert models[name]["variant"] == emb.variant and models[name]["provider"] == "CPUExecutionProvider"
        assert models[name]["drift"] == emb.describe()["drift"]
        assert "batch_invariant" in models[name]
    assert models["mm"]["drift"] is not None  # the quantized package carries its drift evidence
    assert models["enc"]["fill_mask"] is False and models["bert"]["mask_token"] == "[MASK]"
    assert info["max_batch_tokens"] == 16384 and info["max_client_batch_size"] == 8


REQUESTS_PER_CLIENT = 3


def test_fifty_concurrent_clients_all_correct_in_order(server, local):
    lines = sample_lines()
    expected = {t: local["bert"].encode([t])[0] for t in lines}
    errors: list[str] = []
    done = [0]

    async def client(seed: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(seed)
        for _ in range(REQUESTS_PER_CLIENT):  # a fixed amount of work, not a time window: no speed assumption
            texts = rng.sample(lines, rng.randint(1, 3))
            res = await http.post("/embed", json={"inputs": texts, "model": "bert"})
            if res.status_code != 200:
                errors.append(f"{res.status_code} {res.text}")
                continue
            got = np.array(res.json(), np.float32)
            want = np.stack([expected[t] for t in texts])
            if got.shape != want.shape or not np.allclose(got, want, atol=2e-5):  # fp32: batch-mates move bits
                errors.append(f"wrong vectors for {texts}")
            done[0] += 1

    async def main() -> None:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
            await asyncio.gather(*(client(i, http) for i in range(50)))

    before = _metric(server, "polyglot_batch_size_count", model="bert")
    rows_before = _metric(server, "polyglot_batch_size_sum", model="bert")
    asyncio.run(main())
    assert errors == [] and done[0] == 50 * REQUESTS_PER_CLIENT
    batches = _metric(server, "polyglot_batch_size_count", model="bert") - before
    rows = _metric(server, "polyglot_batch_size_sum", model="bert") - rows_before
    assert rows / batches > 1.5  # concurrent requests were merged into batches


@pytest.mark.parametrize(
    "path, body, status, needle",
    [
        ("/embed", {"inputs": []}, 400, "empty"),
        ("/embed", {"inputs": ["a"] * 9}, 422, "batch size 9 > maximum allowed batch size 8"),
        ("/embed", {"inputs": "x", "model": "nope"}, 404, "'bert', 'enc', 'mm'"),
        ("/embed", {"inputs": 3}, 422, "'inputs'"),
        ("/embed", {"inputs": ["a", 3]}, 422, "'inputs"),
        ("/embed", {"inputs": "a", "normalize": "yes"}, 422, "'normalize'"),
        ("/embed", {}, 422, "'inputs' is required"),
        ("/embed", {"inputs": "a", "dimensions": 0}, 422, "dimensions must be between 1 and the model's 64"),
        ("/embed", {"inputs": [[2, 999999, 3]]}, 422, "token id 999999"),
        ("/embed", {"inputs": [[]]}, 400, "empty token list"),
        ("/embed", {"inputs": "x" * 30000}, 413, "payload limit of 20000 bytes"),
        ("/embed", {"inputs": ["ok", "bad \ud800"]}, 422, "inputs[1] contains a lone surrogate"),
        ("/embed_all", {"inputs": "\udc00"}, 422, "lone surrogate"),
        ("/embed_words", {"inputs": "\ud800x"}, 422, "lone surrogate"),
        ("/tokenize", {"inputs": "\ud800"}, 422, "lone surrogate"),
        ("/fill-mask", {"inputs": "a \ud800 [MASK]"}, 422, "lone surrogate"),
        ("/fill-mask", {"inputs": "[MASK]", "targets": ["\ud800"]}, 422, "targets[0] contains a lone surrogate"),
        ("/fill-mask", {"inputs": "no mask here", "model": "bert"}, 422, "has no [MASK] token"),
        ("/fill-mask", {"inputs": "a [MASK]", "model": "enc"}, 422, "no masked-LM head"),
        ("/fill-mask", {"inputs": "a [MASK]", "top_k": 0}, 422, "top_k must be between 1"),
        ("/fill-mask", {"inputs": "a [MASK]", "top_k": 101}, 422, "top_k must be between 1 and 100"),
        ("/fill-mask", {"inputs": "[MASK] " * 33}, 422, "33 [MASK] tokens, over the limit of 32 per text"),
        ("/fill-mask", {"inputs": "a [MASK]", "targets": []}, 400, "targets is an empty list"),
    ],
)
def test_tei_error_paths(server, path, body, status, needle):
    res = httpx.post(f"{server.url}{path}", content=json.dumps(body), headers=JSON, timeout=30)
    assert res.status_code == status, res.text
    data = res.json()
    assert set(data) == {"error", "error_type"} and needle in data["error"], data


def test_openai_error_paths(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="nope", input="x")
    assert err.value.body["code"] == "model_not_found" and "'bert'" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="bert", input=[])
    res = httpx.post(f"{server.url}/v1/embeddings", content=b'{"input": "x", "model": ', headers=JSON)
    assert res.status_code == 400 and "not valid JSON" in res.json()["error"]["message"]  # OpenAI's status
    res = httpx.post(f"{server.url}/v1/embeddings", json={"input": "x", "model": "bert", "encoding_format": "hex"})
    assert res.status_code == 400 and res.json()["error"]["param"] == "encoding_format"


def test_metrics_parse_and_count_the_requests_sent(server):
    from prometheus_client.parser import text_string_to_metric_families

    before = _requests(server)
    sent = {("/embed", "200"): 3, ("/embed", "422"): 2, ("/v1/embeddings", "404"): 1}
    tokens = 0
    for _ in range(3):
        tokens += int(post(server, "/embed", {"inputs": "metrics text", "model": "enc"}).headers["x-compute-tokens"])
    for _ in range(2):
        post(server, "/embed", {"inputs": 5})
    post(server, "/v1/embeddings", {"input": "x", "model": "nope"})
    after = _requests(server)
    for key, count in sent.items():
        assert after.get(key, 0) - before.get(key, 0) == count, key
    assert sum(after.values()) - sum(before.values()) == sum(sent.values()) + 1  # + the first /metrics read
    text = httpx.get(f"{server.url}/metrics").text
    names = {f.name for f in text_string_to_metric_families(text)}
    for name in ("polyglot_request_duration_seconds", "polyglot_queue_duration_seconds",
                 "polyglot_inference_duration_seconds", "polyglot_batch_size", "polyglot_batch_tokens",
                 "polyglot_tokens", "polyglot_queue_depth", "polyglot_requests_in_flight", "polyglot_model_info"):
        assert name in names, name
    assert _metric(server, "polyglot_tokens_total", model="enc") == tokens


def _samples(server):
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics").text
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def _requests(server):
    return {(s.labels["route"], s.labels["status"]): s.value for s in _samples(server)
            if s.name == "polyglot_requests_total"}


def _metric(server, name, **labels):
    return sum(s.value for s in _samples(server) if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def strict(packages):
    srv = start_server(str(packages["bert"]), "--threads", "1", "--no-auto-truncate", "--max-concurrent-requests", "2",
                       env={"POLYGLOT_API_KEY": KEY})
    yield srv
    srv.stop()


def test_api_key_guards_every_route_but_health(strict):
    assert httpx.get(f"{strict.url}/health").status_code == 200
    for path in ("/info", "/metrics"):
        res = httpx.get(f"{strict.url}{path}")
        assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
    assert post(strict, "/embed", {"inputs": "x"}).status_code == 401
    assert post(strict, "/embed", {"inputs": "x"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post(strict, "/embed", {"inputs": "x"}, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{strict.url}/v1", api_key="wrong", max_retries=0).embeddings.create(model="x", input="x")
    client = openai.OpenAI(base_url=f"{strict.url}/v1", api_key=KEY, max_retries=0)
    assert client.embeddings.create(model="tiny-bert", input="x").model == "tiny-bert"  # named after the package


def test_too_long_without_auto_truncate_names_length_and_limit(strict):
    auth = {"Authorization": f"Bearer {KEY}"}
    long_text = " ".join(sample_lines())
    res = post(strict, "/embed", {"inputs": long_text}, headers=auth)
    assert res.status_code == 422 and "over the model maximum of 256" in res.json()["error"]
    assert post(strict, "/embed", {"inputs": long_text, "truncate": True}, headers=auth).status_code == 200


def test_fill_mask_masks_per_request_limit(strict):
    res = post(strict, "/fill-mask", {"inputs": ["[MASK] " * 30] * 9}, headers={"Authorization": f"Bearer {KEY}"})
    assert res.status_code == 422 and "270 [MASK] tokens, over the limit of 256 per request" in res.json()["error"]


def test_overload_is_refused_with_retry_after(strict):
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"inputs": [" ".join(sample_lines(8))] * 32}  # ~0.1 s each at 1 thread: 24 at once are more than 2 in flight

    async def main():
        async with httpx.AsyncClient(base_url=strict.url, headers=auth, timeout=60) as http:
            return await asyncio.gather(*(http.post("/embed", json=body) for _ in range(24)))

    results = asyncio.run(main())
    codes = [r.status_code for r in results]
    assert 200 in codes and 429 in codes and set(codes) <= {200, 429}, codes
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and refused.json()["error_type"] == "Overloaded"


def test_sigterm_answers_requests_in_flight_and_exits_0(packages):
    """SIGTERM while the server holds 16 requests (~2 s of work at 1 thread): every one is answered, exit 0.

    The signal goes out once the server's own in-flight gauge counts all 16 - not after a fixed sleep, which
    a faster machine can outrun (every request answered before the signal proves nothing about draining).
    """
    srv = start_server(str(packages["bert"]), "--threads", "1", "--max-batch-tokens", "512")
    body = {"inputs": [" ".join(sample_lines(12))[:2000]] * 32}
    answered: list[int] = []

    async def in_flight(http: httpx.AsyncClient) -> float:
        text = (await http.get("/metrics")).text
        found = re.search(r"^polyglot_requests_in_flight (\S+)$", text, re.MULTILINE)
        assert found, text
        return float(found.group(1))

    async def main():
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as http:
            async def one():
                answered.append((await http.post("/embed", json=body)).status_code)

            tasks = [asyncio.create_task(one()) for _ in range(16)]
            deadline = time.monotonic() + 30
            while await in_flight(http) < 16 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            srv.proc.send_signal(15)
            unanswered_at_signal = 16 - len(answered)
            await asyncio.gather(*tasks)
            return unanswered_at_signal

    unanswered = asyncio.run(main())
    assert srv.proc.wait(60) == 0, srv.output()
    assert unanswered > 0 and answered == [200] * 16, (unanswered, answered)


def test_a_bad_package_refuses_to_start_with_one_line(tiny_models, tmp_path):
    import shutil
    import subprocess
    import sys

    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_models["tiny-bert"].package, pkg)
    with open(pkg / "model.onnx", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\0\0\0\0")
    res = subprocess.run([sys.executable, "-m", "polyglot_onnx", "serve", str(pkg), "--port", "1"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("polyglot-onnx: error: package file model.onnx")


def test_starting_is_503_and_an_onnxruntime_failure_fails_only_its_batch_with_424(tiny_models):
    """In process (a fault cannot be injected into a subprocess): the failed batch's request gets 424."""
    from polyglot_onnx.errors import PolyglotError
    from polyglot_onnx.serve.app import create_app
    from polyglot_onnx.serve.config import ModelSpec, ServeConfig
    from polyglot_onnx.serve.server import load_backends

    config = ServeConfig(models=(ModelSpec(str(tiny_models["tiny-bert"].package), "bert"),), threads=1)
    backends = load_backends(config)
    real = backends[0].embedder.encode_ids

    def flaky(rows, **kw):
        if [2, 7, 3] in [list(r) for r in rows]:
            raise PolyglotError("onnxruntime failed on a batch of shape (1, 3) (injected)")
        return real(rows, **kw)

    backends[0].embedder.encode_ids = flaky
    app = create_app(config, backends)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            # before start-up (load + warm-up) has finished: not healthy, and inference is refused
            starting = await http.get("/health"), await http.post("/embed", json={"inputs": "x"})
            assert [r.status_code for r in starting] == [503, 503], [r.text for r in starting]
            assert starting[0].json() == {"status": "starting"} and starting[1].json()["error_type"] == "Unhealthy"
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            bad = await http.post("/embed", json={"inputs": [[2, 7, 3]]})
            bad_openai = await http.post("/v1/embeddings", json={"input": [2, 7, 3]})
            good = await http.post("/embed", json={"inputs": "still serving"})
            return bad, bad_openai, good

    bad, bad_openai, good = asyncio.run(main())
    assert bad.status_code == 424 and bad.json()["error_type"] == "Backend" and "injected" in bad.json()["error"]
    assert bad_openai.status_code == 424 and bad_openai.json()["error"]["code"] == "backend_failure"
    assert good.status_code == 200
