"""Search spaces: the structured spaces registered in `nasloop.registry.spaces`, and canonical hashing.

Importing this package registers `nb201` (NAS-Bench-201 cells) and `macro` (Zen-NAS / RZ-NAS block
strings). Nothing here imports torch: spaces render networks as source code.
"""

from nasloop.spaces import macro, nb201
from nasloop.spaces.base import Cost, SearchSpace

__all__ = ["Cost", "SearchSpace", "macro", "nb201"]
