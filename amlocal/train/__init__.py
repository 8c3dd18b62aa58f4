"""Mirrors `azureml.train`: estimators (`amlocal.train.dnn.Chainer`, `amlocal.train.estimator`)."""
