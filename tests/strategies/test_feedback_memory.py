"""The feedback-memory loop with a scripted LLM and an in-process executor double."""

import itertools
import json
import os

import pytest
from support import SHAPE_BROKEN_NET, FakeExecutor, fenced, good_net

from nasloop.candidate import Purpose, State
from nasloop.config import build_config
from nasloop.engine import Search, SeedFailed
from nasloop.llm.scripted import ScriptedBackend
from nasloop.spaces.seed import BUILTIN_SEED
from nasloop.strategies.feedback_memory import filter_suggestion

SEED_LINE = "self.conv1 = nn.Conv2d(channels, 32, kernel_size=3, padding=1)"  # a line of the built-in seed


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
        answer = self.codes.pop(0) if self.codes else good_net(next(self.widths))
        return answer if "<<<<<<< SEARCH" in answer else fenced(answer)

    def generator_prompts(self) -> list[str]:
        return [text for role, text in self.prompts if role == "generator"]

    def improver_prompts(self) -> list[str]:
        return [text for role, text in self.prompts if role == "improver"]


def run(tmp_path, model, iterations=4, seed_model=None, **options):
    data = {
        "strategy": "feedback-memory",
        "strategy_options": options,
        "dataset": {"name": "digits"},
        "budget": {"iterations": iterations},
        "llm": {"backend": "scripted", "model": "scripted"},
    }
    if seed_model is not None:
        data["seed_model"] = seed_model
    executor = FakeExecutor()
    engine = Search.start(
        build_config(data), tmp_path / "run", backend=ScriptedBackend(answers=model), executor=executor, progress=False
    )
    return engine, engine.run(), executor


# -- the seed ------------------------------------------------------------------------------------------


def test_the_seed_is_evaluated_first_and_shown_in_the_first_prompt(tmp_path):
    model = Model()
    engine, summary, executor = run(tmp_path, model, iterations=2)
    seed = engine.history[0]
    assert seed.purpose is Purpose.SEED and seed.code == BUILTIN_SEED and seed.llm_call_ids == ()
    assert executor.jobs[0].code == BUILTIN_SEED  # evaluated with the run's own job settings, before any call
    assert summary.iterations == 2 and len(engine.history) == 3  # the seed is no iteration
    # the very first call already shows the seed and its score, and it is the improver's (no cold start)
    first_role, first_prompt = model.prompts[0]
    score = f"{seed.metrics['val_acc']:.4f}"
    assert first_role == "improver" and SEED_LINE in first_prompt
    assert f"the seed network: val_acc = {score}" in first_prompt
    assert SEED_LINE in model.generator_prompts()[0]
    assert engine.history[1].parent == seed.id and engine.history[1].purpose is Purpose.SEARCH


def test_the_improver_and_generator_prompts_share_their_start(tmp_path):
    model = Model()
    run(tmp_path, model, iterations=1)
    (_, improver), (_, generator) = model.prompts
    shared = os.path.commonprefix([improver, generator])  # noqa: RUF071 - strings, not paths
    assert shared.startswith("## Task") and BUILTIN_SEED.strip() + "\n```" in shared  # the whole model too


def test_a_user_seed_file_is_the_start(tmp_path):
    seed_file = tmp_path / "mine.py"
    seed_file.write_text(good_net(24))
    model = Model()
    engine, _, _ = run(tmp_path, model, iterations=1, seed_model=str(seed_file))
    assert engine.history[0].code == good_net(24) and engine.history[0].notes["seed_model"] == str(seed_file)
    assert "nn.Conv2d(channels, 24, 3, padding=1)" in model.prompts[0][1]


def test_a_seed_that_fails_stops_the_run_with_an_error_naming_the_file(tmp_path):
    seed_file = tmp_path / "broken.py"
    seed_file.write_text(SHAPE_BROKEN_NET)
    with pytest.raises(SeedFailed, match=r"broken\.py.*shape.*mat1"):
        run(tmp_path, Model(), iterations=1, seed_model=str(seed_file))


def test_a_seed_file_that_is_not_a_candidate_fails_before_the_run(tmp_path):
    from nasloop.config import ConfigError

    seed_file = tmp_path / "script.py"
    seed_file.write_text("import os\nos.remove('x')\n")
    with pytest.raises(ConfigError, match=r"script\.py"):
        run(tmp_path, Model(), iterations=1, seed_model=str(seed_file))
    with pytest.raises(ConfigError, match="no such file"):
        run(tmp_path / "again", Model(), iterations=1, seed_model=str(tmp_path / "missing.py"))


def test_paper_style_and_seed_none_keep_the_cold_start(tmp_path):
    for name, options in (("paper", {"prompt_style": "paper"}), ("none", {})):
        model = Model()
        engine, _, _ = run(
            tmp_path / name, model, iterations=2, seed_model="none" if name == "none" else None, **options
        )
        assert not any(record.purpose is Purpose.SEED for record in engine.history)
        assert model.prompts[0][0] == "generator" and SEED_LINE not in model.prompts[0][1]


