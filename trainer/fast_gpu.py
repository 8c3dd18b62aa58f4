"""The fast path on a GPU (CuPy): the seed loop's training step with no host round trip inside an epoch.

* The training set lives on the device; each epoch the host draws the batches' indices exactly as
  the seed loop's SerialIterator would (fast_loop.OrderStream) and sends them once, and a counter
  in device memory tells the step which batch is next, so a step needs nothing from the host.
* The loss is summed on the device and read once per epoch.
* Fewer, larger kernels: one gathers the batch, one per Linear layer does the product with its
  bias and ReLU, one does softmax cross entropy and its gradient, one per layer computes the
  weight gradient together with the bias gradient, one per layer the input gradient together with
  ReLU's mask, and one updates every parameter (they share one flat buffer) -- 11 in all.

Modes (``--fast-mode``):

``graph``   those 11 kernels captured once as a CUDA graph and replayed each step (one launch
            per step).  CuPy 14 refuses cuBLAS during stream capture, hence our own matrix
            products (``gemm`` below, a tiled SGEMM) -- see shared/NOTES.md.
``raw``     the same kernels launched one by one (what ``graph`` falls back to when capture fails).
``cublas``  cuBLAS (``cupy.dot``) for the products and our kernels around them: faster products at
            large batches, more launches (19) and more Python per step.
``auto``    ``graph`` up to GRAPH_MAX_BATCH, ``cublas`` above.

The kernels are plain CUDA C++ for NVRTC (no headers).  tests/test_trainer_fast.py runs them on the
CPU under a small emulation of CUDA's execution model, against the NumPy step, so a GPU is needed
only for speed.
"""
import numpy as np

import fast_loop

# Batch sizes up to this use the CUDA graph of our own kernels; above it cuBLAS's products win.
GRAPH_MAX_BATCH = 1024
THREADS = 256
TILES = (16, 32, 64)

