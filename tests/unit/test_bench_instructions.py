"""bench/instructions.py, the instruction-count harness `make test` runs: what it measures and when it
fails. (The counting itself, under valgrind, is `make bench-instructions`.)"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def harness() -> Iterator[Any]:
    sys.path.insert(0, str(BENCH))
    try:
        import instructions
        import measured

        yield instructions, measured
    finally:
        sys.path.remove(str(BENCH))


def _result(**counts: int) -> dict[str, Any]:
    return {
        "python": "3.11.7",
        "form": "compiled",
        "cpu": "Test CPU",
        "pods": 20,
        "counts": counts,
        "gc": {name: [0, 0, 0] for name in counts},
    }


RECORDED = {"Test CPU": {"compiled": {"counts": {"decide": 400_000, "request": 800_000}}}}


@pytest.mark.parametrize(
    ("decide", "ok"),
    [
        pytest.param(400_000, True, id="same"),
        pytest.param(300_000, True, id="lower"),
        pytest.param(420_000, True, id="5%-above"),
        pytest.param(420_400, False, id="5.1%-above"),
    ],
)
def test_fails_only_when_a_count_rises_more_than_5_percent(harness: Any, decide: int, ok: bool) -> None:
    instructions, _ = harness
    lines, passed = instructions.report(_result(decide=decide, request=800_000), RECORDED)
    assert passed is ok
    assert ("FAIL" in "\n".join(lines)) is not ok
    assert "Python 3.11.7, compiled engine, CPU 'Test CPU'" in lines[0]


def test_a_cpu_model_or_form_without_figures_is_printed_and_said(harness: Any) -> None:
    instructions, _ = harness
    unknown = {**_result(decide=999_999, request=999_999), "cpu": "Other CPU"}
    lines, passed = instructions.report(unknown, RECORDED)
    assert passed
    assert any("1000.0k" in line for line in lines)
    assert "no figures recorded for CPU 'Other CPU', compiled engine" in lines[-1]
    interpreted = {**_result(decide=999_999, request=999_999), "form": "interpreted"}
    assert "interpreted engine" in instructions.report(interpreted, RECORDED)[0][-1]


def test_totals_are_read_from_a_callgrind_dump(harness: Any, tmp_path: Path) -> None:
    instructions, _ = harness
    dump = tmp_path / "cg.out.1"
    dump.write_text("version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfn=(1) main\n0 5\nsummary: 1234567\n")
    assert instructions._totals(dump) == 1234567


def test_every_recorded_figure_names_a_measurement(harness: Any) -> None:
    instructions, _ = harness
    recorded = orjson.loads((BENCH / "instructions.json").read_bytes())
    assert recorded, "bench/instructions.json records no CPU model"
    for forms in recorded.values():
        for figures in forms.values():
            assert set(figures["counts"]) == set(instructions.FIGURES)


def test_the_pods_are_distinct_realistic_and_the_same_on_every_run(harness: Any) -> None:
    _, measured = harness
    bodies = measured.reviews(3)
    assert bodies == measured.reviews(3)
    requests = [orjson.loads(body)["request"] for body in bodies]
    for key in (
        lambda r: r["uid"],
        lambda r: r["object"]["metadata"]["generateName"],
        lambda r: r["object"]["metadata"]["labels"]["pod-template-hash"],
        lambda r: r["object"]["metadata"]["ownerReferences"][0]["uid"],
    ):
        assert len({key(r) for r in requests}) == 3
    assert 7_000 < len(bodies[0]) < 8_500  # the benchmark's 7.7 KB review
    assert len(requests[0]["object"]["spec"]["containers"]) == 3


def test_each_measurement_does_what_its_figure_says(harness: Any) -> None:
    _, measured = harness
    found = dict(measured.measurements(2))
    assert list(found) == ["decide", "decide_injected", "request"]
    first = found["decide"]()
    injected = ("wait-for-db", "log-shipper")
    assert [(v.outcome, v.result.injected) for v in first] == [("patched", injected)] * 2
    again = found["decide_injected"]()
    assert [(v.outcome, v.result.patch, v.result.warnings) for v in again] == [("allowed", [], ())] * 2
    responses = [orjson.loads(body)["response"] for body in found["request"]()]
    assert [r["allowed"] and r["patchType"] for r in responses] == ["JSONPatch"] * 2
    assert responses[0]["uid"] != responses[1]["uid"]


def test_the_cpu_key_tells_apart_masked_models_with_different_dispatch(harness: Any) -> None:
    instructions, _ = harness
    block = (
        "processor\t: {n}\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
        "stepping\t: 1\nflags\t\t: {flags}\n"
    )
    wide = block.format(n=0, flags="fpu sse2 avx2 avx512f erms") + "\n" + block.format(n=1, flags="fpu")
    narrow = block.format(n=0, flags="fpu sse2 avx2 erms")
    assert instructions.cpu_model(wide) == "AMD EPYC (25/17/1; avx2 avx512f erms)"
    assert instructions.cpu_model(narrow) == "AMD EPYC (25/17/1; avx2 erms)"
    assert instructions.cpu_model("") == f"{instructions.platform.processor() or 'unknown'} (?/?/?; )"
