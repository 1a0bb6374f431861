"""Mechanical repair of a layer declared for the wrong input size, from the evaluator's own message."""

import threading
from concurrent.futures import Future

import pytest
import torch
from support import FakeExecutor, fenced, good_net

from nasloop.candidate import EvalResult, Failure, FailureKind, Purpose, State
from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.evaluate.stages import LayerTrace, describe_exception
from nasloop.llm.scripted import ScriptedBackend
from nasloop.strategies.code_writer import EvaluatedCodes
from nasloop.strategies.size_fix import net_name_fix, size_fix

# What the 1.5B model wrote in a benchmark run: its comments assume 3x3 convolutions without padding.
FLATTEN_MISMATCH = """
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        # (B, 64, 6, 6)
        self.fc1 = nn.Linear(64 * 6 * 6, 128)  # flattened size
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))
"""

SEQUENTIAL_CHANNELS = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[0], 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(num_features=16),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))
"""

LOOP_BUILT = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.blocks = nn.ModuleList()
        for width in (8, 16):
            self.blocks.append(nn.Conv2d(4, width, 3))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))
"""


def build(code: str) -> torch.nn.Module:
    namespace: dict = {}
    exec(compile(code, "candidate.py", "exec"), namespace)
    return namespace["Net"]((1, 28, 28), 10)


def forward_failure(code: str) -> Failure | None:
    """The evaluator's failure for one forward pass of `code` (as `check_forward` words it), or None."""
    if "class Net(" not in code:
        return Failure(FailureKind.BUILD, "the module does not define `class Net(nn.Module)` at top level")
    model = build(code)
    trace = LayerTrace(model)
    try:
        with torch.no_grad():
            model(torch.zeros(4, 1, 28, 28))
    except Exception as error:  # as check_forward catches them
        trace.fail()
        return Failure(FailureKind.SHAPE, f"the forward pass raised {describe_exception(error)}" + trace.describe())
    finally:
        trace.remove()
    return None


def test_a_flatten_size_mismatch_is_fixed_in_place():
    failure = forward_failure(FLATTEN_MISMATCH)
    assert failure is not None and "set in_features=3136" in failure.message
    fixed, change = size_fix(FLATTEN_MISMATCH, failure)
    assert change == "fc1.in_features=3136"
    assert "self.fc1 = nn.Linear(3136, 128)  # flattened size" in fixed
    assert fixed.replace("3136", "64 * 6 * 6") == FLATTEN_MISMATCH  # nothing else changed
    assert forward_failure(fixed) is None


def test_sequential_entries_are_fixed_one_failure_at_a_time():
    failure = forward_failure(SEQUENTIAL_CHANNELS)
    assert failure is not None and "`features.3`" in failure.message
    fixed, change = size_fix(SEQUENTIAL_CHANNELS, failure)
    assert change == "features.3.num_features=32" and "nn.BatchNorm2d(num_features=32)" in fixed
    assert forward_failure(fixed) is None


NOT_FLATTENED = FLATTEN_MISMATCH.replace("self.fc1(x.flatten(1))", "self.fc1(x)")


def test_a_missing_flatten_is_added_at_the_failing_call_with_the_flattened_size():
    failure = forward_failure(NOT_FLATTENED)
    assert failure is not None
    assert "the input was not flattened" in failure.message and "`x = torch.flatten(x, 1)`" in failure.message
    assert "in_features must be 3136" in failure.message and "set in_features" not in failure.message
    fixed, change = size_fix(NOT_FLATTENED, failure)
    assert change == "fc1 input flattened on line 19, in_features=3136"
    assert fixed == FLATTEN_MISMATCH.replace("64 * 6 * 6", "3136")
    assert forward_failure(fixed) is None


