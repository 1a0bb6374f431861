"""The numbers behind the report, without a browser: series helpers, failure counts, costs, diffs, fronts."""

import itertools
import math

import pytest
from report_runs import FEEDBACK_BEST, PARETO_FRONT

from nasloop.candidate import Failure, FailureKind, Purpose, State
from nasloop.config import build_config
from nasloop.objectives import parse_objectives
from nasloop.report.data import (
    EVALUATION,
    analyse_run,
    best_by_iteration,
    best_so_far,
    code_diff,
    cost_series,
    failure_counts,
    load_run,
    moving_average,
    pareto_view,
    run_objectives,
    spearman,
    unique_labels,
    validity_series,
)
from nasloop.report.svg import format_number, nice_ticks
from nasloop.store import CandidateRecord, LLMCallRecord


def candidate(id, state=State.COMPLETE, score=None, kind=None, iteration=None, **extra):
    metrics = {"val_acc": score} if score is not None else {}
    failure = Failure(FailureKind(kind), f"{kind} problem in candidate {id}") if kind else None
    return CandidateRecord(
        id=id, iteration=id - 1 if iteration is None else iteration, state=state, metrics=metrics, failure=failure,
        **extra,
    )  # fmt: skip


def call(role, iteration, prompt_tokens, completion_tokens, latency_s):
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "latency_s": latency_s}
    return LLMCallRecord(
        id=0, role=role, iteration=iteration, model="m", messages=[], request={}, completion="", error=None,
        cost_usd=0.0, created=0.0, **usage,
    )  # fmt: skip


def test_moving_average_skips_gaps_instead_of_carrying_values():
    values = [1.0, None, 3.0, None, None, None, 5.0]
    assert moving_average(values, 3) == [1.0, 1.0, 2.0, 3.0, 3.0, None, 5.0]
    assert moving_average(values, 1) == values
    with pytest.raises(ValueError, match="at least 1"):
        moving_average(values, 0)


def test_best_so_far_is_a_running_max_over_real_values():
    assert best_so_far([None, 0.5, None, 0.4, 0.7, 0.6]) == [None, 0.5, 0.5, 0.5, 0.7, 0.7]
    assert best_so_far([]) == []


def test_spearman_matches_known_values_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks of y with ties: [1.5, 1.5, 3, 4]; Pearson of ranks = 0.9486833
    assert spearman([1, 2, 3, 4], [5, 5, 6, 7]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1, 2], [3, 4]) is None  # too few points
    assert spearman([1, 2, 3], [2, 2, 2]) is None  # constant side


def test_spearman_matches_a_reference_implementation():
    xs = [1, 2, 3, 4, 5, 6, 7, 8]
    ys = [0.3, 0.1, 0.4, 0.4, 0.6, 0.5, 0.9, 0.9]
    assert spearman(xs, ys) == pytest.approx(0.9398272507881658)  # scipy.stats.spearmanr(xs, ys)


def test_failure_counts_per_kind_with_first_example_and_no_duplicates():
    candidates = [
        candidate(1, score=0.5),
        candidate(2, State.FAILED, kind="shape"),
        candidate(3, State.FAILED, kind="syntax"),
        candidate(4, State.FAILED, kind="shape"),
        candidate(5, State.DUPLICATE, kind="shape", duplicate_of=4),  # not a new failure
    ]
    counts = failure_counts(candidates)
    assert [(c.kind, c.count, c.example_id) for c in counts] == [("shape", 2, 2), ("syntax", 1, 3)]
    assert counts[0].example == "shape problem in candidate 2"


def test_validity_leaves_duplicates_out():
    candidates = [
        candidate(1, score=0.5),
        candidate(2, State.FAILED, kind="shape"),
        candidate(3, State.DUPLICATE, score=0.5, duplicate_of=1),
        candidate(4, score=0.6),
    ]
    validity = validity_series(candidates, window=2)
    assert validity.ids == [1, 2, 4]
    assert validity.cumulative == pytest.approx([1.0, 0.5, 2 / 3])
    assert validity.rolling == pytest.approx([1.0, 0.5, 0.5])
    assert (validity.valid, validity.evaluated, validity.rate) == (2, 3, pytest.approx(2 / 3))


def test_cost_series_per_role_and_iteration():
    calls = [call("generator", 0, 100, 50, 1.0), call("improver", 1, 80, 20, 0.5), call("generator", 1, 120, 30, 2.0)]
    candidates = [
        candidate(1, score=0.5, timings={"total_s": 10.0}),
        candidate(2, State.FAILED, kind="shape", timings={"static_s": 0.5, "build_s": 1.0}),
        candidate(3, State.DUPLICATE, iteration=1, timings={"total_s": 99.0}),  # not evaluated again
    ]
    costs = cost_series(calls, candidates)
    assert costs.iterations == [0, 1]
    assert costs.tokens == {"generator": [150.0, 150.0], "improver": [0.0, 100.0]}
    assert costs.seconds[EVALUATION] == [10.0, 1.5]
    assert costs.cumulative_seconds()["generator"] == [1.0, 3.0]
    assert costs.total_seconds(EVALUATION) == 11.5


