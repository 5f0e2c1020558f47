"""LongBench v1 reasoning subsets (hotpotqa, 2wikimqa, musique, narrativeqa, qasper) with two presets.

- ``official``: LongBench's own prompt per dataset (``dataset2prompt.json``), no system prompt,
  greedy, LongBench's max new tokens (``dataset2maxlen.json``), the raw output scored with
  LongBench's ``qa_f1_score`` (``loongrl.rewards.scorers.token_f1``), max over the gold answers.
- ``loongrl``: the LoongRL system prompt, QwenLong-L1's user template (LoongRL's own user template
  is unknown), temperature 0.6, top-p 0.95, 8 samples, 10,000 new tokens; each sample is scored by
  the shared reward (``data_source`` ``longbench_{dataset}``, ``require_think`` off): the one answer
  of ``extract.final_answer`` (the last box, else the text after the last "the answer is")
  two-way matched against the golds, OR the optional LLM judge; the item score is the mean over
  samples (average pass@1). LoongRL's analysis code counts a sample if the box OR the "the answer
  is" text matches (``boxed_exact_match``/``direct_exact_match``): ``make_scorer(..., faithful=True)``.

Both middle-truncate the user prompt to ``max_input_tokens`` with the model's tokenizer before the
chat template (LongBench pred.py): keep the first and last ``max_input_tokens // 2`` tokens.
Rows come from the official data: a folder holding ``{dataset}.jsonl``, one such file, the repo's
``data.zip`` (members ``data/{dataset}.jsonl``), or the hub (``hf:THUDM/LongBench`` or
``hf:zai-org/LongBench``: ``data.zip`` downloaded with ``huggingface_hub``, needs network once; the
repo's loading script is not used, ``datasets`` >= 4 refuses scripts).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from itertools import islice
from dataclasses import dataclass, replace

from loongrl.data.prompts import LOONGRL_SYSTEM
from loongrl.readers import InputError, iter_json_rows
from loongrl.generation.backends import SamplingConfig
from loongrl.eval.run import EvalItem
from loongrl.rewards import extract, scorers
from loongrl.rewards.router import score_batch
from loongrl.tasks import shared_data_dir

DATASETS = ("hotpotqa", "2wikimqa", "musique", "narrativeqa", "qasper")
REQUIRED_FIELDS = {"input": str, "context": str, "answers": list, "_id": str}
QWENLONG_TEMPLATE = ("Please read the following text and answer the question below.\n\n<text>\n{context}\n</text>\n\n"
                     "{input}\n\nFormat your response as follows: \"Therefore, the answer is (insert answer here)\".")
# NarrativeQA length split (LoongRL Table 3): context tokens by the model's tokenizer, K = 1024.
NARRATIVEQA_BUCKETS = ((0, 16 * 1024, "0-16K"), (16 * 1024, 32 * 1024, "16-32K"), (32 * 1024, 64 * 1024, "32-64K"),
                       (64 * 1024, float("inf"), ">=64K"))


@dataclass(frozen=True)
class Preset:
    name: str
    system_prompt: str | None
    template: str | None
    """User template with {context} and {input}; None = LongBench's per-dataset prompt."""
    scoring: str
    """"f1" (LongBench qa_f1_score on the raw output) or "loongrl" (boxed / "the answer is" / judge)."""
    sampling: SamplingConfig
    """max_new_tokens 0 = LongBench's per-dataset value."""
    max_input_tokens: int
    strip_think: bool = False
    """f1 scoring only: score the text after the last </think> (for reasoning models; not official)."""


PRESETS = {
    # 31,500 is LongBench's model2maxlen for 32K-window models; pass the model's own window.
    "official": Preset("official", None, None, "f1", SamplingConfig(n=1, temperature=0.0, max_new_tokens=0), 31500),
    "loongrl": Preset("loongrl", LOONGRL_SYSTEM, QWENLONG_TEMPLATE, "loongrl",
                      SamplingConfig(n=8, temperature=0.6, top_p=0.95, max_new_tokens=10000), 120000),
}


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown LongBench preset {name!r} (choose from {', '.join(PRESETS)})")
    preset = PRESETS[name]
    sampling = {k: overrides.pop(k) for k in ("n", "temperature", "top_p", "max_new_tokens", "seed")
                if overrides.get(k) is not None}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(preset, sampling=replace(preset.sampling, **sampling), **overrides)


