# A thin wrapper: install what is missing (Debian packages), build with CMake, run.
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBERTH_WERROR=ON

# Build and test dependencies, by Debian package name.
DEPS := cmake make gcc clang pkg-config libuv1-dev libinih-dev libcmocka-dev libsystemd-dev \
        libjansson-dev libssl-dev libcrypt-dev libclang-rt-14-dev python3 socat ncat curl \
        iproute2 util-linux procps debhelper dpkg-dev lintian adduser systemd
BENCH_DEPS := microsocks dante-server

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps bench-deps build run test test-asan unit integration bench package fuzz clean

all: build

deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

bench-deps:
	@$(MAKE) --no-print-directory deps DEPS="$(BENCH_DEPS)"

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/berthd -c $(BUILD)/berth.dev.conf

# Every test, in a release build and again under ASan+UBSan.
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)
	$(MAKE) --no-print-directory test-asan

test-asan: deps
	CC=clang cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DBERTH_WERROR=ON \
		-DBERTH_SANITIZE=ON -DBERTH_FUZZ=ON >/dev/null
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $(BUILD_ASAN) --output-on-failure -j $(JOBS)

bench: build bench-deps
	$(BUILD)/bench/run-bench

package: deps
	packaging/build-deb

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) dist
