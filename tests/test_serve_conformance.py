"""Drop-in for the clients people already use (issue 24): the real openai, huggingface_hub, langchain-openai
and llama-index clients, with their default settings, against a real server; TEI's routes and fields as TEI
answers them; OpenAI's limits and error shape. Servers bind 127.0.0.1 on a free port and stop themselves.

The vectors are checked against sentence-transformers on a real trained checkpoint (all-MiniLM-L6-v2, the
session's ``minilm`` package from conftest).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'polyglot-onnx[serve]'")
pytest.importorskip("openai", reason="the test extra installs the openai client")

import httpx
import openai

from conftest import minilm_dir, sample_lines
from polyglot_onnx import Embedder
from polyglot_onnx.manifest import read_manifest, write_manifest
from serve_helpers import free_port, start_server

TEXTS = ["A man is eating food.", "Un homme mange de la nourriture.", "Der Aktienmarkt ist heute eingebrochen.",
         "El mercado de valores se desplomó hoy.", "Кошка спит на диване."]
TIMING = ("x-compute-time", "x-compute-characters", "x-compute-tokens", "x-total-time", "x-tokenization-time",
          "x-queue-time", "x-inference-time")
LONG = " ".join(sample_lines())  # over tiny-bert's maximum of 256 tokens


@pytest.fixture(scope="module")
def reference():
    """What sentence-transformers gives for TEXTS: the vectors an index built with it holds."""
    st = pytest.importorskip("sentence_transformers", reason="in the test extra")
    return st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(TEXTS)


@pytest.fixture(scope="module")
def real(minilm):
    """All defaults but threads: the name clients see is the checkpoint's folder name ('model')."""
    srv = start_server(str(minilm), "--threads", "1")
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.fixture(scope="module")
def prompted(quantized, tmp_path_factory):
    """tiny-bert with its int8 variant, and prompts in its manifest (none by default)."""
    pkg = tmp_path_factory.mktemp("prompted") / "tiny-bert"
    shutil.copytree(quantized["tiny-bert"], pkg)
    manifest = read_manifest(pkg)
    write_manifest(pkg, dataclasses.replace(manifest, model=dataclasses.replace(manifest.model,
                                                                                prompts={"query": "query: "})))
    return pkg


@pytest.fixture(scope="module")
def tiny(prompted):
    srv = start_server(str(prompted), "--threads", "1", "--variant", "int8", "--payload-limit", "200000")
    yield srv
    assert srv.stop() == 0, srv.output()


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def post(server, path, body, **kw):
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kw)


# ---- the real clients, default settings ---------------------------------------------------------------


def test_openai_client_any_model_name_and_100_inputs(real, reference):
    client = openai.OpenAI(base_url=f"{real.url}/v1", api_key="unused")
    res = client.embeddings.create(model="text-embedding-3-small", input=TEXTS)  # a name this server does not serve
    got = np.array([d.embedding for d in res.data])
    assert res.model == "model" and cosine(got, reference).min() >= 0.99999
    many = [f"{TEXTS[i % 5]} ({i})" for i in range(100)]  # over --max-client-batch-size (32): OpenAI's limit applies
    res = client.embeddings.create(model="text-embedding-3-small", input=many)
    assert [d.index for d in res.data] == list(range(100)) and res.usage.prompt_tokens > 100
    models = client.models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [("model", "model", "polyglot-onnx")]
    assert models.data[0].created > 1_600_000_000  # the package's export time


def test_an_unknown_model_name_is_warned_about_once(real):
    for _ in range(3):
        assert post(real, "/v1/embeddings", {"input": "x", "model": "no-such-model-42"}).status_code == 200
    assert real.output().count("'no-such-model-42'") == 1, real.output()


def test_huggingface_inference_client_feature_extraction(real, reference):
    hub = pytest.importorskip("huggingface_hub", reason="in the test extra")
    client = hub.InferenceClient(base_url=real.url)  # posts TEI's body to POST /
    got = client.feature_extraction(TEXTS)
    assert got.shape == reference.shape and cosine(got, reference).min() >= 0.99999
    one = client.feature_extraction(TEXTS[0], normalize=False, truncate=True, truncation_direction="left")
    assert one.shape == (1, reference.shape[1]) and cosine(one[0], reference[0]) >= 0.99999


def test_langchain_openai_embeddings(real, reference):
    OpenAIEmbeddings = pytest.importorskip("langchain_openai", reason="in the test extra").OpenAIEmbeddings
    # check_embedding_ctx_length=False: by default langchain tokenizes with tiktoken (downloading OpenAI's
    # vocabulary, impossible offline) and sends OpenAI token ids, which mean nothing to this model; off, it
    # sends the texts, which is how langchain's docs say to use OpenAI-compatible servers.
    emb = OpenAIEmbeddings(base_url=f"{real.url}/v1", api_key="unused", check_embedding_ctx_length=False)
    got = np.array(emb.embed_documents(TEXTS))
    assert cosine(got, reference).min() >= 0.99999
    assert cosine(emb.embed_query(TEXTS[0]), reference[0]) >= 0.99999


