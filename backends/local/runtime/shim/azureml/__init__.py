"""Stand-in for the `azureml` namespace inside amlocal runs where azureml-core is not installed."""
