# syntax=docker/dockerfile:1
# Multi-stage: the project's wheel and its dependencies' are built in the first stage and
# installed in the second like any user's `pip install` (the wheel carries its SQL); the final
# image has no compilers and no source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# consumers/schema is a link to schema/: both go in, and the wheel carries the files
COPY schema ./schema
COPY consumers ./consumers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CIE_LOG_FORMAT=json
RUN useradd --system --uid 10001 --no-create-home cie
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENTRYPOINT ["cie"]
CMD ["--help"]
