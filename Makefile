# iommufs — the two commands a user needs: `make run` and `make test`.
# Both install what they need first (libfuse3-dev, fuse3, pkg-config, pciutils) when missing.

SWIFT      ?= swift
MNT        ?= mnt
TOPOLOGY   ?=
BUILD_FLAGS ?=
# pciutils: the tests run lspci against the mount.
APT_PACKAGES = libfuse3-dev fuse3 pkg-config pciutils

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all build run test conformance fuzz fuzz-writes fuzz-inputs stress tsan deps clean help bench

all: build

help:
	@echo "make run      build, mount the default machine at ./$(MNT) and serve it until Ctrl-C"
	@echo "              (TOPOLOGY=file.json serves another machine, MNT=dir mounts elsewhere)"
	@echo "make test     build and run every test, including the ones that mount"
	@echo "make build    build only"
	@echo "make conformance  replay the Linux 6.12/6.1 transcripts through a mount"
	@echo "make fuzz     make fuzz-writes, then make fuzz-inputs"
	@echo "make fuzz-writes  seeded random writes to every writable file of each built-in machine, with"
	@echo "              fault injection, for FUZZ_SECONDS (600) a machine, in parallel; FUZZ_SEED=N replays"
	@echo "make stress   8 processes x STRESS_SECONDS (60) of mixed load on qemu-q35-alt (STRESS_SEED=N)"
	@echo "make tsan     the integration and stress tests under ThreadSanitizer, with a TSan-built"
	@echo "              daemon; fails on any report (TSAN_TESTS=regex picks the suites)"
	@echo "make bench    iommufs next to the C anchors of ../shared/anchors, pinned, alternating;"
	@echo "              QUICK=1 for a ~2 minute smoke run (see README, Performance)"
	@echo "make fuzz-inputs  libFuzzer on the decoder, control and store targets, FUZZ_SECONDS"
	@echo "              (60) each, seeded from Tests/FuzzCorpus; fails on any crash or broken"
	@echo "              property, naming the reproducer (FUZZ_TARGETS=store, FUZZ_IGNORE='text|...')"

# The C side comes from Debian's packages; install it once, only when missing.
deps:
	@if ! pkg-config --exists fuse3 2>/dev/null || ! command -v fusermount3 >/dev/null 2>&1 \
		|| ! command -v lspci >/dev/null 2>&1; then \
		echo "installing $(APT_PACKAGES)"; \
		$(SUDO) apt-get install -y $(APT_PACKAGES) >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y $(APT_PACKAGES); }; \
	fi

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

run: build
	@mkdir -p $(MNT)
	@echo "serving at ./$(MNT) (Ctrl-C unmounts)"
	@$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/iommufs mount $(MNT) --foreground -o allow_other \
		$(if $(TOPOLOGY),--topology $(TOPOLOGY))

# Integration tests mount the real binary; they find it through IOMMUFS_BIN.
# The real-kernel replays run last and alone: the 6.1 kernel's message rate
# limit (10 per 5 s of wall clock) decides which lines print, and a replay
# slowed down by the other suites running beside it would see other lines.
test: build
	IOMMUFS_BIN=$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/iommufs $(SWIFT) test $(BUILD_FLAGS) --skip Conformance
	$(MAKE) --no-print-directory conformance

# Replays the real-kernel transcripts of Tests/IntegrationTests/Fixtures/oracle
# through a mount and prints per-section counts; fails on any mismatch or missing fixture.
conformance: build
	IOMMUFS_BIN=$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/iommufs $(SWIFT) test $(BUILD_FLAGS) --filter Conformance

# The long runs of the write fuzzer and of the mixed-load stress (`make test`
# runs both for a few seconds). Each prints its seed, its counts and the
# daemon's RSS; a fresh seed each run unless FUZZ_SEED / STRESS_SEED is given.
FUZZ_SECONDS   ?= 600
STRESS_SECONDS ?= 60
FUZZ_SEED      ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
STRESS_SEED    ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')

