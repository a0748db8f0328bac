"""Batch inference over archives of images and videos: parallel, resumable, exactly once.

    import ferlab.batch
    summary = ferlab.batch.run(["photos/", "videos/*.mp4"], "results/")            # all local cores
    summary = ferlab.batch.run(["/shared/photos"], "/shared/results", engine="ray", address="auto")

    # or plug the model into your own Ray Data pipeline (one row per face):
    ds.map_batches(ferlab.batch.Predictor, fn_constructor_kwargs={"model": "default"}, concurrency=8,
                   batch_size=32, num_cpus=1)

Results: ``out/faces/images|videos/part-*.parquet`` (one row per face), ``out/errors/`` (one row per input
that gave no result, with the reason), ``out/_manifest/`` (what is done; a re-run skips it).  See
``ferlab.batch.store`` for the commit protocol and docs/scaling.md for clusters.  Needs the ``[scale]`` extra
for Parquet (pyarrow) and the Ray engine; the local engine with ``format="csv"`` needs neither.
"""

from __future__ import annotations

from .inputs import Unit, gather_paths, plan_units
from .job import ENGINES, FORMATS, run
from .store import read_manifest
from .work import BatchOptions, Predictor, face_columns

__all__ = ["BatchOptions", "ENGINES", "FORMATS", "Predictor", "Unit", "face_columns", "gather_paths", "plan_units",
           "read_manifest", "run"]
