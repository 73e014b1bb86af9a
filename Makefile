# idtfv: improved dense trajectories -> Fisher vectors -> linear SVM (+ CNN baselines).
# `make` (or `make help`) lists the targets and variables. Stages are real files under $(CACHE)/$(DATASET)-<hash>/
# whose names carry a hash of the options that produce them (see "Result names" below), so make skips what is
# finished for these options; inside a stage, the runner skips finished videos (see idtfv/runner.py).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

#: DATASET       default | ucf101 | hmdb51 | folder | csv   (default: the built-in synthetic set)
DATASET ?= default
#: ROOT          dataset root: the video tree (ucf101, hmdb51, folder) or the CSV file (csv)
ROOT ?=
#: SPLIT_FILE    split file for DATASET=folder (optional; else a seeded group-aware split)
SPLIT_FILE ?=
#: SPLIT         split number used by encode / train-svm / train-deep
SPLIT ?= 1
#: JOBS          local worker processes per stage
JOBS ?= 2
#: CACHE         cache directory; stage files go to CACHE/DATASET-h/, names carry a hash h of their options
CACHE ?= cache
#: SCHEDULER     Dask scheduler address (tcp://127.0.0.1:8786) to run per-video stages on a cluster; Dask is
#:               unauthenticated unless secured with TLS: read docs/DASK.md before it listens on a network
SCHEDULER ?=
#: SEED          random seed of every stage
SEED ?= 0
#: PRESET        extractor preset: default (LEAR settings) | fast
PRESET ?= default
#: MODEL         deep model for train-deep (e.g. tsn, i3d, slowfast, tsm)
MODEL ?= tsn
#: MODALITY      deep input: rgbdiff | rgb | flow | warped_flow (rgbdiff needs no flow pass)
MODALITY ?= rgbdiff
#: ALLOW_FAILED  set to 1 to accept videos that failed (they stay listed in the stage's index.csv)
ALLOW_FAILED ?=
#: REFRESH       set to 1 after replacing videos in place: the per-video stages run again and recompute only the
#:               videos whose file changed (and the codebooks, vectors and SVMs that depend on them)
REFRESH ?=
#: STREAMING     set to 1 for the streaming mode: features keeps only a per-video sample (--store sample; add
#:               FEATURES_ARGS="--subset 0.1" to sample 10% of SPLIT's training videos), encode extracts and
#:               encodes each video in one step (--streaming); raw descriptors are never stored. Own *_streaming files.
STREAMING ?=
#: *_ARGS        extra options: FEATURES_ARGS ENCODE_ARGS SVM_ARGS CV_ARGS FLOW_ARGS DEEP_ARGS PYTEST_ARGS
FEATURES_ARGS ?=
ENCODE_ARGS ?=
SVM_ARGS ?=
CV_ARGS ?=
FLOW_ARGS ?=
DEEP_ARGS ?=
#: DETECT_ARGS   extra idtfv detect options (e.g. --windows 1,2,4 --nms-iou 0.4)
DETECT_ARGS ?=
PYTEST_ARGS ?=
#: TEST_JOBS     pytest-xdist processes for `make test`
TEST_JOBS ?= 2
#: PYTHON        interpreter that creates the virtualenv
PYTHON ?= python3
#: VENV          virtualenv directory
VENV ?= .venv

INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test
INSTALLED_DEEP := $(VENV)/.installed-deep
IDTFV := $(VENV)/bin/idtfv

# Result names. A stage's output name carries a short hash of every variable that changes its result, chained (each
# hash includes the upstream stage's): a changed option reruns exactly the stages it affects, into new files, and
# the results of other options stay (switching back reruns nothing). Run-environment variables (JOBS, SCHEDULER,
# ALLOW_FAILED, CACHE, VENV) are left out: they do not change results. $(call hash,TEXT) = 8 hex digits of the
# POSIX cksum of TEXT (no virtualenv needed).
hash = $(shell printf '%s' '$(subst ','\'',$(strip $(1)))' | cksum | awk '{printf "%08x", $$1}')
# $(call quote,TEXT) = TEXT as one shell word (single-quoted): ROOT=/data/My Videos stays one path.
quote = '$(subst ','\'',$(1))'
# A variable given on the command line that this Makefile does not read (a typo, or K=64 for ENCODE_ARGS="--k 64")
# would be ignored without a word: refuse it in one line. The variables are those declared above with ?=. Only the
# make the user typed checks (MAKELEVEL 0): another Makefile running this one passes its own variables down too.
DECLARED := $(shell sed -n 's/^\([A-Z_]*\) ?=.*/\1/p' '$(lastword $(MAKEFILE_LIST))')
UNKNOWN := $(if $(filter 0,$(MAKELEVEL)),$(filter-out $(DECLARED),$(foreach v,$(.VARIABLES),$(if $(filter \
  command line,$(origin $(v))),$(v)))))
