"""Ray Serve: the same app as a deployment on a local Ray, giving exactly the plain server's answers.

Starting Ray takes 30-60 s on 2 busy cores, so the end-to-end test is marked slow and runs with
POLYGLOT_SLOW=1 (measured: 49 s for the test itself).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'polyglot-onnx[serve]'")

from serve_helpers import free_port, start_server

from conftest import sample_lines
from polyglot_onnx.errors import InputError
from polyglot_onnx.serve.config import ModelSpec, ServeConfig
from polyglot_onnx.serve.ray_app import deployment_options, replica_threads


def test_replica_cpus_set_onnxruntime_threads_and_options_pass_through():
    config = ServeConfig(models=(ModelSpec("pkg"),))
    assert replica_threads(config, 2) == (2.0, 2)
    assert replica_threads(ServeConfig(models=(ModelSpec("pkg"),), threads=3), None) == (3.0, 3)
    opts = deployment_options(config, replicas=3, replica_cpus=2)
    assert opts["num_replicas"] == 3 and opts["ray_actor_options"] == {"num_cpus": 2.0}
    assert opts["max_ongoing_requests"] == 512  # Ray's default of 5 would starve the batcher
    auto = deployment_options(config, replicas="auto", autoscaling={"max_replicas": 8})
    assert auto["autoscaling_config"]["max_replicas"] == 8 and "num_replicas" not in auto
    with pytest.raises(InputError, match="number or 'auto'"):
        deployment_options(config, replicas="many")


@pytest.mark.slow
def test_ray_serve_gives_the_plain_servers_answers(tiny_models):
    if not os.environ.get("POLYGLOT_SLOW"):
        pytest.skip("starting Ray takes 30-60 s on 2 cores: set POLYGLOT_SLOW=1 to run it")
    pytest.importorskip("ray", reason="needs the ray extra: pip install 'polyglot-onnx[ray]'")
    import httpx
    import ray
    from ray import serve

    from polyglot_onnx.serve.ray_app import build_app

    package = tiny_models["tiny-bert"].package
    plain = start_server(f"--name=bert={package}", "--threads", "1")
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = ServeConfig(models=(ModelSpec(str(package), "bert"),))
        serve.run(build_app(config, replicas=1, replica_cpus=1), name="polyglot-onnx", route_prefix="/")
        on_ray = f"http://127.0.0.1:{port}"
        texts = sample_lines(6)
        requests = [
            ("/embed", {"inputs": texts}),
            ("/v1/embeddings", {"input": texts[:3], "model": "bert"}),
            ("/v1/embeddings", {"input": texts[0], "model": "bert", "encoding_format": "base64", "dimensions": 8}),
            ("/embed_all", {"inputs": texts[:2]}),
            ("/embed_words", {"inputs": texts[:2]}),
            ("/tokenize", {"inputs": texts[:2]}),
            ("/fill-mask", {"inputs": ["Paris est la [MASK] de la France.", "[MASK] [MASK] ."], "top_k": 3}),
            ("/embed", {"inputs": []}),
            ("/embed", {"inputs": "x", "model": "nope"}),
        ]
        for path, body in requests:
            a = httpx.post(f"{plain.url}{path}", json=body, timeout=60)
            b = httpx.post(f"{on_ray}{path}", json=body, timeout=60)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), path
        info = httpx.get(f"{on_ray}/info").json()
        assert info["models"][0]["name"] == "bert" and httpx.get(f"{on_ray}/health").status_code == 200
    finally:
        serve.shutdown()
        ray.shutdown()
        assert plain.stop() == 0
