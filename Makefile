# pyscst developer entry points.
#   make serve   run the daemon on etc/pyscst.toml (127.0.0.1:3260, state in ./var/)
#   make test    tools + lint + every test (what CI runs: .ci/run)
#   make lint    ruff + mypy + the import-linter layer contract
#   make test-unit / test-e2e / test-conformance   one kind of test (pytest -m KIND)
#   make bench   pyscst vs tgt side by side (benchmarks/bench.py; BENCH_ARGS=--quick etc.)
#   make bench-cluster   only the cluster rows of make bench (benchmarks/cluster_cost.py)
#   make fuzz    long hostile-input campaign against a real daemon (FUZZ_ARGS, see tests/fuzz)
#   make soak    kill -9 durability trials against a real daemon (SOAK_ARGS)
# The venv and tools are set up on demand; stamp files keep repeated runs quick.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= etc/pyscst.toml
PYTEST_ARGS ?=
FUZZ_ARGS ?= --pdus 1000000
SOAK_ARGS ?= --trials 20
CLUSTER_BENCH_ARGS ?=

# binary -> Debian package that provides it (installed only if missing and root)
TOOL_PACKAGES := iscsi-test-cu:libiscsi-bin qemu-img:qemu-utils tgtd:tgt tmux:tmux etcd:etcd-server

.PHONY: serve test lint pytest tools venv clean bench bench-cluster fuzz soak test-unit test-e2e test-conformance

serve: $(VENV)/.stamp-install
	$(BIN)/pyscst serve --config $(CONFIG)

test: tools lint pytest

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check .
	@$(BIN)/python -c "$$VIEW_PY"
	$(BIN)/mypy
	cd build/view && $(abspath $(BIN))/lint-imports --no-logo $(CURDIR)/pyproject.toml

# mypy and import-linter read files and cannot follow an editable install's import
# hook, which is how setuptools' [tool.setuptools.package-dir] maps pyscst.<package>
# to ./<package>. They read build/view instead: the installed layout as symlinks
# (import-linter runs there: it puts its working directory first on the path).
define VIEW_PY
import pathlib, shutil, tomllib
view = pathlib.Path("build/view")
shutil.rmtree(view, ignore_errors=True)
view.mkdir(parents=True)
setup = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["tool"]["setuptools"]
for name, src in sorted(setup.get("package-dir", {}).items()):
    dest = view.joinpath(*name.split("."))
    if "." in name:
        dest.symlink_to(pathlib.Path(src).resolve(), target_is_directory=True)
    else:  # the root package: link its files, its subpackages go beside them
        dest.mkdir(parents=True)
        for f in pathlib.Path(src).iterdir():
            if f.name != "__pycache__":
                (dest / f.name).symlink_to(f.resolve())
endef
export VIEW_PY

pytest: $(VENV)/.stamp-test
	$(BIN)/pytest $(PYTEST_ARGS)

# one kind of test, marked by directory in tests/conftest.py (no lint, no tools)
test-unit test-e2e test-conformance: test-%: $(VENV)/.stamp-test
	$(BIN)/pytest -m $* $(PYTEST_ARGS)

venv: $(VENV)/.stamp-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-install: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

# (with the example handler plugin, which tests/e2e/test_plugins.py serves)
$(VENV)/.stamp-test: pyproject.toml examples/pyscst-ramdisk/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ./examples/pyscst-ramdisk
	@touch $(VENV)/.stamp-install $@

# Debian tools the end-to-end tests drive: libiscsi's iscsi-test-cu, qemu-img with
# its iscsi block driver (qemu-block-extra), tgt for benchmarks. Quiet when present;
# without root, tests that need a missing tool skip and say why.
tools:
	@missing=""; \
	for pair in $(TOOL_PACKAGES); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if ! command -v qemu-img >/dev/null 2>&1 || ! qemu-img --help 2>/dev/null | grep -q ' iscsi'; then \
		missing="$$missing qemu-utils qemu-block-extra"; \
	fi; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | xargs); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing: $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "warning: missing Debian packages: $$missing (not root: dependent tests will skip)"; \
		fi; \
	fi

$(VENV)/.stamp-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ./examples/pyscst-ramdisk
	@touch $(VENV)/.stamp-install $(VENV)/.stamp-test $@

bench: tools $(VENV)/.stamp-bench
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/cluster_cost.py $(CLUSTER_BENCH_ARGS)

# cluster mode vs one node alone: 4K random read/write QD32, PERSISTENT RESERVE OUT latency
bench-cluster: tools $(VENV)/.stamp-install
	$(BIN)/python benchmarks/cluster_cost.py $(CLUSTER_BENCH_ARGS)

# The long runs (tests/fuzz): figures on stdout, exit 1 on any daemon exit,
# unhandled traceback, late login or lost/torn write.
fuzz: $(VENV)/.stamp-test
	PYTHONPATH=. $(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

soak: $(VENV)/.stamp-test
	PYTHONPATH=. $(BIN)/python -m tests.fuzz.durability $(SOAK_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
