# The two commands a new user needs: `make run` and `make test`.  Everything
# else here is a step they depend on, or a tool for developers.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PYTHON    := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
MODEL     := models/wismo.tar.gz
WIDGET_DEPS := widget/node_modules/.package-lock.json
DATA      := $(shell find data -type f -name '*.yml' 2>/dev/null)
export SQLALCHEMY_SILENCE_UBER_WARNING := 1

# The first Python 3.8-3.10 found (Rasa 3.6 does not run on 3.11+).
PY_CANDIDATES := $(PYTHON_FOR_VENV) python3.10 python3.9 python3.8 \
	$(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10) \
	$(wildcard /usr/local/bin/python3.10 /usr/bin/python3.10) python3
find_python = $(firstword $(foreach c,$(PY_CANDIDATES),$(shell $(c) -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 10))' >/dev/null 2>&1 && echo $(c))))

EVAL_SET ?= ../shared/eval/dev.tsv
# Our own set: order numbers, tracking numbers, emails and typos inside the sentences,
# with the details each message holds (never trained on either).
OWN_EVAL_SET ?= tools/eval/own.tsv

.PHONY: help run test check setup install train validate shell eval tune-fallback clean browser bench profile

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: setup $(MODEL) ## set everything up and start the assistant
	@$(PYTHON) -m bot run

test: setup $(MODEL) browser ## set everything up and run the whole test suite
	$(PYTHON) -m pytest

check: $(INSTALLED) $(WIDGET_DEPS) ## lint, type-check and run the fast tests (no servers, no browser; under a minute)
	$(VENV)/bin/ruff check bot actions connectors tools tests
	$(VENV)/bin/mypy
	$(PYTHON) -m pytest -m "not slow" -q -n auto

# The browser tests drive Debian's Chromium (no browser download).
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM
browser: ## install the headless Chromium the browser tests drive, if missing
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || exit 1; \
	  else \
	    echo "The browser tests need Chromium at $(CHROMIUM): install it (Debian: sudo apt-get install chromium) or set CHROMIUM=/path/to/chromium." >&2; \
	    exit 1; \
	  fi; \
	fi

setup: $(INSTALLED) $(WIDGET_DEPS) ## install, migrate the store, seed demo data when empty
	@$(PYTHON) -m bot setup

# The site widget's one npm dependency (socket.io-client), exactly as widget/package-lock.json pins it.
$(WIDGET_DEPS): widget/package.json widget/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  echo "Installing the site widget's socket.io client (npm ci in widget/)"; \
	  cd widget && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.package-lock.json; \
	else \
	  echo "npm not found: the site widget (/widget/) needs Node.js 18+ with npm; the rest works without it." >&2; \
	fi

install: $(INSTALLED) ## create .venv and install the pinned dependencies

$(INSTALLED): requirements.txt constraints.txt
	@if [ ! -x $(PYTHON) ]; then \
	  py="$(find_python)"; \
	  if [ -z "$$py" ]; then \
	    echo "No Python 3.8-3.10 found (Rasa 3.6 needs one). Install python3.10 (e.g. 'apt install python3.10-venv' or 'pyenv install 3.10') or set PYTHON_FOR_VENV=/path/to/python3.10." >&2; \
	    exit 1; \
	  fi; \
	  echo "Creating $(VENV) with $$py"; \
	  $$py -m venv $(VENV) || exit 1; \
	fi
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt -c constraints.txt
	@touch $@

train: $(MODEL) ## train the model if data/, config.yml or domain.yml changed

$(MODEL): $(INSTALLED) config.yml domain.yml $(DATA)
	$(VENV)/bin/rasa train --fixed-model-name wismo --out models
	@touch $@

validate: $(INSTALLED) ## check the training data and domain
	$(VENV)/bin/rasa data validate --fail-on-warnings

shell: setup $(MODEL) ## chat in the terminal (starts the action server too)
	@$(PYTHON) -m bot shell

eval: $(MODEL) ## measure intent recognition on EVAL_SET and OWN_EVAL_SET (never trained on)
	@$(PYTHON) -m tools eval-nlu $(EVAL_SET) $(OWN_EVAL_SET)

tune-fallback: $(INSTALLED) ## choose the fallback threshold on an 80/20 split of data/nlu
	rm -rf .run/split && mkdir -p .run/split
	$(VENV)/bin/rasa data split nlu --nlu data/nlu --training-fraction 0.8 --random-seed 7 --out .run/split
	$(VENV)/bin/rasa train nlu --nlu .run/split/training_data.yml --config config.yml --out .run/split --fixed-model-name split
	@$(PYTHON) -m tools tune-fallback .run/split/split.tar.gz .run/split/test_data.yml

# The bare Rasa assistant `make bench` compares against; its model stays out of
# models/*.tar.gz so `make run` never picks it up.
BASELINE_MODEL := models/baseline/baseline.tar.gz
BASELINE_FILES := $(shell find tools/baseline -type f -name '*.yml' 2>/dev/null)
BENCH_ARGS ?=

bench: setup $(MODEL) $(BASELINE_MODEL) ## latency and throughput next to a bare Rasa baseline (options: BENCH_ARGS="--help")
	@$(PYTHON) -m tools bench --baseline-model $(BASELINE_MODEL) $(BENCH_ARGS)

PROFILE_ARGS ?=
profile: setup $(MODEL) ## sample the Rasa server's CPU with py-spy while shoppers chat (options: PROFILE_ARGS="--help")
	@$(PYTHON) -m tools profile $(PROFILE_ARGS)

$(BASELINE_MODEL): $(INSTALLED) $(BASELINE_FILES)
	RASA_CACHE_DIRECTORY=.run/baseline-cache $(VENV)/bin/rasa train --config tools/baseline/config.yml \
	  --domain tools/baseline/domain.yml --data tools/baseline/data --out models/baseline --fixed-model-name baseline
	@touch $@

clean: ## remove the virtualenv, trained models and local databases
	rm -rf $(VENV) models/*.tar.gz models/baseline .rasa .run/baseline-cache .pytest_cache widget/node_modules
	rm -f wismo.db rasa_tracker.db
