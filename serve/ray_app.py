"""The same app as a Ray Serve deployment: each replica loads the package and batches by tokens.

``polyglot-onnx serve DIR --ray [--replicas N|auto] [--ray-address ADDR]``, or with Ray's own CLI:
``serve run polyglot_onnx.serve.ray_app:app_builder packages=DIR replicas=2 replica_cpus=2``.
Ray's CPU reservation is bookkeeping only; onnxruntime's threads are set to it here, so replicas
packed on one node do not oversubscribe its cores. Ray is imported inside functions only.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.serve.config import ServeConfig, parse_models

log = logging.getLogger("polyglot_onnx.serve")

DEFAULT_AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64}


def replica_threads(config: ServeConfig, replica_cpus: float | None) -> tuple[float, int]:
    """(CPUs reserved per replica, onnxruntime threads): each follows the other when only one is given."""
    cpus = float(replica_cpus) if replica_cpus else float(config.threads or 1)
    if cpus <= 0:
        raise InputError(f"replica CPUs must be positive, got {cpus}")
    return cpus, config.threads or max(1, int(cpus))


def deployment_options(config: ServeConfig, replicas: str | int = 1, replica_cpus: float | None = None,
                       autoscaling: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plain data, so tests and users can see what Ray is asked for."""
    cpus, _ = replica_threads(config, replica_cpus)
    # Ray's default (5 ongoing requests per replica) would starve the token-budget batcher.
    options: dict[str, Any] = {
        "name": "polyglot-onnx",
        "ray_actor_options": {"num_cpus": cpus},
        "max_ongoing_requests": config.max_concurrent_requests,
    }
    if str(replicas) == "auto" or autoscaling:
        options["autoscaling_config"] = {**DEFAULT_AUTOSCALING, **(autoscaling or {})}
    else:
        try:
            count = int(replicas)
        except ValueError:
            raise InputError(f"--replicas must be a number or 'auto', got {replicas!r}") from None
        if count < 1:
            raise InputError(f"--replicas must be at least 1, got {count}")
        options["num_replicas"] = count
    return options


def build_app(config: ServeConfig, replicas: str | int = 1, replica_cpus: float | None = None,
              autoscaling: dict[str, Any] | None = None) -> Any:
    """A bound Ray Serve application: ``serve.run(build_app(config))``."""
    from ray import serve

    _, threads = replica_threads(config, replica_cpus)
    replica_config = config.with_threads(threads)

    def build_asgi_app() -> Any:  # runs on each replica; the packages load in the app's lifespan
        from polyglot_onnx.serve.app import create_app

        return create_app(replica_config)

    options = deployment_options(config, replicas, replica_cpus, autoscaling)
    return serve.deployment(**options)(serve.ingress(build_asgi_app)()).bind()


def app_builder(args: dict[str, str]) -> Any:
    """For ``serve run polyglot_onnx.serve.ray_app:app_builder packages=DIR[,DIR] key=value ...``."""
    known = {"packages", "variant", "provider", "threads", "replicas", "replica_cpus", "max_batch_tokens",
             "max_client_batch_size", "max_concurrent_requests", "auto_truncate", "api_key"}
    unknown = set(args) - known
    if unknown or "packages" not in args:
        raise InputError(f"app_builder takes packages=DIR[,DIR] and any of {', '.join(sorted(known - {'packages'}))}")
    config = ServeConfig(
        models=parse_models([p for p in args["packages"].split(",") if p], []),
        provider=args.get("provider", "auto"),
        variant=args.get("variant", "auto"),
        threads=int(args["threads"]) if "threads" in args else None,
        max_batch_tokens=int(args.get("max_batch_tokens", 16384)),
        max_client_batch_size=int(args.get("max_client_batch_size", 32)),
        max_concurrent_requests=int(args.get("max_concurrent_requests", 512)),
        auto_truncate=args.get("auto_truncate", "true").lower() in ("1", "true", "yes"),
        api_key=args.get("api_key"),
    )
    cpus = float(args["replica_cpus"]) if "replica_cpus" in args else None
    return build_app(config, args.get("replicas", "1"), cpus)


def run_on_ray(config: ServeConfig, host: str, port: int, replicas: str, address: str | None,
               replica_cpus: float | None) -> int:
    """Start (or join) Ray, run the deployment on host:port, and stay until SIGTERM / Ctrl-C."""
    import ray
    from ray import serve

    if all(Path(m.directory).is_dir() for m in config.models):
        # Refuse a bad package here, in one line, before Ray starts replicas that would keep failing.
        from polyglot_onnx.serve.server import load_backends

        load_backends(config)
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=None)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config, replicas, replica_cpus), name="polyglot-onnx", route_prefix="/")
    log.info("Ray Serve: polyglot-onnx on http://%s:%d (replicas %s)", host, port, replicas)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    serve.delete("polyglot-onnx")
    serve.shutdown()  # type: ignore[no-untyped-call,unused-ignore]  # Ray's own annotations are partial
    ray.shutdown()
    return 0
