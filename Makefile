# The two commands: `make run` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint format browser pdflibs migrate demo bench

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	# face_recognition asks for `dlib`, which builds from source for 14 minutes;
	# the pinned list brings the dlib-bin wheel instead, so no resolver runs.
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0

demo: migrate
	$(BIN)/python manage.py seed_demo

run: demo pdflibs
	bin/run

# Debian's Chromium for the browser tests; Playwright cannot download its own here.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-dejavu-core) >/dev/null; \
	  else echo "Chromium is missing: install Debian's chromium package, or the browser tests will skip."; fi; \
	fi

# Pango and HarfBuzz for WeasyPrint, which prints the disclosure PDF in the worker. Never fatal: when apt is
# locked, offline or absent this warns and `make run` goes on; the portal then runs, and a disclosure report is
# made as HTML with a message that its PDF could not be printed.
PDF_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
pdflibs:
	@libs="$$($$(command -v ldconfig || echo /sbin/ldconfig) -p 2>/dev/null)"; \
	if ! echo "$$libs" | grep -q 'libpango-1.0.so.0' || ! echo "$$libs" | grep -q 'libpangoft2-1.0.so.0' \
	    || ! echo "$$libs" | grep -q 'libharfbuzz-subset.so.0'; then \
	  missing="Pango is missing, so disclosure reports will have no PDF (their HTML is still made)"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    if ! out="$$( (timeout 300 apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	        timeout 600 apt-get install -y -q $(PDF_PACKAGES)) 2>&1)"; then \
	      echo "warning: $$missing. apt-get could not install it:"; \
	      echo "$$out" | grep -E '^(E|W):' | tail -n 3 | sed 's/^/  /'; \
	      echo "  Run \`make pdflibs\` again once apt is free, or install $(PDF_PACKAGES)."; \
	    fi; \
	  else echo "warning: $$missing. Install Debian's $(PDF_PACKAGES)."; fi; \
	fi

test: install browser pdflibs
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/search.py
	$(BIN)/python bench/ingest.py
