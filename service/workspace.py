"""The workspace itself: ARM's GET of the workspace resource, and service discovery.

azureml-core finds every other service through the discovery document that the workspace's
`properties.discoveryUrl` names; here all of them are this emulator.
"""

from amlocal.service.config import LOCATION
from amlocal.service.wire import WS, operation

# The services azureml-core looks up in the discovery document.
DISCOVERED_SERVICES = ("api", "catalog", "experimentation", "gallery", "history", "hyperdrive",
                       "labeling", "modelmanagement", "pipelines", "studio")


def workspace_resource(service):
    identity = service.identity
    return {
        "id": identity.arm_id,
        "name": identity.workspace_name,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "location": LOCATION,
        "tags": {},
        "sku": {"name": "Basic", "tier": "Basic"},
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "friendlyName": identity.workspace_name,
            "description": f"amlocal's emulated workspace over {service.home}",
            "workspaceId": identity.workspace_id,
            "discoveryUrl": f"{service.endpoint}/discovery",
            "provisioningState": "Succeeded",
            "hbiWorkspace": False,
            "storageAccount": None,
            "keyVault": None,
            "applicationInsights": None,
            "containerRegistry": None,
            "privateEndpointConnections": None,
        },
    }


@operation(WS, ["GET"])
def get_workspace(call):
    return workspace_resource(call.service)


@operation("/discovery", ["GET"], auth="public")
def discovery(call):
    return {name: call.service.endpoint for name in DISCOVERED_SERVICES}


ROUTES = [get_workspace, discovery]
