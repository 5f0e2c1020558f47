"""RULER generators and NIAH grid with the real Qwen2.5 tokenizer; scored end to end through the
OpenAI backend against a scripted server that answers some samples right and some wrong."""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import QWEN

from loongrl.cli import main
from loongrl.data.tokens import get_counter
from loongrl.eval import niah, ruler


@pytest.fixture(scope="module")
def counter():
    return get_counter(QWEN)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # a SQuAD v2-format file for qa_1, built from real HotpotQA paragraphs
    from conftest import INPUTS

    from loongrl.data.sources import load_source

    recs = load_source("hotpotqa", INPUTS["hotpotqa"])
    squad = {"data": [{"title": "t", "paragraphs": [
        {"context": recs.pool.texts[r.passage_ids[0]], "qas": [{"question": r.question, "answers": [{"text": r.answers[0]}],
                                                               "is_impossible": False}]} for r in recs.records
        if r.answers[0] in recs.pool.texts[r.passage_ids[0]]][:40]}]}  # SQuAD answers are spans
    path = tmp_path_factory.mktemp("squad") / "dev-v2.0.json"
    path.write_text(json.dumps(squad))
    return ruler.RulerData(squad_path=str(path))


def test_registry_has_the_13_tasks(data):
    assert list(ruler.tasks(data)) == ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                                       "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery",
                                       "vt", "cwe", "fwe", "qa_1", "qa_2"]


@pytest.mark.parametrize("reasoning", [False, True])
def test_every_task_fills_its_budget_exactly(data, counter, reasoning):
    for name, task in ruler.tasks(data).items():
        item = ruler.generate(task, 2048, 0, data, counter, seed=3, reasoning=reasoning)
        budget = 2048 - data.templates["tasks"][task.kind]["tokens_to_generate"]
        exact = ruler.chat_tokens(counter.tokenizer, item.messages)
        assert item.meta["prompt_tokens"] == exact, name
        assert 0.95 * budget <= exact <= budget, (name, exact, budget)
        # the first size is guessed from the task's tokens per unit, so few exact counts are needed
        # the first size is guessed from the task's tokens per unit, so few exact counts are needed (cwe's
        # word draw changes with its size, so its count is not monotone in the size and takes more)
        assert item.meta["probes"] <= (16 if name == "cwe" else 4), (name, item.meta["probes"])
        assert item.golds and all(g.lower() in item.messages[0]["content"].lower() or name in ("fwe", "qa_2")
                                  for g in item.golds), name
        assert (item.messages[-1]["role"] == "assistant") is not reasoning
        assert item == ruler.generate(task, 2048, 0, data, counter, seed=3, reasoning=reasoning)  # same seed, same sample
    # fwe golds are counted below; HotpotQA golds ("yes"/"no") need not be spans
    niah1 = ruler.generate(ruler.tasks(data)["niah_single_1"], 2048, 1, data, counter)
    assert niah1 == ruler.generate(ruler.tasks(data)["niah_single_1"], 2048, 1, data, counter, seed=0)  # CLI --seed 0
    assert niah1.messages[0]["content"].startswith("A special magic number is hidden")
    assert niah1.messages[1]["content"].startswith(" The special magic number for ")
    assert niah1.messages[1]["content"].endswith(" mentioned in the provided text is")


@pytest.fixture(scope="module")
def nfkc_counter(tmp_path_factory):
    """Qwen2.5's vocabulary behind an NFKC normaliser (as SentencePiece-style tokenizers have): not additive,
    so piecewise counts are only estimates and generate() checks each prompt with a full count."""
    import shutil

    folder = tmp_path_factory.mktemp("nfkc")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(os.path.join(QWEN, name), folder / name)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFKC"}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"      # transformers keeps tokenizer.json as it is
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return get_counter(str(folder))


@pytest.mark.parametrize("reasoning", [False, True])
def test_non_additive_tokenizer_prompts_are_counted_exactly(data, counter, nfkc_counter, reasoning):
    assert counter.fast and not nfkc_counter.fast
    for name in ("niah_single_1", "vt"):
        task = ruler.tasks(data)[name]
        item = ruler.generate(task, 2048, 0, data, nfkc_counter, seed=1, reasoning=reasoning)
        budget = 2048 - data.templates["tasks"][task.kind]["tokens_to_generate"]
        exact = ruler.chat_tokens(nfkc_counter.tokenizer, item.messages)
        assert item.meta["prompt_tokens"] == exact and 0.95 * budget <= exact <= budget, (name, exact)
        assert (item.messages[-1]["role"] == "assistant") is not reasoning
        # NFKC changes nothing in these prompts: the same prompt as the additive (tiktoken) count gives
        assert item == ruler.generate(task, 2048, 0, data, counter, seed=1, reasoning=reasoning), name


