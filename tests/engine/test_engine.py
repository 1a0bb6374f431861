"""The search loop: dedupe, budgets, failures as data, resume, pruning."""

import json

import pytest
from support import FakeExecutor, fenced, good_net

from nasloop.candidate import FailureKind, Purpose, State
from nasloop.config import build_config
from nasloop.engine import Pruner, Search, SearchAborted
from nasloop.llm.base import LLMUnreachable
from nasloop.llm.scripted import ScriptedBackend
from nasloop.store import CandidateRecord, RunDir, RunStore


def one_shot_config(**extra):
    data = {
        "strategy": "one-shot",
        "seed_model": "none",  # these tests count the candidates the LLM wrote
        "dataset": {"name": "digits"},
        "budget": {"iterations": 3},
        "llm": {"backend": "scripted", "model": "scripted"},
    }
    data.update(extra)
    return build_config(data)


def start(tmp_path, answers, config=None, executor=None):
    return Search.start(
        config or one_shot_config(),
        tmp_path / "run",
        backend=ScriptedBackend(answers=answers),
        executor=executor or FakeExecutor(),
        progress=False,
    )


RENAMED = good_net(8).replace("features", "body").replace("channels", "c_in") + "\n# a comment\n"


def test_renamed_copy_is_a_duplicate_and_not_evaluated(tmp_path):
    executor = FakeExecutor()
    engine = start(tmp_path, [fenced(good_net(8)), fenced(RENAMED), fenced(good_net(16))], executor=executor)
    engine.run()
    first, second, third = engine.history
    assert second.state is State.DUPLICATE and second.duplicate_of == first.id
    assert second.metrics == first.metrics
    assert len(executor.jobs) == 2 and third.state is State.COMPLETE


def test_answer_without_code_is_an_extraction_failure(tmp_path):
    engine = start(tmp_path, ["I cannot help with that.", fenced(good_net(8)), fenced(good_net(9))])
    summary = engine.run()
    assert engine.history[0].state is State.FAILED
    assert engine.history[0].failure.kind is FailureKind.EXTRACTION
    assert summary.iterations == 3 and summary.valid == 2


def test_every_llm_call_and_candidate_file_is_stored(tmp_path):
    engine = start(tmp_path, [fenced(good_net(w)) for w in (8, 9, 10)])
    engine.run()
    layout = RunDir(tmp_path / "run")
    with RunStore(layout.store_path, readonly=True) as store:
        calls = store.llm_calls()
        candidates = store.candidates()
    assert len(calls) == 3 and all(call.role == "generator" for call in calls)
    assert [c.llm_call_ids for c in candidates] == [(1,), (2,), (3,)]
    assert layout.candidate_file(2).read_text() == candidates[1].code
    assert "strategy: one-shot" in layout.config_path.read_text()
    # seeds come from the run seed plus a per-call counter
    seeds = [call.request["seed"] for call in calls]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]


def test_token_budget_stops_the_run(tmp_path):
    config = one_shot_config(budget={"iterations": 50, "llm_tokens": 1000})
    engine = start(tmp_path, lambda messages: fenced(good_net(len(engine.history) + 8)), config=config)
    summary = engine.run()
    assert "token budget" in summary.stop_reason
    assert 1 <= summary.iterations < 50


def test_target_score_stops_the_run(tmp_path):
    config = one_shot_config(budget={"iterations": 50, "target_score": 0.0})
    engine = start(tmp_path, lambda messages: fenced(good_net(8 + len(engine.history))), config=config)
    summary = engine.run()
    assert summary.iterations == 1 and "target" in summary.stop_reason


def test_unreachable_llm_aborts_with_resume_hint(tmp_path):
    engine = start(tmp_path, [fenced(good_net(8)), LLMUnreachable("no server at http://127.0.0.1:9")])
    with pytest.raises(SearchAborted, match="nasloop resume"):
        engine.run()
    assert len(engine.history) == 1


