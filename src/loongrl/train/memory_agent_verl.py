"""Training the memory agent on unforked verl 0.9.1: MemAgent's multi-conversation rollouts (arXiv 2507.02259)
as a verl agent loop.

One sample of a row is one agent session: the row's document is cut into chunks of `chunk_tokens`; for each
chunk one conversation (the read-and-rewrite prompt of `loongrl.generation.memory_agent`, the problem, the
memory, the chunk) whose reply replaces the memory; then one final conversation that answers from the memory.
Each conversation is one `AgentLoopOutput` (its own prompt and response, response mask 1 on every generated
token), so the session returns K = chunks + 1 outputs. What verl does with them (v1 trainer, the default,
`trainer.use_v1=True`):

- scores only the last output (the final answer) and copies its `reward_score` and reward extra info to every
  earlier output (verl/trainer/ppo/v1/agent_loop_tq.py:161, 172-175): the final answer's reward is given to every
  conversation. The score itself is computed here, by the stage's reward function as verl loads it
  (`get_custom_reward_fn`: `reward.custom_reward_function` path, name and reward_kwargs; called as verl's naive
  reward manager calls it, naive.py:34-100), and set on the final output, which verl then does not score again
  (agent_loop.py:972). verl's own scoring of a multi-output loop reads the wrong text: `_compute_score`
  (agent_loop.py:967-1025) right-pads the outputs' prompt + response into one batch, and the naive and dapo
  managers take the final answer's length as the sum of the last `responses.shape[-1]` attention-mask positions
  (naive.py:37-40, dapo.py:53-58), which for a final conversation shorter than the reading ones are padding: the
  answer decodes empty, or cut, and scores 0 (seen in the preflight: "The answer is river." scored 0.0);
- stores each output as its own training row, keyed `{uid}_{session}_{index}` (agent_loop_tq.py:180-227);
- for `algorithm.adv_estimator=grpo`, computes GRPO on the final outputs only (one per session, grouped by the
  row's uid) and broadcasts each session's advantage to all its conversations
  (verl/trainer/ppo/v1/utils.py:148-217, `compute_advantage_for_multi_trajectories`): MemAgent's rule
  (its `compute_1D_grpo_advantage` over the final answers, then broadcast). Other estimators see every
  conversation as a member of the group (utils.py:167-176), so the recipe refuses them with the memory agent;
- pads the rows to a multiple of the mini-batch (trainer_base.py:1608-1632) and trains every row: PPO, KL and
  the token-mean loss over all conversations' response tokens.

The agent loop is registered under `AGENT_NAME` when this module is imported; verl's processes import it through
`VERL_USE_EXTERNAL_MODULES` (verl/__init__.py:49-52), and its settings come from the rollout config's extension
point `actor_rollout_ref.rollout.custom.memory_agent` (verl/workers/config/rollout.py:233-234), which verl hands
every agent loop (agent_loop.py:224-226). Both are emitted by `verl_backend.memory_agent_overrides`.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register
from verl.trainer.ppo.reward import get_custom_reward_fn
from verl.utils.profiler import simple_timer

from loongrl.data.prompts import row_context_templates
from loongrl.generation.memory_agent import (MemoryAgentConfig, answer_messages, chunk_document, split_prompt,
                                             update_messages)

AGENT_NAME = "memory_agent"
ROW_TEMPLATES = row_context_templates()
logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))


def memory_agent_config(custom) -> MemoryAgentConfig:
    """The `MemoryAgentConfig` of `actor_rollout_ref.rollout.custom.memory_agent` (chunk_tokens, memory_tokens,
    answer_tokens; the templates are MemAgent's). A missing section is an error naming the key.

    Example:
        >>> memory_agent_config({"memory_agent": {"chunk_tokens": 64, "memory_tokens": 32, "answer_tokens": 16}})
        ... # doctest: +ELLIPSIS
        MemoryAgentConfig(chunk_tokens=64, memory_tokens=32, answer_tokens=16, ...)
    """
    section = (custom or {}).get("memory_agent")
    if section is None:
        raise ValueError(f"the {AGENT_NAME!r} agent loop needs actor_rollout_ref.rollout.custom.memory_agent "
                         "(chunk_tokens, memory_tokens, answer_tokens); the verl backend emits it for a stage with "
                         "`memory_agent:` set")
    return MemoryAgentConfig(chunk_tokens=int(section["chunk_tokens"]), memory_tokens=int(section["memory_tokens"]),
                             answer_tokens=int(section["answer_tokens"]))


_REWARD_FNS: dict = {}  # the stage's reward function per reward config, loaded once per process


def _reward_fn(config):
    section = config.reward.get("custom_reward_function") or {}
    key = repr(sorted((k, repr(v)) for k, v in dict(section).items()))
    if key not in _REWARD_FNS:
        _REWARD_FNS[key] = get_custom_reward_fn(config)
    return _REWARD_FNS[key]


@register(AGENT_NAME)
class MemoryAgentLoop(AgentLoopBase):
    """MemAgent's session: one conversation per chunk, then the final answer; returns one `AgentLoopOutput`
    per conversation (the final answer last, the one verl scores)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory = memory_agent_config(self.rollout_config.get("custom"))
        self.prompt_length = self.rollout_config.prompt_length
        self.response_length = self.rollout_config.response_length

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> list[AgentLoopOutput]:
        cfg = self.memory
        messages = list(kwargs["raw_prompt"])
        problem, document = split_prompt(messages, ROW_TEMPLATES)  # as `eval --memory-agent` splits rows
        chunks = await self.loop.run_in_executor(None, chunk_document, self.tokenizer, document, cfg.chunk_tokens)
        session = uuid4().hex  # one sticky session per sample: its turns go to the same server
        memory, outputs = cfg.no_memory, []
        for chunk in chunks:
            output = await self._conversation(update_messages(cfg, problem, memory, chunk), sampling_params,
                                              cfg.memory_tokens, session, kwargs)
            # the reply replaces the memory (MemAgent memory.py `update`: the response, eos removed)
            memory = self.tokenizer.decode(output.response_ids, skip_special_tokens=True).strip()
            outputs.append(output)
        final = await self._conversation(answer_messages(cfg, problem, memory), sampling_params, cfg.answer_tokens,
                                         session, kwargs)
        await self._score(final, kwargs)
        return outputs + [final]

    async def _score(self, final: AgentLoopOutput, row: dict) -> None:
        """The final answer's reward, as verl's naive reward manager computes it (naive.py:34-100): the stage's
        reward function on the decoded answer; `reward_extra_info` is every key it returns (`acc` for DAPO's
        filter). Without a custom reward function verl scores it itself (see the module docstring)."""
        fn = _reward_fn(self.config)
        if fn is None:
            return
        text = self.tokenizer.decode(final.response_ids, skip_special_tokens=True)
        args = dict(data_source=row["data_source"], solution_str=text,
                    ground_truth=row["reward_model"]["ground_truth"], extra_info=dict(row.get("extra_info") or {}))
        with simple_timer("compute_score", timing := {}):
            result = await fn(**args) if inspect.iscoroutinefunction(fn) else \
                await self.loop.run_in_executor(None, lambda: fn(**args))
        info = dict(result) if isinstance(result, dict) else {"acc": result}
        final.reward_score = float(result["score"] if isinstance(result, dict) else result)
        final.extra_fields["reward_extra_info"] = info
        final.metrics.compute_score = timing["compute_score"]

    async def _conversation(self, messages: list[dict], sampling_params: dict, max_tokens: int, session: str,
                            row: dict) -> AgentLoopOutput:
        """One conversation: the chat template applied as verl's single-turn loop does (Continuous Token,
        single_turn_agent_loop.py:43-77), at most `max_tokens` new tokens."""
        prompt_ids = await self.loop.run_in_executor(
            None, lambda: self.continuous_token_builder.build_initial_tokens(messages))
        if len(prompt_ids) > self.prompt_length:
            # verl would cut the prompt's head (agent_loop.py:437-446), the template and the problem with it
            raise ValueError(f"memory agent: a turn of row index {row.get('index')} ({row.get('data_source')}) has "
                             f"{len(prompt_ids)} prompt tokens > data.max_prompt_length {self.prompt_length}: its "
                             "problem is longer than memory_agent.problem_tokens")
        metrics: dict = {}
        params = dict(sampling_params, max_tokens=min(max_tokens, self.response_length))
        with simple_timer("generate_sequences", metrics):
            out = await self.server_manager.generate(request_id=session, prompt_ids=prompt_ids,
                                                     sampling_params=params)
        metrics["num_preempted"] = out.num_preempted if out.num_preempted is not None else -1
        merged, response_mask, logprobs = await self.ct_merge_assistant_token(
            prompt_ids, out.token_ids, [], [] if out.log_probs else None,
            assistant_logprobs=out.log_probs if out.log_probs else None)
        n = len(response_mask)
        response_ids = merged.token_ids[len(merged.token_ids) - n:] if n else []
        prompt_ids = merged.token_ids[: len(merged.token_ids) - n]
        extra = dict(out.extra_fields or {})  # min/max_global_steps: the trainer's staleness tags read them
        extra.update({"turn_scores": [], "tool_rewards": []})  # the schema of verl's own loops
        return AgentLoopOutput(prompt_ids=prompt_ids, response_ids=response_ids[: self.response_length],
                               response_mask=response_mask[: self.response_length],
                               response_logprobs=logprobs[: self.response_length] if logprobs else None,
                               num_turns=2, metrics=metrics, extra_fields=extra)
