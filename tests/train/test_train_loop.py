"""End to end on CPU: loss falls, the run dir is complete, resume is exact, errors are clear."""

import json
import os
import signal
import threading
import time

import pytest
import torch
from femto_runs import FEMTO_BATCH_TOKENS, femto_overrides, losses, write_legacy_checkpoint
from femto_runs import REFERENCE_STEPS as STEPS

from ladder import cli
from ladder.errors import LadderError
from ladder.results import REQUIRED_COLUMNS
from ladder.rungs import make_rung, rung_from_config
from ladder.runs.directory import RunDir, find_checkpoint, read_eval_rows
from ladder.train import run_training
from ladder.train.checkpoint import load_model

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data


def test_loss_falls_on_tiny_and_the_run_dir_is_complete(tmp_path, make_cfg):
    run_dir = tmp_path / "tiny"
    cfg = make_cfg(
        run_dir, "model=tiny", f"train.tokens={40 * 16 * 256}", "train.log_interval=5", "train.eval_interval=20"
    )
    outcome = run_training(cfg)
    assert (outcome.status, outcome.step, outcome.tokens) == ("done", 40, 40 * 16 * 256)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert records[-1]["loss"] < records[0]["loss"] - 1.5  # from ~5.3 (ln 256 = 5.5) to below 3
    assert {"step", "tokens", "loss", "lr", "grad_norm", "clip", "tokens_per_s", "mfu", "mem"} <= set(records[0])
    assert records[0]["mfu"] is None  # no peak FLOP/s for a CPU
    assert [r["step"] for r in records if "val_bpb" in r] == [20, 40]
    assert 1.5 < records[-1]["val_bpb"] < records[3]["val_bpb"] + 0.3
    rung = json.loads((run_dir / "rung.json").read_text())
    assert (rung["name"], rung["N"], rung["steps"], rung["batch_sequences"]) == ("tiny", 148_032, 40, 16)
    done = json.loads((run_dir / "DONE").read_text())
    assert done["step"] == 40 and done["loss"] == records[-1]["loss"] and done["suggested_clip"] > 0
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoint" / "step-00000040" / ".metadata").is_file()
    # A finished run re-run does nothing and says so.
    again = run_training(cfg)
    assert again.status == "skipped" and again.loss == done["loss"]
    # The checkpoint rebuilds the model for `ladder eval`.
    model, saved_cfg = load_model(run_dir)
    assert saved_cfg.model.preset == "tiny" and not model.training
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 256)
    assert rung == rung_from_config(cfg).to_record() and rung["total_params"] == model.num_params()


def test_the_trainer_trains_the_rung_it_is_handed(tmp_path, make_cfg):
    # The sweep hands over the grid's Rung: its budget wins over the config's keys.
    run_dir = tmp_path / "femto-handed"
    rung = make_rung("femto", tokens=4 * FEMTO_BATCH_TOKENS, name="femto-handed")
    outcome = run_training(make_cfg(run_dir, *femto_overrides(2)), rung=rung)
    assert (outcome.status, outcome.step) == ("done", 4)
    assert RunDir(run_dir).read_rung() == rung


def test_resume_after_max_steps_matches_uninterrupted(tmp_path, make_cfg, reference):
    run_dir = tmp_path / "femto"
    first = run_training(make_cfg(run_dir, *femto_overrides(STEPS), "train.max_steps=23"))
    assert first.status == "stopped" and first.step == 23 and not (run_dir / "DONE").exists()
    second = run_training(make_cfg(run_dir, *femto_overrides(STEPS)))
    assert second.status == "done" and second.step == STEPS
    expected, got = losses(reference), losses(run_dir)
    assert sorted(got) == list(range(1, STEPS + 1))  # no step logged twice or lost
    assert got[STEPS] == pytest.approx(expected[STEPS], abs=1e-6)
    assert max(abs(got[s] - expected[s]) for s in expected) < 1e-6


def test_sigterm_checkpoints_and_the_same_command_resumes_exactly(tmp_path, make_cfg, reference):
    run_dir = tmp_path / "femto"
    cfg = make_cfg(run_dir, *femto_overrides(STEPS))
    previous_handler = signal.getsignal(signal.SIGTERM)

    def preempt():  # SLURM-style: SIGTERM once the run is under way
        while (
            not (run_dir / "metrics.jsonl").is_file() or len((run_dir / "metrics.jsonl").read_text().splitlines()) < 5
        ):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=preempt)
    killer.start()
    stopped = run_training(cfg)
    killer.join()
    assert stopped.status == "stopped" and 5 <= stopped.step < STEPS
    assert signal.getsignal(signal.SIGTERM) is previous_handler  # handler restored (re-entrant)
    assert RunDir(run_dir).latest_checkpoint is not None and not (run_dir / "DONE").exists()
    finished = run_training(cfg)
    assert finished.status == "done"
    assert finished.loss == pytest.approx(losses(reference)[STEPS], abs=1e-6)


