"""`expert-rules`: LeMo-NADe's loop (Rahman, Chakraborty, 2024; METHODS.md section D) on the open code space.

Each iteration:

1. the expert system (`nasloop.strategies.expert_system`) fires its rules on the metrics of the candidate
   the feedback is about (`feedback_on`: the latest candidate, as in the paper, or the best one), the
   user's `targets`, and the latest candidate's failure if it failed;
2. conflicting instructions are resolved by the user's metric `priorities`, and the explanation (which
   instruction won and why) goes into the prompt with the kept instructions;
3. the generator gets the task, the requirements, the best model so far by combined model effectiveness
   (CM, `nasloop.objectives.effectiveness`) with its metrics, the latest model's outcome, and the
   instructions, and writes a complete `Net`.

The first iteration is a plain generation. nasloop adds two things to the published loop: a candidate
that failed because a layer was declared for the wrong input size is repaired in code, without the LLM and
without counting as an iteration (`fix_sizes`, up to `max_size_fixes` in a row: `strategies.size_fix`),
and an answer whose code repeats a failed candidate's is fixed that way or sent back once with a note
(`retry_repeats`, `base.ask_for_new_code`). Each proposal's notes record the
rules fired (`rules_fired`: name and the values that made each fire), the instructions sent
(`instructions`), the conflicts (`conflicts`: explanation and dropped rules) and which candidate the
feedback was about (`feedback_on`). When a candidate is observed its CM is written into its notes (`cm`,
or `cm_missing` with the reason) before the engine stores it, and the best candidate by CM is part of
`state_dict`.

Metrics the rules read are the evaluation's (`val_acc`, `train_acc`, `test_acc`, `params`,
`train_energy_j` and `val_energy_j` from training, and `latency_ms`, `throughput_ips`, `energy_j` per
image, ... when the hardware stage ran) plus three derived ones:
`fps` (the CM's frames per second: `throughput_ips`, else 1000 / `latency_ms`), `size_mb` (float32
weights, 4 bytes per parameter) and `cm`. A rule on a metric the evaluation did not produce stays silent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from nasloop.candidate import Failure, Proposal, Purpose, State
from nasloop.llm.base import Message, Sampling
from nasloop.objectives.constraints import format_value
from nasloop.objectives.effectiveness import (
    EffectivenessConfig,
    best_by_effectiveness,
    combined_effectiveness,
    describe_normalisation,
)
from nasloop.registry import strategies
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import Context, Observation, Ranking, Strategy, Task
from nasloop.strategies.code_writer import EvaluatedCodes, RepairOptions, cleanup_feedback, write_code
from nasloop.strategies.expert_system import FiredRule, Resolution, Rule, fire, load_rules, resolve
from nasloop.strategies.size_fix import size_fix_repair

DEFAULT_PRIORITIES = (
    "validity",
    "val_acc",
    "fps",
    "latency_ms",
    "energy_j",
    "params",
    "size_mb",
    "flops",
    "co2_g",
    "efficiency",
)

# Metrics where a target is a floor (at least); every other target is a ceiling (at most).
HIGHER_IS_BETTER = frozenset({"val_acc", "train_acc", "test_acc", "fps", "throughput_ips", "cm"})

# Metrics shown to the LLM next to a model, in this order, when present.
SHOWN_METRICS = (
    "val_acc",
    "train_acc",
    "params",
    "flops",
    "latency_ms",
    "throughput_ips",
    "fps",
    "peak_memory_mb",
    "energy_j",
    "co2_g",
)


class ExpertRulesOptions(RepairOptions):
    """Options of `expert-rules` (config key `strategy_options`)."""

    rules: str | None = Field(default=None, description="YAML rule file; None: nasloop's default rules")
    targets: dict[str, float] = Field(
        default_factory=dict, description="the user's thresholds by metric, e.g. {val_acc: 0.9, fps: 1000}"
    )
    priorities: tuple[str, ...] = Field(
        default=DEFAULT_PRIORITIES, description="metrics, most important first; they settle conflicting rules"
    )
    effectiveness: EffectivenessConfig = Field(
        default_factory=EffectivenessConfig, description="CM weights and normalisation; the best is kept by CM"
    )
    feedback_on: Literal["latest", "best"] = Field(
        default="latest", description="whose metrics the rules read: the latest candidate (paper) or the best"
    )
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    max_tokens: int = Field(default=2048, gt=0)

    @field_validator("rules")
    @classmethod
    def _rules_load(cls, path: str | None) -> str | None:
        load_rules(path)  # a RuleFileError (a ValueError) names the file, the rule and the field
        return path

    @field_validator("priorities")
    @classmethod
    def _priorities_unique(cls, priorities: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({metric for metric in priorities if priorities.count(metric) > 1})
        if repeated:
            raise ValueError(f"metrics listed more than once: {', '.join(repeated)}")
        return priorities


# ---------------------------------------------------------------------------------------------------------
# Facts for the rules and text for the prompt
# ---------------------------------------------------------------------------------------------------------


def rule_metrics(metrics: Mapping[str, float], config: EffectivenessConfig, cm: float | None) -> dict[str, float]:
    """The metrics the rules read: the measured ones plus derived `fps`, `size_mb` and `cm` (module doc)."""
    facts = {name: float(value) for name, value in metrics.items()}
    if "fps" not in facts:
        fps = frames_per_second(metrics, config)
        if fps is not None:
            facts["fps"] = fps
    if "size_mb" not in facts and "params" in facts:
        facts["size_mb"] = facts["params"] * 4 / 1e6
    if cm is not None:
        facts["cm"] = cm
    return facts


def frames_per_second(metrics: Mapping[str, float], config: EffectivenessConfig) -> float | None:
    """Images per second as CM reads it: the FPS metric, else 1000 / the batch-1 latency; None if neither."""
    fps = metrics.get(config.fps_metric)
    if fps is not None and math.isfinite(fps) and fps > 0:
        return float(fps)
    latency = metrics.get(config.latency_metric) if config.latency_metric else None
    if latency is not None and math.isfinite(latency) and latency > 0:
        return 1000.0 / latency
    return None


def describe_metrics(metrics: Mapping[str, float]) -> str:
    """`val_acc = 0.8123, params = 12,345, ...` for the metrics in SHOWN_METRICS that are present."""
    shown = [f"{name} = {format_value(metrics[name])}" for name in SHOWN_METRICS if name in metrics]
    return ", ".join(shown) or "no metrics"


def describe_targets(targets: Mapping[str, float]) -> list[str]:
    """One line per target: `val_acc at least 0.9`, `params at most 100,000`."""
    return [
        f"{metric} {'at least' if metric in HIGHER_IS_BETTER else 'at most'} {format_value(value)}"
        for metric, value in targets.items()
    ]


def outcome(record: CandidateRecord) -> str:
    """How a candidate ended, in one paragraph for the prompt."""
    if record.failure is not None and record.state is not State.COMPLETE:
        return f"failed with a {record.failure.kind.value} error: {record.failure.message}"
    text = describe_metrics(record.metrics)
    if record.state is State.PRUNED:
        text = "stopped early because its training loss was far behind the best models; " + text
    if record.duplicate_of is not None:
        text += f"; it repeated candidate {record.duplicate_of} exactly, so make a real change"
    return text


def fired_notes(fired: Sequence[FiredRule]) -> list[dict[str, str]]:
    """The rules fired, as stored in a candidate's notes."""
    return [{"rule": item.rule.name, "reason": item.reason} for item in fired]


