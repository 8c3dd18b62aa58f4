"""Stand-in for the `azureml` namespace inside amlocal runs where azureml-core is not installed
(a namespace: amlocal's azureml.opendatasets stand-in shares it)."""
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
