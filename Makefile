# cellgate: every operator command. `make` starts cellgate; `make test` runs every test.

CARGO ?= cargo
BIND ?= 127.0.0.1:8888
BACKEND ?= process
SERVE_ARGS ?=

.DEFAULT_GOAL := deploy
.PHONY: deploy status scale logs down gluster service-images run build images test test-cluster cluster-up cluster-down lint bench clean help

## deploy: make this Docker host a swarm manager and deploy the stack (swarm/deploy.sh):
#    ADVERTISE_ADDR=, WORKERS=N, JOIN="host ...", TLS_CERT= TLS_KEY=, VOLUME=/mnt/cellgate,
#    PORT=443, EDGE=nginx, PUBLISH_MODE=ingress|host (detected)
deploy:
	swarm/deploy.sh

## status: nodes, services, replicas, tasks and runner load
status:
	swarm/status.sh

## scale: set the number of kernel runners, e.g. make scale RUNNERS=3
scale:
	swarm/scale.sh $(RUNNERS)

## logs: recent logs of the gateway and runner services
logs:
	docker service logs --tail 100 --timestamps cellgate_gateway
	docker service logs --tail 100 --timestamps cellgate_kernel-runner

## down: remove the stack (secrets, images and the volume's data stay)
down:
	swarm/down.sh

## gluster: GlusterFS replica volume on NODES="a b c", mounted at /mnt/cellgate on each
gluster:
	gluster/setup.sh $(NODES)

## service-images: build the gateway, runner, nginx and registry images (after make build)
service-images: build
	swarm/build-images.sh

## run: build and start a gateway and its runners in one process, no Docker needed
run: build
	./target/release/cellgate serve --bind $(BIND) --runners $(or $(RUNNERS),1) --backend $(BACKEND) $(SERVE_ARGS)

## build: compile the release binaries (cellgate, cellgate-gateway, cellgate-runner)
build:
	$(CARGO) build --release --workspace --bins

## images: build every language image (makes debian:bookworm-slim locally when it cannot be pulled)
images:
	images/build.sh

## test: the whole suite (tests/suite.sh): installs what it needs on Debian as root, then
#    formatting, lints, unit and end-to-end tests (Docker, GlusterFS, swarm and browser included)
test:
	tests/suite.sh

## test-cluster: the multi-node cluster tests alone (tests/cluster.rs: a three-node test
#    cluster brought up, deployed with make, failed node by node, and removed)
test-cluster: build
	CELLGATE_CLUSTER_TESTS=1 $(CARGO) test --test cluster -- --nocapture

## cluster-up: a test cluster of CLUSTER_NODES (3) Docker hosts on this machine, as
#    containers with their own engine, GlusterFS and SSH (cluster/up.sh); nothing else touched
cluster-up: build
	cluster/up.sh

## cluster-down: remove the test cluster completely (cluster/down.sh)
cluster-down:
	cluster/down.sh

## lint: rustfmt and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: kernel latency, MD5 throughput, and websocket proxying against nginx (needs nginx), against the anchors
bench:
	$(CARGO) bench --bench kernel_latency
	$(CARGO) bench --bench jobs
	$(CARGO) bench --bench proxy

clean:
	$(CARGO) clean

## help: list the targets
help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'
