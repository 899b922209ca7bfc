"""Hostile and careless clients (issue 25): every request's cost bounded before it runs, in the library
and the server; slow uploads, idle connections and shutdown bounded in time; bad bodies answered in
the error shape. Servers are real processes on 127.0.0.1 (serve_helpers), stopped by their fixtures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import signal
import socket
import time

import httpx
import numpy as np
import pytest
from serve_helpers import start_server

from conftest import sample_lines
from polyglot_onnx import Embedder, FillMask, FillMaskLimits, TextLimits
from polyglot_onnx.errors import InputError, TruncationWarning

LONG = " ".join(sample_lines())  # 1,447 tiny-bert tokens: over its 256 maximum
JSON = {"content-type": "application/json"}


# ---- the library: a call's cost is checked before any work -------------------------------------


def _texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    lines = sample_lines()
    texts = [" ".join(rng.choice(lines) for _ in range(rng.randint(400, 900))) for _ in range(n)]
    # where the cut would split a very long word or a run of spaces, the text is read whole
    return texts + ["x" * 40_000 + " tail", " " * 40_000 + "hello world " * 40, "mot " * 10_000, "中文" * 18_000]


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-modernbert"])
def test_cutting_long_texts_before_tokenizing_changes_no_truncated_encoding(tiny_models, name):
    """Texts the tokenizer truncates anyway give exactly the same kept tokens when cut first (right and left)."""
    from tokenizers import Tokenizer

    from polyglot_onnx.runtime.text import cut_bound, cut_for_truncation

    emb = Embedder.load(tiny_models[name].package, provider="cpu")
    max_length = emb.engine.text.max_length
    texts = _texts(3, 12)
    assert all(len(t) > cut_bound(max_length) for t in texts)
    for left in (False, True):
        tok = Tokenizer.from_str(emb.engine.text.tokenizer.to_str())
        tok.enable_truncation(max_length, direction="left" if left else "right")
        full = tok.encode_batch(texts)
        cut, which = cut_for_truncation(tok, texts, max_length, left=left)
        assert len(which) >= len(texts) - 4  # the dense texts were cut; the adversarial ones read whole
        for a, b in zip(full, cut):
            assert a.ids == b.ids and a.tokens == b.tokens
            if not left:
                assert a.offsets == b.offsets and a.word_ids == b.word_ids
    # and through the runtime: the same vectors as the uncut encodings
    with pytest.warns(TruncationWarning):
        vectors = emb.encode(texts[:3], normalize=False)
    ids, mask = emb.engine.text.pad(_right(emb, texts[:3]))
    (want,) = emb.engine.run(["sentence_embedding"], ids, mask)
    np.testing.assert_allclose(vectors, want, atol=1e-6)


def _right(emb, texts):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(emb.engine.text.tokenizer.to_str())
    tok.enable_truncation(emb.engine.text.max_length)
    tok.no_padding()
    return tok.encode_batch(texts)


def _no_model_work(monkeypatch, client):
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran before the limits were checked")

    monkeypatch.setattr(client.engine, "run", refuse)


def test_text_limits_refuse_before_any_window_runs(tiny_models, monkeypatch):
    emb = Embedder.load(tiny_models["tiny-bert"].package, provider="cpu", limits=TextLimits(windows_per_text=5,
                                                                                          windows_per_call=8))
    _no_model_work(monkeypatch, emb)
    with pytest.raises(InputError, match=r"text 0 needs \d+ windows, over the limit of 5 per text "
                                         r"\(TextLimits.windows_per_text\)"):
        emb.encode(LONG, long_text="window")
    short = LONG[: len(LONG) // 2]
    with pytest.raises(InputError, match=r"over the limit of 8 per call \(TextLimits.windows_per_call\)"):
        emb.encode([short, short, short], long_text="window")
    with pytest.raises(InputError, match="window_stride 2 reads each token in up to 127 windows, over the limit of "
                                         "64 .* at least 4"):
        Embedder.load(tiny_models["tiny-bert"].package, provider="cpu").encode(LONG, long_text="window",
                                                                              window_stride=2)
    with pytest.raises(InputError, match=r"prompt has 9000 characters, over the limit of 8192 \(TextLimits.prompt_chars"):
        emb.encode(["a"], prompt="p" * 9000)
    with pytest.raises(InputError, match="TextLimits.windows_per_text must be a positive integer"):
        TextLimits(windows_per_text=0)
    assert emb.describe()["limits"]["windows_per_text"] == 5


def test_window_pooling_keeps_only_each_windows_share(tiny_models):
    """A long text's sentence vector is pooled from each window's share (nothing kept per window) and equals the
    mean of its merged token vectors."""
    emb = Embedder.load(tiny_models["tiny-bert"].package, provider="cpu")
    tokens = emb.encode([LONG], output="token", long_text="window", normalize=False)[0].embeddings
    pooled = emb.encode([LONG], long_text="window", normalize=False, pooling="mean")[0]
    np.testing.assert_allclose(pooled, tokens.mean(axis=0), rtol=1e-5, atol=1e-5)  # float64 sums vs a float32 mean
    cls = emb.encode([LONG], long_text="window", normalize=False, pooling="cls")[0]
    np.testing.assert_array_equal(cls, tokens[0])


def test_fill_mask_sequences_of_a_long_document_are_its_windows(tiny_models):
    fm = FillMask.load(tiny_models["tiny-bert"].package, provider="cpu")
    words = LONG.split()
    doc = " ".join(words[:200] + ["[MASK]"] + words[200:] * 8)
    preds = fm(doc, top_k=3)
    for p in preds:  # the 256-token window around the mask, filled in: not the 13,000-token document
        assert p["token_str"] in p["sequence"] and len(p["sequence"]) < len(doc) / 20
    short = f"Paris est la {fm.mask_token} de la France."
    assert fm(short, top_k=2)[0]["sequence"].startswith("Paris est la ")  # within the maximum: the whole text


def test_fill_mask_answer_size_is_checked_before_the_graph_runs(tiny_models, monkeypatch):
    from polyglot_onnx.runtime.engine import load_engine

    fm = FillMask(load_engine(tiny_models["tiny-bert"].package, provider="cpu"), FillMaskLimits(sequence_chars=5000))
    _no_model_work(monkeypatch, fm)
    with pytest.raises(InputError, match=r"over the limit of 5000 per call \(FillMaskLimits.sequence_chars\)"):
        fm([f"{LONG[:400]} [MASK] [MASK]"], top_k=100)
    with pytest.raises(InputError, match="sequence_chars must be a positive integer"):
        FillMaskLimits(sequence_chars=0)


def test_unknown_targets_are_logged_once_not_once_each(tiny_models, caplog):
    fm = FillMask.load(tiny_models["tiny-bert"].package, provider="cpu")
    targets = ["la", "le", "de"] + [f"zzqx{i}" for i in range(20_000)] + ["\u200b"]
    with caplog.at_level(logging.WARNING, logger="polyglot_onnx"):
        preds = fm("Paris est la [MASK] de la France.", targets=targets, top_k=3)
    lines = [r.getMessage() for r in caplog.records if r.name == "polyglot_onnx"]
    assert len(lines) == 2 and lines[0].startswith("20000 target(s) not in the vocabulary"), lines
    assert "1 target(s) produce no tokens" in lines[1] and len(preds) == 3


def test_count_tokens_stops_early_and_counts_exactly(tiny_models):
    text = Embedder.load(tiny_models["tiny-bert"].package, provider="cpu").engine.text
    doc = LONG * 60
    whole = len(text.whole([doc])[0])
    assert text.count_tokens(doc, 10**9) == whole
    assert whole > text.count_tokens(doc, 1000) > 1000


def test_streamed_answers_are_the_bytes_a_json_response_sends(tiny_models):
    from tokenizers import Tokenizer

    from polyglot_onnx.serve.responses import _plain, chunks, dumps
    from polyglot_onnx.serve.tokens import TokenDetail

    tok = Tokenizer.from_file(str(tiny_models["tiny-bert"].package / "tokenizer.json"))
    tok.no_truncation()
    rng = np.random.default_rng(0)
    texts = [LONG, "é \"quoted\""]
    values = [
        [rng.standard_normal((700, 5)).astype(np.float32), rng.standard_normal((2, 5)).astype(np.float32)],
        [TokenDetail(e, t) for e, t in zip(tok.encode_batch(texts), texts)],
        [{"words": ["a"], "offsets": [[0, 1]], "embeddings": rng.standard_normal((1, 3)).astype(np.float32)}],
        [[{"score": 0.5, "token": 3, "token_str": "x", "sequence": "y"}] * 3],
    ]
    for value in values:
        assert b"".join(chunks(value, size=500)) == dumps(_plain(value)).encode()


# ---- the server ------------------------------------------------------------------------------------


def _serve(*args: str):
    pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'polyglot-onnx[serve]'")
    return start_server(*args)

CAPS = ("--max-request-tokens", "3000", "--max-response-bytes", "300000", "--body-timeout", "1",
        "--header-timeout", "1", "--max-concurrent-requests", "2", "--max-connections-per-address", "4")


@pytest.fixture(scope="module")
def capped(tiny_models):
    srv = _serve(f"--name=bert={tiny_models['tiny-bert'].package}", "--threads", "1", *CAPS)
    yield srv
    assert srv.stop() == 0, srv.output()


def post(server, path, body, **kw):
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kw)


@pytest.mark.parametrize(
    "path, body, needle",
    [
        ("/embed", {"inputs": LONG, "long_text": "window", "window_stride": 8}, "--max-request-tokens"),
        ("/embed", {"inputs": LONG * 40, "long_text": "window"}, "more than the 11 windows a request may run"),
        ("/embed_all", {"inputs": [LONG] * 8}, "--max-response-bytes"),
        ("/embed_words", {"inputs": [LONG] * 8}, "--max-response-bytes"),
        ("/tokenize", {"inputs": LONG * 3}, "over the limit per request (--max-request-tokens)"),
        ("/fill-mask", {"inputs": LONG * 3 + " [MASK]"}, "over the limit a request may hold"),
        ("/fill-mask", {"inputs": ["[MASK] " * 30 + LONG[:300]] * 2, "top_k": 100}, "--max-response-bytes"),
        ("/embed", {"inputs": "x", "prompt": "p" * 9000}, "TextLimits.prompt_chars"),
    ],
)
def test_a_request_over_a_cap_is_413_naming_it_before_it_runs(capped, path, body, needle):
    res = post(capped, path, body)
    assert res.status_code == 413, res.text
    data = res.json()
    assert set(data) == {"error", "error_type"} and data["error_type"] == "Validation"  # TEI's error types
    assert needle in data["error"], data


def test_a_cap_in_the_openai_shape(capped):
    res = post(capped, "/v1/embeddings", {"input": LONG, "long_text": "window", "window_stride": 8})
    err = res.json()["error"]
    assert res.status_code == 413 and err["code"] == "request_too_expensive" and "--max-request-tokens" in err["message"]
    assert post(capped, "/v1/embeddings", {"input": LONG, "long_text": "window"}).status_code == 200  # 11 windows fit


BAD_BODIES = [
    (b'{"inputs": "\xff\xfe"}', "not valid UTF-8 (byte 0xff"),
    (b"[" * 20000 + b"]" * 20000, "nests arrays or objects too deeply"),
    (b'{"inputs": "x", "dimensions": ' + b"9" * 5000 + b"}", "integer with thousands of digits"),
    (b'{"inputs": ["a", "b"], "precision": "int8", "ranges": [[' + b"9" * 401 + b"], [1]]}", "finite numbers"),
    (b'{"inputs": ["a", "b"], "precision": "int8", "ranges": [[NaN], [1]]}', "finite numbers"),
    (b'{"inputs": ["a", "b"], "precision": "int8", "ranges": [[-Infinity], [1e999]]}', "finite numbers"),
    (b'{"inputs": "x", "precision": "int8", "ranges": "abc"}', "field 'ranges': Input should be a valid list, got a string"),
    (b'{"inputs": "x", "prompt_name": ["query"]}', "field 'prompt_name': Input should be a valid string, got a list"),
    (b'{"inputs": "x", "prompt": "\\ud800"}', "prompt contains a lone surrogate"),
]


@pytest.mark.parametrize("body, needle", BAD_BODIES)
def test_bad_bodies_are_422_in_the_error_shape_on_a_kept_connection(capped, body, needle):
    with httpx.Client(base_url=capped.url, timeout=30) as http:
        res = http.post("/embed", content=body, headers=JSON)
        assert res.status_code == 422, res.text
        assert set(res.json()) == {"error", "error_type"} and needle in res.json()["error"], res.json()
        assert res.headers.get("connection") != "close"
        assert http.post("/embed", json={"inputs": "still here"}).status_code == 200  # the same connection
        openai_shape = http.post("/v1/embeddings", content=body.replace(b'"inputs"', b'"input"'), headers=JSON)
    assert openai_shape.status_code == 400 and set(openai_shape.json()["error"]) == {"message", "type", "code", "param"}


def test_unknown_routes_and_methods_in_the_error_shape(capped):
    res = httpx.get(f"{capped.url}/embed")
    assert res.status_code == 405 and res.json()["error_type"] == "MethodNotAllowed"
    res = httpx.post(f"{capped.url}/nope", json={})
    assert res.status_code == 404 and res.json()["error_type"] == "NotFound"


def _raw(server, data: bytes, source: str = "127.0.0.1") -> socket.socket:
    host, port = server.url.rsplit("/", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
    if data:
        sock.sendall(data)
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


STALLED = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"


def test_stalled_uploads_hold_no_slot_and_time_out_with_408(capped):
    """Three stalled uploads on a server that allows 2 requests in flight: a real request still gets 200, not
    429; each stalled one gets 408 in the error shape after --body-timeout; a silent connection, after
    --header-timeout."""
    stalled = [_raw(capped, STALLED, "127.0.0.3") for _ in range(3)]
    silent = _raw(capped, b"POST /embed HTTP/1.1\r\nHost: x\r\n", "127.0.0.4")
    time.sleep(0.2)
    assert post(capped, "/embed", {"inputs": "a real request"}).status_code == 200
    assert httpx.get(f"{capped.url}/health").status_code == 200
    for sock in [*stalled, silent]:
        head, _, body = _answer(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), head
        assert json.loads(body)["error_type"] == "RequestTimeout"
        sock.close()


def test_connections_per_address_are_capped_with_429(capped):
    held = [_raw(capped, b"", "127.0.0.5") for _ in range(4)]
    time.sleep(0.2)
    over = _raw(capped, b"", "127.0.0.5")
    head, _, body = _answer(over).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429") and b"retry-after: 1" in head.lower(), head
    assert "--max-connections-per-address" in json.loads(body)["error"]
    assert post(capped, "/embed", {"inputs": "another address"}).status_code == 200
    for sock in [over, *held]:
        sock.close()


@pytest.fixture(scope="module")
def roomy(tiny_models):
    """Caps raised so one request can hold the model for seconds (tiny-bert at 1 thread), batches cut at 20 ms."""
    srv = _serve(str(tiny_models["tiny-bert"].package), "--threads", "1", "--max-request-tokens", "2000000",
                 "--max-batch-ms", "20")
    yield srv
    assert srv.stop() == 0, srv.output()


HEAVY = {"inputs": LONG * 5, "long_text": "window", "window_stride": 4}  # ~1,800 windows, seconds of work


def test_a_small_request_is_answered_while_a_long_one_runs(roomy):
    async def main():
        async with httpx.AsyncClient(base_url=roomy.url, timeout=120) as http:
            heavy = asyncio.create_task(http.post("/embed", json=HEAVY))
            await asyncio.sleep(0.5)
            small = []
            while not heavy.done() and len(small) < 5:
                started = time.perf_counter()
                res = await http.post("/embed", json={"inputs": "small"})
                small.append((res.status_code, time.perf_counter() - started, heavy.done()))
            return await heavy, small

    heavy, small = asyncio.run(main())
    assert heavy.status_code == 200 and int(heavy.headers["x-compute-tokens"]) > 7000
    assert small and all(code == 200 and not finished for code, _, finished in small), small
    assert min(seconds for _, seconds, _ in small) < 0.5, small  # one short batch, not the whole document


def test_drain_answers_new_and_late_requests_503_and_exits_in_time(tiny_models):
    srv = _serve(str(tiny_models["tiny-bert"].package), "--threads", "1", "--max-request-tokens", "2000000",
                 "--drain-timeout", "1")

    async def main():
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as http:
            heavy = asyncio.create_task(http.post("/embed", json=HEAVY))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                metrics = (await http.get("/metrics")).text
                if re.search(r"^polyglot_requests_in_flight 1\.0$", metrics, re.MULTILINE):
                    break
                await asyncio.sleep(0.02)
            srv.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as fresh:
                new = await fresh.post("/embed", json={"inputs": "too late"})
                health = await fresh.get("/health")
            late = await heavy
            return new, health, late, signalled

    try:
        new, health, late, signalled = asyncio.run(main())
        assert srv.proc.wait(30) == 0, srv.output()
        exited = time.monotonic() - signalled
    finally:
        srv.stop()
    assert new.status_code == 503 and new.json()["error_type"] == "Unhealthy" and new.headers["connection"] == "close"
    assert health.status_code == 503 and health.json() == {"status": "draining"}
    assert late.status_code == 503 and "--drain-timeout (1 s)" in late.json()["error"], late.text
    assert exited < 8, exited  # drain timeout + a grace for answers being sent + one batch


def test_unknown_targets_over_http_log_one_line(roomy):
    targets = [f"zzqx{i}" for i in range(20_000)]
    res = post(roomy, "/fill-mask", {"inputs": "Paris est la [MASK] de la France.", "targets": targets})
    assert res.status_code == 200, res.text
    time.sleep(0.2)
    assert roomy.output().count("not in the vocabulary") == 1


def test_the_heap_is_trimmed_once_after_a_burst_of_large_requests():
    from polyglot_onnx.serve.memory import LARGE_REQUEST, Trimmer

    trimmer = Trimmer()
    if trimmer.libc is None:
        pytest.skip("not glibc: nothing to trim")

    async def burst():
        await asyncio.gather(*(trimmer.after(LARGE_REQUEST) for _ in range(5)), trimmer.after(10))

    asyncio.run(burst())
    assert trimmer.trims == 1


def test_info_reports_the_caps(capped):
    limits = httpx.get(f"{capped.url}/info").json()["limits"]
    assert limits["max_request_tokens"] == 3000 and limits["body_timeout"] == 1.0
    assert limits["max_connections_per_address"] == 4
