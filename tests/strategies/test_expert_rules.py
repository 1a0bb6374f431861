"""The expert-rules loop (LeMo-NADe) with a scripted LLM and an in-process executor double."""

import hashlib
import itertools
from concurrent.futures import Future

import pytest
from pydantic import ValidationError
from support import SHAPE_BROKEN_NET, FakeExecutor, fenced, good_net

from nasloop.candidate import EvalResult, Purpose, State
from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.llm.scripted import ScriptedBackend
from nasloop.objectives.effectiveness import EffectivenessConfig
from nasloop.store import RunStore
from nasloop.strategies.expert_rules import (
    ExpertRules,
    ExpertRulesOptions,
    rank_by_effectiveness,
    rule_metrics,
)


class MeasuringExecutor(FakeExecutor):
    """Like FakeExecutor, plus train_acc and a throughput that falls as the net gets wider ("width N" in code).

    The accuracy grows with the width, so accuracy and speed pull in opposite directions.
    """

    def submit(self, job, on_progress=None):
        self.jobs.append(job)
        future: Future[EvalResult] = Future()
        if "12345" in job.code:
            return super().submit(job)
        width = int(job.code.split("nn.Conv2d(channels, ")[1].split(",")[0])
        jitter = hashlib.sha256(job.code.encode()).digest()[0] / 10_000
        metrics = {
            "val_acc": min(0.99, 0.5 + width / 100 + jitter),
            "train_acc": min(0.99, 0.52 + width / 100),
            "test_acc": 0.5 + width / 100,
            "params": 100.0 * width,
            "throughput_ips": 10_000.0 / width,
            "latency_ms": width / 10,
        }
        future.set_result(EvalResult(State.COMPLETE, metrics=metrics, stage="train"))
        return future


class Model:
    """Answers the listed codes in order, then ever-wider nets; keeps every user prompt."""

    def __init__(self, codes=()):
        self.codes = list(codes)
        self.widths = itertools.count(8)
        self.prompts: list[str] = []

    def __call__(self, messages):
        self.prompts.append(messages[-1]["content"])
        return fenced(self.codes.pop(0) if self.codes else good_net(next(self.widths)))


def run(tmp_path, model, iterations=3, seed_model="none", **options):
    config = build_config(
        {
            "strategy": "expert-rules", "strategy_options": options, "dataset": {"name": "digits"},
            "seed_model": seed_model,
            "budget": {"iterations": iterations}, "llm": {"backend": "scripted", "model": "scripted"},
        }
    )  # fmt: skip
    engine = Search.start(config, tmp_path / "run", backend=ScriptedBackend(answers=model),
                          executor=MeasuringExecutor(), progress=False)  # fmt: skip
    return engine, engine.run()


def test_first_prompt_is_plain_then_instructions_follow_the_metrics(tmp_path):
    model = Model()
    engine, summary = run(tmp_path, model, iterations=3, targets={"val_acc": 0.95})
    assert summary.iterations == 3
    first, second = model.prompts[0], model.prompts[1]
    assert "Instructions from the expert system" not in first and "Best model so far" not in first
    assert "val_acc at least 0.95" in first  # the user's targets are part of the task from the start
    # candidate 1 (width 8) has val_acc ~0.58 < 0.95: the accuracy rule fires and its instruction is sent
    assert "Model to improve (candidate 1" in second and "Validation accuracy is below the target" in second
    notes = engine.history[1].notes
    assert notes["feedback_on"] == 1
    assert [item["rule"] for item in notes["rules_fired"]] == ["accuracy-below-target", "underfitting"]
    assert "val_acc (0.58" in notes["rules_fired"][0]["reason"]
    assert notes["instructions"][0].startswith("Validation accuracy is below the target")
    assert "conflicts" not in notes


