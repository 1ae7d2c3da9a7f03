# The consumer image: `docker build -t pisano-sms-consumer:0.1.0 .`
#
# Two stages so that nothing used to build the wheel (pip's build isolation, hatchling, the
# source tree) reaches the image that runs: the final stage gets only a ready virtualenv.
# Both stages use the same base image, so the venv's interpreter path (/usr/local/bin/python3.11)
# is valid in the final stage too.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md: pyproject names it as the package's readme, so hatchling needs it to build.
# schemas/: the wheel carries it as consumer/_schemas (pyproject's force-include).
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY consumer ./consumer
# Every dependency ships manylinux wheels (amd64 and arm64), so no compiler is needed here either.
# EXTRAS: `otel` puts OpenTelemetry in the image, so tracing needs only the OTEL_* environment
# (README, "Tracing"; off and free without it); `--build-arg EXTRAS=` leaves it out.
ARG EXTRAS=otel
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && wheel="$(ls /wheels/*.whl)" \
 && /opt/venv/bin/pip install "${wheel}${EXTRAS:+[$EXTRAS]}"

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and the chart's
# runAsUser 10001 matches the owner the image was built for.
RUN groupadd --system --gid 10001 pisano \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pisano
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
# HTTP_PORT: /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["pisano-sms"]
CMD ["run"]
