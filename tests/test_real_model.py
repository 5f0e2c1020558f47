"""The real SmolLM2-135M-Instruct, in process (hf:) and served by a real `transformers serve` (openai:):
evaluation (NIAH, RULER with its answer prefill, the project's KeyChain rows), the difficulty filter,
a hard-mining sampling pass, and the judge meeting a real model's malformed verdicts.

Kept small (few items, 1-2K tokens, short outputs): it runs in `make test` on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import INPUTS

from loongrl.cli import main

NEW_TOKENS = "20"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _eval(kind: str, backend: str, out: str, *args: str) -> dict:
    assert main(["eval", kind, "--backend", backend, "--out", out, "--quiet", "--batch-size", "1",
                 "--concurrency", "2", "--max-new-tokens", NEW_TOKENS, *args]) == 0
    return json.load(open(os.path.join(out, f"{kind}.json")))


def _both(kind: str, smollm2: str, served: str, out, *args: str) -> tuple[dict, dict]:
    """The same evaluation in process and through the server, side by side (one core each)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401 - transformers' lazy imports
    # are not thread-safe: resolve them here, before two threads need them.

    with ThreadPoolExecutor(1) as pool:
        remote = pool.submit(_eval, kind, served, str(out / "served"), *args)
        local = _eval(kind, f"hf:{smollm2}", str(out / "hf"), *args)
        return local, remote.result()


def _responses(report: dict) -> dict[str, list[str]]:
    return {r["id"]: [s["response"] for s in r["samples"]] for r in report["records"]}


def test_niah_in_process_and_served_agree_and_find_the_needle(smollm2, smollm2_server, tmp_path):
    grid = ["--min-len", "1000", "--max-len", "2000", "--num-lengths", "2", "--num-depths", "2"]
    local, served = _both("niah", smollm2, smollm2_server, tmp_path, *grid)
    assert local["summary"]["lengths"] == [1000, 2000] and len(local["records"]) == 4
    assert _responses(served) == _responses(local)  # greedy, same weights and prompts: the same text
    assert local["summary"]["average"] == served["summary"]["average"] >= 75.0  # SmolLM2 reads 1-2K contexts
    assert all(1000 * 0.9 <= r["meta"]["prompt_tokens"] <= 2000 for r in local["records"])
    assert os.path.getsize(tmp_path / "served" / "niah.png") > 10_000


def test_longbench_in_process_and_served_agree(smollm2, smollm2_server, tmp_path):
    from longbench_rows import rows, write

    folder = str(tmp_path / "lb")
    write(folder, "musique", rows("musique", "musique", 1))
    local, served = _both("longbench", smollm2, smollm2_server, tmp_path, "--data", folder, "--datasets", "musique",
                          "--max-input-tokens", "600")
    assert all(r["meta"]["truncated"] for r in local["records"]) and len(served["records"]) == 1
    assert _responses(served) == _responses(local)
    # the same 8K window, read from the folder's config.json both times; only its rope scaling is said differently
    local_window, served_window = local["summary"].pop("window"), served["summary"].pop("window")
    assert local_window["tokens"] == served_window["tokens"] == 8192 and served["summary"] == local["summary"]
    assert (local_window["rope_scaling"], served_window["rope_scaling"]) == (
        "none", "the server's (set where it was started)")


def test_ruler_prefill_runs_against_transformers_serve(smollm2, smollm2_server, tmp_path, capsys):
    tasks = ["--tasks", "niah_single_1", "vt", "--lengths", "1024", "--num-samples", "1"]
    local, served = _both("ruler", smollm2, smollm2_server, tmp_path, *tasks)
    # transformers serve rejects continue_final_message (HTTP 422); the backend says so and continues
    # through /v1/completions with SmolLM2's chat template rendered locally.
    assert "rejected the extension: HTTP 422: Unexpected fields in the request" in capsys.readouterr().err
    assert all(r["samples"][0]["response"] for r in served["records"])
    assert _responses(served) == _responses(local)
    assert set(served["summary"]["scores"]) == {"niah_single_1", "vt"}
    assert all(r["meta"]["prompt_tokens"] <= 1024 for r in served["records"])


@pytest.fixture(scope="module")
def smollm2_keychain(smollm2, tmp_path_factory):
    """KeyChain rows measured with SmolLM2's own tokenizer (1,024-token budget)."""
    from loongrl.data import SynthConfig, synthesize

    out = str(tmp_path_factory.mktemp("kc_smollm2") / "keychain_smollm2.parquet")
    cfg = SynthConfig(source="hotpotqa", input=INPUTS["hotpotqa"], tokenizer=smollm2, keychain=True,
                      max_prompt_tokens=1024, seed=1, num=3)
    summary = synthesize(cfg, out, progress=False)
    assert summary.written == 3, summary.line()
    return out