def test_a_missing_flatten_of_an_expression_keeps_a_right_size_and_wraps_the_expression():
    code = NOT_FLATTENED.replace("64 * 6 * 6", "3136").replace("self.fc1(x)", "self.fc1(x + 0)")
    failure = forward_failure(code)
    assert failure is not None
    fixed, change = size_fix(code, failure)
    assert change == "fc1 input flattened on line 19, in_features=3136"
    assert fixed == code.replace("self.fc1(x + 0)", "self.fc1((x + 0).flatten(1))")
    assert forward_failure(fixed) is None


def test_logits_with_spatial_dimensions_are_explained():
    from nasloop.evaluate.stages import StageFailed, check_logits

    with pytest.raises(StageFailed) as raised:
        check_logits(torch.zeros(4, 128, 2, 10), (4, 10), (4, 1, 28, 28))
    assert "got (4, 128, 2, 10): the features were not flattened" in raised.value.failure.message


# What the 1.5B model wrote in a pipelined benchmark run: `conv2` called twice, with 32 and 64 channels.
REUSED_LAYER = """
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc(x.mean((2, 3)))
"""


def test_a_layer_called_with_two_sizes_gets_a_second_layer_for_the_failing_call():
    failure = forward_failure(REUSED_LAYER)
    assert failure is not None
    assert "`conv2` is called more than once in forward, and an earlier call received (4, 32, 28, 28)" in (
        failure.message
    )
    assert "set in_channels" not in failure.message  # 64 would only move the error to the first call
    fixed, change = size_fix(REUSED_LAYER, failure)
    assert change == "conv2_2.in_channels=64, a second conv2 for line 17"
    assert fixed == REUSED_LAYER.replace(
        "        self.pool = nn.MaxPool2d(2)\n",
        "        self.conv2_2 = nn.Conv2d(64, 64, 3, padding=1)\n        self.pool = nn.MaxPool2d(2)\n",
    ).replace(
        "x = self.pool(F.relu(self.conv2(x)))\n        return", "x = self.pool(F.relu(self.conv2_2(x)))\n        return"
    )
    assert forward_failure(fixed) is None


def test_a_second_layer_keeps_keyword_sizes_and_picks_a_free_name():
    code = REUSED_LAYER.replace("nn.Linear(64, num_classes)", "nn.Linear(in_features=64, out_features=num_classes)")
    code = code.replace("self.pool = nn.MaxPool2d(2)", "self.pool = nn.MaxPool2d(2)\n        self.fc_2 = nn.Identity()")
    code = code.replace("nn.Conv2d(32, 64, 3, padding=1)", "nn.Conv2d(32, 32, 3, padding=1)")
    code = code.replace("return self.fc(x.mean((2, 3)))", "x = self.fc(x.mean((2, 3)))\n        return self.fc(x)")
    failure = forward_failure(code)  # conv2 now keeps 32 channels; fc gets 32 features, then its own output
    assert failure is not None
    fixed = size_fix(code, failure)
    assert fixed is not None and fixed[1] == "fc.in_features=32"
    failure = forward_failure(fixed[0])
    assert failure is not None and "`fc` is called more than once" in failure.message
    again = size_fix(fixed[0], failure)
    assert again is not None and again[1] == "fc_3.in_features=10, a second fc for line 20"
    assert "self.fc_3 = nn.Linear(in_features=10, out_features=num_classes)" in again[0]
    assert forward_failure(again[0]) is None


def test_a_layer_fed_a_tensor_of_another_rank_gets_no_second_layer():
    code = REUSED_LAYER.replace("        x = self.pool(F.relu(self.conv2(x)))\n        return", "        return", 1)
    code = code.replace("return self.fc(x.mean((2, 3)))", "x = self.fc(x.mean((2, 3)))\n        return self.conv1(x)")
    failure = forward_failure(code)  # the logits (4, 10) go into conv1 again
    assert failure is not None and "`conv1` is called more than once" in failure.message
    assert size_fix(code, failure) is None


