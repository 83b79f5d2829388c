"""What a new user meets (issue 17): the README's commands as written, refusals that are one line
with nothing left behind, exit codes a script can trust, and progress where output is a file.

Commands run through the real CLI: in a subprocess where exit codes, signals or a clean
environment matter, else through `ladder.cli.main` in this process (the same code, faster).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ladder.cli import main
from ladder.data import prepare_corpus
from ladder.hydra_app import compose_config
from ladder.rungs import make_rung
from ladder.runs.directory import RunDir

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data

REPO = Path(__file__).resolve().parent.parent


def ladder(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`ladder ARGS...` in a subprocess, as a user types it (output is not a terminal)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ladder", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(text: str, command: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(f"ladder {command}: error:")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    prepare_corpus(compose_config([f"data.prepared_root={root}"]).data, progress=False)
    return root


@pytest.fixture
def train(prepared_root, monkeypatch, capsys):
    """`ladder train` in this process on the shared corpus (wandb off, one thread): (exit code, stderr)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")

    def run(run_dir: Path, *overrides: str) -> tuple[int, str]:
        code = main(
            [
                "train",
                "model=femto",
                f"run_dir={run_dir}",
                f"data.prepared_root={prepared_root}",
                "train.threads=1",
                *overrides,
            ]
        )
        return code, capsys.readouterr().err

    return run


# -- the README's path ------------------------------------------------------------------------


