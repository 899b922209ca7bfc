# polyglot-onnx serving image, CUDA: as docker/cpu.Dockerfile with onnxruntime-gpu (CUDA 13, cuDNN 9) in place
# of onnxruntime. The CUDA and cuDNN libraries come from the nvidia-* wheels onnxruntime-gpu's [cuda,cudnn]
# extras pull (the runtime calls onnxruntime.preload_dlls()); the host needs only the NVIDIA driver and the
# container toolkit.
#
#   docker build -f docker/cuda.Dockerfile -t polyglot-onnx:cuda .
#   docker run --rm --gpus all -p 8080:8080 -v "$PWD/packages/mmbert-base:/models/mmbert-base:ro" polyglot-onnx:cuda
#
# variant="auto" picks fp16 on CUDA when the package has it and its drift evidence passed
# (polyglot-onnx drift DIR --provider cuda records the CUDA evidence).
FROM python:3.12-slim

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
# onnxruntime-gpu ships the same 'onnxruntime' module: install the project, then swap the CPU wheel out
RUN pip install -c scripts/constraints.txt ".[serve]" \
    && pip uninstall -y onnxruntime \
    && pip install "onnxruntime-gpu[cuda,cudnn]==1.31.1" \
    && useradd --create-home --uid 10001 polyglot
USER polyglot
# every serve flag can be set as POLYGLOT_<FLAG> (docs/serving.md): `docker run -e POLYGLOT_PORT=9000 ...`
ENV POLYGLOT_HOST=0.0.0.0 POLYGLOT_PORT=8080 POLYGLOT_PROVIDER=cuda
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
    CMD python -c "import urllib.request; import os; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['POLYGLOT_PORT']}/health\", timeout=2)"
ENTRYPOINT ["polyglot-onnx", "serve"]
CMD ["/models/mmbert-base"]
