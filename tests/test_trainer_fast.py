"""The trainer's fast loop (trainer/fast_loop.py, fast_gpu.py) against the seed loop, on the CPU.

* Same batches: OrderStream gives what chainer's SerialIterator gives, epoch boundaries included.
* Same results: after 50 steps from the same seed, the fast and seed loops' loss and weights agree
  within 1e-5 relative (on the CPU they differ only where OpenBLAS rounds differently on another
  thread count: ~1e-7; on the same count they are bit for bit the same).
* End to end: ``--loop fast`` (the default) logs Accuracy and Loss per epoch through
  ``azureml.core.run.Run``, writes a model.npz with the seed loop's keys and shapes that score.py
  serves, and reaches the seed loop's test accuracy after 5 epochs (within 0.5 points).
* The GPU kernels, run on the CPU: fast_gpu.py's CUDA C++ compiled with g++ against a small
  emulation of CUDA's execution model (one OS thread per CUDA thread, a barrier for
  __syncthreads), driven by GpuTrainer itself with NumPy arrays, must reproduce the NumPy step.
  That checks the kernels' indexing and the launch plan; only speed needs the GPU
  (benchmarks/gpu_check.sh).
"""

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from amlocal.backends.local.lifecycle import RUNTIME_DIR
from conftest import MNIST_DIR, TRAINER_DIR

sys.path.insert(0, str(TRAINER_DIR))
import chainer_mnist  # noqa: E402  (imports chainer_compat before chainer)
import fast_gpu  # noqa: E402
import fast_loop  # noqa: E402

import chainer  # noqa: E402
import chainer.links as L  # noqa: E402
from chainer.dataset import concat_examples  # noqa: E402

STEPS = 50


def relative(a, b):
    """max |a - b| relative to the larger magnitude in b (0 when both are all zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(a - b).max())


@pytest.fixture(scope="module")
def mnist():
    return chainer_mnist.load_mnist(str(MNIST_DIR), "train")


def seed_steps(images, labels, batch_size, steps, seed=0):
    """The seed loop's own machinery for ``steps`` steps: (model, loss of the last step)."""
    np.random.seed(seed)
    model = chainer_mnist.build_model()
    optimizer = chainer.optimizers.MomentumSGD(lr=0.01, momentum=0.9)
    optimizer.setup(model)
    iterator = chainer.iterators.SerialIterator(
        chainer.datasets.TupleDataset(images, labels), batch_size)
    for _ in range(steps):
        x, t = concat_examples(iterator.next(), -1)
        optimizer.update(model, x, t)
    return model, float(model.loss.array)


def fast_steps(images, labels, batch_size, steps, seed=0, blas_threads='auto'):
    np.random.seed(seed)
    model = chainer_mnist.build_model()
    order = fast_loop.OrderStream(len(images), batch_size)
    predictor = model.predictor
    trainer = fast_loop.NumpyTrainer([predictor.l1, predictor.l2, predictor.l3], images, labels,
                                     batch_size, blas_threads=blas_threads)
    loss = trainer.run_steps(order, steps)
    return model, loss


def params(model):
    return {name: np.asarray(param.array) for name, param in model.namedparams()}


# -- same batches ------------------------------------------------------------------------------

@pytest.mark.parametrize("n,batch_size", [(8000, 128), (8000, 100), (50, 8), (30, 64), (7, 7)])
def test_order_stream_gives_the_serial_iterators_batches(n, batch_size):
    np.random.seed(3)
    iterator = chainer.iterators.SerialIterator(np.arange(n), batch_size)
    expected = [(np.array(iterator.next()), iterator.is_new_epoch) for _ in range(200)]
    np.random.seed(3)
    order = fast_loop.OrderStream(n, batch_size)
    got = [order.next() for _ in range(200)]

    for (want, want_new), (have, have_new) in zip(expected, got):
        assert np.array_equal(want, have) and want_new == have_new


