from django.apps import AppConfig


class AnalysesConfig(AppConfig):
    name = "lensweb.analyses"
    label = "analyses"
    # Nothing here loads a model: the worker loads lenses lazily, on its first job.

    def ready(self):
        from .sessions import connect_signals

        connect_signals()  # sockets close when their session ends
