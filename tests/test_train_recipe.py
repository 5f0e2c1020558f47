"""Recipe loading: the shipped recipes validate, and bad input names the file and the field."""

from __future__ import annotations

import os
import typing

import pytest
from conftest import ascii_locale
import yaml

from loongrl.train.recipe import RecipeError, load_recipe, parse_recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "recipes")


@pytest.mark.parametrize("name", ["demo-cpu", "loongrl-7b", "loongrl-14b", "qwenlong-l1-32b", "qwenlong-l1.5-30b-a3b"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(os.path.join(RECIPES, f"{name}.yaml"))
    assert recipe.name == name and recipe.stages
    assert all(os.path.isabs(c.path) for s in recipe.stages for c in s.spec.data.components)


def test_loongrl_7b_matches_paper_table():
    r = load_recipe(os.path.join(RECIPES, "loongrl-7b.yaml"))
    assert [s.name for s in r.stages] == ["warmup", "stage1", "stage2"]
    assert [s.rl.steps for s in r.stages] == [42, 168, 118]
    for s in r.stages:
        rl = s.rl
        assert (rl.group_size, rl.optim.learning_rate, rl.kl_coef, rl.kl_type) == (8, 1e-6, 1e-3, "low_var_kl")
        assert (rl.temperature, rl.top_p, rl.max_response_tokens, rl.batch_size) == (0.6, 0.95, 4096, 512)
        assert rl.entropy_coef == 0 and rl.optim.lr_scheduler == "cosine"
    hm = r.stages[2].rl.transition.hard_mining
    assert (hm.sampling.k, hm.sampling.temperature, hm.solved_threshold) == (8, 0.6, 1.0)


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


BASE = {"name": "t", "model": "m", "stages": [{"name": "a", "rl": {"data": {"components": [{"path": "x.parquet"}]}}}]}


def _with(**rl):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["stages"][0]["rl"].update(rl)
    return yaml.safe_dump(raw)


@pytest.mark.parametrize("text, message", [
    (_with(clip_hgh=0.3), "stages[0].rl.clip_hgh: unknown key"),
    (_with(group_size="eight"), "stages[0].rl.group_size: expected an integer"),
    (_with(algorithm="ppo"), "stages[0].rl.algorithm: 'ppo' is not one of"),
    (_with(optim={"learning_rat": 1e-6}), "stages[0].rl.optim.learning_rat: unknown key"),
    (_with(group_size=1), "stages[0].rl.group_size: GRPO needs at least 2"),
    (_with(batch_size=10, mini_batch_size=4), "stages[0].rl.mini_batch_size"),
    (_with(batch_size=0), "stages[0].rl.batch_size: batch sizes must be >= 1"),
    (_with(clip_high=1.5), "stages[0].rl.clip_high: must be in [0, 1)"),
    ("name: t\nmodel: m\nstages: [{name: a, sft: {data: {components: [{path: x}]}, micro_batch_size: 0}}]\n",
     "stages[0].sft.batch_size: batch sizes must be >= 1"),
    (_with(transition={"hard_mining": {}}), "stages[0].rl.transition: the first stage has no previous stage"),
    (_with(transition={"hard_mining": {"sampling": {"kk": 2}}}), "stages[0].rl.transition.hard_mining.sampling.kk"),
    ("name: t\nstages: []\n", "model: required key missing"),
    ("name: t\nmodel: m\nstages: [{name: a}]\n", "stages[0]: set exactly one of 'sft' or 'rl'"),
    ("name: t\nmodel: m\nstages: [{name: a, sft: {}}]\n", "stages[0].sft.data.components: an SFT stage needs data"),
    ("name: [\n", "not valid YAML"),
    (_with(save_every=0), "stages[0].rl.save_every: must be >= 1 (verl saves nothing when it is 0)"),
    (_with(aepo={"entropy_low": 1.0, "entropy_high": 0.5}),
     "stages[0].rl.aepo: needs 0 <= entropy_low < entropy_high, got 1.0 and 0.5"),
    (_with(aepo={"entropy_low": 0.1}), "stages[0].rl.aepo.entropy_high: required key missing"),
    (_with(sampler="balanced"), "stages[0].rl.sampler: 'balanced' is not one of ['random', 'task_balanced']"),
    (_with(advantage="task_norm"), "stages[0].rl.advantage: 'task_norm' is not one of ['grpo', 'task_normalized']"),
    ("name: t\nmodel: m\nstages: [{name: a, rl: {data: {components: [{path: x}]}}},\n"
     "  {name: b, rl: {transition: {hard_mining: {solved_threshold: 2.0}}}}]\n",
     "stages[1].rl.transition.hard_mining.solved_threshold: must be in (0, 1]"),
])
def test_bad_recipes_name_file_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(path + ":"), err.value
    assert message in str(err.value), err.value


def test_env_expansion_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("MYDATA", "/data/here")
    text = _with().replace("x.parquet", "${MYDATA}/x.parquet")
    text = text.replace("model: m", "model: ${NOT_SET_VAR:-./models/m}")
    r = load_recipe(_write(tmp_path, text))
    assert r.stages[0].rl.data.components[0].path == "/data/here/x.parquet"
    assert r.model == str(tmp_path / "models" / "m")
    path = _write(tmp_path, _with().replace("x.parquet", "${NOT_SET_AT_ALL}/x.parquet"))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: environment variable ${{NOT_SET_AT_ALL}} is not set and has no default"


def test_a_default_may_name_another_variable(tmp_path, monkeypatch):
    """The shipped CPU recipes find the model where `loongrl model fetch` put it: `$LOONGRL_CACHE`, else ~/.cache."""
    monkeypatch.setenv("MYHOME", "/home/u")
    monkeypatch.delenv("MYCACHE", raising=False)
    text = _with().replace("model: m", "model: ${MYCACHE:-${MYHOME}/.cache/loongrl}/models/m")
    assert load_recipe(_write(tmp_path, text)).model == "/home/u/.cache/loongrl/models/m"
    monkeypatch.setenv("MYCACHE", "/scratch/c")
    assert load_recipe(_write(tmp_path, text)).model == "/scratch/c/models/m"


# ---- issue 13: every check at its boundary, with its whole message --------------------------------

def _two_stages(**rl2) -> dict:
    """A valid recipe: an SFT stage, then an RL stage (whose keys `rl2` overrides)."""
    rl = {"data": {"components": [{"path": "x.parquet"}]}}
    rl.update(rl2)
    return {"name": "t", "model": "m", "stages": [
        {"name": "warm-up_1", "sft": {"data": {"components": [{"path": "s.parquet"}]}, "batch_size": 4,
                                      "micro_batch_size": 2}},
        {"name": "rl", "rl": rl}]}


def _sft(**sft) -> dict:
    raw = _two_stages()
    raw["stages"][0]["sft"].update(sft)
    return raw


def _with_raw(edit) -> dict:
    raw = _two_stages()
    edit(raw)
    return raw


HARD = {"hard_mining": {}}
RETRO = {"retrospective": {}}
R = "stages[1].rl"


@pytest.mark.parametrize("raw, message", [
    (_two_stages(), None),
    (_with_raw(lambda r: r.update(stages=[])), "stages: at least one stage is required"),
    (_with_raw(lambda r: r["stages"][1].update(name="my stage")), "stages[1].name: 'my stage' must use letters, digits, '-' or '_'"),
    (_with_raw(lambda r: r["stages"][1].update(name="warm-up_1")), "stages[1].name: duplicate stage name 'warm-up_1'"),
    (_with_raw(lambda r: r["stages"][1].update(sft={"data": {"components": [{"path": "s"}]}})),
     "stages[1]: set exactly one of 'sft' or 'rl'"),
    (_two_stages(optim={"learning_rate": 0.0}), f"{R}.optim.learning_rate: must be > 0"),
    (_two_stages(optim={"warmup_ratio": 0.0}), None),
    (_two_stages(optim={"warmup_ratio": 1.0}), f"{R}.optim.warmup_ratio: must be in [0, 1)"),
    (_two_stages(optim={"warmup_ratio": -0.1}), f"{R}.optim.warmup_ratio: must be in [0, 1)"),
    (_two_stages(data={"components": [{"path": "x", "repeat": 1, "max_items": 1}]}), None),
    (_two_stages(data={"components": [{"path": "x", "repeat": 0}]}), f"{R}.data.components[0].repeat: must be >= 1"),
    (_two_stages(data={"components": [{"path": "x", "max_items": 0}]}), f"{R}.data.components[0].max_items: must be > 0"),
    (_sft(batch_size=0, micro_batch_size=1), "stages[0].sft.batch_size: batch sizes must be >= 1"),
    (_sft(batch_size=4, micro_batch_size=0), "stages[0].sft.batch_size: batch sizes must be >= 1"),
    (_sft(batch_size=5, micro_batch_size=2), "stages[0].sft.batch_size: 5 is not a multiple of micro_batch_size 2"),
    (_sft(batch_size=1, micro_batch_size=1), None),
    (_two_stages(group_size=2), None),
    (_two_stages(group_size=1), f"{R}.group_size: GRPO needs at least 2 rollouts per prompt"),
    (_two_stages(kl_coef=0.0), None),
    (_two_stages(kl_coef=-0.001), f"{R}.kl_coef: must be >= 0"),
    (_two_stages(clip_low=0.0, clip_high=0.0), None),
    (_two_stages(clip_low=1.0), f"{R}.clip_low: must be in [0, 1)"),
    (_two_stages(clip_low=-0.1), f"{R}.clip_low: must be in [0, 1)"),
    (_two_stages(clip_high=1.0), f"{R}.clip_high: must be in [0, 1)"),
    (_two_stages(clip_high=-0.1), f"{R}.clip_high: must be in [0, 1)"),
    (_two_stages(top_p=1.0), None),
    (_two_stages(top_p=0.0), f"{R}.top_p: must be in (0, 1]"),
    (_two_stages(top_p=1.01), f"{R}.top_p: must be in (0, 1]"),
    (_two_stages(temperature=0.0), f"{R}.temperature: must be > 0"),
    (_two_stages(batch_size=1, mini_batch_size=1), None),
    (_two_stages(mini_batch_size=0), f"{R}.batch_size: batch sizes must be >= 1"),
    (_two_stages(batch_size=6, mini_batch_size=4), f"{R}.mini_batch_size: batch_size 6 is not a multiple of mini_batch_size 4"),
    (_two_stages(steps=1), None),
    (_two_stages(steps=0), f"{R}.steps: must be > 0"),
    (_two_stages(reward_kwargs={"require_think": False, "judge_config": {}}), None),
    (_two_stages(reward_kwargs={"think": True}), f"{R}.reward_kwargs: unknown ['think']; known: require_think, "
                                                 "word_boundary, faithful, math_timeout_s, judge_config"),
    (_two_stages(max_prompt_tokens=100, data={"components": [{"path": "x"}], "max_prompt_tokens": 100}), None),
    (_two_stages(max_prompt_tokens=100, data={"components": [{"path": "x"}], "max_prompt_tokens": 101}),
     f"{R}.data.max_prompt_tokens: exceeds the stage's max_prompt_tokens"),
    (_two_stages(max_response_tokens=100, overlong_buffer={"length": 99}), None),
    (_two_stages(max_response_tokens=100, overlong_buffer={"length": 100}),
     f"{R}.overlong_buffer.length: must be in (0, max_response_tokens)"),
    (_two_stages(overlong_buffer={"length": 0}), f"{R}.overlong_buffer.length: must be in (0, max_response_tokens)"),
    (_two_stages(transition={**HARD, **RETRO}), f"{R}.transition: set exactly one of 'hard_mining' or 'retrospective'"),
    (_two_stages(transition={}), f"{R}.transition: set exactly one of 'hard_mining' or 'retrospective'"),
    (_two_stages(transition={"hard_mining": {"sampling": {"k": 1}}}, data={}), None),       # mines the previous rows
    (_two_stages(transition={"hard_mining": {"sampling": {"k": 0}}}), f"{R}.transition.hard_mining.sampling.k: must be >= 1"),
    (_two_stages(transition={"retrospective": {"sampling": {"k": 0}}}),
     f"{R}.transition.retrospective.sampling.k: must be >= 1"),
    (_two_stages(transition={"retrospective": {"carry_share": 0.0}}), None),
    (_two_stages(transition={"retrospective": {"carry_share": 1.0}}), f"{R}.transition.retrospective.carry_share: must be in [0, 1)"),
    (_two_stages(transition={"retrospective": {"carry_share": -0.5}}), f"{R}.transition.retrospective.carry_share: must be in [0, 1)"),
    (_two_stages(transition=RETRO, data={}),
     f"{R}.data.components: retrospective sampling adds to this stage's own mixture, which is empty"),
    (_two_stages(transition={"hard_mining": {"source": "mixture"}}, data={}), f"{R}.data.components: mining 'mixture' needs data"),
    (_two_stages(data={}), f"{R}.data.components: an RL stage needs data"),
    (_with_raw(lambda r: r.update(eval=[{"name": "e", "path": "e.parquet", "max_new_tokens": 1}])), None),
    (_with_raw(lambda r: r.update(eval=[{"name": "e", "path": "e.parquet", "max_new_tokens": 0}])),
     "eval[0].max_new_tokens: must be > 0"),
    (_with_raw(lambda r: r["stages"][0].update(name="Warm-Up_1")), None),   # capitals are letters too
    (_two_stages(inflight_gen_batches=1, max_gen_batches=1), None),
    (_two_stages(inflight_gen_batches=0), f"{R}.inflight_gen_batches: must be >= 1"),
    (_two_stages(max_gen_batches=0), f"{R}.max_gen_batches: must be >= 1"),
    (_two_stages(save_every=1), None),
    (_two_stages(max_response_tokens=100, overlong_buffer={"length": 1}), None),
    (_two_stages(transition={"hard_mining": {"solved_threshold": 0.0}}),
     f"{R}.transition.hard_mining.solved_threshold: must be in (0, 1]: it is a mean accuracy over the K samples"),
    (_with_raw(lambda r: r.update(cluster={"max_checkpoints": 1})), None),
    (_with_raw(lambda r: r.update(cluster={"max_checkpoints": None})), None),    # keeps every checkpoint
    (_with_raw(lambda r: r.update(cluster={"max_checkpoints": 0})), "cluster.max_checkpoints: must be >= 1 or null"),
    (_two_stages(reward_kwargs={"judge_config": {"base_url": "http://j/v1", "timeout": 5}}),
     f"{R}.reward_kwargs.judge_config.timeout: unknown key; known keys: base_url, model, api_key_env, system_prompt, "
     "user_template, strict_verdict, temperature, max_tokens, timeout_s, max_retries, backoff_s, backoff_max_s, "
     "max_concurrency, cache_path, extra_body"),
    (_two_stages(reward_kwargs={"judge_config": "http://j/v1"}),
     f"{R}.reward_kwargs.judge_config: expected a mapping of JudgeConfig fields"),
])
def test_every_check_at_its_boundary(tmp_path, raw, message):
    path = _write(tmp_path, yaml.safe_dump(raw))
    if message is None:
        assert load_recipe(path).stages[1].name == "rl"
        return
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize("field, value, message", [
    ("group_size", True, "expected an integer, got True"),          # a bool is not an integer
    ("group_size", 2.0, "expected an integer, got 2.0"),
    ("kl_coef", True, "expected a number, got True"),
    ("kl_coef", "0.1", "expected a number, got '0.1'"),
    ("norm_adv_by_std", 1, "expected true/false, got 1"),
    ("algorithm", None, "must not be null"),
    ("mini_batch_size", "4", "expected an integer, got '4'"),        # inside an Optional
    ("reward_kwargs", [1], "expected a mapping, got list"),
    ("optim", 3, "expected a mapping for Optim, got int"),
])
def test_field_types_are_checked(tmp_path, field, value, message):
    path = _write(tmp_path, yaml.safe_dump(_two_stages(**{field: value})))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: {R}.{field}: {message}"


def test_types_convert_and_defaults_fill(tmp_path):
    raw = _two_stages(kl_coef=1, mini_batch_size=None, temperature=2)
    raw["stages"][1]["rl"]["data"]["components"][0]["path"] = "/abs/x.parquet"
    r = load_recipe(_write(tmp_path, yaml.safe_dump(raw)))
    rl = r.stages[1].rl
    assert type(rl.kl_coef) is float and rl.kl_coef == 1.0 and rl.temperature == 2.0 and rl.mini_batch_size is None
    assert rl.data.components[0].path == "/abs/x.parquet"                          # absolute paths stay
    assert r.stages[0].sft.data.components[0].path == str(tmp_path / "s.parquet")  # relative to the recipe
    assert r.model == "m" and r.seed == 0 and r.stages[0].kind == "sft" and r.stages[1].kind == "rl"
    assert rl.optim.learning_rate == 1e-6 and r.stages[0].sft.optim.learning_rate == 1e-5
    assert (rl.group_size, rl.kl_type, rl.loss_agg, rl.max_prompt_tokens, rl.save_every) == (8, "low_var_kl", "token-mean", 16384, 20)


def test_models_and_demo_data_resolve_against_the_recipe(tmp_path):
    raw = _two_stages()
    raw.update(model="./models/m", demo_data={"dir": "demo", "seed": 1},
               eval=[{"name": "near", "path": "ev/../held.parquet"}, {"name": "far", "path": "/d/link/../held.parquet"}])
    r = load_recipe(_write(tmp_path, yaml.safe_dump(raw)))
    assert r.model == str(tmp_path / "models" / "m") and r.demo_data == {"dir": str(tmp_path / "demo"), "seed": 1}
    # a relative eval set is read beside the recipe; an absolute path is kept as written (`..` after a
    # symlink is not the folder a string normalisation gives)
    assert [e.path for e in r.eval] == [str(tmp_path / "held.parquet"), "/d/link/../held.parquet"]
    raw.update(model="Qwen/Qwen2.5-7B-Instruct", tiny_model={"hidden": 8})   # a tiny model is built at a local path
    assert load_recipe(_write(tmp_path, yaml.safe_dump(raw))).model == str(tmp_path / "Qwen" / "Qwen2.5-7B-Instruct")
    raw.pop("tiny_model")
    assert load_recipe(_write(tmp_path, yaml.safe_dump(raw))).model == "Qwen/Qwen2.5-7B-Instruct"   # a hub id stays
    raw["demo_data"] = {"seed": 1}
    with pytest.raises(RecipeError, match="demo_data.dir: required key missing"):
        load_recipe(_write(tmp_path, yaml.safe_dump(raw)))


def test_missing_file_unknown_top_key_and_config_hash(tmp_path):
    with pytest.raises(RecipeError, match="nope.yaml: recipe file not found"):
        load_recipe(str(tmp_path / "nope.yaml"))
    with pytest.raises(RecipeError, match=r": nmae: unknown key; known keys: name, model, stages, seed, eval, cluster, "
                                          r"tiny_model, demo_data, logger$"):
        load_recipe(_write(tmp_path, yaml.safe_dump({**_two_stages(), "nmae": "x"})))
    with pytest.raises(RecipeError, match=r": recipe: expected a mapping for Recipe, got list$"):
        load_recipe(_write(tmp_path, "[1, 2]\n"))
    from loongrl.train.recipe import config_hash, to_dict

    a = load_recipe(_write(tmp_path, yaml.safe_dump(_two_stages())))
    b = load_recipe(_write(tmp_path, yaml.safe_dump(_two_stages(kl_coef=0.002))))
    assert config_hash(a.stages[1]) == config_hash(a.stages[1]) != config_hash(b.stages[1])
    assert len(config_hash(a)) == 16 and "source" not in to_dict(a)
    assert to_dict(a.stages[1])["rl"]["data"]["components"] == [{"path": str(tmp_path / "x.parquet"),
                                                                  "max_items": None, "repeat": 1}]


def test_an_unsupported_field_type_names_itself():
    from loongrl.train.recipe import _convert

    with pytest.raises(RecipeError, match=r"^stages\[0\]\.x: unsupported field type set$"):
        _convert({1}, set, "stages[0].x")
    with pytest.raises(RecipeError, match=r"^x: unsupported field type tuple$"):
        _convert((1,), tuple[int], "x")
    with pytest.raises(RecipeError, match=r"^x: unsupported field type ForwardRef\('Later'\)$"):
        _convert(1, typing.ForwardRef("Later"), "x")  # a type without a __name__ is named by its repr


def test_config_hash_ignores_key_order_and_keeps_mapping_values(tmp_path):
    from loongrl.train.recipe import config_hash, to_dict

    a = load_recipe(_write(tmp_path, yaml.safe_dump(_two_stages(reward_kwargs={"require_think": True,
                                                                                "word_boundary": True}),
                                                    sort_keys=False)))
    b = load_recipe(_write(tmp_path, yaml.safe_dump(_two_stages(reward_kwargs={"word_boundary": True,
                                                                                "require_think": True}),
                                                    sort_keys=False)))  # (safe_dump sorts keys by default)
    assert list(b.stages[1].rl.reward_kwargs) == ["word_boundary", "require_think"]
    assert config_hash(a.stages[1]) == config_hash(b.stages[1])         # the same settings, reordered in YAML
    assert to_dict(a.stages[1])["rl"]["reward_kwargs"] == {"require_think": True, "word_boundary": True}


def test_recipes_are_read_as_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("# Stage names and notes may be written in any language: Zürich, 東京\n" + _with(), encoding="utf-8")
    with ascii_locale():   # open() without encoding="utf-8" could not read the accents
        r = load_recipe(str(path))
    assert r.stages[0].rl.data.components[0].path.endswith("x.parquet")


@pytest.mark.parametrize("text, message", [
    ("", "name: required key missing"),                                   # an empty file is an empty mapping
    ("name: t\nmodel: m\nstages: a\n", "stages: expected a list, got str"),
    ("name: t\nmodel: m\nstages: [{rl: {}}]\n", "stages[0].name: required key missing"),
    ("name: t\nmodel: m\nstages: [{name: 5, rl: {}}]\n", "stages[0].name: expected a string, got 5"),
])
def test_structure_errors_name_the_nested_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: {message}"


def test_parse_recipe_names_its_source_and_resolves_against_base_dir():
    from loongrl.train.recipe import parse_recipe

    with pytest.raises(RecipeError) as err:
        parse_recipe({"name": "t", "stages": []})
    assert str(err.value) == "<recipe>: model: required key missing"
    r = parse_recipe(_two_stages())
    assert r.source == "<recipe>" and r.stages[1].rl.data.components[0].path == "x.parquet"   # base_dir "."
    r = parse_recipe(_two_stages(), source="mine.yaml", base_dir="/runs")
    assert r.source == "mine.yaml" and r.stages[1].rl.data.components[0].path == "/runs/x.parquet"
    with pytest.raises(RecipeError) as err:
        parse_recipe({**_two_stages(), "demo_data": {"seed": 1}}, source="mine.yaml")
    assert str(err.value) == "mine.yaml: demo_data.dir: required key missing"


def test_a_union_without_null_refuses_null():
    from loongrl.train.recipe import _convert

    assert _convert(None, int | None, "x") is None
    with pytest.raises(RecipeError, match=r"^x: must not be null$"):
        _convert(None, int | str, "x")   # no recipe field has such a type yet; the branch must still refuse


def test_training_caches_judge_verdicts_unless_told_not_to(tmp_path):
    """A stage's judge caches verdicts on each machine by default (`auto`); `cache_path: null` turns it off."""
    cached = load_recipe(_write(tmp_path, yaml.safe_dump(_two_stages(reward_kwargs={"judge_config": {"model": "j"}}))))
    assert cached.stages[1].rl.reward_kwargs["judge_config"] == {"model": "j", "cache_path": "auto"}
    off = _two_stages(reward_kwargs={"judge_config": {"model": "j", "cache_path": None}})
    assert load_recipe(_write(tmp_path, yaml.safe_dump(off))).stages[1].rl.reward_kwargs["judge_config"]["cache_path"] is None


def test_logger_names_are_checked_on_load():
    base = {"name": "x", "model": "m", "stages": [{"name": "a", "sft": {"data": {"components": [{"path": "d"}]}}}]}
    assert parse_recipe(base, "r.yaml").logger == ["console", "tensorboard"]
    with pytest.raises(RecipeError) as err:
        parse_recipe(dict(base, logger=["console", "tensorbord"]), "r.yaml")
    assert str(err.value) == ("r.yaml: logger[1]: 'tensorbord' is not one of "
                              "['console', 'tensorboard', 'wandb', 'mlflow']")
    with pytest.raises(RecipeError, match=r"^r.yaml: logger: expected a list, got str$"):
        parse_recipe(dict(base, logger="wandb"), "r.yaml")
    with pytest.raises(RecipeError, match=r"^r.yaml: logger: \['wandb', 'wandb'\] names a logger twice$"):
        parse_recipe(dict(base, logger=["wandb", "wandb"]), "r.yaml")
    with pytest.raises(RecipeError, match=r"^r.yaml: cluster.extra_overrides\[1\]: set the loggers with the recipe's "
                                          r"`logger` field, not trainer.logger$"):
        parse_recipe(dict(base, cluster={"extra_overrides": ["trainer.balance_batch=False",
                                                             "trainer.logger=[console,wandb]"]}), "r.yaml")
