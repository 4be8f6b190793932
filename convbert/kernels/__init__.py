"""Optional Triton kernels for the convolution branch (docs/design.md §2, steps 2, 3 and 5).

Triton is not a dependency: HAVE_TRITON says whether it can be imported, and convbert.ops imports
`convbert.kernels.conv_triton` only when it is (and only for CUDA tensors), so the package imports and runs
without it. Tests run the kernels on CPU with Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import importlib.util

HAVE_TRITON = importlib.util.find_spec("triton") is not None