KERNELS = r'''
#define NT 256
#define TK 16

// C[m, n] = sum_k A(m, k) * B(k, n) for m < M, n < N, where A(m, k) = A[m * sam + k * sak] and
// B(k, n) = B[k * sbk + n * sbn] (strides let one kernel do x W^T, g^T h and g W).
// epi 0: store; 1: add aux[n] (a bias); 2: add aux[n], then ReLU; 3: keep only where
// aux[m * ldc + n] > 0 (ReLU's backward, aux being the layer's output).
// With want_colsum, the blocks of the first column tile also write colsum[m] = sum_k A(m, k):
// the bias gradient, when A is the output gradient read transposed.
// BM x BN tile per block of 256 threads, each thread (BM/16) x (BN/16) outputs.
template<int BM, int BN>
__global__ void __launch_bounds__(NT) gemm(
        const float* __restrict__ A, int sam, int sak,
        const float* __restrict__ B, int sbk, int sbn,
        float* __restrict__ C, int ldc, int M, int N, int K,
        int epi, const float* __restrict__ aux,
        float* __restrict__ colsum, int want_colsum)
{
    constexpr int TM = BM / 16, TN = BN / 16;
    __shared__ float As[TK][BM + 1];
    __shared__ float Bs[TK][BN + 1];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const bool do_colsum = want_colsum != 0 && blockIdx.x == 0 && tx == 0;
    float acc[TM][TN];
    float csum[TM];
    for (int i = 0; i < TM; ++i) {
        csum[i] = 0.0f;
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    }
    for (int k0 = 0; k0 < K; k0 += TK) {
        // Neighbouring threads read neighbouring addresses: along k when A(m, k) is contiguous in k.
        for (int e = tid; e < TK * BM; e += NT) {
            int kk, mm;
            if (sak == 1) { mm = e / TK; kk = e % TK; } else { kk = e / BM; mm = e % BM; }
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? A[(long long)m * sam + (long long)k * sak] : 0.0f;
        }
        for (int e = tid; e < TK * BN; e += NT) {
            int kk, nn;
            if (sbk == 1) { nn = e / TK; kk = e % TK; } else { kk = e / BN; nn = e % BN; }
            const int n = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = (n < N && k < K) ? B[(long long)k * sbk + (long long)n * sbn] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TK; ++kk) {
            float a[TM], b[TN];
            for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx + 16 * j];
            for (int i = 0; i < TM; ++i)
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
            if (do_colsum)
                for (int i = 0; i < TM; ++i) csum[i] += a[i];
        }
        __syncthreads();
    }
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n >= N) continue;
            float v = acc[i][j];
            if (epi == 1 || epi == 2) v += aux[n];
            if (epi == 2) v = fmaxf(v, 0.0f);
            if (epi == 3 && !(aux[(long long)m * ldc + n] > 0.0f)) v = 0.0f;
            C[(long long)m * ldc + n] = v;
        }
        if (do_colsum) colsum[m] = csum[i];
    }
}

// x[r, :] = X[order[pos[0] + r], :], t[r] = T[same]: one block per row of the batch.
__global__ void gather_rows(const float* __restrict__ X, const int* __restrict__ T,
                            const int* __restrict__ order, const int* __restrict__ pos,
                            float* __restrict__ x, int* __restrict__ t, int D)
{
    const int r = blockIdx.x;
    const int src = order[pos[0] + r];
    const float* from = X + (long long)src * D;
    float* to = x + (long long)r * D;
    for (int k = threadIdx.x; k < D; k += blockDim.x) to[k] = from[k];
    if (threadIdx.x == 0) t[r] = T[src];
}

// One thread per row of logits y (n x C): adds the row's -log softmax(y)[t] to acc[0] and
// 1 to acc[1] when argmax(y) == t (first maximum, as NumPy's argmax); with want_grad also writes
// g = (softmax(y) - onehot(t)) * scale, the gradient of the batch's mean loss.
// blockDim.x must be a multiple of 32 (warp sums).
__global__ void softmax_xent(const float* __restrict__ y, const int* __restrict__ t,
                             float* __restrict__ g, int n, int C, float scale,
                             double* __restrict__ acc, int want_grad)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float loss = 0.0f, correct = 0.0f;
    if (i < n) {
        const float* row = y + (long long)i * C;
        const int ti = t[i];
        float m = row[0];
        int arg = 0;
        for (int c = 1; c < C; ++c) {
            const float v = row[c];
            if (v > m) { m = v; arg = c; }
        }
        float s = 0.0f;
        for (int c = 0; c < C; ++c) s += expf(row[c] - m);
        const float lse = m + logf(s);
        loss = lse - row[ti];
        correct = (arg == ti) ? 1.0f : 0.0f;
        if (want_grad) {
            float* grow = g + (long long)i * C;
            for (int c = 0; c < C; ++c) {
                const float p = expf(row[c] - lse);
                grow[c] = (c == ti ? p - 1.0f : p) * scale;
            }
        }
    }
    for (int off = 16; off > 0; off >>= 1) {
        loss += __shfl_down_sync(0xffffffffu, loss, off);
        correct += __shfl_down_sync(0xffffffffu, correct, off);
    }
    if ((threadIdx.x & 31) == 0) {
        atomicAdd(&acc[0], (double)loss);
        atomicAdd(&acc[1], (double)correct);
    }
}

// MomentumSGD over the flat parameter buffer, rounding as chainer's CPU rule does
// (v *= momentum; v -= lr * g; p += v, no fused multiply-add); then pos[0] += advance.
__global__ void momentum_update(float* __restrict__ p, float* __restrict__ v,
                                const float* __restrict__ g, int n, float lr, float momentum,
                                int* __restrict__ pos, int advance)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float vi = __fmul_rn(v[i], momentum);
        vi = __fsub_rn(vi, __fmul_rn(lr, g[i]));
        v[i] = vi;
        p[i] = __fadd_rn(p[i], vi);
    }
    if (i == 0) pos[0] += advance;
}

// Keeps the device busy for about `cycles` clock ticks: profile() queues a step's launches behind it,
// so that the events around each kernel time the kernel, not the host launching it.
__global__ void spin(long long cycles)
{
    const long long start = clock64();
    while (clock64() - start < cycles) { }
}

// cublas mode's epilogues: y[i] += bias[i % cols] (then ReLU), and g[i] = 0 where h[i] <= 0.
__global__ void bias_act(float* __restrict__ y, const float* __restrict__ bias, int n, int cols,
                         int relu)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float v = y[i] + bias[i % cols];
        y[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

__global__ void mask_mul(float* __restrict__ g, const float* __restrict__ h, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && !(h[i] > 0.0f)) g[i] = 0.0f;
}
'''