def test_a_layer_called_twice_with_one_size_still_gets_its_size_fix():
    code = REUSED_LAYER.replace("nn.Conv2d(32, 64, 3, padding=1)", "nn.Conv2d(16, 32, 3, padding=1)").replace(
        "nn.Linear(64,", "nn.Linear(32,"
    )
    failure = forward_failure(code)  # the first call fails: both calls receive 32 channels
    assert failure is not None and "set in_channels=32" in failure.message
    fixed = size_fix(code, failure)
    assert fixed is not None and forward_failure(fixed[0]) is None


def test_layers_it_cannot_locate_and_other_failures_are_left_to_the_llm():
    failure = forward_failure(LOOP_BUILT)
    assert failure is not None and "`blocks.0`" in failure.message and "set in_channels=1" in failure.message
    assert size_fix(LOOP_BUILT, failure) is None  # built in a loop: no single constructor call to change
    assert size_fix(FLATTEN_MISMATCH, Failure(FailureKind.BUILD, "set in_features=3136")) is None
    assert size_fix(FLATTEN_MISMATCH, Failure(FailureKind.SHAPE, "mat1 and mat2 shapes cannot be multiplied")) is None
    assert size_fix("def broken(:\n", forward_failure(FLATTEN_MISMATCH)) is None


class ForwardingExecutor(FakeExecutor):
    """FakeExecutor scores, except that code whose forward pass fails gets the evaluator's real message."""

    def submit(self, job, on_progress=None):
        failure = self.failure(job.code)
        if failure is None:
            return super().submit(job)
        self.jobs.append(job)
        future: Future[EvalResult] = Future()
        future.set_result(EvalResult(State.FAILED, failure=failure, stage="forward"))
        return future

    def failure(self, code: str) -> Failure | None:
        return forward_failure(code)


class HoldingExecutor(ForwardingExecutor):
    """A failing forward pass is reported at once; a model that trains is held until the next job arrives
    (or `hold_s` passes), so that the engine proposes again while it "trains"."""

    def __init__(self, hold_s: float = 2.0) -> None:
        super().__init__()
        self.hold_s = hold_s
        self.held: list[tuple[Future[EvalResult], EvalResult]] = []
        self.lock = threading.Lock()

    def submit(self, job, on_progress=None):
        self.release()
        result = super().submit(job).result()
        if result.state is State.FAILED:
            return super().submit(job)
        future: Future[EvalResult] = Future()
        with self.lock:
            self.held.append((future, result))
        timer = threading.Timer(self.hold_s, self.release)
        timer.daemon = True
        timer.start()
        return future

    def release(self) -> None:
        with self.lock:
            held, self.held = self.held, []
        for future, result in held:
            future.set_result(result)


def search(tmp_path, strategy, answers, iterations, *, executor=None, max_stale=0, **options):
    config = build_config(
        {
            "strategy": strategy,
            "seed_model": "none",  # the first answer is the failing model these tests are about
            "strategy_options": options,
            "dataset": {"name": "digits"},
            "budget": {"iterations": iterations},
            "llm": {"backend": "scripted", "model": "scripted"},
            "executor": {"max_stale": max_stale},
        }
    )
    prompts: list[str] = []

    def model(messages):
        prompts.append(messages[-1]["content"])
        if "JSON" in messages[0]["content"] or "JSON" in messages[-1]["content"][-200:]:
            return '{"problem": "too small", "suggestion": "Add a layer."}'
        return fenced(answers.pop(0) if answers else good_net(8))

    backend = ScriptedBackend(answers=model)
    executor = executor or ForwardingExecutor()
    engine = Search.start(config, tmp_path / strategy, backend=backend, executor=executor, progress=False)
    return engine, engine.run(), prompts


TWO_WRONG_SIZES = FLATTEN_MISMATCH.replace("nn.Conv2d(32, 64", "nn.Conv2d(16, 64")


