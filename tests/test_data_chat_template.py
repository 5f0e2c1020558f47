"""The torch-free chat template renderer (data/chat_template.py) on hand-written tokenizer folders and templates.

tests/test_data_tokenizers.py compares it with transformers' `apply_chat_template` on real tokenizers; these
check each piece of transformers' behaviour it reproduces (which files hold the template, which special
tokens a template sees, the jinja environment) against outputs written out by hand.
"""

from __future__ import annotations

import datetime
import json
import os

import jinja2
import pytest

from loongrl.data.chat_template import ChatTemplate, load_chat_template, read_json, special_tokens_map


def _folder(path, files: dict) -> str:
    """A tokenizer folder holding `files` (name -> text, or a dict written as JSON)."""
    for name, content in files.items():
        os.makedirs(os.path.dirname(path / name), exist_ok=True)
        text = json.dumps(content) if isinstance(content, dict) else content
        (path / name).write_text(text, encoding="utf-8")
    return str(path)


def test_blocks_are_trimmed_and_lstripped_as_in_transformers():
    """trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it."""
    ct = ChatTemplate("A\n  {% if true %}\nB\n  {% endif %}\nC", {})
    assert ct.render([]) == "A\nB\nC"


def test_loop_controls_and_the_generation_tag_are_available():
    template = ("{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
                "{% if m['content'] == 'stop' %}{% break %}{% endif %}"
                "{% if m['role'] == 'assistant' %}{% generation %}[{{ m['content'] }}]{% endgeneration %}"
                "{% else %}{{ m['content'] }}{% endif %};{% endfor %}")
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"}, {"role": "user", "content": "stop"},
            {"role": "user", "content": "never"}]
    assert ChatTemplate(template, {}).render(msgs) == "hi;[yo];"


@pytest.mark.parametrize("call, expected", [
    ("tojson", "{\"b\": \"<i>é</i> & 'x'\", \"a\": [1, 2]}"),
    ("tojson(indent=2)", "{\n  \"b\": \"<i>é</i> & 'x'\",\n  \"a\": [\n    1,\n    2\n  ]\n}"),
    ("tojson(separators=(',', ':'))", "{\"b\":\"<i>é</i> & 'x'\",\"a\":[1,2]}"),
    ("tojson(sort_keys=True)", "{\"a\": [1, 2], \"b\": \"<i>é</i> & 'x'\"}"),
    ("tojson(ensure_ascii=True)", "{\"b\": \"<i>\\u00e9</i> & 'x'\", \"a\": [1, 2]}"),
])
def test_tojson_keeps_html_non_ascii_and_key_order_and_takes_json_options(call, expected):
    """transformers' tojson: json.dumps with ensure_ascii off (jinja's own escapes HTML and sorts keys)."""
    ct = ChatTemplate("{{ messages[0]['content'] | %s }}" % call, {})
    assert ct.render([{"role": "user", "content": {"b": "<i>é</i> & 'x'", "a": [1, 2]}}]) == expected


def test_raise_exception_raises_a_template_error_with_the_templates_message():
    ct = ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Roles must start with user') }}"
                      "{% endif %}ok", {})
    assert ct.render([{"role": "user", "content": "a"}]) == "ok"
    with pytest.raises(jinja2.exceptions.TemplateError) as err:
        ct.render([{"role": "assistant", "content": "a"}])
    assert str(err.value) == "Roles must start with user"


def test_strftime_now_formats_the_current_date():
    before = datetime.date.today().isoformat()
    got = ChatTemplate("Today is {{ strftime_now('%Y-%m-%d') }}.", {}).render([])
    after = datetime.date.today().isoformat()
    assert got in (f"Today is {before}.", f"Today is {after}.")


def test_render_passes_the_variables_transformers_passes():
    ct = ChatTemplate("{{ tools is none }} {{ documents is none }} {{ add_generation_prompt }} "
                      "{{ messages | length }} {{ bos_token }}{{ image_token }}", {"bos_token": "<s>",
                                                                                    "image_token": "<img>"})
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert ct.render(msgs) == "True True True 2 <s><img>"
    assert ct.render(msgs, add_generation_prompt=False) == "True True False 2 <s><img>"


def test_a_template_dict_renders_its_default_and_needs_one():
    ct = ChatTemplate({"tool_use": "T", "default": "D"}, {})
    assert (ct.render([]), ct.text, ct.source) == ("D", "D", "")
    with pytest.raises(ValueError) as err:
        ChatTemplate({"tool_use": "T", "rag": "R"}, {}, "tok/dir")
    assert str(err.value) == "tok/dir: several chat templates (['rag', 'tool_use']) and none named 'default'"
    with pytest.raises(ValueError) as err:
        ChatTemplate({"rag": "R"}, {})
    assert str(err.value) == ": several chat templates (['rag']) and none named 'default'"


