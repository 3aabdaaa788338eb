# repo — build, demo, tests, benchmarks. See README.md.
GO      ?= go
BIN     := bin/repo
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The shared benchmark harness (dataset generator, restic/borg timings).
BENCH_SHARED ?= ../shared/bench

.PHONY: all build demo test torture bench bench-go bench-tools bench-cpu clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/repo

# The main job end to end on a local repository under ./demo.
demo: build
	$(GO) build -o bin/gentree ./internal/gentree/cmd/gentree
	$(GO) build -o bin/sqlwriter ./internal/sqlwriter/cmd/sqlwriter
	./scripts/demo.sh

# Everything CI runs: formatting, vet, all unit and end-to-end tests.
test:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# The crash-torture harness at length (make test runs it with 30 kills):
# SIGKILLs at random moments and injected disk faults against one
# repository, then check --read-data and a restore of every snapshot; see
# cmd/repo/torture_test.go. REPO_TORTURE_KILLS and REPO_TORTURE_SEED
# override the count and the seed. The log goes to bin/torture.log.
TORTURE_KILLS ?= 500
torture:
	@mkdir -p bin
	@{ REPO_TORTURE_KILLS=$${REPO_TORTURE_KILLS:-$(TORTURE_KILLS)} $(GO) test -count=1 -run '^TestTorture$$' -v -timeout 90m ./cmd/repo/; \
	  echo $$? > bin/torture.rc; } 2>&1 | tee bin/torture.log
	@echo; grep '^torture: seed' bin/torture.log || echo 'torture: no result line (see bin/torture.log)'
	@exit $$(cat bin/torture.rc)

# Man pages, one per command (repo.1, repo-backup.1, repo-key-add.1, ...),
# written by the binary itself (the hidden 'repo __man DIR'), so that they
# describe exactly its flags. Read one with: man -l bin/man/repo-backup.1
# Install: cp bin/man/*.1 /usr/local/share/man/man1/
MANDIR ?= bin/man
.PHONY: man
man: build
	rm -rf $(MANDIR) && mkdir -p $(MANDIR)
	$(BIN) __man $(MANDIR)
	@echo "$$(ls $(MANDIR) | wc -l) man pages in $(MANDIR)"

# Go micro-benchmarks of the pipeline stages, the shared dataset for repo,
# restic and borg in one run (needs $(BENCH_SHARED) and its data), a CPU
# profile of a first backup with per-core load, and the 10-million-blob
# index. Tables go to bench/results/.
bench: build bench-go bench-tools bench-floor bench-cpu bench-bigindex

# Per-core load and CPU share per pipeline stage of one first backup of
# the shared files/ dataset (scripts/cpu-profile.sh).
bench-cpu: build
	@mkdir -p bench/results
	bash -o pipefail -c './scripts/cpu-profile.sh | tee bench/results/cpu-$$(date +%Y%m%dT%H%M%S).md'

# Stage benchmarks run for a second each (the 1M-blob index sync runs once);
# the whole-pipeline benchmarks take about a second per run, so two runs.
bench-go:
	{ $(GO) test -run '^$$' -bench . -benchtime 1s ./chunk/ ./repo/pack/ ./repo/crypto/ ./index/ ./source/sqlite/ && \
	  $(GO) test -run '^$$' -bench . -benchtime 2x ./repo/; } | tee bench/results/go-bench-$$(date +%Y%m%dT%H%M%S).txt

bench-tools: build
	./scripts/bench.sh

clean:
	rm -rf bin demo

# What this machine allows at best on the shared files/ dataset, to read
# the tools' times against (internal/floor): the first-backup stages
# (read, chunk, hash, compress, seal) on every core with nothing written,
# and a plain copy of the tree after deleting the previous copy, as the
# harness deletes the previous restore.
BENCH_DATA ?= /tmp/bench/data
.PHONY: bench-floor
bench-floor:
	$(GO) build -o bin/floor ./internal/floor/cmd/floor
	@mkdir -p bench/results
	find $(BENCH_DATA)/files -type f -exec cat {} + >/dev/null
	bash -o pipefail -c 'bin/floor -work $$(dirname $(BENCH_DATA)) $(BENCH_DATA)/files | tee bench/results/floor-$$(date +%Y%m%dT%H%M%S).txt'

# The index cache against a synthetic repository of BIGINDEX_BLOBS index
# entries: peak RSS and time of a backup with a cold cache, with a warm
# one, and after the index files were rewritten (scripts/bigindex-bench.sh;
# about 2.5 GB under $TMPDIR and a few minutes). The last step of bench.
BIGINDEX_BLOBS ?= 10000000
.PHONY: bench-bigindex
bench-bigindex: build
	$(GO) build -o bin/bigindex ./internal/bigindex/cmd/bigindex
	$(GO) build -o bin/gentree ./internal/gentree/cmd/gentree
	@mkdir -p bench/results
	bash -o pipefail -c './scripts/bigindex-bench.sh $(BIGINDEX_BLOBS) | tee bench/results/bigindex-$$(date +%Y%m%dT%H%M%S).txt'
