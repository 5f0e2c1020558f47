"""Real LongBench-format rows (input, context, answers, length, dataset, language, all_classes, _id)
built from the shipped HotpotQA / MuSiQue / 2Wiki subsets; contexts are "Passage i:\\n<title>\\n<text>"."""

from __future__ import annotations

import json
import os

from conftest import INPUTS

from loongrl.data.sources import load_source


def rows(dataset: str, source: str, n: int, start: int = 0, passages_per_row: int | None = None) -> list[dict]:
    loaded = load_source(source, INPUTS[source])
    out = []
    for rec in loaded.records[start:start + n]:
        ids = list(rec.passage_ids)
        if passages_per_row:  # long contexts: the item's passages then other items' passages
            ids += [p for p in range(len(loaded.pool)) if p not in ids][:passages_per_row - len(ids)]
        context = "\n\n".join(f"Passage {i + 1}:\n{loaded.pool.titles[p]}\n{loaded.pool.texts[p]}"
                              for i, p in enumerate(ids))
        out.append({"input": rec.question, "context": context, "answers": rec.answers,
                    "length": len(context.split()), "dataset": dataset, "language": "en", "all_classes": None,
                    "_id": rec.id})
    return out


def write(folder: str, dataset: str, data: list[dict]) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{dataset}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in data)
    return path
