import math

import numpy as np
import pytest

from nasloop.objectives import (
    Objective,
    dominates,
    non_dominated_fronts,
    non_dominated_ranks,
    objective_vector,
    pareto_front,
    parse_objectives,
)

ACCURACY_AND_LATENCY = [Objective("val_acc", "max"), Objective("latency_ms", "min")]


def test_parse_objectives_in_order_with_spaces_and_case() -> None:
    assert parse_objectives(" val_acc:max , latency_ms:MIN") == ACCURACY_AND_LATENCY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no objectives"),
        ("val_acc", "no direction"),
        ("val_acc:up", "must be 'max' or 'min'"),
        (":max", "no metric name"),
        ("val_acc:max,", "empty objective"),
        ("val_acc:max,,params:min", "empty objective"),
        ("val_acc:max,val_acc:min", "listed twice"),
    ],
)
def test_parse_objectives_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_objectives(text)


def test_objective_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        Objective("val_acc", "maximise")  # type: ignore[arg-type]


def test_objective_vector_negates_maximised_and_rejects_missing_or_non_finite() -> None:
    assert objective_vector({"val_acc": 0.9, "latency_ms": 3.0}, ACCURACY_AND_LATENCY) == (-0.9, 3.0)
    assert objective_vector({"val_acc": 0.9}, ACCURACY_AND_LATENCY) is None
    assert objective_vector({"val_acc": math.nan, "latency_ms": 3.0}, ACCURACY_AND_LATENCY) is None
    assert objective_vector({"val_acc": 0.9, "latency_ms": math.inf}, ACCURACY_AND_LATENCY) is None


def test_dominates_needs_strict_improvement_somewhere() -> None:
    assert dominates((1.0, 2.0), (1.0, 3.0))
    assert not dominates((1.0, 2.0), (1.0, 2.0))
    assert not dominates((1.0, 4.0), (2.0, 3.0))


def test_pareto_front_by_hand_with_mixed_directions() -> None:
    points = [
        {"val_acc": 0.90, "latency_ms": 10.0},  # 0: front (most accurate)
        {"val_acc": 0.80, "latency_ms": 5.0},  # 1: front
        {"val_acc": 0.70, "latency_ms": 6.0},  # 2: dominated by 1
        {"val_acc": 0.60, "latency_ms": 1.0},  # 3: front (fastest)
        {"val_acc": 0.85, "latency_ms": 12.0},  # 4: dominated by 0
    ]
    assert pareto_front(points, ACCURACY_AND_LATENCY) == [0, 1, 3]
    assert non_dominated_ranks(points, ACCURACY_AND_LATENCY) == [0, 0, 1, 0, 1]


def test_duplicates_share_the_front_and_ties_in_one_objective_are_resolved_by_the_other() -> None:
    points = [
        {"val_acc": 0.8, "latency_ms": 5.0},
        {"val_acc": 0.8, "latency_ms": 5.0},  # duplicate of 0
        {"val_acc": 0.8, "latency_ms": 6.0},  # same accuracy, slower: dominated
    ]
    assert pareto_front(points, ACCURACY_AND_LATENCY) == [0, 1]
    assert non_dominated_ranks(points, ACCURACY_AND_LATENCY) == [0, 0, 1]


def test_candidates_lacking_an_objective_are_never_on_the_front() -> None:
    points = [
        {"latency_ms": 0.1},  # failed: no accuracy, would otherwise dominate on latency
        {"val_acc": 0.5, "latency_ms": 9.0},
        {"val_acc": math.nan, "latency_ms": 1.0},
    ]
    assert pareto_front(points, ACCURACY_AND_LATENCY) == [1]
    assert non_dominated_ranks(points, ACCURACY_AND_LATENCY) == [None, 0, None]


def test_empty_inputs() -> None:
    assert pareto_front([], ACCURACY_AND_LATENCY) == []
    assert pareto_front([{"params": 3.0}], ACCURACY_AND_LATENCY) == []
    with pytest.raises(ValueError, match="at least one objective"):
        non_dominated_fronts([{"val_acc": 0.5}], [])


def _naive_fronts(vectors: list[tuple[float, ...]]) -> list[list[int]]:
    """Peel fronts by the definition: the points no remaining point dominates."""
    remaining = set(range(len(vectors)))
    fronts = []
    while remaining:
        front = sorted(i for i in remaining if not any(dominates(vectors[j], vectors[i]) for j in remaining))
        fronts.append(front)
        remaining -= set(front)
    return fronts


@pytest.mark.parametrize("dimensions", [2, 3])
def test_fast_sort_matches_the_definition_on_random_points(dimensions: int) -> None:
    rng = np.random.default_rng(dimensions)
    # Coarse integer values make ties and duplicates common.
    values = rng.integers(0, 6, size=(80, dimensions)).astype(float)
    objectives = [Objective(f"m{k}", "min" if k % 2 else "max") for k in range(dimensions)]
    points = [{f"m{k}": float(row[k]) for k in range(dimensions)} for row in values]
    vectors = [objective_vector(point, objectives) for point in points]
    assert all(vector is not None for vector in vectors)
    assert non_dominated_fronts(points, objectives) == _naive_fronts([v for v in vectors if v is not None])


def test_fast_sort_agrees_with_pymoo() -> None:
    pytest.importorskip("pymoo")
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(7)
    values = rng.random((60, 3))
    objectives = [Objective(f"m{k}", "min") for k in range(3)]
    points = [{f"m{k}": float(row[k]) for k in range(3)} for row in values]
    expected = [sorted(int(i) for i in front) for front in NonDominatedSorting().do(values)]
    assert non_dominated_fronts(points, objectives) == expected
