# syntax=docker/dockerfile:1
# Static sidegate on distroless: no shell, non-root, CA certificates for
# https JWKS endpoints. The build step is `make build`, the same command
# .ci/run runs.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN make build VERSION=$VERSION OUT=/out/sidegate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sidegate /sidegate
USER 65532:65532
EXPOSE 9191 9192 9090
ENTRYPOINT ["/sidegate"]
CMD ["serve"]
