"""The section ``porcupine``: our linearizability checker on Porcupine's own test histories.

Porcupine's test data (103 Jepsen etcd register histories and 6 key-value histories, with
its expected verdicts; ``data/porcupine/``, MIT-licensed, see its ``LICENSE.md``) is loaded
into `trioserver.testing.History` objects with models that follow Porcupine's
``porcupine_test.go``:

* etcd (``parseJepsenLog``, ``etcdModel``): one register, ``read`` / ``write(v)`` /
  ``cas(a, b)``; ``:info`` (never answered) and a timed-out read are unknown outcomes, a
  ``:fail`` on a cas is a definite ``False``.
* kv (``parseKvLog``, ``kvModel``): ``get(k)`` / ``put(k, v)`` / ``append(k, v)``, one string
  per key, partitioned by key.

Each file is checked with `check_linearizable`'s default settings; the section reports the
verdicts against Porcupine's, the total and worst time, the peak memory the check allocates
(tracemalloc, in a second pass), and, if ``go`` is on PATH, Porcupine's own checker timed on
the same files in the same run (``porcupine_go/``, built once into a temporary directory,
``GOMAXPROCS=1``). Each file's time is its best of 3 runs (``--quick``: ours, 1), wall clock
and CPU, for both; the time targets are judged by CPU time (wall clock shown), as on a
shared machine the wall clock measures the other tenants too.

    python -m benchmarks --only porcupine
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from trioserver.testing import (
    History,
    Inconclusive,
    Linearizable,
    Model,
    Operation,
    Result,
    Returned,
    Unknown,
    Verdict,
    check_linearizable,
)

DATA = Path(__file__).resolve().parent / "data" / "porcupine"
GO_SOURCE = Path(__file__).resolve().parent / "porcupine_go"

#: Issue 16's targets: total time at most this many times Porcupine's, worst file under 1 s.
TOTAL_TARGET = 2.0
WORST_TARGET = 1.0


class EtcdModel(Model[int | None]):
    """Porcupine's ``etcdModel``: a register, ``None`` until written."""

    def initial(self) -> int | None:
        return None

    def apply(self, state: int | None, operation: Operation) -> tuple[int | None, Result]:
        if operation.name == "read":
            return state, Returned(state)
        if operation.name == "write":
            return operation.args[0], Returned(None)
        expected, new = operation.args  # cas
        if state == expected:
            return new, Returned(True)
        return state, Returned(False)

    def fingerprint(self, state: int | None) -> Hashable:
        return state


class KvModel(Model[str]):
    """Porcupine's ``kvModel``: one key's string (the history is partitioned by key)."""

    def initial(self) -> str:
        return ""

    def apply(self, state: str, operation: Operation) -> tuple[str, Result]:
        if operation.name == "get":
            return state, Returned(state)
        if operation.name == "put":
            return operation.args[1], Returned(None)
        return state + operation.args[1], Returned(None)  # append

    def fingerprint(self, state: str) -> Hashable:
        return state


def by_key(operation: Operation) -> Hashable:
    """The kv histories' partition: the key."""
    return operation.args[0]


_JEPSEN = re.compile(r"^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)\s+(.*)$")


def load_etcd(path: Path) -> History:
    """A Jepsen etcd log as a `History` (Porcupine's ``parseJepsenLog``); times are line numbers.

    Args:
      path: The log.

    Returns:
      The history: ``read()``, ``write(v)``, ``cas(a, b)``; ``:info`` operations and
      timed-out reads end `Unknown`.
    """
    history = History(path.stem)
    pending: dict[str, Any] = {}
    line_number = 0
    for line_number, line in enumerate(path.read_text().splitlines()):
        found = _JEPSEN.match(line)
        if found is None:
            continue
        process, kind, name, value = found.groups()
        if kind == "invoke":
            if name == "read" and value == "nil":
                operation = Operation("read")
            elif name == "write" and value.isdigit():
                operation = Operation("write", (int(value),))
            elif name == "cas" and (pair := re.fullmatch(r"\[(\d+)\s+(\d+)\]", value)):
                operation = Operation("cas", (int(pair[1]), int(pair[2])))
            else:
                continue
            pending[process] = history.invoke(f"p{process}", operation, at=line_number)
            continue
        entry = pending.get(process)
        if entry is None or kind == "info":  # :info: never answered, unknown (below)
            continue
        if kind == "ok" and name == "read":
            ending: Returned | Unknown = Returned(None if value == "nil" else int(value))
        elif kind == "ok" and name == "write":
            ending = Returned(None)
        elif kind in ("ok", "fail") and name == "cas":
            ending = Returned(kind == "ok")
        elif kind == "fail" and name == "read" and value == ":timed-out":
            ending = Unknown("timed out")
        else:
            continue
        del pending[process]
        history.end(entry, ending, at=line_number)
    for entry in pending.values():
        history.end(entry, Unknown(":info, never answered"), at=line_number + 1)
    return history


