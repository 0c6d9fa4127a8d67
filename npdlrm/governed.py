"""A loader whose batches follow a `threads.ThreadGovernor`: `npdlrm predict --threads auto`.

Scoring a file is a long run of forward passes whose GEMMs split their work evenly over
OpenBLAS's threads; when another process takes one of the cores, every GEMM waits for
the thread that shares it (npdlrm/threads.py). The governor is ticked before each batch
is handed out, so the pools run on the cores other processes leave free. The thread
count never changes a probability.
"""


class GovernedLoader:
    """Wraps a loader (anything with `epoch(epoch)` and `len()`): its batches, unchanged,
    with `governor.tick()` called before each; `say(message)` hears of every change."""

    def __init__(self, loader, governor, say=None):
        self.loader, self.governor, self.say = loader, governor, say

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def epoch(self, epoch=0, start_batch=0):
        return self._governed(self.loader.epoch(epoch, start_batch))

    def _governed(self, batches):
        try:
            for mb in batches:
                before = self.governor.threads
                after = self.governor.tick()
                if after != before and self.say is not None:
                    self.say(f"Threads {before} -> {after}: other processes use "
                             f"{self.governor.others:.1f} of {self.governor.cores} cores")
                yield mb
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops the loader's prefetch thread when scoring stops early