def test_a_run_started_before_sharded_checkpoints_resumes_from_its_latest_pt_exactly(tmp_path, make_cfg, reference):
    run_dir = tmp_path / "femto"
    run_training(make_cfg(run_dir, *femto_overrides(STEPS), "train.max_steps=23"))
    legacy = write_legacy_checkpoint(run_dir, make_cfg(run_dir, *femto_overrides(STEPS)))
    assert find_checkpoint(run_dir) == legacy and load_model(run_dir)[1].model.preset == "femto"  # `ladder eval`
    # Its config predates model.vocab_multiple (as 1): a multiple that pads the byte vocabulary to
    # another size is refused; today's default (128) keeps 256 and resumes.
    with pytest.raises(LadderError, match=r"another config \(model.vocab_multiple: 1 -> 384\); set those back"):
        run_training(make_cfg(run_dir, *femto_overrides(STEPS), "model.vocab_multiple=384"))
    outcome = run_training(make_cfg(run_dir, *femto_overrides(STEPS)))
    assert (outcome.status, outcome.step) == ("done", STEPS)
    expected, got = losses(reference), losses(run_dir)
    assert sorted(got) == list(range(1, STEPS + 1))  # no step logged twice or lost
    assert max(abs(got[s] - expected[s]) for s in expected) < 1e-6
    assert legacy.is_file() and (run_dir / "checkpoint" / "step-00000023" / "trainer.json").is_file()


def test_a_latest_pt_that_cannot_continue_the_run_is_refused_not_restarted(tmp_path, make_cfg):
    run_dir = tmp_path / "femto"
    overrides = (*femto_overrides(10), "model.vocab_multiple=1")
    run_training(make_cfg(run_dir, *overrides, "train.max_steps=2"))
    legacy = write_legacy_checkpoint(run_dir, make_cfg(run_dir, *overrides))
    state = torch.load(legacy, weights_only=True)
    torch.save(state | {"shape": state["shape"] | {"n_layers": 3}}, legacy)
    with pytest.raises(LadderError, match=r"latest.pt holds a model of shape .* n_layers=3.*; resume it with the"):
        run_training(make_cfg(run_dir, *overrides))
    legacy.write_bytes(legacy.read_bytes()[:1000])  # truncated
    with pytest.raises(LadderError, match=r"latest.pt: not a readable ladder checkpoint"):
        run_training(make_cfg(run_dir, *overrides))
    assert [p.name for p in (run_dir / "checkpoint").iterdir()] == ["latest.pt"]  # nothing written
    assert sorted(losses(run_dir)) == [1, 2]


def test_nonfinite_loss_stops_with_a_clear_error_and_a_diagnostic_checkpoint(tmp_path, make_cfg):
    run_dir = tmp_path / "diverge"
    with pytest.raises(LadderError, match=r"step 2: loss nan .* not finite .*diagnostic checkpoint"):
        run_training(make_cfg(run_dir, *femto_overrides(10), "optim.lr=1e30"))
    assert (run_dir / "checkpoint" / "diagnostic-step2" / ".metadata").is_file()
    assert "not finite" in json.loads((run_dir / "FAILED").read_text())["error"]
    assert not (run_dir / "DONE").exists()


def test_a_nonfinite_loss_between_host_syncs_is_named_and_never_checkpointed(tmp_path, make_cfg):
    # Losses are read every 5 steps; a checkpoint due by the clock (every step here) reads them first.
    run_dir = tmp_path / "diverge"
    overrides = (*femto_overrides(10), "optim.lr=1e30", "train.log_interval=5")
    with pytest.raises(LadderError, match=r"^step 2: loss (nan|inf) .* not finite .*read at step 2, past updates"):
        run_training(make_cfg(run_dir, *overrides, "train.checkpoint_minutes=1e-9"))
    assert [p.name for p in (run_dir / "checkpoint").iterdir()] == ["step-00000001"]  # before the first bad step
    failed = json.loads((run_dir / "FAILED").read_text())
    assert failed["error"].startswith("LadderError: step 2: ") and "no diagnostic checkpoint" in failed["error"]
    # No checkpoint in between: read at the next log step, the first bad step is still the one named.
    run_dir = tmp_path / "diverge-later"
    with pytest.raises(LadderError, match=r"^step 2: loss (nan|inf) .* read at step 5, .*no earlier checkpoint"):
        run_training(make_cfg(run_dir, *overrides))
    assert not (run_dir / "checkpoint").exists() and (run_dir / "FAILED").is_file()
    assert not (run_dir / "DONE").exists()