@pytest.mark.parametrize("strategy", ["feedback-memory", "expert-rules"])
def test_a_size_error_is_repaired_without_the_llm_and_not_counted(tmp_path, strategy):
    engine, summary, prompts = search(tmp_path, strategy, [FLATTEN_MISMATCH], iterations=2)
    first, repair = engine.history[0], engine.history[1]
    assert first.state is State.FAILED
    assert {"size_fix": "fc1.in_features=3136", "size_fixes": 1}.items() <= repair.notes.items()
    assert repair.purpose is Purpose.REPAIR and repair.parent == 1
    assert repair.state is State.COMPLETE and repair.llm_call_ids == () and repair.parent_ids == (1,)
    assert summary.iterations == 2 and len(engine.history) == 3
    # the LLM was asked for the first model and the second iteration only (feedback-memory: plus its improver)
    assert len(prompts) == (3 if strategy == "feedback-memory" else 2)


@pytest.mark.parametrize("strategy", ["feedback-memory", "expert-rules"])
def test_a_pipelined_search_proposes_each_size_fix_once(tmp_path, strategy):
    # max_stale 1: the next proposal comes while the fix trains, from a history without the fix's result
    engine, _, _ = search(tmp_path, strategy, [FLATTEN_MISMATCH], iterations=2, executor=HoldingExecutor(), max_stale=1)
    assert [record.notes.get("size_fix") for record in engine.history].count("fc1.in_features=3136") == 1
    after_fix = engine.history[2]
    assert after_fix.staleness == 1 and after_fix.llm_call_ids  # the LLM worked meanwhile, on something new
    assert len({record.hash for record in engine.history}) == len(engine.history)


class AlternatingSizes(ForwardingExecutor):
    """Says `fc1` needs 200 input features when it has 100, and 100 when it has 200."""

    def submit(self, job, on_progress=None):
        self.jobs.append(job)
        declared, wanted = ("100", "200") if "nn.Linear(100," in job.code else ("200", "100")
        message = f"It failed in layer `fc1` = Linear(in_features={declared}, ...): set in_features={wanted}"
        future: Future[EvalResult] = Future()
        future.set_result(EvalResult(State.FAILED, failure=Failure(FailureKind.SHAPE, message), stage="forward"))
        return future


def test_a_fix_that_leads_back_to_failed_code_is_not_made(tmp_path):
    code = FLATTEN_MISMATCH.replace("nn.Linear(64 * 6 * 6, 128)", "nn.Linear(100, 128)")
    engine, _, _ = search(tmp_path, "feedback-memory", [code], iterations=2, executor=AlternatingSizes())
    fixes = [record.notes.get("size_fix") for record in engine.history]
    assert fixes[:2] == [None, "fc1.in_features=200"] and "fc1.in_features=100" not in fixes
    assert not any(record.state is State.DUPLICATE for record in engine.history if "size_fix" in record.notes)


def test_fixes_chain_up_to_the_limit(tmp_path):
    engine, _, _ = search(tmp_path, "feedback-memory", [TWO_WRONG_SIZES], iterations=2)
    assert [record.notes.get("size_fix") for record in engine.history[:3]] == [
        None, "conv2.in_channels=32", "fc1.in_features=3136"
    ]  # fmt: skip
    assert engine.history[2].state is State.COMPLETE and engine.history[2].notes["size_fixes"] == 2
    engine, _, _ = search(tmp_path / "one", "feedback-memory", [TWO_WRONG_SIZES], iterations=2, max_size_fixes=1)
    assert [record.notes.get("size_fix") for record in engine.history] == [None, "conv2.in_channels=32", None]
    assert engine.history[1].state is State.FAILED  # the second wrong size went back to the LLM's loop


