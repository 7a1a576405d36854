from django.apps import AppConfig


class TicketsConfig(AppConfig):
    name = "backend.tickets"
    label = "tickets"
    verbose_name = "Tickets"
