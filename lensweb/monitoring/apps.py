from django.apps import AppConfig
from django.db.models.signals import post_save


class MonitoringConfig(AppConfig):
    name = "lensweb.monitoring"
    label = "monitoring"

    def ready(self):
        from lensweb.analyses import signals
        from lensweb.analyses.models import Analysis, Generation

        from . import requestlog

        # The job a logged request made: its id, lens, validated options and positions go in the entry.
        post_save.connect(requestlog.job_created, sender=Analysis, dispatch_uid="requestlog-analysis")
        post_save.connect(requestlog.job_created, sender=Generation, dispatch_uid="requestlog-generation")
        # What views and the socket consumer tell about their requests (the core does not import us).
        signals.request_noted.connect(requestlog.on_request_noted, dispatch_uid="requestlog-noted")
        signals.socket_request.connect(requestlog.on_socket_request, dispatch_uid="requestlog-socket")
