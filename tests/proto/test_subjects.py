import pytest

from cairn.errors import InvalidName
from cairn.proto import subjects

HOSTILE = ["", "a.b", "a*", ">", "a b", "a\tb", "x" * 65, "ws>", "é", "a/b", "$JS", None, 7]


@pytest.mark.parametrize("value", HOSTILE)
def test_bad_tokens_are_refused(value: object) -> None:
    with pytest.raises(InvalidName):
        subjects.validate_token(value)


@pytest.mark.parametrize("value", ["a", "A-b_9", "x" * 64])
def test_good_tokens_pass(value: str) -> None:
    assert subjects.validate_token(value) == value


def test_subjects_are_built_from_validated_tokens() -> None:
    assert subjects.event("ws", "run", "r1") == "cairn.ev.ws.run.r1"
    assert subjects.command("ws", "run.start") == "cairn.cmd.ws.run.start"
    assert subjects.query("ws", "run.list") == "cairn.q.ws.run.list"
    with pytest.raises(InvalidName):
        subjects.event("ws", "run", "r1.>")
    with pytest.raises(InvalidName):
        subjects.command("ws", "run..start")


def test_names_map_to_tokens_without_collisions() -> None:
    assert subjects.name_to_id("mnist") == "mnist"
    dotted = subjects.name_to_id("mnist.v2 (fast)")
    assert subjects.validate_token(dotted) == dotted
    assert dotted.startswith("n-")
    assert subjects.name_to_id("mnist.v2 (fast)") == dotted
    # a raw name that looks like a hashed id is hashed too, so it cannot alias another name
    assert subjects.name_to_id(dotted) != dotted
    assert subjects.name_to_id("a.b") != subjects.name_to_id("a_b")
    for bad in ["", "x" * 257, "tab\there", "nul\x00"]:
        with pytest.raises(InvalidName):
            subjects.name_to_id(bad)
