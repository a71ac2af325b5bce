"""What the pure code reports to ``on_progress``, the embedded sample trace, the placement
plot, and the command modules' light imports."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.bench.placement import plot_placement, run_placement_bench
from corral.bench.predict import TIMED_STEP, run_predict_bench
from corral.cli import app
from corral.predict.evaluate import TEST_STEP, evaluate
from corral.predict.model import TRAIN_STEPS, train_model
from corral.predict.sample import SAMPLE_TRACE_FORMAT, sample_trace
from corral.predict.series import build_trace
from corral.predict.traces import load_trace
from tests.test_bench_placement import _tiny
from tests.test_predict_model import FAST, daily_cycle_frame

PNG = b"\x89PNG\r\n\x1a\n"


class Recorder:
    """Collects ``(done, total)`` per step, in call order, and the order steps first came."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.order: list[str] = []

    def __call__(self, step: str, done: int, total: int) -> None:
        if step not in self.calls:
            self.order.append(step)
        self.calls[step].append((done, total))

    def assert_each_step_counts_up_to_its_total(self) -> None:
        for step, calls in self.calls.items():
            dones = [d for d, _ in calls]
            assert dones == sorted(dones), (step, dones)
            assert dones[0] == 0, step  # a slow first unit already shows
            assert calls[-1][0] == calls[-1][1] > 0, (step, calls[-1])


@pytest.fixture(scope="module")
def daily() -> object:
    return build_trace(daily_cycle_frame(days=6, series=3), source="daily", fmt="corral")


def test_training_reports_windows_then_rounds_then_calibration(daily: object) -> None:
    seen = Recorder()
    train_model(daily, FAST, on_progress=seen)  # type: ignore[arg-type]
    assert seen.order == list(TRAIN_STEPS)
    assert seen.calls["boosting rounds"][-1] == (FAST.rounds, FAST.rounds)
    assert len(seen.calls["boosting rounds"]) == FAST.rounds + 1
    seen.assert_each_step_counts_up_to_its_total()


def test_evaluation_reports_training_then_the_test_windows(daily: object) -> None:
    seen = Recorder()
    evaluation, _ = evaluate(daily, None, FAST, on_progress=seen)  # type: ignore[arg-type]
    assert seen.order == [*TRAIN_STEPS, TEST_STEP]
    assert seen.calls[TEST_STEP][-1] == (evaluation.split["test_windows"],) * 2
    seen.assert_each_step_counts_up_to_its_total()


def test_predict_bench_reports_each_timed_call(daily: object) -> None:
    model = train_model(daily, FAST)  # type: ignore[arg-type]
    seen = Recorder()
    run_predict_bench(model, daily, series=20, repeats=3, on_progress=seen)  # type: ignore[arg-type]
    assert seen.calls == {TIMED_STEP: [(0, 3), (1, 3), (2, 3), (3, 3)]}


def test_placement_bench_reports_every_phase_to_its_end() -> None:
    seen = Recorder()
    run_placement_bench(_tiny(), on_progress=seen)
    assert seen.order == [
        "family instances",
        "from-scratch instances",
        "churn events",
        "burst decisions",
        "solver runs",
    ]
    assert seen.calls["family instances"][-1] == (3, 3)  # 2 of 64 threads, 1 of 512
    assert seen.calls["from-scratch instances"][-1] == (4, 4)  # 1 preset x 2 fills x 2
    seen.assert_each_step_counts_up_to_its_total()


def test_the_plot_draws_the_family_and_the_from_scratch_table(tmp_path: Path) -> None:
    doc = run_placement_bench(_tiny()).to_json()
    with_static = tmp_path / "all.png"
    plot_placement(doc, with_static)
    family_only = tmp_path / "family.png"
    plot_placement({**doc, "static": []}, family_only)
    assert with_static.read_bytes()[:8] == family_only.read_bytes()[:8] == PNG
    # The PNG header's height: three rows of panels against two.
    height = int.from_bytes(with_static.read_bytes()[20:24], "big")
    assert height > int.from_bytes(family_only.read_bytes()[20:24], "big")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.png", "family.png"]


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("nowhere/p.png", "no such directory"),
        ("p.bmp", "unknown file type '.bmp'"),
        (".", "is a directory"),
    ],
)
def test_a_plot_path_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, plot: str, message: str
) -> None:
    result = CliRunner().invoke(app, ["bench", "placement", "--plot", str(tmp_path / plot)])
    assert result.exit_code == 2
    assert "--plot: " in result.stderr and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_embedded_sample_is_small_real_and_loads_as_bitbrains() -> None:
    path = sample_trace()
    assert path.stat().st_size < 2_000_000
    assert (path.parent / "README.md").read_text().count("CCGrid 2015") == 1
    header = gzip.decompress(path.read_bytes()).split(b"\n", 1)[0]
    assert header == b"vm_id,timestamp_s,cpu_cores,cpu_capacity_mhz,cpu_usage_mhz"
    trace = load_trace(path, SAMPLE_TRACE_FORMAT)
    assert len(trace.ids) == 20
    assert trace.step_s == 300.0
    assert sorted({float(c) for c in trace.capacity}) == [1.0, 2.0, 4.0, 8.0, 32.0]


def test_a_missing_trace_names_the_option_and_the_default(tmp_path: Path) -> None:
    missing = tmp_path / "gone.csv.gz"
    result = CliRunner().invoke(app, ["bench", "predict", "--trace", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --trace: {missing}: no such file")
    assert "leave --trace out to use the embedded Bitbrains sample" in result.stderr


def test_a_format_without_a_trace_is_refused() -> None:
    result = CliRunner().invoke(app, ["bench", "predict", "--format", "google"])
    assert result.exit_code == 2
    assert "--format: applies to --trace" in result.stderr


@pytest.mark.parametrize("option", ["--train", "--test"])
def test_predict_eval_names_the_option_of_a_missing_trace(tmp_path: Path, option: str) -> None:
    real = tmp_path / "real.csv"
    daily_cycle_frame(days=2, series=1).to_csv(real, index=False)
    missing = tmp_path / "missing.csv"
    args = ["--train", str(missing)] if option == "--train" else ["--train", str(real)]
    if option == "--test":
        args += ["--test", str(missing)]
    result = CliRunner().invoke(app, ["predict", "eval", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {option}: {missing}: no such file")


def test_the_command_modules_import_no_heavy_library() -> None:
    heavy = ("numpy", "scipy", "highspy", "lightgbm", "sklearn", "pandas", "matplotlib")
    code = (
        "import sys, json\n"
        "import corral.commands.predict, corral.commands.bench_predict, corral.commands.bench\n"
        "import corral.commands.progress\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert json.loads(proc.stdout) == []
