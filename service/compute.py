"""Compute targets: ARM's create / get / delete and the data plane's get and list, over amlocal's
own compute targets (`amlocal compute ...`), so a cluster made through azureml-core is the one
`amlocal compute list` shows and runs queue for.

Creating and deleting are immediate here; the long-running-operation URL azureml-core polls
(Azure-AsyncOperation) answers Succeeded at once.
"""

import os
import re

from amlocal.backends.local.compute import (LOCAL_TARGET, ComputeTargetError, ComputeTargets,
                                            TargetSpec, DEFAULT_IDLE_SECONDS)
from amlocal.service.config import LOCATION
from amlocal.service.errors import ServiceError, bad_request
from amlocal.service.wire import WS, json_response, operation

COMPUTES = WS + "/computes"
RP_COMPUTES = "/rp/workspaces" + WS + "/computes"
OPERATION = "/amlocal/operations/{operation_id}"
_DURATION = re.compile(r"^P(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def _targets(service):
    return ComputeTargets(service.store)


def _machine_default(variable):
    """AMLOCAL_ALLOW_OVERCOMMIT / AMLOCAL_EMULATE_GPUS in the emulator's environment: what they
    mean for amlocal's own SDK classes (unchanged code asks for more than this host has)."""
    return os.environ.get(variable, "").lower() in ("1", "true", "yes")


def compute_resource(service, name):
    """The target as ARM's ComputeResource of type AmlCompute; 404 when there is none."""
    targets = _targets(service)
    try:
        described = targets.describe(name)
    except ComputeTargetError as error:
        raise ServiceError(404, "ResourceNotFound", str(error)) from None
    status = described["status"]
    return {
        "id": f"{service.identity.arm_id}/computes/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/computes",
        "location": LOCATION,
        "tags": {},
        "properties": {
            "computeType": "AmlCompute",
            "computeLocation": LOCATION,
            "description": ("amlocal's built-in target: one node, the whole host"
                            if name == LOCAL_TARGET else None),
            "resourceId": None,
            # (The built-in `local` target has no creation time: it is left out, as azureml-core
            # reads these only when present.)
            **{key: value for key, value in (("createdOn", status["creationTime"]),
                                             ("modifiedOn", status["modifiedTime"])) if value},
            "provisioningState": "Succeeded",
            "provisioningErrors": None,
            "isAttachedCompute": False,
            "properties": {
                "vmSize": described["vm_size"],
                "vmPriority": status["vmPriority"],
                "scaleSettings": status["scaleSettings"],
                "subnet": None,
                "remoteLoginPortPublicAccess": "NotSpecified",
                "allocationState": status["allocationState"],
                "currentNodeCount": status["currentNodeCount"],
                "targetNodeCount": status["targetNodeCount"],
                "nodeStateCounts": status["nodeStateCounts"],
                "errors": None,
            },
        },
    }


def _seconds(duration):
    """An ISO 8601 duration as AmlCompute's scale settings send it (PT1800S, PT30M)."""
    found = _DURATION.match(duration or "") if isinstance(duration, str) else None
    if not found:
        raise bad_request(f"invalid nodeIdleTimeBeforeScaleDown {duration!r}: an ISO 8601 "
                          "duration such as PT1800S", code="ValidationError")
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return hours * 3600 + minutes * 60 + seconds


def target_spec(name, payload):
    """The TargetSpec of an AmlCompute create payload; 400 for what amlocal cannot emulate."""
    properties = payload.get("properties") if isinstance(payload.get("properties"), dict) else {}
    if properties.get("computeType") != "AmlCompute":
        raise bad_request(f"compute type {properties.get('computeType')!r} is not emulated: "
                          "amlocal's compute targets are AmlCompute clusters", code="ValidationError")
    cluster = properties.get("properties") if isinstance(properties.get("properties"), dict) else {}
    scale = cluster.get("scaleSettings") if isinstance(cluster.get("scaleSettings"), dict) else {}
    idle = scale.get("nodeIdleTimeBeforeScaleDown")
    try:
        return TargetSpec(
            name=name, vm_size=str(cluster.get("vmSize") or "STANDARD_NC6"),
            max_nodes=scale.get("maxNodeCount"), min_nodes=scale.get("minNodeCount", 0),
            idle_seconds_before_scaledown=_seconds(idle) if idle else DEFAULT_IDLE_SECONDS,
            vm_priority=str(cluster.get("vmPriority") or "dedicated").lower(),
            allow_overcommit=_machine_default("AMLOCAL_ALLOW_OVERCOMMIT"),
            emulate_gpus=_machine_default("AMLOCAL_EMULATE_GPUS"))
    except TypeError as error:
        raise bad_request(f"invalid compute payload: {error}", code="ValidationError") from None


def _accepted(call, resource, status=200):
    response = json_response(resource, status)
    response.headers["Azure-AsyncOperation"] = (f"{call.service.endpoint}"
                                                f"{OPERATION.format(operation_id='done')}")
    return response


@operation(COMPUTES + "/{compute_name}", ["PUT"])
def create_compute(call):
    name = call.params["compute_name"]
    spec = target_spec(name, call.json_object())
    try:
        _targets(call.service).create(spec)
    except ComputeTargetError as error:
        raise ServiceError(409, "Conflict", str(error)) from None
    return _accepted(call, compute_resource(call.service, name), status=201)


@operation(COMPUTES + "/{compute_name}", ["GET"])
def get_compute(call):
    return compute_resource(call.service, call.params["compute_name"])


@operation(RP_COMPUTES + "/{compute_name}", ["GET"])
def get_compute_data_plane(call):
    return compute_resource(call.service, call.params["compute_name"])


def _list(call):
    return {"value": [compute_resource(call.service, name)
                      for name in _targets(call.service).names()]}


@operation(COMPUTES, ["GET"])
def list_computes(call):
    return _list(call)


@operation(RP_COMPUTES, ["GET"])
def list_computes_data_plane(call):
    return _list(call)


@operation(COMPUTES + "/{compute_name}", ["DELETE"])
def delete_compute(call):
    name = call.params["compute_name"]
    targets = _targets(call.service)
    try:
        targets.get(name)
    except ComputeTargetError as error:
        raise ServiceError(404, "ResourceNotFound", str(error)) from None
    try:
        targets.delete(name)
    except ComputeTargetError as error:
        raise ServiceError(409, "Conflict", str(error)) from None
    return _accepted(call, {}, status=202)


@operation(OPERATION, ["GET"])
def operation_status(call):
    # Creating and deleting a target finish before their request is answered.
    return {"status": "Succeeded", "error": None}


ROUTES = [create_compute, get_compute, delete_compute, list_computes, get_compute_data_plane,
          list_computes_data_plane, operation_status]
