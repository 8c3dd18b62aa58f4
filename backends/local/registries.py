"""The local backend's compute targets as the Run interface declares them
(backends/registries.py): the run history's targets, whose nodes are slots of this host."""

import itertools
from dataclasses import replace

from amlocal.backends import registries
from amlocal.backends.local import compute
from amlocal.errors import UserInputError

_HOST_FLAGS = ("allow_overcommit", "emulate_gpus")


class LocalComputeTargets(compute.ComputeTargets, registries.ComputeTargetRegistry):
    """The compute targets of one run history, whose nodes are slots of this host."""

    def create_target(self, name, vm_size, max_nodes, **settings):
        return self.create(compute.TargetSpec(name=name, vm_size=vm_size, max_nodes=max_nodes,
                                              **settings))

    def vm_sizes(self):
        return {name: {"cores": size.cores, "memory_gib": size.memory_gib, "gpus": size.gpus,
                       "gpu_model": size.gpu_model} for name, size in compute.VM_SIZES.items()}

    def fitting_flags(self, vm_size, nodes, **settings):
        spec = compute.TargetSpec(**{"name": "size-check", **settings, "vm_size": vm_size,
                                     "max_nodes": nodes})
        for count in range(len(_HOST_FLAGS) + 1):
            for flags in itertools.combinations(_HOST_FLAGS, count):
                try:
                    replace(spec, **{flag: True for flag in flags}).validated(self.host)
                except UserInputError:
                    continue
                return flags
        return None

    def host_summary(self):
        return {"cores": len(self.host.cores),
                "memory_gib": round(self.host.memory_bytes / 2**30, 1),
                "gpus": len(self.host.gpus), "text": self.host.describe()}
