# Convenience entry points; the build itself is CMake.
#   make run     install build dependencies, build, run relayd on config.example.yaml
#   make check   install build and test dependencies, build, run every test
#   make build   build only (build/bin/relayd, build/bin/relayctl)
#   make asan    build with ASan+UBSan in build-asan/ and run the tests there

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

BUILD_DEPS := cmake make gcc pkg-config libuv1-dev liblmdb-dev libyaml-dev zlib1g-dev libjansson-dev node-llhttp \
              libsystemd-dev libssl-dev
TEST_DEPS  := libcmocka-dev python3 clang libclang-rt-14-dev influxdb influxdb-client \
              python3-influxdb curl lmdb-utils dpkg-dev fiu-utils prometheus openssl haproxy \
              lintian logrotate

.PHONY: run check build deps test-deps test asan clean

# Install only what is missing; refresh the package lists only if needed.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || \
		{ $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }; \
	fi
endef

deps:
	$(call apt_install,$(BUILD_DEPS))

test-deps: deps
	$(call apt_install,$(TEST_DEPS))

# The install prefix is given every time, so that an older build directory
# (configured when the default was /usr/local) packages the same .deb.
PREFIX     ?= /usr

# Without the tests: `make run` needs only the build dependencies (the
# tests need cmocka and python3, which `make check` installs).
build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=$(PREFIX) -DRELAY_TESTS=OFF
	cmake --build $(BUILD) -j $(JOBS)

# As root (a fresh machine), say so: relayd refuses root without 'user:'.
run: build
	./$(BUILD)/bin/relayd -c config.example.yaml $$([ "$$(id -u)" = 0 ] && echo --allow-root)

test: 
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELAY_DEVELOPER=ON -DCMAKE_INSTALL_PREFIX=$(PREFIX) \
		-DRELAY_TESTS=ON
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
		-DRELAY_DEVELOPER=ON -DCMAKE_INSTALL_PREFIX=$(PREFIX) -DRELAY_SANITIZE="address;undefined"
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS) -L 'unit|fuzz-regress|integration|torture'

check: test-deps
	$(MAKE) test
	$(MAKE) asan

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
