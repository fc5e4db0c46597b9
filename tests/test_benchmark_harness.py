"""The benchmark harness (benchmarks/run.py): its efficiency bound, its run-duration line and how it
keeps what it measured when a case fails.  No benchmark case is run: the cases are stand-ins."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_worker_run(serial: float, passes: float) -> dict:
    """A one-worker run record: ``passes`` seconds in the first pass, ``serial`` outside it."""
    return {"wall_s": serial + passes,
            "stages": {"wall": {"input": serial / 2, "prediction": serial / 4, "first pass": passes}}}


def test_efficiency_bound_is_the_decode_efficiency_without_a_serial_part(bench):
    assert bench.efficiency_bound(one_worker_run(0.0, 4.0), 2, 0.85) == pytest.approx(0.85)
    assert bench.efficiency_bound(one_worker_run(0.0, 4.0), 1, 1.0) == pytest.approx(1.0)


def test_efficiency_bound_falls_as_the_serial_part_grows(bench):
    bounds = [bench.efficiency_bound(one_worker_run(serial, 4.0), 2, 0.85) for serial in (0.0, 0.5, 1.0, 2.0)]
    assert all(later < earlier for earlier, later in zip(bounds, bounds[1:]))
    # serial 1 s, passes 4 s on two workers at 80 %: 5 / (2 x (1 + 4 / 1.6))
    assert bench.efficiency_bound(one_worker_run(1.0, 4.0), 2, 0.8) == pytest.approx(5.0 / 7.0)


def test_run_duration_names_only_the_datasets_simulated_in_that_run(bench):
    record = {"run_s": 600.0, "cases": [
        {"case": "small", "simulated_in_run": True, "simulation_s": 30.0},
        {"case": "sweep100", "simulated_in_run": False, "simulation_s": 90.0},
        {"case": "large", "simulated_in_run": True, "simulation_s": 500.0, "measured": "an earlier record"}]}
    line = bench.run_duration(record)
    assert "10.0 min" in line and "small (0.5 min)" in line
    assert "sweep100" not in line and "large" not in line
    assert bench.run_duration({"cases": []}) == ""


def test_a_failing_case_leaves_the_others_measured(bench, tmp_path, monkeypatch, capsys):
    def run_case(name, data, workers, with_dials):
        if name == "broken":
            raise RuntimeError("braggint.integrate failed")
        return {"case": name, "braggint": {}}

    rendered = []
    monkeypatch.setattr(bench, "CASES", {"broken": None, "fine": None})
    monkeypatch.setattr(bench, "run_case", run_case)
    monkeypatch.setattr(bench, "warm_up", lambda data: None)
    monkeypatch.setattr(bench, "versions", lambda: {"braggint": "test"})
    monkeypatch.setattr(bench, "render", lambda record, path: rendered.append(record))
    monkeypatch.setattr("sys.argv", ["run.py", "--cases", "broken,fine", "--no-dials", "--data", str(tmp_path / "data"),
                                     "--out", str(tmp_path / "out"), "--report", str(tmp_path / "report.md")])
    assert bench.main() == 1
    records = list((tmp_path / "out").glob("benchmark-*.json"))
    assert len(records) == 1
    kept = json.loads(records[0].read_text())
    assert kept["machine"]["cores"] >= 1 and kept["machine"]["processor"]
    assert kept["source"] is None or len(kept["source"]["commit"]) == 40  # None outside a git checkout
    assert [case["case"] for case in kept["cases"]] == ["fine"]
    assert kept["run_s"] >= 0 and kept["cases"][0]["simulated_in_run"] is True
    assert [case["case"] for case in rendered[0]["cases"]] == ["fine"]
    assert "case broken failed" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob(".*.tmp"))  # written through a temporary name, renamed


def test_unknown_cases_are_refused_before_anything_runs(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "warm_up", lambda data: pytest.fail("ran before checking --cases"))
    monkeypatch.setattr("sys.argv", ["run.py", "--cases", "small,nosuch", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2
    assert "unknown nosuch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def newest_record(bench) -> dict:
    """The newest benchmark record committed under benchmarks/results."""
    return json.loads(max((Path(bench.__file__).parent / "results").glob("benchmark-*.json")).read_text())


def measured_line(bench, record: dict, folder: Path) -> str:
    """The report's "Measured ..." line (its third) as ``record`` renders, in a report written to ``folder``."""
    bench.render(record, folder / "report.md")
    return (folder / "report.md").read_text().splitlines()[2]


