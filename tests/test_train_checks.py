"""Checks before launch (train/checks.py) through `loongrl train ... --dry-run`, on the shipped recipes, real
parquet files, the shared Qwen2.5 tokenizer and config.json files holding the models' published values
(tests/conftest.py PUBLISHED_CONFIGS). What is checked is what verl 0.9.1 would reject only on the GPUs."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from conftest import write_model_config

from loongrl.cli import main
from loongrl.train import transitions, verl_backend
from loongrl.train.recipe import RecipeError, load_recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def shipped(shipped_recipe_env, monkeypatch):
    """The shipped recipes' data and models' config.json, as $LOONGRL_DATA and the hub cache."""
    import huggingface_hub.constants

    monkeypatch.setenv("LOONGRL_DATA", shipped_recipe_env["LOONGRL_DATA"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", shipped_recipe_env["HF_HUB_CACHE"])
    return shipped_recipe_env


def _recipe_file(tmp_path, name="loongrl-7b", edit=None) -> str:
    """A shipped recipe, edited (`edit(raw)`), written next to nothing else (paths come from $LOONGRL_DATA)."""
    raw = yaml.safe_load(open(os.path.join(REPO, "recipes", f"{name}.yaml")).read())
    if edit is not None:
        edit(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _dry_run(path, capsys, *more):
    rc = main(["train", path, "--backend", "verl", "--dry-run", "--out", "/tmp/loongrl-dry-run", *more])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", ["loongrl-7b", "loongrl-14b", "qwenlong-l1-32b", "qwenlong-l1.5-30b-a3b"])
def test_shipped_recipes_dry_runs_print_their_checks_and_pass(shipped, capsys, name):
    rc, out, err = _dry_run(os.path.join(REPO, "recipes", f"{name}.yaml"), capsys)
    assert rc == 0, err
    checks = [line for line in out.splitlines() if line.startswith("[check] ")]
    heads = {"loongrl-7b": "Ulysses SP 4 divides 28 attention heads and 4 KV heads (Qwen/Qwen2.5-7B-Instruct config.json)",
             "loongrl-14b": "Ulysses SP 4 divides 40 attention heads and 8 KV heads (Qwen/Qwen2.5-14B-Instruct config.json)",
             "qwenlong-l1-32b": "Ulysses SP 8 divides 40 attention heads and 8 KV heads "
                                "(deepseek-ai/DeepSeek-R1-Distill-Qwen-32B config.json)",
             "qwenlong-l1.5-30b-a3b": "Ulysses SP 8 divides 32 attention heads and 4 KV heads "
                                      "(Qwen/Qwen3-30B-A3B-Thinking-2507 config.json)"}[name]
    assert f"[check] {heads}" in checks
    assert out.index("[check] ") < out.index("verl.trainer.main_ppo")  # the checks, then the commands
    if name == "loongrl-7b":
        assert "[check] qa_hotpotqa.parquet: 180 of 180 rows fit warmup's (0, 22528] prompt tokens" in checks
        assert "[check] warmup: up to 540 rows after its length filter, >= batch_size 512" in checks
        assert "[check] warmup: prompt + response 26624 <= 32768-token native window: no rope scaling" in checks
        assert "[check] warmup: token budget 26624/GPU x SP 4 = 106496 >= prompt 22528 + response 4096 " \
               "(actor, ref, rollout log-prob)" in checks
    if name == "qwenlong-l1-32b":  # its tokenizer is not here: schemas checked, lengths not, and said so
        assert "[check] sft_traces.parquet: SFT schema of every row checked (lengths not counted)" in checks
        assert "warning: the tokenizer of deepseek-ai/DeepSeek-R1-Distill-Qwen-32B is not available offline" in out
        # uncounted, a file's rows still bound the pool (shipped_recipe_env: 180 rows a file, 3 files in phase1)
        assert "[check] phase1: up to 540 rows in its files (lengths not counted), >= batch_size 128" in checks
        assert "[check] sft: SFT token budget 10000/GPU x SP 8 = 80000 >= max_length 30000" in checks
    if name == "qwenlong-l1.5-30b-a3b":  # its three options, on verl; its longest stage inside the 256K window
        for stage in ("rl-32k", "rl-60k", "rl-120k"):
            assert (f"[check] {stage}: QwenLong-L1.5 options on verl: sampler: task_balanced, advantage: "
                    "task_normalized, aepo") in checks
        assert "[check] rl-120k: prompt + response 139264 <= 262144-token native window: no rope scaling" in checks
        assert "[check] rl-120k: token budget 20000/GPU x SP 8 = 160000 >= prompt 122880 + response 16384 " \
               "(actor, ref, rollout log-prob)" in checks
        for key in ("data.custom_cls.name=TaskBalancedRLDataset", "data.shuffle=False",
                    "algorithm.adv_estimator=task_normalized", "+algorithm.loongrl.aepo.entropy_low=0.3",
                    "+algorithm.loongrl.aepo.world_size=32",
                    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=loongrl.train.qwenlong15_verl"):
            assert out.count(f"    {key} ") == 3, key  # in each stage's command


@pytest.mark.parametrize("sp", [7, 8])
def test_sequence_parallel_that_does_not_divide_the_heads_is_refused(shipped, tmp_path, capsys, sp):
    path = _recipe_file(tmp_path, edit=lambda raw: raw["cluster"].update(ulysses_sp=sp, gpus_per_node=sp))
    rc, out, err = _dry_run(path, capsys)
    assert rc == 2 and "verl.trainer.main_ppo" not in out
    assert (f"error: cluster.ulysses_sp {sp} does not fit the model's 28 attention heads and 4 KV heads "
            "(Qwen/Qwen2.5-7B-Instruct config.json)") in err
    assert "SP that fit: 1, 2, 4, 28" in err  # 28 % SP == 0 and (4 % SP == 0 or SP % 4 == 0)


def test_rl_token_budget_below_prompt_plus_response_is_refused(shipped, tmp_path, capsys):
    path = _recipe_file(tmp_path, edit=lambda raw: raw["cluster"].update(max_tokens_per_gpu=4096))
    rc, out, err = _dry_run(path, capsys)
    assert rc == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3  # every stage, all at once
    assert errors[0].startswith("error: warmup: token budget 4096 tokens/GPU x SP 4 = 16384 < prompt 22528 + "
                                "response 4096 = 26624: verl would abort")
    assert "raise cluster.max_tokens_per_gpu to >= 6656" in errors[0]


def test_missing_file_and_row_without_prompt_are_named_with_file_and_row(shipped, tmp_path, capsys):
    from loongrl.data.io import iter_rows, write_rows

    rows = list(iter_rows(os.path.join(shipped["LOONGRL_DATA"], "qa_musique.parquet")))
    rows[1] = dict(rows[1], prompt=None)
    rows[2] = dict(rows[2], reward_model={"style": "rule", "ground_truth": []})
    bad = write_rows(str(tmp_path / "qa_musique.parquet"), rows)
    missing = str(tmp_path / "absent" / "keychain_musique.parquet")

    def edit(raw):
        comps = raw["stages"][1]["rl"]["data"]["components"]
        comps[1]["path"], comps[4]["path"] = missing, bad  # stage1's keychain_musique and qa_musique

    rc, out, err = _dry_run(_recipe_file(tmp_path, edit=edit), capsys)
    assert rc == 2
    assert f"error: stage1: data file not found: {missing} (its folder {os.path.dirname(missing)} does not exist" in err
    assert f"error: {bad}: row 1: prompt: missing (read by stage stage1)" in err
    assert f"error: {bad}: row 2: reward_model.ground_truth: missing or empty (read by stage stage1)" in err
    # at stage time too (a recipe that skipped the checks): the file and row, not a bare KeyError('prompt')
    mixture = load_recipe(_recipe_file(tmp_path, edit=edit)).stages[1].rl.data
    mixture.components = [c for c in mixture.components if c.path == bad]
    with pytest.raises(RecipeError, match=rf"^{bad}: row 1: prompt: missing$"):
        transitions.build_mixture(mixture, 0, None, None)


def test_a_jsonl_line_that_is_not_json_is_named_not_a_traceback(shipped, tmp_path, capsys):
    from loongrl.data.io import iter_rows

    rows = list(iter_rows(os.path.join(shipped["LOONGRL_DATA"], "qa_musique.parquet")))[:3]
    bad = tmp_path / "qa_musique.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"data_source": "musique", \n')

    def edit(raw):
        raw["stages"][1]["rl"]["data"]["components"][4]["path"] = str(bad)  # stage1's qa_musique

    rc, out, err = _dry_run(_recipe_file(tmp_path, edit=edit), capsys)
    assert rc == 2, err
    assert "Traceback" not in err
    assert f"error: {bad}: line 4: invalid JSON (Expecting property name enclosed in double quotes: column 27) " \
           "(read by stage stage1)" in err


def test_a_stage_whose_rows_all_exceed_its_budget_is_refused_and_drops_are_counted(shipped, tmp_path, capsys):
    def edit(raw):
        raw["stages"][0]["rl"]["data"]["max_prompt_tokens"] = 1000  # the rows have ~4K tokens
        raw["stages"][1]["rl"]["data"]["min_prompt_tokens"] = 1000

    rc, out, err = _dry_run(_recipe_file(tmp_path, edit=edit), capsys)
    assert rc == 2
    assert ("warning: qa_hotpotqa.parquet: 0 of 180 rows fit warmup's (0, 1000] prompt tokens; 180 longer would be "
            "dropped") in out
    assert "error: warmup: no row of its 3 data file(s) fits its length budget" in err
    assert "[check] qa_hotpotqa.parquet: 180 of 180 rows fit stage1's (1000, 22528] prompt tokens" in out


def test_config_that_cannot_be_read_is_a_warning_saying_what_was_not_checked(shipped, tmp_path, capsys):
    path = _recipe_file(tmp_path, edit=lambda raw: raw.update(model="loongrl-tests/not-in-any-cache"))
    rc, out, err = _dry_run(path, capsys)
    assert rc == 0, err  # the rest still checked; the commands printed
    assert ("warning: config.json of loongrl-tests/not-in-any-cache could not be read: not a local folder and not in "
            "the Hugging Face hub cache (checks never use the network); not checked: Ulysses SP against "
            "attention/KV heads, the context window and rope scaling") in out
    assert "Ulysses SP 4 divides" not in out and "verl.trainer.main_ppo" in out


def _two_stage_recipe(tmp_path, model: str, rollout: str = "vllm", rope: str = "auto"):
    rl = {"data": {"components": [{"path": os.path.join(os.environ["LOONGRL_DATA"], "qa_hotpotqa.parquet")}]},
          "batch_size": 8, "steps": 1, "max_prompt_tokens": 16384, "max_response_tokens": 4096}
    raw = {"name": "long", "model": model, "stages": [
        {"name": "short", "rl": rl},
        {"name": "long", "rl": dict(rl, max_prompt_tokens=57344)}],  # 57,344 + 4,096 = 61,440 tokens
        "cluster": {"nnodes": 1, "gpus_per_node": 8, "rollout": rollout, "rope_scaling": rope}}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_recipe(str(path))


@pytest.mark.slow  # verl's Hydra config and model config (as tests/test_train_verl.py): not in mutation runs
def test_yarn_only_where_the_lengths_need_it_and_verl_reads_it(shipped, tmp_path):
    pytest.importorskip("verl", reason="verl is not installed (make setup installs it)")
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config.model import HFModelConfig

    model = write_model_config(str(tmp_path / "qwen7b"))  # 32,768-token native window, no rope_scaling
    recipe = _two_stage_recipe(tmp_path, model)
    steps = verl_backend.plan(recipe, str(tmp_path / "run"))
    short, long = steps
    assert not [o for o in short["overrides"] if "hf_config_path" in o or "max_model_len" in o or "hf_overrides" in o]
    cfg = verl_backend.compose_overrides(long["overrides"], long["config"])
    hf = OmegaConf.to_container(cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.hf_overrides)
    assert hf == {"rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32768,
                                   "rope_theta": 1e6}, "max_position_embeddings": 65536}
    assert cfg.actor_rollout_ref.rollout.max_model_len == 61440
    config_dir = cfg.actor_rollout_ref.model.hf_config_path
    assert config_dir == os.path.join(os.path.dirname(long["ckpt_dir"]), "model_config")
    # what the actor and reference are built from: verl's own model config reading that folder
    verl_backend.write_rope_configs(recipe, steps)
    assert not os.path.exists(os.path.join(os.path.dirname(short["ckpt_dir"]), "model_config"))
    verl_model = omega_conf_to_dataclass(OmegaConf.create({"path": model, "hf_config_path": config_dir,
                                                           "load_tokenizer": False}), HFModelConfig)
    rope = verl_model.hf_config.rope_parameters
    assert (rope["rope_type"], rope["factor"], rope["original_max_position_embeddings"], rope["rope_theta"]) == \
        ("yarn", 2.0, 32768, 1e6)
    assert verl_model.hf_config.max_position_embeddings == 65536  # verl's rollout accepts max_model_len 61,440

    # SGLang gets the same as one JSON argument; a model with its own rope scaling keeps it; `off` refuses
    sglang = verl_backend.plan(_two_stage_recipe(tmp_path, model, rollout="sglang"), str(tmp_path / "run"))[1]
    arg = verl_backend.compose_overrides(sglang["overrides"]).actor_rollout_ref.rollout.engine_kwargs.sglang
    assert json.loads(arg.json_model_override_args) == hf
    own = write_model_config(str(tmp_path / "own"), rope_scaling={"type": "yarn", "factor": 4.0,
                                                                  "original_max_position_embeddings": 32768})
    kept = verl_backend.plan(_two_stage_recipe(tmp_path, own), str(tmp_path / "run"))[1]
    assert not [o for o in kept["overrides"] if "hf_config_path" in o or "hf_overrides" in o]
    # an SFT stage longer than the window: the trainer's model reads the same kind of config folder
    sft = load_recipe(_recipe_file(tmp_path, "qwenlong-l1-32b", edit=lambda raw: (
        raw.update(model=model), raw["stages"][0]["sft"].update(max_length=40000))))
    sft_step = verl_backend.plan(sft, str(tmp_path / "sft"))[0]
    assert verl_backend.compose_overrides(sft_step["overrides"], "sft_trainer_engine").model.hf_config_path == \
        os.path.join(os.path.dirname(sft_step["ckpt_dir"]), "model_config")
    from loongrl.train.checks import run_checks

    off = run_checks(_two_stage_recipe(tmp_path, model, rope="off"))
    assert off.problems == [f"long: prompt + response 61440 exceeds the model's 32768-token window and "
                            "cluster.rope_scaling is off"]
    assert "long: prompt + response 61440 > 32768-token native window: YaRN factor 2 (65536 tokens) written into " \
           "the actor, ref and rollout config, rollout max_model_len 61440" in run_checks(recipe).ran


def test_a_pool_without_one_full_batch_is_refused_before_launch(shipped, tmp_path, capsys):
    """warm-up's 3 files hold 540 rows; at batch 1,024 no step could run: found in the dry run, not when the stage
    starts after the stages before it trained. Stage II (rows from hard mining) is not judged before it runs."""
    def bigger_batch(raw):
        raw["stages"][0]["rl"]["batch_size"] = 1024
    rc, out, err = _dry_run(_recipe_file(tmp_path, edit=bigger_batch), capsys)
    assert rc == 2
    assert ("error: warmup: at most 540 rows after its length filter, fewer than batch_size 1024: not one full "
            "batch, so 0 steps per epoch") in err
    assert "[check] stage1: up to 1,080 rows after its length filter, >= batch_size 512" in out
    assert "stage2: " not in err + "".join(x for x in out.splitlines() if "rows after" in x)


def test_a_local_model_path_that_does_not_exist_is_named(shipped, tmp_path, capsys):
    def typo(raw):
        raw["model"] = "/no/such/Qwen2.5-7B-Instruct"
    rc, _, err = _dry_run(_recipe_file(tmp_path, edit=typo), capsys)
    assert rc == 2 and "error: model: /no/such/Qwen2.5-7B-Instruct: no such folder" in err


def test_a_bare_off_is_explained(tmp_path):
    def off(raw):
        raw["cluster"]["rope_scaling"] = False  # what YAML makes of `rope_scaling: off`
    with pytest.raises(RecipeError, match=r"cluster.rope_scaling: False is not one of \['auto', 'off'\] \(YAML reads "
                                          r"an unquoted off/on/no/yes as a boolean: quote it\)"):
        load_recipe(_recipe_file(tmp_path, edit=off))


def test_trl_dry_run_runs_the_checks_and_trains_nothing(shipped, tmp_path, capsys):
    path = _recipe_file(tmp_path)
    rc = main(["train", path, "--dry-run", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "[check] qa_hotpotqa.parquet: 180 of 180 rows fit warmup's (0, 22528] prompt tokens" in out
    assert "# 3 stages would train with TRL in" in out and not (tmp_path / "run").exists()


def test_trl_refuses_qwenlong15_options_before_launch(shipped, tmp_path, capsys):
    # TRL's GRPOTrainer has no hook for them: refused with the stage and the options named, nothing run
    rc = main(["train", os.path.join(REPO, "recipes", "qwenlong-l1.5-30b-a3b.yaml"), "--dry-run",
               "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert rc == 2 and not (tmp_path / "run").exists()
    assert ("error: rl-32k: sampler: task_balanced, advantage: task_normalized, aepo run on the verl backend only "
            "(TRL's GRPOTrainer has no hook for them); use --backend verl or remove them from the recipe") in err

    def one(raw):
        raw["stages"][1]["rl"]["aepo"] = {"entropy_low": 0.5, "entropy_high": 2.0}
    rc = main(["train", _recipe_file(tmp_path, edit=one), "--dry-run", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert rc == 2 and "error: stage1: aepo run on the verl backend only" in err and "warmup:" not in err


def test_a_pool_smaller_than_a_batch_is_refused_even_when_lengths_are_not_counted(shipped, tmp_path, capsys):
    """qwenlong-l1-32b's tokenizer is not here: its rows are not measured, but 180 of them cannot fill a batch of
    256; refused before launch instead of at the stage's start."""
    def big_batch(raw):
        raw["stages"][1]["rl"]["batch_size"] = 256
        raw["stages"][1]["rl"]["data"]["components"] = raw["stages"][1]["rl"]["data"]["components"][:1]
    rc, out, err = _dry_run(_recipe_file(tmp_path, "qwenlong-l1-32b", edit=big_batch), capsys)
    assert rc == 2
    assert ("phase1: at most 180 rows in its files (lengths not counted), fewer than batch_size 256: not one full "
            "batch, so 0 steps per epoch") in err