def test_conflict_is_resolved_by_priorities_and_explained(tmp_path):
    model = Model()
    targets = {"val_acc": 0.95, "fps": 5000.0}
    engine, _ = run(tmp_path, model, iterations=2, targets=targets, priorities=["fps", "val_acc"])
    notes = engine.history[1].notes
    fired = {item["rule"] for item in notes["rules_fired"]}
    assert {"accuracy-below-target", "fps-below-target"} <= fired
    assert notes["conflicts"]["dropped"][0] == {
        "rule": "accuracy-below-target", "winner": "fps-below-target", "reason": "fps outranks val_acc"
    }  # fmt: skip
    assert "Validation accuracy is below" not in "".join(notes["instructions"])
    assert "Conflict on capacity: fps (priority 1) ranks first" in model.prompts[1]
    # with the opposite priorities accuracy wins
    engine, _ = run(tmp_path / "other", Model(), iterations=2, targets=targets, priorities=["val_acc", "fps"])
    assert engine.history[1].notes["conflicts"]["dropped"][0]["winner"] == "accuracy-below-target"


def test_cm_is_stored_with_each_candidate_and_the_best_is_kept_by_cm(tmp_path):
    # FPS-weighted CM: narrow nets are fast; with a large FPS weight the narrowest net is the best by CM
    # even though wider nets are more accurate.
    effectiveness = {"accuracy_weight": 1.0, "fps_weight": 1.0, "reference_fps": 100.0}
    model = Model([good_net(8), good_net(40), good_net(20)])
    engine, summary = run(tmp_path, model, iterations=3, effectiveness=effectiveness)
    engine.close()
    stored = RunStore(tmp_path / "run" / "run.sqlite", readonly=True).candidates()
    cms = {record.id: record.notes["cm"] for record in stored}
    config = EffectivenessConfig.model_validate(effectiveness)
    expected_first = stored[0].metrics["train_acc"] + stored[0].metrics["val_acc"] + 10_000 / 8 / 100
    assert cms[1] == pytest.approx(expected_first)
    assert engine.strategy.state_dict()["best"]["id"] == 1 == max(cms, key=cms.get)
    assert summary.best.id == 1  # the summary reports the strategy's own ranking, by CM
    most_accurate = max(stored, key=lambda record: record.metrics["val_acc"])
    assert most_accurate.id != 1  # which is not the ranking by val_acc
    assert [record.id for record, _ in rank_by_effectiveness(stored, config)] == [1, 3, 2]
    # the generator is shown the best by CM
    assert "Model to improve (candidate 1" in model.prompts[2]


def test_failure_rules_fire_on_the_latest_failure_and_without_cm_there_is_no_best(tmp_path):
    model = Model([SHAPE_BROKEN_NET, good_net(8)])
    # the default CM needs train_acc and val_acc: a failed candidate has neither
    engine, _ = run(tmp_path, model, iterations=2)
    notes = engine.history[1].notes
    assert [item["rule"] for item in notes["rules_fired"]] == ["flatten-size-mismatch", "shape-error"]
    assert "failed with a shape error: mat1 and mat2" in model.prompts[1]
    assert "Best model so far" not in model.prompts[1] and "starting from the best model" not in model.prompts[1]
    # without a valid model to start from, the failed one is repaired (not an iteration)
    assert engine.history[1].purpose is Purpose.REPAIR and "## Model to repair (candidate 1)" in model.prompts[1]
    assert model.prompts[1].endswith(
        "Write the complete changed module in one ```python block: code only, no explanations."
    )
    assert engine.strategy.best is not None and engine.strategy.best["id"] != 1  # the failed one has no CM


def test_code_repeating_a_failed_candidate_is_sent_back_once(tmp_path):
    model = Model([SHAPE_BROKEN_NET, SHAPE_BROKEN_NET, good_net(8)])
    engine, summary = run(tmp_path, model, iterations=2)
    second = engine.history[1]  # the repair of candidate 1, which repeated it and was asked again
    assert second.notes["repeat_of"] == 1 and second.state is State.COMPLETE and len(second.llm_call_ids) == 2
    assert second.purpose is Purpose.REPAIR and second.parent == 1
    assert "same model as candidate 1, which already failed with:\nshape: " in model.prompts[2]
    assert summary.iterations == 2 and len(engine.history) == 3
    assert engine.strategy.state_dict()["evaluated_codes"]  # kept for resume
    # switched off, the repeat is recorded as a duplicate of the failed candidate
    engine, _ = run(tmp_path / "off", Model([SHAPE_BROKEN_NET, SHAPE_BROKEN_NET]), iterations=2, retry_repeats=False)
    assert engine.history[1].state is State.DUPLICATE and engine.history[1].duplicate_of == 1