def test_a_record_names_its_processor_with_family_and_model(bench, tmp_path):
    """The processor comes from the first processor of /proc/cpuinfo's text, with its family and model numbers
    (one name, "AMD EPYC", covers processors of different speeds); the report's first line names it, and
    records from before it was kept render as they did."""
    cpuinfo = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
               "model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: other\n")
    assert bench.processor(cpuinfo) == "AMD EPYC, family 25, model 17"
    assert bench.processor("model name\t: Some CPU\n") == "Some CPU"

    record = newest_record(bench)
    record["machine"].pop("processor", None)
    before = measured_line(bench, record, tmp_path)
    record["machine"]["processor"] = bench.processor(cpuinfo)
    after = measured_line(bench, record, tmp_path)
    assert after == before.replace(" cores (", " cores (AMD EPYC, family 25, model 17; ")
    assert "AMD EPYC" not in before


def test_a_record_names_the_commit_it_measured_and_whether_the_package_was_edited(bench, tmp_path):
    """The record keeps the checkout's commit and whether braggint/ differed from it (the report's first line
    shows both), so that a record can be traced to the code it measured; outside a git checkout, nothing."""
    import subprocess

    def git(*arguments):
        subprocess.run(["git", "-C", str(tmp_path), *arguments], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "braggint").mkdir()
    (tmp_path / "braggint" / "module.py").write_text("x = 1\n")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "notes.md").write_text("a\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    clean = bench.source_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["modified"] is False
    (tmp_path / "benchmarks" / "notes.md").write_text("b\n")  # outside the package: still the commit's code
    assert bench.source_state(tmp_path)["modified"] is False
    (tmp_path / "braggint" / "module.py").write_text("x = 2\n")
    assert bench.source_state(tmp_path)["modified"] is True
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    assert bench.source_state(outside) is None

    record = newest_record(bench)
    record.pop("source", None)
    before = measured_line(bench, record, tmp_path)
    record["source"] = {"commit": clean["commit"], "modified": True}
    after = measured_line(bench, record, tmp_path)
    braggint = f"braggint {record['versions']['braggint']}"
    assert after == before.replace(braggint, f"{braggint} (commit {clean['commit'][:7]}, with uncommitted changes "
                                             "to braggint/)")


def test_the_report_shows_every_run_and_both_modes_memory(bench, tmp_path):
    """The throughput table lists every run's wall time of a configuration (the machine's noise shows), and
    the memory table has a row for each mode and worker count, with that run's block peak (summation only's
    flat block memory is one of the goals)."""
    record = newest_record(bench)
    case = record["cases"][0]
    case["braggint_sum"]["2"]["walls_s"] = [9.31, 8.72, 9.54]
    case["braggint_sum"]["2"]["wall_s"] = 8.72
    case["braggint_sum"]["2"]["block_peak_mb"] = 123.4
    bench.render(record, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    throughput = text[text.index("## Throughput"):text.index("## Memory")]
    assert f"| {case['case']} | sum | 2 | 8.7 | 9.3, 8.7, 9.5 |" in throughput
    memory = text[text.index("## Memory"):text.index("## Stage breakdown")]
    rows = [line for line in memory.splitlines() if line.startswith(f"| {case['case']} |")]
    assert [tuple(line.split(" | ")[2:4]) for line in rows] == [("prf", "1"), ("prf", "2"), ("sum", "1"),
                                                                 ("sum", "2")]
    assert rows[3].split(" | ")[5] == "123"


def test_the_goals_show_block_memory_from_the_short_to_the_long_sweep(bench):
    """Beside the goals table: each mode and worker count's block peak at 100 and at 400 images, with the
    growth; nothing when the record lacks either sweep."""
    def case(name, images, peaks):
        return {"case": name, "images": images,
                "braggint": {n: {"block_peak_mb": prf} for n, (prf, _) in peaks.items()},
                "braggint_sum": {n: {"block_peak_mb": summed} for n, (_, summed) in peaks.items()}}

    record = {"cases": [case("sweep100", 100, {"1": (300.0, 250.0), "2": (200.0, 150.0)}),
                        case("sweep400", 400, {"1": (330.0, 250.0), "2": (300.0, 153.0)})]}
    lines = [line for line in bench.flat_memory(record) if line.startswith("- ")]
    assert lines == ["- prf, 1 worker: 300 -> 330 MB (+10%)", "- prf, 2 workers: 200 -> 300 MB (+50%)",
                     "- sum, 1 worker: 250 -> 250 MB (+0%)", "- sum, 2 workers: 150 -> 153 MB (+2%)"]
    assert bench.flat_memory({"cases": record["cases"][1:]}) == []


def test_timed_counts_every_process_cpu_and_first_writes(bench, tmp_path):
    """``timed`` keeps the CPU seconds and minor page faults of the command and of the children it waited
    for: a child that writes 64 MB afresh and spins shows in the parent's figures."""
    child = ("x = b'x' * (64 << 20); import time; t = time.process_time()\n"
             "while time.process_time() - t < 0.3: pass")
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    measured = bench.timed([sys.executable, "-c", parent], tmp_path)
    assert measured["cpu_user_s"] + measured["cpu_system_s"] >= 0.3
    assert measured["minor_faults"] >= (64 << 20) // 4096
    assert measured["peak_rss_mb"] >= 64
    assert bench.cpu_seconds(measured) == measured["cpu_user_s"] + measured["cpu_system_s"]
    assert bench.cpu_seconds({"wall_s": 1.0}) is None  # records from before CPU was kept


def test_the_goals_set_each_run_cpu_against_what_the_cores_allow(bench, tmp_path):
    """The goals table gives CPU / decode beside wall / decode, and says what the machine's cores allow (C x
    the goal); the speed table gives the CPU seconds (system apart) and page faults; records without CPU
    render dashes."""
    record = newest_record(bench)
    record["machine"]["cores"] = 2
    case = record["cases"][-1]
    run = case["braggint_sum"]["2"]
    run.update(wall_s=2.4, decode_floor_s=0.95, cpu_user_s=3.7, cpu_system_s=0.6, minor_faults=128_000)
    for name in ("cpu_user_s", "cpu_system_s", "minor_faults"):  # as in a record from before 2026-12-05
        case["braggint"]["2"].pop(name, None)
    bench.render(record, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    goals = text[:text.index("## Speed against")]
    assert "here C = 2: 6 with profile fitting, 4 summation only" in goals
    row = next(line for line in goals.splitlines() if line.startswith(f"| {case['case']} | 2 |"))
    cells = row.split(" | ")
    assert cells[3] == "2.5" and cells[5] == "4.5"  # wall / decode, sum; CPU / decode, sum: 4.3 / 0.95
    speed = text[text.index("## Speed against"):text.index("## Throughput")]
    rows = [line for line in speed.splitlines() if line.startswith(f"| {case['case']} |")]
    assert "| 2.4 | 2.5 | 4.3 (0.6) | 128 |" in next(line for line in rows if " | sum | 2 | " in line)
    assert " | - | - | " in next(line for line in rows if " | prf | 2 | " in line)
