# cellgate: every operator command. `make` starts cellgate; `make test` runs every test.

CARGO ?= cargo
BIND ?= 127.0.0.1:8888
RUNNERS ?= 1
BACKEND ?= process
SERVE_ARGS ?=

.DEFAULT_GOAL := deploy
.PHONY: deploy run build images test lint bench clean help

## deploy: start cellgate on this machine (for now the all-in-one server, as `make run`)
deploy: run

## run: build and start a gateway and its runners in one process, no Docker needed
run: build
	./target/release/cellgate serve --bind $(BIND) --runners $(RUNNERS) --backend $(BACKEND) $(SERVE_ARGS)

## build: compile the release binaries (cellgate, cellgate-gateway, cellgate-runner)
build:
	$(CARGO) build --release --workspace --bins

## images: build every language image (makes debian:bookworm-slim locally when it cannot be pulled)
images:
	images/build.sh

## test: formatting, lints, unit and end-to-end tests (the Docker tests need `make images`)
test: lint
	$(CARGO) test --workspace --lib --bins --tests --no-fail-fast

## lint: rustfmt and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: kernel round-trip and start-up latency through the TLS gateway, against the anchors
bench:
	$(CARGO) bench --bench kernel_latency
	$(CARGO) bench --bench jobs

clean:
	$(CARGO) clean

## help: list the targets
help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'
