"""Gradient accumulation (`--mlperf-grad-accum-iter K`): one optimizer step per K batches.

Each batch's forward and backward run on the parameters of the window's start; the
dense gradients (MD projections included) add up in the model's gradient buffer, the
tables' gradients wait as the batches' sparse jobs (`embedding.SparseJob`: pooled
gradients with their bags). The step then applies the mean of the K batch gradients, so
K batches of B step as one batch of K*B does: dense through the dense optimizer, each
table through its fused sparse update run once over the K batches' jobs joined (each
touched row gets its summed gradient, as one big batch would give it). The optimizer's
step count (and so the learning-rate schedule) advances once.

The parameters do not change inside a window, so its pending gradients are a function of
the model and of the window's batches: a run resumed mid-window recomputes them
(`Trainer` replays the window's first batches) instead of storing them.
"""
from .embedding import join_jobs


class GradientAccumulator:
    """Collects the gradients of up to `k` batches of a one-process `DLRM` and steps."""

    def __init__(self, model, k):
        if int(k) != k or k < 1:
            raise ValueError(f"gradient accumulation needs a whole number of batches >= 1, "
                             f"got {k!r}")
        self.model, self.k = model, int(k)
        self._jobs = []  # per batch: its SparseJobs, owning their arrays

    @property
    def pending(self):
        """Batches whose gradients are held, not yet applied."""
        return len(self._jobs)

    def reset(self):
        """Drop the held gradients (the parameters are those of the window's start)."""
        self._jobs = []
        self.model.params.zero_grad()

    def add(self, dense, indices, offsets, labels, per_sample_weights=None):
        """Forward and backward of one batch, its gradients held; returns its mean loss.

        A refused batch (ValueError) or a non-finite loss (FloatingPointError) drops the
        window's gradients; the parameters never change here."""
        model = self.model
        try:
            batch = model.check_batch(dense, indices, offsets, labels, per_sample_weights,
                                      True)
            # the window's mean: each batch counts 1/K; its dense grads add up
            loss, dT = model.forward_backward(batch, zero_grad=not self._jobs,
                                              divide_by=self.k)
            # detached: the next batch reuses dT's buffer and the loader the bags'
            jobs = [job.detach() for job in model.embedding_backward(dT, batch)]
        except BaseException:
            self.reset()
            raise
        self._jobs.append(jobs)
        return loss

    def step(self, optimizer):
        """Apply the held gradients as one step of `optimizer`; nothing held: no step.

        A window cut short (the end of an epoch) is scaled to the mean of the batches it
        holds."""
        n = self.pending
        if n == 0:
            return
        model = self.model
        optimizer.bind(model)
        lr = optimizer.lr
        scale = None
        if n < self.k:
            scale = model.params.dtype.type(self.k / n)
            model.params.grad *= scale
        optimizer.step_dense(model.params, lr)
        model._lap("dense optimizer")
        model.sparse_update(optimizer, lr, None, None, jobs=join_jobs(self._jobs, scale))
        model._lap("embedding update")
        optimizer.finish_step()
        self._jobs = []

    def train_step(self, dense, indices, offsets, labels, optimizer, per_sample_weights=None):
        """add(), then a step once `k` batches are held; returns the batch's mean loss."""
        profile = self.model.profile
        if profile is not None:
            profile.start()
        loss = self.add(dense, indices, offsets, labels, per_sample_weights)
        if self.pending == self.k:
            self.step(optimizer)
        if profile is not None:
            profile.end()
        return loss
