import itertools
import math

import numpy as np
import pytest

from nasloop.objectives import (
    Bounds,
    HypervolumeTracker,
    Objective,
    hypervolume,
    hypervolume_of_matrix,
    hypervolume_over_time,
    igd_of_matrix,
    inverted_generational_distance,
    reference_box_volume,
)

ACCURACY_AND_LATENCY = [Objective("val_acc", "max"), Objective("latency_ms", "min")]


# --- hypervolume: hand-computed cases ----------------------------------------------------------------------


def test_two_objective_staircase_by_hand() -> None:
    # Rectangles to (4, 4): 3x1 + 2x1 + 1x1 stacked as a staircase = 3 + 2 + 1.
    assert hypervolume_of_matrix([[1, 3], [2, 2], [3, 1]], (4, 4)) == pytest.approx(6.0)


def test_three_objective_boxes_by_inclusion_exclusion() -> None:
    assert hypervolume_of_matrix([[0, 0, 0]], (1, 2, 3)) == pytest.approx(6.0)
    # Box A from (0,1,1): 2·1·1 = 2; box B from (1,0,0): 1·2·2 = 4; overlap from (1,1,1): 1.
    assert hypervolume_of_matrix([[0, 1, 1], [1, 0, 0]], (2, 2, 2)) == pytest.approx(5.0)


def test_dominated_duplicate_and_outside_points_add_nothing() -> None:
    base = hypervolume_of_matrix([[1, 3], [3, 1]], (4, 4))
    assert hypervolume_of_matrix([[1, 3], [3, 1], [3, 3], [1, 3], [5, 0], [0, 4]], (4, 4)) == pytest.approx(base)
    assert hypervolume_of_matrix(np.empty((0, 2)), (4, 4)) == 0.0
    assert hypervolume_of_matrix([[4, 0]], (4, 4)) == 0.0  # on the reference point's boundary


def test_one_objective_is_a_length() -> None:
    assert hypervolume_of_matrix([[0.25], [0.5]], 1.0) == pytest.approx(0.75)


def _grid_hypervolume(points: np.ndarray, reference: int) -> int:
    """Count the unit cells [c, c+1)^M below `reference` that some point weakly dominates."""
    dimensions = points.shape[1]
    return sum(
        1
        for cell in itertools.product(range(reference), repeat=dimensions)
        if any(np.all(point <= np.array(cell)) for point in points)
    )