def test_chat_template_files_take_priority_over_the_config(tmp_path):
    config = {"chat_template": "from config"}
    only_main = _folder(tmp_path / "main", {"chat_template.jinja": "main {{ eos_token }}"})
    assert load_chat_template(only_main, config) == "main {{ eos_token }}"
    both = _folder(tmp_path / "both", {"chat_template.jinja": "main", "additional_chat_templates/rag.jinja": "rag",
                                       "additional_chat_templates/tool_use.jinja": "tools",
                                       "additional_chat_templates/README.md": "not a template"})
    assert load_chat_template(both, config) == {"default": "main", "rag": "rag", "tool_use": "tools"}
    extra_only = _folder(tmp_path / "extra", {"additional_chat_templates/rag.jinja": "rag"})
    assert load_chat_template(extra_only, config) == {"rag": "rag"}
    empty = _folder(tmp_path / "empty", {})
    assert load_chat_template(empty, config) == "from config"
    listed = {"chat_template": [{"name": "default", "template": "D"}, {"name": "rag", "template": "R"}]}
    assert load_chat_template(empty, listed) == {"default": "D", "rag": "R"}
    assert load_chat_template(empty, {}) is None


def test_from_folder_reads_the_template_and_special_tokens_as_transformers_loads_them(tmp_path):
    template = "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ sep_token }}|{{ image_token }}"
    # Template and tokens in tokenizer_config.json; the class's defaults fill the tokens it leaves out.
    in_config = _folder(tmp_path / "config", {"tokenizer_config.json": {
        "tokenizer_class": "Qwen2Tokenizer", "chat_template": template, "bos_token": None,
        "eos_token": {"content": "<|im_end|>", "special": True}, "image_token": "<img>"}})
    ct = ChatTemplate.from_folder(in_config)
    assert ct.source == in_config and ct.text == template
    assert ct.render([]) == "|<|im_end|>|<|endoftext|>||<img>"
    # The legacy special_tokens_map.json is read beside a config without added_tokens_decoder.
    legacy = _folder(tmp_path / "legacy", {"chat_template.jinja": template,
                                           "tokenizer_config.json": {"eos_token": "</s>"},
                                           "special_tokens_map.json": {"bos_token": "<s>", "sep_token": "[SEP]"}})
    assert ChatTemplate.from_folder(legacy).render([]) == "<s>|</s>||[SEP]|"
    # A folder with no tokenizer_config.json at all.
    bare = _folder(tmp_path / "bare", {"chat_template.jinja": "[{{ messages[0]['content'] }}]"})
    assert ChatTemplate.from_folder(bare).render([{"role": "user", "content": "x"}]) == "[x]"


def test_from_folder_refuses_a_folder_without_a_usable_template(tmp_path):
    none = _folder(tmp_path / "none", {"tokenizer_config.json": {"eos_token": "</s>"}})
    with pytest.raises(ValueError) as err:
        ChatTemplate.from_folder(none)
    assert str(err.value) == (f"{none}: the tokenizer has no chat template (chat_template.jinja or "
                              "tokenizer_config.json 'chat_template')")
    extra_only = _folder(tmp_path / "extra", {"additional_chat_templates/rag.jinja": "rag"})
    with pytest.raises(ValueError) as err:
        ChatTemplate.from_folder(extra_only)
    assert str(err.value) == f"{extra_only}: several chat templates (['rag']) and none named 'default'"


@pytest.mark.parametrize("config, file, cls, expected", [
    ({}, {}, None, {}),
    ({}, {}, "Qwen2Tokenizer", {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                "pad_token": "<|endoftext|>"}),
    # An explicit null removes a class default (and is harmless where there is none); a non-string is ignored.
    ({"pad_token": None, "sep_token": None, "eos_token": 7, "unk_token": {"content": "<unk>"}}, {},
     "Qwen2TokenizerFast", {"unk_token": "<unk>", "eos_token": "<|endoftext|>"}),
    # Model-specific *_token entries count; other string settings do not.
    ({"image_token": "<img>", "video_token": 3, "chat_template": "x", "padding_side": "left"}, {}, None,
     {"image_token": "<img>"}),
    # special_tokens_map.json overrides the config, unless the config has added_tokens_decoder.
    ({"eos_token": "a", "bos_token": "<s>"}, {"eos_token": "b", "sep_token": "[SEP]"}, None,
     {"eos_token": "b", "bos_token": "<s>", "sep_token": "[SEP]"}),
    ({"eos_token": "a", "added_tokens_decoder": {}}, {"eos_token": "b", "sep_token": "[SEP]"}, None,
     {"eos_token": "a"}),
    ({"extra_special_tokens": {"audio_token": "<audio>", "boi_token": {"content": "<boi>"}, "n": 1}}, {}, None,
     {"audio_token": "<audio>", "boi_token": "<boi>"}),
    ({}, {"extra_special_tokens": {"audio_token": "<audio>"}}, None, {"audio_token": "<audio>"}),
])
def test_special_tokens_a_template_sees(config, file, cls, expected):
    assert special_tokens_map(config, file, cls) == expected


def test_read_json_reads_utf8_and_gives_an_empty_dict_for_a_missing_file(tmp_path):
    (tmp_path / "c.json").write_text('{"eos_token": "<|终|>"}', encoding="utf-8")
    assert read_json(str(tmp_path / "c.json")) == {"eos_token": "<|终|>"}
    assert read_json(str(tmp_path / "missing.json")) == {}