# `make fuzz`: both long fuzz runs, the writes through the mount and the
# libFuzzer targets.
fuzz: fuzz-writes fuzz-inputs

fuzz-writes: build
	IOMMUFS_BIN=$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/iommufs IOMMUFS_FUZZ_SECONDS=$(FUZZ_SECONDS) \
		IOMMUFS_FUZZ_SEED=$(FUZZ_SEED) $(SWIFT) test $(BUILD_FLAGS) --filter WriteFuzzTests

stress: build
	IOMMUFS_BIN=$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/iommufs IOMMUFS_STRESS_SECONDS=$(STRESS_SECONDS) \
		IOMMUFS_STRESS_SEED=$(STRESS_SEED) $(SWIFT) test $(BUILD_FLAGS) --filter MixedLoadStressTests

clean:
	$(SWIFT) package clean

# ThreadSanitizer: the package and its tests built with --sanitize=thread in
# a scratch path of their own, then the suites whose test ids match
# TSAN_TESTS (a regular expression; a new stress suite named *Stress* is
# picked up as it is) run against the TSan-built daemon. Every instrumented
# process, the test runner and each daemon a test mounts, writes its reports
# to TSAN_REPORTS/report.<pid> (TSAN_OPTIONS log_path); the target fails if
# the tests fail or if any report file appears, and prints the reports.
# Intercepted calls are checked, but for those the Swift runtime makes
# (Tests/tsan-suppressions.txt): with TSan's defaults for Swift a call from
# any uninstrumented library starts an ignore, and libfuse's workers,
# cancelled in read() when the loop stops, would end with it still on,
# which TSan answers by exiting before the daemon unmounts.
# TSAN_SKIP: tests that measure what TSan changes, which `make test` runs:
# the real-kernel replays (the 6.1 boots' printk rate limit counts 5 s of
# wall clock), the checks made within a 100 ms reset (both stretched by
# TSan's slowdown) and the daemon's RSS bound (TSan's shadow memory grows
# with it).
TSAN_SCRATCH ?= .build-tsan
TSAN_TESTS   ?= IntegrationTests\.|ConcurrencyTests|Stress
TSAN_SKIP    ?= ConformanceReplayTests|fenceRefusesDomainChange|fenceLetsLiveSwitchThrough|stalledTraceClients
TSAN_REPORTS  = $(TSAN_SCRATCH)/reports
TSAN_BUILD    = $(SWIFT) build --sanitize=thread --scratch-path $(TSAN_SCRATCH)
TSAN_OPTIONS_ = exitcode=0 halt_on_error=0 second_deadlock_stack=1 \
	ignore_interceptors_accesses=0 ignore_noninstrumented_modules=0 \
	suppressions=$(abspath Tests/tsan-suppressions.txt)

