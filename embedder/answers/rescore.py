"""Held-out metrics scored again on a gallery whose labels changed (corrections: the network did not change), with
the queries' embeddings kept in the run's cache, so nothing is embedded twice."""

from __future__ import annotations

from ..errors import EmbedderError
from ..progress import Reporter, silent

BASELINES_NOTE = "baselines as measured at training, before the gallery's labels were corrected"


def rescore(run, report: Reporter = silent) -> None:
    """``metrics["test"]`` measured again on the run's gallery as it is now (its corrected labels), with the
    held-out queries' embeddings from the run's cache (embedded once per network); the baselines are kept as
    they were measured at training. Nothing happens for a run without held-out metrics."""
    from ..maps.project import cached_array
    from .evaluate import EvaluationSets, evaluate_run
    from .novelty import held_out

    stored = run.metrics.get("test")
    if not stored:
        return
    queries = run.train_config.queries if not run.split.get("test") else None
    try:
        sets = EvaluationSets.of(run, queries)
    except EmbedderError:
        return  # its queries are gone: the stored numbers stay, as they were measured
    model = run.info.get("checksums", {}).get("model.onnx" if run.onnx is not None else "model.pt", "")[:16]
    name = f"held-out-{model}-{len(sets.q_paths)}"
    dim = run.gallery_embeddings.shape[1]
    compute = lambda: held_out(run, sets.q_paths)[0]
    q_emb = cached_array(run.path, name, compute, (len(sets.q_paths), dim))
    fresh = evaluate_run(
        run,
        queries,
        baselines=False,
        progress=report,
        embedded=(q_emb, stored.get("novelty")),
        target_precision=run.train_config.target_precision,
    )
    fresh["baselines"] = stored.get("baselines", {})
    if fresh["baselines"]:
        fresh["baselines_note"] = BASELINES_NOTE
    run.metrics["test"] = fresh
