from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "backend.quotas"
    verbose_name = "Usage and quotas"

    def ready(self) -> None:
        from backend.quotas import checks  # noqa: F401 - registers the deploy check
