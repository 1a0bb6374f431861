from nasloop.candidate import Failure, FailureKind, State
from nasloop.store import CandidateRecord, RunStore


def make_record(candidate_id: int, state: State = State.COMPLETE, **kwargs) -> CandidateRecord:
    return CandidateRecord(id=candidate_id, iteration=candidate_id - 1, state=state, **kwargs)


def test_candidates_round_trip(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        store.add_candidate(make_record(1, code="x = 1", hash="h1", metrics={"val_acc": 0.5}, curve=[(0, 2.0)]))
        failure = Failure(FailureKind.SHAPE, "line 3: bad shape", "Traceback ...")
        store.add_candidate(make_record(2, State.FAILED, code="y", hash="h2", failure=failure, parent_ids=(1,)))
        first, second = store.candidates()
    assert first.metrics == {"val_acc": 0.5} and first.curve == [(0, 2.0)]
    assert second.failure == failure and second.parent_ids == (1,)
    assert second.result.state is State.FAILED


def test_find_by_hash_skips_duplicates(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        store.add_candidate(make_record(1, hash="same"))
        store.add_candidate(make_record(2, State.DUPLICATE, hash="same", duplicate_of=1))
        assert store.find_by_hash("same").id == 1
        assert store.find_by_hash("other") is None
        assert store.next_candidate_id() == 3


def test_reader_sees_committed_writes_while_writer_is_open(tmp_path):
    path = tmp_path / "run.sqlite"
    writer = RunStore(path)
    writer.add_candidate(make_record(1))
    reader = RunStore(path, readonly=True)
    assert [c.id for c in reader.candidates()] == [1]
    writer.add_candidate(make_record(2))
    assert [c.id for c in reader.candidates()] == [1, 2]
    reader.close()
    writer.close()


def test_transaction_rolls_back_together(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        try:
            with store.transaction():
                store.add_candidate(make_record(1))
                store.save_strategy_state(0, {"a": 1})
                raise RuntimeError("crash between the writes")
        except RuntimeError:
            pass
        assert store.candidates() == []
        assert store.latest_strategy_state() is None


def test_llm_calls_and_totals(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        for tokens in (10, 20):
            store.add_llm_call(
                role="generator",
                iteration=0,
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                request={"seed": 1},
                completion="ok",
                error=None,
                prompt_tokens=tokens,
                completion_tokens=5,
                latency_s=0.5,
                cost_usd=0.01,
            )
        totals = store.llm_totals()
        calls = store.llm_calls()
    assert totals["calls"] == 2 and totals["prompt_tokens"] == 30 and totals["completion_tokens"] == 10
    assert calls[0].messages == [{"role": "user", "content": "hi"}] and calls[1].request == {"seed": 1}


def test_strategy_state_latest_wins(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        store.save_strategy_state(0, {"step": 0})
        store.save_strategy_state(1, {"step": 1})
        assert store.latest_strategy_state() == (1, {"step": 1})
