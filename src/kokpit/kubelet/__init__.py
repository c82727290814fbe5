"""kokpit.kubelet: the embedded-mode local kubelet that runs kokpit Pods of the meta cluster as processes.

In embedded mode there is no container runtime, yet the cluster operator manages business clusters' control
planes as ordinary Pods; this kubelet registers one Node and runs those Pods (kokpit images only) as local
``kokpit`` processes, so the operator works unchanged on a laptop and on a real meta cluster.  The rules
mapping a container to a process (images, command line, volumes, mounts) are in :mod:`kokpit.kubelet._spec`;
the log endpoint contract with the API server's ``pods/log`` is in :mod:`kokpit.kubelet._http`; the module
map is in :mod:`kokpit.kubelet._kubelet`.  ``--fake-runtime`` (:mod:`kokpit.kubelet._fakeruntime`) starts
no processes and reports Pods Ready: one Node's fake container runtime for scale benchmarks, unrelated to
:mod:`kokpit.simulator`, which simulates whole fleet hosts.
"""

from kokpit.kubelet._kubelet import Kubelet, run_kubelet
from kokpit.kubelet._options import KubeletOptions
from kokpit.kubelet._spec import (
    IMAGE_NOT_RUNNABLE,
    ContainerConfigError,
    Mount,
    container_args,
    crash_backoff,
    hostpath_folder,
    is_kokpit_image,
    mount_env_name,
    rewrite_paths,
    rewrite_value,
)

__all__ = [
    "IMAGE_NOT_RUNNABLE",
    "ContainerConfigError",
    "Kubelet",
    "KubeletOptions",
    "Mount",
    "container_args",
    "crash_backoff",
    "hostpath_folder",
    "is_kokpit_image",
    "mount_env_name",
    "rewrite_paths",
    "rewrite_value",
    "run_kubelet",
]
