"""A memory agent: a model reads an input longer than its window chunk by chunk, rewriting a memory.

MemAgent's protocol (Yu et al., arXiv 2507.02259; code syr-cn/MemAgent, ``recurrent/impls/memory.py``,
defaults from ``run_memory_7B.sh``), also QwenLong-L1.5's memory mode (arXiv 2512.12967):

1. A row's chat prompt is split into the *problem* (what is asked) and the *document* (what is read):
   ``split_prompt``.
2. The document is tokenized once and cut into chunks of ``chunk_tokens`` tokens: ``chunk_document``.
3. The memory starts as "No previous memory". For each chunk, one conversation (a single user message,
   ``update_messages``): problem, memory, chunk; the model's reply (at most ``memory_tokens`` new
   tokens) REPLACES the memory.
4. After the last chunk, one conversation with the problem and the memory alone (``answer_messages``);
   its reply (at most ``answer_tokens`` new tokens) is the answer that is scored.

A turn's prompt needs problem + chunk + memory + template tokens, plus the new tokens: with the defaults
(5000 + 1024 + 1024) an 8K window leaves about 1,000 tokens for the problem and the template.

This module is the generation floor: it imports nothing above ``loongrl.generation``. The templates of
the prompts it recognises (``ContextTemplate``) are handed in by the callers that know them (eval, data).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

# MemAgent recurrent/impls/memory.py, TEMPLATE, verbatim (the space after "<problem>" included).
UPDATE_TEMPLATE = """You are presented with a problem, a section of an article that may contain the answer to the problem, and a previous memory. Please read the provided section carefully and update the memory with the new information that helps to answer the problem. Be sure to retain all relevant details from the previous memory while adding any new, useful information.

<problem> 
{prompt}
</problem>

<memory>
{memory}
</memory>

<section>
{chunk}
</section>

Updated memory:
"""

# MemAgent recurrent/impls/memory.py, TEMPLATE_FINAL_BOXED, verbatim (rendered: "\boxed{}").
ANSWER_TEMPLATE = """You are presented with a problem and a previous memory. Please answer the problem based on the previous memory and put the answer in \\boxed{{}}.

<problem> 
{prompt}
</problem>

<memory>
{memory}
</memory>