def test_reasoning_requests_fit_the_model_window(data, counter):
    # item 9: at length == window, reasoning mode's 8,192 new tokens come out of the prompt budget
    task = ruler.tasks(data)["niah_single_1"]
    item = ruler.generate(task, 16384, 0, data, counter, reasoning=True, window=16384)
    exact = ruler.chat_tokens(counter.tokenizer, item.messages)
    assert item.meta["max_new_tokens"] == 8192 and item.meta["prompt_budget"] == 16384 - 8192
    assert (item.meta["window"], item.meta["reasoning"], item.meta["length"]) == (16384, True, 16384)
    assert item.question == "" and item.id == "niah_single_1/16384/0"     # the question is inside the prompt
    assert 0.95 * 8192 <= exact == item.meta["prompt_tokens"] <= 8192       # prompt + 8,192 <= 16,384
    # the 128K case: min(131072 - 128, 131072 - 8192)
    assert ruler.prompt_budget(131072, 128, 8192, 131072) == 122880
    assert ruler.prompt_budget(131072, 128, 128, 131072) == 131072 - 128    # non-reasoning: RULER's own budget
    with pytest.raises(ValueError, match="length 32768 exceeds the model window 16384"):
        ruler.generate(task, 32768, 0, data, counter, reasoning=True, window=16384)
    with pytest.raises(ValueError, match="no room for a prompt"):
        ruler.prompt_budget(8192, 128, 8192, 8192)


def test_a_length_too_short_for_the_gold_documents_is_refused(data, counter):
    # qa's budget at 128 tokens is 128 - 32 (RULER's tokens_to_generate for qa): no HotpotQA gold pair fits
    with pytest.raises(ValueError) as err:
        ruler.generate(ruler.tasks(data)["qa_2"], 128, 0, data, counter)
    assert str(err.value) == ("RULER qa_2 at 128 tokens: even the smallest haystack does not fit in 96 tokens "
                              "(qa gold documents alone can exceed short lengths; RULER's lengths start at 4K)")


def test_niah_cells_fit_the_model_window(counter):
    lengths, depths = [1000, 2500], [0.0, 50.0]
    items = niah.build_grid(counter, lengths, depths, max_new_tokens=1000, window=3000)
    for item in items:
        exact = counter.count_chat(item.messages)
        assert exact == item.meta["prompt_tokens"]
        assert exact + 1000 <= 3000 and exact <= item.meta["length"]
    # the 2500 cell is capped at 3000 - 1000 = 2000 tokens and keeps its label
    assert [i.meta["length"] for i in items] == [1000, 1000, 2500, 2500]
    assert all(1990 <= i.meta["prompt_tokens"] <= 2000 for i in items[2:])


def test_fwe_answers_are_the_three_most_frequent_words(data, counter):
    item = ruler.generate(ruler.tasks(data)["fwe"], 2048, 0, data, counter)
    words = re.findall(r"\b[a-z]{6}\b", item.messages[0]["content"].split("coded words. ", 1)[1].split("\nQuestion")[0])
    counts = sorted(((words.count(w), w) for w in set(words)), reverse=True)
    assert set(item.golds) == {w for _, w in counts[:3]} and counts[2][0] > counts[3][0]


def _answering(correct_tasks: set[str], reasoning: bool):
    golds: dict[str, list[str]] = {}

    def respond(body):
        user = body["messages"][0]["content"]
        for key, (task, answers) in golds.items():
            if key in user:
                text = ", ".join(answers) if task in correct_tasks else "I do not know"
                return f"<think>maybe 0000000</think> {text}" if reasoning else text
        raise AssertionError("unknown prompt")
    return respond, golds


