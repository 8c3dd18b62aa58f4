"""How fast does the trainer train, and does the fast loop still train the same model? One run.

    python benchmarks/trainer.py [--data-dir DIR] [--batch-sizes 100,128,1024,8192]
                                 [--seconds 1.0] [--json FILE] [--no-gpu]

Needs Chainer importable (trainer/chainer_compat.py handles NumPy 2 / Python 3.12) and, for the GPU
part, CuPy and a GPU; PyTorch, when importable and a GPU is there, is timed as the reference.
Prints, in order:

1. agreement: 50 steps from the same seed, loss of the 50th batch and every weight, relative to
   the seed loop on the CPU (max |a - b| / max |b| per array): the fast loop on the CPU, and on a
   GPU the seed loop, and the fast loop in each of its modes.  Must be <= 1e-5.
2. images/s for the seed loop (chainer_mnist.train_epoch, untouched) and the fast loop, on the CPU
   and the GPU, at each batch size; PyTorch's eager and CUDA-graph MLP on the GPU.  Each figure is
   whole training epochs (what the trainer prints per epoch) over at least --seconds, after one
   warm-up epoch.
3. the fast CPU loop at batch 128 on 1, 2, 4, ... OpenBLAS threads.
4. test accuracy after 5 epochs (--epochs) for both loops at batch 100 and 128, same seed.
5. on a GPU, device time per kernel of the fast step (CUDA events around each launch), and wall
   versus device time per step.
6. verdicts against issue 6's targets.

Data: --data-dir, else ../shared/data/mnist-10k beside the repo, else tests/data/mnist-10k (the same
10,000 digits).
"""
import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'trainer'))

import numpy as np  # noqa: E402

import chainer_mnist  # noqa: E402  (imports chainer_compat before chainer)
import fast_loop  # noqa: E402

import chainer  # noqa: E402
from chainer.dataset import concat_examples  # noqa: E402

STEPS = 50
TOLERANCE = 1e-5
GPU_TARGET = 220_000
CPU_RATIO_TARGET = 1.5


class Run:
    """Stands in for azureml's Run: keeps what the loops log."""

    def __init__(self):
        self.metrics = {}

    def log(self, name, value):
        self.metrics.setdefault(name, []).append(value)


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(a - b).max())


def to_host(a):
    return chainer.backend.CpuDevice().send(a)


def linears(model):
    p = model.predictor
    return [p.l1, p.l2, p.l3]


def params(model):
    return {name: to_host(param.array) for name, param in model.namedparams()}


def new_model(device, seed=0):
    np.random.seed(seed)
    model = chainer_mnist.build_model()
    model.to_device(device)
    device.use()
    return model


# -- the two loops, as the trainer runs them ---------------------------------------------------

def seed_loop(data, device, batch_size, seed=0):
    """(run one epoch -> images, model) for the seed loop: chainer_mnist.train_epoch as it is."""
    images, labels = data
    model = new_model(device, seed)
    optimizer = chainer.optimizers.MomentumSGD(lr=0.01, momentum=0.9)
    optimizer.setup(model)
    iterator = chainer.iterators.SerialIterator(chainer.datasets.TupleDataset(images, labels),
                                                batch_size)

    def epoch():
        before = iterator.epoch_detail
        chainer_mnist.train_epoch(model, optimizer, iterator, device)   # float(): waits for the device
        return round((iterator.epoch_detail - before) * len(images))
    return epoch, model


def fast_trainer(data, device, batch_size, mode='auto', seed=0, **kwargs):
    images, labels = data
    model = new_model(device, seed)
    order = fast_loop.OrderStream(len(images), batch_size)
    trainer = fast_loop.make_trainer(linears(model), images, labels, batch_size, device.xp,
                                     gpu_mode=mode, **kwargs)
    return trainer, order, model


def fast_loop_epochs(data, device, batch_size, mode='auto', **kwargs):
    trainer, order, model = fast_trainer(data, device, batch_size, mode, **kwargs)

    def epoch():
        trainer.train_epoch(order, prefetch=True)
        return trainer.last_images
    return epoch, trainer


