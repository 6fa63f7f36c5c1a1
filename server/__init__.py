"""The postbacks service. gRPC's fork handlers are off in its processes: the default deployment starts its
dispatcher process (fork, then exec at once) while gRPC's threads run, which they would only log about."""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
