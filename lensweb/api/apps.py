from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "lensweb.api"
    label = "api"
    verbose_name = "API"
