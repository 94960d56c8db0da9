"""`tierflow eval routing`: a router's quality-cost curve on recorded model outcomes, offline.

Reads files shaped like ../shared/data/routellm (`providers.outcomes_data`),
scores every test prompt with a baseline router and sweeps the threshold
(`routing.metrics`), then prints the evaluation contract (`--json`), a table, or
a plot (`--plot`). The baseline routers fit nothing: for them the train files only
decide which recorded model is the small tier (the less accurate one; the test
file when no train file is given). The learned routers (`pre`, `cascade`,
`combined`, and `knn` over prompt embeddings, see `worker.cli_eval_learned`) fit on
the train files, or with `--folds K` on the test file's other folds as well. `--mode online` streams the test
prompts through the workers' decide / judge / reflect code (`worker.cli_eval_online`).
This module must not import the store or the tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from tierflow.providers.encoders import Encoder
from tierflow.providers.outcomes_data import (
    ScoreRange,
    benchmark_name,
    choose_tiers,
    parse_prices,
    parse_score_range,
    prompt_outcomes,
    read_recorded,
)
from tierflow.routing.errors import InputError, TierflowError
from tierflow.routing.knn import NeighbourRouter
from tierflow.routing.metrics import (
    BaselineRouter,
    PromptOutcomes,
    RoutingQuality,
    baseline_scores,
    evaluate_scores,
)
from tierflow.routing.offline_routers import LearnedRouter, Ranking
from tierflow.worker.cli_eval import DEFAULT_CACHE
from tierflow.worker.cli_eval_learned import (
    EncoderChoice,
    LabelledFile,
    RoutingEncoder,
    knn_test_scores,
    learned_quality,
    learned_test_scores,
    paid_outcomes,
)
from tierflow.worker.cli_eval_online import OnlineLearning, OnlineOptions, online_quality

DEFAULT_EXPLORE_SHARE = OnlineOptions().explore_share

# RouteLLM's best published routers (arXiv 2406.18665, Tables 2 and 3): APGR, CPT(50%), CPT(80%) as shares.
PUBLISHED_BEST: dict[str, tuple[float, float, float]] = {
    "gsm8k": (0.622, 0.3364, 0.6326),
    "mmlu": (0.603, 0.3540, 0.7031),
}


AnyRouter = BaselineRouter | LearnedRouter | NeighbourRouter


class EvalMode(str, Enum):
    OFFLINE = "offline"
    ONLINE = "online"


class RouterName(str, Enum):
    """Every router the command evaluates: the baselines of `routing.metrics` and the learned ones."""

    RANDOM = BaselineRouter.RANDOM.value
    ALWAYS_SMALL = BaselineRouter.ALWAYS_SMALL.value
    ALWAYS_LARGE = BaselineRouter.ALWAYS_LARGE.value
    ORACLE = BaselineRouter.ORACLE.value
    PRE = LearnedRouter.PRE.value
    CASCADE = LearnedRouter.CASCADE.value
    COMBINED = LearnedRouter.COMBINED.value
    KNN = NeighbourRouter.KNN.value

    def resolve(self) -> AnyRouter:
        if self.value == NeighbourRouter.KNN.value:
            return NeighbourRouter.KNN
        if self.value in {router.value for router in LearnedRouter}:
            return LearnedRouter(self.value)
        return BaselineRouter(self.value)


@dataclass(frozen=True)
class RoutingRun:
    """One offline evaluation: the test set's outcomes and the router's figures on it."""

    test: Path
    router: AnyRouter
    seed: int
    benchmark: str | None
    outcomes: PromptOutcomes
    quality: RoutingQuality
    mode: EvalMode = EvalMode.OFFLINE
    learning: OnlineLearning | None = None  # online: what reflect did over the streams
    scale: ScoreRange | None = None  # a graded test file's range; None for correctness


def evaluate_routing(
    train: list[Path],
    test: Path,
    router: AnyRouter,
    seed: int = 0,
    tiers: tuple[str | None, str | None] = (None, None),
    price_options: list[str] | None = None,
    folds: int = 0,
    encoder: Encoder | None = None,
    online: OnlineOptions | None = None,
    rank: Ranking = Ranking.GAIN,
    score_range: ScoreRange | None = None,
) -> RoutingRun:
    """Read the files, pick and price the tiers, score the test prompts and sweep the threshold.

    Learned routers embed prompts with `encoder` (None: cheap features only) and fit on
    the train files, or, with `folds` >= 2, k-fold on the test file plus the train files.
    A cascade's outcomes carry what it pays: the small call always. With `online`, the
    test prompts are streamed through decide / judge / reflect instead (`worker.cli_eval_online`).
    A graded file's scores must lie in `score_range` when it is given.
    """
    train_files = [LabelledFile(path, read_recorded(path, score_range)) for path in train]
    test_file = LabelledFile(test, read_recorded(test, score_range))
    train_records = [record for part in train_files for record in part.records]
    models = choose_tiers(train_records or test_file.records, test_file.records, *tiers)
    outcomes = prompt_outcomes(test_file.records, models, parse_prices(price_options or []))
    benchmark = benchmark_name(test_file.records)
    scale = test_file.records[0].score_range
    if not isinstance(router, LearnedRouter):
        if online is not None:
            raise InputError(
                "--router", 0, "router", "--mode online runs the learned routers pre and combined"
            )
        if router is NeighbourRouter.KNN:
            scores = knn_test_scores(train_files, test_file, models, encoder, folds, seed)
        else:
            scores = baseline_scores(router, outcomes, seed)
        quality = evaluate_scores(outcomes, scores)
        return RoutingRun(test, router, seed, benchmark, outcomes, quality, scale=scale)
    if online is not None:
        prices = parse_prices(price_options or [])
        fit = [(part, prompt_outcomes(part.records, models, prices)) for part in train_files]
        quality, learning = online_quality(router, fit, (test_file, outcomes), models, encoder, online)
        paid = paid_outcomes(outcomes, router)
        return RoutingRun(test, router, seed, benchmark, paid, quality, EvalMode.ONLINE, learning, scale)
    prices = parse_prices(price_options or [])
    scores = learned_test_scores(router, train_files, test_file, models, encoder, folds, seed, rank, prices)
    quality = learned_quality(outcomes, router, scores)
    return RoutingRun(test, router, seed, benchmark, paid_outcomes(outcomes, router), quality, scale=scale)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def routing_report(run: RoutingRun) -> dict[str, Any]:
    """The object `tierflow eval routing --json` prints (the contract of issue 5)."""
    quality = run.quality
    scale = run.scale
    curve = [
        {
            "large_share": _rounded(p.large_share),
            "accuracy": _rounded(p.accuracy),
            "cost_usd": _rounded(p.cost_usd),
        }
        for p in quality.curve
    ]
    return {
        "test": str(run.test),
        "n": run.outcomes.n,
        "router": run.router.value,
        "mode": run.mode.value,
        "small_accuracy": _rounded(quality.small_accuracy),
        "large_accuracy": _rounded(quality.large_accuracy),
        "apgr": _rounded(quality.apgr),
        "cpt50": _rounded(quality.cpt50),
        "cpt80": _rounded(quality.cpt80),
        "large_share_at_95pct_quality": _rounded(quality.large_share_at_95pct_quality),
        "cost_ratio_at_95pct_quality": _rounded(quality.cost_ratio_at_95pct_quality),
        "quality_at_95pct": _rounded(quality.quality_at_95pct),
        "graded": scale is not None,
        "score_range": None if scale is None else [scale.low, scale.high],
        "curve": curve,
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _quality_figure(value: float | None, graded: bool) -> str:
    if value is None or not graded:
        return _percent(value)
    return f"{value:.3f}"


def routing_table(report: dict[str, Any], learning: OnlineLearning | None = None) -> Table:
    """The figures as a readable table; the curve is summarised by its length. Online, also
    the policy versions reflect published over all the streams, and how many were rollbacks."""
    table = Table(title=f"routing {report['router']} on {report['test']} ({report['mode']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("prompts", str(report["n"]))
    if report["graded"]:
        low, high = report["score_range"]
        table.add_row("score range", f"{low:g} to {high:g}")
        table.add_row("small mean score", f"{report['small_accuracy']:.3f}")
        table.add_row("large mean score", f"{report['large_accuracy']:.3f}")
    else:
        table.add_row("small accuracy", _percent(report["small_accuracy"]))
        table.add_row("large accuracy", _percent(report["large_accuracy"]))
    table.add_row("APGR", "-" if report["apgr"] is None else f"{report['apgr']:.3f}")
    table.add_row("CPT(50%) large share", _percent(report["cpt50"]))
    table.add_row("CPT(80%) large share", _percent(report["cpt80"]))
    table.add_row("95% quality", _quality_figure(report["quality_at_95pct"], report["graded"]))
    table.add_row("large share at 95% quality", _percent(report["large_share_at_95pct_quality"]))
    table.add_row("cost vs always-large at 95% quality", _percent(report["cost_ratio_at_95pct_quality"]))
    table.add_row("curve points", str(len(report["curve"])))
    if learning is not None:
        table.add_row("policy versions published (all streams)", str(learning.versions))
        table.add_row("of which rollbacks", str(learning.rollbacks))
    return table


def _draw_curves(share_axes: Axes, cost_axes: Axes, run: RoutingRun) -> None:
    curves = {run.router.value: run.quality}
    for reference in (BaselineRouter.RANDOM, BaselineRouter.ORACLE):
        if reference is not run.router:
            scores = baseline_scores(reference, run.outcomes, run.seed)
            curves[reference.value] = evaluate_scores(run.outcomes, scores)
    for name, quality in curves.items():
        shares = [p.large_share for p in quality.curve]
        accuracy = [p.accuracy for p in quality.curve]
        style = "-" if name == run.router.value else "--"
        share_axes.plot(shares, accuracy, style, label=name)
        cost_axes.plot([p.cost_usd for p in quality.curve], accuracy, style, label=name)


def _mark_published(axes: Axes, run: RoutingRun) -> str:
    published = PUBLISHED_BEST.get(run.benchmark or "")
    if published is None:
        return "no published RouteLLM figures for this test file's source"
    small, large = run.quality.small_accuracy, run.quality.large_accuracy
    apgr, cpt50, cpt80 = published
    for target, share in ((0.5, cpt50), (0.8, cpt80)):
        accuracy = small + target * (large - small)
        axes.plot([share], [accuracy], "k*", markersize=10)
        axes.annotate(
            f"RouteLLM CPT({target:.0%})", (share, accuracy), textcoords="offset points", xytext=(6, -10)
        )
    return f"RouteLLM's best published {run.benchmark} router (APGR {apgr}) marked as stars"


def draw_plot(run: RoutingRun, path: Path) -> None:
    """Accuracy against large-tier share and against cost, with random, oracle and RouteLLM marked."""
    figure = Figure(figsize=(12, 5))
    FigureCanvasAgg(figure)
    share_axes, cost_axes = figure.subplots(1, 2)
    _draw_curves(share_axes, cost_axes, run)
    caption = _mark_published(share_axes, run)
    for axes, label in ((share_axes, "share of large-tier calls"), (cost_axes, "cost of the test set (USD)")):
        axes.axhline(run.quality.small_accuracy, color="grey", linewidth=0.5)
        axes.axhline(run.quality.large_accuracy, color="grey", linewidth=0.5)
        axes.set_xlabel(label)
        axes.set_ylabel("accuracy")
        axes.legend(loc="lower right")
    figure.suptitle(f"{run.router.value}, {run.mode.value}, on {run.test.name} (n={run.outcomes.n})")
    figure.subplots_adjust(bottom=0.17)
    figure.text(0.5, 0.02, caption, ha="center", fontsize=9)
    figure.savefig(path, dpi=110)


def eval_routing(
    test: Annotated[Path, typer.Option("--test", help="JSONL of recorded outcomes to evaluate on")],
    train: Annotated[
        list[Path] | None, typer.Option("--train", help="JSONL of recorded outcomes to fit on")
    ] = None,
    router: Annotated[RouterName, typer.Option(help="Which router scores the prompts")] = RouterName.RANDOM,
    folds: Annotated[
        int, typer.Option(min=0, help="Learned routers: k-fold on the test file too (0: fit on --train only)")
    ] = 0,
    mode: Annotated[
        EvalMode, typer.Option(help="offline: sweep a threshold; online: stream through decide/judge/reflect")
    ] = EvalMode.OFFLINE,
    reflect_every: Annotated[
        int, typer.Option(min=0, help="Online: reflect every N prompts (0: never)")
    ] = 100,
    targets: Annotated[int, typer.Option(min=1, help="Online: policy targets traced (cost targets)")] = 10,
    explore: Annotated[
        float,
        typer.Option(
            min=0, max=0.5, help="Online: share of jobs scored above small that start on small (0: none)"
        ),
    ] = DEFAULT_EXPLORE_SHARE,
    score_range: Annotated[
        str | None, typer.Option(help="Graded files: LO,HI of the scores (default: the scores' own)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the contract as one JSON object")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write accuracy vs share and vs cost to this PNG")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random router")] = 0,
    small: Annotated[str | None, typer.Option(help="Recorded model to use as the small tier")] = None,
    large: Annotated[str | None, typer.Option(help="Recorded model to use as the large tier")] = None,
    price: Annotated[list[str] | None, typer.Option(help="MODEL=IN,OUT USD per million tokens")] = None,
    encoder: Annotated[
        RoutingEncoder, typer.Option(help="Prompt embeddings of the learned routers (none: cheap features)")
    ] = RoutingEncoder.LOCAL,
    model: Annotated[
        str, typer.Option(help="Embeddings model for --encoder openai")
    ] = "text-embedding-3-small",
    cache_dir: Annotated[Path, typer.Option(help="Where prompt embeddings are cached")] = DEFAULT_CACHE,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per encoder call")] = 64,
    rank: Annotated[
        Ranking, typer.Option(help="Learned routers: rank by gain, or gain per expected USD of escalating")
    ] = Ranking.GAIN,
) -> None:
    """Trace a router's accuracy and cost against its share of large-tier calls."""
    err = Console(stderr=True)
    online = OnlineOptions(reflect_every, targets, folds, seed, explore) if mode is EvalMode.ONLINE else None
    try:
        choice = EncoderChoice(encoder, model, cache_dir, batch_size)
        resolved = router.resolve()
        built = choice.build() if isinstance(resolved, LearnedRouter | NeighbourRouter) else None
        run = evaluate_routing(
            train or [],
            test,
            resolved,
            seed,
            (small, large),
            price,
            folds,
            built,
            online,
            rank=rank,
            score_range=parse_score_range(score_range),
        )
        if plot is not None:
            draw_plot(run, plot)
    except TierflowError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(exc, InputError) else 1) from None
    report = routing_report(run)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        Console().print(routing_table(report, run.learning))


def register(eval_app: typer.Typer) -> None:
    """Add `routing` to the `tierflow eval` sub-app."""
    eval_app.command("routing")(eval_routing)
