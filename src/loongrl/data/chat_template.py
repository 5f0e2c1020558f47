"""A tokenizer's own chat template, rendered without transformers (no torch import, fast start-up).

transformers 5.x (`utils/chat_template_utils.py`, `tokenization_utils_base.py`) renders
`tokenizer.chat_template` with jinja2 in an `ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True)` with the `{% generation %}` tag and `loopcontrols` extensions, a `tojson` filter
that does not escape HTML, the globals `raise_exception` and `strftime_now`, and the variables
`messages`, `tools`, `documents`, `add_generation_prompt` plus the tokenizer's named special tokens as
strings (`bos_token`, `eos_token`, ..., and model-specific `*_token` entries of tokenizer_config.json).
This module reads the same files in the same order of precedence and renders the same way;
tests/test_data_tokenizers.py checks it against `apply_chat_template` on every tokenizer we support.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

# Named special tokens transformers passes to every template (SPECIAL_TOKENS_ATTRIBUTES).
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Defaults a tokenizer class applies when tokenizer_config.json leaves a named token out (transformers 5.x).
CLASS_DEFAULT_TOKENS = {
    "Qwen2Tokenizer": {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
}
CLASS_DEFAULT_TOKENS["Qwen2TokenizerFast"] = CLASS_DEFAULT_TOKENS["Qwen2Tokenizer"]


def _token_text(value) -> str | None:
    """A token as tokenizer_config.json stores it: a string or a serialised AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_chat_template(folder: str, config: dict) -> str | dict | None:
    """The template(s) transformers would load from `folder`: chat_template.jinja and
    additional_chat_templates/*.jinja take priority over tokenizer_config.json's `chat_template`."""
    templates = {}
    main = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(main):
        with open(main, encoding="utf-8") as f:
            templates["default"] = f.read()
    extra = os.path.join(folder, "additional_chat_templates")
    if os.path.isdir(extra):
        for name in sorted(os.listdir(extra)):
            if name.endswith(".jinja"):
                with open(os.path.join(extra, name), encoding="utf-8") as f:
                    templates[name.removesuffix(".jinja")] = f.read()
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    template = config.get("chat_template")
    if isinstance(template, list):
        return {t["name"]: t["template"] for t in template}
    return template


def special_tokens_map(config: dict, special_tokens_file: dict, tokenizer_class: str | None) -> dict[str, str]:
    """The string values of the named (and model-specific) special tokens, as `special_tokens_map` is in
    transformers after loading: the class defaults, overridden by tokenizer_config.json, overridden by the
    legacy special_tokens_map.json (which is read only when the config has no `added_tokens_decoder`)."""
    values: dict = dict(CLASS_DEFAULT_TOKENS.get(tokenizer_class or "", {}))
    merged = dict(config)
    if "added_tokens_decoder" not in config:
        merged.update(special_tokens_file)
    for key, value in merged.items():
        if key in NAMED_SPECIAL_TOKENS:
            if value is None:
                values.pop(key, None)  # an explicit null overrides the class default
            elif _token_text(value) is not None:
                values[key] = _token_text(value)
        elif key.endswith("_token") and _token_text(value) is not None:  # model-specific, e.g. image_token
            values[key] = _token_text(value)
    extra = merged.get("extra_special_tokens")
    if isinstance(extra, dict):
        values.update({k: _token_text(v) for k, v in extra.items() if _token_text(v) is not None})
    return values


class ChatTemplate:
    """`render(messages)` == `tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)`."""

    def __init__(self, template: str | dict, special_tokens: dict[str, str], source: str = ""):
        if isinstance(template, dict):
            if "default" not in template:
                raise ValueError(f"{source}: several chat templates ({sorted(template)}) and none named 'default'")
            template = template["default"]
        self.source = source
        self.text = template
        self.special_tokens = dict(special_tokens)
        self._compiled = _compile(template)

    @classmethod
    def from_folder(cls, folder: str) -> "ChatTemplate":
        config = read_json(os.path.join(folder, "tokenizer_config.json"))
        template = load_chat_template(folder, config)
        if template is None:
            raise ValueError(f"{folder}: the tokenizer has no chat template (chat_template.jinja or "
                             "tokenizer_config.json 'chat_template')")
        tokens = special_tokens_map(config, read_json(os.path.join(folder, "special_tokens_map.json")),
                                    config.get("tokenizer_class"))
        return cls(template, tokens, folder)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self._compiled.render(messages=messages, tools=None, documents=None,
                                     add_generation_prompt=add_generation_prompt, **self.special_tokens)


def _compile(template: str):
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` renders its body (transformers uses it to mark
        assistant tokens; the text is the same)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)