KERNEL_NAMES = ('gather_rows', 'softmax_xent', 'momentum_update', 'bias_act', 'mask_mul', 'spin') + tuple(
    'gemm<{0}, {0}>'.format(tile) for tile in TILES)

_modules = {}


def cupy_module():
    """The kernels compiled by NVRTC (CuPy caches the binary on disk), as {name: RawKernel}."""
    if 'cupy' not in _modules:
        import cupy
        module = cupy.RawModule(code=KERNELS, options=('-std=c++17',),
                                name_expressions=KERNEL_NAMES)
        _modules['cupy'] = {name: module.get_function(name) for name in KERNEL_NAMES}
    return _modules['cupy']


def _multiprocessors(cupy):
    try:
        device = cupy.cuda.Device()
        return int(cupy.cuda.runtime.getDeviceProperties(device.id)['multiProcessorCount'])
    except Exception:   # noqa: BLE001 - only a tiling hint
        return None


def _cdiv(a, b):
    return -(-a // b)


def _i32(v):
    return np.int32(v)


class GpuTrainer:
    """The fast training step on a CuPy device (or, for tests, NumPy plus emulated kernels).

    Same contract as fast_loop.NumpyTrainer: the Linear links' W and b become views of one flat
    device buffer; ``train_epoch(order)`` returns the epoch's mean training loss.
    """

    def __init__(self, linears, images, labels, batch_size, lr=fast_loop.LR,
                 momentum=fast_loop.MOMENTUM, mode='auto', xp=None, kernels=None,
                 multiprocessors=None, tile=None):
        if xp is None:
            import cupy as xp
        self.xp = xp
        self.force_tile = tile
        self.kernels = kernels if kernels is not None else cupy_module()
        self.B = B = batch_size
        self.lr, self.momentum = np.float32(lr), np.float32(momentum)
        self.requested_mode = mode
        if mode == 'auto':
            mode = 'graph' if B <= GRAPH_MAX_BATCH else 'cublas'
        if mode not in ('graph', 'raw', 'cublas'):
            raise ValueError('unknown GPU mode {!r}'.format(mode))
        self.mode, self.fallback_reason = mode, None
        self.stream = None
        if xp is not np:
            self.stream = xp.cuda.Stream(non_blocking=True)
            if multiprocessors is None:
                multiprocessors = _multiprocessors(xp)
        self.multiprocessors = multiprocessors or 132
        self._sync_device()   # the model's parameters were copied to the device on another stream

        with self._on_stream():
            params = []
            for link in linears:
                params += [link.W, link.b]
            self.size = total = sum(int(p.array.size) for p in params)
            self.flat = xp.empty(total, np.float32)
            self.velocity = xp.zeros(total, np.float32)
            self.grad = xp.zeros(total, np.float32)
            self.W, self.b, self.gW, self.gb = [], [], [], []
            offset = 0
            for i, p in enumerate(params):
                size = int(p.array.size)
                view = self.flat[offset:offset + size].reshape(p.array.shape)
                view[...] = xp.asarray(p.array)
                p.array = view
                grad = self.grad[offset:offset + size].reshape(p.array.shape)
                (self.W if i % 2 == 0 else self.b).append(view)
                (self.gW if i % 2 == 0 else self.gb).append(grad)
                offset += size
            self.widths = widths = [int(self.W[0].shape[1])] + [int(W.shape[0]) for W in self.W]
            self.images = xp.asarray(np.ascontiguousarray(images, np.float32))
            self.labels = xp.asarray(np.ascontiguousarray(labels, np.int32))
            self.n = len(images)
            # Room for the indices of one epoch's batches (at most ceil(n / B) of them).
            self.capacity = (_cdiv(self.n, B) + 1) * B
            self.order = xp.zeros(self.capacity, np.int32)
            self.pos = xp.zeros(1, np.int32)
            self.acc = xp.zeros(2, np.float64)
            self.eval_acc = xp.zeros(2, np.float64)
            self.dummy = xp.zeros(1, np.float32)
            self.x = xp.empty((B, widths[0]), np.float32)
            self.t = xp.empty(B, np.int32)
            self.h = [self.x] + [xp.empty((B, w), np.float32) for w in widths[1:]]
            self.gy = xp.empty((B, widths[-1]), np.float32)
            self.gh = [xp.empty((B, w), np.float32) for w in widths[1:-1]]
            self.ones = xp.ones(B, np.float32)
            # The gradient scale, rounded as the CPU path rounds it (see NumpyTrainer).
            self.scale = np.float32(np.ones((), np.float32) * (1.0 / max(np.ones(B, bool).sum(), 1)))
        self._sync_device()
        self.plan = self._step_plan()
        self._next = None
        self.graph = None
        if self.mode == 'graph':
            try:
                self.graph = self._capture()
            except Exception as e:  # capture is refused on some stacks: run the same kernels eagerly
                self.mode = 'raw'
                self.fallback_reason = '{}: {}'.format(type(e).__name__, e)

    def describe(self):
        text = 'GPU {} mode, batch {}'.format(self.mode, self.B)
        if self.fallback_reason:
            text += ' (CUDA graph capture failed, {})'.format(self.fallback_reason)
        return text

    # -- plumbing ----------------------------------------------------------------------------

    def _on_stream(self):
        if self.stream is None:
            import contextlib
            return contextlib.nullcontext()
        return self.stream

    def _sync_device(self):
        # Setup ran partly on the default stream (model.to_device), partly on ours: settle both.
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()

    def _upload(self, dst, host):
        if hasattr(dst, 'set'):
            dst.set(host)   # CuPy: on the current stream, ordered after the previous epoch's steps
        else:
            dst[...] = host

    @staticmethod
    def _host(a):
        return a.get() if hasattr(a, 'get') and not isinstance(a, np.ndarray) else np.asarray(a)

    def _tile(self, M, N):
        if self.force_tile:
            return self.force_tile
        for tile in (64, 32):
            if _cdiv(M, tile) * _cdiv(N, tile) >= self.multiprocessors:
                return tile
        return 16

    def _gemm(self, A, sam, sak, B, sbk, sbn, C, ldc, M, N, K, epi=0, aux=None, colsum=None):
        """One launch of ``gemm``, as a plan item (name, kernel, grid, block, args)."""
        tile = self._tile(M, N)
        name = 'gemm<{0}, {0}>'.format(tile)
        args = (A, _i32(sam), _i32(sak), B, _i32(sbk), _i32(sbn), C, _i32(ldc), _i32(M), _i32(N),
                _i32(K), _i32(epi), self.dummy if aux is None else aux,
                self.dummy if colsum is None else colsum, _i32(colsum is not None))
        label = '{} {}x{}x{}{}'.format(name, M, N, K, ' +colsum' if colsum is not None else '')
        return label, self.kernels[name], (_cdiv(N, tile), _cdiv(M, tile)), (THREADS,), args

    def _forward_plan(self, x, rows):
        """Launches for the logits of ``rows`` rows of ``x`` into self.h[-1] (our gemm)."""
        plan, h, W, b = [], self.h, self.W, self.b
        last = len(W) - 1
        for i in range(len(W)):
            n_in, n_out = self.widths[i], self.widths[i + 1]
            src = x if i == 0 else h[i]
            # h[i+1] = src W^T + b: A(m, k) = src[m, k], B(k, n) = W[n, k].
            plan.append(self._gemm(src, n_in, 1, W[i], 1, n_in, h[i + 1], n_out,
                                   rows, n_out, n_in, epi=1 if i == last else 2, aux=b[i]))
        return plan

    def _softmax(self, logits, labels, rows, acc, grad):
        return ('softmax_xent', self.kernels['softmax_xent'], (_cdiv(rows, THREADS),), (THREADS,),
                (logits, labels, self.gy if grad else self.dummy, _i32(rows),
                 _i32(self.widths[-1]), self.scale, acc, _i32(grad)))

    def _step_plan(self):
        """The step as a list of launches: (name, kernel, grid, block, args) or (name, callable)."""
        B, D = self.B, self.widths[0]
        k, h, W, xp = self.kernels, self.h, self.W, self.xp
        plan = [('gather_rows', k['gather_rows'], (B,), (THREADS,),
                 (self.images, self.labels, self.order, self.pos, self.x, self.t, _i32(D)))]
        last = len(W) - 1
        if self.mode == 'cublas':
            for i in range(len(W)):
                out = h[i + 1]
                plan.append(('cublas x W^T', lambda i=i, out=out: xp.dot(h[i], W[i].T, out=out)))
                plan.append(('bias_act', k['bias_act'], (_cdiv(out.size, THREADS),), (THREADS,),
                             (out, self.b[i], _i32(out.size), _i32(out.shape[1]),
                              _i32(i < last))))
        else:
            plan += self._forward_plan(self.x, B)
        plan.append(self._softmax(h[-1], self.t, B, self.acc, True))
        gy = self.gy
        for i in range(last, -1, -1):
            n_in, n_out = self.widths[i], self.widths[i + 1]
            if self.mode == 'cublas':
                plan.append(('cublas g^T h', lambda i=i, gy=gy: xp.dot(gy.T, h[i], out=self.gW[i])))
                plan.append(('cublas colsum', lambda i=i, gy=gy: xp.dot(self.ones, gy, out=self.gb[i])))
            else:
                # gW = gy^T h[i] (A(m, k) = gy[k, m]), gb = its column sums over the batch.
                plan.append(self._gemm(gy, 1, n_out, h[i], n_in, 1, self.gW[i], n_in,
                                       n_out, n_in, B, colsum=self.gb[i]))
            if i == 0:
                break
            g = self.gh[i - 1]
            if self.mode == 'cublas':
                plan.append(('cublas g W', lambda i=i, gy=gy, g=g: xp.dot(gy, W[i], out=g)))
                plan.append(('mask_mul', k['mask_mul'], (_cdiv(g.size, THREADS),), (THREADS,),
                             (g, h[i], _i32(g.size))))
            else:
                # g = (gy W) * (h[i] > 0): A(m, k) = gy[m, k], B(k, n) = W[k, n].
                plan.append(self._gemm(gy, n_out, 1, W[i], n_in, 1, g, n_in, B, n_in, n_out,
                                       epi=3, aux=h[i]))
            gy = g
        plan.append(('momentum_update', k['momentum_update'], (_cdiv(self.size, THREADS),), (THREADS,),
                     (self.flat, self.velocity, self.grad, _i32(self.size), self.lr,
                      self.momentum, self.pos, _i32(B))))
        return plan

    @staticmethod
    def _launch(plan):
        for item in plan:
            if len(item) == 2:
                item[1]()
            else:
                _, kernel, grid, block, args = item
                kernel(grid, block, args)

    def _capture(self):
        for item in self.plan:       # load every kernel before capture: no module loads inside it
            if len(item) > 2:
                getattr(item[1], 'kernel', None)
        stream = self.stream
        with stream:
            stream.begin_capture()
            try:
                self._launch(self.plan)
            except Exception:
                try:
                    stream.end_capture()
                except Exception:
                    pass
                raise
            graph = stream.end_capture()
        graph.upload(stream)
        return graph

    def _step(self):
        if self.graph is not None:
            self.graph.launch(self.stream)
        else:
            self._launch(self.plan)

    # -- the trainer's contract -----------------------------------------------------------------

    def run_batches(self, indices, steps):
        """Queue ``steps`` steps on the batches ``indices`` (steps * B of them); nothing waits."""
        per_upload = self.capacity // self.B
        for first in range(0, steps, per_upload):
            count = min(per_upload, steps - first)
            host = np.zeros(self.capacity, np.int32)
            host[:count * self.B] = indices[first * self.B:(first + count) * self.B]
            self._upload(self.order, host)
            self.pos.fill(0)
            for _ in range(count):
                self._step()

    def train_epoch(self, order, prefetch=False):
        """Train up to the end of the current epoch of ``order``; return the mean loss (one sync).

        With ``prefetch``, the next epoch's batches are drawn while the device works on this one
        (so draw them only when another epoch follows: it takes numbers from NumPy's generator).
        """
        indices, steps = self._next or order.epoch_batches()
        self._next = None
        with self._on_stream():
            self.acc.fill(0)
            self.run_batches(indices, steps)
            if prefetch:
                self._next = order.epoch_batches()
            total = self._host(self.acc)   # the epoch's only wait for the device
        self.last_images = steps * self.B
        return float(total[0]) / (steps * self.B)

    def run_steps(self, order, steps):
        """``steps`` steps; return the mean loss of the last one (for agreement checks)."""
        with self._on_stream():
            indices = np.concatenate([order.next()[0] for _ in range(steps)])
            if steps > 1:
                self.run_batches(indices[:-self.B], steps - 1)
            self.acc.fill(0)
            self.run_batches(indices[-self.B:], 1)
            total = self._host(self.acc)
        return float(total[0]) / self.B

    def evaluate(self, images, labels, batch_size):
        """(mean loss, accuracy) over a test set, in chunks of at most the training batch size."""
        xp, chunk = self.xp, min(batch_size, self.B)
        with self._on_stream():
            key = id(images)
            if getattr(self, '_test_key', None) != key:
                self._test = (xp.asarray(np.ascontiguousarray(images, np.float32)),
                              xp.asarray(np.ascontiguousarray(labels, np.int32)))
                self._test_key = key
            X, T = self._test
            self.eval_acc.fill(0)
            for start in range(0, len(X), chunk):
                rows = min(chunk, len(X) - start)
                if self.mode == 'cublas':
                    self._cublas_forward(X[start:start + rows], rows)
                else:
                    self._launch(self._forward_plan(X[start:start + rows], rows))
                self._launch([self._softmax(self.h[-1], T[start:start + rows], rows,
                                            self.eval_acc, False)])
            total = self._host(self.eval_acc)
        return float(total[0]) / len(X), float(total[1]) / len(X)

    def _cublas_forward(self, x, rows):
        xp, h, W, last = self.xp, self.h, self.W, len(self.W) - 1
        src = x
        for i in range(len(W)):
            out = h[i + 1][:rows]
            xp.dot(src, W[i].T, out=out)
            self._launch([('bias_act', self.kernels['bias_act'], (_cdiv(out.size, THREADS),), (THREADS,),
                           (out, self.b[i], _i32(out.size), _i32(out.shape[1]), _i32(i < last)))])
            src = out

    def finish(self):
        """Wait for the device and settle with the default stream (save_npz reads from it)."""
        if self.stream is not None:
            self.stream.synchronize()
        self._sync_device()

    def profile(self, order, steps=50):
        """Mean device time per launch of the step (launched one by one), in microseconds.

        Returns [(name, microseconds)].  Each step's launches are queued behind a ~2 ms ``spin``
        kernel, with CUDA events between them, so an event pair times one kernel on the device
        (and the gap between two kernels), not the host launching it.  GPU only.
        """
        xp = self.xp
        names = [item[0] for item in self.plan]
        totals = [0.0] * len(self.plan)
        with self._on_stream():
            indices = np.concatenate([order.next()[0] for _ in range(steps)])
            host = np.zeros(self.capacity, np.int32)
            per = self.capacity // self.B
            events = [xp.cuda.Event() for _ in range(len(self.plan) + 1)]
            done = 0
            while done < steps:
                count = min(per, steps - done)
                host[:count * self.B] = indices[done * self.B:(done + count) * self.B]
                self._upload(self.order, host)
                self.pos.fill(0)
                for _ in range(count):
                    self.kernels['spin']((1,), (1,), (np.int64(4_000_000),))
                    events[0].record(self.stream)
                    for j, item in enumerate(self.plan):
                        self._launch([item])
                        events[j + 1].record(self.stream)
                    events[-1].synchronize()
                    for j in range(len(self.plan)):
                        totals[j] += xp.cuda.get_elapsed_time(events[j], events[j + 1])
                done += count
        return [(name, 1000.0 * total / steps) for name, total in zip(names, totals)]
