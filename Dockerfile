# coinfeed container image: see docs/operations.md ("Container").
# Build: docker build -t coinfeed .   Run: docs/operations.md "Container" has the full command: the
# key from the environment, and a volume on /var/lib/coinfeed for the state and the SQLite sink.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY coinfeed ./coinfeed
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COINFEED_HTTP=0.0.0.0:8080
# Listening on all interfaces makes /api/debug/* need COINFEED_DEBUG_TOKEN (refused without it).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin coinfeed \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/coinfeed
# /var/lib/coinfeed: mount a volume here for state_dir and file sinks. A new named volume takes
# this directory's owner, so user 10001 can write it (a bind mount keeps the host's owner).
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=3)"]
# Exec form: coinfeed is PID 1 and receives SIGTERM itself (ordered shutdown within
# shutdown_timeout), no shell in between.
ENTRYPOINT ["coinfeed"]
CMD ["run"]
