from django.apps import AppConfig


class ResultsConfig(AppConfig):
    """Reading results: the permalink views, history, sharing, compare, export and import."""

    name = "lensweb.results"
    label = "results"