_KV = re.compile(
    r'\{:process (\d+), :type :(invoke|ok), :f :(get|put|append), :key "(.*?)", '
    r':value (nil|"(.*)")\}'
)


def load_kv(path: Path) -> History:
    """A key-value log as a `History` partitioned by key (Porcupine's ``parseKvLog``).

    Args:
      path: The log.

    Returns:
      The history: ``get(k)``, ``put(k, v)``, ``append(k, v)``; times are line numbers.
    """
    history = History(path.stem, partition=by_key)
    pending: dict[str, Any] = {}
    for line_number, line in enumerate(path.read_text().splitlines()):
        found = _KV.search(line)
        if found is None:
            continue
        process, kind, name, key, _, value = found.groups()
        if kind == "invoke":
            args = (key,) if name == "get" else (key, value)
            pending[process] = history.invoke(f"p{process}", Operation(name, args), at=line_number)
        elif process in pending:
            result = value if name == "get" else None
            history.end(pending.pop(process), Returned(result), at=line_number)
    # Porcupine gives a call never answered an empty output at the end: a definite ``""``
    # for a get; a put or append accepts any output. (Porcupine's kv files have none.)
    for entry in pending.values():
        entry.ending = Returned("" if entry.operation.name == "get" else None)
        entry.endings = 1
    return history


def expected_verdicts() -> dict[str, bool]:
    """Porcupine's verdicts (true: linearizable), by file (``jepsen/etcd_000.log``...)."""
    verdicts: dict[str, bool] = json.loads((DATA / "verdicts.json").read_text())
    return verdicts


def load(name: str) -> tuple[History, Model[Any]]:
    """One of Porcupine's files (``jepsen/etcd_002.log``, ``kv/c50-bad.txt``) and its model."""
    path = DATA / name
    if name.startswith("jepsen/"):
        return load_etcd(path), EtcdModel()
    return load_kv(path), KvModel()


def check(name: str, **settings: Any) -> Verdict:
    """Check one of Porcupine's files; `settings` go to `check_linearizable`."""
    history, model = load(name)
    return check_linearizable(history.entries, model, partition=history.partition, **settings)


def verdict_name(verdict: Verdict) -> str:
    if isinstance(verdict, Linearizable):
        return "ok"
    if isinstance(verdict, Inconclusive):
        return "inconclusive"
    return "illegal"


