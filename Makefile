# The two commands of the README: `make demo` and `make test`. Both set everything up.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BASE   := $(VENV)/.installed-base
# program:Debian package. The demo runs on this machine (the `local` profile): tmux, curl, rsync,
# git; the tests add what their sshd pods and report.html's browser need.
DEMO_TOOLS   := rsync:rsync tmux:tmux curl:curl git:git
SYSTEM_TOOLS := $(DEMO_TOOLS) sshd:openssh-server ssh:openssh-client unshare:util-linux nsenter:util-linux chromium:chromium

.PHONY: demo test bench mutants docs install system-deps demo-deps clean

# The main job on the `local` profile: see examples/demo.sh. Only the package itself and the
# demo's system tools (not the test extras, not sshd or chromium): a cold demo is the tool's own time.
demo: $(BASE) demo-deps
	bash examples/demo.sh

test: $(STAMP) system-deps
	@# Byte-compile the package first: where PYTHONDONTWRITEBYTECODE is set, every `ops` the
	@# tests start would otherwise compile it from source again (about 0.2 s each).
	$(BIN)/python -m compileall -q ops_tasks >/dev/null
	@# Four workers on two cores: most of a test is waiting on a pod (sshd, tmux, sleeps); a
	@# module's tests stay on one worker, so its module-scoped pod is started once.
	$(BIN)/python -m pytest -q -n 4 --dist loadscope

bench: $(STAMP) system-deps
	$(BIN)/python bench/pod_status.py
	$(BIN)/python bench/vllm.py
	$(BIN)/python bench/runs_submit.py
	$(BIN)/python bench/fetch.py
	$(BIN)/python bench/report.py

# Plants each bug of bench/mutants.py's list in a copy of the checkout and runs the tests named for
# it: the share caught per area, exit 1 below 90%. Then bench/mutmut_fast.py: mutmut (installed into
# the venv on first use) makes every mutant of the fast modules in a temporary copy and runs their
# fast tests: a score per module, exit 1 below 85% or when a live mutant is not answered in
# bench/mutmut_answers/<module>.txt. Both run even when the first fails. Many minutes; not part of `make test`.
mutants: $(STAMP) system-deps
	@status=0; $(BIN)/python bench/mutants.py || status=1; \
	$(BIN)/python bench/mutmut_fast.py || status=1; exit $$status

# The documentation made from the code (the run-key reference from the key table), then the site
# (mkdocs.yml) built --strict into .site/: open .site/index.html.
docs: $(STAMP)
	$(BIN)/python -m ops_tasks.runtime.keys > docs/reference/run-keys.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict -d .site

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(BASE)

$(BASE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e .
	touch $@

# Installs what is missing with apt-get when root; otherwise names it and stops.
system-deps: TOOLS = $(SYSTEM_TOOLS)
demo-deps: TOOLS = $(DEMO_TOOLS)
system-deps demo-deps:
	@missing=""; \
	for pair in $(TOOLS); do \
	  prog=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$prog >/dev/null 2>&1 || test -x /usr/sbin/$$prog || missing="$$missing $$pkg"; \
	done; \
	missing=$$(printf '%s\n' $$missing | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages: $$missing(install them, e.g. sudo apt-get install $$missing)"; exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .local-pod .pytest_cache