def timed(epoch, seconds):
    """images/s over whole epochs lasting at least ``seconds`` in all."""
    images, start = 0, time.perf_counter()
    while True:
        images += epoch()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return images / elapsed


def with_blas_threads(epoch, threads):
    """Run ``epoch`` with OpenBLAS on ``threads`` threads (the seed loop on one thread)."""
    blas = fast_loop.BlasThreads()

    def run():
        before = blas.get()
        blas.set(threads)
        try:
            return epoch()
        finally:
            blas.set(before)
    return run


# -- PyTorch, the reference on the GPU -----------------------------------------------------------

def torch_epochs(data, batch_size, graph):
    import torch
    import torch.nn.functional as F
    dev = torch.device('cuda')
    images, labels = data
    X = torch.as_tensor(images, device=dev)
    T = torch.as_tensor(labels.astype(np.int64), device=dev)
    n = len(images)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.ReLU(),
                                torch.nn.Linear(100, 100), torch.nn.ReLU(),
                                torch.nn.Linear(100, 10)).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps = math.ceil(n / batch_size)

    def indices():
        count = math.ceil(steps * batch_size / n)
        return torch.cat([torch.randperm(n, device=dev) for _ in range(count)])

    def step(idx):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X[idx]), T[idx])
        loss.backward()
        optimizer.step()
        return loss

    if not graph:
        def epoch():
            idx = indices()
            for s in range(steps):
                step(idx[s * batch_size:(s + 1) * batch_size])
            torch.cuda.synchronize()
            return steps * batch_size
        return epoch

    static_idx = indices()[:batch_size].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(static_idx)
    torch.cuda.current_stream().wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(cuda_graph):
        static_loss = F.cross_entropy(model(X[static_idx]), T[static_idx])
        static_loss.backward()
        optimizer.step()

    def epoch():
        idx = indices()
        for s in range(steps):
            static_idx.copy_(idx[s * batch_size:(s + 1) * batch_size])
            cuda_graph.replay()
        torch.cuda.synchronize()
        return steps * batch_size
    return epoch


# -- sections --------------------------------------------------------------------------------------