def test_epoch_batches_end_where_the_seed_loops_epochs_end():
    np.random.seed(0)
    order = fast_loop.OrderStream(8000, 128)
    counts = [order.epoch_batches()[1] for _ in range(4)]
    assert counts == [63, 62, 63, 62]   # 8000 / 128 = 62.5: every other batch straddles two epochs


# -- same results --------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [128, 100])
def test_fast_and_seed_loops_agree_after_50_steps(mnist, batch_size):
    images, labels = mnist
    seed_model, seed_loss = seed_steps(images, labels, batch_size, STEPS)
    fast_model, fast_loss = fast_steps(images, labels, batch_size, STEPS)

    assert abs(fast_loss - seed_loss) <= 1e-5 * abs(seed_loss)
    seed_params, fast_params = params(seed_model), params(fast_model)
    assert sorted(seed_params) == sorted(fast_params)
    for name in seed_params:
        assert relative(fast_params[name], seed_params[name]) <= 1e-5, name


def test_on_the_same_blas_threads_the_loops_are_bit_for_bit_equal(mnist):
    images, labels = mnist
    seed_model, _ = seed_steps(images, labels, 100, 20)
    fast_model, _ = fast_steps(images, labels, 100, 20, blas_threads=None)   # threads as they are

    seed_params, fast_params = params(seed_model), params(fast_model)
    assert all(np.array_equal(fast_params[name], seed_params[name]) for name in seed_params)


def test_the_fast_loop_keeps_the_models_parameters_in_place(mnist):
    images, labels = mnist
    model, _ = fast_steps(images, labels, 32, 3)
    W = model.predictor.l1.W
    assert W.array.shape == (100, 784) and W.array.dtype == np.float32
    assert isinstance(model.predictor(images[:2]).array, np.ndarray)   # still a working Chainer model


def test_blas_threads_are_set_for_the_steps_and_restored(mnist):
    blas = fast_loop.BlasThreads()
    if not blas.available:
        pytest.skip("no OpenBLAS found in this process")
    before = blas.get()
    images, labels = mnist
    np.random.seed(0)
    model = chainer_mnist.build_model()
    predictor = model.predictor
    trainer = fast_loop.NumpyTrainer([predictor.l1, predictor.l2, predictor.l3], images, labels, 128)
    seen = []
    step = trainer.step
    trainer.step = lambda indices: (seen.append(blas.get()), step(indices))[1]
    trainer.run_steps(fast_loop.OrderStream(len(images), 128), 2)
    assert seen == [fast_loop.blas_threads_for(128, os.cpu_count()) or before] * 2
    assert blas.get() == before


def test_a_gpu_fast_loop_that_cannot_start_leaves_the_seed_loops_numbers(mnist, monkeypatch):
    class Device:
        xp = object()   # not NumPy: a GPU as far as the fast loop is concerned

    def refuse(*args, **kwargs):
        raise RuntimeError("NVRTC missing")
    monkeypatch.setattr(fast_loop, "make_trainer", refuse)
    np.random.seed(0)
    model = chainer_mnist.build_model()
    state = np.random.get_state()[1].copy()

    with pytest.raises(fast_loop.FastLoopUnavailable, match="NVRTC missing"):
        fast_loop.train(model, mnist, mnist, Device(), 1, 128, run=None)
    assert np.array_equal(np.random.get_state()[1], state)   # the seed loop draws what it would have


# -- end to end ----------------------------------------------------------------------------------