def load_configs(data_dir: str | None = None) -> tuple[dict, dict]:
    """LongBench's dataset2prompt.json and dataset2maxlen.json (verbatim copies in the data folder)."""
    folder = os.path.join(data_dir or shared_data_dir(), "longbench_prompts")
    with open(os.path.join(folder, "dataset2prompt.json"), encoding="utf-8") as f:
        prompts = json.load(f)
    with open(os.path.join(folder, "dataset2maxlen.json"), encoding="utf-8") as f:
        maxlen = json.load(f)
    return prompts, maxlen


def hub_zip(repo_id: str, revision: str | None = None) -> str:  # pragma: no mutate block (subprocess test)
    """Local path of the LongBench repo's ``data.zip`` (downloaded once into the Hugging Face cache)."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, "data.zip", repo_type="dataset", revision=revision)


def _zip_rows(path: str, dataset: str) -> tuple[str, Iterator[tuple[int, object]]]:
    """(label, rows) of ``{dataset}.jsonl`` inside a LongBench ``data.zip`` (``data/`` preferred)."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == f"{dataset}.jsonl"]
        if not names:
            raise FileNotFoundError(f"{path} has no {dataset}.jsonl (expected data/{dataset}.jsonl)")
        member = min(names, key=lambda n: (n != f"data/{dataset}.jsonl", len(n)))
        text = archive.read(member).decode("utf-8")
    label = f"{path}:{member}"

    def rows():
        for n, line in enumerate(io.StringIO(text), start=1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, InputError(label, n, "<line>", f"invalid JSON ({e.msg})", "invalid_json")
    return label, rows()


def load_rows(dataset: str, data: str, limit: int | None = None) -> list[dict]:
    """Rows of one LongBench dataset from a folder with ``{dataset}.jsonl``, a jsonl file, the
    repo's ``data.zip``, or ``hf:OWNER/NAME[@REVISION]`` (that repo's ``data.zip``). Each row is
    checked for input/context/answers/_id.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown LongBench dataset {dataset!r} (choose from {', '.join(DATASETS)})")
    if data.startswith("hf:"):
        repo, _, revision = data[3:].partition("@")
        data = hub_zip(repo, revision or None)
    if os.path.isfile(data) and zipfile.is_zipfile(data):
        path, rows = _zip_rows(data, dataset)
    else:
        path = os.path.join(data, f"{dataset}.jsonl") if os.path.isdir(data) else data
        if not os.path.exists(path):
            raise FileNotFoundError(f"LongBench file not found: {path} (pass the folder of the official "
                                    "jsonl files, one file, data.zip, or hf:THUDM/LongBench)")
        rows = iter_json_rows(path)
    out = []
    for n, row in rows:
        if isinstance(row, InputError):
            raise row
        if not isinstance(row, dict):
            raise InputError(path, n, "<row>", "not a JSON object", "not_an_object")
        for key, kind in REQUIRED_FIELDS.items():
            if not isinstance(row.get(key), kind):
                raise InputError(path, n, key, f"missing or not a {kind.__name__}", "bad_field")
        if not row["answers"] or not all(isinstance(a, str) for a in row["answers"]):
            raise InputError(path, n, "answers", "must be a non-empty list of strings", "bad_field")
        if row.get("dataset") not in (None, dataset):
            raise InputError(path, n, "dataset", f"is {row['dataset']!r}, expected {dataset!r}", "bad_field")
        out.append(row)
        if limit and len(out) >= limit:
            break
    return out


def middle_truncate(text: str, tokenizer, max_tokens: int) -> tuple[str, int]:
    """LongBench pred.py: over ``max_tokens``, keep the first and last ``max_tokens // 2`` tokens,
    each half decoded with special tokens skipped. Returns (text, token count before truncation)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text, len(ids)
    half = max_tokens // 2
    return (tokenizer.decode(ids[:half], skip_special_tokens=True)
            + tokenizer.decode(ids[-half:], skip_special_tokens=True)), len(ids)


def length_bucket(tokens: int) -> str:
    for low, high, label in NARRATIVEQA_BUCKETS:
        if low <= tokens < high:
            return label
    raise AssertionError(tokens)


def build_items(dataset: str, rows: Sequence[dict], preset: Preset, tokenizer, data_dir: str | None = None) -> list[EvalItem]:
    """One item per row: the (truncated) prompt as chat messages, golds, and meta with the prompt's
    token count, whether it was truncated and, for narrativeqa, the context-length bucket."""
    prompts, _ = load_configs(data_dir)
    template = preset.template or prompts[dataset]
    items = []
    for row in rows:
        user, tokens = middle_truncate(template.format(context=row["context"], input=row["input"]), tokenizer,
                                       preset.max_input_tokens)
        meta = {"dataset": dataset, "input_tokens": tokens, "truncated": tokens > preset.max_input_tokens,
                "length": row.get("length")}
        if dataset == "narrativeqa":
            context_tokens = len(tokenizer(row["context"], add_special_tokens=False)["input_ids"])
            meta.update(context_tokens=context_tokens, bucket=length_bucket(context_tokens))
        messages = ([{"role": "system", "content": preset.system_prompt}] if preset.system_prompt else []) + [
            {"role": "user", "content": user}]
        items.append(EvalItem(f"{dataset}/{row['_id']}", dataset, messages, list(row["answers"]), row["input"], meta))
    return items


def sampling_for(dataset: str, preset: Preset, data_dir: str | None = None) -> SamplingConfig:
    if preset.sampling.max_new_tokens:
        return preset.sampling
    _, maxlen = load_configs(data_dir)
    return replace(preset.sampling, max_new_tokens=maxlen[dataset])


def make_scorer(preset: Preset, judge=None, faithful: bool = False):
    """The scorer for the preset: LongBench's F1, or the shared reward (``loongrl.rewards.router``)
    for ``longbench_{dataset}`` rows; ``faithful`` is LoongRL's boxed-OR-"the answer is" rule."""

    def f1(items, responses):
        out = []
        for item, texts in zip(items, responses):
            preds = [extract.after_think(t, require=False) if preset.strip_think else t for t in texts]
            out.append([{"pred": p, "score": scorers.token_f1(p, item.golds)} for p in preds])
        return out

    def loongrl(items, responses):
        rows = [{"data_source": f"longbench_{item.task}", "response": text, "ground_truth": item.golds,
                 "question": item.question} for item, texts in zip(items, responses) for text in texts]
        results = iter(score_batch(rows, judge=judge, require_think=False, faithful=faithful))
        return [[{k: r[k] for k in ("pred", "rule", "judge", "score")} for r in islice(results, len(texts))]
                for texts in responses]

    return f1 if preset.scoring == "f1" else loongrl


def summarize(records: Sequence[dict]) -> tuple[dict, list[list]]:
    """Per-dataset score (100 x mean), the unweighted average, and NarrativeQA buckets."""
    from loongrl.eval.report import group_scores, mean100

    by_task = group_scores(records, lambda r: r["task"])
    rows = [[task, len(s), mean100(s)] for task, s in by_task.items()]
    summary = {"scores": {task: mean100(s) for task, s in by_task.items()},
               "average": round(sum(r[2] for r in rows) / len(rows), 2) if rows else None,
               "items": {task: len(s) for task, s in by_task.items()}}
    buckets = group_scores([r for r in records if "bucket" in r["meta"]], lambda r: r["meta"]["bucket"])
    if buckets:
        order = [label for _, _, label in NARRATIVEQA_BUCKETS]
        summary["narrativeqa_buckets"] = {b: {"items": len(buckets[b]), "score": mean100(buckets[b])}
                                          for b in order if b in buckets}
    rows.append(["average", sum(r[1] for r in rows), summary["average"]])
    return summary, rows