def _measure(names: Sequence[str], expected: dict[str, bool]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in names:
        history, model = load(name)
        began, began_cpu = time.perf_counter(), time.process_time()
        verdict = check_linearizable(history.entries, model, partition=history.partition)
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - began_cpu
        rows.append(
            {
                "file": name,
                "operations": len(history.entries),
                "expected": "ok" if expected[name] else "illegal",
                "verdict": verdict_name(verdict),
                "steps": verdict.steps,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
            }
        )
    return rows


def _peak_memory(names: Sequence[str]) -> tuple[int, str]:
    """The largest peak of memory allocated by one check (tracemalloc), and its file."""
    worst, where = 0, ""
    for name in names:
        history, model = load(name)
        tracemalloc.start()
        check_linearizable(history.entries, model, partition=history.partition)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if peak > worst:
            worst, where = peak, name
    return worst, where


def run_go(names: Sequence[str]) -> dict[str, Any]:
    """Porcupine's own checker on the same files, if ``go`` is on PATH (else an error note)."""
    go = shutil.which("go")
    if go is None:
        return {"error": "go is not on PATH: Porcupine's checker was not run"}
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=False)
    with tempfile.TemporaryDirectory(prefix="porcupine-go-") as scratch:
        binary = Path(scratch) / "porcupine-bench"
        env = os.environ | {
            "GOFLAGS": "-mod=mod",
            "GOPROXY": "off",
            "GOCACHE": str(Path(scratch) / "cache"),
            "GO111MODULE": "on",
        }
        built = subprocess.run(
            [go, "build", "-o", str(binary), "."],
            cwd=GO_SOURCE,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if built.returncode != 0:
            return {"error": f"go build failed: {built.stderr.strip()}"}
        done = subprocess.run(
            [str(binary), str(DATA), *names],
            capture_output=True,
            text=True,
            env=os.environ | {"GOMAXPROCS": "1"},
            check=False,
        )
        if done.returncode != 0:
            return {"error": f"Porcupine's run failed: {done.stderr.strip()}"}
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return {"go": version.stdout.strip(), "gomaxprocs": 1, "files": rows}


def run_porcupine(*, repeat: int = 1) -> dict[str, Any]:
    """The section: verdicts, times and peak memory, ours and (with Go) Porcupine's.

    Args:
      repeat: Timed passes over all files (each file's best time is kept).

    Returns:
      The section's figures, for the JSON file.
    """
    expected = expected_verdicts()
    names = sorted(expected)
    passes = [_measure(names, expected) for _ in range(repeat)]
    rows = passes[0]
    for other in passes[1:]:
        for row, again in zip(rows, other, strict=True):
            row["seconds"] = min(row["seconds"], again["seconds"])
            row["cpu_seconds"] = min(row["cpu_seconds"], again["cpu_seconds"])
    peak, peak_file = _peak_memory(names)
    section: dict[str, Any] = {
        "files": rows,
        "repeat": repeat,
        "agree": sum(row["verdict"] == row["expected"] for row in rows),
        "inconclusive": sum(row["verdict"] == "inconclusive" for row in rows),
        "total_seconds": sum(row["seconds"] for row in rows),
        "total_cpu_seconds": sum(row["cpu_seconds"] for row in rows),
        "worst_seconds": max(row["seconds"] for row in rows),
        "worst_file": max(rows, key=lambda row: row["seconds"])["file"],
        "peak_memory_bytes": peak,
        "peak_memory_file": peak_file,
    }
    go = run_go(names)
    section["porcupine"] = go
    if "files" in go:
        theirs = {row["file"]: row for row in go["files"]}
        for row in rows:
            row["porcupine_seconds"] = theirs[row["file"]]["seconds"]
            row["porcupine_verdict"] = theirs[row["file"]]["verdict"]
            row["porcupine_cpu_seconds"] = theirs[row["file"]]["cpu_seconds"]
        section["porcupine_total_seconds"] = sum(row["seconds"] for row in go["files"])
        section["porcupine_total_cpu_seconds"] = sum(row["cpu_seconds"] for row in go["files"])
        section["total_cpu_ratio"] = (
            section["total_cpu_seconds"] / section["porcupine_total_cpu_seconds"]
        )
        section["porcupine_agree"] = sum(
            row["porcupine_verdict"] == row["expected"] for row in rows
        )
        section["total_ratio"] = section["total_seconds"] / section["porcupine_total_seconds"]
    return section


def targets_porcupine(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's checker targets, if measured."""
    section = results.get("porcupine")
    if section is None:
        return []
    # Judged by CPU time, as the waiting section's targets are: the machine is shared, and
    # the wall clock there measures the other tenants as much as the checker.
    worst_cpu = max(row["cpu_seconds"] for row in section["files"])
    found = [
        {
            "what": "Porcupine's histories: verdicts agreeing, default settings",
            "goal": f"{len(section['files'])}/{len(section['files'])}",
            "measured": f"{section['agree']}/{len(section['files'])}",
            "verdict": "met" if section["agree"] == len(section["files"]) else "missed",
        },
        {
            "what": "Porcupine's histories: worst file (by CPU time; wall clock shown)",
            "goal": f"<= {WORST_TARGET:g} s",
            "measured": f"CPU {worst_cpu:.3f} s, wall {section['worst_seconds']:.3f} s "
            f"({section['worst_file']})",
            "verdict": "met" if worst_cpu <= WORST_TARGET else "missed",
        },
    ]
    ratio = section.get("total_cpu_ratio")
    found.append(
        {
            "what": "Porcupine's histories: total time x Porcupine's (Go, GOMAXPROCS=1; by CPU "
            "time, wall clock shown)",
            "goal": f"<= {TOTAL_TARGET:g}x",
            "measured": "not measured (no go)"
            if ratio is None
            else f"CPU {ratio:.2f}x, wall {section['total_ratio']:.2f}x",
            "verdict": "not measured"
            if ratio is None
            else ("met" if ratio <= TOTAL_TARGET else "missed"),
        }
    )
    return found


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    from .report import table

    return table(header, rows, markdown=markdown)


def render_porcupine(section: dict[str, Any], *, markdown: bool = False) -> str:
    """The section as text: the summary, the slowest files, and the targets."""
    heading = "### " if markdown else "== "
    rows = section["files"]
    go = section["porcupine"]
    count = len(rows)
    parts = [
        f"{heading}The linearizability checker on Porcupine's histories ({count} files, "
        "default settings)",
        f"Verdicts agreeing with Porcupine's: {section['agree']}/{count} "
        f"({section['inconclusive']} inconclusive). Ours: total {section['total_seconds']:.3f} s "
        f"(CPU {section['total_cpu_seconds']:.3f} s), "
        f"worst {section['worst_seconds']:.3f} s ({section['worst_file']}); peak memory of one "
        f"check {section['peak_memory_bytes'] / 2**20:.1f} MiB ({section['peak_memory_file']}, "
        "tracemalloc).",
    ]
    if "files" in go:
        parts.append(
            f"Porcupine ({go['go']}, GOMAXPROCS=1): total {section['porcupine_total_seconds']:.3f}"
            f" s (CPU {section['porcupine_total_cpu_seconds']:.3f} s), "
            f"{section['porcupine_agree']}/{count} agreeing; ours / Porcupine's: "
            f"{section['total_ratio']:.2f}x (CPU {section['total_cpu_ratio']:.2f}x). "
            "Each file's best of 3 runs, both."
        )
    else:
        parts.append(f"Porcupine: {go['error']}.")
    shown = sorted(rows, key=lambda row: -row["seconds"])[:6]
    if "files" in go:
        theirs = sorted(rows, key=lambda row: -row["porcupine_seconds"])[:6]
        shown += [row for row in theirs if row not in shown]
    shown += [row for row in rows if row["file"].startswith("kv/") and row not in shown]
    header = ["file", "ops", "expected", "ours", "steps", "ours s", "ours CPU s"]
    if "files" in go:
        header += ["Porcupine", "Porcupine s", "Porcupine CPU s"]
    table_rows = []
    for row in shown:
        line = [
            row["file"],
            str(row["operations"]),
            row["expected"],
            row["verdict"],
            f"{row['steps']:,}",
            f"{row['seconds']:.3f}",
            f"{row['cpu_seconds']:.3f}",
        ]
        if "files" in go:
            line += [
                row["porcupine_verdict"],
                f"{row['porcupine_seconds']:.3f}",
                f"{row['porcupine_cpu_seconds']:.3f}",
            ]
        table_rows.append(line)
    parts.append(
        "The slowest files (ours, then Porcupine's) and the kv files; jepsen/etcd_095.log is "
        "empty and has no verdict in Porcupine's tests, so it is left out:"
    )
    parts.append(_table(header, table_rows, markdown=markdown))
    found = targets_porcupine({"porcupine": section})
    parts.append(f"{heading}Targets of issue 16 (the checker)")
    parts.append(
        _table(
            ["target", "goal", "measured", "verdict"],
            [[t["what"], t["goal"], t["measured"], t["verdict"]] for t in found],
            markdown=markdown,
        )
    )
    return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - a script
    """Check the files named (all by default) and print each verdict, steps and time."""
    names = list(argv if argv is not None else sys.argv[1:]) or sorted(expected_verdicts())
    expected = expected_verdicts()
    for row in _measure(names, expected):
        flag = "" if row["verdict"] == row["expected"] else "  <-- DISAGREES"
        print(
            f"{row['file']:24} {row['expected']:8} {row['verdict']:12} "
            f"{row['steps']:>10,} {row['seconds']:8.3f} s{flag}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
