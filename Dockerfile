# The movie API and worker image (one image, two commands).
#
#   docker build --build-arg PYTHON_IMAGE=python:3.12.14-slim-bookworm -t movieops-app .
#
# Extra CA certificates: behind a TLS-inspecting proxy, put the proxy's CA bundle in the build
# context as ca-bundle.crt (git-ignored); pip and uv then trust it. Without the file the build
# uses the image's own CA store.
ARG PYTHON_IMAGE=python:3.12.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV VIRTUAL_ENV=/opt/venv \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The glob matches nothing when ca-bundle.crt is absent, and COPY still succeeds.
COPY pyproject.toml uv.lock ca-bundle.cr[t] ./
RUN set -eu; \
    if [ -f ca-bundle.crt ]; then \
      export PIP_CERT=/src/ca-bundle.crt SSL_CERT_FILE=/src/ca-bundle.crt; \
    fi; \
    python3 -m venv /opt/uv && /opt/uv/bin/pip install --quiet "uv==0.13.9"; \
    python3 -m venv "$VIRTUAL_ENV"; \
    /opt/uv/bin/uv sync --locked --no-dev --no-install-project --python "$VIRTUAL_ENV/bin/python"
COPY README.md ./
COPY app ./app
COPY movieops ./movieops
RUN set -eu; \
    if [ -f ca-bundle.crt ]; then export SSL_CERT_FILE=/src/ca-bundle.crt; fi; \
    /opt/uv/bin/uv sync --locked --no-dev --no-editable --python "$VIRTUAL_ENV/bin/python"

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /data && chown app:app /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MOVIE_HOST=0.0.0.0 \
    MOVIE_DATABASE_URL=sqlite+aiosqlite:////data/movies.db
USER app
WORKDIR /home/app
EXPOSE 8000
CMD ["python", "-m", "app"]
