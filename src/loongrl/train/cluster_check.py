"""Before a stage goes to a Ray cluster: does every node see what the stage will use?

verl's workers on every node open the stage's parquet, the reward router (loaded by path), the model and
the checkpoint folder by the paths the launcher wrote into the overrides, and import loongrl (the DAPO
sampler, the verl plugin) and verl. A path that exists only on the submitting host fails deep inside a
worker, minutes into the run. This runs as a Ray job (`verl_backend.stage_commands`'s `check`), visits each
alive node and fails with every node's missing items:

    ray job submit --address=http://HEAD:8265 -- python -m loongrl.train.cluster_check \\
        --path=/shared/run/00_sft/data.parquet --path=/shared/run/00_sft/verl_ckpt --env=OPENAI_API_KEY

`--env` names environment variables that must be set on the nodes (their values are never read out).
"""

from __future__ import annotations

import argparse
import os
import sys


def node_problems(paths: list[str], env: list[str], versions: dict[str, str]) -> list[str]:
    """What is wrong on this machine: missing paths, unwritable folders, unset variables, other versions."""
    problems = []
    for p in paths:
        if not os.path.exists(p):
            problems.append(f"missing path {p}")
        elif os.path.isdir(p) and not os.access(p, os.W_OK | os.X_OK):
            problems.append(f"folder not writable: {p}")
    problems += [f"environment variable {e} is not set" for e in env if not os.environ.get(e)]
    for name, want in versions.items():
        try:
            module = __import__(name)
            have = getattr(module, "__version__", "?")
        except ImportError as e:
            have = f"not importable ({e})"
        if have != want:
            problems.append(f"{name} {have} (the launcher has {want})")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", action="append", default=[], help="a path every node must see (repeatable)")
    p.add_argument("--env", action="append", default=[], help="an environment variable every node must have")
    p.add_argument("--version", action="append", default=[], help="module=version every node must have")
    args = p.parse_args(argv)
    versions = dict(v.split("=", 1) for v in args.version)

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    check = ray.remote(num_cpus=0)(node_problems)
    results = ray.get([check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                       .remote(args.path, args.env, versions) for n in nodes])
    bad = [(n.get("NodeManagerAddress", n["NodeID"]), r) for n, r in zip(nodes, results) if r]
    if bad:
        print(f"cluster check failed on {len(bad)} of {len(nodes)} nodes: every node must see the stage's "
              "paths (a shared filesystem) and have loongrl and verl installed", file=sys.stderr)
        for node, problems in bad:
            for problem in problems:
                print(f"  {node}: {problem}", file=sys.stderr)
        return 1
    print(f"cluster check passed on {len(nodes)} nodes ({len(args.path)} paths, {len(args.env)} variables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