def test_changed_config_is_not_resumed_silently(tmp_path, make_cfg):
    run_dir = tmp_path / "femto"
    run_training(make_cfg(run_dir, *femto_overrides(10), "train.max_steps=2"))
    with pytest.raises(LadderError, match="another config.*optim.weight_decay"):
        run_training(make_cfg(run_dir, *femto_overrides(10), "optim.weight_decay=0.0"))


NO_CUDA = "device=cuda" if not torch.cuda.is_available() else "device=gpu"


@pytest.mark.parametrize(
    "override",
    [
        "model.preset=42M",
        "multiplier=-1",
        "model=42M",
        "train.tokens=-5",
        "multiplier=inf",
        "train.checkpoint_interval=0",
        "train.log_interval=0",
        "train.eval_interval=-1",
        "train.max_steps=0",
        "train.micro_batch_size=-1",
        "optim.lr=-1",
        "optim.name=adamx",
        "seed=-1",
        "wandb.mode=sometimes",
        NO_CUDA,
    ],
)
def test_bad_value_is_refused_before_any_work(tmp_path, prepared_root, capsys, override):
    run_dir = tmp_path / "never"
    code = cli.main(["train", override, f"run_dir={run_dir}", f"data.prepared_root={tmp_path / 'data'}"])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ladder train: error:") and len(error.splitlines()) == 1
    # Nothing was trained or prepared, and Hydra never started (no run dir, no log).
    assert not run_dir.exists()
    assert not (tmp_path / "data").exists()


