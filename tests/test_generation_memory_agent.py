"""The memory agent's protocol (loongrl.generation.memory_agent): splitting a prompt into problem and
document, token-exact chunks, MemAgent's templates verbatim; expected values written by hand."""

from __future__ import annotations

import pytest

from loongrl.generation.memory_agent import (ContextTemplate, MemoryAgentConfig, SplitError, answer_messages,
                                             chunk_and_count, chunk_document, split_prompt, update_messages)


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


def test_examples():
    import doctest

    from loongrl.generation import memory_agent

    result = doctest.testmod(memory_agent)
    assert result.failed == 0 and result.attempted >= 4


def test_defaults_are_memagents():
    config = MemoryAgentConfig()
    assert (config.chunk_tokens, config.memory_tokens, config.answer_tokens, config.no_memory) == \
        (5000, 1024, 1024, "No previous memory")
    assert config.label() == "memory agent: chunk 5000, memory 1024, answer 1024"
    with pytest.raises(ValueError, match="chunk_tokens: 0"):
        MemoryAgentConfig(chunk_tokens=0)
    with pytest.raises(ValueError, match=r"update_template: has fields \['memory', 'prompt'\]"):
        MemoryAgentConfig(update_template="{prompt} {memory}")


def test_update_and_answer_templates_verbatim():
    """MemAgent's TEMPLATE and TEMPLATE_FINAL_BOXED, rendered, typed here from recurrent/impls/memory.py."""
    config = MemoryAgentConfig()
    assert update_messages(config, "Who?", "No previous memory", "Some text.") == [{"role": "user", "content": (
        "You are presented with a problem, a section of an article that may contain the answer to the problem, and "
        "a previous memory. Please read the provided section carefully and update the memory with the new "
        "information that helps to answer the problem. Be sure to retain all relevant details from the previous "
        "memory while adding any new, useful information.\n\n<problem> \nWho?\n</problem>\n\n<memory>\n"
        "No previous memory\n</memory>\n\n<section>\nSome text.\n</section>\n\nUpdated memory:\n")}]
    assert answer_messages(config, "Who?", "Bob did.") == [{"role": "user", "content": (
        "You are presented with a problem and a previous memory. Please answer the problem based on the previous "
        "memory and put the answer in \\boxed{}.\n\n<problem> \nWho?\n</problem>\n\n<memory>\nBob did.\n"
        "</memory>\n\nYour answer:\n")}]


QA = ContextTemplate("qa", "The following are given passages.\n{context}\n\nQuestion: {question}")
KEYCHAIN = ContextTemplate("keychain", "Please read the following text.\n{context}\n\nIn the context above, there is "
                                       "one correct question, starting from \"{head}\".\nFind it, then answer it.")


def test_split_prompt_known_templates():
    system = {"role": "system", "content": "Think, then answer in \\boxed{}."}
    qa = "The following are given passages.\nPassage 1:\nA\nx\n\nPassage 2:\nB\ny\n\nQuestion: Who is A?"
    assert split_prompt([system, {"role": "user", "content": qa}], [KEYCHAIN, QA]) == (
        "Think, then answer in \\boxed{}.\n\nThe following are given passages.\n\nQuestion: Who is A?",
        "Passage 1:\nA\nx\n\nPassage 2:\nB\ny")
    # KeyChain: the chain instructions (two lines after the blank line) stay in the problem.
    kc = ("Please read the following text.\nPassage 1:\nk1: v1\n\nIn the context above, there is one correct "
          "question, starting from \"k1\".\nFind it, then answer it.")
    assert split_prompt([{"role": "user", "content": kc}], [QA, KEYCHAIN]) == (
        "Please read the following text.\n\nIn the context above, there is one correct question, starting from "
        "\"k1\".\nFind it, then answer it.", "Passage 1:\nk1: v1")
    # A trailing assistant prefill is dropped; a question with a blank line inside still matches its template.
    two = "The following are given passages.\nP\n\nQuestion: a\n\nb"
    assert split_prompt([{"role": "user", "content": two}, {"role": "assistant", "content": "Answer:"}], [QA]) == (
        "The following are given passages.\n\nQuestion: a\n\nb", "P")


