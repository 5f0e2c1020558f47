"""Recipe loading: the shipped recipes validate, and bad input names the file and the field."""

from __future__ import annotations

import os

import pytest
import yaml

from loongrl.train.recipe import RecipeError, load_recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "recipes")


@pytest.mark.parametrize("name", ["demo-cpu", "loongrl-7b", "loongrl-14b", "qwenlong-l1-32b"])
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
    with pytest.raises(RecipeError, match=r"NOT_SET_AT_ALL\} is not set"):
        load_recipe(_write(tmp_path, _with().replace("x.parquet", "${NOT_SET_AT_ALL}/x.parquet")))
