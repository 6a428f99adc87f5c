# netwarden container image: slim Python, the package installed, a non-root user,
# `netwarden` as the entrypoint. Build: docker build -t netwarden .
# Run the embedded demo: docker run --rm netwarden run --out /data/demo
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY netwarden ./netwarden
COPY bpf ./bpf
COPY ingest ./ingest
COPY detector ./detector
COPY models ./models
COPY remediation ./remediation
COPY api ./api
RUN python -m pip wheel --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN python -m pip install /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 10001 netwarden \
    && useradd --system --uid 10001 --gid netwarden --home-dir /data --create-home netwarden
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["netwarden"]
CMD ["--help"]