def test_eval_rows_on_keychain_rows_in_process_and_served(smollm2, smollm2_server, smollm2_keychain, tmp_path):
    from conftest import read_rows

    from loongrl.rewards.router import row_scorer

    args = [smollm2_keychain, "--no-require-think"]
    local, served = _both("rows", smollm2, smollm2_server, tmp_path, *args)
    assert _responses(served) == _responses(local)
    rows = read_rows(smollm2_keychain)
    # every sample carries the shared scorer's verdict on its response
    responses = [r["samples"][0]["response"] for r in served["records"]]
    shared = row_scorer({"require_think": False})(rows, responses)
    assert [r["samples"][0]["acc"] for r in served["records"]] == [s["acc"] for s in shared]
    summary = served["summary"]
    assert summary["overall"]["items"] == 3 and set(summary["breakdowns"]) == {"source", "length", "depth"}
    assert list(summary["breakdowns"]["source"]) == ["keychain_hotpotqa"]
    assert sum(g["items"] for g in summary["breakdowns"]["depth"].values()) == 3
    # the rows were measured with SmolLM2's tokenizer: the prompt the model saw has the recorded length
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    seen = [len(tok.apply_chat_template(list(r["prompt"]), add_generation_prompt=True, tokenize=True, return_dict=False))
            for r in rows]
    assert seen == [r["meta"]["prompt_tokens"] for r in served["records"]] and max(seen) <= 1024
    md = open(tmp_path / "served" / "rows.md").read()
    assert "| all | 3 |" in md and "data source: keychain_hotpotqa" in md
    # resumable: a rerun generates nothing (no line appended to the samples file) and reports the same
    samples = tmp_path / "served" / "samples_keychain_smollm2.jsonl"
    before = samples.read_bytes()
    assert _eval("rows", smollm2_server, str(tmp_path / "served"), *args)["summary"] == summary
    assert samples.read_bytes() == before


def test_difficulty_filter_through_the_served_model(smollm2_server, tmp_path):
    from loongrl.data.filter import FilterConfig, difficulty_filter
    from loongrl.generation.backends import make_backend

    raw = json.load(open(INPUTS["2wikimqa"]))[:2]
    small = tmp_path / "two.json"
    small.write_text(json.dumps(raw))
    backend = make_backend(smollm2_server, concurrency=2, timeout_s=120)
    out = str(tmp_path / "ids.txt")
    cfg = FilterConfig(k=2, max_new_tokens=16, batch_size=2)
    stats = difficulty_filter("2wikimqa", str(small), backend, cfg, out)
    assert stats["items"] == 2 and sum(stats["first_pass_correct_histogram"].values()) == 2
    cached = [json.loads(line) for line in open(out + ".cache.jsonl")]
    assert len(cached) == 2 and all(len(c["predictions"]) == 2 for c in cached)
    assert stats["kept"] == len(open(out).read().split())


def test_hard_mining_sampling_pass_in_process(smollm2, smollm2_keychain):
    from conftest import read_rows

    from loongrl.generation.backends import SamplingConfig, TransformersBackend
    from loongrl.generation.sample import score_items
    from loongrl.rewards.router import row_scorer
    from loongrl.train.transitions import hard_mine

    rows = read_rows(smollm2_keychain)[:1]
    backend = TransformersBackend(smollm2, batch_size=1)
    sampling = SamplingConfig(n=2, temperature=1.0, top_p=0.95, max_new_tokens=12, seed=3)
    items = score_items(rows, backend, sampling, row_scorer({"require_think": False}))
    assert [i["n"] for i in items] == [2] and items[0]["mean_chars"] > 0
    # SmolLM2 never boxes an answer to a KeyChain question (real-model.md): nothing is solved, all is kept
    kept, stats = hard_mine(rows, items, 1.0)
    assert items[0]["mean_acc"] == 0.0
    assert kept == rows and stats["by_source"] == {"keychain_hotpotqa": {"kept_unsolved": 1}}


def test_judge_meets_a_real_models_malformed_verdicts(smollm2, smollm2_server):
    from loongrl.rewards import compute_score
    from loongrl.rewards.judge import JudgeConfig, LLMJudge

    base_url = smollm2_server[len("openai:"):].split("#")[0]
    cfg = JudgeConfig(base_url=base_url, model=smollm2, max_tokens=32, timeout_s=120, max_retries=1, backoff_s=0.01)
    judge = LLMJudge(cfg)
    result = judge.judge("Who was the 35th president of the United States?", "JFK", "John F. Kennedy")
    # SmolLM2 explains but writes neither [[YES]] nor [[NO]]: no verdict, said so, not retried
    assert (result.verdict, result.status) == (None, "error: no [[YES]]/[[NO]] verdict in reply")
    assert judge.stats["requests"] == 1 and judge.stats["errors"] == 1
    scored = compute_score("keychain_hotpotqa", r"</think> \boxed{JFK}", ["John F. Kennedy"],
                           {"question": "Who was the 35th president of the United States?"},
                           judge_config=cfg.__dict__)
    assert (scored["rule"], scored["score"], scored["judge"]) == (0.0, 0.0, "error: no [[YES]]/[[NO]] verdict in reply")


def test_loongrl_serve_prints_the_backend_spec_serves_and_stops_with_its_server_on_sigterm(smollm2, tmp_path):
    """`loongrl serve` (the demo starts vLLM with it): the spec once the server answers; SIGTERM stops the
    command and the server's whole process group. transformers here: the launcher is the same for vLLM."""
    import signal
    import subprocess
    import sys
    import urllib.request

    from loongrl.generation.backends import SamplingConfig, make_backend

    proc = subprocess.Popen([sys.executable, "-m", "loongrl.cli", "serve", "transformers", smollm2,
                             "--log", str(tmp_path / "serve.log")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        spec = proc.stdout.readline().strip()
        assert spec.startswith("openai:http://127.0.0.1:") and spec.endswith(f"/v1#{smollm2}"), proc.stderr.read()
        backend = make_backend(spec, timeout_s=120, max_retries=0)
        assert backend.generate([[{"role": "user", "content": "Say hello."}]],
                                SamplingConfig(n=1, temperature=0.0, max_new_tokens=4))[0][0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    health = spec[len("openai:"):].split("#")[0].removesuffix("/v1") + "/health"
    with pytest.raises(OSError):  # nothing listens there any more
        urllib.request.urlopen(health, timeout=5)
