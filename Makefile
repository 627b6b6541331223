# The one build command, shared by .ci/run and the Dockerfile, so that a
# broken image build shows in CI even where no image can be built.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
OUT     ?= bin/sidegate

.PHONY: build test
build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(OUT) ./cmd/sidegate

test:
	go test -race ./...