def run_trainer(*args, cwd):
    env = {name: value for name, value in os.environ.items() if not name.startswith("AZUREML_")}
    env.update(PYTHONPATH=str(RUNTIME_DIR))
    return subprocess.run([sys.executable, str(TRAINER_DIR / "chainer_mnist.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd)


def test_default_loop_is_fast():
    assert chainer_mnist.parse_args(["--data-dir", "x"]).loop == "fast"


@pytest.fixture(scope="module")
def five_epochs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loops")
    results = {}
    for loop in ("seed", "fast"):
        result = run_trainer("--epochs", 5, "--data-dir", MNIST_DIR, "--loop", loop,
                             "--output_dir", folder / loop, cwd=folder)
        assert result.returncode == 0, result.stderr
        results[loop] = result.stdout
    return folder, results


def accuracies(stdout):
    return [float(a) for a in re.findall(r"test_accuracy (\d\.\d+)", stdout)]


def test_five_epochs_reach_the_seed_loops_accuracy(five_epochs):
    _folder, logs = five_epochs
    seed, fast = accuracies(logs["seed"]), accuracies(logs["fast"])

    assert len(seed) == len(fast) == 5
    assert abs(fast[-1] - seed[-1]) <= 0.005, (seed, fast)
    assert fast[-1] >= 0.9
    assert "loop fast" in logs["fast"] and "fast loop: CPU NumPy" in logs["fast"]


def test_fast_loop_logs_accuracy_and_loss_each_epoch_through_the_run(five_epochs):
    _folder, logs = five_epochs
    for stdout in logs.values():   # outside a run, the run-side API prints what it would log
        assert stdout.count("Attempted to log scalar metric Accuracy:") == 5
        assert stdout.count("Attempted to log scalar metric Loss:") == 5


def test_a_script_copied_without_fast_loop_runs_the_seed_loop(tmp_path):
    # As the how-to's walkthrough does: the project folder gets chainer_mnist.py and chainer_compat.py.
    for name in ("chainer_mnist.py", "chainer_compat.py"):
        shutil.copy(TRAINER_DIR / name, tmp_path / name)
    env = {name: value for name, value in os.environ.items() if not name.startswith("AZUREML_")}
    env.update(PYTHONPATH=str(RUNTIME_DIR))
    result = subprocess.run([sys.executable, str(tmp_path / "chainer_mnist.py"), "--epochs", "1",
                             "--data-dir", str(MNIST_DIR), "--output_dir", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "fast loop unavailable" in result.stdout and "epoch 1/1" in result.stdout
    assert (tmp_path / "out" / "model.npz").is_file()


SCORE = """
import json, sys
sys.path.insert(0, {trainer!r})
import score
from chainer_mnist import load_mnist
images, labels = load_mnist({data!r}, 'test')
score.init()
predicted = score.run(json.dumps({{'data': images[:200].tolist()}}))
print(json.dumps({{'accuracy': sum(p == t for p, t in zip(predicted, labels[:200].tolist())) / 200}}))
"""


def test_fast_loop_writes_the_model_that_score_serves(five_epochs):
    folder, _logs = five_epochs
    with np.load(folder / "seed" / "model.npz") as seed, np.load(folder / "fast" / "model.npz") as fast:
        assert sorted(seed.files) == sorted(fast.files)
        assert all(seed[name].shape == fast[name].shape and seed[name].dtype == fast[name].dtype
                   for name in seed.files)

    code = SCORE.format(trainer=str(TRAINER_DIR), data=str(MNIST_DIR))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, AZUREML_MODEL_DIR=str(folder / "fast")))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] >= 0.85


# -- the GPU kernels, emulated on the CPU --------------------------------------------------------

EMULATION = r"""
#include <barrier>
#include <chrono>
#include <cstddef>
#include <math.h>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static std::barrier<>* emu_barrier;
static float emu_lanes[1024];
static std::mutex emu_mutex;

#define __global__
#define __device__
#define __launch_bounds__(n)
#define __shared__ static   /* blocks run one after another: one copy serves each block in turn */

static inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
static inline unsigned emu_tid() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
static inline float __shfl_down_sync(unsigned, float v, int offset) {
    const unsigned tid = emu_tid(), n = blockDim.x * blockDim.y * blockDim.z;
    emu_lanes[tid] = v;
    __syncthreads();
    const float r = ((tid & 31) + offset < 32 && tid + offset < n) ? emu_lanes[tid + offset] : v;
    __syncthreads();
    return r;
}
static inline double atomicAdd(double* a, double v) {
    std::lock_guard<std::mutex> lock(emu_mutex); const double old = *a; *a += v; return old;
}
static inline long long clock64() {
    return std::chrono::steady_clock::now().time_since_epoch().count();
}
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }

template <class... Ts, std::size_t... I>
static void emu_call(void (*f)(Ts...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<Ts>*>(args[I])...);
}

template <class... Ts>
static void emu_launch(void (*f)(Ts...), unsigned gx, unsigned gy, unsigned gz,
                       unsigned bx, unsigned by, unsigned bz, void** args) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    const unsigned n = bx * by * bz;
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                std::barrier<> barrier(n);
                emu_barrier = &barrier;
                std::vector<std::thread> threads;
                for (unsigned t = 0; t < n; ++t)
                    threads.emplace_back([=] {
                        blockIdx = {x, y, z};
                        threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
                        emu_call(f, args, std::index_sequence_for<Ts...>{});
                    });
                for (auto& thread : threads) thread.join();
            }
}
"""


class EmulatedKernel:
    """Calls like CuPy's RawKernel: kernel(grid, block, args) with NumPy arrays and scalars."""

    def __init__(self, function):
        self.function = function

    def __call__(self, grid, block, args):
        grid, block = (tuple(grid) + (1, 1))[:3], (tuple(block) + (1, 1))[:3]
        values = []
        for arg in args:
            if isinstance(arg, np.ndarray):
                assert arg.flags.c_contiguous, "kernels take contiguous arrays"
                values.append(ctypes.c_void_p(arg.ctypes.data))
            elif isinstance(arg, np.int32):
                values.append(ctypes.c_int32(int(arg)))
            elif isinstance(arg, np.int64):
                values.append(ctypes.c_int64(int(arg)))
            elif isinstance(arg, np.float32):
                values.append(ctypes.c_float(float(arg)))
            else:
                raise TypeError("kernel argument of type {}: pass NumPy scalars".format(type(arg)))
        pointers = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(value), ctypes.c_void_p) for value in values])
        self.function(*grid, *block, pointers)


