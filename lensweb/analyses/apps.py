from django.apps import AppConfig


class AnalysesConfig(AppConfig):
    name = "lensweb.analyses"
    label = "analyses"
    # Nothing here loads a model: the worker loads lenses lazily, on its first job.
