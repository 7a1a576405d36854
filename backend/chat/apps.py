from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "backend.chat"
    label = "chat"

    def ready(self) -> None:
        from backend.chat.config import connect_receivers

        connect_receivers()
