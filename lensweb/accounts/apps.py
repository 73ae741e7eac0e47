from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "lensweb.accounts"
    label = "accounts"

    def ready(self):
        from . import checks  # noqa: F401  (registers the demo-password check)
