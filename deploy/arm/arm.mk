# deploy/arm/arm.mk — static cross builds, .deb packages and the cross-arch test suite.
# Included by the top-level Makefile (which sets GO, VERSION, LDFLAGS and CGO_ENABLED=0).
#
#   make dist        every binary in dist/ + dist/SHA256SUMS
#   make deb         dist/edged_<ver>_{arm64,armhf,amd64}.deb (nfpm, pinned in deploy/tools.mod)
#   make test-cross  wire + storage suites under qemu (arm64, armv7), then the deploy tests
#
# The armhf package carries the GOARM=6 binary: it runs on every armhf system, including
# Raspberry Pi OS on a Pi Zero/1 (ARMv6), where a GOARM=7 build would die with SIGILL.

DIST        ?= dist
NFPM        := $(GO) tool -modfile=deploy/tools.mod nfpm
# Debian versions must start with a digit: v1.2.3-4-gabc -> 1.2.3-4-gabc; a bare hash -> 0.0.0~<hash>.
DEB_VERSION ?= $(shell v='$(VERSION)'; v=$${v#v}; case "$$v" in ([0-9]*.*) echo "$$v";; (*) echo "0.0.0~$$v";; esac)
QEMU_ARM64  ?= qemu-aarch64-static
QEMU_ARM    ?= qemu-arm-static
# The storage suite reads EDGED_TEST_SCALE; "small" keeps the emulated runs to minutes.
CROSS_SCALE ?= small
CROSS_PKGS  ?= ./wire/... ./storage/...
GOBUILD     := $(GO) build -trimpath -ldflags '$(LDFLAGS)'

.PHONY: build-arm64 build-armv7 build-armv6 build-amd64 dist deb test-cross test-cross-arm64 test-cross-armv7 test-deploy check-qemu binfmt

build-arm64: ## static linux/arm64 binary in dist/ (Pi 3/4/5 with a 64-bit OS)
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o $(DIST)/edged-linux-arm64 ./cmd/edged

build-armv7: ## static linux/arm GOARM=7 binary in dist/ (experimental: 32-bit badger, see deploy/arm/README.md)
	GOOS=linux GOARCH=arm GOARM=7 $(GOBUILD) -o $(DIST)/edged-linux-armv7 ./cmd/edged

build-armv6: ## static linux/arm GOARM=6 binary in dist/ (Pi Zero/1; experimental)
	GOOS=linux GOARCH=arm GOARM=6 $(GOBUILD) -o $(DIST)/edged-linux-armv6 ./cmd/edged

build-amd64: ## static linux/amd64 binary in dist/
	GOOS=linux GOARCH=amd64 $(GOBUILD) -o $(DIST)/edged-linux-amd64 ./cmd/edged

dist: build-arm64 build-armv7 build-armv6 build-amd64 ## every release binary in dist/ plus dist/SHA256SUMS
	cd $(DIST) && sha256sum edged-linux-* > SHA256SUMS && cat SHA256SUMS

# The man page and the completions come from the binary's own command table (`edged man`,
# `edged completion`), built for this machine, so they cannot drift from the CLI. gzip -n: no
# name or time stamp, so the same commit gives the same package. Debian names a changelog
# changelog.Debian.gz when the version has a revision (a hyphen), changelog.gz when native.
PKG           := $(DIST)/pkg
DEB_CHANGELOG := $(if $(findstring -,$(DEB_VERSION)),changelog.Debian.gz,changelog.gz)
CHANGELOG_DATE = $(shell date -R -u $(if $(BUILD_DATE),-d '$(BUILD_DATE)'))

.PHONY: pkg-files
pkg-files:
	@mkdir -p $(PKG)
	$(GOBUILD) -o $(PKG)/edged-host ./cmd/edged
	$(PKG)/edged-host man | gzip -9n > $(PKG)/edged.8.gz
	$(PKG)/edged-host completion bash > $(PKG)/edged.bash
	$(PKG)/edged-host completion zsh > $(PKG)/_edged
	sed -e 's|@VERSION@|$(DEB_VERSION)|g' -e 's|@SHORTCOMMIT@|$(or $(shell echo '$(COMMIT)' | cut -c1-12),unknown)|g' -e 's|@DATE@|$(CHANGELOG_DATE)|' \
		deploy/arm/changelog.in | gzip -9n > $(PKG)/changelog.gz

# One nfpm run per architecture; nfpm reads ${EDGED_*} from the environment (deploy/arm/nfpm.yaml).
define deb_rule
$(DIST)/edged_$(DEB_VERSION)_$(1).deb: $(DIST)/edged-linux-$(2) pkg-files deploy/arm/nfpm.yaml deploy/arm/edged.service deploy/arm/edged.yaml deploy/arm/edged.example.yaml deploy/arm/copyright deploy/arm/changelog.in deploy/arm/lintian-overrides deploy/arm/postinst.sh deploy/arm/prerm.sh deploy/arm/postrm.sh
	EDGED_DEB_ARCH=$(1) EDGED_BINARY=$(DIST)/edged-linux-$(2) EDGED_DEB_VERSION=$(DEB_VERSION) \
		EDGED_PKG=$(PKG) EDGED_CHANGELOG=$(DEB_CHANGELOG) \
		$(NFPM) package --config deploy/arm/nfpm.yaml --packager deb --target $$@
endef
$(eval $(call deb_rule,arm64,arm64))
$(eval $(call deb_rule,armhf,armv6))
$(eval $(call deb_rule,amd64,amd64))
# The binaries are phony-built (go decides what is stale), so the .debs always re-package.
$(DIST)/edged-linux-arm64: build-arm64
$(DIST)/edged-linux-armv6: build-armv6
$(DIST)/edged-linux-amd64: build-amd64

deb: $(DIST)/edged_$(DEB_VERSION)_arm64.deb $(DIST)/edged_$(DEB_VERSION)_armhf.deb $(DIST)/edged_$(DEB_VERSION)_amd64.deb ## .deb packages for arm64, armhf and amd64 (nfpm)
	@ls -l $^

# Under CI=true a missing qemu fails the build; on a developer machine it is skipped loudly.
# The storage crash test re-executes its own (ARM) test binary, which only works when the
# kernel runs ARM ELF files through qemu (binfmt_misc). `make binfmt` (root) registers them;
# under CI=true, as root, check-qemu does it itself.
BINFMT_DIR := /proc/sys/fs/binfmt_misc
ci_on = [ -n "$$CI" ] && [ "$$CI" != false ] && [ "$$CI" != 0 ]

binfmt: ## register qemu-aarch64/qemu-arm with binfmt_misc (root; needs binfmt-support)
	@[ -e $(BINFMT_DIR)/register ] || mount -t binfmt_misc binfmt_misc $(BINFMT_DIR)
	update-binfmts --enable qemu-aarch64
	update-binfmts --enable qemu-arm

# Outside CI, a machine without qemu or without the binfmt registration skips the cross suites
# (loudly, with the command that fixes it) and still runs the deploy tests; under CI=true it
# fails, or registers binfmt itself when root.
binfmt_ok = grep -qs '^enabled' $(BINFMT_DIR)/qemu-aarch64 && grep -qs '^enabled' $(BINFMT_DIR)/qemu-arm
cross_ok  = command -v $(QEMU_ARM64) >/dev/null && command -v $(QEMU_ARM) >/dev/null && $(binfmt_ok)

check-qemu:
	@for q in $(QEMU_ARM64) $(QEMU_ARM); do \
	  if ! command -v $$q >/dev/null; then \
	    if $(ci_on); then echo "test-cross: $$q not found: CI must install qemu-user-static (see .ci/run)" >&2; exit 1; fi; \
	    echo "test-cross: $$q not found: apt-get install qemu-user-static binfmt-support; SKIPPING the cross-arch suites" >&2; \
	  fi; \
	done
	@if command -v $(QEMU_ARM64) >/dev/null && ! { $(binfmt_ok); }; then \
	  if $(ci_on) && [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory binfmt; \
	  elif $(ci_on); then echo "test-cross: ARM binaries are not registered with binfmt_misc and CI is not root: run sudo make binfmt first" >&2; exit 1; \
	  else \
	    echo "" >&2; \
	    echo "test-cross: SKIPPING the cross-arch suites (arm64, armv7): ARM binaries are not registered with" >&2; \
	    echo "test-cross: binfmt_misc, so the storage crash test cannot re-execute itself under qemu. To run them:" >&2; \
	    echo "test-cross:     sudo make binfmt" >&2; \
	    echo "" >&2; \
	  fi; \
	fi

# -trimpath keeps the package cache shared with the release builds above.
test-cross-arm64: check-qemu
	@if $(cross_ok); then set -x; \
	  GOOS=linux GOARCH=arm64 EDGED_TEST_SCALE=$(CROSS_SCALE) \
	    $(GO) test -trimpath -count=1 -timeout 10m -exec $(QEMU_ARM64) $(CROSS_PKGS); fi

test-cross-armv7: check-qemu
	@if $(cross_ok); then set -x; \
	  GOOS=linux GOARCH=arm GOARM=7 EDGED_TEST_SCALE=$(CROSS_SCALE) \
	    $(GO) test -trimpath -count=1 -timeout 10m -exec $(QEMU_ARM) $(CROSS_PKGS); fi

# The deploy tests use the artefacts built above: EDGED_DIST tells them where they are.
test-deploy: build-arm64 build-amd64 deb
	EDGED_DIST=$(abspath $(DIST)) EDGED_DEB_VERSION=$(DEB_VERSION) $(GO) test -count=1 -timeout 10m -v ./deploy/arm/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

test-cross: test-cross-arm64 test-cross-armv7 test-deploy ## wire+storage under qemu (arm64, armv7; EDGED_TEST_SCALE=small), deploy tests (qemu run, .debs, unit, example config)