def test_llama_index_openai_embedding(real, reference):
    llama = pytest.importorskip("llama_index.embeddings.openai", reason="in the test extra")
    emb = llama.OpenAIEmbedding(api_base=f"{real.url}/v1", api_key="unused")  # its default model name
    got = np.array(emb.get_text_embedding_batch(TEXTS))
    assert cosine(got, reference).min() >= 0.99999
    assert cosine(emb.get_query_embedding(TEXTS[1]), reference[1]) >= 0.99999


# ---- TEI's routes and fields --------------------------------------------------------------------------


def test_tei_aliases_and_health_routes(real, reference):
    embed = post(real, "/embed", {"inputs": TEXTS[:2]})
    for path in ("/", "/invocations"):
        res = post(real, path, {"inputs": TEXTS[:2]})
        assert res.status_code == 200 and res.json() == embed.json()
    for path in ("/", "/ping", "/health"):
        assert httpx.get(f"{real.url}{path}").status_code == 200
    res = post(real, "/embeddings", {"input": TEXTS[:2], "model": "model"})  # TEI's OpenAI alias
    assert res.status_code == 200 and res.json()["object"] == "list"
    assert cosine([d["embedding"] for d in res.json()["data"]], reference[:2]).min() >= 0.99999


def test_mixed_texts_and_token_ids(real, minilm):
    local = Embedder.load(minilm, provider="cpu", threads=1)
    ids = local.engine.text.encode([TEXTS[1]])[0].ids
    res = post(real, "/embed", {"inputs": [TEXTS[0], ids, TEXTS[2]]})
    assert res.status_code == 200, res.text
    np.testing.assert_allclose(np.array(res.json()), local.encode([TEXTS[0], TEXTS[1], TEXTS[2]]), atol=1e-6)
    res = post(real, "/v1/embeddings", {"input": [ids, TEXTS[0]]})
    assert res.status_code == 200 and len(res.json()["data"]) == 2


def test_similarity_is_the_cosine_to_the_source(real, reference):
    body = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}}
    res = post(real, "/similarity", body)
    assert res.status_code == 200, res.text
    np.testing.assert_allclose(res.json(), cosine(reference[1:], reference[0]), atol=1e-5)
    assert res.json()[0] > res.json()[1]  # the translation is closer than an unrelated text
    res = post(real, "/similarity", {"inputs": {"source_sentence": "x", "sentences": []}})
    assert res.status_code == 400 and res.json()["error_type"] == "Empty"


def test_decode(tiny, prompted):
    tokenizer = Embedder.load(prompted, provider="cpu", threads=1).engine.text.tokenizer
    texts = sample_lines(2)
    rows = [[t["id"] for t in row] for row in post(tiny, "/tokenize", {"inputs": texts}).json()]
    assert post(tiny, "/decode", {"ids": rows}).json() == tokenizer.decode_batch(rows)  # as TEI: the tokenizer's
    single = post(tiny, "/decode", {"ids": rows[0], "skip_special_tokens": False}).json()
    assert single == [tokenizer.decode(rows[0], skip_special_tokens=False)] and single[0].startswith("[CLS]")
    res = post(tiny, "/decode", {"ids": []})
    assert res.status_code == 400 and res.json()["error_type"] == "Empty"
    res = post(tiny, "/decode", {"ids": [[5, 99999999]]})
    assert res.status_code == 422 and "outside this model's vocabulary" in res.json()["error"]


def test_tokenize_answers_tei_tokens_with_the_prompt(tiny, prompted):
    plain = post(tiny, "/tokenize", {"inputs": "Paris est belle"}).json()[0]
    words = [t for t in plain if not t["special"]]
    assert all(t["text"] == "Paris est belle"[t["start"]:t["stop"]] for t in words)
    assert {"id", "text", "special", "start", "stop"} == set(plain[0]) and plain[0]["start"] is None
    res = post(tiny, "/tokenize", {"inputs": "Paris est belle", "prompt_name": "query"})
    with_prompt, text = res.json()[0], "query: Paris est belle"  # the tokens /embed computes with this prompt
    assert [t["id"] for t in with_prompt] == Embedder.load(prompted, provider="cpu").engine.text.encode([text])[0].ids
    assert with_prompt[1]["start"] == 0 and with_prompt[-2]["stop"] == len(text)
    assert all(t["text"] == text[t["start"]:t["stop"]] for t in with_prompt if not t["special"])
    res = post(tiny, "/tokenize", {"inputs": "x", "prompt_name": "doc"})
    assert res.status_code == 422 and "unknown prompt name 'doc'" in res.json()["error"]


