"""The fast path of chainer_mnist.py (``--loop fast``): the seed loop's training, without its per-step cost.

Same model, same optimizer, same batches: the MLP's Linear layers keep their Chainer parameters
(initialised by Chainer from the same seed, saved by ``save_npz`` as before), and each step does
what ``optimizer.update(model, x, t)`` does -- forward, softmax cross entropy, backward, MomentumSGD
-- as plain array code on those parameters, with the batches in the order that
``SerialIterator(train, batchsize)`` would give them (same permutations, drawn from NumPy's global
generator at the same points, batches that straddle two epochs included).  What goes away is
Chainer's machinery per step: the iterator building a list of examples and ``concat_examples``
stacking it, a ``Variable`` graph built and walked back, one optimizer call per parameter.

* On the CPU (NumPy) every step works in buffers allocated once, the operations are Chainer's own
  (``x.dot(W.T)``, ``gy.T.dot(x)``, ...) in Chainer's order, so on the same OpenBLAS thread count the
  weights come out bit for bit the seed loop's, and the parameters sit in one flat array so the
  update is four NumPy calls, not 24.  Below batch 256 OpenBLAS runs on one thread during our steps
  (measured faster: ``blas_threads_for``).
* On a GPU (CuPy) see fast_gpu.py: the dataset stays on the device, batches are gathered there,
  nothing waits for the host within an epoch, and the whole step can be replayed as a CUDA graph.

Nothing here imports amlocal: this folder is the payload a run executes.
"""
import ctypes
import os
import time

import numpy as np

import chainer_compat  # noqa: F401  (before anything imports chainer: NumPy 2 / Python 3.12)

LR = 0.01
MOMENTUM = 0.9


class OrderStream:
    """Batches of example indices exactly as ``chainer.iterators.SerialIterator`` yields them.

    Mirrors ``SerialIterator(dataset, batch_size)`` (repeat=True, shuffle=True) and its state
    machine: one permutation from NumPy's global RandomState when it is created, a new one each
    time an epoch is used up, and a batch that crosses the end of an epoch is completed from the
    next permutation.  Created right after the model (as the seed loop creates its iterator), it
    draws the same numbers and so gives the same batches.
    """

    def __init__(self, n, batch_size, random_state=None):
        if n <= 0:
            raise ValueError('Epoch size must be positive for an iterator that repeats.')
        # The generator chainer's ShuffleOrderSampler uses by default.
        self._random = random_state or np.random.random.__self__
        self.n, self.batch_size = n, batch_size
        self.order = self._random.permutation(n)
        self.position = 0
        self.epoch = 0

    def next(self):
        """Return (indices, is_new_epoch) of the next batch."""
        i, n = self.position, self.n
        i_end = i + self.batch_size
        parts = []
        is_new_epoch = False
        while i_end >= n:
            parts.append(self.order[i:n])
            self.order = self._random.permutation(n)
            self.epoch += 1
            is_new_epoch = True
            i = 0
            i_end -= n
        parts.append(self.order[i:i_end])
        self.position = i_end
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), is_new_epoch

    def epoch_batches(self):
        """Indices of the batches up to the one that ends the current epoch: (array (steps * B,), steps)."""
        batches = []
        while True:
            indices, is_new_epoch = self.next()
            batches.append(indices)
            if is_new_epoch:
                return np.concatenate(batches), len(batches)