@pytest.fixture(scope="module")
def emulated_kernels(tmp_path_factory):
    compiler = shutil.which("g++")
    if not compiler:
        pytest.skip("no g++ to build the CUDA kernels' emulation")
    folder = tmp_path_factory.mktemp("emulation")
    wrappers = "\n".join(
        'extern "C" void emu_{i}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
        "unsigned bz, void** args) {{ emu_launch(&{name}, gx, gy, gz, bx, by, bz, args); }}"
        .format(i=i, name=name.replace(" ", "")) for i, name in enumerate(fast_gpu.KERNEL_NAMES))
    (folder / "kernels.cpp").write_text(EMULATION + fast_gpu.KERNELS + wrappers)
    library = folder / "kernels.so"
    build = subprocess.run([compiler, "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared",
                            "-pthread", "-w", "-o", str(library), str(folder / "kernels.cpp")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    lib = ctypes.CDLL(str(library))
    kernels = {}
    for i, name in enumerate(fast_gpu.KERNEL_NAMES):
        function = getattr(lib, "emu_{}".format(i))
        function.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p]
        function.restype = None
        kernels[name] = EmulatedKernel(function)
    return kernels


def small_problem(seed=0):
    """A 24-20-20-10 MLP and 40 random examples: big enough for partial tiles, small to emulate."""
    rng = np.random.RandomState(seed)
    images = rng.rand(40, 24).astype(np.float32)
    labels = rng.randint(0, 10, 40).astype(np.int32)

    def model():
        np.random.seed(seed)
        chain = chainer.Chain()
        with chain.init_scope():
            chain.l1, chain.l2, chain.l3 = L.Linear(24, 20), L.Linear(20, 20), L.Linear(20, 10)
            for link in (chain.l1, chain.l2, chain.l3):   # non-zero biases exercise the bias paths
                link.b.array[...] = np.random.uniform(-0.1, 0.1, link.b.shape)
        return chain
    return images, labels, model


@pytest.mark.parametrize("mode,tile", [("raw", 16), ("raw", 32), ("raw", 64), ("cublas", None)])
def test_gpu_kernels_reproduce_the_numpy_step_under_emulation(emulated_kernels, mode, tile):
    images, labels, model = small_problem()
    batch_size, steps = 12, 5
    reference, emulated = model(), model()
    links = lambda chain: [chain.l1, chain.l2, chain.l3]  # noqa: E731
    cpu = fast_loop.NumpyTrainer(links(reference), images, labels, batch_size)
    gpu = fast_gpu.GpuTrainer(links(emulated), images, labels, batch_size, mode=mode, xp=np,
                              kernels=emulated_kernels, tile=tile)
    assert gpu.mode == mode

    np.random.seed(1)
    cpu_loss = cpu.run_steps(fast_loop.OrderStream(len(images), batch_size), steps)
    np.random.seed(1)
    gpu_loss = gpu.run_steps(fast_loop.OrderStream(len(images), batch_size), steps)

    assert abs(gpu_loss - cpu_loss) <= 1e-5 * abs(cpu_loss)
    for want, have in zip(cpu.W + cpu.b, gpu.W + gpu.b):
        assert relative(have, want) <= 1e-5
    assert np.array_equal(links(emulated)[0].W.array, gpu.W[0])   # the model sees the updates
    # Evaluation in chunks of the batch size, the last one partial (40 = 3 * 12 + 4).
    want_loss, want_accuracy = cpu.evaluate(images, labels, batch_size)
    have_loss, have_accuracy = gpu.evaluate(images, labels, batch_size)
    assert abs(have_loss - want_loss) <= 1e-5 * want_loss and have_accuracy == want_accuracy


def test_gpu_epoch_counts_the_seed_loops_batches(emulated_kernels):
    images, labels, model = small_problem()
    chain = model()
    gpu = fast_gpu.GpuTrainer([chain.l1, chain.l2, chain.l3], images, labels, 16, mode="raw",
                              xp=np, kernels=emulated_kernels)
    np.random.seed(0)
    order = fast_loop.OrderStream(len(images), 16)
    losses = [gpu.train_epoch(order) for _ in range(2)]
    assert [gpu.last_images, order.epoch] == [32, 2]   # 40 / 16: 3 batches, then 2 (48 + 32 = 80)
    assert all(np.isfinite(losses)) and int(gpu.pos[0]) == 2 * 16

    # Drawing the next epoch's batches while the device works changes nothing but when.
    chain = model()
    ahead = fast_gpu.GpuTrainer([chain.l1, chain.l2, chain.l3], images, labels, 16, mode="raw",
                                xp=np, kernels=emulated_kernels)
    np.random.seed(0)
    order = fast_loop.OrderStream(len(images), 16)
    assert [ahead.train_epoch(order, prefetch=True), ahead.train_epoch(order)] == losses
    assert all(np.array_equal(a, b) for a, b in zip(ahead.W + ahead.b, gpu.W + gpu.b))


def test_softmax_kernel_sums_every_warp_and_block(emulated_kernels):
    rng = np.random.RandomState(0)
    rows, classes = 300, 10   # two blocks of 256 threads, the second partly idle
    logits = rng.randn(rows, classes).astype(np.float32)
    labels = rng.randint(0, classes, rows).astype(np.int32)
    grad = np.zeros_like(logits)
    acc = np.zeros(2, np.float64)
    emulated_kernels["softmax_xent"]((2,), (256,), (logits, labels, grad, np.int32(rows),
                                                   np.int32(classes), np.float32(0.5), acc,
                                                   np.int32(1)))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    want_grad = np.exp(log_p)
    want_grad[np.arange(rows), labels] -= 1
    assert acc[0] == pytest.approx(-log_p[np.arange(rows), labels].sum(), rel=1e-5)
    assert acc[1] == (logits.argmax(axis=1) == labels).sum()
    assert relative(grad, want_grad * 0.5) <= 1e-5
