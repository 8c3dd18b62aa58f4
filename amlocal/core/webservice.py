"""Mirrors `azureml.core.webservice` (the services run in the local Docker engine)."""

from amlocal.model_errors import WebserviceException
from amlocal.webservice import (AciServiceDeploymentConfiguration, AciWebservice,
                                AksServiceDeploymentConfiguration, AksWebservice,
                                LocalWebservice, LocalWebserviceDeploymentConfiguration,
                                Webservice)

__all__ = ["AciServiceDeploymentConfiguration", "AciWebservice",
           "AksServiceDeploymentConfiguration", "AksWebservice", "LocalWebservice",
           "LocalWebserviceDeploymentConfiguration", "Webservice", "WebserviceException"]