class BlasThreads:
    """Read and set the thread count of the OpenBLAS that NumPy uses, where it can be found.

    Looks for an OpenBLAS loaded into this process (NumPy's wheels bundle one: symbols
    ``scipy_openblas_set_num_threads64_`` in NumPy 2, ``openblas_set_num_threads64_`` in 1.26).
    Anywhere else (another BLAS, another OS) it does nothing and ``available`` is False.
    """

    _NAMES = (('scipy_openblas_set_num_threads64_', 'scipy_openblas_get_num_threads64_'),
              ('openblas_set_num_threads64_', 'openblas_get_num_threads64_'),
              ('scipy_openblas_set_num_threads', 'scipy_openblas_get_num_threads'),
              ('openblas_set_num_threads', 'openblas_get_num_threads'))

    def __init__(self):
        self._set = self._get = self._lib = None
        for path in self._loaded_openblas():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for set_name, get_name in self._NAMES:
                setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    self._set, self._get, self._lib = setter, getter, lib
                    return

    @staticmethod
    def _loaded_openblas():
        try:
            with open('/proc/self/maps') as maps:
                paths = {line.split(None, 5)[5].strip() for line in maps
                         if len(line.split(None, 5)) == 6}
        except OSError:
            return []
        return sorted(p for p in paths if 'openblas' in os.path.basename(p).lower() and '.so' in p)

    @property
    def available(self):
        return self._set is not None

    def config(self):
        """OpenBLAS's own description (version, kernel, threads), or None."""
        for name in ('scipy_openblas_get_config64_', 'openblas_get_config64_',
                     'scipy_openblas_get_config', 'openblas_get_config'):
            fn = getattr(self._lib, name, None) if self._set else None
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode(errors='replace')
        return None

    def corename(self):
        """The CPU kernel OpenBLAS picked (e.g. SkylakeX, Haswell), or None."""
        for name in ('scipy_openblas_get_corename64_', 'openblas_get_corename64_',
                     'scipy_openblas_get_corename', 'openblas_get_corename'):
            fn = getattr(self._lib, name, None) if self._set else None
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode(errors='replace')
        return None

    def get(self):
        return self._get() if self._get else None

    def set(self, n):
        if self._set and n:
            self._set(int(n))


def blas_threads_for(batch_size, cores):
    """OpenBLAS threads for the fast CPU step at this batch size.

    Measured on a 2-core Xeon (benchmarks/RESULTS.md): below batch 256 one thread is fastest (the
    products are 100 columns wide; OpenBLAS's threading costs more than it gains, even on the
    first layer's alone); from 256 on, all cores -- OpenBLAS's own default, so None: leave it as
    configured (OPENBLAS_NUM_THREADS and the like still apply).
    """
    return 1 if batch_size < 256 else None


