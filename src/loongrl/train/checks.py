"""Checks before launch: what a recipe would otherwise only meet on the GPUs, after launch, checked here first.

`run_checks(recipe)` reads what it needs (the model's config.json and tokenizer from a local folder or the
Hugging Face hub cache, never the network; every data file of every stage) and returns every problem and
warning at once, one line each. `loongrl train` runs it before any stage starts: `--dry-run` prints the
checks that ran and then the commands, `--preflight` before its CPU run, every launch (verl and TRL)
before the first stage. Any problem: the lines are printed as `error: ...` and the command exits 2.

    [check] Ulysses SP 4 divides 28 attention heads and 4 KV heads (Qwen/Qwen2.5-7B-Instruct config.json)
    [check] warmup: token budget 26624/GPU x SP 4 = 106496 >= prompt 22528 + response 4096 (actor, ref, rollout log-prob)
    [check] qa_hotpotqa.parquet: 7,480 of 7,500 rows fit warmup's (0, 22528] prompt tokens; 20 longer would be dropped
    error: stage1: data file not found: /data/keychain_musique.parquet

What is checked, each against the verl 0.9.1 line that would fail otherwise (cited where it is checked):

- parallelism (verl only): attention and KV heads against Ulysses SP, the GPUs (nnodes x gpus_per_node)
  against rollout TP and SP, the PPO mini-batch against the data-parallel size. The preflight runs with
  one worker and SP 1, so it never meets these: they are checked here with the real cluster's numbers;
- token budgets (verl only): dynamic batching's tokens per GPU x SP must hold prompt + response;
- the context window: prompt + response (SFT: max_length) against the model's max_position_embeddings;
  verl runs get YaRN rope scaling when (and only when) the lengths need it (`rope_scaling_plan`);
- data: every file opened, every row's schema checked (file, row and field named) and its length counted
  with the model's tokenizer, as the stage will count it, with the rows each stage would drop.

A check that cannot run (a hub model whose config or tokenizer is not in the local cache) is a warning that
says what was not checked, never silence.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field

# a model's config, window and YaRN plan: one implementation, shared with evaluation
from loongrl.generation.window import model_file, model_window, read_model_config, rope_plan, rope_scaling_of

from .recipe import Recipe, RecipeError, Stage


@dataclass
class CheckReport:
    """What `run_checks` found: `ran` (one line per check that ran), `warnings`, `problems`."""

    ran: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def print(self, show_ran: bool = True) -> None:
        """`[check]` and `warning:` lines on stdout, `error:` lines on stderr."""
        if show_ran:
            for line in self.ran:
                print(f"[check] {line}")
        for line in self.warnings:
            print(f"warning: {line}")
        for line in self.problems:
            print(f"error: {line}", file=sys.stderr)
        sys.stdout.flush()


class CheckError(RecipeError):
    """A recipe that failed its checks before launch; `report` holds every problem."""

    def __init__(self, report: CheckReport):
        super().__init__(f"{len(report.problems)} problem(s) before launch:\n" + "\n".join(report.problems))
        self.report = report


# ---------------------------------------------------------------------------------------- the window
def stage_length(stage: Stage) -> int:
    """The longest sequence a stage trains on: prompt + response (RL; with the memory agent, one
    conversation's) or max_length (SFT)."""
    if stage.rl is not None:
        return sum(stage.rl.verl_lengths())
    return stage.sft.max_length


def rope_scaling_plan(recipe: Recipe, stage: Stage) -> dict | None:
    """YaRN for a verl stage whose sequences exceed the model's native window, else None.

    factor = the smallest power of two with factor x native window >= the stage's longest sequence
    (`loongrl.generation.window.yarn_plan`, which evaluation's `--rope-scaling auto` uses too). Never when the
    native window covers the lengths, when `cluster.rope_scaling` is `off`, when the model already has rope
    scaling (respected as it is) or when its config cannot be read (a warning says so).

    Returns {"factor", "native", "length", "rope_scaling", "max_position_embeddings"}."""
    config, where = read_model_config(recipe.model)
    if config is None:
        return None
    return rope_plan(config, where, stage_length(stage), recipe.cluster.rope_scaling)


def write_rope_config(recipe: Recipe, plan: dict, folder: str) -> str:
    """The model's config.json with the plan's YaRN written into `folder` (verl's `model.hf_config_path`)."""
    from loongrl.data.io import write_json_atomic

    config_path = model_file(recipe.model, "config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    # max_position_embeddings = factor x native: verl's rollout refuses a max_model_len above it
    # (verl/workers/rollout/vllm_rollout/vllm_async_server.py:1107, sglang_rollout/async_sglang_server.py:170),
    # and transformers 4 derives YaRN's factor from max_position_embeddings / original_max_position_embeddings.
    config.update(rope_scaling=plan["rope_scaling"], max_position_embeddings=plan["max_position_embeddings"])
    config.pop("rope_parameters", None)
    os.makedirs(folder, exist_ok=True)
    write_json_atomic(os.path.join(folder, "config.json"), config)
    gen = model_file(recipe.model, "generation_config.json")  # verl reads it from hf_config_path too
    if gen is not None:
        with open(gen, encoding="utf-8") as f:
            write_json_atomic(os.path.join(folder, "generation_config.json"), json.load(f))
    return folder


def check_window(recipe: Recipe, config: dict, where: str, report: CheckReport, engine: str) -> None:
    native = int(config.get("max_position_embeddings") or 0)
    existing = rope_scaling_of(config)
    if not native:
        report.warnings.append(f"{where} has no max_position_embeddings: the context window was not checked")
        return
    for stage in recipe.stages:
        length, what = stage_length(stage), ("prompt + response" if stage.rl is not None else "max_length")
        if existing is not None:
            window = model_window(config)
            kind = existing.get("rope_type") or existing.get("type")
            if length > window:
                report.problems.append(f"{stage.name}: {what} {length} exceeds the {window:.0f}-token window of the "
                                       f"model's own rope scaling ({kind}, {where})")
            else:
                report.ran.append(f"{stage.name}: {what} {length} <= {window:.0f}-token window of the model's own "
                                  f"rope scaling ({kind}; kept as it is)")
            continue
        if length <= native:
            report.ran.append(f"{stage.name}: {what} {length} <= {native}-token native window: no rope scaling")
        elif engine == "trl":
            report.warnings.append(f"{stage.name}: {what} {length} exceeds the model's {native}-token window and "
                                   "TRL runs the model as it is (no YaRN); use the verl backend or a longer model")
        elif recipe.cluster.rope_scaling == "off":
            report.problems.append(f"{stage.name}: {what} {length} exceeds the model's {native}-token window "
                                   "and cluster.rope_scaling is off")
        else:
            plan = rope_scaling_plan(recipe, stage)
            report.ran.append(f"{stage.name}: {what} {length} > {native}-token native window: YaRN factor "
                              f"{plan['factor']} ({plan['factor'] * native} tokens) written into the actor, ref "
                              "and rollout config, rollout max_model_len " + str(length))


# --------------------------------------------------------------------------------------- parallelism
def check_parallelism(recipe: Recipe, config: dict | None, where: str, report: CheckReport) -> None:
    c = recipe.cluster
    sp, tp, world = c.ulysses_sp, c.tensor_parallel, c.nnodes * c.gpus_per_node
    if config is not None:
        heads, kv = config.get("num_attention_heads"), config.get("num_key_value_heads")
        kv = heads if kv is None else kv
        if heads is None:
            report.warnings.append(f"{where} has no num_attention_heads: Ulysses SP {sp} was not checked against it")
        # verl/models/transformers/monkey_patch.py:343-346: heads % sp == 0, and kv % sp == 0 or sp % kv == 0
        # (KV heads are then repeated)
        elif heads % sp or (kv % sp and sp % kv):
            fit = [s for s in range(1, heads + 1) if heads % s == 0 and (kv % s == 0 or s % kv == 0)]
            report.problems.append(
                f"cluster.ulysses_sp {sp} does not fit the model's {heads} attention heads and {kv} KV heads "
                f"({where}): verl needs heads % SP == 0 and (KV heads % SP == 0 or SP % KV heads == 0); "
                f"SP that fit: {', '.join(map(str, fit))}")
        else:
            report.ran.append(f"Ulysses SP {sp} divides {heads} attention heads and {kv} KV heads ({where})")
    bad = []
    # verl/workers/engine/fsdp/transformer_impl.py:245-248: a (world // SP, SP) device mesh
    if world % sp:
        bad.append(f"Ulysses SP {sp}")
    # verl/workers/engine_workers.py:659: world size % (rollout TP x DP x PP) == 0
    if world % tp:
        bad.append(f"rollout TP {tp}")
    if bad:
        report.problems.append(f"cluster: {c.nnodes} nodes x {c.gpus_per_node} GPUs = {world} GPUs is not divisible "
                               f"by {' and '.join(bad)}")
        return
    report.ran.append(f"cluster: {c.nnodes} x {c.gpus_per_node} = {world} GPUs divisible by rollout TP {tp} and "
                      f"Ulysses SP {sp} (data-parallel size {world // sp})")
    dp = world // sp
    # verl/utils/config.py:103-125 (validate_config, on the driver with the real GPU count) checks the batch against
    # the GPUs only without dynamic batching, which every stage here uses; the workers' assert below is what is left
    for stage in recipe.stages:
        if stage.rl is not None:
            r = stage.rl
            # verl/trainer/ppo/v1/trainer_base.py:1829-1830 (mini-batch x n) and verl/workers/engine_workers.py:267
            # (that % data-parallel size == 0): asserted in the GPU workers at the first update
            mini = (r.mini_batch_size or r.batch_size) * r.group_size
            if mini % dp:
                report.problems.append(f"{stage.name}: PPO mini-batch {r.mini_batch_size or r.batch_size} prompts x "
                                       f"{r.group_size} rollouts = {mini} sequences is not divisible by the "
                                       f"data-parallel size {dp} ({world} GPUs / SP {sp})")
            else:
                report.ran.append(f"{stage.name}: PPO mini-batch {mini} sequences divisible by data-parallel size {dp}")
        elif stage.sft.batch_size % dp:
            # verl/trainer/sft_trainer.py:241: batch // dp per rank; a remainder is silently not trained on
            s = stage.sft
            (report.problems if s.batch_size < dp else report.warnings).append(
                f"{stage.name}: SFT batch_size {s.batch_size} is not a multiple of the data-parallel size {dp}: "
                f"verl trains {s.batch_size // dp * dp} sequences per step")


# ------------------------------------------------------------------------------------- token budgets
def check_token_budgets(recipe: Recipe, report: CheckReport) -> None:
    from .verl_backend import rl_token_budget, sft_token_budget

    sp = recipe.cluster.ulysses_sp
    for stage in recipe.stages:
        if stage.rl is not None:
            r = stage.rl
            (prompt, response), tokens = r.verl_lengths(), rl_token_budget(recipe, stage)
            need = prompt + response
            # verl/workers/engine/utils.py:111 max_token_len = max_token_len_per_gpu x SP, asserted >= the longest
            # sequence (prompt + response) in verl/utils/seqlen_balancing.py:384, on the first long batch; the same
            # `tokens` is emitted for the actor update and the rollout and ref log-prob passes
            # (verl/workers/engine_workers.py:552, 620-626)
            if tokens * sp < need:
                report.problems.append(
                    f"{stage.name}: token budget {tokens} tokens/GPU x SP {sp} = {tokens * sp} < prompt "
                    f"{prompt} + response {response} = {need}: verl would abort on the first "
                    f"sequence that long; raise cluster.max_tokens_per_gpu to >= {math.ceil(need / sp)} (or leave it "
                    "null: prompt + response)")
            else:
                report.ran.append(f"{stage.name}: token budget {tokens}/GPU x SP {sp} = {tokens * sp} >= prompt "
                                  f"{prompt} + response {response} (actor, ref, rollout log-prob)")
        else:
            # verl's SFT trainer batches by tokens the same way (engine/utils.py:111, seqlen_balancing.py:384);
            # sft_token_budget raises the budget to ceil(max_length / SP), so this holds by construction
            b, asked = sft_token_budget(recipe, stage), recipe.cluster.max_tokens_per_gpu
            ok = b * sp >= stage.sft.max_length
            why = "" if asked == b else f" (cluster.max_tokens_per_gpu {asked} raised to ceil(max_length / SP))" \
                if asked else " (ceil(max_length / SP): cluster.max_tokens_per_gpu is not set)"
            (report.ran if ok else report.problems).append(
                f"{stage.name}: SFT token budget {b}/GPU x SP {sp} = {b * sp} {'>=' if ok else '<'} max_length "
                f"{stage.sft.max_length}{why}")


# --------------------------------------------------------------------------------------------- data
def _tokenizer_folder(model: str) -> str | None:
    """A local folder holding `model`'s tokenizer (the model folder, or its hub-cache snapshot)."""
    path = model_file(model, "tokenizer_config.json")
    return os.path.dirname(path) if path else None


class RowLengths:
    """Row lengths as the stages count them (`transitions.prompt_token_counter` with the model's tokenizer, loaded
    offline on first use), reusing `extra_info.prompt_tokens` where the row records the same tokenizer's
    fingerprint (the data synthesizer counted it the same way), so long files are not counted twice."""

    def __init__(self, folder: str):
        self.folder, self._counts = folder, {}
        try:  # the fingerprint the data synthesizer records (loongrl.data.tokens, no transformers import)
            from loongrl.data.tokens import get_counter

            self.fingerprint = get_counter(folder).fingerprint
        except Exception:  # noqa: BLE001 - no fingerprint: every row is counted
            self.fingerprint = None

    def __call__(self, row: dict, sft: bool) -> int:
        info = row.get("extra_info") or {}
        if not sft and self.fingerprint and info.get("tokenizer_fingerprint") == self.fingerprint \
                and info.get("prompt_tokens"):
            return int(info["prompt_tokens"])
        if sft not in self._counts:
            from transformers import AutoTokenizer

            from .transitions import prompt_token_counter

            self._counts[sft] = prompt_token_counter(AutoTokenizer.from_pretrained(self.folder), with_completion=sft)
        return self._counts[sft](row)


def _row_lengths(model: str, report: CheckReport) -> RowLengths | None:
    folder = _tokenizer_folder(model)
    if folder is None:
        report.warnings.append(f"the tokenizer of {model} is not available offline (local folder or hub cache): "
                               "prompt lengths were not checked against the stages' budgets")
        return None
    return RowLengths(folder)


BAD_ROWS_SHOWN = 5  # per file; the rest are counted in one line


def _read_file(path: str, sft: bool, lengths_of: RowLengths | None, report: CheckReport,
               stages: str) -> tuple[list[int], int] | None:
    """Schema-check every row of `path`; returns each row's length (prompt, or prompt + completion for SFT)
    when counting is possible ([] when it is not) and the number of rows; None when the file is unusable."""
    from loongrl.progress import progress_bar

    from loongrl.data.io import RowFileError, iter_rows

    from .transitions import row_problems

    try:
        import pyarrow.parquet as pq

        total = pq.ParquetFile(path).metadata.num_rows if path.endswith(".parquet") else None
        rows = iter_rows(path)
    except Exception as e:  # noqa: BLE001 - any reader error is the file's problem, named
        report.problems.append(f"{path}: cannot be read as a row file ({type(e).__name__}: {e})")
        return None
    lengths, bad, n = [], 0, 0
    unreadable: list[Exception] = []
    with progress_bar(total=total, desc=f"checking {os.path.basename(path)}", unit="row", leave=False,
                      disable=total is None or total < 500) as bar:
        for i, row in enumerate(_reading(rows, unreadable)):
            n += 1
            bar.update(1)
            errs = row_problems(row, sft)
            if errs:
                bad += 1
                if bad <= BAD_ROWS_SHOWN:
                    report.problems.append(f"{path}: row {i}: {'; '.join(errs)} (read by {stages})")
                continue
            if lengths_of is not None:
                try:
                    lengths.append(lengths_of(row, sft))
                except (OSError, ValueError) as e:
                    report.warnings.append(f"the tokenizer in {lengths_of.folder} could not be loaded ({e}): "
                                           "lengths were not checked")
                    lengths_of = None
                    lengths.clear()
    if unreadable:
        e = unreadable[0]
        report.problems.append((str(e) if isinstance(e, RowFileError) else  # it names the file (and JSONL line)
                                f"{path}: cannot be read after row {n} ({type(e).__name__}: {e})")
                               + f" (read by {stages})")
        return None
    if n == 0:
        report.problems.append(f"{path}: no rows (read by {stages})")
        return None
    if bad > BAD_ROWS_SHOWN:
        report.problems.append(f"{path}: {bad - BAD_ROWS_SHOWN} more rows with problems ({bad} in all)")
    if bad:
        return None
    return lengths, n


def _reading(rows, failed: list):
    """`rows`, stopping at a reading error (kept in `failed`); errors of the caller's loop body are not caught."""
    try:
        yield from rows
    except Exception as e:  # noqa: BLE001 - any reader error part-way is the file's problem, named by the caller
        failed.append(e)


def check_data(recipe: Recipe, report: CheckReport, missing_ok: bool = False, engine: str = "verl") -> None:
    """Every data file of every stage opened, schema-checked row by row and length-checked against the budget
    of each stage that reads it (the stage's own length filter, `transitions.build_mixture`); a stage whose
    rows cannot make one full batch is a problem (both trainers drop the last partial batch of an RL epoch,
    verl an SFT one's too: 0 steps per epoch, found only when the stage starts)."""
    files: dict[tuple[str, bool], list[Stage]] = {}
    for stage in recipe.stages:
        for comp in stage.spec.data.components:
            readers = files.setdefault((comp.path, stage.sft is not None), [])
            if stage not in readers:
                readers.append(stage)
    if not files:
        return
    uses_data_var = False  # a shipped recipe reads ${LOONGRL_DATA}: say what it is when its folder is missing
    if recipe.source and os.path.isfile(recipe.source):
        with open(recipe.source, encoding="utf-8") as f:
            uses_data_var = "${LOONGRL_DATA" in f.read()
    lengths_of = _row_lengths(recipe.model, report) if any(os.path.isfile(p) for p, _ in files) else None
    fits: dict[str, list[int]] = {}  # stage name -> rows fitting, per counted file
    fit_rows: dict[tuple[str, str], int] = {}  # (stage name, path) -> rows fitting
    uncounted: set[str] = set()  # stages with a file whose lengths were not counted (fit_rows: all its rows)
    for (path, sft), stages in files.items():
        names = ", ".join(s.name for s in stages)
        if not os.path.isfile(path):
            folder = os.path.dirname(path)
            hint = "" if os.path.isdir(folder) else f" (its folder {folder} does not exist" + (
                "" if not uses_data_var else f"; LOONGRL_DATA={os.environ['LOONGRL_DATA']}"
                if os.environ.get("LOONGRL_DATA") else "; LOONGRL_DATA is not set") + ")"
            line = f"{names}: data file not found: {path}{hint}"
            (report.warnings if missing_ok else report.problems).append(
                line + ("; the preflight synthesizes stand-in rows" if missing_ok else ""))
            continue
        read = _read_file(path, sft, lengths_of, report, f"stage {names}")
        if read is None:
            continue
        lengths, rows = read
        if lengths_of is None or len(lengths) == 0:
            report.ran.append(f"{os.path.basename(path)}: {'SFT ' if sft else ''}schema of every row checked "
                              "(lengths not counted)")
            for stage in stages:  # every row, an upper bound for the batch check: fewer than one batch is refused
                fit_rows[(stage.name, path)] = rows
                uncounted.add(stage.name)
            continue
        for stage in stages:
            spec = stage.spec
            # the stage's own filter (orchestrate.prepare_data -> transitions.build_mixture): (min, max] where max is
            # data.max_prompt_tokens, else max_prompt_tokens (RL) or max_length (SFT, prompt + completion counted)
            lo = spec.data.min_prompt_tokens
            hi = spec.data.max_prompt_tokens if spec.data.max_prompt_tokens is not None else (
                spec.max_prompt_tokens if stage.rl is not None else spec.max_length)
            fit = sum(lo < k <= hi for k in lengths)
            longer, shorter = sum(k > hi for k in lengths), sum(k <= lo for k in lengths)
            what = "prompt + completion" if sft else "prompt"
            dropped = "; ".join(x for x in (f"{longer:,} longer" if longer else "",
                                            f"{shorter:,} shorter" if shorter else "") if x)
            line = (f"{os.path.basename(path)}: {fit:,} of {len(lengths):,} rows fit {stage.name}'s ({lo}, {hi}] "
                    f"{what} tokens" + (f"; {dropped} would be dropped" if dropped else ""))
            (report.ran if fit else report.warnings).append(line)
            fits.setdefault(stage.name, []).append(fit)
            fit_rows[(stage.name, path)] = fit
    for stage in recipe.stages:
        counted = fits.get(stage.name, [])
        if len(counted) == len({c.path for c in stage.spec.data.components}) > 0 and not sum(counted):
            report.problems.append(f"{stage.name}: no row of its {len(counted)} data file(s) fits its length budget "
                                   "(see the lines above): the stage would have nothing to train on")
            continue
        _check_pool(recipe, stage, fit_rows, report, engine, stage.name in uncounted)


def _check_pool(recipe: Recipe, stage: Stage, fit_rows: dict, report: CheckReport, engine: str,
                uncounted: bool = False) -> None:
    """The stage's rows after its length filter against one batch. An upper bound: `max_items` takes its subset
    before the length filter. Stages fed by a transition are known only when it has run."""
    comps = stage.spec.data.components
    if not comps or (stage.rl is not None and stage.rl.transition is not None) or (stage.sft is not None and engine == "trl"):
        return  # (TRL trains an SFT stage's last partial batch too)
    if any((stage.name, c.path) not in fit_rows for c in comps):
        return  # a file was missing or not counted: said above
    pool = sum(min(fit_rows[(stage.name, c.path)], c.max_items or fit_rows[(stage.name, c.path)]) * c.repeat
               for c in comps)
    need = stage.spec.batch_size
    filtered = "in its files (lengths not counted)" if uncounted else "after its length filter"
    if pool < need:
        report.problems.append(f"{stage.name}: at most {pool:,} rows {filtered}, fewer than batch_size "
                               f"{need}: not one full batch, so 0 steps per epoch (the stage would be refused when "
                               "it starts, after the stages before it have trained)")
    else:
        report.ran.append(f"{stage.name}: up to {pool:,} rows {filtered}, >= batch_size {need}")


# ------------------------------------------------------------------------------- QwenLong-L1.5's options
def check_qwenlong15_options(recipe: Recipe, engine: str, report: CheckReport) -> None:
    """`sampler: task_balanced`, `advantage: task_normalized` and `aepo` run on verl only (`qwenlong15_verl`).
    TRL 1.x has no hook for them: its sampler is built inside `GRPOTrainer._get_train_sampler`, its advantage
    (`scale_rewards` group/batch/none) has no per-task std, and nothing between the advantages and the loss
    drops samples; so a TRL run with any of them is refused here rather than run without it."""
    for stage in recipe.stages:
        r = stage.rl
        if r is None:
            continue
        asked = [x for x, on in (("sampler: task_balanced", r.sampler == "task_balanced"),
                                 ("advantage: task_normalized", r.advantage == "task_normalized"),
                                 ("aepo", r.aepo is not None)) if on]
        if not asked:
            continue
        if engine == "trl":
            report.problems.append(f"{stage.name}: {', '.join(asked)} run on the verl backend only (TRL's GRPOTrainer "
                                   "has no hook for them); use --backend verl or remove them from the recipe")
        else:
            report.ran.append(f"{stage.name}: QwenLong-L1.5 options on verl: {', '.join(asked)}")


# ------------------------------------------------------------------------------------------ memory agent
def check_memory_agent(recipe: Recipe, engine: str, report: CheckReport) -> None:
    """`memory_agent` trains on verl only (`memory_agent_verl`). TRL's GRPOTrainer trains one completion per
    generation (its `rollout_func` returns one prompt and one completion each), so a sample of K conversations
    that share one reward has no place there: a TRL run with it is refused here rather than run without it."""
    for stage in recipe.stages:
        m = stage.rl.memory_agent if stage.rl is not None else None
        if m is None:
            continue
        if engine == "trl":
            report.problems.append(f"{stage.name}: memory_agent runs on the verl backend only (TRL's GRPOTrainer trains "
                                   "one completion per generation, not a sample's K conversations); use --backend "
                                   "verl or remove it from the recipe")
        else:
            prompt, response = stage.rl.verl_lengths()
            report.ran.append(f"{stage.name}: memory agent on verl: chunks of {m.chunk_tokens} tokens, memory "
                              f"{m.memory_tokens}, answer {m.answer_tokens}; each conversation <= {prompt} + "
                              f"{response} tokens, rows <= {stage.rl.max_prompt_tokens} prompt tokens")


# ------------------------------------------------------------------------------------------- entry
def run_checks(recipe: Recipe, engine: str = "verl", missing_data_ok: bool = False) -> CheckReport:
    """Every check that applies to `engine` ("verl": all; "trl": data and window). `missing_data_ok` (the
    preflight, which synthesizes stand-in rows) turns a missing data file into a warning."""
    report = CheckReport()
    config, where = read_model_config(recipe.model)
    if config is None and os.path.isabs(recipe.model) and not os.path.isdir(recipe.model):
        # a local path (recipe.py resolves ./ and / paths): a typo here is a traceback at the first stage otherwise
        report.problems.append(f"model: {recipe.model}: no such folder (a hub model is named owner/name)" + (
            f"; this recipe's tiny model is built by `python -m loongrl.demo {recipe.source}`" if recipe.tiny_model
            else ""))
    elif config is None:
        skipped = "Ulysses SP against attention/KV heads, the context window and rope scaling" if engine == "verl" \
            else "the context window"
        report.warnings.append(f"{where}; not checked: {skipped}. To check them, point `model:` at a local folder "
                               "with its config.json and tokenizer, or put those files in the hub cache first "
                               f"(huggingface-cli download {recipe.model} config.json tokenizer.json "
                               "tokenizer_config.json)")
    check_qwenlong15_options(recipe, engine, report)
    check_memory_agent(recipe, engine, report)
    if engine == "verl":
        check_parallelism(recipe, config, where, report)
        check_token_budgets(recipe, report)
    if config is not None:
        check_window(recipe, config, where, report, engine)
    check_data(recipe, report, missing_ok=missing_data_ok, engine=engine)
    return report


def require(recipe: Recipe, engine: str, missing_data_ok: bool = False, show_ran: bool = False) -> CheckReport:
    """Run the checks and print them; raises `CheckError` on any problem (the launch does not start)."""
    report = run_checks(recipe, engine, missing_data_ok)
    report.print(show_ran=show_ran)
    if not report.ok:
        raise CheckError(report)
    return report
