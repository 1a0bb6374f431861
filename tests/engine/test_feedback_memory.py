"""The feedback-memory loop with a scripted LLM and an in-process executor double."""

import itertools
import json

import pytest
from support import SHAPE_BROKEN_NET, FakeExecutor, fenced, good_net

from nasloop.candidate import State
from nasloop.config import build_config
from nasloop.engine import Engine
from nasloop.llm.scripted import ScriptedBackend
from nasloop.strategies.feedback_memory import filter_suggestion


def is_improver(messages) -> bool:
    return "JSON" in messages[0]["content"] or "JSON" in messages[-1]["content"][-200:]


class Model:
    """Generator answers: the listed codes in order (then ever-wider nets); improver answers: JSON."""

    def __init__(self, codes=(), suggestion="Add a second convolution block with 32 channels."):
        self.codes = list(codes)
        self.widths = itertools.count(8)
        self.suggestion = suggestion
        self.prompts: list[tuple[str, str]] = []

    def __call__(self, messages):
        role = "improver" if is_improver(messages) else "generator"
        self.prompts.append((role, messages[-1]["content"]))
        if role == "improver":
            return json.dumps({"problem": "too shallow", "suggestion": self.suggestion})
        return fenced(self.codes.pop(0) if self.codes else good_net(next(self.widths)))


def run(tmp_path, model, iterations=4, **options):
    config = build_config(
        {
            "strategy": "feedback-memory",
            "strategy_options": options,
            "dataset": {"name": "digits"},
            "budget": {"iterations": iterations},
            "llm": {"backend": "scripted", "model": "scripted"},
        }
    )
    executor = FakeExecutor()
    engine = Engine.start(
        config, tmp_path / "run", backend=ScriptedBackend(answers=model), executor=executor, progress=False
    )
    return engine, engine.run(), executor


def test_loop_alternates_improver_and_generator(tmp_path):
    model = Model()
    engine, summary, executor = run(tmp_path, model, iterations=3)
    roles = [role for role, _ in model.prompts]
    assert roles == ["generator", "improver", "generator", "improver", "generator"]
    assert summary.iterations == 3 and summary.valid == 3 and len(executor.jobs) == 3
    # the second generator prompt carries the best code, the latest code and the suggestion
    second_generator = model.prompts[2][1]
    assert "Best model so far" in second_generator and "Add a second convolution block" in second_generator
    assert summary.best.metrics["val_acc"] == max(c.metrics["val_acc"] for c in engine.history)


def test_memory_keeps_failures_and_the_window(tmp_path):
    codes = [good_net(8), SHAPE_BROKEN_NET, good_net(9), good_net(10), good_net(11), good_net(12), good_net(13)]
    model = Model(codes)
    engine, _, _ = run(tmp_path, model, iterations=7, history_size=2, repair=False)
    memory = engine.strategy.memory
    assert len(memory) == 2  # the window holds the K latest
    improver_prompts = [text for role, text in model.prompts if role == "improver"]
    # the failure of candidate 2 was reported to the improver and stayed in the history for later prompts
    assert any("error (shape)" in text and "Improvement history" in text for text in improver_prompts[2:3])
    assert "error (shape)" in improver_prompts[1]


def test_failed_candidate_gets_one_repair_that_is_not_an_iteration(tmp_path):
    model = Model([good_net(8), SHAPE_BROKEN_NET, SHAPE_BROKEN_NET.replace("12345", "12345 ")])
    engine, summary, _ = run(tmp_path, model, iterations=3, retry_repeats=False)
    states = [(c.id, c.state, c.notes.get("repair_of")) for c in engine.history]
    assert states[1][1] is State.FAILED
    assert states[2][2] == 2  # candidate 3 repairs candidate 2
    assert summary.iterations == 3 and len(engine.history) == 4
    repair_prompt = [text for role, text in model.prompts if role == "generator"][2]
    assert "Fix only this error" in repair_prompt and "mat1 and mat2" in repair_prompt
    # a repair that fails too is not repaired again: the next proposal goes through the improver
    assert [role for role, _ in model.prompts][3:5] == ["generator", "improver"]


def test_a_repair_that_repeats_the_failed_code_is_told_so(tmp_path):
    model = Model([SHAPE_BROKEN_NET, SHAPE_BROKEN_NET, good_net(8)])
    engine, _, _ = run(tmp_path, model, iterations=2, retry_repeats=False)
    assert engine.history[1].state is State.DUPLICATE and engine.history[1].duplicate_of == 1
    improver = next(text for role, text in model.prompts if role == "improver")
    assert "the code was the same as candidate 1, which had already failed" in improver and "mat1" in improver