@pytest.mark.parametrize("path, body", [("/embed", {"inputs": ""}), ("/embed", {"inputs": ["ok", ""]}),
                                        ("/", {"inputs": ""}), ("/tokenize", {"inputs": ""}),
                                        ("/embed_words", {"inputs": [""]})])
def test_an_empty_string_is_400_as_tei(tiny, path, body):
    res = post(tiny, path, body)
    assert res.status_code == 400 and res.json()["error_type"] == "Empty", res.text
    assert "cannot be empty" in res.json()["error"]


def test_an_empty_string_on_the_openai_route_is_400_in_its_shape(tiny):
    res = post(tiny, "/v1/embeddings", {"input": ["ok", ""]})
    err = res.json()["error"]
    assert res.status_code == 400 and err["type"] == "invalid_request_error" and "input[1]" in err["message"]


def test_info_has_tei_fields_and_the_variant(tiny, real):
    info = httpx.get(f"{tiny.url}/info").json()
    assert info["served_model_name"] == "tiny-bert" and info["model_id"] == "tiny-bert"
    assert info["model_dtype"] == "int8" and info["variant"] == "int8" and info["models"][0]["variant"] == "int8"
    for key in ("model_sha", "max_client_batch_size", "max_input_length", "version", "sha", "docker_label",
                "tokenization_workers", "auto_truncate", "max_batch_requests"):
        assert key in info, key
    assert httpx.get(f"{real.url}/info").json()["model_dtype"] == "float32"


def test_every_embedding_answer_has_teis_timing_headers_and_the_variant(tiny):
    for path, body in (("/embed", {"inputs": ["a b", "c"]}), ("/", {"inputs": "a"}),
                       ("/v1/embeddings", {"input": "a"}), ("/embeddings", {"input": ["a"]}),
                       ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
                       ("/embed_all", {"inputs": "a"})):
        res = post(tiny, path, body)
        assert res.status_code == 200, (path, res.text)
        assert res.headers["x-polyglot-variant"] == "int8" and res.headers["x-compute-type"] == "cpu", path
        assert all(re.fullmatch(r"\d+", res.headers[h]) for h in TIMING), (path, dict(res.headers))
    res = post(tiny, "/embed", {"inputs": ["a b", "cd"]})
    assert res.headers["x-compute-characters"] == "5" and int(res.headers["x-compute-tokens"]) >= 4


def test_openai_validation_is_400_in_openai_shape_and_tei_keeps_its_own(tiny):
    for path in ("/v1/embeddings", "/embeddings"):
        res = post(tiny, path, {"input": 5})
        assert res.status_code == 400, res.text
        err = res.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
        assert err["param"] == "input"
    res = post(tiny, "/v1/embeddings", {})
    assert res.status_code == 400 and res.json()["error"]["param"] == "input"
    res = post(tiny, "/embed", {"inputs": 5})
    assert res.status_code == 422 and set(res.json()) == {"error", "error_type"}


def test_openai_takes_2048_inputs_and_refuses_2049(tiny):
    res = post(tiny, "/v1/embeddings", {"input": ["ab cd"] * 2048, "encoding_format": "base64"})
    assert res.status_code == 200 and len(res.json()["data"]) == 2048
    res = post(tiny, "/v1/embeddings", {"input": ["ab cd"] * 2049})
    message = res.json()["error"]["message"]
    assert res.status_code == 400 and "batch size 2049 > maximum allowed batch size 2048" in message
    res = post(tiny, "/embed", {"inputs": ["ab"] * 33})  # TEI's routes keep --max-client-batch-size
    assert res.status_code == 422 and "--max-client-batch-size" in res.json()["error"]


def test_413_uses_a_tei_error_type(tiny):
    res = httpx.post(f"{tiny.url}/embed", content=json.dumps({"inputs": "x" * 300_000}),
                     headers={"content-type": "application/json"})
    assert res.status_code == 413 and res.json()["error_type"] == "Validation"


def test_truncate_false_says_what_refused(tiny):
    res = post(tiny, "/embed", {"inputs": LONG, "truncate": False})
    assert res.status_code == 422
    message = res.json()["error"]
    assert "this request sets truncate=false" in message and "--no-auto-truncate" not in message
    assert post(tiny, "/embed", {"inputs": LONG}).status_code == 200  # the server truncates by default


def test_docs_and_schema_are_served(tiny):
    assert httpx.get(f"{tiny.url}/docs").status_code == 200
    for path in ("/openapi.json", "/api-doc/openapi.json"):
        schema = httpx.get(f"{tiny.url}{path}").json()
        assert {"/embed", "/v1/embeddings", "/similarity", "/decode", "/v1/models"} <= set(schema["paths"])