class NumpyTrainer:
    """The seed loop's training step on the CPU, as NumPy code on the model's own parameters.

    ``linears`` are the MLP's ``L.Linear`` links in order (ReLU between them, softmax cross entropy
    after the last).  Their W and b are moved into one flat array (each parameter's ``array``
    becomes a view of it), so ``save_npz`` writes the same file and the update is one pass.
    """

    def __init__(self, linears, images, labels, batch_size, lr=LR, momentum=MOMENTUM,
                 blas_threads='auto'):
        self.images, self.labels = images, labels
        self.batch_size = B = batch_size
        self.lr, self.momentum = np.float32(lr), np.float32(momentum)
        params = []
        for link in linears:
            params += [link.W, link.b]
        total = sum(p.array.size for p in params)
        self.flat = np.empty(total, np.float32)
        self.velocity = np.zeros(total, np.float32)   # MomentumSGD's v, zero at the start
        self.grad = np.empty(total, np.float32)
        self._scratch = np.empty(total, np.float32)
        self.W, self.b, self.gW, self.gb = [], [], [], []
        offset = 0
        for i, p in enumerate(params):
            size = p.array.size
            view = self.flat[offset:offset + size].reshape(p.array.shape)
            view[...] = p.array
            p.array = view
            grad = self.grad[offset:offset + size].reshape(p.array.shape)
            (self.W if i % 2 == 0 else self.b).append(view)
            (self.gW if i % 2 == 0 else self.gb).append(grad)
            offset += size
        widths = [self.W[0].shape[1]] + [W.shape[0] for W in self.W]
        self.x = np.empty((B, widths[0]), np.float32)
        self.t = np.empty(B, labels.dtype)
        self.h = [self.x] + [np.empty((B, w), np.float32) for w in widths[1:]]
        self.gh = [np.empty((B, w), np.float32) for w in widths[1:-1]]
        self.mask = [np.empty((B, w), bool) for w in widths[1:-1]]
        self.rows = np.arange(B)
        # chainer scales the gradient by gloss * coeff: a float32 0-d array times 1.0 / count (count a
        # NumPy integer), which NumPy 2 multiplies into gx in float64 and NumPy 1.x in float32.
        # Built the same way, it rounds the same way under either.
        self.scale = np.ones((), np.float32) * (1.0 / max(np.ones(B, bool).sum(), 1))
        self.blas = BlasThreads()
        if blas_threads == 'auto':
            blas_threads = blas_threads_for(B, os.cpu_count() or 1)
        self.threads = blas_threads   # None: leave OpenBLAS as it is

    def describe(self):
        if not self.blas.available:
            threads = 'not found (BLAS threads left as they are)'
        else:
            threads = self.threads or '{} (as found)'.format(self.blas.get())
        return 'CPU NumPy, batch {}, OpenBLAS threads {}'.format(self.batch_size, threads)

    def _with_threads(self, fn, *args):
        # The thread count is OpenBLAS's, process-wide: set it for our steps only.
        before = self.blas.get()
        self.blas.set(self.threads)
        try:
            return fn(*args)
        finally:
            self.blas.set(before)

    def step(self, indices):
        """One MomentumSGD step on the batch ``indices``; return the sum of the per-example losses."""
        W, b, h, gh, mask = self.W, self.b, self.h, self.gh, self.mask
        x, t = self.x, self.t
        # mode='clip': the indices are in range by construction, and 'raise' with out= makes NumPy
        # gather into a temporary first (2.5x slower: 24 vs 9 us at batch 128).
        np.take(self.images, indices, axis=0, out=x, mode='clip')
        np.take(self.labels, indices, out=t, mode='clip')
        last = len(W) - 1
        # Forward: Linear is xp.dot(x, W.T, out=y); y += b (chainer/functions/connection/linear.py).
        for i in range(len(W)):
            np.dot(h[i], W[i].T, out=h[i + 1])
            h[i + 1] += b[i]
            if i < last:
                np.maximum(h[i + 1], 0, out=h[i + 1])
        # Softmax cross entropy as chainer computes it (log_softmax via logsumexp).
        y = h[-1]
        log_z = y.max(axis=1, keepdims=True)
        e = y - log_z
        np.exp(e, out=e)
        s = e.sum(axis=1, keepdims=True)
        np.log(s, out=s)
        log_z += s
        log_y = y - log_z
        loss_sum = -float(log_y[self.rows, t].sum(dtype=np.float32))
        gy = np.exp(log_y, out=log_y)
        gy[self.rows, t] -= 1
        gy *= self.scale
        # Backward: gW = gy.T.dot(x), gb = gy.sum(0), gx = gy.dot(W); ReLU's is gy * (y > 0).
        for i in range(last, -1, -1):
            np.dot(gy.T, h[i], out=self.gW[i])
            np.sum(gy, axis=0, out=self.gb[i])
            if i == 0:
                break
            g = gh[i - 1]
            np.dot(gy, W[i], out=g)
            np.greater(h[i], 0, out=mask[i - 1])
            np.multiply(g, mask[i - 1], out=g)
            gy = g
        # MomentumSGD (update_core_cpu): v *= momentum; v -= lr * grad; param += v.
        v = self.velocity
        v *= self.momentum
        np.multiply(self.grad, self.lr, out=self._scratch)
        v -= self._scratch
        self.flat += v
        return loss_sum

    def train_epoch(self, order, prefetch=False):
        """Train up to the end of the current epoch of ``order`` (an OrderStream); return the mean loss.

        (``prefetch`` is for the GPU trainer, which can draw the next epoch's batches meanwhile.)
        """
        return self._with_threads(self._train_epoch, order)

    def _train_epoch(self, order):
        sum_loss, count = 0.0, 0
        while True:
            indices, is_new_epoch = order.next()
            sum_loss += self.step(indices)
            count += len(indices)
            if is_new_epoch:
                self.last_images = count
                return sum_loss / count

    def run_steps(self, order, steps):
        """``steps`` steps; return the mean loss of the last one (for agreement checks)."""
        def run():
            for _ in range(steps):
                loss = self.step(order.next()[0])
            return loss / self.batch_size
        return self._with_threads(run)

    def finish(self):
        """Nothing is in flight on the CPU."""

    def evaluate(self, images, labels, batch_size):
        """(mean loss, accuracy) over a test set, in batches of ``batch_size`` as the seed loop does."""
        return numpy_evaluate(self.W, self.b, images, labels, batch_size)