def test_code_repeating_a_failed_candidate_is_sent_back_once(tmp_path):
    renamed = SHAPE_BROKEN_NET.replace("12345", "12345  ") + "\n# same model, reformatted\n"
    model = Model([SHAPE_BROKEN_NET, renamed, good_net(8), SHAPE_BROKEN_NET, SHAPE_BROKEN_NET])
    engine, summary, _ = run(tmp_path, model, iterations=3)
    history = engine.history
    # the repair repeated candidate 1: the model was told so, answered again, and the new code was evaluated
    assert history[1].notes["repair_of"] == 1 and history[1].notes["repeat_of"] == 1
    assert history[1].state is State.COMPLETE and len(history[1].llm_call_ids) == 2
    follow_up = [text for role, text in model.prompts if role == "generator"][2]
    assert "same model as candidate 1, which already failed with:" in follow_up and "shape" in follow_up
    # a second repeat is recorded as it is (one re-ask per proposal): the engine stores it as a duplicate
    assert history[2].state is State.DUPLICATE and history[2].duplicate_of == 1
    assert history[2].notes["repeat_of"] == 1 and summary.iterations == 3


def test_paper_style_does_not_resend_repeats(tmp_path):
    model = Model([SHAPE_BROKEN_NET, SHAPE_BROKEN_NET, good_net(8)])
    engine, _, _ = run(tmp_path, model, iterations=2, prompt_style="paper")
    assert engine.history[1].state is State.DUPLICATE and "repeat_of" not in engine.history[1].notes


def test_no_improver_ablation_makes_no_improver_calls(tmp_path):
    model = Model()
    run(tmp_path, model, iterations=3, improver=False)
    assert {role for role, _ in model.prompts} == {"generator"}


def test_no_history_and_no_reference_ablations(tmp_path):
    model = Model()
    run(tmp_path, model, iterations=4, history_size=0, reference_code=False)
    improver_prompts = [text for role, text in model.prompts if role == "improver"]
    generator_prompts = [text for role, text in model.prompts if role == "generator"]
    assert all("Improvement history" not in text for text in improver_prompts)
    assert all("Best model so far" not in text for text in generator_prompts)


def test_paper_style_uses_published_sections_and_short_errors(tmp_path):
    model = Model([good_net(8), SHAPE_BROKEN_NET])
    engine, _, _ = run(tmp_path, model, iterations=3, prompt_style="paper")
    generator = [text for role, text in model.prompts if role == "generator"]
    improver = [text for role, text in model.prompts if role == "improver"]
    assert "Output skeleton" in generator[0]
    assert "Evaluator feedback: error: mat1" in improver[1]
    assert not any(c.notes.get("repair_of") for c in engine.history)  # no repair in the published form


def test_filter_drops_recipe_suggestions():
    kept, dropped = filter_suggestion("Use Adam with a lower learning rate. Add a residual block. Train 5 epochs.")
    assert kept == "Add a residual block."
    assert len(dropped) == 2


def test_unactionable_suggestion_is_filtered_from_the_prompt(tmp_path):
    model = Model(suggestion="Increase the learning rate to 0.1. Widen the first layer to 64 channels.")
    run(tmp_path, model, iterations=2)
    generator = [text for role, text in model.prompts if role == "generator"][1]
    assert "Widen the first layer" in generator and "learning rate" not in generator.split("Improvement to apply")[1]


def test_unknown_option_is_an_error(tmp_path):
    with pytest.raises(Exception, match="history_sise"):
        run(tmp_path, Model(), iterations=1, history_sise=3)


def test_one_shot_calls_only_the_generator(tmp_path):
    model = Model()
    config = build_config(
        {
            "strategy": "one-shot",
            "dataset": {"name": "digits"},
            "budget": {"iterations": 3},
            "llm": {"backend": "scripted", "model": "scripted"},
        }
    )
    engine = Engine.start(
        config, tmp_path / "run", backend=ScriptedBackend(answers=model), executor=FakeExecutor(), progress=False
    )
    summary = engine.run()
    assert summary.iterations == 3 and {role for role, _ in model.prompts} == {"generator"}
    assert all("Best model so far" not in text for _, text in model.prompts)


def test_improver_soft_fault_costs_only_the_suggestion(tmp_path):
    from nasloop.llm.base import InvalidStructuredResponse

    model = Model()
    calls = {"improver": 0}

    def answer(messages):
        if is_improver(messages):
            calls["improver"] += 1
            if calls["improver"] == 1:
                return InvalidStructuredResponse("the answer did not match the schema")
        return model(messages)

    engine, summary, _ = run(tmp_path, answer, iterations=3)
    assert summary.iterations == 3 and summary.valid == 3
    assert "suggestion" not in engine.history[1].notes and "suggestion" in engine.history[2].notes


def test_filtered_sentences_are_recorded_in_notes(tmp_path):
    model = Model(suggestion="Use a cosine scheduler. Add batch normalisation after each convolution.")
    engine, _, _ = run(tmp_path, model, iterations=2)
    notes = engine.history[1].notes
    assert notes["suggestion"] == "Add batch normalisation after each convolution."
    assert notes["filtered"] == "Use a cosine scheduler."