def test_readme_train_then_collect_as_written(tmp_path):
    """README "Train one rung", a small version: the CPU smoke run writes eval rows, its rerun says
    how to go on, status reads the run directory, collect makes a table from it."""
    readme = (REPO / "README.md").read_text()
    for command in (
        "ladder train model=tiny multiplier=1 train.max_steps=50 tasks=cpu",
        "ladder collect runs/single -o results/single.csv",
        "ladder status runs/single/tiny-1xC",
    ):
        assert command in readme
    small = ["train", "model=tiny", "multiplier=1", "train.max_steps=2", "tasks=cpu", "tasks.max_questions=20"]
    first = ladder(*small, "train.threads=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "runs/single/tiny-1xC"
    assert (run_dir / "eval.jsonl").is_file()
    again = ladder(*small, "train.threads=1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "rerun with a larger train.max_steps" in again.stdout + again.stderr
    status = ladder("status", "runs/single/tiny-1xC", cwd=tmp_path)
    assert status.returncode == 0 and "partial" in status.stdout and "2/" in status.stdout, (
        status.stdout + status.stderr
    )
    collect = ladder("collect", "runs/single", "-o", "results/single.csv", cwd=tmp_path)
    assert collect.returncode == 0, collect.stderr
    table = pd.read_csv(tmp_path / "results/single.csv")
    assert set(table["task"]) == {"corpus_spelling", "corpus_next_word"} and set(table["step"]) == {2}


def test_collect_without_eval_rows_says_how_to_get_them(tmp_path, train, capsys):
    assert train(tmp_path / "r", "train.max_steps=1")[0] == 0
    assert main(["collect", str(tmp_path / "r"), "-o", str(tmp_path / "t.csv")]) == 2
    assert "tasks=cpu" in one_line_error(capsys.readouterr().err, "collect")
    assert not (tmp_path / "t.csv").exists()


def test_train_interrupted_exits_with_the_signal_code(tmp_path, prepared_root):
    """SIGTERM (143) and Ctrl-C (130) checkpoint and exit non-zero; the same command resumes."""
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        run_dir = tmp_path / sig.name
        args = [
            sys.executable,
            "-m",
            "ladder",
            "train",
            "model=femto",
            f"run_dir={run_dir}",
            "train.log_interval=1",
            f"data.prepared_root={prepared_root}",
            "train.threads=1",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
        process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(sig)
        out, err = process.communicate(timeout=120)
        assert process.returncode == code, out + err
        assert RunDir(run_dir).latest_checkpoint is not None and not (run_dir / "DONE").exists()
        assert "the same command resumes" in err


# -- refusals: one line, exit 2, nothing written ----------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["role=foo"], "role=foo"),
        (["model.init_std=-1"], "model.init_std"),
        (["model.rope_theta=0"], "model.rope_theta"),
        (["multiplier=2", "train.tokens=100000"], "give one"),
        (["data.val_fraction=1.5"], "data.val_fraction"),
        (["data.tokenizer=bpe:10"], "data.tokenizer"),
        (["tasks.names=[nope]"], "unknown task 'nope'"),
        (["tasks.names=[/no/such/task.jsonl]"], "no such file"),
        (["train.micro_batch_size=3"], "does not divide"),
        (["model.vocab_size=100"], "smaller than the tokenizer"),
        (["model.seq_len=100000000"], "fewer than seq_len"),
    ],
)
def test_refused_before_any_file_is_written(tmp_path, train, overrides, message):
    run_dir = tmp_path / "runs" / "r"
    code, err = train(run_dir, *overrides)
    assert code == 2
    assert message in one_line_error(err, "train")
    assert not (tmp_path / "runs").exists()


def test_a_refusal_found_after_hydra_started_leaves_nothing(tmp_path, train):
    """A task file that is broken inside is found when the tasks load (after Hydra has written
    .hydra/ and its log): what this start wrote goes, a previous run's files stay as they were."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "choices": ["b"], "gold": 0}\n{not json\n')
    fresh = tmp_path / "runs" / "fresh"
    code, err = train(fresh, f"tasks.names=[{bad}]")
    assert code == 2 and str(bad) in one_line_error(err, "train")
    assert not (tmp_path / "runs").exists()

    previous = tmp_path / "previous"
    assert train(previous, "train.max_steps=1")[0] == 0
    before = {path: path.read_bytes() for path in previous.rglob("*") if path.is_file()}
    code, err = train(previous, "train.max_steps=2", f"tasks.names=[{bad}]")
    assert code == 2
    assert {path: path.read_bytes() for path in previous.rglob("*") if path.is_file()} == before


def test_wandb_online_without_login_is_refused(tmp_path, prepared_root):
    env = {"WANDB_API_KEY": "", "HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / ".config")}
    result = ladder(
        "train",
        "model=femto",
        "wandb.mode=online",
        f"run_dir={tmp_path / 'r'}",
        "train.max_steps=1",
        f"data.prepared_root={prepared_root}",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert "wandb.mode=online" in one_line_error(result.stderr, "train")
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_sweep_refused_by_every_rung_launches_nothing(tmp_path, prepared_root, capsys):
    code = main(
        [
            "sweep",
            "ladder=demo",
            f"ladder.sweep_root={tmp_path / 'sweep'}",
            "train.micro_batch_size=7",
            f"data.prepared_root={prepared_root}",
            "wandb.mode=disabled",
        ]
    )
    assert code == 2
    assert "every rung is refused" in one_line_error(capsys.readouterr().err, "sweep")
    assert not (tmp_path / "sweep").exists()


def test_fit_refuses_an_out_it_cannot_write_before_fitting(tmp_path, capsys):
    (tmp_path / "file").write_text("in the way")
    assert main(["fit", str(table_file(tmp_path)), "--out", str(tmp_path / "file" / "out")]) == 2
    assert "a file stands where the directory" in one_line_error(capsys.readouterr().err, "fit")


def test_plan_refuses_a_negative_kaplan_lr_and_hydra_flags(capsys):
    assert main(["plan", "ladder.sizes=[13B]", "optim.lr_rule=kaplan"]) == 2
    assert "lr_rule=kaplan" in one_line_error(capsys.readouterr().err, "plan")
    assert main(["plan", "--multirun"]) == 2
    assert "--multirun" in one_line_error(capsys.readouterr().err, "plan")


def test_train_with_an_empty_done_is_refused_and_status_does_not_call_it_done(tmp_path, train, capsys):
    run_dir = tmp_path / "r"
    assert train(run_dir, "train.max_steps=1")[0] == 0
    (run_dir / "DONE").write_text("")
    code, err = train(run_dir, "train.max_steps=2")
    assert code == 2 and "DONE" in one_line_error(err, "train")
    assert main(["status", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "DONE is not a DONE record" in out


def test_status_with_a_non_numeric_loss(tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    rung = make_rung("femto", tokens=10 * 8 * 256, batch=8, name="r")
    (run_dir / "rung.json").write_text(json.dumps(rung.to_record()))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 3, "loss": "nan?"}) + "\n")
    assert main(["status", str(run_dir)]) == 0
    assert "3/10" in capsys.readouterr().out


def test_resume_keeps_the_records_after_a_broken_line(tmp_path, train):
    run_dir = tmp_path / "r"
    assert train(run_dir, "train.max_steps=6", "train.log_interval=1", "train.checkpoint_interval=6")[0] == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # a line torn in the middle of the file
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert train(run_dir, "train.max_steps=8", "train.log_interval=1")[0] == 0
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 4, 5, 6, 7, 8]


# -- SIGTERM while fit and collect write: no temporary file or folder ----------------------------


SIGTERM_DURING = """
import os, signal, sys, time
{patch}
real = getattr(target, name)
def then_sigterm(*args, **kwargs):
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)  # while the outputs are written: part of them exist
    time.sleep(30)
    return result