def environment(gpu):
    blas = fast_loop.BlasThreads()
    env = {'python': platform.python_version(), 'numpy': np.__version__,
           'chainer': chainer.__version__, 'cpu_count': os.cpu_count(),
           'cpu': platform.processor() or platform.machine(),
           'openblas': blas.config(), 'openblas_threads': blas.get()}
    try:
        with open('/proc/cpuinfo') as f:
            env['cpu'] = next(line.split(':', 1)[1].strip() for line in f
                              if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    if gpu:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        env.update(cupy=cupy.__version__, gpu=props['name'].decode(),
                   cuda_runtime=cupy.cuda.runtime.runtimeGetVersion())
    try:
        import torch
        env['torch'] = torch.__version__
    except Exception:   # noqa: BLE001 - absent or broken: no reference
        env['torch'] = None
    return env


def agreement(data, gpu, batch_size=128):
    """Every configuration against the seed loop on the CPU, after STEPS steps."""
    images, labels = data
    cpu = chainer.get_device(-1)
    results = []

    def seed_steps(device):
        model = new_model(device)
        optimizer = chainer.optimizers.MomentumSGD(lr=0.01, momentum=0.9)
        optimizer.setup(model)
        it = chainer.iterators.SerialIterator(chainer.datasets.TupleDataset(images, labels),
                                              batch_size)
        for _ in range(STEPS):
            x, t = concat_examples(it.next(), device)
            optimizer.update(model, x, t)
        return float(model.loss.array), params(model)

    ref_loss, ref_params = seed_steps(cpu)

    def compare(name, loss, got):
        worst = max(relative(got[k], ref_params[k]) for k in ref_params)
        loss_rel = abs(loss - ref_loss) / abs(ref_loss)
        results.append({'what': name, 'loss': loss, 'loss_rel': loss_rel, 'weights_rel': worst,
                        'ok': loss_rel <= TOLERANCE and worst <= TOLERANCE})

    trainer, order, model = fast_trainer(data, cpu, batch_size)
    compare('fast loop, CPU', trainer.run_steps(order, STEPS), params(model))
    if gpu:
        device = chainer.get_device(0)
        loss, got = seed_steps(device)
        compare('seed loop, GPU', loss, got)
        for mode in ('graph', 'raw', 'cublas'):
            try:
                trainer, order, model = fast_trainer(data, device, batch_size, mode)
                loss = trainer.run_steps(order, STEPS)
                trainer.finish()
                compare('fast loop, GPU {}{}'.format(
                    trainer.mode, '' if trainer.mode == mode else ' (asked ' + mode + ')'),
                    loss, params(model))
            except Exception as e:   # noqa: BLE001 - report and go on with the rest
                results.append({'what': 'fast loop, GPU ' + mode, 'error': repr(e), 'ok': False})
    return ref_loss, results


def throughput(data, gpu, batch_sizes, seconds, rounds, torch_ok):
    """images/s of every configuration at every batch size.

    Per batch size, every configuration is set up and warmed up (one epoch: compiles, caches,
    clocks), then they take turns, ``rounds`` times, each turn whole epochs for seconds / rounds;
    a configuration's figure is its best turn.  Taking turns spreads a noisy neighbour's load over
    all of them instead of whichever ran at the time.
    """
    cpu = chainer.get_device(-1)
    configs = [('seed loop, CPU', lambda b: seed_loop(data, cpu, b)[0]),
               ('seed loop, CPU, 1 BLAS thread', lambda b: with_blas_threads(
                   seed_loop(data, cpu, b)[0], 1)),
               ('fast loop, CPU', lambda b: fast_loop_epochs(data, cpu, b)[0])]
    if gpu:
        device = chainer.get_device(0)
        configs.append(('seed loop, GPU', lambda b: seed_loop(data, device, b)[0]))
        for mode in ('auto', 'graph', 'raw', 'cublas'):
            configs.append(('fast loop, GPU ' + mode, lambda b, mode=mode: fast_loop_epochs(
                data, device, b, mode)[0]))
    rows = {name: {'what': name} for name, _ in configs}
    for b in batch_sizes:
        epochs = {}
        for name, make in configs:
            try:
                epochs[name] = make(b)
                epochs[name]()   # warm-up
            except Exception as e:   # noqa: BLE001 - report it in the table, go on
                epochs.pop(name, None)
                rows[name][b] = None
                rows[name].setdefault('errors', {})[b] = repr(e)
        for _ in range(rounds):
            for name, epoch in epochs.items():
                rate = timed(epoch, seconds / rounds)
                rows[name][b] = max(rows[name].get(b) or 0, rate)
                rows[name].setdefault('turns', {}).setdefault(b, []).append(rate)
        for name, _ in configs:
            row = rows[name]
            print('  {:<30} batch {:>5}: {}'.format(
                name, b, '{:,.0f} images/s'.format(row[b]) if row.get(b) else row['errors'][b]),
                flush=True)
        del epochs
    if torch_ok:
        rows.update(torch_in_own_process(batch_sizes, seconds, rounds))
    return list(rows.values())


TORCH_CONFIGS = (('PyTorch GPU eager', False), ('PyTorch GPU CUDA graph', True))


def torch_rows(data, batch_sizes, seconds, rounds):
    """PyTorch's images/s at each batch size, timed as the others are."""
    rows = {name: {'what': name} for name, _ in TORCH_CONFIGS}
    for b in batch_sizes:
        for name, graph in TORCH_CONFIGS:
            try:
                epoch = torch_epochs(data, b, graph)
                epoch()   # warm-up
                rows[name][b] = max(timed(epoch, seconds / rounds) for _ in range(rounds))
            except Exception as e:   # noqa: BLE001 - report it in the table, go on
                rows[name][b] = None
                rows[name].setdefault('errors', {})[b] = repr(e)
    return rows


def torch_in_own_process(batch_sizes, seconds, rounds):
    """torch_rows in a process of its own: PyTorch and CuPy in one process share the device,
    and a failure of one (a device-side assert) would poison the other's context."""
    import subprocess
    command = [sys.executable, os.path.abspath(__file__), '--torch-only',
               '--batch-sizes', ','.join(map(str, batch_sizes)), '--seconds', str(seconds),
               '--rounds', str(rounds), '--data-dir', default_data_dir_arg[0]]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        rows = json.loads(result.stdout.strip().splitlines()[-1])
        return {name: {k if k in ('what', 'errors') else int(k): v for k, v in row.items()}
                for name, row in rows.items()}
    except (IndexError, ValueError):
        error = (result.stderr.strip().splitlines() or ['no output'])[-1]
        return {name: dict({'what': name, 'errors': {b: error for b in batch_sizes}},
                           **{b: None for b in batch_sizes}) for name, _ in TORCH_CONFIGS}


default_data_dir_arg = [None]


def thread_sweep(data, seconds, rounds, batch_size=128):
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, 4, 8, cores} & set(range(1, cores + 1)))
    cpu = chainer.get_device(-1)
    epochs = {n: fast_loop_epochs(data, cpu, batch_size, blas_threads=n)[0] for n in counts}
    best = {n: 0.0 for n in counts}
    for n in counts:
        epochs[n]()
    for _ in range(rounds):
        for n in counts:
            best[n] = max(best[n], timed(epochs[n], seconds / rounds))
    return best