@pytest.mark.parametrize(("dimensions", "seed"), [(2, 0), (3, 1), (3, 2), (4, 3)])
def test_exact_hypervolume_matches_cell_counting_on_integer_points(dimensions: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = 6
    points = rng.integers(0, reference + 1, size=(7, dimensions))
    assert hypervolume_of_matrix(points, reference) == pytest.approx(_grid_hypervolume(points, reference))


def test_reference_point_length_must_match() -> None:
    with pytest.raises(ValueError, match="reference point has 3 coordinates"):
        hypervolume_of_matrix([[0, 0]], (1, 1, 1))


def test_reference_box_volume() -> None:
    assert reference_box_volume(1.1, 2) == pytest.approx(1.21)
    assert reference_box_volume((1.0, 2.0, 3.0), 3) == pytest.approx(6.0)


# --- against pymoo on random fronts ------------------------------------------------------------------------


@pytest.mark.parametrize(("dimensions", "size"), [(2, 1), (2, 40), (3, 5), (3, 40), (4, 12)])
def test_hypervolume_matches_pymoo(dimensions: int, size: int) -> None:
    pytest.importorskip("pymoo")
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(100 * dimensions + size)
    for _ in range(5):
        points = rng.random((size, dimensions)) * 1.2  # some points beyond the reference point
        expected = HV(ref_point=np.full(dimensions, 1.1))(points)
        assert hypervolume_of_matrix(points, 1.1) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_igd_matches_pymoo_with_its_zero_to_one_normalisation() -> None:
    pytest.importorskip("pymoo")
    from pymoo.indicators.igd import IGD

    rng = np.random.default_rng(5)
    objectives = [Objective("a", "min"), Objective("b", "min"), Objective("c", "min")]
    front = rng.random((30, 3)) * [1.0, 10.0, 100.0]
    found = rng.random((20, 3)) * [1.0, 10.0, 100.0]
    as_points = [[dict(zip("abc", map(float, row), strict=True)) for row in rows] for rows in (found, front)]
    expected = IGD(front, zero_to_one=True)(found)
    assert inverted_generational_distance(as_points[0], as_points[1], objectives) == pytest.approx(expected)
    assert igd_of_matrix(found, front) == pytest.approx(IGD(front)(found))


def test_normalised_hypervolume_matches_pymoo_on_normalised_values() -> None:
    pytest.importorskip("pymoo")
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(11)
    accuracy = rng.uniform(0.5, 0.95, 25)
    latency = rng.uniform(1.0, 30.0, 25)
    points = [{"val_acc": float(a), "latency_ms": float(t)} for a, t in zip(accuracy, latency, strict=True)]
    bounds = Bounds(ideal={"val_acc": 1.0, "latency_ms": 0.0}, nadir={"val_acc": 0.0, "latency_ms": 40.0})
    normalised = np.stack([1.0 - accuracy, latency / 40.0], axis=1)
    expected = HV(ref_point=np.array([1.1, 1.1]))(normalised)
    assert hypervolume(points, ACCURACY_AND_LATENCY, bounds) == pytest.approx(expected)


# --- normalisation -----------------------------------------------------------------------------------------


def test_bounds_from_points_map_ideal_to_zero_and_nadir_to_one() -> None:
    front = [{"val_acc": 0.9, "latency_ms": 20.0}, {"val_acc": 0.7, "latency_ms": 5.0}, {"val_acc": 0.1}]
    bounds = Bounds.from_points(front, ACCURACY_AND_LATENCY)
    assert bounds.ideal == {"val_acc": pytest.approx(0.9), "latency_ms": 5.0}
    assert bounds.nadir == {"val_acc": pytest.approx(0.7), "latency_ms": 20.0}
    assert bounds.normalise(front, ACCURACY_AND_LATENCY) == pytest.approx(np.array([[0.0, 1.0], [1.0, 0.0]]))


def test_flat_or_incomplete_bounds_are_rejected_with_the_objective_named() -> None:
    flat = Bounds(ideal={"val_acc": 0.8, "latency_ms": 1.0}, nadir={"val_acc": 0.8, "latency_ms": 9.0})
    with pytest.raises(ValueError, match="val_acc:max need an ideal better than the nadir"):
        flat.normalise([{"val_acc": 0.8, "latency_ms": 2.0}], ACCURACY_AND_LATENCY)
    partial = Bounds(ideal={"val_acc": 1.0}, nadir={"val_acc": 0.0})
    with pytest.raises(ValueError, match="no ideal and nadir for objective 'latency_ms'"):
        partial.normalise([{"val_acc": 0.8, "latency_ms": 2.0}], ACCURACY_AND_LATENCY)
    with pytest.raises(ValueError, match="at least one point"):
        Bounds.from_points([{"val_acc": 0.5}], ACCURACY_AND_LATENCY)


def test_hypervolume_by_hand_in_metric_units() -> None:
    bounds = Bounds(ideal={"val_acc": 1.0, "latency_ms": 0.0}, nadir={"val_acc": 0.0, "latency_ms": 10.0})
    # Normalised (0.2, 0.5): the box to (1.1, 1.1) is 0.9 x 0.6; the failed candidate is ignored.
    points = [{"val_acc": 0.8, "latency_ms": 5.0}, {"latency_ms": 0.0}]
    assert hypervolume(points, ACCURACY_AND_LATENCY, bounds) == pytest.approx(0.54)
    assert hypervolume(points, ACCURACY_AND_LATENCY, bounds, reference_point=(1.0, 1.0)) == pytest.approx(0.4)
    assert hypervolume([], ACCURACY_AND_LATENCY, bounds) == 0.0


def test_igd_by_hand() -> None:
    objectives = [Objective("a", "min"), Objective("b", "min")]
    front = [{"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 0.0}]
    assert inverted_generational_distance(front, front, objectives) == 0.0
    # (0, 0) is at distance 1 from both reference points.
    assert inverted_generational_distance([{"a": 0.0, "b": 0.0}], front, objectives) == pytest.approx(1.0)
    # (0.5, 0.5) is at sqrt(0.5) from both.
    assert inverted_generational_distance([{"a": 0.5, "b": 0.5}], front, objectives) == pytest.approx(math.sqrt(0.5))


def test_igd_of_an_empty_set_is_an_error_not_a_number() -> None:
    objectives = [Objective("a", "min"), Objective("b", "min")]
    front = [{"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 0.0}]
    with pytest.raises(ValueError, match="empty set is undefined"):
        inverted_generational_distance([{"a": 0.5}], front, objectives)


# --- hypervolume over time ---------------------------------------------------------------------------------


def test_tracker_records_one_value_per_evaluation_and_never_decreases() -> None:
    bounds = Bounds(ideal={"val_acc": 1.0, "latency_ms": 0.0}, nadir={"val_acc": 0.0, "latency_ms": 10.0})
    evaluations: list[dict[str, float] | None] = [
        None,  # failed before any metric
        {"val_acc": 0.5, "latency_ms": 5.0},
        {"latency_ms": 1.0},  # failed training: no accuracy
        {"val_acc": 0.4, "latency_ms": 6.0},  # dominated
        {"val_acc": 0.9, "latency_ms": 8.0},
        {"val_acc": 0.6, "latency_ms": 2.0},  # dominates the first
    ]
    history = hypervolume_over_time(evaluations, ACCURACY_AND_LATENCY, bounds)
    assert len(history) == len(evaluations)
    assert history[0] == 0.0
    assert history[1] == pytest.approx(0.6 * 0.6)
    assert history[2] == history[1] and history[3] == history[1]
    assert all(later >= earlier for earlier, later in itertools.pairwise(history))
    complete = [metrics for metrics in evaluations if metrics]
    assert history[-1] == pytest.approx(hypervolume(complete, ACCURACY_AND_LATENCY, bounds))


def test_tracker_matches_recomputation_on_random_three_objective_stream() -> None:
    rng = np.random.default_rng(3)
    objectives = [Objective("a", "max"), Objective("b", "min"), Objective("c", "min")]
    bounds = Bounds(ideal={"a": 1.0, "b": 0.0, "c": 0.0}, nadir={"a": 0.0, "b": 1.0, "c": 1.0})
    stream = [dict(zip("abc", map(float, row), strict=True)) for row in rng.random((40, 3))]
    tracker = HypervolumeTracker(objectives, bounds)
    for count, metrics in enumerate(stream, start=1):
        assert tracker.add(metrics) == pytest.approx(hypervolume(stream[:count], objectives, bounds))
