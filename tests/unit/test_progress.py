"""Rank 0's progress lines (train/progress.py)."""
import logging

from mpi_gan.train.progress import Progress


def test_progress_lines_say_which_iteration_their_scores_belong_to():
    records = []
    log = logging.getLogger("test-progress")
    log.handlers, log.propagate = [], False
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    progress = Progress(log, start=0, total=30, bar=False)
    for done in range(1, 31):
        progress.step(done)
        if done == 10:
            progress.scored("mnist_score 3.142", done)
        if done % 10 == 0:
            progress.line(done, "d_loss 0.7")
    assert records[0].startswith("iter 10/30 ") and records[0].endswith(
        "d_loss 0.7  scores of iter 10: mnist_score 3.142")
    # twenty iterations later the same scores, still marked with their own iteration
    assert records[2].startswith("iter 30/30 ") and records[2].endswith(
        "scores of iter 10: mnist_score 3.142")
    progress.close()
