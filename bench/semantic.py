"""The semantic stage against the `semantic-router` library, same encoder, same data, side by side.

    python bench/semantic.py [--data ../shared/data] [--queries 1000] [--single 200] [--seed 0]

Datasets: BANKING77 (train routes, test queries) and CLINC150 (train routes, val
queries, with out-of-scope). Both systems use the very same all-MiniLM-L6-v2
object: ours through `providers.encoders.LocalMiniLM`, semantic-router's through
a `DenseEncoder` subclass wrapping it. Route examples go through the on-disk
cache in both; query texts never do, because query speed is measured.

semantic-router is set up as its documentation says: an `IndexedRouter` over
every in-scope train utterance (top_k=5, mean aggregation), its calibrator fitted
(`fit`, Platt) on held-out train queries (10% of each route, out-of-scope as
None) with a router over the other 90%, then given to the router over all the
utterances with confidence_threshold=0.5. Ours is `tierflow eval semantic`'s
code: `SemanticRoutes.fit` over the same train file.

Queries/s include encoding. Ours: one batched call. semantic-router: its public
API, one `router(query)` per query; its internal batched path (`_scores_many`,
what its `fit`/`evaluate` use) is shown too. Single-query latency is measured
on --single queries per system. semantic-router must be importable (it pins an
older openai than tierflow, so it may live in another virtualenv that also sees
tierflow's packages); without it, only our rows are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tierflow.providers.encoders import CachedEncoder, LocalMiniLM  # noqa: E402
from tierflow.providers.labelled import OUT_OF_SCOPE, LabelledText, fit_routes, read_labelled  # noqa: E402
from tierflow.routing.semantic import Outcome, SemanticMatch, SemanticRoutes  # noqa: E402
from tierflow.worker.cli_eval import classify_texts  # noqa: E402
from tierflow.worker.cli_eval_semantic import SemanticReport, report  # noqa: E402

DATASETS = (("banking77", "train", "test"), ("clinc150", "train", "val"))
BATCH = 64


@dataclass(frozen=True)
class Latency:
    system: str
    mode: str
    queries_per_s: float
    decided_per_s: float
    p50_ms: float | None
    p99_ms: float | None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--queries", type=int, default=1000, help="queries sampled per dataset (0: all)")
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time per system")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".tierflow" / "embeddings")
    return parser.parse_args(argv)


def sample(rows: list[LabelledText], n: int, seed: int) -> list[LabelledText]:
    if n <= 0 or n >= len(rows):
        return rows
    picked = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    return [rows[int(i)] for i in picked]


def time_single(classify_one: Any, texts: list[str]) -> tuple[list[float], int]:
    """Seconds per query, and how many were decided, calling `classify_one(text) -> decided`."""
    seconds, decided = [], 0
    for text in texts:
        started = time.perf_counter()
        decided += bool(classify_one(text))
        seconds.append(time.perf_counter() - started)
    return seconds, decided


def single_latency(system: str, seconds: list[float], decided: int) -> Latency:
    total = sum(seconds)
    p50 = statistics.median(seconds) * 1000
    p99 = float(np.percentile(seconds, 99)) * 1000
    return Latency(system, "single", len(seconds) / total, decided / total, p50, p99)


def run_ours(
    encoder: LocalMiniLM, cache: Path, train: list[LabelledText], test: list[LabelledText], single: int
) -> tuple[SemanticReport, list[Latency]]:
    routes = fit_routes(CachedEncoder(encoder, cache), train)
    encoder.encode([row.text for row in test[:BATCH]])  # warm-up: loading the model is not query time
    matches, seconds, _ = classify_texts(routes, encoder, [row.text for row in test], BATCH)
    result = report(matches, test, seconds)
    decided = sum(match.decided for match in matches)
    batched = Latency("tierflow", "batched", len(test) / seconds, decided / seconds, None, None)
    texts = [row.text for row in test[:single]]
    per_query, decided_one = time_single(lambda text: _ours_one(routes, encoder, text), texts)
    return result, [single_latency("tierflow", per_query, decided_one), batched]


def _ours_one(routes: SemanticRoutes, encoder: LocalMiniLM, text: str) -> bool:
    return routes.classify(encoder.encode([text]))[0].decided


def theirs_encoder(encoder: LocalMiniLM, cache: Path) -> Any:
    """Our MiniLM object behind semantic-router's encoder interface; utterances go through the cache."""
    from pydantic import PrivateAttr
    from semantic_router.encoders import DenseEncoder
    from semantic_router.encoders.base import AsymmetricDenseMixin

    class TierflowMiniLM(DenseEncoder, AsymmetricDenseMixin):  # type: ignore[misc]
        name: str = encoder.name
        type: str = "tierflow"
        _queries: Any = PrivateAttr()
        _documents: Any = PrivateAttr()

        def __call__(self, docs: list[Any]) -> list[list[float]]:
            return self.encode_queries(docs)

        def encode_queries(self, docs: list[str]) -> list[list[float]]:
            return self._queries.encode(list(docs)).tolist()  # type: ignore[no-any-return]

        def encode_documents(self, docs: list[str]) -> list[list[float]]:
            return self._documents.encode(list(docs)).tolist()  # type: ignore[no-any-return]

        async def aencode_queries(self, docs: list[str]) -> list[list[float]]:
            return await asyncio.to_thread(self.encode_queries, docs)

        async def aencode_documents(self, docs: list[str]) -> list[list[float]]:
            return await asyncio.to_thread(self.encode_documents, docs)

    wrapped = TierflowMiniLM()
    wrapped._queries = encoder
    wrapped._documents = CachedEncoder(encoder, cache)
    return wrapped


