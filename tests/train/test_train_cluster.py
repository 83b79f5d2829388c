"""What a cluster does to a run, done for real on CPU: distributed evaluation (two gloo
processes score what one scores), a rank that raises (the group ends at once, FAILED names it),
srun's variables without torchrun, SIGTERM to torchrun, one corpus fingerprint, time-based
checkpoints, a stop during evaluation, and locks where flock is not supported."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from child_processes import child_env, torchrun, wait_for_steps
from femto_runs import femto_overrides, losses
from spawn import free_port
from torchrun_worker import femto_for_eval, val_bpb

from ladder import cli
from ladder.errors import LadderError
from ladder.hydra_app import compose_config
from ladder.runs.directory import RunDir
from ladder.train import run_training

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data

WORKER = Path(__file__).with_name("torchrun_worker.py")


def worker(*args: str) -> list[str]:
    """torchrun_worker.py with `args` in two processes under torchrun."""
    return torchrun(str(WORKER), *args)


def train_args(run_dir: Path, prepared_root: Path, *overrides: str) -> list[str]:
    return ["train", f"run_dir={run_dir}", f"data.prepared_root={prepared_root}", "wandb.mode=disabled", *overrides]


def test_two_process_evaluation_equals_one_process(tmp_path, prepared_root):
    """Questions and validation windows shared between two gloo processes, metrics gathered:
    the same scores as one process (fp32) to 1e-6. 37 questions: the shards are unequal."""
    out = tmp_path / "dist" / "scores.json"
    out.parent.mkdir()
    result = subprocess.run(
        worker(str(prepared_root)),
        env=child_env(LADDER_TEST_EVAL=str(out)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    distributed = json.loads(out.read_text())

    from ladder.tasks import evaluate, load_tasks
    from ladder.train.distributed import DistContext

    cfg, corpus, model = femto_for_eval(prepared_root)
    tasks = load_tasks(list(cfg.tasks.names), corpus=corpus, max_questions=37, seed=cfg.tasks.seed)
    single = evaluate(model, corpus.tokenizer, tasks, batch_size=cfg.tasks.batch_size)
    assert set(distributed["scores"]) == {
        f"{t}/{m}" for t in single for m in ("loss", "acc", "acc_raw", "soft", "soft_log")
    }
    for name, score in single.items():
        for metric in ("loss", "acc", "acc_raw", "soft", "soft_log"):
            assert distributed["scores"][f"{name}/{metric}"] == pytest.approx(getattr(score, metric), abs=1e-6)
    bpb = val_bpb(model, corpus, DistContext(0, 0, 1, torch.device("cpu")))
    assert distributed["val_bpb"] == pytest.approx(bpb, abs=1e-6)
    rows = [json.loads(line) for line in (out.parent / "eval.jsonl").read_text().splitlines()]
    assert sorted(row["task"] for row in rows) == sorted(single)  # rank 0 alone wrote them
    assert {row["n_questions"] for row in rows} == {37}


def test_an_exception_on_rank_1_ends_the_group_at_once_and_failed_names_it(tmp_path, prepared_root):
    run_dir = tmp_path / "femto"
    started = time.monotonic()
    result = subprocess.run(
        worker(*train_args(run_dir, prepared_root, *femto_overrides(60), "train.timeout_min=10")),
        env=child_env(LADDER_TEST_FAIL_RANK="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    failed = json.loads((run_dir / "FAILED").read_text())
    assert failed["rank"] == 1 and failed["step"] == 2
    assert failed["error"] == "rank 1: RuntimeError: injected failure"
    assert elapsed < 120, f"the group took {elapsed:.0f} s to end (timeout: 600 s)"
    assert cli.main(["status", str(tmp_path)]) == 1


def test_srun_without_torchrun_forms_one_group_from_slurm_variables(tmp_path, prepared_root, reference):
    """Two tasks as `srun -n 2 ladder train` starts them: SLURM_PROCID/LOCALID/NTASKS only."""
    run_dir = tmp_path / "femto-srun"
    port = free_port()  # which the job id must map to (20000 + id % 40000)
    job_id = str(port - 20_000 if port >= 20_000 else port + 20_000)
    tasks = []
    for rank in range(2):
        slurm = {
            "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_STEP_ID": "0",
            "SLURM_NNODES": "1",
            "SLURM_JOB_ID": job_id,
        }
        clean = {
            k: v
            for k, v in child_env(**slurm).items()
            if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
        }
        tasks.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ladder",
                    *train_args(run_dir, prepared_root, *femto_overrides(60), "train.max_steps=10"),
                ],
                env=clean,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [task.communicate(timeout=300) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert [out.count(f"stopped: {run_dir} at step 10") for out, _ in outputs] == [1, 0]  # rank 0 speaks for both
    expected, got = losses(reference), losses(run_dir)
    assert sorted(got) == list(range(1, 11))
    assert max(abs(got[s] - expected[s]) for s in got) < 1e-4  # one DDP run of the global batch


def test_srun_on_several_nodes_without_a_rendezvous_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"SLURM_NTASKS": "16", "SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NNODES": "2"}.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["train", f"run_dir={tmp_path / 'run'}", "model=femto"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "srun on several nodes without torchrun" in err
    assert not (tmp_path / "run").exists()


def test_sigterm_to_torchrun_checkpoints_within_its_shutdown_window(tmp_path, prepared_root):
    run_dir = tmp_path / "femto"
    process = subprocess.Popen(
        worker(
            *train_args(
                run_dir,
                prepared_root,
                *femto_overrides(5000),
                "train.checkpoint_interval=100000",
                "train.eval_interval=100000",
            )
        ),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_steps(process, run_dir, 3, timeout=120), process.communicate()[1][-3000:]
        process.send_signal(signal.SIGTERM)  # to the agent, as SLURM and Kubernetes do
        sent = time.monotonic()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert time.monotonic() - sent < 30, "past torchrun's shutdown window"
    latest = RunDir(run_dir).latest_checkpoint
    state = json.loads((latest / "trainer.json").read_text())
    assert state["step"] >= 3 and state["step"] == max(losses(run_dir))
    assert not (run_dir / "DONE").exists() and not (run_dir / "FAILED").exists()
    assert f"stop signal: checkpoint at step {state['step']}" in out + err


def test_only_data_prepare_hashes_the_corpus(tmp_path, monkeypatch):
    """`ladder data prepare` hashes; `ladder train` under two-process torchrun hashes nothing on
    either rank (rank 0 compares sizes and times); after a source changed, rank 0's check hashes
    once (same content: reused, and the new times recorded), then no more."""
    from ladder.data import training_corpus
    from ladder.data.sources import Source

    source = tmp_path / "corpus.txt"
    source.write_text("".join(f"Document {i}: the quick brown fox jumps over the lazy dog.\n\n" for i in range(300)))
    data = [f"data.sources=[{source}]", f"data.prepared_root={tmp_path / 'prepared'}", "data.name=mine"]
    hashes = tmp_path / "hashes.log"
    prepare = subprocess.run(
        [sys.executable, str(WORKER), "data", "prepare", *data],
        env=child_env(LADDER_TEST_HASH_LOG=str(hashes)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prepare.returncode == 0, prepare.stderr[-2000:]
    assert hashes.read_text().split() == ["0"]

    hashes.write_text("")
    result = subprocess.run(
        worker(*train_args(tmp_path / "run", tmp_path / "prepared", *data, "model=femto", "train.max_steps=2")),
        env=child_env(LADDER_TEST_HASH_LOG=str(hashes)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert hashes.read_text().split() == []

    counted = []
    content_hash = Source.content_hash
    monkeypatch.setattr(Source, "content_hash", lambda self: (counted.append(self.spec), content_hash(self))[1])
    data_cfg = compose_config(data).data
    os.utime(source)  # touched: same bytes, new time
    assert training_corpus(data_cfg).reused and counted == [str(source)]
    assert training_corpus(data_cfg).reused and counted == [str(source)]


def test_checkpoint_minutes_checkpoints_by_time(tmp_path, make_cfg, monkeypatch):
    from ladder.train import loop

    saved: list[int] = []
    save = loop._Trainer.save
    monkeypatch.setattr(loop._Trainer, "save", lambda self, path=None: (saved.append(self.step), save(self, path))[1])
    overrides = [*femto_overrides(60), "train.max_steps=4", "train.checkpoint_interval=1000"]
    run_training(make_cfg(tmp_path / "by-steps", *overrides, "train.checkpoint_minutes=null"))
    assert saved == [4]  # the last step only
    saved.clear()
    run_training(make_cfg(tmp_path / "by-time", *overrides, "train.checkpoint_minutes=1e-9"))
    assert saved == [1, 2, 3, 4]  # before every step after the first: the time had passed


def test_a_stop_during_evaluation_is_honoured_and_the_evaluation_redone_on_resume(tmp_path, make_cfg, monkeypatch):
    from ladder.tasks import scoring

    stop = threading.Event()
    score_questions = scoring.score_questions

    def stop_as_scoring_starts(*args, **kwargs):  # a SIGTERM that lands during the evaluation
        stop.set()
        return score_questions(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_questions", stop_as_scoring_starts)
    run_dir = tmp_path / "femto"
    overrides = [*femto_overrides(6), "tasks=cpu", "tasks.max_questions=20", "train.eval_interval=3"]
    outcome = run_training(make_cfg(run_dir, *overrides), stop=stop)
    assert (outcome.status, outcome.step) == ("stopped", 3)
    assert not (run_dir / "eval.jsonl").exists() and sorted(losses(run_dir)) == [1, 2]
    monkeypatch.setattr(scoring, "score_questions", score_questions)
    assert run_training(make_cfg(run_dir, *overrides)).status == "done"
    assert sorted(losses(run_dir)) == list(range(1, 7))  # step 3 logged once, with its evaluation
    rows = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert sorted({row["step"] for row in rows}) == [3, 6]


def test_in_loop_evaluations_score_a_fixed_subset_and_the_final_one_every_question(tmp_path, make_cfg):
    run_dir = tmp_path / "femto"
    cfg = make_cfg(
        run_dir,
        *femto_overrides(4),
        "tasks=cpu",
        "tasks.max_questions=30",
        "tasks.in_loop_questions=7",
        "train.eval_interval=2",
    )
    assert run_training(cfg).status == "done"
    rows = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert {(row["step"], row["n_questions"]) for row in rows} == {(2, 7), (4, 30)}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(record["eval_s"] > 0 for record in records if "val_bpb" in record)


def test_flock_unsupported_is_named_and_train_lock_file_works(tmp_path, make_cfg, monkeypatch):
    """No filesystem here lacks flock (NFS or Lustre cannot be mounted): flock is made to fail as
    it fails there, with ENOLCK."""
    run_dir = tmp_path / "femto"

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    with monkeypatch.context() as patch:
        patch.setattr(fcntl, "flock", no_locks)
        with pytest.raises(
            LadderError, match="file locks \\(flock\\) are not supported on the filesystem of .* set train.lock=file"
        ):
            run_training(make_cfg(run_dir, *femto_overrides(2)))
        assert not (run_dir / "RUNNING").exists()
        assert run_training(make_cfg(run_dir, *femto_overrides(2), "train.lock=file")).status == "done"
    assert not (run_dir / ".lock.held").exists()  # the lock file goes with the session


def test_lock_file_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    with run_dir.session("file"):
        with pytest.raises(LadderError, match="is being trained by process"):
            with run_dir.session("file"):
                pass
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run" / ".lock.held").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    with run_dir.session("file"):  # its process is gone: taken over
        assert json.loads((tmp_path / "run" / ".lock.held").read_text())["pid"] == os.getpid()
    (tmp_path / "run" / ".lock.held").write_text(json.dumps({"host": "another-node", "pid": 1}))
    with pytest.raises(LadderError, match="held by process 1 on another-node \\(if that process is gone, remove"):
        with run_dir.session("file"):
            pass
    with run_dir.session("none"):
        pass