def test_tei_metrics_are_exported(tiny):
    from prometheus_client.parser import text_string_to_metric_families

    post(tiny, "/embed", {"inputs": ["metrics", "te"]})
    post(tiny, "/embed", {"inputs": ""})
    text = httpx.get(f"{tiny.url}/metrics").text
    assert "\nte_request_count{" in text  # TEI's exporter writes counters without '_total'
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("te_request_count", "te_request_success", "te_request_failure", "te_request_duration",
                 "te_request_tokenization_duration", "te_request_queue_duration", "te_request_inference_duration",
                 "te_request_input_length", "te_batch_next_size", "te_batch_next_tokens", "te_queue_size",
                 "te_embed_count", "te_embed_success", "polyglot_requests"):
        assert name in families, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("te_request_failure_total", (("err", "validation"),))] >= 1
    assert samples[("te_request_success_total", (("method", "batch"),))] >= 1
    assert samples[("te_batch_next_size_count", ())] >= 1


# ---- deployment: environment variables, a busy port ---------------------------------------------------


def test_every_flag_reads_its_environment_variable_and_the_command_line_wins(prompted):
    env = {"POLYGLOT_PACKAGES": str(prompted), "POLYGLOT_SERVED_MODEL_NAME": "from-env",
           "POLYGLOT_MAX_CLIENT_BATCH_SIZE": "4", "POLYGLOT_AUTO_TRUNCATE": "false", "POLYGLOT_THREADS": "1",
           "POLYGLOT_MAX_BATCH_TOKENS": "999", "POLYGLOT_PORT": "1", "POLYGLOT_API_KEY": "k3y",
           "POLYGLOT_STRICT_MODEL_NAME": "yes"}
    srv = start_server("--max-batch-tokens", "2048", env=env)  # start_server passes --port itself
    try:
        auth = {"Authorization": "Bearer k3y"}
        info = httpx.get(f"{srv.url}/info", headers=auth).json()
        assert (info["served_model_name"], info["max_client_batch_size"], info["auto_truncate"],
                info["max_batch_tokens"]) == ("from-env", 4, False, 2048)
        assert httpx.get(f"{srv.url}/docs").status_code == 200  # public, as TEI's
        assert httpx.get(f"{srv.url}/v1/models").status_code == 401
        res = post(srv, "/embed", {"inputs": LONG}, headers=auth)
        assert res.status_code == 422 and "--no-auto-truncate" in res.json()["error"]
        res = post(srv, "/v1/embeddings", {"input": LONG}, headers=auth)
        assert res.status_code == 400 and "long_text" in res.json()["error"]["message"]
        res = post(srv, "/v1/embeddings", {"input": "x", "model": "nope"}, headers=auth)
        assert res.status_code == 404  # POLYGLOT_STRICT_MODEL_NAME
    finally:
        assert srv.stop() == 0, srv.output()


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "polyglot_onnx", "serve", *args], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, **(env or {})})


def test_a_bad_environment_variable_is_one_line(prompted):
    res = _serve(str(prompted), env={"POLYGLOT_MAX_BATCH_TOKENS": "lots"})
    assert res.returncode == 1 and res.stderr.strip() == (
        "polyglot-onnx: error: POLYGLOT_MAX_BATCH_TOKENS='lots' is not a valid int (it sets --max-batch-tokens)")
    res = _serve(str(prompted), "--max-batch-tokens", "64", "--help", env={"POLYGLOT_MAX_BATCH_TOKENS": "lots"})
    assert res.returncode == 0 and "POLYGLOT_<FLAG>" in res.stdout  # the rule is in --help


def test_a_busy_port_is_one_line_and_a_non_zero_exit(prompted):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = _serve(str(prompted), "--port", str(port))
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip() == (f"polyglot-onnx: error: port {port} on 127.0.0.1 is already in use: pass --port "
                                  "(or POLYGLOT_PORT) or stop the other server")


def test_a_port_taken_after_the_check_is_the_same_line():
    """The race: the port is free when checked, taken before the server binds it."""
    from polyglot_onnx.errors import InputError
    from polyglot_onnx.serve.server import check_port, listening_socket

    port = free_port()
    check_port("127.0.0.1", port)
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(InputError, match=f"^port {port} on 127.0.0.1 is already in use"):
            listening_socket("127.0.0.1", port)


def test_served_model_name_names_one_package(prompted, tiny_models):
    from polyglot_onnx.cli import build_parser
    from polyglot_onnx.errors import InputError
    from polyglot_onnx.serve.cli import config_from_args

    args = build_parser().parse_args(["serve", str(prompted), "--served-model-name", "mine"])
    assert config_from_args(args).models[0].name == "mine"
    args = build_parser().parse_args(["serve", str(prompted), str(tiny_models["tiny-encoder"].package),
                                      "--served-model-name", "mine"])
    with pytest.raises(InputError, match="--served-model-name names the one package served"):
        config_from_args(args)
