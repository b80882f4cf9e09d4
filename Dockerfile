# The operator image. Build: docker build -t ghcr.io/mcp-operator/mcp-operator:0.1.0 .
# (No container engine or registry is reachable on the development machines, so this file is
# not built in CI; `mcp-operator run` is exercised directly by the e2e tests.)
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY operator ./operator
RUN uv build --wheel --out-dir /wheels && \
    uv export --frozen --no-dev --no-hashes --no-emit-project > /wheels/requirements.txt

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir -r /wheels/requirements.txt /wheels/*.whl && rm -rf /wheels
# Non-root, matching the restricted Pod Security Standard the manifests ask for.
USER 65532:65532
EXPOSE 9090 8081
ENTRYPOINT ["mcp-operator"]
CMD ["run", "--all-namespaces"]