Your answer:
"""


@dataclass
class MemoryAgentConfig:
    """The memory agent's settings; defaults are MemAgent's (``run_memory_7B.sh``, ``memory.py``).

    Args:
        chunk_tokens: Document tokens read per turn (MemAgent ``chunk_size`` 5000).
        memory_tokens: New tokens of each memory update, so also the most a memory can hold
            (MemAgent ``max_memorization_length`` 1024).
        answer_tokens: New tokens of the final answer (MemAgent ``max_final_response_length`` 1024).
        update_template: The read-and-rewrite user message, with ``{prompt}``, ``{memory}`` and ``{chunk}``
            (MemAgent ``TEMPLATE``, verbatim).
        answer_template: The final user message, with ``{prompt}`` and ``{memory}`` (MemAgent
            ``TEMPLATE_FINAL_BOXED``, verbatim; it asks for the answer in ``\\boxed{}``, which the shared
            scorer extracts).
        no_memory: The memory before the first chunk (MemAgent: "No previous memory").
    """

    chunk_tokens: int = 5000
    memory_tokens: int = 1024
    answer_tokens: int = 1024
    update_template: str = UPDATE_TEMPLATE
    answer_template: str = ANSWER_TEMPLATE
    no_memory: str = "No previous memory"

    def __post_init__(self):
        for name in ("chunk_tokens", "memory_tokens", "answer_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"memory agent {name}: {getattr(self, name)!r}; expected a positive integer")
        for name, fields in (("update_template", ("prompt", "memory", "chunk")),
                             ("answer_template", ("prompt", "memory"))):
            have = {f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f}
            if have != set(fields):
                raise ValueError(f"memory agent {name}: has fields {sorted(have)}; expected {list(fields)}")

    def label(self) -> str:
        """The settings in a backend name (resumable outputs and fingerprints change with them)."""
        custom = "" if (self.update_template, self.answer_template, self.no_memory) == \
            (UPDATE_TEMPLATE, ANSWER_TEMPLATE, "No previous memory") else ", custom templates"
        return (f"memory agent: chunk {self.chunk_tokens}, memory {self.memory_tokens}, "
                f"answer {self.answer_tokens}{custom}")


class SplitError(ValueError):
    """A prompt that cannot be split into problem and document; the message says why."""


@dataclass(frozen=True)
class ContextTemplate:
    """A user-message template whose ``{context}`` field is the document; every other field (``{question}``,
    ``{input}``...) belongs to the problem. ``name`` says where the template comes from (in messages)."""

    name: str
    text: str

    @property
    def pattern(self) -> re.Pattern:
        """The template as an anchored regex: literal text escaped, ``{context}`` a greedy group (so the
        LAST place the tail matches ends the document), other fields lazy groups."""
        parts, seen = [], False
        for literal, field, _, _ in string.Formatter().parse(self.text):
            parts.append(re.escape(literal))
            if field == "context" and not seen:
                parts.append("(?P<context>.*)")
                seen = True
            elif field is not None:
                parts.append("(?:.*?)")
        if not seen:
            raise ValueError(f"context template {self.name!r} has no {{context}} field")
        return re.compile("".join(parts), re.DOTALL)


def split_prompt(messages: list[dict], templates=()) -> tuple[str, str]:
    """A row's chat prompt as ``(problem, document)``: the document is what the agent reads chunk by chunk,
    the problem everything else the model was told.

    The document lies in the LAST user message. Rule, in order:

    1. The first of ``templates`` (``ContextTemplate``) that the whole user message matches: its
       ``{context}`` is the document; the text before it (the intro) and after it (the tail: the question,
       KeyChain's chain instructions) form the user part of the problem.
    2. Otherwise (fallback): the text after the user message's last blank line ("\\n\\n") is the user part of
       the problem, everything before it the document (our rows, NIAH and QwenLong's template all end
       "...context\\n\\nquestion"). A user message without a blank line is a ``SplitError``.

    The problem is the system and earlier messages' contents, then the intro and the tail, joined by blank
    lines (stripped; empty parts left out). A trailing assistant message (a prefill such as RULER's answer
    prefix) is dropped: the answer template asks for ``\\boxed{}`` instead.

    Example:
        >>> split_prompt([{"role": "system", "content": "Be brief."},
        ...               {"role": "user", "content": "Read this.\\nA cat.\\n\\nB dog.\\n\\nQuestion: who?"}])
        ('Be brief.\\n\\nQuestion: who?', 'Read this.\\nA cat.\\n\\nB dog.')
        >>> split_prompt([{"role": "user", "content": "Read this.\\nA cat.\\n\\nQ: who?"}],
        ...              [ContextTemplate("demo", "Read this.\\n{context}\\n\\nQ: {question}")])
        ('Read this.\\n\\nQ: who?', 'A cat.')
    """
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise SplitError("the prompt has no user message to read a document from")
    last = users[-1]
    user = messages[last]["content"]
    for template in templates:
        match = template.pattern.fullmatch(user)
        if match:
            start, end = match.span("context")
            intro, document, tail = user[:start], user[start:end], user[end:]
            break
    else:
        cut = user.rfind("\n\n")
        if cut < 0:
            raise SplitError("the user message has no blank line separating the document from the question "
                             f"(and matches none of {len(templates)} known template(s)); its start: {user[:80]!r}")
        intro, document, tail = "", user[:cut], user[cut + 2:]
    parts = [m["content"] for m in messages[:last]] + [intro, tail]
    problem = "\n\n".join(p.strip() for p in parts if p.strip())
    return problem, document


def chunk_document(tokenizer, document: str, chunk_tokens: int) -> list[str]:
    """The document cut into pieces of ``chunk_tokens`` tokens (the last one shorter), tokenized once.

    Cuts fall on token boundaries, found with the fast tokenizer's character offsets, so the pieces join
    back to the document exactly (a slow tokenizer: the token ids decoded piece by piece). Tokenized alone, a
    piece may count a token more or less at its edges (tokens merge differently there). An empty document
    has no chunks.

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> chunk_document(AutoTokenizer.from_pretrained("gpt2"), "one two three four five", 2)  # doctest: +SKIP
        ['one two', ' three four', ' five']
    """
    return chunk_and_count(tokenizer, document, chunk_tokens)[0]


def chunk_and_count(tokenizer, document: str, chunk_tokens: int) -> tuple[list[str], int]:
    """``chunk_document``'s pieces and the document's length in tokens, from one tokenization."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens {chunk_tokens}: expected a positive integer")
    if not document:
        return [], 0
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(document, add_special_tokens=False, return_offsets_mapping=True)
        starts = [start for start, _ in enc["offset_mapping"]]
        cuts = [0]
        for k in range(chunk_tokens, len(starts), chunk_tokens):
            cuts.append(max(cuts[-1], starts[k]))
        cuts.append(len(document))
        return [document[a:b] for a, b in zip(cuts, cuts[1:])], len(starts)
    ids = tokenizer(document, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[k:k + chunk_tokens]) for k in range(0, len(ids), chunk_tokens)], len(ids)