setattr(target, name, then_sigterm)
from ladder.cli import main
sys.exit(main(sys.argv[1:]))
"""


def table_file(tmp_path: Path) -> Path:
    """The fit tests' synthetic ladder table (tests/fit/fit_synthetic.py) as a CSV file."""
    spec = importlib.util.spec_from_file_location("fit_synthetic", REPO / "tests/fit/fit_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "table.csv"
    module.make_table(targets={"big": (2e9, 2e9 * 20 * 5)}, tasks=("t1", "t2")).to_csv(path, index=False)
    return path


def test_sigterm_while_collect_writes_leaves_no_temporary_file(tmp_path):
    from ladder.results import EvalRow
    from ladder.runs.directory import append_eval_rows

    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    append_eval_rows(run_dir, [EvalRow(run="a", role="ladder", N=1000, D=2e4, step=1, task="t", loss=1.0)])
    code = SIGTERM_DURING.format(patch="import pandas; target, name = pandas.DataFrame, 'to_csv'")
    result = subprocess.run(
        [sys.executable, "-c", code, "collect", str(tmp_path / "runs"), "-o", str(tmp_path / "out.csv")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 143, result.stderr
    assert "ladder collect: interrupted" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_sigterm_while_fit_writes_leaves_no_staging_folder(tmp_path):
    table = table_file(tmp_path)
    code = SIGTERM_DURING.format(patch="import ladder.report.fit as target; name = 'fit_markdown'")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "fit",
            str(table),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "0",
            "--no-plots",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 143, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


# -- progress where output is not a terminal -------------------------------------------------


def test_progress_lines_when_output_is_a_file(tmp_path, prepared_root):
    env = {"LADDER_PROGRESS_SECONDS": "0"}
    result = ladder(
        "train",
        "model=femto",
        f"run_dir={tmp_path / 'r'}",
        "train.max_steps=3",
        "train.threads=1",
        f"data.prepared_root={prepared_root}",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "train r: 3/3 steps (100.0%)" in result.stdout + result.stderr
    fit = ladder(
        "fit",
        str(table_file(tmp_path)),
        "--out",
        str(tmp_path / "out"),
        "--bootstrap",
        "0",
        "--no-plots",
        cwd=REPO,
        env=env,
    )
    assert fit.returncode == 0, fit.stderr
    assert "fit: 1/" in fit.stderr


# -- own corpus -------------------------------------------------------------------------------


def test_a_prepared_corpus_is_named_by_data_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(30):
        (texts / f"{i}.txt").write_text(f"Document {i}: a few words of my own corpus, repeated a little. " * 20)
    assert main(["data", "prepare", f"data.sources=[{texts}]", "data.name=mine"]) == 0
    first = capsys.readouterr().out
    assert first.count("data/mine") == 1 and "built" in first  # the summary, once
    assert main(["data", "prepare", "data.name=mine"]) == 0  # reused, not rebuilt from the default texts
    assert "up to date, reused" in capsys.readouterr().out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["data", "prepare", "data.name=mine"]) == 2
    assert "no corpus of that name" in one_line_error(capsys.readouterr().err, "data")
    assert not (elsewhere / "data").exists()
    assert main(["train", "data=mine"]) == 2
    assert "data.name=<name>" in one_line_error(capsys.readouterr().err, "train")


def test_unreadable_source_file_is_refused(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "ok.txt").write_text("readable")
    (texts / "locked.txt").write_text("secret")
    (texts / "locked.txt").chmod(0)
    code = (
        "import sys; from ladder.data.sources import resolve_source; from ladder.errors import LadderError\n"
        f"try: resolve_source({str(texts)!r})\nexcept LadderError as e: print(e); sys.exit(2)"
    )
    as_user = {"user": 65534, "group": 65534} if os.geteuid() == 0 else {}  # root reads everything
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            **as_user,
        )
    except PermissionError:
        pytest.skip("cannot run a process as another user here")
    if as_user and "ModuleNotFoundError" in result.stderr or "Permission denied: '" in result.stderr:
        pytest.skip(f"the unprivileged user cannot import ladder here: {result.stderr.splitlines()[-1]}")
    assert result.returncode == 2, result.stderr
    assert "locked.txt (permission denied)" in result.stdout


# -- eval, status, help, predict ---------------------------------------------------------------


def test_eval_of_a_run_dir_agrees_with_its_eval_rows(tmp_path, train, capsys):
    run_dir = tmp_path / "r"
    assert train(run_dir, "train.max_steps=2", "tasks=cpu", "tasks.max_questions=30")[0] == 0
    in_loop = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert main(["eval", str(run_dir), "-o", str(tmp_path / "e.csv")]) == 0
    table = pd.read_csv(tmp_path / "e.csv")
    assert set(table["n_questions"]) == {30}
    for row in in_loop:
        again = table[table["task"] == row["task"]].iloc[0]
        assert again["loss"] == pytest.approx(row["loss"]) and again["flops"] == pytest.approx(row["flops"])
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--cfg", "job"]) == 0
    assert "max_questions: 30" in capsys.readouterr().out
    assert main(["eval", str(run_dir), "model=13B", "train.threads=7"]) == 2
    assert "model=13B" in one_line_error(capsys.readouterr().err, "eval")


def test_a_broken_checkpoint_is_one_line_without_torch_advice(tmp_path, capsys):
    import torch

    whole, cut, garbage = tmp_path / "whole.pt", tmp_path / "cut.pt", tmp_path / "garbage.pt"
    torch.save({"model": torch.zeros(10_000)}, whole)
    cut.write_bytes(whole.read_bytes()[:1000])
    garbage.write_text("not a checkpoint")
    for path in (cut, garbage):
        assert main(["eval", str(path), "tasks=cpu"]) == 2
        line = one_line_error(capsys.readouterr().err, "eval")
        assert "truncated or not a torch file" in line and "weights_only" not in line


def test_a_sweep_that_falls_short_says_so_on_stderr(tmp_path, prepared_root, capsys):
    root = tmp_path / "sweep"
    (root / "femto-2xC").mkdir(parents=True)
    (root / "femto-2xC" / "config.yaml").write_text("seed: 7\n")  # a run dir holding another run
    code = main(
        [
            "sweep",
            "ladder=demo",
            f"ladder.sweep_root={root}",
            "ladder.only=[femto-1xC,femto-2xC]",
            "train.max_steps=1",
            "train.threads=1",
            f"data.prepared_root={prepared_root}",
            "wandb.mode=disabled",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "femto-2xC: failed" in captured.out
    assert "no tasks" in captured.err and "not every rung got what was asked" in captured.err


def test_train_help_is_titled_train(tmp_path):
    result = ladder("train", "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("train is powered by Hydra")


def test_wandb_run_has_the_rung_a_group_and_tags(tmp_path, train):
    run_dir = tmp_path / "mysweep" / "femto-1xC"
    assert train(run_dir, "train.max_steps=1", "wandb.mode=offline", "rung=femto-1xC")[0] == 0
    wanted = (b"mysweep", b"femto", b"1xC")  # group and tags

    def complete(record: bytes) -> bool:
        return (b'"N": 12432' in record or b'"N":12432' in record) and all(text in record for text in wanted)

    # wandb's own service process may still be writing the offline record when the trainer exits
    deadline = time.monotonic() + 60
    while not complete(record := next(run_dir.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()):
        assert time.monotonic() < deadline, (
            f"the offline wandb record lacks the rung record, group or tags: {record[:200]!r}"
        )
        time.sleep(0.2)


def test_predict_shows_no_empty_actual_columns_and_warns_below_the_ladder(tmp_path, capsys):
    table = table_file(tmp_path)
    assert (
        main(["predict", str(table), "--bootstrap", "0", "--target", "huge:7e9:4e12", "--target", "small:10:1e6"]) == 0
    )
    captured = capsys.readouterr()
    assert "actual" not in captured.out and "abs err" not in captured.out
    assert "target small" in captured.err and "huge" not in captured.err