# -- never build on a broken base ----------------------------------------------------------------------


def test_a_failed_repair_sends_the_next_proposal_back_to_the_best_model(tmp_path):
    broken_again = SHAPE_BROKEN_NET.replace("num_classes)", "num_classes, bias=False)")
    model = Model([SHAPE_BROKEN_NET, broken_again])
    engine, summary, _ = run(tmp_path, model, iterations=2, retry_repeats=False)
    seed, failed, repair, after = engine.history[:4]
    assert failed.state is State.FAILED and failed.purpose is Purpose.SEARCH and failed.parent == seed.id
    assert repair.purpose is Purpose.REPAIR and repair.parent == failed.id and repair.state is State.FAILED
    repair_prompt = model.generator_prompts()[1]
    assert "Fix only this error" in repair_prompt and "mat1 and mat2" in repair_prompt and "12345" in repair_prompt
    # the repair failed too: the next iteration edits the seed again (its improver and generator see it)
    improver, generator = model.improver_prompts()[1], model.generator_prompts()[2]
    for prompt in (improver, generator):
        assert SEED_LINE in prompt and "12345" not in prompt
    assert "error (shape)" in improver and "after a repair: error (shape)" in improver  # but the failure is told
    assert after.parent == seed.id and after.state is State.COMPLETE
    assert summary.iterations == 2 and summary.best.id in (seed.id, after.id)


def test_failures_in_a_row_never_lose_the_best_model(tmp_path):
    model = Model([SHAPE_BROKEN_NET.replace("12345", f"12345 + {n}") for n in range(8)])
    engine, summary, _ = run(tmp_path, model, iterations=4, retry_repeats=False)
    search = [record for record in engine.history if record.purpose is Purpose.SEARCH]
    assert all(record.state is State.FAILED for record in search) and len(search) == 4
    assert all(record.parent == 1 for record in search)  # every new proposal edited the seed
    assert summary.best.id == 1
    for prompt in model.improver_prompts():
        assert SEED_LINE in prompt


def test_parent_latest_edits_the_latest_valid_model(tmp_path):
    model = Model()
    engine, _, _ = run(tmp_path, model, iterations=3, parent="latest")
    assert [record.parent for record in engine.history[1:]] == [1, 2, 3]


def test_the_memory_keeps_failures_and_the_window(tmp_path):
    codes = [good_net(8), SHAPE_BROKEN_NET, good_net(9), good_net(10), good_net(11), good_net(12), good_net(13)]
    model = Model(codes)
    engine, _, _ = run(tmp_path, model, iterations=7, history_size=2, repair=False, seed_model="none")
    assert len(engine.strategy.memory) == 2  # the window holds the K latest
    improver_prompts = model.improver_prompts()
    # the failure of candidate 2 was reported to the improver and stayed in the history for the next prompt
    assert "error (shape)" in improver_prompts[1] and "Changes tried so far" in improver_prompts[1]
    assert "error (shape)" in improver_prompts[2]


def test_cold_start_alternates_improver_and_generator(tmp_path):
    model = Model()
    engine, summary, executor = run(tmp_path, model, iterations=3, seed_model="none")
    assert [role for role, _ in model.prompts] == ["generator", "improver", "generator", "improver", "generator"]
    assert summary.iterations == 3 and summary.valid == 3 and len(executor.jobs) == 3
    assert "Add a second convolution block" in model.generator_prompts()[1]
    assert summary.best.metrics["val_acc"] == max(c.metrics["val_acc"] for c in engine.history)


def test_a_repair_that_repeats_the_failed_code_is_told_so(tmp_path):
    model = Model([SHAPE_BROKEN_NET, SHAPE_BROKEN_NET, good_net(8)])
    engine, _, _ = run(tmp_path, model, iterations=2, retry_repeats=False)
    repair = engine.history[2]
    assert repair.purpose is Purpose.REPAIR and repair.state is State.DUPLICATE and repair.duplicate_of == 2
    improver = model.improver_prompts()[1]
    assert "the code was the same as candidate 2, which had already failed" in improver


