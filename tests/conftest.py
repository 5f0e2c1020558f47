"""Shared fixtures: real data from ../shared, the verified Qwen2.5 tokenizer, synthesised row files."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("LOONGRL_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
DATA = os.path.join(SHARED, "data")
QWEN = os.path.join(DATA, "tokenizers", "qwen2.5")
INPUTS = {
    "hotpotqa": os.path.join(DATA, "hotpotqa", "hotpotqa_distractor_subset.json.gz"),
    "musique": os.path.join(DATA, "musique", "musique_ans_subset.jsonl.gz"),
    "2wikimqa": os.path.join(DATA, "2wikimqa", "2wikimqa_subset.json"),
}

if not os.path.isdir(DATA):
    raise RuntimeError(f"shared data not found at {DATA}: clone the project next to ../shared or set LOONGRL_SHARED")

if "MUTANT_UNDER_TEST" in os.environ and "LOONGRL_TEST_PRELOADED" not in os.environ:
    # `make mutation` forks each mutant's test run from a process that only collected the tests: import the
    # heavy libraries there, once (loading a tokenizer pulls in transformers' lazy modules), not per mutant.
    os.environ["LOONGRL_TEST_PRELOADED"] = "1"  # this file runs again in every forked run
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(QWEN)


@pytest.fixture(scope="session")
def counter():
    from loongrl.data.tokens import get_counter

    return get_counter(QWEN)


@pytest.fixture(scope="session")
def server():
    """A real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py); call reset() before use."""
    from openai_server import start_server

    srv = start_server()
    yield srv
    srv.shutdown()
    srv.server_close()


def _synth(tmp_path_factory, kind: str, source: str, **kw) -> str:
    from loongrl.data import SynthConfig, synthesize

    out = str(tmp_path_factory.mktemp(f"{kind}_{source}") / f"{kind}.parquet")
    cfg = SynthConfig(source=source, input=INPUTS[source], tokenizer=QWEN, keychain=(kind == "kc"),
                      seed=kw.pop("seed", 1), num=kw.pop("num", 6), **kw)
    summary = synthesize(cfg, out, progress=False)
    assert summary.written == cfg.num, summary.line()
    return out


@pytest.fixture(scope="session")
def kc_files(tmp_path_factory):
    """KeyChain rows at 16K for each source (6 rows each)."""
    return {s: _synth(tmp_path_factory, "kc", s) for s in INPUTS}


@pytest.fixture(scope="session")
def qa_files(tmp_path_factory):
    """Plain long-context QA rows at 16K for each source (6 rows each)."""
    return {s: _synth(tmp_path_factory, "qa", s) for s in INPUTS}


# Published config.json values of the shipped recipes' models (their Hugging Face model cards' config.json):
# Qwen2.5-7B/14B-Instruct have a 32K native window and no rope_scaling; the R1 distill of Qwen2.5-32B has 128K;
# Qwen3-30B-A3B-Thinking-2507 (MoE, 128 experts, 8 active) has 256K and no rope_scaling.
PUBLISHED_CONFIGS = {
    "Qwen/Qwen2.5-7B-Instruct": dict(num_attention_heads=28, num_key_value_heads=4, hidden_size=3584,
                                     intermediate_size=18944, num_hidden_layers=28, max_position_embeddings=32768),
    "Qwen/Qwen2.5-14B-Instruct": dict(num_attention_heads=40, num_key_value_heads=8, hidden_size=5120,
                                      intermediate_size=13824, num_hidden_layers=48, max_position_embeddings=32768),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": dict(num_attention_heads=40, num_key_value_heads=8, hidden_size=5120,
                                                     intermediate_size=27648, num_hidden_layers=64,
                                                     max_position_embeddings=131072),
    "Qwen/Qwen3-30B-A3B-Thinking-2507": dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
                                             num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                                             hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                                             num_experts=128, num_experts_per_tok=8, num_hidden_layers=48,
                                             vocab_size=151936, max_position_embeddings=262144),
}


def write_model_config(folder: str, tokenizer: bool = False, **values) -> str:
    """A model folder holding only config.json (Qwen2 architecture, `values` over Qwen2.5-7B-Instruct's published
    numbers) and, with `tokenizer`, the shared Qwen2.5 tokenizer files (linked)."""
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 152064, "rope_theta": 1e6,
              "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
              **PUBLISHED_CONFIGS["Qwen/Qwen2.5-7B-Instruct"], **values}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    if tokenizer:
        for name in os.listdir(QWEN):
            if name != "SOURCE.md":
                os.symlink(os.path.join(QWEN, name), os.path.join(folder, name))
    return folder


@pytest.fixture(scope="session")
def shipped_recipe_env(tmp_path_factory):
    """{LOONGRL_DATA, HF_HUB_CACHE} for the shipped recipes: 3 synthesized rows x 60 per data file they read (4K tokens,
    inside every stage's window; sft_traces with a gold completion) and a hub cache holding their models'
    published config.json (the Qwen2.5 ones with the shared Qwen2.5 tokenizer, which the family shares)."""
    from loongrl.data.io import iter_rows, write_rows

    root = tmp_path_factory.mktemp("shipped")
    data = root / "data"
    data.mkdir()
    for source in INPUTS:
        for kind in ("qa", "keychain"):
            path = _synth(tmp_path_factory, "kc" if kind == "keychain" else "qa", source, num=3,
                          max_prompt_tokens=4096)
            # 3 rows, each 60 times: every stage's pool holds a full batch (512 prompts for loongrl-7b's warm-up
            # from its 3 files), as the checks before launch require, without synthesizing hundreds of rows
            write_rows(str(data / f"{kind}_{source}.parquet"), list(iter_rows(path)) * 60)
        # QwenLong phase II reads (20K, 60K] rows; its model's tokenizer is not here, so lengths are not counted
        os.link(data / f"qa_{source}.parquet", data / f"qa60k_{source}.parquet")
    gold = [{"role": "assistant", "content": "<think>\n</think>\n\nThe answer is \\boxed{x}."}]
    write_rows(str(data / "sft_traces.parquet"),
               [dict(r, completion=gold) for r in iter_rows(str(data / "qa_hotpotqa.parquet"))])
    hub = root / "hub"
    for repo, values in PUBLISHED_CONFIGS.items():
        snapshot = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
        write_model_config(str(snapshot), tokenizer=repo.startswith("Qwen/"), **values)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    return {"LOONGRL_DATA": str(data), "HF_HUB_CACHE": str(hub)}


def read_rows(path: str) -> list[dict]:
    from loongrl.data.io import iter_rows

    return list(iter_rows(path))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's real-model inference: on 2 shared cores (another process, or the
    `transformers serve` child) more threads than free cores made inference ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (bf16 HF folder) from `loongrl model fetch` (cached outside the repo)."""
    from loongrl.generation.models import fetch

    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_server(smollm2, tmp_path_factory):
    """`transformers serve` on 127.0.0.1 serving the real SmolLM2 for the whole session (one torch
    thread: the machine's 2 cores are shared with the test process). Yields the ``openai:`` backend spec."""
    from loongrl.generation.serve import transformers_serve

    with transformers_serve(smollm2, str(tmp_path_factory.mktemp("serve") / "serve.log")) as base_url:
        yield f"openai:{base_url}#{smollm2}"


@pytest.fixture(scope="session")
def vllm_server(smollm2, tmp_path_factory):
    """vLLM's CPU build (.venv-vllm, which `make test` installs) serving the real SmolLM2 for the whole session,
    started as the project starts it (`loongrl.generation.serve.vllm_serve`: eager, no chunked prefill, one
    OpenMP thread, a 1 GiB KV cache). Yields the ``openai:`` backend spec."""
    from loongrl.generation.serve import vllm_python, vllm_serve

    if vllm_python() is None:
        pytest.skip("vLLM not installed: `make setup-vllm` builds .venv-vllm (`make test` does), or set "
                    "LOONGRL_VLLM_PYTHON")
    with vllm_serve(smollm2, str(tmp_path_factory.mktemp("vllm") / "vllm.log"), max_model_len=4096) as base_url:
        yield f"openai:{base_url}#{smollm2}"


# `make test` runs two pytest-xdist workers, one per core (`-n 2 --dist loadgroup --no-loadscope-reorder`). Each
# file is one group, so its module-scoped fixtures are built once; groups are handed out in the order below (the
# longest verl runs first, one per worker, then the vLLM-server files, then the rest), so the two workers finish
# together. At most two verl runs (Ray clusters) share the machine, one per worker.
LONGEST_FIRST = ("tests/test_train_verl_preflight.py", "tests/test_train_memory_agent_preflight.py",
                 "tests/test_train_qwenlong15_preflight.py", "tests/test_train_steps_resume.py")


def pytest_itemcollected(item):
    group = item.nodeid.split("::")[0]
    item.add_marker(pytest.mark.xdist_group(group))
    if os.environ.get("PYTEST_XDIST_WORKER") and not item.nodeid.endswith("@" + group):
        # xdist 3.8 groups by a suffix it writes to `item._nodeid` (xdist/remote.py:236-254), which pytest 9.2 no
        # longer reads (nodes.py:290-292: the id is `_id`): its groups were silently one test each, so a file's
        # module fixture was built on both workers (a 30-minute suite). Write the suffix where pytest 9.2 reads it.
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{group}")


def _schedule_order(item) -> tuple:
    path = item.nodeid.split("::")[0]
    return (LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST),
            not item.get_closest_marker("verl_cpu"), "vllm_server" not in getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(items):
    """Tests on the real model are slow (`-m "not slow"` leaves them out, as `make mutation` does)."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_schedule_order)  # stable: a file's tests keep their order
    if "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", ""):
        _cheapest_first(items)


# `make mutation` runs each mutant's tests with -x in a fresh process: cheap tests first, so that a killed
# mutant stops early and builds no expensive fixture. mutmut's stats run records each test's call time
# (mutants/mutmut-stats.json); the hooks below add each fixture's set-up time (mutants/fixture-seconds.json).
_FIXTURE_SECONDS: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    start = time.perf_counter()
    yield
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        seconds = time.perf_counter() - start
        _FIXTURE_SECONDS[fixturedef.argname] = max(seconds, _FIXTURE_SECONDS.get(fixturedef.argname, 0.0))


def pytest_sessionfinish(session):
    # mutmut reruns its stats for new tests only: merge with the times recorded before, never replace them
    if os.environ.get("MUTANT_UNDER_TEST") == "stats" and _FIXTURE_SECONDS:
        try:
            with open("fixture-seconds.json", encoding="utf-8") as f:
                seconds = json.load(f)
        except (OSError, ValueError):
            seconds = {}
        for name, value in _FIXTURE_SECONDS.items():
            seconds[name] = max(value, seconds.get(name, 0.0))
        with open("fixture-seconds.json.tmp", "w", encoding="utf-8") as f:
            json.dump(seconds, f)
        os.replace("fixture-seconds.json.tmp", "fixture-seconds.json")


def _cheapest_first(items) -> None:
    try:
        with open("mutmut-stats.json", encoding="utf-8") as f:
            durations = json.load(f)["duration_by_test"]
        with open("fixture-seconds.json", encoding="utf-8") as f:
            fixtures = json.load(f)
    except (OSError, ValueError, KeyError):
        return
    files = Counter()
    for item in items:
        files[item.nodeid.split("::")[0]] += durations.get(item.nodeid, 1.0)

    def cost(item):  # tests needing the same expensive fixtures stay together, a file's tests stay together
        setup = round(sum(fixtures.get(name, 0.0) for name in getattr(item, "fixturenames", ())))
        path = item.nodeid.split("::")[0]
        return setup, files[path], path, durations.get(item.nodeid, 1.0)

    items.sort(key=cost)


@contextlib.contextmanager
def ascii_locale():
    """LC_CTYPE "C" for the block: open() without an encoding would then read UTF-8 text wrongly or fail."""
    import locale

    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
