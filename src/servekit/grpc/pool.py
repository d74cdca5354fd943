"""servekit's own protobuf descriptor pool; every module in ``generated/`` registers here.

Package ``inference`` must use Triton's message names to be wire compatible, and
``tritonclient.grpc`` registers the same names in protobuf's default pool; keeping ours
apart lets both live in one process (tests, or a user's script serving and calling).
Server reflection answers from this pool (see ``servekit.grpc.server``).
"""

from __future__ import annotations

from google.protobuf import descriptor_pool

__all__ = ["POOL"]

POOL = descriptor_pool.DescriptorPool()
