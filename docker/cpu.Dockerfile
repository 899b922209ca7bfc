# polyglot-onnx serving image, CPU: the runtime (onnxruntime, tokenizers, numpy) and the HTTP server
# (FastAPI on uvicorn, Prometheus metrics) only -- no torch, transformers or onnx in the image.
#
#   docker build -f docker/cpu.Dockerfile -t polyglot-onnx:cpu .
#   docker run --rm -p 8080:8080 -v "$PWD/packages/mbert-cased:/models/mbert-cased:ro" polyglot-onnx:cpu
#
# Packages are built outside the image (polyglot-onnx export / quantize) and mounted read-only under /models;
# every file is checked against the manifest's sha256 when the server loads it. Arguments after the image
# name replace the default command's package list and flags (e.g. /models/a /models/b --variant fp32).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/polyglot-onnx
COPY pyproject.toml README.md LICENSE ./
COPY scripts/constraints.txt scripts/constraints.txt
COPY polyglot_onnx polyglot_onnx
COPY export export
COPY quantize quantize
COPY runtime runtime
COPY serve serve
COPY jobs jobs
COPY benchmarks/suite benchmarks/suite
RUN pip install -c scripts/constraints.txt ".[serve]" \
    && useradd --create-home --uid 10001 polyglot
USER polyglot
# every serve flag can be set as POLYGLOT_<FLAG> (docs/serving.md): `docker run -e POLYGLOT_PORT=9000 ...`
ENV POLYGLOT_HOST=0.0.0.0 POLYGLOT_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request; import os; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['POLYGLOT_PORT']}/health\", timeout=2)"
ENTRYPOINT ["polyglot-onnx", "serve"]
CMD ["/models/mbert-cased"]