@pytest.mark.parametrize("reasoning", [False, True])
def test_ruler_cli_scores_known_outputs(server, data, counter, tmp_path, reasoning):
    server.reset()
    names = ["niah_single_2", "niah_multivalue", "vt", "qa_2"]
    respond, golds = _answering({"niah_single_2", "vt"}, reasoning)
    registry = ruler.tasks(data)
    for name in names:
        for i in range(2):
            item = ruler.generate(registry[name], 4096, i, data, counter, reasoning=reasoning)
            golds[item.messages[0]["content"][-300:]] = (name, item.golds)
    server.respond = respond
    out = str(tmp_path / "ruler")
    args = ["eval", "ruler", "--backend", f"openai:{server.base_url}#m", "--tasks", *names, "--lengths", "4096",
            "--num-samples", "2", "--tokenizer", QWEN, "--out", out, "--quiet"] + (["--reasoning"] if reasoning else [])
    assert main(args) == 0
    summary = json.load(open(os.path.join(out, "ruler.json")))["summary"]
    assert summary["scores"] == {"niah_single_2": {"4096": 100.0}, "niah_multivalue": {"4096": 0.0},
                                 "vt": {"4096": 100.0}, "qa_2": {"4096": 0.0}}
    assert summary["average"] == {"4096": 50.0}
    body = server.requests[0]["body"]
    assert body["max_tokens"] == (8192 if reasoning else 128)
    assert body.get("continue_final_message", False) is not reasoning


def test_niah_grid_prompts_and_depths(counter):
    lengths, depths = niah.grid(1000, 3000, 3, 3)
    assert (lengths, depths) == ([1000, 2000, 3000], [0.0, 50.0, 100.0])
    items = niah.build_grid(counter, lengths, depths)
    for item in items:
        assert item.meta["length"] - 2 <= counter.count_chat(item.messages) == item.meta["prompt_tokens"] <= item.meta["length"]
        user = item.messages[1]["content"]
        at = user.index("The special magic")
        assert user[at - 2] == "." or at == 1 or item.meta["depth"] == 100  # sentence boundary, start or end
        assert item.golds[0] in user
    positions = [items[i].messages[1]["content"].index("The special magic") for i in range(3, 6)]
    assert positions[0] < positions[1] < positions[2]
    assert items == niah.build_grid(counter, lengths, depths)


