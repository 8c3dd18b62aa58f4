"""Check the chainer-gpu image on any host, GPU or not: run it in the image, e.g. with no GPUs

    amlocal run trainer --script gpu_image_check.py --recipe chainer-gpu

It checks what a GPU run loads, short of the driver that only a GPU host brings: CuPy imports and
was built for CUDA 11.x; the CUDA runtime, cuBLAS and NVRTC that the dynamic linker finds under the
sonames CuPy opens are the CUDA 11.8 ones of the nvidia-* wheels; NVRTC compiles fast_gpu.py's
kernels to PTX; Chainer imports with CuPy available. Then one line says whether there is a GPU.
Prints a line per check; exits 1 if any failed.

NVRTC is called through ctypes rather than CuPy because CuPy asks the CUDA driver for the runtime's
major version before it loads NVRTC, and a host without a GPU has no driver.
"""
import ctypes
import importlib.metadata
import sys
from pathlib import Path

import fast_gpu

# (soname CuPy opens, the wheel that provides it, the version it must be)
CUDA_LIBRARIES = (
    ("libcudart.so.11.0", "nvidia-cuda-runtime-cu11", "11.8"),
    ("libcublas.so.11", "nvidia-cublas-cu11", "11.11"),
    ("libnvrtc.so.11.2", "nvidia-cuda-nvrtc-cu11", "11.8"),
)
# Any architecture NVRTC 11.8 knows will do: the PTX is not run here.
PTX_ARCH = "compute_70"


class CheckFailed(Exception):
    pass


def loaded_path(soname):
    """Load `soname` as the dynamic linker resolves it; the file it loaded."""
    try:
        ctypes.CDLL(soname)
    except OSError as error:
        raise CheckFailed(f"{soname} cannot be loaded ({error})") from None
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[-1]
        if Path(path).name == soname:
            return Path(path).resolve()
    raise CheckFailed(f"{soname} loaded but not found in /proc/self/maps")


def check_library(soname, distribution, version):
    path = loaded_path(soname)
    dist = importlib.metadata.distribution(distribution)
    shipped = {Path(dist.locate_file(file)).resolve() for file in dist.files or ()}
    if path not in shipped:
        raise CheckFailed(f"{soname} resolves to {path}, which is not {distribution}'s")
    if not (dist.version + ".").startswith(version + "."):
        raise CheckFailed(f"{distribution} is {dist.version}, not {version}")
    return f"{soname}: {path} ({distribution} {dist.version})"


def check_cupy():
    import cupy

    built = cupy.cuda.driver.get_build_version()
    if built // 1000 != 11:
        raise CheckFailed(f"CuPy {cupy.__version__} was built for CUDA {built}, not 11.x")
    return f"CuPy {cupy.__version__} imports, built for CUDA {built // 1000}.{built % 1000 // 10}"


def _nvrtc_call(nvrtc, function, *arguments):
    status = getattr(nvrtc, function)(*arguments)
    if status != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise CheckFailed(f"{function}: {nvrtc.nvrtcGetErrorString(status).decode()}")


def check_nvrtc_compiles_the_fast_kernels():
    nvrtc = ctypes.CDLL("libnvrtc.so.11.2")
    major, minor = ctypes.c_int(), ctypes.c_int()
    _nvrtc_call(nvrtc, "nvrtcVersion", ctypes.byref(major), ctypes.byref(minor))
    program = ctypes.c_void_p()
    _nvrtc_call(nvrtc, "nvrtcCreateProgram", ctypes.byref(program), fast_gpu.KERNELS.encode(),
                b"fast_gpu.cu", 0, None, None)
    try:
        for name in fast_gpu.KERNEL_NAMES:  # instantiates the templates, as CuPy's RawModule does
            _nvrtc_call(nvrtc, "nvrtcAddNameExpression", program, name.encode())
        options = (ctypes.c_char_p * 2)(b"-std=c++17", f"--gpu-architecture={PTX_ARCH}".encode())
        status = nvrtc.nvrtcCompileProgram(program, len(options), options)
        if status != 0:
            size = ctypes.c_size_t()
            nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetProgramLog(program, log)
            raise CheckFailed(f"NVRTC cannot compile fast_gpu.py's kernels: "
                              f"{log.value.decode(errors='replace').strip()}")
        size = ctypes.c_size_t()
        _nvrtc_call(nvrtc, "nvrtcGetPTXSize", program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        _nvrtc_call(nvrtc, "nvrtcGetPTX", program, ptx)
        lowered = ctypes.c_char_p()
        entries = set()
        for name in fast_gpu.KERNEL_NAMES:
            _nvrtc_call(nvrtc, "nvrtcGetLoweredName", program, name.encode(), ctypes.byref(lowered))
            entries.add(lowered.value.decode())
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    text = ptx.value.decode()
    missing = sorted(name for name in entries if f".entry {name}(" not in text)
    if missing:
        raise CheckFailed(f"the PTX lacks the kernels {', '.join(missing)}")
    return (f"NVRTC {major.value}.{minor.value} compiles fast_gpu.py's {len(entries)} kernels to "
            f"{len(text) // 1024} KiB of PTX for {PTX_ARCH}")


def check_chainer():
    import chainer
    import chainer.backends.cuda

    if not chainer.backends.cuda.available:
        raise CheckFailed(f"Chainer {chainer.__version__} does not see CuPy "
                          f"({getattr(chainer.backends.cuda, '_resolution_error', None)})")
    return f"Chainer {chainer.__version__} imports with CuPy available"


def gpu_line():
    """One line: the GPUs this container has, or why it has none."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return ("GPU: none (no CUDA driver in this container); a run with --gpu on a host with "
                "GPUs and the NVIDIA Container Toolkit gets them")
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
        runtime = cupy.cuda.runtime.runtimeGetVersion()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        return f"GPU: none usable ({error})"
    return f"GPU: {count} device(s), CUDA runtime {runtime // 1000}.{runtime % 1000 // 10}"


def main():
    checks = [lambda library=library: check_library(*library) for library in CUDA_LIBRARIES]
    checks += [check_cupy, check_nvrtc_compiles_the_fast_kernels, check_chainer]
    failed = 0
    for check in checks:
        try:
            print("ok  ", check())
        except (CheckFailed, ImportError) as error:
            failed += 1
            print("FAIL", error)
    print(gpu_line())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
