"""Beyond the native window: one YaRN plan for training and evaluation (loongrl.generation.window), evaluation's
--rope-scaling / --window, and requests longer than the window refused before anything is generated."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import yaml
from conftest import QWEN, write_model_config

from loongrl.cli import main
from loongrl.eval.cli import _window
from loongrl.generation.window import read_model_config, rope_plan
from loongrl.train.checks import rope_scaling_plan
from loongrl.train.recipe import load_recipe


def _recipe(tmp_path, model: str, length: int):
    rl = {"data": {"components": [{"path": str(tmp_path / "rows.parquet")}]}, "batch_size": 8, "steps": 1,
          "max_prompt_tokens": length - 1024, "max_response_tokens": 1024}
    path = tmp_path / f"r{length}.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "model": model, "stages": [{"name": "s", "rl": rl}],
                                    "cluster": {"nnodes": 1, "gpus_per_node": 8}}))
    recipe = load_recipe(str(path))
    return recipe, recipe.stages[0]


def _args(backend: str, window: int | None = None, rope: str = "auto") -> argparse.Namespace:
    return argparse.Namespace(backend=backend, window=window, rope_scaling=rope)


def test_yarn_factor_is_chosen_once_for_training_and_evaluation(tmp_path, capsys):
    model = write_model_config(str(tmp_path / "qwen7b"))  # Qwen2.5-7B's 32,768-token native window
    config, where = read_model_config(model)
    factors = {n: (rope_plan(config, where, n, "auto") or {}).get("factor") for n in (32768, 40000, 65536, 131072)}
    assert factors == {32768: None, 40000: 2, 65536: 2, 131072: 4}  # never on where the native window covers it
    for length in (32768, 65536, 131072):
        recipe, stage = _recipe(tmp_path, model, length)
        trained = rope_scaling_plan(recipe, stage)
        evaluated = _window(_args(f"hf:{model}"), length)
        assert trained == evaluated.rope == rope_plan(config, where, length, "auto")
        assert evaluated.tokens == (32768 if length == 32768 else trained["max_position_embeddings"])
    assert evaluated.settings() == {"window": 131072, "rope_scaling": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "rope_theta": 1e6}}
    assert "note: window 131072 tokens (YaRN factor 4 (4 x 32768 = 131072 tokens) over the native window" in \
        capsys.readouterr().err
    # a transformers 5 config keeps rope_theta only in rope_parameters (SmolLM2's): the plan carries it over,
    # else YaRN would run with the library's default theta (10,000) instead of the model's
    smol = write_model_config(str(tmp_path / "smol"), max_position_embeddings=8192, rope_theta=None,
                              rope_parameters={"rope_theta": 100000.0, "rope_type": "default"})
    recipe, stage = _recipe(tmp_path, smol, 12288)
    assert rope_scaling_plan(recipe, stage)["rope_scaling"] == {
        "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192, "rope_theta": 100000.0}


def test_window_beyond_the_model_refused_for_local_backends_and_warned_for_servers(tmp_path, capsys):
    model = write_model_config(str(tmp_path / "qwen7b"))
    for rope in ("off", "auto"):  # auto: the 4K requests fit the native window, so no YaRN to stretch it
        with pytest.raises(ValueError) as err:
            _window(_args(f"vllm:{model}", window=65536, rope=rope), 4096)
        assert str(err.value).startswith(f"--window 65536 exceeds the 32768-token window of the model "
                                         f"(max_position_embeddings of {model} config.json; rope scaling ")
        assert "use rope scaling (--rope-scaling auto" in str(err.value)
    forced = _window(_args(f"hf:{model}", window=65536, rope="yarn:2"), 4096)
    assert (forced.tokens, forced.rope["factor"]) == (65536, 2)
    with pytest.raises(ValueError, match="--rope-scaling 'yarn:1': expected auto, off or yarn:FACTOR"):
        _window(_args(f"hf:{model}", rope="yarn:1"), 4096)
    # a server's rope scaling is set where it starts: --window is taken as stated, with a warning
    capsys.readouterr()
    served = _window(_args(f"openai:http://127.0.0.1:1/v1#{model}", window=65536), 65536)
    assert (served.tokens, served.source, served.rope, served.served) == (65536, "--window", None, True)
    assert served.report()["rope_scaling"] == "the server's (set where it was started)"
    assert "warning: --window 65536 exceeds the 32768-token window of " in capsys.readouterr().err
    assert _window(_args(f"openai:http://127.0.0.1:1/v1#{model}"), 65536).tokens == 32768
    with pytest.raises(ValueError, match="an openai: server's rope scaling is set where it is started"):
        _window(_args(f"openai:http://127.0.0.1:1/v1#{model}", rope="yarn:2"), 65536)


def test_rows_longer_than_the_window_are_refused_before_any_request(server, kc_files, tmp_path, capsys):
    """KeyChain rows of ~16K tokens against a server stated to have an 8K window: every row named, nothing sent."""
    server.reset()
    out = str(tmp_path / "rows")
    assert main(["eval", "rows", kc_files["hotpotqa"], "--limit", "3", "--backend", f"openai:{server.base_url}#m",
                 "--tokenizer", QWEN, "--window", "8192", "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: 3 request(s) exceed the 8192-token window (--window) (prompt + new tokens): " \
           f"{kc_files['hotpotqa']} row 0: " in err
    assert "nothing was generated. Use --rope-scaling auto" in err
    assert server.requests == [] and not os.path.exists(os.path.join(out, "samples_kc.jsonl"))


@pytest.fixture(scope="module")
def tiny_1k(tmp_path_factory):
    """The project's tiny Qwen2 model with a 1,024-token native window (its tokenizer trained on HotpotQA)."""
    from conftest import INPUTS

    from loongrl.data.sources import load_source
    from loongrl.demo.tiny import build_tiny_model

    texts = load_source("hotpotqa", INPUTS["hotpotqa"]).pool.texts[:500]
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_1k")), texts, vocab_size=512, max_positions=1024)


