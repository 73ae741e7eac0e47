"""A typed Python client for the lensweb JSON API v1.

from lensweb_client import Client
client = Client("https://lensweb.example", "lw_…")
analysis = client.analyze("The capital of France is Paris.").wait(progress=True)
analysis.to_pandas()
"""

from ._version import __version__
from .client import Client, Lens, LensStatus, Status
from .errors import (
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
from .jobs import Analysis, Generation, Job, Probe
from .sse import Event

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
    "Probe",
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
