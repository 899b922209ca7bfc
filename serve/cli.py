"""``polyglot-onnx serve DIR [DIR ...]``: its arguments and the command; the main CLI registers it.

Every flag can also come from the environment (containers, Kubernetes): ``--max-batch-tokens`` from
``POLYGLOT_MAX_BATCH_TOKENS``, and so on; a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from polyglot_onnx.errors import DependencyError, InputError
from polyglot_onnx.serve.config import API_KEY_ENV, ModelSpec, ServeConfig, parse_models

ENV_PREFIX = "POLYGLOT_"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
EPILOG = f"""environment: every flag can be set as {ENV_PREFIX}<FLAG>, the flag's name in capitals with '-' as '_'
(POLYGLOT_PORT=9000, POLYGLOT_MAX_BATCH_TOKENS=8192, POLYGLOT_VARIANT=fp32, POLYGLOT_AUTO_TRUNCATE=false,
POLYGLOT_STRICT_MODEL_NAME=true); the package directories as POLYGLOT_PACKAGES and --name pairs as
POLYGLOT_NAME, several separated by '{os.pathsep}'. A flag given on the command line wins over its variable."""


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve packages over HTTP (OpenAI + TEI routes, fill-mask), or on Ray Serve",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("packages", nargs="*",
                   help="package directories (each served as its checkpoint's hub id or folder name)")
    p.add_argument("--name", action="append", default=[], metavar="NAME=DIR", help="serve DIR as model NAME (repeatable)")
    p.add_argument("--served-model-name", default=None,
                   help="the name clients use for the one package served (default: its checkpoint's hub id or "
                        "folder name; as TEI's flag)")
    p.add_argument("--strict-model-name", action="store_true",
                   help="404 for an unknown 'model' on the OpenAI routes (default: answered by the first model, "
                        "with a warning, as TEI does)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--variant", default="auto", help="auto, fp32, int8, ... (a variant in every package)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads per model")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="padded length x rows per onnxruntime call")
    p.add_argument("--max-batch-rows", type=int, default=None, help="cap rows per batch (1 = no dynamic batching)")
    p.add_argument("--no-batching", action="store_true", help="one input per onnxruntime call (for comparisons)")
    p.add_argument("--max-client-batch-size", type=int, default=32, help="inputs per request")
    p.add_argument("--max-concurrent-requests", type=int, default=512, help="beyond this: 429 with Retry-After")
    p.add_argument("--auto-truncate", action=argparse.BooleanOptionalAction, default=True,
                   help="truncate over-long inputs to the model maximum (else 422)")
    p.add_argument("--payload-limit", type=int, default=2_000_000, help="request body bytes (beyond: 413)")
    p.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_ENV})")
    p.add_argument("--self-check", action="store_true",
                   help="check each variant against the package's canary references on this machine at start-up")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, each with its own models")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds SIGTERM waits for in-flight requests (new and late ones get 503)")
    p.add_argument("--max-request-tokens", type=int, default=262_144,
                   help="tokens of model work per request, a long text's windows at full length (beyond: 413)")
    p.add_argument("--max-response-bytes", type=int, default=100_000_000,
                   help="estimated size of one JSON answer (beyond: 413)")
    p.add_argument("--max-batch-ms", type=float, default=100.0,
                   help="cut batches to about this much measured work, so small requests never wait long (0: off)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a connection may take to send a request's headers (0: no limit)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a client may take to send a request body (beyond: 408; 0: no limit)")
    p.add_argument("--max-connections-per-address", type=int, default=128,
                   help="open connections per client address (0: no limit; behind a proxy every client shares one)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment (needs the ray extra)")
    p.add_argument("--replicas", default="1", help="Ray Serve replicas: a number or 'auto' (autoscaling)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--replica-cpus", type=float, default=None,
                   help="CPUs each replica reserves; onnxruntime threads follow it (default --threads or 1)")
    p.set_defaults(**env_defaults(p, os.environ))


class EnvError:
    """A POLYGLOT_* variable that does not parse: refused when the command runs, unless its flag was given."""

    def __init__(self, message: str) -> None:
        self.message = message


def env_name(action: argparse.Action) -> str:
    """POLYGLOT_ and the flag's first long name (--auto-truncate, not --no-auto-truncate), or the positional's."""
    flag = next((o for o in action.option_strings if o.startswith("--")), action.dest)
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def env_defaults(parser: argparse.ArgumentParser, environ: Any) -> dict[str, Any]:
    """Each flag's default from its POLYGLOT_<FLAG> variable, parsed and checked as argparse would."""
    defaults: dict[str, Any] = {}
    for action in parser._actions:
        if action.dest in ("help", argparse.SUPPRESS):
            continue
        name = env_name(action)
        if name not in environ:
            continue
        defaults[action.dest] = env_value(action, name, environ[name])
    return defaults