@pytest.mark.parametrize("strategy", ["feedback-memory", "expert-rules"])
def test_an_answer_repeating_fixed_code_is_re_asked_about_the_fixed_model(tmp_path, strategy):
    engine, _, prompts = search(tmp_path, strategy, [FLATTEN_MISMATCH, FLATTEN_MISMATCH], iterations=2)
    repeat = engine.history[2]  # 1 failed, 2 its fix, 3 the LLM's second answer: candidate 1 again
    # its fix is candidate 2, which trained: evaluating it again would teach nothing, so the LLM is asked again
    assert repeat.notes["repeat_of"] == 1 and "size_fix" not in repeat.notes
    assert repeat.state is State.COMPLETE and repeat.code.strip() == good_net(8).strip()  # the re-ask's answer
    re_ask = next(prompt for prompt in prompts if "same model as candidate" in prompt)
    assert "This is (once its layer sizes are fixed) the same model as candidate 2, which was evaluated" in re_ask
    if strategy == "feedback-memory":  # it has other changes to offer, and asks for one of them
        from nasloop.strategies.feedback_memory import IDEAS

        assert repeat.notes["asked_instead"] in IDEAS
        assert f"Make this change instead: {repeat.notes['asked_instead']}." in re_ask
    else:
        assert "asked_instead" not in repeat.notes and "Make the change you were asked for" in re_ask


def test_a_repeat_of_a_fix_chains_first_link_is_fixed_to_new_code_without_the_llm():
    from nasloop.spaces.canonical import canonical_hash
    from nasloop.strategies.code_writer import RepairOptions, _known_fixes

    first = forward_failure(TWO_WRONG_SIZES)
    middle, change = size_fix(TWO_WRONG_SIZES, first)
    assert change == "conv2.in_channels=32"
    entry = {"id": 1, "failure": first.to_dict(), "score": None}
    codes = EvaluatedCodes({canonical_hash(TWO_WRONG_SIZES): entry})
    codes.entries[canonical_hash(middle)] = {"id": 2, "failure": forward_failure(middle).to_dict(), "score": None}
    code, fixes, left = _known_fixes(TWO_WRONG_SIZES, entry, codes, RepairOptions())
    assert fixes == ["conv2.in_channels=32", "fc1.in_features=3136"] and left is None
    assert forward_failure(code) is None
    code, fixes, left = _known_fixes(TWO_WRONG_SIZES, entry, codes, RepairOptions(max_size_fixes=1))
    assert fixes == ["conv2.in_channels=32"] and left["id"] == 2  # the limit: still a repeat of candidate 2


def test_paper_style_makes_no_mechanical_repairs(tmp_path):
    engine, _, _ = search(tmp_path, "feedback-memory", [FLATTEN_MISMATCH], iterations=2, prompt_style="paper")
    assert not any("size_fix" in record.notes for record in engine.history)
    engine, _, _ = search(tmp_path / "off", "expert-rules", [FLATTEN_MISMATCH], iterations=2, fix_sizes=False)
    assert not any("size_fix" in record.notes for record in engine.history)


IMPROVED_NET = """
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class ImprovedNet(nn.Module):  # "ImprovedNet" stays in comments and strings
    def __init__(self, in_shape, num_classes):
        super(ImprovedNet, self).__init__()
        self.stem = nn.Conv2d(in_shape[0], 8, 3, padding=1)
        self.block = Block(8)
        self.head = nn.Linear(8, num_classes)
        self.label = "ImprovedNet"

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))
"""


def test_the_one_network_class_is_renamed_to_net():
    renamed, old = net_name_fix(IMPROVED_NET)
    assert old == "ImprovedNet"
    assert 'class Net(nn.Module):  # "ImprovedNet" stays' in renamed and "super(Net, self)" in renamed
    assert 'self.label = "ImprovedNet"' in renamed and "class Block(nn.Module)" in renamed
    assert build(renamed)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert net_name_fix(renamed) is None  # defines Net already
    two = IMPROVED_NET + "\n\nclass OtherNet(nn.Module):\n    def __init__(self, a, b):\n        super().__init__()\n"
    assert net_name_fix(two) is None  # which one is the network is not clear
    assert net_name_fix("def broken(:\n") is None


def test_feedback_memory_renames_the_class_and_paper_style_does_not(tmp_path):
    engine, _, _ = search(tmp_path, "feedback-memory", [IMPROVED_NET], iterations=1)
    assert engine.history[0].notes["renamed_class"] == "ImprovedNet" and engine.history[0].state is State.COMPLETE
    engine, _, _ = search(tmp_path / "paper", "feedback-memory", [IMPROVED_NET], iterations=1, prompt_style="paper")
    assert engine.history[0].state is State.FAILED and engine.history[0].failure.kind is FailureKind.BUILD


