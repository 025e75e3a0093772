# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= runs/demo

.PHONY: setup demo test test-arm64 test-int8 lint format clean

$(VENV)/.installed: pyproject.toml
	@bash tools/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,device,dev]"
	touch $@

setup: $(VENV)/.installed

# End to end on the embedded sample data: data -> train -> evaluate -> export int8 -> device loop
# -> benchmark -> SHAP report.
demo: setup
	$(BIN)/edgecls data sample casting --out $(DEMO)/data
	$(BIN)/edgecls train --data $(DEMO)/data --model seed-cnn --img-size 96 --epochs 8 --out $(DEMO)/run
	$(BIN)/edgecls evaluate $(DEMO)/run/model.keras --data $(DEMO)/data/test --out $(DEMO)/eval
	$(BIN)/edgecls predict $(DEMO)/run/model.keras $(DEMO)/data/test/def/def_0000.jpg $(DEMO)/data/test/ok/ok_0000.jpg
	$(BIN)/edgecls export $(DEMO)/run --int8 --out $(DEMO)/bundle
	$(BIN)/edgecls parity $(DEMO)/bundle --data $(DEMO)/data/test --record
	$(BIN)/edgecls run $(DEMO)/bundle --source $(DEMO)/data/test/def --headless --json --max-frames 10
	$(BIN)/edgecls benchmark $(DEMO)/bundle --data $(DEMO)/data/test --runs 30
	$(BIN)/edgecls explain $(DEMO)/run --images '$(DEMO)/data/test/def/def_000[0-7].jpg' --out $(DEMO)/shap
	@echo "demo done: open $(DEMO)/shap/report.html and $(DEMO)/bundle/parity.md"

lint: setup lint-device
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest --ignore=tests/arm64
	$(MAKE) test-arm64

# The device loop and parity on an emulated Raspberry Pi 4 and 5 (aarch64 under qemu-user),
# compared with x86; builds its arm64 root once into ~/.cache/edgecls/arm64.
test-arm64: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests/arm64 -s -v -p no:cacheprovider

# What differs on this CPU before CI sees it: its integer-kernel features (AVX2, AVX-512, VNNI; ARM
# dot product) and what ONNX Runtime's int8 kernels do with them, then the integer-kernel tests.
test-int8: setup
	@$(BIN)/edgecls doctor --json | $(BIN)/python -c \
	  'import json, sys; print("CPU int8 kernels:", json.load(sys.stdin)["cpu_int8"])'
	$(BIN)/pytest -m int8 --ignore=tests/arm64

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs reports

# The board kit: install.sh shellcheck-clean, and the systemd unit exactly as install.sh would
# install it passes `systemd-analyze verify` and rates 4.5 or lower (45 on the --threshold scale)
# on `systemd-analyze security`, for a Pi and for a Jetson (which lifts the device filter).
.PHONY: lint-device
lint-device: setup
	shellcheck device/install.sh
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	for board in pi jetson; do \
	  bash device/install.sh --print-unit --board $$board --venv "$(CURDIR)/$(VENV)" \
	    > "$$dir/edgecls.service"; \
	  systemd-analyze verify "$$dir/edgecls.service"; \
	  systemd-analyze security --offline=yes --threshold=45 "$$dir/edgecls.service" \
	    > "$$dir/security.txt" || { cat "$$dir/security.txt"; exit 1; }; \
	  echo "edgecls.service ($$board): $$(tail -n 1 "$$dir/security.txt")"; \
	done
