"""How executors divide a machine: slots per GPU (whole, shared, grouped), threads per worker, worker
environments, Ray worker counts, and the registry."""

from __future__ import annotations

import pytest

from nasloop.evaluate.job import EvalJob, Recipe
from nasloop.executors.base import Slot, with_threads
from nasloop.executors.local import gpu_groups, plan_slots, visible_gpus, worker_environment
from nasloop.executors.ray_executor import cluster_workers
from nasloop.registry import executors


def test_one_worker_per_gpu_by_default_with_the_cores_split_evenly():
    slots = plan_slots(None, cores=16, gpus=("0", "1", "2", "3"))
    assert slots == tuple(Slot(4, (gpu,)) for gpu in "0123")
    assert all(slot.device == "cuda" for slot in slots)


def test_a_fraction_of_a_gpu_packs_several_workers_onto_it():
    slots = plan_slots(None, cores=8, gpus=("0", "1"), gpus_per_job=0.5)
    assert [slot.gpu_ids for slot in slots] == [("0",), ("0",), ("1",), ("1",)]
    assert {slot.gpu_share for slot in slots} == {0.5} and {slot.threads for slot in slots} == {2}


def test_several_gpus_per_job_form_groups_and_leftovers_stay_idle():
    assert gpu_groups(("0", "1", "2", "3", "4"), 2) == [(("0", "1"), 1.0), (("2", "3"), 1.0)]
    assert gpu_groups(("a", "b"), 3) == []


def test_explicit_workers_take_the_gpus_in_turn():
    slots = plan_slots(3, cores=6, gpus=("GPU-x", "GPU-y"))
    assert [slot.gpu_ids for slot in slots] == [("GPU-x",), ("GPU-y",), ("GPU-x",)]
    assert {slot.threads for slot in slots} == {2}


@pytest.mark.parametrize(
    ("workers", "cores", "threads"), [(None, 2, (2,)), (2, 2, (1, 1)), (4, 2, (1, 1, 1, 1)), (3, 16, (5, 5, 5))]
)
def test_cpu_machines_split_their_cores(workers, cores, threads):
    slots = plan_slots(workers, cores=cores)
    assert tuple(slot.threads for slot in slots) == threads
    assert all(slot.device == "cpu" and not slot.gpu_ids for slot in slots)


def test_no_gpu_per_job_means_cpu_workers_even_on_a_gpu_machine():
    slots = plan_slots(2, cores=8, gpus=("0",), gpus_per_job=0)
    assert all(slot.device == "cpu" for slot in slots)
    assert worker_environment(slots[0], machine_has_gpus=True) == {"CUDA_VISIBLE_DEVICES": ""}


def test_worker_environment_names_only_its_own_gpus():
    assert worker_environment(Slot(4, ("2", "3")), machine_has_gpus=True) == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert worker_environment(Slot(4), machine_has_gpus=False) == {}


def test_threads_are_set_only_where_the_recipe_leaves_them_open():
    job = EvalJob(code="x = 1")
    assert with_threads(job, 3).recipe.threads == 3
    pinned = EvalJob(code="x = 1", recipe=Recipe(threads=7))
    assert with_threads(pinned, 3) is pinned


def test_visible_gpus_are_none_on_a_cpu_machine():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert visible_gpus() == ()


def test_ray_worker_count_follows_the_cluster():
    assert cluster_workers({"CPU": 64.0, "GPU": 8.0}, cpus_per_job=4, gpus_per_job=1) == 8
    assert cluster_workers({"CPU": 64.0, "GPU": 8.0}, cpus_per_job=4, gpus_per_job=0.25) == 32
    assert cluster_workers({"CPU": 6.0}, cpus_per_job=4, gpus_per_job=0) == 1
    assert cluster_workers({"CPU": 2.0}, cpus_per_job=1, gpus_per_job=0) == 2


def test_both_executors_are_registered():
    assert {"local", "ray"} <= set(executors.names())
