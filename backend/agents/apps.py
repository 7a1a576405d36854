from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "backend.agents"
    label = "agents"
    verbose_name = "Support agents"

    def ready(self) -> None:
        from backend.agents import hooks, tickets

        # Conversation pages show the ticket summary with a "Summarize" button (the tickets seam).
        if tickets.render_summary_panel not in hooks.CONVERSATION_PANELS:
            hooks.CONVERSATION_PANELS.append(tickets.render_summary_panel)
        hooks.CONVERSATION_ACTIONS.setdefault("summarize", tickets.summarize_action)
