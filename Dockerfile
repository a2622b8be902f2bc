# tamstore: slim, non-root, with a health check. Nothing in the repository needs Docker.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tamstore ./tamstore
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/tamstore tamstore
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER tamstore
WORKDIR /var/lib/tamstore
# Listening on all interfaces needs authentication (TAMSTORE_AUTH, TAMSTORE_AUTH_FILE) or, knowingly,
# TAMSTORE_ALLOW_UNAUTHENTICATED_NETWORK_ACCESS=true: serve refuses otherwise.
ENV TAMSTORE_HOST=0.0.0.0 TAMSTORE_DATA_DIR=/var/lib/tamstore/data TAMSTORE_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["tamstore", "serve"]