def numpy_forward(W, b, x):
    h = x
    for i in range(len(W)):
        h = h.dot(W[i].T)
        h += b[i]
        if i < len(W) - 1:
            np.maximum(h, 0, out=h)
    return h


def numpy_evaluate(W, b, images, labels, batch_size):
    sum_loss, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        y = numpy_forward(W, b, images[start:start + batch_size])
        t = labels[start:start + batch_size]
        log_z = y.max(axis=1, keepdims=True)
        e = np.exp(y - log_z)
        log_z += np.log(e.sum(axis=1, keepdims=True))
        sum_loss -= float((y - log_z)[np.arange(len(t)), t].sum(dtype=np.float32))
        correct += int((y.argmax(axis=1) == t).sum())
    return sum_loss / len(images), correct / len(images)


def make_trainer(linears, images, labels, batch_size, device_xp=np, gpu_mode='auto', **kwargs):
    """The fast trainer for the parameters' device: NumpyTrainer on the CPU, fast_gpu's on a GPU."""
    if device_xp is np:
        return NumpyTrainer(linears, images, labels, batch_size, **kwargs)
    import fast_gpu
    return fast_gpu.GpuTrainer(linears, images, labels, batch_size, mode=gpu_mode, **kwargs)


class FastLoopUnavailable(RuntimeError):
    """The fast loop could not start on this device (e.g. its kernels failed to compile).

    Raised before any training, with NumPy's generator as it was: the caller can run the seed
    loop instead and get the seed loop's run.
    """


def train(model, train_arrays, test_arrays, device, epochs, batchsize, run, gpu_mode='auto',
          log=print, lr=LR):
    """The seed's chainer_mnist.train, on the fast path: same logging, same per-epoch printout."""
    predictor = model.predictor
    linears = [predictor.l1, predictor.l2, predictor.l3]
    images, labels = train_arrays
    random_state = np.random.get_state()
    order = OrderStream(len(images), batchsize)   # after the model, as the seed creates its iterator
    try:
        trainer = make_trainer(linears, images, labels, batchsize, device.xp, gpu_mode=gpu_mode,
                               lr=lr)
    except Exception as e:
        if device.xp is np:
            raise
        np.random.set_state(random_state)
        raise FastLoopUnavailable('{}: {}'.format(type(e).__name__, e)) from e
    log('fast loop: {}'.format(trainer.describe()), flush=True)
    test_images, test_labels = test_arrays
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train_loss = trainer.train_epoch(order, prefetch=epoch < epochs)   # returns when done
        seconds = time.perf_counter() - start
        test_loss, test_acc = trainer.evaluate(test_images, test_labels, batchsize)
        run.log('Accuracy', test_acc)
        run.log('Loss', test_loss)
        log('epoch {}/{}  train_loss {:.4f}  test_loss {:.4f}  test_accuracy {:.4f}'
            '  ({:.2f} s, {:,.0f} images/s)'.format(
                epoch, epochs, train_loss, test_loss, test_acc, seconds,
                len(images) / seconds), flush=True)
    trainer.finish()
    return trainer
