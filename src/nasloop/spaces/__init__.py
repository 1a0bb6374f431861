"""Search spaces: the structured spaces registered in `nasloop.registry.spaces`, and canonical hashing.

Importing this package registers `nb201` (NAS-Bench-201 cells), `macro` (Zen-NAS / RZ-NAS block
strings), `vit` (AutoFormer-style vision transformers), `nas-bench-macro` and `channel-bench-resnet`
(the NAS-Bench-Macro and Channel-Bench-Macro ResNet networks). Nothing here imports torch: spaces
render networks as source code.
"""

from nasloop.spaces import channel_bench, macro, nas_bench_macro, nb201, vit
from nasloop.spaces.base import Cost, SearchSpace

__all__ = ["Cost", "SearchSpace", "channel_bench", "macro", "nas_bench_macro", "nb201", "vit"]
