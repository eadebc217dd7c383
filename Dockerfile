# syntax=docker/dockerfile:1
# Multi-stage: dependency wheels are built in the first stage; the final image has no compilers.
# The package runs from /app beside schema/, exactly as in the repository (the code reads
# schema/*.sql relative to itself).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumers ./consumers
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && rm /wheels/cie_consumers-*.whl

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app CIE_LOG_FORMAT=json
RUN useradd --system --uid 10001 --no-create-home cie
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY consumers ./consumers
COPY schema ./schema
USER 10001
ENTRYPOINT ["python", "-m", "consumers"]
CMD ["--help"]
