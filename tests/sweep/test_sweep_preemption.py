"""The preemption relay: submitit's signal -> SIGUSR1 for the trainer, then submitit's requeue."""

from __future__ import annotations

import os
import signal

from ladder.sweep.launch import PreemptionRelay


def test_relay_stops_the_trainer_first_then_hands_over_to_submitit(monkeypatch):
    calls: list[str] = []
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    previous = {
        signal.SIGUSR2: signal.signal(signal.SIGUSR2, lambda s, f: calls.append("submitit requeue")),
        signal.SIGUSR1: signal.signal(signal.SIGUSR1, lambda s, f: calls.append("trainer checkpoints")),
    }
    try:
        relay = PreemptionRelay()
        with relay.while_training():
            os.kill(os.getpid(), signal.SIGUSR2)  # SLURM: time limit in signal_delay_s seconds
        assert calls == ["trainer checkpoints"]
        relay.requeue_if_preempted()  # after run_training returned 'stopped'
        assert calls == ["trainer checkpoints", "submitit requeue"]
        os.kill(os.getpid(), signal.SIGUSR2)  # outside training: straight to submitit
        assert calls[-1] == "submitit requeue" and len(calls) == 3
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_no_relay_outside_submitit(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    relay = PreemptionRelay()
    assert relay.submitit_handler is None
    relay.requeue_if_preempted()  # nothing to do
