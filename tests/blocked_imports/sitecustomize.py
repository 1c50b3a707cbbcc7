"""Make packages unimportable in a Python process: put this folder first on PYTHONPATH.

CLM_BLOCK_IMPORTS lists module names (comma-separated); importing one of them or a submodule
raises ImportError, as if the package were not installed. When CLM_BLOCK_MARKERS names a folder,
each process that installed the block leaves a file there, so a test can prove it was active
(in the driver, and in every Python worker of the executors).
"""

import os
import sys

_BLOCKED = tuple(n.strip() for n in os.environ.get("CLM_BLOCK_IMPORTS", "").split(",") if n.strip())


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in _BLOCKED):
            raise ImportError(f"{name} is not installed here (blocked by the test)", name=name)
        return None


if _BLOCKED:
    for _name in list(sys.modules):  # nothing blocked may already be loaded
        if any(_name == b or _name.startswith(b + ".") for b in _BLOCKED):
            del sys.modules[_name]
    sys.meta_path.insert(0, _Blocker())
    _markers = os.environ.get("CLM_BLOCK_MARKERS")
    if _markers:
        os.makedirs(_markers, exist_ok=True)
        with open(os.path.join(_markers, f"{os.getpid()}.blocked"), "w") as _f:
            _f.write(",".join(_BLOCKED))
