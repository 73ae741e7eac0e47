"""A typed Python client for the lensweb JSON API v1.

from lensweb_client import Client
client = Client("https://lensweb.example", "lw_…")
analysis = client.analyze("The capital of France is Paris.").wait(progress=True)
analysis.to_pandas()
"""

__version__ = "0.1.0"

from .client import Client, Lens, LensStatus, Status  # noqa: E402  (after __version__, which client.py reads)
from .errors import (  # noqa: E402
    ApiError,
    AuthenticationError,
    ConnectionFailed,
    InvalidRequest,
    JobCancelled,
    JobError,
    JobFailed,
    LenswebError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from .jobs import Analysis, Generation, Job  # noqa: E402
from .sse import Event  # noqa: E402

__all__ = [
    "Analysis",
    "ApiError",
    "AuthenticationError",
    "Client",
    "ConnectionFailed",
    "Event",
    "Generation",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "Lens",
    "LensStatus",
    "LenswebError",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Status",
    "Unavailable",
    "__version__",
]
