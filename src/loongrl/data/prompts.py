"""Prompt texts, verbatim from the papers and reference code (loongrl.md sections 3 and 5.2)."""

from __future__ import annotations

# LoongRL system prompt (paper A.2, Fig. 5; reference `qwen_orz_boxed`).
LOONGRL_SYSTEM = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the "
    "answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within \\boxed{} "
    "tags, respectively, i.e., <think> reasoning process here </think> \\boxed{answer here}."
)

SYSTEM_PROMPTS = {"loongrl": LOONGRL_SYSTEM, "none": None}

# User message = intro + context + "\n\n" + tail. The context always starts with "Passage 1:" and
# the tail with a letter, so both joins are token boundaries (see tokens.py).
QA_INTRO = "The following are given passages.\n"
QA_TAIL = "Question: {question}"

KEYCHAIN_INTRO = "Please read the following text.\n"
# Paper form: quoted head and the closing sentence. The example UUID is the RFC one even for 8-hex keys.
KEYCHAIN_TAIL = (
    "In the context above, there is one correct question to answer. The correct question can only be found by "
    "following the correct consecutive chain of key:value pairs encoded with UUID strings "
    '(e.g., f81d4fae-7dec-11d0-a765-00a0c91e6bf6), starting from "{head}".\n'
    "Find the correct question first, then answer it."
)

def row_context_templates() -> list:
    """The rows' user messages as the memory agent's templates (intro + {context} + blank line + tail), so
    evaluation (`eval --memory-agent`) and training (`rl.memory_agent`) split a row into problem and document
    the same way: KeyChain's chain instructions and the QA question are the problem."""
    from loongrl.generation.memory_agent import ContextTemplate

    return [ContextTemplate("keychain rows", KEYCHAIN_INTRO + "{context}\n\n" + KEYCHAIN_TAIL),
            ContextTemplate("qa rows", QA_INTRO + "{context}\n\n" + QA_TAIL)]


PASSAGE_HEADER = "Passage {i}:\n"
PASSAGE_JOIN = "\n\n"


def passage_body(title: str, text: str) -> str:
    """`{title}\\n{text}`; a passage without a title is just its text."""
    return f"{title}\n{text}" if title else text


def resolve_system_prompt(value: str | None) -> str | None:
    """A preset name (`loongrl`, `none`), a path to a text file, or the prompt text itself."""
    if value is None:
        return LOONGRL_SYSTEM
    if value in SYSTEM_PROMPTS:
        return SYSTEM_PROMPTS[value]
    import os

    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read().strip() or None
    # One word that names a file (a path or a text file's name) is a mistyped path, not a system prompt.
    if not any(c.isspace() for c in value) and (os.sep in value or value.endswith((".txt", ".md"))):
        raise FileNotFoundError(f"system prompt {value!r}: no such file (give {', '.join(SYSTEM_PROMPTS)}, a file, "
                                "or the prompt text itself)")
    return value
