from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "lensweb.cache"
    label = "result_cache"
    verbose_name = "Result cache"

    def ready(self):
        # The core imports no app above it: the cache plugs itself into the one submit path and hears
        # when an analysis ends.
        from lensweb.analyses import services as core
        from lensweb.analyses import signals

        from . import services

        core.use_result_store(services)
        signals.job_ended.connect(services.on_job_ended, dispatch_uid="result-cache-job-ended")
        signals.shared_by_link.connect(services.on_shared_by_link, dispatch_uid="result-cache-shared")
