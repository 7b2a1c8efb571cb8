# syntax=docker/dockerfile:1
# The manager and the agent, each a static binary in a distroless, non-root image:
#   docker build --build-arg COMPONENT=manager -t ghcr.io/anycast-operator/manager:TAG .
#   docker build --build-arg COMPONENT=agent   -t ghcr.io/anycast-operator/agent:TAG .
#   docker build --build-arg COMPONENT=agent --target agent-bird -t ghcr.io/anycast-operator/agent-bird:TAG .
#   docker build --build-arg COMPONENT=agent --build-arg TAGS=delegated -t ghcr.io/anycast-operator/agent-delegated:TAG .
# (`make docker-build` runs the four.) The agent-bird image adds birdc, which the agent runs with --backend=bird to
# talk to the host's BIRD through its control socket (mounted from the host). The agent-delegated image is the agent
# built without any BGP code, for --backend=metallb, calico or cilium (about 1 MB less resident per node).
FROM golang:1.26 AS build
ARG COMPONENT=manager
ARG VERSION=dev
ARG TAGS=
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN CGO_ENABLED=0 go build -trimpath -tags "${TAGS}" -ldflags "-s -w -X main.version=${VERSION}" -o /out/app ./cmd/${COMPONENT}

FROM debian:12-slim AS agent-bird
RUN apt-get update && apt-get install -y --no-install-recommends bird2 && rm -rf /var/lib/apt/lists/* \
 && rm -f /usr/sbin/bird && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /out/app /usr/local/bin/app
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/app"]

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /usr/local/bin/app
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/app"]
