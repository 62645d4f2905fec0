# iommufs — the two commands a user needs: `make run` and `make test`.
# Both install what they need first (libfuse3-dev, fuse3, pkg-config) when missing.

SWIFT      ?= swift
MNT        ?= mnt
TOPOLOGY   ?=
BUILD_FLAGS ?=
APT_PACKAGES = libfuse3-dev fuse3 pkg-config

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all build run test deps clean help

all: build

help:
	@echo "make run      build, mount the default machine at ./$(MNT) and serve it until Ctrl-C"
	@echo "              (TOPOLOGY=file.json serves another machine, MNT=dir mounts elsewhere)"
	@echo "make test     build and run every test, including the ones that mount"
	@echo "make build    build only"

# The C side comes from Debian's packages; install it once, only when missing.
deps:
	@if ! pkg-config --exists fuse3 2>/dev/null || ! command -v fusermount3 >/dev/null 2>&1; then \
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
test: build
	IOMMUFS_BIN=$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/iommufs $(SWIFT) test $(BUILD_FLAGS)

clean:
	$(SWIFT) package clean
