"""RULER's synthetic task generators, shared by RULER evaluation and Book RULER training data.

Tasks are data (``synthetic.yaml``: task kind + args, registered by name in ``tasks()``), each kind
has a generator (``GENERATORS``) that builds a ``Sample`` from a random source and a haystack size,
from RULER's templates, word lists and essay haystack (or any book). ``fit`` finds the largest size
whose prompt fits a token budget. Metrics and the evaluation protocol live in ``loongrl.eval.ruler``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import string
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from loongrl.readers import iter_json_rows
from loongrl.tasks import shared_data_dir

DEPTHS = [round(x * 100 / 39) for x in range(40)]  # np.round(np.linspace(0, 100, 40))


class RulerData:
    """Templates, task configs, word lists, essays and QA sources (loaded lazily)."""

    def __init__(self, data_dir: str | None = None, squad_path: str | None = None, hotpotqa_path: str | None = None,
                 book_path: str | None = None):
        self.dir = data_dir or shared_data_dir()
        self.book_path = book_path
        self.squad_path = squad_path
        self.hotpotqa_path = hotpotqa_path or os.path.join(self.dir, "hotpotqa", "hotpotqa_distractor_subset.json.gz")

    @cached_property
    def templates(self) -> dict:
        with open(os.path.join(self.dir, "ruler", "ruler_templates.json"), encoding="utf-8") as f:
            return json.load(f)

    @cached_property
    def tasks(self) -> dict:
        import yaml

        with open(os.path.join(self.dir, "ruler", "synthetic.yaml"), encoding="utf-8") as f:
            return yaml.safe_load(f)

    def _words(self, name: str) -> list[str]:
        with open(os.path.join(self.dir, "ruler", "wonderwords_3.0.1", name), encoding="utf-8") as f:
            return [w.strip() for w in f if w.strip()]

    @cached_property
    def nouns(self) -> list[str]:
        return self._words("nounlist.txt")

    @cached_property
    def adjectives(self) -> list[str]:
        return self._words("adjectivelist.txt")

    @cached_property
    def all_words(self) -> list[str]:
        return sorted(set(self.nouns + self.adjectives + self._words("verblist.txt")))

    @cached_property
    def essay_words(self) -> list[str]:
        with open(os.path.join(self.dir, "pg_essays", "ruler_PaulGrahamEssays.json"), encoding="utf-8") as f:
            return re.sub(r"\s+", " ", json.load(f)["text"]).strip().split(" ")

    @cached_property
    def book_words(self) -> list[str]:
        """The "book" haystack: any plain-text file (e.g. a PG19 book) or, by default, the essays."""
        if not self.book_path:
            return self.essay_words
        opener = gzip.open if self.book_path.endswith(".gz") else open
        with opener(self.book_path, "rt", encoding="utf-8") as f:
            text = f.read()
        words = re.sub(r"\s+", " ", text).strip().split(" ")
        if len(words) < 1000:
            raise ValueError(f"{self.book_path}: a book haystack needs at least 1,000 words, found {len(words)}")
        return words

    def qa(self, dataset: str) -> tuple[list[dict], list[str]]:
        """(questions with gold doc indices and answers, all unique documents)."""
        if dataset == "squad":
            if not self.squad_path:
                raise ValueError("RULER qa_1 needs SQuAD v2 dev (dev-v2.0.json): pass --squad PATH")
            return _read_squad(self.squad_path)
        return _read_hotpotqa(self.hotpotqa_path)

    @cached_property
    def _qa_cache(self) -> dict:
        return {}

    def qa_cached(self, dataset: str):
        if dataset not in self._qa_cache:
            self._qa_cache[dataset] = self.qa(dataset)
        return self._qa_cache[dataset]


def _read_squad(path: str) -> tuple[list[dict], list[str]]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    docs: dict[str, int] = {}
    questions = []
    for a, article in enumerate(data.get("data", [])):
        for p, para in enumerate(article.get("paragraphs", [])):
            if not isinstance(para.get("context"), str):
                raise ValueError(f"{path}: data[{a}].paragraphs[{p}]: field 'context' missing")
            idx = docs.setdefault(para["context"], len(docs))
            for qa in para.get("qas", []):
                answers = [x["text"] for x in qa.get("answers", [])]
                if answers and not qa.get("is_impossible"):
                    questions.append({"question": qa["question"], "answers": answers, "docs": [idx]})
    if not questions:
        raise ValueError(f"{path}: no answerable SQuAD questions found")
    return questions, list(docs)


def _read_hotpotqa(path: str) -> tuple[list[dict], list[str]]:
    docs: dict[str, int] = {}
    questions = []
    for n, row in iter_json_rows(path):
        try:
            idx = [docs.setdefault(f"{title}\n{''.join(sents)}", len(docs)) for title, sents in row["context"]]
            questions.append({"question": row["question"], "answers": [row["answer"]], "docs": idx})
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: row {n}: bad HotpotQA row ({err})") from None
    return questions, list(docs)


@dataclass
class Sample:
    user: str
    answer_prefix: str
    answers: list[str]
    meta: dict


Generator = Callable[[RulerData, dict, random.Random, int], Sample]
GENERATORS: dict[str, Generator] = {}
UNIT_SIZES: dict[str, Callable[[dict], float]] = {}
"""First guess of haystack units (words, sentences, documents...) per 1K tokens, from task args."""


def register(kind: str, units_per_1k: float | Callable[[dict], float]):
    def wrap(fn: Generator) -> Generator:
        GENERATORS[kind] = fn
        UNIT_SIZES[kind] = units_per_1k if callable(units_per_1k) else (lambda args: units_per_1k)
        return fn
    return wrap


def _key(data: RulerData, rng: random.Random, kind: str) -> str:
    if kind == "words":
        return f"{rng.choice(data.adjectives)}-{rng.choice(data.nouns)}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle type {kind!r}")


def _value(rng: random.Random, kind: str) -> str:
    if kind == "numbers":
        return str(rng.randint(1_000_000, 9_999_999))
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle value type {kind!r}")


def _insert(rng: random.Random, sentences: list[str], needles: list[str]) -> list[str]:
    """Needles at depths drawn from RULER's 40 depths (sorted, so their order is kept)."""
    depths = sorted(rng.sample(DEPTHS, len(needles))) if len(needles) <= len(DEPTHS) else sorted(
        rng.choices(DEPTHS, k=len(needles)))
    out, prev = [], 0
    for depth, needle in zip(depths, needles):
        pos = int(len(sentences) * depth / 100)
        out += sentences[prev:pos] + [needle]
        prev = pos
    return out + sentences[prev:]