def accuracy(data, test, device, batch_size, epochs, loop, mode='auto'):
    model = new_model(device)
    run = Run()
    with contextlib.redirect_stdout(io.StringIO()):
        if loop == 'seed':
            chainer_mnist.train(model, chainer.datasets.TupleDataset(*data),
                                chainer.datasets.TupleDataset(*test), device, epochs, batch_size, run)
        else:
            fast_loop.train(model, data, test, device, epochs, batch_size, run, gpu_mode=mode)
    return run.metrics['Accuracy'][-1]


def profile(data, batch_size, mode):
    """Where a fast GPU step's time goes: per kernel, on the device, and host against device.

    kernels_us: device time of each launch of the step (GpuTrainer.profile).  device_us_per_step:
    a full upload's worth of steps queued behind a ~50 ms spin kernel, timed by events around
    them, so the host's launching is hidden: the device's own time per step.  wall_us_per_step:
    400 steps as training runs them (uploads included), one wait at the end.  Wall well above
    device time means the host (Python, launches) is what limits the step.
    """
    import cupy
    device = chainer.get_device(0)
    trainer, order, _model = fast_trainer(data, device, batch_size, mode)
    kernels = trainer.profile(order, steps=50)
    stream, B = trainer.stream, batch_size
    with trainer._on_stream():
        start_event, end_event = cupy.cuda.Event(), cupy.cuda.Event()
        count = min(trainer.capacity // B, 64)
        host = np.zeros(trainer.capacity, np.int32)
        host[:count * B] = np.concatenate([order.next()[0] for _ in range(count)])
        trainer._upload(trainer.order, host)
        trainer.pos.fill(0)
        trainer.kernels['spin']((1,), (1,), (np.int64(100_000_000),))
        start_event.record(stream)
        for _ in range(count):
            trainer._step()
        end_event.record(stream)
        end_event.synchronize()
        device_us = cupy.cuda.get_elapsed_time(start_event, end_event) * 1000 / count

        steps = 400
        indices = np.concatenate([order.next()[0] for _ in range(steps)])
        stream.synchronize()
        start = time.perf_counter()
        trainer.run_batches(indices, steps)
        stream.synchronize()
        wall = (time.perf_counter() - start) / steps * 1e6
    return {'mode': trainer.mode, 'batch': batch_size, 'kernels_us': kernels,
            'sum_of_kernels_us': sum(t for _, t in kernels), 'wall_us_per_step': wall,
            'device_us_per_step': device_us}


def default_data_dir():
    for candidate in (REPO.parent / 'shared' / 'data' / 'mnist-10k', REPO / 'tests' / 'data' / 'mnist-10k'):
        if candidate.is_dir():
            return str(candidate)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-dir', default=default_data_dir())
    parser.add_argument('--batch-sizes', default='100,128,1024,8192')
    parser.add_argument('--seconds', type=float, default=1.5,
                        help='timing per configuration and batch size, in --rounds turns')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=5)
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--no-gpu', action='store_true')
    parser.add_argument('--torch-only', action='store_true',
                        help='time only the PyTorch reference and print it as one JSON line')
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
    default_data_dir_arg[0] = args.data_dir

    data = chainer_mnist.load_mnist(args.data_dir, 'train')
    if args.torch_only:
        print(json.dumps(torch_rows(data, batch_sizes, args.seconds, args.rounds), default=str))
        return 0
    test = chainer_mnist.load_mnist(args.data_dir, 'test')
    gpu = not args.no_gpu and chainer_mnist.default_gpu_id() >= 0
    env = environment(gpu)
    env['data'] = args.data_dir
    torch_ok = False
    if gpu and env.get('torch'):
        import torch
        torch_ok = torch.cuda.is_available()
    print('environment:', json.dumps(env, indent=1), flush=True)
    out = {'environment': env, 'command': ' '.join([os.path.basename(sys.executable)] + sys.argv)}

    def save(results):
        # After every section, so that a run cut short still leaves what it measured.
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(results, f, indent=1, default=str)

    print('\n1. agreement after {} steps, batch 128, against the seed loop on the CPU '
          '(tolerance {:g} relative):'.format(STEPS, TOLERANCE), flush=True)
    ref_loss, agree = agreement(data, gpu)
    print('  seed loop, CPU: loss {:.7f}'.format(ref_loss))
    for r in agree:
        if 'error' in r:
            print('  {:<34} ERROR {}'.format(r['what'], r['error']))
        else:
            print('  {:<34} loss {:.7f}  loss rel {:.2e}  weights rel {:.2e}  {}'.format(
                r['what'], r['loss'], r['loss_rel'], r['weights_rel'], 'ok' if r['ok'] else 'FAIL'))
    out['agreement'] = {'reference_loss': ref_loss, 'results': agree}
    save(out)

    print('\n2. images/s (best of {} turns of whole epochs, {:g} s in all per figure):'.format(
        args.rounds, args.seconds), flush=True)
    rows = throughput(data, gpu, batch_sizes, args.seconds, args.rounds, torch_ok)
    out['throughput'] = [{str(k): v for k, v in row.items()} for row in rows]
    header = '| {:<30} |'.format('images/s') + ''.join(' {:>11} |'.format('batch %d' % b)
                                                         for b in batch_sizes)
    print('\n' + header)
    print('|' + '-' * 32 + '|' + '------------:|' * len(batch_sizes))
    for row in rows:
        print('| {:<30} |'.format(row['what']) + ''.join(
            ' {:>11} |'.format('{:,.0f}'.format(row[b]) if row.get(b) else 'error')
            for b in batch_sizes))
    by_name = {row['what']: row for row in rows}

    def ratio(fast, seed, b):
        f, s = by_name.get(fast, {}).get(b), by_name.get(seed, {}).get(b)
        return f / s if f and s else None
    ratios = {b: ratio('fast loop, CPU', 'seed loop, CPU', b) for b in batch_sizes}
    print('fast / seed on the CPU: ' + ', '.join(
        'batch {}: {:.2f}x'.format(b, r) for b, r in ratios.items() if r))
    if gpu:
        gpu_ratios = {b: ratio('fast loop, GPU auto', 'seed loop, GPU', b) for b in batch_sizes}
        print('fast (auto) / seed on the GPU: ' + ', '.join(
            'batch {}: {:.2f}x'.format(b, r) for b, r in gpu_ratios.items() if r))
        out['gpu_ratios'] = gpu_ratios
    out['cpu_ratios'] = ratios
    save(out)

    print('\n3. fast loop on the CPU at batch 128 by OpenBLAS threads:', flush=True)
    sweep = thread_sweep(data, args.seconds, args.rounds)
    print('  ' + ', '.join('{} thread{}: {:,.0f}'.format(n, 's' if n > 1 else '', v)
                           for n, v in sweep.items()))
    out['cpu_thread_sweep_batch128'] = sweep

    print('\n4. test accuracy after {} epochs, seed 0:'.format(args.epochs), flush=True)
    acc = []
    devices = [('CPU', chainer.get_device(-1))] + ([('GPU', chainer.get_device(0))] if gpu else [])
    for b in (100, 128):
        for dev_name, device in devices:
            try:
                seed_acc = accuracy(data, test, device, b, args.epochs, 'seed')
                fast_acc = accuracy(data, test, device, b, args.epochs, 'fast')
            except Exception as e:   # noqa: BLE001
                acc.append({'device': dev_name, 'batch': b, 'error': repr(e), 'ok': False})
                print('  {} batch {}: ERROR {!r}'.format(dev_name, b, e), flush=True)
                continue
            acc.append({'device': dev_name, 'batch': b, 'seed': seed_acc, 'fast': fast_acc,
                        'ok': abs(fast_acc - seed_acc) <= 0.005})
            print('  {} batch {}: seed {:.4f}  fast {:.4f}  difference {:+.2f} points'.format(
                dev_name, b, seed_acc, fast_acc, 100 * (fast_acc - seed_acc)), flush=True)
    out['accuracy'] = acc
    save(out)

    if gpu:
        print('\n5. GPU profile of the fast step (see profile(): wall = as trained, device = the '
              "GPU's own time per step, kernels = mean of 50 steps):", flush=True)
        profiles = []
        for b, mode in ((128, 'raw'), (128, 'cublas'), (128, 'graph'), (8192, 'raw'), (8192, 'cublas')):
            try:
                p = profile(data, b, mode)
            except Exception as e:   # noqa: BLE001
                print('  batch {} {}: ERROR {!r}'.format(b, mode, e))
                continue
            profiles.append(p)
            print('  batch {} {} mode: wall {:.1f} us/step ({:,.0f} images/s), device {:.1f} '
                  'us/step; per kernel (sum {:.1f} us):'.format(
                      b, p['mode'], p['wall_us_per_step'], b / p['wall_us_per_step'] * 1e6,
                      p['device_us_per_step'], p['sum_of_kernels_us']))
            for name, us in p['kernels_us']:
                print('    {:>8.1f} us  {}'.format(us, name))
        out['gpu_profiles'] = profiles
        save(out)

    print('\n6. verdicts:')
    verdicts = {}
    verdicts['agreement (<= 1e-5 after 50 steps)'] = all(r['ok'] for r in agree)
    if ratios.get(128):
        verdicts['CPU fast >= {}x seed at batch 128 ({:.2f}x)'.format(
            CPU_RATIO_TARGET, ratios[128])] = ratios[128] >= CPU_RATIO_TARGET
    verdicts['5-epoch accuracy within 0.5 points'] = all(a['ok'] for a in acc)
    if gpu:
        best = by_name.get('fast loop, GPU auto', {}).get(128)
        if best:
            verdicts['GPU fast >= {:,} images/s at batch 128 ({:,.0f})'.format(
                GPU_TARGET, best)] = best >= GPU_TARGET
    for name, ok in verdicts.items():
        print('  {}  {}'.format('PASS' if ok else 'FAIL', name))
    out['verdicts'] = verdicts
    save(out)
    return 0 if all(verdicts.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