tsan: deps
	$(TSAN_BUILD) --build-tests
	@rm -rf $(TSAN_REPORTS) && mkdir -p $(TSAN_REPORTS)
	@reports=$$(cd $(TSAN_REPORTS) && pwd); \
	IOMMUFS_BIN=$$($(TSAN_BUILD) --show-bin-path)/iommufs \
	TSAN_OPTIONS="log_path=$$reports/report $(TSAN_OPTIONS_)" \
		$(SWIFT) test --sanitize=thread --scratch-path $(TSAN_SCRATCH) --skip-build \
		--filter '$(TSAN_TESTS)' $(if $(TSAN_SKIP),--skip '$(TSAN_SKIP)'); \
	status=$$?; \
	count=$$(cat $$reports/report.* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer'); \
	if [ -n "$$(ls $$reports)" ]; then cat $$reports/report.*; fi; \
	echo "ThreadSanitizer: $$count reports in $$(ls $$reports | wc -l) processes (files in $(TSAN_REPORTS))"; \
	[ $$status -eq 0 ] && [ -z "$$(ls $$reports)" ]

# ---------------------------------------------------------------- bench
# `make bench` measures iommufs next to the C filesystems of ../shared/anchors
# (cfloor, cfloor --kcache, cfloor --single) and tmpfs with the anchors' own
# driver, run-anchors.sh: every implementation mounted at once, pinned with
# its client to one CPU, implementations alternating inside every round. The
# anchors are built by their script into .build/anchors/build: .build/anchors
# is a farm of links to the anchors' sources, so nothing is written to
# ../shared. iommufs serves machines made by `iommufs generate` (the anchors'
# tree.h addressing); the client gets MNT/kernel/iommu_groups through a bind
# mount (serve.sh below). Then stat/read/write at 50,000 groups next to 64
# groups (a second run, so that the two are compared within one run), and one
# table of iommufs against the goals of issue 4 (medians over both runs).
#   QUICK=1                 2 rounds x 1 rep x 100 ms, one big mount (~2-3 min)
#   BENCH_PIN=0             CPU list for daemon and client ("none" = unpinned)
#   BENCH_GROUPS="64 4096"  BENCH_BIG=50000  BENCH_THREADS="1 2"
#   BENCH_IMPLS="cfloor cfloor-kc cfloor-st tmpfs"   (add chigh if wanted)
#   BENCH_ST=1              also iommufs --single-threaded (label iommufs-st)
#   BENCH_EXTRA='label=CMD' another --extra (e.g. an older iommufs build)
#   BENCH_OUT=DIR           raw results and summaries [.build/bench/results-<time>]
ANCHORS       ?= $(abspath ../shared/anchors)
BENCH_DIR      = .build/bench
BENCH_FARM     = .build/anchors
BENCH_PIN     ?= 0
BENCH_GROUPS  ?= 64 4096
BENCH_BIG     ?= 50000
BENCH_THREADS ?= 1 2
BENCH_IMPLS   ?= cfloor cfloor-kc cfloor-st tmpfs
BENCH_ST      ?=
BENCH_EXTRA   ?=
BENCH_STAMP   := $(shell date +%Y%m%d-%H%M%S)
BENCH_OUT     ?= $(BENCH_DIR)/results-$(BENCH_STAMP)
BENCH_MODE     = $(if $(QUICK),--quick,--rounds 5 --reps 2 --min-ms 200 --big-repeats 3)
BENCH_BIGMODE  = $(if $(QUICK),--rounds 2 --reps 1 --min-ms 100,--rounds 5 --reps 2 --min-ms 200)

# serve.sh BIN TOPOLOGY MNT [mount flags]: mounts iommufs on MNT.sysfs,
# binds its kernel/iommu_groups over MNT, and unmounts MNT.sysfs once MNT is
# unmounted, so that the daemon (this process, after exec) exits like the
# anchors' filesystems do. Waits block (findmnt --poll; the bind mount's
# lookup waits for the daemon to answer), so that nothing competes with the
# measured processes for the pinned CPU.
define BENCH_SERVE_SH
#!/bin/sh
bin=$$1 topology=$$2 mnt=$$3; shift 3
root=$$mnt.sysfs
mkdir -p "$$root"
(
    exec </dev/null >/dev/null 2>&1
    tries=0
    until mountpoint -q "$$root"; do
        tries=$$((tries + 1)); [ $$tries -le 60 ] || exit 1
        findmnt --poll=mount --first-only --mountpoint "$$root" --timeout 1000 >/dev/null
    done
    mount --bind "$$root/kernel/iommu_groups" "$$mnt" || exit 1
    while mountpoint -q "$$mnt"; do
        findmnt --poll=umount --first-only --mountpoint "$$mnt" --timeout 2000
    done
    fusermount3 -u "$$root" || umount -l "$$root"
) &
exec "$$bin" mount "$$root" --topology "$$topology" --foreground "$$@"
endef
export BENCH_SERVE_SH

# The goals of issue 4 for the iommufs columns of the raw results.
define BENCH_GOALS_AWK
function field(name,   i, kv) {
    for (i = 1; i <= NF; i++) { split($$i, kv, "="); if (kv[1] == name) return substr($$i, length(name) + 2) }
    return ""
}
function median(key,   n, i, j, t, a) {
    n = cnt[key]; if (n == 0) return -1
    for (i = 1; i <= n; i++) a[i] = val[key, i]
    for (i = 2; i <= n; i++) { t = a[i]; j = i - 1; while (j > 0 && a[j] > t) { a[j + 1] = a[j]; j-- } a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(key, v) { cnt[key]++; val[key, cnt[key]] = v }
/^round=/ {
    k = field("pin") SUBSEP field("G") SUBSEP field("op") SUBSEP field("threads")
    l = field("label"); v = field("us_per_op") + 0
    # merged over both runs, and per run (for the 50,000 vs 64 comparison)
    add(k SUBSEP l, v); add(FILENAME SUBSEP k SUBSEP l, v)
    if (field("G") + 0 >= 50000) runof[k] = FILENAME
    if (!(k in seen)) { seen[k] = 1; rows[++nr] = k }
    next
}
/^big / {
    l = field("label"); nb[l]++; bm[l, nb[l]] = field("mount_ms") + 0
    if (field("rss_kb_mounted") != "") rss[l] = rss[l] (rss[l] == "" ? "" : "/") field("rss_kb_mounted")
    if (field("rss_kb_after_walk") != "") { walked[l] = field("rss_kb_after_walk"); cold[l] = field("cold_walk_us_per_group") }
    if (!(l in bseen)) { bseen[l] = 1; blist[++nbl] = l }
}
END {
    printf "iommufs against the goals of issue 4 (median us/op; ratio to the anchor in that column).\n"
    printf "Goals: <= 1.10x the floor of the same loop model (cfloor; cfloor-st for iommufs-st); readdir and\n"
    printf "walk also <= 1.10x cfloor-kc; 2 threads: aggregate throughput >= cfloor's (ratio <= 1.05, the\n"
    printf "pinned run-to-run noise); "
    printf "50,000 groups: per-op latency <= 1.10x the 64-group figure, mounted within 1 s, RSS < 100 MB.\n\n"
    printf "%-5s %-6s %-8s %-3s %-10s %20s %20s %20s %20s %20s  %s\n", "pin", "G", "op", "thr", "impl", "us/op", "vs cfloor", "vs cfloor-st", "vs cfloor-kc", "vs G=64", "goal"
    for (r = 1; r <= nr; r++) {
        split(rows[r], p, SUBSEP)
        for (li = 1; li <= 2; li++) {
            l = li == 1 ? "iommufs" : "iommufs-st"
            m = median(rows[r] SUBSEP l); if (m < 0) continue
            fl = median(rows[r] SUBSEP "cfloor"); st = median(rows[r] SUBSEP "cfloor-st"); kc = median(rows[r] SUBSEP "cfloor-kc")
            small = median((rows[r] in runof ? runof[rows[r]] SUBSEP : "") p[1] SUBSEP 64 SUBSEP p[3] SUBSEP p[4] SUBSEP l)
            base = l == "iommufs" ? fl : st
            limit = p[4] > 1 ? 1.05 : 1.10
            ok = base > 0 ? (m <= limit * base) : 1
            if ((p[3] == "readdir" || p[3] == "walk") && kc > 0 && m > 1.10 * kc) ok = 0
            if (p[2] != 64 && p[2] >= 50000 && small > 0 && m > 1.10 * small) ok = 0
            c1 = (fl > 0) ? sprintf("%.2fx", m / fl) : "-"; c2 = (st > 0) ? sprintf("%.2fx", m / st) : "-"
            c3 = (kc > 0) ? sprintf("%.2fx", m / kc) : "-"; c4 = (p[2] != 64 && small > 0) ? sprintf("%.2fx", m / small) : "-"
            printf "%-5s %-6s %-8s %-3s %-10s %20s %20s %20s %20s %20s  %s\n", p[1], p[2], p[3], p[4], l, sprintf("%.2f", m), c1, c2, c3, c4, (ok ? "met" : "MISSED")
        }
    }
    if (nbl > 0) {
        printf "\nBig tree (exec -> first stat of 0/type; RSS of the daemon):\n"
        printf "%-10s %-14s %-24s %-18s %-16s %s\n", "impl", "mount_ms", "rss_kb mounted", "cold walk us/grp", "rss_kb walked", "goal"
        for (b = 1; b <= nbl; b++) {
            l = blist[b]; n = nb[l]
            for (i = 1; i <= n; i++) s[i] = bm[l, i]
            for (i = 2; i <= n; i++) { t = s[i]; j = i - 1; while (j > 0 && s[j] > t) { s[j + 1] = s[j]; j-- } s[j + 1] = t }
            med = (n % 2) ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
            split(rss[l], rr, "/")
            goal = (l ~ /^iommufs/) ? ((med <= 1000 && rr[1] + 0 < 100000) ? "met" : "MISSED") : ""
            printf "%-10s %-14s %-24s %-18s %-16s %s\n", l, sprintf("%.1f", med), rss[l], cold[l], walked[l], (goal)
        }
    }
}
endef
export BENCH_GOALS_AWK

bench: SHELL := /bin/bash
bench: deps
	$(SWIFT) build -c release --product iommufs
	@mkdir -p $(BENCH_DIR) $(BENCH_FARM) $(BENCH_OUT)
	@test -f $(ANCHORS)/run-anchors.sh || { echo "no anchors at $(ANCHORS) (set ANCHORS=...)"; exit 1; }
	@for f in cfloor chigh bench common run-anchors.sh; do ln -sfn $(ANCHORS)/$$f $(BENCH_FARM)/$$f; done
	@printf '%s\n' "$$BENCH_SERVE_SH" > $(BENCH_DIR)/serve.sh
	@printf '%s\n' "$$BENCH_GOALS_AWK" > $(BENCH_DIR)/goals.awk
	@chmod +x $(BENCH_DIR)/serve.sh
	@bin=$$($(SWIFT) build -c release --show-bin-path)/iommufs; \
	for g in $(sort $(BENCH_GROUPS) $(BENCH_BIG)); do \
		f=$(BENCH_DIR)/machine-$$g.json; [ -s $$f ] && [ $$f -nt $$bin ] || $$bin generate --groups $$g --devices-per-group 2 > $$f; \
	done
	@bin=$$($(SWIFT) build -c release --show-bin-path)/iommufs; here=$$(pwd); \
	serve="$$here/$(BENCH_DIR)/serve.sh $$bin $$here/$(BENCH_DIR)/machine-{G}.json {MNT}"; \
	extra=(--extra "iommufs=$$serve"); \
	$(if $(BENCH_ST),extra+=(--extra "iommufs-st=$$serve --single-threaded");) \
	$(if $(BENCH_EXTRA),extra+=(--extra '$(BENCH_EXTRA)');) \
	$(BENCH_FARM)/run-anchors.sh --pin "$(BENCH_PIN)" --groups "$(BENCH_GROUPS)" --devices 2 \
		--threads "$(BENCH_THREADS)" --impls "$(BENCH_IMPLS)" $(BENCH_MODE) \
		--big-groups $(BENCH_BIG) --big-impls "cfloor iommufs" --out $(BENCH_OUT)/main "$${extra[@]}" && \
	if [ "$(BENCH_BIG)" -gt 0 ]; then \
		echo "== per-op latency at $(BENCH_BIG) groups, next to 64 groups in the same run"; \
		$(BENCH_FARM)/run-anchors.sh --no-build --pin "$(firstword $(BENCH_PIN))" --groups "64 $(BENCH_BIG)" --devices 2 \
			--ops "stat read write" --threads 1 --impls cfloor $(BENCH_BIGMODE) --big-groups 0 \
			--out $(BENCH_OUT)/big "$${extra[@]}" >$(BENCH_OUT)/big.log 2>&1 || { cat $(BENCH_OUT)/big.log; exit 1; }; \
	fi
	@echo; awk -f $(BENCH_DIR)/goals.awk $(BENCH_OUT)/main/raw.txt $$([ -f $(BENCH_OUT)/big/raw.txt ] && echo $(BENCH_OUT)/big/raw.txt) | \
		tee $(BENCH_OUT)/goals.txt
	@echo "results: $(BENCH_OUT)"

# ---------------------------------------------------------------- fuzz
# `make fuzz-inputs` builds iommufs-fuzz with libFuzzer and AddressSanitizer
# (release, assertions kept) in $(FUZZ_DIR), then fuzzes each target for
# FUZZ_SECONDS, seeded from Tests/FuzzCorpus/<target> with its dictionary.
# New inputs go to $(FUZZ_DIR)/corpus/<target> (kept between runs), crashes,
# broken properties (see Sources/Fuzzing), hangs (> 10 s), leaks and
# out-of-memory inputs to $(FUZZ_DIR)/findings/<time>/<target>/. A finding
# does not stop the target (-fork=1 -ignore_crashes=1); each is listed with
# its first line, and the run fails if there is any. Replay one with
#   SWIFT_DETERMINISTIC_HASHING=1 swift run iommufs-fuzz <target> <file>
# FUZZ_IGNORE='text|text' lets findings containing one of the texts pass (a
# known bug, so that the fuzzer looks for others).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= decoder control store
FUZZ_IGNORE  ?=
FUZZ_DIR      = .build-fuzz
FUZZ_CORPUS   = Tests/FuzzCorpus
FUZZ_BUILD    = $(SWIFT) build --scratch-path $(FUZZ_DIR) -c release --product iommufs-fuzz --sanitize=fuzzer \
	-Xswiftc -sanitize=fuzzer,address -Xswiftc -DLIBFUZZER -Xswiftc -assert-config -Xswiftc Debug
FUZZ_STAMP   := $(shell date +%Y%m%d-%H%M%S)
FUZZ_OUT      = $(FUZZ_DIR)/findings/$(FUZZ_STAMP)
# Swift's backtracer does not run under AddressSanitizer; malloc stacks are
# not needed to report a broken property and cost a quarter of the time;
# deterministic hashing makes an input do the same in every process.
FUZZ_ENV      = IOMMUFS_FUZZ_IGNORE='$(FUZZ_IGNORE)' SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=malloc_context_size=0 \
	SWIFT_DETERMINISTIC_HASHING=1

fuzz-inputs: deps
	$(FUZZ_BUILD)
	@bin=$$($(FUZZ_BUILD) --show-bin-path)/iommufs-fuzz; failed=0; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_OUT)/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s (log: $(FUZZ_OUT)/$$t.log)"; \
		IOMMUFS_FUZZ_TARGET=$$t $(FUZZ_ENV) $$bin $(FUZZ_DIR)/corpus/$$t $(FUZZ_CORPUS)/$$t -dict=$(FUZZ_CORPUS)/$$t.dict \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -fork=1 -ignore_crashes=1 \
			-artifact_prefix=$(FUZZ_OUT)/$$t/ >$(FUZZ_OUT)/$$t.log 2>&1; \
		grep -E '^#[0-9]+: cov:' $(FUZZ_OUT)/$$t.log | tail -1 | sed 's/^/   /'; \
		for f in $$(ls $(FUZZ_OUT)/$$t/ 2>/dev/null); do \
			failed=1; \
			why=$$(IOMMUFS_FUZZ_TARGET=$$t $(FUZZ_ENV) $$bin -timeout=10 $(FUZZ_OUT)/$$t/$$f 2>&1 | \
				grep -m1 -E "iommufs-fuzz $$t:|Fatal error|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|SUMMARY" | cut -c1-400); \
			echo "   FINDING $(FUZZ_OUT)/$$t/$$f: $${why:-see the log}"; \
		done; \
	done; \
	[ $$failed = 0 ] || { echo "fuzz-inputs: findings above (replay: SWIFT_DETERMINISTIC_HASHING=1 swift run iommufs-fuzz TARGET FILE)"; exit 1; }
