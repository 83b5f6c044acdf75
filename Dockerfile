# One image with the controller, the edge proxy and the demo backend the
# samples run; each Deployment picks its command.
#   docker build -t ghcr.io/portico-gateway/portico:latest .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/gateway-controller ./cmd/edge-proxy ./cmd/demo-backend

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/gateway-controller"]