def test_niah_cli_heatmap_from_scripted_answers(server, tmp_path):
    server.reset()

    def respond(body):  # right near the start, wrong from the middle on
        user = body["messages"][-1]["content"]
        number = re.search(r"The special magic \w[\w ]* number is: (\d{7})", user).group(1)
        depth = user.index(number) / len(user)
        return f"It is {number}." if depth < 0.4 else "It is 1234567."
    server.respond = respond
    out = str(tmp_path / "niah")
    assert main(["eval", "niah", "--backend", f"openai:{server.base_url}#m", "--min-len", "1000", "--max-len", "2000",
                 "--num-lengths", "2", "--num-depths", "3", "--tokenizer", QWEN, "--out", out, "--quiet",
                 "--window", "2064"]) == 0
    report = json.load(open(os.path.join(out, "niah.json")))
    summary = report["summary"]
    # --window 2064 with 64 new tokens: every prompt (exact count) stays within 2000 tokens
    assert {r["meta"]["window"] for r in report["records"]} == {2064}
    assert max(r["meta"]["prompt_tokens"] for r in report["records"]) <= 2000
    assert summary["matrix"] == [[100.0, 100.0], [0.0, 0.0], [0.0, 0.0]]
    assert "| 0% | 100.00 | 100.00 |" in open(os.path.join(out, "niah.md")).read()
    with open(os.path.join(out, "niah.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_window_defaults_to_the_model_folders_context_length(tmp_path, capsys):
    import argparse
    import json

    from loongrl.eval.cli import _window

    def window(backend, stated=None):
        return _window(argparse.Namespace(window=stated, backend=backend, rope_scaling="auto"), 4096).tokens

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    for backend in (f"hf:{tmp_path}", f"vllm:{tmp_path}", f"openai:http://127.0.0.1:1/v1#{tmp_path}"):
        assert window(backend) == 8192
    assert f"window 8192 tokens (max_position_embeddings of {tmp_path} config.json" in capsys.readouterr().err
    assert window(f"hf:{tmp_path}", 4096) == 4096  # --window wins (below the model's window)
    assert window("openai:http://127.0.0.1:1/v1#served-name") == 131072


def test_ruler_cli_refuses_every_pair_that_cannot_be_built_before_generating(server, tmp_path, capsys):
    """qa_2 at 512 tokens cannot hold its gold documents; niah_single_1 can: nothing is sent for either, and the
    error comes at once, naming the pair (it used to come after the tasks before it had been generated)."""
    server.reset()
    out = str(tmp_path / "ruler")
    assert main(["eval", "ruler", "--backend", f"openai:{server.base_url}#m", "--tasks", "niah_single_1", "qa_2",
                 "--lengths", "512,4096", "--num-samples", "1", "--tokenizer", QWEN, "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: RULER qa_2 at 512 tokens:" in err
    assert "error: 1 task/length pairs cannot be built; nothing was generated" in err
    assert server.requests == [] and not os.path.exists(os.path.join(out, "samples_niah_single_1.jsonl"))


def test_progress_lines_when_stderr_is_not_a_terminal(server, tmp_path, capsys):
    """Under pytest stderr is a file, as in a cluster job's log: the evaluation writes plain progress lines."""
    server.reset()
    server.respond = lambda body: "no idea"
    assert main(["eval", "niah", "--backend", f"openai:{server.base_url}#m", "--tokenizer", QWEN, "--min-len", "600",
                 "--max-len", "1000", "--num-lengths", "2", "--num-depths", "2", "--out", str(tmp_path / "n")]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("niah: ")]
    assert [x.split(",")[0] for x in lines] == ["niah: 4/4 items (100%)"]  # one chunk of 8: one line
    assert "\r" not in "".join(lines)


@pytest.mark.parametrize("command, message", [
    (["niah", "--num-depths", "0"], "--num-depths must be >= 1, got 0"),
    (["niah", "--num-lengths", "0"], "--num-lengths must be >= 1, got 0"),
    (["niah", "--min-len", "8000", "--max-len", "1000"], "--min-len 8000 exceeds --max-len 1000"),
    (["niah", "--min-len", "0", "--max-len", "1000"], "--min-len must be >= 1, got 0"),
    (["ruler", "--num-samples", "0"], "--num-samples must be >= 1, got 0"),
    (["ruler", "--lengths", "-100"], "--lengths must be positive token counts: -100"),
    (["ruler", "--lengths", "1024,0,-5"], "--lengths must be positive token counts: 0, -5"),
    (["ruler", "--lengths", ","], "--lengths must be positive token counts: none given"),
    (["ruler", "--n", "2"], "--n 2 with temperature 0 (greedy) would be 2 identical samples"),
    (["niah", "--max-new-tokens", "-1"], "--max-new-tokens must be >= 1, got -1"),
    (["longbench", "--data", "hf:THUDM/LongBench", "--limit", "0"], "--limit must be >= 1, got 0"),
    (["longbench", "--data", "hf:THUDM/LongBench", "--preset", "loongrl", "--temperature", "0"],
     "--preset loongrl's 8 samples with temperature 0 (greedy) would be 8 identical samples"),
])
def test_grid_and_sampling_flags_out_of_range_are_refused_up_front(server, tmp_path, capsys, command, message):
    """They used to end in tracebacks (--num-depths 0: matplotlib's, after the results were written; --num-lengths 0:
    max() of nothing; --num-samples 0: IndexError), be accepted (--min-len above --max-len) or not name the length."""
    server.reset()
    out = tmp_path / "o"
    assert main(["eval", *command, "--backend", f"openai:{server.base_url}#m", "--tokenizer", QWEN, "--out", str(out),
                 "--quiet"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert server.requests == [] and not os.path.exists(out)


@pytest.mark.parametrize("command", [["niah"], ["ruler"], ["longbench", "--data", "hf:THUDM/LongBench"]])
def test_a_missing_shared_data_folder_is_named_before_anything_runs(server, tmp_path, capsys, monkeypatch, command):
    """It was found missing only after the model had loaded, and the error named neither --data-dir nor
    $LOONGRL_SHARED (run from a directory without ../shared beside it)."""
    server.reset()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOONGRL_SHARED", raising=False)
    args = ["eval", *command, "--backend", f"openai:{server.base_url}#m", "--tokenizer", QWEN, "--quiet"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: shared data folder ../shared/data (the default ../shared/data, relative to this "
                          "directory) does not exist: pass --data-dir DIR"), err
    missing = str(tmp_path / "nowhere")
    assert main([*args, "--data-dir", missing, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith(f"error: shared data folder {missing} (--data-dir) does not exist")
    assert server.requests == [] and not os.path.exists(tmp_path / "o")