def env_value(action: argparse.Action, name: str, raw: str) -> Any:
    if action.nargs == 0:  # on/off flags
        if raw.strip().lower() in TRUE:
            return True
        if raw.strip().lower() in FALSE:
            return False
        return EnvError(f"{name}={raw!r} is not true or false (1/0, yes/no, on/off)")
    if action.nargs == "*" or isinstance(action.default, list):  # the packages, the --name pairs
        return [item.strip() for item in raw.split(os.pathsep) if item.strip()]
    try:
        value = action.type(raw) if callable(action.type) else raw
    except (TypeError, ValueError):
        kind = getattr(action.type, "__name__", "value")
        return EnvError(f"{name}={raw!r} is not a valid {kind} (it sets {action.option_strings[0]})")
    if action.choices is not None and value not in action.choices:
        return EnvError(f"{name}={raw!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def check_env(args: argparse.Namespace) -> None:
    for value in vars(args).values():
        if isinstance(value, EnvError):
            raise InputError(value.message)


def named_models(args: argparse.Namespace) -> tuple[ModelSpec, ...]:
    models = parse_models(list(args.packages), list(args.name))
    if args.served_model_name is None:
        return models
    if len(models) != 1:
        raise InputError(f"--served-model-name names the one package served, but {len(models)} are: name each with "
                         "--name NAME=DIR")
    if models[0].name is not None and models[0].name != args.served_model_name:
        raise InputError("the package is named twice (--name and --served-model-name): give one")
    return (ModelSpec(models[0].directory, args.served_model_name),)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    check_env(args)
    models = named_models(args)
    if args.workers < 1:
        raise InputError(f"--workers must be a positive integer, got {args.workers}")
    return ServeConfig(
        models=models,
        provider=args.provider,
        variant=args.variant,
        threads=args.threads,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_rows=1 if args.no_batching else args.max_batch_rows,
        max_client_batch_size=args.max_client_batch_size,
        max_concurrent_requests=args.max_concurrent_requests,
        auto_truncate=args.auto_truncate,
        payload_limit=args.payload_limit,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        drain_timeout=args.drain_timeout,
        self_check=args.self_check,
        max_request_tokens=args.max_request_tokens,
        max_response_bytes=args.max_response_bytes,
        max_batch_ms=args.max_batch_ms,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections_per_address=args.max_connections_per_address,
        strict_model_name=args.strict_model_name,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _require("fastapi", "uvicorn", "prometheus_client", extra="serve")
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s: %(name)s: %(message)s")
    if args.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        logging.getLogger("polyglot_onnx.serve").warning(
            "serving on %s without an API key: anyone who reaches this address can use it", args.host
        )
    if args.ray:
        _require("ray", extra="ray")
        from polyglot_onnx.serve.ray_app import run_on_ray

        return run_on_ray(config, args.host, args.port, args.replicas, args.ray_address, args.replica_cpus)
    from polyglot_onnx.serve.server import run_server

    return run_server(config, args.host, args.port, args.workers, args.log_level)


def _require(*modules: str, extra: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise DependencyError(f"serve needs {', '.join(missing)}: pip install 'polyglot-onnx[{extra}]'")
