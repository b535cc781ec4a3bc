"""Every example runs as a new user would run it (``python examples/X.py --data DIR``) and prints what it claims.

Each example fits a router on the bundled MMLU-Pro data and replays real LLMs, so these tests are slow. Every example
embeds ALL 10,279 MMLU-Pro prompts with the real embedder, which reads the vectors shipped for them (no encoder run).

Beyond "exit 0", each test reads the printed tables back: the comparison table's rows, the share of calls per member
(which must add up to 100 %), and the example's own claims (a verdict per budget, a tool call's result...).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 1800  # a hang guard only: a cold embedding cache alone takes ~11 minutes on 2 cores

POOL = [  # examples/_mmlu_pro.py POOL: the ten replayed real LLMs
    "gemini-1.5-pro-002", "Meta-Llama-3_1-70B-Instruct", "jamba-1.5-large", "Qwen1.5-72B-Chat", "DeepSeek-Coder-V2",
    "Mixtral-8x7B-Instruct-v0.1", "Meta-Llama-3_1-8B-Instruct", "gemini-1.5-flash-002", "mathstral-7B",
    "Phi-3-mini-4k-instruct",
]
TABLE_HEADER = re.compile(r"^policy\s+quality\s+mean cost \(billion_active_params\)\s+total cost", re.M)
SETUP_LINE = re.compile(
    r"^\[setup\] 10279 MMLU-Pro prompts × 29 LLMs .* 6000 training prompts, 500 probes, 3620 held out", re.M
)


def run_example(name: str, cwd: Path, *args: str, setup_line: bool = True) -> str:
    """Run ``examples/<name>.py *args`` as a new user would, from ``cwd`` (an empty folder: the data must come from
    the package, not from a folder beside the checkout); assert it exits 0 and return what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "UNIROUTE_MMLU_PRO"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, env=env,
    )
    assert proc.returncode == 0, (
        f"{name}.py exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    )
    if setup_line:
        assert SETUP_LINE.search(proc.stdout), proc.stdout
    return proc.stdout


def shares_after(text: str, heading: str) -> dict[str, float]:
    """The "share of calls" block printed under ``heading`` (a line starting with it): member -> percent."""
    start = text.index(heading)
    block = text[start:].split("\n", 1)[1]
    shares = {}
    for line in block.splitlines():
        m = re.match(r"^  (\S+)\s+([\d.]+)%\s+quality on its calls [\d.]+$", line)
        if not m:
            break
        shares[m.group(1)] = float(m.group(2))
    return shares


def table_row(text: str, policy: str) -> tuple[float, float]:
    """(quality, mean cost) of the first table row of ``policy``."""
    m = re.search(rf"^{re.escape(policy)}\s+([\d.]+)\s+([\d.]+)\s+[\d.]+", text, re.M)
    assert m, f"no table row for {policy!r} in:\n{text}"
    return float(m.group(1)), float(m.group(2))


def check_quickstart_budget(text: str, policy: str, budget: str) -> None:
    """A quickstart's table at one budget: router, always-most-accurate and always-cheapest rows, shares over pool
    members adding up to 100 %, the router no dearer than the most accurate member, and a verdict line."""
    quality, cost = table_row(text, f"{policy} budget={budget}")
    best_quality, best_cost = table_row(text, "always gemini-1.5-pro-002")  # the pool's most accurate member
    table_row(text, "always Phi-3-mini-4k-instruct")  # and its cheapest
    assert 0.0 < quality <= 1.0 and cost < best_cost
    shares = shares_after(text, f"share of calls of {policy} budget={budget} (400 calls)")
    assert shares and set(shares) <= set(POOL)
    assert sum(shares.values()) == pytest.approx(100.0, abs=0.1 * len(shares))
    verdict = re.search(rf"^  budget {budget}: ([+-][\d.]+) points at ([\d.]+)% lower cost — (.+)$", text, re.M)
    assert verdict, text
    gap = float(verdict.group(1))
    assert gap == pytest.approx(100 * (quality - best_quality), abs=0.011)  # qualities are printed to 4 places
    assert verdict.group(3).startswith("NOT within 1 point" if gap < -1.0 else "within 1 point")


@pytest.mark.slow
def test_langchain_quickstart(tmp_path):
    out = run_example("langchain_quickstart", tmp_path)
    assert "[pool] 10 members added with one add_model call each" in out
    assert len(TABLE_HEADER.findall(out)) == 2
    assert "400 held-out questions through prompt | ChatUniRoute | parser" in out
    for budget in ("20", "80"):
        check_quickstart_budget(out, "ChatUniRoute", budget)


@pytest.mark.slow
def test_llamaindex_quickstart(tmp_path):
    out = run_example("llamaindex_quickstart", tmp_path)
    assert re.search(r"^\[pool\] 10 replayed real LLMs .* added with one add_model call each", out, re.M)
    assert len(TABLE_HEADER.findall(out)) == 2
    assert "400 held-out questions through Settings.llm.complete" in out
    for budget in ("20", "80"):
        check_quickstart_budget(out, "UniRouteLLM", budget)
    # the query engine answered three questions with a routed pool member's recorded answer
    answers = re.findall(
        r"^  \[\w[\w ]*\] → (\S+): '(.+)' \(gold ([A-J]), (right|wrong); 2 notes retrieved\)$", out, re.M
    )
    assert len(answers) == 3 and all(member in POOL for member, *_ in answers)
    for _, answer, gold, verdict in answers:
        letter = re.fullmatch(r"The answer is \(([A-J])\)\.", answer)
        if letter:  # a recorded letter (a blank record is replayed as a refusal, graded wrong)
            assert (letter.group(1) == gold) == (verdict == "right")
    # the agent's tool call went through the router to the scripted tool-capable member, and it says so
    assert "a SCRIPTED MockFunctionCallingLLM, not a real model" in out
    assert "tool calls: [('multiply', {'a': 17, 'b': 23}, '391')]" in out
    assert "answer: The area is 391 square metres." in out
    assert "routed steps: [('scripted-tool-caller', []), ('scripted-tool-caller', [])]" in out


@pytest.mark.slow
def test_budget(tmp_path):
    out = run_example("budget", tmp_path)
    assert "[pool] profiled 10 replayed LLMs on 500 probes" in out
    assert re.search(r"^\s+budget\s+λ\s+cost on probes\s+realised cost\s+realised/budget\s+accuracy$", out, re.M)
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)×\s+([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["5", "10", "20", "40", "80"]
    lams = [float(r[1]) for r in rows]
    realised = [float(r[3]) for r in rows]
    assert lams == sorted(lams, reverse=True)  # a larger budget prices cost lower
    assert realised == sorted(realised)  # ... and spends more
    for budget, *_, cost, ratio, _acc in rows:
        assert float(ratio) == pytest.approx(float(cost) / float(budget), abs=0.006)
    within = sum(float(cost) <= float(budget) for budget, _, _, cost, _, _ in rows)
    assert f"realised mean cost within budget for {within} of 5 budgets" in out


@pytest.mark.slow
def test_add_a_new_model(tmp_path):
    out = run_example("add_a_new_model", tmp_path)
    assert re.search(r"^== before: 9 members, λ=[\d.]+ \(calibrated for a budget of 20\) ==$", out, re.M)
    before = shares_after(out, "share of calls of UniRoute")
    assert "gemini-1.5-flash-002" not in before and set(before) <= set(POOL)
    assert re.search(r"^== add_profiled_model\('gemini-1.5-flash-002', cost=8.13\): [\d.]+s for 500 probes", out, re.M)
    assert len(TABLE_HEADER.findall(out)) == 2
    after = shares_after(out, "share of calls of after, same λ=")
    assert after.get("gemini-1.5-flash-002", 0.0) > 0.0
    assert sum(after.values()) == pytest.approx(100.0, abs=0.1 * len(after))
    m = re.search(r"^gemini-1.5-flash-002 now serves ([\d.]+)% of calls at the same λ", out, re.M)
    assert m and float(m.group(1)) == after["gemini-1.5-flash-002"]


@pytest.mark.slow
def test_your_own_pool(tmp_path):
    """Three replayed real LLMs built into a routed chat model with from_models (pretrained router, no data of the
    user's own), then a chain over held-out questions."""
    out = run_example("your_own_pool", tmp_path, "--n", "120", setup_line=False)
    pool = re.search(r"^\[pool\] \[(.*)\] profiled on (\d+) pretrained probes \(failures: none\)", out, re.M)
    assert pool, out
    assert pool.group(2) == "300"
    assert "120 held-out questions through prompt | ChatUniRoute | parser, budget 30" in out
    assert re.search(r"^example answer: 'The answer is \([A-J]\)\.'|^example answer: 'I am not able", out, re.M), out
    routed = re.search(r"^routed\s+accuracy ([\d.]+)\s+mean cost ([\d.]+)", out, re.M)
    always = re.search(r"^always gemini-1.5-pro-002\s+accuracy ([\d.]+)\s+mean cost ([\d.]+)", out, re.M)
    assert routed and always, out
    assert float(routed.group(2)) < float(always.group(2))  # a budget of 30 routes most calls away from the dearest
    assert 0.3 < float(routed.group(1)) <= 1.0
    shares = dict(re.findall(r"^  (\S+)\s+([\d.]+)%$", out, re.M))
    assert abs(sum(map(float, shares.values())) - 100.0) < 0.5 and len(shares) >= 2