ifneq ($(UNKNOWN),)
$(error error: $(firstword $(UNKNOWN))=$($(firstword $(UNKNOWN))): this Makefile reads no variable $(firstword \
  $(UNKNOWN)) (make help lists them); a stage's own options go in its *_ARGS, e.g. ENCODE_ARGS="--k 64")
endif
# make cannot name files on a path with spaces (targets are space-separated): say so instead of failing oddly.
ifneq ($(words $(CACHE)),1)
$(error error: CACHE="$(CACHE)": make cannot use a cache directory whose path has spaces; pick another CACHE (ROOT and SPLIT_FILE may have spaces))
endif
# Each *_ARGS adds a command's own options after those this Makefile passes; repeating one of those (the last value
# wins) would make an output whose name (keyed by SPLIT, SEED, ...) describes other options than its content, e.g.
# split-2 vectors in fisher_split1-*.npz: refuse it in one line, naming the variable to set instead.
OWN_FEATURES_ARGS := --manifest --cache --out --jobs --scheduler --preset --seed
OWN_ENCODE_ARGS := --manifest --features --split --cache --out --jobs --scheduler --seed
OWN_SVM_ARGS := --manifest --features --split --out --jobs --seed
OWN_CV_ARGS := --manifest --features --cache --out --jobs --scheduler --seed
OWN_FLOW_ARGS := --manifest --out --jobs --scheduler
OWN_DEEP_ARGS := --manifest --model --modality --split --out --seed --rawframes
OWN_DETECT_ARGS := --manifest --features --vectors --svm --annotations --out
OWN_VAR--split := SPLIT
OWN_VAR--seed := SEED
OWN_VAR--preset := PRESET
OWN_VAR--jobs := JOBS
OWN_VAR--scheduler := SCHEDULER
OWN_VAR--model := MODEL
OWN_VAR--modality := MODALITY
# $(call own_option,VAR) = the first option of $(VAR) that make passes to that command itself (--split or --split=2)
own_option = $(firstword $(foreach o,$(OWN_$(1)),$(filter $(o) $(o)=%,$($(1)))))
$(foreach v,FEATURES_ARGS ENCODE_ARGS SVM_ARGS CV_ARGS FLOW_ARGS DEEP_ARGS DETECT_ARGS,$(if $(call own_option,$(v)),\
  $(eval OWN_BAD := $(firstword $(subst =, ,$(call own_option,$(v)))))$(error error: $(v)="$($(v))": make passes \
  $(OWN_BAD) to that command itself$(if $(OWN_VAR$(OWN_BAD)), (from $(OWN_VAR$(OWN_BAD))); leave it out of $(v) \
  and set $(OWN_VAR$(OWN_BAD))=... instead, (its place in the cache); leave it out of $(v)))))
# STREAMING=1 (or yes/true) switches features + encode to the streaming mode, with its own stamp and outputs.
STREAM := $(if $(filter 1 yes true,$(STREAMING)),_streaming)
FEATURES_MODE := $(if $(STREAM), --store sample --split $(SPLIT))
ENCODE_MODE := $(if $(STREAM), --streaming)
# A --subset sample is drawn from SPLIT's training videos: one sample per split (a full sample serves every split).
FEATURES_SPLIT := $(if $(and $(STREAM),$(findstring --subset,$(FEATURES_ARGS))),_split$(SPLIT))

# The package's version joins the hash of every stage that runs its code (encode, train-svm, cv and detect follow
# through the chain), as it joins the stage runner's cache keys: results of another version are not taken as done.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' idtfv/__init__.py)
# dataset: the manifest (and, for DATASET=default, the generated videos) in a directory of its own.
H_DATA := $(call hash,dataset kind=$(DATASET) root=$(if $(ROOT),$(abspath $(ROOT))) \
  split_file=$(if $(SPLIT_FILE),$(abspath $(SPLIT_FILE))) seed=$(SEED))
DATA := $(CACHE)/$(DATASET)-$(H_DATA)
MANIFEST := $(DATA)/manifest.csv
H_FEATURES := $(call hash,$(H_DATA) features version=$(VERSION) preset=$(PRESET) seed=$(SEED) \
  mode=$(STREAM)$(FEATURES_SPLIT) args=$(FEATURES_ARGS))
FEATURES := $(DATA)/features$(STREAM)$(FEATURES_SPLIT)-$(H_FEATURES).json
H_FISHER := $(call hash,$(H_FEATURES) encode split=$(SPLIT) seed=$(SEED) mode=$(STREAM) args=$(ENCODE_ARGS))
FISHER := $(DATA)/fisher_split$(SPLIT)$(STREAM)-$(H_FISHER).npz
H_SVM := $(call hash,$(H_FISHER) train-svm seed=$(SEED) args=$(SVM_ARGS))
SVM_DIR := $(DATA)/svm_split$(SPLIT)$(STREAM)-$(H_SVM)
SVM_REPORT := $(SVM_DIR)/report.json
H_FLOW := $(call hash,$(H_DATA) flow version=$(VERSION) args=$(FLOW_ARGS))
RAWFRAMES := $(DATA)/rawframes-$(H_FLOW)
FLOW_DONE := $(RAWFRAMES).done
# warped_flow is computed on the fly from the frames (the extractor's homography); only MODALITY=flow reads rawframes flow.
NEEDS_FLOW := $(filter flow,$(MODALITY))
H_DEEP := $(call hash,$(if $(NEEDS_FLOW),$(H_FLOW),$(H_DATA)) train-deep version=$(VERSION) model=$(MODEL) \
  modality=$(MODALITY) split=$(SPLIT) seed=$(SEED) args=$(DEEP_ARGS))
DEEP_DIR := $(DATA)/$(MODEL)_$(MODALITY)_split$(SPLIT)-$(H_DEEP)
DEEP_DONE := $(DEEP_DIR).done
# cv: every fold's codebook, vectors and SVM (encode options from ENCODE_ARGS, folds and SVM options from CV_ARGS).
H_CV := $(call hash,$(H_FEATURES) cv seed=$(SEED) encode=$(ENCODE_ARGS) args=$(CV_ARGS))
CV_DIR := $(DATA)/cv-$(H_CV)
CV_REPORT := $(CV_DIR)/report.json
# detect: the untrimmed synthetic set (DATASET=default only), its features, then windows scored by SVM_DIR's SVMs.
UNTRIMMED := $(DATA)/untrimmed-$(call hash,untrimmed seed=$(SEED))
H_UFEATURES := $(call hash,$(H_DATA) untrimmed features version=$(VERSION) preset=$(PRESET) seed=$(SEED) \
  args=$(FEATURES_ARGS))
UFEATURES := $(UNTRIMMED)/features-$(H_UFEATURES).json
H_DETECT := $(call hash,$(H_SVM) $(H_UFEATURES) detect report=2 args=$(DETECT_ARGS))
DETECT_DIR := $(DATA)/detect_split$(SPLIT)-$(H_DETECT)
DETECT_REPORT := $(DETECT_DIR)/report.json

# Prints the scalar entries (accuracy, mAP, ...) of a report.json.
define REPORT_SUMMARY
import json, sys
report = json.load(open(sys.argv[1]))
for key, value in report.items():
    if isinstance(value, (int, float, str)):
        print(f"  {key}: {value}")
endef
export REPORT_SUMMARY

# Refuses a SPLIT that the manifest does not have, before the features of a goal that uses it are extracted
# (encode used to say so only after every video's features were done: hours on UCF101).
define CHECK_SPLIT
import sys
from idtfv.data import read_manifest
from idtfv.errors import IdtfvError
if not sys.argv[2].isdigit():
    sys.exit(f"error: SPLIT={sys.argv[2]}: expected a split number (1, 2, ...); set SPLIT=1")
try:
    read_manifest(sys.argv[1]).split(int(sys.argv[2]), "train")
except (IdtfvError, OSError) as exc:
    sys.exit(f"error: SPLIT={sys.argv[2]}: {exc}")
endef
export CHECK_SPLIT
# the goals whose recipes read SPLIT after the features stage (demo runs train-svm in a sub-make)
SPLIT_GOALS := encode train-svm detect
SPLIT_CHECK := $(if $(filter $(SPLIT_GOALS),$(MAKECMDGOALS)),check-split)

RUNNER_OPTS := --jobs $(JOBS)$(if $(SCHEDULER), --scheduler $(SCHEDULER))$(if $(ALLOW_FAILED), --allow-failed)

.PHONY: FORCE check-split help install install-test features encode train-svm cv detect demo flow train-deep test \
  test-fast bench clean distclean

help: ## show this help
	@echo "usage: make TARGET [VARIABLE=value ...]"
	@echo
	@echo "targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "variables:"
	@awk '/^#: / {sub(/^#: /, ""); print "  " $$0}' $(MAKEFILE_LIST)
	@echo
	@echo "  now: DATASET=$(DATASET) ROOT=$(ROOT) SPLIT=$(SPLIT) JOBS=$(JOBS) CACHE=$(CACHE) SEED=$(SEED)"

# --------------------------------------------------------------------------------------------- install
install: $(INSTALLED) ## create the virtualenv (VENV) and install idtfv (editable, no extras: what the demo uses)

install-test: $(INSTALLED_TEST) ## install idtfv with its test and deep extras (what make test uses)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e .
	touch $@

# torch first, pinned: the local CPU wheel (an unpinned torch would pull a CUDA build).
$(INSTALLED_DEEP): $(INSTALLED)
	$(VENV)/bin/python -m pip install torch==2.13.0
	$(VENV)/bin/python -m pip install -e '.[deep]'
	touch $@

$(INSTALLED_TEST): $(INSTALLED_DEEP)
	$(VENV)/bin/python -m pip install -e '.[test,deep]'
	touch $@

# --------------------------------------------------------------------------------------------- pipeline stages
features: $(FEATURES) ## extract iDT features of every video (resumable) -> CACHE/DATASET-h/features-h.json

encode: $(FISHER) ## PCA + GMM + Fisher vectors -> CACHE/DATASET-h/fisher_splitSPLIT-h.npz

train-svm: $(SVM_REPORT) ## linear SVM: scores, report.json, confusion -> CACHE/DATASET-h/svm_splitSPLIT-h/
	@echo "report: $(SVM_REPORT)"
	@if [ -f $(SVM_DIR)/confusion.png ]; then echo "confusion matrix: $(SVM_DIR)/confusion.png"; fi
	@$(VENV)/bin/python -c "$$REPORT_SUMMARY" $(SVM_REPORT)

cv: $(CV_REPORT) ## cross-validation (CV_ARGS="--scheme kfold --n-folds 10"; default: every split) -> CACHE/DATASET-h/cv-h/
	@echo "report: $(CV_REPORT)"
	@echo "pooled confusion matrix: $(CV_DIR)/confusion.png, $(CV_DIR)/confusion.json"
	@$(VENV)/bin/python -c "$$REPORT_SUMMARY" $(CV_REPORT)

demo: ## features -> encode -> train-svm on the built-in default dataset; prints where report.json is
	@$(MAKE) train-svm DATASET=default

flow: $(FLOW_DONE) ## optical-flow rawframes of every video -> CACHE/DATASET-h/rawframes-h/

train-deep: $(DEEP_DONE) ## train + test a CNN baseline -> CACHE/DATASET-h/MODEL_MODALITY_splitSPLIT-h/

detect: $(DETECT_REPORT) ## temporal detection on the untrimmed synthetic set (THUMOS mAP) -> CACHE/DATASET-h/detect_*/
	@echo "report: $(DETECT_REPORT)"
	@$(VENV)/bin/python -c "$$DETECT_SUMMARY" $(DETECT_REPORT)

$(MANIFEST): | $(INSTALLED)
	$(IDTFV) dataset --kind $(DATASET)$(if $(ROOT), --root $(call quote,$(ROOT)))$(if $(SPLIT_FILE), --split-file \
	  $(call quote,$(SPLIT_FILE))) \
	  --seed $(SEED) --jobs $(JOBS) --out $@

# REFRESH=1: the stage runs although its stamp is newer than the manifest (a replaced video changes no file make sees)
REFRESH_DEP := $(if $(filter 1 yes true,$(REFRESH)),FORCE)
FORCE:

check-split: $(MANIFEST) | $(INSTALLED)
	@$(VENV)/bin/python -c "$$CHECK_SPLIT" $(MANIFEST) $(SPLIT)

$(FEATURES): $(MANIFEST) $(REFRESH_DEP) | $(INSTALLED) $(SPLIT_CHECK)
	$(IDTFV) features --manifest $(MANIFEST) --cache $(DATA) --out $@ $(RUNNER_OPTS) \
	  --preset $(PRESET) --seed $(SEED)$(FEATURES_MODE) $(FEATURES_ARGS)

ENCODE_CMD = $(IDTFV) encode --manifest $(MANIFEST) --features $(FEATURES) --split $(SPLIT) --cache $(DATA) \
  --out $(FISHER) --jobs $(JOBS)$(if $(SCHEDULER), --scheduler $(SCHEDULER)) --seed $(SEED)$(ENCODE_MODE) $(ENCODE_ARGS)

$(FISHER): $(FEATURES) $(MANIFEST) | $(INSTALLED)
	$(ENCODE_CMD)

$(SVM_REPORT): $(FISHER) $(MANIFEST) | $(INSTALLED)
	$(IDTFV) train-svm --manifest $(MANIFEST) --features $(FISHER) --split $(SPLIT) --out $(SVM_DIR) \
	  --jobs $(JOBS) --seed $(SEED) $(SVM_ARGS)
	test -f $@ || { echo "error: train-svm wrote no $@" >&2; exit 1; }

$(CV_REPORT): $(FEATURES) $(MANIFEST) | $(INSTALLED)
	$(IDTFV) cv --manifest $(MANIFEST) --features $(FEATURES) --cache $(DATA) --out $(CV_DIR) \
	  --jobs $(JOBS)$(if $(SCHEDULER), --scheduler $(SCHEDULER)) --seed $(SEED) $(ENCODE_ARGS) $(CV_ARGS)
	test -f $@ || { echo "error: cv wrote no $@" >&2; exit 1; }

$(FLOW_DONE): $(MANIFEST) $(REFRESH_DEP) | $(INSTALLED)
	$(IDTFV) flow --manifest $(MANIFEST) --out $(RAWFRAMES) $(RUNNER_OPTS) $(FLOW_ARGS)
	touch $@

$(DEEP_DONE): $(MANIFEST) $(if $(NEEDS_FLOW),$(FLOW_DONE)) | $(INSTALLED_DEEP)
	$(IDTFV) train-deep --manifest $(MANIFEST) --model $(MODEL) --modality $(MODALITY) --split $(SPLIT) \
	  --out $(DEEP_DIR) --seed $(SEED)$(if $(NEEDS_FLOW), --rawframes $(RAWFRAMES)) $(DEEP_ARGS)
	touch $@

define DETECT_SUMMARY
import json, sys
from idtfv.classify import summary_line
print("  " + summary_line(json.load(open(sys.argv[1]))))
endef
export DETECT_SUMMARY

$(UNTRIMMED)/manifest.csv: | $(INSTALLED)
	@if [ "$(DATASET)" != default ]; then echo "error: make detect needs DATASET=default (the untrimmed synthetic set)" >&2; exit 2; fi
	$(IDTFV) dataset-untrimmed --seed $(SEED) --out $@

$(UFEATURES): $(UNTRIMMED)/manifest.csv | $(INSTALLED)
	$(IDTFV) features --manifest $< --cache $(UNTRIMMED) --out $@ $(RUNNER_OPTS) --preset $(PRESET) --seed $(SEED) \
	  $(FEATURES_ARGS)

# The codebook and pyramid are those of the encode run train-svm followed: idtfv encode records them beside
# $(FISHER) (.json). An encode output older than these records gets one from running encode again (its codebook and
# vectors are cached: seconds, the same bytes).
FISHER_RECORD := $(FISHER:.npz=.json)
$(FISHER_RECORD): | $(FISHER)
	$(ENCODE_CMD)

$(DETECT_REPORT): $(SVM_REPORT) $(UFEATURES) | $(INSTALLED) $(FISHER_RECORD)
	$(IDTFV) detect --manifest $(UNTRIMMED)/manifest.csv --features $(UFEATURES) --vectors $(FISHER) \
	  --svm $(SVM_DIR) --annotations $(UNTRIMMED)/annotations.csv --out $(DETECT_DIR) $(DETECT_ARGS)
	test -f $@ || { echo "error: detect wrote no $@" >&2; exit 1; }

# --------------------------------------------------------------------------------------------- checks
test: $(INSTALLED_TEST) ## install with the test and deep extras, then run the whole test suite (TEST_JOBS processes)
	$(VENV)/bin/python -m pytest -q -n $(TEST_JOBS) $(PYTEST_ARGS)

test-fast: $(INSTALLED_TEST) ## the inner loop: the suite without the tests marked slow (under 2 minutes)
	$(VENV)/bin/python -m pytest -q -n $(TEST_JOBS) -m "not slow" $(PYTEST_ARGS)

bench: $(INSTALLED_TEST) ## run every bench/bench_*.py (results in bench/RESULTS.md), then copy README's tables from it
	status=0; \
	for script in bench/bench_*.py; do \
	  echo "== $$script"; \
	  $(VENV)/bin/python "$$script" || { echo "FAILED: $$script" >&2; status=1; }; \
	done; \
	$(VENV)/bin/python bench/readme.py --goals || status=1; \
	exit $$status

clean: ## remove CACHE (datasets, features, models) and test/bench leftovers; keeps VENV
	rm -rf -- $(CACHE) .pytest_cache bench/out

distclean: clean ## also remove the virtualenv (VENV)
	rm -rf -- $(VENV)