_SENT_END = re.compile(r"(?<=[.!?])\s+")


def _niah_units(args: dict) -> float:
    hay = args["type_haystack"]
    if hay in ("essay", "book"):
        return 700  # words
    if hay == "noise":
        return 45  # sentences
    return 22 if "uuids" in (args["type_needle_k"], args["type_needle_v"]) else 48  # distractor needles


def singular_niah_template(template: str) -> str:
    """RULER's singular wording of its niah template (one key, one value)."""
    return template.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")


@register("niah", units_per_1k=_niah_units)
def gen_niah(data: RulerData, args: dict, rng: random.Random, size: int) -> Sample:
    t = data.templates
    fmt = t["niah_needle_format"]
    nv, nq = args["num_needle_v"], args["num_needle_q"]
    nk = max(args["num_needle_k"], nq)  # RULER: every queried key has a needle
    tv = args["type_needle_v"]
    keys = [_key(data, rng, args["type_needle_k"]) for _ in range(nk)]
    values = [[_value(rng, tv) for _ in range(nv)] for _ in range(nk)]
    needles = [fmt.format(type_needle_v=tv, key=k, value=v) for k, vs in zip(keys, values) for v in vs]
    rng.shuffle(needles)
    queried = rng.sample(range(nk), nq)
    hay = args["type_haystack"]
    hay_rng = random.Random(rng.random())  # haystack draws do not shift the needles
    if hay == "essay":
        words = data.essay_words
        text = " ".join(words[i % len(words)] for i in range(size))
        context = " ".join(_insert(hay_rng, _SENT_END.split(text), needles))
    elif hay == "book":  # LoongRL's Book RULER: a random stretch of the book, needles at random sentence ends
        words = data.book_words
        start = hay_rng.randrange(len(words))
        sentences = _SENT_END.split(" ".join(words[(start + i) % len(words)] for i in range(size)))
        gaps = range(len(sentences) + 1)
        slots = sorted(hay_rng.sample(gaps, len(needles)) if len(needles) <= len(gaps)
                       else hay_rng.choices(gaps, k=len(needles)))
        parts, j = [], 0
        for i, sentence in enumerate(sentences):
            while j < len(slots) and slots[j] == i:
                parts.append(needles[j])
                j += 1
            parts.append(sentence)
        context = " ".join(parts + needles[j:])
    elif hay == "noise":
        context = " ".join(_insert(hay_rng, [t["noise_haystack_sentence"]] * size, needles))
    elif hay == "needle":
        distract = [fmt.format(type_needle_v=tv, key=_key(data, hay_rng, args["type_needle_k"]), value=_value(hay_rng, tv))
                    for _ in range(size)]
        context = "\n".join(_insert(hay_rng, distract, needles))
    else:
        raise ValueError(f"unknown haystack {hay!r}")
    qkeys = [keys[i] for i in queried]
    query = ", ".join(qkeys[:-1]) + ", and " + qkeys[-1] if len(qkeys) > 1 else qkeys[0]
    template, prefix, type_v = t["tasks"]["niah"]["template"], t["tasks"]["niah"]["answer_prefix"], tv
    if nq * nv == 1:  # RULER's singular wording
        template = singular_niah_template(template)
        prefix = prefix.replace("are", "is")
        type_v = tv[:-1]
    return Sample(template.format(type_needle_v=type_v, context=context, query=query),
                  prefix.format(type_needle_v=type_v, query=query),
                  [v for i in queried for v in values[i]], {"haystack": hay, "units": size})