def test_code_diff_shows_changed_lines_only():
    parent = "a = 1\nb = 2\nc = 3\n"
    child = "a = 1\nb = 20\nc = 3\n"
    lines = code_diff(parent, child, "candidate 1", "candidate 2")
    assert lines[:2] == ["--- candidate 1", "+++ candidate 2"]
    assert "-b = 2" in lines and "+b = 20" in lines
    assert not any(line.startswith(("+a", "-a")) for line in lines)
    assert code_diff(parent, parent) == []


def test_best_by_iteration_lets_repairs_share_their_iteration():
    candidates = [
        candidate(1, score=0.5, iteration=0),
        candidate(2, State.FAILED, kind="shape", iteration=1),
        candidate(3, score=0.7, iteration=2, purpose=Purpose.REPAIR, parent=2),
        candidate(4, score=0.6, iteration=2),
        candidate(5, score=0.65, iteration=3),
    ]
    assert best_by_iteration(candidates, "val_acc") == [0.5, 0.5, 0.7, 0.7]


def test_feedback_run_analysis(feedback_run):
    analysis = analyse_run(load_run(feedback_run), window=15)
    scores = analysis.scores
    assert scores.best_score == FEEDBACK_BEST and scores.best_id == 16
    assert len(scores.scored()) == 11 and analysis.states["failed"] == 5
    assert scores.outcomes[:3] == ["scored", "shape", "scored"]
    assert scores.outcomes[6] == "duplicate" and scores.outcomes[10] == "pruned"
    assert scores.scores[1] is None and scores.trend[1] == scores.trend[0]  # a gap, the trend stays on real scores
    assert scores.spearman is not None and scores.spearman > 0.8
    assert analysis.iterations == 17  # 18 candidates, one of them a repair
    assert {role.role for role in analysis.roles} == {"generator", "improver"}
    repair = next(row for row in analysis.lineage if row.candidate_id == 3)
    assert repair.relation == "repair" and repair.parent_ids == (2,)
    assert analysis.pareto is None


def test_pareto_view_front_and_hypervolume(pareto_run):
    analysis = analyse_run(load_run(pareto_run))
    view = analysis.pareto
    assert view is not None
    assert view.front_ids == PARETO_FRONT
    assert [i for i, _ in view.front_points()] == [1, 3, 5, 8]  # ordered by the first objective
    hypervolume = view.hypervolume
    assert hypervolume is not None and len(hypervolume) == 10
    assert all(b >= a for a, b in itertools.pairwise(hypervolume))  # HV never decreases
    assert hypervolume[3] == hypervolume[2]  # candidate 4 failed: HV unchanged
    assert 0 < hypervolume[-1] <= 1


def test_an_accuracy_predicted_by_a_proxy_is_plotted_as_the_proxy():
    objectives = ["val_acc:max", "latency_ms:min"]
    config = build_config({"strategy": "niche-pareto", "space": "nb201", "objectives": objectives,
                           "strategy_options": {"predictor": "naswot"}})  # fmt: skip
    assert [str(o) for o in run_objectives(config)] == ["naswot:max", "latency_ms:min"]
    measured = config.model_copy(update={"strategy_options": {"predictor": "measured"}})
    assert [str(o) for o in run_objectives(measured)] == ["val_acc:max", "latency_ms:min"]
    candidates = [candidate(1), candidate(2)]
    for record, (score, latency) in zip(candidates, [(600.0, 1.0), (650.0, 2.0)], strict=True):
        record.metrics.update(naswot=score, latency_ms=latency)
    view = pareto_view(candidates, run_objectives(config))
    assert view.front_ids == [1, 2] and view.hypervolume is not None


def test_pareto_view_without_spread_has_no_hypervolume():
    objectives = parse_objectives("val_acc:max,latency_ms:min")
    candidates = [candidate(1, score=0.5), candidate(2, score=0.6)]
    for record in candidates:
        record.metrics["latency_ms"] = 3.0
    view = pareto_view(candidates, objectives)
    assert view.hypervolume is None and "latency_ms" in view.note
    assert view.front_ids == [2]


def test_unique_labels_add_parents_only_where_names_clash(tmp_path):
    roots = [tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "c" / "other"]
    assert unique_labels(roots) == ["a/run", "b/run", "c/other"]
    assert unique_labels(roots[2:]) == ["other"]


def test_axis_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = nice_ticks(0.513, 0.748)
    assert ticks == pytest.approx([0.55, 0.6, 0.65, 0.7])
    assert nice_ticks(3.0, 3.0) == [3.0]
    assert format_number(37301) == "37.3k" and format_number(0.7342) == "0.7342"
    assert format_number(2.5e6) == "2.5M" and format_number(math.inf) == "inf"
