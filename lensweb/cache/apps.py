from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "lensweb.cache"
    label = "result_cache"
    verbose_name = "Result cache"