def _var_name(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=5))


@register("variable_tracking", units_per_1k=45)
def gen_vt(data: RulerData, args: dict, rng: random.Random, size: int) -> Sample:
    t = data.templates
    fmt = t["variable_tracking_chain_format"]
    chains, names = [], set()
    for _ in range(args["num_chains"]):
        value = str(rng.randint(10000, 99999))
        chain_vars = []
        while len(chain_vars) < args["num_hops"] + 1:
            name = _var_name(rng)
            if name not in names:
                names.add(name)
                chain_vars.append(name)
        lines = [fmt["first"].format(var=chain_vars[0], value=value)] + [
            fmt["next"].format(var_next=b, var_prev=a) for a, b in zip(chain_vars, chain_vars[1:])]
        chains.append((value, chain_vars, lines))
    hay_rng = random.Random(rng.random())
    statements = [line for _, _, lines in chains for line in lines]
    context = " ".join(_insert(hay_rng, [t["noise_haystack_sentence"]] * size, [s.strip() + "." for s in statements]))
    value, chain_vars, _ = chains[0]
    task = t["tasks"]["variable_tracking"]
    return Sample(task["template"].format(context=context, query=value),
                  task["answer_prefix"].format(num_v=len(chain_vars), query=value), chain_vars,
                  {"units": size})


@register("common_words_extraction", units_per_1k=130)
def gen_cwe(data: RulerData, args: dict, rng: random.Random, size: int) -> Sample:
    words = data.all_words
    picked = rng.sample(words, args["num_cw"] + min(size, len(words) - args["num_cw"]))
    common, uncommon = picked[:args["num_cw"]], picked[args["num_cw"]:]
    listing = common * args["freq_cw"] + uncommon * args["freq_ucw"]
    random.Random(rng.random()).shuffle(listing)
    context = " ".join(f"{i + 1}. {w}" for i, w in enumerate(listing))
    task = data.templates["tasks"]["common_words_extraction"]
    return Sample(task["template"].format(context=context), task["answer_prefix"], common, {"units": size})


