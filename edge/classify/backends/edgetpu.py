"""The Coral Edge TPU backend: the bundle's `model_edgetpu.tflite` through the libedgetpu delegate.

The compiled model only runs with the delegate (its TPU part is one custom op the CPU cannot
execute), so a missing library or device is reported here, at start-up, with the command that
shows what is wrong. The two functions `_load_delegate` and `_make_interpreter` are the hardware
boundary: tests replace them, everything around them runs for real.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Any, ClassVar

from edge.classify.backends.base import InterpreterBackend, bundle_dir, verified_file
from edge.classify.bundle import LoadedBundle
from edge.classify.interpreter import interpreter_package, load_runtime
from edge.errors import AcceleratorError, ModelError

EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_ROLE = "edgetpu"


def _load_delegate(library: str, options: dict[str, str]) -> Any:
    """The Edge TPU delegate from the installed TFLite runtime (hardware boundary).

    Raises what the runtime raises: OSError/ValueError when the library cannot be loaded (old
    tflite-runtime says ValueError for both), ValueError when the library finds no such device.
    """
    # Load the library first: when it is missing, ai-edge-litert's own loader leaves a half-built
    # Delegate whose __del__ prints a traceback to stderr next to our one-line error.
    ctypes.CDLL(library)
    interpreter_class, _ = load_runtime()
    module = sys.modules[interpreter_class.__module__]
    return module.load_delegate(library, options)


def _make_interpreter(model_path: Path, delegate: Any) -> Any:
    """A TFLite interpreter for the compiled model with the Edge TPU delegate (hardware boundary)."""
    interpreter_class, _ = load_runtime()
    return interpreter_class(model_path=str(model_path), experimental_delegates=[delegate])


def how_to_check(device: str) -> str:
    """The commands that show whether the Edge TPU is there, for the device kind configured."""
    usb = "`lsusb | grep -i -E '1a6e|18d1'` (a USB Accelerator shows 1a6e before first use, 18d1 after)"
    pci = "`ls /dev/apex_*` (the PCIe/M.2 card needs the gasket-dkms driver)"
    if device.startswith("usb"):
        where = usb
    elif device.startswith("pci"):
        where = pci
    else:
        where = f"{usb} or {pci}"
    return f"check {where} and that libedgetpu1-std is installed (`ldconfig -p | grep edgetpu`)"


def find_edgetpu_model(bundle: LoadedBundle) -> tuple[Path, str | None]:
    """(path, sha256 or None) of the compiled model; ModelError naming the bundle and the fix.

    A bundle lists it with role "edgetpu"; a plain `<name>.tflite` (e.g. from Coral's model zoo)
    may have `<name>_edgetpu.tflite` beside it, which has no checksum to verify.
    """
    if bundle.source == "plain":
        path = bundle.model_path.with_name(f"{bundle.model_path.stem}_edgetpu.tflite")
        if not path.is_file():
            raise ModelError(
                f"{bundle.model_path}: classifier.backend edgetpu needs the compiled {path.name} beside it"
                " (compile it with edgetpu_compiler, or use a bundle from `trapcam convert --edgetpu`)"
            )
        return path, None
    names = [name for name, entry in bundle.manifest.files.items() if entry.role == EDGETPU_ROLE]
    if not names:
        raise ModelError(
            f"{bundle_dir(bundle)}: the bundle has no Edge TPU model (no file with role 'edgetpu' in"
            f" {bundle.describe_source()}); rebuild it with `trapcam convert --edgetpu`"
            " or set classifier.backend: cpu"
        )
    path, sha = verified_file(bundle, sorted(names)[0])
    return path, sha


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class EdgeTpuBackend(InterpreterBackend):
    """The compiled model on a Coral Edge TPU (USB Accelerator, M.2/PCIe card, Dev Board)."""

    name: ClassVar[str] = "edgetpu"

    def __init__(self, bundle: LoadedBundle, device: str = "usb") -> None:
        model_path, sha = find_edgetpu_model(bundle)
        delegate = open_delegate(device)
        try:
            interpreter = _make_interpreter(model_path, delegate)
        except (ValueError, RuntimeError) as exc:
            raise AcceleratorError(
                f"classifier.backend edgetpu: the Edge TPU ('{device}') cannot run {model_path}:"
                f" {_first_line(exc)}; check that libedgetpu1-std is as new as the edgetpu_compiler that"
                " built the model (`dpkg -l | grep edgetpu`)"
            ) from None
        super().__init__(bundle, model_path, sha or "", interpreter)
        self.device = device
        self._delegate = delegate  # the interpreter needs it alive as long as it runs

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "delegate": EDGETPU_LIBRARY,
            "device": self.device,
            "runtime": interpreter_package(),
            "model_path": str(self.model_path),
            "model_sha256": self.model_sha256 or None,
        }

    def close(self) -> None:
        super().close()
        self._delegate = None


def open_delegate(device: str) -> Any:
    """The loaded delegate for `device`, or an AcceleratorError saying what was looked for."""
    load_runtime()  # no TFLite runtime at all is a ModelError with its install command, not a TPU issue
    looked_for = f"looked for {EDGETPU_LIBRARY} with device '{device}'"
    try:
        return _load_delegate(EDGETPU_LIBRARY, {"device": device})
    except OSError as exc:
        raise AcceleratorError(
            f"classifier.backend edgetpu: the Edge TPU runtime is not installed ({looked_for}:"
            f" {_first_line(exc)}); install libedgetpu1-std from Coral's apt repository and check"
            f" `ldconfig -p | grep edgetpu`"
        ) from None
    except (ValueError, RuntimeError) as exc:
        raise AcceleratorError(
            f"classifier.backend edgetpu: no Edge TPU found ({looked_for}: {_first_line(exc)});"
            f" {how_to_check(device)}"
        ) from None
