"""Run storage: the SQLite run store and the run directory layout."""

from nasloop.store.layout import RunDir
from nasloop.store.sqlite import CandidateRecord, LLMCallRecord, RunStore

__all__ = ["CandidateRecord", "LLMCallRecord", "RunDir", "RunStore"]