def update_messages(config: MemoryAgentConfig, problem: str, memory: str, chunk: str) -> list[dict]:
    """One reading turn: a single user message (MemAgent sends no system prompt).

    Example:
        >>> lines = update_messages(MemoryAgentConfig(), "Q?", "No previous memory", "text")[0]["content"].splitlines()
        >>> lines[2:9]
        ['<problem> ', 'Q?', '</problem>', '', '<memory>', 'No previous memory', '</memory>']
        >>> lines[9:]
        ['', '<section>', 'text', '</section>', '', 'Updated memory:']
    """
    return [{"role": "user", "content": config.update_template.format(prompt=problem, memory=memory, chunk=chunk)}]


def answer_messages(config: MemoryAgentConfig, problem: str, memory: str) -> list[dict]:
    """The final turn: the problem and the memory, no document.

    Example:
        >>> answer_messages(MemoryAgentConfig(), "Q?", "m")[0]["content"].splitlines()[-2:]
        ['', 'Your answer:']
    """
    return [{"role": "user", "content": config.answer_template.format(prompt=problem, memory=memory)}]


def _render_tokens(tokenizer, messages: list[dict]) -> int:
    """Tokens of the prompt as a backend sends it: the chat template rendered with the generation prompt."""
    from loongrl.generation.backends import render_chat

    return len(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])


