"""1,000 fuzzed configs through `feederd check` and the run path (issue 11), as JSON counts.

Each mutation (``tests/controller/config_fuzz.py``: adversarial numbers, strings and types,
deleted and inserted keys, deep nesting, damaged text) of ``deploy/feederd.example.toml`` or a
rig-style config must pass ``check`` and be accepted by the run path, or be refused by both with
one line and exit 2. Prints how many were accepted and refused, how many broke that promise
(``problems``; ``tracebacks`` among them: the target is 0), and how many accepted ones were
dispatched on the 33-bus case without error.

    .venv/bin/python benchmarks/fuzz_config.py [--mutations N] [--seed S] [--dispatch-every K]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the mutations live with the tests


def bench(mutations: int, seed: int, dispatch_every: int) -> dict[str, Any]:
    import structlog  # noqa: PLC0415

    from tests.controller.config_fuzz import (  # noqa: PLC0415
        dispatch_once,
        evaluate,
        example_base,
        make_files,
        mutate,
        rig_base,
    )
    from tests.support.tls import make_certs  # noqa: PLC0415

    # the daemon's own log lines (an MQTT device that cannot connect) stay out of the JSON
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.disable(logging.CRITICAL)
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    examples: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="feederd-fuzz-") as scratch:
        d = Path(scratch)
        (d / "certs").mkdir()
        files = make_files(d, certs=make_certs(d / "certs"))
        for i in range(mutations):
            base = rng.choice((example_base, rig_base))(files)
            outcome = evaluate(mutate(base, rng, files), files)
            counts[outcome.result] += 1
            counts["tracebacks"] += outcome.tracebacks
            if outcome.problems:
                counts["problems"] += 1
                if len(examples) < 5:
                    examples.append(f"#{i}: {outcome.problems[0][:500]}")
            if outcome.result == "refused":
                key = outcome.message.split(": ")[2] if outcome.message.count(": ") > 2 else "?"
                reasons[key.split(".")[0].split("[")[0]] += 1
            if outcome.loaded is not None and counts["accepted"] % dispatch_every == 1:
                try:
                    dispatch_once(outcome.loaded)
                    counts["dispatched"] += 1
                except Exception as err:  # a config check accepted that cannot be dispatched
                    counts["dispatch_failures"] += 1
                    examples.append(f"#{i}: dispatch {type(err).__name__}: {err}"[:500])
    return {
        "mutations": mutations,
        "seed": seed,
        "accepted": counts["accepted"],
        "refused": counts["refused"],
        "unverifiable": counts["unverifiable"],
        "problems": counts["problems"],
        "tracebacks": counts["tracebacks"],
        "dispatched": counts["dispatched"],
        "dispatch_failures": counts["dispatch_failures"],
        "refused_by_section": dict(reasons.most_common()),
        "seconds": round(time.perf_counter() - started, 1),
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--dispatch-every", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(bench(args.mutations, args.seed, args.dispatch_every)))


if __name__ == "__main__":
    main()