@register("freq_words_extraction", units_per_1k=330)
def gen_fwe(data: RulerData, args: dict, rng: random.Random, size: int) -> Sample:
    vocab_size, alpha = 2000, args["alpha"]
    vocab: list[str] = []
    seen = set()
    while len(vocab) < vocab_size:
        w = "".join(rng.choices(string.ascii_lowercase, k=6))
        if w not in seen:
            seen.add(w)
            vocab.append(w)
    vocab[0] = "...."  # the noise token, most frequent; RULER's prompt says to ignore the dots
    weights = [1 / (rank ** alpha) for rank in range(1, vocab_size + 1)]
    text = random.Random(rng.random()).choices(vocab, weights=weights, k=size)
    counts = Counter(text)
    ranked = sorted((w for w in counts if w != "...."), key=lambda w: (-counts[w], vocab.index(w)))
    task = data.templates["tasks"]["freq_words_extraction"]
    return Sample(task["template"].format(context=" ".join(text)), task["answer_prefix"], ranked[:3],
                  {"units": size, "counts": [counts[w] for w in ranked[:4]]})


@register("qa", units_per_1k=7)
def gen_qa(data: RulerData, args: dict, rng: random.Random, size: int) -> Sample:
    questions, docs = data.qa_cached(args["dataset"])
    q = questions[rng.randrange(len(questions))]
    gold = list(dict.fromkeys(q["docs"]))
    others = random.Random(rng.random()).sample(range(len(docs)), min(len(docs), size + len(gold)))
    chosen = gold + [d for d in others if d not in gold][:max(0, size - len(gold))]
    random.Random(rng.random()).shuffle(chosen)
    t = data.templates
    context = t["qa_documents_joiner"].join(t["qa_document_format"].format(i=i + 1, document=docs[d])
                                            for i, d in enumerate(chosen))
    task = t["tasks"]["qa"]
    return Sample(task["template"].format(context=context, query=q["question"]), task["answer_prefix"],
                  q["answers"], {"units": len(chosen)})


@dataclass(frozen=True)
class RulerTask:
    name: str
    kind: str
    args: dict


def tasks(data: RulerData) -> dict[str, RulerTask]:
    """The task registry: every entry of synthetic.yaml whose kind has a generator."""
    out = {}
    for name, cfg in data.tasks.items():
        if cfg["task"] not in GENERATORS:
            raise ValueError(f"synthetic.yaml: task {name}: no generator for kind {cfg['task']!r}")
        out[name] = RulerTask(name, cfg["task"], dict(cfg.get("args") or {}))
    return out


def fit(build: Callable[[int], Sample], count: Callable[[Sample], int], budget: int, first: int,
        tolerance: float = 0.005) -> tuple[Sample, int, int]:
    """The sample with the largest size whose count is <= budget, to within ``tolerance`` of the
    budget (or one size unit). Sizes are guessed from the tokens-per-unit rate of the last probe,
    so a 128K sample needs 3-5 exact counts instead of a ~17-step binary search.
    Returns (sample, tokens, probes)."""
    lo, lo_sample, lo_tokens, hi = 0, None, 0, None
    size, probes = max(1, first), 0
    while True:
        sample = build(size)
        tokens = count(sample)
        probes += 1
        if tokens <= budget:
            lo, lo_sample, lo_tokens = size, sample, tokens
        else:
            hi = size
        if (hi is not None and hi - lo <= 1) or (lo_sample is not None and budget - lo_tokens <= budget * tolerance):
            break
        guess = int(size * budget / max(tokens, 1))
        if guess <= lo:
            guess = lo + max(1, (lo // 100))
        if hi is not None and guess >= hi:
            guess = (lo + hi) // 2
        size = guess
        if probes > 40:
            break
    if lo_sample is None:
        raise ValueError(f"even the smallest haystack does not fit in {budget} tokens")
    return lo_sample, lo_tokens, probes


