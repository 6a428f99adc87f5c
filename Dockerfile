# netwarden container image: slim Python, the package installed, a non-root user,
# `netwarden` as the entrypoint. Build: docker build -t netwarden .
# Run the service on its embedded default (generated traffic, API on port 8080):
#   docker run --rm -p 8080:8080 -v netwarden-data:/data netwarden
# With a configuration file: docker run ... -v ./netwarden.yaml:/etc/netwarden.yaml:ro \
#   netwarden serve --config /etc/netwarden.yaml
# The eBPF agent has its own image (it needs bcc from Debian and runs privileged):
#   docker build --target agent -t netwarden-agent .
#   docker run --rm --privileged --pid=host --cgroupns=host -v /sys:/sys -v /lib/modules:/lib/modules:ro \
#     -v /usr/src:/usr/src:ro -p 4244:4244 netwarden-agent
# (--cgroupns=host: the UDP peer hooks attach to the cgroup v2 root the agent sees, which must
# be the host's for them to see every process; --pid=host: processes and namespaces by pid.)
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
# the package's folders, bottom layer first (README: Layout)
COPY netwarden ./netwarden
COPY hubble ./hubble
COPY bpf ./bpf
COPY ingest ./ingest
COPY observer ./observer
COPY generator ./generator
COPY models ./models
COPY storage ./storage
COPY detector ./detector
COPY cluster ./cluster
COPY remediation ./remediation
COPY client ./client
COPY api ./api
RUN python -m pip wheel --wheel-dir /wheels .

# The agent: bcc's Python bindings from Debian (python3-bpfcc; the PyPI package named bcc is
# unrelated), linked into this Python through a .pth file that names a folder holding only the
# `bcc` package. Kernel headers should come from the host (/lib/modules, /usr/src mounted);
# Debian's are the fallback that bpf/setup-host.sh links for a kernel without its own. Runs as
# root: loading eBPF programs needs it.
FROM python:3.11-slim-bookworm AS agent
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-bpfcc linux-headers-amd64 iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN python -m pip install /wheels/*.whl && rm -rf /wheels \
    && mkdir -p /opt/system-bcc && ln -s /usr/lib/python3/dist-packages/bcc /opt/system-bcc/bcc \
    && echo /opt/system-bcc > "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/netwarden-system-bcc.pth"
COPY bpf/setup-host.sh /usr/local/bin/netwarden-setup-host
EXPOSE 4244
ENTRYPOINT ["/bin/sh", "-c", "netwarden-setup-host >&2 || true; exec netwarden \"$@\"", "netwarden"]
CMD ["agent", "--observer-listen", "0.0.0.0:4244"]

FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN python -m pip install /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 10001 netwarden \
    && useradd --system --uid 10001 --gid netwarden --home-dir /data --create-home netwarden
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# Inside a container the API must listen on all interfaces to be reachable through -p.
ENV NETWARDEN_DATA_DIR=/data NETWARDEN_API__HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=180s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
ENTRYPOINT ["netwarden"]
CMD ["serve"]