def test_cm_that_cannot_be_computed_is_noted_with_the_reason(tmp_path):
    effectiveness = {"energy_weight": 1.0, "reference_train_energy_j": 1.0, "reference_val_energy_j": 1.0}
    engine, _ = run(tmp_path, Model(), iterations=2, effectiveness=effectiveness)
    assert engine.history[0].notes["cm_missing"] == "train_energy_j is missing"
    assert engine.strategy.best is None
    assert "cm" not in engine.history[0].notes


def test_feedback_on_best_reads_the_best_candidates_metrics(tmp_path):
    model = Model([good_net(40), good_net(8), good_net(9)])
    engine, _ = run(tmp_path, model, iterations=3, targets={"val_acc": 0.85}, feedback_on="best")
    # the best (width 40, val_acc ~0.9) meets the target; the latest (width 8) would not
    notes = engine.history[2].notes
    assert notes["feedback_on"] == 1
    assert "accuracy-below-target" not in {item["rule"] for item in notes["rules_fired"]}
    engine, _ = run(tmp_path / "latest", Model([good_net(40), good_net(8), good_net(9)]), iterations=3,
                    targets={"val_acc": 0.85})  # fmt: skip
    assert "accuracy-below-target" in {item["rule"] for item in engine.history[2].notes["rules_fired"]}


def test_resume_restores_the_best_and_the_latest(tmp_path):
    engine, _ = run(tmp_path, Model(), iterations=2, targets={"val_acc": 0.95})
    state = engine.strategy.state_dict()
    engine.close()
    resumed = Search.resume(tmp_path / "run", backend=ScriptedBackend(answers=Model()),
                            executor=MeasuringExecutor(), progress=False)  # fmt: skip
    assert resumed.strategy.state_dict() == state
    assert state["latest_id"] == 2 and [entry["id"] for entry in state["scored"]] == [1, 2]


def test_rule_metrics_derive_fps_size_and_cm():
    config = EffectivenessConfig()
    assert rule_metrics({"latency_ms": 4.0, "params": 1e6}, config, 1.5) == {
        "latency_ms": 4.0, "params": 1e6, "fps": 250.0, "size_mb": 4.0, "cm": 1.5
    }  # fmt: skip
    assert rule_metrics({"throughput_ips": 900.0, "latency_ms": 4.0}, config, None)["fps"] == 900.0
    assert "fps" not in rule_metrics({"val_acc": 0.5}, config, None)


def test_options_reject_bad_rule_files_and_repeated_priorities(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - name: x\n    condition: val_acc <\n    instruction: y\n    serves: val_acc\n")
    with pytest.raises(ValidationError, match="rule 'x'"):
        ExpertRulesOptions.model_validate({"rules": str(bad)})
    with pytest.raises(ValidationError, match="more than once: fps"):
        ExpertRulesOptions.model_validate({"priorities": ["fps", "val_acc", "fps"]})
    with pytest.raises(ValidationError, match="reference_fps"):
        ExpertRulesOptions.model_validate({"effectiveness": {"fps_weight": 1.0, "normalisation": "reference"}})
    with pytest.raises(ValidationError, match="extra"):
        ExpertRulesOptions.model_validate({"target": {"val_acc": 0.9}})


def test_a_user_rule_file_replaces_the_default_rules(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: too-big\n    condition: params > target.params\n"
        "    instruction: Halve every layer.\n    direction: shrink\n    serves: params\n"
    )
    model = Model()
    engine, _ = run(tmp_path, model, iterations=2, rules=str(rules), targets={"params": 100, "val_acc": 0.99})
    assert isinstance(engine.strategy, ExpertRules) and len(engine.strategy.rules) == 1
    assert engine.history[1].notes["instructions"] == ["Halve every layer."]
    assert "- Halve every layer." in model.prompts[1]
