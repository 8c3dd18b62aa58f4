"""Train a 784-100-100-10 MLP on MNIST with Chainer; log to the Azure ML run.

Usage:
    python chainer_mnist.py --data-dir DIR [--epochs 20] [--batchsize 100]
        [--output_dir ./outputs] [--gpu_id N] [--seed 0] [--loop fast|seed]

DIR holds the four canonical MNIST IDX files (gzip-compressed).  The trained
model is written to <output_dir>/model.npz; score.py serves it.

--loop seed is the original Chainer loop (SerialIterator, concat_examples,
optimizer.update) and the reference; --loop fast (the default, fast_loop.py)
trains the same model with the same optimizer on the same batches without
Chainer's per-step machinery, to the same results.
"""
import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np

import chainer_compat  # noqa: F401  (must come before chainer: NumPy 2 / Py 3.12)
import chainer
import chainer.functions as F
import chainer.links as L
from chainer.backends import cuda
from chainer.dataset import concat_examples

DATA_DIR_ENV = 'AZUREML_DATAREFERENCE_mnist'
MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def _read_idx(path, magic):
    """Return the records of an IDX file as a uint8 array of shape (n, ...).

    Raises FileNotFoundError for a missing file and ValueError, naming the
    file, for a wrong magic number or a size that does not match the header.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError('MNIST file not found: {}'.format(path))
    try:
        with gzip.open(path, 'rb') as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError('malformed MNIST file {}: {}'.format(path, e))
    ndim = 3 if magic == IMAGES_MAGIC else 1
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise ValueError('malformed MNIST file {}: truncated header'.format(path))
    found_magic, *shape = struct.unpack('>{}I'.format(1 + ndim), raw[:header_size])
    if found_magic != magic:
        raise ValueError('malformed MNIST file {}: magic number {}, expected {}'
                         .format(path, found_magic, magic))
    expected = int(np.prod(shape))
    if len(raw) - header_size != expected:
        raise ValueError('malformed MNIST file {}: header says shape {} ({} bytes)'
                         ' but data is {} bytes'.format(
                             path, tuple(shape), expected, len(raw) - header_size))
    return np.frombuffer(raw, np.uint8, offset=header_size).reshape(shape)


def load_mnist(data_dir, split):
    """Load one split ('train' or 'test') from data_dir.

    Returns (images, labels): float32 (N, 784) scaled to [0, 1] and int32 (N,).
    """
    images_file, labels_file = MNIST_FILES[split]
    images = _read_idx(os.path.join(data_dir, images_file), IMAGES_MAGIC)
    labels = _read_idx(os.path.join(data_dir, labels_file), LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError('MNIST {} split in {}: {} images but {} labels'.format(
            split, data_dir, len(images), len(labels)))
    if labels.size and labels.max() > 9:
        raise ValueError('malformed MNIST file {}: label {} out of range 0-9'
                         .format(os.path.join(data_dir, labels_file), labels.max()))
    images = images.reshape(len(images), -1).astype(np.float32) / 255
    return images, labels.astype(np.int32)


class MLP(chainer.Chain):
    """784 -> n_units -> n_units -> n_out with ReLU."""

    def __init__(self, n_units=100, n_out=10):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(784, n_units)
            self.l2 = L.Linear(n_units, n_units)
            self.l3 = L.Linear(n_units, n_out)

    def forward(self, x):
        h = F.relu(self.l1(x))
        h = F.relu(self.l2(h))
        return self.l3(h)


def build_model():
    """The network that model.npz stores: MLP wrapped in L.Classifier."""
    return L.Classifier(MLP())


def train_epoch(model, optimizer, train_iter, device):
    """Run one epoch of SGD; return the mean training loss as a float."""
    sum_loss, count = 0.0, 0
    while True:
        batch = train_iter.next()
        x, t = concat_examples(batch, device)
        optimizer.update(model, x, t)
        # Accumulate on the device: no host sync per step.
        sum_loss = sum_loss + model.loss.array * len(batch)
        count += len(batch)
        if train_iter.is_new_epoch:
            return float(sum_loss) / count


def evaluate(model, test_iter, device):
    """Return (mean loss, accuracy) over the whole test iterator as floats."""
    test_iter.reset()
    sum_loss, sum_acc, count = 0.0, 0.0, 0
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for batch in test_iter:
            x, t = concat_examples(batch, device)
            loss = model(x, t)
            sum_loss = sum_loss + loss.array * len(batch)
            sum_acc = sum_acc + model.accuracy.array * len(batch)
            count += len(batch)
    return float(sum_loss) / count, float(sum_acc) / count


def train(model, train_data, test_data, device, epochs, batchsize, run, lr=0.01):
    """Train for `epochs`, validating and logging to `run` after each epoch."""
    optimizer = chainer.optimizers.MomentumSGD(lr=lr, momentum=0.9)
    optimizer.setup(model)
    train_iter = chainer.iterators.SerialIterator(train_data, batchsize)
    test_iter = chainer.iterators.SerialIterator(
        test_data, batchsize, repeat=False, shuffle=False)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train_loss = train_epoch(model, optimizer, train_iter, device)
        seconds = time.perf_counter() - start
        test_loss, test_acc = evaluate(model, test_iter, device)
        run.log('Accuracy', test_acc)
        run.log('Loss', test_loss)
        print('epoch {}/{}  train_loss {:.4f}  test_loss {:.4f}  test_accuracy {:.4f}'
              '  ({:.2f} s, {:,.0f} images/s)'.format(
                  epoch, epochs, train_loss, test_loss, test_acc, seconds,
                  len(train_data) / seconds), flush=True)


def default_gpu_id():
    """0 when CuPy is importable and sees a GPU, else -1 (CPU)."""
    if not cuda.available:
        return -1
    try:
        return 0 if cuda.cupy.cuda.runtime.getDeviceCount() > 0 else -1
    except cuda.cupy.cuda.runtime.CUDARuntimeError:
        return -1


def add_data_and_optimizer_arguments(parser):
    """--data-dir, --seed and --lr, which chainer_mnist_distributed.py takes too."""
    parser.add_argument('--data-dir', default=os.environ.get(DATA_DIR_ENV),
                        help='directory with the four MNIST IDX .gz files '
                             '(default: $' + DATA_DIR_ENV + ')')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--lr', type=float, default=0.01,
                        help="MomentumSGD's learning rate (momentum 0.9)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--batchsize', type=int, default=100)
    parser.add_argument('--output_dir', default='./outputs')
    parser.add_argument('--gpu_id', type=int, default=None,
                        help='GPU to use, -1 for CPU (default: 0 if CuPy sees '
                             'a GPU, else -1)')
    add_data_and_optimizer_arguments(parser)
    parser.add_argument('--loop', choices=('fast', 'seed'), default='fast',
                        help='training loop: fast (default, fast_loop.py) or seed '
                             '(the original Chainer loop, the reference)')
    parser.add_argument('--fast-mode', choices=('auto', 'graph', 'raw', 'cublas'),
                        default='auto',
                        help='on a GPU, how the fast loop runs a step (see fast_gpu.py)')
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error('no MNIST data: pass --data-dir DIR (the directory with '
                     'the four IDX .gz files) or set ' + DATA_DIR_ENV)
    if args.gpu_id is None:
        args.gpu_id = default_gpu_id()
    return args


def main(argv=None):
    # Imported here so that score.py can reuse build_model without azureml.
    from azureml.core.run import Run

    args = parse_args(argv)
    try:
        train_arrays = load_mnist(args.data_dir, 'train')
        test_arrays = load_mnist(args.data_dir, 'test')
    except (OSError, ValueError) as e:
        sys.exit('chainer_mnist.py: error: {}'.format(e))
    train_data = chainer.datasets.TupleDataset(*train_arrays)
    test_data = chainer.datasets.TupleDataset(*test_arrays)

    device = chainer.get_device(args.gpu_id)
    device.use()
    np.random.seed(args.seed)  # weight init and the train iterator's shuffle
    if device.xp is not np:
        device.xp.random.seed(args.seed)  # CuPy's own generator

    run = Run.get_context()
    run.log('Batch size', args.batchsize)
    run.log('Epochs', args.epochs)
    print('device {}  train {:,}  test {:,}  batchsize {}  epochs {}  seed {}  loop {}'.format(
        device, len(train_data), len(test_data), args.batchsize, args.epochs,
        args.seed, args.loop), flush=True)

    model = build_model()
    model.to_device(device)
    fast_loop = None
    if args.loop == 'fast':
        try:
            import fast_loop
        except ImportError as e:  # a project folder with only this script (and chainer_compat.py)
            print('fast loop unavailable ({}); running the seed loop'.format(e), flush=True)
    if fast_loop is None:
        train(model, train_data, test_data, device, args.epochs, args.batchsize, run, args.lr)
    else:
        try:
            fast_loop.train(model, train_arrays, test_arrays, device, args.epochs, args.batchsize,
                            run, gpu_mode=args.fast_mode, lr=args.lr)
        except fast_loop.FastLoopUnavailable as e:
            print('fast loop unavailable here ({}); running the seed loop'.format(e), flush=True)
            train(model, train_data, test_data, device, args.epochs, args.batchsize, run, args.lr)
    save_model(model, args.output_dir)


def save_model(model, output_dir):
    """Write <output_dir>/model.npz, the file score.py serves."""
    os.makedirs(output_dir, exist_ok=True)
    model_path = os.path.join(output_dir, 'model.npz')
    chainer.serializers.save_npz(model_path, model)
    print('saved', model_path, flush=True)


if __name__ == '__main__':
    main()
