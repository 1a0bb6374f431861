"""Recorded runs for the report tests, written through the real run store.

`feedback_run`: a single-objective feedback-memory run with every kind of outcome (scores, failures of
several kinds, a repair, a duplicate, a pruned candidate), generator and improver calls, and untrusted
text that tries to inject HTML. `pareto_run`: a two-objective run (val_acc max, latency_ms min) with a
known front and strategy artifacts.
"""

from __future__ import annotations

import random
from pathlib import Path

from support import SHAPE_BROKEN_NET, good_net

from nasloop.candidate import Failure, FailureKind, Purpose, State
from nasloop.config import build_config, dump_config
from nasloop.store import CandidateRecord, RunDir, RunStore

INJECTION = "</pre></script><script>document.title='pwned'</script><img src=x onerror=\"alert(1)\">"


def create_run(root: Path, config: dict) -> tuple[RunDir, RunStore]:
    """A run directory with its resolved config, as `Search.start` leaves it."""
    layout = RunDir(root)
    layout.create()
    text = dump_config(build_config(config))
    layout.config_path.write_text(text)
    store = RunStore(layout.store_path)
    store.set_meta("config", text)
    return layout, store


def add_call(store: RunStore, role: str, iteration: int, prompt: str, answer: str, rng: random.Random) -> int:
    return store.add_llm_call(
        role=role,
        iteration=iteration,
        model="qwen2.5-coder-1.5b",
        messages=[{"role": "system", "content": f"You are the {role}."}, {"role": "user", "content": prompt}],
        request={"temperature": 0.7, "seed": 43 + iteration},
        completion=answer,
        error=None,
        prompt_tokens=rng.randint(600, 900),
        completion_tokens=rng.randint(150, 400),
        latency_s=round(rng.uniform(2.0, 6.0), 2),
        cost_usd=0.0,
    )


# Per iteration of the feedback run: (outcome, score); an outcome is "ok", a failure kind, "pruned",
# "duplicate" or "repair" (a repair of the previous candidate, scored).
FEEDBACK_PLAN = [
    ("ok", 0.52), ("shape", None), ("repair", 0.55), ("ok", 0.58), ("syntax", None), ("ok", 0.61),
    ("duplicate", None), ("ok", 0.57), ("timeout", None), ("ok", 0.66), ("pruned", None), ("ok", 0.70),
    ("shape", None), ("ok", 0.69), ("extraction", None), ("ok", 0.74), ("ok", 0.72), ("ok", 0.71),
]  # fmt: skip
FEEDBACK_BEST = 0.74


def _failure(kind: str, iteration: int) -> Failure:
    messages = {
        "shape": f"mat1 and mat2 shapes cannot be multiplied (128x{1000 + iteration} and 12345x10)",
        "syntax": "invalid syntax at line 7: 'self.conv1 = nn.Conv2d(3, 32, 3 padding=1)'",
        "timeout": "wall-clock limit of 600 s reached; the process group was killed",
        "extraction": "no Python code block in the answer " + INJECTION,
    }
    return Failure(FailureKind(kind), messages[kind], "Traceback (most recent call last):\n  ...\n" + messages[kind])