def test_a_run_dir_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a run")
    assert cli.main(["train", "model=femto", f"run_dir={tmp_path / 'taken'}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("is a file, not a directory") and len(error.splitlines()) == 1


def test_a_finished_run_with_another_config_is_refused_and_left_untouched(tmp_path, make_cfg, prepared_root, capsys):
    run_dir = tmp_path / "femto"
    assert run_training(make_cfg(run_dir, *femto_overrides(3))).status == "done"
    hydra_config = run_dir / ".hydra" / "config.yaml"
    hydra_config.parent.mkdir()
    hydra_config.write_text("the first run's\n")
    argv = [
        "train",
        *femto_overrides(3),
        "optim.weight_decay=0.0",
        f"run_dir={run_dir}",
        f"data.prepared_root={prepared_root}",
        "wandb.mode=disabled",
    ]
    assert cli.main(argv) == 2
    assert "another config (optim.weight_decay: 0.1 -> 0.0)" in capsys.readouterr().err
    assert hydra_config.read_text() == "the first run's\n"  # refused before Hydra wrote anything
    assert run_training(make_cfg(run_dir, *femto_overrides(3))).status == "skipped"


def test_a_fresh_start_drops_rows_of_an_earlier_start_that_died(tmp_path, make_cfg):
    run_dir = tmp_path / "femto"
    run_dir.mkdir()
    stale = {
        "run": "femto",
        "role": "ladder",
        "N": 1,
        "D": 2.0,
        "step": 2,
        "task": "corpus_next_word",
        "loss": 9.0,
        "size": "tiny",
    }
    (run_dir / "eval.jsonl").write_text(json.dumps(stale) + "\n")  # killed before its first checkpoint
    overrides = (
        *femto_overrides(4),
        "tasks.names=[corpus_next_word]",
        "tasks.max_questions=4",
        "train.eval_interval=2",
    )
    run_training(make_cfg(run_dir, *overrides))
    rows = read_eval_rows(run_dir)
    assert [row["step"] for row in rows] == [2, 4] and {row["size"] for row in rows} == {"femto"}


def test_a_stop_requested_before_the_run_checkpoints_at_once(tmp_path, make_cfg):
    stop = threading.Event()
    stop.set()  # e.g. the sweep's SIGTERM handler, before the trainer installed its own
    outcome = run_training(make_cfg(tmp_path / "femto", *femto_overrides(10)), stop=stop)
    assert (outcome.status, outcome.step) == ("stopped", 0)
    assert (tmp_path / "femto" / "checkpoint" / "step-00000000").is_dir()
    assert not (tmp_path / "femto" / "RUNNING").exists()


def test_ctrl_c_checkpoints_like_sigterm(tmp_path, make_cfg):
    run_dir = tmp_path / "femto"
    previous_handler = signal.getsignal(signal.SIGINT)

    def interrupt():
        while (
            not (run_dir / "metrics.jsonl").is_file() or len((run_dir / "metrics.jsonl").read_text().splitlines()) < 3
        ):
            time.sleep(0.005)
        assert json.loads((run_dir / "RUNNING").read_text())["pid"] == os.getpid()
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt)
    interrupter.start()
    outcome = run_training(make_cfg(run_dir, *femto_overrides(STEPS)))
    interrupter.join()
    assert outcome.status == "stopped" and 3 <= outcome.step < STEPS
    assert RunDir(run_dir).latest_checkpoint is not None and not (run_dir / "RUNNING").exists()
    assert signal.getsignal(signal.SIGINT) is previous_handler


def test_a_run_dir_being_trained_is_refused(tmp_path, make_cfg):
    run_dir = tmp_path / "femto"
    with RunDir(run_dir).session():  # another trainer holds the run directory
        with pytest.raises(LadderError, match=f"is being trained by process {os.getpid()} on"):
            run_training(make_cfg(run_dir, *femto_overrides(3)))
        assert not (run_dir / "metrics.jsonl").exists()
    assert not (run_dir / "RUNNING").exists()
    assert run_training(make_cfg(run_dir, *femto_overrides(3))).status == "done"


def test_default_run_dir_uses_the_rung_name(make_cfg):
    from ladder.hydra_app import compose_config

    assert compose_config([]).run_dir == "runs/single/tiny-1xC"
    assert compose_config(["model=micro", "multiplier=0.5"]).run_dir == "runs/single/micro-0.5xC"
    # A token budget names the run by its tokens, not by the multiplier it overrides.
    assert compose_config(["model=micro", "train.tokens=40960"]).run_dir == "runs/single/micro-40960tok"


def test_task_evaluation_writes_results_rows(tmp_path, make_cfg):
    task_file = tmp_path / "colors.jsonl"
    questions = [{"context": f"The sky number {i} is", "choices": [" blue", " green"], "gold": 0} for i in range(6)]
    task_file.write_text("".join(json.dumps(q) + "\n" for q in questions))
    run_dir = tmp_path / "femto-tasks"
    cfg = make_cfg(
        run_dir,
        *femto_overrides(6),
        "train.eval_interval=3",
        f"tasks.names=[{task_file}]",
        "tasks.max_questions=4",
        "run_name=femto-demo",
    )
    run_training(cfg)
    rows = read_eval_rows(run_dir)
    assert [(row["step"], row["D"], row["task"]) for row in rows] == [
        (3, 3 * 2048.0, "colors"),
        (6, 6 * 2048.0, "colors"),
    ]
    assert set(REQUIRED_COLUMNS) <= set(rows[0]) and rows[0]["run"] == "femto-demo" and rows[0]["N"] == 12_432
    assert rows[0]["n_questions"] == 4 and 0 <= rows[1]["acc"] <= 1 and rows[1]["loss"] > 0


def test_evals_spreads_a_fixed_number_of_evaluations_over_the_run(tmp_path, make_cfg):
    task_file = tmp_path / "colors.jsonl"
    task_file.write_text(json.dumps({"context": "The sky is", "choices": [" blue", " green"], "gold": 0}) + "\n")
    run_dir = tmp_path / "femto-evals"
    run_training(make_cfg(run_dir, *femto_overrides(10), "train.evals=3", f"tasks.names=[{task_file}]"))
    assert [row["step"] for row in read_eval_rows(run_dir)] == [4, 8, 10]  # every ceil(10 / 3) steps, and the last


def test_thread_count_is_set_for_the_run_and_restored(tmp_path, make_cfg):
    torch.set_num_threads(2)
    try:
        outcome = run_training(make_cfg(tmp_path / "femto", *femto_overrides(2), "train.threads=1"))
        assert outcome.status == "done" and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_wandb_gets_the_rung_record_and_collect_reads_it_back(tmp_path, make_cfg, monkeypatch):
    from ladder.runs.collect import rows_from_wandb_history
    from ladder.train import loop
    from ladder.train.tracking import Tracker

    logged = {}

    class Recorded(Tracker):  # the real offline wandb run; keeps what wandb holds as its config
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            logged.update(json.loads(json.dumps(dict(self.run.config))))

    monkeypatch.setattr(loop, "Tracker", Recorded)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "femto-wandb"
    assert run_training(make_cfg(run_dir, *femto_overrides(2), "wandb.mode=offline")).status == "done"
    assert logged["rung_record"] == json.loads((run_dir / "rung.json").read_text())
    assert logged["rung"] is None and logged["model"]["preset"] == "femto"  # the config's own keys, untouched
    (row,) = rows_from_wandb_history("femto-wandb", logged, [{"_step": 2, "tokens": 4096, "piqa/loss": 2.0}])
    assert (row["N"], row["size"], row["role"], row["multiplier"]) == (12_432, "femto", "ladder", None)