# What the 1.5B wrote three times in one benchmark run: `bn1` assigned again for the classifier's batch norm.
REASSIGNED_LAYER = """
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 14 * 14, 32)
        self.bn1 = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.bn1(self.fc1(x.flatten(1))))
        return self.fc2(x)
"""


def test_a_layer_name_assigned_twice_is_split_between_its_calls():
    failure = forward_failure(REASSIGNED_LAYER)
    assert failure is not None and "It failed in layer `bn1` = BatchNorm1d" in failure.message
    fixed, change = size_fix(REASSIGNED_LAYER, failure)
    assert change == "bn1_2: `self.bn1` was assigned 2 times (calls on line 18)"
    assert fixed == REASSIGNED_LAYER.replace("self.bn1 = nn.BatchNorm1d", "self.bn1_2 = nn.BatchNorm1d").replace(
        "F.relu(self.bn1(self.fc1", "F.relu(self.bn1_2(self.fc1"
    )
    assert forward_failure(fixed) is None


def test_a_layer_assigned_twice_alike_or_called_a_different_number_of_times_is_not_split():
    alike = REASSIGNED_LAYER.replace("nn.BatchNorm1d(32)", "nn.BatchNorm2d(8)")
    fewer_calls = REASSIGNED_LAYER.replace("F.relu(self.bn1(self.fc1(x.flatten(1))))", "F.relu(self.fc1(x.flatten(1)))")
    for code in (alike, fewer_calls):
        failure = Failure(FailureKind.SHAPE, "the forward pass raised ... It failed in layer `bn1` = BatchNorm2d(8)")
        assert size_fix(code, failure) is None


def logits_failure(code: str) -> Failure | None:
    """The evaluator's failure for what `forward` of `code` returns (`check_logits`), or None."""
    from nasloop.evaluate.stages import StageFailed, check_logits

    with torch.no_grad():
        logits = build(code)(torch.zeros(4, 1, 28, 28))
    try:
        check_logits(logits, (4, 10), (4, 1, 28, 28))
    except StageFailed as failed:
        return failed.failure
    return None


LOGITS_DROPPED = FLATTEN_MISMATCH.replace("64 * 6 * 6", "3136").replace(
    "        return self.fc2(F.relu(self.fc1(x.flatten(1))))\n",
    "        x = self.fc2(F.relu(self.fc1(x.flatten(1))))  # (B, 10)\n",
)
NONE_RETURNED = Failure(
    FailureKind.SHAPE, "forward must return one tensor of logits with shape (4, 10); it returned NoneType"
)


def test_a_forward_that_drops_its_logits_gets_a_return():
    # What the 1.5B model wrote in the README main job: the classifier's output assigned, never returned.
    failure = logits_failure(LOGITS_DROPPED)
    assert failure is not None and failure.message == NONE_RETURNED.message
    fixed, change = size_fix(LOGITS_DROPPED, failure)
    assert change == "`return x` added at the end of forward (line 20)"
    assert fixed == LOGITS_DROPPED + "        return x\n"
    assert logits_failure(fixed) is None
    unterminated = LOGITS_DROPPED.rstrip("\n")
    assert size_fix(unterminated, failure)[0] == unterminated + "\n        return x\n"


class LogitsExecutor(ForwardingExecutor):
    """ForwardingExecutor that also fails code whose forward returns no logits, as the evaluator words it."""

    def failure(self, code: str) -> Failure | None:
        return forward_failure(code) or logits_failure(code)