def write_feedback_run(root: Path) -> RunDir:
    """The single-objective run described in the module docstring; 18 candidates over 17 iterations."""
    layout, store = create_run(
        root,
        {"strategy": "feedback-memory", "dataset": {"name": "digits"}, "budget": {"iterations": 17},
         "llm": {"backend": "scripted", "model": "qwen2.5-coder-1.5b"}},
    )  # fmt: skip
    rng = random.Random(7)
    iteration, previous, best_id, best = 0, None, None, -1.0
    for candidate_id, (kind, score) in enumerate(FEEDBACK_PLAN, start=1):
        repair = kind == "repair"
        improver = add_call(store, "improver", iteration, "Improvement history ...", '{"problem": "too shallow"}', rng)
        code = SHAPE_BROKEN_NET if kind == "shape" else good_net(8 + candidate_id)
        if candidate_id == 4:
            code += f"\n# {INJECTION}\n"
        answer = f"<b>Here</b>\n```python\n{code}```"
        generator = add_call(store, "generator", iteration, "Write the model.", answer, rng)
        parents = tuple(dict.fromkeys(p for p in (previous, best_id) if p is not None))
        record = CandidateRecord(
            id=candidate_id,
            iteration=iteration,
            state=State.COMPLETE,
            code=code,
            parent_ids=parents,
            notes={"problem": "too shallow", "suggestion": f"Add block {candidate_id}"},
            llm_call_ids=(improver, generator),
            timings={"static_s": 0.1, "train_s": round(rng.uniform(20, 40), 2)},
            curve=[(step, 2.0 - step / 100) for step in range(0, 101, 20)],
        )
        if repair:
            record.notes = {}
            record.purpose, record.parent, record.parent_ids = Purpose.REPAIR, candidate_id - 1, (candidate_id - 1,)
        if score is not None:
            record.metrics = {"val_acc": score, "test_acc": score - 0.01, "params": 1000.0 * candidate_id}
            if score > best:
                best, best_id = score, candidate_id
        elif kind == "pruned":
            record.state, record.metrics = State.PRUNED, {"pruned_at_step": 40.0}
        elif kind == "duplicate":
            record.state, record.duplicate_of, record.code = State.DUPLICATE, 4, good_net(12)
            record.metrics, record.timings = {"val_acc": 0.58, "test_acc": 0.57, "params": 4000.0}, {}
        else:
            record.state, record.failure = State.FAILED, _failure(kind, iteration)
        if kind == "extraction":
            record.code = None
        store.add_candidate(record)
        previous = candidate_id
        # As in the engine: a candidate's iteration is the number of non-repair candidates before it.
        iteration += 0 if repair else 1
    store.close()
    return layout


# The Pareto run: (val_acc, latency_ms) per candidate; None marks a failure. Front: 1, 3, 5, 8.
PARETO_POINTS = [
    (0.60, 2.0), (0.62, 4.0), (0.70, 3.0), None, (0.80, 6.0), (0.75, 7.0), (0.78, 9.0), (0.85, 12.0), None, (0.50, 5.0),
]  # fmt: skip
PARETO_FRONT = [1, 3, 5, 8]


def write_pareto_run(root: Path) -> RunDir:
    layout, store = create_run(
        root,
        {"strategy": "niche-pareto", "strategy_options": {"predictor": "measured"}, "space": "nb201",
         "dataset": {"name": "digits"}, "objectives": ["val_acc:max", "latency_ms:min"],
         "llm": {"backend": "scripted", "model": "scripted"}},
    )  # fmt: skip
    rng = random.Random(3)
    for candidate_id, point in enumerate(PARETO_POINTS, start=1):
        iteration = candidate_id - 1
        call = add_call(store, "mutator", iteration, "Mutate the parent.", '{"arch": "..."}', rng)
        record = CandidateRecord(
            id=candidate_id, iteration=iteration, state=State.COMPLETE, code=good_net(4 + candidate_id),
            architecture=f"|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~{candidate_id % 2}|", space="nb201",
            parent_ids=(max(1, candidate_id - 2),) if candidate_id > 2 else (), llm_call_ids=(call,),
        )  # fmt: skip
        if point is None:
            record.state, record.failure = State.FAILED, Failure(FailureKind.BUDGET, "latency 31 ms exceeds 20 ms")
        else:
            record.metrics = {"val_acc": point[0], "latency_ms": point[1], "params": 5e4 * candidate_id}
        store.add_candidate(record)
    store.put_artifact("knowledge_base/generation-001", "positive: conv3x3 early\nnegative: <script>x</script>")
    store.put_artifact("pareto/generation-001", "[1, 3, 5, 8]")
    store.close()
    return layout
