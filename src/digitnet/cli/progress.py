"""What `train` and `torch-train` print while they train: a bar per epoch and one line per epoch."""

from __future__ import annotations

from digitnet.cli.common import percent
from digitnet.training import Callback


class Progress(Callback):
    """A progress bar per epoch (on a terminal) with live loss and accuracy, and one line per epoch."""

    def __init__(self, bar: bool):
        self.bar_enabled = bar
        self.bar = None

    def on_epoch_begin(self, state):
        if self.bar_enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=state.batches,
                desc=f"epoch {state.epoch}/{state.epochs}",
                leave=False,
                unit="batch",
                dynamic_ncols=True,
            )

    def on_batch_end(self, state):
        if self.bar is not None:
            self.bar.update(1)
            if state.iteration % 50 == 0:
                self.bar.set_postfix(
                    loss=f"{state.batch_loss:.4f}", acc=f"{state.batch_accuracy:.3f}", refresh=False
                )

    def on_epoch_end(self, state):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print(epoch_line(state.history.epochs[-1], state.epochs), flush=True)


def epoch_line(r: dict, epochs: int) -> str:
    val = (
        ""
        if r["val_accuracy"] is None
        else f"  val loss {r['val_loss']:.4f}  val acc {percent(r['val_accuracy'])}"
    )
    return (
        f"epoch {r['epoch']:>3}/{epochs}  loss {r['train_loss']:.4f}  acc {percent(r['train_accuracy'])}"
        f"{val}  {r['seconds']:.2f}s"
    )
