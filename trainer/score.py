"""Azure ML scoring script for the Chainer MNIST model (init/run contract).

init() loads model.npz from $AZUREML_MODEL_DIR (default '.'), or from an
outputs/ folder inside it.  run('{"data": [[784 floats], ...]}') returns the
predicted digits as a list of ints, or {"error": "..."} for a bad input.
"""
import json
import os
import sys

import numpy as np

# chainer_mnist.py ships next to this file; the scoring server may load this
# file by path without putting its folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chainer_mnist import build_model  # noqa: E402  (imports chainer_compat first)
import chainer  # noqa: E402

model = None


def _find_model(model_dir):
    for path in (os.path.join(model_dir, 'model.npz'),
                 os.path.join(model_dir, 'outputs', 'model.npz')):
        if os.path.isfile(path):
            return path
    raise FileNotFoundError('no model.npz in {} or {}'.format(
        model_dir, os.path.join(model_dir, 'outputs')))


def init():
    """Load the trained network once, before any run() call."""
    global model
    model = build_model()
    chainer.serializers.load_npz(_find_model(os.getenv('AZUREML_MODEL_DIR', '.')), model)


def run(input_data):
    """Classify images given as JSON {"data": [[784 floats in [0, 1]], ...]}."""
    try:
        payload = json.loads(input_data)
        if not isinstance(payload, dict) or 'data' not in payload:
            raise ValueError('input must be a JSON object with a "data" key')
        data = np.asarray(payload['data'], dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != 784:
            raise ValueError('"data" must be a list of rows of 784 floats, '
                             'got shape {}'.format(data.shape))
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            scores = model.predictor(data)
        return [int(c) for c in scores.array.argmax(axis=1)]
    except Exception as e:
        return {'error': str(e)}