def test_a_return_added_to_an_edit_that_only_dropped_it_gives_the_parent_back_untrained(tmp_path):
    # The README main job's 1.5B turned `return self.fc2(...)` into `x = self.fc2(...)` and nothing else; the
    # added `return x` makes the parent again, which is recorded as its duplicate rather than trained twice.
    working = LOGITS_DROPPED.replace("        x = self.fc2(", "        return self.fc2(")
    assert logits_failure(working) is None
    executor = LogitsExecutor()
    engine, _, _ = search(tmp_path, "feedback-memory", [working, LOGITS_DROPPED], iterations=3, executor=executor)
    parent, dropped, repair = engine.history[:3]
    assert parent.state is State.COMPLETE and dropped.state is State.FAILED
    assert repair.purpose is Purpose.REPAIR and repair.notes["size_fix"].startswith("`return x` added")
    assert repair.state is State.DUPLICATE and repair.duplicate_of == parent.id
    assert repair.code != parent.code
    assert [job.code for job in executor.jobs].count(parent.code) == 1
    assert repair.code not in [job.code for job in executor.jobs]


def test_a_forward_with_a_return_or_ending_otherwise_gets_no_added_return():
    conv2 = "        x = self.pool(F.relu(self.conv2(x)))\n"
    early_return = LOGITS_DROPPED.replace(conv2, "        if x is None:\n            return x\n")
    no_assignment = LOGITS_DROPPED.replace("x = self.fc2(", "print(self.fc2(").replace("(1))))", "(1)))))")
    tuple_target = LOGITS_DROPPED.replace("x = self.fc2(", "x, y = self.fc2(").replace("(1))))", "(1)))), 0")
    for code in (early_return, no_assignment, tuple_target):
        assert size_fix(code, NONE_RETURNED) is None


# What the 1.5B model wrote in the 20-iteration benchmark: doubled widths, 4.8M parameters for a 2M limit.
TOO_WIDE = """
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        channels, height, width = in_shape
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, out_channels=128, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(num_features=128)
        self.conv3 = nn.Conv2d(128, 256, kernel_size=3, padding=1)
        self.bn3 = nn.BatchNorm2d(256)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(256 * (height // 8) * (width // 8), 128)
        self.bn4 = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))  # (B, 64, H/2, W/2)
        x = self.pool(F.relu(self.bn2(self.conv2(x))))  # (B, 128, H/4, W/4)
        x = self.pool(F.relu(self.bn3(self.conv3(x))))  # (B, 256, H/8, W/8)
        x = x.view(-1, 256 * 3 * 3)  # (B, 2304)
        return self.fc2(F.relu(self.bn4(self.fc1(x))))  # (B, num_classes)
"""


def parameters(code: str) -> int:
    return sum(parameter.numel() for parameter in build(code).parameters())


def over_the_limit(code: str, limit: int) -> Failure:
    count = parameters(code)
    assert count > limit
    return Failure(FailureKind.BUDGET, f"the network has {count:,} parameters; the limit is {limit:,}. Make it smaller")


def test_a_network_over_the_parameter_limit_gets_its_layer_widths_halved():
    before = parameters(TOO_WIDE)
    fixed, change = size_fix(TOO_WIDE, over_the_limit(TOO_WIDE, 200_000))
    assert change == f"layer widths halved ({before:,} parameters, the limit is 200,000)"
    changed = [(old, new) for old, new in zip(TOO_WIDE.splitlines(), fixed.splitlines(), strict=True) if old != new]
    assert len(changed) == 10  # the nine layers with written-out widths and the view; comments stay
    assert "nn.Conv2d(channels, 32, kernel_size=3, padding=1)" in fixed and "nn.Linear(64, num_classes)" in fixed
    assert "out_channels=64" in fixed and "num_features=64" in fixed and "x.view(-1, 128 * 3 * 3)" in fixed
    assert "kernel_size=3, padding=1" in fixed and "nn.MaxPool2d(2)" in fixed  # not widths
    assert forward_failure(fixed) is None and parameters(fixed) < before / 3


def test_widths_from_names_or_too_small_to_halve_are_left_alone():
    named = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""
    assert size_fix(named, over_the_limit(named, 1000)) is None
    assert size_fix(named, Failure(FailureKind.BUDGET, "the network's FLOPs exceed the limit")) is None