def conflict_notes(resolution: Resolution) -> dict[str, Any]:
    """The conflicts of a resolution, as stored in a candidate's notes; empty when nothing conflicted."""
    if not resolution.dropped:
        return {}
    dropped = [
        {"rule": entry.fired.rule.name, "winner": entry.winner.rule.name if entry.winner else None,
         "reason": entry.reason}
        for entry in resolution.dropped
    ]  # fmt: skip
    return {"explanation": resolution.explanation, "dropped": dropped}


def find_record(history: Sequence[CandidateRecord], candidate_id: int | None) -> CandidateRecord | None:
    """The record with this id in the run history, or None."""
    if candidate_id is None:
        return None
    return next((record for record in reversed(history) if record.id == candidate_id), None)


# ---------------------------------------------------------------------------------------------------------
# The strategy
# ---------------------------------------------------------------------------------------------------------


@strategies.register("expert-rules")
class ExpertRules(Strategy):
    """LeMo-NADe: expert-system instructions to an LLM generator, best kept by CM; see the module docstring."""

    Options = ExpertRulesOptions
    sequential = True

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: ExpertRulesOptions = options
        self.rules: list[Rule] = load_rules(self.opts.rules)
        self.best: dict[str, Any] | None = None  # {id, cm, metrics}: the best candidate by CM
        self.latest_id: int | None = None
        # Completed candidates with the metrics CM reads; `normalisation: run` rescales against them.
        self.scored: list[dict[str, Any]] = []
        self.evaluated_codes = EvaluatedCodes(metric=task.metric)
        self.repaired: int | None = None  # as in feedback-memory: one repair per failure, even when pipelined
        self.repair_tried = False  # the attempt under way was repaired by the LLM already

    def takes_seed(self, *, explicit: bool) -> bool:
        return True

    @classmethod
    def rank(cls, records: Sequence[CandidateRecord], config: Any) -> Ranking:
        """By combined model effectiveness, recomputed from the metrics with the run's options."""
        options = cls.Options.model_validate(config.strategy_options)
        return Ranking(rank_by_effectiveness(records, options.effectiveness), "cm")

    @classmethod
    def needs(cls, options: Any, config: Any) -> dict[str, str]:
        """The selection metric, and what a weighted CM term reads (FPS: the hardware stage)."""
        cm = options.effectiveness
        needed = {config.selection_metric: "objective", cm.val_accuracy_metric: "strategy_options.effectiveness"}
        if cm.fps_weight > 0:
            needed[cm.latency_metric or cm.fps_metric] = "strategy_options.effectiveness.fps_weight"
        return needed

    # -- propose ----------------------------------------------------------------------------------------

    def propose(self, ctx: Context) -> list[Proposal]:
        best = find_record(ctx.history, self.best["id"]) if self.best else None
        latest = find_record(ctx.history, self.latest_id)
        if latest is None:
            return self._write(ctx, self._messages(ctx), parent=None)
        failure = latest.failure if latest.state is not State.COMPLETE else None
        if failure is not None and latest.code and latest.id != self.repaired:
            repair = self._repair(ctx, latest, failure, best)
            if repair is not None:
                return repair
        # A failed latest candidate that was repaired already (or cannot be) is left behind: the next model
        # starts from the best one, whose metrics the rules read, and the failure is only told.
        if failure is not None:
            subject, failure = (best, None) if best is not None else (latest, failure)
        else:
            subject = best if self.opts.feedback_on == "best" and best is not None else latest
        fired, resolution = self.advise(subject, failure)
        messages = self._messages(ctx, best=best, latest=latest, resolution=resolution, show_latest=subject is latest)
        proposals = self._write(ctx, messages, parent=best if best is not None else None)
        self._annotate(proposals, subject, fired, resolution)
        for proposal in proposals:
            proposal.parent_ids = tuple(dict.fromkeys(record.id for record in (best, latest) if record is not None))
        return proposals

    def finish(self, ctx: Context) -> list[Proposal]:
        latest = find_record(ctx.history, self.latest_id)
        if latest is None or latest.state is State.COMPLETE or latest.failure is None or latest.id == self.repaired:
            return []
        best = find_record(ctx.history, self.best["id"]) if self.best else None
        return self._repair(ctx, latest, latest.failure, best) or []

    def _repair(
        self, ctx: Context, latest: CandidateRecord, failure: Failure, best: CandidateRecord | None
    ) -> list[Proposal] | None:
        """The repair of the failed latest candidate: in code when the evaluator named the size to use, else
        one LLM attempt per failed search candidate, with the rules' advice on the failure."""
        if self.opts.fix_sizes:
            fixes = int(latest.notes.get("size_fixes") or 0)
            repair = size_fix_repair(latest.id, latest.code or "", failure, fixes, self.opts.max_size_fixes,
                                     self.evaluated_codes)  # fmt: skip
            if repair is not None:
                self.repaired = latest.id
                return [repair]  # the evaluator named the size to use: no LLM call, not an iteration
        if self.repair_tried:
            return None
        self.repaired = latest.id
        fired, resolution = self.advise(latest, failure)
        messages = self._messages(ctx, best=best, latest=latest, resolution=resolution, show_latest=True, repair=True)
        proposals = self._write(ctx, messages, parent=latest, purpose=Purpose.REPAIR)
        self._annotate(proposals, latest, fired, resolution)
        for proposal in proposals:
            proposal.parent_ids = (latest.id,)
        return proposals

    def _write(
        self,
        ctx: Context,
        messages: list[Message],
        *,
        parent: CandidateRecord | None,
        purpose: Purpose = Purpose.SEARCH,
    ) -> list[Proposal]:
        sampling = Sampling(temperature=self.opts.temperature, top_p=self.opts.top_p, max_tokens=self.opts.max_tokens)
        return write_code(ctx, messages, self.evaluated_codes, self.opts, sampling, parent=parent, purpose=purpose)

    @staticmethod
    def _annotate(
        proposals: list[Proposal], subject: CandidateRecord, fired: list[FiredRule], resolution: Resolution
    ) -> None:
        """The rules fired, the instructions sent and the conflicts, in each proposal's notes."""
        for proposal in proposals:
            proposal.notes.update(
                feedback_on=subject.id, rules_fired=fired_notes(fired), instructions=list(resolution.instructions)
            )
            conflicts = conflict_notes(resolution)
            if conflicts:
                proposal.notes["conflicts"] = conflicts

    def advise(self, subject: CandidateRecord, failure: Failure | None) -> tuple[list[FiredRule], Resolution]:
        """Fire the rules on `subject`'s metrics and the latest `failure`, and resolve the conflicts."""
        cm = subject.notes.get("cm")
        metrics = rule_metrics(
            subject.metrics, self.opts.effectiveness, float(cm) if isinstance(cm, int | float) else None
        )
        fired = fire(self.rules, metrics, self.opts.targets, failure)
        return fired, resolve(fired, self.opts.priorities)

    def _messages(
        self,
        ctx: Context,
        *,
        best: CandidateRecord | None = None,
        latest: CandidateRecord | None = None,
        resolution: Resolution | None = None,
        show_latest: bool = True,
        repair: bool = False,
    ) -> list[Message]:
        best_view = None
        if best is not None and self.best is not None:
            kind = "the seed network" if best.purpose is Purpose.SEED else f"candidate {best.id}"
            best_view = {"id": best.id, "kind": kind, "code": best.code or "", "cm": format_value(self.best["cm"]),
                         "metrics": describe_metrics(best.metrics)}  # fmt: skip
        edit_format = self.opts.resolved_edit_format(self.task.llm_model)
        latest_view = None
        if latest is not None:
            # With SEARCH/REPLACE edits the prompt holds one model only: the one the blocks refer to.
            one_model = edit_format == "diff" and not repair
            show_code = show_latest and not one_model and (best is None or latest.id != best.id)
            notes = cleanup_feedback(latest)
            latest_view = {
                "id": latest.id,
                "outcome": outcome(latest) + (f"\n{notes}" if notes else ""),
                "code": (latest.code or "") if show_code else "",
            }
        context = {
            "task": self.task,
            "best": best_view,
            "latest": latest_view,
            "targets": describe_targets(self.opts.targets),
            "instructions": resolution.prompt_text() if resolution is not None else "",
            "first": latest is None,
            "repair": repair,
            "parent": best_view if not repair else latest_view,
            "edit_format": edit_format,
        }
        return [
            {"role": "system", "content": ctx.render("expert_generator_system").strip()},
            # Sections that are left out leave runs of blank lines behind; one blank line separates sections.
            {"role": "user", "content": re.sub(r"\n{3,}", "\n\n", ctx.render("expert_generator", **context)).strip()},
        ]

    # -- observe ----------------------------------------------------------------------------------------

    def observe(self, observations: list[Observation]) -> None:
        """Record each candidate's CM in its notes (the engine stores them next) and update the best."""
        for observation in observations:
            record = observation.record
            self.latest_id = record.id
            self.evaluated_codes.add(record)
            if record.purpose is Purpose.SEARCH:
                self.repair_tried = False
            elif record.purpose is Purpose.REPAIR:  # a size fix too: after it the LLM repairs no more
                self.repair_tried = True
            if record.state is not State.COMPLETE:
                continue
            self.scored.append({"id": record.id, "metrics": self._cm_inputs(record.metrics)})
            run = [entry["metrics"] for entry in self.scored]
            effectiveness = combined_effectiveness(record.metrics, self.opts.effectiveness, run=run, seed=run[0])
            if effectiveness.value is None:
                record.notes["cm_missing"] = effectiveness.reason
            else:
                record.notes["cm"] = effectiveness.value
            self._update_best()

    def _cm_inputs(self, metrics: Mapping[str, float]) -> dict[str, float]:
        config = self.opts.effectiveness
        names = {config.train_accuracy_metric, config.val_accuracy_metric, config.fps_metric,
                 config.train_energy_metric, config.val_energy_metric, config.latency_metric}  # fmt: skip
        return {name: float(metrics[name]) for name in names if name is not None and name in metrics}

    def _update_best(self) -> None:
        # Recomputed over all scored candidates: under `normalisation: run` an older one can become best.
        points = [entry["metrics"] for entry in self.scored]
        index = best_by_effectiveness(points, self.opts.effectiveness, seed=points[0])
        if index is None:
            self.best = None
            return
        value = combined_effectiveness(points[index], self.opts.effectiveness, run=points, seed=points[0]).value
        self.best = {"id": self.scored[index]["id"], "cm": value, "metrics": dict(points[index])}

    def summary(self) -> list[str]:
        lines = []
        if self.best is not None:
            lines.append(
                f"best by combined model effectiveness: candidate {self.best['id']}, CM = {self.best['cm']:.4f}"
            )
        reference = self.scored[0]["id"] if self.scored else None
        lines.append("CM: " + describe_normalisation(self.opts.effectiveness, reference))
        return lines

    # -- resume -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "latest_id": self.latest_id,
            "scored": self.scored,
            "evaluated_codes": self.evaluated_codes.entries,
            "repair_tried": self.repair_tried,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.latest_id = state.get("latest_id")
        self.scored = list(state.get("scored") or [])
        self.evaluated_codes = EvaluatedCodes(
            state.get("evaluated_codes") or state.get("failed_codes"), self.task.metric
        )
        self.repair_tried = bool(state.get("repair_tried", False))


def rank_by_effectiveness(
    records: Sequence[CandidateRecord], config: EffectivenessConfig
) -> list[tuple[CandidateRecord, float]]:
    """Completed candidates that have a CM, best first, with their CM (recomputed over `records`; under
    `normalisation: seed` against the first completed one, the seed network of a seeded run)."""
    complete = sorted((record for record in records if record.state is State.COMPLETE), key=lambda r: r.id)
    points = [record.metrics for record in complete]
    seed = points[0] if points else None
    scored = [
        (record, value)
        for record in complete
        if (value := combined_effectiveness(record.metrics, config, run=points, seed=seed).value) is not None
    ]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0].id))


__all__ = [
    "DEFAULT_PRIORITIES",
    "ExpertRules",
    "ExpertRulesOptions",
    "describe_metrics",
    "describe_targets",
    "frames_per_second",
    "rank_by_effectiveness",
    "rule_metrics",
]
