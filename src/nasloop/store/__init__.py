"""Run storage: the SQLite run store, the run directory layout and the run's writer lock."""

from nasloop.store.layout import RunDir, RunInUse, RunLock
from nasloop.store.sqlite import CandidateRecord, LLMCallRecord, RunStore

__all__ = ["CandidateRecord", "LLMCallRecord", "RunDir", "RunInUse", "RunLock", "RunStore"]
