# A thin wrapper: install what is missing (Debian packages), build with CMake, run.
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBERTH_WERROR=ON

# Build and test dependencies, by Debian package name.
DEPS := cmake make gcc clang pkg-config libuv1-dev libinih-dev libcmocka-dev libsystemd-dev \
        libjansson-dev libssl-dev libcrypt-dev libclang-rt-14-dev python3 socat ncat curl \
        iproute2 util-linux procps debhelper dpkg-dev lintian adduser systemd openssl \
        clang-format haproxy python3-socks prometheus tmux libseccomp-dev
# Commands the tests need (a missing one is an error, never a silently weaker test), and the
# Debian package of each when it is not the one DEPS already names (setpriv left util-linux
# for a package of its own in newer Debian releases).
TOOLS := setpriv systemd-analyze openssl socat ncat unshare ip clang-format dpkg-buildpackage haproxy \
         promtool prometheus tmux systemd-socket-activate
BENCH_DEPS := microsocks dante-server stunnel4 nginx libnginx-mod-stream
FUZZ_SECONDS ?= 60

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps bench-deps build run test test-asan unit integration bench soak package fuzz \
        format-check clean

all: build

deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@for t in $(TOOLS); do \
		command -v $$t >/dev/null && continue; \
		pkg=$$(case $$t in setpriv) echo setpriv;; *) echo "";; esac); \
		if [ -n "$$pkg" ]; then \
			$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$pkg; \
		fi; \
		command -v $$t >/dev/null || { echo "make deps: $$t is still missing" >&2; exit 1; }; \
	done

bench-deps:
	@$(MAKE) --no-print-directory deps DEPS="$(BENCH_DEPS)"

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/berthd -c $(BUILD)/berth.dev.conf

# Every test, in a release build and again under ASan+UBSan.
test: build
	ctest --test-dir $(BUILD) --output-on-failure --no-tests=error -j $(JOBS)
	$(MAKE) --no-print-directory test-asan

test-asan: deps
	CC=clang cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DBERTH_WERROR=ON \
		-DBERTH_SANITIZE=ON -DBERTH_FUZZ=ON >/dev/null
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $(BUILD_ASAN) --output-on-failure --no-tests=error -j $(JOBS)

# Grow the fuzz corpus: every target FUZZ_SECONDS (default 60), then the inputs that add
# coverage are merged into fuzz/corpus/<target>/ for you to commit; a crash is copied there
# too (it becomes a regression seed, replayed by the fuzz_<target> ctest) and fails the run.
fuzz: deps
	CC=clang cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DBERTH_WERROR=ON \
		-DBERTH_SANITIZE=ON -DBERTH_FUZZ=ON >/dev/null
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run-fuzz $(BUILD_ASAN)/fuzz

# The C sources as clang-format (.clang-format) wants them; CI runs this.
format-check:
	git ls-files -z '*.c' '*.h' | xargs -0 clang-format --dry-run -Werror

bench: build bench-deps
	$(BUILD)/bench/run-bench

# A bounded mixed run (SOAK_SECONDS, default 600) of every plugin on every listener kind:
# steady and hostile clients, reloads, worker kills. Fails on a lost well-behaved operation,
# a leaked fd, memory growth or a sanitizer report. Not part of make test.
SOAK_SECONDS ?= 600
soak: build
	SOAK_SECONDS=$(SOAK_SECONDS) $(BUILD)/bench/soak

package: deps
	packaging/build-deb

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) dist
