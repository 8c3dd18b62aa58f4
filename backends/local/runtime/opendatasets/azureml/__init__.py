"""The `azureml` namespace, for amlocal's stand-in of azureml.opendatasets (a namespace shared with
azureml-core or amlocal's azureml.core stand-in, whichever the run's Python has)."""
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