def test_split_prompt_fallback_and_errors():
    # NIAH's shape: context, blank line, question; the needle's own newlines stay in the document.
    assert split_prompt([{"role": "user", "content": "essay.\nThe magic number is: 7\n\n\nWhat is it? Be brief"}]) \
        == ("What is it? Be brief", "essay.\nThe magic number is: 7\n")
    with pytest.raises(SplitError, match="no blank line"):
        split_prompt([{"role": "user", "content": "one line only"}])
    with pytest.raises(SplitError, match="no user message"):
        split_prompt([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="no {context} field"):
        split_prompt([{"role": "user", "content": "a\n\nb"}], [ContextTemplate("bad", "{question}")])


def test_chunk_document_token_exact(smol_tokenizer):
    # SmolLM2's BPE: "the" and " the" are one token each, so 10 tokens cut in fours.
    assert chunk_document(smol_tokenizer, "the" + " the" * 9, 4) == ["the the the the", " the the the the", " the the"]
    # Multi-byte characters: tokens "na", "ïve", " café".
    assert chunk_document(smol_tokenizer, "naïve café", 1) == ["na", "ïve", " café"]
    assert chunk_document(smol_tokenizer, "naïve café", 3) == ["naïve café"]
    assert chunk_document(smol_tokenizer, "", 5) == []
    # the count the traces report as tokens read comes from the same tokenization
    assert chunk_and_count(smol_tokenizer, "the" + " the" * 9, 4)[1] == 10
    assert chunk_and_count(smol_tokenizer, "naïve café", 3) == (["naïve café"], 3)
    assert chunk_and_count(smol_tokenizer, "", 5) == ([], 0)


class Recording:
    """The real hf: backend, keeping every call's prompts, sampling and replies (to check the protocol)."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    def generate(self, prompts, sampling, progress=None):
        replies = self.inner.generate(prompts, sampling)
        self.calls.append((prompts, sampling, replies))
        return replies


@pytest.fixture(scope="module")
def keychain_rows(smollm2, tmp_path_factory):
    """Two short KeyChain rows of the data pipeline, in SmolLM2's tokens (~700 each)."""
    from conftest import INPUTS

    from loongrl.cli import main

    path = str(tmp_path_factory.mktemp("memrows") / "kc.jsonl")
    assert main(["data", "keychain", "--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--out", path,
                 "--tokenizer", smollm2, "--max-prompt-tokens", "700", "--num", "2", "--quiet"]) == 0
    return path


def test_memory_agent_reads_rows_in_turns(smollm2, smol_tokenizer, keychain_rows, tmp_path, one_torch_thread):
    """`eval rows`'s path with the real SmolLM2 as a memory agent: chunks of 160 tokens, turn k+1 sees turn k's
    memory, every prompt fits a 600-token window, the answer turn sees the problem and the memory only."""
    import json
    import math

    from loongrl.data.io import iter_rows
    from loongrl.data.prompts import KEYCHAIN_INTRO
    from loongrl.eval import rows as rows_eval
    from loongrl.eval.cli import memory_templates
    from loongrl.generation.backends import SamplingConfig, TransformersBackend, render_chat
    from loongrl.generation.memory_agent import MemoryAgentBackend

    config = MemoryAgentConfig(chunk_tokens=160, memory_tokens=16, answer_tokens=8)
    inner = Recording(TransformersBackend(smollm2, batch_size=2))
    backend = MemoryAgentBackend(inner, smol_tokenizer, config, memory_templates(), window=600)
    assert backend.name == f"hf:{smollm2} (memory agent: chunk 160, memory 16, answer 8)"
    records = rows_eval.evaluate([keychain_rows], backend, SamplingConfig(max_new_tokens=999), str(tmp_path),
                                 {"require_think": False}, progress=False)
    # the document and the problem, cut by hand: the user message is intro + document + blank line + tail
    rows = list(iter_rows(keychain_rows))
    docs, problems = [], []
    for row in rows:
        system, user = row["prompt"][0]["content"], row["prompt"][1]["content"]
        cut = user.index("\n\nIn the context above")
        docs.append(user[len(KEYCHAIN_INTRO):cut])
        problems.append(f"{system}\n\n{KEYCHAIN_INTRO.strip()}\n\n{user[cut + 2:]}")
    turns = [math.ceil(len(smol_tokenizer(d, add_special_tokens=False)["input_ids"]) / 160) for d in docs]
    assert min(turns) >= 3 and len(inner.calls) == max(turns) + 1
    memories = [[config.no_memory] for _ in rows]
    sections = [[] for _ in rows]
    for k, (prompts, sampling, replies) in enumerate(inner.calls[:-1]):
        reading = [i for i in range(len(rows)) if turns[i] > k]
        assert len(prompts) == len(reading) and sampling.max_new_tokens == 16 and sampling.n == 1
        for i, messages, reply in zip(reading, prompts, replies):
            text = messages[0]["content"]
            assert f"<problem> \n{problems[i]}\n</problem>" in text
            assert f"<memory>\n{memories[i][-1]}\n</memory>" in text  # turn k's reply is turn k+1's memory
            sections[i].append(text[text.index("<section>\n") + 10:text.rindex("\n</section>")])
            rendered = len(smol_tokenizer(render_chat(smol_tokenizer, messages), add_special_tokens=False)["input_ids"])
            assert rendered + 16 <= 600
            memories[i].append(reply[0])
    assert sections == [[d[j:j + len(s)] for j, s in zip([sum(map(len, ss[:m])) for m in range(len(ss))], ss)]
                        for d, ss in zip(docs, sections)]
    assert ["".join(s) for s in sections] == docs and [len(s) for s in sections] == turns
    prompts, sampling, replies = inner.calls[-1]
    assert sampling.max_new_tokens == 8
    for i, messages in enumerate(prompts):  # the answer: problem and last memory, nothing of the document
        assert messages == answer_messages(config, problems[i], memories[i][-1])
        assert "<section>" not in messages[0]["content"]
    samples = [json.loads(line)["samples"][0] for line in open(tmp_path / "samples_kc.jsonl")]
    for i, (record, sample) in enumerate(zip(records, samples)):
        assert sample["response"] == replies[i][0] == record["samples"][0]["response"]
        trace = sample["memory_agent"]
        assert trace["chunks"] == turns[i] and trace["memories"] == memories[i][1:]
        assert trace["tokens_read"] == len(smol_tokenizer(docs[i], add_special_tokens=False)["input_ids"])
        assert trace["max_prompt_tokens"] + 16 <= 600


def test_memory_agent_cli_refuses_turns_over_the_window(smollm2, keychain_rows, tmp_path, capsys):
    from loongrl.cli import main

    assert main(["eval", "rows", keychain_rows, "--backend", f"hf:{smollm2}", "--out", str(tmp_path), "--quiet",
                 "--memory-agent", "--memory-chunk-tokens", "7000", "--rope-scaling", "off"]) == 2
    err = capsys.readouterr().err
    assert f"memory agent, {keychain_rows} row 0: a reading turn needs" in err and "> the 8192-token window" in err
    assert "chunk 7000 + memory 1024 + new tokens 1024" in err


def test_memory_agent_checks_every_file_before_generating_any(smollm2, keychain_rows, tmp_path, capsys):
    """A file whose turns fit, then one whose problem (the text after its last blank line) is too long: refused,
    the second file's row named, and nothing generated for the first."""
    from loongrl.cli import main
    from loongrl.data.io import iter_rows, write_rows

    row = next(iter_rows(keychain_rows))
    long_problem = dict(row, prompt=[{"role": "user", "content": "Some text.\n\n" + "Which word? " * 600}])
    bad = str(tmp_path / "long_problem.parquet")
    write_rows(bad, [long_problem])
    out = tmp_path / "out"
    assert main(["eval", "rows", keychain_rows, bad, "--backend", f"hf:{smollm2}", "--out", str(out), "--quiet",
                 "--memory-agent", "--rope-scaling", "off"]) == 2
    err = capsys.readouterr().err
    assert f"memory agent, {bad} row 0: a reading turn needs" in err and "> the 8192-token window" in err
    assert not list(out.glob("samples_*"))


def test_memory_agent_samples_are_whole_trajectories(smollm2, smol_tokenizer, keychain_rows, one_torch_thread):
    """n=2 sampled: turn 0 asks 2 samples of the one first prompt; each sample then reads on with its own memory."""
    from loongrl.data.io import iter_rows
    from loongrl.generation.backends import SamplingConfig, TransformersBackend
    from loongrl.generation.memory_agent import MemoryAgentBackend

    config = MemoryAgentConfig(chunk_tokens=256, memory_tokens=6, answer_tokens=4)
    inner = Recording(TransformersBackend(smollm2, batch_size=2))
    backend = MemoryAgentBackend(inner, smol_tokenizer, config)
    prompt = next(iter_rows(keychain_rows))["prompt"]
    answers = backend.generate([prompt], SamplingConfig(n=2, temperature=1.0, seed=3))
    first, *later, last = inner.calls
    assert len(first[0]) == 1 and first[1].n == 2 and len(first[2][0]) == 2
    memories = [[first[2][0][0]], [first[2][0][1]]]
    assert memories[0] != memories[1] and len(later) >= 1
    for prompts, sampling, replies in later:
        assert len(prompts) == 2 and sampling.n == 1
        for j in range(2):
            assert f"<memory>\n{memories[j][-1]}\n</memory>" in prompts[j][0]["content"]
            memories[j].append(replies[j][0])
    problem = split_prompt(prompt)[0]
    assert last[0] == [answer_messages(config, problem, m[-1]) for m in memories]
    assert answers == [[last[2][0][0], last[2][1][0]]]
    assert [t["memories"] for t in backend.traces[0]] == memories


def test_memory_flags_without_the_agent_are_refused(tmp_path, capsys):
    from loongrl.cli import main

    assert main(["eval", "rows", str(tmp_path / "none.jsonl"), "--backend", "hf:/nonexistent", "--out", str(tmp_path),
                 "--memory-chunk-tokens", "500", "--memory-tokens", "64"]) == 2
    assert capsys.readouterr().err == ("error: --memory-chunk-tokens, --memory-tokens set the memory agent: add "
                                       "--memory-agent, or leave them out\n")


def test_memory_agent_cli_report_says_how_the_model_read(smollm2, keychain_rows, tmp_path, capsys, one_torch_thread):
    import json

    from loongrl.cli import main

    out = tmp_path / "out"
    assert main(["eval", "rows", keychain_rows, "--limit", "1", "--backend", f"hf:{smollm2}", "--out", str(out),
                 "--quiet", "--memory-agent", "--memory-chunk-tokens", "300", "--memory-tokens", "16",
                 "--memory-answer-tokens", "16", "--no-require-think"]) == 0
    md = (out / "rows.md").read_text()
    assert "; memory agent: chunks of 300 tokens, memory 16, answer 16 new tokens" in md.splitlines()[2]
    report = json.loads((out / "rows.json").read_text())
    assert report["summary"]["memory_agent"] == {"chunk_tokens": 300, "memory_tokens": 16, "answer_tokens": 16}
    (record,) = report["records"]
    assert record["samples"][0]["memory_agent"]["chunks"] >= 2
