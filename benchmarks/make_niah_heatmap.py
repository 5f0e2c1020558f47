# Scripted responder (NOT a model): finds the needle's number in the prompt and answers it, except
# for needles between 30% and 70% depth in contexts over 64K tokens, where it answers a wrong number.
import re, sys
sys.path.insert(0, "src")  # run from the repo root: .venv/bin/python benchmarks/make_niah_heatmap.py
from loongrl.data.tokens import default_tokenizer, get_counter
from loongrl.eval import niah, report
from loongrl.generation.backends import SamplingConfig
from loongrl.eval.run import run_eval

class Scripted:
    name = "scripted"
    def generate(self, prompts, sampling):
        out = []
        for m in prompts:
            user = m[-1]["content"]
            num = re.search(r"number is: (\d{7})", user).group(1)
            depth = user.index(num) / len(user)
            out.append([f"The number is {num}." if not (0.3 < depth < 0.7 and len(user) > 64000 * 4) else "The number is 1000000."])
        return out

c = get_counter(default_tokenizer())
L, D = niah.grid()
items = niah.build_grid(c, L, D)
recs = run_eval(items, Scripted(), SamplingConfig(), niah.make_scorer(), "/tmp/loongrl_heatmap/samples.jsonl", {}, progress=False)
summary, rows, matrix, lengths, depths = niah.summarize(recs)
report.heatmap("docs/niah_heatmap_scripted.png", matrix, [f"{n/1000:g}K" for n in lengths], [f"{d:g}" for d in depths],
               "NIAH grid (scripted responder, not a model)")
print(report.markdown_table(["depth"] + [str(n) for n in lengths], rows))
