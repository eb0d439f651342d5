"""Turn a pytest-benchmark JSON from ``bench/`` into the README's markdown table.

    python bench/report.py bench/results/latest.json [-o bench/RESULTS.md]

Every number comes from the JSON (timings, machine, versions, date); nothing is
typed by hand. ``bench/conftest.py`` imports :func:`comparisons` from here to
print the same ratios at the end of the benchmark run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: (what, baseline (case, engine), candidate (case, engine), kind, target).
#: kind "speedup": baseline median / candidate median, must be >= target;
#: kind "cost": candidate median / baseline median, must be <= target.
TARGETS: list[tuple[str, tuple[str, str], tuple[str, str], str, float]] = [
    (
        "beam_parse width 16, density 1e-4",
        ("beam_parse w16 d0.0001", "spacy"),
        ("beam_parse w16 d0.0001", "beamner"),
        "speedup",
        2.5,
    ),
    (
        "beam_parse width 16, density 0",
        ("beam_parse w16 d0", "spacy"),
        ("beam_parse w16 d0", "beamner"),
        "speedup",
        2.5,
    ),
    (
        "beam_parse width 64, density 1e-4",
        ("beam_parse w64 d0.0001", "spacy"),
        ("beam_parse w64 d0.0001", "beamner"),
        "speedup",
        5.0,
    ),
    (
        "beam_parse width 64, density 0",
        ("beam_parse w64 d0", "spacy"),
        ("beam_parse w64 d0", "beamner"),
        "speedup",
        5.0,
    ),
    (
        "search alone, width 16",
        ("search w16 d0.0001", "spacy"),
        ("search w16 d0.0001", "beamner"),
        "speedup",
        20.0,
    ),
    (
        "search alone, width 64",
        ("search w64 d0.0001", "spacy"),
        ("search w64 d0.0001", "beamner"),
        "speedup",
        20.0,
    ),
    (
        "beam training width 16, density 0.01",
        ("beam training w16 d0.01", "spacy"),
        ("beam training w16 d0.01", "beamner"),
        "speedup",
        3.0,
    ),
    (
        'fused "local" within 10% of fused "none" at width 16 (entity_scores)',
        ("entity_scores w16 d0.0001 normalize=none", "beamner"),
        ("entity_scores w16 d0.0001 normalize=local", "beamner"),
        "cost",
        1.1,
    ),
    (
        'fused "local" within 10% of fused "none" at width 16 (beam_parse)',
        ("beam_parse w16 d0.0001 normalize=none", "beamner"),
        ("beam_parse w16 d0.0001 normalize=local", "beamner"),
        "cost",
        1.1,
    ),
    (
        "NER component width 16 vs spaCy greedy",
        ("ner component greedy", "spacy"),
        ("ner component w16 d0.0001", "beamner"),
        "cost",
        1.3,
    ),
]


def _key(bench: dict[str, Any]) -> tuple[str, str]:
    info = bench.get("extra_info", {})
    return str(info.get("case", bench["name"])), str(info.get("engine", ""))


def _median(bench: dict[str, Any]) -> float:
    return float(bench["stats"]["median"])


def _rate(bench: dict[str, Any]) -> str:
    info = bench.get("extra_info", {})
    for unit in ("tokens", "words"):
        if unit in info:
            return f"{info[unit] / _median(bench):,.0f} {unit}/s"
    return ""


def side_by_side(benchmarks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case: each engine's median and rate, and spaCy / beamner."""
    cases: dict[str, dict[str, dict[str, Any]]] = {}
    for bench in benchmarks:
        case, engine = _key(bench)
        cases.setdefault(case, {})[engine] = bench
    rows = []
    for case, engines in cases.items():
        spacy, beamner = engines.get("spacy"), engines.get("beamner")
        vs = beamner.get("extra_info", {}).get("vs") if beamner else None
        if spacy is None and vs:  # compared with another case's spaCy timing
            spacy = cases.get(vs, {}).get("spacy")
        rows.append(
            {
                "case": case if not vs else f"{case} (spaCy: {vs})",
                "group": next(iter(engines.values())).get("group") or "",
                "spacy_s": _median(spacy) if spacy else None,
                "spacy_rate": _rate(spacy) if spacy else "",
                "beamner_s": _median(beamner) if beamner else None,
                "beamner_rate": _rate(beamner) if beamner else "",
                "speedup": _median(spacy) / _median(beamner) if spacy and beamner else None,
                "rounds": "/".join(
                    str(len_rounds(b)) for b in (engines.get("spacy"), beamner) if b is not None
                ),
                "note": "; ".join(
                    str(b.get("extra_info", {}).get("note", ""))
                    for b in engines.values()
                    if b.get("extra_info", {}).get("note")
                ),
            }
        )
    return rows


