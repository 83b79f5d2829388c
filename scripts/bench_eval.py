"""Evaluation speed: seconds per 1,000 four-choice questions, and the in-loop share of training.

    .venv/bin/python scripts/bench_eval.py [--size base] [--questions 1000] [--repeats 3]

1. Scores `--questions` four-choice ARC-Easy questions (OLMES 5-shot, contexts cut to the model's
   256 bytes) and as many corpus_next_word questions with a freshly initialised `--size` decoder
   (base: ~1.08M parameters) on CPU; prints the median seconds per 1,000 questions
   (`--compare-generic`: also without computing each shared context once).
2. For the `tiny` 1xC rung: the median time of one training step (forward, backward, AdamW) at the
   rung's batch, and of one in-loop evaluation of conf/tasks/cpu.yaml (task count and
   max_questions as configured); prints the evaluation's share of the rung's training time at the
   default eval_interval (the last step is always evaluated).
Timings are medians of process CPU seconds (all threads), measured in one run, so that jobs
sharing the machine change them little; the ratio in 2 is the robust figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ladder.config import TasksConfig, TrainConfig  # noqa: E402
from ladder.data import load_tokenizer, prepare_corpus  # noqa: E402
from ladder.hydra_app import compose_config  # noqa: E402
from ladder.model import Decoder  # noqa: E402
from ladder.rungs import make_rung  # noqa: E402
from ladder.sizes import get_shape, paper_params  # noqa: E402
from ladder.tasks import Task, evaluate, load_tasks  # noqa: E402


def median_seconds(action, repeats: int) -> float:
    """Median CPU seconds of this process (user + system) over `repeats` runs of `action`.

    CPU time rather than wall time: on a machine shared with other jobs, wall time mostly
    measures the others; both figures are printed by `timed`.
    """
    times = []
    for _ in range(repeats):
        start = time.process_time()
        action()
        times.append(time.process_time() - start)
    return statistics.median(times)


def four_choice(task: Task, count: int) -> Task:
    questions = [q for q in task.questions if len(q.choices) == 4][:count]
    return replace(task, questions=questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="base", help="decoder preset for the speed test (base ~1.08M)")
    parser.add_argument("--questions", type=int, default=1000, help="0 skips part 1")
    parser.add_argument("--repeats", type=int, default=1, help="runs of the 1,000 questions (median)")
    parser.add_argument("--loop-repeats", type=int, default=3, help="runs of the in-loop evaluation (median)")
    parser.add_argument("--batch-size", type=int, default=TasksConfig().batch_size)
    parser.add_argument(
        "--compare-generic", action="store_true", help="also time scoring every (context, choice) separately"
    )
    parser.add_argument("--prepared-root", default="data", help="where the default corpus is (or will be) prepared")
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = load_tokenizer("byte")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; times are CPU seconds of this process")

    cfg = compose_config([f"data.prepared_root={args.prepared_root}", "tasks=cpu"])
    corpus = prepare_corpus(cfg.data)

    model = Decoder(get_shape(args.size))
    print(
        f"\n1. {args.size}: N = {paper_params(model.shape):,} (paper count), seq_len {model.seq_len}, batch {args.batch_size}"
    )
    for task in (
        (load_tasks(["arc_easy"])[0], load_tasks(["corpus_next_word"], corpus=corpus)[0]) if args.questions else ()
    ):
        task = four_choice(task, args.questions)
        shared = lambda: evaluate(model, tokenizer, [task], batch_size=args.batch_size)  # noqa: E731
        # The same model behind a wrapper that is not a Decoder: one forward per (context, choice).
        wrapped = torch.nn.Sequential(model)
        generic = lambda: evaluate(wrapped, tokenizer, [task], batch_size=args.batch_size, seq_len=model.seq_len)  # noqa: E731
        # Interleaved runs, so that a change in the machine's load hits both alike.
        times: dict[str, list[float]] = {"shared": [], "generic": []}
        for _ in range(args.repeats):
            times["shared"].append(median_seconds(shared, 1))
            if args.compare_generic:
                times["generic"].append(median_seconds(generic, 1))
        seconds = statistics.median(times["shared"])
        print(
            f"   {task.name:18s} {len(task.questions)} questions: {seconds:7.2f} s  = {seconds * 1000 / len(task.questions):7.2f} s per 1,000"
        )
        if args.compare_generic:
            slow = statistics.median(times["generic"])
            print(f"   {'':18s} without the shared context: {slow:7.2f} s ({slow / seconds:.1f}x the time)")

    rung = make_rung("tiny", 1.0)
    interval = TrainConfig().eval_interval
    tiny = Decoder(rung.shape)
    optimizer = torch.optim.AdamW(tiny.parameters(), lr=rung.peak_lr)
    batch = torch.randint(0, 256, (rung.batch_sequences, rung.seq_len + 1))

    def train_step() -> None:
        logits = tiny(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    train_step()  # warm-up
    step_seconds = median_seconds(train_step, 5)
    tasks = load_tasks(list(cfg.tasks.names), corpus=corpus, max_questions=cfg.tasks.max_questions, seed=cfg.tasks.seed)
    eval_seconds = median_seconds(
        lambda: evaluate(tiny, tokenizer, tasks, batch_size=cfg.tasks.batch_size), args.loop_repeats
    )
    evaluations = rung.steps // interval + (rung.steps % interval != 0)
    train_total = rung.steps * step_seconds
    share = evaluations * eval_seconds / (train_total + evaluations * eval_seconds)
    names = ", ".join(f"{t.name}({len(t.questions)})" for t in tasks)
    print(
        f"\n2. tiny 1xC rung: {rung.steps} steps of {rung.batch_sequences}x{rung.seq_len} tokens; eval every {interval} steps -> {evaluations} evaluations"
    )
    print(f"   training step {step_seconds * 1000:.1f} ms -> {train_total:.1f} s of training")
    print(f"   one evaluation of {names}: {eval_seconds:.2f} s")
    print(f"   in-loop task evaluation share of training time: {share:.1%}")


if __name__ == "__main__":
    main()