def build_theirs(encoder: Any, train: list[LabelledText], seed: int) -> Any:
    """An IndexedRouter over all the utterances, calibrated on 10% held out of a 90% router."""
    from semantic_router import IndexedRouter, Route

    by_intent: dict[str, list[str]] = {}
    for row in train:
        if row.intent != OUT_OF_SCOPE:
            by_intent.setdefault(row.intent, []).append(row.text)
    rng = np.random.default_rng(seed)
    kept: list[Any] = []
    held_x: list[str] = []
    held_y: list[str | None] = []
    for intent, texts in by_intent.items():
        order = rng.permutation(len(texts))
        cut = max(1, len(texts) // 10) if len(texts) > 1 else 0
        held_x += [texts[i] for i in order[:cut]]
        held_y += [intent] * cut
        kept.append(Route(name=intent, utterances=[texts[i] for i in order[cut:]]))
    oos = [row.text for row in train if row.intent == OUT_OF_SCOPE]
    calibrating = IndexedRouter(encoder=encoder, routes=kept, top_k=5, aggregation="mean")
    calibrating.fit(held_x + oos, held_y + [None] * len(oos))
    routes = [Route(name=intent, utterances=texts) for intent, texts in by_intent.items()]
    return IndexedRouter(
        encoder=encoder,
        routes=routes,
        top_k=5,
        aggregation="mean",
        calibrator=calibrating.calibrator,
        confidence_threshold=0.5,
    )


def run_theirs(
    encoder: LocalMiniLM, cache: Path, train: list[LabelledText], test: list[LabelledText], args: Any
) -> tuple[SemanticReport, SemanticReport, list[Latency]]:
    """semantic-router's figures: via its public per-query call, and via its internal batch."""
    from semantic_router.routers.base import run

    router = build_theirs(theirs_encoder(encoder, cache), train, args.seed)
    run(router._scores_many([row.text for row in test[:BATCH]]))  # warm-up, as ours
    texts = [row.text for row in test]
    started = time.perf_counter()
    scored = run(router._scores_many(texts))
    matches = [_their_match(router, scores) for scores in scored]
    seconds = time.perf_counter() - started
    batched_report = report(matches, test, seconds)
    decided = sum(match.decided for match in matches)
    batched = Latency("semantic-router", "batched", len(texts) / seconds, decided / seconds, None, None)
    per_query, decided_one = time_single(lambda text: router(text).name is not None, texts[: args.single])
    single = single_latency("semantic-router", per_query, decided_one)
    public = SemanticReport(**{**batched_report.as_dict(), "queries_per_s": round(single.queries_per_s, 1)})
    return public, batched_report, [single, batched]


def _their_match(router: Any, scores: dict[str, float]) -> SemanticMatch:
    """semantic-router's choice as our match: its top route, decided when it clears its bar."""
    top = max(scores, key=scores.__getitem__)
    chosen = router._choose(scores, 1, None)
    outcome = Outcome.DECIDED if chosen.name is not None else Outcome.LOW_SCORE
    return SemanticMatch(top, scores[top], None, None, router.confidence_threshold, outcome)


def _cell(value: float | int | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or not theirs else f"{ours / theirs:.2f}x"


def print_quality(rows: list[tuple[str, str, SemanticReport]]) -> None:
    fields = ["accuracy", "decided_share", "decided_accuracy", "oos_recall", "queries_per_s"]
    print(f"{'dataset':<10} {'system':<32} " + " ".join(f"{f:>16}" for f in fields))
    for dataset, system, result in rows:
        values = result.as_dict()
        cells = [_cell(values[f], 1 if f == "queries_per_s" else 4) for f in fields]  # type: ignore[arg-type]
        print(f"{dataset:<10} {system:<32} " + " ".join(f"{c:>16}" for c in cells))


def print_ratios(dataset: str, ours: SemanticReport, theirs: SemanticReport, label: str) -> None:
    fields = ["accuracy", "decided_share", "decided_accuracy", "oos_recall", "queries_per_s"]
    a, b = ours.as_dict(), theirs.as_dict()
    cells = [_ratio(a[f], b[f]) for f in fields]  # type: ignore[arg-type]
    print(f"{dataset:<10} {'ours/' + label:<32} " + " ".join(f"{c:>16}" for c in cells))


def print_latency(dataset: str, rows: list[Latency]) -> None:
    for row in rows:
        p50, p99 = _cell(row.p50_ms, 2), _cell(row.p99_ms, 2)
        print(
            f"{dataset:<10} {row.system:<16} {row.mode:<8} {row.queries_per_s:>10.1f} "
            f"{row.decided_per_s:>12.1f} {p50:>9} {p99:>9}"
        )


def has_semantic_router() -> bool:
    try:
        import semantic_router  # noqa: F401
    except ImportError as exc:
        print(f"semantic-router is not importable ({exc}): only tierflow's rows", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    encoder = LocalMiniLM(batch_size=BATCH)
    compare = has_semantic_router()
    quality: list[tuple[str, str, SemanticReport]] = []
    ratios: list[tuple[str, SemanticReport, SemanticReport, SemanticReport]] = []
    latencies: list[tuple[str, list[Latency]]] = []
    for name, train_file, test_file in DATASETS:
        train = read_labelled(args.data / name / f"{train_file}.jsonl")
        test = sample(read_labelled(args.data / name / f"{test_file}.jsonl"), args.queries, args.seed)
        single = min(args.single, len(test))
        print(
            f"{name}: {len(train)} route examples, {len(test)} queries, {single} timed one at a time",
            file=sys.stderr,
            flush=True,
        )
        ours, ours_latency = run_ours(encoder, args.cache_dir, train, test, single)
        quality.append((name, "tierflow (batched)", ours))
        latencies.append((name, ours_latency))
        if compare:
            public, batched, their_latency = run_theirs(encoder, args.cache_dir, train, test, args)
            quality += [
                (name, "semantic-router (per call)", public),
                (name, "semantic-router (batch)", batched),
            ]
            ratios.append((name, ours, public, batched))
            latencies.append((name, their_latency))
    print_quality(quality)
    for name, ours, public, batched in ratios:
        print_ratios(name, ours, public, "sr per call")
        print_ratios(name, ours, batched, "sr batch")
    print()
    heads = f"{'queries/s':>10} {'decided/s':>12} {'p50 ms':>9} {'p99 ms':>9}"
    print(f"{'dataset':<10} {'system':<16} {'mode':<8} {heads}")
    for name, rows in latencies:
        print_latency(name, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