def test_code_repeating_a_failed_candidate_is_sent_back_once(tmp_path):
    renamed = SHAPE_BROKEN_NET.replace("12345", "12345  ") + "\n# same model, reformatted\n"
    model = Model([SHAPE_BROKEN_NET, renamed, good_net(8), SHAPE_BROKEN_NET, SHAPE_BROKEN_NET])
    engine, summary, _ = run(tmp_path, model, iterations=3, seed_model="none")
    history = engine.history
    # the repair repeated candidate 1: the model was told so, answered again, and the new code was evaluated
    assert history[1].purpose is Purpose.REPAIR and history[1].parent == 1 and history[1].notes["repeat_of"] == 1
    assert history[1].state is State.COMPLETE and len(history[1].llm_call_ids) == 2
    follow_up = model.generator_prompts()[2]
    assert "same model as candidate 1, which already failed with:" in follow_up and "shape" in follow_up
    # a second repeat is recorded as it is (one re-ask per proposal): the engine stores it as a duplicate
    assert history[2].state is State.DUPLICATE and history[2].duplicate_of == 1
    assert history[2].notes["repeat_of"] == 1 and summary.iterations == 3


# -- edit formats --------------------------------------------------------------------------------------


def edit(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_diff_edits_are_applied_to_the_parent(tmp_path):
    first = f"        {SEED_LINE}\n        self.bn1 = nn.BatchNorm2d(32)"
    second = "        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)"
    answer = edit(first, first.replace("32", "48")) + edit(second, second.replace("(32,", "(48,"))
    model = Model([answer])
    engine, _, _ = run(tmp_path, model, iterations=1, edit_format="diff")
    child = engine.history[1]
    assert child.state is State.COMPLETE and child.notes["edit"] == "diff" and child.parent == 1
    expected = BUILTIN_SEED.replace("nn.Conv2d(channels, 32", "nn.Conv2d(channels, 48")
    expected = expected.replace("BatchNorm2d(32)", "BatchNorm2d(48)").replace("Conv2d(32, 64", "Conv2d(48, 64")
    assert child.code == expected
    assert "SEARCH/REPLACE" in model.generator_prompts()[0]


def test_an_edit_that_does_not_apply_is_recorded_and_a_full_module_asked_once(tmp_path):
    model = Model([edit("        self.conv9 = nn.Conv2d(1, 2, 3)", "        pass"), good_net(20)])
    engine, summary, _ = run(tmp_path, model, iterations=1, edit_format="diff")
    seed, failed, retry = engine.history
    assert failed.state is State.FAILED and failed.notes["edit"] == "failed" and failed.purpose is Purpose.SEARCH
    assert "conv9" in failed.failure.message
    assert retry.purpose is Purpose.RETRY and retry.parent == seed.id and retry.state is State.COMPLETE
    assert retry.notes["edit"] == "full" and retry.code.strip() == good_net(20).strip()
    follow_up = model.generator_prompts()[1]
    assert "could not be applied" in follow_up and "complete changed module" in follow_up
    assert summary.iterations == 1


def test_a_full_module_answer_to_a_diff_request_is_taken(tmp_path):
    model = Model([good_net(12)])
    engine, _, _ = run(tmp_path, model, iterations=1, edit_format="diff")
    assert engine.history[1].state is State.COMPLETE and engine.history[1].notes["edit"] == "full"


# -- clean-ups in the feedback -------------------------------------------------------------------------


def test_cleanups_are_noted_and_shown_in_the_next_feedback(tmp_path):
    script = "import torch.optim as optim\n" + good_net(16) + "\nmodel = Net((1, 8, 8), 10)\nprint(model)\n"
    model = Model([script])
    engine, _, _ = run(tmp_path, model, iterations=2)
    child = engine.history[1]
    assert child.state is State.COMPLETE and "optim" not in child.code and "print(" not in child.code
    assert child.notes["cleanups"]
    improver = model.improver_prompts()[1]
    assert "nasloop removed:" in improver


# -- suggestions ---------------------------------------------------------------------------------------


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
    run(tmp_path, model, iterations=4, history_size=0, reference_code=False, prompt_style="paper")
    assert all("Improvement history" not in text for text in model.improver_prompts())
    assert all("Reference code" not in text for text in model.generator_prompts())


def test_paper_style_uses_published_sections_and_short_errors(tmp_path):
    model = Model([good_net(8), SHAPE_BROKEN_NET])
    engine, _, _ = run(tmp_path, model, iterations=3, prompt_style="paper")
    generator = model.generator_prompts()
    improver = model.improver_prompts()
    assert "Output skeleton" in generator[0]
    assert "Evaluator feedback: error: mat1" in improver[1]
    assert all(record.purpose is Purpose.SEARCH for record in engine.history)  # no repair in the published form
    # the published loop shows the failed latest model: it builds on it
    assert "12345" in generator[2]


def test_filter_drops_recipe_suggestions():
    kept, dropped = filter_suggestion("Use Adam with a lower learning rate. Add a residual block. Train 5 epochs.")
    assert kept == "Add a residual block."
    assert len(dropped) == 2


def test_unactionable_suggestion_is_filtered_from_the_prompt(tmp_path):
    model = Model(suggestion="Increase the learning rate to 0.1. Widen the first layer to 64 channels.")
    run(tmp_path, model, iterations=2)
    generator = model.generator_prompts()[1]
    assert "Widen the first layer" in generator and "learning rate" not in generator.split("Change to make")[1]


def test_unknown_option_is_an_error(tmp_path):
    with pytest.raises(Exception, match="history_sise"):
        run(tmp_path, Model(), iterations=1, history_sise=3)


def test_one_shot_calls_only_the_generator_and_edits_the_seed(tmp_path):
    model = Model()
    config = build_config(
        {
            "strategy": "one-shot",
            "dataset": {"name": "digits"},
            "budget": {"iterations": 3},
            "llm": {"backend": "scripted", "model": "scripted"},
        }
    )
    engine = Search.start(
        config, tmp_path / "run", backend=ScriptedBackend(answers=model), executor=FakeExecutor(), progress=False
    )
    summary = engine.run()
    assert summary.iterations == 3 and {role for role, _ in model.prompts} == {"generator"}
    assert engine.history[0].purpose is Purpose.SEED
    assert all(SEED_LINE in text for _, text in model.prompts)  # every sample starts from the seed
    assert len({text for _, text in model.prompts}) == 1  # and from the same prompt
    assert all(record.parent == 1 for record in engine.history[1:])


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


# -- keeping the search moving -------------------------------------------------------------------------


def test_code_repeating_a_completed_candidate_is_sent_back_once_with_its_score(tmp_path):
    model = Model([good_net(8), good_net(8), good_net(9)])
    engine, _, _ = run(tmp_path, model, iterations=2)
    second = engine.history[2]
    assert (
        second.notes["repeat_of"] == 2 and second.state is State.COMPLETE and second.code.strip() == good_net(9).strip()
    )
    follow_up = model.generator_prompts()[2]
    score = f"{engine.history[1].metrics['val_acc']:.4f}"
    assert f"same model as candidate 2, which was evaluated already (val_acc = {score})" in follow_up


def test_the_improver_is_offered_a_few_ideas_drawn_each_iteration(tmp_path):
    from nasloop.strategies.feedback_memory import IDEAS

    model = Model()
    run(tmp_path, model, iterations=3)
    offered = [[idea for idea in IDEAS if f"- {idea}" in prompt] for prompt in model.improver_prompts()]
    assert all(len(ideas) == 3 for ideas in offered) and len({tuple(ideas) for ideas in offered}) > 1
    model = Model()
    run(tmp_path / "none", model, iterations=1, ideas=0)
    assert "Choose one of these changes" not in model.improver_prompts()[0]


def test_a_change_that_was_not_made_is_told_so(tmp_path):
    # the same network written differently trains to the same figures (FakeExecutor scores by code hash,
    # so the stand-in here gives the parent's metrics to a reformatted copy)
    class SameFigures(FakeExecutor):
        def submit(self, job, on_progress=None):
            future = super().submit(job)
            if "# reformatted" in job.code:
                seed_result = super().submit(self.jobs[0])
                self.jobs.pop()
                return seed_result
            return future

    from nasloop.spaces.seed import BUILTIN_SEED as SEED

    model = Model([SEED + "\n# reformatted\nx_unused = 1\n"])
    config = build_config({"strategy": "feedback-memory", "dataset": {"name": "digits"}, "budget": {"iterations": 2},
                           "llm": {"backend": "scripted", "model": "scripted"},
                           "strategy_options": {"tidy_code": False}})  # fmt: skip
    engine = Search.start(config, tmp_path / "run", backend=ScriptedBackend(answers=model), executor=SameFigures(),
                          progress=False)  # fmt: skip
    engine.run()
    assert engine.history[1].metrics == engine.history[0].metrics
    assert "the same network as candidate 1, which it was to change" in model.improver_prompts()[1]


def test_the_summary_counts_iterations_valid_after_their_repair(tmp_path):
    model = Model([SHAPE_BROKEN_NET, good_net(9), good_net(10)])
    engine, summary, _ = run(tmp_path, model, iterations=2)
    assert [record.purpose for record in engine.history] == [
        Purpose.SEED,
        Purpose.SEARCH,
        Purpose.REPAIR,
        Purpose.SEARCH,
    ]
    assert summary.valid == 1 and summary.valid_after_repair == 2


def test_show_draws_each_candidates_purpose_and_parent(tmp_path, capsys):
    from nasloop.cli import main

    model = Model([SHAPE_BROKEN_NET, good_net(9)])
    engine, _, _ = run(tmp_path, model, iterations=2)
    engine.close()
    assert main(["show", str(tmp_path / "run")]) == 0
    table = capsys.readouterr().out
    assert "seed" in table and "search of 1" in table and "repair of 2" in table
    assert main(["show", str(tmp_path / "run"), "--json"]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)["candidates"]}
    assert rows[1]["purpose"] == "seed" and rows[3] == {**rows[3], "purpose": "repair", "parent": 2}