class MemoryAgentBackend:
    """Any backend (``loongrl.generation.backends``) run as a memory agent, behind the same
    ``generate(prompts, sampling, progress)``: evaluation, mining and filtering use it unchanged.

    Each prompt is split (``split_prompt``, with ``templates``) and its document chunked (``chunk_document``);
    then all items read in lockstep: turn k of every item still reading goes to ``inner`` in ONE ``generate``
    call (batched on hf:, concurrent on openai:), with ``memory_tokens`` new tokens; then one call answers
    them all with ``answer_tokens`` new tokens. ``sampling.max_new_tokens`` is not used: the config's
    budgets replace it. Greedy decoding runs one trajectory per item (its answer repeated ``n`` times, as
    the hf: backend does); sampling (temperature > 0) runs ``n`` trajectories per item, each its own
    memory (MemAgent samples the whole multi-conversation rollout): turn 0 asks ``n`` samples of the one
    first prompt, later turns one sample of each trajectory's prompt (seed ``sampling.seed + turn``).

    ``tokenizer``: the model's own (chunks are its tokens; prompts are measured with its chat template).
    ``window``: the model's context window; when given, every item is checked before anything is
    generated (problem + template + chunk + memory + new tokens, and the answer turn likewise) and every
    turn's prompt is measured before it is sent; a ``BackendError`` names the item and the numbers.

    After each ``generate``, ``traces`` holds per prompt, per sample what a reader of the results needs:
    chunks and document tokens read, the problem's tokens, each turn's memory and the longest turn prompt
    (``sample_and_score`` adds it to each sample's record as ``memory_agent``).
    """

    def __init__(self, inner, tokenizer, config: MemoryAgentConfig | None = None, templates=(),
                 window: int | None = None):
        self.inner, self.tokenizer = inner, tokenizer
        self.config = config or MemoryAgentConfig()
        self.templates, self.window = tuple(templates), window
        # The name keys resumable outputs and fingerprints: other memory-agent settings are another run.
        self.name = f"{getattr(inner, 'name', type(inner).__name__)} ({self.config.label()})"
        self.traces: list[list[dict]] = []
        self._checked: dict[str, int] = {}  # problem -> its tokens, once its turns are known to fit

    def _split(self, name: str, messages) -> tuple[str, str]:
        from loongrl.generation.backends import BackendError

        try:
            return split_prompt(list(messages), self.templates)
        except SplitError as err:
            raise BackendError(f"memory agent, {name}: {err}") from None

    def _check_budget(self, name: str, problem: str) -> int:
        """The problem's tokens; a BackendError, naming the item, when one of its turns could not fit the window.
        A problem checked before (``check_turns``, then ``generate``) is not measured again."""
        from loongrl.generation.backends import BackendError

        if problem in self._checked:
            return self._checked[problem]
        c = self.config
        problem_tokens = len(self.tokenizer(problem, add_special_tokens=False)["input_ids"])
        if self.window is None:
            self._checked[problem] = problem_tokens
            return problem_tokens
        update = _render_tokens(self.tokenizer, update_messages(c, problem, "", ""))
        answer = _render_tokens(self.tokenizer, answer_messages(c, problem, ""))
        need = update + c.chunk_tokens + 2 * c.memory_tokens
        if need > self.window:
            raise BackendError(
                f"memory agent, {name}: a reading turn needs {need} tokens > the {self.window}-token window: "
                f"problem and template {update} (problem alone {problem_tokens}) + chunk {c.chunk_tokens} + memory "
                f"{c.memory_tokens} + new tokens {c.memory_tokens}; lower --memory-chunk-tokens or --memory-tokens")
        if answer + c.memory_tokens + c.answer_tokens > self.window:
            raise BackendError(
                f"memory agent, {name}: the answer turn needs {answer + c.memory_tokens + c.answer_tokens} tokens "
                f"> the {self.window}-token window: problem and template {answer} + memory {c.memory_tokens} + "
                f"new tokens {c.answer_tokens}; lower --memory-tokens or --memory-answer-tokens")
        self._checked[problem] = problem_tokens
        return problem_tokens

    def check_turns(self, prompts, names=None) -> None:
        """Split every prompt and check its turns against the window, before anything is generated: a
        BackendError names the first that fails (``names[i]``, else "prompt i")."""
        for i, messages in enumerate(prompts):
            name = names[i] if names else f"prompt {i}"
            self._check_budget(name, self._split(name, messages)[0])

    def _measured(self, where: str, messages: list[dict], new_tokens: int) -> int:
        from loongrl.generation.backends import BackendError

        tokens = _render_tokens(self.tokenizer, messages)
        if self.window is not None and tokens + new_tokens > self.window:
            raise BackendError(f"memory agent, {where}: prompt {tokens} + new tokens {new_tokens} > the "
                               f"{self.window}-token window")
        return tokens

    def generate(self, prompts, sampling, progress=None) -> list[list[str]]:
        from dataclasses import replace

        c = self.config
        items = []  # (problem, chunks, document tokens, problem tokens)
        for i, messages in enumerate(prompts):
            problem, document = self._split(f"prompt {i}", messages)
            problem_tokens = self._check_budget(f"prompt {i}", problem)
            chunks, doc_tokens = chunk_and_count(self.tokenizer, document, c.chunk_tokens)
            items.append((problem, chunks, doc_tokens, problem_tokens))
        per_item = sampling.n if sampling.temperature > 0 else 1
        # one trajectory per (item, sample): its memories and the longest prompt it sent
        trajs = [{"item": i, "memories": [], "max_prompt_tokens": 0}
                 for i in range(len(items)) for _ in range(per_item)]
        memory = lambda t: t["memories"][-1] if t["memories"] else c.no_memory  # noqa: E731
        turns = max((len(chunks) for _, chunks, _, _ in items), default=0)
        for k in range(turns):
            reading = [t for t in trajs if k < len(items[t["item"]][1])]
            # every sample's first prompt is the same: turn 0 asks n samples of it once (hf: one batch row,
            # openai: seeds seed..seed+n-1, so the samples differ); later turns one sample per trajectory
            groups = [reading[j:j + per_item] for j in range(0, len(reading), per_item)] if k == 0 and per_item > 1 \
                else [[t] for t in reading]
            messages = []
            for group in groups:
                t = group[0]
                problem, chunks = items[t["item"]][:2]
                messages.append(update_messages(c, problem, memory(t), chunks[k]))
                tokens = self._measured(f"prompt {t['item']} turn {k}", messages[-1], c.memory_tokens)
                for u in group:
                    u["max_prompt_tokens"] = max(u["max_prompt_tokens"], tokens)
            replies = self.inner.generate(messages, replace(sampling, n=len(groups[0]), max_new_tokens=c.memory_tokens,
                                                            seed=sampling.seed + k))
            for group, texts in zip(groups, replies):
                for u, reply in zip(group, texts):
                    u["memories"].append(reply)  # the reply replaces the memory (MemAgent: eos removed)
        messages = []
        for t in trajs:
            messages.append(answer_messages(c, items[t["item"]][0], memory(t)))
            tokens = self._measured(f"prompt {t['item']} answer", messages[-1], c.answer_tokens)
            t["max_prompt_tokens"] = max(t["max_prompt_tokens"], tokens)
        answers = self.inner.generate(messages, replace(sampling, n=1, max_new_tokens=c.answer_tokens,
                                                        seed=sampling.seed + turns))
        out, self.traces = [], []
        for i, (problem, chunks, doc_tokens, problem_tokens) in enumerate(items):
            mine = list(range(i * per_item, (i + 1) * per_item))
            texts = [answers[m][0] for m in mine] * (sampling.n // per_item)
            out.append(texts)
            self.traces.append([{"chunks": len(chunks), "tokens_read": doc_tokens, "problem_tokens": problem_tokens,
                                 "max_prompt_tokens": trajs[m]["max_prompt_tokens"],
                                 "memories": trajs[m]["memories"]} for m in mine] * (sampling.n // per_item))
        if progress:
            progress(len(prompts))
        return out
