# caas.backup: `make demo` runs the backup -> disaster -> recovery drill; `make test` runs every check.
# Both work on a fresh Debian machine as root: `make venv` installs what they need.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
PY := $(BIN)/python
COLLECTIONS := $(CURDIR)/.build/collections
LINK := $(COLLECTIONS)/ansible_collections/caas/backup
# awx.awx (playbooks/awx_configure.yml) from the `ansible` wheel on PyPI, which carries it: only that subtree is
# unpacked into COLLECTIONS, the wheel itself is never installed into the venv. Pinned by version and sha256.
ANSIBLE_WHEEL := ansible-12.3.0-py3-none-any.whl
ANSIBLE_WHEEL_SHA256 := cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414
AWX_COLLECTION := $(COLLECTIONS)/ansible_collections/awx/awx
# Outside the checkout: inside it, ansible-test would ask git, which ignores .build/.
# One per checkout, so two worktrees can run it at once.
SANITY_ROOT := $(or $(TMPDIR),/tmp)/caas-backup-sanity-$(shell echo $(CURDIR) | md5sum | cut -c1-8)/ansible_collections/caas/backup
APT_PACKAGES := redis-server age zstd git openssh-client kcat prometheus prometheus-alertmanager prometheus-node-exporter prometheus-pushgateway chromium
export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false
export ANSIBLE_PYTHON_INTERPRETER := $(PY)
export PYTHONDONTWRITEBYTECODE := 1
export NO_COLOR := 1
export ANSIBLE_NOCOLOR := 1

.PHONY: venv system-packages link awx-collection test demo lint changelog-lint sanity pytest molecule build doc bench clean

## venv: system packages (apt), .venv with pinned Python packages, the collection link, awx.awx. Idempotent.
venv: system-packages $(VENV)/.installed link awx-collection

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		for s in redis-server prometheus prometheus-alertmanager prometheus-node-exporter prometheus-pushgateway; do \
			systemctl disable --now $$s >/dev/null 2>&1 || true; done; \
	fi

$(VENV)/.installed: requirements.txt meta/ee-requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# Ansible finds the collection as ansible_collections/caas/backup: point that at this checkout.
link:
	@mkdir -p $(dir $(LINK)) && ln -sfn $(CURDIR) $(LINK)

awx-collection: $(AWX_COLLECTION)/MANIFEST.json

$(AWX_COLLECTION)/MANIFEST.json:
	mkdir -p $(CURDIR)/.build/wheels
	$(PY) -m pip download -q --no-deps --only-binary=:all: --dest $(CURDIR)/.build/wheels ansible==12.3.0
	echo "$(ANSIBLE_WHEEL_SHA256)  $(CURDIR)/.build/wheels/$(ANSIBLE_WHEEL)" | sha256sum --check --quiet
	rm -rf $(AWX_COLLECTION) && mkdir -p $(COLLECTIONS)
	cd $(COLLECTIONS) && unzip -q -o $(CURDIR)/.build/wheels/$(ANSIBLE_WHEEL) 'ansible_collections/awx/awx/*'
	touch $@

## test: every check, in the order a failure is cheapest to see.
test: venv lint changelog-lint sanity pytest molecule build doc

lint:
	ruff check plugins tests bench scripts

changelog-lint:
	antsibull-changelog lint

# ansible-test needs the collection at a physical ansible_collections/caas/backup path, so it runs on a
# copy of the tracked (and new, unignored) files. Offline from get-pip.py's host: ansible-test's cache is
# seeded with scripts/get_pip_shim.py, which installs pip from the wheel bundled with CPython.
sanity: venv
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	git ls-files -z -co --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(SANITY_ROOT)
	@pipver=$$($(PY) -c "import os,re,ansible_test; p=os.path.join(os.path.dirname(ansible_test.__file__),'_internal','python_requirements.py'); print(re.search(r\"pip='([0-9.]+)'\", open(p).read()).group(1).replace('.','_'))"); \
	mkdir -p $$HOME/.ansible/test/cache && cp scripts/get_pip_shim.py $$HOME/.ansible/test/cache/get_pip_$$pipver.py
	cd $(SANITY_ROOT) && ansible-test sanity --local --python 3.11 --color no

## pytest: unit tests, then integration tests against real services (started and stopped by the tests).
pytest: venv
	$(PY) -m pytest

## molecule: role scenarios on localhost, with the real services up for their duration.
molecule: venv
	scripts/with-services molecule test --all

build: venv
	ansible-galaxy collection build --force --output-path $(CURDIR)/.build/dist
	@! tar -tzf .build/dist/caas-backup-*.tar.gz | grep -E '(^|/)(\.venv|\.state|\.build|__pycache__)/' \
		|| (echo "the collection tarball holds build or state files" && false)

doc: venv
	ansible-doc caas.backup.config_backup > /dev/null
	ansible-doc caas.backup.config_restore > /dev/null
	ansible-doc caas.backup.s3_backup_prune > /dev/null
	ansible-doc caas.backup.backup_info > /dev/null
	ansible-doc caas.backup.backup_verify > /dev/null
	ansible-doc caas.backup.backup_notify > /dev/null
	ansible-doc caas.backup.backup_rekey > /dev/null
	ansible-doc caas.backup.backup_erasure > /dev/null
	ansible-doc caas.backup.redis_snapshot > /dev/null
	ansible-doc caas.backup.redis_restore > /dev/null
	ansible-doc caas.backup.kafka_topic_export > /dev/null
	ansible-doc caas.backup.kafka_topic_restore > /dev/null
	ansible-doc caas.backup.mongo_dump > /dev/null
	ansible-doc caas.backup.mongo_restore > /dev/null
	ansible-doc caas.backup.mongo_oplog_capture > /dev/null
	ansible-doc caas.backup.mongo_oplog_restore > /dev/null

## demo: services up, back up sample configuration to S3 (encrypted), destroy it, run dr.yml, compare.
demo: venv
	scripts/demo

## bench: throughput and memory ratios (not a test: prints numbers measured in one run).
bench: venv
	scripts/with-services bash -c '$(PY) bench/storage.py && $(PY) bench/prune.py && $(PY) bench/mongo.py && $(PY) bench/pitr.py'
	$(PY) bench/redis.py  # starts its own redis-server

clean:
	rm -rf .build .state tests/output