def test_resume_continues_without_reusing_ids_or_reevaluating(tmp_path):
    engine = start(tmp_path, [fenced(good_net(8)), LLMUnreachable("down")])
    with pytest.raises(SearchAborted):
        engine.run()
    executor = FakeExecutor()
    resumed = Search.resume(
        tmp_path / "run",
        backend=ScriptedBackend(answers=[fenced(good_net(w)) for w in (9, 10)]),
        executor=executor,
        progress=False,
    )
    summary = resumed.run()
    assert [c.id for c in resumed.history] == [1, 2, 3]
    assert len(executor.jobs) == 2 and summary.iterations == 3


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no run"):
        Search.resume(tmp_path / "nothing")


def test_start_refuses_an_existing_run(tmp_path):
    start(tmp_path, [fenced(good_net(8))] * 3).run()
    with pytest.raises(FileExistsError, match="nasloop resume"):
        start(tmp_path, [])


def test_pruner_stops_a_clearly_worse_curve():
    config = build_config({"pruning": {"min_completed": 2, "top_k": 2, "min_fraction": 0.3, "margin": 0.2}})
    pruner = Pruner(config)
    good_curve = [(step, 2.0 - step / 100) for step in range(0, 101, 10)]
    history = [
        CandidateRecord(id=i, iteration=i, state=State.COMPLETE, metrics={"val_acc": 0.8 + i / 100}, curve=good_curve)
        for i in range(2)
    ]
    pruner.update(history)
    stop = pruner.callback()
    assert stop is not None
    assert not any(stop(step, 2.5) for step in (0, 10, 20))  # too early to judge
    bad = pruner.callback()
    assert any(bad(step, 3.0) for step in range(0, 101, 10))
    fine = pruner.callback()
    assert not any(fine(step, 2.0 - step / 100) for step in range(0, 101, 10))


def test_a_short_training_is_never_pruned():
    pruner = Pruner(build_config({"pruning": {"min_completed": 2, "min_steps": 50}}))
    short = [(step, 2.0 - step / 100) for step in range(0, 31, 5)]  # 30 steps: a small subset, one epoch
    pruner.update([CandidateRecord(id=i, iteration=i, state=State.COMPLETE, metrics={"val_acc": 0.8}, curve=short)
                   for i in range(3)])  # fmt: skip
    assert pruner.callback() is None


def test_pruning_is_off_in_the_paper_protocol():
    pruner = Pruner(build_config({"protocol": "paper"}))
    curve = [(0, 1.0), (100, 0.5)]
    pruner.update(
        [
            CandidateRecord(id=i, iteration=i, state=State.COMPLETE, metrics={"test_acc": 0.5}, curve=curve)
            for i in range(5)
        ]
    )
    assert pruner.callback() is None