def test_niah_beyond_the_window_refused_with_off_and_run_with_yarn_by_auto(tiny_1k, tmp_path, capsys):
    """NIAH at 1,500 tokens on a model with a 1,024-token window: refused before the model is loaded with
    --rope-scaling off; with auto the model is loaded with YaRN factor 2 and the whole prompt is answered."""
    grid = ["eval", "niah", "--backend", f"hf:{tiny_1k}", "--min-len", "1500", "--max-len", "1500",
            "--num-lengths", "1", "--num-depths", "1", "--max-new-tokens", "2", "--quiet"]
    assert main(grid + ["--out", str(tmp_path / "off"), "--rope-scaling", "off"]) == 2
    err = capsys.readouterr().err
    assert (f"error: 1 request(s) exceed the 1024-token window (max_position_embeddings of {tiny_1k} config.json; "
            "rope scaling off) (the prompt length): NIAH length 1500: 1500 tokens; nothing was generated") in err
    assert not os.path.exists(tmp_path / "off" / "samples.jsonl")

    assert main(grid + ["--out", str(tmp_path / "auto")]) == 0
    report = json.load(open(tmp_path / "auto" / "niah.json"))
    assert report["summary"]["window"]["tokens"] == 2048
    assert report["summary"]["window"]["rope_scaling"] == "YaRN factor 2 (2 x 1024 = 2048 tokens)"
    (record,) = report["records"]
    assert 1024 < record["meta"]["prompt_tokens"] <= 1500 and record["meta"]["window"] == 2048
    assert "rope scaling: YaRN factor 2" in open(tmp_path / "auto" / "niah.md").read()
    # what the hf: backend loaded for that plan: the model with YaRN (its rope_theta kept) and a 2K window
    from loongrl.generation.backends import TransformersBackend
    from loongrl.generation.window import yarn_plan

    config, _ = read_model_config(tiny_1k)
    model = TransformersBackend(tiny_1k, rope=yarn_plan(config, 1500)).model
    assert model.config.rope_parameters == {"rope_type": "yarn", "factor": 2.0,
                                            "original_max_position_embeddings": 1024, "rope_theta": 10000.0}
    assert model.config.max_position_embeddings == 2048
    assert model.model.rotary_emb.attention_scaling == pytest.approx(0.1 * 0.6931471805599453 + 1)  # YaRN's mscale
    assert TransformersBackend(tiny_1k).model.model.rotary_emb.attention_scaling == 1.0  # auto below the window


def test_serve_vllm_starts_with_yarn_only_past_the_native_window(tmp_path, capsys):
    """`loongrl serve vllm --rope-scaling`: the same plan, sent to vLLM as --hf-overrides."""
    from loongrl.generation.cli import _serve_rope
    from loongrl.generation.serve import vllm_command

    model = write_model_config(str(tmp_path / "qwen7b"))
    assert _serve_rope(model, 32768, "auto") is None and _serve_rope(model, 131072, "off") is None
    plan = _serve_rope(model, 131072, "auto")
    assert "rope scaling: YaRN factor 4 (4 x 32768 = 131072 tokens)" in capsys.readouterr().err
    cmd = vllm_command(model, 8000, "python", 131072, rope=plan)
    assert cmd[cmd.index("--max-model-len") + 1] == "131072"
    assert json.loads(cmd[cmd.index("--hf-overrides") + 1]) == {"max_position_embeddings": 131072, "rope_scaling": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "rope_theta": 1e6}}
    assert "--hf-overrides" not in vllm_command(model, 8000, "python", 32768)
