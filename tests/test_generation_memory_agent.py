"""The memory agent's protocol (loongrl.generation.memory_agent): splitting a prompt into problem and
document, token-exact chunks, MemAgent's templates verbatim; expected values written by hand."""

from __future__ import annotations

import pytest

from loongrl.generation.memory_agent import (ContextTemplate, MemoryAgentConfig, SplitError, answer_messages,
                                             chunk_document, split_prompt, update_messages)


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


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