def test_show_json_lists_best_first(tmp_path, capsys):
    from nasloop.cli import main

    start(tmp_path, [fenced(good_net(w)) for w in (8, 9, 10)]).run()
    assert main(["show", str(tmp_path / "run"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    scores = [row["metrics"]["val_acc"] for row in shown["candidates"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3


def test_space_is_told_the_runs_shape_classes_and_budget(tmp_path):
    config = one_shot_config(space="macro", limits={"max_params": 50_000}, space_options={"max_layers": 12})
    engine = Search.start(
        config, tmp_path / "run", backend=ScriptedBackend(answers=[]), executor=FakeExecutor(), progress=False
    )
    assert engine.space.in_shape == (1, 8, 8) and engine.space.num_classes == 10
    assert engine.space.max_params == 50_000 and engine.space.max_layers == 12


def test_unknown_space_option_is_named(tmp_path):
    config = one_shot_config(space="nb201", space_options={"widht": 3})
    with pytest.raises(ValueError, match="no option widht"):
        Search.start(
            config, tmp_path / "run", backend=ScriptedBackend(answers=[]), executor=FakeExecutor(), progress=False
        )


def test_finalists_are_evaluated_once_with_their_own_stages(tmp_path):
    from nasloop.candidate import Proposal
    from nasloop.strategies.feedback_memory import OneShot

    class WithFinal(OneShot):
        def finalize(self, ctx):
            best = max((c for c in ctx.history if c.state is State.COMPLETE), key=lambda c: c.metrics["val_acc"])
            return [Proposal(code=best.code, stages=("build", "train"), purpose=Purpose.FINAL, parent=best.id)]

    executor = FakeExecutor()
    engine = start(
        tmp_path,
        [fenced(good_net(w)) for w in (8, 9)],
        config=one_shot_config(budget={"iterations": 2}),
        executor=executor,
    )
    engine.strategy = WithFinal(engine.strategy.options, engine.task)
    summary = engine.run()
    assert summary.iterations == 2 and len(engine.history) == 3
    final = engine.history[-1]
    assert (
        final.parent in (1, 2) and final.purpose is Purpose.FINAL and final.state is State.COMPLETE
    )  # not a duplicate
    assert executor.jobs[-1].stages == ("build", "train")  # the proposal's stages, not the run's
    # a resumed run does not finalize twice
    resumed = Search.resume(
        tmp_path / "run", backend=ScriptedBackend(answers=[]), executor=FakeExecutor(), progress=False
    )
    resumed.strategy = WithFinal(resumed.strategy.options, resumed.task)
    resumed.run()
    assert len(resumed.history) == 3


def test_a_wall_clock_budget_cuts_a_slow_llm_call_and_stops_on_time(tmp_path):
    # Each call takes 3.5 s: the first ends at 3.5 s, the second gets the 2.5 s left and is cut at the budget.
    config = one_shot_config(budget={"iterations": 50, "wall_clock_s": 6})
    backend = ScriptedBackend(answers=[fenced(good_net(w)) for w in range(8, 20)], delay_s=3.5)
    engine = Search.start(config, tmp_path / "run", backend=backend, executor=FakeExecutor(), progress=False)
    summary = engine.run()
    assert summary.stop_reason == "wall-clock budget reached (6 s)"
    assert summary.iterations == 1  # the cut call produced no candidate
    calls = engine.store.llm_calls()
    assert len(calls) == 2 and "wall-clock budget ended" in (calls[1].error or "")
    assert engine.elapsed_s() < 6 * 1.05


def test_a_call_that_cannot_start_in_time_is_not_started(tmp_path):
    # 2.5 s calls against 6 s: at 5 s only 1 s is left, less than any call needs.
    config = one_shot_config(budget={"iterations": 50, "wall_clock_s": 6})
    backend = ScriptedBackend(answers=[fenced(good_net(w)) for w in range(8, 20)], delay_s=2.5)
    engine = Search.start(config, tmp_path / "run", backend=backend, executor=FakeExecutor(), progress=False)
    summary = engine.run()
    assert summary.stop_reason == "wall-clock budget reached (6 s)"
    assert summary.iterations == 2 and len(backend.calls) == 2


def test_a_token_budget_is_exceeded_by_at_most_one_answer(tmp_path):
    max_tokens = 200
    config = one_shot_config(budget={"iterations": 50, "llm_tokens": 1500}, strategy_options={"max_tokens": max_tokens})
    engine = start(tmp_path, [fenced(good_net(w)) for w in range(8, 60)], config=config)
    summary = engine.run()
    totals = engine.store.llm_totals()
    assert summary.stop_reason == "LLM token budget reached (1500)"
    assert totals["calls"] >= 2 and totals["prompt_tokens"] + totals["completion_tokens"] <= 1500 + max_tokens


def test_ask_and_tell_drive_a_search_with_the_callers_own_evaluation(tmp_path):
    from nasloop.candidate import EvalResult

    config = one_shot_config(strategy="random", space="nb201", stages=["static", "build", "train"],
                             budget={"iterations": 4})  # fmt: skip
    search = Search.start(config, tmp_path / "run", progress=False)
    evaluated = []
    while (trial := search.ask()) is not None:
        assert trial.job is not None and trial.job.code == trial.code and trial.id not in evaluated
        evaluated.append(trial.id)
        search.tell(trial, EvalResult(State.COMPLETE, metrics={"val_acc": 0.5 + len(evaluated) / 100}))
    assert search.finished and len(evaluated) == 4
    assert [record.id for record in search.history] == evaluated
    assert search.best().id == evaluated[-1]
    search.close()
    again = Search.resume(tmp_path / "run", progress=False)  # the lock went with close()
    assert again.ask() is None and again.finished
    again.close()


def test_a_second_writer_of_a_run_is_refused(tmp_path):
    from nasloop.store import RunInUse

    first = start(tmp_path, [fenced(good_net(8))])
    with pytest.raises(RunInUse, match="another process"):
        Search.resume(tmp_path / "run", progress=False)
    first.close()
    Search.resume(tmp_path / "run", progress=False).close()
