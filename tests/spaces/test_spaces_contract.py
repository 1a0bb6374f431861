"""Contract tests run against every registered structured space (a new space is tested by registering it)."""

from __future__ import annotations

import json
import random
import re

import jsonschema
import pytest
import torch

from nasloop.registry import spaces
from nasloop.spaces.base import SearchSpace
from nasloop.spaces.open_code import check_code

SPACE_NAMES = spaces.names()
SHAPES = [(1, 28, 28), (3, 32, 32)]
GARBAGE = ["", "   ", "Net", "|", "+", "((", "SuperConvK3BNRELU(", "|none~0|+", "🙂", "a" * 500]


def build(code: str, in_shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    """Execute a rendered module and construct its Net, as the evaluator does."""
    namespace: dict[str, object] = {}
    exec(compile(code, "<rendered>", "exec"), namespace)
    net_class = namespace["Net"]
    assert isinstance(net_class, type)
    net = net_class(in_shape, num_classes)
    assert isinstance(net, torch.nn.Module)
    return net


@pytest.fixture(params=SPACE_NAMES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    created = spaces.get(request.param)()
    assert isinstance(created, SearchSpace)
    return created


def test_both_published_spaces_are_registered() -> None:
    assert {"nb201", "macro"} <= set(SPACE_NAMES)
    for name in SPACE_NAMES:
        assert spaces.get(name).name == name


def test_samples_are_valid_canonical_and_reproducible(space: SearchSpace) -> None:
    first = [space.sample(random.Random(seed)) for seed in range(40)]
    again = [space.sample(random.Random(seed)) for seed in range(40)]
    assert first == again
    assert len(set(first)) > 30, "sampling should explore the space"
    for arch in first:
        assert space.validate(arch) is None, arch
        assert space.canonical(arch) == arch, "samples come in canonical form"
        assert space.niche(arch) in space.niches()


def test_canonical_is_idempotent_and_ignores_whitespace(space: SearchSpace) -> None:
    rng = random.Random(1)
    for _ in range(30):
        arch = space.mutate(space.sample(rng), rng)
        canonical = space.canonical(arch)
        assert space.canonical(canonical) == canonical
        spaced = " \n".join(re.split(r"(?<=[|)+])", arch))
        assert space.canonical(spaced) == canonical


def test_mutation_and_crossover_stay_valid(space: SearchSpace) -> None:
    rng = random.Random(2)
    population = [space.sample(rng) for _ in range(10)]
    for _ in range(60):
        parent, other = rng.sample(population, 2)
        child = space.mutate(parent, rng)
        assert space.validate(child) is None, child
        assert space.canonical(child) != space.canonical(parent), "a mutation changes the network"
        mixed = space.crossover(parent, other, rng)
        assert space.validate(mixed) is None, mixed
        population.append(rng.choice([child, mixed]))


def test_validate_explains_garbage_and_never_raises(space: SearchSpace) -> None:
    for text in GARBAGE:
        message = space.validate(text)
        assert isinstance(message, str) and len(message) > 20, text
        assert space.canonical(text) == "".join(text.split())


def test_json_schema_pattern_accepts_samples_and_rejects_garbage(space: SearchSpace) -> None:
    schema = space.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    rng = random.Random(3)
    for _ in range(30):
        arch = space.sample(rng)
        assert validator.is_valid({"architecture": arch}), arch
    for text in GARBAGE:
        assert not validator.is_valid({"architecture": text}), text
    assert not validator.is_valid({"arch": space.sample(rng)})


def test_json_schema_converts_to_a_llama_cpp_grammar(space: SearchSpace) -> None:
    """The schema goes to grammar converters as is: no `(?:` groups (llama.cpp asserts on them)."""
    schema = space.json_schema()
    pattern = schema["properties"]["architecture"].get("pattern", "")
    assert "(?" not in pattern
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    grammar = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    assert "architecture" in grammar


def test_describe_teaches_the_format_with_a_valid_example(space: SearchSpace) -> None:
    text = space.describe()
    examples = [line.split(":", 1)[-1].strip() for line in text.splitlines() if line.startswith(("|", "Example"))]
    assert examples, "the description shows an example"
    assert all(space.validate(example) is None for example in examples)
    assert len(text) < 8000, "the description is compact enough for a prompt"


def test_rendered_samples_pass_the_static_check_and_run(space: SearchSpace) -> None:
    rng = random.Random(4)
    for index in range(6):
        arch = space.sample(rng)
        for in_shape in SHAPES:
            num_classes = 10 if index % 2 else 7
            code = space.render(arch, in_shape, num_classes)
            assert check_code(code) is None, check_code(code)
            net = build(code, in_shape, num_classes)
            assert (
                sum(parameter.numel() for parameter in net.parameters())
                == space.cost(arch, in_shape, num_classes).params
            )
            with torch.no_grad():
                logits = net(torch.randn(2, *in_shape))
            assert logits.shape == (2, num_classes), arch
            assert torch.isfinite(logits).all()


def test_render_refuses_malformed_architectures(space: SearchSpace) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        space.render("not an architecture", (3, 32, 32), 10)
