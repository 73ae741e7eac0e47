"""The one access rule for a job, analyses and generations alike: its owner may do anything, staff may read
any, anyone else gets DoesNotExist (someone else's job is "not found", not "forbidden").
"""

from __future__ import annotations

from .models import Analysis, Generation


def _get_for(model, user, job_id, write: bool):
    """The one access rule for a job: its owner may do anything; staff may read any; anyone else gets
    DoesNotExist (someone else's job is 'not found', not 'forbidden')."""
    if user.is_staff and not write:
        return model.objects.get(pk=job_id)
    return model.objects.get(pk=job_id, owner=user)


def get_analysis_for(user, job_id, write: bool = False) -> Analysis:
    return _get_for(Analysis, user, job_id, write)


def get_generation_for(user, generation_id, write: bool = False) -> Generation:
    return _get_for(Generation, user, generation_id, write)


def check_job_for_user(user, job_id) -> Analysis:
    """The analysis if `user` owns it; Analysis.DoesNotExist otherwise."""
    return get_analysis_for(user, job_id, write=True)
