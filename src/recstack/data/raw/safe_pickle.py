"""Load competition pickles without trusting them: a pickle can run any code on load.

Only plain containers and numbers are admitted (dict, collections.defaultdict, list, tuple, set, int,
float, str, bytes, bool, None) and numpy arrays/scalars rebuilt through numpy's own reconstructors. Any other
global a pickle names (os.system, subprocess.Popen, builtins.eval, ...) is refused before it is looked up.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from recstack.errors import DataError

_ALLOWED = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bool"),
    ("collections", "defaultdict"),
    ("collections", "OrderedDict"),
    # numpy arrays and scalars (emb_81_32.pkl may hold ndarray vectors)
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        return super().find_class(module, name)


def load(path: str | Path) -> Any:
    """Unpickle `path` admitting only plain data; anything else is a DataError naming the file and global."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            return _Restricted(f).load()
    except pickle.UnpicklingError as e:
        raise DataError(
            f"{path}: {e}; only plain containers, numbers and numpy arrays are accepted from a pickle "
            "(a pickle can run code when loaded)"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
