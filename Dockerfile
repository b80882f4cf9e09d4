# The operator image: ghcr.io/mcp-operator/mcp-operator:<version>, built and pushed for
# linux/amd64 and linux/arm64 by .github/workflows/release.yaml on a tag v<version>.
#   docker build -t ghcr.io/mcp-operator/mcp-operator:0.1.0 .
# The runtime stage holds a virtualenv with the operator and its locked runtime dependencies
# only (no dev group, no devcluster harness, no example server), built by hack/image-venv.sh,
# which tests/unit/test_images.py runs the same way.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1
WORKDIR /src
COPY . .
RUN PYTHON=/usr/local/bin/python3 hack/image-venv.sh mcp-operator /opt/mcp-operator /tmp/wheels

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mcp-operator" \
      org.opencontainers.image.description="Kubernetes operator that keeps MCP servers available" \
      org.opencontainers.image.source="https://github.com/mcp-operator/mcp-operator" \
      org.opencontainers.image.url="https://github.com/mcp-operator/mcp-operator" \
      org.opencontainers.image.documentation="https://github.com/mcp-operator/mcp-operator#install" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /opt/mcp-operator /opt/mcp-operator
ENV PATH=/opt/mcp-operator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric non-root user: the restricted Pod Security Standard can verify runAsNonRoot.
USER 65532:65532
EXPOSE 9090 8081
ENTRYPOINT ["mcp-operator"]
CMD ["run", "--all-namespaces"]
