"""azureml-core's shapes of a compute target's state: ScaleSettings, AmlComputeNodeStateCounts
and AmlComputeStatus (serialize/deserialize as azureml-core 1.61 writes them), for amlocal's
AmlCompute (amlocal/compute.py)."""

import datetime


def _parse_time(text):
    return datetime.datetime.fromisoformat(text) if text else None


def _iso(value):
    # The one format of times in run details and compute status (store.iso_time).
    from amlocal.backends.registries import iso_time

    return iso_time(value.timestamp()) if value else None


def _duration_seconds(duration):
    # "PT1800S" (as azureml-core writes it) or "" for no scale-down delay.
    return int(duration[2:-1]) if duration else 0


class ScaleSettings:
    """azureml-core's ScaleSettings: min/max node counts and the idle time before scale-down."""

    def __init__(self, minimum_node_count, maximum_node_count, idle_seconds_before_scaledown):
        self.minimum_node_count = minimum_node_count
        self.maximum_node_count = maximum_node_count
        self.idle_seconds_before_scaledown = idle_seconds_before_scaledown

    def serialize(self):
        idle = self.idle_seconds_before_scaledown
        return {"minNodeCount": self.minimum_node_count, "maxNodeCount": self.maximum_node_count,
                "nodeIdleTimeBeforeScaleDown": f"PT{int(idle)}S" if idle else ""}

    @staticmethod
    def deserialize(object_dict):
        if not object_dict:
            return None
        return ScaleSettings(object_dict["minNodeCount"], object_dict["maxNodeCount"],
                             _duration_seconds(object_dict["nodeIdleTimeBeforeScaleDown"]))


class AmlComputeNodeStateCounts:
    """How many of a target's nodes are in each state (azureml-core's shape)."""

    _KEYS = (("preparing_node_count", "preparingNodeCount"),
             ("running_node_count", "runningNodeCount"),
             ("idle_node_count", "idleNodeCount"),
             ("unusable_node_count", "unusableNodeCount"),
             ("leaving_node_count", "leavingNodeCount"),
             ("preempted_node_count", "preemptedNodeCount"))

    def __init__(self, idle_node_count, leaving_node_count, preempted_node_count,
                 preparing_node_count, running_node_count, unusable_node_count):
        self.idle_node_count = idle_node_count
        self.leaving_node_count = leaving_node_count
        self.preempted_node_count = preempted_node_count
        self.preparing_node_count = preparing_node_count
        self.running_node_count = running_node_count
        self.unusable_node_count = unusable_node_count

    def serialize(self):
        return {key: getattr(self, attribute) for attribute, key in self._KEYS}

    @staticmethod
    def deserialize(object_dict):
        if not object_dict:
            return None
        return AmlComputeNodeStateCounts(**{attribute: object_dict.get(key)
                                            for attribute, key in AmlComputeNodeStateCounts._KEYS})


class AmlComputeStatus:
    """A target's current state, as `AmlCompute.get_status()` returns it in azureml-core.

    `serialize()` gives the dict of azureml-core's AmlComputeStatus.serialize (the same keys).
    """

    def __init__(self, allocation_state, allocation_state_transition_time, creation_time,
                 current_node_count, errors, modified_time, node_state_counts, provisioning_state,
                 provisioning_state_transition_time, scale_settings, target_node_count, vm_priority,
                 vm_size):
        self.allocation_state = allocation_state
        self.allocation_state_transition_time = allocation_state_transition_time
        self.creation_time = creation_time
        self.current_node_count = current_node_count
        self.errors = errors
        self.modified_time = modified_time
        self.node_state_counts = node_state_counts
        self.provisioning_state = provisioning_state
        self.provisioning_state_transition_time = provisioning_state_transition_time
        self.scale_settings = scale_settings
        self.target_node_count = target_node_count
        self.vm_priority = vm_priority
        self.vm_size = vm_size

    def serialize(self):
        return {
            "currentNodeCount": self.current_node_count,
            "targetNodeCount": self.target_node_count,
            "nodeStateCounts": (self.node_state_counts.serialize() if self.node_state_counts
                                else None),
            "allocationState": self.allocation_state,
            "allocationStateTransitionTime": _iso(self.allocation_state_transition_time),
            "errors": self.errors,
            "creationTime": _iso(self.creation_time),
            "modifiedTime": _iso(self.modified_time),
            "provisioningState": self.provisioning_state,
            "provisioningStateTransitionTime": _iso(self.provisioning_state_transition_time),
            "scaleSettings": self.scale_settings.serialize() if self.scale_settings else None,
            "vmPriority": self.vm_priority,
            "vmSize": self.vm_size,
        }

    @staticmethod
    def deserialize(object_dict):
        """From ComputeTargets.status()'s dict (the serialized shape)."""
        return AmlComputeStatus(
            allocation_state=object_dict["allocationState"],
            allocation_state_transition_time=_parse_time(
                object_dict["allocationStateTransitionTime"]),
            creation_time=_parse_time(object_dict["creationTime"]),
            current_node_count=object_dict["currentNodeCount"],
            errors=object_dict["errors"],
            modified_time=_parse_time(object_dict["modifiedTime"]),
            node_state_counts=AmlComputeNodeStateCounts.deserialize(object_dict["nodeStateCounts"]),
            provisioning_state=object_dict["provisioningState"],
            provisioning_state_transition_time=_parse_time(
                object_dict["provisioningStateTransitionTime"]),
            scale_settings=ScaleSettings.deserialize(object_dict["scaleSettings"]),
            target_node_count=object_dict["targetNodeCount"],
            vm_priority=object_dict["vmPriority"],
            vm_size=object_dict["vmSize"])