def len_rounds(bench: dict[str, Any]) -> int:
    return int(bench["stats"].get("rounds", 0))


def comparisons(benchmarks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of issue 5 that the benchmarks of this run can answer."""
    by_key = {_key(b): b for b in benchmarks}
    rows = []
    for what, base_key, cand_key, kind, target in TARGETS:
        base, cand = by_key.get(base_key), by_key.get(cand_key)
        if base is None or cand is None:
            continue
        if kind == "speedup":
            ratio = _median(base) / _median(cand)
            met = ratio >= target
            goal = f">= {target:g}x"
        else:
            ratio = _median(cand) / _median(base)
            met = ratio <= target
            goal = f"<= {target:g}x"
        rows.append({"what": what, "ratio": ratio, "goal": goal, "met": met})
    return rows


def memory_rows(memory: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for engine in ("spacy", "beamner"):
        run = memory.get(engine)
        if not run:
            continue
        rss = run["rss_mib"]  # [(n_docs, VmRSS MiB)] after each checkpoint
        rows.append(
            {
                "engine": engine,
                "start": run["rss_start_mib"],
                "first": rss[0],
                "last": rss[-1],
                "growth": rss[-1][1] - rss[0][1],
                "peak": run["hwm_mib"],
                "seconds": run["seconds"],
            }
        )
    return rows


def memory_verdict(memory: dict[str, Any]) -> tuple[bool, str] | None:
    rows = {row["engine"]: row for row in memory_rows(memory)}
    if "spacy" not in rows or "beamner" not in rows:
        return None
    spacy, beamner = rows["spacy"], rows["beamner"]
    flat = beamner["growth"] <= memory.get("flat_tolerance_mib", 20.0)
    lower = beamner["peak"] <= spacy["peak"]
    text = (
        f"beamner peak {beamner['peak']:.1f} MiB vs spaCy {spacy['peak']:.1f} MiB; "
        f"beamner RSS growth {beamner['growth']:+.1f} MiB from doc {beamner['first'][0]:,} "
        f"to {beamner['last'][0]:,} (spaCy {spacy['growth']:+.1f} MiB)"
    )
    return flat and lower, text


def _fmt_s(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def render(data: dict[str, Any]) -> str:
    machine = data.get("machine_info", {})
    extra = machine.get("beamner_bench", {})
    bench_info = data.get("beamner_bench", {})
    benchmarks = data["benchmarks"]
    lines = ["# beamner benchmarks", ""]
    lines.append(
        f"Generated by `python bench/report.py` from `{bench_info.get('json_name', 'the JSON')}` "
        f"(run of {data.get('datetime', '?')[:19].replace('T', ' ')} UTC)."
    )
    lines.append("")
    lines.append(
        f"Machine: {extra.get('cpu_model', machine.get('cpu', {}).get('brand_raw', '?'))}, "
        f"{extra.get('cores', '?')} cores, {machine.get('system', '')} "
        f"{machine.get('release', '')}; Python {machine.get('python_version', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in extra.get("versions", {}).items())
        + "."
    )
    corpus = bench_info.get("corpus")
    if corpus:
        lines.append("")
        lines.append(
            f"Docs: {corpus['n_docs']} documents, {corpus['n_tokens']:,} tokens "
            f"({corpus['description']}), after en_core_web_sm's pipeline before the NER "
            "(not timed). Times are medians over the rounds shown; ratios compare "
            "timings taken in the same run on the same docs."
        )
    lines += ["", "## Targets", "", "| target | ratio | goal | met |", "|---|---:|---:|:---:|"]
    for row in comparisons(benchmarks):
        lines.append(
            f"| {row['what']} | {row['ratio']:.2f}x | {row['goal']} | "
            f"{'yes' if row['met'] else 'no'} |"
        )
    memory = bench_info.get("memory")
    verdict = memory_verdict(memory) if memory else None
    if verdict:
        lines.append(
            f"| memory, streaming width 16: flat, peak <= spaCy's | {verdict[1]} | | "
            f"{'yes' if verdict[0] else 'no'} |"
        )
    lines += [
        "",
        "## spaCy and beamner side by side",
        "",
        "| case | spaCy s | spaCy rate | beamner s | beamner rate | spaCy / beamner "
        "| rounds (spaCy/beamner) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for row in side_by_side(benchmarks):
        speedup = "" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        lines.append(
            f"| {row['case']} | {_fmt_s(row['spacy_s'])} | {row['spacy_rate']} | "
            f"{_fmt_s(row['beamner_s'])} | {row['beamner_rate']} | {speedup} | {row['rounds']} |"
        )
        if row["note"]:
            notes.append(f"- {row['case']}: {row['note']}")
    if notes:
        lines += ["", *notes]
    if memory:
        lines += [
            "",
            "## Memory, streaming",
            "",
            f"{memory['n_docs']:,} documents ({memory['description']}) through the full "
            f"pipeline with `nlp.pipe(batch_size={memory['batch_size']})`, NER at width "
            f"{memory['width']}, density {memory['density']:g}; one subprocess per engine. "
            "RSS (VmRSS) after the first and the last checkpoint, and the high-water mark "
            "(VmHWM) of the whole process.",
            "",
            "| engine | RSS after load MiB | RSS at first checkpoint | RSS at end | growth MiB "
            "| peak (VmHWM) MiB | seconds | RSS at each checkpoint MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in memory_rows(memory):
            lines.append(
                f"| {row['engine']} | {row['start']:.1f} | {row['first'][1]:.1f} "
                f"(doc {row['first'][0]:,}) | {row['last'][1]:.1f} (doc {row['last'][0]:,}) | "
                f"{row['growth']:+.1f} | {row['peak']:.1f} | {row['seconds']:.1f} | "
                + " ".join(f"{mib:.0f}" for _, mib in memory[row["engine"]]["rss_mib"])
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="?", default=Path("bench/results/latest.json"))
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--readme", type=Path, help="also put the machine line and targets table into this file"
    )
    args = parser.parse_args()
    data = json.loads(args.json.read_text())
    data.setdefault("beamner_bench", {})["json_name"] = args.json.as_posix()
    text = render(data)
    if args.output:
        args.output.write_text(text)
    else:
        print(text, end="")
    if args.readme:
        update_readme(args.readme, text)


README_START = "<!-- bench:targets:start (generated by bench/report.py --readme) -->"
README_END = "<!-- bench:targets:end -->"


def update_readme(path: Path, report: str) -> None:
    """Replace the block between the README's markers with the report's machine
    line and its targets table, so the README's numbers are never typed."""
    lines = report.splitlines()
    machine = next(line for line in lines if line.startswith("Machine:"))
    start = lines.index("## Targets") + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    block = "\n".join([README_START, machine, "", *lines[start:end], README_END])
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{path} has no {README_START} ... {README_END} block")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(head + block + tail)


if __name__ == "__main__":
    main()
