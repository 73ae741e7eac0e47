from django.apps import AppConfig
from django.db.models.signals import post_save


class MonitoringConfig(AppConfig):
    name = "lensweb.monitoring"
    label = "monitoring"

    def ready(self):
        from lensweb.analyses.models import Analysis
        from lensweb.api.models import Generation

        from . import requestlog

        # The job a logged request made: its id, lens, validated options and positions go in the entry.
        post_save.connect(requestlog.job_created, sender=Analysis, dispatch_uid="requestlog-analysis")
        post_save.connect(requestlog.job_created, sender=Generation, dispatch_uid="requestlog-generation")
